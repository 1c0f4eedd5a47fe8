// typeformer/tokenizer/wordpiece.hpp
//
// WHAT THIS REPRESENTS
//   BERT's WordPiece tokenizer (Devlin et al. 2018, arXiv:1810.04805; Wu et al. 2016,
//   arXiv:1609.08144), as in google-research/bert tokenization.py and Hugging Face
//   `tokenizers` (BertNormalizer + BertPreTokenizer + WordPiece model + WordPiece decoder):
//     1. normalize: clean_text (drop NUL, U+FFFD and category C* except \t \n \r; every
//        whitespace character becomes ' '), handle_chinese_chars (spaces around CJK
//        ideographs), strip_accents (canonical decomposition, then drop nonspacing marks Mn;
//        defaults to `lowercase`), lowercase (full per-character mapping);
//     2. pre-tokenize: split on whitespace (removed) and on punctuation (each punctuation
//        character is its own word; ASCII symbols such as $ + < = > ^ ` | ~ count too);
//     3. WordPiece: greedy longest-match-first from the start of each word; pieces after the
//        first carry the "##" prefix; a word with a part that matches nothing, or with more than
//        max_input_chars_per_word characters, becomes one [UNK].
//
// VOCABULARY FILE (vocab.txt)
//   One token per line, id = line number (from 0); a trailing '\r' and trailing whitespace are
//   removed, as tokenizers' WordPiece::read_file does; when a token appears twice the later id
//   wins for lookups. Rejected with parse_error: an empty file, a line that is not valid UTF-8
//   (with its line number), more than 2^24 lines, and a vocabulary without the unk token.
//
// INVALID UTF-8 (documented behaviour)
//   Each maximal ill-formed subpart of the input becomes U+FFFD (utf8::sanitize); clean_text
//   then removes it, as BERT removes U+FFFD. With clean_text = false it is an ordinary
//   character (normally [UNK]).
//
// HUGGING FACE tokenizer.json (from_hf_json / from_hf_json_file)
//   Read: model {"type": "WordPiece", vocab (token -> id, ids exactly 0 .. n-1), unk_token,
//   continuing_subword_prefix, max_input_chars_per_word}; normalizer BertNormalizer (clean_text,
//   handle_chinese_chars, strip_accents (null: follows lowercase), lowercase) or null (none of
//   them); pre_tokenizer BertPreTokenizer; post_processor TemplateProcessing whose "single" is
//   [SpecialToken X, Sequence A, SpecialToken Y] or BertProcessing {cls, sep}, giving the
//   [CLS]/[SEP] of encode_with_special_tokens (null: none added); added_tokens, which are
//   matched in the raw text before normalization (leftmost, then longest, as tokenizers'
//   AddedVocabulary does) and become their own id. Other model, normalizer, pre-tokenizer or
//   post-processor types, and added tokens with normalized / single_word / lstrip / rstrip set,
//   are a tfm::unsupported_error naming the file and the field; malformed values a
//   tfm::parse_error. "truncation", "padding" and "decoder" are not read (truncation belongs to
//   the caller: infer::bert_encoder truncates to the model's max_seq_length).
//
// LIMITS
//   Unicode tables are Python's unicodedata (see wordpiece_unicode.hpp for the version). NFD
//   canonical reordering is not applied: it only changes the order of combining marks, which
//   accent stripping removes (except the rare spacing marks with a nonzero combining class).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/utf8.hpp"
#include "typeformer/tokenizer/wordpiece_unicode.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Options of the BERT normalizer and the WordPiece model (defaults: bert-base-uncased).
struct wordpiece_options {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  std::optional<bool> strip_accents;  ///< unset: same as lowercase
  bool lowercase = true;
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  std::size_t max_input_chars_per_word = 100;
  std::string cls_token = "[CLS]";  ///< empty: encode_with_special_tokens adds none
  std::string sep_token = "[SEP]";  ///< empty: none added
  /// Tokens matched in the raw text before normalization (tokenizer.json "added_tokens"): each
  /// occurrence becomes the token's id. Empty (the default, and for vocab.txt): no matching.
  std::vector<std::string> added_tokens;
};

