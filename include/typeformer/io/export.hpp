// typeformer/io/export.hpp
//
// WHAT THIS REPRESENTS
//   Export of a decoder trained with nn::gpt to the files other programs read: its parameters
//   (under nn::gpt's names), its nn::dynamic_config and its byte-level tokenizer, held in an
//   io::export_model, written as
//     io::export_gguf(m, "model.gguf", {.type = ggml_type::f16})   GGUF v3 for llama.cpp
//     io::export_hf(m, "model_dir", {.type = ggml_type::bf16})     a Hugging Face directory:
//         config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
//         generation_config.json
//   A training checkpoint becomes an export_model through train/export.hpp.
//
// ARCHITECTURES (export_arch_of; anything else is a tfm::unsupported_error naming the field)
//   LLaMA style  norm rms_norm, mlp swiglu, position rope, bias off, window 0
//                -> GGUF `llama` (llama.cpp llama.cpp/src/llama-arch.cpp LLM_ARCH_LLAMA) and
//                   HF LlamaForCausalLM (transformers models/llama/modeling_llama.py)
//   GPT-2 style  norm layer_norm, mlp gelu, position learned, n_kv_head == n_head, window 0
//                -> GGUF `gpt2` (LLM_ARCH_GPT2) and HF GPT2LMHeadModel (modeling_gpt2.py);
//                   a model trained without biases gets zero biases (both formats require them)
//   Numerics that must agree: RMSNorm x / sqrt(mean(x^2) + eps) w and LayerNorm with eps under
//   the variance, as llama.cpp (ggml_rms_norm, ggml_norm) and transformers compute them; nn's
//   gelu is the tanh approximation (ops/elementwise.hpp op::gelu_tanh), which is ggml_gelu and
//   HF's activation_function "gelu_new"; SiLU in SwiGLU everywhere (hidden_act "silu").
//
// TENSORS (nn name -> GGUF name [ggml ne] ; HF name (row-major shape))
//   wte.weight (V,C)               token_embd.weight [C,V] ; model.embed_tokens / transformer.wte
//   wpe.weight (T,C)               position_embd.weight [C,T] ; transformer.wpe.weight
//   h.N.ln_1.{weight,bias}         blk.N.attn_norm ; model.layers.N.input_layernorm / h.N.ln_1
//   h.N.attn.c_attn.weight         LLaMA: rows [0,HD) q, [HD,HD+GD) k, [HD+GD,HD+2GD) v ->
//     ((H+2G)D, C)                   blk.N.attn_q / attn_k / attn_v ; self_attn.q_proj / k_proj /
//                                    v_proj (q and k rows permuted per head, below)
//                                  GPT-2: blk.N.attn_qkv [C,3C] ; h.N.attn.c_attn (C,3C) (Conv1D)
//   h.N.attn.c_proj                blk.N.attn_output ; self_attn.o_proj / h.N.attn.c_proj (T'd)
//   h.N.ln_2                       blk.N.ffn_norm ; post_attention_layernorm / h.N.ln_2
//   h.N.mlp.gate / up / down       blk.N.ffn_gate / ffn_up / ffn_down ; mlp.gate_proj / up_proj /
//                                  down_proj
//   h.N.mlp.c_fc / c_proj          blk.N.ffn_up / ffn_down ; h.N.mlp.c_fc / c_proj (T'd)
//   ln_f                           output_norm ; model.norm / transformer.ln_f
//   lm_head.weight (V,C)           output.weight ; lm_head.weight (absent when tied, except in
//                                  GPT-2 GGUF, which always carries output.weight)
//   GGUF keeps 1-D tensors (norms, biases) in F32 as llama.cpp's converter does; the other
//   tensors and every HF tensor take the requested type (F32, F16 or BF16, round to nearest
//   even).
//
// ROPE PAIRS
//   nn's rope rotates adjacent pairs (2i, 2i+1) of each head (ops/rope.hpp style::interleaved),
//   which is llama.cpp's "normal" rope for arch llama, so GGUF rows are nn's rows. HF's
//   rotate_half rotates (i, i + D/2) with the same frequency base^(-2i/D), so the HF q_proj and
//   k_proj rows are permuted within each head: hf[i] = nn[2i], hf[D/2 + i] = nn[2i + 1] (the
//   inverse of LlamaModel.permute in llama.cpp's convert_hf_to_gguf.py).
//
// TOKENIZER
//   GGUF: tokenizer.ggml.model "gpt2" with the GPT-2 bytes_to_unicode text of every token and
//   merge, token_type 1 (normal), 3 (control: the tokenizer's special tokens) or 5 (unused id,
//   text "<unused_N>"), pre "gpt-2" for the GPT-2 split pattern (the one bpe_trainer uses),
//   "smollm" for digits split off first and then GPT-2's split (bpe_tokenizer::split_digits(),
//   HF's [Digits(individual_digits), ByteLevel]; llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM) or
//   "qwen2", add_bos_token false. A byte-level run (ids = byte values) is written as the 256
//   byte tokens without merges (byte_vocabulary()), which llama.cpp tokenizes byte by byte.
//   HF: the tokenizer's to_hf_json() (any split pattern). BOS / EOS / padding: export_model's
//   ids (a GGUF read by io/export_gguf_import.hpp carries its own), else "<|endoftext|>", when
//   the tokenizer has it as a special token, is BOS and EOS in both formats. A chat template is
//   tokenizer.chat_template in GGUF and tokenizer_config.json's "chat_template" in HF.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/nn/config.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

