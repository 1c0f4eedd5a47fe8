// typeformer/train/run_common.hpp
//
// WHAT THIS REPRESENTS
//   The parts every whole fine-tuning run shares (train/sft_run.hpp run_sft for `tfm finetune`,
//   train/dpo_run.hpp run_dpo for `tfm dpo`), so that both read their settings, load and adapt the
//   model, plan the schedule, and write checkpoints, curves and adapters the same way:
//
//     tuning_settings      model, data, held-out split, method (LoRA / QLoRA / full), AdamW with
//                          warmup + cosine, accumulation, evaluation and checkpoint intervals,
//                          seed, resume; validate(s, who) refuses what cannot work
//     tuned_model          the GGUF loaded as the method needs (f32, or NF4 block weights for
//                          QLoRA) with what it trains: every parameter, or a LoRA adapter attached
//                          to the frozen base; the adapter's dropout counter for an exact resume;
//                          the adapter written in PEFT's layout and as a llama.cpp LoRA GGUF
//     plan_run             steps, warmup, evaluation and checkpoint intervals
//     write_loss_curve     loss.csv (step, lr, train_loss, val_loss, then extra columns) and
//                          loss.svg
//     gguf_chat_template / gguf_chat_renderer   the file's chat template for sft_encoder
//
// Errors start with `who` ("tfm finetune", "tfm dpo") and name the setting.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/lora_adapter.hpp"
#include "typeformer/nn/lora.hpp"
#include "typeformer/nn/qlora.hpp"
#include "typeformer/tokenizer/jinja.hpp"
#include "typeformer/train/csv.hpp"
#include "typeformer/train/finetune.hpp"
#include "typeformer/train/finetune_export.hpp"
#include "typeformer/train/lora_files.hpp"
#include "typeformer/train/plot.hpp"
#include "typeformer/train/sft_data.hpp"
#include "typeformer/train/trainer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

enum class finetune_method { lora, qlora, full };

inline finetune_method parse_finetune_method(std::string_view s,
                                             std::string_view who = "tfm finetune") {
  if (s == "lora") return finetune_method::lora;
  if (s == "qlora") return finetune_method::qlora;
  if (s == "full") return finetune_method::full;
  fail(errc::value, who, ": --method must be lora, qlora or full, not '", std::string(s), "'.");
}
inline const char* to_string(finetune_method m) {
  return m == finetune_method::lora ? "lora" : m == finetune_method::qlora ? "qlora" : "full";
}

/// What every fine-tuning run has; sft_settings and dpo_settings add their own fields.
struct tuning_settings {
  std::string model;                   ///< a llama GGUF (any tensor type; trained in f32)
  std::vector<std::string> data;       ///< JSONL files
  std::vector<std::string> eval_data;  ///< held-out JSONL files; empty: a split of `data`
  double eval_fraction = 0.05;         ///< of `data`, when eval_data is empty
  std::string out = "finetune-out";
  finetune_method method = finetune_method::lora;
  nn::lora_config lora;         ///< rank, alpha, dropout, rslora, targets, seed
  index_t batch = 4;            ///< rows (SFT) or pairs (DPO) per micro-batch
  std::int64_t grad_accum = 1;  ///< micro-batches per step
  std::int64_t steps = 0;       ///< optimizer steps; 0: `epochs` passes over the data
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

/// Checks the shared settings that cannot work; tfm::value_error "<who>: --flag ...".
inline void validate(const tuning_settings& s, std::string_view who) {
  auto bad = [&](const char* what) { fail(errc::value, who, ": ", what); };
  if (s.model.empty()) bad("a model (-m FILE.gguf) is required.");
  if (s.data.empty()) bad("training data (--data FILE) is required.");
  if (s.batch < 1) bad("--batch must be >= 1.");
  if (s.grad_accum < 1) bad("--grad-accum must be >= 1.");
  if (s.steps < 0) bad("--steps must be >= 0.");
  if (s.steps == 0 && !(s.epochs > 0 && std::isfinite(s.epochs))) bad("--epochs must be positive.");
  if (!(s.lr > 0) || !std::isfinite(s.lr)) bad("--lr must be positive.");
  if (s.warmup < -1) bad("--warmup must be >= 0 (or -1 for the default).");
  if (!(s.weight_decay >= 0) || !std::isfinite(s.weight_decay)) bad("--weight-decay must be >= 0.");
  if (!(s.clip >= 0) || !std::isfinite(s.clip)) bad("--clip must be >= 0.");
  if (s.eval_interval < 0) bad("--eval-every must be >= 0.");
  if (s.eval_batches < 0) bad("--eval-batches must be >= 0.");
  if (s.ckpt_interval < 0) bad("--save-every must be >= 0.");
  if (s.stop_after < 0) bad("--stop-after must be >= 0.");
  if (s.eval_data.empty() && !(s.eval_fraction > 0 && s.eval_fraction < 1))
    bad("--eval-fraction must be in (0, 1).");
  if (s.method != finetune_method::full) nn::validate(s.lora);
}

// ---- the model and what it trains ---------------------------------------------------------------

/// A GGUF model loaded for `method`, with its trainable parameters (see the file comment).
/// Built in place by load_tuned_model; the adapter's updates are attached to `model`.
struct tuned_model {
  pretrained_model model;
  finetune_method method = finetune_method::lora;
  nn::lora_adapter<float> adapter;      ///< empty for full fine-tuning
  nn::parameter_list<float> trainable;  ///< the adapter's A and B, or every parameter
  std::string base_note;                ///< ", block weights NF4 <size>" for QLoRA

