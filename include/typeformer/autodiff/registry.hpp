// typeformer/autodiff/registry.hpp
//
// The list of differentiable ops: every name a recorded node can carry (node::op_name). The
// test suite keeps a gradient check for each entry and fails when one is missing (the tripwire
// of TESTING.md: adding an op without its vjp and gradcheck breaks the build of the tests or
// the tests themselves). An op that records a name not in this list fails in debug builds of
// the tests, which check every recorded name against it.
#pragma once

#include "typeformer/config/config.hpp"

#include <array>
#include <iterator>
#include <string_view>

TFM_BEGIN_NAMESPACE

// X(name): one line per area of ops/*.hpp, in their order.
// clang-format off
#define TFM_DIFFERENTIABLE_OPS(X)                                                                  \
  /* ops/elementwise.hpp */                                                                        \
  X(add) X(sub) X(mul) X(div) X(pow) X(min) X(max) X(where) X(neg) X(exp) X(log) X(sqrt)          \
  X(rsqrt) X(tanh) X(sigmoid) X(silu) X(gelu_tanh) X(gelu_erf) X(relu) X(abs) X(square) X(erf)    \
  X(normal_cdf)                                                                                    \
  /* ops/reduce.hpp */                                                                             \
  X(sum) X(mean) X(logsumexp)                                                                      \
  /* ops/matmul.hpp */                                                                             \
  X(matmul)                                                                                        \
  /* ops/view.hpp */                                                                               \
  X(reshape) X(permute) X(slice) X(concat)                                                         \
  /* ops/gather.hpp */                                                                             \
  X(embedding) X(index_select) X(gather)                                                           \
  /* ops/normalize.hpp */                                                                          \
  X(softmax) X(log_softmax) X(layer_norm) X(rms_norm)                                              \
  /* ops/loss.hpp, ops/linear_loss.hpp, ops/dropout.hpp, autodiff/checkpoint.hpp */               \
  X(cross_entropy) X(linear_cross_entropy) X(dropout) X(checkpoint)                                \
  /* ops/linear.hpp, ops/rope.hpp, ops/lora_linear.hpp */                                          \
  X(linear) X(rope) X(lora_linear)                                                                 \
  /* ops/attention.hpp (the fused kernel; attention_composed records its parts) */                 \
  X(attention)

// The alignment losses (ops/alignment_loss.hpp): their gradient checks and their own count
// tripwire live in tests/unit/alignment (alignment_op_count), beside the numpy references of
// the same losses, so the core table of tests/unit/autodiff does not list them.
#define TFM_ALIGNMENT_OPS(X)                                                                       \
  X(sequence_logprob) X(dpo_loss) X(bradley_terry_loss) X(ppo_policy_loss) X(ppo_value_loss)      \
  X(grpo_loss)

// The mixture-of-experts ops. The router's (ops/moe_router.hpp) have their gradient checks and
// count tripwire (moe_router_op_count) in tests/unit/moe; the expert kernels'
// (ops/moe_experts.hpp) theirs in tests/unit/moe_experts.
#define TFM_MOE_ROUTER_OPS(X)                                                                      \
  X(moe_noisy_logits) X(moe_gates) X(moe_aux_loss) X(moe_z_loss)
#define TFM_MOE_EXPERT_OPS(X) X(moe_experts)
#define TFM_MOE_OPS(X) TFM_MOE_ROUTER_OPS(X) TFM_MOE_EXPERT_OPS(X)
// clang-format on

namespace detail {
#define TFM_DETAIL_OP_NAME(n) std::string_view(#n),
inline constexpr std::array differentiable_op_names{TFM_DIFFERENTIABLE_OPS(TFM_DETAIL_OP_NAME)};
inline constexpr std::array alignment_op_names{TFM_ALIGNMENT_OPS(TFM_DETAIL_OP_NAME)};
inline constexpr std::array moe_router_op_names{TFM_MOE_ROUTER_OPS(TFM_DETAIL_OP_NAME)};
inline constexpr std::string_view moe_expert_op_names[] = {TFM_MOE_EXPERT_OPS(TFM_DETAIL_OP_NAME)
                                                               std::string_view()};
#undef TFM_DETAIL_OP_NAME
}  // namespace detail

/// Number of differentiable ops of TFM_DIFFERENTIABLE_OPS; a test (tests/unit/autodiff) asserts
/// it equals the number of its gradient checks.
inline constexpr std::size_t differentiable_op_count = detail::differentiable_op_names.size();
/// Number of alignment losses (TFM_ALIGNMENT_OPS); tests/unit/alignment asserts it equals the
/// number of its gradient checks.
inline constexpr std::size_t alignment_op_count = detail::alignment_op_names.size();
/// Number of MoE router ops (TFM_MOE_ROUTER_OPS); tests/unit/moe asserts it equals the number of
/// its gradient checks.
inline constexpr std::size_t moe_router_op_count = detail::moe_router_op_names.size();
/// Number of MoE expert ops (TFM_MOE_EXPERT_OPS; the name array ends with an empty sentinel so
/// that an empty list compiles); tests/unit/moe_experts checks it against its gradient checks.
inline constexpr std::size_t moe_expert_op_count = std::size(detail::moe_expert_op_names) - 1;

/// True when `name` is a registered differentiable op (of any of the lists above).
constexpr bool is_differentiable_op(std::string_view name) noexcept {
  for (auto n : detail::differentiable_op_names)
    if (n == name) return true;
  for (auto n : detail::alignment_op_names)
    if (n == name) return true;
  for (auto n : detail::moe_router_op_names)
    if (n == name) return true;
  for (auto n : detail::moe_expert_op_names)
    if (!n.empty() && n == name) return true;
  return false;
}

TFM_END_NAMESPACE
