// train/rl_math.hpp against the numpy reference of tests/data/alignment/gen_alignment.py (GAE
// as the explicit discounted sum of TD residuals, TRL's masked whitening, GRPO's group
// normalisation, the KL-penalised token rewards), in float and double, and its errors.
#include "alignment_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/train/rl_math.hpp>

#include <span>
#include <string>
#include <vector>

using namespace tfm;
using al::arr;
using al::cast_vec;

namespace {
template <class T>
void check_all(const std::vector<T>& got, const std::vector<double>& want, const char* what) {
  REQUIRE(got.size() == want.size());
  const double rtol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    al::check_close(static_cast<double>(got[i]), want[i], rtol, rtol, what);
  }
}
}  // namespace

TEST_CASE_TEMPLATE("gae: advantages and returns against numpy", T, float, double) {
  const auto r = cast_vec<T>(arr("gae.rewards")), v = cast_vec<T>(arr("gae.values"));
  auto g = train::gae(r, v, 0.99, 0.95);
  check_all(g.advantages, arr("gae.adv"), "advantages");
  check_all(g.returns, arr("gae.ret"), "returns");
  check_all(train::gae(r, v, 0.99, 0.95, 0.7).advantages, arr("gae.adv_boot"), "bootstrap");
  // lambda = 0: one-step TD residuals; lambda = 1, gamma = 1: return-to-go minus value.
  auto td = train::gae(r, v, 1.0, 1.0);
  double rtg = 0;
  for (std::size_t t = r.size(); t-- > 0;) {
    rtg += static_cast<double>(r[t]);
    CHECK(static_cast<double>(td.returns[t]) == doctest::Approx(rtg).epsilon(1e-5));
  }
  CHECK_THROWS_AS(train::gae<T>(r, std::span<const T>(v).first(3), 0.9, 0.9), tfm::shape_error);
  CHECK_THROWS_AS(train::gae(r, v, 1.5, 0.9), tfm::value_error);
  CHECK(train::gae(std::vector<T>(), std::vector<T>(), 0.9, 0.9).advantages.empty());
}

TEST_CASE_TEMPLATE("whiten: masked, with and without the mean shift, against numpy", T, float,
                   double) {
  const auto x = cast_vec<T>(arr("whiten.x"));
  const auto m = cast_vec<T>(arr("whiten.mask"));
  check_all(train::whiten(x, m, true), arr("whiten.shift"), "shift");
  check_all(train::whiten(x, m, false), arr("whiten.noshift"), "noshift");
  std::vector<T> one_hot(x.size(), T(0));
  one_hot[3] = T(1);
  CHECK_THROWS_AS(train::whiten(x, one_hot), tfm::value_error);
  auto u = train::whiten(x);
  double s = 0;
  for (T y : u) s += static_cast<double>(y);
  CHECK(std::fabs(s) < 1e-4);
}

TEST_CASE_TEMPLATE("group_advantages against numpy", T, float, double) {
  const auto r = cast_vec<T>(arr("group.rewards"));
  check_all(train::group_advantages(r, 4), arr("group.std"), "scaled");
  check_all(train::group_advantages(r, 4, {false}), arr("group.nostd"), "mean only");
  auto a = train::group_advantages(r, 4);
  for (std::size_t i = 8; i < 12; ++i) CHECK(a[i] == T(0));  // identical rewards: no signal
  CHECK_THROWS_AS(train::group_advantages(r, 5), tfm::shape_error);
  CHECK_THROWS_AS(train::group_advantages(r, 1), tfm::value_error);
  CHECK_THROWS_AS(train::group_advantages(r, 4, {true, true, 0.0}), tfm::value_error);
}

TEST_CASE_TEMPLATE("kl_penalized_rewards: k1 and k3 against numpy", T, float, double) {
  const auto sc = cast_vec<T>(arr("klr.score")), lp = cast_vec<T>(arr("klr.logp"));
  const auto ref = cast_vec<T>(arr("klr.ref"));
  const auto m = cast_vec<T>(arr("klr.mask"));
  check_all(train::kl_penalized_rewards(sc, lp, ref, m, 5, 0.05), arr("klr.k1"), "k1");
  check_all(train::kl_penalized_rewards(sc, lp, ref, m, 5, 0.05, train::kl_estimator::k3),
            arr("klr.k3"), "k3");
  auto m0 = m;
  for (std::size_t t = 10; t < 15; ++t) m0[t] = T(0);
  CHECK_THROWS_AS(train::kl_penalized_rewards(sc, lp, ref, m0, 5, 0.05), tfm::value_error);
  CHECK_THROWS_AS(train::kl_penalized_rewards(sc, lp, ref, m, 4, 0.05), tfm::shape_error);
}
