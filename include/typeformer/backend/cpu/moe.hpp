// typeformer/backend/cpu/moe.hpp
//
// WHAT THIS REPRESENTS
//   The cpu overloads of the mixture-of-experts SwiGLU layer (contract, entry points and the
//   reference oracle: backend/reference/moe.hpp). Grouped, the way MoE layers are run on GPUs
//   (MegaBlocks, Gale et al. 2022, arXiv:2211.15841, without the block-sparse format):
//
//     forward   group the slots by expert (moe_group: stable counting sort)
//               gather       xg (rows, C) = x[token of each grouped row]
//               per expert e on its rows [r0, r1):  a = xg W_gate[e]^T, b = xg W_up[e]^T,
//                            h = silu(a) * b, o = h W_down[e]^T          (three packed GEMMs)
//               combine      y[n] = sum_j gates[n, j] o[row of slot (n, j)]   (in slot order)
//     backward  dgates[n, j] = <dy[n], o[row]>;  d_o[row] = gates[n, j] dy[n]
//               per expert:  d_h = d_o W_down[e];  dW_down[e] (+)= d_o^T h
//                            d_a = d_h * b * silu'(a);  d_b = d_h * silu(a)
//                            dW_gate[e] (+)= d_a^T xg;  dW_up[e] (+)= d_b^T xg
//                            d_xg = d_a W_gate[e] + d_b W_up[e]
//               combine      dx[n] (+)= sum_j d_xg[row of slot (n, j)]        (in slot order)
//
//   The forward keeps xg, a, b, h and o in the cache for the backward (rows x (2C + 3F) values,
//   rows = tokens * k less the dropped slots).
//
// DETERMINISM: whole experts spread over the threads with serial GEMMs, or one expert after
//   another with each GEMM on all threads (detail::moe::for_experts picks from the loads);
//   cpu_kernels::gemm computes every element on one thread in an order fixed by the shape, so
//   both give the same bits; gathers, elementwise passes and the combines split rows or elements
//   among threads and sum each output in slot order. So 1 and N threads give bitwise identical
//   results.
#pragma once

#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/moe.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/node.hpp"

#include <algorithm>
#include <cstring>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace detail::moe {

/// Below this many elements a row loop runs on one thread.
inline constexpr index_t parallel_min = index_t(1) << 15;

/// fn(r) for r in [0, rows): on the cpu backend's threads when rows * width is large enough.
template <class Fn>
void for_rows(index_t rows, index_t width, Fn&& fn) {
  const bool par = rows * width >= parallel_min && num_threads() > 1 && !in_parallel();
  (void)par;
  TFM_OMP(parallel for schedule(static) if (par))
  for (index_t r = 0; r < rows; ++r) fn(r);
}

template <class T>
using flat_view = tensor_view<const T, dyn_shape<1>>;

/// True when for_experts spreads whole experts over nt threads (see there).
inline bool experts_across(const moe_groups& g, index_t F, index_t C, int nt) {
  index_t busiest = 0;
  for (index_t e = 0; e < g.n_expert; ++e) busiest = std::max(busiest, g.count(e));
  constexpr index_t per_thread = cpu_kernels::detail::gemm_work_per_thread;
  return nt > 1 && g.n_expert > 1 && g.rows() * F * C >= 2 * per_thread &&
         (busiest * nt <= g.rows() || busiest * F * C < index_t(nt) * per_thread);
}

