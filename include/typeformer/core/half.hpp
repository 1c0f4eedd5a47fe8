// typeformer/core/half.hpp
//
// WHAT THIS REPRESENTS
//   Two 16-bit floating-point STORAGE types. Arithmetic happens in float: both convert implicitly
//   to float, and are built from float explicitly (the rounding is visible in the code).
//
//   tfm::bf16  bfloat16: 1 sign, 8 exponent, 7 mantissa bits; the upper half of an IEEE binary32
//              (same range as float, 8 significant bits).
//   tfm::f16   IEEE 754-2008 binary16: 1 sign, 5 exponent, 10 mantissa bits (max 65504,
//              subnormals down to 2^-24).
//
// CONTRACT
//   - sizeof == 2, trivially copyable, standard layout: arrays of them are the file/wire format
//     (GGUF/safetensors F16/BF16 tensors) byte for byte on little-endian hosts.
//   - float -> half rounds to nearest, ties to even (IEEE default). A NaN stays a NaN and becomes
//     quiet (sign and upper payload bits kept, quiet bit set). f16: values >= 65520 in magnitude
//     become +-Inf; f16 subnormals are rounded exactly. bf16 subnormals are rounded exactly (no
//     flush to zero, unlike the AVX512-BF16 instruction VCVTNEPS2BF16, which is therefore not
//     used).
//   - double -> half goes through float (two roundings; may differ from a direct rounding in the
//     last bit for doubles within 2^-29 relative of a half-way point). Other arithmetic types
//     likewise convert to float first.
//   - half -> float is exact. bf16 -> float is the 16-bit shift (payload kept as is); f16 -> float
//     returns a quiet NaN for every f16 NaN (as the F16C instruction VCVTPH2PS does).
//   - ==, != and < compare the float values (so -0 == +0 and NaN != NaN).
//   The scalar conversions are portable constexpr C++ (no intrinsics).
//
// VECTOR HELPERS (for fused elementwise expressions and bulk conversion) live in
// backend/cpu/half_simd.hpp, so that this header stays free of SIMD headers:
//   load_as_float<Arch>(p)      loads batch<float, Arch>::size halves (unaligned) as floats.
//   store_from_float<Arch>(p,v) rounds a float batch to halves (unaligned), bitwise identical
//                               to the scalar conversion of each lane.
//   convert(src, dst, n)        bulk half <-> float, bitwise identical to the scalar conversion.
//   x86 uses F16C (vcvtph2ps/vcvtps2ph) for f16 and integer shifts for bf16 when the target
//   enables them (__F16C__, __AVX2__, __AVX512F__); other targets (aarch64 NEON, plain SSE2)
//   use the scalar conversion lane by lane.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/index.hpp"

#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace detail {

// ---- scalar bit conversions (portable, constexpr) ----------------------------------------------

/// float -> bfloat16 bits, round to nearest even; NaN -> quiet NaN with the upper payload.
constexpr std::uint16_t float_to_bf16_bits(float f) noexcept {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  x += 0x7FFFu + ((x >> 16) & 1u);  // overflow of the largest finite values carries into Inf
  return static_cast<std::uint16_t>(x >> 16);
}

