// softmax / log_softmax (ops/normalize.hpp) vs an independent double formula: NMSE <= 1e-6
// (TESTING.md softmax tolerance) over a size sweep, along the last axis and other axes, for
// float/double/bf16/f16 and the reference backend; rows up to +-1e4, equal large values, -inf
// masking, fully masked rows (softmax zeros, log_softmax -inf), 0 NaN; views and expressions
// equal contiguous copies bitwise; result types.
#include <doctest/doctest.h>

#include <limits>

#include "norm_check.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

namespace {
constexpr double inf_v = std::numeric_limits<double>::infinity();

template <class T, class X>
void check_both(const std::string& what, const X& x, const std::vector<double>& v, const dims& e,
                std::size_t axis_for_oracle, bool last) {
  (void)last;
  auto s = tfm::softmax(x);
  auto l = tfm::log_softmax(x);
  static_assert(
      std::is_same_v<decltype(s), tensor<T, typename X::shape_type, typename X::backend_type>>);
  verify_rows(what + " softmax", kind_of<T>(), 1e-6, doubles(s),
              softmax_axis_oracle(v, e, axis_for_oracle, false));
  verify_rows(what + " log_softmax", kind_of<T>(), 1e-6, doubles(l),
              softmax_axis_oracle(v, e, axis_for_oracle, true));
}
}  // namespace

TEST_CASE_TEMPLATE("softmax/log_softmax: last axis, size sweep", T, float, double, tfm::bf16,
                   tfm::f16) {
  auto g = tfm_test::rng(801);
  std::vector<index_t> sizes = sweep_sizes;
  sizes.push_back(4097);
  for (index_t n : sizes) {
    const index_t rows = n > 1000 ? 2 : 3;
    auto v = tfm_test::random_vector<double>(static_cast<std::size_t>(rows * n), g, -8, 8);
    auto x = matrix<T>(rows, n, v);
    check_both<T>("n = " + std::to_string(n), x, doubles(x), dims{rows, n}, 1, true);
  }
}

TEST_CASE_TEMPLATE("softmax/log_softmax: other axes (softmax<0>, <1>, <-2>)", T, float, double,
                   tfm::bf16) {
  auto g = tfm_test::rng(802);
  tensor<T, shape<4, dyn, 6>> x(5);
  fill_random(x, g, -4, 4);
  const auto v = doubles(x);
  const dims e{4, 5, 6};
  auto chk = [&](const std::string& what, const auto& s, std::size_t ax, bool log) {
    static_assert(std::is_same_v<std::remove_cvref_t<decltype(s)>, tensor<T, shape<4, dyn, 6>>>);
    verify_rows(what, kind_of<T>(), 1e-6, doubles(s), softmax_axis_oracle(v, e, ax, log));
  };
  chk("softmax<0>", tfm::softmax<0>(x), 0, false);
  chk("softmax<1>", tfm::softmax<1>(x), 1, false);
  chk("softmax<-2>", tfm::softmax<-2>(x), 1, false);
  chk("softmax<2>", tfm::softmax<2>(x), 2, false);
  chk("softmax<-1>", tfm::softmax<-1>(x), 2, false);
  chk("log_softmax<0>", tfm::log_softmax<0>(x), 0, true);
  chk("log_softmax<-2>", tfm::log_softmax<-2>(x), 1, true);
  // 2-D along axis 0 (columns).
  tensor<T, shape<dyn, dyn>> m(33, 17);
  fill_random(m, g, -4, 4);
  verify_rows("softmax<0> 2-D", kind_of<T>(), 1e-6, doubles(tfm::softmax<0>(m)),
              softmax_axis_oracle(doubles(m), dims{33, 17}, 0, false));
}

