// typeformer/backend/reference/gemm.hpp
//
// WHAT THIS REPRESENTS
//   The scalar oracle for matrix products: plain loops, no blocking, no SIMD, no threads.
//   Same contract as tfm::cpu_kernels::gemm (backend/cpu/gemm.hpp):
//
//     C(M,N) = alpha * op(A)(M,K) * op(B)(K,N) + beta * C
//
//   op(A) = A, stored M x K (element (i,k) at A[i*lda + k]), or with trans_a A^T, A stored K x M
//   (element (i,k) at A[k*lda + i]); the same for B with ldb. C(i,j) is C[i*ldc + j].
//   beta == 0 means C is not read (it may hold NaN); alpha == 0 or K == 0 means A and B are not
//   read. Products accumulate in double for float and double (in long double for double where
//   that is wider), so the result is the exactly rounded dot product for all test sizes.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace reference_kernels {

namespace detail {
template <class T>
using gemm_accum_t = std::conditional_t<std::is_same_v<T, double>, long double, double>;
}  // namespace detail

/// C = alpha * op(A) * op(B) + beta * C, row-major (see the file comment).
template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  using acc_t = detail::gemm_accum_t<T>;
  if (M < 0 || N < 0 || K < 0)
    fail(errc::value, "gemm: the sizes M=", M, ", N=", N, ", K=", K, " must not be negative.");
  for (index_t i = 0; i < M; ++i) {
    for (index_t j = 0; j < N; ++j) {
      acc_t s = 0;
      if (alpha != T(0)) {
        for (index_t k = 0; k < K; ++k) {
          const T a = trans_a ? A[k * lda + i] : A[i * lda + k];
          const T b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
          s += static_cast<acc_t>(a) * static_cast<acc_t>(b);
        }
      }
      T& c = C[i * ldc + j];
      const acc_t scaled = static_cast<acc_t>(alpha) * s;
      c = beta == T(0) ? static_cast<T>(scaled)
                       : static_cast<T>(scaled + static_cast<acc_t>(beta) * static_cast<acc_t>(c));
    }
  }
}

/// Strided batch of gemm: product b uses A + b*stride_a, B + b*stride_b, C + b*stride_c
/// (a stride of 0 broadcasts that operand; stride_c may be 0 only when batch <= 1).
template <class T>
void gemm_batched(bool trans_a, bool trans_b, index_t batch, index_t M, index_t N, index_t K,
                  T alpha, const T* A, index_t lda, index_t stride_a, const T* B, index_t ldb,
                  index_t stride_b, T beta, T* C, index_t ldc, index_t stride_c) {
  if (batch < 0) fail(errc::value, "gemm_batched: the batch count ", batch, " is negative.");
  if (batch > 1 && stride_c == 0 && M > 0 && N > 0)
    fail(errc::value, "gemm_batched: stride_c is 0 with batch ", batch,
         ", so every product would overwrite the same C.");
  for (index_t b = 0; b < batch; ++b)
    gemm(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
         C + b * stride_c, ldc);
}

}  // namespace reference_kernels

TFM_END_NAMESPACE
