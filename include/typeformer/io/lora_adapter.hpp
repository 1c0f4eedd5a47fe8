// typeformer/io/lora_adapter.hpp
//
// WHAT THIS REPRESENTS
//   LoRA adapters (Hu et al. 2021, arXiv:2106.09685) of a LLaMA-style decoder as files other tools
//   load, and merged into a base model:
//     io::lora_adapter_file               the adapter in memory: one (A, B) pair per adapted
//                                         projection of a layer, the rank, alpha, rsLoRA flag
//     io::save_peft / io::load_peft       Hugging Face PEFT's directory: adapter_model.safetensors
//                                         + adapter_config.json (peft/utils/save_and_load.py,
//                                         peft/tuners/lora/config.py)
//     io::save_lora_gguf / load_lora_gguf llama.cpp's LoRA GGUF (convert_lora_to_gguf.py writes
//                                         it, src/llama-adapter.cpp reads it)
//     io::merge(export_model&, f, sign)   W += sign * scale * B A on nn::gpt's parameters
//     io::merge_lora_gguf(base, f, out)   the same on a GGUF model file, everything else kept
//   The update of a projection y = W x is y = W x + scale * B (A x) (Hu et al. eq. 3) with
//   scale = alpha / rank, or alpha / sqrt(rank) with rsLoRA (Kalajdzievski 2023, arXiv:2312.03732;
//   PEFT's use_rslora).
//
// TARGETS AND SHAPES (C = n_embd, H = n_head, G = n_kv_head, D = C / H, F = ffn)
//   target  nn::gpt parameter (rows)              (out, in)  PEFT module        GGUF tensor
//   q       h.l.attn.c_attn.weight [0, HD)        (HD, C)    self_attn.q_proj   blk.l.attn_q
//   k       h.l.attn.c_attn.weight [HD, (H+G)D)   (GD, C)    self_attn.k_proj   blk.l.attn_k
//   v       h.l.attn.c_attn.weight [(H+G)D, ...)  (GD, C)    self_attn.v_proj   blk.l.attn_v
//   o       h.l.attn.c_proj.weight                (C, HD)    self_attn.o_proj   blk.l.attn_output
//   gate    h.l.mlp.gate.weight                   (F, C)     mlp.gate_proj      blk.l.ffn_gate
//   up      h.l.mlp.up.weight                     (F, C)     mlp.up_proj        blk.l.ffn_up
//   down    h.l.mlp.down.weight                   (C, F)     mlp.down_proj      blk.l.ffn_down
//   A is (rank, in) and B is (out, rank), row-major, as torch's lora_A.weight / lora_B.weight.
//   B's rows of q and k are in nn::gpt's (= GGUF's) order, interleaved RoPE pairs; PEFT files hold
//   them in HF's rotate_half order, converted both ways head by head as io/export.hpp does for
//   the weights: hf[h D + i] = nn[h D + 2i], hf[h D + D/2 + i] = nn[h D + 2i + 1]. A needs no
//   permutation (it acts on the input side).
//
// PEFT LAYOUT (LlamaForCausalLM wrapped by PeftModelForCausalLM, adapter name "default" removed)
//   adapter_model.safetensors  base_model.model.model.layers.{l}.self_attn.{q,k,v,o}_proj.
//                              lora_{A,B}.weight and ...layers.{l}.mlp.{gate,up,down}_proj.lora_
//                              {A,B}.weight, F32 (F16/BF16 are read too), metadata {"format":"pt"}
//   adapter_config.json        peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
//                              lora_dropout, target_modules, use_rslora, bias "none",
//                              fan_in_fan_out false, use_dora false, base_model_name_or_path, ...
//   Loading refuses by name what this layout cannot mean for a projection-only LoRA: use_dora
//   true (DoRA), bias other than "none", fan_in_fan_out true, non-empty rank_pattern or
//   alpha_pattern, modules_to_save, layers_to_transform, a peft_type other than LORA, target
//   modules outside the seven projections, tensors with unknown names, a pair missing A or B, a
//   listed target missing from a layer, shapes that differ from the base config or ranks other
//   than r.
//
// LLAMA.CPP LORA GGUF
//   general.architecture "llama", general.type "adapter", adapter.type "lora",
//   adapter.lora.alpha (float32); tensors blk.{l}.<name>.weight.lora_a with ggml ne [in, rank]
//   and .lora_b with ne [rank, out] (A and B as above, ne reversed), F32. llama.cpp scales by
//   adapter.lora.alpha / rank (rank = lora_b ne[0]) and knows no rsLoRA, so the file's alpha is
//   scale() * rank (= alpha for plain LoRA); typeformer.lora.alpha (float64),
//   typeformer.lora.use_rslora, typeformer.lora.dropout, typeformer.lora.base_model and
//   typeformer.lora.target_modules keep the exact in-memory values for load_lora_gguf.
//   Loading refuses another general.type / adapter.type / architecture, tensors other than the
//   seven projections' lora_a/lora_b (token embedding adapters, norm vectors), untransposed or
//   misshapen pairs, missing halves.
//
// ERRORS: tfm::parse_error for malformed or inconsistent files (names the file and the field or
// tensor), tfm::unsupported_error for valid options this code does not implement, tfm::io_error
// for missing files, tfm::value_error / shape_error for an adapter that does not fit the model.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/io/export.hpp"
#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/nn/config.hpp"
#include "typeformer/nn/lora_target.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

/// The adaptable projections of a LLaMA layer (file comment's table): nn's enum, shared with
/// the adapters themselves (nn/lora.hpp).
using nn::all_lora_targets;
using nn::lora_target;

