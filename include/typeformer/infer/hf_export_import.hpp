// typeformer/infer/hf_export_import.hpp
//
// WHAT THIS REPRESENTS
//   A Hugging Face causal-LM directory (config.json, model.safetensors or a sharded
//   model.safetensors.index.json, tokenizer.json) read as an io::export_model (nn::gpt names,
//   nn::dynamic_config, byte-level BPE), so that io::export_gguf writes it as a GGUF file:
//     tfm::io::export_gguf(tfm::io::read_hf_export_model("SmolLM-hf"), "model.gguf");
//   This is `tfm convert HF_DIR OUT.gguf`, the inverse of io::export_hf (io/export.hpp) and the
//   counterpart of io/export_gguf_import.hpp. config.json and tokenizer.json are read by the
//   inference engine's loader (infer/hf_model.hpp: hf_detail::config_from, make_metadata), so
//   both accept the same keys with the same defaults; the file lives in infer/ because io/ may
//   not include infer/ (DESIGN.md's layers), and keeps the io:: namespace of the export API, as
//   train/export.hpp does.
//
// MAPPING (io/export.hpp's table read backwards)
//   LlamaForCausalLM -> LLaMA style (rms_norm, swiglu, rope, no bias): rope_theta, rms_norm_eps,
//     num_key_value_heads (GQA), max_position_embeddings, tie_word_embeddings. q_proj / k_proj
//     rows are in HF's rotate_half order (pairs (i, i + D/2)); nn and GGUF llama rotate adjacent
//     pairs, so each head's rows are interleaved: nn[h D + 2i + s] = hf[h D + s D/2 + i] (s = 0,
//     1), LlamaModel.permute of llama.cpp's convert_hf_to_gguf.py, the inverse of export.hpp's
//     to_rotate_half. q, k, v rows are stacked into h.N.attn.c_attn.weight.
//   MixtralForCausalLM -> the same with mlp = moe (softmax_topk router, n_expert =
//     num_local_experts, n_expert_used = num_experts_per_tok, expert_ffn = intermediate_size):
//     block_sparse_moe.gate -> h.N.mlp.router.weight, experts.e.{w1, w3, w2} stacked into
//     h.N.mlp.experts.{gate, up, down}.
//   GPT2LMHeadModel -> GPT-2 style (layer_norm, gelu, learned positions, biases): the Conv1D
//     weights (stored (in, out)) are transposed to nn's (out, in); names with or without the
//     "transformer." prefix.
//   Tensors in F32, F16, BF16 or F64 are read as float; tensors the config does not use (e.g.
//   lm_head.weight of a tied model) are ignored.
//   general.name: the last path component of config.json's "_name_or_path" (what export_hf
//   writes), else the directory's name.
//
// TOKENIZER
//   tokenizer.json must be a byte-level BPE (no byte_fallback, no normalizer, ignore_merges
//   false, every one of the 256 bytes a token, as bpe_tokenizer requires) whose pre-tokenizer is
//   ByteLevel (the GPT-2 split), [Digits(individual_digits), ByteLevel] (SmolLM's, GGUF pre
//   "smollm") or [Split(qwen2 regex), ByteLevel]: the split patterns io::export_model's
//   bpe_tokenizer and export_gguf carry. Added tokens become special tokens; ids missing below
//   vocab_size become unused ids. Other tokenizers (llama-3's regex, SentencePiece, WordPiece)
//   are refused naming tokenizer.json and what is unsupported. config.json's bos_token_id /
//   eos_token_id and tokenizer_config.json's chat_template are carried (export_model's bos, eos,
//   chat_template); export_gguf writes add_bos_token false.
//
// ERRORS
//   tfm::io_error / parse_error naming DIR/config.json when it is missing or not JSON;
//   tfm::unsupported_error naming config.json and the key for what nn::gpt cannot express
//   (architectures, head_dim != hidden_size / num_attention_heads, rope_scaling,
//   attention_bias, mlp_bias) and naming tokenizer.json for a tokenizer it cannot carry;
//   tfm::parse_error naming the safetensors file and the tensor for a missing tensor,
//   tfm::shape_error for a wrong shape, tfm::unsupported_error for another dtype.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/infer/hf_model.hpp"
#include "typeformer/io/export.hpp"
#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

namespace detail::hf_importer {

using detail::exporter::from_rotate_half;

/// Reads tensors of a safetensors set as float, checking names, shapes and dtypes.
class tensors {
 public:
  tensors(const safetensors::tensor_set& st, std::string where)
      : st_(st), where_(std::move(where)) {}

  bool contains(const std::string& name) const { return st_.contains(name); }

