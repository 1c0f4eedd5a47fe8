// typeformer/core/shape.hpp
//
// WHAT THIS REPRESENTS
//   tfm::shape<E0, E1, ...>: the extents of a tensor, one template argument per axis. An extent
//   is a non-negative number when it is known at compile time and tfm::dyn when it is known only
//   at run time. Only the dynamic extents are stored (the idea of mdspan's extents): a fully
//   static shape is an empty object.
//
//     tfm::shape<4, tfm::dyn, 768> s(10);      // (4, 10, 768); stores one integer
//     s.extent(1) == 10; s.size() == 30720;
//
//   Shape algebra (broadcast_shape_t, concat_shape_t, ...) returns a static result whenever its
//   inputs are static, and a statically known mismatch is a compile error at the line that builds
//   the expression, naming both shapes and the axis.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <array>
#include <concepts>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

template <index_t... Es>
struct shape;

namespace detail {
template <class T>
struct is_shape : std::false_type {};
template <index_t... Es>
struct is_shape<shape<Es...>> : std::true_type {};
}  // namespace detail

/// Satisfied by every tfm::shape<...>.
template <class S>
concept shape_type = detail::is_shape<std::remove_cvref_t<S>>::value;

namespace detail {
/// Storage of a shape's dynamic extents: an array, or nothing at all for a fully static shape
/// (std::array<index_t, 0> is not an empty class, so it would cost every static tensor a byte,
/// and with 64-byte alignment an inline tensor a whole cache line).
struct no_dyn_extents {
  friend constexpr bool operator==(no_dyn_extents, no_dyn_extents) noexcept { return true; }
};
template <std::size_t N>
struct dyn_extents_store {
  using type = std::array<index_t, N>;
};
template <>
struct dyn_extents_store<0> {
  using type = no_dyn_extents;
};
}  // namespace detail

template <index_t... Es>
struct shape {
  static_assert(((Es >= 0 || Es == dyn) && ...),
                "tfm::shape: an extent must be >= 0 or tfm::dyn (negative extents are invalid)");

  /// Number of axes.
  static constexpr std::size_t rank = sizeof...(Es);
  /// Number of axes whose extent is tfm::dyn.
  static constexpr std::size_t rank_dynamic = ((Es == dyn ? 1 : 0) + ... + 0);
  /// True when every extent is known at compile time.
  static constexpr bool is_static = rank_dynamic == 0;
  /// The template arguments (tfm::dyn for run-time axes).
  static constexpr std::array<index_t, rank> static_extents{Es...};

  /// Product of the extents when all are static, else tfm::dyn.
  static constexpr index_t static_size = [] {
    if constexpr (!is_static) {
      return dyn;
    } else {
      index_t n = 1;
      ((n *= Es), ...);
      return n;
    }
  }();

  /// A shape whose dynamic extents are all zero (an empty tensor), or the static shape.
  constexpr shape() noexcept = default;

  /// Constructs from the dynamic extents only, in axis order: shape<4, dyn, dyn>(10, 20).
  template <std::integral... I>
  requires(sizeof...(I) == rank_dynamic &&
           rank_dynamic > 0) constexpr explicit shape(I... dynamic_extents)
      : dyn_{static_cast<index_t>(dynamic_extents)...} {
    for (index_t e : dyn_)
      if (e < 0) fail(errc::shape, "tfm::shape: extents must be >= 0, got ", e, ".");
  }

  /// Constructs from all extents; static ones must match their template argument.
  static constexpr shape from_extents(const std::array<index_t, rank>& all) {
    shape s;
    std::size_t d = 0;
    for (std::size_t i = 0; i < rank; ++i) {
      if (all[i] < 0)
        fail(errc::shape, "tfm::shape: axis ", i, " has negative extent ", all[i], ".");
      if (static_extents[i] == dyn) {
        if constexpr (rank_dynamic > 0) s.dyn_[d++] = all[i];
      } else if (static_extents[i] != all[i]) {
        fail(errc::shape, "tfm::shape: axis ", i, " is fixed to ", static_extents[i],
             " by the type ", shape().to_string(), " but the value is ", all[i], ".");
      }
    }
    return s;
  }

