// typeformer/infer/hf_model.hpp
//
// WHAT THIS REPRESENTS
//   Loading a Hugging Face causal-LM directory (config.json + model.safetensors, or a sharded
//   model.safetensors.index.json; io/safetensors.hpp) into the tape-free decoder
//   (infer::transformer, the same model a GGUF file gives):
//
//     auto m = tfm::infer::load_hf_dir("SmolLM2-135M-Instruct/");   // or tfm::load_model(dir)
//
//   config.json "architectures"[0] picks the layout:
//     LlamaForCausalLM   hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
//                        num_key_value_heads (absent: heads), head_dim (absent or null:
//                        hidden / heads), rms_norm_eps (1e-6), rope_theta (10000), rope_scaling
//                        (null, or rope_type/type "linear" or "yarn" with factor and
//                        original_max_position_embeddings; others unsupported),
//                        max_position_embeddings, vocab_size, tie_word_embeddings (false),
//                        attention_bias (false: biases on q, k, v and o), mlp_bias (false),
//                        hidden_act "silu". Tensors model.embed_tokens, model.layers.N.
//                        {input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
//                        mlp.{gate,up,down}_proj}, model.norm, lm_head (absent when tied).
//                        RoPE: HF's rotate_half pairs (i, i + D/2), run as
//                        rope_config::style::half on the rows as stored (modeling_llama.py);
//                        GGUF llama files permute the rows instead (infer/model_config.hpp).
//     MixtralForCausalLM the Llama keys and tensors with, instead of mlp.*, num_local_experts E,
//                        num_experts_per_tok k and per layer block_sparse_moe.gate (the router,
//                        (E, hidden)) and block_sparse_moe.experts.e.{w1 (gate), w3 (up), w2
//                        (down)}, stacked on load into the GGUF layout (a float copy);
//                        sliding_window must be null or at least the context
//     GPT2LMHeadModel    n_embd, n_layer, n_head, n_positions, n_inner (absent or null: 4 n_embd),
//                        layer_norm_epsilon (1e-5), vocab_size, activation_function "gelu_new"
//                        (or "gelu_pytorch_tanh": the same tanh formula), tie_word_embeddings
//                        (true). Tensors [transformer.]{wte, wpe, h.N.{ln_1, attn.c_attn,
//                        attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_f}, lm_head when untied.
//                        c_* are Conv1D layers whose weight is stored (in, out): transposed on
//                        load (a copy in the stored element type); c_attn's rows are q, k, v.
//   Anything else about the architecture is a tfm::unsupported_error naming config.json and the
//   field; a missing tensor a parse_error, a wrong shape a shape_error, both naming the
//   safetensors file and the tensor.
//
// WEIGHTS
//   F32, F16 and BF16 tensors are used in place in the read-only mapping when aligned (files
//   written by the safetensors package always are): 16-bit weights stay 16-bit, converted
//   inside the GEMV/GEMM kernels as for GGUF. Transposed (Conv1D) weights are copied in their
//   own type; F64 is converted to float; other dtypes are unsupported.
//
// METADATA AND TOKENIZER
//   model.file() is a small in-memory GGUF holding what convert_hf_to_gguf.py would have
//   written for the directory's metadata: general.architecture / .name, the <arch>.* keys, and,
//   when the directory has a byte-level BPE tokenizer.json that maps onto a llama.cpp
//   pre-tokenizer, tokenizer.ggml.{model "gpt2", pre, tokens, token_type, merges, bos/eos ids,
//   add_bos_token} and tokenizer.chat_template from tokenizer_config.json. So
//   io::load_gguf_tokenizer(*model.file()) gives the tokenizer, as for a GGUF file.
//   Pre-tokenizers mapped: ByteLevel(use_regex) -> gpt2; [Digits(individual), ByteLevel] ->
//   smollm; [Split(llama-3 / cl100k regex), ByteLevel] -> llama3; [Split(qwen2 regex),
//   ByteLevel] -> qwen2. Other tokenizers (SentencePiece, WordPiece, byte_fallback BPE, a
//   normalizer) are not converted: the metadata then has no tokenizer.ggml.model and says why in
//   "typeformer.tokenizer_error", which load_gguf_tokenizer's missing-key error follows.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/infer/model_config.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/infer/weights.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/pretokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// The layouts load_hf_dir reads (config.json "architectures").
enum class hf_architecture { llama, gpt2 };

