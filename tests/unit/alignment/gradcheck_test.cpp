// Float64 gradient checks (testing/gradcheck.hpp, central differences, eps 1e-6) of every
// alignment loss in TFM_ALIGNMENT_OPS (autodiff/registry.hpp), with the count tripwire of that
// list: adding an op there without a case here fails the static_assert and the "no case" test.
// Inputs are random (seed printed) and kept away from the kinks (clip bounds, hinge margin) by
// far more than eps. The float gradients are checked against the double ones on the same
// inputs, and the losses composed with linear_cross_entropy are checked end to end.
#include "alignment_support.hpp"

#include <doctest/doctest.h>
#include <op_table.hpp>
#include <typeformer/autodiff/registry.hpp>
#include <typeformer/ops/alignment_loss.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear_loss.hpp>
#include <typeformer/testing/gradcheck.hpp>

#include <cmath>
#include <cstdio>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <vector>

using namespace tfm;
using al::S1;
using al::S2;

namespace {

std::map<std::string, double>& worst() {
  static std::map<std::string, double> m;
  return m;
}

void expect(const char* op, const char* what, const testing::gradcheck_result& r) {
  INFO(op, " (", what, "): ", r.str());
  CHECK(r.passed);
  CHECK(r.checked > 0);
  CHECK(r.max_rel_error < 1e-6);
  auto& w = worst()[op];
  w = std::max(w, r.max_rel_error);
}

template <class S>
tensor<double, S> urnd(const S& s, std::mt19937& g, double lo, double hi) {
  return tfm_test::random_tensor<tensor<double, S>>(s, g, lo, hi);
}

/// A 0/1 mask (B, T) whose row b covers [b % 2, b % 2 + len_b) with len_b >= 1.
tensor<double, S2> ragged_mask(index_t B, index_t T) {
  tensor<double, S2> m(S2(B, T));
  m.fill(0.0);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = b % 2; t < std::min(T, b % 2 + 1 + (b * 3) % T); ++t) m(b, t) = 1.0;
  return m;
}

/// new = old + d, with |exp(d) - (1 +- eps)| > 1e-3 everywhere (away from the clip kinks).
tensor<double, S2> near(const tensor<double, S2>& old, std::mt19937& g, double eps) {
  auto d = urnd(old.shape(), g, -0.5, 0.5);
  for (index_t i = 0; i < d.size(); ++i) {
    const double r = std::exp(d.data()[i]);
    if (std::fabs(r - (1 + eps)) < 1e-3 || std::fabs(r - (1 - eps)) < 1e-3) d.data()[i] += 0.01;
  }
  tensor<double, S2> n(old.shape());
  for (index_t i = 0; i < n.size(); ++i) n.data()[i] = old.data()[i] + d.data()[i];
  return n;
}

void gc_sequence_logprob() {
  auto g = tfm_test::rng(11);
  const auto nll = urnd(S2(4, 7), g, 0.1, 5.0);
  const auto m = ragged_mask(4, 7);
  for (auto red : {seq_reduction::sum, seq_reduction::mean})
    expect("sequence_logprob", red == seq_reduction::sum ? "sum" : "mean",
           testing::gradcheck([&](const auto& x) { return sequence_logprob(x, m, red); },
                              parameter(nll)));
}

void gc_dpo_loss() {
  auto g = tfm_test::rng(12);
  const index_t B = 6;
  const auto pc = urnd(S1(B), g, -30, -5), pr = urnd(S1(B), g, -30, -5);
  const auto rc = urnd(S1(B), g, -30, -5), rr = urnd(S1(B), g, -30, -5);
  struct cfg {
    const char* what;
    dpo_options o;
  };
  // beta 0.05: |beta h| <= 2.5, and the hinge margin (beta h = 1) is avoided below.
  const cfg cases[] = {{"sigmoid", {0.05, dpo_kind::sigmoid, 0.0}},
                       {"cdpo", {0.05, dpo_kind::sigmoid, 0.25}},
                       {"ipo", {0.05, dpo_kind::ipo, 0.0}},
                       {"hinge", {0.05, dpo_kind::hinge, 0.0}}};
  for (const auto& c : cases) {
    if (c.o.kind == dpo_kind::hinge)
      for (index_t b = 0; b < B; ++b) {
        const double z = c.o.beta * ((pc(b) - rc(b)) - (pr(b) - rr(b)));
        REQUIRE_MESSAGE(std::fabs(z - 1) > 1e-3, "a hinge pair sits on the kink; change the seed");
      }
    expect("dpo_loss", c.what,
           testing::gradcheck([&](const auto& a, const auto& b, const auto& x,
                                  const auto& y) { return dpo_loss(a, b, x, y, c.o).loss; },
                              parameter(pc), parameter(pr), parameter(rc), parameter(rr)));
  }
}

