// The alignment losses (ops/alignment_loss.hpp) against the numpy reference of
// tests/data/alignment/gen_alignment.py (formulas written from the papers), in float and double:
// loss values and every logged figure. Also the sanity properties of each method (the DPO
// gradient raises the chosen and lowers the rejected log-prob, no clipping when new == old, ...).
#include "alignment_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/alignment_loss.hpp>

#include <cmath>
#include <string>
#include <vector>

using namespace tfm;
using al::arr;
using al::check_close;
using al::S1;
using al::S2;

namespace {
template <class T>
struct tol {
  // float: the inputs are rounded to float (log-probs near 40: 2e-6 absolute) before the
  // double arithmetic, and the result is rounded once more.
  static constexpr double rtol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  static constexpr double atol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
};
}  // namespace

TEST_CASE_TEMPLATE("sequence_logprob: sum and mean against numpy", T, float, double) {
  auto nll = parameter(al::t2<T>(arr("seq.nll"), 4, 6));
  const auto mask = al::t2<T>(arr("seq.mask"), 4, 6);
  auto s = sequence_logprob(nll, mask);
  auto m = sequence_logprob(nll, mask, seq_reduction::mean);
  static_assert(std::is_same_v<decltype(s), var<T, S1>>);
  for (index_t b = 0; b < 4; ++b) {
    check_close(s.value()(b), arr("seq.sum")[static_cast<std::size_t>(b)], tol<T>::rtol,
                tol<T>::atol, "sum");
    check_close(m.value()(b), arr("seq.mean")[static_cast<std::size_t>(b)], tol<T>::rtol,
                tol<T>::atol, "mean");
  }
  // An integer mask gives the same result.
  tensor<std::int32_t, S2> im(S2(4, 6));
  for (index_t i = 0; i < 24; ++i) im.data()[i] = static_cast<std::int32_t>(arr("seq.mask")[i]);
  auto s2 = sequence_logprob(nll, im);
  for (index_t b = 0; b < 4; ++b) CHECK(s2.value()(b) == s.value()(b));
}

TEST_CASE_TEMPLATE("dpo_loss: sigmoid, cDPO, IPO and hinge against numpy", T, float, double) {
  auto pc = parameter(al::t1<T>(arr("dpo.pc")));
  auto pr = parameter(al::t1<T>(arr("dpo.pr")));
  auto rc = constant(al::t1<T>(arr("dpo.rc")));
  auto rr = constant(al::t1<T>(arr("dpo.rr")));
  struct cfg {
    const char* tag;
    dpo_options o;
  };
  const cfg cases[] = {{"sigmoid", {0.1, dpo_kind::sigmoid, 0.0}},
                       {"cdpo", {0.5, dpo_kind::sigmoid, 0.2}},
                       {"ipo", {0.1, dpo_kind::ipo, 0.0}},
                       {"hinge", {0.3, dpo_kind::hinge, 0.0}}};
  for (const auto& c : cases) {
    CAPTURE(c.tag);
    const auto& want = arr(std::string("dpo.") + c.tag);
    auto r = dpo_loss(pc, pr, rc, rr, c.o);
    // IPO's loss is a square of h - 5 with h ~ 10: scale the float tolerance by its size.
    check_close(r.loss.item(), want[0], tol<T>::rtol, tol<T>::atol * 10, "loss");
    check_close(r.chosen_reward, want[1], tol<T>::rtol, tol<T>::atol, "chosen reward");
    check_close(r.rejected_reward, want[2], tol<T>::rtol, tol<T>::atol, "rejected reward");
    check_close(r.reward_margin, want[3], tol<T>::rtol, tol<T>::atol, "margin");
    CHECK(r.reward_accuracy == want[4]);
  }
}

