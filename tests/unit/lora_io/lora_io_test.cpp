// LoRA adapter files and merging (io/lora_adapter.hpp):
//   - round trips: random adapters (seed printed; GQA config, plain and rsLoRA) through
//     save_peft/load_peft and save_lora_gguf/load_lora_gguf come back bitwise equal, the files
//     carry PEFT's / llama.cpp's names, ne and keys;
//   - the tests/data/lora_io fixtures (make_fixtures.py: numpy, safetensors, gguf-py, no
//     typeformer): a PEFT adapter saved by safetensors.numpy loads with B's q/k rows equal to
//     numpy's llama.cpp permute of the HF rows, and merging it into a gguf-py base (io::merge on
//     nn::gpt's parameters, io::merge_lora_gguf on the file) gives numpy's float64 merge, and
//     the merged model exported with io::export_hf holds numpy's HF q_proj / k_proj;
//   - merge math on a random tiny model against the direct formula W + s B A, unmerge restoring
//     W, and merge_lora_gguf keeping unadapted tensors and metadata byte for byte;
//   - every refused or malformed input fails with the error class and a message naming the file
//     and the field or tensor;
//   - "fixture:" the committed llama.cpp perplexity figures (llamacpp_lora_ppl.json) agree within
//     0.5%; "live:" (ctest tfm_test_lora_io_llamacpp, TFM_LIVE_PEERS=1) reruns
//     tests/data/lora_io/llamacpp_lora_ppl.py.
#include "typeformer/io/lora_adapter.hpp"

#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace io = tfm::io;
using tfm::index_t;
namespace fs = std::filesystem;

namespace {

std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/lora_io"; }

std::string work_dir() {
  static const std::string d = [] {
    const std::string w = TFM_LORA_IO_WORK_DIR;
    fs::create_directories(w);
    return w;
  }();
  return d;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

/// A small LLaMA config with grouped-query attention (head dim 4).
tfm::nn::dynamic_config small_config() {
  tfm::nn::dynamic_config c;
  c.vocab = 40;
  c.block_size = 32;
  c.n_layer = 2;
  c.n_embd = 16;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.ffn = 24;
  c.norm = tfm::nn::norm_kind::rms_norm;
  c.mlp = tfm::nn::mlp_kind::swiglu;
  c.position = tfm::nn::position_kind::rope;
  c.bias = false;
  return c;
}

std::uint64_t seed_of(const char* what) {
  const std::uint64_t seed = 0x10aa + std::hash<std::string>{}(what) % 1000;
  MESSAGE(std::string(what) << ": seed " << seed);
  return seed;
}

/// A random adapter on `targets`, pairs sorted by (layer, target) as the loaders return them.
io::lora_adapter_file random_adapter(const tfm::nn::dynamic_config& c,
                                     std::vector<io::lora_target> targets, index_t rank,
                                     std::uint64_t seed, double sd = 0.3) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.f, static_cast<float>(sd));
  io::lora_adapter_file f;
  f.rank = rank;
  f.alpha = 2.5 * static_cast<double>(rank);
  f.dropout = 0.1;
  f.targets = targets;
  f.base_model = "tiny \"llama\"";
  std::vector<io::lora_target> sorted = targets;
  std::sort(sorted.begin(), sorted.end());
  for (index_t l = 0; l < c.n_layer; ++l)
    for (io::lora_target t : sorted) {
      io::lora_pair p;
      p.layer = l;
      p.target = t;
      p.rank = rank;
      std::tie(p.out, p.in) = io::lora_target_shape(c, t);
      p.a.resize(static_cast<std::size_t>(p.rank * p.in));
      p.b.resize(static_cast<std::size_t>(p.out * p.rank));
      for (auto& x : p.a) x = n(rng);
      for (auto& x : p.b) x = n(rng);
      f.pairs.push_back(std::move(p));
    }
  return f;
}

void check_equal(const io::lora_adapter_file& x, const io::lora_adapter_file& y) {
  CHECK(x.rank == y.rank);
  CHECK(x.alpha == y.alpha);
  CHECK(x.rslora == y.rslora);
  CHECK(x.dropout == y.dropout);
  CHECK(x.targets == y.targets);
  CHECK(x.base_model == y.base_model);
  REQUIRE(x.pairs.size() == y.pairs.size());
  for (std::size_t i = 0; i < x.pairs.size(); ++i) {
    const auto &p = x.pairs[i], &q = y.pairs[i];
    CHECK(p.layer == q.layer);
    CHECK(p.target == q.target);
    CHECK(p.rank == q.rank);
    CHECK(p.in == q.in);
    CHECK(p.out == q.out);
    CHECK(p.a == q.a);  // bitwise: F32 both ways, permutations are exact
    CHECK(p.b == q.b);
  }
}

/// Runs `f`, requires an exception of type E whose message contains every `parts`.
template <class E, class F>
void check_fails(F&& f, std::initializer_list<std::string_view> parts) {
  bool thrown = false;
  try {
    f();
  } catch (const E& e) {
    thrown = true;
    const std::string what = e.what();
    for (std::string_view p : parts) {
      INFO("message: " << what);
      CHECK(what.find(p) != std::string::npos);
    }
  } catch (const std::exception& e) {
    FAIL("wrong exception type: " << std::string(e.what()));
  }
  CHECK(thrown);
}

