// Mixed precision in the optimizer: bf16/f16 parameters get f32 master weights. The master copy
// (read back from the saved state) follows the double reference rule; the parameter equals the
// master rounded to its type, bit for bit; and a long run of updates far below the type's
// resolution still moves the parameter (it would stay put if updates were applied in bf16/f16).
#include "optim_test_util.hpp"

#include <doctest/doctest.h>
#include <typeformer/core/half.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <cmath>
#include <string>
#include <type_traits>

using namespace tfm;
using namespace optim_test;

TEST_CASE_TEMPLATE("bf16/f16 parameters: the f32 master copy follows the formula", T, bf16, f16) {
  static_assert(std::is_same_v<grad_t<T>, float>, "half parameters have f32 gradients");
  auto g = tfm_test::rng(301);
  const std::vector<std::size_t> sizes{37, 5};
  const std::vector<bool> decay{true, false};
  const auto init = random_init(sizes, g);
  for (int method = 0; method < 3; ++method) {
    const std::string name = method == 0 ? "sgd nesterov" : method == 1 ? "adam" : "adamw";
    CAPTURE(name);
    auto ps = params<T>(init, decay);
    optim::adam_options o;
    o.lr = 0.01;
    o.weight_decay = 0.2;
    auto opt = method == 0   ? optim::sgd(ps.list, optim::sgd_options{0.02, 0.9, 0.2, true})
               : method == 1 ? optim::adam(ps.list, o)
                             : optim::adamw(ps.list, o);
    ref_sgd rs{0.9, 0.2, true, {}};
    ref_adam ra;
    ra.wd = 0.2;
    ra.decoupled = method == 2;
    auto want = values(ps);  // the master copy starts from the rounded values
    {
      auto st = parse_state(save_bytes(opt));
      vec m0;
      for (const auto& sl : st.slots) m0.insert(m0.end(), sl.master.begin(), sl.master.end());
      TFM_CHECK_BITWISE(m0, flat(want));
    }
    for (int s = 0; s < 7; ++s) {
      // |g| >= 0.5 > |wd p| (<= 0.32): the L2 term never cancels the gradient (Adam's step is
      // ill-conditioned where g ~ 0; see adam_test.cpp).
      const auto gs = set_grads(ps, random_grads(init, g, 0.5, 2.0));
      REQUIRE(opt.step());
      if (method == 0)
        rs.step(want, gs, decay, 0.02);
      else
        ra.step(want, gs, decay, 0.01);
    }
    auto st = parse_state(save_bytes(opt));
    vec master;
    for (const auto& sl : st.slots) master.insert(master.end(), sl.master.begin(), sl.master.end());
    // f32 master weights updated in double and stored in f32 each step (6e-8 of the value per
    // step, 7 steps), moments in f32: 1e-6 of the largest value.
    auto rep = close_scaled(master, flat(want), 1e-6);
    MESSAGE(name, ": master vs reference: ", rep.str());
    TFM_CHECK_REPORT(rep);
    // The parameter is the master rounded to T (round to nearest even), bit for bit.
    const auto raw = raw_values(ps);
    REQUIRE(raw.size() == master.size());
    std::vector<T> rounded;
    for (double m : master) rounded.push_back(T(static_cast<float>(m)));
    TFM_CHECK_BITWISE(raw, rounded);
    // The master holds more than T does: most elements differ from their rounded value.
    int finer = 0;
    for (std::size_t k = 0; k < master.size(); ++k)
      finer += tfm_test::to_double(raw[k]) != master[k];
    CHECK(finer > static_cast<int>(master.size()) / 2);
  }
}

TEST_CASE_TEMPLATE("bf16/f16 parameters: many tiny updates accumulate in the master copy", T, bf16,
                   f16) {
  // p = 1, gradient 1, 400 steps of size 1e-4. The spacing of T at 1 is 2^-7 (bf16) or 2^-10
  // (f16); an update of 1e-4 is below half of it, so applying it to the T value would round
  // back to 1 every time. With f32 master weights p ends at T(1 - 0.04).
  const int steps = 400;
  const double lr = 1e-4;
  T naive = T(1.0f);
  for (int s = 0; s < steps; ++s) naive = T(static_cast<float>(naive) - static_cast<float>(lr));
  CHECK(static_cast<float>(naive) == 1.0f);  // why master weights are needed

  for (int method = 0; method < 2; ++method) {
    CAPTURE(method);
    auto ps = params<T>({{1.0, -2.0}}, {true});
    optim::adam_options o;
    o.lr = lr;
    auto opt = method == 0 ? optim::sgd(ps.list, optim::sgd_options{lr, 0.0, 0.0, false})
                           : optim::adam(ps.list, o);
    for (int s = 0; s < steps; ++s) {
      set_grads(ps, {{1.0, -1.0}});
      REQUIRE(opt.step());
    }
    // SGD moves by lr per step; Adam with a constant gradient by lr |g| / (|g| + eps).
    const double moved = steps * lr;
    auto st = parse_state(save_bytes(opt));
    const auto& master = st.slots[0].master;
    // 400 f32 additions near 1 and 2 round by <= 1.2e-7 each.
    CHECK(std::fabs(master[0] - (1.0 - moved)) <= 5e-5);
    CHECK(std::fabs(master[1] - (-2.0 + moved)) <= 5e-5);
    const auto p = raw_values(ps);
    CHECK(tfm_test::bits_of(p[0]) == tfm_test::bits_of(T(master[0])));
    CHECK(tfm_test::bits_of(p[1]) == tfm_test::bits_of(T(master[1])));
    MESSAGE("method ", method, ": p = ", static_cast<float>(p[0]), ", ", static_cast<float>(p[1]),
            " (master ", master[0], ", ", master[1], ")");
    CHECK(static_cast<float>(p[0]) < 0.97f);
    CHECK(static_cast<float>(p[1]) > -1.97f);
  }
}
