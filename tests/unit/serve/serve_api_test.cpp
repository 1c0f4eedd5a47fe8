// `tfm serve` without a socket (tools/tfm/serve/*.hpp): request parsing and validation (every
// bad input -> HTTP status, OpenAI error type, param), the API key check, base64 (RFC 4648 test
// vectors), the SSE framing and the bodies of completions / chat completions (the OpenAI API
// reference's shapes), the Prometheus text format of /metrics (parsed back), and the chat
// template path on SmolLM2's own template (expected text rendered by Python jinja2; skipped when
// the model is not cached).
#include <doctest/doctest.h>

#include "serve/api.hpp"
#include "serve/chat.hpp"
#include "serve/metrics.hpp"
#include "serve/response.hpp"

#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"

#include <array>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace tfm_cli::serve;

namespace {

const model_limits limits{.id = "m", .context = 256, .vocab = 1000, .max_logprobs = 20};

struct expected_error {
  int status;
  std::string type, param, code;
};

template <class F>
expected_error error_of(F&& f) {
  try {
    f();
  } catch (const api_error& e) {
    return {e.status, e.type, e.param, e.code};
  }
  return {0, "", "", ""};
}

expected_error completion_error(const std::string& body) {
  return error_of([&] { (void)parse_completion(parse_body(body), limits); });
}
expected_error chat_error(const std::string& body) {
  return error_of([&] { (void)parse_chat(parse_body(body), limits); });
}

void check_400(const expected_error& e, const std::string& param, const std::string& code = {}) {
  CHECK(e.status == 400);
  CHECK(e.type == "invalid_request_error");
  CHECK(e.param == param);
  if (!code.empty()) CHECK(e.code == code);
}

}  // namespace

TEST_CASE("serve: malformed and non-object bodies are 400") {
  for (const char* body : {"", "{", "{\"prompt\": }", "nul", "{\"a\":1}x", "\xff"}) {
    CAPTURE(body);
    const auto e = error_of([&] { (void)parse_body(body); });
    CHECK(e.status == 400);
    CHECK(e.code == "invalid_json");
  }
  for (const char* body : {"[]", "1", "\"x\"", "null"}) {
    CAPTURE(body);
    CHECK(error_of([&] { (void)parse_body(body); }).status == 400);
  }
}

TEST_CASE("serve: the error object") {
  const json e = error_body(
      api_error(404, "no such model", "invalid_request_error", "model", "model_not_found"));
  CHECK(e.at("error").at("message") == "no such model");
  CHECK(e.at("error").at("type") == "invalid_request_error");
  CHECK(e.at("error").at("param") == "model");
  CHECK(e.at("error").at("code") == "model_not_found");
  const json n = error_body("x", "server_error");
  CHECK(n.at("error").at("param").is_null());
  CHECK(n.at("error").at("code").is_null());
}

