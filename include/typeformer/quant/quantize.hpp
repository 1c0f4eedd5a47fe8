// typeformer/quant/quantize.hpp
//
// WHAT THIS REPRESENTS
//   The reference (scalar) quantizers: binary32 in, GGML blocks out.
//
//   quantize_block(const float* x, block_xx& b)     one block from block_elements finite floats
//   quantize_row(t, x, bytes, name, row)             one row (whole blocks), input checked
//   quantize(t, x, rows, cols, name) -> bytes        a row-major rows x cols tensor
//   quantizable(t)                                   true for the types handled here
//
//   Types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (weights), Q8_1 and Q8_K (the activation formats of the
//   integer dot products), Q4_K and Q6_K (weights; Q2_K, Q3_K, Q5_K are not quantized yet).
//
// CONTRACTS
//   - Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: byte for byte the output of gguf.quants.quantize (gguf-py
//     0.19, gguf/quants.py, the `quantize_blocks` of each class), which numpy evaluates in
//     binary32 with one rounding per operation. The rules, per block of 32:
//       Q8_0  d = amax / 127, id = d == 0 ? 0 : 1 / d, q = round-half-away(x * id).
//       Q4_0  max = the first element of largest |x|, d = max / -8, id as above,
//             q = min(15, trunc(x * id + 8.5)).
//       Q4_1  d = (max - min) / 15, id as above, q = min(15, trunc((x - min) * id + 0.5)), m = min.
//       Q5_0  as Q4_0 with d = max / -16, q = min(31, trunc(x * id + 16.5)).
//       Q5_1  as Q4_1 with d = (max - min) / 31, q = min(31, ...).
//     d and m are stored as f16 (round to nearest even, overflow to Inf). The float-to-integer
//     conversion is numpy's astype on x86-64: truncation to int32 where the value is out of
//     range or NaN gives INT32_MIN, then the low 8 bits. Only inputs whose scale underflows or
//     overflows reach that case (id = Inf when all |x| < ~1e-37, 0 * Inf = NaN; max - min = Inf
//     for values near FLT_MAX); the result is defined here exactly as gguf-py's on x86-64, where
//     ggml's C reference has undefined behaviour.
//   - Q8_1 is ggml's quantize_row_q8_1_ref (the Q8_0 quants and d, plus s = f16(sum(q) * d));
//     Q8_K is ggml's quantize_row_q8_K_ref (iscale = -127 / max over 256 values, round to
//     nearest even with 1.5*2^23 added, q = min(127, .), d = 1 / iscale, 16 bsums). Both are
//     checked byte for byte against the llama.cpp build bundled with llama-cpp-python.
//   - Q4_K and Q6_K follow llama.cpp's quantize_row_q4_K_ref / quantize_row_q6_K_ref (what
//     llama-quantize runs without an importance matrix): the contract is an RMSE no larger than
//     llama.cpp's on the same rows (tests), not byte equality.
//   - Products that meet an addition are rounded before the addition on every compiler
//     (detail::quant::rounded): an FMA contraction (GCC's default -ffp-contract=fast) would change
//     bits the reference does not.
//   - Within a Q4_1/Q5_1 block whose minimum (or maximum) is a zero and that holds both +0 and
//     -0, the sign of m follows the first of them; numpy's reduction picks one by position, so
//     only that case may differ from gguf-py (in the sign bit of m only).
//   - quantize_row / quantize refuse NaN and Inf with a tfm::value_error naming the tensor, the
//     row and the column; a row length that is not a whole number of blocks is a tfm::shape_error.
//   Sources: gguf-py gguf/quants.py; ggml/src/ggml-quants.c (quantize_row_*_ref, nearest_int);
//   ggml/src/ggml-common.h for the layouts.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail::quant {

/// v, rounded to binary32 and hidden from the optimizer, so `rounded(a * b) + c` cannot be
/// contracted into fma(a, b, c) (the references round the product first).
TFM_ALWAYS_INLINE float rounded(float v) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__SSE2__)
  __asm__("" : "+x"(v));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

