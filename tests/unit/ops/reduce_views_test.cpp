// Reductions of non-contiguous views, expressions and temporaries equal those of contiguous
// copies bitwise; result element types and static result shapes.
#include <doctest/doctest.h>

#include <cstdint>

#include "reduce_check.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/view.hpp"

using namespace ops_test;
using tfm::dyn;
using tfm::shape;
using tfm::tensor;

namespace {
/// Every reduction of x along every axis (rank 3) and over all: as double vectors.
template <class X>
std::vector<std::vector<double>> every_reduction(X&& x) {
  std::vector<std::vector<double>> r;
  auto add = [&](const auto& t) { r.push_back(result_doubles(t)); };
  auto per_op = [&]<red K>() {
    add(call_reduce<K, 0, false>(x));
    add(call_reduce<K, 1, true>(x));
    add(call_reduce<K, -1, false>(x));
    add(call_reduce_all<K>(x));
  };
  per_op.template operator()<red::sum>();
  per_op.template operator()<red::mean>();
  per_op.template operator()<red::max>();
  per_op.template operator()<red::argmin>();
  per_op.template operator()<red::logsumexp>();
  return r;
}

void check_same(const std::vector<std::vector<double>>& a,
                const std::vector<std::vector<double>>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("result ", i);
    TFM_CHECK_BITWISE(a[i], b[i]);
  }
}
}  // namespace

TEST_CASE_TEMPLATE("reduce: views, expressions and temporaries equal contiguous copies bitwise", T,
                   float, tfm::bf16) {
  auto g = tfm_test::rng(405);
  tensor<T, shape<6, dyn, 33>> x(40);
  fill_random(x, g);
  SUBCASE("permuted view") {
    auto v = tfm::permute<2, 0, 1>(x);
    CHECK_FALSE(v.is_contiguous());
    tensor<T, shape<33, 6, dyn>> c = v;
    check_same(every_reduction(v), every_reduction(c));
  }
  SUBCASE("strided slice") {
    auto v = tfm::slice<1>(x, 1, 40, 3);
    tensor<T, shape<6, dyn, 33>> c = v;
    check_same(every_reduction(v), every_reduction(c));
  }
  SUBCASE("transposed matrix (select + transpose)") {
    auto v = tfm::transpose(tfm::select<0>(x, 2));
    tensor<T, shape<33, dyn>> c = v;
    auto rv = tfm::sum<0>(v), rc = tfm::sum<0>(c);
    TFM_CHECK_BITWISE(doubles(rv), doubles(rc));
    TFM_CHECK_BITWISE(tfm_test::to_vector(tfm::argmax<1>(v)),
                      tfm_test::to_vector(tfm::argmax<1>(c)));
    CHECK(tfm::max(v) == tfm::max(c));
  }
  SUBCASE("broadcast view (stride 0)") {
    tensor<T, shape<1, dyn, 33>> row(40);
    fill_random(row, g);
    auto v = tfm::broadcast_to(row, shape<6, dyn, 33>(40));
    tensor<T, shape<6, dyn, 33>> c = v;
    check_same(every_reduction(v), every_reduction(c));
  }
  SUBCASE("contiguous sub-view") {
    auto v = tfm::slice<0>(x, 1, 4);
    CHECK(v.is_contiguous());
    tensor<T, shape<dyn, dyn, 33>> c = v;
    check_same(every_reduction(v), every_reduction(c));
  }
  SUBCASE("expression") {
    tensor<float, shape<6, dyn, 33>> c = x * 2.0f + 1.0f;
    check_same(every_reduction(x * 2.0f + 1.0f), every_reduction(c));
    // An expression computes in float, so its max is float even for bf16 leaves.
    static_assert(std::is_same_v<decltype(tfm::max<0>(x * 2.0f)), tensor<float, shape<dyn, 33>>>);
  }
  SUBCASE("temporary tensor") {
    tensor<T, shape<6, dyn, 33>> copy = x;
    check_same(every_reduction(tfm::eval(x + 0.0f)),
               every_reduction(tensor<float, shape<6, dyn, 33>>(x)));
    check_same(every_reduction(std::move(copy)), every_reduction(x));
  }
}

