// typeformer/train/sft_run.hpp
//
// A whole supervised fine-tuning run, as `tfm finetune` does it (docs/finetuning.md): a GGUF
// model and its chat template, JSONL conversations (train/sft_data.hpp) packed into rows with a
// held-out split, LoRA / QLoRA adapters or full fine-tuning, AdamW with warmup + cosine, gradient
// accumulation, periodic evaluation and atomic checkpoints, an exact resume, loss.csv /
// loss.svg, and the adapter written for other tools. The pieces it shares with run_dpo (settings,
// model loading by method, schedule, curve, adapter files) are in train/run_common.hpp.
//
//   train::sft_settings s;  s.model = "SmolLM2.gguf";  s.data = {"train.jsonl"};  s.out = "run";
//   int rc = train::run_sft(s);
//
// Outputs in s.out:
//   checkpoint.tfm   the trainable parameters (the adapter's A and B, or every parameter for
//                    full fine-tuning), AdamW's state, the step, the loader's (epoch, batch), the
//                    adapter's dropout counter, the curve; written atomically every
//                    ckpt_interval steps, at the end and on SIGINT/SIGTERM (train/trainer.hpp
//                    save_training_state)
//   adapter/         the adapter in Hugging Face PEFT's layout (adapter_model.safetensors,
//                    adapter_config.json)            (lora, qlora)
//   adapter.gguf     the adapter as a llama.cpp LoRA GGUF (llama-cli --lora)   (lora, qlora)
//   loss.csv, loss.svg   training and held-out loss per step
// Resume: the same settings with resume = true continue from checkpoint.tfm; the data, split and
// batch order are functions of the settings, so the resumed run sees the batches the
// uninterrupted one would have. Return value: 0 done, 130 interrupted (checkpoint saved).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/io/lora_adapter.hpp"
#include "typeformer/nn/lora.hpp"
#include "typeformer/nn/qlora.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/jinja.hpp"
#include "typeformer/train/csv.hpp"
#include "typeformer/train/finetune.hpp"
#include "typeformer/train/lora_files.hpp"
#include "typeformer/train/plot.hpp"
#include "typeformer/train/progress.hpp"
#include "typeformer/train/run.hpp"
#include "typeformer/train/run_common.hpp"
#include "typeformer/train/sft_data.hpp"
#include "typeformer/train/trainer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// Everything a fine-tuning run needs: the shared settings (train/run_common.hpp) and the rows.
struct sft_settings : tuning_settings {
  index_t block_size = 512;
  sft_packing packing = sft_packing::best_fit_decreasing;
};

/// Checks settings that cannot work; tfm::value_error naming the setting.
inline void validate(const sft_settings& s) {
  validate(static_cast<const tuning_settings&>(s), "tfm finetune");
  if (s.block_size < 2) fail(errc::value, "tfm finetune: --block-size must be >= 2.");
}

/// A fine-tuning batch from the loader's.
inline masked_batch to_masked(const sft_batch& b) { return {b.ids, b.targets, b.segment_ids()}; }

namespace detail::sft {
inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
}  // namespace detail::sft

