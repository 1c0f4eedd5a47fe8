// infer::engine (infer/engine.hpp): the scheduler's properties on tiny random models.
#include "engine_fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <random>
#include <thread>
#include <vector>

// Designated initializers that leave fields at their defaults are the intended use.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif

using namespace tfm;
using engine_test::record;

namespace {

const std::vector<ggml_type> quant_mix = {ggml_type::q4_0, ggml_type::q8_0, ggml_type::q4_K};

/// The greedy output of one request run alone on a fresh engine.
record alone(const infer::transformer<float>& m, const infer::request& r,
             infer::engine_options o = {}) {
  infer::engine eng(m, o);
  record rec;
  eng.submit(r, rec.callback());
  eng.run_until_idle();
  return rec;
}

/// token text for the tiny models: one letter per id.
std::string letter(std::int32_t id) { return std::string(1, static_cast<char>('a' + id % 26)); }

}  // namespace

TEST_CASE("engine: every request ends once; greedy output alone == in a batch of 1..32 others") {
  for (const auto& kind : {std::vector<ggml_type>{ggml_type::f32}, quant_mix}) {
    const std::uint64_t seed = 21;
    auto model = engine_test::tiny(seed, kind);
    const std::int64_t V = model.config().vocab;
    infer::request probe{.prompt = engine_test::prompt(seed, 37, V), .max_tokens = 24};
    probe.sampling.temperature = 0;
    const record want = alone(model, probe);
    REQUIRE(want.tokens.size() == 24);
    struct setup {
      int others;
      index_t max_seqs, batch_tokens, kv_tokens, block;
    };
    for (setup su : {setup{1, 8, 512, 0, 16}, setup{7, 8, 16, 0, 16}, setup{32, 33, 64, 0, 8},
                     setup{32, 12, 48, 320, 16}, setup{12, 16, 512, 200, 4}}) {
      MESSAGE("seed " << seed << ", " << kind.size() << " weight types, others " << su.others
                      << ", max_seqs " << su.max_seqs << ", batch tokens " << su.batch_tokens
                      << ", kv tokens " << su.kv_tokens << ", block " << su.block);
      infer::engine eng(model, {.max_seqs = su.max_seqs,
                                .max_batch_tokens = su.batch_tokens,
                                .kv_tokens = su.kv_tokens,
                                .block_tokens = su.block});
      std::mt19937_64 rng(seed + static_cast<std::uint64_t>(su.others));
      std::vector<std::unique_ptr<record>> recs;
      std::vector<infer::request> reqs;
      const int at = su.others / 2;  // the probe arrives among the others
      for (int i = 0; i <= su.others; ++i) {
        infer::request r;
        if (i == at) {
          r = probe;
        } else {
          r.prompt = engine_test::prompt(rng(), 3 + rng() % 40, V);
          r.max_tokens = static_cast<std::int64_t>(1 + rng() % 30);
          r.sampling.temperature = (i % 3 == 0) ? 0.0 : 0.9;
          r.sampling.seed = rng();
        }
        recs.push_back(std::make_unique<record>());
        reqs.push_back(r);
        eng.submit(r, recs.back()->callback());
      }
      eng.run_until_idle();
      for (std::size_t i = 0; i < recs.size(); ++i) {
        const record& rec = *recs[i];
        CAPTURE(i);
        CHECK(rec.finals == 1);
        CHECK(rec.after_final == 0);
        CHECK((rec.why == infer::finish_reason::length || rec.why == infer::finish_reason::stop));
        CHECK(rec.completion_tokens == static_cast<std::int64_t>(rec.tokens.size()));
        CHECK(rec.tokens.size() == static_cast<std::size_t>(reqs[i].max_tokens));
      }
      CHECK(recs[static_cast<std::size_t>(at)]->tokens == want.tokens);
      const infer::engine_stats st = eng.stats();
      MESSAGE("steps " << st.steps << ", preemptions " << st.preemptions << ", cached tokens "
                       << st.cached_tokens);
      CHECK(st.running == 0);
      CHECK(st.waiting == 0);
      CHECK(st.finished[static_cast<std::size_t>(infer::finish_reason::length)] == recs.size());
      if (su.kv_tokens > 0 && su.kv_tokens < 400) CHECK(st.preemptions > 0);
    }
  }
}

