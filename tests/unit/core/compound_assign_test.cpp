// Compound assignment (`+= -= *= /=`) on tensors and views: the result equals the plain loop
// `dst[i] = dst[i] op src[broadcast(i)]` computed in double, the destination keeps its shape (a
// source that does not broadcast to it is a shape_error, never a resize), views write through to
// the tensor they look at, and a source that reads the destination gives the copy-first answer.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/core/factory.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;

namespace {

template <class Backend>
void check_bias_broadcast() {
  const index_t rows = 37, cols = 19;  // SIMD tails on every row
  auto y = tfm::randn<float>(shape<dyn, dyn>(rows, cols), /*seed=*/11);
  auto bias = tfm::randn<float>(shape<dyn>(cols), 12);
  tensor<float, shape<dyn, dyn>, Backend> d = y;
  std::vector<float> want(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      want[static_cast<std::size_t>(r * cols + c)] =
          static_cast<float>(static_cast<double>(y(r, c)) + static_cast<double>(bias(c)));
  d += bias;
  REQUIRE(d.extent(0) == rows);
  REQUIRE(d.extent(1) == cols);
  for (index_t i = 0; i < d.size(); ++i) CHECK(d.data()[i] == want[static_cast<std::size_t>(i)]);
}

}  // namespace

TEST_CASE("compound assignment: t += bias broadcasts over rows (cpu and reference)") {
  check_bias_broadcast<tfm::cpu>();
  check_bias_broadcast<tfm::reference>();
}

TEST_CASE("compound assignment: -=, *=, /= with tensors and scalars match double loops") {
  auto a = tfm::randn<double>(shape<dyn>(1001), 3);
  auto b = tfm::rand_uniform<double>(shape<dyn>(1001), 4, 0.5, 2.0);
  tensor<double, shape<dyn>> t = a;
  t -= b;
  t *= 3.0;
  t /= b;
  t += 1.0;
  for (index_t i = 0; i < t.size(); ++i) CHECK(t(i) == ((a(i) - b(i)) * 3.0) / b(i) + 1.0);
}

TEST_CASE("compound assignment: integer tensors") {
  tensor<std::int32_t, shape<2, 3>> t{{1, 2, 3}, {4, 5, 6}};
  tensor<std::int32_t, shape<3>> r{10, 20, 30};
  t += r;
  t *= 2;
  const std::int32_t want[] = {22, 44, 66, 28, 50, 72};
  for (index_t i = 0; i < 6; ++i) CHECK(t.data()[i] == want[i]);
}

TEST_CASE("compound assignment: a view writes through, the rest of the tensor is untouched") {
  tensor<float, shape<4, 5>> t = tfm::full<float>(shape<4, 5>{}, 1.0f);
  auto row = tfm::select<0>(t, 2);  // (5)
  row += 2.0f;
  auto col = tfm::select<1>(t, 4);  // (4), stride 5
  col *= 10.0f;
  for (index_t r = 0; r < 4; ++r)
    for (index_t c = 0; c < 5; ++c) {
      float want = r == 2 ? 3.0f : 1.0f;
      if (c == 4) want *= 10.0f;
      CHECK(t(r, c) == want);
    }
}

TEST_CASE("compound assignment: sources that read the destination give the copy-first answer") {
  std::mt19937 g(20261207);
  MESSAGE("seed 20261207");
  auto x = tfm::randn<float>(shape<dyn, dyn>(33, 17), 5);
  std::vector<double> before(x.data(), x.data() + x.size());
  auto y = x;
  y += y * y;  // same positions: in place
  for (index_t i = 0; i < y.size(); ++i) {
    const double v = before[static_cast<std::size_t>(i)];
    CHECK(y.data()[i] == static_cast<float>(v + static_cast<double>(static_cast<float>(v * v))));
  }
  tensor<float, shape<dyn, dyn>> s = tfm::randn<float>(shape<dyn, dyn>(16, 16), 6);
  const auto s0 = s;
  s += tfm::transpose(s);  // reads elements the assignment overwrites: through a temporary
  for (index_t r = 0; r < 16; ++r)
    for (index_t c = 0; c < 16; ++c) CHECK(s(r, c) == s0(r, c) + s0(c, r));
}

TEST_CASE("compound assignment: the destination's shape never changes") {
  tensor<float, shape<dyn, dyn>> small(2, 3);
  tensor<float, shape<dyn, dyn>> big(4, 3);
  CHECK_THROWS_AS(small += big, tfm::shape_error);  // (4, 3) does not fit (2, 3): no resize
  CHECK(small.extent(0) == 2);
  tensor<float, shape<dyn>> a(3), b(4);
  CHECK_THROWS_AS(a -= b, tfm::shape_error);
  CHECK(a.extent(0) == 3);
}
