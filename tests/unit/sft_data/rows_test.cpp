// Packed rows (train/sft_data.hpp, ROWS / SPLIT AND ORDER) on seeded random examples: every
// assistant target appears exactly once and never crosses a document, segments do not decrease,
// padding is its own segment; best-fit decreasing against a direct O(n^2) transcription of the
// rule; truncation modes; the held-out split independent of order; the shuffled loader.
#include "typeformer/core/random.hpp"
#include "typeformer/train/sft_data.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {

std::vector<sft_example> random_examples(std::uint64_t seed, std::size_t n, index_t T) {
  std::vector<sft_example> ex(n);
  std::uint64_t c = 0;
  for (auto& e : ex) {
    const std::size_t L = 1 + random_u32(seed, c++) % static_cast<std::uint32_t>(T + T / 2);
    for (std::size_t k = 0; k < L; ++k) {
      e.ids.push_back(static_cast<std::int32_t>(random_u32(seed, c++) % 1000));
      e.loss_mask.push_back(random_u32(seed, c++) % 3 != 0 ? 1 : 0);
    }
  }
  return ex;
}

/// Best-fit decreasing as the rule reads: longest first (file order on ties), the row with the
/// least room that fits (earliest on ties), else a new row. Returns the number of rows.
std::size_t naive_bfd_rows(std::vector<std::size_t> len, std::size_t T) {
  std::vector<std::size_t> idx(len.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](auto a, auto b) { return len[a] > len[b]; });
  std::vector<std::size_t> room;
  for (std::size_t i : idx) {
    std::size_t best = room.size();
    for (std::size_t r = 0; r < room.size(); ++r)
      if (room[r] >= len[i] && (best == room.size() || room[r] < room[best])) best = r;
    if (best == room.size()) room.push_back(T);
    room[best] -= len[i];
  }
  return room.size();
}

void check_rows(const std::vector<sft_example>& ex, const sft_rows& rows, const sft_options& o) {
  const index_t T = o.block_size;
  // placements: each kept example once, inside its row, no overlap, in order of offsets
  std::map<index_t, std::vector<sft_placement>> by_row;
  std::set<std::size_t> seen;
  for (const auto& p : rows.placements()) {
    CHECK(seen.insert(p.example).second);
    CHECK(p.offset >= 0);
    CHECK(p.offset + p.length <= T);
    CHECK(p.length == std::min<index_t>(T, static_cast<index_t>(ex[p.example].ids.size())));
    by_row[p.row].push_back(p);
  }
  CHECK(static_cast<index_t>(by_row.size()) == rows.rows());
  std::size_t tokens = 0, assistant = 0, targets = 0;
  for (index_t r = 0; r < rows.rows(); ++r) {
    auto ps = by_row[r];
    std::sort(ps.begin(), ps.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
    const auto ids = rows.ids(r), tg = rows.targets(r), sg = rows.segments(r),
               pos = rows.positions(r);
    index_t at = 0;
    for (std::size_t d = 0; d < ps.size(); ++d) {
      const sft_placement& p = ps[d];
      CHECK(p.offset == at);  // documents are contiguous from the start of the row
      const sft_example& e = ex[p.example];
      for (index_t t = 0; t < p.length; ++t) {
        const auto u = static_cast<std::size_t>(p.offset + t);
        CHECK(ids[u] == e.ids[static_cast<std::size_t>(t)]);
        CHECK(sg[u] == static_cast<std::int32_t>(d));
        CHECK(pos[u] == t);
        const bool want = t + 1 < p.length && e.loss_mask[static_cast<std::size_t>(t + 1)];
        CHECK(tg[u] == (want ? e.ids[static_cast<std::size_t>(t + 1)] : o.ignore_index));
        targets += want;
        assistant += e.loss_mask[static_cast<std::size_t>(t)];
      }
      at += p.length;
      tokens += static_cast<std::size_t>(p.length);
    }
    for (index_t t = at; t < T; ++t) {  // padding: its own segment, no targets
      const auto u = static_cast<std::size_t>(t);
      CHECK(ids[u] == o.pad_id);
      CHECK(tg[u] == o.ignore_index);
      CHECK(sg[u] == static_cast<std::int32_t>(ps.size()));
    }
    for (index_t t = 0; t + 1 < T; ++t) {
      const auto u = static_cast<std::size_t>(t);
      CHECK(sg[u] <= sg[u + 1]);
      if (tg[u] != o.ignore_index) CHECK(sg[u] == sg[u + 1]);  // never across documents
    }
    CHECK(tg[static_cast<std::size_t>(T - 1)] == o.ignore_index);
  }
  // Every assistant token after the first of its (kept, truncated) example is a target once.
  std::size_t expected_targets = 0;
  for (const auto& p : rows.placements())
    for (index_t k = 1; k < p.length; ++k)
      expected_targets += ex[p.example].loss_mask[static_cast<std::size_t>(k)];
  CHECK(targets == expected_targets);
  const sft_stats& s = rows.stats();
  CHECK(s.targets == targets);
  CHECK(s.tokens == tokens);
  CHECK(s.assistant_tokens == assistant);
  CHECK(s.examples == rows.placements().size());
  CHECK(s.packing_efficiency ==
        doctest::Approx(static_cast<double>(tokens) / static_cast<double>(s.rows * T)));
}

}  // namespace

