// train/rl.hpp on a tiny random llama-style nn::gpt with a LoRA adapter: rollout log-probs
// against an independent teacher-forced forward (full logits, log-softmax in double), the
// reference log-probs against a fresh base model, GRPO raising a rule reward on a toy task,
// determinism for a fixed seed, and the errors.
#include "tfm_test.hpp"
#include "tiny_llama.hpp"

#include <typeformer/nn/lora.hpp>
#include <typeformer/train/rl.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace tfm;

namespace {

nn::dynamic_config tiny_llama() { return tfm_test::tiny_llama(50, 32, 48, false); }

using model_t = nn::gpt<nn::dynamic_config, float>;

/// A random model whose head is scaled so its logits spread like a trained model's (std ~2.5
/// instead of GPT-2 init's ~0.1): a LoRA on the blocks can then move the output distribution.
model_t make_model(std::uint64_t seed) {
  model_t m(tiny_llama(), seed);
  float* w = m.lm_head.weight.data()->value.data();
  for (index_t i = 0; i < m.lm_head.weight.size(); ++i) w[i] *= 25.f;
  return m;
}

nn::lora_config lora_cfg() {
  nn::lora_config lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.seed = 3;
  return lc;
}

/// Gives every lora_B random values so the adapter changes the model.
void randomize_b(nn::lora_adapter<float>& a, std::uint64_t seed) {
  std::mt19937 g(static_cast<unsigned>(seed));
  std::normal_distribution<float> d(0.f, 0.3f);
  for (auto& p : a.parameters())
    if (p.name.find("lora_B") != std::string::npos)
      for (index_t i = 0; i < p.data->size(); ++i) p.data->value.data()[i] = d(g);
}

std::vector<train::rl_prompt> toy_prompts(index_t n, std::uint64_t seed) {
  std::mt19937 g(static_cast<unsigned>(seed));
  std::uniform_int_distribution<int> len(2, 6), tok(10, 49);
  std::vector<train::rl_prompt> ps;
  for (index_t i = 0; i < n; ++i) {
    train::rl_prompt p;
    const int L = len(g);
    for (int t = 0; t < L; ++t) p.ids.push_back(tok(g));
    p.text = "p" + std::to_string(i);
    ps.push_back(p);
  }
  return ps;
}

/// Each token as one byte.
std::string bytes_of(std::span<const std::int32_t> ids) {
  std::string s;
  for (auto t : ids) s.push_back(static_cast<char>(t));
  return s;
}

/// The toy rule: the fraction of completion tokens equal to 7.
double frac_sevens(const std::string&, const std::string& c) {
  if (c.empty()) return 0.0;
  double n = 0;
  for (char ch : c) n += ch == 7;
  return n / static_cast<double>(c.size());
}

/// log softmax(logits / tau)[next] of every completion token by a full forward of the row.
std::vector<double> reference_logps(const model_t& m, const std::vector<std::int32_t>& prompt,
                                    const std::vector<std::int32_t>& completion, double tau) {
  std::vector<std::int32_t> row = prompt;
  row.insert(row.end(), completion.begin(), completion.end());
  const auto L = static_cast<index_t>(row.size());
  model_t::ids_type ids(dyn_shape<2>(1, L));
  for (index_t t = 0; t < L; ++t) ids(0, t) = row[static_cast<std::size_t>(t)];
  no_grad ng;
  auto logits = m.forward(ids);
  const index_t V = m.config().vocab;
  std::vector<double> out;
  for (std::size_t j = 0; j < completion.size(); ++j) {
    const index_t t = static_cast<index_t>(prompt.size() + j) - 1;
    const float* l = logits.value().data() + t * V;
    double mx = -1e300;
    for (index_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(l[v]) / tau);
    double s = 0;
    for (index_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(l[v]) / tau - mx);
    out.push_back(static_cast<double>(l[completion[j]]) / tau - mx - std::log(s));
  }
  return out;
}

}  // namespace

