// typeformer/train/run.hpp
//
// A whole language-model training run, as `tfm train` does it (docs/mini_gpt.md): data and
// tokenizer, model, AdamW with warmup + cosine, periodic evaluation and checkpoints, an exact
// resume, loss.csv / loss.svg, and text sampled at the end with a sliding window.
//
//   train::run_settings s;  ...                       // train/run_settings.hpp
//   auto resumed = train::prepare_run(s);
//   const auto tok = train::make_tokenizer(s, resumed);
//   int rc = s.bf16 ? train::run<bf16>(s, resumed, tok) : train::run<float>(s, resumed, tok);
//
// run<T> instantiates nn::gpt<nn::dynamic_config, T>; front ends put the f32 and the bf16 call
// in two translation units so the two model instantiations compile in parallel.
//
// Outputs in s.out: checkpoint.tfm (every ckpt_interval steps, at the end, and on SIGINT or
// SIGTERM), loss.csv (rewritten from the checkpoint's curve on resume, so an interrupted and
// resumed run writes the same bytes as an uninterrupted one), loss.svg, samples.txt.
// Return value: 0 done (or stopped by stop_after), 130 interrupted (checkpoint saved).
#pragma once

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/infer/generate.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/tokenizer/utf8.hpp"
#include "typeformer/train/csv.hpp"
#include "typeformer/train/data.hpp"
#include "typeformer/train/plot.hpp"
#include "typeformer/train/progress.hpp"
#include "typeformer/train/run_settings.hpp"
#include "typeformer/train/tokenizer.hpp"
#include "typeformer/train/trainer.hpp"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

namespace detail {
inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
inline std::string bytes_text(double b) { return format_si(b) + "B"; }
inline volatile std::sig_atomic_t run_stop_flag = 0;
inline void on_stop_signal(int) { run_stop_flag = 1; }
}  // namespace detail

/// Asks SIGINT and SIGTERM to end a run() at the next step boundary, with a checkpoint (a
/// second signal ends the program at once).
inline void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = detail::on_stop_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}
/// Whether a stop was asked for (install_stop_handlers).
inline bool stop_requested() noexcept { return detail::run_stop_flag != 0; }

/// The run's tokenizer: the checkpoint's when resuming, else s.tokenizer, s.bpe_vocab (trained
/// on the data and saved as OUT/tokenizer.json) or bytes. Sets s.model.vocab and checks the
/// model again.
inline text_tokenizer make_tokenizer(run_settings& s,
                                     const std::optional<training_state>& resumed) {
  namespace fs = std::filesystem;
  text_tokenizer tok;
  if (resumed) {
    tok = text_tokenizer::from_state(*resumed);
    if (tok.vocab_size() != s.model.vocab)
      fail(errc::parse, "tfm::train: the checkpoint's tokenizer has ", tok.vocab_size(),
           " ids but its model a vocabulary of ", s.model.vocab, ".");
    if (tok.is_bpe())
      s.tokenizer_note =
          "byte-level BPE from the checkpoint, " + std::to_string(tok.vocab_size()) + " ids";
    return tok;
  }
  if (!s.tokenizer.empty()) {
    tok = text_tokenizer::from_file(s.tokenizer);
    s.tokenizer_note =
        "byte-level BPE from " + s.tokenizer + ", " + std::to_string(tok.vocab_size()) + " ids";
  } else if (s.bpe_vocab > 0) {
    std::printf("training a byte-level BPE tokenizer (%lld ids) on %zu file%s...\n",
                (long long)s.bpe_vocab, s.data.size(), s.data.size() == 1 ? "" : "s");
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    tok = text_tokenizer::train_bpe(s.data, static_cast<std::size_t>(s.bpe_vocab));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string path = (fs::path(s.out) / "tokenizer.json").string();
    tfm::detail::bpe::write_file(path, tok.json());  // the text the checkpoint stores
    s.tokenizer_note = "byte-level BPE trained on the data in " + detail::fmt("%.2fs", dt) + ", " +
                       std::to_string(tok.vocab_size()) + " ids, saved to " + path;
  }
  s.model.vocab = tok.vocab_size();
  check_model(s.model);
  return tok;
}

