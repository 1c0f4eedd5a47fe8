// typeformer/quant/smoothquant.hpp
//
// WHAT THIS REPRESENTS
//   SmoothQuant (Xiao et al. 2022, arXiv:2211.10438) for INT8 weights and INT8 activations: a few
//   activation channels carry outliers that make per-token INT8 of the activations coarse; moving
//   part of their range into the weights, x / s and W diag(s) with
//       s_j = max|X_j|^a / max|W_j|^(1 - a)        (eq. 4; a = 0.5, the paper's default)
//   (max|X_j| over the calibration rows, max|W_j| over every row of every weight that reads the
//   input), balances the two. The division is folded into the previous operation exactly as AWQ's
//   scales are (quant/awq.hpp fold_input_scales), so the model's function is unchanged in f32.
//   Channels where either maximum is 0 get s_j = 1; s is clamped to [1e-5, 1e5].
//
//   fake_quant_int8_rows / fake_quant_int8_weight: the W8A8 simulation used to measure it
//   (symmetric round to nearest, scale absmax / 127 per row: per token for activations, per
//   output channel for weights), values put back in float.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/quant/awq.hpp"
#include "typeformer/quant/calibrate.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace quant {

/// SmoothQuant's s (K) for the input described by `st` and its consumers `ws`.
inline std::vector<float> smoothquant_scales(std::span<const weight_ref> ws, const input_stats& st,
                                             double a = 0.5) {
  const index_t K = st.K;
  std::vector<double> wmax(static_cast<std::size_t>(K), 0.0);
  for (const weight_ref& r : ws)
    for (index_t i = 0; i < r.rows; ++i)
      for (index_t j = 0; j < K; ++j)
        wmax[j] = std::max(wmax[j], static_cast<double>(std::fabs(r.w[i * K + j])));
  std::vector<float> s(static_cast<std::size_t>(K), 1.0f);
  for (index_t j = 0; j < K; ++j) {
    const double xm = st.abs_max.empty() ? 0.0 : st.abs_max[j];
    if (xm > 0 && wmax[j] > 0)
      s[j] =
          static_cast<float>(std::clamp(std::pow(xm, a) / std::pow(wmax[j], 1.0 - a), 1e-5, 1e5));
  }
  return s;
}

/// x (n x K) <- its INT8 per-row (per-token) symmetric round-to-nearest values.
inline void fake_quant_int8_rows(float* x, index_t n, index_t K) {
  for (index_t r = 0; r < n; ++r) {
    float* row = x + r * K;
    float amax = 0;
    for (index_t j = 0; j < K; ++j) amax = std::max(amax, std::fabs(row[j]));
    if (amax == 0) continue;
    const float d = amax / 127.0f, id = 1.0f / d;
    for (index_t j = 0; j < K; ++j)
      row[j] = d * std::clamp(std::nearbyint(row[j] * id), -127.0f, 127.0f);
  }
}

/// W (rows x K) <- its INT8 per-output-channel symmetric round-to-nearest values.
inline void fake_quant_int8_weight(std::span<float> w, index_t rows, index_t K) {
  fake_quant_int8_rows(w.data(), rows, K);
}

}  // namespace quant
TFM_END_NAMESPACE
