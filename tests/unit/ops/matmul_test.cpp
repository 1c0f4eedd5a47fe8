// matmul: 2-D over a size sweep, batched 3-D and 4-D, broadcast batches (3-D x 2-D folds into
// one GEMM; 2-D x 3-D; (B,1,..) x (1,H,..)), float and double, vs a naive double triple loop;
// static result shape types.
#include <doctest/doctest.h>

#include "matmul_check.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

TEST_CASE_TEMPLATE("matmul: 2-D size sweep vs naive double loop", T, float, double) {
  auto g = tfm_test::rng(501);
  const std::vector<std::array<index_t, 3>> mnk = {
      {1, 1, 1},      {2, 3, 4},    {3, 2, 1},       {7, 8, 15},     {8, 7, 16},     {15, 16, 17},
      {16, 17, 31},   {17, 31, 33}, {33, 63, 8},     {63, 33, 127},  {127, 1, 63},   {1, 129, 64},
      {129, 3, 1023}, {64, 1, 129}, {100, 100, 100}, {257, 300, 70}, {250, 260, 520}};
  for (auto [m, n, k] : mnk) {
    auto a = random_dyn<T, 2>({m, k}, g);
    auto b = random_dyn<T, 2>({k, n}, g);
    check_matmul("2-D", a, b);
  }
}

TEST_CASE_TEMPLATE("matmul: batched 3-D and 4-D", T, float, double) {
  auto g = tfm_test::rng(502);
  {
    auto a = random_dyn<T, 3>({4, 5, 6}, g);
    auto b = random_dyn<T, 3>({4, 6, 7}, g);
    check_matmul("3-D batched", a, b);
  }
  {
    auto a = random_dyn<T, 3>({3, 33, 17}, g);
    auto b = random_dyn<T, 3>({3, 17, 65}, g);
    check_matmul("3-D batched", a, b);
  }
  {
    auto a = random_dyn<T, 4>({2, 3, 5, 6}, g);
    auto b = random_dyn<T, 4>({2, 3, 6, 4}, g);
    check_matmul("4-D batched", a, b);
  }
  {
    tensor<T, shape<2, 4, 16, 8>> q;  // (B, H, T, D) x (B, H, D, T)
    tensor<T, shape<2, 4, 8, 16>> k;
    fill_random(q, g);
    fill_random(k, g);
    check_matmul("4-D static (B,H,T,D)x(B,H,D,T)", q, k);
  }
}

TEST_CASE_TEMPLATE("matmul: broadcast batch axes", T, float, double) {
  auto g = tfm_test::rng(503);
  SUBCASE("3-D x 2-D (folds into one GEMM)") {
    auto a = random_dyn<T, 3>({3, 5, 8}, g);
    auto b = random_dyn<T, 2>({8, 6}, g);
    check_matmul("(B,T,C)x(C,N)", a, b);
    auto a2 = random_dyn<T, 3>({4, 37, 64}, g);
    auto b2 = random_dyn<T, 2>({64, 33}, g);
    check_matmul("(B,T,C)x(C,N)", a2, b2);
  }
  SUBCASE("4-D x 2-D") {
    auto a = random_dyn<T, 4>({2, 3, 5, 8}, g);
    auto b = random_dyn<T, 2>({8, 6}, g);
    check_matmul("(B,H,T,C)x(C,N)", a, b);
  }
  SUBCASE("2-D x 3-D") {
    auto a = random_dyn<T, 2>({5, 8}, g);
    auto b = random_dyn<T, 3>({3, 8, 6}, g);
    check_matmul("(M,K)x(B,K,N)", a, b);
  }
  SUBCASE("(B,1,M,K) x (1,H,K,N)") {
    auto a = random_dyn<T, 4>({2, 1, 4, 5}, g);
    auto b = random_dyn<T, 4>({1, 3, 5, 6}, g);
    check_matmul("(B,1,M,K)x(1,H,K,N)", a, b);
  }
  SUBCASE("(1,M,K) x (B,K,N) and (B,M,K) x (1,K,N)") {
    auto a = random_dyn<T, 3>({1, 4, 5}, g);
    auto b = random_dyn<T, 3>({3, 5, 6}, g);
    check_matmul("(1,M,K)x(B,K,N)", a, b);
    auto c = random_dyn<T, 3>({3, 4, 5}, g);
    auto d = random_dyn<T, 3>({1, 5, 6}, g);
    check_matmul("(B,M,K)x(1,K,N)", c, d);
  }
  SUBCASE("rank 4 x rank 3 with broadcast") {
    auto a = random_dyn<T, 4>({2, 1, 4, 5}, g);
    auto b = random_dyn<T, 3>({3, 5, 6}, g);
    check_matmul("(B,1,M,K)x(H,K,N)", a, b);
  }
  SUBCASE("single rows and columns") {
    auto a = random_dyn<T, 3>({3, 1, 8}, g);
    auto b = random_dyn<T, 2>({8, 1}, g);
    check_matmul("(B,1,K)x(K,1)", a, b);
  }
}

