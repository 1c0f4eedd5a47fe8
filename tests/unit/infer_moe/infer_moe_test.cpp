// The tape-free engine on llama mixture-of-experts GGUFs (infer/session.hpp, issue 22 item 6):
// tiny random MoE files written with typeformer's own GGUF writer (tests/support/moe_gguf.hpp),
// F32 and quantized by tfm::quantize_gguf (Q8_0, Q4_0), run by infer::session and compared with
//   - a numpy float64 forward on the tensors as gguf-py reads them, and
//   - llama.cpp's logits (llama-cpp-python) on the same files,
// both committed in tests/data/infer_moe/moe_logits.txt by tests/data/infer_moe/gen_fixtures.py
// (which runs the "write the fixture models" case below to make the files). Also: decode one
// token at a time equals one prefill, chunked prefill equals one prefill, thread-count
// independence, no allocation per decoded token, the tie rule, the quantizer's handling of
// the 3-D expert tensors (and llama.cpp's 8-expert type rules), the errors of broken files, and
// the batched runner (infer::engine's step) on MoE models.
#include "count_new.hpp"
#include "moe_gguf.hpp"

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/infer/batch.hpp"
#include "typeformer/infer/engine.hpp"
#include "typeformer/infer/model.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/file_quantize.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifndef TFM_INFER_MOE_WORK_DIR
#define TFM_INFER_MOE_WORK_DIR "infer_moe_work"
#endif

using namespace tfm;

namespace {

const std::vector<std::int32_t> prompt{3, 17, 42, 5, 63, 8, 28, 11, 9, 50, 33};
constexpr std::uint64_t fixture_seed = 4;  // gen_fixtures.py --seed: router-logit gaps >= 0.27

std::string work_dir() {
  std::filesystem::create_directories(TFM_INFER_MOE_WORK_DIR);
  return TFM_INFER_MOE_WORK_DIR;
}

tfm_test::moe_gguf_spec tiny_spec(std::uint64_t seed = fixture_seed) {
  tfm_test::moe_gguf_spec s;
  s.seed = seed;
  s.router_scale = 4.0f;  // well-separated routing probabilities (the fixture reports the gap)
  return s;
}

/// The fixture models in `dir`: moe_f32.gguf (written), moe_q8_0.gguf and moe_q4_0.gguf
/// (tfm::quantize_gguf of it), moe_tie.gguf (a zero router: every routing is a tie).
std::map<std::string, std::string> write_models(const std::string& dir,
                                                std::uint64_t seed = fixture_seed) {
  std::map<std::string, std::string> out;
  const std::string f32 = dir + "/moe_f32.gguf";
  tfm_test::write_moe_gguf(tiny_spec(seed), f32);
  out["moe_f32"] = f32;
  const io::gguf_file src(f32);
  for (const char* preset : {"q8_0", "q4_0"}) {
    const std::string q = dir + "/moe_" + preset + ".gguf";
    quantize_gguf(src, q, quantize_preset_of(preset));
    out[std::string("moe_") + preset] = q;
  }
  tfm_test::moe_gguf_spec tie = tiny_spec(seed);
  tie.router_scale = 0.0f;
  out["moe_tie"] = dir + "/moe_tie.gguf";
  tfm_test::write_moe_gguf(tie, out["moe_tie"]);
  return out;
}

const std::map<std::string, std::string>& models() {
  static const std::map<std::string, std::string> m = write_models(work_dir());
  return m;
}

/// "key v1 v2 ..." lines of moe_logits.txt.
std::map<std::string, std::vector<double>> read_fixture() {
  std::ifstream in(std::string(TFM_SOURCE_DIR) + "/tests/data/infer_moe/moe_logits.txt");
  std::map<std::string, std::vector<double>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string key;
    s >> key;
    std::vector<double> v;
    for (double x; s >> x;) v.push_back(x);
    out[key] = v;
  }
  return out;
}

/// max |a - b| / max |b|.
template <class A, class B>
double rel_err(const A& a, const B& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / den;
}

