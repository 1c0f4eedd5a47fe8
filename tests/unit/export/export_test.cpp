// Export of trained nn::gpt models (io/export.hpp, train/export.hpp): small LLaMA- and
// GPT-2-style models trained a few steps and saved with train::save_training_state are exported
// to GGUF and to Hugging Face directories, then
//   - every export (llama and gpt2 GGUF, f32/f16; HF directories, f32/bf16) runs in
//     tfm::load_model with the training model's logits, and the GGUF tokenizer
//     (io::load_gguf_tokenizer, llama.cpp's rules) encodes as the checkpoint's does;
//   - "python:" (ctest tfm_test_export_python) check_export.py reads every export with gguf-py
//     and safetensors: names, shapes, dtypes, metadata, config.json, tokenizer.json through the
//     `tokenizers` package, and a numpy forward in each file's own convention (HF rotate_half
//     RoPE, Conv1D GPT-2; GGUF interleaved RoPE) against the logits this test writes;
//   - "live:" (ctest tfm_test_export_llamacpp, TFM_LIVE_PEERS=1) llama.cpp's perplexity of each
//     exported GGUF (llama-cpp-python, bench/infer/export_vs_llamacpp.py) within 0.5% of ours;
//   - a model in memory (io::weights_of, io::byte_vocabulary) exports byte for byte as its
//     checkpoint does, and GGUF -> HF (io/export_gguf_import.hpp) gives the checkpoint's HF files;
//   - configs neither format can express are refused naming the field;
//   - Hugging Face directory -> GGUF (infer/hf_export_import.hpp, `tfm convert HF_DIR OUT.gguf`):
//     the tests/data/infer_hf GPT-2 fixtures convert to GGUFs whose logits in tfm::load_model
//     equal the fixtures' numpy float64 logits (make_fixtures.py; infer_hf's tolerance), a
//     Llama directory's GGUF (q/k rows interleaved) gives the HF engine's logits (rotate_half
//     on the stored rows), checkpoint -> HF -> GGUF equals checkpoint -> GGUF byte for byte, the
//     "python:" case checks the converted tensors against the source safetensors with an
//     independent numpy permute, and bad directories give one-line errors naming file and key;
//   - a full fine-tune written as a GGUF (train/finetune_export.hpp save_finetuned_gguf on a
//     tiny llama GGUF with a chat template): perturbed parameters give the engine the training
//     model's logits (1e-5), read back bitwise, keep every source key byte for byte; F16 source
//     matrices stay F16 by default; a model of another shape is refused naming the tensor;
//   - "smollm2:" (ctest tfm_test_export_smollm2) the same on SmolLM2 (F16 output), and SmolLM2's
//     GGUF -> HF directory: pre "smollm" as [Digits, ByteLevel], BOS/EOS/pad and chat template in
//     config.json / tokenizer_config.json, the directory's logits in the engine.
#include "typeformer/io/export.hpp"
#include "tfm_test.hpp"
#include "typeformer/infer/hf_export_import.hpp"
#include "typeformer/infer/model.hpp"
#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/io/mmap.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/train/data.hpp"
#include "typeformer/train/export.hpp"
#include "typeformer/train/finetune.hpp"
#include "typeformer/train/finetune_export.hpp"
#include "typeformer/train/tokenizer.hpp"
#include "typeformer/train/trainer.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

using namespace tfm;

