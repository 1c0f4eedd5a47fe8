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
#pragma once

#include "typeformer/config/config.hpp"

#include <xsimd/xsimd.hpp>

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
template <class T>
TFM_ALWAYS_INLINE batch<T> fma(const batch<T>& a, const batch<T>& b, const batch<T>& c) noexcept {
  return xsimd::fma(a, b, c);
}
/// Pairwise tree over the lanes (lane i + h added to lane i, h = width/2, width/4, ..., 1): a
/// fixed order on every ISA. Written with a store instead of xsimd::hadd / reduce_add, whose
/// name changed in xsimd 9 and whose AVX-512 form trips a GCC 12 -Wuninitialized false positive
/// inside <immintrin.h> (_mm512_extractf64x4_pd).
template <class T>
TFM_ALWAYS_INLINE T reduce_add(const batch<T>& v) noexcept {
  alignas(sizeof(batch<T>)) T lanes[width<T>];
  v.store_aligned(lanes);
  for (int h = width<T> / 2; h >= 1; h /= 2)
    for (int i = 0; i < h; ++i) lanes[i] += lanes[i + h];
  return lanes[0];
}

}  // namespace simd

TFM_END_NAMESPACE