TEST_CASE("serve: completion requests, valid") {
  const auto c = parse_completion(parse_body(R"({
      "model": "m", "prompt": "Hello", "max_tokens": 7, "temperature": 0, "top_p": 0.5,
      "top_k": 40, "min_p": 0.1, "seed": 42, "stop": ["\n", "END"], "presence_penalty": 0.5,
      "frequency_penalty": -0.5, "logit_bias": {"5": -100, "17": 2.5}, "logprobs": 3,
      "stream": true, "stream_options": {"include_usage": true}, "user": "u",
      "unknown_field": [1, 2]})"),
                                  limits);
  CHECK(std::get<std::string>(c.prompt) == "Hello");
  CHECK(*c.gen.max_tokens == 7);
  CHECK(c.gen.sampling.temperature == 0);
  CHECK(c.gen.sampling.top_p == 0.5);
  CHECK(c.gen.sampling.top_k == 40);
  CHECK(c.gen.sampling.min_p == doctest::Approx(0.1));
  CHECK(c.gen.sampling.seed == 42);
  CHECK(c.gen.seeded);
  CHECK(c.gen.stop == std::vector<std::string>{"\n", "END"});
  CHECK(c.gen.sampling.presence_penalty == 0.5);
  CHECK(c.gen.sampling.frequency_penalty == -0.5);
  REQUIRE(c.gen.sampling.logit_bias.size() == 2);
  for (const auto& b : c.gen.sampling.logit_bias) {  // the keys come in string order
    CHECK((b.token == 5 || b.token == 17));
    CHECK(b.bias == (b.token == 5 ? -100 : 2.5));
  }
  CHECK(c.gen.logprobs == 3);
  CHECK(c.gen.stream);
  CHECK(c.gen.include_usage);

  // Defaults, and the other prompt forms.
  const auto d = parse_completion(parse_body(R"({"prompt": [1, 2, 3]})"), limits);
  CHECK(std::get<std::vector<std::int32_t>>(d.prompt) == std::vector<std::int32_t>{1, 2, 3});
  CHECK(!d.gen.max_tokens);
  CHECK(d.gen.sampling.temperature == 1.0);
  CHECK(!d.gen.seeded);
  CHECK(d.gen.logprobs == -1);
  CHECK(!d.gen.stream);
  CHECK(std::get<std::vector<std::int32_t>>(
            parse_completion(parse_body(R"({"prompt": [[4, 5]]})"), limits).prompt) ==
        std::vector<std::int32_t>{4, 5});
  CHECK(std::get<std::string>(
            parse_completion(parse_body(R"({"prompt": ["one"]})"), limits).prompt) == "one");
  // null means the default; an integral float is an integer; top_k -1 is off; stop as a string.
  const auto e = parse_completion(
      parse_body(R"({"prompt": "x", "max_tokens": 2.0, "temperature": null, "top_k": -1,
                     "stop": "###", "response_format": {"type": "json_object"}})"),
      limits);
  CHECK(*e.gen.max_tokens == 2);
  CHECK(e.gen.sampling.temperature == 1.0);
  CHECK(e.gen.sampling.top_k == 0);
  CHECK(e.gen.stop == std::vector<std::string>{"###"});
  CHECK(e.gen.json_object);
  // max_completion_tokens is the same limit.
  CHECK(*parse_completion(parse_body(R"({"prompt": "x", "max_completion_tokens": 5})"), limits)
             .gen.max_tokens == 5);
}