/// The run's token data: train/validation split, its fingerprint (an exact resume checks it),
/// the unigram entropy of the training tokens and the time it took to read and encode.
struct run_data {
  token_dataset data;
  std::uint64_t fingerprint = 0;
  double h_unigram = 0, train_bytes = 0, load_s = 0;
};

inline run_data load_run_data(const run_settings& s, const text_tokenizer& tok) {
  const auto t_load = std::chrono::steady_clock::now();
  run_data d{token_dataset::from_files(s.data, tok, tok.vocab_size(), s.val_fraction)};
  const auto& tr = d.data.tokens(split::train);
  const auto& va = d.data.tokens(split::validation);
  if (static_cast<std::int64_t>(tr.size()) < s.seq + 1 ||
      static_cast<std::int64_t>(va.size()) < s.seq + 1)
    settings_fail("the data is too small: ", tr.size(), " training and ", va.size(),
                  " validation tokens; each split needs at least --seq + 1 = ", s.seq + 1,
                  " (use more text, a smaller --seq or a larger --val-fraction).");
  d.fingerprint = token_fingerprint(tr) ^ (token_fingerprint(va) * 31);
  // Over the tokens the model predicts (bytes or BPE ids): the per-token loss to compare with.
  d.h_unigram = unigram_entropy(tr);
  d.train_bytes = static_cast<double>(tok.byte_count(tr));
  d.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  return d;
}

/// Prints the model / data / training summary at the start of a run.
inline void print_run_summary(const run_settings& s, const nn::model_summary& sum,
                              const run_data& d, const text_tokenizer& tok, int threads,
                              double param_bytes, bool resuming, std::int64_t resume_step) {
  using detail::bytes_text;
  const auto& c = s.model;
  const auto& tr = d.data.tokens(split::train);
  const auto& va = d.data.tokens(split::validation);
  const double tokens_per_step = static_cast<double>(s.batch * s.seq * s.grad_accum);
  const double run_tokens = tokens_per_step * static_cast<double>(s.steps);
  std::printf("%s: typeformer %s\n", s.program.c_str(),
              tok.is_bpe() ? "GPT on byte-level BPE tokens" : "byte-level GPT");
  std::printf(
      "  model       %s: %lld layers, n_embd %lld, %lld heads (%lld kv), ffn %lld, block %lld, "
      "%s/%s/%s%s\n",
      s.config.c_str(), (long long)c.n_layer, (long long)c.n_embd, (long long)c.n_head,
      (long long)c.n_kv_head, (long long)c.ffn, (long long)c.block_size, to_string(c.norm),
      to_string(c.mlp), to_string(c.position), c.tie_embeddings ? ", tied embeddings" : "");
  std::printf("  parameters  %s (%lld; %s without the position table), %s weights = %s\n",
              format_si(static_cast<double>(sum.parameters)).c_str(), (long long)sum.parameters,
              format_si(static_cast<double>(sum.non_embedding)).c_str(), s.bf16 ? "bf16" : "f32",
              bytes_text(param_bytes).c_str());
  if (c.mlp == nn::mlp_kind::moe)
    std::printf(
        "  experts     %lld per layer (%s), %lld used per token, %lld wide, %lld shared; %s "
        "parameters active per token\n",
        (long long)c.n_expert, to_string(c.router), (long long)c.n_expert_used,
        (long long)(c.expert_ffn > 0 ? c.expert_ffn : c.ffn), (long long)c.n_shared_expert,
        format_si(static_cast<double>(sum.active)).c_str());
  std::printf(
      "  compute     %s FLOPs per training token (6N + 12*L*C*T at T = %lld, N active); this run "
      "%s FLOPs\n",
      format_si(sum.train_flops_per_token).c_str(), (long long)s.seq,
      format_si(sum.train_flops_per_token * run_tokens).c_str());
  std::printf("  kv cache    %s per token (%s for a full %lld-token context)\n",
              bytes_text(sum.kv_cache_bytes_per_token).c_str(),
              bytes_text(sum.kv_cache_bytes_per_token * static_cast<double>(c.block_size)).c_str(),
              (long long)c.block_size);
  std::printf(
      "  chinchilla  %s tokens (20 per parameter); this run trains on %s tokens (%.1f%% of that)\n",
      format_si(sum.chinchilla_tokens).c_str(), format_si(run_tokens).c_str(),
      100.0 * run_tokens / sum.chinchilla_tokens);
  if (tok.is_bpe()) {
    std::printf("  tokenizer   %s\n", s.tokenizer_note.c_str());
    std::printf(
        "  data        %zu file%s: %s training + %s validation tokens (%.3f bytes/token), "
        "read and encoded in %.2fs\n",
        s.data.size(), s.data.size() == 1 ? "" : "s",
        format_si(static_cast<double>(tr.size())).c_str(),
        format_si(static_cast<double>(va.size())).c_str(),
        d.train_bytes / std::max<double>(1, static_cast<double>(tr.size())), d.load_s);
  } else {
    std::printf(
        "  data        %zu file%s: %s training + %s validation tokens (bytes), read in %.2fs\n",
        s.data.size(), s.data.size() == 1 ? "" : "s",
        format_si(static_cast<double>(tr.size())).c_str(),
        format_si(static_cast<double>(va.size())).c_str(), d.load_s);
  }
  std::printf("              unigram entropy of the training text: %.4f nats/token (%.3f bits)\n",
              d.h_unigram, d.h_unigram / std::log(2.0));
  std::printf(
      "  training    %lld steps x %lld tokens (batch %lld x seq %lld x grad-accum %lld)%s\n",
      (long long)s.steps, (long long)tokens_per_step, (long long)s.batch, (long long)s.seq,
      (long long)s.grad_accum, s.bf16 ? ", bf16 with f32 master weights" : "");
  std::printf(
      "              AdamW lr %g, warmup %lld, cosine to %g, weight decay %g, clip %g, dropout "
      "%g\n",
      s.lr, (long long)s.warmup, s.min_lr, s.weight_decay, s.clip, c.dropout);
  std::printf(
      "              seed %llu, %d thread%s; eval every %lld steps (%lld x %lld x %lld tokens)\n",
      (unsigned long long)s.seed, threads, threads == 1 ? "" : "s", (long long)s.eval_interval,
      (long long)s.eval_batches, (long long)s.batch, (long long)s.seq);
  if (resuming)
    std::printf("  resumed     from %s at step %lld\n", s.resume.c_str(), (long long)resume_step);
  std::printf("  output      %s/\n", s.out.c_str());
  std::fflush(stdout);
}

