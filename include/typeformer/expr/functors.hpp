// typeformer/expr/functors.hpp
//
// Elementwise functors: empty types whose call operator works on scalars (float, double, int)
// and on SIMD batches alike. Scalar math comes from <cmath>; batch math is found by
// argument-dependent lookup in the batch type's namespace (xsimd), so this header does not
// include any SIMD library. A functor declares `static constexpr bool integer_ok` when it is
// meaningful on integers, and `name` for messages.
//
// Formulas and sources:
//   gelu_tanh  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   Hendrycks & Gimpel,
//   arXiv:1606.08415 gelu_erf   0.5 x (1 + erf(x / sqrt(2)))                      same paper, exact
//   form normal_cdf Phi(x) = 0.5 (1 + erf(x / sqrt(2))) silu       x * sigmoid(x) Elfwing et al.,
//   arXiv:1702.03118 sigmoid    1 / (1 + exp(-x)); exp overflow gives 1/inf = 0, never NaN
#pragma once

#include "typeformer/config/config.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace detail::math {
// Each wrapper brings the scalar overload into scope with a using-declaration; for a SIMD batch
// argument the batch library's overload is found by argument-dependent lookup instead. The
// wrappers have their own names so that lookup inside op:: never finds the functor types.
namespace scalar {
template <class T>
requires std::is_arithmetic_v<T>
constexpr T select(bool c, T a, T b) noexcept { return c ? a : b; }
template <class T>
requires std::is_arithmetic_v<T>
constexpr T min(T a, T b) noexcept { return b < a ? b : a; }
template <class T>
requires std::is_arithmetic_v<T>
constexpr T max(T a, T b) noexcept { return a < b ? b : a; }
template <class T>
requires std::is_arithmetic_v<T> T abs(T a)
noexcept {
  if constexpr (std::is_floating_point_v<T>)
    return std::fabs(a);
  else
    return a < 0 ? T(-a) : a;
}
}  // namespace scalar

#define TFM_DETAIL_WRAP1(NAME, FROM) \
  template <class X>                 \
  X m_##NAME(X x) noexcept {         \
    using FROM::NAME;                \
    return NAME(x);                  \
  }
TFM_DETAIL_WRAP1(log, std)
TFM_DETAIL_WRAP1(sqrt, std)
TFM_DETAIL_WRAP1(tanh, std)
TFM_DETAIL_WRAP1(erf, std)
TFM_DETAIL_WRAP1(abs, scalar)
#undef TFM_DETAIL_WRAP1
/// Defined by the cpu backend (backend/cpu/simd.hpp), the only code that makes batches: its own
/// float exp where it has one (faster than xsimd's on AVX-512 and AVX2), xsimd::exp otherwise.
template <class X>
X batch_exp(X x) noexcept;
template <class X>
X m_exp(X x) noexcept {
  if constexpr (requires { typename X::arch_type; }) {
    return batch_exp(x);
  } else {
    using std::exp;
    return exp(x);
  }
}
template <class M, class X>
X m_select(M c, X a, X b) noexcept {
  using scalar::select;
  return select(c, a, b);
}
/// NaN test for scalars and batches (false for integers). Not `a != a`: xsimd 8.1 compiles a
/// batch `!=` to an ordered compare, which is false when an operand is NaN.
template <class X>
auto m_isnan(X a) noexcept {
  if constexpr (std::is_floating_point_v<X>)
    return std::isnan(a);
  else if constexpr (std::is_arithmetic_v<X>)
    return false;
  else
    return isnan(a);  // the batch library's, by argument-dependent lookup
}
/// pow with the C99/IEEE special cases on every path. xsimd 8.1's batch pow gets several
/// wrong (pow(0, -1) = 0, pow(0, 0) = 0, pow(1, inf) = NaN, pow(NaN, 0) = NaN, the sign of
/// pow(-0, odd)); they are patched here so the SIMD body agrees with std::pow.
template <class X>
X m_pow(X a, X b) noexcept {
  using std::pow;
  if constexpr (std::is_arithmetic_v<X>) {
    return pow(a, b);
  } else {
    using std::floor;
    using V = typename X::value_type;
    const X one(V(1)), zero(V(0)), inf(std::numeric_limits<V>::infinity());
    X r = pow(a, b);
    const X half = b * X(V(0.5));
    const auto odd = (floor(b) == b) & (floor(half) != half);
    const auto negative_zero = (a == zero) & ((one / a) < zero);
    const auto az = a == zero;
    r = select(az & (b < zero), select(odd & negative_zero, -inf, inf), r);
    r = select(az & (b > zero), select(odd & negative_zero, -zero, zero), r);
    r = select((b == zero) | (a == one) | ((a == -one) & (abs(b) == inf)), one, r);
    return r;
  }
}
/// Either of two conditions: || for scalar bools (Clang warns on | between bool calls), | for
/// SIMD masks, which have no ||.
template <class M>
auto m_or(M a, M b) noexcept {
  if constexpr (std::is_same_v<M, bool>)
    return a || b;
  else
    return a | b;
}
/// min/max that propagate NaN from either operand (as torch.minimum/maximum do), with the same
/// answer on the scalar and the SIMD paths (x86 MINPS/MAXPS would return the second operand).
template <class X>
X m_min(X a, X b) noexcept {
  return m_select(m_or(m_isnan(a), m_isnan(b)), a + b, m_select(b < a, b, a));
}
template <class X>
X m_max(X a, X b) noexcept {
  return m_select(m_or(m_isnan(a), m_isnan(b)), a + b, m_select(a < b, b, a));
}
}  // namespace detail::math

