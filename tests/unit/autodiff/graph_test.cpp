// Graph mechanics of autodiff/variable.hpp, against values worked out by hand: no_grad records
// nothing, detach cuts the graph, backward accumulates and zero_grad resets, backward frees the
// recorded graph (memory returns to the pre-forward level; checked with memory_stats()),
// retain_graph allows a second backward, and anomaly mode names the op that produced a NaN/Inf.
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/autodiff/checkpoint.hpp>
#include <typeformer/core/storage.hpp>
#include <typeformer/ops/attention.hpp>
#include <typeformer/ops/dropout.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/gather.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/loss.hpp>
#include <typeformer/ops/normalize.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/ops/rope.hpp>
#include <typeformer/ops/view.hpp>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>

using namespace tfm;

namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;
using S4 = dyn_shape<4>;

tensor<float, S2> frnd(const S2& s, std::mt19937& g, double lo = -1, double hi = 1) {
  tensor<float, S2> t(s);
  tfm_test::from_vector(
      t, tfm_test::random_vector<float>(static_cast<std::size_t>(t.size()), g, lo, hi));
  return t;
}

/// A small model touching most ops (f32): embedding, linear, layer_norm, gelu, rope, attention,
/// dropout, slice/concat, checkpoint, rms_norm, softmax, cross_entropy. Returns the loss.
struct small_model {
  var<float, S2> emb, w1, w2, wo;
  var<float, S1> b1, gamma, beta;
  tensor<std::int32_t, S1> ids{S1(6), {1, 4, 4, 0, 7, 2}};
  tensor<std::int32_t, S1> tgt{S1(6), {4, 4, 0, 7, 2, 1}};

  explicit small_model(std::mt19937& g)
      : emb(parameter(frnd(S2(8, 8), g))),
        w1(parameter(frnd(S2(16, 8), g))),
        w2(parameter(frnd(S2(8, 16), g))),
        wo(parameter(frnd(S2(8, 8), g))),
        b1(parameter(tensor<float, S1>(S1(16)))),
        gamma(parameter(ones(8))),
        beta(parameter(tensor<float, S1>(S1(8)))) {}
  static tensor<float, S1> ones(index_t n) {
    tensor<float, S1> t{S1(n)};
    t.fill(1.0f);
    return t;
  }
  std::vector<var<float, S2>*> mats() { return {&emb, &w1, &w2, &wo}; }
  std::vector<var<float, S1>*> vecs() { return {&b1, &gamma, &beta}; }

  var<float, shape<>> loss() const {
    auto h = embedding(emb, ids);  // (6, 8)
    h = layer_norm(h, gamma, beta);
    auto mlp = [&](const auto& x) { return x + linear(gelu(linear(x, w1, b1)), w2); };
    h = checkpoint(mlp, h);
    auto q = reshape(h, S4(1, 6, 2, 4));
    auto qh = rope(permute<0, 2, 1, 3>(q), rope_config{});  // (1, 2, 6, 4)
    auto a = attention(qh, qh, qh);
    auto ac = attention_composed(qh, qh, qh);
    auto o = reshape(permute<0, 2, 1, 3>(a + ac), S2(6, 8));
    o = dropout(o, 0.25, 3, 0);
    o = concat<1>(std::vector{slice<1>(o, 4, 8), slice<1>(o, 0, 4)});
    auto logits = linear(rms_norm(o, none), wo);
    return cross_entropy(logits, tgt) + mean(softmax(logits) * 0.1f);
  }
};
}  // namespace

