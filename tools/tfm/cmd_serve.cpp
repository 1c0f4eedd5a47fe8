// tfm serve -m MODEL [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] ...: an
// OpenAI-compatible HTTP server, a thin layer over infer::engine (continuous batching, paged KV
// cache, prefix caching; include/typeformer/infer/engine.hpp). docs/serving.md documents the API.
//
//   GET  /health                200 {"status":"ok"}; 503 while shutting down
//   GET  /v1/models             the one model served (its id: --alias, else the file name)
//   GET  /v1/models/{id}
//   POST /v1/completions        prompt: a string or token ids; "stream": true for SSE
//   POST /v1/chat/completions   messages rendered with the model's tokenizer.chat_template
//   POST /v1/embeddings         when MODEL is a BERT directory (infer/bert.hpp)
//   GET  /metrics               Prometheus text format (serve/metrics.hpp)
//
// Threads: the engine steps on one thread of its own; httplib's worker threads parse a request,
// submit it, and wait on the request's own queue (mutex + condition variable), which the engine's
// event callback fills without ever touching the network. A stream whose client went away (a
// failed write) cancels its request, so its KV blocks return to the pool.
//
// Shutdown: SIGTERM or SIGINT writes to a pipe; a watcher thread then refuses new requests
// (503), lets the running and queued ones finish and their responses be written, stops the
// HTTP server and the engine, and the process exits 0.
//
// The request and response bodies are built by serve/api.hpp and serve/response.hpp (unit-tested
// without a socket, tests/unit/serve/), the metrics by serve/metrics.hpp.
// bert.hpp first: it names tfm::detail::json as `detail::json` from inside tfm::infer, which
// finds tfm::infer::detail instead once model_config.hpp or grammar.hpp has declared it.
#include "typeformer/infer/bert.hpp"

#include "commands.hpp"
#include "llm.hpp"
#include "serve/api.hpp"
#include "serve/chat.hpp"
#include "serve/metrics.hpp"
#include "serve/response.hpp"

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/infer/engine.hpp"
#include "typeformer/infer/grammar.hpp"

#include <httplib.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace tfm_cli {
namespace {

namespace infer = tfm::infer;
using serve::api_error;
using serve::json;

// ---- signals -----------------------------------------------------------------------------------

int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int) {
  const char c = 1;
  [[maybe_unused]] const auto n = ::write(g_signal_pipe[1], &c, 1);  // async-signal-safe
}

// ---- one request's events --------------------------------------------------------------------

/// The queue between the engine's callback (producer) and an HTTP worker (consumer).
struct channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<infer::token_event> events;
  bool finished = false;  // the last event was queued

  void push(const infer::token_event& e) {
    {
      std::lock_guard lock(mu);
      events.push_back(e);
      if (e.finish != infer::finish_reason::none) finished = true;
    }
    cv.notify_one();
  }
  /// Moves the queued events to `out`, waiting up to `wait` for the first.
  void pop(std::deque<infer::token_event>& out, std::chrono::milliseconds wait) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, wait, [&] { return !events.empty(); });
    out.clear();
    out.swap(events);
  }
};

/// The engine's finish reasons as OpenAI's finish_reason strings ("stop", "length"; ours
/// otherwise).
std::string finish_name(infer::finish_reason r) {
  return std::string(infer::finish_reason_name(r));
}

/// infer::token_constraint over the grammar helper's constraint (response_format json_object).
class grammar_adapter final : public infer::token_constraint {
 public:
  explicit grammar_adapter(infer::grammar_constraint g) : g_(std::move(g)) {}
  void mask(float* logits, tfm::index_t n) override { g_.mask(logits, n); }
  void accept(std::int32_t token) override { g_.accept(token); }

 private:
  infer::grammar_constraint g_;
};

// ---- the server ------------------------------------------------------------------------------

struct serve_options {
  run_options run;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 8;
  tfm::index_t batch_tokens = 512;
  tfm::index_t kv_tokens = 0;
  std::string api_key;
  std::string alias;
  bool no_prefix_cache = false;
  double timeout = 0;
  std::int64_t max_queue = 256;
  int http_threads = 0;
  bool log = false;
};

class server {
 public:
  explicit server(serve_options o) : o_(std::move(o)) {
    std::random_device rd;
    seed_base_ = (std::uint64_t{rd()} << 32) ^ rd();
    created_ = static_cast<std::int64_t>(std::time(nullptr));
  }

