// tools/tfm/serve/response.hpp: the response side of `tfm serve`, without a socket: the bodies
// of completions and chat completions, whole (non-streaming) or as server-sent events.
//
// WIRE FORMAT (the OpenAI API reference, https://platform.openai.com/docs/api-reference, and the
// SSE framing of https://html.spec.whatwg.org/multipage/server-sent-events.html)
//   Every event is one line "data: <json>" followed by a blank line; the stream ends with
//   "data: [DONE]". Completions send objects "text_completion" with choices[0].text; chat sends
//   "chat.completion.chunk" with choices[0].delta: the first chunk carries the role and an empty
//   content, the next ones the content, the last one an empty delta and the finish_reason. With
//   stream_options.include_usage every chunk has "usage": null, and a last chunk with "choices":
//   [] carries the usage. A request that fails after the stream began sends one event
//   {"error": {...}} before [DONE] (what vLLM does; the status line is already sent).
#pragma once

#include "api.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tfm_cli::serve {

/// One generated token as the HTTP layer sees it (an engine token_event with the token's
/// text resolved through the tokenizer).
struct gen_event {
  std::int32_t token = -1;  ///< -1: a final event without a token
  std::string text;         ///< the text this event adds to the output
  std::string piece;        ///< the token's own text (for logprobs)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  ///< top alternatives: piece, logprob
  std::optional<std::string> finish;               ///< the request's last event: the reason
  std::string error;                               ///< finish == "error": what went wrong
  std::int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

enum class endpoint_kind { completion, chat };

inline json usage_json(std::int64_t prompt, std::int64_t completion, std::int64_t cached) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

inline std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }
inline std::string sse_done() { return "data: [DONE]\n\n"; }

