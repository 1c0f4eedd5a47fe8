// Gradient checks of cross_entropy (ops/loss.hpp: mean/sum/none, ignore_index, label
// smoothing), linear_cross_entropy (ops/linear_loss.hpp: the same; a projected check over two
// backward chunks of the vocabulary), dropout (ops/dropout.hpp: a fixed seed and offset fix the
// mask, and given its mask dropout is linear), checkpoint (autodiff/checkpoint.hpp: a recomputed
// segment that captures its parameters) and rope (ops/rope.hpp: every scaling kind, both pair
// styles, pos0 > 0).
#include "gc_cases.hpp"
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/autodiff/checkpoint.hpp>
#include <typeformer/ops/dropout.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/linear_loss.hpp>
#include <typeformer/ops/loss.hpp>
#include <typeformer/ops/rope.hpp>
#include <typeformer/ops/view.hpp>

#include <cstdint>
#include <string>

using namespace tfm;
using tfm::testing::gradcheck;

namespace gc {
namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;
using S4 = dyn_shape<4>;
}  // namespace

void gc_cross_entropy() {
  auto g = tfm_test::rng(71);
  auto x = leaf(rnd(S3(2, 3, 7), g, -2.0, 2.0), "logits");
  tensor<std::int32_t, S2> t(S2(2, 3), {1, 6, -100, 0, 2, 6});  // one row ignored
  for (double eps : {0.0, 0.1}) {
    cross_entropy_options o;
    o.label_smoothing = eps;
    const std::string e = " label_smoothing " + std::to_string(eps);
    auto mean_f = [&](const auto& v) { return cross_entropy(v, t, o); };
    expect_records(mean_f(x), "cross_entropy");
    expect_gc("cross_entropy", "mean" + e, gradcheck(mean_f, x));
    expect_gc(
        "cross_entropy", "sum" + e,
        gradcheck([&](const auto& v) { return cross_entropy<ce_reduction::sum>(v, t, o); }, x));
    expect_gc(
        "cross_entropy", "none" + e,
        gradcheck([&](const auto& v) { return cross_entropy<ce_reduction::none>(v, t, o); }, x));
  }
  cross_entropy_options o;
  o.ignore_index = 6;  // now rows with target 6 are ignored and -100 is out of range: replace it
  tensor<std::int32_t, S2> t2(S2(2, 3), {1, 6, 3, 0, 2, 6});
  expect_gc("cross_entropy", "ignore_index 6",
            gradcheck([&](const auto& v) { return cross_entropy(v, t2, o); }, x));
  // Logits after a permute: (7, 2, 3) -> (2, 3, 7); 2-D logits (rows, V).
  auto xp = leaf(rnd(S3(7, 2, 3), g, -2.0, 2.0), "logits");
  expect_gc("cross_entropy", "after permute",
            gradcheck([&](const auto& v) { return cross_entropy(permute<1, 2, 0>(v), t); }, xp));
  auto x2 = leaf(rnd(S2(4, 3), g, -2.0, 2.0), "logits");
  tensor<std::int32_t, S1> t1(S1(4), {2, 2, 0, 1});
  expect_gc("cross_entropy", "2-D logits (4,3)",
            gradcheck([&](const auto& v) { return cross_entropy(v, t1); }, x2));
}

void gc_linear_cross_entropy() {
  auto g = tfm_test::rng(74);
  auto x = leaf(rnd(S2(3, 4), g, -1.0, 1.0), "x");
  auto w = leaf(rnd(S2(9, 4), g, -1.0, 1.0), "W");
  tensor<std::int32_t, S1> t(S1(3), {1, -100, 8});
  for (double eps : {0.0, 0.1}) {
    cross_entropy_options o;
    o.label_smoothing = eps;
    const std::string e = " label_smoothing " + std::to_string(eps);
    auto mean_f = [&](const auto& a, const auto& b) { return linear_cross_entropy(a, b, t, o); };
    expect_records(mean_f(x, w), "linear_cross_entropy");
    expect_gc("linear_cross_entropy", "mean" + e, gradcheck(mean_f, x, w));
    expect_gc("linear_cross_entropy", "sum" + e,
              gradcheck(
                  [&](const auto& a, const auto& b) {
                    return linear_cross_entropy<ce_reduction::sum>(a, b, t, o);
                  },
                  x, w));
    expect_gc("linear_cross_entropy", "none" + e,
              gradcheck(
                  [&](const auto& a, const auto& b) {
                    return linear_cross_entropy<ce_reduction::none>(a, b, t, o);
                  },
                  x, w));
  }
  // 1600 classes take two backward chunks (1536 + 64 columns at 3 rows with AVX-512's kc of
  // 192): directional derivatives, since 6400 weights element by element are too slow for the
  // sanitizer build.
  auto wl = leaf(rnd(S2(1600, 4), g, -1.0, 1.0), "W");
  tensor<std::int32_t, S1> tl(S1(3), {1, -100, 1599});
  cross_entropy_options ol;
  ol.label_smoothing = 0.1;
  expect_gc("linear_cross_entropy", "V 1600, projected",
            tfm::testing::gradcheck_projected(
                [&](const auto& a, const auto& b) {
                  return linear_cross_entropy<ce_reduction::none>(a, b, tl, ol);
                },
                x, wl));
  // A 3-D input (2, 2, 3) with targets (2, 2).
  auto x3 = leaf(rnd(S3(2, 2, 3), g, -1.0, 1.0), "x");
  auto w3 = leaf(rnd(S2(5, 3), g, -1.0, 1.0), "W");
  tensor<std::int32_t, S2> t2(S2(2, 2), {4, 0, 2, 2});
  expect_gc("linear_cross_entropy", "3-D input",
            gradcheck([&](const auto& a, const auto& b) { return linear_cross_entropy(a, b, t2); },
                      x3, w3));
}

