// typeformer/tokenizer/vocab_tokenizer.hpp
//
// WHAT THIS REPRESENTS
//   A tokenizer described the way a model file describes it: a list of token texts with a type
//   and a score each, a list of merges, the name of a pre-tokenizer, and the BOS/EOS/UNK/PAD ids
//   with the add_bos/add_eos/add_space_prefix flags. These are the `tokenizer.ggml.*` keys of a
//   GGUF file (ggml/docs/gguf.md "Tokenizer"); io/gguf_tokenizer.hpp reads them from a file.
//   Token ids are llama.cpp's (src/llama-vocab.cpp, src/unicode.cpp) for the same vocabulary:
//     model "gpt2"   byte-level BPE (GPT-2's bytes_to_unicode text in tokens and merges). Text
//                    is split by the pre-tokenizer that `pre` names (table below), each piece
//                    is merged by rank (lowest first, leftmost on ties); a byte that has no
//                    token is dropped, as llama.cpp drops it (SmolLM2 lacks 21 byte tokens).
//     model "llama"  SentencePiece-style BPE over scores (Kudo & Richardson, arXiv:1808.06226):
//                    ' ' becomes U+2581, a U+2581 is prepended when add_space_prefix, adjacent
//                    symbols (UTF-8 characters) merge while their concatenation is a token,
//                    the highest score first (leftmost on ties); a final symbol that is not a
//                    token is emitted as its byte tokens <0xNN>.
//   pre names (llama.cpp's, with their regex lists in src/llama-vocab.cpp):
//     default                                   {gpt2_punct, gpt2, numbers, three_digits}
//     gpt-2 (also gpt2), phi-2, mpt, olmo       {gpt2}
//     smollm, starcoder, refact, command-r,     {digits, gpt2}
//       codeshell, exaone, minerva-7b
//     llama3, llama-v3, llama-bpe, falcon3,     {llama3_ascii}; a piece that is a token is
//       pixtral                                 emitted whole (ignore_merges); add_bos default on
//     dbrx, smaug-bpe                           {llama3_ascii}
//     qwen2, deepseek-r1-qwen, stablelm2, megrez {qwen2}
//
// SPECIAL TOKENS (llama.cpp's tokenizer_st_partition)
//   Tokens of type control (3), user-defined (4) and unknown (2) are found in the text before
//   pre-tokenization, the longest text first (equal lengths: lower id first), every occurrence
//   of one token left to right in the text not yet claimed. With parse_special = false, control
//   and unknown tokens are ordinary text but user-defined tokens are still recognised (as in
//   llama.cpp and Hugging Face tokenizers). add_special = true adds BOS before and EOS after
//   the text when the model's add_bos / add_eos flags say so.
//
// DECODING
//   decode() concatenates the pieces of the tokens: the bytes of normal BPE tokens, U+2581 ->
//   ' ' in SPM tokens, the byte of <0xNN> byte tokens, the text of user-defined tokens, and the
//   text of control/unknown tokens when `special` is true (nothing otherwise). With
//   add_space_prefix, one leading space of the first token is dropped. No clean-up of spaces
//   before punctuation is applied (llama.cpp's clean_spaces), so decode(encode(s)) == s for
//   valid UTF-8 s without special tokens.
//
// KNOWN DIFFERENCES FROM LLAMA.CPP (not reached by well-formed vocabularies and UTF-8 text)
//   - Character classes come from Unicode 16.0 (detail/unicode_tables.hpp); llama.cpp's tables
//     are Unicode 15.1, so the 4433 letters, marks and numbers first assigned in 16.0 split
//     differently.
//   - Ill-formed UTF-8 in BPE input: each byte that llama.cpp's decoder rejects becomes U+FFFD,
//     as there; encoded surrogates and overlong forms, which llama.cpp decodes leniently, may
//     split differently.
//   - Of llama.cpp's fix-ups of token attributes by text and model name, only one is applied:
//     end-of-generation and fill-in-the-middle texts (<|im_end|>, <|endoftext|>, </s>,
//     <|fim_prefix|>, ...; control_by_text below) become control tokens. llama.cpp marks only the
//     first FIM text of each kind it meets (hash order) and skips kinds whose id the file
//     gives; the lstrip/rstrip attributes of phi-3 and jina models and the o200k_harmony /
//     gemma4 exceptions are not reproduced.
//   - Malformed vocabularies are refused (value_error naming the field) where llama.cpp warns
//     or substitutes: duplicate texts, merges naming unknown tokens, special ids out of range.
//
// THREADS
//   Immutable after construction; encode/decode may run concurrently.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/pretokenizer.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Token types as GGUF stores them in tokenizer.ggml.token_type (llama.cpp llama_token_type).
enum class vocab_token_type : std::int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

