// bpe_trainer against the Hugging Face tokenizers BpeTrainer (same corpus, same options): the
// vocabulary and the merge list must be identical. Also checks the trained tokenizer's basic
// contracts without Python.
#include "test_support.hpp"
#include "typeformer/tokenizer/bpe_trainer.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <random>
#include <string>

namespace {

// A small deterministic corpus from the fortunes text when present, else generated words.
std::string make_corpus(std::uint64_t seed, std::size_t bytes) {
  std::string out;
  for (const char* f :
       {"/usr/share/games/fortunes/fortunes", "/usr/share/games/fortunes/literature",
        "/usr/share/games/fortunes/science"}) {
    const std::string s = bpe_test::slurp(f);
    out += s.substr(0, bytes / 2);
    if (out.size() >= bytes) break;
  }
  std::mt19937_64 rng(seed);
  const char* syll[] = {"ka", "lo", "mi", "ne", "su", "ta", "ri", "ö", "ß",
                        "на", "中", "文", " ",  " ",  "\n", "42", "'s"};
  while (out.size() < bytes) out += syll[rng() % (sizeof(syll) / sizeof(syll[0]))];
  return out;
}

}  // namespace

TEST_CASE("bpe_trainer reproduces the Hugging Face BpeTrainer vocabulary and merges") {
  const std::uint64_t seed = bpe_test::seed(7);
  MESSAGE("seed " << seed);
  const std::string corpus_path = bpe_test::work_dir() + "/train_corpus.txt";
  {
    std::ofstream f(corpus_path, std::ios::binary);
    f << make_corpus(seed, 400000);
  }
  for (const auto& vm : {std::pair{2000, 0}, std::pair{1200, 5}}) {
    // Not a structured binding: clang 14 cannot capture those in lambdas (CAPTURE makes one).
    const int vocab = vm.first, min_freq = vm.second;
    CAPTURE(vocab);
    CAPTURE(min_freq);
    const std::string out = bpe_test::work_dir() + "/hf_trained_" + std::to_string(vocab) + ".json";
    const std::string log = bpe_test::work_dir() + "/train_reference.log";
    const int rc = bpe_test::run_python("train_reference.py " + corpus_path + " " +
                                            std::to_string(vocab) + " " + std::to_string(min_freq) +
                                            " " + out + " '<|endoftext|>' '<pad>'",
                                        log);
    if (rc != 0) {
      MESSAGE("SKIP: train_reference.py did not run (status " << rc
                                                              << "): " << bpe_test::slurp(log));
      return;
    }
    MESSAGE(bpe_test::slurp(log));
    tfm::bpe_trainer tr({.vocab_size = static_cast<std::size_t>(vocab),
                         .min_frequency = static_cast<std::uint64_t>(min_freq),
                         .special_tokens = {"<|endoftext|>", "<pad>"}});
    tr.feed_file(corpus_path);
    const tfm::bpe_tokenizer mine = tr.train();
    const tfm::bpe_tokenizer ref = tfm::bpe_tokenizer::from_hf_json_file(out);
    REQUIRE(mine.vocab_size() == ref.vocab_size());
    std::size_t diff = 0;
    for (std::int32_t id = 0; id < static_cast<std::int32_t>(ref.vocab_size()); ++id)
      diff += mine.id_to_token(id) != ref.id_to_token(id);
    CHECK(diff == 0);
    const auto m1 = mine.merges(), m2 = ref.merges();
    CHECK(m1.size() == m2.size());
    CHECK(m1 == m2);
    CHECK(mine.token_to_id("<|endoftext|>") == 0);
    CHECK(mine.token_to_id("<pad>") == 1);
    // Both tokenizers encode the corpus identically.
    const std::string text = bpe_test::slurp(corpus_path).substr(0, 50000);
    CHECK(mine.encode(text) == ref.encode(text));
  }
}

TEST_CASE("a trained tokenizer round-trips text and saves/loads in both formats") {
  const std::uint64_t seed = bpe_test::seed(11);
  MESSAGE("seed " << seed);
  const std::string corpus = make_corpus(seed, 100000);
  tfm::bpe_trainer tr({.vocab_size = 600, .special_tokens = {"<|endoftext|>"}});
  tr.feed(corpus);
  const auto tok = tr.train();
  CHECK(tok.vocab_size() == 600);
  CHECK(tok.merges().size() == 600 - 257);
  const std::string text = corpus.substr(1000, 5000) + "<|endoftext|>tail";
  const auto ids = tok.encode(text, tfm::allowed_specials::all());
  CHECK(ids.size() < text.size() * 2 / 3);  // 600 ids compress fortunes text
  CHECK(tok.decode(ids) == text);
  const std::string j = bpe_test::work_dir() + "/trained.json",
                    k = bpe_test::work_dir() + "/trained.tiktoken";
  tok.save_hf_json(j);
  tok.save_tiktoken(k);
  CHECK(tfm::bpe_tokenizer::from_hf_json_file(j).encode(text, tfm::allowed_specials::all()) == ids);
  // tiktoken semantics (rank = id, any split) give the same ids for a trainer-made vocabulary.
  CHECK(tfm::bpe_tokenizer::from_tiktoken_file(k, tfm::split_pattern::gpt2, tok.specials())
            .encode(text, tfm::allowed_specials::all()) == ids);
  tfm::bpe_trainer_options huge;
  huge.vocab_size = std::size_t{1} << 30;
  CHECK_THROWS_AS(tfm::bpe_trainer{huge}, tfm::value_error);
}