template <class Model>
std::vector<float> prefill_all(const Model& m, const std::vector<std::int32_t>& ids,
                               infer::session_options o = {}) {
  infer::session s(m, std::move(o));
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

template <class Model>
std::vector<float> decode_all(const Model& m, const std::vector<std::int32_t>& ids) {
  infer::session s(m);
  std::vector<float> out;
  for (std::int32_t id : ids) {
    auto lg = s.decode(id);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

std::uint64_t hash_of(const std::string& path) {
  const io::gguf_file f(path);
  return tfm_test::file_hash(f.bytes());
}

}  // namespace

TEST_CASE("write the fixture models (gen_fixtures.py runs this)" * doctest::skip()) {
  const char* dir = std::getenv("TFM_MOE_FIXTURE_OUT");
  REQUIRE(dir != nullptr);
  const char* other = std::getenv("TFM_MOE_SEED");  // gen_fixtures.py --seed: try another seed
  const std::uint64_t seed = other != nullptr ? std::strtoull(other, nullptr, 10) : fixture_seed;
  MESSAGE("seed " << seed);
  for (const auto& [name, path] : write_models(dir, seed))
    MESSAGE(name << " " << path << " fnv64 " << hash_of(path));
}

TEST_CASE("MoE GGUF: config, stacked expert views, the quantizer's types") {
  MESSAGE("seed " << fixture_seed);
  auto m = infer::load_gguf(models().at("moe_f32"));
  const infer::model_config& c = m.config();
  CHECK(c.n_expert == 4);
  CHECK(c.n_expert_used == 2);
  CHECK(c.ffn == 32);
  CHECK(c.mlp == nn::mlp_kind::swiglu);
  const infer::block_weights& b = m.block(1);
  CHECK(b.w_gate.data() == nullptr);
  CHECK(b.router.rows() == 4);
  CHECK(b.router.cols() == 32);
  CHECK(b.gate_exps.rows() == 4 * 32);
  CHECK(b.down_exps.rows() == 4 * 32);
  CHECK_FALSE(b.gate_exps.owned());  // borrowed from the mapping
  // expert e's views are rows e F .. of the stacked matrices, as gguf-py's 3-D tensor holds them
  const tfm_test::moe_gguf_spec spec = tiny_spec();
  for (const tfm_test::moe_tensor& t : tfm_test::moe_tensors(spec)) {
    if (t.name != "blk.1.ffn_down_exps.weight") continue;
    const std::vector<float> v = tfm_test::moe_values(spec, t);  // (E, C, F) row-major
    std::vector<float> row(32);
    b.expert(3).down.row(5, row.data());
    for (int j = 0; j < 32; ++j)
      CHECK(row[static_cast<std::size_t>(j)] == v[(3 * 32 + 5) * 32 + j]);
  }
  // tfm quantize (quantize_gguf): the 3-D experts quantized row by row, the router kept F32
  for (const char* q : {"moe_q8_0", "moe_q4_0"}) {
    const io::gguf_file f(models().at(q));
    const io::gguf_tensor_info* up = f.find_tensor("blk.0.ffn_up_exps.weight");
    const io::gguf_tensor_info* router = f.find_tensor("blk.0.ffn_gate_inp.weight");
    REQUIRE(up != nullptr);
    REQUIRE(router != nullptr);
    CHECK(up->n_dims == 3);
    CHECK(up->ne[2] == 4);
    CHECK(up->type == (std::string(q) == "moe_q8_0" ? ggml_type::q8_0 : ggml_type::q4_0));
    CHECK(router->type == ggml_type::f32);
    auto qm = infer::load_gguf(models().at(q));
    CHECK(qm.block(0).down_exps.quantized());
    CHECK_FALSE(qm.block(0).down_exps.owned());  // kept packed, in place
  }
}

TEST_CASE("tfm quantize of an 8-expert file: llama.cpp's attn_k / attn_v / attn_output rules") {
  // Expected types: llama_model_quantize (llama-cpp-python 0.3.36) on bench_moe_gguf's
  // 8-expert file (gqa 2): Q4_0 and Q4_K_M give attn_k and attn_v Q8_0, Q4_K_M attn_output
  // Q5_K; with 4 experts (the fixture models) the dense rules hold.
  tfm_test::moe_gguf_spec s = tiny_spec();
  s.E = 8;
  s.C = s.F = 256;
  s.D = 64;
  s.L = 1;
  s.type = ggml_type::f16;
  const std::string path = work_dir() + "/moe_e8.gguf";
  tfm_test::write_moe_gguf(s, path);
  const io::gguf_file f(path);
  auto types = [&](const char* preset) {
    std::map<std::string, ggml_type> out;
    const std::vector<tensor_quant_plan> plan = plan_quantization(f, quantize_preset_of(preset));
    const auto infos = f.tensors();
    for (std::size_t i = 0; i < plan.size(); ++i) out[std::string(infos[i].name)] = plan[i].out;
    return out;
  };
  auto q40 = types("q4_0");
  CHECK(q40.at("blk.0.attn_k.weight") == ggml_type::q8_0);
  CHECK(q40.at("blk.0.attn_v.weight") == ggml_type::q8_0);
  CHECK(q40.at("blk.0.attn_q.weight") == ggml_type::q4_0);
  CHECK(q40.at("blk.0.attn_output.weight") == ggml_type::q4_0);
  CHECK(q40.at("blk.0.ffn_up_exps.weight") == ggml_type::q4_0);
  CHECK(q40.at("blk.0.ffn_gate_inp.weight") == ggml_type::f32);
  auto q4km = types("q4_k_m");
  CHECK(q4km.at("blk.0.attn_k.weight") == ggml_type::q8_0);
  CHECK(q4km.at("blk.0.attn_v.weight") == ggml_type::q8_0);
  CHECK(q4km.at("blk.0.attn_output.weight") == ggml_type::q5_K);
  CHECK(q4km.at("blk.0.ffn_gate_exps.weight") == ggml_type::q4_K);
  const io::gguf_file f4(models().at("moe_q4_0"));  // 4 experts
  CHECK(f4.find_tensor("blk.0.attn_v.weight")->type == ggml_type::q4_0);
}

TEST_CASE("MoE GGUF logits equal the numpy forward and llama.cpp (F32, Q8_0, Q4_0)") {
  const auto fx = read_fixture();
  REQUIRE(fx.count("prompt") == 1);
  REQUIRE(fx.at("prompt").size() == prompt.size());
  for (std::size_t i = 0; i < prompt.size(); ++i) REQUIRE(fx.at("prompt")[i] == prompt[i]);
  // Tolerances (max |ours - theirs| / max |theirs| over every position's logits). F32: float32
  // sums in other orders than numpy's float64 (measured 6e-7). Q8_0 / Q4_0: prefill runs the
  // float GEMM on weights dequantized while packing, so it follows numpy (on the dequantized
  // weights; measured 2e-5); decode quantizes each activation row to 8-bit blocks for the
  // integer dots exactly as llama.cpp does, so it follows llama.cpp (measured 8e-8) and differs
  // from numpy by the activation rounding (measured 2.8e-2, llama.cpp's own distance too).
  struct tolerance {
    double prefill_np, decode_np, decode_lc;
  };
  const std::map<std::string, tolerance> tol{{"moe_f32", {5e-6, 5e-6, 5e-6}},
                                             {"moe_q8_0", {1e-4, 5e-2, 1e-5}},
                                             {"moe_q4_0", {1e-4, 5e-2, 1e-5}}};
  for (const auto& [name, t] : tol) {
    const std::string path = models().at(name);
    if (name == "moe_f32") {  // the file the fixture was made from (the quantized ones are the
      // quantizer's output, which another compiler's rounding may change in a last bit)
      const std::vector<double>& h = fx.at("fnv64." + name);
      REQUIRE(h.size() == 1);
      CHECK(static_cast<double>(hash_of(path)) == h[0]);
    }
    auto model = infer::load_gguf(path);
    auto oracle = infer::transformer<float, reference>::from_gguf(path);
    const std::vector<double>& np = fx.at("numpy." + name);
    const std::vector<double>& lc = fx.at("llamacpp." + name);
    REQUIRE(np.size() == prompt.size() * 64);
    REQUIRE(lc.size() == prompt.size() * 64);
    const std::vector<float> pre = prefill_all(model, prompt);
    const std::vector<float> dec = decode_all(model, prompt);
    const std::vector<float> ref = prefill_all(oracle, prompt);
    const double e_np = rel_err(pre, np), e_lc = rel_err(dec, lc), e_ref = rel_err(ref, np);
    MESSAGE(name << ": max |logit - numpy| / max |numpy| = " << e_np << " (prefill), "
                 << rel_err(dec, np) << " (decode), " << e_ref
                 << " (reference backend); vs llama.cpp " << e_lc << " (decode), "
                 << rel_err(pre, lc) << " (prefill)");
    CHECK(e_np < t.prefill_np);
    CHECK(rel_err(dec, np) < t.decode_np);
    CHECK(e_lc < t.decode_lc);
    CHECK(e_ref < 5e-6);  // the reference backend dequantizes: float math throughout
  }
}

TEST_CASE("MoE routing ties go to the lower expert id (zero router: experts 0 .. k-1)") {
  const auto fx = read_fixture();
  auto model = infer::load_gguf(models().at("moe_tie"));
  CHECK(static_cast<double>(hash_of(models().at("moe_tie"))) == fx.at("fnv64.moe_tie").at(0));
  const std::vector<double>& np = fx.at("numpy.moe_tie");
  REQUIRE(np.size() == prompt.size() * 64);
  const double e = rel_err(prefill_all(model, prompt), np);
  MESSAGE("moe_tie: max |logit - numpy (stable sort: lower id first)| / max = " << e);
  CHECK(e < 2e-5);
  CHECK(rel_err(decode_all(model, prompt), np) < 2e-5);
}

TEST_CASE("MoE: decode == prefill, chunked prefill == prefill, independent of the threads") {
  for (const char* name : {"moe_f32", "moe_q8_0", "moe_q4_0"}) {
    auto model = infer::load_gguf(models().at(name));
    const std::vector<float> pre = prefill_all(model, prompt);
    const std::vector<float> dec = decode_all(model, prompt);
    const std::vector<float> chunked = prefill_all(model, prompt, {.batch = 3});
    // Prefill runs one GEMM per expert over its rows (Q8_0 / Q4_0: on weights dequantized while
    // packing), decode the GEMVs (Q8_0 / Q4_0: integer dots on 8-bit activations).
    const double tol = std::string(name) == "moe_f32" ? 1e-5 : 5e-2;
    MESSAGE(std::string(name) << ": decode vs prefill " << rel_err(dec, pre)
                              << ", chunks of 3 vs one prefill " << rel_err(chunked, pre));
    CHECK(rel_err(dec, pre) < tol);
    CHECK(rel_err(chunked, pre) < tol);
    std::vector<float> pre1, dec1, pre2, dec2;
    {
      const thread_scope one(1);
      pre1 = prefill_all(model, prompt);
      dec1 = decode_all(model, prompt);
    }
    {
      const thread_scope two(2);
      pre2 = prefill_all(model, prompt);
      dec2 = decode_all(model, prompt);
    }
    CHECK(pre1 == pre2);  // bitwise
    CHECK(dec1 == dec2);
  }
}

TEST_CASE("MoE: decode allocates nothing per token") {
  for (const char* name : {"moe_f32", "moe_q4_0"}) {
    auto model = infer::load_gguf(models().at(name));
    infer::session s(model, {.context = 64});
    auto lg = s.prefill(std::vector<std::int32_t>{1, 2, 3});
    lg = s.decode(4);  // warm-up
    const long news = g_news.load();
    std::int32_t tok = 5;
    for (int i = 0; i < 30; ++i) {
      lg = s.decode(tok);
      tok = static_cast<std::int32_t>((tok * 31 + 7) % 64);
    }
    const long per_30 = g_news.load() - news;
    MESSAGE(std::string(name) << ": operator new calls during 30 decoded tokens: " << per_30);
    CHECK(per_30 == 0);
    CHECK(s.position() == 34);
  }
}

TEST_CASE("MoE: broken files are refused with the key or tensor named") {
  const std::string dir = work_dir();
  auto error_of = [&](const tfm_test::moe_gguf_spec& s, const std::string& file) {
    const std::string path = dir + "/" + file;
    tfm_test::write_moe_gguf(s, path);
    try {
      (void)infer::load_gguf(path);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto spec = tiny_spec();
  spec.used_override = 5;
  std::string e = error_of(spec, "bad_used5.gguf");
  CHECK(e.find("llama.expert_used_count = 5") != std::string::npos);
  CHECK(e.find("llama.expert_count = 4") != std::string::npos);
  spec.used_override = 0;
  e = error_of(spec, "bad_used0.gguf");
  CHECK(e.find("llama.expert_used_count = 0") != std::string::npos);
  spec = tiny_spec();
  spec.omit = "llama.expert_used_count";
  e = error_of(spec, "bad_noused.gguf");
  CHECK(e.find("llama.expert_used_count is missing") != std::string::npos);
  spec = tiny_spec();
  spec.omit = "llama.expert_count";
  e = error_of(spec, "bad_nocount.gguf");
  CHECK(e.find("llama.expert_count is missing") != std::string::npos);
  spec = tiny_spec();
  spec.omit = "blk.1.ffn_up_exps.weight";
  e = error_of(spec, "bad_missing.gguf");
  CHECK(e.find("'blk.1.ffn_up_exps.weight' is missing") != std::string::npos);
  spec = tiny_spec();
  spec.flatten = "blk.0.ffn_gate_exps.weight";
  e = error_of(spec, "bad_flat.gguf");
  CHECK(e.find("'blk.0.ffn_gate_exps.weight' has ne = [32, 128] (2 dims)") != std::string::npos);
  CHECK(e.find("expects [32, 32, 4]") != std::string::npos);
  MESSAGE("flattened expert tensor: " << e);
  spec = tiny_spec();
  spec.omit = "blk.0.ffn_gate_inp.weight";
  e = error_of(spec, "bad_router.gguf");
  CHECK(e.find("'blk.0.ffn_gate_inp.weight' is missing") != std::string::npos);
}

TEST_CASE("MoE in the batched runner (engine, serve): rows independent of the batch, = session") {
  const std::vector<std::int32_t> other{7, 1, 60, 22, 5, 5, 40};
  for (const char* name : {"moe_f32", "moe_q8_0", "moe_q4_0"}) {
    auto model = infer::load_gguf(models().at(name));
    // every row's logits of `prompt`, alone and sharing its steps (and its experts) with `other`
    auto run = [&](bool with_other) {
      infer::paged_kv kv(2, 2, 8, {.block_tokens = 16, .blocks = 16});
      infer::batch_runner<float, cpu> br(
          model, kv, {.max_tokens = 64, .max_seqs = 4, .context = 64, .logit_rows = 64});
      const auto a = kv.create(), o = kv.create();
      REQUIRE(kv.reserve(a, static_cast<index_t>(prompt.size())));
      REQUIRE(kv.reserve(o, static_cast<index_t>(other.size())));
      std::vector<infer::batch_item> items{
          {a, prompt.data(), static_cast<index_t>(prompt.size()), true, true}};
      if (with_other)
        items.push_back({o, other.data(), static_cast<index_t>(other.size()), true, true});
      auto lg = br.step(items);
      return std::vector<float>(lg.begin(),
                                lg.begin() + static_cast<std::ptrdiff_t>(prompt.size() * 64));
    };
    const std::vector<float> alone = run(false), shared = run(true);
    CHECK(alone == shared);  // bitwise: a row's experts run row-independent kernels
    // the session's decode runs the same kinds of kernels (integer dots on 8-bit rows for the
    // packed types), its prefill the float GEMM
    const std::vector<float> dec = decode_all(model, prompt);
    MESSAGE(std::string(name) << ": batch_runner vs session decode " << rel_err(alone, dec));
    CHECK(rel_err(alone, dec) < 1e-5);
  }
}

TEST_CASE("MoE through infer::engine: greedy tokens of concurrent requests = session greedy") {
  auto model = infer::load_gguf(models().at("moe_q4_0"));
  const std::vector<std::vector<std::int32_t>> prompts{prompt, {7, 1, 60, 22}, {9, 9, 2}};
  auto session_greedy = [&](const std::vector<std::int32_t>& p) {
    infer::session s(model);  // the prompt decoded token by token: the engine's kernels
    std::vector<std::int32_t> out;
    std::span<const float> lg;
    for (std::int32_t id : p) lg = s.decode(id);
    for (int i = 0; i < 12; ++i) {
      out.push_back(static_cast<std::int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin()));
      lg = s.decode(out.back());
    }
    return out;
  };
  infer::engine_options eo;
  eo.max_seqs = 4;
  eo.context = 64;
  infer::engine eng(model, eo);
  std::vector<std::vector<std::int32_t>> got(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    infer::request r;
    r.prompt = prompts[i];
    r.max_tokens = 12;
    r.sampling.temperature = 0;
    eng.submit(r, [&got, i](const infer::token_event& e) {
      if (e.token >= 0) got[i].push_back(e.token);
    });
  }
  eng.run_until_idle();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<std::int32_t> want = session_greedy(prompts[i]);
    CHECK(got[i] == want);
  }
}