/// numpy's float32 -> int32 on x86-64 (CVTTSS2SI): truncation, INT32_MIN for NaN or out of range.
inline std::int32_t cvtt_i32(float v) noexcept {
  if (!(v >= -2147483648.0f && v < 2147483648.0f)) return INT32_MIN;
  return static_cast<std::int32_t>(v);
}
/// numpy's float32 -> uint8 / int8 (astype): the low byte of cvtt_i32.
inline std::uint8_t cvt_u8(float v) noexcept {
  return static_cast<std::uint8_t>(static_cast<std::uint32_t>(cvtt_i32(v)) & 0xFFu);
}
inline std::int8_t cvt_i8(float v) noexcept { return static_cast<std::int8_t>(cvt_u8(v)); }

/// gguf-py's np_roundf (round half away from zero) for finite v; NaN for Inf or NaN.
inline float round_half_away(float v) noexcept {
  if (!std::isfinite(v)) return std::numeric_limits<float>::quiet_NaN();
  return std::round(v);
}

/// 1 / d, or 0 when d == 0 (every quantizer's `id`).
inline float inverse_or_zero(float d) noexcept { return d == 0.0f ? 0.0f : 1.0f / d; }

/// The element of largest magnitude, first one on ties (numpy argmax of abs).
inline float signed_absmax(const float* x, int n) noexcept {
  float best = x[0];
  for (int j = 1; j < n; ++j)
    if (std::fabs(x[j]) > std::fabs(best)) best = x[j];
  return best;
}

inline float absmax(const float* x, int n) noexcept {
  float a = 0.0f;
  for (int j = 0; j < n; ++j) a = std::max(a, std::fabs(x[j]));
  return a;
}

inline void min_max(const float* x, int n, float& mn, float& mx) noexcept {
  mn = mx = x[0];
  for (int j = 1; j < n; ++j) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
}

/// Nibble packing of Q4/Q5: low nibble of byte j = element j, high nibble = element j + 16.
inline void pack_nibbles(const std::uint8_t* q, std::uint8_t* qs) noexcept {
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<std::uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
}
/// Bit 4 of element j -> bit j of the little-endian u32 qh.
inline void pack_high_bits(const std::uint8_t* q, std::uint8_t* qh) noexcept {
  std::uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<std::uint32_t>((q[j] >> 4) & 1u) << j;
  for (int i = 0; i < 4; ++i) qh[i] = static_cast<std::uint8_t>(h >> (8 * i));
}

/// Type-0 4/5-bit quants: q = min(top, trunc(x * id + offset)).
inline void quants_type0(const float* x, float id, float offset, std::uint8_t top,
                         std::uint8_t* q) noexcept {
  for (int j = 0; j < 32; ++j)
    q[j] = std::min(top, cvt_u8(std::trunc(rounded(x[j] * id) + offset)));
}
/// Type-1 4/5-bit quants: q = min(top, trunc((x - mn) * id + 0.5)).
inline void quants_type1(const float* x, float mn, float id, std::uint8_t top,
                         std::uint8_t* q) noexcept {
  for (int j = 0; j < 32; ++j)
    q[j] = std::min(top, cvt_u8(std::trunc(rounded((x[j] - mn) * id) + 0.5f)));
}

/// ggml's nearest_int: round to nearest even through the 1.5 * 2^23 bias, read as bits
/// (|v| <= 2^22 for finite results; Inf and NaN give what the bits give, as in ggml).
inline int nearest_int(float v) noexcept {
  const float biased = rounded(v) + 12582912.0f;
  std::int32_t i;
  std::memcpy(&i, &biased, sizeof i);
  return (i & 0x007FFFFF) - 0x00400000;
}

