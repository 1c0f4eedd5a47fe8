// Training behaviour: a tiny model overfits one batch to loss < 0.05; the same seed gives a
// bitwise identical loss curve, on 1 and on 2 threads.
#include <doctest/doctest.h>
#include <typeformer/typeformer.hpp>

#include <vector>

using namespace tfm;

namespace {
std::vector<float> curve(int steps, int threads, double lr) {
  thread_scope ts(threads);
  nn::gpt<nn::gpt2_tiny> m(nn::gpt2_tiny{}, 11);
  auto ps = m.parameters();
  optim::adam_options o;
  o.lr = lr;
  auto opt = optim::adamw(ps, o);
  nn::gpt<nn::gpt2_tiny>::ids_type x(4, 32), y(4, 32);
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<std::int32_t>((i * 7 + 3) % 256);
    y.data()[i] = static_cast<std::int32_t>((i * 7 + 10) % 256);
  }
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    auto loss = m.loss(x, y);
    loss.backward();
    optim::clip_grad_norm(ps, 1.0);
    REQUIRE(opt.step());
    losses.push_back(loss.value()());
  }
  return losses;
}
}  // namespace

TEST_CASE("a tiny GPT overfits one batch") {
  MESSAGE("model seed 11");
  auto c = curve(60, 2, 3e-3);
  MESSAGE("loss ", c.front(), " -> ", c.back());
  CHECK(c.front() > 5.0f);
  CHECK(c.back() < 0.05f);
}

TEST_CASE("the loss curve is bitwise reproducible, and the same on 1 and 2 threads") {
  auto a = curve(4, 1, 1e-3), b = curve(4, 1, 1e-3), c = curve(4, 2, 1e-3);
  CHECK(a == b);
  CHECK(a == c);
}

// gpt::loss runs the head and the loss as one op (ops/linear_loss.hpp); it must give the loss
// and every parameter gradient of cross_entropy(forward(ids), targets) bit for bit, with the
// head tied to wte (GPT-2: wte's gradient gets the embedding's rows and the head's) and untied
// (LLaMA: lm_head), and with a vocabulary of several backward chunks.
template <class Cfg>
void loss_matches_composition(Cfg cfg) {
  nn::gpt<Cfg> m(cfg, 5);
  auto ps = m.parameters();
  typename nn::gpt<Cfg>::ids_type x(2, 24), y(2, 24);
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<std::int32_t>((i * 131 + 3) % cfg.vocab);
    y.data()[i] = static_cast<std::int32_t>((i * 71 + 10) % cfg.vocab);
  }
  auto grads = [&] {
    std::vector<std::vector<float>> g;
    for (auto& p : ps) {
      const float* d = p.data->grad_data();
      g.emplace_back(d, d + p.data->size());
    }
    return g;
  };
  for (auto& p : ps) p.data->release_grad();
  auto fused = m.loss(x, y);
  fused.backward();
  const auto gf = grads();
  for (auto& p : ps) p.data->release_grad();
  auto plain = cross_entropy(m.forward(x, true), y);
  plain.backward();
  const auto gp = grads();
  CHECK(fused.value()() == plain.value()());
  REQUIRE(gf.size() == gp.size());
  for (std::size_t k = 0; k < gf.size(); ++k) {
    CAPTURE(ps[k].name);
    CHECK(gf[k] == gp[k]);
  }
}

TEST_CASE("gpt::loss (fused head and loss) equals cross_entropy(forward()) bitwise") {
  auto gpt2 = nn::to_dynamic(nn::gpt2_tiny{});
  gpt2.vocab = 7000;  // several backward chunks at 48 rows (8 kc = 3072 or 2048 columns each)
  loss_matches_composition(gpt2);
  auto llama = nn::to_dynamic(nn::llama_tiny{});
  llama.vocab = 7000;
  loss_matches_composition(llama);
}
