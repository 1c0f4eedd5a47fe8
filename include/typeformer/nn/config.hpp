// typeformer/nn/config.hpp
//
// Model configurations. A config is a struct with the fields below, either all `static
// constexpr` (dimensions known at compile time: the model's tensors get static extents and
// shape mistakes do not compile) or all ordinary members (tfm::nn::dynamic_config, for sizes read
// from a command line or a file). Modules read fields as cfg.field, which works for both, and ask
// static_dim<&...>-style traits (below) for the extents to put in types.
//
//   vocab       V   vocabulary size            block_size  maximum sequence length T
//   n_layer         transformer blocks         n_embd      C   model width
//   n_head      H   query heads                n_kv_head   G   key/value heads (G | H)
//   ffn         F   MLP hidden width           window          sliding attention window (0 off)
//   norm            layer_norm | rms_norm      mlp             gelu | swiglu
//   position        learned | rope | alibi     bias            biases in linear layers and norms
//   tie_embeddings  output projection = token embedding^T
//   norm_eps, rope_base, dropout
//
// GPT-2 style: layer_norm, gelu, learned positions, bias, tied embeddings.
// LLaMA style: rms_norm, swiglu, rope, no bias, untied, G <= H.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <cstdint>
#include <string>
#include <type_traits>

TFM_BEGIN_NAMESPACE
namespace nn {

enum class norm_kind { layer_norm, rms_norm };
enum class mlp_kind { gelu, swiglu };
enum class position_kind { learned, rope, alibi };

/// Figures a training run prints at the start (see gpt::summary).
struct model_summary {
  index_t parameters = 0;            // all parameters
  index_t non_embedding = 0;         // without the position table (nanoGPT's convention)
  double train_flops_per_token = 0;  // 6 N + 12 L C T (Kaplan et al. arXiv:2001.08361; PaLM App. B)
  double kv_cache_bytes_per_token = 0;  // 2 L G D sizeof(T)
  double chinchilla_tokens = 0;         // 20 N (Hoffmann et al., arXiv:2203.15556)
};

/// Static extent of a config field: its value when the config declares it constexpr static,
/// tfm::dyn otherwise.
#define TFM_NN_STATIC_DIM(field)                                        \
  template <class C>                                                    \
  constexpr index_t static_##field##_of() {                             \
    if constexpr (std::is_member_object_pointer_v<decltype(&C::field)>) \
      return dyn;                                                       \
    else                                                                \
      return C::field;                                                  \
  }                                                                     \
  template <class C>                                                    \
  inline constexpr index_t static_##field = static_##field##_of<C>();
TFM_NN_STATIC_DIM(vocab)
TFM_NN_STATIC_DIM(block_size)
TFM_NN_STATIC_DIM(n_embd)
TFM_NN_STATIC_DIM(n_head)
TFM_NN_STATIC_DIM(n_kv_head)
TFM_NN_STATIC_DIM(ffn)
#undef TFM_NN_STATIC_DIM

/// A config whose fields are run-time values (same names as the static presets).
struct dynamic_config {
  index_t vocab = 256;
  index_t block_size = 128;
  index_t n_layer = 4;
  index_t n_embd = 128;
  index_t n_head = 4;
  index_t n_kv_head = 4;
  index_t ffn = 512;
  index_t window = 0;
  norm_kind norm = norm_kind::layer_norm;
  mlp_kind mlp = mlp_kind::gelu;
  position_kind position = position_kind::learned;
  bool bias = true;
  bool tie_embeddings = true;
  double norm_eps = 1e-5;
  double rope_base = 10000.0;
  double dropout = 0.0;
};

/// Checks a config's fields; raises tfm::value_error naming the first bad field.
template <class C>
void validate(const C& c) {
  auto bad = [](const char* f, const std::string& why) {
    fail(errc::value, "tfm::nn config: ", f, " ", why, ".");
  };
  if (c.vocab <= 0) bad("vocab", "must be positive");
  if (c.block_size <= 0) bad("block_size", "must be positive");
  if (c.n_layer < 0) bad("n_layer", "must be >= 0");
  if (c.n_head <= 0 || c.n_embd % c.n_head != 0)
    bad("n_head", "must be positive and divide n_embd (" + std::to_string(c.n_embd) + ")");
  if (c.n_kv_head <= 0 || c.n_head % c.n_kv_head != 0)
    bad("n_kv_head", "must be positive and divide n_head (" + std::to_string(c.n_head) + ")");
  if (c.ffn <= 0) bad("ffn", "must be positive");
  if (c.window < 0) bad("window", "must be >= 0");
  if (c.position == position_kind::rope && (c.n_embd / c.n_head) % 2 != 0)
    bad("position", "rope needs an even head dimension");
  if (!(c.dropout >= 0 && c.dropout < 1)) bad("dropout", "must be in [0, 1)");
  if (c.tie_embeddings && c.vocab <= 0) bad("tie_embeddings", "needs a vocabulary");
}

/// Presets. GPT-2 124M (Radford et al. 2019) and small models for laptops and tests.
struct gpt2_124m {
  static constexpr index_t vocab = 50257, block_size = 1024, n_layer = 12, n_embd = 768,
                           n_head = 12, n_kv_head = 12, ffn = 3072, window = 0;
  static constexpr norm_kind norm = norm_kind::layer_norm;
  static constexpr mlp_kind mlp = mlp_kind::gelu;
  static constexpr position_kind position = position_kind::learned;
  static constexpr bool bias = true, tie_embeddings = true;
  static constexpr double norm_eps = 1e-5, rope_base = 10000.0, dropout = 0.0;
};

/// The benchmark model: 6 layers, 6 heads, 384 wide, GPT-2 vocabulary.
struct gpt2_6l384 : gpt2_124m {
  static constexpr index_t block_size = 256, n_layer = 6, n_embd = 384, n_head = 6, n_kv_head = 6,
                           ffn = 1536;
};

/// A tiny byte-level GPT-2 style model for demos and tests.
struct gpt2_tiny : gpt2_124m {
  static constexpr index_t vocab = 256, block_size = 128, n_layer = 4, n_embd = 128, n_head = 4,
                           n_kv_head = 4, ffn = 512;
};

/// A tiny LLaMA style model (RMSNorm, SwiGLU, RoPE, GQA, no biases).
struct llama_tiny {
  static constexpr index_t vocab = 256, block_size = 128, n_layer = 4, n_embd = 128, n_head = 4,
                           n_kv_head = 2, ffn = 352, window = 0;
  static constexpr norm_kind norm = norm_kind::rms_norm;
  static constexpr mlp_kind mlp = mlp_kind::swiglu;
  static constexpr position_kind position = position_kind::rope;
  static constexpr bool bias = false, tie_embeddings = false;
  static constexpr double norm_eps = 1e-5, rope_base = 10000.0, dropout = 0.0;
};

/// A run-time copy of any config.
template <class C>
dynamic_config to_dynamic(const C& c) {
  dynamic_config d;
  d.vocab = c.vocab;
  d.block_size = c.block_size;
  d.n_layer = c.n_layer;
  d.n_embd = c.n_embd;
  d.n_head = c.n_head;
  d.n_kv_head = c.n_kv_head;
  d.ffn = c.ffn;
  d.window = c.window;
  d.norm = c.norm;
  d.mlp = c.mlp;
  d.position = c.position;
  d.bias = c.bias;
  d.tie_embeddings = c.tie_embeddings;
  d.norm_eps = c.norm_eps;
  d.rope_base = c.rope_base;
  d.dropout = c.dropout;
  return d;
}

}  // namespace nn
TFM_END_NAMESPACE
