// mini_gpt: trains a small GPT on text files (byte tokens, or byte-level BPE tokens) and samples
// from it.
//
//   ./mini_gpt --data book.txt --config tiny --steps 2000 --out run1
//   ./mini_gpt --data book.txt --bpe-vocab 512 --out run2   # train a BPE first, then the model
//   ./mini_gpt --resume run1 --steps 3000          # continue (bitwise, same thread count)
//   ./mini_gpt --help
//
// With no --data it trains on the text files of Debian's `fortunes` package. It prints a model
// summary, a live progress line, periodic validation loss and perplexity, and at the end the
// validation loss next to the corpus's unigram entropy and text sampled with a KV cache. Files
// in --out: checkpoint.tfm (atomic, checksummed; written every --ckpt-interval steps),
// loss.csv, loss.svg, samples.txt. See docs/mini_gpt.md.
//
// Exit codes: 0 done, 1 a run-time failure (unreadable file, corrupted checkpoint), 2 a bad
#include "options.hpp"

#include <typeformer/nn/config.hpp>
#include <typeformer/tokenizer/utf8.hpp>
#include <typeformer/train/csv.hpp>
#include <typeformer/train/data.hpp>
#include <typeformer/train/plot.hpp>
#include <typeformer/train/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace mini_gpt {

constexpr const char* default_corpus = "/usr/share/games/fortunes";

const char* usage_text = R"(mini_gpt: train a GPT on text files, then sample from it.

usage: mini_gpt [--data FILE|DIR ...] [options]
       mini_gpt --resume DIR|FILE [--steps N] [options]

data
  --data PATH ...        text files or directories (repeatable; default: the text files of
                         Debian's fortunes package in /usr/share/games/fortunes)
  --val-fraction F       last fraction of every file held out for validation (0.1)
tokenizer (default: bytes, vocabulary 256; the model's vocabulary is the tokenizer's)
  --tokenizer FILE       a byte-level BPE: a Hugging Face tokenizer.json (BPE + ByteLevel), a
                         tiktoken rank file (*.tiktoken), a GPT-2 encoder.json with vocab.bpe
                         beside it, or a directory holding those two
  --bpe-vocab N          train a byte-level BPE with N ids (>= 256; GPT-2 pre-tokenizer) on the
                         --data files first and save it as OUT/tokenizer.json
                         (--tokenizer and --bpe-vocab exclude each other; the tokenizer is
                         stored in the checkpoint, so --resume needs neither)
model
  --config NAME          tiny | llama-tiny | gpt2-6l384 | gpt2-124m (tiny); the flags below
                         override single fields.
  --n-layer N  --n-embd C  --n-head H  --n-kv-head G  --ffn F  --block-size T
  --norm layer_norm|rms_norm  --mlp gelu|swiglu  --position learned|rope|alibi
  --dropout P            dropout on residual branches while training (0)
  --bf16                 bf16 parameters and activations, f32 master weights
training
  --steps N              optimizer steps (1000)
  --batch B              sequences per micro-batch (8)
  --seq T                tokens per sequence (default and at most the block size; a
                         shorter --seq without --block-size shrinks the block size to T)
  --grad-accum K         micro-batches per step, each loss scaled 1/K (1)
  --lr LR                peak learning rate of AdamW (1e-3)
  --min-lr LR            final learning rate of the cosine decay (lr / 10)
  --warmup N             linear warmup steps (min(100, steps / 10))
  --weight-decay W       AdamW decoupled weight decay on matrices (0.1)
  --clip X               clip the global gradient norm to X, 0 = off (1.0)
  --seed S               model initialisation, data order and sampling (1)
  --threads N            CPU threads (the OpenMP default)
evaluation, checkpoints, output
  --eval-interval N      validation every N steps and at the end (100)
  --eval-batches N       validation batches of B x T tokens (20)
  --ckpt-interval N      checkpoint every N steps and at the end (the eval interval)
  --out DIR              where checkpoint.tfm, loss.csv, loss.svg, samples.txt go (mini_gpt_out)
  --resume PATH          continue from DIR/checkpoint.tfm or a checkpoint file; the model and
                         training settings come from the checkpoint (--steps may change)
  --stop-after N         end this session after step N (checkpoint written; resume later)
  --log-interval N       progress lines when stdout is not a terminal (every 10 steps)
sampling (at the end)
  --samples N            number of samples (2)
  --sample-tokens N      tokens per sample (300)
  --prompt TEXT          prompt of every sample (a newline)
  --temperature X        (0.8; 0 = greedy)   --top-k K (40; 0 = off)   --top-p P (0.95)
  --help                 this text

Exit codes: 0 done, 1 run-time failure, 2 bad command line, 130 interrupted (checkpoint saved).
)";

