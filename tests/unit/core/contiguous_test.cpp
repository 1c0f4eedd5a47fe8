// cpu evaluate_contiguous (backend/cpu/elementwise.hpp), the flat evaluation autodiff's
// elementwise ops use: against a plain double loop for float, double, bf16 and int32 (the scalar
// path), spans around the SIMD width and above the parallel threshold, scalar leaves, in place,
// and bitwise the same on 1 and 2 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/expr/functors.hpp"
#include "typeformer/expr/node.hpp"

using tfm::index_t;

namespace {

template <class T>
using flat = tfm::tensor_view<const T, tfm::dyn_shape<1>>;

std::uint64_t seed() {
  static const std::uint64_t s = std::random_device{}();
  return s;
}

const std::vector<index_t> spans = {0, 1, 7, 15, 16, 17, 33, 1000, 70001};

template <class T>
std::vector<T> random_values(index_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> d(-3.0, 3.0);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}

/// y = tanh(a) * b + 0.5 over n elements, by evaluate_contiguous with `threads` threads.
template <class T>
std::vector<T> run(const std::vector<T>& a, const std::vector<T>& b, int threads) {
  const index_t n = static_cast<index_t>(a.size());
  std::vector<T> y(a.size(), T(-1));
  const tfm::thread_scope scope(threads);
  const flat<T> va(a.data(), tfm::dyn_shape<1>(n)), vb(b.data(), tfm::dyn_shape<1>(n));
  tfm::evaluate_contiguous(y.data(), n, tfm::tanh(va) * vb + 0.5);
  return y;
}

template <class T>
void check_type(double tol) {
  std::mt19937_64 rng(seed());
  MESSAGE("seed ", seed());
  for (index_t n : spans) {
    const auto a = random_values<T>(n, rng), b = random_values<T>(n, rng);
    const auto y1 = run(a, b, 1), y2 = run(a, b, 2);
    INFO("n = ", n);
    REQUIRE(y1.size() == a.size());
    // n = 0: empty vectors, null data
    CHECK((y1.empty() || std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(T)) == 0));
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const double want = std::tanh(static_cast<double>(a[i])) * static_cast<double>(b[i]) + 0.5;
      worst = std::max(
          worst, std::fabs(static_cast<double>(y1[i]) - want) / std::max(1.0, std::fabs(want)));
    }
    CHECK(worst <= tol);
  }
}

}  // namespace

TEST_CASE("evaluate_contiguous: float, double, bf16 against a double loop; 1 == 2 threads") {
  check_type<float>(1e-6);
  check_type<double>(1e-14);
  check_type<tfm::bf16>(1e-2);  // bf16 output: 8 significant bits
}

TEST_CASE("evaluate_contiguous: int32 (scalar path) and in place") {
  const index_t n = 40000;
  std::vector<std::int32_t> a(static_cast<std::size_t>(n)), y(a.size());
  for (index_t i = 0; i < n; ++i)
    a[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 977 - 400);
  const flat<std::int32_t> va(a.data(), tfm::dyn_shape<1>(n));
  tfm::evaluate_contiguous(y.data(), n, va * 3 + va);
  for (index_t i = 0; i < n; ++i)
    CHECK_EQ(y[static_cast<std::size_t>(i)], 4 * a[static_cast<std::size_t>(i)]);
  // In place: dst is the leaf itself (element for element).
  std::vector<float> x(1001);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.25f;
  const flat<float> vx(x.data(), tfm::dyn_shape<1>(static_cast<index_t>(x.size())));
  tfm::evaluate_contiguous(x.data(), static_cast<index_t>(x.size()), vx * 2.0f - 1.0f);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(x[i] == static_cast<float>(i) * 0.5f - 1.0f);
}
