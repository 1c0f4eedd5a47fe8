// typeformer/backend/cpu/gemm/half_weights.hpp
//
// WHAT THIS REPRESENTS
//   Products with a 16-bit weight matrix W (tfm::f16 or tfm::bf16, N x K row-major, the layout
//   of nn and GGUF weights) and float activations, converted to float inside the kernel so the
//   weights stay 16-bit in memory (decode streams W once per token: half the bytes of a float
//   copy):
//
//     gemv_half_dot:  y[n] = sum_k W[n*ldw + k] * x[k]  (+ y[n] when accumulate)        (decode)
//     gemm_half_bt:   C(M,N) = A(M,K) * W^T  (+ C when accumulate)                       (prefill)
//     gemm_half_bt_rowwise: the same, every row of C bitwise what gemv_half_dot gives for it
//                     (the serving engine's batches: a row's result does not depend on M)
//
//   The GEMV converts each 16-value piece of W with load_as_float and FMAs it, one row at a
//   time (one sequential stream: the weights come from DRAM). The GEMM is the packed loop nest
//   of gemm.hpp whose B block is packed from W: packing already copies B, so converting while
//   packing costs nothing extra; the micro-kernel is the float one (gemm/microkernel.hpp). Every
//   output element is computed by one thread in an order fixed by the shape, so 1 and N threads
//   give bitwise identical results; the GEMM gives the same bits as cpu_kernels::gemm on the
//   converted floats (same blocking, same micro-kernel), the GEMV the same as gemv_dot on them.
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/half_simd.hpp"
#include "typeformer/core/half.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// The 16-bit weight element types these kernels take.
template <class H>
concept half_weight = std::is_same_v<H, f16> || std::is_same_v<H, bf16>;

namespace detail {

/// ROWS dot products of 16-bit rows with x; the per-row order is that of gemv_dot_rows.
template <class H, int ROWS>
TFM_ALWAYS_INLINE void gemv_half_rows(index_t K, const H* TFM_RESTRICT w, index_t ldw,
                                      const float* TFM_RESTRICT x, float* out) {
  using V = simd::batch<float>;
  constexpr int W = simd::width<float>;
  V acc0[ROWS], acc1[ROWS];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) acc0[r] = acc1[r] = V(0.0f);
  index_t k = 0;
  for (; k + 2 * W <= K; k += 2 * W) {
    const V x0 = simd::load(x + k);
    const V x1 = simd::load(x + k + W);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      acc0[r] = simd::fma(load_as_float(w + r * ldw + k), x0, acc0[r]);
      acc1[r] = simd::fma(load_as_float(w + r * ldw + k + W), x1, acc1[r]);
    }
  }
  if (k + W <= K) {
    const V x0 = simd::load(x + k);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) acc0[r] = simd::fma(load_as_float(w + r * ldw + k), x0, acc0[r]);
    k += W;
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    float s = simd::reduce_add(acc0[r] + acc1[r]);
    for (index_t t = k; t < K; ++t) s = std::fma(static_cast<float>(w[r * ldw + t]), x[t], s);
    out[r] = s;
  }
}

template <class H>
void gemv_half_range(index_t n0, index_t n1, index_t K, const H* w, index_t ldw, const float* x,
                     float* y, bool accumulate) {
  index_t n = n0;
  auto groups_of = [&]<int R>() {
    float s[R];
    for (; n + R <= n1; n += R) {
      gemv_half_rows<H, R>(K, w + n * ldw, ldw, x, s);
      for (int r = 0; r < R; ++r) y[n + r] = accumulate ? y[n + r] + s[r] : s[r];
    }
  };
  // One row at a time: the decode weights of a whole model (270 MB for SmolLM2 in F16) come from
  // DRAM, and on the Zen 5 VM one sequential stream per thread reads 29-31 GB/s where 8, 4 or 2
  // interleaved row streams read 14-18 GB/s (a 256 MB micro-bench of the decode shapes). Every
  // row is summed in the same order whatever its group, so this changes no bit.
  groups_of.template operator()<1>();
}

