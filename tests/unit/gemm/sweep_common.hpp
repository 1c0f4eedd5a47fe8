// The full size sweep (M, N, K each over gemm_test::sweep_sizes()) for one element type, all four
// transposition combinations; alpha/beta and leading-dimension padding rotate over the cases.
#pragma once

#include "gemm_test_util.hpp"

namespace gemm_test {

template <class T>
void sweep_all(std::uint64_t seed) {
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  const double ab[][2] = {{1.0, 0.0}, {-0.75, 0.5}, {1.5, 1.0}, {0.5, 0.0}};
  const index_t pads[] = {0, 1, 3};
  double worst = 0;
  int count = 0;
  for (int t = 0; t < 4; ++t)
    for (index_t M : sweep_sizes())
      for (index_t N : sweep_sizes())
        for (index_t K : sweep_sizes()) {
          gemm_case c;
          c.ta = t & 1;
          c.tb = (t >> 1) & 1;
          c.M = M;
          c.N = N;
          c.K = K;
          c.alpha = ab[count % 4][0];
          c.beta = ab[count % 4][1];
          c.nan_c = c.beta == 0 && count % 8 == 0;
          c.pad_a = pads[count % 3];
          c.pad_b = pads[(count / 3) % 3];
          c.pad_c = pads[(count / 9) % 3];
          ++count;
          const double e = run_case<T>(c, rng);
          if (!(e <= nmse_expected<T>())) FAIL_CHECK(describe(c) << " nmse=" << e);
          worst = std::max(worst, e);
        }
  MESSAGE(count << " cases, worst NMSE " << worst);
  CHECK(worst <= nmse_limit<T>());
}

}  // namespace gemm_test
