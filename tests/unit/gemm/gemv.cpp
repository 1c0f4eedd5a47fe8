// M == 1 (decode: x * W^T with W stored N x K) and N == 1 products, the gemv paths, with strided
// vectors, against the reference.
#include "gemm_test_util.hpp"

using tfm::index_t;

TEST_CASE_TEMPLATE("gemv shapes (M == 1 or N == 1) match the reference", T, float, double) {
  const std::uint64_t seed = gemm_test::seed_or(31);
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  // (M, N, K): decode shapes, odd sizes around the SIMD width, one-element products, and a row
  // wider than gemv_axpy's 16 KiB accumulator block (two blocks in float, three in double)
  const index_t shapes[][3] = {{1, 3072, 768}, {1, 768, 3072}, {1, 1, 1},      {1, 1, 77},
                               {1, 129, 1},    {1, 17, 33},    {1, 63, 15},    {3072, 1, 768},
                               {129, 1, 31},   {7, 1, 1},      {1, 1000, 129}, {515, 1, 2049},
                               {1, 4099, 37}};
  int n = 0;
  for (auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      gemm_test::gemm_case c;
      c.ta = t & 1;
      c.tb = t & 2;
      c.M = s[0];
      c.N = s[1];
      c.K = s[2];
      c.pad_a = n % 3;  // M == 1 with ta: lda > 1 makes op(A) a strided row
      c.pad_b = (n + 1) % 3;
      c.pad_c = (n + 2) % 3;  // N == 1: ldc > 1 makes C a strided column
      c.alpha = n % 2 ? 1.0 : -0.5;
      c.beta = n % 3 == 0 ? 0.0 : 0.25;
      c.nan_c = c.beta == 0;
      ++n;
      INFO(gemm_test::describe(c));
      const double e = gemm_test::run_case<T>(c, rng);
      CHECK(e <= gemm_test::nmse_limit<T>());
      CHECK(e <= gemm_test::nmse_expected<T>());
    }
}
