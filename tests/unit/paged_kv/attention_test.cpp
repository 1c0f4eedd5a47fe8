// Paged attention (backend/{reference,cpu}/paged_attention.hpp) against the contiguous cache's
// cached_attention (infer/kv_store.hpp, backend/{reference,cpu}/decoder.hpp) on the same rows:
//   - decode: cpu paged == the contiguous decode kernel kv_decode bitwise for f32 / f16 / q8_0 /
//     int8 (== cached_attention(cpu) bitwise for the quantized types; f32 there uses a scalar
//     exp: NMSE), block sizes 1, 16, 32, GQA and MHA, a head dimension that is not a multiple of
//     the SIMD width; reference paged == reference contiguous bitwise; cpu vs reference within
//     TESTING.md's attention NMSE;
//   - chunked prefill split at random == row-by-row decode (bitwise), == contiguous cpu prefill
//     (the flash kernel) and the reference within NMSE;
//   - a sequence's rows are bitwise the same alone, in a batch, and at 1 or 2 threads;
//   - the stored bytes equal kv_store's for every type; bad arguments.
#include "paged_test_util.hpp"

#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/cpu/paged_attention.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/decoder.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

using namespace tfm;
using namespace paged_test;
using infer::paged_kv;
using infer::paged_kv_options;

namespace {

constexpr kv_type all_types[] = {kv_type::f32, kv_type::f16, kv_type::q8_0, kv_type::int8};

struct geometry {
  index_t H, G, D;
};

/// Contiguous attention of rows t < T at positions pos0 + t over `store` (layer l).
template <class Backend>
std::vector<float> contiguous_attention(Backend be, const infer::kv_store& store, index_t l,
                                        const geometry& g, index_t pos0, index_t T,
                                        const float* q) {
  const cached_attention_geometry geo{
      T, g.H, g.G, g.D, store.capacity(), pos0, 1.0 / std::sqrt(static_cast<double>(g.D))};
  std::vector<float> o(static_cast<std::size_t>(T * g.H * g.D));
  std::vector<float> s(static_cast<std::size_t>(cached_attention_scratch(geo, store.type())));
  cached_attention(be, geo, q, store.layer(l), o.data(), s.data());
  return o;
}

/// The contiguous decode kernel (cpu_kernels::kv_decode, any type) at position pos.
std::vector<float> decode_kernel(const infer::kv_store& store, index_t l, const geometry& g,
                                 index_t pos, const float* q) {
  const cached_attention_geometry geo{
      1, g.H, g.G, g.D, store.capacity(), pos, 1.0 / std::sqrt(static_cast<double>(g.D))};
  std::vector<float> o(static_cast<std::size_t>(g.H * g.D));
  std::vector<float> s(static_cast<std::size_t>(g.H * store.capacity() + g.G * g.D));
  cpu_kernels::kv_decode(geo, q, store.layer(l), o.data(), s.data(), g.H * store.capacity());
  return o;
}

/// Paged attention of a batch; outs[i] receives query i's rows.
template <class Backend>
void paged(Backend be, const paged_kv& kv, index_t l, const geometry& g,
           std::span<const paged_query> qs) {
  std::vector<float> s(static_cast<std::size_t>(paged_attention_scratch(kv.layer(l), g.H, qs)) + 1,
                       -7.0f);
  paged_attention(be, kv.layer(l), g.H, 1.0 / std::sqrt(static_cast<double>(g.D)), qs, s.data());
}

}  // namespace

