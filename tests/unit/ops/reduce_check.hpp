// tests/unit/ops/reduce_check.hpp
//
// One reduction checked three ways: the cpu backend and the reference backend
// (tensor<..., tfm::reference>) against the double oracle of ops_test_util.hpp, and against each
// other. Selections (max/min/argmax/argmin) must be exact; sums, means and logsumexp within an
// NMSE bound (1e-7 when the input is float/bf16/f16: they accumulate in float; 1e-20 for double).
#pragma once

#include <string>
#include <type_traits>

#include "ops_test_util.hpp"
// backend/*/reduce.hpp alone is not enough to reduce: reduce() evaluates non-contiguous inputs
// with evaluate(..., Backend), which the elementwise headers declare (see the report).
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/backend/reference/reduce.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

namespace ops_test {

/// tfm::<op><Axis>(x [, keepdims]) by the user-facing names.
template <red K, int Axis, bool Keep, class X>
auto call_reduce(X&& x) {
#define OPS_TEST_CALL(NAME)                                    \
  if constexpr (Keep)                                          \
    return tfm::NAME<Axis>(std::forward<X>(x), tfm::keepdims); \
  else                                                         \
    return tfm::NAME<Axis>(std::forward<X>(x));
  if constexpr (K == red::sum) {
    OPS_TEST_CALL(sum)
  } else if constexpr (K == red::mean) {
    OPS_TEST_CALL(mean)
  } else if constexpr (K == red::max) {
    OPS_TEST_CALL(max)
  } else if constexpr (K == red::min) {
    OPS_TEST_CALL(min)
  } else if constexpr (K == red::argmax) {
    OPS_TEST_CALL(argmax)
  } else if constexpr (K == red::argmin) {
    OPS_TEST_CALL(argmin)
  } else {
    OPS_TEST_CALL(logsumexp)
  }
#undef OPS_TEST_CALL
}

/// tfm::<op>(x): over all elements.
template <red K, class X>
auto call_reduce_all(X&& x) {
  if constexpr (K == red::sum)
    return tfm::sum(std::forward<X>(x));
  else if constexpr (K == red::mean)
    return tfm::mean(std::forward<X>(x));
  else if constexpr (K == red::max)
    return tfm::max(std::forward<X>(x));
  else if constexpr (K == red::min)
    return tfm::min(std::forward<X>(x));
  else if constexpr (K == red::argmax)
    return tfm::argmax(std::forward<X>(x));
  else if constexpr (K == red::argmin)
    return tfm::argmin(std::forward<X>(x));
  else
    return tfm::logsumexp(std::forward<X>(x));
}

inline constexpr bool is_selection(red k) {
  return k == red::max || k == red::min || k == red::argmax || k == red::argmin;
}

template <class T>
double nmse_bound() {
  return std::is_same_v<T, double> ? 1e-20 : 1e-7;
}

/// Exact comparison (NaN equals NaN): "" when equal, else the first difference.
inline std::string exact_diff(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size())
    return "sizes differ: " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!both_nan && got[i] != want[i])
      return "element " + std::to_string(i) + ": got " + std::to_string(got[i]) + " want " +
             std::to_string(want[i]);
  }
  return {};
}

/// got vs want: exact, or NaN/Inf agreement and NMSE <= bound.
inline void check_values(bool exact, double bound, const std::vector<double>& got,
                         const std::vector<double>& want, const char* what) {
  INFO(std::string(what));
  if (exact) {
    const std::string d = exact_diff(got, want);
    CHECK_MESSAGE(d.empty(), d);
  } else {
    TFM_CHECK_REPORT(tfm_test::compare(got, want, bound));
  }
}

/// Values of a reduction result (tensor or scalar) as doubles.
template <class R>
std::vector<double> result_doubles(const R& r) {
  if constexpr (tfm::dense_type<R>)
    return doubles(r);
  else
    return {tfm_test::to_double(r)};
}

