// typeformer/tokenizer/pretokenizer.hpp
//
// WHAT THIS REPRESENTS
//   The regex pre-tokenizers of byte-level BPE models, written as hand-made matchers that
//   reproduce the leftmost-first backtracking semantics of the published patterns exactly
//   (Rust regex/fancy-regex as used by tiktoken, Oniguruma as used by Hugging Face tokenizers),
//   without a regex engine. Each call to next_piece() returns the end of the match that the
//   pattern's alternation finds at a position; the pieces cover the text with no gaps.
//
//   split_pattern::gpt2   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//   ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//                         (GPT-2, r50k, p50k; also HF ByteLevel with use_regex)
//   split_pattern::cl100k '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}|
//                         ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+
//                         (cl100k_base; the Llama 3 pattern, which differs only in ways that
//                         cannot change a match, maps here too)
//   split_pattern::o200k  the o200k_base pattern (letter case classes, marks, contractions
//                         attached to words, [\r\n/]* after punctuation)
//   split_pattern::llama3_ascii llama.cpp's rewrite of the Llama 3 pattern (src/llama-vocab.cpp,
//                         LLAMA_VOCAB_PRE_TYPE_LLAMA3): cl100k with the contractions spelled
//                         '[sS]|'[tT]|... , so only ASCII case folds (no U+017F)
//   split_pattern::qwen2  the same with \p{N} instead of \p{N}{1,3} (Qwen2 tokenizer.json,
//                         llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2)
//   split_pattern::gpt2_punct     [\p{P}\$\+<=>\^~\|]+  (the first step of llama.cpp's "default"
//                                 pre-tokenizer; \p{P} outside ASCII from Unicode 15.1,
//                                 detail/unicode_punct.hpp, as llama.cpp's tables)
//   split_pattern::digits         \p{N}          every number character alone (HF Digits with
//                                                 individual_digits)
//   split_pattern::numbers        \p{N}+         runs of number characters
//   split_pattern::three_digits   [0-9][0-9][0-9] leftmost runs of three ASCII digits
//   The last three are "split" patterns in the sense of llama.cpp's std::regex fallback and HF
//   Split(behavior=Isolated): the text between two matches is a piece of its own.
//
// SEQUENCES
//   A pretokenizer is a short sequence of patterns applied in turn, each one splitting the pieces
//   of the one before (llama.cpp's regex_exprs lists, HF Sequence pre-tokenizers); for example
//   SmolLM2's is {digits, gpt2}. A pattern never looks past the end of the piece it splits.
//
// INVALID UTF-8
//   Each ill-formed maximal subpart (see utf8.hpp) is treated as one character of class
//   "other" (not a letter, number, mark or space). Pieces stay byte-exact, so byte-level BPE
//   still covers the input and decode(encode(s)) == s for every byte string.
//
// CASE-INSENSITIVE CONTRACTIONS
//   (?i:...) uses Unicode simple case folding, as both engines do: 's' also matches 'S' and
//   U+017F LATIN SMALL LETTER LONG S; the other contraction letters have only their ASCII pair.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/unicode_punct.hpp"
#include "typeformer/tokenizer/unicode_class.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE

/// The pre-tokenization patterns this library implements.
enum class split_pattern : std::uint8_t {
  gpt2,
  cl100k,
  o200k,
  gpt2_punct,
  llama3_ascii,
  qwen2,
  digits,
  numbers,
  three_digits
};

