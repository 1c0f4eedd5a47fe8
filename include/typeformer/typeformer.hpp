// typeformer/typeformer.hpp: umbrella for users: the tensor library and everything built on
// tensors that runs on the CPU: typeformer/core.hpp (tensors, expressions, the reference and cpu
// backends) and typeformer/nn.hpp (autodiff, ops, nn modules and models, optimizers).
//
// Not included, on purpose (docs/design.md, "Umbrella headers"):
//   typeformer/tokenizer.hpp   tokenizers and chat templates: no tensors, and they take about
//                              twice as long to compile as everything below
//   typeformer/infer/*.hpp, train/*.hpp, io/*.hpp, testing/*.hpp: include the one you use
//   typeformer/interop/eigen.hpp: needs Eigen
#pragma once

#include "typeformer/core.hpp"
#include "typeformer/nn.hpp"