TEST_CASE("sft rows: packing invariants for every packing mode") {
  const std::uint64_t seed = 424242;
  MESSAGE("seed " << seed);
  for (index_t T : {2, 7, 64}) {
    const auto ex = random_examples(seed + static_cast<std::uint64_t>(T), 300, T);
    for (sft_packing pk :
         {sft_packing::none, sft_packing::best_fit, sft_packing::best_fit_decreasing}) {
      sft_options o{.block_size = T, .packing = pk, .pad_id = 7, .ignore_index = -100};
      const sft_rows rows = sft_rows::build(ex, o);
      INFO("T " << T << " packing " << static_cast<int>(pk));
      check_rows(ex, rows, o);
      std::size_t truncated = 0, no_loss = 0;
      std::vector<std::size_t> len;
      for (const auto& e : ex) {
        const std::size_t L = std::min<std::size_t>(e.ids.size(), static_cast<std::size_t>(T));
        truncated += e.ids.size() > static_cast<std::size_t>(T);
        if (std::count(e.loss_mask.begin() + 1,
                       e.loss_mask.begin() + static_cast<std::ptrdiff_t>(L), 1) == 0) {
          ++no_loss;
          continue;
        }
        len.push_back(L);
      }
      CHECK(rows.stats().truncated == truncated);
      CHECK(rows.stats().dropped_no_loss == no_loss);
      CHECK(rows.stats().examples + no_loss == ex.size());
      if (pk == sft_packing::none) CHECK(rows.stats().rows == len.size());
      if (pk == sft_packing::best_fit_decreasing)
        CHECK(rows.stats().rows == naive_bfd_rows(len, static_cast<std::size_t>(T)));
      if (T == 64)
        MESSAGE("T 64 packing " << static_cast<int>(pk) << ": " << rows.stats().rows
                                << " rows, efficiency " << rows.stats().packing_efficiency);
    }
  }
}

