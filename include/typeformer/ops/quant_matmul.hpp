// typeformer/ops/quant_matmul.hpp
//
// Products with block-quantized weights, the kernel chosen by the block type at compile time:
//
//   matmul(x, transpose(w))   x (..., M, K) floats, w a block tensor or view (N, K) (the GGUF /
//                             PyTorch layout of a linear layer's weight: out x in)
//                             -> (..., M, N) floats, y = x W^T (the engine's linear_bt_packed).
//                             transpose(w) is a view (quant/tensor.hpp), as for float matmul, so
//                             matmul(x, transpose(w)) and matmul(x, transpose(dequantize(w)))
//                             compute the same product.
//   matmul(x, w)              does not compile for a block w: its blocks run along K, and this
//                             product would contract over N (the error
//                             matmul_quantized_weight_not_transposed names both shapes).
//
// Kernels (backend tag of x, as tfm::matmul; a tag without its own overload falls back to
// reference): tfm::cpu with M == 1 (one row after folding the batch axes) and a block with an
// integer dot product (cpu_kernels::q8_dot_weight: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) quantizes x to
// 8-bit blocks and runs the GEMV of backend/cpu/quant/gemv_q.hpp (llama.cpp's decode path: the
// result is x_q8 W^T, within the activation rounding of x W^T); every other case runs gemm_dq_bt
// of backend/cpu/quant/gemm_q.hpp (dequantize while packing: the float GEMM with the
// dequantized W). tfm::reference dequantizes each row of W and sums in float, in k order.
//
// Shapes: the inner extents (x's last axis and w's K) are checked like tfm::matmul's: a static
// mismatch is the compile error matmul_inner_extents_differ<shape of x, shape of W^T>, a
// dynamic one tfm::shape_error with the same sentence. x must be float (else a static_assert).
#pragma once

#include "typeformer/backend/cpu/quant/gemm_q.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/ops/matmul.hpp"
#include "typeformer/quant/tensor.hpp"

#include <array>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

template <class ShapeX, class Block, class ShapeW>
struct matmul_quantized_weight_not_transposed;  // tfm::matmul: for x W^T write
                                                // matmul(x, transpose(w)); w's blocks run along K

// ---- backend adapters: C(M, N) = A(M, K) W^T, W (N, K) in rows of blocks ld_w apart ----------
template <class B>
void quant_matmul_bt_kernel(index_t M, index_t N, index_t K, const float* A, index_t lda,
                            const B* w, index_t ldw, float* C, index_t ldc, reference) {
  constexpr index_t QK = static_cast<index_t>(block_traits<B>::block_elements);
  std::vector<float> row(static_cast<std::size_t>(K));
  for (index_t n = 0; n < N; ++n) {
    tfm::dequantize(
        block_traits<B>::type,
        std::as_bytes(std::span<const B>(w + n * ldw, static_cast<std::size_t>(K / QK))),
        std::span<float>(row));
    for (index_t m = 0; m < M; ++m) {
      float acc = 0.0f;
      for (index_t k = 0; k < K; ++k) acc += A[m * lda + k] * row[static_cast<std::size_t>(k)];
      C[m * ldc + n] = acc;
    }
  }
}
template <class B>
void quant_matmul_bt_kernel(index_t M, index_t N, index_t K, const float* A, index_t lda,
                            const B* w, index_t ldw, float* C, index_t ldc, cpu) {
  if constexpr (cpu_kernels::q8_dot_weight<B>) {
    if (M == 1) {
      thread_local cpu_kernels::q8_activations scratch;  // grows once, then reused
      cpu_kernels::gemv_q(N, K, w, ldw, A, C, scratch);
      return;
    }
  }
  if constexpr (cpu_kernels::dequantizable_block<B>)
    cpu_kernels::gemm_dq_bt(M, N, K, A, lda, w, ldw, C, ldc);
  else
    quant_matmul_bt_kernel(M, N, K, A, lda, w, ldw, C, ldc, reference{});
}

