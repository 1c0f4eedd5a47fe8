// typeformer/backend/reference/reduce.hpp
//
// Reference reductions over a contiguous buffer viewed as (outer, n, inner): out[o, i] reduces
// src[o, 0..n-1, i]. Plain loops accumulating in double (int64 for integers): the oracle.
#pragma once

#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/expr/reduce.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

TFM_BEGIN_NAMESPACE

template <reduce_op K, class T, class U>
void reduce_kernel(const T* src, index_t outer, index_t n, index_t inner, U* out, reference) {
  using C = compute_t<T>;
  using A = std::conditional_t<std::is_integral_v<C>, std::int64_t, double>;
  for (index_t o = 0; o < outer; ++o) {
    for (index_t i = 0; i < inner; ++i) {
      // An empty reduced axis (n == 0) reads nothing, and src may then be null: no offset.
      const T* p = n > 0 ? src + o * n * inner + i : src;
      auto at = [&](index_t r) { return static_cast<C>(p[r * inner]); };
      U& dst = out[o * inner + i];
      if constexpr (K == reduce_op::sum || K == reduce_op::mean) {
        A acc = 0;
        for (index_t r = 0; r < n; ++r) acc += static_cast<A>(at(r));
        if constexpr (K == reduce_op::mean)
          dst = static_cast<U>(static_cast<double>(acc) / static_cast<double>(n));
        else
          dst = static_cast<U>(acc);
      } else if constexpr (K == reduce_op::max || K == reduce_op::min || K == reduce_op::argmax ||
                           K == reduce_op::argmin) {
        constexpr bool is_max = K == reduce_op::max || K == reduce_op::argmax;
        C best = at(0);
        index_t bi = 0;
        for (index_t r = 1; r < n; ++r) {
          C v = at(r);
          if constexpr (std::is_floating_point_v<C>) {
            if (std::isnan(best)) break;  // first NaN wins
            if (std::isnan(v)) {
              best = v;
              bi = r;
              break;
            }
          }
          if (is_max ? v > best : v < best) {
            best = v;
            bi = r;
          }
        }
        if constexpr (K == reduce_op::argmax || K == reduce_op::argmin)
          dst = static_cast<U>(bi);
        else
          dst = to_storage<U>(best);
      } else {  // logsumexp
        double m = -std::numeric_limits<double>::infinity();
        bool nan = false;
        for (index_t r = 0; r < n; ++r) {
          double v = static_cast<double>(at(r));
          nan |= std::isnan(v);
          if (v > m) m = v;
        }
        if (nan) {
          dst = static_cast<U>(std::numeric_limits<double>::quiet_NaN());
        } else if (std::isinf(m)) {
          dst = static_cast<U>(m);  // all -inf -> -inf; any +inf -> +inf
        } else {
          double s = 0;
          for (index_t r = 0; r < n; ++r) s += std::exp(static_cast<double>(at(r)) - m);
          dst = static_cast<U>(m + std::log(s));
        }
      }
    }
  }
}

TFM_END_NAMESPACE
