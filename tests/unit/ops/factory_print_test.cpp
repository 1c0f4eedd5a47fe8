// Factories (core/factory.hpp): zeros, full, arange (values, empty, errors); randn and
// rand_uniform (reproducible per seed, different across seeds, same on 1 and 2 threads, filled in
// pieces with offsets equal to one fill, moments within statistical bounds). Printing
// (core/print.hpp): exact strings for small tensors, rank 0 as a bare number, the final newline,
// NumPy-style elision for large ones. item() and the rank-0 conversion of tensors and views.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops_test_util.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/core/factory.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/print.hpp"
#include "typeformer/core/view.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

// ---- zeros / full / arange ---------------------------------------------------------------------

TEST_CASE("factory: zeros and full") {
  auto z = tfm::zeros<float>(shape<2, 3>{});
  static_assert(std::is_same_v<decltype(z), tensor<float, shape<2, 3>>>);
  for (float v : tfm_test::to_vector(z)) CHECK(v == 0);
  auto zr = tfm::zeros<double, tfm::reference>(shape<dyn>(5));
  static_assert(std::is_same_v<decltype(zr), tensor<double, shape<dyn>, tfm::reference>>);
  CHECK(zr.size() == 5);
  for (double v : tfm_test::to_vector(zr)) CHECK(v == 0);
  CHECK(tfm::zeros<float>(shape<dyn, dyn>(0, 3)).size() == 0);

  auto f = tfm::full<tfm::bf16>(shape<dyn, dyn>(3, 4), 1.5f);
  static_assert(std::is_same_v<decltype(f), tensor<tfm::bf16, shape<dyn, dyn>>>);
  CHECK(f.shape().to_string() == "(3, 4)");
  for (auto v : tfm_test::to_vector(f)) CHECK(static_cast<float>(v) == 1.5f);
  auto fi = tfm::full<std::int32_t>(shape<4>{}, 7);
  for (auto v : tfm_test::to_vector(fi)) CHECK(v == 7);
  auto f0 = tfm::full<double>(shape<>{}, 2.5);
  CHECK(f0() == 2.5);
  // Rounding to the element type happens once: 0.1 in f16.
  auto fh = tfm::full<tfm::f16>(shape<2>{}, 0.1f);
  CHECK(static_cast<float>(fh(1)) == static_cast<float>(tfm::f16(0.1f)));
  CHECK(tfm::full<float>(shape<dyn>(0), 1.0f).size() == 0);
}

TEST_CASE("factory: arange values, empty ranges and errors") {
  auto a = tfm::arange<float>(5);
  static_assert(std::is_same_v<decltype(a), tensor<float, shape<dyn>>>);
  CHECK(tfm_test::to_vector(a) == std::vector<float>{0, 1, 2, 3, 4});
  CHECK(tfm::arange<float>(0).size() == 0);
  CHECK(tfm::arange<std::int32_t>(1).size() == 1);
  CHECK(tfm_test::to_vector(tfm::arange<double>(0, 1, 0.25)) ==
        std::vector<double>{0, 0.25, 0.5, 0.75});
  CHECK(tfm_test::to_vector(tfm::arange<float>(5, 0, -1)) == std::vector<float>{5, 4, 3, 2, 1});
  CHECK(tfm_test::to_vector(tfm::arange<std::int32_t>(0, 10, 3)) ==
        std::vector<std::int32_t>{0, 3, 6, 9});
  CHECK(tfm_test::to_vector(tfm::arange<std::int32_t>(-3, 3, 2)) ==
        std::vector<std::int32_t>{-3, -1, 1});
  CHECK(tfm::arange<float>(2, 2).size() == 0);
  CHECK(tfm::arange<float>(3, 1).size() == 0);  // stop below start with a positive step
  CHECK(tfm::arange<float>(1, 3, -1).size() == 0);
  // NumPy: arange(0, 1, 0.1) has 10 elements, the last 0.9 (as start + i * step).
  auto t = tfm::arange<double>(0, 1, 0.1);
  REQUIRE(t.size() == 10);
  for (index_t i = 0; i < 10; ++i) CHECK(t(i) == 0.1 * static_cast<double>(i));
  auto h = tfm::arange<tfm::bf16>(4);
  for (index_t i = 0; i < 4; ++i) CHECK(static_cast<float>(h(i)) == static_cast<float>(i));
  auto r = tfm::arange<float, tfm::reference>(3);
  static_assert(std::is_same_v<decltype(r), tensor<float, shape<dyn>, tfm::reference>>);

  CHECK_THROWS_AS(tfm::arange<float>(-1), tfm::value_error);
  CHECK_THROWS_WITH_AS(tfm::arange<float>(-5), doctest::Contains("-5"), tfm::value_error);
  CHECK_THROWS_AS(tfm::arange<double>(1, 2, 0), tfm::value_error);
  CHECK_THROWS_WITH_AS(tfm::arange<float>(0, 1, 0), doctest::Contains("step"), tfm::value_error);
  CHECK_THROWS_AS(tfm::arange<std::int32_t>(0, 5, 0), tfm::value_error);
}