/// One parameter as float values in row-major order.
struct export_tensor {
  std::vector<index_t> extents;
  std::vector<float> values;
};

/// Parameters by their nn::gpt names ("wte.weight", "h.0.attn.c_attn.weight", ...).
using export_weights = std::map<std::string, export_tensor, std::less<>>;

/// What an export needs: the config, every parameter of the model and its tokenizer.
struct export_model {
  nn::dynamic_config config;
  export_weights weights;
  bpe_tokenizer tokenizer;          ///< byte-level BPE; byte_vocabulary() for a byte-level run
  std::string name = "typeformer";  ///< general.name / the HF "_name_or_path"
  /// BOS, EOS and padding ids (GGUF tokenizer.ggml.{bos,eos,padding}_token_id; HF config.json
  /// {bos,eos,pad}_token_id and tokenizer_config.json's token texts). nullopt: BOS and EOS are
  /// the tokenizer's "<|endoftext|>" when it has one (GPT-2's), no padding id.
  std::optional<std::int32_t> bos, eos, pad;
  std::string chat_template;  ///< tokenizer.chat_template / tokenizer_config.json; empty: none
};

/// Element type of the exported matrices: ggml_type::f32, f16 or bf16.
struct export_options {
  ggml_type type = ggml_type::f32;
};

/// The two families the formats can express (file comment).
enum class export_arch { llama, gpt2 };

/// The parameters of a model (m.parameters()) as float copies.
template <class T>
export_weights weights_of(const nn::parameter_list<T>& ps) {
  export_weights w;
  for (const auto& p : ps) {
    export_tensor t;
    t.extents.assign(p.data->extents.begin(), p.data->extents.end());
    const auto n = static_cast<std::size_t>(p.data->size());
    t.values.resize(n);
    const T* src = p.data->value.data();
    for (std::size_t i = 0; i < n; ++i) t.values[i] = static_cast<float>(src[i]);
    w[p.name] = std::move(t);
  }
  return w;
}

/// The byte tokenizer (id = byte value) as a byte-level BPE of 256 tokens without merges.
inline bpe_tokenizer byte_vocabulary() {
  std::vector<std::string> tokens(256);
  for (int b = 0; b < 256; ++b) tokens[static_cast<std::size_t>(b)] = std::string(1, char(b));
  return bpe_tokenizer(std::move(tokens), {}, {}, split_pattern::gpt2);
}

/// The family of `c`, or tfm::unsupported_error naming the field neither GGUF nor HF can express.
inline export_arch export_arch_of(const nn::dynamic_config& c) {
  auto refuse = [](const char* field, const std::string& why) {
    fail(errc::unsupported, "tfm::io::export: config field ", field, " ", why,
         "; exportable are LLaMA style (rms_norm, swiglu, rope, no bias) and GPT-2 style "
         "(layer_norm, gelu, learned positions, n_kv_head = n_head).");
  };
  if (c.window != 0)
    refuse("window", "= " + std::to_string(c.window) +
                         " (sliding-window attention) has no equivalent in GGUF llama/gpt2 or "
                         "HF Llama/GPT-2");
  if (c.position == nn::position_kind::alibi)
    refuse("position", "= alibi has no equivalent in GGUF llama/gpt2 or HF Llama/GPT-2");
  if (c.position == nn::position_kind::rope) {
    if (c.norm != nn::norm_kind::rms_norm)
      refuse("norm", "= layer_norm with rope fits no exportable architecture");
    if (c.mlp == nn::mlp_kind::gelu)
      refuse("mlp", "= gelu with rope fits no exportable architecture");
    if (c.mlp == nn::mlp_kind::moe) {  // llama.cpp's llama MoE (Mixtral): softmax top-k
      if (c.router != moe_router_kind::softmax_topk && c.router != moe_router_kind::noisy_topk)
        fail(errc::unsupported,
             "tfm::io::export: config field router is not softmax_topk (or noisy_topk, whose "
             "inference is softmax_topk); the llama architecture's mixture of experts (llama.cpp, "
             "Mixtral) gates with the softmax of the k chosen logits.");
      if (c.n_shared_expert > 0)
        fail(errc::unsupported,
             "tfm::io::export: config field n_shared_expert = ", c.n_shared_expert,
             ": the llama architecture has no shared experts.");
    }
    if (c.bias) refuse("bias", "= on with rope: the LLaMA export writes no linear biases");
    return export_arch::llama;
  }
  if (c.norm != nn::norm_kind::layer_norm)
    refuse("norm", "= rms_norm with learned positions fits no exportable architecture");
  if (c.mlp != nn::mlp_kind::gelu)
    refuse("mlp", "= swiglu with learned positions fits no exportable architecture");
  if (c.n_kv_head != c.n_head)
    refuse("n_kv_head", "= " + std::to_string(c.n_kv_head) + " differs from n_head = " +
                            std::to_string(c.n_head) + ": GPT-2 has no grouped-query attention");
  return export_arch::gpt2;
}

