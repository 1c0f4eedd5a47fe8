// typeformer/ops/elementwise.hpp
//
// Differentiable elementwise ops on tfm::var: the forward is the fused expression of expr/
// (one functor per op, see expr/functors.hpp); the vjp of each functor is written here, beside
// the others, as an expression in the input x, the output y and the output gradient g.
// Broadcast inputs receive the gradient summed over the broadcast axes.
//
//   var<float, shape<dyn, 768>> h = gelu(x * w + b);   // each op records one node
//
// Derivatives (x input, y output):
//   exp: y      log: 1/x      sqrt: 0.5/y     rsqrt: -0.5 y^3     tanh: 1 - y^2
//   sigmoid: y (1 - y)        silu: s (1 + x (1 - s)), s = sigmoid(x)
//   gelu_tanh: 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2), t = tanh(k (x + c x^3)),
//              k = sqrt(2/pi), c = 0.044715          (arXiv:1606.08415)
//   gelu_erf: Phi(x) + x phi(x)      erf: 2/sqrt(pi) exp(-x^2)      normal_cdf: phi(x)
//   relu: [x > 0]   abs: sign(x)   square: 2x   neg: -1
//   min/max: the gradient goes to the selected input; ties split it evenly (as PyTorch does).
//   pow(a, b): b a^(b-1) and y log(a)      where(c, a, b): c selects; c gets no gradient.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/expr/evaluate.hpp"
#include "typeformer/expr/functors.hpp"
#include "typeformer/expr/node.hpp"

#include <type_traits>

TFM_BEGIN_NAMESPACE

/// vjp of a unary functor: grad(x, y, g) is an expression for dL/dx.
template <class F>
struct vjp_unary;

#define TFM_DETAIL_VJP1(F, EXPR)                           \
  template <>                                              \
  struct vjp_unary<op::F> {                                \
    template <class X, class Y, class G>                   \
    static auto grad(const X& x, const Y& y, const G& g) { \
      (void)x;                                             \
      (void)y;                                             \
      return EXPR;                                         \
    }                                                      \
  };
TFM_DETAIL_VJP1(neg, -g)
TFM_DETAIL_VJP1(exp, g* y)
TFM_DETAIL_VJP1(log, g / x)
TFM_DETAIL_VJP1(sqrt, g * 0.5 / y)
TFM_DETAIL_VJP1(rsqrt, g*(-0.5) * y * y * y)
TFM_DETAIL_VJP1(tanh, g*(1.0 - y * y))
TFM_DETAIL_VJP1(sigmoid, g* y*(1.0 - y))
TFM_DETAIL_VJP1(silu, g* sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))))
TFM_DETAIL_VJP1(gelu_tanh,
                g*(0.5 * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) +
                   0.5 * x * (1.0 - square(tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))) *
                       0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)))
TFM_DETAIL_VJP1(gelu_erf, g*(normal_cdf(x) + x * 0.3989422804014327 * exp(-0.5 * x * x)))
TFM_DETAIL_VJP1(relu, g*(x > 0.0))
TFM_DETAIL_VJP1(abs, g*((x > 0.0) - (x < 0.0)))
TFM_DETAIL_VJP1(square, g * 2.0 * x)
TFM_DETAIL_VJP1(erf, g * 1.1283791670955126 * exp(-x * x))
TFM_DETAIL_VJP1(normal_cdf, g * 0.3989422804014327 * exp(-0.5 * x * x))
#undef TFM_DETAIL_VJP1

/// vjp of a binary functor: grad_a / grad_b are expressions for dL/da and dL/db (output shape).
template <class F>
struct vjp_binary;
#define TFM_DETAIL_VJP2(F, EA, EB)                                       \
  template <>                                                            \
  struct vjp_binary<op::F> {                                             \
    template <class A, class B, class Y, class G>                        \
    static auto grad_a(const A& a, const B& b, const Y& y, const G& g) { \
      (void)a;                                                           \
      (void)b;                                                           \
      (void)y;                                                           \
      return EA;                                                         \
    }                                                                    \
    template <class A, class B, class Y, class G>                        \
    static auto grad_b(const A& a, const B& b, const Y& y, const G& g) { \
      (void)a;                                                           \
      (void)b;                                                           \
      (void)y;                                                           \
      return EB;                                                         \
    }                                                                    \
  };