namespace {

std::string work_dir() {
  std::filesystem::create_directories(TFM_EXPORT_WORK_DIR);
  return TFM_EXPORT_WORK_DIR;
}

/// Deterministic English-like text (no files needed).
std::string corpus_text(std::uint64_t seed, int words) {
  const char* w[] = {"the ",     "cat ",  "sat ",   "on ",    "a ",     "mat ",  "and ",
                     "dog ",     "ran ",  "far ",   "away. ", "Then, ", "it's ", "42 ",
                     "quickly ", "über ", "naïve ", "\n",     "(yes) ", "don't "};
  std::string text;
  std::uint64_t x = seed;
  for (int i = 0; i < words; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    text += w[(x >> 33) % 20];
  }
  return text;
}

const std::string sample_text =
    "The cat sat on a mat, and the dog ran far away. It's 42 \xC3\xBC"
    "ber-na\xC3\xAFve!\n";

/// A model variant: its config and tokenizer.
struct variant {
  std::string name;
  bool llama = true;
  bool bpe = false;
  bool bias = true;
  bool tied = false;
  bool moe = false;  ///< llama layout with mlp = moe (E 4, k 2, expert width 24)
};

nn::dynamic_config config_of(const variant& v, index_t vocab) {
  nn::dynamic_config c;
  c.vocab = vocab;
  c.block_size = 32;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.n_kv_head = v.llama ? 2 : 4;
  c.ffn = v.llama ? 48 : 64;
  c.norm_eps = v.llama ? 1e-5 : 1e-5;
  c.rope_base = 10000.0;
  c.tie_embeddings = v.tied;
  if (v.llama) {
    c.norm = nn::norm_kind::rms_norm;
    c.mlp = nn::mlp_kind::swiglu;
    c.position = nn::position_kind::rope;
    c.bias = false;
    if (v.moe) {
      c.mlp = nn::mlp_kind::moe;
      c.n_expert = 4;
      c.n_expert_used = 2;
      c.expert_ffn = 24;
    }
  } else {
    c.bias = v.bias;
  }
  return c;
}

/// A trained model of variant v, its checkpoint in work_dir()/<name>/checkpoint.tfm, and the
/// logits of sample_text's ids (f32, T x V) in <name>.logits with the ids in <name>.ids.
struct trained {
  nn::dynamic_config cfg;
  train::text_tokenizer tok;
  std::vector<std::int32_t> ids;  // sample_text's ids (at most block_size of them)
  std::vector<float> logits;      // (T, V) from nn::gpt::forward
  std::string dir;                // the run directory
};

trained train_variant(const variant& v) {
  const std::uint64_t seed = 1234;
  MESSAGE("variant " << v.name << ", seed " << seed);
  trained r;
  const std::string text = corpus_text(seed, 4000);
  r.tok = v.bpe ? train::text_tokenizer::train_bpe_on_texts({text}, 300) : train::text_tokenizer();
  r.cfg = config_of(v, r.tok.vocab_size());
  nn::gpt<nn::dynamic_config> model(r.cfg, seed);
  auto ps = model.parameters();
  optim::adam_options ao;
  ao.lr = 1e-2;  // large: a few steps move the norms' weights away from 1
  auto opt = optim::adamw(ps, ao);
  const auto data = train::token_dataset::from_texts({text}, r.tok, r.tok.vocab_size(), 0.1);
  train::training_state st;
  st.model_seed = seed;
  st.data_seed = seed + 1;
  train::put_config(st.meta, r.cfg);
  r.tok.store(st);
  train::step_options so;
  so.batch = 2;
  so.seq = 32;
  so.schedule = optim::lr_schedule::constant(1e-2);
  for (int s = 0; s < 4; ++s) train::train_step(model, opt, data, so, st);
  // Sharper attention than 4 steps give (scores x 9): a wrong RoPE pair convention or q/k row
  // order then moves the logits by far more than rounding does.
  for (auto& p : ps)
    if (p.name.find("c_attn.weight") != std::string::npos)
      for (index_t i = 0; i < p.data->size(); ++i) p.data->value.data()[i] *= 3.0f;
  r.dir = work_dir() + "/" + v.name;
  std::filesystem::create_directories(r.dir);
  train::save_training_state(r.dir + "/checkpoint.tfm", ps, opt, st);

  r.ids = r.tok.encode(sample_text);
  if (static_cast<index_t>(r.ids.size()) > r.cfg.block_size) r.ids.resize(32);
  tensor<std::int32_t, shape<dyn, dyn>> x(1, static_cast<index_t>(r.ids.size()));
  std::copy(r.ids.begin(), r.ids.end(), x.data());
  no_grad ng;
  auto lg = model.forward(x);
  r.logits.assign(lg.value().data(), lg.value().data() + lg.size());

  std::ofstream(work_dir() + "/" + v.name + ".logits", std::ios::binary)
      .write(reinterpret_cast<const char*>(r.logits.data()),
             static_cast<std::streamsize>(r.logits.size() * sizeof(float)));
  std::ofstream ids(work_dir() + "/" + v.name + ".ids");
  for (auto id : r.ids) ids << id << "\n";
  std::ofstream(work_dir() + "/sample.txt", std::ios::binary) << sample_text;
  // The training config, for check_export.py's expectations (independent of the exports).
  const auto& c = r.cfg;
  std::ofstream(work_dir() + "/" + v.name + ".expect.json")
      << "{\"arch\": \"" << (v.llama ? "llama" : "gpt2") << "\", \"vocab\": " << c.vocab
      << ", \"block_size\": " << c.block_size << ", \"n_layer\": " << c.n_layer
      << ", \"n_embd\": " << c.n_embd << ", \"n_head\": " << c.n_head
      << ", \"n_kv_head\": " << c.n_kv_head << ", \"ffn\": " << c.ffn
      << ", \"bias\": " << (c.bias ? "true" : "false")
      << ", \"tied\": " << (c.tie_embeddings ? "true" : "false")
      << ", \"norm_eps\": " << train::exact_string(c.norm_eps)
      << ", \"rope_base\": " << train::exact_string(c.rope_base)
      << ", \"moe\": " << (v.moe ? "true" : "false") << ", \"n_expert\": " << c.n_expert
      << ", \"n_expert_used\": " << c.n_expert_used << ", \"expert_ffn\": " << c.expert_ffn
      << ", \"tokenizer\": \"" << r.tok.kind() << "\"}\n";
  return r;
}

/// max |a - b| / max |b|.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / den;
}
double max_abs_err(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

std::vector<float> engine_logits(const std::string& gguf, const std::vector<std::int32_t>& ids) {
  auto model = tfm::load_model(gguf);
  infer::session s(model);
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

const variant llama_bpe{"llama_bpe", true, true, false, false};
const variant llama_bytes_tied{"llama_bytes_tied", true, false, false, true};
const variant gpt2_bytes{"gpt2_bytes", false, false, true, true};
const variant gpt2_bpe_nobias{"gpt2_bpe_nobias", false, true, false, false};
const variant llama_moe{"llama_moe", true, true, false, false, true};

/// Trains, checkpoints and exports every variant once: <name>.gguf (f32), <name>_f16.gguf,
/// <name>_hf/ (f32), <name>_hf_bf16/.
const std::vector<trained>& exported() {
  static const std::vector<trained> all = [] {
    std::vector<trained> v;
    for (const variant& x : {llama_bpe, llama_bytes_tied, gpt2_bytes, gpt2_bpe_nobias, llama_moe}) {
      v.push_back(train_variant(x));
      const io::export_model m = io::read_export_model(v.back().dir);
      const std::string base = work_dir() + "/" + x.name;
      io::export_gguf(m, base + ".gguf");
      io::export_gguf(m, base + "_f16.gguf", {.type = ggml_type::f16});
      io::export_hf(m, base + "_hf");
      io::export_hf(m, base + "_hf_bf16", {.type = ggml_type::bf16});
    }
    return v;
  }();
  return all;
}

int run(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
#ifdef WEXITSTATUS
  if (rc != -1) rc = WEXITSTATUS(rc);
#endif
  return rc;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// ---- Hugging Face directory -> GGUF helpers ----------------------------------------------------

std::string hf_data() { return std::string(TFM_SOURCE_DIR) + "/tests/data/infer_hf"; }

/// The numpy float64 logits (stored f32) of the fixture `model` for reference.json's prompt.
struct hf_reference {
  std::vector<std::int32_t> prompt;
  std::vector<float> logits;  // (T, 64) row-major
  tfm::detail::json::value root;
};
hf_reference hf_reference_of(const std::string& model) {
  hf_reference r;
  const std::string path = hf_data() + "/reference.json";
  r.root = tfm::detail::json::parse(slurp(path), path);
  for (const auto& v : r.root.find("prompt")->array)
    r.prompt.push_back(static_cast<std::int32_t>(v.integer));
  const std::string blob = slurp(hf_data() + "/logits.f32");
  const std::size_t per_model = r.prompt.size() * 64;  // every fixture has 64 rows
  const auto& names = r.root.find("models")->array;
  REQUIRE(blob.size() == names.size() * per_model * sizeof(float));
  for (std::size_t m = 0; m < names.size(); ++m)
    if (names[m].string == model) {
      r.logits.resize(per_model);
      std::memcpy(r.logits.data(), blob.data() + m * per_model * sizeof(float),
                  per_model * sizeof(float));
    }
  REQUIRE(!r.logits.empty());
  return r;
}

/// Rows (of V values) whose argmax differ.
int argmax_mismatches(const std::vector<float>& a, const std::vector<float>& b, std::size_t V) {
  int n = 0;
  for (std::size_t r = 0; r < b.size() / V; ++r)
    n += std::max_element(a.begin() + r * V, a.begin() + (r + 1) * V) - a.begin() !=
         std::max_element(b.begin() + r * V, b.begin() + (r + 1) * V) - b.begin();
  return n;
}

/// HF directory `dir` converted to GGUF `out` (what `tfm convert dir out` does).
std::string hf_to_gguf(const std::string& dir, const std::string& out, ggml_type t) {
  io::export_gguf(io::read_hf_export_model(dir), out, {.type = t});
  return out;
}

/// A copy of fixture directory `from` as work_dir()/hf_src/`to` (its plain files), with
/// tokenizer.json and tokenizer_config.json from gpt2_f16 when the fixture has none.
std::string fixture_copy(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  const std::string dir = work_dir() + "/hf_src/" + to;
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(hf_data() + "/" + from))
    fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    if (!fs::exists(dir + "/" + f)) fs::copy_file(hf_data() + "/gpt2_f16/" + f, dir + "/" + f);
  return dir;
}

/// fixture_copy with a vocabulary io::export_model can hold: the 64-id fixture tokenizers lack
/// most byte tokens, which bpe_tokenizer requires, so the copy gets the 256-token byte
/// vocabulary (io::byte_vocabulary) and its embedding (and lm_head) rows 64..255 are zero; the
/// logits of ids < 64 in columns [0, 64) are the fixture's (the extra rows are never read).
std::string widened_copy(const std::string& from, const std::string& to) {
  const std::string dir = fixture_copy(from, to);
  std::string cfg = slurp(dir + "/config.json");
  const auto at = cfg.find("\"vocab_size\": 64");
  REQUIRE(at != std::string::npos);
  cfg.replace(at, 16, "\"vocab_size\": 256");
  std::ofstream(dir + "/config.json", std::ios::binary) << cfg;
  std::ofstream(dir + "/tokenizer.json", std::ios::binary) << io::byte_vocabulary().to_hf_json();
  std::filesystem::remove(dir + "/tokenizer_config.json");
  const auto st = io::safetensors::open(hf_data() + "/" + from);
  io::safetensors::writer w;
  std::vector<std::vector<std::byte>> keep;
  keep.reserve(st.shards()[0].tensors().size());
  for (const auto& f : st.shards())
    for (const auto& t : f.tensors()) {
      const bool emb = t.name.ends_with("wte.weight") || t.name.ends_with("embed_tokens.weight") ||
                       t.name == "lm_head.weight";
      if (!emb) {
        w.add(t.name, t.type, t.shape, t.bytes);
        continue;
      }
      REQUIRE(t.shape[0] == 64);
      keep.emplace_back(t.bytes.size() / 64 * 256, std::byte{0});  // zero in F32/F16/BF16
      std::copy(t.bytes.begin(), t.bytes.end(), keep.back().begin());
      w.add(t.name, t.type, {256, t.shape[1]}, keep.back());
    }
  w.save(dir + "/model.safetensors");
  return dir;
}

/// Columns [0, n) of each row of a (rows, V) matrix.
std::vector<float> first_columns(const std::vector<float>& v, std::size_t V, std::size_t n) {
  std::vector<float> out;
  for (std::size_t r = 0; r < v.size() / V; ++r)
    out.insert(out.end(), v.begin() + r * V, v.begin() + r * V + n);
  return out;
}

/// The prefill logits of every position of `ids` in the model at `path` (GGUF or HF directory).
std::vector<float> all_logits(const std::string& path, const std::vector<std::int32_t>& ids) {
  auto model = tfm::load_model(path);
  infer::session s(model);
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

}  // namespace

TEST_CASE("a checkpoint reads back as the model's config, tokenizer and parameters") {
  const auto& all = exported();
  const io::export_model m = io::read_export_model(all[0].dir + "/checkpoint.tfm");
  CHECK(m.config.vocab == all[0].cfg.vocab);
  CHECK(m.config.norm == nn::norm_kind::rms_norm);
  CHECK(m.tokenizer.vocab_size() == static_cast<std::size_t>(all[0].tok.vocab_size()));
  CHECK(m.weights.count("h.1.attn.c_attn.weight") == 1);
  CHECK(m.weights.count("state/curve.step") == 0);
  CHECK_THROWS_AS(io::read_export_model(work_dir() + "/no_such_run"), io_error);
}

TEST_CASE("a model in memory exports as its checkpoint does (weights_of, byte_vocabulary)") {
  const trained& t = exported()[1];  // llama_bytes_tied
  nn::gpt<nn::dynamic_config> model(t.cfg, 5);
  const io::export_model from_ckpt = io::read_export_model(t.dir);
  for (auto& p : model.parameters()) {  // the checkpoint's values into a fresh model
    const auto& v = from_ckpt.weights.at(p.name).values;
    REQUIRE(static_cast<index_t>(v.size()) == p.data->size());
    std::copy(v.begin(), v.end(), p.data->value.data());
  }
  io::export_model m;
  m.config = t.cfg;
  m.weights = io::weights_of(model.parameters());
  m.tokenizer = io::byte_vocabulary();
  m.name = from_ckpt.name;
  const std::string path = work_dir() + "/from_memory.gguf";
  io::export_gguf(m, path);
  const io::mapped_file a(path), b(t.dir + ".gguf");
  CHECK(std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin(), b.bytes().end()));
}

TEST_CASE("GGUF -> HF directory gives the files the checkpoint -> HF export gives") {
  for (const trained& t : exported()) {
    const std::string name = std::filesystem::path(t.dir).filename().string();
    const io::gguf_file f(t.dir + ".gguf");
    const io::export_model m = io::read_export_model(f);
    CHECK(m.config.tie_embeddings == t.cfg.tie_embeddings);
    const std::string dir = t.dir + "_via_gguf_hf";
    io::export_hf(m, dir);
    for (const char* file : {"model.safetensors", "config.json", "tokenizer.json",
                             "tokenizer_config.json", "generation_config.json"}) {
      INFO(name << ": " << file);
      CHECK(slurp(dir + "/" + file) == slurp(t.dir + "_hf/" + file));
    }
  }
}

TEST_CASE("exported llama GGUF: tfm::load_model gives the training model's logits") {
  for (const trained& t : exported()) {
    if (t.cfg.position != nn::position_kind::rope) continue;
    const std::string name = std::filesystem::path(t.dir).filename().string();
    const auto f32 = engine_logits(t.dir + ".gguf", t.ids);
    REQUIRE(f32.size() == t.logits.size());
    const double e = max_abs_err(f32, t.logits);
    MESSAGE(name << " f32: max |logit error| " << e << ", relative " << rel_err(f32, t.logits));
    CHECK(e < 1e-4);
    const auto f16 = engine_logits(t.dir + "_f16.gguf", t.ids);
    const double e16 = rel_err(f16, t.logits);
    MESSAGE(name << " f16: relative logit error " << e16);
    CHECK(e16 < 1e-2);
  }
}

TEST_CASE("round trip: tfm::load_model reads every export (gpt2 GGUF, HF directories)") {
  for (const trained& t : exported()) {
    const std::string name = std::filesystem::path(t.dir).filename().string();
    for (const std::string suffix : {".gguf", "_hf"}) {
      if (suffix == ".gguf" && t.cfg.position == nn::position_kind::rope) continue;  // above
      const auto got = engine_logits(t.dir + suffix, t.ids);
      REQUIRE(got.size() == t.logits.size());
      const double e = max_abs_err(got, t.logits);
      MESSAGE(name << suffix << ": max |logit error| " << e << ", relative "
                   << rel_err(got, t.logits));
      CHECK(e < 1e-4);
    }
    const auto bf16 = engine_logits(t.dir + "_hf_bf16", t.ids);
    const double eb = rel_err(bf16, t.logits);
    MESSAGE(name << "_hf_bf16: relative logit error " << eb);
    CHECK(eb < 3e-2);
  }
}

TEST_CASE("the exported GGUF tokenizer encodes as the checkpoint's tokenizer") {
  const std::string text =
      sample_text + corpus_text(99, 3000) + " \t\tmixed  spaces\r\n\xE2\x82\xAC";
  for (const trained& t : exported()) {
    const std::string name = std::filesystem::path(t.dir).filename().string();
    const auto gtok = io::load_gguf_tokenizer(t.dir + ".gguf");
    const auto want = t.tok.encode(text);
    const auto got = gtok.encode(text, {.add_special = false, .parse_special = false});
    MESSAGE(name << ": " << want.size() << " tokens (" << std::string(t.tok.kind()) << ")");
    CHECK(got == want);
    CHECK(gtok.decode(got) == text);
  }
}

TEST_CASE("configs that no format can express are refused naming the field") {
  auto msg_of = [](nn::dynamic_config c) -> std::string {
#if TFM_NO_EXCEPTIONS
    (void)c;
    return "";
#else
    try {
      (void)io::export_arch_of(c);
    } catch (const unsupported_error& e) {
      return e.what();
    }
    return "accepted";
#endif
  };
  nn::dynamic_config llama = config_of(llama_bpe, 256), gpt2 = config_of(gpt2_bytes, 256);
  CHECK(io::export_arch_of(llama) == io::export_arch::llama);
  CHECK(io::export_arch_of(gpt2) == io::export_arch::gpt2);
  auto c = gpt2;
  c.position = nn::position_kind::alibi;
  CHECK(msg_of(c).find("field position") != std::string::npos);
  c = llama;
  c.window = 8;
  CHECK(msg_of(c).find("field window") != std::string::npos);
  c = llama;
  c.norm = nn::norm_kind::layer_norm;
  CHECK(msg_of(c).find("field norm") != std::string::npos);
  c = llama;
  c.mlp = nn::mlp_kind::gelu;
  CHECK(msg_of(c).find("field mlp") != std::string::npos);
  c = llama;
  c.bias = true;
  CHECK(msg_of(c).find("field bias") != std::string::npos);
  c = gpt2;
  c.n_kv_head = 2;
  CHECK(msg_of(c).find("field n_kv_head") != std::string::npos);
  c = gpt2;
  c.norm = nn::norm_kind::rms_norm;
  CHECK(msg_of(c).find("field norm") != std::string::npos);
  c = gpt2;
  c.mlp = nn::mlp_kind::swiglu;
  CHECK(msg_of(c).find("field mlp") != std::string::npos);
  // Mixtures of experts: llama.cpp's llama architecture gates with softmax top-k and has no
  // shared experts.
  const nn::dynamic_config moe = config_of(llama_moe, 256);
  CHECK(io::export_arch_of(moe) == io::export_arch::llama);
  c = moe;
  c.router = moe_router_kind::sigmoid_bias;
  CHECK(msg_of(c).find("field router") != std::string::npos);
  c = moe;
  c.router = moe_router_kind::noisy_topk;  // inference is softmax_topk: exportable
  CHECK(io::export_arch_of(c) == io::export_arch::llama);
  c = moe;
  c.n_shared_expert = 1;
  CHECK(msg_of(c).find("field n_shared_expert") != std::string::npos);
}

TEST_CASE("MoE export: GGUF tensors and keys of llama.cpp's layout; read back bitwise") {
  const trained& t = exported()[4];  // llama_moe
  REQUIRE(t.cfg.mlp == nn::mlp_kind::moe);
  const io::gguf_file f(t.dir + ".gguf");
  CHECK(f.get<index_t>("llama.expert_count") == 4);
  CHECK(f.get<index_t>("llama.expert_used_count") == 2);
  CHECK(f.get<index_t>("llama.feed_forward_length") == 24);
  const io::gguf_tensor_info* g = f.find_tensor("blk.1.ffn_gate_exps.weight");
  REQUIRE(g != nullptr);
  CHECK(g->extents() == std::vector<index_t>{4, 24, 32});
  const io::gguf_tensor_info* d = f.find_tensor("blk.1.ffn_down_exps.weight");
  REQUIRE(d != nullptr);
  CHECK(d->extents() == std::vector<index_t>{4, 32, 24});
  CHECK(f.find_tensor("blk.0.ffn_gate.weight") == nullptr);
  const io::gguf_file h(t.dir + "_f16.gguf");  // the router stays F32, as llama.cpp keeps it
  CHECK(h.find_tensor("blk.0.ffn_gate_inp.weight")->type == ggml_type::f32);
  CHECK(h.find_tensor("blk.0.ffn_up_exps.weight")->type == ggml_type::f16);
  // GGUF -> trainable model: the config and every parameter bitwise.
  const auto m = train::load_gguf_model(f);
  CHECK(m.config().mlp == nn::mlp_kind::moe);
  CHECK(m.config().n_expert == 4);
  CHECK(m.config().expert_ffn == 24);
  const io::export_model ck = io::read_export_model(t.dir);
  for (const auto& p : m.parameters()) {
    INFO(p.name);
    const auto& v = ck.weights.at(p.name).values;
    REQUIRE(static_cast<index_t>(v.size()) == p.data->size());
    CHECK(std::equal(v.begin(), v.end(), p.data->value.data()));
  }
  // The loaded model's logits are the training model's.
  tensor<std::int32_t, shape<dyn, dyn>> x(1, static_cast<index_t>(t.ids.size()));
  std::copy(t.ids.begin(), t.ids.end(), x.data());
  no_grad ng;
  const auto lg = m.forward(x);
  CHECK(max_abs_err(std::vector<float>(lg.value().data(), lg.value().data() + lg.size()),
                    t.logits) == 0.0);
  // The HF directory is Mixtral's.
  const std::string cfg = slurp(t.dir + "_hf/config.json");
  CHECK(cfg.find("\"MixtralForCausalLM\"") != std::string::npos);
  CHECK(cfg.find("\"num_local_experts\": 4") != std::string::npos);
}

TEST_CASE("parameters that do not fit the config are refused naming the parameter") {
  io::export_model m = io::read_export_model(exported()[0].dir);
  const std::string out = work_dir() + "/bad.gguf";
  auto missing = m;
  missing.weights.erase("h.1.mlp.up.weight");
  CHECK_THROWS_WITH_AS(io::export_gguf(missing, out), doctest::Contains("h.1.mlp.up.weight"),
                       value_error);
  auto extra = m;
  extra.weights["h.9.ln_1.weight"] = {{32}, std::vector<float>(32)};
  CHECK_THROWS_WITH_AS(io::export_hf(extra, work_dir() + "/bad_hf"),
                       doctest::Contains("h.9.ln_1.weight"), value_error);
  auto wrong = m;
  wrong.weights["ln_f.weight"] = {{31}, std::vector<float>(31)};
  CHECK_THROWS_WITH_AS(io::export_gguf(wrong, out), doctest::Contains("ln_f.weight"), value_error);
  CHECK_THROWS_AS(io::export_gguf(m, out, {.type = ggml_type::q8_0}), unsupported_error);
  CHECK_FALSE(std::filesystem::exists(out));
}

// ---- Python cross-checks (ctest tfm_test_export_python) ---------------------------------------

TEST_CASE("python: gguf-py and safetensors read the exports; numpy forwards match" *
          doctest::skip()) {
  const auto& all = exported();
  std::string names;
  for (const trained& t : all) names += " " + std::filesystem::path(t.dir).filename().string();
  const char* py = std::getenv("TFM_EXPORT_PYTHON");
  const std::string log = work_dir() + "/check_export.log";
  const std::string cmd = std::string(py != nullptr ? py : TFM_PYTHON) + " " + TFM_SOURCE_DIR +
                          "/tests/unit/export/check_export.py " + work_dir() + names + " > " + log +
                          " 2>&1";
  const int rc = run(cmd);
  const std::string out = slurp(log);
  if (rc == 77 || rc == 127 || rc == -1) {
    MESSAGE("TFM_SKIP: " << out);
    return;
  }
  MESSAGE(out);
  CHECK(rc == 0);
}

TEST_CASE("python: HF -> GGUF tensors equal the source safetensors (gguf-py, numpy permute)" *
          doctest::skip()) {
  // The conversions of the fixtures (GPT-2 F16 / BF16, Llama with GQA) in three element types.
  struct item {
    const char* fixture;
    const char* copy;
    ggml_type type;
  };
  std::string list = "[";
  for (const item it :
       {item{"gpt2_f16", "gpt2_f16", ggml_type::f32}, item{"gpt2_f16", "gpt2_f16", ggml_type::f16},
        item{"gpt2_bf16", "gpt2_bf16", ggml_type::bf16},
        item{"llama_f16", "llama_plain_py", ggml_type::f32},
        item{"llama_f16", "llama_plain_py", ggml_type::f16}}) {
    const std::string src = widened_copy(it.fixture, it.copy);
    if (std::string(it.copy) == "llama_plain_py")  // without rope_scaling and biases
      std::ofstream(src + "/config.json", std::ios::binary) << R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 16,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "max_position_embeddings": 64, "vocab_size": 256, "tie_word_embeddings": false})";
    const std::string out = work_dir() + "/py_hf2gguf_" + it.copy + "_" +
                            std::string(ggml_type_name(it.type)) + ".gguf";
    hf_to_gguf(src, out, it.type);
    list += std::string(list.size() > 1 ? ", " : "") + "[\"" + src + "\", \"" + out + "\"]";
  }
  std::ofstream(work_dir() + "/hf2gguf.json") << list << "]\n";
  const char* py = std::getenv("TFM_EXPORT_PYTHON");
  const std::string log = work_dir() + "/check_hf2gguf.log";
  const std::string cmd = std::string(py != nullptr ? py : TFM_PYTHON) + " " + TFM_SOURCE_DIR +
                          "/tests/unit/export/check_export.py " + work_dir() + " --hf2gguf > " +
                          log + " 2>&1";
  const int rc = run(cmd);
  const std::string out = slurp(log);
  if (rc == 77 || rc == 127 || rc == -1) {
    MESSAGE("TFM_SKIP: " << out);
    return;
  }
  MESSAGE(out);
  CHECK(rc == 0);
}