namespace detail::exporter {

/// A tensor of the output file: its name, row-major shape and float values.
struct out_tensor {
  std::string name;
  std::vector<index_t> shape;
  std::vector<float> values;
};

inline std::string extents_text(const std::vector<index_t>& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < e.size(); ++i) s += (i ? ", " : "") + std::to_string(e[i]);
  return s + ")";
}

/// Reads parameters from an export_model, checking names and extents; remembers what was used.
class source {
 public:
  explicit source(const export_model& m) : m_(m) {}
  const export_tensor& get(const std::string& name, std::vector<index_t> want) {
    auto it = m_.weights.find(name);
    if (it == m_.weights.end())
      fail(errc::value, "tfm::io::export: the model has no parameter '", name, "'.");
    if (it->second.extents != want)
      fail(errc::value, "tfm::io::export: parameter '", name, "' has extents ",
           extents_text(it->second.extents), ", the config needs ", extents_text(want), ".");
    index_t n = 1;
    for (index_t e : want) n *= e;
    if (static_cast<index_t>(it->second.values.size()) != n)
      fail(errc::value, "tfm::io::export: parameter '", name, "' holds ", it->second.values.size(),
           " values for extents ", extents_text(want), ".");
    used_.push_back(name);
    return it->second;
  }
  bool has(const std::string& name) const { return m_.weights.count(name) != 0; }
  /// value_error naming a parameter that no output tensor took.
  void check_all_used() const {
    for (const auto& [name, t] : m_.weights) {
      bool found = false;
      for (const auto& u : used_) found = found || u == name;
      if (!found)
        fail(errc::value, "tfm::io::export: parameter '", name,
             "' is not part of the model the config describes.");
    }
  }

 private:
  const export_model& m_;
  std::vector<std::string> used_;
};

/// Rows [r0, r1) of a (rows, cols) matrix.
inline std::vector<float> rows(const export_tensor& t, index_t r0, index_t r1) {
  const index_t cols = t.extents[1];
  return std::vector<float>(t.values.begin() + r0 * cols, t.values.begin() + r1 * cols);
}

/// The transpose of a (rows, cols) matrix.
inline std::vector<float> transpose(const std::vector<float>& v, index_t rows, index_t cols) {
  std::vector<float> out(v.size());
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) out[c * rows + r] = v[r * cols + c];
  return out;
}

/// nn's interleaved rope rows -> HF rotate_half rows, head by head (file comment): a (n D, C)
/// matrix with hf[h D + i] = nn[h D + 2i], hf[h D + D/2 + i] = nn[h D + 2i + 1].
inline std::vector<float> to_rotate_half(const std::vector<float>& v, index_t heads, index_t D,
                                         index_t cols) {
  std::vector<float> out(v.size());
  const index_t half = D / 2;
  for (index_t h = 0; h < heads; ++h)
    for (index_t i = 0; i < half; ++i)
      for (int s = 0; s < 2; ++s) {
        const float* src = v.data() + (h * D + 2 * i + s) * cols;
        float* dst = out.data() + (h * D + s * half + i) * cols;
        std::memcpy(dst, src, static_cast<std::size_t>(cols) * sizeof(float));
      }
  return out;
}

/// HF rotate_half rows -> nn's interleaved rope rows, head by head, of a (heads D, cols)
/// matrix: out[h D + 2i + s] = v[h D + s D/2 + i]. The inverse of to_rotate_half.
inline std::vector<float> from_rotate_half(const std::vector<float>& v, index_t heads, index_t D,
                                           index_t cols) {
  std::vector<float> out(v.size());
  const index_t half = D / 2;
  for (index_t h = 0; h < heads; ++h)
    for (index_t i = 0; i < half; ++i)
      for (int s = 0; s < 2; ++s) {
        const float* src = v.data() + (h * D + s * half + i) * cols;
        float* dst = out.data() + (h * D + 2 * i + s) * cols;
        std::memcpy(dst, src, static_cast<std::size_t>(cols) * sizeof(float));
      }
  return out;
}

enum class target { gguf, hf };

/// The width of each routed expert (expert_ffn, or ffn when it is 0).
inline index_t expert_width(const nn::dynamic_config& c) {
  return c.expert_ffn > 0 ? c.expert_ffn : c.ffn;
}

