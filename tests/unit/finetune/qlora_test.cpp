// QLoRA (nn/qlora.hpp): the NF4 base against the same weights dequantized to f32 vars — logits,
// the adapter's gradients and a few training steps agree within f32 rounding — the bytes the
// base holds, the round trip through dequantize_base, and the errors.
#include "tfm_test.hpp"
#include "tiny_llama.hpp"

#include <typeformer/nn/lora.hpp>
#include <typeformer/nn/qlora.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

using namespace tfm;

namespace {
nn::dynamic_config tiny_llama64() { return tfm_test::tiny_llama(67, 64, 128, true); }
using model_t = nn::gpt<nn::dynamic_config, float>;
using ids_t = model_t::ids_type;

using tfm_test::random_ids;

double rel_diff(const float* a, const float* b, index_t n) {
  double d = 0, s = 0;
  for (index_t i = 0; i < n; ++i) {
    d = std::max(d, std::abs(double(a[i]) - double(b[i])));
    s = std::max(s, std::abs(double(b[i])));
  }
  return d / std::max(s, 1e-30);
}
}  // namespace

TEST_CASE("qlora: the NF4 base equals its dequantized f32 copy, forward and backward") {
  auto g = tfm_test::rng(21);
  const ids_t x = random_ids(2, 16, 67, g), y = random_ids(2, 16, 67, g);
  model_t q(tiny_llama64(), 3);
  const auto st = nn::quantize_base_nf4(q);
  CHECK(st.matrices == 2 * 5);
  const double bits = 8.0 * double(st.packed_bytes) / (double(st.f32_bytes) / 4.0);
  MESSAGE("NF4 base: " << st.packed_bytes << " bytes for " << st.f32_bytes << " f32 bytes (" << bits
                       << " bits per weight)");
  CHECK(bits < 4.3);
  for (const auto& p : q.parameters()) CHECK(p.name.find("c_attn") == std::string::npos);
  // The reference: the same model with the NF4 values as f32 vars.
  model_t d(tiny_llama64(), 3);
  nn::quantize_base_nf4(d);
  nn::dequantize_base(d);
  CHECK(d.parameters().size() == model_t(tiny_llama64(), 3).parameters().size());
  nn::lora_config lc;
  lc.rank = 4;
  lc.alpha = 8;
  auto aq = nn::make_lora(q, lc);
  auto ad = nn::make_lora(d, lc);
  for (auto* m : {&q, &d}) nn::freeze(*m);
  nn::attach(q, aq);
  nn::attach(d, ad);
  optim::adam_options o;
  o.lr = 1e-2;
  auto oq = optim::adamw(aq.parameters(), o);
  auto od = optim::adamw(ad.parameters(), o);
  double first = 0, last = 0;
  for (int step = 0; step < 4; ++step) {
    oq.zero_grad();
    od.zero_grad();
    auto lq = q.loss(x, y, true);
    auto ld = d.loss(x, y, true);
    CHECK(std::abs(lq.item() - ld.item()) < 1e-5 * std::abs(ld.item()));
    (step == 0 ? first : last) = lq.item();
    lq.backward();
    ld.backward();
    const auto pq = aq.parameters(), pd = ad.parameters();
    double worst = 0;
    for (std::size_t i = 0; i < pq.size(); ++i)
      worst = std::max(
          worst, rel_diff(pq[i].data->grad_data(), pd[i].data->grad_data(), pq[i].data->size()));
    CHECK_MESSAGE(worst < 1e-4, "step " << step << ": adapter gradients differ by " << worst);
    oq.step();
    od.step();
  }
  MESSAGE("QLoRA tiny model: loss " << first << " -> " << last);
  CHECK(last < first);
  // An NF4 base cannot be merged.
  CHECK_THROWS_AS(nn::merge(q, aq), unsupported_error);
}

TEST_CASE("qlora: NF4 logits stay close to the f32 model's; widths not a multiple of 64 fail") {
  auto g = tfm_test::rng(22);
  const ids_t x = random_ids(1, 12, 67, g);
  model_t f(tiny_llama64(), 4), q(tiny_llama64(), 4);
  nn::quantize_base_nf4(q);
  no_grad ng;
  auto lf = f.forward(x);
  auto lq = q.forward(x);
  const double r = rel_diff(lq.value().data(), lf.value().data(), lf.size());
  MESSAGE("NF4 vs f32 logits: max relative difference " << r);
  CHECK(r < 0.1);
  CHECK(r > 0);
  auto c = tiny_llama64();
  c.n_embd = 48;
  c.n_head = 4;
  c.n_kv_head = 2;
  model_t bad(c, 1);
  CHECK_THROWS_WITH_AS(nn::quantize_base_nf4(bad), doctest::Contains("multiple of 64"),
                       shape_error);
  CHECK(bad.parameters().size() == model_t(c, 1).parameters().size());  // nothing changed
}