  /// Extent of axis i (0 <= i < rank).
  constexpr index_t extent(std::size_t i) const noexcept {
    if constexpr (rank_dynamic == 0) {
      return static_extents[i];
    } else {
      if (static_extents[i] != dyn) return static_extents[i];
      std::size_t d = 0;
      for (std::size_t k = 0; k < i; ++k) d += static_extents[k] == dyn ? 1 : 0;
      return dyn_[d];
    }
  }
  constexpr index_t operator[](std::size_t i) const noexcept { return extent(i); }

  /// All extents as an array.
  constexpr std::array<index_t, rank> extents() const noexcept {
    std::array<index_t, rank> a{};
    for (std::size_t i = 0; i < rank; ++i) a[i] = extent(i);
    return a;
  }

  /// Number of elements (1 for rank 0).
  constexpr index_t size() const noexcept {
    if constexpr (is_static) {
      return static_size;
    } else {
      index_t n = 1;
      for (std::size_t i = 0; i < rank; ++i) n *= extent(i);
      return n;
    }
  }

  /// "(4, 10, 768)"; with types: "shape<4, dyn, 768> = (4, 10, 768)" via describe().
  std::string to_string() const {
    std::string s = "(";
    for (std::size_t i = 0; i < rank; ++i) {
      if (i) s += ", ";
      s += std::to_string(extent(i));
    }
    if (rank == 1) s += ",";
    return s + ")";
  }

  friend constexpr bool operator==(const shape& a, const shape& b) noexcept {
    return a.dyn_ == b.dyn_;
  }

 private:
  [[no_unique_address]] typename detail::dyn_extents_store<rank_dynamic>::type dyn_{};
};

/// Shapes of different types compare equal when their extents are equal.
template <index_t... A, index_t... B>
requires(sizeof...(A) == sizeof...(B)) constexpr bool same_extents(const shape<A...>& a,
                                                                   const shape<B...>& b) noexcept {
  for (std::size_t i = 0; i < sizeof...(A); ++i)
    if (a.extent(i) != b.extent(i)) return false;
  return true;
}
template <index_t... A, index_t... B>
requires(sizeof...(A) != sizeof...(B)) constexpr bool same_extents(const shape<A...>&,
                                                                   const shape<B...>&) noexcept {
  return false;
}

/// The shape type with `N` dynamic axes: dyn_shape<2> == shape<dyn, dyn>.
namespace detail {
template <std::size_t N, index_t... Es>
struct make_dyn_shape : make_dyn_shape<N - 1, dyn, Es...> {};
template <index_t... Es>
struct make_dyn_shape<0, Es...> {
  using type = shape<Es...>;
};
}  // namespace detail
template <std::size_t N>
using dyn_shape = typename detail::make_dyn_shape<N>::type;

// ---- shape algebra --------------------------------------------------------------------------

namespace detail {

// Static extent of axis `i` counted from the right (0 = last); missing axes count as 1.
template <class S>
constexpr index_t static_extent_from_right(std::size_t i) {
  if (i >= S::rank) return 1;
  return S::static_extents[S::rank - 1 - i];
}

template <class SA, class SB>
constexpr bool static_broadcast_axis_ok(std::size_t i) {
  index_t a = static_extent_from_right<SA>(i), b = static_extent_from_right<SB>(i);
  return a == dyn || b == dyn || a == b || a == 1 || b == 1;
}

template <class SA, class SB>
constexpr index_t static_broadcast_extent(std::size_t i) {
  index_t a = static_extent_from_right<SA>(i), b = static_extent_from_right<SB>(i);
  if (a == 1) return b;
  if (b == 1) return a;
  if (a == dyn) return b;  // b static != 1: a must be 1 or b at run time; the result is b
  if (b == dyn) return a;
  return a == b ? a : dyn;  // a static mismatch (reported elsewhere) gives a dynamic extent
}

template <class SA, class SB, std::size_t R, std::size_t... I>
auto broadcast_shape_impl(std::index_sequence<I...>)
    -> shape<static_broadcast_extent<SA, SB>(R - 1 - I)...>;

}  // namespace detail