namespace detail::pretok {

inline constexpr std::string_view gpt2_regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view cl100k_regex =
    R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";
inline constexpr std::string_view llama3_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view llama3_llamacpp_regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view qwen2_regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view gpt2_punct_regex = R"([\p{P}\$\+<=>\^~\|]+)";
inline constexpr std::string_view digits_regex = R"(\p{N})";
inline constexpr std::string_view numbers_regex = R"(\p{N}+)";
inline constexpr std::string_view three_digits_regex = R"([0-9][0-9][0-9])";
inline constexpr std::string_view o200k_regex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

using unicode::char_class;

// Class bits for fast set tests.
enum : std::uint16_t {
  bit_other = 1u << 0,
  bit_lu = 1u << 1,
  bit_ll = 1u << 2,
  bit_lt = 1u << 3,
  bit_lm = 1u << 4,
  bit_lo = 1u << 5,
  bit_mark = 1u << 6,
  bit_number = 1u << 7,
  bit_space = 1u << 8,
  bit_crlf = 1u << 9,  // \r or \n (also has bit_space)
  set_letter = bit_lu | bit_ll | bit_lt | bit_lm | bit_lo,
  set_punct = bit_other | bit_mark,               // [^\s\p{L}\p{N}]
  set_prefix = bit_other | bit_mark | bit_space,  // [^\r\n\p{L}\p{N}] (tested with !crlf)
  set_upper =
      bit_lu | bit_lt | bit_lm | bit_lo | bit_mark,  // o200k [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
  set_lower = bit_ll | bit_lm | bit_lo | bit_mark,   // o200k [\p{Ll}\p{Lm}\p{Lo}\p{M}]
};

/// One character of the text: its class bits and byte length.
struct ch {
  std::uint16_t bits;
  std::uint32_t len;
};

inline constexpr std::array<std::uint16_t, 128> ascii_bits = [] {
  std::array<std::uint16_t, 128> a{};
  for (int c = 0; c < 128; ++c) {
    std::uint16_t b = bit_other;
    if ((c >= 9 && c <= 13) || c == 32) b = bit_space;
    if (c == '\r' || c == '\n') b = bit_space | bit_crlf;
    if (c >= '0' && c <= '9') b = bit_number;
    if (c >= 'A' && c <= 'Z') b = bit_lu;
    if (c >= 'a' && c <= 'z') b = bit_ll;
    a[static_cast<std::size_t>(c)] = b;
  }
  return a;
}();

inline constexpr std::array<std::uint16_t, 9> class_bits = {
    bit_other, bit_lu, bit_ll, bit_lt, bit_lm, bit_lo, bit_mark, bit_number, bit_space};

/// Character at byte i (requires i < s.size()).
inline ch char_at(std::string_view s, std::size_t i) noexcept {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return {ascii_bits[b], 1};
  const utf8::decoded d = utf8::decode(s, i);
  if (!d.valid) return {bit_other, d.length};
  return {class_bits[static_cast<std::size_t>(unicode::classify(d.cp))], d.length};
}

/// End of the run of characters whose bits intersect `set`, starting at i.
inline std::size_t run(std::string_view s, std::size_t i, std::uint16_t set) noexcept {
  const std::size_t n = s.size();
  while (i < n) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (!(ascii_bits[b] & set)) break;
      ++i;
      continue;
    }
    const ch c = char_at(s, i);
    if (!(c.bits & set)) break;
    i += c.len;
  }
  return i;
}

inline bool is_ascii_fold(char c, char lower) noexcept { return c == lower || c == lower - 32; }

/// Case-insensitive contraction after an apostrophe at i: 's 't 're 've 'm 'll 'd (o200k/llama
/// order) or '[sdmt] ll ve re (cl100k order); both accept the same strings. Returns the end, or
/// npos. With case_insensitive=false only the lower-case ASCII forms match (GPT-2).
inline std::size_t contraction(std::string_view s, std::size_t i, bool case_insensitive) noexcept {
  const std::size_t n = s.size();
  if (i >= n || s[i] != '\'' || i + 1 >= n) return std::string_view::npos;
  const char c1 = s[i + 1];
  if (!case_insensitive) {
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    if (i + 2 < n) {
      const char c2 = s[i + 2];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return i + 3;
    }
    return std::string_view::npos;
  }
  if (is_ascii_fold(c1, 's') || is_ascii_fold(c1, 't') || is_ascii_fold(c1, 'm') ||
      is_ascii_fold(c1, 'd'))
    return i + 2;
  // U+017F LATIN SMALL LETTER LONG S folds to 's'.
  if (i + 2 < n && static_cast<unsigned char>(c1) == 0xC5 &&
      static_cast<unsigned char>(s[i + 2]) == 0xBF)
    return i + 3;
  if (i + 2 < n) {
    const char c2 = s[i + 2];
    if ((is_ascii_fold(c1, 'r') && is_ascii_fold(c2, 'e')) ||
        (is_ascii_fold(c1, 'v') && is_ascii_fold(c2, 'e')) ||
        (is_ascii_fold(c1, 'l') && is_ascii_fold(c2, 'l')))
      return i + 3;
  }
  return std::string_view::npos;
}

