// typeformer/backend/cpu/half_simd.hpp
//
// SIMD conversions between tfm::bf16 / tfm::f16 (core/half.hpp) and float batches, for fused
// elementwise expressions and bulk conversion; bitwise identical to the scalar conversions.
//   load_as_float<Arch>(p)      loads batch<float, Arch>::size halves (unaligned) as floats
//   store_from_float<Arch>(p,v) rounds a float batch to halves (unaligned)
//   convert(src, dst, n)        bulk half <-> float
// x86 uses F16C for f16 and integer shifts for bf16 when the target enables them; other targets
// (aarch64 NEON, plain SSE2) convert lane by lane with the scalar code.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"

#include <cstdint>

#include <xsimd/xsimd.hpp>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

TFM_BEGIN_NAMESPACE

// ---- vector helpers -----------------------------------------------------------------------------

/// Loads batch<float, Arch>::size bf16 values from p (no alignment needed) widened to float.
template <class Arch = xsimd::default_arch>
inline xsimd::batch<float, Arch> load_as_float(const bf16* p) noexcept {
  using B = xsimd::batch<float, Arch>;
  using R [[maybe_unused]] = typename B::register_type;
#if defined(__AVX512F__)
  if constexpr (sizeof(R) == 64) {
    // maskz forms: GCC 12 gives false -Wmaybe-uninitialized on the unmasked ones.
    const __mmask16 all = 0xFFFF;
    const __m512i w =
        _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return B(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, w, 16)));
  }
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(R) == 32) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return B(_mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
#endif
#if defined(__SSE2__)
  if constexpr (sizeof(R) == 16) {
    const __m128i w = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return B(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), w)));
  }
#endif
  alignas(64) float tmp[B::size];
  for (std::size_t i = 0; i < B::size; ++i) tmp[i] = static_cast<float>(p[i]);
  return B::load_aligned(tmp);
}

/// Loads batch<float, Arch>::size f16 values from p (no alignment needed) widened to float.
template <class Arch = xsimd::default_arch>
inline xsimd::batch<float, Arch> load_as_float(const f16* p) noexcept {
  using B = xsimd::batch<float, Arch>;
  using R [[maybe_unused]] = typename B::register_type;
#if defined(__AVX512F__)
  if constexpr (sizeof(R) == 64) {
    // maskz forms: GCC 12 gives false -Wmaybe-uninitialized on the unmasked ones.
    const __mmask16 all = 0xFFFF;
    return B(_mm512_maskz_cvtph_ps(all, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
  }
#endif
#if defined(__F16C__)
  if constexpr (sizeof(R) == 32) {
    return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  if constexpr (sizeof(R) == 16) {
    return B(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
#endif
  alignas(64) float tmp[B::size];
  for (std::size_t i = 0; i < B::size; ++i) tmp[i] = static_cast<float>(p[i]);
  return B::load_aligned(tmp);
}

/// Stores the lanes of v to p (no alignment needed) rounded to bf16 (nearest even, NaN kept).
template <class Arch = xsimd::default_arch>
inline void store_from_float(bf16* p, xsimd::batch<float, Arch> v) noexcept {
  using B = xsimd::batch<float, Arch>;
  using R [[maybe_unused]] = typename B::register_type;
#if defined(__AVX512F__)
  if constexpr (sizeof(R) == 64) {
    // maskz forms: GCC 12 gives false -Wmaybe-uninitialized on the unmasked ones.
    const __mmask16 all = 0xFFFF;
    const __m512 f = v;
    const __m512i x = _mm512_castps_si512(f);
    const __m512i hi = _mm512_maskz_srli_epi32(all, x, 16);
    const __m512i bias =
        _mm512_add_epi32(_mm512_and_si512(hi, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7FFF));
    const __m512i rounded = _mm512_maskz_srli_epi32(all, _mm512_add_epi32(x, bias), 16);
    const __m512i quiet = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
    const __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    const __m512i r = _mm512_mask_blend_epi32(nan, rounded, quiet);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_maskz_cvtepi32_epi16(all, r));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(R) == 32) {
    const __m256 f = v;
    const __m256i x = _mm256_castps_si256(f);
    const __m256i hi = _mm256_srli_epi32(x, 16);
    const __m256i bias =
        _mm256_add_epi32(_mm256_and_si256(hi, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7FFF));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
    const __m256i quiet = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
    // packus works per 128-bit lane: [r0..r3 r0..r3 | r4..r7 r4..r7]; gather quadwords 0 and 2.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
    return;
  }
#endif
  alignas(64) float tmp[B::size];
  v.store_aligned(tmp);
  for (std::size_t i = 0; i < B::size; ++i) p[i] = bf16(tmp[i]);
}

/// Stores the lanes of v to p (no alignment needed) rounded to f16 (nearest even, overflow to
/// Inf, exact subnormals, NaN kept).
template <class Arch = xsimd::default_arch>
inline void store_from_float(f16* p, xsimd::batch<float, Arch> v) noexcept {
  using B = xsimd::batch<float, Arch>;
  using R [[maybe_unused]] = typename B::register_type;
#if defined(__AVX512F__)
  if constexpr (sizeof(R) == 64) {
    // maskz forms: GCC 12 gives false -Wmaybe-uninitialized on the unmasked ones.
    const __mmask16 all = 0xFFFF;
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(p),
        _mm512_maskz_cvtps_ph(all, static_cast<__m512>(v), _MM_FROUND_TO_NEAREST_INT));
    return;
  }
#endif
#if defined(__F16C__)
  if constexpr (sizeof(R) == 32) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(static_cast<__m256>(v), _MM_FROUND_TO_NEAREST_INT));
    return;
  }
  if constexpr (sizeof(R) == 16) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                     _mm_cvtps_ph(static_cast<__m128>(v), _MM_FROUND_TO_NEAREST_INT));
    return;
  }