/// bfloat16 bits -> float (exact).
constexpr float bf16_bits_to_float(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

/// float -> IEEE binary16 bits, round to nearest even, exact subnormals, overflow to Inf,
/// NaN -> quiet NaN keeping the upper 9 payload bits (what VCVTPS2PH produces).
constexpr std::uint16_t float_to_f16_bits(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
  if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: Inf
  if (ax >= 0x38800000u) {                                                   // normal: >= 2^-14
    ax += 0xFFFu + ((ax >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | ((ax - 0x38000000u) >> 13));  // rebias 127 -> 15
  }
  if (ax <= 0x33000000u) return static_cast<std::uint16_t>(sign);  // <= 2^-25: ties to +-0
  // Subnormal result: value = m * 2^(e - 150); in units of 2^-24 that is m >> (126 - e).
  const std::uint32_t e = ax >> 23;
  const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t s = 126u - e;  // 14..24
  std::uint32_t h = m >> s;
  const std::uint32_t rem = m & ((1u << s) - 1u);
  const std::uint32_t half = 1u << (s - 1u);
  if (rem > half || (rem == half && (h & 1u))) ++h;  // may carry into the smallest normal
  return static_cast<std::uint16_t>(sign | h);
}

/// IEEE binary16 bits -> float (exact; NaNs come back quiet, as with VCVTPH2PS).
constexpr float f16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  const std::uint32_t mant = h & 0x3FFu;
  if (exp == 0x1Fu) {
    if (mant == 0) return std::bit_cast<float>(sign | 0x7F800000u);
    return std::bit_cast<float>(sign | 0x7FC00000u | (mant << 13));
  }
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  // Subnormal: mant * 2^-24 with mant in [1, 1023]; normalise so the leading 1 is bit 10.
  const int shift = std::countl_zero(mant) - 21;  // 1..10
  const std::uint32_t m = (mant << shift) & 0x3FFu;
  const std::uint32_t e = static_cast<std::uint32_t>(113 - shift);  // biased float exponent
  return std::bit_cast<float>(sign | (e << 23) | (m << 13));
}

struct from_bits_tag {};

}  // namespace detail

/// bfloat16 storage type (see the header comment for the contract).
struct bf16 {
  /// Uninitialised, like float.
  bf16() = default;
  /// Rounds to nearest even; NaN stays (quiet) NaN.
  explicit constexpr bf16(float f) noexcept : bits_(detail::float_to_bf16_bits(f)) {}
  /// Any other arithmetic type converts to float first (double: two roundings).
  template <class A>
  requires(std::is_arithmetic_v<A> &&
           !std::is_same_v<A, float>) explicit constexpr bf16(A v) noexcept
      : bf16(static_cast<float>(v)) {}

  /// Exact widening to float.
  constexpr operator float() const noexcept { return detail::bf16_bits_to_float(bits_); }

  static constexpr bf16 from_bits(std::uint16_t b) noexcept {
    return bf16(detail::from_bits_tag{}, b);
  }
  constexpr std::uint16_t bits() const noexcept { return bits_; }

  friend constexpr bool operator==(bf16 a, bf16 b) noexcept { return float(a) == float(b); }
  friend constexpr bool operator!=(bf16 a, bf16 b) noexcept { return float(a) != float(b); }
  friend constexpr bool operator<(bf16 a, bf16 b) noexcept { return float(a) < float(b); }

 private:
  constexpr bf16(detail::from_bits_tag, std::uint16_t b) noexcept : bits_(b) {}
  std::uint16_t bits_;
};

/// IEEE binary16 storage type (see the header comment for the contract).
struct f16 {
  /// Uninitialised, like float.
  f16() = default;
  /// Rounds to nearest even; overflow gives +-Inf; NaN stays (quiet) NaN.
  explicit constexpr f16(float f) noexcept : bits_(detail::float_to_f16_bits(f)) {}
  /// Any other arithmetic type converts to float first (double: two roundings).
  template <class A>
  requires(std::is_arithmetic_v<A> &&
           !std::is_same_v<A, float>) explicit constexpr f16(A v) noexcept
      : f16(static_cast<float>(v)) {}

  /// Exact widening to float.
  constexpr operator float() const noexcept { return detail::f16_bits_to_float(bits_); }

  static constexpr f16 from_bits(std::uint16_t b) noexcept {
    return f16(detail::from_bits_tag{}, b);
  }
  constexpr std::uint16_t bits() const noexcept { return bits_; }

  friend constexpr bool operator==(f16 a, f16 b) noexcept { return float(a) == float(b); }
  friend constexpr bool operator!=(f16 a, f16 b) noexcept { return float(a) != float(b); }
  friend constexpr bool operator<(f16 a, f16 b) noexcept { return float(a) < float(b); }

 private:
  constexpr f16(detail::from_bits_tag, std::uint16_t b) noexcept : bits_(b) {}
  std::uint16_t bits_;
};

static_assert(sizeof(bf16) == 2 && alignof(bf16) == 2, "tfm::bf16 must be exactly 2 bytes.");
static_assert(sizeof(f16) == 2 && alignof(f16) == 2, "tfm::f16 must be exactly 2 bytes.");
static_assert(std::is_trivially_copyable_v<bf16> && std::is_standard_layout_v<bf16>,
              "tfm::bf16 must be trivially copyable and standard layout.");
