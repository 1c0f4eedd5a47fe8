// typeformer/train/sft_run.hpp
//
// A whole supervised fine-tuning run, as `tfm finetune` does it (docs/finetuning.md): a GGUF
// model and its chat template, JSONL conversations (train/sft_data.hpp) packed into rows with a
// held-out split, LoRA / QLoRA adapters or full fine-tuning, AdamW with warmup + cosine, gradient
// accumulation, periodic evaluation and atomic checkpoints, an exact resume, loss.csv /
// loss.svg, and the adapter written for other tools.
//
//   train::sft_settings s;  s.model = "SmolLM2.gguf";  s.data = {"train.jsonl"};  s.out = "run";
//   int rc = train::run_sft(s);
//
// Outputs in s.out:
//   checkpoint.tfm   the trainable parameters (the adapter's A and B, or every parameter for
//                    full fine-tuning), AdamW's state, the step, the loader's (epoch, batch), the
//                    curve; written atomically every ckpt_interval steps, at the end and on
//                    SIGINT/SIGTERM (train/trainer.hpp save_training_state)
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

enum class finetune_method { lora, qlora, full };

inline finetune_method parse_finetune_method(std::string_view s) {
  if (s == "lora") return finetune_method::lora;
  if (s == "qlora") return finetune_method::qlora;
  if (s == "full") return finetune_method::full;
  fail(errc::value, "tfm finetune: --method must be lora, qlora or full, not '", std::string(s),
       "'.");
}
inline const char* to_string(finetune_method m) {
  return m == finetune_method::lora ? "lora" : m == finetune_method::qlora ? "qlora" : "full";
}

/// Everything a fine-tuning run needs.
struct sft_settings {
  std::string model;                   ///< a llama GGUF (any tensor type; trained in f32)
  std::vector<std::string> data;       ///< JSONL files (train/sft_data.hpp formats)
  std::vector<std::string> eval_data;  ///< held-out JSONL files; empty: a split of `data`
  double eval_fraction = 0.05;         ///< of `data`, when eval_data is empty
  std::string out = "finetune-out";
  finetune_method method = finetune_method::lora;
  nn::lora_config lora;  ///< rank, alpha, dropout, rslora, targets, seed
  index_t block_size = 512;
  sft_packing packing = sft_packing::best_fit_decreasing;
  index_t batch = 4;            ///< rows per micro-batch
  std::int64_t grad_accum = 1;  ///< micro-batches per step
  std::int64_t steps = 0;       ///< optimizer steps; 0: `epochs` passes over the rows
  double epochs = 1;
  double lr = 2e-4;           ///< peak; cosine to lr / 10 after warmup
  std::int64_t warmup = -1;   ///< -1: min(100, steps / 10)
  double weight_decay = 0.0;  ///< PEFT/TRL's default for adapters
  double clip = 1.0;
  bool grad_checkpointing = false;  ///< recompute each block in the backward (nn::gpt)
  std::int64_t eval_interval = 0;   ///< 0: 10 evaluations per run
  std::int64_t eval_batches = 0;    ///< 0: the whole held-out split
  std::int64_t ckpt_interval = 0;   ///< 0: at evaluations
  std::uint64_t seed = 1;
  bool resume = false;
  std::int64_t stop_after = 0;  ///< stop (with a checkpoint) after this step, for tests
  bool quiet = false;
};

/// Checks settings that cannot work; tfm::value_error naming the setting.
inline void validate(const sft_settings& s) {
  if (s.model.empty()) fail(errc::value, "tfm finetune: a model (-m FILE.gguf) is required.");
  if (s.data.empty()) fail(errc::value, "tfm finetune: training data (--data FILE) is required.");
  if (s.block_size < 2) fail(errc::value, "tfm finetune: --block-size must be >= 2.");
  if (s.batch < 1) fail(errc::value, "tfm finetune: --batch must be >= 1.");
  if (s.grad_accum < 1) fail(errc::value, "tfm finetune: --grad-accum must be >= 1.");
  if (s.steps < 0) fail(errc::value, "tfm finetune: --steps must be >= 0.");
  if (s.steps == 0 && !(s.epochs > 0))
    fail(errc::value, "tfm finetune: --epochs must be positive.");
  if (!(s.lr > 0) || !std::isfinite(s.lr))
    fail(errc::value, "tfm finetune: --lr must be positive.");
  if (s.eval_data.empty() && !(s.eval_fraction > 0 && s.eval_fraction < 1))
    fail(errc::value, "tfm finetune: --eval-fraction must be in (0, 1).");
  if (s.method != finetune_method::full) nn::validate(s.lora);
}