/// One adapted projection of one layer.
struct lora_pair {
  index_t layer = 0;
  lora_target target = lora_target::q;
  index_t rank = 0, in = 0, out = 0;
  std::vector<float> a;  ///< A: (rank, in) row-major (PEFT lora_A.weight)
  std::vector<float> b;  ///< B: (out, rank) row-major (PEFT lora_B.weight); rows of q and k in
                         ///< typeformer's / GGUF's order (interleaved RoPE pairs)
};

/// An adapter: hyper-parameters and pairs.
struct lora_adapter_file {
  index_t rank = 8;
  double alpha = 16;
  bool rslora = false;
  double dropout = 0;
  std::vector<lora_target> targets;  ///< the adapted projections (PEFT target_modules)
  std::string base_model;            ///< PEFT base_model_name_or_path
  std::vector<lora_pair> pairs;

  /// alpha / rank, or alpha / sqrt(rank) with rsLoRA (Kalajdzievski 2023, arXiv:2312.03732).
  double scale() const {
    return rslora ? alpha / std::sqrt(static_cast<double>(rank))
                  : alpha / static_cast<double>(rank);
  }
};

/// PEFT's module name ("q_proj", ..., "down_proj").
inline const char* lora_target_module(lora_target t) noexcept {
  switch (t) {
    case lora_target::q:
      return "q_proj";
    case lora_target::k:
      return "k_proj";
    case lora_target::v:
      return "v_proj";
    case lora_target::o:
      return "o_proj";
    case lora_target::gate:
      return "gate_proj";
    case lora_target::up:
      return "up_proj";
    case lora_target::down:
      return "down_proj";
  }
  return "?";
}

/// llama.cpp's tensor name stem ("attn_q", ..., "ffn_down").
inline const char* lora_target_gguf(lora_target t) noexcept {
  switch (t) {
    case lora_target::q:
      return "attn_q";
    case lora_target::k:
      return "attn_k";
    case lora_target::v:
      return "attn_v";
    case lora_target::o:
      return "attn_output";
    case lora_target::gate:
      return "ffn_gate";
    case lora_target::up:
      return "ffn_up";
    case lora_target::down:
      return "ffn_down";
  }
  return "?";
}

/// The target whose PEFT module name is `s`, if any.
inline std::optional<lora_target> lora_target_of_module(std::string_view s) noexcept {
  for (lora_target t : all_lora_targets)
    if (s == lora_target_module(t)) return t;
  return std::nullopt;
}

/// The target whose GGUF stem is `s`, if any.
inline std::optional<lora_target> lora_target_of_gguf(std::string_view s) noexcept {
  for (lora_target t : all_lora_targets)
    if (s == lora_target_gguf(t)) return t;
  return std::nullopt;
}

/// (out, in) of target `t` in a model of config `c` (file comment's table).
inline std::pair<index_t, index_t> lora_target_shape(const nn::dynamic_config& c,
                                                     lora_target t) noexcept {
  const index_t C = c.n_embd, H = c.n_head, G = c.n_kv_head, D = H > 0 ? C / H : 0, F = c.ffn;
  switch (t) {
    case lora_target::q:
      return {H * D, C};
    case lora_target::k:
    case lora_target::v:
      return {G * D, C};
    case lora_target::o:
      return {C, H * D};
    case lora_target::gate:
    case lora_target::up:
      return {F, C};
    case lora_target::down:
      return {C, F};
  }
  return {0, 0};
}

namespace detail::lora {

inline std::string pair_name(const lora_pair& p) {
  return "layer " + std::to_string(p.layer) + " " + lora_target_module(p.target);
}

/// Checks that `f` fits a LLaMA model of config `c`: rank and alpha positive, every pair's
/// layer in range, (rank, in, out) matching the target and f.rank, value counts, no duplicate.
/// `who` starts the message (e.g. "tfm::io::save_peft").
inline void check_fits(const lora_adapter_file& f, const nn::dynamic_config& c,
                       const std::string& who) {
  if (c.position != nn::position_kind::rope || c.mlp != nn::mlp_kind::swiglu)
    fail(errc::unsupported, who,
         ": LoRA files are written for LLaMA-style models (rope, swiglu); the base config is not "
         "one.");
  if (f.rank <= 0) fail(errc::value, who, ": rank ", f.rank, " must be positive.");
  if (!(f.alpha > 0) || !std::isfinite(f.alpha))
    fail(errc::value, who, ": alpha ", f.alpha, " must be positive and finite.");
  std::set<std::pair<index_t, int>> seen;
  for (const auto& p : f.pairs) {
    if (p.layer < 0 || p.layer >= c.n_layer)
      fail(errc::value, who, ": ", pair_name(p), ": layer out of range, the base has ", c.n_layer,
           " layers.");
    const auto [out, in] = lora_target_shape(c, p.target);
    if (p.rank != f.rank)
      fail(errc::value, who, ": ", pair_name(p), " has rank ", p.rank, ", the adapter's rank is ",
           f.rank, " (one rank per adapter; rank_pattern is not supported).");
    if (p.in != in || p.out != out)
      fail(errc::shape, who, ": ", pair_name(p), " is (out ", p.out, ", in ", p.in,
           "), the base config needs (out ", out, ", in ", in, ").");
    if (static_cast<index_t>(p.a.size()) != p.rank * p.in ||
        static_cast<index_t>(p.b.size()) != p.out * p.rank)
      fail(errc::shape, who, ": ", pair_name(p), ": A holds ", p.a.size(), " values for (", p.rank,
           ", ", p.in, ") and B ", p.b.size(), " for (", p.out, ", ", p.rank, ").");
    if (!seen.emplace(p.layer, static_cast<int>(p.target)).second)
      fail(errc::value, who, ": ", pair_name(p), " appears twice.");
    if (std::find(f.targets.begin(), f.targets.end(), p.target) == f.targets.end())
      fail(errc::value, who, ": ", pair_name(p), " adapts ", lora_target_module(p.target),
           ", which is not in the adapter's targets.");
  }
}

/// nn rows -> HF rotate_half rows of a (heads D, cols) matrix (io/export.hpp to_rotate_half).
inline std::vector<float> to_hf_rows(const std::vector<float>& v, index_t heads, index_t D,
                                     index_t cols) {
  return detail::exporter::to_rotate_half(v, heads, D, cols);
}

/// The inverse of to_hf_rows (io/export.hpp from_rotate_half).
inline std::vector<float> from_hf_rows(const std::vector<float>& v, index_t heads, index_t D,
                                       index_t cols) {
  return detail::exporter::from_rotate_half(v, heads, D, cols);
}

/// Heads of q or k (0 for targets without RoPE rows).
inline index_t rope_heads(const nn::dynamic_config& c, lora_target t) noexcept {
  return t == lora_target::q ? c.n_head : t == lora_target::k ? c.n_kv_head : 0;
}

inline std::string read_text(const std::string& path, const std::string& who) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(errc::io, who, ": cannot open '", path, "'.");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string quoted(std::string_view s) {
  std::string q;
  tfm::detail::json::append_quoted(q, s);
  return q;
}

inline std::string peft_prefix(index_t layer, lora_target t) {
  const bool attn =
      t == lora_target::q || t == lora_target::k || t == lora_target::v || t == lora_target::o;
  return "base_model.model.model.layers." + std::to_string(layer) +
         (attn ? ".self_attn." : ".mlp.") + lora_target_module(t);
}

/// Parses a decimal layer index (digits only, no sign, fits index_t) or returns nullopt.
inline std::optional<index_t> parse_layer(std::string_view s) noexcept {
  if (s.empty() || s.size() > 9) return std::nullopt;
  index_t v = 0;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return std::nullopt;
    v = v * 10 + (ch - '0');
  }
  return v;
}

