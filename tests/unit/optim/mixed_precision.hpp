// tests/unit/optim/mixed_precision.hpp
//
// The two halves of the mixed-precision test, compiled in separate translation units (one model
// type each keeps every TU light): train<T>(values, steps) builds nn::gpt<gpt2_tiny, T> with the
// given seed, overwrites its parameters with `values` when given (one vector per parameter, in
// parameters() order), trains it with AdamW on a fixed batch and returns the loss per step.
#pragma once

#include <cstdint>
#include <vector>

namespace optim_test {

struct mp_run {
  std::vector<std::vector<float>> initial;  // the parameter values the run started from
  std::vector<double> losses;               // loss before each step
};

inline constexpr std::uint64_t mp_seed = 17;
inline constexpr int mp_steps = 30;

/// bf16 parameters and activations (f32 gradients and master weights); starts from the model's
/// own initialisation.
mp_run mp_train_bf16();
/// f32 parameters, starting from `initial`.
mp_run mp_train_f32(const std::vector<std::vector<float>>& initial);

}  // namespace optim_test