/// nn::gpt weights of the fixture base (no tokenizer in it, so not read_export_model).
io::export_model fixture_model(const io::gguf_file& g) {
  io::export_model m;
  m.config = io::lora_base_config(g);
  m.weights = io::detail::importer::weights_of(g, m.config, true);
  return m;
}

std::vector<float> floats(const io::safetensors::file& f, const std::string& name) {
  const auto& t = f.at(name);
  std::vector<float> v(t.bytes.size() / 4);
  std::memcpy(v.data(), t.bytes.data(), t.bytes.size());
  return v;
}

/// Max |x - y| / (1 + |y|).
double max_rel(const std::vector<float>& x, const std::vector<float>& y) {
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    m = std::max(m, std::abs(double(x[i]) - double(y[i])) / (1 + std::abs(double(y[i]))));
  return m;
}

const std::vector<io::lora_target> all_targets(io::all_lora_targets.begin(),
                                               io::all_lora_targets.end());

}  // namespace

// ---- round trips --------------------------------------------------------------------------

TEST_CASE("PEFT round trip is bitwise, plain and rsLoRA, with PEFT's names and keys") {
  const auto c = small_config();
  for (bool rs : {false, true}) {
    auto f = random_adapter(
        c, {io::lora_target::v, io::lora_target::q, io::lora_target::down, io::lora_target::k}, 4,
        seed_of(rs ? "peft rslora" : "peft"));
    f.rslora = rs;
    const std::string dir = work_dir() + (rs ? "/peft_rs" : "/peft");
    io::save_peft(f, dir, c);
    check_equal(io::load_peft(dir, c), f);
    // What PEFT reads: names, (out, in) shapes, F32, metadata format pt, the config keys.
    const io::safetensors::file st(dir + "/adapter_model.safetensors");
    CHECK(st.metadata().at("format") == "pt");
    CHECK(st.size() == 2 * f.pairs.size());
    const auto& a = st.at("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight");
    CHECK(a.shape == std::vector<index_t>{4, 16});
    CHECK(a.type == io::safetensors::dtype::f32);
    CHECK(st.at("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").shape ==
          std::vector<index_t>{16, 4});
    CHECK(st.at("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight").shape ==
          std::vector<index_t>{8, 4});
    const auto cfg = tfm::detail::json::parse(slurp(dir + "/adapter_config.json"), "cfg");
    CHECK(cfg.find("peft_type")->string == "LORA");
    CHECK(cfg.find("task_type")->string == "CAUSAL_LM");
    CHECK(cfg.find("r")->integer == 4);
    CHECK(cfg.find("lora_alpha")->number == 10.0);
    CHECK(cfg.find("use_rslora")->boolean == rs);
    CHECK(cfg.find("bias")->string == "none");
    CHECK(cfg.find("fan_in_fan_out")->boolean == false);
    CHECK(cfg.find("base_model_name_or_path")->string == "tiny \"llama\"");
    REQUIRE(cfg.find("target_modules")->array.size() == 4);
    CHECK(cfg.find("target_modules")->array[0].string == "v_proj");
    // B of q is stored in rotate_half order: HF row h D + i is nn row h D + 2i.
    const auto bq = floats(st, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    const auto& p = f.pairs[0];  // layer 0, q
    REQUIRE(p.target == io::lora_target::q);
    const index_t D = 4, r = 4;
    for (index_t h = 0; h < 4; ++h)
      for (index_t i = 0; i < D / 2; ++i)
        for (index_t k = 0; k < r; ++k) {
          CHECK(bq[(h * D + i) * r + k] == p.b[(h * D + 2 * i) * r + k]);
          CHECK(bq[(h * D + D / 2 + i) * r + k] == p.b[(h * D + 2 * i + 1) * r + k]);
        }
    CHECK(f.scale() == doctest::Approx(rs ? 10.0 / 2.0 : 10.0 / 4.0));
  }
}

TEST_CASE("LoRA GGUF round trip is bitwise, with llama.cpp's keys, names and ne") {
  const auto c = small_config();
  for (bool rs : {false, true}) {
    auto f = random_adapter(c, all_targets, 3, seed_of(rs ? "gguf rslora" : "gguf"));
    f.rslora = rs;
    const std::string path = work_dir() + (rs ? "/adapter_rs.gguf" : "/adapter.gguf");
    io::save_lora_gguf(f, path, c);
    check_equal(io::load_lora_gguf(path, c), f);
    const io::gguf_file g(path);
    CHECK(g.get<std::string>("general.type") == "adapter");
    CHECK(g.get<std::string>("adapter.type") == "lora");
    CHECK(g.get<std::string>("general.architecture") == "llama");
    // llama.cpp's scale alpha / rank equals ours (rsLoRA folded into the stored alpha).
    CHECK(g.get<double>("adapter.lora.alpha") / 3.0 == doctest::Approx(f.scale()).epsilon(1e-7));
    CHECK(g.tensors().size() == 2 * f.pairs.size());
    const auto& a = g.tensor("blk.1.ffn_down.weight.lora_a");
    CHECK(a.ne[0] == 24);  // in
    CHECK(a.ne[1] == 3);   // rank
    const auto& b = g.tensor("blk.1.attn_k.weight.lora_b");
    CHECK(b.ne[0] == 3);  // rank
    CHECK(b.ne[1] == 8);  // out = G D
    CHECK(b.type == tfm::ggml_type::f32);
  }
  // PEFT -> GGUF -> PEFT keeps everything.
  auto f = random_adapter(c, {io::lora_target::o, io::lora_target::up}, 2, seed_of("cross"));
  io::save_peft(f, work_dir() + "/cross", c);
  io::save_lora_gguf(io::load_peft(work_dir() + "/cross", c), work_dir() + "/cross.gguf", c);
  check_equal(io::load_lora(work_dir() + "/cross.gguf", c), f);
}

TEST_CASE("a llama.cpp LoRA GGUF without typeformer's keys reads alpha from adapter.lora.alpha") {
  const auto c = small_config();
  const auto f = random_adapter(c, {io::lora_target::q}, 2, seed_of("plain gguf"));
  const std::string path = work_dir() + "/plain.gguf";
  for (float alpha : {6.0f, 0.0f}) {
    {
      io::gguf_writer w(path);
      w.add("general.architecture", std::string("llama"));
      w.add("general.type", std::string("adapter"));
      w.add("adapter.type", std::string("lora"));
      w.add("adapter.lora.alpha", alpha);
      for (const auto& p : f.pairs) {
        const std::string n = "blk." + std::to_string(p.layer) + ".attn_q.weight";
        w.add_tensor(n + ".lora_a", {p.in, p.rank}, tfm::ggml_type::f32,
                     std::as_bytes(std::span<const float>(p.a)));
        w.add_tensor(n + ".lora_b", {p.rank, p.out}, tfm::ggml_type::f32,
                     std::as_bytes(std::span<const float>(p.b)));
      }
      w.finish();
    }
    const auto g = io::load_lora_gguf(path, c);
    CHECK(g.rank == 2);
    CHECK(g.alpha == (alpha > 0 ? 6.0 : 2.0));  // alpha 0: llama.cpp applies scale 1
    CHECK_FALSE(g.rslora);
    CHECK(g.pairs[1].b == f.pairs[1].b);
  }
}

// ---- independent fixtures (numpy) ---------------------------------------------------------

TEST_CASE("fixture: PEFT adapter saved by safetensors.numpy loads with llama.cpp's q/k rows") {
  const io::gguf_file base(data_dir() + "/base_tiny.gguf");
  const auto c = io::lora_base_config(base);
  CHECK(c.n_head == 4);
  CHECK(c.n_kv_head == 2);
  const auto f = io::load_peft(data_dir() + "/peft_tiny", c);
  CHECK(f.rank == 4);
  CHECK(f.alpha == 12.0);
  CHECK(f.rslora);
  CHECK(f.dropout == 0.05);
  CHECK(f.scale() == 6.0);
  CHECK(f.base_model == "tiny-llama");
  CHECK(f.targets == std::vector<io::lora_target>{io::lora_target::down, io::lora_target::k,
                                                  io::lora_target::q, io::lora_target::up,
                                                  io::lora_target::o, io::lora_target::gate,
                                                  io::lora_target::v});
  REQUIRE(f.pairs.size() == 14);
  const io::safetensors::file expected(data_dir() + "/expected.safetensors");
  for (const auto& p : f.pairs)
    if (p.target == io::lora_target::q || p.target == io::lora_target::k) {
      const std::string n =
          "blk." + std::to_string(p.layer) + "." + io::lora_target_gguf(p.target) + ".lora_b";
      CHECK(p.b == floats(expected, n));  // numpy's permute(B_hf), exact
    }
  // Saved again by us: the same bytes of every tensor as PEFT's file (names, shapes, rows).
  io::save_peft(f, work_dir() + "/fixture_again", c);
  const io::safetensors::file ours(work_dir() + "/fixture_again/adapter_model.safetensors");
  const io::safetensors::file theirs(data_dir() + "/peft_tiny/adapter_model.safetensors");
  REQUIRE(ours.size() == theirs.size());
  for (const auto& t : theirs.tensors()) {
    INFO(t.name);
    CHECK(ours.at(t.name).shape == t.shape);
    CHECK(std::equal(t.bytes.begin(), t.bytes.end(), ours.at(t.name).bytes.begin(),
                     ours.at(t.name).bytes.end()));
  }
}

TEST_CASE("fixture: merging into the gguf-py base gives numpy's float64 merge") {
  const io::gguf_file base(data_dir() + "/base_tiny.gguf");
  const auto c = io::lora_base_config(base);
  const auto f = io::load_peft(data_dir() + "/peft_tiny", c);
  const io::safetensors::file expected(data_dir() + "/expected.safetensors");
  const index_t D = c.n_embd / c.n_head, H = c.n_head, G = c.n_kv_head;

  // io::merge on nn::gpt's parameters.
  auto m = fixture_model(base);
  const auto before = m.weights;
  io::merge(m, f);
  double worst = 0;
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", h = "h." + std::to_string(l) + ".";
    const auto& qkv = m.weights.at(h + "attn.c_attn.weight").values;
    const auto slice = [&](index_t r0, index_t r1) {
      return std::vector<float>(qkv.begin() + r0 * c.n_embd, qkv.begin() + r1 * c.n_embd);
    };
    worst = std::max(worst, max_rel(slice(0, H * D), floats(expected, b + "attn_q.weight")));
    worst =
        std::max(worst, max_rel(slice(H * D, (H + G) * D), floats(expected, b + "attn_k.weight")));
    worst = std::max(
        worst, max_rel(slice((H + G) * D, (H + 2 * G) * D), floats(expected, b + "attn_v.weight")));
    worst = std::max(worst, max_rel(m.weights.at(h + "attn.c_proj.weight").values,
                                    floats(expected, b + "attn_output.weight")));
    for (const char* mlp : {"gate", "up", "down"})
      worst = std::max(worst, max_rel(m.weights.at(h + "mlp." + mlp + ".weight").values,
                                      floats(expected, b + "ffn_" + mlp + ".weight")));
  }
  MESSAGE("io::merge vs numpy float64 merge: max relative difference " << worst);
  CHECK(worst <= 1.2e-7);  // one float rounding of the same double

  // The merged model exported to Hugging Face (io::export_hf, rotate_half rows): q_proj and
  // k_proj equal numpy's W_hf + scale * B_hf A, computed without any permutation.
  m.tokenizer = io::byte_vocabulary();
  io::export_hf(m, work_dir() + "/fixture_hf");
  const io::safetensors::file hf(work_dir() + "/fixture_hf/model.safetensors");
  double worst_hf = 0;
  for (index_t l = 0; l < c.n_layer; ++l)
    for (const char* proj : {"q_proj", "k_proj"}) {
      const std::string n = "model.layers." + std::to_string(l) + ".self_attn." + proj + ".weight";
      worst_hf = std::max(worst_hf, max_rel(floats(hf, n), floats(expected, n)));
    }
  MESSAGE("HF export of the merged model vs numpy's HF merge: max relative difference "
          << worst_hf);
  CHECK(worst_hf <= 1.2e-7);

  // Unmerging restores W within rounding of the round trip.
  io::merge(m, f, -1);
  double back = 0;
  for (const auto& [name, t] : before)
    back = std::max(back, max_rel(m.weights.at(name).values, t.values));
  CHECK(back <= 1e-6);

  // io::merge_lora_gguf on the file: adapted tensors as numpy, the rest and the keys untouched.
  const std::string out = work_dir() + "/merged_tiny.gguf";
  io::merge_lora_gguf(base, f, out);
  const io::gguf_file g(out);
  double worst_file = 0;
  for (const auto& t : base.tensors()) {
    const std::string n(t.name);
    const auto& u = g.tensor(n);
    CHECK(u.type == t.type);
    if (expected.contains(n)) {
      worst_file = std::max(
          worst_file, max_rel(tfm::dequantize(u.type, g.tensor_data(u)), floats(expected, n)));
    } else {
      const auto x = base.tensor_data(t), y = g.tensor_data(u);
      CHECK(std::equal(x.begin(), x.end(), y.begin(), y.end()));
    }
  }
  CHECK(worst_file <= 1.2e-7);
  CHECK(g.metadata().size() == base.metadata().size());
  CHECK(g.get<std::uint32_t>("llama.block_count") == 2);

  // --type f16 and a scale of 0 give the base in F16; scale -1 after +1 is the base again.
  io::merge_lora_gguf(base, f, out, {.type = tfm::ggml_type::f16, .scale = 0.0});
  const io::gguf_file h16(out);
  CHECK(h16.get<std::uint32_t>("general.file_type") == 1);
  CHECK(h16.tensor("blk.0.attn_q.weight").type == tfm::ggml_type::f16);
  CHECK(h16.tensor("blk.0.attn_norm.weight").type == tfm::ggml_type::f32);
  const auto w0 = tfm::dequantize(tfm::ggml_type::f32, base.tensor_data("blk.0.attn_q.weight"));
  const auto w16 = tfm::dequantize(tfm::ggml_type::f16, h16.tensor_data("blk.0.attn_q.weight"));
  CHECK(max_rel(w16, w0) <= 1e-3);
}

