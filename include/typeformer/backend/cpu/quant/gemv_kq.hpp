// typeformer/backend/cpu/quant/gemv_kq.hpp
//
// WHAT THIS REPRESENTS
//   Products of a K-quant weight matrix W (N x K, rows of K / 256 super-blocks of Q2_K, Q3_K,
//   Q4_K, Q5_K or Q6_K: the GGUF tensor data) with float activations, the llama.cpp way: the
//   activations are quantized once per row to Q8_K (256 int8 quants, a binary32 scale and the 16
//   sums of 16 quants), and every super-block product is an integer dot product.
//
//     quantize_activations_q8k(M, K, x, ldx, a)   x (M x K floats) -> a (q8k_activations)
//     vec_dot_q8k<B>(K, w_row, a.row(m))          one dot product sum_k W(n, k) * Xq(m, k)
//     gemv_kq<B>(N, K, w, ldw, a.row(0), y)       y[n] = W(n, :) . Xq(0, :)          (decode)
//     gemm_kq_bt<B>(M, N, K, A, lda, w, ldw, C, ldc, scratch)
//                                                 C(M, N) = Xq(A) W^T, A quantized once
//     gemm_kq_bt(type, ..., const std::byte* w, row_bytes, ...)   the type chosen at run time
//
//   B is one of block_q2_K, block_q3_K, block_q4_K, block_q5_K, block_q6_K (concept
//   q8k_dot_weight); ldw is the row stride of W in super-blocks (K / 256 for a dense tensor).
//
// CONTRACTS
//   - K must be a multiple of 256 (else tfm::shape_error); negative sizes -> tfm::value_error.
//   - Activation quantization gives the bytes of quantize_block(x, block_q8_K&) (ggml's
//     quantize_row_q8_K_ref) for finite x, so |q| <= 127 and bsums are the sums of the quants.
//   - Per super-block b the weight is x = dW * s_i * q - dminW * m_i (Q2_K, Q4_K, Q5_K: s_i, m_i
//     the unsigned sub-block scale and min, q >= 0) or x = dW * s_i * q (Q3_K: s_i = sc - 32,
//     q in [-4, 3]; Q6_K: s_i = int8 scale, q in [-32, 31]). Two exact int32 sums are formed:
//       sumi_b = sum_i s_i * sum_{l in i} q_l * y_l       (the offsets -4 / -32 of Q3_K / Q6_K
//                                                          through bsums: sum (u - o) y =
//                                                          sum u y - o * bsum)
//       summ_b = sum_i m_i * (sum of the activation quants of sub-block i, from bsums)
//     and combined in binary32, one super-block after the other, into one accumulator:
//       acc = fma(dA_b * f32(dW_b), f32(sumi_b), acc)
//       acc = fma(-(dA_b * f32(dminW_b)), f32(summ_b), acc)      (formats with mins)
//     starting from acc = 0; the result is acc. Every ISA path (AVX-512 VNNI VPDPWSSD, AVX2
//     VPMADDUBSW + VPMADDWD, scalar) computes the same integers and runs this same float code, so
//     all give the same bits; each output is computed by one thread, so results do not depend
//     on the thread count. (llama.cpp's ggml_vec_dot_q4_K_q8_K etc. compute the same integer
//     sums; its float order differs, so results agree with it to rounding, not bitwise.)
//   - The integer sums cannot overflow: |sumi_b| <= 16 * 16 * 63 * 127 * 128 < 2^31 (Q6_K, the
//     widest), the VPMADDUBSW pairs stay below 2 * 63 * 127 < 2^15.
//   - ISA: intrinsics under #if, chosen at compile time for the whole translation unit (the
//     macros of gemv_q.hpp): with AVX-512 VNNI + BW, 64 quants per VPMADDUBSW + VPDPWSSD for
//     Q4_K, Q5_K, Q6_K (the 256-bit form for Q2_K, Q3_K); with VNNI + VL only, VPDPWSSD on
//     256-bit vectors; else AVX2 + FMA + F16C (VPMADDUBSW + VPMADDWD); else scalar (any other
//     ISA). The narrower forms are compiled too (kq_form; tests compare each with the scalar).
//   - Non-finite activations give a defined but meaningless result (no check on the hot path);
//     weights are used as stored (NaN/Inf scales propagate).
//   Sources: ggml/src/ggml-cpu/arch/x86/quants.c (ggml_vec_dot_q2_K_q8_K ... q6_K_q8_K: the
//   bsums trick for the mins and offsets, the 12-byte scale unpacking of Q4_K/Q5_K),
//   ggml/src/ggml-quants.c (quantize_row_q8_K_ref), ggml-common.h (block layouts); Intel
//   intrinsics guide for VPMADDUBSW, VPMADDWD, VPDPWSSD.
#pragma once

#include "typeformer/backend/cpu/gemm/gemv.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// The K-quant weight blocks with an integer dot product against Q8_K activations.
template <class B>
concept q8k_dot_weight = std::is_same_v<B, block_q2_K> || std::is_same_v<B, block_q3_K> ||
    std::is_same_v<B, block_q4_K> || std::is_same_v<B, block_q5_K> || std::is_same_v<B, block_q6_K>;

