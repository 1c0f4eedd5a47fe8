// Reductions of bf16, f16 (accumulated in float) and int32 (sum in int64; max, min, argmax,
// argmin) along every axis and over all elements: cpu and reference backends vs a double oracle.
#include <doctest/doctest.h>

#include <cstdint>

#include "reduce_check.hpp"
#include "typeformer/core/half.hpp"

using namespace ops_test;

TEST_CASE_TEMPLATE("reduce: halves along every axis, cpu and reference vs double oracle", T,
                   tfm::bf16, tfm::f16) {
  auto g = tfm_test::rng(201);
  for (dims e : {dims{5, 7, 9}, dims{4, 33, 17}, dims{1, 1, 1}, dims{2, 300, 3}}) {
    twin3<T> x(e[0], e[1], e[2], g);
    check_every_axis(x);
  }
  twin3<T> wide(2, 3, 2000, g, -4, 4);  // SIMD columns with many ties in the argmax/argmin
  check_every_axis(wide);
}

TEST_CASE("reduce: int32 sum (int64), max, min, argmax, argmin along every axis") {
  auto g = tfm_test::rng(202);
  for (dims e : {dims{5, 7, 9}, dims{4, 33, 17}, dims{1, 1, 1}, dims{3, 2, 100}}) {
    twin3<std::int32_t> x(e[0], e[1], e[2], g, -1000, 1000);
    check_every_axis(x);
  }
  // Values near the int32 limits: the int64 sum must not overflow.
  twin3<std::int32_t> big(2, 50, 3, g, 2000000000.0, 2147483647.0);
  check_every_axis(big);
  auto s = tfm::sum(big.c);
  static_assert(std::is_same_v<decltype(s), std::int64_t>);
  CHECK(s > std::int64_t{2147483647} * 100);
}
