// typeformer/tokenizer/detail/jinja_value.hpp
//
// WHAT THIS REPRESENTS
//   The values of the Jinja subset interpreter (tokenizer/jinja.hpp) and the Python behaviour
//   they imitate: str() and repr() text, float repr (shortest round trip, Python's switch to
//   exponent notation below 1e-4 and from 1e16), json.dumps as transformers' `tojson` calls it,
//   truthiness, == and < across types, and str.isspace().
//
//   A value is one of: undefined (Jinja's default Undefined: prints as "", is false and empty,
//   fails on attribute access, arithmetic and calls), none, bool, int (int64; overflow is a
//   tfm::value_error where Python would grow the integer), float (double), str (UTF-8), list,
//   tuple, dict (insertion ordered, keys compared with Python ==), namespace (Jinja's
//   namespace(), the one mutable object), callable (a built-in function, a bound method or a
//   macro) and loop (the `loop` object of a for loop).
//
// CONTRACTS
//   - Lists, tuples and dicts are immutable and shared (copying a value is cheap), as the
//     ImmutableSandboxedEnvironment of transformers' apply_chat_template requires.
//   - Strings are valid UTF-8 (checked where text enters: the template and render inputs).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace jinja {

class value;
using list_type = std::vector<value>;
using dict_type = std::vector<std::pair<value, value>>;

namespace detail {
struct callable;
struct namespace_object;
struct loop_state;
}  // namespace detail

/// A Jinja value (see the file comment).
class value {
 public:
  enum class kind : std::uint8_t {
    undefined,
    none,
    boolean,
    integer,
    floating,
    string,
    list,
    tuple,
    dict,
    namespace_object,
    callable,
    loop
  };

  value() = default;  ///< undefined
  value(std::nullptr_t) : kind_(kind::none) {}
  template <class B>
  requires std::same_as<B, bool> value(B b) : kind_(kind::boolean), int_(b) {}
  value(int i) : kind_(kind::integer), int_(i) {}
  value(std::int64_t i) : kind_(kind::integer), int_(i) {}
  value(double d) : kind_(kind::floating), float_(d) {}
  value(std::string s) : kind_(kind::string), str_(std::move(s)) {}
  value(std::string_view s) : kind_(kind::string), str_(s) {}
  value(const char* s) : kind_(kind::string), str_(s) {}
  value(list_type items)
      : kind_(kind::list), list_(std::make_shared<list_type>(std::move(items))) {}
  value(dict_type items)
      : kind_(kind::dict), dict_(std::make_shared<dict_type>(std::move(items))) {}

  static value undefined(std::string hint = {}) {
    value v;
    v.str_ = std::move(hint);
    return v;
  }
  static value tuple(list_type items) {
    value v(std::move(items));
    v.kind_ = kind::tuple;
    return v;
  }
  static value make(kind k, std::shared_ptr<void> obj) {
    value v;
    v.kind_ = k;
    v.obj_ = std::move(obj);
    return v;
  }

  kind type() const noexcept { return kind_; }
  bool is_undefined() const noexcept { return kind_ == kind::undefined; }
  bool is_none() const noexcept { return kind_ == kind::none; }
  bool is_bool() const noexcept { return kind_ == kind::boolean; }
  bool is_int() const noexcept { return kind_ == kind::integer; }
  /// int or bool (Python's bool is an int).
  bool is_integral() const noexcept { return kind_ == kind::integer || kind_ == kind::boolean; }
  bool is_number() const noexcept { return is_integral() || kind_ == kind::floating; }
  bool is_string() const noexcept { return kind_ == kind::string; }
  bool is_sequence() const noexcept { return kind_ == kind::list || kind_ == kind::tuple; }
  bool is_dict() const noexcept { return kind_ == kind::dict; }

