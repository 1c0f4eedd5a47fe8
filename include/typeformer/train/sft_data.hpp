// typeformer/train/sft_data.hpp
//
// WHAT THIS REPRESENTS
//   The data side of supervised fine-tuning (SFT): conversations in JSONL files become token ids
//   with a loss mask that is 1 only on what the assistant says, then packed rows of block_size
//   tokens whose targets ignore everything else and whose segment ids keep attention inside one
//   document, and a held-out split.
//
//     auto records = train::read_sft_jsonl("data.jsonl");
//     auto [tr, va] = train::split_sft_records(records, {.fraction = 0.05});
//     train::sft_encoder enc(tok, jinja_chat_template(src, {.eos_token = "<|im_end|>"}));
//     train::sft_rows rows = train::sft_rows::build(enc.encode_all(tr), {.block_size = 512});
//     train::sft_loader loader(rows, /*B=*/4, /*seed=*/1);
//     train::sft_batch b = loader.next();   // ids, targets, segments, positions: (B, T)
//     // train/finetune.hpp: masked_batch{b.ids, b.targets, b.segment_ids()}
//
// INPUT (the dataset formats of Hugging Face TRL's SFTTrainer, docs "Dataset formats")
//   One JSON object per line; blank (whitespace-only) lines are skipped but counted:
//     {"messages": [{"role": R, "content": "..."}, ...]}            conversational
//     {"prompt": "...", "completion": "..."}                         prompt-completion, plain text
//     {"prompt": [messages], "completion": [messages]}               prompt-completion, chat
//   Roles: system, user, assistant, tool. Other keys (in the line or in a message) are ignored.
//   Every malformed line is a tfm::parse_error naming the file, the 1-based line and what was
//   wrong: bad JSON (with the 1-based byte column), a line that is not an object, a missing key,
//   a value of the wrong type, an unknown role, an empty message list, both "messages" and
//   "prompt"; a file without any example is an error too.
//
// LOSS MASK (what TRL's assistant_only_loss / transformers' {% generation %} blocks mark)
//   The conversation is rendered once by the model's chat template (no generation prompt) and
//   tokenized once with special tokens parsed and no BOS/EOS added (apply_chat_template's
//   tokenization). For assistant message i the span is found by rendering prefixes:
//     P = render(messages[0, i), add_generation_prompt = true)    ends with the assistant header
//     F = render(messages[0, i],  add_generation_prompt = false)
//   span = [|P|, |rstrip(F)|): the reply and the end-of-turn marker the template writes after
//   it ("<|im_end|>" in ChatML, "<|eot_id|>" in Llama 3, " </s>" in Llama 2), without the
//   whitespace that follows the marker (ChatML's "\n"), as a {% generation %} block around
//   "content<|im_end|>" would. The template must render prefixes as prefixes (F starts with P,
//   the whole conversation starts with F); otherwise encoding fails naming the message. Token
//   byte offsets come from the token pieces (byte-level BPE: pieces concatenate to the text;
//   bytes that have no token, which llama.cpp drops, are skipped); a token is in the mask when
//   its first byte lies in a span.
//   Prompt-completion, chat: P = render(prompt, true), F = render(prompt + completion, false),
//   mask [|P|, |rstrip(F)|) (TRL masks the whole completion). Plain text: BOS when the
//   tokenizer adds one, prompt + completion tokenized as one text, tokens that start at or after
//   the prompt's end in the mask (a token merging the prompt's last bytes with the completion's
//   first stays out), EOS appended and in the mask (TRL appends EOS).
//
// ROWS
//   An example longer than block_size T is truncated to its first T tokens, dropped, or an error
//   (sft_truncation). Packing (sft_packing): best_fit_decreasing, TRL's default "bfd" (examples
//   by length, longest first, each into the open row with the least room that fits it, ties to
//   the earliest row; a new row when none fits), best_fit (the same in file order), or none
//   (one example per row). In a row, documents follow in placement order with segment ids 0, 1,
//   2, ...; padding fills the end of the row as one more segment. For position t of a row:
//     targets[t]   = ids[t + 1] when t + 1 is in the same document and its mask is 1,
//                    else ignore_index (default -100, cross_entropy_options' default);
//     positions[t] = offset of t inside its document (for learned positions; with RoPE and the
//                    document mask, positions 0 .. T-1 give the same outputs, ops/attention.hpp);
//   attention from t to s is allowed iff s <= t and segments[s] == segments[t]. Examples that
//   would give no target (no mask-1 token after their first) are dropped and counted.
//
// SPLIT AND ORDER
//   The held-out split is decided per record by a 64-bit hash of its roles and texts (and the
//   split seed), so it does not depend on file order and identical records land together:
//   fraction f puts a record in validation when hash / 2^64 < f; count n takes the n smallest
//   hashes. sft_loader serves batches of B rows; epoch e visits the rows in a Fisher-Yates
//   permutation drawn from Philox (core/random.hpp) at (seed, e): batch (e, k) is a pure
//   function of (rows, B, seed, e, k), so a run resumes exactly from (epoch, index).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/vocab_tokenizer.hpp"
#include "typeformer/train/data.hpp"

