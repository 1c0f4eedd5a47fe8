// typeformer/core/tuple.hpp: tuple_apply, std::apply without its cost to the compiler.
//
// std::apply's noexcept specification asks is_nothrow_invocable of every call, and its call goes
// through std::invoke: for the expression templates, which unpack a node's children at every
// level of every tree (cursors, scalar and SIMD element access, row positioning), those traits
// were the largest single share of the front end's time (clang -ftime-trace on
// bench/compile_time/expr_kinds.cpp). The callers pass plain callables (lambdas), so a direct
// call over an index sequence does the same thing.
#pragma once

#include "typeformer/config/config.hpp"

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

namespace detail {

template <class F, class Tuple, std::size_t... I>
constexpr decltype(auto) tuple_apply_impl(F&& f, Tuple&& t, std::index_sequence<I...>) {
  return static_cast<F&&>(f)(std::get<I>(static_cast<Tuple&&>(t))...);
}

/// f(std::get<0>(t), std::get<1>(t), ...) for a callable object f (not a member pointer).
template <class F, class Tuple>
constexpr decltype(auto) tuple_apply(F&& f, Tuple&& t) {
  return tuple_apply_impl(
      static_cast<F&&>(f), static_cast<Tuple&&>(t),
      std::make_index_sequence<std::tuple_size_v<std::remove_reference_t<Tuple>>>{});
}

}  // namespace detail

TFM_END_NAMESPACE
