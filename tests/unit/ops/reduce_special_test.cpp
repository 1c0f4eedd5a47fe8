// Reductions: NaN propagation, logsumexp at the edges (+-1e4, -inf, +inf), empty axes, exact
// bf16/f16 accumulation of 10^6 ones.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>

#include "reduce_check.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/view.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

namespace {
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

/// cpu/reference twins of a (rows, n) tensor holding `v` (row-major), viewed as (rows, n, 1) and
/// (1, rows, n) so that both the row path (inner 1) and the column path (inner > 1) run.
template <class T>
struct twin2 {
  tensor<T, shape<dyn, dyn>> c;
  tensor<T, shape<dyn, dyn>, tfm::reference> r;
  std::vector<double> values;
  dims ext;
  twin2(index_t rows, index_t n, const std::vector<double>& v)
      : c(rows, n), r(rows, n), ext{rows, n} {
    std::vector<T> s;
    for (double x : v) s.push_back(tfm_test::from_double<T>(x));
    tfm_test::from_vector(c, s);
    tfm_test::from_vector(r, s);
    values = doubles(c);
  }
};

template <class T>
void check_all_ops_axis(const twin2<T>& x) {
  // Along the last axis (row path) and along axis 0 (column path), and over everything.
  auto per_op = [&]<red K>() {
    check_reduce<K, 1, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, 0, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce_all<K, T>(x.c, x.r, x.values, x.ext);
  };
  per_op.template operator()<red::sum>();
  per_op.template operator()<red::mean>();
  per_op.template operator()<red::max>();
  per_op.template operator()<red::min>();
  per_op.template operator()<red::argmax>();
  per_op.template operator()<red::argmin>();
  per_op.template operator()<red::logsumexp>();
}
}  // namespace

namespace {
/// 4 rows of n: row 0 has a NaN at 3; row 1 NaN first and again later; row 2 none; row 3 NaN
/// last. Values uniform in [-1, 1].
std::vector<double> nan_rows(index_t n, std::mt19937& g) {
  auto v = tfm_test::random_vector<double>(static_cast<std::size_t>(4 * n), g, -1, 1);
  v[3] = nan_v;
  v[static_cast<std::size_t>(n)] = nan_v;
  v[static_cast<std::size_t>(n + n / 2)] = nan_v;
  v[static_cast<std::size_t>(4 * n - 1)] = nan_v;
  return v;
}
}  // namespace

TEST_CASE_TEMPLATE(
    "reduce: NaN propagates through sum/mean/logsumexp; argmax/argmin give the first NaN", T, float,
    double, tfm::bf16, tfm::f16) {
  auto g = tfm_test::rng(401);
  for (index_t n : {5, 37, 100, 40000}) {
    twin2<T> x(4, n, nan_rows(n, g));
    INFO("n = ", n);
    // Along the last axis (row path), along axis 0 (column path), and over everything.
    auto per_op = [&]<red K>() {
      check_reduce<K, 1, false, T>(x.c, x.r, x.values, x.ext);
      check_reduce<K, 0, false, T>(x.c, x.r, x.values, x.ext);
      check_reduce_all<K, T>(x.c, x.r, x.values, x.ext);
    };
    per_op.template operator()<red::sum>();
    per_op.template operator()<red::mean>();
    per_op.template operator()<red::argmax>();
    per_op.template operator()<red::argmin>();
    per_op.template operator()<red::logsumexp>();
    // The same, spelled out for the row path.
    auto s = tfm::sum<1>(x.c);
    auto am = tfm::argmax<1>(x.c);
    auto an = tfm::argmin<-1>(x.c);
    for (index_t r : {0, 1, 3}) CHECK(std::isnan(static_cast<double>(s(r))));
    CHECK_FALSE(std::isnan(static_cast<double>(s(2))));
    CHECK(am(0) == 3);
    CHECK(am(1) == 0);
    CHECK(an(1) == 0);
    CHECK(am(3) == n - 1);
    CHECK(tfm::argmax(x.c) == 3);
    // max/min on the reference backend (the cpu backend: next test case).
    auto mr = tfm::max<1>(x.r);
    auto mnr = tfm::min<0>(x.r);
    for (index_t r : {0, 1, 3}) CHECK(std::isnan(tfm_test::to_double(mr(r))));
    CHECK(std::isnan(tfm_test::to_double(mnr(3))));
    CHECK(std::isnan(tfm_test::to_double(tfm::max(x.r))));
  }
  // A NaN in a later 16384-element block of one long row.
  std::vector<double> v(100000, 0.5);
  v[70001] = nan_v;
  v[80000] = 9;
  twin2<T> x(1, 100000, v);
  CHECK(tfm::argmax<1>(x.c)(0) == 70001);
  CHECK(tfm::argmin<1>(x.c)(0) == 70001);
  CHECK(std::isnan(static_cast<double>(tfm::sum(x.c))));
  CHECK(std::isnan(static_cast<double>(tfm::logsumexp(x.c))));
  CHECK(std::isnan(static_cast<double>(tfm::mean<1>(x.c)(0))));
}

