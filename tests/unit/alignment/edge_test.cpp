// Edge cases of the alignment losses: empty masks and batches, bad masks, mismatched shapes and
// bad options are clear errors naming the operand; extreme log-probs and rewards (+-100 and
// beyond) give finite losses and gradients.
#include "alignment_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/alignment_loss.hpp>

#include <cmath>
#include <string>

using namespace tfm;
using al::S1;
using al::S2;

namespace {
template <class S>
tensor<double, S> filled(const S& s, double v) {
  tensor<double, S> t(s);
  t.fill(v);
  return t;
}

using tfm_test::error_of;

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

template <class V>
bool grad_finite(const V& v) {
  for (index_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(static_cast<double>(v.grad().data()[i]))) return false;
  return true;
}
}  // namespace

TEST_CASE("an all-zero mask is a clear error for the token-level losses") {
  const auto x = filled(S2(2, 3), -1.0), zero = filled(S2(2, 3), 0.0);
  auto p = parameter(x);
  const std::string e1 = error_of([&] { ppo_policy_loss(p, x, x, zero); });
  CHECK(contains(e1, "tfm::ppo_policy_loss: the mask selects no token"));
  CHECK_THROWS_AS(ppo_value_loss(p, x, x, zero), tfm::value_error);
  CHECK_THROWS_AS(grpo_loss(p, x, x, filled(S1(2), 1.0), zero), tfm::value_error);
  // sequence_logprob: an empty row sums to 0; its mean has no value.
  auto s = sequence_logprob(p, zero);
  CHECK(s.value()(0) == 0);
  CHECK(s.value()(1) == 0);
  const std::string e2 = error_of([&] { sequence_logprob(p, zero, seq_reduction::mean); });
  CHECK(contains(e2, "row 0 of the mask selects no token"));
}

TEST_CASE("grpo_loss: an empty row adds nothing under the sequence normalisation") {
  auto m = filled(S2(2, 3), 1.0);
  m(1, 0) = m(1, 1) = m(1, 2) = 0;
  const auto lp = filled(S2(2, 3), -1.0);
  auto p = parameter(lp);
  tensor<double, S1> adv(S1(2));
  adv(0) = 2;
  adv(1) = 7;
  auto r = grpo_loss(p, lp, lp, adv, m);
  CHECK(r.loss.item() == doctest::Approx(-2.0 / 2));  // (1/B) (row 0's mean -A) + 0
  r.loss.backward();
  CHECK(p.grad()(1, 0) == 0);
}

TEST_CASE("masks must hold 0 or 1; shapes must match; batches must not be empty") {
  const auto x = filled(S2(2, 3), -1.0);
  auto p = parameter(x);
  auto half = filled(S2(2, 3), 1.0);
  half(1, 2) = 0.5;
  const std::string e = error_of([&] { ppo_policy_loss(p, x, x, half); });
  CHECK(contains(e, "the mask must hold 0 or 1, got 0.5"));
  CHECK(contains(e, "at (1, 2)"));
  const std::string s =
      error_of([&] { ppo_policy_loss(p, filled(S2(2, 4), 0.0), x, filled(S2(2, 3), 1.0)); });
  CHECK(contains(s, "old_logp has shape (2, 4) but new_logp has shape (2, 3)"));
  CHECK_THROWS_AS(ppo_value_loss(p, x, filled(S2(3, 3), 0.0), filled(S2(2, 3), 1.0)),
                  tfm::shape_error);
  CHECK_THROWS_AS(grpo_loss(p, x, x, filled(S1(3), 1.0), filled(S2(2, 3), 1.0)), tfm::shape_error);
  auto a = parameter(filled(S1(3), -1.0));
  auto b = parameter(filled(S1(4), -1.0));
  const std::string d = error_of([&] { dpo_loss(a, b, a, a); });
  CHECK(contains(d, "tfm::dpo_loss: pi_rejected has shape (4,) but pi_chosen has shape (3,)"));
  CHECK_THROWS_AS(bradley_terry_loss(a, b), tfm::shape_error);
  CHECK_THROWS_AS(bradley_terry_loss(a, a, filled(S1(2), 0.0)), tfm::shape_error);
  auto e0 = parameter(tensor<double, S1>(S1(0)));
  CHECK(contains(error_of([&] { dpo_loss(e0, e0, e0, e0); }), "the batch is empty"));
  CHECK_THROWS_AS(bradley_terry_loss(e0, e0), tfm::value_error);
  auto e2 = parameter(tensor<double, S2>(S2(0, 3)));
  CHECK_THROWS_AS(ppo_policy_loss(e2, tensor<double, S2>(S2(0, 3)), tensor<double, S2>(S2(0, 3)),
                                  tensor<double, S2>(S2(0, 3))),
                  tfm::value_error);
}

TEST_CASE("bad options are clear errors") {
  auto a = parameter(filled(S1(2), -1.0));
  CHECK(contains(error_of([&] { dpo_loss(a, a, a, a, {0.0}); }), "beta must be"));
  CHECK(contains(error_of([&] {
                   dpo_loss(a, a, a, a, {0.1, dpo_kind::ipo, 0.1});
                 }),
                 "applies to dpo_kind::sigmoid only"));
  CHECK_THROWS_AS(dpo_loss(a, a, a, a, {0.1, dpo_kind::sigmoid, 0.7}), tfm::value_error);
  const auto x = filled(S2(1, 2), -1.0), one = filled(S2(1, 2), 1.0);
  auto p = parameter(x);
  CHECK_THROWS_AS(ppo_policy_loss(p, x, x, one, {-0.1}), tfm::value_error);
  CHECK_THROWS_AS(ppo_value_loss(p, x, x, one, 0.0), tfm::value_error);
  CHECK_THROWS_AS(grpo_loss(p, x, x, filled(S1(1), 1.0), one, {0.2, 0.0, -1.0}), tfm::value_error);
}

