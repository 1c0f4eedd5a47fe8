// Adam (L2 decay in the gradient) and AdamW (decoupled decay) with bias correction: closed forms
// for constant, alternating and zero gradients; the double reference rule over several steps with
// varying gradients and learning rates for f32 (SIMD, in f32) and f64 parameters, with a no-decay
// parameter group, sizes that cross the SIMD width and the 4096-element chunk; eps placement.
#include "optim_test_util.hpp"

#include <doctest/doctest.h>
#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/core/half.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <cmath>
#include <string>
#include <type_traits>

using namespace tfm;
using namespace optim_test;

namespace {
void near(double got, double want, double tol) {
  CHECK_MESSAGE(std::fabs(got - want) <= tol, "got ", got, " want ", want, " |diff| ",
                std::fabs(got - want), " tol ", tol);
}

template <class T>
optim::optimizer<T> make(bool adamw, const nn::parameter_list<T>& ps, optim::adam_options o) {
  return adamw ? optim::adamw(ps, o) : optim::adam(ps, o);
}
}  // namespace

TEST_CASE_TEMPLATE("Adam bias correction: closed forms", T, float, double) {
  // Moments are held in float and f32 parameters update in f32: 1e-6 absolute on values ~1.
  const double tol = 1e-6;
  optim::adam_options o;
  o.lr = 0.01;
  SUBCASE("a constant gradient moves every step by lr g / (|g| + eps), from the first step") {
    // m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so m^ = g and v^ = g^2 exactly: without
    // the bias correction the first step would be lr 0.1 g / (sqrt(0.001) |g|) = 3.16 lr.
    auto ps = params<T>({{1.0, -1.0}}, {true});
    auto opt = optim::adam(ps.list, o);
    for (int t = 1; t <= 5; ++t) {
      set_grads(ps, {{0.5, -0.25}});
      REQUIRE(opt.step());
      const auto p = values(ps)[0];
      near(p[0], 1.0 - t * 0.01 * 0.5 / (0.5 + 1e-8), tol);
      near(p[1], -1.0 + t * 0.01 * 0.25 / (0.25 + 1e-8), tol);
    }
  }
  SUBCASE("alternating gradients +1, -1") {
    // Step 1: m^ = 1, v^ = 1: p1 = p0 - lr. Step 2: m2 = 0.9 * 0.1 - 0.1 = -0.01,
    // m^ = -0.01 / (1 - 0.81) = -1/19; v2 = 0.999 * 0.001 + 0.001 = 0.001999 = 1 - 0.999^2,
    // v^ = 1: p2 = p1 + lr / 19.
    auto ps = params<T>({{2.0}}, {true});
    auto opt = optim::adam(ps.list, o);
    set_grads(ps, {{1.0}});
    REQUIRE(opt.step());
    near(values(ps)[0][0], 2.0 - 0.01 / (1 + 1e-8), tol);
    set_grads(ps, {{-1.0}});
    REQUIRE(opt.step());
    near(values(ps)[0][0], 2.0 - 0.01 / (1 + 1e-8) + (0.01 / 19) / (1 + 1e-8), tol);
  }
  SUBCASE("AdamW with zero gradients only decays: p_t = p0 (1 - lr wd)^t; no-decay group stays") {
    o.weight_decay = 0.5;
    auto ps = params<T>({{1.5, -0.75}, {1.25}}, {true, false});
    auto opt = optim::adamw(ps.list, o);
    for (int t = 1; t <= 6; ++t) {
      set_grads(ps, {{0.0, 0.0}, {0.0}});
      REQUIRE(opt.step());
    }
    const double f = std::pow(1.0 - 0.01 * 0.5, 6);
    near(values(ps)[0][0], 1.5 * f, tol);
    near(values(ps)[0][1], -0.75 * f, tol);
    CHECK(values(ps)[1][0] == 1.25);
  }
  SUBCASE("Adam with zero gradients: the L2 term is the gradient, the first step is -lr sign(p)") {
    o.weight_decay = 0.5;
    auto ps = params<T>({{1.5, -0.75}, {1.25}}, {true, false});
    auto opt = optim::adam(ps.list, o);
    set_grads(ps, {{0.0, 0.0}, {0.0}});
    REQUIRE(opt.step());
    near(values(ps)[0][0], 1.5 - 0.01 * 0.75 / (0.75 + 1e-8), tol);
    near(values(ps)[0][1], -0.75 + 0.01 * 0.375 / (0.375 + 1e-8), tol);
    CHECK(values(ps)[1][0] == 1.25);
  }
}

