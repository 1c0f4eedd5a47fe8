// tests/unit/ops/matmul_check.hpp
//
// A matmul result checked against the naive double triple loop of ops_test_util.hpp (with NumPy
// batch broadcasting): the result extents, and the values within
//   float   NMSE <= 5e-4 (TESTING.md matmul tolerance) and, as a precision guard, <= 1e-9
//           (a float GEMM with K <= ~1000 lands near 1e-13);
//   double  NMSE <= 1e-24;
//   bf16/f16: computed in float and rounded once, so each element is within one unit in the last
//           place (plus 1e-5 absolute for float cancellation) of the double result.
#pragma once

#include <string>
#include <type_traits>

#include "ops_test_util.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/ops/matmul.hpp"

namespace ops_test {

template <class X>
dims ext_of(const X& x) {
  const auto e = x.shape().extents();
  return dims(e.begin(), e.end());
}

/// Non-template part: extents and values of `got` vs the oracle of (a, b).
inline void verify_matmul(const std::string& what, int kind, const std::vector<double>& a,
                          const dims& ea, const std::vector<double>& b, const dims& eb,
                          const dims& got_ext, const std::vector<double>& got) {
  const std::string ctx = what + ": " + dims_str(ea) + " x " + dims_str(eb);
  INFO(ctx);
  dims want_ext;
  const auto want = matmul_oracle(a, ea, b, eb, &want_ext);
  REQUIRE(got_ext == want_ext);
  const auto rep = tfm_test::compare(got, want, 5e-4);
  TFM_CHECK_REPORT(rep);
  if (kind == 0) {  // float
    CHECK_MESSAGE(rep.nmse <= 1e-9, "float precision guard: ", rep.str());
  } else if (kind == 1) {  // double
    CHECK_MESSAGE(rep.nmse <= 1e-24, "double: ", rep.str());
  } else {  // halves: one rounding of a float result; 2^-8 (bf16) / 2^-11 (f16) relative
    const double ulp = kind == 2 ? 0x1p-8 : 0x1p-10;  // one ulp: half for rounding, half slack
    TFM_CHECK_REPORT(tfm_test::all_close(got, want, 1e-5, ulp));
  }
}

template <class T>
constexpr int kind_of() {
  if constexpr (std::is_same_v<T, float>)
    return 0;
  else if constexpr (std::is_same_v<T, double>)
    return 1;
  else if constexpr (std::is_same_v<T, tfm::bf16>)
    return 2;
  else
    return 3;
}

/// Checks r = matmul(...) against the oracle of the operands' values (row-major) and extents.
template <class R>
void check_result(const std::string& what, const R& r, const std::vector<double>& a, const dims& ea,
                  const std::vector<double>& b, const dims& eb) {
  verify_matmul(what, kind_of<typename R::value_type>(), a, ea, b, eb, ext_of(r), doubles(r));
}

/// matmul(a, b) of two tensors or views, checked against the oracle.
template <class A, class B>
void check_matmul(const std::string& what, A&& a, B&& b) {
  const auto va = doubles(a), vb = doubles(b);
  const auto ea = ext_of(a), eb = ext_of(b);
  auto r = tfm::matmul(std::forward<A>(a), std::forward<B>(b));
  static_assert(std::is_same_v<typename decltype(r)::value_type,
                               std::remove_cv_t<typename std::remove_cvref_t<A>::value_type>>);
  check_result(what, r, va, ea, vb, eb);
}

/// A tensor of extents `e` (rank R, all dynamic) with uniform values in [-1, 1].
template <class T, std::size_t R, class Backend = tfm::cpu>
auto random_dyn(const std::array<index_t, R>& e, std::mt19937& g) {
  using S = tfm::dyn_shape<R>;
  tfm::tensor<T, S, Backend> t(S::from_extents(e));
  fill_random(t, g);
  return t;
}

}  // namespace ops_test
