// typeformer/expr/node.hpp
//
// WHAT THIS REPRESENTS
//   The expression tree. There is one generic node, map<F, Args...>, for every elementwise
//   computation (F is an empty functor from expr/functors.hpp); leaves are const tensor views,
//   scalars, and tensors moved out of temporaries (owned_leaf keeps them alive, so an expression
//   built from a function's return value never dangles). Nodes only describe; evaluation is done
//   by a backend (backend/*/elementwise.hpp) through the cursor protocol of expr/evaluate.hpp.
//
//   Node contract: value_type (the type the node computes in), shape_type and shape(),
//   backend_type (void for scalars), depth (0 for leaves).
//
//   Operands are held by value: views and scalars are small, sub-expressions are nodes.
//   Broadcasting follows NumPy; a static mismatch is a compile error at the line that builds the
//   node, a dynamic mismatch throws tfm::shape_error when the node is built.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/tuple.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/functors.hpp"

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

namespace detail {
using scalar_shape = shape<>;
}

/// A scalar operand, broadcast to every element.
template <class T>
struct scalar_leaf {
  using is_tfm_expression = void;
  using value_type = T;
  using shape_type = detail::scalar_shape;
  using backend_type = void;
  static constexpr int depth = 0;
  T value;
  shape_type shape() const noexcept { return {}; }
};

/// A tensor moved out of a temporary; evaluated through its view.
template <class Tensor>
struct owned_leaf {
  using is_tfm_expression = void;
  using value_type = typename Tensor::value_type;
  using shape_type = typename Tensor::shape_type;
  using backend_type = typename Tensor::backend_type;
  static constexpr int depth = 0;
  Tensor tensor;
  const shape_type& shape() const noexcept { return tensor.shape(); }
  auto view() const noexcept { return tensor.view(); }
};

namespace detail {
template <class X>
struct is_scalar_leaf : std::false_type {};
template <class T>
struct is_scalar_leaf<scalar_leaf<T>> : std::true_type {};
template <class X>
struct is_owned_leaf : std::false_type {};
template <class T>
struct is_owned_leaf<owned_leaf<T>> : std::true_type {};

// The type a node or leaf computes in.
template <class N>
struct node_compute {
  using type = compute_t<typename N::value_type>;
};

template <class... B>
struct first_backend {
  using type = void;
};
template <class B0, class... B>
struct first_backend<B0, B...> {
  using type = std::conditional_t<std::is_void_v<B0>, typename first_backend<B...>::type, B0>;
};

template <class N>
constexpr int node_depth() {
  if constexpr (requires { N::depth; })
    return N::depth;
  else
    return 0;  // views
}
template <class... N>
constexpr int max_depth() {
  int d = 0;
  ((d = node_depth<N>() > d ? node_depth<N>() : d), ...);
  return d;
}

template <class S0, class... S>
struct broadcast_all {
  using type = S0;
};
template <class S0, class S1, class... S>
struct broadcast_all<S0, S1, S...> : broadcast_all<broadcast_shape_t<S0, S1>, S...> {};
}  // namespace detail

/// The elementwise node: F applied to the broadcast of Args.
template <class F, class... Args>
struct map {
  using is_tfm_expression = void;
  using functor_type = F;
  using value_type = std::common_type_t<typename detail::node_compute<Args>::type...>;
  using shape_type = typename detail::broadcast_all<typename Args::shape_type...>::type;
  using backend_type = typename detail::first_backend<typename Args::backend_type...>::type;
  static constexpr int depth = 1 + detail::max_depth<Args...>();

  static_assert(depth <= TFM_MAX_FUSION_DEPTH,
                "tfm: this elementwise expression is deeper than TFM_MAX_FUSION_DEPTH nodes; call "
                ".eval() on a sub-expression to materialise it (or raise TFM_MAX_FUSION_DEPTH)");
  static_assert(F::integer_ok || !std::is_integral_v<value_type>,
                "tfm: this elementwise function needs floating-point operands (convert integer "
                "tensors to float first)");

  std::tuple<Args...> args;
  shape_type shape_;

  explicit map(Args... a) : args(std::move(a)...), shape_(compute_shape(args)) {}
  const shape_type& shape() const noexcept { return shape_; }

