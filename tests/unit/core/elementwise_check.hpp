// tests/unit/core/elementwise_check.hpp
//
// One elementwise op on random 1-D inputs of length n, evaluated three ways and compared:
//   got_cpu  tensor<T, shape<dyn>, tfm::cpu>       = op(inputs)   (SIMD + OpenMP)
//   got_ref  tensor<T, shape<dyn>, tfm::reference> = op(inputs)   (scalar loops, the oracle)
//   want     the scalar formula of op_table.hpp in double, rounded to T
// Tolerances (TESTING.md "Backends"): exact ops (one IEEE operation or a selection) must match
// the oracle bit for bit, and cpu must match reference bit for bit. Other ops: NMSE <= 1e-7
// against both, NaN/Inf agreement, and an elementwise bound |got - want| <= atol + rtol |want|
// with rtol = tol_ulps * eps(T) and atol = tol_ulps * eps(compute type) * max|want| (this absorbs
// cancellation such as 1 + tanh(u) for u << 0 in gelu, which costs relative accuracy where the
// value is tiny compared with the rest of the tensor, not absolute accuracy).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "op_table.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/core/view.hpp"

namespace core_test {

using tfm::index_t;

/// Machine epsilon (spacing at 1) of a storage type.
template <class T>
constexpr double eps_of() {
  if constexpr (std::is_same_v<T, tfm::bf16>)
    return 0x1p-7;
  else if constexpr (std::is_same_v<T, tfm::f16>)
    return 0x1p-10;
  else if constexpr (std::is_integral_v<T>)
    return 0;
  else
    return std::numeric_limits<T>::epsilon();
}

/// The TESTING.md default NMSE bound; not loosened for any op (the measured NMSE of the
/// transcendental ops is below 1e-12 in float, see the report printed by the sweep).
inline constexpr double nmse_limit = 1e-7;
/// Elementwise bound in ulps of the storage type (rtol) for the non-exact ops. SIMD exp, log,
/// tanh, erf and pow of xsimd differ from glibc's by a few ulps; the oracle itself is rounded
/// once more to T. Halves: the float result and the double oracle round to the same half except
/// near a rounding boundary, where they differ by one half-ulp step.
template <class T>
constexpr double tol_ulps() {
  return tfm::is_half_v<T> ? 1.0 : 8.0;
}

/// The input sizes of the sweep: TESTING.md's list, the SIMD widths of float and double on this
/// machine plus and minus one, and 1 << 20 (large enough for the OpenMP path and streamed
/// stores); 1 << 17 under the sanitizer (still the OpenMP path), where 1 << 20 takes minutes.
inline std::vector<index_t> sweep_sizes(bool with_large = true) {
  const index_t wf = tfm::simd::width<float>, wd = tfm::simd::width<double>;
  std::vector<index_t> s{0,  1,      2,      3,      7,          8,         15,   16,
                         17, 31,     33,     63,     127,        129,       1023, wf - 1,
                         wf, wf + 1, wd - 1, wd + 1, 2 * wf + 1, 3 * wd - 1};
  if (with_large) s.push_back(index_t{1} << (tfm_test::sanitized ? 17 : 20));
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

template <class T>
std::vector<T> make_input(const arg_domain& d, std::size_t n, std::mt19937& g) {
  if (d.discrete || std::is_integral_v<T>) {
    std::uniform_int_distribution<int> u(static_cast<int>(d.lo), static_cast<int>(d.hi));
    std::vector<T> v(n);
    for (auto& x : v) x = tfm_test::from_double<T>(u(g));
    return v;
  }
  return tfm_test::random_vector<T>(n, g, d.lo, d.hi);
}

/// Accumulated numbers of one op x dtype over the sweep (printed once per op).
struct op_stats {
  double num = 0, den = 0;  // pooled squared error and squared oracle over the whole sweep
  double max_nmse_ref = 0, max_abs = 0;
  double pooled_nmse() const { return den > 0 ? num / den : num; }
};

template <class Op, class T, std::size_t... I>
void check_op_impl(index_t n, std::mt19937& g, op_stats& st, std::index_sequence<I...>) {
  using cpu_t = tfm::tensor<T, tfm::shape<tfm::dyn>, tfm::cpu>;
  using ref_t = tfm::tensor<T, tfm::shape<tfm::dyn>, tfm::reference>;
  const auto un = static_cast<std::size_t>(n);
  std::array<std::vector<T>, Op::arity> in{make_input<T>(Op::dom[I], un, g)...};
  std::array<cpu_t, Op::arity> x{tfm_test::make_tensor<cpu_t>(tfm::shape<tfm::dyn>(n), in[I])...};

  cpu_t got_cpu = Op::build(x[I]...);
  ref_t got_ref = Op::build(x[I]...);
  REQUIRE(got_cpu.size() == n);
  REQUIRE(got_ref.size() == n);

  std::vector<T> want(un);
  double scale = 0;
  for (std::size_t i = 0; i < un; ++i) {
    const double w = Op::ref(tfm_test::to_double(in[I][i])...);
    want[i] = tfm_test::from_double<T>(w);
    if (std::isfinite(w)) scale = std::max(scale, std::fabs(w));
    if constexpr (Op::cancels)
      scale = std::max({scale, std::fabs(tfm_test::to_double(in[I][i]))...});
  }
  const auto vc = tfm_test::to_vector(got_cpu), vr = tfm_test::to_vector(got_ref);

  INFO("op=" << std::string(Op::name) << " dtype=" << std::string(tfm::dtype_name<T>())
             << " n=" << n);
  if constexpr (Op::exact || std::is_integral_v<T>) {
    TFM_CHECK_BITWISE(vr, want);
    TFM_CHECK_BITWISE(vc, want);
    TFM_CHECK_BITWISE(vc, vr);
  } else {
    using C = tfm::compute_t<T>;
    const double rtol = tol_ulps<T>() * eps_of<T>();
    const double atol = tol_ulps<T>() * eps_of<C>() * scale;
    // cpu vs reference: NMSE per size (TESTING.md). Against the double oracle the NMSE is pooled
    // over the sweep (a single tiny element, such as gelu_erf(-6), would otherwise be the whole
    // denominator); NaN/Inf agreement is checked per size for both.
    auto r1 = tfm_test::compare(vc, want, std::numeric_limits<double>::infinity());
    auto r2 = tfm_test::compare(vr, want, std::numeric_limits<double>::infinity());
    auto r3 = tfm_test::compare(vc, vr, nmse_limit);
    TFM_CHECK_REPORT(r1);
    TFM_CHECK_REPORT(r2);
    TFM_CHECK_REPORT(r3);
    for (std::size_t i = 0; i < un; ++i) {
      const double w = tfm_test::to_double(want[i]);
      if (!std::isfinite(w)) continue;
      for (double gv : {tfm_test::to_double(vc[i]), tfm_test::to_double(vr[i])})
        if (std::isfinite(gv)) st.num += (gv - w) * (gv - w), st.den += w * w;
    }
    // Halves: the smallest f16 subnormal step, 2^-24, is the absolute resolution of the storage.
    const double atol_h = std::is_same_v<T, tfm::f16> ? atol + 0x1p-24 : atol;
    auto e1 = tfm_test::all_close(vc, want, atol_h, rtol);
    auto e2 = tfm_test::all_close(vr, want, atol_h, rtol);
    TFM_CHECK_REPORT(e1);
    TFM_CHECK_REPORT(e2);
    st.max_nmse_ref = std::max(st.max_nmse_ref, r3.nmse);
    st.max_abs = std::max({st.max_abs, e1.max_abs, e2.max_abs});
  }
}

/// Runs the size sweep for one op and one storage type.
template <class Op, class T>
void check_op_sweep(std::uint64_t salt, bool with_large = true) {
  auto g = tfm_test::rng(salt);
  op_stats st;
  for (index_t n : sweep_sizes(with_large))
    check_op_impl<Op, T>(n, g, st, std::make_index_sequence<Op::arity>{});
  if constexpr (!Op::exact && !std::is_integral_v<T>) {
    INFO("op=" << std::string(Op::name) << " dtype=" << std::string(tfm::dtype_name<T>()));
    CHECK(st.pooled_nmse() <= nmse_limit);
    MESSAGE(std::string(Op::name) << " " << std::string(tfm::dtype_name<T>())
                                  << ": NMSE vs double oracle (pooled over the sweep) "
                                  << st.pooled_nmse() << ", max NMSE cpu vs reference "
                                  << st.max_nmse_ref << ", max abs error " << st.max_abs);
  }
}

/// All float-capable ops for one storage type.
template <class T>
void check_all_float_ops(std::uint64_t salt) {
  // binary
  SUBCASE("add") { check_op_sweep<op_add, T>(salt + 1); }
  SUBCASE("sub") { check_op_sweep<op_sub, T>(salt + 2); }
  SUBCASE("mul") { check_op_sweep<op_mul, T>(salt + 3); }
  SUBCASE("div") { check_op_sweep<op_div, T>(salt + 4); }
  SUBCASE("minimum") { check_op_sweep<op_minimum, T>(salt + 5); }
  SUBCASE("maximum") { check_op_sweep<op_maximum, T>(salt + 6); }
  SUBCASE("pow") { check_op_sweep<op_pow, T>(salt + 7); }
  // comparisons and where
  SUBCASE("less") { check_op_sweep<op_less, T>(salt + 8); }
  SUBCASE("less_equal") { check_op_sweep<op_less_equal, T>(salt + 9); }
  SUBCASE("greater") { check_op_sweep<op_greater, T>(salt + 10); }
  SUBCASE("greater_equal") { check_op_sweep<op_greater_equal, T>(salt + 11); }
  SUBCASE("eq") { check_op_sweep<op_eq, T>(salt + 12); }
  SUBCASE("ne") { check_op_sweep<op_ne, T>(salt + 13); }
  SUBCASE("where") { check_op_sweep<op_where, T>(salt + 14); }
  // unary
  SUBCASE("neg") { check_op_sweep<op_neg, T>(salt + 15); }
  SUBCASE("neg()") { check_op_sweep<op_neg_fn, T>(salt + 16, false); }
  SUBCASE("abs") { check_op_sweep<op_abs, T>(salt + 17); }
  SUBCASE("relu") { check_op_sweep<op_relu, T>(salt + 18); }
  SUBCASE("square") { check_op_sweep<op_square, T>(salt + 19); }
  SUBCASE("sqrt") { check_op_sweep<op_sqrt, T>(salt + 20); }
  SUBCASE("exp") { check_op_sweep<op_exp, T>(salt + 21); }
  SUBCASE("log") { check_op_sweep<op_log, T>(salt + 22); }
  SUBCASE("rsqrt") { check_op_sweep<op_rsqrt, T>(salt + 23); }
  SUBCASE("tanh") { check_op_sweep<op_tanh, T>(salt + 24); }
  SUBCASE("sigmoid") { check_op_sweep<op_sigmoid, T>(salt + 25); }
  SUBCASE("silu") { check_op_sweep<op_silu, T>(salt + 26); }
  SUBCASE("gelu") { check_op_sweep<op_gelu, T>(salt + 27, false); }
  SUBCASE("gelu_tanh") { check_op_sweep<op_gelu_tanh, T>(salt + 28); }
  SUBCASE("gelu_erf") { check_op_sweep<op_gelu_erf, T>(salt + 29); }
}

}  // namespace core_test
