// typeformer/ops/linear_loss.hpp
//
// The language-model head and its loss as one op:
//
//   linear_cross_entropy(x (..., C), W (V, C), targets (...), options)
//     == cross_entropy(linear(x, W), targets, options)
//
// with the reductions (mean, sum, none) and options (ignore_index, label_smoothing) of
// ops/loss.hpp. For float and double the values and gradients are bitwise those of the
// composition on the cpu backend (the tests check it); bf16/f16 run the composition itself.
//
// What the fusion saves is the (rows, V) gradient of the logits. The forward still computes and
// keeps the logits (the backward needs them), but the backward walks the vocabulary in chunks of
// vc columns, forms the chunk's softmax gradient G_c (rows x vc) in a buffer that stays in
// cache, and feeds it straight to both weight-side products:
//
//   dx  = sum_c G_c W_c          (W_c: rows [v0, v0 + vc) of W; beta 1 after the first chunk)
//   dW_c = G_c^T x               (each chunk writes its own rows of dW)
//
// so the gradient is never written to memory, nor re-read (twice, once transposed) by the
// GEMMs' packing. At GPT-2's vocabulary and 1024 rows that is 205 MB written and 410 MB read per
// step, and the logit gradient's 205 MB are not allocated. vc is a multiple of the GEMM's depth
// block kc, so dx sums its K = V terms in the same blocks and order as the one big GEMM; dW's
// sums run over the rows, which the chunking does not touch.
//
// lce_logits::recompute (the fifth argument) keeps the logits neither: the forward computes them
// in blocks of rows (lce_recompute_rows: about 8 MiB of logits at a time), keeps each row's
// log-sum-exp and drops the block; the backward computes each vocabulary chunk's logits again,
// x W_c^T (rows x vc, in the buffer that then holds G_c), before the two products above. Memory:
// rows doubles plus two buffers of a few MiB instead of rows x V values (201 MB at 1024 rows of
// SmolLM2's 49152 classes); cost: one more head GEMM (x W^T) per step, and W packed once per
// row block in the forward. Every logit is the same GEMM element in the same depth blocks and
// order as in the one big product (the packed kernel for all parts; products the dispatcher
// would send to the GEMV or the unpacked path, rows or V of 1 or tiny ones, keep the stored
// mode), so the gradients are bitwise those of lce_logits::store and so is each row's
// log-sum-exp, and with it the loss (every mode computes a row's loss with ops/loss.hpp's
// ce_row_loss, as cross_entropy does).
// Measured on SmolLM2-135M, 4 x 256 tokens, one thread: +0.7 CPU s on a 3.9 s LoRA step.
//
// A frozen weight held in another format (frozen_rows: bf16 or NF4 rows, nn/qlora.hpp
// quantize_embedding) takes a third form: linear_cross_entropy(x, rows_ptr, targets, opt) reads W
// a vocabulary chunk at a time into an f32 buffer (vc x C) and never holds it whole, twice per
// step: the forward computes each chunk's logits for every row and folds them into running row
// statistics (the max, the sum of exp(x - max) rescaled when the max grows, the plain sum and
// the target's logit: the online log-sum-exp of Milakov & Gimelshein, arXiv:1805.02867); the
// backward computes them again to form G_c and dx (W gets no gradient). The loss equals the
// stored mode's on the same values up to rounding (another summation order), not bitwise.
//
// The products are the backend's: overloads on the tag B (backend/<tag>/linear_loss.hpp), the
// template parameter after the reduction, cpu by default
// (linear_cross_entropy<ce_reduction::mean, reference>(x, W, targets) runs the oracle's): the
// logits (whole, or row-stable blocks and chunks of them), dx's and dW's products, and the
// blocking that the row blocks and chunks follow. The bitwise claims above are the cpu
// backend's; the reference backend (plain loops) agrees with it to rounding, and its recompute
// mode equals its stored mode bitwise as well.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/linear_loss.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/reference/linear_loss.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/loss.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

/// What linear_cross_entropy keeps for its backward (file comment): the logits (store, the
/// default), or only each row's log-sum-exp, the logits being computed again chunk by chunk in
/// the backward (recompute: one more head GEMM, no rows x V buffer). Same values either way.
enum class lce_logits { store, recompute };