/// Runs fn(e) for every expert, in one of two schedules with the same results (a GEMM's path
/// and summation order depend only on its shape, not on the threads that run it):
///   across  whole experts spread over the threads (serial GEMMs; busiest first, dynamic), when
///           no expert holds more than one thread's share of the rows, so the threads can be
///           kept about equally busy, or when even the busiest expert's GEMM is too small to
///           split (decode, small batches); never for less work than the GEMM itself would
///           start a second thread for (a parallel region costs more than tiny experts). At E 8,
///           4096 tokens, 2 threads this took the MoE layer from 0.90x to 0.99x of the dense FFN's
///           speed (bench/moe).
///   within  experts one after another, each GEMM on all threads (one dominant expert).
template <class Fn>
void for_experts(const moe_groups& g, index_t F, index_t C, Fn&& fn) {
  const int nt = in_parallel() ? 1 : num_threads();
  const bool across = experts_across(g, F, C, nt);
  if (!across) {
    for (index_t e = 0; e < g.n_expert; ++e) fn(e);
    return;
  }
  std::vector<index_t> order(static_cast<std::size_t>(g.n_expert));
  for (index_t e = 0; e < g.n_expert; ++e) order[static_cast<std::size_t>(e)] = e;
  std::stable_sort(order.begin(), order.end(),
                   [&](index_t a, index_t b) { return g.count(a) > g.count(b); });
  TFM_OMP(parallel for schedule(dynamic, 1) num_threads(nt))
  for (index_t i = 0; i < g.n_expert; ++i) fn(order[static_cast<std::size_t>(i)]);
}

/// The cpu forward's steps, public to the benchmark (bench/moe) that times them one by one.
template <class T>
struct cpu_steps {
  /// xg[r] = x[token of grouped row r].
  static void gather(const moe_ffn_problem<T>& p, moe_ffn_cache<T>& c) {
    const moe_groups& g = c.groups;
    const index_t C = p.C;
    T* xg = reserve(c.xg, g.rows() * C);
    for_rows(g.rows(), C, [&](index_t r) {
      const T* src = p.x + g.slot[static_cast<std::size_t>(r)] / p.k * C;
      std::memcpy(xg + r * C, src, sizeof(T) * static_cast<std::size_t>(C));
    });
  }
  /// a, b, h, o of expert e's rows (three GEMMs and the SwiGLU).
  static void expert_forward(const moe_ffn_problem<T>& p, moe_ffn_cache<T>& c, index_t e) {
    const index_t C = p.C, F = p.F, r0 = c.groups.offsets[static_cast<std::size_t>(e)];
    const index_t m = c.groups.count(e);
    if (m == 0) return;
    const T* xg = c.xg.data() + r0 * C;
    T* a = c.a.data() + r0 * F;
    T* b = c.b.data() + r0 * F;
    T* h = c.h.data() + r0 * F;
    cpu_kernels::gemm<T>(false, true, m, F, C, T(1), xg, C, p.w_gate + e * F * C, C, T(0), a, F);
    cpu_kernels::gemm<T>(false, true, m, F, C, T(1), xg, C, p.w_up + e * F * C, C, T(0), b, F);
    const dyn_shape<1> s(m * F);
    evaluate_contiguous(h, m * F, silu(flat_view<T>(a, s)) * flat_view<T>(b, s));
    cpu_kernels::gemm<T>(false, true, m, C, F, T(1), h, F, p.w_down + e * C * F, F, T(0),
                         c.o.data() + r0 * C, C);
  }
  /// y[n] = sum_j gates[n, j] o[row of (n, j)], in slot order; 0 for a token without slots.
  static void combine(const moe_ffn_problem<T>& p, const moe_ffn_cache<T>& c, T* y) {
    const index_t C = p.C, K = p.k;
    const std::vector<index_t>& row_of = c.groups.row_of;
    for_rows(p.tokens, C * K, [&](index_t n) {
      T* yn = y + n * C;
      bool first = true;
      for (index_t j = 0; j < K; ++j) {
        const index_t r = row_of[static_cast<std::size_t>(n * K + j)];
        if (r < 0) continue;
        const T g = p.gates[n * K + j];
        const T* o = c.o.data() + r * C;
        if (first) {
          for (index_t i = 0; i < C; ++i) yn[i] = g * o[i];
        } else {
          for (index_t i = 0; i < C; ++i) yn[i] += g * o[i];
        }
        first = false;
      }
      if (first) std::fill(yn, yn + C, T(0));
    });
  }
};

}  // namespace detail::moe

