// typeformer/expr/reduce.hpp
//
// Reductions along one axis or over all elements: sum, mean, max, min, argmax, argmin,
// logsumexp. A reduction materialises its result (it is a layer boundary, not a fused node); its
// argument may be any tensor, view or expression (evaluated once into a contiguous buffer when it
// is not already contiguous).
//
//   sum<1>(x)              shape (A, B, C) -> (A, C)
//   sum<1>(x, keepdims)    shape (A, B, C) -> (A, 1, C)
//   sum(x)                 all elements -> a scalar
//   argmax<-1>(logits)     int32 indices of the first maximum along the last axis
//
// Result types: sum/mean/logsumexp of bf16/f16/f32 accumulate and return f32 (so summing 10^6
// bf16 ones gives exactly 10^6), of f64 return f64, of integers (sum only) return int64;
// max/min keep the element type; argmax/argmin return int32. NaN propagates through
// max/min/sum; argmax/argmin return the index of the first NaN if there is one.
// Reducing an empty axis: sum = 0, mean = NaN, max/min/argmax/argmin/logsumexp raise
// tfm::shape_error. Results do not depend on the thread count.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/evaluate.hpp"
#include "typeformer/expr/node.hpp"

#include <cstdint>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

/// Tag: keep the reduced axis with extent 1.
struct keepdims_t {
  explicit constexpr keepdims_t() = default;
};
inline constexpr keepdims_t keepdims{};

enum class reduce_op { sum, mean, max, min, argmax, argmin, logsumexp };

inline const char* reduce_op_name(reduce_op k) noexcept {
  switch (k) {
    case reduce_op::sum:
      return "sum";
    case reduce_op::mean:
      return "mean";
    case reduce_op::max:
      return "max";
    case reduce_op::min:
      return "min";
    case reduce_op::argmax:
      return "argmax";
    case reduce_op::argmin:
      return "argmin";
    case reduce_op::logsumexp:
      return "logsumexp";
  }
  return "reduce";
}

/// Element type of a reduction's result for input element type T.
template <reduce_op K, class T>
using reduce_result_t = std::conditional_t<
    K == reduce_op::argmax || K == reduce_op::argmin, std::int32_t,
    std::conditional_t<K == reduce_op::max || K == reduce_op::min, T, accum_t<T>>>;

namespace detail {

template <reduce_op K, class T>
constexpr void check_reduce_type() {
  static_assert(!(K == reduce_op::mean || K == reduce_op::logsumexp) || is_floating_v<T>,
                "tfm: mean and logsumexp need floating-point input (cast integer tensors first)");
}

template <reduce_op K>
void check_nonempty(index_t n, const std::string& shape) {
  if constexpr (K != reduce_op::sum && K != reduce_op::mean) {
    if (n == 0)
      fail(errc::shape, "tfm::", reduce_op_name(K), ": cannot reduce an empty axis (shape ", shape,
           ").");
  }
}

}  // namespace detail

/// Reduction K along Axis (negative counts from the end), with an explicit backend.
template <reduce_op K, int Axis, bool Keep = false, tensor_operand X, class Backend>
auto reduce(X&& x, Backend b) {
  using N = detail::node_t<X>;
  using S = typename N::shape_type;
  using T = typename N::value_type;
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  using SO = reduce_shape_t<S, ax, Keep>;
  using U = reduce_result_t<K, T>;
  detail::check_reduce_type<K, T>();
  auto node = detail::to_node(std::forward<X>(x));
  auto ext = node.shape().extents();
  index_t outer = 1, inner = 1, n = ext[ax];
  for (std::size_t a = 0; a < ax; ++a) outer *= ext[a];
  for (std::size_t a = ax + 1; a < S::rank; ++a) inner *= ext[a];
  detail::check_nonempty<K>(n, node.shape().to_string());
  auto out = tensor<U, SO, Backend>(reduce_shape<SO>(node.shape(), ax, Keep));
  if constexpr (view_type<N>) {
    if (node.is_contiguous()) {
      reduce_kernel<K>(node.data(), outer, n, inner, out.data(), b);
      return out;
    }
  }
  auto tmp = eval(std::move(node));
  reduce_kernel<K>(static_cast<const typename decltype(tmp)::value_type*>(tmp.data()), outer, n,
                   inner, out.data(), b);
  return out;
}

/// Reduction K over all elements, with an explicit backend; returns a scalar.
template <reduce_op K, tensor_operand X, class Backend>
auto reduce_all(X&& x, Backend b) {
  using N = detail::node_t<X>;
  using T = typename N::value_type;
  using U = reduce_result_t<K, T>;
  detail::check_reduce_type<K, T>();
  auto node = detail::to_node(std::forward<X>(x));
  index_t n = node.shape().size();
  detail::check_nonempty<K>(n, node.shape().to_string());
  U out{};
  if constexpr (view_type<N>) {
    if (node.is_contiguous()) {
      reduce_kernel<K>(node.data(), 1, n, 1, &out, b);
      return out;
    }
  }
  auto tmp = eval(std::move(node));
  reduce_kernel<K>(static_cast<const typename decltype(tmp)::value_type*>(tmp.data()), 1, n, 1,
                   &out, b);
  return out;
}

// ---- user-facing names: backend from the operand (tfm::cpu for plain expressions) ----------

#define TFM_DETAIL_REDUCTION(NAME, KIND)                                                           \
  template <int Axis, tensor_operand X>                                                            \
  auto NAME(X&& x) {                                                                               \
    return reduce<KIND, Axis, false>(std::forward<X>(x),                                           \
                                     detail::node_backend_or_cpu<detail::node_t<X>>{});            \
  }                                                                                                \
  template <int Axis, tensor_operand X>                                                            \
  auto NAME(X&& x, keepdims_t) {                                                                   \
    return reduce<KIND, Axis, true>(std::forward<X>(x),                                            \
                                    detail::node_backend_or_cpu<detail::node_t<X>>{});             \
  }                                                                                                \
  template <tensor_operand X>                                                                      \
  auto NAME(X&& x) {                                                                               \
    return reduce_all<KIND>(std::forward<X>(x), detail::node_backend_or_cpu<detail::node_t<X>>{}); \
  }
TFM_DETAIL_REDUCTION(sum, reduce_op::sum)
TFM_DETAIL_REDUCTION(mean, reduce_op::mean)
TFM_DETAIL_REDUCTION(max, reduce_op::max)
TFM_DETAIL_REDUCTION(min, reduce_op::min)
TFM_DETAIL_REDUCTION(argmax, reduce_op::argmax)
TFM_DETAIL_REDUCTION(argmin, reduce_op::argmin)
TFM_DETAIL_REDUCTION(logsumexp, reduce_op::logsumexp)
#undef TFM_DETAIL_REDUCTION

TFM_END_NAMESPACE