/// M rows of K activations quantized to Q8_K (K / 256 blocks per row). Reused between calls:
/// quantize_activations_q8k only grows the buffer.
struct q8k_activations {
  index_t rows = 0, cols = 0;
  std::vector<block_q8_K> blocks;

  index_t blocks_per_row() const noexcept { return cols / 256; }
  const block_q8_K* row(index_t m) const noexcept {
    return blocks.data() + static_cast<std::size_t>(m) * static_cast<std::size_t>(cols / 256);
  }
};

namespace detail::kqdot {

inline void check_k(const char* who, index_t M, index_t N, index_t K) {
  if (M < 0 || N < 0 || K < 0)
    fail(errc::value, "tfm::cpu_kernels::", who, ": negative size (M ", M, ", N ", N, ", K ", K,
         ").");
  if (K % 256 != 0)
    fail(errc::shape, "tfm::cpu_kernels::", who, ": K = ", K,
         " is not a multiple of the 256-value K-quant super-block.");
}

// ---- activation quantization ------------------------------------------------------------------

#if TFM_QDOT_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__)
/// quantize_block(x, block_q8_K&) with AVX-512, the same bytes for finite x: the first element of
/// largest |x| gives iscale = -127 / x, q = min(127, nearest_int(iscale * x)) with ggml's
/// 1.5 * 2^23 bias read as bits, d = 1 / iscale.
inline void quantize_q8k_block(const float* x, block_q8_K& b) noexcept {
  __m512 v[16];
  __m512 amax = _mm512_setzero_ps();
  for (int i = 0; i < 16; ++i) {
    v[i] = _mm512_loadu_ps(x + 16 * i);
    amax = _mm512_max_ps(amax, _mm512_abs_ps(v[i]));
  }
  const float am = _mm512_reduce_max_ps(amax);
  if (!(am > 0.0f)) {
    std::memset(&b, 0, sizeof b);
    return;
  }
  float mx = 0.0f;
  for (int i = 0; i < 16; ++i) {
    const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_abs_ps(v[i]), _mm512_set1_ps(am), _CMP_EQ_OQ);
    if (hit != 0) {
      mx = x[16 * i + __builtin_ctz(static_cast<unsigned>(hit))];
      break;
    }
  }
  const float iscale = -127.0f / mx;
  const __m512 is = _mm512_set1_ps(iscale), bias = _mm512_set1_ps(12582912.0f);
  for (int i = 0; i < 16; ++i) {
    __m512 p = _mm512_mul_ps(is, v[i]);
#if defined(__GNUC__)
    __asm__("" : "+v"(p));  // no FMA contraction with the bias addition (the reference rounds)
#endif
    const __m512i bits = _mm512_castps_si512(_mm512_add_ps(p, bias));
    __m512i q = _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007FFFFF)),
                                 _mm512_set1_epi32(0x00400000));
    q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(b.qs + 16 * i), _mm512_cvtepi32_epi8(q));
    b.bsums[i] = static_cast<std::int16_t>(_mm512_reduce_add_epi32(q));
  }
  b.d = 1.0f / iscale;
}
#else
inline void quantize_q8k_block(const float* x, block_q8_K& b) noexcept { quantize_block(x, b); }
#endif

// ---- scales -------------------------------------------------------------------------------------

/// Q4_K/Q5_K: the eight 6-bit scales (sc) and mins (m) as bytes, from the 12 packed bytes (the
/// layout of dequantize.hpp's scale_min_k4, four sub-blocks per 32-bit word).
TFM_ALWAYS_INLINE void unpack_scale_min(const std::uint8_t* s12, std::uint8_t* sc,
                                        std::uint8_t* m) noexcept {
  std::uint32_t w[3];
  std::memcpy(w, s12, 12);
  const std::uint32_t sc_lo = w[0] & 0x3F3F3F3Fu, m_lo = w[1] & 0x3F3F3F3Fu;
  const std::uint32_t sc_hi = (w[2] & 0x0F0F0F0Fu) | ((w[0] >> 2) & 0x30303030u);
  const std::uint32_t m_hi = ((w[2] >> 4) & 0x0F0F0F0Fu) | ((w[1] >> 2) & 0x30303030u);
  std::memcpy(sc, &sc_lo, 4);
  std::memcpy(sc + 4, &sc_hi, 4);
  std::memcpy(m, &m_lo, 4);
  std::memcpy(m + 4, &m_hi, 4);
}