// ---- static shape checks that read at a glance -------------------------------------------
// A statically known shape mismatch is reported by naming an undefined class template whose name
// is the sentence and whose arguments are both shapes and the axis. For shape<4, 3> + shape<4, 4>
// the compiler's first error line is (GCC also writes tfm's inline namespace, tfm::abi_v0_1_0):
//   GCC 12:   error: invalid use of incomplete type 'struct tfm::shapes_cannot_broadcast<
//             tfm::shape<4, 3>, tfm::shape<4, 4>, tfm::axis_from_right<0> >'
//   Clang 14: error: implicit instantiation of undefined template 'tfm::shapes_cannot_broadcast<
//             tfm::shape<4, 3>, tfm::shape<4, 4>, tfm::axis_from_right<0>>'
// and a note below it shows the declaration's line, whose comment is the full sentence.
// Each mistake is one error: the check is a static_assert in a class that stays valid (Clang
// treats a class with an invalid member as invalid wherever it is used next), and a failing axis
// is dyn in the result, which no later static check rejects. The other checks:
// assigned_shape_differs_from_destination (expr/evaluate.hpp) and matmul_inner_extents_differ
// (ops/matmul.hpp), tested in tests/compile_fail/.

/// Axis tags in the names of the checks: counted from the right (0 = last, NumPy's broadcasting
/// alignment) and from the left (0 = first).
template <std::size_t I>
struct axis_from_right {};
template <std::size_t I>
struct axis {};

template <class ShapeA, class ShapeB, class AxisFromRight>
struct shapes_cannot_broadcast;  // tfm: at this axis the extents differ and neither is 1

namespace detail {
/// static_assert(static_check<Ok, Failure>::value) names Failure, an undefined check such as
/// shapes_cannot_broadcast<...>, where it must be complete unless Ok; `value` is true either way.
template <bool Ok, class Failure>
struct static_check {
  using type = typename Failure::type;  // the error is Failure's name; see its declaration below
  static constexpr bool value = true;
};
template <class Failure>
struct static_check<true, Failure> {
  static constexpr bool value = true;
};

/// The first axis (counted from the right) where two static shapes cannot broadcast, or the
/// broadcast rank when there is none.
template <class SA, class SB>
constexpr std::size_t static_broadcast_mismatch() {
  constexpr std::size_t rank = SA::rank > SB::rank ? SA::rank : SB::rank;
  for (std::size_t i = 0; i < rank; ++i)
    if (!static_broadcast_axis_ok<SA, SB>(i)) return i;
  return rank;
}
}  // namespace detail

/// The broadcast of two shape types (NumPy rules, aligned on the right), without diagnostics:
/// `ok` says whether the static extents can broadcast; a failing axis is dyn in `type`.
/// broadcast_shape_t is the same type and reports a static mismatch.
template <shape_type SA, shape_type SB>
struct broadcast_shape {
  static constexpr std::size_t rank = SA::rank > SB::rank ? SA::rank : SB::rank;
  /// The first failing axis counted from the right; `rank` when there is none.
  static constexpr std::size_t mismatch = detail::static_broadcast_mismatch<SA, SB>();
  static constexpr bool ok = mismatch == rank;
  using type =
      decltype(detail::broadcast_shape_impl<SA, SB, rank>(std::make_index_sequence<rank>{}));
};

namespace detail {
/// broadcast_shape<SA, SB>::type; instantiating it with a statically known mismatch is one
/// compile error naming shapes_cannot_broadcast<SA, SB, axis_from_right<I>>. In a function body:
/// static_assert(detail::checked_broadcast_shape<SA, SB>::value).
template <class SA, class SB>
struct checked_broadcast_shape {
  using B = broadcast_shape<SA, SB>;
  static_assert(
      static_check<B::ok, shapes_cannot_broadcast<SA, SB, axis_from_right<B::mismatch>>>::value);
  using type = typename B::type;
  static constexpr bool value = true;
};
}  // namespace detail

/// The broadcast of two shape types; a statically known mismatch is a compile error naming both
/// shapes and the axis (dynamic axes are checked by broadcast_shapes()).
template <shape_type SA, shape_type SB>
using broadcast_shape_t = typename detail::checked_broadcast_shape<SA, SB>::type;