/// The float values of a safetensors tensor of a float dtype (F32, F16, BF16, F64).
inline std::vector<float> floats_of(const safetensors::tensor_info& t, const std::string& file) {
  namespace st = safetensors;
  const std::size_t n = t.shape.empty() ? 1 : [&] {
    std::size_t k = 1;
    for (index_t e : t.shape) k *= static_cast<std::size_t>(e);
    return k;
  }();
  std::vector<float> v(n);
  const std::byte* p = t.bytes.data();
  switch (t.type) {
    case st::dtype::f32:
      if (n) std::memcpy(v.data(), p, n * 4);
      break;
    case st::dtype::f16:
      for (std::size_t i = 0; i < n; ++i) {
        f16 h;
        std::memcpy(&h, p + 2 * i, 2);
        v[i] = static_cast<float>(h);
      }
      break;
    case st::dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        bf16 h;
        std::memcpy(&h, p + 2 * i, 2);
        v[i] = static_cast<float>(h);
      }
      break;
    case st::dtype::f64:
      for (std::size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        v[i] = static_cast<float>(d);
      }
      break;
    default:
      fail(errc::parse, "tfm::io::load_peft: '", file, "': tensor '", t.name, "' has dtype ",
           safetensors::info_of(t.type).name, "; LoRA weights are F32, F16, BF16 or F64.");
  }
  return v;
}

}  // namespace detail::lora

// ============================================================================================
// PEFT

/// Writes `f` as a PEFT adapter directory `dir` (created when absent): adapter_model.safetensors
/// (F32) and adapter_config.json for a LlamaForCausalLM of config `base` (file comment). B's q/k
/// rows are written in HF's rotate_half order. Errors: value/shape_error when `f` does not fit
/// `base`, io_error on write failure.
inline void save_peft(const lora_adapter_file& f, const std::string& dir,
                      const nn::dynamic_config& base) {
  namespace d = detail::lora;
  namespace st = safetensors;
  const std::string who = "tfm::io::save_peft";
  d::check_fits(f, base, who);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    fail(errc::io, who, ": cannot create the directory '", dir, "'.");
  const std::string at = (std::filesystem::path(dir) / "").string();
  const index_t D = base.n_embd / base.n_head;
  st::writer w;
  w.set_metadata("format", "pt");
  std::vector<std::vector<float>> keep;  // the writer borrows the bytes until save()
  keep.reserve(2 * f.pairs.size());
  for (const auto& p : f.pairs) {
    const std::string name = d::peft_prefix(p.layer, p.target);
    keep.push_back(p.a);
    w.add(name + ".lora_A.weight", st::dtype::f32, {p.rank, p.in},
          std::as_bytes(std::span<const float>(keep.back())));
    const index_t heads = d::rope_heads(base, p.target);
    keep.push_back(heads ? d::to_hf_rows(p.b, heads, D, p.rank) : p.b);
    w.add(name + ".lora_B.weight", st::dtype::f32, {p.out, p.rank},
          std::as_bytes(std::span<const float>(keep.back())));
  }
  w.save(at + "adapter_model.safetensors");

  std::string targets = "[";
  for (std::size_t i = 0; i < f.targets.size(); ++i)
    targets += std::string(i ? ", " : "") + "\"" + lora_target_module(f.targets[i]) + "\"";
  targets += "]";
  // Keys as PEFT 0.13+ writes LoraConfig (peft/tuners/lora/config.py), sorted as json.dumps
  // with sort_keys does.
  std::string j = "{\n";
  auto field = [&](const char* k, const std::string& v) {
    j += std::string(j.size() > 2 ? ",\n" : "") + "  \"" + k + "\": " + v;
  };
  field("alpha_pattern", "{}");
  field("auto_mapping", "null");
  field("base_model_name_or_path", f.base_model.empty() ? "null" : d::quoted(f.base_model));
  field("bias", "\"none\"");
  field("fan_in_fan_out", "false");
  field("inference_mode", "true");
  field("init_lora_weights", "true");
  field("layer_replication", "null");
  field("layers_pattern", "null");
  field("layers_to_transform", "null");
  field("loftq_config", "{}");
  field("lora_alpha", detail::exporter::number(f.alpha));
  field("lora_dropout", detail::exporter::number(f.dropout));
  field("megatron_config", "null");
  field("megatron_core", "\"megatron.core\"");
  field("modules_to_save", "null");
  field("peft_type", "\"LORA\"");
  field("r", std::to_string(f.rank));
  field("rank_pattern", "{}");
  field("revision", "null");
  field("target_modules", targets);
  field("task_type", "\"CAUSAL_LM\"");
  field("use_dora", "false");
  field("use_rslora", f.rslora ? "true" : "false");
  detail::exporter::write_text(at + "adapter_config.json", j + "\n}\n");
}

