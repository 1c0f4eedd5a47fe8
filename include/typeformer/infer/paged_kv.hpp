// typeformer/infer/paged_kv.hpp
//
// WHAT THIS REPRESENTS
//   infer::paged_kv: the key/value cache of many sequences at once, paged (PagedAttention,
//   Kwon et al. 2023, arXiv:2309.06180). A pool of `blocks` fixed-size blocks, each holding
//   block_tokens positions of every layer's keys and values (all kv heads), in the row formats of
//   infer/kv_store.hpp (kv_type f32, f16, q8_0, int8 + f32 scale; written as kv_store writes
//   them, byte for byte). A sequence owns a block table: position p lives in block
//   table[p / block_tokens], slot p % block_tokens, in every layer. The attention kernels read
//   through the tables (paged_attention: backend/reference/paged_attention.hpp, the cpu kernel
//   backend/cpu/paged_attention.hpp); layer(l) and query(...) hand them what they need.
//
//   Sharing. Blocks carry reference counts. fork() gives a new sequence the same blocks (beams,
//   parallel samples); prefix caching gives a new request the blocks of a cached prompt prefix.
//   A block that more than one sequence holds, or that the prefix cache holds, is never written:
//   reserve() replaces it in the writing sequence's table by a private copy first
//   (copy-on-write). Writes go only to positions >= length() and below room(), inside blocks
//   reserve() made private.
//
//   Prefix cache (vLLM's automatic prefix caching; SGLang's RadixAttention is the tree form).
//   publish() registers a sequence's full blocks under the hash of the whole token prefix up to
//   each block's end, chained: h_i = hash(h_{i-1}, tokens of block i), h_{-1} a fixed seed.
//   attach_prefix() walks a new prompt's full blocks from the first, reusing each block found
//   until the first miss. A hit compares the block's tokens and its parent's identity (a
//   registration serial number, never reused), so equal hashes never share blocks of different
//   prefixes: sharing is exact whatever the hash. Cached blocks that no sequence holds stay in the
//   pool, counted as free, and are evicted least recently released first when reserve() needs
//   blocks and the plain free list is empty (a sequence's blocks are released from its last block
//   to its first, so a prefix's tail is evicted before its head).
//
//   Not thread-safe: one thread creates, reserves, writes and releases; the attention kernels
//   may read (layer(), block tables) from many threads while nothing mutates the cache.
//
//   No allocation after construction, except a sequence table that grows to the largest number of
//   live sequences and block tables that grow to the longest sequence (both reused).
//
//   Memory: bytes() = blocks * bytes_per_block(), bytes_per_block() = 2 * n_layer * G *
//   block_tokens * (row bytes + (int8: 4)). Pool size from tokens or bytes: blocks_for_tokens,
//   blocks_for_bytes.
#pragma once

#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/backend/reference/paged_attention.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/infer/kv_store.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/quantize.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// Options of a paged_kv.
struct paged_kv_options {
  index_t block_tokens = 16;    // positions per block (vLLM's default)
  index_t blocks = 0;           // blocks in the pool (blocks_for_tokens / blocks_for_bytes)
  kv_type type = kv_type::f32;  // element type of the stored rows
  int hash_bits = 64;           // tests only: keep the low bits of the prefix hash (collisions)
};

/// Counters of the prefix cache and the pool (monotonic; reset_stats() zeroes them).
struct paged_kv_stats {
  std::uint64_t lookups = 0;           // attach_prefix calls
  std::uint64_t lookup_tokens = 0;     // prompt tokens offered to attach_prefix
  std::uint64_t hit_tokens = 0;        // positions attach_prefix reused
  std::uint64_t published_blocks = 0;  // blocks publish registered
  std::uint64_t evictions = 0;         // cached blocks evicted to serve reserve()
  std::uint64_t cow_copies = 0;        // blocks copied by reserve() (copy-on-write)
};

namespace paged_detail {

/// splitmix64's finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mix.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace paged_detail

class paged_kv {
 public:
  using seq_id = std::int32_t;