TEST_CASE_TEMPLATE("extreme inputs: finite losses and gradients", T, float, double) {
  // DPO with log-probs at -100 and 0 on opposite sides, beta 1: beta h = +-200.
  for (double sgn : {1.0, -1.0}) {
    tensor<T, S1> hi(S1(2)), lo(S1(2)), z(S1(2));
    hi.fill(T(0));
    lo.fill(T(-100));
    z.fill(T(-50));
    auto pc = parameter(sgn > 0 ? hi : lo);
    auto pr = parameter(sgn > 0 ? lo : hi);
    for (dpo_kind k : {dpo_kind::sigmoid, dpo_kind::ipo, dpo_kind::hinge}) {
      auto r = dpo_loss(pc, pr, constant(z), constant(z), {1.0, k, 0.0});
      CHECK(std::isfinite(static_cast<double>(r.loss.item())));
      r.loss.backward();
      CHECK(grad_finite(pc));
      CHECK(grad_finite(pr));
      pc.zero_grad();
      pr.zero_grad();
    }
    auto s = dpo_loss(pc, pr, constant(z), constant(z), {1.0, dpo_kind::sigmoid, 0.1});
    CHECK(std::isfinite(static_cast<double>(s.loss.item())));
    // Bradley-Terry with rewards +-100.
    auto bt = bradley_terry_loss(pc, pr, 0.0);
    CHECK(std::isfinite(static_cast<double>(bt.loss.item())));
    if (sgn < 0) CHECK(static_cast<double>(bt.loss.item()) == doctest::Approx(100.0));
    bt.loss.backward();
    CHECK(grad_finite(pc));
  }
  // PPO: log-ratios of +-100 with positive advantages (the clipped side bounds the loss) and
  // GRPO's k3 at a log-ratio of -100 to the reference (exp(-100) is tiny; the other direction,
  // exp(+100) = 2.7e43, is the estimator's true value and overflows float).
  tensor<T, S2> nw(S2(1, 2)), old(S2(1, 2)), adv(S2(1, 2)), one(S2(1, 2));
  nw(0, 0) = T(0);
  nw(0, 1) = T(-100);
  old(0, 0) = T(-100);
  old(0, 1) = T(0);
  adv.fill(T(1));
  one.fill(T(1));
  auto p = parameter(nw);
  auto r = ppo_policy_loss(p, old, adv, one);
  CHECK(std::isfinite(static_cast<double>(r.loss.item())));
  CHECK(r.clip_fraction == 0.5);
  r.loss.backward();
  CHECK(grad_finite(p));
  tensor<T, S2> ref(S2(1, 2));
  ref.fill(T(-100));
  auto q = parameter(nw);
  tensor<T, S1> a1(S1(1));
  a1(0) = T(1);
  auto g = grpo_loss(q, old, ref, a1, one);
  CHECK(std::isfinite(static_cast<double>(g.loss.item())));
  g.loss.backward();
  CHECK(grad_finite(q));
  if constexpr (std::is_same_v<T, double>) {  // the unbounded sides are finite in double
    adv.fill(T(-1));
    auto n = parameter(nw);
    auto u = ppo_policy_loss(n, old, adv, one);
    CHECK(std::isfinite(u.loss.item()));
    CHECK(u.loss.item() == doctest::Approx(std::exp(100.0) / 2));
    auto k = grpo_loss(n, ref, nw, a1, one);
    CHECK(std::isfinite(k.loss.item()));
  }
}

TEST_CASE("constant operands: permuted views and vars read like contiguous tensors") {
  auto g = tfm_test::rng(21);
  const auto lp = tfm_test::random_tensor<tensor<double, S2>>(S2(3, 4), g, -3, -0.1);
  const auto old = tfm_test::random_tensor<tensor<double, S2>>(S2(3, 4), g, -3, -0.1);
  const auto adv = tfm_test::random_tensor<tensor<double, S2>>(S2(3, 4), g, -1, 1);
  auto mask = filled(S2(3, 4), 1.0);
  mask(0, 3) = mask(2, 0) = 0;
  // The same values stored transposed (4, 3) and read through permute<1, 0>.
  auto transposed = [](const tensor<double, S2>& t) {
    tensor<double, S2> u(S2(t.extent(1), t.extent(0)));
    for (index_t i = 0; i < t.extent(0); ++i)
      for (index_t j = 0; j < t.extent(1); ++j) u(j, i) = t(i, j);
    return u;
  };
  const auto old_t = transposed(old), adv_t = transposed(adv), mask_t = transposed(mask);
  auto p = parameter(lp);
  const double want = ppo_policy_loss(p, old, adv, mask).loss.item();
  CHECK(ppo_policy_loss(p, permute<1, 0>(old_t), permute<1, 0>(adv_t), permute<1, 0>(mask_t))
            .loss.item() == want);
  // A var that requires gradients as old_logp: read, and given no gradient.
  auto old_var = parameter(old);
  auto r = ppo_policy_loss(p, old_var, adv, mask);
  CHECK(r.loss.item() == want);
  r.loss.backward();
  CHECK_FALSE(old_var.has_grad());
  CHECK(p.has_grad());
  // A bool mask works like a 0/1 float one.
  tensor<bool, S2> bm(S2(3, 4));
  for (index_t i = 0; i < 12; ++i) bm.data()[i] = mask.data()[i] != 0;
  CHECK(ppo_policy_loss(p, old, adv, bm).loss.item() == want);
}
