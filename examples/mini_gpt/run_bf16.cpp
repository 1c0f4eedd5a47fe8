// mini_gpt: training with bf16 parameters (see run.hpp).
#include "run.hpp"

namespace mini_gpt {
int run_bf16(settings& s, const std::optional<train::training_state>& resumed,
             const train::text_tokenizer& tok) {
  return run<tfm::bf16>(s, resumed, tok);
}
}  // namespace mini_gpt
