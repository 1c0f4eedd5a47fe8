// tests/unit/core/op_table.hpp
//
// The elementwise operations under test, one struct each: how to build the tfm expression, the
// independent scalar oracle in double (written here from the formulas, with <cmath>), the input
// domain of each operand, whether the op is defined on integers, and whether it is "exact" (a
// single correctly rounded IEEE operation or a selection, so the result must equal the oracle
// rounded to the storage type bit for bit).
//
// Why exact ops can be checked bitwise against a double oracle: the operands are stored values,
// the double result of + - * / sqrt is correctly rounded (or exact), and rounding it again to
// float (or float -> bf16/f16) is innocuous because 53 >= 2*24+2 and 24 >= 2*11+2 (double rounding
// of + - * / sqrt is harmless when the wider precision is at least 2p+2; Figueroa, "When is double
// rounding innocuous?", SIGNUM 1995).
#pragma once

#include <array>
#include <cmath>

#include "typeformer/expr/node.hpp"

namespace core_test {

/// Where the random values of one operand come from.
struct arg_domain {
  double lo, hi;
  bool discrete = false;  // integers in [lo, hi] (so that ties and equality occur)
};

inline constexpr double sqrt_2_over_pi = 0.79788456080286535587989211986876;
inline constexpr double inv_sqrt_2 = 0.70710678118654752440084436210485;

#define CORE_TEST_OP_HEAD(NAME, ARITY, INTEGER, EXACT) \
  static constexpr const char* name = NAME;            \
  static constexpr int arity = ARITY;                  \
  static constexpr bool integer = INTEGER;             \
  static constexpr bool exact = EXACT;                 \
  static constexpr bool cancels = false;

// ---- binary arithmetic ----
struct op_add {
  CORE_TEST_OP_HEAD("add", 2, true, true)
  static constexpr std::array<arg_domain, 2> dom{{{-10, 10}, {-10, 10}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return a + b;
  }
  static double ref(double a, double b) { return a + b; }
};
struct op_sub {
  CORE_TEST_OP_HEAD("sub", 2, true, true)
  static constexpr std::array<arg_domain, 2> dom{{{-10, 10}, {-10, 10}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return a - b;
  }
  static double ref(double a, double b) { return a - b; }
};
struct op_mul {
  CORE_TEST_OP_HEAD("mul", 2, true, true)
  static constexpr std::array<arg_domain, 2> dom{{{-10, 10}, {-10, 10}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return a * b;
  }
  static double ref(double a, double b) { return a * b; }
};
struct op_div {
  CORE_TEST_OP_HEAD("div", 2, false, true)
  static constexpr std::array<arg_domain, 2> dom{{{-10, 10}, {0.25, 8}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return a / b;
  }
  static double ref(double a, double b) { return a / b; }
};
struct op_minimum {
  CORE_TEST_OP_HEAD("minimum", 2, true, true)
  static constexpr std::array<arg_domain, 2> dom{{{-10, 10}, {-10, 10}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return tfm::minimum(a, b);
  }
  // NaN propagates (NumPy np.minimum, torch.minimum).
  static double ref(double a, double b) { return a != a ? a : b != b ? b : b < a ? b : a; }
};
struct op_maximum {
  CORE_TEST_OP_HEAD("maximum", 2, true, true)
  static constexpr std::array<arg_domain, 2> dom{{{-10, 10}, {-10, 10}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return tfm::maximum(a, b);
  }
  static double ref(double a, double b) { return a != a ? a : b != b ? b : a < b ? b : a; }
};
struct op_pow {
  CORE_TEST_OP_HEAD("pow", 2, false, false)
  static constexpr std::array<arg_domain, 2> dom{{{0.1, 10}, {-3, 3}}};
  template <class A, class B>
  static auto build(A&& a, B&& b) {
    return tfm::pow(a, b);
  }
  static double ref(double a, double b) { return std::pow(a, b); }
};

// ---- comparisons: 1 where true, 0 where false, in the operands' type ----
#define CORE_TEST_CMP(STRUCT, NAME, EXPR, OPER)                                     \
  struct STRUCT {                                                                   \
    CORE_TEST_OP_HEAD(NAME, 2, true, true)                                          \
    static constexpr std::array<arg_domain, 2> dom{{{-2, 2, true}, {-2, 2, true}}}; \
    template <class A, class B>                                                     \
    static auto build(A&& a, B&& b) {                                               \
      return EXPR;                                                                  \
    }                                                                               \
    static double ref(double a, double b) { return (a OPER b) ? 1.0 : 0.0; }        \
  };
CORE_TEST_CMP(op_less, "less", a < b, <)
CORE_TEST_CMP(op_less_equal, "less_equal", a <= b, <=)
CORE_TEST_CMP(op_greater, "greater", a > b, >)
CORE_TEST_CMP(op_greater_equal, "greater_equal", a >= b, >=)
CORE_TEST_CMP(op_eq, "eq", tfm::eq(a, b), ==)
CORE_TEST_CMP(op_ne, "ne", tfm::ne(a, b), !=)
#undef CORE_TEST_CMP

// ---- where(c, a, b): a where c != 0 ----
struct op_where {
  CORE_TEST_OP_HEAD("where", 3, true, true)
  static constexpr std::array<arg_domain, 3> dom{{{-1, 1, true}, {-10, 10}, {-10, 10}}};
  template <class C, class A, class B>
  static auto build(C&& c, A&& a, B&& b) {
    return tfm::where(c, a, b);
  }
  static double ref(double c, double a, double b) { return c != 0 ? a : b; }
};

// ---- unary ----
#define CORE_TEST_UNARY(STRUCT, NAME, INTEGER, EXACT, LO, HI, BUILD, REF) \
  struct STRUCT {                                                         \
    CORE_TEST_OP_HEAD(NAME, 1, INTEGER, EXACT)                            \
    static constexpr std::array<arg_domain, 1> dom{{{LO, HI}}};           \
    template <class A>                                                    \
    static auto build(A&& a) {                                            \
      return BUILD;                                                       \
    }                                                                     \
    static double ref(double x) { return REF; }                           \
  };
CORE_TEST_UNARY(op_neg, "neg", true, true, -10, 10, -a, -x)
CORE_TEST_UNARY(op_neg_fn, "neg()", true, true, -10, 10, tfm::neg(a), -x)
CORE_TEST_UNARY(op_abs, "abs", true, true, -10, 10, tfm::abs(a), std::fabs(x))
CORE_TEST_UNARY(op_relu, "relu", true, true, -10, 10, tfm::relu(a), x != x ? x : x > 0 ? x : 0.0)
CORE_TEST_UNARY(op_square, "square", false, true, -10, 10, tfm::square(a), x* x)
CORE_TEST_UNARY(op_sqrt, "sqrt", false, true, 0, 100, tfm::sqrt(a), std::sqrt(x))
CORE_TEST_UNARY(op_exp, "exp", false, false, -10, 10, tfm::exp(a), std::exp(x))
CORE_TEST_UNARY(op_log, "log", false, false, 1e-3, 100, tfm::log(a), std::log(x))
CORE_TEST_UNARY(op_rsqrt, "rsqrt", false, false, 1e-3, 100, tfm::rsqrt(a), 1.0 / std::sqrt(x))
CORE_TEST_UNARY(op_tanh, "tanh", false, false, -10, 10, tfm::tanh(a), std::tanh(x))
CORE_TEST_UNARY(op_sigmoid, "sigmoid", false, false, -20, 20, tfm::sigmoid(a),
                1.0 / (1.0 + std::exp(-x)))
CORE_TEST_UNARY(op_silu, "silu", false, false, -20, 20, tfm::silu(a), x / (1.0 + std::exp(-x)))
// gelu (tanh form) and gelu_erf: Hendrycks & Gimpel, arXiv:1606.08415.
// 1 + tanh(u) and 1 + erf(u) cancel for u << 0: computed in float, the result keeps an absolute
// error of about eps_float * |x| (gelu_erf(-6) is -0 instead of -1.8e-8 in float, also in
// PyTorch's formula), so these are judged against eps * max|x| rather than eps * max|result|.
CORE_TEST_UNARY(op_gelu_base, "gelu", false, false, -8, 8, tfm::gelu(a),
                0.5 * x * (1.0 + std::tanh(sqrt_2_over_pi * (x + 0.044715 * x * x * x))))
CORE_TEST_UNARY(op_gelu_tanh_base, "gelu_tanh", false, false, -8, 8, tfm::gelu_tanh(a),
                0.5 * x * (1.0 + std::tanh(sqrt_2_over_pi * (x + 0.044715 * x * x * x))))
CORE_TEST_UNARY(op_gelu_erf_base, "gelu_erf", false, false, -8, 8, tfm::gelu_erf(a),
                0.5 * x * (1.0 + std::erf(x * inv_sqrt_2)))
struct op_gelu : op_gelu_base {
  static constexpr bool cancels = true;
};
struct op_gelu_tanh : op_gelu_tanh_base {
  static constexpr bool cancels = true;
};
struct op_gelu_erf : op_gelu_erf_base {
  static constexpr bool cancels = true;
};
#undef CORE_TEST_UNARY
#undef CORE_TEST_OP_HEAD

}  // namespace core_test