  /// Loads the model: a BERT directory serves embeddings, anything else runs the engine.
  void load() {
    const std::string& path = o_.run.model;
    model_id_ = !o_.alias.empty() ? o_.alias : std::filesystem::path(path).filename().string();
    if (model_id_.empty()) model_id_ = path;
    limits_.id = model_id_;
    if (is_bert_dir(path)) {
      enc_ = std::make_unique<tfm::infer::bert_encoder<>>(tfm::infer::bert_encoder<>::load(path));
      limits_.context = enc_->embed_options().max_seq_length;
      limits_.vocab = enc_->config().V;
      std::fprintf(stderr, "tfm serve: %s: BERT encoder (embeddings only)\n", path.c_str());
      return;
    }
    llm_ = std::make_unique<llm>(load_llm(path, o_.run.dequantize));
    const auto& tok = llm_->tok;
    eos_ids_ = end_tokens(tok);
    infer::engine_options eo;
    eo.max_seqs = o_.parallel;
    eo.max_batch_tokens = o_.batch_tokens;
    eo.context = o_.run.context;
    eo.kv_tokens = o_.kv_tokens;
    eo.kv = o_.run.kv_type();
    eo.prefix_cache = !o_.no_prefix_cache;
    eo.max_queue = static_cast<std::size_t>(o_.max_queue);
    eo.eos_ids = eos_ids_;
    // Pieces without special tokens: their concatenation is tok.decode(ids, false) for BPE
    // vocabularies (vocab_tokenizer::decode; SPM's leading-space removal applies to a text's
    // first token only, which a continuation never is).
    eo.token_text = [t = &llm_->tok](std::int32_t id) { return t->token_to_piece(id, false); };
    eng_ = std::make_unique<infer::engine<float>>(llm_->model, std::move(eo));
    limits_.context = eng_->context();
    limits_.vocab = llm_->model.config().vocab;
    if (const auto* tpl = llm_->model.file()->find("tokenizer.chat_template"))
      chat_.emplace(tpl->value.as_string(), tok);
    std::fprintf(stderr,
                 "tfm serve: %s loaded in %.0f ms; context %lld, %d parallel, %lld KV blocks of "
                 "%lld tokens%s\n",
                 path.c_str(), llm_->load_ms, static_cast<long long>(limits_.context), o_.parallel,
                 static_cast<long long>(eng_->cache().total_blocks()),
                 static_cast<long long>(eng_->cache().block_tokens()),
                 chat_ ? "" : "; no chat template (chat completions refused)");
  }

  /// Serves until a signal; returns the exit status.
  int run() {
    httplib::Server svr;
    const int pool = o_.http_threads > 0 ? o_.http_threads : std::max(16, 4 * o_.parallel);
    svr.new_task_queue = [pool] { return new httplib::ThreadPool(static_cast<std::size_t>(pool)); };
    svr.set_payload_max_length(std::size_t{32} << 20);
    svr.set_keep_alive_timeout(2);
    routes(svr);
    int port = o_.port;
    if (o_.port == 0) {
      port = svr.bind_to_any_port(o_.host);
      if (port < 0) tfm::fail(tfm::errc::io, "cannot bind to ", o_.host, " (any port)");
    } else if (!svr.bind_to_port(o_.host, o_.port)) {
      tfm::fail(tfm::errc::io, "cannot bind to ", o_.host, ":", o_.port,
                " (in use, or not an address of this machine)");
    }
    start_stepping();
    std::thread watcher([&] { watch(svr); });
    std::fprintf(stderr, "tfm serve: listening on http://%s:%d\n", o_.host.c_str(), port);
    std::fflush(stderr);
    const bool ok = svr.listen_after_bind();
    if (!draining_) on_stop_signal(0);  // listen failed: wake the watcher
    watcher.join();
    stop_stepping();
    if (eng_) eng_->shutdown(true);
    std::fprintf(stderr, "tfm serve: stopped\n");
    return ok || draining_ ? 0 : 1;
  }

 private:
  // ---- the engine's thread ----
  // The engine steps on a thread of ours rather than engine::start()'s so that -t applies there
  // too (OpenMP's thread count is a per-thread setting).
  void start_stepping() {
    if (!eng_) return;
    stepper_ = std::thread([this] {
      if (o_.run.threads > 0) tfm::set_num_threads(o_.run.threads);
      while (!stop_stepping_.load()) {
        if (!eng_->step() && !eng_->busy()) {
          std::unique_lock lock(wake_mu_);
          wake_cv_.wait_for(lock, std::chrono::milliseconds(20),
                            [&] { return wake_ || stop_stepping_.load(); });
          wake_ = false;
        }
      }
    });
  }
  void wake() {
    {
      std::lock_guard lock(wake_mu_);
      wake_ = true;
    }
    wake_cv_.notify_one();
  }
  void stop_stepping() {
    stop_stepping_ = true;
    wake();
    if (stepper_.joinable()) stepper_.join();
  }

