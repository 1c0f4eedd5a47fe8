// typeformer/backend/cpu/attention.hpp
//
// Flash-style attention on the CPU (Dao et al., FlashAttention, arXiv:2205.14135, and
// FlashAttention-2, arXiv:2307.08691): queries and keys are processed in tiles with an online
// softmax, so the (T, S) score matrix never exists; extra memory is O(T) per head (the row
// log-sum-exp kept for the backward pass) plus one tile per thread.
//
// Layout (contiguous, row-major): q, o, do, dq (B, H, T, D); k, v, dk, dv (B, G, S, D); lse
// (B, H, T). Head h reads key/value head h / (H / G). Query i sits at key position q_offset + i.
// Visibility and bias as in ops/attention.hpp (causal, sliding window, ALiBi slopes per head,
// documents of a packed row). Documents: when seg_lo is set (then S == T and q_offset == 0),
// query i of batch b sees key j only if seg_lo[b T + i] <= j < seg_hi[b T + i], the bounds of its
// document; both are non-decreasing in i, so a query tile's keys start at the bound of its first
// query and end at that of its last, and whole key tiles outside are never computed (as for the
// sliding window's lower bound).
//
// Determinism: forward parallelises over (batch, head, query tile); backward over (batch,
// kv-head), whose thread owns that head's dK/dV and the dQ of the query heads sharing it. No two
// threads write the same element and every sum runs in a fixed order, so results do not depend
// on the thread count.
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace cpu_kernels {

struct attention_geometry {
  index_t B = 0, H = 0, G = 0, T = 0, S = 0, D = 0;
  index_t q_offset = 0;
  bool causal = true;
  index_t window = 0;
  double scale = 1.0;
  const double* alibi = nullptr;  // H slopes, or null
  // Document bounds (B * T each, non-decreasing along a row), or null: no document mask.
  const index_t* seg_lo = nullptr;  // first position of the query's document
  const index_t* seg_hi = nullptr;  // one past its last position
};

namespace attention_detail {
inline constexpr index_t tile_q = 64;
inline constexpr index_t tile_k = 64;

inline bool visible(const attention_geometry& g, index_t b, index_t i, index_t j) {
  const index_t pos = g.q_offset + i;
  return (!g.causal || j <= pos) && (g.window <= 0 || j > pos - g.window) &&
         (!g.seg_lo || (j >= g.seg_lo[b * g.T + i] && j < g.seg_hi[b * g.T + i]));
}
/// Key range [lo, hi) that queries [i0, i1) (i1 > i0) of batch b can see at all.
inline void key_range(const attention_geometry& g, index_t b, index_t i0, index_t i1, index_t& lo,
                      index_t& hi) {
  lo = 0;
  hi = g.S;
  if (g.causal) hi = std::min(g.S, g.q_offset + i1);
  if (g.window > 0) lo = std::max<index_t>(0, g.q_offset + i0 - g.window + 1);
  if (g.seg_lo) {  // bounds non-decreasing in the query: the first query's start, the last's end
    lo = std::max(lo, g.seg_lo[b * g.T + i0]);
    hi = std::min(hi, g.seg_hi[b * g.T + i1 - 1]);
  }
  if (hi < lo) hi = lo;
}
/// Query range [lo, hi) of batch b that can see keys [j0, j1) (j1 > j0).
inline void query_range(const attention_geometry& g, index_t b, index_t j0, index_t j1, index_t& lo,
                        index_t& hi) {
  lo = 0;
  hi = g.T;
  if (g.causal) lo = std::clamp<index_t>(j0 - g.q_offset, 0, g.T);
  if (g.window > 0) hi = std::clamp<index_t>(j1 - 1 + g.window - g.q_offset, 0, g.T);
  if (g.seg_lo) {  // S == T: the queries of the documents that keys j0 .. j1-1 belong to
    lo = std::max(lo, g.seg_lo[b * g.T + j0]);
    hi = std::min(hi, g.seg_hi[b * g.T + j1 - 1]);
  }
  if (hi < lo) hi = lo;
}

/// s (nq, nk) = scale * q k^T + bias, -inf where invisible (queries i0.. of batch b, head h).
template <class T>
void scores(const attention_geometry& g, index_t b, index_t h, const T* q, const T* k, index_t i0,
            index_t nq, index_t j0, index_t nk, T* s) {
  gemm<T>(false, true, nq, nk, g.D, static_cast<T>(g.scale), q, g.D, k, g.D, T(0), s, nk);
  // Whole tile visible and no bias: nothing to do (the common case away from the diagonal).
  const bool all_visible =
      (!g.causal || j0 + nk - 1 <= g.q_offset + i0) &&
      (g.window <= 0 || j0 > g.q_offset + i0 + nq - 1 - g.window) &&
      (!g.seg_lo || (j0 >= g.seg_lo[b * g.T + i0 + nq - 1] && j0 + nk <= g.seg_hi[b * g.T + i0]));
  if (all_visible && !g.alibi) return;
  const T ninf = -std::numeric_limits<T>::infinity();
  for (index_t a = 0; a < nq; ++a)
    for (index_t c = 0; c < nk; ++c) {
      const index_t i = i0 + a, j = j0 + c;
      T& x = s[a * nk + c];
      if (!visible(g, b, i, j))
        x = ninf;
      else if (g.alibi)
        x -= static_cast<T>(g.alibi[h] * static_cast<double>(g.q_offset + i - j));
    }
}
/// x[c] = exp(x[c] - sub) for c < n, returning the sum (SIMD; -inf entries give 0).
template <class T>
T exp_shift_sum(T* x, index_t n, T sub) {
  using Bt = simd::batch<T>;
  constexpr index_t w = simd::width<T>;
  Bt acc(T(0)), bs(sub);
  index_t c = 0;
  for (; c + w <= n; c += w) {
    Bt e = simd::exp_nonpositive(simd::load(x + c) - bs);
    simd::store(x + c, e);
    acc += e;
  }
  T sum = simd::reduce_add(acc);
  for (; c < n; ++c) {
    x[c] = std::exp(x[c] - sub);
    sum += x[c];
  }
  return sum;
}
}  // namespace attention_detail

/// o = softmax(scale q k^T + bias) v; lse = log-sum-exp of each score row (-inf if none visible).
template <class T>
void attention_forward(const attention_geometry& g, const T* q, const T* k, const T* v, T* o,
                       T* lse) {
  using namespace attention_detail;
  if (g.G <= 0 || g.H % g.G != 0) fail(errc::shape, "tfm attention: H must be a multiple of G.");
  const index_t nqt = (g.T + tile_q - 1) / tile_q;
  const index_t items = g.B * g.H * nqt;
  const index_t rep = g.H / g.G;
  TFM_OMP(parallel if (items > 1 && num_threads() > 1 && !in_parallel())) {
    std::vector<T> s(static_cast<std::size_t>(tile_q * tile_k)),
        acc(static_cast<std::size_t>(tile_q * g.D)), pv(static_cast<std::size_t>(tile_q * g.D));
    std::vector<T> m(static_cast<std::size_t>(tile_q)), l(static_cast<std::size_t>(tile_q));
    TFM_OMP(for schedule(dynamic, 1))
    for (index_t it = 0; it < items; ++it) {
      const index_t bh = it / nqt, qt = it % nqt, b = bh / g.H, h = bh % g.H;
      const index_t i0 = qt * tile_q, nq = std::min(tile_q, g.T - i0);
      const T* qb = q + ((b * g.H + h) * g.T + i0) * g.D;
      const T* kb = k + (b * g.G + h / rep) * g.S * g.D;
      const T* vb = v + (b * g.G + h / rep) * g.S * g.D;
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      std::fill(acc.begin(), acc.end(), T(0));
      index_t lo, hi;
      key_range(g, b, i0, i0 + nq, lo, hi);
      for (index_t j0 = lo; j0 < hi; j0 += tile_k) {
        const index_t nk = std::min(tile_k, hi - j0);
        scores(g, b, h, qb, kb + j0 * g.D, i0, nq, j0, nk, s.data());
        for (index_t a = 0; a < nq; ++a) {
          T* sr = s.data() + a * nk;
          T mx = m[static_cast<std::size_t>(a)];
          for (index_t c = 0; c < nk; ++c) mx = std::max(mx, sr[c]);
          if (mx == -std::numeric_limits<T>::infinity()) {
            for (index_t c = 0; c < nk; ++c) sr[c] = 0;
            continue;
          }
          const T corr = std::exp(m[static_cast<std::size_t>(a)] - mx);
          const T sum = exp_shift_sum(sr, nk, mx);
          l[static_cast<std::size_t>(a)] = l[static_cast<std::size_t>(a)] * corr + sum;
          m[static_cast<std::size_t>(a)] = mx;
          T* ar = acc.data() + a * g.D;
          for (index_t d = 0; d < g.D; ++d) ar[d] *= corr;
        }
        // acc += p v_tile
        gemm<T>(false, false, nq, g.D, nk, T(1), s.data(), nk, vb + j0 * g.D, g.D, T(1), acc.data(),
                g.D);
      }
      T* ob = o + ((b * g.H + h) * g.T + i0) * g.D;
      T* lb = lse + (b * g.H + h) * g.T + i0;
      for (index_t a = 0; a < nq; ++a) {
        const T la = l[static_cast<std::size_t>(a)];
        const T inv = la > 0 ? T(1) / la : T(0);
        for (index_t d = 0; d < g.D; ++d)
          ob[a * g.D + d] = acc[static_cast<std::size_t>(a * g.D + d)] * inv;
        lb[a] = la > 0 ? m[static_cast<std::size_t>(a)] + std::log(la)
                       : -std::numeric_limits<T>::infinity();
      }
    }
  }
}

/// Gradients: dq += ..., dk += ..., dv += ... (accumulated: callers pass zeroed or existing
/// gradient buffers). o and lse are the forward's outputs.
template <class T>
void attention_backward(const attention_geometry& g, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  using namespace attention_detail;
  const index_t rep = g.H / g.G;
  // delta_i = rowsum(dO_i * O_i)
  std::vector<T> delta(static_cast<std::size_t>(g.B * g.H * g.T));
  TFM_OMP(parallel for schedule(static) if (g.B * g.H * g.T * g.D >= (1 << 15)))
  for (index_t r = 0; r < g.B * g.H * g.T; ++r) {
    T s = 0;
    for (index_t d = 0; d < g.D; ++d) s += dout[r * g.D + d] * o[r * g.D + d];
    delta[static_cast<std::size_t>(r)] = s;
  }
  // P and dS for one (query tile, key tile): p = exp(s - lse), ds = p * (dP - delta).
  auto tile = [&](index_t b, index_t h, index_t i0, index_t nq, index_t j0, index_t nk, T* p,
                  T* ds) {
    const T* qb = q + ((b * g.H + h) * g.T + i0) * g.D;
    const T* kb = k + ((b * g.G + h / rep) * g.S + j0) * g.D;
    const T* vb = v + ((b * g.G + h / rep) * g.S + j0) * g.D;
    const T* dob = dout + ((b * g.H + h) * g.T + i0) * g.D;
    scores(g, b, h, qb, kb, i0, nq, j0, nk, p);
    const T* lb = lse + (b * g.H + h) * g.T + i0;
    for (index_t a = 0; a < nq; ++a) {
      T* pr = p + a * nk;
      if (lb[a] == -std::numeric_limits<T>::infinity())
        std::fill(pr, pr + nk, T(0));
      else
        exp_shift_sum(pr, nk, lb[a]);  // -inf scores give exp(-inf) = 0
    }
    gemm<T>(false, true, nq, nk, g.D, T(1), dob, g.D, vb, g.D, T(0), ds, nk);  // dP = dO v^T
    const T* de = delta.data() + (b * g.H + h) * g.T + i0;
    for (index_t a = 0; a < nq; ++a)
      for (index_t c = 0; c < nk; ++c) ds[a * nk + c] = p[a * nk + c] * (ds[a * nk + c] - de[a]);
  };
  const T sc = static_cast<T>(g.scale);
  // One pass per (batch, kv head): its thread owns dK and dV of that head and dQ of the query
  // heads that share it, so nothing is written by two threads and every sum has a fixed order.
  const index_t nkt = (g.S + tile_k - 1) / tile_k;
  TFM_OMP(parallel if (g.B * g.G > 1 && num_threads() > 1 && !in_parallel())) {
    std::vector<T> p(static_cast<std::size_t>(tile_q * tile_k)), ds(p.size());
    TFM_OMP(for schedule(dynamic, 1))
    for (index_t bg = 0; bg < g.B * g.G; ++bg) {
      const index_t b = bg / g.G, gk = bg % g.G;
      for (index_t kt = 0; kt < nkt; ++kt) {
        const index_t j0 = kt * tile_k, nk = std::min(tile_k, g.S - j0);
        T* dkb = dk + ((b * g.G + gk) * g.S + j0) * g.D;
        T* dvb = dv + ((b * g.G + gk) * g.S + j0) * g.D;
        const T* kb = k + ((b * g.G + gk) * g.S + j0) * g.D;
        index_t lo, hi;
        query_range(g, b, j0, j0 + nk, lo, hi);
        for (index_t h = gk * rep; h < (gk + 1) * rep; ++h)
          for (index_t i0 = lo - lo % tile_q; i0 < hi; i0 += tile_q) {
            const index_t nq = std::min(tile_q, g.T - i0);
            tile(b, h, i0, nq, j0, nk, p.data(), ds.data());
            const T* qb = q + ((b * g.H + h) * g.T + i0) * g.D;
            const T* dob = dout + ((b * g.H + h) * g.T + i0) * g.D;
            T* dqb = dq + ((b * g.H + h) * g.T + i0) * g.D;
            gemm<T>(true, false, nk, g.D, nq, T(1), p.data(), nk, dob, g.D, T(1), dvb,
                    g.D);  // dV += P^T dO
            gemm<T>(true, false, nk, g.D, nq, sc, ds.data(), nk, qb, g.D, T(1), dkb,
                    g.D);  // dK += dS^T Q s
            gemm<T>(false, false, nq, g.D, nk, sc, ds.data(), nk, kb, g.D, T(1), dqb,
                    g.D);  // dQ += dS K s
          }
      }
    }
  }
}

}  // namespace cpu_kernels
TFM_END_NAMESPACE
