// Views: transpose, permute, slice (runtime and static bounds, steps), select, unsqueeze,
// reshape, broadcast_to and hand-made strided views. Every element is checked against index
// arithmetic on the parent's row-major buffer; result types are checked with static_assert
// (static extents stay static where the operation allows). Errors: reshape of a non-contiguous
// view, slices and selects out of range, broadcasting to an incompatible shape.
#include <doctest/doctest.h>

#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;
using tfm::tensor_view;

namespace {
/// A tensor whose element at row-major position p is p (so values name their position).
template <class S>
tensor<float, S> iota_tensor(const S& s) {
  tensor<float, S> t(s);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(i);
  return t;
}
}  // namespace

TEST_CASE("transpose and permute: elements and static result types") {
  auto a = iota_tensor(shape<3, 5>{});
  auto t = tfm::transpose(a);
  static_assert(std::is_same_v<decltype(t), tensor_view<float, shape<5, 3>, tfm::cpu>>);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 3; ++j) CHECK(t(i, j) == static_cast<float>(j * 5 + i));
  CHECK(&t(4, 2) == &a(2, 4));
  CHECK_FALSE(t.is_contiguous());
  CHECK(tfm::transpose(t).is_contiguous());

  auto b = iota_tensor(shape<2, dyn, 4, 5>(3));
  auto p = tfm::permute<3, 1, 0, 2>(b);
  static_assert(std::is_same_v<decltype(p), tensor_view<float, shape<5, dyn, 2, 4>, tfm::cpu>>);
  CHECK(p.shape().extents() == std::array<index_t, 4>{5, 3, 2, 4});
  for (int i0 = 0; i0 < 2; ++i0)
    for (int i1 = 0; i1 < 3; ++i1)
      for (int i2 = 0; i2 < 4; ++i2)
        for (int i3 = 0; i3 < 5; ++i3)
          CHECK(p(i3, i1, i0, i2) == static_cast<float>(((i0 * 3 + i1) * 4 + i2) * 5 + i3));

  // transpose of rank 3 and 4 swaps the last two axes.
  auto c = iota_tensor(shape<2, 3, 4>{});
  auto ct = tfm::transpose(c);
  static_assert(std::is_same_v<decltype(ct)::shape_type, shape<2, 4, 3>>);
  CHECK(ct(1, 3, 2) == c(1, 2, 3));
  auto d = iota_tensor(shape<2, 1, 3, 4>{});
  static_assert(std::is_same_v<decltype(tfm::transpose(d))::shape_type, shape<2, 1, 4, 3>>);

  // const tensors give views of const elements.
  const auto& ca = a;
  static_assert(std::is_same_v<decltype(tfm::transpose(ca)),
                               tensor_view<const float, shape<5, 3>, tfm::cpu>>);
}

TEST_CASE("slice: runtime bounds with steps, static bounds keep the extent static") {
  auto a = iota_tensor(shape<6, 7>{});
  auto s = tfm::slice<1>(a, 1, 7, 2);  // columns 1, 3, 5
  static_assert(std::is_same_v<decltype(s)::shape_type, shape<6, dyn>>);
  CHECK(s.extent(1) == 3);
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 3; ++j) CHECK(s(i, j) == static_cast<float>(i * 7 + 1 + 2 * j));

  auto n = tfm::slice<-2>(a, 2, 5);  // negative axis: rows 2..4
  CHECK(n.extent(0) == 3);
  CHECK(n(0, 0) == 14.0f);
  auto st = tfm::slice<0, 1, 4>(a);
  static_assert(std::is_same_v<decltype(st)::shape_type, shape<3, 7>>);
  CHECK(st(2, 6) == static_cast<float>(3 * 7 + 6));
  auto st2 = tfm::slice<1, 2, 5>(st);  // slice of a slice
  static_assert(std::is_same_v<decltype(st2)::shape_type, shape<3, 3>>);
  CHECK(st2(1, 1) == static_cast<float>(2 * 7 + 3));

  auto e = tfm::slice<0>(a, 3, 3);
  CHECK(e.size() == 0);
  auto last = tfm::slice<1>(a, 6, 7, 5);
  CHECK(last.extent(1) == 1);
  CHECK(last(5, 0) == 41.0f);

  auto d = iota_tensor(shape<dyn, 4>(5));
  auto ds = tfm::slice<0, 1, 3>(d);  // static bounds on a dynamic axis: checked at run time
  static_assert(std::is_same_v<decltype(ds)::shape_type, shape<2, 4>>);
  CHECK(ds(1, 3) == 11.0f);
}

