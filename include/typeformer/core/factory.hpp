// typeformer/core/factory.hpp
//
// Tensor factories: zeros, full, arange, and random tensors from the counter-based generator of
// core/random.hpp. Random element i of a tensor made with (seed, offset) is the generator's
// value at index offset + i, so the same seed gives the same tensor on any thread count, and a
// tensor filled in pieces with matching offsets equals one filled at once.
//
//   auto w = tfm::randn<float>(tfm::shape<768, 768>{}, /*seed=*/42, /*stddev=*/0.02f);
//   auto x = tfm::rand_uniform<float>(tfm::shape<tfm::dyn, 64>(n), 7, -1.0f, 1.0f);
//   auto r = tfm::arange<float>(10);   // 0, 1, ..., 9 (shape<dyn>)
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

#include <cstdint>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Zero-filled tensor.
template <class T, class Backend = cpu, shape_type S>
tensor<T, S, Backend> zeros(const S& s) {
  return tensor<T, S, Backend>(s);
}

/// Tensor with every element equal to v.
template <class T, class Backend = cpu, shape_type S>
tensor<T, S, Backend> full(const S& s, compute_t<T> v) {
  auto t = tensor<T, S, Backend>::uninitialized(s);
  t.fill(v);
  return t;
}

/// 0, 1, ..., n-1 (or start, start+step, ... while < stop) as a 1-D tensor.
template <class T, class Backend = cpu>
tensor<T, shape<dyn>, Backend> arange(compute_t<T> start, compute_t<T> stop,
                                      compute_t<T> step = 1) {
  if (step == 0) fail(errc::value, "tfm::arange: the step must not be zero.");
  double span =
      (static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step);
  index_t n = span > 0 ? static_cast<index_t>(span) +
                             (span > static_cast<double>(static_cast<index_t>(span)) ? 1 : 0)
                       : 0;
  tensor<T, shape<dyn>, Backend> t(n);
  for (index_t i = 0; i < n; ++i)
    t.data()[i] =
        to_storage<T>(static_cast<compute_t<T>>(start + static_cast<compute_t<T>>(i) * step));
  return t;
}
template <class T, class Backend = cpu>
tensor<T, shape<dyn>, Backend> arange(index_t n) {
  if (n < 0) fail(errc::value, "tfm::arange: the count must be >= 0, got ", n, ".");
  return arange<T, Backend>(compute_t<T>(0), static_cast<compute_t<T>>(n), compute_t<T>(1));
}

namespace detail {
template <class T, class S, class Backend, class Fill>
tensor<T, S, Backend> random_tensor(const S& s, Fill&& fill) {
  static_assert(is_floating_v<T>, "tfm: random tensors need a floating-point element type");
  auto t = tensor<T, S, Backend>::uninitialized(s);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    fill(t.data(), t.size());
  } else {  // bf16 / f16: draw in float, round once
    std::vector<float> tmp(static_cast<std::size_t>(t.size()));
    fill(tmp.data(), t.size());
    for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(tmp[static_cast<std::size_t>(i)]);
  }
  return t;
}
}  // namespace detail

/// Normal(mean, stddev) elements from (seed, offset).
template <class T, class Backend = cpu, shape_type S>
tensor<T, S, Backend> randn(const S& s, std::uint64_t seed, compute_t<T> stddev = 1,
                            compute_t<T> mean = 0, std::uint64_t offset = 0) {
  return detail::random_tensor<T, S, Backend>(s, [&](auto* p, index_t n) {
    using P = std::remove_pointer_t<decltype(p)>;
    fill_normal(p, n, seed, offset, static_cast<P>(mean), static_cast<P>(stddev));
  });
}

/// Uniform [lo, hi) elements from (seed, offset).
template <class T, class Backend = cpu, shape_type S>
tensor<T, S, Backend> rand_uniform(const S& s, std::uint64_t seed, compute_t<T> lo = 0,
                                   compute_t<T> hi = 1, std::uint64_t offset = 0) {
  return detail::random_tensor<T, S, Backend>(s, [&](auto* p, index_t n) {
    using P = std::remove_pointer_t<decltype(p)>;
    fill_uniform(p, n, seed, offset, static_cast<P>(lo), static_cast<P>(hi));
  });
}

TFM_END_NAMESPACE