TEST_CASE("reduce: result element types and static result shapes") {
  using std::int32_t;
  using std::int64_t;
  using std::is_same_v;
  using tfm::bf16;
  using tfm::f16;
  tensor<float, shape<2, 3, 4>> f;
  tensor<double, shape<2, dyn, 4>> d(3);
  tensor<bf16, shape<2, 3, 4>> h;
  tensor<f16, shape<dyn, 5>> e(2);
  tensor<int32_t, shape<5>> i{1, 2, 3, 4, 5};
  tensor<float, shape<2, 3>, tfm::reference> fr;

  static_assert(is_same_v<decltype(tfm::sum<1>(f)), tensor<float, shape<2, 4>>>);
  static_assert(is_same_v<decltype(tfm::sum<1>(f, tfm::keepdims)), tensor<float, shape<2, 1, 4>>>);
  static_assert(is_same_v<decltype(tfm::mean<-1>(f)), tensor<float, shape<2, 3>>>);
  static_assert(is_same_v<decltype(tfm::max<-3>(f)), tensor<float, shape<3, 4>>>);
  static_assert(is_same_v<decltype(tfm::sum<0>(d)), tensor<double, shape<dyn, 4>>>);
  static_assert(is_same_v<decltype(tfm::argmax<2>(d)), tensor<int32_t, shape<2, dyn>>>);
  static_assert(
      is_same_v<decltype(tfm::argmin<1>(d, tfm::keepdims)), tensor<int32_t, shape<2, 1, 4>>>);
  static_assert(is_same_v<decltype(tfm::logsumexp<1>(d)), tensor<double, shape<2, 4>>>);
  static_assert(is_same_v<decltype(tfm::sum<2>(h)), tensor<float, shape<2, 3>>>);
  static_assert(is_same_v<decltype(tfm::mean<2>(h)), tensor<float, shape<2, 3>>>);
  static_assert(is_same_v<decltype(tfm::logsumexp<2>(h)), tensor<float, shape<2, 3>>>);
  static_assert(is_same_v<decltype(tfm::max<2>(h)), tensor<bf16, shape<2, 3>>>);
  static_assert(is_same_v<decltype(tfm::min<0>(e)), tensor<f16, shape<5>>>);
  static_assert(is_same_v<decltype(tfm::sum<0>(e)), tensor<float, shape<5>>>);
  static_assert(is_same_v<decltype(tfm::sum<0>(i)), tensor<int64_t, shape<>>>);
  static_assert(is_same_v<decltype(tfm::max<0>(i, tfm::keepdims)), tensor<int32_t, shape<1>>>);
  static_assert(is_same_v<decltype(tfm::sum<0>(fr)), tensor<float, shape<3>, tfm::reference>>);
  static_assert(is_same_v<decltype(tfm::sum<0>(tfm::transpose(fr))),
                          tensor<float, shape<2>, tfm::reference>>);
  static_assert(
      is_same_v<decltype(tfm::sum<0>(tfm::permute<2, 0, 1>(f))), tensor<float, shape<2, 3>>>);
  // Over all elements: scalars.
  static_assert(is_same_v<decltype(tfm::sum(f)), float>);
  static_assert(is_same_v<decltype(tfm::sum(d)), double>);
  static_assert(is_same_v<decltype(tfm::sum(h)), float>);
  static_assert(is_same_v<decltype(tfm::mean(e)), float>);
  static_assert(is_same_v<decltype(tfm::max(h)), bf16>);
  static_assert(is_same_v<decltype(tfm::sum(i)), int64_t>);
  static_assert(is_same_v<decltype(tfm::max(i)), int32_t>);
  static_assert(is_same_v<decltype(tfm::argmax(f)), int32_t>);
  static_assert(is_same_v<decltype(tfm::argmin(d)), int32_t>);
  static_assert(is_same_v<decltype(tfm::logsumexp(h)), float>);
  // Dynamic extents come back from the input.
  auto r = tfm::sum<2>(d, tfm::keepdims);
  CHECK(r.shape().to_string() == "(2, 3, 1)");
  CHECK(tfm::sum(i) == 15);
  CHECK(tfm::argmax(i) == 4);
  CHECK(tfm::sum<0>(i)() == 15);
}
