// tools/tfm/serve/api.hpp: the request side of `tfm serve`'s OpenAI-compatible API, without a
// socket: the OpenAI error object, and the parsing and validation of the bodies of
// POST /v1/completions, /v1/chat/completions and /v1/embeddings into plain structs.
//
// CONTRACT
//   Every parse_* function either returns a complete, valid set of parameters or throws
//   api_error with the HTTP status, the OpenAI error type and code, and `param` naming the field
//   (the OpenAI API reference, https://platform.openai.com/docs/api-reference, for the fields,
//   their types and ranges; vLLM's and llama.cpp's servers for the extensions top_k, min_p,
//   typical_p, repetition_penalty). Unknown fields are ignored (as vLLM and llama.cpp do); known
//   fields of the wrong type, or out of range, are 400 invalid_request_error naming the field.
//   `null` for an optional field means its default.
#pragma once

#include "typeformer/infer/sampler.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace tfm_cli::serve {

using json = nlohmann::json;

/// An error answered with the OpenAI error object
///   {"error": {"message": ..., "type": ..., "param": ... | null, "code": ... | null}}.
struct api_error : std::runtime_error {
  int status;
  std::string type, param, code;  // empty param / code: null
  api_error(int status_, std::string message, std::string type_ = "invalid_request_error",
            std::string param_ = {}, std::string code_ = {})
      : std::runtime_error(std::move(message)),
        status(status_),
        type(std::move(type_)),
        param(std::move(param_)),
        code(std::move(code_)) {}
};

inline api_error bad_request(std::string message, std::string param = {}, std::string code = {}) {
  return api_error(400, std::move(message), "invalid_request_error", std::move(param),
                   std::move(code));
}

/// The body of an error response.
inline json error_body(const std::string& message, const std::string& type,
                       const std::string& param = {}, const std::string& code = {}) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}
inline json error_body(const api_error& e) { return error_body(e.what(), e.type, e.param, e.code); }

/// json::dump for the wire: invalid UTF-8 (a token's bytes cut inside a character) becomes
/// U+FFFD instead of an exception.
inline std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// Parses a request body: malformed JSON or a body that is not an object is 400.
inline json parse_body(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw bad_request("the request body is not valid JSON", {}, "invalid_json");
  if (!j.is_object()) throw bad_request("the request body must be a JSON object");
  return j;
}

// ---- typed field access ----------------------------------------------------------------------

namespace detail {

inline const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    case json::value_t::number_float:
      return "a number";
    default:
      return "an integer";
  }
}

[[noreturn]] inline void wrong_type(const std::string& field, const char* want, const json& v) {
  throw bad_request("'" + field + "' must be " + want + ", not " + type_name(v), field);
}

/// The field, or nullptr when it is absent or null.
inline const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace detail

inline std::optional<double> get_number(const json& body, const char* name) {
  const json* v = detail::field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) detail::wrong_type(name, "a number", *v);
  return v->get<double>();
}

/// An integer field; a float with an integral value (2.0) is accepted, as Python clients send.
inline std::optional<std::int64_t> get_int(const json& body, const char* name) {
  const json* v = detail::field(body, name);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      throw bad_request(std::string("'") + name + "' is too large", name);
    return v->get<std::int64_t>();
  }
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15)
      return static_cast<std::int64_t>(d);
  }
  detail::wrong_type(name, "an integer", *v);
}

inline std::optional<bool> get_bool(const json& body, const char* name) {
  const json* v = detail::field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) detail::wrong_type(name, "a boolean", *v);
  return v->get<bool>();
}

inline std::optional<std::string> get_string(const json& body, const char* name) {
  const json* v = detail::field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_string()) detail::wrong_type(name, "a string", *v);
  return v->get<std::string>();
}

/// A number field within [lo, hi] (either bound may be open: lo_open / hi_open).
inline std::optional<double> get_ranged(const json& body, const char* name, double lo, double hi,
                                        bool lo_open = false, bool hi_open = false) {
  const auto v = get_number(body, name);
  if (!v) return v;
  const bool ok = (lo_open ? *v > lo : *v >= lo) && (hi_open ? *v < hi : *v <= hi);
  if (!ok) {
    std::string range = std::string(lo_open ? "(" : "[") + json(lo).dump() + ", " +
                        json(hi).dump() + (hi_open ? ")" : "]");
    throw bad_request("'" + std::string(name) + "' = " + json(*v).dump() + " is outside " + range,
                      name);
  }
  return v;
}

// ---- generation parameters -------------------------------------------------------------------

/// What the server needs to know about the model to validate a request.
struct model_limits {
  std::string id;            ///< the model name /v1/models lists
  std::int64_t context = 0;  ///< positions one sequence may reach
  std::int64_t vocab = 0;    ///< token ids are in [0, vocab)
  std::int64_t max_logprobs = 20;
};

