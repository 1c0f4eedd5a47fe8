// typeformer/quant/quantize.hpp
//
// WHAT THIS REPRESENTS
//   The reference (scalar) quantizers: binary32 in, GGML blocks out.
//
//   quantize_block(const float* x, block_xx& b)     one block from block_elements finite floats
//   quantize_block(x, qw, block_xx& b)               a K block with importances qw (256 values)
//   quantize_row(t, x, bytes, name, row, imp)        one row (whole blocks), input checked
//   quantize(t, x, rows, cols, name, imp) -> bytes   a row-major rows x cols tensor
//   quantizable(t), uses_importance(t)               the types handled / changed by an imatrix
//
//   Types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (weights), Q8_1 and Q8_K (the activation formats of the
//   integer dot products), Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (weights). `imp` is an optional
//   importance vector (one value >= 0 per column, an imatrix's in_sum2 / count), used as
//   llama.cpp's quantize_q* use quant_weights by Q4_0, Q4_1, Q5_0, Q5_1 and every K type.
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
//   - Q2_K, Q3_K, Q4_K, Q5_K and Q6_K follow llama.cpp's quantize_row_q*_K_ref (what
//     llama-quantize runs without an importance matrix) and, with an importance vector,
//     quantize_row_q*_K_impl; Q4_0 ... Q5_1 with an importance vector follow
//     quantize_row_q4_0_impl ... q5_1_impl (without one they stay gguf-py's bytes). The
//     contract is an RMSE (importance-weighted when there is an importance vector) no larger
//     than llama.cpp's on the same rows, 1.001x at most (tests/unit/quant/
//     kquant_quantize_test.cpp against ggml_quantize_chunk's bytes); every product is rounded
//     before an addition, as in llama.cpp's x86-64 build, so the bytes are identical on the
//     test rows as well.
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
#include "typeformer/quant/ext_detail.hpp"

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
/// contracted into fma(a, b, c) (the references round the product first); one definition for
/// every quantizer (quant/ext_detail.hpp).
using detail::quant_ext::rounded;

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

/// a * b rounded to binary32 before any addition (no FMA contraction: llama.cpp's reference
/// build rounds every product).
TFM_ALWAYS_INLINE float mul(float a, float b) noexcept { return rounded(a * b); }

/// Weighted least-squares fit x ~ scale * l + mn, l in [0, nmax], mn <= 0, for the K formats
/// with a minimum (ggml make_qkx2_quants / make_qkx3_quants, which differ only in their
/// arguments): the rounding of nstep + 1 trial inverse scales (nmax + rmin + rdelta * i) /
/// (max - min) is each refitted in closed form and the one of least weighted error kept; the
/// error is sum w (fit - x)^2, or sum w |fit - x| when use_mad. Returns scale; neg_min = -mn.
inline float fit_scale_min(int n, int nmax, const float* x, const float* w, std::uint8_t* L,
                           float& neg_min, float rmin, float rdelta, int nstep,
                           bool use_mad = false) noexcept {
  float mn = x[0], mx = x[0], sum_w = w[0], sum_x = mul(w[0], x[0]);
  for (int i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sum_w += w[i];
    sum_x += mul(w[i], x[i]);
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
  auto err_of = [&](float scale, float m, const std::uint8_t* l) {
    float e = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = rounded(mul(scale, static_cast<float>(l[i])) + m) - x[i];
      e += use_mad ? mul(w[i], std::fabs(diff)) : mul(w[i], mul(diff, diff));
    }
    return e;
  };
  float iscale = static_cast<float>(nmax) / (mx - mn);
  float scale = 1.0f / iscale;
  for (int i = 0; i < n; ++i) L[i] = quant(iscale, i);
  float best = err_of(scale, mn, L);
  std::uint8_t trial[32];
  for (int step = 0; step <= nstep; ++step) {
    iscale = (rounded(rmin + mul(rdelta, static_cast<float>(step))) + static_cast<float>(nmax)) /
             (mx - mn);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      trial[i] = quant(iscale, i);
      const float l = trial[i];
      sum_l += mul(w[i], l);
      sum_l2 += mul(mul(w[i], l), l);
      sum_xl += mul(mul(w[i], l), x[i]);
    }
    const float det = mul(sum_w, sum_l2) - mul(sum_l, sum_l);
    if (!(det > 0)) continue;
    float this_scale = (mul(sum_w, sum_xl) - mul(sum_x, sum_l)) / det;
    float this_min = (mul(sum_l2, sum_x) - mul(sum_l, sum_xl)) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    const float err = err_of(this_scale, this_min, trial);
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

/// Weighted least-squares symmetric fit x ~ scale * l, l in [-nmax, nmax - 1], weights qw or,
/// when qw is null, x^2 (ggml make_qx_quants with rmse_type 1): the inverse scale
/// -(nmax + 0.1 i) / max, i = -9..9, whose rounding maximises (sum w x l)^2 / sum w l^2.
/// L receives l + nmax.
inline float fit_scale_symmetric(int n, int nmax, const float* x, std::int8_t* L,
                                 const float* qw = nullptr) noexcept {
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
      const float w = qw != nullptr ? qw[i] : mul(x[i], x[i]);
      sumlx += mul(mul(w, x[i]), l);
      suml2 += mul(mul(w, l), l);
    }
  };
  float iscale = static_cast<float>(-nmax) / mx, sumlx, suml2;
  sums(iscale, sumlx, suml2);
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(quant(iscale, i) + nmax);
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = mul(scale, sumlx);
  for (int t = -9; t <= 9; ++t) {
    if (t == 0) continue;
    const float is = -(static_cast<float>(nmax) + mul(0.1f, static_cast<float>(t))) / mx;
    sums(is, sumlx, suml2);
    if (suml2 > 0 && mul(sumlx, sumlx) > mul(best, suml2)) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(quant(is, i) + nmax);
      scale = sumlx / suml2;
      best = mul(scale, sumlx);
    }
  }
  return scale;
}

