// typeformer/tokenizer/detail/jinja_parser.hpp
//
// WHAT THIS REPRESENTS
//   The syntax tree of the Jinja subset and its recursive-descent parser, following the grammar
//   and operator precedence of jinja2 3.1 (jinja2/parser.py):
//     expression := or ['if' or ['else' expression]]
//     or := and ('or' and)*          and := not ('and' not)*       not := 'not' not | compare
//     compare := math1 (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not' 'in') math1)*
//     math1 := concat (('+'|'-') concat)*      concat := math2 ('~' math2)*
//     math2 := pow (('*'|'/'|'//'|'%') pow)*   pow := unary ('**' unary)*   (left-associative)
//     unary := ('-'|'+') unary | primary postfix*, then filters '|f(args)', tests 'is [not] t'
//   Statements: if/elif/else, for (tuple targets, 'if' filter, else; no 'recursive'), set (names,
//   tuples, namespace attributes, block set), macro, call blocks, break/continue
//   (jinja2.ext.loopcontrols), generation/endgeneration (transformers' AssistantTracker),
//   with. Anything else (extends, include, import, filter blocks, ...) is a parse_error naming
//   the construct and its position.
//
// CONTRACTS
//   - Nesting of statements and expressions is bounded (limits::max_nesting); deeper templates
//     are refused with parse_error instead of exhausting the stack.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/jinja_lexer.hpp"
#include "typeformer/tokenizer/detail/jinja_value.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace jinja::detail {

enum class ek : std::uint8_t {
  literal,  // lit
  name,     // name
  list,     // args
  tuple,    // args
  dict,     // args: k0, v0, k1, v1, ...
  attr,     // args[0] . name
  item,     // args[0] [ args[1] ]
  slice,    // args[0] [ args[1] : args[2] : args[3] ] (null parts allowed)
  call,     // args[0] ( args[1..] , kwargs )
  filter,   // name, args[0] = operand (may be null for filter blocks), args[1..], kwargs
  test,     // name, args[0] = operand, args[1..], kwargs; negated
  not_,     // args[0]
  neg,      // args[0]
  pos,      // args[0]
  binary,   // name in + - * / // % ** ~ ; args[0], args[1]
  and_,     // args[0], args[1]
  or_,      // args[0], args[1]
  compare,  // args[0] (ops[i] args[i+1])*
  cond,     // args[1] if args[0] else args[2] (args[2] may be null)
};

struct expr;
using expr_ptr = std::unique_ptr<expr>;

struct expr {
  ek kind = ek::literal;
  int line = 0, col = 0;
  value lit;
  std::string name;
  std::vector<expr_ptr> args;
  std::vector<std::pair<std::string, expr_ptr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

enum class sk : std::uint8_t {
  text,
  output,
  if_,
  for_,
  set,
  set_block,
  macro,
  call_block,
  break_,
  continue_,
  block,  // generation / with: a body run in place (with: in a new scope)
};

struct stmt;
using stmt_ptr = std::unique_ptr<stmt>;
using body_t = std::vector<stmt_ptr>;

struct stmt {
  sk kind = sk::text;
  int line = 0, col = 0;
  std::string text;                                       // text; set: namespace attribute
  expr_ptr value;                                         // output, set value, for iterable, call
  expr_ptr cond;                                          // for's 'if' filter
  std::vector<std::pair<expr_ptr, body_t>> branches;      // if/elif/else (else: null condition)
  std::vector<std::string> targets;                       // for/set names; macro params
  std::vector<expr_ptr> defaults;                         // macro defaults (null: none)
  std::vector<std::pair<std::string, expr_ptr>> assigns;  // with
  bool scoped = false;                                    // block: new scope (with)
  body_t body, else_body;
};

/// Names of statements jinja2 knows but this subset refuses (for a clear message).
inline bool is_refused_statement(std::string_view n) noexcept {
  for (std::string_view r : {"extends", "include", "import", "from", "block", "filter",
                             "autoescape", "trans", "pluralize", "do", "debug"})
    if (n == r) return true;
  return false;
}

/// The filters and tests the evaluator implements; other names are refused at load, as
/// jinja2 refuses unknown filters and tests when it compiles a template.
inline bool is_known_filter(std::string_view n) noexcept {
  for (std::string_view f :
       {"trim",       "length",     "count",  "upper",  "lower",       "capitalize", "title",
        "string",     "safe",       "e",      "escape", "forceescape", "tojson",     "default",
        "d",          "first",      "last",   "list",   "join",        "replace",    "items",
        "selectattr", "rejectattr", "select", "reject", "map",         "reverse",    "int",
        "float",      "abs",        "indent"})
    if (n == f) return true;
  return false;
}
inline bool is_known_test(std::string_view n) noexcept {
  for (std::string_view t :
       {"defined", "undefined", "none",   "boolean", "true",        "false",       "integer",
        "float",   "number",    "string", "mapping", "iterable",    "sequence",    "callable",
        "escaped", "lower",     "upper",  "odd",     "even",        "divisibleby", "sameas",
        "eq",      "equalto",   "==",     "ne",      "!=",          "lt",          "lessthan",
        "<",       "le",        "<=",     "gt",      "greaterthan", ">",           "ge",
        ">=",      "in"})
    if (n == t) return true;
  return false;
}

class parser {
 public:
  parser(std::vector<token> toks, int max_nesting) : t_(std::move(toks)), max_(max_nesting) {}

