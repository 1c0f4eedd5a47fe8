// infer::beam_search (infer/beam.hpp) on tiny random models: against an independent beam search
// that recomputes every prefix from scratch with infer::session (no cache sharing), against the
// exhaustive search when the beam is wide enough to keep every prefix, and the copy-on-write
// sharing of the beams' KV blocks.
#include "engine_fixture.hpp"

#include "typeformer/infer/beam.hpp"
#include "typeformer/infer/session.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

using namespace tfm;

namespace {

/// log_softmax of the next-token logits after `ids`, recomputed from scratch.
std::vector<double> next_logprobs(const infer::transformer<float>& m,
                                  const std::vector<std::int32_t>& ids) {
  infer::session s(m, {.context = 128});
  auto lg = s.prefill(ids);
  double mx = -std::numeric_limits<double>::infinity(), sum = 0;
  for (float v : lg) mx = std::max(mx, static_cast<double>(v));
  for (float v : lg) sum += std::exp(static_cast<double>(v) - mx);
  std::vector<double> out;
  for (float v : lg) out.push_back(static_cast<double>(v) - mx - std::log(sum));
  return out;
}

/// The same algorithm written plainly (file comment of beam.hpp), every prefix recomputed.
std::vector<infer::beam_hypothesis> naive_beams(const infer::transformer<float>& m,
                                                const std::vector<std::int32_t>& prompt,
                                                const infer::beam_options& o) {
  struct beam {
    std::vector<std::int32_t> toks;
    double lp;
  };
  auto score = [&](double lp, std::size_t n) {
    return lp / std::pow(static_cast<double>(n), o.length_penalty);
  };
  std::vector<beam> beams{{{}, 0.0}};
  std::vector<infer::beam_hypothesis> done;
  for (std::int64_t step = 0; step < o.max_tokens; ++step) {
    struct cand {
      double lp;
      std::size_t b;
      std::int32_t t;
    };
    std::vector<cand> cs;
    for (std::size_t b = 0; b < beams.size(); ++b) {
      std::vector<std::int32_t> ids = prompt;
      ids.insert(ids.end(), beams[b].toks.begin(), beams[b].toks.end());
      const auto lp = next_logprobs(m, ids);
      for (std::size_t t = 0; t < lp.size(); ++t)
        cs.push_back({beams[b].lp + lp[t], b, static_cast<std::int32_t>(t)});
    }
    std::sort(cs.begin(), cs.end(), [](const cand& a, const cand& b) {
      return a.lp != b.lp ? a.lp > b.lp : a.b != b.b ? a.b < b.b : a.t < b.t;
    });
    std::vector<beam> next;
    for (std::size_t i = 0; i < cs.size() && i < static_cast<std::size_t>(2 * o.width) &&
                            static_cast<index_t>(next.size()) < o.width;
         ++i) {
      auto toks = beams[cs[i].b].toks;
      toks.push_back(cs[i].t);
      if (std::find(o.eos_ids.begin(), o.eos_ids.end(), cs[i].t) != o.eos_ids.end()) {
        if (static_cast<index_t>(i) < o.width)
          done.push_back({toks, cs[i].lp, score(cs[i].lp, toks.size()), true});
        continue;
      }
      next.push_back({toks, cs[i].lp});
    }
    beams = next;
    if (beams.empty() || step + 1 == o.max_tokens) break;
    if (static_cast<index_t>(done.size()) >= o.width) {
      if (o.early_stopping) break;
      double worst = 1e300, best = -1e300;
      for (auto& h : done) worst = std::min(worst, h.score);
      for (auto& b : beams)
        best = std::max(best,
                        o.length_penalty > 0
                            ? b.lp / std::pow(static_cast<double>(o.max_tokens), o.length_penalty)
                            : score(b.lp, b.toks.size()));
      if (best <= worst) break;
    }
  }
  for (auto& b : beams) done.push_back({b.toks, b.lp, score(b.lp, b.toks.size()), false});
  std::stable_sort(done.begin(), done.end(),
                   [](const auto& a, const auto& b) { return a.score > b.score; });
  if (static_cast<index_t>(done.size()) > o.width) done.resize(static_cast<std::size_t>(o.width));
  return done;
}

}  // namespace