/// Weighted least-squares fit x ~ scale * l + mn, l in [0, nmax], mn <= 0, for the K formats
/// with a minimum (ggml make_qkx2_quants): the rounding of nstep + 1 trial inverse scales
/// (nmax + rmin + rdelta * i) / (max - min) is each refitted in closed form and the one of
/// least weighted squared error kept. Returns scale; neg_min = -mn.
inline float fit_scale_min(int n, int nmax, const float* x, const float* w, std::uint8_t* L,
                           float& neg_min, float rmin, float rdelta, int nstep) noexcept {
  float mn = x[0], mx = x[0], sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  mn = std::min(mn, 0.0f);
  if (mx == mn) {
    std::fill(L, L + n, std::uint8_t(0));
    neg_min = -mn;
    return 0.0f;
  }
  auto quant = [&](float iscale, int i) {
    return static_cast<std::uint8_t>(std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax));
  };
  float iscale = static_cast<float>(nmax) / (mx - mn);
  float scale = 1.0f / iscale;
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    L[i] = quant(iscale, i);
    const float diff = scale * static_cast<float>(L[i]) + mn - x[i];
    best += w[i] * diff * diff;
  }
  std::uint8_t trial[32];
  for (int step = 0; step <= nstep; ++step) {
    iscale = (rmin + rdelta * static_cast<float>(step) + static_cast<float>(nmax)) / (mx - mn);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      trial[i] = quant(iscale, i);
      const float l = trial[i];
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * static_cast<float>(trial[i]) + this_min - x[i];
      err += w[i] * diff * diff;
    }
    if (err < best) {
      std::copy(trial, trial + n, L);
      best = err;
      scale = this_scale;
      mn = this_min;
    }
  }
  neg_min = -mn;
  return scale;
}

/// Weighted least-squares symmetric fit x ~ scale * l, l in [-nmax, nmax - 1], weights x^2
/// (ggml make_qx_quants with rmse_type 1): the inverse scale -(nmax + 0.1 i) / max, i = -9..9,
/// whose rounding maximises (sum w x l)^2 / sum w l^2. L receives l + nmax.
inline float fit_scale_symmetric(int n, int nmax, const float* x, std::int8_t* L) noexcept {
  float mx = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  if (amax < 1e-15f) {  // ggml's GROUP_MAX_EPS
    std::fill(L, L + n, std::int8_t(0));
    return 0.0f;
  }
  auto quant = [&](float iscale, int i) {
    return std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
  };
  auto sums = [&](float iscale, float& sumlx, float& suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const float l = static_cast<float>(quant(iscale, i));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
  };
  float iscale = static_cast<float>(-nmax) / mx, sumlx, suml2;
  sums(iscale, sumlx, suml2);
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(quant(iscale, i) + nmax);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int t = -9; t <= 9; ++t) {
    if (t == 0) continue;
    const float is = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(t)) / mx;
    sums(is, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(quant(is, i) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/// Q4_K's 6-bit scale and min of sub-block j (the layout of dequantize's scale_min_k4).
inline void pack_scale_min_k4(std::uint8_t* q, int j, std::uint8_t ls, std::uint8_t lm) noexcept {
  if (j < 4) {
    q[j] = ls;
    q[j + 4] = lm;
  } else {
    q[j + 4] = static_cast<std::uint8_t>((ls & 0x0F) | ((lm & 0x0F) << 4));
    q[j - 4] = static_cast<std::uint8_t>(q[j - 4] | ((ls >> 4) << 6));
    q[j] = static_cast<std::uint8_t>(q[j] | ((lm >> 4) << 6));
  }
}

}  // namespace detail::quant

// ---- one block each (x: block_elements finite floats) -------------------------------------------

/// Q8_0 (gguf-py Q8_0.quantize_blocks = ggml quantize_row_q8_0_ref).
inline void quantize_block(const float* x, block_q8_0& b) noexcept {
  namespace q = detail::quant;
  const float d = q::absmax(x, 32) / 127.0f;
  const float id = q::inverse_or_zero(d);
  for (int j = 0; j < 32; ++j) b.qs[j] = q::cvt_i8(q::round_half_away(x[j] * id));
  b.d = f16(d);
}

/// Q8_1 (ggml quantize_row_q8_1_ref): the Q8_0 quants and scale, s = f16(sum(q) * d).
inline void quantize_block(const float* x, block_q8_1& b) noexcept {
  namespace q = detail::quant;
  const float d = q::absmax(x, 32) / 127.0f;
  const float id = q::inverse_or_zero(d);
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    b.qs[j] = q::cvt_i8(q::round_half_away(x[j] * id));
    sum += b.qs[j];
  }
  b.d = f16(d);
  b.s = f16(static_cast<float>(sum) * d);
}