  body_t parse_template() {
    body_t b = subparse({});
    if (cur().type != tok::eof) error_at(cur(), "unexpected token");
    return b;
  }

 private:
  // ---- token stream ----
  const token& cur() const noexcept { return t_[i_]; }
  const token& peek(std::size_t k = 1) const noexcept {
    return t_[i_ + k < t_.size() ? i_ + k : t_.size() - 1];
  }
  const token& next() noexcept {
    const token& k = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return k;
  }
  bool is_op(std::string_view o) const noexcept { return cur().type == tok::op && cur().text == o; }
  bool is_name(std::string_view n) const noexcept {
    return cur().type == tok::name && cur().text == n;
  }
  bool skip_op(std::string_view o) {
    if (!is_op(o)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }

  static std::string describe(const token& k) {
    switch (k.type) {
      case tok::eof:
        return "end of template";
      case tok::var_end:
        return "end of print statement";
      case tok::block_end:
        return "end of statement block";
      case tok::data:
        return "template data";
      case tok::string:
        return "string";
      case tok::var_begin:
        return "'{{'";
      case tok::block_begin:
        return "'{%'";
      default:
        return "'" + k.text + "'";
    }
  }

  [[noreturn]] void error_at(const token& k, std::string_view what) const {
    fail(errc::parse, "jinja template: ", what, " (got ", describe(k), ") at ",
         where(k.line, k.col));
  }
  void expect_op(std::string_view o) {
    if (!skip_op(o)) error_at(cur(), "expected '" + std::string(o) + "'");
  }
  std::string expect_name() {
    if (cur().type != tok::name) error_at(cur(), "expected a name");
    return next().text;
  }
  void expect(tok t, std::string_view what) {
    if (cur().type != t) error_at(cur(), "expected " + std::string(what));
    next();
  }

  struct depth_guard {
    parser& p;
    explicit depth_guard(parser& q) : p(q) {
      if (++p.depth_ > p.max_)
        p.error_at(p.cur(), "template nested deeper than " + std::to_string(p.max_) + " levels");
    }
    ~depth_guard() { --p.depth_; }
  };

  template <class T>
  std::unique_ptr<T> node(const token& at) {
    auto n = std::make_unique<T>();
    n->line = at.line;
    n->col = at.col;
    return n;
  }

  // ---- statements ----
  /// Parses until one of the end tags (a block name) is the next statement; leaves the stream
  /// on that name (after '{%').
  body_t subparse(std::initializer_list<std::string_view> ends) {
    depth_guard g(*this);
    body_t body;
    while (cur().type != tok::eof) {
      const token& k = cur();
      if (k.type == tok::data) {
        auto s = node<stmt>(k);
        s->kind = sk::text;
        s->text = next().text;
        body.push_back(std::move(s));
      } else if (k.type == tok::var_begin) {
        next();
        auto s = node<stmt>(k);
        s->kind = sk::output;
        s->value = parse_tuple(true);
        expect(tok::var_end, "end of print statement '}}'");
        body.push_back(std::move(s));
      } else if (k.type == tok::block_begin) {
        next();
        if (cur().type == tok::name)
          for (std::string_view e : ends)
            if (cur().text == e) return body;
        body.push_back(parse_statement());
      } else {
        error_at(k, "unexpected token");
      }
    }
    if (ends.size()) {
      std::string names;
      for (std::string_view e : ends)
        names += (names.empty() ? "'" : " or '") + std::string(e) + "'";
      error_at(cur(), "unexpected end of template; expected " + names);
    }
    return body;
  }

  stmt_ptr parse_statement() {
    const token& k = cur();
    if (k.type != tok::name) error_at(k, "tag name expected");
    const std::string& n = k.text;
    if (n == "if") return parse_if();
    if (n == "for") return parse_for();
    if (n == "set") return parse_set();
    if (n == "macro") return parse_macro();
    if (n == "call") return parse_call_block();
    if (n == "break" || n == "continue") {
      auto s = node<stmt>(next());
      s->kind = n == "break" ? sk::break_ : sk::continue_;
      if (loops_ == 0) error_at(k, "'" + n + "' outside of a for loop");
      expect(tok::block_end, "'%}'");
      return s;
    }
    if (n == "generation" || n == "with") return parse_scoped_block(n == "with");
    if (is_refused_statement(n))
      error_at(k, "the '" + n + "' statement is not supported by this Jinja subset");
    error_at(k, "unknown tag '" + n + "'");
  }

  void end_tag(std::string_view name) {
    if (!skip_name(name)) error_at(cur(), "expected '" + std::string(name) + "'");
    expect(tok::block_end, "'%}'");
  }

  stmt_ptr parse_if() {
    auto s = node<stmt>(next());
    s->kind = sk::if_;
    expr_ptr c = parse_tuple(false);
    expect(tok::block_end, "'%}'");
    while (true) {
      body_t b = subparse({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(c), std::move(b));
      if (skip_name("elif")) {
        c = parse_tuple(false);
        expect(tok::block_end, "'%}'");
        continue;
      }
      if (skip_name("else")) {
        expect(tok::block_end, "'%}'");
        s->branches.emplace_back(nullptr, subparse({"endif"}));
      }
      end_tag("endif");
      return s;
    }
  }

  void parse_targets(std::vector<std::string>& out, bool allow_parens) {
    const bool paren = allow_parens && skip_op("(");
    do {
      if (paren && is_op(")")) break;
      out.push_back(expect_name());
    } while (skip_op(","));
    if (paren) expect_op(")");
  }

  stmt_ptr parse_for() {
    auto s = node<stmt>(next());
    s->kind = sk::for_;
    parse_targets(s->targets, true);
    for (const std::string& t : s->targets)
      if (t == "loop") error_at(cur(), "cannot assign to special loop variable 'loop'");
    if (!skip_name("in")) error_at(cur(), "expected 'in'");
    s->value = parse_tuple(false, /*no_cond=*/true);
    if (skip_name("if")) s->cond = parse_expression();
    if (is_name("recursive")) error_at(cur(), "recursive for loops are not supported");
    expect(tok::block_end, "'%}'");
    ++loops_;
    s->body = subparse({"endfor", "else"});
    --loops_;
    if (skip_name("else")) {
      expect(tok::block_end, "'%}'");
      s->else_body = subparse({"endfor"});
    }
    end_tag("endfor");
    return s;
  }

  stmt_ptr parse_set() {
    auto s = node<stmt>(next());
    s->kind = sk::set;
    if (cur().type == tok::name && peek().type == tok::op && peek().text == "." &&
        peek(2).type == tok::name) {
      s->targets.push_back(next().text);
      next();
      s->text = next().text;  // namespace attribute
    } else {
      parse_targets(s->targets, true);
    }
    if (skip_op("=")) {
      s->value = parse_tuple(false);
      expect(tok::block_end, "'%}'");
      return s;
    }
    if (s->targets.size() != 1 || !s->text.empty() || is_op("|"))
      error_at(cur(), "expected '=' in set (filtered block set is not supported)");
    expect(tok::block_end, "'%}'");
    s->kind = sk::set_block;
    s->body = subparse({"endset"});
    end_tag("endset");
    return s;
  }

  void parse_signature(stmt& s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s.targets.empty()) expect_op(",");
      if (is_op(")")) break;
      s.targets.push_back(expect_name());
      s.defaults.push_back(skip_op("=") ? parse_expression() : nullptr);
      if (!s.defaults.back() && s.defaults.size() > 1 && s.defaults[s.defaults.size() - 2])
        error_at(cur(), "non-default argument follows default argument");
    }
    next();
  }