// Regression: the SIMD max/min paths once detected NaN with `v != v`, which xsimd 8.1 implements
// as an ordered compare on AVX/AVX-512 (false for NaN); they now use xsimd::isnan.
TEST_CASE_TEMPLATE("reduce: max/min propagate NaN on the cpu backend (SIMD paths)", T, float,
                   double, tfm::bf16, tfm::f16) {
  auto g = tfm_test::rng(402);
  for (index_t n : {5, 37, 100, 40000}) {
    twin2<T> x(4, n, nan_rows(n, g));
    INFO("n = ", n);
    auto per_op = [&]<red K>() {
      check_reduce<K, 1, false, T>(x.c, x.r, x.values, x.ext);
      check_reduce<K, 0, false, T>(x.c, x.r, x.values, x.ext);
      check_reduce_all<K, T>(x.c, x.r, x.values, x.ext);
    };
    per_op.template operator()<red::max>();
    per_op.template operator()<red::min>();
    auto m = tfm::max<1>(x.c);
    auto mn = tfm::min<1>(x.c);
    for (index_t r : {0, 1, 3}) {
      CHECK(std::isnan(tfm_test::to_double(m(r))));
      CHECK(std::isnan(tfm_test::to_double(mn(r))));
    }
    CHECK_FALSE(std::isnan(tfm_test::to_double(m(2))));
  }
  std::vector<double> v(100000, 0.5);
  v[70001] = nan_v;
  twin2<T> x(1, 100000, v);
  CHECK(std::isnan(tfm_test::to_double(tfm::max(x.c))));
  CHECK(std::isnan(tfm_test::to_double(tfm::min<1>(x.c)(0))));
}

TEST_CASE_TEMPLATE("reduce: logsumexp of +-1e4 rows, all -inf rows and +inf", T, float, double) {
  const index_t n = 7;
  std::vector<double> v = {
      1e4,    -1e4,   1e4,    9999.5, -1e4,   1e4 - 3, 0,       // large, mixed signs
      -1e4,   -1e4,   -1e4,   -1e4,   -1e4,   -1e4,    -1e4,    // equal large negative
      1e4,    1e4,    1e4,    1e4,    1e4,    1e4,     1e4,     // equal large positive
      -inf_v, -inf_v, -inf_v, -inf_v, -inf_v, -inf_v,  -inf_v,  // fully masked: -inf
      -inf_v, 0,      0,      -inf_v, -inf_v, -inf_v,  -inf_v,  // log 2
      1,      inf_v,  3,      -inf_v, 4,      5,       6,       // +inf wins
  };
  twin2<T> x(6, n, v);
  check_all_ops_axis(x);
  auto l = tfm::logsumexp<1>(x.c);
  const double ln7 = std::log(7.0);
  CHECK(static_cast<double>(l(1)) == doctest::Approx(-1e4 + ln7).epsilon(1e-7));
  CHECK(static_cast<double>(l(2)) == doctest::Approx(1e4 + ln7).epsilon(1e-7));
  CHECK(l(3) == -std::numeric_limits<decltype(l(3) + 0)>::infinity());
  CHECK(static_cast<double>(l(4)) == doctest::Approx(std::log(2.0)).epsilon(1e-6));
  CHECK(l(5) == std::numeric_limits<decltype(l(5) + 0)>::infinity());
  for (index_t r = 0; r < 6; ++r) CHECK_FALSE(std::isnan(static_cast<double>(l(r))));

  // Long rows: one block all -inf, the rest at -1e4 and 1e4 (blocks rescaled to one max).
  const index_t big = 50000;
  std::vector<double> w(static_cast<std::size_t>(big));
  for (index_t i = 0; i < big; ++i)
    w[static_cast<std::size_t>(i)] = i < 20000 ? -inf_v : (i < 35000 ? -1e4 : 1e4 - (i % 7));
  twin2<T> y(1, big, w);
  check_all_ops_axis(y);
  std::vector<double> all_masked(static_cast<std::size_t>(big), -inf_v);
  twin2<T> z(2, big / 2, all_masked);
  CHECK(tfm::logsumexp<1>(z.c)(1) == -std::numeric_limits<T>::infinity());
  CHECK(tfm::logsumexp(z.c) == -std::numeric_limits<T>::infinity());
  CHECK(tfm::logsumexp<0>(z.c)(7) == -std::numeric_limits<T>::infinity());
}

