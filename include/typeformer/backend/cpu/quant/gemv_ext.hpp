// typeformer/backend/cpu/quant/gemv_ext.hpp
//
// WHAT THIS REPRESENTS
//   Fused dequantize + GEMV (decode, one activation row) for typeformer's own weight layouts
//   (quant/blocks.hpp: block_nf4, block_i4_g64, block_i4_g128). W is N rows of K / block blocks.
//
//     gemv_nf4(N, K, w, ldw, x, y)          y[n] = sum_k deq(W)(n, k) * x[k], float x: each
//                                           block's 64 codes go through a 16-entry table of
//                                           NF4 levels held in SIMD registers
//     gemv_i4g<B>(N, K, w, ldw, a, y)       INT4-g64 / g128 against 8-bit activations `a`
//                                           (gemv_q.hpp's q8_activations): integer dot products
//                                           per 32-value sub-block, as Q4_1 x Q8_1
//     gemv_ext(t, N, K, x, a, w, row_bytes, y)   the type chosen at run time
//   INT4-g32 is Q4_1 and INT8 per channel is Q8_0: gemv_q.hpp runs them.
//
// CONTRACTS
//   - K a multiple of the block (64 / 64 / 128; else tfm::shape_error); ldw the row stride in
//     blocks; accumulate adds into y.
//   - NF4 order (every ISA: AVX-512, AVX2 + FMA, scalar with std::fma; the same bits):
//       16 lanes l; per block b: p_l = 0; for c = 0..3: p_l = fma(L[q_{16c+l}], x_{64b+16c+l},
//       p_l); acc_l = fma(f32(d_b), p_l, acc_l); result = ((r_0 + r_1)) with r2_i = r4_i +
//       r4_{i+2}, r4_i = r8_i + r8_{i+4}, r8_i = acc_i + acc_{i+8} (a fixed tree).
//     Element e = 16c + l of a block is nibble (c odd: high, even: low) of qs[16 (c / 2) + l].
//   - INT4-g order: sub-block s (32 values, s = 0 .. K/32 - 1) of group s / (g / 32):
//       sumi_s = sum_j q_j * xq_j (int32, exact); lane = s mod 8;
//       acc = fma(f32(d_g) * xd_s, float(sumi_s), acc); acc = fma(f32(m_g), xs_s, acc);
//       result = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
//     with xd_s, xs_s the activation block's scale and s-term (q8_row): the same bits as
//     gemv_q<block_q4_1> on the Q4_1 blocks that repeat each group's (d, m) (tests check it).
//   - Each output row is computed by one thread: results do not depend on the thread count.
//   - Non-finite inputs propagate (no checks on the hot path).
//   Sources: Dettmers et al. 2023 (arXiv:2305.14314) for NF4; gemv_q.hpp (activation quantizer,
//   nibble unpacking, u8 x s8 dot products, lane order), which this header reuses.
#pragma once

#include "typeformer/backend/cpu/gemm/gemv.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/nf4.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#endif

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

/// The INT4 group blocks of gemv_i4g.
template <class B>
concept i4_group_weight = std::is_same_v<B, block_i4_g64> || std::is_same_v<B, block_i4_g128>;

