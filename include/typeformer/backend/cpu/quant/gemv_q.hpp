// typeformer/backend/cpu/quant/gemv_q.hpp
//
// WHAT THIS REPRESENTS
//   Products of a block-quantized weight matrix W (N x K, row-major rows of K / 32 GGML blocks:
//   the GGUF tensor data) with float activations, the llama.cpp way: the activations are
//   quantized once to 8-bit blocks (the quants and scale of Q8_0, plus Q8_1's sum term), and
//   every block product is an integer dot product of 32 pairs.
//
//     quantize_activations(M, K, x, ldx, a)   x (M x K floats) -> a (q8_activations)
//     vec_dot_q8<B>(K, w_row, a.row(m))       one dot product: sum_k W(n, k) * Xq(m, k)
//     gemv_q<B>(N, K, w, ldw, a.row(0), y)    y[n] = W(n, :) . Xq(0, :)            (decode)
//     gemv_q<B>(N, K, w, ldw, x, y, scratch)  the same from float x (quantized into scratch)
//     gemm_q_bt<B>(M, N, K, A, lda, w, ldw, C, ldc, scratch)
//                                             C(M, N) = Xq(A) W^T, A quantized once  (prefill)
//     gemm_q_bt(type, ..., const std::byte* w, row_bytes, ...)
//                                             the same with the type chosen at run time
//
//   B is one of block_q4_0, block_q4_1, block_q5_0, block_q5_1, block_q8_0 (concept
//   q8_dot_weight); ldw is the row stride of W in blocks (K / 32 for a dense tensor).
//
// CONTRACTS
//   - K must be a multiple of 32 (else tfm::shape_error); negative sizes -> tfm::value_error.
//   - Activation quantization is ggml's quantize_row_q8_0_ref / quantize_row_q8_1_ref (the same
//     quants and f16 scale; s = f16(d * sum q)), so |q| <= 127 (the AVX2 kernel relies on it).
//   - The block product is exact in int32: sumi_b = sum_j w_j * q_j with w_j the signed weight
//     quant (q - 8 for Q4_0, q - 16 for Q5_0, q for Q4_1/Q5_1/Q8_0). It is combined in binary32
//     with d_b = f32(dw) * f32(dx):  lane = b mod 8,  acc[lane] = fma(d_b, float(sumi_b),
//     acc[lane]),  then for Q4_1/Q5_1 acc[lane] = fma(f32(mw), f32(sx), acc[lane]); the result
//     is ((acc0 + acc1) + (acc2 + acc3)) + ((acc4 + acc5) + (acc6 + acc7)). Every ISA path
//     (AVX-512 VNNI, AVX2, scalar) follows this order, so all give the same bits, and every
//     output is computed by one thread: results do not depend on the thread count.
//     (llama.cpp's vec_dot_q4_0_q8_0 etc. compute the same block products; its float order
//     differs, so results agree with it to rounding, not bitwise.)
//   - ISA: intrinsics under #if, chosen at compile time for the whole translation unit:
//     AVX-512 VNNI + BW (VPDPBUSD on two blocks per 512-bit vector, __AVX512VNNI__ &&
//     __AVX512BW__), AVX-512 VNNI with VL only (VPDPBUSD on 256-bit vectors), else AVX2 + FMA +
//     F16C (VPMADDUBSW + VPMADDWD), else scalar (any other ISA, aarch64 included; std::fma keeps
//     it bitwise equal to the SIMD paths). xsimd has no u8 x s8 dot product, hence intrinsics.
//     With AVX-512 VNNI + BW + VBMI, gemv_q on Q4_0/Q4_1/Q5_0/Q5_1 runs a two-row kernel
//     (gemv_rows2: two rows per pass over the activations, four blocks per VPDPBUSD pair, the
//     same per-row operations and order, so the same bits); vec_dot_q8 and gemm_q_bt's M > 1
//     path keep the one-row kernel.
//   - A q8_row must be a view of a q8_activations (its buffers end with spare entries that the
//     SIMD kernels read, and discard, past the last block of a row).
//   - Non-finite activations give a defined but meaningless result (no check on the hot path);
//     weights are used as stored (NaN/Inf scales propagate).
//   Sources: ggml/src/ggml-cpu/arch/x86/quants.c (ggml_vec_dot_q4_0_q8_0 ... q8_0_q8_0, the
//   sign trick of mul_sum_i8_pairs, bytes_from_bits_32), ggml/src/ggml-quants.c
//   (quantize_row_q8_1_ref); Intel intrinsics guide for VPDPBUSD.
#pragma once

#include "typeformer/backend/cpu/gemm/gemv.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/quantize.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TFM_QDOT_AVX2 1
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define TFM_QDOT_VNNI 1
#if defined(__AVX512BW__)
#define TFM_QDOT_VNNI512 1
#if defined(__AVX512VBMI__)
#define TFM_QDOT_ROWS2 1
#endif
#endif
#endif
#endif

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// The weight block types with an integer dot product against 8-bit activations.
template <class B>
concept q8_dot_weight = std::is_same_v<B, block_q4_0> || std::is_same_v<B, block_q4_1> ||
    std::is_same_v<B, block_q5_0> || std::is_same_v<B, block_q5_1> || std::is_same_v<B, block_q8_0>;

/// One row of quantized activations (views into q8_activations): K / 32 blocks.
struct q8_row {
  const std::int8_t* qs;    ///< K quants, block after block
  const float* d;           ///< K/32 scales, f32(f16(amax / 127))
  const float* s;           ///< K/32 terms f32(f16(d * sum q)) (Q8_1's s)
  const std::int32_t* sum;  ///< K/32 sums of the quants
};

/// M rows of K activations quantized to 8-bit blocks (structure of arrays of Q8_1 blocks plus
/// the integer block sums). Reused between calls: quantize_activations only grows the buffers.
struct q8_activations {
  index_t rows = 0, cols = 0;
  std::vector<std::int8_t> qs;
  std::vector<float> d, s;
  std::vector<std::int32_t> sum;

  index_t blocks_per_row() const noexcept { return cols / 32; }
  q8_row row(index_t m) const noexcept {
    const std::size_t nb = static_cast<std::size_t>(blocks_per_row());
    const std::size_t i = static_cast<std::size_t>(m);
    return {qs.data() + i * static_cast<std::size_t>(cols), d.data() + i * nb, s.data() + i * nb,
            sum.data() + i * nb};
  }
};