TEST_CASE("slice and select out of range throw index_error (a shape_error)") {
  auto a = iota_tensor(shape<4, 5>{});
  CHECK_THROWS_AS(tfm::slice<0>(a, 0, 5), tfm::index_error);
  CHECK_THROWS_AS(tfm::slice<1>(a, -1, 2), tfm::index_error);
  CHECK_THROWS_AS(tfm::slice<1>(a, 3, 2), tfm::shape_error);
  CHECK_THROWS_AS(tfm::slice<1>(a, 0, 2, 0), tfm::shape_error);
  CHECK_THROWS_AS(tfm::select<0>(a, 4), tfm::index_error);
  CHECK_THROWS_AS(tfm::select<1>(a, -1), tfm::index_error);
  auto d = iota_tensor(shape<dyn>(3));
  CHECK_THROWS_AS((tfm::slice<0, 1, 5>(d)), tfm::index_error);
  try {
    (void)tfm::slice<1>(a, 2, 9);
    FAIL("no exception");
  } catch (const tfm::index_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find("[2, 9)") != std::string::npos, w);
    CHECK_MESSAGE(w.find("extent 5") != std::string::npos, w);
  }
}

TEST_CASE("select drops an axis; unsqueeze inserts one") {
  auto a = iota_tensor(shape<3, dyn, 4>(5));
  auto s1 = tfm::select<1>(a, 2);
  static_assert(std::is_same_v<decltype(s1)::shape_type, shape<3, 4>>);
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 4; ++k) CHECK(s1(i, k) == static_cast<float>((i * 5 + 2) * 4 + k));
  auto s2 = tfm::select<-1>(a, 3);
  static_assert(std::is_same_v<decltype(s2)::shape_type, shape<3, dyn>>);
  CHECK(s2(2, 4) == static_cast<float>((2 * 5 + 4) * 4 + 3));
  auto s3 = tfm::select<0>(tfm::select<0>(s1, 1), 2);  // down to rank 0
  static_assert(decltype(s3)::rank == 0);
  CHECK(s3() == static_cast<float>((1 * 5 + 2) * 4 + 2));

  auto u = tfm::unsqueeze<1>(s1);
  static_assert(std::is_same_v<decltype(u)::shape_type, shape<3, 1, 4>>);
  CHECK(u(2, 0, 3) == s1(2, 3));
  auto u0 = tfm::unsqueeze<0>(a);
  static_assert(std::is_same_v<decltype(u0)::shape_type, shape<1, 3, dyn, 4>>);
  auto ue = tfm::unsqueeze<3>(a);
  static_assert(std::is_same_v<decltype(ue)::shape_type, shape<3, dyn, 4, 1>>);
  CHECK(ue(1, 4, 2, 0) == a(1, 4, 2));
}