namespace hf_detail {

using json = tfm::detail::json::value;

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(errc::io, "tfm::infer: cannot open '", path, "'.");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(errc::io, "tfm::infer: cannot read '", path, "'.");
  return s;
}
inline bool exists(const std::string& path) { return std::ifstream(path).good(); }

/// Members of config.json read with checks; messages name the file and the key.
struct reader {
  const json& root;
  std::string doc;

  const json* get(std::string_view key) const {
    const json* v = root.find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  index_t integer(std::string_view key, std::optional<index_t> dflt, index_t lo = 1,
                  index_t hi = index_t{1} << 30) const {
    const json* v = get(key);
    if (!v) {
      if (dflt) return *dflt;
      fail(errc::parse, "tfm::infer: '", doc, "': \"", key, "\" is missing.");
    }
    if (!v->is_number() || !v->integral || v->integer < lo || v->integer > hi)
      fail(errc::parse, "tfm::infer: '", doc, "': \"", key, "\" is not an integer in [", lo, ", ",
           hi, "] (byte ", v->offset, ").");
    return static_cast<index_t>(v->integer);
  }
  double number(std::string_view key, double dflt, double lo, double hi) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_number() || !(v->number > lo) || !(v->number < hi))
      fail(errc::parse, "tfm::infer: '", doc, "': \"", key, "\" is not a number in (", lo, ", ", hi,
           ") (byte ", v->offset, ").");
    return v->number;
  }
  std::string string(std::string_view key, std::string dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_string())
      fail(errc::parse, "tfm::infer: '", doc, "': \"", key, "\" is not a string (byte ", v->offset,
           ").");
    return v->string;
  }
  bool boolean(std::string_view key, bool dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_bool())
      fail(errc::parse, "tfm::infer: '", doc, "': \"", key, "\" is not a boolean (byte ", v->offset,
           ").");
    return v->boolean;
  }
  [[noreturn]] void unsupported(std::string_view key, const std::string& value,
                                std::string_view supported) const {
    fail(errc::unsupported, "tfm::infer: '", doc, "': ", key, " ", value, " is not supported (",
         supported, ").");
  }
};

inline rope_config rope_from_hf(const reader& r, index_t context) {
  rope_config rc;
  rc.base = r.number("rope_theta", 10000.0, 0.0, 1e300);
  rc.pair_style = rope_config::style::half;
  const json* s = r.get("rope_scaling");
  if (s == nullptr) return rc;
  if (!s->is_object())
    fail(errc::parse, "tfm::infer: '", r.doc, "': \"rope_scaling\" is not an object (byte ",
         s->offset, ").");
  const reader sr{*s, r.doc + " rope_scaling"};
  const std::string kind = sr.string("rope_type", sr.string("type", "default"));
  if (kind == "default") return rc;
  if (kind == "linear")
    rc.scale_kind = rope_config::scaling::linear;
  else if (kind == "yarn")
    rc.scale_kind = rope_config::scaling::yarn;
  else
    r.unsupported("rope_scaling.rope_type", "\"" + kind + "\"", "linear, yarn");
  rc.factor = sr.number("factor", 0.0, 0.0, 1e9);
  if (rc.factor == 0.0)
    fail(errc::parse, "tfm::infer: '", r.doc, "': rope_scaling \"factor\" is missing.");
  if (rc.scale_kind == rope_config::scaling::yarn) {
    rc.original_context = static_cast<double>(
        sr.integer("original_max_position_embeddings", context, 1, index_t{1} << 30));
    rc.beta_fast = sr.number("beta_fast", 32.0, 0.0, 1e9);
    rc.beta_slow = sr.number("beta_slow", 1.0, 0.0, 1e9);
    if (sr.get("attention_factor") != nullptr || sr.get("mscale") != nullptr)
      r.unsupported("rope_scaling", "with attention_factor / mscale",
                    "yarn's default 0.1 ln(factor) + 1");
  }
  return rc;
}