TEST_CASE("paged_attention decode: bitwise the contiguous kernel, every type and block size") {
  auto rng = tfm_test::rng(0x9a6e);
  const index_t lens[] = {1, 5, 16, 17, 33, 100};
  const index_t n_seq = sizeof lens / sizeof lens[0], L = 2;
  double worst_ref = 0;
  for (const geometry g :
       {geometry{6, 2, 64}, geometry{4, 4, 40}, geometry{8, 1, 32}, geometry{4, 2, 160}})
    for (kv_type t : all_types) {
      if (t == kv_type::q8_0 && g.D % 32 != 0) continue;
      for (index_t bt : {1, 16, 32}) {
        CAPTURE(infer::kv_type_name(t));
        CAPTURE(bt);
        CAPTURE(g.H);
        CAPTURE(g.D);
        paged_kv kv(L, g.G, g.D, paged_kv_options{bt, 2 * 200 / bt + 16, t});
        std::vector<rows> data;
        std::vector<paged_kv::seq_id> ids;
        for (index_t n : lens) {
          data.push_back(random_rows(rng, L, n, g.G * g.D));
          ids.push_back(kv.create());
          fill_chunked(kv, ids.back(), data.back(), rng, 2 * bt + 3);
        }
        const index_t HD = g.H * g.D;
        const std::vector<float> q = normal_rows(rng, n_seq, HD);
        std::vector<float> out(static_cast<std::size_t>(n_seq * HD), 9.0f), outr(out);
        std::vector<paged_query> qs, qr;
        for (index_t i = 0; i < n_seq; ++i) {
          const index_t pos = lens[i] - 1;
          qs.push_back(kv.query(ids[static_cast<std::size_t>(i)], pos, 1, q.data() + i * HD, HD,
                                out.data() + i * HD, HD));
          qr.push_back(kv.query(ids[static_cast<std::size_t>(i)], pos, 1, q.data() + i * HD, HD,
                                outr.data() + i * HD, HD));
        }
        paged(cpu{}, kv, 1, g, qs);
        paged(reference{}, kv, 1, g, qr);
        for (index_t i = 0; i < n_seq; ++i) {
          const infer::kv_store st = contiguous(data[static_cast<std::size_t>(i)], g.G, g.D, t);
          const std::vector<float> want = decode_kernel(st, 1, g, lens[i] - 1, q.data() + i * HD);
          const std::vector<float> cpu_entry =
              contiguous_attention(cpu{}, st, 1, g, lens[i] - 1, 1, q.data() + i * HD);
          const std::vector<float> want_ref =
              contiguous_attention(reference{}, st, 1, g, lens[i] - 1, 1, q.data() + i * HD);
          const std::vector<float> got(out.begin() + i * HD, out.begin() + (i + 1) * HD);
          const std::vector<float> got_ref(outr.begin() + i * HD, outr.begin() + (i + 1) * HD);
          CHECK(tfm_test::bitwise_diff(got, want) == "");
          if (t != kv_type::f32)  // cached_attention(cpu) decodes with kv_decode
            CHECK(tfm_test::bitwise_diff(got, cpu_entry) == "");
          else  // with attend_row: a scalar exp
            CHECK(tfm_test::nmse(got, cpu_entry) <= 1e-10);
          CHECK(tfm_test::bitwise_diff(got_ref, want_ref) == "");
          const double e = tfm_test::nmse(got, want_ref);
          worst_ref = std::max(worst_ref, e);
          CHECK(e <= 5e-4);
        }
      }
    }
  MESSAGE("decode: cpu paged vs reference, worst NMSE " << worst_ref);
}

