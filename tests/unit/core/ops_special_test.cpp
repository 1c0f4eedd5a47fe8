// Special values through the elementwise ops: overflow to +-Inf, NaN inputs, log(0), signed
// zeros. Every special value is placed at every lane position of a SIMD register and in the
// scalar tail, and the cpu result must agree with the reference backend and with the double
// oracle: a NaN where the other has none fails, an Inf must have the same sign (TESTING.md).
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "elementwise_check.hpp"

namespace {

using core_test::index_t;
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

/// A vector of length 3 * simd width + 5 holding `values` cyclically (starting at every phase).
template <class T>
std::vector<T> spread(const std::vector<double>& values) {
  const std::size_t n = 3 * static_cast<std::size_t>(tfm::simd::width<float>) + 5;
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = tfm_test::from_double<T>(values[i % values.size()]);
  return v;
}

template <class Op, class T, std::size_t... I>
void check_special(const std::array<std::vector<double>, Op::arity>& vals,
                   std::index_sequence<I...>) {
  using cpu_t = tfm::tensor<T, tfm::shape<tfm::dyn>, tfm::cpu>;
  using ref_t = tfm::tensor<T, tfm::shape<tfm::dyn>, tfm::reference>;
  std::array<std::vector<T>, Op::arity> in{spread<T>(vals[I])...};
  const index_t n = static_cast<index_t>(in[0].size());
  std::array<cpu_t, Op::arity> x{tfm_test::make_tensor<cpu_t>(tfm::shape<tfm::dyn>(n), in[I])...};
  cpu_t got_cpu = Op::build(x[I]...);
  ref_t got_ref = Op::build(x[I]...);
  std::vector<T> want(in[0].size());
  for (std::size_t i = 0; i < want.size(); ++i)
    want[i] = tfm_test::from_double<T>(Op::ref(tfm_test::to_double(in[I][i])...));
  const auto vc = tfm_test::to_vector(got_cpu), vr = tfm_test::to_vector(got_ref);
  INFO("op=" << std::string(Op::name) << " dtype=" << std::string(tfm::dtype_name<T>()));
  TFM_CHECK_REPORT(tfm_test::compare(vc, want, core_test::nmse_limit));
  TFM_CHECK_REPORT(tfm_test::compare(vr, want, core_test::nmse_limit));
  TFM_CHECK_REPORT(tfm_test::compare(vc, vr, core_test::nmse_limit));
}

template <class Op, class T>
void special(std::array<std::vector<double>, Op::arity> vals) {
  check_special<Op, T>(vals, std::make_index_sequence<Op::arity>{});
}

template <class T>
void all_specials() {
  using namespace core_test;
  // Inputs are chosen so that both float and double overflow or underflow where intended.
  const double big = std::is_same_v<T, double> ? 710.0 : 89.0;  // exp(big) overflows
  special<op_exp, T>({{{big, -big * 1.2, 0.0, -0.0, inf, -inf, qnan, 1.0, -1.0}}});
  special<op_log, T>({{{0.0, -0.0, -1.0, inf, qnan, 1.0, 2.5, 1e-30}}});
  special<op_sqrt, T>({{{0.0, -0.0, -1.0, inf, qnan, 4.0}}});
  special<op_rsqrt, T>({{{0.0, inf, qnan, 4.0, 0.25}}});
  special<op_tanh, T>({{{inf, -inf, 50.0, -50.0, 0.0, qnan, 1e-10}}});
  special<op_sigmoid, T>({{{1000.0, -1000.0, 100.0, -100.0, inf, -inf, 0.0, qnan}}});
  special<op_silu, T>({{{1000.0, -1000.0, 100.0, -100.0, inf, 0.0, qnan}}});
  special<op_gelu_tanh, T>({{{1e4, -1e4, 100.0, -100.0, inf, 0.0, qnan}}});
  special<op_gelu_erf, T>({{{1e4, -1e4, 100.0, -100.0, inf, 0.0, qnan}}});
  special<op_neg, T>({{{0.0, -0.0, inf, -inf, qnan}}});
  special<op_abs, T>({{{-0.0, 0.0, -inf, inf, qnan, -3.0}}});
  special<op_square, T>({{{1e30, -1e30, 1e200, inf, -inf, qnan}}});
  special<op_div, T>(
      {{{1.0, -1.0, 0.0, inf, 1.0, qnan, 3.0}, {0.0, 0.0, 0.0, inf, -0.0, 1.0, inf}}});
  special<op_add, T>({{{inf, inf, -inf, 1e308, qnan, 1.0}, {-inf, inf, -inf, 1e308, 1.0, qnan}}});
  special<op_mul, T>({{{inf, 0.0, -inf, 1e200, qnan}, {2.0, inf, -2.0, 1e200, 1.0}}});
  special<op_pow, T>({{{0.0, 2.0, -2.0, inf, 1.0, 0.5}, {-1.0, 2000.0, 0.5, -1.0, inf, -2000.0}}});
  special<op_less, T>({{{qnan, 1.0, -0.0, inf}, {1.0, qnan, 0.0, inf}}});
  special<op_eq, T>({{{qnan, -0.0, inf, qnan}, {qnan, 0.0, inf, 1.0}}});
  special<op_ne, T>({{{qnan, -0.0, inf, qnan}, {qnan, 0.0, inf, 1.0}}});
  special<op_where, T>({{{qnan, 0.0, -0.0, 1.0}, {1.0, 2.0, 3.0, qnan}, {-1.0, qnan, -3.0, 4.0}}});
}

}  // namespace