// ---- random tensors ----------------------------------------------------------------------------

namespace {
template <class T>
std::vector<double> vals(const T& t) {
  return doubles(t);
}

struct moments {
  double mean = 0, var = 0, kurt = 0, lag1 = 0, min = 0, max = 0;
};
inline moments moments_of(const std::vector<double>& v) {
  moments m;
  const double n = static_cast<double>(v.size());
  long double s = 0;
  m.min = m.max = v[0];
  for (double x : v) {
    s += x;
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
  }
  m.mean = static_cast<double>(s / n);
  long double s2 = 0, s4 = 0, c1 = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const long double d = v[i] - m.mean;
    s2 += d * d;
    s4 += d * d * d * d;
    if (i + 1 < v.size()) c1 += d * (v[i + 1] - m.mean);
  }
  m.var = static_cast<double>(s2 / n);
  m.kurt = static_cast<double>((s4 / n) / ((s2 / n) * (s2 / n)));
  m.lag1 = static_cast<double>(c1 / s2);
  return m;
}
}  // namespace

TEST_CASE_TEMPLATE(
    "factory: randn/rand_uniform are reproducible, seed-dependent, thread-independent", T, float,
    double) {
  const std::uint64_t seed = tfm_test::seed();
  const shape<dyn> s(100000);  // several 16384-element fill chunks
  auto a = tfm::randn<T>(s, seed);
  auto b = tfm::randn<T>(s, seed);
  TFM_CHECK_BITWISE(tfm_test::to_vector(a), tfm_test::to_vector(b));
  auto c = tfm::randn<T>(s, seed + 1);
  std::size_t same = 0;
  for (index_t i = 0; i < s.size(); ++i) same += a(i) == c(i) ? 1 : 0;
  CHECK(same < 10);
  auto u = tfm::rand_uniform<T>(s, seed);
  auto u2 = tfm::rand_uniform<T>(s, seed + 1);
  same = 0;
  for (index_t i = 0; i < s.size(); ++i) same += u(i) == u2(i) ? 1 : 0;
  CHECK(same < 10);
  // Different seeds in the high 32 bits also differ.
  auto hi = tfm::randn<T>(s, seed ^ (std::uint64_t{1} << 40));
  CHECK(tfm_test::bitwise_diff(tfm_test::to_vector(a), tfm_test::to_vector(hi)) != "");

  std::vector<T> n1, n2, u1, uu2;
  {
    tfm::thread_scope ts(1);
    n1 = tfm_test::to_vector(tfm::randn<T>(s, seed, T(2), T(-1)));
    u1 = tfm_test::to_vector(tfm::rand_uniform<T>(s, seed, T(-3), T(5)));
  }
  {
    tfm::thread_scope ts(2);
    n2 = tfm_test::to_vector(tfm::randn<T>(s, seed, T(2), T(-1)));
    uu2 = tfm_test::to_vector(tfm::rand_uniform<T>(s, seed, T(-3), T(5)));
  }
  TFM_CHECK_BITWISE(n1, n2);
  TFM_CHECK_BITWISE(u1, uu2);

  // Filled in pieces with offsets == filled at once (piece boundaries not multiples of 4).
  const index_t p1 = 12345, p2 = 40001;
  auto whole_n = tfm::randn<T>(shape<dyn>(p1 + p2), seed, T(1), T(0));
  auto whole_u = tfm::rand_uniform<T>(shape<dyn>(p1 + p2), seed, T(0), T(1));
  auto first_n = tfm::randn<T>(shape<dyn>(p1), seed, T(1), T(0), 0);
  auto second_n = tfm::randn<T>(shape<dyn>(p2), seed, T(1), T(0), static_cast<std::uint64_t>(p1));
  auto first_u = tfm::rand_uniform<T>(shape<dyn>(p1), seed, T(0), T(1), 0);
  auto second_u =
      tfm::rand_uniform<T>(shape<dyn>(p2), seed, T(0), T(1), static_cast<std::uint64_t>(p1));
  auto cat = [](auto x, const auto& y) {
    x.insert(x.end(), y.begin(), y.end());
    return x;
  };
  TFM_CHECK_BITWISE(cat(tfm_test::to_vector(first_n), tfm_test::to_vector(second_n)),
                    tfm_test::to_vector(whole_n));
  TFM_CHECK_BITWISE(cat(tfm_test::to_vector(first_u), tfm_test::to_vector(second_u)),
                    tfm_test::to_vector(whole_u));
  // The shape does not matter, only the element index: a (dyn, 7) tensor is the same sequence.
  auto m = tfm::randn<T>(shape<dyn, 7>(1000), seed);
  auto flat = tfm::randn<T>(shape<dyn>(7000), seed);
  TFM_CHECK_BITWISE(tfm_test::to_vector(m), tfm_test::to_vector(flat));
  // Element i is the documented scalar draw at index offset + i.
  for (index_t i : {0, 1, 2, 3, 4, 5, 99999}) {
    if constexpr (std::is_same_v<T, float>) {
      CHECK(a(i) == tfm::normal_float(seed, static_cast<std::uint64_t>(i)));
      CHECK(u(i) == tfm::uniform_float(seed, static_cast<std::uint64_t>(i)));
    } else {
      CHECK(a(i) == tfm::normal_double(seed, static_cast<std::uint64_t>(i)));
      CHECK(u(i) == tfm::uniform_double(seed, static_cast<std::uint64_t>(i)));
    }
  }
}

