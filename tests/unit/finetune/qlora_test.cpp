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