  /// A pool of opt.blocks blocks for a model of n_layer layers, kv_heads kv heads of head_dim.
  /// errc::value on non-positive sizes, q8_0 with head_dim % 32 != 0, hash_bits outside 0..64.
  paged_kv(index_t n_layer, index_t kv_heads, index_t head_dim, paged_kv_options opt)
      : opt_(opt), L_(n_layer), G_(kv_heads), D_(head_dim) {
    if (n_layer <= 0 || kv_heads <= 0 || head_dim <= 0 || opt.block_tokens <= 0 ||
        opt.blocks <= 0 || opt.blocks > INT32_MAX / 2 || opt.block_tokens > (index_t{1} << 20) ||
        opt.blocks * opt.block_tokens > (index_t{1} << 40))
      fail(errc::value, "tfm::infer::paged_kv: n_layer = ", n_layer, ", kv_heads = ", kv_heads,
           ", head_dim = ", head_dim, ", block_tokens = ", opt.block_tokens,
           ", blocks = ", opt.blocks,
           ": sizes must be positive (blocks < 2^30, block_tokens <= 2^20, blocks * block_tokens "
           "<= 2^40).");
    if (opt.type == kv_type::q8_0 && head_dim % static_cast<index_t>(qk_legacy) != 0)
      fail(errc::value,
           "tfm::infer::paged_kv: a q8_0 KV cache stores blocks of 32 values along the head "
           "dimension, but head_dim is ",
           head_dim, " (not a multiple of 32); use f16 or int8.");
    if (opt.hash_bits < 0 || opt.hash_bits > 64)
      fail(errc::value, "tfm::infer::paged_kv: hash_bits = ", opt.hash_bits, " outside 0 .. 64.");
    row_ = kv_row_bytes(opt.type, head_dim);
    const index_t B = opt.block_tokens, N = opt.blocks;
    const std::size_t rows = static_cast<std::size_t>(N * G_ * B);
    const index_t words = static_cast<index_t>((rows * row_ + 3) / 4);
    for (index_t l = 0; l < L_; ++l) {
      k_.emplace_back(dyn_shape<1>(words));
      v_.emplace_back(dyn_shape<1>(words));
      if (opt.type == kv_type::int8) {
        ks_.emplace_back(dyn_shape<1>(static_cast<index_t>(rows)));
        vs_.emplace_back(dyn_shape<1>(static_cast<index_t>(rows)));
      }
    }
    // Zero the pool once (llama.cpp clears its KV buffers too): its pages are resident from
    // here on, not faulted in (and zeroed by the kernel) while requests are being served.
    for (auto* pool : {&k_, &v_, &ks_, &vs_})
      for (auto& t : *pool) std::fill_n(t.data(), t.size(), 0.0f);
    const std::size_t n = static_cast<std::size_t>(N);
    ref_.assign(n, 0);
    serial_.assign(n, 0);
    parent_.assign(n, 0);
    hash_.assign(n, 0);
    prev_.assign(n, -1);
    next_.assign(n, -1);
    tokens_.assign(n * static_cast<std::size_t>(B), 0);
    free_.reserve(n);
    for (index_t b = N - 1; b >= 0; --b) free_.push_back(static_cast<std::int32_t>(b));
    std::size_t cap = 2;
    while (cap < 2 * n) cap *= 2;
    table_.assign(cap, -1);
    hash_mask_ = opt.hash_bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << opt.hash_bits) - 1;
  }

  // ---- sizes -------------------------------------------------------------------------------

  /// Bytes of one block in every layer, keys and values (int8: with the scales).
  static std::size_t bytes_per_block(index_t n_layer, index_t kv_heads, index_t head_dim,
                                     const paged_kv_options& opt) noexcept {
    const std::size_t scale = opt.type == kv_type::int8 ? sizeof(float) : 0;
    return 2 * static_cast<std::size_t>(n_layer * kv_heads * opt.block_tokens) *
           (kv_row_bytes(opt.type, head_dim) + scale);
  }
  /// Blocks that hold `tokens` positions (rounded up).
  static index_t blocks_for_tokens(index_t tokens, index_t block_tokens) noexcept {
    return (tokens + block_tokens - 1) / block_tokens;
  }
  /// Blocks that fit in `bytes` (rounded down).
  static index_t blocks_for_bytes(std::size_t bytes, index_t n_layer, index_t kv_heads,
                                  index_t head_dim, const paged_kv_options& opt) noexcept {
    const std::size_t per = bytes_per_block(n_layer, kv_heads, head_dim, opt);
    return per == 0 ? 0 : static_cast<index_t>(bytes / per);
  }

  kv_type type() const noexcept { return opt_.type; }
  index_t layers() const noexcept { return L_; }
  index_t kv_heads() const noexcept { return G_; }
  index_t head_dim() const noexcept { return D_; }
  index_t block_tokens() const noexcept { return opt_.block_tokens; }
  index_t total_blocks() const noexcept { return opt_.blocks; }
  /// Blocks reserve() can take: never-used or released ones, plus cached blocks no sequence
  /// holds (evictable).
  index_t free_blocks() const noexcept { return static_cast<index_t>(free_.size()) + lru_size_; }
  /// Blocks at least one sequence holds (total_blocks() - free_blocks()).
  index_t used_blocks() const noexcept { return total_blocks() - free_blocks(); }
  /// Cached blocks no sequence holds (part of free_blocks()).
  index_t cached_free_blocks() const noexcept { return lru_size_; }
  /// Blocks registered in the prefix cache (held or not).
  index_t cached_blocks() const noexcept { return cached_; }
  std::size_t bytes_per_block() const noexcept { return bytes_per_block(L_, G_, D_, opt_); }
  std::size_t bytes() const noexcept {
    return bytes_per_block() * static_cast<std::size_t>(opt_.blocks);
  }
  /// Bytes of one position in every layer (bytes_per_block() / block_tokens()).
  std::size_t bytes_per_token() const noexcept {
    return bytes_per_block() / static_cast<std::size_t>(opt_.block_tokens);
  }
  /// Live sequences.
  index_t sequences() const noexcept { return live_; }

