// The prefix cache of infer::paged_kv: hits reuse the blocks of a published prompt (reference
// counts, the rows themselves), only full blocks and at least one token left to compute,
// partial-block handling (no copy-on-write after a hit), statistics, LRU eviction order (a
// released prefix's tail first; a hit refreshes), equal hashes (hash_bits 0) never sharing the
// blocks of different prefixes, duplicates computed concurrently, bad arguments.
#include "paged_test_util.hpp"

#include "typeformer/backend/cpu/paged_attention.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

using namespace tfm;
using namespace paged_test;
using infer::paged_kv;
using infer::paged_kv_options;

namespace {

using tokens_t = std::vector<std::int32_t>;

/// A new sequence for `prompt`: attaches the cached prefix, then writes rows r (a function of
/// nothing but the test's data) for the rest; returns the positions reused.
index_t start(paged_kv& kv, paged_kv::seq_id s, const tokens_t& prompt, const rows& r) {
  const index_t reused = kv.attach_prefix(s, prompt);
  const index_t n = static_cast<index_t>(prompt.size()) - reused;
  REQUIRE(kv.reserve(s, n));
  for (index_t l = 0; l < r.layers; ++l)
    kv.write(l, s, reused, n, r.k_at(l, reused), r.v_at(l, reused), r.width);
  kv.commit(s, n);
  return reused;
}

/// The first n entries of s's block table (all of them when n < 0).
std::vector<std::int32_t> table_of(const paged_kv& kv, paged_kv::seq_id s, index_t n = -1) {
  const auto t = kv.block_table(s);
  return {t.begin(), n < 0 ? t.end() : t.begin() + n};
}

}  // namespace

TEST_CASE("prefix cache: hits share blocks, full blocks only, one token left to compute") {
  auto rng = tfm_test::rng(0x9f1c);
  const index_t L = 2, G = 1, D = 8;
  paged_kv kv(L, G, D, paged_kv_options{4, 16, kv_type::f32});
  const tokens_t prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const rows r = random_rows(rng, L, 12, G * D);
  const auto a = kv.create();
  CHECK(start(kv, a, prompt, r) == 0);  // cold
  kv.publish(a, prompt);
  CHECK(kv.cached_blocks() == 2);  // positions 0..7; the partial block 8..9 is not cached
  CHECK(kv.stats().published_blocks == 2);

  const auto b = kv.create();
  CHECK(kv.cached_prefix(prompt) == 8);
  CHECK(kv.attach_prefix(b, prompt) == 8);
  CHECK(kv.length(b) == 8);
  const auto ta = table_of(kv, a), tb = table_of(kv, b);
  REQUIRE(tb.size() == 2);
  CHECK(tb[0] == ta[0]);
  CHECK(tb[1] == ta[1]);
  CHECK(kv.ref_count(ta[0]) == 2);
  // the rest: a new block, no copy (the hit ends on a block boundary)
  CHECK(kv.blocks_needed(b, 2) == 1);
  REQUIRE(kv.reserve(b, 2));
  CHECK(kv.stats().cow_copies == 0);
  for (index_t l = 0; l < L; ++l) kv.write(l, b, 8, 2, r.k_at(l, 8), r.v_at(l, 8), G * D);
  kv.commit(b, 2);
  bool same = true;
  for (index_t p = 0; p < 10; ++p)
    for (index_t d = 0; d < D; ++d)
      same = same && stored_f32(kv, b, 1, 1, p, 0, d) == r.v_at(1, p)[d];
  CHECK(same);

  // a prompt of exactly 8 tokens reuses one block: at least one token must be computed
  CHECK(kv.cached_prefix(tokens_t(prompt.begin(), prompt.begin() + 8)) == 4);
  CHECK(kv.cached_prefix(tokens_t(prompt.begin(), prompt.begin() + 9)) == 8);
  CHECK(kv.cached_prefix(tokens_t(prompt.begin(), prompt.begin() + 4)) == 0);
  CHECK(kv.cached_prefix(tokens_t{}) == 0);
  tokens_t other = prompt;
  other[5] = 99;  // differs in the second block
  CHECK(kv.cached_prefix(other) == 4);
  other[0] = 99;  // and in the first
  CHECK(kv.cached_prefix(other) == 0);

  const auto& st = kv.stats();
  CHECK(st.lookups == 2);
  CHECK(st.lookup_tokens == 20);
  CHECK(st.hit_tokens == 8);

  // attach only on an empty sequence; publish checks the tokens of cached blocks
  CHECK_THROWS_AS(kv.attach_prefix(b, prompt), value_error);
  CHECK_THROWS_AS(kv.publish(b, other), value_error);
  CHECK_THROWS_AS(kv.attach_prefix(12345, prompt), index_error);

  // generated tokens extend the cache: publish after more positions registers more blocks
  kv.publish(b, prompt);  // idempotent
  CHECK(kv.cached_blocks() == 2);
  kv.release(a);
  kv.release(b);
  CHECK(kv.used_blocks() == 0);
  CHECK(kv.cached_free_blocks() == 2);
  CHECK(kv.free_blocks() == 16);
  kv.check_invariants();
}

