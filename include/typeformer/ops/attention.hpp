// typeformer/ops/attention.hpp
//
// Scaled dot-product attention (Vaswani et al., arXiv:1706.03762) on vars:
//
//   attention(q (B, H, T, D), k (B, G, S, D), v (B, G, S, D), options) -> (B, H, T, D)
//
// G divides H: G == H is multi-head attention, 1 < G < H grouped-query (GQA, Ainslie et al.,
// arXiv:2305.13245), G == 1 multi-query (MQA). Query i (0 <= i < T) sits at key position
// q_offset + i (default q_offset = S - T: the queries are the last T positions, as in
// KV-cached decoding). Options:
//   causal   key j is visible to query i iff j <= q_offset + i
//   window   sliding window (Mistral style): additionally j > q_offset + i - window (0 = off)
//   alibi    adds -m_h (q_offset + i - j) to the scores, m_h the ALiBi slopes of Press et al.,
//            arXiv:2108.12409 (geometric in 2^(-8/H'), H' the power of two below H, interleaved
//            for the remaining heads)
//   scale    multiplies q k^T (0 = 1/sqrt(D))
//   segments document ids per (batch, position) for sequence packing: several documents share a
//            row of T tokens and key j is visible to query i only if both carry the same id (on
//            top of the other rules). Ids are non-decreasing along a row (documents contiguous),
//            and S == T with q_offset 0 (self-attention over the packed row, no cache).
// A query with no visible key gets an output row of zeros (no NaN).
//
// Packing and positions: RoPE (ops/rope.hpp) makes the score of (i, j) depend on the positions
// only through i - j, and ALiBi and the window use only i - j too, so with the document mask a
// packed row whose positions simply run 0 .. T-1 gives each document the same outputs as running
// it alone at positions 0 .. n-1 (up to rounding in the rotation angles): there is no need to
// restart positions per document. tests/unit/attention/segments_test.cpp checks this.
//
// Two implementations with the same contract:
//   attention(...)           the fused flash-style kernel (backend/cpu/attention.hpp): tiles with
//                            an online softmax, O(T) extra memory, its own vjp (recorded as one
//                            "attention" node that saves only q, k, v, o and the row log-sum-exp)
//   attention_composed(...)  built from differentiable ops (matmul, softmax, index_select); its
//                            forward materialises the (B, H, T, S) probabilities. It is the
//                            reference the fused kernel is tested against.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/attention.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/ops/elementwise.hpp"
#include "typeformer/ops/gather.hpp"
#include "typeformer/ops/matmul.hpp"
#include "typeformer/ops/normalize.hpp"
#include "typeformer/ops/view.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

struct attention_options {
  bool causal = true;
  index_t window = 0;  // sliding window length; 0 = unlimited
  bool alibi = false;
  double scale = 0.0;     // 0: 1/sqrt(D)
  index_t q_offset = -1;  // position of query 0 among the keys; -1: S - T
  /// Document ids per (batch, position), B * T values, row-major; when set, a query sees only keys
  /// of its own document. Ids must be non-decreasing along each row (documents are contiguous);
  /// requires S == T (self-attention without a cache, q_offset 0). Empty: no document mask.
  std::shared_ptr<const std::vector<std::int32_t>> segments;
};