// ---- llama.cpp (ctest tfm_test_export_llamacpp; opt-in with TFM_LIVE_PEERS=1) -----------------

TEST_CASE("live: llama.cpp's perplexity of the exported GGUFs equals ours within 0.5%" *
          doctest::skip()) {
  if (std::getenv("TFM_LIVE_PEERS") == nullptr) {
    MESSAGE(
        "TFM_SKIP: the live comparison with llama.cpp is opt-in (scripts/test --live-peers, "
        "or TFM_LIVE_PEERS=1)");
    return;
  }
  const auto& all = exported();
  const std::string text_path = work_dir() + "/heldout.txt";
  const std::string text = corpus_text(777, 2500);
  std::ofstream(text_path, std::ios::binary) << text;
  const index_t ctx = 32;
  for (const trained& t : all) {
    const std::string gguf = t.dir + ".gguf";
    auto model = tfm::load_model(gguf);
    const auto gtok = io::load_gguf_tokenizer(gguf);
    const auto ids = gtok.encode(text, {.add_special = true, .parse_special = false});
    const auto ours = infer::perplexity(model, ids, ctx, gtok.add_bos() ? gtok.bos_id() : -1);
    const std::string log = work_dir() + "/llamacpp_" + std::to_string(ctx) + ".log";
    const std::string ids_path = work_dir() + "/llamacpp_ids.txt";
    const char* py = std::getenv("TFM_EXPORT_PYTHON");
    const std::string cmd = std::string(py != nullptr ? py : TFM_PYTHON) + " " + TFM_SOURCE_DIR +
                            "/bench/infer/export_vs_llamacpp.py --llamacpp-only " + gguf +
                            " --text " + text_path + " --ctx " + std::to_string(ctx) +
                            " --dump-ids " + ids_path + " > " + log + " 2>&1";
    const int rc = run(cmd);
    const std::string out = slurp(log);
    if (rc == 77 || rc == 127 || rc == -1) {
      MESSAGE("TFM_SKIP: llama-cpp-python is not available: " << out);
      return;
    }
    REQUIRE_MESSAGE(rc == 0, out);
    const auto at = out.rfind("PPL = ");
    REQUIRE(at != std::string::npos);
    const double theirs = std::strtod(out.c_str() + at + 6, nullptr);
    // llama.cpp's tokenizer on the exported vocabulary == the checkpoint's tokenizer.
    std::vector<std::int32_t> llama_ids;
    std::ifstream idf(ids_path);
    for (std::int32_t id; idf >> id;) llama_ids.push_back(id);
    CHECK(llama_ids == t.tok.encode(text));
    MESSAGE(std::filesystem::path(gguf).filename().string()
            << ": typeformer PPL " << ours.ppl << ", llama.cpp " << theirs << ", ratio "
            << ours.ppl / theirs);
    CHECK(std::abs(ours.ppl / theirs - 1) < 0.005);
  }
}