inline model_config llama_config(const reader& r) {
  model_config c;
  c.architecture = "llama";
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") r.unsupported("hidden_act", "\"" + act + "\"", "\"silu\"");
  c.n_embd = r.integer("hidden_size", std::nullopt);
  c.ffn = r.integer("intermediate_size", std::nullopt);
  c.n_layer = r.integer("num_hidden_layers", std::nullopt, 0);
  c.n_head = r.integer("num_attention_heads", std::nullopt);
  c.n_kv_head = r.integer("num_key_value_heads", c.n_head);
  if (c.n_head % c.n_kv_head != 0)
    fail(errc::parse, "tfm::infer: '", r.doc, "': num_attention_heads ", c.n_head,
         " is not a multiple of num_key_value_heads ", c.n_kv_head, ".");
  c.head_dim = r.integer("head_dim", c.n_embd / c.n_head);
  if (c.head_dim % 2 != 0)
    fail(errc::parse, "tfm::infer: '", r.doc, "': head_dim ", c.head_dim,
         " is odd; RoPE rotates pairs.");
  c.context_length = r.integer("max_position_embeddings", std::nullopt);
  c.vocab = r.integer("vocab_size", std::nullopt);
  c.norm_eps = r.number("rms_norm_eps", 1e-6, 0.0, 1.0);
  c.rope = rope_from_hf(r, c.context_length);
  c.tied_output = r.boolean("tie_word_embeddings", false);
  c.qkv_bias = c.out_bias = r.boolean("attention_bias", false);
  c.mlp_bias = r.boolean("mlp_bias", false);
  return c;
}

/// Mixtral (modeling_mixtral.py): the llama layout whose MLPs are num_local_experts SwiGLU
/// experts of width intermediate_size, num_experts_per_tok of them per token (softmax over all,
/// top k, renormalised: llama.cpp's gating of the llama architecture). A sliding window shorter
/// than the context is unsupported.
inline model_config mixtral_config(const reader& r) {
  model_config c = llama_config(r);
  c.n_expert = r.integer("num_local_experts", std::nullopt, 1, 4096);
  c.n_expert_used = r.integer("num_experts_per_tok", std::nullopt, 1, c.n_expert);
  if (r.get("sliding_window") != nullptr &&
      r.integer("sliding_window", std::nullopt, 1) < c.context_length)
    r.unsupported("sliding_window", "shorter than max_position_embeddings", "null");
  return c;
}

inline model_config gpt2_config(const reader& r) {
  model_config c;
  c.architecture = "gpt2";
  const std::string act = r.string("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    r.unsupported("activation_function", "\"" + act + "\"", "\"gelu_new\", \"gelu_pytorch_tanh\"");
  if (!r.boolean("scale_attn_weights", true)) r.unsupported("scale_attn_weights", "false", "true");
  if (r.boolean("scale_attn_by_inverse_layer_idx", false))
    r.unsupported("scale_attn_by_inverse_layer_idx", "true", "false");
  if (r.boolean("add_cross_attention", false))
    r.unsupported("add_cross_attention", "true", "false");
  c.n_embd = r.integer("n_embd", std::nullopt);
  c.n_layer = r.integer("n_layer", std::nullopt, 0);
  c.n_head = r.integer("n_head", std::nullopt);
  c.n_kv_head = c.n_head;
  if (c.n_embd % c.n_head != 0)
    fail(errc::parse, "tfm::infer: '", r.doc, "': n_embd ", c.n_embd,
         " is not a multiple of n_head ", c.n_head, ".");
  c.head_dim = c.n_embd / c.n_head;
  c.ffn = r.integer("n_inner", 4 * c.n_embd);
  c.context_length = r.integer("n_positions", std::nullopt);
  c.vocab = r.integer("vocab_size", std::nullopt);
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5, 0.0, 1.0);
  c.norm = nn::norm_kind::layer_norm;
  c.mlp = nn::mlp_kind::gelu;
  c.position = nn::position_kind::learned;
  c.qkv_bias = c.out_bias = c.mlp_bias = c.norm_bias = true;
  c.tied_output = r.boolean("tie_word_embeddings", true);
  return c;
}

