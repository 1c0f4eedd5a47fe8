// The loss scaler with bf16/f16 losses: scale(loss) gives the loss's gradient times the scale in
// f32 gradients; an f16 loss with the default scale (65536, beyond f16's largest finite 65504)
// overflows, the step is skipped, and after one backoff the run recovers.
#include "scaler_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/core/half.hpp>
#include <typeformer/optim/grad_scaler.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <cmath>

using namespace tfm;
using namespace optim_test;

TEST_CASE_TEMPLATE("grad_scaler: scale(loss) gives scaled gradients; unscale divides them back", T,
                   bf16, f16) {
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

TEST_CASE("grad_scaler: an f16 loss with a scale beyond f16's range overflows, then recovers") {
  // The scale multiplies the loss in the loss's type: 65536 exceeds f16's largest finite value
  // (65504), so the scaled loss and every gradient are Inf; after one backoff 32768 fits.
  linear_loss<f16> L({0.25, -0.5, 1.0}, {0.5, 1.0, 0.25});  // loss -0.125
  optim::grad_scaler sc;
  auto opt = optim::adam(L.ps.list, optim::adam_options{});
  const auto vals = raw_values(L.ps);
  sc.scale(L.loss()).backward();
  CHECK_FALSE(sc.unscale(L.ps.list));
  TFM_CHECK_BITWISE(raw_values(L.ps), vals);
  sc.update();
  CHECK(sc.scale_value() == 32768.0);
  opt.zero_grad();
  auto scaled = sc.scale(L.loss());
  CHECK(std::isfinite(tfm_test::to_double(scaled.value()())));
  scaled.backward();
  vec want;
  for (double x : L.c_values()) want.push_back(x * 32768);
  TFM_CHECK_BITWISE(grads_of(L.ps), want);
  REQUIRE(sc.unscale(L.ps.list));
  TFM_CHECK_BITWISE(grads_of(L.ps), L.c_values());
  CHECK(opt.step());
}
