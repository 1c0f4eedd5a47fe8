// Broadcasting (NumPy rules): row, column and scalar operands, size-1 axes, missing leading
// axes, static and dynamic extents. The result must equal, bit for bit, the same expression on
// operands expanded explicitly (by index arithmetic in the test) into contiguous tensors, and the
// oracle. Dynamic mismatches throw tfm::shape_error whose message names both shapes.
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;

namespace {

/// x (shape sx, row-major values v) expanded to `out` extents (right-aligned NumPy broadcast).
template <class T, std::size_t RX, std::size_t R>
std::vector<T> expand(const std::vector<T>& v, const std::array<index_t, RX>& sx,
                      const std::array<index_t, R>& out) {
  static_assert(RX <= R);
  index_t total = 1;
  for (auto e : out) total *= e;
  std::vector<T> r(static_cast<std::size_t>(total));
  std::array<index_t, R> idx{};
  for (index_t lin = 0; lin < total; ++lin) {
    index_t rem = lin;
    for (std::size_t a = R; a-- > 0;) {
      idx[a] = rem % out[a];
      rem /= out[a];
    }
    index_t off = 0;
    for (std::size_t a = 0; a < RX; ++a) {
      const index_t i = sx[a] == 1 ? 0 : idx[R - RX + a];
      off = off * sx[a] + i;
    }
    r[static_cast<std::size_t>(lin)] = v[static_cast<std::size_t>(off)];
  }
  return r;
}

/// a (shape SA) op b (shape SB) for the exact expression (a - b) * b, checked three ways.
template <class T, class SA, class SB>
void check_pair(const SA& sa, const SB& sb, std::mt19937& g) {
  using TA = tensor<T, SA>;
  using TB = tensor<T, SB>;
  const auto va = tfm_test::random_vector<T>(static_cast<std::size_t>(sa.size()), g, -4, 4);
  const auto vb = tfm_test::random_vector<T>(static_cast<std::size_t>(sb.size()), g, -4, 4);
  auto a = tfm_test::make_tensor<TA>(sa, va);
  auto b = tfm_test::make_tensor<TB>(sb, vb);
  auto out_shape = tfm::broadcast_shapes(sa, sb);
  using SO = decltype(out_shape);
  INFO(sa.to_string() << " with " << sb.to_string() << " -> " << out_shape.to_string() << " dtype "
                      << std::string(tfm::dtype_name<T>()));

  tensor<T, SO> got = (a - b) * b;
  tensor<T, SO, tfm::reference> got_ref = (a - b) * b;
  tensor<T, SO> got_swapped = b * (a - b);  // operand order and broadcast side swapped
  CHECK(got.shape() == out_shape);

  // Explicitly broadcast contiguous operands, same expression.
  const auto ea = expand(va, sa.extents(), out_shape.extents());
  const auto eb = expand(vb, sb.extents(), out_shape.extents());
  using TO = tensor<T, tfm::dyn_shape<SO::rank>>;
  auto full_shape = tfm::dyn_shape<SO::rank>::from_extents(out_shape.extents());
  auto fa = tfm_test::make_tensor<TO>(full_shape, ea);
  auto fb = tfm_test::make_tensor<TO>(full_shape, eb);
  TO full = (fa - fb) * fb;

  std::vector<T> want(ea.size());
  using C = tfm::compute_t<T>;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const C x = static_cast<C>(ea[i]), y = static_cast<C>(eb[i]);
    const C d = x - y;
    want[i] = tfm::to_storage<T>(d * y);
  }
  const auto vg = tfm_test::to_vector(got);
  TFM_CHECK_BITWISE(vg, tfm_test::to_vector(full));
  TFM_CHECK_BITWISE(vg, want);
  TFM_CHECK_BITWISE(tfm_test::to_vector(got_ref), want);
  TFM_CHECK_BITWISE(tfm_test::to_vector(got_swapped), want);
}

template <class T>
void all_pairs(std::mt19937& g) {
  // row vector
  check_pair<T>(shape<5, 17>{}, shape<17>{}, g);
  check_pair<T>(shape<dyn, dyn>(6, 33), shape<dyn>(33), g);
  check_pair<T>(shape<dyn, dyn>(6, 33), shape<1, dyn>(33), g);
  // column vector
  check_pair<T>(shape<7, 16>{}, shape<7, 1>{}, g);
  check_pair<T>(shape<dyn, dyn>(9, 31), shape<dyn, 1>(9), g);
  // scalar-shaped tensor and rank 0
  check_pair<T>(shape<4, 8>{}, shape<>{}, g);
  check_pair<T>(shape<dyn, dyn>(3, 129), shape<1, 1>{}, g);
  // outer product: both sides broadcast
  check_pair<T>(shape<dyn, 1>(15), shape<1, dyn>(17), g);
  // size-1 axes in the middle, missing leading axes
  check_pair<T>(shape<4, 1, 5>{}, shape<1, 3, 1>{}, g);
  check_pair<T>(shape<2, 3, 4, 5>{}, shape<4, 5>{}, g);
  check_pair<T>(shape<dyn, 3, dyn, 17>(2, 4), shape<dyn, 1, 17>(3), g);
  check_pair<T>(shape<dyn, dyn, dyn>(2, 1, 9), shape<dyn, dyn>(5, 1), g);
  // broadcast against an empty axis
  check_pair<T>(shape<dyn, 4>(0), shape<4>{}, g);
  // large: OpenMP path with a broadcast row
  check_pair<T>(shape<dyn, dyn>(257, 1025), shape<dyn>(1025), g);
}

}  // namespace

