// typeformer/infer/transformer.hpp
//
// WHAT THIS REPRESENTS
//   infer::transformer<T, Backend>: the weights and config of a decoder-only transformer run
//   without the autodiff tape (LLaMA: pre-norm RMSNorm, grouped-query attention with RoPE,
//   SwiGLU MLP; Touvron et al., arXiv:2302.13971). It is immutable once loaded and can be shared
//   by several infer::session objects (infer/session.hpp), which hold the mutable state: KV
//   cache, activations, position.
//
//   T is the compute type (float). Backend is the tag whose kernels run it (tfm::cpu by default,
//   tfm::reference for the scalar oracle; backend/*/decoder.hpp).
//
//   Loading (load_gguf / tfm::load_model): the file is memory-mapped and kept open by the model;
//   F32/F16/BF16 tensors are used in place (F16/BF16 stay 16-bit: the kernels convert them),
//   block-quantized tensors are dequantized to float (the quantized kernels will keep them
//   packed). stats() tells what was borrowed and allocated.
//
//   Tensor names (llama.cpp's): token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v,
//   attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight, optional blk.N.attn_{q,k,v}.bias,
//   output_norm, output (absent: tied to token_embd).
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

/// The weights of one block (biases are empty matrices when the model has none).
struct block_weights {
  weight_matrix attn_norm, ffn_norm;   // (1, C)
  weight_matrix wq, wk, wv, wo;        // (H D, C), (G D, C), (G D, C), (C, H D)
  weight_matrix bq, bk, bv;            // (1, H D), (1, G D), (1, G D) or empty
  weight_matrix w_gate, w_up, w_down;  // (F, C), (F, C), (C, F)
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
  /// A model from weights already in memory (tests, conversions); `file` may be empty.
  transformer(model_config cfg, weight_matrix token_embd, std::vector<block_weights> blocks,
              weight_matrix output_norm, weight_matrix output)
      : cfg_(std::move(cfg)),
        token_embd_(std::move(token_embd)),
        blocks_(std::move(blocks)),
        output_norm_(std::move(output_norm)),
        output_(std::move(output)) {
    validate(cfg_);
    float_vectors();
  }

  const model_config& config() const noexcept { return cfg_; }
  const load_stats& stats() const noexcept { return stats_; }
  /// The GGUF file the model was loaded from (metadata, tokenizer), or null.
  const io::gguf_file* file() const noexcept { return file_.get(); }

  const weight_matrix& token_embd() const noexcept { return token_embd_; }
  const block_weights& block(index_t l) const { return blocks_.at(static_cast<std::size_t>(l)); }
  const weight_matrix& output_norm() const noexcept { return output_norm_; }
  /// The head (V, C): token_embd's matrix when the output is tied.
  const weight_matrix& output() const noexcept { return output_; }

  /// Loads a GGUF model (see the file comment); errors name the file and the key or tensor.
  static transformer from_gguf(const std::string& path) {
    const auto t0 = std::chrono::steady_clock::now();
    transformer m;
    m.file_ = std::make_shared<io::gguf_file>(path);
    const io::gguf_file& f = *m.file_;
    m.cfg_ = config_from_gguf(f);
    m.stats_.bytes_mapped = f.bytes().size();
    m.load_tensors(f);
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
  };

  void load_tensors(const io::gguf_file& f) {
    const model_config& c = cfg_;
    const index_t C = c.n_embd, HD = c.n_head * c.head_dim, GD = c.n_kv_head * c.head_dim;
    std::vector<pending> jobs;
    auto w = [&](weight_matrix& dst, const std::string& n, index_t r, index_t k) {
      jobs.push_back({&dst, n, r, k});
    };
    w(token_embd_, "token_embd.weight", c.vocab, C);
    blocks_.resize(static_cast<std::size_t>(c.n_layer));
    for (index_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      block_weights& b = blocks_[static_cast<std::size_t>(l)];
      w(b.attn_norm, p + "attn_norm.weight", 1, C);
      w(b.wq, p + "attn_q.weight", HD, C);
      w(b.wk, p + "attn_k.weight", GD, C);
      w(b.wv, p + "attn_v.weight", GD, C);
      if (c.qkv_bias) {
        w(b.bq, p + "attn_q.bias", 1, HD);
        w(b.bk, p + "attn_k.bias", 1, GD);
        w(b.bv, p + "attn_v.bias", 1, GD);
      }
      w(b.wo, p + "attn_output.weight", C, HD);
      w(b.ffn_norm, p + "ffn_norm.weight", 1, C);
      w(b.w_gate, p + "ffn_gate.weight", c.ffn, C);
      w(b.w_up, p + "ffn_up.weight", c.ffn, C);
      w(b.w_down, p + "ffn_down.weight", C, c.ffn);
    }
    w(output_norm_, "output_norm.weight", 1, C);
    if (!c.tied_output) w(output_, "output.weight", c.vocab, C);
    run(f, jobs);
    if (c.tied_output) output_ = token_embd_;
    float_vectors();
  }

  /// Checks every tensor first (errors in file order), then loads them on the cpu threads
  /// (dequantization is the bulk of a quantized model's load time).
  void run(const io::gguf_file& f, std::vector<pending>& jobs) {
    for (const pending& j : jobs) detail::checked_tensor(f, j.name, j.rows, j.cols);
    std::vector<load_stats> part(jobs.size());
    std::vector<std::exception_ptr> err(jobs.size());
    const auto n = static_cast<std::ptrdiff_t>(jobs.size());
    TFM_OMP(parallel for schedule(dynamic, 1) if (num_threads() > 1 && !in_parallel()))
    for (std::ptrdiff_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
#if TFM_NO_EXCEPTIONS
      // An error calls the installed handler, which does not return (config/error.hpp).
      *jobs[k].dst = load_weight(f, jobs[k].name, jobs[k].rows, jobs[k].cols, part[k]);
#else
      try {  // an exception must not leave an OpenMP region: kept and rethrown below
        *jobs[k].dst = load_weight(f, jobs[k].name, jobs[k].rows, jobs[k].cols, part[k]);
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
  /// Norms and biases are read as float rows by the kernels: convert any 16-bit ones.
  void float_vectors() {
    auto to_float = [&](weight_matrix& v) {
      if (v.data() == nullptr || v.type() == ggml_type::f32) return;
      std::vector<float> x(static_cast<std::size_t>(v.cols()));
      v.row(0, x.data());
      stats_.bytes_allocated += x.size() * sizeof(float);
      v = weight_matrix(std::move(x), 1, v.cols());
    };
    for (block_weights& b : blocks_)
      for (weight_matrix* v : {&b.attn_norm, &b.ffn_norm, &b.bq, &b.bk, &b.bv}) to_float(*v);
    to_float(output_norm_);
  }

  model_config cfg_;
  load_stats stats_;
  std::shared_ptr<const io::gguf_file> file_;
  weight_matrix token_embd_;
  std::vector<block_weights> blocks_;
  weight_matrix output_norm_, output_;
};

/// Loads a GGUF model for the cpu backend (transformer::from_gguf).
inline transformer<float, cpu> load_gguf(const std::string& path) {
  return transformer<float, cpu>::from_gguf(path);
}

}  // namespace infer
TFM_END_NAMESPACE