nn::dynamic_config preset(const std::string& name) {
  if (name == "tiny") return nn::to_dynamic(nn::gpt2_tiny{});
  if (name == "llama-tiny") return nn::to_dynamic(nn::llama_tiny{});
  if (name == "gpt2-6l384") return nn::to_dynamic(nn::gpt2_6l384{});
  if (name == "gpt2-124m") return nn::to_dynamic(nn::gpt2_124m{});
  usage_fail("--config must be tiny, llama-tiny, gpt2-6l384 or gpt2-124m, not '", name, "'.");
}

settings parse_args(int argc, char** argv) {
  settings s;
  std::vector<std::string> args(argv + 1, argv + argc);
  std::map<std::string, std::string> dims;  // model field flags, applied after --config
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], v;
    bool has_inline = false;
    if (a.rfind("--", 0) != 0)
      usage_fail("unexpected argument '", a, "' (options start with --; see --help).");
    if (auto eq = a.find('='); eq != std::string::npos) {
      v = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    auto value = [&]() -> std::string {
      if (has_inline) return v;
      if (i + 1 >= args.size()) usage_fail(a, " needs a value (see --help).");
      return args[++i];
    };
    auto flag_only = [&] {
      if (has_inline) usage_fail(a, " takes no value.");
    };
    const std::string key = a.substr(2);
    if (key == "help") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    }
    s.given.insert(key);
    if (key == "data") {
      s.data.push_back(value());
      while (!has_inline && i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0)
        s.data.push_back(args[++i]);
    } else if (key == "val-fraction")
      s.val_fraction = parse_num<double>(a, value());
    else if (key == "tokenizer") {
      s.tokenizer = value();
      if (s.tokenizer.empty()) usage_fail("--tokenizer needs a file name.");
    } else if (key == "bpe-vocab")
      s.bpe_vocab = parse_num<std::int64_t>(a, value());
    else if (key == "config")
      s.config = value();
    else if (key == "n-layer" || key == "n-embd" || key == "n-head" || key == "n-kv-head" ||
             key == "ffn" || key == "block-size" || key == "norm" || key == "mlp" ||
             key == "position" || key == "dropout")
      dims[key] = value();
    else if (key == "bf16") {
      flag_only();
      s.bf16 = true;
    } else if (key == "steps")
      s.steps = parse_num<std::int64_t>(a, value());
    else if (key == "batch")
      s.batch = parse_num<std::int64_t>(a, value());
    else if (key == "seq")
      s.seq = parse_num<std::int64_t>(a, value());
    else if (key == "grad-accum")
      s.grad_accum = parse_num<std::int64_t>(a, value());
    else if (key == "lr")
      s.lr = parse_num<double>(a, value());
    else if (key == "min-lr")
      s.min_lr = parse_num<double>(a, value());
    else if (key == "warmup")
      s.warmup = parse_num<std::int64_t>(a, value());
    else if (key == "weight-decay")
      s.weight_decay = parse_num<double>(a, value());
    else if (key == "clip")
      s.clip = parse_num<double>(a, value());
    else if (key == "seed")
      s.seed = parse_num<std::uint64_t>(a, value());
    else if (key == "threads")
      s.threads = parse_num<int>(a, value());
    else if (key == "eval-interval")
      s.eval_interval = parse_num<std::int64_t>(a, value());
    else if (key == "eval-batches")
      s.eval_batches = parse_num<std::int64_t>(a, value());
    else if (key == "ckpt-interval")
      s.ckpt_interval = parse_num<std::int64_t>(a, value());
    else if (key == "stop-after")
      s.stop_after = parse_num<std::int64_t>(a, value());
    else if (key == "log-interval")
      s.log_interval = parse_num<std::int64_t>(a, value());
    else if (key == "out")
      s.out = value();
    else if (key == "resume")
      s.resume = value();
    else if (key == "samples")
      s.samples = parse_num<std::int64_t>(a, value());
    else if (key == "sample-tokens")
      s.sample_tokens = parse_num<std::int64_t>(a, value());
    else if (key == "prompt")
      s.prompt = value();
    else if (key == "temperature")
      s.temperature = parse_num<double>(a, value());
    else if (key == "top-k")
      s.top_k = parse_num<std::int64_t>(a, value());
    else if (key == "top-p")
      s.top_p = parse_num<double>(a, value());
    else
      usage_fail("unknown option '", a, "' (see --help).");
  }
  if (s.given.count("tokenizer") && s.given.count("bpe-vocab"))
    usage_fail(
        "--tokenizer and --bpe-vocab exclude each other: load a tokenizer from a file, or train "
        "one on the data, not both.");
  s.model = preset(s.config);
  s.model.vocab = train::byte_tokenizer::vocab_size;
  for (const auto& [k, v] : dims) {
    const std::string f = "--" + k;
    try {
      if (k == "n-layer")
        s.model.n_layer = parse_num<index_t>(f, v);
      else if (k == "n-embd")
        s.model.n_embd = parse_num<index_t>(f, v);
      else if (k == "n-head")
        s.model.n_head = parse_num<index_t>(f, v);
      else if (k == "n-kv-head")
        s.model.n_kv_head = parse_num<index_t>(f, v);
      else if (k == "ffn")
        s.model.ffn = parse_num<index_t>(f, v);
      else if (k == "block-size")
        s.model.block_size = parse_num<index_t>(f, v);
      else if (k == "norm")
        s.model.norm = train::parse_norm(v);
      else if (k == "mlp")
        s.model.mlp = train::parse_mlp(v);
      else if (k == "position")
        s.model.position = train::parse_position(v);
      else if (k == "dropout")
        s.model.dropout = parse_num<double>(f, v);
    } catch (const value_error& e) {
      usage_fail(f, ": ", e.what());
    }
  }
  // An explicit head count without a kv-head count means multi-head attention.
  if (dims.count("n-head") && !dims.count("n-kv-head")) s.model.n_kv_head = s.model.n_head;
  // Positions past --seq are never trained (learned position rows stay random, RoPE would
  // extrapolate), so a shorter --seq also shortens the model's context unless --block-size says
  // otherwise. Sampling then slides a window of that length.
  if (s.given.count("seq") && !dims.count("block-size") && s.seq > 0 && s.seq < s.model.block_size)
    s.model.block_size = s.seq;
  return s;
}

