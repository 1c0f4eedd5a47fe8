// Gradient checks of the reductions (ops/reduce.hpp: sum, mean, logsumexp, max, min over one
// axis with and without keepdims, and over all axes) and of the layout ops (ops/view.hpp:
// reshape, permute/transpose, slice, concat, split), on shapes with size-1 axes and after
// permute/slice. max/min are not differentiable at ties (the gradient goes to the one selected
// index), so their inputs are distinct values at least 0.03 apart.
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/ops/view.hpp>

#include <numeric>
#include <vector>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {
using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;

/// Distinct values: a random permutation of 0.05 k (k < n) plus noise in [0, 0.02].
tensor<double, S3> distinct(const S3& s, std::mt19937& g) {
  tensor<double, S3> t(s);
  std::vector<int> k(static_cast<std::size_t>(t.size()));
  std::iota(k.begin(), k.end(), 0);
  std::shuffle(k.begin(), k.end(), g);
  std::uniform_real_distribution<double> u(0.0, 0.02);
  for (index_t i = 0; i < t.size(); ++i)
    t.data()[i] = 0.05 * k[static_cast<std::size_t>(i)] - 1.0 + u(g);
  return t;
}

/// Runs the reduction family R (a generic functor template applied per axis) on (3, 4, 5),
/// (3, 1, 4) and after permute + slice.
template <class Axis0, class Axis1, class AxisLast, class Keep1, class All>
void reduce_case(const char* op, bool distinct_values, Axis0 r0, Axis1 r1, AxisLast rl, Keep1 k1,
                 All all) {
  auto g = tfm_test::rng(std::hash<std::string>{}(op));
  auto draw = [&](const S3& s) { return distinct_values ? distinct(s, g) : rnd(s, g); };
  auto x = leaf(draw(S3(3, 4, 5)), "x");
  auto x1 = leaf(draw(S3(3, 1, 4)), "x");
  expect_records(r0(x), op);
  expect_gc(op, "axis 0 of (3,4,5)", gradcheck(r0, x));
  expect_gc(op, "axis 1 of (3,4,5)", gradcheck(r1, x));
  expect_gc(op, "axis -1 of (3,4,5)", gradcheck(rl, x));
  expect_gc(op, "axis 1 keepdims of (3,4,5)", gradcheck(k1, x));
  expect_gc(op, "all of (3,4,5)", gradcheck(all, x));
  expect_gc(op, "size-1 axis 1 of (3,1,4)", gradcheck(r1, x1));
  expect_gc(op, "axis 0 of (3,1,4)", gradcheck(r0, x1));
  // After permute + slice: (3, 4, 5) -> (5, 3, 4) -> (5, 3, 2); keepdims broadcast back.
  auto after = [&](const auto& v) {
    auto p = slice<2>(permute<2, 0, 1>(v), 0, 4, 2);
    return p * k1(p);
  };
  expect_gc(op, "after permute+slice, times its keepdims reduction", gradcheck(after, x));
}
}  // namespace

#define GC_REDUCE_LAMBDAS(FN)                                                                    \
  [](const auto& v) { return FN<0>(v); }, [](const auto& v) { return FN<1>(v); },                \
      [](const auto& v) { return FN<-1>(v); }, [](const auto& v) { return FN<1>(v, keepdims); }, \
      [](const auto& v) { return FN(v); }

void gc_sum() { reduce_case("sum", false, GC_REDUCE_LAMBDAS(tfm::sum)); }
void gc_mean() { reduce_case("mean", false, GC_REDUCE_LAMBDAS(tfm::mean)); }
void gc_logsumexp() {
  reduce_case("logsumexp", false, GC_REDUCE_LAMBDAS(tfm::logsumexp));
  // Large shifts are handled by the max subtraction (gradient = softmax of the row). Not held to
  // the 1e-6 bar: outputs near 300 carry rounding of ulp(300) ~ 6e-14, which the central
  // difference divides by 2 eps = 2e-6, so the numeric side itself is only good to ~3e-8 abs.
  auto g = tfm_test::rng(31);
  auto x = leaf(rnd(S3(2, 3, 4), g, 300.0, 302.0), "x");
  expect_gc("logsumexp", "values near 300",
            gradcheck([](const auto& v) { return tfm::logsumexp<-1>(v); }, x), /*smooth=*/false);
}
void gc_max() {
  gc_max_elementwise();
  reduce_case("max", true, GC_REDUCE_LAMBDAS(tfm::max));
}
void gc_min() {
  gc_min_elementwise();
  reduce_case("min", true, GC_REDUCE_LAMBDAS(tfm::min));
}
#undef GC_REDUCE_LAMBDAS