namespace detail {

template <std::size_t N>
constexpr bool wp_in_ranges(const wp_range (&t)[N], char32_t c) noexcept {
  const wp_range* it = std::upper_bound(std::begin(t), std::end(t), c,
                                        [](char32_t v, const wp_range& r) { return v < r.lo; });
  return it != std::begin(t) && c <= (it - 1)->hi;
}

/// Looks c up in a run table; returns the mapped code point or 0.
template <std::size_t N>
constexpr char32_t wp_in_runs(const wp_run (&t)[N], char32_t c) noexcept {
  const wp_run* it = std::upper_bound(std::begin(t), std::end(t), c,
                                      [](char32_t v, const wp_run& r) { return v < r.lo; });
  if (it == std::begin(t)) return 0;
  const wp_run& r = *(it - 1);
  const char32_t d = c - r.lo;
  if (d % r.stride != 0 || d / r.stride >= r.count) return 0;
  return r.target + (d / r.stride) * r.target_step;
}

template <std::size_t N>
constexpr const wp_multi* wp_find_multi(const wp_multi (&t)[N], char32_t c) noexcept {
  for (const wp_multi& m : t)
    if (m.cp == c) return &m;
  return nullptr;
}

/// White_Space (Rust char::is_whitespace), plus \t \n \r.
constexpr bool wp_is_whitespace(char32_t c) noexcept {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}
/// tokenizers' is_control: category C* except \t \n \r.
constexpr bool wp_is_control(char32_t c) noexcept {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return wp_in_ranges(wp_other_ranges, c);
}
/// BERT's punctuation: ASCII punctuation or Unicode category P*.
constexpr bool wp_is_punctuation(char32_t c) noexcept {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126))
    return true;
  return wp_in_ranges(wp_punct_ranges, c);
}
/// The CJK blocks of BERT's _is_chinese_char.
constexpr bool wp_is_chinese(char32_t c) noexcept {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
constexpr bool wp_is_nonspacing_mark(char32_t c) noexcept { return wp_in_ranges(wp_mn_ranges, c); }

/// Appends the full lowercase of c (Unicode SpecialCasing unconditional mappings, no context).
inline void wp_append_lower(std::u32string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  if (const wp_multi* m = wp_find_multi(wp_lower_multi, c)) {
    for (char32_t x : m->out)
      if (x) out.push_back(x);
    return;
  }
  const char32_t l = wp_in_runs(wp_lower_runs, c);
  out.push_back(l ? l : c);
}

/// Appends NFD(c) without nonspacing marks (accent stripping of one character).
inline void wp_append_stripped(std::u32string& out, char32_t c) {
  if (c < 0xC0) {
    out.push_back(c);
    return;
  }
  if (wp_is_nonspacing_mark(c)) return;
  if (c >= 0xAC00 && c <= 0xD7A3) {  // Hangul syllable: Unicode 15 section 3.12
    const char32_t s = c - 0xAC00;
    out.push_back(0x1100 + s / 588);
    out.push_back(0x1161 + (s % 588) / 28);
    if (s % 28) out.push_back(0x11A7 + s % 28);
    return;
  }
  if (const char32_t r = wp_in_runs(wp_strip_runs, c)) {
    out.push_back(r);
    return;
  }
  const auto* p = std::lower_bound(std::begin(wp_strip_pairs), std::end(wp_strip_pairs), c,
                                   [](const char32_t(&e)[2], char32_t v) { return e[0] < v; });
  if (p != std::end(wp_strip_pairs) && (*p)[0] == c) {
    out.push_back((*p)[1]);
    return;
  }
  if (const wp_multi* m = wp_find_multi(wp_strip_multi, c)) {
    for (char32_t x : m->out)
      if (x) out.push_back(x);
    return;
  }
  out.push_back(c);
}

struct wp_string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

inline std::string wp_to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8::append(out, c);
  return out;
}

}  // namespace detail

/// A BERT WordPiece tokenizer over a fixed vocabulary.
class wordpiece_tokenizer {
 public:
  /// Most vocabulary entries accepted.
  static constexpr std::size_t max_vocab = std::size_t{1} << 24;

