// typeformer/train/run_settings.hpp
//
// The settings of a language-model training run as `tfm train` takes them (docs/mini_gpt.md),
// their checkpoint entries, and the checks a resumed run makes:
//
//   train::run_settings s;                 // defaults: tiny GPT on bytes, 1000 steps, ...
//   s.model = train::preset_config("llama-tiny");
//   train::set_config_flag(s.model, "--n-layer", "2");         // one model field
//   auto resumed = train::prepare_run(s);  // resume paths, data files, output folder, checks
//   ...                                    // train::run<float>(s, resumed, tok) (train/run.hpp)
//
// Settings a user got wrong (a value out of range, data too small, a resumed run that changes
// its model) raise train::settings_error, a value_error the command-line front ends report as
// a usage error (exit 2); a corrupted or foreign checkpoint is a parse_error as everywhere.
//
// Checkpoint meta: the model under "config.<field>" (put_config), the run under "run.<name>"
// (put_run_meta). A resumed run takes both from the checkpoint; flags that fix the run (model,
// data, batch, schedule, seed: `given` names them) must agree with it, others (steps,
// evaluation, checkpoints, sampling) override the saved values.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/nn/config.hpp"
#include "typeformer/train/trainer.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// A run setting that cannot work; front ends report it as a command-line mistake (exit 2).
class settings_error : public value_error {
 public:
  explicit settings_error(const std::string& w) : value_error(w) {}
};

template <class... A>
[[noreturn]] void settings_fail(const A&... a) {
  std::string s;
  (tfm::detail::append_piece(s, a), ...);
#if TFM_NO_EXCEPTIONS
  raise(errc::value, s);
#else
  throw settings_error(s);
#endif
}

/// Default corpus when no data is given: the text files of Debian's `fortunes` package.
inline constexpr const char* default_corpus = "/usr/share/games/fortunes";

/// Everything a run is told. `given` lists the flags set on the command line (without "--"),
/// which is what a resumed run compares with its checkpoint.
struct run_settings {
  std::string program = "tfm train";  // for messages ("resume with: <program> --resume ...")
  std::vector<std::string> data;      // text files (after prepare_run: files, not folders)
  double val_fraction = 0.1;
  std::string tokenizer;        // a BPE tokenizer file ("" = none)
  std::int64_t bpe_vocab = 0;   // train a BPE of this many ids (0 = none); neither: bytes
  std::string tokenizer_note;   // where the tokenizer came from (for the summary)
  std::string config = "tiny";  // the preset the model started from
  nn::dynamic_config model = nn::to_dynamic(nn::gpt2_tiny{});
  bool bf16 = false;
  std::int64_t steps = 1000;
  std::int64_t batch = 8, seq = 0, grad_accum = 1;                // seq 0: the block size
  double lr = 1e-3, min_lr = -1, weight_decay = 0.1, clip = 1.0;  // min_lr < 0: lr / 10
  std::int64_t warmup = -1;                                       // < 0: min(100, steps / 10)
  std::uint64_t seed = 1;
  int threads = 0;  // 0: the OpenMP default
  std::int64_t eval_interval = 100, eval_batches = 20, ckpt_interval = 0, log_interval = 10;
  std::int64_t stop_after = 0;  // 0: run to `steps`
  std::string out, resume;
  std::int64_t samples = 2, sample_tokens = 300;
  std::string prompt = "\n";
  double temperature = 0.8, top_p = 0.95;
  std::int64_t top_k = 40;
  std::set<std::string> given;
};

/// A number from the command line or the checkpoint (whole text, finite); settings_error
/// naming `what` otherwise.
template <class N>
N parse_setting(const std::string& what, const std::string& v) {
  N x{};
  auto r = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size())
    settings_fail(what, " needs a", std::is_integral_v<N> ? "n integer" : " number", ", not '", v,
                  "'.");
  if constexpr (std::is_floating_point_v<N>)
    if (!std::isfinite(x)) settings_fail(what, " must be finite, not '", v, "'.");
  return x;
}