TEST_CASE_TEMPLATE("reduce: empty axes: sum 0, mean NaN, the others raise shape_error", T, float,
                   tfm::bf16, std::int32_t) {
  auto check_backend = [&]<class B>() {
    tensor<T, shape<dyn, dyn, dyn>, B> x(2, 0, 3);
    auto s = tfm::sum<1>(x);
    REQUIRE(s.extent(0) == 2);
    REQUIRE(s.extent(1) == 3);
    for (auto v : tfm_test::to_vector(s)) CHECK(v == 0);
    tensor<T, shape<dyn, dyn>, B> rows(4, 0);  // inner == 1
    for (auto v : tfm_test::to_vector(tfm::sum<1>(rows))) CHECK(v == 0);
    CHECK(tfm::sum(x) == 0);
    if constexpr (!std::is_integral_v<T>) {
      for (auto v : doubles(tfm::mean<1>(x))) CHECK(std::isnan(v));
      for (auto v : doubles(tfm::mean<1>(rows))) CHECK(std::isnan(v));
      CHECK(std::isnan(tfm::mean(x)));
      CHECK_THROWS_AS(tfm::logsumexp<1>(x), tfm::shape_error);
      CHECK_THROWS_AS(tfm::logsumexp(rows), tfm::shape_error);
    }
    CHECK_THROWS_AS(tfm::max<1>(x), tfm::shape_error);
    CHECK_THROWS_AS(tfm::min<-2>(x, tfm::keepdims), tfm::shape_error);
    CHECK_THROWS_AS(tfm::argmax<1>(rows), tfm::shape_error);
    CHECK_THROWS_AS(tfm::argmin<1>(x), tfm::shape_error);
    CHECK_THROWS_AS(tfm::max(x), tfm::shape_error);
    CHECK_THROWS_AS(tfm::argmax(rows), tfm::shape_error);
    CHECK_THROWS_WITH_AS(tfm::max<1>(x), doctest::Contains("empty axis"), tfm::shape_error);
    CHECK_THROWS_WITH_AS(tfm::max<1>(x), doctest::Contains("(2, 0, 3)"), tfm::shape_error);
    // A non-empty reduced axis with an empty other axis: an empty result, no error.
    auto m0 = tfm::max<0>(x);
    CHECK(m0.extent(0) == 0);
    CHECK(m0.extent(1) == 3);
    auto a2 = tfm::argmax<2>(x);
    CHECK(a2.size() == 0);
  };
  check_backend.template operator()<tfm::cpu>();
  check_backend.template operator()<tfm::reference>();
}

TEST_CASE_TEMPLATE("reduce: 10^6 half ones sum to exactly 10^6 (float accumulation)", T, tfm::bf16,
                   tfm::f16) {
  tensor<T, shape<dyn>> ones(1000000);
  ones = 1.0f;
  const float s = tfm::sum(ones);
  CHECK(s == 1e6f);
  CHECK(tfm::mean(ones) == 1.0f);
  tensor<T, shape<dyn>, tfm::reference> ones_ref(ones);
  CHECK(tfm::sum(ones_ref) == 1e6f);
  tensor<T, shape<dyn, dyn>> col(1000000, 2);  // column path: 10^6 additions per column
  col = 1.0f;
  auto sc = tfm::sum<0>(col);
  CHECK(sc(0) == 1e6f);
  CHECK(sc(1) == 1e6f);
  tensor<T, shape<1, dyn>> row(1000000);
  row = 1.0f;
  CHECK(tfm::sum<1>(row)(0) == 1e6f);
  CHECK(tfm::sum<-1>(row, tfm::keepdims)(0, 0) == 1e6f);
}
