// tests/support/tfm_test.hpp
//
// Helpers shared by the unit tests. They are written independently of the code under test: the
// random numbers come from std::mt19937 (not tfm's RNG), and tensors are read and written through
// data() + strides with plain index arithmetic (not through tfm's evaluation machinery).
//
//   seed()                 TFM_TEST_SEED from the environment, else default_seed; printed with
//                          doctest MESSAGE so that every random test names its seed.
//   rng(salt)              a std::mt19937 seeded from seed() and a per-test salt.
//   random_vector<T>(...)  uniform values in [lo, hi] (integers: uniform ints), stored as T.
//   to_vector(x)           the elements of a tensor or view in row-major order.
//   from_vector(x, v)      writes v (row-major) into a tensor or view through its strides.
//   make_tensor<Tensor>(shape, v), random_tensor<Tensor>(shape, rng, lo, hi)   new tensors.
//   to_double / from_double  element <-> double (bf16/f16 through float, exactly).
//   nmse(got, want)        sum (got-want)^2 / sum want^2 over finite pairs (TESTING.md metric).
//   compare(got, want)     NaN/Inf agreement + NMSE + max abs/rel error, as a report.
//   all_close(got, want, atol, rtol)  |got-want| <= atol + rtol |want| elementwise, as a report.
//   bitwise_diff(a, b)     "" when the two element vectors are identical bit for bit, else where
//                          they first differ.
#pragma once

#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/tensor.hpp"

namespace tfm_test {

using tfm::index_t;

inline constexpr std::uint64_t default_seed = 0x7f4a7c15u;

/// The seed of this run: env TFM_TEST_SEED (decimal or 0x hex) when set, else default_seed.
/// Prints it (doctest MESSAGE) each time it is asked for, so call it inside a test case.
inline std::uint64_t seed() {
  std::uint64_t s = default_seed;
  if (const char* e = std::getenv("TFM_TEST_SEED"); e && *e) s = std::strtoull(e, nullptr, 0);
  MESSAGE("TFM_TEST_SEED=" << s << " (set the environment variable to reproduce)");
  return s;
}

/// A generator for one test: seed() mixed with a salt so that tests draw different streams.
inline std::mt19937 rng(std::uint64_t salt = 0) {
  const std::uint64_t s = seed();
  std::seed_seq seq{static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(s >> 32),
                    static_cast<std::uint32_t>(salt), static_cast<std::uint32_t>(salt >> 32)};
  return std::mt19937(seq);
}

/// True in a build with AddressSanitizer (scripts/test's asan phase: clang++ -O1, where code
/// runs 5-20x slower): heavy cases shrink their sizes there and keep their checks.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

/// A text fixture of named arrays, one a line: "NAME COUNT v1 v2 ... vCOUNT" (blank lines and
/// lines starting with '#' skipped), as the Python fixture generators under tests/data write them.
inline std::map<std::string, std::vector<double>> read_named_arrays(const std::string& path) {
  std::map<std::string, std::vector<double>> m;
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string name;
    std::size_t n = 0;
    s >> name >> n;
    std::vector<double> v(n);
    for (auto& x : v) s >> x;
    REQUIRE_MESSAGE(!s.fail(), "malformed fixture line for " << name << " in " << path);
    m[name] = std::move(v);
  }
  return m;
}

/// The message of the tfm::error f() raises, or "(no error)".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tfm::error& e) {
    return e.what();
  }
  return "(no error)";
}

