// typeformer/backend/cpu/gemm/gemv.hpp
//
// WHAT THIS REPRESENTS
//   Matrix-vector products for the shapes where packing does not pay: M == 1 (LLM decode:
//   x(1,K) * W^T with W stored N x K), N == 1, and small matrices done row by row. Both are
//   bandwidth-bound streams over W:
//
//     gemv_dot:  y[n*incy] = alpha * sum_k W[n*ldw + k] * x[k] + beta * y[n*incy]   (W rows = dot)
//     gemv_axpy: y[n*incy] = alpha * sum_k W[k*ldw + n] * x[k] + beta * y[n*incy]   (W rows = axpy)
//
//   x is contiguous. beta == 0 means y is not read. Threads split n in fixed groups (4 rows for
//   gemv_dot, 8 vectors of columns for gemv_axpy) and every y[n] is computed by one thread in
//   the same order, so the result does not depend on the thread count.
#pragma once

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <cmath>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {
namespace detail {

template <class T>
TFM_ALWAYS_INLINE void gemv_store(T* y, T s, T alpha, T beta) {
  *y = beta == T(0) ? alpha * s : std::fma(alpha, s, beta * *y);
}

/// ROWS dot products sum_k w[r*ldw + k] * x[k]; the per-row order is fixed: two interleaved
/// vector accumulators, one more vector step, reduce_add, then the scalar tail in k order.
template <class T, int ROWS>
TFM_ALWAYS_INLINE void gemv_dot_rows(index_t K, const T* TFM_RESTRICT w, index_t ldw,
                                     const T* TFM_RESTRICT x, T* out) {
  using V = simd::batch<T>;
  constexpr int W = simd::width<T>;
  V acc0[ROWS], acc1[ROWS];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) acc0[r] = acc1[r] = V(T(0));
  index_t k = 0;
  for (; k + 2 * W <= K; k += 2 * W) {
    const V x0 = simd::load(x + k);
    const V x1 = simd::load(x + k + W);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      acc0[r] = simd::fma(simd::load(w + r * ldw + k), x0, acc0[r]);
      acc1[r] = simd::fma(simd::load(w + r * ldw + k + W), x1, acc1[r]);
    }
  }
  if (k + W <= K) {
    const V x0 = simd::load(x + k);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) acc0[r] = simd::fma(simd::load(w + r * ldw + k), x0, acc0[r]);
    k += W;
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    T s = simd::reduce_add(acc0[r] + acc1[r]);
    for (index_t t = k; t < K; ++t) s = std::fma(w[r * ldw + t], x[t], s);
    out[r] = s;
  }
}

/// Rows [n0, n1) of gemv_dot: eight rows at a time (then four, then one), each row summed in the
/// same order whatever its group, so the thread split cannot change a bit. Eight rows share each
/// load of x and give 16 independent FMA chains; with the register-tree reduce_add (simd.hpp)
/// the decode shape 1x3072x768 went from 0.83 to 0.94-1.05 of BLIS on a Zen 4 (W in L3).
template <class T>
void gemv_dot_range(index_t n0, index_t n1, index_t K, T alpha, const T* w, index_t ldw, const T* x,
                    T beta, T* y, index_t incy) {
  index_t n = n0;
  auto groups_of = [&]<int R>() {  // as many groups of R rows as fit, from n on
    T s[R];
    for (; n + R <= n1; n += R) {
      gemv_dot_rows<T, R>(K, w + n * ldw, ldw, x, s);
      for (int r = 0; r < R; ++r) gemv_store(y + (n + r) * incy, s[r], alpha, beta);
    }
  };
  groups_of.template operator()<8>();
  groups_of.template operator()<4>();
  groups_of.template operator()<1>();
}

