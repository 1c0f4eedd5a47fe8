// typeformer/typeformer.hpp: umbrella for users: everything that runs on the CPU.
// (Opt-in extras with outside dependencies: typeformer/interop/eigen.hpp.)
#pragma once

#include "typeformer/core.hpp"
#include "typeformer/nn.hpp"
