// mini_gpt/options.hpp: the trainer's settings and what its translation units share
// (main.cpp parses the command line; run_f32.cpp and run_bf16.cpp train, one element type
// each, so the two model instantiations compile in parallel).
#pragma once

#include <typeformer/config/error.hpp>
#include <typeformer/nn/config.hpp>
#include <typeformer/train/progress.hpp>
#include <typeformer/train/tokenizer.hpp>
#include <typeformer/train/trainer.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace mini_gpt {
using namespace tfm;

/// A command-line mistake: message, exit code 2.
struct usage_error {
  std::string message;
};

template <class... A>
[[noreturn]] void usage_fail(const A&... a) {
  std::string s;
  (detail::append_piece(s, a), ...);
  throw usage_error{s};
}

/// The run's settings. Fields set on the command line are listed in `given`.
struct settings {
  std::vector<std::string> data;
  double val_fraction = 0.1;
  std::string tokenizer;       // --tokenizer FILE ("" = none)
  std::int64_t bpe_vocab = 0;  // --bpe-vocab N (0 = none); neither: byte tokens
  std::string tokenizer_note;  // where the tokenizer came from (for the summary)
  std::string config = "tiny";
  nn::dynamic_config model;
  bool bf16 = false;
  std::int64_t steps = 1000;
  std::int64_t batch = 8, seq = 0, grad_accum = 1;
  double lr = 1e-3, min_lr = -1, weight_decay = 0.1, clip = 1.0;
  std::int64_t warmup = -1;
  std::uint64_t seed = 1;
  int threads = 0;
  std::int64_t eval_interval = 100, eval_batches = 20, ckpt_interval = 0, log_interval = 10;
  std::int64_t stop_after = 0;  // 0: run to --steps
  std::string out, resume;
  std::int64_t samples = 2, sample_tokens = 300;
  std::string prompt = "\n";
  double temperature = 0.8, top_p = 0.95;
  std::int64_t top_k = 40;
  std::set<std::string> given;
};

template <class N>
N parse_num(const std::string& flag, const std::string& v) {
  N x{};
  auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (r.ec != std::errc() || r.ptr != v.data() + v.size() || v.empty())
    usage_fail(flag, " needs a", std::is_integral_v<N> ? "n integer" : " number", ", not '", v,
               "'.");
  if constexpr (std::is_floating_point_v<N>)
    if (!std::isfinite(x)) usage_fail(flag, " must be finite, not '", v, "'.");
  return x;
}

inline std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string r;
  for (std::size_t i = 0; i < v.size(); ++i) r += (i ? sep : "") + v[i];
  return r;
}

/// Run settings stored in the checkpoint, and the flags that must agree with them on resume.
inline void put_run_meta(std::map<std::string, std::string>& m, const settings& s) {
  train::put_config(m, s.model);
  m["run.config"] = s.config;
  m["run.data"] = join(s.data, "\n");
  m["run.val_fraction"] = train::exact_string(s.val_fraction);
  m["run.tokenizer_file"] = s.tokenizer;
  m["run.bpe_vocab"] = std::to_string(s.bpe_vocab);
  m["run.bf16"] = s.bf16 ? "1" : "0";
  m["run.steps"] = std::to_string(s.steps);
  m["run.batch"] = std::to_string(s.batch);
  m["run.seq"] = std::to_string(s.seq);
  m["run.grad_accum"] = std::to_string(s.grad_accum);
  m["run.lr"] = train::exact_string(s.lr);
  m["run.min_lr"] = train::exact_string(s.min_lr);
  m["run.warmup"] = std::to_string(s.warmup);
  m["run.weight_decay"] = train::exact_string(s.weight_decay);
  m["run.clip"] = train::exact_string(s.clip);
  m["run.seed"] = std::to_string(s.seed);
  m["run.eval_interval"] = std::to_string(s.eval_interval);
  m["run.eval_batches"] = std::to_string(s.eval_batches);
  m["run.ckpt_interval"] = std::to_string(s.ckpt_interval);
  m["run.samples"] = std::to_string(s.samples);
  m["run.sample_tokens"] = std::to_string(s.sample_tokens);
  m["run.prompt"] = s.prompt;
  m["run.temperature"] = train::exact_string(s.temperature);
  m["run.top_k"] = std::to_string(s.top_k);
  m["run.top_p"] = train::exact_string(s.top_p);
}

inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

inline std::string bytes_text(double b) { return train::format_si(b) + "B"; }

// ---- The parts of a run that do not depend on the parameter type, compiled once in main.cpp
// (the run TUs call them instead of instantiating the tokenizer, CSV and plot code themselves).

/// The run's token data: train/validation split, its fingerprint (exact resume checks it), the
/// unigram entropy of the training tokens and the time it took to read and encode.
struct run_data {
  train::token_dataset data;
  std::uint64_t fingerprint = 0;
  double h_unigram = 0, train_bytes = 0, load_s = 0;
};
run_data load_run_data(const settings& s, const train::text_tokenizer& tok);

/// Prints the model/data/training summary at the start of a run.
void print_summary(const settings& s, const nn::model_summary& sum, const run_data& d,
                   const train::text_tokenizer& tok, int threads, double param_bytes, bool resuming,
                   std::int64_t resume_step);

/// loss.csv (one row per step) and loss.svg (the curves with the unigram entropy line).
class loss_log {
 public:
  loss_log(const settings& s, const nn::model_summary& sum, double h_unigram,
           double tokens_per_step, const std::vector<train::curve_point>& curve);
  ~loss_log();
  loss_log(const loss_log&) = delete;
  loss_log& operator=(const loss_log&) = delete;
  void append(const train::curve_point& p);
  void write_plot(const std::vector<train::curve_point>& curve) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Validation tokens per byte of text (1 for byte tokens): loss per token times this is the loss
/// per byte.
double tokens_per_byte(const std::vector<std::pair<train::ids_tensor, train::ids_tensor>>& batches,
                       const train::text_tokenizer& tok);

/// The tokenizer's encode / decode (decode output made valid UTF-8) and its checkpoint entry.
std::vector<std::int32_t> encode_text(const train::text_tokenizer& tok, const std::string& text);
std::string decode_text(const train::text_tokenizer& tok, const std::vector<std::int32_t>& ids);
void store_tokenizer(const train::text_tokenizer& tok, train::training_state& st);

/// Trains and samples with f32 (run_f32.cpp) or bf16 (run_bf16.cpp) parameters; returns the
/// exit code. `resumed`: the checkpoint's state when --resume was given; `tok`: the run's
/// tokenizer (its vocabulary is s.model.vocab).
int run_f32(settings& s, const std::optional<train::training_state>& resumed,
            const train::text_tokenizer& tok);
int run_bf16(settings& s, const std::optional<train::training_state>& resumed,
             const train::text_tokenizer& tok);

}  // namespace mini_gpt