/// The parts of a model-file tokenizer (views: they must live while the constructor runs).
struct vocab_spec {
  std::string_view model;                ///< "gpt2" (byte-level BPE) or "llama" (SPM)
  std::string_view pre;                  ///< pre-tokenizer name; empty means "default"
  std::vector<std::string_view> tokens;  ///< token texts, by id
  std::vector<std::int32_t> types;       ///< vocab_token_type values; empty: all normal
  std::vector<float> scores;             ///< SPM merge scores; empty: all 0
  std::vector<std::string_view> merges;  ///< "left right" in rank order (gpt2 only)
  std::optional<std::int64_t> bos, eos, unk, pad;
  std::optional<bool> add_bos, add_eos, add_space_prefix;
  std::string_view source = "vocabulary";  ///< names the origin in error messages
};

/// Options of vocab_tokenizer::encode (llama.cpp llama_tokenize's add_special, parse_special).
struct vocab_encode_options {
  bool add_special = false;    ///< add BOS/EOS as the model's add_bos/add_eos say
  bool parse_special = false;  ///< recognise control and unknown tokens in the text
};

/// A tokenizer built from a vocab_spec; see the file comment.
class vocab_tokenizer {
 public:
  enum class kind : std::uint8_t { bpe, spm };

  vocab_tokenizer() = default;
  explicit vocab_tokenizer(const vocab_spec& spec);

  /// Token ids of text.
  std::vector<std::int32_t> encode(std::string_view text, vocab_encode_options opt = {}) const {
    std::vector<std::int32_t> out;
    out.reserve(text.size() / 3 + 4);
    encode_into(text, opt, out);
    return out;
  }
  void encode_into(std::string_view text, vocab_encode_options opt,
                   std::vector<std::int32_t>& out) const;

  /// Text of ids (see DECODING); index_error for an id outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool special = true) const;
  /// The piece of one token (no leading-space removal).
  std::string token_to_piece(std::int32_t id, bool special = true) const;

  std::size_t vocab_size() const noexcept { return texts_.size(); }
  kind model() const noexcept { return kind_; }
  const std::string& pre() const noexcept { return pre_; }
  const pretokenizer& pre_tokenizer() const noexcept { return pretok_; }
  /// Token text as the vocabulary stores it; index_error when out of range.
  const std::string& token_text(std::int32_t id) const {
    check_id(id);
    return texts_[static_cast<std::size_t>(id)];
  }
  vocab_token_type token_type(std::int32_t id) const {
    check_id(id);
    return static_cast<vocab_token_type>(types_[static_cast<std::size_t>(id)]);
  }
  float token_score(std::int32_t id) const {
    check_id(id);
    return scores_.empty() ? 0.0f : scores_[static_cast<std::size_t>(id)];
  }
  /// Id of the token whose text is `text`, or -1.
  std::int32_t text_to_id(std::string_view text) const noexcept {
    const auto it = by_text_.find(text);
    return it == by_text_.end() ? -1 : it->second;
  }
  /// -1 where the model has none.
  std::int32_t bos_id() const noexcept { return bos_; }
  std::int32_t eos_id() const noexcept { return eos_; }
  std::int32_t unk_id() const noexcept { return unk_; }
  std::int32_t pad_id() const noexcept { return pad_; }
  bool add_bos() const noexcept { return add_bos_; }
  bool add_eos() const noexcept { return add_eos_; }
  bool add_space_prefix() const noexcept { return add_space_prefix_; }
  bool ignore_merges() const noexcept { return ignore_merges_; }
  /// Ids of the control, user-defined and unknown tokens in matching order.
  const std::vector<std::int32_t>& special_ids() const noexcept { return specials_; }

