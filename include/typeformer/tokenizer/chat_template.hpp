// typeformer/tokenizer/chat_template.hpp
//
// WHAT THIS REPRESENTS
//   One renderer for the chat formats that instruction-tuned models expect, producing exactly the
//   text of each format's published Jinja template (as rendered by transformers'
//   apply_chat_template), and optionally the byte ranges of assistant replies for SFT loss
//   masking.
//
//   chatml  (Hugging Face "chat templating" docs, ChatML as used by OpenAI / Qwen / many
//   fine-tunes)
//     for each message: "<|im_start|>" role "\n" content "<|im_end|>\n"
//     generation prompt: "<|im_start|>assistant\n"
//   llama2  (meta-llama/Llama-2-7b-chat-hf tokenizer_config.json chat_template)
//     optional first system message folded into the first user turn:
//       "<s>[INST] <<SYS>>\n" system "\n<</SYS>>\n\n" user " [/INST]"
//     user turn:      bos "[INST] " strip(content) " [/INST]"
//     assistant turn: " " strip(content) " " eos
//     roles after the system message must alternate user/assistant starting with user; the
//     generation prompt adds nothing (the text already ends with " [/INST]").
//   llama3  (meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template)
//     "<|begin_of_text|>" once, then for each message:
//       "<|start_header_id|>" role "<|end_header_id|>\n\n" trim(content) "<|eot_id|>"
//     generation prompt: "<|start_header_id|>assistant<|end_header_id|>\n\n"
//   strip/trim remove leading and trailing whitespace as Python's str.strip() does.
//
// CONTRACTS
//   - render() is a pure function of its arguments; special tokens are emitted as text (encode
//     them as special tokens in the tokenizer).
//   - render_with_spans().assistant[i] covers the i-th assistant message: [begin, content_end)
//     is its (stripped) content, [content_end, end) the end-of-turn marker that the model must
//     learn to emit ("<|im_end|>", " </s>" including its leading space, "<|eot_id|>").
//   - Bad conversations fail with value_error: llama2 roles that do not alternate, a system
//     message after the first position, or a role other than system/user/assistant in llama2.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE

/// One turn of a conversation. role is "system", "user", "assistant" (or any role the format
/// allows, e.g. "tool" for chatml and llama3).
struct chat_message {
  std::string role;
  std::string content;
};

/// Byte range of one assistant reply in rendered text (see the file comment).
struct chat_span {
  std::size_t begin = 0;        ///< first byte of the content
  std::size_t content_end = 0;  ///< one past the content
  std::size_t end = 0;          ///< one past the end-of-turn marker
};

/// Rendered text and the ranges of its assistant replies.
struct rendered_chat {
  std::string text;
  std::vector<chat_span> assistant;
};

/// The supported formats.
enum class chat_format { chatml, llama2, llama3 };

/// Renders conversations in one chat format.
class chat_template {
 public:
  /// bos/eos default to the format's tokens ("<s>"/"</s>" for llama2,
  /// "<|begin_of_text|>" for llama3; chatml uses none).
  explicit chat_template(chat_format format) : format_(format) {
    if (format == chat_format::llama2) {
      bos_ = "<s>";
      eos_ = "</s>";
    } else if (format == chat_format::llama3) {
      bos_ = "<|begin_of_text|>";
      eos_ = "<|eot_id|>";
    }
  }
  chat_template(chat_format format, std::string bos, std::string eos)
      : format_(format), bos_(std::move(bos)), eos_(std::move(eos)) {}

  chat_format format() const noexcept { return format_; }

  /// The text of the conversation; with add_generation_prompt the header of an assistant turn
  /// is appended so that a model continues with the reply.
  std::string render(std::span<const chat_message> messages, bool add_generation_prompt) const {
    return render_with_spans(messages, add_generation_prompt).text;
  }
  std::string render(std::initializer_list<chat_message> messages,
                     bool add_generation_prompt) const {
    return render(std::span<const chat_message>(messages.begin(), messages.size()),
                  add_generation_prompt);
  }