TEST_CASE("broadcasting equals the explicitly broadcast contiguous computation, bitwise") {
  auto g = tfm_test::rng(0xb40a);
  SUBCASE("f32") { all_pairs<float>(g); }
  SUBCASE("f64") { all_pairs<double>(g); }
  SUBCASE("bf16") { all_pairs<tfm::bf16>(g); }
  SUBCASE("i32") { all_pairs<std::int32_t>(g); }
}

TEST_CASE("scalar operands broadcast on either side and in every dtype") {
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  tensor<float, shape<2, 3>> r = 10.0f - a * 2;
  CHECK(tfm_test::to_vector(r) == std::vector<float>{8, 6, 4, 2, 0, -2});
  tensor<float, shape<2, 3>> q = 1.0 / a;
  CHECK(q(1, 1) == 1.0f / 5.0f);
  tensor<std::int32_t, shape<3>> i{1, 2, 3};
  tensor<std::int32_t, shape<3>> j = tfm::where(i > 1, i * 10, -1);
  CHECK(tfm_test::to_vector(j) == std::vector<std::int32_t>{-1, 20, 30});
  tensor<float, shape<>> s;
  s() = 4.0f;
  tensor<float, shape<2, 3>> t = a + s;  // rank-0 tensor broadcasts like a scalar
  CHECK(t(1, 2) == 10.0f);
}

TEST_CASE("dynamic broadcast mismatches throw shape_error naming both shapes") {
  tensor<float, shape<dyn, dyn>> a(3, 4), b(5, 4), c(3, 5);
  auto expect_names = [](auto&& fn, const std::string& s1, const std::string& s2) {
    try {
      fn();
      FAIL("no exception");
    } catch (const tfm::shape_error& e) {
      const std::string w = e.what();
      CHECK_MESSAGE(w.find(s1) != std::string::npos, w);
      CHECK_MESSAGE(w.find(s2) != std::string::npos, w);
    }
  };
  expect_names([&] { (void)(a + b); }, "(3, 4)", "(5, 4)");
  expect_names([&] { (void)(a * c); }, "(3, 4)", "(3, 5)");
  expect_names([&] { (void)tfm::where(a, a, c); }, "(3, 4)", "(3, 5)");
  // A mismatch deep inside a tree is found when the tree is built.
  expect_names([&] { (void)(tfm::exp(a) + (a - 1.0f) * c); }, "(3, 4)", "(3, 5)");
  // Assigning to a view keeps the view's shape: the expression must broadcast to it.
  auto v = a.view();
  expect_names([&] { v = c; }, "(3, 5)", "(3, 4)");
  expect_names([&] { v = a + 1.0f + b; }, "(3, 4)", "(5, 4)");
  // The expression broadcasts into a larger view; not the reverse.
  tensor<float, shape<dyn>> row(4);
  row.fill(2.0f);
  CHECK_NOTHROW(v = row);
  CHECK(a(2, 3) == 2.0f);
  // (row.view() = a, a rank-2 expression into a rank-1 view, is a compile error: see
  // tests/compile_fail/cases/view_rank.cpp.)
  tensor<float, shape<dyn>> row5(5);
  CHECK_THROWS_AS(row5.view() = row, tfm::shape_error);
  // Static destination, dynamic expression of the wrong size.
  tensor<float, shape<3, 4>> fixed;
  CHECK_THROWS_AS(fixed = c + 1.0f, tfm::shape_error);
  CHECK_NOTHROW(fixed = a * 2.0f);
  CHECK(fixed(2, 3) == 4.0f);
}

TEST_CASE("assigning into a broadcast (stride-0) view throws") {
  tensor<float, shape<1, 4>> r;
  auto b = tfm::broadcast_to(r, shape<3, 4>{});
  CHECK_THROWS_AS(b = 1.0f, tfm::shape_error);
  tensor<float, shape<3, 4>> x;
  CHECK_THROWS_AS(b = x, tfm::shape_error);
  try {
    b = x + 1.0f;
    FAIL("no exception");
  } catch (const tfm::shape_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find("stride 0") != std::string::npos, w);
  }
  // A stride-0 axis of extent 1 (unsqueeze) is writable.
  tensor<float, shape<4>> u;
  auto uv = tfm::unsqueeze<0>(u);
  CHECK_NOTHROW(uv = 5.0f);
  CHECK(u(3) == 5.0f);
}
