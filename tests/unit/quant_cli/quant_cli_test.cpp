// quant/file_quantize.hpp, the library behind `tfm quantize`:
//   - presets: llama-quantize's names, case-insensitive, with gguf-py's LlamaFileType values;
//   - the per-tensor type rules (llama.cpp src/llama-quant.cpp, default parameters) on the tiny
//     gguf-py models of tests/data/infer_model (untied F32, tied F16; rows of 32 and 48) and on a
//     256-wide 8-layer model written here (Q4_K_M's use_more_bits layers 0, 3, 6, 7);
//   - quantize_gguf's file: metadata copied, general.file_type / quantization_version, each
//     tensor's bytes equal to tfm::quantize of the input rows (whose Q8_0 ... Q5_1 bytes are
//     gguf-py's: tests/unit/quant), the reported RMSE recomputed, the same bytes for 1, 2 and 3
//     threads, the requantization of a quantized input, tfm::load_model on the output (logits
//     near the float model's), and NaN refused naming the tensor with no output left behind.
// The byte comparison against gguf.quants.quantize itself, through the tfm binary, is
// check_quantize.py (ctest tfm_test_quant_cli_python).
#include "typeformer/infer/model.hpp"
#include "typeformer/infer/session.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/file_quantize.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

using tfm::ggml_type;
namespace io = tfm::io;

std::string work_dir() {
  std::filesystem::create_directories(TFM_QUANT_CLI_WORK_DIR);
  return TFM_QUANT_CLI_WORK_DIR;
}
std::string data(const char* name) {
  return std::string(TFM_SOURCE_DIR) + "/tests/data/infer_model/" + name;
}

std::map<std::string, ggml_type> planned(const io::gguf_file& f, const char* preset) {
  const auto plan = tfm::plan_quantization(f, tfm::quantize_preset_of(preset));
  std::map<std::string, ggml_type> m;
  for (std::size_t i = 0; i < plan.size(); ++i) m[std::string(f.tensors()[i].name)] = plan[i].out;
  return m;
}

