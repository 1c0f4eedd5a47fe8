// typeformer/backend/cpu/encoder.hpp
//
// WHAT THIS REPRESENTS
//   The cpu backend's overloads of the encoder kernel entry points declared with their
//   contracts in backend/reference/encoder.hpp (encoder_linear, encoder_layer_norm,
//   encoder_attention).
//
//   encoder_linear: cpu_kernels::gemm (packed GEMM, OpenMP inside), then one SIMD pass over y
//   that adds the bias, applies GELU (xsimd::erf) and adds the residual, rows split over threads.
//   encoder_attention: one (sequence, head) pair per OpenMP iteration (dynamic schedule: the
//   sequences differ in length); each runs S = scale q k^T (GEMM on the strided head columns,
//   no copy), a softmax over rows of S (row kernels of rows.hpp) and o = S v, serially inside the
//   parallel region. Results do not depend on the thread count (each pair's chain is fixed).
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/rows.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/reference/encoder.hpp"
#include "typeformer/backend/tags.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <xsimd/xsimd.hpp>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels::encoder_detail {

/// y[n] = act(y[n] + b[n]) + r[n] for one row of N values (b, r may be null).
inline void bias_act_row(float* y, const float* b, const float* r, index_t N,
                         encoder_activation act) {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  const bool gelu = act == encoder_activation::gelu_erf;
  const V half(0.5f), one(1.0f), rsqrt2(0.70710678118654752440f);
  index_t n = 0;
  for (; n + w <= N; n += w) {
    V v = simd::load(y + n);
    if (b) v = v + simd::load(b + n);
    if (gelu) v = half * v * (one + xsimd::erf(v * rsqrt2));
    if (r) v = v + simd::load(r + n);
    simd::store(y + n, v);
  }
  for (; n < N; ++n) {
    float v = y[n] + (b ? b[n] : 0.0f);
    if (gelu) v = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752440f));
    y[n] = v + (r ? r[n] : 0.0f);
  }
}

}  // namespace cpu_kernels::encoder_detail

inline void encoder_linear(cpu, index_t M, index_t N, index_t K, const float* x, index_t ldx,
                           const float* w, const float* b, const float* r, float* y, index_t ldy,
                           encoder_activation act) {
  cpu_kernels::gemm<float>(false, true, M, N, K, 1.0f, x, ldx, w, K, 0.0f, y, ldy);
  if (!b && !r && act == encoder_activation::none) return;
  const bool parallel = M > 1 && M * N >= (index_t{1} << 14) && num_threads() > 1 && !in_parallel();
  (void)parallel;
  TFM_OMP(parallel for schedule(static) if (parallel))
  for (index_t i = 0; i < M; ++i)
    cpu_kernels::encoder_detail::bias_act_row(y + i * ldy, b, r ? r + i * ldy : nullptr, N, act);
}

inline void encoder_layer_norm(cpu, const float* x, index_t ldx, const float* gamma,
                               const float* beta, float eps, float* y, index_t ldy, index_t rows,
                               index_t n) {
  cpu_kernels::layer_norm_rows(x, ldx, gamma, beta, eps, y, ldy, rows, n);
}

inline void encoder_attention(cpu, const encoder_attention_geometry& g, const float* q,
                              const float* k, const float* v, float* o) {
  index_t longest = 0;
  for (index_t s = 0; s < g.n_seq; ++s)
    longest = std::max(longest, g.offsets[s + 1] - g.offsets[s]);
  const index_t pairs = g.n_seq * g.H;
  const int threads = in_parallel() ? 1 : std::max(1, num_threads());
  std::vector<float> scratch(static_cast<std::size_t>(threads) *
                             static_cast<std::size_t>(longest * longest));
  const auto scale = static_cast<float>(g.scale);
  TFM_OMP(parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && pairs > 1))
  for (index_t p = 0; p < pairs; ++p) {
    int t = 0;
#if TFM_HAS_OPENMP
    t = omp_get_thread_num();
#endif
    float* S =
        scratch.data() + static_cast<std::size_t>(t) * static_cast<std::size_t>(longest * longest);
    const index_t s = p / g.H, h = p % g.H;
    const index_t r0 = g.offsets[s], L = g.offsets[s + 1] - r0;
    if (L == 0) continue;
    const index_t at = r0 * g.ld + h * g.D;
    cpu_kernels::gemm<float>(false, true, L, L, g.D, scale, q + at, g.ld, k + at, g.ld, 0.0f, S, L);
    cpu_kernels::softmax_rows(S, L, S, L, L, L);
    cpu_kernels::gemm<float>(false, false, L, g.D, L, 1.0f, S, L, v + at, g.ld, 0.0f, o + at, g.ld);
  }
}

TFM_END_NAMESPACE
