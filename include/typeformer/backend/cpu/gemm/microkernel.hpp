// typeformer/backend/cpu/gemm/microkernel.hpp
//
// WHAT THIS REPRESENTS
//   The register-blocked micro-kernel of the packed GEMM (gemm/config.hpp gives the loop nest):
//
//     acc(r, :) = sum_{k < kc} a[k*MR + r] * b[k*NR + 0 .. NR)          r < ROWS <= MR
//     c[r*ldc + j] = alpha * acc(r, j) + beta * c[r*ldc + j]           (read_c == false: no read)
//
//   a is a packed A panel (MR values per k), b a packed B panel (NR = NV * width values per k,
//   aligned to the batch size). Every element of C is one FMA chain over k in increasing order
//   followed by fma(alpha, acc, beta * c), whatever ROWS is and wherever the tile lies, which is
//   what makes the result independent of the thread split.
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/core/index.hpp"

#include <array>
#include <cmath>
#include <utility>

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {
namespace detail {

#if defined(__GNUC__) || defined(__clang__)
#define TFM_GEMM_PREFETCH(p) __builtin_prefetch((p), 1, 3)
#else
#define TFM_GEMM_PREFETCH(p) ((void)0)
#endif

template <class T, int MR, int NV, int ROWS>
void gemm_micro_kernel(index_t kc, const T* TFM_RESTRICT a, const T* TFM_RESTRICT b,
                       T* TFM_RESTRICT c, index_t ldc, T alpha, T beta, bool read_c) {
  using V = simd::batch<T>;
  constexpr int W = simd::width<T>;
  constexpr int NR = NV * W;

  V acc[ROWS][NV];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = V(T(0));

#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    TFM_GEMM_PREFETCH(c + r * ldc);
    TFM_GEMM_PREFETCH(c + r * ldc + NR - 1);
  }

#pragma GCC unroll 2
  for (index_t k = 0; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = simd::load_aligned(b + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      const V av = simd::broadcast(a[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = simd::fma(av, bv[v], acc[r][v]);
    }
    a += MR;
    b += NR;
  }

  const V va = simd::broadcast(alpha);
  if (read_c) {
    const V vb = simd::broadcast(beta);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* p = c + r * ldc + v * W;
        simd::store(p, simd::fma(va, acc[r][v], vb * simd::load(p)));
      }
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) simd::store(c + r * ldc + v * W, va * acc[r][v]);
  }
}

template <class T>
using gemm_micro_kernel_fn = void (*)(index_t, const T*, const T*, T*, index_t, T, T, bool);

/// Table of micro-kernels for ROWS = 1 .. MR (index ROWS - 1).
template <class T, int MR, int NV, std::size_t... Is>
constexpr std::array<gemm_micro_kernel_fn<T>, MR> gemm_micro_kernel_table(
    std::index_sequence<Is...>) {
  return {&gemm_micro_kernel<T, MR, NV, static_cast<int>(Is) + 1>...};
}

/// Runs the micro-kernel on a rows x cols tile (rows <= MR, cols <= NR). A partial-width tile
/// goes through an NR-wide scratch tile and is merged with the same fma(alpha, acc, beta * c).
template <class Cfg>
TFM_ALWAYS_INLINE void gemm_tile(index_t rows, index_t cols, index_t kc,
                                 const typename Cfg::value_type* a,
                                 const typename Cfg::value_type* b, typename Cfg::value_type* c,
                                 index_t ldc, typename Cfg::value_type alpha,
                                 typename Cfg::value_type beta, bool read_c) {
  using T = typename Cfg::value_type;
  static constexpr auto table =
      gemm_micro_kernel_table<T, Cfg::mr, Cfg::nv>(std::make_index_sequence<Cfg::mr>{});
  if (cols == Cfg::nr) {
    table[rows - 1](kc, a, b, c, ldc, alpha, beta, read_c);
    return;
  }
  alignas(64) T tile[Cfg::mr * Cfg::nr];
  table[rows - 1](kc, a, b, tile, Cfg::nr, T(1), T(0), false);
  for (index_t r = 0; r < rows; ++r) {
    T* crow = c + r * ldc;
    const T* trow = tile + r * Cfg::nr;
    if (read_c) {
      for (index_t j = 0; j < cols; ++j) crow[j] = std::fma(alpha, trow[j], beta * crow[j]);
    } else {
      for (index_t j = 0; j < cols; ++j) crow[j] = alpha * trow[j];
    }
  }
}

}  // namespace detail
}  // namespace cpu_kernels

TFM_END_NAMESPACE
