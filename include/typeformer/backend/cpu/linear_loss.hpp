// typeformer/backend/cpu/linear_loss.hpp
//
// WHAT THIS REPRESENTS
//   The cpu backend's overloads of the fused head + loss's products (ops/linear_loss.hpp; the
//   entry points, their contracts and the reference oracle: backend/reference/linear_loss.hpp):
//
//     lce_logits_full(cpu, ...)              cpu_kernels::gemm: the logits are linear()'s bits,
//                                            so the stored mode equals the composition
//                                            cross_entropy(linear(x, W)) bitwise
//     lce_logits_rows(cpu, ...)              cpu_kernels::gemm_bt_row_stable: the packed
//                                            micro-kernel for every shape, which computes an
//                                            element of C the same way whatever block of rows or
//                                            columns holds it (gemm.hpp)
//     lce_logits_rows_match_full(cpu, ...)   where gemm() takes that packed path too (rows > 1,
//                                            V > 1, rows V C > 16^3), so lce_logits_rows gives
//                                            the stored logits' bits; elsewhere (the GEMV or the
//                                            unpacked path of tiny products) it does not
//     lce_grad_x, lce_grad_w (cpu, ...)      cpu_kernels::gemm, as linear()'s backward
//     lce_kernel_blocking<T>(cpu)            {mr, kc} of the micro-kernel (gemm/config.hpp):
//                                            chunks of whole depth blocks make dx's chunked sum
//                                            the one big product's, bitwise
//
//   Threads as cpu_kernels::gemm (all of tfm::num_threads(), serial inside a parallel region);
//   results do not depend on the thread count.
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/gemm/config.hpp"
#include "typeformer/backend/reference/linear_loss.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/core/index.hpp"

TFM_BEGIN_NAMESPACE

/// The micro-kernel's row tile (mr) and depth block (kc) for T.
template <class T>
constexpr lce_blocking lce_kernel_blocking(cpu) noexcept {
  return {cpu_kernels::gemm_config_t<T>::mr, cpu_kernels::gemm_config_t<T>::kc};
}

/// out (m, n; leading dimension ldo) = x (m, C) w (n, C)^T on the packed kernel, row-stable.
template <class T>
void lce_logits_rows(cpu, index_t m, index_t n, index_t C, const T* x, const T* w, T* out,
                     index_t ldo) {
  cpu_kernels::gemm_bt_row_stable(m, n, C, x, C, w, C, out, ldo, false);
}

/// out (rows, V) = x (rows, C) W (V, C)^T as linear() computes it.
template <class T>
void lce_logits_full(cpu, index_t rows, index_t V, index_t C, const T* x, const T* w, T* out) {
  cpu_kernels::gemm<T>(false, true, rows, V, C, T(1), x, C, w, C, T(0), out, V);
}

/// Whether gemm() computes x W^T for (rows, V, C) with the packed kernel (gemm.hpp's path
/// choice), whose elements lce_logits_rows reproduces in any block.
inline bool lce_logits_rows_match_full(cpu, index_t rows, index_t V, index_t C) noexcept {
  return rows > 1 && V > 1 && C > 0 && rows * V * C > cpu_kernels::detail::gemm_small_work;
}

/// dx (rows, C) = g (rows, n) w (n, C) + beta dx.
template <class T>
void lce_grad_x(cpu, index_t rows, index_t C, index_t n, const T* g, const T* w, T beta, T* dx) {
  cpu_kernels::gemm<T>(false, false, rows, C, n, T(1), g, n, w, C, beta, dx, C);
}

/// dw (n, C) = g^T (n, rows) x (rows, C) + beta dw, with g (rows, n).
template <class T>
void lce_grad_w(cpu, index_t n, index_t C, index_t rows, const T* g, const T* x, T beta, T* dw) {
  cpu_kernels::gemm<T>(true, false, n, C, rows, T(1), g, n, x, C, beta, dw, C);
}

TFM_END_NAMESPACE