TEST_CASE("special values (Inf, NaN, overflow, log(0), 1/0): cpu == reference == oracle") {
  SUBCASE("float") { all_specials<float>(); }
  SUBCASE("double") { all_specials<double>(); }
}

TEST_CASE("half storage: overflow to Inf keeps its sign; NaN stays NaN") {
  using namespace core_test;
  // f16 overflows at 65520: exp(12) = 162755 and -exp(12) must become +Inf and -Inf.
  special<op_exp, tfm::f16>({{{12.0, 11.0, 0.0, qnan, -20.0}}});
  special<op_mul, tfm::f16>({{{300.0, -300.0, qnan}, {300.0, 300.0, 1.0}}});
  special<op_exp, tfm::bf16>({{{89.0, -89.0, 0.0, qnan, inf}}});
  special<op_log, tfm::bf16>({{{0.0, -1.0, 1.0, qnan}}});
}

// BUG (expr/functors.hpp, op::minimum / op::maximum / op::relu): the scalar code computes
// min(a, b) as `b < a ? b : a`, max as `a < b ? b : a`, while the SIMD path calls xsimd::min/max
// (on x86 MINPS/MAXPS: the second operand when either is NaN or both are zero). So a NaN input
// gives NaN on the reference backend and in the cpu scalar tail but a number in the SIMD body
// (relu(NaN) = 0 in lanes 0..15, NaN in lane 16 of the same tensor), and relu(-0) is -0 vs +0.
TEST_CASE(
    "minimum / maximum / relu with NaN and signed zeros: cpu (SIMD body and tail) == "
    "reference") {
  using namespace core_test;
  SUBCASE("minimum f32") {
    special<op_minimum, float>({{{qnan, 1.0, qnan, -0.0, 0.0}, {1.0, qnan, qnan, 0.0, -0.0}}});
  }
  SUBCASE("maximum f32") {
    special<op_maximum, float>({{{qnan, 1.0, qnan, -0.0, 0.0}, {1.0, qnan, qnan, 0.0, -0.0}}});
  }
  SUBCASE("relu f32") { special<op_relu, float>({{{qnan, -0.0, 1.0, -1.0}}}); }
  SUBCASE("relu f64") { special<op_relu, double>({{{qnan, -0.0, 1.0, -1.0}}}); }
  SUBCASE("relu bf16") { special<op_relu, tfm::bf16>({{{qnan, -0.0, 1.0, -1.0}}}); }
  SUBCASE("bitwise on a SIMD-width + 1 tensor") {
    const index_t n = tfm::simd::width<float> + 1;
    tfm::tensor<float, tfm::shape<tfm::dyn>, tfm::cpu> x(n);
    x.fill(std::numeric_limits<float>::quiet_NaN());
    tfm::tensor<float, tfm::shape<tfm::dyn>, tfm::cpu> c = tfm::relu(x);
    tfm::tensor<float, tfm::shape<tfm::dyn>, tfm::reference> r = tfm::relu(x);
    // Lane 0 (SIMD body) and the last element (scalar tail) must agree with each other.
    CHECK(std::isnan(c(0)) == std::isnan(c(n - 1)));
    TFM_CHECK_BITWISE(tfm_test::to_vector(c), tfm_test::to_vector(r));
  }
}