  /// vocab[i] is the token with id i. Fails (parse_error) when the unk token is missing.
  explicit wordpiece_tokenizer(std::vector<std::string> vocab, wordpiece_options opts = {})
      : vocab_(std::move(vocab)), opts_(std::move(opts)) {
    if (vocab_.empty()) fail(errc::parse, "wordpiece: the vocabulary is empty.");
    if (vocab_.size() > max_vocab)
      fail(errc::parse, "wordpiece: the vocabulary has ", vocab_.size(),
           " tokens, more than the limit of ", max_vocab, ".");
    ids_.reserve(vocab_.size());
    for (std::size_t i = 0; i < vocab_.size(); ++i)
      ids_[vocab_[i]] = static_cast<std::int32_t>(i);  // later duplicates win, as in tokenizers
    unk_id_ = token_to_id(opts_.unk_token);
    if (unk_id_ < 0)
      fail(errc::parse, "wordpiece: the unknown token \"", opts_.unk_token,
           "\" is not in the vocabulary.");
    for (const std::string& a : opts_.added_tokens) {
      const std::int32_t id = token_to_id(a);
      if (a.empty() || id < 0)
        fail(errc::parse, "wordpiece: the added token \"", a, "\" is not in the vocabulary.");
      added_.emplace_back(a, id);
    }
  }

