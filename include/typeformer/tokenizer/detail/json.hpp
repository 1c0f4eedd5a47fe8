// typeformer/tokenizer/detail/json.hpp
//
// WHAT THIS REPRESENTS
//   A small hardened JSON (RFC 8259) reader and string writer for tokenizer files
//   (encoder.json, tokenizer.json). The tokenizer layer does not depend on io/, so it carries its
//   own. Every malformed input ends in tfm::parse_error whose message names the document and the
//   byte offset; nothing is read out of bounds and recursion is bounded.
//
// LIMITS (json::limits): nesting depth (default 128), document size (default 1 GiB), string
//   length (default 64 MiB). Strings must be valid UTF-8; \u escapes must pair surrogates
//   (as serde_json, which writes Hugging Face tokenizer.json files, requires). Duplicate object
//   keys are kept in order; find() returns the first.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace detail::json {

struct limits {
  std::size_t max_depth = 128;
  std::size_t max_document_bytes = std::size_t{1} << 30;
  std::size_t max_string_bytes = std::size_t{64} << 20;
};

enum class kind : std::uint8_t { null, boolean, number, string, array, object };

inline const char* kind_name(kind k) noexcept {
  switch (k) {
    case kind::null:
      return "null";
    case kind::boolean:
      return "a boolean";
    case kind::number:
      return "a number";
    case kind::string:
      return "a string";
    case kind::array:
      return "an array";
    case kind::object:
      return "an object";
  }
  return "a value";
}

/// A parsed JSON value. `offset` is the byte offset where it starts in the document.
struct value {
  kind type = kind::null;
  bool boolean = false;
  bool integral = false;     ///< number written without fraction/exponent and fits int64
  std::int64_t integer = 0;  ///< valid when integral
  double number = 0.0;
  std::string string;
  std::vector<value> array;
  struct member;  ///< {first: key, second: value}
  std::vector<member> object;
  std::size_t offset = 0;

  bool is_null() const noexcept { return type == kind::null; }
  bool is_string() const noexcept { return type == kind::string; }
  bool is_array() const noexcept { return type == kind::array; }
  bool is_object() const noexcept { return type == kind::object; }
  bool is_number() const noexcept { return type == kind::number; }
  bool is_bool() const noexcept { return type == kind::boolean; }

  /// First member named key, or nullptr (also when this is not an object).
  const value* find(std::string_view key) const noexcept;
};

/// An object member; a named struct (not std::pair) so that value may hold a vector of them while
/// still incomplete (libstdc++ with clang rejects std::pair of an incomplete type).
struct value::member {
  std::string first;
  value second;
};