/// Symmetric fit with coordinate descent, weights x^2 (ggml make_q3_quants with do_rmse): the
/// quants of -nmax / max are improved one at a time (at most 5 sweeps) while that raises
/// (sum w x l)^2 / sum w l^2. L receives l + nmax, l in [-nmax, nmax - 1]; returns the scale.
inline float fit_scale_q3(int n, int nmax, const float* x, std::int8_t* L) noexcept {
  float mx = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  if (amax < 1e-15f) {
    std::fill(L, L + n, std::int8_t(0));
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / mx;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<std::int8_t>(l);
    const float w = mul(x[i], x[i]);
    sumlx += mul(mul(w, x[i]), static_cast<float>(l));
    suml2 += mul(mul(w, static_cast<float>(l)), static_cast<float>(l));
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = mul(x[i], x[i]);
      const float li = L[i];
      float slx = sumlx - mul(mul(w, x[i]), li);
      if (!(slx > 0)) continue;
      float sl2 = suml2 - mul(mul(w, li), li);
      const int nl = std::clamp(nearest_int(mul(x[i], sl2) / slx), -nmax, nmax - 1);
      if (nl == L[i]) continue;
      slx += mul(mul(w, x[i]), static_cast<float>(nl));
      sl2 += mul(mul(w, static_cast<float>(nl)), static_cast<float>(nl));
      if (sl2 > 0 && mul(mul(slx, slx), suml2) > mul(mul(sumlx, sumlx), sl2)) {
        L[i] = static_cast<std::int8_t>(nl);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0 ? sumlx / suml2 : 0.0f;
}

/// Weighted fit of non-negative x ~ scale * l, l in [0, nmax] (ggml make_qp_quants: the
/// sub-block scales and mins of the importance-weighted K-quants): the best of 9 trial inverse
/// scales (nmax + 0.1 i) / max by weighted squared error, then coordinate descent as in
/// fit_scale_q3. Returns the scale.
inline float fit_scale_positive(int n, int nmax, const float* x, std::uint8_t* L,
                                const float* w) noexcept {
  float mx = 0;
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx < 1e-15f) {
    std::fill(L, L + n, std::uint8_t(0));
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / mx;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int(iscale * x[i]));
  float scale = 1.0f / iscale, best = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - mul(scale, static_cast<float>(L[i]));
    best += mul(mul(w[i], diff), diff);
  }
  for (int t = -4; t <= 4; ++t) {
    if (t == 0) continue;
    const float is = rounded(mul(0.1f, static_cast<float>(t)) + static_cast<float>(nmax)) / mx;
    const float sc = 1.0f / is;
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(is * x[i]));
      const float diff = x[i] - mul(sc, static_cast<float>(l));
      err += mul(mul(w[i], diff), diff);
    }
    if (err < best) {
      best = err;
      iscale = is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    sumlx += mul(mul(w[i], x[i]), static_cast<float>(l));
    suml2 += mul(mul(w[i], static_cast<float>(l)), static_cast<float>(l));
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float li = L[i];
      float slx = sumlx - mul(mul(w[i], x[i]), li);
      float sl2 = suml2 - mul(mul(w[i], li), li);
      if (!(slx > 0 && sl2 > 0)) continue;
      const int nl = std::min(nmax, nearest_int(mul(x[i], sl2) / slx));
      if (nl == L[i]) continue;
      slx += mul(mul(w[i], x[i]), static_cast<float>(nl));
      sl2 += mul(mul(w[i], static_cast<float>(nl)), static_cast<float>(nl));
      if (mul(mul(slx, slx), suml2) > mul(mul(sumlx, sumlx), sl2)) {
        L[i] = static_cast<std::uint8_t>(nl);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  return suml2 > 0 ? sumlx / suml2 : 0.0f;
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

// ---- K-quants (super-blocks of 256) -------------------------------------------------------------
//
// Each K format has two quantizers, as llama.cpp has (ggml-quants.c):
//   quantize_block(x, b)            quantize_row_*_ref: what llama-quantize runs without an
//                                   importance matrix;
//   quantize_block(x, qw, b)        quantize_row_*_impl with quant_weights: qw holds the 256
//                                   importances of the super-block's columns (an imatrix's
//                                   in_sum2 / count), which weight the squared error of every
//                                   least-squares fit (qw * sqrt(sigma2 + x^2) for Q2_K ... Q5_K,
//                                   qw itself for Q6_K), and the sub-block scales are fitted by
//                                   make_qp_quants / make_qx_quants instead of rounded on a grid.
// Every product is rounded before it meets an addition (mul), as in llama.cpp's build.

namespace detail::quant {

/// Q2_K / Q3_K packing of 256 two-bit values: byte 32 h + l of qs (h = 0, 1; l < 32) holds
/// L[128 h + 32 s + l] in bits 2 s .. 2 s + 1, s = 0..3 (four values per byte).
inline void pack_2bit(const std::uint8_t* L, std::uint8_t* qs) noexcept {
  for (int j = 0; j < 256; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 2) |
                                                (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/// Q3_K's sixteen 6-bit scales (values 0..63) into 12 bytes (dequantize's unpacking).
inline void pack_scales_q3(const std::uint8_t* ls, std::uint8_t* scales) noexcept {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 16; ++j) {
    const int l = ls[j];
    if (j < 8)
      scales[j] = static_cast<std::uint8_t>(l & 0x0F);
    else
      scales[j - 8] = static_cast<std::uint8_t>(scales[j - 8] | ((l & 0x0F) << 4));
    scales[8 + j % 4] = static_cast<std::uint8_t>(scales[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
  }
}
inline int scale_q3(const std::uint8_t* scales, int j) noexcept {
  const int lo = j < 8 ? scales[j] & 0x0F : scales[j - 8] >> 4;
  return (lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

/// Q3_K tail: quants requantized against the stored scales (kept where a scale is 0), then the
/// high bits into hmask and the low two bits into qs. L holds l + 4, l in [-4, 3].
inline void finish_q3_K(const float* x, std::int8_t* L, block_q3_K& b) noexcept {
  for (int j = 0; j < 16; ++j) {
    const float d = mul(static_cast<float>(b.d), static_cast<float>(scale_q3(b.scales, j)));
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i)
      L[16 * j + i] =
          static_cast<std::int8_t>(std::clamp(nearest_int(x[16 * j + i] / d), -4, 3) + 4);
  }
  std::memset(b.hmask, 0, sizeof b.hmask);
  std::uint8_t u[256];
  for (int j = 0; j < 256; ++j) {
    u[j] = static_cast<std::uint8_t>(L[j]);
    if (u[j] > 3) {
      b.hmask[j % 32] = static_cast<std::uint8_t>(b.hmask[j % 32] | (1u << (j / 32)));
      u[j] = static_cast<std::uint8_t>(u[j] - 4);
    }
  }
  pack_2bit(u, b.qs);
}

/// Q2_K tail: requantize against the stored scale/min nibbles, pack.
inline void finish_q2_K(const float* x, std::uint8_t* L, block_q2_K& b) noexcept {
  const float dall = static_cast<float>(b.d), dmin = static_cast<float>(b.dmin);
  for (int j = 0; j < 16; ++j) {
    const float d = mul(dall, static_cast<float>(b.scales[j] & 0x0F));
    if (d == 0.0f) continue;
    const float dm = mul(dmin, static_cast<float>(b.scales[j] >> 4));
    for (int i = 0; i < 16; ++i)
      L[16 * j + i] =
          static_cast<std::uint8_t>(std::clamp(nearest_int(rounded(x[16 * j + i] + dm) / d), 0, 3));
  }
  pack_2bit(L, b.qs);
}

/// Q4_K / Q5_K tail: requantize the 8 sub-blocks of 32 against the stored 6-bit scales and mins
/// to [0, nmax].
inline void requantize_k4(const float* x, const std::uint8_t* scales, float dall, float dmin,
                          int nmax, std::uint8_t* L) noexcept {
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    detail::dequant::scale_min_k4(scales, j, sc, m);
    const float d = mul(dall, static_cast<float>(sc));
    if (d == 0.0f) continue;
    const float dm = mul(dmin, static_cast<float>(m));
    for (int l = 0; l < 32; ++l)
      L[32 * j + l] = static_cast<std::uint8_t>(
          std::clamp(nearest_int(rounded(x[32 * j + l] + dm) / d), 0, nmax));
  }
}

inline void pack_q4_K(const std::uint8_t* L, block_q4_K& b) noexcept {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b.qs[32 * c + l] = static_cast<std::uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
}

inline void pack_q5_K(const std::uint8_t* L, block_q5_K& b) noexcept {
  std::memset(b.qh, 0, sizeof b.qh);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
      if (l1 > 15) {
        l1 -= 16;
        b.qh[l] = static_cast<std::uint8_t>(b.qh[l] | (1u << (2 * c)));
      }
      if (l2 > 15) {
        l2 -= 16;
        b.qh[l] = static_cast<std::uint8_t>(b.qh[l] | (2u << (2 * c)));
      }
      b.qs[32 * c + l] = static_cast<std::uint8_t>(l1 | (l2 << 4));
    }
}

/// Q4_K / Q5_K without importance (quantize_row_q4_K_ref / q5_K_ref): per 32-value sub-block a
/// weighted (w = rms + |x|) fit of scale and min, both rounded to 6 bits on the grid of the
/// super-block maxima. Fills b.d, b.dmin, b.scales and L (requantized).
inline void fit_k4_ref(const float* x, int nmax, float rmin, float rdelta, int nstep,
                       std::uint8_t* scales12, f16& d_out, f16& dmin_out,
                       std::uint8_t* L) noexcept {
  float scales[8], mins[8], w[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xj = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += mul(xj[l], xj[l]);
    const float av = std::sqrt(sum_x2 / 32.0f);
    for (int l = 0; l < 32; ++l) w[l] = av + std::fabs(xj[l]);
    scales[j] = fit_scale_min(32, nmax, xj, w, L + 32 * j, mins[j], rmin, rdelta, nstep);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  std::memset(scales12, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const auto ls =
        std::min<std::uint8_t>(63, static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j])));
    const auto lm =
        std::min<std::uint8_t>(63, static_cast<std::uint8_t>(nearest_int(inv_min * mins[j])));
    pack_scale_min_k4(scales12, j, ls, lm);
  }
  d_out = f16(max_scale / 63.0f);
  dmin_out = f16(max_min / 63.0f);
  requantize_k4(x, scales12, static_cast<float>(d_out), static_cast<float>(dmin_out), nmax, L);
}

/// Q4_K / Q5_K with importance qw (quantize_row_q4_K_impl / q5_K_impl): weights
/// qw * sqrt(2 mean(x^2) + x^2), per sub-block fit_scale_min with 37 trials, then the 8 scales
/// and 8 mins fitted to 6 bits by fit_scale_positive weighted by the sub-blocks' weight sums.
inline void fit_k4_weighted(const float* x, const float* qw, int nmax, std::uint8_t* scales12,
                            f16& d_out, f16& dmin_out, std::uint8_t* L) noexcept {
  float sum_x2 = 0;
  for (int l = 0; l < 256; ++l) sum_x2 += mul(x[l], x[l]);
  const float sigma2 = mul(2.0f, sum_x2) / 256.0f;
  float scales[8], mins[8], sw[8], w[32];
  for (int j = 0; j < 8; ++j) {
    const float* xj = x + 32 * j;
    float s = 0;
    for (int l = 0; l < 32; ++l) {
      w[l] = mul(qw[32 * j + l], std::sqrt(rounded(sigma2 + mul(xj[l], xj[l]))));
      s += w[l];
    }
    sw[j] = s;
    scales[j] = fit_scale_min(32, nmax, xj, w, L + 32 * j, mins[j], -0.9f, 0.05f, 36);
  }
  std::uint8_t Ls[8], Lm[8];
  const float d_block = fit_scale_positive(8, 63, scales, Ls, sw);
  const float m_block = fit_scale_positive(8, 63, mins, Lm, sw);
  std::memset(scales12, 0, 12);
  for (int j = 0; j < 8; ++j)
    pack_scale_min_k4(scales12, j, std::min<std::uint8_t>(63, Ls[j]),
                      std::min<std::uint8_t>(63, Lm[j]));
  d_out = f16(d_block);
  dmin_out = f16(m_block);
  requantize_k4(x, scales12, static_cast<float>(d_out), static_cast<float>(dmin_out), nmax, L);
}

/// Q6_K with importance qw (null: quantize_row_q6_K_ref's x^2 weights): per 16-value sub-block
/// a symmetric weighted fit, the scales rounded to int8 against the largest, values
/// requantized to [-32, 31].
inline void quantize_q6_K(const float* x, const float* qw, block_q6_K& b) noexcept {
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int i = 0; i < 16; ++i) {
    scales[i] =
        fit_scale_symmetric(16, 32, x + 16 * i, L + 16 * i, qw != nullptr ? qw + 16 * i : nullptr);
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
    b.scales[i] = static_cast<std::int8_t>(std::min(127, nearest_int(iscale * scales[i])));
  for (int i = 0; i < 16; ++i) {
    const float d = mul(static_cast<float>(b.d), static_cast<float>(b.scales[i]));
    if (d == 0.0f) continue;
    for (int l = 0; l < 16; ++l)
      L[16 * i + l] =
          static_cast<std::int8_t>(std::clamp(nearest_int(x[16 * i + l] / d), -32, 31) + 32);
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

}  // namespace detail::quant

/// Q2_K (the algorithm of ggml quantize_row_q2_K_ref): per 16-value sub-block a |x|-weighted
/// least-absolute-deviation fit of scale and min (2-bit quants), both rounded to 4 bits on the
/// grid of the super-block maxima, values requantized.
inline void quantize_block(const float* x, block_q2_K& b) noexcept {
  namespace q = detail::quant;
  std::uint8_t L[256];
  float scales[16], mins[16], w[16];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 16; ++j) {
    for (int l = 0; l < 16; ++l) w[l] = std::fabs(x[16 * j + l]);
    scales[j] = q::fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, mins[j], -0.5f, 0.1f, 15, true);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  std::memset(b.scales, 0, sizeof b.scales);
  b.d = f16(0.0f);
  b.dmin = f16(0.0f);
  if (max_scale > 0) {
    const float is = 15.0f / max_scale;
    for (int j = 0; j < 16; ++j)
      b.scales[j] = static_cast<std::uint8_t>(q::nearest_int(is * scales[j]));
    b.d = f16(max_scale / 15.0f);
  }
  if (max_min > 0) {
    const float is = 15.0f / max_min;
    for (int j = 0; j < 16; ++j)
      b.scales[j] = static_cast<std::uint8_t>(b.scales[j] | (q::nearest_int(is * mins[j]) << 4));
    b.dmin = f16(max_min / 15.0f);
  }
  q::finish_q2_K(x, L, b);
}

/// Q2_K with importance qw (256 values; quantize_row_q2_K_impl).
inline void quantize_block(const float* x, const float* qw, block_q2_K& b) noexcept {
  namespace q = detail::quant;
  std::uint8_t L[256], Ls[16], Lm[16];
  float scales[16], mins[16], sw[16], w[16];
  float sum_x2 = 0;
  for (int j = 0; j < 256; ++j) sum_x2 += q::mul(x[j], x[j]);
  const float sigma2 = sum_x2 / 256.0f;
  for (int j = 0; j < 16; ++j) {
    float s = 0;
    for (int l = 0; l < 16; ++l) {
      const float xv = x[16 * j + l];
      w[l] = q::mul(qw[16 * j + l], std::sqrt(q::rounded(sigma2 + q::mul(xv, xv))));
      s += w[l];
    }
    sw[j] = s;
    scales[j] = q::fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, mins[j], -0.9f, 0.05f, 36);
  }
  b.d = f16(q::fit_scale_positive(16, 15, scales, Ls, sw));
  b.dmin = f16(q::fit_scale_positive(16, 15, mins, Lm, sw));
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<std::uint8_t>(Ls[j] | (Lm[j] << 4));
  q::finish_q2_K(x, L, b);
}

/// Q3_K (the algorithm of ggml quantize_row_q3_K_ref): per 16-value sub-block a symmetric
/// x^2-weighted fit refined by coordinate descent (3-bit quants), scales rounded to 6 bits
/// against the largest, values requantized.
inline void quantize_block(const float* x, block_q3_K& b) noexcept {
  namespace q = detail::quant;
  std::int8_t L[256];
  float scales[16];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = q::fit_scale_q3(16, 4, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  std::uint8_t ls[16] = {};
  if (max_scale != 0.0f) {
    const float iscale = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j)
      ls[j] =
          static_cast<std::uint8_t>(std::clamp(q::nearest_int(iscale * scales[j]), -32, 31) + 32);
    q::pack_scales_q3(ls, b.scales);
    b.d = f16(1.0f / iscale);
  } else {
    std::memset(b.scales, 0, sizeof b.scales);
    b.d = f16(0.0f);
  }
  q::finish_q3_K(x, L, b);
}

/// Q3_K with importance qw (quantize_row_q3_K_impl).
inline void quantize_block(const float* x, const float* qw, block_q3_K& b) noexcept {
  namespace q = detail::quant;
  std::int8_t L[256], Ls[16];
  float scales[16], sw[16], w[16];
  float sum_x2 = 0;
  for (int j = 0; j < 256; ++j) sum_x2 += q::mul(x[j], x[j]);
  const float sigma2 = q::mul(2.0f, sum_x2) / 256.0f;
  for (int j = 0; j < 16; ++j) {
    float s = 0;
    for (int l = 0; l < 16; ++l) {
      const float xv = x[16 * j + l];
      w[l] = q::mul(qw[16 * j + l], std::sqrt(q::rounded(sigma2 + q::mul(xv, xv))));
      s += w[l];
    }
    sw[j] = s;
    scales[j] = q::fit_scale_symmetric(16, 4, x + 16 * j, L + 16 * j, w);
  }
  const float d_block = q::fit_scale_symmetric(16, 32, scales, Ls, sw);
  std::uint8_t ls[16];
  for (int j = 0; j < 16; ++j) ls[j] = static_cast<std::uint8_t>(Ls[j]);
  q::pack_scales_q3(ls, b.scales);
  b.d = f16(d_block);
  q::finish_q3_K(x, L, b);
}

/// Q4_K (the algorithm of ggml quantize_row_q4_K_ref, llama-quantize without an importance
/// matrix): per 32-value sub-block a weighted (w = rms + |x|) least-squares scale and min,
/// both quantized to 6 bits against the super-block maxima, then the values requantized.
inline void quantize_block(const float* x, block_q4_K& b) noexcept {
  std::uint8_t L[256];
  detail::quant::fit_k4_ref(x, 15, -1.0f, 0.1f, 20, b.scales, b.d, b.dmin, L);
  detail::quant::pack_q4_K(L, b);
}

/// Q4_K with importance qw (quantize_row_q4_K_impl).
inline void quantize_block(const float* x, const float* qw, block_q4_K& b) noexcept {
  std::uint8_t L[256];
  detail::quant::fit_k4_weighted(x, qw, 15, b.scales, b.d, b.dmin, L);
  detail::quant::pack_q4_K(L, b);
}

/// Q5_K (the algorithm of ggml quantize_row_q5_K_ref): as Q4_K with 5-bit quants and the
/// trial scales (31 - 0.5 + 0.1 i) / (max - min), i = 0..15.
inline void quantize_block(const float* x, block_q5_K& b) noexcept {
  std::uint8_t L[256];
  detail::quant::fit_k4_ref(x, 31, -0.5f, 0.1f, 15, b.scales, b.d, b.dmin, L);
  detail::quant::pack_q5_K(L, b);
}

/// Q5_K with importance qw (quantize_row_q5_K_impl).
inline void quantize_block(const float* x, const float* qw, block_q5_K& b) noexcept {
  std::uint8_t L[256];
  detail::quant::fit_k4_weighted(x, qw, 31, b.scales, b.d, b.dmin, L);
  detail::quant::pack_q5_K(L, b);
}

/// Q6_K (the algorithm of ggml quantize_row_q6_K_ref): per 16-value sub-block a symmetric
/// x^2-weighted least-squares scale, scales quantized to int8 against the largest, values
/// requantized to [-32, 31].
inline void quantize_block(const float* x, block_q6_K& b) noexcept {
  detail::quant::quantize_q6_K(x, nullptr, b);
}

/// Q6_K with importance qw (quantize_row_q6_K_impl: qw itself weights the fit).
inline void quantize_block(const float* x, const float* qw, block_q6_K& b) noexcept {
  detail::quant::quantize_q6_K(x, qw, b);
}

// ---- legacy 32-blocks with importance (quantize_row_q4_0_impl ... q5_1_impl) ------------------
// sigma2 = mean(x^2) over the whole row; weights qw * sqrt(sigma2 + x^2).

namespace detail::quant {
inline void legacy_weights(const float* x, const float* qw, float sigma2, float* w) noexcept {
  for (int j = 0; j < 32; ++j) w[j] = mul(qw[j], std::sqrt(rounded(sigma2 + mul(x[j], x[j]))));
}
}  // namespace detail::quant

/// Q4_0 with importance: a weighted symmetric fit, l in [-8, 7].
inline void quantize_block(const float* x, const float* qw, float sigma2, block_q4_0& b) noexcept {
  namespace q = detail::quant;
  float w[32];
  std::int8_t L[32];
  q::legacy_weights(x, qw, sigma2, w);
  b.d = f16(q::fit_scale_symmetric(32, 8, x, L, w));
  std::uint8_t u[32];
  for (int j = 0; j < 32; ++j) u[j] = static_cast<std::uint8_t>(L[j]);
  q::pack_nibbles(u, b.qs);
}

/// Q5_0 with importance: a weighted symmetric fit, l in [-16, 15].
inline void quantize_block(const float* x, const float* qw, float sigma2, block_q5_0& b) noexcept {
  namespace q = detail::quant;
  float w[32];
  std::int8_t L[32];
  q::legacy_weights(x, qw, sigma2, w);
  b.d = f16(q::fit_scale_symmetric(32, 16, x, L, w));
  std::uint8_t u[32];
  for (int j = 0; j < 32; ++j) u[j] = static_cast<std::uint8_t>(L[j]);
  q::pack_nibbles(u, b.qs);
  q::pack_high_bits(u, b.qh);
}

/// Q4_1 with importance: a weighted scale-and-min fit (37 trials), l in [0, 15].
inline void quantize_block(const float* x, const float* qw, float sigma2, block_q4_1& b) noexcept {
  namespace q = detail::quant;
  float w[32], neg_min;
  std::uint8_t L[32];
  q::legacy_weights(x, qw, sigma2, w);
  b.d = f16(q::fit_scale_min(32, 15, x, w, L, neg_min, -0.9f, 0.05f, 36));
  b.m = f16(-neg_min);
  q::pack_nibbles(L, b.qs);
}

/// Q5_1 with importance: as Q4_1 with l in [0, 31].
inline void quantize_block(const float* x, const float* qw, float sigma2, block_q5_1& b) noexcept {
  namespace q = detail::quant;
  float w[32], neg_min;
  std::uint8_t L[32];
  q::legacy_weights(x, qw, sigma2, w);
  b.d = f16(q::fit_scale_min(32, 31, x, w, L, neg_min, -0.9f, 0.05f, 36));
  b.m = f16(-neg_min);
  q::pack_nibbles(L, b.qs);
  q::pack_high_bits(L, b.qh);
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
    case ggml_type::q2_K:
    case ggml_type::q3_K:
    case ggml_type::q4_K:
    case ggml_type::q5_K:
    case ggml_type::q6_K:
    case ggml_type::tfm_nf4:  // typeformer's layouts (quant/nf4.hpp, quant/int_formats.hpp)
    case ggml_type::tfm_i4_g64:
    case ggml_type::tfm_i4_g128:
      return true;
    default:
      return false;
  }
}

/// True for the types whose quantizer an importance vector changes (llama.cpp's quantize_q*
/// with quant_weights); Q8_0, Q8_1 and Q8_K ignore it, as llama.cpp's do.
constexpr bool uses_importance(ggml_type t) noexcept {
  switch (t) {
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q5_0:
    case ggml_type::q5_1:
    case ggml_type::q2_K:
    case ggml_type::q3_K:
    case ggml_type::q4_K:
    case ggml_type::q5_K:
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

/// A K-quant row with importance qw (one value per column).
template <class Block>
void row_k(const float* x, const float* qw, std::size_t n_blocks, std::byte* dst) noexcept {
  for (std::size_t i = 0; i < n_blocks; ++i) {
    Block b;
    quantize_block(x + i * 256, qw + i * 256, b);
    std::memcpy(dst + i * sizeof(Block), &b, sizeof(Block));
  }
}

/// A legacy 32-block row with importance: sigma2 = mean of x^2 over the row.
template <class Block>
void row_legacy(const float* x, const float* qw, std::size_t n_blocks, std::byte* dst) noexcept {
  float sum_x2 = 0;
  for (std::size_t j = 0; j < 32 * n_blocks; ++j) sum_x2 += mul(x[j], x[j]);
  const float sigma2 = sum_x2 / static_cast<float>(32 * n_blocks);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    Block b;
    quantize_block(x + i * 32, qw + i * 32, sigma2, b);
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
         " has no quantizer in this build (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q8_1, Q8_K, Q2_K, Q3_K, "
         "Q4_K, Q5_K, Q6_K).");
  return *info;
}

/// An importance vector for rows of `cols` values: empty, or cols finite values >= 0.
inline void check_importance(std::span<const float> importance, std::size_t cols,
                             std::string_view name) {
  if (importance.empty()) return;
  if (importance.size() != cols)
    fail(errc::shape, "tfm::quantize: tensor '", name, "': the importance vector has ",
         importance.size(), " values but a row has ", cols, ".");
  for (std::size_t j = 0; j < importance.size(); ++j)
    if (!std::isfinite(importance[j]) || importance[j] < 0)
      fail(errc::value, "tfm::quantize: tensor '", name, "': importance of column ", j, " is ",
           importance[j], "; importances must be finite and non-negative.");
}
}  // namespace detail::quant

/// Quantizes one row `x` of tensor `name` (row index `row`, for messages) into `dst`, which
/// must hold exactly x.size() / block_elements blocks of type t (any alignment). `importance`
/// is empty (llama.cpp's reference quantizers) or one value >= 0 per column of the row
/// (llama.cpp's quantize_q* with quant_weights: an imatrix's in_sum2 / count); types for which
/// uses_importance(t) is false ignore it. NaN/Inf -> tfm::value_error naming the tensor, row
/// and column; x.size() not a whole number of blocks or an importance vector of another length
/// -> tfm::shape_error; dst of the wrong size or a negative / non-finite importance ->
/// tfm::value_error.
inline void quantize_row(ggml_type t, std::span<const float> x, std::span<std::byte> dst,
                         std::string_view name = "?", std::size_t row = 0,
                         std::span<const float> importance = {}) {
  namespace q = detail::quant;
  const ggml_type_info& info = q::quantizable_info(t, name);
  if (x.size() % info.block_elements != 0)
    fail(errc::shape, "tfm::quantize: tensor '", name, "': a row of ", x.size(),
         " values is not a whole number of ", info.name, " blocks of ", info.block_elements, ".");
  const std::size_t n_blocks = x.size() / info.block_elements;
  if (dst.size() != n_blocks * info.block_bytes)
    fail(errc::value, "tfm::quantize: tensor '", name, "': ", n_blocks, " ", info.name,
         " blocks need ", n_blocks * info.block_bytes, " bytes but the destination has ",
         dst.size(), ".");
  q::check_importance(importance, x.size(), name);
  for (std::size_t j = 0; j < x.size(); ++j)
    if (!std::isfinite(x[j]))
      fail(errc::value, "tfm::quantize: tensor '", name, "' row ", row, " column ", j, " is ",
           std::isnan(x[j]) ? "NaN" : "Inf", "; only finite values can be quantized to ", info.name,
           ".");
  const float* s = x.data();
  std::byte* d = dst.data();
  const float* w = importance.empty() ? nullptr : importance.data();
  if (w != nullptr) {
    switch (t) {
      case ggml_type::q4_0:
        return q::row_legacy<block_q4_0>(s, w, n_blocks, d);
      case ggml_type::q4_1:
        return q::row_legacy<block_q4_1>(s, w, n_blocks, d);
      case ggml_type::q5_0:
        return q::row_legacy<block_q5_0>(s, w, n_blocks, d);
      case ggml_type::q5_1:
        return q::row_legacy<block_q5_1>(s, w, n_blocks, d);
      case ggml_type::q2_K:
        return q::row_k<block_q2_K>(s, w, n_blocks, d);
      case ggml_type::q3_K:
        return q::row_k<block_q3_K>(s, w, n_blocks, d);
      case ggml_type::q4_K:
        return q::row_k<block_q4_K>(s, w, n_blocks, d);
      case ggml_type::q5_K:
        return q::row_k<block_q5_K>(s, w, n_blocks, d);
      case ggml_type::q6_K:
        return q::row_k<block_q6_K>(s, w, n_blocks, d);
      default:
        break;  // the 8-bit types ignore it
    }
  }
  switch (t) {
    case ggml_type::q8_0:
      return q::row<block_q8_0>(s, n_blocks, d);
    case ggml_type::q8_1:
      return q::row<block_q8_1>(s, n_blocks, d);
    case ggml_type::q4_0:
      return q::row<block_q4_0>(s, n_blocks, d);
    case ggml_type::q4_1:
      return q::row<block_q4_1>(s, n_blocks, d);
    case ggml_type::q5_0:
      return q::row<block_q5_0>(s, n_blocks, d);
    case ggml_type::q5_1:
      return q::row<block_q5_1>(s, n_blocks, d);
    case ggml_type::q8_K:
      return q::row<block_q8_K>(s, n_blocks, d);
    case ggml_type::q2_K:
      return q::row<block_q2_K>(s, n_blocks, d);
    case ggml_type::q3_K:
      return q::row<block_q3_K>(s, n_blocks, d);
    case ggml_type::q4_K:
      return q::row<block_q4_K>(s, n_blocks, d);
    case ggml_type::q5_K:
      return q::row<block_q5_K>(s, n_blocks, d);
    case ggml_type::q6_K:
      return q::row<block_q6_K>(s, n_blocks, d);
    case ggml_type::tfm_nf4:  // quant/nf4.hpp (an absmax >= 65520 stores an Inf scale)
      return q::row<block_nf4>(s, n_blocks, d);
    case ggml_type::tfm_i4_g64:  // quant/int_formats.hpp
      return q::row<block_i4_g64>(s, n_blocks, d);
    case ggml_type::tfm_i4_g128:
      return q::row<block_i4_g128>(s, n_blocks, d);
    default:
      break;
  }
  fail(errc::unsupported, "tfm::quantize: type ", info.name, " is not handled.");
}

/// Quantizes a row-major rows x cols float tensor `name` to type t: rows * (cols / block)
/// blocks, row after row (the GGUF tensor data). `importance`: empty or cols values, applied
/// to every row (quantize_row). Errors as quantize_row.
inline std::vector<std::byte> quantize(ggml_type t, std::span<const float> x, std::size_t rows,
                                       std::size_t cols, std::string_view name = "?",
                                       std::span<const float> importance = {}) {
  const ggml_type_info& info = detail::quant::quantizable_info(t, name);
  if (rows != 0 && (x.size() / rows != cols || x.size() % rows != 0))
    fail(errc::shape, "tfm::quantize: tensor '", name, "' is ", rows, " x ", cols, " but has ",
         x.size(), " values.");
  if (cols % info.block_elements != 0)
    fail(errc::shape, "tfm::quantize: tensor '", name, "': a row of ", cols,
         " values is not a whole number of ", info.name, " blocks of ", info.block_elements, ".");
  detail::quant::check_importance(importance, cols, name);
  const std::size_t row_bytes = cols / info.block_elements * info.block_bytes;
  std::vector<std::byte> out(rows * row_bytes);
  for (std::size_t r = 0; r < rows; ++r)
    quantize_row(t, x.subspan(r * cols, cols),
                 std::span<std::byte>(out).subspan(r * row_bytes, row_bytes), name, r, importance);
  return out;
}

TFM_END_NAMESPACE