namespace detail::gemv_ext {

inline float reduce16(const float* a) noexcept {
  float r8[8], r4[4];
  for (int i = 0; i < 8; ++i) r8[i] = a[i] + a[i + 8];
  for (int i = 0; i < 4; ++i) r4[i] = r8[i] + r8[i + 4];
  return (r4[0] + r4[2]) + (r4[1] + r4[3]);
}

inline float dot_nf4_scalar(index_t nb, const block_nf4* w, const float* x) noexcept {
  float acc[16] = {};
  for (index_t b = 0; b < nb; ++b) {
    const block_nf4& blk = w[b];
    const float* xb = x + 64 * b;
    const float d = static_cast<float>(blk.d);
    for (int l = 0; l < 16; ++l) {
      float p = 0.0f;
      for (int c = 0; c < 4; ++c) {
        const std::uint8_t byte = blk.qs[16 * (c / 2) + l];
        const int q = (c % 2) != 0 ? byte >> 4 : byte & 0x0F;
        p = std::fma(nf4_levels[static_cast<std::size_t>(q)], xb[16 * c + l], p);
      }
      acc[l] = std::fma(d, p, acc[l]);
    }
  }
  return reduce16(acc);
}

#if defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
inline float dot_nf4_simd(index_t nb, const block_nf4* w, const float* x) noexcept {
  const __m512 lut = _mm512_loadu_ps(nf4_levels.data());
  __m512 acc = _mm512_setzero_ps();
  for (index_t b = 0; b < nb; ++b) {
    const block_nf4& blk = w[b];
    const float* xb = x + 64 * b;
    // VPERMPS reads the low 4 bits of each index: the low nibble needs no mask.
    const __m512i i0 =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs)));
    const __m512i i2 =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs + 16)));
    __m512 p =
        _mm512_fmadd_ps(_mm512_permutexvar_ps(i0, lut), _mm512_loadu_ps(xb), _mm512_setzero_ps());
    p = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(i0, 4), lut),
                        _mm512_loadu_ps(xb + 16), p);
    p = _mm512_fmadd_ps(_mm512_permutexvar_ps(i2, lut), _mm512_loadu_ps(xb + 32), p);
    p = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(i2, 4), lut),
                        _mm512_loadu_ps(xb + 48), p);
    acc = _mm512_fmadd_ps(_mm512_set1_ps(static_cast<float>(blk.d)), p, acc);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc);
  return reduce16(lanes);
}
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
/// 16-entry lookup from two 8-entry halves, chosen by bit 3 of the index.
TFM_ALWAYS_INLINE __m256 lut16(__m256 lo, __m256 hi, __m256i idx) noexcept {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

inline float dot_nf4_simd(index_t nb, const block_nf4* w, const float* x) noexcept {
  const __m256 lo = _mm256_loadu_ps(nf4_levels.data()), hi = _mm256_loadu_ps(nf4_levels.data() + 8);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();  // lanes 0..7, 8..15
  for (index_t b = 0; b < nb; ++b) {
    const block_nf4& blk = w[b];
    const float* xb = x + 64 * b;
    __m256 p0 = _mm256_setzero_ps(), p1 = _mm256_setzero_ps();
    for (int h = 0; h < 2; ++h) {  // bytes 16h .. 16h + 15: groups c = 2h (low), 2h + 1 (high)
      const std::uint8_t* qs = blk.qs + 16 * h;
      const __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs)));
      const __m256i c =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8)));
      const float* xl = xb + 32 * h;
      p0 = _mm256_fmadd_ps(lut16(lo, hi, a), _mm256_loadu_ps(xl), p0);
      p1 = _mm256_fmadd_ps(lut16(lo, hi, c), _mm256_loadu_ps(xl + 8), p1);
      p0 = _mm256_fmadd_ps(lut16(lo, hi, _mm256_srli_epi32(a, 4)), _mm256_loadu_ps(xl + 16), p0);
      p1 = _mm256_fmadd_ps(lut16(lo, hi, _mm256_srli_epi32(c, 4)), _mm256_loadu_ps(xl + 24), p1);
    }
    const __m256 d = _mm256_set1_ps(static_cast<float>(blk.d));
    acc0 = _mm256_fmadd_ps(d, p0, acc0);
    acc1 = _mm256_fmadd_ps(d, p1, acc1);
  }
  alignas(32) float lanes[16];
  _mm256_store_ps(lanes, acc0);
  _mm256_store_ps(lanes + 8, acc1);
  return reduce16(lanes);
}
#else
inline float dot_nf4_simd(index_t nb, const block_nf4* w, const float* x) noexcept {
  return dot_nf4_scalar(nb, w, x);
}
#endif

/// Sub-blocks (of 32) per group block.
template <class B>
inline constexpr index_t sub_blocks = static_cast<index_t>(block_traits<B>::block_elements) / 32;

