// typeformer/backend/cpu/parallel.hpp
//
// Thread-count control for the cpu backend. Kernels that promise determinism split work into
// pieces whose boundaries do not depend on the thread count, so 1 and N threads give bitwise
// identical results.
#pragma once

#include "typeformer/config/config.hpp"

#if TFM_HAS_OPENMP
#include <omp.h>
#endif

TFM_BEGIN_NAMESPACE

/// Number of threads the cpu backend uses for the next parallel region (1 without OpenMP).
inline int num_threads() noexcept {
#if TFM_HAS_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the number of threads for subsequent cpu kernels (n >= 1; ignored without OpenMP).
inline void set_num_threads(int n) noexcept {
#if TFM_HAS_OPENMP
  if (n >= 1) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

/// True inside a parallel region (kernels then run serially instead of nesting).
inline bool in_parallel() noexcept {
#if TFM_HAS_OPENMP
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

/// RAII: sets the thread count for a scope and restores it afterwards.
class thread_scope {
 public:
  explicit thread_scope(int n) noexcept : saved_(num_threads()) { set_num_threads(n); }
  ~thread_scope() { set_num_threads(saved_); }
  thread_scope(const thread_scope&) = delete;
  thread_scope& operator=(const thread_scope&) = delete;

 private:
  int saved_;
};

TFM_END_NAMESPACE