  /// Evaluates the expression into a new tensor (needs a backend header, e.g. backend/cpu).
  auto eval() const { return eval_map_node(*this); }

 private:
  static shape_type compute_shape(const std::tuple<Args...>& t) {
    return detail::tuple_apply([](const auto&... a) { return fold_shapes(a.shape()...); }, t);
  }
  template <class S0>
  static auto fold_shapes(const S0& s) {
    return s;
  }
  template <class S0, class S1, class... S>
  static auto fold_shapes(const S0& a, const S1& b, const S&... rest) {
    return fold_shapes(broadcast_shapes(a, b), rest...);
  }
};

// ---- turning operands into nodes ------------------------------------------------------------

/// Operands of elementwise functions: tensors, views, nodes and arithmetic scalars.
template <class X>
concept operand =
    dense_type<X> || expression_node<X> || std::is_arithmetic_v<std::remove_cvref_t<X>>;
/// Operands that are not plain scalars.
template <class X>
concept tensor_operand = dense_type<X> || expression_node<X>;

namespace detail {

/// Node for a tensor-like operand: lvalue tensors and views become const views, rvalue tensors
/// are moved into an owned_leaf, nodes are copied.
template <class X>
auto to_node(X&& x) {
  using D = std::remove_cvref_t<X>;
  if constexpr (tensor_type<X> && !std::is_lvalue_reference_v<X>) {
    return owned_leaf<D>{std::move(x)};
  } else if constexpr (tensor_type<X>) {
    return tensor_view<const typename D::value_type, typename D::shape_type,
                       typename D::backend_type>(x.view());
  } else if constexpr (view_type<X>) {
    return tensor_view<const typename D::value_type, typename D::shape_type,
                       typename D::backend_type>(x);
  } else {
    return D(std::forward<X>(x));
  }
}

template <class X>
using node_t = decltype(to_node(std::declval<X>()));

/// Backend a node evaluates with on its own: its leaves' backend, tfm::cpu if it has none.
template <class N>
using node_backend_or_cpu =
    std::conditional_t<std::is_void_v<typename N::backend_type>, cpu, typename N::backend_type>;

/// Compute type an operand contributes (scalars adopt the other operands' type).
template <class X>
struct operand_compute {
  using type = typename node_compute<node_t<X>>::type;
};

template <class C, class X>
auto to_node_as(X&& x) {
  if constexpr (std::is_arithmetic_v<std::remove_cvref_t<X>>)
    return scalar_leaf<C>{static_cast<C>(x)};
  else
    return to_node(std::forward<X>(x));
}

template <class X, bool Scalar = std::is_arithmetic_v<std::remove_cvref_t<X>>>
struct operand_compute_or_void {
  using type = void;
};
template <class X>
struct operand_compute_or_void<X, false> : operand_compute<X> {};

template <class A, class B>
struct join_compute {
  using type = std::common_type_t<A, B>;
};
template <class A>
struct join_compute<A, void> {
  using type = A;
};
template <class B>
struct join_compute<void, B> {
  using type = B;
};
template <>
struct join_compute<void, void> {
  using type = void;
};

template <class... X>
struct common_compute;
template <>
struct common_compute<> {
  using type = void;
};
template <class X0, class... X>
struct common_compute<X0, X...> : join_compute<typename operand_compute_or_void<X0>::type,
                                               typename common_compute<X...>::type> {};

template <class T>
struct node_for_view {
  using type = T;
};
}  // namespace detail

/// Builds map<F, ...> from operands; scalar operands take the compute type of the others.
template <class F, class... X>
requires((operand<X> && ...) && (tensor_operand<X> || ...)) auto make_map(X&&... x) {
  using C = typename detail::common_compute<X...>::type;
  return map<F, decltype(detail::to_node_as<C>(std::forward<X>(x)))...>(
      detail::to_node_as<C>(std::forward<X>(x))...);
}

// ---- the operators and functions users call -------------------------------------------------

#define TFM_DETAIL_BINARY_OPERATOR(SYM, F)                                           \
  template <operand A, operand B>                                                    \
  requires(tensor_operand<A> || tensor_operand<B>) auto operator SYM(A&& a, B&& b) { \
    return make_map<F>(std::forward<A>(a), std::forward<B>(b));                      \
  }
