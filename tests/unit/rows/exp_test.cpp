// simd::exp_nonpositive (the exp of softmax, logsumexp, cross-entropy and attention) and
// simd::exp (the expressions' exp, sigmoid, silu and gelu) against std::exp in double over
// sweeps of float bit patterns ([-110, 0], and [-110, 89] for simd::exp), plus the special
// values. Limits: <= 2 ulp where exp(x) is a normal float; absolute error < FLT_MIN below that;
// +inf where exp(x) exceeds FLT_MAX.
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

/// exp_nonpositive (or, with `full`, simd::exp) over xs (padded with 0 to whole batches).
std::vector<float> apply(std::vector<float> xs, bool full = false) {
  const std::size_t n = xs.size();
  xs.resize((n + w - 1) / w * w, 0.0f);
  std::vector<float> ys(xs.size());
  for (std::size_t i = 0; i < xs.size(); i += w) {
    const B x = simd::load(xs.data() + i);
    simd::store(ys.data() + i, full ? simd::exp(x) : simd::exp_nonpositive(x));
  }
  ys.resize(n);
  return ys;
}

struct exp_errors {
  double worst_ulp = 0, worst_abs_tiny = 0;
  float worst_x = 0;
  int wrong_overflow = 0;  // results that should be +inf and are not, or the reverse
};

/// Error of ys = exp(xs) against std::exp in double.
exp_errors measure(const std::vector<float>& xs, const std::vector<float>& ys) {
  exp_errors r;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double e = std::exp(static_cast<double>(xs[i]));
    if (e > static_cast<double>(std::numeric_limits<float>::max())) {
      // Correct rounding gives +inf only from FLT_MAX + half an ulp up; the slack of 2 ulp
      // accepts FLT_MAX there.
      if (!std::isinf(ys[i]) && !(ys[i] == std::numeric_limits<float>::max() &&
                                  e < 1.0000003 * std::numeric_limits<float>::max()))
        ++r.wrong_overflow;
      continue;
    }
    if (std::isinf(ys[i])) {
      ++r.wrong_overflow;
      continue;
    }
    const double err = std::fabs(static_cast<double>(ys[i]) - e);
    if (e >= std::numeric_limits<float>::min()) {
      const float ef = static_cast<float>(e);
      const double ulp =
          static_cast<double>(std::nextafter(ef, std::numeric_limits<float>::infinity())) - ef;
      if (err / ulp > r.worst_ulp) {
        r.worst_ulp = err / ulp;
        r.worst_x = xs[i];
      }
    } else {
      r.worst_abs_tiny = std::max(r.worst_abs_tiny, err);
    }
  }
  return r;
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
  const exp_errors r = measure(xs, apply(xs));
  MESSAGE("exp_nonpositive over ", xs.size(), " inputs: worst ", r.worst_ulp,
          " ulp at x = ", r.worst_x, "; worst absolute error below FLT_MIN ", r.worst_abs_tiny);
  CHECK(r.worst_ulp <= 2.0);
  CHECK(r.worst_abs_tiny < static_cast<double>(std::numeric_limits<float>::min()));
  CHECK(r.wrong_overflow == 0);
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

TEST_CASE("simd::exp: within 2 ulp of exp over [-110, 89], +inf above ln FLT_MAX") {
  // Every 61st bit pattern from -0 to -110 and from +0 to 89 (0x42B20000), and the overflow
  // boundary densely: ~35 M values.
  std::vector<float> xs;
  for (std::uint32_t u = 0x80000000u; u <= 0xC2DC0000u; u += 61) xs.push_back(from_bits(u));
  for (std::uint32_t u = 0x00000000u; u <= 0x42B20000u; u += 61) xs.push_back(from_bits(u));
  for (float x = 88.70f; x < 88.76f; x = std::nextafter(x, 100.0f)) xs.push_back(x);
  xs.push_back(88.7228394f);  // just above ln FLT_MAX: +inf
  xs.push_back(88.7228317f);  // just below: FLT_MAX * (1 - 7e-6)
  const exp_errors r = measure(xs, apply(xs, true));
  MESSAGE("simd::exp over ", xs.size(), " inputs: worst ", r.worst_ulp, " ulp at x = ", r.worst_x,
          "; worst absolute error below FLT_MIN ", r.worst_abs_tiny, "; wrong overflows ",
          r.wrong_overflow);
  CHECK(r.worst_ulp <= 2.0);
  CHECK(r.worst_abs_tiny < static_cast<double>(std::numeric_limits<float>::min()));
  CHECK(r.wrong_overflow == 0);
}

TEST_CASE("simd::exp: exact and special values") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> ys = apply(
      {0.0f, -0.0f, -inf, inf, -1e30f, 1e30f, 89.0f, 100.0f,
       std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(), 1.0f},
      true);
  CHECK(ys[0] == 1.0f);
  CHECK(ys[1] == 1.0f);
  CHECK(ys[2] == 0.0f);
  CHECK(ys[3] == inf);
  CHECK(ys[4] == 0.0f);
  CHECK(ys[5] == inf);
  CHECK(ys[6] == inf);
  CHECK(ys[7] == inf);
  CHECK(std::isnan(ys[8]));
  CHECK(std::isnan(ys[9]));
  CHECK(ys[10] == doctest::Approx(2.718281828).epsilon(2e-7));
}

TEST_CASE("simd::exp: double batches match std::exp") {
  using BD = simd::batch<double>;
  constexpr int wd = simd::width<double>;
  double xs[wd], ys[wd];
  for (int i = 0; i < wd; ++i) xs[i] = 0.9 * (i + 1) * (i % 2 ? 1 : -1);
  simd::store(ys, simd::exp(BD(simd::load(xs))));
  for (int i = 0; i < wd; ++i) CHECK(ys[i] == doctest::Approx(std::exp(xs[i])).epsilon(1e-14));
}
