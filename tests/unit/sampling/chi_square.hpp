// Pearson's chi-square goodness-of-fit test and its p-value, for the sampling tests.
//   p-value = Q(df / 2, x / 2), the regularized upper incomplete gamma function, evaluated by its
//   power series for x < a + 1 and by its continued fraction (modified Lentz) otherwise
//   (Abramowitz & Stegun 6.5.29 and 6.5.31).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace sampling_test {

inline double upper_gamma_q(double a, double x) {
  if (x <= 0) return 1.0;
  const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1) {  // P(a, x) = e^-x x^a / Gamma(a) * sum x^n / (a (a+1) ... (a+n))
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 10000 && std::abs(term) > 1e-17 * std::abs(sum); ++n) {
      term *= x / (a + n);
      sum += term;
    }
    return 1.0 - std::exp(log_prefix) * sum;
  }
  // Q(a, x) = e^-x x^a / Gamma(a) * 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / ...))
  const double tiny = 1e-300;
  double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (int i = 1; i < 10000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1) < 1e-16) break;
  }
  return std::exp(log_prefix) * h;
}

struct chi_square_result {
  double statistic = 0;
  std::int64_t df = 0;
  double p_value = 1;
};

/// observed counts against expected probabilities (bins with expected probability 0 must have
/// 0 counts; they are left out, and a count there makes the statistic infinite).
inline chi_square_result chi_square(const std::vector<std::int64_t>& observed,
                                    const std::vector<double>& expected_p) {
  std::int64_t n = 0;
  for (auto c : observed) n += c;
  chi_square_result r;
  std::int64_t bins = 0;
  for (std::size_t i = 0; i < observed.size(); ++i) {
    if (expected_p[i] == 0) {
      if (observed[i] != 0) r.statistic = INFINITY;
      continue;
    }
    const double e = expected_p[i] * static_cast<double>(n);
    const double d = static_cast<double>(observed[i]) - e;
    r.statistic += d * d / e;
    ++bins;
  }
  r.df = bins - 1;
  r.p_value = r.df > 0 ? upper_gamma_q(0.5 * static_cast<double>(r.df), 0.5 * r.statistic) : 1.0;
  if (std::isinf(r.statistic)) r.p_value = 0;
  return r;
}

}  // namespace sampling_test