namespace detail::qdot {

inline void check_k(const char* who, index_t M, index_t N, index_t K) {
  if (M < 0 || N < 0 || K < 0)
    fail(errc::value, "tfm::cpu_kernels::", who, ": negative size (M ", M, ", N ", N, ", K ", K,
         ").");
  if (K % 32 != 0)
    fail(errc::shape, "tfm::cpu_kernels::", who, ": K = ", K,
         " is not a multiple of the 32-value quantization block.");
}

/// One row of activations: ggml's quantize_row_q8_1_ref, scales kept as floats.
inline void quantize_row_scalar(index_t K, const float* x, std::int8_t* qs, float* d, float* s,
                                std::int32_t* sum) noexcept {
  namespace q = ::tfm::detail::quant;
  for (index_t b = 0; b < K / 32; ++b) {
    const float* xb = x + 32 * b;
    const float db = q::absmax(xb, 32) / 127.0f;
    const float id = q::inverse_or_zero(db);
    std::int32_t t = 0;
    for (int j = 0; j < 32; ++j) {
      const std::int8_t v = q::cvt_i8(q::round_half_away(xb[j] * id));
      qs[32 * b + j] = v;
      t += v;
    }
    d[b] = static_cast<float>(f16(db));
    s[b] = static_cast<float>(f16(static_cast<float>(t) * db));
    sum[b] = t;
  }
}

#if TFM_QDOT_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__)
/// The same with AVX-512 (the same bits for finite x): round half away from zero as
/// trunc(v) + sign(v) * (|v - trunc(v)| >= 1/2), bytes by truncation (VPMOVDB) as cvt_i8.
inline void quantize_row(index_t K, const float* x, std::int8_t* qs, float* d, float* s,
                         std::int32_t* sum) noexcept {
  namespace q = ::tfm::detail::quant;
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  auto quant16 = [&](__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), half, _CMP_GE_OQ);
    const __m512 r = _mm512_mask_add_ps(
        t, up, t,
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), one,
                             _mm512_set1_ps(-1.0f)));
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r));
  };
  for (index_t b = 0; b < K / 32; ++b) {
    const float* xb = x + 32 * b;
    const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
    const float db =
        _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1))) / 127.0f;
    const __m512 id = _mm512_set1_ps(q::inverse_or_zero(db));
    const __m128i q0 = quant16(_mm512_mul_ps(x0, id)), q1 = quant16(_mm512_mul_ps(x1, id));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b), q0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b + 16), q1);
    const std::int32_t t = _mm512_reduce_add_epi32(
        _mm512_add_epi32(_mm512_cvtepi8_epi32(q0), _mm512_cvtepi8_epi32(q1)));
    d[b] = static_cast<float>(f16(db));
    s[b] = static_cast<float>(f16(static_cast<float>(t) * db));
    sum[b] = t;
  }
}
#else
inline void quantize_row(index_t K, const float* x, std::int8_t* qs, float* d, float* s,
                         std::int32_t* sum) noexcept {
  quantize_row_scalar(K, x, qs, d, s, sum);
}
#endif

/// Signed integer weights of one block (q - offset), for the scalar path.
inline void weights(const block_q4_0& b, int* w) noexcept {
  for (int j = 0; j < 16; ++j) {
    w[j] = (b.qs[j] & 0x0F) - 8;
    w[j + 16] = (b.qs[j] >> 4) - 8;
  }
}
inline void weights(const block_q4_1& b, int* w) noexcept {
  for (int j = 0; j < 16; ++j) {
    w[j] = b.qs[j] & 0x0F;
    w[j + 16] = b.qs[j] >> 4;
  }
}
inline std::uint32_t high_bits(const std::uint8_t* qh) noexcept {
  std::uint32_t h;
  std::memcpy(&h, qh, 4);
  return h;
}
inline void weights(const block_q5_0& b, int* w) noexcept {
  const std::uint32_t h = high_bits(b.qh);
  for (int j = 0; j < 16; ++j) {
    w[j] = ((b.qs[j] & 0x0F) | static_cast<int>(((h >> j) & 1u) << 4)) - 16;
    w[j + 16] = ((b.qs[j] >> 4) | static_cast<int>(((h >> (j + 16)) & 1u) << 4)) - 16;
  }
}
inline void weights(const block_q5_1& b, int* w) noexcept {
  const std::uint32_t h = high_bits(b.qh);
  for (int j = 0; j < 16; ++j) {
    w[j] = (b.qs[j] & 0x0F) | static_cast<int>(((h >> j) & 1u) << 4);
    w[j + 16] = (b.qs[j] >> 4) | static_cast<int>(((h >> (j + 16)) & 1u) << 4);
  }
}
inline void weights(const block_q8_0& b, int* w) noexcept {
  for (int j = 0; j < 32; ++j) w[j] = b.qs[j];
}

template <class B>
inline constexpr bool has_min = std::is_same_v<B, block_q4_1> || std::is_same_v<B, block_q5_1>;

/// Adds block b's terms into lane acc (the contract's per-block step), scalar.
template <class B>
TFM_ALWAYS_INLINE void block_step_scalar(const B& blk, const q8_row& a, index_t b,
                                         float& acc) noexcept {
  int w[32];
  weights(blk, w);
  const std::int8_t* y = a.qs + 32 * b;
  std::int32_t sumi = 0;
  for (int j = 0; j < 32; ++j) sumi += w[j] * y[j];
  const float db = static_cast<float>(blk.d) * a.d[b];
  acc = std::fma(db, static_cast<float>(sumi), acc);
  if constexpr (has_min<B>) acc = std::fma(static_cast<float>(blk.m), a.s[b], acc);
}

