// tests/support/tiny_llama.hpp: the tiny llama-style nn::gpt configuration the fine-tuning and
// alignment tests build their models from (RMSNorm, SwiGLU, RoPE, grouped-query attention, no
// biases), and random token batches for it.
#pragma once

#include <typeformer/nn/config.hpp>
#include <typeformer/nn/gpt.hpp>

#include <random>

namespace tfm_test {

/// 2 layers, 4 query heads sharing 2 key/value heads, SwiGLU; sizes as given.
inline tfm::nn::dynamic_config tiny_llama(tfm::index_t vocab = 61, tfm::index_t n_embd = 32,
                                          tfm::index_t ffn = 48, bool tied = false) {
  tfm::nn::dynamic_config c;
  c.vocab = vocab;
  c.block_size = 32;
  c.n_layer = 2;
  c.n_embd = n_embd;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.ffn = ffn;
  c.norm = tfm::nn::norm_kind::rms_norm;
  c.mlp = tfm::nn::mlp_kind::swiglu;
  c.position = tfm::nn::position_kind::rope;
  c.bias = false;
  c.tie_embeddings = tied;
  return c;
}

/// (B, T) token ids uniform in [0, V).
inline tfm::nn::gpt<tfm::nn::dynamic_config, float>::ids_type random_ids(tfm::index_t B,
                                                                         tfm::index_t T,
                                                                         tfm::index_t V,
                                                                         std::mt19937& g) {
  tfm::nn::gpt<tfm::nn::dynamic_config, float>::ids_type ids(tfm::dyn_shape<2>(B, T));
  std::uniform_int_distribution<int> d(0, static_cast<int>(V) - 1);
  for (tfm::index_t i = 0; i < ids.size(); ++i) ids.data()[i] = d(g);
  return ids;
}

}  // namespace tfm_test
