// infer::batch_runner (infer/batch.hpp): one forward over several sequences through the paged KV
// cache, against infer::session run token by token (the same kernels per row, another attention
// path: within 1e-5), and against itself: a sequence's logits are the same bits whatever else
// shares the step and however its prompt is split into chunks.
#include "engine_fixture.hpp"

#include "typeformer/infer/batch.hpp"
#include "typeformer/infer/session.hpp"

#include <doctest/doctest.h>

#include <map>
#include <span>
#include <vector>

using namespace tfm;
using engine_test::rel_err;

namespace {

const std::vector<std::vector<ggml_type>> model_kinds = {
    {ggml_type::f32},
    {ggml_type::f16},
    {ggml_type::q4_0, ggml_type::q8_0, ggml_type::q4_1, ggml_type::q4_K, ggml_type::q6_K},
};

std::string kind_name(const std::vector<ggml_type>& k) {
  std::string s;
  for (ggml_type t : k) s += std::string(ggml_type_name(t)) + " ";
  return s;
}

/// Runs `prompt` through the runner split into chunks of `chunk` tokens, each step shared with
/// the `others` (a fresh sequence each, `other_len` tokens), then `decodes` greedy tokens;
/// returns the logits after the prompt and after each decode, concatenated.
std::vector<float> run_seq(infer::batch_runner<float, cpu>& run, infer::paged_kv& kv,
                           const std::vector<std::int32_t>& prompt, index_t chunk, int others,
                           index_t other_len, int decodes) {
  const index_t V = run.config().vocab;
  const auto x = kv.create();
  std::vector<infer::paged_kv::seq_id> o;
  std::vector<std::vector<std::int32_t>> oid;
  for (int i = 0; i < others; ++i) {
    o.push_back(kv.create());
    oid.push_back(engine_test::prompt(100 + static_cast<std::uint64_t>(i), 64, V));
  }
  std::vector<float> out;
  std::vector<std::int32_t> toks = prompt;
  index_t done = 0;
  std::size_t opos = 0;
  auto step = [&](index_t n, bool want) {
    std::vector<infer::batch_item> items;
    for (std::size_t i = 0; i < o.size(); ++i) {
      const index_t m = std::min<index_t>(other_len, 64 - static_cast<index_t>(opos));
      if (m <= 0) continue;
      REQUIRE(kv.reserve(o[i], m));
      items.push_back({o[i], oid[i].data() + opos, m, true});
    }
    // x in the middle of the others
    REQUIRE(kv.reserve(x, n));
    items.insert(items.begin() + static_cast<std::ptrdiff_t>(items.size() / 2),
                 infer::batch_item{x, toks.data() + done, n, want});
    std::span<const float> lg = run.step(items);
    opos += static_cast<std::size_t>(other_len);
    done += n;
    if (!want) return;
    std::size_t row = 0;
    for (const auto& it : items) {
      if (it.seq == x) break;
      if (it.logits) ++row;
    }
    out.insert(out.end(), lg.begin() + static_cast<std::ptrdiff_t>(row * V),
               lg.begin() + static_cast<std::ptrdiff_t>((row + 1) * V));
  };
  const index_t P = static_cast<index_t>(prompt.size());
  while (done < P) {
    const index_t n = std::min(chunk, P - done);
    step(n, done + n == P);
  }
  for (int d = 0; d < decodes; ++d) {
    const float* last = out.data() + out.size() - static_cast<std::size_t>(V);
    toks.push_back(static_cast<std::int32_t>(std::max_element(last, last + V) - last));
    step(1, true);
  }
  kv.release(x);
  for (auto s : o) kv.release(s);
  return out;
}

}  // namespace

