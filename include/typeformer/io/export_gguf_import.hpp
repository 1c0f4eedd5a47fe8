// typeformer/io/export_gguf_import.hpp
//
// WHAT THIS REPRESENTS
//   The inverse of io::export_gguf (io/export.hpp): a GGUF file of architecture llama or gpt2
//   read back as an io::export_model (nn::gpt names, nn::dynamic_config, byte-level BPE), so that
//   it can be written as a Hugging Face directory with io::export_hf:
//     tfm::io::export_hf(tfm::io::read_export_model(tfm::io::gguf_file("model.gguf")), "hf");
//   Quantized tensors are dequantized (quant/dequantize.hpp). The config comes from the keys
//   io::export_gguf writes (llama.cpp's: <arch>.block_count, embedding_length,
//   feed_forward_length, context_length, attention.head_count[_kv], rope.freq_base,
//   attention.layer_norm[_rms]_epsilon; a llama file with <arch>.expert_count is a mixture of
//   experts: expert_used_count, ffn_gate_inp and the 3-D ffn_{gate,up,down}_exps); tie_embeddings
//   is true when output.weight is absent or holds the same bytes as token_embd.weight; gpt2 biases
//   are kept (bias = true). The tokenizer must be tokenizer.ggml.model "gpt2" with pre
//   "gpt-2"/"gpt2", "smollm" (digits split off first, then GPT-2's split:
//   bpe_tokenizer::split_digits()) or "qwen2" (the split patterns bpe_tokenizer has): control
//   tokens (type 3) become special tokens, unused ids (type 5) gaps.
//   tokenizer.ggml.{bos,eos,padding}_token_id and tokenizer.chat_template are carried
//   (export_model's bos, eos, pad, chat_template). Single-byte tokens may be missing (SmolLM2 lacks
//   21): those bytes encode to nothing, as in llama.cpp (bpe.hpp byte_tokens).
//
// ERRORS
//   tfm::unsupported_error naming the key or tensor for what nn::gpt cannot hold: another
//   architecture, a head dimension other than n_embd / n_head, partial rotary, rope scaling,
//   q/k/v biases in a llama file, another tokenizer model or pre-tokenizer; tfm::parse_error for
//   a missing key or tensor.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/export.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