  /// Tensor `name` with the row-major shape `want` (transposed: stored as want reversed, a
  /// 2-D Conv1D weight, and transposed to `want`).
  export_tensor get(const std::string& name, std::vector<index_t> want, bool transposed = false) {
    const safetensors::tensor_info* t = st_.find(name);
    if (t == nullptr)
      fail(errc::parse, "tfm::io::export: '", where_, "': tensor '", name, "' is missing.");
    const std::string file = st_.shard_of(name).name();
    const std::vector<index_t> stored =
        transposed ? std::vector<index_t>(want.rbegin(), want.rend()) : want;
    if (t->shape != stored)
      fail(errc::shape, "tfm::io::export: '", file, "': tensor '", name, "' has shape ",
           safetensors::detail::shape_string(t->shape), "; config.json implies ",
           safetensors::detail::shape_string(stored), ".");
    using safetensors::dtype;
    export_tensor out;
    out.extents = want;
    if (t->type == dtype::f32 || t->type == dtype::f16 || t->type == dtype::bf16) {
      const ggml_type g = t->type == dtype::f32   ? ggml_type::f32
                          : t->type == dtype::f16 ? ggml_type::f16
                                                  : ggml_type::bf16;
      out.values = dequantize(g, t->bytes);
    } else if (t->type == dtype::f64) {
      out.values.resize(t->bytes.size() / sizeof(double));
      for (std::size_t i = 0; i < out.values.size(); ++i) {
        double d;
        std::memcpy(&d, t->bytes.data() + i * sizeof(double), sizeof(double));
        out.values[i] = static_cast<float>(d);
      }
    } else {
      fail(errc::unsupported, "tfm::io::export: '", file, "': tensor '", name, "' has dtype ",
           safetensors::dtype_name(t->type), " (F32, F16, BF16 or F64 are read).");
    }
    if (transposed) out.values = exporter::transpose(out.values, want[1], want[0]);
    return out;
  }

 private:
  const safetensors::tensor_set& st_;
  std::string where_;
};

[[noreturn]] inline void refuse(const std::string& doc, const std::string& key,
                                const std::string& why) {
  fail(errc::unsupported, "tfm::io::export: '", doc, "': ", key, " ", why,
       "; io::export_model (nn::gpt's LLaMA and GPT-2 layouts) cannot express it.");
}

/// nn::dynamic_config of the engine's model_config, refusing what nn::gpt cannot hold.
inline nn::dynamic_config config_of(const infer::model_config& m, const std::string& doc) {
  nn::dynamic_config c;
  const bool llama = m.architecture == "llama";
  if (llama) {
    if (m.head_dim * m.n_head != m.n_embd)
      refuse(doc, "head_dim",
             "= " + std::to_string(m.head_dim) +
                 " differs from hidden_size / num_attention_heads = " +
                 std::to_string(m.n_embd / m.n_head));
    if (m.rope.scale_kind != rope_config::scaling::none)
      refuse(doc, "rope_scaling", "(linear or yarn RoPE scaling)");
    if (m.qkv_bias || m.out_bias) refuse(doc, "attention_bias", "= true");
    if (m.mlp_bias) refuse(doc, "mlp_bias", "= true");
    c.norm = nn::norm_kind::rms_norm;
    c.mlp = nn::mlp_kind::swiglu;
    c.position = nn::position_kind::rope;
    c.bias = false;
    c.rope_base = m.rope.base;
    if (m.n_expert > 0) {  // Mixtral
      c.mlp = nn::mlp_kind::moe;
      c.n_expert = m.n_expert;
      c.n_expert_used = m.n_expert_used;
      c.expert_ffn = m.ffn;
      c.router = moe_router_kind::softmax_topk;
    }
  } else {
    c.norm = nn::norm_kind::layer_norm;
    c.mlp = nn::mlp_kind::gelu;
    c.position = nn::position_kind::learned;
    c.bias = true;
  }
  c.vocab = m.vocab;
  c.block_size = m.context_length;
  c.n_layer = m.n_layer;
  c.n_embd = m.n_embd;
  c.n_head = m.n_head;
  c.n_kv_head = m.n_kv_head;
  c.ffn = m.ffn;
  c.window = 0;
  c.norm_eps = m.norm_eps;
  c.tie_embeddings = m.tied_output;
  c.dropout = 0.0;
  return c;
}

inline export_weights llama_weights(const nn::dynamic_config& c, tensors& st) {
  const index_t V = c.vocab, C = c.n_embd, H = c.n_head, G = c.n_kv_head, D = C / H, F = c.ffn;
  export_weights w;
  w["wte.weight"] = st.get("model.embed_tokens.weight", {V, C});
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const std::string o = "model.layers." + std::to_string(l) + ".";
    w[p + "ln_1.weight"] = st.get(o + "input_layernorm.weight", {C});
    export_tensor qkv;
    qkv.extents = {(H + 2 * G) * D, C};
    const auto q =
        from_rotate_half(st.get(o + "self_attn.q_proj.weight", {H * D, C}).values, H, D, C);
    const auto k =
        from_rotate_half(st.get(o + "self_attn.k_proj.weight", {G * D, C}).values, G, D, C);
    const auto v = st.get(o + "self_attn.v_proj.weight", {G * D, C}).values;
    qkv.values.reserve(q.size() + k.size() + v.size());
    for (const auto* part : {&q, &k, &v})
      qkv.values.insert(qkv.values.end(), part->begin(), part->end());
    w[p + "attn.c_attn.weight"] = std::move(qkv);
    w[p + "attn.c_proj.weight"] = st.get(o + "self_attn.o_proj.weight", {C, H * D});
    w[p + "ln_2.weight"] = st.get(o + "post_attention_layernorm.weight", {C});
    if (c.mlp == nn::mlp_kind::moe) {  // Mixtral: per-expert w1 / w3 / w2 stacked
      const index_t E = c.n_expert;
      const std::string x = o + "block_sparse_moe.";
      w[p + "mlp.router.weight"] = st.get(x + "gate.weight", {E, C});
      auto stack = [&](const char* leaf, index_t rows, index_t cols) {
        export_tensor t;
        t.extents = {E, rows, cols};
        for (index_t e = 0; e < E; ++e) {
          const auto part =
              st.get(x + "experts." + std::to_string(e) + "." + leaf + ".weight", {rows, cols});
          t.values.insert(t.values.end(), part.values.begin(), part.values.end());
        }
        return t;
      };
      w[p + "mlp.experts.gate"] = stack("w1", F, C);
      w[p + "mlp.experts.up"] = stack("w3", F, C);
      w[p + "mlp.experts.down"] = stack("w2", C, F);
      continue;
    }
    w[p + "mlp.gate.weight"] = st.get(o + "mlp.gate_proj.weight", {F, C});
    w[p + "mlp.up.weight"] = st.get(o + "mlp.up_proj.weight", {F, C});
    w[p + "mlp.down.weight"] = st.get(o + "mlp.down_proj.weight", {C, F});
  }
  w["ln_f.weight"] = st.get("model.norm.weight", {C});
  if (!c.tie_embeddings) w["lm_head.weight"] = st.get("lm_head.weight", {V, C});
  return w;
}

