// typeformer/backend/cpu/decoder.hpp
//
// WHAT THIS REPRESENTS
//   The cpu backend's overloads of the decoder kernel entry points declared with their
//   contracts in backend/reference/decoder.hpp (linear_bt, rms_norm_rows, layer_norm_rows,
//   silu_mul, gelu_tanh, add_bias_rows, cached_attention; rope_rows is the reference loop,
//   reached through tag inheritance).
//
//   gelu_tanh uses 0.5 x (1 + tanh u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3),
//   so that it runs on simd::exp as silu_mul does (exp(-2u) = inf gives -0 for large negative x).
//
//   linear_bt: float weights run cpu_kernels::gemm (M == 1: the GEMV), f16/bf16 weights the
//   converting kernels of gemm/half_weights.hpp. linear_bt_packed (block-quantized weights, kept
//   packed): M == 1 with Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 quantizes x once to 8-bit blocks (ggml's
//   quantize_row_q8_1_ref) into `in` and runs the integer-dot GEMV (quant/gemv_q.hpp); M == 1
//   with Q2_K ... Q6_K (K a multiple of 256) quantizes x to Q8_K (quantize_row_q8_K_ref) and runs
//   the K-quant GEMV (quant/gemv_kq.hpp), the way llama.cpp decodes. Each form is computed at
//   most once per input: the caller reuses `in` for products with the same input (q/k/v,
//   gate/up, whatever their formats) and clears in.valid when the input changes. M == 1 with
//   typeformer's NF4 / INT4-g64 / INT4-g128 runs gemv_ext (quant/gemv_ext.hpp: NF4 on float
//   activations through a 16-level lookup, INT4 on the 8-bit form). Every other
//   case (M > 1) runs the float GEMM with W dequantized while packing (quant/gemm_q.hpp): the
//   exact product with the dequantized weights (faster than integer dots per row at M = 512,
//   bench/quant/RESULTS.md). All are bitwise independent of the thread count. cached_attention: one
//   query row (decode) runs a row kernel over the cache (SIMD dots, softmax, SIMD axpy into o;
//   heads in parallel, scratch from the caller, no allocation); several rows (prefill) run the
//   tiled flash kernel of attention.hpp on head-major copies of q and o, reading the cache in place
//   (its capacity is the kernel's key stride; causality hides the unwritten positions).
#pragma once

#include "typeformer/backend/cpu/attention.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/gemm/half_weights.hpp"
#include "typeformer/backend/cpu/kv_attention.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemm_q.hpp"
#include "typeformer/backend/cpu/quant/gemv_ext.hpp"
#include "typeformer/backend/cpu/quant/gemv_kq.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/backend/cpu/rows.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/backend/tags.hpp"

#include <cmath>
#include <limits>
#include <type_traits>

TFM_BEGIN_NAMESPACE

template <class W>
void linear_bt(cpu, index_t M, index_t N, index_t K, const float* x, index_t ldx, const W* w,
               float* y, index_t ldy, bool accumulate) {
  if constexpr (std::is_same_v<W, float>)
    cpu_kernels::gemm<float>(false, true, M, N, K, 1.0f, x, ldx, w, K, accumulate ? 1.0f : 0.0f, y,
                             ldy);
  else
    cpu_kernels::gemm_half_bt(M, N, K, x, ldx, w, K, y, ldy, accumulate);
}