inline float reduce_lanes(const float* acc) noexcept {
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/// The scalar kernel (any ISA; the oracle of the SIMD ones).
template <class B>
float vec_dot_scalar(index_t nb, const B* w, const q8_row& a) noexcept {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (index_t b = 0; b < nb; ++b) block_step_scalar(w[b], a, b, acc[b % 8]);
  return reduce_lanes(acc);
}

#if TFM_QDOT_AVX2

/// Elements 0..31 of a Q4/Q5 block's low nibbles as 32 bytes (low nibble of qs[j] is element j,
/// the high nibble element j + 16).
TFM_ALWAYS_INLINE __m256i nibbles32(const std::uint8_t* qs) noexcept {
  // Both 128-bit halves from one broadcast load (no shuffle), high half shifted by 4.
  const __m256i v =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i both = _mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xF0);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

/// Byte j = 0x10 when bit j of qh is set (ggml's bytes_from_bits_32, then the bit-4 value).
TFM_ALWAYS_INLINE __m256i fifth_bits32(std::uint32_t qh) noexcept {
  const __m256i idx =
      _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
  const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)), idx);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/// Eight int32 partial sums of u (unsigned bytes) times y (signed bytes), |u| <= 255 for VNNI;
/// the AVX2 form needs 2 * u * |y| <= 32767 (u <= 128, |y| <= 127).
TFM_ALWAYS_INLINE __m256i dot_u8s8(__m256i u, __m256i y) noexcept {
#if TFM_QDOT_VNNI
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, y);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1));
#endif
}

/// Lane i = the sum of the eight lanes of p[i].
TFM_ALWAYS_INLINE __m256i hsum8x8(const __m256i* p) noexcept {
  const __m256i ab =
      _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
  const __m256i cd =
      _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20),
                          _mm256_permute2x128_si256(ab, cd, 0x31));
}

/// Partial sums of block `blk` with the activations y, and the per-block offset to subtract
/// times sum(y) (offset * sum_j y_j), so that sumi = hsum(partials) - offset * sum(y).
template <class B>
TFM_ALWAYS_INLINE __m256i block_partials(const B& blk, const std::int8_t* yq) noexcept {
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yq));
  if constexpr (std::is_same_v<B, block_q8_0>) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs));
#if TFM_QDOT_VNNI
    // w + 128 as unsigned: sum (w + 128) y - 128 sum y.
    return dot_u8s8(_mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))), y);
#else
    // ggml's sign trick: |w| * (y * sign(w)); |w| <= 128, |y| <= 127.
    return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
#endif
  } else if constexpr (std::is_same_v<B, block_q5_0> || std::is_same_v<B, block_q5_1>) {
    const __m256i u = _mm256_or_si256(nibbles32(blk.qs), fifth_bits32(high_bits(blk.qh)));
    return dot_u8s8(u, y);
  } else {
    return dot_u8s8(nibbles32(blk.qs), y);
  }
}

template <class B>
inline constexpr int offset_shift = std::is_same_v<B, block_q4_0>   ? 3
                                    : std::is_same_v<B, block_q5_0> ? 4
#if TFM_QDOT_VNNI
                                    : std::is_same_v<B, block_q8_0> ? 7
#endif
                                                                    : -1;

/// Blocks b0 .. b0 + n - 1 (n <= 8, lane i = block b0 + i) added into acc; lanes >= n keep
/// their value bit for bit. A partial group computes its missing lanes from block b0 + n - 1
/// again (reads stay inside the row) and blends them away; q8_activations keeps 8 spare
/// entries after its d/s/sum arrays so that their vector loads stay inside the buffers.
#if TFM_QDOT_VNNI512
/// Partial sums of blocks wa and wb (activations ya, ya + 32) in one 512-bit vector: lanes 0..7
/// belong to wa, 8..15 to wb (the 256-bit block_partials of each, two blocks per VPDPBUSD).
template <class B>
TFM_ALWAYS_INLINE __m512i pair_partials(const B& wa, const B& wb, const std::int8_t* ya) noexcept {
  const __m512i y = _mm512_loadu_si512(ya);
  auto join = [](__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  };
  __m512i u;
  if constexpr (std::is_same_v<B, block_q8_0>) {
    u = join(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wa.qs)),
             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qs)));
    u = _mm512_xor_si512(u, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m512i v =
        join(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wa.qs))),
             _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.qs))));
    u = _mm512_and_si512(_mm512_mask_blend_epi32(0xF0F0, v, _mm512_srli_epi16(v, 4)),
                         _mm512_set1_epi8(0x0F));
    if constexpr (std::is_same_v<B, block_q5_0> || std::is_same_v<B, block_q5_1>) {
      const __m512i idx =
          _mm512_set_epi64(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0,
                           0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
      const __m512i h =
          _mm512_shuffle_epi8(join(_mm256_set1_epi32(static_cast<int>(high_bits(wa.qh))),
                                   _mm256_set1_epi32(static_cast<int>(high_bits(wb.qh)))),
                              idx);
      const __mmask64 set = _mm512_test_epi8_mask(
          h, _mm512_set1_epi64(static_cast<long long>(0x8040201008040201ULL)));
      u = _mm512_or_si512(u, _mm512_maskz_mov_epi8(set, _mm512_set1_epi8(0x10)));
    }
  }
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, y);
}

/// Lane m of the result = lanes 2m + 2m+1 of the 32-lane concatenation [a, b].
TFM_ALWAYS_INLINE __m512i pair_add(__m512i a, __m512i b) noexcept {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, even, b),
                          _mm512_permutex2var_epi32(a, odd, b));
}

/// Lane i = the whole sum of block i (8 blocks from 4 pair vectors): three pairwise halvings.
TFM_ALWAYS_INLINE __m256i hsum_pairs(const __m512i* z) noexcept {
  const __m512i x = pair_add(pair_add(z[0], z[1]), pair_add(z[2], z[3]));
  return _mm512_castsi512_si256(pair_add(x, x));
}
#endif

