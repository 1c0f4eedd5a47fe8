// tests/unit/ops/ops_test_util.hpp
//
// Independent double-precision oracles for the tensor-level ops, written from the textbook
// definitions with plain loops over std::vector (no tfm code is used to compute an expected
// value):
//
//   reduce_oracle(op, v, ext, axis)   one reduction along `axis` of a row-major array
//   matmul_oracle(a, ea, b, eb)       naive triple loop with NumPy batch broadcasting
//   softmax_oracle / log_softmax_oracle / layer_norm_oracle / rms_norm_oracle  along the last axis
//
// Plus small conveniences: random tensors filled from tfm_test::rng (std::mt19937), the sweep of
// sizes from TESTING.md, and dtype names for messages.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tfm_test.hpp"

namespace ops_test {

using tfm::index_t;
using dims = std::vector<index_t>;

/// The TESTING.md size sweep (0 .. 1023); large sizes are added by the tests that need them.
inline const std::vector<index_t> sweep_sizes = {0,  1,  2,  3,  7,   8,   15,  16,
                                                 17, 31, 33, 63, 127, 129, 1023};

inline index_t product(const dims& e) {
  index_t n = 1;
  for (index_t x : e) n *= x;
  return n;
}

inline std::string dims_str(const dims& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < e.size(); ++i) s += (i ? ", " : "") + std::to_string(e[i]);
  return s + ")";
}

/// Elements of x as doubles (row-major).
template <class X>
std::vector<double> doubles(const X& x) {
  std::vector<double> d;
  for (auto v : tfm_test::to_vector(x)) d.push_back(tfm_test::to_double(v));
  return d;
}

/// Fills a tensor or view with uniform values in [lo, hi] from g.
template <class X>
void fill_random(X&& x, std::mt19937& g, double lo = -1, double hi = 1) {
  using T = std::remove_cv_t<typename std::remove_cvref_t<X>::element_type>;
  tfm_test::from_vector(x,
                        tfm_test::random_vector<T>(static_cast<std::size_t>(x.size()), g, lo, hi));
}

// ---- reductions ------------------------------------------------------------------------------

enum class red { sum, mean, max, min, argmax, argmin, logsumexp };

inline const char* red_name(red k) {
  switch (k) {
    case red::sum:
      return "sum";
    case red::mean:
      return "mean";
    case red::max:
      return "max";
    case red::min:
      return "min";
    case red::argmax:
      return "argmax";
    case red::argmin:
      return "argmin";
    case red::logsumexp:
      return "logsumexp";
  }
  return "?";
}

/// Reduction of one sequence (NumPy semantics; NaN propagates, arg* give the first NaN or the
/// first extremum; logsumexp by the max-shift formula; mean of nothing is NaN).
inline double reduce_seq(red k, const std::vector<double>& s) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::size_t n = s.size();
  switch (k) {
    case red::sum:
    case red::mean: {
      long double acc = 0;  // more precision than the code under test uses
      for (double x : s) acc += x;
      return k == red::sum ? static_cast<double>(acc)
                           : (n ? static_cast<double>(acc / static_cast<long double>(n)) : nan);
    }
    case red::max:
    case red::min: {
      double best = s.at(0);
      for (double x : s) {
        if (std::isnan(x)) return nan;
        if (k == red::max ? x > best : x < best) best = x;
      }
      return best;
    }
    case red::argmax:
    case red::argmin: {
      std::size_t bi = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (std::isnan(s[i])) return static_cast<double>(i);
        if (k == red::argmax ? s[i] > s[bi] : s[i] < s[bi]) bi = i;
      }
      (void)s.at(0);
      return static_cast<double>(bi);
    }
    case red::logsumexp: {
      double m = -inf;
      for (double x : s) {
        if (std::isnan(x)) return nan;
        m = std::max(m, x);
      }
      if (std::isinf(m)) return m;
      long double acc = 0;
      for (double x : s) acc += std::exp(static_cast<long double>(x - m));
      return m + static_cast<double>(std::log(acc));
    }
  }
  return nan;
}

