// typeformer/backend/cpu/quant/nf4_linear.hpp
//
// WHAT THIS REPRESENTS
//   The cpu backend's overloads of QLoRA's frozen-base kernels (contracts and the reference
//   oracle: backend/reference/nf4_linear.hpp; Dettmers et al. 2023, arXiv:2305.14314):
//
//     nf4_matmul_bt(cpu, w, x, M, y, beta)       y (M, N) = x (M, K) deq(W)^T (+ beta * y)
//     nf4_matmul(cpu, w, dy, M, dx, beta)        dx (M, K) = dy (M, N) deq(W) (+ beta * dx)
//     nf4_dequantize_rows(cpu, w, r0, r1, out)   rows [r0, r1) of deq(W), bitwise
//                                                dequantize_nf4_dq's
//
//   W (an nf4_dq_tensor, N x K) is never dequantized whole: the products run the loop nest and
//   micro-kernel of the float GEMM (backend/cpu/gemm.hpp) and dequantize W a tile at a time into
//   a per-thread buffer:
//     forward   y = x deq(W)^T: gemm_packed_range's loop nest (as gemm_dq_bt in gemm_q.hpp and
//               gemm_half_bt in gemm/half_weights.hpp) whose B block is made panel by panel: a
//               tile of NR rows x kc columns of W (32 x 384 floats = 48 KiB on AVX-512) is
//               dequantized and packed by the GEMM's own transposing gemm_pack_b. x is packed once
//               per depth block, as in the float GEMM; C is split over threads into bands along
//               the longer of M and N exactly as the float GEMM splits it (gemm_bands), each band
//               on one thread (no team packing, so no barriers).
//               (A first version dequantized tiles of 256 whole rows and called cpu_kernels::gemm
//               per tile: it re-packed x for every tile, 1.1-1.4x the float GEMM's CPU time at
//               SmolLM2's shapes; this one is 0.95-1.0x.)
//     backward  dx = dy deq(W): tiles of nf4_tile_rows whole rows of W (the depth of this
//               product), dequantized into the thread's buffer (nf4_tile_rows x K floats) and
//               accumulated in order: dx (+)= dy[:, n0:n1] tile with the packed GEMM
//               (gemm_packed, one thread), the first tile with beta. Threads take bands of rows
//               of dy / dx (whole micro-kernel row tiles) and each walks every tile of W itself:
//               N K lookups per thread, under 1% of its M N K / threads multiply-adds at
//               M = 1024 (0.01-0.04 ms for SmolLM2's whole matrices against 3-10 ms products on
//               one core), and no thread waits for another inside the call. Too few rows of dy
//               for several threads: one thread.
//   Dequantization: per 64-value block, the 16 NF4 levels are looked up from the 4-bit codes in
//   SIMD registers (AVX-512: one VPERMPS of a 16-float table; AVX2: two VPERMPS of 8-float
//   halves blended on bit 3 of the code) and multiplied by the block's double-quantized absmax
//   c'_b (nf4_dq_tensor::absmax, scalar): one binary32 product per element, the same bits as the
//   scalar fallback and as dequantize_nf4_dq.
//
// CONTRACTS
//   - As backend/reference/nf4_linear.hpp (buffers, beta, errors).
//   - Memory: per thread, the tile buffer (NR x kc floats forward, nf4_tile_rows x K backward)
//     and the GEMM's own packing buffers (sized by its cache blocks), allocated once per thread
//     and reused; nothing is proportional to N x K (tests/unit/qlora_kernels/alloc_test.cpp).
//   - Results do not depend on the thread count (1 and N threads give the same bits): tiles and
//     blocking are fixed by the shape, dequantization is elementwise, and the packed micro-kernel
//     computes an element of the product the same way whatever band holds it.
//   - Forward: y equals cpu_kernels::gemm(false, true, ...) on dequantize_nf4_dq(w) bit for bit
//     wherever that GEMM takes its packed path (M > 1, N > 1, M N K > 16^3; the tests check it
//     at SmolLM2's shapes). M == 1 runs the packed kernel too (not gemm's GEMV), so a row of y
//     has the same bits whatever M.
//   - Backward: nf4_tile_rows is the float GEMM's depth block (gemm_config_t<float>::kc), so the
//     tiles are that GEMM's own depth blocks and dx equals cpu_kernels::gemm(false, false, ...)
//     on dequantize_nf4_dq(w) bit for bit on its packed path (M > 1, K > 1, M N K > 16^3); a row
//     of dx has the same bits whatever M.
//   - Against the reference: NMSE <= 5e-4 (TESTING.md's matmul bound; ~1e-13 in the tests).
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/gemm/pack.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/nf4_linear.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/nf4.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// Rows of W per tile in the backward: a multiple of the GEMM's depth block (see the contract).
inline constexpr index_t nf4_tile_rows = gemm_config_t<float>::kc;