  /// Waits for the signal, then drains: no new requests, in-flight ones finish, server stops.
  void watch(httplib::Server& svr) {
    char c = 0;
    while (::read(g_signal_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    draining_ = true;
    std::fprintf(stderr, "tfm serve: shutting down: finishing %lld request(s)\n",
                 static_cast<long long>(in_flight_.load()));
    std::fflush(stderr);
    while (in_flight_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    svr.stop();
  }

  static bool is_bert_dir(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(path, ec)) return false;
    std::ifstream in(path + "/config.json");
    if (!in) return false;
    const json cfg = json::parse(in, nullptr, false);
    if (!cfg.is_object()) return false;
    const auto mt = cfg.find("model_type");
    return mt != cfg.end() && mt->is_string() && *mt == "bert";
  }

  // ---- routing ----

  static bool known_path(const std::string& p, std::string& allow) {
    if (p == "/health" || p == "/v1/models" || p == "/metrics" || p.starts_with("/v1/models/")) {
      allow = "GET";
      return true;
    }
    if (p == "/v1/completions" || p == "/v1/chat/completions" || p == "/v1/embeddings") {
      allow = "POST";
      return true;
    }
    return false;
  }

  void send_error(httplib::Response& res, const api_error& e) {
    res.status = e.status;
    res.set_content(serve::dump(serve::error_body(e)), "application/json");
  }

  void count(const std::string& endpoint, int status) {
    std::lock_guard lock(http_mu_);
    ++http_.responses[{endpoint, status}];
  }

  /// Runs a handler: api_error and library errors become OpenAI error objects.
  template <class F>
  void guarded(const std::string& endpoint, httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const api_error& e) {
      send_error(res, e);
    } catch (const tfm::value_error& e) {
      send_error(res, serve::bad_request(e.what()));
    } catch (const tfm::index_error& e) {
      send_error(res, serve::bad_request(e.what()));
    } catch (const std::exception& e) {
      send_error(res, api_error(500, e.what(), "server_error"));
    }
    count(endpoint, res.status > 0 ? res.status : 200);  // -1: not set, httplib sends 200
  }

  void routes(httplib::Server& svr) {
    // Before routing: unknown path 404, wrong method 405, API key 401, draining 503.
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      std::string allow;
      if (!known_path(req.path, allow)) {
        send_error(res, api_error(404, "Unknown path " + req.path, "invalid_request_error", {},
                                  "not_found"));
        count("other", 404);
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.method != allow) {
        res.set_header("Allow", allow);
        send_error(res, api_error(405,
                                  "Method " + req.method + " is not allowed on " + req.path +
                                      " (use " + allow + ")",
                                  "invalid_request_error", {}, "method_not_allowed"));
        count(req.path, 405);
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      try {
        serve::check_api_key(o_.api_key, req.get_header_value("Authorization"));
      } catch (const api_error& e) {
        send_error(res, e);
        count(req.path, e.status);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      res.set_content(
          serve::dump(serve::error_body("HTTP " + std::to_string(res.status) + " on " + req.path,
                                        "invalid_request_error")),
          "application/json");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.status = draining_ ? 503 : 200;
      res.set_content(draining_ ? R"({"status":"shutting down"})" : R"({"status":"ok"})",
                      "application/json");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      guarded("/v1/models", res, [&] {
        res.set_content(serve::dump({{"object", "list"}, {"data", json::array({model_json()})}}),
                        "application/json");
      });
    });
    svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      guarded("/v1/models", res, [&] {
        if (req.matches[1] != model_id_)
          throw api_error(404, "The model '" + req.matches[1].str() + "' does not exist.",
                          "invalid_request_error", "model", "model_not_found");
        res.set_content(serve::dump(model_json()), "application/json");
      });
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      guarded("/metrics", res, [&] {
        const infer::engine_stats s = eng_ ? eng_->stats() : infer::engine_stats{};
        std::string body;
        {
          std::lock_guard lock(http_mu_);
          constexpr std::array<std::string_view, 6> names = {
              infer::finish_reason_name(infer::finish_reason::none),
              infer::finish_reason_name(infer::finish_reason::stop),
              infer::finish_reason_name(infer::finish_reason::length),
              infer::finish_reason_name(infer::finish_reason::cancelled),
              infer::finish_reason_name(infer::finish_reason::timeout),
              infer::finish_reason_name(infer::finish_reason::error)};
          body = serve::render_metrics(s, names, http_);
        }
        res.set_content(body, "text/plain; version=0.0.4; charset=utf-8");
      });
    });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(req, res, serve::endpoint_kind::completion);
    });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      generate(req, res, serve::endpoint_kind::chat);
    });
    svr.Post("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) {
      guarded("/v1/embeddings", res, [&] { embeddings(req, res); });
    });
    if (o_.log)
      svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        std::fprintf(stderr, "tfm serve: %s %s %d\n", req.method.c_str(), req.path.c_str(),
                     res.status);
      });
  }

  json model_json() const {
    return {{"id", model_id_},
            {"object", "model"},
            {"created", created_},
            {"owned_by", "typeformer"},
            {"max_model_len", limits_.context}};
  }

  // ---- embeddings ----

  void embeddings(const httplib::Request& req, httplib::Response& res) {
    if (!enc_)
      throw api_error(400,
                      "This model (" + model_id_ +
                          ") is a decoder: /v1/embeddings needs an encoder model (a BERT "
                          "directory)",
                      "invalid_request_error", "model", "model_not_supported");
    const json body = serve::parse_body(req.body);
    const auto p = serve::parse_embedding(body, limits_);
    std::int64_t tokens = 0;
    for (const std::string& t : p.input)
      tokens += static_cast<std::int64_t>(enc_->tokenize(t).size());
    tfm::tensor<float, tfm::dyn_shape<2>> e;
    {
      std::lock_guard lock(enc_mu_);
      tfm::thread_scope threads(o_.run.threads > 0 ? o_.run.threads : tfm::num_threads());
      e = enc_->embed(p.input);
    }
    json data = json::array();
    const tfm::index_t C = e.extent(1);
    for (tfm::index_t i = 0; i < e.extent(0); ++i) {
      const float* row = e.data() + i * C;
      json emb = p.base64 ? json(serve::base64(row, static_cast<std::size_t>(C) * sizeof(float)))
                          : json(std::vector<float>(row, row + C));
      data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(emb)}});
    }
    {
      std::lock_guard lock(http_mu_);
      http_.embeddings += p.input.size();
    }
    res.set_content(serve::dump({{"object", "list"},
                                 {"data", std::move(data)},
                                 {"model", model_id_},
                                 {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}}),
                    "application/json");
  }

  // ---- completions ----

  /// Holds a slot of in_flight_ for a request's lifetime (its handler, then its stream).
  struct flight {
    std::atomic<std::int64_t>* n;
    explicit flight(std::atomic<std::int64_t>& c) : n(&c) { ++*n; }
    flight(const flight&) = delete;
    flight& operator=(const flight&) = delete;
    ~flight() { --*n; }
  };

  serve::gen_event convert(const infer::token_event& e) const {
    serve::gen_event g;
    g.token = e.token;
    g.text = e.text;
    if (e.token >= 0) g.piece = llm_->tok.token_to_piece(e.token, true);
    g.logprob = e.logprob;
    for (const auto& t : e.top)
      g.top.emplace_back(llm_->tok.token_to_piece(t.token, true), t.logprob);
    if (e.finish != infer::finish_reason::none) g.finish = finish_name(e.finish);
    g.error = e.error;
    g.prompt_tokens = e.prompt_tokens;
    g.completion_tokens = e.completion_tokens;
    g.cached_tokens = e.cached_tokens;
    return g;
  }

  void generate(const httplib::Request& req, httplib::Response& res, serve::endpoint_kind kind) {
    const std::string endpoint =
        kind == serve::endpoint_kind::chat ? "/v1/chat/completions" : "/v1/completions";
    auto slot = std::make_shared<flight>(in_flight_);
    guarded(endpoint, res, [&] {
      if (draining_)
        throw api_error(503, "The server is shutting down.", "server_error", {}, "shutting_down");
      if (!eng_)
        throw api_error(400,
                        "This model (" + model_id_ +
                            ") is an encoder: it serves /v1/embeddings "
                            "only",
                        "invalid_request_error", "model", "model_not_supported");
      const json body = serve::parse_body(req.body);
      serve::generation_params g;
      std::vector<std::int32_t> ids;
      const char* prompt_field = "prompt";
      if (kind == serve::endpoint_kind::chat) {
        auto c = serve::parse_chat(body, limits_);
        if (!chat_)
          throw api_error(400,
                          "This model has no chat template (tokenizer.chat_template): use "
                          "/v1/completions",
                          "invalid_request_error", "messages", "no_chat_template");
        ids = chat_->tokenize(chat_->render(c.messages));
        g = std::move(c.gen);
        prompt_field = "messages";
      } else {
        auto c = serve::parse_completion(body, limits_);
        if (auto* text = std::get_if<std::string>(&c.prompt))
          ids = llm_->tok.encode(*text, {.add_special = true, .parse_special = true});
        else
          ids = std::get<std::vector<std::int32_t>>(c.prompt);
        g = std::move(c.gen);
        if (ids.empty()) throw serve::bad_request("'prompt' has no tokens", "prompt");
      }
      const auto n_prompt = static_cast<std::int64_t>(ids.size());
      if (n_prompt >= limits_.context)
        throw serve::bad_request("This model's maximum context length is " +
                                     std::to_string(limits_.context) +
                                     " tokens, but the prompt has " + std::to_string(n_prompt) +
                                     " tokens (no room for the reply).",
                                 prompt_field, "context_length_exceeded");
      infer::request r;
      r.prompt = std::move(ids);
      r.sampling = g.sampling;
      if (!g.seeded) r.sampling.seed = seed_base_ + next_seed_.fetch_add(1) * 0x9E3779B97F4A7C15ull;
      // Defaults: completions 16 tokens (OpenAI's), chat up to the context.
      r.max_tokens =
          g.max_tokens.value_or(kind == serve::endpoint_kind::chat ? limits_.context : 16);
      r.stop = g.stop;
      r.ignore_eos = g.ignore_eos;
      r.timeout_s = o_.timeout;
      r.logprobs = g.logprobs;
      if (g.json_object) r.constraint = json_constraint();
      if (eng_->stats().waiting >= o_.max_queue)
        throw api_error(429, "The request queue is full; try again later.", "server_error", {},
                        "queue_full");
      auto ch = std::make_shared<channel>();
      infer::request_id id = 0;
      infer::submit_result sub;
      try {
        sub = eng_->try_submit(std::move(r), [ch](const infer::token_event& e) { ch->push(e); });
      } catch (const tfm::error& e) {  // a bad request: the engine names what was wrong
        throw serve::bad_request(e.what(), prompt_field);
      }
      if (sub.status == infer::submit_status::queue_full)
        throw api_error(429, "The request queue is full; try again later.", "server_error", {},
                        "queue_full");
      if (sub.status == infer::submit_status::shutting_down)
        throw api_error(503, "The server is shutting down.", "server_error", {}, "shutting_down");
      id = sub.id;
      wake();
      const std::string rid =
          (kind == serve::endpoint_kind::chat ? "chatcmpl-" : "cmpl-") + std::to_string(id);
      auto out = std::make_shared<serve::response_builder>(
          kind, rid, static_cast<std::int64_t>(std::time(nullptr)), model_id_, g.logprobs >= 0,
          g.include_usage);
      if (!g.stream) {
        std::deque<infer::token_event> evs;
        bool done = false;
        while (!done) {
          ch->pop(evs, std::chrono::milliseconds(500));
          for (const auto& e : evs) done = out->add(convert(e)) || done;
        }
        res.set_content(serve::dump(out->result()), "application/json");
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      struct stream_state {
        bool begun = false, finished = false;
      };
      auto st = std::make_shared<stream_state>();
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, ch, out, st, id](std::size_t, httplib::DataSink& sink) {
            auto write = [&](const std::string& s) {
              return s.empty() || sink.write(s.data(), s.size());
            };
            if (!st->begun) {
              st->begun = true;
              if (!write(out->stream_begin())) return false;
            }
            std::deque<infer::token_event> evs;
            ch->pop(evs, std::chrono::milliseconds(100));
            for (const auto& e : evs) {
              const bool last = e.finish != infer::finish_reason::none;
              if (!write(out->stream_event(convert(e)))) return false;  // releaser cancels
              if (last) {
                st->finished = true;
                sink.done();
                return true;
              }
            }
            return evs.empty() ? sink.is_writable() : true;
          },
          [this, st, id, slot](bool) {
            if (!st->finished) {  // the client went away (or the server stopped): free it
              eng_->cancel(id);
              wake();
              std::lock_guard lock(http_mu_);
              ++http_.disconnects;
            }
          });
    });
  }

  std::shared_ptr<infer::token_constraint> json_constraint() {
    std::call_once(json_once_, [&] {
      json_grammar_ = infer::json_grammar();
      json_vocab_ = infer::make_grammar_vocabulary(llm_->tok);
    });
    return std::make_shared<grammar_adapter>(
        infer::grammar_constraint(json_grammar_, json_vocab_, eos_ids_));
  }

  serve_options o_;
  std::string model_id_;
  serve::model_limits limits_;
  std::int64_t created_ = 0;
  std::unique_ptr<llm> llm_;
  std::unique_ptr<tfm::infer::bert_encoder<>> enc_;
  std::mutex enc_mu_;
  std::unique_ptr<infer::engine<float>> eng_;
  std::optional<serve::chat_prompt> chat_;
  std::vector<std::int32_t> eos_ids_;
  std::once_flag json_once_;
  std::shared_ptr<const infer::grammar> json_grammar_;
  std::shared_ptr<const infer::grammar_vocabulary> json_vocab_;

  std::atomic<bool> draining_{false};
  std::atomic<std::int64_t> in_flight_{0};
  std::uint64_t seed_base_ = 0;
  std::atomic<std::uint64_t> next_seed_{0};
  std::mutex http_mu_;
  serve::http_counters http_;

  std::thread stepper_;
  std::atomic<bool> stop_stepping_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool wake_ = false;
};

}  // namespace

