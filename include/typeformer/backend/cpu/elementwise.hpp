// typeformer/backend/cpu/elementwise.hpp
//
// cpu evaluation of elementwise expressions: the whole tree is computed one SIMD register at a
// time and stored once (no temporaries), rows are split into fixed chunks that OpenMP threads
// share. Leaves read contiguously (stride 1), by broadcast (stride 0) or by gather (any other
// stride), so every layout vectorises. Trees that mix compute types or compute in integers run
// the scalar loop of the reference backend's algorithm, with the same threading.
// Results do not depend on the thread count (each element is computed independently).
// Float and double outputs of at least stream_store_bytes() (32 MiB by default) are written
// with non-temporal stores where rows are contiguous and batch-aligned: a*b+c over 16 Mi floats
// took 12.0 ms instead of 16.0 on one core of the bench VM (no read-for-ownership of y).
#pragma once

#include "typeformer/backend/cpu/half_simd.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/cpu/stream.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace detail {

template <class T, class C>
inline constexpr bool simd_leaf_ok_v = (std::is_same_v<T, C> &&
                                        (std::is_same_v<C, float> || std::is_same_v<C, double>)) ||
                                       (is_half_v<T> && std::is_same_v<C, float>);

/// True when every leaf of the cursor tree loads into batch<C> and every functor takes batches.
template <class C, class Cur>
struct simd_cursor_ok : std::false_type {};
template <class C, class T, std::size_t R>
struct simd_cursor_ok<C, leaf_cursor<T, R>> : std::bool_constant<simd_leaf_ok_v<T, C>> {};
template <class C, class V>
struct simd_cursor_ok<C, scalar_cursor<V>>
    : std::bool_constant<std::is_same_v<C, float> || std::is_same_v<C, double>> {};
template <class C, class F, class... Cs>
struct simd_cursor_ok<C, map_cursor<F, Cs...>>
    : std::bool_constant<(simd_cursor_ok<C, Cs>::value && ...) &&
                         std::is_invocable_r_v<simd::batch<C>, F,
                                               decltype((void)sizeof(Cs), simd::batch<C>{})...>> {};

template <class Bt, class T>
TFM_ALWAYS_INLINE Bt load_leaf_contiguous(const T* p) {
  if constexpr (is_half_v<T>)
    return load_as_float(p);
  else
    return Bt::load_unaligned(p);
}

/// The batch of elements j..j+w of the current row. Contig: the caller has checked that every
/// leaf of the row is contiguous or broadcast (no per-batch stride tests then).
template <class Bt, bool Contig = false, class Cur>
TFM_ALWAYS_INLINE Bt batch_at(const Cur& c, index_t j) {
  using C = typename Bt::value_type;
  if constexpr (requires { c.base; }) {
    if constexpr (Contig) {
      if (c.inner == 0) return Bt(static_cast<C>(c.row[0]));
      return load_leaf_contiguous<Bt>(c.row + j);
    }
    if (c.inner == 1) return load_leaf_contiguous<Bt>(c.row + j);
    if (c.inner == 0) return Bt(static_cast<C>(c.row[0]));
    alignas(64) C tmp[Bt::size];
    for (std::size_t k = 0; k < Bt::size; ++k)
      tmp[k] = static_cast<C>(c.row[(j + static_cast<index_t>(k)) * c.inner]);
    return Bt::load_aligned(tmp);
  } else if constexpr (requires { c.value; }) {
    return Bt(static_cast<C>(c.value));
  } else {
    return detail::tuple_apply(
        [&](const auto&... ch) {
          return typename Cur::functor_type{}(batch_at<Bt, Contig>(ch, j)...);
        },
        c.children);
  }
}

/// True when every leaf of the cursor reads its row contiguously (inner 1) or by broadcast (0).
template <class Cur>
TFM_ALWAYS_INLINE bool row_unit_or_broadcast(const Cur& c) {
  if constexpr (requires { c.base; })
    return c.inner == 1 || c.inner == 0;
  else if constexpr (requires { c.value; })
    return true;
  else
    return detail::tuple_apply([](const auto&... ch) { return (row_unit_or_broadcast(ch) && ...); },
                               c.children);
}

