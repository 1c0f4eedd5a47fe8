// tests/support/moe_gguf.hpp: random-weight llama mixture-of-experts GGUF files written with
// typeformer's own writer (tfm::io::gguf_writer), for tests/unit/infer_moe and bench/moe.
//
// The file has llama.cpp's names (gguf-py constants.py, MODEL_ARCH.LLAMA): llama.expert_count,
// llama.expert_used_count, blk.N.ffn_gate_inp.weight (ne [C, E], F32, as llama.cpp keeps it),
// blk.N.ffn_{gate,up}_exps.weight (ne [C, F, E]) and blk.N.ffn_down_exps.weight (ne [F, C, E]),
// and a minimal SentencePiece vocabulary (tokenizer.ggml.model "llama": <unk>, <s>, </s>, then
// "t3" ...), which llama.cpp needs to open the file. The weights come from a counter-based
// generator (splitmix64 of the seed and the tensor's name, an Irwin-Hall sum of three uniforms):
// the same bytes with every compiler and standard library, so a fixture computed from one
// build's file holds for another's. Tensors are generated one at a time while the file is
// written (a large bench model never sits in memory whole).
#pragma once

#include <typeformer/core/half.hpp>
#include <typeformer/io/gguf.hpp>
#include <typeformer/quant/quantize.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace tfm_test {

struct moe_gguf_spec {
  std::int64_t V = 64, C = 32, H = 4, G = 2, D = 8, F = 32, E = 4, K = 2, L = 2, ctx = 64;
  std::uint64_t seed = 1;
  /// Element type of the matrices (F32, F16 or a block type); norms and the router stay F32.
  tfm::ggml_type type = tfm::ggml_type::f32;
  /// Scale of the router's weights: larger spreads the routing probabilities (fewer near-ties).
  float router_scale = 1.0f;
  // Broken files for the error tests: leave out this tensor or key; write expert_used_count as
  // this value (>= 0); write this expert tensor flattened to 2-D.
  std::string omit;
  std::int64_t used_override = -1;
  std::string flatten;
};

namespace detail_moe {
inline std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline std::uint64_t name_seed(std::uint64_t seed, const std::string& name) {
  std::uint64_t h = 0xCBF29CE484222325ull ^ seed;  // FNV-1a over the name
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
  return h;
}
/// n values offset + scale * z, z = (u1 + u2 + u3 - 1.5) * 2 with u uniform on 24-bit grids
/// (mean 0, standard deviation 1): integer sums and one std::fma, so the same floats with every
/// compiler (no contraction or excess precision can change them).
inline std::vector<float> values(std::uint64_t seed, const std::string& name, std::size_t n,
                                 float scale, float offset = 0.0f) {
  std::uint64_t s = name_seed(seed, name);
  std::vector<float> v(n);
  const float step = scale * (1.0f / 8388608.0f);  // 2 * scale / 2^24
  for (float& x : v) {
    std::int64_t k = -3 * (std::int64_t{1} << 23);
    for (int i = 0; i < 3; ++i) k += static_cast<std::int64_t>(splitmix(s) >> 40);
    x = std::fma(step, static_cast<float>(k), offset);
  }
  return v;
}
}  // namespace detail_moe

/// One tensor of the model: name, ggml ne, element type, and the scale of its values.
struct moe_tensor {
  std::string name;
  std::vector<std::int64_t> ne;
  tfm::ggml_type type;
  float scale, offset;
};

/// The tensors of spec's model, in file order.
inline std::vector<moe_tensor> moe_tensors(const moe_gguf_spec& s) {
  using tfm::ggml_type;
  std::vector<moe_tensor> t;
  const ggml_type m = s.type, f32 = ggml_type::f32;
  // Scales keep the activations near unit size for C = 32 .. 512 (1/sqrt(C) per matrix).
  const float w = 1.0f / std::sqrt(static_cast<float>(s.C));
  const float wf = 1.0f / std::sqrt(static_cast<float>(s.F));
  t.push_back({"token_embd.weight", {s.C, s.V}, m, 0.5f, 0.0f});
  for (std::int64_t l = 0; l < s.L; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    t.push_back({p + "attn_norm.weight", {s.C}, f32, 0.1f, 1.0f});
    t.push_back({p + "attn_q.weight", {s.C, s.H * s.D}, m, 1.5f * w, 0.0f});
    t.push_back({p + "attn_k.weight", {s.C, s.G * s.D}, m, 1.5f * w, 0.0f});
    t.push_back({p + "attn_v.weight", {s.C, s.G * s.D}, m, w, 0.0f});
    t.push_back({p + "attn_output.weight", {s.H * s.D, s.C}, m, w, 0.0f});
    t.push_back({p + "ffn_norm.weight", {s.C}, f32, 0.1f, 1.0f});
    t.push_back({p + "ffn_gate_inp.weight", {s.C, s.E}, f32, s.router_scale * w, 0.0f});
    t.push_back({p + "ffn_gate_exps.weight", {s.C, s.F, s.E}, m, w, 0.0f});
    t.push_back({p + "ffn_up_exps.weight", {s.C, s.F, s.E}, m, w, 0.0f});
    t.push_back({p + "ffn_down_exps.weight", {s.F, s.C, s.E}, m, wf, 0.0f});
  }
  t.push_back({"output_norm.weight", {s.C}, f32, 0.1f, 1.0f});
  t.push_back({"output.weight", {s.C, s.V}, m, w, 0.0f});
  return t;
}

