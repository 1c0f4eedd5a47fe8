// mini_gpt: training with f32 parameters (see run.hpp).
#include "run.hpp"

namespace mini_gpt {
int run_f32(settings& s, const std::optional<train::training_state>& resumed,
            const train::text_tokenizer& tok) {
  return run<float>(s, resumed, tok);
}
}  // namespace mini_gpt