/// One MoE layer's tensors (nn/moe.hpp's names): GGUF keeps the expert tables 3-D
/// (blk.N.ffn_{gate,up,down}_exps, ggml ne [C, Fe, E] / [Fe, C, E]) beside the router
/// blk.N.ffn_gate_inp [C, E]; HF Mixtral splits them per expert
/// (block_sparse_moe.experts.e.w1 = gate, w3 = up, w2 = down; block_sparse_moe.gate = router).
template <class Put>
void map_moe(source& src, Put&& put, const nn::dynamic_config& c, const std::string& p,
             const std::string& o, bool hf) {
  const index_t E = c.n_expert, C = c.n_embd, Fe = expert_width(c);
  const export_tensor& router = src.get(p + "mlp.router.weight", {E, C});
  if (c.router == moe_router_kind::noisy_topk)  // training-time noise only: not written
    (void)src.get(p + "mlp.noise.weight", {E, C});
  const export_tensor& g = src.get(p + "mlp.experts.gate", {E, Fe, C});
  const export_tensor& u = src.get(p + "mlp.experts.up", {E, Fe, C});
  const export_tensor& d = src.get(p + "mlp.experts.down", {E, C, Fe});
  if (!hf) {
    put(o + "ffn_gate_inp.weight", {E, C}, router.values);
    put(o + "ffn_gate_exps.weight", {E, Fe, C}, g.values);
    put(o + "ffn_up_exps.weight", {E, Fe, C}, u.values);
    put(o + "ffn_down_exps.weight", {E, C, Fe}, d.values);
    return;
  }
  const std::string b = o + "block_sparse_moe.";
  put(b + "gate.weight", {E, C}, router.values);
  auto part = [&](const export_tensor& t, index_t e, index_t n) {
    return std::vector<float>(t.values.begin() + e * n, t.values.begin() + (e + 1) * n);
  };
  for (index_t e = 0; e < E; ++e) {
    const std::string x = b + "experts." + std::to_string(e) + ".";
    put(x + "w1.weight", {Fe, C}, part(g, e, Fe * C));
    put(x + "w3.weight", {Fe, C}, part(u, e, Fe * C));
    put(x + "w2.weight", {C, Fe}, part(d, e, C * Fe));
  }
}

/// The output tensors of `m` for `arch` in `tgt`'s names and layouts (file comment's table).
inline std::vector<out_tensor> map_llama(const export_model& m, target tgt) {
  const nn::dynamic_config& c = m.config;
  const index_t V = c.vocab, C = c.n_embd, H = c.n_head, G = c.n_kv_head, D = C / H, F = c.ffn;
  const bool hf = tgt == target::hf;
  source src(m);
  std::vector<out_tensor> out;
  auto put = [&](std::string name, std::vector<index_t> shape, std::vector<float> v) {
    out.push_back({std::move(name), std::move(shape), std::move(v)});
  };
  auto copy = [&](std::string name, const std::string& from, std::vector<index_t> shape) {
    put(std::move(name), shape, src.get(from, shape).values);
  };
  copy(hf ? "model.embed_tokens.weight" : "token_embd.weight", "wte.weight", {V, C});
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const std::string o =
        hf ? "model.layers." + std::to_string(l) + "." : "blk." + std::to_string(l) + ".";
    copy(o + (hf ? "input_layernorm.weight" : "attn_norm.weight"), p + "ln_1.weight", {C});
    const export_tensor& qkv = src.get(p + "attn.c_attn.weight", {(H + 2 * G) * D, C});
    auto q = rows(qkv, 0, H * D), k = rows(qkv, H * D, (H + G) * D),
         v = rows(qkv, (H + G) * D, (H + 2 * G) * D);
    if (hf) {
      q = to_rotate_half(q, H, D, C);
      k = to_rotate_half(k, G, D, C);
    }
    put(o + (hf ? "self_attn.q_proj.weight" : "attn_q.weight"), {H * D, C}, std::move(q));
    put(o + (hf ? "self_attn.k_proj.weight" : "attn_k.weight"), {G * D, C}, std::move(k));
    put(o + (hf ? "self_attn.v_proj.weight" : "attn_v.weight"), {G * D, C}, std::move(v));
    copy(o + (hf ? "self_attn.o_proj.weight" : "attn_output.weight"), p + "attn.c_proj.weight",
         {C, C});
    copy(o + (hf ? "post_attention_layernorm.weight" : "ffn_norm.weight"), p + "ln_2.weight", {C});
    if (c.mlp == nn::mlp_kind::moe) {
      map_moe(src, put, c, p, o, hf);
      continue;
    }
    copy(o + (hf ? "mlp.gate_proj.weight" : "ffn_gate.weight"), p + "mlp.gate.weight", {F, C});
    copy(o + (hf ? "mlp.up_proj.weight" : "ffn_up.weight"), p + "mlp.up.weight", {F, C});
    copy(o + (hf ? "mlp.down_proj.weight" : "ffn_down.weight"), p + "mlp.down.weight", {C, F});
  }
  copy(hf ? "model.norm.weight" : "output_norm.weight", "ln_f.weight", {C});
  if (!c.tie_embeddings) copy(hf ? "lm_head.weight" : "output.weight", "lm_head.weight", {V, C});
  src.check_all_used();
  return out;
}