namespace detail {
/// matmul(x, w) with block weights: one compile error naming the shapes and the block.
template <class SX, class B, class SW>
struct quant_matmul_layout_check {
  static_assert(
      static_check<dependent_false<B>, matmul_quantized_weight_not_transposed<SX, B, SW>>::value);
  static constexpr bool value = true;
};
}  // namespace detail

namespace detail {
/// C (rows of N) = A W^T for a float view A (..., M, K) with K > 0 and at least one row.
template <class Backend, class B, class VA, class VW>
void quant_matmul_rows(const VA& a, const VW& w, float* c, index_t N, index_t K) {
  constexpr std::size_t Ra = VA::rank;
  const index_t M = a.size() / K;
  auto run = [&](const float* pa, index_t lda) {
    quant_matmul_bt_kernel<B>(M, N, K, pa, lda, w.data(), w.row_stride(), c, N, Backend{});
  };
  // Rows of x with unit column stride and evenly spaced rows go straight to the kernel.
  bool direct;
  if constexpr (Ra == 2)
    direct = a.stride(1) == 1 && (M == 1 || a.stride(0) >= K);
  else
    direct = a.is_contiguous();
  if (direct) {
    run(a.data(), Ra == 2 && M > 1 ? a.stride(0) : K);
  } else {
    auto copy = eval(a);
    run(copy.data(), K);
  }
}
}  // namespace detail

/// x (..., M, K) W^T -> (..., M, N) for a block matrix W (N, K); see the header.
template <tensor_operand X, transposed_blocks_type WT>
auto matmul(X&& xa, const WT& wt) {
  using NA = detail::node_t<X>;
  using SA = typename NA::shape_type;
  using SB = typename WT::shape_type;  // (K, N)
  using B = std::remove_cv_t<typename WT::block_type>;
  using check = matmul_static_check<SA, SB>;
  using SC = typename check::result;
  using Backend = detail::node_backend_or_cpu<NA>;
  constexpr bool float_x = std::is_same_v<std::remove_cv_t<typename NA::value_type>, float>;
  static_assert(float_x,
                "tfm::matmul: block-quantized weights take float activations (use tfm::cast).");
  constexpr std::size_t Ra = SA::rank;
  decltype(auto) ha = detail::matmul_operand(std::forward<X>(xa));
  auto a = ha.view();
  const auto& w = wt.base();
  const index_t K = a.extent(Ra - 1), N = w.extent(0);
  if (K != w.extent(1))
    fail(errc::shape, "tfm::matmul: inner extents differ: A ", a.shape().to_string(), " has ", K,
         " columns (axis ", Ra - 1, ") but B ", wt.shape().to_string(), " has ", w.extent(1),
         " rows (axis 0); B is transpose(w) of a ", ggml_type_name(block_traits<B>::type),
         " tensor w ", w.shape().to_string(), ".");
  std::array<index_t, SC::rank> ec{};
  for (std::size_t k = 0; k + 1 < Ra; ++k) ec[k] = a.extent(k);
  ec[SC::rank - 1] = N;
  auto c = tensor<float, SC, Backend>::uninitialized(SC::from_extents(ec));
  if (c.size() == 0) return c;
  if (K == 0)
    c.fill(0);
  else if constexpr (float_x)
    detail::quant_matmul_rows<Backend, B>(a, w, c.data(), N, K);
  return c;
}

/// matmul(x, w) with block weights: does not compile (see the header); y = x W^T is
/// matmul(x, transpose(w)), and x W with W dequantized is matmul(x, dequantize(w)).
template <tensor_operand X, class W>
requires(quantized_tensor_type<W> || quantized_view_type<W>) auto matmul(X&&, const W&) {
  using SA = typename detail::node_t<X>::shape_type;
  using WW = std::remove_cvref_t<W>;
  static_assert(detail::quant_matmul_layout_check<SA, std::remove_cv_t<typename WW::block_type>,
                                                  typename WW::shape_type>::value);
  return tensor<float, SA>();
}

TFM_END_NAMESPACE
