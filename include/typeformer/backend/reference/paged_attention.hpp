// typeformer/backend/reference/paged_attention.hpp
//
// WHAT THIS REPRESENTS
//   Attention of a batch of sequences through the block tables of a paged KV cache (PagedAttention,
//   Kwon et al. 2023, arXiv:2309.06180; the cache itself is infer/paged_kv.hpp). This file holds
//   the vocabulary both backends share and the reference kernel (the oracle of
//   backend/cpu/paged_attention.hpp).
//
//   paged_layer_view  one layer of the pool: keys and values, `blocks` blocks of block_tokens
//                     positions each, stored per kv head g as (blocks, block_tokens) rows of
//                     kv_row_bytes(type, D) bytes (the row formats of
//                     backend/reference/decoder.hpp: f32, f16, q8_0, int8 + f32 scale):
//                       row of (kv head g, block b, slot s) = (g * blocks + b) * block_tokens + s
//                     at k + row * kv_row_bytes(type, D) (int8 scales at k_scale[row]). Head-major:
//                     a sequence's blocks with consecutive ids are one stream per kv head, as in
//                     the contiguous cache.
//   paged_query       one sequence's new query rows: row t < n (H * D floats at q + t * ldq,
//                     head-major) sits at position pos + t and attends, causally, to positions
//                     0 .. pos + t of the sequence, whose position p is in block blocks[p / bt],
//                     slot p % bt. Output row t: H * D floats at out + t * ldo. Decode is n == 1,
//                     chunked prefill n > 1 (the chunk's own keys written to the cache first).
//   paged_attention   o_t,h = softmax(scale q_t,h K_g^T over positions <= pos + t) V_g with
//                     g = h / (H / G) (GQA), for every query of the batch.
//
//   The reference gathers each sequence's positions 0 .. pos + n - 1 into a contiguous float
//   copy (reference_kernels::kv_row dequantizes) and runs the reference cached_attention (double
//   accumulation): exactly the contiguous cache's attention, by construction.
#pragma once

#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE

/// One layer of a paged KV cache as the attention kernels read it (see the file comment).
struct paged_layer_view {
  kv_type type = kv_type::f32;
  index_t G = 0;             // kv heads
  index_t D = 0;             // head dimension
  index_t block_tokens = 0;  // positions per block
  index_t blocks = 0;        // blocks in the pool (valid block ids are 0 .. blocks - 1)
  const std::byte* k = nullptr;
  const std::byte* v = nullptr;
  const float* k_scale = nullptr;  // int8 only: one scale per row
  const float* v_scale = nullptr;  // int8 only
};

/// One sequence's query rows and its block table (see the file comment). The block table is
/// borrowed: it must stay valid (no reserve / release / fork of that sequence) until the kernel
/// returns.
struct paged_query {
  std::span<const std::int32_t> blocks;  // block ids of positions 0, bt, 2 bt, ...
  index_t pos = 0;                       // position of query row 0
  index_t n = 0;                         // query rows
  const float* q = nullptr;
  index_t ldq = 0;  // floats between query rows (>= H * D)
  float* out = nullptr;
  index_t ldo = 0;  // floats between output rows (>= H * D)
};

/// Query rows the cpu kernel scores together against each key row it reads (a tile; each row's
/// arithmetic is the same as alone, so results do not depend on it).
inline constexpr index_t paged_tile_rows = 8;

/// Key rows the cpu kernel dots with one query row at a time (at most: the SIMD width).
inline constexpr index_t paged_key_group = 16;

/// Floats of scratch paged_attention needs for one query (both backends; the reference ignores
/// scratch): per kv head, the scores of a tile of query rows and a group of dequantized rows.
inline index_t paged_attention_scratch(const paged_layer_view& kv, index_t n_head,
                                       const paged_query& q) {
  const index_t tile = std::min(q.n, paged_tile_rows);
  return tile * n_head * (q.pos + q.n) + kv.G * paged_key_group * kv.D;
}

/// Floats of scratch paged_attention needs for the batch `qs`.
inline index_t paged_attention_scratch(const paged_layer_view& kv, index_t n_head,
                                       std::span<const paged_query> qs) {
  index_t s = 0;
  for (const paged_query& q : qs) s += paged_attention_scratch(kv, n_head, q);
  return s;
}

/// An upper bound of the scratch of any batch of at most `seqs` queries whose contexts
/// (pos + n) sum to at most `context_tokens`: allocate it once, no allocation per step.
inline index_t paged_attention_scratch(const paged_layer_view& kv, index_t n_head, index_t seqs,
                                       index_t context_tokens) {
  return paged_tile_rows * n_head * context_tokens + seqs * kv.G * paged_key_group * kv.D;
}

