// typeformer/quant/file_quantize.hpp
//
// WHAT THIS REPRESENTS
//   Quantization of a whole GGUF model file, as llama.cpp's `llama-quantize [--imatrix FILE] IN
//   OUT TYPE` does it: the library part of `tfm quantize`.
//
//     find_quantize_preset("q4_k")     -> the preset (Q4_K_M: llama_ftype 15, base type Q4_K, mix)
//     plan_quantization(file, p, im)   -> per tensor: the output type and why (no data touched)
//     quantize_gguf(file, out, p, o)   -> writes OUT, returns per-tensor RMSE, bytes and totals;
//                                         o.imatrix: an importance matrix (quant/imatrix.hpp)
//
// CONTRACTS
//   - Presets are llama-quantize's names, case-insensitive: Q4_0 (file type 2), Q4_1 (3), Q8_0 (7),
//     Q5_0 (8), Q5_1 (9), Q2_K (10), Q3_K_S (11), Q3_K_M (12), Q3_K_L (13), Q4_K_S (14), Q4_K_M
//     (15), Q5_K_S (16), Q5_K_M (17), Q6_K (18), F16 (1), BF16 (32), F32 (0); "Q3_K", "Q4_K" and
//     "Q5_K" are Q3_K_M, Q4_K_M and Q5_K_M, as in llama-quantize. The values are gguf-py's
//     LlamaFileType (llama.h's llama_ftype).
//   - Tensor types follow src/llama-quant.cpp of llama.cpp (llama_tensor_get_type_impl and its
//     helpers, as vendored in llama-cpp-python 0.3.36) with the default parameters
//     (llama_model_quantize_default_params: quantize_output_tensor, not pure):
//     1. A tensor is quantized only when it has 2 or more dims, its name ends in "weight" and is
//        not a norm ("_norm.weight"), an MoE router ("ffn_gate_inp.weight"), a position or
//        token-type embedding ("position_embd.weight", "token_types.weight") or one of the small
//        tensors llama.cpp lists (ssm_conv1d, attn_rel_b, altup, laurel, per_layer_model_proj,
//        shortconv.conv, RWKV time_mix_*), and its type is a float or dequantizable type.
//        Every other tensor keeps its type and its bytes (1-D tensors stay F32 when they are).
//     2. F16 / BF16 / F32 presets: every quantizable tensor gets that type.
//     3. Otherwise the base type (Q2_K; Q3_K for Q3_K_*; Q4_K for Q4_K_*; Q5_K for Q5_K_*), then
//        the mix (categories by name as llama.cpp's tensor_get_category; attn_v-like = attn_v,
//        attn_qkv, attn_kv_b, counted i of n in llama.cpp's order: layer number, then name;
//        ffn_down's layer i = its index among the ffn_down tensors, n = block_count; gqa =
//        head_count / head_count_kv; use_more_bits(i, n) = i < n/8 || i >= 7n/8 ||
//        (i - n/8) % 3 == 2):
//        - output.weight, and token_embd.weight when the file has no output.weight (tied
//          embeddings): Q8_0 when ne[0] is not a multiple of the base type's block, else Q6_K
//          unless the base type is Q8_0;
//        - attn_v-like: Q2_K -> Q4_K if gqa >= 4 else Q3_K; Q3_K_M -> Q5_K for i < 2 else Q4_K;
//          Q3_K_L -> Q5_K; Q4_K_M, Q5_K_M -> Q6_K when use_more_bits(i, n); Q4_K_S -> Q5_K for
//          i < 4. (attn_qkv takes this branch: llama.cpp's later attn_qkv rule is unreachable.)
//        - ffn_down: Q2_K -> Q3_K; Q3_K_M -> Q5_K for i < n/16 else Q4_K; Q3_K_L -> Q5_K;
//          Q4_K_M, Q5_K_M -> Q6_K when use_more_bits(i, n); Q4_K_S -> Q5_K for i < n/8; with an
//          imatrix, Q4_0 / Q5_0 -> Q4_1 / Q5_1 for i < n/8.
//        - attn_output: Q2_K -> Q3_K; Q3_K_M -> Q4_K; Q3_K_L -> Q5_K.
//        - 8-expert MoE models (<arch>.expert_count == 8, Mixtral's shape): attn_v-like and
//          attn_k -> Q8_0 (after the rules above; Q2_K's attn_v rule takes gqa >= 4 or E >= 4);
//          attn_output -> Q5_K for Q2_K, Q3_K_S, Q3_K_M, Q4_K_S, Q4_K_M (instead of the rules
//          above). Checked against llama_model_quantize on an 8-expert file (Q4_0, Q8_0, Q4_K_M).
//        Not modelled: llama.cpp's cases for Falcon and 70B llamas, and the IQ presets'.
//     4. Fallback when ne[0] is not a multiple of the chosen type's block (llama.cpp's
//        tensor_type_fallback): Q2_K, Q3_K -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0;
//        then, or for a legacy 32-block type, F16 when ne[0] is still not a whole block.
//     5. A tensor whose chosen type equals its input type is copied byte for byte.
//   - Importance matrix (options.imatrix): each converted tensor whose name the imatrix holds
//     gets its importance(name) (in_sum2 / count) when the output type uses one
//     (uses_importance: Q4_0 ... Q5_1 and every K type; not Q8_0 or floats), as llama-quantize
//     passes it to ggml_quantize_chunk; the size must be ne[0] * ne[2] (tfm::shape_error naming
//     the tensor otherwise); absent names are quantized without. token_embd and output are
//     never in an imatrix from llama-imatrix / tfm imatrix (no product / not collected).
//   - Quantized input (e.g. a Q4_1 file) is dequantized with tfm::dequantize first
//     (llama-quantize's --allow-requantize); the report says so (requantized).
//   - Bytes: each row is quantized by tfm::quantize_row (quant/quantize.hpp: Q8_0 ... Q5_1 equal to
//     gguf.quants.quantize, the K types and every importance-weighted quantizer equal to
//     llama.cpp's ggml_quantize_chunk on the test rows); F16 / BF16 round to
//     nearest even. Rows are split into contiguous ranges over `threads` std::threads; every row
//     is one thread's work and the per-row squared errors are summed in row order, so the file
//     and the report do not depend on the thread count.
//   - Metadata: every key is copied in order except general.file_type and
//     general.quantization_version, which are appended (file type of the preset; quantization
//     version 2, GGML_QNT_VERSION). The tokenizer keys are copied with the rest.
//   - Memory: the output is written with io::gguf_writer (header, then one tensor at a time):
//     one tensor's output bytes plus one float row per thread are held, the input stays mapped.
//   - RMSE of a tensor = sqrt(mean((dequantize(out) - in)^2)) with `in` the input as float
//     (dequantized when the input is quantized); 0 for copied tensors.
//   - Errors: unknown preset -> tfm::value_error listing the names; NaN/Inf in a weight ->
//     tfm::value_error naming the tensor, row and column (quantize_row's); unsupported input
//     types -> tfm::unsupported_error naming the tensor. OUT is written as OUT.tmp and renamed
//     only when complete.
//   Sources: llama.cpp src/llama-quant.cpp, tools/quantize/quantize.cpp (the names),
//   include/llama.h (llama_ftype); gguf-py gguf/constants.py (LlamaFileType).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/imatrix.hpp"
#include "typeformer/quant/int_formats.hpp"
#include "typeformer/quant/quantize.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

