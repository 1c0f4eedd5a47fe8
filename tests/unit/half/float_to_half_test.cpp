// float -> bf16 / f16 rounding on the neighbour and half-way cases around every one of the
// 65536 patterns, on random floats (seed printed) and on special values, against the
// definition evaluated in double (half_reference.hpp) and the hardware conversions
// (F16C vcvtps2ph with _MM_FROUND_TO_NEAREST_INT; AVX512-BF16 vcvtneps2bf16, which flushes
// subnormal inputs to zero and is therefore compared on normal inputs only).
#include "half_reference.hpp"

#include "typeformer/core/half.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using half_ref::bits_float;
using half_ref::float_bits;

namespace {

std::uint64_t test_seed() {
  static const std::uint64_t seed = std::random_device{}();
  return seed;
}

std::vector<float> bf16_cases() {
  std::vector<float> xs = half_ref::specials();
  for (std::uint32_t h = 0; h < 65536; ++h) {
    for (std::uint32_t low : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
      xs.push_back(bits_float((h << 16) | low));
    }
  }
  return xs;
}

std::vector<float> f16_cases() {
  std::vector<float> xs = half_ref::specials();
  for (std::uint32_t h = 0; h < 0x7C00; ++h) {  // every finite non-negative pattern
    const float v = static_cast<float>(half_ref::decode(half_ref::f16_format, h));
    const float next = h + 1 < 0x7C00
                           ? static_cast<float>(half_ref::decode(half_ref::f16_format, h + 1))
                           : 65536.0f;  // the next step past 65504
    half_ref::add_neighbours(xs, v, next);
  }
  return xs;
}

std::vector<float> random_cases(std::uint64_t seed, bool f16_range) {
  std::mt19937_64 gen(seed);
  std::vector<float> xs;
  for (int i = 0; i < 400000; ++i) {
    std::uint32_t u = static_cast<std::uint32_t>(gen());
    if (f16_range) {  // exponents around the f16 range (2^-30 .. 2^17) so most cases round
      const std::uint32_t e = 97u + static_cast<std::uint32_t>(gen() % 48);
      u = (u & 0x807FFFFFu) | (e << 23);
    }
    xs.push_back(bits_float(u));
  }
  return xs;
}

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::uint16_t expected_bf16(float x) {
  const std::uint32_t u = float_bits(x);
  if (std::isnan(x)) return static_cast<std::uint16_t>((u >> 16) | 0x40);
  return half_ref::encode_rne(half_ref::bf16_format, x);
}

std::uint16_t expected_f16(float x) {
  const std::uint32_t u = float_bits(x);
  if (std::isnan(x)) {
    return static_cast<std::uint16_t>(((u >> 16) & 0x8000) | 0x7E00 | ((u >> 13) & 0x3FF));
  }
  return half_ref::encode_rne(half_ref::f16_format, x);
}

int count_bf16_mismatches(const std::vector<float>& xs) {
  int bad = 0;
  for (float x : xs) {
    const std::uint16_t got = tfm::bf16(x).bits();
    if (got != expected_bf16(x)) {
      if (bad < 5) MESSAGE("bf16 mismatch at float bits ", hex(float_bits(x)), ": got ", hex(got));
      ++bad;
    }
  }
  return bad;
}

int count_f16_mismatches(const std::vector<float>& xs) {
  int bad = 0;
  for (float x : xs) {
    const std::uint16_t got = tfm::f16(x).bits();
    if (got != expected_f16(x)) {
      if (bad < 5) MESSAGE("f16 mismatch at float bits ", hex(float_bits(x)), ": got ", hex(got));
      ++bad;
    }
  }
  return bad;
}

}  // namespace

TEST_CASE("float -> bf16: neighbours of all 65536 patterns and specials, vs the definition") {
  CHECK(count_bf16_mismatches(bf16_cases()) == 0);
}

TEST_CASE("float -> f16: neighbours and half-way points of all patterns, vs the definition") {
  CHECK(count_f16_mismatches(f16_cases()) == 0);
}