TEST_CASE("sft rows: a hand-checked packing") {
  // lengths 3, 2, 4 in T = 5 with best-fit decreasing: [ex2 (4)] [ex0 (3), ex1 (2)]
  std::vector<sft_example> ex = {
      {{10, 11, 12}, {0, 1, 1}, ""}, {{20, 21}, {0, 1}, ""}, {{30, 31, 32, 33}, {0, 0, 1, 1}, ""}};
  const sft_rows rows = sft_rows::build(ex, {.block_size = 5, .pad_id = 0, .ignore_index = -1});
  REQUIRE(rows.rows() == 2);
  auto v = [](std::span<const std::int32_t> s) {
    return std::vector<std::int32_t>(s.begin(), s.end());
  };
  CHECK(v(rows.ids(0)) == std::vector<std::int32_t>{30, 31, 32, 33, 0});
  CHECK(v(rows.targets(0)) == std::vector<std::int32_t>{-1, 32, 33, -1, -1});
  CHECK(v(rows.segments(0)) == std::vector<std::int32_t>{0, 0, 0, 0, 1});
  CHECK(v(rows.ids(1)) == std::vector<std::int32_t>{10, 11, 12, 20, 21});
  CHECK(v(rows.targets(1)) == std::vector<std::int32_t>{11, 12, -1, 21, -1});
  CHECK(v(rows.segments(1)) == std::vector<std::int32_t>{0, 0, 0, 1, 1});
  CHECK(v(rows.positions(1)) == std::vector<std::int32_t>{0, 1, 2, 0, 1});
  CHECK(rows.stats().packing_efficiency == doctest::Approx(0.9));
  CHECK(rows.stats().targets == 5);
  CHECK(rows.stats().assistant_tokens == 5);
  const sft_batch b = rows.gather(std::vector<index_t>{1, 0});
  CHECK(b.ids(0, 3) == 20);
  CHECK(b.targets(1, 2) == 33);
  CHECK(b.segments(1, 4) == 1);
  const auto seg = b.segment_ids();
  CHECK(*seg == std::vector<std::int32_t>{0, 0, 0, 1, 1, 0, 0, 0, 0, 1});
  const auto ev = rows.evaluation_batches(3);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].ids.shape().extent(0) == 2);
  CHECK(ev[0].ids(1, 0) == 10);
  CHECK(rows.evaluation_batches(1).size() == 2);
  CHECK(summary(rows.stats(), 5) ==
        "3 examples, 9 tokens (5 in the loss mask, 5 targets), 2 rows of 5, packing efficiency "
        "90%");
}

TEST_CASE("sft rows: truncation modes and bad options") {
  std::vector<sft_example> ex = {{{1, 2, 3, 4, 5, 6}, {0, 0, 0, 1, 1, 1}, "'a.jsonl' line 3"},
                                 {{1, 2}, {0, 1}, ""},
                                 {{1, 2, 3}, {0, 0, 0}, ""}};
  sft_options o{.block_size = 4};
  const sft_rows t = sft_rows::build(ex, o);
  CHECK(t.stats().truncated == 1);
  CHECK(t.stats().dropped_no_loss == 1);
  CHECK(t.stats().examples == 2);
  CHECK(t.stats().tokens == 6);
  o.truncation = sft_truncation::drop;
  const sft_rows d = sft_rows::build(ex, o);
  CHECK(d.stats().dropped_too_long == 1);
  CHECK(d.stats().examples == 1);
  o.truncation = sft_truncation::error;
  try {
    (void)sft_rows::build(ex, o);
    FAIL("no error");
  } catch (const value_error& e) {
    const std::string w = e.what();
    INFO(w);
    CHECK(w.find("example 0 ('a.jsonl' line 3) has 6 tokens, more than block_size 4") !=
          std::string::npos);
  }
  CHECK_THROWS_AS((void)sft_rows::build(ex, {.block_size = 1}), value_error);
  ex[1].loss_mask.pop_back();
  CHECK_THROWS_AS((void)sft_rows::build(ex, {.block_size = 8}), value_error);
}