  /// Largest vocabulary accepted.
  static constexpr std::size_t max_tokens = std::size_t{1} << 24;

  /// The pre-tokenizer names accepted in vocab_spec::pre, comma-separated (for messages).
  static constexpr std::string_view supported_pre_names =
      "default, gpt-2, gpt2, phi-2, mpt, olmo, smollm, starcoder, refact, command-r, codeshell, "
      "exaone, minerva-7b, llama3, llama-v3, llama-bpe, falcon3, pixtral, dbrx, smaug-bpe, "
      "qwen2, deepseek-r1-qwen, stablelm2, megrez";

 private:
  struct fragment {
    std::size_t offset;
    std::size_t length;
    std::int32_t id;  // -1: raw text
  };

  void check_id(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= texts_.size())
      fail(errc::index, "tfm::vocab_tokenizer: token id ", id, " is outside the vocabulary (",
           texts_.size(), " tokens).");
  }

  void set_pre(std::string_view pre, std::string_view source);
  void build_bpe(const vocab_spec& spec);
  void build_spm();
  std::int32_t special_id(const std::optional<std::int64_t>& v, std::int32_t fallback,
                          std::string_view key, std::string_view source) const;
  std::vector<fragment> partition(std::string_view text, bool parse_special) const;
  void encode_bpe(std::string_view text, std::vector<std::int32_t>& out) const;
  void bpe_piece(std::string_view piece, std::vector<std::int32_t>& out) const;
  void encode_spm(std::string_view text, std::vector<std::int32_t>& out) const;

  kind kind_ = kind::bpe;
  std::string pre_;
  pretokenizer pretok_;
  std::vector<std::string> texts_;
  std::vector<std::uint8_t> types_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, std::int32_t> by_text_;  // keys view texts_
  std::vector<std::int32_t> specials_;
  std::vector<std::string> bpe_bytes_;  // raw bytes of each BPE token ("" when not byte-level)
  std::vector<std::uint8_t> bpe_present_;
  detail::bpe::token_index bpe_index_;  // raw bytes -> id
  detail::bpe::pair_table bpe_pairs_;   // (left, right) -> (rank, merged id)
  std::int32_t bpe_byte_[256] = {};     // -1: the byte has no token (llama.cpp drops it)
  std::int32_t spm_byte_[256] = {};
  std::int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
  bool ignore_merges_ = false;
};

// ---- implementation ---------------------------------------------------------------------------

