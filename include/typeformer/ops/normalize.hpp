// typeformer/ops/normalize.hpp
//
// Row operations on tensors, forward (vjps arrive with autodiff/): softmax, log_softmax,
// layer_norm and rms_norm. They normalise the last axis (softmax/log_softmax take any axis as a
// template argument); inputs may be tensors, views or expressions, and results are new tensors of
// the input's shape and element type.
//
//   softmax(x)                       exp(x - max) / sum, along the last axis
//   softmax<0>(x)                    along axis 0
//   log_softmax(x)                   (x - max) - log(sum exp(x - max))
//   layer_norm(x, gamma, beta, eps)  (x - mean) / sqrt(var + eps) * gamma + beta   arXiv:1607.06450
//   rms_norm(x, weight, eps)         x / sqrt(mean(x^2) + eps) * weight           arXiv:1910.07467
//
// Differentiable forms on tfm::var (last axis), vjps (y output, g its gradient, rows of n):
//   softmax      dx = y (g - sum(g y))                     log_softmax  dx = g - exp(y) sum(g)
//   layer_norm   xh = (x - mu) r, r = 1/sqrt(var + eps):
//                dx = r (gw - mean(gw) - xh mean(gw xh)), gw = g gamma; dgamma = sum g xh; dbeta =
//                sum g
//   rms_norm     r = 1/sqrt(mean(x^2) + eps): dx = r gw - x r^3 mean(gw x); dweight = sum g x r
//
// Numerics (see backend/cpu/rows.hpp): stable for rows up to +-1e4, masked (-inf) entries give 0,
// a fully masked row gives zeros (softmax) / -inf (log_softmax), never NaN.
// bf16/f16 inputs are computed in float and rounded once.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/backend/cpu/rows.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/backend/reference/rows.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <algorithm>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

enum class row_op { softmax, log_softmax };

// ---- backend adapters -----------------------------------------------------------------------
template <row_op K, class T>
void row_kernel(const T* x, T* y, index_t rows, index_t n, reference) {
  if constexpr (K == row_op::softmax)
    reference_kernels::softmax_rows(x, n, y, n, rows, n);
  else
    reference_kernels::log_softmax_rows(x, n, y, n, rows, n);
}
template <row_op K, class T>
void row_kernel(const T* x, T* y, index_t rows, index_t n, cpu) {
  if constexpr (K == row_op::softmax)
    cpu_kernels::softmax_rows(x, n, y, n, rows, n);
  else
    cpu_kernels::log_softmax_rows(x, n, y, n, rows, n);
}
template <class T>
void layer_norm_kernel(const T* x, const T* g, const T* b, T eps, T* y, index_t rows, index_t n,
                       reference) {
  reference_kernels::layer_norm_rows(x, n, g, b, eps, y, n, rows, n, static_cast<T*>(nullptr),
                                     static_cast<T*>(nullptr));
}
template <class T>
void layer_norm_kernel(const T* x, const T* g, const T* b, T eps, T* y, index_t rows, index_t n,
                       cpu) {
  cpu_kernels::layer_norm_rows(x, n, g, b, eps, y, n, rows, n, static_cast<T*>(nullptr),
                               static_cast<T*>(nullptr));
}
template <class T>
void rms_norm_kernel(const T* x, const T* w, T eps, T* y, index_t rows, index_t n, reference) {
  reference_kernels::rms_norm_rows(x, n, w, eps, y, n, rows, n, static_cast<T*>(nullptr));
}
template <class T>
void rms_norm_kernel(const T* x, const T* w, T eps, T* y, index_t rows, index_t n, cpu) {
  cpu_kernels::rms_norm_rows(x, n, w, eps, y, n, rows, n, static_cast<T*>(nullptr));
}

namespace detail {
/// Contiguous tensor in the kernel's type (float for halves) holding x.
template <class K, class X>
auto kernel_input(X&& x) {
  using N = node_t<X>;
  using S = typename N::shape_type;
  using B = node_backend_or_cpu<N>;
  auto node = to_node(std::forward<X>(x));
  auto t = tensor<K, S, B>::uninitialized(S::from_extents(node.shape().extents()));
  evaluate(t.view(), node, B{});
  return t;
}
template <class T>
using kernel_type_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class X>
using value_t = std::remove_cv_t<typename node_t<X>::value_type>;

template <class T, class U>
auto to_result(U&& t) {
  using R = std::remove_cvref_t<U>;
  if constexpr (std::is_same_v<typename R::value_type, T>)
    return std::forward<U>(t);
  else
    return cast<T>(t);
}

template <class P, class S>
void check_param(const P& p, const S& xs, const char* who, const char* what) {
  if (p.extent(0) != xs.extent(S::rank - 1))
    fail(errc::shape, "tfm::", who, ": ", what, " has shape ", p.shape().to_string(),
         " but the normalised axis of the input ", xs.to_string(), " has extent ",
         xs.extent(S::rank - 1), ".");
}
}  // namespace detail