  // ---- sequences ---------------------------------------------------------------------------

  /// Makes room for `seqs` live sequences of up to `max_tokens` positions each (sequence slots
  /// and their block tables), so that create / fork / reserve / attach_prefix allocate nothing
  /// while at most that many sequences of at most that length live. Optional.
  void prepare(index_t seqs, index_t max_tokens) {
    if (seqs < 0 || max_tokens < 0)
      fail(errc::value, "tfm::infer::paged_kv::prepare: seqs = ", seqs,
           ", max_tokens = ", max_tokens, " (must be >= 0).");
    const std::size_t cap = static_cast<std::size_t>(
        std::min(blocks_for_tokens(max_tokens, opt_.block_tokens), opt_.blocks));
    const std::size_t slots = std::max(static_cast<std::size_t>(seqs), seqs_.size());
    seqs_.reserve(slots);
    free_ids_.reserve(slots);
    while (static_cast<index_t>(seqs_.size()) < seqs) {
      free_ids_.insert(free_ids_.begin(), static_cast<seq_id>(seqs_.size()));  // lowest id first
      seqs_.emplace_back();
    }
    for (seq_state& st : seqs_) st.blocks.reserve(cap);
  }

  /// A new empty sequence (length 0, no blocks). Ids of released sequences are reused.
  seq_id create() {
    seq_id id;
    if (!free_ids_.empty()) {
      id = free_ids_.back();
      free_ids_.pop_back();
    } else {
      id = static_cast<seq_id>(seqs_.size());
      seqs_.emplace_back();
    }
    seq_state& s = seqs_[static_cast<std::size_t>(id)];
    s.live = true;
    s.length = 0;
    s.blocks.clear();
    ++live_;
    return id;
  }

  /// A new sequence sharing the blocks of src's positions 0 .. length(src) - 1 (reference
  /// counts; either copies a shared block before writing into it: reserve()). Takes no block.
  seq_id fork(seq_id src) {
    check(src, "fork");
    const seq_id id = create();
    const seq_state& s = seqs_[static_cast<std::size_t>(src)];
    seq_state& d = seqs_[static_cast<std::size_t>(id)];
    const index_t nb = blocks_for_tokens(s.length, opt_.block_tokens);
    d.blocks.assign(s.blocks.begin(), s.blocks.begin() + nb);
    for (std::int32_t b : d.blocks) ++ref_[static_cast<std::size_t>(b)];
    d.length = s.length;
    return id;
  }

  /// Ends a sequence: drops its references (last block first); a block whose count reaches 0
  /// returns to the free list, or, if the prefix cache holds it, becomes evictable.
  void release(seq_id id) {
    check(id, "release");
    seq_state& s = seqs_[static_cast<std::size_t>(id)];
    drop_blocks(s, 0);
    s.live = false;
    s.length = 0;
    free_ids_.push_back(id);
    --live_;
  }

  /// Positions filled in every layer (committed).
  index_t length(seq_id id) const {
    check(id, "length");
    return seqs_[static_cast<std::size_t>(id)].length;
  }
  /// Positions the sequence's blocks cover (length() <= room()).
  index_t room(seq_id id) const {
    check(id, "room");
    return static_cast<index_t>(seqs_[static_cast<std::size_t>(id)].blocks.size()) *
           opt_.block_tokens;
  }
  /// The sequence's block table (valid until the next reserve / fork / release / truncate).
  std::span<const std::int32_t> block_table(seq_id id) const {
    check(id, "block_table");
    return seqs_[static_cast<std::size_t>(id)].blocks;
  }
  /// References to block b (tests, diagnostics).
  index_t ref_count(std::int32_t b) const {
    if (b < 0 || b >= opt_.blocks)
      fail(errc::index, "tfm::infer::paged_kv: block ", b, " outside the pool of ", opt_.blocks,
           " blocks.");
    return ref_[static_cast<std::size_t>(b)];
  }

