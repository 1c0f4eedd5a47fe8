// layer_norm (with gamma/beta, with tfm::none) and rms_norm (weight / none) vs independent double
// formulas (arXiv:1607.06450, arXiv:1910.07467): NMSE <= 1e-7 over a size sweep for
// float/double/bf16/f16 and the reference backend; large offsets, constant rows, rank 1 and
// rank 3 inputs, views and expressions; parameter extent mismatches throw shape_error.
#include <doctest/doctest.h>

#include "norm_check.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

namespace {
template <class T, class Backend = tfm::cpu>
tensor<T, shape<dyn>, Backend> vec(const std::vector<double>& v) {
  tensor<T, shape<dyn>, Backend> t(static_cast<index_t>(v.size()));
  std::vector<T> s;
  for (double x : v) s.push_back(tfm_test::from_double<T>(x));
  tfm_test::from_vector(t, s);
  return t;
}

/// Every layer_norm / rms_norm variant of a (rows, n) input, checked against the oracles.
template <class T, class Backend = tfm::cpu>
void check_norms(const std::string& what, index_t rows, index_t n, const std::vector<double>& v,
                 std::mt19937& g) {
  auto x = matrix<T, Backend>(rows, n, v);
  const auto xv = doubles(x);
  auto gamma =
      vec<T, Backend>(tfm_test::random_vector<double>(static_cast<std::size_t>(n), g, 0.5, 1.5));
  auto beta =
      vec<T, Backend>(tfm_test::random_vector<double>(static_cast<std::size_t>(n), g, -1, 1));
  const auto gv = doubles(gamma), bv = doubles(beta);
  const int k = kind_of<T>();
  using R = tensor<T, shape<dyn, dyn>, Backend>;
  auto ln = tfm::layer_norm(x, gamma, beta);
  static_assert(std::is_same_v<decltype(ln), R>);
  verify_rows(what + " layer_norm(x, g, b)", k, 1e-7, doubles(ln),
              layer_norm_oracle(xv, n, gv, bv, 1e-5));
  verify_rows(what + " layer_norm(x, none, none)", k, 1e-7,
              doubles(tfm::layer_norm(x, tfm::none, tfm::none)),
              layer_norm_oracle(xv, n, {}, {}, 1e-5));
  verify_rows(what + " layer_norm(x, g, none, 1e-3)", k, 1e-7,
              doubles(tfm::layer_norm(x, gamma, tfm::none, 1e-3)),
              layer_norm_oracle(xv, n, gv, {}, 1e-3));
  verify_rows(what + " layer_norm(x, none, b)", k, 1e-7,
              doubles(tfm::layer_norm(x, tfm::none, beta)), layer_norm_oracle(xv, n, {}, bv, 1e-5));
  auto rn = tfm::rms_norm(x, gamma);
  static_assert(std::is_same_v<decltype(rn), R>);
  verify_rows(what + " rms_norm(x, w)", k, 1e-7, doubles(rn), rms_norm_oracle(xv, n, gv, 1e-6));
  verify_rows(what + " rms_norm(x, none)", k, 1e-7, doubles(tfm::rms_norm(x, tfm::none)),
              rms_norm_oracle(xv, n, {}, 1e-6));
  verify_rows(what + " rms_norm(x, w, 1e-2)", k, 1e-7, doubles(tfm::rms_norm(x, gamma, 1e-2)),
              rms_norm_oracle(xv, n, gv, 1e-2));
}
}  // namespace

TEST_CASE_TEMPLATE("layer_norm/rms_norm: size sweep vs double formulas", T, float, double,
                   tfm::bf16, tfm::f16) {
  auto g = tfm_test::rng(901);
  std::vector<index_t> sizes(sweep_sizes.begin() + 1, sweep_sizes.end());  // n >= 1
  sizes.push_back(4097);
  for (index_t n : sizes) {
    const index_t rows = n > 1000 ? 2 : 3;
    auto v = tfm_test::random_vector<double>(static_cast<std::size_t>(rows * n), g, -3, 3);
    check_norms<T>("n = " + std::to_string(n), rows, n, v, g);
  }
}

TEST_CASE_TEMPLATE("layer_norm/rms_norm: reference backend", T, float, double) {
  auto g = tfm_test::rng(902);
  for (index_t n : {1, 8, 33, 300}) {
    auto v = tfm_test::random_vector<double>(static_cast<std::size_t>(3 * n), g, -3, 3);
    check_norms<T, tfm::reference>("reference n = " + std::to_string(n), 3, n, v, g);
  }
}

