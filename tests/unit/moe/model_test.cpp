// Mixture-of-experts models (issue 22 items 3 and 5): nn::moe_ffn against a by-hand float64
// reference (router softmax, top-k, gates, SwiGLU experts, shared experts), the expert tables'
// static types, nn::gpt with mlp = moe (balancing losses in loss(), statistics, gradients by
// central differences, KV-cached decoding equal to the full forward, thread-count
// independence, training with the sigmoid_bias balancer and its checkpoint state), and the
// config fields' flags and errors.
#include <doctest/doctest.h>
#include <typeformer/infer/kv_cache.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/train/trainer.hpp>

#include "tfm_test.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

using namespace tfm;

namespace {

nn::dynamic_config tiny_moe() {
  nn::dynamic_config c;
  c.vocab = 19;
  c.block_size = 12;
  c.n_layer = 2;
  c.n_embd = 8;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.ffn = 12;
  c.norm = nn::norm_kind::rms_norm;
  c.position = nn::position_kind::rope;
  c.bias = false;
  c.tie_embeddings = false;
  c.mlp = nn::mlp_kind::moe;
  c.n_expert = 4;
  c.n_expert_used = 2;
  c.expert_ffn = 6;
  return c;
}

using ids_t = nn::gpt<nn::dynamic_config, double>::ids_type;

void fill_ids(ids_t& x, ids_t& y, std::uint64_t seed, index_t vocab) {
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] =
        static_cast<std::int32_t>((i * 7 + seed * 3 + 1) % static_cast<std::uint64_t>(vocab));
    y.data()[i] = static_cast<std::int32_t>((i * 5 + seed + 2) % static_cast<std::uint64_t>(vocab));
  }
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }

/// y = sum over the k chosen experts of softmax(chosen logits) * SwiGLU_e(x), by hand, + shared.
std::vector<double> reference_moe(const nn::moe_ffn<double, nn::dynamic_config>& m,
                                  const std::vector<double>& x, index_t N, index_t C) {
  const auto& s = m.settings();
  const index_t E = s.n_expert, k = s.n_expert_used, F = s.expert_width;
  const double* R = m.router.weight.value().data();
  const double* G = m.w_gate.value().data();
  const double* U = m.w_up.value().data();
  const double* D = m.w_down.value().data();
  std::vector<double> y(static_cast<std::size_t>(N * C), 0.0);
  auto swiglu = [&](const double* g, const double* u, const double* d, index_t width,
                    const double* xr, double weight, double* out) {
    for (index_t f = 0; f < width; ++f) {
      double a = 0, b = 0;
      for (index_t c = 0; c < C; ++c) {
        a += g[f * C + c] * xr[c];
        b += u[f * C + c] * xr[c];
      }
      const double h = silu(a) * b;
      for (index_t c = 0; c < C; ++c) out[c] += weight * d[c * width + f] * h;
    }
  };
  for (index_t n = 0; n < N; ++n) {
    const double* xr = x.data() + n * C;
    std::vector<double> l(static_cast<std::size_t>(E));
    for (index_t e = 0; e < E; ++e) {
      double a = 0;
      for (index_t c = 0; c < C; ++c) a += R[e * C + c] * xr[c];
      l[static_cast<std::size_t>(e)] = a;
    }
    std::vector<index_t> order(static_cast<std::size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
      return l[static_cast<std::size_t>(a)] > l[static_cast<std::size_t>(b)];
    });
    double mx = l[static_cast<std::size_t>(order[0])], z = 0;
    for (index_t j = 0; j < k; ++j) z += std::exp(l[static_cast<std::size_t>(order[j])] - mx);
    for (index_t j = 0; j < k; ++j) {
      const index_t e = order[static_cast<std::size_t>(j)];
      const double gate = std::exp(l[static_cast<std::size_t>(e)] - mx) / z;
      swiglu(G + e * F * C, U + e * F * C, D + e * C * F, F, xr, gate, y.data() + n * C);
    }
    if (s.n_shared_expert > 0) {
      const index_t W = s.n_shared_expert * F;
      swiglu(m.shared.gate_proj().weight.value().data(), m.shared.up_proj().weight.value().data(),
             m.shared.down_proj().weight.value().data(), W, xr, 1.0, y.data() + n * C);
    }
  }
  return y;
}

