// typeformer/backend/reference/moe.hpp
//
// WHAT THIS REPRESENTS
//   The kernels of a mixture-of-experts feed-forward layer with SwiGLU experts (Shazeer et al.
//   2017, arXiv:1701.06538; the expert FFN of Mixtral, arXiv:2401.04088, the llama SwiGLU mlp of
//   Shazeer 2020, arXiv:2002.05202), for a route produced by a router (ops/moe_route.hpp):
//
//     y[n] = sum_j gates[n, j] * FFN_{e(n, j)}(x[n])       over the slots j of token n whose
//                                                          expert id e(n, j) = expert[n*k + j]
//     FFN_e(v) = W_down[e] (silu(W_gate[e] v) * (W_up[e] v))                      is not -1
//
//   x (tokens, C), gates (tokens, k), W_gate and W_up (E, F, C), W_down (E, C, F), all row-major
//   and contiguous; silu(a) = a * sigmoid(a). Entry points, overloaded on the backend tag
//   (backend/tags.hpp):
//
//     moe_ffn_forward(tag, p, cache, y)           y (tokens, C) = the layer (assigned)
//     moe_ffn_backward(tag, p, cache, dy, grads)  the vjp of y for the upstream gradient dy:
//         dgates[n, j] = <dy[n], FFN_e(x[n])>      (the router's only gradient, as in the papers)
//         dx[n]        = sum_j gates[n, j] J_FFN_e(x[n])^T dy[n]
//         dW_*[e]      = sum over e's slots of gates * (the dense FFN's weight gradients)
//       Each requested gradient (non-null data) is assigned, or added to when its `accumulate`
//       flag is set; every element is written (experts without tokens get zero weight gradients).
//
//   moe_group(expert, tokens, k, E, groups) is the grouping both backends use: a stable counting
//   sort of the tokens * k slots by expert id (one pass to count, a scan, one pass to place), so
//   expert e's rows are its slots in token order; dropped slots (-1) get no row. It allocates
//   nothing once `groups` has held a route of the same size (a reusable workspace).
//
//   This file holds the reference overloads: per token and per slot, the plain dense SwiGLU mlp
//   in double accumulation, no grouping, no threads. They are the oracle of the cpu ones
//   (backend/cpu/moe.hpp) and the fallback of every tag derived from tfm::reference; they ignore
//   the cache.
//
// CONTRACTS (every backend)
//   - Sizes >= 0; k >= 1 when tokens > 0; every expert id in [-1, E); otherwise tfm::value_error
//     or tfm::index_error naming the value (and the slot). A null buffer where elements are to be
//     read or written -> tfm::value_error.
//   - moe_ffn_backward needs the cache that moe_ffn_forward filled for the same problem (the cpu
//     backend keeps the grouped activations there); a cache of another problem ->
//     tfm::value_error. The cache may be reused by later forwards (its buffers only grow).
//   - Outputs must not overlap inputs.
#pragma once

#include "typeformer/backend/tags.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/storage.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

TFM_BEGIN_NAMESPACE

/// The slots of a route grouped by expert: expert e owns the grouped rows
/// [offsets[e], offsets[e + 1]), whose slot ids (n * k + j, token n = slot / k) are in
/// `slot`, in token order; row_of maps a slot back to its row (-1 where the slot is dropped).
struct moe_groups {
  index_t tokens = 0, k = 0, n_expert = 0;
  std::vector<index_t> offsets;  ///< E + 1 prefix sums of the per-expert counts
  std::vector<index_t> slot;     ///< rows() slot ids, grouped by expert
  std::vector<index_t> row_of;   ///< tokens * k grouped rows, -1 for dropped slots
  index_t rows() const noexcept { return offsets.empty() ? 0 : offsets.back(); }
  index_t count(index_t e) const noexcept {
    return offsets[static_cast<std::size_t>(e) + 1] - offsets[static_cast<std::size_t>(e)];
  }
};