// ---- merge math ---------------------------------------------------------------------------

TEST_CASE("merge on a random tiny model equals W + s B A computed directly") {
  const auto c = small_config();
  const std::uint64_t seed = seed_of("merge math");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.f, 0.5f);
  io::export_model m;
  m.config = c;
  const index_t C = c.n_embd, D = C / c.n_head, H = c.n_head, G = c.n_kv_head, F = c.ffn;
  auto add = [&](const std::string& name, index_t r, index_t k) {
    io::export_tensor t;
    t.extents = {r, k};
    t.values.resize(static_cast<std::size_t>(r * k));
    for (auto& x : t.values) x = n(rng);
    m.weights[name] = t;
  };
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "attn.c_attn.weight", (H + 2 * G) * D, C);
    add(p + "attn.c_proj.weight", C, C);
    add(p + "mlp.gate.weight", F, C);
    add(p + "mlp.up.weight", F, C);
    add(p + "mlp.down.weight", C, F);
  }
  auto f = random_adapter(c, all_targets, 3, seed + 1);
  f.rslora = true;
  const auto w0 = m.weights;
  io::merge(m, f, 0.5);
  const double s = 0.5 * f.alpha / std::sqrt(3.0);
  double worst = 0;
  for (const auto& p : f.pairs) {
    const auto [name, r0] = io::detail::lora::merge_site(c, p.layer, p.target);
    const auto& w = m.weights.at(name).values;
    const auto& w_0 = w0.at(name).values;
    for (index_t o = 0; o < p.out; ++o)
      for (index_t i = 0; i < p.in; ++i) {
        long double ba = 0;
        for (index_t k = 0; k < p.rank; ++k)
          ba += static_cast<long double>(p.b[o * p.rank + k]) * p.a[k * p.in + i];
        const double want = static_cast<double>(w_0[(r0 + o) * p.in + i] + s * ba);
        worst = std::max(worst, std::abs(w[(r0 + o) * p.in + i] - want) / (1 + std::abs(want)));
      }
  }
  MESSAGE("merge vs direct formula: max relative difference " << worst);
  CHECK(worst <= 1.2e-7);
  // v rows come after k: rows of q and k of the fused matrix untouched by a v-only adapter.
  io::export_model mv;
  mv.config = c;
  mv.weights = w0;
  auto fv = random_adapter(c, {io::lora_target::v}, 2, seed + 2);
  io::merge(mv, fv);
  const auto& qkv = mv.weights.at("h.0.attn.c_attn.weight").values;
  CHECK(std::equal(qkv.begin(), qkv.begin() + (H + G) * D * C,
                   w0.at("h.0.attn.c_attn.weight").values.begin()));
  CHECK_FALSE(std::equal(qkv.begin() + (H + G) * D * C, qkv.end(),
                         w0.at("h.0.attn.c_attn.weight").values.begin() + (H + G) * D * C));

  // Errors: a missing parameter, other extents; nothing is changed.
  auto broken = m;
  broken.weights.erase("h.1.mlp.up.weight");
  check_fails<tfm::value_error>([&] { io::merge(broken, f); }, {"h.1.mlp.up.weight"});
  broken = m;
  broken.weights["h.0.attn.c_proj.weight"].extents = {C, C + 1};
  check_fails<tfm::shape_error>([&] { io::merge(broken, f); },
                                {"h.0.attn.c_proj.weight", "(16, 17)"});
  CHECK(broken.weights.at("h.0.mlp.up.weight").values == m.weights.at("h.0.mlp.up.weight").values);
  auto wrong = f;
  wrong.pairs[3].in += 1;
  check_fails<tfm::shape_error>([&] { io::merge(m, wrong); }, {"layer 0", "in 17"});
  wrong = f;
  wrong.pairs[0].layer = 5;
  check_fails<tfm::value_error>([&] { io::merge(m, wrong); }, {"layer out of range"});
  wrong = f;
  wrong.pairs[1] = wrong.pairs[0];
  check_fails<tfm::value_error>([&] { io::merge(m, wrong); }, {"appears twice"});
}

