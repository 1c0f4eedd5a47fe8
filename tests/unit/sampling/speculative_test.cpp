// Speculative decoding's verification rule (infer/speculative.hpp; Leviathan et al.,
// arXiv:2211.17192; Chen et al., arXiv:2302.01318) and the n-gram prompt-lookup drafter.
// With temperature > 0 the histogram of speculatively generated sequences over many seeds must
// match the target's own distribution (computed exactly by enumeration): chi-square, fixed seeds,
// pass when p >= 0.001; a wrong rule (accepting every draft) must fail the same test. With
// temperature 0 the tokens must equal greedy decoding exactly.
#include "chi_square.hpp"

#include <typeformer/infer/sampler.hpp>
#include <typeformer/infer/speculative.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

using namespace tfm;
using sampling_test::chi_square;
using tokens = std::vector<std::int32_t>;

namespace {

// Toy autoregressive models over V = 4 tokens: logits as a function of the context.
constexpr std::int64_t V = 4;
const double target_table[V][V] = {
    {0.9, 0.1, -0.4, 0.4}, {-0.3, 0.8, 0.5, -0.2}, {0.2, -0.6, 0.3, 0.7}, {0.6, 0.4, -0.5, 0.0}};
const double draft_table[V][V] = {
    {0.2, 0.9, 0.0, -0.6}, {0.5, 0.1, -0.4, 0.6}, {-0.2, 0.3, 0.8, 0.1}, {0.0, -0.3, 0.6, 0.4}};

std::vector<double> target_logits(const tokens& ctx) {
  std::vector<double> l(V);
  const auto last = static_cast<std::size_t>(ctx.back());
  for (std::size_t t = 0; t < V; ++t)
    l[t] = target_table[last][t] + 0.4 * std::cos(static_cast<double>(ctx.size() + 2 * t));
  return l;
}
std::vector<double> draft_logits(const tokens& ctx) {
  std::vector<double> l(V);
  for (std::size_t t = 0; t < V; ++t) l[t] = draft_table[static_cast<std::size_t>(ctx.back())][t];
  return l;
}
std::vector<float> softmax(const std::vector<double>& l) {
  const double mx = *std::max_element(l.begin(), l.end());
  double s = 0;
  for (double v : l) s += std::exp(v - mx);
  std::vector<float> p(l.size());
  for (std::size_t i = 0; i < l.size(); ++i) p[i] = static_cast<float>(std::exp(l[i] - mx) / s);
  return p;
}

enum class draft_kind { sampled, point_mass, accept_all_bug };

/// L tokens after `start` by speculative decoding with drafts of k tokens and dense p/q rows
/// from the toy models at temperature 1.
tokens speculate_dense(const tokens& start, std::int64_t L, std::int64_t k, draft_kind kind,
                       std::uint64_t seed) {
  infer::sampler target_rng({.seed = seed}), draft_rng({.seed = seed ^ 0x9e3779b97f4a7c15ull});
  tokens ctx = start;
  while (static_cast<std::int64_t>(ctx.size() - start.size()) < L) {
    tokens draft, grown = ctx;
    std::vector<float> q, p;
    for (std::int64_t i = 0; i < k; ++i) {
      const std::vector<float> qi = softmax(draft_logits(grown));
      const std::vector<float> pi = softmax(target_logits(grown));
      p.insert(p.end(), pi.begin(), pi.end());
      const std::int32_t x =
          kind == draft_kind::point_mass
              ? static_cast<std::int32_t>(std::max_element(qi.begin(), qi.end()) - qi.begin())
              : draft_rng.draw(qi);
      q.insert(q.end(), qi.begin(), qi.end());
      draft.push_back(x);
      grown.push_back(x);
    }
    const std::vector<float> last = softmax(target_logits(grown));
    p.insert(p.end(), last.begin(), last.end());
    infer::verify_result r;
    if (kind == draft_kind::accept_all_bug) {
      r = {k, target_rng.draw(last)};
    } else {
      r = infer::verify_draft(draft, kind == draft_kind::point_mass ? std::span<const float>{} : q,
                              p, V, target_rng);
    }
    ctx.insert(ctx.end(), draft.begin(), draft.begin() + r.accepted);
    ctx.push_back(r.token);
  }
  return tokens(ctx.begin() + static_cast<std::ptrdiff_t>(start.size()),
                ctx.begin() + static_cast<std::ptrdiff_t>(start.size() + L));
}

std::size_t bin_of(const tokens& seq) {
  std::size_t b = 0;
  for (auto t : seq) b = b * V + static_cast<std::size_t>(t);
  return b;
}

/// P(sequence) under the target, for every sequence of L tokens (by enumeration), with the
/// per-step distribution `dist(context)`.
std::vector<double> exact_sequence_probs(
    const tokens& start, std::int64_t L,
    const std::function<std::vector<float>(const tokens&)>& dist) {
  std::size_t bins = 1;
  for (std::int64_t i = 0; i < L; ++i) bins *= V;
  std::vector<double> out(bins);
  for (std::size_t b = 0; b < bins; ++b) {
    tokens seq(static_cast<std::size_t>(L));
    std::size_t r = b;
    for (std::int64_t i = L - 1; i >= 0; --i) {
      seq[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(r % V);
      r /= V;
    }
    tokens ctx = start;
    double prob = 1;
    for (auto t : seq) {
      prob *= dist(ctx)[static_cast<std::size_t>(t)];
      ctx.push_back(t);
    }
    out[b] = prob;
  }
  return out;
}

sampling_test::chi_square_result histogram_test(const char* what,
                                                const std::vector<double>& expected, int trials,
                                                const std::function<tokens(std::uint64_t)>& run) {
  std::vector<std::int64_t> count(expected.size());
  for (int s = 0; s < trials; ++s) ++count[bin_of(run(static_cast<std::uint64_t>(s) + 1))];
  const auto r = chi_square(count, expected);
  MESSAGE(std::string(what) << ": seeds 1.." << trials << ", chi2 = " << r.statistic << " (df "
                            << r.df << "), p = " << r.p_value);
  return r;
}

}  // namespace

TEST_CASE("speculative sequences are distributed as the target's (chi-square)") {
  const tokens start{0};
  const std::int64_t L = 3;
  const auto expected =
      exact_sequence_probs(start, L, [](const tokens& c) { return softmax(target_logits(c)); });
  const double min_p = *std::min_element(expected.begin(), expected.end());
  const int trials = 60000;
  REQUIRE(min_p * trials >= 5);  // every bin of the 64 is expected at least 5 times
  for (std::int64_t k : {1, 2, 4}) {
    CAPTURE(k);
    const auto sampled = histogram_test("sampled drafts", expected, trials, [&](std::uint64_t s) {
      return speculate_dense(start, L, k, draft_kind::sampled, s);
    });
    CHECK(sampled.p_value >= 1e-3);
    const auto points = histogram_test("point-mass drafts", expected, trials, [&](std::uint64_t s) {
      return speculate_dense(start, L, k, draft_kind::point_mass, s);
    });
    CHECK(points.p_value >= 1e-3);
  }
  // The test has power: accepting every draft token (no rejection step) is caught.
  const auto wrong = histogram_test("accept-all bug", expected, trials, [&](std::uint64_t s) {
    return speculate_dense(start, L, 2, draft_kind::accept_all_bug, s);
  });
  CHECK(wrong.p_value < 1e-6);
}

TEST_CASE("the verifier on logits matches non-speculative sampling with the same options") {
  // p is the sampler's processed distribution (temperature, top-k, penalties over the history
  // including the draft prefix); its own definition is tested against numpy in sampler_test.cpp.
  infer::sampling_options o;
  o.temperature = 0.8;
  o.top_k = 3;
  o.repetition_penalty = 1.6;
  o.presence_penalty = 0.3;
  o.penalty_last_n = 3;
  const tokens start{2, 0};
  const std::int64_t L = 3, k = 2;
  auto processed = [&](const tokens& c) {
    infer::sampler s(o);
    std::vector<double> l = target_logits(c);
    std::vector<float> p(V);
    s.distribution(l.data(), V, c, p);
    return p;
  };
  const auto expected = exact_sequence_probs(start, L, processed);
  auto run = [&](std::uint64_t seed) {
    infer::sampling_options so = o;
    so.seed = seed;
    infer::sampler s(so), draft_rng({.seed = seed + 77777});
    infer::speculative_verifier verifier;
    tokens seq = start;
    std::vector<double> rows;
    std::vector<float> q;
    while (seq.size() < start.size() + static_cast<std::size_t>(L)) {
      rows.clear();
      q.clear();
      const std::size_t ctx = seq.size();
      for (std::int64_t i = 0; i <= k; ++i) {
        const auto l = target_logits(seq);
        rows.insert(rows.end(), l.begin(), l.end());
        if (i == k) break;
        const auto qi = softmax(draft_logits(seq));
        q.insert(q.end(), qi.begin(), qi.end());
        seq.push_back(draft_rng.draw(qi));
      }
      const auto r = verifier.verify(s, rows.data(), V, seq, k, q);
      seq.resize(ctx + static_cast<std::size_t>(r.accepted));
      seq.push_back(r.token);
    }
    return tokens(seq.begin() + 2, seq.begin() + 2 + L);
  };
  const auto r =
      histogram_test("speculative_verifier, T 0.8, top_k 3, penalties", expected, 60000, run);
  CHECK(r.p_value >= 1e-3);
  // top-k removes some sequences entirely; chi_square() fails if any of them was emitted
  CHECK(std::count(expected.begin(), expected.end(), 0.0) > 0);
}

namespace {
// A toy model over 16 tokens for greedy decoding, with a draft that often agrees.
constexpr std::int64_t G = 16;
std::vector<float> greedy_target(std::span<const std::int32_t> ctx) {
  std::vector<float> l(G);
  const auto last = ctx.back();
  for (std::int64_t t = 0; t < G; ++t)
    l[static_cast<std::size_t>(t)] =
        static_cast<float>(3 * std::sin(1.3 * (last + 1) * (t + 1) + 0.7 * t) +
                           (t == (last + 3) % G ? 2.5 : 0.0) + 0.1 * std::cos(ctx.size() * 0.37));
  return l;
}
std::vector<float> greedy_draft(std::span<const std::int32_t> ctx) {
  std::vector<float> l = greedy_target(ctx);
  for (std::int64_t t = 0; t < G; ++t)
    l[static_cast<std::size_t>(t)] += static_cast<float>(1.5 * std::cos(5.1 * t + ctx.size()));
  return l;
}
}  // namespace

TEST_CASE("temperature 0: speculative tokens are exactly the greedy tokens") {
  for (double rep : {1.0, 1.8}) {
    CAPTURE(rep);
    infer::sampling_options o;
    o.temperature = 0;
    o.repetition_penalty = rep;
    o.penalty_last_n = 6;
    const tokens start{5, 1, 9};
    const std::size_t n_new = 60;
    tokens plain = start;  // non-speculative greedy decoding
    {
      infer::sampler s(o);
      while (plain.size() < start.size() + n_new) {
        const auto l = greedy_target(plain);
        plain.push_back(s.sample(l.data(), G, plain).token);
      }
    }
    for (int drafter = 0; drafter < 2; ++drafter) {
      CAPTURE(drafter);  // 0: the draft model, 1: n-gram lookup
      infer::sampler s(o);
      infer::speculative_verifier verifier;
      tokens seq = start;
      std::int64_t proposed = 0, accepted = 0;
      std::vector<float> rows;
      std::vector<std::int32_t> buf(4);
      while (seq.size() < start.size() + n_new) {
        const std::size_t ctx = seq.size();
        std::int64_t k = 0;
        if (drafter == 0) {
          for (; k < 4; ++k) {
            const auto q = greedy_draft(seq);
            seq.push_back(
                static_cast<std::int32_t>(std::max_element(q.begin(), q.end()) - q.begin()));
          }
        } else {
          k = infer::ngram_draft(seq, {.min_n = 1, .max_n = 3, .max_draft = 4}, buf);
          seq.insert(seq.end(), buf.begin(), buf.begin() + k);
        }
        rows.clear();
        for (std::int64_t i = 0; i <= k; ++i) {
          const auto l = greedy_target(
              std::span<const std::int32_t>(seq).first(ctx + static_cast<std::size_t>(i)));
          rows.insert(rows.end(), l.begin(), l.end());
        }
        const auto r = verifier.verify(s, rows.data(), G, seq, k);
        proposed += k;
        accepted += r.accepted;
        seq.resize(ctx + static_cast<std::size_t>(r.accepted));
        seq.push_back(r.token);
      }
      seq.resize(start.size() + n_new);
      CHECK(seq == plain);
      MESSAGE(std::string(drafter == 0 ? "draft model" : "n-gram lookup")
              << ", repetition " << rep << ": accepted " << accepted << " of " << proposed
              << " drafted tokens");
    }
  }
}

TEST_CASE("verify_greedy and the rule on point masses agree") {
  const tokens draft{3, 1, 2};
  CHECK(infer::verify_greedy(draft, tokens{3, 1, 2, 0}).accepted == 3);
  CHECK(infer::verify_greedy(draft, tokens{3, 1, 2, 0}).token == 0);
  CHECK(infer::verify_greedy(draft, tokens{3, 0, 2, 0}).accepted == 1);
  CHECK(infer::verify_greedy(draft, tokens{3, 0, 2, 0}).token == 0);
  CHECK(infer::verify_greedy(draft, tokens{2, 1, 2, 0}).accepted == 0);
  CHECK(infer::verify_greedy({}, tokens{7}).token == 7);
  CHECK_THROWS_WITH_AS(infer::verify_greedy(draft, tokens{3, 1}),
                       doctest::Contains("2 target tokens for a draft of 3"), value_error);
  // One-hot p (greedy targets) make the general rule deterministic and equal to verify_greedy.
  for (const tokens& target : {tokens{3, 1, 2, 0}, tokens{3, 0, 2, 0}, tokens{1, 1, 1, 1}}) {
    std::vector<float> p(4 * 4, 0.f);
    for (std::size_t i = 0; i < 4; ++i) p[i * 4 + static_cast<std::size_t>(target[i])] = 1.f;
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
      infer::sampler rng({.seed = seed});
      const auto a = infer::verify_draft(draft, {}, p, 4, rng);
      const auto b = infer::verify_greedy(draft, target);
      CHECK(a.accepted == b.accepted);
      CHECK(a.token == b.token);
    }
  }
}

