// Gradient checks of the unary elementwise ops (ops/elementwise.hpp), each on a plain tensor,
// a tensor with size-1 axes, a copy of a permuted view, and after permute + slice. Inputs stay
// inside each op's domain (log, sqrt, rsqrt: positive; pow: positive base; div: divisor away from
// 0) and away from kinks: relu and abs are not differentiable at 0, min/max not at ties, so their
// inputs keep a gap of at least 0.01 >> eps from them (then the one-sided derivatives agree and the
// check is exact).
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/view.hpp>

#include <cstdint>
#include <string>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {

using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;

template <class F>
void unary_case(const char* op, F f, domain d) {
  auto g = tfm_test::rng(std::hash<std::string>{}(op));
  // (2, 3, 4) and (3, 1, 4)
  for (auto s : {S3(2, 3, 4), S3(3, 1, 4)}) {
    auto x = leaf(draw(s, g, d), "x");
    expect_records(f(x), op);
    expect_gc(op, "x " + s.to_string(), gradcheck(f, x));
  }
  {  // a copy of a permuted view: (4, 3, 2) -> (2, 4, 3)
    auto base = draw(S3(4, 3, 2), g, d);
    tensor<double, S3> p = permute<2, 0, 1>(base.view());
    expect_gc(op, "permuted copy", gradcheck(f, leaf(p, "xp")));
  }
  {  // after permute and a strided slice: (4, 3, 5) -> (5, 4, 3) -> (5, 2, 3)
    auto x = leaf(draw(S3(4, 3, 5), g, d), "x");
    auto h = [&f](const auto& v) { return f(slice<1>(permute<2, 0, 1>(v), 1, 4, 2)); };
    expect_gc(op, "after permute+slice", gradcheck(h, x));
  }
}

}  // namespace

// ---- unary -------------------------------------------------------------------------------------
#define GC_UNARY(NAME, EXPR, DOMAIN)                                \
  void gc_##NAME() {                                                \
    unary_case(                                                     \
        #NAME, [](const auto& x) { return EXPR; }, domain::DOMAIN); \
  }
GC_UNARY(neg, -x, any)
GC_UNARY(exp, tfm::exp(x), any)
GC_UNARY(log, tfm::log(x), positive)
GC_UNARY(sqrt, tfm::sqrt(x), positive)
GC_UNARY(rsqrt, tfm::rsqrt(x), positive)
GC_UNARY(tanh, tfm::tanh(x), any)
GC_UNARY(sigmoid, tfm::sigmoid(x), any)
GC_UNARY(silu, tfm::silu(x), any)
GC_UNARY(gelu_tanh, tfm::gelu_tanh(x), any)
GC_UNARY(gelu_erf, tfm::gelu_erf(x), any)
GC_UNARY(square, tfm::square(x), any)
GC_UNARY(erf, tfm::erf(x), any)
GC_UNARY(normal_cdf, tfm::normal_cdf(x), any)
// Not differentiable at 0; inputs keep |x| >= 0.1, where the derivative is exact (0 or +-1).
GC_UNARY(relu, tfm::relu(x), nonzero)
GC_UNARY(abs, tfm::abs(x), nonzero)
#undef GC_UNARY

}  // namespace gc