/// The operands of one MoE SwiGLU layer (file comment): raw row-major buffers.
template <class T>
struct moe_ffn_problem {
  index_t tokens = 0, k = 0, n_expert = 0, C = 0, F = 0;
  const std::int32_t* expert = nullptr;  ///< tokens * k expert ids, -1 = dropped
  const T* gates = nullptr;              ///< (tokens, k)
  const T* x = nullptr;                  ///< (tokens, C)
  const T* w_gate = nullptr;             ///< (E, F, C)
  const T* w_up = nullptr;               ///< (E, F, C)
  const T* w_down = nullptr;             ///< (E, C, F)
};

/// Where one gradient goes: null data = not wanted; accumulate = add to it, else assign.
template <class T>
struct moe_grad_target {
  T* data = nullptr;
  bool accumulate = false;
};

/// The gradients moe_ffn_backward can produce.
template <class T>
struct moe_ffn_grads {
  moe_grad_target<T> x, gates, w_gate, w_up, w_down;
};

/// What a forward keeps for its backward (cpu: the grouping and the grouped activations) and
/// the backward's scratch. Buffers grow only, so a cache reused across calls allocates nothing
/// once it has seen the largest problem.
template <class T>
struct moe_ffn_cache {
  moe_groups groups;
  index_t C = 0, F = 0;
  bool grouped = false;                      ///< the buffers below hold a cpu forward
  detail::aligned_buffer<T> xg, a, b, h, o;  // (rows, C), (rows, F) x 3, (rows, C)
  detail::aligned_buffer<T> d_o, d_h, d_a, d_s, d_xg;
};

namespace detail::moe {

/// buf holds at least n elements (grown without initialisation; never shrunk).
template <class T>
T* reserve(aligned_buffer<T>& buf, index_t n) {
  if (buf.size() < n) buf = aligned_buffer<T>(n, false);
  return buf.data();
}

inline void need(const void* p, index_t n, const char* what, const char* who) {
  if (n > 0 && p == nullptr)
    fail(errc::value, who, ": the buffer '", what, "' is null for ", n, " values.");
}

/// The checks shared by every entry point (file comment, CONTRACTS).
template <class T>
void check_problem(const moe_ffn_problem<T>& p, const char* who) {
  if (p.tokens < 0 || p.k < 0 || p.n_expert < 0 || p.C < 0 || p.F < 0)
    fail(errc::value, who, ": negative size (tokens ", p.tokens, ", k ", p.k, ", E ", p.n_expert,
         ", C ", p.C, ", F ", p.F, ").");
  if (p.tokens > 0 && p.k < 1)
    fail(errc::value, who, ": k = ", p.k, " slots per token; a route needs k >= 1.");
  need(p.expert, p.tokens * p.k, "expert", who);
  need(p.gates, p.tokens * p.k, "gates", who);
  need(p.x, p.tokens * p.C, "x", who);
  need(p.w_gate, p.n_expert * p.F * p.C, "w_gate", who);
  need(p.w_up, p.n_expert * p.F * p.C, "w_up", who);
  need(p.w_down, p.n_expert * p.F * p.C, "w_down", who);
  for (index_t s = 0; s < p.tokens * p.k; ++s) {
    const std::int32_t e = p.expert[s];
    if (e < -1 || e >= p.n_expert)
      fail(errc::index, who, ": slot ", s, " (token ", s / p.k, ", j ", s % p.k,
           ") routes to expert ", e, ", outside [0, ", p.n_expert, ") and not -1 (dropped).");
  }
}

template <class T>
void check_grads(const moe_ffn_problem<T>& p, const T* dy, const moe_ffn_grads<T>& g,
                 const char* who) {
  need(dy, p.tokens * p.C, "dy", who);
  (void)g;
}

/// Writes v to a gradient element: assigned, or added when the target accumulates.
template <class T>
void put(const moe_grad_target<T>& t, index_t i, double v) {
  if (t.accumulate)
    t.data[i] = static_cast<T>(static_cast<double>(t.data[i]) + v);
  else
    t.data[i] = static_cast<T>(v);
}

inline double sigmoid(double a) { return 1.0 / (1.0 + std::exp(-a)); }

/// One expert's hidden layer for one token v (C values): a = W_gate v and b = W_up v (wg, wu:
/// the expert's (F, C) blocks) and h = silu(a) * b, F values each, in double accumulation.
template <class T>
void swiglu_hidden(const T* wg, const T* wu, const T* v, index_t C, index_t F, double* a, double* b,
                   double* h) {
  for (index_t f = 0; f < F; ++f) {
    double sa = 0, sb = 0;
    for (index_t c = 0; c < C; ++c) {
      sa += static_cast<double>(wg[f * C + c]) * static_cast<double>(v[c]);
      sb += static_cast<double>(wu[f * C + c]) * static_cast<double>(v[c]);
    }
    a[f] = sa;
    b[f] = sb;
    h[f] = sa * sigmoid(sa) * sb;
  }
}

}  // namespace detail::moe

