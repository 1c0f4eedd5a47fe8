// typeformer/backend/cpu/simd.hpp
//
// WHAT THIS REPRESENTS
//   The small subset of xsimd that the cpu kernels use, with the differences between xsimd 8.1
//   (Debian 12) and xsimd >= 9 isolated here. Everything works on batch<float> and batch<double>
//   of xsimd::default_arch (the best ISA the compiler targets: AVX-512, AVX2+FMA, SSE2, NEON).
//
//   tfm::simd::batch<T>          the register type; batch<T>::size lanes
//   tfm::simd::width<T>          the same lane count as a constexpr int
//   load(p) / load_aligned(p)    read width<T> elements (load_aligned: p is sizeof(batch)-aligned)
//   store(p, v) / store_aligned  write width<T> elements
//   broadcast(x)                 every lane = x
//   fma(a, b, c)                 a * b + c (one rounding where the ISA has FMA)
//   reduce_add(v)                sum of the lanes in a fixed pairwise order
//   exp_nonpositive(v)           exp for arguments <= 0 (softmax, logsumexp, attention: x - max)
//   exp(v)                       exp over the whole range (the expressions' exp, sigmoid, silu,
//                                gelu); float on AVX-512 and AVX2, xsimd::exp otherwise
#pragma once

#include "typeformer/config/config.hpp"

#include <limits>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// A build for x86-64 without AVX2 runs the SSE2 paths, several times slower than AVX2/AVX-512:
// say so once per translation unit, with the fix (docs/packaging.md, "Fast by default").
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(__AVX2__) && !TFM_SILENCE_ISA_NOTE
#pragma message(                                                                              \
    "typeformer: this translation unit targets x86-64 without AVX2, so the cpu backend runs " \
    "its SSE2 code (several times slower). Link typeformer::native (CMake) or compile with "  \
    "-march=native (or -mavx2 -mfma); define TFM_SILENCE_ISA_NOTE=1 to hide this note.")
#endif

TFM_BEGIN_NAMESPACE

