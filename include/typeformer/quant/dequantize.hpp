// typeformer/quant/dequantize.hpp
//
// WHAT THIS REPRESENTS
//   The reference (scalar) dequantizers of the GGML block formats, F16 and BF16: packed bytes
//   in, binary32 out. They are the oracle for faster kernels and the loader's fallback.
//
//   dequantize_block(const block_xx& b, float* y)  one block -> block_traits<B>::block_elements
//   dequantize(ggml_type t, bytes, y)              a run of whole blocks at any byte address
//   dequantize(ggml_type t, bytes) -> vector<float>
//
// CONTRACTS
//   - Bitwise identical to gguf.quants.dequantize of the `gguf` Python package (gguf-py 0.19,
//     gguf/quants.py), which numpy evaluates in binary32: the same products and sums in the same
//     order, including NaN/Inf/subnormal/extreme scales (a NaN result is a NaN; its payload bits
//     may differ, as they do between numpy builds). Q8_K, which gguf-py cannot dequantize, is
//     ggml's dequantize_row_q8_K: x = d * q in binary32.
//   - FMA contraction (-ffp-contract=fast, the GCC default in GNU mode) cannot change a result:
//     every product that meets an addition is exact in binary32. A scale is an f16 (11
//     significant bits), a K-quant sub-scale has at most 6 bits and a quant at most 8, so
//     d*q <= 19 bits and (d*sc)*q <= 11+6+5 = 22 bits < 24, with no overflow (65504*63*63 <
//     FLT_MAX) and no underflow (the smallest f16 is 2^-24). An exact product rounds the same
//     fused or not, so x = d*q + m equals fma(d, q, m) bit for bit.
//   - Input bytes are read with std::memcpy, so blocks may sit at any address (GGUF alignment 1).
//   - dequantize(t, bytes, y): bytes.size() must be a whole number of blocks of t and y must hold
//     bytes/block_bytes*block_elements floats, else tfm::value_error; a type this header does
//     not dequantize (IQ*, TQ*, Q8_1, MXFP4, integer types, F64) -> tfm::unsupported_error.
//   - typeformer's own layouts (TFM_NF4, TFM_I4_G64, TFM_I4_G128; gguf-py cannot read them) are
//     dequantized by the dequantize_block overloads of quant/nf4.hpp and quant/int_formats.hpp,
//     bitwise equal to the numpy reference of tests/data/quant_ext/gen_fixtures.py.
//   Sources: gguf-py gguf/quants.py (dequantize_blocks of each class), ggml/src/ggml-quants.c
//   (dequantize_row_*), ggml/src/ggml-common.h.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/int_formats.hpp"
#include "typeformer/quant/nf4.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail::dequant {
inline float f32(f16 h) noexcept { return static_cast<float>(h); }
inline float f32(int v) noexcept { return static_cast<float>(v); }

/// Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes
/// (ggml-quants.c get_scale_min_k4; gguf-py Q4_K.get_scale_min).
inline void scale_min_k4(const std::uint8_t* q, int j, int& sc, int& m) noexcept {
  if (j < 4) {
    sc = q[j] & 0x3F;
    m = q[j + 4] & 0x3F;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 2) & 0x30);
    m = (q[j + 4] >> 4) | ((q[j] >> 2) & 0x30);
  }
}
}  // namespace detail::dequant

// ---- one block each -----------------------------------------------------------------------------

/// y[j] = d * (q[j] - 8); q[j] = low nibble of qs[j] (j < 16), high nibble of qs[j-16] (j >= 16).
inline void dequantize_block(const block_q4_0& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * detail::dequant::f32((b.qs[j] & 0x0F) - 8);
    y[j + 16] = d * detail::dequant::f32((b.qs[j] >> 4) - 8);
  }
}

/// y[j] = d * q[j] + m (nibbles as in Q4_0).
inline void dequantize_block(const block_q4_1& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d), m = detail::dequant::f32(b.m);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * detail::dequant::f32(b.qs[j] & 0x0F) + m;
    y[j + 16] = d * detail::dequant::f32(b.qs[j] >> 4) + m;
  }
}

/// y[j] = d * (q[j] - 16); q[j] = nibble as in Q4_0 | bit j of qh (little-endian u32) << 4.
inline void dequantize_block(const block_q5_0& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d);
  std::uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = d * detail::dequant::f32(((b.qs[j] & 0x0F) | h0) - 16);
    y[j + 16] = d * detail::dequant::f32(((b.qs[j] >> 4) | h1) - 16);
  }
}