TFM_DETAIL_VJP2(add, g * 1.0, g * 1.0)
TFM_DETAIL_VJP2(sub, g * 1.0, -g)
TFM_DETAIL_VJP2(mul, g* b, g* a)
TFM_DETAIL_VJP2(div, g / b, -g* a / (b * b))
TFM_DETAIL_VJP2(pow, g* b* pow(a, b - 1.0), g* y* log(a))
TFM_DETAIL_VJP2(minimum, g*((a < b) + 0.5 * eq(a, b)), g*((b < a) + 0.5 * eq(a, b)))
TFM_DETAIL_VJP2(maximum, g*((a > b) + 0.5 * eq(a, b)), g*((b > a) + 0.5 * eq(a, b)))
#undef TFM_DETAIL_VJP2

namespace detail {

template <class F, class T, class S>
var<T, S> ad_unary(const var<T, S>& a) {
  // Values and gradients are dense, so the op runs over flat spans: one instantiation per
  // (op, T) whatever the rank, with no strided loops (evaluate_contiguous).
  auto ad = a.data();
  auto out = result<T>(ad->extents);
  const index_t n = ad->size();
  using V = tensor_view<const T, dyn_shape<1>>;
  evaluate_contiguous(out->value.data(), n, make_map<F>(V(ad->value.data(), dyn_shape<1>(n))));
  record(out, F::name, {ad}, [ad, o = out.get()] {
    if (!ad->requires_grad) return;
    using G = grad_t<T>;
    const index_t m = ad->size();
    const dyn_shape<1> s1(m);
    const V x(ad->value.data(), s1), y(o->value.data(), s1);
    const tensor_view<const G, dyn_shape<1>> g(o->grad_data(), s1);
    accumulate_grad_flat(*ad, vjp_unary<F>::grad(x, y, g));
  });
  return var<T, S>(out);
}

template <class F, class T, class SA, class SB>
auto ad_binary(const var<T, SA>& a, const var<T, SB>& b) {
  using SO = broadcast_shape_t<SA, SB>;
  constexpr std::size_t Ra = SA::rank, Rb = SB::rank, Ro = SO::rank;
  auto ad = a.data();
  auto bd = b.data();
  SO so = broadcast_shapes(a.shape(), b.shape());
  auto out = result<T>(extents_of(tensor_view<const T, SO>(nullptr, so)));
  value_view<Ro>(out) = make_map<F>(value_view<Ra>(ad), value_view<Rb>(bd));
  record(out, F::name, {ad, bd}, [ad, bd, o = out.get()] {
    auto xa = value_view<Ra>(ad);
    auto xb = value_view<Rb>(bd);
    tensor_view<const T, dyn_shape<Ro>> y(o->value.data(), dyn_shape_of<Ro>(o->extents));
    tensor_view<const grad_t<T>, dyn_shape<Ro>> g(o->grad_data(), y.shape());
    if (ad->requires_grad) accumulate_grad(ad, vjp_binary<F>::grad_a(xa, xb, y, g));
    if (bd->requires_grad) accumulate_grad(bd, vjp_binary<F>::grad_b(xa, xb, y, g));
  });
  return var<T, SO>(out);
}

/// A rank-0 constant var holding v.
template <class T>
var<T, shape<>> scalar_var(double v) {
  auto d = result<T>({});
  d->value.data()[0] = to_storage<T>(static_cast<compute_t<T>>(v));
  return var<T, shape<>>(d);
}

template <class X>
concept arithmetic = std::is_arithmetic_v<std::remove_cvref_t<X>>;
}  // namespace detail

// ---- the var-level API ------------------------------------------------------------------------

#define TFM_DETAIL_VAR_UNARY(NAME, F)  \
  template <class T, class S>          \
  var<T, S> NAME(const var<T, S>& a) { \
    return detail::ad_unary<F>(a);     \
  }