#include <algorithm>
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

// ---- records ------------------------------------------------------------------------------------

enum class sft_record_kind : std::uint8_t {
  messages,
  prompt_completion_text,
  prompt_completion_chat
};

/// One JSONL line. messages: the conversation (kind messages) or the prompt messages
/// (prompt_completion_chat); completion: the completion messages; prompt/completion_text: the
/// plain texts. where: "'file' line N" for messages.
struct sft_record {
  sft_record_kind kind = sft_record_kind::messages;
  std::vector<chat_message> messages;
  std::vector<chat_message> completion;
  std::string prompt_text, completion_text;
  std::string where;
};

namespace detail::sft {

using jvalue = tfm::detail::json::value;

[[noreturn]] inline void line_error(std::string_view name, std::size_t line,
                                    std::string_view what) {
  fail(errc::parse, "tfm::train::sft: '", name, "' line ", line, ": ", what);
}

inline bool is_known_role(std::string_view r) {
  return r == "system" || r == "user" || r == "assistant" || r == "tool";
}

/// Messages of a JSON array named `key` ("messages", "prompt", "completion").
inline std::vector<chat_message> read_messages(const jvalue& a, std::string_view key,
                                               std::string_view name, std::size_t line) {
  std::vector<chat_message> out;
  if (a.array.empty()) line_error(name, line, std::string("'") + std::string(key) + "' is empty.");
  for (std::size_t i = 0; i < a.array.size(); ++i) {
    const jvalue& m = a.array[i];
    const std::string at = std::string(key) + "[" + std::to_string(i) + "]";
    if (!m.is_object())
      line_error(name, line,
                 at + " is " + tfm::detail::json::kind_name(m.type) + ", expected an object.");
    chat_message cm;
    for (const char* field : {"role", "content"}) {
      const jvalue* v = m.find(field);
      if (v == nullptr) line_error(name, line, at + " has no key '" + field + "'.");
      if (!v->is_string())
        line_error(name, line,
                   at + "." + field + " is " + tfm::detail::json::kind_name(v->type) +
                       ", expected a string.");
      (field[0] == 'r' ? cm.role : cm.content) = v->string;
    }
    if (!is_known_role(cm.role))
      line_error(
          name, line,
          at + ".role \"" + cm.role + "\" is not a known role (system, user, assistant, tool).");
    out.push_back(std::move(cm));
  }
  return out;
}

/// "... at byte K." of detail::json's messages, as a 1-based column (exception builds).
inline std::string with_column(const std::string& msg) {
  const std::size_t at = msg.rfind(" at byte ");
  if (at == std::string::npos) return msg;
  std::size_t k = 0, i = at + 9;
  bool any = false;
  for (; i < msg.size() && msg[i] >= '0' && msg[i] <= '9'; ++i, any = true)
    k = k * 10 + static_cast<std::size_t>(msg[i] - '0');
  if (!any) return msg;
  return msg.substr(0, at) + " at column " + std::to_string(k + 1) + msg.substr(i);
}

inline jvalue parse_line(std::string_view text, std::string_view name, std::size_t line) {
  const std::string doc =
      "tfm::train::sft: '" + std::string(name) + "' line " + std::to_string(line) + ": bad JSON";
#if TFM_NO_EXCEPTIONS
  return tfm::detail::json::parse(text, doc);  // the byte offset is column - 1
#else
  try {
    return tfm::detail::json::parse(text, doc);
  } catch (const parse_error& e) {
    fail(errc::parse, with_column(e.what()));
  }
#endif
}

}  // namespace detail::sft

/// The record of one JSONL line (see INPUT); `name` and `line` are for error messages.
inline sft_record parse_sft_line(std::string_view text, std::string_view name, std::size_t line) {
  namespace d = detail::sft;
  const d::jvalue v = d::parse_line(text, name, line);
  if (!v.is_object())
    d::line_error(name, line,
                  std::string("the line is ") + tfm::detail::json::kind_name(v.type) +
                      ", expected a JSON object with 'messages' or 'prompt' and 'completion'.");
  sft_record r;
  r.where = "'" + std::string(name) + "' line " + std::to_string(line);
  const d::jvalue* messages = v.find("messages");
  const d::jvalue* prompt = v.find("prompt");
  const d::jvalue* completion = v.find("completion");
  if (messages && prompt)
    d::line_error(name, line, "both 'messages' and 'prompt' are present; use one format.");
  if (messages) {
    if (!messages->is_array())
      d::line_error(name, line,
                    std::string("'messages' is ") + tfm::detail::json::kind_name(messages->type) +
                        ", expected an array of messages.");
    r.messages = d::read_messages(*messages, "messages", name, line);
    return r;
  }
  if (!prompt && !completion)
    d::line_error(name, line, "missing key: expected 'messages', or 'prompt' and 'completion'.");
  if (!prompt) d::line_error(name, line, "missing key 'prompt' (beside 'completion').");
  if (!completion) d::line_error(name, line, "missing key 'completion' (beside 'prompt').");
  if (prompt->is_string() && completion->is_string()) {
    r.kind = sft_record_kind::prompt_completion_text;
    r.prompt_text = prompt->string;
    r.completion_text = completion->string;
    return r;
  }
  if (prompt->is_array() && completion->is_array()) {
    r.kind = sft_record_kind::prompt_completion_chat;
    r.messages = d::read_messages(*prompt, "prompt", name, line);
    r.completion = d::read_messages(*completion, "completion", name, line);
    return r;
  }
  d::line_error(name, line,
                std::string("'prompt' is ") + tfm::detail::json::kind_name(prompt->type) +
                    " and 'completion' is " + tfm::detail::json::kind_name(completion->type) +
                    "; expected two strings or two arrays of messages.");
}