namespace detail::importer {

/// Tensor `name` dequantized to float with its row-major extents (parse_error when absent).
inline export_tensor tensor_of(const gguf_file& f, const std::string& name) {
  const gguf_tensor_info* t = f.find_tensor(name);
  if (t == nullptr)
    fail(errc::parse, "tfm::io::export: '", f.name(), "': tensor '", name, "' is missing.");
  export_tensor out;
  out.extents = t->extents();
  out.values = dequantize(t->type, f.tensor_data(*t));
  return out;
}

inline void refuse(const gguf_file& f, const std::string& what) {
  fail(errc::unsupported, "tfm::io::export: '", f.name(), "': ", what,
       "; this conversion cannot map it to nn::gpt's layout.");
}

/// A float32 key as the double its shortest decimal text means (1e-5 stored as float32 reads
/// back as 1e-5, not 9.99999975e-06), so that a GGUF round trip keeps the config's values.
inline double float_key(const gguf_file& f, const std::string& key, double fallback) {
  const double v = f.get_or<double>(key, fallback);
  const gguf_kv* kv = f.find(key);
  if (kv == nullptr || kv->value.type() != gguf_type::float32) return v;
  char b[32];
  const auto r = std::to_chars(b, b + sizeof b, static_cast<float>(v));
  double d = v;
  std::from_chars(b, r.ptr, d);
  return d;
}

/// The config from the file's keys (file comment).
inline nn::dynamic_config config_of(const gguf_file& f, const std::string& a) {
  nn::dynamic_config c;
  const bool llama = a == "llama";
  c.n_layer = f.get<index_t>(a + ".block_count");
  c.n_embd = f.get<index_t>(a + ".embedding_length");
  c.ffn = f.get<index_t>(a + ".feed_forward_length");
  c.block_size = f.get<index_t>(a + ".context_length");
  c.n_head = f.get<index_t>(a + ".attention.head_count");
  c.n_kv_head = f.get_or<index_t>(a + ".attention.head_count_kv", c.n_head);
  const gguf_tensor_info* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr)
    fail(errc::parse, "tfm::io::export: '", f.name(), "': tensor 'token_embd.weight' is missing.");
  c.vocab = static_cast<index_t>(emb->ne[1]);
  const index_t D = c.n_head > 0 ? c.n_embd / c.n_head : 0;
  if (f.get_or<index_t>(a + ".attention.key_length", D) != D)
    refuse(f, a + ".attention.key_length differs from embedding_length / head_count");
  if (llama) {
    if (f.get_or<index_t>(a + ".rope.dimension_count", D) != D)
      refuse(f, a + ".rope.dimension_count (partial rotary)");
    if (f.get_or<std::string>(a + ".rope.scaling.type", "none") != "none")
      refuse(f, a + ".rope.scaling.type");
    if (f.find_tensor("blk.0.attn_q.bias") != nullptr) refuse(f, "tensor blk.0.attn_q.bias");
    c.norm = nn::norm_kind::rms_norm;
    c.mlp = nn::mlp_kind::swiglu;
    c.position = nn::position_kind::rope;
    c.bias = false;
    c.rope_base = float_key(f, a + ".rope.freq_base", 10000.0);
    c.norm_eps = float_key(f, a + ".attention.layer_norm_rms_epsilon", 1e-5);
    if (const index_t E = f.get_or<index_t>(a + ".expert_count", 0); E > 0) {
      // Mixtral-style experts (llama.cpp's gating: softmax top-k, renormalised).
      c.mlp = nn::mlp_kind::moe;
      c.n_expert = E;
      c.n_expert_used = f.get<index_t>(a + ".expert_used_count");
      c.expert_ffn = c.ffn;
      c.router = moe_router_kind::softmax_topk;
      c.moe_capacity = 0;
    }
  } else {
    c.n_kv_head = c.n_head;
    c.norm_eps = float_key(f, a + ".attention.layer_norm_epsilon", 1e-5);
  }
  const gguf_tensor_info* out = f.find_tensor("output.weight");
  c.tie_embeddings =
      out == nullptr || (out->type == emb->type && out->n_bytes == emb->n_bytes &&
                         std::equal(f.tensor_data(*out).begin(), f.tensor_data(*out).end(),
                                    f.tensor_data(*emb).begin()));
  return c;
}

/// nn::gpt parameters from the GGUF tensors (io/export.hpp's table read backwards).
inline export_weights weights_of(const gguf_file& f, const nn::dynamic_config& c, bool llama) {
  export_weights w;
  auto take = [&](const std::string& to, const std::string& from) { w[to] = tensor_of(f, from); };
  take("wte.weight", "token_embd.weight");
  if (!llama) take("wpe.weight", "position_embd.weight");
  auto pair = [&](const std::string& to, const std::string& from) {
    take(to + ".weight", from + ".weight");
    take(to + ".bias", from + ".bias");
  };
  for (index_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    if (llama) {
      take(p + "ln_1.weight", b + "attn_norm.weight");
      export_tensor qkv = tensor_of(f, b + "attn_q.weight");
      for (const char* kv : {"attn_k.weight", "attn_v.weight"}) {
        const export_tensor t = tensor_of(f, b + kv);
        qkv.values.insert(qkv.values.end(), t.values.begin(), t.values.end());
        qkv.extents[0] += t.extents[0];
      }
      w[p + "attn.c_attn.weight"] = std::move(qkv);
      take(p + "attn.c_proj.weight", b + "attn_output.weight");
      take(p + "ln_2.weight", b + "ffn_norm.weight");
      if (c.mlp == nn::mlp_kind::moe) {
        take(p + "mlp.router.weight", b + "ffn_gate_inp.weight");
        take(p + "mlp.experts.gate", b + "ffn_gate_exps.weight");
        take(p + "mlp.experts.up", b + "ffn_up_exps.weight");
        take(p + "mlp.experts.down", b + "ffn_down_exps.weight");
        continue;
      }
      take(p + "mlp.gate.weight", b + "ffn_gate.weight");
      take(p + "mlp.up.weight", b + "ffn_up.weight");
      take(p + "mlp.down.weight", b + "ffn_down.weight");
    } else {
      pair(p + "ln_1", b + "attn_norm");
      pair(p + "attn.c_attn", b + "attn_qkv");
      pair(p + "attn.c_proj", b + "attn_output");
      pair(p + "ln_2", b + "ffn_norm");
      pair(p + "mlp.c_fc", b + "ffn_up");
      pair(p + "mlp.c_proj", b + "ffn_down");
    }
  }
  if (llama)
    take("ln_f.weight", "output_norm.weight");
  else
    pair("ln_f", "output_norm");
  if (!c.tie_embeddings) take("lm_head.weight", "output.weight");
  return w;
}

