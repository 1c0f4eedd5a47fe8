// typeformer/core/fwd.hpp: forward declarations shared by the layers. The backend tags are
// defined in backend/tags.hpp; core/ only names them (a tensor's Backend parameter), so core/
// does not depend on backend/.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/index.hpp"

TFM_BEGIN_NAMESPACE

struct reference;  // plain scalar loops: the oracle and the fallback (backend/tags.hpp)
struct cpu;        // xsimd + OpenMP kernels; falls back to reference

struct heap_storage;    // owning, 64-byte aligned heap buffer (the default)
struct inline_storage;  // owning, in-object array: no heap (static shapes only)

template <index_t... Es>
struct shape;

/// "No argument": passed for an optional operand (a bias, a norm's weight) that is absent.
struct none_t {
  explicit constexpr none_t() = default;
};
inline constexpr none_t none{};

TFM_END_NAMESPACE