/// A frozen (rows x cols) matrix held in some other format, read back a range of rows at a time
/// (the tied embedding/head of a QLoRA base in bf16 or NF4: nn/qlora.hpp).
template <class T>
class frozen_rows {
 public:
  virtual ~frozen_rows() = default;
  virtual index_t rows() const noexcept = 0;
  virtual index_t cols() const noexcept = 0;
  /// Rows [r0, r1) as T, row-major into out ((r1 - r0) x cols()); 0 <= r0 <= r1 <= rows().
  virtual void read_rows(index_t r0, index_t r1, T* out) const = 0;
  /// Bytes the format holds.
  virtual std::size_t bytes() const noexcept = 0;
};

namespace detail {

/// Bytes of logits the recompute mode's forward holds at a time (one block of rows).
inline constexpr index_t lce_recompute_bytes = index_t(8) << 20;

/// Rows per forward block of the recompute mode at V classes: whole row tiles of backend B's
/// row-stable product (cpu: the micro-kernel's mr) within lce_recompute_bytes of logits, at
/// least one tile.
template <class T, class B = cpu>
index_t lce_recompute_rows(index_t V) {
  constexpr index_t mr = lce_kernel_blocking<T>(B{}).row_tile;
  const index_t fit = lce_recompute_bytes / (std::max<index_t>(V, 1) * index_t(sizeof(T)));
  return std::max<index_t>(mr, fit / mr * mr);
}

/// Vocabulary columns per backward chunk for `rows` rows: whole depth blocks of backend B's dx
/// product (cpu: the GEMM's kc), as many as keep the chunk's gradient within about 1 MiB (at
/// least one block, at most eight).
template <class T, class B = cpu>
index_t lce_chunk_columns(index_t rows) {
  constexpr index_t kc = lce_kernel_blocking<T>(B{}).depth_block;
  const index_t block_bytes = std::max<index_t>(rows, 1) * kc * static_cast<index_t>(sizeof(T));
  return kc * std::clamp<index_t>((index_t(1) << 20) / block_bytes, 1, 8);
}

/// The vjp: dx (rows, C) and dW (V, C) from the saved logits (rows, V) and row statistics, one
/// vocabulary chunk at a time (file comment). g is the output's gradient.
/// With logits == nullptr (the recompute mode) each chunk's logits are computed again into the
/// chunk's buffer, where G_c then replaces them. B: the backend of the products.
template <ce_reduction Red, class B, class T>
void lce_backward(var_data<T>& x, var_data<T>& w, const T* logits, const ce_targets& tg,
                  const std::vector<double>& lse, const T* g, index_t rows, index_t V, index_t C,
                  const cross_entropy_options& opt) {
  // No products: as in cross_entropy(linear()), whose backward stops at the empty logits (the
  // engine skips an output with no elements), neither x nor W gets a gradient.
  if (rows == 0 || V == 0 || C == 0) return;
  const index_t vc = std::min(V, lce_chunk_columns<T, B>(rows));
  aligned_buffer<T> gc(rows * vc, false);  // G_c, rows x vc (leading dimension vc)
  using target = typename var_data<T>::grad_target;
  const target dx = x.requires_grad ? x.grad_for_overwrite() : target{};
  const target dw = w.requires_grad ? w.grad_for_overwrite() : target{};
  T* gp = gc.data();
  for (index_t v0 = 0; v0 < V; v0 += vc) {
    const index_t n = std::min(vc, V - v0);
    if (!logits) {  // recompute: the chunk's logits x W_c^T, rows x n, then G_c in place
      lce_logits_rows(B{}, rows, n, C, x.value.data(), w.value.data() + v0 * C, gp, n);
      TFM_OMP(parallel for schedule(static) if (rows * n >= (1 << 16)))
      for (index_t r = 0; r < rows; ++r)
        ce_row_grad(gp + r * n, gp + r * n, v0, n, V, (*tg.t)[static_cast<std::size_t>(r)],
                    opt.ignore_index, lse[static_cast<std::size_t>(r)],
                    ce_row_scale<Red>(g, r, tg.counted), opt.label_smoothing, false);
    } else {
      TFM_OMP(parallel for schedule(static) if (rows * n >= (1 << 16)))
      for (index_t r = 0; r < rows; ++r) {
        // The chunk's stretch of each row (vc values) lies a whole logit row (V values) past the
        // last: too far apart for the hardware prefetcher, which stops at page boundaries. Asking
        // for the stretch two rows ahead cut this loop's share of a 6l384 training step from 3.9%
        // to 2.8% on one thread (perf, same run).
        if (r + 2 < rows) {
          const char* ahead = reinterpret_cast<const char*>(logits + (r + 2) * V + v0);
          for (index_t b = 0; b < n * index_t(sizeof(T)); b += 64) __builtin_prefetch(ahead + b);
        }
        ce_row_grad(logits + r * V + v0, gp + r * n, v0, n, V, (*tg.t)[static_cast<std::size_t>(r)],
                    opt.ignore_index, lse[static_cast<std::size_t>(r)],
                    ce_row_scale<Red>(g, r, tg.counted), opt.label_smoothing, false);
      }
    }
    if (x.requires_grad)  // dx (rows, C) (+)= G_c (rows, n) W_c (n, C)
      lce_grad_x(B{}, rows, C, n, gp, w.value.data() + v0 * C, v0 == 0 ? dx.beta() : T(1), dx.data);
    if (w.requires_grad)  // dW_c (n, C) (+)= G_c^T (n, rows) x (rows, C)
      lce_grad_w(B{}, n, C, rows, gp, x.value.data(), dw.beta(), dw.data + v0 * C);
  }
}

/// The output record of the per-row losses, reduced as ce_forward reduces them.
template <ce_reduction Red, class T>
var_ptr<T> lce_output(const std::vector<double>& losses, const ce_targets& tg,
                      const std::vector<index_t>& lead) {
  std::vector<index_t> oe;
  if constexpr (Red == ce_reduction::none) oe = lead;
  auto out = result<T>(oe);
  if constexpr (Red == ce_reduction::none) {
    for (std::size_t r = 0; r < losses.size(); ++r)
      out->value.data()[r] = to_storage<T>(static_cast<compute_t<T>>(losses[r]));
  } else {
    double total = 0;
    for (double l : losses) total += l;  // fixed order, as ce_forward
    if (Red == ce_reduction::mean)
      total = tg.counted ? total / static_cast<double>(tg.counted)
                         : std::numeric_limits<double>::quiet_NaN();
    out->value.data()[0] = to_storage<T>(static_cast<compute_t<T>>(total));
  }
  return out;
}

/// Running statistics of one row over the vocabulary chunks seen so far (frozen_rows form):
/// max m, s = sum exp(x - m), the plain sum, the target's logit.
struct lce_online {
  double m = -std::numeric_limits<double>::infinity();
  double s = 0, sum = 0, xt = 0;
  double lse() const { return std::isfinite(m) ? m + std::log(s) : m; }
};

/// Folds n more logits of a row into st (SIMD max, sum and exp as row_lse_and_sum).
template <class T>
void lce_online_add(const T* x, index_t n, lce_online& st) {
  using Bt = simd::batch<T>;
  constexpr index_t w = simd::width<T>;
  index_t j = 0;
  Bt bm(-std::numeric_limits<T>::infinity()), bs(T(0));
  for (; j + w <= n; j += w) {
    const Bt v = simd::load(x + j);
    bm = xsimd::max(bm, v);
    bs += v;
  }
  alignas(64) T lanes[Bt::size];
  bm.store_aligned(lanes);
  T mx = -std::numeric_limits<T>::infinity();
  for (std::size_t k = 0; k < Bt::size; ++k) mx = std::max(mx, lanes[k]);
  double sum = static_cast<double>(simd::reduce_add(bs));
  for (; j < n; ++j) {
    mx = std::max(mx, x[j]);
    sum += static_cast<double>(x[j]);
  }
  st.sum += sum;
  const double nm = std::max(st.m, static_cast<double>(mx));
  if (!std::isfinite(nm)) {  // +inf or NaN: the lse is that, as in row_lse_and_sum
    st.m = std::isnan(static_cast<double>(mx)) ? static_cast<double>(mx) : nm;
    return;
  }
  const Bt b(static_cast<T>(nm));
  Bt acc(T(0));
  index_t i = 0;
  for (; i + w <= n; i += w) acc += simd::exp_nonpositive(simd::load(x + i) - b);
  double e = static_cast<double>(simd::reduce_add(acc));
  for (; i < n; ++i) e += std::exp(static_cast<double>(x[i]) - nm);
  st.s = (std::isfinite(st.m) ? st.s * std::exp(st.m - nm) : 0.0) + e;
  st.m = nm;
}

/// The frozen_rows form's forward (file comment): fills lse per counted row.
template <ce_reduction Red, class B, class T>
var_ptr<T> lce_forward_rows(const T* x, const frozen_rows<T>& w, index_t rows, index_t V, index_t C,
                            const ce_targets& tg, std::vector<double>& lse,
                            const std::vector<index_t>& lead, const cross_entropy_options& opt) {
  std::vector<lce_online> st(static_cast<std::size_t>(rows));
  if (rows > 0 && V > 0) {
    const index_t vc = std::min(V, lce_chunk_columns<T, B>(rows));
    aligned_buffer<T> wb(vc * std::max<index_t>(C, 1), false), lg(rows * vc, false);
    for (index_t v0 = 0; v0 < V; v0 += vc) {
      const index_t n = std::min(vc, V - v0);
      if (C == 0) {
        std::fill(lg.data(), lg.data() + rows * n, T(0));
      } else {
        w.read_rows(v0, v0 + n, wb.data());
        lce_logits_rows(B{}, rows, n, C, x, wb.data(), lg.data(), n);
      }
      const T* lp = lg.data();
      TFM_OMP(parallel for schedule(static) if (rows * n >= (1 << 16)))
      for (index_t r = 0; r < rows; ++r) {
        const std::int64_t t = (*tg.t)[static_cast<std::size_t>(r)];
        if (t == opt.ignore_index) continue;
        auto& s = st[static_cast<std::size_t>(r)];
        lce_online_add(lp + r * n, n, s);
        if (t >= v0 && t < v0 + n) s.xt = static_cast<double>(lp[r * n + (t - v0)]);
      }
    }
  }
  std::vector<double> losses(static_cast<std::size_t>(rows));
  const double eps = opt.label_smoothing;
  for (std::size_t r = 0; r < losses.size(); ++r) {
    if ((*tg.t)[r] == opt.ignore_index) continue;
    lse[r] = st[r].lse();
    losses[r] = ce_row_loss(lse[r], st[r].xt, st[r].sum, eps, V);
  }
  return lce_output<Red, T>(losses, tg, lead);
}

/// The frozen_rows form's vjp: dx only, W's chunks read and their logits computed again.
template <ce_reduction Red, class B, class T>
void lce_backward_rows(var_data<T>& x, const frozen_rows<T>& w, const ce_targets& tg,
                       const std::vector<double>& lse, const T* g, index_t rows, index_t V,
                       index_t C, const cross_entropy_options& opt) {
  if (!x.requires_grad || rows == 0 || V == 0 || C == 0) return;
  const index_t vc = std::min(V, lce_chunk_columns<T, B>(rows));
  aligned_buffer<T> wb(vc * C, false), gc(rows * vc, false);
  using target = typename var_data<T>::grad_target;
  const target dx = x.grad_for_overwrite();
  T* gp = gc.data();
  for (index_t v0 = 0; v0 < V; v0 += vc) {
    const index_t n = std::min(vc, V - v0);
    w.read_rows(v0, v0 + n, wb.data());
    lce_logits_rows(B{}, rows, n, C, x.value.data(), wb.data(), gp, n);
    TFM_OMP(parallel for schedule(static) if (rows * n >= (1 << 16)))
    for (index_t r = 0; r < rows; ++r)
      ce_row_grad(gp + r * n, gp + r * n, v0, n, V, (*tg.t)[static_cast<std::size_t>(r)],
                  opt.ignore_index, lse[static_cast<std::size_t>(r)],
                  ce_row_scale<Red>(g, r, tg.counted), opt.label_smoothing, false);
    // dx (rows, C) (+)= G_c (rows, n) W_c (n, C)
    lce_grad_x(B{}, rows, C, n, gp, wb.data(), v0 == 0 ? dx.beta() : T(1), dx.data);
  }
}

/// The recompute mode's forward: the loss as ce_forward computes it from the logits, these
/// computed lce_recompute_rows rows at a time; fills lse per counted row.
template <ce_reduction Red, class B, class T>
var_ptr<T> lce_forward_blocks(const T* x, const T* w, index_t rows, index_t V, index_t C,
                              const ce_targets& tg, std::vector<double>& lse,
                              const std::vector<index_t>& lead, const cross_entropy_options& opt) {
  std::vector<double> losses(static_cast<std::size_t>(rows));
  const double eps = opt.label_smoothing;
  const index_t rb = std::min(rows, lce_recompute_rows<T, B>(V));
  aligned_buffer<T> block(rb * V, false);
  for (index_t r0 = 0; r0 < rows; r0 += rb) {
    const index_t m = std::min(rb, rows - r0);
    lce_logits_rows(B{}, m, V, C, x + r0 * C, w, block.data(), V);
    const T* lg = block.data();
    TFM_OMP(parallel for schedule(static) if (m * V >= (1 << 16)))
    for (index_t i = 0; i < m; ++i) {  // ce_forward's row, with the row at lg + i * V
      const auto r = static_cast<std::size_t>(r0 + i);
      const std::int64_t t = (*tg.t)[r];
      if (t == opt.ignore_index) {
        losses[r] = 0;
        continue;
      }
      auto [l, s] = row_lse_and_sum(lg + i * V, V);
      lse[r] = l;
      const double xt = static_cast<double>(compute_t<T>(lg[i * V + t]));
      losses[r] = ce_row_loss(l, xt, s, eps, V);
    }
  }
  return lce_output<Red, T>(losses, tg, lead);
}

template <ce_reduction Red, class B, class T, std::size_t R, class I>
var_ptr<T> ad_linear_cross_entropy(const var_ptr<T>& x, const var_ptr<T>& w, const I& targets,
                                   cross_entropy_options opt, lce_logits keep) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  const index_t C = x->extents[R - 1];
  check_weight_shape("tfm::linear_cross_entropy", *w, C, "classes");
  const index_t V = w->extents[0];
  const index_t rows = C ? x->size() / C : 0;
  const std::vector<index_t> lead(x->extents.begin(), x->extents.end() - 1);
  const ce_targets tg = ce_check("tfm::linear_cross_entropy", eval(targets), lead, rows, V, opt);
  if (keep == lce_logits::recompute && lce_logits_rows_match_full(B{}, rows, V, C)) {
    auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(rows));
    auto out = lce_forward_blocks<Red, B>(x->value.data(), w->value.data(), rows, V, C, tg, *lse,
                                          lead, opt);
    record(out, "linear_cross_entropy", {x, w}, [x, w, tg, lse, o = out.get(), V, C, rows, opt] {
      lce_backward<Red, B>(*x, *w, static_cast<const T*>(nullptr), tg, *lse, o->grad_data(), rows,
                           V, C, opt);
    });
    return out;
  }
  // Forward: the logits exactly as linear() computes them, then the loss as cross_entropy().
  auto logits = std::make_shared<aligned_buffer<T>>(rows * V, false);
  if (rows && V) {
    if (C == 0)
      std::fill(logits->data(), logits->data() + rows * V, T(0));
    else
      lce_logits_full(B{}, rows, V, C, x->value.data(), w->value.data(), logits->data());
  }
  auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(rows));
  auto out = ce_forward<Red>(logits->data(), rows, V, tg, *lse, lead, opt);
  record(out, "linear_cross_entropy", {x, w},
         [x, w, logits, tg, lse, o = out.get(), V, C, rows, opt] {
           lce_backward<Red, B>(*x, *w, logits->data(), tg, *lse, o->grad_data(), rows, V, C, opt);
         });
  return out;
}

}  // namespace detail

