// typeformer/interop/eigen.hpp  (opt-in: include it only where Eigen 3.4 is available)
//
// Zero-copy exchange with Eigen.
//   as_eigen(t)       a 1-D tensor/view -> Eigen::Map of a column vector (with its inner stride);
//                     a 2-D tensor/view -> Eigen::Map of a row-major matrix with the view's
//                     strides (so transposed and sliced views map without a copy).
//                     The map aliases the tensor's elements: writes through it change the tensor.
//   from_eigen(m)     a copy of an Eigen matrix/vector expression as a tfm::tensor; extents that
//                     Eigen knows at compile time stay static (Matrix4f -> shape<4, 4>).
#pragma once

#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"

#include <Eigen/Core>

#include <type_traits>

TFM_BEGIN_NAMESPACE

/// Zero-copy Eigen::Map over a 1-D or 2-D tensor (lvalue) or view.
template <class X>
requires dense_type<X>
auto as_eigen(X&& x) {
  static_assert(!(tensor_type<X> && std::is_rvalue_reference_v<X&&>),
                "tfm::as_eigen: cannot map a temporary tensor: the map would dangle");
  auto v = x.view();
  using V = decltype(v);
  using E = typename V::element_type;
  using T = std::remove_const_t<E>;
  static_assert(V::rank == 1 || V::rank == 2, "tfm::as_eigen maps tensors of rank 1 or 2");
  if constexpr (V::rank == 1) {
    using Vec = std::conditional_t<std::is_const_v<E>, const Eigen::Matrix<T, Eigen::Dynamic, 1>,
                                   Eigen::Matrix<T, Eigen::Dynamic, 1>>;
    return Eigen::Map<Vec, Eigen::Unaligned, Eigen::InnerStride<Eigen::Dynamic>>(
        v.data(), v.extent(0), Eigen::InnerStride<Eigen::Dynamic>(v.stride(0)));
  } else {
    using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using M = std::conditional_t<std::is_const_v<E>, const Mat, Mat>;
    using St = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
    // Eigen's Stride is (outer, inner); for a row-major map outer = row stride.
    return Eigen::Map<M, Eigen::Unaligned, St>(v.data(), v.extent(0), v.extent(1),
                                               St(v.stride(0), v.stride(1)));
  }
}

namespace detail {
constexpr index_t eigen_extent(int n) {
  return n == Eigen::Dynamic ? dyn : static_cast<index_t>(n);
}
}  // namespace detail

/// A tensor holding a copy of an Eigen matrix or vector (a column vector gives a 1-D tensor).
template <class T = void, class Derived>
auto from_eigen(const Eigen::MatrixBase<Derived>& m) {
  using U = std::conditional_t<std::is_void_v<T>, typename Derived::Scalar, T>;
  constexpr int R = Derived::RowsAtCompileTime, C = Derived::ColsAtCompileTime;
  if constexpr (C == 1) {
    using S = shape<detail::eigen_extent(R)>;
    tensor<U, S> t(S::from_extents({static_cast<index_t>(m.rows())}));
    for (Eigen::Index i = 0; i < m.rows(); ++i) t.data()[i] = static_cast<U>(m(i, 0));
    return t;
  } else {
    using S = shape<detail::eigen_extent(R), detail::eigen_extent(C)>;
    tensor<U, S> t(
        S::from_extents({static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols())}));
    for (Eigen::Index i = 0; i < m.rows(); ++i)
      for (Eigen::Index j = 0; j < m.cols(); ++j)
        t.data()[i * m.cols() + j] = static_cast<U>(m(i, j));
    return t;
  }
}

TFM_END_NAMESPACE
