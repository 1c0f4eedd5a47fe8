// typeformer/config/config.hpp
//
// The one documented place for user-visible configuration knobs. Define any of these before the
// first typeformer include (or on the compiler command line) to override the default.
//
//   TFM_NO_EXCEPTIONS       errors call the handler set with tfm::set_error_handler instead of
//                           throwing (edge builds, -fno-exceptions). Default: on when the compiler
//                           has exceptions disabled.
//   TFM_WITH_OPENMP         use OpenMP threading in the cpu backend when the compiler has OpenMP
//                           enabled (-fopenmp). Define to 0 to force single-threaded kernels.
//   TFM_MAX_FUSION_DEPTH    deepest elementwise expression tree that assignment fuses into one
//                           pass (default 32); deeper trees fail to compile with a message that
//                           says to call .eval() on a sub-expression.
//   TFM_DEFAULT_ALIGNMENT   byte alignment of owning heap storage (default 64: one cache line and
//                           one AVX-512 register).
//   TFM_STORAGE_CACHE_BYTES freed tensor buffers are kept for reuse, up to this many bytes in
//                           total or the most tensor bytes ever live at once, whichever is
//                           larger; this spares training loops the page faults and zeroing of
//                           fresh allocations (default 512 MiB; 0 disables; disabled by
//                           default under AddressSanitizer so it can see use-after-free).
//                           tfm::release_cached_storage() hands the cached buffers back.
//   TFM_HUGE_PAGE_BYTES     on Linux, owning buffers of at least this many bytes are mapped on
//                           2 MiB boundaries and advised for transparent huge pages
//                           (madvise MADV_HUGEPAGE; effective when the system's THP mode is
//                           "madvise" or "always"). Fewer TLB misses in the strided reads of
//                           GEMM packing: +2-5% training tokens/s. The tail of a block past
//                           its last whole 2 MiB keeps small pages, so resident memory does not
//                           grow. Default 2 MiB; 0 disables; disabled by default under
//                           AddressSanitizer (mapped blocks have no redzones).
//   TFM_STREAM_STORE_BYTES  row kernels (softmax, log_softmax, layer_norm, rms_norm) and
//                           float/double elementwise evaluation whose output is at least this
//                           many bytes write it with non-temporal stores: an output larger than
//                           the last-level cache would leave it anyway, and streaming skips
//                           reading each line before overwriting it (a third less memory
//                           traffic). Default 32 MiB; 0 disables;
//                           tfm::cpu_kernels::set_stream_store_bytes() changes it at run time.
//   TFM_SILENCE_ISA_NOTE    define to 1 to hide the compile-time note that the cpu backend
//                           prints when a translation unit targets x86-64 without AVX2 (it then
//                           runs SSE2 code; link typeformer::native or pass -march=native).
//
// Derived settings (not knobs) live in config/platform.hpp.
#pragma once

#include "typeformer/config/version.hpp"

#if !defined(TFM_NO_EXCEPTIONS)
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define TFM_NO_EXCEPTIONS 0
#else
#define TFM_NO_EXCEPTIONS 1
#endif
#endif

#if !defined(TFM_WITH_OPENMP)
#define TFM_WITH_OPENMP 1
#endif

#if !defined(TFM_SILENCE_ISA_NOTE)
#define TFM_SILENCE_ISA_NOTE 0
#endif

#if !defined(TFM_MAX_FUSION_DEPTH)
#define TFM_MAX_FUSION_DEPTH 32
#endif

#if !defined(TFM_DEFAULT_ALIGNMENT)
#define TFM_DEFAULT_ALIGNMENT 64
#endif

#if !defined(TFM_STORAGE_CACHE_BYTES)
#if defined(__SANITIZE_ADDRESS__)
#define TFM_STORAGE_CACHE_BYTES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TFM_STORAGE_CACHE_BYTES 0
#endif
#endif
#endif
#if !defined(TFM_STORAGE_CACHE_BYTES)
#define TFM_STORAGE_CACHE_BYTES (512ull << 20)
#endif

#if !defined(TFM_HUGE_PAGE_BYTES)
#if defined(__SANITIZE_ADDRESS__)
#define TFM_HUGE_PAGE_BYTES 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TFM_HUGE_PAGE_BYTES 0
#endif
#endif
#endif
#if !defined(TFM_HUGE_PAGE_BYTES)
#define TFM_HUGE_PAGE_BYTES (2ull << 20)
#endif

#if !defined(TFM_STREAM_STORE_BYTES)
#define TFM_STREAM_STORE_BYTES (32ull << 20)
#endif

// ABI inline namespace: binaries built against different typeformer versions do not silently mix
// (the idea of nlohmann/json's versioned inline namespace).
#define TFM_ABI_CONCAT2(a, b, c) abi_v##a##_##b##_##c
#define TFM_ABI_CONCAT(a, b, c) TFM_ABI_CONCAT2(a, b, c)
#define TFM_ABI_NAMESPACE TFM_ABI_CONCAT(TFM_VERSION_MAJOR, TFM_VERSION_MINOR, TFM_VERSION_PATCH)

#define TFM_BEGIN_NAMESPACE \
  namespace tfm {           \
  inline namespace TFM_ABI_NAMESPACE {
#define TFM_END_NAMESPACE \
  }                       \
  }

#include "typeformer/config/platform.hpp"