/// Reads a PEFT adapter directory written for a LlamaForCausalLM of config `base` (file comment:
/// what is refused). B's q/k rows come back in typeformer's order.
inline lora_adapter_file load_peft(const std::string& dir, const nn::dynamic_config& base) {
  namespace d = detail::lora;
  namespace json = tfm::detail::json;
  const std::string who = "tfm::io::load_peft";
  const std::string at = (std::filesystem::path(dir) / "").string();
  const std::string cfg_path = at + "adapter_config.json";
  const std::string st_path = at + "adapter_model.safetensors";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    fail(errc::io, who, ": '", dir, "' is not a directory (a PEFT adapter is a directory).");
  if (!std::filesystem::exists(cfg_path, ec)) fail(errc::io, who, ": '", cfg_path, "' is missing.");
  if (!std::filesystem::exists(st_path, ec)) {
    if (std::filesystem::exists(at + "adapter_model.bin", ec))
      fail(errc::unsupported, who, ": '", dir,
           "' holds adapter_model.bin (a pickle); only adapter_model.safetensors is read.");
    fail(errc::io, who, ": '", st_path, "' is missing.");
  }
  const std::string text = d::read_text(cfg_path, who);
  const json::value cfg = json::parse(text, cfg_path);
  if (!cfg.is_object()) fail(errc::parse, who, ": '", cfg_path, "' is not a JSON object.");
  auto bad = [&](errc e, const std::string& key, const std::string& why) {
    fail(e, who, ": '", cfg_path, "': ", key, " ", why, ".");
  };
  auto is_empty = [](const json::value* v) {
    return v == nullptr || v->is_null() || (v->is_object() && v->object.empty()) ||
           (v->is_array() && v->array.empty());
  };
  lora_adapter_file f;
  // peft_type, r, lora_alpha
  const json::value* pt = cfg.find("peft_type");
  if (pt == nullptr || !pt->is_string()) bad(errc::parse, "peft_type", "is missing");
  if (pt->string != "LORA")
    bad(errc::unsupported, "peft_type", "is '" + pt->string + "'; only LORA is read");
  const json::value* r = cfg.find("r");
  if (r == nullptr || !r->is_number() || !r->integral || r->integer <= 0)
    bad(errc::parse, "r", "must be a positive integer");
  f.rank = static_cast<index_t>(r->integer);
  const json::value* al = cfg.find("lora_alpha");
  if (al == nullptr || !al->is_number() || !(al->number > 0) || !std::isfinite(al->number))
    bad(errc::parse, "lora_alpha", "must be a positive number");
  f.alpha = al->number;
  if (const json::value* v = cfg.find("lora_dropout"); v != nullptr && !v->is_null()) {
    if (!v->is_number() || v->number < 0 || v->number >= 1)
      bad(errc::parse, "lora_dropout", "must be a number in [0, 1)");
    f.dropout = v->number;
  }
  if (const json::value* v = cfg.find("use_rslora"); v != nullptr && !v->is_null()) {
    if (!v->is_bool()) bad(errc::parse, "use_rslora", "must be true or false");
    f.rslora = v->boolean;
  }
  if (const json::value* v = cfg.find("use_dora"); v != nullptr && v->is_bool() && v->boolean)
    bad(errc::unsupported, "use_dora", "is true (DoRA's magnitude vectors are not supported)");
  if (const json::value* v = cfg.find("bias");
      v != nullptr && !v->is_null() && !(v->is_string() && v->string == "none"))
    bad(errc::unsupported, "bias", "is not \"none\" (LoRA biases are not supported)");
  if (const json::value* v = cfg.find("lora_bias"); v != nullptr && v->is_bool() && v->boolean)
    bad(errc::unsupported, "lora_bias", "is true (a bias on lora_B is not supported)");
  if (const json::value* v = cfg.find("fan_in_fan_out"); v != nullptr && v->is_bool() && v->boolean)
    bad(errc::unsupported, "fan_in_fan_out",
        "is true (transposed Conv1D weights; a LLaMA adapter has (out, in) weights)");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (!is_empty(cfg.find(key)))
      bad(errc::unsupported, key, "is not empty (per-module ranks or alphas are not supported)");
  for (const char* key : {"modules_to_save", "layers_to_transform", "layer_replication"})
    if (!is_empty(cfg.find(key)))
      bad(errc::unsupported, key, "is set (only LoRA pairs on whole-model projections are read)");
  if (const json::value* v = cfg.find("task_type");
      v != nullptr && !v->is_null() && !(v->is_string() && v->string == "CAUSAL_LM"))
    bad(errc::unsupported, "task_type", "is not \"CAUSAL_LM\"");
  if (const json::value* v = cfg.find("base_model_name_or_path"); v != nullptr && v->is_string())
    f.base_model = v->string;
  // target_modules: a list of the seven module names (a regex string: taken from the tensors).
  const json::value* tm = cfg.find("target_modules");
  bool listed = false;
  if (tm != nullptr && tm->is_array()) {
    listed = true;
    for (const auto& e : tm->array) {
      if (!e.is_string()) bad(errc::parse, "target_modules", "holds a non-string entry");
      const auto t = lora_target_of_module(e.string);
      if (!t)
        bad(errc::unsupported, "target_modules",
            "names '" + e.string +
                "'; only q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj are read");
      if (std::find(f.targets.begin(), f.targets.end(), *t) == f.targets.end())
        f.targets.push_back(*t);
    }
  } else if (tm == nullptr || !tm->is_string()) {
    bad(errc::parse, "target_modules", "is missing (a list of module names or a regex string)");
  }

  // Tensors.
  const safetensors::file sf(st_path);
  struct halves {
    const safetensors::tensor_info* a = nullptr;
    const safetensors::tensor_info* b = nullptr;
  };
  std::map<std::pair<index_t, int>, halves> found;
  for (const auto& t : sf.tensors()) {
    auto unknown = [&](const char* why) {
      fail(errc::parse, who, ": '", st_path, "': tensor '", t.name, "' is ", why,
           "; expected base_model.model.model.layers.<l>.{self_attn.{q,k,v,o}_proj,"
           "mlp.{gate,up,down}_proj}.lora_{A,B}.weight.");
    };
    std::string_view n = t.name;
    constexpr std::string_view head = "base_model.model.model.layers.";
    if (n.substr(0, head.size()) != head) unknown("not a LoRA weight of a decoder layer");
    n.remove_prefix(head.size());
    const auto dot = n.find('.');
    const auto layer = d::parse_layer(n.substr(0, dot));
    if (dot == std::string_view::npos || !layer) unknown("not a LoRA weight of a decoder layer");
    n.remove_prefix(dot + 1);
    bool is_a = false;
    if (n.size() > 14 && n.substr(n.size() - 14) == ".lora_A.weight")
      is_a = true;
    else if (!(n.size() > 14 && n.substr(n.size() - 14) == ".lora_B.weight"))
      unknown(
          "neither lora_A.weight nor lora_B.weight (DoRA, biases and saved modules are "
          "not read)");
    n.remove_suffix(14);
    std::optional<lora_target> tg;
    if (n.substr(0, 10) == "self_attn.")
      tg = lora_target_of_module(n.substr(10));
    else if (n.substr(0, 4) == "mlp.")
      tg = lora_target_of_module(n.substr(4));
    if (!tg || (n.substr(0, 4) == "mlp.") !=
                   (*tg == lora_target::gate || *tg == lora_target::up || *tg == lora_target::down))
      unknown("on a module other than the seven projections");
    if (*layer >= base.n_layer)
      fail(errc::value, who, ": '", st_path, "': tensor '", t.name, "' is for layer ", *layer,
           ", the base has ", base.n_layer, " layers.");
    if (listed && std::find(f.targets.begin(), f.targets.end(), *tg) == f.targets.end())
      fail(errc::parse, who, ": '", st_path, "': tensor '", t.name, "' adapts ",
           lora_target_module(*tg), ", which target_modules does not list.");
    if (!listed && std::find(f.targets.begin(), f.targets.end(), *tg) == f.targets.end())
      f.targets.push_back(*tg);
    (is_a ? found[{*layer, static_cast<int>(*tg)}].a : found[{*layer, static_cast<int>(*tg)}].b) =
        &t;
  }
  if (!listed) std::sort(f.targets.begin(), f.targets.end());
  std::vector<lora_target> order = f.targets;  // pairs come back sorted by (layer, target)
  std::sort(order.begin(), order.end());
  const index_t D = base.n_embd / base.n_head;
  for (index_t l = 0; l < base.n_layer; ++l)
    for (lora_target tg : order) {
      const std::string name = d::peft_prefix(l, tg);
      auto it = found.find({l, static_cast<int>(tg)});
      if (it == found.end() || it->second.a == nullptr || it->second.b == nullptr)
        fail(errc::parse, who, ": '", st_path, "': tensor '", name, ".lora_",
             it == found.end() || it->second.a == nullptr ? "A" : "B",
             ".weight' is missing (target ", lora_target_module(tg), ", layer ", l, ").");
      const auto [out, in] = lora_target_shape(base, tg);
      const auto& ta = *it->second.a;
      const auto& tb = *it->second.b;
      const std::vector<index_t> want_a{f.rank, in}, want_b{out, f.rank};
      if (ta.shape != want_a || tb.shape != want_b) {
        const bool rank_differs = ta.shape.size() == 2 && tb.shape.size() == 2 &&
                                  ta.shape[0] == tb.shape[1] && ta.shape[0] != f.rank &&
                                  ta.shape[1] == in && tb.shape[0] == out;
        fail(rank_differs ? errc::unsupported : errc::shape, who, ": '", st_path, "': ", name,
             " has lora_A ", detail::exporter::extents_text(ta.shape), " and lora_B ",
             detail::exporter::extents_text(tb.shape), "; r = ", f.rank,
             " and the base config need lora_A ", detail::exporter::extents_text(want_a),
             " and lora_B ", detail::exporter::extents_text(want_b),
             rank_differs ? " (ranks other than r need rank_pattern, which is not supported)" : "",
             ".");
      }
      lora_pair p;
      p.layer = l;
      p.target = tg;
      p.rank = f.rank;
      p.in = in;
      p.out = out;
      p.a = d::floats_of(ta, st_path);
      p.b = d::floats_of(tb, st_path);
      if (const index_t heads = d::rope_heads(base, tg))
        p.b = d::from_hf_rows(p.b, heads, D, p.rank);
      f.pairs.push_back(std::move(p));
    }
  return f;
}

