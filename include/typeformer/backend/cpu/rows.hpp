// typeformer/backend/cpu/rows.hpp
//
// WHAT THIS REPRESENTS
//   Forward row kernels of the cpu backend: softmax, log-softmax, layer norm and RMS norm over
//   the last axis, SIMD (xsimd, default arch) within a row and OpenMP across rows.
//   Scalar references with the same contracts: backend/reference/rows.hpp.
//
// SHAPES
//   x, y: `rows` rows of n elements of T (float or double); row r starts at x + r * ld_x and
//   y + r * ld_y (ld >= n; the gap is neither read nor written). y may equal x with
//   ld_y == ld_x (in place); any other overlap is undefined. Per-row outputs (mean_out,
//   rstd_out) are contiguous arrays of `rows` values. Negative sizes or ld < n (with rows > 1)
//   raise tfm::value_error.
//
// NUMERICS
//   - softmax/log_softmax subtract the row maximum (exact in floating point) before exp, so any
//     finite row (e.g. entries of +-1e4, or all entries equal and large) gives finite results.
//     -inf entries (masking) give 0 / -inf. A fully masked row (all -inf, or n == 0) gives a row
//     of zeros (softmax) / of -inf (log_softmax): no NaN. +inf or NaN inputs give NaN rows.
//     log_softmax is computed as (x - max) - log(sum) to keep its absolute error small.
//   - Norms use two passes over the row (mean around x[0], then squares around the mean split
//     into a T part and a double remainder), so rows with a large mean (1e4 + N(0, 1)) keep full
//     accuracy; lane partial sums are reduced in double. Float rows must have |x| < ~1e19 (the
//     squares are accumulated in float).
//   - Results depend only on the row, never on the thread count or on which thread ran it:
//     1 and N threads give bitwise identical outputs.
//   - Each row is read from memory once; the later passes hit the cache for rows up to the L2
//     size (n = 32000 floats is 125 KiB).
//   - Outputs of at least TFM_STREAM_STORE_BYTES (config.hpp; 32 MiB) are written with
//     non-temporal stores (AVX/AVX-512), skipping the read-for-ownership of y's lines; softmax
//     then keeps exp(x - max) in a per-thread row buffer instead of in y. Results are the same
//     bits either way.
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/cpu/stream.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#if defined(__AVX__)
#include <immintrin.h>  // non-temporal stores
#endif

// GCC 12 reports false -Wmaybe-uninitialized inside the AVX-512 intrinsics that xsimd::exp uses
// (the _mm512_undefined_* pass-through operands); silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

TFM_BEGIN_NAMESPACE