namespace detail::nf4_linear {

/// Blocks of 64 values a thread must get before nf4_dequantize_rows splits over threads (1M
/// values, ~50 us on one Zen 5 core: below it, starting a parallel region on a loaded machine
/// costs more than it saves).
inline constexpr index_t blocks_per_thread = 16384;

/// y[0..63] = L[code] * s for one block's 32 code bytes (scalar; the layout of nf4.hpp).
inline void dequant_block_scalar(const std::uint8_t* qs, float s, float* y) noexcept {
  for (int sb = 0; sb < 2; ++sb)
    for (int j = 0; j < 16; ++j) {
      y[32 * sb + j] = nf4_levels[qs[16 * sb + j] & 0x0F] * s;
      y[32 * sb + 16 + j] = nf4_levels[qs[16 * sb + j] >> 4] * s;
    }
}

#if defined(__AVX512F__)
/// The same with a 16-entry VPERMPS lookup (it reads the low 4 bits of each index, so the low
/// nibble needs no mask).
TFM_ALWAYS_INLINE void dequant_block_simd(const std::uint8_t* qs, float s, float* y) noexcept {
  const __m512 lut = _mm512_loadu_ps(nf4_levels.data());
  const __m512 vs = _mm512_set1_ps(s);
  for (int sb = 0; sb < 2; ++sb) {
    const __m512i q =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16 * sb)));
    _mm512_storeu_ps(y + 32 * sb, _mm512_mul_ps(_mm512_permutexvar_ps(q, lut), vs));
    _mm512_storeu_ps(y + 32 * sb + 16,
                     _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), lut), vs));
  }
}
#elif defined(__AVX2__)
/// L[idx & 15] from the table halves lo = L[0..7], hi = L[8..15]: VPERMPS reads the low 3 bits;
/// bit 3, shifted into the sign bit, picks the half.
TFM_ALWAYS_INLINE __m256 nf4_lut16(__m256 lo, __m256 hi, __m256i idx) noexcept {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

TFM_ALWAYS_INLINE void dequant_block_simd(const std::uint8_t* qs, float s, float* y) noexcept {
  const __m256 lo = _mm256_loadu_ps(nf4_levels.data()), hi = _mm256_loadu_ps(nf4_levels.data() + 8);
  const __m256 vs = _mm256_set1_ps(s);
  for (int h = 0; h < 4; ++h) {  // bytes 8h .. 8h + 7: sub-block h / 2, positions 8 (h % 2) + j
    const __m256i q =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * h)));
    float* yo = y + 32 * (h / 2) + 8 * (h % 2);
    _mm256_storeu_ps(yo, _mm256_mul_ps(nf4_lut16(lo, hi, q), vs));
    _mm256_storeu_ps(yo + 16, _mm256_mul_ps(nf4_lut16(lo, hi, _mm256_srli_epi32(q, 4)), vs));
  }
}
#else
TFM_ALWAYS_INLINE void dequant_block_simd(const std::uint8_t* qs, float s, float* y) noexcept {
  dequant_block_scalar(qs, s, y);
}
#endif

/// Blocks [b0, b1) of w into out (64 floats per block, in block order).
inline void dequant_blocks(const nf4_dq_tensor& w, index_t b0, index_t b1, float* out) noexcept {
  for (index_t b = b0; b < b1; ++b)
    dequant_block_simd(w.qs.data() + 32 * b, w.absmax(static_cast<std::size_t>(b)),
                       out + 64 * (b - b0));
}

/// Rows [r0, r1) of w into out, the blocks split over up to nt threads (elementwise: any split
/// gives the same bits).
inline void dequant_rows(const nf4_dq_tensor& w, index_t r0, index_t r1, float* out, int nt) {
  const index_t nb = static_cast<index_t>(w.cols / 64);
  const index_t b0 = r0 * nb, count = (r1 - r0) * nb;
  const int parts = static_cast<int>(
      std::max<index_t>(1, std::min<index_t>(index_t(nt), count / blocks_per_thread)));
  if (parts == 1) {
    dequant_blocks(w, b0, b0 + count, out);
    return;
  }
  TFM_OMP(parallel for num_threads(parts) schedule(static, 1))
  for (int p = 0; p < parts; ++p) {
    const index_t i0 = count * p / parts, i1 = count * (p + 1) / parts;
    dequant_blocks(w, b0 + i0, b0 + i1, out + 64 * i0);
  }
}