TEST_CASE("engine: seeded sampling is reproducible per request, whatever shares the batch") {
  auto model = engine_test::tiny(4, quant_mix);
  infer::request r{.prompt = engine_test::prompt(4, 12, model.config().vocab), .max_tokens = 20};
  r.sampling = {.temperature = 0.8, .top_k = 10, .top_p = 0.95, .seed = 77};
  const record a = alone(model, r);
  infer::engine eng(model, {.max_seqs = 4, .max_batch_tokens = 24});
  std::vector<record> recs(6);
  for (std::size_t i = 0; i < recs.size(); ++i) {
    infer::request o = r;
    if (i != 3) o.sampling.seed = 1000 + i;
    eng.submit(o, recs[i].callback());
  }
  eng.run_until_idle();
  CHECK(recs[3].tokens == a.tokens);
  CHECK(recs[0].tokens != a.tokens);  // another seed, another draw (20 tokens: ~never equal)
}

TEST_CASE("engine: prefix cache reuses whole blocks of a shared prompt prefix") {
  auto model = engine_test::tiny(6, quant_mix);
  const std::int64_t V = model.config().vocab;
  std::vector<std::int32_t> system = engine_test::prompt(60, 70, V);
  auto with_tail = [&](std::uint64_t s) {
    std::vector<std::int32_t> p = system;
    auto t = engine_test::prompt(s, 9, V);
    p.insert(p.end(), t.begin(), t.end());
    return p;
  };
  infer::request a{.prompt = with_tail(1), .max_tokens = 6},
      b{.prompt = with_tail(2), .max_tokens = 6};
  a.sampling.temperature = b.sampling.temperature = 0;
  infer::engine eng(model, {.max_seqs = 4, .block_tokens = 16});
  record ra, rb, rb_again;
  eng.submit(a, ra.callback());
  eng.run_until_idle();
  eng.submit(b, rb.callback());
  eng.run_until_idle();
  eng.submit(b, rb_again.callback());
  eng.run_until_idle();
  MESSAGE("cached tokens: first " << ra.cached_tokens << ", second " << rb.cached_tokens
                                  << ", repeat " << rb_again.cached_tokens);
  CHECK(ra.cached_tokens == 0);
  CHECK(rb.cached_tokens == 64);        // 4 whole blocks of the 70 shared tokens
  CHECK(rb_again.cached_tokens == 64);  // 79 prompt + 5 generated computed: 5 blocks, < prompt
  const record cold = alone(model, b, {.prefix_cache = false});
  CHECK(cold.cached_tokens == 0);
  CHECK(rb.tokens == cold.tokens);
  CHECK(rb_again.tokens == cold.tokens);
  CHECK(eng.stats().cached_tokens == 128);
}

TEST_CASE("engine: stop strings, stop ids, eos, max_tokens; text streamed in whole characters") {
  auto model = engine_test::tiny(8, {ggml_type::f32});
  infer::request r{.prompt = engine_test::prompt(8, 10, model.config().vocab), .max_tokens = 30};
  r.sampling.temperature = 0;
  const infer::engine_options with_text{.token_text = letter};
  const record full = alone(model, r, with_text);
  REQUIRE(full.text.size() == 30);
  CHECK(full.why == infer::finish_reason::length);

  // A stop string from the middle of the output: the text ends before its first occurrence.
  const std::string stop = full.text.substr(12, 3);
  infer::request rs = r;
  rs.stop = {"zzzzzzzzzz", stop};
  const record s = alone(model, rs, with_text);
  CHECK(s.why == infer::finish_reason::stop);
  CHECK(s.text == full.text.substr(0, full.text.find(stop)));
  CHECK(s.finals == 1);

  // A stop id: the output ends with it; its text is not reported.
  infer::request ri = r;
  ri.stop_ids = {full.tokens[5]};
  const std::size_t first = static_cast<std::size_t>(
      std::find(full.tokens.begin(), full.tokens.end(), full.tokens[5]) - full.tokens.begin());
  const record si = alone(model, ri, with_text);
  CHECK(si.why == infer::finish_reason::stop);
  CHECK(si.tokens ==
        std::vector<std::int32_t>(full.tokens.begin(),
                                  full.tokens.begin() + static_cast<std::ptrdiff_t>(first) + 1));
  CHECK(si.text == full.text.substr(0, first));

  // eos from the options unless ignore_eos.
  infer::engine_options eo = with_text;
  eo.eos_ids = {full.tokens[5]};
  CHECK(alone(model, r, eo).tokens.size() == first + 1);
  infer::request ig = r;
  ig.ignore_eos = true;
  CHECK(alone(model, ig, eo).tokens == full.tokens);

  // Multi-byte characters split over tokens: every token's text is the end of a euro sign and
  // the beginning of the next one; events carry whole characters, the last one the rest.
  infer::engine_options utf{.token_text = [](std::int32_t) { return std::string("\x82\xAC\xE2"); }};
  infer::engine eng(model, utf);
  std::vector<std::string> pieces;
  eng.submit(r, [&](const infer::token_event& e) { pieces.push_back(e.text); });
  eng.run_until_idle();
  REQUIRE(pieces.size() == 30);
  CHECK(pieces[0] == "\x82\xAC");
  for (std::size_t i = 1; i + 1 < pieces.size(); ++i) CHECK(pieces[i] == "\xE2\x82\xAC");
  CHECK(pieces.back() == "\xE2\x82\xAC\xE2");
}