  bool has_adapter() const noexcept { return method != finetune_method::full; }
  /// Adapter dropout on (training) or off (evaluation); nothing for full fine-tuning.
  void train(bool on) {
    if (has_adapter()) adapter.train(on);
  }
  /// The dropout counter that a resumed run must continue from (the adapter's, or the model's).
  std::uint64_t dropout_offset() const {
    return has_adapter() ? adapter.state->offset : model.dropout_offset();
  }
  void set_dropout_offset(std::uint64_t o) {
    if (has_adapter())
      adapter.state->offset = o;
    else
      model.set_dropout_offset(o);
  }
  /// Full fine-tuning's model file: OUT/model.gguf, the trained weights with the source GGUF's
  /// metadata (tokenizer, chat template), loadable by `tfm generate` and llama.cpp
  /// (train/finetune_export.hpp); nothing for adapters, whose files write_adapter writes.
  void write_model(const io::gguf_file& file, const std::string& out) const {
    if (has_adapter()) return;
    save_finetuned_gguf(file, model, (std::filesystem::path(out) / "model.gguf").string());
  }
  /// Writes OUT/adapter/ (PEFT) and OUT/adapter.gguf (llama.cpp); nothing for full fine-tuning.
  void write_adapter(const io::gguf_file& file, const std::string& out) const {
    if (!has_adapter()) return;
    namespace fs = std::filesystem;
    const auto f = to_adapter_file(adapter, file.get_or<std::string>("general.name", file.name()));
    io::save_peft(f, (fs::path(out) / "adapter").string(), model.config());
    io::save_lora_gguf(f, (fs::path(out) / "adapter.gguf").string(), model.config());
  }
};

/// The closing "  wrote ..." line of a run: the checkpoint, the adapter files or (model_written)
/// model.gguf, then `curves` (e.g. "loss.csv, loss.svg").
inline std::string written_files_line(const tuned_model& tm, const std::string& out,
                                      const std::string& ckpt, bool model_written,
                                      std::string_view curves) {
  namespace fs = std::filesystem;
  std::string line = "  wrote " + ckpt;
  if (tm.has_adapter())
    line += ", " + (fs::path(out) / "adapter").string() + "/, " +
            (fs::path(out) / "adapter.gguf").string();
  else if (model_written)
    line += ", " + (fs::path(out) / "model.gguf").string();
  return line + ", " + std::string(curves);
}

/// `file` as `method` needs it (block_size: the model's context for training), the base frozen
/// and a LoRA adapter (`lora`) attached unless method is full; gradient checkpointing as asked.
inline tuned_model load_tuned_model(const io::gguf_file& file, finetune_method method,
                                    const nn::lora_config& lora, index_t block_size,
                                    bool grad_checkpointing) {
  tuned_model t{method == finetune_method::qlora ? load_gguf_model_nf4(file, block_size)
                                                 : load_gguf_model(file, block_size),
                method,
                {},
                {},
                {}};
  if (method == finetune_method::qlora) {
    std::size_t packed = 0;
    nn::detail::lora::for_each_site(t.model, [&](index_t, std::string_view, auto& lin) {
      if (lin.frozen) packed += lin.frozen->bytes();
    });
    char b[64];
    std::snprintf(b, sizeof b, ", block weights NF4 %.1f MB", static_cast<double>(packed) / 1e6);
    t.base_note = b;
  }
  t.model.set_checkpointing(grad_checkpointing);
  if (method == finetune_method::full) {
    t.trainable = t.model.parameters();
  } else {
    t.adapter = nn::make_lora(t.model, lora);
    nn::freeze(t.model);
    nn::attach(t.model, t.adapter);
    t.trainable = t.adapter.parameters();
  }
  if (method == finetune_method::qlora) {
    // The frozen embedding (and tied head) in bf16, as bitsandbytes' QLoRA keeps it: half the
    // f32 copy (bench/finetune/RESULTS.md: peak 0.47x LoRA's instead of 0.55x at 4 x 256).
    const std::size_t emb = nn::quantize_embedding(t.model, nn::embedding_storage::bf16);
    char b[64];
    std::snprintf(b, sizeof b, ", embedding bf16 %.1f MB", static_cast<double>(emb) / 1e6);
    t.base_note += b;
  }
  return t;
}

/// "method lora, rank 8, alpha 16, 12345 trainable parameters".
inline std::string describe(const tuned_model& t) {
  std::string s = std::string("method ") + to_string(t.method);
  if (t.has_adapter()) {
    char b[64];
    std::snprintf(b, sizeof b, ", rank %lld, alpha %g",
                  static_cast<long long>(t.adapter.config.rank), t.adapter.config.alpha);
    s += b;
  }
  return s + ", " + std::to_string(count_parameters(t.trainable)) + " trainable parameters";
}

// ---- the schedule -------------------------------------------------------------------------------

struct run_plan {
  std::int64_t steps = 1, warmup = 0, eval_every = 1, ckpt_every = 1;
};

/// The run's length and intervals: s.steps, or s.epochs passes of batches_per_epoch micro-batches
/// (at least one step); warmup min(100, steps / 10) unless given; 10 evaluations per run unless
/// given; checkpoints at evaluations unless given.
inline run_plan plan_run(const tuning_settings& s, std::int64_t batches_per_epoch) {
  run_plan p;
  const std::int64_t per_epoch = std::max<std::int64_t>(1, batches_per_epoch / s.grad_accum);
  p.steps =
      s.steps > 0
          ? s.steps
          : std::max<std::int64_t>(
                1, static_cast<std::int64_t>(std::ceil(s.epochs * static_cast<double>(per_epoch))));
  p.warmup =
      std::min(p.steps, s.warmup >= 0 ? s.warmup : std::min<std::int64_t>(100, p.steps / 10));
  p.eval_every = s.eval_interval > 0 ? s.eval_interval : std::max<std::int64_t>(1, p.steps / 10);
  p.ckpt_every = s.ckpt_interval > 0 ? s.ckpt_interval : p.eval_every;
  return p;
}

// ---- files --------------------------------------------------------------------------------------

/// OUT/checkpoint.tfm.
inline std::string checkpoint_path(const std::string& out) {
  return (std::filesystem::path(out) / "checkpoint.tfm").string();
}

/// The checkpoint's training state when s.resume (tfm::io_error naming it when it is absent),
/// else nothing. Creates s.out.
inline std::optional<training_state> prepare_output(const tuning_settings& s,
                                                    std::string_view who) {
  std::filesystem::create_directories(s.out);
  const std::string ckpt = checkpoint_path(s.out);
  if (!s.resume) return std::nullopt;
  if (!std::filesystem::exists(ckpt))
    fail(errc::io, who, ": --resume but '", ckpt, "' does not exist.");
  return read_training_state(ckpt);
}

/// An extra loss.csv column, one value per point of the training state's curve (NaN: none).
struct curve_column {
  std::string name;
  std::vector<double> values;
};

/// OUT/loss.csv (step, lr, train_loss, val_loss, then `extra`) and OUT/loss.svg (training and
/// held-out loss against the step) from st.curve.
inline void write_loss_curve(const std::string& out, const training_state& st,
                             const std::string& title, std::span<const curve_column> extra = {}) {
  namespace fs = std::filesystem;
  std::vector<std::string> header{"step", "lr", "train_loss", "val_loss"};
  for (const auto& c : extra) {
    if (c.values.size() != st.curve.size())
      fail(errc::shape, "tfm::train::write_loss_curve: column '", c.name, "' has ", c.values.size(),
           " values for ", st.curve.size(), " curve points.");
    header.push_back(c.name);
  }
  std::vector<std::vector<std::string>> rows;
  plot_series tr{"train", {}, {}, "", 1.5, false, 1.0};
  plot_series va{"held-out", {}, {}, "", 2.0, true, 1.0};
  for (std::size_t i = 0; i < st.curve.size(); ++i) {
    const auto& c = st.curve[i];
    rows.push_back(
        {csv_number(c.step), csv_number(c.lr), csv_number(c.train_loss), csv_number(c.val_loss)});
    for (const auto& e : extra) rows.back().push_back(csv_number(e.values[i]));
    if (std::isfinite(c.train_loss)) {
      tr.x.push_back(static_cast<double>(c.step));
      tr.y.push_back(c.train_loss);
    }
    if (std::isfinite(c.val_loss)) {
      va.x.push_back(static_cast<double>(c.step));
      va.y.push_back(c.val_loss);
    }
  }
  write_csv((fs::path(out) / "loss.csv").string(), header, rows);
  plot_options po;
  po.title = title;
  po.x_label = "step";
  po.y_label = "loss";
  write_svg((fs::path(out) / "loss.svg").string(), svg_line_plot({tr, va}, po));
}

// ---- chat template ------------------------------------------------------------------------------

/// The chat template of a GGUF model (tokenizer.chat_template) with its BOS/EOS texts.
inline jinja_chat_template gguf_chat_template(const io::gguf_file& f, const vocab_tokenizer& tok,
                                              std::string_view who = "tfm finetune") {
  const auto* v = f.find("tokenizer.chat_template");
  if (v == nullptr)
    fail(errc::unsupported, who, ": '", f.name(),
         "' has no tokenizer.chat_template; conversations need the model's template.");
  auto text = [&](std::int32_t id) {
    return id >= 0 && id < static_cast<std::int32_t>(tok.vocab_size()) ? tok.token_text(id)
                                                                       : std::string();
  };
  return jinja_chat_template(v->value.as_string(),
                             {.bos_token = text(tok.bos_id()), .eos_token = text(tok.eos_id())});
}

/// The file's chat template as an sft_encoder renderer; for a file without one, a renderer that
/// refuses (tfm::unsupported_error) only when a conversation is rendered, so that plain-text
/// data trains on any model.
inline chat_renderer gguf_chat_renderer(const io::gguf_file& f, const vocab_tokenizer& tok,
                                        std::string_view who) {
  if (f.find("tokenizer.chat_template") != nullptr)
    return [t = gguf_chat_template(f, tok, who)](std::span<const chat_message> m, bool g) {
      return t.render(m, g);
    };
  return
      [name = f.name(), w = std::string(who)](std::span<const chat_message>, bool) -> std::string {
        fail(errc::unsupported, w, ": '", name,
             "' has no tokenizer.chat_template; conversational data needs the model's template "
             "(plain-text prompt/completion data does not).");
      };
}

}  // namespace train
TFM_END_NAMESPACE