/// The calling thread's tile buffer of at least n floats (64-byte aligned; grows, never shrinks).
inline float* tile_buffer(index_t n) {
  thread_local cpu_kernels::detail::gemm_scratch scratch;
  return static_cast<float*>(
      scratch.get(static_cast<std::size_t>(std::max<index_t>(n, 1)) * sizeof(float)));
}

inline int threads() noexcept { return in_parallel() ? 1 : num_threads(); }

/// How the backward's rows of dy / dx are split over threads: `parts` bands of whole
/// micro-kernel row tiles (at most nt, at most one per gemm_work_per_thread multiply-adds);
/// band(p, ...) gives band p's rows [m0, m1).
struct row_bands {
  index_t units = 0;
  int parts = 1;
  static constexpr index_t unit = gemm_config_t<float>::mr;
  row_bands(index_t M, index_t N, index_t K, int nt)
      : units((M + unit - 1) / unit),
        parts(static_cast<int>(std::max<index_t>(
            1, std::min<index_t>({index_t(nt), units, M * N * K / gemm_work_per_thread})))) {}
  void band(int p, index_t M, index_t& m0, index_t& m1) const {
    m0 = std::min(M, units * p / parts * unit);
    m1 = std::min(M, units * (p + 1) / parts * unit);
  }
};

/// Runs body(p) for p < parts, on `parts` threads when parts > 1.
template <class F>
void run_parts(int parts, F&& body) {
  if (parts == 1) {
    body(0);
    return;
  }
  TFM_OMP(parallel for num_threads(parts) schedule(static, 1))
  for (int p = 0; p < parts; ++p) body(p);
}

/// Blocks [kb0, kb1) of row n of w into out (64 floats per block).
TFM_ALWAYS_INLINE void dequant_row_blocks(const nf4_dq_tensor& w, index_t n, index_t kb0,
                                          index_t kb1, float* out) noexcept {
  const index_t b0 = n * static_cast<index_t>(w.cols / 64);
  dequant_blocks(w, b0 + kb0, b0 + kb1, out);
}

/// Rows [m0, m1) and columns [n0, n1) of y = x deq(W)^T (+ beta y): gemm_packed_range's loop
/// nest (gemm.hpp) whose B block is packed panel by panel from NR rows x kc columns of W,
/// dequantized into `tile` (NR x kc floats) and packed by gemm_pack_b (the GEMM's transposing
/// pack), so x is packed once per depth block as in the float GEMM.
inline void matmul_bt_range(const nf4_dq_tensor& w, const float* x, index_t m0, index_t m1,
                            index_t n0, index_t n1, float* y, float beta) {
  using Cfg = gemm_config_t<float>;
  constexpr index_t MR = Cfg::mr, NR = Cfg::nr, KC = Cfg::kc;
  static_assert(KC % 64 == 0, "the GEMM's depth block must hold whole NF4 blocks");
  const auto N = static_cast<index_t>(w.rows), K = static_cast<index_t>(w.cols);
  const index_t kc_max = std::min(KC, K);
  const index_t m_blocks = (m1 - m0 + Cfg::mc - 1) / Cfg::mc;
  const index_t mc_step = ((m1 - m0 + m_blocks - 1) / m_blocks + MR - 1) / MR * MR;
  float* apack = gemm_thread_buffer<float>(0, mc_step * kc_max);
  float* bpack =
      gemm_thread_buffer<float>(1, std::min(Cfg::nc, (n1 - n0 + NR - 1) / NR * NR) * kc_max);
  float* tile = tile_buffer(NR * kc_max);
  for (index_t ic = m0; ic < m1; ic += mc_step) {
    const index_t mc = std::min(mc_step, m1 - ic);
    for (index_t pc = 0; pc < K; pc += KC) {
      const index_t kc = std::min(KC, K - pc);
      const bool read_c = pc > 0 || beta != 0.0f;
      const float beta_k = pc > 0 ? 1.0f : beta;
      gemm_pack_a<float, Cfg::mr>(false, mc, kc, x + ic * K + pc, K, apack);
      for (index_t jc = n0; jc < n1; jc += Cfg::nc) {
        const index_t nc = std::min(Cfg::nc, n1 - jc);
        for (index_t j0 = 0; j0 < nc; j0 += NR) {
          const index_t cols = std::min(NR, nc - j0);
          for (index_t r = 0; r < cols; ++r)
            dequant_row_blocks(w, jc + j0 + r, pc / 64, (pc + kc) / 64, tile + r * kc);
          gemm_pack_b<float, Cfg::nr>(true, kc, cols, tile, kc, bpack + j0 * kc);
        }
        gemm_sweep<Cfg>(mc, nc, kc, apack, bpack, y + ic * N + jc, N, 1.0f, beta_k, read_c);
      }
    }
  }
}

