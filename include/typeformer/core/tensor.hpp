// typeformer/core/tensor.hpp
//
// WHAT THIS REPRESENTS
//   tfm::tensor<T, Shape, Backend, Storage>: an owning, contiguous, row-major array of T whose
//   extents are given by Shape (static where known, dynamic where not). Tensors are values:
//   copying copies the elements, moving is cheap. Storage is heap_storage (64-byte aligned) or
//   inline_storage (no heap; static shapes). Backend is the policy that evaluates expressions
//   assigned to the tensor (tfm::cpu by default, tfm::reference for the scalar oracle).
//
//   tfm::tensor_view<T, Shape, Backend>: a non-owning strided window onto elements (T may be
//   const). Views come from tensors (view(), slice, transpose, permute, reshape, broadcast_to,
//   strided; see core/view.hpp) and compose.
//
//   Assigning an expression (expr/) to a tensor evaluates the whole elementwise tree in one pass;
//   a tensor takes the expression's shape, a view keeps its own and broadcasts the expression.
//
//   t.item() reads the only element of a one-element tensor or view (a rank-0 result of a
//   reduction, say); a rank-0 one also converts explicitly: static_cast<float>(t).
//
// ERRORS
//   Element access out of range, a shape that does not fit the static extents, a wrong
//   number of values, or item() on more than one element raise tfm::shape_error
//   (tfm::index_error for indices) with a sentence.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/fwd.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/storage.hpp"

#include <array>
#include <concepts>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

template <class T, shape_type S, class Backend = cpu>
class tensor_view;
template <class T, shape_type S, class Backend = cpu, class Storage = heap_storage>
class tensor;

namespace detail {
template <class T>
struct is_tensor : std::false_type {};
template <class T, class S, class B, class St>
struct is_tensor<tensor<T, S, B, St>> : std::true_type {};
template <class T>
struct is_view : std::false_type {};
template <class T, class S, class B>
struct is_view<tensor_view<T, S, B>> : std::true_type {};
}  // namespace detail

/// An owning tfm::tensor (any element type, shape, backend, storage).
template <class X>
concept tensor_type = detail::is_tensor<std::remove_cvref_t<X>>::value;
/// A tfm::tensor_view.
template <class X>
concept view_type = detail::is_view<std::remove_cvref_t<X>>::value;
/// Anything with elements in memory: a tensor or a view.
template <class X>
concept dense_type = tensor_type<X> || view_type<X>;

/// An elementwise expression node (expr/); nodes declare `using is_tfm_expression = void;`.
template <class X>
concept expression_node = requires {
  typename std::remove_cvref_t<X>::is_tfm_expression;
};

namespace detail {
template <std::size_t R, class... I>
void check_indices(const std::array<index_t, R>& ext, I... idx) {
  static_assert(sizeof...(I) == R, "tfm: the number of indices must equal the tensor's rank");
  std::array<index_t, R> ix{static_cast<index_t>(idx)...};
  for (std::size_t a = 0; a < R; ++a)
    if (ix[a] < 0 || ix[a] >= ext[a])
      fail(errc::index, "tfm: index ", ix[a], " is out of range for axis ", a, " of extent ",
           ext[a], ".");
}
/// True unless a static extent of S other than 1 rules out a single element (item()'s
/// compile-time check: shape<1, dyn> may hold one element, shape<2, dyn> never does).
template <class S>
inline constexpr bool may_hold_one_element = [] {
  for (index_t e : S::static_extents)
    if (e != 1 && e != dyn) return false;
  return true;
}();
/// item()'s run-time check: `s` holds exactly one element. `who` names the caller, `access` how
/// to read one element instead ("operator()(i, ...)").
template <class S>
void check_one_element(const S& s, const char* who, const char* access) {
  if (s.size() != 1)
    fail(errc::shape, who, ": item() needs exactly one element, but the shape ", s.to_string(),
         " holds ", s.size(), "; read an element with ", access, " instead.");
}
template <std::size_t R, class... I>
constexpr index_t linear_offset(const std::array<index_t, R>& st, I... idx) noexcept {
  std::array<index_t, R> ix{static_cast<index_t>(idx)...};
  index_t off = 0;
  for (std::size_t a = 0; a < R; ++a) off += ix[a] * st[a];
  return off;
}
}  // namespace detail

