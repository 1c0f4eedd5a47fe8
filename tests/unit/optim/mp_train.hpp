// tests/unit/optim/mp_train.hpp: the training loop shared by mp_bf16.cpp and mp_f32.cpp.
#pragma once

#include "mixed_precision.hpp"

#include <doctest/doctest.h>
#include <tfm_test.hpp>
#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/nn/config.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>

namespace optim_test {

template <class T>
mp_run mp_train(const std::vector<std::vector<float>>* initial) {
  // One thread: the test is about precision, and on an oversubscribed machine (ctest -j, other
  // OpenMP jobs) the many small parallel regions of a tiny model can take 10-50x longer with
  // 2 threads (measured here: 0.6 s alone, 7-36 s beside another OpenMP process; 1 thread: 0.9 s).
  tfm::thread_scope one(1);
  using model = tfm::nn::gpt<tfm::nn::gpt2_tiny, T>;
  model m(tfm::nn::gpt2_tiny{}, mp_seed);
  auto ps = m.parameters();
  mp_run run;
  if (initial) REQUIRE(initial->size() == ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    auto* v = ps[i].data->value.data();
    const auto n = static_cast<std::size_t>(ps[i].data->size());
    if (initial) {
      REQUIRE((*initial)[i].size() == n);
      for (std::size_t k = 0; k < n; ++k) v[k] = T((*initial)[i][k]);
    }
    std::vector<float> now(n);
    for (std::size_t k = 0; k < n; ++k) now[k] = static_cast<float>(v[k]);
    run.initial.push_back(std::move(now));
  }
  // A fixed batch: (2, 32) tokens of a simple pattern, targets shifted by 7.
  typename model::ids_type x(2, 32), y(2, 32);
  for (tfm::index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<std::int32_t>((i * 7 + 3) % 256);
    y.data()[i] = static_cast<std::int32_t>((i * 7 + 10) % 256);
  }
  tfm::optim::adam_options o;
  o.lr = 2e-3;
  o.weight_decay = 0.1;
  auto opt = tfm::optim::adamw(ps, o);
  for (int s = 0; s < mp_steps; ++s) {
    opt.zero_grad();
    auto loss = m.loss(x, y);
    loss.backward();
    tfm::optim::clip_grad_norm(ps, 1.0);
    REQUIRE(opt.step());
    run.losses.push_back(tfm_test::to_double(loss.value()()));
  }
  return run;
}

}  // namespace optim_test