  /// Blocks reserve(id, n) would take from the pool now (new blocks and copy-on-write copies).
  index_t blocks_needed(seq_id id, index_t n) const {
    check(id, "blocks_needed");
    if (n < 0) fail(errc::value, "tfm::infer::paged_kv::blocks_needed: n = ", n, " < 0.");
    const seq_state& s = seqs_[static_cast<std::size_t>(id)];
    if (n > opt_.blocks * opt_.block_tokens) return opt_.blocks + 1;  // never fits (no overflow)
    index_t first, need;
    write_range(s, n, first, need);
    const index_t have = static_cast<index_t>(s.blocks.size());
    index_t take = std::max<index_t>(0, need - have);
    for (index_t i = first; i < std::min(need, have); ++i)
      take += !exclusive(s.blocks[static_cast<std::size_t>(i)]);
    return take;
  }

  /// Makes positions length() .. length() + n - 1 writable: appends blocks and replaces shared
  /// or cached blocks in that range by private copies (every layer copied). Evicts cached
  /// blocks (least recently released first) when the free list runs out. Returns false, and
  /// changes nothing, when the pool cannot supply the blocks.
  bool reserve(seq_id id, index_t n) {
    check(id, "reserve");
    if (n < 0) fail(errc::value, "tfm::infer::paged_kv::reserve: n = ", n, " < 0.");
    const index_t take = blocks_needed(id, n);
    if (take > free_blocks()) return false;
    seq_state& s = seqs_[static_cast<std::size_t>(id)];
    index_t first, need;
    write_range(s, n, first, need);
    const index_t have = static_cast<index_t>(s.blocks.size());
    for (index_t i = first; i < std::min(need, have); ++i) {
      std::int32_t& b = s.blocks[static_cast<std::size_t>(i)];
      if (exclusive(b)) continue;
      const std::int32_t c = take_block();
      copy_block(b, c);
      unref(b);
      b = c;
      ++stats_.cow_copies;
    }
    for (index_t i = have; i < need; ++i) s.blocks.push_back(take_block());
    return true;
  }

  /// Stores rows t < n (keys at k + t * ld, values at v + t * ld, G * D floats each, head-major)
  /// as positions pos .. pos + n - 1 of `layer`, converted to type(). Requires length() <= pos
  /// and pos + n <= room(), in blocks reserve() made private (errc::index, errc::value).
  void write(index_t layer, seq_id id, index_t pos, index_t n, const float* k, const float* v,
             index_t ld) {
    check(id, "write");
    if (layer < 0 || layer >= L_)
      fail(errc::index, "tfm::infer::paged_kv::write: layer ", layer, " outside [0, ", L_, ").");
    const seq_state& s = seqs_[static_cast<std::size_t>(id)];
    const index_t room = static_cast<index_t>(s.blocks.size()) * opt_.block_tokens;
    if (n < 0 || pos < s.length || pos > room || n > room - pos)
      fail(errc::index, "tfm::infer::paged_kv::write: sequence ", id, ": positions ", pos, " .. ",
           pos + n - 1, " outside the writable range [", s.length, ", ", room,
           ") (length .. reserved room; call reserve() first).");
    if (n > 0 && ld < G_ * D_)
      fail(errc::value, "tfm::infer::paged_kv::write: ld = ", ld,
           " < kv_heads * head_dim = ", G_ * D_, ".");
    const index_t B = opt_.block_tokens;
    for (index_t i = pos / B; n > 0 && i <= (pos + n - 1) / B; ++i)
      if (!exclusive(s.blocks[static_cast<std::size_t>(i)]))
        fail(errc::value, "tfm::infer::paged_kv::write: sequence ", id, ": block ", i,
             " of its table is shared or cached; call reserve() before writing.");
    const std::size_t l = static_cast<std::size_t>(layer);
    std::byte* kb = reinterpret_cast<std::byte*>(k_[l].data());
    std::byte* vb = reinterpret_cast<std::byte*>(v_[l].data());
    float* ks = opt_.type == kv_type::int8 ? ks_[l].data() : nullptr;
    float* vs = opt_.type == kv_type::int8 ? vs_[l].data() : nullptr;
    for (index_t t = 0; t < n; ++t) {
      const index_t p = pos + t;
      const index_t b = s.blocks[static_cast<std::size_t>(p / B)];
      for (index_t g = 0; g < G_; ++g) {
        const index_t r = (g * opt_.blocks + b) * B + p % B;
        store_kv_row(opt_.type, D_, k + t * ld + g * D_, kb + static_cast<std::size_t>(r) * row_,
                     ks ? ks + r : nullptr);
        store_kv_row(opt_.type, D_, v + t * ld + g * D_, vb + static_cast<std::size_t>(r) * row_,
                     vs ? vs + r : nullptr);
      }
    }
  }

