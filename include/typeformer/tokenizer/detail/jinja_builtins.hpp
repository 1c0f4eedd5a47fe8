// typeformer/tokenizer/detail/jinja_builtins.hpp
//
// WHAT THIS REPRESENTS
//   Python semantics the Jinja evaluator needs that do not depend on the evaluator itself:
//   str methods on code points (strip, split, replace, startswith, title, capitalize, ...),
//   int/float arithmetic with Python's floor division and modulo, checked 64-bit integers,
//   indexing and slicing, iteration, `in`, and the render-time error with a position.
//
// LIMITS
//   upper()/lower()/title()/capitalize() map ASCII letters only; other characters are left
//   unchanged (Python maps every cased Unicode letter).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/jinja_lexer.hpp"
#include "typeformer/tokenizer/detail/jinja_value.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace jinja::detail {

/// The position of the construct being evaluated, for render-time messages.
struct render_position {
  int line = 0, col = 0;
};
inline render_position& current_position() noexcept {
  static thread_local render_position p;
  return p;
}

/// Throws value_error "jinja template: <pieces> at line L, column C".
template <class... P>
[[noreturn]] void render_fail(const P&... pieces) {
  const render_position& p = current_position();
  std::string m = message("jinja template: ", pieces...);
  if (p.line > 0) m += " at " + where(p.line, p.col);
  raise(errc::value, m);
}

// ---- strings -----------------------------------------------------------------------------

inline bool is_ascii_upper(char32_t c) noexcept { return c >= 'A' && c <= 'Z'; }
inline bool is_ascii_lower(char32_t c) noexcept { return c >= 'a' && c <= 'z'; }
inline char32_t to_upper(char32_t c) noexcept { return is_ascii_lower(c) ? c - 32 : c; }
inline char32_t to_lower(char32_t c) noexcept { return is_ascii_upper(c) ? c + 32 : c; }

inline std::string upper(std::string_view s) {
  std::string o(s);
  for (char& c : o)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return o;
}
inline std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return o;
}

/// str.capitalize(): first character upper case, the rest lower case.
inline std::string capitalize(std::string_view s) {
  std::u32string u = to_u32(s);
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? to_upper(u[i]) : to_lower(u[i]);
  return to_utf8(u);
}

/// str.title(): upper case after an uncased character, lower case after a cased one.
inline std::string title_method(std::string_view s) {
  std::u32string u = to_u32(s);
  bool prev_cased = false;
  for (char32_t& c : u) {
    const bool cased = is_ascii_upper(c) || is_ascii_lower(c);
    c = cased ? (prev_cased ? to_lower(c) : to_upper(c)) : c;
    prev_cased = cased;
  }
  return to_utf8(u);
}

/// Jinja's `title` filter: words split by runs of [-\s({[<]; first character upper, rest lower.
inline std::string title_filter(std::string_view s) {
  std::u32string u = to_u32(s);
  bool start = true;
  for (char32_t& c : u) {
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_py_space(c);
    if (sep) {
      start = true;
      continue;
    }
    c = start ? to_upper(c) : to_lower(c);
    start = false;
  }
  return to_utf8(u);
}

/// str.strip/lstrip/rstrip with chars=None (whitespace) or a set of characters.
inline std::string strip(std::string_view s, const value* chars, bool left, bool right) {
  const std::u32string u = to_u32(s);
  std::u32string set;
  const bool ws = !chars || chars->is_none();
  if (!ws) {
    if (!chars->is_string()) render_fail("strip arg must be None or str");
    set = to_u32(chars->as_string());
  }
  auto strip_it = [&](char32_t c) {
    return ws ? is_py_space(c) : set.find(c) != std::u32string::npos;
  };
  std::size_t b = 0, e = u.size();
  if (left)
    while (b < e && strip_it(u[b])) ++b;
  if (right)
    while (e > b && strip_it(u[e - 1])) --e;
  return to_utf8(std::u32string_view(u).substr(b, e - b));
}