TEST_CASE("verify_draft on one position: acceptance and residual probabilities") {
  // p = (0.5, 0.3, 0.2, 0), q = (0.2, 0.6, 0, 0.2), draft token 1: accepted with
  // p(1)/q(1) = 0.5; on rejection the residual max(0, p - q) = (0.3, 0, 0.2, 0) / 0.5.
  // So P(accept) = 0.5 and P(emit 0 | reject) = 0.6, P(emit 2 | reject) = 0.4.
  const std::vector<float> p{0.5f, 0.3f, 0.2f, 0.f, 0.25f, 0.25f, 0.25f, 0.25f};
  const std::vector<float> q{0.2f, 0.6f, 0.f, 0.2f};
  const tokens draft{1};
  std::vector<std::int64_t> outcome(3);  // accept, reject->0, reject->2
  const int trials = 40000;
  for (int s = 0; s < trials; ++s) {
    infer::sampler rng({.seed = static_cast<std::uint64_t>(s)});
    const auto r = infer::verify_draft(draft, q, p, 4, rng);
    if (r.accepted == 1) {
      ++outcome[0];
    } else {
      REQUIRE((r.token == 0 || r.token == 2));
      ++outcome[r.token == 0 ? 1 : 2];
    }
  }
  const auto c = chi_square(outcome, {0.5, 0.3, 0.2});
  MESSAGE("one position: seeds 0.." << trials - 1 << ", chi2 = " << c.statistic << " (df " << c.df
                                    << "), p = " << c.p_value);
  CHECK(c.p_value >= 1e-3);
  infer::sampler rng;
  CHECK_THROWS_WITH_AS(infer::verify_draft(tokens{2}, q, p, 4, rng),
                       doctest::Contains("draft token 2 has probability 0 under its own draft"),
                       value_error);
  CHECK_THROWS_WITH_AS(infer::verify_draft(tokens{5}, q, p, 4, rng),
                       doctest::Contains("draft token 0 = 5 is outside the vocabulary [0, 4)"),
                       value_error);
  CHECK_THROWS_WITH_AS(infer::verify_draft(draft, q, std::span<const float>(p).first(4), 4, rng),
                       doctest::Contains("target_probs has 4 entries; expected (k + 1) * vocab"),
                       value_error);
  CHECK_THROWS_WITH_AS(infer::verify_draft(draft, std::span<const float>(q).first(3), p, 4, rng),
                       doctest::Contains("draft_probs has 3 entries"), value_error);
  infer::speculative_verifier v;
  const std::vector<float> logits(8, 0.f);
  CHECK_THROWS_WITH_AS(v.verify(rng, logits.data(), 4, tokens{1}, 2),
                       doctest::Contains("k = 2 draft tokens for a sequence of 1"), value_error);
}

