// typeformer/quant/calibrated_quantize.hpp
//
// WHAT THIS REPRESENTS
//   Quantization of a whole GGUF llama-style model with a calibration-driven method: the library
//   part of `tfm quantize IN OUT TYPE --calib FILE --method rtn|gptq|awq|awq+gptq`.
//
//     std::vector<std::int32_t> calib = tokenizer.encode(text);
//     quant::calibrated_quantize_options o;
//     o.method = quant::quant_method::gptq;
//     o.calib.bos = tokenizer.bos_id();
//     auto rep = quant::quantize_gguf_calibrated(io::gguf_file(in), out, ggml_type::q4_0, calib,
//     o);
//
// CONTRACTS
//   - TYPE is Q4_0 or Q4_1 (GPTQ / AWQ write their grids as those blocks: quant/gptq.hpp),
//     TFM_I4_G64 / TFM_I4_G128 (quant/int_formats.hpp: Q4_1's grid with groups of 64 / 128, for
//     the linear layers whose rows hold whole groups; the rest as the Q4_1 preset; the file says
//     Q4_1 in general.file_type; llama.cpp cannot read these types), or F32
//     (no quantization: the weights after AWQ's folds, for checking that the folded model computes
//     the same function). Every tensor gets the type of llama-quantize's preset of that name
//     (quant/file_quantize.hpp plan_quantization, read only: token_embd / output, tensors whose
//     rows are not a multiple of 32 ...). The block weight products whose planned type is TYPE
//     (blk.N.attn_q / attn_k / attn_v / attn_qkv / attn_output / ffn_gate / ffn_up / ffn_down)
//     are quantized by the method:
//       rtn       round to nearest (tfm::quantize_row: the bytes of `tfm quantize`/llama-quantize);
//       gptq      GPTQ with the Hessian of the tensor's input (quant/gptq.hpp);
//       awq       AWQ's scales searched per input and folded (quant/awq.hpp: attn_in into
//                 attn_norm, ffn_in into ffn_norm, ffn_down into ffn_up's rows, attn_out into
//                 attn_v's rows when n_head == n_kv_head), then round to nearest;
//       awq+gptq  AWQ's folds, then GPTQ with the Hessian of the scaled input.
//     The others are converted as the preset says (quantize_row) or copied; a norm changed by a
//     fold keeps its type with the new values.
//   - Calibration: one run of the unquantized model over `calib_tokens` (quant/calibrate.hpp;
//     windows of options.calib.ctx; options.calib.bos replaces each window's first token): every
//     layer's statistics come from the original model (GPTQ's paper quantizes layer by layer on the
//     inputs of the already-quantized layers; this is the one-pass variant).
//   - Metadata and tokenizer are copied in order; general.file_type is the preset's and
//     general.quantization_version 2 (as quantize_gguf). OUT is written through io::gguf_writer
//     (OUT.tmp renamed when complete).
//   - Determinism: calibration, search and GPTQ do not depend on options.threads.
//   - Errors: an unsupported TYPE or method -> tfm::value_error; the model's own load errors.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/awq.hpp"
#include "typeformer/quant/calibrate.hpp"
#include "typeformer/quant/file_quantize.hpp"
#include "typeformer/quant/gptq.hpp"
#include "typeformer/quant/int_formats.hpp"
#include "typeformer/quant/quantize.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace quant {

enum class quant_method : std::uint8_t { rtn, gptq, awq, awq_gptq };

inline constexpr std::string_view quant_method_name(quant_method m) noexcept {
  constexpr std::string_view names[] = {"rtn", "gptq", "awq", "awq+gptq"};
  return names[static_cast<std::size_t>(m)];
}
/// "rtn", "gptq", "awq", "awq+gptq" (case-sensitive), or nullopt.
inline std::optional<quant_method> parse_quant_method(std::string_view s) noexcept {
  for (quant_method m :
       {quant_method::rtn, quant_method::gptq, quant_method::awq, quant_method::awq_gptq})
    if (s == quant_method_name(m)) return m;
  return std::nullopt;
}