void gc_bradley_terry_loss() {
  auto g = tfm_test::rng(13);
  const auto c = urnd(S1(9), g, -3, 3), r = urnd(S1(9), g, -3, 3);
  const auto m = urnd(S1(9), g, 0, 1);
  expect("bradley_terry_loss", "plain",
         testing::gradcheck(
             [&](const auto& a, const auto& b) { return bradley_terry_loss(a, b).loss; },
             parameter(c), parameter(r)));
  expect("bradley_terry_loss", "margins",
         testing::gradcheck(
             [&](const auto& a, const auto& b) { return bradley_terry_loss(a, b, m).loss; },
             parameter(c), parameter(r)));
}

void gc_ppo_policy_loss() {
  auto g = tfm_test::rng(14);
  const auto old = urnd(S2(3, 8), g, -6, -0.1);
  const auto nw = near(old, g, 0.2);
  const auto adv = urnd(S2(3, 8), g, -2, 2);
  const auto m = ragged_mask(3, 8);
  expect(
      "ppo_policy_loss", "eps 0.2",
      testing::gradcheck([&](const auto& x) { return ppo_policy_loss(x, old, adv, m, {0.2}).loss; },
                         parameter(nw)));
}

void gc_ppo_value_loss() {
  auto g = tfm_test::rng(15);
  const auto v = urnd(S2(3, 8), g, -2, 2);
  auto old = urnd(S2(3, 8), g, -0.5, 0.5);
  for (index_t i = 0; i < old.size(); ++i) {  // old = v + d, |d| away from the clip 0.2
    double d = old.data()[i];
    if (std::fabs(std::fabs(d) - 0.2) < 1e-3) d += 0.01;
    old.data()[i] = v.data()[i] + d;
  }
  const auto ret = urnd(S2(3, 8), g, -2, 2);
  const auto m = ragged_mask(3, 8);
  expect("ppo_value_loss", "clip 0.2",
         testing::gradcheck([&](const auto& x) { return ppo_value_loss(x, old, ret, m, 0.2).loss; },
                            parameter(v)));
}

void gc_grpo_loss() {
  auto g = tfm_test::rng(16);
  const auto old = urnd(S2(4, 6), g, -5, -0.1);
  const auto nw = near(old, g, 0.28);
  const auto nw2 = near(old, g, 0.2);  // away from both 0.2 and 0.28: draw again and combine
  tensor<double, S2> x0(S2(4, 6));
  for (index_t i = 0; i < x0.size(); ++i) {
    const double r = std::exp(nw.data()[i] - old.data()[i]);
    x0.data()[i] =
        std::fabs(r - 0.8) < 1e-3 || std::fabs(r - 1.2) < 1e-3 ? nw2.data()[i] : nw.data()[i];
  }
  const auto ref = urnd(S2(4, 6), g, -5, -0.1);
  const auto adv = urnd(S1(4), g, -2, 2);
  const auto adv_tok = urnd(S2(4, 6), g, -2, 2);
  const auto m = ragged_mask(4, 6);
  struct cfg {
    const char* what;
    grpo_options o;
  };
  const cfg cases[] = {{"sequence", {0.2, 0.0, 0.04, grpo_norm::sequence, 0}},
                       {"token, clip-higher", {0.2, 0.28, 0.1, grpo_norm::token, 0}},
                       {"fixed", {0.2, 0.0, 0.5, grpo_norm::fixed, 9}}};
  for (const auto& c : cases)
    expect(
        "grpo_loss", c.what,
        testing::gradcheck([&](const auto& x) { return grpo_loss(x, old, ref, adv, m, c.o).loss; },
                           parameter(x0)));
  expect("grpo_loss", "per-token advantages",
         testing::gradcheck([&](const auto& x) { return grpo_loss(x, old, ref, adv_tok, m).loss; },
                            parameter(x0)));
}

struct op_case {
  std::string_view op;
  void (*run)();
};
constexpr op_case table[] = {
    {"sequence_logprob", gc_sequence_logprob},     {"dpo_loss", gc_dpo_loss},
    {"bradley_terry_loss", gc_bradley_terry_loss}, {"ppo_policy_loss", gc_ppo_policy_loss},
    {"ppo_value_loss", gc_ppo_value_loss},         {"grpo_loss", gc_grpo_loss}};
static_assert(std::size(table) == tfm::alignment_op_count,
              "autodiff/registry.hpp's TFM_ALIGNMENT_OPS and this table differ in size: add a "
              "gradient check for every alignment op (tests/unit/alignment/gradcheck_test.cpp)");

}  // namespace

TEST_CASE("registry: every alignment op has a gradcheck case, and no case is stale") {
  tfm_test::check_op_table(tfm::detail::alignment_op_names, table, "alignment ops");
}

