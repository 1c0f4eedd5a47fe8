// typeformer/quant/gptq.hpp
//
// WHAT THIS REPRESENTS
//   GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, arXiv:2210.17323): 4-bit weight quantization
//   that minimises the layer's output error ||W X - Q(W) X||^2 on calibration inputs X, column by
//   column, each column's rounding error spread over the columns not yet quantized through the
//   inverse Hessian H^-1, H = 2 X^T X / n (quant/calibrate.hpp). Its output is a group grid
//   (4-bit codes, one f16 scale and for the asymmetric grid one f16 minimum per `group` weights of
//   a row) which, with group 32, is exactly GGML's Q4_0 / Q4_1 blocks (to_ggml), so the file runs
//   in llama.cpp unchanged.
//
//     quant::gptq_factor f = quant::gptq_factorize(H, K, {.percdamp = 0.01});  // per input
//     quant::group_quantized q = quant::gptq_quantize(W, N, K, f, {.grid = int4_grid::q4_0});
//     std::vector<std::byte> blocks = q.to_ggml(ggml_type::q4_0);                // N rows
//
// CONTRACTS
//   - W is N x K row-major (rows = output features, GGUF's ne[0] = K), H is K x K symmetric
//     positive semi-definite. K % group == 0.
//   - Grids (the values the blocks hold; codes q in 0 .. 15):
//       q4_0: w = d (q - 8), d = f16(signed absmax / -8) (ggml's Q4_0 scale);
//       q4_1: w = d q + m,  d = f16((max - min) / 15), m = f16(min) (ggml's Q4_1).
//     A group's parameters are computed from the row's current weights (already updated by the
//     errors of the columns before it) when its first column is reached, then rounded to f16
//     before any code of the group is chosen, so GPTQ's error feedback uses the dequantized
//     values the file will hold. (The reference implementation computes them from the weights
//     before the updates of the current 128-column block; here the block size is a multiple of
//     the group and the group's weights are fully updated.) Codes: q = clamp(floor(w / d + 0.5)
//     + 8, 0, 15) (q4_0), clamp(floor((w - m) / d + 0.5), 0, 15) (q4_1); d == 0 gives 8 / 0.
//   - The algorithm (Algorithm 1 of the paper): dead columns (H_ii == 0) get H_ii = 1 and their
//     weights set to 0; optional act-order permutes columns by decreasing H_ii (stable) and then
//     uses static groups (parameters of every group computed from the original weights, in the
//     original column order, so the groups stay GGML blocks); H += percdamp * mean(diag H) * I;
//     U = upper Cholesky factor of H^-1 (H^-1 = U^T U); for each block of `block` columns, for
//     each column i: quantize, err = (w_i - q_i) / U_ii, w_j -= err U_ij for the block's j > i;
//     after the block, the columns past it get the block's errors at once (lazy batch update).
//     All in double. Rows are independent: they are split over `threads` std::threads and the
//     result does not depend on the thread count.
//   - A weight that is NaN or Inf: tfm::value_error naming its row and column.
//   - A non-positive pivot in the Cholesky factorisation (H + damp I not positive definite)
//     throws tfm::value_error naming the column and asking for a larger percdamp.
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/quant/blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <thread>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace quant {

/// The 4-bit grids GPTQ and AWQ quantize to (the values GGML's blocks hold).
enum class int4_grid : std::uint8_t {
  q4_0,  ///< symmetric: d (q - 8), f16 d
  q4_1,  ///< asymmetric: d q + m, f16 d and m
};

/// 4-bit codes with one scale (and minimum) per `group` weights of a row.
struct group_quantized {
  index_t rows = 0, cols = 0, group = 32;
  int4_grid grid = int4_grid::q4_0;
  std::vector<std::uint8_t> codes;  ///< rows x cols, 0 .. 15, original column order
  std::vector<float> scale;         ///< rows x cols / group (values of f16)
  std::vector<float> minimum;       ///< rows x cols / group for q4_1 (values of f16), else empty

  /// The value the grid holds for (r, c), computed as ggml's dequantizer does (float).
  float value(index_t r, index_t c) const noexcept {
    const std::size_t g = static_cast<std::size_t>(r * (cols / group) + c / group);
    const int q = codes[static_cast<std::size_t>(r * cols + c)];
    if (grid == int4_grid::q4_0) return scale[g] * static_cast<float>(q - 8);
    return scale[g] * static_cast<float>(q) + minimum[g];
  }
  /// rows x cols floats.
  std::vector<float> dequantize() const {
    std::vector<float> out(static_cast<std::size_t>(rows * cols));
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) out[static_cast<std::size_t>(r * cols + c)] = value(r, c);
    return out;
  }
  /// The GGML tensor bytes (rows of cols / 32 blocks): Q4_0 for the q4_0 grid, Q4_1 for q4_1.
  /// Needs group == 32 and the matching type; else tfm::value_error.
  std::vector<std::byte> to_ggml(ggml_type t) const {
    const bool ok = group == 32 && ((t == ggml_type::q4_0 && grid == int4_grid::q4_0) ||
                                    (t == ggml_type::q4_1 && grid == int4_grid::q4_1));
    if (!ok)
      fail(errc::value, "tfm::quant::group_quantized::to_ggml: a ",
           grid == int4_grid::q4_0 ? "q4_0" : "q4_1", " grid with group ", group,
           " cannot be written as ", ggml_type_name(t), " (group 32 and the same grid needed).");
    const std::size_t nb = static_cast<std::size_t>(rows * (cols / 32));
    const std::size_t bs = t == ggml_type::q4_0 ? sizeof(block_q4_0) : sizeof(block_q4_1);
    std::vector<std::byte> out(nb * bs);
    for (std::size_t b = 0; b < nb; ++b) {
      const std::uint8_t* q = codes.data() + b * 32;
      std::uint8_t qs[16];
      for (int j = 0; j < 16; ++j)
        qs[j] = static_cast<std::uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
      if (t == ggml_type::q4_0) {
        block_q4_0 blk;
        blk.d = f16(scale[b]);
        std::memcpy(blk.qs, qs, 16);
        std::memcpy(out.data() + b * bs, &blk, bs);
      } else {
        block_q4_1 blk;
        blk.d = f16(scale[b]);
        blk.m = f16(minimum[b]);
        std::memcpy(blk.qs, qs, 16);
        std::memcpy(out.data() + b * bs, &blk, bs);
      }
    }
    return out;
  }
};

