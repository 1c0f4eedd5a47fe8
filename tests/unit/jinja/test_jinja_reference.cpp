// The published chat templates against jinja2 (tests/data/jinja/cases.txt): every conversation
// with and without add_generation_prompt must render byte for byte as jinja2 rendered it, and
// a raise_exception in the template must surface as tfm::value_error with the same message.
#include "typeformer/tokenizer/jinja.hpp"

#include "jinja_test_support.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

using namespace jinja_test;

namespace {

struct conversation {
  tfm::jinja::value messages;
  tfm::jinja::variables extra;
  std::vector<tfm::chat_message> plain;  ///< when every message is {role, content} strings
  bool is_plain = true;
};

conversation load_conversation(const std::string& msgs_json, const std::string& extra_json) {
  conversation c;
  c.messages = tfm::jinja::from_json(msgs_json);
  for (const tfm::jinja::value& m : c.messages.items()) {
    const tfm::jinja::value* role = m.find(std::string_view("role"));
    const tfm::jinja::value* content = m.find(std::string_view("content"));
    if (m.entries().size() != 2 || !role || !content || !role->is_string() ||
        !content->is_string()) {
      c.is_plain = false;
      continue;
    }
    c.plain.push_back({role->as_string(), content->as_string()});
  }
  const tfm::jinja::value extra = tfm::jinja::from_json(extra_json);
  for (const auto& [k, v] : extra.entries()) c.extra.emplace_back(k.as_string(), v);
  return c;
}

}  // namespace

TEST_CASE("jinja: published chat templates render as jinja2 renders them") {
  const std::string text = read_file(data_dir() + "/cases.txt");
  REQUIRE_MESSAGE(!text.empty(), "missing tests/data/jinja/cases.txt");
  std::map<std::string, std::unique_ptr<tfm::jinja_chat_template>> templates;
  std::map<std::string, conversation> convs;
  std::istringstream in(text);
  int rendered = 0, raised = 0, errors = 0, plain_checked = 0;
  for (std::string line; std::getline(in, line);) {
    const std::vector<std::string> f = fields(line);
    if (f.empty() || f[0] == "#" || f[0] == "S") continue;
    if (f[0] == "T") {
      tfm::jinja_chat_options o;
      if (f[2] != "~") o.bos_token = unhex(f[2]);
      if (f[3] != "~") o.eos_token = unhex(f[3]);
      o.now = reference_now();
      templates[f[1]] = std::make_unique<tfm::jinja_chat_template>(template_text(f[1]), o);
      continue;
    }
    if (f[0] == "C") {
      convs[f[1]] = load_conversation(unhex(f[2]), unhex(f[3]));
      continue;
    }
    REQUIRE(f.size() == 5);
    const tfm::jinja_chat_template& tpl = *templates.at(f[1]);
    const conversation& c = convs.at(f[2]);
    const bool gen = f[3] == "1";
    const std::string expected = unhex(f[4]);
    INFO("template ", f[1], ", conversation ", f[2], ", add_generation_prompt ", gen);
    if (f[0] == "R") {
      CHECK(tpl.render_messages(c.messages, gen, c.extra) == expected);
      if (c.is_plain) {
        CHECK(tpl.render(c.plain, gen, c.extra) == expected);
        ++plain_checked;
      }
      ++rendered;
    } else if (f[0] == "E") {
      CHECK_THROWS_WITH_AS(tpl.render_messages(c.messages, gen, c.extra), expected.c_str(),
                           tfm::value_error);
      ++raised;
    } else {
      CHECK_THROWS_AS(tpl.render_messages(c.messages, gen, c.extra), tfm::value_error);
      ++errors;
    }
  }
  std::printf(
      "jinja reference: %zu templates, %zu conversations, %d rendered (%d also as "
      "chat_message), %d raise_exception, %d other errors\n",
      templates.size(), convs.size(), rendered, plain_checked, raised, errors);
  CHECK(templates.size() == template_names().size());
  CHECK(rendered > 600);
}

TEST_CASE("jinja: language snippets render as jinja2 renders them") {
  const std::string text = read_file(data_dir() + "/cases.txt");
  std::istringstream in(text);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    const std::vector<std::string> f = fields(line);
    if (f.size() != 5 || f[0] != "S") continue;
    const std::string src = unhex(f[1]);
    const tfm::jinja::value vars = tfm::jinja::from_json(unhex(f[2]));
    tfm::jinja::variables v;
    for (const auto& [k, x] : vars.entries()) v.emplace_back(k.as_string(), x);
    const std::string expected = unhex(f[4]);
    INFO("snippet: ", src, "\njinja2: ", f[3], " ", expected);
    ++n;
    if (f[3] == "P") {
      CHECK_THROWS_AS(tfm::jinja::template_source{src}, tfm::parse_error);
      continue;
    }
    const tfm::jinja::template_source t(src);
    if (f[3] == "R") {
      CHECK(t.render(v) == expected);
    } else if (f[3] == "E") {
      CHECK_THROWS_WITH_AS(t.render(v), expected.c_str(), tfm::value_error);
    } else {
      CHECK_THROWS_AS(t.render(v), tfm::value_error);
    }
  }
  std::printf("jinja snippets: %d compared with jinja2\n", n);
  CHECK(n > 80);
}