/// The contract's per-sub-block step (scalar), sub-block s of the row w.
template <class B>
TFM_ALWAYS_INLINE void i4_step_scalar(const B* w, const q8_row& a, index_t s, float& acc) noexcept {
  const B& g = w[s / sub_blocks<B>];
  const std::uint8_t* qs = g.qs + 16 * (s % sub_blocks<B>);
  const std::int8_t* y = a.qs + 32 * s;
  std::int32_t sumi = 0;
  for (int j = 0; j < 16; ++j) sumi += (qs[j] & 0x0F) * y[j] + (qs[j] >> 4) * y[j + 16];
  const float db = static_cast<float>(g.d) * a.d[s];
  acc = std::fma(db, static_cast<float>(sumi), acc);
  acc = std::fma(static_cast<float>(g.m), a.s[s], acc);
}

template <class B>
float dot_i4_scalar(index_t ns, const B* w, const q8_row& a) noexcept {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (index_t s = 0; s < ns; ++s) i4_step_scalar(w, a, s, acc[s % 8]);
  return qdot::reduce_lanes(acc);
}

#if TFM_QDOT_AVX2
template <class B>
float dot_i4_simd(index_t ns, const B* w, const q8_row& a) noexcept {
  constexpr index_t S = sub_blocks<B>;
  __m256 acc = _mm256_setzero_ps();
  index_t s0 = 0;
  for (; s0 + 8 <= ns; s0 += 8) {
    __m256i p[8];
    std::uint16_t dh[8], mh[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const index_t s = s0 + i;
      const B& g = w[s / S];
      p[i] = qdot::dot_u8s8(qdot::nibbles32(g.qs + 16 * (s % S)),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * s)));
      dh[i] = g.d.bits();
      mh[i] = g.m.bits();
    }
    const __m256i sumi = qdot::hsum8x8(p);
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dh)));
    const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mh)));
    const __m256 db = _mm256_mul_ps(d, _mm256_loadu_ps(a.d + s0));
    acc = _mm256_fmadd_ps(db, _mm256_cvtepi32_ps(sumi), acc);
    acc = _mm256_fmadd_ps(m, _mm256_loadu_ps(a.s + s0), acc);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  for (index_t s = s0; s < ns; ++s) i4_step_scalar(w, a, s, lanes[s % 8]);
  return qdot::reduce_lanes(lanes);
}
#else
template <class B>
float dot_i4_simd(index_t ns, const B* w, const q8_row& a) noexcept {
  return dot_i4_scalar(ns, w, a);
}
#endif

inline void check(const char* who, index_t N, index_t K, index_t block) {
  if (N < 0 || K < 0)
    fail(errc::value, "tfm::cpu_kernels::", who, ": negative size (N ", N, ", K ", K, ").");
  if (K % block != 0)
    fail(errc::shape, "tfm::cpu_kernels::", who, ": K = ", K, " is not a multiple of the ", block,
         "-value block.");
}

}  // namespace detail::gemv_ext

/// sum_k deq(w)(k) * x[k] for one NF4 row of K values (the contract's order).
inline float vec_dot_nf4(index_t K, const block_nf4* w, const float* x) {
  detail::gemv_ext::check("vec_dot_nf4", 1, K, 64);
  return detail::gemv_ext::dot_nf4_simd(K / 64, w, x);
}
/// The scalar kernel whatever the ISA (the same bits).
inline float vec_dot_nf4_scalar(index_t K, const block_nf4* w, const float* x) {
  detail::gemv_ext::check("vec_dot_nf4_scalar", 1, K, 64);
  return detail::gemv_ext::dot_nf4_scalar(K / 64, w, x);
}

/// y[n] = deq(W)(n, :) . x (+ y[n]), W rows at w + n * ldw (blocks).
inline void gemv_nf4(index_t N, index_t K, const block_nf4* w, index_t ldw, const float* x,
                     float* y, bool accumulate = false) {
  detail::gemv_ext::check("gemv_nf4", N, K, 64);
  const int nt = in_parallel() ? 1 : num_threads();
  const index_t nb = K / 64;
  detail::gemv_parallel(N, 4, detail::gemv_threads(nt, N * K / 4), [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) {
      const float v = detail::gemv_ext::dot_nf4_simd(nb, w + n * ldw, x);
      y[n] = accumulate ? y[n] + v : v;
    }
  });
}