TFM_DETAIL_VAR_UNARY(operator-, op::neg)
TFM_DETAIL_VAR_UNARY(neg, op::neg)
TFM_DETAIL_VAR_UNARY(exp, op::exp)
TFM_DETAIL_VAR_UNARY(log, op::log)
TFM_DETAIL_VAR_UNARY(sqrt, op::sqrt)
TFM_DETAIL_VAR_UNARY(rsqrt, op::rsqrt)
TFM_DETAIL_VAR_UNARY(tanh, op::tanh)
TFM_DETAIL_VAR_UNARY(sigmoid, op::sigmoid)
TFM_DETAIL_VAR_UNARY(silu, op::silu)
TFM_DETAIL_VAR_UNARY(gelu, op::gelu_tanh)
TFM_DETAIL_VAR_UNARY(gelu_tanh, op::gelu_tanh)
TFM_DETAIL_VAR_UNARY(gelu_erf, op::gelu_erf)
TFM_DETAIL_VAR_UNARY(relu, op::relu)
TFM_DETAIL_VAR_UNARY(abs, op::abs)
TFM_DETAIL_VAR_UNARY(square, op::square)
TFM_DETAIL_VAR_UNARY(erf, op::erf)
TFM_DETAIL_VAR_UNARY(normal_cdf, op::normal_cdf)
#undef TFM_DETAIL_VAR_UNARY

#define TFM_DETAIL_VAR_BINARY(NAME, F)                                             \
  template <class T, class SA, class SB>                                           \
  auto NAME(const var<T, SA>& a, const var<T, SB>& b) {                            \
    return detail::ad_binary<F>(a, b);                                             \
  }                                                                                \
  template <class T, class S, detail::arithmetic U>                                \
  auto NAME(const var<T, S>& a, U b) {                                             \
    return detail::ad_binary<F>(a, detail::scalar_var<T>(static_cast<double>(b))); \
  }                                                                                \
  template <class T, class S, detail::arithmetic U>                                \
  auto NAME(U a, const var<T, S>& b) {                                             \
    return detail::ad_binary<F>(detail::scalar_var<T>(static_cast<double>(a)), b); \
  }
TFM_DETAIL_VAR_BINARY(operator+, op::add)
TFM_DETAIL_VAR_BINARY(operator-, op::sub)
TFM_DETAIL_VAR_BINARY(operator*, op::mul)
TFM_DETAIL_VAR_BINARY(operator/, op::div)
TFM_DETAIL_VAR_BINARY(pow, op::pow)
TFM_DETAIL_VAR_BINARY(minimum, op::minimum)
TFM_DETAIL_VAR_BINARY(maximum, op::maximum)
#undef TFM_DETAIL_VAR_BINARY

/// where(c, a, b) with a constant condition tensor c (nonzero selects a).
template <class C, class T, class SA, class SB>
requires dense_type<C>
auto where(const C& c, const var<T, SA>& a, const var<T, SB>& b) {
  auto cv = c.view();
  using CV = decltype(cv);
  using SC = typename CV::shape_type;
  using SO = broadcast_shape_t<broadcast_shape_t<SC, SA>, SB>;
  constexpr std::size_t Ra = SA::rank, Rb = SB::rank, Ro = SO::rank, Rc = SC::rank;
  auto ad = a.data();
  auto bd = b.data();
  SO so = broadcast_shapes(broadcast_shapes(cv.shape(), a.shape()), b.shape());
  auto out = detail::result<T>(detail::extents_of(tensor_view<const T, SO>(nullptr, so)));
  tensor<typename CV::value_type, dyn_shape<Rc>> cc = cv;  // saved condition
  detail::value_view<Ro>(out) = where(cc, detail::value_view<Ra>(ad), detail::value_view<Rb>(bd));
  detail::record(out, "where", {ad, bd}, [ad, bd, cc = std::move(cc), o = out.get()] {
    tensor_view<const grad_t<T>, dyn_shape<Ro>> g(o->grad_data(),
                                                  detail::dyn_shape_of<Ro>(o->extents));
    if (ad->requires_grad) detail::accumulate_grad(ad, where(cc, g, 0.0));
    if (bd->requires_grad) detail::accumulate_grad(bd, where(cc, 0.0, g));
  });
  return var<T, SO>(out);
}

TFM_END_NAMESPACE