  /// Parses the text of a vocab.txt file (see the file comment).
  static wordpiece_tokenizer from_vocab_text(std::string_view text, wordpiece_options opts = {}) {
    return wordpiece_tokenizer(parse_vocab(text), std::move(opts));
  }
  /// Reads a vocab.txt file.
  static wordpiece_tokenizer from_file(const std::string& path, wordpiece_options opts = {}) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(errc::io, "wordpiece: cannot open \"", path, "\".");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) fail(errc::io, "wordpiece: cannot read \"", path, "\".");
    return from_vocab_text(text, std::move(opts));
  }

  /// Parses the text of a Hugging Face tokenizer.json with a WordPiece model (see the file
  /// comment); `doc` names the file in messages.
  static wordpiece_tokenizer from_hf_json(std::string_view json_text,
                                          std::string_view doc = "tokenizer.json");
  /// Reads a Hugging Face tokenizer.json file.
  static wordpiece_tokenizer from_hf_json_file(const std::string& path);

  /// Splits vocab.txt text into tokens (id = index).
  static std::vector<std::string> parse_vocab(std::string_view text) {
    if (text.empty()) fail(errc::parse, "wordpiece vocab: the file is empty.");
    std::vector<std::string> out;
    std::size_t pos = 0, line = 1;
    while (pos < text.size()) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      std::string_view tok = text.substr(pos, end - pos);
      if (!tok.empty() && tok.back() == '\r') tok.remove_suffix(1);
      if (const std::size_t bad = utf8::first_invalid(tok); bad != std::string_view::npos)
        fail(errc::parse, "wordpiece vocab: line ", line, " is not valid UTF-8 (byte ", bad,
             " of the line).");
      out.emplace_back(trim_end(tok));
      if (out.size() > max_vocab)
        fail(errc::parse, "wordpiece vocab: more than ", max_vocab, " lines.");
      pos = end + 1;
      ++line;
    }
    return out;
  }

  /// BertNormalizer applied to text.
  std::string normalize(std::string_view text) const {
    return detail::wp_to_utf8(normalize32(text));
  }

  /// Normalized words of text (BertNormalizer then BertPreTokenizer).
  std::vector<std::string> pre_tokenize(std::string_view text) const {
    std::vector<std::string> words;
    const std::u32string norm = normalize32(text);
    std::u32string cur;
    auto flush = [&] {
      if (!cur.empty()) words.push_back(detail::wp_to_utf8(cur));
      cur.clear();
    };
    for (char32_t c : norm) {
      if (detail::wp_is_whitespace(c)) {
        flush();
      } else if (detail::wp_is_punctuation(c)) {
        flush();
        cur.push_back(c);
        flush();
      } else {
        cur.push_back(c);
      }
    }
    flush();
    return words;
  }

  /// Token ids of text, without [CLS]/[SEP] (added tokens matched first, when there are any).
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    encode_into(text, ids);
    return ids;
  }
  /// [CLS] text [SEP], as BERT's single-sequence template (an empty cls/sep token is left out).
  std::vector<std::int32_t> encode_with_special_tokens(std::string_view text) const {
    std::vector<std::int32_t> ids;
    if (!opts_.cls_token.empty()) ids.push_back(special_id(opts_.cls_token));
    encode_into(text, ids);
    if (!opts_.sep_token.empty()) ids.push_back(special_id(opts_.sep_token));
    return ids;
  }
  /// Tokens of text (vocabulary strings, "##" continuations included).
  std::vector<std::string> tokenize(std::string_view text) const {
    std::vector<std::string> out;
    for (std::int32_t id : encode(text)) out.push_back(vocab_[static_cast<std::size_t>(id)]);
    return out;
  }

  /// tokenizers' WordPiece decoder: tokens joined by spaces, "##" continuations glued to the
  /// previous token; with cleanup, spaces before . ? ! , and English contractions removed.
  /// index_error for an id outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool cleanup = true) const {
    std::string out;
    const std::string& prefix = opts_.continuing_subword_prefix;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      std::string t = id_to_token(ids[i]);
      if (i != 0) {
        if (!prefix.empty() && t.compare(0, prefix.size(), prefix) == 0)
          t.erase(0, prefix.size());
        else
          t.insert(t.begin(), ' ');
      }
      if (cleanup) t = cleanup_text(t);
      out += t;
    }
    return out;
  }
  std::string decode(std::initializer_list<std::int32_t> ids, bool cleanup = true) const {
    return decode(std::span<const std::int32_t>(ids.begin(), ids.size()), cleanup);
  }

  /// Id of a token, or -1.
  std::int32_t token_to_id(std::string_view t) const {
    const auto it = ids_.find(t);
    return it == ids_.end() ? -1 : it->second;
  }
  /// Token of an id; index_error outside [0, vocab_size()).
  const std::string& id_to_token(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= vocab_.size())
      fail(errc::index, "wordpiece: id ", id, " is outside the vocabulary of ", vocab_.size(),
           " tokens.");
    return vocab_[static_cast<std::size_t>(id)];
  }
  std::size_t vocab_size() const noexcept { return vocab_.size(); }
  std::int32_t unk_id() const noexcept { return unk_id_; }
  const wordpiece_options& options() const noexcept { return opts_; }

 private:
  static std::string_view trim_end(std::string_view s) {
    while (!s.empty()) {
      // Find the start of the last code point (s is valid UTF-8 here).
      std::size_t k = s.size() - 1;
      while (k > 0 && utf8::is_continuation(static_cast<unsigned char>(s[k]))) --k;
      const utf8::decoded d = utf8::decode(s, k);
      if (!d.valid || !detail::wp_is_whitespace(d.cp)) break;
      s.remove_suffix(s.size() - k);
    }
    return s;
  }

  static std::string replace_all(std::string s, std::string_view from, std::string_view to) {
    std::size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
      s.replace(pos, from.size(), to);
      pos += to.size();
    }
    return s;
  }
  // tokenizers decoders/wordpiece.rs, cleanup().
  static std::string cleanup_text(std::string s) {
    s = replace_all(std::move(s), " .", ".");
    s = replace_all(std::move(s), " ?", "?");
    s = replace_all(std::move(s), " !", "!");
    s = replace_all(std::move(s), " ,", ",");
    s = replace_all(std::move(s), " ' ", "'");
    s = replace_all(std::move(s), " n't", "n't");
    s = replace_all(std::move(s), " 'm", "'m");
    s = replace_all(std::move(s), " do not", " don't");
    s = replace_all(std::move(s), " 's", "'s");
    s = replace_all(std::move(s), " 've", "'ve");
    s = replace_all(std::move(s), " 're", "'re");
    return s;
  }

  std::int32_t special_id(const std::string& t) const {
    const std::int32_t id = token_to_id(t);
    if (id < 0)
      fail(errc::value, "wordpiece: the special token \"", t, "\" is not in the vocabulary.");
    return id;
  }

  std::u32string normalize32(std::string_view text) const {
    const bool strip = opts_.strip_accents.value_or(opts_.lowercase);
    std::u32string a, b;
    a.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
      const utf8::decoded d = utf8::decode(text, i);
      i += d.length;
      const char32_t c = d.cp;  // U+FFFD for an ill-formed subpart
      if (opts_.clean_text) {
        if (c == 0 || c == 0xFFFD || detail::wp_is_control(c)) continue;
        if (detail::wp_is_whitespace(c)) {
          a.push_back(U' ');
          continue;
        }
      }
      if (opts_.handle_chinese_chars && detail::wp_is_chinese(c)) {
        a.push_back(U' ');
        a.push_back(c);
        a.push_back(U' ');
        continue;
      }
      a.push_back(c);
    }
    if (strip) {
      b.reserve(a.size());
      for (char32_t c : a) detail::wp_append_stripped(b, c);
      a.swap(b);
      b.clear();
    }
    if (opts_.lowercase) {
      b.reserve(a.size());
      for (char32_t c : a) detail::wp_append_lower(b, c);
      a.swap(b);
    }
    return a;
  }

  // Splits text at the added tokens (leftmost match, longest at that position: the
  // LeftmostLongest matching of tokenizers' AddedVocabulary), encoding the pieces between them.
  void encode_into(std::string_view text, std::vector<std::int32_t>& ids) const {
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size() && !added_.empty(); ++i) {
      const std::pair<std::string, std::int32_t>* best = nullptr;
      for (const auto& a : added_)
        if (text.compare(i, a.first.size(), a.first) == 0 &&
            (!best || a.first.size() > best->first.size()))
          best = &a;
      if (!best) continue;
      for (const std::string& w : pre_tokenize(text.substr(start, i - start))) encode_word(w, ids);
      ids.push_back(best->second);
      start = i + best->first.size();
      i = start - 1;
    }
    for (const std::string& w : pre_tokenize(text.substr(start))) encode_word(w, ids);
  }

  // tokenizers models/wordpiece/mod.rs, WordPiece::tokenize.
  void encode_word(const std::string& w, std::vector<std::int32_t>& ids) const {
    if (utf8::count(w) > opts_.max_input_chars_per_word) {
      ids.push_back(unk_id_);
      return;
    }
    const std::size_t mark = ids.size();
    std::string key;
    std::size_t start = 0;
    while (start < w.size()) {
      std::size_t end = w.size();
      std::int32_t found = -1;
      while (start < end) {
        key.clear();
        if (start > 0) key = opts_.continuing_subword_prefix;
        key.append(w, start, end - start);
        if (const auto it = ids_.find(key); it != ids_.end()) {
          found = it->second;
          break;
        }
        // Step back one character.
        --end;
        while (end > start && utf8::is_continuation(static_cast<unsigned char>(w[end]))) --end;
      }
      if (found < 0) {
        ids.resize(mark);
        ids.push_back(unk_id_);
        return;
      }
      ids.push_back(found);
      start = end;
    }
  }

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, std::int32_t, detail::wp_string_hash, std::equal_to<>> ids_;
  wordpiece_options opts_;
  std::int32_t unk_id_ = -1;
  std::vector<std::pair<std::string, std::int32_t>> added_;  // (text, id), from added_tokens
};

