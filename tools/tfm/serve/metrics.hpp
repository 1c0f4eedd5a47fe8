// tools/tfm/serve/metrics.hpp: GET /metrics of `tfm serve` in the Prometheus text exposition
// format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/): for each metric a
// "# HELP" and a "# TYPE" line, then its samples "name{label="value"} number"; counters end in
// _total; a histogram has cumulative buckets name_bucket{le="b"} ending with le="+Inf" (equal to
// name_count), then name_sum and name_count.
//
// render_metrics() takes the engine's statistics (infer::engine_stats, or any struct with the
// same fields: it is a template so the format is testable without an engine) and the HTTP
// layer's own counters.
#pragma once

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace tfm_cli::serve {

/// The HTTP layer's counters (under the server's lock when shared).
struct http_counters {
  std::map<std::pair<std::string, int>, std::uint64_t> responses;  ///< (endpoint, status) -> n
  std::uint64_t disconnects = 0;  ///< streams whose client went away (request cancelled)
  std::uint64_t embeddings = 0;   ///< texts embedded
};

namespace detail {

/// A sample value: integers as integers, others as the shortest round-trip decimal, infinities
/// as +Inf / -Inf, NaN as NaN (the Go ParseFloat spellings the format asks for).
inline std::string prom_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

class prom_writer {
 public:
  void head(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(std::string_view name, std::string_view labels, double v) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += prom_number(v);
    out_ += '\n';
  }
  void scalar(std::string_view name, std::string_view type, std::string_view help, double v) {
    head(name, type, help);
    sample(name, {}, v);
  }
  template <class Histogram>
  void hist(const std::string& name, std::string_view help, const Histogram& h) {
    head(name, "histogram", help);
    std::uint64_t cum = 0;
    for (std::size_t i = 0; i < h.bounds.size(); ++i) {
      cum += i < h.counts.size() ? h.counts[i] : 0;
      sample(name + "_bucket", "le=\"" + prom_number(h.bounds[i]) + "\"", static_cast<double>(cum));
    }
    sample(name + "_bucket", "le=\"+Inf\"", static_cast<double>(h.count));
    sample(name + "_sum", {}, h.sum);
    sample(name + "_count", {}, static_cast<double>(h.count));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace detail

/// The /metrics body. `finish_names` names the entries of s.finished (finish_reason order).
template <class Stats, std::size_t N>
std::string render_metrics(const Stats& s, const std::array<std::string_view, N>& finish_names,
                           const http_counters& http) {
  detail::prom_writer w;
  auto d = [](auto v) { return static_cast<double>(v); };
  w.scalar("tfm_requests_submitted_total", "counter", "Requests accepted by the engine.",
           d(s.submitted));
  w.head("tfm_requests_finished_total", "counter", "Requests finished, by finish reason.");
  for (std::size_t i = 0; i < N && i < s.finished.size(); ++i) {
    if (finish_names[i] == "none") continue;
    w.sample("tfm_requests_finished_total",
             "finish_reason=\"" + std::string(finish_names[i]) + "\"", d(s.finished[i]));
  }
  w.scalar("tfm_requests_running", "gauge", "Requests in the running batch.", d(s.running));
  w.scalar("tfm_requests_waiting", "gauge", "Requests queued for admission (queue depth).",
           d(s.waiting));
  w.scalar("tfm_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
           d(s.prompt_tokens));
  w.scalar("tfm_prefix_cache_hit_tokens_total", "counter",
           "Prompt tokens taken from the prefix cache.", d(s.cached_tokens));
  w.scalar("tfm_computed_tokens_total", "counter", "Positions run through the model.",
           d(s.computed_tokens));
  w.scalar("tfm_generated_tokens_total", "counter", "Tokens generated.", d(s.generated_tokens));
  w.scalar("tfm_preemptions_total", "counter", "Sequences preempted (recomputed later).",
           d(s.preemptions));
  w.scalar("tfm_engine_steps_total", "counter", "Scheduler steps run.", d(s.steps));
  w.scalar("tfm_kv_blocks_used", "gauge", "KV cache blocks in use (prefix cache included).",
           d(s.kv_blocks_used));
  w.scalar("tfm_kv_blocks_total", "gauge", "KV cache blocks in the pool.", d(s.kv_blocks_total));
  w.scalar("tfm_kv_block_tokens", "gauge", "Positions per KV cache block.", d(s.block_tokens));
  w.scalar("tfm_kv_cache_usage_ratio", "gauge", "KV cache blocks used / total (0 to 1).",
           s.kv_blocks_total > 0 ? d(s.kv_blocks_used) / d(s.kv_blocks_total) : 0.0);
  w.hist("tfm_time_to_first_token_seconds", "Time from submission to the first token.", s.ttft);
  w.hist("tfm_inter_token_latency_seconds", "Time between consecutive tokens of a request.", s.itl);
  w.hist("tfm_step_tokens", "Positions run per scheduler step.", s.step_tokens);
  w.head("tfm_http_responses_total", "counter", "HTTP responses, by endpoint and status.");
  for (const auto& [key, n] : http.responses)
    w.sample("tfm_http_responses_total",
             "endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"", d(n));
  w.scalar("tfm_http_stream_disconnects_total", "counter",
           "Streams whose client went away (their requests were cancelled).", d(http.disconnects));
  w.scalar("tfm_embedding_inputs_total", "counter", "Texts embedded.", d(http.embeddings));
  return w.take();
}

}  // namespace tfm_cli::serve
