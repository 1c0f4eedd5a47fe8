// typeformer/backend/reference/nf4_linear.hpp
//
// WHAT THIS REPRESENTS
//   The kernels of QLoRA's frozen base layer (Dettmers et al. 2023, "QLoRA: Efficient Finetuning
//   of Quantized LLMs", arXiv:2305.14314, section 3): a linear layer whose weight W (N rows = out
//   features, K columns = in features) is held as NF4 with double quantization
//   (quant/nf4.hpp's nf4_dq_tensor) and is only ever read through its dequantized values
//   deq(W)(n, k) = L[q(n, k)] * c'_b (c'_b the double-quantized absmax of the 64-value block b
//   that holds (n, k)). The entry points, overloaded on the backend tag (backend/tags.hpp):
//
//     nf4_matmul_bt(tag, w, x, M, y, beta)       y (M, N) = x (M, K) deq(W)^T (+ beta * y)
//                                                (the forward)
//     nf4_matmul(tag, w, dy, M, dx, beta)        dx (M, K) = dy (M, N) deq(W) (+ beta * dx)
//                                                (the backward to the input; W is frozen, so
//                                                there is no weight gradient)
//     nf4_dequantize_rows(tag, w, r0, r1, out)   rows [r0, r1) of deq(W) as (r1 - r0) x K floats
//
//   This file holds the reference overloads, the oracle of the cpu ones
//   (backend/cpu/quant/nf4_linear.hpp) and the fallback of every tag derived from tfm::reference:
//   plain loops written from the nf4.hpp contract (not from dequantize_nf4_dq's code), double
//   accumulation, no SIMD, no threads. The products dequantize the whole matrix once (N * K
//   floats): this is the oracle, not the training path; the cpu backend dequantizes tiles.
//
// CONTRACTS (every backend)
//   - All buffers are row-major and contiguous: x is M x K, y is M x N, dy is M x N, dx is M x K,
//     out is (r1 - r0) x K; outputs must not overlap inputs.
//   - beta == 0: the output is not read (it may hold NaN); otherwise out = product + beta * out.
//   - nf4_dequantize_rows: element (r, k) of out equals element (r0 + r, k) of
//     dequantize_nf4_dq(w) bit for bit (one binary32 product L[q] * c'_b).
//   - Errors, never UB: a malformed tensor (cols not a multiple of 64, or qs / absmax_q / scale2
//     sizes that do not match rows x cols) -> tfm::shape_error naming the sizes; M < 0 or
//     r0 > r1 or r1 > rows -> tfm::value_error / tfm::index_error; a null buffer where elements
//     are to be read or written -> tfm::value_error.
//   - The reference accumulates every dot product in double and rounds once to float:
//     y = float(sum_k double(x) double(deq W) + double(beta) double(y)).
#pragma once

#include "typeformer/backend/tags.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/quant/nf4.hpp"

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail::nf4_linear {

/// Checks that `w` is a well-formed nf4_dq_tensor whose rows and cols fit index_t; `who` names the
/// calling kernel in the message.
inline void check_tensor(const nf4_dq_tensor& w, const char* who) {
  constexpr std::size_t imax = static_cast<std::size_t>(std::numeric_limits<index_t>::max());
  if (w.cols % 64 != 0)
    fail(errc::shape, who, ": the NF4 tensor has ", w.cols,
         " columns, not a multiple of the 64-value block.");
  if (w.rows > imax || w.cols > imax || (w.cols != 0 && w.rows > imax / w.cols))
    fail(errc::shape, who, ": the NF4 tensor's ", w.rows, " x ", w.cols,
         " elements overflow the index type.");
  const std::size_t blocks = w.rows * (w.cols / 64);
  const std::size_t groups = (blocks + nf4_dq_tensor::group - 1) / nf4_dq_tensor::group;
  if (w.qs.size() != blocks * 32 || w.absmax_q.size() != blocks || w.scale2.size() != groups)
    fail(errc::shape, who, ": the NF4 tensor (", w.rows, " x ", w.cols, ") holds ", w.qs.size(),
         " code bytes, ", w.absmax_q.size(), " block constants and ", w.scale2.size(),
         " second-level scales; its shape needs ", blocks * 32, ", ", blocks, " and ", groups, ".");
}

/// The shared argument checks of the two products: the tensor, M >= 0, non-null buffers when
/// there are elements to touch (in: M x in_cols read, out: M x out_cols written).
inline void check_product(const nf4_dq_tensor& w, index_t M, const float* in, index_t in_cols,
                          const float* out, index_t out_cols, const char* who) {
  check_tensor(w, who);
  if (M < 0) fail(errc::value, who, ": the row count M = ", M, " is negative.");
  if (M > 0 && out_cols > 0 && out == nullptr)
    fail(errc::value, who, ": the output buffer is null for ", M, " x ", out_cols, " values.");
  if (M > 0 && in_cols > 0 && out_cols > 0 && in == nullptr)
    fail(errc::value, who, ": the input buffer is null for ", M, " x ", in_cols, " values.");
}

/// The shared argument checks of nf4_dequantize_rows.
inline void check_rows(const nf4_dq_tensor& w, index_t r0, index_t r1, const float* out,
                       const char* who) {
  check_tensor(w, who);
  if (r0 < 0 || r1 < r0)
    fail(errc::value, who, ": the row range [", r0, ", ", r1, ") is not an ordered range.");
  if (static_cast<std::size_t>(r1) > w.rows)
    fail(errc::index, who, ": the row range [", r0, ", ", r1, ") ends past the tensor's ", w.rows,
         " rows.");
  if (r1 > r0 && w.cols > 0 && out == nullptr)
    fail(errc::value, who, ": the output buffer is null for ", r1 - r0, " rows.");
}

}  // namespace detail::nf4_linear

