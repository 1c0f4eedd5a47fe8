// typeformer/infer/transformer.hpp
//
// WHAT THIS REPRESENTS
//   infer::transformer<T, Backend>: the weights and config of a decoder-only transformer run
//   without the autodiff tape: LLaMA (pre-norm RMSNorm, grouped-query attention with RoPE,
//   SwiGLU MLP; Touvron et al., arXiv:2302.13971) and GPT-2 (pre-norm LayerNorm with bias,
//   learned positions, GELU MLP, biases on every linear layer; Radford et al. 2019), the two
//   being points of one model_config (norm, mlp, position, bias flags). It is immutable once
//   loaded and can be shared by several infer::session objects (infer/session.hpp), which hold
//   the mutable state: KV cache, activations, position.
//
//   T is the compute type (float). Backend is the tag whose kernels run it (tfm::cpu by default,
//   tfm::reference for the scalar oracle; backend/*/decoder.hpp).
//
//   Loading (load_gguf / tfm::load_model): the file is memory-mapped and kept open by the model;
//   F32/F16/BF16 tensors are used in place (F16/BF16 stay 16-bit: the kernels convert them), and
//   so are block-quantized tensors (Q4_0 ... Q8_0, Q2_K ... Q6_K): they stay packed, decode runs
//   the integer-dot GEMV (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0) or the dequantize-in-pack GEMM (the
//   K-quants), prefill the dequantize-in-pack GEMM (backend/cpu/decoder.hpp). load_options
//   {.quantized = quantized_weights::f32} dequantizes them to float on load instead (the engine's
//   earlier behaviour, for comparison). stats() tells what was borrowed and allocated.
//
//   Tensor names (llama.cpp's): token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v,
//   attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight, optional blk.N.attn_{q,k,v}.bias,
//   output_norm, output (absent: tied to token_embd). gpt2 adds position_embd.weight and a .bias
//   beside every weight (norms included), has no ffn_gate, and fuses q, k, v into
//   blk.N.attn_qkv.{weight,bias} (rows q, then k, then v), which the loader splits into views
//   (no copy). Any architecture whose file has attn_qkv instead of attn_q is read that way.
//
//   A mixture-of-experts llama model (model_config::n_expert = E > 0, llama.expert_count) has,
//   instead of ffn_gate / ffn_up / ffn_down, the router blk.N.ffn_gate_inp.weight (ne [C, E]:
//   E rows of C) and the experts blk.N.ffn_{gate,up}_exps.weight (ne [C, F, E]) and
//   blk.N.ffn_down_exps.weight (ne [F, C, E]), each held as one (E F, C) or (E C, F) matrix
//   whose expert e is rows e F .. (e C ..): block_weights::expert() slices it without a copy,
//   for every element type (F32/F16/BF16 and the packed block types alike).
//
//   Hugging Face directories (config.json + safetensors) are loaded by infer/hf_model.hpp into
//   the same model through the model_weights constructor.
#pragma once

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/infer/model_config.hpp"
#include "typeformer/infer/weights.hpp"
#include "typeformer/io/gguf.hpp"

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// The weights of one block; a weight the config does not use is an empty matrix (biases
/// without the bias flags, w_gate / b_gate of a GELU MLP, the norm biases of RMSNorm).
struct block_weights {
  weight_matrix attn_norm, ffn_norm;      // (1, C)
  weight_matrix attn_norm_b, ffn_norm_b;  // (1, C) when norm_bias
  weight_matrix wq, wk, wv, wo;           // (H D, C), (G D, C), (G D, C), (C, H D)
  weight_matrix bq, bk, bv;               // (1, H D), (1, G D), (1, G D) when qkv_bias
  weight_matrix bo;                       // (1, C) when out_bias
  weight_matrix w_gate, w_up, w_down;     // (F, C) (swiglu only), (F, C), (C, F)
  weight_matrix b_gate, b_up, b_down;     // (1, F), (1, F), (1, C) when mlp_bias
  // Mixture of experts (n_expert = E > 0; w_gate, w_up, w_down are then empty):
  weight_matrix router;                         // (E, C): ffn_gate_inp
  weight_matrix gate_exps, up_exps, down_exps;  // (E F, C), (E F, C), (E C, F)

  /// Expert e's (F, C) gate, (F, C) up and (C, F) down matrices: views of the stacked ones.
  struct expert_view {
    weight_matrix gate, up, down;
  };
  expert_view expert(index_t e) const {
    const index_t F = down_exps.cols(), C = gate_exps.cols();
    return {gate_exps.rows_slice(e * F, F), up_exps.rows_slice(e * F, F),
            down_exps.rows_slice(e * C, C)};
  }
};

