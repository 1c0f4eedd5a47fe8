// DPO on a tiny random nn::gpt (train/preference.hpp): the loss gradient through the whole model
// (full, and a LoRA adapter against its own switched-off base) against float64 central
// differences; log 2 at step 0 when the policy is the reference; a short seeded run raises the
// implicit reward margin and accuracy on its pairs; stored reference log-probs train exactly as
// the live reference; gradient accumulation equals one large batch.
#include "preference_support.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {

template <class T>
using model_t = nn::gpt<nn::dynamic_config, T>;

/// Analytic d loss / d p (dpo_step's per-batch path) against central differences of
/// dpo_evaluate's loss, on a few elements of every parameter in `ps`. Returns the worst
/// relative error where |g| > 1e-4.
double check_gradients(const model_t<double>& m, const nn::parameter_list<double>& ps,
                       const preference_batch& b, const reference_fn& ref,
                       const dpo_train_options& o) {
  for (const auto& p : ps) p.data->release_grad();
  dpo_figures f;
  train::detail::preference::dpo_batch(m, b, ref, o, false, 1.0, f).backward();
  double worst = 0;
  int probed = 0;
  for (const auto& p : ps) {
    const index_t n = p.data->size();
    for (index_t k = 0; k < n; k += std::max<index_t>(1, n / 3)) {
      double* w = p.data->value.data() + k;
      const double keep = *w;
      *w = keep + 1e-6;
      const double lp = dpo_evaluate(m, {&b, 1}, ref, o).loss;
      *w = keep - 1e-6;
      const double lm = dpo_evaluate(m, {&b, 1}, ref, o).loss;
      *w = keep;
      const double num = (lp - lm) / 2e-6, an = p.data->grad_data()[k];
      CHECK_MESSAGE(std::abs(an - num) <= 1e-5 + 1e-3 * std::abs(num), p.name, "[", k,
                    "] analytic ", an, " numeric ", num);
      if (std::abs(num) > 1e-4) worst = std::max(worst, std::abs(an - num) / std::abs(num));
      ++probed;
    }
  }
  MESSAGE(probed << " elements probed, worst relative error " << worst);
  return worst;
}

}  // namespace

TEST_CASE("dpo: the loss gradient through the whole model matches float64 finite differences") {
  const std::uint64_t seed = 21;
  MESSAGE("seed " << seed);
  const auto d = preference_dataset::build(pref_test::token_pairs(3, 32, seed), {.max_length = 24});
  const auto b = d.batch(std::vector<std::size_t>{0, 1, 2});
  model_t<double> policy(pref_test::tiny_llama(), 5), reference(pref_test::tiny_llama(), 6);
  const reference_fn ref = model_reference(reference);
  SUBCASE("sigmoid with label smoothing, summed log-probs") {
    dpo_train_options o;
    o.loss.beta = 0.7;
    o.loss.label_smoothing = 0.1;
    CHECK(check_gradients(policy, policy.parameters(), b, ref, o) < 1e-4);
  }
  SUBCASE("sigmoid plus the RPO term (chosen NLL)") {
    dpo_train_options o;
    o.rpo_alpha = 0.8;
    CHECK(check_gradients(policy, policy.parameters(), b, ref, o) < 1e-4);
  }
  SUBCASE("IPO, mean log-probs") {
    dpo_train_options o;
    o.loss.beta = 0.5;
    o.loss.kind = dpo_kind::ipo;
    o.reduction = seq_reduction::mean;
    CHECK(check_gradients(policy, policy.parameters(), b, ref, o) < 1e-4);
  }
  SUBCASE("LoRA: the adapter's A and B against the base as reference") {
    auto a = nn::make_lora(policy, {.rank = 2, .alpha = 4, .seed = 3});
    for (auto& s : a.sites)
      for (auto& part : s.update->parts)  // B = 0 would make every A gradient 0
        for (index_t i = 0; i < part.b.size(); ++i)
          part.b.data()->value.data()[i] = 0.05 * std::sin(1.0 + static_cast<double>(i));
    nn::freeze(policy);
    nn::attach(policy, a);
    CHECK(check_gradients(policy, a.parameters(), b, adapter_off_reference(policy, a), {}) < 1e-4);
  }
}

TEST_CASE("dpo: loss log 2 at step 0 when the policy is the reference; the base is unchanged") {
  model_t<float> m(pref_test::tiny_llama(), 1);
  auto a = nn::make_lora(m, {.rank = 4, .alpha = 8, .seed = 2});
  nn::freeze(m);
  nn::attach(m, a);
  const auto d = preference_dataset::build(pref_test::token_pairs(8, 32, 4), {.max_length = 24});
  const auto bs = d.batches(4);
  const auto f = dpo_evaluate(m, bs, adapter_off_reference(m, a));
  CHECK(f.loss == doctest::Approx(std::log(2.0)).epsilon(1e-6));
  CHECK(std::abs(f.reward_margin) < 1e-6);
  CHECK(f.reward_accuracy == 0.0);  // ties count as wrong
  CHECK(f.pairs == 8);
  // The switch restores the adapter.
  for (const auto& s : a.sites) CHECK(s.update->enabled);
}