/// The model presets by name: tiny | llama-tiny | gpt2-6l384 | gpt2-124m.
inline constexpr const char* preset_names = "tiny | llama-tiny | gpt2-6l384 | gpt2-124m";
inline nn::dynamic_config preset_config(const std::string& name) {
  if (name == "tiny") return nn::to_dynamic(nn::gpt2_tiny{});
  if (name == "llama-tiny") return nn::to_dynamic(nn::llama_tiny{});
  if (name == "gpt2-6l384") return nn::to_dynamic(nn::gpt2_6l384{});
  if (name == "gpt2-124m") return nn::to_dynamic(nn::gpt2_124m{});
  settings_fail("--config must be tiny, llama-tiny, gpt2-6l384 or gpt2-124m, not '", name, "'.");
}

/// s.model from the preset s.config, byte vocabulary, then the model flags in order
/// ({"--n-layer", "2"}, ...; set_config_flag). An explicit --n-head without --n-kv-head means
/// multi-head attention; a --seq shorter than the block size without --block-size shortens
/// the block size to it (positions past --seq would never be trained).
inline void configure_model(run_settings& s,
                            const std::vector<std::pair<std::string, std::string>>& model_flags) {
  s.model = preset_config(s.config);
  s.model.vocab = 256;
  std::set<std::string> set;
  for (const auto& [flag, text] : model_flags) {
#if TFM_NO_EXCEPTIONS
    const bool known = set_config_flag(s.model, flag, text);
#else
    bool known = false;
    try {
      known = set_config_flag(s.model, flag, text);
    } catch (const value_error& e) {
      settings_fail(e.what());
    }
#endif
    if (!known) settings_fail("unknown model flag ", flag, ".");
    set.insert(flag);
  }
  if (set.count("--n-head") && !set.count("--n-kv-head")) s.model.n_kv_head = s.model.n_head;
  if (s.given.count("seq") && !set.count("--block-size") && s.seq > 0 && s.seq < s.model.block_size)
    s.model.block_size = s.seq;
}

/// nn::validate, as a settings_error.
inline void check_model(const nn::dynamic_config& c) {
#if TFM_NO_EXCEPTIONS
  nn::validate(c);
#else
  try {
    nn::validate(c);
  } catch (const value_error& e) {
    settings_fail("the model settings are invalid: ", e.what());
  }
#endif
}

/// Range checks that need neither the checkpoint nor the data; fills in the derived defaults
/// (seq, min_lr, warmup, ckpt_interval).
inline void check_run_settings(run_settings& s) {
  auto need = [](bool ok, const char* msg) {
    if (!ok) settings_fail(msg);
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
  check_model(s.model);
  if (s.seq == 0) s.seq = s.model.block_size;
  if (s.seq < 1 || s.seq > s.model.block_size)
    settings_fail("--seq must be in 1 .. the block size ", s.model.block_size, ", not ", s.seq,
                  ".");
  if (s.min_lr < 0) s.min_lr = s.lr / 10;
  if (s.min_lr > s.lr)
    settings_fail("--min-lr (", s.min_lr, ") must not exceed --lr (", s.lr, ").");
  if (s.warmup < 0) s.warmup = std::min<std::int64_t>(100, s.steps / 10);
  if (s.warmup > s.steps)
    settings_fail("--warmup (", s.warmup, ") must not exceed --steps (", s.steps, ").");
  if (s.ckpt_interval == 0) s.ckpt_interval = s.eval_interval;
}

/// The text files a --data argument names (a directory: its regular files, sorted; for the
/// fortunes folder only the cookie files, not the .dat/.u8 indexes).
inline std::vector<std::string> expand_data(const std::vector<std::string>& in) {
  namespace fs = std::filesystem;
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
      if (files.empty()) settings_fail("--data: the directory '", p, "' holds no text files.");
      out.insert(out.end(), files.begin(), files.end());
    } else if (fs::is_regular_file(p, ec)) {
      out.push_back(p);
    } else {
      settings_fail("--data: '", p, "' is not a readable file or directory.");
    }
  }
  return out;
}