TEST_CASE_TEMPLATE("Adam and AdamW match the double reference over several steps", T, float,
                   double) {
  auto g = tfm_test::rng(202);
  // 37 and 5 cross the SIMD width (tail loop), 4100 crosses the update's 4096-element chunk,
  // 70001 is above the threading threshold (65536); p1 and p3 are no-decay group members
  // (biases, norm weights).
  const std::vector<std::size_t> sizes{37, 5, 4100, 1, 70001};
  const std::vector<bool> decay{true, false, true, false, true};
  const auto init = random_init(sizes, g);
  const vec lrs{0.01, 0.005, 0.01, 0.004, 0.008, 0.01, 0.006};

  struct cfg {
    std::string name;
    bool adamw;
    double b2, wd;
  };
  for (const cfg& c : {cfg{"adam", false, 0.999, 0.0}, cfg{"adam + L2 decay", false, 0.999, 0.1},
                       cfg{"adamw", true, 0.999, 0.1}, cfg{"adamw beta2 0.95", true, 0.95, 0.3}}) {
    CAPTURE(c.name);
    optim::adam_options o;
    o.lr = lrs[0];
    o.beta2 = c.b2;
    o.weight_decay = c.wd;
    auto ps = params<T>(init, decay);
    auto opt = make<T>(c.adamw, ps.list, o);
    ref_adam ref;
    ref.b2 = c.b2;
    ref.wd = c.wd;
    ref.decoupled = c.adamw;
    auto want = values(ps);
    for (std::size_t s = 0; s < lrs.size(); ++s) {
      opt.set_lr(lrs[s]);
      // |g| >= 0.2 > |wd p| (<= 0.16): the L2 term never cancels the gradient. Adam's step
      // g / (|g| + eps) is ill-conditioned where g ~ 0, and rounding the sum in f32 there
      // would change the step by a fraction of lr (seen with |g| >= 0.05, seed 109).
      const auto gs = set_grads(ps, random_grads(init, g, 0.2, 2.0));
      REQUIRE(opt.step());
      ref.step(want, gs, decay, lrs[s]);
    }
    // f32: the update runs in f32 with SIMD (as PyTorch's CPU Adam does): the parameter rounds
    // to f32 every step (<= 6e-8 of the value), and beta2 = 0.999 rounded to float changes
    // 1 - beta2 by 1.3e-5 of itself, so each update is off by up to ~7e-6 of itself (lr <= 0.01
    // keeps that below 1e-7). Tolerance 1e-6 of the largest value. f64: computed and stored in
    // double, 1e-12.
    auto rep = close_scaled(flat(values(ps)), flat(want), std::is_same_v<T, double> ? 1e-12 : 1e-6);
    MESSAGE(c.name, ": ", rep.str());
    TFM_CHECK_REPORT(rep);
    CHECK(tfm_test::nmse(flat(want), flat(init)) > 1e-4);
    // The moments follow the reference too (read back from the saved state).
    auto st = parse_state(save_bytes(opt));
    REQUIRE(st.slots.size() == sizes.size());
    vec m, v;
    for (const auto& sl : st.slots) {
      m.insert(m.end(), sl.m.begin(), sl.m.end());
      v.insert(v.end(), sl.v.begin(), sl.v.end());
    }
    TFM_CHECK_REPORT(tfm_test::all_close(m, flat(ref.m), 1e-7, 1e-5));
    TFM_CHECK_REPORT(tfm_test::all_close(v, flat(ref.v), 1e-7, 1e-5));
    CHECK(st.steps == lrs.size());
  }
}

TEST_CASE_TEMPLATE("Adam eps sits outside the square root: tiny gradients", T, float, double) {
  // |g| ~ 1e-8 makes sqrt(v^) ~ eps, so eps inside the root (sqrt(v^ + eps)) or a missing eps
  // would change the step by a large factor.
  auto g = tfm_test::rng(203);
  const auto init = random_init({19}, g);
  optim::adam_options o;
  o.lr = 0.01;
  auto ps = params<T>(init, {true});
  auto opt = optim::adam(ps.list, o);
  ref_adam ref;
  auto want = values(ps);
  for (int s = 0; s < 4; ++s) {
    const auto gs = set_grads(ps, random_grads(init, g, 0.2e-8, 3e-8));
    REQUIRE(opt.step());
    ref.step(want, gs, {true}, o.lr);
  }
  vec moved, moved_ref;
  const auto got = values(ps);
  for (std::size_t k = 0; k < init[0].size(); ++k) {
    moved.push_back(got[0][k] - tfm_test::to_double(tfm_test::from_double<T>(init[0][k])));
    moved_ref.push_back(want[0][k] - tfm_test::to_double(tfm_test::from_double<T>(init[0][k])));
  }
  // The displacements (up to ~0.04; signs vary, so some cancel) to 1e-4 of the largest in f32
  // (the f32 parameter rounds by 6e-8 each step) and 1e-10 in f64 (double state); eps
  // placements differ by tens of percent.
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-10;
  auto rep = close_scaled(moved, moved_ref, tol);
  MESSAGE("displacements: ", rep.str());
  TFM_CHECK_REPORT(rep);
}