TFM_BEGIN_NAMESPACE

/// One llama-quantize file type.
struct quantize_preset {
  std::string_view name;    ///< llama-quantize's name, upper case ("Q4_K_M")
  std::uint32_t file_type;  ///< general.file_type (llama_ftype)
  ggml_type base;           ///< the type of most tensors
  bool k_mix;               ///< llama.cpp's per-tensor mix of a K preset (attn_v, ffn_down, ...)
  /// Q8_0 blocks holding one scale per row (INT8 per output channel, quant/int_formats.hpp).
  bool per_channel = false;
};

/// llama-quantize's presets, then typeformer's own (I8, NF4, I4_G64, I4_G128: layouts of
/// quant/int_formats.hpp and quant/nf4.hpp; general.file_type 1100+ for the three that llama.cpp
/// cannot read, 7 = MOSTLY_Q8_0 for I8, whose file llama.cpp runs).
inline constexpr std::array<quantize_preset, 21> quantize_presets{{
    {"Q4_0", 2, ggml_type::q4_0, false, false},
    {"Q4_1", 3, ggml_type::q4_1, false, false},
    {"Q5_0", 8, ggml_type::q5_0, false, false},
    {"Q5_1", 9, ggml_type::q5_1, false, false},
    {"Q8_0", 7, ggml_type::q8_0, false, false},
    {"Q2_K", 10, ggml_type::q2_K, true, false},
    {"Q3_K_S", 11, ggml_type::q3_K, true, false},
    {"Q3_K_M", 12, ggml_type::q3_K, true, false},
    {"Q3_K_L", 13, ggml_type::q3_K, true, false},
    {"Q4_K_S", 14, ggml_type::q4_K, true, false},
    {"Q4_K_M", 15, ggml_type::q4_K, true, false},
    {"Q5_K_S", 16, ggml_type::q5_K, true, false},
    {"Q5_K_M", 17, ggml_type::q5_K, true, false},
    {"Q6_K", 18, ggml_type::q6_K, false, false},
    {"F16", 1, ggml_type::f16, false, false},
    {"BF16", 32, ggml_type::bf16, false, false},
    {"F32", 0, ggml_type::f32, false, false},
    {"I8", 7, ggml_type::q8_0, false, true},
    {"NF4", 1100, ggml_type::tfm_nf4, false, false},
    {"I4_G64", 1101, ggml_type::tfm_i4_g64, false, false},
    {"I4_G128", 1102, ggml_type::tfm_i4_g128, false, false},
}};