TEST_CASE("serve: completion requests, every bad field") {
  // The model: another name is 404 model_not_found; a non-string is 400.
  const auto m = completion_error(R"({"model": "gpt-4", "prompt": "x"})");
  CHECK(m.status == 404);
  CHECK(m.code == "model_not_found");
  CHECK(m.param == "model");
  check_400(completion_error(R"({"model": 3, "prompt": "x"})"), "model");
  // max_tokens: zero, negative, huge, not an integer.
  check_400(completion_error(R"({"prompt": "x", "max_tokens": 0})"), "max_tokens");
  check_400(completion_error(R"({"prompt": "x", "max_tokens": -5})"), "max_tokens");
  check_400(completion_error(R"({"prompt": "x", "max_tokens": 257})"), "max_tokens",
            "context_length_exceeded");
  check_400(completion_error(R"({"prompt": "x", "max_tokens": 1e30})"), "max_tokens");
  check_400(completion_error(R"({"prompt": "x", "max_tokens": 18446744073709551615})"),
            "max_tokens");
  check_400(completion_error(R"({"prompt": "x", "max_tokens": "10"})"), "max_tokens");
  check_400(completion_error(R"({"prompt": "x", "max_tokens": 1.5})"), "max_tokens");
  check_400(completion_error(R"({"prompt": "x", "max_completion_tokens": -1})"),
            "max_completion_tokens");
  // Sampling ranges and types.
  check_400(completion_error(R"({"prompt": "x", "temperature": "hot"})"), "temperature");
  check_400(completion_error(R"({"prompt": "x", "temperature": -0.1})"), "temperature");
  check_400(completion_error(R"({"prompt": "x", "temperature": 2.5})"), "temperature");
  check_400(completion_error(R"({"prompt": "x", "top_p": 0})"), "top_p");
  check_400(completion_error(R"({"prompt": "x", "top_p": 1.5})"), "top_p");
  check_400(completion_error(R"({"prompt": "x", "top_k": -2})"), "top_k");
  check_400(completion_error(R"({"prompt": "x", "top_k": 1.5})"), "top_k");
  check_400(completion_error(R"({"prompt": "x", "min_p": 2})"), "min_p");
  check_400(completion_error(R"({"prompt": "x", "presence_penalty": 3})"), "presence_penalty");
  check_400(completion_error(R"({"prompt": "x", "frequency_penalty": [1]})"), "frequency_penalty");
  check_400(completion_error(R"({"prompt": "x", "repetition_penalty": 0})"), "repetition_penalty");
  check_400(completion_error(R"({"prompt": "x", "seed": "s"})"), "seed");
  check_400(completion_error(R"({"prompt": "x", "n": 2})"), "n");
  check_400(completion_error(R"({"prompt": "x", "n": "1"})"), "n");
  check_400(completion_error(R"({"prompt": "x", "best_of": 3})"), "best_of");
  // stop
  check_400(completion_error(R"({"prompt": "x", "stop": 5})"), "stop");
  check_400(completion_error(R"({"prompt": "x", "stop": ["a", 1]})"), "stop");
  check_400(completion_error(R"({"prompt": "x", "stop": ""})"), "stop");
  check_400(
      completion_error(
          R"({"prompt": "x", "stop": ["1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17"]})"),
      "stop");
  // logit_bias
  check_400(completion_error(R"({"prompt": "x", "logit_bias": [1]})"), "logit_bias");
  check_400(completion_error(R"({"prompt": "x", "logit_bias": {"abc": 1}})"), "logit_bias");
  check_400(completion_error(R"({"prompt": "x", "logit_bias": {"1000": 1}})"), "logit_bias");
  check_400(completion_error(R"({"prompt": "x", "logit_bias": {"-1": 1}})"), "logit_bias");
  check_400(completion_error(R"({"prompt": "x", "logit_bias": {"5": 101}})"), "logit_bias");
  check_400(completion_error(R"({"prompt": "x", "logit_bias": {"5": "a"}})"), "logit_bias");
  // stream, stream_options, response_format, logprobs, echo, suffix, user
  check_400(completion_error(R"({"prompt": "x", "stream": "yes"})"), "stream");
  check_400(completion_error(R"({"prompt": "x", "stream_options": {"include_usage": true}})"),
            "stream_options");
  check_400(completion_error(R"({"prompt": "x", "stream": true, "stream_options": 1})"),
            "stream_options");
  check_400(completion_error(R"({"prompt": "x", "stream": true,
                                 "stream_options": {"include_usage": "y"}})"),
            "include_usage");
  check_400(completion_error(R"({"prompt": "x", "response_format": "json"})"), "response_format");
  check_400(completion_error(R"({"prompt": "x", "response_format": {"type": "json_schema"}})"),
            "response_format");
  check_400(completion_error(R"({"prompt": "x", "logprobs": 21})"), "logprobs");
  check_400(completion_error(R"({"prompt": "x", "logprobs": -1})"), "logprobs");
  check_400(completion_error(R"({"prompt": "x", "logprobs": true})"), "logprobs");
  check_400(completion_error(R"({"prompt": "x", "echo": true})"), "echo");
  check_400(completion_error(R"({"prompt": "x", "suffix": "y"})"), "suffix");
  check_400(completion_error(R"({"prompt": "x", "user": 5})"), "user");
  // prompt
  check_400(completion_error(R"({})"), "prompt");
  check_400(completion_error(R"({"prompt": null})"), "prompt");
  check_400(completion_error(R"({"prompt": 5})"), "prompt");
  check_400(completion_error(R"({"prompt": {}})"), "prompt");
  check_400(completion_error(R"({"prompt": []})"), "prompt");
  check_400(completion_error(R"({"prompt": ["a", "b"]})"), "prompt");
  check_400(completion_error(R"({"prompt": [[1], [2]]})"), "prompt");
  check_400(completion_error(R"({"prompt": [[]]})"), "prompt");
  check_400(completion_error(R"({"prompt": [1, "a"]})"), "prompt");
  check_400(completion_error(R"({"prompt": [1, 2.5]})"), "prompt");
  check_400(completion_error(R"({"prompt": [-1]})"), "prompt");
  check_400(completion_error(R"({"prompt": [1000]})"), "prompt");
}

