// typeformer/infer/kv_store.hpp
//
// WHAT THIS REPRESENTS
//   infer::kv_store: the key/value cache of the tape-free decoder. Per layer, keys and values
//   of G * capacity rows (kv head, position) of D values each, allocated once, stored as the
//   run-time element type kv_type (backend/reference/decoder.hpp has the row layouts):
//     f32   (default) 4 D bytes per row; keys(l)/values(l) and the views below read it as floats
//     f16   2 D bytes per row, rounded to nearest even
//     q8_0  34 D / 32 bytes per row: GGML Q8_0 blocks of 32 along D, quantized by the reference
//           quantizer (quant/quantize.hpp, byte-identical to gguf-py); D % 32 == 0 required
//     int8  D + 4 bytes per row: symmetric int8 with one f32 scale per (layer, kv head,
//           position) row: scale = max|x| / 127, q = round-half-away(x / scale) (Q8_0's rule on
//           one block of D; an f32 scale, so that at D = 64 int8 costs what Q8_0 costs and the
//           scale adds no rounding of its own)
//   New positions are written in place (write(): quantized as they arrive); the attention
//   kernels read the stored rows directly (layer(l): backend/cpu/kv_attention.hpp), so a
//   generation of n tokens moves O(n) cache bytes instead of the O(n^2) of a cache that hands out
//   copies (infer/kv_cache.hpp, kept for nn::gpt).
//
//   Memory: bytes() = 2 * n_layer * G * capacity * row bytes (int8: + 4-byte scales)
//   (SmolLM2-135M, 30 layers, G 3, D 64, at 2048 positions: f32 90 MiB, f16 45 MiB, q8_0 and
//   int8 23.9 MiB).
#pragma once

#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/quantize.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// "f32", "f16", "q8_0", "int8".
constexpr std::string_view kv_type_name(kv_type t) noexcept {
  constexpr std::string_view names[] = {"f32", "f16", "q8_0", "int8"};
  return names[static_cast<std::size_t>(t)];
}

/// The kv_type named `name` (case-insensitive: f32, f16, q8_0, int8); errc::value otherwise.
inline kv_type parse_kv_type(std::string_view name) {
  std::string low(name);
  for (char& c : low) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (kv_type t : {kv_type::f32, kv_type::f16, kv_type::q8_0, kv_type::int8})
    if (low == kv_type_name(t)) return t;
  fail(errc::value, "tfm::infer: unknown KV cache type '", name,
       "' (expected f32, f16, q8_0 or int8).");
}

/// One row of D floats stored as kv_type t at dst (int8: its scale to *scale): the row formats of
/// kv_store and paged_kv (backend/reference/decoder.hpp describes them).
inline void store_kv_row(kv_type t, index_t D, const float* x, std::byte* dst, float* scale) {
  switch (t) {
    case kv_type::f32:
      std::memcpy(dst, x, static_cast<std::size_t>(D) * sizeof(float));
      return;
    case kv_type::f16:
      for (index_t d = 0; d < D; ++d) {
        const std::uint16_t bits = f16(x[d]).bits();
        std::memcpy(dst + 2 * d, &bits, 2);
      }
      return;
    case kv_type::q8_0:
      for (index_t b = 0; b < D / static_cast<index_t>(qk_legacy); ++b) {
        block_q8_0 blk;
        quantize_block(x + b * static_cast<index_t>(qk_legacy), blk);
        std::memcpy(dst + b * static_cast<index_t>(sizeof(block_q8_0)), &blk, sizeof blk);
      }
      return;
    case kv_type::int8: {
      namespace q = tfm::detail::quant;
      const float d = q::absmax(x, static_cast<int>(D)) / 127.0f;
      const float id = q::inverse_or_zero(d);
      for (index_t j = 0; j < D; ++j)
        dst[j] = static_cast<std::byte>(q::cvt_i8(q::round_half_away(x[j] * id)));
      *scale = d;
      return;
    }
  }
}

class kv_store {
 public:
  using view_type = tensor_view<const float, dyn_shape<3>>;

  kv_store() = default;
  kv_store(index_t n_layer, index_t kv_heads, index_t capacity, index_t head_dim,
           kv_type type = kv_type::f32)
      : type_(type), G_(kv_heads), cap_(capacity), D_(head_dim) {
    if (n_layer < 0 || kv_heads <= 0 || capacity <= 0 || head_dim <= 0)
      fail(errc::value, "tfm::infer::kv_store: n_layer = ", n_layer, ", kv_heads = ", kv_heads,
           ", capacity = ", capacity, ", head_dim = ", head_dim, ": sizes must be positive.");
    if (type == kv_type::q8_0 && head_dim % static_cast<index_t>(qk_legacy) != 0)
      fail(errc::value,
           "tfm::infer::kv_store: a q8_0 KV cache stores blocks of 32 values along "
           "the head dimension, but the model's head_dim is ",
           head_dim, " (not a multiple of 32); use --kv-type f16 or int8.");
    row_ = kv_row_bytes(type, head_dim);
    const std::size_t rows = static_cast<std::size_t>(kv_heads * capacity);
    const index_t words = static_cast<index_t>((rows * row_ + 3) / 4);  // float storage: aligned
    for (index_t l = 0; l < n_layer; ++l) {
      k_.emplace_back(dyn_shape<1>(words));
      v_.emplace_back(dyn_shape<1>(words));
      if (type == kv_type::int8) {
        ks_.emplace_back(dyn_shape<1>(kv_heads * capacity));
        vs_.emplace_back(dyn_shape<1>(kv_heads * capacity));
      }
    }
  }

