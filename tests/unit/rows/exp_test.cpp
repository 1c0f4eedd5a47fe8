// simd::exp_nonpositive (the exp of softmax, logsumexp, cross-entropy and attention) against
// std::exp in double over a sweep of float bit patterns in [-110, 0], plus the special values.
// Limits: <= 2 ulp where exp(x) is a normal float; absolute error < FLT_MIN below that.
#include "typeformer/backend/cpu/simd.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

namespace simd = tfm::simd;
using B = simd::batch<float>;
constexpr int w = simd::width<float>;

/// exp_nonpositive over xs (padded with 0 to a whole number of batches).
std::vector<float> apply(std::vector<float> xs) {
  const std::size_t n = xs.size();
  xs.resize((n + w - 1) / w * w, 0.0f);
  std::vector<float> ys(xs.size());
  for (std::size_t i = 0; i < xs.size(); i += w)
    simd::store(ys.data() + i, simd::exp_nonpositive(simd::load(xs.data() + i)));
  ys.resize(n);
  return ys;
}

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

TEST_CASE("exp_nonpositive: within 2 ulp of exp over [-110, 0]") {
  // Every 61st bit pattern from -0 (0x80000000) to -110 (0xC2DC0000): ~17.6 M values covering
  // every binade, the normal/denormal boundary near -87.3 and the flush to 0 near -103.9.
  std::vector<float> xs;
  for (std::uint32_t u = 0x80000000u; u <= 0xC2DC0000u; u += 61) xs.push_back(from_bits(u));
  xs.push_back(-87.3365447f);  // exp is FLT_MIN here
  xs.push_back(-110.0f);
  const std::vector<float> ys = apply(xs);
  double worst_ulp = 0, worst_abs_tiny = 0;
  float worst_x = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double e = std::exp(static_cast<double>(xs[i]));
    const double err = std::fabs(static_cast<double>(ys[i]) - e);
    if (e >= std::numeric_limits<float>::min()) {
      const float ef = static_cast<float>(e);
      const double ulp =
          static_cast<double>(std::nextafter(ef, std::numeric_limits<float>::infinity())) - ef;
      if (err / ulp > worst_ulp) {
        worst_ulp = err / ulp;
        worst_x = xs[i];
      }
    } else {
      worst_abs_tiny = std::max(worst_abs_tiny, err);
    }
  }
  MESSAGE("exp_nonpositive over ", xs.size(), " inputs: worst ", worst_ulp, " ulp at x = ", worst_x,
          "; worst absolute error below FLT_MIN ", worst_abs_tiny);
  CHECK(worst_ulp <= 2.0);
  CHECK(worst_abs_tiny < static_cast<double>(std::numeric_limits<float>::min()));
}

TEST_CASE("exp_nonpositive: exact and special values") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> ys =
      apply({0.0f, -0.0f, -inf, -1e30f, -200.0f, std::numeric_limits<float>::quiet_NaN()});
  CHECK(ys[0] == 1.0f);
  CHECK(ys[1] == 1.0f);
  CHECK(ys[2] == 0.0f);  // masked entries of a softmax row contribute exactly nothing
  CHECK(ys[3] == 0.0f);
  CHECK(ys[4] == 0.0f);
  CHECK(std::isnan(ys[5]));
}

TEST_CASE("exp_nonpositive: double batches match std::exp") {
  using BD = simd::batch<double>;
  constexpr int wd = simd::width<double>;
  double xs[wd], ys[wd];
  for (int i = 0; i < wd; ++i) xs[i] = -0.37 * (i + 1) * (i + 1);
  simd::store(ys, simd::exp_nonpositive(BD(simd::load(xs))));
  for (int i = 0; i < wd; ++i) CHECK(ys[i] == doctest::Approx(std::exp(xs[i])).epsilon(1e-14));
}