/// Groups the tokens * k slots of a route by expert (stable counting sort, file comment).
/// Throws tfm::index_error for an id outside [-1, n_expert).
inline void moe_group(const std::int32_t* expert, index_t tokens, index_t k, index_t n_expert,
                      moe_groups& g) {
  const char* who = "tfm::moe_group";
  if (tokens < 0 || k < 0 || n_expert < 0)
    fail(errc::value, who, ": negative size (tokens ", tokens, ", k ", k, ", E ", n_expert, ").");
  const index_t slots = tokens * k;
  detail::moe::need(expert, slots, "expert", who);
  g.tokens = tokens;
  g.k = k;
  g.n_expert = n_expert;
  g.offsets.assign(static_cast<std::size_t>(n_expert) + 1, 0);
  g.row_of.resize(static_cast<std::size_t>(slots));
  for (index_t s = 0; s < slots; ++s) {  // count (into offsets[e + 1])
    const std::int32_t e = expert[s];
    if (e < -1 || e >= n_expert)
      fail(errc::index, who, ": slot ", s, " (token ", k ? s / k : 0, ", j ", k ? s % k : 0,
           ") routes to expert ", e, ", outside [0, ", n_expert, ") and not -1 (dropped).");
    if (e >= 0) ++g.offsets[static_cast<std::size_t>(e) + 1];
  }
  for (index_t e = 0; e < n_expert; ++e)  // scan
    g.offsets[static_cast<std::size_t>(e) + 1] += g.offsets[static_cast<std::size_t>(e)];
  g.slot.resize(static_cast<std::size_t>(g.rows()));
  // Place, with offsets[e] as expert e's running cursor; afterwards offsets[e] holds the end of
  // e, and one shift restores the starts (so nothing else is allocated).
  for (index_t s = 0; s < slots; ++s) {
    const std::int32_t e = expert[s];
    if (e < 0) {
      g.row_of[static_cast<std::size_t>(s)] = -1;
      continue;
    }
    const index_t r = g.offsets[static_cast<std::size_t>(e)]++;
    g.slot[static_cast<std::size_t>(r)] = s;
    g.row_of[static_cast<std::size_t>(s)] = r;
  }
  for (index_t e = n_expert; e > 0; --e)  // offsets[e] now holds the end of e: shift back
    g.offsets[static_cast<std::size_t>(e)] = g.offsets[static_cast<std::size_t>(e) - 1];
  g.offsets[0] = 0;
}

/// y (tokens, C) = the MoE layer (file comment); per token and slot, double accumulation.
template <class T>
void moe_ffn_forward(reference, const moe_ffn_problem<T>& p, moe_ffn_cache<T>& cache, T* y) {
  const char* who = "tfm::moe_ffn_forward";
  detail::moe::check_problem(p, who);
  detail::moe::need(y, p.tokens * p.C, "y", who);
  cache.C = p.C;
  cache.F = p.F;
  cache.grouped = false;
  moe_group(p.expert, p.tokens, p.k, p.n_expert, cache.groups);
  const index_t C = p.C, F = p.F;
  std::vector<double> a(static_cast<std::size_t>(F)), b(a.size()), h(a.size()),
      acc(static_cast<std::size_t>(C));
  for (index_t n = 0; n < p.tokens; ++n) {
    const T* xn = p.x + n * C;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (index_t j = 0; j < p.k; ++j) {
      const index_t e = p.expert[n * p.k + j];
      if (e < 0) continue;
      const T* wd = p.w_down + e * C * F;
      detail::moe::swiglu_hidden(p.w_gate + e * F * C, p.w_up + e * F * C, xn, C, F, a.data(),
                                 b.data(), h.data());
      const double g = static_cast<double>(p.gates[n * p.k + j]);
      for (index_t c = 0; c < C; ++c) {
        double s = 0;
        for (index_t f = 0; f < F; ++f)
          s += static_cast<double>(wd[c * F + f]) * h[static_cast<std::size_t>(f)];
        acc[static_cast<std::size_t>(c)] += g * s;
      }
    }
    for (index_t c = 0; c < C; ++c) y[n * C + c] = static_cast<T>(acc[static_cast<std::size_t>(c)]);
  }
}