// ---- Hugging Face directory -> GGUF (infer/hf_export_import.hpp) ------------------------------

TEST_CASE("HF -> GGUF: from_rotate_half undoes to_rotate_half (LlamaModel.permute)") {
  const index_t heads = 3, D = 8, cols = 5;
  std::vector<float> v(static_cast<std::size_t>(heads * D * cols));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  const auto hf = io::detail::exporter::to_rotate_half(v, heads, D, cols);
  CHECK(io::detail::hf_importer::from_rotate_half(hf, heads, D, cols) == v);
  // convert_hf_to_gguf.py: w.reshape(H, 2, D/2, C).swapaxes(1, 2): gguf row 2i+s of head h is
  // hf row h D + s D/2 + i
  const auto g = io::detail::hf_importer::from_rotate_half(v, heads, D, cols);
  CHECK(g[static_cast<std::size_t>((1 * D + 2 * 3 + 1) * cols)] == v[(1 * D + 4 + 3) * cols]);
}

TEST_CASE("HF GPT-2 fixtures -> GGUF: tfm::load_model gives the numpy logits") {
  struct item {
    const char* fixture;
    ggml_type type;
  };
  for (const item it : {item{"gpt2_f16", ggml_type::f32}, item{"gpt2_f16", ggml_type::f16},
                        item{"gpt2_bf16", ggml_type::f32}, item{"gpt2_bf16", ggml_type::bf16}}) {
    const std::string src = widened_copy(it.fixture, it.fixture);
    const std::string out = work_dir() + "/hf2gguf_" + it.fixture + "_" +
                            std::string(ggml_type_name(it.type)) + ".gguf";
    hf_to_gguf(src, out, it.type);
    const hf_reference ref = hf_reference_of(it.fixture);
    const auto got = first_columns(all_logits(out, ref.prompt), 256, 64);
    REQUIRE(got.size() == ref.logits.size());
    const double rel = rel_err(got, ref.logits);
    MESSAGE(std::string(it.fixture)
            << " -> " << ggml_type_name(it.type) << " GGUF: max |logit - numpy| = "
            << max_abs_err(got, ref.logits) << ", relative " << rel);
    CHECK(rel < 4e-6);  // infer_hf's tolerance: float32 sums vs float64 (values are exact)
    CHECK(argmax_mismatches(got, ref.logits, 64) == 0);
    const io::gguf_file f(out);
    CHECK(f.get<std::string>("general.architecture") == "gpt2");
    CHECK(f.get<std::string>("general.name") == it.fixture);  // the directory's name
    CHECK(f.get<std::uint32_t>("gpt2.context_length") == 16);
    CHECK(f.get<std::vector<std::string>>("tokenizer.ggml.tokens").size() == 256);
    CHECK(f.find_tensor("blk.1.attn_qkv.weight")->type == it.type);
    CHECK(f.find_tensor("blk.1.attn_qkv.bias")->type == ggml_type::f32);
  }
}