TEST_CASE("reshape: contiguous views only, sizes must agree") {
  auto a = iota_tensor(shape<4, 6>{});
  auto r = tfm::reshape<shape<2, 3, 4>>(a);
  static_assert(std::is_same_v<decltype(r)::shape_type, shape<2, 3, 4>>);
  CHECK(r(1, 2, 3) == static_cast<float>(12 + 8 + 3));
  auto rd = tfm::reshape(a, shape<dyn, 8>(3));
  CHECK(rd(2, 7) == 23.0f);
  auto flat = tfm::reshape(r, shape<24>{});
  CHECK(flat(23) == 23.0f);
  // Contiguous slices (whole rows) reshape; a transposed or column-sliced view does not.
  auto rows = tfm::slice<0>(a, 1, 3);
  auto rr = tfm::reshape(rows, shape<12>{});
  CHECK(rr(0) == 6.0f);
  CHECK_THROWS_AS(tfm::reshape(tfm::transpose(a), shape<24>{}), tfm::shape_error);
  CHECK_THROWS_AS(tfm::reshape(tfm::slice<1>(a, 0, 3), shape<12>{}), tfm::shape_error);
  CHECK_THROWS_AS(tfm::reshape(a, shape<dyn>(25)), tfm::shape_error);
  try {
    (void)tfm::reshape(tfm::transpose(a), shape<dyn>(24));
    FAIL("no exception");
  } catch (const tfm::shape_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find("contiguous") != std::string::npos, w);
  }
  // Size-1 axes do not break contiguity.
  auto col = tfm::slice<1>(tfm::reshape<shape<24, 1>>(a), 0, 1);
  CHECK(tfm::reshape(col, shape<4, 6>{})(3, 5) == 23.0f);
}

TEST_CASE("broadcast_to: size-1 and missing axes repeat (stride 0)") {
  tensor<float, shape<3, 1>> c{{1}, {2}, {3}};
  auto b = tfm::broadcast_to(c, shape<2, 3, 4>{});
  static_assert(std::is_same_v<decltype(b)::shape_type, shape<2, 3, 4>>);
  CHECK(b.strides() == std::array<index_t, 3>{0, 1, 0});
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(b(i, j, k) == static_cast<float>(j + 1));
  auto d = iota_tensor(shape<dyn>(4));
  auto bd = tfm::broadcast_to(d, shape<dyn, dyn>(3, 4));
  CHECK(bd(2, 3) == 3.0f);
  CHECK_THROWS_AS(tfm::broadcast_to(d, shape<dyn, dyn>(3, 5)), tfm::shape_error);
  CHECK_THROWS_AS(tfm::broadcast_to(c, shape<dyn, dyn>(4, 2)), tfm::shape_error);
}

TEST_CASE("hand-made strided views (negative and padded strides) read the right elements") {
  auto a = iota_tensor(shape<4, 6>{});
  // Reverse the rows: start at the last row, stride -6.
  tensor_view<float, shape<4, 6>> rev(a.data() + 18, shape<4, 6>{}, {-6, 1});
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) CHECK(rev(i, j) == a(3 - i, j));
  // A 3x2 window with row stride 6 and column stride 2 (every other column).
  tensor_view<float, shape<dyn, dyn>> win(a.data() + 7, shape<dyn, dyn>(3, 2), {6, 2});
  CHECK(tfm_test::to_vector(win) == std::vector<float>{7, 9, 13, 15, 19, 21});
  // Views are windows: assigning through one writes the parent.
  win = 0.0f;
  CHECK(a(1, 1) == 0.0f);
  CHECK(a(3, 3) == 0.0f);
  CHECK(a(3, 4) == 22.0f);
  // Contiguous elementwise results of views equal the same computation on copies (bitwise).
  tensor<float, shape<4, 6>> r = rev * 2.0f + 1.0f;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) CHECK(r(i, j) == a(3 - i, j) * 2.0f + 1.0f);
}

TEST_CASE("views of views compose; view() of a view is the same view") {
  auto a = iota_tensor(shape<5, 6, 7>{});
  auto v = tfm::select<0>(tfm::transpose(tfm::slice<2>(a, 1, 7, 3)), 4);  // (2, 6)
  static_assert(std::is_same_v<decltype(v)::shape_type, shape<dyn, 6>>);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 6; ++j) CHECK(v(i, j) == a(4, j, 1 + 3 * i));
  auto vv = v.view();
  CHECK(vv.data() == v.data());
  tensor_view<const float, shape<dyn, 6>> cv = v;  // non-const -> const view
  CHECK(cv(1, 5) == v(1, 5));
}