/// Q3_K: the sixteen 6-bit scales minus 32 (dequantize.hpp's layout).
TFM_ALWAYS_INLINE void unpack_scales_q3(const std::uint8_t* s12, std::int8_t* sc) noexcept {
  for (int i = 0; i < 16; ++i) {
    const int lo = (s12[i % 8] >> (4 * (i / 8))) & 0x0F;
    const int hi = (s12[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    sc[i] = static_cast<std::int8_t>((lo | (hi << 4)) - 32);
  }
}

/// The two integer sums of one super-block (contract).
struct kq_sums {
  std::int32_t sumi = 0, summ = 0;
};

// ---- scalar integer sums (any ISA; the oracle of the SIMD ones)
// ----------------------------------

/// Q2_K / Q3_K / Q6_K element order: e = 128h + 32s + l (h < 2, s < 4, l < 32), sub-block e / 16.
/// The unsigned quant u(h, s, l) of each element, summed per sub-block against the activations.
template <class U>
TFM_ALWAYS_INLINE void dots_by_plane(const block_q8_K& y, U&& u, std::int32_t* dots) noexcept {
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int t = 0; t < 2; ++t) {  // sub-block 8h + 2s + t: l = 16t .. 16t + 15
        const int e0 = 128 * h + 32 * s;
        std::int32_t dot = 0;  // in a register (a running dots[] entry would serialise on memory)
        for (int l = 16 * t; l < 16 * t + 16; ++l) dot += u(h, s, l) * y.qs[e0 + l];
        dots[8 * h + 2 * s + t] = dot;
      }
}

inline kq_sums sums_scalar(const block_q2_K& x, const block_q8_K& y) noexcept {
  std::int32_t dots[16];
  dots_by_plane(
      y, [&](int h, int s, int l) { return (x.qs[32 * h + l] >> (2 * s)) & 3; }, dots);
  kq_sums r;
  for (int i = 0; i < 16; ++i) {
    r.sumi += (x.scales[i] & 0x0F) * dots[i];
    r.summ += (x.scales[i] >> 4) * y.bsums[i];
  }
  return r;
}

inline kq_sums sums_scalar(const block_q3_K& x, const block_q8_K& y) noexcept {
  std::int8_t sc[16];
  unpack_scales_q3(x.scales, sc);
  std::int32_t dots[16];  // u = q + 4 in 0..7: the high bit set means no offset
  dots_by_plane(
      y,
      [&](int h, int s, int l) {
        return ((x.qs[32 * h + l] >> (2 * s)) & 3) | (((x.hmask[l] >> (4 * h + s)) & 1) << 2);
      },
      dots);
  kq_sums r;
  for (int i = 0; i < 16; ++i) r.sumi += sc[i] * (dots[i] - 4 * y.bsums[i]);
  return r;
}

template <bool Fifth, class B>
inline kq_sums sums_scalar_q45(const B& x, const block_q8_K& y) noexcept {
  std::uint8_t sc[8], m[8];
  unpack_scale_min(x.scales, sc, m);
  kq_sums r;
  for (int k = 0; k < 8; ++k) {
    const int c = k / 2, t = k % 2;
    std::int32_t dot = 0;
    for (int l = 0; l < 32; ++l) {
      int q = (x.qs[32 * c + l] >> (4 * t)) & 0x0F;
      if constexpr (Fifth) q |= ((x.qh[l] >> k) & 1) << 4;
      dot += q * y.qs[32 * k + l];
    }
    r.sumi += sc[k] * dot;
    r.summ += m[k] * (y.bsums[2 * k] + y.bsums[2 * k + 1]);
  }
  return r;
}
inline kq_sums sums_scalar(const block_q4_K& x, const block_q8_K& y) noexcept {
  return sums_scalar_q45<false>(x, y);
}
inline kq_sums sums_scalar(const block_q5_K& x, const block_q8_K& y) noexcept {
  return sums_scalar_q45<true>(x, y);
}

inline kq_sums sums_scalar(const block_q6_K& x, const block_q8_K& y) noexcept {
  std::int32_t dots[16];  // u = q + 32 in 0..63: low nibble from ql, bits 4..5 from qh
  dots_by_plane(
      y,
      [&](int h, int s, int l) {
        const int lo = (x.ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0F;
        return lo | (((x.qh[32 * h + l] >> (2 * s)) & 3) << 4);
      },
      dots);
  kq_sums r;
  for (int i = 0; i < 16; ++i) r.sumi += x.scales[i] * (dots[i] - 32 * y.bsums[i]);
  return r;
}

template <class B>
inline constexpr bool has_mins =
    std::is_same_v<B, block_q2_K> || std::is_same_v<B, block_q4_K> || std::is_same_v<B, block_q5_K>;

/// f16 -> binary32 (exact either way; VCVTPH2PS where F16C is enabled).
TFM_ALWAYS_INLINE float f32(f16 h) noexcept {
#if defined(__F16C__)
  return _cvtsh_ss(h.bits());
#else
  return static_cast<float>(h);
#endif
}

/// The contract's float step for super-block (x, y): shared by every path.
template <class B>
TFM_ALWAYS_INLINE float combine(const B& x, const block_q8_K& y, kq_sums s, float acc) noexcept {
  acc = std::fma(y.d * f32(x.d), static_cast<float>(s.sumi), acc);
  if constexpr (has_mins<B>) acc = std::fma(-(y.d * f32(x.dmin)), static_cast<float>(s.summ), acc);
  return acc;
}

template <class B>
float vec_dot_scalar(index_t nb, const B* w, const block_q8_K* a) noexcept {
  float acc = 0.0f;
  for (index_t b = 0; b < nb; ++b) acc = combine(w[b], a[b], sums_scalar(w[b], a[b]), acc);
  return acc;
}

// ---- SIMD integer sums --------------------------------------------------------------------------

#if TFM_QDOT_AVX2

/// acc + the pairwise int32 sums of s (int16) * c (int16): VPDPWSSD or VPMADDWD + VPADDD.
template <bool Vnni>
TFM_ALWAYS_INLINE __m256i madd_acc(__m256i acc, __m256i s, __m256i c) noexcept {
#if TFM_QDOT_VNNI
  if constexpr (Vnni) return _mm256_dpwssd_epi32(acc, s, c);
#endif
  return _mm256_add_epi32(acc, _mm256_madd_epi16(s, c));
}

TFM_ALWAYS_INLINE std::int32_t hsum_i32(__m256i v) noexcept {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x55));
  return _mm_cvtsi128_si32(s);
}