/// The preset named `name` (case-insensitive; "Q3_K", "Q4_K", "Q5_K" are Q3_K_M, Q4_K_M, Q5_K_M
/// as in llama-quantize; "I4_G32" is Q4_1), or nullptr.
inline const quantize_preset* find_quantize_preset(std::string_view name) noexcept {
  std::string up(name);
  for (char& c : up)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  if (up == "Q3_K" || up == "Q4_K" || up == "Q5_K") up += "_M";
  if (up == "I4_G32") up = "Q4_1";  // INT4 in groups of 32 is Q4_1's layout
  for (const quantize_preset& p : quantize_presets)
    if (p.name == up) return &p;
  return nullptr;
}

/// "q4_0, q4_1, ..." (lower case, for messages and --help).
inline std::string quantize_preset_names() {
  std::string s;
  for (const quantize_preset& p : quantize_presets) {
    if (!s.empty()) s += ", ";
    for (char c : p.name) s += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (p.name == "Q3_K_M") s += " (q3_k)";
    if (p.name == "Q4_K_M") s += " (q4_k)";
    if (p.name == "Q5_K_M") s += " (q5_k)";
    if (p.name == "Q4_1") s += " (i4_g32)";
  }
  return s;
}

/// The preset named `name`, or a tfm::value_error listing the names.
inline const quantize_preset& quantize_preset_of(std::string_view name) {
  const quantize_preset* p = find_quantize_preset(name);
  if (p == nullptr)
    fail(errc::value, "unknown quantization type '", name, "' (one of ", quantize_preset_names(),
         ")");
  return *p;
}

/// What happens to one tensor.
struct tensor_quant_plan {
  ggml_type in = ggml_type::f32;
  ggml_type out = ggml_type::f32;
  bool convert = false;  ///< false: bytes copied as they are
  std::string note;  ///< why the type differs from the preset's base type (empty if it does not)
};

