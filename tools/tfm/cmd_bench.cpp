// tfm bench -m MODEL [-p 512] [-n 128] [-d 0] [-t THREADS] [-r REPEATS] [--kv-type T] [--json]:
// prompt processing and generation speed in llama-bench's terms. pp<P>: one prefill of P random
// tokens from an empty cache; tg<N>: N decode steps of one token from an empty cache. -d D
// (llama-bench's depth) first fills the cache with D random tokens, untimed ("tg128 @ d1024"),
// so that attention over a long context (and the KV cache type) shows. Each test runs once to
// warm up, then REPEATS times; t/s is tokens / seconds, reported as mean +/- standard deviation
// over the repeats. --json prints a list of objects with llama-bench's field names ("test",
// "avg_ts", "stddev_ts", "avg_ns", "samples_ts", ...).
#include "commands.hpp"
#include "llm.hpp"

#include "typeformer/core/random.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

namespace tfm_cli {
namespace {

struct result {
  std::string test;
  std::int64_t n_prompt = 0, n_gen = 0;
  std::vector<double> ns;  // per repeat
  double mean_ts() const { return stat(true).first; }
  std::pair<double, double> stat(bool ts) const {
    std::vector<double> v;
    for (double x : ns) v.push_back(ts ? static_cast<double>(n_prompt + n_gen) * 1e9 / x : x);
    double m = 0, s = 0;
    for (double x : v) m += x;
    m /= static_cast<double>(v.size());
    for (double x : v) s += (x - m) * (x - m);
    s = v.size() > 1 ? std::sqrt(s / static_cast<double>(v.size() - 1)) : 0;
    return {m, s};
  }
};

std::string model_type(const tfm::io::gguf_file& f, std::uint64_t& n_params) {
  std::map<std::string, std::uint64_t> by_type;  // the type holding most elements names it
  n_params = 0;
  for (const auto& t : f.tensors()) {
    n_params += t.n_elements;
    by_type[std::string(tfm::ggml_type_name(t.type))] += t.n_elements;
  }
  std::string main_type;
  std::uint64_t most = 0;
  for (const auto& [k, v] : by_type)
    if (v > most) most = v, main_type = k;
  const auto arch = f.get_or<std::string>("general.architecture", "?");
  const auto size = f.get_or<std::string>("general.size_label", "?");
  return arch + " " + size + " " + main_type;
}

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  cli::parser p(
      "tfm bench", "",
      "prompt-processing (pp) and generation (tg) tokens/s, as llama-bench measures them");
  run_options o;
  std::int64_t n_prompt = 512, n_gen = 128;
  int repeats = 5;
  bool json = false;
  std::int64_t depth = 0;
  o.declare_model(p);
  o.declare_kv(p);
  p.option("-p", "N", "prompt tokens of the pp test (0: no pp test)", n_prompt);
  p.option("-d", "N", "tokens in the cache before each test, untimed (llama-bench's depth)", depth);
  p.option("-n", "N", "generated tokens of the tg test (0: no tg test)", n_gen);
  p.option("-r", "REPEATS", "timed repeats of each test", repeats);
  p.flag("--json", "print a JSON list instead of the table", json);
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  o.apply();
  if (n_prompt < 0 || n_gen < 0 || depth < 0) throw cli::usage_error("-p, -n and -d must be >= 0");
  if (repeats < 1) throw cli::usage_error("-r must be >= 1");