/// Activations quantized for the integer-dot GEMVs, kept for the next products with the same
/// input (see linear_bt_packed): the 32-value form (Q8_1 quants, for Q4_0 ... Q8_0 weights) and
/// the Q8_K form (for the K-quants), each computed lazily, at most once per input.
struct quantized_input {
  cpu_kernels::q8_activations q;    ///< the 32-value form
  cpu_kernels::q8k_activations qk;  ///< the Q8_K form
  bool valid = false;  ///< has_q8 / has_q8k describe the current input; the caller clears it
                       ///< when x changes
  bool has_q8 = false, has_q8k = false;  ///< which forms hold the current input (while valid)
  /// Sizes the buffers for one row of up to K values, so that decoding allocates nothing.
  void reserve(index_t K) {
    const index_t K32 = (K + 31) / 32 * 32, K256 = K / 256 * 256;
    if (K32 <= 0) return;
    std::vector<float> zero(static_cast<std::size_t>(K32), 0.0f);
    cpu_kernels::quantize_activations(1, K32, zero.data(), K32, q);
    if (K256 > 0) cpu_kernels::quantize_activations_q8k(1, K256, zero.data(), K256, qk);
    valid = false;
  }
  std::size_t bytes() const noexcept {
    return q.qs.capacity() + (q.d.capacity() + q.s.capacity()) * sizeof(float) +
           q.sum.capacity() * sizeof(std::int32_t) + qk.blocks.capacity() * sizeof(block_q8_K);
  }
  /// Starts a new input when the caller cleared `valid`.
  void refresh() noexcept {
    if (!valid) {
      has_q8 = has_q8k = false;
      valid = true;
    }
  }
};

inline void linear_bt_packed(cpu, ggml_type t, index_t M, index_t N, index_t K, const float* x,
                             index_t ldx, const std::byte* w, std::size_t row_bytes, float* y,
                             index_t ldy, bool accumulate, quantized_input& in) {
  if (M == 1 && cpu_kernels::q8_dot_supported(t)) {
    in.refresh();
    if (!in.has_q8 || in.q.rows != 1 || in.q.cols != K) {
      cpu_kernels::quantize_activations(1, K, x, ldx, in.q);
      in.has_q8 = true;
    }
    auto run = [&]<class B>(const B*) {
      if constexpr (cpu_kernels::q8_dot_weight<B>)
        cpu_kernels::gemv_q(N, K, reinterpret_cast<const B*>(w),
                            static_cast<index_t>(row_bytes / sizeof(B)), in.q.row(0), y,
                            accumulate);
    };
    visit_weight_block(t, run);  // q8_dot_supported(t) was checked
    return;
  }
  if (M == 1 && cpu_kernels::q8k_dot_supported(t) && K % 256 == 0) {
    in.refresh();
    if (!in.has_q8k || in.qk.rows != 1 || in.qk.cols != K) {
      cpu_kernels::quantize_activations_q8k(1, K, x, ldx, in.qk);
      in.has_q8k = true;
    }
    auto run = [&]<class B>(const B*) {
      if constexpr (cpu_kernels::q8k_dot_weight<B>)
        cpu_kernels::gemv_kq(N, K, reinterpret_cast<const B*>(w),
                             static_cast<index_t>(row_bytes / sizeof(B)), in.qk.row(0), y,
                             accumulate);
    };
    visit_weight_block(t, run);  // q8k_dot_supported(t) was checked
    return;
  }
  if (M == 1 && cpu_kernels::gemv_ext_supported(t)) {  // NF4, INT4-g64/g128 (gemv_ext.hpp)
    const bool q8 = cpu_kernels::gemv_ext_uses_q8(t);
    if (q8) {
      in.refresh();
      if (!in.has_q8 || in.q.rows != 1 || in.q.cols != K) {
        cpu_kernels::quantize_activations(1, K, x, ldx, in.q);
        in.has_q8 = true;
      }
    }
    const cpu_kernels::q8_row a = q8 ? in.q.row(0) : cpu_kernels::q8_row{};
    cpu_kernels::gemv_ext(t, N, K, x, q8 ? &a : nullptr, w, row_bytes, y, accumulate);
    return;
  }
  cpu_kernels::gemm_dq_bt(t, M, N, K, x, ldx, w, row_bytes, y, ldy, accumulate);
}

inline void rms_norm_rows(cpu, const float* x, index_t ldx, const float* w, float eps, float* y,
                          index_t ldy, index_t rows, index_t n) {
  cpu_kernels::rms_norm_rows(x, ldx, w, eps, y, ldy, rows, n);
}