struct static_moe {
  static constexpr index_t vocab = 32, block_size = 16, n_layer = 1, n_embd = 16, n_head = 2,
                           n_kv_head = 2, ffn = 32, window = 0, n_expert = 4, n_expert_used = 2,
                           expert_ffn = 8, n_shared_expert = 0;
  static constexpr nn::norm_kind norm = nn::norm_kind::rms_norm;
  static constexpr nn::mlp_kind mlp = nn::mlp_kind::moe;
  static constexpr nn::position_kind position = nn::position_kind::rope;
  static constexpr bool bias = false, tie_embeddings = true;
  static constexpr double norm_eps = 1e-5, rope_base = 10000.0, dropout = 0.0;
};

}  // namespace

TEST_CASE("moe_ffn equals a by-hand float64 reference (softmax top-k, SwiGLU experts, shared)") {
  for (index_t shared : {0, 1}) {
    auto c = tiny_moe();
    c.n_shared_expert = shared;
    nn::moe_ffn<double, nn::dynamic_config> m(c, 11, "mlp");
    const index_t N = 9, C = c.n_embd;
    auto r = tfm_test::rng(5);
    std::normal_distribution<double> nd;
    tensor<double, shape<dyn, dyn>> xt(N, C);
    for (index_t i = 0; i < xt.size(); ++i) xt.data()[i] = nd(r);
    MESSAGE("moe seed 11, data salt 5, shared experts ", shared);
    const std::vector<double> x(xt.data(), xt.data() + xt.size());
    auto y = m(var<double, shape<dyn, dyn>>(xt));
    const auto ref = reference_moe(m, x, N, C);
    double worst = 0;
    for (index_t i = 0; i < y.size(); ++i)
      worst = std::max(worst, std::abs(y.value().data()[i] - ref[static_cast<std::size_t>(i)]));
    CHECK(worst < 1e-12);
    MESSAGE("max |moe_ffn - reference| ", worst);
    // Names and shapes (the GGUF exporter and the checkpoint rely on them).
    nn::parameter_list<double> ps;
    m.collect(ps);
    std::vector<std::string> names;
    for (const auto& p : ps) names.push_back(p.name);
    std::vector<std::string> want{"mlp.router.weight", "mlp.experts.gate", "mlp.experts.up",
                                  "mlp.experts.down"};
    if (shared) {
      for (const char* n :
           {"mlp.shared.gate.weight", "mlp.shared.up.weight", "mlp.shared.down.weight"})
        want.emplace_back(n);
    }
    CHECK(names == want);
    CHECK(m.w_gate.extent(0) == 4);
    CHECK(m.w_gate.extent(1) == 6);
    CHECK(m.w_down.extent(1) == 8);
    CHECK(m.last_stats().tokens == N);
    CHECK(std::accumulate(m.last_stats().load.begin(), m.last_stats().load.end(), index_t{0}) ==
          N * 2);
  }
}

TEST_CASE("a static MoE config puts E and the expert width in the parameter types") {
  nn::block<float, static_moe> b(static_moe{}, 3, "h.0");
  static_assert(std::is_same_v<decltype(b.moe_.w_gate), var<float, shape<4, 8, 16>>>);
  static_assert(std::is_same_v<decltype(b.moe_.w_down), var<float, shape<4, 16, 8>>>);
  static_assert(std::is_same_v<decltype(b.moe_.router.weight), var<float, shape<4, 16>>>);
  static_assert(nn::static_n_expert<nn::gpt2_tiny> == dyn);  // a preset without the fields
  CHECK(b.is_moe());
  nn::parameter_list<float> ps;
  b.collect(ps);
  CHECK(ps.size() == 8);  // ln_1, c_attn, c_proj, ln_2; router, gate, up, down
}