inline std::vector<out_tensor> map_gpt2(const export_model& m, target tgt) {
  const nn::dynamic_config& c = m.config;
  const index_t V = c.vocab, C = c.n_embd, F = c.ffn, T = c.block_size;
  const bool hf = tgt == target::hf;
  source src(m);
  std::vector<out_tensor> out;
  auto put = [&](std::string name, std::vector<index_t> shape, std::vector<float> v) {
    out.push_back({std::move(name), std::move(shape), std::move(v)});
  };
  // A bias the model lacks is zero (GPT-2 files always carry them).
  auto bias = [&](std::string name, const std::string& from, index_t n) {
    put(std::move(name), {n},
        src.has(from) ? src.get(from, {n}).values
                      : std::vector<float>(static_cast<std::size_t>(n)));
  };
  // A linear layer (out, in): GGUF keeps it, HF's Conv1D stores (in, out).
  auto linear = [&](const std::string& gguf, const std::string& hf_name, const std::string& from,
                    index_t n_out, index_t n_in) {
    const auto& w = src.get(from + ".weight", {n_out, n_in});
    if (hf)
      put(hf_name + ".weight", {n_in, n_out}, transpose(w.values, n_out, n_in));
    else
      put(gguf + ".weight", {n_out, n_in}, w.values);
    bias((hf ? hf_name : gguf) + ".bias", from + ".bias", n_out);
  };
  auto norm = [&](const std::string& gguf, const std::string& hf_name, const std::string& from) {
    const std::string to = hf ? hf_name : gguf;
    put(to + ".weight", {C}, src.get(from + ".weight", {C}).values);
    bias(to + ".bias", from + ".bias", C);
  };
  put(hf ? "transformer.wte.weight" : "token_embd.weight", {V, C},
      src.get("wte.weight", {V, C}).values);
  put(hf ? "transformer.wpe.weight" : "position_embd.weight", {T, C},
      src.get("wpe.weight", {T, C}).values);
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const std::string g = "blk." + std::to_string(l) + ".";
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    norm(g + "attn_norm", h + "ln_1", p + "ln_1");
    linear(g + "attn_qkv", h + "attn.c_attn", p + "attn.c_attn", 3 * C, C);
    linear(g + "attn_output", h + "attn.c_proj", p + "attn.c_proj", C, C);
    norm(g + "ffn_norm", h + "ln_2", p + "ln_2");
    linear(g + "ffn_up", h + "mlp.c_fc", p + "mlp.c_fc", F, C);
    linear(g + "ffn_down", h + "mlp.c_proj", p + "mlp.c_proj", C, F);
  }
  norm("output_norm", "transformer.ln_f", "ln_f");
  const char* head = c.tie_embeddings ? "wte.weight" : "lm_head.weight";
  if (!hf || !c.tie_embeddings)
    put(hf ? "lm_head.weight" : "output.weight", {V, C}, src.get(head, {V, C}).values);
  src.check_all_used();
  return out;
}

inline std::vector<out_tensor> map_tensors(const export_model& m, target tgt) {
  nn::validate(m.config);
  return export_arch_of(m.config) == export_arch::llama ? map_llama(m, tgt) : map_gpt2(m, tgt);
}

inline void check_type(ggml_type t) {
  if (t != ggml_type::f32 && t != ggml_type::f16 && t != ggml_type::bf16)
    fail(errc::unsupported, "tfm::io::export: element type ", ggml_type_name(t),
         " is not an export type; use f32, f16 or bf16.");
}

/// The values as little-endian bytes of `t`.
inline std::vector<std::byte> encode(const std::vector<float>& v, ggml_type t) {
  std::vector<std::byte> out;
  if (t == ggml_type::f32) {
    out.resize(v.size() * sizeof(float));
    if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  } else if (t == ggml_type::f16) {
    out.resize(v.size() * sizeof(f16));
    for (std::size_t i = 0; i < v.size(); ++i) {
      const f16 h(v[i]);
      std::memcpy(out.data() + i * sizeof(f16), &h, sizeof(f16));
    }
  } else {
    out.resize(v.size() * sizeof(bf16));
    for (std::size_t i = 0; i < v.size(); ++i) {
      const bf16 h(v[i]);
      std::memcpy(out.data() + i * sizeof(bf16), &h, sizeof(bf16));
    }
  }
  return out;
}

/// The GGUF tokenizer arrays of a byte-level BPE (file comment).
struct gguf_vocab {
  std::vector<std::string> tokens, merges;
  std::vector<std::int32_t> types;
  std::string pre;
};

/// The id of the special token "<|endoftext|>" (GPT-2's BOS and EOS), or -1.
inline std::int64_t eos_of(const bpe_tokenizer& tok) {
  for (const auto& sp : tok.specials())
    if (sp.text == "<|endoftext|>") return sp.id;
  return -1;
}