/// The chat template of a GGUF model (tokenizer.chat_template) with its BOS/EOS texts.
inline jinja_chat_template gguf_chat_template(const io::gguf_file& f, const vocab_tokenizer& tok) {
  const auto* v = f.find("tokenizer.chat_template");
  if (v == nullptr)
    fail(errc::unsupported, "tfm finetune: '", f.name(),
         "' has no tokenizer.chat_template; conversations need the model's template.");
  auto text = [&](std::int32_t id) {
    return id >= 0 && id < static_cast<std::int32_t>(tok.vocab_size()) ? tok.token_text(id)
                                                                       : std::string();
  };
  return jinja_chat_template(v->value.as_string(),
                             {.bos_token = text(tok.bos_id()), .eos_token = text(tok.eos_id())});
}

/// A fine-tuning batch from the loader's.
inline masked_batch to_masked(const sft_batch& b) { return {b.ids, b.targets, b.segment_ids()}; }

namespace detail::sft {
inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
inline void write_curve(const std::string& out, const training_state& st) {
  namespace fs = std::filesystem;
  std::vector<std::vector<std::string>> rows;
  plot_series tr{"train", {}, {}, "", 1.5, false, 1.0};
  plot_series va{"held-out", {}, {}, "", 2.0, true, 1.0};
  for (const auto& c : st.curve) {
    rows.push_back(
        {csv_number(c.step), csv_number(c.lr), csv_number(c.train_loss), csv_number(c.val_loss)});
    if (std::isfinite(c.train_loss)) {
      tr.x.push_back(static_cast<double>(c.step));
      tr.y.push_back(c.train_loss);
    }
    if (std::isfinite(c.val_loss)) {
      va.x.push_back(static_cast<double>(c.step));
      va.y.push_back(c.val_loss);
    }
  }
  write_csv((fs::path(out) / "loss.csv").string(), {"step", "lr", "train_loss", "val_loss"}, rows);
  plot_options po;
  po.title = "fine-tuning loss (per assistant token)";
  po.x_label = "step";
  po.y_label = "loss";
  write_svg((fs::path(out) / "loss.svg").string(), svg_line_plot({tr, va}, po));
}
}  // namespace detail::sft