/// Range checks that do not need the checkpoint or the data.
void check_settings(settings& s) {
  auto need = [](bool ok, const char* msg) {
    if (!ok) usage_fail(msg);
  };
  need(s.steps >= 1, "--steps must be >= 1.");
  need(s.batch >= 1, "--batch must be >= 1.");
  need(s.grad_accum >= 1, "--grad-accum must be >= 1.");
  need(s.lr > 0, "--lr must be > 0.");
  need(s.weight_decay >= 0, "--weight-decay must be >= 0.");
  need(s.clip >= 0, "--clip must be >= 0 (0 turns clipping off).");
  need(s.val_fraction > 0 && s.val_fraction < 1, "--val-fraction must be in (0, 1).");
  if (s.given.count("bpe-vocab"))
    need(s.bpe_vocab >= 256 && s.bpe_vocab <= (1 << 20),
         "--bpe-vocab must be in 256 .. 1048576 (the 256 bytes plus the merges).");
  need(s.threads >= 0 && s.threads <= 1024,
       "--threads must be in 0 .. 1024 (0: the OpenMP default).");
  need(s.eval_interval >= 1, "--eval-interval must be >= 1.");
  need(s.eval_batches >= 1, "--eval-batches must be >= 1.");
  need(s.ckpt_interval >= 0, "--ckpt-interval must be >= 1.");
  need(s.log_interval >= 1, "--log-interval must be >= 1.");
  need(s.stop_after >= 0, "--stop-after must be >= 1.");
  need(s.samples >= 0, "--samples must be >= 0.");
  need(s.sample_tokens >= 0, "--sample-tokens must be >= 0.");
  need(s.temperature >= 0, "--temperature must be >= 0.");
  need(s.top_k >= 0, "--top-k must be >= 0.");
  need(s.top_p > 0 && s.top_p <= 1, "--top-p must be in (0, 1].");
  need(!s.prompt.empty(), "--prompt must not be empty.");
  try {
    nn::validate(s.model);
  } catch (const value_error& e) {
    usage_fail("the model settings are invalid: ", e.what());
  }
  if (s.seq == 0) s.seq = s.model.block_size;
  if (s.seq < 1 || s.seq > s.model.block_size)
    usage_fail("--seq must be in 1 .. the block size ", s.model.block_size, ", not ", s.seq, ".");
  if (s.min_lr < 0) s.min_lr = s.lr / 10;
  if (s.min_lr > s.lr) usage_fail("--min-lr (", s.min_lr, ") must not exceed --lr (", s.lr, ").");
  if (s.warmup < 0) s.warmup = std::min<std::int64_t>(100, s.steps / 10);
  if (s.warmup > s.steps)
    usage_fail("--warmup (", s.warmup, ") must not exceed --steps (", s.steps, ").");
  if (s.ckpt_interval == 0) s.ckpt_interval = s.eval_interval;
}