/// nf4_matmul_bt after the argument checks: C split into bands over the longer of M and N as the
/// float GEMM splits it (gemm_bands), each band running matmul_bt_range on one thread.
inline void matmul_bt(const nf4_dq_tensor& w, const float* x, index_t M, float* y, float beta) {
  const auto N = static_cast<index_t>(w.rows), K = static_cast<index_t>(w.cols);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    gemm_scale_c(M, N, beta, y, N);
    return;
  }
  gemm_bands<gemm_config_t<float>>(M, N, K, threads(),
                                   [&](index_t m0, index_t m1, index_t n0, index_t n1) {
                                     matmul_bt_range(w, x, m0, m1, n0, n1, y, beta);
                                   });
}

/// nf4_matmul's loop with T rows of W per tile: the tiles are the depth blocks of the product,
/// accumulated in order into dx. Threads take bands of rows of dy / dx; with too few rows for
/// several threads the call runs on one.
inline void matmul_tiled(const nf4_dq_tensor& w, const float* dy, index_t M, float* dx, float beta,
                         index_t T) {
  const auto N = static_cast<index_t>(w.rows), K = static_cast<index_t>(w.cols);
  if (M == 0 || K == 0) return;
  if (N == 0) {
    gemm_scale_c(M, K, beta, dx, K);
    return;
  }
  const row_bands rows(M, K, N, threads());
  run_parts(rows.parts, [&](int p) {
    index_t m0, m1;
    rows.band(p, M, m0, m1);
    if (m1 <= m0) return;
    float* tile = tile_buffer(std::min(T, N) * K);
    for (index_t n0 = 0; n0 < N; n0 += T) {
      const index_t n1 = std::min(N, n0 + T);
      dequant_rows(w, n0, n1, tile, 1);
      gemm_packed<float>(false, false, m1 - m0, K, n1 - n0, 1.0f, dy + m0 * N + n0, N, tile, K,
                         n0 == 0 ? beta : 1.0f, dx + m0 * K, K, 1);
    }
  });
}

}  // namespace detail::nf4_linear

}  // namespace cpu_kernels

/// Rows [r0, r1) of deq(W) into out ((r1 - r0) x K), bitwise dequantize_nf4_dq's rows.
inline void nf4_dequantize_rows(cpu, const nf4_dq_tensor& w, index_t r0, index_t r1, float* out) {
  detail::nf4_linear::check_rows(w, r0, r1, out, "tfm::nf4_dequantize_rows");
  namespace nl = cpu_kernels::detail::nf4_linear;
  nl::dequant_rows(w, r0, r1, out, nl::threads());
}

/// y (M, N) = x (M, K) deq(W)^T (+ beta * y), W dequantized tile by tile (file comment).
inline void nf4_matmul_bt(cpu, const nf4_dq_tensor& w, const float* x, index_t M, float* y,
                          float beta) {
  detail::nf4_linear::check_product(w, M, x, static_cast<index_t>(w.cols), y,
                                    static_cast<index_t>(w.rows), "tfm::nf4_matmul_bt");
  cpu_kernels::detail::nf4_linear::matmul_bt(w, x, M, y, beta);
}

/// dx (M, K) = dy (M, N) deq(W) (+ beta * dx), W dequantized tile by tile (file comment).
inline void nf4_matmul(cpu, const nf4_dq_tensor& w, const float* dy, index_t M, float* dx,
                       float beta) {
  detail::nf4_linear::check_product(w, M, dy, static_cast<index_t>(w.rows), dx,
                                    static_cast<index_t>(w.cols), "tfm::nf4_matmul");
  cpu_kernels::detail::nf4_linear::matmul_tiled(w, dy, M, dx, beta, cpu_kernels::nf4_tile_rows);
}

TFM_END_NAMESPACE