inline const value* value::find(std::string_view key) const noexcept {
  if (type != kind::object) return nullptr;
  for (const auto& kv : object)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

/// Recursive-descent parser over a byte buffer.
class parser {
 public:
  parser(std::string_view text, std::string_view doc, limits lim)
      : s_(text), doc_(doc), lim_(lim) {}

  value parse_document() {
    if (s_.size() > lim_.max_document_bytes)
      fail(errc::parse, doc_, ": the document has ", s_.size(), " bytes, more than the limit of ",
           lim_.max_document_bytes, ".");
    // A UTF-8 byte order mark is tolerated, as serde_json's callers often strip it.
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
    skip_ws();
    value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) error("unexpected data after the top-level value");
    return v;
  }

 private:
  [[noreturn]] void error(std::string_view what) const {
    fail(errc::parse, doc_, ": ", what, " at byte ", pos_, ".");
  }

  void skip_ws() noexcept {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  bool consume_literal(std::string_view lit) noexcept {
    if (s_.substr(pos_, lit.size()) != lit) return false;
    pos_ += lit.size();
    return true;
  }

  value parse_value(std::size_t depth) {
    if (pos_ >= s_.size()) error("unexpected end of the document, expected a value");
    value v;
    v.offset = pos_;
    const char c = s_[pos_];
    switch (c) {
      case '{':
        parse_object(v, depth);
        break;
      case '[':
        parse_array(v, depth);
        break;
      case '"':
        v.type = kind::string;
        parse_string(v.string);
        break;
      case 't':
        if (!consume_literal("true")) error("invalid literal (expected true)");
        v.type = kind::boolean;
        v.boolean = true;
        break;
      case 'f':
        if (!consume_literal("false")) error("invalid literal (expected false)");
        v.type = kind::boolean;
        break;
      case 'n':
        if (!consume_literal("null")) error("invalid literal (expected null)");
        break;
      default:
        if (c == '-' || (c >= '0' && c <= '9')) {
          parse_number(v);
        } else {
          error("unexpected character, expected a value");
        }
    }
    return v;
  }

  void enter(std::size_t depth) const {
    if (depth + 1 > lim_.max_depth)
      fail(errc::parse, doc_, ": nesting deeper than the limit of ", lim_.max_depth,
           " levels at byte ", pos_, ".");
  }

  void parse_object(value& v, std::size_t depth) {
    enter(depth);
    v.type = kind::object;
    ++pos_;  // '{'
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') error("expected a string key in an object");
      std::string key;
      parse_string(key);
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') error("expected ':' after an object key");
      ++pos_;
      skip_ws();
      value member = parse_value(depth + 1);
      v.object.push_back(value::member{std::move(key), std::move(member)});
      skip_ws();
      if (pos_ >= s_.size()) error("unexpected end of the document inside an object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == '}') {
        ++pos_;
        return;
      }
      error("expected ',' or '}' in an object");
    }
  }

  void parse_array(value& v, std::size_t depth) {
    enter(depth);
    v.type = kind::array;
    ++pos_;  // '['
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      v.array.push_back(parse_value(depth + 1));
      skip_ws();
      if (pos_ >= s_.size()) error("unexpected end of the document inside an array");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        return;
      }
      error("expected ',' or ']' in an array");
    }
  }

  unsigned hex4() {
    if (s_.size() - pos_ < 4) error("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else {
        --pos_;
        error("invalid hexadecimal digit in a \\u escape");
      }
    }
    return v;
  }

  void parse_string(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      // Copy a run of plain bytes at once.
      std::size_t j = pos_;
      while (j < s_.size()) {
        const auto b = static_cast<unsigned char>(s_[j]);
        if (b == '"' || b == '\\' || b < 0x20 || b >= 0x80) break;
        ++j;
      }
      out.append(s_.data() + pos_, j - pos_);
      pos_ = j;
      if (out.size() > lim_.max_string_bytes)
        fail(errc::parse, doc_, ": a string is longer than the limit of ", lim_.max_string_bytes,
             " bytes at byte ", pos_, ".");
      if (pos_ >= s_.size()) error("unterminated string");
      const auto b = static_cast<unsigned char>(s_[pos_]);
      if (b == '"') {
        ++pos_;
        return;
      }
      if (b < 0x20) error("unescaped control character in a string");
      if (b >= 0x80) {
        const utf8::decoded d = utf8::decode(s_, pos_);
        if (!d.valid) error("invalid UTF-8 in a string");
        out.append(s_.data() + pos_, d.length);
        pos_ += d.length;
        continue;
      }
      // Escape.
      ++pos_;
      if (pos_ >= s_.size()) error("unterminated escape in a string");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          char32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!consume_literal("\\u")) error("high surrogate not followed by a \\u escape");
            const char32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8::append(out, cp);
          break;
        }
        default:
          --pos_;
          error("invalid escape character in a string");
      }
    }
  }

  void parse_number(value& v) {
    const std::size_t start = pos_;
    bool frac = false;
    if (s_[pos_] == '-') ++pos_;
    if (pos_ >= s_.size()) error("truncated number");
    if (s_[pos_] == '0') {
      ++pos_;
    } else if (s_[pos_] >= '1' && s_[pos_] <= '9') {
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    } else {
      error("invalid number");
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      frac = true;
      ++pos_;
      if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') error("digit expected after '.'");
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      frac = true;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9')
        error("digit expected in exponent");
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
    }
    v.type = kind::number;
    const char* first = s_.data() + start;
    const char* last = s_.data() + pos_;
    if (!frac) {
      const auto r = std::from_chars(first, last, v.integer);
      if (r.ec == std::errc() && r.ptr == last) {
        v.integral = true;
        v.number = static_cast<double>(v.integer);
        return;
      }
    }
    const auto r = std::from_chars(first, last, v.number);
    if (r.ec == std::errc::result_out_of_range) {
      v.number = (*first == '-') ? -HUGE_VAL : HUGE_VAL;
    } else if (r.ec != std::errc()) {
      error("invalid number");
    }
  }

  std::string_view s_;
  std::string_view doc_;
  limits lim_;
  std::size_t pos_ = 0;
};

/// Parses a whole document; `doc` names it in error messages (for example a file path).
inline value parse(std::string_view text, std::string_view doc, limits lim = {}) {
  return parser(text, doc, lim).parse_document();
}

/// Appends \uXXXX for a code point, as a UTF-16 surrogate pair above U+FFFF (json.dumps' form).
inline void append_u_escape(std::string& out, char32_t c) {
  static constexpr char hex[] = "0123456789abcdef";
  auto unit = [&](char32_t u) {
    out += "\\u";
    for (int k = 3; k >= 0; --k) out.push_back(hex[(u >> (4 * k)) & 0xF]);
  };
  if (c >= 0x10000) {
    unit(0xD800 + ((c - 0x10000) >> 10));
    unit(0xDC00 + ((c - 0x10000) & 0x3FF));
  } else {
    unit(c);
  }
}

/// Appends s as a JSON string literal: control characters, quote and backslash escaped; invalid
/// UTF-8 replaced by U+FFFD, so the output is always valid JSON. ascii (Python's json.dumps
/// default, ensure_ascii) also escapes every code point from U+007F up; otherwise UTF-8 is kept.
inline void append_quoted(std::string& out, std::string_view s, bool ascii = false) {
  out.push_back('"');
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80) {
      const utf8::decoded d = utf8::decode(s, i);
      if (ascii)
        append_u_escape(out, d.cp);  // U+FFFD when invalid
      else if (d.valid)
        out.append(s.data() + i, d.length);
      else
        utf8::append(out, utf8::replacement_character);
      i += d.length;
      continue;
    }
    switch (b) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (b < 0x20 || (ascii && b == 0x7F))
          append_u_escape(out, b);
        else
          out.push_back(static_cast<char>(b));
    }
    ++i;
  }
  out.push_back('"');
}

}  // namespace detail::json
TFM_END_NAMESPACE
