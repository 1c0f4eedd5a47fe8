// typeformer/infer/kv_cache.hpp
//
// A contiguous key/value cache for incremental decoding: per layer, keys and values of shape
// (B, G, capacity, D). nn::gpt::forward(ids, false, pos0, &cache) calls append() in every
// attention layer: the new (B, G, t, D) keys/values are written at positions pos0 .. pos0+t-1
// and the layer attends over positions 0 .. pos0+t-1.
//
// Memory: 2 * n_layer * B * G * capacity * D * sizeof(T) bytes, allocated once.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/evaluate.hpp"

#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

template <class T>
class kv_cache {
 public:
  using buffer = tensor<T, dyn_shape<4>>;

  kv_cache(index_t n_layer, index_t batch, index_t kv_heads, index_t capacity, index_t head_dim)
      : capacity_(capacity) {
    if (n_layer < 0 || batch <= 0 || kv_heads <= 0 || capacity <= 0 || head_dim <= 0)
      fail(errc::value, "tfm::infer::kv_cache: sizes must be positive.");
    for (index_t l = 0; l < n_layer; ++l) {
      k_.emplace_back(dyn_shape<4>(batch, kv_heads, capacity, head_dim));
      v_.emplace_back(dyn_shape<4>(batch, kv_heads, capacity, head_dim));
    }
  }

  /// A cache sized for `model` (an nn::gpt) with `batch` sequences of up to block_size tokens.
  template <class Model>
  static kv_cache for_model(const Model& model, index_t batch) {
    const auto& c = model.config();
    return kv_cache(c.n_layer, batch, c.n_kv_head, c.block_size, c.n_embd / c.n_head);
  }

  index_t capacity() const noexcept { return capacity_; }
  /// Number of positions written so far (the largest pos0 + t seen).
  index_t length() const noexcept { return length_; }
  /// Forgets every position (keeps the memory).
  void clear() noexcept { length_ = 0; }
  std::size_t bytes() const noexcept {
    std::size_t b = 0;
    for (const auto& t : k_) b += 2 * static_cast<std::size_t>(t.size()) * sizeof(T);
    return b;
  }

  /// Stores keys/values (B, G, t, D) at positions pos0 .. pos0+t-1 of `layer` and returns the
  /// cached keys and values of positions 0 .. pos0+t-1.
  template <class KV>
  std::pair<buffer, buffer> append(index_t layer, const KV& k, const KV& v, index_t pos0) {
    if (layer < 0 || layer >= static_cast<index_t>(k_.size()))
      fail(errc::index, "tfm::infer::kv_cache: layer ", layer, " does not exist.");
    const index_t t = k.extent(2);
    if (pos0 < 0 || pos0 > length_ || pos0 + t > capacity_)
      fail(errc::index, "tfm::infer::kv_cache: positions ", pos0, " .. ", pos0 + t - 1,
           " do not follow the ", length_, " cached positions or exceed the capacity ", capacity_,
           ".");
    auto& K = k_[static_cast<std::size_t>(layer)];
    auto& V = v_[static_cast<std::size_t>(layer)];
    for (int a : {0, 1, 3})
      if (k.extent(static_cast<std::size_t>(a)) != K.extent(static_cast<std::size_t>(a)) ||
          v.extent(static_cast<std::size_t>(a)) != V.extent(static_cast<std::size_t>(a)))
        fail(errc::shape, "tfm::infer::kv_cache: keys ", k.shape().to_string(),
             " do not fit the cache ", K.shape().to_string(), ".");
    slice<2>(K, pos0, pos0 + t) = k;
    slice<2>(V, pos0, pos0 + t) = v;
    if (pos0 + t > length_ && layer + 1 == static_cast<index_t>(k_.size())) length_ = pos0 + t;
    return {eval(slice<2>(K, 0, pos0 + t)), eval(slice<2>(V, 0, pos0 + t))};
  }

 private:
  index_t capacity_ = 0;
  index_t length_ = 0;
  std::vector<buffer> k_, v_;
};

}  // namespace infer
TFM_END_NAMESPACE