TEST_CASE("paged_attention chunked prefill: any split == row by row, ~ contiguous prefill") {
  auto rng = tfm_test::rng(0xc4a2);
  const geometry g{6, 2, 64};
  const index_t L = 2, HD = g.H * g.D;
  const index_t lens[] = {70, 9, 41};
  double worst_flash = 0, worst_ref = 0;
  for (kv_type t : all_types)
    for (index_t bt : {1, 16, 32}) {
      CAPTURE(infer::kv_type_name(t));
      CAPTURE(bt);
      // three runs over the same rows: two random splits (max chunk 23 and 5) and one row at a
      // time; in each, the three sequences advance together, one chunk each per batch call
      std::vector<rows> data;
      std::vector<std::vector<float>> qrows;
      for (index_t n : lens) {
        data.push_back(random_rows(rng, L, n, g.G * g.D));
        qrows.push_back(normal_rows(rng, n, HD));
      }
      std::vector<std::vector<std::vector<float>>> results;  // [run][seq] (len, HD)
      for (index_t max_chunk : {23, 5, 1}) {
        paged_kv kv(L, g.G, g.D, paged_kv_options{bt, 3 * (70 / bt + 2), t});
        std::vector<paged_kv::seq_id> ids;
        std::vector<std::vector<float>> outs;
        for (index_t n : lens) {
          ids.push_back(kv.create());
          outs.emplace_back(static_cast<std::size_t>(n * HD), 5.0f);
        }
        for (bool busy = true; busy;) {
          busy = false;
          std::vector<paged_query> qs;
          std::vector<index_t> chunk(3, 0);
          for (std::size_t i = 0; i < 3; ++i) {
            const index_t p = kv.length(ids[i]), left = lens[i] - p;
            if (left == 0) continue;
            busy = true;
            chunk[i] = std::min(left, std::uniform_int_distribution<index_t>(1, max_chunk)(rng));
            REQUIRE(kv.reserve(ids[i], chunk[i]));
            for (index_t l = 0; l < L; ++l)
              kv.write(l, ids[i], p, chunk[i], data[i].k_at(l, p), data[i].v_at(l, p), g.G * g.D);
            qs.push_back(kv.query(ids[i], p, chunk[i], qrows[i].data() + p * HD, HD,
                                  outs[i].data() + p * HD, HD));
          }
          if (!busy) break;
          paged(cpu{}, kv, 1, g, qs);
          for (std::size_t i = 0; i < 3; ++i) kv.commit(ids[i], chunk[i]);
        }
        results.push_back(outs);
      }
      for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(tfm_test::bitwise_diff(results[0][i], results[2][i]) == "");
        CHECK(tfm_test::bitwise_diff(results[1][i], results[2][i]) == "");
        const infer::kv_store st = contiguous(data[i], g.G, g.D, t);
        const auto flash = contiguous_attention(cpu{}, st, 1, g, 0, lens[i], qrows[i].data());
        const auto ref = contiguous_attention(reference{}, st, 1, g, 0, lens[i], qrows[i].data());
        const double ef = tfm_test::nmse(results[0][i], flash);
        const double er = tfm_test::nmse(results[0][i], ref);
        worst_flash = std::max(worst_flash, ef);
        worst_ref = std::max(worst_ref, er);
        CHECK(ef <= 5e-4);
        CHECK(er <= 5e-4);
      }
    }
  MESSAGE("prefill: worst NMSE vs contiguous flash " << worst_flash << ", vs reference "
                                                     << worst_ref);
}

TEST_CASE("paged_attention: a sequence's rows do not depend on the batch or the thread count") {
  auto rng = tfm_test::rng(0x7b1d);
  const geometry g{9, 3, 64};
  const index_t L = 1, HD = g.H * g.D;
  const index_t lens[] = {300, 2, 47, 128, 129};
  paged_kv kv(L, g.G, g.D, paged_kv_options{16, 64, kv_type::f32});
  std::vector<paged_kv::seq_id> ids;
  for (index_t n : lens) {
    ids.push_back(kv.create());
    fill_chunked(kv, ids.back(), random_rows(rng, L, n, g.G * g.D), rng, 40);
  }
  // seq 0: decode row; seq 3: a 20-row chunk at the end (positions 108 .. 127); others decode
  const std::vector<float> q = normal_rows(rng, 20 * 5, HD);
  auto run = [&](const std::vector<std::size_t>& which, int threads) {
    thread_scope ts(threads);
    std::vector<float> out(q.size(), 0.0f);
    std::vector<paged_query> qs;
    for (std::size_t i : which) {
      const index_t n = i == 3 ? 20 : 1, pos = lens[i] - n;
      qs.push_back(
          kv.query(ids[i], pos, n, q.data() + i * 20 * HD, HD, out.data() + i * 20 * HD, HD));
    }
    paged(cpu{}, kv, 0, g, qs);
    return out;
  };
  const auto all2 = run({0, 1, 2, 3, 4}, 2), all1 = run({0, 1, 2, 3, 4}, 1);
  {  // a query of no rows in the batch computes and writes nothing
    thread_scope ts(2);
    std::vector<float> out(q.size(), 0.0f);
    std::vector<paged_query> qs;
    qs.push_back(kv.query(ids[1], 1, 0, q.data(), HD, out.data() + 20 * HD, HD));
    qs.push_back(kv.query(ids[0], lens[0] - 1, 1, q.data(), HD, out.data(), HD));
    paged(cpu{}, kv, 0, g, qs);
    const std::vector<float> a(out.begin(), out.begin() + HD), b(all2.begin(), all2.begin() + HD);
    CHECK(tfm_test::bitwise_diff(a, b) == "");
    CHECK(
        std::all_of(out.begin() + 20 * HD, out.begin() + 40 * HD, [](float x) { return x == 0; }));
  }
  CHECK(tfm_test::bitwise_diff(all1, all2) == "");
  for (std::size_t i = 0; i < 5; ++i) {
    CAPTURE(i);
    const auto alone = run({i}, 2);
    const std::vector<float> a(alone.begin() + static_cast<index_t>(i) * 20 * HD,
                               alone.begin() + static_cast<index_t>(i + 1) * 20 * HD);
    const std::vector<float> b(all2.begin() + static_cast<index_t>(i) * 20 * HD,
                               all2.begin() + static_cast<index_t>(i + 1) * 20 * HD);
    CHECK(tfm_test::bitwise_diff(a, b) == "");
  }
  const auto reversed = run({4, 3, 2, 1, 0}, 2);
  CHECK(tfm_test::bitwise_diff(reversed, all2) == "");
}

