// typeformer/backend/cpu/quant/gemm_q.hpp
//
// WHAT THIS REPRESENTS
//   Prefill products with a block-quantized weight matrix W (N x K rows of GGML blocks, the
//   GGUF tensor data) and float activations, by dequantization while packing:
//
//     gemm_dq_bt<B>(M, N, K, A, lda, w, ldw, C, ldc)   C(M, N) = A(M, K) * deq(W)^T (+ C)
//     gemm_dq_bt(type, ..., const std::byte* w, row_bytes, ...)   the type chosen at run time
//
//   The loop nest and micro-kernel are the float GEMM's (gemm.hpp, as in half_weights.hpp's
//   gemm_half_bt): the B block that packing copies anyway is written from dequantized blocks
//   (quant/dequantize.hpp's dequantize_block, bitwise gguf-py), so W stays packed in memory and
//   each block is dequantized once per (kc x nc) tile. Unlike the integer-dot kernels of
//   gemv_q.hpp, the activations are not quantized: the result is the float GEMM of A with the
//   dequantized W.
//
// CONTRACTS
//   - B: any block with a reference dequantizer (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ... Q6_K,
//     Q8_K); K a multiple of its block (else tfm::shape_error); ldw the row stride of W in blocks.
//   - For the 32-value formats the depth blocking is the float GEMM's kc, so C has the same bits
//     as cpu_kernels::gemm(false, true, ...) on the dequantized W wherever that GEMM takes its
//     packed path (M > 1, N > 1, M*N*K > 16^3); the K formats use kc rounded down to 256.
//   - Every element of C is computed by one thread in an order fixed by the shape: 1 and N threads
//     give the same bits.
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <algorithm>
#include <cstddef>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// Weight blocks gemm_dq_bt takes: those with a reference dequantize_block.
template <class B>
concept dequantizable_block = ggml_block<B> && requires(const B& b, float* y) {
  dequantize_block(b, y);
};

namespace detail::qgemm {

/// pack_b of op(B) = deq(W)^T: panel q holds, for each k < kc, the NR floats W(q*NR + j, k0 + k)
/// (k0 = kb0 * block); columns past nc are zero (gemm_pack_b's layout with trans == true).
template <class B, int NR>
void pack_b_dequant(index_t kc, index_t nc, const B* w, index_t ldw, index_t kb0, float* dst) {
  constexpr index_t QK = static_cast<index_t>(block_traits<B>::block_elements);
  alignas(64) float tmp[QK];
  for (index_t j0 = 0; j0 < nc; j0 += NR) {
    const index_t cols = std::min<index_t>(NR, nc - j0);
    float* panel = dst + j0 * kc;
    for (index_t r = 0; r < NR; ++r) {
      if (r >= cols) {
        for (index_t k = 0; k < kc; ++k) panel[k * NR + r] = 0.0f;
        continue;
      }
      const B* row = w + (j0 + r) * ldw + kb0;
      for (index_t b = 0; b < kc / QK; ++b) {
        dequantize_block(row[b], tmp);
        float* p = panel + b * QK * NR + r;
        for (index_t t = 0; t < QK; ++t) p[t * NR] = tmp[t];
      }
    }
  }
}

/// The depth step: the float GEMM's kc for 32-value blocks, kc rounded down to 256 otherwise.
template <class B>
constexpr index_t depth_step() {
  constexpr index_t QK = static_cast<index_t>(block_traits<B>::block_elements);
  constexpr index_t kc = gemm_config_t<float>::kc;
  static_assert(kc >= QK, "tfm: the GEMM depth block is smaller than a quantization block.");
  return kc / QK * QK;
}

/// Rows [m0, m1) and columns [n0, n1) of C = A deq(W)^T (+ C): gemm_half_range's loop nest.
template <class B>
void gemm_dq_range(index_t m0, index_t m1, index_t n0, index_t n1, index_t K, const float* A,
                   index_t lda, const B* w, index_t ldw, float* C, index_t ldc, bool accumulate) {
  using Cfg = gemm_config_t<float>;
  constexpr index_t MR = Cfg::mr, NR = Cfg::nr;
  constexpr index_t QK = static_cast<index_t>(block_traits<B>::block_elements);
  constexpr index_t KC = depth_step<B>();
  const index_t kc_max = std::min(KC, K);
  const index_t m_blocks = (m1 - m0 + Cfg::mc - 1) / Cfg::mc;
  const index_t mc_step = ((m1 - m0 + m_blocks - 1) / m_blocks + MR - 1) / MR * MR;
  float* apack = gemm_thread_buffer<float>(0, mc_step * kc_max);
  float* bpack =
      gemm_thread_buffer<float>(1, std::min(Cfg::nc, (n1 - n0 + NR - 1) / NR * NR) * kc_max);
  for (index_t ic = m0; ic < m1; ic += mc_step) {
    const index_t mc = std::min(mc_step, m1 - ic);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      const bool read_c = pc > 0 || accumulate;
      gemm_pack_a<float, Cfg::mr>(false, mc, kc, A + ic * lda + pc, lda, apack);
      for (index_t jc = n0; jc < n1; jc += Cfg::nc) {
        const index_t nc = std::min(Cfg::nc, n1 - jc);
        pack_b_dequant<B, Cfg::nr>(kc, nc, w + jc * ldw, ldw, pc / QK, bpack);
        gemm_sweep<Cfg>(mc, nc, kc, apack, bpack, C + ic * ldc + jc, ldc, 1.0f, 1.0f, read_c);
      }
    }
  }
}

}  // namespace detail::qgemm

