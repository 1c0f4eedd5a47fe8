// Language pieces not covered by the jinja2 comparison: errors and their positions, the
// constructs this subset refuses, the bounds on hostile templates, transformers' generation
// tag, and the public chat API (special tokens, extra variables, tools from JSON, the clock).
#include "typeformer/tokenizer/jinja.hpp"

#include "jinja_test_support.hpp"

#include <doctest/doctest.h>

#include <string>

using tfm::jinja::template_source;
using tfm::jinja::value;

namespace {

std::string render(std::string_view src, const tfm::jinja::variables& v = {}) {
  return template_source(src).render(v);
}

std::string error_of(std::string_view src, bool at_load) {
  try {
    const template_source t(src);
    if (at_load) return "no parse error";
    (void)t.render({});
  } catch (const tfm::parse_error& e) {
    return at_load ? e.what() : std::string("unexpected parse_error: ") + e.what();
  } catch (const tfm::value_error& e) {
    return at_load ? std::string("unexpected value_error: ") + e.what() : e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("jinja: parse errors name the construct, line and column") {
  CHECK(error_of("a\n  {% for x in y %}{% endif %}", true).find("line 2, column 22") !=
        std::string::npos);
  CHECK(error_of("{% include 'x' %}", true).find("'include' statement is not supported") !=
        std::string::npos);
  CHECK(error_of("{% extends 'b' %}", true).find("'extends'") != std::string::npos);
  CHECK(error_of("{% filter upper %}x{% endfilter %}", true).find("'filter'") != std::string::npos);
  CHECK(error_of("{% for x in y recursive %}{% endfor %}", true).find("recursive") !=
        std::string::npos);
  CHECK(error_of("{{ x | nosuch }}", true).find("no filter named 'nosuch'") != std::string::npos);
  CHECK(error_of("{{ x is nosuch }}", true).find("line 1, column 9") != std::string::npos);
  CHECK(error_of("{% break %}", true).find("outside of a for loop") != std::string::npos);
  CHECK(error_of("{{ f(*a) }}", true).find("*args") != std::string::npos);
  CHECK(error_of("\xff{{ x }}", true).find("invalid UTF-8 at byte offset 0") != std::string::npos);
  CHECK(error_of("{# open", true).find("missing end of comment tag") != std::string::npos);
  CHECK(error_of("{{ '\\x4' }}", true).find("truncated \\x escape") != std::string::npos);
}

TEST_CASE("jinja: render errors name the construct and its position") {
  CHECK(error_of("line\n{{ 1 +\n  missing }}", false) ==
        "jinja template: 'missing' is undefined at line 3, column 3");
  CHECK(error_of("{{ 'a' < 1 }}", false)
            .find("'<' not supported between instances of 'str' and 'int'") != std::string::npos);
  CHECK(error_of("{{ 'a' % 1 }}", false).find("'%' is not supported") != std::string::npos);
  CHECK(error_of("{{ 'a'.format(1) }}", false).find("str.format() is not supported") !=
        std::string::npos);
  CHECK(error_of("{{ 9223372036854775807 + 1 }}", false).find("integer overflow") !=
        std::string::npos);
  CHECK(error_of("{{ range }}", false).find("cannot print") != std::string::npos);
  CHECK_THROWS_WITH_AS(render("{{ raise_exception('Roles must alternate') }}"),
                       "Roles must alternate", tfm::value_error);
}

TEST_CASE("jinja: hostile templates are bounded") {
  tfm::jinja::limits lim;
  lim.max_steps = 100'000;
  CHECK_THROWS_AS(
      template_source(
          "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", lim)
          .render({}),
      tfm::value_error);
  CHECK_THROWS_AS(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
                  tfm::value_error);
  CHECK_THROWS_AS(render("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = "
                         "ns.s ~ ns.s %}{% endfor %}"),
                  tfm::value_error);
  CHECK_THROWS_AS(render("{{ 'x' * 9000000000 }}"), tfm::value_error);
  CHECK_THROWS_AS(render("{{ [0] * 9000000000 }}"), tfm::value_error);
  std::string deep(5000, '(');
  CHECK_THROWS_AS(template_source("{{ " + deep + " }}"), tfm::parse_error);
  std::string deep_macro = "{% macro f(n) %}";  // 150 nested ifs in a recursive macro
  for (int i = 0; i < 150; ++i) deep_macro += "{% if true %}";
  deep_macro += "{{ f(n + 1) }}";
  for (int i = 0; i < 150; ++i) deep_macro += "{% endif %}";
  deep_macro += "{% endmacro %}{{ f(0) }}";
  CHECK_THROWS_WITH_AS(render(deep_macro), doctest::Contains("max_eval_depth"), tfm::value_error);
  std::string nested;
  for (int i = 0; i < 1000; ++i) nested += "{% if true %}";
  CHECK_THROWS_AS(template_source{nested}, tfm::parse_error);
}

TEST_CASE("jinja: transformers' generation tag renders its body") {
  CHECK(render("{% generation %}a {{ x }}{% endgeneration %}b", {{"x", value(1)}}) == "a 1b");
}

TEST_CASE("jinja_chat_template: tokens, extra variables, tools and the clock") {
  const std::string qwen = jinja_test::template_text("qwen2_5");
  const tfm::jinja_chat_template tpl(qwen, {.eos_token = "<|im_end|>"});
  const std::vector<tfm::chat_message> conv{{"user", "Hi"}};
  CHECK(tpl.render(conv, true) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const value tools = tfm::jinja::from_json(R"([{"type":"function","function":{"name":"f"}}])");
  const std::string with_tools = tpl.render(conv, false, {{"tools", tools}});
  CHECK(with_tools.find(
            "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\"}}\n</tools>") !=
        std::string::npos);

  const tfm::jinja_chat_template llama(
      jinja_test::template_text("llama3_2"),
      {.bos_token = "<|begin_of_text|>", .now = jinja_test::reference_now()});
  CHECK(llama.render(conv, false).find("Today Date: 05 Sep 2024") != std::string::npos);
  CHECK(llama.render(conv, false, {{"date_string", value("01 Jan 2025")}})
            .find("Today Date: 01 Jan 2025") != std::string::npos);
  const tfm::jinja_chat_template local(jinja_test::template_text("llama3_2"));
  CHECK(local.render(conv, false).find("Today Date: ") != std::string::npos);  // local clock

  const tfm::jinja_chat_template smol(jinja_test::template_text("smollm2"));
  CHECK_THROWS_AS(smol.render({{"user", "\xc3"}}, false), tfm::value_error);
}