/// The BOS, EOS and padding ids the files name (-1: none; export_model's comment).
struct special_ids {
  std::int64_t bos = -1, eos = -1, pad = -1;
};

inline special_ids specials_of(const export_model& m) {
  special_ids s;
  const std::int64_t eot = eos_of(m.tokenizer);
  s.bos = m.bos ? *m.bos : eot;
  s.eos = m.eos ? *m.eos : eot;
  s.pad = m.pad ? *m.pad : -1;
  for (const auto& [what, id] :
       {std::pair<const char*, std::int64_t>{"bos", s.bos}, {"eos", s.eos}, {"pad", s.pad}})
    if (id < -1 || id >= m.config.vocab)
      fail(errc::value, "tfm::io::export: the ", what, " id ", id,
           " is outside the model's vocabulary of ", m.config.vocab, ".");
  return s;
}

/// Whether id is a regular token of tok (false for an unused id of a vocabulary with gaps).
inline bool token_present(const bpe_tokenizer& tok, std::int32_t id) {
  if (id < 0 || static_cast<std::size_t>(id) >= tok.vocab_size()) return false;
  if (tok.token_count() >= tok.vocab_size()) return true;  // no gaps
#if TFM_NO_EXCEPTIONS
  fail(errc::unsupported,
       "tfm::io::export: a BPE vocabulary with unused ids needs a build with exceptions.");
#else
  try {
    (void)tok.token_bytes(id);
    return true;
  } catch (const index_error&) {  // an unused id
    return false;
  }
#endif
}

inline gguf_vocab vocab_of(const bpe_tokenizer& tok, index_t vocab) {
  if (static_cast<index_t>(tok.vocab_size()) > vocab)
    fail(errc::value, "tfm::io::export: the tokenizer has ", tok.vocab_size(),
         " ids, more than the model's vocabulary of ", vocab, ".");
  if (tok.add_prefix_space())
    fail(errc::unsupported,
         "tfm::io::export: a tokenizer that adds a prefix space has no GGUF gpt2 equivalent.");
  if (tok.ignore_merges())
    fail(errc::unsupported,
         "tfm::io::export: a tokenizer that ignores merges for whole-word tokens has no GGUF "
         "gpt2 pre-tokenizer equivalent here.");
  gguf_vocab g;
  if (tok.pattern() == split_pattern::gpt2)
    g.pre = tok.split_digits() ? "smollm" : "gpt-2";
  else if (tok.pattern() == split_pattern::qwen2 && !tok.split_digits())
    g.pre = "qwen2";
  else
    fail(errc::unsupported,
         "tfm::io::export: the tokenizer's split pattern has no GGUF pre-tokenizer name here; "
         "supported: gpt2 (pre 'gpt-2'), digits then gpt2 (pre 'smollm'), qwen2.");
  g.tokens.resize(static_cast<std::size_t>(vocab));
  g.types.assign(static_cast<std::size_t>(vocab), 1);
  for (index_t id = 0; id < vocab; ++id) {
    const auto i = static_cast<std::size_t>(id);
    const auto id32 = static_cast<std::int32_t>(id);
    const bool special = tok.is_special(id32);
    if (!special && !token_present(tok, id32)) {
      g.tokens[i] = "<unused_" + std::to_string(id) + ">";
      g.types[i] = 5;
    } else if (special) {
      g.tokens[i] = std::string(tok.token_bytes(id32));
      g.types[i] = 3;
    } else {
      g.tokens[i] = tfm::detail::bpe::map_bytes(tok.token_bytes(id32));
    }
  }
  for (const auto& [a, b] : tok.merges())
    g.merges.push_back(g.tokens[static_cast<std::size_t>(a)] + " " +
                       g.tokens[static_cast<std::size_t>(b)]);
  return g;
}

/// Shortest round-trip text of a double (a JSON number).
inline std::string number(double v) {
  char b[64];
  auto r = std::to_chars(b, b + sizeof b, v);
  std::string s(b, r.ptr);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

/// Writes `text` to `path` through path.tmp and a rename.
inline void write_text(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) fail(errc::io, "tfm::io::export: cannot write '", tmp, "'.");
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    fail(errc::io, "tfm::io::export: cannot write '", tmp, "'.");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(errc::io, "tfm::io::export: cannot rename '", tmp, "' to '", path, "'.");
}

inline const char* torch_dtype(ggml_type t) {
  return t == ggml_type::f16 ? "float16" : t == ggml_type::bf16 ? "bfloat16" : "float32";
}

