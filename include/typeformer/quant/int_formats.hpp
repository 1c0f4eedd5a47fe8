// typeformer/quant/int_formats.hpp
//
// WHAT THIS REPRESENTS
//   The integer weight formats of GPTQ / AWQ style checkpoints, as block layouts the engine runs:
//
//     INT4 per group g (asymmetric, x = d * q + m, q in 0..15, f16 d and m per group):
//       g = 32  -> GGML's Q4_1 (block_q4_1: exactly this layout; llama.cpp runs it)
//       g = 64  -> ggml_type::tfm_i4_g64  (block_i4_g64, 36 bytes / 64 = 4.5 bits per weight)
//       g = 128 -> ggml_type::tfm_i4_g128 (block_i4_g128, 68 bytes / 128 = 4.25 bits per weight)
//     INT8 per output channel (symmetric, one scale per row = absmax / 127): stored as Q8_0
//       blocks whose 16-bit scales all equal the row's scale (8.5 bits per weight; llama.cpp
//       and the Q8_0 integer-dot GEMV run it unchanged). A row-level scale (8 + 16 / K bits)
//       would need a per-row header that GGUF's block-size rule cannot express.
//
//     quantize_block(x, block_i4_g64&), quantize_block(x, block_i4_g128&)   round to nearest
//     dequantize_block(b, y)                        y[e] = d * q_e + m
//     int4_group_type(g)                            Q4_1 / TFM_I4_G64 / TFM_I4_G128
//     quantize_int4_group(w, rows, K, g, out, name) RTN, row-major float matrix -> blocks
//     pack_int4_group(codes, scales, zeros, rows, K, g, out)   given integer codes (GPTQ / AWQ
//                                                   output: x = scale * (q - zero)) -> blocks
//     pack_int4_group_dm(codes, d, m, rows, K, g, out)          the same from x = d * q + m
//     quantize_int8_per_channel(w, rows, K, out, name)          -> Q8_0 bytes
//
// LAYOUT
//   A group of g values is g / 32 sub-blocks of 32 nibbles in Q4_1's order: sub-block s in
//   qs[16s .. 16s + 15], element 32s + j the low nibble of qs[16s + j], 32s + 16 + j the high one.
//   So block_i4_g64 / g128 are 2 / 4 Q4_1 nibble arrays sharing one (d, m) (the integer-dot
//   kernels treat each sub-block as a Q4_1 block: backend/cpu/quant/gemv_ext.hpp).
//
// CONTRACTS
//   - RTN rule of a group (Q4_1's, gguf-py gguf/quants.py Q4_1.quantize_blocks, for any g):
//       mn = min x, mx = max x; d = (mx - mn) / 15; id = d == 0 ? 0 : 1 / d;
//       q = min(15, trunc(rounded((x - mn) * id) + 0.5)); stored d = f16(d), m = f16(mn).
//     For g = 32 the bytes equal tfm::quantize(Q4_1) and gguf.quants.quantize (Q4_1).
//   - Dequantization: y = d * f32(q) + m (binary32, the product exact, so FMA-contraction-proof),
//     bitwise dequantize_block(block_q4_1) on each sub-block.
//   - pack_int4_group: codes (rows * K bytes, each 0..15, else tfm::value_error), scales and zeros
//     (rows * K / g floats, finite) -> d = f16(scale), m = f16(-(scale * zero)).
//   - quantize_int8_per_channel: per row a = max |x|; d = f16(a / 127); s = f32(d);
//     id = s == 0 ? 0 : 1 / s; q = clamp(round_half_away(x * id), -127, 127); every Q8_0 block of
//     the row stores d. K % 32 == 0.
//   - NaN/Inf -> tfm::value_error naming tensor, row and column; a scale or minimum that
//     overflows f16 -> tfm::value_error naming the tensor, row and group; K % g != 0 or g not in
//     {32, 64, 128} -> tfm::shape_error / tfm::value_error.
//   Sources: Frantar et al. 2022 (GPTQ, arXiv:2210.17323) and Lin et al. 2023 (AWQ,
//   arXiv:2306.00978) for the group layout x = s * (q - z); ggml-common.h for Q4_1 / Q8_0.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/ext_detail.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail::int_formats {

