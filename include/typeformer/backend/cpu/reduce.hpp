// typeformer/backend/cpu/reduce.hpp
//
// cpu reductions over a contiguous buffer viewed as (outer, n, inner).
//   inner == 1: each row is cut into fixed blocks of `reduce_block` elements, each block is
//     reduced with SIMD (four accumulators), and block results are combined in order. Blocks
//     are shared among threads when there are few rows, rows when there are many; the block
//     boundaries never depend on the thread count, so neither do the results.
//   inner > 1: columns are accumulated row by row with SIMD across the inner axis.
// Integer sums, argmax/argmin along inner > 1 and logsumexp along inner > 1 use the reference
// kernel (base-class fallback).
#pragma once

#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/half_simd.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/reference/reduce.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/half.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail {

inline constexpr index_t reduce_block = 16384;

template <class C, class T>
TFM_ALWAYS_INLINE simd::batch<C> load_as(const T* p) {
  if constexpr (is_half_v<T>)
    return load_as_float(p);
  else
    return simd::load(p);
}

// Partial result of one block.
template <class C>
struct partial {
  C value;  // sum, max or min
  C scale;  // logsumexp: sum of exp(x - value)
  bool nan;
};

template <reduce_op K, class C, class T>
partial<C> reduce_block_simd(const T* p, index_t n) {
  using Bt = simd::batch<C>;
  constexpr index_t w = static_cast<index_t>(Bt::size);
  index_t j = 0;
  if constexpr (K == reduce_op::sum || K == reduce_op::mean) {
    Bt a0(C(0)), a1(C(0)), a2(C(0)), a3(C(0));
    for (; j + 4 * w <= n; j += 4 * w) {
      a0 += load_as<C>(p + j);
      a1 += load_as<C>(p + j + w);
      a2 += load_as<C>(p + j + 2 * w);
      a3 += load_as<C>(p + j + 3 * w);
    }
    for (; j + w <= n; j += w) a0 += load_as<C>(p + j);
    C s = simd::reduce_add((a0 + a1) + (a2 + a3));
    for (; j < n; ++j) s += static_cast<C>(p[j]);
    return {s, C(0), false};
  } else {
    constexpr bool is_max = K == reduce_op::max || K == reduce_op::logsumexp;
    C init = is_max ? -std::numeric_limits<C>::infinity() : std::numeric_limits<C>::infinity();
    Bt m(init);
    auto nanmask = Bt(C(0)) != Bt(C(0));
    for (; j + w <= n; j += w) {
      Bt v = load_as<C>(p + j);
      nanmask = nanmask || xsimd::isnan(v);
      m = is_max ? xsimd::max(m, v) : xsimd::min(m, v);
    }
    alignas(64) C lanes[Bt::size];
    m.store_aligned(lanes);
    C r = init;
    bool nan = xsimd::any(nanmask);
    for (std::size_t k = 0; k < Bt::size; ++k)
      r = is_max ? std::max(r, lanes[k]) : std::min(r, lanes[k]);
    for (; j < n; ++j) {
      C v = static_cast<C>(p[j]);
      nan |= std::isnan(v);
      r = is_max ? std::max(r, v) : std::min(r, v);
    }
    if constexpr (K == reduce_op::logsumexp) {
      C s = 0;
      if (!nan && std::isfinite(r)) {
        Bt bm(r), acc(C(0));
        index_t i = 0;
        for (; i + w <= n; i += w) acc += simd::exp_nonpositive(load_as<C>(p + i) - bm);
        s = simd::reduce_add(acc);
        for (; i < n; ++i) s += std::exp(static_cast<C>(p[i]) - r);
      }
      return {r, s, nan};
    }
    return {r, C(0), nan};
  }
}

template <reduce_op K, class C>
C combine_partials(const partial<C>* ps, index_t nb, index_t n) {
  bool nan = false;
  for (index_t b = 0; b < nb; ++b) nan |= ps[b].nan;
  if constexpr (K == reduce_op::sum || K == reduce_op::mean) {
    C s = 0;
    for (index_t b = 0; b < nb; ++b) s += ps[b].value;
    return K == reduce_op::mean ? s / static_cast<C>(n) : s;
  } else {
    if (nan) return std::numeric_limits<C>::quiet_NaN();
    if constexpr (K == reduce_op::max) {
      C r = ps[0].value;
      for (index_t b = 1; b < nb; ++b) r = std::max(r, ps[b].value);
      return r;
    } else if constexpr (K == reduce_op::min) {
      C r = ps[0].value;
      for (index_t b = 1; b < nb; ++b) r = std::min(r, ps[b].value);
      return r;
    } else {  // logsumexp: rescale each block's sum to the global max
      C m = ps[0].value;
      for (index_t b = 1; b < nb; ++b) m = std::max(m, ps[b].value);
      if (std::isinf(m)) return m;
      C s = 0;
      for (index_t b = 0; b < nb; ++b)
        if (ps[b].value != -std::numeric_limits<C>::infinity())
          s += ps[b].scale * std::exp(ps[b].value - m);
      return m + std::log(s);
    }
  }
}