// ---- refusals -----------------------------------------------------------------------------

namespace {

/// A PEFT directory: a copy of a good adapter with adapter_config.json edited by `edit`
/// (key -> raw JSON value; an empty value removes the key).
std::string edited_peft(const std::string& name, const std::string& key, const std::string& value) {
  const std::string good = work_dir() + "/refuse_good";
  const std::string dir = work_dir() + "/refuse_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(good + "/adapter_model.safetensors", dir + "/adapter_model.safetensors");
  std::string cfg = slurp(good + "/adapter_config.json");
  const std::string k = "\"" + key + "\": ";
  const auto at = cfg.find(k);
  if (at == std::string::npos) {
    cfg.insert(2, k + value + ",\n  ");
  } else {
    const auto end = cfg.find(",\n", at);
    cfg.replace(at + k.size(), end - at - k.size(), value);
  }
  spit(dir + "/adapter_config.json", cfg);
  return dir;
}

/// A PEFT directory with the good config and tensors from `tensors` (name -> shape).
std::string peft_with_tensors(const std::string& name,
                              const std::vector<std::pair<std::string, std::vector<index_t>>>& ts) {
  const std::string dir = work_dir() + "/refuse_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(work_dir() + "/refuse_good/adapter_config.json", dir + "/adapter_config.json");
  io::safetensors::writer w;
  std::vector<std::vector<float>> keep;
  keep.reserve(ts.size());
  for (const auto& [n, shape] : ts) {
    index_t k = 1;
    for (index_t e : shape) k *= e;
    keep.emplace_back(static_cast<std::size_t>(k), 0.5f);
    w.add(n, io::safetensors::dtype::f32, shape,
          std::as_bytes(std::span<const float>(keep.back())));
  }
  w.save(dir + "/adapter_model.safetensors");
  return dir;
}

}  // namespace