/// str.split(sep=None, maxsplit=-1).
inline list_type split(std::string_view s, const value& sep, std::int64_t maxsplit) {
  list_type out;
  if (sep.is_none() || sep.is_undefined()) {
    const std::u32string u = to_u32(s);
    std::size_t i = 0;
    while (true) {
      while (i < u.size() && is_py_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<std::int64_t>(out.size()) == maxsplit) {
        out.emplace_back(to_utf8(std::u32string_view(u).substr(i)));  // trailing space kept
        break;
      }
      std::size_t j = i;
      while (j < u.size() && !is_py_space(u[j])) ++j;
      out.emplace_back(to_utf8(std::u32string_view(u).substr(i, j - i)));
      i = j;
    }
    return out;
  }
  if (!sep.is_string()) render_fail("must be str or None, not ", type_name(sep));
  const std::string& p = sep.as_string();
  if (p.empty()) render_fail("empty separator");
  std::size_t i = 0;
  while (maxsplit < 0 || static_cast<std::int64_t>(out.size()) < maxsplit) {
    const std::size_t j = s.find(p, i);
    if (j == std::string_view::npos) break;
    out.emplace_back(std::string(s.substr(i, j - i)));
    i = j + p.size();
  }
  out.emplace_back(std::string(s.substr(i)));
  return out;
}

/// str.replace(old, new, count=-1); an empty `old` inserts `new` between characters.
inline std::string replace(std::string_view s, std::string_view from, std::string_view to,
                           std::int64_t count, std::size_t max_bytes) {
  std::string out;
  auto room = [&](std::size_t more) {
    if (out.size() + more > max_bytes)
      render_fail("replace() result exceeds the string size limit");
  };
  if (from.empty()) {
    std::int64_t n = 0;
    for (const utf8::decoded& d : utf8::code_points(s)) {
      if (count < 0 || n < count) room(to.size()), out += to, ++n;
      utf8::append(out, d.cp);
    }
    if (count < 0 || n < count) room(to.size()), out += to;
    return out;
  }
  std::size_t i = 0;
  std::int64_t n = 0;
  while (count < 0 || n < count) {
    const std::size_t j = s.find(from, i);
    if (j == std::string_view::npos) break;
    room(j - i + to.size());
    out.append(s.substr(i, j - i));
    out += to;
    i = j + from.size();
    ++n;
  }
  out.append(s.substr(i));
  return out;
}

/// str.splitlines() (the separators Python recognizes).
inline std::vector<std::string> splitlines(std::string_view s) {
  std::vector<std::string> out;
  const std::u32string u = to_u32(s);
  std::size_t b = 0;
  for (std::size_t i = 0; i < u.size(); ++i) {
    const char32_t c = u[i];
    const bool nl = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                    c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!nl) continue;
    out.push_back(to_utf8(std::u32string_view(u).substr(b, i - b)));
    if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') ++i;
    b = i + 1;
  }
  if (b < u.size()) out.push_back(to_utf8(std::u32string_view(u).substr(b)));
  return out;
}

/// HTML escaping of markupsafe.escape.
inline std::string html_escape(std::string_view s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&#34;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o.push_back(c);
    }
  }
  return o;
}

// ---- numbers -----------------------------------------------------------------------------

inline std::int64_t checked(bool overflow, const std::int64_t& r, const char* op) {
  if (overflow) render_fail("integer overflow in '", op, "' (Python integers are unbounded)");
  return r;
}

[[noreturn]] inline void bad_operands(const char* op, const value& a, const value& b) {
  render_fail("unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b),
              "'");
}