TEST_CASE("rl: rollout log-probs equal a teacher-forced forward's; reference = base model") {
  model_t m = make_model(11);
  auto a = nn::make_lora(m, lora_cfg());
  randomize_b(a, 5);
  nn::freeze(m);
  nn::attach(m, a);
  const auto prompts = toy_prompts(3, 21);
  train::rollout_options ro;
  ro.group_size = 4;
  ro.max_new_tokens = 9;
  ro.sampling.temperature = 0.7;
  ro.sampling.top_k = 20;
  ro.sampling.seed = 99;
  ro.stop_ids = {3, 4};
  const auto samples = train::sample_completions(m, std::span<const train::rl_prompt>(prompts), ro);
  REQUIRE(samples.size() == 12);
  const double tau = 0.7;
  double worst = 0, worst_tf = 0;
  index_t finished = 0, tokens = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    CHECK(s.prompt == static_cast<index_t>(i / 4));
    REQUIRE(s.tokens.size() == s.logp.size());
    CHECK(!s.tokens.empty());
    CHECK(static_cast<index_t>(s.tokens.size()) <= ro.max_new_tokens);
    // Stop ids end a completion, and only as its last token.
    for (std::size_t j = 0; j + 1 < s.tokens.size(); ++j)
      CHECK((s.tokens[j] != 3 && s.tokens[j] != 4));
    CHECK(s.finished == (s.tokens.back() == 3 || s.tokens.back() == 4));
    finished += s.finished;
    tokens += static_cast<index_t>(s.tokens.size());
    const auto ref =
        reference_logps(m, prompts[static_cast<std::size_t>(s.prompt)].ids, s.tokens, tau);
    for (std::size_t j = 0; j < ref.size(); ++j)
      worst = std::max(worst, std::abs(static_cast<double>(s.logp[j]) - ref[j]));
  }
  // The batched teacher-forced pass (padded rows, micro-batches of 5) gives the same values.
  const auto tf = train::completion_logprobs(m, std::span<const train::rl_prompt>(prompts),
                                             std::span<const train::rl_sample>(samples), tau, 5);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    REQUIRE(tf[i].size() == samples[i].tokens.size());
    for (std::size_t j = 0; j < tf[i].size(); ++j)
      worst_tf = std::max(worst_tf, std::abs(static_cast<double>(tf[i][j] - samples[i].logp[j])));
  }
  MESSAGE("12 rollouts, " << tokens << " tokens, " << finished
                          << " stopped: max |rollout - full forward| log-prob " << worst
                          << ", max |teacher-forced - rollout| " << worst_tf);
  CHECK(worst < 2e-5);
  CHECK(worst_tf < 2e-5);

  // The rows of one prompt differ (their own samplers), and are reproducible.
  CHECK(samples[0].tokens != samples[1].tokens);
  const auto again = train::sample_completions(m, std::span<const train::rl_prompt>(prompts), ro);
  for (std::size_t i = 0; i < samples.size(); ++i) CHECK(again[i].tokens == samples[i].tokens);
  const auto other =
      train::sample_completions(m, std::span<const train::rl_prompt>(prompts), ro, 1);
  bool differs = false;
  for (std::size_t i = 0; i < samples.size(); ++i)
    differs = differs || other[i].tokens != samples[i].tokens;
  CHECK(differs);

  // Reference log-probs: the base model (a fresh model of the same seed, no adapter).
  const auto refl = train::reference_logprobs(m, a, std::span<const train::rl_prompt>(prompts),
                                              std::span<const train::rl_sample>(samples), tau);
  model_t base = make_model(11);
  double worst_ref = 0, moved = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto r = reference_logps(base, prompts[static_cast<std::size_t>(samples[i].prompt)].ids,
                                   samples[i].tokens, tau);
    for (std::size_t j = 0; j < r.size(); ++j) {
      worst_ref = std::max(worst_ref, std::abs(static_cast<double>(refl[i][j]) - r[j]));
      moved = std::max(moved, std::abs(static_cast<double>(samples[i].logp[j]) - r[j]));
    }
  }
  MESSAGE("reference vs base model: max |diff| " << worst_ref << " (policy vs base: " << moved
                                                 << ")");
  CHECK(worst_ref < 2e-5);
  CHECK(moved > 1e-2);  // the adapter matters, so the comparison means something
  // ... and the adapter is attached again afterwards.
  const auto after = train::completion_logprobs(m, std::span<const train::rl_prompt>(prompts),
                                                std::span<const train::rl_sample>(samples), tau, 5);
  for (std::size_t i = 0; i < samples.size(); ++i)
    for (std::size_t j = 0; j < after[i].size(); ++j) CHECK(after[i][j] == tf[i][j]);
}