template <class B, bool Full, int Pairs = 4>
TFM_ALWAYS_INLINE __m256 block_group(const B* w, const q8_row& a, index_t b0, index_t n,
                                     __m256 acc) noexcept {
  std::uint16_t dh[8], mh[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    const index_t b = b0 + (Full ? i : std::min<index_t>(i, n - 1));
    dh[i] = w[b].d.bits();
    if constexpr (has_min<B>) mh[i] = w[b].m.bits();
  }
#if TFM_QDOT_VNNI512
  // Two blocks per vector; activations are read 64 bytes at a time from block b0 + 2k, which
  // q8_activations' 256 spare bytes keep inside the buffer for a partial last group.
  // A partial group computes its first Pairs pairs (those holding blocks); the other vectors
  // repeat the last one: their lanes are blended away.
  __m512i z[4];
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    if (k >= Pairs) {
      z[k] = z[Pairs - 1];
      continue;
    }
    const index_t ba = b0 + (Full ? 2 * k : std::min<index_t>(2 * k, n - 1));
    const index_t bb = b0 + (Full ? 2 * k + 1 : std::min<index_t>(2 * k + 1, n - 1));
    z[k] = pair_partials(w[ba], w[bb], a.qs + 32 * (b0 + 2 * k));
  }
  __m256i sumi = hsum_pairs(z);
#else
  __m256i p[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    const index_t b = b0 + (Full ? i : std::min<index_t>(i, n - 1));
    p[i] = block_partials(w[b], a.qs + 32 * b);
  }
  __m256i sumi = hsum8x8(p);
#endif
  if constexpr (offset_shift<B> >= 0) {
    const __m256i ys = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sum + b0));
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(ys, offset_shift<B>));
  }
  // The eight scales are assembled in general-purpose registers (two 64-bit words): the vector
  // ports are the kernel's bottleneck, the integer ones are idle.
  auto f16x8 = [](const std::uint16_t* h) {
    const std::uint64_t lo = std::uint64_t(h[0]) | std::uint64_t(h[1]) << 16 |
                             std::uint64_t(h[2]) << 32 | std::uint64_t(h[3]) << 48;
    const std::uint64_t hi = std::uint64_t(h[4]) | std::uint64_t(h[5]) << 16 |
                             std::uint64_t(h[6]) << 32 | std::uint64_t(h[7]) << 48;
    return _mm256_cvtph_ps(_mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo)));
  };
  const __m256 db = _mm256_mul_ps(f16x8(dh), _mm256_loadu_ps(a.d + b0));
  __m256 r = _mm256_fmadd_ps(db, _mm256_cvtepi32_ps(sumi), acc);
  if constexpr (has_min<B>) r = _mm256_fmadd_ps(f16x8(mh), _mm256_loadu_ps(a.s + b0), r);
  if constexpr (Full) {
    return r;
  } else {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
    return _mm256_blendv_ps(acc, r, _mm256_castsi256_ps(keep));
  }
}

/// The partial last group of a row (n = nb - b0 blocks, 1 <= n < 8).
template <class B>
TFM_ALWAYS_INLINE __m256 last_group(const B* w, const q8_row& a, index_t b0, index_t n,
                                    __m256 acc) noexcept {
  switch ((n + 1) / 2) {  // pairs of blocks holding the n blocks
    case 1:
      return block_group<B, false, 1>(w, a, b0, n, acc);
    case 2:
      return block_group<B, false, 2>(w, a, b0, n, acc);
    case 3:
      return block_group<B, false, 3>(w, a, b0, n, acc);
    default:
      return block_group<B, false, 4>(w, a, b0, n, acc);
  }
}

TFM_ALWAYS_INLINE float reduce_acc(__m256 acc) noexcept {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  return reduce_lanes(lanes);
}

/// The SIMD kernel: eight blocks per step (lane i = block b0 + i); the tail is a masked step.
template <class B>
float vec_dot_simd(index_t nb, const B* w, const q8_row& a) noexcept {
  __m256 acc = _mm256_setzero_ps();
  index_t b0 = 0;
  for (; b0 + 8 <= nb; b0 += 8) acc = block_group<B, true>(w, a, b0, 8, acc);
  if (b0 < nb) acc = last_group(w, a, b0, nb - b0, acc);
  return reduce_acc(acc);
}

#if TFM_QDOT_ROWS2
// The two-row GEMV kernel (AVX-512 VNNI + VBMI; Q4_0, Q4_1, Q5_0, Q5_1): two rows share every
// activation load, four blocks of a row are one VPDPBUSD pair, and 16 float lanes hold the
// contract's eight per-block accumulators of both rows, so each row gets the bits of
// vec_dot_simd / vec_dot_scalar. Layout: chunk c of a group of eight blocks is blocks 4c..4c+3;
// the low nibbles (elements 0..15) of its block j go to bytes 16j.. of the "lo" vector, the
// high nibbles (elements 16..31) to the "hi" vector (lo = q & 15, hi = q >> 4, no lane
// shuffle: one VPERMT2B gathers the four blocks' 16 quant bytes; Q5's fifth bits are two
// 64-bit masks, the blocks' qh words side by side), and lane 4j + 2r + c of the float
// accumulator is block 4c + j of row r. The activations are rearranged the same way once per
// GEMV (rows2_pack), with the offset term (-8 sum(y) for Q4_0, -16 sum(y) for Q5_0) as
// VPDPBUSD's start value. Blocks past the end of a row are masked-load zeros (scales
// included) against zero activations: they add fma(0, 0, acc) = acc (acc is never -0: it
// starts at +0). Q8_0 keeps vec_dot_simd (its 32 quant bytes per block need more shuffles in
// this layout: measured slower). Ideas from llama.cpp's repack.cpp (several rows per pass over
// the activations); the code and layout are this file's.

template <class B>
inline constexpr bool is_q5 = std::is_same_v<B, block_q5_0> || std::is_same_v<B, block_q5_1>;
template <class B>
inline constexpr bool rows2_type =
    std::is_same_v<B, block_q4_0> || std::is_same_v<B, block_q4_1> || is_q5<B>;

/// The activations of one row in the kernel's order, per group g of eight blocks: y holds
/// 4 x 64 bytes (lo, hi of chunk 0, lo, hi of chunk 1) and z0 2 x 16 int32 (the start value
/// of chunk c: lane 4j = -(the quant sum of block 4c + j) << offset_shift for Q4_0 / Q5_0,
/// else 0); d and s 16 lanes (lane 4j + 2r + c = block 8g + 4c + j, for both r). Zero past
/// the last block.
struct rows2_pack {
  const std::int8_t* y;
  const std::int32_t* z0;
  const float* d;
  const float* s;
};