TEST_CASE_TEMPLATE("factory: randn/rand_uniform moments within statistical bounds", T, float,
                   double) {
  const std::uint64_t seed = tfm_test::seed();
  const double n = 1e6;
  // Bounds at 6 standard errors of each statistic (a false alarm about once in 10^8 runs).
  {
    const auto m = moments_of(vals(tfm::randn<T>(shape<dyn>(1000000), seed)));
    INFO("randn mean ", m.mean, " var ", m.var, " kurtosis ", m.kurt, " lag-1 corr ", m.lag1);
    CHECK(std::fabs(m.mean) < 6 / std::sqrt(n));
    CHECK(std::fabs(m.var - 1) < 6 * std::sqrt(2 / n));
    CHECK(std::fabs(m.kurt - 3) < 6 * std::sqrt(24 / n));
    CHECK(std::fabs(m.lag1) < 6 / std::sqrt(n));
    CHECK(m.max < 9);
    CHECK(m.min > -9);
  }
  {
    const auto m = moments_of(vals(tfm::randn<T>(shape<dyn, 1000>(1000), seed + 7, T(0.02), T(3))));
    INFO("randn(0.02, 3) mean ", m.mean, " var ", m.var);
    CHECK(std::fabs(m.mean - 3) < 6 * 0.02 / std::sqrt(n));
    CHECK(std::fabs(std::sqrt(m.var) - 0.02) < 0.02 * 6 * std::sqrt(0.5 / n));
  }
  {
    const auto v = vals(tfm::rand_uniform<T>(shape<dyn>(1000000), seed, T(-1), T(3)));
    const auto m = moments_of(v);
    INFO("rand_uniform(-1, 3) mean ", m.mean, " var ", m.var);
    CHECK(std::fabs(m.mean - 1) < 6 * std::sqrt(16.0 / 12 / n));
    CHECK(std::fabs(m.var - 16.0 / 12) <
          6 * std::sqrt((256.0 / 80 - (16.0 / 12) * (16.0 / 12)) / n));
    CHECK(m.min >= -1);
    CHECK(m.max < 3);
    CHECK(std::fabs(m.lag1) < 6 / std::sqrt(n));
    // 16 equal bins: each count within 6 binomial standard deviations of n / 16.
    std::vector<double> bins(16, 0);
    for (double x : v) bins[static_cast<std::size_t>(std::min(15.0, (x + 1) / 4 * 16))] += 1;
    const double p = 1.0 / 16, sd = std::sqrt(n * p * (1 - p));
    for (double c : bins) CHECK(std::fabs(c - n * p) < 6 * sd);
  }
}

