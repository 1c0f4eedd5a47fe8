// typeformer/tokenizer/utf8.hpp
//
// WHAT THIS REPRESENTS
//   UTF-8 helpers shared by every tokenizer: decode one code point with validity reporting,
//   encode a code point, validate a string, iterate code points, and replace ill-formed
//   sequences with U+FFFD. Nothing here has undefined behaviour on arbitrary bytes.
//
// CONTRACTS (Unicode 15, section 3.9 "Unicode Encoding Forms", table 3-7)
//   A well-formed sequence is the shortest form of a scalar value in U+0000..U+10FFFF that is not
//   a surrogate (U+D800..U+DFFF). Overlong forms, surrogates, values above U+10FFFF, stray
//   continuation bytes, the bytes C0, C1, F5..FF, and truncated sequences are ill-formed.
//   On an ill-formed sequence decode() reports valid == false, cp == U+FFFD and a length equal to
//   the "maximal subpart" of the sequence (at least 1), which is the W3C/WHATWG and Unicode
//   recommended practice for U+FFFD substitution (section 3.9, "U+FFFD Substitution of Maximal
//   Subparts"). Decoding therefore always makes progress and resynchronises on the next byte
//   that can start a sequence.
//
// API (stable; other tokenizer headers depend on it)
//   utf8::decode(s, pos)        -> decoded{cp, length, valid}; requires pos < s.size()
//   utf8::encoded_length(cp)    -> 1..4, or 0 for a surrogate or a value above U+10FFFF
//   utf8::encode(cp, out)       -> bytes written to out[0..4); invalid cp writes U+FFFD (3 bytes)
//   utf8::append(str, cp)       -> appends encode(cp) to a std::string
//   utf8::is_valid(s)           -> true iff s is entirely well-formed
//   utf8::first_invalid(s)      -> byte offset of the first ill-formed sequence, or npos
//   utf8::sanitize(s)           -> copy of s with each maximal ill-formed subpart -> U+FFFD
//   utf8::count(s)              -> number of decode steps (code points, ill-formed parts count 1)
//   for (utf8::decoded d : utf8::code_points(s)) { d.offset, d.cp, d.length, d.valid }
#pragma once

#include "typeformer/config/config.hpp"

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