TEST_CASE("batch_runner: logits equal infer::session's token-by-token decode") {
  for (const auto& kind : model_kinds) {
    const std::uint64_t seed = 5;
    MESSAGE("seed " << seed << ", weights " << kind_name(kind));
    auto model = engine_test::tiny(seed, kind);
    const index_t V = model.config().vocab;
    const auto p = engine_test::prompt(seed, 21, V);
    infer::paged_kv kv(model.config().n_layer, model.config().n_kv_head, model.config().head_dim,
                       {.block_tokens = 4, .blocks = 128});
    infer::batch_runner<float, cpu> run(model, kv, {.max_tokens = 64, .max_seqs = 8});
    const std::vector<float> got = run_seq(run, kv, p, 8, 2, 3, 4);

    infer::session s(model);
    std::vector<float> want;
    std::span<const float> lg;
    for (std::int32_t t : p) lg = s.decode(t);
    want.insert(want.end(), lg.begin(), lg.end());
    for (int d = 0; d < 4; ++d) {
      const float* last = want.data() + want.size() - static_cast<std::size_t>(V);
      lg = s.decode(static_cast<std::int32_t>(std::max_element(last, last + V) - last));
      want.insert(want.end(), lg.begin(), lg.end());
    }
    REQUIRE(got.size() == want.size());
    const double e = rel_err(got, want);
    MESSAGE("batched (chunks of 8, 2 other sequences) vs session decode: " << e);
    CHECK(e < 1e-5);
    CHECK(kv.used_blocks() == 0);
  }
}

TEST_CASE("batch_runner: a sequence's logits are the same bits alone, in a batch, in any chunks") {
  for (const auto& kind : model_kinds) {
    const std::uint64_t seed = 9;
    MESSAGE("seed " << seed << ", weights " << kind_name(kind));
    auto model = engine_test::tiny(seed, kind);
    const index_t V = model.config().vocab;
    const auto p = engine_test::prompt(seed + 1, 29, V);
    infer::paged_kv kv(model.config().n_layer, model.config().n_kv_head, model.config().head_dim,
                       {.block_tokens = 16, .blocks = 256});
    infer::batch_runner<float, cpu> run(model, kv, {.max_tokens = 128, .max_seqs = 40});
    const std::vector<float> alone = run_seq(run, kv, p, 1000, 0, 0, 5);
    struct variant {
      index_t chunk;
      int others;
      index_t other_len;
    };
    for (variant v : {variant{1, 0, 0}, variant{7, 0, 0}, variant{29, 3, 5}, variant{4, 31, 1},
                      variant{13, 8, 2}}) {
      CAPTURE(v.chunk);
      CAPTURE(v.others);
      const std::vector<float> got = run_seq(run, kv, p, v.chunk, v.others, v.other_len, 5);
      REQUIRE(got.size() == alone.size());
      CHECK(std::equal(got.begin(), got.end(), alone.begin()));
    }
  }
}

TEST_CASE("batch_runner: bad steps are refused with a clear error") {
  auto model = engine_test::tiny(3, {ggml_type::f32});
  infer::paged_kv kv(model.config().n_layer, model.config().n_kv_head, model.config().head_dim,
                     {.block_tokens = 4, .blocks = 8});
  infer::batch_runner<float, cpu> run(model, kv, {.max_tokens = 8, .max_seqs = 2, .context = 16});
  const auto a = kv.create();
  std::vector<std::int32_t> ids(9, 1);
  REQUIRE(kv.reserve(a, 8));
  CHECK_THROWS_AS(run.step({}), value_error);
  std::vector<infer::batch_item> too_many{{a, ids.data(), 9, true}};
  CHECK_THROWS_WITH_AS(run.step(too_many), doctest::Contains("max_tokens"), value_error);
  ids[0] = 1000;
  std::vector<infer::batch_item> bad_id{{a, ids.data(), 2, true}};
  CHECK_THROWS_WITH_AS(run.step(bad_id), doctest::Contains("vocabulary"), index_error);
  ids[0] = 1;
  std::vector<infer::batch_item> twice{{a, ids.data(), 1, true}, {a, ids.data(), 1, true}};
  CHECK_THROWS_WITH_AS(run.step(twice), doctest::Contains("twice"), value_error);
  infer::paged_kv other(1, 1, 8, {.block_tokens = 4, .blocks = 8});
  CHECK_THROWS_WITH_AS((infer::batch_runner<float, cpu>(model, other)), doctest::Contains("layers"),
                       value_error);
}