/// {hsum(a), hsum(b)}.
TFM_ALWAYS_INLINE kq_sums hsum2_i32(__m256i a, __m256i b) noexcept {
  const __m256i h = _mm256_hadd_epi32(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_hadd_epi32(s, s);  // a b a b
  return {_mm_cvtsi128_si32(s), _mm_extract_epi32(s, 1)};
}

TFM_ALWAYS_INLINE __m256i sum4(const __m256i* a) noexcept {
  return _mm256_add_epi32(_mm256_add_epi32(a[0], a[1]), _mm256_add_epi32(a[2], a[3]));
}

TFM_ALWAYS_INLINE __m256i load256(const void* p) noexcept {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

/// Eight int8 scales s[0..7] (the low 8 bytes of s8) as int16 in both 128-bit halves.
TFM_ALWAYS_INLINE __m256i scales16x2(__m128i s8) noexcept {
  return _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(s8));
}

/// 16 int16 lanes: lanes 0..7 = s[i], lanes 8..15 = s[j] (i, j < 8; s16x2 from scales16x2): one
/// VPSHUFB once the loops are unrolled (i, j constant).
TFM_ALWAYS_INLINE __m256i scale_pair(__m256i s16x2, int i, int j) noexcept {
  const __m256i idx =
      _mm256_set_m128i(_mm_set1_epi16(static_cast<short>((2 * j) | (2 * j + 1) << 8)),
                       _mm_set1_epi16(static_cast<short>((2 * i) | (2 * i + 1) << 8)));
  return _mm256_shuffle_epi8(s16x2, idx);
}

template <bool Vnni, bool Fifth, class B>
TFM_ALWAYS_INLINE kq_sums sums_simd_q45(const B& x, const block_q8_K& y) noexcept {
  std::uint64_t sc, m;  // eight 6-bit scales / mins as bytes
  {
    std::uint8_t scb[8], mb[8];
    unpack_scale_min(x.scales, scb, mb);
    std::memcpy(&sc, scb, 8);
    std::memcpy(&m, mb, 8);
  }
  const __m256i sc16 = scales16x2(_mm_cvtsi64_si128(static_cast<long long>(sc)));  // no sign
  const __m128i m8 = _mm_cvtsi64_si128(static_cast<long long>(m));
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256i hbits;
  if constexpr (Fifth) hbits = load256(x.qh);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};  // four chains: VPDPWSSD's latency
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m256i v = load256(x.qs + 32 * c);
    __m256i lo = _mm256_and_si256(v, low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    if constexpr (Fifth) {
      const __m256i one = _mm256_set1_epi8(1);
      lo = _mm256_or_si256(
          lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c), one), 4));
      hi = _mm256_or_si256(
          hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c + 1), one), 4));
    }
    const __m256i slo = _mm256_maddubs_epi16(lo, load256(y.qs + 64 * c));
    const __m256i shi = _mm256_maddubs_epi16(hi, load256(y.qs + 64 * c + 32));
    acc[2 * c % 4] = madd_acc<Vnni>(acc[2 * c % 4], slo, scale_pair(sc16, 2 * c, 2 * c));
    acc[(2 * c + 1) % 4] =
        madd_acc<Vnni>(acc[(2 * c + 1) % 4], shi, scale_pair(sc16, 2 * c + 1, 2 * c + 1));
  }
  // Mins: m_k * (bsums[2k] + bsums[2k + 1]) with m duplicated into int16 pairs.
  const __m256i mm = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
  const __m256i mins = _mm256_madd_epi16(load256(y.bsums), mm);
  return hsum2_i32(sum4(acc), mins);
}

