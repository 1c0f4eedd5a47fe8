// bench/serve/bench_engine.cpp: the serving engine (infer/engine.hpp) in process, without HTTP.
//
//   bench_engine MODEL.gguf TEXT [--requests 32] [--prompt 128] [--gen 128] [--parallel 32]
//                [--batch-tokens 512] [--threads N] [--kv f32] [--json]
//
// Prompts are windows of `--prompt` tokens from TEXT (different offsets, so no prefix is
// shared), each generating exactly `--gen` tokens (greedy, end-of-text ignored). Figures:
//   batched   all requests submitted at once, `--parallel` sequences per step: generated tokens
//             per second of wall time, time to first token and inter-token latency percentiles
//   serial    the same requests one at a time (parallel 1): the engine without batching
//   streams8  8 concurrent requests: TTFT / ITL p50 and p99
//   prefix    a shared 1024-token system prompt + 16 own tokens: TTFT cold (first request) vs warm
//             (the next ones, the prefix taken from the prefix cache)
//   memory    KV bytes per token, peak pool use under the batched load
#include "typeformer/infer/engine.hpp"
#include "typeformer/infer/model.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
using namespace tfm;

struct timing {
  std::vector<double> ttft, itl;
  double wall = 0;
  std::int64_t tokens = 0;
  std::int64_t peak_blocks = 0, total_blocks = 0;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

/// Runs `prompts` on a fresh engine with `o`, `parallel` at most at once (all submitted at t0).
timing run(const infer::transformer<float>& m,
           const std::vector<std::vector<std::int32_t>>& prompts, std::int64_t gen,
           infer::engine_options o) {
  infer::engine eng(m, o);
  timing t;
  t.total_blocks = eng.cache().total_blocks();
  std::vector<clock_type::time_point> last(prompts.size());
  std::vector<bool> started(prompts.size(), false);
  const auto t0 = clock_type::now();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    infer::request r{.prompt = prompts[i], .max_tokens = gen};
    r.sampling.temperature = 0;
    r.ignore_eos = true;
    eng.submit(r, [&, i](const infer::token_event& e) {
      const auto now = clock_type::now();
      if (e.token < 0) return;
      ++t.tokens;
      if (!started[i]) {
        started[i] = true;
        t.ttft.push_back(std::chrono::duration<double>(now - t0).count());
      } else {
        t.itl.push_back(std::chrono::duration<double>(now - last[i]).count());
      }
      last[i] = now;
    });
  }
  while (eng.step())
    t.peak_blocks = std::max<std::int64_t>(t.peak_blocks, eng.cache().used_blocks());
  t.wall = std::chrono::duration<double>(clock_type::now() - t0).count();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: bench_engine MODEL.gguf TEXT [--requests N] [--prompt N] [--gen N] "
                 "[--parallel N] [--batch-tokens N] [--threads N] [--kv T] [--only W]\n");
    return 2;
  }
  std::int64_t requests = 32, plen = 128, gen = 128, parallel = 32, budget = 512;
  int threads = 0;
  std::string kv = "f32", only;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--requests")
      requests = std::stoll(v);
    else if (a == "--prompt")
      plen = std::stoll(v);
    else if (a == "--gen")
      gen = std::stoll(v);
    else if (a == "--parallel")
      parallel = std::stoll(v);
    else if (a == "--batch-tokens")
      budget = std::stoll(v);
    else if (a == "--threads")
      threads = std::stoi(v);
    else if (a == "--kv")
      kv = v;
    else if (a == "--only")
      only = v;
    else {
      std::fprintf(stderr, "bench_engine: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (threads > 0) set_num_threads(threads);
  auto model = load_model(argv[1]);
  const auto tok = io::load_gguf_tokenizer(*model.file());
  std::ifstream in(argv[2]);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::vector<std::int32_t> ids = tok.encode(ss.str());
  const std::size_t need = static_cast<std::size_t>(requests * plen + 1024 + 16 * 8);
  if (ids.size() < need) {
    std::fprintf(stderr, "bench_engine: TEXT has %zu tokens; %zu needed\n", ids.size(), need);
    return 2;
  }
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t r = 0; r < requests; ++r)
    prompts.emplace_back(ids.begin() + r * plen, ids.begin() + (r + 1) * plen);
  infer::engine_options base{.max_seqs = parallel,
                             .max_batch_tokens = budget,
                             .context = plen + gen + 1024 + 64,
                             .kv = infer::parse_kv_type(kv)};
  std::printf("model %s, threads %d, %lld requests x (%lld prompt + %lld generated), kv %s\n",
              argv[1], num_threads(), static_cast<long long>(requests),
              static_cast<long long>(plen), static_cast<long long>(gen), kv.c_str());
  auto report = [&](const char* name, const timing& t) {
    std::printf(
        "%-9s %8.1f tok/s  (%lld tokens in %.2f s)  TTFT p50 %.3f p99 %.3f s  ITL p50 %.1f "
        "p99 %.1f ms  peak KV blocks %lld / %lld\n",
        name, t.tokens / t.wall, static_cast<long long>(t.tokens), t.wall, pct(t.ttft, 0.5),
        pct(t.ttft, 0.99), 1e3 * pct(t.itl, 0.5), 1e3 * pct(t.itl, 0.99),
        static_cast<long long>(t.peak_blocks), static_cast<long long>(t.total_blocks));
    std::fflush(stdout);
  };
  if (only.empty() || only == "batched") report("batched", run(model, prompts, gen, base));
  if (only.empty() || only == "serial") {
    infer::engine_options o = base;
    o.max_seqs = 1;
    report("serial", run(model, prompts, gen, o));
  }
  if (only.empty() || only == "streams8") {
    infer::engine_options o = base;
    o.max_seqs = 8;
    report("streams8", run(model, {prompts.begin(), prompts.begin() + 8}, gen, o));
  }
  if (only.empty() || only == "prefix") {
    // A 1024-token system prompt shared by 8 requests, one after another.
    const std::vector<std::int32_t> sys(
        ids.begin() + static_cast<std::ptrdiff_t>(requests * plen),
        ids.begin() + static_cast<std::ptrdiff_t>(requests * plen + 1024));
    infer::engine eng(model, base);
    std::vector<double> ttft;
    for (int r = 0; r < 8; ++r) {
      std::vector<std::int32_t> p = sys;
      const auto own = ids.begin() + static_cast<std::ptrdiff_t>(requests * plen + 1024 + 16 * r);
      p.insert(p.end(), own, own + 16);
      infer::request q{.prompt = p, .max_tokens = 1};
      const auto t0 = clock_type::now();
      double first = 0;
      eng.submit(q, [&](const infer::token_event& e) {
        if (e.token >= 0 && first == 0)
          first = std::chrono::duration<double>(clock_type::now() - t0).count();
      });
      eng.run_until_idle();
      ttft.push_back(first);
    }
    std::vector<double> warm(ttft.begin() + 1, ttft.end());
    std::printf(
        "prefix    1040-token prompts sharing 1024: TTFT cold %.3f s, warm p50 %.3f s "
        "(%.1fx), cached tokens %llu\n",
        ttft[0], pct(warm, 0.5), ttft[0] / pct(warm, 0.5),
        static_cast<unsigned long long>(eng.stats().cached_tokens));
  }
  {
    infer::engine eng(model, base);
    std::printf("memory    KV %zu bytes per token (%s), pool %lld blocks of %lld tokens\n",
                eng.cache().bytes_per_token(), kv.c_str(),
                static_cast<long long>(eng.cache().total_blocks()),
                static_cast<long long>(eng.cache().block_tokens()));
  }
  return 0;
}
