// typeformer/ops/moe_route.hpp
//
// The seam between mixture-of-experts routing (ops/moe_router.hpp) and the grouped expert
// kernels (ops/moe_experts.hpp): a router produces a moe_route, the expert op consumes it.
//
// Layout: `expert` holds tokens * k expert ids in the router's slot order (token n owns slots
// n*k .. n*k+k-1). An id is in [0, n_expert), or -1 for an empty slot: a slot dropped by the
// capacity rule, or (expert-choice routing, where a token is picked by a variable number of
// experts) padding up to k = the largest number of slots any token got. `gates` (tokens, k)
// holds the differentiable combine weights of those slots, 0 where the slot is empty. The
// combined output of token n is sum_j gates[n, j] * FFN_{expert[n*k+j]}(x[n]) over its
// non-empty slots; a token whose slots are all empty contributes 0 (the caller's residual add
// carries it through), as in Switch Transformers (arXiv:2101.03961).
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/shape.hpp"

#include <cstdint>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Which experts each token goes to: `expert` holds tokens*k ids in [0, E) in the router's
/// slot order (row n: slots n*k .. n*k+k-1), or -1 for a slot dropped by the capacity rule;
/// `gates` (tokens, k) the differentiable combine weights of those slots (0 where dropped).
template <class T>
struct moe_route {
  index_t tokens = 0, k = 0, n_expert = 0;
  std::vector<std::int32_t> expert;
  var<T, shape<dyn, dyn>> gates;
};

TFM_END_NAMESPACE