TEST_CASE("MoE gpt: balancing losses in loss(), statistics, active parameters") {
  auto c = tiny_moe();
  c.moe_aux_loss = 0.05;
  c.moe_z_loss = 0.002;
  nn::gpt<nn::dynamic_config, double> m(c, 7);
  ids_t x(2, 6), y(2, 6);
  fill_ids(x, y, 1, c.vocab);
  const double eval = m.loss(x, y, false).value()();
  CHECK(m.last_balancing_loss() == 0.0);
  const double train = m.loss(x, y, true).value()();
  const double bal = m.last_balancing_loss();
  CHECK(bal > 0.05 * 0.9);  // E sum f P >= 1 (equality at uniform routing), plus the z-loss
  CHECK(train == doctest::Approx(eval + bal).epsilon(1e-12));
  // The aux part by hand from the statistics and the router of layer 0.
  const auto st = m.moe_stats();
  REQUIRE(st.size() == 2);
  for (const auto& s : st) {
    CHECK(s.tokens == 12);
    CHECK(s.k == 2);
    CHECK(std::accumulate(s.selected.begin(), s.selected.end(), index_t{0}) == 24);
    CHECK(s.entropy > 0);
    CHECK(s.entropy <= std::log(4.0) + 1e-12);
  }
  const auto sum = m.summary(6);
  CHECK(sum.active == sum.non_embedding - 2 * (4 - 2) * 3 * 6 * 8);
  // A dense model has none of it.
  auto d = tiny_moe();
  d.mlp = nn::mlp_kind::swiglu;
  nn::gpt<nn::dynamic_config, double> dense(d, 7);
  (void)dense.loss(x, y, true);
  CHECK(dense.moe_stats().empty());
  CHECK(dense.last_balancing_loss() == 0.0);
  CHECK(dense.summary(6).active == dense.summary(6).non_embedding);
}

TEST_CASE(
    "MoE gpt: gradients of the training loss (with aux and z losses) match finite differences") {
  for (auto router : {moe_router_kind::softmax_topk, moe_router_kind::sigmoid_bias,
                      moe_router_kind::noisy_topk}) {
    auto c = tiny_moe();
    c.router = router;
    c.moe_aux_loss = 0.1;
    c.moe_z_loss = 0.01;
    c.n_shared_expert = router == moe_router_kind::sigmoid_bias ? 1 : 0;
    nn::gpt<nn::dynamic_config, double> m(c, 3);
    ids_t x(2, 5), y(2, 5);
    fill_ids(x, y, 2, c.vocab);
    MESSAGE("model seed 3, router ", std::string(train::to_string(router)));
    auto ps = m.parameters();
    if (router == moe_router_kind::noisy_topk)  // a noise scale away from its zero start
      for (auto& p : ps)
        if (p.name.find("noise") != std::string::npos)
          for (index_t i = 0; i < p.data->size(); ++i)
            p.data->value.data()[i] = 0.3 * std::sin(static_cast<double>(i));
    m.set_dropout_offset(0);  // the noise stream: the same draws in every evaluation below
    m.loss(x, y, true).backward();
    double worst = 0;
    for (auto& p : ps) {
      const index_t n = p.data->size();
      for (index_t k = 0; k < n; k += std::max<index_t>(1, n / 4)) {
        double* w = p.data->value.data() + k;
        const double keep = *w;
        no_grad ng;
        *w = keep + 1e-6;
        m.set_dropout_offset(0);
        const double lp = m.loss(x, y, true).value()();
        *w = keep - 1e-6;
        m.set_dropout_offset(0);
        const double lm = m.loss(x, y, true).value()();
        *w = keep;
        const double num = (lp - lm) / 2e-6, an = p.data->grad_data()[k];
        CHECK_MESSAGE(std::abs(an - num) <= 1e-6 + 1e-4 * std::abs(num), p.name, "[", k,
                      "] analytic ", an, " numeric ", num);
        if (std::abs(num) > 1e-4) worst = std::max(worst, std::abs(an - num) / std::abs(num));
      }
    }
    MESSAGE("worst relative error (|g| > 1e-4) ", worst);
  }
}