struct calibrated_quantize_options {
  quant_method method = quant_method::gptq;
  calibration_options calib{};  ///< ctx, bos, max_tokens, sample_rows (hessian set by method)
  double percdamp = 0.01;       ///< GPTQ dampening
  bool act_order = true;  ///< GPTQ act-order, static groups (SmolLM2 Q4_0: 22.99 vs 25.85 without)
  index_t block = 128;    ///< GPTQ lazy batch
  index_t awq_grid_points = 20;
  int threads = 0;             ///< GPTQ's row threads (<= 0: hardware_concurrency)
  bool measure_error = false;  ///< per tensor tr(dW H dW^T) of the method and of RTN
  std::function<void(const std::string&)> progress = {};  ///< one line per step when set
};

struct calibrated_tensor {
  std::string name;
  ggml_type in = ggml_type::f32, out = ggml_type::f32;
  std::string how;            ///< "gptq", "awq", "rtn", "preset", "copy", "folded"
  double rmse = 0;            ///< of the written values against the (folded) input as float
  double out_error = -1;      ///< measure_error: tr(dW H dW^T) of the written tensor (else -1)
  double out_error_rtn = -1;  ///< the same for round to nearest of the unscaled weights
  double awq_alpha = -1;      ///< the alpha AWQ chose for this tensor's input (awq methods)
};

struct calibrated_quantize_report {
  std::vector<calibrated_tensor> tensors;
  index_t calib_tokens = 0, calib_windows = 0;
  int folds = 0;  ///< inputs whose AWQ scales were folded
  double seconds_calibrate = 0, seconds_search = 0, seconds_quantize = 0;
  std::uint64_t file_bytes_out = 0;
};

namespace detail::cq {

inline bool is_block_linear(std::string_view name) noexcept {
  return !calibration::key_of(name).empty() && name != "output.weight";
}

inline float_matrix read_float(const io::gguf_file& f, const io::gguf_tensor_info& t) {
  float_matrix m;
  m.cols = t.ne[0];
  m.rows = m.cols > 0 ? static_cast<index_t>(t.n_elements / static_cast<std::uint64_t>(m.cols)) : 0;
  m.v.resize(static_cast<std::size_t>(t.n_elements));
  const std::uint64_t rb = tfm::detail::fq::row_bytes(t.type, m.cols);
  const auto src = f.tensor_data(t);
  for (index_t r = 0; r < m.rows; ++r)
    tfm::detail::fq::read_row(
        t.type, src.subspan(static_cast<std::size_t>(static_cast<std::uint64_t>(r) * rb), rb),
        std::span<float>(m.v.data() + r * m.cols, static_cast<std::size_t>(m.cols)));
  return m;
}

}  // namespace detail::cq

/// The calibration quantize_gguf_calibrated runs for method `o.method` (Hessians for GPTQ or
/// measure_error, row samples for AWQ), so that several files can share one.
inline calibration calibrate_for(const io::gguf_file& in,
                                 std::span<const std::int32_t> calib_tokens,
                                 const calibrated_quantize_options& o) {
  const auto model = infer::load_gguf(in.name());
  calibration_options co = o.calib;
  const bool gptq = o.method == quant_method::gptq || o.method == quant_method::awq_gptq;
  const bool awq = o.method == quant_method::awq || o.method == quant_method::awq_gptq;
  co.hessian = co.hessian && (gptq || o.measure_error);
  if (awq && co.sample_rows <= 0) co.sample_rows = 256;
  if (!awq) co.sample_rows = 0;
  return calibrate(model, calib_tokens, co);
}

