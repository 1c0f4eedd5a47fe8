// typeformer/quant/file_quantize.hpp
//
// WHAT THIS REPRESENTS
//   Quantization of a whole GGUF model file, as llama.cpp's `llama-quantize IN OUT TYPE` does it
//   without an importance matrix (round to nearest): the library part of `tfm quantize`.
//
//     find_quantize_preset("q4_k")  -> the preset (Q4_K_M: llama_ftype 15, base type Q4_K, mix)
//     plan_quantization(file, p)    -> per tensor: the output type and why (no data touched)
//     quantize_gguf(file, out, p)   -> writes OUT, returns per-tensor RMSE, bytes and totals
//
// CONTRACTS
//   - Presets are llama-quantize's names, case-insensitive: Q4_0 (file type 2), Q4_1 (3), Q8_0 (7),
//     Q5_0 (8), Q5_1 (9), Q4_K_M (15; "Q4_K" is its alias, as in llama-quantize), Q6_K (18), F16
//     (1), BF16 (32), F32 (0). The values are gguf-py's LlamaFileType (llama.h's llama_ftype).
//   - Tensor types follow src/llama-quant.cpp of llama.cpp (llama_tensor_get_type and its
//     helpers; read in ggml-org/llama.cpp, 2025/2026) with the default parameters
//     (llama_model_quantize_default_params: no imatrix, quantize_output_tensor, not pure):
//     1. A tensor is quantized only when it has 2 or more dims, its name ends in "weight" and is
//     not
//        a norm ("_norm.weight"), an MoE router ("ffn_gate_inp.weight"), a position or token-type
//        embedding ("position_embd.weight", "token_types.weight") or one of the small tensors
//        llama.cpp lists (ssm_conv1d, attn_rel_b, altup, laurel, per_layer_model_proj,
//        shortconv.conv, RWKV time_mix_*), and its type is a float or dequantizable type.
//        Every other tensor keeps its type and its bytes (1-D tensors stay F32 when they are).
//     2. F16 / BF16 / F32 presets: every quantizable tensor gets that type.
//     3. Otherwise the base type, then the mix:
//        - output.weight, and token_embd.weight when the file has no output.weight (tied
//          embeddings: llama.cpp quantizes it as the output): Q8_0 when ne[0] is not a multiple
//          of the base type's block, else Q6_K unless the base type is Q8_0;
//        - Q4_K_M only: attn_v (and attn_qkv / attn_kv_b) -> Q6_K when use_more_bits(i, n) for the
//          i-th of n such tensors in llama.cpp's order (layer number, then name); ffn_down of layer
//          i -> Q6_K when use_more_bits(i, block_count); attn_qkv -> Q5_K (not implemented here:
//          refused with tfm::unsupported_error). use_more_bits(i, n) = i < n/8 || i >= 7n/8 ||
//          (i - n/8) % 3 == 2.
//     4. Fallback when ne[0] is not a multiple of the chosen type's block: Q4_K -> Q5_0,
//        Q6_K -> Q8_0 (llama.cpp's table), and then, or for a legacy 32-block type, F16.
//        (llama.cpp refuses a legacy type on such a tensor; we write F16 and say so.)
//     5. A tensor whose chosen type equals its input type is copied byte for byte.
//   - Quantized input (e.g. a Q4_1 file) is dequantized with tfm::dequantize first
//     (llama-quantize's --allow-requantize); the report says so (requantized).
//   - Bytes: each row is quantized by tfm::quantize_row (quant/quantize.hpp: Q8_0 ... Q5_1 equal to
//     gguf.quants.quantize, Q4_K / Q6_K llama.cpp's reference algorithm); F16 / BF16 round to
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
  bool k_mix;               ///< the Q4_K_M rules (attn_v / ffn_down to Q6_K on some layers)
};

inline constexpr std::array<quantize_preset, 10> quantize_presets{{
    {"Q4_0", 2, ggml_type::q4_0, false},
    {"Q4_1", 3, ggml_type::q4_1, false},
    {"Q5_0", 8, ggml_type::q5_0, false},
    {"Q5_1", 9, ggml_type::q5_1, false},
    {"Q8_0", 7, ggml_type::q8_0, false},
    {"Q4_K_M", 15, ggml_type::q4_K, true},
    {"Q6_K", 18, ggml_type::q6_K, false},
    {"F16", 1, ggml_type::f16, false},
    {"BF16", 32, ggml_type::bf16, false},
    {"F32", 0, ggml_type::f32, false},
}};

