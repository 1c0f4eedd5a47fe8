// typeformer/backend/cpu/quant/gemm_interleaved.hpp
//
// WHAT THIS REPRESENTS
//   A GEMM for batches of quantized activations against block-quantized weights repacked so that
//   the SIMD lanes are output columns: C(M, N) = Xq(A) W^T with W in Q4_0, Q4_1 or Q8_0.
//
//     interleaved_weight iw = interleave_weight(type, w, row_bytes, N, K);   // once, at load
//     quantize_activations(M, K, A, lda, a);                                 // gemv_q.hpp
//     gemm_interleaved(iw, M, a, C, ldc, accumulate);
//
//   The integer-dot kernels of gemv_q.hpp put a weight block's 32 values in the lanes of a
//   vector: every output then ends in a horizontal sum, and rows of activations share nothing.
//   That suits one row (decode) but a batch of M rows costs M times one row (measured: 62-77 us
//   per row of a 1536 x 576 Q4_1 product at M = 1 ... 128). Here the 16 lanes of a 512-bit
//   vector are 16 weight rows: one VPDPBUSD multiplies 4 consecutive values of 16 weight rows by
//   the same 4 activation values (broadcast), 8 of them cover a block, and the block's unpacked
//   weights serve 4 activation rows before the next block is read. No horizontal sums; the
//   serving engine's batched decode reads each weight once per step.
//
//   Layout (interleaved_weight): rows in groups of 16 (the last group padded with zero rows);
//   per (group, block): the 16 x 32 quants as unsigned bytes in VPDPBUSD order — step t (values
//   4t .. 4t + 3) is 64 bytes, lane r = row r's 4 bytes — Q4_0/Q4_1 store two steps per byte
//   (low nibble step s, high nibble step s + 4: 256 bytes, the file's 4 bits per weight), Q8_0
//   one (q + 128: 512 bytes); the 16 scales d (and Q4_1's mins m) as f32. Memory: the quants'
//   bytes of the file plus 4 bytes per scale instead of 2 (Q4_1: 5.0 bits per weight instead of
//   4.5 +, for N not a multiple of 16, the padding).
//
// CONTRACTS
//   - The unsigned quants u (nibble, or q + 128) give the signed block product
//     sumi = sum_j u_j q_j - (sum_j q_j << shift), shift 3 for Q4_0, 7 for Q8_0, none for Q4_1:
//     exact in int32. Each output accumulates its blocks in order in binary32:
//       acc = fma(float(sumi_b), f32(dw_b) * dx_b, acc);   Q4_1: acc = fma(f32(mw_b), sx_b, acc)
//     from acc = 0 (then C = acc, or C += acc). The AVX-512 VNNI path and the scalar path follow
//     this order, so they give the same bits; a result does not depend on M, on the other rows
//     or on the thread count (columns are split over threads in groups of 16).
//   - This order differs from gemv_q's (8 lane accumulators per row): results agree with
//     gemv_q / gemm_q_bt to rounding, not bitwise.
//   - K % 32 == 0 (tfm::shape_error), the activations quantized with K columns.
//   Sources: Intel intrinsics guide (VPDPBUSD); the idea of repacking weights so that lanes are
//   output columns is the one of llama.cpp's ggml-cpu/repack.cpp (block_q4_0x8 ...), with our
//   own layout and kernel.
#pragma once

#include "typeformer/backend/cpu/gemm/gemv.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define TFM_INTERLEAVED_VNNI512 1
#else
#define TFM_INTERLEAVED_VNNI512 0
#endif

TFM_BEGIN_NAMESPACE
namespace cpu_kernels {

/// True for the weight types interleave_weight takes.
constexpr bool interleave_supported(ggml_type t) noexcept {
  return t == ggml_type::q4_0 || t == ggml_type::q4_1 || t == ggml_type::q8_0;
}

/// A weight matrix repacked for gemm_interleaved (see the file comment).
struct interleaved_weight {
  ggml_type type = ggml_type::q4_0;
  index_t N = 0, K = 0;
  index_t groups = 0;            ///< ceil(N / 16)
  index_t nb = 0;                ///< blocks per row, K / 32
  std::vector<std::uint8_t> qs;  ///< (group, block) tiles of tile_bytes()
  std::vector<float> d, m;       ///< (group, block, 16) scales and (Q4_1) mins