  /// The text and the byte ranges of every assistant reply.
  rendered_chat render_with_spans(std::span<const chat_message> messages,
                                  bool add_generation_prompt) const {
    rendered_chat r;
    switch (format_) {
      case chat_format::chatml:
        render_chatml(messages, add_generation_prompt, r);
        break;
      case chat_format::llama2:
        render_llama2(messages, r);
        break;
      case chat_format::llama3:
        render_llama3(messages, add_generation_prompt, r);
        break;
    }
    return r;
  }

  /// Python str.strip(): removes leading and trailing characters for which str.isspace() holds.
  static std::string_view strip(std::string_view s) {
    auto last_cp_start = [](std::string_view v) {
      std::size_t k = v.size() - 1;
      while (k > 0 && utf8::is_continuation(static_cast<unsigned char>(v[k]))) --k;
      return k;
    };
    while (!s.empty()) {
      const utf8::decoded d = utf8::decode(s, 0);
      if (!d.valid || !is_py_space(d.cp)) break;
      s.remove_prefix(d.length);
    }
    while (!s.empty()) {
      const std::size_t k = last_cp_start(s);
      const utf8::decoded d = utf8::decode(s, k);
      if (!d.valid || k + d.length != s.size() || !is_py_space(d.cp)) break;
      s.remove_suffix(s.size() - k);
    }
    return s;
  }

 private:
  // Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
  static constexpr bool is_py_space(char32_t c) noexcept {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
  }

  static void add_span(rendered_chat& r, std::size_t begin, std::size_t content_end) {
    r.assistant.push_back({begin, content_end, r.text.size()});
  }

  void render_chatml(std::span<const chat_message> ms, bool gen, rendered_chat& r) const {
    for (const chat_message& m : ms) {
      r.text += "<|im_start|>";
      r.text += m.role;
      r.text += '\n';
      const std::size_t b = r.text.size();
      r.text += m.content;
      const std::size_t ce = r.text.size();
      r.text += "<|im_end|>";
      if (m.role == "assistant") add_span(r, b, ce);
      r.text += '\n';
    }
    if (gen) r.text += "<|im_start|>assistant\n";
  }

  void render_llama3(std::span<const chat_message> ms, bool gen, rendered_chat& r) const {
    for (std::size_t i = 0; i < ms.size(); ++i) {
      if (i == 0) r.text += bos_;
      r.text += "<|start_header_id|>";
      r.text += ms[i].role;
      r.text += "<|end_header_id|>\n\n";
      const std::size_t b = r.text.size();
      r.text += strip(ms[i].content);
      const std::size_t ce = r.text.size();
      r.text += "<|eot_id|>";
      if (ms[i].role == "assistant") add_span(r, b, ce);
    }
    if (gen) r.text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }

  void render_llama2(std::span<const chat_message> ms, rendered_chat& r) const {
    if (ms.empty()) return;
    std::size_t first = 0;
    const std::string* system = nullptr;
    if (ms[0].role == "system") {
      system = &ms[0].content;
      first = 1;
    }
    for (std::size_t i = first; i < ms.size(); ++i) {
      const chat_message& m = ms[i];
      const std::size_t k = i - first;
      if (m.role != "user" && m.role != "assistant")
        fail(errc::value, "chat_template llama2: message ", i, " has role \"", m.role,
             "\"; only a first \"system\" message and alternating \"user\"/\"assistant\" are "
             "allowed.");
      if ((m.role == "user") != (k % 2 == 0))
        fail(errc::value,
             "chat_template llama2: conversation roles must alternate "
             "user/assistant/user/assistant/... (message ",
             i, " is \"", m.role, "\").");
      if (m.role == "user") {
        std::string content;
        if (k == 0 && system) {
          content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + m.content;
        } else {
          content = m.content;
        }
        r.text += bos_;
        r.text += "[INST] ";
        r.text += strip(content);
        r.text += " [/INST]";
      } else {
        r.text += ' ';
        const std::size_t b = r.text.size();
        r.text += strip(m.content);
        const std::size_t ce = r.text.size();
        r.text += ' ';
        r.text += eos_;
        add_span(r, b, ce);
      }
    }
  }

  chat_format format_;
  std::string bos_, eos_;
};

TFM_END_NAMESPACE