namespace detail::vocab {

/// llama.cpp's UTF-8 decoding of BPE input (unicode_cpts_from_utf8): a lead byte announces the
/// length and the continuation bytes are checked; anything else is one U+FFFD per byte. The
/// result is re-encoded; valid UTF-8 comes back unchanged (nullopt: nothing to rewrite).
inline std::optional<std::string> llama_utf8_rewrite(std::string_view s) {
  if (utf8::is_valid(s)) return std::nullopt;
  std::string out;
  out.reserve(s.size() + 8);
  const auto u = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const auto cont = [&](std::size_t k) { return k < s.size() && (u(k) & 0xC0) == 0x80; };
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = u(i);
    std::size_t len = 0;
    char32_t cp = 0;
    if (b < 0x80) {
      len = 1;
      cp = b;
    } else if ((b & 0xE0) == 0xC0 && cont(i + 1)) {
      len = 2;
      cp = (char32_t(b & 0x1F) << 6) | (u(i + 1) & 0x3F);
    } else if ((b & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      len = 3;
      cp = (char32_t(b & 0x0F) << 12) | (char32_t(u(i + 1) & 0x3F) << 6) | (u(i + 2) & 0x3F);
    } else if ((b & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      len = 4;
      cp = (char32_t(b & 0x07) << 18) | (char32_t(u(i + 1) & 0x3F) << 12) |
           (char32_t(u(i + 2) & 0x3F) << 6) | (u(i + 3) & 0x3F);
    }
    if (len == 0 || cp > 0x10FFFF) {
      out += "\xEF\xBF\xBD";
      i += 1;
      continue;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF)
      out.append(s.substr(i, len));  // kept as is (see KNOWN DIFFERENCES)
    else
      utf8::append(out, cp);
    i += len;
  }
  return out;
}

/// Byte length of the UTF-8 character whose lead byte is c (llama.cpp unicode_len_utf8).
inline std::size_t lead_length(char c) noexcept {
  static constexpr unsigned char table[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return table[static_cast<unsigned char>(c) >> 4];
}

/// Token texts llama.cpp marks as control (its EOG list and the FIM texts it looks for).
inline constexpr std::string_view control_by_text[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\xEF\xBD\x9C"
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
    "<\xEF\xBD\x9C"
    "fim\xE2\x96\x81"
    "begin\xEF\xBD\x9C>",
    "<\xEF\xBD\x9C"
    "fim\xE2\x96\x81hole\xEF\xBD\x9C>",
    "<\xEF\xBD\x9C"
    "fim\xE2\x96\x81"
    "end\xEF\xBD\x9C>",
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<PRE>",
    "\xE2\x96\x81<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<SUF>",
    "\xE2\x96\x81<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<MID>",
    "\xE2\x96\x81<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
};

struct pre_entry {
  std::string_view names;  // space-separated
  pretokenizer steps;
  bool ignore_merges;
  bool add_bos;
};

inline bool name_in(std::string_view names, std::string_view name) {
  std::size_t i = 0;
  while (i < names.size()) {
    std::size_t j = names.find(' ', i);
    if (j == std::string_view::npos) j = names.size();
    if (names.substr(i, j - i) == name) return true;
    i = j + 1;
  }
  return false;
}

inline const pre_entry* find_pre(std::string_view name) {
  using sp = split_pattern;
  static const pre_entry table[] = {
      {"default", {sp::gpt2_punct, sp::gpt2, sp::numbers, sp::three_digits}, false, false},
      {"gpt-2 gpt2 phi-2 mpt olmo", {sp::gpt2}, false, false},
      {"smollm starcoder refact command-r codeshell exaone minerva-7b",
       {sp::digits, sp::gpt2},
       false,
       false},
      {"llama3 llama-v3 llama-bpe falcon3 pixtral", {sp::llama3_ascii}, true, true},
      {"dbrx smaug-bpe", {sp::llama3_ascii}, false, false},
      {"qwen2 deepseek-r1-qwen stablelm2 megrez", {sp::qwen2}, false, false},
  };
  for (const auto& e : table)
    if (name_in(e.names, name)) return &e;
  return nullptr;
}

}  // namespace detail::vocab

inline void vocab_tokenizer::set_pre(std::string_view pre, std::string_view source) {
  pre_ = pre.empty() ? "default" : std::string(pre);
  const detail::vocab::pre_entry* e = detail::vocab::find_pre(pre_);
  if (e == nullptr)
    fail(errc::value, "tfm::vocab_tokenizer: ", source, ": pre-tokenizer '", pre_,
         "' (tokenizer.ggml.pre) is not supported; supported: ", supported_pre_names, ".");
  pretok_ = e->steps;
  ignore_merges_ = e->ignore_merges;
  add_bos_ = e->add_bos;
}

inline std::int32_t vocab_tokenizer::special_id(const std::optional<std::int64_t>& v,
                                                std::int32_t fallback, std::string_view key,
                                                std::string_view source) const {
  const auto n = static_cast<std::int64_t>(texts_.size());
  if (!v) return fallback >= 0 && fallback < n ? fallback : -1;
  if (*v < 0 || *v >= n)
    fail(errc::value, "tfm::vocab_tokenizer: ", source, ": ", key, " = ", *v,
         " is outside the vocabulary of ", n, " tokens.");
  return static_cast<std::int32_t>(*v);
}

inline vocab_tokenizer::vocab_tokenizer(const vocab_spec& spec) {
  const std::string_view src = spec.source;
  if (spec.model == "gpt2")
    kind_ = kind::bpe;
  else if (spec.model == "llama")
    kind_ = kind::spm;
  else
    fail(errc::value, "tfm::vocab_tokenizer: ", src, ": tokenizer model '", spec.model,
         "' (tokenizer.ggml.model) is not supported; supported: gpt2 (byte-level BPE), "
         "llama (SentencePiece BPE).");
  const std::size_t n = spec.tokens.size();
  if (n == 0) fail(errc::value, "tfm::vocab_tokenizer: ", src, ": tokenizer.ggml.tokens is empty.");
  if (n > max_tokens)
    fail(errc::value, "tfm::vocab_tokenizer: ", src, ": ", n, " tokens exceed the limit of ",
         max_tokens, ".");
  if (!spec.types.empty() && spec.types.size() < n)
    fail(errc::value, "tfm::vocab_tokenizer: ", src, ": tokenizer.ggml.token_type has ",
         spec.types.size(), " entries for ", n, " tokens.");
  if (!spec.scores.empty() && spec.scores.size() < n)
    fail(errc::value, "tfm::vocab_tokenizer: ", src, ": tokenizer.ggml.scores has ",
         spec.scores.size(), " entries for ", n, " tokens.");

  texts_.resize(n);
  types_.assign(n, static_cast<std::uint8_t>(vocab_token_type::normal));
  for (std::size_t i = 0; i < n; ++i) {
    texts_[i] =
        spec.tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : std::string(spec.tokens[i]);
    if (!spec.types.empty()) {
      const std::int32_t t = spec.types[i];
      types_[i] = static_cast<std::uint8_t>(t >= 0 && t <= 6 ? t : 0);
    }
  }
  if (!spec.scores.empty()) scores_.assign(spec.scores.begin(), spec.scores.begin() + n);
  by_text_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto [it, fresh] = by_text_.emplace(texts_[i], static_cast<std::int32_t>(i));
    if (!fresh)
      fail(errc::value, "tfm::vocab_tokenizer: ", src, ": tokenizer.ggml.tokens ", i,
           " repeats the text of token ", it->second, ".");
  }

  if (kind_ == kind::bpe) {
    set_pre(spec.pre, src);
    add_space_prefix_ = false;
    bos_ = special_id(spec.bos, 11, "tokenizer.ggml.bos_token_id", src);
    eos_ = special_id(spec.eos, 11, "tokenizer.ggml.eos_token_id", src);
    unk_ = special_id(spec.unk, -1, "tokenizer.ggml.unknown_token_id", src);
    build_bpe(spec);
  } else {
    pre_ = spec.pre.empty() ? "default" : std::string(spec.pre);
    add_bos_ = true;
    add_space_prefix_ = true;
    bos_ = special_id(spec.bos, 1, "tokenizer.ggml.bos_token_id", src);
    eos_ = special_id(spec.eos, 2, "tokenizer.ggml.eos_token_id", src);
    unk_ = special_id(spec.unk, 0, "tokenizer.ggml.unknown_token_id", src);
    build_spm();
  }
  pad_ = special_id(spec.pad, -1, "tokenizer.ggml.padding_token_id", src);
  if (spec.add_bos) add_bos_ = *spec.add_bos;
  if (spec.add_eos) add_eos_ = *spec.add_eos;
  if (spec.add_space_prefix) add_space_prefix_ = *spec.add_space_prefix;
  if (add_bos_ && bos_ < 0)
    fail(errc::value, "tfm::vocab_tokenizer: ", src,
         ": add_bos_token is set but the model has no BOS token.");
  if (add_eos_ && eos_ < 0)
    fail(errc::value, "tfm::vocab_tokenizer: ", src,
         ": add_eos_token is set but the model has no EOS token.");

  // llama.cpp's fix-up by text (llama_vocab::impl::load, "auto-detect special tokens by text"):
  // end-of-generation and fill-in-the-middle tokens become control tokens whatever their type.
  for (const std::string_view t : detail::vocab::control_by_text) {
    const std::int32_t id = text_to_id(t);
    if (id >= 0)
      types_[static_cast<std::size_t>(id)] = static_cast<std::uint8_t>(vocab_token_type::control);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto t = static_cast<vocab_token_type>(types_[i]);
    if (t == vocab_token_type::control || t == vocab_token_type::user_defined ||
        t == vocab_token_type::unknown)
      specials_.push_back(static_cast<std::int32_t>(i));
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](std::int32_t a, std::int32_t b) {
    return texts_[static_cast<std::size_t>(a)].size() > texts_[static_cast<std::size_t>(b)].size();
  });
}