void gc_reshape() {
  auto g = tfm_test::rng(41);
  auto x = leaf(rnd(S3(2, 3, 4), g), "x");
  auto f1 = [](const auto& v) { return reshape(v, S2(6, 4)) * reshape(v, S2(6, 4)); };
  expect_records(f1(x), "reshape");
  expect_gc("reshape", "(2,3,4) -> (6,4)", gradcheck(f1, x));
  expect_gc("reshape", "to static (24) with size-1 axes (1,24,1)",
            gradcheck([](const auto& v) { return tfm::exp(reshape<shape<1, 24, 1>>(v)); }, x));
  // After a permute (the reshape reads the permuted copy in its own order).
  expect_gc("reshape", "after permute",
            gradcheck(
                [](const auto& v) {
                  auto p = permute<2, 0, 1>(v);  // (4, 2, 3)
                  return reshape(p, S2(8, 3)) * constant(full(S2(8, 3), 0.5)) +
                         tfm::square(reshape(p, S2(8, 3)));
                },
                x));
}

void gc_permute() {
  auto g = tfm_test::rng(42);
  auto x = leaf(rnd(S3(2, 3, 4), g), "x");
  auto y = leaf(rnd(S3(3, 1, 4), g), "y");
  auto f1 = [](const auto& v) { return tfm::square(permute<2, 0, 1>(v)); };
  expect_records(f1(x), "permute");
  expect_gc("permute", "<2,0,1> of (2,3,4)", gradcheck(f1, x));
  expect_gc("permute", "<1,2,0> with a size-1 axis",
            gradcheck([](const auto& v) { return tfm::square(permute<1, 2, 0>(v)); }, y));
  expect_gc("permute", "transpose (last two axes), twice",
            gradcheck([](const auto& v) { return transpose(tfm::exp(transpose(v))) * v; }, x));
  auto m = leaf(rnd(S2(3, 5), g), "m");
  expect_gc("permute", "rank-2 transpose broadcast against (5,3)",
            gradcheck(
                [](const auto& v) {
                  return transpose(v) * constant(full(S2(5, 1), 2.0)) + tfm::square(transpose(v));
                },
                m));
}

void gc_slice() {
  auto g = tfm_test::rng(43);
  auto x = leaf(rnd(S3(3, 5, 4), g), "x");
  auto f1 = [](const auto& v) { return tfm::square(slice<1>(v, 1, 4)); };
  expect_records(f1(x), "slice");
  expect_gc("slice", "axis 1 [1,4)", gradcheck(f1, x));
  expect_gc("slice", "axis 1 step 2",
            gradcheck([](const auto& v) { return tfm::square(slice<1>(v, 0, 5, 2)); }, x));
  expect_gc("slice", "axis -1 to a size-1 extent",
            gradcheck([](const auto& v) { return tfm::exp(slice<-1>(v, 2, 3)); }, x));
  expect_gc("slice", "two overlapping slices of one input",
            gradcheck([](const auto& v) { return slice<0>(v, 0, 2) * slice<0>(v, 1, 3); }, x));
  expect_gc(
      "slice", "after permute, step 3",
      gradcheck([](const auto& v) { return tfm::square(slice<0>(permute<2, 1, 0>(v), 0, 4, 3)); },
                x));
}

void gc_concat() {
  auto g = tfm_test::rng(44);
  auto a = leaf(rnd(S3(2, 3, 4), g), "a");
  auto b = leaf(rnd(S3(2, 1, 4), g), "b");
  auto c = leaf(rnd(S3(2, 2, 4), g), "c");
  auto f1 = [](const auto& x, const auto& y, const auto& z) {
    return tfm::square(concat<1>(std::vector{x, y, z}));
  };
  expect_records(f1(a, b, c), "concat");
  expect_gc("concat", "axis 1, extents 3+1+2", gradcheck(f1, a, b, c));
  expect_gc("concat", "axis 0, the same input twice",
            gradcheck(
                [](const auto& x) {
                  return tfm::square(concat<0>(std::vector{x, tfm::exp(x)}));
                },
                a));
  expect_gc(
      "concat", "axis -1 after permute",
      gradcheck(
          [](const auto& x, const auto& y) {
            // (2,3,4) -> (2,4,3) and (2,1,4) -> (2,4,1): concat on the last axis
            return tfm::square(concat<-1>(std::vector{permute<0, 2, 1>(x), permute<0, 2, 1>(y)}));
          },
          a, b));
  // split: the pieces (sliced windows) recombined in another order and weighted.
  expect_gc("concat", "split<1> {1,2} then concat reversed",
            gradcheck(
                [](const auto& x) {
                  auto parts = split<1>(x, {1, 2});
                  return tfm::square(concat<1>(std::vector{parts[1] * 2.0, parts[0]}));
                },
                a));
}

}  // namespace gc
