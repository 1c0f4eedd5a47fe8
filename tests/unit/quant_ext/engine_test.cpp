// A tiny llama GGUF whose linear weights are typeformer's layouts (TFM_NF4, TFM_I4_G64,
// TFM_I4_G128) and INT8 per channel (Q8_0 bytes with one scale per row), written with
// io::gguf_writer (tests/unit/infer_model/tiny_model.hpp), loaded by the engine with its default
// options and with load_options{.quantized = f32} (dequantized on load), and by the reference
// backend (dequantize on use, double sums).
// Bounds (NMSE over all logits): prefill default vs f32-on-load 1e-10 (the dequantize-in-pack GEMM
// is the float GEMM on the same values); cpu vs reference 1e-9; decode default vs f32-on-load
// 2e-3 (TESTING.md's whole-block bound: a packed INT4/INT8 decode rounds the activations to 8-bit
// blocks). The layouts are run packed once infer::packed_weight_supported lists them (the test
// says which are); until then the engine dequantizes them on load and the bounds hold trivially.
#include "../infer_model/tiny_model.hpp"

#include "typeformer/infer/model.hpp"
#include "typeformer/quant/int_formats.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace tfm;

namespace {

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return den > 0 ? num / den : num;
}

template <class Model>
std::vector<float> prefill_all(const Model& m, const std::vector<std::int32_t>& ids) {
  infer::session s(m, {.context = 64});
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

template <class Model>
std::vector<float> decode_all(const Model& m, const std::vector<std::int32_t>& ids) {
  infer::session s(m, {.context = 64});
  auto lg = s.prefill(std::span<const std::int32_t>(ids.data(), 1));
  std::vector<float> out(lg.begin(), lg.end());
  for (std::size_t i = 1; i < ids.size(); ++i) {
    lg = s.decode(ids[i]);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

/// make_quant_tiny's model with its matrices in `fmt` (a type, or "i8ch" = Q8_0 per channel).
infer_test::tiny_model make_model(std::uint64_t seed, const std::string& fmt) {
  infer_test::tiny_model m = infer_test::make_quant_tiny(seed, true, {ggml_type::q8_0});
  for (auto& [name, v] : m.w) {
    const auto [r, c] = m.shape.at(name);
    if (r == 1 || name == "token_embd.weight") continue;  // embeddings stay Q8_0
    const std::size_t R = static_cast<std::size_t>(r), C = static_cast<std::size_t>(c);
    std::vector<std::byte> bytes;
    ggml_type t = ggml_type::q8_0;
    if (fmt == "i8ch") {
      bytes = quantize_int8_per_channel(v.data(), R, C, name);
    } else {
      for (const auto& row : ggml_type_table)
        if (row.name == fmt) t = row.type;
      bytes = quantize(t, v, R, C, name);
    }
    v = dequantize(t, bytes);
    m.qbytes[name] = bytes;
    m.qtype[name] = t;
  }
  return m;
}

}  // namespace

TEST_CASE("quant_ext engine: NF4 / INT4-g64 / INT4-g128 / INT8-per-channel tiny models") {
  for (const std::string fmt : {"TFM_NF4", "TFM_I4_G64", "TFM_I4_G128", "i8ch"}) {
    CAPTURE(fmt);
    const std::uint64_t seed = 77;
    const infer_test::tiny_model tm = make_model(seed, fmt);
    const std::string path = infer_test::work_dir() + "/quant_ext_" + fmt + ".gguf";
    infer_test::write_tiny(tm, path);
    auto packed = infer::load_gguf(path);
    auto f32 = infer::load_gguf(path, {.quantized = infer::quantized_weights::f32});
    auto oracle = infer::transformer<float, reference>::from_gguf(path);
    const ggml_type t = tm.qtype.at("blk.0.attn_q.weight");
    if (infer::packed_weight_supported(t)) {
      CHECK(packed.block(0).wq.type() == t);
      CHECK(packed.block(1).w_down.type() == t);
      CHECK(packed.block(0).wq.quantized());
    } else {
      MESSAGE(ggml_type_name(t) << " is not in infer::packed_weight_supported yet: the engine "
                                   "dequantizes it on load");
      CHECK(packed.block(0).wq.type() == ggml_type::f32);
    }
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 20; ++i) ids.push_back(static_cast<std::int32_t>((i * 37 + 5) % 96));
    const auto pp = prefill_all(packed, ids), pf = prefill_all(f32, ids),
               po = prefill_all(oracle, ids);
    const auto dp = decode_all(packed, ids), df = decode_all(f32, ids);
    const double e_prefill = nmse(pp, pf), e_oracle = nmse(pp, po), e_decode = nmse(dp, df);
    MESSAGE(fmt << ": NMSE prefill default vs f32-on-load " << e_prefill << ", vs reference "
                << e_oracle << ", decode " << e_decode);
    CHECK(e_prefill < 1e-10);
    CHECK(e_oracle < 1e-9);
    CHECK(e_decode < 2e-3);
    // 1 and 3 threads: the same bits.
    std::vector<float> d1, d3;
    {
      thread_scope one(1);
      d1 = decode_all(packed, ids);
    }
    {
      thread_scope three(3);
      d3 = decode_all(packed, ids);
    }
    CHECK(d1 == d3);
  }
}
