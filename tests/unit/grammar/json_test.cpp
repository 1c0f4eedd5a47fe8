// The JSON grammar (infer/grammar.hpp json_grammar) against Python's json module, and the
// JSON-schema converter (infer/json_schema.hpp) against the `jsonschema` package: verdicts
// recorded in tests/data/grammar/*.txt by tests/data/grammar/make_fixtures.py.
#include "typeformer/infer/json_schema.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::infer;

namespace {

std::string unhex(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

std::vector<std::string> fixture_lines(const std::string& name) {
  const std::string path = std::string(TFM_SOURCE_DIR) + "/tests/data/grammar/" + name;
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << path);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);)
    if (!line.empty() && line[0] != '#') out.push_back(line);
  return out;
}

std::string printable(const std::string& s) {
  std::string o;
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7F) {
      o.push_back(c);
    } else {
      static const char* d = "0123456789ABCDEF";
      o += "\\x";
      o.push_back(d[b >> 4]);
      o.push_back(d[b & 15]);
    }
  }
  return o;
}

}  // namespace

TEST_CASE("json grammar: accepts and rejects what Python's json module does") {
  const auto any = json_grammar({false, -1});
  const auto obj = json_grammar({true, -1});
  const auto lines = fixture_lines("json_corpus.txt");
  REQUIRE(lines.size() > 1000);
  int n_valid = 0, n_obj = 0;
  for (const auto& line : lines) {
    std::istringstream is(line);
    int want_any = 0, want_obj = 0;
    std::string hex;
    is >> want_any >> want_obj >> hex;
    const std::string doc = unhex(hex);
    INFO("document: '" << printable(doc) << "'");
    CHECK(grammar_accepts(any, doc) == (want_any == 1));
    CHECK(grammar_accepts(obj, doc) == (want_obj == 1));
    n_valid += want_any;
    n_obj += want_obj;
  }
  MESSAGE(lines.size() << " documents (" << n_valid << " valid JSON, " << n_obj
                       << " objects) agree with Python's json");
}

TEST_CASE("json grammar: the committed text (tests/data/grammar/json_object.gbnf) is current") {
  // The file is the grammar tests/data/grammar/llamacpp_mask_timing.py gives llama.cpp.
  std::ifstream f(std::string(TFM_SOURCE_DIR) + "/tests/data/grammar/json_object.gbnf");
  std::stringstream ss;
  ss << f.rdbuf();
  CHECK(ss.str() == json_gbnf());
}

TEST_CASE("json grammar: bounded whitespace") {
  const auto g = json_grammar();  // object root, at most 20 whitespace characters per gap
  CHECK(grammar_accepts(g, "{\n  \"a\": [1, 2],\n  \"b\": {}\n}"));
  CHECK(grammar_accepts(g, std::string(20, ' ') + "{}"));
  CHECK_FALSE(grammar_accepts(g, std::string(21, ' ') + "{}"));
  CHECK_FALSE(grammar_accepts(g, "{\"a\":" + std::string(21, '\n') + "1}"));
  CHECK_FALSE(grammar_accepts(g, "[1]"));
  const auto tight = json_grammar({true, 0});
  CHECK(grammar_accepts(tight, "{\"a\":[1,2]}"));
  CHECK_FALSE(grammar_accepts(tight, "{\"a\": 1}"));
}

TEST_CASE("json schema: grammars accept the instances jsonschema validates") {
  const auto lines = fixture_lines("schema_cases.txt");
  std::shared_ptr<const grammar> g;
  std::string schema;
  int n_cases = 0, n_limits = 0;
  for (const auto& line : lines) {
    std::istringstream is(line);
    std::string tag;
    is >> tag;
    if (tag == "schema") {
      std::string hex;
      is >> hex;
      schema = unhex(hex);
      INFO("schema: " << schema);
      REQUIRE_NOTHROW(g = grammar_from_json_schema(schema));
      continue;
    }
    int valid = 0, expect = 0;
    std::string hex;
    is >> valid >> expect >> hex;
    const std::string inst = unhex(hex);
    INFO("schema: " << schema << "\ninstance: " << inst << "\njsonschema: " << valid);
    CHECK(grammar_accepts(g, inst) == (expect == 1));
    ++n_cases;
    n_limits += valid != expect;
  }
  MESSAGE(n_cases << " instances agree with jsonschema (" << n_limits
                  << " of them are documented spelling limits: order, 1.0, spaces in enums)");
}