TEST_CASE("HF Llama -> GGUF: interleaved q/k rows give the HF engine's rotate_half logits") {
  // llama_f16 (GQA 4/2, F16) without the rope_scaling and biases io::export_model cannot
  // express; the unused bias tensors stay in the file and are ignored by both readers.
  const std::string src = widened_copy("llama_f16", "llama_plain");
  std::ofstream(src + "/config.json", std::ios::binary) << R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
  "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 64, "vocab_size": 256,
  "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "rope_scaling": null,
  "tie_word_embeddings": false, "attention_bias": false, "hidden_act": "silu",
  "_name_or_path": "fixtures/llama-plain", "torch_dtype": "float16"
})";
  const std::vector<std::int32_t> ids = hf_reference_of("llama_f16").prompt;
  const auto want = all_logits(src, ids);  // infer/hf_model.hpp: rope style::half
  for (ggml_type t : {ggml_type::f32, ggml_type::f16}) {
    const std::string out = hf_to_gguf(
        src, work_dir() + "/hf2gguf_llama_" + std::string(ggml_type_name(t)) + ".gguf", t);
    const auto got = all_logits(out, ids);
    REQUIRE(got.size() == want.size());
    const double rel = rel_err(got, want);
    MESSAGE("llama_plain -> " << ggml_type_name(t) << " GGUF: max |logit - HF engine| = "
                              << max_abs_err(got, want) << ", relative " << rel);
    CHECK(rel < 4e-6);
    CHECK(argmax_mismatches(got, want, 256) == 0);
    const io::gguf_file f(out);
    CHECK(f.get<std::string>("general.name") == "llama-plain");  // from _name_or_path
    CHECK(f.get<std::uint32_t>("llama.attention.head_count_kv") == 2);
    CHECK(f.get<float>("llama.attention.layer_norm_rms_epsilon") == 1e-6f);
  }
  // without the permutation the logits would differ: the GGUF engine on the HF rows as stored
  io::export_model m = io::read_hf_export_model(src);
  for (index_t l = 0; l < 2; ++l) {
    auto& qkv = m.weights.at("h." + std::to_string(l) + ".attn.c_attn.weight").values;
    const std::size_t qk = static_cast<std::size_t>((4 + 2) * 8 * 32);
    const std::vector<float> head(qkv.begin(), qkv.begin() + qk);
    auto back = io::detail::exporter::to_rotate_half(
        std::vector<float>(head.begin(), head.begin() + 4 * 8 * 32), 4, 8, 32);
    auto back_k = io::detail::exporter::to_rotate_half(
        std::vector<float>(head.begin() + 4 * 8 * 32, head.end()), 2, 8, 32);
    std::copy(back.begin(), back.end(), qkv.begin());
    std::copy(back_k.begin(), back_k.end(), qkv.begin() + 4 * 8 * 32);
  }
  io::export_gguf(m, work_dir() + "/hf2gguf_llama_unpermuted.gguf");
  const auto wrong = all_logits(work_dir() + "/hf2gguf_llama_unpermuted.gguf", ids);
  MESSAGE("unpermuted rows: relative logit error " << rel_err(wrong, want));
  CHECK(rel_err(wrong, want) > 1e-3);
}