namespace op {

#define TFM_DETAIL_MATH using namespace ::tfm::detail::math

// ---- binary ----
struct add {
  static constexpr const char* name = "add";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a, X b) const noexcept {
    return a + b;
  }
};
struct sub {
  static constexpr const char* name = "sub";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a, X b) const noexcept {
    return a - b;
  }
};
struct mul {
  static constexpr const char* name = "mul";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a, X b) const noexcept {
    return a * b;
  }
};
struct div {
  static constexpr const char* name = "div";
  static constexpr bool integer_ok = false;  // integer division by zero is undefined behaviour
  template <class X>
  X operator()(X a, X b) const noexcept {
    return a / b;
  }
};
struct minimum {
  static constexpr const char* name = "min";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a, X b) const noexcept {
    TFM_DETAIL_MATH;
    return m_min(a, b);
  }
};
struct maximum {
  static constexpr const char* name = "max";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a, X b) const noexcept {
    TFM_DETAIL_MATH;
    return m_max(a, b);
  }
};
struct pow {
  static constexpr const char* name = "pow";
  static constexpr bool integer_ok = false;
  template <class X>
  X operator()(X a, X b) const noexcept {
    TFM_DETAIL_MATH;
    return m_pow(a, b);
  }
};

// Comparisons give 1 where true and 0 where false, in the operands' type, so they fuse into
// arithmetic and into where().
#define TFM_DETAIL_COMPARE(NAME, OP)           \
  struct NAME {                                \
    static constexpr const char* name = #NAME; \
    static constexpr bool integer_ok = true;   \
    template <class X>                         \
    X operator()(X a, X b) const noexcept {    \
      TFM_DETAIL_MATH;                         \
      return m_select(a OP b, X(1), X(0));     \
    }                                          \
  };
TFM_DETAIL_COMPARE(less, <)
TFM_DETAIL_COMPARE(less_equal, <=)
TFM_DETAIL_COMPARE(greater, >)
TFM_DETAIL_COMPARE(greater_equal, >=)
TFM_DETAIL_COMPARE(equal, ==)
#undef TFM_DETAIL_COMPARE
/// a != b as the negation of ==, so NaN compares unequal on the SIMD path too.
struct not_equal {
  static constexpr const char* name = "not_equal";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a, X b) const noexcept {
    TFM_DETAIL_MATH;
    return m_select(a == b, X(0), X(1));
  }
};

/// where(c, a, b): a where c != 0, else b.
struct where {
  static constexpr const char* name = "where";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X c, X a, X b) const noexcept {
    TFM_DETAIL_MATH;
    return m_select(c == X(0), b, a);  // not `c != 0`: a NaN condition counts as true
  }
};

// ---- unary ----
struct neg {
  static constexpr const char* name = "neg";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a) const noexcept {
    return -a;
  }
};
struct abs {
  static constexpr const char* name = "abs";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a) const noexcept {
    TFM_DETAIL_MATH;
    return m_abs(a);
  }
};
struct relu {
  static constexpr const char* name = "relu";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a) const noexcept {
    TFM_DETAIL_MATH;
    return m_select(m_isnan(a) | (a > X(0)), a, X(0));  // relu(NaN) = NaN, relu(-0) = +0
  }
};
#define TFM_DETAIL_UNARY_FLOAT(NAME, EXPR)     \
  struct NAME {                                \
    static constexpr const char* name = #NAME; \
    static constexpr bool integer_ok = false;  \
    template <class X>                         \
    X operator()(X x) const noexcept {         \
      TFM_DETAIL_MATH;                         \
      return EXPR;                             \
    }                                          \
  };
TFM_DETAIL_UNARY_FLOAT(exp, m_exp(x))
TFM_DETAIL_UNARY_FLOAT(log, m_log(x))
TFM_DETAIL_UNARY_FLOAT(sqrt, m_sqrt(x))
TFM_DETAIL_UNARY_FLOAT(rsqrt, X(1) / m_sqrt(x))
TFM_DETAIL_UNARY_FLOAT(tanh, m_tanh(x))
TFM_DETAIL_UNARY_FLOAT(sigmoid, X(1) / (X(1) + m_exp(-x)))
TFM_DETAIL_UNARY_FLOAT(silu, x / (X(1) + m_exp(-x)))
// 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + exp(-2u)): one exp and one division instead
// of tanh's two exps, same value (2 sqrt(2/pi) = 1.5957691216057308).
TFM_DETAIL_UNARY_FLOAT(gelu_tanh,
                       x / (X(1) + m_exp(X(-1.5957691216057308) * (x + X(0.044715) * x * x * x))))
TFM_DETAIL_UNARY_FLOAT(gelu_erf, X(0.5) * x * (X(1) + m_erf(x * X(0.7071067811865476))))
TFM_DETAIL_UNARY_FLOAT(square, x* x)
TFM_DETAIL_UNARY_FLOAT(erf, m_erf(x))
TFM_DETAIL_UNARY_FLOAT(normal_cdf, X(0.5) * (X(1) + m_erf(x * X(0.7071067811865476))))
#undef TFM_DETAIL_UNARY_FLOAT

/// Identity: the node a plain copy (or a dtype conversion) evaluates.
struct identity {
  static constexpr const char* name = "copy";
  static constexpr bool integer_ok = true;
  template <class X>
  X operator()(X a) const noexcept {
    return a;
  }
};

#undef TFM_DETAIL_MATH
}  // namespace op

TFM_END_NAMESPACE