namespace simd {

template <class T>
using batch = xsimd::batch<T, xsimd::default_arch>;

template <class T>
inline constexpr int width = static_cast<int>(batch<T>::size);

template <class T>
TFM_ALWAYS_INLINE batch<T> load(const T* p) noexcept {
  return batch<T>::load_unaligned(p);
}
template <class T>
TFM_ALWAYS_INLINE batch<T> load_aligned(const T* p) noexcept {
  return batch<T>::load_aligned(p);
}
template <class T>
TFM_ALWAYS_INLINE void store(T* p, const batch<T>& v) noexcept {
  v.store_unaligned(p);
}
template <class T>
TFM_ALWAYS_INLINE void store_aligned(T* p, const batch<T>& v) noexcept {
  v.store_aligned(p);
}
template <class T>
TFM_ALWAYS_INLINE batch<T> broadcast(T x) noexcept {
  return batch<T>(x);
}
/// xsimd 8.1 has no AVX-512 fma: its generic fallback is a * b + c, which only GCC's
/// -ffp-contract=fast at -O2 fuses, so Clang and GCC -O1 builds rounded twice and the vector and
/// scalar (std::fma) paths of a kernel disagreed. The AVX-512 instruction is called directly.
template <class T>
TFM_ALWAYS_INLINE batch<T> fma(const batch<T>& a, const batch<T>& b, const batch<T>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (sizeof(batch<T>) == 64 && std::is_same_v<T, float>) {
    return batch<T>(_mm512_fmadd_ps(a, b, c));
  } else if constexpr (sizeof(batch<T>) == 64 && std::is_same_v<T, double>) {
    return batch<T>(_mm512_fmadd_pd(a, b, c));
  } else {
    return xsimd::fma(a, b, c);
  }
#else
  return xsimd::fma(a, b, c);
#endif
}
namespace reduce_detail {
#if defined(__GNUC__)
// The same tree on the register itself with GCC/Clang vector extensions: each level adds the
// upper half to the lower one (vextractf32x8 / vextractf128 / shuffles and one add each), where
// the store and scalar loop below stalled on store forwarding: 25-30 cycles a reduction, which
// the decode GEMV pays once per row (1x3072x768 NxK: 0.83 -> 1.0 of BLIS on a Zen 4).
template <class T, int N>
struct gvec_of {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <class T, int N>
using gvec = typename gvec_of<T, N>::type;

template <class T, int N, std::size_t... I>
TFM_ALWAYS_INLINE T tree(gvec<T, N> v, std::index_sequence<I...>) noexcept {
  if constexpr (N == 1) {
    return v[0];
  } else {
    const gvec<T, N / 2> lo = __builtin_shufflevector(v, v, static_cast<int>(I)...);
    const gvec<T, N / 2> hi = __builtin_shufflevector(v, v, static_cast<int>(I + N / 2)...);
    return tree<T, N / 2>(lo + hi, std::make_index_sequence<N / 4>{});
  }
}
#endif
}  // namespace reduce_detail

/// Pairwise tree over the lanes (lane i + h added to lane i, h = width/2, width/4, ..., 1): a
/// fixed order on every ISA, so every path that reduces a batch gets the same bits. Written
/// without xsimd::hadd / reduce_add, whose name changed in xsimd 9 and whose AVX-512 form trips
/// a GCC 12 -Wuninitialized false positive inside <immintrin.h> (_mm512_extractf64x4_pd).
template <class T>
TFM_ALWAYS_INLINE T reduce_add(const batch<T>& v) noexcept {
#if defined(__GNUC__)
  constexpr int n = width<T>;
  using reg = reduce_detail::gvec<T, n>;
  if constexpr (n > 1 && sizeof(reg) == sizeof(batch<T>)) {
    reg r;
    __builtin_memcpy(&r, &v, sizeof(reg));  // the batch is its register: a no-op
    return reduce_detail::tree<T, n>(r, std::make_index_sequence<n / 2>{});
  }
#endif
  alignas(sizeof(batch<T>)) T lanes[width<T>];
  v.store_aligned(lanes);
  for (int h = width<T> / 2; h >= 1; h /= 2)
    for (int i = 0; i < h; ++i) lanes[i] += lanes[i + h];
  return lanes[0];
}

namespace exp_detail {
// exp(r) on |r| <= ln2 / 2 as 1 + r + r^2 (c2 + c3 r + ... + c7 r^5): the Cephes expf
// coefficients (S. L. Moshier, Cephes Math Library, 1984-1992); with the two-part ln2 below the
// result is within 2 ulp of exp (tests/unit/rows/exp_test.cpp measures it over [-110, 0]).
inline constexpr float c7 = 1.9875691500e-4f, c6 = 1.3981999507e-3f, c5 = 8.3334519073e-3f,
                       c4 = 4.1665795894e-2f, c3 = 1.6666665459e-1f, c2 = 5.0000001201e-1f;
inline constexpr float log2e = 1.44269504088896341f;
inline constexpr float ln2_hi = 0.693359375f;     // 8 significant bits: n * ln2_hi is exact
inline constexpr float ln2_lo = -2.12194440e-4f;  // ln2 - ln2_hi

/// r = x - n ln2 (Cody-Waite, n = round(x log2 e)) and p = exp(r) for a batch of any ISA.
template <class B>
TFM_ALWAYS_INLINE B reduced_exp(const B& x, const B& n) noexcept {
  B r = simd::fma(n, B(-ln2_hi), x);
  r = simd::fma(n, B(-ln2_lo), r);
  B p = simd::fma(B(c7), r, B(c6));
  p = simd::fma(p, r, B(c5));
  p = simd::fma(p, r, B(c4));
  p = simd::fma(p, r, B(c3));
  p = simd::fma(p, r, B(c2));
  return simd::fma(p, r * r, r + B(1.0f));
}
#if defined(__AVX512F__)
/// exp(xc) for xc already clamped to [-110, 89] (or NaN): p * 2^n with scalef, which flushes to
/// 0 below the denormals and overflows to +inf above FLT_MAX. B: a 16-lane float batch.
template <class B>
TFM_ALWAYS_INLINE __m512 exp_clamped_avx512(__m512 xc) noexcept {
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(log2e)), _MM_FROUND_TO_NEAREST_INT);
  const __m512 p = reduced_exp(B(xc), B(n));
  return _mm512_scalef_ps(p, n);
}
#endif
}  // namespace exp_detail

