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
// Numerics (see backend/cpu/rows.hpp): stable for rows up to +-1e4, masked (-inf) entries give 0,
// a fully masked row gives zeros (softmax) / -inf (log_softmax), never NaN.
// bf16/f16 inputs are computed in float and rounded once.
#pragma once

#include "typeformer/backend/cpu/rows.hpp"
#include "typeformer/backend/reference/rows.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <optional>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

enum class row_op { softmax, log_softmax };

// ---- backend adapters -----------------------------------------------------------------------
template <row_op K, class T>
void row_kernel(const T* x, T* y, index_t rows, index_t n, reference) {
  if constexpr (K == row_op::softmax) reference_kernels::softmax_rows(x, n, y, n, rows, n);
  else reference_kernels::log_softmax_rows(x, n, y, n, rows, n);
}
template <row_op K, class T>
void row_kernel(const T* x, T* y, index_t rows, index_t n, cpu) {
  if constexpr (K == row_op::softmax) cpu_kernels::softmax_rows(x, n, y, n, rows, n);
  else cpu_kernels::log_softmax_rows(x, n, y, n, rows, n);
}
template <class T>
void layer_norm_kernel(const T* x, const T* g, const T* b, T eps, T* y, index_t rows, index_t n,
                       reference) {
  reference_kernels::layer_norm_rows(x, n, g, b, eps, y, n, rows, n, static_cast<T*>(nullptr), static_cast<T*>(nullptr));
}
template <class T>
void layer_norm_kernel(const T* x, const T* g, const T* b, T eps, T* y, index_t rows, index_t n,
                       cpu) {
  cpu_kernels::layer_norm_rows(x, n, g, b, eps, y, n, rows, n, static_cast<T*>(nullptr), static_cast<T*>(nullptr));
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
  if constexpr (std::is_same_v<typename R::value_type, T>) return std::forward<U>(t);
  else return cast<T>(t);
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
    }(std::make_index_sequence<S::rank - 1>{});
    index_t n = moved.extent(S::rank - 1);
    index_t rows = n ? moved.size() / n : 0;
    if (moved.size() > 0) row_kernel<K>(moved.data(), moved.data(), rows, n, B{});
    auto back = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return eval(permute<(I < ax ? I : I == ax ? S::rank - 1 : I - 1)...>(moved));
    }(std::make_index_sequence<S::rank>{});
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
struct none_t {
  explicit constexpr none_t() = default;
};
inline constexpr none_t none{};

template <tensor_operand X, class G, class Bt>
auto layer_norm(X&& x, const G& gamma, const Bt& beta, double eps = 1e-5) {
  using T = detail::value_t<X>;
  using KT = detail::kernel_type_t<T>;
  using S = typename detail::node_t<X>::shape_type;
  using B = detail::node_backend_or_cpu<detail::node_t<X>>;
  static_assert(is_floating_v<T> && S::rank >= 1, "tfm::layer_norm needs floating-point input of rank >= 1");
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
  static_assert(is_floating_v<T> && S::rank >= 1, "tfm::rms_norm needs floating-point input of rank >= 1");
  auto t = detail::kernel_input<KT>(std::forward<X>(x));
  index_t n = t.extent(S::rank - 1), rows = n ? t.size() / n : 0;
  std::optional<tensor<KT, shape<dyn>, B>> w;
  if constexpr (!std::is_same_v<W, none_t>) {
    static_assert(W::shape_type::rank == 1, "tfm::rms_norm: the weight must be 1-D");
    detail::check_param(weight, t.shape(), "rms_norm", "the weight");
    w.emplace(weight);
  }
  if (t.size() > 0)
    rms_norm_kernel<KT>(t.data(), w ? w->data() : nullptr, static_cast<KT>(eps), t.data(), rows, n, B{});
  return detail::to_result<T>(std::move(t));
}

TFM_END_NAMESPACE
