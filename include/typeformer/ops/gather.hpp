// typeformer/ops/gather.hpp
//
// Index-based ops, forward and vjp side by side. Indices are int32 tensors (constants).
//   embedding(weight (V, C), ids (...))     -> (..., C): rows of weight; vjp scatter-adds rows
//   index_select<Axis>(v, ids (n))          -> v with Axis replaced by n entries
//   gather<Axis>(v, index)                  -> out[i][j] = v[i][index[i][j]] (torch.gather)
// An index outside [0, extent) raises tfm::index_error naming the index and the extent.
// Scatter-adds run in index order, so repeated indices accumulate deterministically.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail {
template <class V>
std::shared_ptr<std::vector<std::int32_t>> checked_indices(const V& ids, index_t extent,
                                                           const char* who) {
  auto out = std::make_shared<std::vector<std::int32_t>>();
  out->reserve(static_cast<std::size_t>(ids.size()));
  auto c = eval(ids);
  for (index_t i = 0; i < c.size(); ++i) {
    auto id = c.data()[i];
    if (id < 0 || id >= extent)
      fail(errc::index, "tfm::", who, ": index ", static_cast<long long>(id), " at position ", i,
           " is out of range for an axis of extent ", extent, ".");
    out->push_back(static_cast<std::int32_t>(id));
  }
  return out;
}
}  // namespace detail

/// Rows of a (V, C) table for integer ids of any shape: result (..., C).
template <class T, class SW, class I>
requires dense_type<I>
auto embedding(const var<T, SW>& weight, const I& ids) {
  static_assert(SW::rank == 2, "tfm::embedding: the weight must be (V, C)");
  auto iv = ids.view();
  using SI = typename decltype(iv)::shape_type;
  static_assert(std::is_integral_v<typename decltype(iv)::value_type>,
                "tfm::embedding: ids must be integers");
  using SO = typename detail::concat_shape<SI, shape<SW::static_extents[1]>>::type;
  auto w = weight.data();
  const index_t V = w->extents[0], C = w->extents[1];
  auto idx = detail::checked_indices(iv, V, "embedding");
  std::vector<index_t> e = detail::extents_of(iv);
  e.push_back(C);
  auto out = detail::result<T>(e);
  const index_t n = C > 0 ? static_cast<index_t>(idx->size()) : 0;  // C == 0: nothing to copy
  for (index_t i = 0; i < n; ++i)
    std::memcpy(static_cast<void*>(out->value.data() + i * C),
                w->value.data() + (*idx)[static_cast<std::size_t>(i)] * C,
                sizeof(T) * static_cast<std::size_t>(C));
  detail::record(out, "embedding", {w}, [w, idx, o = out.get(), C] {
    using G = grad_t<T>;
    G* gw = w->grad_data();
    const G* g = o->grad_data();
    for (std::size_t i = 0; i < idx->size(); ++i) {
      G* row = gw + (*idx)[i] * C;
      const G* gr = g + static_cast<index_t>(i) * C;
      for (index_t c = 0; c < C; ++c) row[c] += gr[c];
    }
  });
  return var<T, SO>(out);
}

/// Entries ids[0..n) along Axis.
template <int Axis, class T, class S, class I>
requires dense_type<I>
auto index_select(const var<T, S>& v, const I& ids) {
  constexpr std::size_t R = S::rank;
  constexpr std::size_t ax = normalize_axis<Axis, R>();
  static_assert(std::remove_cvref_t<I>::rank == 1, "tfm::index_select: ids must be 1-D");
  using SO = detail::set_extent_t<S, ax, dyn>;
  auto a = v.data();
  auto idx = detail::checked_indices(ids.view(), a->extents[ax], "index_select");
  std::vector<index_t> e = a->extents;
  e[ax] = static_cast<index_t>(idx->size());
  auto out = detail::result<T>(e);
  auto x = detail::value_view<R>(a);
  auto y = detail::value_view<R>(out);
  for (std::size_t k = 0; k < idx->size(); ++k)
    select<ax>(y, static_cast<index_t>(k)) = select<ax>(x, (*idx)[k]);
  detail::record(out, "index_select", {a}, [a, idx, o = out.get()] {
    auto gi = detail::grad_view<R>(a);
    tensor_view<const grad_t<T>, dyn_shape<R>> g(o->grad_data(),
                                                 detail::dyn_shape_of<R>(o->extents));
    for (std::size_t k = 0; k < idx->size(); ++k) {
      auto dst = select<ax>(gi, (*idx)[k]);
      dst = dst + select<ax>(g, static_cast<index_t>(k));
    }
  });
  return var<T, SO>(out);
}

/// torch.gather along Axis: index has v's rank; out has index's shape.
template <int Axis, class T, class S, class I>
requires dense_type<I>
auto gather(const var<T, S>& v, const I& index) {
  constexpr std::size_t R = S::rank;
  constexpr std::size_t ax = normalize_axis<Axis, R>();
  auto iv = index.view();
  using SI = typename decltype(iv)::shape_type;
  static_assert(SI::rank == R, "tfm::gather: the index must have the input's rank");
  auto a = v.data();
  for (std::size_t k = 0; k < R; ++k)
    if (k != ax && iv.extent(k) > a->extents[k])
      fail(errc::shape, "tfm::gather: the index extent ", iv.extent(k), " on axis ", k,
           " exceeds the input's extent ", a->extents[k], ".");
  auto idx = detail::checked_indices(iv, a->extents[ax], "gather");
  auto out = detail::result<T>(detail::extents_of(iv));
  // Walk the index in row-major order; the source offset replaces axis ax by the index value.
  auto src_offsets = std::make_shared<std::vector<index_t>>(idx->size());
  {
    std::vector<index_t> st(R);
    index_t acc = 1;
    for (std::size_t k = R; k-- > 0;) {
      st[k] = acc;
      acc *= a->extents[k];
    }
    std::vector<index_t> pos(R, 0);
    for (std::size_t i = 0; i < idx->size(); ++i) {
      index_t off = 0;
      for (std::size_t k = 0; k < R; ++k) off += (k == ax ? (*idx)[i] : pos[k]) * st[k];
      (*src_offsets)[i] = off;
      out->value.data()[i] = a->value.data()[off];
      for (std::size_t k = R; k-- > 0;) {
        if (++pos[k] < iv.extent(k)) break;
        pos[k] = 0;
      }
    }
  }
  detail::record(out, "gather", {a}, [a, src_offsets, o = out.get()] {
    using G = grad_t<T>;
    G* gi = a->grad_data();
    const G* g = o->grad_data();
    for (std::size_t i = 0; i < src_offsets->size(); ++i) gi[(*src_offsets)[i]] += g[i];
  });
  return var<T, SI>(out);
}

TFM_END_NAMESPACE
