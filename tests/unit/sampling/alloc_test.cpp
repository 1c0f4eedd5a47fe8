// The sampler and the speculative verifier allocate nothing after their first call for a fixed
// vocabulary: every operator new of this test executable is counted (this file replaces the
// global allocation functions).
#include <typeformer/infer/sampler.hpp>
#include <typeformer/infer/speculative.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "count_new.hpp"

TEST_CASE("sampling and verification allocate nothing after warm-up") {
  using namespace tfm;
  const std::int64_t n = 4096, k = 3;
  std::vector<float> rows(static_cast<std::size_t>((k + 1) * n));
  for (std::size_t i = 0; i < rows.size(); ++i)
    rows[i] = static_cast<float>(3 * std::sin(0.37 * static_cast<double>(i)));
  std::vector<std::int32_t> seq;  // a context followed by a draft of k tokens
  for (std::int32_t i = 0; i < 200; ++i) seq.push_back((i * 37) % static_cast<std::int32_t>(n));
  std::vector<float> probs(static_cast<std::size_t>(n)), q(static_cast<std::size_t>(k * n), 0.f);
  for (std::size_t i = 0; i < static_cast<std::size_t>(k); ++i)
    q[i * static_cast<std::size_t>(n) + static_cast<std::size_t>(seq[seq.size() - 3 + i])] = 1.f;
  std::vector<std::int32_t> drafted(8);
  for (auto source : {infer::logprob_source::raw, infer::logprob_source::processed}) {
    infer::sampling_options o;
    o.temperature = 0.9;
    o.top_p = 0.95;
    o.min_p = 0.001;
    o.typical_p = 0.97;
    o.repetition_penalty = 1.1;
    o.frequency_penalty = 0.2;
    o.presence_penalty = 0.1;
    o.logit_bias = {{5, -INFINITY}, {17, 2.0}};
    o.logprobs = source;
    infer::sampler s(o), top_k(infer::sampling_options{0.7, 40, 0.9, 3});
    infer::sampling_options go = o;
    go.temperature = 0;
    infer::sampler greedy(go);
    infer::speculative_verifier verifier, greedy_verifier;
    std::int64_t sink = 0;
    auto step = [&] {
      sink += s.sample(rows.data(), n, seq, 5).token;
      sink += top_k(rows.data(), n);
      sink += greedy.sample(rows.data(), n, seq, 3).token;
      s.distribution(rows.data() + n, n, seq, probs);
      sink += s.draw(probs);
      sink += verifier.verify(s, rows.data(), n, seq, k, q).token;
      sink += greedy_verifier.verify(greedy, rows.data(), n, seq, k).token;
      sink += infer::ngram_draft(seq, {}, drafted);
    };
    step();  // warm-up: the buffers take their sizes
    const long before = g_news.load();
    for (int i = 0; i < 30; ++i) step();
    CHECK(g_news.load() - before == 0);
    CHECK(sink != 0);
  }
}
