// typeformer/backend/reference/rows.hpp
//
// WHAT THIS REPRESENTS
//   Scalar reference row kernels: the test oracle for backend/cpu/rows.hpp and the fallback of
//   any backend without them. Every row statistic accumulates in double; outputs are rounded to
//   T once. Same contracts (shapes, masking, aliasing) as tfm::cpu_kernels, documented there.
//
//   x, y: `rows` rows of n elements, row r at x + r * ld_x (ld_x >= n), y + r * ld_y.
//   y may equal x (with ld_y == ld_x); other overlaps are not allowed.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <cmath>
#include <limits>
#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace reference_kernels {

namespace detail {
inline void check_rows_args(const char* op, index_t ld_x, index_t ld_y, index_t rows, index_t n) {
  if (rows < 0 || n < 0) fail(errc::value, op, ": rows (", rows, ") and n (", n, ") must be >= 0.");
  if (rows > 1 && (ld_x < n || ld_y < n)) {
    fail(errc::value, op, ": the row strides ld_x (", ld_x, ") and ld_y (", ld_y,
         ") must be at least the row length n (", n, ").");
  }
}
}  // namespace detail

/// y[r, :] = softmax(x[r, :]) = exp(x - max) / sum(exp(x - max)). -inf entries give 0; a row of
/// only -inf (fully masked) gives a row of zeros.
template <class T>
requires std::is_floating_point_v<T>
void softmax_rows(const T* x, index_t ld_x, T* y, index_t ld_y, index_t rows, index_t n) {
  detail::check_rows_args("softmax_rows", ld_x, ld_y, rows, n);
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld_x;
    T* yr = y + r * ld_y;
    double m = -std::numeric_limits<double>::infinity();
    for (index_t i = 0; i < n; ++i) m = std::fmax(m, static_cast<double>(xr[i]));
    if (m == -std::numeric_limits<double>::infinity()) {
      for (index_t i = 0; i < n; ++i) yr[i] = T(0);
      continue;
    }
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(xr[i]) - m);
    for (index_t i = 0; i < n; ++i)
      yr[i] = static_cast<T>(std::exp(static_cast<double>(xr[i]) - m) / s);
  }
}

/// y[r, :] = log_softmax(x[r, :]) = (x - max) - log(sum(exp(x - max))). -inf entries give -inf;
/// a fully masked row gives a row of -inf.
template <class T>
requires std::is_floating_point_v<T>
void log_softmax_rows(const T* x, index_t ld_x, T* y, index_t ld_y, index_t rows, index_t n) {
  detail::check_rows_args("log_softmax_rows", ld_x, ld_y, rows, n);
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld_x;
    T* yr = y + r * ld_y;
    double m = -std::numeric_limits<double>::infinity();
    for (index_t i = 0; i < n; ++i) m = std::fmax(m, static_cast<double>(xr[i]));
    if (m == -std::numeric_limits<double>::infinity()) {
      for (index_t i = 0; i < n; ++i) yr[i] = -std::numeric_limits<T>::infinity();
      continue;
    }
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(xr[i]) - m);
    const double ls = std::log(s);
    for (index_t i = 0; i < n; ++i) yr[i] = static_cast<T>((static_cast<double>(xr[i]) - m) - ls);
  }
}

/// Layer normalisation (Ba, Kiros, Hinton 2016, arXiv:1607.06450) over each row:
/// mean = sum x / n, var = sum (x - mean)^2 / n (biased), rstd = 1 / sqrt(var + eps),
/// y = (x - mean) * rstd * gamma + beta. gamma/beta may be null (1 / 0). mean_out/rstd_out
/// (nullable) receive one value per row.
template <class T>
requires std::is_floating_point_v<T>
void layer_norm_rows(const T* x, index_t ld_x, const T* gamma, const T* beta, T eps, T* y,
                     index_t ld_y, index_t rows, index_t n, T* mean_out = nullptr,
                     T* rstd_out = nullptr) {
  detail::check_rows_args("layer_norm_rows", ld_x, ld_y, rows, n);
  if (n == 0) return;
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld_x;
    T* yr = y + r * ld_y;
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) s += static_cast<double>(xr[i]);
    const double mean = s / static_cast<double>(n);
    double v = 0.0;
    for (index_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(xr[i]) - mean;
      v += d * d;
    }
    const double rstd = 1.0 / std::sqrt(v / static_cast<double>(n) + static_cast<double>(eps));
    for (index_t i = 0; i < n; ++i) {
      double t = (static_cast<double>(xr[i]) - mean) * rstd;
      if (gamma) t *= static_cast<double>(gamma[i]);
      if (beta) t += static_cast<double>(beta[i]);
      yr[i] = static_cast<T>(t);
    }
    if (mean_out) mean_out[r] = static_cast<T>(mean);
    if (rstd_out) rstd_out[r] = static_cast<T>(rstd);
  }
}

/// RMS normalisation (Zhang, Sennrich 2019, arXiv:1910.07467) over each row:
/// rstd = 1 / sqrt(sum x^2 / n + eps), y = x * rstd * weight. weight may be null (1);
/// rstd_out (nullable) receives one value per row.
template <class T>
requires std::is_floating_point_v<T>
void rms_norm_rows(const T* x, index_t ld_x, const T* weight, T eps, T* y, index_t ld_y,
                   index_t rows, index_t n, T* rstd_out = nullptr) {
  detail::check_rows_args("rms_norm_rows", ld_x, ld_y, rows, n);
  if (n == 0) return;
  for (index_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ld_x;
    T* yr = y + r * ld_y;
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) s += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
    const double rstd = 1.0 / std::sqrt(s / static_cast<double>(n) + static_cast<double>(eps));
    for (index_t i = 0; i < n; ++i) {
      double t = static_cast<double>(xr[i]) * rstd;
      if (weight) t *= static_cast<double>(weight[i]);
      yr[i] = static_cast<T>(t);
    }
    if (rstd_out) rstd_out[r] = static_cast<T>(rstd);
  }
}

}  // namespace reference_kernels

TFM_END_NAMESPACE