namespace detail {
/// Checks o.segments against (B, T, S) and returns the document bounds of every position:
/// [0, B T) the first position of its document, [B T, 2 B T) one past its last. Null when
/// o.segments is empty. Throws shape_error / value_error naming what is wrong.
inline std::shared_ptr<std::vector<index_t>> attention_segment_bounds(const attention_options& o,
                                                                      index_t B, index_t Tq,
                                                                      index_t S) {
  if (!o.segments || o.segments->empty()) return nullptr;
  const auto& id = *o.segments;
  if (static_cast<index_t>(id.size()) != B * Tq)
    fail(errc::shape, "tfm::attention: options.segments holds ", id.size(),
         " document ids, expected B * T = ", B, " * ", Tq, " = ", B * Tq, ".");
  if (S != Tq)
    fail(errc::shape, "tfm::attention: options.segments needs self-attention with as many keys as ",
         "queries, got T = ", Tq, " queries and S = ", S, " keys.");
  if (o.q_offset > 0)
    fail(errc::value, "tfm::attention: options.segments needs q_offset 0, got ", o.q_offset, ".");
  auto bounds = std::make_shared<std::vector<index_t>>(static_cast<std::size_t>(2 * B * Tq));
  index_t* lo = bounds->data();
  index_t* hi = lo + B * Tq;
  for (index_t b = 0; b < B; ++b) {
    const std::int32_t* r = id.data() + b * Tq;
    for (index_t i = 1; i < Tq; ++i)
      if (r[i] < r[i - 1])
        fail(errc::value, "tfm::attention: options.segments must be non-decreasing along each ",
             "row (documents are contiguous), but row ", b, " has id ", r[i], " at position ", i,
             " after ", r[i - 1], ".");
    for (index_t i = 0; i < Tq; ++i)
      lo[b * Tq + i] = (i > 0 && r[i] == r[i - 1]) ? lo[b * Tq + i - 1] : i;
    for (index_t i = Tq - 1; i >= 0; --i)
      hi[b * Tq + i] = (i + 1 < Tq && r[i] == r[i + 1]) ? hi[b * Tq + i + 1] : i + 1;
  }
  return bounds;
}
}  // namespace detail

/// ALiBi slopes for H heads (Press et al., arXiv:2108.12409, and their reference code for H not
/// a power of two).
inline std::vector<double> alibi_slopes(index_t H) {
  std::vector<double> m;
  auto pow2 = [](index_t n) {
    std::vector<double> s;
    double start = std::pow(2.0, -8.0 / static_cast<double>(n));
    for (index_t i = 0; i < n; ++i) s.push_back(std::pow(start, static_cast<double>(i + 1)));
    return s;
  };
  index_t p = 1;
  while (p * 2 <= H) p *= 2;
  m = pow2(p);
  if (p < H) {
    auto extra = pow2(2 * p);
    for (index_t i = 0; i < H - p; ++i) m.push_back(extra[static_cast<std::size_t>(2 * i)]);
  }
  return m;
}

/// The additive mask/bias (H or 1, T, S): 0 or the ALiBi bias where visible, -inf where not.
template <class T>
tensor<T, dyn_shape<3>> attention_bias(index_t H, index_t Tq, index_t S,
                                       const attention_options& o) {
  const index_t off = o.q_offset < 0 ? S - Tq : o.q_offset;
  const index_t hb = o.alibi ? H : 1;
  auto slopes = o.alibi ? alibi_slopes(H) : std::vector<double>{};
  tensor<T, dyn_shape<3>> m(dyn_shape<3>(hb, Tq, S));
  const double ninf = -std::numeric_limits<double>::infinity();
  for (index_t h = 0; h < hb; ++h)
    for (index_t i = 0; i < Tq; ++i)
      for (index_t j = 0; j < S; ++j) {
        index_t pos = off + i;
        bool vis = (!o.causal || j <= pos) && (o.window <= 0 || j > pos - o.window);
        double b = vis ? 0.0 : ninf;
        if (vis && o.alibi) b = -slopes[static_cast<std::size_t>(h)] * static_cast<double>(pos - j);
        m(h, i, j) = static_cast<T>(b);
      }
  return m;
}

/// The document mask (B, 1, T, T): 0 where key j is in query i's document (equal ids in
/// o.segments), -inf elsewhere. Checks o.segments as attention does.
template <class T>
tensor<T, dyn_shape<4>> attention_segment_mask(index_t B, index_t Tq, index_t S,
                                               const attention_options& o) {
  detail::attention_segment_bounds(o, B, Tq, S);  // validates
  tensor<T, dyn_shape<4>> m(dyn_shape<4>(B, 1, Tq, S));
  const T ninf = -std::numeric_limits<T>::infinity();
  const auto& id = *o.segments;
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Tq; ++i)
      for (index_t j = 0; j < S; ++j)
        m(b, 0, i, j) =
            id[static_cast<std::size_t>(b * Tq + i)] == id[static_cast<std::size_t>(b * Tq + j)]
                ? T(0)
                : ninf;
  return m;
}

