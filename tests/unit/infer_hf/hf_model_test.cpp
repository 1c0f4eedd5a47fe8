// Hugging Face directories and gpt2 GGUF files in the tape-free engine, against the numpy
// float64 forward of tests/data/infer_hf/make_fixtures.py (logits stored as float32) (Hugging
// Face's modeling_llama / modeling_gpt2 definitions; committed fixtures, seed 20261207 printed by
// the script): every position's logits from one prefill, and from a prefill of one token followed
// by decode steps, on the cpu and the reference backends. Also: the tokenizer.json adapter against
// the ids of the `tokenizers` package, and the loader's errors (unknown architecture, missing
// tensor, wrong shape), each naming the file and the key or tensor.
#include "tfm_test.hpp"
#include "typeformer/infer/model.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#ifndef TFM_INFER_HF_WORK_DIR  // set by CMakeLists.txt
#define TFM_INFER_HF_WORK_DIR "infer_hf_work"
#endif
#ifndef TFM_PYTHON
#define TFM_PYTHON "python3"
#endif

using namespace tfm;
namespace fs = std::filesystem;

namespace {

std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/infer_hf"; }

std::string work_dir() {
  fs::create_directories(TFM_INFER_HF_WORK_DIR);
  return TFM_INFER_HF_WORK_DIR;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct reference {
  std::vector<std::int32_t> prompt;
  std::map<std::string, std::vector<double>> logits;  // model -> (T * V) row-major
  tfm::detail::json::value root;
};

const reference& ref() {
  static const reference r = [] {
    reference out;
    const std::string path = data_dir() + "/reference.json";
    out.root = tfm::detail::json::parse(read_file(path), path);
    for (const auto& v : out.root.find("prompt")->array)
      out.prompt.push_back(static_cast<std::int32_t>(v.integer));
    const std::string blob = read_file(data_dir() + "/logits.f32");
    const std::size_t per_model = out.prompt.size() * 64;  // every fixture has 64 rows
    const auto& names = out.root.find("models")->array;
    REQUIRE(blob.size() == names.size() * per_model * sizeof(float));
    for (std::size_t m = 0; m < names.size(); ++m) {
      std::vector<double>& dst = out.logits[names[m].string];
      for (std::size_t i = 0; i < per_model; ++i) {
        float x;
        std::memcpy(&x, blob.data() + (m * per_model + i) * sizeof(float), sizeof(float));
        dst.push_back(x);
      }
    }
    return out;
  }();
  return r;
}

struct errors {
  double max_abs = 0, rel = 0;
  int argmax_mismatch = 0;
};

/// max |a - b|, that over max |b|, and the rows whose argmax differ (rows of V values).
errors compare(const std::vector<float>& a, const std::vector<double>& b, std::size_t V) {
  errors e;
  double den = 0;
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < b.size(); ++i) {
    e.max_abs = std::max(e.max_abs, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  e.rel = e.max_abs / den;
  for (std::size_t r = 0; r < b.size() / V; ++r) {
    const auto ia = std::max_element(a.begin() + r * V, a.begin() + (r + 1) * V) - a.begin();
    const auto ib = std::max_element(b.begin() + r * V, b.begin() + (r + 1) * V) - b.begin();
    e.argmax_mismatch += ia != ib;
  }
  return e;
}

template <class T, class B>
std::vector<float> prefill_all(const infer::transformer<T, B>& m,
                               const std::vector<std::int32_t>& ids) {
  infer::session s(m);
  const auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

/// The first token by prefill, the others by decode(): every position's logits.
template <class T, class B>
std::vector<float> decode_all(const infer::transformer<T, B>& m,
                              const std::vector<std::int32_t>& ids) {
  infer::session s(m, {.context = 16, .batch = 4});
  std::vector<float> out;
  auto lg = s.prefill(std::vector<std::int32_t>{ids[0]});
  out.insert(out.end(), lg.begin(), lg.end());
  for (std::size_t t = 1; t < ids.size(); ++t) {
    lg = s.decode(ids[t]);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

std::string model_path(const std::string& name) { return data_dir() + "/" + name; }

/// Loads `name` on both backends and checks prefill and decode against the numpy logits.
void check_model(const std::string& name, const std::string& ref_name) {
  const std::string path = model_path(name);
  const auto cpu_model = load_model(path);
  const auto ref_model = fs::is_directory(path)
                             ? infer::load_hf_dir<tfm::reference>(path)
                             : infer::transformer<float, tfm::reference>::from_gguf(path);
  const std::vector<double>& want = ref().logits.at(ref_name);
  const auto V = static_cast<std::size_t>(cpu_model.config().vocab);
  const errors pc = compare(prefill_all(cpu_model, ref().prompt), want, V);
  const errors dc = compare(decode_all(cpu_model, ref().prompt), want, V);
  const errors pr = compare(prefill_all(ref_model, ref().prompt), want, V);
  const errors dr = compare(decode_all(ref_model, ref().prompt), want, V);
  MESSAGE(name << ": max |logit - numpy| = " << pc.max_abs << " prefill, " << dc.max_abs
               << " decode (cpu); " << pr.max_abs << ", " << dr.max_abs
               << " (reference); relative to max |logit| " << pc.rel);
  for (const errors& e : {pc, dc, pr, dr}) {
    CHECK(e.rel < 4e-6);  // float32 sums vs float64; measured <= 1.4e-6
    CHECK(e.argmax_mismatch == 0);
  }
}

}  // namespace

TEST_CASE("HF LlamaForCausalLM directories: logits equal the numpy forward (F32, F16)") {
  check_model("llama_f32", "llama_f32");
  check_model("llama_f16", "llama_f16");
  const auto a = load_model(model_path("llama_f32"));
  const infer::model_config& c = a.config();
  CHECK(c.architecture == "llama");
  CHECK(c.n_head == 2);
  CHECK(c.n_kv_head == 1);
  CHECK(c.head_dim == 12);  // config.json head_dim, not hidden / heads = 16
  CHECK(c.rope.pair_style == rope_config::style::half);
  CHECK(c.rope.base == 500000.0);
  CHECK(c.tied_output);
  CHECK(a.output().data() == a.token_embd().data());
  CHECK(a.block(0).wq.type() == ggml_type::f32);
  CHECK_FALSE(a.block(0).wq.owned());  // used in place in the mapping
  const auto b = load_model(model_path("llama_f16"));
  CHECK(b.config().qkv_bias);
  CHECK(b.config().out_bias);
  CHECK(b.config().rope.scale_kind == rope_config::scaling::linear);
  CHECK(b.config().rope.factor == 2.0);
  CHECK_FALSE(b.config().tied_output);
  CHECK(b.block(1).wv.type() == ggml_type::f16);  // 16-bit stays 16-bit
  CHECK_FALSE(b.block(1).wv.owned());
  CHECK(b.stats().bytes_allocated < b.stats().bytes_borrowed);
  CHECK(b.file() != nullptr);
  CHECK(b.file()->get<std::string_view>("general.architecture") == "llama");
  CHECK(b.file()->get<std::uint32_t>("llama.attention.head_count_kv") == 2);
}

TEST_CASE("HF GPT2LMHeadModel directories: logits equal the numpy forward (F16, BF16)") {
  check_model("gpt2_f16", "gpt2_f16");
  check_model("gpt2_bf16", "gpt2_bf16");
  const auto m = load_model(model_path("gpt2_f16"));
  const infer::model_config& c = m.config();
  CHECK(c.architecture == "gpt2");
  CHECK(c.norm == nn::norm_kind::layer_norm);
  CHECK(c.mlp == nn::mlp_kind::gelu);
  CHECK(c.position == nn::position_kind::learned);
  CHECK(c.ffn == 4 * c.n_embd);  // n_inner null
  CHECK(c.tied_output);
  CHECK(m.block(0).wq.type() == ggml_type::f16);  // the Conv1D transpose keeps f16
  CHECK(m.block(0).wq.owned());
  CHECK(m.block(0).wk.data() ==
        static_cast<const unsigned char*>(m.block(0).wq.data()) + 2 * c.n_embd * c.n_embd);
  const auto b = load_model(model_path("gpt2_bf16"));
  CHECK(b.block(1).w_down.type() == ggml_type::bf16);
  CHECK(b.token_embd().type() == ggml_type::bf16);
  CHECK_FALSE(b.token_embd().owned());
  CHECK_FALSE(b.config().tied_output);
  // learned positions end at n_positions
  CHECK_THROWS_WITH_AS(infer::session(b, {.context = 17}),
                       doctest::Contains("exceeds the 16 learned positions"), value_error);
  infer::session s(b);
  CHECK(s.capacity() == 16);
}

TEST_CASE("gpt2 GGUF (llama.cpp layout, gguf-py writer): logits equal the numpy forward") {
  check_model("gpt2_f16.gguf", "gpt2_bf16");  // the same weights as gpt2_bf16
  const auto m = load_model(model_path("gpt2_f16.gguf"));
  const infer::model_config& c = m.config();
  CHECK(c.architecture == "gpt2");
  CHECK(c.n_embd == 24);
  CHECK(c.ffn == 32);
  CHECK(c.context_length == 16);
  CHECK(c.norm_bias);
  CHECK_FALSE(c.tied_output);
  CHECK(m.block(0).wq.type() == ggml_type::f16);
  CHECK_FALSE(m.block(0).wq.owned());  // a view of attn_qkv in the mapping
  CHECK(m.block(0).wv.rows() == c.n_embd);
  // generation runs through the public entry points, and slides past the 16 positions
  infer::generation_options go;
  const auto out = infer::generate(m, ref().prompt, 20, {.temperature = 0}, {}, go);
  CHECK(out.size() == 20);
}

TEST_CASE("a directory's tokenizer.json becomes GGUF tokenizer metadata (ids of `tokenizers`)") {
  const auto m = load_model(model_path("gpt2_f16"));
  const vocab_tokenizer tok = io::load_gguf_tokenizer(*m.file());
  const auto& root = ref().root;
  CHECK(tok.eos_id() == root.find("eos")->integer);
  CHECK(m.file()->get<std::string_view>("tokenizer.ggml.pre") == "gpt2");
  CHECK(m.file()->contains("tokenizer.chat_template"));
  for (const auto& c : root.find("tokenizer")->array) {
    std::vector<std::int32_t> want;
    for (const auto& v : c.find("ids")->array) want.push_back(static_cast<std::int32_t>(v.integer));
    const std::string& text = c.find("text")->string;
    CAPTURE(text);
    CHECK(tok.encode(text, {.add_special = false, .parse_special = true}) == want);
    CHECK(tok.decode(want, true) == text);
  }
  // a directory without tokenizer.json: the metadata says why there is no tokenizer
  const auto l = load_model(model_path("llama_f32"));
  CHECK_FALSE(l.file()->contains("tokenizer.ggml.model"));
  CHECK_THROWS_WITH_AS(io::load_gguf_tokenizer(*l.file()),
                       doctest::Contains("no tokenizer: the directory has no tokenizer.json"),
                       parse_error);
}

namespace {

/// A copy of fixture directory `from` in the work area as `to`, config.json replaced by
/// `config` when not empty, and the safetensors rewritten by `edit` (given a writer holding
/// nothing and the original set) when set.
template <class Edit>
std::string variant(const std::string& from, const std::string& to, const std::string& config,
                    Edit edit) {
  const std::string dir = work_dir() + "/" + to;
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(model_path(from) + "/config.json", dir + "/config.json");
  if (!config.empty()) std::ofstream(dir + "/config.json", std::ios::binary) << config;
  const auto st = io::safetensors::tensor_set::open(model_path(from));
  io::safetensors::writer w;
  edit(w, st);
  w.save(dir + "/model.safetensors");
  return dir;
}

void copy_all_but(io::safetensors::writer& w, const io::safetensors::tensor_set& st,
                  const std::string& skip) {
  for (const auto& f : st.shards())
    for (const auto& t : f.tensors())
      if (t.name != skip) w.add(t.name, t.type, t.shape, t.bytes);
}

}  // namespace

TEST_CASE("a sharded checkpoint (model.safetensors.index.json) loads as the single file does") {
  const std::string dir = work_dir() + "/llama_sharded";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(model_path("llama_f16") + "/config.json", dir + "/config.json");
  const auto st = io::safetensors::tensor_set::open(model_path("llama_f16"));
  io::safetensors::writer w;
  copy_all_but(w, st, "");
  const auto shards = w.save_sharded(dir, 8 * 1024);
  MESSAGE(shards.size() << " shards");
  REQUIRE(shards.size() > 2);
  const auto m = load_model(dir);
  const errors e = compare(prefill_all(m, ref().prompt), ref().logits.at("llama_f16"), 64);
  CHECK(e.rel < 4e-6);
  CHECK(e.argmax_mismatch == 0);
}

TEST_CASE("HF directory errors name the file and the key or tensor") {
  const std::string cfg = read_file(model_path("llama_f32") + "/config.json");
  std::string other = cfg;
  other.replace(other.find("LlamaForCausalLM"), 16, "MambaForCausalLM");
  const std::string d1 = variant("llama_f32", "unknown_arch", other,
                                 [](auto& w, const auto& st) { copy_all_but(w, st, ""); });
  const std::string m1 = d1 + "/config.json': architectures \"MambaForCausalLM\" is not supported";
  CHECK_THROWS_WITH_AS(load_model(d1), doctest::Contains(m1.c_str()), unsupported_error);

  std::string no_heads = cfg;
  no_heads.replace(no_heads.find("\"num_attention_heads\""), 21, "\"num_attention_headz\"");
  const std::string d2 = variant("llama_f32", "missing_key", no_heads,
                                 [](auto& w, const auto& st) { copy_all_but(w, st, ""); });
  CHECK_THROWS_WITH_AS(load_model(d2),
                       doctest::Contains("config.json': \"num_attention_heads\" is missing"),
                       parse_error);

  const std::string d3 = variant("llama_f32", "missing_tensor", "", [](auto& w, const auto& st) {
    copy_all_but(w, st, "model.layers.1.mlp.up_proj.weight");
  });
  const std::string m3 =
      d3 + "/model.safetensors': tensor 'model.layers.1.mlp.up_proj.weight' is missing";
  CHECK_THROWS_WITH_AS(load_model(d3), doctest::Contains(m3.c_str()), parse_error);

  std::vector<float> wrong(32 * 32, 0.5f);
  const std::string d4 = variant("llama_f32", "wrong_shape", "", [&](auto& w, const auto& st) {
    copy_all_but(w, st, "model.layers.0.self_attn.k_proj.weight");
    w.add("model.layers.0.self_attn.k_proj.weight", io::safetensors::dtype::f32, {32, 32},
          std::as_bytes(std::span<const float>(wrong)));
  });
  const std::string m4 = d4 +
                         "/model.safetensors': tensor 'model.layers.0.self_attn.k_proj.weight' "
                         "has shape [32, 32]; config.json implies [12, 32]";
  CHECK_THROWS_WITH_AS(load_model(d4), doctest::Contains(m4.c_str()), shape_error);

  std::string act = read_file(model_path("gpt2_bf16") + "/config.json");
  act.replace(act.find("gelu_new"), 8, "relu");
  const std::string d5 = variant("gpt2_bf16", "bad_act", act,
                                 [](auto& w, const auto& st) { copy_all_but(w, st, ""); });
  CHECK_THROWS_WITH_AS(load_model(d5), doctest::Contains("activation_function \"relu\""),
                       unsupported_error);
  CHECK_THROWS_AS(load_model(work_dir() + "/no_such_dir/"), tfm::error);
}

TEST_CASE("smollm2_hf: SmolLM2 as an HF directory gives the GGUF's logits, ids and text" *
          doctest::skip()) {
  const std::string gguf = tfm_test::smollm2_path();
  if (!fs::exists(gguf)) {
    MESSAGE("TFM_SKIP: " << gguf << " is absent (scripts/fetch-models)");
    return;
  }
  // The directory: the GGUF's weights dequantized to F32, q/k rows un-permuted back to HF's
  // order, tokenizer.json from the GGUF vocabulary (tests/data/infer_hf/gguf_to_hf.py).
  const std::string dir = work_dir() + "/smollm2_hf";
  if (!fs::exists(dir + "/tokenizer_config.json")) {
    const std::string cmd =
        std::string(TFM_PYTHON) + " " + data_dir() + "/gguf_to_hf.py '" + gguf + "' '" + dir + "'";
    if (std::system(cmd.c_str()) != 0) {
      MESSAGE("TFM_SKIP: " << cmd << " failed (needs python3 with numpy and gguf)");
      return;
    }
  }
  const auto g = load_model(gguf);
  const auto h = load_model(dir);
  CHECK(h.config().rope.pair_style == rope_config::style::half);
  CHECK(g.config().rope.pair_style == rope_config::style::interleaved);
  CHECK(h.config().n_kv_head == 3);
  CHECK(h.config().tied_output);
  const std::vector<std::int32_t> prompt{504, 3575, 282, 4649, 314};  // "The capital of France is"
  const std::vector<float> lg = prefill_all(g, prompt), lh = prefill_all(h, prompt);
  double max_diff = 0, max_abs = 0;
  for (std::size_t i = 0; i < lg.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(lg[i]) - lh[i]));
    max_abs = std::max(max_abs, std::abs(static_cast<double>(lg[i])));
  }
  std::vector<double> lgd(lg.begin(), lg.end());
  const errors e = compare(lh, lgd, 49152);
  MESSAGE("smollm2 HF dir vs GGUF: max |logit diff| = " << max_diff << " (max |logit| " << max_abs
                                                        << "); argmax differs at "
                                                        << e.argmax_mismatch << " of 5 positions");
  CHECK(max_diff < 1e-3);
  CHECK(e.argmax_mismatch == 0);
  const vocab_tokenizer tg = io::load_gguf_tokenizer(*g.file());
  const vocab_tokenizer th = io::load_gguf_tokenizer(*h.file());
  CHECK(th.vocab_size() == tg.vocab_size());
  CHECK(th.eos_id() == tg.eos_id());
  for (const char* s : {"The capital of France is 12345 <|im_end|> h\xc3\xa9llo",
                        "  spaces\tand\nnewlines 3.14159", "<|im_start|>user\nHi!<|im_end|>"})
    CHECK(th.encode(s, {.parse_special = true}) == tg.encode(s, {.parse_special = true}));
  CHECK(h.file()->get<std::string_view>("tokenizer.chat_template") ==
        g.file()->get<std::string_view>("tokenizer.chat_template"));
  const auto out_g = infer::generate(g, prompt, 8, {.temperature = 0});
  const auto out_h = infer::generate(h, prompt, 8, {.temperature = 0});
  CHECK(out_h == out_g);
  MESSAGE("greedy: '" << th.decode(out_h) << "'");
}
