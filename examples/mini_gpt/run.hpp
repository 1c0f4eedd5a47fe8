// mini_gpt/run.hpp: the training loop, sampling and reporting for one parameter type T
// (included by run_f32.cpp and run_bf16.cpp only).
#pragma once

#include "options.hpp"

#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/infer/generate.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/optim/schedule.hpp>
#include <typeformer/train/data.hpp>
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
  std::vector<std::int32_t> all = encode_text(tok, prompt);
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
  return decode_text(tok, all);
}

template <class T>
int run(settings& s, const std::optional<train::training_state>& resumed_meta,
        const train::text_tokenizer& tok) {
  using model_t = nn::gpt<nn::dynamic_config, T>;
  const bool resuming = resumed_meta.has_value();
  if (s.threads > 0) set_num_threads(s.threads);
  const int threads = num_threads();

  // ---- data (main.cpp)
  run_data rd = load_run_data(s, tok);
  auto& data = rd.data;
  const auto& va = data.tokens(train::split::validation);
  const std::uint64_t fp = rd.fingerprint;
  const double h_unigram = rd.h_unigram;

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
  store_tokenizer(tok, st);  // "run.tokenizer", and for BPE the tokenizer.json blob
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
  const double tokens_per_step = static_cast<double>(s.batch * s.seq * s.grad_accum);
  print_summary(s, sum, rd, tok, threads, static_cast<double>(sum.parameters) * sizeof(T), resuming,
                st.step);

  // ---- the loss log: rewritten from the checkpoint's curve, then appended to
  loss_log log(s, sum, h_unigram, tokens_per_step, st.curve);

  auto val_batches =
      data.evaluation_batches(train::split::validation, s.batch, s.seq, s.eval_batches);
  if (val_batches.empty())
    usage_fail("the validation split (", va.size(), " tokens) is smaller than one batch of ",
               s.batch, " x ", s.seq + 1, " tokens; lower --batch/--seq or raise --val-fraction.");
  const double tokens_per_byte = mini_gpt::tokens_per_byte(val_batches, tok);
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
    log.write_plot(st.curve);
  };

  install_signal_handlers();
  if (st.step == 0 && st.curve.empty()) {
    run_eval();
    log.append(st.curve.back());
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
