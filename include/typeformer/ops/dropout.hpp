// typeformer/ops/dropout.hpp
//
// Inverted dropout (Srivastava et al., JMLR 2014): in training each element is kept with
// probability 1 - p and scaled by 1 / (1 - p); at evaluation it is the identity. The mask is
// drawn from the counter-based generator: element i is kept iff uniform(seed, offset + i) >= p,
// so it is the same on any thread count and is recomputed in the backward pass instead of being
// stored. Use a new offset (or seed) per call to get a new mask.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/core/random.hpp"

#include <cstdint>
#include <cstring>

TFM_BEGIN_NAMESPACE

template <class T, class S>
var<T, S> dropout(const var<T, S>& v, double p, std::uint64_t seed, std::uint64_t offset,
                  bool training = true) {
  if (!(p >= 0.0 && p < 1.0))
    fail(errc::value, "tfm::dropout: the drop probability must be in [0, 1), got ", p, ".");
  if (!training || p == 0.0) return v;
  auto a = v.data();
  const index_t n = a->size();
  auto out = detail::result<T>(a->extents);
  const double scale = 1.0 / (1.0 - p);
  auto keep = [seed, offset, p](index_t i) {
    return static_cast<double>(uniform_float(seed, offset + static_cast<std::uint64_t>(i))) >= p;
  };
  const T* x = a->value.data();
  T* y = out->value.data();
  TFM_OMP(parallel for schedule(static) if (n >= (1 << 16)))
  for (index_t i = 0; i < n; ++i)
    y[i] = keep(i) ? to_storage<T>(
                         static_cast<compute_t<T>>(static_cast<double>(compute_t<T>(x[i])) * scale))
                   : to_storage<T>(compute_t<T>(0));
  detail::record(out, "dropout", {a}, [a, o = out.get(), keep, scale, n] {
    using G = grad_t<T>;
    const G* g = o->grad_data();
    G* gi = a->grad_data();
    TFM_OMP(parallel for schedule(static) if (n >= (1 << 16)))
    for (index_t i = 0; i < n; ++i)
      if (keep(i)) gi[i] += static_cast<G>(static_cast<double>(g[i]) * scale);
  });
  return var<T, S>(out);
}

TFM_END_NAMESPACE
