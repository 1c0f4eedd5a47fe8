// cpu layer_norm_rows / rms_norm_rows against the double-accumulating reference: size sweep,
// optional gamma/beta/weight, per-row statistics, strided rows, in place, rows with a large
// mean or constant rows, thread-count independence. Tolerance: NMSE <= 1e-7 (TESTING.md).
#include "rows_test_util.hpp"

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/rows.hpp"
#include "typeformer/backend/reference/rows.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using namespace rows_test;

namespace {

enum class norm { layer, rms };

struct params {
  bool gamma, beta, stats;
};

template <class T>
void run_cpu(norm k, const T* x, index_t ldx, const T* g, const T* b, T* y, index_t ldy,
             index_t rows, index_t n, T* mean, T* rstd) {
  const T eps = T(1e-5);
  if (k == norm::layer) {
    tfm::cpu_kernels::layer_norm_rows(x, ldx, g, b, eps, y, ldy, rows, n, mean, rstd);
  } else {
    tfm::cpu_kernels::rms_norm_rows(x, ldx, g, eps, y, ldy, rows, n, rstd);
  }
}

template <class T>
void run_ref(norm k, const T* x, index_t ldx, const T* g, const T* b, T* y, index_t ldy,
             index_t rows, index_t n, T* mean, T* rstd) {
  const T eps = T(1e-5);
  if (k == norm::layer) {
    tfm::reference_kernels::layer_norm_rows(x, ldx, g, b, eps, y, ldy, rows, n, mean, rstd);
  } else {
    tfm::reference_kernels::rms_norm_rows(x, ldx, g, eps, y, ldy, rows, n, rstd);
  }
}

template <class T>
void check_case(norm k, const std::vector<T>& x, index_t ldx, index_t rows, index_t n, index_t pad,
                params p, std::mt19937_64& g, const char* what) {
  std::vector<T> gamma(static_cast<std::size_t>(n)), beta(static_cast<std::size_t>(n));
  fill_normal(gamma, g, 1.0, 0.5);
  fill_normal(beta, g, 0.0, 0.5);
  const T* gp = p.gamma ? gamma.data() : nullptr;
  const T* bp = p.beta ? beta.data() : nullptr;
  strided<T> y(rows, n, n + pad);
  std::vector<T> want(static_cast<std::size_t>(rows * n));
  std::vector<T> mean(static_cast<std::size_t>(rows)), rstd(mean.size());
  std::vector<T> mean_ref(mean.size()), rstd_ref(mean.size());
  run_cpu(k, x.data(), ldx, gp, bp, y.data.data(), y.ld, rows, n, p.stats ? mean.data() : nullptr,
          p.stats ? rstd.data() : nullptr);
  run_ref(k, x.data(), ldx, gp, bp, want.data(), n, rows, n, mean_ref.data(), rstd_ref.data());
  const comparison c = compare(y.data.data(), y.ld, want.data(), n, rows, n);
  INFO(std::string(what), std::string(k == norm::layer ? ": layer_norm" : ": rms_norm"), ", rows ",
       rows, ", n ", n, ", gamma ", p.gamma, ", beta ", p.beta, ", nmse ", c.nmse, ", max_abs ",
       c.max_abs);
  CHECK(c.nan == 0);
  CHECK(c.inf_mismatch == 0);
  CHECK(c.nmse <= 1e-7);
  CHECK(y.gap_changed() == 0);
  if (p.stats) {
    const comparison cr = compare(rstd.data(), 1, rstd_ref.data(), 1, 1, rows);
    CHECK(cr.nmse <= 1e-7);
    if (k == norm::layer) {
      const comparison cm = compare(mean.data(), 1, mean_ref.data(), 1, 1, rows);
      CHECK(cm.nmse <= 1e-7);
    }
  }
}

template <class T>
void size_sweep(norm k) {
  std::mt19937_64 g(seed());
  const params variants[] = {
      {true, true, true}, {false, false, false}, {true, false, true}, {false, true, false}};
  int v = 0;
  for (index_t n : sizes) {
    for (index_t rows : {index_t{1}, index_t{5}}) {
      const params p = variants[v++ % 4];
      for (index_t pad : {index_t{0}, index_t{3}}) {
        const index_t ldx = n + pad * 2;
        std::vector<T> x(static_cast<std::size_t>(rows * ldx));
        fill_normal(x, g, 0.5, 2.0);
        check_case(k, x, ldx, rows, n, pad, p, g, "normal(0.5, 2) rows");
      }
    }
  }
}

template <class T>
void hard_rows(norm k) {
  std::mt19937_64 g(seed() + 1);
  for (index_t n : {index_t{1}, index_t{8}, index_t{33}, index_t{768}, index_t{4096}}) {
    const index_t rows = 5;
    std::vector<T> x(static_cast<std::size_t>(rows * n));
    std::normal_distribution<double> d(0.0, 1.0);
    for (index_t i = 0; i < n; ++i) {
      x[4 * n + i] = static_cast<T>(1e6 + d(g));   // mean far above the spread (float ulp 0.06)
      x[0 * n + i] = static_cast<T>(1e4 + d(g));   // large mean, unit spread
      x[1 * n + i] = T(3.25);                      // constant row: var = 0
      x[2 * n + i] = static_cast<T>(1e-3 * d(g));  // tiny values, eps dominates
      x[3 * n + i] = static_cast<T>(1e4 * d(g));   // large spread
    }
    check_case(k, x, n, rows, n, 0, {true, true, true}, g, "hard rows");
  }
}

template <class T>
void in_place(norm k) {
  std::mt19937_64 g(seed() + 2);
  for (index_t n : {index_t{15}, index_t{768}, index_t{4097}}) {
    const index_t rows = 6, ld = n + 2;
    std::vector<T> x(static_cast<std::size_t>(rows * ld)), gamma(static_cast<std::size_t>(n));
    fill_normal(x, g, 0.0, 1.0);
    fill_normal(gamma, g, 1.0, 0.2);
    std::vector<T> want(static_cast<std::size_t>(rows * n));
    run_ref(k, x.data(), ld, gamma.data(), gamma.data(), want.data(), n, rows, n,
            static_cast<T*>(nullptr), static_cast<T*>(nullptr));
    run_cpu(k, x.data(), ld, gamma.data(), gamma.data(), x.data(), ld, rows, n,
            static_cast<T*>(nullptr), static_cast<T*>(nullptr));
    const comparison c = compare(x.data(), ld, want.data(), n, rows, n);
    INFO("in place, n ", n, ", nmse ", c.nmse);
    CHECK(c.nan == 0);
    CHECK(c.nmse <= 1e-7);
  }
}

template <class T>
void thread_independent(norm k) {
  std::mt19937_64 g(seed() + 3);
  const index_t rows = 257, n = 768;
  std::vector<T> x(static_cast<std::size_t>(rows * n)), y1(x.size()), y2(x.size());
  std::vector<T> w(static_cast<std::size_t>(n)), r1(rows), r2(rows);
  fill_normal(x, g, 0.3, 2.0);
  fill_normal(w, g, 1.0, 0.1);
  {
    tfm::thread_scope ts(1);
    run_cpu(k, x.data(), n, w.data(), w.data(), y1.data(), n, rows, n, static_cast<T*>(nullptr),
            r1.data());
  }
  {
    tfm::thread_scope ts(2);
    run_cpu(k, x.data(), n, w.data(), w.data(), y2.data(), n, rows, n, static_cast<T*>(nullptr),
            r2.data());
  }
  CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(T)) == 0);
  CHECK(std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(T)) == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("layer_norm_rows: size sweep vs reference", T, float, double) {
  MESSAGE("seed = ", seed());
  size_sweep<T>(norm::layer);
}
TEST_CASE_TEMPLATE("rms_norm_rows: size sweep vs reference", T, float, double) {
  MESSAGE("seed = ", seed());
  size_sweep<T>(norm::rms);
}
TEST_CASE_TEMPLATE("norms: large mean, constant, tiny and wide rows", T, float, double) {
  MESSAGE("seed = ", seed());
  hard_rows<T>(norm::layer);
  hard_rows<T>(norm::rms);
}
TEST_CASE_TEMPLATE("norms: in place", T, float, double) {
  MESSAGE("seed = ", seed());
  in_place<T>(norm::layer);
  in_place<T>(norm::rms);
}
TEST_CASE_TEMPLATE("norms: 1 and 2 threads give identical bits", T, float, double) {
  MESSAGE("seed = ", seed());
  thread_independent<T>(norm::layer);
  thread_independent<T>(norm::rms);
}