/// SmolLM2-135M-Instruct's Q4_1 GGUF in the model cache scripts/setup fills ($TFM_MODEL_DIR, or
/// ~/.cache/typeformer/models); tests that need it print "TFM_SKIP:" when it is absent.
inline std::string smollm2_path() {
  const char* dir = std::getenv("TFM_MODEL_DIR");
  const char* home = std::getenv("HOME");
  const std::string base =
      dir && *dir ? dir : std::string(home ? home : "") + "/.cache/typeformer/models";
  return base + "/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

// ---- element conversions ---------------------------------------------------------------------

/// Exact value of an element as a double (bf16/f16 widen exactly through float).
template <class T>
double to_double(T v) {
  if constexpr (tfm::is_half_v<T>)
    return static_cast<double>(static_cast<float>(v));
  else
    return static_cast<double>(v);
}

/// A double rounded to the storage type the way the library stores a compute-type result:
/// halves through float (RNE twice, as tfm::to_storage does), others by static_cast.
template <class T>
T from_double(double v) {
  if constexpr (tfm::is_half_v<T>)
    return T(static_cast<float>(v));
  else
    return static_cast<T>(v);
}

/// The bits of an element (for bitwise comparison).
template <class T>
std::uint64_t bits_of(T v) {
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

// ---- random data -----------------------------------------------------------------------------

/// n values uniform in [lo, hi], rounded to T (integers: uniform over the integers in range).
template <class T>
std::vector<T> random_vector(std::size_t n, std::mt19937& g, double lo, double hi) {
  std::vector<T> v(n);
  if constexpr (std::is_integral_v<T>) {
    std::uniform_int_distribution<long long> d(static_cast<long long>(lo),
                                               static_cast<long long>(hi));
    for (auto& x : v) x = static_cast<T>(d(g));
  } else {
    std::uniform_real_distribution<double> d(lo, hi);
    for (auto& x : v) x = from_double<T>(d(g));
  }
  return v;
}

// ---- tensors <-> std::vector ------------------------------------------------------------------

namespace detail {
/// Calls f(offset) for every element of extents `ext` with strides `st`, in row-major order.
template <std::size_t R, class F>
void for_each_offset(const std::array<index_t, R>& ext, const std::array<index_t, R>& st, F&& f) {
  for (std::size_t a = 0; a < R; ++a)
    if (ext[a] == 0) return;
  std::array<index_t, R> idx{};
  while (true) {
    index_t off = 0;
    for (std::size_t a = 0; a < R; ++a) off += idx[a] * st[a];
    f(off);
    std::size_t a = R;
    while (a > 0) {
      --a;
      if (++idx[a] < ext[a]) break;
      idx[a] = 0;
      if (a == 0) return;
    }
    if constexpr (R == 0) return;
  }
}
}  // namespace detail

/// Elements of a tensor or view in row-major order (read through data() and strides()).
template <class X>
auto to_vector(const X& x) {
  using T = std::remove_cv_t<typename std::remove_cvref_t<X>::element_type>;
  std::vector<T> out;
  out.reserve(static_cast<std::size_t>(x.size()));
  const T* p = x.data();
  detail::for_each_offset(x.shape().extents(), x.strides(),
                          [&](index_t off) { out.push_back(p[off]); });
  return out;
}

/// Writes v (row-major order, v.size() == x.size()) into a tensor or view through its strides.
template <class X, class T>
void from_vector(X&& x, const std::vector<T>& v) {
  REQUIRE(static_cast<index_t>(v.size()) == x.size());
  auto* p = x.data();
  std::size_t i = 0;
  detail::for_each_offset(x.shape().extents(), x.strides(), [&](index_t off) { p[off] = v[i++]; });
}

/// A tensor of the given shape holding v (row-major).
template <class Tensor, class T>
Tensor make_tensor(const typename Tensor::shape_type& s, const std::vector<T>& v) {
  Tensor t(s);
  from_vector(t, v);
  return t;
}

/// A tensor of the given shape with random_vector's uniform values in [lo, hi].
template <class Tensor>
Tensor random_tensor(const typename Tensor::shape_type& s, std::mt19937& g, double lo, double hi) {
  Tensor t(s);
  from_vector(
      t, random_vector<typename Tensor::value_type>(static_cast<std::size_t>(t.size()), g, lo, hi));
  return t;
}

// ---- metrics ----------------------------------------------------------------------------------

/// NMSE = sum (got - want)^2 / sum want^2 over the pairs where both are finite; 0 when both sums
/// are 0, the plain squared error when only the denominator is 0.
template <class A, class B>
double nmse(const std::vector<A>& got, const std::vector<B>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double g = to_double(got[i]), w = to_double(want[i]);
    if (!std::isfinite(g) || !std::isfinite(w)) continue;
    num += (g - w) * (g - w);
    den += w * w;
  }
  if (den == 0) return num;
  return num / den;
}

/// Result of compare() / all_close(): ok, and the numbers that explain a failure.
struct report {
  bool ok = true;
  std::size_t n = 0;
  std::size_t size_mismatch = 0;  // 1 when the vectors differ in length
  std::size_t nan_mismatch = 0;   // NaN in one and not the other
  std::size_t inf_mismatch = 0;   // Inf in one where the other is not the same Inf
  std::size_t out_of_tol = 0;     // all_close: elements outside atol + rtol |want|
  double nmse = 0, max_abs = 0, max_rel = 0;
  std::size_t worst = 0;  // index of the largest absolute error
  double worst_got = 0, worst_want = 0;
  std::size_t first_bad = 0;  // first NaN/Inf/tolerance failure
  double first_bad_got = 0, first_bad_want = 0;
  std::string str() const {
    std::ostringstream s;
    s.precision(9);
    s << "n=" << n << " nmse=" << nmse << " max_abs=" << max_abs << " max_rel=" << max_rel
      << " worst[" << worst << "]: got " << worst_got << " want " << worst_want;
    if (size_mismatch) s << " SIZE MISMATCH";
    if (nan_mismatch || inf_mismatch || out_of_tol)
      s << " nan_mismatch=" << nan_mismatch << " inf_mismatch=" << inf_mismatch
        << " out_of_tol=" << out_of_tol << " first bad [" << first_bad << "]: got " << first_bad_got
        << " want " << first_bad_want;
    return s.str();
  }
};

namespace detail {
template <class A, class B>
report compare_impl(const std::vector<A>& got, const std::vector<B>& want, double atol, double rtol,
                    bool check_tol) {
  report r;
  r.n = want.size();
  if (got.size() != want.size()) {
    r.size_mismatch = 1;
    r.ok = false;
    return r;
  }
  bool have_bad = false;
  auto bad = [&](std::size_t i, double g, double w) {
    if (!have_bad) {
      have_bad = true;
      r.first_bad = i;
      r.first_bad_got = g;
      r.first_bad_want = w;
    }
  };
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = to_double(got[i]), w = to_double(want[i]);
    if (std::isnan(g) || std::isnan(w)) {
      if (std::isnan(g) != std::isnan(w)) {
        ++r.nan_mismatch;
        bad(i, g, w);
      }
      continue;
    }
    if (std::isinf(g) || std::isinf(w)) {
      if (g != w) {
        ++r.inf_mismatch;
        bad(i, g, w);
      }
      continue;
    }
    const double d = std::fabs(g - w);
    const double rel = w != 0 ? d / std::fabs(w) : (d == 0 ? 0.0 : d);
    if (d > r.max_abs || (i == 0 && d == 0)) {
      r.max_abs = d;
      r.worst = i;
      r.worst_got = g;
      r.worst_want = w;
    }
    if (rel > r.max_rel) r.max_rel = rel;
    if (check_tol && !(d <= atol + rtol * std::fabs(w))) {
      ++r.out_of_tol;
      bad(i, g, w);
    }
  }
  r.nmse = tfm_test::nmse(got, want);
  r.ok = r.nan_mismatch == 0 && r.inf_mismatch == 0 && r.out_of_tol == 0;
  return r;
}
}  // namespace detail