TEST_CASE("prefix cache: LRU eviction, a released prefix's tail first, hits refresh") {
  auto rng = tfm_test::rng(0x1e57);
  const index_t L = 1, G = 1, D = 4;
  paged_kv kv(L, G, D, paged_kv_options{2, 8, kv_type::f32});
  const tokens_t x = {1, 1, 2, 2, 3}, y = {4, 4, 5, 5, 6};
  const rows r = random_rows(rng, L, 5, G * D);
  const auto sx = kv.create(), sy = kv.create();
  start(kv, sx, x, r);
  start(kv, sy, y, r);
  kv.publish(sx, x);
  kv.publish(sy, y);
  kv.release(sx);  // LRU: x1, x0
  kv.release(sy);  // LRU: x1, x0, y1, y0
  CHECK(kv.cached_free_blocks() == 4);
  CHECK(kv.free_blocks() == 8);
  // a hit on y's first block refreshes it: LRU x1, x0, y1, then y0 held
  const auto h = kv.create();
  CHECK(kv.attach_prefix(h, tokens_t{4, 4, 9}) == 2);
  kv.release(h);  // LRU: x1, x0, y1, y0
  const auto hog = kv.create();
  REQUIRE(kv.reserve(hog, 2 * 4));  // the 4 never-cached blocks (free list first)
  CHECK(kv.stats().evictions == 0);
  CHECK(kv.cached_prefix(x) == 4);
  REQUIRE(kv.reserve(hog, 2 * 5));  // one more: evicts x's tail
  CHECK(kv.stats().evictions == 1);
  CHECK(kv.cached_prefix(x) == 2);
  CHECK(kv.cached_prefix(y) == 4);
  REQUIRE(kv.reserve(hog, 2 * 6));  // then x's head
  CHECK(kv.cached_prefix(x) == 0);
  CHECK(kv.cached_prefix(y) == 4);
  // y0 refreshed: y1 goes before y0
  const auto hy = kv.create();
  CHECK(kv.attach_prefix(hy, y) == 4);  // holds y0, y1: nothing evictable
  CHECK(kv.free_blocks() == 0);
  CHECK_FALSE(kv.reserve(hog, 2 * 7));
  kv.release(hy);  // LRU: y1, y0
  REQUIRE(kv.reserve(hog, 2 * 7));
  CHECK(kv.cached_prefix(y) == 2);
  CHECK(kv.stats().evictions == 3);
  kv.check_invariants();
  kv.release(hog);
  kv.clear_prefix_cache();
  CHECK(kv.cached_blocks() == 0);
  CHECK(kv.free_blocks() == 8);
  kv.check_invariants();
}

