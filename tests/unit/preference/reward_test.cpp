// The reward model (train/preference.hpp): its reward against a hand-computed head on the
// body's hidden state, the Bradley-Terry gradient through head and body against float64 finite
// differences, training on a synthetic preference (the chosen response holds token 5) lowers
// the loss and lifts held-out accuracy (full and LoRA), a checkpoint round trip keeps the head,
// and score(prompt, response) through a chat template.
#include "preference_support.hpp"

#include "typeformer/tokenizer/chat_template.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {
template <class T>
using rm_t = reward_model<nn::dynamic_config, T>;
template <class T>
using model_t = nn::gpt<nn::dynamic_config, T>;
}  // namespace

TEST_CASE("reward model: r = w . h(last token), the head named score.weight") {
  rm_t<double> rm(model_t<double>(pref_test::tiny_llama(), 3), 4);
  const auto d = preference_dataset::build(pref_test::token_pairs(3, 32, 5), {.max_length = 24});
  const auto b = d.batch(std::vector<std::size_t>{0, 1, 2});
  no_grad ng;
  const auto r = rm.rewards(b.ids, b.last);
  const auto h = rm.body.hidden(b.ids);
  const index_t T = b.ids.extent(1), C = 16;
  for (index_t n = 0; n < 6; ++n) {
    double want = 0;
    for (index_t c = 0; c < C; ++c)
      want += h.value().data()[(n * T + b.last[static_cast<std::size_t>(n)]) * C + c] *
              rm.score.value().data()[c];
    CHECK(r.value()(n) == doctest::Approx(want).epsilon(1e-12));
    // Padding after the last token does not change the reward.
    const auto& e =
        n < 3 ? d[static_cast<std::size_t>(n)].chosen : d[static_cast<std::size_t>(n - 3)].rejected;
    CHECK(rm.score_ids(e.ids) == doctest::Approx(r.value()(n)).epsilon(1e-10));
  }
  const auto ps = rm.parameters();
  CHECK(ps.back().name == "score.weight");
  CHECK(ps.size() == rm.body.parameters().size() + 1);
}

TEST_CASE("reward model: the Bradley-Terry gradient matches float64 finite differences") {
  rm_t<double> rm(model_t<double>(pref_test::tiny_llama(), 7), 8);
  const auto d = preference_dataset::build(pref_test::token_pairs(3, 32, 6), {.max_length = 24});
  const auto b = d.batch(std::vector<std::size_t>{0, 1, 2});
  const auto ps = rm.parameters();
  reward_figures f;
  train::detail::preference::reward_batch(rm, b, false, 1.0, f).backward();
  double worst = 0;
  for (const auto& p : ps) {
    const index_t n = p.data->size();
    for (index_t k = 0; k < n; k += std::max<index_t>(1, n / 3)) {
      double* w = p.data->value.data() + k;
      const double keep = *w;
      *w = keep + 1e-6;
      const double lp = reward_evaluate(rm, {&b, 1}).loss;
      *w = keep - 1e-6;
      const double lm = reward_evaluate(rm, {&b, 1}).loss;
      *w = keep;
      const double num = (lp - lm) / 2e-6, an = p.data->grad_data()[k];
      CHECK_MESSAGE(std::abs(an - num) <= 1e-5 + 1e-3 * std::abs(num), p.name, "[", k,
                    "] analytic ", an, " numeric ", num);
      if (std::abs(num) > 1e-4) worst = std::max(worst, std::abs(an - num) / std::abs(num));
    }
  }
  MESSAGE("worst relative error " << worst);
  CHECK(worst < 1e-4);
}

TEST_CASE("reward model: training on 'the chosen response holds token 5' generalises") {
  const std::uint64_t seed = 17;
  MESSAGE("seed " << seed);
  const auto train_d =
      preference_dataset::build(pref_test::token_pairs(32, 32, seed), {.max_length = 24});
  const auto held =
      preference_dataset::build(pref_test::token_pairs(24, 32, seed + 1000), {.max_length = 24});
  const auto held_b = held.batches(12);
  for (int lora = 0; lora < 2; ++lora) {
    CAPTURE(lora);
    rm_t<float> rm(model_t<float>(pref_test::tiny_llama(), seed), seed);
    nn::lora_adapter<float> a;
    nn::parameter_list<float> ps = rm.parameters();
    if (lora) {
      a = nn::make_lora(rm.body, {.rank = 4, .alpha = 8, .seed = seed});
      nn::freeze(rm.body);
      nn::attach(rm.body, a);
      ps = a.parameters();
      for (const auto& p : rm.head_parameters()) ps.push_back(p);
    }
    auto opt = optim::adamw(ps, optim::adam_options{});
    reward_train_options o;
    o.schedule = optim::lr_schedule::constant(1e-2);
    training_state st;
    const auto before = reward_evaluate(rm, held_b);
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      const auto order = train_d.epoch_order(seed, static_cast<std::uint64_t>(step));
      const auto b = train_d.batch(std::span<const std::size_t>(order.data(), 16));
      const auto r = reward_step(rm, opt, {&b, 1}, o, st);
      (step == 0 ? first : last) = r.loss;
    }
    const auto after = reward_evaluate(rm, held_b);
    MESSAGE((lora ? "LoRA" : "full")
            << ": train loss " << first << " -> " << last << "; held-out loss " << before.loss
            << " -> " << after.loss << ", accuracy " << before.accuracy << " -> "
            << after.accuracy);
    CHECK(last < 0.5 * first);
    CHECK(after.loss < before.loss);
    CHECK(after.accuracy >= 0.9);
  }
}

TEST_CASE("reward model: a checkpoint keeps body and head; score(prompt, response)") {
  const auto& tok = pref_test::vocab().tok;
  const sft_encoder enc(tok, chat_template(chat_format::chatml));
  rm_t<float> rm(model_t<float>(pref_test::tiny_llama(258, 64), 1), 2);
  const reward_scorer<nn::dynamic_config, float> scorer(rm, enc);
  const double s = scorer("hi", "ok");
  const chat_message p{"user", "hi"}, r{"assistant", "ok"};
  CHECK(s == rm.score_ids(enc.encode_prompt_completion({&p, 1}, {&r, 1}).ids));
  CHECK(std::isfinite(s));
  // Long inputs keep their last block_size tokens.
  CHECK(std::isfinite(scorer(std::string(200, 'x'), "ok")));
  // Plain text scoring encodes prompt + response + EOS.
  const reward_scorer<nn::dynamic_config, float> plain(rm, enc, false);
  CHECK(plain("The sky is", " blue.") == rm.score_ids(enc.encode_text("The sky is", " blue.").ids));

  const std::string path =
      (std::filesystem::temp_directory_path() / "tfm_preference_rm_test.ckpt").string();
  auto opt = optim::adamw(rm.parameters(), optim::adam_options{});
  save_training_state(path, rm.parameters(), opt, training_state{});
  rm_t<float> other(model_t<float>(pref_test::tiny_llama(258, 64), 9), 10);
  CHECK(reward_scorer<nn::dynamic_config, float>(other, enc)("hi", "ok") != s);
  auto opt2 = optim::adamw(other.parameters(), optim::adam_options{});
  load_training_state(path, other.parameters(), opt2);
  CHECK(reward_scorer<nn::dynamic_config, float>(other, enc)("hi", "ok") == s);
  std::remove(path.c_str());
}