/// RTN quants of one group of G values (the contract's rule); d and m as binary32 before f16.
template <int G>
void rtn_group(const float* x, float& d, float& mn, std::uint8_t* q) noexcept {
  mn = x[0];
  float mx = x[0];
  for (int j = 1; j < G; ++j) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
  d = (mx - mn) / 15.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  for (int j = 0; j < G; ++j) {
    const float v = std::trunc(quant_ext::rounded((x[j] - mn) * id) + 0.5f);
    // NaN (only from an overflowing range) -> 0, as numpy's astype + clip in the reference.
    q[j] = !(v >= 0.0f) ? std::uint8_t{0}
           : v >= 15.0f ? std::uint8_t{15}
                        : static_cast<std::uint8_t>(v);
  }
}

/// Nibbles of G values in sub-blocks of 32 (the LAYOUT above).
template <int G>
void pack(const std::uint8_t* q, std::uint8_t* qs) noexcept {
  for (int s = 0; s < G / 32; ++s)
    for (int j = 0; j < 16; ++j)
      qs[16 * s + j] =
          static_cast<std::uint8_t>((q[32 * s + j] & 0x0F) | ((q[32 * s + 16 + j] & 0x0F) << 4));
}

template <class B>
inline constexpr int group_of = static_cast<int>(block_traits<B>::block_elements);

template <class B>
void quantize_group(const float* x, B& b) noexcept {
  constexpr int G = group_of<B>;
  float d, mn;
  std::uint8_t q[G];
  rtn_group<G>(x, d, mn, q);
  b.d = f16(d);
  b.m = f16(mn);
  pack<G>(q, b.qs);
}

template <class B>
void dequantize_group(const B& b, float* y) noexcept {
  constexpr int G = group_of<B>;
  const float d = static_cast<float>(b.d), m = static_cast<float>(b.m);
  for (int s = 0; s < G / 32; ++s)
    for (int j = 0; j < 16; ++j) {
      y[32 * s + j] = d * static_cast<float>(b.qs[16 * s + j] & 0x0F) + m;
      y[32 * s + 16 + j] = d * static_cast<float>(b.qs[16 * s + j] >> 4) + m;
    }
}

inline void check_group(int g) {
  if (g != 32 && g != 64 && g != 128)
    fail(errc::value, "tfm::quantize: INT4 group size ", g, " is not 32, 64 or 128.");
}

/// Writes the group block (Q4_1, g64 or g128 by size) of element count g at dst.
template <class F>
void with_group_block(int g, F&& f) {
  if (g == 32) return f(static_cast<block_q4_1*>(nullptr));
  if (g == 64) return f(static_cast<block_i4_g64*>(nullptr));
  return f(static_cast<block_i4_g128*>(nullptr));
}

inline void check_f16(float v, std::string_view what, std::string_view name, std::size_t row,
                      std::size_t group) {
  if (!std::isfinite(static_cast<float>(f16(v))))
    fail(errc::value, "tfm::quantize: tensor '", name, "' row ", row, " group ", group, ": the ",
         what, " ", v, " overflows f16.");
}

}  // namespace detail::int_formats

/// One INT4-g64 group (the contract's RTN rule).
inline void quantize_block(const float* x, block_i4_g64& b) noexcept {
  detail::int_formats::quantize_group(x, b);
}
/// One INT4-g128 group.
inline void quantize_block(const float* x, block_i4_g128& b) noexcept {
  detail::int_formats::quantize_group(x, b);
}
/// y[e] = d * q_e + m (sub-block nibble order of the LAYOUT).
inline void dequantize_block(const block_i4_g64& b, float* y) noexcept {
  detail::int_formats::dequantize_group(b, y);
}
inline void dequantize_block(const block_i4_g128& b, float* y) noexcept {
  detail::int_formats::dequantize_group(b, y);
}

/// The element type of INT4 with group g: Q4_1 (32), TFM_I4_G64, TFM_I4_G128; else value_error.
inline ggml_type int4_group_type(int g) {
  detail::int_formats::check_group(g);
  return g == 32 ? ggml_type::q4_1 : g == 64 ? ggml_type::tfm_i4_g64 : ggml_type::tfm_i4_g128;
}

