// typeformer/ops/moe_kind.hpp
//
// The kinds of mixture-of-experts router (ops/moe_router.hpp has the formulas and papers), in
// a header of their own so that model configs (nn/config.hpp) can name one without including
// the routing code.
#pragma once

#include "typeformer/config/config.hpp"

TFM_BEGIN_NAMESPACE

/// Which router moe_route_tokens runs (see ops/moe_router.hpp for the formulas and papers).
/// noisy_topk names, for a model's config, softmax top-k routing of noisy logits while training
/// (moe_noisy_logits, Shazeer et al. 2017; nn/moe.hpp adds the noise); moe_route_tokens routes
/// it as softmax_topk.
enum class moe_router_kind {
  softmax_topk,
  gshard_topk,
  switch_top1,
  sigmoid_bias,
  expert_choice,
  noisy_topk
};

TFM_END_NAMESPACE