template <class T, class Bt>
TFM_ALWAYS_INLINE void store_batch(T* d, index_t inner, const Bt& v) {
  if (inner == 1) {
    if constexpr (is_half_v<T>)
      store_from_float(d, v);
    else
      v.store_unaligned(d);
  } else {
    alignas(64) typename Bt::value_type tmp[Bt::size];
    v.store_aligned(tmp);
    for (std::size_t k = 0; k < Bt::size; ++k)
      d[static_cast<index_t>(k) * inner] = to_storage<T>(tmp[k]);
  }
}

/// Whether an elementwise output of n elements of T is written with non-temporal stores
/// (stream.hpp): float and double outputs of at least stream_store_bytes().
template <class T>
bool stream_elementwise(index_t n) {
  return (std::is_same_v<T, float> || std::is_same_v<T, double>)&&cpu_kernels::stream_detail::
      stream_bytes(static_cast<unsigned long long>(n) * sizeof(T));
}

/// Elements [j0, j1) of a span along which every leaf steps by 1 or 0 (no stride tests). With
/// `stream` and d + j0 aligned to a batch, the batches are stored non-temporally (the caller
/// fences); the same elements go through the SIMD and scalar paths either way, so the values
/// do not change.
template <bool Simd, class C, class T, class Cur>
TFM_ALWAYS_INLINE void run_span(const Cur& cur_in, T* d, index_t j0, index_t j1,
                                bool stream = false) {
  const Cur cur = cur_in;
  index_t j = j0;
  if constexpr (Simd) {
    using Bt = simd::batch<C>;
    constexpr index_t w = static_cast<index_t>(Bt::size);
    if constexpr (std::is_same_v<T, C> && (std::is_same_v<T, float> || std::is_same_v<T, double>)) {
      if (stream && reinterpret_cast<std::uintptr_t>(d + j0) % sizeof(Bt) == 0)
        for (; j + w <= j1; j += w)
          cpu_kernels::stream_detail::stream_store(d + j, batch_at<Bt, true>(cur, j));
    }
    for (; j + w <= j1; j += w) {
      const Bt v = batch_at<Bt, true>(cur, j);
      if constexpr (is_half_v<T>)
        store_from_float(d + j, v);
      else
        v.store_unaligned(d + j);
    }
  }
  for (; j < j1; ++j) d[j] = to_storage<T>(scalar_at<C>(cur, j));
}

/// Elements [j0, j1) of the current row.
template <bool Simd, class C, class T, class Cur>
TFM_ALWAYS_INLINE void run_row(const Cur& cur_in, T* d, index_t inner, index_t j0, index_t j1,
                               bool stream) {
  // A local copy: stores through d cannot alias it, so scalar operands stay in registers.
  const Cur cur = cur_in;
  index_t j = j0;
  if constexpr (Simd) {
    using Bt = simd::batch<C>;
    constexpr index_t w = static_cast<index_t>(Bt::size);
    // The common case, every leaf contiguous or broadcast: no stride tests per batch.
    if (inner == 1 && row_unit_or_broadcast(cur))
      return run_span<Simd, C, T>(cur, d, j0, j1, stream);
    for (; j + w <= j1; j += w) store_batch<T>(d + j * inner, inner, batch_at<Bt>(cur, j));
  }
  for (; j < j1; ++j) d[j * inner] = to_storage<T>(scalar_at<C>(cur, j));
}

/// Elements per work item: a multiple of every SIMD width, large enough to amortise set-up.
inline constexpr index_t elementwise_chunk = 8192;
/// Below this many elements one thread does everything (thread start-up costs more).
inline constexpr index_t elementwise_parallel_min = 1 << 15;

/// Splits [0, n) into elementwise_chunk pieces, run on the OpenMP team when n is large enough;
/// with `fence`, each thread orders its streamed stores once it is done (stream.hpp).
template <class Fn>
void for_each_chunk(index_t n, Fn&& fn, bool fence = false) {
  const index_t chunks = (n + elementwise_chunk - 1) / elementwise_chunk;
  const bool parallel =
      n >= elementwise_parallel_min && chunks > 1 && num_threads() > 1 && !in_parallel();
  if (!parallel) {
    for (index_t c = 0; c < chunks; ++c)
      fn(c * elementwise_chunk, std::min(n, (c + 1) * elementwise_chunk));
    if (fence) cpu_kernels::stream_detail::stream_fence();
    return;
  }
  TFM_OMP(parallel) {
    TFM_OMP(for schedule(static) nowait)
    for (index_t c = 0; c < chunks; ++c)
      fn(c * elementwise_chunk, std::min(n, (c + 1) * elementwise_chunk));
    if (fence) cpu_kernels::stream_detail::stream_fence();
  }
}

}  // namespace detail