/// Runs the fine-tuning `s` describes (file comment). Prints a header, a progress line and the
/// evaluations unless s.quiet.
inline int run_sft(sft_settings s) {
  namespace fs = std::filesystem;
  validate(s);
  fs::create_directories(s.out);
  const std::string ckpt = (fs::path(s.out) / "checkpoint.tfm").string();
  std::optional<training_state> resumed;
  if (s.resume) {
    if (!fs::exists(ckpt))
      fail(errc::io, "tfm finetune: --resume but '", ckpt, "' does not exist.");
    resumed = read_training_state(ckpt);
  }
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
  pretrained_model m = s.method == finetune_method::qlora ? load_gguf_model_nf4(file, s.block_size)
                                                          : load_gguf_model(file, s.block_size);
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
  const std::int64_t per_epoch =
      std::max<std::int64_t>(1, loader.batches_per_epoch() / s.grad_accum);
  const std::int64_t steps =
      s.steps > 0
          ? s.steps
          : std::max<std::int64_t>(
                1, static_cast<std::int64_t>(std::ceil(s.epochs * static_cast<double>(per_epoch))));
  const std::int64_t warmup =
      std::min(steps, s.warmup >= 0 ? s.warmup : std::min<std::int64_t>(100, steps / 10));
  const std::int64_t eval_every =
      s.eval_interval > 0 ? s.eval_interval : std::max<std::int64_t>(1, steps / 10);
  const std::int64_t ckpt_every = s.ckpt_interval > 0 ? s.ckpt_interval : eval_every;
  // Trainable parameters.
  nn::lora_adapter<float> adapter;
  nn::parameter_list<float> trainable;
  std::string base_note;
  if (s.method == finetune_method::qlora) {
    std::size_t packed = 0;
    nn::detail::lora::for_each_site(m, [&](index_t, std::string_view, auto& lin) {
      if (lin.frozen) packed += lin.frozen->bytes();
    });
    base_note = ", block weights NF4 " + detail::sft::fmt("%.1f MB", double(packed) / 1e6);
  }
  m.set_checkpointing(s.grad_checkpointing);
  if (s.method == finetune_method::full) {
    trainable = m.parameters();
  } else {
    adapter = nn::make_lora(m, s.lora);
    nn::freeze(m);
    nn::attach(m, adapter);
    trainable = adapter.parameters();
  }
  optim::adam_options ao;
  ao.lr = s.lr;
  ao.weight_decay = s.weight_decay;
  auto opt = optim::adamw(trainable, ao);
  const auto sched = optim::lr_schedule::warmup_cosine(s.lr, s.lr / 10, warmup, steps);
  training_state st;
  st.data_seed = s.seed;
  st.model_seed = s.lora.seed;
  if (resumed) {
    st = load_training_state(ckpt, trainable, opt);
    loader.seek(std::stoull(st.meta.at("sft.epoch")), std::stoll(st.meta.at("sft.batch")));
  }
  say("tfm finetune: " + s.model + " (" + std::to_string(m.config().n_layer) + " layers, " +
      std::to_string(count_parameters(m.parameters())) + " f32 parameters" + base_note +
      "), loaded in " + detail::sft::fmt("%.1f s", load_s));
  say("  method " + std::string(to_string(s.method)) +
      (s.method == finetune_method::full ? ""
                                         : ", rank " + std::to_string(s.lora.rank) + ", alpha " +
                                               detail::sft::fmt("%g", s.lora.alpha)) +
      ", " + std::to_string(count_parameters(trainable)) + " trainable parameters");
  say("  train: " + summary(train_rows.stats(), s.block_size));
  say("  held-out: " + summary(val_rows.stats(), s.block_size));
  say("  " + std::to_string(steps) + " steps of " + std::to_string(s.grad_accum) + " x " +
      std::to_string(s.batch) + " rows, lr " + detail::sft::fmt("%.2e", s.lr) + ", warmup " +
      std::to_string(warmup) + (resumed ? ", resumed at step " + std::to_string(st.step) : ""));
  auto evaluate = [&]() {
    if (s.method != finetune_method::full) adapter.train(false);
    std::vector<masked_batch> vb;
    for (const auto& b : val_rows.evaluation_batches(s.batch)) {
      if (s.eval_batches > 0 && static_cast<std::int64_t>(vb.size()) >= s.eval_batches) break;
      vb.push_back(to_masked(b));
    }
    const double v = sft_evaluate(m, std::span<const masked_batch>(vb));
    if (s.method != finetune_method::full) adapter.train(true);
    return v;
  };
  auto save = [&]() {
    st.meta["sft.epoch"] = std::to_string(loader.epoch());
    st.meta["sft.batch"] = std::to_string(loader.index());
    st.meta["sft.method"] = to_string(s.method);
    st.meta["sft.model"] = s.model;
    save_training_state(ckpt, trainable, opt, st);
    detail::sft::write_curve(s.out, st);
    if (s.method != finetune_method::full) {
      const auto f = to_adapter_file(adapter, file.get_or<std::string>("general.name", s.model));
      io::save_peft(f, (fs::path(s.out) / "adapter").string(), m.config());
      io::save_lora_gguf(f, (fs::path(s.out) / "adapter.gguf").string(), m.config());
    }
  };
  if (!resumed) {
    const double v0 = evaluate();
    record_validation(st, v0);
    say("  step 0: held-out loss " + detail::sft::fmt("%.4f", v0));
  }
  if (s.method != finetune_method::full) adapter.train(true);
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
    if (st.step % eval_every == 0 || last) {
      const double v = evaluate();
      record_validation(st, v);
      progress.finish();
      say("  step " + std::to_string(st.step) + ": train loss " + detail::sft::fmt("%.4f", r.loss) +
          ", held-out loss " + detail::sft::fmt("%.4f", v));
    }
    if (st.step % ckpt_every == 0 || last) save();
    if (stop_requested() || (s.stop_after > 0 && st.step >= s.stop_after)) {
      save();
      rc = stop_requested() ? 130 : 0;
      break;
    }
  }
  progress.finish();
  say("  wrote " + ckpt +
      (s.method != finetune_method::full ? ", " + (fs::path(s.out) / "adapter").string() + "/, " +
                                               (fs::path(s.out) / "adapter.gguf").string()
                                         : std::string()) +
      ", loss.csv, loss.svg");
  return rc;
}

}  // namespace train
TFM_END_NAMESPACE
