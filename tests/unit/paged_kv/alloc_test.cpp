// A serving loop over infer::paged_kv allocates nothing once prepare() has sized it: decode
// steps (reserve, write, query, paged_attention, commit), chunked prefill, prefix-cache attach and
// publish, fork with copy-on-write, truncate, release and re-create, eviction. Every operator new
// of the test executable is counted (this file replaces the global allocation functions).
#include "paged_test_util.hpp"

#include "typeformer/backend/cpu/paged_attention.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "count_new.hpp"

using namespace tfm;
using namespace paged_test;
using infer::paged_kv;
using infer::paged_kv_options;

TEST_CASE("paged_kv: a serving loop allocates nothing after prepare()") {
  auto rng = tfm_test::rng(0xa110c);
  const index_t L = 2, G = 2, D = 32, H = 4, HD = H * D, n_seq = 4, max_len = 96;
  paged_kv kv(L, G, D, paged_kv_options{8, 40, kv_type::q8_0});  // full at the peak: evicts
  kv.prepare(n_seq + 1, max_len);
  const rows r = random_rows(rng, L, max_len, G * D);
  const std::vector<float> q = normal_rows(rng, n_seq * 16, HD);
  std::vector<float> out(q.size());
  std::vector<paged_query> qs;
  qs.reserve(static_cast<std::size_t>(n_seq));
  std::vector<float> scratch(
      static_cast<std::size_t>(paged_attention_scratch(kv.layer(0), H, n_seq, n_seq * max_len)));
  std::vector<std::int32_t> prompt(32);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int32_t>(i % 7);
  std::vector<paged_kv::seq_id> ids(static_cast<std::size_t>(n_seq));
  // one round: n_seq requests with the same prompt (prefix hits after the first), prefill in
  // chunks of 16, decode to `len`, a fork with copy-on-write, truncate, release
  auto round = [&](index_t len) {
    for (auto& id : ids) {
      id = kv.create();
      kv.attach_prefix(id, prompt);
    }
    for (index_t step = 0;; ++step) {
      qs.clear();
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const index_t p = kv.length(ids[i]);
        if (p >= len) continue;
        const index_t n = p < 32 ? std::min<index_t>(16, 32 - p) : 1;
        REQUIRE(kv.reserve(ids[i], n));
        for (index_t l = 0; l < L; ++l)
          kv.write(l, ids[i], p, n, r.k_at(l, p), r.v_at(l, p), G * D);
        qs.push_back(
            kv.query(ids[i], p, n, q.data() + i * 16 * HD, HD, out.data() + i * 16 * HD, HD));
      }
      if (qs.empty()) break;
      for (index_t l = 0; l < L; ++l)
        paged_attention(cpu{}, kv.layer(l), H, 0.125, qs, scratch.data());
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const index_t p = kv.length(ids[i]);
        if (p >= len) continue;
        kv.commit(ids[i], p < 32 ? std::min<index_t>(16, 32 - p) : 1);
        if (kv.length(ids[i]) == 32) kv.publish(ids[i], prompt);
      }
    }
    const auto f = kv.fork(ids[0]);
    kv.truncate(f, len - 3);
    REQUIRE(kv.reserve(f, 2));  // copy-on-write of the shared partial block
    kv.release(f);
    for (auto id : ids) kv.release(id);
  };
  round(40);  // warm-up: the OpenMP runtime, the prefix cache
  const long before = g_news.load();
  round(max_len);
  round(60);
  kv.clear_prefix_cache();
  round(72);  // no hits: 4 private prompts
  const long news = g_news.load() - before;
  CHECK(news == 0);
  CHECK(kv.stats().hit_tokens > 0);
  CHECK(kv.stats().cow_copies > 0);
  CHECK(kv.stats().evictions > 0);
  CHECK(kv.used_blocks() == 0);
}
