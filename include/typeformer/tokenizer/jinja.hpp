// typeformer/tokenizer/jinja.hpp
//
// WHAT THIS REPRESENTS
//   Chat templates as models ship them: the Jinja template string of a GGUF file's
//   `tokenizer.chat_template` key or a Hugging Face tokenizer_config.json's `chat_template`,
//   rendered by an interpreter for the subset of Jinja that chat templates use, with the output
//   Python's jinja2 gives in the environment of transformers' apply_chat_template:
//     ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//                                   extensions=[loopcontrols])
//     filters["tojson"] = json.dumps(x, ensure_ascii=False, indent, separators, sort_keys)
//     globals raise_exception(msg) -> TemplateError(msg), strftime_now(fmt)
//     render(messages=..., tools=None, documents=None, add_generation_prompt=...,
//            bos_token=..., eos_token=..., **extra)
//   (transformers/utils/chat_template_utils.py, _compile_jinja_template and
//   render_jinja_template).
//
//   Supported: text, {{ }}, {% %}, {# #}, whitespace control (-, +), trim_blocks,
//   lstrip_blocks, raw; if/elif/else, for (tuple unpacking, `if` filter, else, loop.index,
//   index0, revindex, revindex0, first, last, length, previtem, nextitem, cycle), break,
//   continue, set (names, tuples, namespace attributes, block set), macro and call blocks,
//   with, generation; literals, arithmetic, ~, comparisons, in / not in, and/or/not,
//   conditional expressions, attribute/subscript/slice access; str methods strip lstrip rstrip
//   split upper lower title capitalize startswith endswith replace find count join splitlines
//   isspace isdigit; dict methods items keys values get; filters trim length count upper lower
//   capitalize title string safe escape tojson default first last list join replace items
//   selectattr rejectattr select reject map reverse int float abs indent; the usual tests.
//   Refused with tfm::parse_error at load (naming the construct, line and column): extends,
//   include, import, block, filter blocks, recursive loops, *args/**kwargs, unknown tags.
//   Refused with tfm::value_error at render: unknown filters, tests and methods, '%' string
//   formatting, str.format, mutating methods (as the sandbox does), integer overflow.
//
// CONTRACTS
//   - Templates must be valid UTF-8; so must every string passed to render().
//   - Rendering is deterministic except for strftime_now, whose clock is
//     jinja_chat_options::now (local time when unset).
//   - Work is bounded by jinja::limits (steps, call depth, output and string sizes), so a
//     hostile template cannot hang, exhaust memory or overflow the stack.
//   - raise_exception(msg) in a template throws tfm::value_error with what() == msg.
//   - Known differences from Python: upper/lower/title/capitalize map ASCII letters only; repr()
//     of non-printable characters uses an approximation of str.isprintable (unassigned code
//     points print as themselves); integers are 64-bit (overflow is an error, not a big int);
//     dict.items()/keys()/values() and the select/map filters give lists (Python prints views
//     and generators differently; iterating them is the same).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/detail/jinja_eval.hpp"
#include "typeformer/tokenizer/detail/jinja_lexer.hpp"
#include "typeformer/tokenizer/detail/jinja_parser.hpp"
#include "typeformer/tokenizer/detail/jinja_value.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace jinja {

/// Named values passed to a template.
using variables = std::vector<std::pair<std::string, value>>;

/// Converts a JSON document (e.g. a list of tool schemas, or messages with tool calls) to a
/// value: objects become dicts in document order, integers that fit in 64 bits become ints.
inline value from_json(std::string_view json_text, std::string_view doc = "jinja value") {
  struct conv {
    static value run(const tfm::detail::json::value& j) {
      using K = tfm::detail::json::kind;
      switch (j.type) {
        case K::null:
          return value(nullptr);
        case K::boolean:
          return value(j.boolean);
        case K::number:
          return j.integral ? value(j.integer) : value(j.number);
        case K::string:
          return value(j.string);
        case K::array: {
          list_type l;
          for (const auto& x : j.array) l.push_back(run(x));
          return value(std::move(l));
        }
        case K::object: {
          dict_type d;
          for (const auto& m : j.object) d.emplace_back(value(m.first), run(m.second));
          return value(std::move(d));
        }
      }
      return {};
    }
  };
  return conv::run(tfm::detail::json::parse(json_text, doc));
}

/// A parsed Jinja template.
class template_source {
 public:
  explicit template_source(std::string_view source, limits lim = {}) : lim_(lim) {
    if (source.size() > lim_.max_template_bytes)
      fail(errc::parse, "jinja template: ", source.size(),
           " bytes exceed limits::max_template_bytes (", lim_.max_template_bytes, ")");
    const std::size_t bad = utf8::first_invalid(source);
    if (bad != std::string_view::npos)
      fail(errc::parse, "jinja template: invalid UTF-8 at byte offset ", bad);
    detail::lexer lx(source);
    detail::parser p(lx.run(), lim_.max_nesting);
    body_ = std::make_shared<const detail::body_t>(p.parse_template());
  }