/// Reduction along `axis` of a row-major array with extents `ext`; output row-major over the
/// remaining axes (keepdims does not change the element order).
inline std::vector<double> reduce_oracle(red k, const std::vector<double>& v, const dims& ext,
                                         std::size_t axis) {
  index_t outer = 1, inner = 1, n = ext[axis];
  for (std::size_t a = 0; a < axis; ++a) outer *= ext[a];
  for (std::size_t a = axis + 1; a < ext.size(); ++a) inner *= ext[a];
  std::vector<double> out;
  std::vector<double> s(static_cast<std::size_t>(n));
  for (index_t o = 0; o < outer; ++o)
    for (index_t i = 0; i < inner; ++i) {
      for (index_t r = 0; r < n; ++r)
        s[static_cast<std::size_t>(r)] = v[static_cast<std::size_t>((o * n + r) * inner + i)];
      out.push_back(reduce_seq(k, s));
    }
  return out;
}

// ---- matmul ----------------------------------------------------------------------------------

/// NumPy matmul of a (batch_a..., M, K) and b (batch_b..., K, N) in double: batch axes aligned
/// on the right and broadcast where one side has extent 1 or lacks the axis.
inline std::vector<double> matmul_oracle(const std::vector<double>& a, const dims& ea,
                                         const std::vector<double>& b, const dims& eb,
                                         dims* out_ext = nullptr) {
  const std::size_t ra = ea.size(), rb = eb.size();
  const index_t M = ea[ra - 2], K = ea[ra - 1], N = eb[rb - 1];
  REQUIRE(eb[rb - 2] == K);
  const std::size_t nb = std::max(ra, rb) - 2;
  dims batch(nb), ba(nb, 1), bb(nb, 1);
  for (std::size_t k = 0; k < nb; ++k) {
    if (k + ra >= nb + 2) ba[k] = ea[k + ra - nb - 2];
    if (k + rb >= nb + 2) bb[k] = eb[k + rb - nb - 2];
    REQUIRE((ba[k] == bb[k] || ba[k] == 1 || bb[k] == 1));
    batch[k] = std::max(ba[k], bb[k]);
    if (ba[k] == 0 || bb[k] == 0) batch[k] = 0;
  }
  const index_t nbatch = product(batch);
  std::vector<double> c(static_cast<std::size_t>(nbatch * M * N), 0.0);
  for (index_t bi = 0; bi < nbatch; ++bi) {
    // Batch index -> per-operand matrix number (row-major over each operand's batch extents).
    index_t r = bi, ia = 0, ib = 0, sa = 1, sb = 1;
    for (std::size_t k = nb; k-- > 0;) {
      const index_t i = r % batch[k];
      r /= batch[k];
      ia += (ba[k] == 1 ? 0 : i) * sa;
      ib += (bb[k] == 1 ? 0 : i) * sb;
      sa *= ba[k];
      sb *= bb[k];
    }
    const double* pa = a.data() + ia * M * K;
    const double* pb = b.data() + ib * K * N;
    double* pc = c.data() + bi * M * N;
    for (index_t m = 0; m < M; ++m)
      for (index_t n = 0; n < N; ++n) {
        long double acc = 0;
        for (index_t kk = 0; kk < K; ++kk)
          acc += static_cast<long double>(pa[m * K + kk]) * pb[kk * N + n];
        pc[m * N + n] = static_cast<double>(acc);
      }
  }
  if (out_ext) {
    *out_ext = batch;
    out_ext->push_back(M);
    out_ext->push_back(N);
  }
  return c;
}

// ---- row normalisations (last axis, rows of n) -----------------------------------------------

