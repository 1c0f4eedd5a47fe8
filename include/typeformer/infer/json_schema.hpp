// typeformer/infer/json_schema.hpp
//
// WHAT THIS REPRESENTS
//   A converter from a JSON schema (https://json-schema.org/draft/2020-12/json-schema-validation)
//   to a GBNF grammar (infer/grammar.hpp) whose documents are JSON texts valid under the schema,
//   for `response_format: {"type": "json_schema", ...}`. The grammar is sound: every document
//   it accepts is valid under the schema. It is complete for the canonical spelling of valid
//   instances, with the exceptions listed under SPELLING.
//
// SUPPORTED KEYWORDS
//   type (a name or a list of names: object, array, string, number, integer, boolean, null),
//   properties, required, additionalProperties (false; or, with no properties, true or a schema:
//   a map), items (one schema), minItems, maxItems, minLength, maxLength, enum, const, anyOf,
//   allOf with a single schema, and $ref to "#", "#/$defs/<name>" or "#/definitions/<name>" of
//   the same document (recursive definitions included; pydantic writes these).
//   Boolean schemas: true (any value); false is refused. Annotations are ignored: $schema, $id,
//   $comment, $defs, definitions, title, description, default, examples, deprecated, readOnly,
//   writeOnly, and format (an annotation by default in 2020-12, as the `jsonschema` package
//   treats it).
//   Every other keyword (pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
//   multipleOf, other $refs, oneOf, allOf of several schemas, not, if/then/else, prefixItems,
//   items as a list, contains,
//   uniqueItems, patternProperties, propertyNames, minProperties, maxProperties,
//   dependentRequired, dependentSchemas, unevaluated*) is refused with an unsupported_error
//   naming the keyword and its place (a JSON pointer): a constraint that silently dropped it
//   would generate invalid documents.
//
// CHOICES (documents the grammar generates; all valid under the schema)
//   - An object schema with properties and no additionalProperties is treated as
//     additionalProperties: false (only the listed properties are generated); additionalProperties
//     true or a schema beside properties is refused.
//   - A schema with no type takes it from its keywords: properties/required/additionalProperties
//     -> object, items/minItems/maxItems -> array, minLength/maxLength -> string; else any value.
//   - enum/const may be combined with type only (values of another type are dropped).
//
// SPELLING (valid instances the grammar rejects)
//   - Properties appear in the order the schema lists them (as llama.cpp's converter does).
//   - "integer" is written without fraction or exponent (1, not 1.0).
//   - enum/const values are matched in their compact canonical form: strings with JSON's short
//     escapes and UTF-8 kept, numbers as integers or the shortest round-trip double, no spaces
//     inside arrays and objects.
//   - minLength/maxLength count string items, where a \uD83D\uDE00 surrogate-pair escape counts
//     two (the schema counts one code point).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/infer/grammar.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <charconv>
#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

struct json_schema_options {
  /// Whitespace between tokens, as json_grammar_options::max_whitespace (-1: unbounded).
  int max_whitespace = 20;
  /// Largest minItems / maxItems - minItems / maxLength accepted (each copy is a grammar rule).
  std::int64_t max_repeat = 1000;
};

/// The GBNF text for a JSON schema given as JSON text. parse_error for malformed JSON or a
/// malformed schema, unsupported_error for keywords outside the supported subset, value_error
/// for a schema no document satisfies (e.g. required names a property not listed).
std::string json_schema_to_gbnf(std::string_view schema_json, json_schema_options o = {});

/// compile_grammar(json_schema_to_gbnf(schema_json, o)).
inline std::shared_ptr<const grammar> grammar_from_json_schema(std::string_view schema_json,
                                                               json_schema_options o = {}) {
  return compile_grammar(json_schema_to_gbnf(schema_json, o), "json schema grammar");
}

// ---- implementation ---------------------------------------------------------------------------

