// alpha/beta semantics, NaN handling, degenerate sizes, errors and a hand-computed product.
#include "gemm_test_util.hpp"

#include <cmath>

using tfm::index_t;

TEST_CASE_TEMPLATE("gemm computes a hand-checked 2x3 * 3x2 product", T, float, double) {
  // A = [1 2 3; 4 5 6], B = [7 8; 9 10; 11 12] -> A*B = [58 64; 139 154]
  const T A[] = {1, 2, 3, 4, 5, 6};
  const T B[] = {7, 8, 9, 10, 11, 12};
  const T At[] = {1, 4, 2, 5, 3, 6};     // A^T stored 3 x 2
  const T Bt[] = {7, 9, 11, 8, 10, 12};  // B^T stored 2 x 3
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    T C[] = {1, 1, 1, 1};
    tfm::cpu_kernels::gemm<T>(ta, tb, 2, 2, 3, T(2), ta ? At : A, ta ? 2 : 3, tb ? Bt : B,
                              tb ? 3 : 2, T(-1), C, 2);
    INFO("ta=" << ta << " tb=" << tb);
    CHECK(C[0] == 115);
    CHECK(C[1] == 127);
    CHECK(C[2] == 277);
    CHECK(C[3] == 307);
  }
}

TEST_CASE_TEMPLATE("gemm with beta == 0 does not read C (NaN in C)", T, float, double) {
  const std::uint64_t seed = gemm_test::seed_or(21);
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  const index_t shapes[][3] = {{1, 64, 40}, {40, 1, 33}, {5, 7, 3}, {64, 64, 64}, {130, 97, 401}};
  for (auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      gemm_test::gemm_case c;
      c.ta = t & 1;
      c.tb = t & 2;
      c.M = s[0];
      c.N = s[1];
      c.K = s[2];
      c.alpha = 0.75;
      c.beta = 0;
      c.nan_c = true;
      c.pad_c = 2;
      INFO(gemm_test::describe(c));
      const double e = gemm_test::run_case<T>(c, rng);
      CHECK(e <= gemm_test::nmse_expected<T>());
    }
}

TEST_CASE_TEMPLATE("gemm with alpha == 0 or K == 0 only scales C", T, float, double) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> A(20 * 20, nan), B(20 * 20, nan);
  for (index_t K : {index_t(0), index_t(20)}) {
    for (T beta : {T(0), T(1), T(-2)}) {
      std::vector<T> C(20 * 20);
      for (std::size_t i = 0; i < C.size(); ++i) C[i] = T(i % 7) - T(3);
      std::vector<T> before = C;
      const T alpha = K == 0 ? T(3) : T(0);
      tfm::cpu_kernels::gemm<T>(false, true, 20, 20, K, alpha, A.data(), 20, B.data(), 20, beta,
                                C.data(), 20);
      INFO("K=" << K << " beta=" << beta);
      for (std::size_t i = 0; i < C.size(); ++i) REQUIRE(C[i] == beta * before[i]);
    }
  }
}

TEST_CASE("gemm rejects negative sizes and an aliased batched C") {
  float x[4] = {};
  CHECK_THROWS_AS(tfm::cpu_kernels::gemm<float>(false, false, -1, 2, 2, 1.f, x, 2, x, 2, 0.f, x, 2),
                  tfm::value_error);
  CHECK_THROWS_AS(
      tfm::reference_kernels::gemm<float>(false, false, 2, 2, -3, 1.f, x, 2, x, 2, 0.f, x, 2),
      tfm::value_error);
  CHECK_THROWS_AS(tfm::cpu_kernels::gemm_batched<float>(false, false, 2, 1, 1, 1, 1.f, x, 1, 0, x,
                                                        1, 0, 0.f, x, 1, 0),
                  tfm::value_error);
  CHECK_THROWS_AS(tfm::cpu_kernels::gemm_batched<float>(false, false, -1, 1, 1, 1, 1.f, x, 1, 0, x,
                                                        1, 0, 0.f, x, 1, 1),
                  tfm::value_error);
}