// ============================================================================================
template <class T, shape_type S, class Backend>
class tensor_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using shape_type = S;
  using backend_type = Backend;
  using strides_type = std::array<index_t, S::rank>;
  static constexpr std::size_t rank = S::rank;

  tensor_view() noexcept = default;
  /// A contiguous row-major view of `shape.size()` elements starting at `data`.
  tensor_view(T* data, const S& shape) noexcept
      : data_(data), shape_(shape), strides_(row_major_strides(shape)) {}
  /// A strided view; strides are in elements and may be 0 (broadcast) or negative.
  tensor_view(T* data, const S& shape, const strides_type& strides) noexcept
      : data_(data), shape_(shape), strides_(strides) {}
  /// Views of non-const elements convert to views of const elements.
  template <class U>
  requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
      tensor_view(const tensor_view<U, S, Backend>& o)
  noexcept : data_(o.data()), shape_(o.shape()), strides_(o.strides()) {}

  tensor_view(const tensor_view&) noexcept = default;

  /// Assignment writes elements (a view is a window, not a handle): the right side is
  /// broadcast to this view's shape. Overlapping sources are handled (see expr/evaluate.hpp).
  tensor_view& operator=(const tensor_view& src) {
    assign(*this, src);
    return *this;
  }
  template <class E>
  requires(dense_type<E> || expression_node<E> ||
           std::is_arithmetic_v<std::remove_cvref_t<E>>) tensor_view&
  operator=(E&& e) {
    assign(*this, std::forward<E>(e));
    return *this;
  }
  /// Compound assignment, NumPy's in-place operators: `v += e` writes `v + e` into v, with e
  /// broadcast to this view's shape (a shape that cannot broadcast is an error, never a resize).
  /// One fused pass; e may read v (handled like any overlap, see expr/evaluate.hpp). The
  /// operators come from expr/ (found by argument-dependent lookup when this is instantiated).
  template <class E>
  tensor_view& operator+=(E&& e) {
    assign(*this, *this + std::forward<E>(e));
    return *this;
  }
  template <class E>
  tensor_view& operator-=(E&& e) {
    assign(*this, *this - std::forward<E>(e));
    return *this;
  }
  template <class E>
  tensor_view& operator*=(E&& e) {
    assign(*this, *this * std::forward<E>(e));
    return *this;
  }
  template <class E>
  tensor_view& operator/=(E&& e) {
    assign(*this, *this / std::forward<E>(e));
    return *this;
  }

  T* data() const noexcept { return data_; }
  const S& shape() const noexcept { return shape_; }
  const strides_type& strides() const noexcept { return strides_; }
  index_t stride(std::size_t axis) const noexcept { return strides_[axis]; }
  index_t extent(std::size_t axis) const noexcept { return shape_.extent(axis); }
  index_t size() const noexcept { return shape_.size(); }
  bool empty() const noexcept { return size() == 0; }
  /// True when elements are dense and row-major (the strides a tensor of this shape has).
  bool is_contiguous() const noexcept {
    index_t acc = 1;
    for (std::size_t a = rank; a-- > 0;) {
      if (extent(a) != 1 && strides_[a] != acc) return false;
      acc *= extent(a);
    }
    return true;
  }

  /// Checked element access.
  template <std::integral... I>
  T& operator()(I... idx) const {
    detail::check_indices<rank>(shape_.extents(), idx...);
    return data_[detail::linear_offset<rank>(strides_, idx...)];
  }
  /// Unchecked element access for kernels.
  template <std::integral... I>
  T& unchecked(I... idx) const noexcept {
    return data_[detail::linear_offset<rank>(strides_, idx...)];
  }

  /// The value of the only element (PyTorch's Tensor.item()): for rank 0, and for any shape
  /// that holds exactly one element. A static shape that cannot hold one does not compile; a
  /// dynamic one of another size raises tfm::shape_error naming the shape.
  value_type item() const {
    static_assert(detail::may_hold_one_element<S>,
                  "tfm::tensor_view::item: the view's static shape holds more than one element "
                  "(or none); read an element with operator()(i, ...) instead.");
    detail::check_one_element(shape_, "tfm::tensor_view", "operator()(i, ...)");
    return *data_;  // the element at index (0, ..., 0) sits at offset 0 whatever the strides
  }
  /// static_cast<float>(v) for a rank-0 view: its element.
  explicit operator value_type() const requires(S::rank == 0) { return *data_; }

  /// This view (views are already views).
  tensor_view view() const noexcept { return *this; }

 private:
  T* data_ = nullptr;
  [[no_unique_address]] S shape_{};
  strides_type strides_{};
};

