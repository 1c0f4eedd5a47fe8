// mini_gpt/run.hpp: the training loop, sampling and reporting for one parameter type T
// (included by run_f32.cpp and run_bf16.cpp only).
#pragma once

#include "options.hpp"

#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/infer/generate.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/optim/schedule.hpp>
#include <typeformer/tokenizer/utf8.hpp>
#include <typeformer/train/csv.hpp>
#include <typeformer/train/data.hpp>
#include <typeformer/train/plot.hpp>
#include <typeformer/train/progress.hpp>
#include <typeformer/train/tokenizer.hpp>
#include <typeformer/train/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace mini_gpt {
namespace fs = std::filesystem;

inline volatile std::sig_atomic_t g_stop = 0;
inline void on_signal(int) { g_stop = 1; }

inline void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C ends the program at once
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

/// Samples `n` tokens after `prompt` with the KV-cached generator. When the context reaches the
/// block size, generation continues from the last half block (a fresh cache each time). The
/// whole id sequence is decoded at once (a BPE token boundary may split a UTF-8 character).
template <class Model>
std::string sample_text(const Model& m, const train::text_tokenizer& tok, const std::string& prompt,
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

template <class T>
int run(settings& s, const std::optional<train::training_state>& resumed_meta,
        const train::text_tokenizer& tok) {
  using model_t = nn::gpt<nn::dynamic_config, T>;
  const bool resuming = resumed_meta.has_value();
  if (s.threads > 0) set_num_threads(s.threads);
  const int threads = num_threads();

  // ---- data
  auto t_load = std::chrono::steady_clock::now();
  auto data = train::token_dataset::from_files(s.data, tok, tok.vocab_size(), s.val_fraction);
  const auto& tr = data.tokens(train::split::train);
  const auto& va = data.tokens(train::split::validation);
  if (static_cast<std::int64_t>(tr.size()) < s.seq + 1 ||
      static_cast<std::int64_t>(va.size()) < s.seq + 1)
    usage_fail("the data is too small: ", tr.size(), " training and ", va.size(),
               " validation tokens; each split needs at least --seq + 1 = ", s.seq + 1,
               " (use more text, a smaller --seq or a larger --val-fraction).");
  const std::uint64_t fp = train::token_fingerprint(tr) ^ (train::token_fingerprint(va) * 31);
  // Over the tokens the model predicts (bytes or BPE ids): the per-token loss to compare with.
  const double h_unigram = train::unigram_entropy(tr);
  const double train_bytes = static_cast<double>(tok.byte_count(tr));
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

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
  train::training_state st;
  if (resuming) {
    st = train::load_training_state(s.resume, ps, opt);
    if (st.meta.count("run.data_fingerprint") &&
        st.meta["run.data_fingerprint"] != std::to_string(fp))
      fail(errc::value,
           "mini_gpt: the data files changed since the checkpoint was written (their tokens ",
           "differ); exact resume needs the same data.");
    model.set_dropout_offset(st.dropout_offset);
  } else {
    st.model_seed = s.seed;
    st.data_seed = s.seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  }
  put_run_meta(st.meta, s);
  tok.store(st);  // "run.tokenizer", and for BPE the tokenizer.json blob
  st.meta["run.data_fingerprint"] = std::to_string(fp);
  if (st.step > s.steps)
    usage_fail("the checkpoint is at step ", st.step, ", past --steps ", s.steps, ".");

  train::step_options so;
  so.batch = s.batch;
  so.seq = s.seq;
  so.grad_accum = s.grad_accum;
  so.clip = s.clip;
  so.schedule = optim::lr_schedule::warmup_cosine(s.lr, s.min_lr, s.warmup, s.steps);

  // ---- summary
  const auto sum = model.summary(s.seq);
  const auto& c = s.model;
  const double tokens_per_step = static_cast<double>(s.batch * s.seq * s.grad_accum);
  const double run_tokens = tokens_per_step * static_cast<double>(s.steps);
  std::fputs(tok.is_bpe() ? "mini_gpt: typeformer GPT on byte-level BPE tokens\n"
                          : "mini_gpt: typeformer byte-level GPT\n",
             stdout);
  std::printf(
      "  model       %s: %lld layers, n_embd %lld, %lld heads (%lld kv), ffn %lld, block %lld, "
      "%s/%s/%s%s\n",
      s.config.c_str(), (long long)c.n_layer, (long long)c.n_embd, (long long)c.n_head,
      (long long)c.n_kv_head, (long long)c.ffn, (long long)c.block_size, train::to_string(c.norm),
      train::to_string(c.mlp), train::to_string(c.position),
      c.tie_embeddings ? ", tied embeddings" : "");
  std::printf(
      "  parameters  %s (%lld; %s without the position table), %s weights = %s\n",
      train::format_si(static_cast<double>(sum.parameters)).c_str(), (long long)sum.parameters,
      train::format_si(static_cast<double>(sum.non_embedding)).c_str(), s.bf16 ? "bf16" : "f32",
      bytes_text(static_cast<double>(sum.parameters) * sizeof(T)).c_str());
  std::printf(
      "  compute     %s FLOPs per training token (6N + 12*L*C*T at T = %lld); this run %s FLOPs\n",
      train::format_si(sum.train_flops_per_token).c_str(), (long long)s.seq,
      train::format_si(sum.train_flops_per_token * run_tokens).c_str());
  std::printf("  kv cache    %s per token (%s for a full %lld-token context)\n",
              bytes_text(sum.kv_cache_bytes_per_token).c_str(),
              bytes_text(sum.kv_cache_bytes_per_token * static_cast<double>(c.block_size)).c_str(),
              (long long)c.block_size);
  std::printf(
      "  chinchilla  %s tokens (20 per parameter); this run trains on %s tokens (%.1f%% of that)\n",
      train::format_si(sum.chinchilla_tokens).c_str(), train::format_si(run_tokens).c_str(),
      100.0 * run_tokens / sum.chinchilla_tokens);
  if (tok.is_bpe()) {
    std::printf("  tokenizer   %s\n", s.tokenizer_note.c_str());
    std::printf(
        "  data        %zu file%s: %s training + %s validation tokens (%.3f bytes/token), "
        "read and encoded in %.2fs\n",
        s.data.size(), s.data.size() == 1 ? "" : "s",
        train::format_si(static_cast<double>(tr.size())).c_str(),
        train::format_si(static_cast<double>(va.size())).c_str(),
        train_bytes / std::max<double>(1, static_cast<double>(tr.size())), load_s);
  } else {
    std::printf(
        "  data        %zu file%s: %s training + %s validation tokens (bytes), read in %.2fs\n",
        s.data.size(), s.data.size() == 1 ? "" : "s",
        train::format_si(static_cast<double>(tr.size())).c_str(),
        train::format_si(static_cast<double>(va.size())).c_str(), load_s);
  }
  std::printf("              unigram entropy of the training text: %.4f nats/token (%.3f bits)\n",
              h_unigram, h_unigram / std::log(2.0));
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
    std::printf("  resumed     from %s at step %lld\n", s.resume.c_str(), (long long)st.step);
  std::printf("  output      %s/\n", s.out.c_str());
  std::fflush(stdout);

  // ---- the loss log: rewritten from the checkpoint's curve, then appended to
  const std::vector<std::string> header{"step",       "tokens",   "lr",
                                        "train_loss", "val_loss", "val_ppl"};
  auto row_of = [&](const train::curve_point& p) {
    auto f = [](double v) { return train::csv_number(static_cast<float>(v)); };
    return std::vector<std::string>{
        train::csv_number(p.step),
        train::csv_number(static_cast<std::int64_t>(p.step) *
                          static_cast<std::int64_t>(tokens_per_step)),
        train::csv_number(p.lr),
        f(p.train_loss),
        f(p.val_loss),
        std::isnan(p.val_loss) ? std::string() : f(std::exp(p.val_loss))};
  };
  train::csv_writer csv(csv_path, header);
  for (const auto& p : st.curve) csv.row(row_of(p));

  auto write_plot = [&] {
    train::plot_series trs{"train", {}, {}, "#1f77b4", 1.2, false, 0.8};
    train::plot_series vls{"validation", {}, {}, "#d62728", 2.0, true, 1.0};
    for (const auto& p : st.curve) {
      if (!std::isnan(p.train_loss)) {
        trs.x.push_back(static_cast<double>(p.step));
        trs.y.push_back(p.train_loss);
      }
      if (!std::isnan(p.val_loss)) {
        vls.x.push_back(static_cast<double>(p.step));
        vls.y.push_back(p.val_loss);
      }
    }
    train::plot_options po;
    po.title = "mini_gpt " + s.config + ": " +
               train::format_si(static_cast<double>(sum.parameters)) + " parameters, " +
               train::format_si(tokens_per_step) + " tokens/step";
    po.x_label = "step";
    po.y_label = "cross-entropy loss (nats/token)";
    po.hlines.push_back({"unigram entropy " + fmt("%.3f", h_unigram), h_unigram, "#555555"});
    train::write_svg(svg_path, train::svg_line_plot({trs, vls}, po));
  };

  auto val_batches =
      data.evaluation_batches(train::split::validation, s.batch, s.seq, s.eval_batches);
  if (val_batches.empty())
    usage_fail("the validation split (", va.size(), " tokens) is smaller than one batch of ",
               s.batch, " x ", s.seq + 1, " tokens; lower --batch/--seq or raise --val-fraction.");
  // Tokens per byte of the predicted (target) tokens of the validation batches: loss per token
  // times this is the loss per byte, comparable between tokenizers (exactly 1 for bytes).
  double val_target_tokens = 0, val_target_bytes = 0;
  for (const auto& b : val_batches) {
    const auto& y = b.second;
    const std::span<const std::int32_t> ids(y.data(), static_cast<std::size_t>(y.size()));
    val_target_tokens += static_cast<double>(ids.size());
    val_target_bytes += static_cast<double>(tok.byte_count(ids));
  }
  const double tokens_per_byte = val_target_tokens / std::max(val_target_bytes, 1.0);
  train::progress_line bar(s.steps, stdout, s.log_interval);
  double eval_s_total = 0;
  std::int64_t evals = 0;
  auto run_eval = [&] {
    auto t0 = std::chrono::steady_clock::now();
    const double v = train::evaluate(model, val_batches);
    eval_s_total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++evals;
    train::record_validation(st, v);
    const auto& p = st.curve.back();
    std::string line = "step " + std::to_string(st.step) + ": val loss " + fmt("%.4f", v) +
                       " (ppl " + fmt("%.2f", std::exp(v)) + ")";
    if (!std::isnan(p.train_loss)) line += ", train loss " + fmt("%.4f", p.train_loss);
    bar.print(line);
  };
  auto save = [&] {
    train::save_training_state(ckpt, ps, opt, st);
    write_plot();
  };

  install_signal_handlers();
  if (st.step == 0 && st.curve.empty()) {
    run_eval();
    csv.row(row_of(st.curve.back()));
  }
  train::throughput meter;
  const auto t_start = std::chrono::steady_clock::now();
  std::int64_t skipped = 0;
  const std::int64_t last = s.stop_after > 0 ? std::min(s.stop_after, s.steps) : s.steps;
  while (st.step < last && !g_stop) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = train::train_step(model, opt, data, so, st);
    meter.add(tokens_per_step,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!r.applied) {
      ++skipped;
      bar.print("step " + std::to_string(st.step) + ": update skipped (" + opt.last_error() + ")");
    }
    if (st.step % s.eval_interval == 0 || st.step == s.steps) run_eval();
    csv.row(row_of(st.curve.back()));
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
  if (g_stop) {
    save();
    std::printf(
        "interrupted at step %lld: checkpoint written to %s\nresume with: mini_gpt --resume %s\n",
        (long long)st.step, ckpt.c_str(), s.out.c_str());
    return 130;
  }
  if (st.step < s.steps) {
    std::printf(
        "stopped after step %lld of %lld (--stop-after): checkpoint written to %s\n"
        "continue with: mini_gpt --resume %s\n",
        (long long)st.step, (long long)s.steps, ckpt.c_str(), s.out.c_str());
    return 0;
  }

  // ---- results
  double val = std::nan(""), first_val = std::nan("");
  for (const auto& p : st.curve)
    if (!std::isnan(p.val_loss)) {
      if (std::isnan(first_val)) first_val = p.val_loss;
      val = p.val_loss;
    }
  std::printf("\ntrained %lld steps in %s this session (%s tokens/s incl. evaluation)%s\n",
              (long long)st.step, train::format_duration(train_s).c_str(),
              train::format_si(tokens_per_step *
                               static_cast<double>(st.step - (resuming ? resumed_meta->step : 0)) /
                               std::max(train_s, 1e-9))
                  .c_str(),
              skipped ? (", " + std::to_string(skipped) + " updates skipped").c_str() : "");
  if (tok.is_bpe())
    std::printf(
        "validation loss %.4f nats/token (perplexity %.2f) = %.4f nats/byte (%.3f bits/byte at "
        "%.3f bytes/token); at step 0: %.4f\n",
        val, std::exp(val), val * tokens_per_byte, val * tokens_per_byte / std::log(2.0),
        1.0 / tokens_per_byte, first_val);
  else
    std::printf(
        "validation loss %.4f nats/token (perplexity %.2f, %.3f bits/byte); at step 0: %.4f\n", val,
        std::exp(val), val * tokens_per_byte / std::log(2.0), first_val);
  std::printf("unigram entropy %.4f nats/token: the model is %.4f nats (%.0f%%) %s it\n", h_unigram,
              std::fabs(h_unigram - val), 100.0 * std::fabs(h_unigram - val) / h_unigram,
              val < h_unigram ? "below" : "ABOVE");

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
      std::printf(
          "---- sample %lld (%s tokens/s) ----\n%s\n", (long long)(i + 1),
          train::format_si(static_cast<double>(s.sample_tokens) / std::max(dt, 1e-9)).c_str(),
          text.c_str());
      all_samples += "---- sample " + std::to_string(i + 1) + " ----\n" + text + "\n";
    }
    std::FILE* f = std::fopen(samples_path.c_str(), "wb");
    if (f) {
      std::fwrite(all_samples.data(), 1, all_samples.size(), f);
      std::fclose(f);
    }
  }
  std::printf("\nfiles: %s (loss curve), %s (plot), %s (checkpoint)%s%s\n", csv_path.c_str(),
              svg_path.c_str(), ckpt.c_str(), all_samples.empty() ? "" : ", ",
              all_samples.empty() ? "" : samples_path.c_str());
  return 0;
}

}  // namespace mini_gpt
