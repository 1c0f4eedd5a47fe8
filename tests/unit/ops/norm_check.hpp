// tests/unit/ops/norm_check.hpp
//
// Checks of ops/normalize.hpp results against the double oracles of ops_test_util.hpp:
//   float/double: NaN/Inf agreement and NMSE <= bound (TESTING.md: 1e-6 softmax family, 1e-7
//                 norms; 1e-20 for double);
//   bf16/f16:     the kernels compute in float and round once, so the result is compared with
//                 the oracle rounded to the element type (NMSE <= the same bound) and with the
//                 unrounded oracle within one unit in the last place (f16 subnormals: 2^-24).
#pragma once

#include <string>
#include <type_traits>

#include "ops_test_util.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/ops/normalize.hpp"

namespace ops_test {

template <class X>
dims ext_of(const X& x) {
  const auto e = x.shape().extents();
  return dims(e.begin(), e.end());
}

/// kind: 0 float, 1 double, 2 bf16, 3 f16.
inline void verify_rows(const std::string& what, int kind, double bound,
                        const std::vector<double>& got, const std::vector<double>& want) {
  INFO(what);
  std::size_t nan = 0;
  for (double v : got) nan += std::isnan(v) ? 1 : 0;
  CHECK_MESSAGE(nan == 0, nan, " NaN in the result");
  if (kind <= 1) {
    TFM_CHECK_REPORT(tfm_test::compare(got, want, kind == 1 ? 1e-20 : bound));
    return;
  }
  const auto rounded = kind == 2 ? rounded_to<tfm::bf16>(want) : rounded_to<tfm::f16>(want);
  TFM_CHECK_REPORT(tfm_test::compare(got, rounded, bound));
  // f16 has subnormals below 2^-14 with an absolute spacing of 2^-24: allow one of those.
  TFM_CHECK_REPORT(
      tfm_test::all_close(got, want, kind == 2 ? 1e-12 : 0x1p-24, kind == 2 ? 0x1p-8 : 0x1p-10));
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

/// A (rows, n) tensor holding v (row-major) rounded to T.
template <class T, class Backend = tfm::cpu>
tfm::tensor<T, tfm::shape<tfm::dyn, tfm::dyn>, Backend> matrix(index_t rows, index_t n,
                                                               const std::vector<double>& v) {
  tfm::tensor<T, tfm::shape<tfm::dyn, tfm::dyn>, Backend> t(rows, n);
  std::vector<T> s;
  for (double x : v) s.push_back(tfm_test::from_double<T>(x));
  tfm_test::from_vector(t, s);
  return t;
}

inline std::size_t count_nan(const std::vector<double>& v) {
  std::size_t n = 0;
  for (double x : v) n += std::isnan(x) ? 1 : 0;
  return n;
}

}  // namespace ops_test
