// Eigen interop (interop/eigen.hpp): as_eigen maps tensors and transposed/sliced views without a
// copy (writes through the map change the tensor); from_eigen keeps static extents (Matrix4f ->
// shape<4, 4>), dynamic ones dyn, vectors -> 1-D; tfm::matmul agrees with Eigen's product (an
// independent GEMM) within NMSE 1e-10 in double.
#include <doctest/doctest.h>

#include <Eigen/Core>

#include "matmul_check.hpp"
#include "typeformer/interop/eigen.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

TEST_CASE("eigen: as_eigen on a tensor aliases its elements") {
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  auto m = tfm::as_eigen(a);
  REQUIRE(m.rows() == 2);
  REQUIRE(m.cols() == 3);
  CHECK(m.data() == a.data());
  for (index_t i = 0; i < 2; ++i)
    for (index_t j = 0; j < 3; ++j) CHECK(m(i, j) == a(i, j));
  m(1, 2) = 60;
  CHECK(a(1, 2) == 60);
  a(0, 1) = -2;
  CHECK(m(0, 1) == -2);
  m.row(0) *= 10;  // an Eigen expression writing through the map
  CHECK(a(0, 0) == 10);
  CHECK(a(0, 2) == 30);
  // A const tensor gives a read-only map.
  const tensor<float, shape<2, 3>>& ca = a;
  auto cm = tfm::as_eigen(ca);
  static_assert(std::is_same_v<decltype(cm.data()), const float*>);
  CHECK(cm.sum() == 10 - 20 + 30 + 4 + 5 + 60);
  // Dynamic shapes and 1-D tensors (column vectors).
  tensor<double, shape<dyn, dyn>> d(3, 4);
  auto md = tfm::as_eigen(d);
  md.setConstant(2.5);
  for (double v : tfm_test::to_vector(d)) CHECK(v == 2.5);
  tensor<double, shape<dyn>> v(5);
  auto mv = tfm::as_eigen(v);
  static_assert(decltype(mv)::ColsAtCompileTime == 1);
  mv.setLinSpaced(5, 0, 4);
  CHECK(tfm_test::to_vector(v) == std::vector<double>{0, 1, 2, 3, 4});
}

TEST_CASE("eigen: as_eigen on transposed, sliced and selected views") {
  tensor<float, shape<3, 4>> a;
  for (index_t i = 0; i < 12; ++i) a.data()[i] = static_cast<float>(i);
  auto t = tfm::as_eigen(tfm::transpose(a));
  REQUIRE(t.rows() == 4);
  REQUIRE(t.cols() == 3);
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 4; ++j) CHECK(t(j, i) == a(i, j));
  t(3, 1) = 100;  // element (1, 3) of a
  CHECK(a(1, 3) == 100);
  auto s = tfm::as_eigen(tfm::slice<1>(a, 0, 4, 2));  // columns 0 and 2
  REQUIRE(s.cols() == 2);
  for (index_t i = 0; i < 3; ++i) {
    CHECK(s(i, 0) == a(i, 0));
    CHECK(s(i, 1) == a(i, 2));
  }
  s(2, 1) = -7;
  CHECK(a(2, 2) == -7);
  auto r = tfm::as_eigen(tfm::slice<0>(a, 1, 3));  // rows 1..2: contiguous rows, offset data
  CHECK(r.data() == a.data() + 4);
  CHECK(r(1, 3) == a(2, 3));
  auto col = tfm::as_eigen(tfm::select<1>(a, 3));  // a strided column: InnerStride 4
  REQUIRE(col.size() == 3);
  CHECK(col.innerStride() == 4);
  for (index_t i = 0; i < 3; ++i) CHECK(col(i) == a(i, 3));
  col(0) = 42;
  CHECK(a(0, 3) == 42);
  auto row = tfm::as_eigen(tfm::select<0>(a, 2));
  CHECK(row.innerStride() == 1);
  CHECK(row.sum() == a(2, 0) + a(2, 1) + a(2, 2) + a(2, 3));
  // A transposed slice of a transposed tensor.
  auto ts = tfm::as_eigen(tfm::slice<0>(tfm::transpose(a), 1, 4, 2));  // columns 1 and 3 of a
  REQUIRE(ts.rows() == 2);
  for (index_t j = 0; j < 3; ++j) {
    CHECK(ts(0, j) == a(j, 1));
    CHECK(ts(1, j) == a(j, 3));
  }
}