/// loss.csv (one row per curve point: step, tokens, lr, train_loss, val_loss, val_ppl) and
/// loss.svg (the curves with the unigram entropy as a line).
class loss_log {
 public:
  loss_log(const std::string& out_dir, std::string title, double h_unigram, double tokens_per_step,
           const std::vector<curve_point>& curve)
      : csv_((std::filesystem::path(out_dir) / "loss.csv").string(),
             {"step", "tokens", "lr", "train_loss", "val_loss", "val_ppl"}),
        svg_path_((std::filesystem::path(out_dir) / "loss.svg").string()),
        title_(std::move(title)),
        h_unigram_(h_unigram),
        tokens_per_step_(tokens_per_step) {
    for (const auto& p : curve) append(p);
  }
  void append(const curve_point& p) {
    auto f = [](double v) { return csv_number(static_cast<float>(v)); };
    csv_.row({csv_number(p.step),
              csv_number(static_cast<std::int64_t>(p.step) *
                         static_cast<std::int64_t>(tokens_per_step_)),
              csv_number(p.lr), f(p.train_loss), f(p.val_loss),
              std::isnan(p.val_loss) ? std::string() : f(std::exp(p.val_loss))});
  }
  void write_plot(const std::vector<curve_point>& curve) const {
    plot_series trs{"train", {}, {}, "#1f77b4", 1.2, false, 0.8};
    plot_series vls{"validation", {}, {}, "#d62728", 2.0, true, 1.0};
    for (const auto& p : curve) {
      if (!std::isnan(p.train_loss)) {
        trs.x.push_back(static_cast<double>(p.step));
        trs.y.push_back(p.train_loss);
      }
      if (!std::isnan(p.val_loss)) {
        vls.x.push_back(static_cast<double>(p.step));
        vls.y.push_back(p.val_loss);
      }
    }
    plot_options po;
    po.title = title_;
    po.x_label = "step";
    po.y_label = "cross-entropy loss (nats/token)";
    po.hlines.push_back(
        {"unigram entropy " + detail::fmt("%.3f", h_unigram_), h_unigram_, "#555555"});
    write_svg(svg_path_, svg_line_plot({trs, vls}, po));
  }