namespace detail::gptq {

inline float f16_round(float v) noexcept { return static_cast<float>(f16(v)); }

/// A group's (d, m) from its current values (see the grids in the file comment).
inline void group_params(const double* w, index_t n, int4_grid grid, float& d, float& m) noexcept {
  if (grid == int4_grid::q4_0) {
    float best = static_cast<float>(w[0]);
    for (index_t j = 1; j < n; ++j) {
      const float v = static_cast<float>(w[j]);
      if (std::fabs(v) > std::fabs(best)) best = v;
    }
    d = f16_round(best / -8.0f);
    m = 0.0f;
    return;
  }
  float mn = static_cast<float>(w[0]), mx = mn;
  for (index_t j = 1; j < n; ++j) {
    const float v = static_cast<float>(w[j]);
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  d = f16_round((mx - mn) / 15.0f);
  m = f16_round(mn);
}

/// The code of w on the grid (d, m) and its value (as ggml's dequantizer computes it).
inline int quantize_value(double w, int4_grid grid, float d, float m, float& value) noexcept {
  int q;
  if (grid == int4_grid::q4_0) {
    q = d == 0.0f ? 8 : static_cast<int>(std::clamp(std::floor(w / d + 0.5) + 8.0, 0.0, 15.0));
    value = d * static_cast<float>(q - 8);
  } else {
    q = d == 0.0f ? 0 : static_cast<int>(std::clamp(std::floor((w - m) / d + 0.5), 0.0, 15.0));
    value = d * static_cast<float>(q) + m;
  }
  return q;
}

/// sum a[k] b[k], k < n: two SIMD partial sums and a scalar tail, added in a fixed order.
inline double dot(const double* a, const double* b, std::size_t n) noexcept {
  using B = simd::batch<double>;
  constexpr std::size_t w = static_cast<std::size_t>(simd::width<double>);
  B s0(0.0), s1(0.0);
  std::size_t k = 0;
  for (; k + 2 * w <= n; k += 2 * w) {
    s0 = simd::fma(simd::load(a + k), simd::load(b + k), s0);
    s1 = simd::fma(simd::load(a + k + w), simd::load(b + k + w), s1);
  }
  for (; k + w <= n; k += w) s0 = simd::fma(simd::load(a + k), simd::load(b + k), s0);
  alignas(64) double lanes[2 * w];
  s0.store_aligned(lanes);
  s1.store_aligned(lanes + w);
  double t = 0;
  for (; k < n; ++k) t = std::fma(a[k], b[k], t);
  for (std::size_t i = 0; i < 2 * w; ++i) t += lanes[i];
  return t;
}

/// y[j] -= e x[j], j < n.
inline void axpy_neg(double e, const double* x, double* y, std::size_t n) noexcept {
  using B = simd::batch<double>;
  constexpr std::size_t w = static_cast<std::size_t>(simd::width<double>);
  const B ne(-e);
  std::size_t j = 0;
  for (; j + w <= n; j += w)
    simd::store(y + j, simd::fma(ne, simd::load(x + j), simd::load(y + j)));
  for (; j < n; ++j) y[j] = std::fma(-e, x[j], y[j]);
}

/// In place: A (n x n, symmetric, row-major) -> its lower Cholesky factor L (A = L L^T; the
/// upper triangle is zeroed). Returns the first column whose pivot is not positive, or -1.
inline index_t cholesky_lower(std::vector<double>& a, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) {
    double* lj = a.data() + j * n;
    const double piv = lj[j] - dot(lj, lj, j);
    if (!(piv > 0.0) || !std::isfinite(piv)) return static_cast<index_t>(j);
    const double djj = std::sqrt(piv);
    lj[j] = djj;
    for (std::size_t i = j + 1; i < n; ++i) {
      double* li = a.data() + i * n;
      li[j] = (li[j] - dot(li, lj, j)) / djj;
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) a[i * n + j] = 0.0;
  return -1;
}

/// (L L^T)^-1 for lower L (n x n): the inverse of the matrix L factors.
inline std::vector<double> inverse_from_cholesky(const std::vector<double>& l, std::size_t n) {
  // T = L^-1 stored transposed: row c of t is column c of L^-1 (nonzero from index c on).
  std::vector<double> t(n * n, 0.0);
  for (std::size_t c = 0; c < n; ++c) {
    double* x = t.data() + c * n;
    x[c] = 1.0 / l[c * n + c];
    for (std::size_t i = c + 1; i < n; ++i) {
      const double* li = l.data() + i * n;
      x[i] = -dot(li + c, x + c, i - c) / li[i];
    }
  }
  // (L^-1)^T L^-1: entry (a, b) = sum over k >= max(a, b) of L^-1[k][a] L^-1[k][b].
  std::vector<double> inv(n * n);
  for (std::size_t a = 0; a < n; ++a)
    for (std::size_t b = a; b < n; ++b) {
      const double v = dot(t.data() + a * n + b, t.data() + b * n + b, n - b);
      inv[a * n + b] = v;
      inv[b * n + a] = v;
    }
  return inv;
}

}  // namespace detail::gptq

struct gptq_options {
  double percdamp = 0.01;  ///< dampening, a fraction of mean(diag H)
  index_t block = 128;     ///< columns per lazy batch update (rounded up to the group)
  index_t group = 32;      ///< weights per scale along a row (32: GGML's blocks)
  bool act_order = false;  ///< columns by decreasing H_ii, static groups
  int4_grid grid = int4_grid::q4_0;
  int threads = 1;  ///< std::threads over rows (<= 0: hardware_concurrency)
};

/// What GPTQ needs of H, computed once per input and shared by the products that read it:
/// the upper Cholesky factor of the dampened inverse Hessian in processing order.
struct gptq_factor {
  index_t K = 0;
  std::vector<double> U;           ///< K x K upper, H^-1 = U^T U (processing order)
  std::vector<index_t> perm;       ///< processing position -> original column
  std::vector<std::uint8_t> dead;  ///< original column: H_ii == 0
  double damp = 0;                 ///< the value added to the diagonal
  bool act_order = false;
};

/// The factor of H (K x K, row-major) for gptq_quantize (see the contracts).
inline gptq_factor gptq_factorize(std::span<const double> H, index_t K,
                                  const gptq_options& o = {}) {
  namespace g = detail::gptq;
  if (K <= 0 || H.size() != static_cast<std::size_t>(K * K))
    fail(errc::value, "tfm::quant::gptq_factorize: H has ", H.size(), " values for K = ", K,
         " (K x K needed).");
  if (!(o.percdamp >= 0.0))
    fail(errc::value, "tfm::quant::gptq_factorize: percdamp = ", o.percdamp, " must be >= 0.");
  const std::size_t k = static_cast<std::size_t>(K);
  gptq_factor f;
  f.K = K;
  f.act_order = o.act_order;
  f.dead.assign(k, 0);
  std::vector<double> diag(k);
  for (std::size_t i = 0; i < k; ++i) {
    diag[i] = H[i * k + i];
    if (!std::isfinite(diag[i]))
      fail(errc::value, "tfm::quant::gptq_factorize: H[", i, "][", i, "] is not finite.");
    if (diag[i] == 0.0) {
      f.dead[i] = 1;
      diag[i] = 1.0;
    }
  }
  f.perm.resize(k);
  std::iota(f.perm.begin(), f.perm.end(), index_t{0});
  if (o.act_order)
    std::stable_sort(f.perm.begin(), f.perm.end(), [&](index_t a, index_t b) {
      return diag[static_cast<std::size_t>(a)] > diag[static_cast<std::size_t>(b)];
    });
  std::vector<double> a(k * k);
  double mean = 0;
  for (std::size_t i = 0; i < k; ++i) mean += diag[i];
  mean /= static_cast<double>(k);
  f.damp = o.percdamp * mean;
  for (std::size_t i = 0; i < k; ++i) {
    const std::size_t pi = static_cast<std::size_t>(f.perm[i]);
    for (std::size_t j = 0; j < k; ++j) {
      const std::size_t pj = static_cast<std::size_t>(f.perm[j]);
      a[i * k + j] = pi == pj ? diag[pi] + f.damp : H[pi * k + pj];
    }
  }
  if (const index_t bad = g::cholesky_lower(a, k); bad >= 0)
    fail(errc::value, "tfm::quant::gptq: H + ", f.damp,
         " I is not positive definite (pivot of column ", bad, "); use a larger percdamp than ",
         o.percdamp, ".");
  std::vector<double> inv = g::inverse_from_cholesky(a, k);
  if (const index_t bad = g::cholesky_lower(inv, k); bad >= 0)
    fail(errc::value, "tfm::quant::gptq: the inverse Hessian lost positive definiteness (column ",
         bad, "); use a larger percdamp than ", o.percdamp, ".");
  f.U.assign(k * k, 0.0);  // U = M^T for H^-1 = M M^T
  for (std::size_t i = 0; i < k; ++i)
    for (std::size_t j = 0; j <= i; ++j) f.U[j * k + i] = inv[i * k + j];
  return f;
}

/// GPTQ of W (rows x cols, row-major floats) with the factor of its input's Hessian.
inline group_quantized gptq_quantize(std::span<const float> W, index_t rows, index_t cols,
                                     const gptq_factor& f, const gptq_options& o = {}) {
  namespace g = detail::gptq;
  if (rows <= 0 || cols <= 0 || W.size() != static_cast<std::size_t>(rows * cols))
    fail(errc::value, "tfm::quant::gptq_quantize: W has ", W.size(), " values for ", rows, " x ",
         cols, ".");
  if (f.K != cols)
    fail(errc::value, "tfm::quant::gptq_quantize: the factor is for K = ", f.K, ", W has ", cols,
         " columns.");
  if (f.act_order != o.act_order)
    fail(errc::value,
         "tfm::quant::gptq_quantize: the factor was made with act_order = ", f.act_order,
         ", the options say ", o.act_order, ".");
  if (o.group <= 0 || cols % o.group != 0)
    fail(errc::value, "tfm::quant::gptq_quantize: ", cols, " columns are not a multiple of group ",
         o.group, ".");
  for (std::size_t i = 0; i < W.size(); ++i)
    if (!std::isfinite(W[i]))
      fail(errc::value, "tfm::quant::gptq_quantize: weight [", static_cast<index_t>(i) / cols, "][",
           static_cast<index_t>(i) % cols, "] is not finite.");
  const index_t gs = o.group, ng = cols / gs;
  const index_t B = std::max<index_t>(1, (std::max<index_t>(o.block, 1) + gs - 1) / gs) * gs;
  const std::size_t K = static_cast<std::size_t>(cols);
  group_quantized out;
  out.rows = rows;
  out.cols = cols;
  out.group = gs;
  out.grid = o.grid;
  out.codes.assign(static_cast<std::size_t>(rows * cols), 0);
  out.scale.assign(static_cast<std::size_t>(rows * ng), 0.0f);
  if (o.grid == int4_grid::q4_1) out.minimum.assign(static_cast<std::size_t>(rows * ng), 0.0f);

  constexpr index_t tile = 8;  // rows that share each read of U
  auto run_rows = [&](index_t r0, index_t r1) {
    std::vector<double> w(static_cast<std::size_t>(tile) * K),
        err(static_cast<std::size_t>(tile * B));
    std::vector<double> orig(K);
    for (index_t t0 = r0; t0 < r1; t0 += tile) {
      const index_t nt = std::min(tile, r1 - t0);
      for (index_t t = 0; t < nt; ++t) {
        const float* src = W.data() + (t0 + t) * cols;
        double* wr = w.data() + static_cast<std::size_t>(t) * K;
        for (std::size_t i = 0; i < K; ++i) {
          const std::size_t c = static_cast<std::size_t>(f.perm[i]);
          wr[i] = f.dead[c] ? 0.0 : static_cast<double>(src[c]);
        }
        if (o.act_order) {  // static groups: from the original (dead-zeroed) row
          for (std::size_t c = 0; c < K; ++c)
            orig[c] = f.dead[c] ? 0.0 : static_cast<double>(src[c]);
          for (index_t gi = 0; gi < ng; ++gi) {
            const std::size_t at = static_cast<std::size_t>((t0 + t) * ng + gi);
            float d, m;
            g::group_params(orig.data() + gi * gs, gs, o.grid, d, m);
            out.scale[at] = d;
            if (!out.minimum.empty()) out.minimum[at] = m;
          }
        }
      }
      for (index_t i1 = 0; i1 < cols; i1 += B) {
        const index_t i2 = std::min(i1 + B, cols);
        for (index_t t = 0; t < nt; ++t) {
          const index_t r = t0 + t;
          double* wr = w.data() + static_cast<std::size_t>(t) * K;
          double* er = err.data() + t * B;
          float d = 0, m = 0;
          for (index_t i = i1; i < i2; ++i) {
            const index_t c = f.perm[static_cast<std::size_t>(i)];
            const std::size_t gidx = static_cast<std::size_t>(r * ng + c / gs);
            if (!o.act_order && i % gs == 0) {
              g::group_params(wr + i, gs, o.grid, d, m);
              out.scale[gidx] = d;
              if (!out.minimum.empty()) out.minimum[gidx] = m;
            } else if (o.act_order) {
              d = out.scale[gidx];
              m = out.minimum.empty() ? 0.0f : out.minimum[gidx];
            }
            float value;
            const int q = g::quantize_value(wr[i], o.grid, d, m, value);
            out.codes[static_cast<std::size_t>(r * cols + c)] = static_cast<std::uint8_t>(q);
            const double* ui = f.U.data() + static_cast<std::size_t>(i) * K;
            const double e = (wr[i] - static_cast<double>(value)) / ui[i];
            er[i - i1] = e;
            g::axpy_neg(e, ui + i + 1, wr + i + 1, static_cast<std::size_t>(i2 - i - 1));
          }
        }
        // Lazy batch update of the columns past the block: W[:, i2:] -= Err U[i1:i2, i2:].
        for (index_t i = i1; i < i2; ++i) {
          const double* ui = f.U.data() + static_cast<std::size_t>(i) * K;
          for (index_t t = 0; t < nt; ++t) {
            const double e = err[static_cast<std::size_t>(t * B + (i - i1))];
            double* wr = w.data() + static_cast<std::size_t>(t) * K;
            g::axpy_neg(e, ui + i2, wr + i2, static_cast<std::size_t>(cols - i2));
          }
        }
      }
    }
  };
  int threads = o.threads > 0 ? o.threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const index_t tiles = (rows + tile - 1) / tile;
  threads = static_cast<int>(std::min<index_t>(std::max(threads, 1), tiles));
  if (threads == 1) {
    run_rows(0, rows);
  } else {
    std::vector<std::thread> pool;
    for (int ti = 0; ti < threads; ++ti) {
      const index_t a = std::min(rows, tiles * ti / threads * tile);
      const index_t b = std::min(rows, tiles * (ti + 1) / threads * tile);
      pool.emplace_back(run_rows, a, b);
    }
    for (auto& th : pool) th.join();
  }
  return out;
}

/// GPTQ of W with its input's Hessian H (gptq_factorize, then gptq_quantize).
inline group_quantized gptq_quantize(std::span<const float> W, index_t rows, index_t cols,
                                     std::span<const double> H, const gptq_options& o = {}) {
  return gptq_quantize(W, rows, cols, gptq_factorize(H, cols, o), o);
}

/// Round to nearest on the same grid as GPTQ (group parameters from the row's values, codes by
/// the same rule): the baseline GPTQ is measured against, and AWQ's quantizer.
inline group_quantized rtn_quantize(std::span<const float> W, index_t rows, index_t cols,
                                    index_t group = 32, int4_grid grid = int4_grid::q4_0) {
  namespace g = detail::gptq;
  if (rows <= 0 || cols <= 0 || W.size() != static_cast<std::size_t>(rows * cols) || group <= 0 ||
      cols % group != 0)
    fail(errc::value, "tfm::quant::rtn_quantize: ", W.size(), " values for ", rows, " x ", cols,
         " with group ", group, ".");
  const index_t ng = cols / group;
  group_quantized out;
  out.rows = rows;
  out.cols = cols;
  out.group = group;
  out.grid = grid;
  out.codes.resize(static_cast<std::size_t>(rows * cols));
  out.scale.resize(static_cast<std::size_t>(rows * ng));
  if (grid == int4_grid::q4_1) out.minimum.resize(static_cast<std::size_t>(rows * ng));
  std::vector<double> w(static_cast<std::size_t>(group));
  for (index_t r = 0; r < rows; ++r)
    for (index_t gi = 0; gi < ng; ++gi) {
      const float* src = W.data() + r * cols + gi * group;
      for (index_t j = 0; j < group; ++j) w[static_cast<std::size_t>(j)] = src[j];
      float d, m, value;
      g::group_params(w.data(), group, grid, d, m);
      const std::size_t at = static_cast<std::size_t>(r * ng + gi);
      out.scale[at] = d;
      if (!out.minimum.empty()) out.minimum[at] = m;
      for (index_t j = 0; j < group; ++j)
        out.codes[static_cast<std::size_t>(r * cols + gi * group + j)] = static_cast<std::uint8_t>(
            g::quantize_value(w[static_cast<std::size_t>(j)], grid, d, m, value));
    }
  return out;
}

/// tr((W - V) H (W - V)^T): the output error sum ||W X - V X||^2 times 2 / n for H = 2 X^T X / n
/// (W, V: rows x K floats; H: K x K).
inline double output_error(std::span<const float> W, std::span<const float> V, index_t rows,
                           index_t K, std::span<const double> H) {
  const std::size_t k = static_cast<std::size_t>(K);
  std::vector<double> d(k), hd(k);
  double total = 0;
  for (index_t r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < k; ++j)
      d[j] = static_cast<double>(W[r * K + static_cast<index_t>(j)]) -
             static_cast<double>(V[r * K + static_cast<index_t>(j)]);
    for (std::size_t i = 0; i < k; ++i) hd[i] = detail::gptq::dot(H.data() + i * k, d.data(), k);
    total += detail::gptq::dot(d.data(), hd.data(), k);
  }
  return total;
}

}  // namespace quant
TFM_END_NAMESPACE