template <bool Vnni>
TFM_ALWAYS_INLINE kq_sums sums_simd(const block_q6_K& x, const block_q8_K& y) noexcept {
  const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
  const __m256i s_lo = scales16x2(s8), s_hi = scales16x2(_mm_unpackhi_epi64(s8, s8));
  const __m256i low4 = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(0x03);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};  // four chains: VPDPWSSD's latency
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i A = load256(x.ql + 64 * h), Bv = load256(x.ql + 64 * h + 32);
    const __m256i H = load256(x.qh + 32 * h);
    auto high = [&](int s) {
      return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2 * s), two), 4);
    };
    const __m256i q[4] = {
        _mm256_or_si256(_mm256_and_si256(A, low4), high(0)),
        _mm256_or_si256(_mm256_and_si256(Bv, low4), high(1)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(A, 4), low4), high(2)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(Bv, 4), low4), high(3))};
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const int g = 4 * h + s;  // elements 32g .. 32g + 31, sub-blocks 2g and 2g + 1
      acc[s] = madd_acc<Vnni>(acc[s], _mm256_maddubs_epi16(q[s], load256(y.qs + 32 * g)),
                              scale_pair(h ? s_hi : s_lo, 2 * s, 2 * s + 1));
    }
  }
  // The -32 offset: sum_i sc_i * 32 * bsums_i.
  const __m256i off = _mm256_madd_epi16(load256(y.bsums), _mm256_cvtepi8_epi16(s8));
  return {hsum_i32(_mm256_sub_epi32(sum4(acc), _mm256_slli_epi32(off, 5))), 0};
}

/// Q2_K / Q3_K: 2-bit planes; element e = 128h + 32s + l reads bits 2s..2s+1 of qs[32h + l].
template <bool Vnni>
TFM_ALWAYS_INLINE kq_sums sums_simd(const block_q2_K& x, const block_q8_K& y) noexcept {
  const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
  const __m128i sc = _mm_and_si128(s8, _mm_set1_epi8(0x0F));  // 4-bit scales: no sign issue
  const __m256i s_lo = scales16x2(sc), s_hi = scales16x2(_mm_unpackhi_epi64(sc, sc));
  const __m256i two = _mm256_set1_epi8(0x03);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};  // four chains: VPDPWSSD's latency
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i v = load256(x.qs + 32 * h);
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const int g = 4 * h + s;
      const __m256i q = _mm256_and_si256(_mm256_srli_epi16(v, 2 * s), two);
      acc[s] = madd_acc<Vnni>(acc[s], _mm256_maddubs_epi16(q, load256(y.qs + 32 * g)),
                              scale_pair(h ? s_hi : s_lo, 2 * s, 2 * s + 1));
    }
  }
  const __m256i mins = _mm256_madd_epi16(
      load256(y.bsums),
      _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s8, 4), _mm_set1_epi8(0x0F))));
  return hsum2_i32(sum4(acc), mins);
}

template <bool Vnni>
TFM_ALWAYS_INLINE kq_sums sums_simd(const block_q3_K& x, const block_q8_K& y) noexcept {
  // The sixteen 6-bit scales, four per 32-bit word (unpack_scales_q3's layout), minus 32.
  std::uint32_t a[3];
  std::memcpy(a, x.scales, 12);
  const std::uint32_t lo4 = 0x0F0F0F0Fu, lo2 = 0x03030303u;
  const __m128i s8 = _mm_sub_epi8(
      _mm_setr_epi32(static_cast<int>((a[0] & lo4) | ((a[2] & lo2) << 4)),
                     static_cast<int>((a[1] & lo4) | (((a[2] >> 2) & lo2) << 4)),
                     static_cast<int>(((a[0] >> 4) & lo4) | (((a[2] >> 4) & lo2) << 4)),
                     static_cast<int>(((a[1] >> 4) & lo4) | (((a[2] >> 6) & lo2) << 4))),
      _mm_set1_epi8(32));
  const __m256i s_lo = scales16x2(s8), s_hi = scales16x2(_mm_unpackhi_epi64(s8, s8));
  const __m256i two = _mm256_set1_epi8(0x03), one = _mm256_set1_epi8(1);
  const __m256i hm = load256(x.hmask);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};  // four chains: VPDPWSSD's latency
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i v = load256(x.qs + 32 * h);
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const int g = 4 * h + s;  // high bit of element 32g + l: bit g of hmask[l]
      const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, g), one), 2);
      const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2 * s), two), hb);
      acc[s] = madd_acc<Vnni>(acc[s], _mm256_maddubs_epi16(q, load256(y.qs + 32 * g)),
                              scale_pair(h ? s_hi : s_lo, 2 * s, 2 * s + 1));
    }
  }
  const __m256i off = _mm256_madd_epi16(load256(y.bsums), _mm256_cvtepi8_epi16(s8));
  return {hsum_i32(_mm256_sub_epi32(sum4(acc), _mm256_slli_epi32(off, 2))), 0};
}

template <bool Vnni>
TFM_ALWAYS_INLINE kq_sums sums_simd(const block_q4_K& x, const block_q8_K& y) noexcept {
  return sums_simd_q45<Vnni, false>(x, y);
}
template <bool Vnni>
TFM_ALWAYS_INLINE kq_sums sums_simd(const block_q5_K& x, const block_q8_K& y) noexcept {
  return sums_simd_q45<Vnni, true>(x, y);
}

template <bool Vnni, class B>
float vec_dot_simd(index_t nb, const B* w, const block_q8_K* a) noexcept {
  float acc = 0.0f;
  for (index_t b = 0; b < nb; ++b) acc = combine(w[b], a[b], sums_simd<Vnni>(w[b], a[b]), acc);
  return acc;
}