/// Bytes of a rows x K INT4-g matrix.
inline std::size_t int4_group_bytes(std::size_t rows, std::size_t K, int g) {
  const ggml_type_info& info = ggml_type_info_of(int4_group_type(g));
  return rows * (K / info.block_elements) * info.block_bytes;
}

/// RTN INT4 with group g of the row-major rows x K floats w into out (int4_group_bytes bytes).
inline void quantize_int4_group(const float* w, std::size_t rows, std::size_t K, int g,
                                std::span<std::byte> out, std::string_view name = "?") {
  namespace qe = detail::quant_ext;
  namespace fi = detail::int_formats;
  const ggml_type t = int4_group_type(g);
  const std::size_t G = static_cast<std::size_t>(g), ng = K / G;
  qe::check_matrix(rows * K, rows, K, G, ng * ggml_type_info_of(t).block_bytes, out.size(), name,
                   ggml_type_name(t));
  fi::with_group_block(g, [&]<class B>(B*) {
    constexpr int GB = fi::group_of<B>;
    for (std::size_t r = 0; r < rows; ++r) {
      const float* x = w + r * K;
      qe::check_finite(std::span<const float>(x, K), name, r, ggml_type_name(t));
      for (std::size_t i = 0; i < ng; ++i) {
        B b;
        float d, mn;
        std::uint8_t q[GB];
        fi::rtn_group<GB>(x + i * G, d, mn, q);
        fi::check_f16(d, "scale", name, r, i);
        b.d = f16(d);
        b.m = f16(mn);
        fi::pack<GB>(q, b.qs);
        std::memcpy(out.data() + (r * ng + i) * sizeof(B), &b, sizeof b);
      }
    }
  });
}

/// The same into a new vector.
inline std::vector<std::byte> quantize_int4_group(const float* w, std::size_t rows, std::size_t K,
                                                  int g, std::string_view name = "?") {
  std::vector<std::byte> out(
      K % static_cast<std::size_t>(std::max(g, 1)) == 0 ? int4_group_bytes(rows, K, g) : 0);
  quantize_int4_group(w, rows, K, g, out, name);
  return out;
}

/// Blocks from given integer codes: codes[r * K + k] in 0..15, scales / zeros [r * (K / g) + i]
/// with x = scale * (code - zero) (GPTQ / AWQ); stored d = f16(scale), m = f16(-(scale * zero)).
inline void pack_int4_group(const std::uint8_t* codes, const float* scales, const float* zeros,
                            std::size_t rows, std::size_t K, int g, std::span<std::byte> out,
                            std::string_view name = "?") {
  namespace qe = detail::quant_ext;
  namespace fi = detail::int_formats;
  const ggml_type t = int4_group_type(g);
  const std::size_t G = static_cast<std::size_t>(g), ng = K / G;
  qe::check_matrix(rows * K, rows, K, G, ng * ggml_type_info_of(t).block_bytes, out.size(), name,
                   ggml_type_name(t));
  fi::with_group_block(g, [&]<class B>(B*) {
    constexpr int GB = fi::group_of<B>;
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t i = 0; i < ng; ++i) {
        const std::uint8_t* q = codes + r * K + i * G;
        for (int j = 0; j < GB; ++j)
          if (q[j] > 15)
            fail(errc::value, "tfm::pack_int4_group: tensor '", name, "' row ", r, " column ",
                 i * G + static_cast<std::size_t>(j), ": code ", int(q[j]), " is not 0..15.");
        const float s = scales[r * ng + i], z = zeros[r * ng + i];
        if (!std::isfinite(s) || !std::isfinite(z))
          fail(errc::value, "tfm::pack_int4_group: tensor '", name, "' row ", r, " group ", i,
               ": scale ", s, " / zero ", z, " is not finite.");
        const float mn = -(s * z);
        fi::check_f16(s, "scale", name, r, i);
        fi::check_f16(mn, "minimum", name, r, i);
        B b;
        b.d = f16(s);
        b.m = f16(mn);
        fi::pack<GB>(q, b.qs);
        std::memcpy(out.data() + (r * ng + i) * sizeof(B), &b, sizeof b);
      }
  });
}

