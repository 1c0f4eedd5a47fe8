// The vector helpers (load_as_float, store_from_float, bulk convert) against the scalar
// conversions, bitwise. This file is also built with the AVX2 and SSE code paths
// (see CMakeLists.txt: tfm_test_half_avx2, tfm_test_half_sse), so each ISA branch is checked.
#include "typeformer/backend/cpu/half_simd.hpp"
#include "typeformer/core/half.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using fbatch = xsimd::batch<float>;
constexpr std::size_t W = fbatch::size;

std::uint32_t fbits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// Floats covering every rounding situation of both formats: each 16-bit pattern as the top
/// half with assorted low halves (bf16 ties and neighbours, and many f16 ties), plus the f16
/// half-way points (h + 0.5 ulp) of every f16 pattern.
std::vector<float> store_cases() {
  std::vector<float> xs;
  for (std::uint32_t h = 0; h < 65536; ++h) {
    for (std::uint32_t low : {0x0000u, 0x1000u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
      const std::uint32_t u = (h << 16) | low;
      float f;
      std::memcpy(&f, &u, 4);
      xs.push_back(f);
    }
    const float v = static_cast<float>(tfm::f16::from_bits(static_cast<std::uint16_t>(h)));
    if (std::isfinite(v)) xs.push_back(std::nextafter(v, HUGE_VALF) * 1.0f);
  }
  for (std::uint32_t h = 0; h < 0x7BFF; ++h) {
    const double a = static_cast<float>(tfm::f16::from_bits(static_cast<std::uint16_t>(h)));
    const double b = static_cast<float>(tfm::f16::from_bits(static_cast<std::uint16_t>(h + 1)));
    xs.push_back(static_cast<float>((a + b) / 2));
    xs.push_back(-static_cast<float>((a + b) / 2));
  }
  while (xs.size() % W) xs.push_back(1.0f);
  return xs;
}

template <class H>
void check_load_all_patterns() {
  std::vector<H> hs(65536);
  for (std::uint32_t h = 0; h < 65536; ++h) hs[h] = H::from_bits(static_cast<std::uint16_t>(h));
  int bad = 0;
  alignas(64) float lanes[W];
  for (std::size_t i = 0; i < hs.size(); i += W) {
    tfm::load_as_float(hs.data() + i).store_aligned(lanes);
    for (std::size_t j = 0; j < W; ++j)
      bad += fbits(lanes[j]) != fbits(static_cast<float>(hs[i + j]));
  }
  CHECK(bad == 0);
}

template <class H>
void check_store(const std::vector<float>& xs) {
  std::vector<H> out(xs.size() + 1);
  int bad = 0;
  for (std::size_t i = 0; i < xs.size(); i += W) {
    // Store at an odd address offset to check that no alignment is assumed.
    tfm::store_from_float(out.data() + 1 + i, fbatch::load_unaligned(xs.data() + i));
  }
  for (std::size_t i = 0; i < xs.size(); ++i) bad += out[i + 1].bits() != H(xs[i]).bits();
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("load_as_float equals the scalar conversion on all 65536 patterns") {
  MESSAGE("xsimd arch: ", std::string(xsimd::default_arch::name()), ", ", W, " lanes");
  check_load_all_patterns<tfm::bf16>();
  check_load_all_patterns<tfm::f16>();
}

TEST_CASE("store_from_float equals the scalar rounding bitwise") {
  const std::vector<float> xs = store_cases();
  check_store<tfm::bf16>(xs);
  check_store<tfm::f16>(xs);
}

TEST_CASE("bulk convert equals the scalar conversion for every length and offset") {
  const std::uint64_t seed = std::random_device{}();
  MESSAGE("seed = ", seed);
  std::mt19937 gen(static_cast<std::uint32_t>(seed));
  std::vector<float> src(1000);
  std::normal_distribution<float> normal(0.0f, 300.0f);
  for (float& v : src) v = normal(gen);
  src[7] = NAN;
  src[8] = 1e30f;
  src[9] = -1e-42f;
  for (int n : {0, 1, 3, 15, 16, 17, 31, 33, 100, 997}) {
    for (int off : {0, 1, 3}) {
      std::vector<tfm::bf16> b(n + off);
      std::vector<tfm::f16> h(n + off);
      tfm::convert(src.data() + off, b.data(), n);
      tfm::convert(src.data() + off, h.data(), n);
      std::vector<float> back_b(n), back_h(n);
      tfm::convert(b.data(), back_b.data(), n);
      tfm::convert(h.data(), back_h.data(), n);
      int bad = 0;
      for (int i = 0; i < n; ++i) {
        const float x = src[off + i];
        bad += b[i].bits() != tfm::bf16(x).bits();
        bad += h[i].bits() != tfm::f16(x).bits();
        bad += fbits(back_b[i]) != fbits(static_cast<float>(tfm::bf16(x)));
        bad += fbits(back_h[i]) != fbits(static_cast<float>(tfm::f16(x)));
      }
      INFO("n = ", n, ", offset = ", off);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("bf16 storage accumulates in float: 10^6 ones sum to exactly 10^6") {
  std::vector<tfm::bf16> ones(1000000, tfm::bf16(1.0f));
  fbatch acc(0.0f);
  std::size_t i = 0;
  for (; i + W <= ones.size(); i += W) acc += tfm::load_as_float(ones.data() + i);
  alignas(64) float lanes[W];
  acc.store_aligned(lanes);
  double s = 0;
  for (float v : lanes) s += v;
  for (; i < ones.size(); ++i) s += static_cast<float>(ones[i]);
  CHECK(s == 1000000.0);
}