TFM_DETAIL_BINARY_OPERATOR(+, op::add)
TFM_DETAIL_BINARY_OPERATOR(-, op::sub)
TFM_DETAIL_BINARY_OPERATOR(*, op::mul)
TFM_DETAIL_BINARY_OPERATOR(/, op::div)
TFM_DETAIL_BINARY_OPERATOR(<, op::less)
TFM_DETAIL_BINARY_OPERATOR(<=, op::less_equal)
TFM_DETAIL_BINARY_OPERATOR(>, op::greater)
TFM_DETAIL_BINARY_OPERATOR(>=, op::greater_equal)
#undef TFM_DETAIL_BINARY_OPERATOR

template <tensor_operand A>
auto operator-(A&& a) {
  return make_map<op::neg>(std::forward<A>(a));
}

#define TFM_DETAIL_BINARY_FUNCTION(NAME, F)                                  \
  template <operand A, operand B>                                            \
  requires(tensor_operand<A> || tensor_operand<B>) auto NAME(A&& a, B&& b) { \
    return make_map<F>(std::forward<A>(a), std::forward<B>(b));              \
  }
TFM_DETAIL_BINARY_FUNCTION(minimum, op::minimum)
TFM_DETAIL_BINARY_FUNCTION(maximum, op::maximum)
TFM_DETAIL_BINARY_FUNCTION(pow, op::pow)
TFM_DETAIL_BINARY_FUNCTION(eq, op::equal)
TFM_DETAIL_BINARY_FUNCTION(ne, op::not_equal)
TFM_DETAIL_BINARY_FUNCTION(lt, op::less)
TFM_DETAIL_BINARY_FUNCTION(le, op::less_equal)
TFM_DETAIL_BINARY_FUNCTION(gt, op::greater)
TFM_DETAIL_BINARY_FUNCTION(ge, op::greater_equal)
#undef TFM_DETAIL_BINARY_FUNCTION

#define TFM_DETAIL_UNARY_FUNCTION(NAME, F)  \
  template <tensor_operand A>               \
  auto NAME(A&& a) {                        \
    return make_map<F>(std::forward<A>(a)); \
  }
TFM_DETAIL_UNARY_FUNCTION(neg, op::neg)
TFM_DETAIL_UNARY_FUNCTION(abs, op::abs)
TFM_DETAIL_UNARY_FUNCTION(exp, op::exp)
TFM_DETAIL_UNARY_FUNCTION(log, op::log)
TFM_DETAIL_UNARY_FUNCTION(sqrt, op::sqrt)
TFM_DETAIL_UNARY_FUNCTION(rsqrt, op::rsqrt)
TFM_DETAIL_UNARY_FUNCTION(tanh, op::tanh)
TFM_DETAIL_UNARY_FUNCTION(relu, op::relu)
TFM_DETAIL_UNARY_FUNCTION(sigmoid, op::sigmoid)
TFM_DETAIL_UNARY_FUNCTION(silu, op::silu)
TFM_DETAIL_UNARY_FUNCTION(gelu, op::gelu_tanh)
TFM_DETAIL_UNARY_FUNCTION(gelu_tanh, op::gelu_tanh)
TFM_DETAIL_UNARY_FUNCTION(gelu_erf, op::gelu_erf)
TFM_DETAIL_UNARY_FUNCTION(square, op::square)
TFM_DETAIL_UNARY_FUNCTION(erf, op::erf)
TFM_DETAIL_UNARY_FUNCTION(normal_cdf, op::normal_cdf)
#undef TFM_DETAIL_UNARY_FUNCTION

/// Elementwise c ? a : b (c != 0 selects a).
template <operand C, operand A, operand B>
requires(tensor_operand<C> || tensor_operand<A> || tensor_operand<B>) auto where(C&& c, A&& a,
                                                                                 B&& b) {
  return make_map<op::where>(std::forward<C>(c), std::forward<A>(a), std::forward<B>(b));
}

/// Applies a user functor elementwise (it must accept scalars, and SIMD batches to vectorise).
template <class F, tensor_operand... X>
auto apply(F, X&&... x) {
  return make_map<F>(std::forward<X>(x)...);
}

TFM_END_NAMESPACE
