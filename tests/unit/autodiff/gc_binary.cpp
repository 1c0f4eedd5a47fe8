// Gradient checks of the binary elementwise ops and where (ops/elementwise.hpp): broadcasting
// ((3,1,4) with (5,4)), size-1 axes on both sides, a constant operand, arithmetic
// scalars on either side (rank-0 vars), and after permute/slice. Inputs stay inside each op's
// domain (log, sqrt, rsqrt: positive; pow: positive base; div: divisor away from 0) and away from
// kinks: relu and abs are not differentiable at 0, min/max not at ties, so their inputs keep a gap
// of at least 0.01 >> eps from them (then the one-sided derivatives agree and the check is exact).
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

/// Draws for binary ops: a and b from their domains; for min/max values on interleaved lattices
/// (a in 0.1 k + [0, 0.02], b in 0.1 k + 0.05 + [0, 0.02]) so that no pair is within 0.03.
struct binary_domain {
  domain a = domain::any, b = domain::any;
  bool lattice = false;
  double scalar = 0.75;  // the arithmetic operand of op(x, s) / op(s, x)
};

template <class S>
tensor<double, S> draw_bin(const S& s, std::mt19937& g, domain d, bool lattice, double shift) {
  if (!lattice) return draw(s, g, d);
  auto t = rnd(s, g, 0.0, 0.02);
  std::uniform_int_distribution<int> k(-10, 10);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] += 0.1 * k(g) + shift;
  return t;
}

template <class F>
void binary_case(const char* op, F f, binary_domain bd) {
  auto g = tfm_test::rng(std::hash<std::string>{}(op));
  {  // broadcast (3, 1, 4) with (5, 4) -> (3, 5, 4); both sides checked
    auto a = leaf(draw_bin(S3(3, 1, 4), g, bd.a, bd.lattice, 0.0), "a");
    auto b = leaf(draw_bin(S2(5, 4), g, bd.b, bd.lattice, 0.05), "b");
    expect_records(f(a, b), op);
    expect_gc(op, "(3,1,4) with (5,4)", gradcheck(f, a, b));
  }
  {  // equal shapes, one operand constant
    auto a = leaf(draw_bin(S2(3, 4), g, bd.a, bd.lattice, 0.0), "a");
    auto b = constant(draw_bin(S2(3, 4), g, bd.b, bd.lattice, 0.05));
    expect_gc(op, "(3,4) with a constant", gradcheck(f, a, b));
  }
  {  // size-1 axes on both sides: (4, 1) with (1, 3)
    auto a = leaf(draw_bin(S2(4, 1), g, bd.a, bd.lattice, 0.0), "a");
    auto b = leaf(draw_bin(S2(1, 3), g, bd.b, bd.lattice, 0.05), "b");
    expect_gc(op, "(4,1) with (1,3)", gradcheck(f, a, b));
  }
  {  // arithmetic scalars on either side
    const double s = bd.scalar;
    auto a = leaf(draw_bin(S2(3, 4), g, bd.a, bd.lattice, 0.0), "a");
    auto b = leaf(draw_bin(S2(3, 4), g, bd.b, bd.lattice, 0.05), "b");
    expect_gc(op, "var with scalar", gradcheck([&](const auto& x) { return f(x, s); }, a));
    expect_gc(op, "scalar with var", gradcheck([&](const auto& x) { return f(s, x); }, b));
  }
  {  // after permute and slice: permute<1,0>(a (4, 6)) sliced to (3, 4) with b (3, 4)
    auto a = leaf(draw_bin(S2(4, 6), g, bd.a, bd.lattice, 0.0), "a");
    auto b = leaf(draw_bin(S2(3, 4), g, bd.b, bd.lattice, 0.05), "b");
    auto h = [&f](const auto& x, const auto& y) {
      return f(slice<0>(permute<1, 0>(x), 1, 6, 2), y);
    };
    expect_gc(op, "after permute+slice", gradcheck(h, a, b));
  }
}

}  // namespace

// ---- binary ------------------------------------------------------------------------------------
void gc_add() {
  binary_case("add", [](const auto& a, const auto& b) { return a + b; }, {});
}
void gc_sub() {
  binary_case("sub", [](const auto& a, const auto& b) { return a - b; }, {});
}
void gc_mul() {
  binary_case("mul", [](const auto& a, const auto& b) { return a * b; }, {});
}
void gc_div() {
  binary_case("div", [](const auto& a, const auto& b) { return a / b; },
              {domain::any, domain::nonzero, false, 0.75});
}
void gc_pow() {
  // Positive base (the vjp of the exponent is y log a); the exponent any sign.
  binary_case("pow", [](const auto& a, const auto& b) { return tfm::pow(a, b); },
              {domain::positive, domain::any, false, 1.25});
}
void gc_min_elementwise() {
  binary_case("min", [](const auto& a, const auto& b) { return tfm::minimum(a, b); },
              {domain::any, domain::any, true, 0.33});
  // Ties split the gradient evenly, so min(x, x) has derivative 1 like x itself.
  auto g = tfm_test::rng(101);
  auto x = leaf(rnd(S2(2, 3), g), "x");
  expect_gc("min", "min(x, x)", gradcheck([](const auto& v) { return tfm::minimum(v, v); }, x));
}
void gc_max_elementwise() {
  binary_case("max", [](const auto& a, const auto& b) { return tfm::maximum(a, b); },
              {domain::any, domain::any, true, 0.33});
  auto g = tfm_test::rng(102);
  auto x = leaf(rnd(S2(2, 3), g), "x");
  expect_gc("max", "max(x, x)", gradcheck([](const auto& v) { return tfm::maximum(v, v); }, x));
}

void gc_where() {
  auto g = tfm_test::rng(77);
  // Condition (3, 1, 4) int32, a (5, 4), b (3, 5, 1): output (3, 5, 4).
  tensor<std::int32_t, S3> c(S3(3, 1, 4));
  std::bernoulli_distribution coin(0.5);
  for (index_t i = 0; i < c.size(); ++i) c.data()[i] = coin(g) ? 1 : 0;
  auto a = leaf(rnd(S2(5, 4), g), "a");
  auto b = leaf(rnd(S3(3, 5, 1), g), "b");
  auto f = [&c](const auto& x, const auto& y) { return tfm::where(c, x, y) * 1.5; };
  expect_records(f(a, b), "where");
  expect_gc("where", "cond (3,1,4), a (5,4), b (3,5,1)", gradcheck(f, a, b));
  // Same shapes, after a permute: the condition selects between exp(a^T) and b.
  tensor<std::int32_t, S2> c2(S2(4, 3));
  for (index_t i = 0; i < c2.size(); ++i) c2.data()[i] = coin(g) ? 1 : 0;
  auto a2 = leaf(rnd(S2(3, 4), g), "a");
  auto b2 = leaf(rnd(S2(4, 3), g), "b");
  auto f2 = [&c2](const auto& x, const auto& y) {
    return tfm::where(c2, tfm::exp(permute<1, 0>(x)), y);
  };
  expect_gc("where", "after permute", gradcheck(f2, a2, b2));
}

}  // namespace gc
