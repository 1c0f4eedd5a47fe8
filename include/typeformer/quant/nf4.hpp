// typeformer/quant/nf4.hpp
//
// WHAT THIS REPRESENTS
//   QLoRA's 4-bit NormalFloat (NF4; Dettmers, Pagnoni, Holtzman, Zettlemoyer 2023, "QLoRA:
//   Efficient Finetuning of Quantized LLMs", arXiv:2305.14314, section 3 and appendix E) as a
//   typeformer weight layout (ggml_type::tfm_nf4, block_nf4 in quant/blocks.hpp), and the paper's
//   double quantization of the block constants as a tensor codec.
//
//     nf4_levels                       the 16 NormalFloat levels (binary32)
//     quantize_block(x, block_nf4&)    64 finite floats -> one block
//     dequantize_block(block_nf4, y)   y[j] = nf4_levels[q_j] * d
//     quantize_nf4(x, rows, cols, name) -> bytes   a row-major tensor (cols % 64 == 0)
//     quantize_nf4_dq(x, rows, cols, name) -> nf4_dq_tensor   NF4 with double-quantized absmax
//     dequantize_nf4_dq(t) -> floats;  nf4_dq_to_blocks(t) -> tfm_nf4 bytes
//
// LAYOUT (block_nf4, 34 bytes per 64 weights = 4.25 bits per weight)
//   f16 d = absmax of the 64 inputs; qs[32] = 64 codes, sub-block s (0, 1) in qs[16s .. 16s+15],
//   element 32s + j in the low nibble of qs[16s + j], element 32s + 16 + j in the high nibble (the
//   nibble order of Q4_0 and IQ4_NL, so the 4-bit kernels share their unpacking).
//   Why not the paper's double-quantized 8-bit absmax inside the file format: a GGUF tensor is
//   sized as elements / block_elements * block_bytes and a matrix row must be addressable as whole
//   self-contained blocks (rows of K = 576 = 9 blocks of 64 in SmolLM2). Double quantization
//   needs a second-level scale shared by a group of blocks, and neither choice fits:
//   - groups of 256 blocks of the flattened tensor (bitsandbytes) straddle rows (576 x 576 has
//     5184 blocks = 20.25 groups), so a row is not self-contained;
//   - one group per row needs a per-row header that GGUF's size rule cannot express, and saves
//     little on small models: (9 * 33 + 8) / 576 * 8 = 4.24 bits at K = 576 versus 4.25 with f16.
//   The f16 absmax costs 0.25 bits per weight against the paper's 0.127; the double-quantized
//   form is kept as a codec (nf4_dq_tensor: 4.127 bits, the paper's figure) for storage and for
//   reading QLoRA-style checkpoints, and converts to blocks (nf4_dq_to_blocks).
//
// CONTRACTS
//   - nf4_levels are the values published in the paper's appendix E / bitsandbytes
//     (create_normal_map with offset 0.9677083), as binary32; tests/data/quant_ext/gen_fixtures.py
//     rebuilds them from the construction with Python's statistics.NormalDist.
//   - Quantization of a block (numpy reference: tests/data/quant_ext/gen_fixtures.py):
//       amax = max |x_j| (binary32); d = f16(amax) (round to nearest even); s = f32(d);
//       s == 0 -> every code is 7 (level 0.0); else t_j = x_j / s (binary32 division) and
//       q_j = #{ i < 15 : t_j > mid_i } with mid_i = (L_i + L_{i+1}) * 0.5f (binary32): the
//       nearest level, ties to the lower one (numpy searchsorted(mid, t, 'left')).
//   - Dequantization: y_j = L[q_j] * f32(d) (one binary32 product: bitwise any compiler).
//   - quantize_nf4: NaN/Inf -> tfm::value_error naming tensor, row and column; an absmax that
//     overflows f16 (>= 65520) -> tfm::value_error naming the tensor, row and the block's
//     columns; cols % 64 != 0 -> tfm::shape_error.
//   - Double quantization (paper section 3, bitsandbytes' compress_statistics): the block
//     absmaxes c (binary32) of the whole tensor, in block order, get offset
//     o = f32(sum_double(c) / n) (the sum accumulated in binary64 in block order); v_i = c_i - o;
//     per group of 256 blocks of the flattened tensor scale2 = max |v| / 127 and code_i =
//     clamp(round_half_away(v_i / scale2), -127, 127) (0 when scale2 == 0); the dequantized
//     absmax is c'_i = rounded(code_i * scale2) + o. The block's NF4 codes are computed against
//     c'_i (as in the block rule with s = c'_i; c'_i <= 0 gives code 7). Unlike bitsandbytes the
//     8-bit code is linear (symmetric int8), not its "dynamic" 8-bit float map.
//     Storage: 4 bits + 8 / 64 + 32 / (64 * 256) = 4.127 bits per weight (plus 4 bytes).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/ext_detail.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE

/// The 16 NormalFloat-4 levels (arXiv:2305.14314 appendix E; bitsandbytes' NF4 map).
inline constexpr std::array<float, 16> nf4_levels{-1.0f,
                                                  -0.6961928009986877f,
                                                  -0.5250730514526367f,
                                                  -0.39491748809814453f,
                                                  -0.28444138169288635f,
                                                  -0.18477343022823334f,
                                                  -0.09105003625154495f,
                                                  0.0f,
                                                  0.07958029955625534f,
                                                  0.16093020141124725f,
                                                  0.24611230194568634f,
                                                  0.33791524171829224f,
                                                  0.44070982933044434f,
                                                  0.5626170039176941f,
                                                  0.7229568362236023f,
                                                  1.0f};

namespace detail::nf4 {

/// Decision thresholds between neighbouring levels, (L_i + L_{i+1}) * 0.5 in binary32.
inline constexpr std::array<float, 15> midpoints = [] {
  std::array<float, 15> m{};
  for (std::size_t i = 0; i < 15; ++i) m[i] = (nf4_levels[i] + nf4_levels[i + 1]) * 0.5f;
  return m;
}();

/// The nearest level's code of t (ties to the lower level).
inline std::uint8_t code_of(float t) noexcept {
  std::uint8_t q = 0;
  for (float m : midpoints) q = static_cast<std::uint8_t>(q + (t > m ? 1 : 0));
  return q;
}

/// Codes of 64 values against scale s (s <= 0: all zero level).
inline void codes(const float* x, float s, std::uint8_t* q) noexcept {
  for (int j = 0; j < 64; ++j) q[j] = s > 0.0f ? code_of(x[j] / s) : std::uint8_t{7};
}

inline void pack(const std::uint8_t* q, std::uint8_t* qs) noexcept {
  for (int s = 0; s < 2; ++s)
    for (int j = 0; j < 16; ++j)
      qs[16 * s + j] = static_cast<std::uint8_t>(q[32 * s + j] | (q[32 * s + 16 + j] << 4));
}

inline float absmax(const float* x) noexcept {
  float a = 0.0f;
  for (int j = 0; j < 64; ++j) a = std::max(a, std::fabs(x[j]));
  return a;
}

}  // namespace detail::nf4

/// One NF4 block from 64 finite floats (the contract's rule; an absmax >= 65520 stores Inf:
/// quantize_nf4 refuses it).
inline void quantize_block(const float* x, block_nf4& b) noexcept {
  b.d = f16(detail::nf4::absmax(x));
  std::uint8_t q[64];
  detail::nf4::codes(x, static_cast<float>(b.d), q);
  detail::nf4::pack(q, b.qs);
}

/// y[32s + j] = L[low nibble of qs[16s + j]] * d, y[32s + 16 + j] = L[high nibble] * d.
inline void dequantize_block(const block_nf4& b, float* y) noexcept {
  const float d = static_cast<float>(b.d);
  for (int s = 0; s < 2; ++s)
    for (int j = 0; j < 16; ++j) {
      y[32 * s + j] = nf4_levels[b.qs[16 * s + j] & 0x0F] * d;
      y[32 * s + 16 + j] = nf4_levels[b.qs[16 * s + j] >> 4] * d;
    }
}

/// Quantizes row-major rows x cols floats of tensor `name` into `dst` (rows * cols / 64 blocks of
/// 34 bytes, any alignment). Errors: see the contract.
inline void quantize_nf4(std::span<const float> x, std::size_t rows, std::size_t cols,
                         std::span<std::byte> dst, std::string_view name = "?") {
  namespace qe = detail::quant_ext;
  const std::size_t nb = cols / 64;
  qe::check_matrix(x.size(), rows, cols, 64, nb * sizeof(block_nf4), dst.size(), name, "TFM_NF4");
  for (std::size_t r = 0; r < rows; ++r) {
    const auto xr = x.subspan(r * cols, cols);
    qe::check_finite(xr, name, r, "TFM_NF4");
    for (std::size_t i = 0; i < nb; ++i) {
      block_nf4 b;
      quantize_block(xr.data() + 64 * i, b);
      if (!std::isfinite(static_cast<float>(b.d)))
        fail(errc::value, "tfm::quantize: tensor '", name, "' row ", r, " columns ", 64 * i, "..",
             64 * i + 63, ": absmax ", detail::nf4::absmax(xr.data() + 64 * i),
             " overflows the f16 scale of TFM_NF4.");
      std::memcpy(dst.data() + (r * nb + i) * sizeof(block_nf4), &b, sizeof b);
    }
  }
}

/// The same into a new vector.
inline std::vector<std::byte> quantize_nf4(std::span<const float> x, std::size_t rows,
                                           std::size_t cols, std::string_view name = "?") {
  std::vector<std::byte> out(cols % 64 == 0 ? rows * (cols / 64) * sizeof(block_nf4) : 0);
  quantize_nf4(x, rows, cols, out, name);
  return out;
}