TEST_CASE("engine: logprobs are the log-softmax of the logits, top-n best first") {
  auto model = engine_test::tiny(12, {ggml_type::f32});
  infer::request r{.prompt = engine_test::prompt(12, 6, model.config().vocab), .max_tokens = 5};
  r.sampling.temperature = 0;
  r.logprobs = 4;
  const record g = alone(model, r);
  REQUIRE(g.tops.size() == 5);
  for (std::size_t i = 0; i < g.tops.size(); ++i) {
    REQUIRE(g.tops[i].size() == 4);
    CHECK(g.tops[i][0].token == g.tokens[i]);  // greedy picks the most likely
    CHECK(g.tops[i][0].logprob == doctest::Approx(g.logprobs[i]).epsilon(1e-6));
    for (std::size_t k = 1; k < 4; ++k) CHECK(g.tops[i][k].logprob <= g.tops[i][k - 1].logprob);
    CHECK(g.logprobs[i] <= 0.0f);
  }
  // Independent check of the first step: log-softmax of session logits in double.
  infer::session s(model);
  auto lg = s.prefill(r.prompt);
  double mx = *std::max_element(lg.begin(), lg.end()), sum = 0;
  for (float v : lg) sum += std::exp(static_cast<double>(v) - mx);
  const double lp =
      static_cast<double>(lg[static_cast<std::size_t>(g.tokens[0])]) - mx - std::log(sum);
  CHECK(g.logprobs[0] == doctest::Approx(lp).epsilon(1e-4));
}

TEST_CASE("engine: cancellation, timeouts and throwing callbacks end requests and free blocks") {
  auto model = engine_test::tiny(14, quant_mix);
  const std::int64_t V = model.config().vocab;
  infer::engine eng(model, {.max_seqs = 4, .prefix_cache = false});
  infer::request r{.prompt = engine_test::prompt(14, 20, V), .max_tokens = 200};
  record keep, cancelled, timed, thrower;
  infer::request_id cid = 0;
  auto cb = cancelled.callback();
  cid = eng.submit(r, [&](const infer::token_event& e) {
    cb(e);
    if (cancelled.tokens.size() == 3) eng.cancel(cid);  // from the callback: thread-safe
  });
  infer::request rt = r;
  rt.timeout_s = 1e-9;
  eng.submit(rt, timed.callback());
  int calls = 0;
  eng.submit(r, [&](const infer::token_event&) {
    if (++calls == 2) throw std::runtime_error("client went away");
  });
  infer::request rk = r;
  rk.max_tokens = 40;
  eng.submit(rk, keep.callback());
  eng.run_until_idle();
  CHECK(cancelled.why == infer::finish_reason::cancelled);
  CHECK(cancelled.tokens.size() <= 4);
  CHECK(cancelled.finals == 1);
  CHECK(timed.why == infer::finish_reason::timeout);
  CHECK(timed.finals == 1);
  CHECK(calls == 2);  // no call after the throw
  CHECK(keep.why == infer::finish_reason::length);
  CHECK(keep.tokens.size() == 40);
  const auto st = eng.stats();
  CHECK(st.finished[static_cast<std::size_t>(infer::finish_reason::cancelled)] == 2);
  CHECK(st.finished[static_cast<std::size_t>(infer::finish_reason::timeout)] == 1);
  CHECK(eng.cache().used_blocks() == 0);
  eng.cancel(12345);  // unknown: ignored
  CHECK_FALSE(eng.step());
}

