// tfm train with bf16 parameters and f32 master weights (see cmd_train.cpp).
#include "train.hpp"

#include "typeformer/train/run.hpp"

namespace tfm_cli {

int run_train_bf16(tfm::train::run_settings& s,
                   const std::optional<tfm::train::training_state>& resumed,
                   const tfm::train::text_tokenizer& tok) {
  return tfm::train::run<tfm::bf16>(s, resumed, tok);
}

}  // namespace tfm_cli
