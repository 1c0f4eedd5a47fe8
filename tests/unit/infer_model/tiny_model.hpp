// Test support for tests/unit/infer_model: random tiny llama models, written to GGUF with
// tfm::io::gguf_writer, and reading of the reference fixtures of tests/data/infer_model.
#pragma once

#include "typeformer/core/half.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#ifndef TFM_INFER_WORK_DIR  // set by CMakeLists.txt; compile-only builds (scripts/test cross
                            // phases) lack it
#define TFM_INFER_WORK_DIR "infer_model_work"
#endif

namespace infer_test {

inline std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/infer_model"; }

inline std::string work_dir() {
  std::filesystem::create_directories(TFM_INFER_WORK_DIR);
  return TFM_INFER_WORK_DIR;
}

/// A llama model's sizes and its weights as floats (already rounded to the stored type), by
/// GGUF tensor name; shapes are (rows, cols), row-major.
struct tiny_model {
  std::int64_t V = 64, C = 32, H = 4, G = 2, D = 8, F = 48, L = 2, ctx = 64;
  bool tied = false;
  tfm::ggml_type type = tfm::ggml_type::f32;
  std::map<std::string, tfm::ggml_type> qtype;  // block-quantized tensors (w holds their values)
  std::map<std::string, std::vector<std::byte>> qbytes;  // ... and their GGUF bytes
  std::map<std::string, std::vector<float>> w;
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> shape;
};

inline float stored(float x, tfm::ggml_type t) {
  if (t == tfm::ggml_type::f16) return static_cast<float>(tfm::f16(x));
  if (t == tfm::ggml_type::bf16) return static_cast<float>(tfm::bf16(x));
  return x;
}

/// Random weights (seed printed by the caller); matrices stored as `type`, norms as F32; sizes
/// from `sizes` (V, C, H, G, D, F, L, ctx).
inline tiny_model make_tiny(std::uint64_t seed, bool tied, tfm::ggml_type type,
                            const tiny_model& sizes = {}) {
  tiny_model m;
  m.V = sizes.V;
  m.C = sizes.C;
  m.H = sizes.H;
  m.G = sizes.G;
  m.D = sizes.D;
  m.F = sizes.F;
  m.L = sizes.L;
  m.ctx = sizes.ctx;
  m.tied = tied;
  m.type = type;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto mat = [&](const std::string& n, std::int64_t r, std::int64_t c, float s) {
    std::vector<float> v(static_cast<std::size_t>(r * c));
    for (float& x : v) x = stored(s * nd(rng), type);
    m.w[n] = v;
    m.shape[n] = {r, c};
  };
  auto norm = [&](const std::string& n) {
    std::vector<float> v(static_cast<std::size_t>(m.C));
    for (float& x : v) x = 1.0f + 0.1f * nd(rng);
    m.w[n] = v;
    m.shape[n] = {1, m.C};
  };
  mat("token_embd.weight", m.V, m.C, 0.5f);
  for (std::int64_t l = 0; l < m.L; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    norm(p + "attn_norm.weight");
    mat(p + "attn_q.weight", m.H * m.D, m.C, 0.3f);
    mat(p + "attn_k.weight", m.G * m.D, m.C, 0.3f);
    mat(p + "attn_v.weight", m.G * m.D, m.C, 0.3f);
    mat(p + "attn_output.weight", m.C, m.H * m.D, 0.2f);
    norm(p + "ffn_norm.weight");
    mat(p + "ffn_gate.weight", m.F, m.C, 0.2f);
    mat(p + "ffn_up.weight", m.F, m.C, 0.2f);
    mat(p + "ffn_down.weight", m.C, m.F, 0.2f);
  }
  norm("output_norm.weight");
  if (!tied) mat("output.weight", m.V, m.C, 0.3f);
  return m;
}

/// A tiny llama model whose matrices cycle through `types` (block-quantized with
/// tfm::quantize; w holds the dequantized values, what the file stores). Sizes are multiples of
/// 256 so that every format, K-quants included, fits: V 96, C 256, H 4, G 2, D 64, F 512, L 2.
inline tiny_model make_quant_tiny(std::uint64_t seed, bool tied,
                                  const std::vector<tfm::ggml_type>& types) {
  tiny_model sizes;
  sizes.V = 96;
  sizes.C = 256;
  sizes.H = 4;
  sizes.G = 2;
  sizes.D = 64;
  sizes.F = 512;
  sizes.L = 2;
  tiny_model m = make_tiny(seed, tied, tfm::ggml_type::f32, sizes);
  std::size_t i = 0;
  for (auto& [name, v] : m.w) {
    const auto [r, c] = m.shape.at(name);
    if (r == 1) continue;
    const tfm::ggml_type t = types[i++ % types.size()];
    // make_tiny's scales suit C = 32; at 8x the width, 1/sqrt(8) keeps the activations (and the
    // attention logits) near unit size, so the model is not chaotic: no softmax near-ties that
    // the 8-bit activations of the packed decode could flip.
    if (name != "token_embd.weight")
      for (float& x : v) x *= 0.35f;
    m.qbytes[name] =
        tfm::quantize(t, v, static_cast<std::size_t>(r), static_cast<std::size_t>(c), name);
    v = tfm::dequantize(t, m.qbytes[name]);
    m.qtype[name] = t;
  }
  return m;
}

/// Writes m as a GGUF llama file with tfm::io::gguf_writer.
inline void write_tiny(const tiny_model& m, const std::string& path,
                       const std::string& arch = "llama") {
  tfm::io::gguf_writer out(path);
  out.add("general.architecture", arch);
  out.add(arch + ".block_count", static_cast<std::uint32_t>(m.L));
  out.add(arch + ".context_length", static_cast<std::uint32_t>(m.ctx));
  out.add(arch + ".embedding_length", static_cast<std::uint32_t>(m.C));
  out.add(arch + ".feed_forward_length", static_cast<std::uint32_t>(m.F));
  out.add(arch + ".attention.head_count", static_cast<std::uint32_t>(m.H));
  out.add(arch + ".attention.head_count_kv", static_cast<std::uint32_t>(m.G));
  out.add(arch + ".rope.freq_base", 10000.0f);
  out.add(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
  std::map<std::string, std::vector<tfm::f16>> halves;  // kept alive until finish()
  for (const auto& [name, v] : m.w) {
    const auto [r, c] = m.shape.at(name);
    const bool vec = r == 1;
    std::vector<std::int64_t> ne =
        vec ? std::vector<std::int64_t>{c} : std::vector<std::int64_t>{c, r};
    if (const auto q = m.qtype.find(name); q != m.qtype.end()) {
      out.add_tensor(name, ne, q->second, std::span<const std::byte>(m.qbytes.at(name)));
    } else if (vec || m.type == tfm::ggml_type::f32) {
      out.add_tensor(name, ne, tfm::ggml_type::f32, std::as_bytes(std::span(v)));
    } else {
      auto& h = halves[name];
      for (float x : v) h.push_back(tfm::f16(x));
      out.add_tensor(name, ne, tfm::ggml_type::f16, std::as_bytes(std::span(h)));
    }
  }
  out.finish();
}

/// The blocks "model NAME T V" of tiny_logits.txt: name -> T x V logits.
inline std::map<std::string, std::vector<std::vector<double>>> read_tiny_logits() {
  std::ifstream in(data_dir() + "/tiny_logits.txt");
  std::map<std::string, std::vector<std::vector<double>>> out;
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    if (line.rfind("model ", 0) == 0) {
      std::string tag;
      s >> tag >> current;
      continue;
    }
    std::vector<double> row;
    for (double x; s >> x;) row.push_back(x);
    out[current].push_back(row);
  }
  return out;
}

/// "key v1 v2 ..." lines of a fixture file (first word as key; repeated keys get " #n").
inline std::map<std::string, std::vector<double>> read_keyed(const std::string& path) {
  std::ifstream in(path);
  std::map<std::string, std::vector<double>> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string key;
    s >> key;
    if (key == "top5") {
      std::string t;
      s >> t;
      key += " " + t;
    }
    std::vector<double> v;
    for (double x; s >> x;) v.push_back(x);
    out[key] = v;
  }
  return out;
}

}  // namespace infer_test