  stmt_ptr parse_macro() {
    auto s = node<stmt>(next());
    s->kind = sk::macro;
    s->text = expect_name();
    parse_signature(*s);
    expect(tok::block_end, "'%}'");
    const int saved = loops_;
    loops_ = 0;
    s->body = subparse({"endmacro"});
    loops_ = saved;
    end_tag("endmacro");
    return s;
  }

  stmt_ptr parse_call_block() {
    auto s = node<stmt>(next());
    s->kind = sk::call_block;
    if (is_op("(")) parse_signature(*s);
    s->value = parse_expression();
    if (s->value->kind != ek::call) error_at(cur(), "expected a call after 'call'");
    expect(tok::block_end, "'%}'");
    const int saved = loops_;
    loops_ = 0;
    s->body = subparse({"endcall"});
    loops_ = saved;
    end_tag("endcall");
    return s;
  }

  stmt_ptr parse_scoped_block(bool with) {
    auto s = node<stmt>(next());
    s->kind = sk::block;
    s->scoped = with;
    if (with) {
      while (cur().type != tok::block_end) {
        if (!s->assigns.empty()) expect_op(",");
        std::string n = expect_name();
        expect_op("=");
        s->assigns.emplace_back(std::move(n), parse_expression());
      }
    }
    expect(tok::block_end, "'%}'");
    const char* end = with ? "endwith" : "endgeneration";
    s->body = subparse({end});
    end_tag(end);
    return s;
  }