/// Blocks from given codes with the stored form x = d * q + m directly (GPTQ's q4_1 grid of
/// quant/gptq.hpp keeps d and m): d[r * (K / g) + i] and m[...] are rounded to f16 (exact when
/// they are f16 values already). Errors as pack_int4_group.
inline void pack_int4_group_dm(const std::uint8_t* codes, const float* d, const float* m,
                               std::size_t rows, std::size_t K, int g, std::span<std::byte> out,
                               std::string_view name = "?") {
  const std::size_t ng = K / static_cast<std::size_t>(std::max(g, 1));
  namespace qe = detail::quant_ext;
  namespace fi = detail::int_formats;
  const ggml_type t = int4_group_type(g);
  const std::size_t G = static_cast<std::size_t>(g);
  qe::check_matrix(rows * K, rows, K, G, ng * ggml_type_info_of(t).block_bytes, out.size(), name,
                   ggml_type_name(t));
  fi::with_group_block(g, [&]<class B>(B*) {
    constexpr int GB = fi::group_of<B>;
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t i = 0; i < ng; ++i) {
        const std::uint8_t* q = codes + r * K + i * G;
        for (int j = 0; j < GB; ++j)
          if (q[j] > 15)
            fail(errc::value, "tfm::pack_int4_group_dm: tensor '", name, "' row ", r, " column ",
                 i * G + static_cast<std::size_t>(j), ": code ", int(q[j]), " is not 0..15.");
        const float dv = d[r * ng + i], mv = m[r * ng + i];
        if (!std::isfinite(dv) || !std::isfinite(mv))
          fail(errc::value, "tfm::pack_int4_group_dm: tensor '", name, "' row ", r, " group ", i,
               ": scale ", dv, " / minimum ", mv, " is not finite.");
        fi::check_f16(dv, "scale", name, r, i);
        fi::check_f16(mv, "minimum", name, r, i);
        B b;
        b.d = f16(dv);
        b.m = f16(mv);
        fi::pack<GB>(q, b.qs);
        std::memcpy(out.data() + (r * ng + i) * sizeof(B), &b, sizeof b);
      }
  });
}

/// Symmetric INT8 per output channel of the rows x K floats w (K % 32 == 0) as Q8_0 bytes
/// (rows * K / 32 * 34) in out.
inline void quantize_int8_per_channel(const float* w, std::size_t rows, std::size_t K,
                                      std::span<std::byte> out, std::string_view name = "?") {
  namespace qe = detail::quant_ext;
  const std::size_t nb = K / 32;
  qe::check_matrix(rows * K, rows, K, 32, nb * sizeof(block_q8_0), out.size(), name,
                   "Q8_0 (INT8 per channel)");
  for (std::size_t r = 0; r < rows; ++r) {
    const float* x = w + r * K;
    qe::check_finite(std::span<const float>(x, K), name, r, "INT8 per channel");
    float a = 0.0f;
    for (std::size_t k = 0; k < K; ++k) a = std::max(a, std::fabs(x[k]));
    const f16 d(a / 127.0f);
    const float s = static_cast<float>(d);
    if (!std::isfinite(s))
      fail(errc::value, "tfm::quantize: tensor '", name, "' row ", r, ": the INT8 scale ",
           a / 127.0f, " overflows f16.");
    const float id = s == 0.0f ? 0.0f : 1.0f / s;
    for (std::size_t i = 0; i < nb; ++i) {
      block_q8_0 b;
      b.d = d;
      for (int j = 0; j < 32; ++j) {
        const float v =
            std::clamp(std::round(x[32 * i + static_cast<std::size_t>(j)] * id), -127.0f, 127.0f);
        b.qs[j] = static_cast<std::int8_t>(v);
      }
      std::memcpy(out.data() + (r * nb + i) * sizeof b, &b, sizeof b);
    }
  }
}

/// The same into a new vector.
inline std::vector<std::byte> quantize_int8_per_channel(const float* w, std::size_t rows,
                                                        std::size_t K,
                                                        std::string_view name = "?") {
  std::vector<std::byte> out(K % 32 == 0 ? rows * (K / 32) * sizeof(block_q8_0) : 0);
  quantize_int8_per_channel(w, rows, K, out, name);
  return out;
}

TFM_END_NAMESPACE