/// Runs the fine-tuning `s` describes (file comment). Prints a header, a progress line and the
/// evaluations unless s.quiet.
inline int run_sft(sft_settings s) {
  namespace fs = std::filesystem;
  validate(s);
  const std::optional<training_state> resumed = prepare_output(s, "tfm finetune");
  const std::string ckpt = checkpoint_path(s.out);
  auto say = [&](const std::string& line) {
    if (!s.quiet) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  };
  // Model, tokenizer, template.
  const auto t0 = std::chrono::steady_clock::now();
  const io::gguf_file file(s.model);
  const vocab_tokenizer tok = io::load_gguf_tokenizer(file);
  const jinja_chat_template tpl = gguf_chat_template(file, tok);
  tuned_model tm = load_tuned_model(file, s.method, s.lora, s.block_size, s.grad_checkpointing);
  pretrained_model& m = tm.model;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Data.
  const sft_encoder enc(tok, tpl);
  sft_options so;
  so.block_size = s.block_size;
  so.packing = s.packing;
  std::vector<sft_record> tr_rec, va_rec;
  for (const auto& p : s.data) {
    auto r = read_sft_jsonl(p);
    tr_rec.insert(tr_rec.end(), r.begin(), r.end());
  }
  if (s.eval_data.empty()) {
    sft_split_options sp;
    sp.fraction = s.eval_fraction;
    sp.seed = s.seed;
    std::tie(tr_rec, va_rec) = split_sft_records(tr_rec, sp);
  } else {
    for (const auto& p : s.eval_data) {
      auto r = read_sft_jsonl(p);
      va_rec.insert(va_rec.end(), r.begin(), r.end());
    }
  }
  if (va_rec.empty())
    fail(errc::value,
         "tfm finetune: the held-out split is empty; raise --eval-fraction or give "
         "--eval-data.");
  const sft_rows train_rows = sft_rows::build(enc.encode_all(tr_rec), so);
  const sft_rows val_rows = sft_rows::build(enc.encode_all(va_rec), so);
  sft_loader loader(train_rows, s.batch, s.seed);
  const run_plan plan = plan_run(s, static_cast<std::int64_t>(loader.batches_per_epoch()));
  const std::int64_t steps = plan.steps;
  optim::adam_options ao;
  ao.lr = s.lr;
  ao.weight_decay = s.weight_decay;
  auto opt = optim::adamw(tm.trainable, ao);
  const auto sched = optim::lr_schedule::warmup_cosine(s.lr, s.lr / 10, plan.warmup, steps);
  training_state st;
  st.data_seed = s.seed;
  st.model_seed = s.lora.seed;
  if (resumed) {
    st = load_training_state(ckpt, tm.trainable, opt);
    loader.seek(std::stoull(st.meta.at("sft.epoch")), std::stoll(st.meta.at("sft.batch")));
    tm.set_dropout_offset(st.dropout_offset);
  }
  say("tfm finetune: " + s.model + " (" + std::to_string(m.config().n_layer) + " layers, " +
      std::to_string(count_parameters(m.parameters())) + " f32 parameters" + tm.base_note +
      "), loaded in " + detail::sft::fmt("%.1f s", load_s));
  say("  " + describe(tm));
  say("  train: " + summary(train_rows.stats(), s.block_size));
  say("  held-out: " + summary(val_rows.stats(), s.block_size));
  say("  " + std::to_string(steps) + " steps of " + std::to_string(s.grad_accum) + " x " +
      std::to_string(s.batch) + " rows, lr " + detail::sft::fmt("%.2e", s.lr) + ", warmup " +
      std::to_string(plan.warmup) +
      (resumed ? ", resumed at step " + std::to_string(st.step) : ""));
  auto evaluate = [&]() {
    tm.train(false);
    std::vector<masked_batch> vb;
    for (const auto& b : val_rows.evaluation_batches(s.batch)) {
      if (s.eval_batches > 0 && static_cast<std::int64_t>(vb.size()) >= s.eval_batches) break;
      vb.push_back(to_masked(b));
    }
    const double v = sft_evaluate(m, std::span<const masked_batch>(vb));
    tm.train(true);
    return v;
  };
  auto save = [&]() {
    st.meta["sft.epoch"] = std::to_string(loader.epoch());
    st.meta["sft.batch"] = std::to_string(loader.index());
    st.meta["sft.method"] = to_string(s.method);
    st.meta["sft.model"] = s.model;
    st.dropout_offset = tm.dropout_offset();
    save_training_state(ckpt, tm.trainable, opt, st);
    write_loss_curve(s.out, st, "fine-tuning loss (per assistant token)");
    tm.write_adapter(file, s.out);
  };
  if (!resumed) {
    const double v0 = evaluate();
    record_validation(st, v0);
    say("  step 0: held-out loss " + detail::sft::fmt("%.4f", v0));
  }
  tm.train(true);
  install_stop_handlers();
  progress_line progress(steps);
  progress.set_interactive(progress.interactive() && !s.quiet);
  throughput speed;
  sft_step_options o;
  o.clip = s.clip;
  o.schedule = sched;
  int rc = 0;
  while (st.step < steps) {
    std::vector<masked_batch> micro;
    for (std::int64_t k = 0; k < s.grad_accum; ++k) micro.push_back(to_masked(loader.next()));
    const auto ts = std::chrono::steady_clock::now();
    const auto r = sft_step(m, opt, std::span<const masked_batch>(micro), o, st);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    index_t toks = 0;
    for (const auto& b : micro) toks += b.ids.size();
    speed.add(static_cast<double>(toks), dt);
    if (!s.quiet) {
      progress_info pi;
      pi.step = st.step;
      pi.loss = r.loss;
      pi.lr = r.lr;
      pi.tokens_per_s = speed.tokens_per_s();
      pi.eta_s = speed.eta(steps - st.step);
      progress.update(pi);
    }
    const bool last = st.step == steps;
    if (st.step % plan.eval_every == 0 || last) {
      const double v = evaluate();
      record_validation(st, v);
      progress.finish();
      say("  step " + std::to_string(st.step) + ": train loss " + detail::sft::fmt("%.4f", r.loss) +
          ", held-out loss " + detail::sft::fmt("%.4f", v));
    }
    if (st.step % plan.ckpt_every == 0 || last) save();
    if (stop_requested() || (s.stop_after > 0 && st.step >= s.stop_after)) {
      save();
      rc = stop_requested() ? 130 : 0;
      break;
    }
  }
  progress.finish();
  if (rc == 0) tm.write_model(file, s.out);
  say(written_files_line(tm, s.out, ckpt, rc == 0, "loss.csv, loss.svg"));
  return rc;
}

}  // namespace train
TFM_END_NAMESPACE