/// The records of a JSONL text, one per non-blank line (CRLF accepted), each made by
/// parse(line_text, name, line_number); `who` and `what` ("examples", "pairs") word the error
/// for a text without any (train/preference.hpp reads its files with it too).
template <class Parse>
auto parse_jsonl(std::string_view text, std::string_view name, const char* who, const char* what,
                 Parse&& parse) {
  std::vector<decltype(parse(std::string_view{}, name, std::size_t{}))> out;
  std::size_t line = 0, pos = 0;
  while (pos < text.size()) {
    ++line;
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view l = text.substr(pos, end - pos);
    pos = end + 1;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    out.push_back(parse(l, name, line));
  }
  if (out.empty())
    fail(errc::parse, who, ": '", name, "' holds no ", what, " (",
         text.empty() ? "the file is empty" : "only blank lines", ").");
  return out;
}

/// Records of a JSONL text; `name` names it in errors (see INPUT).
inline std::vector<sft_record> parse_sft_jsonl(std::string_view text, std::string_view name) {
  return parse_jsonl(text, name, "tfm::train::sft", "examples",
                     [](std::string_view l, std::string_view n, std::size_t line) {
                       return parse_sft_line(l, n, line);
                     });
}

/// Records of a JSONL file; io_error when it cannot be read.
inline std::vector<sft_record> read_sft_jsonl(const std::string& path) {
  return parse_sft_jsonl(read_text_file(path, "tfm::train::sft"), path);
}

// ---- held-out split -----------------------------------------------------------------------------