namespace detail {

/// The steps of wordpiece_tokenizer::from_hf_json, one per tokenizer.json section.
struct wp_hf_loader {
  using value = json::value;
  std::string_view doc;

  [[noreturn]] void bad(const value& at, std::string_view field, std::string_view what) const {
    fail(errc::parse, doc, ": ", field, " ", what, " (byte ", at.offset, ").");
  }
  static std::string_view type_of(const value& v) {
    const value* t = v.find("type");
    return t && t->is_string() ? std::string_view(t->string) : std::string_view();
  }
  bool read_bool(const value& obj, std::string_view key, std::string_view field, bool dflt) const {
    const value* v = obj.find(key);
    if (!v || v->is_null()) return dflt;
    if (!v->is_bool()) bad(*v, field, std::string("is not a boolean: ") + json::kind_name(v->type));
    return v->boolean;
  }
  std::string read_string(const value& obj, std::string_view key, std::string_view field,
                          std::string dflt) const {
    const value* v = obj.find(key);
    if (!v || v->is_null()) return dflt;
    if (!v->is_string())
      bad(*v, field, std::string("is not a string: ") + json::kind_name(v->type));
    return v->string;
  }

  // model: {"type": "WordPiece", "vocab": {token: id}, unk_token, continuing_subword_prefix,
  // max_input_chars_per_word}. The ids must be 0 .. n-1, each once.
  std::vector<std::string> read_model(const value& model, wordpiece_options& o) const {
    if (!model.is_object()) bad(model, "\"model\"", "is not an object");
    const std::string_view type = type_of(model);
    if (type != "WordPiece")
      fail(errc::unsupported, doc, ": model.type is \"", type,
           "\"; wordpiece_tokenizer reads WordPiece models only (byte ", model.offset, ").");
    o.unk_token = read_string(model, "unk_token", "model.unk_token", o.unk_token);
    o.continuing_subword_prefix =
        read_string(model, "continuing_subword_prefix", "model.continuing_subword_prefix",
                    o.continuing_subword_prefix);
    if (const value* m = model.find("max_input_chars_per_word"); m && !m->is_null()) {
      if (!m->is_number() || !m->integral || m->integer < 0)
        bad(*m, "model.max_input_chars_per_word", "is not a non-negative integer");
      o.max_input_chars_per_word = static_cast<std::size_t>(m->integer);
    }
    const value* vocab = model.find("vocab");
    if (!vocab || !vocab->is_object())
      bad(vocab ? *vocab : model, "model.vocab", "is not an object");
    const std::size_t n = vocab->object.size();
    if (n == 0) bad(*vocab, "model.vocab", "is empty");
    if (n > wordpiece_tokenizer::max_vocab)
      bad(*vocab, "model.vocab", "has more entries than the limit of 2^24");
    std::vector<std::string> tokens(n);
    std::vector<std::uint8_t> seen(n, 0);
    for (const auto& [tok, id] : vocab->object) {
      if (!id.is_number() || !id.integral || id.integer < 0 ||
          static_cast<std::uint64_t>(id.integer) >= n)
        bad(id, "model.vocab[" + json_quoted(tok) + "]",
            "is not an id in [0, " + std::to_string(n) + ")");
      const auto k = static_cast<std::size_t>(id.integer);
      if (seen[k]) bad(id, "model.vocab[" + json_quoted(tok) + "]", "repeats an id");
      seen[k] = 1;
      tokens[k] = tok;
    }
    if (std::find(tokens.begin(), tokens.end(), o.unk_token) == tokens.end())
      bad(model, "model.unk_token " + json_quoted(o.unk_token), "is not in the vocabulary");
    return tokens;
  }

