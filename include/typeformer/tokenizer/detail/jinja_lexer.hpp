// typeformer/tokenizer/detail/jinja_lexer.hpp
//
// WHAT THIS REPRESENTS
//   The lexer of the Jinja subset, reproducing jinja2 3.1's lexer (jinja2/lexer.py) for an
//   Environment(trim_blocks=True, lstrip_blocks=True) with the default delimiters:
//     - "\r\n" and "\r" become "\n", and one trailing newline of the template is dropped
//       (keep_trailing_newline=False);
//     - data runs to the earliest "{{", "{%" or "{#";
//     - "{%-", "{{-", "{#-" strip all whitespace before the tag (Python str.rstrip);
//       "-%}", "-}}", "-#}" strip all whitespace after it;
//     - lstrip_blocks: spaces/tabs (any str.isspace() character) between the start of a line and
//       a "{%" or "{#" tag are removed, unless the tag is "{%+" / "{#+";
//     - trim_blocks: one "\n" right after "%}" or "#}" is removed, unless the tag ends "+%}";
//     - inside tags: whitespace, floats, integers, names, strings, operators; an end delimiter
//       only ends the tag while (), [] and {} are balanced (so "{{ '}}' }}" and
//       "{% set x = {'a': {'b': 1}} %}" lex as in jinja2);
//     - string literals are decoded as jinja2 does: the body is ASCII-escaped with
//       backslashreplace and decoded with Python's unicode-escape codec.
//     - {% raw %}...{% endraw %} yields its body as data.
//   Positions are 1-based line and byte column in the normalized template.
//
// CONTRACTS
//   - Every malformed input ends in tfm::parse_error naming the line and column.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/jinja_value.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace jinja::detail {

enum class tok : std::uint8_t {
  data,
  var_begin,
  var_end,
  block_begin,
  block_end,
  name,
  string,
  integer,
  floating,
  op,
  eof
};

struct token {
  tok type = tok::eof;
  std::string text;  ///< data, name, decoded string, operator, or number spelling
  std::int64_t integer = 0;
  double number = 0.0;
  int line = 1;
  int col = 1;
};

