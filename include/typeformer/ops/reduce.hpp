// typeformer/ops/reduce.hpp
//
// Differentiable reductions on tfm::var (forward: expr/reduce.hpp).
//   sum<Axis>(v), sum<Axis>(v, keepdims), sum(v)     vjp: g broadcast back over the axis
//   mean<Axis>(v), mean<Axis>(v, keepdims), mean(v)  vjp: g / n broadcast back
// sum(v) and mean(v) return a rank-0 var (a scalar loss). Accumulation is f32 for bf16/f16/f32
// inputs and f64 for f64, as in the tensor reductions.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/expr/evaluate.hpp"
#include "typeformer/expr/reduce.hpp"

#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail {
/// Sum (Mean = false) or mean of a rank-R record over the axes [ax0, ax1) (one axis, or all
/// axes for a full reduction); `out_extents` are the extents the result var reports.
template <bool Mean, std::size_t R, class T>
var_ptr<T> ad_sum_axes(const var_ptr<T>& a, std::size_t ax0, std::size_t ax1,
                       std::vector<index_t> out_extents) {
  index_t outer = 1, n = 1, inner = 1;
  for (std::size_t k = 0; k < ax0; ++k) outer *= a->extents[k];
  for (std::size_t k = ax0; k < ax1; ++k) n *= a->extents[k];
  for (std::size_t k = ax1; k < R; ++k) inner *= a->extents[k];
  auto out = result<T>(std::move(out_extents));
  {
    std::vector<accum_t<T>> tmp(static_cast<std::size_t>(outer * inner));
    reduce_kernel<Mean ? reduce_op::mean : reduce_op::sum>(a->value.data(), outer, n, inner,
                                                           tmp.data(), cpu{});
    for (std::size_t i = 0; i < tmp.size(); ++i) out->value.data()[i] = to_storage<T>(tmp[i]);
  }
  record(out, Mean ? "mean" : "sum", {a}, [a, o = out.get(), outer, n, inner] {
    // g viewed as (outer, 1, inner) broadcast over (outer, n, inner).
    using G = grad_t<T>;
    tensor_view<const G, dyn_shape<3>> g(o->grad_data(), dyn_shape<3>(outer, index_t{1}, inner));
    tensor_view<G, dyn_shape<3>> gi(a->grad_data(), dyn_shape<3>(outer, n, inner));
    if constexpr (Mean) gi = gi + g * (1.0 / static_cast<double>(n));
    else gi = gi + g;
  });
  return out;
}

template <bool Mean, int Axis, bool Keep, class T, class S>
auto var_reduce_axis(const var<T, S>& v) {
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  using SO = reduce_shape_t<S, ax, Keep>;
  std::vector<index_t> e;
  for (std::size_t k = 0; k < S::rank; ++k) {
    if (k != ax) e.push_back(v.extent(k));
    else if (Keep) e.push_back(1);
  }
  return var<T, SO>(ad_sum_axes<Mean, S::rank>(v.data(), ax, ax + 1, std::move(e)));
}
}  // namespace detail

template <int Axis, class T, class S>
auto sum(const var<T, S>& v) {
  return detail::var_reduce_axis<false, Axis, false>(v);
}
template <int Axis, class T, class S>
auto sum(const var<T, S>& v, keepdims_t) {
  return detail::var_reduce_axis<false, Axis, true>(v);
}
template <int Axis, class T, class S>
auto mean(const var<T, S>& v) {
  return detail::var_reduce_axis<true, Axis, false>(v);
}
template <int Axis, class T, class S>
auto mean(const var<T, S>& v, keepdims_t) {
  return detail::var_reduce_axis<true, Axis, true>(v);
}
/// Sum of all elements: a rank-0 var.
template <class T, class S>
var<T, shape<>> sum(const var<T, S>& v) {
  return var<T, shape<>>(detail::ad_sum_axes<false, S::rank>(v.data(), 0, S::rank, {}));
}
/// Mean of all elements: a rank-0 var.
template <class T, class S>
var<T, shape<>> mean(const var<T, S>& v) {
  return var<T, shape<>>(detail::ad_sum_axes<true, S::rank>(v.data(), 0, S::rank, {}));
}

TFM_END_NAMESPACE
