// bench/serve/bench_speculative.cpp: speculative decoding (infer/spec_decode.hpp) against plain
// decoding of the same target, one sequence, same threads.
//
//   bench_speculative TARGET.gguf DRAFT.gguf TEXT [--prompt 256] [--gen 128] [--k 4]
//                     [--temp 0] [--threads N] [--repeats 3]
//
// The prompt is the first `--prompt` tokens of TEXT. Three decoders generate `--gen` tokens:
// plain (draft_tokens = 0, the same code path), the draft model, and n-gram prompt lookup; each
// the median of `--repeats` runs. Prints tokens/s, acceptance rate (accepted / drafted), tokens
// per target step and the speed-up over plain. With --temp 0 the three outputs must be equal
// (the greedy guarantee); the program checks it.
#include "typeformer/infer/model.hpp"
#include "typeformer/infer/spec_decode.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  using namespace tfm;
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: bench_speculative TARGET.gguf DRAFT.gguf TEXT [--prompt N] "
                 "[--gen N] [--k N] [--temp T] [--threads N] [--repeats N]\n");
    return 2;
  }
  std::int64_t plen = 256, gen = 128, k = 4, repeats = 3;
  double temp = 0;
  int threads = 0;
  for (int i = 4; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--prompt")
      plen = std::stoll(v);
    else if (a == "--gen")
      gen = std::stoll(v);
    else if (a == "--k")
      k = std::stoll(v);
    else if (a == "--temp")
      temp = std::stod(v);
    else if (a == "--threads")
      threads = std::stoi(v);
    else if (a == "--repeats")
      repeats = std::stoll(v);
    else {
      std::fprintf(stderr, "bench_speculative: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (threads > 0) set_num_threads(threads);
  auto target = load_model(argv[1]);
  auto draft = load_model(argv[2]);
  const auto tok = io::load_gguf_tokenizer(*target.file());
  std::ifstream in(argv[3]);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::int32_t> ids = tok.encode(ss.str());
  if (static_cast<std::int64_t>(ids.size()) < plen) {
    std::fprintf(stderr, "bench_speculative: TEXT has only %zu tokens\n", ids.size());
    return 2;
  }
  ids.resize(static_cast<std::size_t>(plen));
  const index_t ctx = plen + gen + k + 8;
  struct result {
    double tok_s;
    infer::speculative_stats st;
    std::vector<std::int32_t> out;
  };
  auto measure = [&](const infer::transformer<float>* d, std::int64_t kk) {
    std::vector<double> rates;
    result r{};
    for (std::int64_t i = 0; i <= repeats; ++i) {
      infer::speculative_decoder fresh(target, d, {.draft_tokens = kk, .context = ctx});
      const auto t0 = std::chrono::steady_clock::now();
      r.out = fresh.generate(ids, gen, {.temperature = temp, .seed = 11});
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i > 0) rates.push_back(static_cast<double>(r.out.size()) / s);  // first: warm-up
      r.st = fresh.stats();
    }
    std::sort(rates.begin(), rates.end());
    r.tok_s = rates[rates.size() / 2];
    return r;
  };
  const result plain = measure(nullptr, 0);
  const result model = measure(&draft, k);
  const result lookup = measure(nullptr, k);
  std::printf(
      "target %s, draft %s, %zu prompt tokens, %lld generated, k %lld, temp %g, threads %d\n",
      argv[1], argv[2], ids.size(), static_cast<long long>(gen), static_cast<long long>(k), temp,
      num_threads());
  std::printf("| decoder | tok/s | acceptance | tokens/step | speed-up |\n|---|---|---|---|---|\n");
  auto row = [&](const char* name, const result& r) {
    std::printf("| %s | %.1f | %.3f | %.2f | %.2fx |\n", name, r.tok_s, r.st.acceptance(),
                r.st.tokens_per_step(), r.tok_s / plain.tok_s);
  };
  row("plain", plain);
  row("draft model", model);
  row("n-gram lookup", lookup);
  if (temp == 0 && (model.out != plain.out || lookup.out != plain.out)) {
    std::fprintf(stderr, "bench_speculative: greedy outputs differ from plain decoding\n");
    return 1;
  }
  return 0;
}