 private:
  csv_writer csv_;
  std::string svg_path_, title_;
  double h_unigram_ = 0, tokens_per_step_ = 0;
};

/// Target tokens per byte of text in `batches` (1 for byte tokens): loss per token times this is
/// the loss per byte, comparable between tokenizers.
inline double tokens_per_byte(const std::vector<std::pair<ids_tensor, ids_tensor>>& batches,
                              const text_tokenizer& tok) {
  double tokens = 0, bytes = 0;
  for (const auto& b : batches) {
    const auto& y = b.second;
    const std::span<const std::int32_t> ids(y.data(), static_cast<std::size_t>(y.size()));
    tokens += static_cast<double>(ids.size());
    bytes += static_cast<double>(tok.byte_count(ids));
  }
  return tokens / std::max(bytes, 1.0);
}

/// `n` tokens sampled after `prompt` with the KV-cached generator, decoded with the prompt in
/// front. When the context reaches the block size, generation continues from the last half
/// block (a fresh cache each time; chunk k samples with seed so.seed + k * 0x9E37...). The
/// whole id sequence is decoded at once (a BPE token boundary may split a UTF-8 character) and
/// made valid UTF-8.
template <class Model>
std::string sample_text(const Model& m, const text_tokenizer& tok, const std::string& prompt,
                        std::int64_t n, infer::sampling_options so) {
  const std::int64_t block = m.config().block_size;
  std::vector<std::int32_t> all = tok.encode(prompt);
  std::int64_t left = n, chunk = 0;
  while (left > 0) {
    const std::int64_t keep =
        chunk == 0 ? std::min<std::int64_t>(block - 1, static_cast<std::int64_t>(all.size()))
                   : std::min<std::int64_t>(block / 2, static_cast<std::int64_t>(all.size()));
    std::vector<std::int32_t> ctx(all.end() - keep, all.end());
    infer::sampling_options sc = so;
    sc.seed = so.seed + static_cast<std::uint64_t>(chunk) * 0x9E3779B97F4A7C15ull;
    const std::int64_t take = std::min<std::int64_t>(left, block - keep + 1);
    auto r = infer::generate(m, ctx, take, sc);
    const std::int64_t got = static_cast<std::int64_t>(r.size()) - keep;
    if (got <= 0) break;
    all.insert(all.end(), r.begin() + keep, r.end());
    left -= got;
    ++chunk;
  }
  return utf8::sanitize(tok.decode(all));
}

/// The data-loader seed a run derives from its seed.
inline std::uint64_t data_seed_of(std::uint64_t seed) noexcept {
  return seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
}