TEST_CASE("serve: chat requests") {
  const auto c = parse_chat(parse_body(R"({
      "model": "m",
      "messages": [{"role": "developer", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                {"type": "text", "text": "there"}]},
                   {"role": "assistant", "content": null},
                   {"role": "user", "content": "ok", "name": "bob"}],
      "logprobs": true, "top_logprobs": 2, "max_completion_tokens": 9})"),
                            limits);
  REQUIRE(c.messages.size() == 4);
  CHECK(c.messages[0]["role"] == "system");  // developer is OpenAI's new name for system
  CHECK(c.messages[1]["content"] == "Hi there");
  CHECK(c.messages[2]["content"] == "");
  CHECK(c.gen.logprobs == 2);
  CHECK(*c.gen.max_tokens == 9);
  CHECK(parse_chat(parse_body(R"({"messages": [{"role": "user", "content": "x"}],
                                   "logprobs": true})"),
                   limits)
            .gen.logprobs == 0);
  CHECK(parse_chat(parse_body(R"({"messages": [{"role": "user", "content": "x"}],
                                   "logprobs": false})"),
                   limits)
            .gen.logprobs == -1);

  check_400(chat_error(R"({})"), "messages");
  check_400(chat_error(R"({"messages": "hi"})"), "messages");
  check_400(chat_error(R"({"messages": []})"), "messages");
  check_400(chat_error(R"({"messages": [1]})"), "messages[0]");
  check_400(chat_error(R"({"messages": [{"content": "x"}]})"), "messages[0].role");
  check_400(chat_error(R"({"messages": [{"role": 1, "content": "x"}]})"), "messages[0].role");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": "x"},
                                         {"role": "wizard", "content": "x"}]})"),
            "messages[1].role");
  check_400(chat_error(R"({"messages": [{"role": "user"}]})"), "messages[0].content");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": 5}]})"), "messages[0].content");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": [{"type": "image_url",
                          "image_url": {"url": "x"}}]}]})"),
            "messages[0].content[0]");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})"),
            "messages[0].content[0].text");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})"),
            "top_logprobs");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                           "top_logprobs": 21})"),
            "top_logprobs");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})"),
            "logprobs");
  check_400(chat_error(R"({"messages": [{"role": "user", "content": "x"}], "n": 3})"), "n");
  const auto m =
      chat_error(R"({"model": "other", "messages": [{"role": "user", "content": "x"}]})");
  CHECK(m.status == 404);
  CHECK(m.code == "model_not_found");
}

TEST_CASE("serve: embedding requests") {
  const auto a = parse_embedding(parse_body(R"({"input": "one", "model": "m"})"), limits);
  CHECK(a.input == std::vector<std::string>{"one"});
  CHECK(!a.base64);
  const auto b =
      parse_embedding(parse_body(R"({"input": ["a", "b"], "encoding_format": "base64"})"), limits);
  CHECK(b.input.size() == 2);
  CHECK(b.base64);
  auto err = [](const char* body) {
    return error_of([&] { (void)parse_embedding(parse_body(body), limits); });
  };
  check_400(err(R"({})"), "input");
  check_400(err(R"({"input": 5})"), "input");
  check_400(err(R"({"input": []})"), "input");
  check_400(err(R"({"input": [1, 2]})"), "input");
  check_400(err(R"({"input": "x", "encoding_format": "hex"})"), "encoding_format");
  check_400(err(R"({"input": "x", "dimensions": 8})"), "dimensions");
  CHECK(err(R"({"input": "x", "model": "z"})").status == 404);
}

TEST_CASE("serve: API key") {
  CHECK_NOTHROW(check_api_key("", ""));
  CHECK_NOTHROW(check_api_key("", "Bearer anything"));
  CHECK_NOTHROW(check_api_key("k1", "Bearer k1"));
  for (const char* h : {"", "Bearer", "Bearer ", "Bearer k2", "bearer k1", "Bearer k1 ", "k1",
                        "Basic k1", "Bearer k11"}) {
    CAPTURE(h);
    const auto e = error_of([&] { check_api_key("k1", h); });
    CHECK(e.status == 401);
    CHECK(e.code == "invalid_api_key");
  }
}