inline export_weights gpt2_weights(const nn::dynamic_config& c, tensors& st) {
  const index_t V = c.vocab, C = c.n_embd, F = c.ffn, T = c.block_size;
  // GPT2LMHeadModel saves its body under "transformer."; GPT2Model without it.
  const std::string pre = st.contains("transformer.wte.weight") ? "transformer." : "";
  export_weights w;
  w["wte.weight"] = st.get(pre + "wte.weight", {V, C});
  w["wpe.weight"] = st.get(pre + "wpe.weight", {T, C});
  auto norm = [&](const std::string& to, const std::string& from) {
    w[to + ".weight"] = st.get(from + ".weight", {C});
    w[to + ".bias"] = st.get(from + ".bias", {C});
  };
  auto conv1d = [&](const std::string& to, const std::string& from, index_t n_out, index_t n_in) {
    w[to + ".weight"] = st.get(from + ".weight", {n_out, n_in}, true);
    w[to + ".bias"] = st.get(from + ".bias", {n_out});
  };
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    const std::string h = pre + "h." + std::to_string(l) + ".";
    norm(p + "ln_1", h + "ln_1");
    conv1d(p + "attn.c_attn", h + "attn.c_attn", 3 * C, C);
    conv1d(p + "attn.c_proj", h + "attn.c_proj", C, C);
    norm(p + "ln_2", h + "ln_2");
    conv1d(p + "mlp.c_fc", h + "mlp.c_fc", F, C);
    conv1d(p + "mlp.c_proj", h + "mlp.c_proj", C, F);
  }
  norm("ln_f", pre + "ln_f");
  if (!c.tie_embeddings) w["lm_head.weight"] = st.get("lm_head.weight", {V, C});
  return w;
}