/// Every weight of a model (what the loaders fill and the model_weights constructor takes).
struct model_weights {
  weight_matrix token_embd;     // (V, C)
  weight_matrix position_embd;  // (context_length, C) for learned positions, else empty
  std::vector<block_weights> blocks;
  weight_matrix output_norm, output_norm_b;  // (1, C); the bias when norm_bias
  weight_matrix output;                      // (V, C): token_embd's matrix when tied
};

template <class T = float, class Backend = cpu>
class transformer {
  static_assert(
      std::is_same_v<T, float>,
      "tfm::infer::transformer: the compute type must be float (weights may be f16/bf16).");
  static_assert(backend<Backend>, "tfm::infer::transformer: Backend must be a backend tag.");

 public:
  using value_type = T;
  using backend_type = Backend;

  transformer() = default;
  /// A llama model from weights already in memory (tests, conversions).
  transformer(model_config cfg, weight_matrix token_embd, std::vector<block_weights> blocks,
              weight_matrix output_norm, weight_matrix output)
      : transformer(std::move(cfg), model_weights{std::move(token_embd),
                                                  {},
                                                  std::move(blocks),
                                                  std::move(output_norm),
                                                  {},
                                                  std::move(output)}) {}
  /// A model from its weights (any config). `keep_alive` owns what borrowed weights point into
  /// (a mapped safetensors set); `file` is the GGUF metadata file() returns (may be null);
  /// `st` the load figures so far.
  transformer(model_config cfg, model_weights w, std::shared_ptr<const void> keep_alive = {},
              std::shared_ptr<const io::gguf_file> file = {}, load_stats st = {})
      : cfg_(std::move(cfg)),
        stats_(st),
        file_(std::move(file)),
        keep_alive_(std::move(keep_alive)),
        w_(std::move(w)) {
    validate(cfg_);
    if (static_cast<index_t>(w_.blocks.size()) != cfg_.n_layer)
      fail(errc::value, "tfm::infer::transformer: ", w_.blocks.size(),
           " blocks for n_layer = ", cfg_.n_layer, ".");
    if (w_.output.data() == nullptr) w_.output = w_.token_embd;
    check_shapes();
    float_vectors();
  }

  const model_config& config() const noexcept { return cfg_; }
  const load_stats& stats() const noexcept { return stats_; }
  /// The GGUF file the model was loaded from (metadata, tokenizer), or for a Hugging Face
  /// directory the metadata that describes it in GGUF keys (infer/hf_model.hpp), or null.
  const io::gguf_file* file() const noexcept { return file_.get(); }

  const weight_matrix& token_embd() const noexcept { return w_.token_embd; }
  /// The learned position table (context_length, C), or empty with RoPE.
  const weight_matrix& position_embd() const noexcept { return w_.position_embd; }
  const block_weights& block(index_t l) const { return w_.blocks.at(static_cast<std::size_t>(l)); }
  const weight_matrix& output_norm() const noexcept { return w_.output_norm; }
  /// The final norm's bias (norm_bias), or empty.
  const weight_matrix& output_norm_bias() const noexcept { return w_.output_norm_b; }
  /// The head (V, C): token_embd's matrix when the output is tied.
  const weight_matrix& output() const noexcept { return w_.output; }

  /// Loads a GGUF model (see the file comment); errors name the file and the key or tensor.
  static transformer from_gguf(const std::string& path, const load_options& options = {}) {
    const auto t0 = std::chrono::steady_clock::now();
    transformer m;
    m.file_ = std::make_shared<io::gguf_file>(path);
    const io::gguf_file& f = *m.file_;
    m.cfg_ = config_from_gguf(f);
    m.stats_.bytes_mapped = f.bytes().size();
    m.load_tensors(f, options);
    m.stats_.load_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return m;
  }

 private:
  /// A tensor to load into *dst.
  struct pending {
    weight_matrix* dst;
    std::string name;
    index_t rows, cols;
    index_t experts = 0;  // > 0: a 3-D [cols, rows, experts] tensor
  };

