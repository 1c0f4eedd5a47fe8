// typeformer/backend/reference/decoder.hpp
//
// WHAT THIS REPRESENTS
//   The kernel entry points of the tape-free decoder (infer/transformer.hpp) for the reference
//   backend: plain loops, double accumulation, no SIMD, no threads. They are the oracle of the
//   cpu overloads (backend/cpu/decoder.hpp) and the fallback for every tag derived from
//   tfm::reference. Activations are float rows; weights are float, f16 or bf16 (N x K
//   row-major, converted to float as they are read).
//
//   linear_bt        y(M,N) = x(M,K) W^T (+ y when accumulate)
//   linear_bt_packed the same with W block-quantized (N rows of row_bytes bytes of GGML blocks
//                    of type t, the GGUF tensor data): y = x deq(W)^T (+ y). The reference
//                    dequantizes each row on use (quant/dequantize.hpp, bitwise gguf-py) and
//                    accumulates in double; the cpu backend quantizes x to 8-bit blocks for
//                    M == 1 (see backend/cpu/decoder.hpp), so it agrees to that rounding only.
//                    `in` is the cpu backend's cache of the quantized x (ignored here).
//   rms_norm_rows    y = x / sqrt(mean(x^2) + eps) * w                  (arXiv:1910.07467)
//   layer_norm_rows  y = (x - mean) / sqrt(var + eps) * w + b           (arXiv:1607.06450;
//                    biased variance as PyTorch; b may be null)
//   silu_mul         out = silu(g) * u = g / (1 + exp(-g)) * u         (SwiGLU, arXiv:2002.05202)
//   gelu_tanh        out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (arXiv:1606.08415
//                    eq. 2; GPT-2's and ggml's gelu, Hugging Face's "gelu_new")
//   add_bias_rows    y[t, j] += b[j] for t < rows, j < n
//   rope_rows        rotary embedding of `heads` heads of D values in each row (arXiv:2104.09864)
//   cached_attention causal attention of T query rows against a KV cache (below)
//
//   cached_attention: q and o are (T, H*D) rows (query t at position pos0 + t); the cache holds
//   keys and values (G, capacity, D) for positions 0 .. pos0 + T - 1; query head h reads kv head
//   h / (H / G). o_t = softmax(scale * q_t K^T over positions <= pos0 + t) V.
//
//   cached_attention over a kv_layer_view: the same with the cache stored as kv_type says
//   (infer/kv_store.hpp, docs/quantization.md "KV cache quantization"): rows of D values per
//   (kv head, position), (G, capacity) rows of kv_row_bytes(type, D) bytes each:
//     f32   D floats (the float overload above, bit for bit)
//     f16   D IEEE halves; value = float(h)
//     q8_0  D / 32 GGML block_q8_0 along D (D % 32 == 0); value = float(q) * float(d), as
//           quant/dequantize.hpp (gguf-py) dequantizes
//     int8  D int8 with one f32 scale per row (k_scale / v_scale, (G, capacity) floats):
//           symmetric absmax, scale = max|x| / 127, q = round-half-away(x / scale); value =
//           float(q) * scale
//   The reference dequantizes the filled prefix and runs the float reference: the exact
//   attention of the dequantized cache, the oracle of the cpu kernels
//   (backend/cpu/kv_attention.hpp).
#pragma once

#include "typeformer/backend/reference/rows.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Geometry of cached_attention (see the file comment).
struct cached_attention_geometry {
  index_t T = 0;         // query rows
  index_t H = 0, G = 0;  // query heads, kv heads (G divides H)
  index_t D = 0;         // head dimension
  index_t capacity = 0;  // positions the cache holds per kv head
  index_t pos0 = 0;      // position of query row 0
  double scale = 1.0;    // usually 1 / sqrt(D)
};

/// Floats of scratch cached_attention needs (both backends).
inline index_t cached_attention_scratch(const cached_attention_geometry& g) {
  return std::max(g.H * g.capacity, 2 * g.H * g.T * g.D + g.H * g.T);
}

/// Element type of a KV cache (see the file comment for the row layouts).
enum class kv_type : std::uint8_t { f32, f16, q8_0, int8 };

/// Bytes of one cached row of D values (int8: the quants only; the scale is kept apart).
constexpr std::size_t kv_row_bytes(kv_type t, index_t D) noexcept {
  const auto d = static_cast<std::size_t>(D);
  switch (t) {
    case kv_type::f16:
      return 2 * d;
    case kv_type::q8_0:
      return d / qk_legacy * sizeof(block_q8_0);
    case kv_type::int8:
      return d;
    case kv_type::f32:
      break;
  }
  return 4 * d;
}

/// One layer of a KV cache as the attention kernels read it: keys and values, each (G, capacity)
/// rows of kv_row_bytes(type, D) bytes, and for int8 the (G, capacity) f32 scales of the rows.
struct kv_layer_view {
  kv_type type = kv_type::f32;
  const std::byte* k = nullptr;
  const std::byte* v = nullptr;
  const float* k_scale = nullptr;  // int8 only
  const float* v_scale = nullptr;  // int8 only
};