  /// The sequence's length grows by n (positions written in every layer); errc::index beyond
  /// room().
  void commit(seq_id id, index_t n) {
    check(id, "commit");
    seq_state& s = seqs_[static_cast<std::size_t>(id)];
    const index_t room = static_cast<index_t>(s.blocks.size()) * opt_.block_tokens;
    if (n < 0 || n > room - s.length)
      fail(errc::index, "tfm::infer::paged_kv::commit: sequence ", id, ": length ", s.length, " + ",
           n, " outside [", s.length, ", ", room, "] (the reserved room).");
    s.length += n;
  }

  /// Shortens the sequence to n <= length() positions and drops the blocks past them.
  void truncate(seq_id id, index_t n) {
    check(id, "truncate");
    seq_state& s = seqs_[static_cast<std::size_t>(id)];
    if (n < 0 || n > s.length)
      fail(errc::index, "tfm::infer::paged_kv::truncate: sequence ", id, ": length ", n,
           " outside [0, ", s.length, "].");
    s.length = n;
    drop_blocks(s, blocks_for_tokens(n, opt_.block_tokens));
  }

  // ---- prefix cache ------------------------------------------------------------------------

  /// Positions of `prompt` that attach_prefix would reuse now (a multiple of block_tokens, less
  /// than prompt.size()); changes nothing.
  index_t cached_prefix(std::span<const std::int32_t> prompt) const {
    index_t n = 0;
    walk_prefix(prompt, [&](std::int32_t) { n += opt_.block_tokens; });
    return n;
  }

  /// On an empty sequence (no positions, no blocks): takes the longest run of cached full
  /// blocks that begins `prompt` (at most (prompt.size() - 1) / block_tokens blocks, so at least
  /// one token is left to compute) and returns the positions reused; the sequence's length is
  /// set to them. Takes no block from the free list (a cached free block becomes held).
  index_t attach_prefix(seq_id id, std::span<const std::int32_t> prompt) {
    check(id, "attach_prefix");
    seq_state& s = seqs_[static_cast<std::size_t>(id)];
    if (s.length != 0 || !s.blocks.empty())
      fail(errc::value, "tfm::infer::paged_kv::attach_prefix: sequence ", id, " is not empty (",
           s.length, " positions, ", s.blocks.size(), " blocks).");
    walk_prefix(prompt, [&](std::int32_t b) {
      if (ref_[static_cast<std::size_t>(b)]++ == 0) lru_unlink(b);
      s.blocks.push_back(b);
    });
    s.length = static_cast<index_t>(s.blocks.size()) * opt_.block_tokens;
    ++stats_.lookups;
    stats_.lookup_tokens += prompt.size();
    stats_.hit_tokens += static_cast<std::uint64_t>(s.length);
    return s.length;
  }

  /// Registers the sequence's full committed blocks under their prefix hashes; tokens[p] is the
  /// token at position p (tokens past length() are ignored). A block already registered is
  /// checked (errc::value if its tokens differ); a block whose prefix another block already
  /// caches stays private (the cached one serves later lookups). Costs O(length) hashing.
  void publish(seq_id id, std::span<const std::int32_t> tokens) {
    check(id, "publish");
    const seq_state& s = seqs_[static_cast<std::size_t>(id)];
    const index_t B = opt_.block_tokens;
    const index_t full = std::min(static_cast<index_t>(tokens.size()), s.length) / B;
    std::uint64_t h = hash_seed, parent = 0;
    for (index_t i = 0; i < full; ++i) {
      const std::span<const std::int32_t> blk =
          tokens.subspan(static_cast<std::size_t>(i * B), static_cast<std::size_t>(B));
      h = chain_hash(h, blk);
      const std::int32_t b = s.blocks[static_cast<std::size_t>(i)];
      const std::size_t bi = static_cast<std::size_t>(b);
      if (serial_[bi] != 0) {
        if (hash_[bi] != h || !same_tokens(b, blk))
          fail(errc::value, "tfm::infer::paged_kv::publish: sequence ", id, ": block ", i,
               " is cached under other tokens than the ones given.");
        if (parent_[bi] == parent) {
          parent = serial_[bi];
          continue;
        }
      }
      // b is private, or cached under a parent that has since been evicted and re-registered
      // (a stale key that no lookup reaches): the live entry for this prefix, else b, re-keyed
      const std::int32_t e = find(h, parent, blk);
      if (e >= 0) {
        parent = serial_[static_cast<std::size_t>(e)];
        continue;
      }
      if (serial_[bi] != 0) uncache(b);
      serial_[bi] = ++next_serial_;
      hash_[bi] = h;
      parent_[bi] = parent;
      std::copy(blk.begin(), blk.end(), tokens_.begin() + static_cast<std::ptrdiff_t>(bi) * B);
      insert(b);
      ++cached_;
      ++stats_.published_blocks;
      parent = serial_[bi];
    }
  }

