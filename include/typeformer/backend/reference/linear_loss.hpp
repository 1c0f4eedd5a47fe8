// typeformer/backend/reference/linear_loss.hpp
//
// WHAT THIS REPRESENTS
//   The products of the fused language-model head + loss (ops/linear_loss.hpp,
//   linear_cross_entropy), overloaded on the backend tag (backend/tags.hpp). With x the rows'
//   hidden states (rows x C), W the head (V x C, stored (out, in) like linear's weight) and G a
//   vocabulary chunk's softmax gradient:
//
//     lce_logits_full(tag, rows, V, C, x, w, out)          out (rows, V) = x W^T: the logits as
//                                                          the stored mode keeps them
//     lce_logits_rows(tag, m, n, C, x, w, out, ldo)         out (m, n; leading dimension ldo) =
//                                                          x (m, C) w (n, C)^T, row-stable (below):
//                                                          a block of rows or a vocabulary chunk
//                                                          of the logits (recompute and
//                                                          frozen_rows modes)
//     lce_logits_rows_match_full(tag, rows, V, C)          whether lce_logits_rows gives each
//                                                          element the bits lce_logits_full gives
//                                                          it at this shape (the recompute mode
//                                                          runs only then)
//     lce_grad_x(tag, rows, C, n, g, w, beta, dx)           dx (rows, C) = g (rows, n) w (n, C)
//                                                          + beta dx
//     lce_grad_w(tag, n, C, rows, g, x, beta, dw)           dw (n, C) = g^T (n, rows) x (rows, C)
//                                                          + beta dw
//     lce_kernel_blocking<T>(tag)                          how the products block their work
//                                                          (lce_blocking: the op's row blocks and
//                                                          vocabulary chunks follow it)
//
//   This file holds the reference overloads, the oracle of the cpu ones
//   (backend/cpu/linear_loss.hpp) and the fallback of every tag derived from tfm::reference:
//   reference_kernels::gemm's plain loops (backend/reference/gemm.hpp: one sum per element in
//   double, long double for double where wider, rounded once), no SIMD, no threads.
//
// CONTRACTS (every backend; T float or double)
//   - Buffers are row-major; x is rows x C (row stride C), w is n x C (row stride C), g is
//     rows x n (row stride n), dx is rows x C, dw is n x C; outputs do not overlap inputs.
//   - beta is 0 or 1: 0 means the output is not read (it may hold NaN), 1 adds to it.
//   - Row-stable (lce_logits_rows): element (i, j) of out depends only on row i of x, row j of w
//     and C, not on m, n, or the block of rows or columns it is computed in; so a row's logits
//     have the same bits whatever rows share the call, and a vocabulary chunk's logits are the
//     same bits as that stretch of the whole row's.
//   - Where lce_logits_rows_match_full(tag, rows, V, C) holds, lce_logits_rows computes every
//     element of x W^T (any block of x's rows, any chunk of W's rows) with the bits that
//     lce_logits_full gives it for the whole (rows, V, C) product.
//   - lce_blocking: row_tile >= 1 (the row-stable product's natural block of rows: the op's
//     forward row blocks are multiples of it, so no block ends in a partial tile but the last);
//     depth_block >= 1 (the depth block of lce_grad_x: the op's vocabulary chunks are multiples
//     of it, so that dx = sum over chunks of G_c W_c, the first chunk with the caller's beta and
//     the next ones with beta 1, adds its V terms in the blocks and order of one product G W of
//     depth V — bitwise, on a backend whose product sums depth blocks in order, as cpu's).
//   - Sizes are >= 0; a zero size means nothing is read (an output with elements is scaled by
//     beta as above).
//   Results of different backends agree to rounding (TESTING.md's matmul bound), not bitwise.
#pragma once

#include "typeformer/backend/reference/gemm.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/core/index.hpp"

#include <type_traits>

TFM_BEGIN_NAMESPACE

/// How a backend's fused-loss products block their work (file comment, CONTRACTS).
struct lce_blocking {
  index_t row_tile;     ///< rows the row-stable product computes together
  index_t depth_block;  ///< depth block of lce_grad_x's sum over the vocabulary
};

/// The reference computes every element on its own: any row block and chunk will do.
template <class T>
constexpr lce_blocking lce_kernel_blocking(reference) noexcept {
  return {1, 256};
}

/// out (m, n; leading dimension ldo) = x (m, C) w (n, C)^T, one double sum per element.
template <class T>
void lce_logits_rows(reference, index_t m, index_t n, index_t C, const T* x, const T* w, T* out,
                     index_t ldo) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  reference_kernels::gemm<T>(false, true, m, n, C, T(1), x, C, w, C, T(0), out, ldo);
}

/// out (rows, V) = x (rows, C) W (V, C)^T: the same loops as lce_logits_rows.
template <class T>
void lce_logits_full(reference, index_t rows, index_t V, index_t C, const T* x, const T* w,
                     T* out) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  reference_kernels::gemm<T>(false, true, rows, V, C, T(1), x, C, w, C, T(0), out, V);
}

/// Both logit products are the same loops, so they agree whenever there is a product at all.
inline bool lce_logits_rows_match_full(reference, index_t rows, index_t V, index_t C) noexcept {
  return rows > 0 && V > 0 && C > 0;
}

/// dx (rows, C) = g (rows, n) w (n, C) + beta dx.
template <class T>
void lce_grad_x(reference, index_t rows, index_t C, index_t n, const T* g, const T* w, T beta,
                T* dx) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  reference_kernels::gemm<T>(false, false, rows, C, n, T(1), g, n, w, C, beta, dx, C);
}

/// dw (n, C) = g^T (n, rows) x (rows, C) + beta dw, with g (rows, n).
template <class T>
void lce_grad_w(reference, index_t n, index_t C, index_t rows, const T* g, const T* x, T beta,
                T* dw) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  reference_kernels::gemm<T>(true, false, n, C, rows, T(1), g, n, x, C, beta, dw, C);
}

TFM_END_NAMESPACE