// ============================================================================================
// llama.cpp LoRA GGUF

/// Writes `f` as a llama.cpp LoRA GGUF at `path` (file comment), F32 tensors, in layer order.
inline void save_lora_gguf(const lora_adapter_file& f, const std::string& path,
                           const nn::dynamic_config& base) {
  namespace d = detail::lora;
  d::check_fits(f, base, "tfm::io::save_lora_gguf");
  gguf_writer w(path);
  w.add("general.architecture", std::string("llama"));
  w.add("general.type", std::string("adapter"));
  w.add("general.name", std::string("typeformer LoRA adapter"));
  w.add("adapter.type", std::string("lora"));
  // llama.cpp scales by alpha / rank: store scale * rank so rsLoRA adapters apply unchanged.
  w.add("adapter.lora.alpha", static_cast<float>(f.scale() * static_cast<double>(f.rank)));
  w.add("typeformer.lora.alpha", f.alpha);
  w.add("typeformer.lora.use_rslora", f.rslora);
  w.add("typeformer.lora.dropout", f.dropout);
  w.add("typeformer.lora.base_model", f.base_model);
  std::vector<std::string> names;
  for (lora_target t : f.targets) names.emplace_back(lora_target_module(t));
  w.add("typeformer.lora.target_modules", names);
  std::vector<const lora_pair*> order;
  for (const auto& p : f.pairs) order.push_back(&p);
  std::stable_sort(order.begin(), order.end(), [](const lora_pair* x, const lora_pair* y) {
    return std::pair(x->layer, x->target) < std::pair(y->layer, y->target);
  });
  for (const lora_pair* p : order) {
    const std::string n =
        "blk." + std::to_string(p->layer) + "." + lora_target_gguf(p->target) + ".weight";
    w.add_tensor(n + ".lora_a", {p->in, p->rank}, ggml_type::f32,
                 std::as_bytes(std::span<const float>(p->a)));
    w.add_tensor(n + ".lora_b", {p->rank, p->out}, ggml_type::f32,
                 std::as_bytes(std::span<const float>(p->b)));
  }
  w.finish();
}

