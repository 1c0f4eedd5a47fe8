// bench/quant/quant_methods.cpp: the calibration-driven quantization methods of issue 19
// (quant/calibrated_quantize.hpp: GPTQ, AWQ, AWQ+GPTQ, RTN) on a GGUF model, and the W8A8
// evaluation of SmoothQuant (quant/smoothquant.hpp). The figures of issue 19 were made with the
// commands below (calibration and evaluation texts in docs/quantization.md).
//
//   quant_methods quantize IN.gguf OUT.gguf q4_0|q4_1|f32 rtn|gptq|awq|awq+gptq CALIB.txt
//                 [--calib-tokens N] [--ctx N] [--no-act-order] [--percdamp P] [--threads N]
//                 [--measure]
//     writes OUT (llama.cpp-compatible Q4_0 / Q4_1 blocks), prints per-tensor RMSE (and with
//     --measure the calibration-weighted output error tr(dW H dW^T) against round to nearest's)
//   quant_methods set IN.gguf CALIB.txt OUT_PREFIX q4_0:gptq q4_0:awq ... [options]
//     one calibration, several files OUT_PREFIX-<method>-<type>.gguf
//   quant_methods w8a8 IN.gguf CALIB.txt EVAL.txt [--alpha A] [--windows N] [--ctx N]
//                 [--calib-tokens N]
//     perplexity (llama-perplexity's definition: windows of ctx tokens, second half scored) of a
//     forward written here (float weights, the cpu backend's GEMM) with: the weights as in the
//     file; every block linear layer's weights INT8 per output channel and its input INT8 per
//     token (fake quantization); the same after SmoothQuant's scales (alpha A) are folded.
#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/infer/model_config.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/ops/rope.hpp"
#include "typeformer/quant/awq.hpp"
#include "typeformer/quant/calibrate.hpp"
#include "typeformer/quant/calibrated_quantize.hpp"
#include "typeformer/quant/smoothquant.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace q = tfm::quant;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct args {
  std::vector<std::string> pos;
  index_t calib_tokens = 8192, ctx = 512, windows = 0;
  bool act_order = true, measure = false;
  double percdamp = 0.01, alpha = 0.5;
  int threads = 0;
};

args parse(int argc, char** argv) {
  args a;
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--calib-tokens")
      a.calib_tokens = std::stoll(next());
    else if (s == "--ctx")
      a.ctx = std::stoll(next());
    else if (s == "--windows")
      a.windows = std::stoll(next());
    else if (s == "--act-order")
      a.act_order = true;
    else if (s == "--measure")
      a.measure = true;
    else if (s == "--percdamp")
      a.percdamp = std::stod(next());
    else if (s == "--alpha")
      a.alpha = std::stod(next());
    else if (s == "--threads")
      a.threads = std::stoi(next());
    else
      a.pos.push_back(s);
  }
  return a;
}