TEST_CASE("beam_search equals a beam search that recomputes every prefix") {
  const std::uint64_t seed = 41;
  auto model = engine_test::tiny(seed, {ggml_type::f32});
  const auto prompt = engine_test::prompt(seed, 9, model.config().vocab);
  // End tokens: two of the likelier tokens after the prompt, so that hypotheses finish.
  const auto lp0 = next_logprobs(model, prompt);
  std::vector<std::int32_t> order(lp0.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::int32_t>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return lp0[static_cast<std::size_t>(a)] > lp0[static_cast<std::size_t>(b)];
  });
  for (bool early : {true, false})
    for (double lpen : {1.0, 0.0, 2.0}) {
      infer::beam_options o{.width = 3,
                            .length_penalty = lpen,
                            .early_stopping = early,
                            .max_tokens = 7,
                            .eos_ids = {order[2], order[5]}};
      MESSAGE("seed " << seed << ", early_stopping " << early << ", length_penalty " << lpen);
      const auto got = infer::beam_search(model, prompt, o);
      const auto want = naive_beams(model, prompt, o);
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i) {
        CAPTURE(i);
        CHECK(got[i].tokens == want[i].tokens);
        CHECK(got[i].finished == want[i].finished);
        CHECK(got[i].score == doctest::Approx(want[i].score).epsilon(1e-5));
      }
    }
}

TEST_CASE("beam_search wide enough to keep every prefix finds the most likely sequence") {
  const std::uint64_t seed = 43;
  auto model = engine_test::tiny(seed, {ggml_type::f32});
  const index_t V = model.config().vocab;
  const auto prompt = engine_test::prompt(seed, 5, V);
  // Exhaustive over all V^2 two-token continuations.
  const auto lp1 = next_logprobs(model, prompt);
  double best = -1e300;
  std::vector<std::int32_t> arg;
  for (index_t a = 0; a < V; ++a) {
    auto ids = prompt;
    ids.push_back(static_cast<std::int32_t>(a));
    const auto lp2 = next_logprobs(model, ids);
    for (index_t b = 0; b < V; ++b) {
      const double lp = lp1[static_cast<std::size_t>(a)] + lp2[static_cast<std::size_t>(b)];
      if (lp > best) {
        best = lp;
        arg = {static_cast<std::int32_t>(a), static_cast<std::int32_t>(b)};
      }
    }
  }
  infer::beam_stats st;
  const auto hyps = infer::beam_search(model, prompt, {.width = V, .max_tokens = 2}, &st);
  MESSAGE("seed " << seed << ": best of " << V * V << " sequences: logprob " << best);
  REQUIRE(!hyps.empty());
  CHECK(hyps[0].tokens == arg);
  CHECK(hyps[0].logprob == doctest::Approx(best).epsilon(1e-5));
}

TEST_CASE("beam_search shares the prompt's KV blocks between beams (copy-on-write)") {
  auto model = engine_test::tiny(45, {ggml_type::q8_0});
  const auto prompt = engine_test::prompt(45, 100, model.config().vocab);
  infer::beam_stats st;
  const auto hyps =
      infer::beam_search(model, prompt, {.width = 6, .max_tokens = 10, .block_tokens = 16}, &st);
  MESSAGE("peak KV blocks " << st.peak_blocks << " (whole copies would take " << st.unshared_blocks
                            << ")");
  CHECK(hyps.size() == 6);
  // 100 prompt tokens: 6 full blocks shared, then one partial block per beam (+ its next).
  CHECK(st.peak_blocks <= 6 + 2 * 6);
  CHECK(st.unshared_blocks >= 6 * 7);
  CHECK_THROWS_AS(infer::beam_search(model, prompt, {.width = 0}), value_error);
  CHECK_THROWS_AS(infer::beam_search(model, std::vector<std::int32_t>{}, {}), value_error);
}