  index_t tile_bytes() const noexcept { return type == ggml_type::q8_0 ? 512 : 256; }
  std::size_t bytes() const noexcept { return qs.size() + (d.size() + m.size()) * sizeof(float); }
};

namespace detail::interleaved {

/// Unsigned quant j (0 .. 31) of a block: the nibble or q + 128.
inline std::uint8_t quant(const block_q4_0& b, int j) noexcept {
  return static_cast<std::uint8_t>(j < 16 ? b.qs[j] & 0x0F : b.qs[j - 16] >> 4);
}
inline std::uint8_t quant(const block_q4_1& b, int j) noexcept {
  return static_cast<std::uint8_t>(j < 16 ? b.qs[j] & 0x0F : b.qs[j - 16] >> 4);
}
inline std::uint8_t quant(const block_q8_0& b, int j) noexcept {
  return static_cast<std::uint8_t>(static_cast<int>(b.qs[j]) + 128);
}

/// Byte offset of (row r, value j) in a Q4 tile, and whether it is the high nibble.
inline std::size_t q4_at(int r, int j, bool& high) noexcept {
  const int t = j / 4, k = j % 4;  // step t holds values 4t .. 4t + 3
  high = t >= 4;
  return static_cast<std::size_t>(((t % 4) * 16 + r) * 4 + k);
}

template <class B>
void pack(const B* w, index_t ldw, interleaved_weight& iw) {
  constexpr bool q8 = std::is_same_v<B, block_q8_0>;
  for (index_t g = 0; g < iw.groups; ++g)
    for (index_t b = 0; b < iw.nb; ++b) {
      const std::size_t tile = static_cast<std::size_t>(g * iw.nb + b);
      std::uint8_t* dst = iw.qs.data() + tile * static_cast<std::size_t>(iw.tile_bytes());
      float* d = iw.d.data() + tile * 16;
      for (int r = 0; r < 16; ++r) {
        const index_t row = g * 16 + r;
        if (row >= iw.N) continue;  // zero padding (the vectors were zero-filled)
        const B& blk = w[row * ldw + b];
        d[r] = static_cast<float>(blk.d);
        if constexpr (std::is_same_v<B, block_q4_1>)
          iw.m[tile * 16 + static_cast<std::size_t>(r)] = static_cast<float>(blk.m);
        for (int j = 0; j < 32; ++j) {
          const std::uint8_t u = quant(blk, j);
          if constexpr (q8) {
            dst[((j / 4) * 16 + r) * 4 + j % 4] = u;
          } else {
            bool high = false;
            const std::size_t at = q4_at(r, j, high);
            dst[at] = static_cast<std::uint8_t>(dst[at] | (high ? u << 4 : u));
          }
        }
      }
    }
}

/// Columns [16 g0, 16 g1) of rows [m0, m1) of C, scalar: the contract's order exactly.
template <bool Q8, bool Min, int Shift>
void tiles_scalar(const interleaved_weight& iw, index_t g0, index_t g1, index_t m0, index_t m1,
                  const q8_activations& a, float* C, index_t ldc, bool accumulate) {
  const index_t nb = iw.nb, tb = iw.tile_bytes();
  for (index_t m = m0; m < m1; ++m) {
    const q8_row x = a.row(m);
    for (index_t g = g0; g < g1; ++g)
      for (int r = 0; r < 16; ++r) {
        const index_t n = g * 16 + r;
        if (n >= iw.N) break;
        float acc = 0.0f;
        for (index_t b = 0; b < nb; ++b) {
          const std::size_t tile = static_cast<std::size_t>(g * nb + b);
          const std::uint8_t* t = iw.qs.data() + tile * static_cast<std::size_t>(tb);
          std::int32_t s = 0;
          for (int j = 0; j < 32; ++j) {
            std::int32_t u;
            if constexpr (Q8) {
              u = t[((j / 4) * 16 + r) * 4 + j % 4];
            } else {
              bool high = false;
              const std::uint8_t byte = t[q4_at(r, j, high)];
              u = high ? byte >> 4 : byte & 0x0F;
            }
            s += u * x.qs[32 * b + j];
          }
          if constexpr (Shift >= 0) s -= x.sum[b] * (1 << Shift);
          acc = std::fma(static_cast<float>(s),
                         iw.d[tile * 16 + static_cast<std::size_t>(r)] * x.d[b], acc);
          if constexpr (Min)
            acc = std::fma(iw.m[tile * 16 + static_cast<std::size_t>(r)], x.s[b], acc);
        }
        float& c = C[m * ldc + n];
        c = accumulate ? c + acc : acc;
      }
  }
}

#if TFM_INTERLEAVED_VNNI512
/// Up to R rows of activations (R <= 4) against one 16-row group: the contract's order per lane.
template <bool Q8, bool Min, int Shift, int R>
TFM_ALWAYS_INLINE void tile_vnni(const interleaved_weight& iw, index_t g, const q8_row* x,
                                 __m512 acc[R]) noexcept {
  const index_t nb = iw.nb, tb = iw.tile_bytes();
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (index_t b = 0; b < nb; ++b) {
    const std::size_t tile = static_cast<std::size_t>(g * nb + b);
    const std::uint8_t* t = iw.qs.data() + tile * static_cast<std::size_t>(tb);
    __m512i w[8];
    if constexpr (Q8) {
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) w[s] = _mm512_loadu_si512(t + 64 * s);
    } else {
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        const __m512i v = _mm512_loadu_si512(t + 64 * s);
        w[s] = _mm512_and_si512(v, low);
        w[s + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
    }
    const __m512 dw = _mm512_loadu_ps(iw.d.data() + tile * 16);
    __m512 mw;
    if constexpr (Min) mw = _mm512_loadu_ps(iw.m.data() + tile * 16);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const std::int8_t* q = x[r].qs + 32 * b;
      // Two chains of VPDPBUSD (steps 0-3, 4-7) halve the dependent latency; integer sums, so
      // the total is the same whatever the grouping.
      __m512i s = _mm512_setzero_si512(), s2 = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        std::int32_t four, four2;
        std::memcpy(&four, q + 4 * k, 4);
        std::memcpy(&four2, q + 16 + 4 * k, 4);
        s = _mm512_dpbusd_epi32(s, w[k], _mm512_set1_epi32(four));
        s2 = _mm512_dpbusd_epi32(s2, w[k + 4], _mm512_set1_epi32(four2));
      }
      s = _mm512_add_epi32(s, s2);
      if constexpr (Shift >= 0)
        s = _mm512_sub_epi32(s, _mm512_set1_epi32(x[r].sum[b] * (1 << Shift)));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(x[r].d[b])),
                               acc[r]);
      if constexpr (Min) acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(x[r].s[b]), acc[r]);
    }
  }
}

