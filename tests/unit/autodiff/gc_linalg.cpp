// Gradient checks of matmul (ops/matmul.hpp: 2-D, batched, broadcast batch axes, a shared
// rank-2 operand on either side, size-1 rows/columns, transposed and permuted operands) and
// linear (ops/linear.hpp: with and without bias, 2-D and 3-D inputs, input after a permute).
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/matmul.hpp>
#include <typeformer/ops/view.hpp>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {
using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;
using S4 = dyn_shape<4>;
}  // namespace

void gc_matmul() {
  auto g = tfm_test::rng(51);
  auto mm = [](const auto& a, const auto& b) { return matmul(a, b); };
  {
    auto a = leaf(rnd(S2(3, 4), g), "a");
    auto b = leaf(rnd(S2(4, 5), g), "b");
    expect_records(mm(a, b), "matmul");
    expect_gc("matmul", "(3,4) x (4,5)", gradcheck(mm, a, b));
  }
  {
    auto a = leaf(rnd(S3(2, 3, 4), g), "a");
    auto b = leaf(rnd(S3(2, 4, 5), g), "b");
    expect_gc("matmul", "batched (2,3,4) x (2,4,5)", gradcheck(mm, a, b));
  }
  {
    auto a = leaf(rnd(S4(2, 1, 3, 4), g), "a");
    auto b = leaf(rnd(S3(3, 4, 5), g), "b");
    expect_gc("matmul", "broadcast batch (2,1,3,4) x (3,4,5)", gradcheck(mm, a, b));
  }
  {
    auto a = leaf(rnd(S3(2, 3, 4), g), "a");
    auto b = leaf(rnd(S2(4, 5), g), "b");
    expect_gc("matmul", "shared B (2,3,4) x (4,5)", gradcheck(mm, a, b));
  }
  {
    auto a = leaf(rnd(S2(3, 4), g), "a");
    auto b = leaf(rnd(S3(2, 4, 5), g), "b");
    expect_gc("matmul", "shared A (3,4) x (2,4,5)", gradcheck(mm, a, b));
  }
  {
    auto a = leaf(rnd(S2(1, 4), g), "a");
    auto b = leaf(rnd(S2(4, 1), g), "b");
    expect_gc("matmul", "(1,4) x (4,1)", gradcheck(mm, a, b));
    expect_gc("matmul", "(4,1) x (1,4) outer product", gradcheck(mm, b, a));
  }
  {
    auto a = leaf(rnd(S3(2, 3, 4), g), "a");
    auto w = leaf(rnd(S2(5, 4), g), "w");
    expect_gc(
        "matmul", "a x transpose(w)",
        gradcheck([](const auto& x, const auto& y) { return matmul(x, transpose(y)); }, a, w));
    auto q = leaf(rnd(S4(2, 3, 2, 4), g), "q");  // (B, T, H, D) as a projection writes it
    expect_gc("matmul", "q k^T of permuted (B,T,H,D) -> (B,H,T,D)",
              gradcheck(
                  [](const auto& x) {
                    auto p = permute<0, 2, 1, 3>(x);
                    return matmul(p, transpose(tfm::tanh(p)));
                  },
                  q));
  }
}

void gc_linear() {
  auto g = tfm_test::rng(52);
  auto x3 = leaf(rnd(S3(2, 3, 5), g), "x");
  auto x2 = leaf(rnd(S2(4, 5), g), "x");
  auto w = leaf(rnd(S2(4, 5), g), "w");
  auto b = leaf(rnd(dyn_shape<1>(4), g), "b");
  auto fb = [](const auto& x, const auto& w, const auto& b) { return linear(x, w, b); };
  auto fn = [](const auto& x, const auto& w) { return linear(x, w); };
  expect_records(fb(x3, w, b), "linear");
  expect_gc("linear", "3-D input with bias", gradcheck(fb, x3, w, b));
  expect_gc("linear", "3-D input without bias", gradcheck(fn, x3, w));
  expect_gc("linear", "2-D input with bias", gradcheck(fb, x2, w, b));
  // Input after a permute, and the weight from a copy of a transposed view.
  tensor<double, S2> wt = permute<1, 0>(rnd(S2(5, 4), g).view());
  auto wv = leaf(wt, "w(permuted copy)");
  auto xp = leaf(rnd(S3(5, 2, 3), g), "x");
  expect_gc("linear", "input after permute, weight from a permuted copy",
            gradcheck([](const auto& x, const auto& w,
                         const auto& b) { return tfm::tanh(linear(permute<1, 2, 0>(x), w, b)); },
                      xp, wv, b));
}

}  // namespace gc
