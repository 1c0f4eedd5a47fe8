// typeformer/ops/lora_linear.hpp
//
// A linear map with LoRA's low-rank update, as one op (Hu et al. 2021, "LoRA: Low-Rank Adaptation
// of Large Language Models", arXiv:2106.09685, eq. 3):
//
//   y = x W^T + b + s * Σ_p  place_p( drop_p(x) A_p^T B_p^T )
//
//   x (..., in), W (out, in) frozen (or trainable), b (out) or none;
//   part p: A_p (r, in), B_p (rows_p, r) writing the rows [row0_p, row0_p + rows_p) of y's last
//   axis. One part covers a whole projection; nn::gpt's fused q, k, v projection carries up to
//   three parts, one per adapted projection (PEFT adapts q_proj, k_proj, v_proj separately).
//   s = alpha / r (or alpha / sqrt(r), rsLoRA), applied to every part.
//   drop_p: inverted dropout on the adapter's input (PEFT's lora_dropout), its own mask per part,
//   drawn from the counter-based generator and recomputed in the backward pass (ops/dropout.hpp).
//
// The base may also be a frozen_weight: a matrix the op only multiplies by (QLoRA's NF4 base,
// nn/qlora.hpp), dequantized tile by tile inside its two products and never given a gradient.
//
// Why one op rather than linear + linear + linear + add: the composition keeps every input of
// every node alive until the backward (the graph owns them), which for the base output, the
// adapter's (M, rows) product and the sum is two extra copies of y per layer. Here the op keeps
// only x (already alive) and the (M, r) products t_p = drop_p(x) A_p^T.
//
// Gradients (g = dy, g_p its columns [row0_p, row0_p + rows_p), u_p = s g_p B_p (M, r)):
//   dB_p += s g_p^T t_p        dA_p += u_p^T drop_p(x)
//   dx   += g W  +  Σ_p drop_p^T(u_p A_p)          (drop_p^T: the same mask and scale)
//   dW   += g^T x (only when W requires gradients)   db += column sums of g
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/matmul.hpp"

#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

/// A frozen weight W (rows = out features, cols = in features) that an op multiplies by without
/// holding it as a var: y = x W^T and dx = dy W. Implementations keep it in a compact form
/// (nn/qlora.hpp: NF4 with double quantization) and expand it tile by tile.
template <class T>
class frozen_weight {
 public:
  virtual ~frozen_weight() = default;
  virtual index_t rows() const noexcept = 0;
  virtual index_t cols() const noexcept = 0;
  /// y (M, rows) = x (M, cols) W^T + beta y.
  virtual void matmul_bt(const T* x, index_t M, T* y, T beta) const = 0;
  /// dx (M, cols) = dy (M, rows) W + beta dx.
  virtual void matmul(const T* dy, index_t M, T* dx, T beta) const = 0;
  /// W as a row-major (rows, cols) array.
  virtual void dequantize(T* out) const = 0;
  /// Bytes the compact form holds.
  virtual std::size_t bytes() const noexcept = 0;
};

/// One adapted row range of a linear map: A (r, in), B (rows, r).
template <class T>
struct lora_part {
  index_t row0 = 0, rows = 0;
  var<T, dyn_shape<2>> a;
  var<T, dyn_shape<2>> b;
};

/// Dropout state an adapter's layers share: whether it is on, and the generator position (each
/// call takes the next M * in * parts values, so a step's masks follow from the call order).
struct lora_dropout_state {
  bool training = false;
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
};

/// The low-rank update LoRA adds to one linear map.
template <class T>
struct lora_update {
  std::vector<lora_part<T>> parts;
  double scale = 1.0;    ///< s: alpha / r, or alpha / sqrt(r) with rsLoRA
  double dropout = 0.0;  ///< probability of dropping an element of the adapter's input
  std::shared_ptr<lora_dropout_state> state;  ///< null: no dropout
  bool enabled = true;                        ///< false: the base map alone
};