// ---- double quantization (a codec; see the contract) -------------------------------------------

/// NF4 with double-quantized block constants: the paper's storage (4.127 bits per weight).
struct nf4_dq_tensor {
  std::size_t rows = 0, cols = 0;
  std::vector<std::uint8_t> qs;       ///< rows * cols / 2 bytes, block after block (block_nf4.qs)
  std::vector<std::int8_t> absmax_q;  ///< one 8-bit code per block
  std::vector<float> scale2;          ///< one second-level scale per 256 blocks
  float offset = 0.0f;                ///< mean of the block absmaxes
  static constexpr std::size_t group = 256;  ///< blocks per second-level scale

  std::size_t blocks() const noexcept { return absmax_q.size(); }
  /// The dequantized absmax c'_i of block i.
  float absmax(std::size_t i) const noexcept {
    return detail::quant_ext::rounded(static_cast<float>(absmax_q[i]) * scale2[i / group]) + offset;
  }
  /// Bytes this codec stores (codes, 8-bit constants, scales, offset).
  std::size_t bytes() const noexcept { return qs.size() + absmax_q.size() + 4 * scale2.size() + 4; }
};

/// NF4 + double quantization of a rows x cols tensor (cols % 64 == 0). Errors as quantize_nf4.
inline nf4_dq_tensor quantize_nf4_dq(std::span<const float> x, std::size_t rows, std::size_t cols,
                                     std::string_view name = "?") {
  namespace qe = detail::quant_ext;
  const std::size_t nb = cols / 64;
  qe::check_matrix(x.size(), rows, cols, 64, nb, rows * nb, name, "NF4 (double quantized)");
  nf4_dq_tensor t;
  t.rows = rows;
  t.cols = cols;
  const std::size_t n = rows * nb;
  std::vector<float> c(n);
  double sum = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    qe::check_finite(x.subspan(r * cols, cols), name, r, "NF4 (double quantized)");
    for (std::size_t i = 0; i < nb; ++i) {
      c[r * nb + i] = detail::nf4::absmax(x.data() + r * cols + 64 * i);
      sum += c[r * nb + i];
    }
  }
  t.offset = n == 0 ? 0.0f : static_cast<float>(sum / static_cast<double>(n));
  t.absmax_q.resize(n);
  t.scale2.resize((n + nf4_dq_tensor::group - 1) / nf4_dq_tensor::group);
  for (std::size_t g = 0; g < t.scale2.size(); ++g) {
    const std::size_t i0 = g * nf4_dq_tensor::group, i1 = std::min(n, i0 + nf4_dq_tensor::group);
    float m = 0.0f;
    for (std::size_t i = i0; i < i1; ++i) m = std::max(m, std::fabs(c[i] - t.offset));
    const float s2 = m / 127.0f;
    t.scale2[g] = s2;
    for (std::size_t i = i0; i < i1; ++i) {
      const float v = s2 == 0.0f ? 0.0f : std::round((c[i] - t.offset) / s2);
      t.absmax_q[i] = static_cast<std::int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
  t.qs.resize(n * 32);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t q[64];
    detail::nf4::codes(x.data() + (i / nb) * cols + 64 * (i % nb), t.absmax(i), q);
    detail::nf4::pack(q, t.qs.data() + 32 * i);
  }
  return t;
}

/// y = L[q] * c'_i for every block (rows * cols floats, row-major).
inline std::vector<float> dequantize_nf4_dq(const nf4_dq_tensor& t) {
  std::vector<float> y(t.blocks() * 64);
  for (std::size_t i = 0; i < t.blocks(); ++i) {
    const std::uint8_t* qs = t.qs.data() + 32 * i;
    const float s = t.absmax(i);
    float* yi = y.data() + 64 * i;
    for (int sb = 0; sb < 2; ++sb)
      for (int j = 0; j < 16; ++j) {
        yi[32 * sb + j] = nf4_levels[qs[16 * sb + j] & 0x0F] * s;
        yi[32 * sb + 16 + j] = nf4_levels[qs[16 * sb + j] >> 4] * s;
      }
  }
  return y;
}

/// The TFM_NF4 blocks of a double-quantized tensor (d = f16(c'_i): the engine's layout; the
/// f16 rounding of the scale is the only change, relative error <= 2^-11).
inline std::vector<std::byte> nf4_dq_to_blocks(const nf4_dq_tensor& t) {
  std::vector<std::byte> out(t.blocks() * sizeof(block_nf4));
  for (std::size_t i = 0; i < t.blocks(); ++i) {
    block_nf4 b;
    b.d = f16(t.absmax(i));
    std::memcpy(b.qs, t.qs.data() + 32 * i, 32);
    std::memcpy(out.data() + i * sizeof b, &b, sizeof b);
  }
  return out;
}

TFM_END_NAMESPACE