  // ---- expressions ----
  template <class... Args>
  expr_ptr make(ek kind, const token& at, Args&&... children) {
    auto e = node<expr>(at);
    e->kind = kind;
    (e->args.push_back(std::forward<Args>(children)), ...);
    return e;
  }

  /// A comma-separated tuple without parentheses, or one expression.
  expr_ptr parse_tuple(bool allow_empty_end, bool no_cond = false) {
    const token& at = cur();
    std::vector<expr_ptr> items;
    bool trailing = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        trailing = true;
      }
      if (cur().type == tok::var_end || cur().type == tok::block_end || is_name("if") ||
          is_op(")")) {
        if (items.empty() && !allow_empty_end) error_at(cur(), "expected an expression");
        break;
      }
      items.push_back(no_cond ? parse_or() : parse_expression());
      trailing = false;
    }
    if (items.size() == 1 && !trailing) return std::move(items[0]);
    if (items.empty() && !allow_empty_end) error_at(cur(), "expected an expression");
    auto e = make(ek::tuple, at);
    e->args = std::move(items);
    return e;
  }

  expr_ptr parse_expression() {
    depth_guard g(*this);
    expr_ptr e = parse_or();
    while (is_name("if")) {
      const token& at = next();
      expr_ptr c = parse_or();
      expr_ptr other = skip_name("else") ? parse_expression() : nullptr;
      auto n = make(ek::cond, at, std::move(c), std::move(e), std::move(other));
      e = std::move(n);
    }
    return e;
  }

  expr_ptr parse_or() {
    expr_ptr l = parse_and();
    while (is_name("or")) {
      const token& at = next();
      l = make(ek::or_, at, std::move(l), parse_and());
    }
    return l;
  }
  expr_ptr parse_and() {
    expr_ptr l = parse_not();
    while (is_name("and")) {
      const token& at = next();
      l = make(ek::and_, at, std::move(l), parse_not());
    }
    return l;
  }
  expr_ptr parse_not() {
    if (is_name("not")) {
      depth_guard g(*this);
      const token& at = next();
      return make(ek::not_, at, parse_not());
    }
    return parse_compare();
  }

  expr_ptr parse_compare() {
    const token& at = cur();
    expr_ptr l = parse_math1();
    std::unique_ptr<expr> c;
    while (true) {
      std::string op;
      if (cur().type == tok::op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (skip_name("in")) {
        op = "in";
      } else if (is_name("not") && peek().type == tok::name && peek().text == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!c) c = make(ek::compare, at, std::move(l));
      c->ops.push_back(op);
      c->args.push_back(parse_math1());
    }
    return c ? std::move(c) : std::move(l);
  }

  expr_ptr binary_loop(expr_ptr (parser::*sub)(), std::initializer_list<std::string_view> ops) {
    expr_ptr l = (this->*sub)();
    while (cur().type == tok::op) {
      bool hit = false;
      for (std::string_view o : ops) hit = hit || cur().text == o;
      if (!hit) break;
      const token& at = next();
      auto n = make(ek::binary, at, std::move(l), (this->*sub)());
      n->name = at.text;
      l = std::move(n);
    }
    return l;
  }
  expr_ptr parse_math1() { return binary_loop(&parser::parse_concat, {"+", "-"}); }
  expr_ptr parse_concat() { return binary_loop(&parser::parse_math2, {"~"}); }
  expr_ptr parse_math2() { return binary_loop(&parser::parse_pow, {"*", "/", "//", "%"}); }
  expr_ptr parse_pow() { return binary_loop(&parser::parse_unary_f, {"**"}); }
  expr_ptr parse_unary_f() { return parse_unary(true); }

  expr_ptr parse_unary(bool with_filter) {
    depth_guard g(*this);
    expr_ptr n;
    if (is_op("-") || is_op("+")) {
      const token& at = next();
      n = make(at.text == "-" ? ek::neg : ek::pos, at, parse_unary(false));
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  expr_ptr parse_primary() {
    const token& k = cur();
    auto e = node<expr>(k);
    switch (k.type) {
      case tok::name: {
        const std::string& n = next().text;
        if (n == "true" || n == "True") {
          e->lit = value(true);
        } else if (n == "false" || n == "False") {
          e->lit = value(false);
        } else if (n == "none" || n == "None") {
          e->lit = value(nullptr);
        } else {
          e->kind = ek::name;
          e->name = n;
        }
        return e;
      }
      case tok::string: {
        std::string s = next().text;
        while (cur().type == tok::string) s += next().text;
        e->lit = value(std::move(s));
        return e;
      }
      case tok::integer:
        e->lit = value(next().integer);
        return e;
      case tok::floating:
        e->lit = value(next().number);
        return e;
      default:
        break;
    }
    if (skip_op("(")) {
      expr_ptr t = parse_tuple(true);
      expect_op(")");
      if (t->kind == ek::tuple && t->args.empty()) return t;
      return t;
    }
    if (is_op("[")) return parse_list();
    if (is_op("{")) return parse_dict();
    error_at(k, "unexpected token in expression");
  }

  expr_ptr parse_list() {
    auto e = make(ek::list, next());
    while (!is_op("]")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("]")) break;
      e->args.push_back(parse_expression());
    }
    next();
    return e;
  }

  expr_ptr parse_dict() {
    auto e = make(ek::dict, next());
    while (!is_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("}")) break;
      e->args.push_back(parse_expression());
      expect_op(":");
      e->args.push_back(parse_expression());
    }
    next();
    return e;
  }

  expr_ptr parse_postfix(expr_ptr n) {
    while (true) {
      if (is_op(".")) {
        const token& at = next();
        if (cur().type == tok::name) {
          auto a = make(ek::attr, at, std::move(n));
          a->name = next().text;
          n = std::move(a);
        } else if (cur().type == tok::integer) {
          auto lit = node<expr>(cur());
          lit->lit = value(next().integer);
          n = make(ek::item, at, std::move(n), std::move(lit));
        } else {
          error_at(cur(), "expected a name or number after '.'");
        }
      } else if (is_op("[")) {
        n = parse_subscript(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  expr_ptr parse_subscript(expr_ptr n) {
    const token& at = next();
    std::vector<expr_ptr> parts(3);
    int colons = 0;
    bool any = false;
    while (!is_op("]")) {
      if (is_op(":")) {
        if (++colons > 2) error_at(cur(), "invalid slice");
        next();
        continue;
      }
      if (is_op(",")) error_at(cur(), "tuple subscripts are not supported");
      if (parts[static_cast<std::size_t>(colons)]) error_at(cur(), "expected ']'");
      parts[static_cast<std::size_t>(colons)] = parse_expression();
      any = true;
    }
    next();
    if (colons == 0) {
      if (!any) error_at(at, "expected a subscript");
      return make(ek::item, at, std::move(n), std::move(parts[0]));
    }
    return make(ek::slice, at, std::move(n), std::move(parts[0]), std::move(parts[1]),
                std::move(parts[2]));
  }

  void parse_call_args(expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**"))
        error_at(cur(), "*args and **kwargs in calls are not supported");
      if (cur().type == tok::name && peek().type == tok::op && peek().text == "=") {
        std::string k = next().text;
        next();
        e.kwargs.emplace_back(std::move(k), parse_expression());
      } else {
        if (!e.kwargs.empty()) error_at(cur(), "positional argument follows keyword argument");
        e.args.push_back(parse_expression());
      }
    }
    next();
  }

  expr_ptr parse_call(expr_ptr callee) {
    auto e = make(ek::call, cur(), std::move(callee));
    parse_call_args(*e);
    return e;
  }

  expr_ptr parse_filter_expr(expr_ptr n) {
    while (true) {
      if (is_op("|")) {
        do {
          const token& at = next();
          auto f = make(ek::filter, at, std::move(n));
          const token& name_at = cur();
          f->name = expect_name();
          while (skip_op(".")) f->name += "." + expect_name();
          if (!is_known_filter(f->name))
            error_at(name_at, "no filter named '" + f->name + "' in this Jinja subset");
          if (is_op("(")) parse_call_args(*f);
          n = std::move(f);
        } while (is_op("|"));
      } else if (is_name("is")) {
        n = parse_test(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  expr_ptr parse_test(expr_ptr n) {
    const token& at = next();
    const bool neg = skip_name("not");
    auto t = make(ek::test, at, std::move(n));
    t->negated = neg;
    const token& name_at = cur();
    t->name = expect_name();
    while (skip_op(".")) t->name += "." + expect_name();
    if (!is_known_test(t->name))
      error_at(name_at, "no test named '" + t->name + "' in this Jinja subset");
    const token& k = cur();
    if (is_op("(")) {
      parse_call_args(*t);
    } else if ((k.type == tok::name || k.type == tok::string || k.type == tok::integer ||
                k.type == tok::floating || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) error_at(k, "you cannot chain multiple tests with is");
      t->args.push_back(parse_postfix(parse_primary()));
    }
    return t;
  }

  std::vector<token> t_;
  std::size_t i_ = 0;
  int max_;
  int depth_ = 0;
  int loops_ = 0;
};

}  // namespace jinja::detail
TFM_END_NAMESPACE
