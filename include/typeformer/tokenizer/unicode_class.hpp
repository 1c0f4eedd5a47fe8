// typeformer/tokenizer/unicode_class.hpp
//
// WHAT THIS REPRESENTS
//   The character classes that regex pre-tokenizers ask about: the letter general categories
//   (\p{L} = Lu Ll Lt Lm Lo), marks (\p{M}), numbers (\p{N}) and \s, for every code point.
//   \s is the Unicode White_Space property, which is what it means both in Rust's regex crate
//   (used by tiktoken through fancy-regex) and in Oniguruma (used by Hugging Face tokenizers).
//   Data: detail/unicode_tables.hpp, generated from the Unicode Character Database by
//   tools/gen_unicode_tables.py (see docs/tokenizers.md); no runtime dependency.
//
// API
//   unicode::classify(cp) -> unicode::char_class (other for unassigned and out-of-range values)
//   unicode::is_letter / is_number / is_space / is_mark (char_class)
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/tokenizer/detail/unicode_tables.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

TFM_BEGIN_NAMESPACE
namespace unicode {

/// One class per code point; values match the generated table.
enum class char_class : std::uint8_t {
  other = 0,   ///< not a letter, mark, number or White_Space (unassigned included)
  lu = 1,      ///< uppercase letter
  ll = 2,      ///< lowercase letter
  lt = 3,      ///< titlecase letter
  lm = 4,      ///< modifier letter
  lo = 5,      ///< other letter
  mark = 6,    ///< Mn, Mc, Me
  number = 7,  ///< Nd, Nl, No
  space = 8,   ///< White_Space property
};

constexpr bool is_letter(char_class c) noexcept {
  return c >= char_class::lu && c <= char_class::lo;
}
constexpr bool is_number(char_class c) noexcept { return c == char_class::number; }
constexpr bool is_space(char_class c) noexcept { return c == char_class::space; }
constexpr bool is_mark(char_class c) noexcept { return c == char_class::mark; }

namespace detail {

/// Binary search in the run table; valid for any value (above U+10FFFF -> other).
inline char_class classify_search(char32_t cp) noexcept {
  if (cp > 0x10FFFF) return char_class::other;
  const auto& t = ::tfm::detail::unicode_data::class_breaks;
  const std::uint32_t key = (static_cast<std::uint32_t>(cp) << 4) | 0xF;
  const auto* it = std::upper_bound(std::begin(t), std::end(t), key);
  return static_cast<char_class>(*(it - 1) & 0xF);
}

/// Flat table for the Basic Multilingual Plane, built once on first use (thread-safe static).
inline const std::array<std::uint8_t, 0x10000>& bmp_table() noexcept {
  static const std::array<std::uint8_t, 0x10000> table = [] {
    std::array<std::uint8_t, 0x10000> a{};
    const auto& t = ::tfm::detail::unicode_data::class_breaks;
    const std::size_t n = sizeof(t) / sizeof(t[0]);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t lo = t[i] >> 4;
      if (lo >= 0x10000) break;
      const std::uint32_t hi =
          (i + 1 < n) ? std::min<std::uint32_t>(t[i + 1] >> 4, 0x10000) : 0x10000;
      for (std::uint32_t c = lo; c < hi; ++c) a[c] = static_cast<std::uint8_t>(t[i] & 0xF);
    }
    return a;
  }();
  return table;
}

}  // namespace detail

/// The class of code point cp.
inline char_class classify(char32_t cp) noexcept {
  if (cp < 0x10000) return static_cast<char_class>(detail::bmp_table()[cp]);
  return detail::classify_search(cp);
}

}  // namespace unicode
TFM_END_NAMESPACE