/// Softmax-family normalisation K along Axis.
template <row_op K, int Axis, tensor_operand X>
auto row_normalize(X&& x) {
  using T = detail::value_t<X>;
  using KT = detail::kernel_type_t<T>;
  using S = typename detail::node_t<X>::shape_type;
  using B = detail::node_backend_or_cpu<detail::node_t<X>>;
  static_assert(is_floating_v<T>, "tfm::softmax/log_softmax need floating-point input");
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  if constexpr (ax + 1 == S::rank) {
    auto t = detail::kernel_input<KT>(std::forward<X>(x));
    index_t n = S::rank ? t.extent(S::rank - 1) : 1;
    index_t rows = n ? t.size() / n : 0;
    if (t.size() > 0) row_kernel<K>(t.data(), t.data(), rows, n, B{});
    return detail::to_result<T>(std::move(t));
  } else {
    // Move the axis last, normalise, and move it back.
    auto t = detail::kernel_input<KT>(std::forward<X>(x));
    auto moved = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return eval(permute<(I < ax ? I : I + 1)..., ax>(t));
    }
    (std::make_index_sequence<S::rank - 1>{});
    index_t n = moved.extent(S::rank - 1);
    index_t rows = n ? moved.size() / n : 0;
    if (moved.size() > 0) row_kernel<K>(moved.data(), moved.data(), rows, n, B{});
    auto back = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return eval(permute<(I < ax ? I : I == ax ? S::rank - 1 : I - 1)...>(moved));
    }
    (std::make_index_sequence<S::rank>{});
    tensor<KT, S, B> r = back;
    return detail::to_result<T>(std::move(r));
  }
}

template <int Axis = -1, tensor_operand X>
auto softmax(X&& x) {
  return row_normalize<row_op::softmax, Axis>(std::forward<X>(x));
}
template <int Axis = -1, tensor_operand X>
auto log_softmax(X&& x) {
  return row_normalize<row_op::log_softmax, Axis>(std::forward<X>(x));
}

/// LayerNorm over the last axis; gamma and beta are 1-D of that extent (either may be omitted
/// by passing tfm::none).
template <tensor_operand X, class G, class Bt>
auto layer_norm(X&& x, const G& gamma, const Bt& beta, double eps = 1e-5) {
  using T = detail::value_t<X>;
  using KT = detail::kernel_type_t<T>;
  using S = typename detail::node_t<X>::shape_type;
  using B = detail::node_backend_or_cpu<detail::node_t<X>>;
  static_assert(is_floating_v<T> && S::rank >= 1,
                "tfm::layer_norm needs floating-point input of rank >= 1");
  auto t = detail::kernel_input<KT>(std::forward<X>(x));
  index_t n = t.extent(S::rank - 1), rows = n ? t.size() / n : 0;
  auto param = [&](const auto& p, const char* what) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(p)>, none_t>) {
      return std::optional<tensor<KT, shape<dyn>, B>>{};
    } else {
      static_assert(std::remove_cvref_t<decltype(p)>::shape_type::rank == 1,
                    "tfm::layer_norm: gamma and beta must be 1-D");
      detail::check_param(p, t.shape(), "layer_norm", what);
      return std::optional<tensor<KT, shape<dyn>, B>>(tensor<KT, shape<dyn>, B>(p));
    }
  };
  auto g = param(gamma, "gamma");
  auto b = param(beta, "beta");
  if (t.size() > 0)
    layer_norm_kernel<KT>(t.data(), g ? g->data() : nullptr, b ? b->data() : nullptr,
                          static_cast<KT>(eps), t.data(), rows, n, B{});
  return detail::to_result<T>(std::move(t));
}

/// RMSNorm over the last axis; weight is 1-D of that extent (or tfm::none).
template <tensor_operand X, class W>
auto rms_norm(X&& x, const W& weight, double eps = 1e-6) {
  using T = detail::value_t<X>;
  using KT = detail::kernel_type_t<T>;
  using S = typename detail::node_t<X>::shape_type;
  using B = detail::node_backend_or_cpu<detail::node_t<X>>;
  static_assert(is_floating_v<T> && S::rank >= 1,
                "tfm::rms_norm needs floating-point input of rank >= 1");
  auto t = detail::kernel_input<KT>(std::forward<X>(x));
  index_t n = t.extent(S::rank - 1), rows = n ? t.size() / n : 0;
  std::optional<tensor<KT, shape<dyn>, B>> w;
  if constexpr (!std::is_same_v<W, none_t>) {
    static_assert(W::shape_type::rank == 1, "tfm::rms_norm: the weight must be 1-D");
    detail::check_param(weight, t.shape(), "rms_norm", "the weight");
    w.emplace(weight);
  }
  if (t.size() > 0)
    rms_norm_kernel<KT>(t.data(), w ? w->data() : nullptr, static_cast<KT>(eps), t.data(), rows, n,
                        B{});
  return detail::to_result<T>(std::move(t));
}