/// config.json of the HF model (transformers' LlamaConfig / GPT2Config field names).
inline std::string hf_config(const export_model& m, export_arch arch, ggml_type t,
                             const special_ids& ids) {
  const nn::dynamic_config& c = m.config;
  auto id_text = [](std::int64_t id) { return id >= 0 ? std::to_string(id) : "null"; };
  std::string j = "{\n";
  auto field = [&](const char* k, const std::string& v) {
    j += std::string(j.size() > 2 ? ",\n" : "") + "  \"" + k + "\": " + v;
  };
  auto str = [](std::string_view s) {
    std::string q;
    tfm::detail::json::append_quoted(q, s);
    return q;
  };
  const std::string tied = c.tie_embeddings ? "true" : "false";
  if (arch == export_arch::llama) {
    const bool moe = c.mlp == nn::mlp_kind::moe;  // Mixtral (modeling_mixtral.py)
    field("architectures", moe ? "[\"MixtralForCausalLM\"]" : "[\"LlamaForCausalLM\"]");
    field("model_type", moe ? "\"mixtral\"" : "\"llama\"");
    field("vocab_size", std::to_string(c.vocab));
    field("hidden_size", std::to_string(c.n_embd));
    field("intermediate_size", std::to_string(moe ? expert_width(c) : c.ffn));
    if (moe) {
      field("num_local_experts", std::to_string(c.n_expert));
      field("num_experts_per_tok", std::to_string(c.n_expert_used));
      field("router_aux_loss_coef", number(c.moe_aux_loss));
      field("output_router_logits", "false");
      field("sliding_window", "null");
    }
    field("num_hidden_layers", std::to_string(c.n_layer));
    field("num_attention_heads", std::to_string(c.n_head));
    field("num_key_value_heads", std::to_string(c.n_kv_head));
    field("head_dim", std::to_string(c.n_embd / c.n_head));
    field("max_position_embeddings", std::to_string(c.block_size));
    field("rms_norm_eps", number(c.norm_eps));
    field("rope_theta", number(c.rope_base));
    field("rope_scaling", "null");
    field("hidden_act", "\"silu\"");
    field("attention_bias", "false");
    field("mlp_bias", "false");
    field("attention_dropout", "0.0");
    field("pretraining_tp", "1");
  } else {
    field("architectures", "[\"GPT2LMHeadModel\"]");
    field("model_type", "\"gpt2\"");
    field("vocab_size", std::to_string(c.vocab));
    field("n_positions", std::to_string(c.block_size));
    field("n_ctx", std::to_string(c.block_size));
    field("n_embd", std::to_string(c.n_embd));
    field("n_layer", std::to_string(c.n_layer));
    field("n_head", std::to_string(c.n_head));
    field("n_inner", std::to_string(c.ffn));
    field("activation_function", "\"gelu_new\"");
    field("layer_norm_epsilon", number(c.norm_eps));
    field("resid_pdrop", "0.0");
    field("embd_pdrop", "0.0");
    field("attn_pdrop", "0.0");
    field("scale_attn_weights", "true");
  }
  field("initializer_range", "0.02");
  field("tie_word_embeddings", tied);
  field("bos_token_id", id_text(ids.bos));
  field("eos_token_id", id_text(ids.eos));
  if (ids.pad >= 0) field("pad_token_id", id_text(ids.pad));
  field("torch_dtype", str(torch_dtype(t)));
  field("use_cache", "true");
  field("_name_or_path", str(m.name));
  return j + "\n}\n";
}

}  // namespace detail::exporter