/// Composed attention over vars (see the header comment).
template <class T, class SQ, class SK, class SV>
auto attention_composed(const var<T, SQ>& q, const var<T, SK>& k, const var<T, SV>& v,
                        const attention_options& o = {}) {
  static_assert(SQ::rank == 4 && SK::rank == 4 && SV::rank == 4,
                "tfm::attention: q, k and v must be (B, heads, T, D)");
  const index_t H = q.extent(1), G = k.extent(1), Tq = q.extent(2), S = k.extent(2),
                D = q.extent(3);
  if (G == 0 || H % G != 0)
    fail(errc::shape, "tfm::attention: ", H, " query heads cannot share ", G, " key/value heads.");
  if (k.extent(3) != D || v.extent(2) != S || v.extent(1) != G || k.extent(0) != q.extent(0) ||
      v.extent(0) != q.extent(0))
    fail(errc::shape, "tfm::attention: q ", q.shape().to_string(), ", k ", k.shape().to_string(),
         " and v ", v.shape().to_string(), " do not fit (B, H, T, D) / (B, G, S, D).");
  using S4 = dyn_shape<4>;
  var<T, S4> kk(k.data()), vv(v.data());
  if (G != H) {  // repeat each key/value head for its H/G query heads
    tensor<std::int32_t, shape<dyn>> map(H);
    for (index_t h = 0; h < H; ++h) map(h) = static_cast<std::int32_t>(h / (H / G));
    kk = var<T, S4>(index_select<1>(kk, map).data());
    vv = var<T, S4>(index_select<1>(vv, map).data());
  }
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(D));
  var<T, S4> qq(q.data());
  auto scores = matmul(qq, transpose(kk)) * scale;  // (B, H, T, S)
  auto bias = attention_bias<T>(H, Tq, S, o);
  var<T, S4> masked((scores + constant(bias)).data());
  if (o.segments && !o.segments->empty())
    masked =
        var<T, S4>((masked + constant(attention_segment_mask<T>(q.extent(0), Tq, S, o))).data());
  auto p = softmax(masked);
  auto out = matmul(p, vv);
  using SO = shape<SQ::static_extents[0], SQ::static_extents[1], SQ::static_extents[2],
                   SV::static_extents[3]>;
  return var<T, SO>(out.data());
}

