// tfm_bench_tokenizer: single-threaded figures for the byte-level BPE tokenizer.
//   tfm_bench_tokenizer encode TOKENIZER_FILE CORPUS REPEATS  -> median MB/s, token count
//   tfm_bench_tokenizer train CORPUS VOCAB_SIZE REPEATS       -> median seconds (count + merge)
// run_bench.py runs this next to tiktoken and tokenizers on the same corpus.
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/bpe_trainer.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: tfm_bench_tokenizer encode TOKENIZER CORPUS REPEATS | train CORPUS VOCAB "
                 "REPEATS\n");
    return 2;
  }
  try {
    const std::string mode = argv[1];
    using clock = std::chrono::steady_clock;
    if (mode == "encode") {
      const auto tok = tfm::bpe_tokenizer::from_file(argv[2]);
      const std::string text = tfm::detail::bpe::read_file(argv[3]);
      const int reps = std::atoi(argv[4]);
      std::vector<double> mbs;
      std::size_t ntok = 0;
      std::vector<std::int32_t> ids;
      for (int r = 0; r < reps; ++r) {
        ids.clear();
        ids.reserve(text.size() / 3);
        const auto t0 = clock::now();
        tok.encode_ordinary_into(text, ids);
        const double s = std::chrono::duration<double>(clock::now() - t0).count();
        mbs.push_back(static_cast<double>(text.size()) / 1e6 / s);
        ntok = ids.size();
      }
      std::printf("%.3f %zu\n", median(mbs), ntok);
    } else if (mode == "train") {
      const std::string path = argv[2];
      const std::size_t vocab = static_cast<std::size_t>(std::atol(argv[3]));
      const int reps = std::atoi(argv[4]);
      std::vector<double> secs;
      std::size_t got = 0;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = clock::now();
        tfm::bpe_trainer_options o;
        o.vocab_size = vocab;
        o.special_tokens = {"<|endoftext|>"};
        tfm::bpe_trainer tr(o);
        tr.feed_file(path);
        const auto tok = tr.train();
        secs.push_back(std::chrono::duration<double>(clock::now() - t0).count());
        got = tok.vocab_size();
      }
      std::printf("%.3f %zu\n", median(secs), got);
    } else {
      std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
      return 2;
    }
  } catch (const tfm::error& e) {
    std::fprintf(stderr, "tfm_bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