/// 64-bit hash of a record's kind, roles and texts (FNV-1a 64 over length-prefixed fields, then
/// the splitmix64 finalizer with the seed mixed in). Independent of file, line and order.
inline std::uint64_t sft_record_hash(const sft_record& r, std::uint64_t seed = 0) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  const auto byte = [&](unsigned char b) {
    h ^= b;
    h *= 0x100000001b3ull;
  };
  const auto field = [&](std::string_view s) {
    for (int k = 0; k < 8; ++k) byte(static_cast<unsigned char>(s.size() >> (8 * k)));
    for (char c : s) byte(static_cast<unsigned char>(c));
  };
  byte(static_cast<unsigned char>(r.kind));
  for (const auto* list : {&r.messages, &r.completion}) {
    byte(0xFF);
    for (const chat_message& m : *list) {
      field(m.role);
      field(m.content);
    }
  }
  field(r.prompt_text);
  field(r.completion_text);
  std::uint64_t z = h ^ (seed + 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Held-out selection: `fraction` in [0, 1) or, when count > 0, exactly `count` records.
struct sft_split_options {
  double fraction = 0.0;
  std::size_t count = 0;
  std::uint64_t seed = 0;
};

/// {training, held-out}, each in input order (see SPLIT AND ORDER).
inline std::pair<std::vector<sft_record>, std::vector<sft_record>> split_sft_records(
    std::span<const sft_record> records, const sft_split_options& o) {
  if (!(o.fraction >= 0.0 && o.fraction < 1.0))
    fail(errc::value, "tfm::train::sft: the held-out fraction must be in [0, 1).");
  if (o.count > 0 && o.fraction > 0.0)
    fail(errc::value, "tfm::train::sft: give a held-out fraction or a count, not both.");
  if (o.count >= records.size() && o.count > 0)
    fail(errc::value, "tfm::train::sft: a held-out count of ", o.count,
         " leaves no training data (", records.size(), " records).");
  std::vector<std::uint64_t> h(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) h[i] = sft_record_hash(records[i], o.seed);
  std::vector<std::uint8_t> held(records.size(), 0);
  if (o.count > 0) {
    std::vector<std::size_t> idx(records.size());
    std::iota(idx.begin(), idx.end(), std::size_t{0});
    // Ties are identical records (or a 2^-64 collision): any of them is the same data.
    std::nth_element(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(o.count - 1), idx.end(),
                     [&](std::size_t a, std::size_t b) { return h[a] < h[b]; });
    for (std::size_t k = 0; k < o.count; ++k) held[idx[k]] = 1;
  } else {
    for (std::size_t i = 0; i < records.size(); ++i)
      held[i] = static_cast<double>(h[i] >> 11) * 0x1p-53 < o.fraction;
  }
  std::pair<std::vector<sft_record>, std::vector<sft_record>> out;
  for (std::size_t i = 0; i < records.size(); ++i)
    (held[i] ? out.second : out.first).push_back(records[i]);
  return out;
}

// ---- tokenizing ---------------------------------------------------------------------------------

/// Token ids and their loss mask (1: the token is predicted with loss). where: origin for
/// messages ("'file' line N"; may be empty).
struct sft_example {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> loss_mask;
  std::string where;
};

/// Renders a conversation; add_generation_prompt appends the assistant header.
using chat_renderer =
    std::function<std::string(std::span<const chat_message>, bool add_generation_prompt)>;

/// Byte offset in `text` of the first byte of each token of `ids` (the LOSS MASK rule): token
/// pieces matched left to right, skipping text bytes that have no token of their own (a
/// byte-level BPE vocabulary without them drops them, as llama.cpp does) and, in an
/// add_space_prefix SentencePiece vocabulary, a leading space of a piece where the text has none
/// (the prefix space the tokenizer added). value_error when the pieces do not spell the text.
inline std::vector<std::size_t> token_byte_offsets(const vocab_tokenizer& tok,
                                                   std::string_view text,
                                                   std::span<const std::int32_t> ids);

/// The bytes a byte-level BPE vocabulary has no token for (all false for SentencePiece).
inline std::array<bool, 256> bytes_without_token(const vocab_tokenizer& tok) {
  std::array<bool, 256> out{};
  if (tok.model() == vocab_tokenizer::kind::bpe)
    for (std::size_t b = 0; b < 256; ++b) {
      std::string s;
      utf8::append(s, tfm::detail::bpe::byte_to_char[b]);
      out[b] = tok.text_to_id(s) < 0;
    }
  return out;
}

/// token_byte_offsets with bytes_without_token(tok) computed once by the caller.
inline std::vector<std::size_t> token_byte_offsets(const vocab_tokenizer& tok,
                                                   std::string_view text,
                                                   std::span<const std::int32_t> ids,
                                                   const std::array<bool, 256>& droppable) {
  const bool spm_prefix = tok.model() == vocab_tokenizer::kind::spm && tok.add_space_prefix();
  std::vector<std::size_t> out;
  out.reserve(ids.size());
  std::size_t pos = 0;
  for (std::size_t k = 0; k < ids.size(); ++k) {
    std::string piece = tok.token_to_piece(ids[k], /*special=*/true);
    if (spm_prefix && !piece.empty() && piece[0] == ' ' && (pos >= text.size() || text[pos] != ' '))
      piece.erase(0, 1);
    while (pos < text.size() && text.substr(pos, piece.size()) != piece &&
           droppable[static_cast<unsigned char>(text[pos])])
      ++pos;
    if (text.substr(pos, piece.size()) != piece)
      fail(errc::value, "tfm::train::sft: token ", k, " (id ", ids[k],
           ") does not spell the text at byte ", pos,
           "; the loss mask needs a tokenizer whose pieces concatenate to the text.");
    out.push_back(pos);
    pos += piece.size();
  }
  return out;
}

inline std::vector<std::size_t> token_byte_offsets(const vocab_tokenizer& tok,
                                                   std::string_view text,
                                                   std::span<const std::int32_t> ids) {
  return token_byte_offsets(tok, text, ids, bytes_without_token(tok));
}

/// Turns records into sft_examples with a tokenizer and a chat template (see LOSS MASK). The
/// tokenizer must outlive the encoder; the template is copied.
class sft_encoder {
 public:
  sft_encoder(const vocab_tokenizer& tok, chat_renderer render)
      : tok_(&tok), render_(std::move(render)), droppable_(bytes_without_token(tok)) {}
  /// Any template with render(span<const chat_message>, bool) -> string: chat_template,
  /// jinja_chat_template.
  template <class Template>
  requires requires(const Template& t, std::span<const chat_message> m) {
    { t.render(m, true) } -> std::convertible_to<std::string>;
  }
  sft_encoder(const vocab_tokenizer& tok, Template tpl)
      : sft_encoder(tok, chat_renderer([t = std::move(tpl)](std::span<const chat_message> m,
                                                            bool g) { return t.render(m, g); })) {}

  const vocab_tokenizer& tokenizer() const noexcept { return *tok_; }

  /// Ids of the whole conversation and mask 1 on the tokens of its assistant messages.
  sft_example encode_messages(std::span<const chat_message> ms, std::string_view where = {}) const {
    const std::string text = render_(ms, false);
    std::vector<std::pair<std::size_t, std::size_t>> spans;
    for (std::size_t i = 0; i < ms.size(); ++i) {
      if (ms[i].role != "assistant") continue;
      const std::string p = render_(ms.first(i), true);
      const std::string f = render_(ms.first(i + 1), false);
      check_prefix(p, f, where, i,
                   "the conversation before it rendered with the generation "
                   "prompt is not a prefix of the conversation up to it");
      check_prefix(f, text, where, i, "the conversation up to it is not a prefix of the whole");
      spans.emplace_back(p.size(), rstrip_size(f));
    }
    return tokenize_with_spans(text, spans, where);
  }

  /// Prompt messages then completion messages; mask 1 on the completion (see LOSS MASK).
  sft_example encode_prompt_completion(std::span<const chat_message> prompt,
                                       std::span<const chat_message> completion,
                                       std::string_view where = {}) const {
    std::vector<chat_message> all(prompt.begin(), prompt.end());
    all.insert(all.end(), completion.begin(), completion.end());
    const std::string p = render_(prompt, true);
    const std::string text = render_(all, false);
    check_prefix(p, text, where, prompt.size(),
                 "the prompt rendered with the generation prompt is not a prefix of the whole");
    return tokenize_with_spans(text, {{p.size(), rstrip_size(text)}}, where);
  }

  /// Plain text: [BOS] prompt + completion EOS, mask 1 from the completion's first token.
  sft_example encode_text(std::string_view prompt, std::string_view completion,
                          std::string_view where = {}) const {
    const std::string text = std::string(prompt) + std::string(completion);
    sft_example ex = tokenize_with_spans(text, {{prompt.size(), text.size()}}, where);
    if (tok_->add_bos() && tok_->bos_id() >= 0) {
      ex.ids.insert(ex.ids.begin(), tok_->bos_id());
      ex.loss_mask.insert(ex.loss_mask.begin(), 0);
    }
    if (tok_->eos_id() >= 0) {
      ex.ids.push_back(tok_->eos_id());
      ex.loss_mask.push_back(1);
    }
    return ex;
  }

  /// The example of a record; errors of the template or the tokenizer are prefixed with the
  /// record's origin (exception builds).
  sft_example encode(const sft_record& r) const {
#if TFM_NO_EXCEPTIONS
    return encode_record(r);
#else
    try {
      return encode_record(r);
    } catch (const error& e) {
      if (r.where.empty() || std::string_view(e.what()).find(r.where) != std::string_view::npos)
        throw;
      raise(e.code(), "tfm::train::sft: " + r.where + ": " + e.what());
    }
#endif
  }

  std::vector<sft_example> encode_all(std::span<const sft_record> rs) const {
    std::vector<sft_example> out;
    out.reserve(rs.size());
    for (const sft_record& r : rs) out.push_back(encode(r));
    return out;
  }

 private:
  sft_example encode_record(const sft_record& r) const {
    switch (r.kind) {
      case sft_record_kind::messages:
        return encode_messages(r.messages, r.where);
      case sft_record_kind::prompt_completion_chat:
        return encode_prompt_completion(r.messages, r.completion, r.where);
      case sft_record_kind::prompt_completion_text:
        break;
    }
    return encode_text(r.prompt_text, r.completion_text, r.where);
  }

  static std::size_t rstrip_size(std::string_view s) {
    const std::size_t k = s.find_last_not_of(" \t\n\r\f\v");
    return k == std::string_view::npos ? 0 : k + 1;
  }

  static void check_prefix(std::string_view a, std::string_view b, std::string_view where,
                           std::size_t i, std::string_view what) {
    if (b.substr(0, a.size()) != a)
      fail(errc::value, "tfm::train::sft: ", where.empty() ? "" : where, where.empty() ? "" : ": ",
           "message ", i, ": ", what,
           "; the chat template does not render conversations incrementally, so the assistant "
           "spans cannot be found.");
  }

  sft_example tokenize_with_spans(std::string_view text,
                                  const std::vector<std::pair<std::size_t, std::size_t>>& spans,
                                  std::string_view where) const {
    sft_example ex;
    ex.where = std::string(where);
    ex.ids = tok_->encode(text, {.add_special = false, .parse_special = true});
    const std::vector<std::size_t> start = token_byte_offsets(*tok_, text, ex.ids, droppable_);
    ex.loss_mask.assign(ex.ids.size(), 0);
    for (std::size_t k = 0; k < ex.ids.size(); ++k)
      for (const auto& [b, e] : spans)
        if (start[k] >= b && start[k] < e) ex.loss_mask[k] = 1;
    return ex;
  }

  const vocab_tokenizer* tok_;
  chat_renderer render_;
  std::array<bool, 256> droppable_;
};

// ---- rows ---------------------------------------------------------------------------------------

enum class sft_packing : std::uint8_t { none, best_fit, best_fit_decreasing };
enum class sft_truncation : std::uint8_t { truncate, drop, error };

struct sft_options {
  index_t block_size = 1024;  ///< T
  sft_packing packing = sft_packing::best_fit_decreasing;
  sft_truncation truncation = sft_truncation::truncate;
  std::int32_t pad_id = 0;           ///< id at padding positions (never a target)
  std::int32_t ignore_index = -100;  ///< target of positions without loss
};

/// Counts of one built split (see sft_rows::build).
struct sft_stats {
  std::size_t examples = 0;          ///< examples in the rows
  std::size_t tokens = 0;            ///< their tokens (after truncation)
  std::size_t assistant_tokens = 0;  ///< their mask-1 tokens (after truncation)
  std::size_t targets = 0;           ///< targets != ignore_index (mask-1 tokens that are not first)
  std::size_t rows = 0;
  std::size_t truncated = 0;         ///< examples cut to block_size
  std::size_t dropped_too_long = 0;  ///< examples dropped (sft_truncation::drop)
  std::size_t dropped_no_loss =
      0;  ///< examples without a target (no mask-1 token after the first), dropped
  double packing_efficiency = 0.0;  ///< tokens / (rows * T): the non-padding fraction
};

/// One line: "N examples, N tokens (N in the loss mask, N targets), N rows of T, packing
/// efficiency P%" and the truncated / dropped counts that are not zero.
inline std::string summary(const sft_stats& s, index_t block_size) {
  std::ostringstream o;
  o << s.examples << " examples, " << s.tokens << " tokens (" << s.assistant_tokens
    << " in the loss mask, " << s.targets << " targets), " << s.rows << " rows of " << block_size
    << ", packing efficiency "
    << static_cast<double>(static_cast<long long>(s.packing_efficiency * 1000.0 + 0.5)) / 10.0
    << "%";
  if (s.truncated) o << ", " << s.truncated << " truncated";
  if (s.dropped_too_long) o << ", " << s.dropped_too_long << " dropped as too long";
  if (s.dropped_no_loss) o << ", " << s.dropped_no_loss << " dropped without assistant tokens";
  return o.str();
}

/// Where an example went: row, first position, length (after truncation).
struct sft_placement {
  std::size_t example = 0;
  index_t row = 0, offset = 0, length = 0;
};

using sft_ids_tensor = tensor<std::int32_t, shape<dyn, dyn>>;

/// One batch: (B, T) each (see ROWS).
struct sft_batch {
  sft_ids_tensor ids, targets, segments, positions;

  /// The segments as attention_options::segments / nn::segment_ids take them (B * T values,
  /// row-major).
  std::shared_ptr<const std::vector<std::int32_t>> segment_ids() const {
    return std::make_shared<const std::vector<std::int32_t>>(segments.data(),
                                                             segments.data() + segments.size());
  }
};

/// Packed rows of one split.
class sft_rows {
 public:
  sft_rows() = default;

  /// Rows from examples (see ROWS). value_error for block_size < 2, an example whose ids and mask
  /// differ in length, or an over-long example under sft_truncation::error (naming it).
  static sft_rows build(std::span<const sft_example> examples, const sft_options& o) {
    if (o.block_size < 2) fail(errc::value, "tfm::train::sft: block_size must be at least 2.");
    sft_rows r;
    r.T_ = o.block_size;
    const auto T = static_cast<std::size_t>(o.block_size);
    std::vector<std::size_t> keep, len;  // examples kept and their lengths
    for (std::size_t i = 0; i < examples.size(); ++i) {
      const sft_example& e = examples[i];
      if (e.ids.size() != e.loss_mask.size())
        fail(errc::value, "tfm::train::sft: example ", i, " has ", e.ids.size(), " ids but ",
             e.loss_mask.size(), " mask entries.");
      std::size_t n = e.ids.size();
      if (n > T) {
        if (o.truncation == sft_truncation::error)
          fail(errc::value, "tfm::train::sft: example ", i, e.where.empty() ? "" : " (", e.where,
               e.where.empty() ? "" : ")", " has ", n, " tokens, more than block_size ", T, ".");
        if (o.truncation == sft_truncation::drop) {
          ++r.stats_.dropped_too_long;
          continue;
        }
        ++r.stats_.truncated;
        n = T;
      }
      // No mask-1 token after the first: the example would give no target.
      if (n < 2 ||
          std::find(e.loss_mask.begin() + 1, e.loss_mask.begin() + static_cast<std::ptrdiff_t>(n),
                    std::uint8_t{1}) == e.loss_mask.begin() + static_cast<std::ptrdiff_t>(n)) {
        ++r.stats_.dropped_no_loss;
        continue;
      }
      keep.push_back(i);
      len.push_back(n);
    }
    r.place(keep, len, o.packing);
    r.fill(examples, o);
    return r;
  }

  index_t block_size() const noexcept { return T_; }
  index_t rows() const noexcept { return static_cast<index_t>(stats_.rows); }
  const sft_stats& stats() const noexcept { return stats_; }
  const std::vector<sft_placement>& placements() const noexcept { return placements_; }

  /// Row r of each array (T values).
  std::span<const std::int32_t> ids(index_t r) const { return row(ids_, r); }
  std::span<const std::int32_t> targets(index_t r) const { return row(targets_, r); }
  std::span<const std::int32_t> segments(index_t r) const { return row(segments_, r); }
  std::span<const std::int32_t> positions(index_t r) const { return row(positions_, r); }

  /// Rows `which` gathered into a batch (B = which.size()).
  sft_batch gather(std::span<const index_t> which) const {
    const auto B = static_cast<index_t>(which.size());
    sft_batch b{sft_ids_tensor(B, T_), sft_ids_tensor(B, T_), sft_ids_tensor(B, T_),
                sft_ids_tensor(B, T_)};
    for (index_t i = 0; i < B; ++i) {
      const index_t r = which[static_cast<std::size_t>(i)];
      std::copy_n(ids(r).data(), T_, b.ids.data() + i * T_);
      std::copy_n(targets(r).data(), T_, b.targets.data() + i * T_);
      std::copy_n(segments(r).data(), T_, b.segments.data() + i * T_);
      std::copy_n(positions(r).data(), T_, b.positions.data() + i * T_);
    }
    return b;
  }

  /// Every row in order, B rows a batch (the last one smaller): for evaluation loss.
  std::vector<sft_batch> evaluation_batches(index_t B) const {
    if (B <= 0) fail(errc::value, "tfm::train::sft_rows: the batch size must be positive.");
    std::vector<sft_batch> out;
    std::vector<index_t> which;
    for (index_t first = 0; first < rows(); first += B) {
      which.clear();
      for (index_t r = first; r < std::min(rows(), first + B); ++r) which.push_back(r);
      out.push_back(gather(which));
    }
    return out;
  }

 private:
  std::span<const std::int32_t> row(const std::vector<std::int32_t>& v, index_t r) const {
    if (r < 0 || r >= rows())
      fail(errc::index, "tfm::train::sft_rows: row ", r, " is outside [0, ", rows(), ").");
    return {v.data() + r * T_, static_cast<std::size_t>(T_)};
  }

  /// Assigns every kept example a row and an offset (see ROWS: packing).
  void place(const std::vector<std::size_t>& keep, const std::vector<std::size_t>& len,
             sft_packing packing) {
    const auto T = static_cast<std::size_t>(T_);
    std::vector<std::size_t> order(keep.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (packing == sft_packing::best_fit_decreasing)
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return len[a] > len[b]; });
    std::vector<std::size_t> used;                       // per row
    std::set<std::pair<std::size_t, std::size_t>> open;  // (room, row)
    for (std::size_t k : order) {
      std::size_t rw = used.size();
      if (packing != sft_packing::none) {
        const auto it = open.lower_bound({len[k], 0});
        if (it != open.end()) {
          rw = it->second;
          open.erase(it);
        }
      }
      if (rw == used.size()) used.push_back(0);
      placements_.push_back({keep[k], static_cast<index_t>(rw), static_cast<index_t>(used[rw]),
                             static_cast<index_t>(len[k])});
      used[rw] += len[k];
      if (packing != sft_packing::none && used[rw] < T) open.insert({T - used[rw], rw});
    }
    stats_.rows = used.size();
  }

  /// Writes ids, targets, segments and positions from the placements.
  void fill(std::span<const sft_example> examples, const sft_options& o) {
    const std::size_t n = stats_.rows * static_cast<std::size_t>(T_);
    ids_.assign(n, o.pad_id);
    targets_.assign(n, o.ignore_index);
    segments_.assign(n, 0);
    positions_.assign(n, 0);
    std::vector<std::int32_t> docs(stats_.rows, 0);  // documents placed so far per row
    for (const sft_placement& p : placements_) {
      const sft_example& e = examples[p.example];
      const std::size_t base = static_cast<std::size_t>(p.row * T_ + p.offset);
      const auto L = static_cast<std::size_t>(p.length);
      const std::int32_t seg = docs[static_cast<std::size_t>(p.row)]++;
      for (std::size_t t = 0; t < L; ++t) {
        ids_[base + t] = e.ids[t];
        segments_[base + t] = seg;
        positions_[base + t] = static_cast<std::int32_t>(t);
        if (t + 1 < L && e.loss_mask[t + 1]) {
          targets_[base + t] = e.ids[t + 1];
          ++stats_.targets;
        }
        stats_.assistant_tokens += e.loss_mask[t];
      }
      stats_.tokens += L;
      ++stats_.examples;
    }
    // Padding: one segment after the row's last document, positions counting from 0.
    std::vector<std::size_t> used(stats_.rows, 0);
    for (const sft_placement& p : placements_)
      used[static_cast<std::size_t>(p.row)] += static_cast<std::size_t>(p.length);
    for (std::size_t r = 0; r < stats_.rows; ++r)
      for (std::size_t t = used[r]; t < static_cast<std::size_t>(T_); ++t) {
        segments_[r * static_cast<std::size_t>(T_) + t] = docs[r];
        positions_[r * static_cast<std::size_t>(T_) + t] = static_cast<std::int32_t>(t - used[r]);
      }
    stats_.packing_efficiency =
        n == 0 ? 0.0 : static_cast<double>(stats_.tokens) / static_cast<double>(n);
  }

  index_t T_ = 0;
  sft_stats stats_;
  std::vector<sft_placement> placements_;
  std::vector<std::int32_t> ids_, targets_, segments_, positions_;
};