TEST_CASE("json schema: the generated grammar text") {
  const std::string g = json_schema_to_gbnf(
      R"({"type":"object","properties":{"a b":{"type":"string","maxLength":2}},)"
      R"("required":["a b"],"additionalProperties":false})",
      {0, 1000});
  CHECK(g.find("root ::= ws schema ws\n") != std::string::npos);
  CHECK(g.find("schema-a-b ::= \"\\\"\" char{0,2} \"\\\"\"\n") != std::string::npos);
  CHECK(g.find("\"\\\"a b\\\"\" ws \":\" ws schema-a-b ws") != std::string::npos);
  CHECK(g.find("ws ::= \"\"\n") != std::string::npos);
  const auto gg = compile_grammar(g);
  CHECK(grammar_accepts(gg, "{\"a b\":\"xy\"}"));
  CHECK_FALSE(grammar_accepts(gg, "{\"a b\":\"xyz\"}"));
  CHECK_FALSE(grammar_accepts(gg, "{ \"a b\":\"x\"}"));
  // Keys and enum strings with quotes, backslashes, control characters and UTF-8.
  const auto k = grammar_from_json_schema(
      R"({"properties":{"q\"\\\n\u00e9":{"const":"t\"ab\t"}},"required":["q\"\\\n\u00e9"]})");
  CHECK(grammar_accepts(k, "{\"q\\\"\\\\\\n\xC3\xA9\":\"t\\\"ab\\t\"}"));
}

TEST_CASE("json schema: unsupported and malformed schemas are refused clearly") {
  struct bad {
    const char* schema;
    errc code;
    const char* needle;
  };
  const bad cases[] = {
      {R"({"type":"string","pattern":"^a"})", errc::unsupported,
       "keyword 'pattern' at # is not supported"},
      {R"({"properties":{"n":{"type":"integer","minimum":0}}})", errc::unsupported,
       "keyword 'minimum' at #/properties/n is not supported"},
      {R"({"$ref":"other.json#/x"})", errc::unsupported,
       "#/$ref 'other.json#/x' is not supported or not found"},
      {R"({"$ref":"#/$defs/missing","$defs":{"x":{}}})", errc::unsupported,
       "'#/$defs/missing' is not supported or not found"},
      {R"({"$ref":"#/$defs/x","type":"string","$defs":{"x":{}}})", errc::unsupported,
       "keyword 'type' beside $ref at #"},
      {R"({"$defs":{"n":{"type":"object","properties":{"n":{"$ref":"#/$defs/n"}},)"
       R"("required":["n"]}},"$ref":"#/$defs/n"})",
       errc::parse, "rules that can never finish"},
      {R"({"oneOf":[{},{}]})", errc::unsupported, "keyword 'oneOf'"},
      {R"({"allOf":[{},{}]})", errc::unsupported, "#/allOf is supported with exactly one schema"},
      {R"({"type":"array","items":[{"type":"string"}]})", errc::unsupported,
       "#/items as a list (tuple validation) is not supported"},
      {R"({"type":"array","prefixItems":[{}]})", errc::unsupported, "keyword 'prefixItems'"},
      {R"({"type":"object","properties":{"a":{}},"additionalProperties":true})", errc::unsupported,
       "additionalProperties other than false beside properties"},
      {R"({"type":"object","required":["a"]})", errc::unsupported, "required without properties"},
      {R"({"properties":{"a":{}},"required":["b"]})", errc::value,
       "required names 'b', which is not in properties"},
      {R"({"type":"array","maxItems":100000})", errc::unsupported,
       "maxItems = 100000 is above the supported limit of 1000"},
      {R"({"type":"array","minItems":3,"maxItems":2})", errc::value, "maxItems is below minItems"},
      {R"({"type":"strin"})", errc::parse, "#/type must name object, array, string"},
      {R"({"type":"string","enum":[1,2]})", errc::value, "no enum/const value at #"},
      {R"({"properties":{"a":false}})", errc::unsupported, "#/properties/a is false"},
      {R"({"type":"object",)", errc::parse, "json schema"},
      {R"([1])", errc::parse, "the schema at # is not an object"},
      {R"({"minLength":-1})", errc::parse, "#/minLength must be a non-negative integer"},
      {R"({"enum":[1],"minLength":1})", errc::unsupported,
       "keyword 'minLength' beside enum/const at #"},
  };
  for (const auto& b : cases) {
    INFO("schema: " << std::string(b.schema));
    bool thrown = false;
    try {
      grammar_from_json_schema(b.schema);
    } catch (const tfm::error& e) {
      thrown = true;
      INFO("message: " << std::string(e.what()));
      CHECK(e.code() == b.code);
      CHECK(std::string(e.what()).find(b.needle) != std::string::npos);
    }
    CHECK(thrown);
  }
}