/// Floats of scratch cached_attention over a cache of `type` needs (both backends): the float
/// kernel's, and for a quantized cache one layer's keys and values as floats (the cpu prefill
/// dequantizes the filled prefix there; decode uses a row of D per kv head).
inline index_t cached_attention_scratch(const cached_attention_geometry& g, kv_type type) {
  const index_t base = cached_attention_scratch(g);
  return type == kv_type::f32 ? base : base + 2 * g.G * g.capacity * g.D;
}

/// Where rope_rows takes pairs: (2i, 2i+1) (GGUF llama, GPT-J) or (i, i + D/2) (NeoX, HF).
enum class rope_pairs { interleaved, half };

template <class W>
void linear_bt(reference, index_t M, index_t N, index_t K, const float* x, index_t ldx, const W* w,
               float* y, index_t ldy, bool accumulate) {
  for (index_t i = 0; i < M; ++i)
    for (index_t n = 0; n < N; ++n) {
      double s = 0;
      for (index_t k = 0; k < K; ++k)
        s += static_cast<double>(x[i * ldx + k]) *
             static_cast<double>(static_cast<float>(w[n * K + k]));
      float& out = y[i * ldy + n];
      out = accumulate ? static_cast<float>(s + static_cast<double>(out)) : static_cast<float>(s);
    }
}

/// The cpu backend's activations quantized once for several linear_bt_packed calls on the same
/// input (backend/cpu/decoder.hpp defines it; the reference backend ignores it).
struct quantized_input;

inline void linear_bt_packed(reference, ggml_type t, index_t M, index_t N, index_t K,
                             const float* x, index_t ldx, const std::byte* w, std::size_t row_bytes,
                             float* y, index_t ldy, bool accumulate, quantized_input& /*in*/) {
  std::vector<float> row(static_cast<std::size_t>(K));
  for (index_t n = 0; n < N; ++n) {
    dequantize(t,
               std::span<const std::byte>(w + static_cast<std::size_t>(n) * row_bytes, row_bytes),
               std::span<float>(row));
    for (index_t i = 0; i < M; ++i) {
      double s = 0;
      for (index_t k = 0; k < K; ++k)
        s += static_cast<double>(x[i * ldx + k]) *
             static_cast<double>(row[static_cast<std::size_t>(k)]);
      float& out = y[i * ldy + n];
      out = accumulate ? static_cast<float>(s + static_cast<double>(out)) : static_cast<float>(s);
    }
  }
}

inline void rms_norm_rows(reference, const float* x, index_t ldx, const float* w, float eps,
                          float* y, index_t ldy, index_t rows, index_t n) {
  reference_kernels::rms_norm_rows(x, ldx, w, eps, y, ldy, rows, n);
}

inline void layer_norm_rows(reference, const float* x, index_t ldx, const float* w, const float* b,
                            float eps, float* y, index_t ldy, index_t rows, index_t n) {
  reference_kernels::layer_norm_rows(x, ldx, w, b, eps, y, ldy, rows, n);
}

inline void gelu_tanh(reference, const float* x, float* out, index_t n) {
  const double k = 0.79788456080286535588;  // sqrt(2 / pi)
  for (index_t i = 0; i < n; ++i) {
    const double a = x[i];
    out[i] = static_cast<float>(0.5 * a * (1.0 + std::tanh(k * (a + 0.044715 * a * a * a))));
  }
}

inline void add_bias_rows(reference, float* y, index_t ldy, const float* b, index_t rows,
                          index_t n) {
  for (index_t t = 0; t < rows; ++t)
    for (index_t j = 0; j < n; ++j) y[t * ldy + j] += b[j];
}

inline void silu_mul(reference, const float* g, const float* u, float* out, index_t n) {
  for (index_t i = 0; i < n; ++i) {
    const double a = g[i];
    out[i] = static_cast<float>(a / (1.0 + std::exp(-a)) * static_cast<double>(u[i]));
  }
}

/// Rotates `rows` rows (row t at x + t*ldx, `heads` heads of D values each) by the angles of
/// table rows t: cos_t[i], sin_t[i] at cs + t*(D/2) + i, sn + t*(D/2) + i.
inline void rope_rows(reference, float* x, index_t ldx, index_t rows, index_t heads, index_t D,
                      const float* cs, const float* sn, rope_pairs pairs) {
  const index_t h2 = D / 2;
  for (index_t t = 0; t < rows; ++t)
    for (index_t h = 0; h < heads; ++h) {
      float* xr = x + t * ldx + h * D;
      for (index_t i = 0; i < h2; ++i) {
        const index_t a = pairs == rope_pairs::interleaved ? 2 * i : i;
        const index_t b = pairs == rope_pairs::interleaved ? 2 * i + 1 : i + h2;
        const float c = cs[t * h2 + i], s = sn[t * h2 + i];
        const float x0 = xr[a], x1 = xr[b];
        xr[a] = x0 * c - x1 * s;
        xr[b] = x0 * s + x1 * c;
      }
    }
}