TEST_CASE("sft split: by content hash, independent of order, fraction and count") {
  std::vector<sft_record> rs(2000);
  for (std::size_t i = 0; i < rs.size(); ++i) {
    rs[i].messages = {{"user", "q" + std::to_string(i)}, {"assistant", "a" + std::to_string(i)}};
    rs[i].where = "line " + std::to_string(i + 1);
  }
  auto keys = [](const std::vector<sft_record>& v) {
    std::set<std::string> s;
    for (const auto& r : v) s.insert(r.messages[0].content);
    return s;
  };
  auto [tr, va] = split_sft_records(rs, {.fraction = 0.1, .seed = 5});
  CHECK(tr.size() + va.size() == rs.size());
  CHECK(va.size() > 150);
  CHECK(va.size() < 250);
  MESSAGE("fraction 0.1 of 2000 -> " << va.size() << " held out");
  // reversed input: the same records held out (each split keeps input order)
  std::vector<sft_record> rev(rs.rbegin(), rs.rend());
  auto [tr2, va2] = split_sft_records(rev, {.fraction = 0.1, .seed = 5});
  CHECK(keys(va2) == keys(va));
  CHECK(keys(tr2) == keys(tr));
  // another seed: another split
  auto [tr3, va3] = split_sft_records(rs, {.fraction = 0.1, .seed = 6});
  CHECK(keys(va3) != keys(va));
  // count: exactly n, the same for any order
  auto [tc, vc] = split_sft_records(rs, {.count = 37});
  auto [tc2, vc2] = split_sft_records(rev, {.count = 37});
  CHECK(vc.size() == 37);
  CHECK(keys(vc) == keys(vc2));
  // the hash ignores where a record came from, and sees every text
  sft_record a = rs[3];
  a.where = "elsewhere";
  CHECK(sft_record_hash(a) == sft_record_hash(rs[3]));
  a.messages[1].content += "!";
  CHECK(sft_record_hash(a) != sft_record_hash(rs[3]));
  CHECK_THROWS_AS((void)split_sft_records(rs, {.fraction = 1.0}), value_error);
  CHECK_THROWS_AS((void)split_sft_records(rs, {.fraction = 0.1, .count = 3}), value_error);
  CHECK_THROWS_AS((void)split_sft_records(rs, {.count = 2000}), value_error);
}

TEST_CASE("sft loader: every row once per epoch, shuffled by seed, resumable") {
  const auto ex = random_examples(99, 50, 16);
  const sft_rows rows = sft_rows::build(ex, {.block_size = 16});
  const index_t n = rows.rows();
  REQUIRE(n > 8);
  sft_loader L(rows, 4, 1234);
  CHECK(L.batches_per_epoch() == (n + 3) / 4);
  std::vector<std::vector<index_t>> orders;
  for (std::uint64_t e = 0; e < 3; ++e) {
    auto o = L.epoch_order(e);
    auto s = o;
    std::sort(s.begin(), s.end());
    for (index_t i = 0; i < n; ++i) CHECK(s[static_cast<std::size_t>(i)] == i);
    orders.push_back(o);
  }
  CHECK(orders[0] != orders[1]);
  CHECK(sft_loader(rows, 4, 1235).epoch_order(0) != orders[0]);
  // next() walks batches of epoch 0 in its order, then epoch 1
  std::vector<sft_batch> seq;
  for (index_t k = 0; k < L.batches_per_epoch() + 2; ++k) seq.push_back(L.next());
  for (index_t k = 0; k < L.batches_per_epoch(); ++k) {
    const sft_batch& b = seq[static_cast<std::size_t>(k)];
    for (index_t i = 0; i < b.ids.shape().extent(0); ++i) {
      const index_t r = orders[0][static_cast<std::size_t>(k * 4 + i)];
      for (index_t t = 0; t < 16; ++t) {
        CHECK(b.ids(i, t) == rows.ids(r)[static_cast<std::size_t>(t)]);
        CHECK(b.targets(i, t) == rows.targets(r)[static_cast<std::size_t>(t)]);
      }
    }
  }
  CHECK(seq.back().ids.shape().extent(0) == 4);
  CHECK(seq[static_cast<std::size_t>(L.batches_per_epoch() - 1)].ids.shape().extent(0) ==
        (n % 4 == 0 ? 4 : n % 4));
  CHECK(L.epoch() == 1);
  CHECK(L.index() == 2);
  // resume: a fresh loader seeked to (1, 2) continues identically
  sft_loader R(rows, 4, 1234);
  R.seek(1, 2);
  const sft_batch x = L.next(), y = R.next();
  for (index_t i = 0; i < 4; ++i)
    for (index_t t = 0; t < 16; ++t) CHECK(x.segments(i, t) == y.segments(i, t));
  sft_loader D(rows, 4, 1234, /*drop_last=*/true);
  CHECK(D.batches_per_epoch() == n / 4);
  CHECK_THROWS_AS(sft_loader(rows, n + 1, 0, true), value_error);
  CHECK_THROWS_AS((void)R.batch(0, L.batches_per_epoch()), index_error);
}