inline void layer_norm_rows(cpu, const float* x, index_t ldx, const float* w, const float* b,
                            float eps, float* y, index_t ldy, index_t rows, index_t n) {
  cpu_kernels::layer_norm_rows(x, ldx, w, b, eps, y, ldy, rows, n);
}

inline void add_bias_rows(cpu, float* y, index_t ldy, const float* b, index_t rows, index_t n) {
  constexpr index_t w = simd::width<float>;
  for (index_t t = 0; t < rows; ++t) {
    float* yr = y + t * ldy;
    index_t j = 0;
    for (; j + w <= n; j += w) simd::store(yr + j, simd::load(yr + j) + simd::load(b + j));
    for (; j < n; ++j) yr[j] += b[j];
  }
}

inline void gelu_tanh(cpu, const float* x, float* out, index_t n) {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  constexpr float k2 = -2.0f * 0.79788456080286535588f, c = 0.044715f;
  const index_t chunk = 4096;
  const index_t chunks = (n + chunk - 1) / chunk;
  TFM_OMP(parallel for schedule(static) if (chunks > 4 && num_threads() > 1 && !in_parallel()))
  for (index_t ch = 0; ch < chunks; ++ch) {
    const index_t i1 = std::min(n, (ch + 1) * chunk);
    index_t i = ch * chunk;
    for (; i + w <= i1; i += w) {
      const V a = simd::load(x + i);
      const V e = simd::exp(V(k2) * simd::fma(V(c) * a, a * a, a));
      simd::store(out + i, a / (V(1.0f) + e));
    }
    for (; i < i1; ++i) {
      const float a = x[i];
      out[i] = a / (1.0f + std::exp(k2 * std::fma(c * a, a * a, a)));
    }
  }
}