/// Batches of B rows, shuffled per epoch (see SPLIT AND ORDER). The last batch of an epoch has
/// rows % B rows unless drop_last. Holds a reference to the rows; one loader per thread (it
/// caches the current epoch's order).
class sft_loader {
 public:
  sft_loader(const sft_rows& rows, index_t B, std::uint64_t seed, bool drop_last = false)
      : rows_(&rows), B_(B), seed_(seed), drop_last_(drop_last) {
    if (B <= 0) fail(errc::value, "tfm::train::sft_loader: the batch size must be positive.");
    if (batches_per_epoch() == 0)
      fail(errc::value, "tfm::train::sft_loader: ", rows.rows(), " rows make no batch of ", B,
           drop_last ? " (drop_last)." : ".");
  }

  index_t batches_per_epoch() const noexcept {
    const index_t n = rows_->rows();
    return drop_last_ ? n / B_ : (n + B_ - 1) / B_;
  }

  /// Row order of epoch `e`: a Fisher-Yates permutation from Philox at (seed, e).
  std::vector<index_t> epoch_order(std::uint64_t e) const {
    const index_t n = rows_->rows();
    std::vector<index_t> p(static_cast<std::size_t>(n));
    std::iota(p.begin(), p.end(), index_t{0});
    const std::uint64_t base = e << 33;  // 2^32 draws of 2 words per epoch
    for (index_t i = n - 1; i > 0; --i) {
      const std::uint64_t c = base + 2 * static_cast<std::uint64_t>(i);
      const std::uint64_t r =
          (static_cast<std::uint64_t>(random_u32(seed_, c)) << 32) | random_u32(seed_, c + 1);
      std::swap(p[static_cast<std::size_t>(i)],
                p[static_cast<std::size_t>(r % static_cast<std::uint64_t>(i + 1))]);
    }
    return p;
  }