/// Builds the pack of `a` (nb blocks) in buffers owned by the calling thread (valid until its
/// next call).
template <class B>
rows2_pack make_rows2_pack(index_t nb, const q8_row& a) {
  thread_local std::vector<std::int8_t> yb;
  thread_local std::vector<float> db, sb;
  thread_local std::vector<std::int32_t> zb;
  const std::size_t ng = static_cast<std::size_t>((nb + 7) / 8);
  if (yb.size() < ng * 256) yb.resize(ng * 256);
  if (db.size() < ng * 16) {
    db.resize(ng * 16);
    sb.resize(ng * 16);
    zb.resize(ng * 32);
  }
  for (std::size_t g = 0; g < ng; ++g)
    for (std::size_t c = 0; c < 2; ++c)
      for (std::size_t j = 0; j < 4; ++j) {
        const index_t b = static_cast<index_t>(8 * g + 4 * c + j);
        const bool in = b < nb;
        std::int8_t* lo = yb.data() + 256 * g + 128 * c + 16 * j;
        if (in) {
          std::memcpy(lo, a.qs + 32 * b, 16);
          std::memcpy(lo + 64, a.qs + 32 * b + 16, 16);
        } else {
          std::memset(lo, 0, 16);
          std::memset(lo + 64, 0, 16);
        }
        std::int32_t* z = zb.data() + 32 * g + 16 * c + 4 * j;
        z[0] = in && offset_shift<B> > 0 ? -a.sum[b] * (1 << std::max(0, offset_shift<B>)) : 0;
        z[1] = z[2] = z[3] = 0;
        for (std::size_t r = 0; r < 2; ++r) {
          const std::size_t lane = 16 * g + 4 * j + 2 * r + c;
          db[lane] = in ? a.d[b] : 0.0f;
          sb[lane] = in ? a.s[b] : 0.0f;
        }
      }
  return {yb.data(), zb.data(), db.data(), sb.data()};
}

/// Byte offsets in a block of the quants and of Q5's qh (after d, m when there is one).
template <class B>
inline constexpr int qh_offset = has_min<B> ? 4 : 2;
template <class B>
inline constexpr int qs_offset = qh_offset<B> + (is_q5<B> ? 4 : 0);

/// Where chunk_quants' second load starts in a chunk (4 blocks): its last 16 bytes for Q4
/// (block 3's quants; a 16-byte load), its last 64 for Q5 (chunks of 88 / 96 bytes).
template <class B>
inline constexpr int second_load = 4 * static_cast<int>(sizeof(B)) - (is_q5<B> ? 64 : 16);

/// The index of byte `src` of a chunk in the two sources chunk_quants loads: bytes 0..63 and
/// the bytes from second_load on.
template <class B>
constexpr int chunk_source(int src) {
  return src < 64 ? src : 64 + src - second_load<B>;
}

/// Permutation indices (VPERMT2B: 0..63 from the first source, 64..127 from the second).
using perm_index = std::array<std::uint8_t, 64>;

/// Four blocks' 16 quant bytes, block j at bytes 16j.
template <class B>
constexpr perm_index quant_index() {
  perm_index ix{};
  for (int i = 0; i < 64; ++i)
    ix[i] = static_cast<std::uint8_t>(
        chunk_source<B>(static_cast<int>(sizeof(B)) * (i / 16) + qs_offset<B> + i % 16));
  return ix;
}

/// Q5: the four blocks' d words at bytes 0..7, m words at 8..15 (Q5_1), qh low words (fifth
/// bits of elements 0..15) at 16..23 and qh high words at 24..31: the chunk's "scale" vector.
template <class B>
constexpr perm_index q5_meta_index() {
  perm_index ix{};
  for (int i = 0; i < 32; ++i) {
    const int part = i / 8, j = (i % 8) / 2, h = i % 2;
    const int off = part == 0 ? 0 : part == 1 ? 2 : qh_offset<B> + 2 * (part - 2);
    ix[i] = static_cast<std::uint8_t>(chunk_source<B>(static_cast<int>(sizeof(B)) * j + off + h));
  }
  return ix;
}

/// Byte distance of two blocks' scales in chunk_quants' scale vector, and where m starts.
template <class B>
inline constexpr int scale_stride = is_q5<B> ? 2 : static_cast<int>(sizeof(B));
template <class B>
inline constexpr int min_offset = is_q5<B> ? 8 : 2;

/// The f16 at byte Off + scale_stride * j of a chunk's scale vector, for block j, as 16 words
/// in lane order 4j + 2r + c (sources: the scale vectors of chunks 0 and 1 of one row; both
/// rows' lanes get that row's words, the other row's are blended in).
template <class B, int Off>
constexpr perm_index scale_index() {
  perm_index ix{};
  for (int i = 0; i < 64; ++i) {
    const int lane = (i / 2) % 16, j = lane / 4, c = lane % 2;
    ix[i] = static_cast<std::uint8_t>(64 * c + scale_stride<B> * j + Off + i % 2);
  }
  return ix;
}

template <class B>
struct rows2_index {
  static constexpr perm_index qs = quant_index<B>();
  static constexpr perm_index d = scale_index<B, 0>();
  static constexpr perm_index m = scale_index<B, min_offset<B>>();  // Q4_1's / Q5_1's min
  static constexpr perm_index meta = q5_meta_index<B>();
};

template <const perm_index& Ix>
TFM_ALWAYS_INLINE __m512i perm2(__m512i a, __m512i b) noexcept {
  return _mm512_permutex2var_epi8(a, _mm512_loadu_si512(Ix.data()), b);
}

/// The masks of a last, partial chunk of vb (1..3) blocks for its two loads (bytes 0..63 and
/// from second_load): the bytes of the valid blocks.
struct chunk_masks {
  __mmask64 first, last;
};

template <class B>
chunk_masks partial_chunk_masks(int vb) noexcept {
  const int valid = static_cast<int>(sizeof(B)) * vb;
  auto bits = [](int n) {
    n = std::clamp(n, 0, 64);
    return n == 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1;
  };
  return {bits(valid), bits(valid - second_load<B>)};
}

