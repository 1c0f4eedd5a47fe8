// typeformer/backend/tags.hpp
//
// Backends are tag types; a tensor's Backend parameter picks the kernels that evaluate its
// expressions. Fallback is by inheritance (the xsimd idea, `struct avx2 : avx`): an operation
// written only for tfm::reference is used by tfm::cpu too, because overload resolution converts
// the derived tag to its base. So every backend inherits from reference, whose plain loops exist
// for every primitive.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/fwd.hpp"

#include <type_traits>

TFM_BEGIN_NAMESPACE

/// Plain scalar loops; always compiled; the oracle in tests and the fallback of other backends.
struct reference {
  static constexpr const char* name = "reference";
};

/// SIMD (xsimd, ISA chosen at compile time by the target flags) and OpenMP threads.
struct cpu : reference {
  static constexpr const char* name = "cpu";
};

/// Satisfied by backend tags.
template <class B>
concept backend = std::is_base_of_v<reference, B> && std::is_empty_v<B>;

TFM_END_NAMESPACE
