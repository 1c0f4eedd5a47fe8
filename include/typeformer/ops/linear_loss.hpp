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
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/loss.hpp"

#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail {

/// Vocabulary columns per backward chunk for `rows` rows: whole GEMM depth blocks (kc), as many
/// as keep the chunk's gradient within about 1 MiB (at least one block, at most eight).
template <class T>
index_t lce_chunk_columns(index_t rows) {
  constexpr index_t kc = cpu_kernels::gemm_config_t<T>::kc;
  const index_t block_bytes = std::max<index_t>(rows, 1) * kc * static_cast<index_t>(sizeof(T));
  return kc * std::clamp<index_t>((index_t(1) << 20) / block_bytes, 1, 8);
}

/// The vjp: dx (rows, C) and dW (V, C) from the saved logits (rows, V) and row statistics, one
/// vocabulary chunk at a time (file comment). g is the output's gradient.
template <ce_reduction Red, class T>
void lce_backward(var_data<T>& x, var_data<T>& w, const T* logits, const ce_targets& tg,
                  const std::vector<double>& lse, const T* g, index_t rows, index_t V, index_t C,
                  const cross_entropy_options& opt) {
  // No products: as in cross_entropy(linear()), whose backward stops at the empty logits (the
  // engine skips an output with no elements), neither x nor W gets a gradient.
  if (rows == 0 || V == 0 || C == 0) return;
  const index_t vc = std::min(V, lce_chunk_columns<T>(rows));
  aligned_buffer<T> gc(rows * vc, false);  // G_c, rows x vc (leading dimension vc)
  using target = typename var_data<T>::grad_target;
  const target dx = x.requires_grad ? x.grad_for_overwrite() : target{};
  const target dw = w.requires_grad ? w.grad_for_overwrite() : target{};
  T* gp = gc.data();
  for (index_t v0 = 0; v0 < V; v0 += vc) {
    const index_t n = std::min(vc, V - v0);
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
    if (x.requires_grad)  // dx (rows, C) (+)= G_c (rows, n) W_c (n, C)
      cpu_kernels::gemm<T>(false, false, rows, C, n, T(1), gp, n, w.value.data() + v0 * C, C,
                           v0 == 0 ? dx.beta() : T(1), dx.data, C);
    if (w.requires_grad)  // dW_c (n, C) (+)= G_c^T (n, rows) x (rows, C)
      cpu_kernels::gemm<T>(true, false, n, C, rows, T(1), gp, n, x.value.data(), C, dw.beta(),
                           dw.data + v0 * C, C);
  }
}

template <ce_reduction Red, class T, std::size_t R, class I>
var_ptr<T> ad_linear_cross_entropy(const var_ptr<T>& x, const var_ptr<T>& w, const I& targets,
                                   cross_entropy_options opt) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  const index_t C = x->extents[R - 1];
  check_weight_shape("tfm::linear_cross_entropy", *w, C, "classes");
  const index_t V = w->extents[0];
  const index_t rows = C ? x->size() / C : 0;
  const std::vector<index_t> lead(x->extents.begin(), x->extents.end() - 1);
  const ce_targets tg = ce_check("tfm::linear_cross_entropy", eval(targets), lead, rows, V, opt);
  // Forward: the logits exactly as linear() computes them, then the loss as cross_entropy().
  auto logits = std::make_shared<aligned_buffer<T>>(rows * V, false);
  if (rows && V) {
    if (C == 0)
      std::fill(logits->data(), logits->data() + rows * V, T(0));
    else
      cpu_kernels::gemm<T>(false, true, rows, V, C, T(1), x->value.data(), C, w->value.data(), C,
                           T(0), logits->data(), V);
  }
  auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(rows));
  auto out = ce_forward<Red>(logits->data(), rows, V, tg, *lse, lead, opt);
  record(out, "linear_cross_entropy", {x, w},
         [x, w, logits, tg, lse, o = out.get(), V, C, rows, opt] {
           lce_backward<Red>(*x, *w, logits->data(), tg, *lse, o->grad_data(), rows, V, C, opt);
         });
  return out;
}

}  // namespace detail

/// cross_entropy(linear(x, W), targets, opt) as one op whose backward never materialises the
/// logits' gradient (file comment). x (..., C), W (V, C) stored (out, in) like linear's weight,
/// integer targets (...).
template <ce_reduction Red = ce_reduction::mean, class T, class SX, class SW, class I>
requires dense_type<I>
auto linear_cross_entropy(const var<T, SX>& x, const var<T, SW>& w, const I& targets,
                          cross_entropy_options opt = {}) {
  static_assert(SW::rank == 2, "tfm::linear_cross_entropy: the weight must be (classes, in)");
  static_assert(SX::static_extents[SX::rank - 1] == dyn || SW::static_extents[1] == dyn ||
                    SX::static_extents[SX::rank - 1] == SW::static_extents[1],
                "tfm::linear_cross_entropy: the input's last extent differs from the weight's "
                "'in' extent");
  static_assert(std::is_integral_v<typename std::remove_cvref_t<I>::value_type>,
                "tfm::linear_cross_entropy: targets must be integers");
  if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
    return cross_entropy<Red>(linear(x, w), targets, opt);
  } else {
    auto d =
        detail::ad_linear_cross_entropy<Red, T, SX::rank>(x.data(), w.data(), targets.view(), opt);
    if constexpr (Red == ce_reduction::none)
      return var<T, detail::take_shape_t<SX, SX::rank - 1>>(d);
    else
      return var<T, shape<>>(d);
  }
}

TFM_END_NAMESPACE