/// Q4_0 (gguf-py Q4_0.quantize_blocks).
inline void quantize_block(const float* x, block_q4_0& b) noexcept {
  namespace q = detail::quant;
  const float d = q::signed_absmax(x, 32) / -8.0f;
  std::uint8_t qv[32];
  q::quants_type0(x, q::inverse_or_zero(d), 8.5f, 15, qv);
  q::pack_nibbles(qv, b.qs);
  b.d = f16(d);
}

/// Q4_1 (gguf-py Q4_1.quantize_blocks).
inline void quantize_block(const float* x, block_q4_1& b) noexcept {
  namespace q = detail::quant;
  float mn, mx;
  q::min_max(x, 32, mn, mx);
  const float d = (mx - mn) / 15.0f;
  std::uint8_t qv[32];
  q::quants_type1(x, mn, q::inverse_or_zero(d), 15, qv);
  q::pack_nibbles(qv, b.qs);
  b.d = f16(d);
  b.m = f16(mn);
}

/// Q5_0 (gguf-py Q5_0.quantize_blocks).
inline void quantize_block(const float* x, block_q5_0& b) noexcept {
  namespace q = detail::quant;
  const float d = q::signed_absmax(x, 32) / -16.0f;
  std::uint8_t qv[32];
  q::quants_type0(x, q::inverse_or_zero(d), 16.5f, 31, qv);
  q::pack_nibbles(qv, b.qs);
  q::pack_high_bits(qv, b.qh);
  b.d = f16(d);
}

/// Q5_1 (gguf-py Q5_1.quantize_blocks).
inline void quantize_block(const float* x, block_q5_1& b) noexcept {
  namespace q = detail::quant;
  float mn, mx;
  q::min_max(x, 32, mn, mx);
  const float d = (mx - mn) / 31.0f;
  std::uint8_t qv[32];
  q::quants_type1(x, mn, q::inverse_or_zero(d), 31, qv);
  q::pack_nibbles(qv, b.qs);
  q::pack_high_bits(qv, b.qh);
  b.d = f16(d);
  b.m = f16(mn);
}

/// Q8_K (ggml quantize_row_q8_K_ref): 256 values, the element of largest |x| maps to -127.
inline void quantize_block(const float* x, block_q8_K& b) noexcept {
  namespace q = detail::quant;
  float mx = 0.0f, amax = 0.0f;
  for (int j = 0; j < 256; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      mx = x[j];
    }
  }
  if (amax == 0.0f) {
    // ggml leaves bsums as they were; they are zeroed here (the sums of zero quants).
    std::memset(&b, 0, sizeof b);
    return;
  }
  const float iscale = -127.0f / mx;
  for (int j = 0; j < 256; ++j)
    b.qs[j] = static_cast<std::int8_t>(std::min(127, q::nearest_int(iscale * x[j])));
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int j = 0; j < 16; ++j) s += b.qs[16 * g + j];
    b.bsums[g] = static_cast<std::int16_t>(s);
  }
  b.d = 1.0f / iscale;
}