/// Run-time broadcast of two shapes; throws tfm::shape_error naming both shapes and the axis.
/// It does not repeat the static check (broadcast_shape_t does it where the types are formed),
/// so that a static mismatch is reported once.
template <shape_type SA, shape_type SB>
constexpr typename broadcast_shape<SA, SB>::type broadcast_shapes(const SA& a, const SB& b) {
  using R = typename broadcast_shape<SA, SB>::type;
  std::array<index_t, R::rank> out{};
  for (std::size_t i = 0; i < R::rank; ++i) {  // i counts from the right
    index_t ea = i < SA::rank ? a.extent(SA::rank - 1 - i) : 1;
    index_t eb = i < SB::rank ? b.extent(SB::rank - 1 - i) : 1;
    index_t e;
    if (ea == eb || eb == 1)
      e = ea;
    else if (ea == 1)
      e = eb;
    else
      fail(errc::shape, "tfm: cannot broadcast shape ", a.to_string(), " with shape ",
           b.to_string(), ": axis ", R::rank - 1 - i, " of the result (", i,
           " from the right) has extents ", ea, " and ", eb, ", and neither is 1.");
    out[R::rank - 1 - i] = e;
  }
  return R::from_extents(out);
}

/// The shape with axis `Axis` removed (KeepDims: set to 1). Axis must be in [0, rank).
namespace detail {
template <class S, std::size_t Axis, bool KeepDims, std::size_t... I>
auto reduce_shape_impl(std::index_sequence<I...>)
    -> shape<(I < Axis ? S::static_extents[I]
                       : (I == Axis && KeepDims ? 1 : S::static_extents[KeepDims ? I : I + 1]))...>;
}  // namespace detail
template <shape_type S, std::size_t Axis, bool KeepDims = false>
using reduce_shape_t = decltype(detail::reduce_shape_impl<S, Axis, KeepDims>(
    std::make_index_sequence < KeepDims ? S::rank : S::rank - 1 > {}));

template <shape_type Out, shape_type S>
constexpr Out reduce_shape(const S& s, std::size_t axis, bool keepdims) {
  std::array<index_t, Out::rank> e{};
  std::size_t k = 0;
  for (std::size_t i = 0; i < S::rank; ++i) {
    if (i == axis) {
      if (keepdims) e[k++] = 1;
    } else {
      e[k++] = s.extent(i);
    }
  }
  return Out::from_extents(e);
}

/// Shape with axes permuted: result axis i is input axis P[i].
namespace detail {
template <class S, std::size_t... P>
using permute_shape_t = shape<S::static_extents[P]...>;
}

/// Normalises an axis that may be negative (-1 = last) at compile time.
template <int Axis, std::size_t Rank>
constexpr std::size_t normalize_axis() {
  static_assert(Axis < static_cast<int>(Rank) && Axis >= -static_cast<int>(Rank),
                "tfm: the axis is out of range for this tensor's rank");
  return Axis < 0 ? static_cast<std::size_t>(Axis + static_cast<int>(Rank))
                  : static_cast<std::size_t>(Axis);
}

/// The first N axes of S, and the concatenation of two shape types.
namespace detail {
template <class S, std::size_t... I>
auto take_shape_impl(std::index_sequence<I...>) -> shape<S::static_extents[I]...>;
// N is clamped to the rank: after a failed rank check (matmul of a vector), S::rank - 2 wraps
// around, and a pack of 2^64 indices would exhaust the compiler's memory.
template <class S, std::size_t N>
using take_shape_t =
    decltype(take_shape_impl<S>(std::make_index_sequence<(N <= S::rank ? N : S::rank)>{}));

template <class A, class B>
struct concat_shape;
template <index_t... A, index_t... B>
struct concat_shape<shape<A...>, shape<B...>> {
  using type = shape<A..., B...>;
};

template <class S, std::size_t Axis, index_t E, std::size_t... I>
auto set_extent_impl(std::index_sequence<I...>) -> shape<(I == Axis ? E : S::static_extents[I])...>;
/// S with axis Axis's static extent replaced by E.
template <class S, std::size_t Axis, index_t E>
using set_extent_t = decltype(set_extent_impl<S, Axis, E>(std::make_index_sequence<S::rank>{}));
}  // namespace detail

/// Row-major (C order) strides of a shape, in elements.
template <shape_type S>
constexpr std::array<index_t, S::rank> row_major_strides(const S& s) noexcept {
  std::array<index_t, S::rank> st{};
  index_t acc = 1;
  for (std::size_t i = S::rank; i-- > 0;) {
    st[i] = acc;
    acc *= s.extent(i);
  }
  return st;
}

TFM_END_NAMESPACE