  llm m = load_llm(o.model, o.dequantize);
  const auto V = m.model.config().vocab;
  const tfm::index_t ctx = depth + std::max<tfm::index_t>(n_prompt, n_gen) + 1;
  tfm::infer::session s(
      m.model,
      {.context = ctx, .batch = std::max<tfm::index_t>({n_prompt, depth, 1}), .kv = o.kv_type()});
  tfm::rng g(o.seed);
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(n_prompt)),
      filler(static_cast<std::size_t>(depth));
  for (auto& t : prompt) t = static_cast<std::int32_t>(g.randint(static_cast<std::uint64_t>(V)));
  for (auto& t : filler) t = static_cast<std::int32_t>(g.randint(static_cast<std::uint64_t>(V)));
  const std::string at = depth > 0 ? " @ d" + std::to_string(depth) : "";
  auto restart = [&] {  // an empty cache, then the depth tokens (untimed)
    s.reset();
    if (depth > 0) s.prefill(filler);
  };
  using clock = std::chrono::steady_clock;
  auto time_ns = [](auto&& fn) {
    const auto t0 = clock::now();
    fn();
    return std::chrono::duration<double, std::nano>(clock::now() - t0).count();
  };
  std::vector<result> results;
  if (n_prompt > 0) {
    result r{"pp" + std::to_string(n_prompt) + at, n_prompt, 0, {}};
    for (int i = 0; i <= repeats; ++i) {
      restart();
      const double ns = time_ns([&] { s.prefill(prompt); });
      if (i > 0) r.ns.push_back(ns);  // the first run warms up
    }
    results.push_back(r);
  }
  if (n_gen > 0) {
    result r{"tg" + std::to_string(n_gen) + at, 0, n_gen, {}};
    const std::int32_t first = m.tok.bos_id() >= 0 ? m.tok.bos_id() : 0;
    for (int i = 0; i <= repeats; ++i) {
      restart();
      const double ns = time_ns([&] {
        std::int32_t t = first;
        for (std::int64_t k = 0; k < n_gen; ++k) {
          s.decode(t);
          t = static_cast<std::int32_t>(g.randint(static_cast<std::uint64_t>(V)));
        }
      });
      if (i > 0) r.ns.push_back(ns);
    }
    results.push_back(r);
  }

  std::uint64_t n_params = 0;
  const std::string type = model_type(*m.model.file(), n_params);
  const std::size_t bytes = m.model.file()->bytes().size();
  const int threads = tfm::num_threads();
  const std::string kvn(tfm::infer::kv_type_name(o.kv_type()));
  if (json) {
    std::printf("[");
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      const auto [ns, ns_sd] = r.stat(false);
      const auto [ts, ts_sd] = r.stat(true);
      std::string samples_ns, samples_ts;
      for (double x : r.ns) {
        samples_ns += (samples_ns.empty() ? "" : ", ") + std::to_string(static_cast<long long>(x));
        samples_ts += (samples_ts.empty() ? "" : ", ") +
                      std::to_string(static_cast<double>(r.n_prompt + r.n_gen) * 1e9 / x);
      }
      std::printf(
          "%s\n  {\"build_commit\": \"typeformer\", \"model_filename\": %s, \"model_type\": %s, "
          "\"model_size\": %zu, \"model_n_params\": %llu, \"n_threads\": %d, "
          "\"n_prompt\": %lld, \"n_gen\": %lld, \"n_depth\": %lld, \"type_k\": \"%s\", "
          "\"type_v\": \"%s\", \"test\": %s, \"avg_ns\": %.0f, "
          "\"stddev_ns\": %.0f, \"avg_ts\": %.6f, \"stddev_ts\": %.6f, "
          "\"samples_ns\": [%s], \"samples_ts\": [%s]}",
          i ? "," : "", cli::json_quote(o.model).c_str(), cli::json_quote(type).c_str(), bytes,
          static_cast<unsigned long long>(n_params), threads, static_cast<long long>(r.n_prompt),
          static_cast<long long>(r.n_gen), static_cast<long long>(depth), kvn.c_str(), kvn.c_str(),
          cli::json_quote(r.test).c_str(), ns, ns_sd, ts, ts_sd, samples_ns.c_str(),
          samples_ts.c_str());
    }
    std::printf("\n]\n");
    return 0;
  }
  std::printf("| model | size | params | backend | threads | type_k/v | test | t/s |\n");
  std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n");
  for (const auto& r : results) {
    const auto [ts, sd] = r.stat(true);
    std::printf("| %s | %.2f MiB | %.2f M | CPU | %d | %s | %s | %.2f ± %.2f |\n", type.c_str(),
                static_cast<double>(bytes) / 1048576.0, static_cast<double>(n_params) / 1e6,
                threads, kvn.c_str(), r.test.c_str(), ts, sd);
  }
  std::fprintf(stderr, "tfm bench: model loaded in %.0f ms\n", m.load_ms);
  return 0;
}

}  // namespace tfm_cli