TEST_CASE_TEMPLATE("factory: bf16/f16 random tensors are the float draws rounded once", T,
                   tfm::bf16, tfm::f16) {
  const std::uint64_t seed = tfm_test::seed();
  auto h = tfm::randn<T>(shape<dyn, 33>(100), seed, 0.5f, 1.0f);
  auto f = tfm::randn<float>(shape<dyn, 33>(100), seed, 0.5f, 1.0f);
  auto hu = tfm::rand_uniform<T>(shape<dyn>(3000), seed, -2.0f, 2.0f, 17);
  auto fu = tfm::rand_uniform<float>(shape<dyn>(3000), seed, -2.0f, 2.0f, 17);
  static_assert(std::is_same_v<decltype(h), tensor<T, shape<dyn, 33>>>);
  for (index_t i = 0; i < 100; ++i)
    for (index_t j = 0; j < 33; ++j)
      REQUIRE(tfm_test::bits_of(h(i, j)) == tfm_test::bits_of(T(f(i, j))));
  for (index_t i = 0; i < 3000; ++i)
    REQUIRE(tfm_test::bits_of(hu(i)) == tfm_test::bits_of(T(fu(i))));
  auto r = tfm::randn<float, tfm::reference>(shape<4>{}, seed);
  static_assert(std::is_same_v<decltype(r), tensor<float, shape<4>, tfm::reference>>);
  CHECK(r(3) == tfm::normal_float(seed, 3));
}

// ---- printing ----------------------------------------------------------------------------------

TEST_CASE("print: exact output for small tensors") {
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  CHECK(tfm::to_string(a) == "tensor<f32> (2, 3)\n[[1, 2, 3],\n [4, 5, 6]]\n");
  std::ostringstream os;
  os << a;
  CHECK(os.str() == tfm::to_string(a));
  CHECK(tfm::to_string(tfm::transpose(a)) == "tensor<f32> (3, 2)\n[[1, 4],\n [2, 5],\n [3, 6]]\n");
  CHECK(tfm::to_string(tfm::slice<1>(a, 0, 3, 2)) == "tensor<f32> (2, 2)\n[[1, 3],\n [4, 6]]\n");

  tensor<float, shape<2, 2, 2>> c;
  for (index_t i = 0; i < 8; ++i) c.data()[i] = static_cast<float>(i);
  CHECK(tfm::to_string(c) ==
        "tensor<f32> (2, 2, 2)\n[[[0, 1],\n  [2, 3]],\n\n [[4, 5],\n  [6, 7]]]\n");

  CHECK(tfm::to_string(tensor<std::int32_t, shape<3>>{1, -2, 3}) ==
        "tensor<i32> (3,)\n[1, -2, 3]\n");
  CHECK(tfm::to_string(tensor<std::int8_t, shape<2>>{-3, 65}) == "tensor<i8> (2,)\n[-3, 65]\n");
  tensor<tfm::bf16, shape<2>> h{tfm::bf16(1.5f), tfm::bf16(-0.25f)};
  CHECK(tfm::to_string(h) == "tensor<bf16> (2,)\n[1.5, -0.25]\n");
  tensor<tfm::f16, shape<1>> hf{tfm::f16(0.5f)};
  CHECK(tfm::to_string(hf) == "tensor<f16> (1,)\n[0.5]\n");
  // Six significant digits by default.
  tensor<float, shape<5>> p{1.0f / 3, 1e-7f, 1e6f, 123456789.0f, -2.0f / 3};
  CHECK(tfm::to_string(p) ==
        "tensor<f32> (5,)\n[0.333333, 1e-07, 1e+06, 1.23457e+08, -0.666667]\n");
  tensor<double, shape<2>> sp{std::numeric_limits<double>::infinity(), -0.0};
  CHECK(tfm::to_string(sp) == "tensor<f64> (2,)\n[inf, -0]\n");
  // Empty tensors.
  CHECK(tfm::to_string(tensor<float, shape<dyn>>(0)) == "tensor<f32> (0,)\n[]\n");
  CHECK(tfm::to_string(tensor<float, shape<dyn, dyn>>(2, 0)) == "tensor<f32> (2, 0)\n[[],\n []]\n");
  CHECK(tfm::to_string(tensor<float, shape<dyn, dyn>>(0, 2)) == "tensor<f32> (0, 2)\n[]\n");
}