/// The byte-level BPE of the file's tokenizer.ggml.* keys (file comment).
inline bpe_tokenizer tokenizer_of(const gguf_file& f) {
  const std::string model = f.get_or<std::string>("tokenizer.ggml.model", "");
  if (model != "gpt2") refuse(f, "tokenizer.ggml.model '" + model + "' (only gpt2 maps)");
  const std::string pre = f.get_or<std::string>("tokenizer.ggml.pre", "default");
  split_pattern pattern = split_pattern::gpt2;
  if (pre == "qwen2")
    pattern = split_pattern::qwen2;
  else if (pre != "gpt-2" && pre != "gpt2" && pre != "smollm")
    refuse(f, "tokenizer.ggml.pre '" + pre + "' (only gpt-2, smollm and qwen2 map)");
  const auto texts = f.get<std::vector<std::string>>("tokenizer.ggml.tokens");
  const auto types = f.get_or<std::vector<std::int32_t>>("tokenizer.ggml.token_type", {});
  std::vector<std::string> tokens(texts.size());
  std::vector<special_token> specials;
  std::map<std::string, std::int32_t, std::less<>> id_of;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const std::int32_t type = i < types.size() ? types[i] : 1;
    const auto id = static_cast<std::int32_t>(i);
    if (type == 3 || type == 4) {
      specials.push_back({texts[i], id});
    } else if (type != 5) {
      auto bytes = tfm::detail::bpe::unmap_bytes(texts[i]);
      if (!bytes)
        fail(errc::parse, "tfm::io::export: '", f.name(), "': token ", i,
             " is not byte-level text.");
      tokens[i] = std::move(*bytes);
    }
    id_of.emplace(texts[i], id);
  }
  std::vector<std::pair<std::int32_t, std::int32_t>> merges;
  for (const auto& m : f.get_or<std::vector<std::string>>("tokenizer.ggml.merges", {})) {
    const auto sp = m.find(' ');
    const auto a = id_of.find(std::string_view(m).substr(0, sp));
    const auto b =
        sp == std::string::npos ? id_of.end() : id_of.find(std::string_view(m).substr(sp + 1));
    if (a == id_of.end() || b == id_of.end())
      fail(errc::parse, "tfm::io::export: '", f.name(), "': merge '", m,
           "' does not name two tokens.");
    merges.emplace_back(a->second, b->second);
  }
  // Byte tokens may be missing, as in SmolLM2's vocabulary; llama.cpp then drops those bytes.
  bpe_tokenizer tok(std::move(tokens), merges, std::move(specials), pattern, false,
                    byte_tokens::optional);
  tok.set_split_digits(pre == "smollm");  // llama.cpp: \p{N} pieces, then GPT-2 regex
  return tok;
}

/// m.bos / eos / pad and m.chat_template from the tokenizer.ggml.*_token_id keys and
/// tokenizer.chat_template (m.config.vocab set).
inline void carry_specials(const gguf_file& f, export_model& m) {
  auto id = [&](const char* key, std::optional<std::int32_t>& to) {
    if (f.find(key) == nullptr) return;
    const auto v = f.get<std::int64_t>(key);
    if (v < 0 || v >= m.config.vocab)
      fail(errc::parse, "tfm::io::export: '", f.name(), "': ", key, " = ", v,
           " is outside the vocabulary of ", m.config.vocab, ".");
    to = static_cast<std::int32_t>(v);
  };
  id("tokenizer.ggml.bos_token_id", m.bos);
  id("tokenizer.ggml.eos_token_id", m.eos);
  id("tokenizer.ggml.padding_token_id", m.pad);
  m.chat_template = f.get_or<std::string>("tokenizer.chat_template", "");
}

}  // namespace detail::importer

