// tfm train [--data FILE|DIR ...] [options]: trains a small GPT on text files (byte tokens or a
// byte-level BPE) and samples from it; `tfm train --resume DIR` continues a run bitwise (same
// thread count). The flags are mini_gpt's (docs/mini_gpt.md); the model flags come from the
// config field list (TFM_NN_CONFIG_FIELDS), the run itself is train::run (train/run.hpp).
// Files in --out: checkpoint.tfm, loss.csv, loss.svg, samples.txt (and tokenizer.json after
// --bpe-vocab).
//
// Exit status: 0 done, 1 run-time failure (unreadable file, corrupted checkpoint), 2 a bad
// command line or settings that cannot work, 130 interrupted (checkpoint saved).
#include "commands.hpp"
#include "train.hpp"

#include "typeformer/train/run.hpp"

#include <string>
#include <utility>
#include <vector>

namespace tfm_cli {

namespace {

namespace train = tfm::train;

// Declares the options on `p`, writing into `s` and the model flags into `model_flags`.
void declare(cli::parser& p, train::run_settings& s,
             std::vector<std::pair<std::string, std::string>>& model_flags) {
  auto num = [](auto& dst, const char* flag) {
    return [&dst, flag](std::string_view v) {
      dst = train::parse_setting<std::remove_reference_t<decltype(dst)>>(flag, std::string(v));
    };
  };
  auto text = [](std::string& dst) { return [&dst](std::string_view v) { dst = v; }; };
  p.section("data");
  p.custom("--data", "PATH",
           "text files or directories (repeatable; more paths may follow; default: the text "
           "files of Debian's fortunes package in /usr/share/games/fortunes)",
           [&s](std::string_view v) { s.data.emplace_back(v); });
  p.custom("--val-fraction", "F", "last fraction of every file held out for validation (0.1)",
           num(s.val_fraction, "--val-fraction"));
  p.section(
      "tokenizer (default: bytes, vocabulary 256; the model's vocabulary is the tokenizer's)");
  p.custom("--tokenizer", "FILE",
           "a byte-level BPE: a Hugging Face tokenizer.json (BPE + ByteLevel), a tiktoken rank "
           "file, a GPT-2 encoder.json with vocab.bpe beside it, or a directory holding those two",
           [&s](std::string_view v) {
             if (v.empty()) throw cli::usage_error("--tokenizer needs a file name");
             s.tokenizer = v;
           });
  p.custom("--bpe-vocab", "N",
           "train a byte-level BPE with N ids (>= 256) on the data first, saved as "
           "OUT/tokenizer.json (excludes --tokenizer; the checkpoint stores the tokenizer)",
           num(s.bpe_vocab, "--bpe-vocab"));
  p.section("model (the flags below override single fields of the preset)");
  p.custom("--config", "NAME", std::string(train::preset_names) + " (tiny)", text(s.config));
  for (const auto& f : train::config_fields()) {
    if (*f.flag == '\0') continue;
    std::string flag = f.flag;
    p.custom(flag, f.form, f.doc, [&model_flags, flag](std::string_view v) {
      model_flags.emplace_back(flag, std::string(v));
    });
  }
  p.flag("--bf16", "bf16 parameters and activations, f32 master weights", s.bf16);
  p.section("training");
  p.custom("--steps", "N", "optimizer steps (1000)", num(s.steps, "--steps"));
  p.custom("--batch", "B", "sequences per micro-batch (8)", num(s.batch, "--batch"));
  p.custom("--seq", "T",
           "tokens per sequence (default and at most the block size; a shorter --seq without "
           "--block-size shrinks the block size to T)",
           num(s.seq, "--seq"));
  p.custom("--grad-accum", "K", "micro-batches per step, each loss scaled 1/K (1)",
           num(s.grad_accum, "--grad-accum"));
  p.custom("--lr", "LR", "peak learning rate of AdamW (1e-3)", num(s.lr, "--lr"));
  p.custom("--min-lr", "LR", "final learning rate of the cosine decay (lr / 10)",
           num(s.min_lr, "--min-lr"));
  p.custom("--warmup", "N", "linear warmup steps (min(100, steps / 10))",
           num(s.warmup, "--warmup"));
  p.custom("--weight-decay", "W", "AdamW decoupled weight decay on matrices (0.1)",
           num(s.weight_decay, "--weight-decay"));
  p.custom("--clip", "X", "clip the global gradient norm to X, 0 = off (1.0)",
           num(s.clip, "--clip"));
  p.custom("--seed", "S", "model initialisation, data order and sampling (1)",
           num(s.seed, "--seed"));
  p.custom("--threads", "N", "CPU threads (the OpenMP default)", num(s.threads, "--threads"));
  p.section("evaluation, checkpoints, output");
  p.custom("--eval-interval", "N", "validation every N steps and at the end (100)",
           num(s.eval_interval, "--eval-interval"));
  p.custom("--eval-batches", "N", "validation batches of B x T tokens (20)",
           num(s.eval_batches, "--eval-batches"));
  p.custom("--ckpt-interval", "N", "checkpoint every N steps and at the end (the eval interval)",
           num(s.ckpt_interval, "--ckpt-interval"));
  p.custom("--out", "DIR",
           "where checkpoint.tfm, loss.csv, loss.svg, samples.txt go (mini_gpt_out)", text(s.out));
  p.custom("--resume", "PATH",
           "continue from DIR/checkpoint.tfm or a checkpoint file; the model and training "
           "settings come from the checkpoint (--steps may change)",
           text(s.resume));
  p.custom("--stop-after", "N", "end this session after step N (checkpoint written; resume later)",
           num(s.stop_after, "--stop-after"));
  p.custom("--log-interval", "N", "progress lines when stdout is not a terminal (every 10 steps)",
           num(s.log_interval, "--log-interval"));
  p.section("sampling (at the end)");
  p.custom("--samples", "N", "number of samples (2)", num(s.samples, "--samples"));
  p.custom("--sample-tokens", "N", "tokens per sample (300)",
           num(s.sample_tokens, "--sample-tokens"));
  p.custom("--prompt", "TEXT", "prompt of every sample (a newline)", text(s.prompt));
  p.custom("--temperature", "X", "0 = greedy (0.8)", num(s.temperature, "--temperature"));
  p.custom("--top-k", "K", "0 = off (40)", num(s.top_k, "--top-k"));
  p.custom("--top-p", "P", "nucleus sampling (0.95)", num(s.top_p, "--top-p"));
  p.epilog(
      "A resumed run keeps its model, data and training settings: a flag that changes them is an "
      "error.\nExit status: 0 done, 1 run-time failure, 2 bad command line, 130 interrupted "
      "(checkpoint saved).\n");
}

}  // namespace

int run_train(const std::vector<std::string>& args) {
  cli::parser p("tfm train", "[PATH ...]",
                "train a small GPT on text files, then sample from it (docs/mini_gpt.md)");
  train::run_settings s;
  std::vector<std::pair<std::string, std::string>> model_flags;
  declare(p, s, model_flags);
  try {
    // Positional paths are more --data.
    for (auto& path : p.parse(args)) s.data.push_back(std::move(path));
    for (const auto& name : p.given_names()) s.given.insert(name.substr(2));
    if (!s.data.empty()) s.given.insert("data");
    if (s.given.count("tokenizer") && s.given.count("bpe-vocab"))
      throw cli::usage_error(
          "--tokenizer and --bpe-vocab exclude each other: load a tokenizer from a file, or "
          "train one on the data, not both");
    train::configure_model(s, model_flags);
    const auto resumed = train::prepare_run(s);
    const train::text_tokenizer tok = train::make_tokenizer(s, resumed);
    return s.bf16 ? run_train_bf16(s, resumed, tok) : train::run<float>(s, resumed, tok);
  } catch (const train::settings_error& e) {
    std::string m = e.what();  // main() appends " (see 'tfm train --help')"
    if (!m.empty() && m.back() == '.') m.pop_back();
    throw cli::usage_error(m);
  }
}

}  // namespace tfm_cli
