// Reductions over the TESTING.md size sweep, for the reduced axis and the inner axis (0 .. 1023
// and 100000, which exercises the blocked and threaded paths), and 1 vs 2 threads bitwise.
#include <doctest/doctest.h>

#include "reduce_check.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/core/half.hpp"

using namespace ops_test;

namespace {

template <class T>
void sweep_one(const twin3<T>& x) {
  const bool empty_axis = x.ext[1] == 0;
  check_reduce<red::sum, 1, false, T>(x.c, x.r, x.values, x.ext);
  check_reduce<red::mean, 1, false, T>(x.c, x.r, x.values, x.ext);
  check_reduce_all<red::sum, T>(x.c, x.r, x.values, x.ext);
  if (empty_axis) return;  // the others raise shape_error (reduce_special_test.cpp)
  check_reduce<red::max, 1, false, T>(x.c, x.r, x.values, x.ext);
  check_reduce<red::min, 1, false, T>(x.c, x.r, x.values, x.ext);
  check_reduce<red::argmax, 1, false, T>(x.c, x.r, x.values, x.ext);
  check_reduce<red::argmin, 1, true, T>(x.c, x.r, x.values, x.ext);
  check_reduce<red::logsumexp, 1, false, T>(x.c, x.r, x.values, x.ext);
  if (x.c.size() > 0) {
    check_reduce_all<red::max, T>(x.c, x.r, x.values, x.ext);
    check_reduce_all<red::argmin, T>(x.c, x.r, x.values, x.ext);
    check_reduce_all<red::logsumexp, T>(x.c, x.r, x.values, x.ext);
  }
}

std::vector<index_t> with_large(std::vector<index_t> v) {
  v.push_back(100000);
  return v;
}

}  // namespace

TEST_CASE_TEMPLATE("reduce: size sweep of the reduced axis (inner 1 and 3)", T, float, double,
                   tfm::bf16) {
  auto g = tfm_test::rng(301);
  auto sizes = with_large(sweep_sizes);
  sizes.insert(sizes.end(), {16383, 16384, 16385, 40000});  // around the 16384-element block
  for (index_t n : sizes)
    for (index_t inner : {1, 3}) {
      const index_t outer = n >= 10000 ? 2 : 3;
      twin3<T> x(outer, n, inner, g);
      sweep_one(x);
    }
}

TEST_CASE_TEMPLATE("reduce: size sweep of the inner axis (reduced extent 1 and 5)", T, float,
                   double, tfm::bf16) {
  auto g = tfm_test::rng(302);
  for (index_t inner : with_large(sweep_sizes))
    for (index_t n : {1, 5}) {
      twin3<T> x(2, n, inner, g);
      sweep_one(x);
    }
}

namespace {

/// Every reduction of x along axes 0..2 and over all, as element vectors.
template <class X>
std::vector<std::vector<double>> all_results(const X& x) {
  std::vector<std::vector<double>> r;
  auto add = [&](const auto& t) { r.push_back(result_doubles(t)); };
  auto per_op = [&]<red K>() {
    add(call_reduce<K, 0, false>(x));
    add(call_reduce<K, 1, false>(x));
    add(call_reduce<K, 2, false>(x));
    add(call_reduce_all<K>(x));
  };
  per_op.template operator()<red::sum>();
  per_op.template operator()<red::mean>();
  per_op.template operator()<red::max>();
  per_op.template operator()<red::min>();
  per_op.template operator()<red::argmax>();
  per_op.template operator()<red::argmin>();
  per_op.template operator()<red::logsumexp>();
  return r;
}

}  // namespace

TEST_CASE_TEMPLATE("reduce: 1 and 2 threads give bitwise identical results", T, float, double,
                   tfm::bf16) {
  auto g = tfm_test::rng(303);
  for (dims e : {dims{3, 100000, 1}, dims{1, 300000, 1}, dims{2, 5, 70000}, dims{5000, 37, 1},
                 dims{40, 2000, 9}}) {
    INFO("shape ", dims_str(e));
    twin3<T> x(e[0], e[1], e[2], g);
    std::vector<std::vector<double>> one, two;
    {
      tfm::thread_scope ts(1);
      one = all_results(x.c);
    }
    {
      tfm::thread_scope ts(2);
      two = all_results(x.c);
    }
    REQUIRE(one.size() == two.size());
    for (std::size_t i = 0; i < one.size(); ++i) {
      INFO("result ", i);
      TFM_CHECK_BITWISE(one[i], two[i]);
    }
  }
}