TEST_CASE("print: rank 0 is a bare number; rank >= 1 ends with a newline") {
  // Rank 0 prints like the number itself (no type line, no newline), in every element type.
  tensor<float, shape<>> f;
  f() = 0.123f;
  CHECK(tfm::to_string(f) == "0.123");
  tensor<double, shape<>> d;
  d() = 2.5;
  CHECK(tfm::to_string(d) == "2.5");
  d() = 1.0 / 3;
  CHECK(tfm::to_string(d) == "0.333333");  // six significant digits, as std::cout prints
  tensor<tfm::bf16, shape<>> b;
  b() = tfm::bf16(-1.5f);
  CHECK(tfm::to_string(b) == "-1.5");
  tensor<std::int32_t, shape<>> i;
  i() = -42;
  CHECK(tfm::to_string(i) == "-42");
  tensor<std::int8_t, shape<>> i8;
  i8() = 65;
  CHECK(tfm::to_string(i8) == "65");  // a number, not the character 'A'
  std::ostringstream os;
  os << "loss " << f.view() << " at step " << 3 << "\n";
  CHECK(os.str() == "loss 0.123 at step 3\n");
  // Rank 1 and 2 end with exactly one newline, so `std::cout << a << b` keeps them apart.
  tensor<float, shape<2>> v{1, 2};
  tensor<float, shape<1, 2>> m{{3, 4}};
  std::ostringstream two;
  two << v << m;
  CHECK(two.str() == "tensor<f32> (2,)\n[1, 2]\ntensor<f32> (1, 2)\n[[3, 4]]\n");
}

TEST_CASE("item: the only element of a rank-0 or one-element tensor or view") {
  tensor<float, shape<>> s;
  s() = 0.25f;
  CHECK(s.item() == 0.25f);
  CHECK(s.view().item() == 0.25f);
  static_assert(std::is_same_v<decltype(s.item()), float>);
  static_assert(std::is_same_v<decltype(std::as_const(s).view().item()), float>);
  // The explicit conversion (rank 0 only); it is not implicit.
  CHECK(static_cast<float>(s) == 0.25f);
  CHECK(static_cast<float>(s.view()) == 0.25f);
  static_assert(!std::is_convertible_v<tensor<float, shape<>>, float>);
  static_assert(std::is_constructible_v<float, tensor<float, shape<>>>);
  static_assert(!std::is_constructible_v<float, tensor<float, shape<1>>>);
  tensor<tfm::bf16, shape<>> h;
  h() = tfm::bf16(3.0f);
  static_assert(std::is_same_v<decltype(h.item()), tfm::bf16>);
  CHECK(static_cast<float>(h.item()) == 3.0f);
  tensor<std::int32_t, shape<>> n;
  n() = 7;
  CHECK(n.item() == 7);
  CHECK(static_cast<std::int32_t>(n) == 7);

  // Any shape holding exactly one element: static (1, 1), dynamic (1, 1), a one-element view
  // with strides of a bigger tensor (the element at (2, 1) of a 3 x 4 matrix).
  tensor<double, shape<1, 1>> one{{-4.5}};
  CHECK(one.item() == -4.5);
  tensor<double, shape<dyn, dyn>> dm(1, 1);
  dm(0, 0) = 9.0;
  CHECK(dm.item() == 9.0);
  auto a = tfm::arange<float>(12);
  auto a2 = tfm::reshape(a.view(), shape<3, 4>{});
  auto cell = tfm::slice<1>(tfm::slice<0>(a2, 2, 3), 1, 2);  // (1, 1) at row 2, column 1
  CHECK(cell.item() == 9.0f);

  // A dynamic shape of another size: tfm::shape_error naming the shape and the count.
  tensor<float, shape<dyn, dyn>> big(2, 3);
  CHECK_THROWS_WITH_AS(big.item(),
                       "tfm::tensor: item() needs exactly one element, but the shape (2, 3) "
                       "holds 6; read an element with operator()(i, ...) instead.",
                       tfm::shape_error);
  CHECK_THROWS_AS(big.view().item(), tfm::shape_error);
  CHECK_THROWS_AS((tensor<float, shape<dyn>>(0).item()), tfm::shape_error);
  // A static shape that cannot hold one element does not offer item() (static_assert).
  static_assert(!tfm::detail::may_hold_one_element<shape<2, 3>>);
  static_assert(!tfm::detail::may_hold_one_element<shape<dyn, 3>>);
  static_assert(tfm::detail::may_hold_one_element<shape<1, dyn>>);
  static_assert(tfm::detail::may_hold_one_element<shape<>>);
}

