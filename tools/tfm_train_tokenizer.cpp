// tfm-train-tokenizer: trains a byte-level BPE tokenizer on corpus files (Hugging Face BpeTrainer
// algorithm and tie-breaking; see typeformer/tokenizer/bpe_trainer.hpp) and saves it.
//
//   tfm-train-tokenizer --vocab-size N --out FILE [--min-frequency F] [--special TOKEN]...
//                       [--pattern gpt2|cl100k|o200k] [--format json|tiktoken] corpus...
//
// The output format follows --format, else the extension of FILE (*.tiktoken -> tiktoken, else
// tokenizer.json). Exit status: 0 ok, 1 error (message on stderr), 2 bad usage.
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/bpe_trainer.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

int usage(const char* msg) {
  std::fprintf(stderr,
               "%s\nusage: tfm-train-tokenizer --vocab-size N --out FILE [--min-frequency F] "
               "[--special TOKEN]...\n"
               "                           [--pattern gpt2|cl100k|o200k] [--format json|tiktoken] "
               "corpus...\n",
               msg);
  return 2;
}

bool parse_count(const std::string& s, std::uint64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  tfm::bpe_trainer_options opt;
  std::string out, format, pattern = "gpt2";
  std::vector<std::string> corpus;
  bool have_vocab = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& v) {
      if (i + 1 >= argc) return false;
      v = argv[++i];
      return true;
    };
    std::string v;
    std::uint64_t n = 0;
    if (a == "--vocab-size") {
      if (!value(v) || !parse_count(v, n) || n == 0)
        return usage("--vocab-size needs a positive integer");
      opt.vocab_size = static_cast<std::size_t>(n);
      have_vocab = true;
    } else if (a == "--min-frequency") {
      if (!value(v) || !parse_count(v, n)) return usage("--min-frequency needs an integer");
      opt.min_frequency = n;
    } else if (a == "--special") {
      if (!value(v) || v.empty()) return usage("--special needs a token");
      opt.special_tokens.push_back(v);
    } else if (a == "--out") {
      if (!value(out)) return usage("--out needs a file");
    } else if (a == "--pattern") {
      if (!value(pattern)) return usage("--pattern needs a name");
    } else if (a == "--format") {
      if (!value(format) || (format != "json" && format != "tiktoken"))
        return usage("--format is json or tiktoken");
    } else if (a == "-h" || a == "--help") {
      usage("tfm-train-tokenizer: byte-level BPE training");
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      return usage(("unknown option: " + a).c_str());
    } else {
      corpus.push_back(a);
    }
  }
  if (!have_vocab || out.empty() || corpus.empty())
    return usage("--vocab-size, --out and a corpus file are required");
  try {
    opt.pattern = tfm::pattern_from_name(pattern);
    if (format.empty())
      format = (out.size() > 9 && out.substr(out.size() - 9) == ".tiktoken") ? "tiktoken" : "json";
    const auto t0 = std::chrono::steady_clock::now();
    tfm::bpe_trainer trainer(opt);
    for (const auto& f : corpus) trainer.feed_file(f);
    const auto t1 = std::chrono::steady_clock::now();
    const tfm::bpe_tokenizer tok = trainer.train();
    const auto t2 = std::chrono::steady_clock::now();
    if (format == "tiktoken")
      tok.save_tiktoken(out);
    else
      tok.save_hf_json(out);
    std::fprintf(
        stderr,
        "tfm-train-tokenizer: %zu distinct pieces, vocabulary %zu (%zu merges); count %.2f s, "
        "merge %.2f s; wrote %s (%s)\n",
        trainer.word_count(), tok.vocab_size(), tok.merges().size(),
        std::chrono::duration<double>(t1 - t0).count(),
        std::chrono::duration<double>(t2 - t1).count(), out.c_str(), format.c_str());
    if (format == "tiktoken" && !opt.special_tokens.empty())
      std::fprintf(
          stderr,
          "tfm-train-tokenizer: note: the tiktoken format does not store special tokens.\n");
  } catch (const tfm::error& e) {
    std::fprintf(stderr, "tfm-train-tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