TEST_CASE("no_grad records nothing; backward on its outputs raises value_error") {
  auto g = tfm_test::rng(11);
  small_model m(g);
  {
    no_grad ng;
    CHECK_FALSE(grad_enabled());
    auto l = m.loss();
    CHECK_FALSE(l.requires_grad());
    CHECK(l.is_leaf());
    CHECK(std::string(l.op_name()).empty());
    CHECK(gc::recorded_ops(l).empty());
    CHECK_THROWS_AS(l.backward(), tfm::value_error);
    auto y = exp(m.w1) * 2.0f;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.data()->creator == nullptr);
    {
      enable_grad eg;  // recording can be switched back on inside
      CHECK(exp(m.w1).requires_grad());
    }
    CHECK_FALSE(exp(m.w1).requires_grad());
  }
  CHECK(grad_enabled());
  for (auto* p : m.mats()) CHECK_FALSE(p->has_grad());
  auto l = m.loss();
  CHECK(l.requires_grad());
  CHECK(std::string(l.op_name()) == "add");
  // A var computed only from constants does not require grad either.
  CHECK_FALSE(exp(constant(frnd(S2(2, 2), g))).requires_grad());
}

TEST_CASE("detach cuts the graph and copies the value") {
  tensor<double, S2> t(S2(2, 2), {1.0, -2.0, 0.5, 3.0});
  auto x = parameter(t);
  auto y = x * 3.0;
  auto z = y.detach();
  CHECK(z.is_leaf());
  CHECK_FALSE(z.requires_grad());
  z.mutable_value()(0, 0) = 100.0;  // a copy: y is unchanged
  CHECK(y.value()(0, 0) == 3.0);
  z.mutable_value()(0, 0) = 3.0;
  // l = sum(z * x + y): z is a constant 3x, so dl/dx = z + 3 = 3 x + 3.
  sum(z * x + y).backward();
  for (index_t i = 0; i < 4; ++i) CHECK(x.grad().data()[i] == 3 * t.data()[i] + 3);
}

TEST_CASE("backward accumulates across calls; zero_grad resets") {
  tensor<double, S2> t(S2(1, 3), {1.0, 2.0, -1.5});
  auto x = parameter(t);
  auto run = [&] { sum(x * x).backward(); };  // dl/dx = 2x
  run();
  run();
  for (index_t i = 0; i < 3; ++i) CHECK(x.grad().data()[i] == 4 * t.data()[i]);
  x.zero_grad();
  CHECK_FALSE(x.has_grad());
  CHECK(x.grad()(0, 1) == 0.0);
  run();
  for (index_t i = 0; i < 3; ++i) CHECK(x.grad().data()[i] == 2 * t.data()[i]);
  // A var used twice in one graph accumulates both paths: d(x*x + x)/dx = 2x + 1.
  x.zero_grad();
  sum(x * x + x).backward();
  for (index_t i = 0; i < 3; ++i) CHECK(x.grad().data()[i] == 2 * t.data()[i] + 1);
}

