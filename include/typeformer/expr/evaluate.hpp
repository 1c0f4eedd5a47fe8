// typeformer/expr/evaluate.hpp
//
// WHAT THIS REPRESENTS
//   The evaluation protocol shared by all backends. An expression is evaluated into a
//   destination view by walking its elements as rows: the destination and every leaf get strides
//   relative to the destination's shape (0 where a leaf is broadcast), adjacent axes that are
//   contiguous for all of them are merged (so a dense expression is one long row), and the
//   backend runs each row through a cursor tree that mirrors the expression:
//
//     leaf_cursor<T, R>     base pointer, strides; row pointer and inner stride of the current row
//     scalar_cursor<C>      a value
//     map_cursor<F, Cs...>  the functor and its children
//
//   Backends provide `evaluate(dst_view, node, Backend)` and decide how to run a row (scalar
//   loop, SIMD, threads). assign() (what tensor::operator= calls) resizes owning destinations,
//   broadcasts into views, and routes overlapping sources through a temporary so that
//   `a = transpose(a)` and `a = a + select<0>(a, 0)` give the right answer; same-position
//   aliasing such as `x = x + x * x` is evaluated in place.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/node.hpp"

#include <array>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

// ---- cursors --------------------------------------------------------------------------------

template <class T, std::size_t R>
struct leaf_cursor {
  using value_type = T;  // storage type of the leaf
  using compute_type = compute_t<T>;
  const T* base = nullptr;
  std::array<index_t, R> strides{};  // relative to the destination's (merged) axes
  const T* row = nullptr;            // start of the current row
  index_t inner = 0;                 // stride along the row
};

template <class C>
struct scalar_cursor {
  using compute_type = C;
  C value;
};

template <class F, class... Cs>
struct map_cursor {
  using functor_type = F;
  std::tuple<Cs...> children;
};