void gc_dropout() {
  auto g = tfm_test::rng(72);
  auto x = leaf(rnd(S3(3, 4, 5), g), "x");
  auto f = [](const auto& v) { return dropout(v, 0.3, 7, 11); };
  expect_records(f(x), "dropout");
  expect_gc("dropout", "p 0.3 seed 7 offset 11", gradcheck(f, x));
  expect_gc(
      "dropout", "p 0.9 after permute, then tanh",
      gradcheck([](const auto& v) { return tfm::tanh(dropout(permute<2, 0, 1>(v), 0.9, 3, 0)); },
                x));
}

void gc_checkpoint() {
  auto g = tfm_test::rng(73);
  auto x = leaf(rnd(S2(3, 4), g), "x");
  auto w1 = leaf(rnd(S2(6, 4), g), "w1");
  auto b1 = leaf(rnd(S1(6), g), "b1");
  auto w2 = leaf(rnd(S2(4, 6), g), "w2");
  // A residual MLP segment whose parameters are captured, checkpointed twice in a row. The
  // parameters are arguments of f (so that gradcheck checks them) and captured by the segment.
  auto f = [](const auto& h0, const auto& a, const auto& b, const auto& c) {
    auto seg = [&](const auto& h) { return h + linear(tfm::tanh(linear(h, a, b)), c); };
    auto h1 = checkpoint(seg, h0);
    return tfm::square(checkpoint(seg, h1));
  };
  {
    enable_grad eg;
    expect_records(f(x, w1, b1, w2), "checkpoint");
  }
  expect_gc("checkpoint", "two residual MLP segments", gradcheck(f, x, w1, b1, w2));
  // The segment's input needs no gradient; only the captured parameters do.
  auto xc = constant(rnd(S2(3, 4), g));
  expect_gc("checkpoint", "constant input, captured parameters", gradcheck(f, xc, w1, b1, w2));
  // A segment that reshapes (the output shape differs from the input's).
  expect_gc("checkpoint", "segment changing shape",
            gradcheck(
                [](const auto& h, const auto& a) {
                  return checkpoint([&](const auto& v) { return tfm::exp(linear(v, a)); }, h);
                },
                x, w1));
}

void gc_rope() {
  auto g = tfm_test::rng(74);
  auto x = leaf(rnd(S4(2, 3, 4, 8), g), "x");
  using sc = rope_config::scaling;
  using st = rope_config::style;
  for (auto kind : {sc::none, sc::linear, sc::ntk, sc::yarn})
    for (auto style : {st::interleaved, st::half}) {
      rope_config c;
      c.scale_kind = kind;
      c.pair_style = style;
      c.factor = 4;
      c.original_context = 16;  // yarn: the ramp lands inside D/2 = 4 frequencies
      const std::string what = "scaling " + std::to_string(static_cast<int>(kind)) + " style " +
                               std::to_string(static_cast<int>(style)) + " pos0 5";
      auto f = [c](const auto& v) { return rope(v, c, 5); };
      if (kind == sc::none && style == st::interleaved) expect_records(f(x), "rope");
      expect_gc("rope", what, gradcheck(f, x));
    }
  // pos0 = 0, and on (B, T, H, D) permuted to (B, H, T, D).
  rope_config c;
  c.pair_style = st::half;
  expect_gc("rope", "pos0 0 after permute",
            gradcheck([c](const auto& v) { return rope(permute<0, 2, 1, 3>(v), c) * 1.0; }, x));
  expect_gc(
      "rope", "(1,1,1,2) single pair, pos0 100",
      gradcheck([c](const auto& v) { return rope(v, c, 100); }, leaf(rnd(S4(1, 1, 1, 2), g), "x")));
}

}  // namespace gc