namespace detail {
inline std::string join_lines(const std::vector<std::string>& v) {
  std::string r;
  for (std::size_t i = 0; i < v.size(); ++i) r += (i ? "\n" : "") + v[i];
  return r;
}
inline std::vector<std::string> split_lines(const std::string& s) {
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
}  // namespace detail

/// Stores the model (put_config) and the run settings ("run.*") in checkpoint meta.
inline void put_run_meta(std::map<std::string, std::string>& m, const run_settings& s) {
  put_config(m, s.model);
  m["run.config"] = s.config;
  m["run.data"] = detail::join_lines(s.data);
  m["run.val_fraction"] = exact_string(s.val_fraction);
  m["run.tokenizer_file"] = s.tokenizer;
  m["run.bpe_vocab"] = std::to_string(s.bpe_vocab);
  m["run.bf16"] = s.bf16 ? "1" : "0";
  m["run.steps"] = std::to_string(s.steps);
  m["run.batch"] = std::to_string(s.batch);
  m["run.seq"] = std::to_string(s.seq);
  m["run.grad_accum"] = std::to_string(s.grad_accum);
  m["run.lr"] = exact_string(s.lr);
  m["run.min_lr"] = exact_string(s.min_lr);
  m["run.warmup"] = std::to_string(s.warmup);
  m["run.weight_decay"] = exact_string(s.weight_decay);
  m["run.clip"] = exact_string(s.clip);
  m["run.seed"] = std::to_string(s.seed);
  m["run.eval_interval"] = std::to_string(s.eval_interval);
  m["run.eval_batches"] = std::to_string(s.eval_batches);
  m["run.ckpt_interval"] = std::to_string(s.ckpt_interval);
  m["run.samples"] = std::to_string(s.samples);
  m["run.sample_tokens"] = std::to_string(s.sample_tokens);
  m["run.prompt"] = s.prompt;
  m["run.temperature"] = exact_string(s.temperature);
  m["run.top_k"] = std::to_string(s.top_k);
  m["run.top_p"] = exact_string(s.top_p);
}

/// Replaces `s`'s settings by the checkpoint's meta `m`. A flag in s.given that fixes the run
/// (every model field, data, tokenizer, batch, schedule, seed) must agree with the checkpoint:
/// a different value is a settings_error, since the resumed curve would no longer continue the
/// saved one. The others (steps, evaluation, checkpoints, sampling) keep the given value.
inline void apply_run_meta(run_settings& s, const std::map<std::string, std::string>& m) {
  auto get = [&](const std::string& k) -> const std::string& { return detail::lookup(m, k); };
  run_settings c = s;
  c.model = get_config(m);
  c.config = get("run.config");
  c.data = detail::split_lines(get("run.data"));
  c.val_fraction = parse_setting<double>("run.val_fraction", get("run.val_fraction"));
  // Absent in checkpoints written before BPE support: a byte-level run.
  c.tokenizer = m.count("run.tokenizer_file") ? m.at("run.tokenizer_file") : std::string();
  c.bpe_vocab = m.count("run.bpe_vocab")
                    ? parse_setting<std::int64_t>("run.bpe_vocab", m.at("run.bpe_vocab"))
                    : 0;
  c.bf16 = get("run.bf16") == "1";
  c.batch = parse_setting<std::int64_t>("run.batch", get("run.batch"));
  c.seq = parse_setting<std::int64_t>("run.seq", get("run.seq"));
  c.grad_accum = parse_setting<std::int64_t>("run.grad_accum", get("run.grad_accum"));
  c.lr = parse_setting<double>("run.lr", get("run.lr"));
  c.min_lr = parse_setting<double>("run.min_lr", get("run.min_lr"));
  c.warmup = parse_setting<std::int64_t>("run.warmup", get("run.warmup"));
  c.weight_decay = parse_setting<double>("run.weight_decay", get("run.weight_decay"));
  c.clip = parse_setting<double>("run.clip", get("run.clip"));
  c.seed = parse_setting<std::uint64_t>("run.seed", get("run.seed"));
  auto keep_or_saved = [&](const char* flag, std::int64_t& dst, const char* key) {
    if (!s.given.count(flag)) dst = parse_setting<std::int64_t>(key, get(key));
  };
  keep_or_saved("steps", c.steps, "run.steps");
  keep_or_saved("eval-interval", c.eval_interval, "run.eval_interval");
  keep_or_saved("eval-batches", c.eval_batches, "run.eval_batches");
  keep_or_saved("ckpt-interval", c.ckpt_interval, "run.ckpt_interval");
  keep_or_saved("samples", c.samples, "run.samples");
  keep_or_saved("sample-tokens", c.sample_tokens, "run.sample_tokens");
  keep_or_saved("top-k", c.top_k, "run.top_k");
  if (!s.given.count("temperature"))
    c.temperature = parse_setting<double>("run.temperature", get("run.temperature"));
  if (!s.given.count("top-p")) c.top_p = parse_setting<double>("run.top_p", get("run.top_p"));
  if (!s.given.count("prompt")) c.prompt = get("run.prompt");
  // Fixed settings: a given flag must match. The model fields come from the field list.
  std::vector<std::pair<std::string, bool>> checks = {
      {"config", s.config == c.config},
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
#define TFM_TRAIN_FIXED_FIELD(type, name, init, flag, rule, doc) \
  if (std::string_view(flag).size() > 2)                         \
    checks.emplace_back(std::string(flag).substr(2),             \
                        config_field_text(s.model, #name) == config_field_text(c.model, #name));
  TFM_NN_CONFIG_FIELDS(TFM_TRAIN_FIXED_FIELD)
#undef TFM_TRAIN_FIXED_FIELD
  for (const auto& [flag, same] : checks)
    if (s.given.count(flag) && !same)
      settings_fail("--", flag, " differs from the checkpoint being resumed; a resumed run keeps ",
                    "its model, data and training settings (drop --", flag,
                    ", or start a new run).");
  s = c;
}

/// Before the tokenizer and the model: resolves --resume (a folder means FOLDER/checkpoint.tfm
/// and, without --out, writes there; a file writes beside it), reads the checkpoint's settings
/// (apply_run_meta), or for a new run expands --data (default_corpus when none) and checks the
/// tokenizer file exists; then checks the settings and creates the output folder. Returns the
/// checkpoint's state when resuming.
inline std::optional<training_state> prepare_run(run_settings& s,
                                                 const std::string& default_out = "mini_gpt_out") {
  namespace fs = std::filesystem;
  std::optional<training_state> resumed;
  std::error_code ec;
  if (!s.resume.empty()) {
    if (fs::is_directory(s.resume, ec)) {
      if (!s.given.count("out")) s.out = s.resume;
      s.resume = (fs::path(s.resume) / "checkpoint.tfm").string();
    } else if (!s.given.count("out")) {
      s.out = fs::path(s.resume).parent_path().string();
      if (s.out.empty()) s.out = ".";
    }
    if (!fs::is_regular_file(s.resume, ec))
      settings_fail("--resume: no checkpoint at '", s.resume, "'.");
    resumed = read_training_state(s.resume);
    check_run_settings(s);
    apply_run_meta(s, resumed->meta);
    if (resumed->meta["state.dtype"] != (s.bf16 ? "bf16" : "f32"))
      fail(errc::parse, "tfm::train: the checkpoint's parameter type does not match its settings.");
  } else {
    if (s.data.empty()) {
      if (!fs::is_directory(default_corpus, ec))
        settings_fail("no --data given and the default corpus ", default_corpus,
                      " is missing: install Debian's fortunes package (apt-get install fortunes) ",
                      "or pass --data FILE.");
      s.data = {default_corpus};
    }
    s.data = expand_data(s.data);
    if (s.out.empty()) s.out = default_out;
    if (!s.tokenizer.empty() && !fs::exists(s.tokenizer, ec))
      settings_fail("--tokenizer: no file or directory '", s.tokenizer, "'.");
  }
  check_run_settings(s);
  fs::create_directories(s.out, ec);
  if (!fs::is_directory(s.out, ec))
    settings_fail("--out: cannot create the directory '", s.out, "'.");
  return resumed;
}

}  // namespace train
TFM_END_NAMESPACE