TEST_CASE("paged_kv: stored bytes equal kv_store's for every type") {
  auto rng = tfm_test::rng(0x51e5);
  const index_t G = 2, D = 64, n = 37, L = 2;
  const rows r = random_rows(rng, L, n, G * D);
  for (kv_type t : all_types)
    for (index_t bt : {1, 16, 32}) {
      CAPTURE(infer::kv_type_name(t));
      CAPTURE(bt);
      paged_kv kv(L, G, D, paged_kv_options{bt, 64, t});
      const auto s = kv.create();
      fill_chunked(kv, s, r, rng, 11);
      const infer::kv_store st = contiguous(r, G, D, t);
      const std::size_t rb = kv_row_bytes(t, D);
      bool same = true;
      for (index_t l = 0; l < L; ++l)
        for (int which = 0; which < 2; ++which)
          for (index_t p = 0; p < n; ++p)
            for (index_t g = 0; g < G; ++g) {
              const kv_layer_view lv = st.layer(l);
              const std::byte* c =
                  (which == 0 ? lv.k : lv.v) + static_cast<std::size_t>(g * n + p) * rb;
              const auto got = stored_row(kv, s, l, which, p, g);
              same = same && std::memcmp(got.data(), c, rb) == 0;
              if (t == kv_type::int8) {
                const paged_layer_view pv = kv.layer(l);
                const index_t row = paged_detail::row_of(pv, kv.block_table(s), g, p);
                const float ps = (which == 0 ? pv.k_scale : pv.v_scale)[row];
                const float cs = (which == 0 ? lv.k_scale : lv.v_scale)[g * n + p];
                same = same && ps == cs;
              }
            }
      CHECK(same);
    }
}

