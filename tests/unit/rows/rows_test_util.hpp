// Helpers for the row-kernel tests: NMSE against the double-accumulating reference, checks that
// infinities agree exactly, random rows with printed seeds, strided buffers.
#pragma once

#include "typeformer/core/index.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace rows_test {

using tfm::index_t;

inline std::uint64_t seed() {
  static const std::uint64_t s = std::random_device{}();
  return s;
}

/// Sizes from TESTING.md: SIMD widths +-1 and larger, plus transformer widths.
inline const std::vector<index_t> sizes = {1,  2,  3,  7,   8,   15,   16,   17,
                                           31, 33, 63, 127, 129, 1023, 4096, 32000};

/// Result of comparing `got` with `want` over `rows` rows of n (strides ld_got, ld_want).
struct comparison {
  double nmse = 0;           // sum (a - b)^2 / sum b^2 over entries where b is finite
  double max_abs = 0;        // max |a - b| over those entries
  index_t nan = 0;           // NaNs in got
  index_t inf_mismatch = 0;  // entries where exactly one side is infinite, or signs differ
  index_t gap_changed = 0;   // elements between rows (ld > n) that were modified
};

template <class T>
comparison compare(const T* got, index_t ld_got, const T* want, index_t ld_want, index_t rows,
                   index_t n) {
  comparison c;
  double num = 0, den = 0;
  for (index_t r = 0; r < rows; ++r) {
    for (index_t i = 0; i < n; ++i) {
      const double a = got[r * ld_got + i], b = want[r * ld_want + i];
      if (std::isnan(a)) {
        ++c.nan;
        continue;
      }
      if (std::isinf(a) || std::isinf(b)) {
        if (a != b) ++c.inf_mismatch;
        continue;
      }
      num += (a - b) * (a - b);
      den += b * b;
      c.max_abs = std::fmax(c.max_abs, std::fabs(a - b));
    }
  }
  c.nmse = den > 0 ? num / den : num;
  return c;
}

/// A strided buffer of rows x ld with the gap after each row filled with a sentinel.
template <class T>
struct strided {
  index_t rows, n, ld;
  std::vector<T> data;
  strided(index_t rows_, index_t n_, index_t ld_, T sentinel = T(-777))
      : rows(rows_), n(n_), ld(ld_), data(static_cast<std::size_t>(rows_ * ld_ + 1), sentinel) {}
  T* row(index_t r) { return data.data() + r * ld; }
  index_t gap_changed(T sentinel = T(-777)) const {
    index_t k = 0;
    for (index_t r = 0; r < rows; ++r) {
      for (index_t i = n; i < ld; ++i) k += data[r * ld + i] != sentinel;
    }
    return k + (data.back() != sentinel);
  }
};

template <class T>
void fill_normal(std::vector<T>& v, std::mt19937_64& g, double mean, double sd) {
  std::normal_distribution<double> d(mean, sd);
  for (T& x : v) x = static_cast<T>(d(g));
}

}  // namespace rows_test