namespace detail {
template <class T>
var_ptr<T> ad_flash_attention(const var_ptr<T>& q, const var_ptr<T>& k, const var_ptr<T>& v,
                              const attention_options& o) {
  using K = std::conditional_t<std::is_same_v<T, double>, double, float>;
  cpu_kernels::attention_geometry g;
  g.B = q->extents[0];
  g.H = q->extents[1];
  g.T = q->extents[2];
  g.D = q->extents[3];
  g.G = k->extents[1];
  g.S = k->extents[2];
  if (g.G == 0 || g.H % g.G != 0)
    fail(errc::shape, "tfm::attention: ", g.H, " query heads cannot share ", g.G,
         " key/value heads.");
  if (k->extents[0] != g.B || v->extents[0] != g.B || k->extents[3] != g.D ||
      v->extents[1] != g.G || v->extents[2] != g.S || v->extents[3] != g.D)
    fail(errc::shape, "tfm::attention: q, k and v do not fit (B, H, T, D) / (B, G, S, D).");
  g.q_offset = o.q_offset < 0 ? g.S - g.T : o.q_offset;
  g.causal = o.causal;
  g.window = o.window;
  g.scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(g.D));
  auto slopes =
      std::make_shared<std::vector<double>>(o.alibi ? alibi_slopes(g.H) : std::vector<double>{});
  g.alibi = o.alibi ? slopes->data() : nullptr;
  auto seg = detail::attention_segment_bounds(o, g.B, g.T, g.S);
  if (seg) {
    g.seg_lo = seg->data();
    g.seg_hi = seg->data() + g.B * g.T;
  }
  auto out = result<T>(q->extents);
  auto lse = std::make_shared<std::vector<K>>(static_cast<std::size_t>(g.B * g.H * g.T));
  // Kernel-type copies of the inputs (none for f32/f64) and of the output.
  auto as_k = [](const var_ptr<T>& d) {
    auto t = std::make_shared<std::vector<K>>(static_cast<std::size_t>(d->size()));
    for (index_t i = 0; i < d->size(); ++i)
      (*t)[static_cast<std::size_t>(i)] = static_cast<K>(compute_t<T>(d->value.data()[i]));
    return t;
  };
  std::shared_ptr<std::vector<K>> qk, kk, vk, ok;
  const K *qp, *kp, *vp;
  K* op;
  if constexpr (std::is_same_v<T, K>) {
    qp = q->value.data();
    kp = k->value.data();
    vp = v->value.data();
    op = out->value.data();
  } else {
    qk = as_k(q);
    kk = as_k(k);
    vk = as_k(v);
    ok = std::make_shared<std::vector<K>>(static_cast<std::size_t>(out->size()));
    qp = qk->data();
    kp = kk->data();
    vp = vk->data();
    op = ok->data();
  }
  cpu_kernels::attention_forward<K>(g, qp, kp, vp, op, lse->data());
  if constexpr (!std::is_same_v<T, K>)
    for (index_t i = 0; i < out->size(); ++i) out->value.data()[i] = T(static_cast<float>(op[i]));
  record(out, "attention", {q, k, v},
         [q, k, v, o = out.get(), g, slopes, seg, lse, qk, kk, vk, ok]() mutable {
           g.alibi = slopes->empty() ? nullptr : slopes->data();
           if (seg) {
             g.seg_lo = seg->data();
             g.seg_hi = seg->data() + g.B * g.T;
           }
           using G = grad_t<T>;
           static_assert(std::is_same_v<G, K>, "attention: gradients are held in the kernel type");
           const K *qp, *kp, *vp, *opp;
           if constexpr (std::is_same_v<T, K>) {
             qp = q->value.data();
             kp = k->value.data();
             vp = v->value.data();
             opp = o->value.data();
           } else {
             qp = qk->data();
             kp = kk->data();
             vp = vk->data();
             opp = ok->data();
           }
           // Inputs that need no gradient still get scratch buffers (the kernel writes all three).
           std::vector<K> sq, sk, sv;
           auto grad_or_scratch = [](const auto& d, std::vector<K>& scratch) -> K* {
             if (d->requires_grad) return d->grad_data();
             scratch.assign(static_cast<std::size_t>(d->size()), K(0));
             return scratch.data();
           };
           K* dq = grad_or_scratch(q, sq);
           K* dk = grad_or_scratch(k, sk);
           K* dv = grad_or_scratch(v, sv);
           cpu_kernels::attention_backward<K>(g, qp, kp, vp, opp, lse->data(), o->grad_data(), dq,
                                              dk, dv);
         });
  return out;
}
}  // namespace detail

/// Fused flash-style attention over vars (see the header comment).
template <class T, class SQ, class SK, class SV>
auto attention(const var<T, SQ>& q, const var<T, SK>& k, const var<T, SV>& v,
               const attention_options& o = {}) {
  static_assert(SQ::rank == 4 && SK::rank == 4 && SV::rank == 4,
                "tfm::attention: q, k and v must be (B, heads, T, D)");
  using SO = shape<SQ::static_extents[0], SQ::static_extents[1], SQ::static_extents[2],
                   SV::static_extents[3]>;
  return var<T, SO>(detail::ad_flash_attention<T>(q.data(), k.data(), v.data(), o));
}

TFM_END_NAMESPACE