TEST_CASE_TEMPLATE("bradley_terry_loss: plain and with margins against numpy", T, float, double) {
  auto c = parameter(al::t1<T>(arr("bt.rc")));
  auto r = parameter(al::t1<T>(arr("bt.rr")));
  auto p = bradley_terry_loss(c, r);
  check_close(p.loss.item(), arr("bt.plain")[0], tol<T>::rtol, tol<T>::atol, "loss");
  CHECK(p.accuracy == arr("bt.plain")[1]);
  auto m = bradley_terry_loss(c, r, al::t1<T>(arr("bt.margin")));
  check_close(m.loss.item(), arr("bt.margin_loss")[0], tol<T>::rtol, tol<T>::atol, "margin");
  auto s = bradley_terry_loss(c, r, 0.5);
  check_close(s.loss.item(), arr("bt.scalar_margin_loss")[0], tol<T>::rtol, tol<T>::atol,
              "scalar margin");
}

TEST_CASE_TEMPLATE("ppo_policy_loss and ppo_value_loss against numpy", T, float, double) {
  auto nw = parameter(al::t2<T>(arr("ppo.new"), 3, 7));
  const auto old = al::t2<T>(arr("ppo.old"), 3, 7);
  const auto adv = al::t2<T>(arr("ppo.adv"), 3, 7);
  const auto mask = al::t2<T>(arr("ppo.mask"), 3, 7);
  auto p = ppo_policy_loss(nw, old, adv, mask, {0.2});
  const auto& w = arr("ppo.policy");
  check_close(p.loss.item(), w[0], tol<T>::rtol, tol<T>::atol, "policy loss");
  check_close(p.clip_fraction, w[1], 0, 1e-15, "clip fraction");
  CHECK(p.clip_fraction > 0);  // the fixture exercises the clip
  check_close(p.approx_kl, w[2], tol<T>::rtol * 10, tol<T>::atol, "approx kl");
  check_close(p.approx_kl_k3, w[3], tol<T>::rtol * 10, tol<T>::atol, "k3");
  check_close(p.ratio_mean, w[4], tol<T>::rtol, tol<T>::atol, "ratio mean");

  auto v = parameter(al::t2<T>(arr("ppo.values"), 3, 7));
  auto q = ppo_value_loss(v, al::t2<T>(arr("ppo.old_values"), 3, 7),
                          al::t2<T>(arr("ppo.returns"), 3, 7), mask, 0.2);
  check_close(q.loss.item(), arr("ppo.value")[0], tol<T>::rtol, tol<T>::atol, "value loss");
  check_close(q.clip_fraction, arr("ppo.value")[1], 0, 1e-15, "value clip fraction");
  CHECK(q.clip_fraction > 0);
}

TEST_CASE_TEMPLATE("grpo_loss: sequence, token (clip-higher) and fixed normalisation vs numpy", T,
                   float, double) {
  auto nw = parameter(al::t2<T>(arr("grpo.new"), 4, 6));
  const auto old = al::t2<T>(arr("grpo.old"), 4, 6);
  const auto ref = al::t2<T>(arr("grpo.ref"), 4, 6);
  const auto adv = al::t1<T>(arr("grpo.adv"));
  const auto mask = al::t2<T>(arr("grpo.mask"), 4, 6);
  struct cfg {
    const char* tag;
    grpo_options o;
  };
  const cfg cases[] = {{"sequence", {0.2, 0.0, 0.04, grpo_norm::sequence, 0}},
                       {"token", {0.2, 0.28, 0.1, grpo_norm::token, 0}},
                       {"fixed", {0.2, 0.0, 0.04, grpo_norm::fixed, 10}}};
  for (const auto& c : cases) {
    CAPTURE(c.tag);
    const auto& w = arr(std::string("grpo.") + c.tag);
    auto r = grpo_loss(nw, old, ref, adv, mask, c.o);
    check_close(r.loss.item(), w[0], tol<T>::rtol, tol<T>::atol, "loss");
    check_close(r.clip_fraction, w[1], 0, 1e-15, "clip fraction");
    check_close(r.kl, w[2], tol<T>::rtol * 10, tol<T>::atol, "kl");
  }
  // Per-token advantages equal to the broadcast per-sequence ones give the same loss.
  tensor<T, S2> adv2(S2(4, 6));
  for (index_t b = 0; b < 4; ++b)
    for (index_t t = 0; t < 6; ++t) adv2(b, t) = adv(b);
  CHECK(grpo_loss(nw, old, ref, adv2, mask).loss.item() ==
        grpo_loss(nw, old, ref, adv, mask).loss.item());
}