TEST_CASE("print: options and stream state") {
  tensor<float, shape<10>> x;
  for (index_t i = 0; i < 10; ++i) x(i) = static_cast<float>(i) / 3;
  tfm::print_options o;
  o.edge_items = 1;
  o.threshold = 5;
  o.precision = 3;
  CHECK(tfm::to_string(x, o) == "tensor<f32> (10,)\n[0, ..., 3]\n");
  o.edge_items = 2;
  CHECK(tfm::to_string(x, o) == "tensor<f32> (10,)\n[0, 0.333, ..., 2.67, 3]\n");
  o.threshold = 10;  // 10 elements is not more than the threshold: no elision
  CHECK(tfm::to_string(x, o) ==
        "tensor<f32> (10,)\n[0, 0.333, 0.667, 1, 1.33, 1.67, 2, 2.33, 2.67, 3]\n");
  // The stream's precision and flags are restored.
  std::ostringstream os;
  os.precision(10);
  os << std::hex;
  tfm::print(os, x, o);
  CHECK(os.precision() == 10);
  CHECK((os.flags() & std::ios::hex) != 0);
  os.str("");
  os << 1.0 / 3;
  CHECK(os.str() == "0.3333333333");
}

namespace {
/// NumPy-style elided rendering of a row-major (rows, cols) array of integers written out
/// directly (edge 3, elide both axes): an independent formatter for the check below.
std::string elided_matrix(index_t rows, index_t cols) {
  auto idx = [](index_t n) {
    std::vector<index_t> v;
    for (index_t i = 0; i < n; ++i)
      if (n <= 6 || i < 3 || i >= n - 3) v.push_back(i);
    return v;
  };
  std::string s = "[";
  const auto ri = idx(rows), ci = idx(cols);
  for (std::size_t a = 0; a < ri.size(); ++a) {
    if (a == 3 && rows > 6) s += "...,\n ";
    s += "[";
    for (std::size_t b = 0; b < ci.size(); ++b) {
      if (b == 3 && cols > 6) s += "..., ";
      s += std::to_string(ri[a] * cols + ci[b]);
      if (b + 1 < ci.size()) s += ", ";
    }
    s += "]";
    if (a + 1 < ri.size()) s += ",\n ";
  }
  return s + "]";
}
}  // namespace

TEST_CASE("print: elision of large tensors") {
  auto a = tfm::arange<float>(2000);
  CHECK(tfm::to_string(a) == "tensor<f32> (2000,)\n[0, 1, 2, ..., 1997, 1998, 1999]\n");
  // Exactly at the threshold (1000 elements): printed in full.
  auto b = tfm::arange<std::int32_t>(1000);
  const std::string sb = tfm::to_string(b);
  CHECK(sb.find("...") == std::string::npos);
  CHECK(sb.find(", 500, 501, ") != std::string::npos);
  tensor<std::int32_t, shape<dyn, dyn>> m(40, 40);
  for (index_t i = 0; i < 1600; ++i) m.data()[i] = static_cast<std::int32_t>(i);
  CHECK(tfm::to_string(m) == "tensor<i32> (40, 40)\n" + elided_matrix(40, 40) + "\n");
  tensor<std::int32_t, shape<dyn, dyn>> tall(500, 4);  // only the long axis is elided
  for (index_t i = 0; i < 2000; ++i) tall.data()[i] = static_cast<std::int32_t>(i);
  CHECK(tfm::to_string(tall) == "tensor<i32> (500, 4)\n" + elided_matrix(500, 4) + "\n");
}
