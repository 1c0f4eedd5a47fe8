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
#include <typeformer/train/data.hpp>
#include <typeformer/train/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
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