// ---- sanity properties ----------------------------------------------------------------------

TEST_CASE("dpo_loss: the gradient raises the chosen and lowers the rejected log-prob") {
  auto g = tfm_test::rng(1);
  const auto pcv = tfm_test::random_tensor<tensor<double, S1>>(S1(16), g, -30, -5);
  const auto prv = tfm_test::random_tensor<tensor<double, S1>>(S1(16), g, -30, -5);
  const auto rcv = tfm_test::random_tensor<tensor<double, S1>>(S1(16), g, -30, -5);
  const auto rrv = tfm_test::random_tensor<tensor<double, S1>>(S1(16), g, -30, -5);
  for (dpo_kind k : {dpo_kind::sigmoid, dpo_kind::ipo, dpo_kind::hinge}) {
    CAPTURE(static_cast<int>(k));
    auto pc = parameter(pcv);
    auto pr = parameter(prv);
    // beta 0.01 keeps every hinge pair below the margin and every IPO h below 1/(2 beta).
    auto r = dpo_loss(pc, pr, constant(rcv), constant(rrv), {0.01, k, 0.0});
    r.loss.backward();
    for (index_t b = 0; b < 16; ++b) {
      CHECK(pc.grad()(b) < 0);  // gradient descent raises log pi(chosen)
      CHECK(pr.grad()(b) > 0);  // and lowers log pi(rejected)
      CHECK(pc.grad()(b) == -pr.grad()(b));
    }
  }
  // At h = 0 the sigmoid loss is log 2 and each gradient is beta / (2B).
  tensor<double, S1> z0(S1(4));
  z0.fill(-3.0);
  auto z = parameter(z0);
  auto r = dpo_loss(z, constant(z.value()), constant(z.value()), constant(z.value()), {0.5});
  CHECK(r.loss.item() == doctest::Approx(std::log(2.0)).epsilon(1e-15));
  r.loss.backward();
  CHECK(z.grad()(0) == doctest::Approx(-0.5 * 0.5 / 4).epsilon(1e-15));
  CHECK(r.reward_accuracy == 0);  // ties are not wins
  // IPO's minimum is at h = 1 / (2 beta): zero loss and zero gradient there.
  tensor<double, S1> five(S1(2)), zeros(S1(2));
  five.fill(5.0);
  zeros.fill(0.0);
  auto hc = parameter(five);
  auto zero = constant(zeros);
  auto ipo = dpo_loss(hc, zero, zero, zero, {0.1, dpo_kind::ipo});
  CHECK(ipo.loss.item() == 0);
  ipo.loss.backward();
  CHECK(hc.grad()(0) == 0);
}