TEST_CASE("prefix cache: equal hashes never share the blocks of different prefixes") {
  auto rng = tfm_test::rng(0xc011);
  const index_t L = 1, G = 1, D = 4;
  // hash_bits 0: every block of every prefix has the same hash
  paged_kv kv(L, G, D, paged_kv_options{2, 32, kv_type::f32, 0});
  const tokens_t p = {1, 2, 3, 4, 5}, q = {7, 8, 3, 4, 5};  // same second block, other first
  const rows rp = random_rows(rng, L, 5, G * D), rq = random_rows(rng, L, 5, G * D);
  const auto sp = kv.create(), sq = kv.create();
  start(kv, sp, p, rp);
  start(kv, sq, q, rq);
  kv.publish(sp, p);
  kv.publish(sq, q);
  CHECK(kv.cached_blocks() == 4);
  const auto a = kv.create(), b = kv.create();
  CHECK(kv.attach_prefix(a, tokens_t{1, 2, 3, 4, 0}) == 4);
  CHECK(kv.attach_prefix(b, tokens_t{7, 8, 3, 4, 0}) == 4);
  CHECK(table_of(kv, a) == table_of(kv, sp, 2));
  CHECK(table_of(kv, b) == table_of(kv, sq, 2));
  CHECK(kv.cached_prefix(tokens_t{9, 9, 3, 4, 0}) == 0);  // second block alone never matches
  CHECK(kv.cached_prefix(tokens_t{1, 2, 3, 9, 0}) == 2);
  // rows read through the hit are the right prefix's
  for (index_t pos = 0; pos < 4; ++pos) {
    CHECK(stored_f32(kv, a, 0, 0, pos, 0, 1) == rp.k_at(0, pos)[1]);
    CHECK(stored_f32(kv, b, 0, 0, pos, 0, 1) == rq.k_at(0, pos)[1]);
  }
  kv.check_invariants();
}

TEST_CASE("prefix cache: the same prompt computed twice at once is cached once") {
  auto rng = tfm_test::rng(0xd0b1);
  paged_kv kv(1, 1, 4, paged_kv_options{2, 16, kv_type::f32});
  const tokens_t p = {3, 1, 4, 1, 5, 9, 2};
  const rows r = random_rows(rng, 1, 7, 4);
  const auto a = kv.create(), b = kv.create();
  CHECK(start(kv, a, p, r) == 0);
  CHECK(start(kv, b, p, r) == 0);  // a has not published yet
  kv.publish(a, p);
  kv.publish(b, p);  // b's blocks stay private; a's serve later lookups
  CHECK(kv.cached_blocks() == 3);
  const auto c = kv.create();
  CHECK(kv.attach_prefix(c, p) == 6);
  CHECK(table_of(kv, c) == table_of(kv, a, 3));
  kv.release(a);
  kv.release(b);  // b's private blocks return to the free list
  kv.release(c);
  CHECK(kv.cached_free_blocks() == 3);
  CHECK(kv.free_blocks() == 16);
  kv.check_invariants();
  // attention through a hit equals attention through the computed blocks
  const auto d = kv.create(), e = kv.create();
  tokens_t longer = p;
  longer.push_back(6);
  const rows r8 = [&] {
    rows x = random_rows(rng, 1, 8, 4);
    for (index_t i = 0; i < 7 * 4; ++i) {
      x.k[static_cast<std::size_t>(i)] = r.k[static_cast<std::size_t>(i)];
      x.v[static_cast<std::size_t>(i)] = r.v[static_cast<std::size_t>(i)];
    }
    return x;
  }();
  CHECK(start(kv, d, longer, r8) == 6);
  append(kv, e, r8, 8);  // computed from scratch, no attach
  std::vector<float> q(4, 0.5f), od(4), oe(4), s(1024);
  const paged_query qs[] = {kv.query(d, 7, 1, q.data(), 4, od.data(), 4),
                            kv.query(e, 7, 1, q.data(), 4, oe.data(), 4)};
  REQUIRE(static_cast<index_t>(s.size()) >= infer::paged_attention_scratch(kv, 1, qs));
  infer::paged_attention(cpu{}, kv, 0, 1, 0.5, qs, s.data());  // the layer-index form
  CHECK(tfm_test::bitwise_diff(od, oe) == "");
}