/// The parameters common to completions and chat completions.
struct generation_params {
  tfm::infer::sampling_options sampling;
  std::optional<std::int64_t> max_tokens;  ///< absent: the endpoint's default
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  ///< stream_options.include_usage
  std::int32_t logprobs = -1;  ///< -1: none; n >= 0: the token's logprob and the top n
  bool json_object = false;    ///< response_format {"type": "json_object"}
  bool seeded = false;         ///< `seed` was given (else the server picks one)
  bool ignore_eos = false;     ///< extension (vLLM, llama.cpp)
};

/// A completion prompt: text, or token ids.
using prompt_input = std::variant<std::string, std::vector<std::int32_t>>;

struct completion_params {
  generation_params gen;
  prompt_input prompt;
  bool echo = false;
};

struct chat_params {
  generation_params gen;
  json messages;  ///< validated: a non-empty array of {role, content}
};

namespace detail {

/// The model field: absent is the served model; another name is 404 model_not_found.
inline void check_model(const json& body, const model_limits& m) {
  const auto name = get_string(body, "model");
  if (name && *name != m.id)
    throw api_error(404,
                    "The model '" + *name + "' does not exist; this server serves '" + m.id + "'.",
                    "invalid_request_error", "model", "model_not_found");
}

inline std::vector<std::string> parse_stop(const json& body) {
  const json* v = field(body, "stop");
  std::vector<std::string> out;
  if (!v) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string()) wrong_type("stop", "a string or an array of strings", *v);
      out.push_back(s.get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or an array of strings", *v);
  }
  for (const std::string& s : out)
    if (s.empty()) throw bad_request("'stop' must not contain an empty string", "stop");
  if (out.size() > 16) throw bad_request("'stop' holds more than 16 strings", "stop");
  return out;
}

inline std::vector<tfm::infer::token_bias> parse_logit_bias(const json& body,
                                                            const model_limits& m) {
  const json* v = field(body, "logit_bias");
  std::vector<tfm::infer::token_bias> out;
  if (!v) return out;
  if (!v->is_object()) wrong_type("logit_bias", "an object mapping token ids to numbers", *v);
  for (const auto& [key, val] : v->items()) {
    std::int64_t id = -1;
    std::size_t used = 0;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != key.size() || key.empty() || id < 0 || id >= m.vocab)
      throw bad_request("'logit_bias' key '" + key + "' is not a token id in [0, " +
                            std::to_string(m.vocab) + ")",
                        "logit_bias");
    if (!val.is_number()) wrong_type("logit_bias", "an object mapping token ids to numbers", val);
    const double b = val.get<double>();
    if (!(b >= -100 && b <= 100))
      throw bad_request("'logit_bias' value for token " + key + " is outside [-100, 100]",
                        "logit_bias");
    out.push_back({static_cast<std::int32_t>(id), b});
  }
  return out;
}

/// Fields shared by both endpoints. `default_max` is the max_tokens when none is given (0:
/// none, generation runs to the context).
inline generation_params parse_common(const json& body, const model_limits& m) {
  check_model(body, m);
  generation_params g;
  auto& s = g.sampling;
  if (auto v = get_int(body, "n"); v && *v != 1)
    throw bad_request("'n' = " + std::to_string(*v) + " is not supported: only n = 1", "n");
  if (auto v = get_int(body, "best_of"); v && *v != 1)
    throw bad_request("'best_of' is not supported (only 1)", "best_of");
  // max_completion_tokens is the newer name of max_tokens (chat); either is accepted.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    const auto v = get_int(body, name);
    if (!v) continue;
    if (*v < 1)
      throw bad_request("'" + std::string(name) + "' = " + std::to_string(*v) + " must be >= 1",
                        name);
    if (*v > m.context)
      throw bad_request("'" + std::string(name) + "' = " + std::to_string(*v) +
                            " is larger than the model's context of " + std::to_string(m.context) +
                            " tokens",
                        name, "context_length_exceeded");
    g.max_tokens = *v;
  }
  if (auto v = get_ranged(body, "temperature", 0, 2)) s.temperature = *v;
  if (auto v = get_ranged(body, "top_p", 0, 1, /*lo_open=*/true)) s.top_p = *v;
  if (auto v = get_int(body, "top_k")) {
    if (*v < -1) throw bad_request("'top_k' must be >= 0 (0 or -1: off)", "top_k");
    s.top_k = *v < 0 ? 0 : *v;
  }
  if (auto v = get_ranged(body, "min_p", 0, 1)) s.min_p = *v;
  if (auto v = get_ranged(body, "typical_p", 0, 1, /*lo_open=*/true)) s.typical_p = *v;
  if (auto v = get_ranged(body, "repetition_penalty", 0, 100, /*lo_open=*/true))
    s.repetition_penalty = *v;
  if (auto v = get_ranged(body, "presence_penalty", -2, 2)) s.presence_penalty = *v;
  if (auto v = get_ranged(body, "frequency_penalty", -2, 2)) s.frequency_penalty = *v;
  if (auto v = get_int(body, "seed")) {
    s.seed = static_cast<std::uint64_t>(*v);
    g.seeded = true;
  }
  s.logit_bias = parse_logit_bias(body, m);
  g.stop = parse_stop(body);
  g.stream = get_bool(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (!g.stream)
      throw bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    g.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  if (const json* rf = field(body, "response_format")) {
    if (!rf->is_object()) wrong_type("response_format", "an object", *rf);
    const auto type = get_string(*rf, "type");
    if (!type || *type == "text") {
    } else if (*type == "json_object") {
      g.json_object = true;
    } else {
      throw bad_request(
          "'response_format' type '" + *type + "' is not supported (only 'text' and 'json_object')",
          "response_format");
    }
  }
  g.ignore_eos = get_bool(body, "ignore_eos").value_or(false);
  (void)get_string(body, "user");  // accepted, unused; still must be a string
  try {
    tfm::infer::validate(s);  // the sampler's own rules (e.g. repeated logit_bias ids)
  } catch (const std::exception& e) {
    throw bad_request(e.what());
  }
  return g;
}