TEST_CASE("PEFT: refused options and malformed directories name the file and the field") {
  const auto c = small_config();
  const auto f =
      random_adapter(c, {io::lora_target::q, io::lora_target::v}, 2, seed_of("peft refusals"));
  io::save_peft(f, work_dir() + "/refuse_good", c);
  const std::string cfg = "adapter_config.json";
  auto load = [&](const std::string& dir) { return [&c, dir] { io::load_peft(dir, c); }; };
  using U = tfm::unsupported_error;
  using P = tfm::parse_error;
  check_fails<U>(load(edited_peft("dora", "use_dora", "true")), {cfg, "use_dora"});
  check_fails<U>(load(edited_peft("bias", "bias", "\"all\"")), {cfg, "bias"});
  check_fails<U>(load(edited_peft("lora_bias", "lora_bias", "true")), {cfg, "lora_bias"});
  check_fails<U>(load(edited_peft("fifo", "fan_in_fan_out", "true")), {cfg, "fan_in_fan_out"});
  check_fails<U>(load(edited_peft("rank_pattern", "rank_pattern", "{\"q_proj\": 4}")),
                 {cfg, "rank_pattern"});
  check_fails<U>(load(edited_peft("alpha_pattern", "alpha_pattern", "{\"q_proj\": 4}")),
                 {cfg, "alpha_pattern"});
  check_fails<U>(load(edited_peft("mts", "modules_to_save", "[\"lm_head\"]")),
                 {cfg, "modules_to_save"});
  check_fails<U>(load(edited_peft("ltt", "layers_to_transform", "[0]")),
                 {cfg, "layers_to_transform"});
  check_fails<U>(load(edited_peft("ia3", "peft_type", "\"IA3\"")), {cfg, "peft_type", "IA3"});
  check_fails<U>(load(edited_peft("seq", "task_type", "\"SEQ_CLS\"")), {cfg, "task_type"});
  check_fails<U>(load(edited_peft("lm_head", "target_modules", "[\"q_proj\", \"lm_head\"]")),
                 {cfg, "target_modules", "lm_head"});
  check_fails<P>(load(edited_peft("r0", "r", "0")), {cfg, "r must be"});
  check_fails<P>(load(edited_peft("r_text", "r", "\"8\"")), {cfg, "r must be"});
  check_fails<P>(load(edited_peft("alpha", "lora_alpha", "-1")), {cfg, "lora_alpha"});
  check_fails<P>(load(edited_peft("nojson", "r", "2,,")), {cfg});
  // r disagrees with the tensors: a rank the config does not declare.
  check_fails<U>(load(edited_peft("r3", "r", "3")), {"adapter_model.safetensors", "rank_pattern"});
  // target listed but its tensors absent.
  check_fails<P>(load(edited_peft("more_targets", "target_modules",
                                  "[\"q_proj\", \"v_proj\", "
                                  "\"up_proj\"]")),
                 {"up_proj.lora_A.weight' is missing"});
  // Tensors the list does not name.
  check_fails<P>(load(edited_peft("fewer_targets", "target_modules", "[\"q_proj\"]")),
                 {"v_proj", "target_modules does not list"});
  // A regex string target_modules: the targets come from the tensors.
  CHECK(io::load_peft(edited_peft("regex", "target_modules", "\".*(q|v)_proj\""), c).targets ==
        std::vector<io::lora_target>{io::lora_target::q, io::lora_target::v});

  // Files.
  check_fails<tfm::io_error>(load(work_dir() + "/no_such_dir"), {"no_such_dir", "not a directory"});
  fs::create_directories(work_dir() + "/refuse_empty");
  check_fails<tfm::io_error>(load(work_dir() + "/refuse_empty"), {cfg, "missing"});
  const std::string only_cfg = edited_peft("only_cfg", "r", "2");
  fs::remove(only_cfg + "/adapter_model.safetensors");
  check_fails<tfm::io_error>(load(only_cfg), {"adapter_model.safetensors", "missing"});
  spit(only_cfg + "/adapter_model.bin", "pickle");
  check_fails<U>(load(only_cfg), {"adapter_model.bin"});
  const std::string trunc = edited_peft("truncated", "r", "2");
  spit(trunc + "/adapter_model.safetensors", "1234");
  check_fails<P>(load(trunc), {"adapter_model.safetensors"});

  // Tensors.
  const std::string L0 = "base_model.model.model.layers.0.self_attn.";
  const std::string L1 = "base_model.model.model.layers.1.self_attn.";
  auto good_set = [&] {
    std::vector<std::pair<std::string, std::vector<index_t>>> ts;
    for (const std::string& l : {L0, L1}) {
      ts.push_back({l + "q_proj.lora_A.weight", {2, 16}});
      ts.push_back({l + "q_proj.lora_B.weight", {16, 2}});
      ts.push_back({l + "v_proj.lora_A.weight", {2, 16}});
      ts.push_back({l + "v_proj.lora_B.weight", {8, 2}});
    }
    return ts;
  };
  CHECK_NOTHROW(io::load_peft(peft_with_tensors("tensors_ok", good_set()), c));
  auto ts = good_set();
  ts.push_back({"base_model.model.lm_head.lora_A.weight", {2, 16}});
  check_fails<P>(load(peft_with_tensors("lm_head_t", ts)), {"lm_head.lora_A.weight"});
  ts = good_set();
  ts.push_back({L0 + "q_proj.lora_magnitude_vector", {16}});
  check_fails<P>(load(peft_with_tensors("dora_t", ts)), {"lora_magnitude_vector"});
  ts = good_set();
  ts.push_back({"base_model.model.model.layers.0.mlp.q_proj.lora_A.weight", {2, 16}});
  check_fails<P>(load(peft_with_tensors("mlp_q", ts)), {"mlp.q_proj", "seven projections"});
  ts = good_set();
  ts.push_back({"base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight", {2, 16}});
  check_fails<P>(load(peft_with_tensors("layer_x", ts)), {"layers.x"});
  ts = good_set();
  ts.push_back({"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", {2, 16}});
  check_fails<tfm::value_error>(load(peft_with_tensors("layer_7", ts)), {"layer 7", "2 layers"});
  ts = good_set();
  ts.erase(ts.begin() + 5);  // layer 1 q_proj lora_B
  check_fails<P>(load(peft_with_tensors("no_b", ts)),
                 {"layers.1.self_attn.q_proj.lora_B.weight' is missing"});
  ts = good_set();
  ts[3].second = {16, 2};  // v_proj B with q's rows
  check_fails<tfm::shape_error>(load(peft_with_tensors("v_shape", ts)),
                                {"layers.0.self_attn.v_proj", "(16, 2)", "(8, 2)"});
  ts = good_set();
  ts[0].second = {3, 16};  // A of rank 3 with B of rank 2
  check_fails<tfm::shape_error>(load(peft_with_tensors("rank_mismatch", ts)), {"(3, 16)"});
  ts = good_set();
  ts[0].second = {4, 16};
  ts[1].second = {16, 4};  // a consistent pair of rank 4 where r = 2
  check_fails<U>(load(peft_with_tensors("unequal_rank", ts)), {"rank_pattern"});

  // Saving what does not fit the base.
  auto bad = f;
  bad.pairs[0].rank = 3;
  check_fails<tfm::value_error>([&] { io::save_peft(bad, work_dir() + "/x", c); }, {"rank 3"});
  bad = f;
  bad.pairs[0].b.pop_back();
  check_fails<tfm::shape_error>([&] { io::save_peft(bad, work_dir() + "/x", c); }, {"B 31"});
  bad = f;
  bad.targets = {io::lora_target::q};
  check_fails<tfm::value_error>([&] { io::save_lora_gguf(bad, work_dir() + "/x.gguf", c); },
                                {"v_proj", "not in the adapter's targets"});
  auto gpt2 = c;
  gpt2.position = tfm::nn::position_kind::learned;
  gpt2.norm = tfm::nn::norm_kind::layer_norm;
  gpt2.mlp = tfm::nn::mlp_kind::gelu;
  check_fails<U>([&] { io::save_peft(f, work_dir() + "/x", gpt2); }, {"LLaMA-style"});
}