namespace detail {

template <std::size_t R, class S>
std::array<index_t, R> broadcast_strides(const S& src_shape, const std::array<index_t, S::rank>& st,
                                         const std::array<index_t, R>& out_ext) {
  static_assert(S::rank <= R);
  std::array<index_t, R> b{};
  for (std::size_t i = 0; i < S::rank; ++i) {
    std::size_t o = R - S::rank + i;
    b[o] = (src_shape.extent(i) == 1 && out_ext[o] != 1) ? 0 : st[i];
  }
  return b;
}

template <std::size_t R, class N>
auto make_cursor(const N& n, const std::array<index_t, R>& out_ext) {
  if constexpr (is_scalar_leaf<N>::value) {
    return scalar_cursor<typename N::value_type>{n.value};
  } else if constexpr (is_owned_leaf<N>::value) {
    return make_cursor<R>(n.view(), out_ext);
  } else if constexpr (view_type<N>) {
    using T = typename N::value_type;
    leaf_cursor<T, R> c;
    c.base = n.data();
    c.strides = broadcast_strides<R>(n.shape(), n.strides(), out_ext);
    return c;
  } else {
    return detail::tuple_apply(
        [&](const auto&... a) {
          return map_cursor<typename N::functor_type, decltype(make_cursor<R>(a, out_ext))...>{
              {make_cursor<R>(a, out_ext)...}};
        },
        n.args);
  }
}

/// Calls f(strides_array&) for every leaf cursor.
template <class C, class Fn>
void for_each_leaf(C& c, Fn&& f) {
  if constexpr (requires { c.base; }) {
    f(c.strides);
  } else if constexpr (requires { c.children; }) {
    detail::tuple_apply([&](auto&... ch) { (for_each_leaf(ch, f), ...); }, c.children);
  }
}

/// Positions every leaf at the row whose outer index is idx[0 .. R-2].
template <class C, std::size_t R>
void set_row(C& c, const std::array<index_t, R>& idx) {
  if constexpr (requires { c.base; }) {
    index_t off = 0;
    for (std::size_t k = 0; k + 1 < R; ++k) off += idx[k] * c.strides[k];
    c.row = c.base + off;
    c.inner = c.strides[R - 1];
  } else if constexpr (requires { c.children; }) {
    detail::tuple_apply([&](auto&... ch) { (set_row(ch, idx), ...); }, c.children);
  }
}

/// Scalar value of element j of the current row, in compute type C.
template <class C, class Cur>
TFM_ALWAYS_INLINE C scalar_at(const Cur& c, index_t j) {
  if constexpr (requires { c.base; }) {
    return static_cast<C>(static_cast<compute_t<typename Cur::value_type>>(c.row[j * c.inner]));
  } else if constexpr (requires { c.value; }) {
    return static_cast<C>(c.value);
  } else {
    return detail::tuple_apply(
        [&](const auto&... ch) { return typename Cur::functor_type{}(scalar_at<C>(ch, j)...); },
        c.children);
  }
}

/// Lowest and highest byte addresses a strided view touches (for overlap tests).
template <class T, std::size_t R, class S>
std::pair<std::uintptr_t, std::uintptr_t> byte_range(const T* p, const S& s,
                                                     const std::array<index_t, R>& st) {
  auto lo = reinterpret_cast<std::uintptr_t>(p), hi = lo;
  if (s.size() == 0) return {lo, lo};
  for (std::size_t a = 0; a < R; ++a) {
    index_t d = (s.extent(a) - 1) * st[a] * static_cast<index_t>(sizeof(T));
    if (d < 0)
      lo += static_cast<std::uintptr_t>(d);
    else
      hi += static_cast<std::uintptr_t>(d);
  }
  return {lo, hi + sizeof(T)};
}

/// True when some leaf of `n` reads memory that `dst` writes at a different position, so
/// evaluating in place would read already-overwritten elements. With any_overlap, every leaf
/// that reads dst's memory at all counts (for a destination about to be reallocated).
template <class N, class V>
bool overlaps_badly(const N& n, const V& dst, bool any_overlap = false) {
  if constexpr (is_scalar_leaf<N>::value) {
    return false;
  } else if constexpr (is_owned_leaf<N>::value) {
    return false;  // a moved-in temporary cannot alias the destination
  } else if constexpr (view_type<N>) {
    if (n.size() == 0 || dst.size() == 0) return false;
    auto [a0, a1] = byte_range(n.data(), n.shape(), n.strides());
    auto [b0, b1] = byte_range(dst.data(), dst.shape(), dst.strides());
    if (a1 <= b0 || b1 <= a0) return false;
    if (any_overlap) return true;
    // Overlapping: safe only if the leaf reads exactly the element being written.
    constexpr std::size_t R = V::rank;
    if constexpr (N::rank > R) {
      return true;
    } else {
      if (static_cast<const void*>(n.data()) != static_cast<const void*>(dst.data()) ||
          sizeof(typename N::value_type) != sizeof(typename V::value_type))
        return true;
      auto bst = broadcast_strides<R>(n.shape(), n.strides(), dst.shape().extents());
      for (std::size_t a = 0; a < R; ++a)
        if (dst.extent(a) != 1 && bst[a] != dst.stride(a)) return true;
      return false;
    }
  } else {
    return detail::tuple_apply(
        [&](const auto&... a) { return (overlaps_badly(a, dst, any_overlap) || ...); }, n.args);
  }
}

template <class V>
void check_writable(const V& dst) {
  for (std::size_t a = 0; a < V::rank; ++a)
    if (dst.stride(a) == 0 && dst.extent(a) > 1)
      fail(errc::shape, "tfm: cannot assign to a view whose axis ", a,
           " is broadcast (stride 0): its elements overlap.");
}

}  // namespace detail

/// The merged iteration space of one evaluation: extents and destination strides after merging
/// contiguous axes, right-aligned in R slots (unused leading slots have extent 1).
template <std::size_t R>
struct row_space {
  std::array<index_t, R> ext{};
  std::array<index_t, R> dst_strides{};
  index_t rows = 0;  // product of ext[0 .. R-2]
  index_t cols = 0;  // ext[R-1]
};