  bool as_bool() const noexcept { return int_ != 0; }
  std::int64_t as_int() const noexcept { return int_; }
  double as_double() const noexcept {
    return kind_ == kind::floating ? float_ : static_cast<double>(int_);
  }
  const std::string& as_string() const noexcept { return str_; }
  /// The name an undefined value was looked up by (for error messages).
  const std::string& undefined_hint() const noexcept { return str_; }
  const list_type& items() const noexcept { return list_ ? *list_ : empty_list(); }
  const dict_type& entries() const noexcept { return dict_ ? *dict_ : empty_dict(); }
  const std::shared_ptr<void>& object() const noexcept { return obj_; }
  template <class T>
  T* object_as() const noexcept {
    return static_cast<T*>(obj_.get());
  }

  /// The value stored under `key` (Python dict lookup), or nullptr.
  const value* find(const value& key) const noexcept;
  const value* find(std::string_view key) const noexcept;

 private:
  static const list_type& empty_list() noexcept {
    static const list_type e;
    return e;
  }
  static const dict_type& empty_dict() noexcept {
    static const dict_type e;
    return e;
  }

  kind kind_ = kind::undefined;
  std::int64_t int_ = 0;
  double float_ = 0.0;
  std::string str_;
  std::shared_ptr<const list_type> list_;
  std::shared_ptr<const dict_type> dict_;
  std::shared_ptr<void> obj_;
};

/// Builds a dict from string keys, in order.
inline value make_dict(std::vector<std::pair<std::string, value>> kv) {
  dict_type d;
  d.reserve(kv.size());
  for (auto& [k, v] : kv) d.emplace_back(value(std::move(k)), std::move(v));
  return value(std::move(d));
}

namespace detail {

/// The Python type name of a value, for messages ("int", "str", "list", ...).
inline const char* type_name(const value& v) noexcept {
  switch (v.type()) {
    case value::kind::undefined:
      return "Undefined";
    case value::kind::none:
      return "NoneType";
    case value::kind::boolean:
      return "bool";
    case value::kind::integer:
      return "int";
    case value::kind::floating:
      return "float";
    case value::kind::string:
      return "str";
    case value::kind::list:
      return "list";
    case value::kind::tuple:
      return "tuple";
    case value::kind::dict:
      return "dict";
    case value::kind::namespace_object:
      return "Namespace";
    case value::kind::callable:
      return "function";
    case value::kind::loop:
      return "LoopContext";
  }
  return "object";
}

/// Python's str.isspace() for one code point (bidirectional class WS, B or S, or category Zs).
constexpr bool is_py_space(char32_t c) noexcept {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

/// The code points of a (valid UTF-8) string.
inline std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (const utf8::decoded& d : utf8::code_points(s)) out.push_back(d.cp);
  return out;
}
inline std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8::append(out, c);
  return out;
}

/// Python float.__repr__: the shortest digits that round-trip, fixed notation for exponents in
/// [-4, 16), otherwise d.ddde+XX.
inline std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(r.ptr - buf));
  std::string out;
  if (sci.front() == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  const std::size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e))
    if (c != '.') digits.push_back(c);
  int exp = 0;
  std::from_chars(sci.data() + e + 1 + (sci[e + 1] == '+'), sci.data() + sci.size(), exp);
  if (exp < -4 || exp >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += exp < 0 ? "e-" : "e+";
    const int a = exp < 0 ? -exp : exp;
    if (a < 10) out.push_back('0');
    out += std::to_string(a);
  } else if (exp < 0) {
    out += "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
  } else {
    const auto ip = static_cast<std::size_t>(exp) + 1;
    if (digits.size() <= ip) {
      out += digits + std::string(ip - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, ip) + "." + digits.substr(ip);
    }
  }
  return out;
}

/// Python's str.isprintable() approximated without the full Unicode tables: control (Cc),
/// separators other than ' ' (Zs, Zl, Zp), surrogates and the common format characters (Cf) are
/// not printable. Unassigned code points (Cn) count as printable here.
constexpr bool is_py_printable(char32_t c) noexcept {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if (c != 0x20 && is_py_space(c)) return false;
  if ((c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) ||
      (c >= 0x2060 && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0xFEFF ||
      (c >= 0xFFF9 && c <= 0xFFFB) || c == 0x061C || c == 0x180E || (c >= 0xE000 && c <= 0xF8FF))
    return false;
  return true;
}

inline void append_hex(std::string& out, char32_t c, int width) {
  static constexpr char hex[] = "0123456789abcdef";
  for (int i = width - 1; i >= 0; --i) out.push_back(hex[(c >> (4 * i)) & 0xF]);
}

/// Python repr() of a str.
inline std::string string_repr(std::string_view s) {
  const bool dq = s.find('\'') != std::string_view::npos && s.find('"') == std::string_view::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (const utf8::decoded& d : utf8::code_points(s)) {
    const char32_t c = d.cp;
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!is_py_printable(c)) {
      out += c < 0x100 ? "\\x" : c < 0x10000 ? "\\u" : "\\U";
      append_hex(out, c, c < 0x100 ? 2 : c < 0x10000 ? 4 : 8);
    } else {
      utf8::append(out, c);
    }
  }
  out.push_back(q);
  return out;
}

inline void append_str(std::string& out, const value& v, bool repr);

/// Python str() (repr=false) or repr() (repr=true) of a value, as Jinja prints it.
inline std::string to_str(const value& v, bool repr = false) {
  std::string out;
  append_str(out, v, repr);
  return out;
}

inline void append_str(std::string& out, const value& v, bool repr) {
  switch (v.type()) {
    case value::kind::undefined:
      if (repr) fail(errc::value, "jinja: cannot print an undefined value inside a container");
      return;
    case value::kind::none:
      out += "None";
      return;
    case value::kind::boolean:
      out += v.as_bool() ? "True" : "False";
      return;
    case value::kind::integer:
      out += std::to_string(v.as_int());
      return;
    case value::kind::floating:
      out += float_repr(v.as_double());
      return;
    case value::kind::string:
      out += repr ? string_repr(v.as_string()) : v.as_string();
      return;
    case value::kind::list:
    case value::kind::tuple: {
      const bool t = v.type() == value::kind::tuple;
      out.push_back(t ? '(' : '[');
      const list_type& it = v.items();
      for (std::size_t i = 0; i < it.size(); ++i) {
        if (i) out += ", ";
        append_str(out, it[i], true);
      }
      if (t && it.size() == 1) out.push_back(',');
      out.push_back(t ? ')' : ']');
      return;
    }
    case value::kind::dict: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, x] : v.entries()) {
        if (!first) out += ", ";
        first = false;
        append_str(out, k, true);
        out += ": ";
        append_str(out, x, true);
      }
      out.push_back('}');
      return;
    }
    default:
      fail(errc::value, "jinja: cannot print a value of type ", type_name(v),
           " (its Python text names a memory address)");
  }
}

/// Python truthiness.
inline bool truthy(const value& v) noexcept {
  switch (v.type()) {
    case value::kind::undefined:
    case value::kind::none:
      return false;
    case value::kind::boolean:
    case value::kind::integer:
      return v.as_int() != 0;
    case value::kind::floating:
      return v.as_double() != 0.0;
    case value::kind::string:
      return !v.as_string().empty();
    case value::kind::list:
    case value::kind::tuple:
      return !v.items().empty();
    case value::kind::dict:
      return !v.entries().empty();
    default:
      return true;
  }
}

/// Python ==.
inline bool equal(const value& a, const value& b) noexcept {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case value::kind::undefined:
    case value::kind::none:
      return true;
    case value::kind::string:
      return a.as_string() == b.as_string();
    case value::kind::list:
    case value::kind::tuple: {
      const list_type &x = a.items(), &y = b.items();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (!equal(x[i], y[i])) return false;
      return true;
    }
    case value::kind::dict: {
      if (a.entries().size() != b.entries().size()) return false;
      for (const auto& [k, v] : a.entries()) {
        const value* o = b.find(k);
        if (!o || !equal(v, *o)) return false;
      }
      return true;
    }
    default:
      return a.object() == b.object();
  }
}

/// Python a < b; throws value_error for types Python cannot order.
inline bool less(const value& a, const value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 = cp order
  if (a.type() == b.type() && a.is_sequence()) {
    const list_type &x = a.items(), &y = b.items();
    for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equal(x[i], y[i])) return less(x[i], y[i]);
    return x.size() < y.size();
  }
  fail(errc::value, "jinja: '<' not supported between instances of '", type_name(a), "' and '",
       type_name(b), "'");
}