TEST_CASE("dpo: a short run raises the implicit margin and the accuracy on its pairs") {
  const std::uint64_t seed = 8;
  MESSAGE("seed " << seed);
  const auto d =
      preference_dataset::build(pref_test::token_pairs(16, 32, seed), {.max_length = 24});
  const auto all = d.batches(8);
  // Full: the reference is a second copy of the initial model. LoRA (q..down, not the head): the
  // tiny model's frozen head (N(0, 0.02) rows after an RMSNorm) bounds how far the log-ratio of
  // token 5 against 7 can move, about 0.45 nats, so its margin saturates near beta * 0.45.
  for (int lora = 0; lora < 2; ++lora) {
    CAPTURE(lora);
    model_t<float> m(pref_test::tiny_llama(), seed), initial(pref_test::tiny_llama(), seed);
    nn::lora_adapter<float> a;
    reference_fn ref = model_reference(initial);
    nn::parameter_list<float> ps = m.parameters();
    if (lora) {
      a = nn::make_lora(m, {.rank = 4, .alpha = 8, .seed = seed});
      nn::freeze(m);
      nn::attach(m, a);
      ref = adapter_off_reference(m, a);
      ps = a.parameters();
    }
    auto opt = optim::adamw(ps, optim::adam_options{});
    dpo_train_options o;
    o.loss.beta = 0.5;
    o.schedule = optim::lr_schedule::constant(lora ? 5e-2 : 1e-2);
    training_state st;
    const auto before = dpo_evaluate(m, all, ref, o);
    dpo_step_result r;
    for (int step = 0; step < 25; ++step) {
      std::vector<preference_batch> micro;
      const auto order = d.epoch_order(seed, static_cast<std::uint64_t>(step));
      for (std::size_t k = 0; k < 16; k += 8)
        micro.push_back(d.batch(std::span<const std::size_t>(order.data() + k, 8)));
      r = dpo_step(m, opt, micro, ref, o, st);
      CHECK(r.applied);
      CHECK(r.pairs == 16);
    }
    const auto after = dpo_evaluate(m, all, ref, o);
    MESSAGE((lora ? "LoRA" : "full")
            << ": loss " << before.loss << " -> " << after.loss << ", margin "
            << before.reward_margin << " -> " << after.reward_margin << ", accuracy "
            << before.reward_accuracy << " -> " << after.reward_accuracy << " (last step loss "
            << r.loss << ")");
    CHECK(before.loss == doctest::Approx(std::log(2.0)).epsilon(1e-6));
    CHECK(after.loss < (lora ? 0.9 : 0.5) * before.loss);
    CHECK(after.reward_margin > (lora ? 0.15 : 1.0));
    CHECK(after.reward_accuracy >= 0.9);
    CHECK(st.step == 25);
    CHECK(st.curve.size() == 25);
  }
}

TEST_CASE("dpo: stored reference log-probs train exactly as the live reference") {
  const std::uint64_t seed = 13;
  const auto d =
      preference_dataset::build(pref_test::token_pairs(12, 32, seed), {.max_length = 24});
  std::vector<double> losses[2], margins[2];
  for (int stored = 0; stored < 2; ++stored) {
    model_t<float> m(pref_test::tiny_llama(), seed);
    auto a = nn::make_lora(m, {.rank = 4, .alpha = 8, .seed = seed});
    nn::freeze(m);
    nn::attach(m, a);
    const reference_fn live = adapter_off_reference(m, a);
    const stored_reference table = stored_reference::compute(live, d, 5);
    CHECK(table.size() == 12);
    const reference_fn ref = stored ? table.fn() : live;
    auto opt = optim::adamw(a.parameters(), optim::adam_options{});
    dpo_train_options o;
    o.schedule = optim::lr_schedule::constant(1e-2);
    training_state st;
    for (int step = 0; step < 6; ++step) {
      const auto order = d.epoch_order(seed, static_cast<std::uint64_t>(step));
      const auto b = d.batch(std::span<const std::size_t>(order.data(), 6));
      const auto r = dpo_step(m, opt, {&b, 1}, ref, o, st);
      losses[stored].push_back(r.loss);
      margins[stored].push_back(r.reward_margin);
    }
    // After training, the policy differs from its base: the table still equals the live values.
    const auto ev_live = dpo_evaluate(m, d.batches(4), live, o);
    const auto ev_stored = dpo_evaluate(m, d.batches(4), table.fn(), o);
    CHECK(ev_live.loss == doctest::Approx(ev_stored.loss).epsilon(1e-6));
    CHECK(ev_live.reward_margin == doctest::Approx(ev_stored.reward_margin).epsilon(1e-5));
  }
  for (std::size_t i = 0; i < losses[0].size(); ++i) {
    INFO("step ", i);
    CHECK(losses[1][i] == doctest::Approx(losses[0][i]).epsilon(1e-5));
    CHECK(margins[1][i] == doctest::Approx(margins[0][i]).epsilon(1e-4).scale(1e-3));
  }
  CHECK(losses[0].back() < losses[0].front());
}

TEST_CASE("dpo: gradient accumulation over micro-batches equals one batch (float64)") {
  const auto d = preference_dataset::build(pref_test::token_pairs(5, 32, 2), {.max_length = 24});
  model_t<double> reference(pref_test::tiny_llama(), 9);
  const reference_fn ref = model_reference(reference);
  std::vector<double> after[2];
  for (int split = 0; split < 2; ++split) {
    model_t<double> m(pref_test::tiny_llama(), 4);
    auto opt = optim::adamw(m.parameters(), optim::adam_options{});
    training_state st;
    std::vector<preference_batch> micro;
    if (split) {
      micro.push_back(d.batch(std::vector<std::size_t>{0, 1}));
      micro.push_back(d.batch(std::vector<std::size_t>{2, 3, 4}));
    } else {
      micro.push_back(d.batch(std::vector<std::size_t>{0, 1, 2, 3, 4}));
    }
    const auto r = dpo_step(m, opt, micro, ref, {}, st);
    after[split].push_back(r.loss);
    after[split].push_back(r.grad_norm);
    after[split].push_back(r.reward_margin);
  }
  for (std::size_t i = 0; i < 3; ++i)
    CHECK(after[1][i] == doctest::Approx(after[0][i]).epsilon(1e-10));
}