  /// Batch `index` of epoch `e` (a pure function of the arguments and the rows).
  sft_batch batch(std::uint64_t e, index_t index) const {
    if (index < 0 || index >= batches_per_epoch())
      fail(errc::index, "tfm::train::sft_loader: batch ", index, " is outside [0, ",
           batches_per_epoch(), ").");
    if (order_epoch_ != e || order_.empty()) {
      order_ = epoch_order(e);
      order_epoch_ = e;
    }
    const index_t first = index * B_;
    const index_t b = std::min(B_, rows_->rows() - first);
    return rows_->gather(
        std::span<const index_t>(order_.data() + first, static_cast<std::size_t>(b)));
  }

  /// The batch at the current position, then the position moves on (to the next epoch after the
  /// last batch).
  sft_batch next() {
    sft_batch b = batch(epoch_, index_);
    if (++index_ == batches_per_epoch()) {
      index_ = 0;
      ++epoch_;
    }
    return b;
  }

  std::uint64_t epoch() const noexcept { return epoch_; }
  index_t index() const noexcept { return index_; }
  /// Resumes at (epoch, index), e.g. from a checkpoint.
  void seek(std::uint64_t epoch, index_t index) {
    if (index < 0 || index >= batches_per_epoch())
      fail(errc::index, "tfm::train::sft_loader: batch ", index, " is outside [0, ",
           batches_per_epoch(), ").");
    epoch_ = epoch;
    index_ = index;
  }

