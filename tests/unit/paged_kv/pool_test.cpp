// The block pool of infer::paged_kv: accounting (used / free / bytes), reserve() failing with
// nothing changed, fork with reference counts and copy-on-write (a write after fork leaves the
// parent's rows intact), truncate, and random operation sequences (create + attach_prefix,
// extend, fork, truncate, publish, release, clear) checked after every step against a shadow
// model that knows what every position must hold, with the pool's invariants
// (check_invariants: counts == table entries, every block on exactly one list) and no leak at the
// end. Row values are a function of the token prefix, so a prefix-cache hit must deliver exactly
// the rows a fresh computation writes (with hash_bits 0 and 2 every block's hash collides).
#include "paged_test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace tfm;
using namespace paged_test;
using infer::paged_kv;
using infer::paged_kv_options;

TEST_CASE("paged_kv pool: accounting, reserve() false changes nothing, sizes") {
  paged_kv kv(2, 1, 4, paged_kv_options{4, 6, kv_type::f32});
  CHECK(kv.total_blocks() == 6);
  CHECK(kv.free_blocks() == 6);
  CHECK(kv.bytes_per_block() == 2 * 2 * 1 * 4 * 4 * 4);
  CHECK(kv.bytes() == 6 * kv.bytes_per_block());
  CHECK(kv.bytes_per_token() == 2 * 2 * 1 * 4 * 4);
  CHECK(paged_kv::blocks_for_tokens(17, 4) == 5);
  CHECK(paged_kv::blocks_for_bytes(1000, 2, 1, 4, paged_kv_options{4, 1, kv_type::f32}) == 3);
  CHECK(paged_kv::bytes_per_block(2, 1, 4, paged_kv_options{4, 1, kv_type::int8}) ==
        2 * 2 * 4 * (4 + 4));
  const auto s = kv.create();
  CHECK(kv.sequences() == 1);
  CHECK(kv.length(s) == 0);
  CHECK(kv.room(s) == 0);
  CHECK(kv.blocks_needed(s, 5) == 2);
  REQUIRE(kv.reserve(s, 5));
  CHECK(kv.used_blocks() == 2);
  CHECK(kv.room(s) == 8);
  CHECK(kv.reserve(s, 3));  // fits the room already
  CHECK(kv.used_blocks() == 2);
  const std::vector<std::int32_t> table(kv.block_table(s).begin(), kv.block_table(s).end());
  CHECK_FALSE(kv.reserve(s, 100));                                  // 25 blocks > 6
  CHECK_FALSE(kv.reserve(s, std::numeric_limits<index_t>::max()));  // no overflow
  CHECK(kv.blocks_needed(s, std::numeric_limits<index_t>::max()) > kv.total_blocks());
  CHECK(kv.used_blocks() == 2);
  CHECK(kv.room(s) == 8);
  CHECK(std::equal(table.begin(), table.end(), kv.block_table(s).begin(), kv.block_table(s).end()));
  const auto t = kv.create();
  REQUIRE(kv.reserve(t, 16));
  CHECK(kv.free_blocks() == 0);
  CHECK(kv.used_blocks() == 6);
  kv.commit(t, 16);
  CHECK_FALSE(kv.reserve(t, 1));
  CHECK(kv.reserve(t, 0));
  kv.check_invariants();
  kv.truncate(t, 5);  // keeps 2 blocks
  CHECK(kv.room(t) == 8);
  CHECK(kv.free_blocks() == 2);
  kv.release(t);
  kv.release(s);
  CHECK(kv.free_blocks() == 6);
  CHECK(kv.sequences() == 0);
  for (std::int32_t b = 0; b < 6; ++b) CHECK(kv.ref_count(b) == 0);
  kv.check_invariants();
  const auto u = kv.create();  // ids are reused
  CHECK((u == s || u == t));
}