template <bool Q8, bool Min, int Shift>
void tiles_vnni(const interleaved_weight& iw, index_t g0, index_t g1, index_t m0, index_t m1,
                const q8_activations& a, float* C, index_t ldc, bool accumulate) {
  for (index_t g = g0; g < g1; ++g) {
    const index_t n0 = g * 16;
    const __mmask16 keep =
        iw.N - n0 >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (iw.N - n0)) - 1);
    auto store = [&](index_t m, __m512 v) {
      float* c = C + m * ldc + n0;
      if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(keep, c), v);
      _mm512_mask_storeu_ps(c, keep, v);
    };
    index_t m = m0;
    for (; m + 4 <= m1; m += 4) {
      const q8_row x[4] = {a.row(m), a.row(m + 1), a.row(m + 2), a.row(m + 3)};
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
      tile_vnni<Q8, Min, Shift, 4>(iw, g, x, acc);
      for (int r = 0; r < 4; ++r) store(m + r, acc[r]);
    }
    for (; m < m1; ++m) {
      const q8_row x[1] = {a.row(m)};
      __m512 acc[1] = {_mm512_setzero_ps()};
      tile_vnni<Q8, Min, Shift, 1>(iw, g, x, acc);
      store(m, acc[0]);
    }
  }
}
#endif