/// Q4_K (the algorithm of ggml quantize_row_q4_K_ref, llama-quantize without an importance
/// matrix): per 32-value sub-block a weighted (w = rms + |x|) least-squares scale and min,
/// both quantized to 6 bits against the super-block maxima, then the values requantized.
/// Contract: RMSE within llama.cpp's on the same rows (tests), not byte equality.
inline void quantize_block(const float* x, block_q4_K& b) noexcept {
  namespace q = detail::quant;
  std::uint8_t L[256];
  float scales[8], mins[8], w[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xj = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xj[l] * xj[l];
    const float av = std::sqrt(sum_x2 / 32.0f);
    for (int l = 0; l < 32; ++l) w[l] = av + std::fabs(xj[l]);
    scales[j] = q::fit_scale_min(32, 15, xj, w, L + 32 * j, mins[j], -1.0f, 0.1f, 20);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  std::memset(b.scales, 0, sizeof b.scales);
  for (int j = 0; j < 8; ++j) {
    const auto ls = std::min<std::uint8_t>(
        63, static_cast<std::uint8_t>(q::nearest_int(inv_scale * scales[j])));
    const auto lm =
        std::min<std::uint8_t>(63, static_cast<std::uint8_t>(q::nearest_int(inv_min * mins[j])));
    q::pack_scale_min_k4(b.scales, j, ls, lm);
  }
  b.d = f16(max_scale / 63.0f);
  b.dmin = f16(max_min / 63.0f);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    detail::dequant::scale_min_k4(b.scales, j, sc, m);
    const float d = static_cast<float>(b.d) * static_cast<float>(sc);
    if (d == 0.0f) continue;
    const float dm = static_cast<float>(b.dmin) * static_cast<float>(m);
    for (int l = 0; l < 32; ++l)
      L[32 * j + l] =
          static_cast<std::uint8_t>(std::clamp(q::nearest_int((x[32 * j + l] + dm) / d), 0, 15));
  }
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<std::uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

/// Q6_K (the algorithm of ggml quantize_row_q6_K_ref): per 16-value sub-block a symmetric
/// x^2-weighted least-squares scale, scales quantized to int8 against the largest, values
/// requantized to [-32, 31]. Contract: RMSE within llama.cpp's on the same rows (tests).
inline void quantize_block(const float* x, block_q6_K& b) noexcept {
  namespace q = detail::quant;
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int i = 0; i < 16; ++i) {
    scales[i] = q::fit_scale_symmetric(16, 32, x + 16 * i, L + 16 * i);
    if (std::fabs(scales[i]) > max_abs) {
      max_abs = std::fabs(scales[i]);
      max_scale = scales[i];
    }
  }
  if (max_abs < 1e-15f) {
    std::memset(&b, 0, sizeof b);
    return;
  }
  const float iscale = -128.0f / max_scale;
  b.d = f16(1.0f / iscale);
  for (int i = 0; i < 16; ++i)
    b.scales[i] = static_cast<std::int8_t>(std::min(127, q::nearest_int(iscale * scales[i])));
  for (int i = 0; i < 16; ++i) {
    const float d = static_cast<float>(b.d) * static_cast<float>(b.scales[i]);
    if (d == 0.0f) continue;
    for (int l = 0; l < 16; ++l)
      L[16 * i + l] =
          static_cast<std::int8_t>(std::clamp(q::nearest_int(x[16 * i + l] / d), -32, 31) + 32);
  }
  for (int h = 0; h < 2; ++h) {
    const std::int8_t* Lh = L + 128 * h;
    for (int l = 0; l < 32; ++l) {
      const int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
      b.ql[64 * h + l] = static_cast<std::uint8_t>((q1 & 0x0F) | ((q3 & 0x0F) << 4));
      b.ql[64 * h + l + 32] = static_cast<std::uint8_t>((q2 & 0x0F) | ((q4 & 0x0F) << 4));
      b.qh[32 * h + l] = static_cast<std::uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                                   ((q4 >> 4) << 6));
    }
  }
}

// ---- rows and tensors ---------------------------------------------------------------------------

/// True for the types quantize_row handles.
constexpr bool quantizable(ggml_type t) noexcept {
  switch (t) {
    case ggml_type::q8_0:
    case ggml_type::q8_1:
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q5_0:
    case ggml_type::q5_1:
    case ggml_type::q8_K:
    case ggml_type::q4_K:
    case ggml_type::q6_K:
      return true;
    default:
      return false;
  }
}

namespace detail::quant {
template <class Block>
void row(const float* x, std::size_t n_blocks, std::byte* dst) noexcept {
  constexpr std::size_t ne = block_traits<Block>::block_elements;
  for (std::size_t i = 0; i < n_blocks; ++i) {
    Block b;
    quantize_block(x + i * ne, b);
    std::memcpy(dst + i * sizeof(Block), &b, sizeof(Block));
  }
}

inline const ggml_type_info& quantizable_info(ggml_type t, std::string_view name) {
  const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t));
  if (info == nullptr)
    fail(errc::value, "tfm::quantize: tensor '", name, "': unknown GGML type code ",
         static_cast<std::uint32_t>(t), ".");
  if (!quantizable(t))
    fail(errc::unsupported, "tfm::quantize: tensor '", name, "': type ", info->name,
         " has no quantizer in this build (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q8_1, Q8_K, Q4_K, Q6_K).");
  return *info;
}
}  // namespace detail::quant