/// The model a GGUF file of architecture llama or gpt2 holds (file comment).
inline export_model read_export_model(const gguf_file& f) {
  namespace d = detail::importer;
  const std::string a = f.get<std::string>("general.architecture");
  if (a != "llama" && a != "gpt2") d::refuse(f, "general.architecture '" + a + "'");
  export_model m;
  m.config = d::config_of(f, a);
  m.weights = d::weights_of(f, m.config, a == "llama");
  m.tokenizer = d::tokenizer_of(f);
  m.name = f.get_or<std::string>("general.name", "typeformer");
  d::carry_specials(f, m);
  return m;
}

/// Element types of a GGUF rewritten by rewrite_gguf.
struct rewrite_gguf_options {
  /// Every 2-D tensor (and more) in this type, 1-D tensors in F32, general.file_type set (as
  /// `tfm convert` writes); nullopt: unchanged tensors keep their bytes, changed ones keep
  /// F32/F16/BF16 and become F32 when they were block-quantized.
  std::optional<ggml_type> type;
};

/// Writes `out` (through out.tmp): the GGUF `base` with every metadata key (general.file_type
/// and general.quantization_version replaced when o.type is set) and every tensor in its order
/// and shape, the tensors for which `changed(t)` is true dequantized to float, passed through
/// `update(t, values)` (values in ggml order, n_elements of t) and re-encoded. Integer and F64
/// tensors are copied as they are. This is what `tfm merge-lora` (io/lora_adapter.hpp
/// merge_lora_gguf) and a full fine-tune's export (train/finetune_export.hpp) write.
/// tfm::value_error for o.type other than f32/f16/bf16, tfm::unsupported_error naming a changed
/// tensor whose type this build cannot dequantize, tfm::io_error on write failure.
template <class Changed, class Update>
void rewrite_gguf(const gguf_file& base, const std::string& out, Changed&& changed, Update&& update,
                  const rewrite_gguf_options& o = {},
                  std::string_view who = "tfm::io::rewrite_gguf") {
  if (o.type && *o.type != ggml_type::f32 && *o.type != ggml_type::f16 &&
      *o.type != ggml_type::bf16)
    fail(errc::value, who, ": output type ", ggml_type_name(*o.type),
         " is not one of f32, f16, bf16.");
  auto passthrough = [](ggml_type t) {
    return t == ggml_type::i8 || t == ggml_type::i16 || t == ggml_type::i32 ||
           t == ggml_type::i64 || t == ggml_type::f64;
  };
  std::vector<std::uint8_t> is_changed;
  is_changed.reserve(base.tensors().size());
  for (const auto& t : base.tensors()) {
    const bool c = !passthrough(t.type) && static_cast<bool>(changed(t));
    if (c && !ggml_type_info_of(t.type).dequantizable)
      fail(errc::unsupported, who, ": '", base.name(), "': tensor '", t.name, "' has type ",
           ggml_type_name(t.type), ", which this build cannot dequantize.");
    is_changed.push_back(c);
  }
  auto type_of = [&](const gguf_tensor_info& t, bool c) {
    if (passthrough(t.type)) return t.type;
    if (o.type) return t.n_dims <= 1 ? ggml_type::f32 : *o.type;
    if (!c) return t.type;
    return t.type == ggml_type::f16 || t.type == ggml_type::bf16 ? t.type : ggml_type::f32;
  };
  gguf_writer w(out);
  for (const auto& kv : base.metadata()) {
    if (o.type && (kv.key == "general.file_type" || kv.key == "general.quantization_version"))
      continue;
    w.add(kv.key, kv.value);
  }
  if (o.type)
    w.add("general.file_type", std::uint32_t{*o.type == ggml_type::f16    ? 1u
                                             : *o.type == ggml_type::bf16 ? 32u
                                                                          : 0u});
  std::size_t i = 0;
  for (const auto& t : base.tensors())
    w.add_tensor_info(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims),
                      type_of(t, is_changed[i++] != 0));
  w.write_header();
  i = 0;
  for (const auto& t : base.tensors()) {
    const bool c = is_changed[i++] != 0;
    const ggml_type to = type_of(t, c);
    if (!c && to == t.type) {
      w.write_tensor_data(base.tensor_data(t));
      continue;
    }
    std::vector<float> v = dequantize(t.type, base.tensor_data(t));
    if (c) update(t, v);
    w.write_tensor_data(detail::exporter::encode(v, to));
  }
  w.finish();
}

}  // namespace io
TFM_END_NAMESPACE
