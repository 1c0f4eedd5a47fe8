// typeformer/infer/model_config.hpp
//
// WHAT THIS REPRESENTS
//   infer::model_config: what a model file says about a decoder-only transformer, as the
//   tape-free engine (infer/transformer.hpp) runs it, and its reading from GGUF metadata.
//
//   GGUF keys (llama.cpp's names, gguf-py constants.py; <arch> = general.architecture):
//     <arch>.block_count                       n_layer
//     <arch>.embedding_length                  n_embd (C)
//     <arch>.attention.head_count              n_head (H)
//     <arch>.attention.head_count_kv           n_kv_head (G; absent: H)
//     <arch>.attention.key_length              head_dim (D; absent: C / H)
//     <arch>.feed_forward_length               ffn (F)
//     <arch>.context_length                    context_length
//     <arch>.vocab_size                        vocab (absent: rows of token_embd)
//     <arch>.rope.freq_base                    rope.base (absent: 10000)
//     <arch>.rope.dimension_count              must equal D (partial rotary is not supported)
//     <arch>.rope.scaling.type / .factor / .original_context_length   rope scaling
//     <arch>.attention.layer_norm_rms_epsilon  norm_eps (absent: 1e-5)
//     <arch>.expert_count                      n_expert (E; absent: 0, a dense model)
//     <arch>.expert_used_count                 n_expert_used (k; required when E > 0)
//   A mixture-of-experts llama model (Mixtral; Jiang et al., arXiv:2401.04088) has E > 0: each
//   block's SwiGLU MLP is E experts of width F = feed_forward_length, of which a router picks k
//   per token (infer/transformer.hpp has the tensors, infer/session.hpp the gating).
//   Architectures: `llama` (also the llama-layout families that name themselves llama) and
//   `gpt2` (keys gpt2.context_length, .embedding_length, .feed_forward_length, .block_count,
//   .attention.head_count, .attention.layer_norm_epsilon; LayerNorm with bias, GELU (tanh),
//   learned positions, biases on every linear layer; no RoPE keys). Any other architecture
//   raises tfm::unsupported_error naming it. Hugging Face directories (config.json) are read by
//   infer/hf_model.hpp into the same struct.
//
//   RoPE pairs: llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the
//   rows of Hugging Face's q/k projections head by head so that ggml's "normal" rope, which
//   rotates adjacent pairs (2i, 2i+1), computes HF's rotate_half (pairs (i, i + D/2)) on the
//   original rows. A GGUF llama model therefore runs with interleaved pairs.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/nn/config.hpp"
#include "typeformer/ops/rope.hpp"

#include <cstdint>
#include <string>