/// The validated model_config of a config.json: "architectures"[0] picks llama_config
/// (LlamaForCausalLM) or gpt2_config (GPT2LMHeadModel); other names are unsupported_error.
/// Shared by load_hf_dir and the HF -> GGUF conversion (infer/hf_export_import.hpp).
inline model_config config_from(const reader& r) {
  const json* archs = r.get("architectures");
  std::string arch;
  if (archs && archs->is_array() && !archs->array.empty() && archs->array[0].is_string())
    arch = archs->array[0].string;
  else
    fail(errc::parse, "tfm::infer: '", r.doc, "': \"architectures\" is not a list of names.");
  model_config c;
  if (arch == "LlamaForCausalLM")
    c = llama_config(r);
  else if (arch == "MixtralForCausalLM")
    c = mixtral_config(r);
  else if (arch == "GPT2LMHeadModel")
    c = gpt2_config(r);
  else
    fail(errc::unsupported, "tfm::infer: '", r.doc, "': architectures \"", arch,
         "\" is not supported (LlamaForCausalLM, MixtralForCausalLM, GPT2LMHeadModel).");
  validate(c);
  return c;
}

/// Reads the weights of one model from a safetensors set, checking names and shapes.
class weight_reader {
 public:
  weight_reader(const io::safetensors::tensor_set& st, std::string where, load_stats& stats)
      : st_(st), where_(std::move(where)), stats_(stats) {}

  bool contains(const std::string& name) const { return st_.contains(name); }

  /// The tensor `name` as rows x cols (rows == 0: a vector of cols values). transposed: the
  /// file stores it (cols, rows) (a Conv1D weight), and it is transposed into a copy.
  weight_matrix get(const std::string& name, index_t rows, index_t cols, bool transposed = false) {
    const io::safetensors::tensor_info* t = st_.find(name);
    if (t == nullptr)
      fail(errc::parse, "tfm::infer: '", where_, "': tensor '", name, "' is missing.");
    const std::string file = st_.shard_of(name).name();
    const bool vec = rows == 0;
    const std::vector<index_t> want = vec          ? std::vector<index_t>{cols}
                                      : transposed ? std::vector<index_t>{cols, rows}
                                                   : std::vector<index_t>{rows, cols};
    if (t->shape != want)
      fail(errc::shape, "tfm::infer: '", file, "': tensor '", name, "' has shape ",
           io::safetensors::detail::shape_string(t->shape), "; config.json implies ",
           io::safetensors::detail::shape_string(want), ".");
    if (vec) rows = 1;
    using io::safetensors::dtype;
    ggml_type type = ggml_type::f32;
    if (t->type == dtype::f16)
      type = ggml_type::f16;
    else if (t->type == dtype::bf16)
      type = ggml_type::bf16;
    else if (t->type != dtype::f32 && t->type != dtype::f64)
      fail(errc::unsupported, "tfm::infer: '", file, "': tensor '", name, "' has dtype ",
           io::safetensors::dtype_name(t->type), " (F32, F16, BF16 or F64 are read).");
    const std::size_t es = t->type == dtype::f32 ? 4 : t->type == dtype::f64 ? 8 : 2;
    const auto addr = reinterpret_cast<std::uintptr_t>(t->bytes.data());
    if (t->type != dtype::f64 && addr % es == 0 && (!transposed || vec)) {
      stats_.bytes_borrowed += t->bytes.size();
      return weight_matrix(type, t->bytes.data(), rows, cols);
    }
    // A copy: transposed, F64 (to float) or misaligned. Element (r, c) of the result is
    // element (c, r) of the stored (cols, rows) matrix when transposed, (r, c) otherwise.
    const std::size_t os = type == ggml_type::f32 ? 4 : 2;
    auto buf =
        std::make_shared<std::vector<unsigned char>>(static_cast<std::size_t>(rows * cols) * os);
    const unsigned char* src = reinterpret_cast<const unsigned char*>(t->bytes.data());
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) {
        const index_t from = transposed && !vec ? c * rows + r : r * cols + c;
        unsigned char* dst = buf->data() + static_cast<std::size_t>(r * cols + c) * os;
        if (t->type == dtype::f64) {
          double d;
          std::memcpy(&d, src + static_cast<std::size_t>(from) * 8, 8);
          const auto f = static_cast<float>(d);
          std::memcpy(dst, &f, 4);
        } else {
          std::memcpy(dst, src + static_cast<std::size_t>(from) * es, es);
        }
      }
    stats_.bytes_allocated += buf->size();
    const void* data = buf->data();
    return weight_matrix(type, std::shared_ptr<const void>(std::move(buf)), data, rows, cols);
  }

 private:
  const io::safetensors::tensor_set& st_;
  std::string where_;
  load_stats& stats_;
};