static_assert(std::is_trivially_copyable_v<f16> && std::is_standard_layout_v<f16>,
              "tfm::f16 must be trivially copyable and standard layout.");

/// True for tfm::bf16 and tfm::f16 (cv-qualified or not).
template <class T>
inline constexpr bool is_half_v =
    std::is_same_v<std::remove_cv_t<T>, bf16> || std::is_same_v<std::remove_cv_t<T>, f16>;

TFM_END_NAMESPACE

// ---- numeric_limits -----------------------------------------------------------------------------

namespace std {

template <>
class numeric_limits<tfm::bf16> {
  using T = tfm::bf16;

 public:
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = true;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = true;
  static constexpr bool has_quiet_NaN = true;
  static constexpr bool has_signaling_NaN = true;
  static constexpr float_denorm_style has_denorm = denorm_present;
  static constexpr bool has_denorm_loss = false;
  static constexpr float_round_style round_style = round_to_nearest;
  static constexpr bool is_iec559 = false;
  static constexpr bool is_bounded = true;
  static constexpr bool is_modulo = false;
  static constexpr int digits = 8;
  static constexpr int digits10 = 2;
  static constexpr int max_digits10 = 4;
  static constexpr int radix = 2;
  static constexpr int min_exponent = -125;
  static constexpr int min_exponent10 = -37;
  static constexpr int max_exponent = 128;
  static constexpr int max_exponent10 = 38;
  static constexpr bool traps = false;
  static constexpr bool tinyness_before = false;

  static constexpr T min() noexcept { return T::from_bits(0x0080); }          // 2^-126
  static constexpr T lowest() noexcept { return T::from_bits(0xFF7F); }       // -3.3895e38
  static constexpr T max() noexcept { return T::from_bits(0x7F7F); }          // 3.3895e38
  static constexpr T epsilon() noexcept { return T::from_bits(0x3C00); }      // 2^-7
  static constexpr T round_error() noexcept { return T::from_bits(0x3F00); }  // 0.5
  static constexpr T infinity() noexcept { return T::from_bits(0x7F80); }
  static constexpr T quiet_NaN() noexcept { return T::from_bits(0x7FC0); }
  static constexpr T signaling_NaN() noexcept { return T::from_bits(0x7FA0); }
  static constexpr T denorm_min() noexcept { return T::from_bits(0x0001); }  // 2^-133
};

template <>
class numeric_limits<tfm::f16> {
  using T = tfm::f16;

 public:
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = true;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = true;
  static constexpr bool has_quiet_NaN = true;
  static constexpr bool has_signaling_NaN = true;
  static constexpr float_denorm_style has_denorm = denorm_present;
  static constexpr bool has_denorm_loss = false;
  static constexpr float_round_style round_style = round_to_nearest;
  static constexpr bool is_iec559 = true;
  static constexpr bool is_bounded = true;
  static constexpr bool is_modulo = false;
  static constexpr int digits = 11;
  static constexpr int digits10 = 3;
  static constexpr int max_digits10 = 5;
  static constexpr int radix = 2;
  static constexpr int min_exponent = -13;
  static constexpr int min_exponent10 = -4;
  static constexpr int max_exponent = 16;
  static constexpr int max_exponent10 = 4;
  static constexpr bool traps = false;
  static constexpr bool tinyness_before = false;

  static constexpr T min() noexcept { return T::from_bits(0x0400); }          // 2^-14
  static constexpr T lowest() noexcept { return T::from_bits(0xFBFF); }       // -65504
  static constexpr T max() noexcept { return T::from_bits(0x7BFF); }          // 65504
  static constexpr T epsilon() noexcept { return T::from_bits(0x1400); }      // 2^-10
  static constexpr T round_error() noexcept { return T::from_bits(0x3800); }  // 0.5
  static constexpr T infinity() noexcept { return T::from_bits(0x7C00); }
  static constexpr T quiet_NaN() noexcept { return T::from_bits(0x7E00); }
  static constexpr T signaling_NaN() noexcept { return T::from_bits(0x7D00); }
  static constexpr T denorm_min() noexcept { return T::from_bits(0x0001); }  // 2^-24
};

}  // namespace std