namespace paged_detail {

/// Checks the geometry and every query's block table against the pool (errc::shape, errc::index).
inline void check(const paged_layer_view& kv, index_t n_head, std::span<const paged_query> qs) {
  if (kv.G <= 0 || kv.D <= 0 || kv.block_tokens <= 0 || kv.block_tokens > (index_t{1} << 20) ||
      n_head <= 0 || n_head % kv.G != 0)
    fail(errc::shape, "tfm::paged_attention: n_head = ", n_head, ", kv heads G = ", kv.G,
         ", head_dim = ", kv.D, ", block_tokens = ", kv.block_tokens,
         ": sizes must be positive (block_tokens <= 2^20) and G must divide n_head.");
  if (kv.type == kv_type::q8_0 && kv.D % static_cast<index_t>(qk_legacy) != 0)
    fail(errc::shape, "tfm::paged_attention: a q8_0 KV cache needs a head dimension that is a ",
         "multiple of 32; D = ", kv.D, ".");
  for (std::size_t i = 0; i < qs.size(); ++i) {
    const paged_query& q = qs[i];
    if (q.pos < 0 || q.n < 0 || q.pos > (index_t{1} << 40) || q.n > (index_t{1} << 40))
      fail(errc::index, "tfm::paged_attention: query ", i, ": pos = ", q.pos, ", n = ", q.n,
           " (must be in [0, 2^40]).");
    if (q.n > 0 && (q.ldq < n_head * kv.D || q.ldo < n_head * kv.D))
      fail(errc::shape, "tfm::paged_attention: query ", i, ": ldq = ", q.ldq, ", ldo = ", q.ldo,
           " are shorter than a row of n_head * head_dim = ", n_head * kv.D, " floats.");
    const index_t need = (q.pos + q.n + kv.block_tokens - 1) / kv.block_tokens;
    if (need > static_cast<index_t>(q.blocks.size()))
      fail(errc::index, "tfm::paged_attention: query ", i, " reads positions up to ",
           q.pos + q.n - 1, " but its block table holds ", q.blocks.size(), " blocks of ",
           kv.block_tokens, " positions.");
    for (index_t b = 0; b < need; ++b) {
      const std::int32_t id = q.blocks[static_cast<std::size_t>(b)];
      if (id < 0 || id >= kv.blocks)
        fail(errc::index, "tfm::paged_attention: query ", i, ": block table entry ", b, " = ", id,
             " is outside the pool of ", kv.blocks, " blocks.");
    }
  }
}

/// Row index (in rows of kv_row_bytes) of position p of kv head g through block table `blocks`.
inline index_t row_of(const paged_layer_view& kv, std::span<const std::int32_t> blocks, index_t g,
                      index_t p) noexcept {
  const index_t b = blocks[static_cast<std::size_t>(p / kv.block_tokens)];
  return (g * kv.blocks + b) * kv.block_tokens + p % kv.block_tokens;
}

}  // namespace paged_detail

/// paged_attention on the reference backend (see the file comment); allocates, ignores scratch.
inline void paged_attention(reference, const paged_layer_view& kv, index_t n_head, double scale,
                            std::span<const paged_query> qs, float* /*scratch*/) {
  paged_detail::check(kv, n_head, qs);
  const index_t G = kv.G, D = kv.D, HD = n_head * D;
  for (const paged_query& q : qs) {
    if (q.n == 0) continue;
    const index_t ctx = q.pos + q.n;
    std::vector<float> k(static_cast<std::size_t>(G * ctx * D)), v(k.size());
    for (index_t g = 0; g < G; ++g)
      for (index_t p = 0; p < ctx; ++p) {
        const index_t row = paged_detail::row_of(kv, q.blocks, g, p);
        const std::size_t at = static_cast<std::size_t>((g * ctx + p) * D);
        reference_kernels::kv_row(kv.type, kv.k, kv.k_scale, row, D, k.data() + at);
        reference_kernels::kv_row(kv.type, kv.v, kv.v_scale, row, D, v.data() + at);
      }
    std::vector<float> qc(static_cast<std::size_t>(q.n * HD)), oc(qc.size());
    for (index_t t = 0; t < q.n; ++t) std::copy_n(q.q + t * q.ldq, HD, qc.data() + t * HD);
    const cached_attention_geometry geo{q.n, n_head, G, D, ctx, q.pos, scale};
    std::vector<float> s(static_cast<std::size_t>(cached_attention_scratch(geo)));
    cached_attention(reference{}, geo, qc.data(), k.data(), v.data(), oc.data(), s.data());
    for (index_t t = 0; t < q.n; ++t) std::copy_n(oc.data() + t * HD, HD, q.out + t * q.ldo);
  }
}

TFM_END_NAMESPACE