/// The text files a --data argument names (a directory: its regular files, sorted; for the
/// fortunes folder only the cookie files, not the .dat/.u8 indexes).
std::vector<std::string> expand_data(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& p : in) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        const auto name = e.path().filename().string();
        if (!e.is_regular_file() || e.is_symlink() || name.empty() || name[0] == '.') continue;
        const auto ext = e.path().extension().string();
        if (ext == ".dat" || ext == ".u8") continue;
        files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) usage_fail("--data: the directory '", p, "' holds no text files.");
      out.insert(out.end(), files.begin(), files.end());
    } else if (fs::is_regular_file(p, ec)) {
      out.push_back(p);
    } else {
      usage_fail("--data: '", p, "' is not a readable file or directory.");
    }
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> r;
  std::size_t pos = 0;
  while (pos < s.size()) {
    auto nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    r.push_back(s.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return r;
}

/// Replaces `s`'s run settings by the checkpoint's. Flags given on the command line that fix the
/// run (model, data, batch, schedule, seed) must agree with it: a different value is an error,
/// since the resumed curve would no longer continue the saved one.
void apply_run_meta(settings& s, const std::map<std::string, std::string>& m) {
  auto get = [&](const std::string& k) -> const std::string& {
    auto it = m.find(k);
    if (it == m.end()) fail(errc::parse, "mini_gpt: the checkpoint has no '", k, "' entry.");
    return it->second;
  };
  settings c = s;
  c.model = train::get_config(m);
  c.config = get("run.config");
  c.data = split_lines(get("run.data"));
  c.val_fraction = parse_num<double>("run.val_fraction", get("run.val_fraction"));
  // Absent in checkpoints written before BPE support: a byte-level run.
  c.tokenizer = m.count("run.tokenizer_file") ? m.at("run.tokenizer_file") : std::string();
  c.bpe_vocab = m.count("run.bpe_vocab")
                    ? parse_num<std::int64_t>("run.bpe_vocab", m.at("run.bpe_vocab"))
                    : 0;
  c.bf16 = get("run.bf16") == "1";
  c.batch = parse_num<std::int64_t>("run.batch", get("run.batch"));
  c.seq = parse_num<std::int64_t>("run.seq", get("run.seq"));
  c.grad_accum = parse_num<std::int64_t>("run.grad_accum", get("run.grad_accum"));
  c.lr = parse_num<double>("run.lr", get("run.lr"));
  c.min_lr = parse_num<double>("run.min_lr", get("run.min_lr"));
  c.warmup = parse_num<std::int64_t>("run.warmup", get("run.warmup"));
  c.weight_decay = parse_num<double>("run.weight_decay", get("run.weight_decay"));
  c.clip = parse_num<double>("run.clip", get("run.clip"));
  c.seed = parse_num<std::uint64_t>("run.seed", get("run.seed"));
  // Settings a resumed run may change (schedule length, evaluation, checkpoints, sampling):
  // the command line's when given, else the saved ones.
  auto keep_or_saved = [&](const char* flag, std::int64_t& dst, const char* key) {
    if (!s.given.count(flag)) dst = parse_num<std::int64_t>(key, get(key));
  };
  keep_or_saved("steps", c.steps, "run.steps");
  keep_or_saved("eval-interval", c.eval_interval, "run.eval_interval");
  keep_or_saved("eval-batches", c.eval_batches, "run.eval_batches");
  keep_or_saved("ckpt-interval", c.ckpt_interval, "run.ckpt_interval");
  keep_or_saved("samples", c.samples, "run.samples");
  keep_or_saved("sample-tokens", c.sample_tokens, "run.sample_tokens");
  keep_or_saved("top-k", c.top_k, "run.top_k");
  if (!s.given.count("temperature"))
    c.temperature = parse_num<double>("run.temperature", get("run.temperature"));
  if (!s.given.count("top-p")) c.top_p = parse_num<double>("run.top_p", get("run.top_p"));
  if (!s.given.count("prompt")) c.prompt = get("run.prompt");
  // Fixed settings: a given flag must match.
  struct fixed {
    const char* flag;
    bool same;
  };
  const fixed checks[] = {
      {"config", s.config == c.config},
      {"n-layer", s.model.n_layer == c.model.n_layer},
      {"n-embd", s.model.n_embd == c.model.n_embd},
      {"n-head", s.model.n_head == c.model.n_head},
      {"n-kv-head", s.model.n_kv_head == c.model.n_kv_head},
      {"ffn", s.model.ffn == c.model.ffn},
      {"block-size", s.model.block_size == c.model.block_size},
      {"norm", s.model.norm == c.model.norm},
      {"mlp", s.model.mlp == c.model.mlp},
      {"position", s.model.position == c.model.position},
      {"dropout", s.model.dropout == c.model.dropout},
      {"bf16", s.bf16 == c.bf16},
      {"data", s.data == c.data},
      {"val-fraction", s.val_fraction == c.val_fraction},
      {"tokenizer", s.tokenizer == c.tokenizer},
      {"bpe-vocab", s.bpe_vocab == c.bpe_vocab},
      {"batch", s.batch == c.batch},
      {"seq", s.seq == c.seq},
      {"grad-accum", s.grad_accum == c.grad_accum},
      {"lr", s.lr == c.lr},
      {"min-lr", s.min_lr == c.min_lr},
      {"warmup", s.warmup == c.warmup},
      {"weight-decay", s.weight_decay == c.weight_decay},
      {"clip", s.clip == c.clip},
      {"seed", s.seed == c.seed},
  };
  for (const auto& f : checks)
    if (s.given.count(f.flag) && !f.same)
      usage_fail("--", f.flag,
                 " differs from the checkpoint being resumed; a resumed run keeps its ",
                 "model, data and training settings (drop --", f.flag, ", or start a new run).");
  s = c;
}

/// The run's tokenizer: the checkpoint's when resuming, else --tokenizer, --bpe-vocab (trained
/// on the data and saved as OUT/tokenizer.json) or bytes. Sets the model's vocabulary.
train::text_tokenizer make_tokenizer(settings& s,
                                     const std::optional<train::training_state>& resumed) {
  train::text_tokenizer tok;
  if (resumed) {
    tok = train::text_tokenizer::from_state(*resumed);
    if (tok.vocab_size() != s.model.vocab)
      fail(errc::parse, "mini_gpt: the checkpoint's tokenizer has ", tok.vocab_size(),
           " ids but its model a vocabulary of ", s.model.vocab, ".");
    if (tok.is_bpe())
      s.tokenizer_note =
          "byte-level BPE from the checkpoint, " + std::to_string(tok.vocab_size()) + " ids";
    return tok;
  }
  if (!s.tokenizer.empty()) {
    tok = train::text_tokenizer::from_file(s.tokenizer);
    s.tokenizer_note =
        "byte-level BPE from " + s.tokenizer + ", " + std::to_string(tok.vocab_size()) + " ids";
  } else if (s.bpe_vocab > 0) {
    std::printf("training a byte-level BPE tokenizer (%lld ids) on %zu file%s...\n",
                (long long)s.bpe_vocab, s.data.size(), s.data.size() == 1 ? "" : "s");
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    tok = train::text_tokenizer::train_bpe(s.data, static_cast<std::size_t>(s.bpe_vocab));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string path = (fs::path(s.out) / "tokenizer.json").string();
    tfm::detail::bpe::write_file(path, tok.json());  // the text the checkpoint stores
    s.tokenizer_note = "byte-level BPE trained on the data in " + fmt("%.2fs", dt) + ", " +
                       std::to_string(tok.vocab_size()) + " ids, saved to " + path;
  }
  s.model.vocab = tok.vocab_size();
  try {
    nn::validate(s.model);
  } catch (const value_error& e) {
    usage_fail("the model settings are invalid: ", e.what());
  }
  return tok;
}

// ---- the type-independent parts of run<T> (declared in options.hpp) --------------------------

run_data load_run_data(const settings& s, const train::text_tokenizer& tok) {
  const auto t_load = std::chrono::steady_clock::now();
  run_data d{train::token_dataset::from_files(s.data, tok, tok.vocab_size(), s.val_fraction)};
  const auto& tr = d.data.tokens(train::split::train);
  const auto& va = d.data.tokens(train::split::validation);
  if (static_cast<std::int64_t>(tr.size()) < s.seq + 1 ||
      static_cast<std::int64_t>(va.size()) < s.seq + 1)
    usage_fail("the data is too small: ", tr.size(), " training and ", va.size(),
               " validation tokens; each split needs at least --seq + 1 = ", s.seq + 1,
               " (use more text, a smaller --seq or a larger --val-fraction).");
  d.fingerprint = train::token_fingerprint(tr) ^ (train::token_fingerprint(va) * 31);
  // Over the tokens the model predicts (bytes or BPE ids): the per-token loss to compare with.
  d.h_unigram = train::unigram_entropy(tr);
  d.train_bytes = static_cast<double>(tok.byte_count(tr));
  d.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  return d;
}

void print_summary(const settings& s, const nn::model_summary& sum, const run_data& d,
                   const train::text_tokenizer& tok, int threads, double param_bytes, bool resuming,
                   std::int64_t resume_step) {
  const auto& c = s.model;
  const auto& tr = d.data.tokens(train::split::train);
  const auto& va = d.data.tokens(train::split::validation);
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
  std::printf("  parameters  %s (%lld; %s without the position table), %s weights = %s\n",
              train::format_si(static_cast<double>(sum.parameters)).c_str(),
              (long long)sum.parameters,
              train::format_si(static_cast<double>(sum.non_embedding)).c_str(),
              s.bf16 ? "bf16" : "f32", bytes_text(param_bytes).c_str());
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
        d.train_bytes / std::max<double>(1, static_cast<double>(tr.size())), d.load_s);
  } else {
    std::printf(
        "  data        %zu file%s: %s training + %s validation tokens (bytes), read in %.2fs\n",
        s.data.size(), s.data.size() == 1 ? "" : "s",
        train::format_si(static_cast<double>(tr.size())).c_str(),
        train::format_si(static_cast<double>(va.size())).c_str(), d.load_s);
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

struct loss_log::impl {
  train::csv_writer csv;
  std::string svg_path, title;
  double h_unigram = 0, tokens_per_step = 0;
};

loss_log::loss_log(const settings& s, const nn::model_summary& sum, double h_unigram,
                   double tokens_per_step, const std::vector<train::curve_point>& curve)
    : impl_(std::make_unique<impl>()) {
  impl_->csv = train::csv_writer((fs::path(s.out) / "loss.csv").string(),
                                 {"step", "tokens", "lr", "train_loss", "val_loss", "val_ppl"});
  impl_->svg_path = (fs::path(s.out) / "loss.svg").string();
  impl_->title = "mini_gpt " + s.config + ": " +
                 train::format_si(static_cast<double>(sum.parameters)) + " parameters, " +
                 train::format_si(tokens_per_step) + " tokens/step";
  impl_->h_unigram = h_unigram;
  impl_->tokens_per_step = tokens_per_step;
  for (const auto& p : curve) append(p);
}

loss_log::~loss_log() = default;

void loss_log::append(const train::curve_point& p) {
  auto f = [](double v) { return train::csv_number(static_cast<float>(v)); };
  impl_->csv.row({train::csv_number(p.step),
                  train::csv_number(static_cast<std::int64_t>(p.step) *
                                    static_cast<std::int64_t>(impl_->tokens_per_step)),
                  train::csv_number(p.lr), f(p.train_loss), f(p.val_loss),
                  std::isnan(p.val_loss) ? std::string() : f(std::exp(p.val_loss))});
}

void loss_log::write_plot(const std::vector<train::curve_point>& curve) const {
  train::plot_series trs{"train", {}, {}, "#1f77b4", 1.2, false, 0.8};
  train::plot_series vls{"validation", {}, {}, "#d62728", 2.0, true, 1.0};
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
  train::plot_options po;
  po.title = impl_->title;
  po.x_label = "step";
  po.y_label = "cross-entropy loss (nats/token)";
  po.hlines.push_back(
      {"unigram entropy " + fmt("%.3f", impl_->h_unigram), impl_->h_unigram, "#555555"});
  train::write_svg(impl_->svg_path, train::svg_line_plot({trs, vls}, po));
}

double tokens_per_byte(const std::vector<std::pair<train::ids_tensor, train::ids_tensor>>& batches,
                       const train::text_tokenizer& tok) {
  // Tokens per byte of the predicted (target) tokens of the validation batches: loss per token
  // times this is the loss per byte, comparable between tokenizers (exactly 1 for bytes).
  double tokens = 0, bytes = 0;
  for (const auto& b : batches) {
    const auto& y = b.second;
    const std::span<const std::int32_t> ids(y.data(), static_cast<std::size_t>(y.size()));
    tokens += static_cast<double>(ids.size());
    bytes += static_cast<double>(tok.byte_count(ids));
  }
  return tokens / std::max(bytes, 1.0);
}

std::vector<std::int32_t> encode_text(const train::text_tokenizer& tok, const std::string& text) {
  return tok.encode(text);
}
std::string decode_text(const train::text_tokenizer& tok, const std::vector<std::int32_t>& ids) {
  return utf8::sanitize(tok.decode(ids));
}
void store_tokenizer(const train::text_tokenizer& tok, train::training_state& st) { tok.store(st); }

}  // namespace mini_gpt

