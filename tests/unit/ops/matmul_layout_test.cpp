// matmul operands that are not plain contiguous tensors: transpose()/permute views (passed to
// the GEMM as transpose flags), sliced (strided) views, views whose last two axes are neither
// row- nor column-contiguous (copied once), expressions and temporaries. float and double vs a
// naive double triple loop.
#include <doctest/doctest.h>

#include "matmul_check.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

TEST_CASE_TEMPLATE("matmul: transposed operands (transpose, permute)", T, float, double) {
  auto g = tfm_test::rng(601);
  for (auto [m, n, k] :
       std::vector<std::array<index_t, 3>>{{5, 7, 3}, {33, 17, 64}, {1, 9, 8}, {16, 1, 31}}) {
    auto a = random_dyn<T, 2>({m, k}, g);
    auto at = random_dyn<T, 2>({k, m}, g);  // stored transposed
    auto b = random_dyn<T, 2>({k, n}, g);
    auto bt = random_dyn<T, 2>({n, k}, g);
    check_matmul("A x B^T", a, tfm::transpose(bt));
    check_matmul("A^T x B", tfm::transpose(at), b);
    check_matmul("A^T x B^T", tfm::transpose(at), tfm::transpose(bt));
    check_matmul("A x B^T (permute<1, 0>)", a, tfm::permute<1, 0>(bt));
  }
  SUBCASE("batched: q k^T in 3-D and 4-D") {
    auto q = random_dyn<T, 3>({3, 10, 8}, g);
    auto k = random_dyn<T, 3>({3, 12, 8}, g);
    check_matmul("(B,T,D)x(B,S,D)^T", q, tfm::transpose(k));
    auto q4 = random_dyn<T, 4>({2, 3, 10, 8}, g);
    auto k4 = random_dyn<T, 4>({2, 3, 12, 8}, g);
    check_matmul("(B,H,T,D)x(B,H,S,D)^T", q4, tfm::transpose(k4));
  }
  SUBCASE("attention layout: (B,T,H,D) permuted to (B,H,T,D) and (B,H,D,T)") {
    auto x = random_dyn<T, 4>({2, 9, 3, 8}, g);  // (B, T, H, D)
    auto y = random_dyn<T, 4>({2, 11, 3, 8}, g);
    auto q = tfm::permute<0, 2, 1, 3>(x);   // (B, H, T, D): rows strided by H*D
    auto kt = tfm::permute<0, 2, 3, 1>(y);  // (B, H, D, S): a transposed matrix
    check_matmul("permute q x permute k^T", q, kt);
    auto v = tfm::permute<0, 2, 1, 3>(y);  // (B, H, S, D)
    auto p = random_dyn<T, 4>({2, 3, 9, 11}, g);
    check_matmul("p x permute v", p, v);
  }
  SUBCASE("a batch of transposed A times a shared B") {
    auto at = random_dyn<T, 3>({4, 6, 5}, g);
    auto b = random_dyn<T, 2>({6, 7}, g);
    check_matmul("(B,K,M)^T x (K,N)", tfm::transpose(at), b);
    auto a = random_dyn<T, 3>({5, 4, 6}, g);  // (M, B, K) permuted to (B, M, K): no fold
    check_matmul("permute<1,0,2> x (K,N)", tfm::permute<1, 0, 2>(a), b);
  }
}

TEST_CASE_TEMPLATE("matmul: sliced (strided) operands", T, float, double) {
  auto g = tfm_test::rng(602);
  auto a = random_dyn<T, 2>({20, 24}, g);
  auto b = random_dyn<T, 2>({24, 30}, g);
  check_matmul("every other row of A", tfm::slice<0>(a, 1, 20, 2), b);
  check_matmul("columns 4..20 of A x rows 4..20 of B", tfm::slice<1>(a, 4, 20),
               tfm::slice<0>(b, 4, 20));
  check_matmul("every other column of B (copied once)", a, tfm::slice<1>(b, 0, 30, 2));
  check_matmul("every third column of A and row of B", tfm::slice<1>(a, 0, 24, 3),
               tfm::slice<0>(b, 0, 24, 3));
  check_matmul("static slice", tfm::slice<0, 2, 9>(a), tfm::slice<1, 3, 11>(b));
  check_matmul("slices of transposes", tfm::slice<0>(tfm::transpose(b), 2, 29, 3),
               tfm::slice<1>(tfm::transpose(a), 1, 15));
  auto a3 = random_dyn<T, 3>({6, 8, 10}, g);
  auto b3 = random_dyn<T, 3>({6, 10, 5}, g);
  check_matmul("every other batch", tfm::slice<0>(a3, 0, 6, 2), tfm::slice<0>(b3, 1, 6, 2));
  check_matmul("select a batch", tfm::select<0>(a3, 4), tfm::select<0>(b3, 2));
  check_matmul("strided rows in a batch x shared B", tfm::slice<1>(a3, 0, 8, 2),
               tfm::select<0>(b3, 0));
  auto row = random_dyn<T, 2>({1, 10}, g);
  check_matmul("broadcast_to view (stride-0 rows, copied)",
               tfm::broadcast_to(row, shape<dyn, dyn>(7, 10)), tfm::select<0>(b3, 1));
}

TEST_CASE_TEMPLATE("matmul: expression and temporary operands", T, float, double) {
  auto g = tfm_test::rng(603);
  auto a = random_dyn<T, 2>({9, 12}, g);
  auto b = random_dyn<T, 2>({12, 7}, g);
  auto c = random_dyn<T, 2>({7, 5}, g);
  const auto va = doubles(a), vb = doubles(b);
  const dims ea{9, 12}, eb{12, 7};
  auto scaled = [](std::vector<double> v, double s, double o) {
    for (auto& x : v) x = x * s + o;
    return v;
  };
  SUBCASE("expressions") {
    // The expressions are evaluated in T; the oracle applies the same elementwise map exactly
    // (2x and x + 1 are exact in binary floating point for these magnitudes up to rounding of
    // x + 1, which the oracle reproduces by rounding to T).
    tensor<T, shape<dyn, dyn>> a2 = a * T(2);
    tensor<T, shape<dyn, dyn>> b1 = b + T(1);
    check_result("expr x expr", tfm::matmul(a * T(2), b + T(1)), doubles(a2), ea, doubles(b1), eb);
    check_result("tensor x expr", tfm::matmul(a, b + T(1)), va, ea, doubles(b1), eb);
    CHECK(doubles(a2) == scaled(va, 2, 0));
  }
  SUBCASE("temporaries") {
    check_result("eval() x tensor", tfm::matmul(tfm::eval(a * T(1)), b), va, ea, vb, eb);
    tensor<T, shape<dyn, dyn>> bcopy = b;
    check_result("tensor x moved tensor", tfm::matmul(a, std::move(bcopy)), va, ea, vb, eb);
    // matmul(matmul(a, b), c): the inner result is a temporary.
    auto ab = tfm::matmul(a, b);
    auto want_ab = matmul_oracle(va, ea, vb, eb);
    check_result("(a b) c", tfm::matmul(tfm::matmul(a, b), c), doubles(ab), ext_of(ab), doubles(c),
                 ext_of(c));
    TFM_CHECK_REPORT(tfm_test::compare(doubles(ab), want_ab, 1e-9));
  }
}