TEST_CASE("Adam: a parameter without a gradient keeps its value and its moments") {
  auto ps = params<float>({{1.0, 2.0}, {3.0}}, {true, true});
  optim::adam_options o;
  o.weight_decay = 0.1;
  auto opt = optim::adamw(ps.list, o);
  ps.vars[0].grad()(0) = 1.0f;
  ps.vars[0].grad()(1) = -1.0f;
  REQUIRE(opt.step());
  CHECK(values(ps)[1][0] == 3.0);
  auto st = parse_state(save_bytes(opt));
  CHECK(st.slots[1].m == vec{0.0});
  CHECK(st.slots[1].v == vec{0.0});
  CHECK(st.slots[0].m[0] == doctest::Approx(0.1).epsilon(1e-6));
}

TEST_CASE_TEMPLATE("Adam/AdamW/SGD updates are bitwise the same on 1 and 2 threads", T, float,
                   double, bf16) {
  auto g = tfm_test::rng(205);
  const auto init = random_init({70001, 3}, g);
  std::vector<std::vector<vec>> grads;
  for (int s = 0; s < 3; ++s) grads.push_back(random_grads(init, g, 0.05, 2.0));
  for (int method = 0; method < 3; ++method) {
    CAPTURE(method);
    std::vector<T> out[2];
    for (int threads : {1, 2}) {
      thread_scope ts(threads);
      auto ps = params<T>(init, {true, false});
      optim::adam_options o;
      o.weight_decay = 0.1;
      auto opt = method == 0   ? optim::sgd(ps.list, optim::sgd_options{0.01, 0.9, 0.1, false})
                 : method == 1 ? optim::adam(ps.list, o)
                               : optim::adamw(ps.list, o);
      for (const auto& gs : grads) {
        set_grads(ps, gs);
        REQUIRE(opt.step());
      }
      out[threads - 1] = raw_values(ps);
    }
    TFM_CHECK_BITWISE(out[1], out[0]);
  }
}

// As in torch.optim.Adam/AdamW, each parameter keeps its own step count (incremented only when
// it has a gradient), so a parameter that first gets a gradient late (a layer unfrozen, an
// expert first routed to) takes a first step of exactly lr.
TEST_CASE("Adam: a parameter that first gets a gradient late takes a first step of lr") {
  auto ps = params<double>({{1.0}, {2.0}}, {true, true});
  optim::adam_options o;
  o.lr = 0.01;
  auto opt = optim::adam(ps.list, o);
  for (int s = 0; s < 3; ++s) {
    ps.vars[0].grad()(0) = 0.5;  // only p0 has a gradient for three steps
    REQUIRE(opt.step());
  }
  ps.vars[0].grad()(0) = 0.5;
  ps.vars[1].grad()(0) = -0.25;
  REQUIRE(opt.step());
  near(values(ps)[0][0], 1.0 - 4 * 0.01 * 0.5 / (0.5 + 1e-8), 1e-9);
  near(values(ps)[1][0], 2.0 + 0.01 * 0.25 / (0.25 + 1e-8), 1e-9);  // its own first step
}

// f64 parameters keep their moments and momentum buffer in double (PyTorch keeps the state in
// the parameter's dtype), so they follow the double formula.
TEST_CASE("f64 parameters: SGD momentum, Adam and AdamW follow the double formula to 1e-12") {
  auto g = tfm_test::rng(204);
  const std::vector<std::size_t> sizes{37, 3};
  const std::vector<bool> decay{true, false};
  const auto init = random_init(sizes, g);
  for (int method = 0; method < 3; ++method) {
    CAPTURE(method);
    auto ps = params<double>(init, decay);
    optim::adam_options o;
    o.lr = 0.01;
    o.weight_decay = 0.1;
    auto opt = method == 0   ? optim::sgd(ps.list, optim::sgd_options{0.05, 0.9, 0.1, true})
               : method == 1 ? optim::adam(ps.list, o)
                             : optim::adamw(ps.list, o);
    ref_sgd rs{0.9, 0.1, true, {}};
    ref_adam ra;
    ra.wd = 0.1;
    ra.decoupled = method == 2;
    auto want = values(ps);
    for (int s = 0; s < 6; ++s) {
      const auto gs = set_grads(ps, random_grads(init, g, 0.2, 2.0));  // |g| > |wd p|
      REQUIRE(opt.step());
      if (method == 0)
        rs.step(want, gs, decay, 0.05);
      else
        ra.step(want, gs, decay, 0.01);
    }
    auto rep = close_scaled(flat(values(ps)), flat(want), 1e-12);
    MESSAGE("method ", method, ": ", rep.str());
    TFM_CHECK_REPORT(rep);
  }
}