  void read_normalizer(const value* norm, wordpiece_options& o) const {
    if (!norm || norm->is_null()) {
      o.clean_text = o.handle_chinese_chars = o.lowercase = false;
      o.strip_accents = false;
      return;
    }
    if (type_of(*norm) != "BertNormalizer")
      fail(errc::unsupported, doc, ": normalizer.type is \"", type_of(*norm),
           "\"; only BertNormalizer (or none) is supported (byte ", norm->offset, ").");
    o.clean_text = read_bool(*norm, "clean_text", "normalizer.clean_text", true);
    o.handle_chinese_chars =
        read_bool(*norm, "handle_chinese_chars", "normalizer.handle_chinese_chars", true);
    o.lowercase = read_bool(*norm, "lowercase", "normalizer.lowercase", true);
    o.strip_accents.reset();
    if (const value* sa = norm->find("strip_accents"); sa && !sa->is_null())
      o.strip_accents = read_bool(*norm, "strip_accents", "normalizer.strip_accents", false);
  }

  void read_pre_tokenizer(const value* pre) const {
    if (!pre || type_of(*pre) != "BertPreTokenizer")
      fail(errc::unsupported, doc, ": pre_tokenizer is ",
           pre ? "\"" + std::string(type_of(*pre)) + "\"" : std::string("absent"),
           "; only BertPreTokenizer is supported.");
  }