#if TFM_QDOT_VNNI512
// ---- 512-bit forms (Q4_K, Q5_K, Q6_K): 64 quants per VPMADDUBSW / VPDPWSSD -------------------

/// 32 int16 lanes: 128-bit lane L holds eight copies of s[i_L] (s16x4: eight int16 scales
/// s[0..7] in each 128-bit lane): one VPSHUFB once the indices are constants.
TFM_ALWAYS_INLINE __m512i scale_quad(__m512i s16x4, int i0, int i1, int i2, int i3) noexcept {
  auto pat = [](int i) {
    const int w = (2 * i) | (2 * i + 1) << 8;
    return w | w << 16;
  };
  const __m512i idx =
      _mm512_set_epi32(pat(i3), pat(i3), pat(i3), pat(i3), pat(i2), pat(i2), pat(i2), pat(i2),
                       pat(i1), pat(i1), pat(i1), pat(i1), pat(i0), pat(i0), pat(i0), pat(i0));
  return _mm512_shuffle_epi8(s16x4, idx);
}

/// The 32 bytes at p in both 256-bit halves.
TFM_ALWAYS_INLINE __m512i broadcast256(const void* p) noexcept {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
}

TFM_ALWAYS_INLINE __m256i fold512(__m512i v) noexcept {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

template <bool Fifth, class B>
TFM_ALWAYS_INLINE kq_sums sums_simd512_q45(const B& x, const block_q8_K& y) noexcept {
  std::uint64_t sc, m;
  {
    std::uint8_t scb[8], mb[8];
    unpack_scale_min(x.scales, scb, mb);
    std::memcpy(&sc, scb, 8);
    std::memcpy(&m, mb, 8);
  }
  const __m512i sc16 =
      _mm512_broadcast_i32x4(_mm_cvtepi8_epi16(_mm_cvtsi64_si128(static_cast<long long>(sc))));
  const __m128i m8 = _mm_cvtsi64_si128(static_cast<long long>(m));
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512i hbits;
  if constexpr (Fifth) hbits = broadcast256(x.qh);
  __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    // chunk c: low nibbles = sub-block 2c (lower half), high nibbles = 2c + 1 (upper half),
    // against the 64 contiguous activations of sub-blocks 2c, 2c + 1.
    const __m512i v = broadcast256(x.qs + 32 * c);
    __m512i q = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFFFF0000u, v, 4), low4);
    if constexpr (Fifth) {
      // bit k of qh[l] is the fifth bit of sub-block k's element l
      const __m512i bit =
          _mm512_set_epi64(0x0101010101010101LL << (2 * c + 1), 0x0101010101010101LL << (2 * c + 1),
                           0x0101010101010101LL << (2 * c + 1), 0x0101010101010101LL << (2 * c + 1),
                           0x0101010101010101LL << (2 * c), 0x0101010101010101LL << (2 * c),
                           0x0101010101010101LL << (2 * c), 0x0101010101010101LL << (2 * c));
      q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(hbits, bit), q, _mm512_set1_epi8(16));
    }
    const __m512i p = _mm512_maddubs_epi16(q, _mm512_loadu_si512(y.qs + 64 * c));
    acc[c % 2] =
        _mm512_dpwssd_epi32(acc[c % 2], p, scale_quad(sc16, 2 * c, 2 * c, 2 * c + 1, 2 * c + 1));
  }
  const __m256i mm = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
  const __m256i mins = _mm256_madd_epi16(load256(y.bsums), mm);
  return hsum2_i32(fold512(_mm512_add_epi32(acc[0], acc[1])), mins);
}

TFM_ALWAYS_INLINE kq_sums sums_simd512(const block_q4_K& x, const block_q8_K& y) noexcept {
  return sums_simd512_q45<false>(x, y);
}
TFM_ALWAYS_INLINE kq_sums sums_simd512(const block_q5_K& x, const block_q8_K& y) noexcept {
  return sums_simd512_q45<true>(x, y);
}

TFM_ALWAYS_INLINE kq_sums sums_simd512(const block_q6_K& x, const block_q8_K& y) noexcept {
  const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
  const __m512i s_lo = _mm512_broadcast_i32x4(_mm_cvtepi8_epi16(s8));
  const __m512i s_hi = _mm512_broadcast_i32x4(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(s8, s8)));
  const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    // ql[64h .. 64h + 63]: low nibbles = groups s = 0, 1 (elements 128h + 0 .. 63), high
    // nibbles = groups 2, 3; qh[32h + l] bits 2s, 2s + 1 = the high bits of group s.
    const __m512i v = _mm512_loadu_si512(x.ql + 64 * h);
    const __m512i hb = broadcast256(x.qh + 32 * h);
    const __m512i t = _mm512_mask_srli_epi16(hb, 0xFFFF0000u, hb, 2);  // [H | H >> 2]
    const __m512i q01 = _mm512_or_si512(_mm512_and_si512(v, low4),
                                        _mm512_and_si512(_mm512_slli_epi16(t, 4), bits45));
    const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4),
                                        _mm512_and_si512(t, bits45));
    const __m512i s16 = h ? s_hi : s_lo;  // sub-blocks 8h .. 8h + 7
    const __m512i p01 = _mm512_maddubs_epi16(q01, _mm512_loadu_si512(y.qs + 128 * h));
    const __m512i p23 = _mm512_maddubs_epi16(q23, _mm512_loadu_si512(y.qs + 128 * h + 64));
    acc[0] = _mm512_dpwssd_epi32(acc[0], p01, scale_quad(s16, 0, 1, 2, 3));
    acc[1] = _mm512_dpwssd_epi32(acc[1], p23, scale_quad(s16, 4, 5, 6, 7));
  }
  const __m256i off = _mm256_madd_epi16(load256(y.bsums), _mm256_cvtepi8_epi16(s8));
  const __m256i sum = fold512(_mm512_add_epi32(acc[0], acc[1]));
  return {hsum_i32(_mm256_sub_epi32(sum, _mm256_slli_epi32(off, 5))), 0};
}