/// y[j] = d * q[j] + m (5-bit q as in Q5_0).
inline void dequantize_block(const block_q5_1& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d), m = detail::dequant::f32(b.m);
  std::uint32_t qh;
  std::memcpy(&qh, b.qh, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = d * detail::dequant::f32((b.qs[j] & 0x0F) | h0) + m;
    y[j + 16] = d * detail::dequant::f32((b.qs[j] >> 4) | h1) + m;
  }
}

/// y[j] = q[j] * d.
inline void dequantize_block(const block_q8_0& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d);
  for (int j = 0; j < 32; ++j) y[j] = detail::dequant::f32(b.qs[j]) * d;
}

/// Element e = 128h + 32s + l (h < 2, s < 4, l < 32): q = (qs[32h + l] >> 2s) & 3; sub-block
/// i = e / 16: y[e] = (d * (scales[i] & 15)) * q - dmin * (scales[i] >> 4).
inline void dequantize_block(const block_q2_K& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d), dmin = detail::dequant::f32(b.dmin);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32, i = e / 16;
    const int q = (b.qs[32 * h + l] >> (2 * s)) & 3;
    const float dl = d * detail::dequant::f32(b.scales[i] & 0x0F);
    const float ml = dmin * detail::dequant::f32(b.scales[i] >> 4);
    y[e] = dl * detail::dequant::f32(q) - ml;
  }
}

/// Sub-block i (of 16): 6-bit scale sc_i = low/high nibble of scales[i % 8] | 2 bits of
/// scales[8 + i % 4] at 2*(i / 4), minus 32. Element e = 128h + 32s + l: q = ((qs[32h + l] >>
/// 2s) & 3) - 4 * !(hmask[e % 32] >> (e / 32) & 1); y[e] = (d * sc_{e/16}) * q.
inline void dequantize_block(const block_q3_K& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = (b.scales[i % 8] >> (4 * (i / 8))) & 0x0F;
    const int hi = (b.scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    dl[i] = d * detail::dequant::f32((lo | (hi << 4)) - 32);
  }
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, s = (e / 32) % 4, l = e % 32;
    const int ql = (b.qs[32 * h + l] >> (2 * s)) & 3;
    const int hb = (b.hmask[l] >> (e / 32)) & 1;
    y[e] = dl[e / 16] * detail::dequant::f32(ql - ((hb ^ 1) << 2));
  }
}

/// Sub-block k (of 8) = 2c + t: q = (qs[32c + l] >> 4t) & 15 for element 32k + l;
/// y = (d * sc_k) * q - dmin * m_k with (sc_k, m_k) from scale_min_k4.
inline void dequantize_block(const block_q4_K& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d), dmin = detail::dequant::f32(b.dmin);
  for (int k = 0; k < 8; ++k) {
    int sc, m;
    detail::dequant::scale_min_k4(b.scales, k, sc, m);
    const float dk = d * detail::dequant::f32(sc), mk = dmin * detail::dequant::f32(m);
    const int c = k / 2, t = k % 2;
    for (int l = 0; l < 32; ++l)
      y[32 * k + l] = dk * detail::dequant::f32((b.qs[32 * c + l] >> (4 * t)) & 0x0F) - mk;
  }
}

/// As Q4_K with a 5th bit: q |= ((qh[l] >> k) & 1) << 4 for element 32k + l.
inline void dequantize_block(const block_q5_K& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d), dmin = detail::dequant::f32(b.dmin);
  for (int k = 0; k < 8; ++k) {
    int sc, m;
    detail::dequant::scale_min_k4(b.scales, k, sc, m);
    const float dk = d * detail::dequant::f32(sc), mk = dmin * detail::dequant::f32(m);
    const int c = k / 2, t = k % 2;
    for (int l = 0; l < 32; ++l) {
      const int q = ((b.qs[32 * c + l] >> (4 * t)) & 0x0F) | (((b.qh[l] >> k) & 1) << 4);
      y[32 * k + l] = dk * detail::dequant::f32(q) - mk;
    }
  }
}

/// Element e = 128h + 64t + j (j < 64) takes its low nibble from ql[64h + j] >> 4t; element
/// e = 128h + 32s + l takes bits 4..5 from qh[32h + l] >> 2s; y[e] = (d * scales[e/16]) * (q-32).
inline void dequantize_block(const block_q6_K& b, float* y) noexcept {
  const float d = detail::dequant::f32(b.d);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = e % 128;
    const int lo = (b.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
    const int hi = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
    const float dl = d * detail::dequant::f32(b.scales[e / 16]);
    y[e] = dl * detail::dequant::f32((lo | (hi << 4)) - 32);
  }
}