TEST_CASE("gradcheck (float64, central differences, eps 1e-6) of every alignment loss") {
  tfm_test::seed();
  for (const auto& c : table) {
    SUBCASE(std::string(c.op).c_str()) { c.run(); }
  }
}

TEST_CASE("summary: max relative error per alignment op") {
  // Runs after the checks above in the default (file) order; prints what they recorded.
  std::string s;
  char line[96];
  for (const auto& [op, e] : worst()) {
    std::snprintf(line, sizeof line, "  %-20s %.2e\n", op.c_str(), e);
    s += line;
  }
  if (!s.empty()) MESSAGE("max relative error per op (floor atol/rtol = 1e-2):\n", s);
}

TEST_CASE("float gradients equal the double ones on the same inputs (to float rounding)") {
  auto g = tfm_test::rng(17);
  const auto old = urnd(S2(3, 5), g, -4, -0.1);
  const auto nw = near(old, g, 0.2);
  const auto ref = urnd(S2(3, 5), g, -4, -0.1);
  const auto adv = urnd(S2(3, 5), g, -2, 2);
  const auto m = ragged_mask(3, 5);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    tensor<T, S2> x(nw.shape()), o(nw.shape()), r(nw.shape());
    for (index_t i = 0; i < x.size(); ++i) {
      x.data()[i] = static_cast<T>(nw.data()[i]);
      o.data()[i] = static_cast<T>(old.data()[i]);
      r.data()[i] = static_cast<T>(ref.data()[i]);
    }
    auto p = parameter(x);
    auto l = ppo_policy_loss(p, o, adv, m).loss + grpo_loss(p, o, r, adv, m).loss;
    l.backward();
    auto q = parameter(x);
    auto nll = sequence_logprob(q, m, seq_reduction::mean);
    auto d = dpo_loss(nll, nll, constant(nll.value()), constant(nll.value()));  // h = 0
    d.loss.backward();
    std::vector<double> out = al::grad_of(p);
    for (double v : al::grad_of(q)) out.push_back(v);
    return out;
  };
  const auto gf = run(0.0f);
  const auto gd = run(0.0);
  for (std::size_t i = 0; i < gd.size(); ++i) {
    INFO("element ", i, ": float ", gf[i], " double ", gd[i]);
    CHECK(std::fabs(gf[i] - gd[i]) <= 1e-6 + 1e-4 * std::fabs(gd[i]));
  }
}

TEST_CASE("end to end: linear_cross_entropy -> sequence_logprob -> dpo_loss, float64 gradcheck") {
  // The intended use: per-token NLL of the policy's hidden states through the LM head, summed
  // over each response's tokens (prompt and padding targets are ignore_index), then DPO against
  // fixed reference log-probs. Chosen and rejected sequences are two (P, T, C) batches.
  auto g = tfm_test::rng(18);
  const index_t P = 2, T = 5, C = 6, V = 11;
  const auto hc = urnd(tfm::dyn_shape<3>(P, T, C), g, -1, 1);
  const auto hr = urnd(tfm::dyn_shape<3>(P, T, C), g, -1, 1);
  const auto w = urnd(S2(V, C), g, -1, 1);
  const auto mc = ragged_mask(P, T), mr = ragged_mask(P + 1, T);
  tensor<double, S2> mr2(S2(P, T));  // other lengths for the rejected side: rows 1, 2
  for (index_t b = 0; b < P; ++b)
    for (index_t t = 0; t < T; ++t) mr2(b, t) = mr(b + 1, t);
  auto targets = [&](const tensor<double, S2>& m, int salt) {
    tensor<std::int32_t, S2> tg(S2(P, T));
    for (index_t b = 0; b < P; ++b)
      for (index_t t = 0; t < T; ++t)
        tg(b, t) = m(b, t) != 0 ? static_cast<std::int32_t>((b * 7 + t * 3 + salt) % V) : -100;
    return tg;
  };
  const auto tc = targets(mc, 0), tr = targets(mr2, 5);
  tensor<double, S1> refc{S1(P)}, refr{S1(P)};
  refc(0) = -12;
  refc(1) = -9;
  refr(0) = -10;
  refr(1) = -11;
  auto f = [&](const auto& xc, const auto& xr, const auto& wt) {
    auto lc = sequence_logprob(linear_cross_entropy<ce_reduction::none>(xc, wt, tc), mc);
    auto lr = sequence_logprob(linear_cross_entropy<ce_reduction::none>(xr, wt, tr), mr2);
    return dpo_loss(lc, lr, constant(refc), constant(refr), {0.2}).loss;
  };
  auto r = testing::gradcheck(f, parameter(hc), parameter(hr), parameter(w));
  INFO(r.str());
  CHECK(r.passed);
  CHECK(r.max_rel_error < 1e-6);
}