TEST_CASE_TEMPLATE(
    "softmax/log_softmax: +-1e4, equal large values, -inf masking, fully masked rows", T, float,
    double, tfm::bf16) {
  for (index_t n : {5, 16, 37, 1000}) {
    std::vector<double> v;
    auto row = [&](auto f) {
      for (index_t i = 0; i < n; ++i) v.push_back(f(i));
    };
    row([](index_t i) {
      return i % 3 == 0 ? 1e4 : (i % 3 == 1 ? -1e4 : 1e4 - 2.0 * static_cast<double>(i % 5));
    });
    row([](index_t) { return 1e4; });   // equal large: uniform
    row([](index_t) { return -1e4; });  // equal large negative: uniform
    row([](index_t i) { return i % 2 ? -inf_v : static_cast<double>(i % 7); });  // masked entries
    row([](index_t) { return -inf_v; });                                         // fully masked
    row([n](index_t i) { return i == n - 1 ? 3.0 : -inf_v; });  // one survivor at the end
    const index_t rows = 6;
    auto x = matrix<T>(rows, n, v);
    const auto xv = doubles(x);
    INFO("n = ", n);
    auto s = doubles(tfm::softmax(x));
    auto l = doubles(tfm::log_softmax(x));
    verify_rows("softmax", kind_of<T>(), 1e-6, s, softmax_axis_oracle(xv, dims{rows, n}, 1, false));
    verify_rows("log_softmax", kind_of<T>(), 1e-6, l,
                softmax_axis_oracle(xv, dims{rows, n}, 1, true));
    CHECK(count_nan(s) == 0);
    CHECK(count_nan(l) == 0);
    for (index_t i = 0; i < n; ++i) {
      const auto at = [&](index_t r) { return static_cast<std::size_t>(r * n + i); };
      CHECK(s[at(4)] == 0);             // fully masked row: zeros
      CHECK(l[at(4)] == -inf_v);        // and -inf
      if (i % 2) CHECK(s[at(3)] == 0);  // masked entries
      if (i % 2) CHECK(l[at(3)] == -inf_v);
      CHECK(s[at(1)] == doctest::Approx(1.0 / static_cast<double>(n)).epsilon(0.01));
      CHECK(s[at(5)] == (i == n - 1 ? 1.0 : 0.0));
    }
    // Along axis 0 (a column of masks).
    auto s0 = doubles(tfm::softmax<0>(x));
    verify_rows("softmax<0>", kind_of<T>(), 1e-6, s0,
                softmax_axis_oracle(xv, dims{rows, n}, 0, false));
  }
}

TEST_CASE_TEMPLATE("softmax/log_softmax: reference backend", T, float, double) {
  auto g = tfm_test::rng(804);
  for (index_t n : {1, 7, 33, 300}) {
    auto v = tfm_test::random_vector<double>(static_cast<std::size_t>(3 * n), g, -6, 6);
    auto x = matrix<T, tfm::reference>(3, n, v);
    check_both<T>("reference n = " + std::to_string(n), x, doubles(x), dims{3, n}, 1, true);
    auto c = matrix<T>(3, n, v);
    TFM_CHECK_REPORT(tfm_test::compare(doubles(tfm::softmax(c)), doubles(tfm::softmax(x)), 1e-6));
  }
}

TEST_CASE_TEMPLATE("softmax/log_softmax: views and expressions equal contiguous copies bitwise", T,
                   float, tfm::bf16) {
  auto g = tfm_test::rng(805);
  tensor<T, shape<dyn, dyn>> x(40, 33);
  fill_random(x, g, -5, 5);
  tensor<T, shape<dyn, dyn>> xt = tfm::transpose(x);
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::softmax(tfm::transpose(x))),
                    tfm_test::to_vector(tfm::softmax(xt)));
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::log_softmax(tfm::transpose(x))),
                    tfm_test::to_vector(tfm::log_softmax(xt)));
  auto sl = tfm::slice<1>(x, 1, 33, 2);
  tensor<T, shape<dyn, dyn>> slc = sl;
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::softmax(sl)), tfm_test::to_vector(tfm::softmax(slc)));
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::softmax<0>(sl)),
                    tfm_test::to_vector(tfm::softmax<0>(slc)));
  tensor<float, shape<dyn, dyn>> e = x * 2.0f;
  auto se = tfm::softmax(x * 2.0f);
  static_assert(std::is_same_v<decltype(se),
                               tensor<float, shape<dyn, dyn>>>);  // expressions compute in float
  TFM_CHECK_BITWISE(tfm_test::to_vector(se), tfm_test::to_vector(tfm::softmax(e)));
  tensor<T, shape<dyn, dyn>> copy = x;
  TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::softmax(std::move(copy))),
                    tfm_test::to_vector(tfm::softmax(x)));
}

TEST_CASE("softmax/log_softmax: result types and empty inputs") {
  using std::is_same_v;
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  static_assert(is_same_v<decltype(tfm::softmax(a)), tensor<float, shape<2, 3>>>);
  static_assert(is_same_v<decltype(tfm::softmax<0>(a)), tensor<float, shape<2, 3>>>);
  static_assert(
      is_same_v<decltype(tfm::log_softmax(std::declval<tensor<tfm::bf16, shape<dyn, 8>>&>())),
                tensor<tfm::bf16, shape<dyn, 8>>>);
  static_assert(
      is_same_v<decltype(tfm::softmax(std::declval<tensor<double, shape<4>, tfm::reference>&>())),
                tensor<double, shape<4>, tfm::reference>>);
  // Exact values on a tiny case: softmax of equal entries.
  tensor<float, shape<4>> eq{7, 7, 7, 7};
  for (float v : tfm_test::to_vector(tfm::softmax(eq))) CHECK(v == 0.25f);
  tensor<float, shape<dyn, dyn>> e0(0, 5), e1(3, 0);
  CHECK(tfm::softmax(e0).shape().to_string() == "(0, 5)");
  CHECK(tfm::log_softmax(e1).shape().to_string() == "(3, 0)");
  CHECK(tfm::softmax<0>(e0).shape().to_string() == "(0, 5)");
  CHECK(tfm::softmax<0>(e1).shape().to_string() == "(3, 0)");
}