inline model_weights llama_weights(const model_config& c, weight_reader& w) {
  const index_t C = c.n_embd, HD = c.n_head * c.head_dim, GD = c.n_kv_head * c.head_dim;
  model_weights m;
  m.token_embd = w.get("model.embed_tokens.weight", c.vocab, C);
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    block_weights b;
    b.attn_norm = w.get(p + "input_layernorm.weight", 0, C);
    b.wq = w.get(p + "self_attn.q_proj.weight", HD, C);
    b.wk = w.get(p + "self_attn.k_proj.weight", GD, C);
    b.wv = w.get(p + "self_attn.v_proj.weight", GD, C);
    b.wo = w.get(p + "self_attn.o_proj.weight", C, HD);
    if (c.qkv_bias) {
      b.bq = w.get(p + "self_attn.q_proj.bias", 0, HD);
      b.bk = w.get(p + "self_attn.k_proj.bias", 0, GD);
      b.bv = w.get(p + "self_attn.v_proj.bias", 0, GD);
    }
    if (c.out_bias) b.bo = w.get(p + "self_attn.o_proj.bias", 0, C);
    b.ffn_norm = w.get(p + "post_attention_layernorm.weight", 0, C);
    if (c.n_expert > 0) {  // Mixtral: the experts stacked into the GGUF layout (a float copy)
      const std::string x = p + "block_sparse_moe.";
      b.router = w.get(x + "gate.weight", c.n_expert, C);
      auto stack = [&](const char* leaf, index_t rows, index_t cols) {
        std::vector<float> v(static_cast<std::size_t>(c.n_expert * rows * cols));
        for (index_t e = 0; e < c.n_expert; ++e) {
          const weight_matrix m =
              w.get(x + "experts." + std::to_string(e) + "." + leaf + ".weight", rows, cols);
          for (index_t i = 0; i < rows; ++i) m.row(i, v.data() + (e * rows + i) * cols);
        }
        return weight_matrix(std::move(v), c.n_expert * rows, cols);
      };
      b.gate_exps = stack("w1", c.ffn, C);
      b.up_exps = stack("w3", c.ffn, C);
      b.down_exps = stack("w2", C, c.ffn);
      m.blocks.push_back(std::move(b));
      continue;
    }
    b.w_gate = w.get(p + "mlp.gate_proj.weight", c.ffn, C);
    b.w_up = w.get(p + "mlp.up_proj.weight", c.ffn, C);
    b.w_down = w.get(p + "mlp.down_proj.weight", C, c.ffn);
    if (c.mlp_bias) {
      b.b_gate = w.get(p + "mlp.gate_proj.bias", 0, c.ffn);
      b.b_up = w.get(p + "mlp.up_proj.bias", 0, c.ffn);
      b.b_down = w.get(p + "mlp.down_proj.bias", 0, C);
    }
    m.blocks.push_back(std::move(b));
  }
  m.output_norm = w.get("model.norm.weight", 0, C);
  if (!c.tied_output) m.output = w.get("lm_head.weight", c.vocab, C);
  return m;
}