TEST_CASE("paged_attention and paged_kv: bad arguments give clear errors") {
  paged_kv kv(2, 2, 64, paged_kv_options{4, 8, kv_type::f32});
  const auto s = kv.create();
  std::vector<float> row(2 * 64 * 8, 0.5f), q(4 * 64 * 8, 0.25f), o(q.size());
  REQUIRE(kv.reserve(s, 5));                                                         // room 8
  CHECK_THROWS_AS(kv.write(0, s, 6, 3, row.data(), row.data(), 128), index_error);   // past room
  CHECK_THROWS_AS(kv.write(2, s, 0, 1, row.data(), row.data(), 128), index_error);   // layer
  CHECK_THROWS_AS(kv.write(0, 77, 0, 1, row.data(), row.data(), 128), index_error);  // seq
  CHECK_THROWS_AS(kv.write(0, s, 0, 1, row.data(), row.data(), 100), value_error);   // ld
  kv.write(0, s, 0, 5, row.data(), row.data(), 128);
  kv.write(1, s, 0, 5, row.data(), row.data(), 128);
  kv.commit(s, 5);
  CHECK_THROWS_AS(kv.write(0, s, 4, 1, row.data(), row.data(), 128), index_error);  // < length
  CHECK_THROWS_AS(kv.commit(s, 4), index_error);                                    // past room
  CHECK_THROWS_AS(kv.query(s, 6, 3, q.data(), 256, o.data(), 256), index_error);
  const index_t huge = std::numeric_limits<index_t>::max();
  CHECK_THROWS_AS(kv.query(s, 4, huge, q.data(), 256, o.data(), 256), index_error);
  CHECK_THROWS_AS(kv.write(0, s, 5, huge, row.data(), row.data(), 128), index_error);
  CHECK_THROWS_AS(kv.commit(s, huge), index_error);
  CHECK_THROWS_AS(kv.reserve(s, -1), value_error);
  CHECK_THROWS_AS(kv.length(-1), index_error);
  const auto f = kv.fork(s);  // shares the partial block 1: writing needs reserve() first
  CHECK_THROWS_AS(kv.write(0, f, 5, 1, row.data(), row.data(), 128), value_error);
  kv.release(f);
  CHECK_THROWS_AS(kv.length(f), index_error);  // released
  CHECK_THROWS_AS(kv.release(f), index_error);

  // the kernels check the geometry and the block tables
  const paged_query good = kv.query(s, 4, 1, q.data(), 256, o.data(), 256);
  std::vector<float> scratch(4096);
  CHECK_THROWS_AS(
      paged_attention(cpu{}, kv.layer(0), 3, 0.125, std::span(&good, 1), scratch.data()),
      shape_error);  // 3 heads over 2 kv heads
  const std::int32_t bad_table[] = {0, 99};
  paged_query bad = good;
  bad.blocks = bad_table;
  CHECK_THROWS_AS(paged_attention(cpu{}, kv.layer(0), 4, 0.125, std::span(&bad, 1), scratch.data()),
                  index_error);
  bad = good;
  bad.pos = 8;  // reads past its 2-block table
  CHECK_THROWS_AS(
      paged_attention(reference{}, kv.layer(0), 4, 0.125, std::span(&bad, 1), scratch.data()),
      index_error);
  bad = good;
  bad.n = huge;
  CHECK_THROWS_AS(paged_attention(cpu{}, kv.layer(0), 4, 0.125, std::span(&bad, 1), scratch.data()),
                  index_error);
  bad = good;
  bad.ldq = 100;
  CHECK_THROWS_AS(paged_attention(cpu{}, kv.layer(0), 4, 0.125, std::span(&bad, 1), scratch.data()),
                  shape_error);
  CHECK_THROWS_AS(paged_kv(2, 2, 40, paged_kv_options{16, 8, kv_type::q8_0}), value_error);
  CHECK_THROWS_AS(paged_kv(2, 2, 64, paged_kv_options{16, 0, kv_type::f32}), value_error);
  CHECK_THROWS_AS(paged_kv(2, 2, 64, paged_kv_options{0, 8, kv_type::f32}), value_error);
  CHECK_THROWS_AS(kv.layer(2), index_error);
}