// linear, matmul, cross_entropy, reshape, permute, the unary ops, layer_norm and same-shape
// accumulate_grad assign the first gradient that reaches an input (no zero fill) and add later
// ones. Whichever path runs first, the gradient of
// a var feeding two ops must be the sum of the two, a second backward must add the same gradient
// again, and rows of the logits whose target is ignored must be exactly zero.
TEST_CASE("the first gradient is assigned, later ones add: linear, matmul, cross_entropy, ...") {
  auto g = tfm_test::rng(12);
  const auto xv = frnd(S2(5, 7), g), wv = frnd(S2(3, 7), g), bv = frnd(S2(7, 4), g);
  const auto cv = frnd(S2(5, 7), g);  // d sum(x * c)/dx = c: the other path into x
  tensor<std::int32_t, S1> tgt{S1(5), {2, -100, 0, 1, -100}};
  auto grads = [](const var<float, S2>& v) {
    std::vector<float> out(v.grad().data(), v.grad().data() + v.size());
    return out;
  };
  using loss_fn = var<float, shape<>> (*)(const var<float, S2>&, const var<float, S2>&,
                                          const var<float, S2>&, const tensor<std::int32_t, S1>&);
  const std::pair<const char*, loss_fn> cases[] = {
      {"linear",
       [](const auto& x, const auto& w, const auto&, const auto&) {
         auto y = linear(x, w, none);  // one linear node: one contribution to x
         return sum(y * y);
       }},
      {"matmul", [](const auto& x, const auto&, const auto& b,
                    const auto&) { return sum(exp(matmul(x, b) * 0.1f)); }},
      {"cross_entropy", [](const auto& x, const auto&, const auto&,
                           const auto& t) { return cross_entropy<ce_reduction::sum>(x, t); }},
      {"reshape", [](const auto& x, const auto&, const auto&,
                     const auto&) { return sum(exp(reshape(x, S2(7, 5)) * 0.1f)); }},
      {"permute", [](const auto& x, const auto&, const auto&,
                     const auto&) { return sum(exp(permute<1, 0>(x) * 0.1f)); }},
      {"gelu", [](const auto& x, const auto&, const auto&,
                  const auto&) { return sum(exp(gelu(x) * 0.1f)); }},
      {"layer_norm", [](const auto& x, const auto&, const auto&,
                        const auto&) { return sum(exp(layer_norm(x, none, none) * 0.1f)); }},
  };
  for (const auto& named : cases) {
    const char* name = named.first;  // not a structured binding: Clang 14 cannot capture those
    const loss_fn loss = named.second;
    CAPTURE(name);
    auto x = parameter(xv), w = parameter(wv), b = parameter(bv);
    const auto c = constant(cv);
    loss(x, w, b, tgt).backward();
    const auto gx = grads(x), gw = grads(w), gb = grads(b);
    for (float v : gx) REQUIRE(std::isfinite(v));
    if (std::string(name) == "cross_entropy")
      for (index_t j = 0; j < 7; ++j) {  // ignored targets (rows 1 and 4): exactly zero
        CHECK(gx[static_cast<std::size_t>(7 + j)] == 0.0f);
        CHECK(gx[static_cast<std::size_t>(28 + j)] == 0.0f);
      }
    // A second backward adds the same gradient: exactly twice the first.
    loss(x, w, b, tgt).backward();
    for (std::size_t i = 0; i < gx.size(); ++i) CHECK(grads(x)[i] == 2 * gx[i]);
    for (std::size_t i = 0; i < gw.size(); ++i) CHECK(grads(w)[i] == 2 * gw[i]);
    for (std::size_t i = 0; i < gb.size(); ++i) CHECK(grads(b)[i] == 2 * gb[i]);
    // x feeding a second op: the op's vjp runs first or second depending on the order of the
    // terms; both orders give gx + c (rounded once) in every element.
    for (int order = 0; order < 2; ++order) {
      CAPTURE(order);
      x.zero_grad();
      auto other = sum(x * c);
      auto l = order == 0 ? loss(x, w, b, tgt) + other : other + loss(x, w, b, tgt);
      l.backward();
      const auto got = grads(x);
      for (std::size_t i = 0; i < gx.size(); ++i) CHECK(got[i] == gx[i] + cv.data()[i]);
    }
  }
}

TEST_CASE("retain_graph keeps the graph for a second backward") {
  tensor<double, S2> t(S2(1, 3), {0.5, -1.0, 2.0});
  auto x = parameter(t);
  auto l = sum(exp(x) * 2.0);  // dl/dx = 2 exp(x)
  l.backward({.retain_graph = true});
  for (index_t i = 0; i < 3; ++i)
    CHECK(x.grad().data()[i] == doctest::Approx(2 * std::exp(t.data()[i])).epsilon(1e-14));
  CHECK(std::string(l.op_name()) == "sum");  // the graph is still there
  CHECK(gc::recorded_ops(l) == std::set<std::string>{"sum", "mul", "exp"});
  l.backward();
  CHECK(x.has_grad());
  CHECK(l.is_leaf());  // freed by the second backward (no retain_graph)
}