  /// Evicts every cached block no sequence holds.
  void clear_prefix_cache() {
    while (lru_head_ >= 0) {
      const std::int32_t b = lru_head_;
      lru_unlink(b);
      uncache(b);
      free_.push_back(b);
    }
  }

  const paged_kv_stats& stats() const noexcept { return stats_; }
  void reset_stats() noexcept { stats_ = {}; }

  // ---- attention -------------------------------------------------------------------------

  /// Layer l as the paged attention kernels read it.
  paged_layer_view layer(index_t l) const {
    if (l < 0 || l >= L_)
      fail(errc::index, "tfm::infer::paged_kv::layer: layer ", l, " outside [0, ", L_, ").");
    const std::size_t i = static_cast<std::size_t>(l);
    const bool i8 = opt_.type == kv_type::int8;
    return {opt_.type,
            G_,
            D_,
            opt_.block_tokens,
            opt_.blocks,
            reinterpret_cast<const std::byte*>(k_[i].data()),
            reinterpret_cast<const std::byte*>(v_[i].data()),
            i8 ? ks_[i].data() : nullptr,
            i8 ? vs_[i].data() : nullptr};
  }

  /// The attention request of sequence id's query rows t < n at positions pos + t (q + t * ldq
  /// in, out + t * ldo out; H * D floats each): positions 0 .. pos + n - 1 must be written, so
  /// pos + n <= room() (errc::index otherwise). The block table is borrowed (see paged_query).
  paged_query query(seq_id id, index_t pos, index_t n, const float* q, index_t ldq, float* out,
                    index_t ldo) const {
    check(id, "query");
    const seq_state& s = seqs_[static_cast<std::size_t>(id)];
    const index_t room = static_cast<index_t>(s.blocks.size()) * opt_.block_tokens;
    if (pos < 0 || n < 0 || pos > room || n > room - pos)
      fail(errc::index, "tfm::infer::paged_kv::query: sequence ", id, ": positions ", pos, " .. ",
           pos + n - 1, " outside its room [0, ", room, ").");
    return {s.blocks, pos, n, q, ldq, out, ldo};
  }

  /// Checks the pool's bookkeeping (tests): reference counts equal the table entries of live
  /// sequences, every block is exactly one of held / free list / evictable, the hash table holds
  /// exactly the cached blocks. errc::value with the first inconsistency.
  void check_invariants() const {
    std::vector<index_t> refs(static_cast<std::size_t>(opt_.blocks), 0);
    for (const seq_state& s : seqs_)
      if (s.live)
        for (std::int32_t b : s.blocks) ++refs[static_cast<std::size_t>(b)];
    std::vector<int> where(refs.size(), 0);
    for (std::int32_t b : free_) where[static_cast<std::size_t>(b)] += 1;
    index_t lru = 0;
    for (std::int32_t b = lru_head_; b >= 0; b = next_[static_cast<std::size_t>(b)], ++lru)
      where[static_cast<std::size_t>(b)] += 2;
    index_t in_table = 0;
    for (std::int32_t b : table_)
      if (b >= 0) {
        ++in_table;
        if (serial_[static_cast<std::size_t>(b)] == 0)
          fail(errc::value, "paged_kv invariant: uncached block ", b, " in the hash table.");
      }
    index_t cached = 0;
    for (std::size_t b = 0; b < refs.size(); ++b) {
      const bool c = serial_[b] != 0;
      cached += c;
      if (refs[b] != ref_[b])
        fail(errc::value, "paged_kv invariant: block ", b, " has count ", ref_[b], " but ", refs[b],
             " table entries.");
      const int want = ref_[b] > 0 ? 0 : (c ? 2 : 1);
      if (where[b] != want)
        fail(errc::value, "paged_kv invariant: block ", b, " (count ", ref_[b], ", cached ", c,
             ") is on lists ", where[b], ", expected ", want, ".");
      if (c && find(hash_[b], parent_[b], cached_tokens(static_cast<std::int32_t>(b))) < 0)
        fail(errc::value, "paged_kv invariant: cached block ", b, " is not found by its key.");
    }
    if (lru != lru_size_ || in_table != cached || cached != cached_)
      fail(errc::value, "paged_kv invariant: lru ", lru, " / ", lru_size_, ", table ", in_table,
           ", cached ", cached, " / ", cached_, ".");
  }

 private:
  using store_type = tensor<float, dyn_shape<1>>;
  static constexpr std::uint64_t hash_seed = 0x7466'6d5f'7061'6765ull;  // "tfm_page"

  struct seq_state {
    std::vector<std::int32_t> blocks;
    index_t length = 0;
    bool live = false;
  };

  void check(seq_id id, const char* what) const {
    if (id < 0 || static_cast<std::size_t>(id) >= seqs_.size() ||
        !seqs_[static_cast<std::size_t>(id)].live)
      fail(errc::index, "tfm::infer::paged_kv::", what, ": unknown sequence id ", id,
           " (never created, or released).");
  }