 private:
  const sft_rows* rows_;
  index_t B_;
  std::uint64_t seed_;
  bool drop_last_;
  std::uint64_t epoch_ = 0;
  index_t index_ = 0;
  mutable std::uint64_t order_epoch_ = 0;
  mutable std::vector<index_t> order_;
};

/// Training and held-out rows of JSONL files.
struct sft_dataset {
  sft_rows train, validation;
};

/// Reads every file, splits the records (split_sft_records), encodes and packs both parts with
/// the same options. Empty validation rows when the split holds nothing out.
inline sft_dataset build_sft_dataset(std::span<const std::string> paths, const sft_encoder& enc,
                                     const sft_options& o, const sft_split_options& split = {}) {
  if (paths.empty()) fail(errc::value, "tfm::train::sft: no input files.");
  std::vector<sft_record> all;
  for (const std::string& p : paths) {
    std::vector<sft_record> rs = read_sft_jsonl(p);
    all.insert(all.end(), std::make_move_iterator(rs.begin()), std::make_move_iterator(rs.end()));
  }
  auto [tr, va] = split_sft_records(all, split);
  return {sft_rows::build(enc.encode_all(tr), o), sft_rows::build(enc.encode_all(va), o)};
}

}  // namespace train
TFM_END_NAMESPACE