inline model_weights gpt2_weights(const model_config& c, weight_reader& w) {
  const index_t C = c.n_embd, F = c.ffn;
  // GPT2LMHeadModel saves its body under "transformer."; GPT2Model without it.
  const std::string pre = w.contains("transformer.wte.weight") ? "transformer." : "";
  model_weights m;
  m.token_embd = w.get(pre + "wte.weight", c.vocab, C);
  m.position_embd = w.get(pre + "wpe.weight", c.context_length, C);
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = pre + "h." + std::to_string(l) + ".";
    block_weights b;
    b.attn_norm = w.get(p + "ln_1.weight", 0, C);
    b.attn_norm_b = w.get(p + "ln_1.bias", 0, C);
    const weight_matrix qkv = w.get(p + "attn.c_attn.weight", 3 * C, C, true);
    const weight_matrix qkv_b = w.get(p + "attn.c_attn.bias", 0, 3 * C);
    b.wq = qkv.rows_slice(0, C);
    b.wk = qkv.rows_slice(C, C);
    b.wv = qkv.rows_slice(2 * C, C);
    b.bq = qkv_b.vector_slice(0, C);
    b.bk = qkv_b.vector_slice(C, C);
    b.bv = qkv_b.vector_slice(2 * C, C);
    b.wo = w.get(p + "attn.c_proj.weight", C, C, true);
    b.bo = w.get(p + "attn.c_proj.bias", 0, C);
    b.ffn_norm = w.get(p + "ln_2.weight", 0, C);
    b.ffn_norm_b = w.get(p + "ln_2.bias", 0, C);
    b.w_up = w.get(p + "mlp.c_fc.weight", F, C, true);
    b.b_up = w.get(p + "mlp.c_fc.bias", 0, F);
    b.w_down = w.get(p + "mlp.c_proj.weight", C, F, true);
    b.b_down = w.get(p + "mlp.c_proj.bias", 0, C);
    m.blocks.push_back(std::move(b));
  }
  m.output_norm = w.get(pre + "ln_f.weight", 0, C);
  m.output_norm_b = w.get(pre + "ln_f.bias", 0, C);
  if (!c.tied_output) m.output = w.get("lm_head.weight", c.vocab, C);
  return m;
}

// ---- tokenizer.json -> tokenizer.ggml.* ------------------------------------------------------

/// The GGUF tokenizer of a byte-level BPE tokenizer.json (see the file comment).
struct gguf_vocab {
  std::string pre;
  std::vector<std::string> tokens, merges;
  std::vector<std::int32_t> types;
  std::optional<std::int64_t> bos, eos;
  std::optional<bool> add_bos;
  std::string chat_template;
};

inline std::string_view type_of(const json& v) {
  const json* t = v.find("type");
  return t && t->is_string() ? std::string_view(t->string) : std::string_view();
}
inline bool flag(const json& v, std::string_view key, bool dflt) {
  const json* f = v.find(key);
  return f && f->is_bool() ? f->boolean : dflt;
}

/// llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer, or a reason it has none.
inline std::string pre_name(const json* pre, std::string& why) {
  if (pre == nullptr || !pre->is_object()) return why = "it has no pre_tokenizer", "";
  if (type_of(*pre) == "ByteLevel") {
    if (!flag(*pre, "use_regex", true) || flag(*pre, "add_prefix_space", false))
      return why = "its ByteLevel pre-tokenizer has add_prefix_space or no regex", "";
    return "gpt2";
  }
  const json* list = pre->find("pretokenizers");
  if (type_of(*pre) != "Sequence" || list == nullptr || !list->is_array() ||
      list->array.size() != 2 || type_of(list->array[1]) != "ByteLevel" ||
      flag(list->array[1], "add_prefix_space", false))
    return why = "its pre_tokenizer is not [Digits or Split, ByteLevel]", "";
  const json& first = list->array[0];
  const bool regex = flag(list->array[1], "use_regex", true);
  if (type_of(first) == "Digits" && flag(first, "individual_digits", false) && regex)
    return "smollm";
  const json* pat = first.find("pattern");
  const json* rx = pat ? pat->find("Regex") : nullptr;
  if (type_of(first) == "Split" && rx && rx->is_string() && !regex) {
    const auto p = pattern_from_regex(rx->string);
    if (p == split_pattern::cl100k) return "llama3";
    if (p == split_pattern::qwen2) return "qwen2";
    if (p == split_pattern::gpt2) return "gpt2";
  }
  return why = "its Split regex maps onto none of llama.cpp's gpt2, llama3, qwen2", "";
}

/// The text of a tokenizer_config.json special token entry ("text" or {"content": "text"}).
inline std::string token_text(const json* v) {
  if (v == nullptr) return "";
  if (v->is_string()) return v->string;
  if (const json* c = v->find("content"); c && c->is_string()) return c->string;
  return "";
}

