// DETERMINISM: 1, 2 and 3 threads give bitwise identical C on every path (packed split along M
// and along N, with the team-packed shared operand over several depth and column blocks and the
// per-band fallback for row bands longer than mc; gemv for M == 1 and N == 1; batched small and
// large).
#include "gemm_test_util.hpp"

#include "typeformer/backend/cpu/parallel.hpp"

using tfm::index_t;

namespace {

template <class T>
void check_bitwise(const gemm_test::gemm_case& c, std::mt19937_64& rng) {
  auto o = gemm_test::make_operands<T>(c, rng);
  std::vector<T> c1 = o.c, c2 = o.c, c3 = o.c;
  int nt = 1;
  for (std::vector<T>* out : {&c1, &c2, &c3}) {
    tfm::thread_scope scope(nt++);
    tfm::cpu_kernels::gemm<T>(c.ta, c.tb, c.M, c.N, c.K, T(c.alpha), o.a.data(), o.lda, o.b.data(),
                              o.ldb, T(c.beta), out->data(), o.ldc);
  }
  INFO(gemm_test::describe(c));
  CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(T)) == 0);
  CHECK(std::memcmp(c1.data(), c3.data(), c1.size() * sizeof(T)) == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("gemm is bitwise identical on 1 and 2 threads", T, float, double) {
  const std::uint64_t seed = gemm_test::seed_or(51);
  MESSAGE("seed " << seed);
  {
    tfm::thread_scope two(2);
    MESSAGE("threads available in a 2-thread scope: " << tfm::num_threads());
  }
  std::mt19937_64 rng(seed);
  const index_t shapes[][3] = {{700, 200, 300},   // split along M
                               {900, 500, 800},   // split along M, 2 column and 3 depth blocks
                               {300, 520, 600},   // split along N
                               {97, 1000, 129},   // uneven tiles in both
                               {4500, 40, 50},    // row bands longer than mc: per-band packing
                               {2100, 2200, 40},  // split along N over two row blocks (mc)
                               {1, 3072, 768},    // gemv M == 1
                               {3000, 1, 768}};   // gemv N == 1
  for (auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      gemm_test::gemm_case c;
      c.ta = t & 1;
      c.tb = t & 2;
      c.M = s[0];
      c.N = s[1];
      c.K = s[2];
      c.pad_c = 1;
      c.alpha = 0.5;
      c.beta = t == 1 ? 0.0 : 1.5;
      check_bitwise<T>(c, rng);
    }
}

TEST_CASE_TEMPLATE("gemm_batched is bitwise identical on 1 and 2 threads", T, float, double) {
  const std::uint64_t seed = gemm_test::seed_or(52);
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  const index_t shapes[][4] = {{16, 48, 48, 48}, {3, 300, 200, 150}};  // batch, M, N, K
  for (auto& s : shapes) {
    const index_t batch = s[0], M = s[1], N = s[2], K = s[3];
    std::vector<T> a(static_cast<std::size_t>(batch * M * K)), b(static_cast<std::size_t>(K * N)),
        c(static_cast<std::size_t>(batch * M * N));
    gemm_test::fill_uniform(a, rng);
    gemm_test::fill_uniform(b, rng);
    gemm_test::fill_uniform(c, rng);
    std::vector<T> c1 = c, c2 = c;
    for (int nt = 1; nt <= 2; ++nt) {
      tfm::thread_scope scope(nt);
      tfm::cpu_kernels::gemm_batched<T>(false, true, batch, M, N, K, T(1), a.data(), K, M * K,
                                        b.data(), K, 0, T(0.5), (nt == 1 ? c1 : c2).data(), N,
                                        M * N);
    }
    INFO("batch=" << batch << " M=" << M << " N=" << N << " K=" << K);
    CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(T)) == 0);
  }
}