/// Whitespace tail shared by all patterns: \s+(?!\S)|\s+ starting at a space character i.
inline std::size_t space_tail(std::string_view s, std::size_t i) noexcept {
  const std::size_t n = s.size();
  std::size_t j = i, last = i, count = 0;
  while (j < n) {
    const ch c = char_at(s, j);
    if (!(c.bits & bit_space)) break;
    last = j;
    j += c.len;
    ++count;
  }
  if (j == n || count < 2) return j;  // \s+(?!\S) at the end, or \s+ of one character
  return last;                        // backtrack one character so that (?!\S) holds
}

/// \s*[\r\n] (and \s*[\r\n]+): ends after the last \r or \n of the space run at i, or npos.
inline std::size_t space_newline(std::string_view s, std::size_t i) noexcept {
  const std::size_t n = s.size();
  std::size_t j = i, end = std::string_view::npos;
  while (j < n) {
    const ch c = char_at(s, j);
    if (!(c.bits & bit_space)) break;
    j += c.len;
    if (c.bits & bit_crlf) end = j;
  }
  return end;
}

inline std::size_t next_gpt2(std::string_view s, std::size_t i) noexcept {
  const std::size_t n = s.size();
  if (s[i] == '\'') {
    const std::size_t e = contraction(s, i, false);
    if (e != std::string_view::npos) return e;
  }
  const ch c = char_at(s, i);
  if (s[i] == ' ' && i + 1 < n) {  // ' ?' taken
    const ch d = char_at(s, i + 1);
    if (d.bits & set_letter) return run(s, i + 1, set_letter);
    if (d.bits & bit_number) return run(s, i + 1, bit_number);
    if (d.bits & set_punct) return run(s, i + 1, set_punct);
  }
  if (c.bits & set_letter) return run(s, i, set_letter);
  if (c.bits & bit_number) return run(s, i, bit_number);
  if (c.bits & set_punct) return run(s, i, set_punct);
  return space_tail(s, i);
}

/// The cl100k family: cl100k (U+017F folds to s, \p{N}{1,3}), llama.cpp's llama3 (ASCII
/// contractions, \p{N}{1,3}) and qwen2 (ASCII contractions, \p{N}).
inline std::size_t next_cl100k_family(std::string_view s, std::size_t i, bool long_s,
                                      int max_digits) noexcept {
  const std::size_t n = s.size();
  if (s[i] == '\'') {
    std::size_t e = std::string_view::npos;
    if (long_s || i + 2 >= n || static_cast<unsigned char>(s[i + 1]) != 0xC5 ||
        static_cast<unsigned char>(s[i + 2]) != 0xBF)
      e = contraction(s, i, true);
    if (e != std::string_view::npos) return e;
  }
  const ch c = char_at(s, i);
  // [^\r\n\p{L}\p{N}]?+\p{L}+ : a non-letter prefix is kept possessively, so without a letter
  // after it the alternative fails.
  if (c.bits & set_letter) return run(s, i, set_letter);
  if ((c.bits & set_prefix) && !(c.bits & bit_crlf) && i + c.len < n) {
    const ch d = char_at(s, i + c.len);
    if (d.bits & set_letter) return run(s, i + c.len, set_letter);
  }
  // \p{N}{1,max_digits}
  if (c.bits & bit_number) {
    std::size_t j = i + c.len;
    for (int k = 1; k < max_digits && j < n; ++k) {
      const ch d = char_at(s, j);
      if (!(d.bits & bit_number)) break;
      j += d.len;
    }
    return j;
  }
  //  ?[^\s\p{L}\p{N}]++[\r\n]*
  std::size_t start = i;
  if (s[i] == ' ' && i + 1 < n && (char_at(s, i + 1).bits & set_punct)) start = i + 1;
  if (start != i || (c.bits & set_punct)) {
    std::size_t j = run(s, start, set_punct);
    while (j < n && (s[j] == '\r' || s[j] == '\n')) ++j;
    return j;
  }
  // c is a space character here.
  const std::size_t e = space_newline(s, i);
  if (e != std::string_view::npos) return e;
  return space_tail(s, i);
}

inline std::size_t next_cl100k(std::string_view s, std::size_t i) noexcept {
  return next_cl100k_family(s, i, true, 3);
}