TEST_CASE("rl: prompts of equal length batched together give the samples of one at a time") {
  model_t m = make_model(6);
  std::vector<train::rl_prompt> prompts = toy_prompts(5, 17);
  for (auto& p : prompts) p.ids.resize(4, 12);  // one length: they share a batch
  prompts[2].ids.push_back(20);                 // ... but this one
  train::rollout_options ro;
  ro.group_size = 3;
  ro.max_new_tokens = 7;
  ro.sampling.seed = 5;
  ro.stop_ids = {9};
  ro.max_rows = 64;
  const std::span<const train::rl_prompt> ps(prompts);
  const auto together = train::sample_completions(m, ps, ro, 2);
  ro.max_rows = 1;
  const auto alone = train::sample_completions(m, ps, ro, 2);
  REQUIRE(together.size() == alone.size());
  double worst = 0;
  for (std::size_t i = 0; i < alone.size(); ++i) {
    CHECK(together[i].prompt == static_cast<index_t>(i / 3));
    CHECK(together[i].tokens == alone[i].tokens);
    for (std::size_t j = 0; j < alone[i].logp.size(); ++j)
      worst =
          std::max(worst, std::abs(static_cast<double>(together[i].logp[j] - alone[i].logp[j])));
  }
  CHECK(worst < 1e-5);
  ro.max_rows = 0;
  CHECK_THROWS_AS(train::sample_completions(m, ps, ro), value_error);
}

TEST_CASE("rl: greedy rollouts take the argmax; a shared prompt is run once for its group") {
  model_t m = make_model(4);
  const auto prompts = toy_prompts(2, 8);
  train::rollout_options ro;
  ro.group_size = 3;
  ro.max_new_tokens = 5;
  ro.sampling.temperature = 0;
  const auto s = train::sample_completions(m, std::span<const train::rl_prompt>(prompts), ro);
  for (std::size_t i = 0; i < s.size(); ++i) {
    CHECK(s[i].tokens == s[i - i % 3].tokens);  // greedy: every row of a group is the same
    // Each greedy token is the argmax of a full forward of the row so far.
    auto row = prompts[static_cast<std::size_t>(s[i].prompt)].ids;
    for (auto t : s[i].tokens) {
      model_t::ids_type ids(dyn_shape<2>(1, static_cast<index_t>(row.size())));
      for (std::size_t k = 0; k < row.size(); ++k) ids(0, static_cast<index_t>(k)) = row[k];
      no_grad ng;
      auto l = m.forward(ids);
      const float* last = l.value().data() + (static_cast<index_t>(row.size()) - 1) * 50;
      CHECK(t == static_cast<std::int32_t>(std::max_element(last, last + 50) - last));
      row.push_back(t);
    }
  }
}