/// Reads a llama.cpp LoRA GGUF for a model of config `base` (file comment: what is refused).
/// Without typeformer's keys, alpha is adapter.lora.alpha (rank when absent or 0, which
/// llama.cpp reads as scale 1) and rslora false.
inline lora_adapter_file load_lora_gguf(const std::string& path, const nn::dynamic_config& base) {
  namespace d = detail::lora;
  const std::string who = "tfm::io::load_lora_gguf";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(errc::io, who, ": '", path, "' is not a file.");
  const gguf_file g(path);
  auto need = [&](const char* key, std::string_view want) {
    if (g.find(key) == nullptr)
      fail(errc::parse, who, ": '", path, "': ", key, " is missing (a LoRA adapter has '", want,
           "'; is this a model rather than an adapter?).");
    const std::string v = g.get<std::string>(key);
    if (v != want)
      fail(errc::parse, who, ": '", path, "': ", key, " is '", v, "', a LoRA adapter has '", want,
           "'.");
  };
  need("general.type", "adapter");
  need("adapter.type", "lora");
  need("general.architecture", "llama");
  struct halves {
    const gguf_tensor_info* a = nullptr;
    const gguf_tensor_info* b = nullptr;
  };
  std::map<std::pair<index_t, int>, halves> found;
  lora_adapter_file f;
  for (const auto& t : g.tensors()) {
    auto unknown = [&](const char* why) {
      fail(errc::parse, who, ": '", path, "': tensor '", t.name, "' is ", why,
           "; expected blk.<l>.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}"
           ".weight.lora_{a,b}.");
    };
    std::string_view n = t.name;
    if (n.substr(0, 4) != "blk.") unknown("not a LoRA weight of a decoder layer");
    n.remove_prefix(4);
    const auto dot = n.find('.');
    const auto layer = d::parse_layer(n.substr(0, dot));
    if (dot == std::string_view::npos || !layer) unknown("not a LoRA weight of a decoder layer");
    n.remove_prefix(dot + 1);
    bool is_a = false;
    if (n.size() > 14 && n.substr(n.size() - 14) == ".weight.lora_a")
      is_a = true;
    else if (!(n.size() > 14 && n.substr(n.size() - 14) == ".weight.lora_b"))
      unknown("neither .weight.lora_a nor .weight.lora_b (norm vectors are not read)");
    n.remove_suffix(14);
    const auto tg = lora_target_of_gguf(n);
    if (!tg) unknown("on a tensor other than the seven projections");
    if (*layer >= base.n_layer)
      fail(errc::value, who, ": '", path, "': tensor '", t.name, "' is for layer ", *layer,
           ", the base has ", base.n_layer, " layers.");
    if (!ggml_type_info_of(t.type).dequantizable)
      fail(errc::unsupported, who, ": '", path, "': tensor '", t.name, "' has type ",
           ggml_type_name(t.type), ", which this build cannot read.");
    (is_a ? found[{*layer, static_cast<int>(*tg)}].a : found[{*layer, static_cast<int>(*tg)}].b) =
        &t;
  }
  if (found.empty()) fail(errc::parse, who, ": '", path, "' holds no LoRA tensors.");
  index_t rank = -1;
  for (const auto& [key, h] : found) {
    const auto tg = static_cast<lora_target>(key.second);
    const std::string name =
        "blk." + std::to_string(key.first) + "." + lora_target_gguf(tg) + ".weight";
    if (h.a == nullptr || h.b == nullptr)
      fail(errc::parse, who, ": '", path, "': tensor '", name,
           h.a == nullptr ? ".lora_a" : ".lora_b", "' is missing (its other half is present).");
    const auto [out, in] = lora_target_shape(base, tg);
    if (h.a->n_dims != 2 || h.b->n_dims != 2 || h.a->ne[0] != in || h.b->ne[1] != out)
      fail(errc::shape, who, ": '", path, "': ", name, " has lora_a ne [", h.a->ne[0], ", ",
           h.a->ne[1], "] and lora_b ne [", h.b->ne[0], ", ", h.b->ne[1],
           "]; the base config needs lora_a ne [", in, ", rank] and lora_b ne [rank, ", out, "].");
    if (h.a->ne[1] != h.b->ne[0])
      fail(errc::parse, who, ": '", path, "': ", name, ": lora_a ne[1] = ", h.a->ne[1],
           " differs from lora_b ne[0] = ", h.b->ne[0], " (lora_a not transposed?).");
    if (rank >= 0 && h.a->ne[1] != rank)
      fail(errc::unsupported, who, ": '", path, "': ", name, " has rank ", h.a->ne[1],
           ", another pair has rank ", rank, " (one rank per adapter is supported).");
    rank = static_cast<index_t>(h.a->ne[1]);
    lora_pair p;
    p.layer = key.first;
    p.target = tg;
    p.rank = rank;
    p.in = in;
    p.out = out;
    p.a = dequantize(h.a->type, g.tensor_data(*h.a));
    p.b = dequantize(h.b->type, g.tensor_data(*h.b));
    f.pairs.push_back(std::move(p));
    if (std::find(f.targets.begin(), f.targets.end(), tg) == f.targets.end())
      f.targets.push_back(tg);
  }
  std::sort(f.targets.begin(), f.targets.end());
  f.rank = rank;
  const double file_alpha = g.get_or<double>("adapter.lora.alpha", 0.0);
  if (!std::isfinite(file_alpha) || file_alpha < 0)
    fail(errc::parse, who, ": '", path, "': adapter.lora.alpha = ", file_alpha,
         " must be finite and non-negative.");
  f.alpha = file_alpha > 0 ? file_alpha : static_cast<double>(rank);
  if (g.find("typeformer.lora.alpha") != nullptr) {
    f.alpha = g.get<double>("typeformer.lora.alpha");
    f.rslora = g.get_or<bool>("typeformer.lora.use_rslora", false);
    f.dropout = g.get_or<double>("typeformer.lora.dropout", 0.0);
    f.base_model = g.get_or<std::string>("typeformer.lora.base_model", "");
    if (!(f.alpha > 0) || !std::isfinite(f.alpha))
      fail(errc::parse, who, ": '", path, "': typeformer.lora.alpha = ", f.alpha,
           " must be positive.");
    if (g.find("typeformer.lora.target_modules") != nullptr) {
      std::vector<lora_target> listed;
      for (const auto& s : g.get<std::vector<std::string>>("typeformer.lora.target_modules")) {
        const auto t = lora_target_of_module(s);
        if (!t)
          fail(errc::parse, who, ": '", path, "': typeformer.lora.target_modules names '", s, "'.");
        listed.push_back(*t);
      }
      for (lora_target t : f.targets)
        if (std::find(listed.begin(), listed.end(), t) == listed.end())
          fail(errc::parse, who, ": '", path, "': tensors adapt ", lora_target_module(t),
               ", which typeformer.lora.target_modules does not list.");
      f.targets = listed;
    }
  }
  return f;
}