namespace detail::fq {

inline bool contains(std::string_view s, std::string_view part) noexcept {
  return s.find(part) != std::string_view::npos;
}
inline bool ends_with(std::string_view s, std::string_view suffix) noexcept {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// llama.cpp's tensor_allows_quantization (default parameters), by name and rank.
inline bool allows_quantization(std::string_view name, std::uint32_t n_dims) noexcept {
  if (n_dims < 2 || !ends_with(name, "weight")) return false;
  static constexpr std::string_view excluded[] = {"_norm.weight",
                                                  "ffn_gate_inp.weight",
                                                  "ssm_conv1d",
                                                  "attn_rel_b.weight",
                                                  "altup",
                                                  "laurel",
                                                  "per_layer_model_proj",
                                                  "shortconv.conv.weight",
                                                  "time_mix_first.weight",
                                                  "time_mix_w0.weight",
                                                  "time_mix_w1.weight",
                                                  "time_mix_w2.weight",
                                                  "time_mix_v0.weight",
                                                  "time_mix_v1.weight",
                                                  "time_mix_v2.weight",
                                                  "time_mix_a0.weight",
                                                  "time_mix_a1.weight",
                                                  "time_mix_a2.weight",
                                                  "time_mix_g1.weight",
                                                  "time_mix_g2.weight",
                                                  "time_mix_decay_w1.weight",
                                                  "time_mix_decay_w2.weight",
                                                  "time_mix_lerp_fused.weight"};
  for (std::string_view e : excluded)
    if (contains(name, e)) return false;
  return name != "position_embd.weight" && name != "token_types.weight";
}

inline bool float_type(ggml_type t) noexcept {
  return t == ggml_type::f32 || t == ggml_type::f16 || t == ggml_type::bf16;
}

/// llama.cpp's tensor_get_category (src/llama-quant.cpp), in its order of tests.
enum class category {
  token_embd,
  output,
  attn_qkv,
  attn_kv_b,
  attn_v,
  attn_k,
  attn_q,
  attn_output,
  ffn_up,
  ffn_gate,
  ffn_down,
  other
};

inline category category_of(std::string_view name) noexcept {
  if (name == "output.weight") return category::output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight")
    return category::token_embd;
  if (contains(name, "attn_qkv.weight")) return category::attn_qkv;
  if (contains(name, "attn_kv_b.weight")) return category::attn_kv_b;
  if (contains(name, "attn_v.weight")) return category::attn_v;
  if (contains(name, "attn_k.weight")) return category::attn_k;
  if (contains(name, "attn_q.weight")) return category::attn_q;
  if (contains(name, "attn_output.weight")) return category::attn_output;
  if (contains(name, "ffn_up")) return category::ffn_up;
  if (contains(name, "ffn_gate")) return category::ffn_gate;
  if (contains(name, "ffn_down")) return category::ffn_down;
  return category::other;
}

/// attn_v-like tensors (llama.cpp's category_is_attn_v: attn_v, attn_qkv, attn_kv_b).
inline bool attn_v_like(category c) noexcept {
  return c == category::attn_v || c == category::attn_qkv || c == category::attn_kv_b;
}

/// The layer number of "blk.N....", or -1.
inline int layer_of(std::string_view name) noexcept {
  if (name.substr(0, 4) != "blk.") return -1;
  int v = 0;
  std::size_t i = 4;
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) {
    v = v * 10 + (name[i] - '0');
    if (v > 1'000'000) return -1;
  }
  return i < name.size() && name[i] == '.' ? v : -1;
}

inline bool use_more_bits(int i, int n) noexcept {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

inline std::string upper_name(ggml_type t) { return std::string(ggml_type_name(t)); }

/// llama.cpp's llama_tensor_get_type_impl for the presets here (no MoE-8, Falcon or 70B
/// special cases): the type of a quantizable tensor of category `cat` before the fallback.
/// i_wv / n_wv: index and count of the attn_v-like tensors; i_layer / n_layer: the ffn_down's
/// layer (its index among the ffn_down tensors) and the layer count; gqa = heads / kv heads.
inline ggml_type mix_type(const quantize_preset& p, category cat, ggml_type base,
                          std::int64_t ncols, bool tied, int i_wv, int n_wv, int i_layer,
                          int n_layer, int gqa, bool has_imatrix, std::string& note,
                          int n_expert = 0) {
  const std::uint32_t ft = p.file_type;
  constexpr std::uint32_t Q4_0 = 2, Q5_0 = 8, Q2_K = 10, Q3_K_S = 11, Q3_K_M = 12, Q3_K_L = 13,
                          Q4_K_S = 14, Q4_K_M = 15, Q5_K_M = 17;
  ggml_type ty = base;
  auto why = [&](std::string s) { note = std::move(s); };
  if (cat == category::output || (tied && cat == category::token_embd)) {
    const auto blk = static_cast<std::int64_t>(ggml_type_info_of(base).block_elements);
    if (is_typeformer_type(base) && ncols % 32 == 0) {
      ty = ggml_type::q8_0;  // typeformer's presets keep the head in 8 bits
      why(cat == category::token_embd ? "tied output -> Q8_0" : "output -> Q8_0");
    } else if (ncols % blk != 0) {
      ty = ggml_type::q8_0;
      why("output: ne[0] not a multiple of " + std::to_string(blk) + " -> Q8_0");
    } else if (base != ggml_type::q8_0) {
      ty = ggml_type::q6_K;
      if (base != ggml_type::q6_K)
        why(cat == category::token_embd ? "tied output -> Q6_K" : "output -> Q6_K");
    }
    return ty;
  }
  if (cat == category::token_embd) return ty;
  const std::string wv = "attn_v " + std::to_string(i_wv) + "/" + std::to_string(n_wv);
  const std::string fd =
      "ffn_down layer " + std::to_string(i_layer) + "/" + std::to_string(n_layer);
  if (attn_v_like(cat)) {
    if (ft == Q2_K) {
      const bool more = gqa >= 4 || n_expert >= 4;
      ty = more ? ggml_type::q4_K : ggml_type::q3_K;
      why(wv + (more ? " (gqa >= 4 or >= 4 experts) -> Q4_K" : " -> Q3_K"));
    } else if (ft == Q3_K_M) {
      ty = i_wv < 2 ? ggml_type::q5_K : ggml_type::q4_K;
      why(wv + (i_wv < 2 ? " first two -> Q5_K" : " -> Q4_K"));
    } else if (ft == Q3_K_L) {
      ty = ggml_type::q5_K;
      why(wv + " -> Q5_K");
    } else if ((ft == Q4_K_M || ft == Q5_K_M) && use_more_bits(i_wv, n_wv)) {
      ty = ggml_type::q6_K;
      why(wv + " more bits -> Q6_K");
    } else if (ft == Q4_K_S && i_wv < 4) {
      ty = ggml_type::q5_K;
      why(wv + " first four -> Q5_K");
    }
    if (n_expert == 8) {
      ty = ggml_type::q8_0;
      why(wv + ", 8 experts -> Q8_0");
    }
  } else if (cat == category::attn_k && n_expert == 8) {
    ty = ggml_type::q8_0;
    why("attn_k, 8 experts -> Q8_0");
  } else if (cat == category::ffn_down) {
    if (ft == Q2_K) {
      ty = ggml_type::q3_K;
      why(fd + " -> Q3_K");
    } else if (ft == Q3_K_M) {
      ty = i_layer < n_layer / 16 ? ggml_type::q5_K : ggml_type::q4_K;
      why(fd + (i_layer < n_layer / 16 ? " first 1/16 -> Q5_K" : " -> Q4_K"));
    } else if (ft == Q3_K_L) {
      ty = ggml_type::q5_K;
      why(fd + " -> Q5_K");
    } else if (ft == Q4_K_M) {
      if (use_more_bits(i_layer, n_layer)) {
        ty = ggml_type::q6_K;
        why(fd + " more bits -> Q6_K");
      }
    } else if (ft == Q5_K_M && use_more_bits(i_layer, n_layer)) {
      ty = ggml_type::q6_K;
      why(fd + " more bits -> Q6_K");
    } else if (ft == Q4_K_S && i_layer < n_layer / 8) {
      ty = ggml_type::q5_K;
      why(fd + " first 1/8 -> Q5_K");
    } else if ((ft == Q4_0 || ft == Q5_0) && has_imatrix && i_layer < n_layer / 8) {
      ty = ft == Q4_0 ? ggml_type::q4_1 : ggml_type::q5_1;
      why(fd + " first 1/8 with imatrix -> " + upper_name(ty));
    }
  } else if (cat == category::attn_output && n_expert == 8) {
    if (ft == Q2_K || ft == Q3_K_S || ft == Q3_K_M || ft == Q4_K_S || ft == Q4_K_M) {
      ty = ggml_type::q5_K;
      why("attn_output, 8 experts -> Q5_K");
    }
  } else if (cat == category::attn_output) {
    if (ft == Q2_K) {
      ty = ggml_type::q3_K;
      why("attn_output -> Q3_K");
    } else if (ft == Q3_K_M) {
      ty = ggml_type::q4_K;
      why("attn_output -> Q4_K");
    } else if (ft == Q3_K_L) {
      ty = ggml_type::q5_K;
      why("attn_output -> Q5_K");
    }
  }
  return ty;
}

}  // namespace detail::fq

/// The output type of every tensor of `f` under preset `p` (in file order), by the rules above;
/// `has_imatrix`: an importance matrix will be given (llama.cpp's Q4_0 / Q5_0 ffn_down rule).
/// Throws tfm::unsupported_error for a tensor this build cannot read or write in the chosen type.
inline std::vector<tensor_quant_plan> plan_quantization(const io::gguf_file& f,
                                                        const quantize_preset& p,
                                                        bool has_imatrix = false) {
  namespace fq = detail::fq;
  const auto tensors = f.tensors();
  const std::size_t n = tensors.size();
  bool tied = true;
  int n_wv = 0, max_layer = -1;
  for (const auto& t : tensors) {
    const auto c = fq::category_of(t.name);
    if (c == fq::category::output) tied = false;
    if (fq::attn_v_like(c)) ++n_wv;
    max_layer = std::max(max_layer, fq::layer_of(t.name));
  }
  // n_layer: <arch>.block_count as llama.cpp reads it, else from the names; gqa from the heads.
  int n_layer = max_layer + 1, gqa = 1, n_expert = 0;
  if (const auto* arch = f.find("general.architecture");
      arch != nullptr && arch->value.type() == io::gguf_type::string) {
    const std::string a(arch->value.as_string());
    n_layer = static_cast<int>(f.get_or<index_t>(a + ".block_count", n_layer));  // mistyped: error
    const auto heads = f.get_or<index_t>(a + ".attention.head_count", 0);
    const auto kv = f.get_or<index_t>(a + ".attention.head_count_kv", heads);
    if (heads > 0 && kv > 0) gqa = static_cast<int>(heads / kv);
    n_expert = static_cast<int>(f.get_or<index_t>(a + ".expert_count", 0));
  }
  // llama.cpp visits the tensors by (layer number, name) (weight_name_comparer); the attn_v and
  // ffn_down counters follow that order.
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const int la = fq::layer_of(tensors[a].name), lb = fq::layer_of(tensors[b].name);
    if (la != lb) return la < lb;
    return tensors[a].name < tensors[b].name;
  });
  std::vector<tensor_quant_plan> plan(n);
  int i_wv = 0, i_ffn_down = 0;
  for (std::size_t idx : order) {
    const io::gguf_tensor_info& t = tensors[idx];
    tensor_quant_plan& r = plan[idx];
    r.in = r.out = t.type;
    const bool readable = fq::float_type(t.type) || ggml_type_info_of(t.type).dequantizable;
    if (!readable || !fq::allows_quantization(t.name, t.n_dims)) continue;
    const auto cat = fq::category_of(t.name);
    ggml_type ty = p.base;
    const auto ncols = t.ne[0];
    auto block_of = [](ggml_type x) {
      return static_cast<std::int64_t>(ggml_type_info_of(x).block_elements);
    };
    if (!fq::float_type(p.base)) {
      // ffn_down's layer: its index among the ffn_down tensors (llama.cpp's i_ffn_down), or the
      // layer in the name for MoE files (n_expert > 1), as llama.cpp's layer_info.
      int layer = i_ffn_down;
      if (n_expert > 1 && fq::layer_of(t.name) >= 0) layer = fq::layer_of(t.name);
      ty = fq::mix_type(p, cat, p.base, ncols, tied, i_wv, n_wv, layer, n_layer, gqa, has_imatrix,
                        r.note, n_expert);
      if (fq::attn_v_like(cat)) ++i_wv;
      if (cat == fq::category::ffn_down) ++i_ffn_down;
      if (ncols % block_of(ty) != 0) {  // llama.cpp's tensor_type_fallback
        const ggml_type wanted = ty;
        switch (wanted) {
          case ggml_type::q2_K:
          case ggml_type::q3_K:
            ty = ggml_type::q4_0;
            break;
          case ggml_type::q4_K:
            ty = ggml_type::q5_0;
            break;
          case ggml_type::q5_K:
            ty = ggml_type::q5_1;
            break;
          case ggml_type::q6_K:
            ty = ggml_type::q8_0;
            break;
          case ggml_type::tfm_i4_g128:  // INT4 groups: the next smaller group (g32 = Q4_1)
            ty = ncols % 64 == 0 ? ggml_type::tfm_i4_g64 : ggml_type::q4_1;
            break;
          case ggml_type::tfm_i4_g64:
            ty = ggml_type::q4_1;
            break;
          default:
            ty = ggml_type::f16;
        }
        if (ncols % block_of(ty) != 0) ty = ggml_type::f16;
        if (!r.note.empty()) r.note += "; ";
        r.note += "ne[0] " + std::to_string(ncols) + " not a multiple of " +
                  std::to_string(block_of(wanted)) + ": " + fq::upper_name(wanted) + " -> " +
                  fq::upper_name(ty);
      }
    } else {
      ty = p.base;
    }
    r.out = ty;
    r.convert = ty != t.type;
    if (r.convert && !fq::float_type(ty) && !quantizable(ty))
      fail(errc::unsupported, "tfm::plan_quantization: tensor '", t.name, "' would be ",
           fq::upper_name(ty), ", which has no quantizer in this build");
    if (r.convert && !fq::float_type(t.type)) {
      if (!r.note.empty()) r.note += "; ";
      r.note += "requantized from " + fq::upper_name(t.type);
    }
  }
  return plan;
}