/// The vjp of moe_ffn_forward (file comment); per token and slot, double accumulation.
template <class T>
void moe_ffn_backward(reference, const moe_ffn_problem<T>& p, moe_ffn_cache<T>& cache, const T* dy,
                      const moe_ffn_grads<T>& gr) {
  (void)cache;
  const char* who = "tfm::moe_ffn_backward";
  detail::moe::check_problem(p, who);
  detail::moe::check_grads(p, dy, gr, who);
  const index_t C = p.C, F = p.F, E = p.n_expert, N = p.tokens, K = p.k;
  const auto sz = [](index_t n) { return static_cast<std::size_t>(n); };
  std::vector<double> dx(sz(N * C)), dg(sz(N * K)), dwg(sz(E * F * C)), dwu(sz(E * F * C)),
      dwd(sz(E * C * F));
  std::vector<double> a(sz(F)), b(sz(F)), h(sz(F)), go(sz(C)), da(sz(F)), db(sz(F));
  for (index_t n = 0; n < N; ++n) {
    const T* xn = p.x + n * C;
    const T* dyn_ = dy + n * C;
    for (index_t j = 0; j < K; ++j) {
      const index_t e = p.expert[n * K + j];
      if (e < 0) continue;
      const T* wg = p.w_gate + e * F * C;
      const T* wu = p.w_up + e * F * C;
      const T* wd = p.w_down + e * C * F;
      detail::moe::swiglu_hidden(wg, wu, xn, C, F, a.data(), b.data(), h.data());
      const double g = static_cast<double>(p.gates[n * K + j]);
      double dgate = 0;
      for (index_t c = 0; c < C; ++c) {
        double o = 0;
        for (index_t f = 0; f < F; ++f) o += static_cast<double>(wd[c * F + f]) * h[sz(f)];
        dgate += static_cast<double>(dyn_[c]) * o;
        go[sz(c)] = g * static_cast<double>(dyn_[c]);
      }
      dg[sz(n * K + j)] = dgate;
      for (index_t f = 0; f < F; ++f) {
        double dh = 0;
        for (index_t c = 0; c < C; ++c) {
          dh += static_cast<double>(wd[c * F + f]) * go[sz(c)];
          dwd[sz((e * C + c) * F + f)] += go[sz(c)] * h[sz(f)];
        }
        const double s = detail::moe::sigmoid(a[sz(f)]);
        da[sz(f)] = dh * b[sz(f)] * s * (1.0 + a[sz(f)] * (1.0 - s));
        db[sz(f)] = dh * a[sz(f)] * s;
      }
      for (index_t f = 0; f < F; ++f)
        for (index_t c = 0; c < C; ++c) {
          const double xc = static_cast<double>(xn[c]);
          dwg[sz((e * F + f) * C + c)] += da[sz(f)] * xc;
          dwu[sz((e * F + f) * C + c)] += db[sz(f)] * xc;
          dx[sz(n * C + c)] += static_cast<double>(wg[f * C + c]) * da[sz(f)] +
                               static_cast<double>(wu[f * C + c]) * db[sz(f)];
        }
    }
  }
  const auto write = [&](const moe_grad_target<T>& t, const std::vector<double>& v) {
    if (!t.data) return;
    for (std::size_t i = 0; i < v.size(); ++i) detail::moe::put(t, static_cast<index_t>(i), v[i]);
  };
  write(gr.x, dx);
  write(gr.gates, dg);
  write(gr.w_gate, dwg);
  write(gr.w_up, dwu);
  write(gr.w_down, dwd);
}

TFM_END_NAMESPACE