/// Quantizes one row `x` of tensor `name` (row index `row`, for messages) into `dst`, which
/// must hold exactly x.size() / block_elements blocks of type t (any alignment). NaN/Inf ->
/// tfm::value_error naming the tensor, row and column; x.size() not a whole number of blocks
/// -> tfm::shape_error; dst of the wrong size -> tfm::value_error.
inline void quantize_row(ggml_type t, std::span<const float> x, std::span<std::byte> dst,
                         std::string_view name = "?", std::size_t row = 0) {
  const ggml_type_info& info = detail::quant::quantizable_info(t, name);
  if (x.size() % info.block_elements != 0)
    fail(errc::shape, "tfm::quantize: tensor '", name, "': a row of ", x.size(),
         " values is not a whole number of ", info.name, " blocks of ", info.block_elements, ".");
  const std::size_t n_blocks = x.size() / info.block_elements;
  if (dst.size() != n_blocks * info.block_bytes)
    fail(errc::value, "tfm::quantize: tensor '", name, "': ", n_blocks, " ", info.name,
         " blocks need ", n_blocks * info.block_bytes, " bytes but the destination has ",
         dst.size(), ".");
  for (std::size_t j = 0; j < x.size(); ++j)
    if (!std::isfinite(x[j]))
      fail(errc::value, "tfm::quantize: tensor '", name, "' row ", row, " column ", j, " is ",
           std::isnan(x[j]) ? "NaN" : "Inf", "; only finite values can be quantized to ", info.name,
           ".");
  const float* s = x.data();
  std::byte* d = dst.data();
  switch (t) {
    case ggml_type::q8_0:
      return detail::quant::row<block_q8_0>(s, n_blocks, d);
    case ggml_type::q8_1:
      return detail::quant::row<block_q8_1>(s, n_blocks, d);
    case ggml_type::q4_0:
      return detail::quant::row<block_q4_0>(s, n_blocks, d);
    case ggml_type::q4_1:
      return detail::quant::row<block_q4_1>(s, n_blocks, d);
    case ggml_type::q5_0:
      return detail::quant::row<block_q5_0>(s, n_blocks, d);
    case ggml_type::q5_1:
      return detail::quant::row<block_q5_1>(s, n_blocks, d);
    case ggml_type::q8_K:
      return detail::quant::row<block_q8_K>(s, n_blocks, d);
    case ggml_type::q4_K:
      return detail::quant::row<block_q4_K>(s, n_blocks, d);
    case ggml_type::q6_K:
      return detail::quant::row<block_q6_K>(s, n_blocks, d);
    default:
      break;
  }
  fail(errc::unsupported, "tfm::quantize: type ", info.name, " is not handled.");
}

/// Quantizes a row-major rows x cols float tensor `name` to type t: rows * (cols / block)
/// blocks, row after row (the GGUF tensor data). Errors as quantize_row.
inline std::vector<std::byte> quantize(ggml_type t, std::span<const float> x, std::size_t rows,
                                       std::size_t cols, std::string_view name = "?") {
  const ggml_type_info& info = detail::quant::quantizable_info(t, name);
  if (rows != 0 && (x.size() / rows != cols || x.size() % rows != 0))
    fail(errc::shape, "tfm::quantize: tensor '", name, "' is ", rows, " x ", cols, " but has ",
         x.size(), " values.");
  if (cols % info.block_elements != 0)
    fail(errc::shape, "tfm::quantize: tensor '", name, "': a row of ", cols,
         " values is not a whole number of ", info.name, " blocks of ", info.block_elements, ".");
  const std::size_t row_bytes = cols / info.block_elements * info.block_bytes;
  std::vector<std::byte> out(rows * row_bytes);
  for (std::size_t r = 0; r < rows; ++r)
    quantize_row(t, x.subspan(r * cols, cols),
                 std::span<std::byte>(out).subspan(r * row_bytes, row_bytes), name, r);
  return out;
}

TFM_END_NAMESPACE