// ============================================================================================
// Merging

namespace detail::lora {

/// w (rows of a (*, in) matrix starting at row r0) += s B A, accumulated in double per element.
inline void add_product(std::vector<float>& w, index_t r0, const lora_pair& p, double s) {
  std::vector<double> acc(static_cast<std::size_t>(p.in));
  for (index_t o = 0; o < p.out; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (index_t k = 0; k < p.rank; ++k) {
      const double bk = p.b[static_cast<std::size_t>(o * p.rank + k)];
      const float* a = p.a.data() + k * p.in;
      for (index_t i = 0; i < p.in; ++i) acc[static_cast<std::size_t>(i)] += bk * a[i];
    }
    float* row = w.data() + (r0 + o) * p.in;
    for (index_t i = 0; i < p.in; ++i)
      row[i] =
          static_cast<float>(static_cast<double>(row[i]) + s * acc[static_cast<std::size_t>(i)]);
  }
}

/// The nn::gpt parameter of a target and the first row the target occupies in it.
inline std::pair<std::string, index_t> merge_site(const nn::dynamic_config& c, index_t layer,
                                                  lora_target t) {
  const std::string p = "h." + std::to_string(layer) + ".";
  const index_t D = c.n_embd / c.n_head;
  switch (t) {
    case lora_target::q:
      return {p + "attn.c_attn.weight", 0};
    case lora_target::k:
      return {p + "attn.c_attn.weight", c.n_head * D};
    case lora_target::v:
      return {p + "attn.c_attn.weight", (c.n_head + c.n_kv_head) * D};
    case lora_target::o:
      return {p + "attn.c_proj.weight", 0};
    case lora_target::gate:
      return {p + "mlp.gate.weight", 0};
    case lora_target::up:
      return {p + "mlp.up.weight", 0};
    case lora_target::down:
      return {p + "mlp.down.weight", 0};
  }
  return {"", 0};
}

}  // namespace detail::lora