namespace detail {
/// Merges axes that are contiguous for the destination and every leaf, in place.
template <std::size_t R, class Cur>
row_space<R> plan_rows(const std::array<index_t, R>& ext, const std::array<index_t, R>& dst_st,
                       Cur& cur) {
  row_space<R> sp;
  if constexpr (R == 0) {
    sp.rows = 1;
    sp.cols = 1;
    return sp;
  } else {
    // Keep axes with extent != 1; merge a kept axis into the one on its right when
    // stride[a] == stride[right] * ext[right] for the destination and all leaves.
    std::array<int, R> keep{};
    std::size_t nk = 0;
    for (std::size_t a = 0; a < R; ++a)
      if (ext[a] != 1) keep[nk++] = static_cast<int>(a);
    std::array<index_t, R> e{};
    std::array<std::size_t, R> src{};  // source axis of each merged slot (innermost member)
    std::size_t m = 0;                 // number of merged slots, built from the right
    bool ok_all;
    std::array<index_t, R> dst_new{};
    for (std::size_t t = nk; t-- > 0;) {
      std::size_t a = static_cast<std::size_t>(keep[t]);
      if (m > 0) {
        std::size_t slot = R - m;  // current leftmost merged slot
        index_t inner_ext = e[slot];
        std::size_t inner_src = src[slot];
        // The slot is a contiguous block of extent inner_ext with the stride of its innermost
        // source axis, for the destination and for every leaf.
        ok_all = dst_st[a] == dst_new[slot] * inner_ext;
        if (ok_all)
          for_each_leaf(cur, [&](const std::array<index_t, R>& st) {
            if (st[a] != st[inner_src] * inner_ext) ok_all = false;
          });
        if (ok_all) {
          e[slot] *= ext[a];
          continue;
        }
      }
      ++m;
      std::size_t slot = R - m;
      e[slot] = ext[a];
      src[slot] = a;
      dst_new[slot] = dst_st[a];
    }
    // Rewrite leaf strides into the merged slots.
    for_each_leaf(cur, [&](std::array<index_t, R>& st) {
      std::array<index_t, R> ns{};
      for (std::size_t k = 0; k < m; ++k) ns[R - 1 - k] = st[src[R - 1 - k]];
      st = ns;
    });
    for (std::size_t k = 0; k < R; ++k) sp.ext[k] = 1;
    for (std::size_t k = 0; k < m; ++k) {
      sp.ext[R - 1 - k] = e[R - 1 - k];
      sp.dst_strides[R - 1 - k] = dst_new[R - 1 - k];
    }
    sp.cols = sp.ext[R - 1];
    sp.rows = 1;
    for (std::size_t k = 0; k + 1 < R; ++k) sp.rows *= sp.ext[k];
    bool any_zero = false;
    for (std::size_t a = 0; a < R; ++a) any_zero |= ext[a] == 0;
    if (any_zero) sp.rows = sp.cols = 0;
    return sp;
  }
}

/// Multi-index of outer row number r (odometer over ext[0 .. R-2]).
template <std::size_t R>
std::array<index_t, R> row_index(const row_space<R>& sp, index_t r) {
  std::array<index_t, R> idx{};
  for (std::size_t k = R - 1; k-- > 0;) {
    idx[k] = r % sp.ext[k];
    r /= sp.ext[k];
  }
  return idx;
}

template <std::size_t R>
index_t dst_row_offset(const row_space<R>& sp, const std::array<index_t, R>& idx) {
  index_t off = 0;
  for (std::size_t k = 0; k + 1 < R; ++k) off += idx[k] * sp.dst_strides[k];
  return off;
}
}  // namespace detail

// ---- assignment: what tensor::operator= and tensor_view::operator= call ---------------------

/// Static assignment checks (see core/shape.hpp): `dst = src` where the static shape of src
/// (ShapeAssigned) and of the destination tensor (ShapeDestination) differ at an axis where both
/// extents are static, or in rank.
template <class ShapeAssigned, class ShapeDestination, class Axis>
struct assigned_shape_differs_from_destination;  // tfm: the static extents at this axis differ
template <class ShapeAssigned, class ShapeDestination>
struct assigned_rank_differs_from_destination;  // tfm: the expression's rank is not the tensor's

namespace detail {
template <class N>
using node_backend_t = typename N::backend_type;

/// The first axis where two static shapes of equal rank differ (both extents static), or the
/// rank when there is none.
template <class DstShape, class SrcShape>
constexpr std::size_t static_assign_mismatch() {
  for (std::size_t i = 0; i < DstShape::rank; ++i) {
    auto d = DstShape::static_extents[i], s = SrcShape::static_extents[i];
    if (d != dyn && s != dyn && d != s) return i;
  }
  return DstShape::rank;
}

/// static_assert(static_check_assign<DstShape, SrcShape>::value) checks that an expression of
/// shape SrcShape can be assigned to a tensor of shape DstShape; a static mismatch is one
/// compile error naming one of the checks above.
template <class DstShape, class SrcShape>
struct static_check_assign {
  static constexpr bool same_rank = DstShape::rank == SrcShape::rank;
  static_assert(
      static_check<same_rank, assigned_rank_differs_from_destination<SrcShape, DstShape>>::value);
  static constexpr std::size_t mismatch =
      same_rank ? static_assign_mismatch<DstShape, SrcShape>() : DstShape::rank;
  static_assert(
      static_check<mismatch == DstShape::rank, assigned_shape_differs_from_destination<
                                                   SrcShape, DstShape, axis<mismatch>>>::value);
  static constexpr bool value = true;
};

template <class V, class N>
void evaluate_checked(const V& dst, const N& node) {
  // Evaluate with the destination's backend; through a temporary when sources overlap badly.
  using B = typename V::backend_type;
  if (overlaps_badly(node, dst)) {
    using T = typename V::value_type;
    tensor<T, typename V::shape_type, B> tmp(dst.shape());
    evaluate(tmp.view(), node, B{});
    evaluate(dst, tmp.view(), B{});
  } else {
    evaluate(dst, node, B{});
  }
}
}  // namespace detail

