// typeformer/backend/cpu/stream.hpp
//
// Non-temporal ("streaming") stores for kernels whose output is larger than the caches would
// keep: the row kernels (rows.hpp) and elementwise evaluation (elementwise.hpp). A streamed
// store skips the read-for-ownership of the line it overwrites, a third to a quarter less
// memory traffic for an output the size of DRAM-resident arrays; the values are the same.
//
//   stream_store_bytes() / set_stream_store_bytes(b)   outputs of at least b bytes stream
//                                                      (default TFM_STREAM_STORE_BYTES, 32 MiB;
//                                                      0 disables)
//   stream_detail::stream_store(p, v)   one batch at a sizeof(batch)-aligned p
//   stream_detail::stream_fence()       orders this thread's streamed stores before what follows
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/config/config.hpp"

#include <atomic>
#include <cstdint>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {
namespace stream_detail {

inline std::atomic<unsigned long long>& stream_threshold() noexcept {
  static std::atomic<unsigned long long> bytes{TFM_STREAM_STORE_BYTES};
  return bytes;
}

/// True on ISAs with streaming stores and an output of at least stream_store_bytes().
inline bool stream_bytes(unsigned long long bytes) noexcept {
#if defined(__AVX__)
  const unsigned long long min = stream_threshold().load(std::memory_order_relaxed);
  return min != 0 && bytes >= min;
#else
  (void)bytes;
  return false;
#endif
}

/// Stores v at p (sizeof(batch)-aligned) with a non-temporal store where the ISA has one.
template <class T>
TFM_ALWAYS_INLINE void stream_store(T* p, simd::batch<T> v) noexcept {
#if defined(__AVX512F__)
  if constexpr (sizeof(simd::batch<T>) == 64 && std::is_same_v<T, float>) {
    _mm512_stream_ps(p, v);
    return;
  } else if constexpr (sizeof(simd::batch<T>) == 64 && std::is_same_v<T, double>) {
    _mm512_stream_pd(p, v);
    return;
  }
#endif
#if defined(__AVX__)
  if constexpr (sizeof(simd::batch<T>) == 32 && std::is_same_v<T, float>) {
    _mm256_stream_ps(p, v);
    return;
  } else if constexpr (sizeof(simd::batch<T>) == 32 && std::is_same_v<T, double>) {
    _mm256_stream_pd(p, v);
    return;
  }
#endif
  v.store_aligned(p);
}

/// Orders this thread's non-temporal stores before what follows (they are weakly ordered).
inline void stream_fence() noexcept {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

}  // namespace stream_detail

/// Outputs of at least this many bytes are written with non-temporal stores (0: never).
inline unsigned long long stream_store_bytes() noexcept {
  return stream_detail::stream_threshold().load(std::memory_order_relaxed);
}
inline void set_stream_store_bytes(unsigned long long bytes) noexcept {
  stream_detail::stream_threshold().store(bytes, std::memory_order_relaxed);
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE
