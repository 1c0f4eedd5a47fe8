// typeformer/tokenizer/detail/jinja_eval.hpp
//
// WHAT THIS REPRESENTS
//   The tree-walking evaluator of the Jinja subset: statements, expressions, Jinja's scoping
//   (a for loop body gets a fresh scope on every iteration, so `set` inside it is invisible after
//   the loop and in the next iteration; `if` makes no scope; namespace() objects carry state out
//   of loops), undefined values, filters, tests, the sandbox-safe methods of str and dict, and
//   the globals range, namespace, dict, raise_exception and strftime_now.
//
// CONTRACTS
//   - Work is bounded: every statement and expression costs one step (limits::max_steps),
//     macro calls nest at most limits::max_call_depth deep, output and strings are capped at
//     limits::max_output_bytes / max_string_bytes, lists at limits::max_items. Exceeding a
//     bound is a tfm::value_error, so a hostile template cannot hang or exhaust memory.
//   - raise_exception(msg) throws tfm::value_error whose what() is exactly msg.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/jinja_builtins.hpp"
#include "typeformer/tokenizer/detail/jinja_parser.hpp"
#include "typeformer/tokenizer/detail/jinja_value.hpp"

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace jinja {

/// Bounds on the work one template may do (see the file comment).
struct limits {
  std::size_t max_template_bytes = std::size_t{4} << 20;
  int max_nesting = 200;
  std::uint64_t max_steps = 20'000'000;
  int max_call_depth = 64;
  int max_eval_depth = 1000;  ///< statements and expressions being evaluated inside each other
  std::size_t max_output_bytes = std::size_t{16} << 20;
  std::size_t max_string_bytes = std::size_t{16} << 20;
  std::size_t max_items = 1'000'000;
};

namespace detail {

struct callable {
  enum class type : std::uint8_t { builtin, method, macro, caller } t = type::builtin;
  std::string name;
  value self;                     // method: the bound object
  const stmt* def = nullptr;      // macro definition, or the call block of a caller
  struct scope* where = nullptr;  // caller: the scope of the call block
};

struct namespace_object {
  dict_type attrs;
};

struct loop_state {
  std::int64_t index0 = 0, length = 0;
  value prev, next;
};

struct scope {
  scope* parent = nullptr;
  std::vector<std::pair<std::string, value>> vars;

  const value* lookup(std::string_view n) const noexcept {
    for (const scope* s = this; s; s = s->parent)
      for (auto it = s->vars.rbegin(); it != s->vars.rend(); ++it)
        if (it->first == n) return &it->second;
    return nullptr;
  }
  void set(std::string_view n, value v) {
    for (auto& [k, x] : vars)
      if (k == n) {
        x = std::move(v);
        return;
      }
    vars.emplace_back(std::string(n), std::move(v));
  }
};

inline value make_callable(callable c) {
  return value::make(value::kind::callable, std::make_shared<callable>(std::move(c)));
}
inline value builtin(std::string name) {
  callable c;
  c.name = std::move(name);
  return make_callable(std::move(c));
}

/// Positional and keyword arguments of a call.
struct call_args {
  list_type pos;
  std::vector<std::pair<std::string, value>> kw;
};

/// Binds arguments to parameter names as Python does; missing ones are std::nullopt.
inline std::vector<std::optional<value>> bind(const call_args& a,
                                              std::initializer_list<std::string_view> names,
                                              std::string_view fn) {
  std::vector<std::optional<value>> out(names.size());
  if (a.pos.size() > names.size())
    render_fail(fn, "() takes at most ", names.size(), " argument(s) (", a.pos.size(), " given)");
  for (std::size_t i = 0; i < a.pos.size(); ++i) out[i] = a.pos[i];
  for (const auto& [k, v] : a.kw) {
    std::size_t i = 0;
    for (std::string_view n : names) {
      if (n == k) break;
      ++i;
    }
    if (i == names.size()) render_fail(fn, "() got an unexpected keyword argument '", k, "'");
    if (out[i]) render_fail(fn, "() got multiple values for argument '", k, "'");
    out[i] = v;
  }
  return out;
}

inline std::int64_t int_arg(const std::optional<value>& v, std::int64_t dflt, const char* what) {
  if (!v || v->is_none()) return dflt;
  if (!v->is_integral()) render_fail(what, " must be an integer, not ", type_name(*v));
  return v->as_int();
}
inline std::string str_arg(const std::optional<value>& v, const char* what) {
  if (!v || !v->is_string()) render_fail(what, " must be a string");
  return v->as_string();
}

class evaluator {
 public:
  using strftime_fn = std::function<std::string(std::string_view)>;

  evaluator(const limits& lim, strftime_fn now) : lim_(lim), strftime_(std::move(now)) {}

  /// Renders `body` with `globals` as the outermost scope.
  std::string render(const body_t& body, scope& globals) {
    current_position() = {};
    scope top{&globals, {}};
    top_ = &top;
    std::string out;
    exec(body, top, out);
    current_position() = {};
    return out;
  }

 private:
  enum class flow : std::uint8_t { normal, brk, cont };

  void step(int line, int col) {
    current_position() = {line, col};
    if (++steps_ > lim_.max_steps)
      render_fail("evaluation exceeds ", lim_.max_steps, " steps (limits::max_steps)");
  }
  void append(std::string& out, std::string_view s) {
    if (out.size() + s.size() > lim_.max_output_bytes)
      render_fail("output exceeds ", lim_.max_output_bytes, " bytes (limits::max_output_bytes)");
    out.append(s);
  }
  value checked_string(std::string s) const {
    if (s.size() > lim_.max_string_bytes)
      render_fail("a string exceeds ", lim_.max_string_bytes, " bytes (limits::max_string_bytes)");
    return value(std::move(s));
  }
  value checked_list(list_type l, bool tuple = false) const {
    if (l.size() > lim_.max_items)
      render_fail("a list exceeds ", lim_.max_items, " items (limits::max_items)");
    return tuple ? value::tuple(std::move(l)) : value(std::move(l));
  }

  // ---- statements ----------------------------------------------------------------------
  flow exec(const body_t& body, scope& s, std::string& out) {
    for (const stmt_ptr& st : body) {
      const flow f = exec_stmt(*st, s, out);
      if (f != flow::normal) return f;
    }
    return flow::normal;
  }

  /// Bounds the recursion of the evaluator (statement nesting times macro calls), so the stack
  /// stays small whatever the template.
  struct nest_guard {
    evaluator& ev;
    explicit nest_guard(evaluator& e) : ev(e) {
      if (++ev.nest_ > ev.lim_.max_eval_depth)
        render_fail("evaluation nested deeper than ", ev.lim_.max_eval_depth,
                    " levels (limits::max_eval_depth)");
    }
    ~nest_guard() { --ev.nest_; }
  };

  flow exec_stmt(const stmt& st, scope& s, std::string& out) {
    nest_guard g(*this);
    step(st.line, st.col);
    switch (st.kind) {
      case sk::text:
        append(out, st.text);
        return flow::normal;
      case sk::output: {
        const value v = eval(*st.value, s);
        step(st.line, st.col);
        append(out, to_str(v));
        return flow::normal;
      }
      case sk::if_:
        for (const auto& [c, b] : st.branches)
          if (!c || truthy(eval(*c, s))) return exec(b, s, out);
        return flow::normal;
      case sk::for_:
        exec_for(st, s, out);
        return flow::normal;
      case sk::set:
        exec_set(st, s);
        return flow::normal;
      case sk::set_block: {
        scope inner{&s, {}};
        std::string text;
        exec(st.body, inner, text);
        s.set(st.targets[0], checked_string(std::move(text)));
        return flow::normal;
      }
      case sk::macro: {
        callable c;
        c.t = callable::type::macro;
        c.name = st.text;
        c.def = &st;
        s.set(st.text, make_callable(std::move(c)));
        return flow::normal;
      }
      case sk::call_block:
        append(out, to_str(call_block(st, s)));
        return flow::normal;
      case sk::break_:
        return flow::brk;
      case sk::continue_:
        return flow::cont;
      case sk::block:
        return exec_block(st, s, out);
    }
    return flow::normal;
  }

  flow exec_block(const stmt& st, scope& s, std::string& out) {
    if (!st.scoped) return exec(st.body, s, out);
    scope inner{&s, {}};
    for (const auto& [n, e] : st.assigns) inner.set(n, eval(*e, s));
    exec(st.body, inner, out);
    return flow::normal;
  }

  void assign_targets(scope& s, const std::vector<std::string>& targets, const value& v) {
    if (targets.size() == 1) {
      s.set(targets[0], v);
      return;
    }
    const list_type items = iterate(v);
    if (items.size() != targets.size())
      render_fail(items.size() < targets.size() ? "not enough" : "too many",
                  " values to unpack (expected ", targets.size(), ", got ", items.size(), ")");
    for (std::size_t i = 0; i < targets.size(); ++i) s.set(targets[i], items[i]);
  }

  void exec_for(const stmt& st, scope& s, std::string& out) {
    const value seq = eval(*st.value, s);
    list_type items = iterate(seq);
    if (st.cond) {
      list_type kept;
      for (const value& x : items) {
        scope probe{&s, {}};
        assign_targets(probe, st.targets, x);
        if (truthy(eval(*st.cond, probe))) kept.push_back(x);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      scope inner{&s, {}};
      exec(st.else_body, inner, out);
      return;
    }
    auto state = std::make_shared<loop_state>();
    state->length = static_cast<std::int64_t>(items.size());
    const value loop_value = value::make(value::kind::loop, state);
    for (std::size_t i = 0; i < items.size(); ++i) {
      step(st.line, st.col);
      state->index0 = static_cast<std::int64_t>(i);
      state->prev = i > 0 ? items[i - 1] : value::undefined("loop.previtem");
      state->next = i + 1 < items.size() ? items[i + 1] : value::undefined("loop.nextitem");
      scope iter{&s, {}};
      iter.set("loop", loop_value);
      assign_targets(iter, st.targets, items[i]);
      if (exec(st.body, iter, out) == flow::brk) break;
    }
  }

  void exec_set(const stmt& st, scope& s) {
    value v = eval(*st.value, s);
    if (st.text.empty()) {
      assign_targets(s, st.targets, v);
      return;
    }
    const value* ns = s.lookup(st.targets[0]);
    if (!ns || ns->type() != value::kind::namespace_object)
      render_fail("cannot assign attribute on non-namespace object");
    auto& attrs = ns->object_as<namespace_object>()->attrs;
    for (auto& [k, x] : attrs)
      if (k.is_string() && k.as_string() == st.text) {
        x = std::move(v);
        return;
      }
    attrs.emplace_back(value(st.text), std::move(v));
  }

  // ---- expressions ---------------------------------------------------------------------
  value eval(const expr& e, scope& s) {
    nest_guard g(*this);
    step(e.line, e.col);
    switch (e.kind) {
      case ek::literal:
        return e.lit;
      case ek::name: {
        const value* v = s.lookup(e.name);
        return v ? *v : value::undefined(e.name);
      }
      case ek::list:
      case ek::tuple: {
        list_type l;
        for (const expr_ptr& a : e.args) l.push_back(eval(*a, s));
        return checked_list(std::move(l), e.kind == ek::tuple);
      }
      case ek::dict:
        return eval_dict(e, s);
      case ek::attr:
        return get_attr(eval(*e.args[0], s), e.name);
      case ek::item: {
        const value obj = eval(*e.args[0], s);
        return get_item(obj, eval(*e.args[1], s));
      }
      case ek::slice:
        return eval_slice(e, s);
      case ek::call:
        return eval_call(e, s);
      case ek::filter:
        return eval_filter(e, s);
      case ek::test:
        return value(eval_test(e, s));
      case ek::not_:
        return value(!truthy(eval(*e.args[0], s)));
      case ek::neg:
      case ek::pos:
        return unary(e.kind == ek::neg, eval(*e.args[0], s));
      case ek::binary: {
        const value l = eval(*e.args[0], s);
        return binary(e.name, l, eval(*e.args[1], s));
      }
      case ek::and_: {
        value l = eval(*e.args[0], s);
        return truthy(l) ? eval(*e.args[1], s) : l;
      }
      case ek::or_: {
        value l = eval(*e.args[0], s);
        return truthy(l) ? l : eval(*e.args[1], s);
      }
      case ek::compare:
        return value(eval_compare(e, s));
      case ek::cond:
        if (truthy(eval(*e.args[0], s))) return eval(*e.args[1], s);
        return e.args[2] ? eval(*e.args[2], s) : value::undefined();
    }
    return {};
  }

  value eval_dict(const expr& e, scope& s) {
    dict_type d;
    for (std::size_t i = 0; i + 1 < e.args.size(); i += 2) {
      value k = eval(*e.args[i], s);
      value v = eval(*e.args[i + 1], s);
      if (!k.is_string() && !k.is_number() && !k.is_none() && k.type() != value::kind::tuple)
        render_fail("unhashable type: '", type_name(k), "'");
      bool replaced = false;
      for (auto& [dk, dv] : d)
        if (equal(dk, k)) dv = v, replaced = true;
      if (!replaced) d.emplace_back(std::move(k), std::move(v));
    }
    return value(std::move(d));
  }

  value eval_slice(const expr& e, scope& s) {
    const value obj = eval(*e.args[0], s);
    value part[3];
    for (int i = 0; i < 3; ++i)
      if (e.args[static_cast<std::size_t>(i) + 1])
        part[i] = eval(*e.args[static_cast<std::size_t>(i) + 1], s);
    if (obj.is_undefined()) undefined_error(obj);
    if (obj.is_string()) {
      const std::u32string u = to_u32(obj.as_string());
      std::u32string r;
      for (std::size_t i : slice_positions(part[0], part[1], part[2], u.size())) r.push_back(u[i]);
      return value(to_utf8(r));
    }
    if (obj.is_sequence()) {
      list_type r;
      for (std::size_t i : slice_positions(part[0], part[1], part[2], obj.items().size()))
        r.push_back(obj.items()[i]);
      return checked_list(std::move(r), obj.type() == value::kind::tuple);
    }
    return value::undefined();
  }

  bool eval_compare(const expr& e, scope& s) {
    value l = eval(*e.args[0], s);
    for (std::size_t i = 0; i < e.ops.size(); ++i) {
      value r = eval(*e.args[i + 1], s);
      const std::string& op = e.ops[i];
      bool ok;
      if (op == "==") {
        ok = equal(l, r);
      } else if (op == "!=") {
        ok = !equal(l, r);
      } else if (op == "<") {
        ok = ordered(l, r, "<") && less(l, r);
      } else if (op == "<=") {
        ok = ordered(l, r, "<=") && !less(r, l);
      } else if (op == ">") {
        ok = ordered(l, r, ">") && less(r, l);
      } else if (op == ">=") {
        ok = ordered(l, r, ">=") && !less(l, r);
      } else if (op == "in") {
        ok = contains(r, l);
      } else {
        ok = !contains(r, l);
      }
      if (!ok) return false;
      l = std::move(r);
    }
    return true;
  }

  static bool ordered(const value& a, const value& b, const char* op) {
    if (a.is_undefined() || b.is_undefined()) undefined_error(a.is_undefined() ? a : b);
    if ((a.is_number() && b.is_number()) || (a.is_string() && b.is_string()) ||
        (a.type() == b.type() && a.is_sequence()))
      return true;
    render_fail("'", op, "' not supported between instances of '", type_name(a), "' and '",
                type_name(b), "'");
  }

  [[noreturn]] static void undefined_error(const value& v) {
    if (v.undefined_hint().empty()) render_fail("undefined value used");
    render_fail("'", v.undefined_hint(), "' is undefined");
  }

  value unary(bool neg, const value& v) {
    if (v.is_undefined()) undefined_error(v);
    if (v.is_integral()) {
      if (!neg) return value(v.as_int());
      return value(
          checked(v.as_int() == std::numeric_limits<std::int64_t>::min(), -v.as_int(), "-"));
    }
    if (v.type() == value::kind::floating) return value(neg ? -v.as_double() : v.as_double());
    render_fail("bad operand type for unary ", neg ? "-" : "+", ": '", type_name(v), "'");
  }

  value binary(const std::string& op, const value& a, const value& b) {
    if (op == "~") {
      std::string r = to_str(a);
      r += to_str(b);
      return checked_string(std::move(r));
    }
    if (a.is_undefined()) undefined_error(a);
    if (b.is_undefined()) undefined_error(b);
    if (op == "+") return add(a, b);
    if (op == "*") return mul(a, b);
    if (!a.is_number() || !b.is_number()) {
      if (op == "%" && a.is_string())
        render_fail("printf-style string formatting with '%' is not supported");
      bad_operands(op.c_str(), a, b);
    }
    const bool ints = a.is_integral() && b.is_integral();
    const std::int64_t x = a.as_int(), y = b.as_int();
    std::int64_t r = 0;
    if (op == "-") {
      if (ints) return value(checked(__builtin_sub_overflow(x, y, &r), r, "-"));
      return value(a.as_double() - b.as_double());
    }
    if (op == "/") {
      if (b.as_double() == 0.0) render_fail("division by zero");
      return value(a.as_double() / b.as_double());
    }
    if (op == "//")
      return ints ? value(py_floordiv(x, y)) : value(py_ffloordiv(a.as_double(), b.as_double()));
    if (op == "%") return ints ? value(py_mod(x, y)) : value(py_fmod(a.as_double(), b.as_double()));
    if (ints) return int_pow(x, y);
    return value(std::pow(a.as_double(), b.as_double()));
  }

  value add(const value& a, const value& b) {
    if (a.is_number() && b.is_number()) {
      std::int64_t r = 0;
      if (a.is_integral() && b.is_integral())
        return value(checked(__builtin_add_overflow(a.as_int(), b.as_int(), &r), r, "+"));
      return value(a.as_double() + b.as_double());
    }
    if (a.is_string() && b.is_string()) return checked_string(a.as_string() + b.as_string());
    if (a.is_sequence() && a.type() == b.type()) {
      list_type l = a.items();
      l.insert(l.end(), b.items().begin(), b.items().end());
      return checked_list(std::move(l), a.type() == value::kind::tuple);
    }
    bad_operands("+", a, b);
  }

  value mul(const value& a, const value& b) {
    if (a.is_number() && b.is_number()) {
      std::int64_t r = 0;
      if (a.is_integral() && b.is_integral())
        return value(checked(__builtin_mul_overflow(a.as_int(), b.as_int(), &r), r, "*"));
      return value(a.as_double() * b.as_double());
    }
    const value& seq = a.is_integral() ? b : a;
    const value& n = a.is_integral() ? a : b;
    if (!n.is_integral() || !(seq.is_string() || seq.is_sequence())) bad_operands("*", a, b);
    const std::int64_t k = n.as_int() < 0 ? 0 : n.as_int();
    if (seq.is_string()) {
      const std::size_t len = seq.as_string().size();
      if (len && static_cast<std::uint64_t>(k) > lim_.max_string_bytes / len)
        render_fail("a string exceeds ", lim_.max_string_bytes,
                    " bytes (limits::max_string_bytes)");
      std::string r;
      for (std::int64_t i = 0; i < k; ++i) r += seq.as_string();
      return value(std::move(r));
    }
    const std::size_t len = seq.items().size();
    if (len && static_cast<std::uint64_t>(k) > lim_.max_items / len)
      render_fail("a list exceeds ", lim_.max_items, " items (limits::max_items)");
    list_type r;
    for (std::int64_t i = 0; i < k; ++i) r.insert(r.end(), seq.items().begin(), seq.items().end());
    return checked_list(std::move(r), seq.type() == value::kind::tuple);
  }

  // ---- attributes and items --------------------------------------------------------------
  static bool is_str_method(std::string_view n) noexcept {
    for (std::string_view m : {"strip", "lstrip", "rstrip", "split", "upper", "lower", "title",
                               "capitalize", "startswith", "endswith", "replace", "find", "count",
                               "join", "splitlines", "format", "isdigit", "isspace"})
      if (n == m) return true;
    return false;
  }
  static bool is_dict_method(std::string_view n) noexcept {
    for (std::string_view m : {"items", "keys", "values", "get", "copy", "pop", "popitem", "update",
                               "setdefault", "clear", "fromkeys"})
      if (n == m) return true;
    return false;
  }
  static bool is_list_method(std::string_view n) noexcept {
    for (std::string_view m : {"append", "extend", "insert", "pop", "remove", "reverse", "sort",
                               "clear", "copy", "index", "count"})
      if (n == m) return true;
    return false;
  }

  static value method(const value& self, std::string_view n) {
    callable c;
    c.t = callable::type::method;
    c.name = std::string(n);
    c.self = self;
    return make_callable(std::move(c));
  }

  /// Jinja's getattr: the attribute, else the item, else undefined.
  value get_attr(const value& obj, const std::string& n) {
    switch (obj.type()) {
      case value::kind::undefined:
        undefined_error(obj);
      case value::kind::dict:
        if (is_dict_method(n)) return method(obj, n);
        if (const value* v = obj.find(std::string_view(n))) return *v;
        return value::undefined(n);
      case value::kind::string:
        return is_str_method(n) ? method(obj, n) : value::undefined(n);
      case value::kind::list:
      case value::kind::tuple:
        return is_list_method(n) ? method(obj, n) : value::undefined(n);
      case value::kind::namespace_object:
        for (const auto& [k, v] : obj.object_as<namespace_object>()->attrs)
          if (k.is_string() && k.as_string() == n) return v;
        return value::undefined(n);
      case value::kind::loop:
        return loop_attr(obj, n);
      default:
        return value::undefined(n);
    }
  }

  static value loop_attr(const value& obj, std::string_view n) {
    const loop_state& l = *obj.object_as<loop_state>();
    if (n == "index0") return value(l.index0);
    if (n == "index") return value(l.index0 + 1);
    if (n == "revindex") return value(l.length - l.index0);
    if (n == "revindex0") return value(l.length - l.index0 - 1);
    if (n == "first") return value(l.index0 == 0);
    if (n == "last") return value(l.index0 + 1 == l.length);
    if (n == "length") return value(l.length);
    if (n == "previtem") return l.prev;
    if (n == "nextitem") return l.next;
    if (n == "depth") return value(1);
    if (n == "depth0") return value(0);
    if (n == "cycle") return method(obj, n);
    if (n == "changed") render_fail("loop.changed() is not supported");
    return value::undefined(std::string(n));
  }

  /// Jinja's getitem: the item, else (for a str key) the attribute, else undefined.
  value get_item(const value& obj, const value& key) {
    if (obj.is_undefined()) undefined_error(obj);
    if (obj.is_dict()) {
      if (const value* v = obj.find(key)) return *v;
    } else if ((obj.is_sequence() || obj.is_string()) && key.is_integral()) {
      std::size_t i = 0;
      if (obj.is_string()) {
        const std::u32string u = to_u32(obj.as_string());
        if (py_index(key.as_int(), u.size(), i)) return value(to_utf8(u.substr(i, 1)));
      } else if (py_index(key.as_int(), obj.items().size(), i)) {
        return obj.items()[i];
      }
      return value::undefined();
    }
    if (key.is_string()) return get_attr(obj, key.as_string());
    return value::undefined();
  }

  // ---- calls ---------------------------------------------------------------------------
  call_args eval_args(const expr& e, std::size_t first, scope& s) {
    call_args a;
    for (std::size_t i = first; i < e.args.size(); ++i) a.pos.push_back(eval(*e.args[i], s));
    for (const auto& [k, x] : e.kwargs) a.kw.emplace_back(k, eval(*x, s));
    return a;
  }

  value eval_call(const expr& e, scope& s) {
    const value f = eval(*e.args[0], s);
    call_args a = eval_args(e, 1, s);
    step(e.line, e.col);
    return call(f, a);
  }

  value call(const value& f, const call_args& a, const value* caller = nullptr) {
    if (f.is_undefined()) undefined_error(f);
    if (f.type() != value::kind::callable)
      render_fail("'", type_name(f), "' object is not callable");
    const callable& c = *f.object_as<callable>();
    switch (c.t) {
      case callable::type::builtin:
        return call_builtin(c.name, a);
      case callable::type::method:
        return call_method(c.self, c.name, a);
      case callable::type::macro:
        return call_macro(c, a, caller);
      case callable::type::caller:
        return call_caller(c, a);
    }
    return {};
  }

  struct depth_guard {
    evaluator& ev;
    explicit depth_guard(evaluator& e) : ev(e) {
      if (++ev.call_depth_ > ev.lim_.max_call_depth)
        render_fail("macro calls nest deeper than ", ev.lim_.max_call_depth,
                    " (limits::max_call_depth)");
    }
    ~depth_guard() { --ev.call_depth_; }
  };

  value call_macro(const callable& c, const call_args& a, const value* caller) {
    depth_guard g(*this);
    const stmt& m = *c.def;
    if (a.pos.size() > m.targets.size())
      render_fail("macro '", m.text, "' takes not more than ", m.targets.size(), " argument(s)");
    scope ms{top_, {}};
    std::vector<bool> given(m.targets.size(), false);
    for (std::size_t i = 0; i < a.pos.size(); ++i) ms.set(m.targets[i], a.pos[i]), given[i] = true;
    for (const auto& [k, v] : a.kw) {
      std::size_t i = 0;
      while (i < m.targets.size() && m.targets[i] != k) ++i;
      if (i == m.targets.size())
        render_fail("macro '", m.text, "' takes no keyword argument '", k, "'");
      ms.set(k, v);
      given[i] = true;
    }
    for (std::size_t i = 0; i < m.targets.size(); ++i)
      if (!given[i])
        ms.set(m.targets[i],
               m.defaults[i] ? eval(*m.defaults[i], ms) : value::undefined(m.targets[i]));
    if (caller) ms.set("caller", *caller);
    std::string out;
    exec(m.body, ms, out);
    return checked_string(std::move(out));
  }

  value call_block(const stmt& st, scope& s) {
    const expr& call_expr = *st.value;
    const value f = eval(*call_expr.args[0], s);
    call_args a = eval_args(call_expr, 1, s);
    callable c;
    c.t = callable::type::caller;
    c.name = "caller";
    c.def = &st;
    c.where = &s;
    const value caller = make_callable(std::move(c));
    if (f.type() != value::kind::callable || f.object_as<callable>()->t != callable::type::macro)
      render_fail("a call block needs a macro");
    return call(f, a, &caller);
  }

  value call_caller(const callable& c, const call_args& a) {
    depth_guard g(*this);
    const stmt& st = *c.def;
    if (a.pos.size() > st.targets.size())
      render_fail("caller() takes not more than ", st.targets.size(), " argument(s)");
    scope cs{c.where, {}};
    for (std::size_t i = 0; i < st.targets.size(); ++i)
      cs.set(st.targets[i], i < a.pos.size() ? a.pos[i]
                            : st.defaults[i] ? eval(*st.defaults[i], cs)
                                             : value::undefined(st.targets[i]));
    std::string out;
    exec(st.body, cs, out);
    return checked_string(std::move(out));
  }

  value call_builtin(const std::string& n, const call_args& a) {
    if (n == "range") return builtin_range(a);
    if (n == "namespace" || n == "dict") {
      dict_type d;
      if (a.pos.size() > 1) render_fail(n, "() takes at most 1 positional argument");
      if (!a.pos.empty()) {
        if (!a.pos[0].is_dict()) render_fail(n, "() positional argument must be a dict");
        d = a.pos[0].entries();
      }
      for (const auto& [k, v] : a.kw) d.emplace_back(value(k), v);
      if (n == "dict") return value(std::move(d));
      auto ns = std::make_shared<namespace_object>();
      ns->attrs = std::move(d);
      return value::make(value::kind::namespace_object, ns);
    }
    if (n == "raise_exception") {
      const auto p = bind(a, {"message"}, n);
      raise(errc::value, p[0] ? to_str(*p[0]) : std::string("raise_exception() called"));
    }
    if (n == "strftime_now") {
      const auto p = bind(a, {"format"}, n);
      return value(strftime_(str_arg(p[0], "strftime_now() format")));
    }
    render_fail("unknown function '", n, "'");
  }

  value builtin_range(const call_args& a) {
    if (!a.kw.empty() || a.pos.empty() || a.pos.size() > 3)
      render_fail("range() takes 1 to 3 integer arguments");
    std::int64_t v[3] = {0, 0, 1};
    for (std::size_t i = 0; i < a.pos.size(); ++i)
      if (!a.pos[i].is_integral())
        render_fail("range() arguments must be integers, not ", type_name(a.pos[i]));
    if (a.pos.size() == 1) {
      v[1] = a.pos[0].as_int();
    } else {
      for (std::size_t i = 0; i < a.pos.size(); ++i) v[i] = a.pos[i].as_int();
    }
    if (v[2] == 0) render_fail("range() arg 3 must not be zero");
    list_type out;
    for (std::int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
      if (out.size() >= 100000)
        render_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
      out.emplace_back(i);
    }
    return value(std::move(out));
  }

  // ---- methods -------------------------------------------------------------------------
  value call_method(const value& self, const std::string& n, const call_args& a) {
    if (self.type() == value::kind::loop) {
      if (!a.kw.empty() || a.pos.empty()) render_fail("loop.cycle() needs at least one argument");
      const auto i = static_cast<std::size_t>(self.object_as<loop_state>()->index0);
      return a.pos[i % a.pos.size()];
    }
    if (self.is_string()) return str_method(self.as_string(), n, a);
    if (self.is_dict()) {
      if (n == "items" || n == "keys" || n == "values") {
        bind(a, {}, n);
        list_type out;
        for (const auto& [k, v] : self.entries())
          out.push_back(n == "items" ? value::tuple({k, v}) : n == "keys" ? k : v);
        return value(std::move(out));
      }
      if (n == "get") {
        const auto p = bind(a, {"key", "default"}, n);
        if (!p[0]) render_fail("get() expected at least 1 argument");
        const value* v = self.find(*p[0]);
        return v ? *v : (p[1] ? *p[1] : value(nullptr));
      }
      if (n == "copy") return self;
    }
    if (self.is_sequence() && (n == "index" || n == "count")) {
      const auto p = bind(a, {"value"}, n);
      if (!p[0]) render_fail(n, "() takes exactly one argument");
      std::int64_t k = 0;
      for (std::size_t i = 0; i < self.items().size(); ++i) {
        if (!equal(self.items()[i], *p[0])) continue;
        if (n == "index") return value(static_cast<std::int64_t>(i));
        ++k;
      }
      if (n == "index") render_fail("x not in list");
      return value(k);
    }
    render_fail("access to attribute '", n, "' of '", type_name(self), "' object is unsafe");
  }

  value str_method(const std::string& s, const std::string& n, const call_args& a) {
    if (n == "strip" || n == "lstrip" || n == "rstrip") {
      const auto p = bind(a, {"chars"}, n);
      return value(strip(s, p[0] ? &*p[0] : nullptr, n != "rstrip", n != "lstrip"));
    }
    if (n == "split") {
      const auto p = bind(a, {"sep", "maxsplit"}, n);
      return checked_list(split(s, p[0].value_or(value(nullptr)), int_arg(p[1], -1, "maxsplit")));
    }
    if (n == "upper" || n == "lower" || n == "title" || n == "capitalize") {
      bind(a, {}, n);
      return value(n == "upper"   ? upper(s)
                   : n == "lower" ? lower(s)
                   : n == "title" ? title_method(s)
                                  : capitalize(s));
    }
    if (n == "startswith" || n == "endswith") return value(starts_ends(s, n == "endswith", a));
    if (n == "replace") {
      const auto p = bind(a, {"old", "new", "count"}, n);
      return value(replace(s, str_arg(p[0], "replace() old"), str_arg(p[1], "replace() new"),
                           int_arg(p[2], -1, "count"), lim_.max_string_bytes));
    }
    if (n == "find" || n == "count") {
      const auto p = bind(a, {"sub"}, n);
      const std::string sub = str_arg(p[0], "sub");
      if (n == "find") {
        const std::size_t k = s.find(sub);
        return value(k == std::string::npos ? std::int64_t{-1}
                                            : static_cast<std::int64_t>(
                                                  utf8::count(std::string_view(s).substr(0, k))));
      }
      std::int64_t c = 0;
      if (sub.empty()) return value(static_cast<std::int64_t>(utf8::count(s)) + 1);
      for (std::size_t k = s.find(sub); k != std::string::npos; k = s.find(sub, k + sub.size()))
        ++c;
      return value(c);
    }
    if (n == "join") {
      const auto p = bind(a, {"iterable"}, n);
      std::string out;
      bool first = true;
      for (const value& x : iterate(p[0].value_or(value()))) {
        if (!x.is_string())
          render_fail("sequence item: expected str instance, ", type_name(x), " found");
        if (!first) out += s;
        first = false;
        out += x.as_string();
        if (out.size() > lim_.max_string_bytes) checked_string(std::move(out));
      }
      return value(std::move(out));
    }
    if (n == "splitlines") {
      list_type out;
      for (std::string& l : splitlines(s)) out.emplace_back(std::move(l));
      return value(std::move(out));
    }
    if (n == "isspace" || n == "isdigit") {
      if (s.empty()) return value(false);
      for (const utf8::decoded& d : utf8::code_points(s))
        if (n == "isspace" ? !is_py_space(d.cp) : !(d.cp >= '0' && d.cp <= '9'))
          return value(false);
      return value(true);
    }
    render_fail("str.", n, "() is not supported");
  }

  static bool starts_ends(const std::string& s, bool ends, const call_args& a) {
    const auto p = bind(a, {"prefix"}, ends ? "endswith" : "startswith");
    if (!p[0]) render_fail(ends ? "endswith" : "startswith", "() takes at least 1 argument");
    auto one = [&](const value& x) {
      if (!x.is_string()) render_fail("startswith/endswith argument must be str or a tuple of str");
      const std::string& t = x.as_string();
      if (t.size() > s.size()) return false;
      return ends ? s.compare(s.size() - t.size(), t.size(), t) == 0
                  : s.compare(0, t.size(), t) == 0;
    };
    if (p[0]->type() == value::kind::tuple) {
      for (const value& x : p[0]->items())
        if (one(x)) return true;
      return false;
    }
    return one(*p[0]);
  }

  // ---- filters -------------------------------------------------------------------------
  value eval_filter(const expr& e, scope& s) {
    value v = eval(*e.args[0], s);
    call_args a = eval_args(e, 1, s);
    step(e.line, e.col);
    return filter(e.name, v, a);
  }

  value filter(const std::string& n, const value& v, const call_args& a) {
    if (n == "trim") {
      const auto p = bind(a, {"chars"}, n);
      return value(strip(to_str(v), p[0] ? &*p[0] : nullptr, true, true));
    }
    if (n == "length" || n == "count") return value(length(v));
    if (n == "upper") return value(upper(to_str(v)));
    if (n == "lower") return value(lower(to_str(v)));
    if (n == "capitalize") return value(capitalize(to_str(v)));
    if (n == "title") return value(title_filter(to_str(v)));
    if (n == "string") return value(to_str(v));
    if (n == "safe") return v;
    if (n == "e" || n == "escape" || n == "forceescape") return value(html_escape(to_str(v)));
    if (n == "tojson") return tojson(v, a);
    if (n == "default" || n == "d") {
      const auto p = bind(a, {"default_value", "boolean"}, n);
      const bool use = v.is_undefined() || (p[1] && truthy(*p[1]) && !truthy(v));
      return use ? p[0].value_or(value(std::string())) : v;
    }
    if (n == "first" || n == "last") {
      const list_type l = iterate(v);
      if (l.empty()) return value::undefined();
      return n == "first" ? l.front() : l.back();
    }
    if (n == "list") return checked_list(iterate(v));
    if (n == "join") return join(v, a);
    if (n == "replace") {
      const auto p = bind(a, {"old", "new", "count"}, n);
      if (!p[0] || !p[1]) render_fail("replace() needs old and new");
      return value(replace(to_str(v), to_str(*p[0]), to_str(*p[1]), int_arg(p[2], -1, "count"),
                           lim_.max_string_bytes));
    }
    if (n == "items") {
      if (v.is_undefined()) return value(list_type{});
      if (!v.is_dict()) render_fail("Can only get item pairs from a mapping.");
      list_type out;
      for (const auto& [k, x] : v.entries()) out.push_back(value::tuple({k, x}));
      return value(std::move(out));
    }
    if (n == "selectattr" || n == "rejectattr" || n == "select" || n == "reject")
      return select(n, v, a);
    if (n == "map") return map(v, a);
    if (n == "reverse") {
      if (v.is_string()) {
        std::u32string u = to_u32(v.as_string());
        return value(to_utf8(std::u32string(u.rbegin(), u.rend())));
      }
      list_type l = iterate(v);
      return value(list_type(l.rbegin(), l.rend()));
    }
    if (n == "int" || n == "float" || n == "abs") return number_filter(n, v, a);
    if (n == "indent") return indent(v, a);
    render_fail("no filter named '", n, "' in this Jinja subset");
  }

  value tojson(const value& v, const call_args& a) {
    const auto p = bind(a, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson");
    json_style st;
    st.ensure_ascii = p[0] && truthy(*p[0]);
    if (p[1] && !p[1]->is_none()) {
      st.indent = static_cast<int>(int_arg(p[1], 0, "indent"));
      if (st.indent < 0) st.indent = 0;
      if (st.indent > 64) render_fail("tojson indent above 64 is not supported");
      st.item_sep = ",";
    }
    if (p[2] && !p[2]->is_none()) {
      if (!p[2]->is_sequence() || p[2]->items().size() != 2 || !p[2]->items()[0].is_string() ||
          !p[2]->items()[1].is_string())
        render_fail("tojson separators must be a pair of strings");
      st.item_sep = p[2]->items()[0].as_string();
      st.key_sep = p[2]->items()[1].as_string();
    }
    st.sort_keys = p[3] && truthy(*p[3]);
    std::string out;
    json_dump(out, v, st, 0, 0);
    return checked_string(std::move(out));
  }

  value join(const value& v, const call_args& a) {
    const auto p = bind(a, {"d", "attribute"}, "join");
    const std::string sep = p[0] ? to_str(*p[0]) : std::string();
    std::string out;
    bool first = true;
    for (const value& x : iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += to_str(p[1] && !p[1]->is_none() ? attr_path(x, *p[1]) : x);
      if (out.size() > lim_.max_string_bytes) checked_string(std::move(out));
    }
    return value(std::move(out));
  }

  /// Jinja's make_attrgetter: "a.b.0" looked up with getitem, part by part.
  value attr_path(const value& x, const value& path) {
    if (path.is_integral()) return get_item(x, path);
    value cur = x;
    for (const value& part : split(to_str(path), value("."), -1)) {
      const std::string& t = part.as_string();
      const bool digits = !t.empty() && t.find_first_not_of("0123456789") == std::string::npos;
      cur = get_item(
          cur, digits && t.size() < 18 ? value(static_cast<std::int64_t>(std::stoll(t))) : part);
    }
    return cur;
  }

  value select(const std::string& n, const value& v, const call_args& a) {
    const bool by_attr = n == "selectattr" || n == "rejectattr";
    const bool keep = n == "select" || n == "selectattr";
    std::size_t k = 0;
    value attr;
    if (by_attr) {
      if (a.pos.empty()) render_fail(n, "() needs an attribute name");
      attr = a.pos[k++];
    }
    std::string test;
    if (k < a.pos.size()) test = str_arg(a.pos[k++], "test name");
    call_args rest;
    rest.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(k), a.pos.end());
    rest.kw = a.kw;
    list_type out;
    for (const value& x : iterate(v)) {
      const value item = by_attr ? attr_path(x, attr) : x;
      const bool ok = test.empty() ? truthy(item) : run_test(test, item, rest);
      if (ok == keep) out.push_back(x);
    }
    return value(std::move(out));
  }

  value map(const value& v, const call_args& a) {
    list_type out;
    if (a.pos.empty()) {
      const auto p = bind(a, {"attribute", "default"}, "map");
      if (!p[0]) render_fail("map() needs a filter name or attribute=");
      for (const value& x : iterate(v)) {
        value r = attr_path(x, *p[0]);
        out.push_back(r.is_undefined() && p[1] ? *p[1] : r);
      }
      return value(std::move(out));
    }
    const std::string f = str_arg(a.pos[0], "map() filter name");
    call_args rest;
    rest.pos.assign(a.pos.begin() + 1, a.pos.end());
    rest.kw = a.kw;
    for (const value& x : iterate(v)) out.push_back(filter(f, x, rest));
    return value(std::move(out));
  }

  value number_filter(const std::string& n, const value& v, const call_args& a) {
    if (n == "abs") {
      if (v.is_integral()) return unary(v.as_int() < 0, value(v.as_int()));
      if (v.type() == value::kind::floating) return value(std::fabs(v.as_double()));
      render_fail("bad operand type for abs(): '", type_name(v), "'");
    }
    const auto p = bind(a, {"default", "base"}, n);
    if (n == "float") {
      if (v.is_number()) return value(v.as_double());
      if (v.is_string()) {
        const std::string t = strip(v.as_string(), nullptr, true, true);
        double d = 0;
        const auto r = std::from_chars(t.data(), t.data() + t.size(), d);
        if (!t.empty() && r.ec == std::errc() && r.ptr == t.data() + t.size()) return value(d);
      }
      return p[0].value_or(value(0.0));
    }
    if (v.is_integral()) return value(v.as_int());
    if (v.type() == value::kind::floating && std::isfinite(v.as_double()) &&
        std::fabs(v.as_double()) < 9.2e18)
      return value(static_cast<std::int64_t>(v.as_double()));
    if (v.is_string()) {
      const std::string t = strip(v.as_string(), nullptr, true, true);
      std::int64_t i = 0;
      const char* b = t.data() + (!t.empty() && t[0] == '+');
      const auto r = std::from_chars(b, t.data() + t.size(), i);
      if (!t.empty() && r.ec == std::errc() && r.ptr == t.data() + t.size()) return value(i);
    }
    return p[0].value_or(value(0));
  }

  value indent(const value& v, const call_args& a) {
    const auto p = bind(a, {"width", "first", "blank"}, "indent");
    std::string pad =
        p[0] && p[0]->is_string()
            ? p[0]->as_string()
            : std::string(static_cast<std::size_t>(std::max<std::int64_t>(
                              0, std::min<std::int64_t>(int_arg(p[0], 4, "width"), 1024))),
                          ' ');
    const std::vector<std::string> lines = splitlines(to_str(v) + "\n");
    std::string out;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n";
      if (i && (!lines[i].empty() || (p[2] && truthy(*p[2])))) out += pad;
      out += lines[i];
      if (out.size() > lim_.max_string_bytes) checked_string(std::move(out));
    }
    if (p[1] && truthy(*p[1])) out = pad + out;
    return value(std::move(out));
  }

  // ---- tests ---------------------------------------------------------------------------
  bool eval_test(const expr& e, scope& s) {
    value v = eval(*e.args[0], s);
    call_args a = eval_args(e, 1, s);
    step(e.line, e.col);
    return run_test(e.name, v, a) != e.negated;
  }

  bool run_test(const std::string& n, const value& v, const call_args& a) {
    using K = value::kind;
    if (n == "defined") return !v.is_undefined();
    if (n == "undefined") return v.is_undefined();
    if (n == "none") return v.is_none();
    if (n == "boolean") return v.is_bool();
    if (n == "true") return v.is_bool() && v.as_bool();
    if (n == "false") return v.is_bool() && !v.as_bool();
    if (n == "integer") return v.is_int();
    if (n == "float") return v.type() == K::floating;
    if (n == "number") return v.is_number();
    if (n == "string") return v.is_string();
    if (n == "mapping") return v.is_dict();
    if (n == "iterable") return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
    if (n == "sequence") return v.is_string() || v.is_sequence() || v.is_dict() || v.is_undefined();
    if (n == "callable") return v.type() == K::callable || v.type() == K::loop;
    if (n == "escaped") return false;
    if (n == "lower" || n == "upper") return case_test(n == "lower", v);
    if (n == "odd" || n == "even" || n == "divisibleby") return parity_test(n, v, a);
    const value* other = a.pos.empty() ? nullptr : &a.pos[0];
    auto need = [&]() -> const value& {
      if (!other) render_fail("test '", n, "' needs an argument");
      return *other;
    };
    if (n == "sameas")
      return need().type() == v.type() &&
             (v.is_none() || v.is_bool() ? equal(v, need())
                                         : v.object() && v.object() == need().object());
    if (n == "eq" || n == "equalto" || n == "==") return equal(v, need());
    if (n == "ne" || n == "!=") return !equal(v, need());
    if (n == "lt" || n == "lessthan" || n == "<") return ordered(v, need(), "<") && less(v, need());
    if (n == "le" || n == "<=") return ordered(v, need(), "<=") && !less(need(), v);
    if (n == "gt" || n == "greaterthan" || n == ">")
      return ordered(v, need(), ">") && less(need(), v);
    if (n == "ge" || n == ">=") return ordered(v, need(), ">=") && !less(v, need());
    if (n == "in") return contains(need(), v);
    render_fail("no test named '", n, "' in this Jinja subset");
  }

  static bool case_test(bool want_lower, const value& v) {
    const std::string t = to_str(v);
    bool cased = false;
    for (char c : t) {
      if (want_lower ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z')) return false;
      cased = cased || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    }
    return cased;
  }

  static bool parity_test(const std::string& n, const value& v, const call_args& a) {
    if (!v.is_integral()) render_fail("test '", n, "' needs an integer");
    if (n == "odd") return py_mod(v.as_int(), 2) == 1;
    if (n == "even") return py_mod(v.as_int(), 2) == 0;
    if (a.pos.empty() || !a.pos[0].is_integral()) render_fail("divisibleby needs an integer");
    return py_mod(v.as_int(), a.pos[0].as_int()) == 0;
  }

  const limits& lim_;
  strftime_fn strftime_;
  scope* top_ = nullptr;
  std::uint64_t steps_ = 0;
  int call_depth_ = 0;
  int nest_ = 0;
};

}  // namespace detail
}  // namespace jinja
TFM_END_NAMESPACE