inline void vocab_tokenizer::build_bpe(const vocab_spec& spec) {
  const std::size_t n = texts_.size();
  bpe_bytes_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    // Tokens outside the byte-level alphabet (added tokens with raw spaces, for example) cannot
    // come out of merging; they stay "" (unused) in the BPE table and are reached only as
    // special tokens.
    if (auto b = detail::bpe::unmap_bytes(texts_[i])) bpe_bytes_[i] = std::move(*b);
  }
  bpe_present_.assign(n, 0);
  for (std::size_t i = 0; i < n; ++i) bpe_present_[i] = !bpe_bytes_[i].empty();
  bpe_index_.build(bpe_bytes_, bpe_present_);
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    bpe_byte_[b] = bpe_index_.find(std::string_view(&c, 1), bpe_bytes_);
  }
  bpe_pairs_.reserve(spec.merges.size());
  std::uint32_t rank = 0;
  for (std::size_t r = 0; r < spec.merges.size(); ++r) {
    const std::string_view m = spec.merges[r];
    const std::size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
    const auto bad = [&](std::string_view why) {
      fail(errc::value, "tfm::vocab_tokenizer: ", spec.source, ": tokenizer.ggml.merges ", r, " ('",
           m.substr(0, 64), "') ", why, ".");
    };
    if (sp == std::string_view::npos) bad("is not two tokens separated by a space");
    const std::int32_t a = text_to_id(m.substr(0, sp)), b = text_to_id(m.substr(sp + 1));
    if (a < 0) bad("names a left token that is not in the vocabulary");
    if (b < 0) bad("names a right token that is not in the vocabulary");
    const std::int32_t ab =
        text_to_id(std::string(m.substr(0, sp)) + std::string(m.substr(sp + 1)));
    if (ab < 0) bad("merges into a token that is not in the vocabulary");
    if (!bpe_present_[static_cast<std::size_t>(a)] || !bpe_present_[static_cast<std::size_t>(b)])
      bad("names a token outside the byte-level alphabet");
    // llama.cpp keeps the first rank of a repeated pair; ranks stay in file order.
    bpe_pairs_.insert_min(a, b, rank++, ab);
  }
}

