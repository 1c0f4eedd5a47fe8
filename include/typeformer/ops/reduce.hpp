// typeformer/ops/reduce.hpp
//
// Differentiable reductions on tfm::var (forward: expr/reduce.hpp).
//   sum<Axis>(v), sum<Axis>(v, keepdims), sum(v)     vjp: g broadcast back over the axis
//   mean<Axis>(v), mean<Axis>(v, keepdims), mean(v)  vjp: g / n broadcast back
//   max<Axis>(v), min<Axis>(v), (keepdims), max(v), min(v)
//                                                    vjp: g goes to the first extreme element
//                                                    (the argmax; ties do not split)
//   logsumexp<Axis>(v), logsumexp(v)                 vjp: g * softmax(v) along the axis
// sum(v) and mean(v) return a rank-0 var (a scalar loss). Accumulation is f32 for bf16/f16/f32
// inputs and f64 for f64, as in the tensor reductions.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/expr/evaluate.hpp"
#include "typeformer/expr/reduce.hpp"

#include <cmath>
#include <cstdint>
#include <memory>
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
    if constexpr (Mean)
      gi = gi + g * (1.0 / static_cast<double>(n));
    else
      gi = gi + g;
  });
  return out;
}

template <bool Mean, int Axis, bool Keep, class T, class S>
auto var_reduce_axis(const var<T, S>& v) {
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  using SO = reduce_shape_t<S, ax, Keep>;
  std::vector<index_t> e;
  for (std::size_t k = 0; k < S::rank; ++k) {
    if (k != ax)
      e.push_back(v.extent(k));
    else if (Keep)
      e.push_back(1);
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

namespace detail {
/// max/min (K = argmax/argmin) or logsumexp of a rank-R record over axes [ax0, ax1).
template <reduce_op K, std::size_t R, class T>
var_ptr<T> ad_extreme_axes(const var_ptr<T>& a, std::size_t ax0, std::size_t ax1,
                           std::vector<index_t> out_extents) {
  index_t outer = 1, n = 1, inner = 1;
  for (std::size_t k = 0; k < ax0; ++k) outer *= a->extents[k];
  for (std::size_t k = ax0; k < ax1; ++k) n *= a->extents[k];
  for (std::size_t k = ax1; k < R; ++k) inner *= a->extents[k];
  if (n == 0) fail(errc::shape, "tfm::", reduce_op_name(K), ": cannot reduce an empty axis.");
  auto out = result<T>(std::move(out_extents));
  const T* x = a->value.data();
  if constexpr (K == reduce_op::logsumexp) {
    std::vector<accum_t<T>> tmp(static_cast<std::size_t>(outer * inner));
    reduce_kernel<reduce_op::logsumexp>(x, outer, n, inner, tmp.data(), cpu{});
    for (std::size_t i = 0; i < tmp.size(); ++i) out->value.data()[i] = to_storage<T>(tmp[i]);
    record(out, "logsumexp", {a}, [a, o = out.get(), outer, n, inner] {
      using G = grad_t<T>;
      const G* g = o->grad_data();
      const T* y = o->value.data();
      const T* xv = a->value.data();
      G* gi = a->grad_data();
      for (index_t p = 0; p < outer; ++p)
        for (index_t r = 0; r < n; ++r)
          for (index_t q = 0; q < inner; ++q) {
            const index_t io = p * inner + q, ii = (p * n + r) * inner + q;
            const double lse = static_cast<double>(compute_t<T>(y[io]));
            if (std::isinf(lse)) continue;  // all -inf: no gradient
            gi[ii] += static_cast<G>(static_cast<double>(g[io]) *
                                     std::exp(static_cast<double>(compute_t<T>(xv[ii])) - lse));
          }
    });
  } else {
    auto idx = std::make_shared<std::vector<std::int32_t>>(static_cast<std::size_t>(outer * inner));
    reduce_kernel<K>(x, outer, n, inner, idx->data(), cpu{});
    for (index_t p = 0; p < outer; ++p)
      for (index_t q = 0; q < inner; ++q)
        out->value.data()[p * inner + q] =
            x[(p * n + (*idx)[static_cast<std::size_t>(p * inner + q)]) * inner + q];
    record(out, K == reduce_op::argmax ? "max" : "min", {a}, [a, o = out.get(), idx, n, inner] {
      using G = grad_t<T>;
      const G* g = o->grad_data();
      G* gi = a->grad_data();
      for (std::size_t i = 0; i < idx->size(); ++i) {
        const index_t p = static_cast<index_t>(i) / inner, q = static_cast<index_t>(i) % inner;
        gi[(p * n + (*idx)[i]) * inner + q] += g[i];
      }
    });
  }
  return out;
}

template <reduce_op K, int Axis, bool Keep, class T, class S>
auto var_extreme_axis(const var<T, S>& v) {
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  using SO = reduce_shape_t<S, ax, Keep>;
  std::vector<index_t> e;
  for (std::size_t k = 0; k < S::rank; ++k) {
    if (k != ax)
      e.push_back(v.extent(k));
    else if (Keep)
      e.push_back(1);
  }
  return var<T, SO>(ad_extreme_axes<K, S::rank>(v.data(), ax, ax + 1, std::move(e)));
}
}  // namespace detail

#define TFM_DETAIL_VAR_EXTREME(NAME, KIND)                                                    \
  template <int Axis, class T, class S>                                                       \
  auto NAME(const var<T, S>& v) {                                                             \
    return detail::var_extreme_axis<KIND, Axis, false>(v);                                    \
  }                                                                                           \
  template <int Axis, class T, class S>                                                       \
  auto NAME(const var<T, S>& v, keepdims_t) {                                                 \
    return detail::var_extreme_axis<KIND, Axis, true>(v);                                     \
  }                                                                                           \
  template <class T, class S>                                                                 \
  var<T, shape<>> NAME(const var<T, S>& v) {                                                  \
    return var<T, shape<>>(detail::ad_extreme_axes<KIND, S::rank>(v.data(), 0, S::rank, {})); \
  }
TFM_DETAIL_VAR_EXTREME(max, reduce_op::argmax)
TFM_DETAIL_VAR_EXTREME(min, reduce_op::argmin)
TFM_DETAIL_VAR_EXTREME(logsumexp, reduce_op::logsumexp)
#undef TFM_DETAIL_VAR_EXTREME

TFM_END_NAMESPACE
