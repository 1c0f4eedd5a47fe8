// typeformer/core/view.hpp
//
// Views: new layouts over the same elements, never a copy. Each takes a tensor (lvalue) or a
// view and returns a tensor_view; static extents stay static where the operation allows.
//
//   transpose(x)                 (A, B) -> (B, A)
//   permute<P...>(x)             axis i of the result is axis P[i] of x
//   slice<Axis>(x, b, e, step)   elements b, b+step, ... < e along Axis (extent becomes dyn)
//   slice<Axis, B, E>(x)         static bounds: the extent stays static (E - B)
//   select<Axis>(x, i)           fixes Axis at index i: rank drops by one
//   reshape(x, shape)            same elements, new extents (x must be contiguous)
//   broadcast_to(x, shape)       NumPy broadcast: size-1 and missing axes get stride 0
//   unsqueeze<Axis>(x)           inserts an axis of extent 1
//
// Views of temporaries would dangle, so a view of an rvalue tensor is a compile error.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

#include <array>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

namespace detail {
template <class X>
struct view_of;
template <class T, class S, class B, class St>
struct view_of<tensor<T, S, B, St>&> {
  using type = tensor_view<T, S, B>;
};
template <class T, class S, class B, class St>
struct view_of<const tensor<T, S, B, St>&> {
  using type = tensor_view<const T, S, B>;
};
template <class T, class S, class B, class St>
struct view_of<tensor<T, S, B, St>&&> {  // rejected by as_view's static_assert; defined so
  using type = tensor_view<T, S, B>;     // that the assertion is the only error printed
};
template <class T, class S, class B, class St>
struct view_of<tensor<T, S, B, St>> : view_of<tensor<T, S, B, St>&&> {};
template <class T, class S, class B>
struct view_of<tensor_view<T, S, B>> {
  using type = tensor_view<T, S, B>;
};
template <class T, class S, class B>
struct view_of<tensor_view<T, S, B>&> : view_of<tensor_view<T, S, B>> {};
template <class T, class S, class B>
struct view_of<const tensor_view<T, S, B>&> : view_of<tensor_view<T, S, B>> {};
template <class T, class S, class B>
struct view_of<tensor_view<T, S, B>&&> : view_of<tensor_view<T, S, B>> {};
}  // namespace detail

/// The view type of X (a tensor lvalue or a view).
template <class X>
using view_t = typename detail::view_of<X>::type;

/// A view of a tensor lvalue or a view. Temporaries are rejected (the view would dangle).
template <class X>
requires dense_type<X>
auto as_view(X&& x) {
  static_assert(!(tensor_type<X> && std::is_rvalue_reference_v<X&&>),
                "tfm: cannot take a view of a temporary tensor: the view would dangle. Store the "
                "tensor in a variable first.");
  return view_t<X&&>(x.view());
}

namespace detail {
template <class V, class S2>
using rebind_view_t = tensor_view<typename V::element_type, S2, typename V::backend_type>;

template <class S, std::size_t... P>
constexpr bool is_permutation() {
  constexpr std::size_t n = sizeof...(P);
  std::array<std::size_t, n> p{P...};
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] >= n) return false;
    for (std::size_t j = 0; j < i; ++j)
      if (p[j] == p[i]) return false;
  }
  return n == S::rank;
}
}  // namespace detail

/// Permutes axes: result axis i is axis P[i] of x.
template <std::size_t... P, class X>
requires dense_type<X>
auto permute(X&& x) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(detail::is_permutation<S, P...>(),
                "tfm::permute: the axes must be a permutation of 0 .. rank-1");
  using S2 = detail::permute_shape_t<S, P...>;
  std::array<index_t, S::rank> e{v.extent(P)...};
  std::array<index_t, S::rank> st{v.stride(P)...};
  return detail::rebind_view_t<V, S2>(v.data(), S2::from_extents(e), st);
}

/// Swaps the two axes of a matrix (rank 2), or the last two axes of a batch of matrices.
template <class X>
requires dense_type<X>
auto transpose(X&& x) {
  constexpr std::size_t r = std::remove_cvref_t<X>::rank;
  static_assert(r >= 2, "tfm::transpose needs a tensor of rank >= 2");
  if constexpr (r == 2)
    return permute<1, 0>(std::forward<X>(x));
  else if constexpr (r == 3)
    return permute<0, 2, 1>(std::forward<X>(x));
  else
    return permute<0, 1, 3, 2>(std::forward<X>(x));
}

namespace detail {
inline index_t checked_slice_count(index_t extent, index_t b, index_t e, index_t step,
                                   std::size_t axis) {
  if (step <= 0)
    fail(errc::shape, "tfm::slice: the step must be positive, got ", step, " on axis ", axis, ".");
  if (b < 0 || e < b || e > extent)
    fail(errc::index, "tfm::slice: the range [", b, ", ", e, ") is not inside axis ", axis,
         " of extent ", extent, ".");
  return (e - b + step - 1) / step;
}
}  // namespace detail

/// Elements begin, begin+step, ... (< end) along Axis; the extent becomes dynamic.
template <int Axis, class X>
requires dense_type<X>
auto slice(X&& x, index_t begin, index_t end, index_t step = 1) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  using S2 = detail::set_extent_t<S, ax, dyn>;
  index_t n = detail::checked_slice_count(v.extent(ax), begin, end, step, ax);
  auto e = v.shape().extents();
  e[ax] = n;
  auto st = v.strides();
  st[ax] *= step;
  return detail::rebind_view_t<V, S2>(v.data() + begin * v.stride(ax), S2::from_extents(e), st);
}