TEST_CASE("LoRA GGUF: wrong kinds, names, shapes and halves are refused naming the tensor") {
  const auto c = small_config();
  const auto f = random_adapter(c, {io::lora_target::q}, 2, seed_of("gguf refusals"));
  struct spec {
    std::string name;
    std::vector<std::int64_t> ne;
  };
  auto write = [&](const std::string& file,
                   const std::vector<std::pair<std::string, std::string>>& kv,
                   const std::vector<spec>& ts) {
    const std::string path = work_dir() + "/" + file;
    io::gguf_writer w(path);
    for (const auto& [k, v] : kv) w.add(k, v);
    w.add("adapter.lora.alpha", 4.0f);
    std::vector<std::vector<float>> keep;
    keep.reserve(ts.size());
    for (const auto& t : ts) {
      std::int64_t n = 1;
      for (auto e : t.ne) n *= e;
      keep.emplace_back(static_cast<std::size_t>(n), 0.25f);
      w.add_tensor(t.name, t.ne, tfm::ggml_type::f32,
                   std::as_bytes(std::span<const float>(keep.back())));
    }
    w.finish();
    return path;
  };
  const std::vector<std::pair<std::string, std::string>> kv = {
      {"general.architecture", "llama"}, {"general.type", "adapter"}, {"adapter.type", "lora"}};
  const std::vector<spec> good = {{"blk.0.attn_q.weight.lora_a", {16, 2}},
                                  {"blk.0.attn_q.weight.lora_b", {2, 16}}};
  auto load = [&](const std::string& path) { return [&c, path] { io::load_lora_gguf(path, c); }; };
  using P = tfm::parse_error;
  CHECK(io::load_lora_gguf(write("ok.gguf", kv, good), c).alpha == 4.0);
  check_fails<P>(
      load(write(
          "model.gguf",
          {{"general.architecture", "llama"}, {"general.type", "model"}, {"adapter.type", "lora"}},
          good)),
      {"model.gguf", "general.type is 'model'"});
  check_fails<P>(load(write("cvec.gguf",
                            {{"general.architecture", "llama"},
                             {"general.type", "adapter"},
                             {"adapter.type", "control_vector"}},
                            good)),
                 {"adapter.type"});
  check_fails<P>(
      load(write(
          "gpt2.gguf",
          {{"general.architecture", "gpt2"}, {"general.type", "adapter"}, {"adapter.type", "lora"}},
          good)),
      {"general.architecture is 'gpt2'"});
  auto ts = good;
  ts.push_back({"blk.0.attn_norm.weight", {16}});
  check_fails<P>(load(write("norm.gguf", kv, ts)), {"blk.0.attn_norm.weight", "norm vectors"});
  ts = good;
  ts.push_back({"token_embd.weight.lora_a", {2, 40}});
  check_fails<P>(load(write("embd.gguf", kv, ts)), {"token_embd.weight.lora_a"});
  ts = good;
  ts.push_back({"blk.1.attn_qkv.weight.lora_a", {16, 2}});
  check_fails<P>(load(write("qkv.gguf", kv, ts)), {"blk.1.attn_qkv", "seven projections"});
  check_fails<P>(load(write("half.gguf", kv, {good[1]})),
                 {"blk.0.attn_q.weight.lora_a' is missing"});
  check_fails<P>(load(write("transposed.gguf", kv,
                            {{"blk.0.attn_q.weight.lora_a", {16, 2}},
                             {"blk.0.attn_q.weight.lora_b", {3, 16}}})),
                 {"lora_a ne[1] = 2 differs from lora_b ne[0] = 3"});
  check_fails<tfm::shape_error>(load(write("wrong_in.gguf", kv,
                                           {{"blk.0.attn_k.weight.lora_a", {16, 2}},
                                            {"blk.0.attn_k.weight.lora_b", {2, 16}}})),
                                {"blk.0.attn_k.weight", "lora_b ne [rank, 8]"});
  check_fails<tfm::unsupported_error>(load(write("two_ranks.gguf", kv,
                                                 {good[0],
                                                  good[1],
                                                  {"blk.1.attn_q.weight.lora_a", {16, 3}},
                                                  {"blk.1.attn_q.weight.lora_b", {3, 16}}})),
                                      {"blk.1.attn_q.weight", "rank 3"});
  check_fails<tfm::value_error>(load(write("layer9.gguf", kv,
                                           {{"blk.9.attn_q.weight.lora_a", {16, 2}},
                                            {"blk.9.attn_q.weight.lora_b", {2, 16}}})),
                                {"layer 9"});
  check_fails<P>(load(write("empty.gguf", kv, {})), {"no LoRA tensors"});
  check_fails<tfm::io_error>(load(work_dir() + "/nothing.gguf"), {"nothing.gguf"});
  spit(work_dir() + "/garbage.gguf", "GGUF but not really");
  check_fails<P>(load(work_dir() + "/garbage.gguf"), {"garbage.gguf"});

  // merge_lora_gguf: a base that is not llama, a base tensor of the wrong shape.
  const io::gguf_file base(data_dir() + "/base_tiny.gguf");
  auto big = f;
  for (auto& p : big.pairs) {
    p.in = 17;
    p.a.resize(static_cast<std::size_t>(p.rank * 17));
  }
  check_fails<tfm::shape_error>([&] { io::merge_lora_gguf(base, big, work_dir() + "/never.gguf"); },
                                {"in 17"});
  CHECK_FALSE(fs::exists(work_dir() + "/never.gguf"));
}