int main(int argc, char** argv) {
  using namespace mini_gpt;
  try {
    settings s = parse_args(argc, argv);
    std::optional<train::training_state> resumed;
    if (!s.resume.empty()) {
      std::error_code ec;
      if (fs::is_directory(s.resume, ec)) {
        if (!s.given.count("out")) s.out = s.resume;
        s.resume = (fs::path(s.resume) / "checkpoint.tfm").string();
      } else if (!s.given.count("out")) {
        s.out = fs::path(s.resume).parent_path().string();
        if (s.out.empty()) s.out = ".";
      }
      if (!fs::is_regular_file(s.resume, ec))
        usage_fail("--resume: no checkpoint at '", s.resume, "'.");
      resumed = train::read_training_state(s.resume);
      check_settings(s);
      apply_run_meta(s, resumed->meta);
      if (resumed->meta["state.dtype"] != (s.bf16 ? "bf16" : "f32"))
        fail(errc::parse, "mini_gpt: the checkpoint's parameter type does not match its settings.");
    } else {
      if (s.data.empty()) {
        std::error_code ec;
        if (!fs::is_directory(default_corpus, ec))
          usage_fail(
              "no --data given and the default corpus ", default_corpus,
              " is missing: install Debian's fortunes package (apt-get install fortunes) or pass "
              "--data FILE.");
        s.data = {default_corpus};
      }
      s.data = expand_data(s.data);
      if (s.out.empty()) s.out = "mini_gpt_out";
      std::error_code ec;
      if (!s.tokenizer.empty() && !fs::exists(s.tokenizer, ec))
        usage_fail("--tokenizer: no file or directory '", s.tokenizer, "'.");
    }
    check_settings(s);
    std::error_code ec;
    fs::create_directories(s.out, ec);
    if (!fs::is_directory(s.out, ec))
      usage_fail("--out: cannot create the directory '", s.out, "'.");
    const train::text_tokenizer tok = make_tokenizer(s, resumed);
    return s.bf16 ? run_bf16(s, resumed, tok) : run_f32(s, resumed, tok);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "mini_gpt: %s\n", e.message.c_str());
    return 2;
  } catch (const tfm::error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "\nmini_gpt: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "\nmini_gpt: unexpected error: %s\n", e.what());
    return 1;
  }
}