int cmd_quantize(const args& a) {
  if (a.pos.size() != 5) {
    std::fprintf(stderr, "usage: quant_methods quantize IN OUT TYPE METHOD CALIB.txt [options]\n");
    return 2;
  }
  const tfm::io::gguf_file in(a.pos[0]);
  const std::string type_s = a.pos[2];
  const tfm::ggml_type type = type_s == "q4_0"   ? tfm::ggml_type::q4_0
                              : type_s == "q4_1" ? tfm::ggml_type::q4_1
                                                 : tfm::ggml_type::f32;
  const auto method = q::parse_quant_method(a.pos[3]);
  if (!method) {
    std::fprintf(stderr, "unknown method %s (rtn, gptq, awq, awq+gptq)\n", a.pos[3].c_str());
    return 2;
  }
  const auto tok = tfm::io::load_gguf_tokenizer(in);
  auto ids = tok.encode(read_text(a.pos[4]), {.add_special = true, .parse_special = false});
  if (a.calib_tokens > 0 && static_cast<index_t>(ids.size()) > a.calib_tokens)
    ids.resize(static_cast<std::size_t>(a.calib_tokens));
  q::calibrated_quantize_options o;
  o.method = *method;
  o.calib.ctx = a.ctx;
  o.calib.bos = tok.add_bos() ? tok.bos_id() : -1;
  o.percdamp = a.percdamp;
  o.act_order = a.act_order;
  o.threads = a.threads;
  o.measure_error = a.measure;
  const auto t0 = std::chrono::steady_clock::now();
  o.progress = [&](const std::string& s) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s.find("weight") == std::string::npos) std::fprintf(stderr, "[%7.1f s] %s\n", t, s.c_str());
  };
  const auto rep = q::quantize_gguf_calibrated(in, a.pos[1], type, ids, o);
  double e = 0, e_rtn = 0;
  std::printf("| tensor | type | how | RMSE | awq alpha | tr(dW H dW^T) / RTN's |\n");
  std::printf("| --- | --- | --- | ---: | ---: | ---: |\n");
  for (const auto& t : rep.tensors) {
    if (t.how == "copy") continue;
    if (t.out_error >= 0) {
      e += t.out_error;
      e_rtn += t.out_error_rtn;
    }
    std::printf(
        "| %s | %s | %s | %.3g | %s | %s |\n", t.name.c_str(),
        std::string(tfm::ggml_type_name(t.out)).c_str(), t.how.c_str(), t.rmse,
        t.awq_alpha >= 0 ? std::to_string(t.awq_alpha).substr(0, 4).c_str() : "",
        t.out_error >= 0 ? std::to_string(t.out_error / t.out_error_rtn).substr(0, 6).c_str() : "");
  }
  std::printf(
      "method %s, type %s: %lld calibration tokens in %lld windows of %lld; %d folds; "
      "calibrate %.1f s, search %.1f s, quantize %.1f s; %llu bytes",
      std::string(q::quant_method_name(*method)).c_str(), type_s.c_str(),
      static_cast<long long>(rep.calib_tokens), static_cast<long long>(rep.calib_windows),
      static_cast<long long>(a.ctx), rep.folds, rep.seconds_calibrate, rep.seconds_search,
      rep.seconds_quantize, static_cast<unsigned long long>(rep.file_bytes_out));
  if (e_rtn > 0) std::printf("; sum tr(dW H dW^T) / RTN's %.4f", e / e_rtn);
  std::printf("\n");
  return 0;
}