/// Columns [n0, n1) of sum_k x[k] * w[k*ldw + n]: rows of w are streamed in order and added
/// into an L1-resident block of accumulators (one FMA chain over k per element, four rows per
/// pass over the block). The block is 16 KiB: a row of up to 4096 floats is then one contiguous
/// stream, where 4 KiB blocks read each row of a 3072-wide W in page-sized pieces 12 KiB apart,
/// and the hardware prefetcher restarted on every piece (1x3072x768: 11.4 -> 13.2 GF/s, 0.86 ->
/// 1.00 of BLIS).
template <class T>
void gemv_axpy_range(index_t n0, index_t n1, index_t K, T alpha, const T* w, index_t ldw,
                     const T* x, T beta, T* y, index_t incy) {
  using V = simd::batch<T>;
  constexpr int W = simd::width<T>;
  constexpr index_t block = 16384 / sizeof(T);
  alignas(64) T acc[block];
  for (index_t b0 = n0; b0 < n1; b0 += block) {
    const index_t nb = std::min(block, n1 - b0);
    const index_t nv = nb / W * W;
    std::fill(acc, acc + nb, T(0));
    const T* wb = w + b0;
    index_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const T* w0 = wb + k * ldw;
      const T* w1 = w0 + ldw;
      const T* w2 = w1 + ldw;
      const T* w3 = w2 + ldw;
      const V x0 = simd::broadcast(x[k]), x1 = simd::broadcast(x[k + 1]);
      const V x2 = simd::broadcast(x[k + 2]), x3 = simd::broadcast(x[k + 3]);
      for (index_t j = 0; j < nv; j += W) {
        V a = simd::load_aligned(acc + j);
        a = simd::fma(x0, simd::load(w0 + j), a);
        a = simd::fma(x1, simd::load(w1 + j), a);
        a = simd::fma(x2, simd::load(w2 + j), a);
        a = simd::fma(x3, simd::load(w3 + j), a);
        simd::store_aligned(acc + j, a);
      }
      for (index_t j = nv; j < nb; ++j) {
        T a = acc[j];
        a = std::fma(x[k], w0[j], a);
        a = std::fma(x[k + 1], w1[j], a);
        a = std::fma(x[k + 2], w2[j], a);
        a = std::fma(x[k + 3], w3[j], a);
        acc[j] = a;
      }
    }
    for (; k < K; ++k) {
      const T* w0 = wb + k * ldw;
      const V x0 = simd::broadcast(x[k]);
      for (index_t j = 0; j < nv; j += W)
        simd::store_aligned(acc + j,
                            simd::fma(x0, simd::load(w0 + j), simd::load_aligned(acc + j)));
      for (index_t j = nv; j < nb; ++j) acc[j] = std::fma(x[k], w0[j], acc[j]);
    }
    for (index_t j = 0; j < nb; ++j) gemv_store(y + (b0 + j) * incy, acc[j], alpha, beta);
  }
}

/// Splits [0, N) into `parts` ranges on multiples of `group` and runs f(n0, n1) on each.
template <class F>
void gemv_parallel(index_t N, index_t group, int parts, F&& f) {
  const index_t groups = (N + group - 1) / group;
  parts = static_cast<int>(std::min<index_t>(parts, groups));
  if (parts <= 1) {
    f(index_t(0), N);
    return;
  }
  TFM_OMP(parallel for num_threads(parts) schedule(static, 1))
  for (int p = 0; p < parts; ++p) {
    const index_t g0 = groups * p / parts, g1 = groups * (p + 1) / parts;
    f(g0 * group, std::min(N, g1 * group));
  }
}

/// Threads worth using for a stream over `elements` values of W (at least 64 Ki per thread).
inline int gemv_threads(int nt, index_t elements) {
  const index_t useful = elements / (index_t(1) << 16);
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(nt, useful)));
}

template <class T>
void gemv_dot(index_t N, index_t K, T alpha, const T* w, index_t ldw, const T* x, T beta, T* y,
              index_t incy, int nt) {
  gemv_parallel(N, 4, gemv_threads(nt, N * K), [&](index_t n0, index_t n1) {
    gemv_dot_range(n0, n1, K, alpha, w, ldw, x, beta, y, incy);
  });
}

template <class T>
void gemv_axpy(index_t N, index_t K, T alpha, const T* w, index_t ldw, const T* x, T beta, T* y,
               index_t incy, int nt) {
  gemv_parallel(N, 8 * simd::width<T>, gemv_threads(nt, N * K), [&](index_t n0, index_t n1) {
    gemv_axpy_range(n0, n1, K, alpha, w, ldw, x, beta, y, incy);
  });
}

}  // namespace detail
}  // namespace cpu_kernels

TFM_END_NAMESPACE