/// dst (a view) = src broadcast to dst's shape.
template <class T, class S, class B, class X>
requires operand<X>
void assign(const tensor_view<T, S, B>& dst, X&& src) {
  static_assert(!std::is_const_v<T>, "tfm: cannot assign through a view of const elements");
  detail::check_writable(dst);
  if constexpr (std::is_arithmetic_v<std::remove_cvref_t<X>>) {
    detail::evaluate_checked(dst, scalar_leaf<compute_t<T>>{static_cast<compute_t<T>>(src)});
  } else {
    auto node = detail::to_node(std::forward<X>(src));
    using N = decltype(node);
    static_assert(N::shape_type::rank <= S::rank,
                  "tfm: the expression has more axes than the destination view");
    static_assert(detail::checked_broadcast_shape<S, typename N::shape_type>::value);
    auto b = broadcast_shapes(dst.shape(), node.shape());
    if (!same_extents(b, dst.shape()))
      fail(errc::shape, "tfm: cannot assign an expression of shape ", node.shape().to_string(),
           " to a view of shape ", dst.shape().to_string(), ".");
    detail::evaluate_checked(dst, node);
  }
}

/// dst (an owning tensor) = src; dst takes src's shape (static extents must agree).
template <class T, class S, class B, class St, class X>
requires tensor_operand<X>
void assign(tensor<T, S, B, St>& dst, X&& src) {
  auto node = detail::to_node(std::forward<X>(src));
  using N = decltype(node);
  using NS = typename N::shape_type;
  static_assert(detail::static_check_assign<S, NS>::value);
  if constexpr (S::rank == NS::rank) {  // else the check above is the one error
    S target = S::from_extents(node.shape().extents());
    // A destination that changes shape is reallocated (or re-laid out) before it is written, so
    // then a leaf that reads its storage at all (`a = a + b` growing a by broadcast, `a = a[0:2]`)
    // must go through the temporary too, not only leaves read at other positions.
    const bool reshaped = !same_extents(target, dst.shape());
    if (detail::overlaps_badly(node, dst.view(), reshaped)) {
      tensor<T, S, B, St> tmp = tensor<T, S, B, St>::uninitialized(target);
      evaluate(tmp.view(), node, B{});
      dst = std::move(tmp);
      return;
    }
    if (reshaped) dst.resize(target);
    evaluate(dst.view(), node, B{});
  }
}

/// The expression evaluated into a new tensor with its backend (tfm::cpu when it has none).
template <tensor_operand X>
auto eval(X&& x) {
  auto node = detail::to_node(std::forward<X>(x));
  using N = decltype(node);
  using B =
      std::conditional_t<std::is_void_v<typename N::backend_type>, cpu, typename N::backend_type>;
  using T = typename N::value_type;
  using S = typename N::shape_type;
  auto out = tensor<T, S, B>::uninitialized(S::from_extents(node.shape().extents()));
  evaluate(out.view(), node, B{});
  return out;
}

/// A contiguous copy of a tensor, view or expression (keeps the element type of dense inputs).
template <tensor_operand X>
auto contiguous(X&& x) {
  return eval(std::forward<X>(x));
}

/// Converts elements to another type: cast<float>(bf16_tensor).
template <class U, tensor_operand X>
auto cast(X&& x) {
  auto node = detail::to_node(std::forward<X>(x));
  using N = decltype(node);
  using B =
      std::conditional_t<std::is_void_v<typename N::backend_type>, cpu, typename N::backend_type>;
  using S = typename N::shape_type;
  auto out = tensor<U, S, B>::uninitialized(S::from_extents(node.shape().extents()));
  evaluate(out.view(), node, B{});
  return out;
}

/// What map::eval() calls: the node evaluated into a new tensor.
template <class F, class... Args>
auto eval_map_node(const map<F, Args...>& m) {
  return eval(m);
}

TFM_END_NAMESPACE