/// Static bounds [Begin, End) along Axis: the extent stays static.
template <int Axis, index_t Begin, index_t End, class X>
requires dense_type<X>
auto slice(X&& x) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  static_assert(Begin >= 0 && End >= Begin,
                "tfm::slice: the static range must be non-empty and ordered");
  static_assert(S::static_extents[ax] == dyn || End <= S::static_extents[ax],
                "tfm::slice: the static range ends past the axis's static extent");
  using S2 = detail::set_extent_t<S, ax, End - Begin>;
  detail::checked_slice_count(v.extent(ax), Begin, End, 1, ax);
  auto e = v.shape().extents();
  e[ax] = End - Begin;
  return detail::rebind_view_t<V, S2>(v.data() + Begin * v.stride(ax), S2::from_extents(e),
                                      v.strides());
}

/// Fixes Axis at index i; the result has one axis fewer.
template <int Axis, class X>
requires dense_type<X>
auto select(X&& x, index_t i) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  constexpr std::size_t ax = normalize_axis<Axis, S::rank>();
  using S2 = reduce_shape_t<S, ax, false>;
  if (i < 0 || i >= v.extent(ax))
    fail(errc::index, "tfm::select: index ", i, " is out of range for axis ", ax, " of extent ",
         v.extent(ax), ".");
  std::array<index_t, S2::rank> st{};
  for (std::size_t a = 0, k = 0; a < S::rank; ++a)
    if (a != ax) st[k++] = v.stride(a);
  return detail::rebind_view_t<V, S2>(v.data() + i * v.stride(ax),
                                      reduce_shape<S2>(v.shape(), ax, false), st);
}

/// Inserts an axis of extent 1 before axis Axis (Axis may equal rank: append).
template <std::size_t Axis, class X>
requires dense_type<X>
auto unsqueeze(X&& x) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(Axis <= S::rank, "tfm::unsqueeze: the axis must be <= rank");
  using S2 = decltype([]<std::size_t... I>(std::index_sequence<I...>) {
    return shape<(I < Axis ? S::static_extents[I] : I == Axis ? 1 : S::static_extents[I - 1])...>{};
  }(std::make_index_sequence<S::rank + 1>{}));
  std::array<index_t, S2::rank> e{}, st{};
  for (std::size_t a = 0, k = 0; a < S2::rank; ++a) {
    if (a == Axis) {
      e[a] = 1;
      st[a] = 0;
    } else {
      e[a] = v.extent(k);
      st[a] = v.stride(k);
      ++k;
    }
  }
  return detail::rebind_view_t<V, S2>(v.data(), S2::from_extents(e), st);
}

/// The same elements under new extents. x must be contiguous (else shape_error telling the
/// caller to make a contiguous copy with .eval() / tfm::contiguous()).
template <shape_type S2, class X>
requires dense_type<X>
auto reshape(X&& x, const S2& new_shape) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(!(S::is_static && S2::is_static) || S::static_size == S2::static_size,
                "tfm::reshape: the static shapes hold different numbers of elements");
  if (new_shape.size() != v.size())
    fail(errc::shape, "tfm::reshape: cannot reshape ", v.shape().to_string(), " (", v.size(),
         " elements) to ", new_shape.to_string(), " (", new_shape.size(), " elements).");
  if (!v.is_contiguous())
    fail(errc::shape, "tfm::reshape: the view ", v.shape().to_string(),
         " is not contiguous; make a contiguous copy first (tfm::contiguous(x) or .eval()).");
  return detail::rebind_view_t<V, S2>(v.data(), new_shape);
}
/// Static reshape: reshape<shape<4, 6>>(x).
template <shape_type S2, class X>
requires(dense_type<X>&& S2::is_static) auto reshape(X&& x) {
  return reshape(std::forward<X>(x), S2{});
}

/// NumPy broadcast of x to `target` (aligned on the right): size-1 and missing axes repeat.
template <shape_type S2, class X>
requires dense_type<X>
auto broadcast_to(X&& x, const S2& target) {
  auto v = as_view(std::forward<X>(x));
  using V = decltype(v);
  using S = typename V::shape_type;
  static_assert(S2::rank >= S::rank,
                "tfm::broadcast_to: the target rank is smaller than the source rank");
  static_assert(detail::checked_broadcast_shape<S, S2>::value);
  std::array<index_t, S2::rank> st{};
  for (std::size_t i = 0; i < S2::rank; ++i) {  // i from the right
    std::size_t a2 = S2::rank - 1 - i;
    if (i >= S::rank) {
      st[a2] = 0;
      continue;
    }
    std::size_t a = S::rank - 1 - i;
    if (v.extent(a) == target.extent(a2))
      st[a2] = v.stride(a);
    else if (v.extent(a) == 1)
      st[a2] = 0;
    else
      fail(errc::shape, "tfm::broadcast_to: cannot broadcast ", v.shape().to_string(), " to ",
           target.to_string(), ": axis ", a, " has extent ", v.extent(a), " but the target has ",
           target.extent(a2), ".");
  }
  return detail::rebind_view_t<V, S2>(v.data(), target, st);
}

TFM_END_NAMESPACE