/// Converts dir/tokenizer.json (+ tokenizer_config.json); nullopt with `why` set when it cannot.
/// Ids missing up to the model's vocab rows become unused "[PAD<id>]" tokens, as
/// convert_hf_to_gguf.py pads them.
inline std::optional<gguf_vocab> vocab_from_dir(const std::string& dir, const reader& cfg,
                                                index_t rows, std::string& why) {
  const std::string path = dir + "/tokenizer.json";
  if (!exists(path)) return why = "the directory has no tokenizer.json", std::nullopt;
  const json root = tfm::detail::json::parse(read_text(path), path);
  const json* model = root.find("model");
  if (model == nullptr || type_of(*model) != "BPE" || flag(*model, "byte_fallback", false))
    return why = path + " is not a byte-level BPE model", std::nullopt;
  if (const json* n = root.find("normalizer"); n && !n->is_null())
    return why = path + " has a normalizer", std::nullopt;
  gguf_vocab v;
  v.pre = pre_name(root.find("pre_tokenizer"), why);
  if (v.pre.empty()) return why = path + ": " + why, std::nullopt;
  const json* vocab = model->find("vocab");
  const json* merges = model->find("merges");
  if (vocab == nullptr || !vocab->is_object() || merges == nullptr || !merges->is_array())
    return why = path + " has no model.vocab object or model.merges array", std::nullopt;
  std::map<std::int64_t, std::pair<std::string, std::int32_t>> by_id;  // id -> text, type
  for (const auto& m : vocab->object)
    if (m.second.is_number() && m.second.integral) by_id[m.second.integer] = {m.first, 1};
  if (const json* added = root.find("added_tokens"); added && added->is_array())
    for (const json& a : added->array) {
      const json* id = a.find("id");
      const json* text = a.find("content");
      if (id && id->integral && text && text->is_string())
        by_id[id->integer] = {text->string, flag(a, "special", false) ? 3 : 4};
    }
  const std::int64_t n =
      by_id.empty() ? 0 : std::max<std::int64_t>(by_id.rbegin()->first + 1, rows);
  if (by_id.empty() || by_id.begin()->first < 0 || n > (std::int64_t{1} << 24))
    return why = path + " has token ids outside [0, 2^24)", std::nullopt;
  for (std::int64_t i = 0; i < n; ++i) {  // holes become unused [PAD<i>], as the converter
    auto it = by_id.find(i);
    v.tokens.push_back(it != by_id.end() ? it->second.first : "[PAD" + std::to_string(i) + "]");
    v.types.push_back(it != by_id.end() ? it->second.second : 5);
  }
  for (const json& m : merges->array) {
    if (m.is_string())
      v.merges.push_back(m.string);
    else if (m.is_array() && m.array.size() == 2 && m.array[0].is_string() &&
             m.array[1].is_string())
      v.merges.push_back(m.array[0].string + " " + m.array[1].string);
    else
      return why = path + " has a merge that is neither \"a b\" nor [\"a\", \"b\"]", std::nullopt;
  }
  auto id_of = [&](const std::string& text) -> std::optional<std::int64_t> {
    for (std::size_t i = 0; i < v.tokens.size(); ++i)
      if (!text.empty() && v.tokens[i] == text) return static_cast<std::int64_t>(i);
    return std::nullopt;
  };
  if (const auto b = cfg.get("bos_token_id"); b && b->integral) v.bos = b->integer;
  if (const auto e = cfg.get("eos_token_id"); e && e->integral) v.eos = e->integer;
  if (const std::string tc = dir + "/tokenizer_config.json"; exists(tc)) {
    const json t = tfm::detail::json::parse(read_text(tc), tc);
    if (auto id = id_of(token_text(t.find("bos_token")))) v.bos = id;
    if (auto id = id_of(token_text(t.find("eos_token")))) v.eos = id;
    if (const json* ab = t.find("add_bos_token"); ab && ab->is_bool()) v.add_bos = ab->boolean;
    if (const json* ct = t.find("chat_template"); ct && ct->is_string())
      v.chat_template = ct->string;
  }
  return v;
}

/// The in-memory GGUF metadata of a loaded directory (bytes and the file parsed from them).
struct metadata {
  std::vector<std::byte> bytes;
  io::gguf_file file;
};

