// tfm::simd::fma rounds once where the ISA has FMA: every lane equals std::fma (itself exact in
// one rounding), for float and double. xsimd 8.1 has no AVX-512 fma and falls back to a * b + c,
// which rounds twice unless GCC contracts it at -O2; Clang and -O1 builds showed it.
#include "rows_test_util.hpp"

#include "typeformer/backend/cpu/simd.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

namespace {

template <class T>
void check_fma() {
  namespace simd = tfm::simd;
  constexpr int w = simd::width<T>;
  std::mt19937_64 rng(rows_test::seed());
  MESSAGE("seed ", rows_test::seed());
  std::uniform_real_distribution<T> d(T(-4), T(4));
  std::vector<T> a(w), b(w), c(w), y(w);
  int differ_from_unfused = 0;
  for (int rep = 0; rep < 2000; ++rep) {
    for (int i = 0; i < w; ++i) a[i] = d(rng), b[i] = d(rng), c[i] = d(rng);
    simd::store(y.data(),
                simd::fma(simd::load(a.data()), simd::load(b.data()), simd::load(c.data())));
    for (int i = 0; i < w; ++i) {
      const T want = std::fma(a[i], b[i], c[i]);
      volatile T product = a[i] * b[i];  // volatile: no contraction of the unfused reference
      if (want != static_cast<T>(product + c[i])) ++differ_from_unfused;
      INFO("lane ", i, " a=", a[i], " b=", b[i], " c=", c[i]);
      REQUIRE(y[i] == want);
    }
  }
  // The inputs are not degenerate: a double rounding would have shown in many of them.
  CHECK(differ_from_unfused > 100);
}

}  // namespace

#if defined(__FMA__) || defined(__AVX512F__) || defined(__aarch64__)
TEST_CASE("simd::fma: one rounding, lane by lane equal to std::fma") {
  check_fma<float>();
  check_fma<double>();
}
#endif