TEST_CASE("checkpoint -> HF -> GGUF equals checkpoint -> GGUF byte for byte") {
  for (const trained& t : exported()) {
    const std::string name = std::filesystem::path(t.dir).filename().string();
    INFO(name);
    const io::export_model m = io::read_hf_export_model(t.dir + "_hf");
    CHECK(m.config.tie_embeddings == t.cfg.tie_embeddings);
    CHECK(m.config.n_kv_head == t.cfg.n_kv_head);
    const std::string a = t.dir + "_hf.gguf", b = t.dir + "_hf_f16.gguf";
    io::export_gguf(m, a);
    io::export_gguf(m, b, {.type = ggml_type::f16});
    CHECK(slurp(a) == slurp(t.dir + ".gguf"));
    CHECK(slurp(b) == slurp(t.dir + "_f16.gguf"));
    // from the BF16 directory: the norms were rounded to bf16 on the way; logits stay close
    const std::string c = hf_to_gguf(t.dir + "_hf_bf16", t.dir + "_hf_bf16.gguf", ggml_type::bf16);
    const auto got = engine_logits(c, t.ids);
    REQUIRE(got.size() == t.logits.size());
    const double e = rel_err(got, t.logits);
    MESSAGE(name << "_hf_bf16 -> bf16 GGUF: relative logit error " << e);
    CHECK(e < 3e-2);
  }
}