/// y[j] = d * q[j] (ggml dequantize_row_q8_K; bsums are not needed).
inline void dequantize_block(const block_q8_K& b, float* y) noexcept {
  for (int j = 0; j < 256; ++j) y[j] = b.d * detail::dequant::f32(b.qs[j]);
}

// ---- runs of blocks -----------------------------------------------------------------------------

namespace detail::dequant {
template <class Block>
void run(const std::byte* src, std::size_t n_blocks, float* y) noexcept {
  constexpr std::size_t ne = block_traits<Block>::block_elements;
  for (std::size_t i = 0; i < n_blocks; ++i) {
    Block b;
    std::memcpy(&b, src + i * sizeof(Block), sizeof(Block));
    dequantize_block(b, y + i * ne);
  }
}
}  // namespace detail::dequant

/// Dequantizes `src` (whole blocks of type t, any alignment) into `dst` (see the contract above).
inline void dequantize(ggml_type t, std::span<const std::byte> src, std::span<float> dst) {
  const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t));
  if (info == nullptr)
    fail(errc::value, "tfm::dequantize: unknown GGML type code ", static_cast<std::uint32_t>(t),
         ".");
  if (!info->dequantizable)
    fail(errc::unsupported, "tfm::dequantize: type ", info->name,
         " has no reference dequantizer in this build.");
  if (src.size() % info->block_bytes != 0)
    fail(errc::value, "tfm::dequantize: ", src.size(), " bytes are not a whole number of ",
         info->name, " blocks of ", info->block_bytes, " bytes.");
  const std::size_t n_blocks = src.size() / info->block_bytes;
  if (dst.size() != n_blocks * info->block_elements)
    fail(errc::value, "tfm::dequantize: ", n_blocks, " ", info->name, " blocks hold ",
         n_blocks * info->block_elements, " values but the destination has ", dst.size(), ".");
  const std::byte* s = src.data();
  float* y = dst.data();
  switch (t) {
    case ggml_type::f32:
      if (n_blocks > 0) std::memcpy(y, s, n_blocks * 4);
      return;
    case ggml_type::f16:
      for (std::size_t i = 0; i < n_blocks; ++i) {
        std::uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        y[i] = detail::f16_bits_to_float(h);
      }
      return;
    case ggml_type::bf16:
      for (std::size_t i = 0; i < n_blocks; ++i) {
        std::uint16_t h;
        std::memcpy(&h, s + 2 * i, 2);
        y[i] = detail::bf16_bits_to_float(h);
      }
      return;
    case ggml_type::q4_0:
      return detail::dequant::run<block_q4_0>(s, n_blocks, y);
    case ggml_type::q4_1:
      return detail::dequant::run<block_q4_1>(s, n_blocks, y);
    case ggml_type::q5_0:
      return detail::dequant::run<block_q5_0>(s, n_blocks, y);
    case ggml_type::q5_1:
      return detail::dequant::run<block_q5_1>(s, n_blocks, y);
    case ggml_type::q8_0:
      return detail::dequant::run<block_q8_0>(s, n_blocks, y);
    case ggml_type::q2_K:
      return detail::dequant::run<block_q2_K>(s, n_blocks, y);
    case ggml_type::q3_K:
      return detail::dequant::run<block_q3_K>(s, n_blocks, y);
    case ggml_type::q4_K:
      return detail::dequant::run<block_q4_K>(s, n_blocks, y);
    case ggml_type::q5_K:
      return detail::dequant::run<block_q5_K>(s, n_blocks, y);
    case ggml_type::q6_K:
      return detail::dequant::run<block_q6_K>(s, n_blocks, y);
    case ggml_type::q8_K:
      return detail::dequant::run<block_q8_K>(s, n_blocks, y);
    case ggml_type::tfm_nf4:  // typeformer's layouts: quant/nf4.hpp, quant/int_formats.hpp
      return detail::dequant::run<block_nf4>(s, n_blocks, y);
    case ggml_type::tfm_i4_g64:
      return detail::dequant::run<block_i4_g64>(s, n_blocks, y);
    case ggml_type::tfm_i4_g128:
      return detail::dequant::run<block_i4_g128>(s, n_blocks, y);
    default:
      break;
  }
  fail(errc::unsupported, "tfm::dequantize: type ", info->name, " is not handled.");
}

/// Dequantizes whole blocks of type t into a new vector.
inline std::vector<float> dequantize(ggml_type t, std::span<const std::byte> src) {
  const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t));
  const std::size_t n =
      info != nullptr && info->block_bytes != 0 && src.size() % info->block_bytes == 0
          ? src.size() / info->block_bytes * info->block_elements
          : 0;
  std::vector<float> y(n);
  dequantize(t, src, y);
  return y;
}

TFM_END_NAMESPACE
