// tfm::shape at run time: extents, sizes, construction checks, broadcasting of dynamic shapes and
// its error sentence, reduce_shape, row-major strides. (Compile-time shape algebra is tested in
// tests/static/shape_algebra.)
#include <doctest/doctest.h>

#include <array>
#include <string>
#include <type_traits>

#include "typeformer/core/shape.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;

TEST_CASE("shape: extents, size and rank of static, dynamic and mixed shapes") {
  constexpr shape<4, 5, 6> s;
  static_assert(s.size() == 120 && s.extent(2) == 6 && s.rank == 3 && s.is_static);
  static_assert(sizeof(shape<4, 5, 6>) == 1);
  // A fully static shape stores nothing, so tensors and views of it pay nothing for it.
  static_assert(std::is_empty_v<shape<4, 5, 6>>);
  static_assert(std::is_empty_v<shape<>>);

  shape<4, dyn, 768> m(10);
  CHECK(m.extent(0) == 4);
  CHECK(m.extent(1) == 10);
  CHECK(m[2] == 768);
  CHECK(m.size() == 4 * 10 * 768);
  CHECK(m.extents() == std::array<index_t, 3>{4, 10, 768});
  CHECK(m.to_string() == "(4, 10, 768)");
  static_assert(decltype(m)::rank_dynamic == 1 && !decltype(m)::is_static);
  static_assert(decltype(m)::static_size == dyn);

  shape<dyn, dyn> d(0, 7);
  CHECK(d.size() == 0);
  CHECK(d.to_string() == "(0, 7)");

  shape<> r0;
  CHECK(r0.size() == 1);
  CHECK(r0.to_string() == "()");
  CHECK(shape<5>{}.to_string() == "(5,)");

  // A default dynamic shape is empty (its dynamic extents are 0).
  CHECK(shape<3, dyn>{}.size() == 0);
}

TEST_CASE("shape: construction rejects negative extents and values that contradict the type") {
  CHECK_THROWS_AS(shape<dyn>(-3), tfm::shape_error);
  CHECK_THROWS_AS((shape<4, dyn>::from_extents({5, 2})), tfm::shape_error);
  CHECK_THROWS_AS((shape<4, dyn>::from_extents({4, -2})), tfm::shape_error);
  try {
    (void)shape<4, dyn>::from_extents({5, 2});
    FAIL("no exception");
  } catch (const tfm::shape_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find("axis 0") != std::string::npos, w);
    CHECK_MESSAGE(w.find('4') != std::string::npos, w);
    CHECK_MESSAGE(w.find('5') != std::string::npos, w);
  }
  auto ok = shape<4, dyn>::from_extents({4, 9});
  CHECK(ok.extent(1) == 9);
}

TEST_CASE("shape: equality and same_extents across types") {
  CHECK(shape<dyn, 3>(2) == shape<dyn, 3>(2));
  CHECK_FALSE(shape<dyn, 3>(2) == shape<dyn, 3>(4));
  CHECK(tfm::same_extents(shape<2, 3>{}, shape<dyn, dyn>(2, 3)));
  CHECK_FALSE(tfm::same_extents(shape<2, 3>{}, shape<dyn, dyn>(3, 2)));
  CHECK_FALSE(tfm::same_extents(shape<2, 3>{}, shape<2, 3, 1>{}));
}

TEST_CASE("broadcast_shapes: NumPy rules on dynamic shapes") {
  auto b = tfm::broadcast_shapes(shape<dyn, 1>(4), shape<dyn>(5));
  static_assert(std::is_same_v<decltype(b), shape<dyn, dyn>>);
  CHECK(b.extents() == std::array<index_t, 2>{4, 5});

  auto c = tfm::broadcast_shapes(shape<dyn, dyn, dyn>(1, 3, 1), shape<dyn, dyn>(1, 7));
  CHECK(c.extents() == std::array<index_t, 3>{1, 3, 7});

  auto z = tfm::broadcast_shapes(shape<dyn>(0), shape<1>{});
  CHECK(z.extent(0) == 0);

  auto s = tfm::broadcast_shapes(shape<>{}, shape<dyn, 2>(3));
  CHECK(s.extents() == std::array<index_t, 2>{3, 2});
}

TEST_CASE(
    "broadcast_shapes: a dynamic mismatch throws shape_error naming both shapes and the axis") {
  try {
    (void)tfm::broadcast_shapes(shape<dyn, 4>(3), shape<dyn, 4>(5));
    FAIL("no exception");
  } catch (const tfm::shape_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find("(3, 4)") != std::string::npos, w);
    CHECK_MESSAGE(w.find("(5, 4)") != std::string::npos, w);
    CHECK_MESSAGE(w.find("axis 0") != std::string::npos, w);
  }
  CHECK_THROWS_AS(tfm::broadcast_shapes(shape<dyn>(2), shape<3>{}), tfm::shape_error);
}

TEST_CASE("reduce_shape and row_major_strides") {
  auto r = tfm::reduce_shape<shape<4, dyn>>(shape<4, dyn, 6>(5), 1, false);
  CHECK(r.extents() == std::array<index_t, 2>{4, 6});
  auto k = tfm::reduce_shape<shape<4, 1, dyn>>(shape<4, dyn, dyn>(5, 6), 1, true);
  CHECK(k.extents() == std::array<index_t, 3>{4, 1, 6});
  CHECK(tfm::row_major_strides(shape<2, 3, 4>{}) == std::array<index_t, 3>{12, 4, 1});
  CHECK(tfm::row_major_strides(shape<dyn, 3>(0)) == std::array<index_t, 2>{3, 1});
  CHECK(tfm::dyn_shape<3>::rank_dynamic == 3);
}