TEST_CASE("paged_kv fork: shared blocks, copy-on-write keeps the parent's rows") {
  auto rng = tfm_test::rng(0xf04c);
  const index_t G = 2, D = 8, L = 2, W = G * D;
  paged_kv kv(L, G, D, paged_kv_options{4, 10, kv_type::f32});
  const rows r = random_rows(rng, L, 6, W);
  const auto p = kv.create();
  append(kv, p, r, 6);  // blocks: [0..3] full, [4, 5] partial
  const auto c = kv.fork(p);
  CHECK(kv.length(c) == 6);
  const auto pt = kv.block_table(p);
  const std::vector<std::int32_t> before(pt.begin(), pt.end());
  CHECK(kv.ref_count(before[0]) == 2);
  CHECK(kv.ref_count(before[1]) == 2);
  CHECK(kv.used_blocks() == 2);        // fork takes nothing
  CHECK(kv.blocks_needed(c, 1) == 1);  // the shared partial block is copied
  CHECK(kv.blocks_needed(c, 3) == 2);  // and a new one
  REQUIRE(kv.reserve(c, 1));
  CHECK(kv.stats().cow_copies == 1);
  const auto ct = kv.block_table(c);
  CHECK(ct[0] == before[0]);
  CHECK(ct[1] != before[1]);
  CHECK(kv.ref_count(before[0]) == 2);
  CHECK(kv.ref_count(before[1]) == 1);
  const rows x = random_rows(rng, L, 7, W), y = random_rows(rng, L, 7, W);
  for (index_t l = 0; l < L; ++l) kv.write(l, c, 6, 1, x.k_at(l, 6), x.v_at(l, 6), W);
  kv.commit(c, 1);
  CHECK(kv.blocks_needed(p, 2) == 0);  // the parent's block is its own again
  REQUIRE(kv.reserve(p, 2));
  for (index_t l = 0; l < L; ++l) kv.write(l, p, 6, 1, y.k_at(l, 6), y.v_at(l, 6), W);
  kv.commit(p, 1);
  bool ok = true;
  for (index_t l = 0; l < L; ++l)
    for (index_t g = 0; g < G; ++g)
      for (index_t d = 0; d < D; ++d) {
        for (index_t pos = 0; pos < 6; ++pos) {
          ok = ok && stored_f32(kv, p, l, 0, pos, g, d) == r.k_at(l, pos)[g * D + d];
          ok = ok && stored_f32(kv, c, l, 0, pos, g, d) == r.k_at(l, pos)[g * D + d];
          ok = ok && stored_f32(kv, c, l, 1, pos, g, d) == r.v_at(l, pos)[g * D + d];
        }
        ok = ok && stored_f32(kv, p, l, 0, 6, g, d) == y.k_at(l, 6)[g * D + d];
        ok = ok && stored_f32(kv, c, l, 0, 6, g, d) == x.k_at(l, 6)[g * D + d];
        ok = ok && stored_f32(kv, c, l, 1, 6, g, d) == x.v_at(l, 6)[g * D + d];
      }
  CHECK(ok);
  // a fork at a block boundary copies nothing; a fork of a fork shares with both
  const auto c2 = kv.fork(c);
  kv.truncate(c2, 4);
  CHECK(kv.ref_count(before[0]) == 3);
  CHECK(kv.blocks_needed(c2, 1) == 1);
  REQUIRE(kv.reserve(c2, 1));
  CHECK(kv.stats().cow_copies == 1);
  kv.check_invariants();
  // copy-on-write when the pool is empty: reserve() fails and changes nothing
  const auto hog = kv.create();
  REQUIRE(kv.reserve(hog, 4 * kv.free_blocks()));
  CHECK(kv.free_blocks() == 0);
  const auto c3 = kv.fork(p);
  const std::vector<std::int32_t> t3(kv.block_table(c3).begin(), kv.block_table(c3).end());
  CHECK_FALSE(kv.reserve(c3, 1));
  CHECK(std::equal(t3.begin(), t3.end(), kv.block_table(c3).begin(), kv.block_table(c3).end()));
  CHECK(kv.ref_count(t3[1]) == 2);
  kv.check_invariants();
  for (auto s : {p, c, c2, c3, hog}) kv.release(s);
  CHECK(kv.used_blocks() == 0);
  CHECK(kv.free_blocks() == 10);
  kv.check_invariants();
}