// The tied embedding/head held in bf16 or NF4 (nn::quantize_embedding): loss, adapter gradients
// and logits against the same model whose f32 embedding holds the rounded values (bf16 by
// core/half.hpp's conversion, NF4 by quant/nf4.hpp's round trip), with and without gradient
// checkpointing, for the mean loss and the summed one with label smoothing.
TEST_CASE("qlora: the embedding in bf16 or NF4 equals its rounded f32 copy") {
  auto g = tfm_test::rng(23);
  const ids_t x = random_ids(2, 16, 67, g);
  ids_t y = random_ids(2, 16, 67, g);
  y.data()[3] = -100;
  for (auto how : {nn::embedding_storage::bf16, nn::embedding_storage::nf4}) {
    CAPTURE(static_cast<int>(how));
    model_t q(tiny_llama64(), 5), d(tiny_llama64(), 5);
    REQUIRE(q.config().tie_embeddings);
    for (auto* m : {&q, &d}) nn::quantize_base_nf4(*m);
    nn::lora_config lc;
    lc.rank = 4;
    lc.alpha = 8;
    auto aq = nn::make_lora(q, lc);
    auto ad = nn::make_lora(d, lc);
    {  // the same random A and B (B != 0) in both: every adapter matrix gets a gradient
      const auto pq = aq.parameters(), pd = ad.parameters();
      REQUIRE(pq.size() == pd.size());
      std::uniform_real_distribution<float> u(-0.05f, 0.05f);
      for (std::size_t i = 0; i < pq.size(); ++i)
        for (index_t k = 0; k < pq[i].data->size(); ++k)
          pq[i].data->value.data()[k] = pd[i].data->value.data()[k] = u(g);
    }
    CHECK_THROWS_WITH_AS(nn::quantize_embedding(q, how), doctest::Contains("nn::freeze"),
                         value_error);
    for (auto* m : {&q, &d}) nn::freeze(*m);
    nn::attach(q, aq);
    nn::attach(d, ad);
    // The reference's rounded f32 embedding.
    float* w = d.wte.weight.data()->value.data();
    const auto n = static_cast<std::size_t>(d.wte.weight.size());
    if (how == nn::embedding_storage::bf16) {
      for (std::size_t i = 0; i < n; ++i) w[i] = static_cast<float>(bf16(w[i]));
    } else {
      const auto r = dequantize_nf4_dq(quantize_nf4_dq(std::span<const float>(w, n), 67, 64, "e"));
      std::copy(r.begin(), r.end(), w);
    }
    const std::size_t bytes = nn::quantize_embedding(q, how);
    if (how == nn::embedding_storage::bf16)
      CHECK(bytes == 2 * n);
    else
      CHECK(bytes < n);  // 4.13 bits per value
    CHECK_FALSE(q.wte.weight.defined());
    CHECK_THROWS_AS(q.head_weight(), unsupported_error);
    CHECK_THROWS_AS(nn::quantize_embedding(q, how), value_error);
    for (bool ckpt : {false, true}) {
      CAPTURE(ckpt);
      q.set_checkpointing(ckpt);
      d.set_checkpointing(ckpt);
      for (int kind = 0; kind < 2; ++kind) {
        CAPTURE(kind);
        for (const auto& p : aq.parameters()) p.data->release_grad();
        for (const auto& p : ad.parameters()) p.data->release_grad();
        auto loss_of = [&](model_t& m) {
          if (kind == 0) return m.loss(x, y, true);
          cross_entropy_options ce;
          ce.label_smoothing = 0.1;
          return m.loss<ce_reduction::sum>(x, y, true, ce);
        };
        auto lq = loss_of(q), ld = loss_of(d);
        CHECK(std::abs(lq.item() - ld.item()) < 1e-5 * std::abs(ld.item()));
        lq.backward();
        ld.backward();
        const auto pq = aq.parameters(), pd = ad.parameters();
        double worst = 0;
        for (std::size_t i = 0; i < pq.size(); ++i)
          worst = std::max(worst, rel_diff(pq[i].data->grad_data(), pd[i].data->grad_data(),
                                           pq[i].data->size()));
        CHECK_MESSAGE(worst < 1e-4, "adapter gradients differ by " << worst);
      }
    }
    no_grad ng;
    auto fq = q.forward(x), fd = d.forward(x);
    CHECK(rel_diff(fq.value().data(), fd.value().data(), fd.size()) < 1e-5);
  }
}
