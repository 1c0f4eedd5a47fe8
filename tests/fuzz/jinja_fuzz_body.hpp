// The body of the jinja fuzz target (tests/fuzz/jinja_fuzz.cpp), shared with the seeded
// mutation test of tests/unit/jinja: the input is a template; it is parsed and rendered for a
// fixed conversation under small limits. Every failure must be a tfm::error; anything else
// (a crash, a sanitizer report, another exception) is a bug.
#pragma once

#include "typeformer/tokenizer/jinja.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace jinja_fuzz {

/// Returns 1 when the template rendered, 0 when it was refused with a tfm::error.
inline int run_one(std::string_view source) {
  tfm::jinja_chat_options o;
  o.bos_token = "<s>";
  o.eos_token = "</s>";
  o.now = std::tm{};
  o.limits.max_steps = 200'000;
  o.limits.max_output_bytes = 1 << 20;
  o.limits.max_string_bytes = 1 << 20;
  o.limits.max_items = 1 << 16;
  try {
    const tfm::jinja_chat_template tpl(source, o);
    const tfm::chat_message conv[] = {{"system", "Be brief."},
                                      {"user", "Hello  "},
                                      {"assistant", " Hi! <|im_end|>"},
                                      {"user", "Zürich 😀"}};
    (void)tpl.render(conv, true);
    (void)tpl.render(std::span<const tfm::chat_message>(conv + 1, 2), false);
    return 1;
  } catch (const tfm::error&) {
    return 0;
  }
}

}  // namespace jinja_fuzz