inline void silu_mul(cpu, const float* g, const float* u, float* out, index_t n) {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  const index_t chunk = 4096;
  const index_t chunks = (n + chunk - 1) / chunk;
  TFM_OMP(parallel for schedule(static) if (chunks > 4 && num_threads() > 1 && !in_parallel()))
  for (index_t c = 0; c < chunks; ++c) {
    const index_t i1 = std::min(n, (c + 1) * chunk);
    index_t i = c * chunk;
    for (; i + w <= i1; i += w) {
      const V a = simd::load(g + i);
      const V e = simd::exp(V(0.0f) - a);
      simd::store(out + i, a / (V(1.0f) + e) * simd::load(u + i));
    }
    for (; i < i1; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

namespace cpu_kernels {
namespace decoder_detail {

/// One query row of one head against n cached positions: s = scale q K^T, softmax, o = p V.
inline void attend_row(const float* qr, const float* kb, const float* vb, index_t n, index_t D,
                       float scale, float* s, float* orow) {
  using V = simd::batch<float>;
  constexpr index_t w = simd::width<float>;
  const index_t dv = D / w * w;
  float mx = -std::numeric_limits<float>::infinity();
  for (index_t j = 0; j < n; ++j) {
    const float* kr = kb + j * D;
    V acc(0.0f);
    for (index_t d = 0; d < dv; d += w)
      acc = simd::fma(simd::load(qr + d), simd::load(kr + d), acc);
    float dot = simd::reduce_add(acc);
    for (index_t d = dv; d < D; ++d) dot = std::fma(qr[d], kr[d], dot);
    s[j] = dot * scale;
    mx = std::max(mx, s[j]);
  }
  float sum = 0;
  for (index_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  for (index_t d = 0; d < D; ++d) orow[d] = 0.0f;
  for (index_t j = 0; j < n; ++j) {
    const float p = s[j] * inv;
    const float* vr = vb + j * D;
    const V pv(p);
    for (index_t d = 0; d < dv; d += w)
      simd::store(orow + d, simd::fma(pv, simd::load(vr + d), simd::load(orow + d)));
    for (index_t d = dv; d < D; ++d) orow[d] = std::fma(p, vr[d], orow[d]);
  }
}

}  // namespace decoder_detail
}  // namespace cpu_kernels

inline void cached_attention(cpu, const cached_attention_geometry& g, const float* q,
                             const float* kc, const float* vc, float* o, float* scratch) {
  if (g.G <= 0 || g.H % g.G != 0)
    fail(errc::shape, "tfm::cached_attention: H = ", g.H, " is not a multiple of G = ", g.G, ".");
  const index_t rep = g.H / g.G, HD = g.H * g.D;
  if (g.T == 1) {
    const index_t n = g.pos0 + 1;
    TFM_OMP(parallel for schedule(static) if (n * HD >= (1 << 15) && num_threads() > 1 &&
                                               !in_parallel()))
    for (index_t h = 0; h < g.H; ++h)
      cpu_kernels::decoder_detail::attend_row(
          q + h * g.D, kc + (h / rep) * g.capacity * g.D, vc + (h / rep) * g.capacity * g.D, n, g.D,
          static_cast<float>(g.scale), scratch + h * g.capacity, o + h * g.D);
    return;
  }
  // (T, H, D) -> (H, T, D), the flash kernel, and back.
  float* qh = scratch;
  float* oh = scratch + g.H * g.T * g.D;
  float* lse = oh + g.H * g.T * g.D;
  for (index_t t = 0; t < g.T; ++t)
    for (index_t h = 0; h < g.H; ++h)
      std::copy_n(q + t * HD + h * g.D, g.D, qh + (h * g.T + t) * g.D);
  cpu_kernels::attention_geometry ag;
  ag.B = 1;
  ag.H = g.H;
  ag.G = g.G;
  ag.T = g.T;
  ag.S = g.capacity;
  ag.D = g.D;
  ag.q_offset = g.pos0;
  ag.causal = true;
  ag.scale = g.scale;
  cpu_kernels::attention_forward<float>(ag, qh, kc, vc, oh, lse);
  for (index_t t = 0; t < g.T; ++t)
    for (index_t h = 0; h < g.H; ++h)
      std::copy_n(oh + (h * g.T + t) * g.D, g.D, o + t * HD + h * g.D);
}

/// cached_attention over a cache of kv.type (backend/reference/decoder.hpp has the layouts):
/// f32 is the overload above, bit for bit; the quantized types decode with
/// cpu_kernels::kv_decode and prefill with the flash path on the dequantized filled prefix
/// (backend/cpu/kv_attention.hpp). scratch: cached_attention_scratch(g, kv.type) floats.
inline void cached_attention(cpu, const cached_attention_geometry& g, const float* q,
                             const kv_layer_view& kv, float* o, float* scratch) {
  if (kv.type == kv_type::f32) {
    cached_attention(cpu{}, g, q, reinterpret_cast<const float*>(kv.k),
                     reinterpret_cast<const float*>(kv.v), o, scratch);
    return;
  }
  if (g.G <= 0 || g.H % g.G != 0)
    fail(errc::shape, "tfm::cached_attention: H = ", g.H, " is not a multiple of G = ", g.G, ".");
  if (kv.type == kv_type::q8_0 && g.D % 32 != 0)
    fail(errc::shape,
         "tfm::cached_attention: a q8_0 KV cache needs a head dimension that is a "
         "multiple of 32; D = ",
         g.D, ".");
  const index_t base = cached_attention_scratch(g);  // the float kernels' part
  if (g.T == 1) {
    cpu_kernels::kv_decode(g, q, kv, o, scratch, base);
    return;
  }
  const index_t n = g.pos0 + g.T;
  float* kf = scratch + base;
  float* vf = kf + g.G * n * g.D;
  cpu_kernels::kv_dequantize_prefix(g, kv, n, kf, vf);
  cached_attention_geometry gn = g;
  gn.capacity = n;
  cached_attention(cpu{}, gn, q, kf, vf, o, scratch);
}

TFM_END_NAMESPACE