/// softmax(x)_i = exp(x_i - max) / sum_j exp(x_j - max); a row of only -inf gives zeros.
inline std::vector<double> softmax_oracle(const std::vector<double>& x, index_t n, bool log) {
  std::vector<double> y(x.size());
  const double inf = std::numeric_limits<double>::infinity();
  if (n == 0) return y;
  for (std::size_t r0 = 0; r0 < x.size(); r0 += static_cast<std::size_t>(n)) {
    double m = -inf;
    for (index_t i = 0; i < n; ++i) m = std::max(m, x[r0 + i]);
    if (m == -inf) {
      for (index_t i = 0; i < n; ++i) y[r0 + i] = log ? -inf : 0.0;
      continue;
    }
    long double s = 0;
    for (index_t i = 0; i < n; ++i) s += std::exp(static_cast<long double>(x[r0 + i] - m));
    for (index_t i = 0; i < n; ++i) {
      const long double d = static_cast<long double>(x[r0 + i] - m);
      y[r0 + i] = static_cast<double>(log ? d - std::log(s) : std::exp(d) / s);
    }
  }
  return y;
}

/// softmax / log_softmax along `axis` of a row-major array with extents `ext`.
inline std::vector<double> softmax_axis_oracle(const std::vector<double>& x, const dims& ext,
                                               std::size_t axis, bool log) {
  index_t outer = 1, inner = 1, n = ext[axis];
  for (std::size_t a = 0; a < axis; ++a) outer *= ext[a];
  for (std::size_t a = axis + 1; a < ext.size(); ++a) inner *= ext[a];
  std::vector<double> y(x.size()), line(static_cast<std::size_t>(n));
  for (index_t o = 0; o < outer; ++o)
    for (index_t i = 0; i < inner; ++i) {
      auto at = [&](index_t r) { return static_cast<std::size_t>((o * n + r) * inner + i); };
      for (index_t r = 0; r < n; ++r) line[static_cast<std::size_t>(r)] = x[at(r)];
      const auto out = softmax_oracle(line, n, log);
      for (index_t r = 0; r < n; ++r) y[at(r)] = out[static_cast<std::size_t>(r)];
    }
  return y;
}

/// LayerNorm (arXiv:1607.06450), biased variance; gamma/beta empty = 1/0.
inline std::vector<double> layer_norm_oracle(const std::vector<double>& x, index_t n,
                                             const std::vector<double>& gamma,
                                             const std::vector<double>& beta, double eps) {
  std::vector<double> y(x.size());
  if (n == 0) return y;
  for (std::size_t r0 = 0; r0 < x.size(); r0 += static_cast<std::size_t>(n)) {
    long double s = 0;
    for (index_t i = 0; i < n; ++i) s += x[r0 + i];
    const long double mean = s / n;
    long double v = 0;
    for (index_t i = 0; i < n; ++i) v += (x[r0 + i] - mean) * (x[r0 + i] - mean);
    const long double rstd = 1.0L / std::sqrt(v / n + eps);
    for (index_t i = 0; i < n; ++i) {
      long double t = (x[r0 + i] - mean) * rstd;
      if (!gamma.empty()) t *= gamma[static_cast<std::size_t>(i)];
      if (!beta.empty()) t += beta[static_cast<std::size_t>(i)];
      y[r0 + i] = static_cast<double>(t);
    }
  }
  return y;
}

/// RMSNorm (arXiv:1910.07467); weight empty = 1.
inline std::vector<double> rms_norm_oracle(const std::vector<double>& x, index_t n,
                                           const std::vector<double>& w, double eps) {
  std::vector<double> y(x.size());
  if (n == 0) return y;
  for (std::size_t r0 = 0; r0 < x.size(); r0 += static_cast<std::size_t>(n)) {
    long double s = 0;
    for (index_t i = 0; i < n; ++i) s += static_cast<long double>(x[r0 + i]) * x[r0 + i];
    const long double rstd = 1.0L / std::sqrt(s / n + eps);
    for (index_t i = 0; i < n; ++i) {
      long double t = x[r0 + i] * rstd;
      if (!w.empty()) t *= w[static_cast<std::size_t>(i)];
      y[r0 + i] = static_cast<double>(t);
    }
  }
  return y;
}

/// Each value rounded to storage type T the way a kernel that computes in float/double and
/// rounds once stores it (halves: double -> float -> half, matching tfm_test::from_double).
template <class T>
std::vector<double> rounded_to(const std::vector<double>& v) {
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    r[i] = tfm_test::to_double(tfm_test::from_double<T>(v[i]));
  return r;
}

}  // namespace ops_test
