// typeformer/ops/matmul.hpp
//
// Matrix products of tensors, forward (the vjp arrives with autodiff/).
//
//   matmul(a, b)   a (..., M, K) x b (..., K, N) -> (..., M, N). Leading (batch) axes broadcast
//                  NumPy-style: (B, T, C) x (C, N) is one GEMM of (B*T, C) x (C, N);
//                  (B, H, T, D) x (B, H, D, T) is a batched GEMM.
//   Transposed operands are views: matmul(q, transpose(k)) passes k's layout to the GEMM as a
//   transpose flag, no copy. Operands whose last two axes are neither row- nor column-contiguous
//   are copied once. A static mismatch of the inner extents is a compile error naming both
//   shapes; a dynamic one throws tfm::shape_error.
//
// Differentiable form: matmul(var a, var b) records dA = dC B^T and dB = A^T dC (summed over
// broadcast batch axes). When B is a shared matrix (rank 2) the batch folds into the rows and
// each gradient is one GEMM accumulated straight into the gradient buffer (beta = 1).
//
// Element types: float and double run natively; bf16/f16 operands are widened to float, multiplied
// in float and rounded once to the operand type.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/backend/reference/gemm.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <array>
#include <cstring>
#include <optional>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

// ---- backend adapters -----------------------------------------------------------------------
template <class T>
void gemm_kernel(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A,
                 index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc, reference) {
  reference_kernels::gemm<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
template <class T>
void gemm_kernel(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A,
                 index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc, cpu) {
  cpu_kernels::gemm<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/// Static matmul checks (see core/shape.hpp): the last axis of A (its columns) and the
/// second-to-last axis of B (its rows) are static and differ; the batch (leading) axes of A and
/// B cannot broadcast at an axis counted from the right of the operands (2 = the last batch axis).
template <class ShapeA, class ShapeB>
struct matmul_inner_extents_differ;  // tfm::matmul: A's columns must equal B's rows
template <class ShapeA, class ShapeB, class AxisFromRight>
struct matmul_batch_axes_cannot_broadcast;  // tfm::matmul: extents differ and neither is 1

/// Compile-time check of matmul operands and their result shape; a static mismatch of the inner
/// extents or of the batch axes is one compile error naming one of the checks above.
template <class ShapeA, class ShapeB>
struct matmul_static_check {
  static_assert(ShapeA::rank >= 2 && ShapeB::rank >= 2,
                "tfm::matmul: both operands need rank >= 2 (use unsqueeze<0> for a vector)");
  static constexpr index_t ka = ShapeA::static_extents[ShapeA::rank - 1];
  static constexpr index_t kb = ShapeB::static_extents[ShapeB::rank - 2];
  static_assert(detail::static_check < ka == dyn || kb == dyn || ka == kb,
                matmul_inner_extents_differ < ShapeA, ShapeB >> ::value);
  using batch_a = detail::take_shape_t<ShapeA, ShapeA::rank - 2>;
  using batch_b = detail::take_shape_t<ShapeB, ShapeB::rank - 2>;
  using batch_check = broadcast_shape<batch_a, batch_b>;
  static_assert(
      detail::static_check<batch_check::ok,
                           matmul_batch_axes_cannot_broadcast<
                               ShapeA, ShapeB, axis_from_right<batch_check::mismatch + 2>>>::value);
  using batch = typename batch_check::type;
  using result =
      typename detail::concat_shape<batch, shape<ShapeA::static_extents[ShapeA::rank - 2],
                                                 ShapeB::static_extents[ShapeB::rank - 1]>>::type;
};

namespace detail {
/// How the last two axes of a view are laid out for a GEMM.
struct matrix_layout {
  bool trans;
  index_t ld;
};
template <class V>
std::optional<matrix_layout> layout_of(const V& v) {
  constexpr std::size_t R = V::rank;
  index_t rows = v.extent(R - 2), cols = v.extent(R - 1);
  index_t sr = v.stride(R - 2), sc = v.stride(R - 1);
  if ((sc == 1 || cols == 1) && (rows == 1 || sr >= std::max<index_t>(cols, 1)))
    return matrix_layout{false, rows == 1 ? std::max<index_t>(cols, 1) : sr};
  if ((sr == 1 || rows == 1) && (cols == 1 || sc >= std::max<index_t>(rows, 1)))
    return matrix_layout{true, cols == 1 ? std::max<index_t>(rows, 1) : sc};
  return std::nullopt;
}

template <class T, class VA, class VB, class VC, class Backend>
void matmul_views(const VA& a, const VB& b, const VC& c, Backend be) {
  constexpr std::size_t Ra = VA::rank, Rb = VB::rank, Rc = VC::rank;
  const index_t M = a.extent(Ra - 2), K = a.extent(Ra - 1), N = b.extent(Rb - 1);
  auto la = layout_of(a), lb = layout_of(b);
  if (!la || !lb) {  // copy odd layouts once
    if (!la) {
      auto ca = eval(a);
      return matmul_views<T>(ca.view(), b, c, be);
    }
    auto cb = eval(b);
    return matmul_views<T>(a, cb.view(), c, be);
  }
  // Batch axes of the output; per-operand batch strides (0 where broadcast).
  constexpr std::size_t nb = Rc - 2;
  std::array<index_t, nb + 1> ext{}, sa{}, sb{}, sc{};
  for (std::size_t k = 0; k < nb; ++k) {
    ext[k] = c.extent(k);
    sc[k] = c.stride(k);
    std::size_t ka = k + Ra - Rc, kb = k + Rb - Rc;  // aligned on the right
    sa[k] = (k + Ra >= Rc && a.extent(ka) != 1) ? a.stride(ka) : 0;
    sb[k] = (k + Rb >= Rc && b.extent(kb) != 1) ? b.stride(kb) : 0;
    if (k + Ra < Rc) sa[k] = 0;
    if (k + Rb < Rc) sb[k] = 0;
  }
  index_t batches = 1;
  for (std::size_t k = 0; k < nb; ++k) batches *= ext[k];
  const index_t ldc = c.stride(Rc - 2);
  // Fold the batch into M when B is shared and A's rows (and C's) are evenly spaced.
  if (nb > 0 && !la->trans && batches > 1) {
    bool fold = true;
    index_t rows_stride = la->ld;
    index_t expect_a = M * rows_stride, expect_c = M * ldc;
    for (std::size_t k = nb; k-- > 0;) {
      if (ext[k] == 1) continue;
      fold = fold && sb[k] == 0 && sa[k] == expect_a && sc[k] == expect_c;
      expect_a *= ext[k];
      expect_c *= ext[k];
    }
    if (fold) {
      gemm_kernel<T>(false, lb->trans, M * batches, N, K, T(1), a.data(), la->ld, b.data(), lb->ld,
                     T(0), c.data(), ldc, be);
      return;
    }
  }
  for (index_t bi = 0; bi < batches; ++bi) {
    index_t r = bi, oa = 0, ob = 0, oc = 0;
    for (std::size_t k = nb; k-- > 0;) {
      index_t i = r % ext[k];
      r /= ext[k];
      oa += i * sa[k];
      ob += i * sb[k];
      oc += i * sc[k];
    }
    gemm_kernel<T>(la->trans, lb->trans, M, N, K, T(1), a.data() + oa, la->ld, b.data() + ob,
                   lb->ld, T(0), c.data() + oc, ldc, be);
  }
}

template <class X>
auto matmul_operand(X&& x) {
  // A dense view of x (expressions are evaluated once).
  if constexpr (view_type<X> || (tensor_type<X> && std::is_lvalue_reference_v<X>))
    return as_view(std::forward<X>(x));
  else if constexpr (tensor_type<X>)
    return std::remove_cvref_t<X>(std::move(x));  // a temporary: keep it alive here
  else
    return eval(std::forward<X>(x));
}
}  // namespace detail

/// a (..., M, K) x b (..., K, N) -> (..., M, N), with the backend of a.
template <tensor_operand XA, tensor_operand XB>
auto matmul(XA&& xa, XB&& xb) {
  using NA = detail::node_t<XA>;
  using NB = detail::node_t<XB>;
  using SA = typename NA::shape_type;
  using SB = typename NB::shape_type;
  using check = matmul_static_check<SA, SB>;
  using SC = typename check::result;
  using TA = typename NA::value_type;
  using T = std::remove_cv_t<TA>;
  static_assert(std::is_same_v<T, std::remove_cv_t<typename NB::value_type>>,
                "tfm::matmul: both operands must have the same element type (use tfm::cast)");
  static_assert(is_floating_v<T>, "tfm::matmul: needs floating-point operands");
  using Backend = detail::node_backend_or_cpu<NA>;
  // Keep evaluated operands alive for the whole call.
  decltype(auto) ha = detail::matmul_operand(std::forward<XA>(xa));
  decltype(auto) hb = detail::matmul_operand(std::forward<XB>(xb));
  auto a = ha.view();
  auto b = hb.view();
  constexpr std::size_t Ra = SA::rank, Rb = SB::rank;
  if (a.extent(Ra - 1) != b.extent(Rb - 2))
    fail(errc::shape, "tfm::matmul: inner extents differ: A ", a.shape().to_string(), " has ",
         a.extent(Ra - 1), " columns (axis ", Ra - 1, ") but B ", b.shape().to_string(), " has ",
         b.extent(Rb - 2), " rows (axis ", Rb - 2, ").");
  auto ba = detail::take_shape_t<SA, Ra - 2>::from_extents([&] {
    std::array<index_t, Ra - 2> e{};
    for (std::size_t k = 0; k + 2 < Ra; ++k) e[k] = a.extent(k);
    return e;
  }());
  auto bb = detail::take_shape_t<SB, Rb - 2>::from_extents([&] {
    std::array<index_t, Rb - 2> e{};
    for (std::size_t k = 0; k + 2 < Rb; ++k) e[k] = b.extent(k);
    return e;
  }());
  auto bc = broadcast_shapes(ba, bb);
  std::array<index_t, SC::rank> ec{};
  for (std::size_t k = 0; k + 2 < SC::rank; ++k) ec[k] = bc.extent(k);
  ec[SC::rank - 2] = a.extent(Ra - 2);
  ec[SC::rank - 1] = b.extent(Rb - 1);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    auto c = tensor<T, SC, Backend>::uninitialized(SC::from_extents(ec));
    if (c.size() > 0 && a.extent(Ra - 1) > 0) detail::matmul_views<T>(a, b, c.view(), Backend{});
    if (a.extent(Ra - 1) == 0) c.fill(0);
    return c;
  } else {  // bf16 / f16: compute in float, round once
    auto fa = cast<float>(a);
    auto fb = cast<float>(b);
    auto c = tensor<float, SC, Backend>::uninitialized(SC::from_extents(ec));
    if (c.size() > 0 && a.extent(Ra - 1) > 0)
      detail::matmul_views<float>(fa.view(), fb.view(), c.view(), Backend{});
    if (a.extent(Ra - 1) == 0) c.fill(0);
    return cast<T>(c);
  }
}

// ---- differentiable matmul -------------------------------------------------------------------
namespace detail {
template <class T, std::size_t Ra, std::size_t Rb, class SC>
var_ptr<T> ad_matmul(const var_ptr<T>& ad, const var_ptr<T>& bd, const SC& sc) {
  constexpr std::size_t Rc = SC::rank;
  auto a = value_view<Ra>(ad);
  auto b = value_view<Rb>(bd);
  auto c = matmul(a, b);
  auto out = result<T>(extents_of(c));
  if (c.size())
    std::memcpy(static_cast<void*>(out->value.data()), c.data(),
                sizeof(T) * static_cast<std::size_t>(c.size()));
  (void)sc;
  record(out, "matmul", {ad, bd}, [ad, bd, o = out.get()] {
    using G = grad_t<T>;
    auto a = value_view<Ra>(ad);
    auto b = value_view<Rb>(bd);
    tensor_view<const G, dyn_shape<Rc>> g(o->grad_data(), dyn_shape_of<Rc>(o->extents));
    const index_t M = a.extent(Ra - 2), K = a.extent(Ra - 1), N = b.extent(Rb - 1);
    if constexpr (Rb == 2 && std::is_same_v<T, G>) {
      // B shared across the batch: fold the batch into the rows.
      const index_t rows = M == 0 || K == 0 ? 0 : a.size() / K;
      if (rows == 0 || K == 0 || N == 0) return;
      // Each GEMM writes the whole gradient: the first contribution is assigned (beta = 0).
      if (ad->requires_grad) {  // dA (rows, K) += g (rows, N) * B^T
        const auto da = ad->grad_for_overwrite();
        gemm_kernel<T>(false, true, rows, K, N, T(1), g.data(), N, b.data(), N, da.beta(), da.data,
                       K, cpu{});
      }
      if (bd->requires_grad) {  // dB (K, N) += A^T (K, rows) * g (rows, N)
        const auto db = bd->grad_for_overwrite();
        gemm_kernel<T>(true, false, K, N, rows, T(1), a.data(), K, g.data(), N, db.beta(), db.data,
                       N, cpu{});
      }
    } else {
      auto gt = cast<T>(g);
      if (ad->requires_grad) accumulate_grad(ad, matmul(gt, transpose(b)));
      if (bd->requires_grad) accumulate_grad(bd, matmul(transpose(a), gt));
    }
  });
  return out;
}
}  // namespace detail

/// Differentiable a (..., M, K) x b (..., K, N).
template <class T, class SA, class SB>
auto matmul(const var<T, SA>& a, const var<T, SB>& b) {
  using SC = typename matmul_static_check<SA, SB>::result;
  auto d = detail::ad_matmul<T, SA::rank, SB::rank>(a.data(), b.data(), SC{});
  return var<T, SC>(std::move(d));
}

TFM_END_NAMESPACE