/// NV vectors of columns of a column reduction (sum, mean, max, min) over n rows of stride
/// `inner`, written to out[0 .. NV*width). Each column is reduced over the rows in order; NV > 1
/// only runs NV independent chains side by side (the latency of one add per row otherwise bounds
/// a single chain), so every NV gives the same result.
template <reduce_op K, class C, int NV, class T, class U>
TFM_ALWAYS_INLINE void column_block(const T* base, index_t n, index_t inner, U* out) {
  using Bt = simd::batch<C>;
  constexpr index_t w = static_cast<index_t>(Bt::size);
  Bt acc[NV];
  typename Bt::batch_bool_type nanm[NV];
  for (int v = 0; v < NV; ++v) {
    acc[v] = load_as<C>(base + v * w);
    nanm[v] = xsimd::isnan(acc[v]);
  }
  for (index_t r = 1; r < n; ++r)
    for (int v = 0; v < NV; ++v) {
      const Bt x = load_as<C>(base + r * inner + v * w);
      if constexpr (K == reduce_op::sum || K == reduce_op::mean) {
        acc[v] += x;
      } else {
        nanm[v] = nanm[v] || xsimd::isnan(x);
        acc[v] = K == reduce_op::max ? xsimd::max(acc[v], x) : xsimd::min(acc[v], x);
      }
    }
  for (int v = 0; v < NV; ++v) {
    Bt a = acc[v];
    if constexpr (K == reduce_op::mean) a = a / Bt(static_cast<C>(n));
    if constexpr (K == reduce_op::max || K == reduce_op::min)
      a = xsimd::select(nanm[v], Bt(std::numeric_limits<C>::quiet_NaN()), a);
    alignas(64) C lanes[Bt::size];
    a.store_aligned(lanes);
    for (index_t k = 0; k < w; ++k) out[v * w + k] = static_cast<U>(lanes[k]);
  }
}

template <reduce_op K>
inline constexpr bool cpu_row_reduction =
    K == reduce_op::sum || K == reduce_op::mean || K == reduce_op::max || K == reduce_op::min ||
    K == reduce_op::logsumexp;

}  // namespace detail

template <reduce_op K, class T, class U>
void reduce_kernel(const T* src, index_t outer, index_t n, index_t inner, U* out, cpu) {
  using C = compute_t<T>;
  constexpr bool simd_type = std::is_same_v<C, float> || std::is_same_v<C, double>;
  if constexpr (!simd_type || !detail::cpu_row_reduction<K>) {
    reduce_kernel<K>(src, outer, n, inner, out, reference{});
  } else if (inner == 1) {
    const index_t nb = std::max<index_t>(1, (n + detail::reduce_block - 1) / detail::reduce_block);
    const index_t items = outer * nb;
    std::vector<detail::partial<C>> parts(static_cast<std::size_t>(items));
    const bool par = items > 1 && outer * n >= (1 << 15) && num_threads() > 1 && !in_parallel();
    TFM_OMP(parallel for schedule(static) if (par))
    for (index_t it = 0; it < items; ++it) {
      index_t o = it / nb, b = it % nb;
      index_t j0 = b * detail::reduce_block, j1 = std::min(n, j0 + detail::reduce_block);
      parts[static_cast<std::size_t>(it)] =
          detail::reduce_block_simd<K, C>(src + o * n + j0, j1 - j0);
    }
    for (index_t o = 0; o < outer; ++o)
      out[o] = static_cast<U>(detail::combine_partials<K, C>(parts.data() + o * nb, nb, n));
  } else if constexpr (K == reduce_op::logsumexp) {
    reduce_kernel<K>(src, outer, n, inner, out, reference{});
  } else {
    // Column reductions: out[o, i] over r, SIMD across i.
    using Bt = simd::batch<C>;
    constexpr index_t w = static_cast<index_t>(Bt::size);
    // Columns per work item: 4 AVX-512 float vectors (a multiple of 4 vectors of every SIMD
    // width up to it), narrow enough that a bias gradient of a few hundred columns splits evenly
    // across threads.
    constexpr index_t chunk = 64;
    const index_t nc = (inner + chunk - 1) / chunk;
    const bool par =
        outer * nc > 1 && outer * n * inner >= (1 << 15) && num_threads() > 1 && !in_parallel();
    TFM_OMP(parallel for schedule(static) if (par))
    for (index_t it = 0; it < outer * nc; ++it) {
      index_t o = it / nc, i0 = (it % nc) * chunk, i1 = std::min(inner, i0 + chunk);
      const T* base = src + o * n * inner;
      if (n == 0) {
        for (index_t k = i0; k < i1; ++k)
          out[o * inner + k] =
              static_cast<U>(K == reduce_op::mean ? std::numeric_limits<C>::quiet_NaN() : C(0));
        continue;
      }
      index_t i = i0;
      for (; i + 4 * w <= i1; i += 4 * w)
        detail::column_block<K, C, 4>(base + i, n, inner, out + o * inner + i);
      for (; i + w <= i1; i += w)
        detail::column_block<K, C, 1>(base + i, n, inner, out + o * inner + i);
      for (; i < i1; ++i) {  // tail columns
        C acc = static_cast<C>(base[i]);
        bool nan = std::isnan(acc);
        for (index_t r = 1; r < n; ++r) {
          C v = static_cast<C>(base[r * inner + i]);
          if constexpr (K == reduce_op::sum || K == reduce_op::mean)
            acc += v;
          else {
            nan |= std::isnan(v);
            acc = K == reduce_op::max ? std::max(acc, v) : std::min(acc, v);
          }
        }
        if constexpr (K == reduce_op::mean) acc /= static_cast<C>(n);
        if (nan && (K == reduce_op::max || K == reduce_op::min))
          acc = std::numeric_limits<C>::quiet_NaN();
        out[o * inner + i] = static_cast<U>(acc);
      }
    }
  }
}

TFM_END_NAMESPACE
