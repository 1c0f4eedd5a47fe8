// LoRA on nn::gpt (nn/lora.hpp, ops/lora_linear.hpp): the fused op against a float64 loop, a
// fresh adapter leaves the model unchanged, only the adapter trains and its loss falls, merge and
// unmerge, switching adapters, a frozen_weight base, and the errors.
#include "tfm_test.hpp"
#include "tiny_llama.hpp"

#include <typeformer/nn/lora.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

using namespace tfm;

namespace {

using tfm_test::tiny_llama;

using model_t = nn::gpt<nn::dynamic_config, float>;
using ids_t = model_t::ids_type;

using tfm_test::random_ids;

std::vector<float> logits_of(const model_t& m, const ids_t& ids) {
  no_grad ng;
  auto l = m.forward(ids);
  return {l.value().data(), l.value().data() + l.size()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    d = std::max(d, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return d;
}

std::vector<float> snapshot(const nn::parameter_list<float>& ps) {
  std::vector<float> v;
  for (const auto& p : ps)
    v.insert(v.end(), p.data->value.data(), p.data->value.data() + p.data->size());
  return v;
}

/// Trains `a` on m for `steps` AdamW steps over one batch; returns the first and last loss.
std::pair<double, double> train(model_t& m, nn::lora_adapter<float>& a, const ids_t& x,
                                const ids_t& y, int steps, double lr) {
  nn::attach(m, a);
  optim::adam_options o;
  o.lr = lr;
  auto opt = optim::adamw(a.parameters(), o);
  double first = 0, last = 0;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto loss = m.loss(x, y, true);
    if (s == 0) first = loss.item();
    last = loss.item();
    loss.backward();
    opt.step();
  }
  return {first, last};
}

/// A dense frozen_weight: the oracle for the interface.
struct dense_frozen final : frozen_weight<float> {
  index_t r, c;
  std::vector<float> w;
  index_t rows() const noexcept override { return r; }
  index_t cols() const noexcept override { return c; }
  void matmul_bt(const float* x, index_t M, float* y, float beta) const override {
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < r; ++j) {
        double s = 0;
        for (index_t k = 0; k < c; ++k)
          s += double(x[i * c + k]) * w[static_cast<std::size_t>(j * c + k)];
        y[i * r + j] = static_cast<float>(s + (beta != 0 ? double(beta) * y[i * r + j] : 0.0));
      }
  }
  void matmul(const float* dy, index_t M, float* dx, float beta) const override {
    for (index_t i = 0; i < M; ++i)
      for (index_t k = 0; k < c; ++k) {
        double s = 0;
        for (index_t j = 0; j < r; ++j)
          s += double(dy[i * r + j]) * w[static_cast<std::size_t>(j * c + k)];
        dx[i * c + k] = static_cast<float>(s + (beta != 0 ? double(beta) * dx[i * c + k] : 0.0));
      }
  }
  void dequantize(float* out) const override {
    std::memcpy(out, w.data(), w.size() * sizeof(float));
  }
  std::size_t bytes() const noexcept override { return w.size() * sizeof(float); }
};

}  // namespace

TEST_CASE("lora_linear: forward equals the float64 formula, parts write only their rows") {
  auto g = tfm_test::rng(3);
  std::uniform_real_distribution<float> d(-1, 1);
  const index_t M = 7, in = 9, out = 10;
  auto rnd = [&](index_t r, index_t c) {
    tensor<float, dyn_shape<2>> t(dyn_shape<2>(r, c));
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = d(g);
    return t;
  };
  auto xt = rnd(M, in), wt = rnd(out, in), a1 = rnd(4, in), b1 = rnd(3, 4), a2 = rnd(2, in),
       b2 = rnd(5, 2);
  lora_update<float> u;
  u.scale = 0.75;
  u.parts.push_back({1, 3, var<float, dyn_shape<2>>(a1, true), var<float, dyn_shape<2>>(b1, true)});
  u.parts.push_back({5, 5, var<float, dyn_shape<2>>(a2, true), var<float, dyn_shape<2>>(b2, true)});
  var<float, dyn_shape<2>> x(xt), w(wt);
  var<float, dyn_shape<1>> nob;
  auto y = lora_linear(x, w, nullptr, nob, &u);
  double worst = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < out; ++j) {
      double ref = 0;
      for (index_t k = 0; k < in; ++k) ref += double(xt(i, k)) * wt(j, k);
      auto add = [&](index_t row0, const auto& A, const auto& B) {
        if (j < row0 || j >= row0 + B.extent(0)) return;
        for (index_t q = 0; q < A.extent(0); ++q) {
          double t = 0;
          for (index_t k = 0; k < in; ++k) t += double(xt(i, k)) * A(q, k);
          ref += 0.75 * t * B(j - row0, q);
        }
      };
      add(1, a1, b1);
      add(5, a2, b2);
      worst = std::max(worst, std::abs(ref - double(y.value()(i, j))));
    }
  MESSAGE("max |lora_linear - float64| = " << worst);
  CHECK(worst < 1e-5);
  // Disabled: the base map alone.
  u.enabled = false;
  auto y0 = lora_linear(x, w, nullptr, nob, &u);
  auto yl = linear(x, w);
  CHECK(std::memcmp(y0.value().data(), yl.value().data(), sizeof(float) * y0.size()) == 0);
  // A frozen_weight base gives the dense result.
  u.enabled = true;
  auto fz = std::make_shared<dense_frozen>();
  fz->r = out;
  fz->c = in;
  fz->w.assign(wt.data(), wt.data() + wt.size());
  var<float, dyn_shape<2>> none_w;
  auto yf = lora_linear(x, none_w, fz, nob, &u);
  double df = 0;
  for (index_t i = 0; i < y.size(); ++i)
    df = std::max(df, std::abs(double(y.value().data()[i]) - yf.value().data()[i]));
  CHECK(df < 1e-5);
  // Shape errors are reported, not undefined.
  lora_update<float> bad;
  bad.parts.push_back(
      {8, 3, var<float, dyn_shape<2>>(a1, true), var<float, dyn_shape<2>>(b1, true)});
  CHECK_THROWS_AS(lora_linear(x, w, nullptr, nob, &bad), shape_error);
}

