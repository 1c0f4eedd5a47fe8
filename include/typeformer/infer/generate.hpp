// typeformer/infer/generate.hpp
//
// Autoregressive generation with an nn::gpt model:
//   auto ids = infer::generate(model, prompt, max_new_tokens, {.temperature = 0.8, .top_k = 40});
// With use_cache (default) the prompt is processed once and every new token costs one step over
// a KV cache (infer/kv_cache.hpp); without it each token recomputes the whole window (the
// reference the cached path is tested against: both give the same tokens). When the sequence
// reaches the model's block_size, the uncached path slides the window; the cached path stops.
// Runs under no_grad.
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/infer/kv_cache.hpp"
#include "typeformer/infer/sampler.hpp"

#include <cstdint>
#include <functional>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

struct generate_options {
  bool use_cache = true;
  std::int32_t stop_token = -1;                // stop after emitting this id (-1: never)
  std::function<void(std::int32_t)> on_token;  // called with each new token (streaming)
};

/// Returns prompt followed by up to max_new generated tokens.
template <class Model>
std::vector<std::int32_t> generate(const Model& model, std::vector<std::int32_t> tokens,
                                   std::int64_t max_new, sampling_options so = {},
                                   generate_options go = {}) {
  using T = typename Model::value_type;
  no_grad ng;
  if (tokens.empty()) fail(errc::value, "tfm::infer::generate: the prompt must not be empty.");
  const std::int64_t block = model.config().block_size;
  const std::int64_t V = model.config().vocab;
  sampler pick(so);
  auto emit = [&](std::int32_t t) {
    tokens.push_back(t);
    if (go.on_token) go.on_token(t);
    return go.stop_token >= 0 && t == go.stop_token;
  };
  if (go.use_cache) {
    if (static_cast<std::int64_t>(tokens.size()) > block)
      tokens.erase(tokens.begin(), tokens.end() - block);
    auto cache = kv_cache<T>::for_model(model, 1);
    typename Model::ids_type ids(1, static_cast<index_t>(tokens.size()));
    for (std::size_t i = 0; i < tokens.size(); ++i) ids.data()[i] = tokens[i];
    index_t pos = 0;
    for (std::int64_t n = 0; n < max_new; ++n) {
      auto logits = model.forward(ids, false, pos, &cache);
      const index_t last = ids.extent(1) - 1;
      const T* row = logits.value().data() + last * V;
      pos += ids.extent(1);
      std::int32_t t = pick(row, V);
      if (emit(t)) break;
      if (pos >= block) break;  // the cache is full
      ids = typename Model::ids_type(1, 1);
      ids.data()[0] = t;
    }
  } else {
    for (std::int64_t n = 0; n < max_new; ++n) {
      const std::int64_t len =
          std::min<std::int64_t>(static_cast<std::int64_t>(tokens.size()), block);
      typename Model::ids_type ids(1, static_cast<index_t>(len));
      for (std::int64_t i = 0; i < len; ++i)
        ids.data()[i] =
            tokens[tokens.size() - static_cast<std::size_t>(len) + static_cast<std::size_t>(i)];
      auto logits = model.forward(ids, false, 0);
      const T* row = logits.value().data() + (len - 1) * V;
      if (emit(pick(row, V))) break;
    }
  }
  return tokens;
}

}  // namespace infer
TFM_END_NAMESPACE