  kv_type type() const noexcept { return type_; }
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
  /// Bytes of one position in every layer, keys and values (int8: with the scales).
  std::size_t bytes_per_token() const noexcept {
    const std::size_t scale = type_ == kv_type::int8 ? sizeof(float) : 0;
    return 2 * k_.size() * static_cast<std::size_t>(G_) * (row_ + scale);
  }
  /// Bytes the cache holds (every position of the capacity).
  std::size_t bytes() const noexcept { return bytes_per_token() * static_cast<std::size_t>(cap_); }

  /// Stores rows t < n (keys at k + t*ld, values at v + t*ld, G*D floats each, head-major) as
  /// positions pos0 .. pos0 + n - 1 of `layer`, converted to type().
  void write(index_t layer, index_t pos0, index_t n, const float* k, const float* v, index_t ld) {
    if (pos0 < 0 || n < 0 || pos0 + n > cap_)
      fail(errc::index, "tfm::infer::kv_store: positions ", pos0, " .. ", pos0 + n - 1,
           " exceed the capacity ", cap_, ".");
    const std::size_t l = static_cast<std::size_t>(layer);
    std::byte* kb = bytes_of(k_.at(l));
    std::byte* vb = bytes_of(v_.at(l));
    float* ks = type_ == kv_type::int8 ? ks_.at(l).data() : nullptr;
    float* vs = type_ == kv_type::int8 ? vs_.at(l).data() : nullptr;
    for (index_t t = 0; t < n; ++t)
      for (index_t g = 0; g < G_; ++g) {
        const index_t r = g * cap_ + pos0 + t;
        store_row(k + t * ld + g * D_, kb + static_cast<std::size_t>(r) * row_, ks ? ks + r : ks);
        store_row(v + t * ld + g * D_, vb + static_cast<std::size_t>(r) * row_, vs ? vs + r : vs);
      }
  }

  /// One layer as the attention kernels read it (cached_attention over a kv_layer_view).
  kv_layer_view layer(index_t l) const {
    const std::size_t i = at(l);
    return {type_, reinterpret_cast<const std::byte*>(k_.at(i).data()),
            reinterpret_cast<const std::byte*>(v_.at(i).data()),
            type_ == kv_type::int8 ? ks_.at(i).data() : nullptr,
            type_ == kv_type::int8 ? vs_.at(i).data() : nullptr};
  }

  /// Base of layer's keys / values, (G, capacity, D) contiguous floats: an f32 cache only.
  float* keys(index_t layer) {
    require_f32();
    return k_.at(at(layer)).data();
  }
  float* values(index_t layer) {
    require_f32();
    return v_.at(at(layer)).data();
  }
  const float* keys(index_t layer) const {
    require_f32();
    return k_.at(at(layer)).data();
  }
  const float* values(index_t layer) const {
    require_f32();
    return v_.at(at(layer)).data();
  }
  /// The filled keys / values of `layer`: (G, length, D) views into an f32 cache.
  view_type key_view(index_t layer) const { return view_of(keys(layer)); }
  view_type value_view(index_t layer) const { return view_of(values(layer)); }

 private:
  using store_type = tensor<float, dyn_shape<1>>;

  static std::size_t at(index_t layer) noexcept { return static_cast<std::size_t>(layer); }
  static std::byte* bytes_of(store_type& s) { return reinterpret_cast<std::byte*>(s.data()); }
  void require_f32() const {
    if (type_ != kv_type::f32)
      fail(errc::value, "tfm::infer::kv_store: the cache holds ", kv_type_name(type_),
           " rows, not floats (read it through layer()).");
  }

  /// One row of D floats to the cache's type at dst (int8: its scale to *scale).
  void store_row(const float* x, std::byte* dst, float* scale) const {
    store_kv_row(type_, D_, x, dst, scale);
  }

  view_type view_of(const float* p) const {
    return view_type(p, dyn_shape<3>(G_, length_, D_), {cap_ * D_, D_, index_t(1)});
  }
  kv_type type_ = kv_type::f32;
  index_t G_ = 0, cap_ = 0, D_ = 0, length_ = 0;
  std::size_t row_ = 0;
  std::vector<store_type> k_, v_, ks_, vs_;
};

}  // namespace infer
TFM_END_NAMESPACE
