// typeformer/core/dtype.hpp
//
// Element-type traits: which types a tensor may hold, the type arithmetic is done in
// (bf16/f16 compute in float; int8 in int32), the type reductions accumulate in, and names for
// messages.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/half.hpp"

#include <cstdint>
#include <type_traits>

TFM_BEGIN_NAMESPACE

/// Element types a dense tensor may hold (quantized block types come with quant/).
template <class T>
concept dense_element =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, bf16> ||
    std::is_same_v<T, f16> || std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::int32_t> ||
    std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint8_t> || std::is_same_v<T, bool>;

namespace detail {
template <class T>
struct compute_type {
  using type = T;
};
template <>
struct compute_type<bf16> {
  using type = float;
};
template <>
struct compute_type<f16> {
  using type = float;
};
template <>
struct compute_type<std::int8_t> {
  using type = std::int32_t;
};
template <>
struct compute_type<std::uint8_t> {
  using type = std::int32_t;
};
template <>
struct compute_type<bool> {
  using type = std::int32_t;
};
}  // namespace detail

/// The type elementwise arithmetic on T is carried out in.
template <class T>
using compute_t = typename detail::compute_type<std::remove_cv_t<T>>::type;

/// The type sums over T accumulate in (f32 for bf16/f16/f32, f64 for f64, i64 for integers).
template <class T>
using accum_t =
    std::conditional_t<std::is_same_v<compute_t<T>, double>, double,
                       std::conditional_t<std::is_integral_v<compute_t<T>>, std::int64_t, float>>;

/// True for float, double, bf16 and f16.
template <class T>
inline constexpr bool is_floating_v =
    std::is_floating_point_v<std::remove_cv_t<T>> || is_half_v<std::remove_cv_t<T>>;

/// Converts a compute-type value to the storage type T (RNE for bf16/f16).
template <class T, class U>
constexpr T to_storage(U v) noexcept {
  if constexpr (is_half_v<T>)
    return T(static_cast<float>(v));
  else
    return static_cast<T>(v);
}

/// Short name of an element type, for messages and printing.
template <class T>
constexpr const char* dtype_name() noexcept {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, float>)
    return "f32";
  else if constexpr (std::is_same_v<U, double>)
    return "f64";
  else if constexpr (std::is_same_v<U, bf16>)
    return "bf16";
  else if constexpr (std::is_same_v<U, f16>)
    return "f16";
  else if constexpr (std::is_same_v<U, std::int8_t>)
    return "i8";
  else if constexpr (std::is_same_v<U, std::uint8_t>)
    return "u8";
  else if constexpr (std::is_same_v<U, std::int32_t>)
    return "i32";
  else if constexpr (std::is_same_v<U, std::int64_t>)
    return "i64";
  else if constexpr (std::is_same_v<U, bool>)
    return "bool";
  else
    return "?";
}

TFM_END_NAMESPACE