TEST_CASE("serve: base64 (RFC 4648 section 10 test vectors)") {
  const std::pair<const char*, const char*> v[] = {{"", ""},
                                                   {"f", "Zg=="},
                                                   {"fo", "Zm8="},
                                                   {"foo", "Zm9v"},
                                                   {"foob", "Zm9vYg=="},
                                                   {"fooba", "Zm9vYmE="},
                                                   {"foobar", "Zm9vYmFy"}};
  for (const auto& [in, out] : v) CHECK(base64(in, std::strlen(in)) == out);
}

namespace {

/// Splits an SSE body into its data payloads, checking the framing: every event is exactly
/// "data: <payload>\n\n".
std::vector<std::string> sse_payloads(const std::string& body) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < body.size()) {
    REQUIRE(body.compare(at, 6, "data: ") == 0);
    const std::size_t end = body.find("\n\n", at);
    REQUIRE(end != std::string::npos);
    const std::string payload = body.substr(at + 6, end - at - 6);
    CHECK(payload.find('\n') == std::string::npos);
    out.push_back(payload);
    at = end + 2;
  }
  return out;
}

gen_event tok(std::int32_t id, std::string text) {
  gen_event e;
  e.token = id;
  e.piece = text;
  e.text = std::move(text);
  e.logprob = -0.5f;
  e.top = {{"a", -0.25f}, {"b", -2.0f}};
  return e;
}

gen_event last(std::int32_t id, std::string text, std::string why) {
  gen_event e = tok(id, std::move(text));
  e.finish = std::move(why);
  e.prompt_tokens = 5;
  e.completion_tokens = 3;
  e.cached_tokens = 2;
  return e;
}

}  // namespace

TEST_CASE("serve: chat streaming as OpenAI sends it") {
  for (bool usage : {false, true}) {
    CAPTURE(usage);
    response_builder b(endpoint_kind::chat, "chatcmpl-1", 1700000000, "m", false, usage);
    std::string body = b.stream_begin();
    body += b.stream_event(tok(10, "Hel"));
    body += b.stream_event(tok(11, ""));  // a token whose text is held back adds no chunk
    body += b.stream_event(tok(12, "lo"));
    body += b.stream_event(last(2, "", "stop"));  // the end token: no text
    const auto p = sse_payloads(body);
    REQUIRE(p.size() == (usage ? 6u : 5u));
    CHECK(p.back() == "[DONE]");
    std::string content;
    for (std::size_t i = 0; i + 1 < p.size(); ++i) {
      const json j = json::parse(p[i]);
      CHECK(j["id"] == "chatcmpl-1");
      CHECK(j["object"] == "chat.completion.chunk");
      CHECK(j["created"] == 1700000000);
      CHECK(j["model"] == "m");
      CHECK(j.contains("usage") == usage);
      if (usage && i == p.size() - 2) {  // the usage chunk
        CHECK(j["choices"].empty());
        CHECK(j["usage"]["prompt_tokens"] == 5);
        CHECK(j["usage"]["completion_tokens"] == 3);
        CHECK(j["usage"]["total_tokens"] == 8);
        CHECK(j["usage"]["prompt_tokens_details"]["cached_tokens"] == 2);
        continue;
      }
      if (usage) CHECK(j["usage"].is_null());
      REQUIRE(j["choices"].size() == 1);
      const json& c = j["choices"][0];
      CHECK(c["index"] == 0);
      if (i == 0) {
        CHECK(c["delta"]["role"] == "assistant");
        CHECK(c["delta"]["content"] == "");
      } else {
        CHECK(!c["delta"].contains("role"));
      }
      const bool is_finish = i == (usage ? p.size() - 3 : p.size() - 2);
      if (is_finish) {
        CHECK(c["finish_reason"] == "stop");
        CHECK(c["delta"].empty());
      } else {
        CHECK(c["finish_reason"].is_null());
        content += c["delta"]["content"].get<std::string>();
      }
    }
    CHECK(content == "Hello");
  }
}

