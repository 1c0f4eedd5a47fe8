// Global-norm gradient clipping against the double formula (PyTorch's clip_grad_norm_:
// g *= max_norm / (norm + 1e-6) when norm > max_norm), and the learning-rate schedules against
// their formulas written independently (cosine as cos^2, WSD piecewise) at warmup start and
// end, midpoints, the end and beyond; invalid arguments raise value_error.
#include "optim_test_util.hpp"

#include <doctest/doctest.h>
#include <typeformer/core/half.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/optim/schedule.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>

using namespace tfm;
using namespace optim_test;

namespace {
double norm2(const vec& g) {
  long double s = 0;
  for (double x : g) s += static_cast<long double>(x) * x;
  return static_cast<double>(std::sqrt(s));
}
}  // namespace

TEST_CASE_TEMPLATE("clip_grad_norm: the global L2 norm and the scaling", T, float, double, bf16) {
  auto g = tfm_test::rng(501);
  // p2 never gets a gradient: it does not count and is not touched.
  const auto init = random_init({37, 5, 4, 1}, g);
  auto ps = params<T>(init, {true, false, true, true});
  auto gs = random_grads({init[0], init[1]}, g, 0.01, 3.0);
  gs.push_back({});
  gs.push_back(random_grads({init[3]}, g, 0.01, 3.0)[0]);
  for (std::size_t i : {0u, 1u, 3u})
    for (std::size_t k = 0; k < gs[i].size(); ++k)
      ps.vars[i].data()->grad_data()[k] = static_cast<grad_t<T>>(gs[i][k]);
  REQUIRE_FALSE(ps.vars[2].has_grad());
  const vec before = grads_of(ps);
  const double want = norm2(before);
  MESSAGE("global norm ", want);
  // f32 gradients: each squared exactly in double; only the summation order may differ.
  const double tol = std::is_same_v<grad_t<T>, float> ? 1e-12 : 1e-13;

  SUBCASE("above max_norm: scaled by max_norm / (norm + 1e-6)") {
    const double max_norm = want / 3.0;
    const double got = optim::clip_grad_norm(ps.list, max_norm);
    CHECK(got == doctest::Approx(want).epsilon(tol));
    const double c = max_norm / (want + 1e-6);
    vec scaled;
    for (double x : before) scaled.push_back(x * c);
    // The product is rounded to the gradient type once.
    auto rep = tfm_test::all_close(grads_of(ps), scaled, 0.0,
                                   std::is_same_v<grad_t<T>, float> ? 1e-7 : 1e-15);
    MESSAGE("scaled gradients: ", rep.str());
    TFM_CHECK_REPORT(rep);
    const double after = norm2(grads_of(ps));
    CHECK(after <= max_norm * (1 + 1e-7));
    CHECK(after >= max_norm * (1 - 1e-6));
    // Parameter values are never touched.
    TFM_CHECK_BITWISE(flat(values(ps)), flat(values(params<T>(init, {true, true, true, true}))));
  }
  SUBCASE("at or below max_norm: nothing changes") {
    const auto raw = raw_grads(ps);
    CHECK(optim::clip_grad_norm(ps.list, want * 2) == doctest::Approx(want).epsilon(tol));
    TFM_CHECK_BITWISE(raw_grads(ps), raw);
    const double exact = optim::clip_grad_norm(ps.list, 1e300);
    CHECK(optim::clip_grad_norm(ps.list, exact) == exact);  // norm == max_norm: no scaling
    TFM_CHECK_BITWISE(raw_grads(ps), raw);
  }
  SUBCASE("a non-finite gradient: the norm is not finite and the gradients stay as they are") {
    for (double bad :
         {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
      CAPTURE(bad);
      ps.vars[1].data()->grad_data()[2] = static_cast<grad_t<T>>(bad);
      const auto raw = raw_grads(ps);
      const double n = optim::clip_grad_norm(ps.list, 1.0);
      CHECK_FALSE(std::isfinite(n));
      if (std::isnan(bad))
        CHECK(std::isnan(n));
      else
        CHECK(n == std::numeric_limits<double>::infinity());
      TFM_CHECK_BITWISE(raw_grads(ps), raw);
    }
  }
}

TEST_CASE("clip_grad_norm over many chunks: same norm and gradients on 1 and 2 threads") {
  // 300001 values: ten 32 Ki chunks summed in parallel plus a ragged tail, next to a small one.
  auto g = tfm_test::rng(502);
  const auto init = random_init({300001, 7}, g);
  auto gs = random_grads(init, g, 0.01, 3.0);
  for (auto& v : gs)
    for (double& x : v) x = static_cast<float>(x);  // the values the float gradients hold
  const double want = norm2(gs[0]) * norm2(gs[0]) + norm2(gs[1]) * norm2(gs[1]);
  std::vector<vec> after;
  std::vector<double> norms;
  for (int threads : {1, 2}) {
    thread_scope ts(threads);
    auto ps = params<float>(init, {true, true});
    for (std::size_t i = 0; i < 2; ++i)
      for (std::size_t k = 0; k < gs[i].size(); ++k)
        ps.vars[i].data()->grad_data()[k] = static_cast<float>(gs[i][k]);
    norms.push_back(optim::clip_grad_norm(ps.list, 1.0));
    after.push_back(grads_of(ps));
  }
  CHECK(norms[0] == doctest::Approx(std::sqrt(want)).epsilon(1e-12));
  CHECK(norms[0] == norms[1]);  // bitwise: the chunk order does not depend on threads
  TFM_CHECK_BITWISE(after[0], after[1]);
  CHECK(norm2(after[0]) == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("grad_norm over many small gradients and gaps: one value on 1, 2 and 3 threads") {
  // Twelve parameters, most under 8 chunks (once summed one parameter at a time on one thread),
  // two of them without a gradient, chunk sums gathered in one parallel loop across parameters.
  auto g = tfm_test::rng(503);
  const std::vector<std::size_t> sizes = {5,     40000, 3,     70000, 1,     33000,
                                          90000, 7,     32768, 2,     65537, 11};
  const auto init = random_init(sizes, g);
  auto gs = random_grads(init, g, 0.01, 3.0);
  const std::vector<bool> has = {true,  true, false, true, true, true,
                                 false, true, true,  true, true, true};
  long double want = 0;
  for (std::size_t i = 0; i < gs.size(); ++i)
    for (double& x : gs[i]) {
      x = static_cast<float>(x);
      if (has[i]) want += static_cast<long double>(x) * x;
    }
  std::vector<double> norms;
  for (int threads : {1, 2, 3}) {
    thread_scope ts(threads);
    auto ps = params<float>(init, std::vector<bool>(sizes.size(), true));
    for (std::size_t i = 0; i < gs.size(); ++i)
      if (has[i])
        for (std::size_t k = 0; k < gs[i].size(); ++k)
          ps.vars[i].data()->grad_data()[k] = static_cast<float>(gs[i][k]);
    norms.push_back(optim::grad_norm(ps.list));
    CHECK(optim::clip_grad_norm(ps.list, 1e300) == norms.back());
  }
  MESSAGE("norm " << norms[0] << ", float64-summed reference "
                  << std::sqrt(static_cast<double>(want)));
  CHECK(norms[0] == doctest::Approx(std::sqrt(static_cast<double>(want))).epsilon(1e-13));
  CHECK(norms[0] == norms[1]);
  CHECK(norms[0] == norms[2]);
}

TEST_CASE("clip_grad_norm with no gradients returns 0") {
  auto ps = params<float>({{1.0, 2.0}}, {true});
  CHECK(optim::clip_grad_norm(ps.list, 1.0) == 0.0);
  CHECK_FALSE(ps.vars[0].has_grad());
}

// ---- schedules ---------------------------------------------------------------------------------

namespace {
constexpr double pi = std::numbers::pi;
/// Warmup: (step + 1) / warmup of the peak (nanoGPT), so step 0 already has a non-zero rate.
double ref_warmup(double lr, std::int64_t s, std::int64_t w) {
  return lr * static_cast<double>(s + 1) / static_cast<double>(w);
}
/// Cosine from lr to min_lr as p goes 0 -> 1: min + (lr - min) cos^2(pi p / 2)
/// (= min + (lr - min) (1 + cos(pi p)) / 2, SGDR arXiv:1608.03983).
double ref_cosine(double lr, double mn, double p) {
  const double c = std::cos(pi * p / 2);
  return mn + (lr - mn) * c * c;
}
}  // namespace

TEST_CASE("lr_schedule::constant") {
  auto s = optim::lr_schedule::constant(3e-4);
  for (std::int64_t t : {0, 1, 10, 1000000}) CHECK(s(t) == 3e-4);
}

TEST_CASE("lr_schedule::warmup_cosine: warmup, cosine decay to min_lr, then min_lr") {
  const double lr = 6e-4, mn = 6e-5;
  const std::int64_t w = 10, total = 110;  // 100 decay steps
  auto s = optim::lr_schedule::warmup_cosine(lr, mn, w, total);
  const double eps = 1e-13;
  CHECK(s(0) == doctest::Approx(lr / 10).epsilon(eps));  // warmup start: non-zero
  CHECK(s(4) == doctest::Approx(lr / 2).epsilon(eps));   // warmup midpoint
  CHECK(s(9) == doctest::Approx(lr).epsilon(eps));       // warmup end reaches the peak
  CHECK(s(10) == doctest::Approx(lr).epsilon(eps));      // decay start (p = 0)
  CHECK(s(35) == doctest::Approx(ref_cosine(lr, mn, 0.25)).epsilon(eps));
  CHECK(s(60) == doctest::Approx((lr + mn) / 2).epsilon(eps));  // decay midpoint
  CHECK(s(85) == doctest::Approx(ref_cosine(lr, mn, 0.75)).epsilon(eps));
  CHECK(s(109) == doctest::Approx(ref_cosine(lr, mn, 0.99)).epsilon(eps));
  CHECK(s(110) == mn);  // the end
  CHECK(s(111) == mn);  // beyond the end
  CHECK(s(1000000) == mn);
  for (std::int64_t t = 0; t < 200; ++t) {
    CAPTURE(t);
    const double want = t < w        ? ref_warmup(lr, t, w)
                        : t >= total ? mn
                                     : ref_cosine(lr, mn, static_cast<double>(t - w) / (total - w));
    CHECK(s(t) == doctest::Approx(want).epsilon(eps));
    if (t > 0 && t < w) CHECK(s(t) > s(t - 1));  // rising in warmup
    if (t > w) CHECK(s(t) <= s(t - 1));          // never rising after it
  }
  // No warmup: the first step has the peak rate.
  auto s0 = optim::lr_schedule::warmup_cosine(lr, 0.0, 0, 100);
  CHECK(s0(0) == doctest::Approx(lr).epsilon(eps));
  CHECK(s0(50) == doctest::Approx(lr / 2).epsilon(eps));
  CHECK(s0(100) == 0.0);
  // Warmup over the whole run: rises to lr, then min_lr.
  auto sw = optim::lr_schedule::warmup_cosine(lr, mn, 20, 20);
  CHECK(sw(19) == doctest::Approx(lr).epsilon(eps));
  CHECK(sw(20) == mn);
}

TEST_CASE("lr_schedule::warmup_stable_decay: warmup, flat, linear decay, then min_lr") {
  const double lr = 1e-3, mn = 1e-4;
  auto s = optim::lr_schedule::warmup_stable_decay(lr, mn, 10, 100, 20);  // decay over 80..99
  const double eps = 1e-13;
  CHECK(s(0) == doctest::Approx(lr / 10).epsilon(eps));
  CHECK(s(9) == doctest::Approx(lr).epsilon(eps));
  for (std::int64_t t = 10; t <= 80; ++t) CHECK(s(t) == lr);    // stable phase (80: decay p = 0)
  CHECK(s(90) == doctest::Approx((lr + mn) / 2).epsilon(eps));  // decay midpoint
  CHECK(s(85) == doctest::Approx(lr - (lr - mn) * 0.25).epsilon(eps));
  CHECK(s(99) == doctest::Approx(lr - (lr - mn) * 0.95).epsilon(eps));
  CHECK(s(100) == mn);
  CHECK(s(12345) == mn);
  // decay = 0: flat until the end, min_lr after it.
  auto s0 = optim::lr_schedule::warmup_stable_decay(lr, mn, 0, 50, 0);
  CHECK(s0(0) == lr);
  CHECK(s0(49) == lr);
  CHECK(s0(50) == mn);
  // The whole run after warmup decays.
  auto s1 = optim::lr_schedule::warmup_stable_decay(lr, 0.0, 10, 30, 20);
  CHECK(s1(10) == lr);
  CHECK(s1(20) == doctest::Approx(lr / 2).epsilon(eps));
}

TEST_CASE("lr_schedule: invalid arguments raise value_error") {
  using optim::lr_schedule;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(lr_schedule::warmup_cosine(1e-3, 2e-3, 10, 100), tfm::value_error);  // min > lr
  CHECK_THROWS_AS(lr_schedule::warmup_cosine(-1e-3, 0.0, 10, 100), tfm::value_error);
  CHECK_THROWS_AS(lr_schedule::warmup_cosine(1e-3, -1e-4, 10, 100), tfm::value_error);
  CHECK_THROWS_AS(lr_schedule::warmup_cosine(nan, 0.0, 10, 100), tfm::value_error);
  CHECK_THROWS_AS(lr_schedule::warmup_cosine(1e-3, 0.0, -1, 100), tfm::value_error);
  CHECK_THROWS_AS(lr_schedule::warmup_cosine(1e-3, 0.0, 10, 5), tfm::value_error);  // total < w
  CHECK_THROWS_AS(lr_schedule::warmup_stable_decay(1e-3, 0.0, 10, 100, -1), tfm::value_error);
  CHECK_THROWS_AS(lr_schedule::warmup_stable_decay(1e-3, 0.0, 10, 100, 91), tfm::value_error);
  CHECK_THROWS_AS(lr_schedule::warmup_stable_decay(1e-3, 2e-3, 10, 100, 20), tfm::value_error);
  CHECK_NOTHROW(lr_schedule::warmup_stable_decay(1e-3, 0.0, 10, 100, 90));
}

TEST_CASE("lr_schedule::constant rejects a negative or NaN rate") {
  CHECK_THROWS_AS(optim::lr_schedule::constant(-1e-3), tfm::value_error);
  CHECK_THROWS_AS(optim::lr_schedule::constant(std::numeric_limits<double>::quiet_NaN()),
                  tfm::value_error);
}

TEST_CASE("a schedule drives the optimizer: plain SGD with gradient 1 moves by the sum of rates") {
  auto s = optim::lr_schedule::warmup_stable_decay(0.1, 0.01, 3, 12, 4);
  auto ps = params<double>({{5.0}}, {true});
  auto opt = optim::sgd(ps.list, optim::sgd_options{0.0, 0.0, 0.0, false});
  double sum = 0;
  for (std::int64_t t = 0; t < 15; ++t) {
    opt.set_lr(s(t));
    sum += s(t);
    set_grads(ps, {{1.0}});
    REQUIRE(opt.step());
  }
  // 0.1 (1/3 + 2/3 + 1) + 0.1 * 5 + (0.1, 0.0775, 0.055, 0.0325) + 0.01 * 3
  CHECK(sum == doctest::Approx(0.2 + 0.5 + 0.265 + 0.03).epsilon(1e-13));
  CHECK(values(ps)[0][0] == doctest::Approx(5.0 - sum).epsilon(1e-14));
}