/// quant_methods set IN.gguf CALIB.txt OUT_PREFIX type:method ...: one calibration (Hessians
/// and row samples), several files OUT_PREFIX-<method>-<type>.gguf.
int cmd_set(const args& a) {
  if (a.pos.size() < 4) {
    std::fprintf(stderr, "usage: quant_methods set IN CALIB.txt OUT_PREFIX type:method ...\n");
    return 2;
  }
  const tfm::io::gguf_file in(a.pos[0]);
  const auto tok = tfm::io::load_gguf_tokenizer(in);
  auto ids = tok.encode(read_text(a.pos[1]), {.add_special = true, .parse_special = false});
  if (a.calib_tokens > 0 && static_cast<index_t>(ids.size()) > a.calib_tokens)
    ids.resize(static_cast<std::size_t>(a.calib_tokens));
  q::calibrated_quantize_options o;
  o.method = q::quant_method::awq_gptq;  // both statistics
  o.calib.ctx = a.ctx;
  o.calib.bos = tok.add_bos() ? tok.bos_id() : -1;
  o.percdamp = a.percdamp;
  o.act_order = a.act_order;
  o.threads = a.threads;
  const auto t0 = std::chrono::steady_clock::now();
  const q::calibration cal = q::calibrate_for(in, ids, o);
  std::printf("calibration: %lld tokens, %lld windows of %lld, %.1f s\n",
              static_cast<long long>(cal.tokens), static_cast<long long>(cal.windows),
              static_cast<long long>(a.ctx),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::fflush(stdout);
  for (std::size_t i = 3; i < a.pos.size(); ++i) {
    const std::string spec = a.pos[i];
    const auto colon = spec.find(':');
    const std::string type_s = spec.substr(0, colon), method_s = spec.substr(colon + 1);
    const auto method = q::parse_quant_method(method_s);
    const tfm::ggml_type type = type_s == "q4_0"          ? tfm::ggml_type::q4_0
                                : type_s == "q4_1"        ? tfm::ggml_type::q4_1
                                : type_s == "tfm_i4_g64"  ? tfm::ggml_type::tfm_i4_g64
                                : type_s == "tfm_i4_g128" ? tfm::ggml_type::tfm_i4_g128
                                                          : tfm::ggml_type::f32;
    if (colon == std::string::npos || !method || type == tfm::ggml_type::f32) {
      std::fprintf(stderr, "bad spec %s (q4_0|q4_1|tfm_i4_g64|tfm_i4_g128:rtn|gptq|awq|awq+gptq)\n",
                   spec.c_str());
      return 2;
    }
    o.method = *method;
    const std::string out =
        a.pos[2] + "-" + (method_s == "awq+gptq" ? "awqgptq" : method_s) + "-" + type_s + ".gguf";
    const auto rep = q::quantize_gguf_calibrated(in, out, type, &cal, o);
    std::printf("%s: search %.1f s, quantize %.1f s, %d folds, %llu bytes\n", out.c_str(),
                rep.seconds_search, rep.seconds_quantize, rep.folds,
                static_cast<unsigned long long>(rep.file_bytes_out));
    std::fflush(stdout);
  }
  return 0;
}

// ---- W8A8 evaluation ------------------------------------------------------------------------

/// A llama forward over one window on float weights (RMSNorm, GQA attention with the model's
/// RoPE, SwiGLU), written with the cpu backend's GEMM; `act8` fake-quantizes the input of every
/// block linear layer to INT8 per token.
struct llama_f32 {
  tfm::infer::model_config cfg;
  const q::float_weights* w = nullptr;
  bool act8 = false;
  std::vector<float> cs, sn;

  const std::vector<float>& t(const std::string& n) const { return w->at(n).v; }
  void linear(const std::string& n, const float* x, index_t T, float* y, bool acc) const {
    const auto& m = w->at(n);
    tfm::cpu_kernels::gemm<float>(false, true, T, m.rows, m.cols, 1.0f, x, m.cols, m.v.data(),
                                  m.cols, acc ? 1.0f : 0.0f, y, m.rows);
  }
  void forward(const std::int32_t* ids, index_t T, std::vector<float>& logits) const {
    const index_t C = cfg.n_embd, H = cfg.n_head, G = cfg.n_kv_head, D = cfg.head_dim, F = cfg.ffn,
                  HD = H * D, GD = G * D, V = cfg.vocab;
    const float eps = static_cast<float>(cfg.norm_eps);
    std::vector<float> x(T * C), h(T * C), qv(T * HD), kv(T * GD), vv(T * GD), att(T * HD),
        S(T * T), g(T * F), u(T * F);
    const auto& emb = t("token_embd.weight");
    for (index_t i = 0; i < T; ++i) std::copy_n(emb.data() + ids[i] * C, C, x.data() + i * C);
    const tfm::rope_pairs pairs = cfg.rope.pair_style == tfm::rope_config::style::interleaved
                                      ? tfm::rope_pairs::interleaved
                                      : tfm::rope_pairs::half;
    const double scale = 1.0 / std::sqrt(double(D));
    for (index_t l = 0; l < cfg.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      tfm::rms_norm_rows(tfm::cpu{}, x.data(), C, t(p + "attn_norm.weight").data(), eps, h.data(),
                         C, T, C);
      if (act8) q::fake_quant_int8_rows(h.data(), T, C);
      linear(p + "attn_q.weight", h.data(), T, qv.data(), false);
      linear(p + "attn_k.weight", h.data(), T, kv.data(), false);
      linear(p + "attn_v.weight", h.data(), T, vv.data(), false);
      tfm::rope_rows(tfm::cpu{}, qv.data(), HD, T, H, D, cs.data(), sn.data(), pairs);
      tfm::rope_rows(tfm::cpu{}, kv.data(), GD, T, G, D, cs.data(), sn.data(), pairs);
      for (index_t hh = 0; hh < H; ++hh) {
        const index_t gg = hh / (H / G);
        tfm::cpu_kernels::gemm<float>(false, true, T, T, D, static_cast<float>(scale),
                                      qv.data() + hh * D, HD, kv.data() + gg * D, GD, 0.0f,
                                      S.data(), T);
        for (index_t i = 0; i < T; ++i) {
          float* row = S.data() + i * T;
          float mx = row[0];
          for (index_t j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
          double sum = 0;
          for (index_t j = 0; j <= i; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          for (index_t j = 0; j <= i; ++j) row[j] = static_cast<float>(row[j] / sum);
          for (index_t j = i + 1; j < T; ++j) row[j] = 0.0f;
        }
        tfm::cpu_kernels::gemm<float>(false, false, T, D, T, 1.0f, S.data(), T, vv.data() + gg * D,
                                      GD, 0.0f, att.data() + hh * D, HD);
      }
      if (act8) q::fake_quant_int8_rows(att.data(), T, HD);
      linear(p + "attn_output.weight", att.data(), T, x.data(), true);
      tfm::rms_norm_rows(tfm::cpu{}, x.data(), C, t(p + "ffn_norm.weight").data(), eps, h.data(), C,
                         T, C);
      if (act8) q::fake_quant_int8_rows(h.data(), T, C);
      linear(p + "ffn_gate.weight", h.data(), T, g.data(), false);
      linear(p + "ffn_up.weight", h.data(), T, u.data(), false);
      tfm::silu_mul(tfm::cpu{}, g.data(), u.data(), g.data(), T * F);
      if (act8) q::fake_quant_int8_rows(g.data(), T, F);
      linear(p + "ffn_down.weight", g.data(), T, x.data(), true);
    }
    tfm::rms_norm_rows(tfm::cpu{}, x.data(), C, t("output_norm.weight").data(), eps, h.data(), C, T,
                       C);
    logits.resize(static_cast<std::size_t>(T * V));
    linear(w->count("output.weight") ? "output.weight" : "token_embd.weight", h.data(), T,
           logits.data(), false);
  }
};

struct ppl_result {
  double ppl = 0, err = 0;
  index_t count = 0;
};

ppl_result perplexity(const llama_f32& m, const std::vector<std::int32_t>& ids, index_t ctx,
                      std::int32_t bos, index_t windows) {
  const index_t V = m.cfg.vocab, first = ctx / 2;
  index_t n_win = static_cast<index_t>(ids.size()) / ctx;
  if (windows > 0) n_win = std::min(n_win, windows);
  double nll = 0, nll2 = 0;
  index_t count = 0;
  std::vector<float> lg;
  std::vector<std::int32_t> w(static_cast<std::size_t>(ctx));
  for (index_t c = 0; c < n_win; ++c) {
    std::copy_n(ids.begin() + c * ctx, ctx, w.begin());
    if (bos >= 0) w[0] = bos;
    m.forward(w.data(), ctx, lg);
    for (index_t j = first; j < ctx - 1; ++j) {
      const float* row = lg.data() + j * V;
      const float mx = *std::max_element(row, row + V);
      double sum = 0;
      for (index_t k = 0; k < V; ++k) sum += std::exp(row[k] - mx);
      const double v = double(mx) + std::log(sum) - double(row[ids[c * ctx + j + 1]]);
      nll += v;
      nll2 += v * v;
      ++count;
    }
  }
  ppl_result r;
  r.count = count;
  const double mean = nll / double(count);
  r.ppl = std::exp(mean);
  r.err = r.ppl * std::sqrt((nll2 / double(count) - mean * mean) / double(count - 1));
  return r;
}

int cmd_w8a8(const args& a) {
  if (a.pos.size() != 3) {
    std::fprintf(stderr, "usage: quant_methods w8a8 IN CALIB.txt EVAL.txt [options]\n");
    return 2;
  }
  const tfm::io::gguf_file in(a.pos[0]);
  const auto tok = tfm::io::load_gguf_tokenizer(in);
  const std::int32_t bos = tok.add_bos() ? tok.bos_id() : -1;
  auto calib = tok.encode(read_text(a.pos[1]), {.add_special = true, .parse_special = false});
  if (static_cast<index_t>(calib.size()) > a.calib_tokens)
    calib.resize(static_cast<std::size_t>(a.calib_tokens));
  const auto eval = tok.encode(read_text(a.pos[2]), {.add_special = true, .parse_special = false});
  const auto model = tfm::infer::load_gguf(a.pos[0]);
  const auto cfg = model.config();
  q::calibration_options co;
  co.ctx = a.ctx;
  co.bos = bos;
  co.hessian = false;
  co.sample_rows = 0;
  const auto cal = q::calibrate(model, calib, co);
  q::float_weights fw;
  for (const auto& t : in.tensors()) fw[std::string(t.name)] = q::detail::cq::read_float(in, t);
  llama_f32 m;
  m.cfg = cfg;
  const auto tb = tfm::detail::make_rope_table(cfg.rope, cfg.head_dim, a.ctx, 0);
  m.cs.assign(tb.cos.begin(), tb.cos.end());
  m.sn.assign(tb.sin.begin(), tb.sin.end());
  auto report = [&](const char* what, const q::float_weights& w, bool act8) {
    m.w = &w;
    m.act8 = act8;
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = perplexity(m, eval, a.ctx, bos, a.windows);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("| %s | %.4f | %.4f | %lld | %.0f |\n", what, r.ppl, r.err,
                static_cast<long long>(r.count), s);
    std::fflush(stdout);
  };
  auto int8_weights = [&](q::float_weights w) {
    for (auto& [name, mat] : w)
      if (!q::calibration::key_of(name).empty() && name != "output.weight")
        q::fake_quant_int8_weight(mat.v, mat.rows, mat.cols);
    return w;
  };
  std::printf("W8A8 (SmoothQuant alpha %.2f): %zu eval tokens, ctx %lld, %lld calibration tokens\n",
              a.alpha, eval.size(), static_cast<long long>(a.ctx),
              static_cast<long long>(cal.tokens));
  std::printf(
      "| weights / activations | PPL | +/- | scored | s |\n| --- | ---: | ---: | ---: | ---: |\n");
  report("file weights, f32 activations", fw, false);
  const auto w8 = int8_weights(fw);
  report("INT8 weights (per channel), f32 activations", w8, false);
  report("INT8 weights, INT8 activations (per token)", w8, true);
  q::float_weights smooth = fw;
  const q::fold_geometry geo{cfg.n_head, cfg.n_kv_head, cfg.head_dim,
                             cfg.mlp == tfm::nn::mlp_kind::swiglu};
  int folds = 0;
  for (index_t l = 0; l < cfg.n_layer; ++l)
    for (const char* key : {"attn_in", "attn_out", "ffn_in", "ffn_down"}) {
      const auto refs = q::consumer_refs(smooth, l, key);
      const auto* st = cal.find(l, key);
      if (st == nullptr || refs.empty()) continue;
      folds += q::fold_input_scales(smooth, geo, l, key, q::smoothquant_scales(refs, *st, a.alpha));
    }
  report("SmoothQuant folded, f32 weights and activations", smooth, false);
  report("SmoothQuant + INT8 weights, INT8 activations", int8_weights(smooth), true);
  std::printf("SmoothQuant folds: %d (attn_output's input is not folded under GQA)\n", folds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: quant_methods quantize|w8a8 ... (see the file comment)\n");
    return 2;
  }
  const std::string cmd = argv[1];
  const args a = parse(argc, argv);
  try {
    if (cmd == "quantize") return cmd_quantize(a);
    if (cmd == "w8a8") return cmd_w8a8(a);
    if (cmd == "set") return cmd_set(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown command %s\n", cmd.c_str());
  return 2;
}