TEST_CASE("matmul: static result shape types") {
  using std::is_same_v;
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  tensor<float, shape<3, 2>> b{{1, 0}, {0, 1}, {1, 1}};
  auto c = tfm::matmul(a, b);
  static_assert(is_same_v<decltype(c), tensor<float, shape<2, 2>>>);
  // Exact small-integer products.
  CHECK(c(0, 0) == 4);
  CHECK(c(0, 1) == 5);
  CHECK(c(1, 0) == 10);
  CHECK(c(1, 1) == 11);
  static_assert(is_same_v<decltype(tfm::matmul(a, tfm::transpose(a))), tensor<float, shape<2, 2>>>);
  static_assert(is_same_v<decltype(tfm::matmul(tfm::transpose(a), a)), tensor<float, shape<3, 3>>>);
  static_assert(is_same_v<decltype(tfm::matmul(std::declval<tensor<double, shape<dyn, 3>>&>(),
                                               std::declval<tensor<double, shape<3, dyn>>&>())),
                          tensor<double, shape<dyn, dyn>>>);
  static_assert(is_same_v<decltype(tfm::matmul(std::declval<tensor<float, shape<4, dyn, 16>>&>(),
                                               std::declval<tensor<float, shape<16, 8>>&>())),
                          tensor<float, shape<4, dyn, 8>>>);
  static_assert(is_same_v<decltype(tfm::matmul(std::declval<tensor<float, shape<2, 1, 4, 5>>&>(),
                                               std::declval<tensor<float, shape<1, 3, 5, 6>>&>())),
                          tensor<float, shape<2, 3, 4, 6>>>);
  static_assert(is_same_v<decltype(tfm::matmul(std::declval<tensor<float, shape<7, 5>>&>(),
                                               std::declval<tensor<float, shape<dyn, 5, 6>>&>())),
                          tensor<float, shape<dyn, 7, 6>>>);
  static_assert(is_same_v<decltype(tfm::matmul(std::declval<tensor<float, shape<dyn, dyn>>&>(),
                                               std::declval<tensor<float, shape<5, 6>>&>())),
                          tensor<float, shape<dyn, 6>>>);
  static_assert(is_same_v<decltype(tfm::matmul(std::declval<tensor<tfm::bf16, shape<2, 3>>&>(),
                                               std::declval<tensor<tfm::bf16, shape<3, 4>>&>())),
                          tensor<tfm::bf16, shape<2, 4>>>);
  static_assert(
      is_same_v<decltype(tfm::matmul(std::declval<tensor<float, shape<2, 3>, tfm::reference>&>(),
                                     std::declval<tensor<float, shape<3, 4>, tfm::reference>&>())),
                tensor<float, shape<2, 4>, tfm::reference>>);
  // Dynamic extents come back at run time.
  tensor<float, shape<4, dyn, 16>> x(5);
  tensor<float, shape<16, 8>> w;
  CHECK(tfm::matmul(x, w).shape().to_string() == "(4, 5, 8)");
}
