// Every one of the 65536 bf16 and f16 bit patterns widened to float, against the format
// definition evaluated in double (half_reference.hpp) and against the hardware conversions
// (F16C vcvtph2ps for f16; the AVX512-BF16 widening, which is a 16-bit shift, for bf16).
#include "half_reference.hpp"

#include "typeformer/core/half.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

using half_ref::float_bits;

TEST_CASE("bf16 -> float: all 65536 patterns equal the format definition") {
  int mismatches = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float got = static_cast<float>(tfm::bf16::from_bits(static_cast<std::uint16_t>(h)));
    const double want = half_ref::decode(half_ref::bf16_format, static_cast<std::uint16_t>(h));
    if (std::isnan(want)) {
      // NaN: the payload is kept as it is (the conversion is the 16-bit shift).
      if (!std::isnan(got) || float_bits(got) != (h << 16)) ++mismatches;
    } else if (static_cast<double>(got) != want || std::signbit(got) != std::signbit(want)) {
      ++mismatches;
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("f16 -> float: all 65536 patterns equal the format definition") {
  int mismatches = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float got = static_cast<float>(tfm::f16::from_bits(static_cast<std::uint16_t>(h)));
    const double want = half_ref::decode(half_ref::f16_format, static_cast<std::uint16_t>(h));
    if (std::isnan(want)) {
      // NaN comes back quiet with the 10 payload bits on top of the float mantissa.
      const std::uint32_t expect = ((h & 0x8000u) << 16) | 0x7FC00000u | ((h & 0x3FFu) << 13);
      if (float_bits(got) != expect) ++mismatches;
    } else if (static_cast<double>(got) != want || std::signbit(got) != std::signbit(want)) {
      ++mismatches;
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("f16 -> float: all 65536 patterns equal F16C _cvtsh_ss bitwise") {
#if defined(__F16C__)
  int mismatches = 0;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float got = static_cast<float>(tfm::f16::from_bits(static_cast<std::uint16_t>(h)));
    const float hw = _cvtsh_ss(static_cast<unsigned short>(h));
    if (float_bits(got) != float_bits(hw)) ++mismatches;
  }
  CHECK(mismatches == 0);
#else
  MESSAGE("skipped: this build has no F16C (compile with -mf16c or -march=native to run it)");
#endif
}

// GCC 12's _mm512_cvtpbh_ps trips a false -Wuninitialized inside <immintrin.h>.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
TEST_CASE("bf16 -> float: all 65536 patterns equal the AVX512-BF16 widening bitwise") {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  int mismatches = 0;
  for (std::uint32_t base = 0; base < 65536; base += 16) {
    alignas(32) std::uint16_t in[16];
    alignas(64) float hw[16];
    for (int i = 0; i < 16; ++i) in[i] = static_cast<std::uint16_t>(base + i);
    __m256bh v;
    std::memcpy(&v, in, sizeof v);
    _mm512_store_ps(hw, _mm512_cvtpbh_ps(v));
    for (int i = 0; i < 16; ++i) {
      const float got = static_cast<float>(tfm::bf16::from_bits(in[i]));
      if (float_bits(got) != float_bits(hw[i])) ++mismatches;
    }
  }
  CHECK(mismatches == 0);
#else
  MESSAGE("skipped: this build has no AVX512-BF16 (compile with -march=native on a CPU with it)");
#endif
}

TEST_CASE("half -> float is constexpr") {
  static_assert(static_cast<float>(tfm::f16::from_bits(0x3C00)) == 1.0f);
  static_assert(static_cast<float>(tfm::f16::from_bits(0x0001)) == 0x1p-24f);
  static_assert(static_cast<float>(tfm::f16::from_bits(0x7BFF)) == 65504.0f);
  static_assert(static_cast<float>(tfm::bf16::from_bits(0x3F80)) == 1.0f);
  static_assert(static_cast<float>(tfm::bf16::from_bits(0x0001)) == 0x1p-133f);
  CHECK(true);
}