inline void vocab_tokenizer::build_spm() {
  static constexpr char hex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
    std::int32_t id = text_to_id(std::string_view(name, 6));
    if (id < 0) {
      const char c = static_cast<char>(b);
      id = text_to_id(std::string_view(&c, 1));
    }
    spm_byte_[b] = id;  // -1: no token for this byte (the byte is dropped, see encode_spm)
  }
}

inline std::vector<vocab_tokenizer::fragment> vocab_tokenizer::partition(std::string_view text,
                                                                         bool parse_special) const {
  std::vector<fragment> frags{fragment{0, text.size(), -1}};
  std::vector<fragment> next;
  for (const std::int32_t id : specials_) {
    const auto t = static_cast<vocab_token_type>(types_[static_cast<std::size_t>(id)]);
    if (!parse_special && t != vocab_token_type::user_defined) continue;
    const std::string& s = texts_[static_cast<std::size_t>(id)];
    bool any = false;
    next.clear();
    for (const fragment& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view raw = text.substr(f.offset, f.length);
      std::size_t pos = 0;
      for (;;) {
        const std::size_t m = raw.find(s, pos);
        if (m == std::string_view::npos) break;
        any = true;
        if (m > pos) next.push_back(fragment{f.offset + pos, m - pos, -1});
        next.push_back(fragment{f.offset + m, s.size(), id});
        pos = m + s.size();
      }
      if (pos < raw.size()) next.push_back(fragment{f.offset + pos, raw.size() - pos, -1});
    }
    if (any) frags.swap(next);
  }
  return frags;
}