namespace detail {

template <class T>
struct lora_saved_part {
  index_t row0, rows, r;
  var_ptr<T> a, b;
  std::vector<T> t;  // drop(x) A^T, (M, r)
  std::uint64_t mask_offset;
};

/// drop(x) into out: x * keep / (1 - p), keep(i) = uniform(seed, offset + i) >= p.
template <class T>
void lora_drop(const T* x, index_t n, double p, std::uint64_t seed, std::uint64_t offset, T* out) {
  const T sc = static_cast<T>(1.0 / (1.0 - p));
  TFM_OMP(parallel for schedule(static) if (n >= (1 << 16)))
  for (index_t i = 0; i < n; ++i)
    out[i] = static_cast<double>(uniform_float(seed, offset + static_cast<std::uint64_t>(i))) >= p
                 ? x[i] * sc
                 : T(0);
}

template <class T, std::size_t R>
var_ptr<T> ad_lora_linear(const var_ptr<T>& x, const var_ptr<T>& w,
                          std::shared_ptr<const frozen_weight<T>> base, const var_ptr<T>& bias,
                          const lora_update<T>* up) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::lora_linear: float or double values");
  const index_t in = x->extents[R - 1];
  index_t out_f = 0;
  if (base) {
    if (base->cols() != in)
      fail(errc::shape, "tfm::lora_linear: the frozen weight has ", base->cols(),
           " columns but the input's last axis has ", in, " features.");
    out_f = base->rows();
  } else {
    if (!w) fail(errc::value, "tfm::lora_linear: neither a weight nor a frozen weight was given.");
    check_weight_shape("tfm::lora_linear", *w, in, "out");
    out_f = w->extents[0];
  }
  if (bias && (bias->extents.size() != 1 || bias->extents[0] != out_f))
    fail(errc::shape, "tfm::lora_linear: the bias must have ", out_f, " elements.");
  const index_t M = in ? x->size() / in : 0;
  std::vector<index_t> e = x->extents;
  e[R - 1] = out_f;
  auto y = result<T>(e);
  T* yp = y->value.data();
  const T* xp = x->value.data();
  if (M && out_f) {
    if (base)
      base->matmul_bt(xp, M, yp, T(0));
    else if (in == 0)
      std::fill(yp, yp + M * out_f, T(0));
    else
      gemm_kernel<T>(false, true, M, out_f, in, T(1), xp, in, w->value.data(), in, T(0), yp, out_f,
                     cpu{});
    if (bias)
      for (index_t i = 0; i < M; ++i)
        for (index_t j = 0; j < out_f; ++j) yp[i * out_f + j] += bias->value.data()[j];
  }
  // The adapter parts.
  auto saved = std::make_shared<std::vector<lora_saved_part<T>>>();
  double p = 0, s = 0;
  std::uint64_t seed = 0;
  const bool drop = up && up->enabled && up->dropout > 0 && up->state && up->state->training;
  if (up && up->enabled) {
    s = up->scale;
    p = drop ? up->dropout : 0.0;
    if (!(p >= 0.0 && p < 1.0))
      fail(errc::value, "tfm::lora_linear: the dropout must be in [0, 1), got ", p, ".");
    std::vector<T> xd;
    if (drop) {
      seed = up->state->seed;
      xd.resize(static_cast<std::size_t>(M * in));
    }
    for (const auto& part : up->parts) {
      const auto& a = part.a.data();
      const auto& b = part.b.data();
      if (!a || !b || a->extents.size() != 2 || b->extents.size() != 2)
        fail(errc::value, "tfm::lora_linear: an adapter part lacks its A or B matrix.");
      const index_t r = a->extents[0];
      if (a->extents[1] != in || b->extents[1] != r || b->extents[0] != part.rows ||
          part.row0 < 0 || part.row0 + part.rows > out_f)
        fail(errc::shape, "tfm::lora_linear: adapter part A (", a->extents[0], ", ", a->extents[1],
             "), B (", b->extents[0], ", ", b->extents[1], ") for rows [", part.row0, ", ",
             part.row0 + part.rows, ") does not fit a (", out_f, ", ", in,
             ") map; A must be (r, in) and B (rows, r).");
      lora_saved_part<T> sp{part.row0, part.rows, r, a, b, {}, 0};
      const T* src = xp;
      if (drop) {
        sp.mask_offset = up->state->offset;
        up->state->offset += static_cast<std::uint64_t>(M * in);
        lora_drop(xp, M * in, p, seed, sp.mask_offset, xd.data());
        src = xd.data();
      }
      sp.t.assign(static_cast<std::size_t>(M * r), T(0));
      if (M && r && in)
        gemm_kernel<T>(false, true, M, r, in, T(1), src, in, a->value.data(), in, T(0), sp.t.data(),
                       r, cpu{});
      if (M && r && part.rows)
        gemm_kernel<T>(false, true, M, part.rows, r, static_cast<T>(s), sp.t.data(), r,
                       b->value.data(), r, T(1), yp + part.row0, out_f, cpu{});
      saved->push_back(std::move(sp));
    }
  }
  std::vector<std::shared_ptr<var_base>> ins{x};
  if (w) ins.push_back(w);
  if (bias) ins.push_back(bias);
  for (const auto& sp : *saved) {
    ins.push_back(sp.a);
    ins.push_back(sp.b);
  }
  record(y, "lora_linear", std::move(ins),
         [x, w, base, bias, saved, o = y.get(), M, in, out_f, p, s, seed] {
           const T* g = o->grad_data();
           if (M == 0 || out_f == 0) return;
           const T* xv = x->value.data();
           // dx: the base product first (assigns), then every part adds.
           T* dx = nullptr;
           bool dx_started = false;
           auto dx_target = [&]() -> T {
             if (!dx) {
               auto t = x->grad_for_overwrite();
               dx = t.data;
               dx_started = t.accumulate;
             }
             const T beta = dx_started ? T(1) : T(0);
             dx_started = true;
             return beta;
           };
           if (x->requires_grad && in) {
             const T beta = dx_target();
             if (base)
               base->matmul(g, M, dx, beta);
             else
               gemm_kernel<T>(false, false, M, in, out_f, T(1), g, out_f, w->value.data(), in, beta,
                              dx, in, cpu{});
           }
           if (w && w->requires_grad && in) {
             const auto dw = w->grad_for_overwrite();
             gemm_kernel<T>(true, false, out_f, in, M, T(1), g, out_f, xv, in, dw.beta(), dw.data,
                            in, cpu{});
           }
           if (bias && bias->requires_grad) {
             std::vector<accum_t<T>> cs(static_cast<std::size_t>(out_f));
             reduce_kernel<reduce_op::sum>(g, index_t{1}, M, out_f, cs.data(), cpu{});
             T* gb = bias->grad_data();
             for (index_t j = 0; j < out_f; ++j)
               gb[j] += static_cast<T>(cs[static_cast<std::size_t>(j)]);
           }
           std::vector<T> xd, u, tmp;
           for (const auto& sp : *saved) {
             const index_t r = sp.r;
             if (r == 0) continue;
             const T* gp = g + sp.row0;
             if (sp.b->requires_grad) {  // dB += s g_p^T t
               const auto db = sp.b->grad_for_overwrite();
               gemm_kernel<T>(true, false, sp.rows, r, M, static_cast<T>(s), gp, out_f, sp.t.data(),
                              r, db.beta(), db.data, r, cpu{});
             }
             if (!sp.a->requires_grad && !x->requires_grad) continue;
             u.assign(static_cast<std::size_t>(M * r), T(0));  // u = s g_p B
             gemm_kernel<T>(false, false, M, r, sp.rows, static_cast<T>(s), gp, out_f,
                            sp.b->value.data(), r, T(0), u.data(), r, cpu{});
             const T* src = xv;
             if (p > 0) {
               xd.resize(static_cast<std::size_t>(M * in));
               lora_drop(xv, M * in, p, seed, sp.mask_offset, xd.data());
               src = xd.data();
             }
             if (sp.a->requires_grad) {  // dA += u^T drop(x)
               const auto da = sp.a->grad_for_overwrite();
               gemm_kernel<T>(true, false, r, in, M, T(1), u.data(), r, src, in, da.beta(), da.data,
                              in, cpu{});
             }
             if (x->requires_grad && in) {  // dx += drop^T(u A)
               if (p == 0) {
                 const T beta = dx_target();
                 gemm_kernel<T>(false, false, M, in, r, T(1), u.data(), r, sp.a->value.data(), in,
                                beta, dx, in, cpu{});
               } else {
                 tmp.assign(static_cast<std::size_t>(M * in), T(0));
                 gemm_kernel<T>(false, false, M, in, r, T(1), u.data(), r, sp.a->value.data(), in,
                                T(0), tmp.data(), in, cpu{});
                 std::vector<T> masked(tmp.size());
                 lora_drop(tmp.data(), M * in, p, seed, sp.mask_offset, masked.data());
                 const T beta = dx_target();
                 for (index_t i = 0; i < M * in; ++i)
                   dx[i] = (beta == T(0) ? T(0) : dx[i]) + masked[static_cast<std::size_t>(i)];
               }
             }
           }
         });
  return y;
}

}  // namespace detail

/// y = x W^T (+ b) + the update `up` (null or disabled: the plain linear map). `w` may be
/// undefined when `base` (a frozen weight) is given; `bias` may be undefined.
template <class T, class SX, class SW, class SB>
auto lora_linear(const var<T, SX>& x, const var<T, SW>& w,
                 std::type_identity_t<std::shared_ptr<const frozen_weight<T>>> base,
                 const var<T, SB>& bias, const lora_update<T>* up) {
  static_assert(SW::rank == 2, "tfm::lora_linear: the weight must be (out, in)");
  using SY = detail::set_extent_t<SX, SX::rank - 1, SW::static_extents[0]>;
  return var<T, SY>(detail::ad_lora_linear<T, SX::rank>(
      x.data(), base ? detail::var_ptr<T>() : w.data(), std::move(base), bias.data(), up));
}

TFM_END_NAMESPACE