inline std::int32_t checked_logprobs(std::int64_t n, const char* name, const model_limits& m) {
  if (n < 0 || n > m.max_logprobs)
    throw bad_request("'" + std::string(name) + "' = " + std::to_string(n) + " is outside [0, " +
                          std::to_string(m.max_logprobs) + "]",
                      name);
  return static_cast<std::int32_t>(n);
}

}  // namespace detail

/// POST /v1/completions.
inline completion_params parse_completion(const json& body, const model_limits& m) {
  completion_params c;
  c.gen = detail::parse_common(body, m);
  if (auto v = get_int(body, "logprobs"))
    c.gen.logprobs = detail::checked_logprobs(*v, "logprobs", m);
  c.echo = get_bool(body, "echo").value_or(false);
  if (c.echo) throw bad_request("'echo' is not supported", "echo");
  if (auto v = get_string(body, "suffix"); v && !v->empty())
    throw bad_request("'suffix' is not supported", "suffix");
  const json* p = detail::field(body, "prompt");
  if (!p) throw bad_request("'prompt' is required", "prompt");
  const char* want = "a string, an array of token ids, or an array of one string";
  if (p->is_string()) {
    c.prompt = p->get<std::string>();
  } else if (p->is_array()) {
    if (p->empty()) throw bad_request("'prompt' is an empty array", "prompt");
    const json& first = (*p)[0];
    if ((first.is_string() || first.is_array()) && p->size() != 1)
      throw bad_request("'prompt' holds " + std::to_string(p->size()) +
                            " prompts: only one prompt per request is supported",
                        "prompt");
    if (first.is_string()) {
      c.prompt = first.get<std::string>();
    } else {
      const json& ids = first.is_array() ? first : *p;
      std::vector<std::int32_t> out;
      for (const json& t : ids) {
        if (!t.is_number_integer()) detail::wrong_type("prompt", want, t);
        const auto id = t.get<std::int64_t>();
        if (id < 0 || id >= m.vocab)
          throw bad_request("'prompt' token id " + std::to_string(id) + " is outside [0, " +
                                std::to_string(m.vocab) + ")",
                            "prompt");
        out.push_back(static_cast<std::int32_t>(id));
      }
      if (out.empty()) throw bad_request("'prompt' has no tokens", "prompt");
      c.prompt = std::move(out);
    }
  } else {
    detail::wrong_type("prompt", want, *p);
  }
  return c;
}