  void load_tensors(const io::gguf_file& f, const load_options& options) {
    const model_config& c = cfg_;
    const index_t C = c.n_embd, HD = c.n_head * c.head_dim, GD = c.n_kv_head * c.head_dim;
    std::vector<pending> jobs;
    auto w = [&](weight_matrix& dst, const std::string& n, index_t r, index_t k, index_t e = 0) {
      jobs.push_back({&dst, n, r, k, e});
    };
    w(w_.token_embd, "token_embd.weight", c.vocab, C);
    if (c.position == nn::position_kind::learned)
      w(w_.position_embd, "position_embd.weight", c.context_length, C);
    const bool fused = f.find_tensor("blk.0.attn_qkv.weight") != nullptr;
    std::vector<weight_matrix> qkv(static_cast<std::size_t>(2 * c.n_layer));  // weight, bias
    w_.blocks.resize(static_cast<std::size_t>(c.n_layer));
    for (index_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      block_weights& b = w_.blocks[static_cast<std::size_t>(l)];
      w(b.attn_norm, p + "attn_norm.weight", 1, C);
      if (c.norm_bias) w(b.attn_norm_b, p + "attn_norm.bias", 1, C);
      if (fused) {
        w(qkv[static_cast<std::size_t>(2 * l)], p + "attn_qkv.weight", HD + 2 * GD, C);
        if (c.qkv_bias)
          w(qkv[static_cast<std::size_t>(2 * l + 1)], p + "attn_qkv.bias", 1, HD + 2 * GD);
      } else {
        w(b.wq, p + "attn_q.weight", HD, C);
        w(b.wk, p + "attn_k.weight", GD, C);
        w(b.wv, p + "attn_v.weight", GD, C);
        if (c.qkv_bias) {
          w(b.bq, p + "attn_q.bias", 1, HD);
          w(b.bk, p + "attn_k.bias", 1, GD);
          w(b.bv, p + "attn_v.bias", 1, GD);
        }
      }
      w(b.wo, p + "attn_output.weight", C, HD);
      if (c.out_bias) w(b.bo, p + "attn_output.bias", 1, C);
      w(b.ffn_norm, p + "ffn_norm.weight", 1, C);
      if (c.norm_bias) w(b.ffn_norm_b, p + "ffn_norm.bias", 1, C);
      if (c.n_expert > 0) {
        w(b.router, p + "ffn_gate_inp.weight", c.n_expert, C);
        w(b.gate_exps, p + "ffn_gate_exps.weight", c.ffn, C, c.n_expert);
        w(b.up_exps, p + "ffn_up_exps.weight", c.ffn, C, c.n_expert);
        w(b.down_exps, p + "ffn_down_exps.weight", C, c.ffn, c.n_expert);
        continue;
      }
      if (c.mlp == nn::mlp_kind::swiglu) w(b.w_gate, p + "ffn_gate.weight", c.ffn, C);
      w(b.w_up, p + "ffn_up.weight", c.ffn, C);
      w(b.w_down, p + "ffn_down.weight", C, c.ffn);
      if (c.mlp_bias) {
        if (c.mlp == nn::mlp_kind::swiglu) w(b.b_gate, p + "ffn_gate.bias", 1, c.ffn);
        w(b.b_up, p + "ffn_up.bias", 1, c.ffn);
        w(b.b_down, p + "ffn_down.bias", 1, C);
      }
    }
    w(w_.output_norm, "output_norm.weight", 1, C);
    if (c.norm_bias) w(w_.output_norm_b, "output_norm.bias", 1, C);
    if (!c.tied_output) w(w_.output, "output.weight", c.vocab, C);
    run(f, jobs, options);
    if (fused)
      for (index_t l = 0; l < c.n_layer; ++l) {
        block_weights& b = w_.blocks[static_cast<std::size_t>(l)];
        const weight_matrix& m = qkv[static_cast<std::size_t>(2 * l)];
        b.wq = m.rows_slice(0, HD);
        b.wk = m.rows_slice(HD, GD);
        b.wv = m.rows_slice(HD + GD, GD);
        if (!c.qkv_bias) continue;
        const weight_matrix& v = qkv[static_cast<std::size_t>(2 * l + 1)];
        b.bq = v.vector_slice(0, HD);
        b.bk = v.vector_slice(HD, GD);
        b.bv = v.vector_slice(HD + GD, GD);
      }
    if (c.tied_output) w_.output = w_.token_embd;
    float_vectors();
  }

