// infer::speculative_decoder (infer/spec_decode.hpp) on tiny random models: greedy speculative
// output equals plain greedy output token for token (draft model and n-gram lookup); with
// temperature > 0 the emitted tokens follow the target's distribution (chi-square against plain
// sampling); acceptance statistics are consistent.
#include "engine_fixture.hpp"

#include "typeformer/infer/spec_decode.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

using namespace tfm;

TEST_CASE("speculative decoding, greedy: the target's greedy tokens exactly") {
  const std::uint64_t seed = 31;
  MESSAGE("seed " << seed);
  auto target = engine_test::tiny(seed, {ggml_type::q4_1, ggml_type::q8_0});
  // The draft: the same weights quantized more coarsely (Q4_0): close, not equal.
  auto draft = engine_test::tiny(seed, {ggml_type::q4_0});
  const auto prompt = engine_test::prompt(seed, 11, target.config().vocab);
  infer::sampling_options greedy{.temperature = 0};
  infer::speculative_decoder plain(target, nullptr, {.draft_tokens = 0});
  const auto want = plain.generate(prompt, 40, greedy);
  REQUIRE(want.size() == 40);
  // The engine's greedy output is the same (the same batch_runner rows).
  {
    infer::engine eng(target);
    engine_test::record rec;
    eng.submit({.prompt = prompt, .sampling = greedy, .max_tokens = 40}, rec.callback());
    eng.run_until_idle();
    CHECK(rec.tokens == want);
  }
  for (index_t k : {1, 3, 6}) {
    CAPTURE(k);
    infer::speculative_decoder with_draft(target, &draft, {.draft_tokens = k});
    CHECK(with_draft.generate(prompt, 40, greedy) == want);
    const auto& st = with_draft.stats();
    MESSAGE("draft model, k " << k << ": acceptance " << st.acceptance() << ", tokens per step "
                              << st.tokens_per_step());
    CHECK(st.emitted == 40);
    CHECK(st.accepted <= st.drafted);
    CHECK(st.steps < 40);  // some drafts were accepted
    infer::speculative_decoder lookup(target, nullptr, {.draft_tokens = k});
    CHECK(lookup.generate(prompt, 40, greedy) == want);
  }
  // Stop ids end the output after the stop token, even inside an accepted draft.
  infer::speculative_decoder s(target, &draft, {.draft_tokens = 4});
  const std::int32_t stop = want[17];
  const auto first = std::find(want.begin(), want.end(), stop) - want.begin();
  const auto got = s.generate(prompt, 40, greedy, std::vector<std::int32_t>{stop});
  CHECK(got == std::vector<std::int32_t>(want.begin(), want.begin() + first + 1));
}

TEST_CASE("speculative decoding, sampling: emitted tokens follow the target's distribution") {
  // The distribution of the first two generated tokens over many seeds, speculative (a draft
  // model that differs from the target; drafts of 2 tokens) against plain sampling from the
  // target: two-sample chi-square on the 2-token outcomes, small cells pooled.
  const std::uint64_t seed = 33;
  // The draft: the target's weights in Q4_0 (the target: Q8_0): close, not equal.
  auto target = engine_test::tiny(seed, {ggml_type::q8_0});
  auto draft = engine_test::tiny(seed, {ggml_type::q4_0});
  const auto prompt = engine_test::prompt(seed, 6, target.config().vocab);
  infer::speculative_decoder plain(target, nullptr, {.draft_tokens = 0});
  infer::speculative_decoder spec(target, &draft, {.draft_tokens = 3});
  const int runs = 1200;
  std::map<std::pair<int, int>, std::array<int, 2>> counts;
  for (int r = 0; r < runs; ++r) {
    infer::sampling_options so{
        .temperature = 1.5, .top_k = 4, .seed = static_cast<std::uint64_t>(r)};
    const auto a = plain.generate(prompt, 3, so);  // 3 tokens: drafts of 2 can be accepted
    so.seed = static_cast<std::uint64_t>(r) + 1000003;
    const auto b = spec.generate(prompt, 3, so);
    ++counts[{a[0], a[1]}][0];
    ++counts[{b[0], b[1]}][1];
  }
  // Two-sample chi-square over cells with an expected count >= 5 (the rest pooled).
  double chi2 = 0;
  int cells = 0;
  std::array<int, 2> pool{0, 0};
  for (const auto& [key, c] : counts) {
    if (c[0] + c[1] < 10) {
      pool[0] += c[0];
      pool[1] += c[1];
      continue;
    }
    const double e = (c[0] + c[1]) / 2.0;
    chi2 += (c[0] - e) * (c[0] - e) / e + (c[1] - e) * (c[1] - e) / e;
    ++cells;
  }
  if (pool[0] + pool[1] > 0) {
    const double e = (pool[0] + pool[1]) / 2.0;
    chi2 += (pool[0] - e) * (pool[0] - e) / e + (pool[1] - e) * (pool[1] - e) / e;
    ++cells;
  }
  const int dof = cells - 1;
  // Wilson-Hilferty: the 99.9% quantile of chi-square with dof degrees of freedom.
  const double z = 3.09, h = 2.0 / (9.0 * dof);
  const double limit = dof * std::pow(1 - h + z * std::sqrt(h), 3);
  MESSAGE("seed " << seed << ": " << runs << " runs each, chi2 " << chi2 << " on " << dof
                  << " dof (99.9% limit " << limit << "), acceptance "
                  << spec.stats().acceptance());
  CHECK(dof >= 5);
  CHECK(chi2 < limit);
  CHECK(spec.stats().acceptance() > 0.0);
  CHECK(spec.stats().acceptance() < 1.0);
}

TEST_CASE("speculative decoding: bad arguments") {
  auto target = engine_test::tiny(35, {ggml_type::f32});
  auto other = engine_test::tiny(36, {ggml_type::f32});
  CHECK_THROWS_AS(infer::speculative_decoder(target, nullptr, {.draft_tokens = -1}), value_error);
  infer::speculative_decoder d(target, nullptr);
  CHECK_THROWS_AS(d.generate({}, 5), value_error);
  CHECK_THROWS_AS(d.generate(std::vector<std::int32_t>{1}, 0), value_error);
  CHECK_THROWS_AS(d.generate(std::vector<std::int32_t>{100000}, 5), index_error);
  (void)other;
}
