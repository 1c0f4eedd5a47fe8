// tools/tfm/train.hpp: what cmd_train.cpp and cmd_train_bf16.cpp share. The run with f32
// parameters compiles in cmd_train.cpp, the one with bf16 parameters in cmd_train_bf16.cpp, so
// the two model instantiations build in parallel.
#pragma once

#include "typeformer/train/run_settings.hpp"
#include "typeformer/train/tokenizer.hpp"

#include <optional>

namespace tfm_cli {

int run_train_bf16(tfm::train::run_settings& s,
                   const std::optional<tfm::train::training_state>& resumed,
                   const tfm::train::text_tokenizer& tok);

}  // namespace tfm_cli