TEST_CASE("layer_norm_rows: known values") {
  // Row (1, 2, 3, 4): mean 2.5, biased var 1.25, rstd = 1 / sqrt(1.25 + eps).
  const float x[4] = {1, 2, 3, 4};
  float y[4], mean, rstd;
  tfm::cpu_kernels::layer_norm_rows(x, 4, static_cast<const float*>(nullptr),
                                    static_cast<const float*>(nullptr), 0.0f, y, 4, 1, 4, &mean,
                                    &rstd);
  CHECK(mean == 2.5f);
  CHECK(rstd == doctest::Approx(1.0 / std::sqrt(1.25)).epsilon(1e-7));
  CHECK(y[0] == doctest::Approx(-1.5 / std::sqrt(1.25)).epsilon(1e-6));
  CHECK(y[3] == doctest::Approx(1.5 / std::sqrt(1.25)).epsilon(1e-6));
  // RMS of (3, 4) is sqrt(12.5).
  const double xr[2] = {3, 4};
  double yr[2], r;
  tfm::cpu_kernels::rms_norm_rows(xr, 2, static_cast<const double*>(nullptr), 0.0, yr, 2, 1, 2, &r);
  CHECK(r == doctest::Approx(1.0 / std::sqrt(12.5)).epsilon(1e-15));
  CHECK(yr[1] == doctest::Approx(4.0 / std::sqrt(12.5)).epsilon(1e-15));
  CHECK_THROWS_AS(tfm::cpu_kernels::rms_norm_rows(xr, 1, static_cast<const double*>(nullptr), 0.0,
                                                  yr, 2, 2, 2, &r),
                  tfm::value_error);
}