TEST_CASE("lora on nn::gpt: a fresh adapter changes nothing; only the adapter trains") {
  auto g = tfm_test::rng(5);
  model_t m(tiny_llama(), 7);
  // A frozen head of N(0, 0.02) bounds the logits near 0 whatever the blocks do (ln_f
  // normalises); N(0, 0.5) lets the adapter fit the batch.
  for (index_t i = 0; i < m.lm_head.weight.size(); ++i)
    m.lm_head.weight.data()->value.data()[i] *= 25;
  const ids_t x = random_ids(2, 12, 61, g), y = random_ids(2, 12, 61, g);
  const auto before = logits_of(m, x);
  nn::lora_config lc;
  lc.rank = 4;
  lc.alpha = 8;
  auto a = nn::make_lora(m, lc);
  CHECK(a.sites.size() == 2 * 5);  // attn (q, k, v), o, gate, up, down per layer
  CHECK(a.parameters().size() == 2 * 7 * 2);
  nn::freeze(m);
  nn::attach(m, a);
  CHECK(max_abs_diff(before, logits_of(m, x)) == 0);
  const auto base = snapshot(m.parameters());
  {
    auto loss = m.loss(x, y, true);
    loss.backward();
    for (const auto& p : m.parameters()) CHECK_MESSAGE(!p.data->has_grad(), p.name);
    int b_with_grad = 0;
    for (const auto& p : a.parameters())
      if (p.data->has_grad() && p.name.find("lora_B") != std::string::npos) ++b_with_grad;
    CHECK(b_with_grad == 14);
  }
  const auto [first, last] = train(m, a, x, y, 40, 1e-2);
  MESSAGE("LoRA on a tiny llama: loss " << first << " -> " << last << " in 40 steps");
  CHECK(last < 0.5 * first);
  CHECK(snapshot(m.parameters()) == base);  // the base is bitwise untouched
}

TEST_CASE("lora: merge equals the adapter's forward, unmerge restores the weights") {
  auto g = tfm_test::rng(6);
  model_t m(tiny_llama(), 8);
  const ids_t x = random_ids(2, 10, 61, g), y = random_ids(2, 10, 61, g);
  nn::lora_config lc;
  lc.rank = 3;
  lc.alpha = 6;
  lc.rslora = true;
  auto a = nn::make_lora(m, lc);
  nn::freeze(m);
  train(m, a, x, y, 15, 2e-2);
  const auto with_adapter = logits_of(m, x);
  const auto base = snapshot(m.parameters());
  nn::merge(m, a);
  const auto merged = logits_of(m, x);
  double scale = 0;
  for (float v : with_adapter) scale = std::max(scale, std::abs(double(v)));
  const double dm = max_abs_diff(with_adapter, merged);
  MESSAGE("merged vs adapter logits: max |diff| = " << dm << " (logits up to " << scale << ")");
  CHECK(dm < 2e-5 * std::max(1.0, scale));
  CHECK(max_abs_diff(base, snapshot(m.parameters())) > 0);  // the weights did change
  CHECK_THROWS_AS(nn::merge(m, a), value_error);
  nn::unmerge(m, a);
  CHECK(max_abs_diff(base, snapshot(m.parameters())) < 1e-6);
  CHECK(max_abs_diff(with_adapter, logits_of(m, x)) < 2e-5 * std::max(1.0, scale));
  CHECK_THROWS_AS(nn::unmerge(m, a), value_error);
}