TEST_CASE("HF -> GGUF refusals and errors name the file and the key or tensor") {
  namespace fs = std::filesystem;
  auto message = [](const std::string& dir) -> std::string {
    try {
      (void)io::read_hf_export_model(dir);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "(no error)";
  };
  auto one_line = [](const std::string& m) { return m.find('\n') == std::string::npos; };
  // no config.json
  const std::string empty = work_dir() + "/hf_src/empty";
  fs::create_directories(empty);
  CHECK_THROWS_AS(io::read_hf_export_model(empty), io_error);
  std::string m = message(empty);
  CHECK(m.find("config.json") != std::string::npos);
  CHECK_FALSE(io::is_hf_directory(empty));
  CHECK(io::is_hf_directory(hf_data() + "/gpt2_f16"));
  // what nn::gpt cannot express: head_dim (llama_f32), rope_scaling (llama_f16)
  m = message(hf_data() + "/llama_f32");
  CHECK(m.find("llama_f32/config.json': head_dim = 12") != std::string::npos);
  m = message(hf_data() + "/llama_f16");
  CHECK(m.find("llama_f16/config.json': rope_scaling") != std::string::npos);
  // unknown architecture
  const std::string mistral = fixture_copy("gpt2_f16", "mistral");
  std::ofstream(mistral + "/config.json") << R"({"architectures": ["MistralForCausalLM"]})";
  CHECK_THROWS_AS(io::read_hf_export_model(mistral), unsupported_error);
  m = message(mistral);
  CHECK(m.find("mistral/config.json") != std::string::npos);
  CHECK(m.find("MistralForCausalLM") != std::string::npos);
  // a missing tensor: named with the safetensors file
  const std::string missing = fixture_copy("gpt2_f16", "missing_tensor");
  {
    const auto st = io::safetensors::open(hf_data() + "/gpt2_f16");
    io::safetensors::writer w;
    for (const auto& f : st.shards())
      for (const auto& t : f.tensors())
        if (t.name != "transformer.h.1.mlp.c_fc.bias") w.add(t.name, t.type, t.shape, t.bytes);
    w.save(missing + "/model.safetensors");
  }
  CHECK_THROWS_AS(io::read_hf_export_model(missing), parse_error);
  m = message(missing);
  CHECK(m.find("missing_tensor/model.safetensors': tensor 'transformer.h.1.mlp.c_fc.bias' is "
               "missing") != std::string::npos);
  // no tokenizer.json (gpt2_bf16 as committed)
  m = message(hf_data() + "/gpt2_bf16");
  CHECK(m.find("no tokenizer.json") != std::string::npos);
  // a toy vocabulary without every byte token (the committed gpt2_f16 fixture)
  m = message(hf_data() + "/gpt2_f16");
  CHECK(m.find("gpt2_f16/tokenizer.json': the vocabulary has no token for the byte 0x00") !=
        std::string::npos);
  // SmolLM's Digits + ByteLevel is carried: bpe_tokenizer::split_digits(), GGUF pre "smollm"
  const std::string smol = widened_copy("gpt2_f16", "smollm_pre");
  {
    std::string tj = slurp(smol + "/tokenizer.json");
    const auto root = tfm::detail::json::parse(tj, "tokenizer.json");
    const auto* pre = root.find("pre_tokenizer");
    REQUIRE(pre != nullptr);
    const std::string from = R"("pre_tokenizer":)";
    const auto at = tj.find(from);
    REQUIRE(at != std::string::npos);
    const auto end = tj.find('}', at);
    tj.replace(at, end + 1 - at,
               R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", )"
               R"("individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, )"
               R"("trim_offsets": true, "use_regex": true}]})");
    std::ofstream(smol + "/tokenizer.json", std::ios::binary) << tj;
  }
  const io::export_model sm = io::read_hf_export_model(smol);
  CHECK(sm.tokenizer.split_digits());
  CHECK(sm.tokenizer.encode("x 12  3") ==
        std::vector<std::int32_t>{'x', ' ', '1', '2', ' ', ' ', '3'});
  io::export_gguf(sm, work_dir() + "/smollm_pre.gguf");
  CHECK(io::gguf_file(work_dir() + "/smollm_pre.gguf").get<std::string>("tokenizer.ggml.pre") ==
        "smollm");
  for (const std::string& d : {empty, hf_data() + "/llama_f32", mistral, missing}) {
    INFO(message(d));
    CHECK(one_line(message(d)));
  }
}

// ---- a full fine-tune written as a GGUF (train/finetune_export.hpp) ---------------------------