/// Rows [r0, r1) of deq(W) into out ((r1 - r0) x K): element by element from the nf4.hpp layout.
inline void nf4_dequantize_rows(reference, const nf4_dq_tensor& w, index_t r0, index_t r1,
                                float* out) {
  detail::nf4_linear::check_rows(w, r0, r1, out, "tfm::nf4_dequantize_rows");
  const std::size_t K = w.cols, nb = K / 64;
  for (std::size_t r = static_cast<std::size_t>(r0); r < static_cast<std::size_t>(r1); ++r)
    for (std::size_t k = 0; k < K; ++k) {
      const std::size_t b = r * nb + k / 64, e = k % 64;
      // element e of a block: sub-block e / 32; its first 16 in the low nibbles of
      // qs[16 * (e / 32) .. + 15], the next 16 in the high nibbles of the same bytes.
      const std::uint8_t byte = w.qs[32 * b + 16 * (e / 32) + e % 16];
      const unsigned q = (e % 32) < 16 ? (byte & 0x0Fu) : (byte >> 4);
      out[(r - static_cast<std::size_t>(r0)) * K + k] = nf4_levels[q] * w.absmax(b);
    }
}

/// y (M, N) = x (M, K) deq(W)^T (+ beta * y); double accumulation.
inline void nf4_matmul_bt(reference, const nf4_dq_tensor& w, const float* x, index_t M, float* y,
                          float beta) {
  const auto N = static_cast<index_t>(w.rows), K = static_cast<index_t>(w.cols);
  detail::nf4_linear::check_product(w, M, x, K, y, N, "tfm::nf4_matmul_bt");
  if (M == 0 || N == 0) return;
  std::vector<float> wd(static_cast<std::size_t>(N * K));
  nf4_dequantize_rows(reference{}, w, 0, N, wd.data());
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) {
      double s = 0;
      for (index_t k = 0; k < K; ++k)
        s += static_cast<double>(x[m * K + k]) * static_cast<double>(wd[n * K + k]);
      float& o = y[m * N + n];
      if (beta != 0.0f) s += static_cast<double>(beta) * static_cast<double>(o);
      o = static_cast<float>(s);
    }
}

/// dx (M, K) = dy (M, N) deq(W) (+ beta * dx); double accumulation.
inline void nf4_matmul(reference, const nf4_dq_tensor& w, const float* dy, index_t M, float* dx,
                       float beta) {
  const auto N = static_cast<index_t>(w.rows), K = static_cast<index_t>(w.cols);
  detail::nf4_linear::check_product(w, M, dy, N, dx, K, "tfm::nf4_matmul");
  if (M == 0 || K == 0) return;
  std::vector<float> wd(static_cast<std::size_t>(N * K));
  nf4_dequantize_rows(reference{}, w, 0, N, wd.data());
  std::vector<double> acc(static_cast<std::size_t>(K));
  for (index_t m = 0; m < M; ++m) {
    for (index_t k = 0; k < K; ++k)
      acc[static_cast<std::size_t>(k)] =
          beta != 0.0f ? static_cast<double>(beta) * static_cast<double>(dx[m * K + k]) : 0.0;
    for (index_t n = 0; n < N; ++n) {
      const double g = dy[m * N + n];
      for (index_t k = 0; k < K; ++k)
        acc[static_cast<std::size_t>(k)] += g * static_cast<double>(wd[n * K + k]);
    }
    for (index_t k = 0; k < K; ++k)
      dx[m * K + k] = static_cast<float>(acc[static_cast<std::size_t>(k)]);
  }
}

TFM_END_NAMESPACE