TEST_CASE_TEMPLATE("layer_norm/rms_norm: large offsets, large values, constant rows", T, float,
                   double) {
  auto g = tfm_test::rng(903);
  for (index_t n : {7, 64, 1000}) {
    // Mean 1000 with unit spread: a one-pass E[x^2] - E[x]^2 in float would lose the variance.
    auto v = tfm_test::random_vector<double>(static_cast<std::size_t>(2 * n), g, 999, 1001);
    check_norms<T>("offset 1000, n = " + std::to_string(n), 2, n, v, g);
    auto w = tfm_test::random_vector<double>(static_cast<std::size_t>(2 * n), g, -1e4, 1e4);
    check_norms<T>("+-1e4, n = " + std::to_string(n), 2, n, w, g);
    // Constant rows: variance 0, layer_norm gives beta (0 without beta), never NaN.
    std::vector<double> c(static_cast<std::size_t>(2 * n), 5.0);
    auto x = matrix<T>(2, n, c);
    auto y = doubles(tfm::layer_norm(x, tfm::none, tfm::none));
    CHECK(count_nan(y) == 0);
    for (double e : y) CHECK(e == 0);
    std::vector<double> zero(static_cast<std::size_t>(2 * n), 0.0);
    auto z = doubles(tfm::rms_norm(matrix<T>(2, n, zero), tfm::none));
    CHECK(count_nan(z) == 0);
    for (double e : z) CHECK(e == 0);
  }
}

TEST_CASE_TEMPLATE("layer_norm/rms_norm: rank 1 and rank 3 inputs, views and expressions", T, float,
                   tfm::bf16) {
  auto g = tfm_test::rng(904);
  tensor<T, shape<8>> x1;
  fill_random(x1, g, -2, 2);
  auto y1 = tfm::layer_norm(x1, tfm::none, tfm::none);
  static_assert(std::is_same_v<decltype(y1), tensor<T, shape<8>>>);
  verify_rows("rank 1 layer_norm", kind_of<T>(), 1e-7, doubles(y1),
              layer_norm_oracle(doubles(x1), 8, {}, {}, 1e-5));
  tensor<T, shape<2, dyn, 16>> x3(5);
  fill_random(x3, g, -2, 2);
  auto w = vec<T>(tfm_test::random_vector<double>(16, g, 0.5, 1.5));
  auto y3 = tfm::rms_norm(x3, w);
  static_assert(std::is_same_v<decltype(y3), tensor<T, shape<2, dyn, 16>>>);
  verify_rows("rank 3 rms_norm", kind_of<T>(), 1e-7, doubles(y3),
              rms_norm_oracle(doubles(x3), 16, doubles(w), 1e-6));
  // A static-extent weight works too.
  tensor<T, shape<16>> ws = w;
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::rms_norm(x3, ws)), tfm_test::to_vector(y3));
  // Views and expressions equal contiguous copies bitwise.
  auto v = tfm::permute<1, 0, 2>(x3);
  tensor<T, shape<dyn, 2, 16>> vc = v;
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::layer_norm(v, w, w)),
                    tfm_test::to_vector(tfm::layer_norm(vc, w, w)));
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::rms_norm(v, w)),
                    tfm_test::to_vector(tfm::rms_norm(vc, w)));
  tensor<float, shape<2, dyn, 16>> e = x3 * 3.0f;
  auto ye = tfm::layer_norm(x3 * 3.0f, tfm::none, tfm::none);
  static_assert(std::is_same_v<decltype(ye), tensor<float, shape<2, dyn, 16>>>);
  TFM_CHECK_BITWISE(tfm_test::to_vector(ye),
                    tfm_test::to_vector(tfm::layer_norm(e, tfm::none, tfm::none)));
  // Empty inputs: no work, same shape.
  tensor<T, shape<dyn, dyn>> z(0, 16), z2(4, 0);
  CHECK(tfm::layer_norm(z, w, w).shape().to_string() == "(0, 16)");
  CHECK(tfm::rms_norm(z2, tfm::none).shape().to_string() == "(4, 0)");
}

TEST_CASE("layer_norm/rms_norm: parameter extent mismatch throws shape_error") {
  tensor<float, shape<dyn, dyn>> x(3, 8);
  tensor<float, shape<dyn>> g7(7), g8(8), g9(9);
  CHECK_THROWS_AS(tfm::layer_norm(x, g7, g8), tfm::shape_error);
  CHECK_THROWS_AS(tfm::layer_norm(x, g8, g9), tfm::shape_error);
  CHECK_THROWS_AS(tfm::layer_norm(x, tfm::none, g9), tfm::shape_error);
  CHECK_THROWS_AS(tfm::rms_norm(x, g7), tfm::shape_error);
  CHECK_THROWS_WITH_AS(tfm::layer_norm(x, g7, g8), doctest::Contains("gamma"), tfm::shape_error);
  CHECK_THROWS_WITH_AS(tfm::layer_norm(x, g7, g8), doctest::Contains("(7,)"), tfm::shape_error);
  CHECK_THROWS_WITH_AS(tfm::layer_norm(x, g8, g9), doctest::Contains("beta"), tfm::shape_error);
  CHECK_THROWS_WITH_AS(tfm::rms_norm(x, g9), doctest::Contains("weight"), tfm::shape_error);
  CHECK_THROWS_WITH_AS(tfm::rms_norm(x, g9), doctest::Contains("(3, 8)"), tfm::shape_error);
  tensor<float, shape<5>> s5;
  CHECK_THROWS_AS(tfm::rms_norm(x, s5), tfm::shape_error);
  CHECK_NOTHROW(tfm::layer_norm(x, g8, g8));
  CHECK_NOTHROW(tfm::rms_norm(x, g8));
}