TEST_CASE("the n-gram drafter proposes what followed the last n-gram's latest earlier match") {
  auto draft = [](const tokens& ctx, infer::ngram_options o, std::size_t room = 8) {
    tokens out(room, -1);
    out.resize(static_cast<std::size_t>(infer::ngram_draft(ctx, o, out)));
    return out;
  };
  const infer::ngram_options d{};                             // n from 3 down to 1, up to 5 tokens
  CHECK(draft({1, 2, 3, 4, 1, 2}, d) == tokens{3, 4, 1, 2});  // bigram [1 2] at 0
  CHECK(draft({5, 7, 8, 5, 9, 6, 5}, d) == tokens{9, 6, 5});  // latest earlier [5] at 3
  CHECK(draft({1, 2, 9, 2, 7, 1, 2}, {1, 2, 3}) == tokens{9, 2, 7});  // the longest n first
  CHECK(draft({1, 2, 9, 2, 7, 1, 2}, {1, 1, 3}) == tokens{7, 1, 2});  // n = 1: latest [2] at 3
  CHECK(draft({1, 2, 3}, d).empty());                                 // no earlier match
  CHECK(draft({4, 4, 4}, {1, 2, 5}) == tokens{4});  // [4 4] at 0; the follower overlaps the suffix
  CHECK(draft({1, 2, 3, 1}, {2, 3, 5}).empty());    // min_n = 2: [3 1] never occurred
  CHECK(draft({1, 2, 3, 1}, {1, 3, 5}) == tokens{2, 3, 1});
  CHECK(draft({7, 8, 9, 1, 2, 3, 4, 5, 6, 7}, d) == tokens{8, 9, 1, 2, 3});  // max_draft 5
  CHECK(draft({7, 8, 9, 1, 2, 3, 4, 5, 6, 7}, d, 2) == tokens{8, 9});        // room for 2
  CHECK(draft({7, 8, 9, 1, 7}, {1, 3, 1}) == tokens{8});
  CHECK(draft({3}, d).empty());
  CHECK(draft({}, d).empty());
  // a trigram match beats a more recent unigram match
  CHECK(draft({1, 2, 3, 10, 11, 3, 12, 1, 2, 3}, d) == tokens{10, 11, 3, 12, 1});
  tokens out(4);
  CHECK_THROWS_WITH_AS(infer::ngram_draft(tokens{1, 2}, {0, 3, 5}, out),
                       doctest::Contains("min_n = 0 must be >= 1"), value_error);
  CHECK_THROWS_WITH_AS(infer::ngram_draft(tokens{1, 2}, {3, 2, 5}, out),
                       doctest::Contains("max_n = 2 must be >= min_n = 3"), value_error);
  CHECK_THROWS_WITH_AS(infer::ngram_draft(tokens{1, 2}, {1, 2, 0}, out),
                       doctest::Contains("max_draft = 0 must be >= 1"), value_error);
}