/// Quantizes the GGUF `in` (a llama-style model the engine loads) to `out_path` with the
/// statistics `cal` (from calibrate_for or calibrate with what the method needs; see contracts).
inline calibrated_quantize_report quantize_gguf_calibrated(const io::gguf_file& in,
                                                           const std::string& out_path,
                                                           ggml_type type, const calibration* cal,
                                                           const calibrated_quantize_options& o);

/// Quantizes the GGUF `in` (a llama-style model the engine loads) to `out_path` (see contracts):
/// calibrate_for, then the file.
inline calibrated_quantize_report quantize_gguf_calibrated(
    const io::gguf_file& in, const std::string& out_path, ggml_type type,
    std::span<const std::int32_t> calib_tokens, const calibrated_quantize_options& o = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  std::optional<calibration> cal;
  if (o.method != quant_method::rtn || o.measure_error) {
    if (o.progress) o.progress("calibrating on " + std::to_string(calib_tokens.size()) + " tokens");
    cal = calibrate_for(in, calib_tokens, o);
  }
  auto rep = quantize_gguf_calibrated(in, out_path, type, cal ? &*cal : nullptr, o);
  rep.seconds_calibrate =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() -
      rep.seconds_search - rep.seconds_quantize;
  return rep;
}

inline calibrated_quantize_report quantize_gguf_calibrated(const io::gguf_file& in,
                                                           const std::string& out_path,
                                                           ggml_type type, const calibration* cal,
                                                           const calibrated_quantize_options& o) {
  namespace cq = detail::cq;
  namespace fq = tfm::detail::fq;
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a) {
    return std::chrono::duration<double>(clock::now() - a).count();
  };
  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  // H3's INT4 group layouts (quant/int_formats.hpp) are Q4_1's grid with groups of 64 / 128:
  // the tensors whose rows hold whole groups get them, the others Q4_1 (groups of 32).
  const bool int4_group = type == ggml_type::tfm_i4_g64 || type == ggml_type::tfm_i4_g128;
  const ggml_type base = int4_group ? ggml_type::q4_1 : type;
  const index_t group = type == ggml_type::tfm_i4_g64    ? 64
                        : type == ggml_type::tfm_i4_g128 ? 128
                                                         : 32;
  const char* preset_name = base == ggml_type::q4_0   ? "Q4_0"
                            : base == ggml_type::q4_1 ? "Q4_1"
                            : base == ggml_type::f32  ? "F32"
                                                      : nullptr;
  if (preset_name == nullptr)
    fail(errc::value, "tfm::quant::quantize_gguf_calibrated: type ", ggml_type_name(type),
         " is not supported (q4_0, q4_1, tfm_i4_g64, tfm_i4_g128, or f32 for the folds alone).");
  const quantize_preset& preset = quantize_preset_of(preset_name);
  const int4_grid grid = base == ggml_type::q4_1 ? int4_grid::q4_1 : int4_grid::q4_0;
  const bool use_gptq = o.method == quant_method::gptq || o.method == quant_method::awq_gptq;
  const bool use_awq = o.method == quant_method::awq || o.method == quant_method::awq_gptq;
  calibrated_quantize_report rep;

  // 1. The model's shapes (calibration was run on the unquantized model by the caller).
  const infer::model_config cfg = infer::config_from_gguf(in);
  if (cal != nullptr) {
    rep.calib_tokens = cal->tokens;
    rep.calib_windows = cal->windows;
  }
  if (o.method != quant_method::rtn && cal == nullptr)
    fail(errc::value, "tfm::quant::quantize_gguf_calibrated: method ", quant_method_name(o.method),
         " needs calibration statistics.");
  auto t0 = clock::now();
  // 2. AWQ: every layer's scales searched on the original weights, then folded.
  const auto tensors = in.tensors();
  float_weights fw;  // the tensors AWQ changed (and read), as floats
  std::map<std::string, std::vector<float>> input_scale;  // "L/key" -> s folded into it
  std::map<std::string, double> alpha_of;
  if (use_awq) {
    for (const auto& t : tensors) {
      const std::string_view n = t.name;
      if (cq::is_block_linear(n) || fq::contains(n, "_norm.") ||
          (n.substr(0, 4) == "blk." && fq::contains(n, ".bias")))
        fw[std::string(n)] = cq::read_float(in, t);
    }
    const fold_geometry geo{cfg.n_head, cfg.n_kv_head, cfg.head_dim,
                            cfg.mlp == nn::mlp_kind::swiglu};
    awq_options ao;
    ao.grid = grid;
    ao.grid_points = o.awq_grid_points;
    for (index_t l = 0; l < cfg.n_layer; ++l) {
      std::map<std::string, awq_result> found;
      for (std::string_view key : {"attn_in", "attn_out", "ffn_in", "ffn_down"}) {
        const input_stats* st = cal->find(l, key);
        const auto refs = consumer_refs(fw, l, key);
        if (st == nullptr || refs.empty()) continue;
        if (key == "attn_out" && cfg.n_head != cfg.n_kv_head) continue;  // cannot fold
        if (key == "ffn_down" && cfg.mlp != nn::mlp_kind::swiglu) continue;
        ao.group = st->K % group == 0 ? group : 32;
        found[std::string(key)] = awq_search(refs, *st, ao);
      }
      for (auto& [key, r] : found)
        if (fold_input_scales(fw, geo, l, key, r.scales)) {
          ++rep.folds;
          const std::string k = std::to_string(l) + "/" + key;
          input_scale[k] = r.scales;
          alpha_of[k] = r.alpha;
        }
      say("awq: layer " + std::to_string(l) + " searched");
    }
  }
  rep.seconds_search = secs(t0);

  // 3. The file.
  t0 = clock::now();
  std::vector<tensor_quant_plan> plan = plan_quantization(in, preset);
  if (int4_group)
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (cq::is_block_linear(tensors[i].name) && plan[i].out == base &&
          tensors[i].ne[0] % group == 0) {
        plan[i].out = type;
        plan[i].convert = true;
      }
  io::gguf_writer w(out_path);
  for (const auto& kv : in.metadata()) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version") continue;
    w.add(kv.key, kv.value);
  }
  w.add("general.quantization_version", std::uint32_t{2});
  w.add("general.file_type", preset.file_type);
  for (std::size_t i = 0; i < tensors.size(); ++i)
    w.add_tensor_info(tensors[i].name,
                      std::span<const std::int64_t>(tensors[i].ne.data(), tensors[i].n_dims),
                      plan[i].out);
  w.write_header();

  gptq_options go;
  go.percdamp = o.percdamp;
  go.act_order = o.act_order;
  go.block = o.block;
  go.group = 32;
  go.grid = grid;
  go.threads = o.threads;
  std::string factor_key;
  gptq_factor factor;
  std::vector<std::byte> bytes;
  std::vector<float> back;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const io::gguf_tensor_info& t = tensors[i];
    const tensor_quant_plan& pl = plan[i];
    calibrated_tensor ct;
    ct.name = std::string(t.name);
    ct.in = t.type;
    ct.out = pl.out;
    const auto changed = fw.find(ct.name);
    const bool method_tensor =
        cq::is_block_linear(t.name) && (pl.out == base || (int4_group && pl.out == type));
    if (!method_tensor && !pl.convert && changed == fw.end()) {
      ct.how = "copy";
      w.write_tensor_data(in.tensor_data(t));
      rep.tensors.push_back(std::move(ct));
      continue;
    }
    const float_matrix m = changed != fw.end() ? changed->second : cq::read_float(in, t);
    const std::string key = calibration::key_of(t.name);
    const input_stats* st = cal ? cal->find(t.name) : nullptr;
    const std::uint64_t rb = fq::row_bytes(pl.out, m.cols);
    bytes.assign(static_cast<std::size_t>(rb * static_cast<std::uint64_t>(m.rows)), std::byte{0});
    auto write_rows = [&](ggml_type to) {
      for (index_t r = 0; r < m.rows; ++r)
        fq::write_row(
            to, std::span<const float>(m.v.data() + r * m.cols, static_cast<std::size_t>(m.cols)),
            std::span<std::byte>(bytes.data() + static_cast<std::size_t>(r) * rb, rb), t.name,
            static_cast<std::size_t>(r));
    };
    const auto scale_it = input_scale.find(key);
    if (method_tensor && base != ggml_type::f32 && use_gptq && st != nullptr && !st->xtx.empty()) {
      if (factor_key != key) {
        std::vector<double> H = st->hessian();
        if (scale_it != input_scale.end()) H = scale_hessian(H, scale_it->second);
        factor = gptq_factorize(H, m.cols, go);
        factor_key = key;
      }
      go.group = pl.out == base ? 32 : group;
      const group_quantized g = gptq_quantize(m.v, m.rows, m.cols, factor, go);
      if (pl.out == base)
        bytes = g.to_ggml(base);
      else
        pack_int4_group_dm(g.codes.data(), g.scale.data(), g.minimum.data(),
                           static_cast<std::size_t>(m.rows), static_cast<std::size_t>(m.cols),
                           static_cast<int>(group), bytes, t.name);
      ct.how = use_awq ? "awq+gptq" : "gptq";
    } else {
      write_rows(pl.out);
      ct.how = method_tensor ? (use_awq && scale_it != input_scale.end() ? "awq" : "rtn")
               : pl.convert  ? "preset"
                             : "folded";
    }
    if (auto a = alpha_of.find(key); a != alpha_of.end() && method_tensor) ct.awq_alpha = a->second;
    // RMSE against the values quantized (the folded ones for AWQ).
    back.resize(m.v.size());
    for (index_t r = 0; r < m.rows; ++r)
      fq::read_row(pl.out,
                   std::span<const std::byte>(bytes.data() + static_cast<std::size_t>(r) * rb, rb),
                   std::span<float>(back.data() + r * m.cols, static_cast<std::size_t>(m.cols)));
    double e = 0;
    for (std::size_t j = 0; j < back.size(); ++j)
      e += (double(back[j]) - m.v[j]) * (double(back[j]) - m.v[j]);
    ct.rmse = back.empty() ? 0 : std::sqrt(e / double(back.size()));
    if (o.measure_error && method_tensor && st != nullptr && !st->xtx.empty()) {
      std::vector<double> H = st->hessian();
      if (scale_it != input_scale.end()) H = scale_hessian(H, scale_it->second);
      ct.out_error = output_error(m.v, back, m.rows, m.cols, H);
      const float_matrix orig = cq::read_float(in, t);
      const ggml_type rt = pl.out == ggml_type::f32 ? ggml_type::q4_0 : pl.out;
      const auto rtn = tfm::quantize(rt, orig.v, static_cast<std::size_t>(orig.rows),
                                     static_cast<std::size_t>(orig.cols), t.name);
      const auto rtn_v = tfm::dequantize(rt, rtn);
      ct.out_error_rtn = output_error(orig.v, rtn_v, orig.rows, orig.cols, st->hessian());
    }
    w.write_tensor_data(bytes);
    if (method_tensor) say(ct.name + ": " + ct.how);
    rep.tensors.push_back(std::move(ct));
  }
  w.finish();
  rep.seconds_quantize = secs(t0);
  if (std::FILE* fp = std::fopen(out_path.c_str(), "rb")) {
    std::fseek(fp, 0, SEEK_END);
    const long sz = std::ftell(fp);
    std::fclose(fp);
    if (sz > 0) rep.file_bytes_out = static_cast<std::uint64_t>(sz);
  }
  return rep;
}

}  // namespace quant
TFM_END_NAMESPACE