// ---- llama.cpp perplexity figures --------------------------------------------------------

TEST_CASE("fixture: llama.cpp applying our LoRA GGUF agrees with typeformer within 0.5%") {
  const std::string path = data_dir() + "/llamacpp_lora_ppl.json";
  REQUIRE_MESSAGE(fs::exists(path), path << " is missing (llamacpp_lora_ppl.py --write makes it)");
  const auto j = tfm::detail::json::parse(slurp(path), path);
  const double base = j.find("ppl_base_llamacpp")->number;
  const double lora = j.find("ppl_lora_llamacpp")->number;
  const double merged_l = j.find("ppl_merged_llamacpp")->number;
  const double merged_t = j.find("ppl_merged_typeformer")->number;
  MESSAGE("base " << base << ", llama.cpp + adapter " << lora << ", llama.cpp merged " << merged_l
                  << ", typeformer merged " << merged_t);
  CHECK(std::abs(merged_t / lora - 1) < 0.005);
  CHECK(std::abs(merged_l / lora - 1) < 0.005);
  CHECK(std::abs(lora / base - 1) > 0.02);  // the adapter has a visible effect
}

TEST_CASE("live: llama.cpp's perplexity with our LoRA GGUF equals typeformer's within 0.5%" *
          doctest::skip()) {
  if (std::getenv("TFM_LIVE_PEERS") == nullptr) {
    MESSAGE(
        "TFM_SKIP: the live comparison with llama.cpp is opt-in (scripts/test --live-peers, "
        "or TFM_LIVE_PEERS=1)");
    return;
  }
  const std::string log = work_dir() + "/llamacpp_lora_ppl.log";
  const std::string cmd = std::string(TFM_PYTHON) + " " + data_dir() +
                          "/llamacpp_lora_ppl.py --tfm " + TFM_LORA_IO_TFM + " --lora-make " +
                          TFM_LORA_IO_MAKE + " --work " + work_dir() + "/live > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  const int rc = status == -1 ? -1 : WEXITSTATUS(status);
  const std::string out = slurp(log);
  if (rc == 77 || rc == 127) {
    MESSAGE("TFM_SKIP: llama-cpp-python or the model is not available: " << out);
    return;
  }
  MESSAGE(out);
  CHECK(rc == 0);
}