TEST_CASE("ppo_policy_loss: no clipping and zero KL when new == old; the gradient is -A / n") {
  auto g = tfm_test::rng(2);
  const auto lp = tfm_test::random_tensor<tensor<double, S2>>(S2(3, 5), g, -5, -0.1);
  const auto adv = tfm_test::random_tensor<tensor<double, S2>>(S2(3, 5), g, -2, 2);
  tensor<float, S2> mask(S2(3, 5));
  mask.fill(1.0f);
  mask(1, 4) = 0.0f;
  auto nw = parameter(lp);
  auto r = ppo_policy_loss(nw, lp, adv, mask);
  CHECK(r.clip_fraction == 0);
  CHECK(r.approx_kl == 0);
  CHECK(r.approx_kl_k3 == 0);
  CHECK(r.ratio_mean == 1);
  double mean_a = 0;
  for (index_t i = 0; i < 15; ++i) mean_a += i == 9 ? 0 : adv.data()[i];
  CHECK(r.loss.item() == doctest::Approx(-mean_a / 14).epsilon(1e-14));
  r.loss.backward();
  for (index_t i = 0; i < 15; ++i)
    CHECK(nw.grad().data()[i] == doctest::Approx(i == 9 ? 0.0 : -adv.data()[i] / 14));
  // A ratio beyond the clip range on the side the advantage favours gets no gradient.
  tensor<double, S2> far(S2(1, 2)), one(S2(1, 2)), a2(S2(1, 2));
  far(0, 0) = std::log(1.5);  // r = 1.5 > 1.2, A > 0: clipped
  far(0, 1) = std::log(0.5);  // r = 0.5 < 0.8, A > 0: not clipped (pessimistic bound)
  one.fill(0.0);
  a2.fill(1.0);
  auto f = parameter(far);
  auto c = ppo_policy_loss(f, one, a2, a2);  // mask: all ones
  CHECK(c.clip_fraction == 0.5);
  c.loss.backward();
  CHECK(f.grad()(0, 0) == 0);
  CHECK(f.grad()(0, 1) == doctest::Approx(-0.5 / 2));
}

TEST_CASE("grpo_loss: with pi == old == ref the KL is 0 and the loss is -mean of A") {
  tensor<double, S2> lp(S2(2, 3));
  lp.fill(-1.25);
  tensor<double, S1> adv(S1(2));
  adv(0) = 0.5;
  adv(1) = -1.5;
  tensor<double, S2> mask(S2(2, 3));
  mask.fill(1.0);
  mask(1, 2) = 0;
  auto nw = parameter(lp);
  auto r = grpo_loss(nw, lp, lp, adv, mask);
  CHECK(r.kl == 0);
  CHECK(r.clip_fraction == 0);
  CHECK(r.loss.item() == doctest::Approx(-(0.5 - 1.5) / 2).epsilon(1e-15));
  r.loss.backward();
  CHECK(nw.grad()(0, 0) == doctest::Approx(-0.5 / (2 * 3)));  // sequence norm: 1 / (B |o_b|)
  CHECK(nw.grad()(1, 0) == doctest::Approx(1.5 / (2 * 2)));
  CHECK(nw.grad()(1, 2) == 0);
  // The KL term pulls pi toward ref: ref above pi gives a negative gradient (raise pi).
  tensor<double, S2> ref(S2(2, 3));
  ref.fill(-0.25);
  auto p2 = parameter(lp);
  auto k = grpo_loss(p2, lp, ref, adv, mask, {0.2, 0.0, 1.0, grpo_norm::token, 0});
  CHECK(k.kl == doctest::Approx(std::exp(1.0) - 1 - 1));
  k.loss.backward();
  CHECK(p2.grad()(0, 0) < -0.5 / 5 + 1e-12);  // -A/n plus the KL pull (1 - e) / n < 0
}

TEST_CASE("bradley_terry_loss: the gradient separates the rewards; accuracy counts strict wins") {
  tensor<double, S1> c0(S1(3)), r0(S1(3));
  c0(0) = 1;
  c0(1) = 0;
  c0(2) = -2;
  r0(0) = 0;
  r0(1) = 0;
  r0(2) = 1;
  auto c = parameter(c0);
  auto r = parameter(r0);
  auto l = bradley_terry_loss(c, r);
  CHECK(l.accuracy == doctest::Approx(1.0 / 3));
  CHECK(l.mean_gap == doctest::Approx((1.0 + 0 - 3) / 3));
  l.loss.backward();
  for (index_t b = 0; b < 3; ++b) {
    CHECK(c.grad()(b) < 0);
    CHECK(r.grad()(b) == -c.grad()(b));
  }
  CHECK(c.grad()(1) == doctest::Approx(-0.5 / 3));  // -s(0) / B
}
