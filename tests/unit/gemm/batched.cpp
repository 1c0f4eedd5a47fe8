// gemm_batched: distinct and broadcast (stride 0) operands, small (parallel over the batch) and
// large (one product at a time) products, against the reference batched product.
#include "gemm_test_util.hpp"

using tfm::index_t;

namespace {

template <class T>
void check_batched(bool ta, bool tb, index_t batch, index_t M, index_t N, index_t K,
                   bool broadcast_a, bool broadcast_b, std::mt19937_64& rng) {
  const index_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
  const index_t sa = broadcast_a ? 0 : (ta ? K : M) * lda + 5;
  const index_t sb = broadcast_b ? 0 : (tb ? N : K) * ldb + 1;
  const index_t sc = M * ldc + 4;
  std::vector<T> a(static_cast<std::size_t>(sa * (batch - 1) + (ta ? K : M) * lda));
  std::vector<T> b(static_cast<std::size_t>(sb * (batch - 1) + (tb ? N : K) * ldb));
  std::vector<T> c(static_cast<std::size_t>(sc * batch));
  gemm_test::fill_uniform(a, rng);
  gemm_test::fill_uniform(b, rng);
  gemm_test::fill_uniform(c, rng);
  std::vector<T> want = c, got = c;
  tfm::reference_kernels::gemm_batched<T>(ta, tb, batch, M, N, K, T(0.5), a.data(), lda, sa,
                                          b.data(), ldb, sb, T(2), want.data(), ldc, sc);
  tfm::cpu_kernels::gemm_batched<T>(ta, tb, batch, M, N, K, T(0.5), a.data(), lda, sa, b.data(),
                                    ldb, sb, T(2), got.data(), ldc, sc);
  INFO("ta=" << ta << " tb=" << tb << " batch=" << batch << " M=" << M << " N=" << N << " K=" << K
             << " broadcast a=" << broadcast_a << " b=" << broadcast_b);
  for (index_t i = 0; i < batch; ++i) {
    const double e = gemm_test::nmse(got.data() + i * sc, want.data() + i * sc, M, N, ldc);
    CHECK(e <= gemm_test::nmse_limit<T>());
    CHECK(e <= gemm_test::nmse_expected<T>());
  }
  CHECK(got.back() == c.back());  // the gap after the last row of the last product is untouched
}

}  // namespace

TEST_CASE_TEMPLATE("gemm_batched matches the reference with broadcast operands", T, float, double) {
  const std::uint64_t seed = gemm_test::seed_or(41);
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int t = 0; t < 4; ++t)
    for (int bc = 0; bc < 3; ++bc) {
      const bool ta = t & 1, tb = t & 2;
      check_batched<T>(ta, tb, 6, 17, 33, 40, bc == 1, bc == 2, rng);    // small: batch-parallel
      check_batched<T>(ta, tb, 3, 130, 70, 300, bc == 1, bc == 2, rng);  // packed, in sequence
      check_batched<T>(ta, tb, 4, 1, 65, 64, bc == 1, bc == 2, rng);     // gemv per product
    }
  // batch 0 and 1 (stride_c may then be 0)
  check_batched<T>(false, true, 1, 20, 20, 20, false, false, rng);
  std::vector<T> x(4, T(1));
  tfm::cpu_kernels::gemm_batched<T>(false, false, 0, 2, 2, 2, T(1), x.data(), 2, 0, x.data(), 2, 0,
                                    T(0), x.data(), 2, 0);
  CHECK(x[0] == 1);
}
