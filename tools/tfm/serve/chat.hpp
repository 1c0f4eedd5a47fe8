// tools/tfm/serve/chat.hpp: the prompt of POST /v1/chat/completions. The validated messages
// (api.hpp parse_chat) are rendered with the model's own chat template (GGUF
// tokenizer.chat_template, by the Jinja interpreter, tokenizer/jinja.hpp) with
// add_generation_prompt = true, then tokenized as `tfm chat` does: special tokens written by the
// template are recognised, and BOS is added when the model asks for it and the template did not
// write it already.
#pragma once

#include "api.hpp"

#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/jinja.hpp"
#include "typeformer/tokenizer/vocab_tokenizer.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tfm_cli::serve {

/// The messages of a validated chat request as {role, content} pairs.
inline std::vector<tfm::chat_message> chat_messages(const json& messages) {
  std::vector<tfm::chat_message> out;
  out.reserve(messages.size());
  for (const json& m : messages)
    out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return out;
}

/// A model's chat template with the tokenizer that reads its output.
class chat_prompt {
 public:
  /// `source`: the Jinja template; the special tokens come from the tokenizer.
  chat_prompt(std::string_view source, const tfm::vocab_tokenizer& tok)
      : tok_(&tok),
        tpl_(source, {.bos_token = token_or_none(tok, tok.bos_id()),
                      .eos_token = token_or_none(tok, tok.eos_id())}) {}

  /// The rendered text of a conversation, ready for the assistant's reply. A message that the
  /// template refuses (raise_exception, e.g. roles out of order) is a 400.
  std::string render(const json& messages) const {
    const auto msgs = chat_messages(messages);
    try {
      return tpl_.render(msgs, /*add_generation_prompt=*/true);
    } catch (const std::exception& e) {
      throw bad_request(std::string("the chat template cannot render these messages: ") + e.what(),
                        "messages");
    }
  }

  /// Token ids of rendered text.
  std::vector<std::int32_t> tokenize(const std::string& text) const {
    const auto bos = token_or_none(*tok_, tok_->bos_id());
    const bool add_bos = tok_->add_bos() && !(bos && text.starts_with(*bos));
    return tok_->encode(text, {.add_special = add_bos, .parse_special = true});
  }

 private:
  static std::optional<std::string> token_or_none(const tfm::vocab_tokenizer& tok,
                                                  std::int32_t id) {
    if (id < 0 || static_cast<std::size_t>(id) >= tok.vocab_size()) return std::nullopt;
    return tok.token_text(id);
  }

  const tfm::vocab_tokenizer* tok_;
  tfm::jinja_chat_template tpl_;
};

}  // namespace tfm_cli::serve