TEST_CASE("eigen: from_eigen keeps static extents, dynamic ones dyn, vectors 1-D") {
  Eigen::Matrix4f e = Eigen::Matrix4f::Identity();
  e(1, 3) = 5;
  auto t = tfm::from_eigen(e);
  static_assert(std::is_same_v<decltype(t), tensor<float, shape<4, 4>>>);
  for (index_t i = 0; i < 4; ++i)
    for (index_t j = 0; j < 4; ++j) CHECK(t(i, j) == e(i, j));
  Eigen::MatrixXd d(2, 3);
  d << 1, 2, 3, 4, 5, 6;
  auto td = tfm::from_eigen(d);
  static_assert(std::is_same_v<decltype(td), tensor<double, shape<dyn, dyn>>>);
  CHECK(td.shape().to_string() == "(2, 3)");
  CHECK(tfm_test::to_vector(td) == std::vector<double>{1, 2, 3, 4, 5, 6});  // row-major copy
  Eigen::VectorXf v = Eigen::VectorXf::LinSpaced(5, 1, 5);
  auto tv = tfm::from_eigen(v);
  static_assert(std::is_same_v<decltype(tv), tensor<float, shape<dyn>>>);
  CHECK(tfm_test::to_vector(tv) == std::vector<float>{1, 2, 3, 4, 5});
  Eigen::Vector3d v3(1, 2, 3);
  static_assert(std::is_same_v<decltype(tfm::from_eigen(v3)), tensor<double, shape<3>>>);
  Eigen::Matrix<float, 2, Eigen::Dynamic> m2(2, 3);
  m2.setOnes();
  static_assert(std::is_same_v<decltype(tfm::from_eigen(m2)), tensor<float, shape<2, dyn>>>);
  CHECK(tfm::from_eigen(m2).shape().to_string() == "(2, 3)");
  Eigen::RowVectorXf rv(3);
  rv << 7, 8, 9;
  auto trv = tfm::from_eigen(rv);
  static_assert(std::is_same_v<decltype(trv), tensor<float, shape<1, dyn>>>);
  CHECK(tfm_test::to_vector(trv) == std::vector<float>{7, 8, 9});
  Eigen::Matrix<float, 3, 2, Eigen::RowMajor> rm;
  rm << 1, 2, 3, 4, 5, 6;
  CHECK(tfm_test::to_vector(tfm::from_eigen(rm)) == std::vector<float>{1, 2, 3, 4, 5, 6});
  // Expressions and an element-type conversion.
  auto te = tfm::from_eigen(d.transpose() * 2.0);
  CHECK(te.shape().to_string() == "(3, 2)");
  CHECK(te(2, 1) == 12);
  auto tf = tfm::from_eigen<float>(d);
  static_assert(std::is_same_v<decltype(tf), tensor<float, shape<dyn, dyn>>>);
  CHECK(tf(1, 2) == 6.0f);
  // Round trip through a map.
  tensor<double, shape<3, 5>> x;
  auto g = tfm_test::rng(1001);
  fill_random(x, g);
  auto back = tfm::from_eigen(tfm::as_eigen(x));
  TFM_CHECK_BITWISE(tfm_test::to_vector(back), tfm_test::to_vector(x));
}

namespace {
template <class T>
void check_vs_eigen(const std::string& what, const std::vector<double>& got,
                    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& want) {
  std::vector<double> w;
  for (Eigen::Index i = 0; i < want.rows(); ++i)
    for (Eigen::Index j = 0; j < want.cols(); ++j) w.push_back(static_cast<double>(want(i, j)));
  INFO(what);
  TFM_CHECK_REPORT(tfm_test::compare(got, w, std::is_same_v<T, double> ? 1e-10 : 5e-4));
}
}  // namespace

TEST_CASE_TEMPLATE("eigen: tfm::matmul agrees with Eigen's product", T, double, float) {
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  auto g = tfm_test::rng(1002);
  for (auto [m, n, k] :
       std::vector<std::array<index_t, 3>>{{1, 1, 1}, {7, 9, 5}, {64, 33, 129}, {200, 150, 300}}) {
    auto a = random_dyn<T, 2>({m, k}, g);
    auto b = random_dyn<T, 2>({k, n}, g);
    auto bt = random_dyn<T, 2>({n, k}, g);
    const std::string sz = dims_str({m, n, k});
    M ab = tfm::as_eigen(a) * tfm::as_eigen(b);
    check_vs_eigen<T>("A B " + sz, doubles(tfm::matmul(a, b)), ab);
    M abt = tfm::as_eigen(a) * tfm::as_eigen(bt).transpose();
    check_vs_eigen<T>("A B^T " + sz, doubles(tfm::matmul(a, tfm::transpose(bt))), abt);
    M atb = tfm::as_eigen(a).transpose() * tfm::as_eigen(a);
    check_vs_eigen<T>("A^T A " + sz, doubles(tfm::matmul(tfm::transpose(a), a)), atb);
  }
  // Batched: each matrix of the batch against Eigen.
  auto x = random_dyn<T, 3>({3, 17, 24}, g);
  auto w = random_dyn<T, 2>({24, 11}, g);
  auto y = tfm::matmul(x, w);
  for (index_t bi = 0; bi < 3; ++bi) {
    M want = tfm::as_eigen(tfm::select<0>(x, bi)) * tfm::as_eigen(w);
    check_vs_eigen<T>("batch " + std::to_string(bi), doubles(tfm::select<0>(y, bi)), want);
  }
}
