// typeformer/backend/reference/encoder.hpp
//
// WHAT THIS REPRESENTS
//   The kernel entry points of the tape-free bidirectional encoder (infer/bert.hpp) for the
//   reference backend: plain loops, double accumulation, no SIMD, no threads. They are the
//   oracle of the cpu overloads (backend/cpu/encoder.hpp) and the fallback of every tag derived
//   from tfm::reference. Rows are float, row-major, row r of a matrix at p + r * ld.
//
//   encoder_linear      y(M,N) = act(x(M,K) W^T + b) [+ r]       W stored N x K (HF Linear)
//                       act: none, or GELU with erf (Hendrycks & Gimpel, arXiv:1606.08415;
//                       Hugging Face's "gelu"): 0.5 x (1 + erf(x / sqrt(2)))
//                       b: N values or null; r: the residual, M rows of N at r + i * ldy, or null
//   encoder_layer_norm  y = (x - mean) / sqrt(var + eps) * gamma + beta over rows of n
//                       (Ba et al., arXiv:1607.06450; biased variance, as PyTorch)
//   encoder_attention   unmasked softmax(scale q k^T) v within each of several packed sequences
//                       (below)
//
//   encoder_attention: sequence s occupies rows offsets[s] .. offsets[s+1]-1 of q, k, v and o
//   (row stride ld >= H * D, head h at columns h*D .. h*D + D - 1). Each row attends to the rows
//   of its own sequence only, which is BERT's attention with a padding mask (a masked key gets
//   weight exp(-inf) = 0) without the padded rows: the sequences are packed, not padded.
//   o_i = sum_j softmax_j(scale q_i . k_j) v_j (Vaswani et al., arXiv:1706.03762).
#pragma once

#include "typeformer/backend/reference/rows.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

TFM_BEGIN_NAMESPACE

/// The activation encoder_linear applies after the bias.
enum class encoder_activation { none, gelu_erf };

/// Geometry of encoder_attention (see the file comment). offsets has n_seq + 1 entries,
/// offsets[0] == 0, non-decreasing.
struct encoder_attention_geometry {
  const index_t* offsets = nullptr;
  index_t n_seq = 0;
  index_t H = 0, D = 0;  // heads, head dimension
  index_t ld = 0;        // row stride of q, k, v, o
  double scale = 1.0;    // usually 1 / sqrt(D)
};

/// GELU with erf in double (the reference formula).
inline double encoder_gelu_erf(double x) {
  return 0.5 * x * (1.0 + std::erf(x * 0.70710678118654752440));
}

inline void encoder_linear(reference, index_t M, index_t N, index_t K, const float* x, index_t ldx,
                           const float* w, const float* b, const float* r, float* y, index_t ldy,
                           encoder_activation act) {
  for (index_t i = 0; i < M; ++i)
    for (index_t n = 0; n < N; ++n) {
      double s = b ? static_cast<double>(b[n]) : 0.0;
      for (index_t k = 0; k < K; ++k)
        s += static_cast<double>(x[i * ldx + k]) * static_cast<double>(w[n * K + k]);
      if (act == encoder_activation::gelu_erf) s = encoder_gelu_erf(s);
      if (r) s += static_cast<double>(r[i * ldy + n]);
      y[i * ldy + n] = static_cast<float>(s);
    }
}

inline void encoder_layer_norm(reference, const float* x, index_t ldx, const float* gamma,
                               const float* beta, float eps, float* y, index_t ldy, index_t rows,
                               index_t n) {
  reference_kernels::layer_norm_rows(x, ldx, gamma, beta, eps, y, ldy, rows, n);
}

inline void encoder_attention(reference, const encoder_attention_geometry& g, const float* q,
                              const float* k, const float* v, float* o) {
  std::vector<double> p;
  for (index_t s = 0; s < g.n_seq; ++s) {
    const index_t r0 = g.offsets[s], L = g.offsets[s + 1] - r0;
    p.assign(static_cast<std::size_t>(L), 0.0);
    for (index_t h = 0; h < g.H; ++h)
      for (index_t i = 0; i < L; ++i) {
        const float* qi = q + (r0 + i) * g.ld + h * g.D;
        double mx = -std::numeric_limits<double>::infinity();
        for (index_t j = 0; j < L; ++j) {
          const float* kj = k + (r0 + j) * g.ld + h * g.D;
          double dot = 0;
          for (index_t d = 0; d < g.D; ++d) dot += static_cast<double>(qi[d]) * kj[d];
          p[static_cast<std::size_t>(j)] = dot * g.scale;
          mx = std::max(mx, p[static_cast<std::size_t>(j)]);
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        float* oi = o + (r0 + i) * g.ld + h * g.D;
        for (index_t d = 0; d < g.D; ++d) {
          double acc = 0;
          for (index_t j = 0; j < L; ++j)
            acc += p[static_cast<std::size_t>(j)] * v[(r0 + j) * g.ld + h * g.D + d];
          oi[d] = static_cast<float>(acc / sum);
        }
      }
  }
}

TFM_END_NAMESPACE