TEST_CASE("serve: completion streaming, logprobs, and the error event") {
  response_builder b(endpoint_kind::completion, "cmpl-7", 1, "m", true, false);
  std::string body = b.stream_begin();
  CHECK(body.empty());
  body += b.stream_event(tok(10, "ab"));
  body += b.stream_event(last(11, "c", "length"));
  const auto p = sse_payloads(body);
  REQUIRE(p.size() == 4);
  const json a = json::parse(p[0]), c = json::parse(p[1]), f = json::parse(p[2]);
  CHECK(a["object"] == "text_completion");
  CHECK(a["choices"][0]["text"] == "ab");
  CHECK(a["choices"][0]["logprobs"]["tokens"] == json::array({"ab"}));
  CHECK(a["choices"][0]["logprobs"]["token_logprobs"][0] == -0.5);
  CHECK(a["choices"][0]["logprobs"]["top_logprobs"][0]["a"] == -0.25);
  CHECK(a["choices"][0]["logprobs"]["text_offset"][0] == 0);
  CHECK(c["choices"][0]["logprobs"]["text_offset"][0] == 2);
  CHECK(c["choices"][0]["finish_reason"].is_null());
  CHECK(f["choices"][0]["finish_reason"] == "length");
  CHECK(f["choices"][0]["text"] == "");
  CHECK(p[3] == "[DONE]");

  response_builder e(endpoint_kind::chat, "x", 1, "m", false, true);
  gen_event bad;
  bad.finish = "error";
  bad.error = "the KV cache pool cannot hold this request";
  const auto q = sse_payloads(e.stream_begin() + e.stream_event(bad));
  REQUIRE(q.size() == 3);
  CHECK(json::parse(q[1])["error"]["type"] == "server_error");
  CHECK(json::parse(q[1])["error"]["message"] == bad.error);
  CHECK(q[2] == "[DONE]");
}

TEST_CASE("serve: whole responses") {
  response_builder b(endpoint_kind::chat, "chatcmpl-2", 5, "m", true);
  CHECK(!b.add(tok(1, "Hi")));
  CHECK(!b.add(tok(2, "\xC3")));  // bytes cut inside a character: replaced on the wire
  CHECK(b.add(last(3, "", "stop")));
  const json r = b.result();
  CHECK(r["object"] == "chat.completion");
  CHECK(r["choices"][0]["message"]["role"] == "assistant");
  CHECK(r["choices"][0]["message"]["content"] == "Hi\xC3");
  CHECK(r["choices"][0]["finish_reason"] == "stop");
  const json& lp = r["choices"][0]["logprobs"]["content"];
  REQUIRE(lp.size() == 2);  // the end token is not listed
  CHECK(lp[0]["token"] == "Hi");
  CHECK(lp[0]["bytes"] == json::array({72, 105}));
  CHECK(lp[0]["top_logprobs"][1]["token"] == "b");
  CHECK(lp[0]["top_logprobs"][1]["logprob"] == -2.0);
  CHECK(lp[1]["bytes"] == json::array({0xC3}));
  CHECK(r["usage"]["total_tokens"] == 8);
  CHECK(dump(r).find("\xEF\xBF\xBD") != std::string::npos);  // U+FFFD, no exception

  response_builder c(endpoint_kind::completion, "cmpl-3", 5, "m", false);
  c.add(last(4, "xyz", "length"));
  const json s = c.result();
  CHECK(s["object"] == "text_completion");
  CHECK(s["choices"][0]["text"] == "xyz");
  CHECK(s["choices"][0]["logprobs"].is_null());
  CHECK(s["choices"][0]["finish_reason"] == "length");

  response_builder d(endpoint_kind::completion, "cmpl-4", 5, "m", false);
  gen_event bad;
  bad.finish = "error";
  d.add(bad);
  const auto e = error_of([&] { (void)d.result(); });
  CHECK(e.status == 500);
  CHECK(e.type == "server_error");
}

namespace {

// The shape of infer::engine_stats (the metrics renderer is a template over it).
struct mock_histogram {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts;
  double sum = 0;
  std::uint64_t count = 0;
};
struct mock_stats {
  std::uint64_t submitted = 9;
  std::array<std::uint64_t, 6> finished{0, 4, 2, 1, 0, 1};
  std::uint64_t prompt_tokens = 100, cached_tokens = 32, computed_tokens = 90,
                generated_tokens = 50, preemptions = 3, steps = 40;
  std::int64_t running = 2, waiting = 1;
  std::int64_t kv_blocks_used = 12, kv_blocks_total = 48, block_tokens = 16;
  mock_histogram ttft{{0.01, 0.1, 1}, {1, 3, 0, 2}, 7.5, 6};
  mock_histogram itl{{0.001, 0.01}, {5, 5, 0}, 0.05, 10};
  mock_histogram step_tokens{{1, 8}, {0, 40, 0}, 200, 40};
};

struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value;
};

