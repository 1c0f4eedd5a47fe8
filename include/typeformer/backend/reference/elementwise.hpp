// typeformer/backend/reference/elementwise.hpp
//
// Reference evaluation of elementwise expressions: one scalar loop over the rows planned by
// expr/evaluate.hpp, in the expression's compute type. It is the oracle for the cpu backend.
#pragma once

#include "typeformer/backend/tags.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <array>

TFM_BEGIN_NAMESPACE

namespace detail {
/// Rank used for iteration: rank-0 tensors iterate as one element of rank 1.
template <class S>
inline constexpr std::size_t loop_rank = S::rank == 0 ? 1 : S::rank;

template <std::size_t R, class V>
void loop_extents(const V& dst, std::array<index_t, R>& ext, std::array<index_t, R>& st) {
  if constexpr (V::rank == 0) {
    ext = {1};
    st = {1};
  } else {
    ext = dst.shape().extents();
    st = dst.strides();
  }
}
}  // namespace detail

/// dst = node, scalar loops.
template <class T, class S, class B, class N>
void evaluate(const tensor_view<T, S, B>& dst, const N& node, reference) {
  constexpr std::size_t R = detail::loop_rank<S>;
  using C = typename detail::node_compute<N>::type;
  std::array<index_t, R> ext, dst_st;
  detail::loop_extents<R>(dst, ext, dst_st);
  auto cur = detail::make_cursor<R>(node, ext);
  auto sp = detail::plan_rows<R>(ext, dst_st, cur);
  const index_t inner = sp.dst_strides[R - 1];
  for (index_t r = 0; r < sp.rows; ++r) {
    auto idx = detail::row_index(sp, r);
    detail::set_row(cur, idx);
    T* d = dst.data() + detail::dst_row_offset(sp, idx);
    for (index_t j = 0; j < sp.cols; ++j)
      d[j * inner] = to_storage<T>(detail::scalar_at<C>(cur, j));
  }
}

TFM_END_NAMESPACE
