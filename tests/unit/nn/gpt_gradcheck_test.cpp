// Model-level gradient check: a tiny GPT in float64, analytic gradients of the loss with
// respect to every parameter tensor compared with central differences (eps 1e-6) on sampled
// elements, for the GPT-2 and the LLaMA layouts.
#include <doctest/doctest.h>
#include <typeformer/typeformer.hpp>

#include <cmath>

using namespace tfm;

namespace {
void check_model(nn::dynamic_config c) {
  c.vocab = 17;
  c.block_size = 8;
  c.n_layer = 2;
  c.n_embd = 8;
  c.ffn = 12;
  nn::gpt<nn::dynamic_config, double> m(c, 3);
  nn::gpt<nn::dynamic_config, double>::ids_type x(2, 5), y(2, 5);
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<std::int32_t>((i * 5 + 1) % 17);
    y.data()[i] = static_cast<std::int32_t>((i * 3 + 2) % 17);
  }
  MESSAGE("model seed 3, fixed token pattern");
  auto ps = m.parameters();
  auto loss = m.loss(x, y, false);
  loss.backward();
  double worst = 0;
  for (auto& p : ps) {
    const index_t n = p.data->size();
    for (index_t k = 0; k < n; k += std::max<index_t>(1, n / 3)) {
      double* w = p.data->value.data() + k;
      const double keep = *w;
      no_grad ng;
      *w = keep + 1e-6;
      double lp = m.loss(x, y, false).value()();
      *w = keep - 1e-6;
      double lm = m.loss(x, y, false).value()();
      *w = keep;
      const double num = (lp - lm) / 2e-6, an = p.data->grad_data()[k];
      CHECK_MESSAGE(std::abs(an - num) <= 1e-5 + 1e-3 * std::abs(num), p.name, "[", k,
                    "] analytic ", an, " numeric ", num);
      if (std::abs(num) > 1e-4) worst = std::max(worst, std::abs(an - num) / std::abs(num));
    }
  }
  MESSAGE("worst relative error (where |g| > 1e-4) ", worst);
}
}  // namespace

TEST_CASE("GPT-2 layout: model gradients match finite differences in float64") {
  nn::dynamic_config c;
  c.n_head = 2;
  c.n_kv_head = 2;
  check_model(c);
}

TEST_CASE("LLaMA layout (RMSNorm, SwiGLU, RoPE, GQA): model gradients match finite differences") {
  nn::dynamic_config c;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.norm = nn::norm_kind::rms_norm;
  c.mlp = nn::mlp_kind::swiglu;
  c.position = nn::position_kind::rope;
  c.bias = false;
  c.tie_embeddings = false;
  check_model(c);
}

TEST_CASE("ALiBi and sliding-window layout: model gradients match finite differences") {
  nn::dynamic_config c;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.position = nn::position_kind::alibi;
  c.window = 3;
  check_model(c);
}