namespace {

/// An independent prefix hash (FNV-1a over the tokens of positions 0 .. p).
std::uint64_t prefix_key(const std::vector<std::int32_t>& tokens, std::size_t p) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i <= p; ++i) {
    h ^= static_cast<std::uint32_t>(tokens[i]);
    h *= 1099511628211ull;
  }
  return h;
}

/// The value a "model" writes at (layer, key/value, kv head, d) for a prefix: a function of the
/// prefix only, as a real model's keys and values are.
float row_value(std::uint64_t key, index_t l, int which, index_t g, index_t d) {
  std::uint64_t z =
      key + static_cast<std::uint64_t>(((l * 2 + which) * 16 + g) * 64 + d) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 31)) * 0xd6e8feb86659fd93ull;
  return static_cast<float>(z >> 40) / 16777216.0f;
}

struct shadow {
  paged_kv::seq_id id;
  std::vector<std::int32_t> tokens;  // == the sequence's positions
};

/// Writes positions [from, tokens.size()) of s (already reserved) and commits them.
void compute(paged_kv& kv, const shadow& s, index_t from) {
  const index_t G = kv.kv_heads(), D = kv.head_dim(), n = static_cast<index_t>(s.tokens.size());
  std::vector<float> k(static_cast<std::size_t>(G * D)), v(k.size());
  for (index_t p = from; p < n; ++p) {
    const std::uint64_t key = prefix_key(s.tokens, static_cast<std::size_t>(p));
    for (index_t l = 0; l < kv.layers(); ++l) {
      for (index_t g = 0; g < G; ++g)
        for (index_t d = 0; d < D; ++d) {
          k[static_cast<std::size_t>(g * D + d)] = row_value(key, l, 0, g, d);
          v[static_cast<std::size_t>(g * D + d)] = row_value(key, l, 1, g, d);
        }
      kv.write(l, s.id, p, 1, k.data(), v.data(), G * D);
    }
  }
  kv.commit(s.id, n - from);
}

/// "" when every position of every live sequence holds the rows of its prefix.
std::string verify(const paged_kv& kv, const std::vector<shadow>& live) {
  for (const shadow& s : live) {
    if (kv.length(s.id) != static_cast<index_t>(s.tokens.size()))
      return "sequence " + std::to_string(s.id) + ": length " + std::to_string(kv.length(s.id)) +
             " != " + std::to_string(s.tokens.size());
    for (std::size_t p = 0; p < s.tokens.size(); ++p) {
      const std::uint64_t key = prefix_key(s.tokens, p);
      for (index_t l = 0; l < kv.layers(); ++l)
        for (int which = 0; which < 2; ++which)
          for (index_t g = 0; g < kv.kv_heads(); ++g)
            for (index_t d = 0; d < kv.head_dim(); ++d)
              if (stored_f32(kv, s.id, l, which, static_cast<index_t>(p), g, d) !=
                  row_value(key, l, which, g, d))
                return "sequence " + std::to_string(s.id) + " position " + std::to_string(p) +
                       " layer " + std::to_string(l) + " holds another prefix's rows";
    }
  }
  return "";
}

}  // namespace