inline std::shared_ptr<const io::gguf_file> make_metadata(const std::string& dir,
                                                          const model_config& c,
                                                          const reader& cfg) {
  auto md = std::make_shared<metadata>();
  std::string why;
  {
    io::gguf_writer w(md->bytes);
    const std::string& a = c.architecture;
    const auto u32 = [](index_t v) { return static_cast<std::uint32_t>(v); };
    w.add("general.architecture", a);
    std::string name = dir;
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    name =
        name.substr(name.find_last_of('/') == std::string::npos ? 0 : name.find_last_of('/') + 1);
    w.add("general.name", name);
    w.add("general.source.huggingface.directory", dir);
    w.add(a + ".context_length", u32(c.context_length));
    w.add(a + ".embedding_length", u32(c.n_embd));
    w.add(a + ".feed_forward_length", u32(c.ffn));
    if (c.n_expert > 0) {
      w.add(a + ".expert_count", u32(c.n_expert));
      w.add(a + ".expert_used_count", u32(c.n_expert_used));
    }
    w.add(a + ".block_count", u32(c.n_layer));
    w.add(a + ".attention.head_count", u32(c.n_head));
    w.add(a + ".attention.head_count_kv", u32(c.n_kv_head));
    w.add(a + ".vocab_size", u32(c.vocab));
    if (c.norm == nn::norm_kind::layer_norm) {
      w.add(a + ".attention.layer_norm_epsilon", static_cast<float>(c.norm_eps));
    } else {
      w.add(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
      w.add(a + ".attention.key_length", u32(c.head_dim));
      w.add(a + ".rope.freq_base", static_cast<float>(c.rope.base));
      w.add(a + ".rope.dimension_count", u32(c.head_dim));
    }
    if (const auto v = vocab_from_dir(dir, cfg, c.vocab, why)) {
      w.add("tokenizer.ggml.model", std::string("gpt2"));
      w.add("tokenizer.ggml.pre", v->pre);
      w.add("tokenizer.ggml.tokens", v->tokens);
      w.add("tokenizer.ggml.token_type", v->types);
      w.add("tokenizer.ggml.merges", v->merges);
      if (v->bos && *v->bos >= 0)
        w.add("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(*v->bos));
      if (v->eos && *v->eos >= 0)
        w.add("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(*v->eos));
      if (v->add_bos) w.add("tokenizer.ggml.add_bos_token", *v->add_bos);
      if (!v->chat_template.empty()) w.add("tokenizer.chat_template", v->chat_template);
    } else {
      w.add("typeformer.tokenizer_error", why);
    }
    w.finish();
  }
  md->file = io::gguf_file::from_bytes(
      md->bytes, why.empty() ? dir + " (Hugging Face directory)"
                             : dir + " (Hugging Face directory; no tokenizer: " + why + ")");
  const io::gguf_file* f = &md->file;
  return std::shared_ptr<const io::gguf_file>(std::move(md), f);
}

}  // namespace hf_detail

/// Loads a Hugging Face model directory for the Backend's kernels (see the file comment).
template <class Backend = cpu>
transformer<float, Backend> load_hf_dir(const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string cfg_path = dir + "/config.json";
  const hf_detail::json root = tfm::detail::json::parse(hf_detail::read_text(cfg_path), cfg_path);
  if (!root.is_object())
    fail(errc::parse, "tfm::infer: '", cfg_path, "': the top level is not a JSON object.");
  const hf_detail::reader r{root, cfg_path};
  model_config c = hf_detail::config_from(r);
  auto st = std::make_shared<const io::safetensors::tensor_set>(io::safetensors::open(dir));
  load_stats stats;
  for (const auto& shard : st->shards()) stats.bytes_mapped += shard.bytes().size();
  hf_detail::weight_reader w(
      *st, st->shards().size() == 1 ? st->shards()[0].name() : dir + " (sharded checkpoint)",
      stats);
  model_weights mw =
      c.architecture == "gpt2" ? hf_detail::gpt2_weights(c, w) : hf_detail::llama_weights(c, w);
  auto meta = hf_detail::make_metadata(dir, c, r);
  stats.load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return transformer<float, Backend>(std::move(c), std::move(mw), std::move(st), std::move(meta),
                                     stats);
}

}  // namespace infer
TFM_END_NAMESPACE
