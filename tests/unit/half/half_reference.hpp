// Independent oracles for the half-precision tests: conversions written from the definition of
// the formats in double-precision arithmetic (std::ldexp / std::frexp / std::nearbyint), plus the
// hardware instructions where the target has them. Nothing here calls typeformer code.
#pragma once

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace half_ref {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// A binary floating-point format with `mant` stored mantissa bits and exponent bias `bias`.
struct format {
  int mant;   // stored mantissa bits (bf16: 7, f16: 10)
  int bias;   // exponent bias (bf16: 127, f16: 15)
  int ebits;  // exponent bits (bf16: 8, f16: 5)
};
inline constexpr format bf16_format{7, 127, 8};
inline constexpr format f16_format{10, 15, 5};

/// Value of a finite/infinite 16-bit pattern from the format definition (NaN -> quiet NaN).
inline double decode(format f, std::uint16_t h) {
  const int sign = h >> 15;
  const int emax = (1 << f.ebits) - 1;
  const int e = (h >> f.mant) & emax;
  const int m = h & ((1 << f.mant) - 1);
  double v;
  if (e == emax) {
    v = m == 0 ? HUGE_VAL : std::nan("");
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mant);
  } else {
    v = std::ldexp(static_cast<double>(m + (1 << f.mant)), e - f.bias - f.mant);
  }
  return sign ? -v : v;
}

/// Round-to-nearest-even encoding of a non-NaN float, from the definition: pick the quantum
/// (spacing of representable values) at |x|, round |x| / quantum with nearbyint (ties to even
/// in the default rounding mode), then encode the rounded value.
inline std::uint16_t encode_rne(format f, float x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  const int emax_field = (1 << f.ebits) - 1;
  const std::uint16_t inf = static_cast<std::uint16_t>(emax_field << f.mant);
  const int emin = 1 - f.bias;  // exponent of the smallest normal
  // Largest finite value and the half-way point above it (rounds to infinity by ties-to-even,
  // since the largest finite mantissa is odd).
  const double maxv = std::ldexp(2.0 - std::ldexp(1.0, -f.mant), f.bias);
  const double overflow = maxv + std::ldexp(1.0, f.bias - f.mant - 1);
  if (a >= overflow) return sign | inf;
  int e2;
  std::frexp(a, &e2);  // a = fr * 2^e2, fr in [0.5, 1): floor(log2 a) = e2 - 1
  const int ex = (a == 0.0 || e2 - 1 < emin) ? emin : e2 - 1;
  const double quantum = std::ldexp(1.0, ex - f.mant);
  const double k = std::nearbyint(a / quantum);  // exact division: quantum is a power of two
  const double v = k * quantum;
  if (v == 0.0) return sign;
  std::frexp(v, &e2);
  const int ev = e2 - 1;
  if (ev < emin) return sign | static_cast<std::uint16_t>(std::ldexp(v, f.bias - 1 + f.mant));
  if (v > maxv) return sign | inf;
  const int field = ev + f.bias;
  const double mant = std::ldexp(v, f.mant - ev) - std::ldexp(1.0, f.mant);
  return sign | static_cast<std::uint16_t>((field << f.mant) | static_cast<int>(mant));
}

/// The test floats around every 16-bit pattern h (the format being the top bits or a rebias):
/// the value itself, the half-way point to the next pattern, and the float neighbours of both.
inline void add_neighbours(std::vector<float>& out, float v, float next) {
  const float mid = static_cast<float>((static_cast<double>(v) + static_cast<double>(next)) / 2);
  for (float c : {v, mid}) {
    out.push_back(c);
    out.push_back(std::nextafter(c, HUGE_VALF));
    out.push_back(std::nextafter(c, -HUGE_VALF));
    out.push_back(-c);
  }
}

/// Special floats: zeros, infinities, NaNs with payloads, extremes.
inline std::vector<float> specials() {
  std::vector<float> s = {
      0.0f,     -0.0f,          HUGE_VALF,      -HUGE_VALF,     1.0f,          -1.0f,
      65504.0f, 65519.996f,     65520.0f,       65536.0f,       3.4028235e38f, 1.17549435e-38f,
      1.4e-45f, 5.96046448e-8f, 2.98023224e-8f, 2.98023259e-8f, 6.10351562e-5f};
  for (std::uint32_t nan : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FA00000u,
                            0x7FFFFFFFu, 0xFFFFFFFFu, 0x7F812345u, 0x7FC0DEADu, 0x7F80FFFFu}) {
    s.push_back(bits_float(nan));
  }
  return s;
}

}  // namespace half_ref