#endif
  alignas(64) float tmp[B::size];
  v.store_aligned(tmp);
  for (std::size_t i = 0; i < B::size; ++i) p[i] = f16(tmp[i]);
}

namespace detail {
template <class H>
inline void convert_to_float(const H* TFM_RESTRICT src, float* TFM_RESTRICT dst,
                             index_t n) noexcept {
  using B = xsimd::batch<float>;
  constexpr index_t w = static_cast<index_t>(B::size);
  index_t i = 0;
  for (; i + w <= n; i += w) load_as_float(src + i).store_unaligned(dst + i);
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
template <class H>
inline void convert_from_float(const float* TFM_RESTRICT src, H* TFM_RESTRICT dst,
                               index_t n) noexcept {
  using B = xsimd::batch<float>;
  constexpr index_t w = static_cast<index_t>(B::size);
  index_t i = 0;
  for (; i + w <= n; i += w) store_from_float(dst + i, B::load_unaligned(src + i));
  for (; i < n; ++i) dst[i] = H(src[i]);
}
}  // namespace detail

/// dst[i] = float(src[i]) for i in [0, n); src and dst must not overlap.
inline void convert(const bf16* src, float* dst, index_t n) noexcept {
  detail::convert_to_float(src, dst, n);
}
/// dst[i] = float(src[i]) for i in [0, n); src and dst must not overlap.
inline void convert(const f16* src, float* dst, index_t n) noexcept {
  detail::convert_to_float(src, dst, n);
}
/// dst[i] = bf16(src[i]) for i in [0, n) (nearest even); src and dst must not overlap.
inline void convert(const float* src, bf16* dst, index_t n) noexcept {
  detail::convert_from_float(src, dst, n);
}
/// dst[i] = f16(src[i]) for i in [0, n) (nearest even); src and dst must not overlap.
inline void convert(const float* src, f16* dst, index_t n) noexcept {
  detail::convert_from_float(src, dst, n);
}

TFM_END_NAMESPACE