/// \p{N} (max_run 1) or \p{N}+ as a split: a match, or the run of text up to the next match.
inline std::size_t next_number_split(std::string_view s, std::size_t i, bool single) noexcept {
  const ch c = char_at(s, i);
  if (c.bits & bit_number) return single ? i + c.len : run(s, i, bit_number);
  return run(s, i, static_cast<std::uint16_t>(~bit_number & 0x3FF));
}

/// Whether the character at i is in [\p{P}\$\+<=>\^~\|]; sets len to its byte length.
inline bool gpt2_punct_at(std::string_view s, std::size_t i, std::size_t& len) noexcept {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) {
    len = 1;
    // ASCII \p{P} is !"#%&'()*,-./:;?@[\]_{}; with $+<=>^~| added, every printable ASCII
    // character that is not a letter, a digit, a space or ` belongs.
    return b > 0x20 && b < 0x7F && b != '`' && !(b >= '0' && b <= '9') && !(b >= 'A' && b <= 'Z') &&
           !(b >= 'a' && b <= 'z');
  }
  const utf8::decoded d = utf8::decode(s, i);
  len = d.length;
  if (!d.valid) return false;
  const auto& t = ::tfm::detail::unicode_data::punct_runs;
  const auto* it =
      std::upper_bound(std::begin(t), std::end(t), static_cast<std::uint32_t>(d.cp),
                       [](std::uint32_t c, const std::uint32_t(&r)[2]) { return c < r[0]; });
  return it != std::begin(t) && static_cast<std::uint32_t>(d.cp) <= (*(it - 1))[1];
}

/// [\p{P}\$\+<=>\^~\|]+ as a split: a run of members, or the run of non-members up to one.
inline std::size_t next_gpt2_punct(std::string_view s, std::size_t i) noexcept {
  std::size_t len = 0;
  const bool in = gpt2_punct_at(s, i, len);
  std::size_t j = i + len;
  while (j < s.size() && gpt2_punct_at(s, j, len) == in) j += len;
  return j;
}

inline bool ascii_digit(char c) noexcept { return c >= '0' && c <= '9'; }

/// [0-9][0-9][0-9] as a split: three ASCII digits, or the text up to the next three.
inline std::size_t next_three_digits(std::string_view s, std::size_t i) noexcept {
  const std::size_t n = s.size();
  auto three_at = [&](std::size_t k) {
    return k + 3 <= n && ascii_digit(s[k]) && ascii_digit(s[k + 1]) && ascii_digit(s[k + 2]);
  };
  if (three_at(i)) return i + 3;
  std::size_t k = i + 1;
  while (k < n && !three_at(k)) ++k;
  return k;
}

/// o200k: [^\r\n\p{L}\p{N}]?U*W+C? from a (U = set_upper, W = set_lower, C = contraction).
inline std::size_t o200k_words_lower(std::string_view s, std::size_t a) noexcept {
  const std::size_t n = s.size();
  std::size_t j = a, last_both_end = std::string_view::npos;
  while (j < n) {  // U* greedily, remembering the last character that is also in W
    const ch c = char_at(s, j);
    if (!(c.bits & set_upper)) break;
    j += c.len;
    if (c.bits & set_lower) last_both_end = j;
  }
  std::size_t end;
  if (j < n && (char_at(s, j).bits & set_lower))
    end = run(s, j, set_lower);  // W+ right after the U* run
  else if (last_both_end != std::string_view::npos)
    end = last_both_end;  // U* gives back its last W-capable character to W+
  else
    return std::string_view::npos;
  const std::size_t e = contraction(s, end, true);
  return e != std::string_view::npos ? e : end;
}

/// o200k: U+W*C? from a.
inline std::size_t o200k_words_upper(std::string_view s, std::size_t a) noexcept {
  if (a >= s.size() || !(char_at(s, a).bits & set_upper)) return std::string_view::npos;
  std::size_t end = run(s, a, set_upper);
  end = run(s, end, set_lower);
  const std::size_t e = contraction(s, end, true);
  return e != std::string_view::npos ? e : end;
}