/// One tensor of a quantize_gguf report.
struct quantized_tensor {
  std::string name;
  std::vector<std::int64_t> ne;  ///< ggml order (ne[0] = row length)
  ggml_type in = ggml_type::f32, out = ggml_type::f32;
  double rmse = 0;  ///< of the dequantized output against the input as float
  std::uint64_t bytes_in = 0, bytes_out = 0, n_elements = 0;
  std::string note;
  bool imatrix = false;  ///< the quantizer was given this tensor's importance vector
};

struct quantize_gguf_report {
  const quantize_preset* preset = nullptr;
  std::vector<quantized_tensor> tensors;
  std::uint64_t file_bytes_in = 0, file_bytes_out = 0;
  std::uint64_t tensor_bytes_in = 0, tensor_bytes_out = 0, n_elements = 0;
  int n_fallback = 0;        ///< tensors whose row length forced another type
  int n_imatrix = 0;         ///< tensors quantized with an importance vector
  bool requantized = false;  ///< some input tensor was already quantized
  double seconds = 0;
  /// Bits per weight of the tensor data (llama.cpp's BPW).
  double bpw_in() const {
    return n_elements ? 8.0 * double(tensor_bytes_in) / double(n_elements) : 0;
  }
  double bpw_out() const {
    return n_elements ? 8.0 * double(tensor_bytes_out) / double(n_elements) : 0;
  }
};