int run_serve(const std::vector<std::string>& args) {
  cli::parser p("tfm serve", "",
                "an OpenAI-compatible HTTP server (completions, chat, embeddings, metrics) over "
                "the batching engine");
  serve_options o;
  o.run.declare_model(p);
  p.option("--host", "ADDR", "address to listen on", o.host);
  p.option("--port", "PORT", "TCP port (0: any free port, printed on stderr)", o.port);
  p.option("--parallel", "N", "sequences decoded together (the engine's max_seqs)", o.parallel);
  p.option("--ctx", "N", "context positions per sequence (0: min(model, 2048))", o.run.context);
  p.option("--batch-tokens", "N", "tokens per engine step: decodes plus prefill chunks",
           o.batch_tokens);
  p.option("--kv-tokens", "N", "KV cache pool size in tokens (0: parallel * ctx)", o.kv_tokens);
  o.run.declare_kv(p);
  p.option("--api-key", "KEY", "require 'Authorization: Bearer KEY' (all but /health)", o.api_key);
  p.option("--alias", "NAME", "the model's id in the API (default: the file name)", o.alias);
  p.flag("--no-prefix-cache", "do not reuse cached prompt blocks across requests",
         o.no_prefix_cache);
  p.option("--timeout", "S", "end a request after S seconds (0: never)", o.timeout);
  p.option("--max-queue", "N", "waiting requests at most; more get 429", o.max_queue);
  p.option("--http-threads", "N", "HTTP worker threads (0: max(16, 4 * parallel))", o.http_threads);
  p.flag("--log", "one line per HTTP request on stderr", o.log);
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  if (o.run.model.empty()) throw cli::usage_error("-m MODEL is required");
  if (o.run.threads < 0) throw cli::usage_error("-t must be >= 0");
  if (o.run.context < 0) throw cli::usage_error("--ctx must be >= 0");
  if (o.port < 0 || o.port > 65535) throw cli::usage_error("--port must be in [0, 65535]");
  if (o.parallel < 1) throw cli::usage_error("--parallel must be >= 1");
  if (o.batch_tokens < 1) throw cli::usage_error("--batch-tokens must be >= 1");
  if (o.kv_tokens < 0) throw cli::usage_error("--kv-tokens must be >= 0");
  if (!(o.timeout >= 0)) throw cli::usage_error("--timeout must be >= 0");
  if (o.max_queue < 1) throw cli::usage_error("--max-queue must be >= 1");
  if (o.http_threads < 0) throw cli::usage_error("--http-threads must be >= 0");
  (void)o.run.kv_type();
  if (o.run.threads > 0) tfm::set_num_threads(o.run.threads);

  if (::pipe(g_signal_pipe) != 0) tfm::fail(tfm::errc::io, "cannot create a pipe");
  ::fcntl(g_signal_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not a signal

  server s(std::move(o));
  s.load();
  return s.run();
}

}  // namespace tfm_cli