TEST_CASE("float -> bf16 / f16: random floats vs the definition") {
  const std::uint64_t seed = test_seed();
  MESSAGE("seed = ", seed);
  CHECK(count_bf16_mismatches(random_cases(seed, false)) == 0);
  CHECK(count_f16_mismatches(random_cases(seed, false)) == 0);
  CHECK(count_f16_mismatches(random_cases(seed + 1, true)) == 0);
}

TEST_CASE("float -> f16 equals F16C vcvtps2ph (round to nearest even) bitwise") {
#if defined(__F16C__)
  const std::uint64_t seed = test_seed();
  MESSAGE("seed = ", seed);
  for (const auto& xs : {f16_cases(), bf16_cases(), random_cases(seed, true)}) {
    int bad = 0;
    for (float x : xs) {
      if (tfm::f16(x).bits() != _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)) ++bad;
    }
    CHECK(bad == 0);
  }
#else
  MESSAGE("skipped: this build has no F16C (compile with -mf16c or -march=native to run it)");
#endif
}

TEST_CASE("float -> bf16 equals AVX512-BF16 vcvtneps2bf16 on normal inputs bitwise") {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  const std::uint64_t seed = test_seed();
  MESSAGE("seed = ", seed);
  for (const auto& xs0 : {bf16_cases(), random_cases(seed, false)}) {
    std::vector<float> xs;
    for (float x : xs0) {
      if (std::fpclassify(x) != FP_SUBNORMAL) xs.push_back(x);  // the instruction flushes these
    }
    while (xs.size() % 16) xs.push_back(0.0f);
    int bad = 0;
    for (std::size_t i = 0; i < xs.size(); i += 16) {
      alignas(32) std::uint16_t hw[16];
      const __m256bh r = _mm512_cvtneps_pbh(_mm512_loadu_ps(xs.data() + i));
      std::memcpy(hw, &r, sizeof hw);
      for (int j = 0; j < 16; ++j) {
        if (tfm::bf16(xs[i + j]).bits() != hw[j]) ++bad;
      }
    }
    CHECK(bad == 0);
  }
#else
  MESSAGE("skipped: this build has no AVX512-BF16 (compile with -march=native on a CPU with it)");
#endif
}

TEST_CASE("float -> half: documented edge cases") {
  CHECK(tfm::f16(65504.0f).bits() == 0x7BFF);
  CHECK(tfm::f16(65519.996f).bits() == 0x7BFF);
  CHECK(tfm::f16(65520.0f).bits() == 0x7C00);  // ties to even: overflow to Inf
  CHECK(tfm::f16(-1e6f).bits() == 0xFC00);
  CHECK(tfm::f16(0x1p-25f).bits() == 0x0000);  // half of denorm_min ties to zero
  CHECK(tfm::f16(0x1.000002p-25f).bits() == 0x0001);
  CHECK(tfm::f16(0x1.8p-24f).bits() == 0x0002);                // 1.5 * 2^-24 ties to even (2)
  CHECK(tfm::bf16(1.00390625f).bits() == 0x3F80);              // 1 + 2^-8: tie to even
  CHECK(tfm::bf16(1.01171875f).bits() == 0x3F82);              // 1 + 3*2^-8: tie to even (up)
  CHECK(tfm::bf16(3.4028235e38f).bits() == 0x7F80);            // FLT_MAX rounds to Inf
  CHECK(tfm::bf16(bits_float(0x00000001u)).bits() == 0x0000);  // no flush; rounds to 0
  CHECK(tfm::bf16(bits_float(0x00008000u)).bits() == 0x0000);  // tie to even (0)
  CHECK(tfm::bf16(bits_float(0x00018000u)).bits() == 0x0002);  // tie to even (2)
  CHECK(tfm::bf16(bits_float(0x7F800001u)).bits() == 0x7FC0);  // signalling NaN -> quiet
  CHECK(tfm::f16(bits_float(0x7F800001u)).bits() == 0x7E00);
  // double and integers go through float.
  CHECK(tfm::bf16(1.0).bits() == 0x3F80);
  CHECK(tfm::f16(2).bits() == 0x4000);
  static_assert(tfm::f16(1.0f).bits() == 0x3C00);
  static_assert(tfm::bf16(-2.0f).bits() == 0xC000);
}