/// A strict reader of the text exposition format: HELP and TYPE before a metric's samples,
/// label syntax, numbers.
struct parsed_metrics {
  std::map<std::string, std::string> type;  // metric family -> type
  std::vector<sample> samples;
  double get(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples)
      if (s.name == name && s.labels == labels) return s.value;
    FAIL("no sample " << name);
    return 0;
  }
};

parsed_metrics parse_metrics(const std::string& text) {
  parsed_metrics m;
  std::istringstream in(text);
  std::string line, help_for;
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  while (std::getline(in, line)) {
    REQUIRE(!line.empty());
    if (line.starts_with("# HELP ")) {
      help_for = line.substr(7, line.find(' ', 7) - 7);
      continue;
    }
    if (line.starts_with("# TYPE ")) {
      const std::string rest = line.substr(7);
      const std::string name = rest.substr(0, rest.find(' '));
      CHECK(name == help_for);
      const std::string t = rest.substr(rest.find(' ') + 1);
      CHECK((t == "counter" || t == "gauge" || t == "histogram"));
      CHECK(!m.type.count(name));  // each family once
      m.type[name] = t;
      if (t == "counter") CHECK(name.ends_with("_total"));
      continue;
    }
    REQUIRE(line[0] != '#');
    sample s;
    std::size_t i = 0;
    while (i < line.size() && (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '_'))
      ++i;
    s.name = line.substr(0, i);
    REQUIRE(!s.name.empty());
    if (line[i] == '{') {
      ++i;
      while (line[i] != '}') {
        const std::size_t eq = line.find('=', i);
        REQUIRE(eq != std::string::npos);
        const std::string key = line.substr(i, eq - i);
        REQUIRE(line[eq + 1] == '"');
        const std::size_t close = line.find('"', eq + 2);
        s.labels[key] = line.substr(eq + 2, close - eq - 2);
        i = close + 1;
        if (line[i] == ',') ++i;
      }
      ++i;
    }
    REQUIRE(line[i] == ' ');
    const std::string num = line.substr(i + 1);
    s.value = num == "+Inf" ? INFINITY : std::stod(num);
    // The family: the sample's name, or its histogram base.
    std::string family = s.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!m.type.count(family) && family.ends_with(suffix))
        family = family.substr(0, family.size() - std::strlen(suffix));
    CHECK_MESSAGE(m.type.count(family), "a sample before its TYPE: " << s.name);
    CHECK(family == help_for);
    m.samples.push_back(std::move(s));
  }
  return m;
}

}  // namespace

