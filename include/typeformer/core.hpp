// typeformer/core.hpp: umbrella for users: tensors, views, factories, printing, expressions and
// reductions with the reference and cpu backends. (Library code includes precise headers.)
#pragma once

#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/backend/reference/reduce.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/factory.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/print.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/evaluate.hpp"
#include "typeformer/expr/functors.hpp"
#include "typeformer/expr/node.hpp"
#include "typeformer/expr/reduce.hpp"
