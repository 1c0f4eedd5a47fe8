// typeformer/config/platform.hpp: settings derived from the compiler and target. Not user knobs;
// see config/config.hpp for those.
#pragma once

#if defined(_OPENMP) && TFM_WITH_OPENMP
#define TFM_HAS_OPENMP 1
#else
#define TFM_HAS_OPENMP 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TFM_ALWAYS_INLINE inline __attribute__((always_inline))
#define TFM_RESTRICT __restrict__
#define TFM_LIKELY(x) __builtin_expect(!!(x), 1)
#define TFM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define TFM_ALWAYS_INLINE inline
#define TFM_RESTRICT
#define TFM_LIKELY(x) (x)
#define TFM_UNLIKELY(x) (x)
#endif

// Pragma helper so kernels can ask for OpenMP without #ifdef at every loop.
#define TFM_PRAGMA(x) _Pragma(#x)
#if TFM_HAS_OPENMP
#define TFM_OMP(x) TFM_PRAGMA(omp x)
#else
#define TFM_OMP(x)
#endif