inline std::size_t next_o200k(std::string_view s, std::size_t i) noexcept {
  const std::size_t n = s.size();
  const ch c = char_at(s, i);
  const bool prefix = (c.bits & set_prefix) && !(c.bits & bit_crlf);
  std::size_t e;
  if (prefix && (e = o200k_words_lower(s, i + c.len)) != std::string_view::npos) return e;
  if ((e = o200k_words_lower(s, i)) != std::string_view::npos) return e;
  if (prefix && (e = o200k_words_upper(s, i + c.len)) != std::string_view::npos) return e;
  if ((e = o200k_words_upper(s, i)) != std::string_view::npos) return e;
  if (c.bits & bit_number) {
    std::size_t j = i + c.len;
    for (int k = 1; k < 3 && j < n; ++k) {
      const ch d = char_at(s, j);
      if (!(d.bits & bit_number)) break;
      j += d.len;
    }
    return j;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n/]*
  std::size_t start = i;
  if (s[i] == ' ' && i + 1 < n && (char_at(s, i + 1).bits & set_punct)) start = i + 1;
  if (start != i || (c.bits & set_punct)) {
    std::size_t j = run(s, start, set_punct);
    while (j < n && (s[j] == '\r' || s[j] == '\n' || s[j] == '/')) ++j;
    return j;
  }
  e = space_newline(s, i);
  if (e != std::string_view::npos) return e;
  return space_tail(s, i);
}

}  // namespace detail::pretok

/// The regular expression a split_pattern reproduces (as published).
constexpr std::string_view pattern_regex(split_pattern p) noexcept {
  switch (p) {
    case split_pattern::gpt2:
      return detail::pretok::gpt2_regex;
    case split_pattern::cl100k:
      return detail::pretok::cl100k_regex;
    case split_pattern::o200k:
      return detail::pretok::o200k_regex;
    case split_pattern::gpt2_punct:
      return detail::pretok::gpt2_punct_regex;
    case split_pattern::llama3_ascii:
      return detail::pretok::llama3_llamacpp_regex;
    case split_pattern::qwen2:
      return detail::pretok::qwen2_regex;
    case split_pattern::digits:
      return detail::pretok::digits_regex;
    case split_pattern::numbers:
      return detail::pretok::numbers_regex;
    case split_pattern::three_digits:
      return detail::pretok::three_digits_regex;
  }
  return {};
}

/// Short name: "gpt2", "cl100k", "o200k", "gpt2_punct", "llama3_ascii", "qwen2", "digits",
/// "numbers", "three_digits".
constexpr std::string_view pattern_name(split_pattern p) noexcept {
  switch (p) {
    case split_pattern::gpt2:
      return "gpt2";
    case split_pattern::cl100k:
      return "cl100k";
    case split_pattern::o200k:
      return "o200k";
    case split_pattern::gpt2_punct:
      return "gpt2_punct";
    case split_pattern::llama3_ascii:
      return "llama3_ascii";
    case split_pattern::qwen2:
      return "qwen2";
    case split_pattern::digits:
      return "digits";
    case split_pattern::numbers:
      return "numbers";
    case split_pattern::three_digits:
      return "three_digits";
  }
  return {};
}

/// The pattern whose regex text is `regex` (exact text, as found in tokenizer.json or tiktoken
/// sources), or nullopt when it is not one this library implements.
inline std::optional<split_pattern> pattern_from_regex(std::string_view regex) noexcept {
  if (regex == detail::pretok::gpt2_regex) return split_pattern::gpt2;
  if (regex == detail::pretok::cl100k_regex || regex == detail::pretok::llama3_regex)
    return split_pattern::cl100k;
  if (regex == detail::pretok::o200k_regex) return split_pattern::o200k;
  if (regex == detail::pretok::gpt2_punct_regex) return split_pattern::gpt2_punct;
  if (regex == detail::pretok::llama3_llamacpp_regex) return split_pattern::llama3_ascii;
  if (regex == detail::pretok::qwen2_regex) return split_pattern::qwen2;
  if (regex == detail::pretok::digits_regex) return split_pattern::digits;
  if (regex == detail::pretok::numbers_regex) return split_pattern::numbers;
  if (regex == detail::pretok::three_digits_regex) return split_pattern::three_digits;
  return std::nullopt;
}

