// cpu softmax_rows / log_softmax_rows against the double-accumulating reference: size sweep,
// strided rows, in place, extreme and masked rows, thread-count independence.
// Tolerance: NMSE <= 1e-6 (TESTING.md, softmax), 0 NaN, infinities identical.
#include "rows_test_util.hpp"

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/rows.hpp"
#include "typeformer/backend/reference/rows.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <string>

using namespace rows_test;

namespace {

enum class op { softmax, log_softmax };

template <class T>
void run_cpu(op o, const T* x, index_t ldx, T* y, index_t ldy, index_t rows, index_t n) {
  if (o == op::softmax)
    tfm::cpu_kernels::softmax_rows(x, ldx, y, ldy, rows, n);
  else
    tfm::cpu_kernels::log_softmax_rows(x, ldx, y, ldy, rows, n);
}

template <class T>
void run_ref(op o, const T* x, index_t ldx, T* y, index_t ldy, index_t rows, index_t n) {
  if (o == op::softmax)
    tfm::reference_kernels::softmax_rows(x, ldx, y, ldy, rows, n);
  else
    tfm::reference_kernels::log_softmax_rows(x, ldx, y, ldy, rows, n);
}

/// Runs cpu (strided output, ld = n + pad) and reference on the same x (rows x n, stride ldx)
/// and checks tolerance, NaN, infinities and that the gaps stay untouched.
template <class T>
void check_case(op o, const std::vector<T>& x, index_t ldx, index_t rows, index_t n, index_t pad,
                const char* what) {
  strided<T> y(rows, n, n + pad);
  std::vector<T> want(static_cast<std::size_t>(rows * n));
  run_cpu(o, x.data(), ldx, y.data.data(), y.ld, rows, n);
  run_ref(o, x.data(), ldx, want.data(), n, rows, n);
  const comparison c = compare(y.data.data(), y.ld, want.data(), n, rows, n);
  INFO(std::string(what), std::string(o == op::softmax ? ": softmax" : ": log_softmax"), ", rows ",
       rows, ", n ", n, ", ld_x ", ldx, ", ld_y ", y.ld, ", nmse ", c.nmse, ", max_abs ",
       c.max_abs);
  CHECK(c.nan == 0);
  CHECK(c.inf_mismatch == 0);
  CHECK(c.nmse <= 1e-6);
  CHECK(y.gap_changed() == 0);
}

template <class T>
void size_sweep(op o) {
  std::mt19937_64 g(seed());
  for (index_t n : sizes) {
    for (index_t rows : {index_t{1}, index_t{3}, index_t{17}}) {
      if (rows * n > 600000) continue;
      for (index_t pad : {index_t{0}, index_t{5}}) {
        const index_t ldx = n + (pad ? 3 : 0);
        std::vector<T> x(static_cast<std::size_t>(rows * ldx));
        fill_normal(x, g, 0.0, 3.0);
        check_case(o, x, ldx, rows, n, pad, "normal(0, 3) rows");
      }
    }
  }
}

/// Rows that stress stability; -inf marks masked entries.
template <class T>
void extreme_rows(op o) {
  std::mt19937_64 g(seed() + 1);
  const T ninf = -std::numeric_limits<T>::infinity();
  for (index_t n : {index_t{1}, index_t{7}, index_t{33}, index_t{1023}, index_t{4096}}) {
    const index_t rows = 7;
    std::vector<T> x(static_cast<std::size_t>(rows * n));
    std::uniform_real_distribution<double> u(-1e4, 1e4);
    for (index_t i = 0; i < n; ++i) {
      x[0 * n + i] = static_cast<T>(u(g));                   // entries up to +-1e4
      x[1 * n + i] = T(1e4);                                 // all equal and large
      x[2 * n + i] = std::numeric_limits<T>::max() / 2;      // all equal, near the top of range
      x[3 * n + i] = (i % 3 == 1) ? T(2.5) : ninf;           // masked, some entries live
      x[4 * n + i] = ninf;                                   // fully masked
      x[5 * n + i] = i == n / 2 ? T(1e4) : T(-1e4);          // one dominant entry
      x[6 * n + i] = (i % 2) ? static_cast<T>(u(g)) : ninf;  // masked and +-1e4
    }
    if (n == 1) x[3 * n] = T(2.5);
    check_case(o, x, n, rows, n, 0, "extreme rows");
    // Exact expectations for the fully masked row and the all-equal rows.
    std::vector<T> y(x.size());
    run_cpu(o, x.data(), n, y.data(), n, rows, n);
    for (index_t i = 0; i < n; ++i) {
      if (o == op::softmax) {
        CHECK(y[4 * n + i] == T(0));
        CHECK(y[1 * n + i] == doctest::Approx(1.0 / static_cast<double>(n)).epsilon(1e-6));
      } else {
        CHECK(y[4 * n + i] == ninf);
        CHECK(y[1 * n + i] ==
              doctest::Approx(-std::log(static_cast<double>(n))).epsilon(1e-6).scale(1.0));
      }
    }
  }
}

template <class T>
void in_place(op o) {
  std::mt19937_64 g(seed() + 2);
  for (index_t n : {index_t{17}, index_t{129}, index_t{4096}}) {
    const index_t rows = 9, ld = n + 4;
    std::vector<T> x(static_cast<std::size_t>(rows * ld));
    fill_normal(x, g, 1.0, 5.0);
    std::vector<T> want(static_cast<std::size_t>(rows * n));
    run_ref(o, x.data(), ld, want.data(), n, rows, n);
    const std::vector<T> before = x;
    run_cpu(o, x.data(), ld, x.data(), ld, rows, n);
    const comparison c = compare(x.data(), ld, want.data(), n, rows, n);
    INFO("in place, n ", n, ", nmse ", c.nmse);
    CHECK(c.nan == 0);
    CHECK(c.nmse <= 1e-6);
    for (index_t r = 0; r < rows; ++r) {
      for (index_t i = n; i < ld; ++i) CHECK(x[r * ld + i] == before[r * ld + i]);
    }
  }
}

template <class T>
void thread_independent(op o) {
  std::mt19937_64 g(seed() + 3);
  for (index_t n : {index_t{127}, index_t{4096}}) {
    const index_t rows = 301;  // rows * n above the parallel threshold
    std::vector<T> x(static_cast<std::size_t>(rows * n)), y1(x.size()), y2(x.size());
    fill_normal(x, g, 0.0, 10.0);
    {
      tfm::thread_scope ts(1);
      run_cpu(o, x.data(), n, y1.data(), n, rows, n);
    }
    {
      tfm::thread_scope ts(2);
      run_cpu(o, x.data(), n, y2.data(), n, rows, n);
    }
    CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(T)) == 0);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("softmax_rows: size sweep vs reference", T, float, double) {
  MESSAGE("seed = ", seed());
  size_sweep<T>(op::softmax);
}
TEST_CASE_TEMPLATE("log_softmax_rows: size sweep vs reference", T, float, double) {
  MESSAGE("seed = ", seed());
  size_sweep<T>(op::log_softmax);
}
TEST_CASE_TEMPLATE("softmax / log_softmax: extreme and masked rows", T, float, double) {
  MESSAGE("seed = ", seed());
  extreme_rows<T>(op::softmax);
  extreme_rows<T>(op::log_softmax);
}
TEST_CASE_TEMPLATE("softmax / log_softmax: in place", T, float, double) {
  MESSAGE("seed = ", seed());
  in_place<T>(op::softmax);
  in_place<T>(op::log_softmax);
}
TEST_CASE_TEMPLATE("softmax / log_softmax: 1 and 2 threads give identical bits", T, float, double) {
  MESSAGE("seed = ", seed());
  thread_independent<T>(op::softmax);
  thread_independent<T>(op::log_softmax);
}

TEST_CASE("softmax_rows: row sums are 1 and bad arguments are rejected") {
  std::vector<float> x(3 * 40), y(3 * 40);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 11) - 5.0f;
  tfm::cpu_kernels::softmax_rows(x.data(), 40, y.data(), 40, 3, 40);
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int i = 0; i < 40; ++i) s += y[r * 40 + i];
    CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
  }
  CHECK_THROWS_AS(tfm::cpu_kernels::softmax_rows(x.data(), 10, y.data(), 40, 3, 40),
                  tfm::value_error);
  CHECK_THROWS_AS(tfm::cpu_kernels::log_softmax_rows(x.data(), 40, y.data(), 40, -1, 40),
                  tfm::value_error);
  // n == 0 and rows == 0 are no-ops.
  tfm::cpu_kernels::softmax_rows(x.data(), 40, y.data(), 40, 0, 40);
  tfm::cpu_kernels::softmax_rows(x.data(), 40, y.data(), 40, 3, 0);
}