namespace {

struct toy_run {
  std::vector<double> rewards, losses;
  std::vector<float> adapter;
};

toy_run run_toy_grpo(index_t steps, std::uint64_t seed, bool print) {
  model_t m = make_model(7);
  auto a = nn::make_lora(m, lora_cfg());
  train::grpo_config gc;
  gc.rollout.group_size = 8;
  gc.rollout.max_new_tokens = 6;
  gc.rollout.sampling.temperature = 1.0;
  gc.rollout.sampling.seed = seed;
  gc.loss.beta = 0.02;
  gc.epochs = 2;
  gc.minibatches = 2;
  gc.micro_batch = 12;
  gc.schedule = optim::lr_schedule::constant(2e-2);
  gc.seed = seed;
  train::grpo_trainer<nn::dynamic_config, float> tr(m, a, frac_sevens, bytes_of, gc);
  const auto prompts = toy_prompts(4, 1);
  toy_run r;
  for (index_t s = 0; s < steps; ++s) {
    const auto res = tr.step(std::span<const train::rl_prompt>(prompts));
    r.rewards.push_back(res.reward_mean);
    r.losses.push_back(res.loss);
    if (print && (s % 5 == 0 || s + 1 == steps))
      MESSAGE("step " << s << ": reward " << res.reward_mean << " (std " << res.reward_std
                      << "), kl " << res.kl << ", clip " << res.clip_fraction << ", len "
                      << res.completion_length << ", grad norm " << res.grad_norm);
  }
  for (const auto& p : a.parameters())
    r.adapter.insert(r.adapter.end(), p.data->value.data(), p.data->value.data() + p.data->size());
  return r;
}

double mean_of(const std::vector<double>& v, std::size_t from, std::size_t to) {
  double s = 0;
  for (std::size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

}  // namespace

TEST_CASE("rl: GRPO raises a rule reward on a toy task; a fixed seed reproduces the run") {
  const std::uint64_t seed = 12345;
  MESSAGE("seed " << seed);
  const index_t steps = 30;
  const auto r = run_toy_grpo(steps, seed, true);
  const double first = mean_of(r.rewards, 0, 5), last = mean_of(r.rewards, 25, 30);
  MESSAGE("mean reward (fraction of 7s): steps 0-4 " << first << ", steps 25-29 " << last);
  CHECK(last > first + 0.3);
  const auto again = run_toy_grpo(6, seed, false);
  const auto head = run_toy_grpo(6, seed, false);
  CHECK(again.rewards == head.rewards);
  CHECK(again.losses == head.losses);
  CHECK(again.adapter == head.adapter);
  for (std::size_t i = 0; i < 6; ++i) CHECK(again.rewards[i] == r.rewards[i]);
}

TEST_CASE("rl: errors") {
  model_t m = make_model(2);
  auto a = nn::make_lora(m, lora_cfg());
  const auto prompts = toy_prompts(2, 3);
  const std::span<const train::rl_prompt> ps(prompts);
  auto make = [&](const train::grpo_config& gc) {
    train::grpo_trainer<nn::dynamic_config, float> tr(m, a, frac_sevens, bytes_of, gc);
  };
  train::grpo_config ok;
  ok.rollout.max_new_tokens = 4;
  ok.rollout.group_size = 2;
  CHECK_NOTHROW(make(ok));
  auto bad = ok;
  bad.rollout.group_size = 1;
  CHECK_THROWS_AS(make(bad), value_error);
  bad = ok;
  bad.rollout.max_new_tokens = 0;
  CHECK_THROWS_AS(make(bad), value_error);
  bad = ok;
  bad.epochs = 0;
  CHECK_THROWS_AS(make(bad), value_error);
  bad = ok;
  bad.minibatches = 0;
  CHECK_THROWS_AS(make(bad), value_error);
  bad = ok;
  bad.loss.clip_eps = 0;
  CHECK_THROWS_AS(make(bad), value_error);
  bad = ok;
  bad.loss.beta = -1;
  CHECK_THROWS_AS(make(bad), value_error);
  bad = ok;
  bad.rollout.sampling.temperature = -1;
  CHECK_THROWS_AS(make(bad), value_error);
  using trainer_t = train::grpo_trainer<nn::dynamic_config, float>;
  CHECK_THROWS_AS(trainer_t(m, a, nullptr, bytes_of, ok), value_error);

  train::grpo_trainer<nn::dynamic_config, float> tr(m, a, frac_sevens, bytes_of, ok);
  CHECK_THROWS_AS(tr.step({}), value_error);  // no prompts
  std::vector<train::rl_prompt> empty_prompt{{"x", {}}};
  CHECK_THROWS_AS(tr.step(std::span<const train::rl_prompt>(empty_prompt)), value_error);
  std::vector<train::rl_prompt> too_long{{"x", std::vector<std::int32_t>(30, 12)}};
  CHECK_THROWS_AS(tr.step(std::span<const train::rl_prompt>(too_long)), value_error);
  std::vector<train::rl_prompt> bad_id{{"x", {12, 50}}};
  CHECK_THROWS_AS(tr.step(std::span<const train::rl_prompt>(bad_id)), index_error);
  train::grpo_trainer<nn::dynamic_config, float> nan_reward(
      m, a, [](const std::string&, const std::string&) { return std::nan(""); }, bytes_of, ok);
  CHECK_THROWS_AS(nan_reward.step(ps), value_error);
  train::rollout_options ro;
  ro.group_size = 0;
  CHECK_THROWS_AS(train::sample_completions(m, ps, ro), value_error);
  CHECK_THROWS_AS(train::completion_logprobs(m, ps, std::span<const train::rl_sample>(), 0.0),
                  value_error);
}

namespace {

struct ppo_knobs {
  double lr = 1e-2;
  index_t group = 8, epochs = 2;
  bool whiten = true;
  double kl = 0.02, gamma = 1.0, lambda = 0.95;
};

toy_run run_toy_ppo(index_t steps, std::uint64_t seed, bool print, ppo_knobs k = {}) {
  model_t m = make_model(7);
  auto a = nn::make_lora(m, lora_cfg());
  train::ppo_config pc;
  pc.rollout.group_size = k.group;
  pc.rollout.max_new_tokens = 6;
  pc.rollout.sampling.seed = seed;
  pc.kl_coef = k.kl;
  pc.epochs = k.epochs;
  pc.minibatches = 2;
  pc.micro_batch = 5;
  pc.vf_coef = 0.1;
  pc.whiten_advantages = k.whiten;
  pc.gamma = k.gamma;
  pc.lambda = k.lambda;
  pc.schedule = optim::lr_schedule::constant(k.lr);
  pc.seed = seed;
  train::ppo_trainer<nn::dynamic_config, float> tr(m, a, frac_sevens, bytes_of, pc);
  const auto prompts = toy_prompts(4, 1);
  toy_run r;
  for (index_t s = 0; s < steps; ++s) {
    const auto res = tr.step(std::span<const train::rl_prompt>(prompts));
    CHECK(std::isfinite(res.policy_loss));
    CHECK(std::isfinite(res.value_loss));
    r.rewards.push_back(res.reward_mean);
    r.losses.push_back(res.value_loss);
    if (print && (s % 5 == 0 || s + 1 == steps))
      MESSAGE("ppo step " << s << ": reward " << res.reward_mean << ", kl " << res.kl
                          << ", policy loss " << res.policy_loss << ", value loss "
                          << res.value_loss << ", clip " << res.clip_fraction << ", approx kl "
                          << res.approx_kl);
  }
  for (const auto& p : a.parameters())
    r.adapter.insert(r.adapter.end(), p.data->value.data(), p.data->value.data() + p.data->size());
  for (const auto& p : tr.values().parameters())
    r.adapter.insert(r.adapter.end(), p.data->value.data(), p.data->value.data() + p.data->size());
  return r;
}

}  // namespace

TEST_CASE("rl: PPO with a value head raises a rule reward on a toy task; reproducible") {
  const std::uint64_t seed = 777;
  MESSAGE("seed " << seed);
  const index_t steps = 25;
  const auto r = run_toy_ppo(steps, seed, true);
  const double first = mean_of(r.rewards, 0, 5), last = mean_of(r.rewards, 20, 25);
  MESSAGE("PPO mean reward (fraction of 7s): steps 0-4 " << first << ", steps 20-24 " << last);
  CHECK(last > first + 0.25);
  const auto x = run_toy_ppo(3, seed, false), y = run_toy_ppo(3, seed, false);
  CHECK(x.rewards == y.rewards);
  CHECK(x.losses == y.losses);
  CHECK(x.adapter == y.adapter);
}

TEST_CASE("rl: the first update of an iteration is on-policy (ratio 1, nothing clipped)") {
  model_t m = make_model(9);
  auto a = nn::make_lora(m, lora_cfg());
  randomize_b(a, 4);
  const auto prompts = toy_prompts(3, 2);
  const std::span<const train::rl_prompt> ps(prompts);
  train::ppo_config pc;
  pc.rollout.group_size = 4;
  pc.rollout.max_new_tokens = 5;
  pc.rollout.sampling.temperature = 0.8;
  pc.epochs = 1;
  pc.micro_batch = 5;
  auto r = train::ppo_trainer<nn::dynamic_config, float>(m, a, frac_sevens, bytes_of, pc).step(ps);
  MESSAGE("PPO first step: approx kl " << r.approx_kl << ", clip " << r.clip_fraction
                                       << ", kl to ref " << r.kl);
  CHECK(r.approx_kl < 1e-9);
  CHECK(r.clip_fraction == 0);
  CHECK(r.kl > 1e-3);  // the adapter moved the policy away from the base
  train::grpo_config gc;
  gc.rollout = pc.rollout;
  gc.micro_batch = 5;
  gc.loss.beta = 0.1;
  auto g = train::grpo_trainer<nn::dynamic_config, float>(m, a, frac_sevens, bytes_of, gc).step(ps);
  MESSAGE("GRPO first step: clip " << g.clip_fraction << ", kl " << g.kl);
  CHECK(g.clip_fraction == 0);
  CHECK(g.kl > 1e-3);
}

TEST_CASE("rl: PPO errors") {
  model_t m = make_model(2);
  auto a = nn::make_lora(m, lora_cfg());
  using trainer_t = train::ppo_trainer<nn::dynamic_config, float>;
  train::ppo_config ok;
  ok.rollout.max_new_tokens = 4;
  CHECK_NOTHROW(trainer_t(m, a, frac_sevens, bytes_of, ok));
  auto bad = ok;
  bad.vf_coef = -1;
  CHECK_THROWS_AS(trainer_t(m, a, frac_sevens, bytes_of, bad), value_error);
  bad = ok;
  bad.gamma = 1.5;
  CHECK_THROWS_AS(trainer_t(m, a, frac_sevens, bytes_of, bad), value_error);
  bad = ok;
  bad.value_clip = 0;
  CHECK_THROWS_AS(trainer_t(m, a, frac_sevens, bytes_of, bad), value_error);
  bad = ok;
  bad.epochs = 0;
  CHECK_THROWS_AS(trainer_t(m, a, frac_sevens, bytes_of, bad), value_error);
  bad = ok;
  bad.rollout.group_size = 0;
  CHECK_THROWS_AS(trainer_t(m, a, frac_sevens, bytes_of, bad), value_error);
  trainer_t tr(m, a, frac_sevens, bytes_of, ok);
  CHECK_THROWS_AS(tr.step({}), value_error);
}