template <bool Q8, bool Min, int Shift>
void tiles(const interleaved_weight& iw, index_t g0, index_t g1, index_t M, const q8_activations& a,
           float* C, index_t ldc, bool accumulate, bool scalar) {
#if TFM_INTERLEAVED_VNNI512
  if (!scalar) {
    tiles_vnni<Q8, Min, Shift>(iw, g0, g1, 0, M, a, C, ldc, accumulate);
    return;
  }
#endif
  (void)scalar;
  tiles_scalar<Q8, Min, Shift>(iw, g0, g1, 0, M, a, C, ldc, accumulate);
}

}  // namespace detail::interleaved

/// Repacks W (N rows of row_bytes bytes of `type` blocks, K values each) for gemm_interleaved.
/// An unsupported type -> tfm::unsupported_error; K % 32 != 0 or short rows -> tfm::shape_error.
inline interleaved_weight interleave_weight(ggml_type type, const std::byte* w,
                                            std::size_t row_bytes, index_t N, index_t K) {
  if (!interleave_supported(type))
    fail(errc::unsupported, "tfm::cpu_kernels::interleave_weight: type ", ggml_type_name(type),
         " is not interleaved (Q4_0, Q4_1, Q8_0 are).");
  detail::qdot::check_k("interleave_weight", 1, N, K);
  const ggml_type_info& info = ggml_type_info_of(type);
  if (row_bytes % info.block_bytes != 0 ||
      row_bytes / info.block_bytes < static_cast<std::size_t>(K / 32))
    fail(errc::shape, "tfm::cpu_kernels::interleave_weight: rows of ", row_bytes,
         " bytes do not hold ", K / 32, " whole ", info.name, " blocks.");
  interleaved_weight iw;
  iw.type = type;
  iw.N = N;
  iw.K = K;
  iw.groups = (N + 15) / 16;
  iw.nb = K / 32;
  const std::size_t tiles = static_cast<std::size_t>(iw.groups * iw.nb);
  iw.qs.assign(tiles * static_cast<std::size_t>(iw.tile_bytes()), 0);
  iw.d.assign(tiles * 16, 0.0f);
  if (type == ggml_type::q4_1) iw.m.assign(tiles * 16, 0.0f);
  const index_t ldw = static_cast<index_t>(row_bytes / info.block_bytes);
  if (type == ggml_type::q4_0)
    detail::interleaved::pack(reinterpret_cast<const block_q4_0*>(w), ldw, iw);
  else if (type == ggml_type::q4_1)
    detail::interleaved::pack(reinterpret_cast<const block_q4_1*>(w), ldw, iw);
  else
    detail::interleaved::pack(reinterpret_cast<const block_q8_0*>(w), ldw, iw);
  return iw;
}

/// C(M, N) = Xq W^T (+ C when accumulate) with `a` holding M rows quantized by
/// quantize_activations with iw.K columns. `scalar` forces the portable path (tests).
inline void gemm_interleaved(const interleaved_weight& iw, index_t M, const q8_activations& a,
                             float* C, index_t ldc, bool accumulate, bool scalar = false) {
  if (M < 0) fail(errc::value, "tfm::cpu_kernels::gemm_interleaved: M = ", M, " is negative.");
  if (M == 0 || iw.N == 0) return;
  if (a.rows < M || a.cols != iw.K)
    fail(errc::shape, "tfm::cpu_kernels::gemm_interleaved: the activations hold ", a.rows, " x ",
         a.cols, " values; ", M, " x ", iw.K, " are needed.");
  const int nt = in_parallel() ? 1 : num_threads();
  const int parts = detail::gemv_threads(nt, M * iw.N * iw.K / 4);
  detail::gemv_parallel(iw.groups, 1, parts, [&](index_t g0, index_t g1) {
    namespace il = detail::interleaved;
    switch (iw.type) {
      case ggml_type::q4_0:
        il::tiles<false, false, 3>(iw, g0, g1, M, a, C, ldc, accumulate, scalar);
        break;
      case ggml_type::q4_1:
        il::tiles<false, true, -1>(iw, g0, g1, M, a, C, ldc, accumulate, scalar);
        break;
      default:
        il::tiles<true, false, 7>(iw, g0, g1, M, a, C, ldc, accumulate, scalar);
        break;
    }
  });
}

}  // namespace cpu_kernels
TFM_END_NAMESPACE
