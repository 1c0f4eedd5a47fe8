// typeformer/autodiff/support.hpp
//
// Helpers that differentiable ops (ops/*) use to read and write variable records:
//   value_view<R>(d)        the value of a record as tensor_view<T, dyn_shape<R>>
//   grad_view<R>(d)         its gradient (allocated and zeroed on first use)
//   result<T>(extents)      a fresh output record
//   accumulate_grad(d, g)   d.grad += g, where g has the shape of an op's output and d was
//                           broadcast into it: broadcast axes are summed ("unbroadcast"); the
//                           first gradient of a same-shaped d is assigned (no zero fill)
//   extents_of(view)        a view's extents as the std::vector a record stores
// Ops are written against dynamic-extent views of fixed rank, so they are compiled once per
// (element type, rank), whatever the static shapes of the vars that call them.
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <array>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace detail {

template <std::size_t R>
dyn_shape<R> dyn_shape_of(const std::vector<index_t>& e) {
  if (e.size() != R)
    fail(errc::shape, "tfm autodiff: expected a variable of rank ", R, ", got rank ", e.size(),
         ".");
  std::array<index_t, R> a{};
  for (std::size_t i = 0; i < R; ++i) a[i] = e[i];
  return dyn_shape<R>::from_extents(a);
}

template <std::size_t R, class T>
tensor_view<T, dyn_shape<R>> value_view(const var_ptr<T>& d) {
  return {d->value.data(), dyn_shape_of<R>(d->extents)};
}
template <std::size_t R, class T>
tensor_view<grad_t<T>, dyn_shape<R>> grad_view(const var_ptr<T>& d) {
  return {d->grad_data(), dyn_shape_of<R>(d->extents)};
}
template <std::size_t R, class T>
tensor_view<grad_t<T>, dyn_shape<R>> grad_view(var_data<T>* d) {
  return {d->grad_data(), dyn_shape_of<R>(d->extents)};
}

template <class V>
std::vector<index_t> extents_of(const V& v) {
  auto e = v.shape().extents();
  return std::vector<index_t>(e.begin(), e.end());
}

/// The extents of a var as a vector.
template <class T>
const std::vector<index_t>& extents_of(const var_ptr<T>& d) {
  return d->extents;
}

/// d.grad += g (g has the op output's shape, of rank Ro; d has rank Ri <= Ro and was broadcast).
/// Summation order is fixed (row-major over g), so results do not depend on threads.
template <class T, class GV>
void accumulate_grad(const var_ptr<T>& d, const GV& g) {
  if (!d->requires_grad) return;
  constexpr std::size_t Ro = GV::shape_type::rank;
  const auto gs = g.shape();
  const std::size_t Ri = d->extents.size();
  using G = grad_t<T>;
  // Same extents: one fused pass, an assignment for the first gradient to arrive.
  bool same = Ri == Ro;
  for (std::size_t a = 0; same && a < Ro; ++a) same = d->extents[a] == gs.extent(a);
  if (same) {
    const auto target = d->grad_for_overwrite();
    tensor_view<G, dyn_shape<Ro>> dv(target.data, dyn_shape_of<Ro>(d->extents));
    if (target.accumulate)
      dv = dv + g;
    else
      dv = g;
    return;
  }
  G* dst = d->grad_data();
  if constexpr (Ro == 0) {
    return;  // unreachable: a rank-0 gradient only flows into a rank-0 variable (same extents)
  } else {
    if (Ri > Ro)
      fail(errc::shape, "tfm autodiff: a gradient of rank ", Ro,
           " cannot flow into a variable of rank ", Ri, ".");
    // Input strides relative to the output's axes (0 where broadcast or missing).
    std::array<index_t, Ro> st{};
    {
      index_t acc = 1;
      for (std::size_t i = Ri; i-- > 0;) {
        std::size_t o = Ro - Ri + i;
        index_t e = d->extents[i];
        if (e != 1 && e != gs.extent(o))
          fail(errc::shape, "tfm autodiff: cannot reduce a gradient of extent ", gs.extent(o),
               " onto an axis of extent ", e, ".");
        st[o] = (e == 1) ? 0 : acc;
        acc *= e;
      }
    }
    auto gc = eval(g);  // contiguous, in G
    const auto* gp = gc.data();
    const index_t n = gc.size();
    if (n == 0) return;
    std::array<index_t, Ro> idx{};
    index_t off = 0;
    const index_t last = Ro ? gs.extent(Ro - 1) : 1;
    const index_t st_last = Ro ? st[Ro - 1] : 0;
    for (index_t i = 0; i < n; i += last) {
      // one row of the last axis
      G* q = dst + off;
      if (st_last == 1) {
        for (index_t j = 0; j < last; ++j) q[j] += static_cast<G>(gp[i + j]);
      } else {
        G s = 0;
        for (index_t j = 0; j < last; ++j) s += static_cast<G>(gp[i + j]);
        q[0] += s;
      }
      // advance the odometer over axes 0 .. Ro-2
      for (std::size_t a = Ro - 1; a-- > 0;) {
        off += st[a];
        if (++idx[a] < gs.extent(a)) break;
        off -= st[a] * idx[a];
        idx[a] = 0;
      }
    }
  }
}

/// d.grad (+)= e, where e is a rank-1 expression over all of d's elements in order (d's
/// gradient seen flat): one SIMD pass (evaluate_contiguous), an assignment for the first gradient
/// to arrive (no zero fill), an addition for later ones. One instantiation per expression type
/// whatever d's rank.
template <class T, class E>
void accumulate_grad_flat(var_data<T>& d, const E& e) {
  using flat = tensor_view<const grad_t<T>, dyn_shape<1>>;
  const index_t n = d.size();
  const auto t = d.grad_for_overwrite();
  if (t.accumulate)
    evaluate_contiguous(t.data, n, flat(t.data, dyn_shape<1>(n)) + e);
  else
    evaluate_contiguous(t.data, n, e);
}

/// A fresh output record with the given extents (value uninitialised).
template <class T>
var_ptr<T> result(std::vector<index_t> extents) {
  return make_var_data<T>(std::move(extents));
}

/// A var typed as S over a record (checks the static extents).
template <class T, class S>
var<T, S> wrap(var_ptr<T> d) {
  return var<T, S>(std::move(d));
}

}  // namespace detail
TFM_END_NAMESPACE