namespace cpu_kernels {

namespace rows_detail {

template <class T>
concept row_scalar = std::is_same_v<T, float> || std::is_same_v<T, double>;

/// Rows of at least this many total elements run in an OpenMP parallel region.
inline constexpr index_t parallel_threshold = index_t{1} << 14;

inline void check_args(const char* op, index_t ld_x, index_t ld_y, index_t rows, index_t n) {
  if (rows < 0 || n < 0) fail(errc::value, op, ": rows (", rows, ") and n (", n, ") must be >= 0.");
  if (rows > 1 && (ld_x < n || ld_y < n)) {
    fail(errc::value, op, ": the row strides ld_x (", ld_x, ") and ld_y (", ld_y,
         ") must be at least the row length n (", n, ").");
  }
}

template <class T>
using batch = xsimd::batch<T>;

/// Rows up to this many bytes get the next row prefetched (into L2) while their compute-bound
/// passes run, so that memory traffic overlaps compute; longer rows would evict themselves.
inline constexpr index_t prefetch_max_row_bytes = index_t{256} * 1024;

/// The next row of input and output, prefetched (x for reading, y for writing: its lines are
/// then owned before the stores arrive) while the current row's cache-resident passes run.
/// x == nullptr: nothing to prefetch.
template <class T>
struct ahead {
  const T* x = nullptr;
  T* y = nullptr;
};

template <class T>
TFM_ALWAYS_INLINE void prefetch_l2(ahead<T> a, index_t i) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(a.x + i, 0, 2);
  if (a.y) __builtin_prefetch(a.y + i, 1, 2);  // null when y is streamed: no read for ownership
#else
  (void)a;
  (void)i;
#endif
}

template <class T>
inline constexpr index_t width = static_cast<index_t>(batch<T>::size);

using stream_detail::stream_fence;
using stream_detail::stream_store;

/// Whether a call writes its output with non-temporal stores: outputs of at least
/// stream_store_bytes() of rows short enough to be buffered in L2, on ISAs with streaming stores.
template <class T>
inline bool stream_output(index_t rows, index_t n) {
  const auto bytes =
      static_cast<unsigned long long>(rows) * static_cast<unsigned long long>(n) * sizeof(T);
  return stream_detail::stream_bytes(bytes) &&
         n * static_cast<index_t>(sizeof(T)) <= prefetch_max_row_bytes;
}

/// y[i] = vec(i) (a batch starting at i) / scalar(i) (one element) for i < n. With `stream`,
/// the sizeof(batch)-aligned middle of y is written with non-temporal stores and the ends with
/// ordinary ones; the values are the same either way.
template <class T, class V, class S>
TFM_ALWAYS_INLINE void write_row(T* y, index_t n, bool stream, V&& vec, S&& scalar) {
  constexpr index_t w = width<T>;
  index_t i = 0;
  if (stream) {
    constexpr std::uintptr_t align = sizeof(batch<T>);
    const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(y) % align;
    // Ordinary stores up to the first aligned batch (the whole row if y is not T-aligned).
    const index_t head =
        mis % sizeof(T) != 0
            ? n
            : std::min<index_t>(n, static_cast<index_t>((align - mis) % align / sizeof(T)));
    for (; i < head; ++i) y[i] = scalar(i);
    for (; i + w <= n; i += w) stream_store(y + i, vec(i));
  } else {
    for (; i + w <= n; i += w) vec(i).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] = scalar(i);
}

/// A per-thread buffer of at least n elements (softmax's exp(x - max) when y is streamed).
template <class T>
inline T* scratch_row(index_t n) {
  static thread_local std::vector<T> buf;
  if (static_cast<index_t>(buf.size()) < n) buf.resize(static_cast<std::size_t>(n));
  return buf.data();
}

/// Lane sum in double, fixed order.
template <class T>
inline double hsum(batch<T> v) {
  alignas(64) T lanes[batch<T>::size];
  v.store_aligned(lanes);
  double s = 0.0;
  for (std::size_t i = 0; i < batch<T>::size; ++i) s += static_cast<double>(lanes[i]);
  return s;
}

template <class T>
inline T hmax(batch<T> v) {
  alignas(64) T lanes[batch<T>::size];
  v.store_aligned(lanes);
  T m = lanes[0];
  for (std::size_t i = 1; i < batch<T>::size; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}

/// The last n % width elements of a row as one batch, padded with `pad`.
template <class T>
inline batch<T> load_tail(const T* p, index_t count, T pad) {
  alignas(64) T buf[batch<T>::size];
  for (index_t i = 0; i < width<T>; ++i) buf[i] = i < count ? p[i] : pad;
  return batch<T>::load_aligned(buf);
}

template <class T>
inline void store_tail(T* p, index_t count, batch<T> v) {
  alignas(64) T buf[batch<T>::size];
  v.store_aligned(buf);
  for (index_t i = 0; i < count; ++i) p[i] = buf[i];
}

template <class T>
inline T row_max(const T* x, index_t n) {
  using B = batch<T>;
  constexpr index_t w = width<T>;
  const T ninf = -std::numeric_limits<T>::infinity();
  B m0(ninf), m1(ninf), m2(ninf), m3(ninf);
  index_t i = 0;
  for (; i + 4 * w <= n; i += 4 * w) {
    m0 = xsimd::max(m0, B::load_unaligned(x + i));
    m1 = xsimd::max(m1, B::load_unaligned(x + i + w));
    m2 = xsimd::max(m2, B::load_unaligned(x + i + 2 * w));
    m3 = xsimd::max(m3, B::load_unaligned(x + i + 3 * w));
  }
  for (; i + w <= n; i += w) m0 = xsimd::max(m0, B::load_unaligned(x + i));
  if (i < n) m1 = xsimd::max(m1, load_tail(x + i, n - i, ninf));
  return hmax(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
}

/// Sum of exp(x - m) over the row; if `out` is non-null also stores exp(x - m) there. The same
/// span of the next row (`next`) is prefetched alongside.
template <class T>
inline double exp_sum(const T* x, T* out, index_t n, T m, ahead<T> next) {
  using B = batch<T>;
  constexpr index_t w = width<T>;
  const B vm(m);
  B s0(T(0)), s1(T(0));
  index_t i = 0;
  for (; i + 2 * w <= n; i += 2 * w) {
    if (next.x) {
      prefetch_l2(next, i);
      prefetch_l2(next, i + w);
    }
    const B e0 = simd::exp_nonpositive(B::load_unaligned(x + i) - vm);
    const B e1 = simd::exp_nonpositive(B::load_unaligned(x + i + w) - vm);
    if (out) {
      e0.store_unaligned(out + i);
      e1.store_unaligned(out + i + w);
    }
    s0 += e0;
    s1 += e1;
  }
  for (; i + w <= n; i += w) {
    const B e = simd::exp_nonpositive(B::load_unaligned(x + i) - vm);
    if (out) e.store_unaligned(out + i);
    s0 += e;
  }
  if (i < n) {
    const B e =
        simd::exp_nonpositive(load_tail(x + i, n - i, -std::numeric_limits<T>::infinity()) - vm);
    if (out) store_tail(out + i, n - i, e);
    s1 += e;
  }
  return hsum(s0 + s1);
}

template <class T>
inline void scale_row(T* y, index_t n, T a) {
  using B = batch<T>;
  constexpr index_t w = width<T>;
  const B va(a);
  index_t i = 0;
  for (; i + w <= n; i += w) (B::load_unaligned(y + i) * va).store_unaligned(y + i);
  for (; i < n; ++i) y[i] *= a;
}

template <class T>
inline void fill_row(T* y, index_t n, T v) {
  for (index_t i = 0; i < n; ++i) y[i] = v;
}

template <class T>
inline void softmax_row(const T* x, T* y, index_t n, ahead<T> next = {}, bool stream = false) {
  const T m = row_max(x, n);
  if (m == -std::numeric_limits<T>::infinity()) return fill_row(y, n, T(0));
  if (!stream) {
    const double s = exp_sum(x, y, n, m, next);  // s >= 1: the max entry contributes exp(0)
    return scale_row(y, n, static_cast<T>(1.0 / s));
  }
  T* e = scratch_row<T>(n);
  const T inv = static_cast<T>(1.0 / exp_sum(x, e, n, m, {next.x, nullptr}));
  const batch<T> vinv(inv);
  write_row(
      y, n, true, [&](index_t i) { return batch<T>::load_unaligned(e + i) * vinv; },
      [&](index_t i) { return e[i] * inv; });
}

/// Single-read variant (Milakov, Gimelshein 2018, arXiv:1805.02867): per-lane running max and
/// rescaled sum in one pass, then y = exp(x - max) / sum. Same results as softmax_row to rounding;
/// kept for the bench (bench/rows), which measures which of the two is faster.
template <class T>
inline void softmax_row_online(const T* x, T* y, index_t n) {
  using B = batch<T>;
  constexpr index_t w = width<T>;
  const T ninf = -std::numeric_limits<T>::infinity();
  B m0(ninf), s0(T(0)), m1(ninf), s1(T(0));
  const auto step = [ninf](B& m, B& s, B v) {
    const B mn = xsimd::max(m, v);
    const B safe = xsimd::select(mn == B(ninf), B(T(0)), mn);  // all -inf so far: keep s = 0
    s = simd::fma(s, simd::exp_nonpositive(m - safe), simd::exp_nonpositive(v - safe));
    m = mn;
  };
  index_t i = 0;
  for (; i + 2 * w <= n; i += 2 * w) {
    step(m0, s0, B::load_unaligned(x + i));
    step(m1, s1, B::load_unaligned(x + i + w));
  }
  for (; i + w <= n; i += w) step(m0, s0, B::load_unaligned(x + i));
  if (i < n) step(m1, s1, load_tail(x + i, n - i, ninf));
  const T m = hmax(xsimd::max(m0, m1));
  if (m == ninf) return fill_row(y, n, T(0));
  const B vm(m);
  const double s =
      hsum(s0 * simd::exp_nonpositive(m0 - vm)) + hsum(s1 * simd::exp_nonpositive(m1 - vm));
  const B inv(static_cast<T>(1.0 / s));
  for (i = 0; i + w <= n; i += w) {
    (simd::exp_nonpositive(B::load_unaligned(x + i) - vm) * inv).store_unaligned(y + i);
  }
  if (i < n)
    store_tail(y + i, n - i, simd::exp_nonpositive(load_tail(x + i, n - i, ninf) - vm) * inv);
}

template <class T>
inline void log_softmax_row(const T* x, T* y, index_t n, ahead<T> next = {}, bool stream = false) {
  using B = batch<T>;
  const T m = row_max(x, n);
  if (m == -std::numeric_limits<T>::infinity()) {
    return fill_row(y, n, -std::numeric_limits<T>::infinity());
  }
  if (stream) next.y = nullptr;
  const T ls = static_cast<T>(std::log(exp_sum<T>(x, nullptr, n, m, next)));
  const B vm(m), vls(ls);
  write_row(
      y, n, stream, [&](index_t i) { return (B::load_unaligned(x + i) - vm) - vls; },
      [&](index_t i) { return (x[i] - m) - ls; });
}

/// Sum of (x - c)^2 over the row (c = 0 for RMS norm), in double.
template <class T>
inline double centred_square_sum(const T* x, index_t n, T c) {
  using B = batch<T>;
  constexpr index_t w = width<T>;
  const B vc(c);
  B s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
  index_t i = 0;
  for (; i + 4 * w <= n; i += 4 * w) {
    const B d0 = B::load_unaligned(x + i) - vc, d1 = B::load_unaligned(x + i + w) - vc;
    const B d2 = B::load_unaligned(x + i + 2 * w) - vc, d3 = B::load_unaligned(x + i + 3 * w) - vc;
    s0 = simd::fma(d0, d0, s0);
    s1 = simd::fma(d1, d1, s1);
    s2 = simd::fma(d2, d2, s2);
    s3 = simd::fma(d3, d3, s3);
  }
  for (; i + w <= n; i += w) {
    const B d = B::load_unaligned(x + i) - vc;
    s0 = simd::fma(d, d, s0);
  }
  if (i < n) {
    const B d = load_tail(x + i, n - i, c) - vc;
    s1 = simd::fma(d, d, s1);
  }
  return hsum((s0 + s1) + (s2 + s3));
}

/// Sum of (x - c) over the row, in double. Summing around c = x[0] keeps float lanes small for
/// rows with a large mean (the shifted-data algorithm; Chan, Golub, LeVeque 1983).
template <class T>
inline double shifted_sum(const T* x, index_t n, T c) {
  using B = batch<T>;
  constexpr index_t w = width<T>;
  const B vc(c);
  B s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
  index_t i = 0;
  for (; i + 4 * w <= n; i += 4 * w) {
    s0 += B::load_unaligned(x + i) - vc;
    s1 += B::load_unaligned(x + i + w) - vc;
    s2 += B::load_unaligned(x + i + 2 * w) - vc;
    s3 += B::load_unaligned(x + i + 3 * w) - vc;
  }
  for (; i + w <= n; i += w) s0 += B::load_unaligned(x + i) - vc;
  if (i < n) s1 += load_tail(x + i, n - i, c) - vc;
  return hsum((s0 + s1) + (s2 + s3));
}

/// y = ((x - shift) - shift_lo) * scale [* gamma] [+ beta], elementwise, where shift + shift_lo
/// is the mean in more than T precision; prefetches `next`; streams y when `stream`.
template <bool HasGamma, bool HasBeta, class T>
inline void affine_row(const T* x, const T* gamma, const T* beta, T shift, T shift_lo, T scale,
                       T* y, index_t n, ahead<T> next, bool stream) {
  using B = batch<T>;
  const B vshift(shift), vlo(shift_lo), vscale(scale);
  if (stream) next.y = nullptr;
  const auto vec = [&](index_t i) {
    if (next.x) prefetch_l2(next, i);
    B t = ((B::load_unaligned(x + i) - vshift) - vlo) * vscale;
    if constexpr (HasGamma && HasBeta) {
      t = simd::fma(t, B::load_unaligned(gamma + i), B::load_unaligned(beta + i));
    } else if constexpr (HasGamma) {
      t = t * B::load_unaligned(gamma + i);
    } else if constexpr (HasBeta) {
      t = t + B::load_unaligned(beta + i);
    }
    return t;
  };
  const auto one = [&](index_t i) {
    T t = ((x[i] - shift) - shift_lo) * scale;
    if constexpr (HasGamma && HasBeta) {
      t = std::fma(t, gamma[i], beta[i]);
    } else if constexpr (HasGamma) {
      t = t * gamma[i];
    } else if constexpr (HasBeta) {
      t = t + beta[i];
    }
    return t;
  };
  write_row(y, n, stream, vec, one);
}

template <class T>
inline void affine_row_dispatch(const T* x, const T* gamma, const T* beta, T shift, T shift_lo,
                                T scale, T* y, index_t n, ahead<T> next, bool stream) {
  if (gamma && beta)
    return affine_row<true, true>(x, gamma, beta, shift, shift_lo, scale, y, n, next, stream);
  if (gamma)
    return affine_row<true, false>(x, gamma, beta, shift, shift_lo, scale, y, n, next, stream);
  if (beta)
    return affine_row<false, true>(x, gamma, beta, shift, shift_lo, scale, y, n, next, stream);
  affine_row<false, false>(x, gamma, beta, shift, shift_lo, scale, y, n, next, stream);
}

/// Runs body(r) for r in [0, rows), in parallel when the work is large enough.
/// A call that streams its output fences each thread's non-temporal stores at the end.
template <class F>
inline void for_each_row(index_t rows, index_t n, bool stream, F&& body) {
  const bool parallel = rows > 1 && rows * n >= parallel_threshold;
  (void)parallel;
  TFM_OMP(parallel if (parallel)) {
    TFM_OMP(for schedule(static))
    for (index_t r = 0; r < rows; ++r) body(r);
    if (stream) stream_fence();
  }
}

/// The row after r (for prefetching), or null for the last row and for rows too long to prefetch.
template <class T>
inline ahead<T> next_row(const T* x, index_t ld_x, T* y, index_t ld_y, index_t r, index_t rows,
                         index_t n) {
  if (r + 1 >= rows || n * static_cast<index_t>(sizeof(T)) > prefetch_max_row_bytes) return {};
  return {x + (r + 1) * ld_x, y + (r + 1) * ld_y};
}

}  // namespace rows_detail

/// y[r, :] = softmax(x[r, :]) = exp(x - max) / sum exp(x - max) for each of `rows` rows.
/// Fully masked rows (all -inf) become zeros. See the header comment for shapes and numerics.
template <class T>
requires rows_detail::row_scalar<T>
void softmax_rows(const T* x, index_t ld_x, T* y, index_t ld_y, index_t rows, index_t n) {
  rows_detail::check_args("softmax_rows", ld_x, ld_y, rows, n);
  const bool stream = rows_detail::stream_output<T>(rows, n);
  rows_detail::for_each_row(rows, n, stream, [&](index_t r) {
    rows_detail::softmax_row(x + r * ld_x, y + r * ld_y, n,
                             rows_detail::next_row(x, ld_x, y, ld_y, r, rows, n), stream);
  });
}

/// y[r, :] = log_softmax(x[r, :]) = (x - max) - log sum exp(x - max). Fully masked rows become
/// -inf. See the header comment for shapes and numerics.
template <class T>
requires rows_detail::row_scalar<T>
void log_softmax_rows(const T* x, index_t ld_x, T* y, index_t ld_y, index_t rows, index_t n) {
  rows_detail::check_args("log_softmax_rows", ld_x, ld_y, rows, n);
  const bool stream = rows_detail::stream_output<T>(rows, n);
  rows_detail::for_each_row(rows, n, stream, [&](index_t r) {
    rows_detail::log_softmax_row(x + r * ld_x, y + r * ld_y, n,
                                 rows_detail::next_row(x, ld_x, y, ld_y, r, rows, n), stream);
  });
}

/// Layer normalisation (Ba, Kiros, Hinton 2016, arXiv:1607.06450) of each row:
/// mean = sum x / n, var = sum (x - mean)^2 / n (biased, as PyTorch), rstd = 1/sqrt(var + eps),
/// y = (x - mean) * rstd * gamma + beta. gamma, beta: n values each, or null for 1 / 0.
/// mean_out, rstd_out: `rows` values each, or null. n == 0 writes nothing.
template <class T>
requires rows_detail::row_scalar<T>
void layer_norm_rows(const T* x, index_t ld_x, const T* gamma, const T* beta, T eps, T* y,
                     index_t ld_y, index_t rows, index_t n, T* mean_out = nullptr,
                     T* rstd_out = nullptr) {
  rows_detail::check_args("layer_norm_rows", ld_x, ld_y, rows, n);
  if (n == 0) return;
  const double inv_n = 1.0 / static_cast<double>(n);
  const bool stream = rows_detail::stream_output<T>(rows, n);
  rows_detail::for_each_row(rows, n, stream, [&](index_t r) {
    const T* xr = x + r * ld_x;
    // mean = mean_hi + mean_lo with mean_hi = T(mean): x - mean_hi is exact for x near the mean,
    // and sum (x - mean_hi)^2 / n = var + mean_lo^2.
    const double mean_d =
        static_cast<double>(xr[0]) + rows_detail::shifted_sum(xr, n, xr[0]) * inv_n;
    const T mean = static_cast<T>(mean_d);
    const double lo = mean_d - static_cast<double>(mean);
    double var = rows_detail::centred_square_sum(xr, n, mean) * inv_n - lo * lo;
    var = var > 0.0 ? var : 0.0;
    const T rstd = static_cast<T>(1.0 / std::sqrt(var + static_cast<double>(eps)));
    rows_detail::affine_row_dispatch(xr, gamma, beta, mean, static_cast<T>(lo), rstd, y + r * ld_y,
                                     n, rows_detail::next_row(x, ld_x, y, ld_y, r, rows, n),
                                     stream);
    if (mean_out) mean_out[r] = mean;
    if (rstd_out) rstd_out[r] = rstd;
  });
}

/// RMS normalisation (Zhang, Sennrich 2019, arXiv:1910.07467) of each row:
/// rstd = 1 / sqrt(sum x^2 / n + eps), y = x * rstd * weight. weight: n values or null (1).
/// rstd_out: `rows` values or null. n == 0 writes nothing.
template <class T>
requires rows_detail::row_scalar<T>
void rms_norm_rows(const T* x, index_t ld_x, const T* weight, T eps, T* y, index_t ld_y,
                   index_t rows, index_t n, T* rstd_out = nullptr) {
  rows_detail::check_args("rms_norm_rows", ld_x, ld_y, rows, n);
  if (n == 0) return;
  const double inv_n = 1.0 / static_cast<double>(n);
  const bool stream = rows_detail::stream_output<T>(rows, n);
  rows_detail::for_each_row(rows, n, stream, [&](index_t r) {
    const T* xr = x + r * ld_x;
    const double ms = rows_detail::centred_square_sum(xr, n, T(0)) * inv_n;
    const T rstd = static_cast<T>(1.0 / std::sqrt(ms + static_cast<double>(eps)));
    rows_detail::affine_row_dispatch(xr, weight, static_cast<const T*>(nullptr), T(0), T(0), rstd,
                                     y + r * ld_y, n,
                                     rows_detail::next_row(x, ld_x, y, ld_y, r, rows, n), stream);
    if (rstd_out) rstd_out[r] = rstd;
  });
}

}  // namespace cpu_kernels

TFM_END_NAMESPACE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