// ============================================================================================
template <class T, shape_type S, class Backend, class Storage>
class tensor {
  static_assert(dense_element<T>,
                "tfm::tensor: the element type must be float, double, tfm::bf16, tfm::f16, "
                "int8_t, uint8_t, int32_t, int64_t or bool");
  using engine = detail::storage_engine<T, S, Storage>;

 public:
  using element_type = T;
  using value_type = T;
  using shape_type = S;
  using backend_type = Backend;
  using storage_type = Storage;
  using strides_type = std::array<index_t, S::rank>;
  static constexpr std::size_t rank = S::rank;

  /// Static shape: zero-filled elements. Dynamic shape: empty (dynamic extents 0).
  tensor() : shape_{}, buf_(engine::make(shape_.size(), true)) {}
  /// Zero-filled tensor of the given shape.
  explicit tensor(const S& shape) : shape_(shape), buf_(engine::make(shape.size(), true)) {}
  /// Zero-filled tensor from the dynamic extents: tensor<float, shape<dyn, 768>> t(10).
  template <std::integral... I>
  requires(sizeof...(I) == S::rank_dynamic &&
           S::rank_dynamic > 0) explicit tensor(I... dynamic_extents)
      : tensor(S(dynamic_extents...)) {}
  /// Tensor of the given shape holding `values` in row-major order (count must match).
  tensor(const S& shape, std::initializer_list<T> values) : tensor(shape) {
    if (static_cast<index_t>(values.size()) != shape_.size())
      fail(errc::shape, "tfm::tensor: ", values.size(), " values given for shape ",
           shape_.to_string(), ", which holds ", shape_.size(), " elements.");
    index_t i = 0;
    for (const T& v : values) data()[i++] = v;
  }
  /// Static 1-D tensor from values: tensor<float, shape<3>> t{1, 2, 3}.
  tensor(std::initializer_list<T> values) requires(S::is_static&& S::rank == 1)
      : tensor(S{}, values) {}
  /// Static 2-D tensor from rows: tensor<float, shape<2, 3>> t{{1, 2, 3}, {4, 5, 6}}.
  tensor(std::initializer_list<std::initializer_list<T>> rows) requires(S::is_static&& S::rank == 2)
      : tensor() {
    if (static_cast<index_t>(rows.size()) != shape_.extent(0))
      fail(errc::shape, "tfm::tensor: ", rows.size(), " rows given for shape ", shape_.to_string(),
           ".");
    index_t i = 0;
    for (auto r : rows) {
      if (static_cast<index_t>(r.size()) != shape_.extent(1))
        fail(errc::shape, "tfm::tensor: a row of ", r.size(), " values given for shape ",
             shape_.to_string(), ".");
      for (const T& v : r) data()[i++] = v;
    }
  }
  /// Evaluates an expression or copies another tensor/view (any element type, converted).
  template <class E>
  requires((dense_type<E> || expression_node<E>)&&!std::is_same_v<std::remove_cvref_t<E>, tensor>)
      tensor(E&& e)
      : tensor() {
    assign(*this, std::forward<E>(e));
  }

  /// Uninitialised storage for kernels that write every element (heap only).
  static tensor uninitialized(const S& shape) {
    tensor t(no_init{}, shape);
    return t;
  }

  tensor(const tensor&) = default;
  tensor(tensor&&) noexcept = default;
  tensor& operator=(const tensor&) = default;
  tensor& operator=(tensor&&) noexcept = default;