/// exp(x) for x <= 0: no overflow path and no ldexp fix-up, because nothing above 0 reaches it
/// (10-15% faster than xsimd::exp on AVX-512 and AVX2 here: 0.13-0.16 against 0.15-0.18 ns per
/// float). Accuracy: within 2 ulp of exp where the result is a normal float (x >= ln FLT_MIN =
/// -87.34; 1.22 ulp measured); below that the result is 0 or a value under FLT_MIN (absolute
/// error < 1.2e-38). exp(-inf) = 0 exactly; NaN gives NaN. Every caller passes `x - max` or
/// `x - logsumexp`, which is <= 0 by construction (small positive rounding excesses are still
/// exact to 2 ulp). Other T, or an ISA without a specialised path, use xsimd::exp.
template <class T>
TFM_ALWAYS_INLINE batch<T> exp_nonpositive(const batch<T>& x) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && width<T> == 16) {
    using namespace exp_detail;
    // Clamping at -110 (2^-159: rounds to 0, below half the smallest denormal) keeps -inf out of
    // the reduction; max(lo, x) returns x when x is NaN (MAXPS returns its second operand).
    return batch<T>(exp_clamped_avx512<batch<T>>(_mm512_max_ps(_mm512_set1_ps(-110.0f), x)));
  }
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<T, float> && width<T> == 8) {
    using namespace exp_detail;
    // Clamped at ln(FLT_MIN) so that 2^n stays a normal float (n >= -126); below it: 0.
    const __m256 lo = _mm256_set1_ps(-87.3365447f);
    const __m256 xc = _mm256_max_ps(lo, x);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(log2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 p = reduced_exp(batch<T>(xc), batch<T>(n));
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return batch<T>(_mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y));
  }
#endif
  return xsimd::exp(x);
}

/// exp(x) over the whole range: exp_nonpositive's reduction and polynomial with the argument
/// clamped from above too, so that overflow comes out of the final scaling as +inf. Accuracy:
/// within 2 ulp of exp where the result is a normal float (tests/unit/rows/exp_test.cpp sweeps
/// [-110, 89]); exp(+inf) = +inf, exp(-inf) = 0, NaN gives NaN. exp(a)*b on 16 M floats, one
/// Zen 4 core (bench_expr): 0.78-0.84x of Eigen with xsimd::exp, 1.23-1.24x with this. Other T
/// or ISAs use xsimd::exp.
template <class T>
TFM_ALWAYS_INLINE batch<T> exp(const batch<T>& x) noexcept {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && width<T> == 16) {
    using namespace exp_detail;
    // [-110, 89]: exp(89) > FLT_MAX, so scalef overflows to +inf for everything above ln
    // FLT_MAX; MAXPS and MINPS return their second operand, x, when it is NaN.
    return batch<T>(exp_clamped_avx512<batch<T>>(
        _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-110.0f), x))));
  }
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (std::is_same_v<T, float> && width<T> == 8) {
    using namespace exp_detail;
    // Clamped to [ln FLT_MIN, just above ln FLT_MAX] so that n is in [-126, 128]; 2^n is
    // applied as 2^(n/2) 2^(n - n/2), each a normal float. Below the range: 0; above: +inf.
    const __m256 lo = _mm256_set1_ps(-87.3365447f), hi = _mm256_set1_ps(88.7228394f);
    const __m256 xc = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(log2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 p = reduced_exp(batch<T>(xc), batch<T>(n));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    const __m256 y =
        _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
    return batch<T>(_mm256_blendv_ps(y, _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                                     _mm256_cmp_ps(x, hi, _CMP_GT_OQ)));
  }
#endif
  return xsimd::exp(x);
}

}  // namespace simd

namespace detail::math {
/// The batch exp of the expression functors (declared in expr/functors.hpp, which does not
/// include SIMD headers): simd::exp for the cpu backend's batches, xsimd::exp for any other.
template <class X>
X batch_exp(X x) noexcept {
  if constexpr (std::is_same_v<X, simd::batch<typename X::value_type>>)
    return simd::exp<typename X::value_type>(x);
  else
    return xsimd::exp(x);
}
}  // namespace detail::math

TFM_END_NAMESPACE