TEST_CASE("MoE gpt: KV-cached decoding equals the full forward; thread count changes nothing") {
  auto c = tiny_moe();
  nn::gpt<nn::dynamic_config, float> m(c, 5);
  nn::gpt<nn::dynamic_config, float>::ids_type ids(1, 8);
  for (index_t t = 0; t < 8; ++t) ids.data()[t] = static_cast<std::int32_t>((t * 5 + 3) % 19);
  const auto full = m.forward(ids);
  infer::kv_cache<float> cache(c.n_layer, 1, c.n_kv_head, c.block_size, c.n_embd / c.n_head);
  double worst = 0;
  for (index_t t = 0; t < 8; ++t) {
    nn::gpt<nn::dynamic_config, float>::ids_type one(1, 1);
    one.data()[0] = ids.data()[t];
    const auto step = m.forward(one, false, t, &cache);
    for (index_t v = 0; v < c.vocab; ++v)
      worst = std::max(worst, static_cast<double>(std::abs(step.value().data()[v] -
                                                           full.value().data()[t * c.vocab + v])));
  }
  CHECK(worst < 1e-5);
  MESSAGE("max |decode - full forward| ", worst);
  // Loss and gradients bitwise the same on 1 and 2 threads.
  auto grads = [&](int threads) {
    const int before = num_threads();
    set_num_threads(threads);
    nn::gpt<nn::dynamic_config, float> g(c, 5);
    nn::gpt<nn::dynamic_config, float>::ids_type x(4, 12), y(4, 12);
    for (index_t i = 0; i < x.size(); ++i) {
      x.data()[i] = static_cast<std::int32_t>((i * 7 + 1) % 19);
      y.data()[i] = static_cast<std::int32_t>((i * 3 + 2) % 19);
    }
    auto l = g.loss(x, y, true);
    l.backward();
    std::vector<float> out{l.value()()};
    for (const auto& p : g.parameters())
      out.insert(out.end(), p.data->grad_data(), p.data->grad_data() + p.data->size());
    set_num_threads(before);
    return out;
  };
  CHECK(grads(1) == grads(2));
}

TEST_CASE("MoE gpt trains: loss falls, the sigmoid_bias balancer moves and its state round-trips") {
  auto c = tiny_moe();
  c.router = moe_router_kind::sigmoid_bias;
  c.moe_aux_loss = 0;
  nn::gpt<nn::dynamic_config, float> m(c, 9);
  auto ps = m.parameters();
  optim::adam_options ao;
  ao.lr = 1e-2;
  auto opt = optim::adamw(ps, ao);
  nn::gpt<nn::dynamic_config, float>::ids_type x(4, 12), y(4, 12);
  for (index_t i = 0; i < x.size(); ++i) {  // a learnable pattern: next = (id + 1) mod V
    x.data()[i] = static_cast<std::int32_t>((i * 7) % 19);
    y.data()[i] = static_cast<std::int32_t>((x.data()[i] + 1) % 19);
  }
  const double first = m.loss(x, y, false).value()();
  for (int s = 0; s < 30; ++s) {
    opt.zero_grad();
    m.loss(x, y, true).backward();
    opt.step();
    m.moe_balance();
  }
  const double last = m.loss(x, y, false).value()();
  MESSAGE("loss ", first, " -> ", last);
  CHECK(last < 0.5 * first);
  const auto bias = m.moe_bias();
  REQUIRE(bias.size() == 2);
  REQUIRE(bias[0].size() == 4);
  CHECK(std::any_of(bias[0].begin(), bias[0].end(), [](double b) { return b != 0; }));
  std::map<std::string, std::string> meta;
  train::put_moe_state(meta, m);
  CHECK(meta.count("moe.bias.0") == 1);
  nn::gpt<nn::dynamic_config, float> fresh(c, 9);
  train::get_moe_state(meta, fresh);
  CHECK(fresh.moe_bias() == bias);
  meta["moe.bias.1"] = "1,x,3,4";
  CHECK_THROWS_AS(train::get_moe_state(meta, fresh), parse_error);
  meta["moe.bias.1"] = "1,2,3";
  CHECK_THROWS_AS(train::get_moe_state(meta, fresh), shape_error);
}

