// tests/compile_fail/support/demo_extent.hpp: a stand-in for the library's static shape checks,
// used only to test the compile-fail machinery itself (tests/compile_fail/demo/).
#pragma once

#include "typeformer/config/config.hpp"

namespace tfm_compile_fail_demo {

/// The common extent of two operands on one axis; both must be equal.
template <long Left, long Right>
constexpr long common_extent() {
  static_assert(Left == Right,
                "common_extent: the two operands have different extents on this axis; "
                "reshape or broadcast one of them first");
  return Left;
}

}  // namespace tfm_compile_fail_demo
