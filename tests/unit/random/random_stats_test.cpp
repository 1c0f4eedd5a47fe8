// Moments of the uniform and normal draws over 10^6 samples against their exact values, within
// bounds of several standard errors (the seeds are printed; the bounds are 6 sigma so a correct
// generator fails with probability ~1e-9 per check).
#include "typeformer/core/random.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace {
std::uint64_t seed_for_test() {
  static const std::uint64_t s =
      (static_cast<std::uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  return s;
}

struct moments {
  double mean = 0, var = 0, m3 = 0, m4 = 0, min = INFINITY, max = -INFINITY;
};

template <class T>
moments compute(const std::vector<T>& v) {
  moments m;
  for (T x : v) {
    m.mean += x;
    m.min = std::fmin(m.min, x);
    m.max = std::fmax(m.max, x);
  }
  m.mean /= static_cast<double>(v.size());
  for (T x : v) {
    const double d = x - m.mean;
    m.var += d * d;
    m.m3 += d * d * d;
    m.m4 += d * d * d * d;
  }
  m.var /= static_cast<double>(v.size());
  m.m3 /= static_cast<double>(v.size());
  m.m4 /= static_cast<double>(v.size());
  return m;
}

constexpr std::size_t N = 1000000;
constexpr double z = 6.0;  // bound in standard errors
}  // namespace

TEST_CASE_TEMPLATE("uniform fill: moments of U[0,1)", T, float, double) {
  const std::uint64_t seed = seed_for_test();
  MESSAGE("seed = ", seed);
  std::vector<T> v(N);
  tfm::fill_uniform(v.data(), static_cast<tfm::index_t>(N), seed, 0);
  const moments m = compute(v);
  const double n = static_cast<double>(N);
  CHECK(m.min >= 0.0);
  CHECK(m.max < 1.0);
  CHECK(std::fabs(m.mean - 0.5) < z * std::sqrt(1.0 / 12 / n));
  // Var of the sample variance of U(0,1): (mu4 - sigma^4) / n = (1/80 - 1/144) / n.
  CHECK(std::fabs(m.var - 1.0 / 12) < z * std::sqrt((1.0 / 80 - 1.0 / 144) / n));
  // Equidistribution: 100 bins, chi-square with 99 degrees of freedom (mean 99, sd 14).
  std::vector<double> bins(100, 0.0);
  for (T x : v) bins[static_cast<std::size_t>(x * 100)] += 1;
  double chi2 = 0;
  for (double b : bins) chi2 += (b - n / 100) * (b - n / 100) / (n / 100);
  CHECK(chi2 < 99 + z * 14.07);
}

TEST_CASE_TEMPLATE("normal fill: moments of N(0,1)", T, float, double) {
  const std::uint64_t seed = seed_for_test() + 1;
  MESSAGE("seed = ", seed);
  std::vector<T> v(N);
  tfm::fill_normal(v.data(), static_cast<tfm::index_t>(N), seed, 0);
  const moments m = compute(v);
  const double n = static_cast<double>(N);
  CHECK(std::fabs(m.mean) < z * std::sqrt(1.0 / n));
  CHECK(std::fabs(m.var - 1.0) < z * std::sqrt(2.0 / n));  // Var(s^2) = 2 / n
  CHECK(std::fabs(m.m3) < z * std::sqrt(15.0 / n));        // Var(m3) ~ 15 / n
  CHECK(std::fabs(m.m4 - 3.0) < z * std::sqrt(96.0 / n));  // Var(m4) ~ (105 - 9) / n
  // Tail mass beyond 2 sigma: 2 * (1 - Phi(2)) = 0.0455003.
  double tail = 0;
  for (T x : v) tail += std::fabs(x) > 2;
  const double p = 0.0455002638963584;
  CHECK(std::fabs(tail / n - p) < z * std::sqrt(p * (1 - p) / n));
  // Shifted and scaled fill.
  std::vector<T> w(N);
  tfm::fill_normal(w.data(), static_cast<tfm::index_t>(N), seed, 0, T(3), T(0.5));
  const moments mw = compute(w);
  CHECK(std::fabs(mw.mean - 3.0) < z * 0.5 * std::sqrt(1.0 / n));
  CHECK(std::fabs(mw.var - 0.25) < z * 0.25 * std::sqrt(2.0 / n));
}

TEST_CASE("normal draws: consecutive elements are uncorrelated (both Box-Muller outputs)") {
  const std::uint64_t seed = seed_for_test() + 2;
  MESSAGE("seed = ", seed);
  std::vector<float> v(N);
  tfm::fill_normal(v.data(), static_cast<tfm::index_t>(N), seed, 0);
  double c1 = 0, c2 = 0;  // lag-1 products of cos/sin partners, and across pairs
  for (std::size_t i = 0; i + 1 < N; i += 2) c1 += static_cast<double>(v[i]) * v[i + 1];
  for (std::size_t i = 1; i + 1 < N; i += 2) c2 += static_cast<double>(v[i]) * v[i + 1];
  const double half = static_cast<double>(N / 2);
  CHECK(std::fabs(c1 / half) < z / std::sqrt(half));
  CHECK(std::fabs(c2 / half) < z / std::sqrt(half));
}

TEST_CASE("rng: uniform, normal and randint moments; randint is unbiased") {
  const std::uint64_t seed = seed_for_test() + 3;
  MESSAGE("seed = ", seed);
  tfm::rng g(seed);
  const double n = 1e6;
  double su = 0, sn = 0, sn2 = 0;
  for (int i = 0; i < 1000000; ++i) {
    su += g.uniform();
    const double x = g.normal();
    sn += x;
    sn2 += x * x;
  }
  CHECK(std::fabs(su / n - 0.5) < z * std::sqrt(1.0 / 12 / n));
  CHECK(std::fabs(sn / n) < z * std::sqrt(1.0 / n));
  CHECK(std::fabs(sn2 / n - 1.0) < z * std::sqrt(2.0 / n));
  // randint(6): chi-square with 5 degrees of freedom (mean 5, sd 3.16).
  std::vector<double> counts(6, 0.0);
  for (int i = 0; i < 600000; ++i) counts[g.randint(6)] += 1;
  double chi2 = 0;
  for (double c : counts) chi2 += (c - 1e5) * (c - 1e5) / 1e5;
  CHECK(chi2 < 5 + z * 3.17);
  // n = 3 * 2^30 is where a plain modulo would favour small values by a factor 2: P(x < 2^30)
  // would be 1/2 instead of 1/3.
  const std::uint64_t big = 3ull << 30;
  double low = 0;
  for (int i = 0; i < 300000; ++i) low += g.randint(big) < (1ull << 30);
  CHECK(std::fabs(low / 3e5 - 1.0 / 3) < z * std::sqrt(2.0 / 9 / 3e5));
  // n above 2^32 takes the 64-bit path.
  const std::uint64_t huge = (1ull << 40) + 12345;
  double mean = 0;
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t r = g.randint(huge);
    REQUIRE(r < huge);
    mean += static_cast<double>(r) / static_cast<double>(huge);
  }
  CHECK(std::fabs(mean / 1e5 - 0.5) < z * std::sqrt(1.0 / 12 / 1e5));
  CHECK(g.randint(1) == 0);
  CHECK_THROWS_AS(g.randint(0), tfm::value_error);
}