/// One row's chunk of four blocks at p: the unsigned lo / hi quant vectors and the scale
/// vector (the first 64 bytes for Q4, q5_meta_index's bytes for Q5). Full: four blocks; else
/// the bytes in `cm` (the valid blocks of a last, partial chunk).
template <class B, bool Full>
TFM_ALWAYS_INLINE void chunk_quants(const std::uint8_t* p, const chunk_masks& cm, __m512i& lo,
                                    __m512i& hi, __m512i& sc) noexcept {
  __m512i first, last;
  if constexpr (Full) {
    first = _mm512_loadu_si512(p);
    if constexpr (is_q5<B>)
      last = _mm512_loadu_si512(p + second_load<B>);
    else  // only bytes 0..15 are indexed
      last = _mm512_castsi128_si512(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + second_load<B>)));
  } else {
    first = _mm512_maskz_loadu_epi8(cm.first, p);
    last = _mm512_maskz_loadu_epi8(cm.last, p + second_load<B>);
  }
  const __m512i u = perm2<rows2_index<B>::qs>(first, last);
  lo = _mm512_and_si512(u, _mm512_set1_epi8(0x0F));
#if defined(__GFNI__)
  // bits 4..7 of each byte to bits 0..3: GF2P8AFFINEQB sets bit i of a byte to the parity of
  // (matrix byte 7 - i) & byte, so matrix bytes 7..4 are 1 << (i + 4), bytes 3..0 zero.
  hi = _mm512_gf2p8affine_epi64_epi8(u, _mm512_set1_epi64(0x1020408000000000LL), 0);
#else
  hi = _mm512_and_si512(_mm512_srli_epi16(u, 4), _mm512_set1_epi8(0x0F));
#endif
  if constexpr (is_q5<B>) {
    sc = perm2<rows2_index<B>::meta>(first, last);
    // bit 16j + k of the low / high qh words = the fifth bit of byte 16j + k of lo / hi
    const __m128i qh = _mm512_extracti32x4_epi32(sc, 1);
    const __m512i fifth = _mm512_set1_epi8(0x10);
    lo = _mm512_mask_add_epi8(lo, _cvtu64_mask64(static_cast<std::uint64_t>(_mm_cvtsi128_si64(qh))),
                              lo, fifth);
    hi = _mm512_mask_add_epi8(
        hi, _cvtu64_mask64(static_cast<std::uint64_t>(_mm_extract_epi64(qh, 1))), hi, fifth);
  } else {
    sc = first;
  }
}

/// Lane 4j + i (i < 4, 128-bit lane j) = the sum of the four lanes of 128-bit lane j of the
/// i-th argument: the block sums of four chunk vectors.
TFM_ALWAYS_INLINE __m512i reduce4(__m512i a, __m512i b, __m512i c, __m512i d) noexcept {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

/// The f16 at byte Off (+ scale_stride * block) of the eight blocks of both rows (sc[r][c]:
/// chunk_quants' scale vectors), as floats in lane order.
template <class B, int Off>
TFM_ALWAYS_INLINE __m512 rows2_scales(const __m512i (&sc)[2][2]) noexcept {
  static constexpr const perm_index& ix = Off == 0 ? rows2_index<B>::d : rows2_index<B>::m;
  const __m512i t0 = perm2<ix>(sc[0][0], sc[0][1]);
  const __m512i t1 = perm2<ix>(sc[1][0], sc[1][1]);
  const __m256i w =  // lanes 4j + 2 and 4j + 3 (words) from row 1
      _mm256_mask_blend_epi16(0xCCCC, _mm512_castsi512_si256(t0), _mm512_castsi512_si256(t1));
  return _mm512_cvtph_ps(w);
}

/// Group g of rows p0 and p1 (pointers to the group's first block) added into acc: eight
/// blocks when Full, else Chunks (1 or 2) chunks, the last one read with the masks cm when
/// `partial`.
template <class B, bool Full, int Chunks = 2>
TFM_ALWAYS_INLINE __m512 rows2_group(const std::uint8_t* p0, const std::uint8_t* p1, index_t g,
                                     bool partial, const chunk_masks& cm, const rows2_pack& pk,
                                     __m512 acc) noexcept {
  constexpr int bsz = static_cast<int>(sizeof(B));
  const std::int8_t* yg = pk.y + 256 * g;
  __m512i z[2][2], sc[2][2];
#pragma GCC unroll 2
  for (int c = 0; c < 2; ++c) {
    if (c >= Chunks) {
      z[0][c] = z[1][c] = sc[0][c] = sc[1][c] = _mm512_setzero_si512();
      continue;
    }
    const __m512i ylo = _mm512_loadu_si512(yg + 128 * c);
    const __m512i yhi = _mm512_loadu_si512(yg + 128 * c + 64);
    const __m512i z0 = _mm512_loadu_si512(pk.z0 + 32 * g + 16 * c);
    const bool whole = Full || c + 1 < Chunks || !partial;
#pragma GCC unroll 2
    for (int r = 0; r < 2; ++r) {
      __m512i lo, hi;
      const std::uint8_t* p = (r ? p1 : p0) + 4 * bsz * c;
      if (whole)
        chunk_quants<B, true>(p, cm, lo, hi, sc[r][c]);
      else
        chunk_quants<B, false>(p, cm, lo, hi, sc[r][c]);
      z[r][c] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z0, lo, ylo), hi, yhi);
    }
  }
  const __m512i sumi = reduce4(z[0][0], z[0][1], z[1][0], z[1][1]);
  const __m512 db = _mm512_mul_ps(rows2_scales<B, 0>(sc), _mm512_loadu_ps(pk.d + 16 * g));
  __m512 r = _mm512_fmadd_ps(db, _mm512_cvtepi32_ps(sumi), acc);
  if constexpr (has_min<B>)
    r = _mm512_fmadd_ps(rows2_scales<B, min_offset<B>>(sc), _mm512_loadu_ps(pk.s + 16 * g), r);
  return r;
}