inline void vocab_tokenizer::encode_into(std::string_view text, vocab_encode_options opt,
                                         std::vector<std::int32_t>& out) const {
  if (texts_.empty()) fail(errc::value, "tfm::vocab_tokenizer: encode() on an empty tokenizer.");
  std::vector<fragment> frags;
  if (!text.empty()) frags = partition(text, opt.parse_special);
  if (opt.add_special && add_bos_) out.push_back(bos_);
  if (kind_ == kind::bpe) {
    for (const fragment& f : frags) {
      if (f.id >= 0)
        out.push_back(f.id);
      else
        encode_bpe(text.substr(f.offset, f.length), out);
    }
  } else {
    bool prev_special = true;  // the first fragment gets the space prefix
    std::string buf;
    for (const fragment& f : frags) {
      if (f.id >= 0) {
        out.push_back(f.id);
        prev_special = true;
        continue;
      }
      buf.clear();
      if (add_space_prefix_ && prev_special) buf += "\xE2\x96\x81";
      for (char c : text.substr(f.offset, f.length)) {
        if (c == ' ')
          buf += "\xE2\x96\x81";
        else
          buf.push_back(c);
      }
      encode_spm(buf, out);
      prev_special = false;
    }
  }
  if (opt.add_special && add_eos_) out.push_back(eos_);
}

inline void vocab_tokenizer::encode_bpe(std::string_view text,
                                        std::vector<std::int32_t>& out) const {
  const auto rewritten = detail::vocab::llama_utf8_rewrite(text);
  const std::string_view t = rewritten ? std::string_view(*rewritten) : text;
  for_each_piece(t, pretok_, [&](std::string_view piece) { bpe_piece(piece, out); });
}

