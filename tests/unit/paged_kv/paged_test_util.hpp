// Helpers of the paged KV cache tests: random rows, filling a paged sequence and a contiguous
// kv_store with the same rows in chunks, reading a paged sequence's stored rows back.
#pragma once

#include "tfm_test.hpp"

#include "typeformer/backend/reference/paged_attention.hpp"
#include "typeformer/infer/kv_store.hpp"
#include "typeformer/infer/paged_kv.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace paged_test {

using tfm::index_t;
using tfm::kv_type;
using tfm::infer::paged_kv;

/// n rows of `width` normal floats.
inline std::vector<float> normal_rows(std::mt19937& rng, index_t n, index_t width) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * width));
  for (float& v : x) v = nd(rng);
  return x;
}

/// Keys and values of one sequence: (n_layer, len, G * D) each.
struct rows {
  index_t layers = 0, len = 0, width = 0;
  std::vector<float> k, v;
  const float* k_at(index_t l, index_t p) const { return k.data() + (l * len + p) * width; }
  const float* v_at(index_t l, index_t p) const { return v.data() + (l * len + p) * width; }
};

inline rows random_rows(std::mt19937& rng, index_t layers, index_t len, index_t width) {
  rows r{layers, len, width, normal_rows(rng, layers * len, width),
         normal_rows(rng, layers * len, width)};
  return r;
}

/// Appends positions [kv.length(s), kv.length(s) + n) of r to sequence s (reserve, every layer,
/// commit); REQUIREs that reserve succeeds.
inline void append(paged_kv& kv, paged_kv::seq_id s, const rows& r, index_t n) {
  const index_t p = kv.length(s);
  REQUIRE(kv.reserve(s, n));
  for (index_t l = 0; l < r.layers; ++l) kv.write(l, s, p, n, r.k_at(l, p), r.v_at(l, p), r.width);
  kv.commit(s, n);
}

/// Appends all of r in random chunks of 1 .. max_chunk positions.
inline void fill_chunked(paged_kv& kv, paged_kv::seq_id s, const rows& r, std::mt19937& rng,
                         index_t max_chunk) {
  while (kv.length(s) < r.len) {
    const index_t c = std::min<index_t>(r.len - kv.length(s),
                                        std::uniform_int_distribution<index_t>(1, max_chunk)(rng));
    append(kv, s, r, c);
  }
}

/// A contiguous kv_store holding r (capacity r.len).
inline tfm::infer::kv_store contiguous(const rows& r, index_t G, index_t D, kv_type t) {
  tfm::infer::kv_store s(r.layers, G, r.len, D, t);
  for (index_t l = 0; l < r.layers; ++l) s.write(l, 0, r.len, r.k_at(l, 0), r.v_at(l, 0), r.width);
  s.set_length(r.len);
  return s;
}

/// The stored bytes of key (which = 0) or value (1) row (position p, kv head g) of sequence s.
inline std::vector<std::uint8_t> stored_row(const paged_kv& kv, paged_kv::seq_id s, index_t layer,
                                            int which, index_t p, index_t g) {
  const tfm::paged_layer_view lv = kv.layer(layer);
  const index_t row = tfm::paged_detail::row_of(lv, kv.block_table(s), g, p);
  const std::size_t rb = tfm::kv_row_bytes(lv.type, lv.D);
  const std::byte* base = (which == 0 ? lv.k : lv.v) + static_cast<std::size_t>(row) * rb;
  std::vector<std::uint8_t> out(rb);
  std::memcpy(out.data(), base, rb);
  return out;
}

/// The float of an f32 cache at (layer, key/value, position p, kv head g, d).
inline float stored_f32(const paged_kv& kv, paged_kv::seq_id s, index_t layer, int which, index_t p,
                        index_t g, index_t d) {
  const tfm::paged_layer_view lv = kv.layer(layer);
  const index_t row = tfm::paged_detail::row_of(lv, kv.block_table(s), g, p);
  const float* base = reinterpret_cast<const float*>(which == 0 ? lv.k : lv.v);
  return base[row * lv.D + d];
}

}  // namespace paged_test