/// The bytes of a string as a JSON array of integers (chat logprobs' "bytes").
inline json bytes_json(const std::string& s) {
  json a = json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

/// Builds the bodies of one request: chunks while streaming, or the whole response.
class response_builder {
 public:
  response_builder(endpoint_kind kind, std::string id, std::int64_t created, std::string model,
                   bool logprobs, bool include_usage = false)
      : kind_(kind),
        id_(std::move(id)),
        created_(created),
        model_(std::move(model)),
        logprobs_(logprobs),
        include_usage_(include_usage) {}

  /// The events before any token (chat: the role chunk).
  std::string stream_begin() const {
    if (kind_ != endpoint_kind::chat) return {};
    return sse(chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
  }

  /// The events for one engine event; the final event also sends the finish chunk, the usage
  /// chunk (include_usage) and [DONE].
  std::string stream_event(const gen_event& e) {
    std::string out;
    const bool counted = counts(e);
    if (!e.text.empty() || (logprobs_ && counted)) {
      json lp = logprobs_ && counted ? one_logprob(e) : json(nullptr);
      if (kind_ == endpoint_kind::chat)
        out += sse(chunk(json{{"content", e.text}}, nullptr, std::move(lp)));
      else
        out += sse(chunk(e.text, nullptr, std::move(lp)));
    }
    offset_ += e.text.size();
    if (!e.finish) return out;
    if (*e.finish == "error") {
      out += sse(error_body(e.error.empty() ? "generation failed" : e.error, "server_error"));
      out += sse_done();
      return out;
    }
    if (kind_ == endpoint_kind::chat)
      out += sse(chunk(json::object(), *e.finish, nullptr));
    else
      out += sse(chunk(std::string(), *e.finish, nullptr));
    if (include_usage_) {
      json u = base(kind_ == endpoint_kind::chat ? "chat.completion.chunk" : "text_completion");
      u["choices"] = json::array();
      u["usage"] = usage_json(e.prompt_tokens, e.completion_tokens, e.cached_tokens);
      out += sse(u);
    }
    out += sse_done();
    return out;
  }

  /// Non-streaming: collects an event. Returns true on the last one.
  bool add(const gen_event& e) {
    if (logprobs_ && counts(e)) add_logprob(e);
    text_ += e.text;
    offset_ += e.text.size();
    if (!e.finish) return false;
    final_ = e;
    return true;
  }

  /// Non-streaming: the whole response after the last event; api_error 500 when the request
  /// ended with an error.
  json result() const {
    if (!final_ || !final_->finish)
      throw api_error(500, "the request did not finish", "server_error");
    if (*final_->finish == "error")
      throw api_error(500, final_->error.empty() ? "generation failed" : final_->error,
                      "server_error");
    json r = base(kind_ == endpoint_kind::chat ? "chat.completion" : "text_completion");
    json choice = {{"index", 0}, {"finish_reason", *final_->finish}};
    if (kind_ == endpoint_kind::chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text_}};
      choice["logprobs"] = logprobs_ ? json{{"content", lp_content_}} : json(nullptr);
    } else {
      choice["text"] = text_;
      choice["logprobs"] = logprobs_ ? lp_completion_ : json(nullptr);
    }
    r["choices"] = json::array({choice});
    r["usage"] =
        usage_json(final_->prompt_tokens, final_->completion_tokens, final_->cached_tokens);
    return r;
  }

  const std::string& text() const noexcept { return text_; }

 private:
  /// Whether an event's token counts in logprobs: an end-of-generation token (stop with no
  /// text) does not, as OpenAI does not list it.
  static bool counts(const gen_event& e) {
    if (e.token < 0) return false;
    return !(e.finish && *e.finish == "stop" && e.text.empty());
  }

  json base(const char* object) const {
    json j = {{"id", id_},
              {"object", object},
              {"created", created_},
              {"model", model_},
              {"system_fingerprint", nullptr}};
    return j;
  }

  json chunk(json delta_or_text, json finish, json logprobs) const {
    json j = base(kind_ == endpoint_kind::chat ? "chat.completion.chunk" : "text_completion");
    json choice = {
        {"index", 0}, {"logprobs", std::move(logprobs)}, {"finish_reason", std::move(finish)}};
    if (kind_ == endpoint_kind::chat)
      choice["delta"] = std::move(delta_or_text);
    else
      choice["text"] = std::move(delta_or_text);
    j["choices"] = json::array({std::move(choice)});
    if (include_usage_) j["usage"] = nullptr;
    return j;
  }

  json chat_entry(const gen_event& e) const {
    json top = json::array();
    for (const auto& [piece, lp] : e.top)
      top.push_back({{"token", piece}, {"logprob", lp}, {"bytes", bytes_json(piece)}});
    return {{"token", e.piece},
            {"logprob", e.logprob},
            {"bytes", bytes_json(e.piece)},
            {"top_logprobs", std::move(top)}};
  }

  json completion_top(const gen_event& e) const {
    json top = json::object();
    for (const auto& [piece, lp] : e.top) top[piece] = lp;
    return top;
  }

  /// The logprobs object of one streamed token.
  json one_logprob(const gen_event& e) const {
    if (kind_ == endpoint_kind::chat) return {{"content", json::array({chat_entry(e)})}};
    return {{"tokens", json::array({e.piece})},
            {"token_logprobs", json::array({e.logprob})},
            {"top_logprobs", json::array({completion_top(e)})},
            {"text_offset", json::array({offset_})}};
  }

  void add_logprob(const gen_event& e) {
    if (kind_ == endpoint_kind::chat) {
      lp_content_.push_back(chat_entry(e));
      return;
    }
    if (lp_completion_.is_null())
      lp_completion_ = {{"tokens", json::array()},
                        {"token_logprobs", json::array()},
                        {"top_logprobs", json::array()},
                        {"text_offset", json::array()}};
    lp_completion_["tokens"].push_back(e.piece);
    lp_completion_["token_logprobs"].push_back(e.logprob);
    lp_completion_["top_logprobs"].push_back(completion_top(e));
    lp_completion_["text_offset"].push_back(offset_);
  }

  endpoint_kind kind_;
  std::string id_;
  std::int64_t created_;
  std::string model_;
  bool logprobs_, include_usage_;
  std::string text_;
  std::size_t offset_ = 0;  // bytes of text before the current event
  json lp_content_ = json::array();
  json lp_completion_;
  std::optional<gen_event> final_;
};

}  // namespace tfm_cli::serve