/// cross_entropy(linear(x, W), targets, opt) as one op whose backward never materialises the
/// logits' gradient (file comment). x (..., C), W (V, C) stored (out, in) like linear's weight,
/// integer targets (...). `keep`: store the logits for the backward (default) or recompute them
/// there (lce_logits; float and double, bitwise the same results; bf16/f16 ignore it).
/// B: the backend whose products it runs (float and double; bf16/f16 run linear()'s).
template <ce_reduction Red = ce_reduction::mean, class B = cpu, class T, class SX, class SW,
          class I>
requires dense_type<I> && backend<B>
auto linear_cross_entropy(const var<T, SX>& x, const var<T, SW>& w, const I& targets,
                          cross_entropy_options opt = {}, lce_logits keep = lce_logits::store) {
  static_assert(SW::rank == 2, "tfm::linear_cross_entropy: the weight must be (classes, in)");
  static_assert(SX::static_extents[SX::rank - 1] == dyn || SW::static_extents[1] == dyn ||
                    SX::static_extents[SX::rank - 1] == SW::static_extents[1],
                "tfm::linear_cross_entropy: the input's last extent differs from the weight's "
                "'in' extent");
  static_assert(std::is_integral_v<typename std::remove_cvref_t<I>::value_type>,
                "tfm::linear_cross_entropy: targets must be integers");
  if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
    (void)keep;
    return cross_entropy<Red>(linear(x, w), targets, opt);
  } else {
    auto d = detail::ad_linear_cross_entropy<Red, B, T, SX::rank>(x.data(), w.data(),
                                                                  targets.view(), opt, keep);
    if constexpr (Red == ce_reduction::none)
      return var<T, detail::take_shape_t<SX, SX::rank - 1>>(d);
    else
      return var<T, shape<>>(d);
  }
}