inline std::int64_t py_floordiv(std::int64_t a, std::int64_t b) {
  if (b == 0) render_fail("integer division or modulo by zero");
  if (a == std::numeric_limits<std::int64_t>::min() && b == -1)
    render_fail("integer overflow in '//' (Python integers are unbounded)");
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
inline std::int64_t py_mod(std::int64_t a, std::int64_t b) {
  if (b == 0) render_fail("integer division or modulo by zero");
  if (b == -1) return 0;
  std::int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
inline double py_fmod(double a, double b) {
  if (b == 0.0) render_fail("float modulo");
  double r = std::fmod(a, b);
  if (r != 0.0 && ((r < 0) != (b < 0))) r += b;
  if (r == 0.0) r = std::copysign(0.0, b);
  return r;
}
inline double py_ffloordiv(double a, double b) {
  if (b == 0.0) render_fail("float floor division by zero");
  const double m = std::fmod(a, b);
  double div = (a - m) / b;
  if (m != 0.0 && ((b < 0) != (m < 0))) div -= 1.0;
  if (div == 0.0) return std::copysign(0.0, a / b);
  const double f = std::floor(div);
  return (div - f > 0.5) ? f + 1.0 : f;
}

inline value int_pow(std::int64_t a, std::int64_t b) {
  if (b < 0) {
    if (a == 0) render_fail("0.0 cannot be raised to a negative power");
    return value(std::pow(static_cast<double>(a), static_cast<double>(b)));
  }
  std::int64_t r = 1, base = a;
  while (b > 0) {
    if (b & 1) r = checked(__builtin_mul_overflow(r, base, &r), r, "**");
    b >>= 1;
    if (b > 0) base = checked(__builtin_mul_overflow(base, base, &base), base, "**");
  }
  return value(r);
}

/// Python index normalization; returns false when out of range.
inline bool py_index(std::int64_t i, std::size_t n, std::size_t& out) noexcept {
  const auto sn = static_cast<std::int64_t>(n);
  if (i < 0) i += sn;
  if (i < 0 || i >= sn) return false;
  out = static_cast<std::size_t>(i);
  return true;
}

/// The positions selected by a Python slice [start:stop:step] of a length-n sequence.
inline std::vector<std::size_t> slice_positions(const value& start, const value& stop,
                                                const value& step, std::size_t n) {
  auto get = [](const value& v, const char* what) -> std::optional<std::int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_integral()) render_fail("slice ", what, " must be an integer or None");
    return v.as_int();
  };
  const std::int64_t len = static_cast<std::int64_t>(n);
  const std::int64_t st = get(step, "step").value_or(1);
  if (st == 0) render_fail("slice step cannot be zero");
  auto clamp = [&](std::optional<std::int64_t> v, std::int64_t dflt) {
    if (!v) return dflt;
    std::int64_t x = *v;
    if (x < 0) x += len;
    if (st > 0) return x < 0 ? 0 : (x > len ? len : x);
    return x < 0 ? -1 : (x >= len ? len - 1 : x);
  };
  const std::int64_t b = clamp(get(start, "start"), st > 0 ? 0 : len - 1);
  const std::int64_t e = clamp(get(stop, "stop"), st > 0 ? len : -1);
  std::vector<std::size_t> out;
  for (std::int64_t i = b; st > 0 ? i < e : i > e; i += st)
    out.push_back(static_cast<std::size_t>(i));
  return out;
}

/// for x in v: list/tuple items, the characters of a str, the keys of a dict, nothing for
/// undefined.
inline list_type iterate(const value& v) {
  switch (v.type()) {
    case value::kind::list:
    case value::kind::tuple:
      return v.items();
    case value::kind::string: {
      list_type out;
      const std::string& s = v.as_string();
      std::size_t i = 0;
      while (i < s.size()) {
        const utf8::decoded d = utf8::decode(s, i);
        out.emplace_back(s.substr(i, d.length));
        i += d.length;
      }
      return out;
    }
    case value::kind::dict: {
      list_type out;
      for (const auto& kv : v.entries()) out.push_back(kv.first);
      return out;
    }
    case value::kind::undefined:
      return {};
    default:
      render_fail("'", type_name(v), "' object is not iterable");
  }
}

/// Python `needle in haystack`.
inline bool contains(const value& hay, const value& needle) {
  switch (hay.type()) {
    case value::kind::string:
      if (!needle.is_string())
        render_fail("'in <string>' requires string as left operand, not ", type_name(needle));
      return hay.as_string().find(needle.as_string()) != std::string::npos;
    case value::kind::list:
    case value::kind::tuple:
      for (const value& x : hay.items())
        if (equal(x, needle)) return true;
      return false;
    case value::kind::dict:
      return hay.find(needle) != nullptr;
    case value::kind::undefined:
      return false;
    default:
      render_fail("argument of type '", type_name(hay), "' is not iterable");
  }
}

/// Python len().
inline std::int64_t length(const value& v) {
  switch (v.type()) {
    case value::kind::string:
      return static_cast<std::int64_t>(utf8::count(v.as_string()));
    case value::kind::list:
    case value::kind::tuple:
      return static_cast<std::int64_t>(v.items().size());
    case value::kind::dict:
      return static_cast<std::int64_t>(v.entries().size());
    case value::kind::undefined:
      return 0;
    default:
      render_fail("object of type '", type_name(v), "' has no len()");
  }
}

}  // namespace jinja::detail
TFM_END_NAMESPACE