struct quantize_gguf_options {
  int threads = 1;  ///< worker threads over rows (<= 0: std::thread::hardware_concurrency())
  /// An importance matrix (quant/imatrix.hpp, llama-quantize --imatrix): each quantized tensor
  /// whose name it holds gets importance(name) (n_mat * ne[0] values, the rows of matrix m =
  /// r / ne[1] using slice m) for the types that use one (uses_importance); a size other than
  /// ne[0] * ne[2] is a tfm::shape_error naming the tensor. Absent names are quantized without.
  const imatrix_data* imatrix = nullptr;
};

namespace detail::fq {

/// One row of `t` (bytes `src`, n floats) as float.
inline void read_row(ggml_type t, std::span<const std::byte> src, std::span<float> dst) {
  dequantize(t, src, dst);
}

/// One float row written as type `t` into dst.
inline void write_row(ggml_type t, std::span<const float> x, std::span<std::byte> dst,
                      std::string_view name, std::size_t row,
                      std::span<const float> importance = {}) {
  switch (t) {
    case ggml_type::f32:
      std::memcpy(dst.data(), x.data(), x.size() * 4);
      return;
    case ggml_type::f16:
      for (std::size_t i = 0; i < x.size(); ++i) {
        const std::uint16_t h = tfm::detail::float_to_f16_bits(x[i]);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
      return;
    case ggml_type::bf16:
      for (std::size_t i = 0; i < x.size(); ++i) {
        const std::uint16_t h = tfm::detail::float_to_bf16_bits(x[i]);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
      return;
    default:
      quantize_row(t, x, dst, name, row, importance);
  }
}

/// One float row as Q8_0 blocks sharing the row's scale (INT8 per output channel).
inline void write_row_per_channel(std::span<const float> x, std::span<std::byte> dst,
                                  std::string_view name, std::size_t row) {
  for (std::size_t j = 0; j < x.size(); ++j)
    if (!std::isfinite(x[j]))
      fail(errc::value, "tfm::quantize_gguf: tensor '", name, "' row ", row, " column ", j, " is ",
           x[j], ": INT8 per channel needs finite weights");
  quantize_int8_per_channel(x.data(), 1, x.size(), dst, name);
}

inline std::uint64_t row_bytes(ggml_type t, std::int64_t ncols) {
  const auto& info = ggml_type_info_of(t);
  return static_cast<std::uint64_t>(ncols) / info.block_elements * info.block_bytes;
}

}  // namespace detail::fq

/// Quantizes the GGUF `f` to `out_path` under preset `p` (see the contracts above).
inline quantize_gguf_report quantize_gguf(const io::gguf_file& f, const std::string& out_path,
                                          const quantize_preset& p,
                                          const quantize_gguf_options& opt = {}) {
  namespace fq = detail::fq;
  const auto start = std::chrono::steady_clock::now();
  const std::vector<tensor_quant_plan> plan = plan_quantization(f, p, opt.imatrix != nullptr);
  int threads = opt.threads > 0
                    ? opt.threads
                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min(threads, 256);

  io::gguf_writer w(out_path);
  for (const auto& kv : f.metadata()) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version") continue;
    w.add(kv.key, kv.value);
  }
  w.add("general.quantization_version", std::uint32_t{2});
  w.add("general.file_type", p.file_type);
  const auto tensors = f.tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i)
    w.add_tensor_info(tensors[i].name,
                      std::span<const std::int64_t>(tensors[i].ne.data(), tensors[i].n_dims),
                      plan[i].out);
  w.write_header();