TEST_CASE("lora: several adapters on one base, switched at run time") {
  auto g = tfm_test::rng(9);
  model_t m(tiny_llama(), 9);
  const ids_t x = random_ids(1, 9, 61, g), y1 = random_ids(1, 9, 61, g),
              y2 = random_ids(1, 9, 61, g);
  nn::freeze(m);
  const auto base = logits_of(m, x);
  nn::lora_config lc;
  lc.rank = 2;
  lc.targets = {"q_proj", "v_proj", "down"};
  auto a = nn::make_lora(m, lc);
  lc.seed = 1;
  lc.targets = {"all-linear"};
  auto b = nn::make_lora(m, lc);
  train(m, a, x, y1, 10, 2e-2);
  train(m, b, x, y2, 10, 2e-2);
  nn::attach(m, a);
  const auto la = logits_of(m, x);
  nn::attach(m, b);
  const auto lb = logits_of(m, x);
  nn::attach(m, a);
  CHECK(logits_of(m, x) == la);
  CHECK(max_abs_diff(la, lb) > 1e-3);
  nn::detach(m);
  CHECK(logits_of(m, x) == base);
  CHECK(a.sites.size() == 2 * 2);  // c_attn (q, v) and down per layer
}

TEST_CASE("lora: dropout masks differ per call in training and are off in evaluation") {
  auto g = tfm_test::rng(10);
  model_t m(tiny_llama(), 10);
  const ids_t x = random_ids(1, 8, 61, g), y = random_ids(1, 8, 61, g);
  nn::lora_config lc;
  lc.dropout = 0.5;
  auto a = nn::make_lora(m, lc);
  nn::freeze(m);
  train(m, a, x, y, 5, 2e-2);  // B != 0, dropout off (a.train(false) by default)
  const auto e1 = logits_of(m, x);
  CHECK(logits_of(m, x) == e1);
  a.train(true);
  const auto t1 = logits_of(m, x);
  const auto t2 = logits_of(m, x);
  CHECK(max_abs_diff(t1, t2) > 0);
  CHECK(max_abs_diff(t1, e1) > 0);
  a.train(false);
  CHECK(logits_of(m, x) == e1);
}

TEST_CASE("lora: bad configurations are errors that name the field") {
  model_t m(tiny_llama(), 1);
  nn::lora_config lc;
  lc.rank = 0;
  CHECK_THROWS_WITH_AS(nn::make_lora(m, lc), doctest::Contains("rank"), value_error);
  lc = {};
  lc.alpha = -1;
  CHECK_THROWS_WITH_AS(nn::make_lora(m, lc), doctest::Contains("alpha"), value_error);
  lc = {};
  lc.dropout = 1.0;
  CHECK_THROWS_WITH_AS(nn::make_lora(m, lc), doctest::Contains("dropout"), value_error);
  lc = {};
  lc.targets = {"q", "qkv"};
  CHECK_THROWS_WITH_AS(nn::make_lora(m, lc), doctest::Contains("qkv"), value_error);
  auto gc = tiny_llama();
  gc.mlp = nn::mlp_kind::gelu;
  model_t mg(gc, 1);
  lc = {};
  lc.targets = {"gate"};
  CHECK_THROWS_WITH_AS(nn::make_lora(mg, lc), doctest::Contains("gate"), value_error);
  // An adapter made for a wider model does not attach.
  auto wide = tiny_llama();
  wide.n_embd = 64;
  wide.ffn = 96;
  model_t mw(wide, 1);
  auto aw = nn::make_lora(mw, nn::lora_config{});
  CHECK_THROWS_AS(nn::attach(m, aw), shape_error);
}

TEST_CASE("lora with gradient checkpointing: the same loss and gradients; dropout is refused") {
  auto g = tfm_test::rng(12);
  model_t m(tiny_llama(), 12);
  const ids_t x = random_ids(2, 10, 61, g), y = random_ids(2, 10, 61, g);
  nn::lora_config lc;
  lc.rank = 3;
  auto a = nn::make_lora(m, lc);
  nn::freeze(m);
  train(m, a, x, y, 3, 2e-2);  // B != 0
  auto grads = [&]() {
    for (const auto& p : a.parameters()) p.data->release_grad();
    auto l = m.loss(x, y, true);
    l.backward();
    std::vector<float> v{l.item()};
    for (const auto& p : a.parameters())
      v.insert(v.end(), p.data->grad.data(), p.data->grad.data() + p.data->size());
    return v;
  };
  const auto plain = grads();
  m.set_checkpointing(true);
  CHECK(grads() == plain);
  a.config.dropout = 0.1;
  for (auto& s : a.sites) s.update->dropout = 0.1;
  a.train(true);
  CHECK_THROWS_AS(m.loss(x, y, true), unsupported_error);
  a.train(false);
  CHECK_NOTHROW(m.loss(x, y, true));
}
