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

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<long> g_news{0};
}

void* operator new(std::size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_news.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return operator new(n, std::nothrow);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

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