// With retain_graph the intermediates' (and a non-leaf root's) gradients are released after each
// pass, so the second backward adds exactly one more gradient: 4 exp(x), as PyTorch gives.
TEST_CASE("a second backward through a retained graph adds the same gradient again") {
  tensor<double, S2> t(S2(1, 3), {0.5, -1.0, 2.0});
  auto x = parameter(t);
  auto l = sum(exp(x) * 2.0);
  l.backward({.retain_graph = true});
  l.backward();
  for (index_t i = 0; i < 3; ++i)
    CHECK(x.grad().data()[i] == doctest::Approx(4 * std::exp(t.data()[i])).epsilon(1e-14));
}

// After the graph is freed, a second backward on the same output raises (PyTorch: "Trying to
// backward through the graph a second time") instead of silently doing nothing.
TEST_CASE("a second backward without retain_graph is reported") {
  tensor<double, S2> t(S2(1, 2), {0.5, -1.0});
  auto x = parameter(t);
  auto l = sum(exp(x));
  l.backward();
  CHECK_THROWS_AS(l.backward(), tfm::value_error);
}

TEST_CASE("backward frees the graph: memory returns to the pre-forward level") {
  auto g = tfm_test::rng(12);
  small_model m(g);
  for (auto* p : m.mats()) (void)p->grad();  // allocate the gradient buffers up front
  for (auto* p : m.vecs()) (void)p->grad();
  const auto base = memory_stats().current_bytes;
  MESSAGE("bytes held by the model and its gradients: ", base);
  {
    auto l = m.loss();
    const auto fwd = memory_stats().current_bytes;
    MESSAGE("recorded graph after the forward: ", fwd - base, " bytes");
    CHECK(fwd > base + 4096);
    l.backward();
    const auto after = memory_stats().current_bytes;
    MESSAGE("after backward, with the loss var alive: ", after - base, " bytes");
    CHECK(after - base <= 2 * TFM_DEFAULT_ALIGNMENT);  // the loss's value and gradient
    CHECK(l.is_leaf());
  }
  CHECK(memory_stats().current_bytes == base);
  // retain_graph keeps the graph until the loss is dropped; then it all goes (no cycles).
  {
    auto l = m.loss();
    const auto fwd = memory_stats().current_bytes;
    l.backward({.retain_graph = true});
    CHECK(memory_stats().current_bytes >= fwd - 2 * TFM_DEFAULT_ALIGNMENT);
    CHECK_FALSE(l.is_leaf());
  }
  CHECK(memory_stats().current_bytes == base);
  // A forward that is never differentiated frees everything too.
  { auto l = m.loss(); }
  CHECK(memory_stats().current_bytes == base);
}

TEST_CASE("anomaly mode names the op whose forward made a NaN or whose backward made an Inf") {
  tensor<double, S2> neg(S2(1, 3), {1.0, -1.0, 2.0});
  auto x = parameter(neg);
  auto message_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const tfm::value_error& e) {
      return e.what();
    }
    return "(no value_error)";
  };
  {
    anomaly_mode on;
    CHECK(anomaly_mode::enabled());
    const std::string m = message_of([&] { (void)log(x); });
    MESSAGE(m);
    CHECK(m.find("'log'") != std::string::npos);
    CHECK(m.find("forward") != std::string::npos);
  }
  CHECK_FALSE(anomaly_mode::enabled());
  CHECK(std::isnan(log(x).value()(0, 1)));  // off: the NaN flows silently
  tensor<double, S2> z(S2(1, 3), {0.0, 1.0, 4.0});
  auto y = parameter(z);
  {
    anomaly_mode on;
    const std::string m = message_of([&] { sum(sqrt(y) * 2.0).backward(); });
    MESSAGE(m);
    CHECK(m.find("'sqrt'") != std::string::npos);
    CHECK(m.find("backward") != std::string::npos);
  }
  y.zero_grad();
  sum(sqrt(y)).backward();  // off: d sqrt(y)/dy at 0 is +Inf
  CHECK(std::isinf(y.grad()(0, 0)));
  CHECK(y.grad()(0, 2) == 0.25);
}