// ---- differentiable forms ---------------------------------------------------------------------
namespace detail {
template <row_op K, class T, std::size_t R>
var_ptr<T> ad_row_normalize(const var_ptr<T>& a) {
  auto y = row_normalize<K, -1>(value_view<R>(a));
  auto out = result<T>(a->extents);
  value_view<R>(out) = y;
  record(out, K == row_op::softmax ? "softmax" : "log_softmax", {a}, [a, o = out.get()] {
    using G = grad_t<T>;
    tensor_view<const T, dyn_shape<R>> y(o->value.data(), dyn_shape_of<R>(o->extents));
    tensor_view<const G, dyn_shape<R>> g(o->grad_data(), y.shape());
    auto gi = grad_view<R>(a);
    if constexpr (K == row_op::softmax) {
      auto s = sum<R - 1>(g * y, keepdims);  // (..., 1)
      gi = gi + y * (g - s);
    } else {
      auto s = sum<R - 1>(g, keepdims);
      gi = gi + (g - exp(y) * s);
    }
  });
  return out;
}
}  // namespace detail

template <class T, class S>
var<T, S> softmax(const var<T, S>& v) {
  return var<T, S>(detail::ad_row_normalize<row_op::softmax, T, S::rank>(v.data()));
}
template <class T, class S>
var<T, S> log_softmax(const var<T, S>& v) {
  return var<T, S>(detail::ad_row_normalize<row_op::log_softmax, T, S::rank>(v.data()));
}

namespace detail {
/// Rows per block of the norm backward: dx is per row; dgamma/dbeta are summed in double within
/// each block and the block sums added in block order, so the result does not depend on the
/// thread count.
inline constexpr index_t norm_backward_rows = 32;

/// The vjp of layer norm (Rms = false) or RMS norm over rows of n: g is the output gradient,
/// mean/rstd the forward's row statistics. dx is assigned when it is the first gradient of a
/// (no zero fill), else added; dgamma/dbeta are added.
template <bool Rms, class T, class KT>
void norm_backward(var_data<T>& a, var_data<T>* w, var_data<T>* bias, const grad_t<T>* g,
                   const KT* mean, const KT* rstd, index_t n, index_t rows) {
  using G = grad_t<T>;
  const T* xv = a.value.data();
  const T* wv = w ? w->value.data() : nullptr;
  typename var_data<T>::grad_target tx{nullptr, false};
  if (a.requires_grad) tx = a.grad_for_overwrite();
  const bool want_w = w && w->requires_grad, want_b = bias && bias->requires_grad;
  const index_t blocks = (rows + norm_backward_rows - 1) / norm_backward_rows;
  std::vector<double> pw(want_w ? static_cast<std::size_t>(blocks * n) : 0),
      pb(want_b ? static_cast<std::size_t>(blocks * n) : 0);
  TFM_OMP(parallel for schedule(static) if (rows * n >= (1 << 15) && !in_parallel()))
  for (index_t blk = 0; blk < blocks; ++blk) {
    double* bw = want_w ? pw.data() + blk * n : nullptr;
    double* bb = want_b ? pb.data() + blk * n : nullptr;
    const index_t r1 = std::min(rows, (blk + 1) * norm_backward_rows);
    for (index_t r = blk * norm_backward_rows; r < r1; ++r) {
      const G* gr = g + r * n;
      const T* xr = xv + r * n;
      const double mu = Rms ? 0.0 : static_cast<double>(mean[r]);
      const double rs = static_cast<double>(rstd[r]);
      double s1 = 0, s2 = 0;  // sums of gw and gw * xh
      for (index_t j = 0; j < n; ++j) {
        const double xh = (static_cast<double>(compute_t<T>(xr[j])) - mu) * rs;
        const double gj = static_cast<double>(gr[j]);
        const double gwj = gj * (wv ? static_cast<double>(compute_t<T>(wv[j])) : 1.0);
        s1 += gwj;
        s2 += gwj * xh;
        if (bw) bw[j] += gj * xh;
        if (bb) bb[j] += gj;
      }
      if (!tx.data) continue;
      const double m1 = s1 / static_cast<double>(n), m2 = s2 / static_cast<double>(n);
      G* gx = tx.data + r * n;
      for (index_t j = 0; j < n; ++j) {
        const double xh = (static_cast<double>(compute_t<T>(xr[j])) - mu) * rs;
        const double gwj =
            static_cast<double>(gr[j]) * (wv ? static_cast<double>(compute_t<T>(wv[j])) : 1.0);
        const double d = Rms ? rs * (gwj - xh * m2) : rs * (gwj - m1 - xh * m2);
        gx[j] = tx.accumulate ? gx[j] + static_cast<G>(d) : static_cast<G>(d);
      }
    }
  }
  auto add_blocks = [&](const std::vector<double>& part, G* dst) {
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t blk = 0; blk < blocks; ++blk) s += part[static_cast<std::size_t>(blk * n + j)];
      dst[j] = static_cast<G>(static_cast<double>(dst[j]) + s);
    }
  };
  if (want_w) add_blocks(pw, w->grad_data());
  if (want_b) add_blocks(pb, bias->grad_data());
}

