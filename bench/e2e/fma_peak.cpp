// bench/e2e/fma_peak.cpp
//
// The FMA peak of one core in GF/s, the denominator of the MFU that bench/e2e/run.sh reports:
// independent chains of float FMAs on registers (as many as the ISA keeps in registers next to
// one operand: 24 with 32 vector registers, 12 with 16), no memory traffic. Prints the best of
// five 0.2 s samples, a whole number, so run.sh can measure the peak in the same run as the
// training figures instead of taking one measured in another session (this VM's peak has moved
// between 183 and 257 GF/s across sessions).
//
//   usage: fma_peak            prints e.g. "191"
#include <typeformer/backend/cpu/simd.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace {

using V = tfm::simd::batch<float>;
constexpr int width = tfm::simd::width<float>;
// 32 vector registers with AVX-512 (and NEON), 16 with AVX2/SSE.
constexpr int chains = width >= 16 ? 24 : 12;

double sample(double seconds) {
  V acc[chains];
  for (int i = 0; i < chains; ++i) acc[i] = V(1e-3f * float(i));
  const V a(0.999999f), b(1e-7f);
  long iters = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int rep = 0; rep < 4096; ++rep) {
#pragma GCC unroll 24
      for (int i = 0; i < chains; ++i) acc[i] = tfm::simd::fma(acc[i], a, b);
    }
    iters += 4096;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  float sink = 0;
  for (int i = 0; i < chains; ++i) sink += tfm::simd::reduce_add(acc[i]);
  if (sink == 42.0f) std::printf("#");  // keeps the chains alive
  return double(iters) * chains * width * 2 / elapsed / 1e9;
}

}  // namespace

int main() {
  double best = 0;
  for (int s = 0; s < 5; ++s) best = std::max(best, sample(0.2));
  std::printf("%.0f\n", best);
  return 0;
}