  /// Blocks [first, need) receive the positions length .. length + n - 1.
  void write_range(const seq_state& s, index_t n, index_t& first, index_t& need) const {
    first = s.length / opt_.block_tokens;
    need = n == 0 ? first : blocks_for_tokens(s.length + n, opt_.block_tokens);
  }

  bool exclusive(std::int32_t b) const noexcept {
    const std::size_t i = static_cast<std::size_t>(b);
    return ref_[i] == 1 && serial_[i] == 0;
  }

  /// A block with count 1: from the free list, else the least recently released cached block.
  std::int32_t take_block() {
    std::int32_t b;
    if (!free_.empty()) {
      b = free_.back();
      free_.pop_back();
    } else {
      b = lru_head_;  // the caller checked free_blocks()
      lru_unlink(b);
      uncache(b);
      ++stats_.evictions;
    }
    ref_[static_cast<std::size_t>(b)] = 1;
    return b;
  }

  void unref(std::int32_t b) {
    const std::size_t i = static_cast<std::size_t>(b);
    if (--ref_[i] > 0) return;
    if (serial_[i] != 0)
      lru_push_back(b);
    else
      free_.push_back(b);
  }

  /// Drops the table entries from index `keep` on, last first.
  void drop_blocks(seq_state& s, index_t keep) {
    while (static_cast<index_t>(s.blocks.size()) > keep) {
      unref(s.blocks.back());
      s.blocks.pop_back();
    }
  }

  /// Copies block `from` to block `to` in every layer and kv head.
  void copy_block(std::int32_t from, std::int32_t to) {
    const std::size_t B = static_cast<std::size_t>(opt_.block_tokens);
    for (std::size_t l = 0; l < static_cast<std::size_t>(L_); ++l)
      for (index_t g = 0; g < G_; ++g) {
        const std::size_t f = static_cast<std::size_t>(g * opt_.blocks + from) * B;
        const std::size_t t = static_cast<std::size_t>(g * opt_.blocks + to) * B;
        for (store_type* st : {&k_[l], &v_[l]}) {
          std::byte* base = reinterpret_cast<std::byte*>(st->data());
          std::memcpy(base + t * row_, base + f * row_, B * row_);
        }
        if (opt_.type == kv_type::int8)
          for (store_type* st : {&ks_[l], &vs_[l]})
            std::memcpy(st->data() + t, st->data() + f, B * sizeof(float));
      }
  }

  // -- prefix cache internals --

  std::uint64_t chain_hash(std::uint64_t parent, std::span<const std::int32_t> blk) const {
    std::uint64_t h = paged_detail::mix64(parent);
    for (std::int32_t t : blk)
      h = paged_detail::mix64(
          h ^ (static_cast<std::uint64_t>(static_cast<std::uint32_t>(t)) + 0x9e3779b97f4a7c15ull));
    return h & hash_mask_;
  }

  std::span<const std::int32_t> cached_tokens(std::int32_t b) const {
    return std::span<const std::int32_t>(tokens_).subspan(
        static_cast<std::size_t>(b) * static_cast<std::size_t>(opt_.block_tokens),
        static_cast<std::size_t>(opt_.block_tokens));
  }
  bool same_tokens(std::int32_t b, std::span<const std::int32_t> blk) const {
    const auto c = cached_tokens(b);
    return std::equal(c.begin(), c.end(), blk.begin(), blk.end());
  }

  /// Calls on_hit(block) for each cached block continuing prompt's prefix, from the first.
  template <class F>
  void walk_prefix(std::span<const std::int32_t> prompt, F&& on_hit) const {
    const index_t B = opt_.block_tokens;
    const index_t max_blocks = prompt.empty() ? 0 : (static_cast<index_t>(prompt.size()) - 1) / B;
    std::uint64_t h = hash_seed, parent = 0;
    for (index_t i = 0; i < max_blocks; ++i) {
      const auto blk = prompt.subspan(static_cast<std::size_t>(i * B), static_cast<std::size_t>(B));
      h = chain_hash(h, blk);
      const std::int32_t b = find(h, parent, blk);
      if (b < 0) return;
      on_hit(b);
      parent = serial_[static_cast<std::size_t>(b)];
    }
  }

  std::size_t home(std::uint64_t h) const noexcept {
    return static_cast<std::size_t>(paged_detail::mix64(h)) & (table_.size() - 1);
  }

  std::int32_t find(std::uint64_t h, std::uint64_t parent,
                    std::span<const std::int32_t> blk) const {
    const std::size_t mask = table_.size() - 1;
    for (std::size_t i = home(h);; i = (i + 1) & mask) {
      const std::int32_t b = table_[i];
      if (b < 0) return -1;
      const std::size_t bi = static_cast<std::size_t>(b);
      if (hash_[bi] == h && parent_[bi] == parent && same_tokens(b, blk)) return b;
    }
  }

