// The bf16 half of the mixed-precision test (see mp_f32.cpp).
#include "mp_train.hpp"

#include <typeformer/core/half.hpp>

namespace optim_test {
mp_run mp_train_bf16() { return mp_train<tfm::bf16>(nullptr); }
}  // namespace optim_test