/// Trains and samples with T parameters (float or bf16); see the file comment. `resumed`: the
/// checkpoint's state from prepare_run; `tok`: make_tokenizer's.
template <class T>
int run(run_settings& s, const std::optional<training_state>& resumed, const text_tokenizer& tok) {
  namespace fs = std::filesystem;
  using detail::fmt;
  using model_t = nn::gpt<nn::dynamic_config, T>;
  const bool resuming = resumed.has_value();
  if (s.threads > 0) set_num_threads(s.threads);
  const int threads = num_threads();

  // ---- data
  run_data rd = load_run_data(s, tok);
  auto& data = rd.data;
  const auto& va = data.tokens(split::validation);

  // ---- model, optimizer, state
  model_t model(s.model, s.seed);
  auto ps = model.parameters();
  optim::adam_options ao;
  ao.lr = s.lr;
  ao.beta1 = 0.9;
  ao.beta2 = 0.95;
  ao.eps = 1e-8;
  ao.weight_decay = s.weight_decay;
  auto opt = optim::adamw(ps, ao);
  const std::string ckpt = (fs::path(s.out) / "checkpoint.tfm").string();
  const std::string csv_path = (fs::path(s.out) / "loss.csv").string();
  const std::string svg_path = (fs::path(s.out) / "loss.svg").string();
  const std::string samples_path = (fs::path(s.out) / "samples.txt").string();
  training_state st;
  if (resuming) {
    st = load_training_state(s.resume, ps, opt);
    if (st.meta.count("run.data_fingerprint") &&
        st.meta["run.data_fingerprint"] != std::to_string(rd.fingerprint))
      fail(errc::value,
           "tfm::train: the data files changed since the checkpoint was written (their tokens ",
           "differ); exact resume needs the same data.");
    model.set_dropout_offset(st.dropout_offset);
    get_moe_state(st.meta, model);
  } else {
    st.model_seed = s.seed;
    st.data_seed = data_seed_of(s.seed);
  }
  put_run_meta(st.meta, s);
  tok.store(st);  // "run.tokenizer", and for BPE the tokenizer.json blob
  st.meta["run.data_fingerprint"] = std::to_string(rd.fingerprint);
  if (st.step > s.steps)
    settings_fail("the checkpoint is at step ", st.step, ", past --steps ", s.steps, ".");

  step_options so;
  so.batch = s.batch;
  so.seq = s.seq;
  so.grad_accum = s.grad_accum;
  so.clip = s.clip;
  so.schedule = optim::lr_schedule::warmup_cosine(s.lr, s.min_lr, s.warmup, s.steps);

  // ---- summary and the loss log (rewritten from the checkpoint's curve, then appended to)
  const auto sum = model.summary(s.seq);
  const double tokens_per_step = static_cast<double>(s.batch * s.seq * s.grad_accum);
  print_run_summary(s, sum, rd, tok, threads, static_cast<double>(sum.parameters) * sizeof(T),
                    resuming, st.step);
  loss_log log(s.out,
               "mini_gpt " + s.config + ": " + format_si(static_cast<double>(sum.parameters)) +
                   " parameters, " + format_si(tokens_per_step) + " tokens/step",
               rd.h_unigram, tokens_per_step, st.curve);

  auto val_batches = data.evaluation_batches(split::validation, s.batch, s.seq, s.eval_batches);
  if (val_batches.empty())
    settings_fail("the validation split (", va.size(), " tokens) is smaller than one batch of ",
                  s.batch, " x ", s.seq + 1,
                  " tokens; lower --batch/--seq or raise --val-fraction.");
  const double tpb = tokens_per_byte(val_batches, tok);
  progress_line bar(s.steps, stdout, s.log_interval);
  double eval_s_total = 0;
  std::int64_t evals = 0;
  auto run_eval = [&] {
    auto t0 = std::chrono::steady_clock::now();
    const double v = evaluate(model, val_batches);
    eval_s_total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++evals;
    record_validation(st, v);
    const auto& p = st.curve.back();
    std::string line = "step " + std::to_string(st.step) + ": val loss " + fmt("%.4f", v) +
                       " (ppl " + fmt("%.2f", std::exp(v)) + ")";
    if (!std::isnan(p.train_loss)) line += ", train loss " + fmt("%.4f", p.train_loss);
    if (const auto ms = model.moe_stats(); !ms.empty()) {  // the last validation batch's routing
      double worst = 0;
      for (const auto& m : ms) worst = std::max(worst, m.max_over_mean());
      line += ", expert load max/mean " + fmt("%.2f", worst);
    }
    bar.print(line);
  };
  auto save = [&] {
    put_moe_state(st.meta, model);
    save_training_state(ckpt, ps, opt, st);
    log.write_plot(st.curve);
  };

  install_stop_handlers();
  if (st.step == 0 && st.curve.empty()) {
    run_eval();
    log.append(st.curve.back());
  }
  throughput meter;
  const auto t_start = std::chrono::steady_clock::now();
  std::int64_t skipped = 0;
  const std::int64_t last = s.stop_after > 0 ? std::min(s.stop_after, s.steps) : s.steps;
  while (st.step < last && !stop_requested()) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = train_step(model, opt, data, so, st);
    meter.add(tokens_per_step,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!r.applied) {
      ++skipped;
      bar.print("step " + std::to_string(st.step) + ": update skipped (" + opt.last_error() + ")");
    }
    if (st.step % s.eval_interval == 0 || st.step == s.steps) run_eval();
    log.append(st.curve.back());
    const std::int64_t left = s.steps - st.step;
    const double evals_left =
        static_cast<double>(left / s.eval_interval + (left % s.eval_interval ? 1 : 0));
    const double eval_avg = evals ? eval_s_total / static_cast<double>(evals) : 0.0;
    bar.update(
        {st.step, r.loss, r.lr, meter.tokens_per_s(), meter.eta(left) + evals_left * eval_avg});
    if (st.step % s.ckpt_interval == 0 || st.step == last) save();
  }
  bar.finish();
  const double train_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (stop_requested()) {
    save();
    std::printf("interrupted at step %lld: checkpoint written to %s\nresume with: %s --resume %s\n",
                (long long)st.step, ckpt.c_str(), s.program.c_str(), s.out.c_str());
    return 130;
  }
  if (st.step < s.steps) {
    std::printf(
        "stopped after step %lld of %lld (--stop-after): checkpoint written to %s\n"
        "continue with: %s --resume %s\n",
        (long long)st.step, (long long)s.steps, ckpt.c_str(), s.program.c_str(), s.out.c_str());
    return 0;
  }

  // ---- results
  double val = std::nan(""), first_val = std::nan("");
  for (const auto& p : st.curve)
    if (!std::isnan(p.val_loss)) {
      if (std::isnan(first_val)) first_val = p.val_loss;
      val = p.val_loss;
    }
  std::printf(
      "\ntrained %lld steps in %s this session (%s tokens/s incl. evaluation)%s\n",
      (long long)st.step, format_duration(train_s).c_str(),
      format_si(tokens_per_step * static_cast<double>(st.step - (resuming ? resumed->step : 0)) /
                std::max(train_s, 1e-9))
          .c_str(),
      skipped ? (", " + std::to_string(skipped) + " updates skipped").c_str() : "");
  if (tok.is_bpe())
    std::printf(
        "validation loss %.4f nats/token (perplexity %.2f) = %.4f nats/byte (%.3f bits/byte at "
        "%.3f bytes/token); at step 0: %.4f\n",
        val, std::exp(val), val * tpb, val * tpb / std::log(2.0), 1.0 / tpb, first_val);
  else
    std::printf(
        "validation loss %.4f nats/token (perplexity %.2f, %.3f bits/byte); at step 0: %.4f\n", val,
        std::exp(val), val * tpb / std::log(2.0), first_val);
  std::printf("unigram entropy %.4f nats/token: the model is %.4f nats (%.0f%%) %s it\n",
              rd.h_unigram, std::fabs(rd.h_unigram - val),
              100.0 * std::fabs(rd.h_unigram - val) / rd.h_unigram,
              val < rd.h_unigram ? "below" : "ABOVE");

  // ---- samples
  std::string all_samples;
  if (s.samples > 0 && s.sample_tokens > 0) {
    infer::sampling_options sp;
    sp.temperature = s.temperature;
    sp.top_k = s.top_k;
    sp.top_p = s.top_p;
    std::printf("\nsamples (temperature %g, top-k %lld, top-p %g, KV-cached):\n", s.temperature,
                (long long)s.top_k, s.top_p);
    for (std::int64_t i = 0; i < s.samples; ++i) {
      sp.seed = s.seed * 1000003ull + static_cast<std::uint64_t>(i);
      auto t0 = std::chrono::steady_clock::now();
      std::string text = sample_text(model, tok, s.prompt, s.sample_tokens, sp);
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("---- sample %lld (%s tokens/s) ----\n%s\n", (long long)(i + 1),
                  format_si(static_cast<double>(s.sample_tokens) / std::max(dt, 1e-9)).c_str(),
                  text.c_str());
      all_samples += "---- sample " + std::to_string(i + 1) + " ----\n" + text + "\n";
    }
    if (std::FILE* f = std::fopen(samples_path.c_str(), "wb")) {
      std::fwrite(all_samples.data(), 1, all_samples.size(), f);
      std::fclose(f);
    }
  }
  std::printf("\nfiles: %s (loss curve), %s (plot), %s (checkpoint)%s%s\n", csv_path.c_str(),
              svg_path.c_str(), ckpt.c_str(), all_samples.empty() ? "" : ", ",
              all_samples.empty() ? "" : samples_path.c_str());
  return 0;
}

}  // namespace train
TFM_END_NAMESPACE
