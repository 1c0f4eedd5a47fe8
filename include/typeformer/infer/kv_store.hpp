// typeformer/infer/kv_store.hpp
//
// WHAT THIS REPRESENTS
//   infer::kv_store: the key/value cache of the tape-free decoder. Per layer, keys and values
//   of shape (G, capacity, D), allocated once. New positions are written in place (write());
//   readers get views of the filled prefix (key_view()/value_view(): (G, length, D) with the
//   capacity as the stride of G), never a copy, so a generation of n tokens moves O(n) cache
//   bytes instead of the O(n^2) of a cache that hands out copies (infer/kv_cache.hpp, kept for
//   nn::gpt).
//
//   Memory: 2 * n_layer * G * capacity * D * 4 bytes (SmolLM2-135M at 2048 positions: 94 MiB).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

#include <algorithm>
#include <cstddef>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

class kv_store {
 public:
  using view_type = tensor_view<const float, dyn_shape<3>>;

  kv_store() = default;
  kv_store(index_t n_layer, index_t kv_heads, index_t capacity, index_t head_dim)
      : G_(kv_heads), cap_(capacity), D_(head_dim) {
    if (n_layer < 0 || kv_heads <= 0 || capacity <= 0 || head_dim <= 0)
      fail(errc::value, "tfm::infer::kv_store: n_layer = ", n_layer, ", kv_heads = ", kv_heads,
           ", capacity = ", capacity, ", head_dim = ", head_dim, ": sizes must be positive.");
    for (index_t l = 0; l < n_layer; ++l) {
      k_.emplace_back(dyn_shape<3>(kv_heads, capacity, head_dim));
      v_.emplace_back(dyn_shape<3>(kv_heads, capacity, head_dim));
    }
  }

  index_t layers() const noexcept { return static_cast<index_t>(k_.size()); }
  index_t capacity() const noexcept { return cap_; }
  /// Positions filled in every layer.
  index_t length() const noexcept { return length_; }
  /// Marks positions [0, n) as filled (after every layer has written them).
  void set_length(index_t n) {
    if (n < 0 || n > cap_)
      fail(errc::index, "tfm::infer::kv_store: length ", n, " outside [0, ", cap_, "].");
    length_ = n;
  }
  /// Forgets every position (keeps the memory).
  void clear() noexcept { length_ = 0; }
  std::size_t bytes() const noexcept {
    return 2 * k_.size() * static_cast<std::size_t>(G_ * cap_ * D_) * sizeof(float);
  }

  /// Stores rows t < n (keys at k + t*ld, values at v + t*ld, G*D floats each, head-major) as
  /// positions pos0 .. pos0 + n - 1 of `layer`.
  void write(index_t layer, index_t pos0, index_t n, const float* k, const float* v, index_t ld) {
    if (pos0 < 0 || n < 0 || pos0 + n > cap_)
      fail(errc::index, "tfm::infer::kv_store: positions ", pos0, " .. ", pos0 + n - 1,
           " exceed the capacity ", cap_, ".");
    float* kb = keys(layer);
    float* vb = values(layer);
    for (index_t t = 0; t < n; ++t)
      for (index_t g = 0; g < G_; ++g) {
        std::copy_n(k + t * ld + g * D_, D_, kb + (g * cap_ + pos0 + t) * D_);
        std::copy_n(v + t * ld + g * D_, D_, vb + (g * cap_ + pos0 + t) * D_);
      }
  }

  /// Base of layer's keys / values, (G, capacity, D) contiguous.
  float* keys(index_t layer) { return k_.at(static_cast<std::size_t>(layer)).data(); }
  float* values(index_t layer) { return v_.at(static_cast<std::size_t>(layer)).data(); }
  const float* keys(index_t layer) const { return k_.at(static_cast<std::size_t>(layer)).data(); }
  const float* values(index_t layer) const { return v_.at(static_cast<std::size_t>(layer)).data(); }
  /// The filled keys / values of `layer`: (G, length, D) views into the cache.
  view_type key_view(index_t layer) const { return view_of(keys(layer)); }
  view_type value_view(index_t layer) const { return view_of(values(layer)); }

 private:
  view_type view_of(const float* p) const {
    return view_type(p, dyn_shape<3>(G_, length_, D_), {cap_ * D_, D_, index_t(1)});
  }
  index_t G_ = 0, cap_ = 0, D_ = 0, length_ = 0;
  std::vector<tensor<float, dyn_shape<3>>> k_, v_;
};

}  // namespace infer
TFM_END_NAMESPACE