/// The preset named `name` (case-insensitive; "Q4_K" is Q4_K_M), or nullptr.
inline const quantize_preset* find_quantize_preset(std::string_view name) noexcept {
  std::string up(name);
  for (char& c : up)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  if (up == "Q4_K") up = "Q4_K_M";
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
    if (p.name == "Q4_K_M") s += " (q4_k)";
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

enum class category { token_embd, output, attn_v, attn_qkv, ffn_down, other };

inline category category_of(std::string_view name) noexcept {
  if (name == "output.weight") return category::output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight")
    return category::token_embd;
  if (contains(name, "attn_qkv.weight")) return category::attn_qkv;
  if (contains(name, "attn_kv_b.weight") || contains(name, "attn_v.weight"))
    return category::attn_v;
  if (contains(name, "ffn_down")) return category::ffn_down;
  return category::other;
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

}  // namespace detail::fq

/// The output type of every tensor of `f` under preset `p` (in file order), by the rules above.
/// Throws tfm::unsupported_error for a tensor this build cannot read or write in the chosen type.
inline std::vector<tensor_quant_plan> plan_quantization(const io::gguf_file& f,
                                                        const quantize_preset& p) {
  namespace fq = detail::fq;
  const auto tensors = f.tensors();
  const std::size_t n = tensors.size();
  bool tied = true;
  int n_attn_v = 0, max_layer = -1;
  for (const auto& t : tensors) {
    const auto c = fq::category_of(t.name);
    if (c == fq::category::output) tied = false;
    if (c == fq::category::attn_v || c == fq::category::attn_qkv) ++n_attn_v;
    max_layer = std::max(max_layer, fq::layer_of(t.name));
  }
  // n_layer: <arch>.block_count as llama.cpp reads it, else from the names.
  int n_layer = max_layer + 1;
  if (const auto* arch = f.find("general.architecture");
      arch != nullptr && arch->value.type() == io::gguf_type::string) {
    const std::string key = std::string(arch->value.as_string()) + ".block_count";
    n_layer = static_cast<int>(f.get_or<index_t>(key, n_layer));  // mistyped: an error
  }
  // llama.cpp visits the tensors by (layer number, name) (weight_name_comparer); the attn_v
  // counter follows that order.
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const int la = fq::layer_of(tensors[a].name), lb = fq::layer_of(tensors[b].name);
    if (la != lb) return la < lb;
    return tensors[a].name < tensors[b].name;
  });
  std::vector<tensor_quant_plan> plan(n);
  int i_attn_v = 0, i_ffn_down = 0;
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
      if (cat == fq::category::output || (tied && cat == fq::category::token_embd)) {
        if (ncols % block_of(ty) != 0) {
          ty = ggml_type::q8_0;
          r.note =
              "output: ne[0] not a multiple of " + std::to_string(block_of(p.base)) + " -> Q8_0";
        } else if (ty != ggml_type::q8_0) {
          ty = ggml_type::q6_K;
          if (p.base != ggml_type::q6_K)
            r.note =
                tied && cat == fq::category::token_embd ? "tied output -> Q6_K" : "output -> Q6_K";
        }
      } else if (p.k_mix && cat == fq::category::attn_v) {
        if (fq::use_more_bits(i_attn_v, n_attn_v)) {
          ty = ggml_type::q6_K;
          r.note = "attn_v " + std::to_string(i_attn_v) + "/" + std::to_string(n_attn_v) +
                   " more bits -> Q6_K";
        }
      } else if (p.k_mix && cat == fq::category::attn_qkv) {
        fail(errc::unsupported, "tfm::plan_quantization: tensor '", t.name,
             "' would be Q5_K in Q4_K_M (llama.cpp's rule for fused attn_qkv), which has no "
             "quantizer in this build");
      } else if (p.k_mix && cat == fq::category::ffn_down) {
        const int layer = fq::layer_of(t.name) >= 0 ? fq::layer_of(t.name) : i_ffn_down;
        if (fq::use_more_bits(layer, n_layer)) {
          ty = ggml_type::q6_K;
          r.note = "ffn_down layer " + std::to_string(layer) + "/" + std::to_string(n_layer) +
                   " more bits -> Q6_K";
        }
      }
      if (cat == fq::category::attn_v || cat == fq::category::attn_qkv) ++i_attn_v;
      if (cat == fq::category::ffn_down) ++i_ffn_down;
      // llama.cpp's tensor_type_fallback.
      if (ncols % block_of(ty) != 0) {
        const ggml_type wanted = ty;
        ty = wanted == ggml_type::q4_K   ? ggml_type::q5_0
             : wanted == ggml_type::q6_K ? ggml_type::q8_0
                                         : ggml_type::f16;
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
};

struct quantize_gguf_report {
  const quantize_preset* preset = nullptr;
  std::vector<quantized_tensor> tensors;
  std::uint64_t file_bytes_in = 0, file_bytes_out = 0;
  std::uint64_t tensor_bytes_in = 0, tensor_bytes_out = 0, n_elements = 0;
  int n_fallback = 0;        ///< tensors whose row length forced another type
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
};

namespace detail::fq {

/// One row of `t` (bytes `src`, n floats) as float.
inline void read_row(ggml_type t, std::span<const std::byte> src, std::span<float> dst) {
  dequantize(t, src, dst);
}

/// One float row written as type `t` into dst.
inline void write_row(ggml_type t, std::span<const float> x, std::span<std::byte> dst,
                      std::string_view name, std::size_t row) {
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
      quantize_row(t, x, dst, name, row);
  }
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
  const std::vector<tensor_quant_plan> plan = plan_quantization(f, p);
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
          fq::write_row(pl.out, x, dst, t.name, static_cast<std::size_t>(r));
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