  void insert(std::int32_t b) {
    const std::size_t mask = table_.size() - 1;
    std::size_t i = home(hash_[static_cast<std::size_t>(b)]);
    while (table_[i] >= 0) i = (i + 1) & mask;
    table_[i] = b;
  }

  /// Removes b from the hash table (linear probing, backward-shift deletion: Knuth, TAOCP
  /// vol. 3, 6.4 Algorithm R) and forgets its registration.
  void uncache(std::int32_t b) {
    const std::size_t mask = table_.size() - 1;
    std::size_t i = home(hash_[static_cast<std::size_t>(b)]);
    while (table_[i] != b) i = (i + 1) & mask;
    for (std::size_t j = i;;) {
      j = (j + 1) & mask;
      if (table_[j] < 0) break;
      const std::size_t k = home(hash_[static_cast<std::size_t>(table_[j])]);
      // move table_[j] to the hole i unless its home lies cyclically in (i, j]
      const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!stays) {
        table_[i] = table_[j];
        i = j;
      }
    }
    table_[i] = -1;
    serial_[static_cast<std::size_t>(b)] = 0;
    --cached_;
  }

  void lru_push_back(std::int32_t b) {
    const std::size_t i = static_cast<std::size_t>(b);
    prev_[i] = lru_tail_;
    next_[i] = -1;
    if (lru_tail_ >= 0)
      next_[static_cast<std::size_t>(lru_tail_)] = b;
    else
      lru_head_ = b;
    lru_tail_ = b;
    ++lru_size_;
  }
  void lru_unlink(std::int32_t b) {
    const std::size_t i = static_cast<std::size_t>(b);
    if (prev_[i] >= 0)
      next_[static_cast<std::size_t>(prev_[i])] = next_[i];
    else
      lru_head_ = next_[i];
    if (next_[i] >= 0)
      prev_[static_cast<std::size_t>(next_[i])] = prev_[i];
    else
      lru_tail_ = prev_[i];
    prev_[i] = next_[i] = -1;
    --lru_size_;
  }

  paged_kv_options opt_;
  index_t L_ = 0, G_ = 0, D_ = 0;
  std::size_t row_ = 0;
  std::vector<store_type> k_, v_, ks_, vs_;  // per layer: rows (kv head, block, slot)
  // per block
  std::vector<index_t> ref_;
  std::vector<std::uint64_t> serial_;      // registration serial in the prefix cache, 0: not cached
  std::vector<std::uint64_t> parent_;      // serial of the parent block (0: the prompt's start)
  std::vector<std::uint64_t> hash_;        // chained prefix hash (masked by hash_bits)
  std::vector<std::int32_t> prev_, next_;  // LRU list of cached blocks with count 0
  std::vector<std::int32_t> tokens_;       // (blocks, block_tokens): a cached block's tokens
  std::vector<std::int32_t> free_;         // uncached blocks with count 0 (a stack)
  std::vector<std::int32_t> table_;        // open addressing, -1 empty
  std::uint64_t hash_mask_ = ~std::uint64_t{0}, next_serial_ = 0;
  std::int32_t lru_head_ = -1, lru_tail_ = -1;
  index_t lru_size_ = 0, cached_ = 0, live_ = 0;
  std::vector<seq_state> seqs_;
  std::vector<seq_id> free_ids_;
  paged_kv_stats stats_;
};

/// paged_attention of `layer` of kv for the batch qs (built with kv.query): forwards to the
/// backend's kernel over kv.layer(layer) (include backend/cpu/paged_attention.hpp for cpu).
template <class Backend>
void paged_attention(Backend be, const paged_kv& kv, index_t layer, index_t n_head, double scale,
                     std::span<const paged_query> qs, float* scratch) {
  paged_attention(be, kv.layer(layer), n_head, scale, qs, scratch);
}

/// Floats of scratch paged_attention needs for the batch qs (any layer).
inline index_t paged_attention_scratch(const paged_kv& kv, index_t n_head,
                                       std::span<const paged_query> qs) {
  return ::tfm::paged_attention_scratch(kv.layer(0), n_head, qs);
}

/// An upper bound of the scratch of any batch of at most `seqs` queries whose contexts
/// (pos + n) sum to at most `context_tokens`.
inline index_t paged_attention_scratch(const paged_kv& kv, index_t n_head, index_t seqs,
                                       index_t context_tokens) {
  return ::tfm::paged_attention_scratch(kv.layer(0), n_head, seqs, context_tokens);
}

}  // namespace infer
TFM_END_NAMESPACE
