// Shared helpers of the gemm tests: operand storage with leading-dimension padding, seeded random
// fill, the NMSE metric of TESTING.md, and one case run through the cpu kernel and the reference.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/reference/gemm.hpp"

namespace gemm_test {

using tfm::index_t;

/// Seed of a test: TFM_TEST_SEED from the environment when set, else the given default.
inline std::uint64_t seed_or(std::uint64_t fallback) {
  if (const char* s = std::getenv("TFM_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return fallback;
}

template <class T>
void fill_uniform(std::vector<T>& v, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> d(-1.0, 1.0);
  for (auto& x : v) x = static_cast<T>(d(rng));
}

/// NMSE = sum (a-b)^2 / sum b^2 over the M x N region of C (b the reference); 0 when both are
/// zero, +inf when any value is not finite.
template <class T>
double nmse(const T* got, const T* want, index_t M, index_t N, index_t ldc) {
  double num = 0, den = 0;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      const double a = got[i * ldc + j], b = want[i * ldc + j];
      if (!std::isfinite(a) || !std::isfinite(b)) return std::numeric_limits<double>::infinity();
      num += (a - b) * (a - b);
      den += b * b;
    }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return num / den;
}

/// Tolerances: the TESTING.md matmul bound, and the rounding bound expected of a K-term sum.
template <class T>
constexpr double nmse_limit() {
  return sizeof(T) == 4 ? 5e-4 : 1e-20;
}
template <class T>
constexpr double nmse_expected() {
  return sizeof(T) == 4 ? 1e-8 : 1e-20;
}

struct gemm_case {
  bool ta = false, tb = false;
  index_t M = 0, N = 0, K = 0;
  index_t pad_a = 0, pad_b = 0, pad_c = 0;  // extra elements per stored row
  double alpha = 1, beta = 0;
  bool nan_c = false;  // fill C with NaN (only meaningful with beta == 0)
};

inline std::string describe(const gemm_case& c) {
  return std::string("ta=") + (c.ta ? "1" : "0") + " tb=" + (c.tb ? "1" : "0") +
         " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         " pads=" + std::to_string(c.pad_a) + "," + std::to_string(c.pad_b) + "," +
         std::to_string(c.pad_c) + " alpha=" + std::to_string(c.alpha) +
         " beta=" + std::to_string(c.beta) + (c.nan_c ? " C=NaN" : "");
}

template <class T>
struct operands {
  index_t lda, ldb, ldc;
  std::vector<T> a, b, c;
};

/// Random operands for a case; stored shapes follow the transposition flags.
template <class T>
operands<T> make_operands(const gemm_case& c, std::mt19937_64& rng) {
  operands<T> o;
  const index_t ra = c.ta ? c.K : c.M, ca = c.ta ? c.M : c.K;
  const index_t rb = c.tb ? c.N : c.K, cb = c.tb ? c.K : c.N;
  o.lda = ca + c.pad_a;
  o.ldb = cb + c.pad_b;
  o.ldc = c.N + c.pad_c;
  o.a.resize(static_cast<std::size_t>(std::max<index_t>(1, ra * o.lda)));
  o.b.resize(static_cast<std::size_t>(std::max<index_t>(1, rb * o.ldb)));
  o.c.resize(static_cast<std::size_t>(std::max<index_t>(1, c.M * o.ldc)));
  fill_uniform(o.a, rng);
  fill_uniform(o.b, rng);
  fill_uniform(o.c, rng);
  if (c.nan_c)
    for (index_t i = 0; i < c.M; ++i)
      for (index_t j = 0; j < c.N; ++j) o.c[i * o.ldc + j] = std::numeric_limits<T>::quiet_NaN();
  return o;
}

/// Runs the case through tfm::cpu_kernels::gemm and the reference; returns the NMSE and checks
/// that C's padding is untouched.
template <class T>
double run_case(const gemm_case& c, std::mt19937_64& rng) {
  operands<T> o = make_operands<T>(c, rng);
  std::vector<T> want = o.c, got = o.c;
  tfm::reference_kernels::gemm<T>(c.ta, c.tb, c.M, c.N, c.K, T(c.alpha), o.a.data(), o.lda,
                                  o.b.data(), o.ldb, T(c.beta), want.data(), o.ldc);
  tfm::cpu_kernels::gemm<T>(c.ta, c.tb, c.M, c.N, c.K, T(c.alpha), o.a.data(), o.lda, o.b.data(),
                            o.ldb, T(c.beta), got.data(), o.ldc);
  for (index_t i = 0; i < c.M; ++i)
    for (index_t j = c.N; j < o.ldc; ++j) {
      const std::size_t at = static_cast<std::size_t>(i * o.ldc + j);
      if (at < got.size() && std::memcmp(&got[at], &o.c[at], sizeof(T)) != 0) {
        FAIL_CHECK("padding of C was written at row " << i << " column " << j);
        return std::numeric_limits<double>::infinity();
      }
    }
  return nmse(got.data(), want.data(), c.M, c.N, o.ldc);
}

/// The size sweep of TESTING.md (up to the GEMM-relevant 129).
inline const std::vector<index_t>& sweep_sizes() {
  static const std::vector<index_t> s = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 127, 129};
  return s;
}

}  // namespace gemm_test
