// tfm finetune -m MODEL.gguf --data train.jsonl [options]: supervised fine-tuning of a llama GGUF
// on JSONL conversations with LoRA, QLoRA (NF4 base) or all parameters; loss only on the
// assistant's tokens, packed rows that attention does not cross, a held-out split, warmup +
// cosine AdamW, checkpoints and an exact --resume. The run is train::run_sft
// (train/sft_run.hpp); the adapter is written in PEFT's layout and as a llama.cpp LoRA GGUF.
//
// Exit status: 0 done, 1 run-time failure (unreadable file, malformed data), 2 a bad command
// line, 130 interrupted (checkpoint saved).
#include "commands.hpp"

#include "typeformer/train/sft_run.hpp"

#include <sstream>
#include <string>
#include <vector>

namespace tfm_cli {

namespace {
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
}  // namespace

int run_finetune(const std::vector<std::string>& args) {
  namespace train = tfm::train;
  cli::parser p("tfm finetune", "",
                "supervised fine-tuning of a GGUF model on JSONL conversations with LoRA, QLoRA "
                "or all parameters (docs/finetuning.md)");
  train::sft_settings s;
  std::string method = "lora", packing = "bfd", targets = "q,k,v,o,gate,up,down";
  std::int64_t rank = s.lora.rank, threads = 0;
  p.section("model and data");
  p.option("-m", "MODEL", "a llama GGUF file (any tensor type; trained in f32)", s.model);
  p.custom("--data", "FILE",
           "JSONL training data (repeatable): {\"messages\": [...]} or "
           "{\"prompt\": ..., \"completion\": ...}",
           [&s](std::string_view v) { s.data.emplace_back(v); });
  p.custom("--eval-data", "FILE",
           "JSONL held-out data (repeatable; default: --eval-fraction of "
           "--data)",
           [&s](std::string_view v) { s.eval_data.emplace_back(v); });
  p.option("--eval-fraction", "F", "held-out fraction of --data, by a hash of each example",
           s.eval_fraction);
  p.option("--out", "DIR", "checkpoint, adapter, loss.csv and loss.svg go here", s.out);
  p.option("--block-size", "T", "tokens per packed row", s.block_size);
  p.choice("--packing", {"bfd", "best-fit", "none"},
           "rows: best-fit-decreasing (TRL's), best-fit in file order, or one example per row",
           packing);
  p.section("method");
  p.choice("--method", {"lora", "qlora", "full"},
           "LoRA on an f32 base, LoRA on an NF4 base (QLoRA), or every parameter", method);
  p.option("--rank", "R", "LoRA rank", rank);
  p.option("--alpha", "A", "LoRA alpha (scale alpha / rank)", s.lora.alpha);
  p.option("--lora-dropout", "P", "dropout on the adapters' input", s.lora.dropout);
  p.flag("--rslora", "scale alpha / sqrt(rank) (rsLoRA)", s.lora.rslora);
  p.option("--targets", "LIST", "adapted projections: q,k,v,o,gate,up,down or all-linear", targets);
  p.section("training");
  p.option("--steps", "N", "optimizer steps (0: --epochs over the rows)", s.steps);
  p.option("--epochs", "E", "passes over the training rows when --steps is 0", s.epochs);
  p.option("--batch", "B", "rows per micro-batch", s.batch);
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
  p.option("-t", "THREADS", "threads (0: all cores)", threads);
  p.flag("--resume", "continue from OUT/checkpoint.tfm", s.resume);
  p.option("--stop-after", "N", "stop after step N with a checkpoint (for tests)", s.stop_after);
  p.flag("--quiet", "no progress output", s.quiet);
  p.epilog(
      "Exit status: 0 done, 1 run-time failure, 2 bad command line, 130 interrupted "
      "(checkpoint saved).\n");
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  if (s.model.empty()) throw cli::usage_error("-m MODEL is required");
  if (s.data.empty()) throw cli::usage_error("--data FILE is required");
  s.method = train::parse_finetune_method(method);
  s.packing = packing == "bfd"        ? train::sft_packing::best_fit_decreasing
              : packing == "best-fit" ? train::sft_packing::best_fit
                                      : train::sft_packing::none;
  s.lora.rank = rank;
  s.lora.targets = split_commas(targets);
  s.lora.seed = s.seed;
  if (threads > 0) tfm::set_num_threads(static_cast<int>(threads));
  try {
    train::validate(s);
  } catch (const tfm::value_error& e) {
    throw cli::usage_error(e.what());
  }
  return train::run_sft(s);
}

}  // namespace tfm_cli