TEST_CASE("paged_attention decode timing: 32 sequences x 256 positions vs contiguous" *
          doctest::skip()) {
  // Each round times the paged batch call and the 32 contiguous calls (cached_attention(cpu) on
  // 32 kv_stores) back to back, so both see the same machine load; the best round counts. One
  // thread: thread CPU time (robust to a loaded machine); all threads: wall time.
  auto rng = tfm_test::rng(0x71e);
  const geometry g{9, 3, 64};  // SmolLM2-135M's attention
  const index_t n_seq = 32, len = 256, HD = g.H * g.D, reps = 20;
  double load = -1;
  if (std::ifstream f("/proc/loadavg"); f) f >> load;
  for (kv_type t : all_types) {
    paged_kv kv(1, g.G, g.D, paged_kv_options{16, n_seq * len / 16 + 8, t});
    std::vector<infer::kv_store> stores;
    std::vector<paged_kv::seq_id> ids;
    // blocks handed out round-robin, 16 positions at a time, as decode steps of a batch do:
    // each sequence's blocks are scattered over the pool
    for (index_t i = 0; i < n_seq; ++i) ids.push_back(kv.create());
    for (index_t p = 16; p <= len; p += 16)
      for (const auto id : ids) REQUIRE(kv.reserve(id, p));
    for (index_t i = 0; i < n_seq; ++i) {
      const rows r = random_rows(rng, 1, len, g.G * g.D);
      append(kv, ids[static_cast<std::size_t>(i)], r, len);
      stores.push_back(contiguous(r, g.G, g.D, t));
    }
    const std::vector<float> q = normal_rows(rng, n_seq, HD);
    std::vector<float> o(q.size());
    std::vector<paged_query> qs;
    for (index_t i = 0; i < n_seq; ++i)
      qs.push_back(kv.query(ids[static_cast<std::size_t>(i)], len - 1, 1, q.data() + i * HD, HD,
                            o.data() + i * HD, HD));
    std::vector<float> ps(static_cast<std::size_t>(paged_attention_scratch(kv.layer(0), g.H, qs)));
    const cached_attention_geometry geo{1, g.H, g.G, g.D, len, len - 1, 0.125};
    std::vector<float> cs(static_cast<std::size_t>(cached_attention_scratch(geo, t)));
    auto run_paged = [&] { paged_attention(cpu{}, kv.layer(0), g.H, 0.125, qs, ps.data()); };
    auto run_contiguous = [&] {
      for (index_t i = 0; i < n_seq; ++i)
        cached_attention(cpu{}, geo, q.data() + i * HD,
                         stores[static_cast<std::size_t>(i)].layer(0), o.data() + i * HD,
                         cs.data());
    };
    for (int threads : {1, num_threads()}) {
      thread_scope ts(threads);
      auto now = [&] {
        timespec tv{};
        clock_gettime(threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &tv);
        return static_cast<double>(tv.tv_sec) + 1e-9 * static_cast<double>(tv.tv_nsec);
      };
      double tp = 1e30, tc = 1e30;
      for (int round = 0; round < 15; ++round) {
        double t0 = now();
        for (index_t r = 0; r < reps; ++r) run_paged();
        double t1 = now();
        tp = std::min(tp, (t1 - t0) / reps);
        t0 = now();
        for (index_t r = 0; r < reps; ++r) run_contiguous();
        t1 = now();
        tc = std::min(tc, (t1 - t0) / reps);
      }
      const std::string clock = threads == 1 ? " (cpu time)" : " (wall)";
      MESSAGE(infer::kv_type_name(t)
              << " threads " << threads << clock << ": paged " << tp * 1e6 << " us, contiguous x32 "
              << tc * 1e6 << " us (ratio " << tp / tc << "), load " << load);
    }
  }
  // prefill: one 512-token chunk, f32, against the contiguous flash path
  for (kv_type t : {kv_type::f32, kv_type::q8_0}) {
    const index_t T = 512;
    paged_kv kv(1, g.G, g.D, paged_kv_options{16, T / 16 + 8, t});
    const rows r = random_rows(rng, 1, T, g.G * g.D);
    const auto id = kv.create();
    append(kv, id, r, T);
    const infer::kv_store st = contiguous(r, g.G, g.D, t);
    const std::vector<float> q = normal_rows(rng, T, HD);
    std::vector<float> o(q.size());
    const paged_query qs[] = {kv.query(id, 0, T, q.data(), HD, o.data(), HD)};
    std::vector<float> ps(static_cast<std::size_t>(paged_attention_scratch(kv.layer(0), g.H, qs)));
    const cached_attention_geometry geo{T, g.H, g.G, g.D, T, 0, 0.125};
    std::vector<float> cs(static_cast<std::size_t>(cached_attention_scratch(geo, t)));
    thread_scope ts(1);
    auto now = [] {
      timespec tv{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &tv);
      return static_cast<double>(tv.tv_sec) + 1e-9 * static_cast<double>(tv.tv_nsec);
    };
    double tp = 1e30, tc = 1e30;
    for (int round = 0; round < 7; ++round) {
      double t0 = now();
      paged_attention(cpu{}, kv.layer(0), g.H, 0.125, qs, ps.data());
      double t1 = now();
      tp = std::min(tp, t1 - t0);
      t0 = now();
      cached_attention(cpu{}, geo, q.data(), st.layer(0), o.data(), cs.data());
      t1 = now();
      tc = std::min(tc, t1 - t0);
    }
    MESSAGE(infer::kv_type_name(t)
            << " prefill 512 threads 1 (cpu time): paged " << tp * 1e3 << " ms, contiguous "
            << tc * 1e3 << " ms (ratio " << tp / tc << "), load " << load);
  }
}