/// Layer norm (Rms = false) or RMS norm over the last axis of a rank-R record, with optional
/// scale (gamma/weight) and shift (beta, layer norm only) vars of rank 1.
template <bool Rms, class T, std::size_t R>
var_ptr<T> ad_norm(const var_ptr<T>& a, const var_ptr<T>& w, const var_ptr<T>& bias, double eps) {
  using KT = kernel_type_t<T>;
  const index_t n = a->extents[R - 1];
  const index_t rows = n ? a->size() / n : 0;
  for (const auto* p : {w.get(), bias.get()})
    if (p && (p->extents.size() != 1 || p->extents[0] != n))
      fail(errc::shape, Rms ? "tfm::rms_norm" : "tfm::layer_norm", ": the parameter has ",
           p->extents.size() == 1 ? p->extents[0] : -1, " elements but the normalised axis has ", n,
           ".");
  // Forward in the kernel type, keeping per-row statistics for the vjp.
  auto x = eval(cast<KT>(value_view<R>(a)));  // rank-R contiguous copy
  tensor<KT, shape<dyn>> wk, bk;
  if (w) wk = cast<KT>(value_view<1>(w));
  if (bias) bk = cast<KT>(value_view<1>(bias));
  tensor<KT, dyn_shape<R>> y(dyn_shape_of<R>(a->extents));
  auto mean_s = std::make_shared<std::vector<KT>>(static_cast<std::size_t>(rows));
  auto rstd_s = std::make_shared<std::vector<KT>>(static_cast<std::size_t>(rows));
  if (rows > 0) {
    if constexpr (Rms)
      cpu_kernels::rms_norm_rows(x.data(), n, w ? wk.data() : static_cast<KT*>(nullptr),
                                 static_cast<KT>(eps), y.data(), n, rows, n, rstd_s->data());
    else
      cpu_kernels::layer_norm_rows(x.data(), n, w ? wk.data() : static_cast<KT*>(nullptr),
                                   bias ? bk.data() : static_cast<KT*>(nullptr),
                                   static_cast<KT>(eps), y.data(), n, rows, n, mean_s->data(),
                                   rstd_s->data());
  }
  auto out = result<T>(a->extents);
  value_view<R>(out) = y;
  std::vector<std::shared_ptr<var_base>> ins{a};
  if (w) ins.push_back(w);
  if (bias) ins.push_back(bias);
  record(out, Rms ? "rms_norm" : "layer_norm", std::move(ins),
         [a, w, bias, o = out.get(), mean_s, rstd_s, n, rows] {
           norm_backward<Rms>(*a, w.get(), bias.get(), o->grad_data(), mean_s->data(),
                              rstd_s->data(), n, rows);
         });
  return out;
}
}  // namespace detail

/// Differentiable LayerNorm over the last axis; gamma/beta are 1-D vars (or tfm::none).
template <class T, class S, class GW, class GB>
var<T, S> layer_norm(const var<T, S>& x, const GW& gamma, const GB& beta, double eps = 1e-5) {
  detail::var_ptr<T> w, b;
  if constexpr (!std::is_same_v<GW, none_t>) w = gamma.data();
  if constexpr (!std::is_same_v<GB, none_t>) b = beta.data();
  return var<T, S>(detail::ad_norm<false, T, S::rank>(x.data(), w, b, eps));
}
/// Differentiable RMSNorm over the last axis; weight is a 1-D var (or tfm::none).
template <class T, class S, class W>
var<T, S> rms_norm(const var<T, S>& x, const W& weight, double eps = 1e-6) {
  detail::var_ptr<T> w;
  if constexpr (!std::is_same_v<W, none_t>) w = weight.data();
  return var<T, S>(detail::ad_norm<true, T, S::rank>(x.data(), w, nullptr, eps));
}

TFM_END_NAMESPACE