/// The pattern named `name`: gpt2 (also r50k, p50k), cl100k (also llama3), o200k, gpt2_punct,
/// llama3_ascii, qwen2, digits, numbers, three_digits. Throws value_error for any other name.
inline split_pattern pattern_from_name(std::string_view name) {
  if (name == "gpt2" || name == "r50k" || name == "p50k" || name == "r50k_base" ||
      name == "p50k_base")
    return split_pattern::gpt2;
  if (name == "cl100k" || name == "cl100k_base" || name == "llama3") return split_pattern::cl100k;
  if (name == "o200k" || name == "o200k_base") return split_pattern::o200k;
  if (name == "gpt2_punct") return split_pattern::gpt2_punct;
  if (name == "llama3_ascii") return split_pattern::llama3_ascii;
  if (name == "qwen2") return split_pattern::qwen2;
  if (name == "digits") return split_pattern::digits;
  if (name == "numbers") return split_pattern::numbers;
  if (name == "three_digits") return split_pattern::three_digits;
  fail(errc::value, "pre-tokenizer pattern '", name,
       "' is unknown; use one of gpt2, r50k, p50k, cl100k, llama3, o200k, gpt2_punct, "
       "llama3_ascii, qwen2, "
       "digits, numbers, three_digits.");
}

/// End (byte offset) of the piece that starts at byte `pos` of `text`. Requires
/// pos < text.size(); the result is > pos.
inline std::size_t next_piece(std::string_view text, std::size_t pos, split_pattern p) noexcept {
  switch (p) {
    case split_pattern::gpt2:
      return detail::pretok::next_gpt2(text, pos);
    case split_pattern::cl100k:
      return detail::pretok::next_cl100k(text, pos);
    case split_pattern::o200k:
      return detail::pretok::next_o200k(text, pos);
    case split_pattern::gpt2_punct:
      return detail::pretok::next_gpt2_punct(text, pos);
    case split_pattern::llama3_ascii:
      return detail::pretok::next_cl100k_family(text, pos, false, 3);
    case split_pattern::qwen2:
      return detail::pretok::next_cl100k_family(text, pos, false, 1);
    case split_pattern::digits:
      return detail::pretok::next_number_split(text, pos, true);
    case split_pattern::numbers:
      return detail::pretok::next_number_split(text, pos, false);
    case split_pattern::three_digits:
      return detail::pretok::next_three_digits(text, pos);
  }
  return text.size();
}

/// Calls on_piece(std::string_view) for each pre-token of text, in order; the pieces concatenate
/// to text.
template <class F>
void for_each_piece(std::string_view text, split_pattern p, F&& on_piece) {
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t e = next_piece(text, i, p);
    on_piece(text.substr(i, e - i));
    i = e;
  }
}

/// The pre-tokens of text (views into text).
inline std::vector<std::string_view> split_pieces(std::string_view text, split_pattern p) {
  std::vector<std::string_view> out;
  for_each_piece(text, p, [&](std::string_view piece) { out.push_back(piece); });
  return out;
}

/// A sequence of split patterns applied in turn (see SEQUENCES in the file comment).
struct pretokenizer {
  static constexpr std::size_t max_steps = 4;
  std::array<split_pattern, max_steps> steps{};
  std::size_t size = 0;

  pretokenizer() = default;
  pretokenizer(std::initializer_list<split_pattern> ps) {
    if (ps.size() == 0 || ps.size() > max_steps)
      fail(errc::value, "tfm::pretokenizer: a sequence holds 1 to ", max_steps, " patterns, not ",
           ps.size(), ".");
    for (split_pattern p : ps) steps[size++] = p;
  }
};

namespace detail::pretok {
template <class F>
void for_each_piece_from(std::string_view text, const pretokenizer& pre, std::size_t step,
                         F& on_piece) {
  if (step + 1 == pre.size) {
    std::size_t i = 0;
    while (i < text.size()) {
      const std::size_t e = next_piece(text, i, pre.steps[step]);
      on_piece(text.substr(i, e - i));
      i = e;
    }
    return;
  }
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t e = next_piece(text, i, pre.steps[step]);
    for_each_piece_from(text.substr(i, e - i), pre, step + 1, on_piece);
    i = e;
  }
}
}  // namespace detail::pretok

/// Calls on_piece(std::string_view) for each piece of text under the sequence `pre` (an empty
/// sequence yields text whole); the pieces concatenate to text.
template <class F>
void for_each_piece(std::string_view text, const pretokenizer& pre, F&& on_piece) {
  if (text.empty()) return;
  if (pre.size == 0) {
    on_piece(text);
    return;
  }
  detail::pretok::for_each_piece_from(text, pre, 0, on_piece);
}

TFM_END_NAMESPACE