TEST_CASE("engine: bad requests are refused with a clear error, nothing queued") {
  auto model = engine_test::tiny(16, {ggml_type::f32}, 64);
  infer::engine eng(model, {.context = 32});
  record rec;
  auto submit = [&](infer::request r) { return eng.submit(std::move(r), rec.callback()); };
  CHECK_THROWS_WITH_AS(submit({}), doctest::Contains("no tokens"), value_error);
  CHECK_THROWS_WITH_AS(submit({.prompt = {1, 2, 999}}), doctest::Contains("vocabulary"),
                       index_error);
  CHECK_THROWS_WITH_AS(submit({.prompt = std::vector<std::int32_t>(32, 1)}),
                       doctest::Contains("context"), value_error);
  CHECK_THROWS_WITH_AS(submit({.prompt = {1}, .max_tokens = 0}), doctest::Contains("max_tokens"),
                       value_error);
  CHECK_THROWS_WITH_AS(submit({.prompt = {1}, .stop = {"x"}}), doctest::Contains("token_text"),
                       value_error);
  infer::request neg{.prompt = {1}};
  neg.sampling.temperature = -1;
  CHECK_THROWS_AS(submit(neg), value_error);
  CHECK_FALSE(eng.busy());
  CHECK(eng.stats().submitted == 0);
  // A prompt that fits the context but not the pool ends with an error, not a hang.
  infer::engine tiny_pool(model, {.context = 32, .kv_tokens = 8, .block_tokens = 4});
  record big;
  tiny_pool.submit({.prompt = std::vector<std::int32_t>(20, 1)}, big.callback());
  tiny_pool.run_until_idle();
  CHECK(big.why == infer::finish_reason::error);
  CHECK(big.error.find("KV cache") != std::string::npos);
  // The pool in bytes: whole blocks of the model's bytes per block.
  const std::size_t per_block =
      infer::paged_kv::bytes_per_block(model.config().n_layer, model.config().n_kv_head,
                                       model.config().head_dim, {.block_tokens = 4});
  infer::engine by_bytes(model, {.context = 32, .kv_bytes = 5 * per_block + 7, .block_tokens = 4});
  CHECK(by_bytes.cache().total_blocks() == 5);
  CHECK_THROWS_WITH_AS(infer::engine(model, {.kv_tokens = 8, .kv_bytes = per_block}),
                       doctest::Contains("not both"), value_error);
  CHECK_THROWS_WITH_AS(infer::engine(model, {.kv_bytes = 1}), doctest::Contains("one KV block"),
                       value_error);
}

TEST_CASE("engine: a background thread serves requests submitted from several threads") {
  auto model = engine_test::tiny(18, quant_mix);
  const std::int64_t V = model.config().vocab;
  infer::engine eng(model, {.max_seqs = 6, .max_batch_tokens = 64});
  eng.start();
  constexpr int threads = 4, each = 5;
  std::vector<record> recs(threads * each);
  std::vector<std::thread> ts;
  std::atomic<int> done{0};
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < each; ++i) {
        infer::request r{
            .prompt = engine_test::prompt(static_cast<std::uint64_t>(t * 10 + i), 9, V),
            .max_tokens = 8};
        record& rec = recs[static_cast<std::size_t>(t * each + i)];
        auto cb = rec.callback();
        eng.submit(r, [&, cb](const infer::token_event& e) {
          cb(e);
          if (e.finish != infer::finish_reason::none) ++done;
        });
      }
    });
  for (auto& t : ts) t.join();
  eng.shutdown(true);  // drains
  CHECK(done.load() == threads * each);
  for (const record& rec : recs) {
    CHECK(rec.finals == 1);
    CHECK(rec.tokens.size() == 8);
  }
  CHECK_THROWS_WITH_AS(eng.submit({.prompt = {1}}, {}), doctest::Contains("shutting down"),
                       value_error);
}