TEST_CASE("paged_kv: random operation sequences against a shadow model, no leaks") {
  const std::uint64_t base = tfm_test::seed();
  std::uint64_t total_hits = 0, total_evictions = 0, total_cow = 0, total_fail = 0;
  for (std::uint64_t it = 0; it < 36; ++it) {
    const std::uint64_t seed = base + it;
    const index_t bt = std::array<index_t, 3>{1, 2, 4}[it % 3];
    const int hash_bits = std::array<int, 3>{64, 2, 0}[(it / 3) % 3];
    CAPTURE(seed);
    CAPTURE(bt);
    CAPTURE(hash_bits);
    std::mt19937_64 rng(seed);
    auto pick = [&](index_t n) { return std::uniform_int_distribution<index_t>(0, n - 1)(rng); };
    paged_kv kv(2, 2, 8, paged_kv_options{bt, 24 / bt + 6, kv_type::f32, hash_bits});
    std::vector<shadow> live;
    auto random_tokens = [&](index_t n) {
      std::vector<std::int32_t> t(static_cast<std::size_t>(n));
      for (auto& x : t) x = static_cast<std::int32_t>(pick(3));
      return t;
    };
    for (int step = 0; step < 250; ++step) {
      CAPTURE(step);
      const index_t op = live.empty() ? 0 : pick(live.size() >= 8 ? 7 : 10);
      const std::size_t who = live.empty() ? 0 : static_cast<std::size_t>(pick(live.size()));
      if (op == 0 || op >= 7) {  // a new request: attach the cached prefix, compute the rest
        shadow s{kv.create(), random_tokens(1 + pick(12))};
        const index_t expect = kv.cached_prefix(s.tokens);
        const index_t reused = kv.attach_prefix(s.id, s.tokens);
        CHECK(reused == expect);
        CHECK(reused % bt == 0);
        CHECK(reused < static_cast<index_t>(s.tokens.size()));
        const index_t need = static_cast<index_t>(s.tokens.size()) - reused;
        if (!kv.reserve(s.id, need)) {
          ++total_fail;
          kv.release(s.id);
        } else {
          compute(kv, s, reused);
          if (pick(2)) kv.publish(s.id, s.tokens);
          live.push_back(s);
        }
      } else if (op == 1) {  // extend
        shadow& s = live[who];
        const index_t k = 1 + pick(5), from = static_cast<index_t>(s.tokens.size());
        const index_t free = kv.free_blocks(), needed = kv.blocks_needed(s.id, k);
        const std::vector<std::int32_t> table(kv.block_table(s.id).begin(),
                                              kv.block_table(s.id).end());
        if (!kv.reserve(s.id, k)) {
          ++total_fail;
          CHECK(needed > free);
          CHECK(kv.free_blocks() == free);
          CHECK(std::equal(table.begin(), table.end(), kv.block_table(s.id).begin(),
                           kv.block_table(s.id).end()));
        } else {
          CHECK(needed <= free);
          const auto more = random_tokens(k);
          s.tokens.insert(s.tokens.end(), more.begin(), more.end());
          compute(kv, s, from);
        }
      } else if (op == 2) {  // fork
        live.push_back(shadow{kv.fork(live[who].id), live[who].tokens});
      } else if (op == 3) {  // truncate
        shadow& s = live[who];
        const index_t n = pick(static_cast<index_t>(s.tokens.size()) + 1);
        kv.truncate(s.id, n);
        s.tokens.resize(static_cast<std::size_t>(n));
      } else if (op == 4) {  // release
        kv.release(live[who].id);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(who));
      } else if (op == 5) {  // publish
        kv.publish(live[who].id, live[who].tokens);
      } else if (pick(4) == 0) {
        kv.clear_prefix_cache();
      }
      REQUIRE_NOTHROW(kv.check_invariants());
      const std::string err = verify(kv, live);
      REQUIRE(err == "");
      REQUIRE(kv.used_blocks() + kv.free_blocks() == kv.total_blocks());
    }
    for (const shadow& s : live) kv.release(s.id);
    CHECK(kv.used_blocks() == 0);
    CHECK(kv.sequences() == 0);
    for (std::int32_t b = 0; b < kv.total_blocks(); ++b) CHECK(kv.ref_count(b) == 0);
    kv.clear_prefix_cache();
    CHECK(kv.cached_blocks() == 0);
    REQUIRE_NOTHROW(kv.check_invariants());
    total_hits += kv.stats().hit_tokens;
    total_evictions += kv.stats().evictions;
    total_cow += kv.stats().cow_copies;
  }
  MESSAGE("36 runs x 250 steps: " << total_hits << " prefix-hit tokens, " << total_evictions
                                  << " evictions, " << total_cow << " copy-on-write copies, "
                                  << total_fail << " reserve() refusals");
  CHECK(total_hits > 0);
  CHECK(total_evictions > 0);
  CHECK(total_cow > 0);
  CHECK(total_fail > 0);
}