/// cross_entropy(linear(x, W), targets, opt) with W (V, C) a frozen matrix held as frozen_rows
/// (file comment): W is read a vocabulary chunk at a time and gets no gradient; x does. Float
/// and double; B: the backend whose products it runs.
template <ce_reduction Red = ce_reduction::mean, class B = cpu, class T, class SX, class I>
requires dense_type<I> && backend<B>
auto linear_cross_entropy(const var<T, SX>& x, std::shared_ptr<const frozen_rows<T>> w,
                          const I& targets, cross_entropy_options opt = {}) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::linear_cross_entropy: a frozen_rows weight needs float or double");
  static_assert(std::is_integral_v<typename std::remove_cvref_t<I>::value_type>,
                "tfm::linear_cross_entropy: targets must be integers");
  constexpr std::size_t R = SX::rank;
  const auto& xd = x.data();
  if (!w) fail(errc::value, "tfm::linear_cross_entropy: the frozen weight is null.");
  const index_t C = xd->extents[R - 1];
  if (w->cols() != C)
    fail(errc::shape, "tfm::linear_cross_entropy: the frozen weight has shape (", w->rows(), ", ",
         w->cols(), ") but the input's last axis has ", C,
         " features; the weight must be (classes, in).");
  const index_t V = w->rows();
  const index_t rows = C ? xd->size() / C : 0;
  const std::vector<index_t> lead(xd->extents.begin(), xd->extents.end() - 1);
  const detail::ce_targets tg =
      detail::ce_check("tfm::linear_cross_entropy", eval(targets.view()), lead, rows, V, opt);
  auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(rows));
  auto out =
      detail::lce_forward_rows<Red, B>(xd->value.data(), *w, rows, V, C, tg, *lse, lead, opt);
  detail::record(
      out, "linear_cross_entropy", {xd}, [xd, w, tg, lse, o = out.get(), V, C, rows, opt] {
        detail::lce_backward_rows<Red, B>(*xd, *w, tg, *lse, o->grad_data(), rows, V, C, opt);
      });
  if constexpr (Red == ce_reduction::none)
    return var<T, detail::take_shape_t<SX, R - 1>>(out);
  else
    return var<T, shape<>>(out);
}

TFM_END_NAMESPACE