/// The 512-bit form where there is one (Q4_K, Q5_K, Q6_K), else the 256-bit VNNI one.
template <class B>
float vec_dot_simd512(index_t nb, const B* w, const block_q8_K* a) noexcept {
  if constexpr (std::is_same_v<B, block_q2_K> || std::is_same_v<B, block_q3_K>) {
    return vec_dot_simd<true>(nb, w, a);
  } else {
    float acc = 0.0f;
    for (index_t b = 0; b < nb; ++b) acc = combine(w[b], a[b], sums_simd512(w[b], a[b]), acc);
    return acc;
  }
}
#endif  // TFM_QDOT_VNNI512

#endif  // TFM_QDOT_AVX2

template <class B>
TFM_ALWAYS_INLINE float vec_dot(index_t nb, const B* w, const block_q8_K* a) noexcept {
#if TFM_QDOT_VNNI512
  return vec_dot_simd512(nb, w, a);
#elif TFM_QDOT_VNNI
  return vec_dot_simd<true>(nb, w, a);
#elif TFM_QDOT_AVX2
  return vec_dot_simd<false>(nb, w, a);
#else
  return vec_dot_scalar(nb, w, a);
#endif
}

}  // namespace detail::kqdot

/// The forms of the K-quant kernel compiled in this translation unit, for tests: scalar always,
/// avx2 with AVX2 + FMA + F16C (256-bit VPMADDUBSW + VPMADDWD), vnni with AVX-512 VNNI + VL
/// (256-bit VPDPWSSD), vnni512 with AVX-512 VNNI + BW (512-bit for Q4_K, Q5_K, Q6_K; Q2_K and
/// Q3_K run the 256-bit vnni form). vec_dot_q8k uses the last one available.
enum class kq_form { scalar, avx2, vnni, vnni512 };

constexpr bool kq_form_available(kq_form f) noexcept {
  switch (f) {
    case kq_form::scalar:
      return true;
    case kq_form::avx2:
#if TFM_QDOT_AVX2
      return true;
#else
      return false;
#endif
    case kq_form::vnni:
#if TFM_QDOT_VNNI
      return true;
#else
      return false;
#endif
    case kq_form::vnni512:
#if TFM_QDOT_VNNI512
      return true;
#else
      return false;
#endif
  }
  return false;
}