/// "line L, column C" for messages.
inline std::string where(int line, int col) {
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

class lexer {
 public:
  explicit lexer(std::string_view source) : src_(normalize(source)) {}

  std::vector<token> run() {
    while (pos_ < src_.size()) root_step();
    push(tok::eof, {}, pos_);
    return std::move(out_);
  }

 private:
  static std::string normalize(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\r') {
        out.push_back('\n');
        if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
      } else {
        out.push_back(s[i]);
      }
    }
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  [[noreturn]] void error(std::size_t at, std::string_view what) const {
    const auto [l, c] = line_col(at);
    fail(errc::parse, "jinja template: ", what, " at ", where(l, c));
  }

  std::pair<int, int> line_col(std::size_t at) const {
    // Positions are requested in increasing order, so continue from the last one.
    if (at < lc_pos_) lc_pos_ = 0, lc_line_ = 1, lc_start_ = 0;
    for (; lc_pos_ < at && lc_pos_ < src_.size(); ++lc_pos_)
      if (src_[lc_pos_] == '\n') ++lc_line_, lc_start_ = lc_pos_ + 1;
    return {lc_line_, static_cast<int>(at - lc_start_) + 1};
  }

  void push(tok t, std::string text, std::size_t at) {
    token k;
    k.type = t;
    k.text = std::move(text);
    const auto [l, c] = line_col(at);
    k.line = l;
    k.col = c;
    out_.push_back(std::move(k));
  }

  bool at(std::size_t p, std::string_view s) const noexcept {
    return src_.compare(p, s.size(), s) == 0;
  }

  /// Length of the run of str.isspace() characters starting at p.
  std::size_t space_run(std::size_t p) const noexcept {
    std::size_t q = p;
    while (q < src_.size()) {
      const utf8::decoded d = utf8::decode(src_, q);
      if (!d.valid || !is_py_space(d.cp)) break;
      q += d.length;
    }
    return q - p;
  }

  /// Strips trailing whitespace of text (Python rstrip).
  static std::string_view rstrip(std::string_view t) noexcept {
    while (!t.empty()) {
      std::size_t k = t.size() - 1;
      while (k > 0 && utf8::is_continuation(static_cast<unsigned char>(t[k]))) --k;
      const utf8::decoded d = utf8::decode(t, k);
      if (!d.valid || !is_py_space(d.cp)) break;
      t.remove_suffix(t.size() - k);
    }
    return t;
  }

  /// lstrip_blocks: text with the whitespace between its last line start and the tag removed.
  std::string_view lstrip_tag(std::string_view text) const noexcept {
    const std::size_t nl = text.rfind('\n');
    const std::size_t l = nl == std::string_view::npos ? 0 : nl + 1;
    if (l == 0 && !line_starting_) return text;
    const std::string_view tail = text.substr(l);
    if (tail.empty() || rstrip(tail).size() != 0) return text;
    return text.substr(0, l);
  }

  void root_step() {
    std::size_t p = pos_;
    while (p + 1 < src_.size() &&
           !(src_[p] == '{' && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')))
      ++p;
    if (p + 1 >= src_.size()) {  // the rest is data
      push(tok::data, std::string(src_.substr(pos_)), pos_);
      pos_ = src_.size();
      return;
    }
    const char kind = src_[p + 1];
    const char sign = p + 2 < src_.size() ? src_[p + 2] : '\0';
    std::string_view text = std::string_view(src_).substr(pos_, p - pos_);
    if (sign == '-') {
      text = rstrip(text);
    } else if (sign != '+' && kind != '{') {
      text = lstrip_tag(text);
    }
    if (!text.empty()) push(tok::data, std::string(text), pos_);
    const std::size_t body = p + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
    if (kind == '#') {
      comment(p, body);
    } else if (kind == '%' && raw_begin(p, body)) {
      // handled
    } else {
      tag(kind == '{', p, body);
    }
  }

  /// {# ... #}: (.*?)(\+#}|\-#}\s*|#}\n?)
  void comment(std::size_t open, std::size_t p) {
    for (; p + 1 < src_.size(); ++p) {
      if (src_[p] == '+' && at(p + 1, "#}")) return finish(p + 3);
      if (src_[p] == '-' && at(p + 1, "#}")) return finish(p + 3 + space_run(p + 3));
      if (at(p, "#}")) return finish(p + 2 + (at(p + 2, "\n") ? 1 : 0));
    }
    error(open, "missing end of comment tag");
  }

  void finish(std::size_t end) {
    line_starting_ = end > 0 && src_[end - 1] == '\n';
    pos_ = end;
  }

  /// {% raw %} ... {% endraw %}: the body is data.
  bool raw_begin(std::size_t open, std::size_t p) {
    std::size_t q = p + space_run(p);
    if (!at(q, "raw")) return false;
    q += 3;
    q += space_run(q);
    if (at(q, "-%}")) {
      q += 3;
      q += space_run(q);
    } else if (at(q, "%}")) {
      q += 2;
    } else {
      return false;
    }
    for (std::size_t s = q; s + 1 < src_.size(); ++s) {
      if (!at(s, "{%")) continue;
      const char sign = s + 2 < src_.size() ? src_[s + 2] : '\0';
      std::size_t e = s + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      e += space_run(e);
      if (!at(e, "endraw")) continue;
      e += 6;
      e += space_run(e);
      std::size_t end;
      if (at(e, "+%}")) {
        end = e + 3;
      } else if (at(e, "-%}")) {
        end = e + 3 + space_run(e + 3);
      } else if (at(e, "%}")) {
        end = e + 2 + (at(e + 2, "\n") ? 1 : 0);
      } else {
        continue;
      }
      std::string_view body = std::string_view(src_).substr(q, s - q);
      if (sign == '-') {
        body = rstrip(body);
      } else if (sign != '+') {
        line_starting_ = src_[q - 1] == '\n';
        body = lstrip_tag(body);
      }
      if (!body.empty()) push(tok::data, std::string(body), q);
      finish(end);
      return true;
    }
    error(open, "missing end of raw directive");
  }

  /// Inside {{ }} or {% %}: tokens up to the end delimiter.
  void tag(bool variable, std::size_t open, std::size_t p) {
    push(variable ? tok::var_begin : tok::block_begin, {}, open);
    std::string balance;
    while (true) {
      if (p >= src_.size())
        error(open, variable ? "unexpected end of template, expected '}}'"
                             : "unexpected end of template, expected '%}'");
      if (balance.empty()) {
        if (const std::size_t end = tag_end(variable, p)) {
          push(variable ? tok::var_end : tok::block_end, {}, p);
          finish(end);
          return;
        }
      }
      p = tag_token(p, balance);
    }
  }

  /// End of the closing delimiter starting at p, or 0.
  std::size_t tag_end(bool variable, std::size_t p) const noexcept {
    if (variable) {
      if (at(p, "-}}")) return p + 3 + space_run(p + 3);
      if (at(p, "}}")) return p + 2;
      return 0;
    }
    if (at(p, "+%}")) return p + 3;
    if (at(p, "-%}")) return p + 3 + space_run(p + 3);
    if (at(p, "%}")) return p + 2 + (at(p + 2, "\n") ? 1 : 0);
    return 0;
  }

  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
  static bool is_name_start(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }

  /// One token inside a tag; returns the position after it.
  std::size_t tag_token(std::size_t p, std::string& balance) {
    if (const std::size_t ws = space_run(p)) return p + ws;
    const char c = src_[p];
    if (is_digit(c)) return number(p);
    if (is_name_start(c)) {
      std::size_t q = p + 1;
      while (q < src_.size() && (is_name_start(src_[q]) || is_digit(src_[q]))) ++q;
      push(tok::name, std::string(src_.substr(p, q - p)), p);
      return q;
    }
    if (c == '\'' || c == '"') return string_literal(p);
    return operator_token(p, balance);
  }

  /// Digits with optional '_' separators ((\d+_)*\d+); returns the end or p.
  std::size_t digits(std::size_t p) const noexcept {
    std::size_t q = p;
    while (q < src_.size() && is_digit(src_[q])) {
      ++q;
      if (q + 1 < src_.size() && src_[q] == '_' && is_digit(src_[q + 1])) ++q;
    }
    return q;
  }

  /// float_re / integer_re of jinja2 at a digit; returns the end.
  std::size_t number(std::size_t p) {
    const bool float_ok = !(p > 0 && src_[p - 1] == '.');  // float_re's (?<!\.)
    std::size_t q = digits(p);
    bool is_float = false;
    if (float_ok && q + 1 < src_.size() && src_[q] == '.' && is_digit(src_[q + 1])) {
      q = digits(q + 1);
      is_float = true;
    }
    if (float_ok && q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
      std::size_t e = q + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && is_digit(src_[e])) {
        q = digits(e);
        is_float = true;
      }
    }
    std::string spelled;
    for (std::size_t i = p; i < q; ++i)
      if (src_[i] != '_') spelled.push_back(src_[i]);
    token k;
    const auto [l, c] = line_col(p);
    k.line = l;
    k.col = c;
    if (is_float) {
      k.type = tok::floating;
      const auto r = std::from_chars(spelled.data(), spelled.data() + spelled.size(), k.number);
      if (r.ec == std::errc::result_out_of_range)
        k.number = spelled.find_first_of("eE") != std::string::npos &&
                           spelled.find("e-") == std::string::npos &&
                           spelled.find("E-") == std::string::npos
                       ? HUGE_VAL
                       : 0.0;
    } else {
      // integer_re: [1-9](_?\d)* | 0(_?0)*  -- "012" lexes as 0 then 12, as in jinja2.
      if (src_[p] == '0') {
        q = p + 1;
        while (q < src_.size() &&
               (src_[q] == '0' || (src_[q] == '_' && q + 1 < src_.size() && src_[q + 1] == '0')))
          ++q;
        spelled = "0";
      }
      k.type = tok::integer;
      const auto r = std::from_chars(spelled.data(), spelled.data() + spelled.size(), k.integer);
      if (r.ec != std::errc()) error(p, "integer literal does not fit in 64 bits");
    }
    k.text = std::move(spelled);
    out_.push_back(std::move(k));
    return q;
  }

  std::size_t string_literal(std::size_t p) {
    const char q = src_[p];
    std::size_t e = p + 1;
    while (e < src_.size() && src_[e] != q) e += (src_[e] == '\\') ? 2 : 1;
    if (e >= src_.size())
      error(p, "unexpected char '" + std::string(1, q) + "' (unterminated string)");
    push(tok::string, decode_string(src_.substr(p + 1, e - p - 1), p), p);
    return e + 1;
  }

  /// body.encode("ascii", "backslashreplace").decode("unicode-escape"), as UTF-8.
  std::string decode_string(std::string_view body, std::size_t at) const {
    std::string ascii;  // step 1: backslashreplace
    for (const utf8::decoded& d : utf8::code_points(body)) {
      if (d.cp < 0x80) {
        ascii.push_back(static_cast<char>(d.cp));
      } else {
        ascii += d.cp < 0x100 ? "\\x" : d.cp < 0x10000 ? "\\u" : "\\U";
        append_hex(ascii, d.cp, d.cp < 0x100 ? 2 : d.cp < 0x10000 ? 4 : 8);
      }
    }
    std::string out;  // step 2: unicode-escape
    for (std::size_t i = 0; i < ascii.size(); ++i) {
      if (ascii[i] != '\\') {
        out.push_back(ascii[i]);
        continue;
      }
      if (i + 1 >= ascii.size())
        error(at, "string literal ends with a backslash (\\ at end of string)");
      i = unescape(ascii, i + 1, out, at);
    }
    return out;
  }

  /// Decodes the escape whose letter is at ascii[i]; returns the index of its last character.
  std::size_t unescape(std::string_view ascii, std::size_t i, std::string& out,
                       std::size_t at) const {
    const char c = ascii[i];
    switch (c) {
      case '\n':
        return i;  // line continuation
      case '\\':
      case '\'':
      case '"':
        out.push_back(c);
        return i;
      case 'a':
        out.push_back('\a');
        return i;
      case 'b':
        out.push_back('\b');
        return i;
      case 'f':
        out.push_back('\f');
        return i;
      case 'n':
        out.push_back('\n');
        return i;
      case 'r':
        out.push_back('\r');
        return i;
      case 't':
        out.push_back('\t');
        return i;
      case 'v':
        out.push_back('\v');
        return i;
      case 'x':
      case 'u':
      case 'U':
        return hex_escape(ascii, i, out, at);
      case 'N':
        error(at, "\\N{...} escapes in string literals are not supported");
      default:
        break;
    }
    if (c >= '0' && c <= '7') {
      char32_t v = 0;
      std::size_t k = i;
      for (; k < ascii.size() && k < i + 3 && ascii[k] >= '0' && ascii[k] <= '7'; ++k)
        v = v * 8 + static_cast<char32_t>(ascii[k] - '0');
      utf8::append(out, v);
      return k - 1;
    }
    out.push_back('\\');  // unknown escapes stay as written
    out.push_back(c);
    return i;
  }

  std::size_t hex_escape(std::string_view ascii, std::size_t i, std::string& out,
                         std::size_t at) const {
    const std::size_t n = ascii[i] == 'x' ? 2 : ascii[i] == 'u' ? 4 : 8;
    char32_t v = 0;
    for (std::size_t k = 1; k <= n; ++k) {
      const char h = i + k < ascii.size() ? ascii[i + k] : '\0';
      int dv = (h >= '0' && h <= '9')   ? h - '0'
               : (h >= 'a' && h <= 'f') ? h - 'a' + 10
               : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                        : -1;
      if (dv < 0)
        error(at, "truncated \\" + std::string(1, ascii[i]) + " escape in string literal");
      v = v * 16 + static_cast<char32_t>(dv);
    }
    if (v > utf8::max_code_point) error(at, "illegal Unicode character in string literal escape");
    if (v >= 0xD800 && v <= 0xDFFF)
      error(at, "a surrogate code point in a string literal escape is not supported");
    utf8::append(out, v);
    return i + n;
  }

  std::size_t operator_token(std::size_t p, std::string& balance) {
    static constexpr std::string_view two[] = {"**", "//", "==", "!=", ">=", "<="};
    for (std::string_view o : two)
      if (at(p, o)) {
        push(tok::op, std::string(o), p);
        return p + 2;
      }
    const char c = src_[p];
    static constexpr std::string_view one = "+-*/%~[](){}><=.:|,;";
    if (one.find(c) == std::string_view::npos) {
      const utf8::decoded d = utf8::decode(src_, p);
      std::string shown = d.valid ? std::string(src_.substr(p, d.length)) : "\\x??";
      error(p, "unexpected char '" + shown + "'");
    }
    if (c == '(' || c == '[' || c == '{') balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    if (c == ')' || c == ']' || c == '}') {
      if (balance.empty()) error(p, std::string("unexpected '") + c + "'");
      if (balance.back() != c)
        error(p, std::string("unexpected '") + c + "', expected '" + balance.back() + "'");
      balance.pop_back();
    }
    push(tok::op, std::string(1, c), p);
    return p + 1;
  }

  std::string src_;
  std::size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<token> out_;
  mutable std::size_t lc_pos_ = 0, lc_start_ = 0;
  mutable int lc_line_ = 1;
};

}  // namespace jinja::detail
TFM_END_NAMESPACE