/// got vs want: NaN where want has none (or the reverse) fails, Inf must match sign, and
/// NMSE <= max_nmse (the TESTING.md backend metric).
template <class A, class B>
report compare(const std::vector<A>& got, const std::vector<B>& want, double max_nmse) {
  report r = detail::compare_impl(got, want, 0, 0, false);
  if (!(r.nmse <= max_nmse)) r.ok = false;
  return r;
}

/// got vs want elementwise: |got - want| <= atol + rtol |want|, NaN and Inf must agree.
template <class A, class B>
report all_close(const std::vector<A>& got, const std::vector<B>& want, double atol, double rtol) {
  return detail::compare_impl(got, want, atol, rtol, true);
}

/// "" when a and b hold the same bits element for element, else a description of the first
/// difference (and how many differ).
template <class T>
std::string bitwise_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size())
    return "sizes differ: " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  std::size_t count = 0, first = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (bits_of(a[i]) != bits_of(b[i])) {
      if (count++ == 0) first = i;
    }
  if (count == 0) return {};
  std::ostringstream s;
  s.precision(9);
  s << count << " of " << a.size() << " elements differ; first at [" << first
    << "]: " << to_double(a[first]) << " vs " << to_double(b[first]);
  return s.str();
}

}  // namespace tfm_test

/// CHECK that a tfm_test::report is ok, printing its numbers either way on failure.
#define TFM_CHECK_REPORT(rep)                   \
  do {                                          \
    const auto& tfm_rep_ = (rep);               \
    CHECK_MESSAGE(tfm_rep_.ok, tfm_rep_.str()); \
  } while (0)

/// CHECK that two element vectors are bitwise identical.
#define TFM_CHECK_BITWISE(a, b)                                   \
  do {                                                            \
    const std::string tfm_diff_ = ::tfm_test::bitwise_diff(a, b); \
    CHECK_MESSAGE(tfm_diff_.empty(), tfm_diff_);                  \
  } while (0)