  quantize_gguf_report rep;
  rep.preset = &p;
  rep.file_bytes_in = f.bytes().size();
  std::vector<std::byte> out;
  std::vector<double> row_err;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const io::gguf_tensor_info& t = tensors[i];
    const tensor_quant_plan& pl = plan[i];
    quantized_tensor q;
    q.name = std::string(t.name);
    q.ne.assign(t.ne.begin(), t.ne.begin() + t.n_dims);
    q.in = t.type;
    q.out = pl.out;
    q.note = pl.note;
    q.n_elements = t.n_elements;
    q.bytes_in = t.n_bytes;
    if (pl.note.find("not a multiple") != std::string::npos) ++rep.n_fallback;
    const auto src = f.tensor_data(t);
    if (!pl.convert) {
      w.write_tensor_data(src);
      q.bytes_out = t.n_bytes;
    } else {
      if (!fq::float_type(t.type)) rep.requantized = true;
      const std::int64_t ncols = t.ne[0];
      const std::uint64_t rows = ncols > 0 ? t.n_elements / static_cast<std::uint64_t>(ncols) : 0;
      // the importance vector (llama-quantize: looked up by name, size ne[0] * ne[2])
      std::vector<float> imp;
      std::uint64_t rows_per_mat = rows;
      if (opt.imatrix != nullptr && !fq::float_type(pl.out)) {
        imp = opt.imatrix->importance(t.name);
        const std::int64_t nmat = t.n_dims >= 3 ? t.ne[2] : 1;
        if (!imp.empty() && imp.size() != static_cast<std::size_t>(ncols * nmat))
          fail(errc::shape, "tfm::quantize_gguf: the imatrix has ", imp.size(), " values for '",
               t.name, "' but the tensor needs ", ncols * nmat, " (ne[0] ", ncols, " x ", nmat,
               " matrices): an imatrix of another model?");
        if (!uses_importance(pl.out)) imp.clear();
        if (nmat > 1) rows_per_mat = rows / static_cast<std::uint64_t>(nmat);
        q.imatrix = !imp.empty();
        if (q.imatrix) ++rep.n_imatrix;
      }
      const std::uint64_t in_rb = fq::row_bytes(t.type, ncols);
      const std::uint64_t out_rb = fq::row_bytes(pl.out, ncols);
      out.resize(static_cast<std::size_t>(rows * out_rb));
      row_err.assign(static_cast<std::size_t>(rows), 0.0);
      const int nt = static_cast<int>(std::max<std::uint64_t>(
          1, std::min<std::uint64_t>(static_cast<std::uint64_t>(threads), rows / 4 + 1)));
      std::vector<std::exception_ptr> errors(static_cast<std::size_t>(nt));
      auto rows_of = [&](int ti) {
        const std::uint64_t r0 = rows * static_cast<std::uint64_t>(ti) / nt;
        const std::uint64_t r1 = rows * static_cast<std::uint64_t>(ti + 1) / nt;
        std::vector<float> x(static_cast<std::size_t>(ncols)), y(static_cast<std::size_t>(ncols));
        for (std::uint64_t r = r0; r < r1; ++r) {
          fq::read_row(t.type, src.subspan(static_cast<std::size_t>(r * in_rb), in_rb), x);
          std::span<std::byte> dst(out.data() + r * out_rb, static_cast<std::size_t>(out_rb));
          std::span<const float> w;
          if (!imp.empty())
            w = std::span<const float>(imp).subspan(
                static_cast<std::size_t>(r / rows_per_mat * static_cast<std::uint64_t>(ncols)),
                static_cast<std::size_t>(ncols));
          if (p.per_channel && pl.out == ggml_type::q8_0)
            fq::write_row_per_channel(x, dst, t.name, static_cast<std::size_t>(r));
          else
            fq::write_row(pl.out, x, dst, t.name, static_cast<std::size_t>(r), w);
          fq::read_row(pl.out, dst, y);
          double e = 0;
          for (std::size_t j = 0; j < x.size(); ++j) {
            const double d = double(y[j]) - double(x[j]);
            e += d * d;
          }
          row_err[static_cast<std::size_t>(r)] = e;
        }
      };
      auto work = [&](int ti) {
#if TFM_NO_EXCEPTIONS
        rows_of(ti);  // an error calls the installed handler, which does not return
#else
        try {  // an exception must not leave a thread: kept and rethrown below
          rows_of(ti);
        } catch (...) {
          errors[static_cast<std::size_t>(ti)] = std::current_exception();
        }
#endif
      };
      if (nt == 1) {
        work(0);
      } else {
        std::vector<std::thread> pool;
        pool.reserve(static_cast<std::size_t>(nt - 1));
        for (int ti = 1; ti < nt; ++ti) pool.emplace_back(work, ti);
        work(0);
        for (auto& th : pool) th.join();
      }
#if !TFM_NO_EXCEPTIONS
      for (const auto& e : errors)  // the first failing row range: the earliest bad row
        if (e) std::rethrow_exception(e);
#endif
      double sum = 0;
      for (double e : row_err) sum += e;
      q.rmse = t.n_elements ? std::sqrt(sum / double(t.n_elements)) : 0.0;
      w.write_tensor_data(out);
      q.bytes_out = out.size();
    }
    rep.tensor_bytes_in += q.bytes_in;
    rep.tensor_bytes_out += q.bytes_out;
    rep.n_elements += q.n_elements;
    rep.tensors.push_back(std::move(q));
  }
  w.finish();
  if (std::FILE* fp = std::fopen(out_path.c_str(), "rb")) {
    std::fseek(fp, 0, SEEK_END);
    const long sz = std::ftell(fp);
    std::fclose(fp);
    if (sz > 0) rep.file_bytes_out = static_cast<std::uint64_t>(sz);
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return rep;
}

TFM_END_NAMESPACE