inline void vocab_tokenizer::bpe_piece(std::string_view piece,
                                       std::vector<std::int32_t>& out) const {
  // Byte tokens merged by rank, the lowest first and the leftmost on ties (llama.cpp
  // llm_tokenizer_bpe_session; the same order as Hugging Face Word::merge_all). A byte without
  // a token (-1) never merges and is dropped, as llama.cpp drops it.
  if (ignore_merges_) {
    const std::int32_t id = bpe_index_.find(piece, bpe_bytes_);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const std::size_t n = piece.size();
  struct node {
    std::int32_t id, prev, next;
  };
  thread_local std::vector<node> nodes;
  nodes.resize(n);
  for (std::size_t k = 0; k < n; ++k)
    nodes[k] =
        node{bpe_byte_[static_cast<unsigned char>(piece[k])], static_cast<std::int32_t>(k) - 1,
             k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1};
  struct cand {
    std::uint32_t rank;
    std::int32_t pos, left, right, merged;
    bool operator>(const cand& o) const noexcept {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<cand> heap;
  heap.clear();
  const auto push = [&](std::int32_t p) {
    if (p < 0) return;
    const std::int32_t q = nodes[static_cast<std::size_t>(p)].next;
    if (q < 0) return;
    const std::int32_t a = nodes[static_cast<std::size_t>(p)].id;
    const std::int32_t b = nodes[static_cast<std::size_t>(q)].id;
    if (a < 0 || b < 0) return;
    const auto e = bpe_pairs_.find(a, b);
    if (e.rank == detail::bpe::pair_table::no_rank) return;
    heap.push_back(cand{e.rank, p, a, b, e.id});
    std::push_heap(heap.begin(), heap.end(), std::greater<cand>{});
  };
  for (std::size_t k = 0; k + 1 < n; ++k) push(static_cast<std::int32_t>(k));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<cand>{});
    const cand c = heap.back();
    heap.pop_back();
    node& l = nodes[static_cast<std::size_t>(c.pos)];
    if (l.id != c.left || l.next < 0) continue;  // stale
    node& r = nodes[static_cast<std::size_t>(l.next)];
    if (r.id != c.right) continue;
    l.id = c.merged;
    r.id = -2;  // dead
    l.next = r.next;
    if (r.next >= 0) nodes[static_cast<std::size_t>(r.next)].prev = c.pos;
    push(l.prev);
    push(c.pos);
  }
  for (std::int32_t k = n == 0 ? -1 : 0; k >= 0; k = nodes[static_cast<std::size_t>(k)].next)
    if (nodes[static_cast<std::size_t>(k)].id >= 0)
      out.push_back(nodes[static_cast<std::size_t>(k)].id);
}

inline void vocab_tokenizer::encode_spm(std::string_view text,
                                        std::vector<std::int32_t>& out) const {
  // Symbols are UTF-8 characters by lead byte (clipped at the end); a pair merges when its
  // concatenation is a token, the highest score first, the leftmost on ties (llama.cpp
  // llm_tokenizer_spm_session).
  struct symbol {
    std::int32_t prev, next;
    std::uint32_t off, len;
  };
  std::vector<symbol> sym;
  sym.reserve(text.size());
  for (std::size_t off = 0; off < text.size();) {
    const std::size_t len = std::min(detail::vocab::lead_length(text[off]), text.size() - off);
    const auto idx = static_cast<std::int32_t>(sym.size());
    sym.push_back(symbol{idx - 1, off + len == text.size() ? -1 : idx + 1,
                         static_cast<std::uint32_t>(off), static_cast<std::uint32_t>(len)});
    off += len;
  }
  struct bigram {
    float score;
    std::int32_t left, right;
    std::uint32_t size;
    bool operator<(const bigram& o) const noexcept {
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::priority_queue<bigram> queue;
  const auto try_add = [&](std::int32_t l, std::int32_t r) {
    if (l < 0 || r < 0) return;
    const symbol& a = sym[static_cast<std::size_t>(l)];
    const symbol& b = sym[static_cast<std::size_t>(r)];
    const std::int32_t id = text_to_id(text.substr(a.off, a.len + b.len));
    if (id < 0) return;
    queue.push(bigram{token_score(id), l, r, a.len + b.len});
  };
  for (std::size_t i = 1; i < sym.size(); ++i)
    try_add(static_cast<std::int32_t>(i - 1), static_cast<std::int32_t>(i));
  while (!queue.empty()) {
    const bigram g = queue.top();
    queue.pop();
    symbol& l = sym[static_cast<std::size_t>(g.left)];
    symbol& r = sym[static_cast<std::size_t>(g.right)];
    if (l.len == 0 || r.len == 0 || l.len + r.len != g.size) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = g.left;
    try_add(l.prev, g.left);
    try_add(g.left, l.next);
  }
  for (std::int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
    const symbol& s = sym[static_cast<std::size_t>(i)];
    const std::string_view piece = text.substr(s.off, s.len);
    const std::int32_t id = text_to_id(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : piece) {  // byte fallback; a byte without a token is dropped
      const std::int32_t b = spm_byte_[static_cast<unsigned char>(c)];
      if (b >= 0) out.push_back(b);
    }
  }
}

inline std::string vocab_tokenizer::token_to_piece(std::int32_t id, bool special) const {
  check_id(id);
  const auto i = static_cast<std::size_t>(id);
  const auto t = static_cast<vocab_token_type>(types_[i]);
  switch (t) {
    case vocab_token_type::control:
    case vocab_token_type::unknown:
      return special ? texts_[i] : std::string();
    case vocab_token_type::user_defined:
      return texts_[i];
    case vocab_token_type::normal:
      if (kind_ == kind::bpe) return bpe_bytes_[i].empty() ? texts_[i] : bpe_bytes_[i];
      {
        std::string s;
        const std::string& x = texts_[i];
        for (std::size_t k = 0; k < x.size(); ++k) {
          if (x.compare(k, 3, "\xE2\x96\x81") == 0) {
            s.push_back(' ');
            k += 2;
          } else {
            s.push_back(x[k]);
          }
        }
        return s;
      }
    case vocab_token_type::byte: {
      const std::string& x = texts_[i];
      if (kind_ == kind::spm && x.size() == 6 && x.compare(0, 3, "<0x") == 0 && x[5] == '>') {
        const auto hexval = [](char c) {
          return c >= '0' && c <= '9'   ? c - '0'
                 : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                        : c - 'a' + 10;
        };
        return std::string(1, static_cast<char>(hexval(x[3]) * 16 + hexval(x[4])));
      }
      if (kind_ == kind::bpe && !bpe_bytes_[i].empty()) return bpe_bytes_[i];
      return x;
    }
    default:
      return std::string();
  }
}

inline std::string vocab_tokenizer::decode(std::span<const std::int32_t> ids, bool special) const {
  std::string out;
  out.reserve(ids.size() * 4);
  bool first = true;
  for (const std::int32_t id : ids) {
    std::string piece = token_to_piece(id, special);
    if (first && add_space_prefix_ && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    first = false;
    out += piece;
  }
  return out;
}

TFM_END_NAMESPACE