/// The non-template part of a check: shapes and values of both backends vs the oracle.
inline void verify_reduction(red k, int axis, bool keep, bool exact, double bound,
                             const std::vector<double>& values, const dims& ext,
                             const dims& got_ext_cpu, const dims& got_ext_ref,
                             const std::vector<double>& gc, const std::vector<double>& gr) {
  const bool all = axis == 1000;
  const int rank = static_cast<int>(ext.size());
  const std::size_t ax = all ? 0 : static_cast<std::size_t>(axis < 0 ? axis + rank : axis);
  // doctest's INFO captures by reference: build the text first.
  const std::string what = std::string(red_name(k)) +
                           (all ? std::string(" over all") : "<" + std::to_string(axis) + ">") +
                           (keep ? " keepdims" : "") + " of shape " + dims_str(ext);
  INFO(std::string(what));
  if (!all) {
    dims want_ext;
    for (std::size_t a = 0; a < ext.size(); ++a) {
      if (a != ax)
        want_ext.push_back(ext[a]);
      else if (keep)
        want_ext.push_back(1);
    }
    CHECK(got_ext_cpu == want_ext);
    CHECK(got_ext_ref == want_ext);
  }
  const auto want =
      all ? reduce_oracle(k, values, dims{product(ext)}, 0) : reduce_oracle(k, values, ext, ax);
  check_values(exact, bound, gc, want, "cpu vs double oracle");
  check_values(exact, bound, gr, want, "reference vs double oracle");
  check_values(exact, bound, gc, gr, "cpu vs reference");
}

template <class T>
bool exact_for(red k) {  // selections and integer sums are exact
  return is_selection(k) || std::is_integral_v<T>;
}

template <class R>
dims extents_of(const R& r) {
  const auto e = r.shape().extents();
  return dims(e.begin(), e.end());
}

/// Reduction K along Axis (and keepdims or not) of x_cpu (a cpu tensor, view or expression) and
/// x_ref (the same values with the reference backend); `values`/`ext` are the row-major input.
template <red K, int Axis, bool Keep, class T, class XC, class XR>
void check_reduce(XC&& x_cpu, XR&& x_ref, const std::vector<double>& values, const dims& ext) {
  auto rc = call_reduce<K, Axis, Keep>(std::forward<XC>(x_cpu));
  auto rr = call_reduce<K, Axis, Keep>(std::forward<XR>(x_ref));
  static_assert(std::is_same_v<typename decltype(rc)::backend_type, tfm::cpu>);
  static_assert(std::is_same_v<typename decltype(rr)::backend_type, tfm::reference>);
  static_assert(
      std::is_same_v<typename decltype(rc)::value_type, typename decltype(rr)::value_type>);
  verify_reduction(K, Axis, Keep, exact_for<T>(K), nmse_bound<T>(), values, ext, extents_of(rc),
                   extents_of(rr), doubles(rc), doubles(rr));
}

/// Reduction K over all elements.
template <red K, class T, class XC, class XR>
void check_reduce_all(XC&& x_cpu, XR&& x_ref, const std::vector<double>& values, const dims& ext) {
  auto rc = call_reduce_all<K>(std::forward<XC>(x_cpu));
  auto rr = call_reduce_all<K>(std::forward<XR>(x_ref));
  static_assert(std::is_same_v<decltype(rc), decltype(rr)>);
  verify_reduction(K, 1000, false, exact_for<T>(K), nmse_bound<T>(), values, ext, {}, {},
                   result_doubles(rc), result_doubles(rr));
}

/// A random cpu tensor of dynamic rank-3 shape and its reference twin.
template <class T>
struct twin3 {
  using S = tfm::shape<tfm::dyn, tfm::dyn, tfm::dyn>;
  tfm::tensor<T, S> c;
  tfm::tensor<T, S, tfm::reference> r;
  std::vector<double> values;
  dims ext;
  twin3(index_t a, index_t b, index_t d, std::mt19937& g, double lo = -1, double hi = 1)
      : c(a, b, d), r(a, b, d), ext{a, b, d} {
    auto v = tfm_test::random_vector<T>(static_cast<std::size_t>(a * b * d), g, lo, hi);
    tfm_test::from_vector(c, v);
    tfm_test::from_vector(r, v);
    values = doubles(c);
  }
};

/// Every reduction along axes 0, 1, 2, -1, -2, -3, with and without keepdims, and over all
/// elements, of one rank-3 input. Integers: sum, max, min, argmax, argmin.
template <class T>
void check_every_axis(const twin3<T>& x) {
  auto per_op = [&]<red K>() {
    check_reduce<K, 0, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, 1, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, 2, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, -1, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, -2, true, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, -3, false, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, 0, true, T>(x.c, x.r, x.values, x.ext);
    check_reduce<K, 2, true, T>(x.c, x.r, x.values, x.ext);
    check_reduce_all<K, T>(x.c, x.r, x.values, x.ext);
  };
  per_op.template operator()<red::sum>();
  per_op.template operator()<red::max>();
  per_op.template operator()<red::min>();
  per_op.template operator()<red::argmax>();
  per_op.template operator()<red::argmin>();
  if constexpr (!std::is_integral_v<T>) {
    per_op.template operator()<red::mean>();
    per_op.template operator()<red::logsumexp>();
  }
}

}  // namespace ops_test