  /// Evaluates an expression into this tensor; the tensor takes the expression's shape (static
  /// extents must agree). Overlap between the expression's leaves and this tensor is handled.
  template <class E>
  requires((dense_type<E> ||
            expression_node<E>)&&!std::is_same_v<std::remove_cvref_t<E>, tensor>) tensor&
  operator=(E&& e) {
    assign(*this, std::forward<E>(e));
    return *this;
  }
  /// Fills every element with a scalar.
  tensor& operator=(compute_t<T> v) {
    fill(v);
    return *this;
  }
  /// Compound assignment (`t += e`, `-=`, `*=`, `/=`): as tensor_view's, into this tensor's
  /// shape, which never changes.
  template <class E>
  tensor& operator+=(E&& e) {
    view() += std::forward<E>(e);
    return *this;
  }
  template <class E>
  tensor& operator-=(E&& e) {
    view() -= std::forward<E>(e);
    return *this;
  }
  template <class E>
  tensor& operator*=(E&& e) {
    view() *= std::forward<E>(e);
    return *this;
  }
  template <class E>
  tensor& operator/=(E&& e) {
    view() /= std::forward<E>(e);
    return *this;
  }

  /// Changes the shape; elements are zero afterwards unless the size is unchanged.
  void resize(const S& shape) {
    if (shape.size() != shape_.size()) buf_ = engine::make(shape.size(), true);
    shape_ = shape;
  }

  T* data() noexcept { return buf_.data(); }
  const T* data() const noexcept { return buf_.data(); }
  const S& shape() const noexcept { return shape_; }
  strides_type strides() const noexcept { return row_major_strides(shape_); }
  index_t stride(std::size_t axis) const noexcept { return strides()[axis]; }
  index_t extent(std::size_t axis) const noexcept { return shape_.extent(axis); }
  index_t size() const noexcept { return shape_.size(); }
  bool empty() const noexcept { return size() == 0; }
  static constexpr bool is_contiguous() noexcept { return true; }

  template <std::integral... I>
  T& operator()(I... idx) {
    detail::check_indices<rank>(shape_.extents(), idx...);
    return data()[detail::linear_offset<rank>(strides(), idx...)];
  }
  template <std::integral... I>
  const T& operator()(I... idx) const {
    detail::check_indices<rank>(shape_.extents(), idx...);
    return data()[detail::linear_offset<rank>(strides(), idx...)];
  }

  /// The value of the only element (PyTorch's Tensor.item()): for rank 0, and for any shape
  /// that holds exactly one element. A static shape that cannot hold one does not compile; a
  /// dynamic one of another size raises tfm::shape_error naming the shape.
  T item() const {
    static_assert(detail::may_hold_one_element<S>,
                  "tfm::tensor::item: the tensor's static shape holds more than one element "
                  "(or none); read an element with operator()(i, ...) instead.");
    detail::check_one_element(shape_, "tfm::tensor", "operator()(i, ...)");
    return data()[0];
  }
  /// static_cast<float>(t) for a rank-0 tensor: its element.
  explicit operator T() const requires(S::rank == 0) { return data()[0]; }

  /// Sets every element to v (converted to T).
  void fill(compute_t<T> v) {
    T x = to_storage<T>(v);
    T* p = data();
    for (index_t i = 0, n = size(); i < n; ++i) p[i] = x;
  }

  tensor_view<T, S, Backend> view() noexcept { return {data(), shape_}; }
  tensor_view<const T, S, Backend> view() const noexcept { return {data(), shape_}; }
  operator tensor_view<T, S, Backend>() noexcept { return view(); }
  operator tensor_view<const T, S, Backend>() const noexcept { return view(); }

  /// A tensor is already evaluated.
  const tensor& eval() const& noexcept { return *this; }
  tensor eval() && noexcept { return std::move(*this); }

 private:
  struct no_init {};
  tensor(no_init, const S& shape) : shape_(shape), buf_(engine::make(shape.size(), false)) {}

  [[no_unique_address]] S shape_;
  typename engine::type buf_;
};

/// Deduction: the shape type and element type come from the arguments.
template <class T, shape_type S>
tensor(const S&, std::initializer_list<T>) -> tensor<T, S>;

TFM_END_NAMESPACE
