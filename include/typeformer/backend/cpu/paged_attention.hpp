// typeformer/backend/cpu/paged_attention.hpp
//
// WHAT THIS REPRESENTS
//   paged_attention(cpu, ...): attention of a batch of sequences through the block tables of a
//   paged KV cache (arXiv:2309.06180; the vocabulary and the reference oracle are in
//   backend/reference/paged_attention.hpp, the cache in infer/paged_kv.hpp).
//
//   Work: one unit per (query, kv head), OpenMP over units with a dynamic schedule. A unit runs
//   on one thread in a fixed order and writes only its own outputs and its own scratch, so a
//   sequence's output is bitwise independent of the thread count and of the other sequences in
//   the batch.
//
//   Each query row (t, h) is computed exactly as the contiguous decode kernel
//   cpu_kernels::kv_decode (backend/cpu/kv_attention.hpp) computes one row: the same dots, the
//   same softmax (the SIMD exp of the flash kernel), the same accumulation order over positions.
//   Hence, bitwise:
//     - decode (n == 1) equals kv_decode on a contiguous kv_store holding the same rows, for
//       every kv_type, which is cached_attention(cpu, T == 1) for f16 / q8_0 / int8 (f32
//       decodes there with a scalar exp: equal to float rounding);
//     - a chunked prefill gives the same rows however the prompt is split into chunks (and the
//       same as decoding it row by row), which a scheduler whose chunks depend on the rest of
//       the batch needs for "the same output alone or in a batch".
//   How, per unit (none of it changes a row's arithmetic):
//     - query rows in tiles of paged_tile_rows; each key row is read (dequantized) once per tile
//       and dotted with the tile's rows and the H / G heads sharing it, W = SIMD-width key rows
//       at a time, whose W horizontal sums fold together (reduce_add_n: the tree of
//       simd::reduce_add, log2 W shuffle levels for all W instead of W reductions);
//     - values: per group of up to paged_key_group rows of a block (read or dequantized once),
//       each output row keeps its fma chains in registers over the group, the heads of a query
//       row together (up to 16 chains with 32 vector registers): one load and one store of an
//       output per group of rows instead of per row;
//     - blocks are scattered in the pool: while reading a block the kernel prefetches the next
//       block's rows (the hardware prefetcher stops at the block boundary).
//   Measured (the timing case of tests/unit/paged_kv, 1 thread, thread CPU time, best of 15;
//   SmolLM2-135M's attention H 9, G 3, D 64; a 2-vCPU Zen 5 at load average 8): decode of 32
//   sequences x 256 positions with blocks scattered over the pool, against 32 cached_attention
//   calls on contiguous kv_stores: f32 0.44 vs 0.90 ms, f16 0.58 vs 1.17, q8_0 0.67 vs 1.11,
//   int8 0.56 vs 1.07; one 512-token prefill chunk against the contiguous flash path: f32 4.6
//   vs 4.1 ms, q8_0 5.9 vs 4.3. The flash prefill agrees with this one to float rounding, not
//   bitwise.
#pragma once

#include "typeformer/backend/cpu/attention.hpp"
#include "typeformer/backend/cpu/kv_attention.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/reference/paged_attention.hpp"
#include "typeformer/backend/tags.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>