/// y (tokens, C) = the MoE layer, grouped by expert (file comment); fills `cache` for the
/// backward.
template <class T>
void moe_ffn_forward(cpu, const moe_ffn_problem<T>& p, moe_ffn_cache<T>& cache, T* y) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::moe_ffn_forward (cpu): float or double values");
  using steps = detail::moe::cpu_steps<T>;
  const char* who = "tfm::moe_ffn_forward";
  detail::moe::check_problem(p, who);
  detail::moe::need(y, p.tokens * p.C, "y", who);
  moe_group(p.expert, p.tokens, p.k, p.n_expert, cache.groups);
  cache.C = p.C;
  cache.F = p.F;
  cache.grouped = false;
  const index_t R = cache.groups.rows();
  detail::moe::reserve(cache.a, R * p.F);
  detail::moe::reserve(cache.b, R * p.F);
  detail::moe::reserve(cache.h, R * p.F);
  detail::moe::reserve(cache.o, R * p.C);
  steps::gather(p, cache);
  detail::moe::for_experts(cache.groups, p.F, p.C,
                           [&](index_t e) { steps::expert_forward(p, cache, e); });
  cache.grouped = true;
  steps::combine(p, cache, y);
}

/// The vjp of moe_ffn_forward (file comment); `cache` is the forward's.
template <class T>
void moe_ffn_backward(cpu, const moe_ffn_problem<T>& p, moe_ffn_cache<T>& cache, const T* dy,
                      const moe_ffn_grads<T>& gr) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::moe_ffn_backward (cpu): float or double values");
  using detail::moe::flat_view;
  using detail::moe::for_rows;
  using detail::moe::reserve;
  const char* who = "tfm::moe_ffn_backward";
  detail::moe::check_problem(p, who);
  detail::moe::check_grads(p, dy, gr, who);
  const moe_groups& g = cache.groups;
  if (!cache.grouped)
    fail(errc::value, who,
         ": the cache holds no cpu forward (run moe_ffn_forward(cpu{}, ...) first).");
  if (g.tokens != p.tokens || g.k != p.k || g.n_expert != p.n_expert || cache.C != p.C ||
      cache.F != p.F)
    fail(errc::value, who, ": the cache holds a forward of (tokens ", g.tokens, ", k ", g.k, ", E ",
         g.n_expert, ", C ", cache.C, ", F ", cache.F, "), not of this problem (tokens ", p.tokens,
         ", k ", p.k, ", E ", p.n_expert, ", C ", p.C, ", F ", p.F, ").");
  const index_t C = p.C, F = p.F, K = p.k, R = g.rows();
  if (gr.gates.data) {  // dgates[n, j] = <dy[n], o[row]>
    for_rows(p.tokens, C * K, [&](index_t n) {
      for (index_t j = 0; j < K; ++j) {
        const index_t r = g.row_of[static_cast<std::size_t>(n * K + j)];
        double s = 0;
        if (r >= 0) {
          const T* o = cache.o.data() + r * C;
          const T* d = dy + n * C;
          for (index_t i = 0; i < C; ++i) s += static_cast<double>(d[i]) * o[i];
        }
        detail::moe::put(gr.gates, n * K + j, s);
      }
    });
  }
  const bool need_dh = gr.x.data || gr.w_gate.data || gr.w_up.data;
  if (!need_dh && !gr.w_down.data) return;
  T* d_o = reserve(cache.d_o, R * C);
  T* d_h = need_dh ? reserve(cache.d_h, R * F) : nullptr;
  T* d_a = need_dh ? reserve(cache.d_a, R * F) : nullptr;
  T* d_s = need_dh ? reserve(cache.d_s, R * F) : nullptr;
  T* d_xg = gr.x.data ? reserve(cache.d_xg, R * C) : nullptr;
  for_rows(R, C, [&](index_t r) {  // d_o[r] = gates * dy[token]
    const index_t s = g.slot[static_cast<std::size_t>(r)];
    const T gate = p.gates[s];
    const T* d = dy + s / K * C;
    T* out = d_o + r * C;
    for (index_t i = 0; i < C; ++i) out[i] = gate * d[i];
  });
  const T beta_wg = gr.w_gate.accumulate ? T(1) : T(0);
  const T beta_wu = gr.w_up.accumulate ? T(1) : T(0);
  const T beta_wd = gr.w_down.accumulate ? T(1) : T(0);
  detail::moe::for_experts(g, F, C, [&](index_t e) {
    const index_t r0 = g.offsets[static_cast<std::size_t>(e)], m = g.count(e);
    const T* wg = p.w_gate + e * F * C;
    const T* wu = p.w_up + e * F * C;
    const T* wd = p.w_down + e * C * F;
    const T* xg = cache.xg.data() + r0 * C;
    const T* a = cache.a.data() + r0 * F;
    const T* b = cache.b.data() + r0 * F;
    const T* eo = d_o + r0 * C;
    // m == 0: the weight-gradient GEMMs have depth 0 and only scale by beta (zeros or as is).
    if (gr.w_down.data)
      cpu_kernels::gemm<T>(true, false, C, F, m, T(1), eo, C, cache.h.data() + r0 * F, F, beta_wd,
                           gr.w_down.data + e * C * F, F);
    if (!need_dh) return;
    T* eh = d_h + r0 * F;
    T* ea = d_a + r0 * F;
    if (m > 0) {
      cpu_kernels::gemm<T>(false, false, m, F, C, T(1), eo, C, wd, F, T(0), eh, F);
      const dyn_shape<1> s(m * F);
      T* es = d_s + r0 * F;
      const flat_view<T> av(a, s), bv(b, s), hv(eh, s), sv(es, s);
      evaluate_contiguous(es, m * F, sigmoid(av));  // the one exp per element
      evaluate_contiguous(ea, m * F, hv * bv * sv * (T(1) + av * (T(1) - sv)));
      evaluate_contiguous(eh, m * F, hv * av * sv);  // d_b, in place of d_h
    }
    if (gr.w_gate.data)
      cpu_kernels::gemm<T>(true, false, F, C, m, T(1), ea, F, xg, C, beta_wg,
                           gr.w_gate.data + e * F * C, C);
    if (gr.w_up.data)
      cpu_kernels::gemm<T>(true, false, F, C, m, T(1), eh, F, xg, C, beta_wu,
                           gr.w_up.data + e * F * C, C);
    if (d_xg && m > 0) {
      cpu_kernels::gemm<T>(false, false, m, C, F, T(1), ea, F, wg, C, T(0), d_xg + r0 * C, C);
      cpu_kernels::gemm<T>(false, false, m, C, F, T(1), eh, F, wu, C, T(1), d_xg + r0 * C, C);
    }
  });
  if (gr.x.data) {  // dx[n] (+)= sum_j d_xg[row of (n, j)], in slot order
    for_rows(p.tokens, C * K, [&](index_t n) {
      T* dx = gr.x.data + n * C;
      bool have = gr.x.accumulate;
      for (index_t j = 0; j < K; ++j) {
        const index_t r = g.row_of[static_cast<std::size_t>(n * K + j)];
        if (r < 0) continue;
        const T* src = d_xg + r * C;
        if (have) {
          for (index_t i = 0; i < C; ++i) dx[i] += src[i];
        } else {
          std::memcpy(dx, src, sizeof(T) * static_cast<std::size_t>(C));
        }
        have = true;
      }
      if (!have) std::fill(dx, dx + C, T(0));
    });
  }
}

TFM_END_NAMESPACE