  // post_processor: TemplateProcessing with single = [SpecialToken, Sequence A, SpecialToken],
  // BertProcessing {"cls": [token, id], "sep": [token, id]}, or null (nothing added).
  void read_post_processor(const value* post, wordpiece_options& o) const {
    if (!post || post->is_null()) {
      o.cls_token.clear();
      o.sep_token.clear();
      return;
    }
    const std::string_view type = type_of(*post);
    if (type == "BertProcessing") {
      auto token = [&](std::string_view key) {
        const value* v = post->find(key);
        if (!v || !v->is_array() || v->array.empty() || !v->array[0].is_string())
          bad(v ? *v : *post, "post_processor." + std::string(key), "is not [token, id]");
        return v->array[0].string;
      };
      o.cls_token = token("cls");
      o.sep_token = token("sep");
      return;
    }
    if (type != "TemplateProcessing")
      fail(errc::unsupported, doc, ": post_processor.type is \"", type,
           "\"; only TemplateProcessing, BertProcessing or none is supported (byte ", post->offset,
           ").");
    const value* single = post->find("single");
    auto special = [&](const value& piece) -> const std::string* {
      const value* st = piece.find("SpecialToken");
      const value* id = st ? st->find("id") : nullptr;
      return id && id->is_string() ? &id->string : nullptr;
    };
    const bool ok = single && single->is_array() && single->array.size() == 3 &&
                    special(single->array[0]) && special(single->array[2]) &&
                    single->array[1].find("Sequence") != nullptr;
    if (!ok)
      fail(errc::unsupported, doc,
           ": post_processor.single is not [SpecialToken, Sequence, SpecialToken]; other "
           "templates are not supported (byte ",
           single ? single->offset : post->offset, ").");
    o.cls_token = *special(single->array[0]);
    o.sep_token = *special(single->array[2]);
  }

  // added_tokens: matched in the raw text; each must be in the vocabulary with the same id.
  void read_added_tokens(const value* added, const std::vector<std::string>& vocab,
                         wordpiece_options& o) const {
    if (!added || added->is_null()) return;
    if (!added->is_array()) bad(*added, "added_tokens", "is not an array");
    for (const value& a : added->array) {
      const value* id = a.find("id");
      const value* content = a.find("content");
      if (!id || !id->is_number() || !id->integral || !content || !content->is_string() ||
          content->string.empty())
        bad(a, "an entry of added_tokens", "lacks an integer \"id\" or a non-empty \"content\"");
      if (id->integer < 0 || static_cast<std::uint64_t>(id->integer) >= vocab.size() ||
          vocab[static_cast<std::size_t>(id->integer)] != content->string)
        bad(a, "added token " + json_quoted(content->string),
            "does not have its vocabulary id " + std::to_string(id->integer));
      for (const char* flag : {"single_word", "lstrip", "rstrip", "normalized"})
        if (read_bool(a, flag, "added_tokens[]." + std::string(flag), false))
          fail(errc::unsupported, doc, ": added token ", json_quoted(content->string), " sets \"",
               flag, "\", which is not supported (byte ", a.offset, ").");
      o.added_tokens.push_back(content->string);
    }
  }

  static std::string json_quoted(std::string_view s) {
    std::string out;
    json::append_quoted(out, s.substr(0, 64));
    return out;
  }
};

}  // namespace detail

inline wordpiece_tokenizer wordpiece_tokenizer::from_hf_json(std::string_view json_text,
                                                             std::string_view doc) {
  const detail::json::value root = detail::json::parse(json_text, doc);
  if (!root.is_object()) fail(errc::parse, doc, ": the top level is not a JSON object.");
  const detail::wp_hf_loader L{doc};
  const detail::json::value* model = root.find("model");
  if (!model) fail(errc::parse, doc, ": there is no \"model\" object.");
  wordpiece_options o;
  std::vector<std::string> vocab = L.read_model(*model, o);
  L.read_normalizer(root.find("normalizer"), o);
  L.read_pre_tokenizer(root.find("pre_tokenizer"));
  L.read_post_processor(root.find("post_processor"), o);
  L.read_added_tokens(root.find("added_tokens"), vocab, o);
  return wordpiece_tokenizer(std::move(vocab), std::move(o));
}

inline wordpiece_tokenizer wordpiece_tokenizer::from_hf_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(errc::io, "wordpiece: cannot open \"", path, "\".");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(errc::io, "wordpiece: cannot read \"", path, "\".");
  return from_hf_json(text, path);
}

TFM_END_NAMESPACE