/// The byte-level BPE of dir/tokenizer.json (file comment), through the engine's tokenizer.json
/// -> tokenizer.ggml.* adapter (hf_detail::make_metadata) and the GGUF importer, into m with the
/// BOS/EOS ids and chat template that adapter reads (config.json, tokenizer_config.json).
inline void tokenizer_of(const std::string& dir, const infer::model_config& mc,
                         const infer::hf_detail::reader& cfg, export_model& m) {
  const std::string path = dir + "/tokenizer.json";
  const auto md = infer::hf_detail::make_metadata(dir, mc, cfg);
  if (md->find("tokenizer.ggml.model") == nullptr)
    fail(errc::unsupported, "tfm::io::export: '", dir, "': no tokenizer to carry: ",
         md->get_or<std::string>("typeformer.tokenizer_error", "unknown reason"),
         " (supported: a byte-level BPE tokenizer.json).");
  const std::string pre = md->get<std::string>("tokenizer.ggml.pre");
  if (pre != "gpt2" && pre != "qwen2" && pre != "smollm")
    fail(errc::unsupported, "tfm::io::export: '", path, "': its pre_tokenizer is llama.cpp's '",
         pre,
         "' split, which io::export_model's byte-level BPE cannot carry (supported: ByteLevel, "
         "the GPT-2 split; [Digits(individual_digits), ByteLevel], SmolLM's; [Split(qwen2 "
         "regex), ByteLevel]).");
  const auto root = tfm::detail::json::parse(infer::hf_detail::read_text(path), path);
  if (const auto* model = root.find("model"); model != nullptr)
    if (const auto* im = model->find("ignore_merges"); im && im->is_bool() && im->boolean)
      fail(errc::unsupported, "tfm::io::export: '", path,
           "': model.ignore_merges = true has no GGUF gpt2 equivalent here.");
  // bpe_tokenizer needs every byte as a token (real byte-level vocabularies have them; toy ones
  // such as the tests' 64-id fixtures do not).
  const auto texts = md->get<std::vector<std::string>>("tokenizer.ggml.tokens");
  const auto types = md->get<std::vector<std::int32_t>>("tokenizer.ggml.token_type");
  std::vector<bool> have(256, false);
  for (std::size_t i = 0; i < texts.size(); ++i)
    if (i < types.size() && types[i] == 1)
      if (const auto b = tfm::detail::bpe::unmap_bytes(texts[i]); b && b->size() == 1)
        have[static_cast<unsigned char>((*b)[0])] = true;
  for (int b = 0; b < 256; ++b)
    if (!have[static_cast<std::size_t>(b)]) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      fail(errc::unsupported, "tfm::io::export: '", path,
           "': the vocabulary has no token for the byte ", hex,
           "; io::export_model's byte-level BPE needs all 256 single-byte tokens.");
    }
  m.tokenizer = detail::importer::tokenizer_of(*md);
  detail::importer::carry_specials(*md, m);
}

/// general.name (file comment).
inline std::string name_of(const std::string& dir, const infer::hf_detail::reader& cfg) {
  std::string n = cfg.string("_name_or_path", "");
  while (!n.empty() && (n.back() == '/' || n.back() == '\\')) n.pop_back();
  if (const auto cut = n.find_last_of("/\\"); cut != std::string::npos) n = n.substr(cut + 1);
  if (!n.empty()) return n;
  n = dir;
  while (n.size() > 1 && (n.back() == '/' || n.back() == '\\')) n.pop_back();
  n = std::filesystem::path(n).filename().string();
  return n.empty() ? "typeformer" : n;
}

}  // namespace detail::hf_importer

/// Whether `path` is a directory holding config.json (a Hugging Face model directory).
inline bool is_hf_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) &&
         std::filesystem::is_regular_file(std::filesystem::path(path) / "config.json", ec);
}

/// The model of the Hugging Face directory `dir` (file comment).
inline export_model read_hf_export_model(const std::string& dir) {
  namespace d = detail::hf_importer;
  namespace h = infer::hf_detail;
  const std::string cfg_path = dir + "/config.json";
  if (!h::exists(cfg_path))
    fail(errc::io, "tfm::io::export: '", dir, "' is not a Hugging Face directory: '", cfg_path,
         "' is missing.");
  const h::json root = tfm::detail::json::parse(h::read_text(cfg_path), cfg_path);
  if (!root.is_object())
    fail(errc::parse, "tfm::io::export: '", cfg_path, "': the top level is not a JSON object.");
  const h::reader r{root, cfg_path};
  const infer::model_config mc = h::config_from(r);
  export_model m;
  m.config = d::config_of(mc, cfg_path);
  nn::validate(m.config);
  const auto st = safetensors::open(dir);
  d::tensors t(st, st.shards().size() == 1 ? st.shards()[0].name() : dir + " (sharded checkpoint)");
  m.weights =
      mc.architecture == "llama" ? d::llama_weights(m.config, t) : d::gpt2_weights(m.config, t);
  d::tokenizer_of(dir, mc, r, m);
  m.name = d::name_of(dir, r);
  return m;
}

}  // namespace io
TFM_END_NAMESPACE