namespace detail::schema {

namespace js = ::tfm::detail::json;

/// A GBNF string literal that matches exactly the bytes s.
inline std::string gbnf_literal(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (char ch : s) {
    const auto b = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (b < 0x20 || b == 0x7F) {
      out += "\\x";
      out.push_back(hex[b >> 4]);
      out.push_back(hex[b & 15]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
  return out;
}

/// The compact canonical JSON text of a value (see SPELLING).
inline void canonical(const js::value& v, std::string& out, const std::string& path) {
  switch (v.type) {
    case js::kind::null:
      out += "null";
      return;
    case js::kind::boolean:
      out += v.boolean ? "true" : "false";
      return;
    case js::kind::number: {
      if (v.integral) {
        out += std::to_string(v.integer);
        return;
      }
      if (!std::isfinite(v.number))
        fail(errc::unsupported, "tfm::infer::json_schema_to_gbnf: the number at ", path,
             " is too large for a double.");
      char buf[64];
      const auto r = std::to_chars(buf, buf + sizeof buf, v.number);
      std::string t(buf, r.ptr);
      if (t.find_first_of(".e") == std::string::npos) t += ".0";
      out += t;
      return;
    }
    case js::kind::string:
      js::append_quoted(out, v.string, false);
      return;
    case js::kind::array: {
      out.push_back('[');
      for (std::size_t i = 0; i < v.array.size(); ++i) {
        if (i) out.push_back(',');
        canonical(v.array[i], out, path);
      }
      out.push_back(']');
      return;
    }
    case js::kind::object: {
      out.push_back('{');
      for (std::size_t i = 0; i < v.object.size(); ++i) {
        if (i) out.push_back(',');
        js::append_quoted(out, v.object[i].first, false);
        out.push_back(':');
        canonical(v.object[i].second, out, path);
      }
      out.push_back('}');
      return;
    }
  }
}

inline bool type_matches(const js::value& v, std::string_view t) {
  if (t == "null") return v.is_null();
  if (t == "boolean") return v.is_bool();
  if (t == "string") return v.is_string();
  if (t == "array") return v.is_array();
  if (t == "object") return v.is_object();
  if (t == "number") return v.is_number();
  if (t == "integer")
    return v.is_number() &&
           (v.integral || (std::isfinite(v.number) && std::floor(v.number) == v.number));
  return false;
}

class converter {
 public:
  explicit converter(json_schema_options o) : o_(o) {}

  std::string run(std::string_view text) {
    const js::value schema = js::parse(text, "json schema");
    root_ = &schema;
    const std::string top = visit(schema, "schema", "#");
    std::string g = "# generated from a JSON schema by tfm::infer::json_schema_to_gbnf\n";
    g += "root ::= ws " + top + " ws\n";
    for (const auto& [name, body] : rules_) g += name + " ::= " + body + "\n";
    g += json_value_rules(o_.max_whitespace);
    g += "integer ::= \"-\"? ( \"0\" | [1-9] [0-9]* )\n";
    g += "boolean ::= \"true\" | \"false\"\n";
    g += "null ::= \"null\"\n";
    return g;
  }

 private:
  static constexpr std::string_view fn = "tfm::infer::json_schema_to_gbnf: ";

  std::string define(const std::string& base, const std::string& body) {
    std::string name;
    for (char c : base) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
      const char d = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : ok ? c : '-';
      if (d == '-' && (name.empty() || name.back() == '-')) continue;
      name.push_back(d);
    }
    while (!name.empty() && name.back() == '-') name.pop_back();
    if (name.empty() || name.rfind("schema", 0) != 0) name = "schema-" + name;
    std::string unique = name;
    for (int k = 2; used_.count(unique); ++k) unique = name + "-" + std::to_string(k);
    used_.insert(unique);
    rules_.emplace_back(unique, body);
    return unique;
  }

  static std::string rep(const std::string& x, std::int64_t lo, std::int64_t hi) {
    if (hi < 0) return lo == 0 ? x + "*" : x + "{" + std::to_string(lo) + ",}";
    if (lo == hi) return lo == 0 ? std::string() : x + "{" + std::to_string(lo) + "}";
    return x + "{" + std::to_string(lo) + "," + std::to_string(hi) + "}";
  }

  std::int64_t count_keyword(const js::value& s, std::string_view key, std::int64_t dflt,
                             const std::string& path) const {
    const js::value* v = s.find(key);
    if (!v) return dflt;
    if (!v->is_number() || !type_matches(*v, "integer") || v->number < 0)
      fail(errc::parse, fn, path, "/", key, " must be a non-negative integer.");
    if (v->number > static_cast<double>(o_.max_repeat))
      fail(errc::unsupported, fn, path, "/", key, " = ", static_cast<std::int64_t>(v->number),
           " is above the supported limit of ", o_.max_repeat, ".");
    return static_cast<std::int64_t>(v->number);
  }

  void check_keywords(const js::value& s, const std::string& path) const {
    static const std::unordered_set<std::string_view> supported = {
        "type",      "properties", "required", "additionalProperties",
        "items",     "minItems",   "maxItems", "minLength",
        "maxLength", "enum",       "const",    "anyOf",
        "allOf",     "$ref"};
    static const std::unordered_set<std::string_view> ignored = {
        "$schema", "$id",      "$comment",   "$defs",    "definitions", "title", "description",
        "default", "examples", "deprecated", "readOnly", "writeOnly",   "format"};
    for (const auto& m : s.object)
      if (!supported.count(m.first) && !ignored.count(m.first))
        fail(errc::unsupported, fn, "keyword '", m.first, "' at ", path,
             " is not supported (supported: type, properties, required, additionalProperties, "
             "items, minItems, maxItems, minLength, maxLength, enum, const, anyOf, allOf of one "
             "schema, $ref to #, #/$defs/... or #/definitions/...).");
  }

  std::vector<std::string> types_of(const js::value& s, const std::string& path) const {
    std::vector<std::string> out;
    const js::value* t = s.find("type");
    if (!t) return out;
    const auto add = [&](const js::value& x) {
      static const std::unordered_set<std::string_view> names = {
          "object", "array", "string", "number", "integer", "boolean", "null"};
      if (!x.is_string() || !names.count(x.string))
        fail(errc::parse, fn, path,
             "/type must name object, array, string, number, integer, boolean or null.");
      out.push_back(x.string);
    };
    if (t->is_array()) {
      if (t->array.empty()) fail(errc::parse, fn, path, "/type is an empty list.");
      for (const auto& x : t->array) add(x);
    } else {
      add(*t);
    }
    return out;
  }

  std::string visit(const js::value& s, const std::string& name, const std::string& path) {
    if (s.is_bool()) {
      if (s.boolean) return "value";
      fail(errc::unsupported, fn, "the schema at ", path, " is false: no value satisfies it.");
    }
    if (!s.is_object()) fail(errc::parse, fn, "the schema at ", path, " is not an object.");
    check_keywords(s, path);
    if (s.find("$ref") || s.find("allOf")) return visit_alias(s, name, path);
    const std::vector<std::string> types = types_of(s, path);
    if (s.find("enum") || s.find("const")) return visit_enum(s, types, name, path);
    if (const js::value* any = s.find("anyOf")) {
      for (const auto& m : s.object)
        if (m.first != "anyOf" && m.first != "type" && supported_validation(m.first))
          fail(errc::unsupported, fn, "keyword '", m.first, "' beside anyOf at ", path,
               " is not supported.");
      if (!any->is_array() || any->array.empty())
        fail(errc::parse, fn, path, "/anyOf must be a non-empty list of schemas.");
      std::string body;
      for (std::size_t i = 0; i < any->array.size(); ++i) {
        if (i) body += " | ";
        body += visit(any->array[i], name + "-" + std::to_string(i + 1),
                      path + "/anyOf/" + std::to_string(i));
      }
      if (!types.empty())
        fail(errc::unsupported, fn, "type beside anyOf at ", path, " is not supported.");
      return define(name, body);
    }
    std::vector<std::string> ts = types;
    if (ts.empty()) {
      if (s.find("properties") || s.find("required") || s.find("additionalProperties"))
        ts = {"object"};
      else if (s.find("items") || s.find("minItems") || s.find("maxItems"))
        ts = {"array"};
      else if (s.find("minLength") || s.find("maxLength"))
        ts = {"string"};
      else
        return "value";
    }
    if (ts.size() == 1) return visit_type(s, ts[0], name, path);
    std::string body;
    for (std::size_t i = 0; i < ts.size(); ++i) {
      if (i) body += " | ";
      body += visit_type(s, ts[i], name + "-" + ts[i], path);
    }
    return define(name, body);
  }

  static bool supported_validation(std::string_view k) {
    return k == "type" || k == "properties" || k == "required" || k == "additionalProperties" ||
           k == "items" || k == "minItems" || k == "maxItems" || k == "minLength" ||
           k == "maxLength" || k == "enum" || k == "const" || k == "anyOf" || k == "allOf" ||
           k == "$ref";
  }

  /// $ref (local: "#", "#/$defs/name", "#/definitions/name") and allOf with one schema: the
  /// same value as the schema referred to; no other validation keyword may stand beside them.
  std::string visit_alias(const js::value& s, const std::string& name, const std::string& path) {
    const bool is_ref = s.find("$ref") != nullptr;
    for (const auto& m : s.object)
      if (supported_validation(m.first) && m.first != (is_ref ? "$ref" : "allOf"))
        fail(errc::unsupported, fn, "keyword '", m.first, "' beside ", is_ref ? "$ref" : "allOf",
             " at ", path, " is not supported.");
    if (!is_ref) {
      const js::value* all = s.find("allOf");
      if (!all->is_array() || all->array.size() != 1)
        fail(errc::unsupported, fn, path,
             "/allOf is supported with exactly one schema (an intersection is not).");
      return visit(all->array[0], name, path + "/allOf/0");
    }
    const js::value* ref = s.find("$ref");
    if (!ref->is_string()) fail(errc::parse, fn, path, "/$ref must be a string.");
    const std::string& r = ref->string;
    auto it = refs_.find(r);
    if (it != refs_.end()) return it->second;
    const js::value* target = nullptr;
    std::string base = "schema";
    if (r == "#") {
      target = root_;
    } else {
      for (std::string_view prefix : {"#/$defs/", "#/definitions/"}) {
        if (r.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string key = r.substr(prefix.size());
        const js::value* defs = root_->find(prefix.substr(2, prefix.size() - 3));
        if (defs && key.find_first_of("/~") == std::string::npos) target = defs->find(key);
        base = "schema-" + key;
      }
    }
    if (!target)
      fail(errc::unsupported, fn, path, "/$ref '", r,
           "' is not supported or not found (only #, #/$defs/<name> and #/definitions/<name> "
           "in this document).");
    // Name the rule before visiting it, so recursive references end in a reference to it.
    const std::string rule = define(base + "-ref", "");
    const std::size_t slot = rules_.size() - 1;
    refs_.emplace(r, rule);
    const std::string body = visit(*target, base, r);
    rules_[slot].second = body;
    return rule;
  }

  std::string visit_enum(const js::value& s, const std::vector<std::string>& types,
                         const std::string& name, const std::string& path) {
    for (const auto& m : s.object)
      if (supported_validation(m.first) && m.first != "type" && m.first != "enum" &&
          m.first != "const")
        fail(errc::unsupported, fn, "keyword '", m.first, "' beside enum/const at ", path,
             " is not supported.");
    std::vector<const js::value*> vals;
    if (const js::value* c = s.find("const")) vals.push_back(c);
    if (const js::value* e = s.find("enum")) {
      if (!e->is_array()) fail(errc::parse, fn, path, "/enum must be a list.");
      if (s.find("const"))
        fail(errc::unsupported, fn, "enum and const together at ", path, " are not supported.");
      for (const auto& x : e->array) vals.push_back(&x);
    }
    std::string body;
    std::unordered_set<std::string> seen;
    for (const js::value* v : vals) {
      bool ok = types.empty();
      for (const auto& t : types) ok = ok || type_matches(*v, t);
      if (!ok) continue;
      std::string text;
      canonical(*v, text, path);
      if (!seen.insert(text).second) continue;
      if (!body.empty()) body += " | ";
      body += gbnf_literal(text);
    }
    if (body.empty())
      fail(errc::value, fn, "no enum/const value at ", path, " has the schema's type.");
    return define(name, body);
  }

  std::string visit_type(const js::value& s, const std::string& t, const std::string& name,
                         const std::string& path) {
    if (t == "number" || t == "integer" || t == "boolean" || t == "null") return t;
    if (t == "string") {
      const std::int64_t lo = count_keyword(s, "minLength", 0, path);
      const std::int64_t hi = count_keyword(s, "maxLength", -1, path);
      if (lo == 0 && hi < 0) return "string";
      if (hi >= 0 && hi < lo) fail(errc::value, fn, path, ": maxLength is below minLength.");
      return define(name, "\"\\\"\" " + rep("char", lo, hi) + " \"\\\"\"");
    }
    if (t == "array") return visit_array(s, name, path);
    return visit_object(s, name, path);
  }

  std::string visit_array(const js::value& s, const std::string& name, const std::string& path) {
    std::string item = "value";
    if (const js::value* it = s.find("items")) {
      if (it->is_array())
        fail(errc::unsupported, fn, path, "/items as a list (tuple validation) is not supported.");
      item = visit(*it, name + "-item", path + "/items");
    }
    const std::int64_t lo = count_keyword(s, "minItems", 0, path);
    const std::int64_t hi = count_keyword(s, "maxItems", -1, path);
    if (hi >= 0 && hi < lo) fail(errc::value, fn, path, ": maxItems is below minItems.");
    if (hi == 0) return define(name, "\"[\" ws \"]\"");
    const std::string more =
        rep("( \",\" ws " + item + " ws )", lo > 0 ? lo - 1 : 0, hi < 0 ? -1 : hi - 1);
    std::string inner = item + " ws" + (more.empty() ? "" : " " + more);
    if (lo == 0) inner = "( " + inner + " )?";
    return define(name, "\"[\" ws " + inner + " \"]\"");
  }

  std::string visit_object(const js::value& s, const std::string& name, const std::string& path) {
    const js::value* props = s.find("properties");
    const js::value* req = s.find("required");
    const js::value* ap = s.find("additionalProperties");
    if (props && !props->is_object()) fail(errc::parse, fn, path, "/properties must be an object.");
    std::vector<std::string> required;
    if (req) {
      if (!req->is_array()) fail(errc::parse, fn, path, "/required must be a list of names.");
      for (const auto& r : req->array) {
        if (!r.is_string()) fail(errc::parse, fn, path, "/required must be a list of names.");
        required.push_back(r.string);
      }
    }
    if (ap && !ap->is_bool() && !ap->is_object())
      fail(errc::parse, fn, path, "/additionalProperties must be a boolean or a schema.");
    if (!props || props->object.empty()) {
      if (!required.empty())
        fail(errc::unsupported, fn, path,
             ": required without properties is not supported (list the properties).");
      if (ap && ap->is_bool() && !ap->boolean) return define(name, "\"{\" ws \"}\"");
      if (!ap || ap->is_bool()) return "object";
      const std::string val = visit(*ap, name + "-value", path + "/additionalProperties");
      const std::string kv = define(name + "-kv", "string ws \":\" ws " + val + " ws");
      return define(name, "\"{\" ws ( " + kv + " ( \",\" ws " + kv + " )* )? \"}\"");
    }
    if (ap && !(ap->is_bool() && !ap->boolean))
      fail(errc::unsupported, fn, path,
           "/additionalProperties other than false beside properties is not supported.");
    const auto& ps = props->object;
    for (const auto& r : required) {
      bool found = false;
      for (const auto& p : ps) found = found || p.first == r;
      if (!found)
        fail(errc::value, fn, path, "/required names '", r,
             "', which is not in properties (additional properties are not allowed).");
    }
    const std::size_t n = ps.size();
    std::vector<std::string> kv(n);
    std::vector<char> is_req(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      for (const auto& r : required) is_req[i] = is_req[i] || r == ps[i].first;
      const std::string val =
          visit(ps[i].second, name + "-" + ps[i].first, path + "/properties/" + ps[i].first);
      std::string key;
      js::append_quoted(key, ps[i].first, false);
      kv[i] = define(name + "-" + ps[i].first + "-kv",
                     gbnf_literal(key) + " ws \":\" ws " + val + " ws");
    }
    // tail(i): the members i.. after at least one was written (each preceded by a comma);
    // head(i): the members i.. when none was written yet. Order is the schema's.
    std::vector<std::string> tail(n + 1), head(n + 1);
    for (std::size_t i = n; i-- > 0;) {
      const std::string t_next = tail[i + 1].empty() ? "" : " " + tail[i + 1];
      const std::string tb =
          is_req[i] ? "\",\" ws " + kv[i] + t_next : "( \",\" ws " + kv[i] + " )?" + t_next;
      tail[i] = define(name + "-tail", tb);
      // (An empty alternative cannot end a line: GBNF continues a rule after a trailing '|'.)
      const std::string hb = is_req[i]             ? kv[i] + t_next
                             : head[i + 1].empty() ? "( " + kv[i] + t_next + " )?"
                                                   : kv[i] + t_next + " | " + head[i + 1];
      head[i] = define(name + "-head", hb);
    }
    return define(name, "\"{\" ws " + head[0] + " \"}\"");
  }

  json_schema_options o_;
  const js::value* root_ = nullptr;
  std::unordered_map<std::string, std::string> refs_;  // $ref -> rule name
  std::vector<std::pair<std::string, std::string>> rules_;
  std::unordered_set<std::string> used_;
};

}  // namespace detail::schema

inline std::string json_schema_to_gbnf(std::string_view schema_json, json_schema_options o) {
  return detail::schema::converter(o).run(schema_json);
}

}  // namespace infer
TFM_END_NAMESPACE
