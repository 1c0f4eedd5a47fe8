// Reductions of float and double along every axis (static and negative, keepdims) and over all
// elements: cpu and reference backends vs a double oracle.
#include <doctest/doctest.h>

#include "reduce_check.hpp"

using namespace ops_test;

TEST_CASE_TEMPLATE("reduce: every op along every axis, cpu and reference vs double oracle", T,
                   float, double) {
  auto g = tfm_test::rng(101);
  for (dims e : {dims{5, 7, 9}, dims{4, 33, 17}, dims{1, 1, 1}, dims{2, 1, 40}, dims{3, 129, 2}}) {
    twin3<T> x(e[0], e[1], e[2], g);
    check_every_axis(x);
  }
}

TEST_CASE_TEMPLATE("reduce: data with a large offset (cancellation-free sums)", T, float, double) {
  auto g = tfm_test::rng(102);
  twin3<T> x(3, 1000, 5, g, 100, 101);
  check_every_axis(x);
}