  /// Checks every tensor first (errors in file order), then loads them on the cpu threads
  /// (dequantization, with quantized_weights::f32, is the bulk of a quantized model's load time).
  void run(const io::gguf_file& f, std::vector<pending>& jobs, const load_options& options) {
    for (const pending& j : jobs) detail::checked_tensor(f, j.name, j.rows, j.cols, j.experts);
    std::vector<load_stats> part(jobs.size());
    std::vector<std::exception_ptr> err(jobs.size());
    const auto n = static_cast<std::ptrdiff_t>(jobs.size());
    TFM_OMP(parallel for schedule(dynamic, 1) if (num_threads() > 1 && !in_parallel()))
    for (std::ptrdiff_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
#if TFM_NO_EXCEPTIONS
      // An error calls the installed handler, which does not return (config/error.hpp).
      *jobs[k].dst = load_weight(f, jobs[k].name, jobs[k].rows, jobs[k].cols, part[k], options,
                                 jobs[k].experts);
#else
      try {  // an exception must not leave an OpenMP region: kept and rethrown below
        *jobs[k].dst = load_weight(f, jobs[k].name, jobs[k].rows, jobs[k].cols, part[k], options,
                                   jobs[k].experts);
      } catch (...) {
        err[k] = std::current_exception();
      }
#endif
    }
    for (std::size_t k = 0; k < jobs.size(); ++k) {
#if !TFM_NO_EXCEPTIONS
      if (err[k]) std::rethrow_exception(err[k]);
#endif
      stats_.bytes_borrowed += part[k].bytes_borrowed;
      stats_.bytes_allocated += part[k].bytes_allocated;
    }
  }
  /// Every weight the config uses is present with its shape (shape_error naming it otherwise).
  void check_shapes() const {
    const model_config& c = cfg_;
    const index_t C = c.n_embd, HD = c.n_head * c.head_dim, GD = c.n_kv_head * c.head_dim;
    auto need = [](const weight_matrix& m, const std::string& what, index_t r, index_t k) {
      if (m.data() == nullptr || m.rows() != r || m.cols() != k)
        fail(errc::shape, "tfm::infer::transformer: ", what, " is (", m.rows(), ", ", m.cols(), ")",
             m.data() == nullptr ? " (missing)" : "", "; the config needs (", r, ", ", k, ").");
    };
    need(w_.token_embd, "token_embd", c.vocab, C);
    need(w_.output, "output", c.vocab, C);
    need(w_.output_norm, "output_norm", 1, C);
    if (c.norm_bias) need(w_.output_norm_b, "output_norm bias", 1, C);
    if (c.position == nn::position_kind::learned)
      need(w_.position_embd, "position_embd", c.context_length, C);
    for (index_t l = 0; l < c.n_layer; ++l) {
      const block_weights& b = w_.blocks[static_cast<std::size_t>(l)];
      const std::string p = "block " + std::to_string(l) + " ";
      need(b.attn_norm, p + "attn_norm", 1, C);
      need(b.ffn_norm, p + "ffn_norm", 1, C);
      need(b.wq, p + "wq", HD, C);
      need(b.wk, p + "wk", GD, C);
      need(b.wv, p + "wv", GD, C);
      need(b.wo, p + "wo", C, HD);
      if (c.n_expert > 0) {
        const index_t E = c.n_expert;
        need(b.router, p + "router (ffn_gate_inp)", E, C);
        need(b.gate_exps, p + "gate_exps", E * c.ffn, C);
        need(b.up_exps, p + "up_exps", E * c.ffn, C);
        need(b.down_exps, p + "down_exps", E * C, c.ffn);
      } else {
        need(b.w_up, p + "w_up", c.ffn, C);
        need(b.w_down, p + "w_down", C, c.ffn);
        if (c.mlp == nn::mlp_kind::swiglu) need(b.w_gate, p + "w_gate", c.ffn, C);
      }
      if (c.norm_bias) {
        need(b.attn_norm_b, p + "attn_norm bias", 1, C);
        need(b.ffn_norm_b, p + "ffn_norm bias", 1, C);
      }
      if (c.qkv_bias) {
        need(b.bq, p + "bq", 1, HD);
        need(b.bk, p + "bk", 1, GD);
        need(b.bv, p + "bv", 1, GD);
      }
      if (c.out_bias) need(b.bo, p + "bo", 1, C);
      if (c.mlp_bias) {
        if (c.mlp == nn::mlp_kind::swiglu) need(b.b_gate, p + "b_gate", 1, c.ffn);
        need(b.b_up, p + "b_up", 1, c.ffn);
        need(b.b_down, p + "b_down", 1, C);
      }
    }
  }
  /// Norms and biases are read as float rows by the kernels: convert any 16-bit ones.
  void float_vectors() {
    auto to_float = [&](weight_matrix& v) {
      if (v.data() == nullptr || v.type() == ggml_type::f32) return;
      std::vector<float> x(static_cast<std::size_t>(v.cols()));
      v.row(0, x.data());
      stats_.bytes_allocated += x.size() * sizeof(float);
      v = weight_matrix(std::move(x), 1, v.cols());
    };
    for (block_weights& b : w_.blocks)
      for (weight_matrix* v : {&b.attn_norm, &b.ffn_norm, &b.attn_norm_b, &b.ffn_norm_b, &b.bq,
                               &b.bk, &b.bv, &b.bo, &b.b_gate, &b.b_up, &b.b_down})
        to_float(*v);
    to_float(w_.output_norm);
    to_float(w_.output_norm_b);
  }

  model_config cfg_;
  load_stats stats_;
  std::shared_ptr<const io::gguf_file> file_;
  std::shared_ptr<const void> keep_alive_;
  model_weights w_;
};

/// Loads a GGUF model for the cpu backend (transformer::from_gguf).
inline transformer<float, cpu> load_gguf(const std::string& path,
                                         const load_options& options = {}) {
  return transformer<float, cpu>::from_gguf(path, options);
}

}  // namespace infer
TFM_END_NAMESPACE
