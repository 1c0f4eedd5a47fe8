// typeformer/ops/view.hpp
//
// Differentiable layout ops on tfm::var. Outputs are contiguous copies (a var owns its value);
// the vjp adds the output gradient back through the same view of the input gradient.
//   reshape(v, shape)          vjp: reshape back
//   permute<P...>(v)           vjp: permute by the inverse
//   transpose(v)               last two axes (rank 2: the matrix transpose)
//   slice<Axis>(v, b, e, step) vjp: adds into the sliced window of the input gradient
//   concat<Axis>(vs)           vjp: each input receives its window
//   split<Axis>(v, sizes)      vjp: each piece adds into its window
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <array>
#include <cstring>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Differentiable reshape (same elements, new extents; sizes must match).
template <class T, class S, shape_type S2>
var<T, S2> reshape(const var<T, S>& v, const S2& s2) {
  auto a = v.data();
  if (s2.size() != v.size())
    fail(errc::shape, "tfm::reshape: cannot reshape ", v.shape().to_string(), " to ",
         s2.to_string(), ".");
  auto out = detail::result<T>(detail::extents_of(tensor_view<const T, S2>(nullptr, s2)));
  if (v.size())
    std::memcpy(static_cast<void*>(out->value.data()), a->value.data(),
                sizeof(T) * static_cast<std::size_t>(v.size()));
  detail::record(out, "reshape", {a}, [a, o = out.get()] {
    if (!a->requires_grad) return;
    const index_t n = a->size();
    detail::accumulate_grad_flat(
        *a, tensor_view<const grad_t<T>, dyn_shape<1>>(o->grad_data(), dyn_shape<1>(n)));
  });
  return var<T, S2>(out);
}
template <shape_type S2, class T, class S>
requires S2::is_static var<T, S2> reshape(const var<T, S>& v) { return reshape(v, S2{}); }

/// Differentiable permute: result axis i is axis P[i].
template <std::size_t... P, class T, class S>
auto permute(const var<T, S>& v) {
  constexpr std::size_t R = S::rank;
  static_assert(sizeof...(P) == R, "tfm::permute: give one axis per dimension");
  using S2 = detail::permute_shape_t<S, P...>;
  auto a = v.data();
  auto x = detail::value_view<R>(a);
  auto px = permute<P...>(x);
  auto out = detail::result<T>(detail::extents_of(px));
  detail::value_view<R>(out) = px;
  detail::record(out, "permute", {a}, [a, o = out.get()] {
    if (!a->requires_grad) return;
    const auto t = a->grad_for_overwrite();
    tensor_view<grad_t<T>, dyn_shape<R>> gi(t.data, detail::dyn_shape_of<R>(a->extents));
    tensor_view<const grad_t<T>, dyn_shape<R>> g(o->grad_data(),
                                                 detail::dyn_shape_of<R>(o->extents));
    auto pg = permute<P...>(gi);  // gi viewed in the output's axis order
    if (t.accumulate)
      pg = pg + g;
    else
      pg = g;
  });
  return var<T, S2>(out);
}

/// Differentiable transpose of the last two axes.
template <class T, class S>
auto transpose(const var<T, S>& v) {
  constexpr std::size_t r = S::rank;
  static_assert(r >= 2 && r <= 4, "tfm::transpose: rank 2, 3 or 4");
  if constexpr (r == 2)
    return permute<1, 0>(v);
  else if constexpr (r == 3)
    return permute<0, 2, 1>(v);
  else
    return permute<0, 1, 3, 2>(v);
}

/// Differentiable slice along Axis: elements b, b+step, ... < e.
template <int Axis, class T, class S>
auto slice(const var<T, S>& v, index_t b, index_t e, index_t step = 1) {
  constexpr std::size_t R = S::rank;
  auto a = v.data();
  auto sx = slice<Axis>(detail::value_view<R>(a), b, e, step);
  using S2 = detail::set_extent_t<S, normalize_axis<Axis, R>(), dyn>;
  auto out = detail::result<T>(detail::extents_of(sx));
  detail::value_view<R>(out) = sx;
  detail::record(out, "slice", {a}, [a, o = out.get(), b, e, step] {
    auto gw = slice<Axis>(detail::grad_view<R>(a), b, e, step);
    tensor_view<const grad_t<T>, dyn_shape<R>> g(o->grad_data(),
                                                 detail::dyn_shape_of<R>(o->extents));
    gw = gw + g;
  });
  return var<T, S2>(out);
}

/// Differentiable concatenation along Axis (all other extents equal).
template <int Axis, class T, class S>
auto concat(const std::vector<var<T, S>>& vs) {
  constexpr std::size_t R = S::rank;
  constexpr std::size_t ax = normalize_axis<Axis, R>();
  using S2 = detail::set_extent_t<S, ax, dyn>;
  if (vs.empty()) fail(errc::value, "tfm::concat: needs at least one input.");
  std::vector<index_t> e = vs[0].data()->extents;
  index_t total = 0;
  std::vector<std::shared_ptr<detail::var_base>> ins;
  std::vector<detail::var_ptr<T>> ds;
  for (const auto& v : vs) {
    for (std::size_t k = 0; k < R; ++k)
      if (k != ax && v.extent(k) != e[k])
        fail(errc::shape, "tfm::concat: input ", v.shape().to_string(), " differs from ",
             vs[0].shape().to_string(), " on axis ", k, ", which is not the concatenation axis.");
    total += v.extent(ax);
    ins.push_back(v.data());
    ds.push_back(v.data());
  }
  e[ax] = total;
  auto out = detail::result<T>(e);
  index_t off = 0;
  for (auto& d : ds) {
    index_t n = d->extents[ax];
    slice<ax>(detail::value_view<R>(out), off, off + n) = detail::value_view<R>(d);
    off += n;
  }
  detail::record(out, "concat", std::move(ins), [ds, o = out.get()] {
    tensor_view<const grad_t<T>, dyn_shape<R>> g(o->grad_data(),
                                                 detail::dyn_shape_of<R>(o->extents));
    index_t off = 0;
    for (auto& d : ds) {
      index_t n = d->extents[ax];
      if (d->requires_grad) {
        auto gi = detail::grad_view<R>(d);
        gi = gi + slice<ax>(g, off, off + n);
      }
      off += n;
    }
  });
  return var<T, S2>(out);
}

/// Differentiable split along Axis into pieces of the given sizes (they must add up).
template <int Axis, class T, class S>
auto split(const var<T, S>& v, const std::vector<index_t>& sizes) {
  constexpr std::size_t R = S::rank;
  constexpr std::size_t ax = normalize_axis<Axis, R>();
  index_t total = 0;
  for (index_t s : sizes) {
    if (s < 0) fail(errc::value, "tfm::split: sizes must be >= 0.");
    total += s;
  }
  if (total != v.extent(ax))
    fail(errc::shape, "tfm::split: the sizes add up to ", total, " but axis ", ax, " of ",
         v.shape().to_string(), " has extent ", v.extent(ax), ".");
  using S2 = detail::set_extent_t<S, ax, dyn>;
  std::vector<var<T, S2>> outs;
  index_t off = 0;
  for (index_t s : sizes) {
    outs.push_back(var<T, S2>(slice<Axis>(v, off, off + s).data()));
    off += s;
  }
  return outs;
}

TFM_END_NAMESPACE