TFM_BEGIN_NAMESPACE
namespace cpu_kernels {
namespace paged_detail {

/// scale * (q . k) over D floats, in attend_row's order.
inline float scaled_dot(const float* qr, const float* kr, index_t D, float scale) noexcept {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  const index_t dv = D / w * w;
  V acc(0.0f);
  for (index_t d = 0; d < dv; d += w) acc = simd::fma(simd::load(qr + d), simd::load(kr + d), acc);
  float dot = simd::reduce_add(acc);
  for (index_t d = dv; d < D; ++d) dot = std::fma(qr[d], kr[d], dot);
  return dot * scale;
}

/// s[0, n) = softmax(s[0, n)) in place, with kv_decode's values: its exp (the SIMD exp of the
/// flash kernel), its sum, its 1 / sum; the maximum and the scaling in SIMD (a maximum does not
/// depend on the order, a product is one rounding: the same bits as kv_decode's scalar loops).
inline void softmax_in_place(float* s, index_t n) noexcept {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  const index_t nv = n / w * w;
  float mx = -std::numeric_limits<float>::infinity();
  if (nv > 0) {
    V m = simd::load(s);
    for (index_t j = w; j < nv; j += w) m = xsimd::max(m, simd::load(s + j));
    alignas(64) float lanes[w];
    simd::store(lanes, m);
    for (index_t i = 0; i < w; ++i) mx = std::max(mx, lanes[i]);
  }
  for (index_t j = nv; j < n; ++j) mx = std::max(mx, s[j]);
  const float inv = 1.0f / attention_detail::exp_shift_sum(s, n, mx);
  const V iv(inv);
  for (index_t j = 0; j < nv; j += w) simd::store(s + j, simd::load(s + j) * iv);
  for (index_t j = nv; j < n; ++j) s[j] *= inv;
}

#if defined(__GNUC__)
/// Lane `o` of the "lo" (hi = lo + S / 2) operand when two vectors of N lanes, each holding
/// N / S partial sums of S lanes, fold into one vector of N / (S / 2) partial sums of S / 2 lanes:
/// the halves simd::reduce_add adds at that level, for both vectors at once.
template <int N, int S>
constexpr int fold_lane(int o) noexcept {
  const int k = o / (S / 2), r = o % (S / 2), per = N / S;
  return (k < per ? 0 : N) + (k % per) * S + r;
}

template <int N, int S, std::size_t... I>
TFM_ALWAYS_INLINE simd::reduce_detail::gvec<float, N> fold(simd::reduce_detail::gvec<float, N> a,
                                                           simd::reduce_detail::gvec<float, N> b,
                                                           std::index_sequence<I...>) noexcept {
  const auto lo = __builtin_shufflevector(a, b, fold_lane<N, S>(static_cast<int>(I))...);
  const auto hi = __builtin_shufflevector(a, b, (fold_lane<N, S>(static_cast<int>(I)) + S / 2)...);
  return lo + hi;
}

/// Folds v[0, count) (segments of S lanes) pairwise until one vector of N sums remains.
template <int N, int S>
TFM_ALWAYS_INLINE void fold_all(simd::reduce_detail::gvec<float, N>* v, int count) noexcept {
  if constexpr (S > 1) {
    for (int i = 0; i < count / 2; ++i)
      v[i] = fold<N, S>(v[2 * i], v[2 * i + 1], std::make_index_sequence<N>{});
    fold_all<N, S / 2>(v, count / 2);
  }
}
#endif

/// out[i] = reduce_add(acc[i]) for i < N (N = simd::width<float>), bitwise: the same pairwise
/// tree, computed for the N vectors at once by folding pairs (log2 N shuffle + add levels
/// instead of N separate reductions).
template <int N>
TFM_ALWAYS_INLINE void reduce_add_n(const simd::batch<float>* acc, float* out) noexcept {
#if defined(__GNUC__)
  using reg = simd::reduce_detail::gvec<float, N>;
  if constexpr (N > 1 && sizeof(reg) == sizeof(simd::batch<float>)) {
    reg v[N];
    __builtin_memcpy(v, acc, sizeof v);
    fold_all<N, N>(v, N);
    __builtin_memcpy(out, &v[0], sizeof(reg));
    return;
  }
#endif
  for (int i = 0; i < N; ++i) out[i] = simd::reduce_add(acc[i]);
}

/// out[i] = scaled_dot(qr, kr[i], D, scale) for the N = simd::width<float> key rows kr[i],
/// bitwise.
template <std::size_t... I>
TFM_ALWAYS_INLINE void scaled_dots(const float* qr, const float* const* kr, index_t D, float scale,
                                   float* out, std::index_sequence<I...>) noexcept {
  using V = simd::batch<float>;
  constexpr int N = sizeof...(I);
  const index_t dv = D / N * N;
  V acc[N] = {(static_cast<void>(I), V(0.0f))...};
  for (index_t d = 0; d < dv; d += N) {
    const V qv = simd::load(qr + d);
    ((acc[I] = simd::fma(qv, simd::load(kr[I] + d), acc[I])), ...);
  }
  alignas(64) float sum[N];
  reduce_add_n<N>(acc, sum);
  for (index_t d = dv; d < D; ++d) ((sum[I] = std::fma(qr[d], kr[I][d], sum[I])), ...);
  ((out[I] = sum[I] * scale), ...);
}

/// o_u[d0, d0 + NV * W) += sum over x < m of p_u[j0 + x] rows[x][d0 + ...] for NU outputs u,
/// x ascending: kv_decode's fma chain per output (o = fma(p, v, o), position after position),
/// with the outputs in registers over the m rows (one
/// load and one store per output per group of rows instead of per row).
template <int NU, int NV, std::size_t... I>
TFM_ALWAYS_INLINE void accumulate_rows(const float* const* rows, index_t m, index_t j0, index_t d0,
                                       const float* const* p, float* const* o,
                                       std::index_sequence<I...>) noexcept {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  V acc[NU * NV] = {simd::load(o[I / NV] + d0 + (I % NV) * w)...};  // chain I: output I / NV
  for (index_t x = 0; x < m; ++x) {
    const float* vr = rows[x] + d0;
    ((acc[I] = simd::fma(V(p[I / NV][j0 + x]), simd::load(vr + (I % NV) * w), acc[I])), ...);
  }
  (simd::store(o[I / NV] + d0 + (I % NV) * w, acc[I]), ...);
}

template <int NU>
inline void accumulate_rows_cols(const float* const* rows, index_t m, index_t j0, index_t d0,
                                 index_t nv, const float* const* p, float* const* o) noexcept {
  switch (nv) {
    case 4:
      return accumulate_rows<NU, 4>(rows, m, j0, d0, p, o, std::make_index_sequence<NU * 4>{});
    case 3:
      return accumulate_rows<NU, 3>(rows, m, j0, d0, p, o, std::make_index_sequence<NU * 3>{});
    case 2:
      return accumulate_rows<NU, 2>(rows, m, j0, d0, p, o, std::make_index_sequence<NU * 2>{});
    case 1:
      return accumulate_rows<NU, 1>(rows, m, j0, d0, p, o, std::make_index_sequence<NU>{});
    default:
      return;
  }
}

/// o_u += sum over x < m of p_u[j0 + x] rows[x] for the nu outputs u (all of D), bitwise as
/// kv_decode's loop row after row: column strips of up to 4 SIMD vectors, outputs in groups of up
/// to 4 (32 vector registers: <= 16 chains and the row) or 2, the scalar tail columns as kv_decode.
inline void accumulate_rows_all(const float* const* rows, index_t m, index_t j0, index_t D,
                                const float* const* p, index_t nu, float* const* o) noexcept {
  constexpr index_t w = simd::width<float>, group = w >= 16 ? 4 : 2;
  const index_t dv = D / w * w;
  for (index_t d0 = 0; d0 < dv; d0 += 4 * w) {
    const index_t nv = std::min<index_t>(4, (dv - d0) / w);
    for (index_t u = 0; u < nu;) {
      const index_t k = std::min(group, nu - u);
      if (k == 4)
        accumulate_rows_cols<4>(rows, m, j0, d0, nv, p + u, o + u);
      else if (k == 3)
        accumulate_rows_cols<3>(rows, m, j0, d0, nv, p + u, o + u);
      else if (k == 2)
        accumulate_rows_cols<2>(rows, m, j0, d0, nv, p + u, o + u);
      else
        accumulate_rows_cols<1>(rows, m, j0, d0, nv, p + u, o + u);
      u += k;
    }
  }
  for (index_t u = 0; u < nu; ++u)
    for (index_t x = 0; x < m; ++x)
      for (index_t d = dv; d < D; ++d) o[u][d] = std::fma(p[u][j0 + x], rows[x][d], o[u][d]);
}

/// Asks for the cache lines of n bytes at p (the next block's row: blocks are scattered in the
/// pool, so the hardware prefetcher loses the stream at each block boundary).
inline void prefetch_row(const std::byte* p, index_t n) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  for (index_t i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 3);
#else
  (void)p;
  (void)n;
#endif
}

/// One (query, kv head g) unit. s: paged_attention_scratch's share of one kv head,
/// tile * rep * ctx + paged_key_group * D floats (scores of a tile of rows, dequantized rows).
/// Walks the block table block by block (no division per position); locals instead of struct fields
/// in the inner loops, so that the stores into s cannot make the compiler reload them.
inline void attend_unit(const paged_layer_view& kv, const paged_query& q, index_t g, index_t rep,
                        float scale, float* s) {
  const index_t D = kv.D, bt = kv.block_tokens, nb = kv.blocks, pos = q.pos, ctx = pos + q.n;
  const index_t h0 = g * rep, tile = std::min(q.n, paged_tile_rows), ldq = q.ldq, ldo = q.ldo;
  const kv_type type = kv.type;
  const bool f32 = type == kv_type::f32;
  const index_t rb = static_cast<index_t>(kv_row_bytes(type, D));
  const std::int32_t* blocks = q.blocks.data();
  const float* const qb = q.q;
  float* const ob = q.out;
  constexpr int W = simd::width<float>;
  static_assert(W <= paged_key_group, "tfm: paged_attention's scratch holds 16 key rows");
  float* buf = s + tile * rep * ctx;  // W rows of D
  for (index_t t0 = 0; t0 < q.n; t0 += paged_tile_rows) {
    const index_t r = std::min(paged_tile_rows, q.n - t0), last = pos + t0 + r;
    // s[(tt * rep + hh) * ctx + j] = scale q_{t0+tt, h0+hh} . k_j   (j <= pos + t0 + tt), in
    // groups of W key rows (scaled_dots; a group's invisible scores are written and ignored),
    // the last j % W rows one at a time
    const float* kr[W];
    for (index_t b = 0, j0 = 0, i = 0; j0 < last; ++b, j0 += bt) {
      const index_t row0 = (g * nb + blocks[b]) * bt - j0, jn = std::min(last, j0 + bt);
      const std::byte* next = j0 + bt < last ? kv.k + (g * nb + blocks[b + 1]) * bt * rb : nullptr;
      for (index_t j = j0; j < jn; ++j) {
        if (next) prefetch_row(next + (j - j0) * rb, rb);
        if (f32) {
          kr[i] = reinterpret_cast<const float*>(kv.k) + (row0 + j) * D;
        } else {
          dequantize_kv_row(type, kv.k, kv.k_scale, row0 + j, D, buf + i * D);
          kr[i] = buf + i * D;
        }
        if (++i < W && j + 1 < last) continue;
        const index_t jg = j + 1 - i;  // the group's first key
        for (index_t tt = std::max<index_t>(0, jg - pos - t0); tt < r; ++tt) {
          const float* qr = qb + (t0 + tt) * ldq + h0 * D;
          float* sr = s + tt * rep * ctx + jg;
          for (index_t hh = 0; hh < rep; ++hh) {
            if (i == W)
              scaled_dots(qr + hh * D, kr, D, scale, sr + hh * ctx, std::make_index_sequence<W>{});
            else
              for (index_t x = 0; x < i; ++x)
                sr[hh * ctx + x] = scaled_dot(qr + hh * D, kr[x], D, scale);
          }
        }
        i = 0;
      }
    }
    for (index_t tt = 0; tt < r; ++tt)
      for (index_t hh = 0; hh < rep; ++hh) {
        softmax_in_place(s + (tt * rep + hh) * ctx, pos + t0 + tt + 1);
        std::fill_n(ob + (t0 + tt) * ldo + (h0 + hh) * D, D, 0.0f);
      }
    // o_{t, h} += p_{t, h}[j] v_j: per group of up to paged_key_group rows of a block (read or
    // dequantized once), each output row's chains in registers over the group
    const float* vr[paged_key_group];
    for (index_t b = 0, j0 = 0; j0 < last; ++b, j0 += bt) {
      const index_t row0 = (g * nb + blocks[b]) * bt - j0, jn = std::min(last, j0 + bt);
      const std::byte* next = j0 + bt < last ? kv.v + (g * nb + blocks[b + 1]) * bt * rb : nullptr;
      for (index_t js = j0; js < jn; js += paged_key_group) {
        const index_t m = std::min(paged_key_group, jn - js);
        for (index_t x = 0; x < m; ++x) {
          if (next) prefetch_row(next + (js + x - j0) * rb, rb);
          if (f32) {
            vr[x] = reinterpret_cast<const float*>(kv.v) + (row0 + js + x) * D;
          } else {
            dequantize_kv_row(type, kv.v, kv.v_scale, row0 + js + x, D, buf + x * D);
            vr[x] = buf + x * D;
          }
        }
        for (index_t tt = std::max<index_t>(0, js - pos - t0); tt < r; ++tt) {
          const index_t mt = std::min(m, pos + t0 + tt + 1 - js);  // rows row tt sees
          for (index_t h = 0; h < rep; h += 8) {
            const index_t nu = std::min<index_t>(8, rep - h);
            const float* pu[8];
            float* ou[8];
            for (index_t u = 0; u < nu; ++u) {
              pu[u] = s + (tt * rep + h + u) * ctx;
              ou[u] = ob + (t0 + tt) * ldo + (h0 + h + u) * D;
            }
            accumulate_rows_all(vr, mt, js, D, pu, nu, ou);
          }
        }
      }
    }
  }
}

}  // namespace paged_detail
}  // namespace cpu_kernels