  /// Renders with `vars` (later entries win) on top of the globals range, namespace, dict,
  /// raise_exception and strftime_now (formatting `now`, or local time when unset).
  std::string render(const variables& vars, const std::optional<std::tm>& now = {}) const {
    detail::scope globals;
    for (const char* f : {"range", "namespace", "dict", "raise_exception", "strftime_now"})
      globals.set(f, detail::builtin(f));
    for (const auto& [k, v] : vars) globals.set(k, v);
    detail::evaluator ev(lim_, [now](std::string_view fmt) { return strftime(fmt, now); });
    return ev.render(*body_, globals);
  }

  const limits& bounds() const noexcept { return lim_; }

 private:
  static std::string strftime(std::string_view fmt, const std::optional<std::tm>& now) {
    if (fmt.size() > 1024 || fmt.find('\0') != std::string_view::npos)
      detail::render_fail("strftime_now() format longer than 1024 bytes or with a NUL");
    std::tm t{};
    if (now) {
      t = *now;
    } else {
      const std::time_t s = std::time(nullptr);
#if defined(_WIN32)
      localtime_s(&t, &s);
#else
      localtime_r(&s, &t);
#endif
    }
    const std::string f(fmt);
    for (std::size_t cap = 256; cap <= (std::size_t{1} << 16); cap *= 4) {
      std::string buf(cap, '\0');
      const std::size_t n = std::strftime(buf.data(), buf.size(), f.c_str(), &t);
      if (n > 0 || f.empty()) return buf.substr(0, n);
    }
    return {};
  }

  limits lim_;
  std::shared_ptr<const detail::body_t> body_;
};

}  // namespace jinja

/// Special tokens and clock for jinja_chat_template. Unset tokens are undefined in the
/// template (transformers passes only the special tokens a tokenizer has).
struct jinja_chat_options {
  std::optional<std::string> bos_token{};
  std::optional<std::string> eos_token{};
  std::optional<std::string> unk_token{};
  std::optional<std::string> pad_token{};
  std::optional<std::tm> now{};  ///< the clock of strftime_now; local time when unset
  jinja::limits limits{};
};

/// A model's chat template (see the file comment).
///
///   tfm::jinja_chat_template tpl(gguf_chat_template, {.bos_token = "<s>", .eos_token = "</s>"});
///   std::string prompt = tpl.render(messages, /*add_generation_prompt=*/true);
class jinja_chat_template {
 public:
  explicit jinja_chat_template(std::string_view source, jinja_chat_options opts = {})
      : opts_(std::move(opts)), tpl_(source, opts_.limits) {
    for (const auto* t : {&opts_.bos_token, &opts_.eos_token, &opts_.unk_token, &opts_.pad_token})
      if (*t && !utf8::is_valid(**t))
        fail(errc::value, "jinja_chat_template: a special token is not valid UTF-8");
  }

  /// Renders messages {role, content}; `extra` adds or overrides template variables (for
  /// example "tools" as jinja::from_json(...), "date_string", "enable_thinking").
  std::string render(std::span<const chat_message> messages, bool add_generation_prompt,
                     const jinja::variables& extra = {}) const {
    jinja::list_type l;
    l.reserve(messages.size());
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const chat_message& m = messages[i];
      if (!utf8::is_valid(m.role) || !utf8::is_valid(m.content))
        fail(errc::value, "jinja_chat_template: message ", i, " is not valid UTF-8");
      l.push_back(
          jinja::make_dict({{"role", jinja::value(m.role)}, {"content", jinja::value(m.content)}}));
    }
    return render_messages(jinja::value(std::move(l)), add_generation_prompt, extra);
  }
  std::string render(std::initializer_list<chat_message> messages, bool add_generation_prompt,
                     const jinja::variables& extra = {}) const {
    return render(std::span<const chat_message>(messages.begin(), messages.size()),
                  add_generation_prompt, extra);
  }

  /// Renders messages given as a value (e.g. jinja::from_json of OpenAI-style messages with
  /// tool calls). Strings inside must be valid UTF-8.
  std::string render_messages(const jinja::value& messages, bool add_generation_prompt,
                              const jinja::variables& extra = {}) const {
    jinja::variables vars{{"messages", messages},
                          {"tools", jinja::value(nullptr)},
                          {"documents", jinja::value(nullptr)},
                          {"add_generation_prompt", jinja::value(add_generation_prompt)}};
    const std::pair<const char*, const std::optional<std::string>*> tokens[] = {
        {"bos_token", &opts_.bos_token},
        {"eos_token", &opts_.eos_token},
        {"unk_token", &opts_.unk_token},
        {"pad_token", &opts_.pad_token}};
    for (const auto& [name, tok] : tokens)
      if (*tok) vars.emplace_back(name, jinja::value(**tok));
    vars.insert(vars.end(), extra.begin(), extra.end());
    return tpl_.render(vars, opts_.now);
  }

  const jinja_chat_options& options() const noexcept { return opts_; }

 private:
  jinja_chat_options opts_;
  jinja::template_source tpl_;
};

TFM_END_NAMESPACE
