// tfm finetune -m MODEL.gguf --data train.jsonl [options]: supervised fine-tuning of a llama GGUF
// on JSONL conversations with LoRA, QLoRA (NF4 base) or all parameters; loss only on the
// assistant's tokens, packed rows that attention does not cross, a held-out split, warmup +
// cosine AdamW, checkpoints and an exact --resume. The run is train::run_sft
// (train/sft_run.hpp); the adapter is written in PEFT's layout and as a llama.cpp LoRA GGUF.
//
// tfm dpo -m MODEL.gguf --data pairs.jsonl [options]: direct preference optimisation of the same
// models on preference pairs in TRL's formats (sigmoid, IPO or hinge loss; the reference stored
// once or computed live), with the same methods, schedule, checkpoints, resume and outputs plus
// the implicit reward margin. The run is train::run_dpo (train/dpo_run.hpp). Both commands live
// in this one file so that the model's training code is compiled once.
//
// Exit status: 0 done, 1 run-time failure (unreadable file, malformed data), 2 a bad command
// line, 130 interrupted (checkpoint saved).
#include "commands.hpp"

#include "typeformer/train/dpo_run.hpp"
#include "typeformer/train/sft_run.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace tfm_cli {

namespace {

namespace train = tfm::train;

std::vector<std::string> split_commas(std::string_view v) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : v) {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

/// The command-line words of the shared settings, turned into them by finish_tuning.
struct tuning_words {
  std::string method = "lora", targets = "q,k,v,o,gate,up,down";
  std::int64_t rank = 8, threads = 0;
};

/// The options both commands share (train::tuning_settings): the model and data, then
/// (after the caller's own data options) the method and training sections.
void add_model_data_options(cli::parser& p, train::tuning_settings& s, const char* data_help,
                            const char* out_help) {
  p.section("model and data");
  p.option("-m", "MODEL", "a llama GGUF file (any tensor type; trained in f32)", s.model);
  p.custom("--data", "FILE", data_help, [&s](std::string_view v) { s.data.emplace_back(v); });
  p.custom("--eval-data", "FILE",
           "JSONL held-out data (repeatable; default: --eval-fraction of --data)",
           [&s](std::string_view v) { s.eval_data.emplace_back(v); });
  p.option("--eval-fraction", "F", "held-out fraction of --data, by a hash of each example",
           s.eval_fraction);
  p.option("--out", "DIR", out_help, s.out);
}
void add_method_options(cli::parser& p, train::tuning_settings& s, tuning_words& w) {
  w.rank = s.lora.rank;
  p.section("method");
  p.choice("--method", {"lora", "qlora", "full"},
           "LoRA on an f32 base, LoRA on an NF4 base (QLoRA), or every parameter", w.method);
  p.option("--rank", "R", "LoRA rank", w.rank);
  p.option("--alpha", "A", "LoRA alpha (scale alpha / rank)", s.lora.alpha);
  p.option("--lora-dropout", "P", "dropout on the adapters' input", s.lora.dropout);
  p.flag("--rslora", "scale alpha / sqrt(rank) (rsLoRA)", s.lora.rslora);
  p.option("--targets", "LIST", "adapted projections: q,k,v,o,gate,up,down or all-linear",
           w.targets);
}
void add_training_options(cli::parser& p, train::tuning_settings& s, tuning_words& w,
                          const char* unit) {
  p.section("training");
  p.option("--steps", "N", std::string("optimizer steps (0: --epochs over the ") + unit + ")",
           s.steps);
  p.option("--epochs", "E", std::string("passes over the training ") + unit + " when --steps is 0",
           s.epochs);
  p.option("--batch", "B", std::string(unit) + " per micro-batch", s.batch);
  p.option("--grad-accum", "K", "micro-batches per step", s.grad_accum);
  p.option("--lr", "LR", "peak learning rate (cosine to lr / 10)", s.lr);
  p.option("--warmup", "N", "warmup steps (-1: min(100, steps / 10))", s.warmup);
  p.option("--weight-decay", "W", "AdamW weight decay", s.weight_decay);
  p.option("--clip", "X", "gradient norm clipping, 0 = off", s.clip);
  p.flag("--grad-ckpt",
         "gradient checkpointing: keep only each block's input, recompute it in the backward",
         s.grad_checkpointing);
  p.option("--eval-every", "N", "steps between evaluations (0: 10 per run)", s.eval_interval);
  p.option("--eval-batches", "N", "held-out batches per evaluation (0: all)", s.eval_batches);
  p.option("--save-every", "N", "steps between checkpoints (0: at evaluations)", s.ckpt_interval);
  p.option("--seed", "S", "data order, split and adapter initialisation", s.seed);
  p.option("-t", "THREADS", "threads (0: all cores)", w.threads);
  p.flag("--resume", "continue from OUT/checkpoint.tfm", s.resume);
  p.option("--stop-after", "N", "stop after step N with a checkpoint (for tests)", s.stop_after);
  p.flag("--quiet", "no progress output", s.quiet);
  p.epilog(
      "Exit status: 0 done, 1 run-time failure, 2 bad command line, 130 interrupted "
      "(checkpoint saved).\n");
}

/// After parsing: the required options, the words as settings, the threads.
void finish_tuning(train::tuning_settings& s, const tuning_words& w, std::string_view who) {
  if (s.model.empty()) throw cli::usage_error("-m MODEL is required");
  if (s.data.empty()) throw cli::usage_error("--data FILE is required");
  s.method = train::parse_finetune_method(w.method, who);
  s.lora.rank = w.rank;
  s.lora.targets = split_commas(w.targets);
  s.lora.seed = s.seed;
  if (w.threads < 0) throw cli::usage_error("-t must be >= 0");
  if (w.threads > 0) tfm::set_num_threads(static_cast<int>(w.threads));
}

/// Runs validate(s), a bad setting being a usage error (without validate's "<who>: " prefix,
/// which main() prints).
template <class Settings>
void validate_usage(const Settings& s, std::string_view who) {
  try {
    train::validate(s);
  } catch (const tfm::value_error& e) {
    std::string_view m = e.what();
    const std::string prefix = std::string(who) + ": ";
    if (m.substr(0, prefix.size()) == prefix) m.remove_prefix(prefix.size());
    if (!m.empty() && m.back() == '.') m.remove_suffix(1);
    throw cli::usage_error(std::string(m));
  }
}

}  // namespace