/// Writes `m` as a GGUF v3 file at `path` (through path.tmp; architecture, keys and names in the
/// file comment). tfm::unsupported_error for a config or tokenizer the format cannot express,
/// tfm::value_error for parameters that do not fit the config, tfm::io_error on write failure.
inline void export_gguf(const export_model& m, const std::string& path,
                        const export_options& o = {}) {
  namespace d = detail::exporter;
  d::check_type(o.type);
  const auto tensors = d::map_tensors(m, d::target::gguf);
  const export_arch arch = export_arch_of(m.config);
  const d::gguf_vocab vocab = d::vocab_of(m.tokenizer, m.config.vocab);
  const d::special_ids ids = d::specials_of(m);
  const nn::dynamic_config& c = m.config;
  const std::string a = arch == export_arch::llama ? "llama" : "gpt2";
  auto u32 = [](index_t v) { return static_cast<std::uint32_t>(v); };

  gguf_writer w(path);
  w.add("general.architecture", a);
  w.add("general.name", m.name);
  w.add("general.file_type", std::uint32_t{o.type == ggml_type::f16    ? 1u
                                           : o.type == ggml_type::bf16 ? 32u
                                                                       : 0u});
  w.add(a + ".context_length", u32(c.block_size));
  w.add(a + ".embedding_length", u32(c.n_embd));
  const bool moe = c.mlp == nn::mlp_kind::moe;
  w.add(a + ".feed_forward_length", u32(moe ? d::expert_width(c) : c.ffn));
  if (moe) {
    w.add(a + ".expert_count", u32(c.n_expert));
    w.add(a + ".expert_used_count", u32(c.n_expert_used));
  }
  w.add(a + ".block_count", u32(c.n_layer));
  w.add(a + ".attention.head_count", u32(c.n_head));
  if (arch == export_arch::llama) {
    w.add(a + ".attention.head_count_kv", u32(c.n_kv_head));
    w.add(a + ".rope.freq_base", static_cast<float>(c.rope_base));
    w.add(a + ".rope.dimension_count", u32(c.n_embd / c.n_head));
    w.add(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
    w.add(a + ".vocab_size", u32(c.vocab));
  } else {
    w.add(a + ".attention.layer_norm_epsilon", static_cast<float>(c.norm_eps));
  }
  w.add("tokenizer.ggml.model", std::string("gpt2"));
  w.add("tokenizer.ggml.pre", vocab.pre);
  w.add("tokenizer.ggml.tokens", vocab.tokens);
  w.add("tokenizer.ggml.token_type", vocab.types);
  w.add("tokenizer.ggml.merges", vocab.merges);
  if (ids.bos >= 0) w.add("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(ids.bos));
  if (ids.eos >= 0) w.add("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(ids.eos));
  if (ids.pad >= 0) w.add("tokenizer.ggml.padding_token_id", static_cast<std::uint32_t>(ids.pad));
  w.add("tokenizer.ggml.add_bos_token", false);
  w.add("tokenizer.ggml.add_eos_token", false);
  if (!m.chat_template.empty()) w.add("tokenizer.chat_template", m.chat_template);

  auto type_of = [&](const d::out_tensor& t) {  // norms and the MoE router stay f32 (llama.cpp)
    const bool router = t.name.size() > 20 && t.name.ends_with("ffn_gate_inp.weight");
    return t.shape.size() <= 1 || router ? ggml_type::f32 : o.type;
  };
  for (const auto& t : tensors) {
    std::vector<std::int64_t> ne(t.shape.rbegin(), t.shape.rend());  // ggml order
    w.add_tensor_info(t.name, ne, type_of(t));
  }
  w.write_header();
  for (const auto& t : tensors) w.write_tensor_data(d::encode(t.values, type_of(t)));
  w.finish();
}

/// Writes `m` as a Hugging Face model directory `dir` (created when absent): config.json,
/// model.safetensors (metadata {"format": "pt"}), tokenizer.json, tokenizer_config.json and
/// generation_config.json. Errors as export_gguf.
inline void export_hf(const export_model& m, const std::string& dir, const export_options& o = {}) {
  namespace d = detail::exporter;
  namespace st = safetensors;
  d::check_type(o.type);
  const auto tensors = d::map_tensors(m, d::target::hf);
  const export_arch arch = export_arch_of(m.config);
  if (static_cast<index_t>(m.tokenizer.vocab_size()) > m.config.vocab)
    fail(errc::value, "tfm::io::export: the tokenizer has ", m.tokenizer.vocab_size(),
         " ids, more than the model's vocabulary of ", m.config.vocab, ".");
  const d::special_ids ids = d::specials_of(m);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    fail(errc::io, "tfm::io::export: cannot create the directory '", dir, "'.");
  const std::string base = (std::filesystem::path(dir) / "").string();

  st::writer w;
  w.set_metadata("format", "pt");
  const st::dtype dt = o.type == ggml_type::f16    ? st::dtype::f16
                       : o.type == ggml_type::bf16 ? st::dtype::bf16
                                                   : st::dtype::f32;
  std::vector<std::vector<std::byte>> keep;  // the writer borrows the bytes until save()
  keep.reserve(tensors.size());
  for (const auto& t : tensors) {
    keep.push_back(d::encode(t.values, o.type));
    w.add(t.name, dt, t.shape, keep.back());
  }
  w.save(base + "model.safetensors");

  d::write_text(base + "config.json", d::hf_config(m, arch, o.type, ids));
  d::write_text(base + "tokenizer.json", m.tokenizer.to_hf_json());
  std::string tc = "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n";
  tc += "  \"model_max_length\": " + std::to_string(m.config.block_size) + ",\n";
  tc += "  \"add_bos_token\": false,\n  \"add_eos_token\": false";
  auto token = [&](const char* key, std::int64_t id) {
    if (id < 0) return;
    tc += std::string(",\n  \"") + key + "\": ";
    tfm::detail::json::append_quoted(tc, m.tokenizer.token_bytes(static_cast<std::int32_t>(id)));
  };
  token("eos_token", ids.eos);
  token("bos_token", ids.bos);
  token("pad_token", ids.pad);
  if (!m.chat_template.empty()) {
    tc += ",\n  \"chat_template\": ";
    tfm::detail::json::append_quoted(tc, m.chat_template);
  }
  d::write_text(base + "tokenizer_config.json", tc + "\n}\n");
  auto id_text = [](std::int64_t id) { return id >= 0 ? std::to_string(id) : "null"; };
  std::string gc =
      "{\n  \"bos_token_id\": " + id_text(ids.bos) + ",\n  \"eos_token_id\": " + id_text(ids.eos);
  if (ids.pad >= 0) gc += ",\n  \"pad_token_id\": " + id_text(ids.pad);
  d::write_text(base + "generation_config.json",
                gc + ",\n  \"max_length\": " + std::to_string(m.config.block_size) + "\n}\n");
}

}  // namespace io
TFM_END_NAMESPACE