/// pack_b of op(B) = W^T from 16-bit W rows: panel q holds, for each k, the NR floats
/// W(q*NR + j, k); columns past nc are zero (the layout of gemm_pack_b with trans == true).
template <class H, int NR>
void gemm_pack_b_half(index_t kc, index_t nc, const H* w, index_t ldw, float* dst) {
  for (index_t j0 = 0; j0 < nc; j0 += NR) {
    const index_t cols = std::min<index_t>(NR, nc - j0);
    float* panel = dst + j0 * kc;
    for (index_t k0 = 0; k0 < kc; k0 += 16) {
      const index_t kn = std::min<index_t>(16, kc - k0);
#if defined(TFM_GEMM_TRANSPOSE)
      if constexpr (NR % transpose_rows == 0) {
        if (kn == 16 && cols == NR) {
          alignas(64) float tmp[transpose_rows * 16];
          for (index_t j = 0; j < NR; j += transpose_rows) {
            for (int r = 0; r < transpose_rows; ++r)
              convert(w + (j0 + j + r) * ldw + k0, tmp + r * 16, 16);
            transpose_rows_x16<transpose_rows>(tmp, 16, panel + k0 * NR + j, NR);
          }
          continue;
        }
      }
#endif
      for (index_t r = 0; r < NR; ++r)
        for (index_t k = 0; k < kn; ++k)
          panel[(k0 + k) * NR + r] =
              r < cols ? static_cast<float>(w[(j0 + r) * ldw + k0 + k]) : 0.0f;
    }
  }
}

/// Rows [m0, m1) and columns [n0, n1) of C = A W^T (+ C): gemm_packed_range's loop nest.
template <class H>
void gemm_half_range(index_t m0, index_t m1, index_t n0, index_t n1, index_t K, const float* A,
                     index_t lda, const H* w, index_t ldw, float* C, index_t ldc, bool accumulate) {
  using Cfg = gemm_config_t<float>;
  constexpr index_t MR = Cfg::mr, NR = Cfg::nr;
  const index_t kc_max = std::min(Cfg::kc, K);
  const index_t m_blocks = (m1 - m0 + Cfg::mc - 1) / Cfg::mc;
  const index_t mc_step = ((m1 - m0 + m_blocks - 1) / m_blocks + MR - 1) / MR * MR;
  float* apack = gemm_thread_buffer<float>(0, mc_step * kc_max);
  float* bpack =
      gemm_thread_buffer<float>(1, std::min(Cfg::nc, (n1 - n0 + NR - 1) / NR * NR) * kc_max);
  for (index_t ic = m0; ic < m1; ic += mc_step) {
    const index_t mc = std::min(mc_step, m1 - ic);
    for (index_t pc = 0; pc < K; pc += Cfg::kc) {
      const index_t kc = std::min(Cfg::kc, K - pc);
      const bool read_c = pc > 0 || accumulate;
      gemm_pack_a<float, Cfg::mr>(false, mc, kc, A + ic * lda + pc, lda, apack);
      for (index_t jc = n0; jc < n1; jc += Cfg::nc) {
        const index_t nc = std::min(Cfg::nc, n1 - jc);
        gemm_pack_b_half<H, Cfg::nr>(kc, nc, w + jc * ldw + pc, ldw, bpack);
        gemm_sweep<Cfg>(mc, nc, kc, apack, bpack, C + ic * ldc + jc, ldc, 1.0f, 1.0f, read_c);
      }
    }
  }
}

/// R rows of A dotted with one 16-bit weight row, each exactly as gemv_half_rows<H, 1> sums
/// it (the same lanes, the same order): the weight piece is converted once for the R rows.
template <class H, int R>
TFM_ALWAYS_INLINE void dot_rows_half(index_t K, const H* TFM_RESTRICT w, const float* A,
                                     index_t lda, float* out) {
  using V = simd::batch<float>;
  constexpr int W = simd::width<float>;
  V acc0[R], acc1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = V(0.0f);
  index_t k = 0;
  for (; k + 2 * W <= K; k += 2 * W) {
    const V w0 = load_as_float(w + k), w1 = load_as_float(w + k + W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      acc0[r] = simd::fma(w0, simd::load(A + r * lda + k), acc0[r]);
      acc1[r] = simd::fma(w1, simd::load(A + r * lda + k + W), acc1[r]);
    }
  }
  if (k + W <= K) {
    const V w0 = load_as_float(w + k);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc0[r] = simd::fma(w0, simd::load(A + r * lda + k), acc0[r]);
    k += W;
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float s = simd::reduce_add(acc0[r] + acc1[r]);
    for (index_t t = k; t < K; ++t) s = std::fma(static_cast<float>(w[t]), A[r * lda + t], s);
    out[r] = s;
  }
}

}  // namespace detail