/// Rows n0 .. n1 - 1, two at a time: row n0 + i with row n0 + h + i (h = half the range,
/// rounded up; an odd range computes its middle row twice), so that the weights are read as
/// two sequential streams. (Two adjacent rows interleaved measured up to 4x slower from DRAM
/// for 864-byte rows, as gemv_range found: the hardware prefetcher does not follow them.)
template <class B>
void gemv_rows2(index_t n0, index_t n1, index_t nb, const B* w, index_t ldw, const rows2_pack& pk,
                float* y, bool accumulate) noexcept {
  constexpr index_t bsz = static_cast<index_t>(sizeof(B)), gb = 8 * bsz;  // bytes per group
  const index_t full = nb / 8, h = (n1 - n0 + 1) / 2;
  const int rest = static_cast<int>(nb % 8);
  // the last chunk is partial when it holds 1..3 blocks
  const bool partial = rest % 4 != 0;
  const chunk_masks cm = partial ? partial_chunk_masks<B>(rest % 4) : chunk_masks{};
  for (index_t i = 0; i < h; ++i) {
    const index_t na = n0 + i, nb2 = n0 + h + i;
    const bool two = nb2 < n1;
    const auto* p0 = reinterpret_cast<const std::uint8_t*>(w + na * ldw);
    const auto* p1 = two ? reinterpret_cast<const std::uint8_t*>(w + nb2 * ldw) : p0;
    __m512 acc = _mm512_setzero_ps();
    for (index_t g = 0; g < full; ++g)
      acc = rows2_group<B, true>(p0 + gb * g, p1 + gb * g, g, false, cm, pk, acc);
    if (rest) {
      const std::uint8_t *q0 = p0 + gb * full, *q1 = p1 + gb * full;
      acc = rest <= 4 ? rows2_group<B, false, 1>(q0, q1, full, partial, cm, pk, acc)
                      : rows2_group<B, false, 2>(q0, q1, full, partial, cm, pk, acc);
    }
    // reduce_lanes per row: block-lane 4c + j is 128-bit lane j, element 2r + c, so
    // ((j0 + j1) + (j2 + j3)) per element, then element 2r + element 2r + 1.
    const __m512 a1 = _mm512_add_ps(acc, _mm512_shuffle_f32x4(acc, acc, 0xB1));  // j0+j1, j2+j3
    const __m128 a2 = _mm_add_ps(_mm512_castps512_ps128(a1), _mm512_extractf32x4_ps(a1, 2));
    const __m128 a3 = _mm_add_ps(a2, _mm_movehdup_ps(a2));  // rows 0 and 1 in elements 0 and 2
    const float v0 = _mm_cvtss_f32(a3), v1 = _mm_cvtss_f32(_mm_movehl_ps(a3, a3));
    y[na] = accumulate ? y[na] + v0 : v0;
    if (two) y[nb2] = accumulate ? y[nb2] + v1 : v1;
  }
}
#endif  // TFM_QDOT_ROWS2

#endif  // TFM_QDOT_AVX2

template <class B>
TFM_ALWAYS_INLINE float vec_dot(index_t nb, const B* w, const q8_row& a) noexcept {
#if TFM_QDOT_AVX2
  return vec_dot_simd(nb, w, a);
#else
  return vec_dot_scalar(nb, w, a);
#endif
}

template <class B>
void gemv_range(index_t n0, index_t n1, index_t nb, const B* w, index_t ldw, const q8_row& a,
                float* y, bool accumulate) noexcept {
  // One row at a time: the weights stream from DRAM, and two interleaved rows measured up to
  // 4x slower than one sequential stream for 576 x 1536 (bench/quant/RESULTS.md), as the f16
  // GEMV found (half_weights.hpp).
  for (index_t n = n0; n < n1; ++n) {
    const float v = vec_dot(nb, w + n * ldw, a);
    y[n] = accumulate ? y[n] + v : v;
  }
}

}  // namespace detail::qdot

/// Which kernel this translation unit uses: "avx512vnni" (512-bit block pairs), "avx512vnni-vl"
/// (256-bit VPDPBUSD without AVX512BW), "avx2" or "scalar".
constexpr const char* q8_dot_isa() noexcept {
#if TFM_QDOT_VNNI512
  return "avx512vnni";
#elif TFM_QDOT_VNNI
  return "avx512vnni-vl";
#elif TFM_QDOT_AVX2
  return "avx2";
#else
  return "scalar";
#endif
}

/// Quantizes rows x[m * ldx + k] (m < M, k < K, K a multiple of 32) into `a` (ggml's
/// quantize_row_q8_1_ref per row). Rows are split over threads for M > 1.
inline void quantize_activations(index_t M, index_t K, const float* x, index_t ldx,
                                 q8_activations& a) {
  detail::qdot::check_k("quantize_activations", M, 1, K);
  const std::size_t nb = static_cast<std::size_t>(K / 32);
  a.rows = M;
  a.cols = K;
  const std::size_t rows = static_cast<std::size_t>(M);
  // 256 spare bytes: the AVX-512 kernel's last group of a row reads the activations of eight
  // blocks (two at a time) starting at its first block.
  if (a.qs.size() < rows * static_cast<std::size_t>(K) + 256) a.qs.assign(rows * K + 256, 0);
  // 8 spare entries: the SIMD kernel's last group loads 8 lanes (see block_group).
  if (a.d.size() < rows * nb + 8) {
    a.d.assign(rows * nb + 8, 0.0f);
    a.s.assign(rows * nb + 8, 0.0f);
    a.sum.assign(rows * nb + 8, 0);
  }
  auto rows_ = [&](index_t m0, index_t m1) {
    for (index_t m = m0; m < m1; ++m) {
      const std::size_t i = static_cast<std::size_t>(m);
      detail::qdot::quantize_row(K, x + m * ldx, a.qs.data() + i * K, a.d.data() + i * nb,
                                 a.s.data() + i * nb, a.sum.data() + i * nb);
    }
  };
  const int nt = in_parallel() || M * K < (index_t(1) << 16) ? 1 : num_threads();
  if (nt == 1) return rows_(0, M);
  TFM_OMP(parallel for num_threads(nt) schedule(static))
  for (int p = 0; p < nt; ++p) rows_(M * p / nt, M * (p + 1) / nt);
}

/// sum_k W(k) Xq(k) for one packed row w (K / 32 blocks) and one activation row (contract above).
template <q8_dot_weight B>
float vec_dot_q8(index_t K, const B* w, const q8_row& a) {
  detail::qdot::check_k("vec_dot_q8", 1, 1, K);
  return detail::qdot::vec_dot(K / 32, w, a);
}