// A llama-named model with rows of 256: n_layer blocks of attn_q/k/v/output, ffn_gate/up/down
// and norms, token_embd, output_norm and (untied) output; values are a deterministic pattern.
std::vector<std::byte> wide_model(int n_layer, bool tied) {
  std::vector<std::byte> bytes;
  io::gguf_writer w(bytes);
  w.add("general.architecture", std::string_view("llama"));
  w.add("llama.block_count", static_cast<std::uint32_t>(n_layer));
  std::vector<std::vector<float>> keep;
  auto tensor = [&](const std::string& name, std::vector<std::int64_t> ne) {
    std::int64_t n = 1;
    for (auto e : ne) n *= e;
    keep.emplace_back(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      keep.back()[static_cast<std::size_t>(i)] =
          0.02f * std::sin(0.37f * static_cast<float>(i) + static_cast<float>(keep.size()));
    w.add_tensor(name, std::span<const std::int64_t>(ne.data(), ne.size()), ggml_type::f32,
                 std::as_bytes(std::span<const float>(keep.back())));
  };
  tensor("token_embd.weight", {256, 8});
  for (int l = 0; l < n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    tensor(b + "attn_norm.weight", {256});
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"})
      tensor(b + n + ".weight", {256, 4});
    tensor(b + "ffn_down.weight", {512, 4});
    tensor(b + "ffn_norm.weight", {256});
  }
  tensor("output_norm.weight", {256});
  if (!tied) tensor("output.weight", {256, 8});
  w.finish();
  return bytes;
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}

std::vector<float> logits(const std::string& path) {
  auto m = tfm::load_model(path);
  tfm::infer::session s(m);
  const std::vector<std::int32_t> ids{3, 17, 42, 5, 63, 0, 28, 11, 9};
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

}  // namespace

TEST_CASE("presets: llama-quantize's names and llama_ftype values") {
  // gguf-py gguf/constants.py LlamaFileType.
  const std::map<std::string, std::uint32_t> want{
      {"q4_0", 2},    {"Q4_1", 3},    {"q5_0", 8},    {"q5_1", 9},    {"Q8_0", 7},
      {"q4_k_m", 15}, {"q4_k", 15},   {"Q6_K", 18},   {"f16", 1},     {"bf16", 32},
      {"F32", 0},     {"q2_k", 10},   {"Q3_K_S", 11}, {"q3_k_m", 12}, {"q3_k", 12},
      {"q3_k_l", 13}, {"q4_k_s", 14}, {"q5_k_s", 16}, {"q5_k_m", 17}, {"Q5_K", 17}};
  for (const auto& [name, ft] : want) {
    const auto* p = tfm::find_quantize_preset(name);
    REQUIRE(p != nullptr);
    CHECK(p->file_type == ft);
  }
  CHECK(tfm::find_quantize_preset("q4_k")->base == ggml_type::q4_K);
  CHECK(tfm::find_quantize_preset("q4_k")->k_mix);
  CHECK(tfm::find_quantize_preset("q3_k")->base == ggml_type::q3_K);
  CHECK(tfm::find_quantize_preset("q2_k_s") == nullptr);
  CHECK(tfm::find_quantize_preset("") == nullptr);
  CHECK_THROWS_AS(tfm::quantize_preset_of("iq2_xxs"), tfm::value_error);
}

TEST_CASE("tensor types: the tiny gguf-py models (rows of 32 and 48)") {
  const io::gguf_file f32(data("tiny_f32.gguf")), f16(data("tiny_f16.gguf"));
  for (const char* preset : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"}) {
    CAPTURE(preset);
    const ggml_type base = tfm::quantize_preset_of(preset).base;
    for (const io::gguf_file* f : {&f32, &f16}) {
      const auto t = planned(*f, preset);
      const bool tied = f == &f16;
      CHECK(t.at("blk.0.attn_norm.weight") == ggml_type::f32);
      CHECK(t.at("output_norm.weight") == ggml_type::f32);
      CHECK(t.at("blk.1.attn_q.weight") == base);
      CHECK(t.at("blk.1.attn_v.weight") == base);
      // rows of 48: no 32-block type fits, F16 (llama.cpp refuses)
      CHECK(t.at("blk.0.ffn_down.weight") == ggml_type::f16);
      // the output (or tied token_embd): Q6_K wanted, rows of 32 are not 256-blocks -> Q8_0
      CHECK(t.at(tied ? "token_embd.weight" : "output.weight") == ggml_type::q8_0);
      if (!tied) CHECK(t.at("token_embd.weight") == base);
    }
  }
  // Q4_K_M: every 2-D tensor has rows of 32 or 48 -> Q5_0 / F16; output -> Q8_0.
  const auto k = planned(f32, "q4_k");
  CHECK(k.at("blk.0.attn_q.weight") == ggml_type::q5_0);
  CHECK(k.at("token_embd.weight") == ggml_type::q5_0);
  CHECK(k.at("output.weight") == ggml_type::q8_0);
  CHECK(k.at("blk.0.ffn_down.weight") == ggml_type::f16);
  // use_more_bits(i, 2): i >= 1 only -> layer 0 Q4_K -> Q5_0, layer 1 Q6_K -> Q8_0
  CHECK(k.at("blk.0.attn_v.weight") == ggml_type::q5_0);
  CHECK(k.at("blk.1.attn_v.weight") == ggml_type::q8_0);
  // F16: 2-D tensors F16, 1-D kept, and an F16 tensor is copied.
  const auto h = tfm::plan_quantization(f16, tfm::quantize_preset_of("f16"));
  for (std::size_t i = 0; i < h.size(); ++i) {
    CHECK(h[i].out == (f16.tensors()[i].n_dims == 1 ? ggml_type::f32 : ggml_type::f16));
    CHECK_FALSE(h[i].convert);
  }
}

TEST_CASE("tensor types: Q4_K_M's mix on rows of 256 (8 layers)") {
  for (bool tied : {false, true}) {
    CAPTURE(tied);
    const auto bytes = wide_model(8, tied);
    const auto f = io::gguf_file::from_bytes(bytes);
    const auto t = planned(f, "q4_k_m");
    // use_more_bits(i, 8): i < 1 || i >= 7 || (i - 1) % 3 == 2 -> layers 0, 3, 6, 7
    for (int l = 0; l < 8; ++l) {
      CAPTURE(l);
      const bool more = l == 0 || l == 3 || l == 6 || l == 7;
      const std::string b = "blk." + std::to_string(l) + ".";
      CHECK(t.at(b + "attn_v.weight") == (more ? ggml_type::q6_K : ggml_type::q4_K));
      CHECK(t.at(b + "ffn_down.weight") == (more ? ggml_type::q6_K : ggml_type::q4_K));
      CHECK(t.at(b + "attn_q.weight") == ggml_type::q4_K);
      CHECK(t.at(b + "ffn_up.weight") == ggml_type::q4_K);
      CHECK(t.at(b + "ffn_norm.weight") == ggml_type::f32);
    }
    CHECK(t.at("token_embd.weight") == (tied ? ggml_type::q6_K : ggml_type::q4_K));
    if (!tied) CHECK(t.at("output.weight") == ggml_type::q6_K);
    const auto q = planned(f, "q4_0");
    CHECK(q.at("blk.3.attn_v.weight") == ggml_type::q4_0);
    CHECK(q.at(tied ? "token_embd.weight" : "output.weight") == ggml_type::q6_K);
    const auto q8 = planned(f, "q8_0");
    CHECK(q8.at(tied ? "token_embd.weight" : "output.weight") == ggml_type::q8_0);
    const auto q6 = planned(f, "q6_k");
    CHECK(q6.at("blk.2.ffn_gate.weight") == ggml_type::q6_K);
  }
}

TEST_CASE("quantize_gguf: metadata, bytes, RMSE, thread counts, load_model") {
  const io::gguf_file in(data("tiny_f32.gguf"));
  const std::vector<float> want = logits(data("tiny_f32.gguf"));
  for (const std::string preset :
       {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q6_k", "bf16"}) {
    CAPTURE(preset);
    const auto& p = tfm::quantize_preset_of(preset);
    std::string first;
    for (int threads : {1, 2, 3}) {
      CAPTURE(threads);
      const std::string path =
          work_dir() + "/tiny_" + preset + "_" + std::to_string(threads) + ".gguf";
      const auto rep = tfm::quantize_gguf(in, path, p, {.threads = threads});
      const std::string bytes = read_file(path);
      CHECK(rep.file_bytes_out == bytes.size());
      if (threads == 1) {
        first = bytes;
      } else {
        CHECK(bytes == first);
        continue;
      }
      const io::gguf_file out(path);
      CHECK(out.get<std::uint32_t>("general.file_type") == p.file_type);
      CHECK(out.get<std::uint32_t>("general.quantization_version") == 2);
      for (const auto& kv : in.metadata()) {
        CAPTURE(std::string(kv.key));
        const auto* o = out.find(kv.key);
        REQUIRE(o != nullptr);
        const auto a = kv.value.raw_bytes(), b = o->value.raw_bytes();
        CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
      }
      REQUIRE(out.tensors().size() == in.tensors().size());
      REQUIRE(rep.tensors.size() == in.tensors().size());
      for (std::size_t i = 0; i < in.tensors().size(); ++i) {
        const auto& ti = in.tensors()[i];
        const auto& to = out.tensors()[i];
        CAPTURE(std::string(ti.name));
        CHECK(to.name == ti.name);
        CHECK(to.ne == ti.ne);
        CHECK(to.type == rep.tensors[i].out);
        const auto x = tfm::dequantize(ti.type, in.tensor_data(ti));
        const auto got = out.tensor_data(to);
        std::vector<std::byte> expect;
        if (to.type == ti.type) {
          const auto s = in.tensor_data(ti);
          expect.assign(s.begin(), s.end());
        } else if (to.type == ggml_type::bf16 || to.type == ggml_type::f16) {
          for (float v : x) {
            const std::uint16_t h = to.type == ggml_type::bf16 ? tfm::detail::float_to_bf16_bits(v)
                                                               : tfm::detail::float_to_f16_bits(v);
            const auto* hb = reinterpret_cast<const std::byte*>(&h);
            expect.insert(expect.end(), hb, hb + 2);
          }
        } else {
          expect = tfm::quantize(to.type, x, x.size() / ti.ne[0], ti.ne[0], ti.name);
        }
        CHECK(std::equal(got.begin(), got.end(), expect.begin(), expect.end()));
        const auto y = tfm::dequantize(to.type, got);
        double e = 0;
        for (std::size_t j = 0; j < x.size(); ++j)
          e += (double(y[j]) - x[j]) * (double(y[j]) - x[j]);
        CHECK(rep.tensors[i].rmse == doctest::Approx(std::sqrt(e / x.size())).epsilon(1e-12));
      }
      // The quantized model loads and its logits stay near the float model's (a random model
      // with rows of 32: 4-bit weights move its logits a lot; measured BF16 0.009, Q8_0 0.043,
      // 4/5-bit 0.20-0.39; the engine may keep the weights packed, hence the margins).
      const auto got = logits(path);
      CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
      const double err = rel_err(got, want);
      MESSAGE(preset, ": logits max error / max |logit| = ", err);
      CHECK(err < (p.base == ggml_type::q8_0 || p.base == ggml_type::bf16 ? 0.1 : 0.6));
    }
  }
}

TEST_CASE("quantize_gguf: a quantized input is dequantized first") {
  const io::gguf_file in(data("tiny_f16.gguf"));
  const std::string q4 = work_dir() + "/tiny_f16_q4_0.gguf", q8 = work_dir() + "/requant_q8.gguf";
  const auto r1 = tfm::quantize_gguf(in, q4, tfm::quantize_preset_of("Q4_0"));
  CHECK_FALSE(r1.requantized);
  CHECK(r1.n_fallback == 3);  // token_embd (Q6_K -> Q8_0) and the two ffn_down (-> F16)
  const io::gguf_file mid(q4);
  const auto r2 = tfm::quantize_gguf(mid, q8, tfm::quantize_preset_of("q8_0"), {.threads = 2});
  CHECK(r2.requantized);
  const io::gguf_file out(q8);
  const auto* t = out.find_tensor("blk.0.attn_q.weight");
  const auto* s = mid.find_tensor("blk.0.attn_q.weight");
  REQUIRE(t != nullptr);
  REQUIRE(s != nullptr);
  CHECK(s->type == ggml_type::q4_0);
  CHECK(t->type == ggml_type::q8_0);
  const auto x = tfm::dequantize(s->type, mid.tensor_data(*s));
  const auto expect = tfm::quantize(ggml_type::q8_0, x, x.size() / 32, 32, "q");
  const auto got = out.tensor_data(*t);
  CHECK(std::equal(got.begin(), got.end(), expect.begin(), expect.end()));
  for (const auto& tt : r2.tensors)
    if (tt.name == "blk.0.attn_q.weight") CHECK(tt.note.find("requantized from Q4_0") == 0);
}

TEST_CASE("quantize_gguf: NaN is refused naming the tensor, and no output is left") {
  auto bytes = wide_model(2, true);
  const auto f0 = io::gguf_file::from_bytes(bytes);
  const auto* t = f0.find_tensor("blk.1.attn_k.weight");
  REQUIRE(t != nullptr);
  const float nan = std::nanf("");
  std::memcpy(bytes.data() + t->file_offset + 4 * (256 * 2 + 7), &nan, 4);
  const auto f = io::gguf_file::from_bytes(bytes);
  const std::string path = work_dir() + "/nan.gguf";
  std::filesystem::remove(path);
  for (int threads : {1, 3}) {
    try {
      tfm::quantize_gguf(f, path, tfm::quantize_preset_of("q8_0"), {.threads = threads});
      FAIL("no error");
    } catch (const tfm::value_error& e) {
      const std::string m = e.what();
      CHECK(m.find("blk.1.attn_k.weight") != std::string::npos);
      CHECK(m.find("row 2 column 7 is NaN") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  }
}