namespace {

/// Whether b has every metadata key of a with the same type and bytes, and no other key, except
/// the keys in `skip`.
std::string metadata_difference(const io::gguf_file& a, const io::gguf_file& b,
                                const std::vector<std::string>& skip) {
  auto skipped = [&](std::string_view k) {
    return std::find(skip.begin(), skip.end(), k) != skip.end();
  };
  std::size_t na = 0, nb = 0;
  for (const auto& kv : a.metadata()) {
    if (skipped(kv.key)) continue;
    ++na;
    const io::gguf_kv* o = b.find(kv.key);
    if (o == nullptr) return "key " + std::string(kv.key) + " is missing";
    const auto x = kv.value.raw_bytes(), y = o->value.raw_bytes();
    if (o->value.type() != kv.value.type() || !std::equal(x.begin(), x.end(), y.begin(), y.end()))
      return "key " + std::string(kv.key) + " differs";
  }
  for (const auto& kv : b.metadata()) nb += !skipped(kv.key);
  return na == nb ? "" : "the output has keys the source lacks";
}

/// `from` with tokenizer.chat_template and general.author added (export_gguf writes neither).
void with_template(const std::string& from, const std::string& to) {
  const io::gguf_file f(from);
  io::gguf_writer w(to);
  for (const auto& kv : f.metadata()) w.add(kv.key, kv.value);
  w.add("tokenizer.chat_template",
        std::string("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                    "<|im_end|>\n{% endfor %}"));
  w.add("general.author", std::string("typeformer tests"));
  for (const auto& t : f.tensors())
    w.add_tensor_info(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims), t.type);
  w.write_header();
  for (const auto& t : f.tensors()) w.write_tensor_data(f.tensor_data(t));
  w.finish();
}

std::vector<float> nn_logits(const train::pretrained_model& m,
                             const std::vector<std::int32_t>& ids) {
  train::pretrained_model::ids_type x(dyn_shape<2>(1, static_cast<index_t>(ids.size())));
  std::copy(ids.begin(), ids.end(), x.data());
  no_grad ng;
  auto lg = m.forward(x);
  return {lg.value().data(), lg.value().data() + lg.size()};
}

}  // namespace

TEST_CASE("full fine-tune -> GGUF: the engine gives the trained logits; the tokenizer is kept") {
  auto g = tfm_test::rng(21);
  for (const trained& t : {exported()[0], exported()[1]}) {  // llama_bpe, llama_bytes_tied
    const std::string name = std::filesystem::path(t.dir).filename().string();
    INFO(name);
    const std::string src = work_dir() + "/ft_" + name + "_src.gguf";
    with_template(t.dir + "_f16.gguf", src);  // F16 matrices, F32 norms
    const io::gguf_file f(src);
    auto m = train::load_gguf_model(f);
    // "Training": every parameter moves.
    std::normal_distribution<float> noise(0.0f, 0.02f);
    for (auto& p : m.parameters())
      for (index_t i = 0; i < p.data->size(); ++i) p.data->value.data()[i] += noise(g);
    const auto ours = nn_logits(m, t.ids);

    const std::string out = work_dir() + "/ft_" + name + "_f32.gguf";
    train::save_finetuned_gguf(f, m, out, {.type = ggml_type::f32});
    const auto engine = engine_logits(out, t.ids);
    REQUIRE(engine.size() == ours.size());
    const double e = max_abs_err(engine, ours);
    MESSAGE(name << ": engine vs trained nn::gpt logits, max |diff| " << e << ", relative "
                 << rel_err(engine, ours));
    CHECK(e < 1e-5);
    // The parameters read back bitwise; the tokenizer and template are the source's.
    const io::gguf_file back(out);
    const auto m2 = train::load_gguf_model(back);
    const auto a = m.parameters(), b = m2.parameters();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].name);
      CHECK(std::equal(a[i].data->value.data(), a[i].data->value.data() + a[i].data->size(),
                       b[i].data->value.data()));
    }
    CHECK(metadata_difference(f, back, {"general.file_type"}) == "");
    CHECK(back.get<std::uint32_t>("general.file_type") == 0);
    CHECK(back.get<std::string>("tokenizer.chat_template").find("<|im_start|>") !=
          std::string::npos);
    const auto tok_src = io::load_gguf_tokenizer(f), tok_out = io::load_gguf_tokenizer(back);
    CHECK(tok_out.encode(sample_text) == tok_src.encode(sample_text));
    for (const auto& ti : back.tensors()) CHECK(ti.type == ggml_type::f32);

    // Default types: the source's F16 matrices stay F16 (values = the trained ones rounded).
    const std::string keep = work_dir() + "/ft_" + name + "_keep.gguf";
    train::save_finetuned_gguf(f, m, keep);
    const io::gguf_file k(keep);
    CHECK(metadata_difference(f, k, {}) == "");
    for (const auto& ti : k.tensors()) {
      INFO(ti.name);
      CHECK(ti.type == f.find_tensor(ti.name)->type);
    }
    const auto m3 = train::load_gguf_model(k);
    const auto c = m3.parameters();
    bool rounded = true;
    for (std::size_t i = 0; i < a.size(); ++i) {
      const bool matrix = a[i].data->extents.size() == 2;
      for (index_t j = 0; j < a[i].data->size(); ++j) {
        const float v = a[i].data->value.data()[j];
        const float want = matrix ? static_cast<float>(f16(v)) : v;
        rounded = rounded && c[i].data->value.data()[j] == want;
      }
    }
    CHECK(rounded);
  }
  // A model of another shape is refused naming the tensor it lacks.
  const io::gguf_file f(work_dir() + "/ft_llama_bpe_src.gguf");
  auto cfg = train::gguf_config(f);
  cfg.n_layer = 1;
  train::pretrained_model one(cfg, 3);
  CHECK_THROWS_WITH_AS(train::save_finetuned_gguf(f, one, work_dir() + "/never.gguf"),
                       doctest::Contains("blk.1."), value_error);
}

// ---- SmolLM2 (ctest tfm_test_export_smollm2; SKIP without the model) --------------------------

TEST_CASE("smollm2: a full fine-tune as GGUF keeps every key; GGUF -> HF carries the tokenizer" *
          doctest::skip()) {
  const std::string path = tfm_test::smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const io::gguf_file f(path);
  const std::vector<std::int32_t> prompt{1, 9690, 198, 2683, 359, 253, 5356, 5646, 11, 2, 28};
  const std::string chat =
      "<|im_start|>user\nWhat is 1234 + 5678?  def f(x): return x**2 # naïve café 北京<|im_end|>\n";
  const auto tok_src = io::load_gguf_tokenizer(f);
  {
    auto m = train::load_gguf_model(f, 64);
    for (auto& p : m.parameters())  // a "trained" model: the final norm moved
      if (p.name == "ln_f.weight")
        for (index_t i = 0; i < p.data->size(); ++i) p.data->value.data()[i] *= 1.01f;
    const auto ours = nn_logits(m, prompt);
    const std::string out = work_dir() + "/smollm2_full_ft.gguf";
    train::save_finetuned_gguf(f, m, out, {.type = ggml_type::f16});
    {
      const io::gguf_file g(out);
      CHECK(metadata_difference(f, g, {"general.file_type", "general.quantization_version"}) == "");
      CHECK(g.get<std::uint32_t>("general.file_type") == 1);
      CHECK(g.get<std::string>("tokenizer.chat_template") ==
            f.get<std::string>("tokenizer.chat_template"));
      CHECK(io::load_gguf_tokenizer(g).encode(chat, {.parse_special = true}) ==
            tok_src.encode(chat, {.parse_special = true}));
      const auto engine = engine_logits(out, prompt);
      REQUIRE(engine.size() == ours.size());
      const double e = rel_err(engine, ours);
      MESSAGE("SmolLM2 full fine-tune -> F16 GGUF: engine vs nn::gpt relative logit error " << e);
      CHECK(e < 1e-2);
    }
    std::filesystem::remove(out);
  }
  // GGUF -> HF directory (`tfm convert SmolLM2.gguf DIR`): pre "smollm" is carried as
  // [Digits, ByteLevel]; BOS/EOS/padding and the chat template go to config.json and
  // tokenizer_config.json.
  const io::export_model em = io::read_export_model(f);
  CHECK(em.tokenizer.split_digits());
  CHECK(em.bos == 1);
  CHECK(em.eos == 2);
  CHECK(em.pad == 2);
  const std::string dir = work_dir() + "/smollm2_hf";
  io::export_hf(em, dir, {.type = ggml_type::bf16});
  const std::string cfg = slurp(dir + "/config.json"), tc = slurp(dir + "/tokenizer_config.json");
  CHECK(cfg.find("\"bos_token_id\": 1,") != std::string::npos);
  CHECK(cfg.find("\"eos_token_id\": 2,") != std::string::npos);
  CHECK(cfg.find("\"pad_token_id\": 2,") != std::string::npos);
  CHECK(tc.find("\"bos_token\": \"<|im_start|>\"") != std::string::npos);
  CHECK(tc.find("\"eos_token\": \"<|im_end|>\"") != std::string::npos);
  CHECK(tc.find("\"chat_template\": ") != std::string::npos);
  const auto hf_tok = bpe_tokenizer::from_hf_json_file(dir + "/tokenizer.json");
  CHECK(hf_tok.encode(chat, allowed_specials::all()) ==
        tok_src.encode(chat, {.parse_special = true}));
  // The engine on the directory gives the GGUF's logits (bf16 weights: rounding only).
  const auto from_hf = all_logits(dir, prompt), from_gguf = all_logits(path, prompt);
  const double e = rel_err(from_hf, from_gguf);
  MESSAGE("SmolLM2 GGUF -> BF16 HF directory: engine logits relative error " << e);
  CHECK(e < 3e-2);
  std::filesystem::remove_all(dir);
}