/// Which form vec_dot_q8k uses: "avx512vnni", "avx512vnni-vl", "avx2" or "scalar".
constexpr const char* q8k_dot_isa() noexcept {
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

/// Quantizes rows x[m * ldx + k] (m < M, k < K, K a multiple of 256) into `a`: the bytes of
/// quantize_block(., block_q8_K&) for each 256 values. Rows are split over threads for M > 1.
inline void quantize_activations_q8k(index_t M, index_t K, const float* x, index_t ldx,
                                     q8k_activations& a) {
  detail::kqdot::check_k("quantize_activations_q8k", M, 1, K);
  const std::size_t nb = static_cast<std::size_t>(K / 256);
  a.rows = M;
  a.cols = K;
  if (a.blocks.size() < static_cast<std::size_t>(M) * nb)
    a.blocks.resize(static_cast<std::size_t>(M) * nb);
  auto rows_ = [&](index_t m0, index_t m1) {
    for (index_t m = m0; m < m1; ++m)
      for (std::size_t b = 0; b < nb; ++b)
        detail::kqdot::quantize_q8k_block(x + m * ldx + 256 * static_cast<index_t>(b),
                                          a.blocks[static_cast<std::size_t>(m) * nb + b]);
  };
  const int nt = in_parallel() || M * K < (index_t(1) << 16) ? 1 : num_threads();
  if (nt == 1) return rows_(0, M);
  TFM_OMP(parallel for num_threads(nt) schedule(static))
  for (int p = 0; p < nt; ++p) rows_(M * p / nt, M * (p + 1) / nt);
}

/// sum_k W(k) Xq(k) for one packed row w (K / 256 super-blocks) and one Q8_K row a (contract).
template <q8k_dot_weight B>
float vec_dot_q8k(index_t K, const B* w, const block_q8_K* a) {
  detail::kqdot::check_k("vec_dot_q8k", 1, 1, K);
  return detail::kqdot::vec_dot(K / 256, w, a);
}

/// vec_dot_q8k in a chosen form (kq_form_available(f) must hold, else tfm::unsupported_error):
/// every form gives the same bits.
template <q8k_dot_weight B>
float vec_dot_q8k(kq_form f, index_t K, const B* w, const block_q8_K* a) {
  detail::kqdot::check_k("vec_dot_q8k", 1, 1, K);
  const index_t nb = K / 256;
  if (f == kq_form::scalar) return detail::kqdot::vec_dot_scalar(nb, w, a);
#if TFM_QDOT_AVX2
  if (f == kq_form::avx2) return detail::kqdot::vec_dot_simd<false>(nb, w, a);
#endif
#if TFM_QDOT_VNNI
  if (f == kq_form::vnni) return detail::kqdot::vec_dot_simd<true>(nb, w, a);
#endif
#if TFM_QDOT_VNNI512
  if (f == kq_form::vnni512) return detail::kqdot::vec_dot_simd512(nb, w, a);
#endif
  fail(errc::unsupported, "tfm::cpu_kernels::vec_dot_q8k: that kernel form is not compiled in.");
}

/// y[n] = W(n, :) . a (+ y[n] when accumulate), n < N; row n of W at w + n * ldw (super-blocks),
/// a one Q8_K row of K / 256 blocks. Rows are split over threads; each row's sum is computed by
/// one thread.
template <q8k_dot_weight B>
void gemv_kq(index_t N, index_t K, const B* w, index_t ldw, const block_q8_K* a, float* y,
             bool accumulate = false) {
  detail::kqdot::check_k("gemv_kq", 1, N, K);
  const int nt = in_parallel() ? 1 : num_threads();
  const index_t nb = K / 256;
  detail::gemv_parallel(N, 4, detail::gemv_threads(nt, N * K / 4), [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) {
      const float v = detail::kqdot::vec_dot(nb, w + n * ldw, a);
      y[n] = accumulate ? y[n] + v : v;
    }
  });
}

/// C(M, N) = Xq(A) W^T (+ C when accumulate): A (M x K floats, rows at A + m * lda) quantized
/// once to Q8_K into `scratch`; W rows at w + n * ldw (super-blocks); C rows at C + m * ldc.
/// Columns of C are split over threads; each element is one vec_dot_q8k.
template <q8k_dot_weight B>
void gemm_kq_bt(index_t M, index_t N, index_t K, const float* A, index_t lda, const B* w,
                index_t ldw, float* C, index_t ldc, q8k_activations& scratch,
                bool accumulate = false) {
  detail::kqdot::check_k("gemm_kq_bt", M, N, K);
  if (M == 0 || N == 0) return;
  quantize_activations_q8k(M, K, A, lda, scratch);
  if (M == 1) {
    gemv_kq(N, K, w, ldw, scratch.row(0), C, accumulate);
    return;
  }
  const index_t nb = K / 256;
  detail::gemm_rows_by_dot(M, N, K, C, ldc, accumulate, [&](index_t n, index_t m) {
    return detail::kqdot::vec_dot(nb, w + n * ldw, scratch.row(m));
  });
}

/// True for the GGML types gemm_kq_bt(type, ...) takes.
constexpr bool q8k_dot_supported(ggml_type t) noexcept {
  return t == ggml_type::q2_K || t == ggml_type::q3_K || t == ggml_type::q4_K ||
         t == ggml_type::q5_K || t == ggml_type::q6_K;
}

/// gemm_kq_bt with the weight type chosen at run time: W is N rows of `row_bytes` bytes (whole
/// super-blocks, at least K / 256 of them) at `w`, aligned to 2 (GGUF tensor data is). An
/// unsupported type -> tfm::unsupported_error.
inline void gemm_kq_bt(ggml_type t, index_t M, index_t N, index_t K, const float* A, index_t lda,
                       const std::byte* w, std::size_t row_bytes, float* C, index_t ldc,
                       q8k_activations& scratch, bool accumulate = false) {
  const ggml_type_info& info = ggml_type_info_of(t);
  if (!q8k_dot_supported(t))
    fail(errc::unsupported, "tfm::cpu_kernels::gemm_kq_bt: no Q8_K integer-dot kernel for type ",
         ggml_type_name(t), " (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K are supported).");
  detail::kqdot::check_k("gemm_kq_bt", M, N, K);
  if (row_bytes % info.block_bytes != 0 ||
      row_bytes / info.block_bytes < static_cast<std::size_t>(K / 256))
    fail(errc::shape, "tfm::cpu_kernels::gemm_kq_bt: rows of ", row_bytes, " bytes do not hold ",
         K / 256, " whole ", info.name, " blocks of ", info.block_bytes, " bytes.");
  const index_t ldw = static_cast<index_t>(row_bytes / info.block_bytes);
  auto run = [&]<class B>(const B*) {
    if constexpr (q8k_dot_weight<B>)
      gemm_kq_bt(M, N, K, A, lda, reinterpret_cast<const B*>(w), ldw, C, ldc, scratch, accumulate);
  };
  visit_weight_block(t, run);  // q8k_dot_supported(t) was checked
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