/// Adds sign * f.scale() * B A to the adapted weights of `m` (nn::gpt names; file comment's
/// table): sign +1 merges, -1 unmerges. Accumulates each element in double and rounds once.
/// Errors: the adapter does not fit m.config (check as save_peft), a parameter is missing or
/// has other extents (tfm::shape_error naming it). Nothing is changed when an error is raised.
inline void merge(export_model& m, const lora_adapter_file& f, double sign = +1) {
  namespace d = detail::lora;
  const std::string who = "tfm::io::merge";
  d::check_fits(f, m.config, who);
  const nn::dynamic_config& c = m.config;
  const index_t D = c.n_embd / c.n_head;
  for (const auto& p : f.pairs) {  // check everything first
    const auto [name, r0] = d::merge_site(c, p.layer, p.target);
    auto it = m.weights.find(name);
    if (it == m.weights.end())
      fail(errc::value, who, ": the model has no parameter '", name, "' for ", d::pair_name(p),
           ".");
    const index_t rows =
        p.target == lora_target::q || p.target == lora_target::k || p.target == lora_target::v
            ? (c.n_head + 2 * c.n_kv_head) * D
            : p.out;
    const std::vector<index_t> want{rows, p.in};
    if (it->second.extents != want || static_cast<index_t>(it->second.values.size()) != rows * p.in)
      fail(errc::shape, who, ": parameter '", name, "' has extents ",
           detail::exporter::extents_text(it->second.extents), ", ", d::pair_name(p), " needs ",
           detail::exporter::extents_text(want), ".");
  }
  const double s = sign * f.scale();
  for (const auto& p : f.pairs) {
    const auto [name, r0] = d::merge_site(c, p.layer, p.target);
    d::add_product(m.weights.find(name)->second.values, r0, p, s);
  }
}

/// Options of merge_lora_gguf.
struct merge_gguf_options {
  /// Element type of every 2-D tensor of the output (f32, f16 or bf16, as tfm convert), or
  /// nullopt: unadapted tensors are copied byte for byte, adapted ones keep their type when it
  /// is F32/F16/BF16 and become F32 when it was block-quantized.
  std::optional<ggml_type> type;
  double scale = 1;  ///< multiplies the adapter's scale (llama.cpp's --lora-scaled)
};

/// The LLaMA config a GGUF base model's keys describe (io/export_gguf_import.hpp's reading;
/// the tokenizer is not looked at). tfm::unsupported_error for another architecture.
inline nn::dynamic_config lora_base_config(const gguf_file& g) {
  const std::string a = g.get<std::string>("general.architecture");
  if (a != "llama")
    fail(errc::unsupported, "tfm::io::lora: '", g.name(), "': general.architecture is '", a,
         "'; LoRA adapters here are for llama models.");
  return detail::importer::config_of(g, a);
}

/// Writes `out`: the GGUF model `base` with f (times o.scale) merged into blk.l.attn_q / attn_k /
/// attn_v / attn_output / ffn_gate / ffn_up / ffn_down (GGUF rows are nn rows, so no permutation).
/// All metadata is copied (general.file_type updated when o.type is set); tensors keep their
/// order. Errors as merge(), plus tfm::parse_error for a missing or misshapen base tensor.
inline void merge_lora_gguf(const gguf_file& base, const lora_adapter_file& f,
                            const std::string& out, const merge_gguf_options& o = {}) {
  namespace d = detail::lora;
  const std::string who = "tfm::io::merge_lora_gguf";
  if (o.type && *o.type != ggml_type::f32 && *o.type != ggml_type::f16 &&
      *o.type != ggml_type::bf16)
    fail(errc::value, who, ": output type ", ggml_type_name(*o.type),
         " is not one of f32, f16, bf16.");
  const nn::dynamic_config c = lora_base_config(base);
  d::check_fits(f, c, who);
  std::map<std::string, const lora_pair*, std::less<>> by_tensor;
  for (const auto& p : f.pairs) {
    const std::string n =
        "blk." + std::to_string(p.layer) + "." + lora_target_gguf(p.target) + ".weight";
    const gguf_tensor_info* t = base.find_tensor(n);
    if (t == nullptr) fail(errc::parse, who, ": '", base.name(), "': tensor '", n, "' is missing.");
    if (t->n_dims != 2 || t->ne[0] != p.in || t->ne[1] != p.out)
      fail(errc::parse, who, ": '", base.name(), "': tensor '", n, "' has ne [", t->ne[0], ", ",
           t->ne[1], "], ", d::pair_name(p), " needs [", p.in, ", ", p.out, "].");
    if (!ggml_type_info_of(t->type).dequantizable)
      fail(errc::unsupported, who, ": '", base.name(), "': tensor '", n, "' has type ",
           ggml_type_name(t->type), ", which this build cannot dequantize.");
    by_tensor[n] = &p;
  }
  const double s = o.scale * f.scale();
  rewrite_gguf(
      base, out, [&](const gguf_tensor_info& t) { return by_tensor.count(t.name) != 0; },
      [&](const gguf_tensor_info& t, std::vector<float>& v) {
        d::add_product(v, 0, *by_tensor.find(t.name)->second, s);
      },
      {.type = o.type}, who);
}

/// Reads an adapter for a model of config `base`: a PEFT directory or a LoRA GGUF file.
inline lora_adapter_file load_lora(const std::string& path, const nn::dynamic_config& base) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return load_peft(path, base);
  return load_lora_gguf(path, base);
}

}  // namespace io
TFM_END_NAMESPACE