/// paged_attention on the cpu backend (see the file comment). scratch: at least
/// paged_attention_scratch(kv, n_head, qs) floats.
inline void paged_attention(cpu, const paged_layer_view& kv, index_t n_head, double scale,
                            std::span<const paged_query> qs, float* scratch) {
  paged_detail::check(kv, n_head, qs);
  const index_t G = kv.G, rep = n_head / G, units = static_cast<index_t>(qs.size()) * G;
  const float sc = static_cast<float>(scale);
  double work = 0;  // multiply-adds, to decide whether threads pay
  for (const paged_query& q : qs)
    work += static_cast<double>(q.n) * static_cast<double>(q.pos + q.n) *
            static_cast<double>(n_head * kv.D);
  static_cast<void>(work);  // read only by the OpenMP clause
  TFM_OMP(parallel for schedule(dynamic, 1) if (work >= (1 << 15) && units > 1 &&
                                                num_threads() > 1 && !in_parallel()))
  for (index_t u = 0; u < units; ++u) {
    const index_t i = u / G, g = u % G;
    float* s = scratch;  // this query's share, then this kv head's
    for (index_t k = 0; k < i; ++k)
      s += paged_attention_scratch(kv, n_head, qs[static_cast<std::size_t>(k)]);
    const paged_query& q = qs[static_cast<std::size_t>(i)];
    if (q.n == 0) continue;
    const index_t tile = std::min(q.n, paged_tile_rows);
    s += g * (tile * rep * (q.pos + q.n) + paged_key_group * kv.D);
    cpu_kernels::paged_detail::attend_unit(kv, q, g, rep, sc, s);
  }
}

TFM_END_NAMESPACE