/// sum_k W(k) Xq(k) for one INT4-group row (the contract's order).
template <i4_group_weight B>
float vec_dot_i4g(index_t K, const B* w, const q8_row& a) {
  detail::gemv_ext::check("vec_dot_i4g", 1, K,
                          static_cast<index_t>(block_traits<B>::block_elements));
  return detail::gemv_ext::dot_i4_simd(K / 32, w, a);
}
template <i4_group_weight B>
float vec_dot_i4g_scalar(index_t K, const B* w, const q8_row& a) {
  detail::gemv_ext::check("vec_dot_i4g_scalar", 1, K,
                          static_cast<index_t>(block_traits<B>::block_elements));
  return detail::gemv_ext::dot_i4_scalar(K / 32, w, a);
}

/// y[n] = W(n, :) . Xq (+ y[n]); `a` from quantize_activations(1, K, x, K, scratch).row(0).
template <i4_group_weight B>
void gemv_i4g(index_t N, index_t K, const B* w, index_t ldw, const q8_row& a, float* y,
              bool accumulate = false) {
  detail::gemv_ext::check("gemv_i4g", N, K, static_cast<index_t>(block_traits<B>::block_elements));
  const int nt = in_parallel() ? 1 : num_threads();
  const index_t ns = K / 32;
  detail::gemv_parallel(N, 4, detail::gemv_threads(nt, N * K / 4), [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n) {
      const float v = detail::gemv_ext::dot_i4_simd(ns, w + n * ldw, a);
      y[n] = accumulate ? y[n] + v : v;
    }
  });
}

/// True for the types gemv_ext takes (TFM_NF4, TFM_I4_G64, TFM_I4_G128).
constexpr bool gemv_ext_supported(ggml_type t) noexcept {
  return t == ggml_type::tfm_nf4 || t == ggml_type::tfm_i4_g64 || t == ggml_type::tfm_i4_g128;
}
/// True when gemv_ext reads 8-bit activations (the INT4 groups) rather than float x (NF4).
constexpr bool gemv_ext_uses_q8(ggml_type t) noexcept {
  return t == ggml_type::tfm_i4_g64 || t == ggml_type::tfm_i4_g128;
}

/// y = W x (+ y) with the type chosen at run time: W is N rows of row_bytes bytes (whole blocks,
/// at least K / block of them) at w, aligned to 2. NF4 reads x; the INT4 groups read `a`
/// (x quantized by quantize_activations; ignored for NF4, may be null then).
inline void gemv_ext(ggml_type t, index_t N, index_t K, const float* x, const q8_row* a,
                     const std::byte* w, std::size_t row_bytes, float* y, bool accumulate = false) {
  if (!gemv_ext_supported(t))
    fail(errc::unsupported, "tfm::cpu_kernels::gemv_ext: no kernel for type ", ggml_type_name(t),
         " (TFM_NF4, TFM_I4_G64, TFM_I4_G128 are supported).");
  const ggml_type_info& info = ggml_type_info_of(t);
  if (K < 0 || row_bytes % info.block_bytes != 0 ||
      row_bytes / info.block_bytes < static_cast<std::size_t>(K) / info.block_elements)
    fail(errc::shape, "tfm::cpu_kernels::gemv_ext: rows of ", row_bytes,
         " bytes do not hold K = ", K, " values of ", info.name, ".");
  if (gemv_ext_uses_q8(t) && a == nullptr)
    fail(errc::value, "tfm::cpu_kernels::gemv_ext: ", info.name,
         " needs the quantized activations.");
  const index_t ldw = static_cast<index_t>(row_bytes / info.block_bytes);
  visit_weight_block(t, [&]<class B>(const B*) {
    if constexpr (std::is_same_v<B, block_nf4>)
      gemv_nf4(N, K, reinterpret_cast<const block_nf4*>(w), ldw, x, y, accumulate);
    else if constexpr (i4_group_weight<B>)
      gemv_i4g(N, K, reinterpret_cast<const B*>(w), ldw, *a, y, accumulate);
  });
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