/// json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) as transformers' tojson.
struct json_style {
  int indent = -1;  ///< -1: None (one line)
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;
};

inline void json_string(std::string& out, std::string_view s, bool ascii) {
  ::tfm::detail::json::append_quoted(out, s, ascii);  // tojson: json.dumps' escaping
}

inline void json_newline(std::string& out, const json_style& st, int level) {
  if (st.indent < 0) return;
  out.push_back('\n');
  out.append(static_cast<std::size_t>(st.indent) * static_cast<std::size_t>(level), ' ');
}

inline void json_dump(std::string& out, const value& v, const json_style& st, int level, int depth);

inline void json_dump_dict(std::string& out, const value& v, const json_style& st, int level,
                           int depth) {
  std::vector<const std::pair<value, value>*> es;
  for (const auto& e : v.entries()) es.push_back(&e);
  if (es.empty()) {
    out += "{}";
    return;
  }
  for (const auto* e : es)
    if (!e->first.is_string() && !e->first.is_number() && !e->first.is_none())
      fail(errc::value, "jinja: tojson: keys must be str, int, float, bool or None, not ",
           type_name(e->first));
  if (st.sort_keys) {
    for (std::size_t i = 1; i < es.size(); ++i)  // insertion sort: stable, dicts are small
      for (std::size_t j = i; j > 0 && less(es[j]->first, es[j - 1]->first); --j)
        std::swap(es[j], es[j - 1]);
  }
  out.push_back('{');
  for (std::size_t i = 0; i < es.size(); ++i) {
    if (i) out += st.item_sep;
    json_newline(out, st, level + 1);
    const value& k = es[i]->first;
    if (k.is_string()) {
      json_string(out, k.as_string(), st.ensure_ascii);
    } else {  // json.dumps turns int/float/bool/None keys into strings
      std::string t;
      if (k.is_none()) {
        t = "null";
      } else if (k.is_bool()) {
        t = k.as_bool() ? "true" : "false";
      } else {
        json_dump(t, k, st, 0, depth + 1);
      }
      json_string(out, t, st.ensure_ascii);
    }
    out += st.key_sep;
    json_dump(out, es[i]->second, st, level + 1, depth + 1);
  }
  json_newline(out, st, level);
  out.push_back('}');
}

inline void json_dump(std::string& out, const value& v, const json_style& st, int level,
                      int depth) {
  if (depth > 128) fail(errc::value, "jinja: tojson: value nested deeper than 128 levels");
  switch (v.type()) {
    case value::kind::none:
      out += "null";
      return;
    case value::kind::boolean:
      out += v.as_bool() ? "true" : "false";
      return;
    case value::kind::integer:
      out += std::to_string(v.as_int());
      return;
    case value::kind::floating: {
      const double d = v.as_double();
      if (std::isnan(d)) {
        out += "NaN";
      } else if (std::isinf(d)) {
        out += d < 0 ? "-Infinity" : "Infinity";
      } else {
        out += float_repr(d);
      }
      return;
    }
    case value::kind::string:
      json_string(out, v.as_string(), st.ensure_ascii);
      return;
    case value::kind::list:
    case value::kind::tuple: {
      const list_type& it = v.items();
      if (it.empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (std::size_t i = 0; i < it.size(); ++i) {
        if (i) out += st.item_sep;
        json_newline(out, st, level + 1);
        json_dump(out, it[i], st, level + 1, depth + 1);
      }
      json_newline(out, st, level);
      out.push_back(']');
      return;
    }
    case value::kind::dict:
      json_dump_dict(out, v, st, level, depth);
      return;
    default:
      fail(errc::value, "jinja: tojson: Object of type ", type_name(v),
           " is not JSON serializable");
  }
}

}  // namespace detail

inline const value* value::find(const value& key) const noexcept {
  for (const auto& [k, v] : entries())
    if (detail::equal(k, key)) return &v;
  return nullptr;
}
inline const value* value::find(std::string_view key) const noexcept {
  for (const auto& [k, v] : entries())
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

}  // namespace jinja
TFM_END_NAMESPACE
