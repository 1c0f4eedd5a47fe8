// Mixed precision end to end: a tiny GPT-2 style model with bf16 parameters and activations
// (f32 gradients, f32 master weights in AdamW) trains on a fixed batch next to an f32 twin that
// starts from exactly the same values (the bf16 values, exact in f32); the bf16 loss curve
// tracks the f32 one. The bf16 run is compiled in mp_bf16.cpp.
#include "mp_train.hpp"

#include <algorithm>
#include <cmath>

using namespace optim_test;

namespace optim_test {
mp_run mp_train_f32(const std::vector<std::vector<float>>& initial) {
  return mp_train<float>(&initial);
}
}  // namespace optim_test

TEST_CASE("bf16 GPT with f32 master weights tracks its f32 twin for 30 AdamW steps") {
  MESSAGE("model seed ", mp_seed, " (nn::gpt2_tiny), fixed batch (2, 32), AdamW lr 2e-3");
  const auto r16 = mp_train_bf16();
  const auto r32 = mp_train_f32(r16.initial);
  CHECK(r32.initial == r16.initial);  // the same starting point
  const auto& l16 = r16.losses;
  const auto& l32 = r32.losses;
  REQUIRE(l16.size() == static_cast<std::size_t>(mp_steps));
  REQUIRE(l32.size() == l16.size());
  double worst = 0;
  for (int s = 0; s < mp_steps; ++s) {
    const double d = std::fabs(l16[s] - l32[s]);
    worst = std::max(worst, d);
    if (s % 5 == 0 || s == mp_steps - 1)
      MESSAGE("step ", s, ": loss bf16 ", l16[s], "  f32 ", l32[s], "  |diff| ", d);
  }
  MESSAGE("largest |loss bf16 - loss f32| over ", mp_steps, " steps: ", worst);
  // Both learn the batch (without master weights most bf16 updates of size ~lr = 2e-3 would
  // round away on weights of magnitude > 0.5).
  CHECK(l32.back() < 0.1 * l32.front());
  CHECK(l16.back() < 0.1 * l16.front());
  // Why the tolerance is loose: bf16 keeps 8 significant bits, so each op's output is rounded
  // by up to 2^-9 of itself, the loss is itself a bf16 value (spacing 2^-5 between 4 and 8:
  // up to 0.016 off), and the two runs see slightly different gradients every step, so the
  // curves drift apart a little (seen: <= 0.014 at step 0, < 0.005 after). 0.02 absolute plus
  // 3% of the f32 loss.
  for (int s = 0; s < mp_steps; ++s) {
    CAPTURE(s);
    CHECK(std::fabs(l16[s] - l32[s]) <= 0.02 + 0.03 * l32[s]);
  }
}

TEST_CASE("GPT parameter groups: weights and embeddings decay, biases and norm weights do not") {
  // The GPT-2 / nanoGPT rule: every tensor of rank >= 2 decays, every tensor of rank < 2 does not.
  tfm::nn::gpt<tfm::nn::gpt2_tiny, float> m(tfm::nn::gpt2_tiny{}, mp_seed);
  int decayed = 0, not_decayed = 0;
  for (const auto& p : m.parameters()) {
    CAPTURE(p.name);
    CHECK(p.decay == (p.data->extents.size() >= 2));
    (p.decay ? decayed : not_decayed) += 1;
  }
  MESSAGE(decayed, " decayed and ", not_decayed, " not decayed parameter tensors");
  CHECK(decayed > 0);
  CHECK(not_decayed > 0);
}