/// The float values of tensor t (before rounding to its type), row-major (ne reversed).
inline std::vector<float> moe_values(const moe_gguf_spec& s, const moe_tensor& t) {
  std::size_t n = 1;
  for (std::int64_t e : t.ne) n *= static_cast<std::size_t>(e);
  return detail_moe::values(s.seed, t.name, n, t.scale, t.offset);
}

/// Writes spec's model to `path` (metadata as llama.cpp's llama architecture reads it).
inline void write_moe_gguf(const moe_gguf_spec& s, const std::string& path) {
  tfm::io::gguf_writer out(path);
  out.add("general.architecture", "llama");
  out.add("general.name", "typeformer random MoE");
  out.add("llama.block_count", static_cast<std::uint32_t>(s.L));
  out.add("llama.context_length", static_cast<std::uint32_t>(s.ctx));
  out.add("llama.embedding_length", static_cast<std::uint32_t>(s.C));
  out.add("llama.feed_forward_length", static_cast<std::uint32_t>(s.F));
  out.add("llama.attention.head_count", static_cast<std::uint32_t>(s.H));
  out.add("llama.attention.head_count_kv", static_cast<std::uint32_t>(s.G));
  out.add("llama.attention.key_length", static_cast<std::uint32_t>(s.D));
  out.add("llama.attention.value_length", static_cast<std::uint32_t>(s.D));
  out.add("llama.rope.dimension_count", static_cast<std::uint32_t>(s.D));
  out.add("llama.rope.freq_base", 10000.0f);
  out.add("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  out.add("llama.vocab_size", static_cast<std::uint32_t>(s.V));
  if (s.omit != "llama.expert_count")
    out.add("llama.expert_count", static_cast<std::uint32_t>(s.E));
  if (s.omit != "llama.expert_used_count")
    out.add("llama.expert_used_count",
            static_cast<std::uint32_t>(s.used_override >= 0 ? s.used_override : s.K));
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
  for (std::int64_t i = 0; i < s.V; ++i) {
    tokens.push_back(i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "t" + std::to_string(i));
    scores.push_back(-static_cast<float>(i));
    types.push_back(i == 0 ? 2 : i < 3 ? 3 : 1);  // unknown, control, normal
  }
  out.add("tokenizer.ggml.model", "llama");
  out.add("tokenizer.ggml.tokens", tokens);
  out.add("tokenizer.ggml.scores", scores);
  out.add("tokenizer.ggml.token_type", types);
  out.add("tokenizer.ggml.bos_token_id", std::uint32_t{1});
  out.add("tokenizer.ggml.eos_token_id", std::uint32_t{2});
  out.add("tokenizer.ggml.unknown_token_id", std::uint32_t{0});
  out.add("tokenizer.ggml.add_bos_token", false);
  std::vector<moe_tensor> ts;
  for (moe_tensor& t : moe_tensors(s)) {
    if (t.name == s.omit) continue;
    if (t.name == s.flatten) t.ne = {t.ne[0], t.ne[1] * t.ne[2]};
    ts.push_back(std::move(t));
  }
  for (const moe_tensor& t : ts) out.add_tensor_info(t.name, t.ne, t.type);
  out.write_header();
  for (const moe_tensor& t : ts) {
    const std::vector<float> v = moe_values(s, t);
    const auto cols = static_cast<std::size_t>(t.ne[0]), rows = v.size() / cols;
    if (t.type == tfm::ggml_type::f32) {
      out.write_tensor_data(std::as_bytes(std::span(v)));
    } else if (t.type == tfm::ggml_type::f16) {
      std::vector<tfm::f16> h;
      h.reserve(v.size());
      for (float x : v) h.push_back(tfm::f16(x));
      out.write_tensor_data(std::as_bytes(std::span(h)));
    } else {
      const std::vector<std::byte> q = tfm::quantize(t.type, v, rows, cols, t.name);
      out.write_tensor_data(q);
    }
  }
  out.finish();
}

/// FNV-1a 64 of a file's bytes (fixtures record the hash of the file they were computed on).
inline std::uint64_t file_hash(std::span<const std::byte> bytes) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (std::byte b : bytes) h = (h ^ static_cast<std::uint8_t>(b)) * 0x100000001B3ull;
  return h;
}

}  // namespace tfm_test