TEST_CASE("serve: /metrics in the Prometheus text format, parsed back") {
  mock_stats s;
  http_counters h;
  h.responses[{"/v1/completions", 200}] = 7;
  h.responses[{"/v1/completions", 400}] = 2;
  h.disconnects = 1;
  constexpr std::array<std::string_view, 6> names = {"none",      "stop",    "length",
                                                     "cancelled", "timeout", "error"};
  const auto m = parse_metrics(render_metrics(s, names, h));
  CHECK(m.type.at("tfm_requests_finished_total") == "counter");
  CHECK(m.type.at("tfm_requests_running") == "gauge");
  CHECK(m.type.at("tfm_time_to_first_token_seconds") == "histogram");
  CHECK(m.get("tfm_requests_submitted_total") == 9);
  CHECK(m.get("tfm_requests_finished_total", {{"finish_reason", "stop"}}) == 4);
  CHECK(m.get("tfm_requests_finished_total", {{"finish_reason", "length"}}) == 2);
  CHECK(m.get("tfm_requests_finished_total", {{"finish_reason", "cancelled"}}) == 1);
  CHECK(m.get("tfm_requests_finished_total", {{"finish_reason", "error"}}) == 1);
  CHECK(m.get("tfm_requests_running") == 2);
  CHECK(m.get("tfm_requests_waiting") == 1);
  CHECK(m.get("tfm_prompt_tokens_total") == 100);
  CHECK(m.get("tfm_generated_tokens_total") == 50);
  CHECK(m.get("tfm_prefix_cache_hit_tokens_total") == 32);
  CHECK(m.get("tfm_preemptions_total") == 3);
  CHECK(m.get("tfm_kv_blocks_used") == 12);
  CHECK(m.get("tfm_kv_blocks_total") == 48);
  CHECK(m.get("tfm_kv_cache_usage_ratio") == doctest::Approx(0.25));
  CHECK(m.get("tfm_http_responses_total", {{"endpoint", "/v1/completions"}, {"status", "400"}}) ==
        2);
  CHECK(m.get("tfm_http_stream_disconnects_total") == 1);
  // Histograms: cumulative buckets, +Inf == _count, _sum.
  const std::string t = "tfm_time_to_first_token_seconds";
  CHECK(m.get(t + "_bucket", {{"le", "0.01"}}) == 1);
  CHECK(m.get(t + "_bucket", {{"le", "0.1"}}) == 4);
  CHECK(m.get(t + "_bucket", {{"le", "1"}}) == 4);
  CHECK(m.get(t + "_bucket", {{"le", "+Inf"}}) == 6);
  CHECK(m.get(t + "_count") == 6);
  CHECK(m.get(t + "_sum") == 7.5);
  for (const std::string h2 :
       {"tfm_time_to_first_token_seconds", "tfm_inter_token_latency_seconds", "tfm_step_tokens"}) {
    double prev = 0, prev_le = -INFINITY;
    for (const auto& smp : m.samples) {
      if (smp.name != h2 + "_bucket") continue;
      const double le = smp.labels.at("le") == "+Inf" ? INFINITY : std::stod(smp.labels.at("le"));
      CHECK(le > prev_le);
      CHECK(smp.value >= prev);
      prev = smp.value;
      prev_le = le;
    }
    CHECK(prev_le == INFINITY);
    CHECK(prev == m.get(h2 + "_count"));
  }
  CHECK(detail::prom_number(0.1) == "0.1");
  CHECK(detail::prom_number(3) == "3");
  CHECK(detail::prom_number(INFINITY) == "+Inf");
}

TEST_CASE("serve: the chat template path on SmolLM2's template") {
  namespace fs = std::filesystem;
  const char* home = std::getenv("HOME");
  const fs::path dir =
      fs::path(home ? home : "") / ".cache/typeformer/models/smollm2-135m-instruct";
  fs::path gguf;
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".gguf") gguf = e.path();
  if (gguf.empty()) {
    MESSAGE("TFM_SKIP: SmolLM2-135M-Instruct is not cached (scripts/fetch-models); skipped");
    return;
  }
  const tfm::io::gguf_file f(gguf.string());
  const auto tok = tfm::io::load_gguf_tokenizer(f);
  const chat_prompt chat(f.find("tokenizer.chat_template")->value.as_string(), tok);
  // Expected texts: Python jinja2 on the same template (render(messages=...,
  // add_generation_prompt=True)).
  const auto one =
      parse_chat(parse_body(R"({"messages": [{"role": "user", "content": "Hi"}]})"), limits);
  CHECK(chat.render(one.messages) ==
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const auto four = parse_chat(parse_body(R"({"messages": [
      {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})"),
                               limits);
  const std::string text = chat.render(four.messages);
  CHECK(text ==
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>"
        "assistant\nHello!<|im_end|>\n<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n");
  // The template's special tokens are single tokens, and the text round-trips.
  const auto ids = chat.tokenize(text);
  const std::int32_t im_start = tok.text_to_id("<|im_start|>");
  REQUIRE(im_start >= 0);
  CHECK(ids.front() == im_start);
  CHECK(std::count(ids.begin(), ids.end(), im_start) == 5);
  CHECK(tok.decode(ids) == text);
  // The engine's event text is the concatenation of token_to_piece(id, false) (cmd_serve.cpp):
  // it equals decode(ids, false), the text `tfm generate` prints, on this vocabulary (no SPM
  // leading-space removal), for every token id.
  CHECK(!tok.add_space_prefix());
  std::vector<std::int32_t> all(tok.vocab_size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::int32_t>(i);
  std::string pieces;
  for (std::int32_t id : all) pieces += tok.token_to_piece(id, false);
  CHECK(pieces == tok.decode(all, false));
}