TFM_BEGIN_NAMESPACE
namespace utf8 {

/// U+FFFD REPLACEMENT CHARACTER, reported for ill-formed input.
inline constexpr char32_t replacement_character = 0xFFFD;
/// Largest Unicode scalar value.
inline constexpr char32_t max_code_point = 0x10FFFF;

/// One decode step: the code point, the number of bytes consumed, whether they were well-formed,
/// and (when produced by code_points()) the byte offset of the step in the string.
struct decoded {
  char32_t cp = replacement_character;  ///< the scalar value, or U+FFFD when !valid
  std::uint32_t length = 1;             ///< bytes consumed, 1..4, never 0
  bool valid = false;                   ///< false for an ill-formed (maximal) subpart
  std::size_t offset = 0;               ///< byte offset of the step (set by code_points())
};

/// True for a Unicode scalar value (not a surrogate, not above U+10FFFF).
constexpr bool is_scalar_value(char32_t cp) noexcept {
  return cp <= max_code_point && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/// True when byte b is a continuation byte (10xxxxxx).
constexpr bool is_continuation(unsigned char b) noexcept { return (b & 0xC0) == 0x80; }

/// Decodes the code point that starts at s[pos]. Requires pos < s.size(); returns an invalid
/// one-byte step (never reads out of bounds) if that is violated.
constexpr decoded decode(std::string_view s, std::size_t pos = 0) noexcept {
  decoded r;
  r.offset = pos;
  if (pos >= s.size()) return r;
  const std::size_t avail = s.size() - pos;
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[pos + i]); };
  const unsigned char b0 = byte(0);
  if (b0 < 0x80) {
    r.cp = b0;
    r.valid = true;
    return r;
  }
  // Table 3-7: the allowed range of the second byte depends on the lead byte.
  std::uint32_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return r;  // stray continuation byte, C0, C1, F5..FF
  }
  for (std::uint32_t i = 1; i <= need; ++i) {
    if (i >= avail) {
      r.length = i;  // truncated: the maximal subpart is everything so far
      return r;
    }
    const unsigned char b = byte(i);
    const unsigned char l = (i == 1) ? lo : 0x80;
    const unsigned char h = (i == 1) ? hi : 0xBF;
    if (b < l || b > h) {
      r.length = i;
      return r;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  r.cp = cp;
  r.length = need + 1;
  r.valid = true;
  return r;
}

/// Number of bytes encode(cp) writes for a scalar value, or 0 when cp is not one.
constexpr std::uint32_t encoded_length(char32_t cp) noexcept {
  if (!is_scalar_value(cp)) return 0;
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/// Writes the UTF-8 form of cp to out[0..n) and returns n (1..4). out must have room for 4
/// bytes. A surrogate or a value above U+10FFFF is written as U+FFFD (3 bytes).
constexpr std::uint32_t encode(char32_t cp, char* out) noexcept {
  if (!is_scalar_value(cp)) cp = replacement_character;
  if (cp < 0x80) {
    out[0] = static_cast<char>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<char>(0xC0 | (cp >> 6));
    out[1] = static_cast<char>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<char>(0xE0 | (cp >> 12));
    out[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out[2] = static_cast<char>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<char>(0xF0 | (cp >> 18));
  out[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
  out[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
  out[3] = static_cast<char>(0x80 | (cp & 0x3F));
  return 4;
}

/// Appends the UTF-8 form of cp (U+FFFD when cp is not a scalar value).
inline void append(std::string& s, char32_t cp) {
  char buf[4] = {};
  const std::uint32_t n = encode(cp, buf);
  s.append(buf, n);
}

/// Byte offset of the first ill-formed sequence in s, or std::string_view::npos.
constexpr std::size_t first_invalid(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const decoded d = decode(s, i);
    if (!d.valid) return i;
    i += d.length;
  }
  return std::string_view::npos;
}

/// True iff every byte of s belongs to a well-formed UTF-8 sequence.
constexpr bool is_valid(std::string_view s) noexcept {
  return first_invalid(s) == std::string_view::npos;
}

/// Copy of s in which every maximal ill-formed subpart is replaced by U+FFFD (EF BF BD).
inline std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const decoded d = decode(s, i);
    if (d.valid)
      out.append(s.data() + i, d.length);
    else
      append(out, replacement_character);
    i += d.length;
  }
  return out;
}

/// Forward range over the decode steps of a string (see decode()); each element carries its
/// byte offset. The string must outlive the range.
class code_points {
 public:
  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = decoded;
    using difference_type = std::ptrdiff_t;
    using pointer = const decoded*;
    using reference = const decoded&;

    constexpr iterator() = default;
    constexpr iterator(std::string_view s, std::size_t pos) noexcept : s_(s) { load(pos); }
    constexpr const decoded& operator*() const noexcept { return cur_; }
    constexpr const decoded* operator->() const noexcept { return &cur_; }
    constexpr iterator& operator++() noexcept {
      load(cur_.offset + cur_.length);
      return *this;
    }
    constexpr iterator operator++(int) noexcept {
      iterator t = *this;
      ++*this;
      return t;
    }
    friend constexpr bool operator==(const iterator& a, const iterator& b) noexcept {
      return a.cur_.offset == b.cur_.offset;
    }

   private:
    constexpr void load(std::size_t pos) noexcept {
      if (pos >= s_.size()) {
        cur_ = decoded{};
        cur_.offset = s_.size();
      } else {
        cur_ = decode(s_, pos);
      }
    }
    std::string_view s_;
    decoded cur_;
  };

  constexpr explicit code_points(std::string_view s) noexcept : s_(s) {}
  constexpr iterator begin() const noexcept { return iterator(s_, 0); }
  constexpr iterator end() const noexcept { return iterator(s_, s_.size()); }

 private:
  std::string_view s_;
};

/// Number of decode steps in s (code points; each ill-formed maximal subpart counts as one).
constexpr std::size_t count(std::string_view s) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); ++n) i += decode(s, i).length;
  return n;
}

}  // namespace utf8
TFM_END_NAMESPACE
