// Elementwise evaluation over shapes of rank 0..4 with static, dynamic and mixed extents, empty
// shapes and size-1 axes: cpu vs reference vs an oracle computed in the test.
//   exact chain  (a + b) * (a - 2): three correctly rounded float operations and no multiply
//                feeding an add (so no FMA contraction can change the bits): bitwise.
//   transcendental  exp(a) * tanh(b): NMSE <= 1e-7 against a double oracle.
// The reference backend is also invoked directly through tfm::evaluate(view, expr, reference{}).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;

namespace {

template <class T, bool Transcendental = true, class S>
void check_shape(const S& s, std::mt19937& g) {
  using cpu_t = tfm::tensor<T, S, tfm::cpu>;
  using ref_t = tfm::tensor<T, S, tfm::reference>;
  const auto n = static_cast<std::size_t>(s.size());
  const auto va = tfm_test::random_vector<T>(n, g, -3, 3);
  const auto vb = tfm_test::random_vector<T>(n, g, -3, 3);
  auto a = tfm_test::make_tensor<cpu_t>(s, va);
  auto b = tfm_test::make_tensor<cpu_t>(s, vb);
  INFO("shape " << s.to_string() << " dtype " << std::string(tfm::dtype_name<T>()));

  // Exact chain, bitwise.
  cpu_t c1 = (a + b) * (a - 2.0f);
  ref_t r1 = (a + b) * (a - 2.0f);
  cpu_t d1(s);
  tfm::evaluate(d1.view(), (a + b) * (a - 2.0f), tfm::reference{});  // reference, called directly
  std::vector<T> want1(n);
  for (std::size_t i = 0; i < n; ++i) {
    using C = tfm::compute_t<T>;
    const C x = static_cast<C>(va[i]), y = static_cast<C>(vb[i]);
    const C sum = x + y;
    const C dif = x - C(2);
    want1[i] = tfm::to_storage<T>(sum * dif);
  }
  CHECK(c1.shape() == s);
  TFM_CHECK_BITWISE(tfm_test::to_vector(c1), want1);
  TFM_CHECK_BITWISE(tfm_test::to_vector(r1), want1);
  TFM_CHECK_BITWISE(tfm_test::to_vector(d1), want1);

  if constexpr (!Transcendental) return;
  // Transcendental, NMSE.
  cpu_t c2 = tfm::exp(a) * tfm::tanh(b);
  ref_t r2 = tfm::exp(a) * tfm::tanh(b);
  std::vector<double> want2(n);
  for (std::size_t i = 0; i < n; ++i)
    want2[i] = std::exp(tfm_test::to_double(va[i])) * std::tanh(tfm_test::to_double(vb[i]));
  const double lim = tfm::is_half_v<T> ? 1e-4 : 1e-7;  // halves: rounding of the stored result
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(c2), want2, lim));
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(r2), want2, lim));
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(c2), tfm_test::to_vector(r2), 1e-7));
}

// Every shape type costs a set of instantiations, so the full list runs for float and a short
// list (one of each rank, static and dynamic) for the other storage types.
template <class T>
void some_shapes(std::mt19937& g) {
  check_shape<T>(shape<>{}, g);
  check_shape<T, false>(shape<dyn>(33), g);
  check_shape<T, false>(shape<3, dyn>(17), g);
  check_shape<T, false>(shape<2, 3, 5>{}, g);
  check_shape<T, false>(shape<dyn, dyn, dyn, dyn>(3, 1, 7, 15), g);
}

template <class T>
void all_shapes(std::mt19937& g) {
  check_shape<T>(shape<>{}, g);
  check_shape<T>(shape<1>{}, g);
  check_shape<T>(shape<17>{}, g);
  check_shape<T>(shape<dyn>(33), g);
  check_shape<T>(shape<dyn>(0), g);
  check_shape<T>(shape<3, dyn>(17), g);
  check_shape<T>(shape<dyn, dyn>(5, 16), g);
  check_shape<T>(shape<dyn, 4>(0), g);
  check_shape<T>(shape<4, 0>{}, g);
  check_shape<T>(shape<1, 1>{}, g);
  check_shape<T>(shape<2, 3, 5>{}, g);
  check_shape<T>(shape<dyn, 4, dyn>(3, 9), g);
  check_shape<T>(shape<1, 17, 1>{}, g);
  check_shape<T>(shape<2, 3, 4, 5>{}, g);
  check_shape<T>(shape<dyn, dyn, dyn, dyn>(3, 1, 7, 15), g);
  check_shape<T>(shape<1, 17, 1, 33>{}, g);
  check_shape<T>(shape<dyn, dyn, 1, 129>(2, 3), g);
}

}  // namespace

TEST_CASE("rank 0..4, static and dynamic extents: cpu == reference == oracle") {
  auto g = tfm_test::rng(0x4a4c);
  SUBCASE("f32") { all_shapes<float>(g); }
  SUBCASE("f64") { some_shapes<double>(g); }
  SUBCASE("bf16") { some_shapes<tfm::bf16>(g); }
  SUBCASE("f16") { some_shapes<tfm::f16>(g); }
}

TEST_CASE("large rank-3 tensor (OpenMP path), static inner extent") {
  auto g = tfm_test::rng(0x4a4d);
  check_shape<float>(shape<dyn, dyn, 129>(64, 127), g);
}

TEST_CASE("the result's shape type follows the broadcast of the operands' shape types") {
  tfm::tensor<float, shape<3, dyn>> a(4);
  tfm::tensor<float, shape<dyn>> b(4);
  tfm::tensor<float, shape<2, 1, 1>> c;
  auto e = (a + b) * c;
  static_assert(std::is_same_v<decltype(e)::shape_type, shape<2, 3, dyn>>);
  CHECK(e.shape().extents() == std::array<index_t, 3>{2, 3, 4});
  auto f = a + 1.0f;
  static_assert(std::is_same_v<decltype(f)::shape_type, shape<3, dyn>>);
  static_assert(std::is_same_v<decltype(f)::value_type, float>);
  // Scalars adopt the tensor's compute type: double literals do not promote a float tensor.
  static_assert(std::is_same_v<decltype(a * 2.0)::value_type, float>);
  tfm::tensor<tfm::bf16, shape<dyn>> h(3);
  static_assert(std::is_same_v<decltype(h + 1)::value_type, float>);
  // Mixed tensor dtypes compute in the common type.
  tfm::tensor<double, shape<dyn>> d(4);
  static_assert(std::is_same_v<decltype(b + d)::value_type, double>);
}

TEST_CASE("mixed element types: float + double computes in double, stored as the destination") {
  auto g = tfm_test::rng(0x4a4e);
  const auto va = tfm_test::random_vector<float>(37, g, -1, 1);
  const auto vb = tfm_test::random_vector<double>(37, g, -1, 1);
  auto a = tfm_test::make_tensor<tfm::tensor<float, shape<dyn>>>(shape<dyn>(37), va);
  auto b = tfm_test::make_tensor<tfm::tensor<double, shape<dyn>>>(shape<dyn>(37), vb);
  tfm::tensor<double, shape<dyn>> c = a + b;
  tfm::tensor<float, shape<dyn>> cf = a + b;
  for (std::size_t i = 0; i < 37; ++i) {
    CHECK(c(static_cast<index_t>(i)) == static_cast<double>(va[i]) + vb[i]);
    CHECK(cf(static_cast<index_t>(i)) == static_cast<float>(static_cast<double>(va[i]) + vb[i]));
  }
}