/// The scalar kernel whatever the ISA (the oracle of vec_dot_q8: same bits).
template <q8_dot_weight B>
float vec_dot_q8_scalar(index_t K, const B* w, const q8_row& a) {
  detail::qdot::check_k("vec_dot_q8_scalar", 1, 1, K);
  return detail::qdot::vec_dot_scalar(K / 32, w, a);
}

/// y[n] = W(n, :) . a (+ y[n] when accumulate), n < N; row n of W at w + n * ldw (blocks).
/// Rows are split over threads; each row's sum is computed by one thread.
template <q8_dot_weight B>
void gemv_q(index_t N, index_t K, const B* w, index_t ldw, const q8_row& a, float* y,
            bool accumulate = false) {
  detail::qdot::check_k("gemv_q", 1, N, K);
  const int nt = in_parallel() ? 1 : num_threads();
  const index_t nb = K / 32;
  // gemv_threads counts elements of a float matrix; a quantized one is ~4-8x fewer bytes.
#if TFM_QDOT_ROWS2
  if constexpr (detail::qdot::rows2_type<B>) {
    if (N == 0) return;
    const detail::qdot::rows2_pack pk = detail::qdot::make_rows2_pack<B>(nb, a);
    detail::gemv_parallel(N, 4, detail::gemv_threads(nt, N * K / 4), [&](index_t n0, index_t n1) {
      detail::qdot::gemv_rows2(n0, n1, nb, w, ldw, pk, y, accumulate);
    });
    return;
  }
#endif
  detail::gemv_parallel(N, 4, detail::gemv_threads(nt, N * K / 4), [&](index_t n0, index_t n1) {
    detail::qdot::gemv_range(n0, n1, nb, w, ldw, a, y, accumulate);
  });
}

/// y = W x from float x: x is quantized into `scratch` first (one row).
template <q8_dot_weight B>
void gemv_q(index_t N, index_t K, const B* w, index_t ldw, const float* x, float* y,
            q8_activations& scratch, bool accumulate = false) {
  quantize_activations(1, K, x, K, scratch);
  gemv_q(N, K, w, ldw, scratch.row(0), y, accumulate);
}

namespace detail {
/// The M > 1 driver of the integer-dot GEMMs (gemm_q_bt here, gemm_kq_bt in gemv_kq.hpp):
/// C(m, n) = dot(n, m) (+ C when accumulate), columns split over threads, activation rows
/// visited in tiles of 32 per weight row (they stay in L1/L2). Each element is one call, so the
/// result does not depend on the thread count.
template <class Dot>
void gemm_rows_by_dot(index_t M, index_t N, index_t K, float* C, index_t ldc, bool accumulate,
                      Dot&& dot) {
  const int nt = in_parallel() ? 1 : num_threads();
  constexpr index_t m_tile = 32;
  gemv_parallel(N, 16, gemv_threads(nt, M * N * K / 4), [&](index_t n0, index_t n1) {
    for (index_t m0 = 0; m0 < M; m0 += m_tile) {
      const index_t m1 = std::min(M, m0 + m_tile);
      for (index_t n = n0; n < n1; ++n)
        for (index_t m = m0; m < m1; ++m) {
          const float v = dot(n, m);
          float& c = C[m * ldc + n];
          c = accumulate ? c + v : v;
        }
    }
  });
}
}  // namespace detail

/// C(M, N) = Xq(A) W^T (+ C when accumulate): A (M x K floats, rows at A + m * lda) is
/// quantized once into `scratch`; W rows at w + n * ldw (blocks); C rows at C + m * ldc.
/// Columns of C are split over threads; each element is one vec_dot_q8.
template <q8_dot_weight B>
void gemm_q_bt(index_t M, index_t N, index_t K, const float* A, index_t lda, const B* w,
               index_t ldw, float* C, index_t ldc, q8_activations& scratch,
               bool accumulate = false) {
  detail::qdot::check_k("gemm_q_bt", M, N, K);
  if (M == 0 || N == 0) return;
  quantize_activations(M, K, A, lda, scratch);
  if (M == 1) {
    gemv_q(N, K, w, ldw, scratch.row(0), C, accumulate);
    return;
  }
  const index_t nb = K / 32;
  detail::gemm_rows_by_dot(M, N, K, C, ldc, accumulate, [&](index_t n, index_t m) {
    return detail::qdot::vec_dot(nb, w + n * ldw, scratch.row(m));
  });
}

/// True for the GGML types gemm_q_bt(type, ...) takes.
constexpr bool q8_dot_supported(ggml_type t) noexcept {
  return t == ggml_type::q4_0 || t == ggml_type::q4_1 || t == ggml_type::q5_0 ||
         t == ggml_type::q5_1 || t == ggml_type::q8_0;
}

/// gemm_q_bt with the weight type chosen at run time: W is N rows of `row_bytes` bytes (a
/// multiple of the block size, at least K / 32 blocks) at `w`, which must be aligned to 2
/// (GGUF tensor data is). An unsupported type -> tfm::unsupported_error.
inline void gemm_q_bt(ggml_type t, index_t M, index_t N, index_t K, const float* A, index_t lda,
                      const std::byte* w, std::size_t row_bytes, float* C, index_t ldc,
                      q8_activations& scratch, bool accumulate = false) {
  const ggml_type_info& info = ggml_type_info_of(t);
  if (!q8_dot_supported(t))
    fail(errc::unsupported, "tfm::cpu_kernels::gemm_q_bt: no integer-dot kernel for type ",
         ggml_type_name(t), " (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 are supported).");
  detail::qdot::check_k("gemm_q_bt", M, N, K);
  if (row_bytes % info.block_bytes != 0 ||
      row_bytes / info.block_bytes < static_cast<std::size_t>(K / 32))
    fail(errc::shape, "tfm::cpu_kernels::gemm_q_bt: rows of ", row_bytes, " bytes do not hold ",
         K / 32, " whole ", info.name, " blocks of ", info.block_bytes, " bytes.");
  const index_t ldw = static_cast<index_t>(row_bytes / info.block_bytes);
  auto run = [&]<class B>(const B*) {
    if constexpr (q8_dot_weight<B>)
      gemm_q_bt(M, N, K, A, lda, reinterpret_cast<const B*>(w), ldw, C, ldc, scratch, accumulate);
  };
  visit_weight_block(t, run);  // q8_dot_supported(t) was checked
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