/// y[n] = sum_k W[n*ldw + k] x[k] (+ y[n] when accumulate) for n < N; x contiguous (K values).
template <half_weight H>
void gemv_half_dot(index_t N, index_t K, const H* w, index_t ldw, const float* x, float* y,
                   bool accumulate = false) {
  detail::gemm_check<float>("gemv_half_dot", N, 1, K);
  const int nt = in_parallel() ? 1 : num_threads();
  detail::gemv_parallel(N, 4, detail::gemv_threads(nt, N * K), [&](index_t n0, index_t n1) {
    detail::gemv_half_range(n0, n1, K, w, ldw, x, y, accumulate);
  });
}

/// C(M,N) = A(M,K) W^T (+ C when accumulate), W (N x K) 16-bit; rows of A at A + i*lda, of C at
/// C + i*ldc. M == 1 runs the GEMV; otherwise the packed GEMM split over the longer of M and N.
template <half_weight H>
void gemm_half_bt(index_t M, index_t N, index_t K, const float* A, index_t lda, const H* w,
                  index_t ldw, float* C, index_t ldc, bool accumulate = false) {
  detail::gemm_check<float>("gemm_half_bt", M, N, K);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) detail::gemm_scale_c(M, N, 0.0f, C, ldc);
    return;
  }
  if (M == 1) {
    gemv_half_dot(N, K, w, ldw, A, C, accumulate);
    return;
  }
  const int nt = in_parallel() ? 1 : num_threads();
  detail::gemm_bands<gemm_config_t<float>>(
      M, N, K, nt, [&](index_t m0, index_t m1, index_t n0, index_t n1) {
        detail::gemm_half_range(m0, m1, n0, n1, K, A, lda, w, ldw, C, ldc, accumulate);
      });
}

/// C(M,N) = A(M,K) W^T (+ C when accumulate) with every row of C computed exactly as
/// gemv_half_dot computes a single row (same bits, whatever M): the serving engine's batches
/// rely on it (infer/batch.hpp). Each weight row is converted once per 8 rows of A; columns of C
/// are split over threads.
template <half_weight H>
void gemm_half_bt_rowwise(index_t M, index_t N, index_t K, const float* A, index_t lda, const H* w,
                          index_t ldw, float* C, index_t ldc, bool accumulate = false) {
  detail::gemm_check<float>("gemm_half_bt_rowwise", M, N, K);
  if (M == 0 || N == 0) return;
  const int nt = in_parallel() ? 1 : num_threads();
  detail::gemv_parallel(N, 4, detail::gemv_threads(nt, M * N * K), [&](index_t n0, index_t n1) {
    float s[8];
    for (index_t m0 = 0; m0 < M; m0 += 8) {
      const index_t R = std::min<index_t>(8, M - m0);
      const float* a = A + m0 * lda;
      for (index_t n = n0; n < n1; ++n) {
        const H* wr = w + n * ldw;
        switch (R) {
          case 8:
            detail::dot_rows_half<H, 8>(K, wr, a, lda, s);
            break;
          case 7:
            detail::dot_rows_half<H, 7>(K, wr, a, lda, s);
            break;
          case 6:
            detail::dot_rows_half<H, 6>(K, wr, a, lda, s);
            break;
          case 5:
            detail::dot_rows_half<H, 5>(K, wr, a, lda, s);
            break;
          case 4:
            detail::dot_rows_half<H, 4>(K, wr, a, lda, s);
            break;
          case 3:
            detail::dot_rows_half<H, 3>(K, wr, a, lda, s);
            break;
          case 2:
            detail::dot_rows_half<H, 2>(K, wr, a, lda, s);
            break;
          default:
            detail::dot_rows_half<H, 1>(K, wr, a, lda, s);
            break;
        }
        for (index_t r = 0; r < R; ++r) {
          float& c = C[(m0 + r) * ldc + n];
          c = accumulate ? c + s[r] : s[r];
        }
      }
    }
  });
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