TFM_BEGIN_NAMESPACE
namespace infer {

/// A decoder-only transformer's hyper-parameters (dimension letters of DESIGN.md).
struct model_config {
  std::string architecture = "llama";
  index_t n_layer = 0;
  index_t n_embd = 0;     // C
  index_t n_head = 0;     // H
  index_t n_kv_head = 0;  // G, divides H
  index_t head_dim = 0;   // D (H * D need not equal C)
  index_t ffn = 0;        // F
  index_t vocab = 0;      // V
  index_t context_length = 0;
  rope_config rope{};  // base, pair style, scaling
  double norm_eps = 1e-5;
  nn::norm_kind norm = nn::norm_kind::rms_norm;  // rms_norm (w) or layer_norm (w, b)
  nn::mlp_kind mlp = nn::mlp_kind::swiglu;       // swiglu (gate, up, down) or gelu (up, down)
  nn::position_kind position = nn::position_kind::rope;  // rope, or learned (position_embd)
  bool tied_output = false;                              // logits use token_embd (no output.weight)
  bool qkv_bias = false;                                 // attn_q/k/v have biases
  bool out_bias = false;                                 // attn_output has a bias
  bool mlp_bias = false;                                 // ffn_gate/up/down have biases
  bool norm_bias = false;     // the layer norms have a bias (beta); layer_norm only
  index_t n_expert = 0;       // E: experts per block (0: a dense MLP); swiglu experts of width F
  index_t n_expert_used = 0;  // k: experts each token runs (1 <= k <= E when E > 0)
};

/// Raises tfm::value_error naming the first field that cannot describe a model.
inline void validate(const model_config& c) {
  auto bad = [](const char* f, index_t v, const char* why) {
    fail(errc::value, "tfm::infer::model_config: ", f, " = ", v, " ", why, ".");
  };
  if (c.n_layer < 0) bad("n_layer", c.n_layer, "must be >= 0");
  if (c.n_embd <= 0) bad("n_embd", c.n_embd, "must be positive");
  if (c.n_head <= 0) bad("n_head", c.n_head, "must be positive");
  if (c.n_kv_head <= 0 || c.n_head % c.n_kv_head != 0)
    bad("n_kv_head", c.n_kv_head, "must be positive and divide n_head");
  if (c.head_dim <= 0 || (c.position == nn::position_kind::rope && c.head_dim % 2 != 0))
    bad("head_dim", c.head_dim, "must be positive (and even with RoPE)");
  if (c.ffn <= 0) bad("ffn", c.ffn, "must be positive");
  if (c.vocab <= 0) bad("vocab", c.vocab, "must be positive");
  if (c.context_length <= 0) bad("context_length", c.context_length, "must be positive");
  if (c.position != nn::position_kind::rope && c.position != nn::position_kind::learned)
    fail(errc::unsupported,
         "tfm::infer::model_config: position embeddings must be rope or learned.");
  if (c.norm_bias && c.norm != nn::norm_kind::layer_norm)
    fail(errc::value, "tfm::infer::model_config: norm_bias needs norm = layer_norm.");
  if (c.n_expert < 0) bad("n_expert", c.n_expert, "must be >= 0");
  if (c.n_expert > 0 && (c.n_expert_used < 1 || c.n_expert_used > c.n_expert))
    fail(errc::value, "tfm::infer::model_config: n_expert_used = ", c.n_expert_used,
         " must be in [1, n_expert = ", c.n_expert, "].");
  if (c.n_expert == 0 && c.n_expert_used != 0)
    bad("n_expert_used", c.n_expert_used, "must be 0 for a dense model (n_expert = 0)");
  if (c.n_expert > 0 && (c.mlp != nn::mlp_kind::swiglu || c.mlp_bias))
    fail(errc::unsupported,
         "tfm::infer::model_config: mixture-of-experts blocks need mlp = swiglu without biases.");
}

namespace detail {
inline rope_config rope_from_gguf(const io::gguf_file& f, const std::string& a) {
  rope_config r;
  r.base = f.get_or<double>(a + ".rope.freq_base", 10000.0);
  r.pair_style = rope_config::style::interleaved;
  const std::string kind(f.get_or<std::string_view>(a + ".rope.scaling.type", "none"));
  if (kind == "linear")
    r.scale_kind = rope_config::scaling::linear;
  else if (kind == "yarn")
    r.scale_kind = rope_config::scaling::yarn;
  else if (kind != "none")
    fail(errc::unsupported, "tfm::infer: '", f.name(), "': ", a, ".rope.scaling.type '", kind,
         "' is not supported (none, linear, yarn).");
  if (r.scale_kind != rope_config::scaling::none) {
    r.factor = f.get<double>(a + ".rope.scaling.factor");
    r.original_context = f.get_or<double>(a + ".rope.scaling.original_context_length",
                                          f.get<double>(a + ".context_length"));
  }
  return r;
}

/// n_expert, n_expert_used of <a>.expert_count / <a>.expert_used_count; errors name the key.
inline void experts_from_gguf(const io::gguf_file& f, const std::string& a, model_config& c) {
  const std::string ec = a + ".expert_count", uc = a + ".expert_used_count";
  c.n_expert = f.get_or<index_t>(ec, 0);
  if (c.n_expert < 0 || c.n_expert > 4096)
    fail(errc::parse, "tfm::infer: '", f.name(), "': ", ec, " = ", c.n_expert,
         " is outside [0, 4096].");
  if (c.n_expert == 0) {
    if (f.find_tensor("blk.0.ffn_gate_exps.weight") != nullptr)
      fail(errc::parse, "tfm::infer: '", f.name(), "': tensor 'blk.0.ffn_gate_exps.weight' is an ",
           "expert table, but ", ec, " is missing (a mixture-of-experts file needs it).");
    if (f.get_or<index_t>(uc, 0) != 0)
      fail(errc::parse, "tfm::infer: '", f.name(), "': ", uc, " = ", f.get<index_t>(uc),
           " without ", ec, " (a dense model has no experts to use).");
    return;
  }
  if (f.find(uc) == nullptr)
    fail(errc::parse, "tfm::infer: '", f.name(), "': ", ec, " = ", c.n_expert, " but ", uc,
         " is missing.");
  c.n_expert_used = f.get<index_t>(uc);
  if (c.n_expert_used < 1 || c.n_expert_used > c.n_expert)
    fail(errc::parse, "tfm::infer: '", f.name(), "': ", uc, " = ", c.n_expert_used,
         " must be in [1, ", ec, " = ", c.n_expert, "].");
}
}  // namespace detail

/// Reads the model_config of a GGUF file (keys in the file comment). vocab falls back to the
/// rows of token_embd.weight; tied_output and the bias flags follow from which tensors exist.
inline model_config config_from_gguf(const io::gguf_file& f) {
  model_config c;
  c.architecture = std::string(f.get<std::string_view>("general.architecture"));
  const bool gpt2 = c.architecture == "gpt2";
  if (c.architecture != "llama" && !gpt2)
    fail(errc::unsupported, "tfm::infer: '", f.name(), "': general.architecture '", c.architecture,
         "' is not supported; this engine runs 'llama' and 'gpt2' models.");
  const std::string& a = c.architecture;
  c.n_layer = f.get<index_t>(a + ".block_count");
  c.n_embd = f.get<index_t>(a + ".embedding_length");
  c.n_head = f.get<index_t>(a + ".attention.head_count");
  c.n_kv_head = f.get_or<index_t>(a + ".attention.head_count_kv", c.n_head);
  c.head_dim = f.get_or<index_t>(a + ".attention.key_length", c.n_head ? c.n_embd / c.n_head : 0);
  c.ffn = f.get<index_t>(a + ".feed_forward_length");
  c.context_length = f.get<index_t>(a + ".context_length");
  const io::gguf_tensor_info* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr)
    fail(errc::parse, "tfm::infer: '", f.name(), "': tensor 'token_embd.weight' is missing.");
  c.vocab = f.get_or<index_t>(a + ".vocab_size", static_cast<index_t>(emb->ne[1]));
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  if (gpt2) {  // llama.cpp's LLM_ARCH_GPT2: pre-LN blocks with biases, GELU, learned positions
    c.norm = nn::norm_kind::layer_norm;
    c.mlp = nn::mlp_kind::gelu;
    c.position = nn::position_kind::learned;
    c.qkv_bias = c.out_bias = c.mlp_bias = c.norm_bias = true;
    c.norm_eps = f.get_or<double>(a + ".attention.layer_norm_epsilon", 1e-5);
    validate(c);
    return c;
  }
  c.rope = detail::rope_from_gguf(f, a);
  const index_t rot = f.get_or<index_t>(a + ".rope.dimension_count", c.head_dim);
  if (rot != c.head_dim)
    fail(errc::unsupported, "tfm::infer: '", f.name(), "': ", a, ".rope.dimension_count = ", rot,
         " differs from the head dimension ", c.head_dim, " (partial rotary is not supported).");
  c.norm_eps = f.get_or<double>(a + ".attention.layer_norm_rms_epsilon", 1e-5);
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  detail::experts_from_gguf(f, a, c);
  validate(c);
  return c;
}

}  // namespace infer
TFM_END_NAMESPACE