TEST_CASE("MoE config: flags, checkpoint text and errors") {
  nn::dynamic_config c;
  CHECK(train::set_config_flag(c, "--mlp", "moe"));
  CHECK(train::set_config_flag(c, "--n-expert", "16"));
  CHECK(train::set_config_flag(c, "--n-expert-used", "4"));
  CHECK(train::set_config_flag(c, "--router", "expert_choice"));
  CHECK(train::set_config_flag(c, "--moe-aux-loss", "0.02"));
  CHECK(c.mlp == nn::mlp_kind::moe);
  CHECK(c.n_expert == 16);
  CHECK(c.router == moe_router_kind::expert_choice);
  std::map<std::string, std::string> meta;
  train::put_config(meta, c);
  CHECK(meta["config.router"] == "expert_choice");
  CHECK(meta["config.mlp"] == "moe");
  const auto back = train::get_config(meta);
  CHECK(back.n_expert == 16);
  CHECK(back.moe_aux_loss == 0.02);
  try {
    train::set_config_flag(c, "--router", "topk");
    FAIL("no error");
  } catch (const value_error& e) {
    CHECK(std::string(e.what()).find("softmax_topk") != std::string::npos);
  }
  auto bad = tiny_moe();
  bad.n_expert_used = 5;
  try {
    nn::validate(bad);
    FAIL("no error");
  } catch (const value_error& e) {
    CHECK(std::string(e.what()).find("n_expert_used") != std::string::npos);
  }
  bad = tiny_moe();
  bad.n_expert = 0;
  CHECK_THROWS_AS(nn::validate(bad), value_error);
  // Gradient checkpointing cannot keep the balancing losses.
  auto ck = tiny_moe();
  nn::gpt<nn::dynamic_config, float> m(ck, 1);
  m.set_checkpointing(true);
  nn::gpt<nn::dynamic_config, float>::ids_type x(1, 4), y(1, 4);
  for (index_t i = 0; i < 4; ++i) x.data()[i] = y.data()[i] = static_cast<std::int32_t>(i);
  CHECK_THROWS_AS((void)m.loss(x, y, true), unsupported_error);
  ck.moe_aux_loss = 0;
  nn::gpt<nn::dynamic_config, float> m2(ck, 1);
  m2.set_checkpointing(true);
  CHECK(std::isfinite(m2.loss(x, y, true).value()()));
}

TEST_CASE(
    "noisy_topk: noise only while training, from the dropout stream; inference = softmax_topk") {
  auto c = tiny_moe();
  c.router = moe_router_kind::noisy_topk;
  nn::gpt<nn::dynamic_config, double> noisy(c, 4);
  auto plain_cfg = c;
  plain_cfg.router = moe_router_kind::softmax_topk;
  nn::gpt<nn::dynamic_config, double> plain(plain_cfg, 4);
  for (const auto& p : noisy.parameters()) {  // W_noise starts at 0
    const bool zero = p.name.find("noise") == std::string::npos || p.data->value.data()[0] == 0.0;
    CHECK(zero);
  }
  ids_t x(2, 6), y(2, 6);
  fill_ids(x, y, 3, c.vocab);
  // The same seed gives the same router and experts; the noise map is the only extra.
  CHECK(noisy.parameters().size() == plain.parameters().size() + 2);
  const double e1 = noisy.loss(x, y, false).value()(), e2 = plain.loss(x, y, false).value()();
  CHECK(e1 == e2);  // evaluation routes the clean logits
  noisy.set_dropout_offset(0);
  const double t1 = noisy.loss(x, y, true).value()();
  const std::uint64_t after = noisy.dropout_offset();
  CHECK(after == 2 * 12 * 4);  // N E draws per layer, 2 layers
  noisy.set_dropout_offset(0);
  const double t2 = noisy.loss(x, y, true).value()();
  CHECK(t1 == t2);                                     // the same offset, the same noise
  const double t3 = noisy.loss(x, y, true).value()();  // the stream moved on
  const double base = noisy.last_balancing_loss();
  CHECK(std::isfinite(base));
  CHECK(t3 != t1);
  MESSAGE("noisy_topk training losses at offsets 0 and 96: ", t1, ", ", t3, "; evaluation ", e1);
  CHECK(train::to_string(moe_router_kind::noisy_topk) == std::string("noisy_topk"));
}
