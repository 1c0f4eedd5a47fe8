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
// LIMITS
//   Unicode tables are Python's unicodedata (see wordpiece_unicode.hpp for the version). NFD
//   canonical reordering is not applied: it only changes the order of combining marks, which
//   accent stripping removes (except the rare spacing marks with a nonzero combining class).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
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
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
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

  /// Token ids of text, without [CLS]/[SEP].
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    for (const std::string& w : pre_tokenize(text)) encode_word(w, ids);
    return ids;
  }
  /// [CLS] text [SEP], as BERT's single-sequence template.
  std::vector<std::int32_t> encode_with_special_tokens(std::string_view text) const {
    std::vector<std::int32_t> ids{special_id(opts_.cls_token)};
    for (const std::string& w : pre_tokenize(text)) encode_word(w, ids);
    ids.push_back(special_id(opts_.sep_token));
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
};

TFM_END_NAMESPACE