/// dst[0 .. n) = node, for a node whose leaves are all contiguous rank-1 views of n elements (or
/// scalars), none overlapping dst except element for element (dst may be one of the leaves).
/// One SIMD loop per expression type, where evaluate() also compiles a strided loop and the
/// rank's row planning: autodiff's elementwise ops, whose values and gradients are always dense,
/// evaluate through it. Same results as evaluate(), independent of the thread count.
template <class T, class N>
void evaluate_contiguous(T* dst, index_t n, const N& node) {
  using C = typename detail::node_compute<N>::type;
  auto cur = detail::make_cursor<1>(node, std::array<index_t, 1>{n});
  using Cur = decltype(cur);
  constexpr bool use_simd = std::is_same_v<compute_t<T>, C> &&
                            detail::simd_cursor_ok<C, Cur>::value && detail::simd_leaf_ok_v<T, C>;
  detail::set_row(cur, std::array<index_t, 1>{0});
  const bool stream = use_simd && detail::stream_elementwise<T>(n);
  detail::for_each_chunk(
      n,
      [&](index_t j0, index_t j1) { detail::run_span<use_simd, C, T>(cur, dst, j0, j1, stream); },
      stream);
}

/// dst = node with SIMD and threads.
template <class T, class S, class B, class N>
void evaluate(const tensor_view<T, S, B>& dst, const N& node, cpu) {
  constexpr std::size_t R = detail::loop_rank<S>;
  using C = typename detail::node_compute<N>::type;
  std::array<index_t, R> ext, dst_st;
  detail::loop_extents<R>(dst, ext, dst_st);
  auto cur0 = detail::make_cursor<R>(node, ext);
  using Cur = decltype(cur0);
  constexpr bool use_simd = std::is_same_v<compute_t<T>, C> &&
                            detail::simd_cursor_ok<C, Cur>::value && detail::simd_leaf_ok_v<T, C>;
  const auto sp = detail::plan_rows<R>(ext, dst_st, cur0);
  if (sp.rows == 0 || sp.cols == 0) return;
  const index_t inner = sp.dst_strides[R - 1];
  const index_t chunks = (sp.cols + detail::elementwise_chunk - 1) / detail::elementwise_chunk;
  const index_t items = sp.rows * chunks;
  const bool parallel = sp.rows * sp.cols >= detail::elementwise_parallel_min && items > 1 &&
                        num_threads() > 1 && !in_parallel();
  // Streamed only where rows are contiguous (run_row's span path); see run_span.
  const bool stream = use_simd && inner == 1 && detail::stream_elementwise<T>(sp.rows * sp.cols);
  auto run_item = [&](Cur& cur, index_t it) {
    index_t r = it / chunks, c = it % chunks;
    auto idx = detail::row_index(sp, r);
    detail::set_row(cur, idx);
    T* d = dst.data() + detail::dst_row_offset(sp, idx);
    index_t j0 = c * detail::elementwise_chunk;
    index_t j1 = std::min(sp.cols, j0 + detail::elementwise_chunk);
    detail::run_row<use_simd, C, T>(cur, d, inner, j0, j1, stream);
  };
  if (!parallel) {
    Cur cur = cur0;
    for (index_t it = 0; it < items; ++it) run_item(cur, it);
    if (stream) cpu_kernels::stream_detail::stream_fence();
    return;
  }
  TFM_OMP(parallel) {
    Cur cur = cur0;
    TFM_OMP(for schedule(static) nowait)
    for (index_t it = 0; it < items; ++it) run_item(cur, it);
    if (stream) cpu_kernels::stream_detail::stream_fence();
  }
}

TFM_END_NAMESPACE
