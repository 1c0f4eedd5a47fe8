// bench/common/bench_util.hpp
//
// WHAT THIS REPRESENTS
//   The shared timing harness of the typeformer benches (not part of the library):
//   - median_seconds(fn, repeats): runs fn once to warm up, then `repeats` times, and returns the
//     median wall time (robust against the odd slow run on a shared machine);
//   - do_not_optimize(x) / clobber_memory(): keep the compiler from deleting measured work;
//   - aligned_buffer<T>: a 64-byte-aligned heap array, first touched in parallel (so pages land
//     where the threads that use them run);
//   - stream_copy / stream_triad: STREAM-like memory-bandwidth peers (J. D. McCalpin, "Memory
//     Bandwidth and Machine Balance in Current High Performance Computers", IEEE TCCA Newsletter
//     1995), SIMD + OpenMP with ordinary (write-allocate) stores, like the kernels they bound;
//   - stream_bytes_*: the bytes STREAM counts for them (copy 2 x n x sizeof(T), triad 3 x).
//   Ratios are reported against a peer measured in the same run (see bench/*/RESULTS.md).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace tfm_bench {

/// Keeps `value` (and what it points to) alive as far as the optimiser can tell.
template <class T>
inline void do_not_optimize(T const& value) {
#if defined(__GNUC__) || defined(__clang__)
  asm volatile("" : : "r,m"(value) : "memory");
#else
  static volatile const void* sink;
  sink = &value;
#endif
}

/// Tells the optimiser that all memory may have been read and written.
inline void clobber_memory() {
#if defined(__GNUC__) || defined(__clang__)
  asm volatile("" : : : "memory");
#endif
}

/// Median wall time in seconds of `repeats` runs of fn() after `warmup` untimed runs.
template <class F>
double median_seconds(F&& fn, int repeats = 11, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t(static_cast<std::size_t>(repeats));
  for (int i = 0; i < repeats; ++i) {
    clobber_memory();
    const auto start = std::chrono::steady_clock::now();
    fn();
    clobber_memory();
    const auto stop = std::chrono::steady_clock::now();
    t[static_cast<std::size_t>(i)] = std::chrono::duration<double>(stop - start).count();
  }
  std::nth_element(t.begin(), t.begin() + repeats / 2, t.end());
  return t[static_cast<std::size_t>(repeats / 2)];
}

/// Medians of a peer and a candidate timed alternately (peer, candidate, peer, ...), and the
/// median of the per-pair ratios candidate / peer. Pairing makes the ratio robust when other
/// work shares the machine: both halves of a pair see the same load.
struct paired_result {
  double peer_s = 0;       // median seconds of the peer
  double candidate_s = 0;  // median seconds of the candidate
  double ratio = 0;        // median of candidate / peer over the pairs
};

template <class Peer, class Candidate>
paired_result paired_medians(Peer&& peer, Candidate&& candidate, int repeats = 11) {
  const auto time_once = [](auto& fn) {
    clobber_memory();
    const auto start = std::chrono::steady_clock::now();
    fn();
    clobber_memory();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  peer();
  candidate();
  std::vector<double> a, b, r;
  for (int i = 0; i < repeats; ++i) {
    a.push_back(time_once(peer));
    b.push_back(time_once(candidate));
    r.push_back(b.back() / a.back());
  }
  const auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  return {median(a), median(b), median(r)};
}

/// 64-byte-aligned array of n elements, zero-filled in parallel (first touch).
template <class T>
class aligned_buffer {
 public:
  explicit aligned_buffer(std::size_t n)
      : n_(n), p_(static_cast<T*>(::operator new[](n * sizeof(T) + 64, std::align_val_t{64}))) {
    const std::ptrdiff_t m = static_cast<std::ptrdiff_t>(n);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < m; ++i) p_.get()[i] = T(0);
  }
  T* data() noexcept { return p_.get(); }
  const T* data() const noexcept { return p_.get(); }
  std::size_t size() const noexcept { return n_; }
  T& operator[](std::size_t i) noexcept { return p_.get()[i]; }

 private:
  struct deleter {
    void operator()(T* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::size_t n_;
  std::unique_ptr<T, deleter> p_;
};

/// dst[i] = src[i], SIMD loads and ordinary stores, OpenMP static split (n multiple of nothing).
template <class T>
void stream_copy(const T* src, T* dst, std::ptrdiff_t n) {
  using B = xsimd::batch<T>;
  constexpr std::ptrdiff_t w = static_cast<std::ptrdiff_t>(B::size);
  const std::ptrdiff_t blocks = n / w;
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t b = 0; b < blocks; ++b)
    B::load_unaligned(src + b * w).store_unaligned(dst + b * w);
  for (std::ptrdiff_t i = blocks * w; i < n; ++i) dst[i] = src[i];
}

/// dst[i] = src[i] with non-temporal (streaming) stores where the ISA has them: no read for
/// ownership of dst's lines, so 2 bytes move per copied byte instead of 3. dst must be
/// sizeof(batch)-aligned. The tighter bound for kernels that stream their own output.
template <class T>
void stream_copy_nt(const T* src, T* dst, std::ptrdiff_t n) {
  using B = xsimd::batch<T>;
  constexpr std::ptrdiff_t w = static_cast<std::ptrdiff_t>(B::size);
  const std::ptrdiff_t blocks = n / w;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (std::ptrdiff_t b = 0; b < blocks; ++b) {
      const B v = B::load_unaligned(src + b * w);
#if defined(__AVX512F__)
      if constexpr (sizeof(B) == 64 && std::is_same_v<T, float>)
        _mm512_stream_ps(dst + b * w, v);
      else
        v.store_aligned(dst + b * w);
#elif defined(__AVX__)
      if constexpr (sizeof(B) == 32 && std::is_same_v<T, float>)
        _mm256_stream_ps(dst + b * w, v);
      else
        v.store_aligned(dst + b * w);
#else
      v.store_aligned(dst + b * w);
#endif
    }
#if defined(__AVX__)
    _mm_sfence();
#endif
  }
  for (std::ptrdiff_t i = blocks * w; i < n; ++i) dst[i] = src[i];
}

/// a[i] = b[i] + s * c[i] (STREAM triad).
template <class T>
void stream_triad(T* a, const T* b, const T* c, T s, std::ptrdiff_t n) {
  using B = xsimd::batch<T>;
  constexpr std::ptrdiff_t w = static_cast<std::ptrdiff_t>(B::size);
  const std::ptrdiff_t blocks = n / w;
  const B vs(s);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t k = 0; k < blocks; ++k) {
    const std::ptrdiff_t i = k * w;
    xsimd::fma(vs, B::load_unaligned(c + i), B::load_unaligned(b + i)).store_unaligned(a + i);
  }
  for (std::ptrdiff_t i = blocks * w; i < n; ++i) a[i] = b[i] + s * c[i];
}

template <class T>
constexpr double stream_bytes_copy(std::ptrdiff_t n) {
  return 2.0 * static_cast<double>(n) * sizeof(T);
}
template <class T>
constexpr double stream_bytes_triad(std::ptrdiff_t n) {
  return 3.0 * static_cast<double>(n) * sizeof(T);
}

/// Sets the OpenMP thread count (no-op without OpenMP); returns the count in effect.
inline int set_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n);
  return n;
#else
  (void)n;
  return 1;
#endif
}

}  // namespace tfm_bench