/// C(M, N) = A(M, K) deq(W)^T (+ C when accumulate); W rows at w + n * ldw (blocks), A rows at
/// A + m * lda, C rows at C + m * ldc. Split over the longer of M and N (as gemm_half_bt).
template <dequantizable_block B>
void gemm_dq_bt(index_t M, index_t N, index_t K, const float* A, index_t lda, const B* w,
                index_t ldw, float* C, index_t ldc, bool accumulate = false) {
  detail::gemm_check<float>("gemm_dq_bt", M, N, K);
  constexpr index_t QK = static_cast<index_t>(block_traits<B>::block_elements);
  if (K % QK != 0)
    fail(errc::shape, "tfm::cpu_kernels::gemm_dq_bt: K = ", K, " is not a multiple of the ",
         ggml_type_name(block_traits<B>::type), " block of ", QK, " values.");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) detail::gemm_scale_c(M, N, 0.0f, C, ldc);
    return;
  }
  const int nt = in_parallel() ? 1 : num_threads();
  detail::gemm_bands<gemm_config_t<float>>(
      M, N, K, nt, [&](index_t m0, index_t m1, index_t n0, index_t n1) {
        detail::qgemm::gemm_dq_range(m0, m1, n0, n1, K, A, lda, w, ldw, C, ldc, accumulate);
      });
}

/// gemm_dq_bt with the weight type chosen at run time: W is N rows of `row_bytes` bytes (whole
/// blocks, at least K / block of them) at `w`, aligned to the block's alignment (GGUF tensor data
/// is). A type without a reference dequantizer -> tfm::unsupported_error.
inline void gemm_dq_bt(ggml_type t, index_t M, index_t N, index_t K, const float* A, index_t lda,
                       const std::byte* w, std::size_t row_bytes, float* C, index_t ldc,
                       bool accumulate = false) {
  const ggml_type_info& info = ggml_type_info_of(t);
  bool done = false;
  auto run = [&]<class B>(const B*) {
    if constexpr (!dequantizable_block<B>) {
      return;  // a visited type without a reference dequantizer in scope: refused below
    } else {
      done = true;
      if (row_bytes % sizeof(B) != 0 ||
          (K >= 0 && row_bytes / sizeof(B) < static_cast<std::size_t>(K) / info.block_elements))
        fail(errc::shape, "tfm::cpu_kernels::gemm_dq_bt: rows of ", row_bytes,
             " bytes do not hold K = ", K, " values of ", info.name, ".");
      gemm_dq_bt(M, N, K, A, lda, reinterpret_cast<const B*>(w),
                 static_cast<index_t>(row_bytes / sizeof(B)), C, ldc, accumulate);
    }
  };
  if (visit_weight_block(t, run) && done) return;
  fail(errc::unsupported, "tfm::cpu_kernels::gemm_dq_bt: no dequantize-in-pack kernel for type ",
       info.name, ".");
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