inline void cached_attention(reference, const cached_attention_geometry& g, const float* q,
                             const float* kc, const float* vc, float* o, float* scratch) {
  if (g.G <= 0 || g.H % g.G != 0)
    fail(errc::shape, "tfm::cached_attention: H = ", g.H, " is not a multiple of G = ", g.G, ".");
  const index_t rep = g.H / g.G, HD = g.H * g.D;
  for (index_t t = 0; t < g.T; ++t)
    for (index_t h = 0; h < g.H; ++h) {
      const float* qr = q + t * HD + h * g.D;
      const float* kb = kc + (h / rep) * g.capacity * g.D;
      const float* vb = vc + (h / rep) * g.capacity * g.D;
      const index_t n = g.pos0 + t + 1;
      double mx = -std::numeric_limits<double>::infinity();
      for (index_t j = 0; j < n; ++j) {
        double s = 0;
        for (index_t d = 0; d < g.D; ++d)
          s += static_cast<double>(qr[d]) * static_cast<double>(kb[j * g.D + d]);
        scratch[j] = static_cast<float>(s * g.scale);
        mx = std::max(mx, static_cast<double>(scratch[j]));
      }
      double sum = 0;
      for (index_t j = 0; j < n; ++j) sum += std::exp(static_cast<double>(scratch[j]) - mx);
      float* orow = o + t * HD + h * g.D;
      for (index_t d = 0; d < g.D; ++d) {
        double acc = 0;
        for (index_t j = 0; j < n; ++j)
          acc +=
              std::exp(static_cast<double>(scratch[j]) - mx) * static_cast<double>(vb[j * g.D + d]);
        orow[d] = static_cast<float>(acc / sum);
      }
    }
}

namespace reference_kernels {
/// Row j of a kv head's (capacity) rows of `kv` (keys or values), dequantized to D floats.
inline void kv_row(kv_type t, const std::byte* base, const float* scales, index_t row, index_t D,
                   float* out) {
  const std::size_t rb = kv_row_bytes(t, D);
  const std::byte* p = base + static_cast<std::size_t>(row) * rb;
  switch (t) {
    case kv_type::f32:
      for (index_t d = 0; d < D; ++d) std::memcpy(out + d, p + 4 * d, 4);
      return;
    case kv_type::f16:
      for (index_t d = 0; d < D; ++d) {
        std::uint16_t bits;
        std::memcpy(&bits, p + 2 * d, 2);
        out[d] = static_cast<float>(f16::from_bits(bits));
      }
      return;
    case kv_type::q8_0:
      dequantize(ggml_type::q8_0, std::span<const std::byte>(p, rb),
                 std::span<float>(out, static_cast<std::size_t>(D)));
      return;
    case kv_type::int8:
      for (index_t d = 0; d < D; ++d)
        out[d] = static_cast<float>(static_cast<std::int8_t>(p[d])) * scales[row];
      return;
  }
}
}  // namespace reference_kernels

/// cached_attention over a cache stored as kv.type: f32 is the float overload above; any other
/// type dequantizes the filled prefix (allocates) and runs it.
inline void cached_attention(reference, const cached_attention_geometry& g, const float* q,
                             const kv_layer_view& kv, float* o, float* scratch) {
  if (g.G <= 0 || g.H % g.G != 0)
    fail(errc::shape, "tfm::cached_attention: H = ", g.H, " is not a multiple of G = ", g.G, ".");
  if (kv.type == kv_type::q8_0 && g.D % static_cast<index_t>(qk_legacy) != 0)
    fail(errc::shape,
         "tfm::cached_attention: a q8_0 KV cache needs a head dimension that is a "
         "multiple of 32; D = ",
         g.D, ".");
  if (kv.type == kv_type::f32) {
    cached_attention(reference{}, g, q, reinterpret_cast<const float*>(kv.k),
                     reinterpret_cast<const float*>(kv.v), o, scratch);
    return;
  }
  const index_t n = g.pos0 + g.T;
  std::vector<float> k(static_cast<std::size_t>(g.G * n * g.D)), v(k.size());
  for (index_t h = 0; h < g.G; ++h)
    for (index_t j = 0; j < n; ++j) {
      const index_t row = h * g.capacity + j;
      const std::size_t at = static_cast<std::size_t>((h * n + j) * g.D);
      reference_kernels::kv_row(kv.type, kv.k, kv.k_scale, row, g.D, k.data() + at);
      reference_kernels::kv_row(kv.type, kv.v, kv.v_scale, row, g.D, v.data() + at);
    }
  cached_attention_geometry gn = g;
  gn.capacity = n;
  cached_attention(reference{}, gn, q, k.data(), v.data(), o, scratch);
}

TFM_END_NAMESPACE
