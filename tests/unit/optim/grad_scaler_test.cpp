// The dynamic loss scaler (optim/grad_scaler.hpp; PyTorch GradScaler policy, Micikevicius et al.
// arXiv:1710.03740): scale(loss) gives gradients times the scale; unscale divides them back;
// forced overflow (an Inf gradient, a loss whose scaled gradients overflow f32) makes unscale
// return false, the step is skipped and update() halves the scale; growth_interval clean steps
// double it. The policy is checked step by step against an independent state machine on a
// random overflow pattern. bf16/f16 losses: grad_scaler_half_test.cpp.
#include "scaler_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/optim/grad_scaler.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace tfm;
using namespace optim_test;

TEST_CASE("grad_scaler: invalid settings raise value_error") {
  CHECK_THROWS_AS(optim::grad_scaler(0.0), tfm::value_error);
  CHECK_THROWS_AS(optim::grad_scaler(-1.0), tfm::value_error);
  CHECK_THROWS_AS(optim::grad_scaler(1024.0, 1.0), tfm::value_error);  // growth must be > 1
  CHECK_THROWS_AS(optim::grad_scaler(1024.0, 2.0, 1.0), tfm::value_error);
  CHECK_THROWS_AS(optim::grad_scaler(1024.0, 2.0, 0.0), tfm::value_error);
  CHECK_THROWS_AS(optim::grad_scaler(1024.0, 2.0, 0.5, 0), tfm::value_error);
  optim::grad_scaler d;
  CHECK(d.scale_value() == 65536.0);
  CHECK(d.clean_steps() == 0);
}

TEST_CASE_TEMPLATE("grad_scaler: scale(loss) gives scaled gradients; unscale divides them back", T,
                   float, double) {
  const vec c0{0.5, -1.25, 3.0, 0.015625, -7.0};
  linear_loss<T> L({0.1, 0.2, 0.3, 0.4, 0.5}, c0);
  const vec c = L.c_values();
  optim::grad_scaler sc(1024.0, 2.0, 0.5, 100);
  auto loss = L.loss();
  auto scaled = sc.scale(loss);
  // The scaled loss: loss * 1024 (a power of two: exact when it fits T).
  CHECK(tfm_test::to_double(scaled.value()()) ==
        doctest::Approx(tfm_test::to_double(loss.value()()) * 1024).epsilon(1e-12));
  scaled.backward();
  vec want;
  for (double x : c) want.push_back(x * 1024);
  TFM_CHECK_BITWISE(grads_of(L.ps), want);
  CHECK(sc.unscale(L.ps.list));
  CHECK_FALSE(sc.found_inf());
  TFM_CHECK_BITWISE(grads_of(L.ps), c);
  sc.update();
  CHECK(sc.scale_value() == 1024.0);
  CHECK(sc.clean_steps() == 1);
}

TEST_CASE("grad_scaler: an Inf or NaN gradient skips the step and halves the scale") {
  for (double bad :
       {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
        std::numeric_limits<double>::quiet_NaN()}) {
    CAPTURE(bad);
    auto ps = params<float>({{1.0, 2.0}, {3.0}}, {true, false});
    auto opt = optim::adamw(ps.list, optim::adam_options{});
    optim::grad_scaler sc(4096.0, 2.0, 0.5, 3);
    set_grads(ps, {{4096.0, 8192.0}, {-4096.0}});
    REQUIRE(sc.unscale(ps.list));
    sc.update();
    REQUIRE(opt.step());
    CHECK(sc.clean_steps() == 1);
    const auto vals = raw_values(ps);
    set_grads(ps, {{4096.0, bad}, {-4096.0}});
    const bool ok = sc.unscale(ps.list);
    CHECK_FALSE(ok);
    CHECK(sc.found_inf());
    if (ok) CHECK(opt.step());  // the training loop: skipped
    TFM_CHECK_BITWISE(raw_values(ps), vals);
    sc.update();
    CHECK(sc.scale_value() == 2048.0);
    CHECK(sc.clean_steps() == 0);  // the clean-step count starts again
    // The optimizer also refuses, should the caller step anyway.
    CHECK_FALSE(opt.step());
    TFM_CHECK_BITWISE(raw_values(ps), vals);
  }
}

TEST_CASE("grad_scaler: a loss scaled into f32 overflow backs off until the gradients fit") {
  // d loss / d w = 1e34; times 65536 = 6.6e38 > FLT_MAX = 3.4e38: Inf. Halved once to 32768:
  // 3.3e38 fits, and dividing by a power of two gives back 1e34 (as float) exactly.
  linear_loss<float> L({1.0, 1.0}, {1e34, -1e34});
  auto opt = optim::sgd(L.ps.list, optim::sgd_options{1e-40, 0.0, 0.0, false});
  optim::grad_scaler sc;  // 65536
  int skipped = 0, taken = 0;
  std::vector<double> scales;
  for (int it = 0; it < 3; ++it) {
    opt.zero_grad();
    sc.scale(L.loss()).backward();
    if (sc.unscale(L.ps.list)) {
      TFM_CHECK_BITWISE(grads_of(L.ps), L.c_values());
      CHECK(opt.step());
      ++taken;
    } else {
      const auto g = grads_of(L.ps);
      CHECK(std::isinf(g[0]));
      ++skipped;
    }
    sc.update();
    scales.push_back(sc.scale_value());
  }
  CHECK(skipped == 1);
  CHECK(taken == 2);
  CHECK(scales == std::vector<double>{32768.0, 32768.0, 32768.0});
  CHECK(sc.clean_steps() == 2);
}

TEST_CASE("grad_scaler: backoff and growth follow the policy over a random overflow pattern") {
  auto g = tfm_test::rng(601);
  std::bernoulli_distribution overflow(0.15);
  const std::int64_t interval = 4;
  optim::grad_scaler sc(1024.0, 2.0, 0.5, interval);
  auto ps = params<float>({{1.0, 2.0, 3.0}}, {true});
  double scale = 1024.0;  // the reference state machine
  std::int64_t clean = 0;
  int halvings = 0, growths = 0;
  for (int step = 0; step < 200; ++step) {
    CAPTURE(step);
    const bool inf = overflow(g);
    set_grads(ps, {{scale, inf ? std::numeric_limits<double>::infinity() : -scale, 0.5 * scale}});
    CHECK(sc.unscale(ps.list) == !inf);
    if (!inf) TFM_CHECK_BITWISE(grads_of(ps), (vec{1.0, -1.0, 0.5}));
    sc.update();
    if (inf) {
      scale /= 2;
      clean = 0;
      ++halvings;
    } else if (++clean == interval) {
      scale *= 2;
      clean = 0;
      ++growths;
    }
    REQUIRE(sc.scale_value() == scale);
    REQUIRE(sc.clean_steps() == clean);
  }
  MESSAGE("200 steps: ", halvings, " backoffs, ", growths, " growths, final scale ", scale);
  CHECK(halvings > 0);
  CHECK(growths > 0);
}