/// POST /v1/chat/completions.
inline chat_params parse_chat(const json& body, const model_limits& m) {
  chat_params c;
  c.gen = detail::parse_common(body, m);
  const bool lp = get_bool(body, "logprobs").value_or(false);
  const auto top = get_int(body, "top_logprobs");
  if (top && !lp) throw bad_request("'top_logprobs' needs 'logprobs' to be true", "top_logprobs");
  if (lp) c.gen.logprobs = top ? detail::checked_logprobs(*top, "top_logprobs", m) : 0;
  const json* msgs = detail::field(body, "messages");
  if (!msgs) throw bad_request("'messages' is required", "messages");
  if (!msgs->is_array()) detail::wrong_type("messages", "an array", *msgs);
  if (msgs->empty()) throw bad_request("'messages' must not be empty", "messages");
  json out = json::array();
  for (std::size_t i = 0; i < msgs->size(); ++i) {
    const json& msg = (*msgs)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) detail::wrong_type(where, "an object", msg);
    const auto role_it = msg.find("role");
    if (role_it == msg.end() || !role_it->is_string())
      throw bad_request("'" + where + ".role' must be a string", where + ".role");
    std::string role = role_it->get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      throw bad_request("'" + where + ".role' = '" + role +
                            "' is not one of system, developer, user, assistant, tool",
                        where + ".role");
    std::string content;
    const auto ct = msg.find("content");
    if (ct == msg.end() || ct->is_null()) {
      if (role != "assistant")
        throw bad_request("'" + where + ".content' is required", where + ".content");
    } else if (ct->is_string()) {
      content = ct->get<std::string>();
    } else if (ct->is_array()) {  // content parts: text only
      for (std::size_t k = 0; k < ct->size(); ++k) {
        const json& part = (*ct)[k];
        const std::string pw = where + ".content[" + std::to_string(k) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          throw bad_request("'" + pw + "' must be an object with a 'type'", pw);
        if (part["type"] != "text")
          throw bad_request("'" + pw + "' has type '" + part["type"].get<std::string>() +
                                "': only text parts are supported",
                            pw);
        const auto text = part.find("text");
        if (text == part.end() || !text->is_string())
          throw bad_request("'" + pw + ".text' must be a string", pw + ".text");
        content += text->get<std::string>();
      }
    } else {
      detail::wrong_type(where + ".content", "a string or an array of text parts", *ct);
    }
    out.push_back({{"role", role}, {"content", content}});
  }
  c.messages = std::move(out);
  return c;
}

/// POST /v1/embeddings: the texts to embed (`input`: a string or an array of strings).
struct embedding_params {
  std::vector<std::string> input;
  bool base64 = false;  ///< encoding_format "base64": little-endian float32 bytes, base64
};

inline embedding_params parse_embedding(const json& body, const model_limits& m,
                                        std::size_t max_inputs = 2048) {
  detail::check_model(body, m);
  embedding_params e;
  const json* in = detail::field(body, "input");
  if (!in) throw bad_request("'input' is required", "input");
  if (in->is_string()) {
    e.input.push_back(in->get<std::string>());
  } else if (in->is_array()) {
    for (const json& s : *in) {
      if (!s.is_string())
        throw bad_request(
            "'input' must be a string or an array of strings (token arrays are "
            "not supported)",
            "input");
      e.input.push_back(s.get<std::string>());
    }
    if (e.input.empty()) throw bad_request("'input' must not be empty", "input");
  } else {
    detail::wrong_type("input", "a string or an array of strings", *in);
  }
  if (e.input.size() > max_inputs)
    throw bad_request("'input' holds more than " + std::to_string(max_inputs) + " texts", "input");
  const auto fmt = get_string(body, "encoding_format").value_or("float");
  if (fmt != "float" && fmt != "base64")
    throw bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format");
  e.base64 = fmt == "base64";
  if (auto d = get_int(body, "dimensions"))
    throw bad_request("'dimensions' is not supported", "dimensions");
  (void)get_string(body, "user");
  return e;
}

/// RFC 4648 base64 of bytes (for encoding_format "base64").
inline std::string base64(const void* data, std::size_t n) {
  static constexpr char digits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (std::size_t i = 0; i < n; i += 3) {
    const std::uint32_t b = (std::uint32_t{p[i]} << 16) |
                            (i + 1 < n ? std::uint32_t{p[i + 1]} << 8 : 0) |
                            (i + 2 < n ? std::uint32_t{p[i + 2]} : 0);
    out += digits[(b >> 18) & 63];
    out += digits[(b >> 12) & 63];
    out += i + 1 < n ? digits[(b >> 6) & 63] : '=';
    out += i + 2 < n ? digits[b & 63] : '=';
  }
  return out;
}

/// Bearer-token check: nothing to check when `key` is empty; else the Authorization header must
/// be "Bearer <key>" (401 invalid_api_key otherwise).
inline void check_api_key(const std::string& key, const std::string& authorization) {
  if (key.empty()) return;
  constexpr std::string_view prefix = "Bearer ";
  if (authorization.empty())
    throw api_error(401,
                    "You didn't provide an API key: pass it in the Authorization header as "
                    "'Bearer <key>'.",
                    "invalid_request_error", {}, "invalid_api_key");
  const bool ok = authorization.size() == prefix.size() + key.size() &&
                  authorization.compare(0, prefix.size(), prefix) == 0 &&
                  authorization.compare(prefix.size(), std::string::npos, key) == 0;
  if (!ok)
    throw api_error(401, "Incorrect API key provided.", "invalid_request_error", {},
                    "invalid_api_key");
}

}  // namespace tfm_cli::serve