int run_finetune(const std::vector<std::string>& args) {
  cli::parser p("tfm finetune", "",
                "supervised fine-tuning of a GGUF model on JSONL conversations with LoRA, QLoRA "
                "or all parameters (docs/finetuning.md)");
  train::sft_settings s;
  tuning_words w;
  std::string packing = "bfd";
  add_model_data_options(p, s,
                         "JSONL training data (repeatable): {\"messages\": [...]} or "
                         "{\"prompt\": ..., \"completion\": ...}",
                         "checkpoint, adapter, loss.csv and loss.svg go here");
  p.option("--block-size", "T", "tokens per packed row", s.block_size);
  p.choice("--packing", {"bfd", "best-fit", "none"},
           "rows: best-fit-decreasing (TRL's), best-fit in file order, or one example per row",
           packing);
  add_method_options(p, s, w);
  add_training_options(p, s, w, "rows");
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  finish_tuning(s, w, "tfm finetune");
  s.packing = packing == "bfd"        ? train::sft_packing::best_fit_decreasing
              : packing == "best-fit" ? train::sft_packing::best_fit
                                      : train::sft_packing::none;
  validate_usage(s, "tfm finetune");
  return train::run_sft(s);
}

int run_dpo(const std::vector<std::string>& args) {
  cli::parser p("tfm dpo", "",
                "direct preference optimisation (DPO, IPO, hinge) of a GGUF model on JSONL "
                "preference pairs with LoRA, QLoRA or all parameters (docs/alignment.md)");
  train::dpo_settings s;
  tuning_words w;
  std::string loss = "sigmoid", reference = "stored", truncation = "truncate";
  add_model_data_options(p, s,
                         "JSONL preference pairs (repeatable; TRL's formats): {\"prompt\", "
                         "\"chosen\", \"rejected\"} as strings or message lists, or "
                         "{\"chosen\", \"rejected\"} message lists",
                         "checkpoint, adapter, loss.csv, loss.svg and margin.svg go here");
  p.option("--max-length", "T", "longest prompt + response in tokens", s.max_length);
  p.choice("--truncation", {"truncate", "drop", "error"},
           "a longer sequence: keep its first T tokens, drop the pair, or stop", truncation);
  p.section("preference loss");
  p.choice("--loss", {"sigmoid", "ipo", "hinge"},
           "DPO's -log sigmoid(beta h), IPO's (h - 1/(2 beta))^2 on mean log-probs, or SLiC's "
           "hinge max(0, 1 - beta h)",
           loss);
  p.option("--beta", "B", "KL strength beta (IPO: tau)", s.loss.beta);
  p.option("--label-smoothing", "E", "probability of a flipped label, in [0, 0.5] (cDPO; sigmoid)",
           s.loss.label_smoothing);
  p.option("--rpo-alpha", "A", "weight of the chosen responses' NLL added to the loss (RPO)",
           s.rpo_alpha);
  p.choice("--reference", {"stored", "live"},
           "reference log-probs computed once before training and kept in the checkpoint, or "
           "every step (LoRA: the base with the adapter off; full: a frozen copy of the model)",
           reference);
  add_method_options(p, s, w);
  add_training_options(p, s, w, "pairs");
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  finish_tuning(s, w, "tfm dpo");
  s.loss.kind = train::parse_dpo_kind(loss);
  s.reference = train::parse_dpo_reference(reference);
  s.truncation = truncation == "truncate" ? train::sft_truncation::truncate
                 : truncation == "drop"   ? train::sft_truncation::drop
                                          : train::sft_truncation::error;
  validate_usage(s, "tfm dpo");
  return train::run_dpo(s);
}

}  // namespace tfm_cli
