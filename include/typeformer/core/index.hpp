// typeformer/core/index.hpp: the index type and the dynamic-extent marker used project-wide.
#pragma once

#include "typeformer/config/config.hpp"

#include <cstddef>
#include <cstdint>

TFM_BEGIN_NAMESPACE

/// Signed index type of extents, strides and offsets (signed so that negative strides and
/// differences are representable; 64-bit so that large models do not overflow).
using index_t = std::ptrdiff_t;

/// Marks an extent known only at run time: tfm::shape<4, tfm::dyn, 768>.
inline constexpr index_t dyn = -1;

TFM_END_NAMESPACE
