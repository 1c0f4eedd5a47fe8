// Seeded random mutations of valid model and vocabulary files fed to the loaders and, when a
// mutant loads, to encode/decode: every failure must be a tfm::error, never a crash or another
// exception. This runs the same entry points as the libFuzzer targets in tests/fuzz/ without
// needing clang's fuzzer runtime.
#include "sp_test_support.hpp"

#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/sentencepiece.hpp"
#include "typeformer/tokenizer/wordpiece.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace {

std::string mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](std::size_t n) { return n ? static_cast<std::size_t>(rng() % n) : 0; };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 7) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1 << (rng() % 8));
        break;
      case 1:  // set a byte to an interesting value
        if (!s.empty()) {
          static const unsigned char vals[] = {0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A};
          s[pick(s.size())] = static_cast<char>(vals[rng() % sizeof vals]);
        }
        break;
      case 2:  // truncate
        s.resize(pick(s.size() + 1));
        break;
      case 3: {  // insert random bytes
        const std::size_t at = pick(s.size() + 1);
        std::string ins(1 + rng() % 8, '\0');
        for (char& c : ins) c = static_cast<char>(rng());
        s.insert(at, ins);
        break;
      }
      case 4: {  // duplicate a chunk
        if (s.empty()) break;
        const std::size_t a = pick(s.size()), n = 1 + pick(std::min<std::size_t>(64, s.size() - a));
        s.insert(pick(s.size() + 1), s.substr(a, n));
        break;
      }
      case 5: {  // erase a chunk
        if (s.empty()) break;
        const std::size_t a = pick(s.size());
        s.erase(a, 1 + pick(std::min<std::size_t>(32, s.size() - a)));
        break;
      }
      default: {  // write a long varint
        if (s.size() < 10) break;
        const std::size_t a = pick(s.size() - 9);
        for (int i = 0; i < 9; ++i) s[a + static_cast<std::size_t>(i)] = '\xFF';
        break;
      }
    }
  }
  return s;
}

const char* const probe_texts[] = {"hello world",   "  a  b  ", "\xFF\xC3(",
                                   "\xE2\x96\x81x", "",         "\xF0\x9F\x98\x80 emoji",
                                   "<sep>[MASK]<s>"};

// Returns true when the mutant loaded.
bool exercise_sp(const std::string& bytes, std::mt19937_64& rng) {
  try {
    const auto tok = tfm::sentencepiece_tokenizer::from_bytes(bytes);
    for (const char* t : probe_texts) {
      const auto ids = tok.encode(t);
      (void)tok.decode(ids);
      (void)tok.encode_tokens(t);
    }
    std::vector<std::int32_t> ids(8);
    for (auto& id : ids) id = static_cast<std::int32_t>(rng() % (tok.vocab_size() + 2)) - 1;
    try {
      (void)tok.decode(ids);
    } catch (const tfm::index_error&) {
    }
    return true;
  } catch (const tfm::error&) {
    return false;
  }
}

bool exercise_wp(const std::string& text) {
  try {
    const auto tok = tfm::wordpiece_tokenizer::from_vocab_text(text);
    for (const char* t : probe_texts) (void)tok.decode(tok.encode(t));
    return true;
  } catch (const tfm::error&) {
    return false;
  }
}

}  // namespace

TEST_CASE("fuzz: mutated sentencepiece models fail only with tfm::error") {
  const unsigned seed = sp_test::seed();
  MESSAGE("mutation seed " << seed << " (set TFM_TEST_SEED to change)");
  std::mt19937_64 rng(seed);
  std::vector<std::string> seeds;
  {
    const std::string ws = "\xE2\x96\x81";
    std::vector<sp_test::piece_spec> p{{"<unk>", 0, 2}, {"<s>", 0, 3},    {ws, -1, 1},
                                       {"a", -2, 1},    {"ab", -1.5f, 1}, {ws + "ab", -1, 1},
                                       {"<sep>", 0, 4}, {"ba", -9, 5},    {"b", -3, 1}};
    seeds.push_back(sp_test::make_model(p, 1, false));
    seeds.push_back(sp_test::make_model(p, 2, false));
    seeds.push_back(sp_test::make_model(p, 3, false));
    seeds.push_back(sp_test::make_model(p, 4, false));
  }
  // The Python-trained models too when they exist (charsmaps, byte pieces, larger vocabularies).
  if (sp_test::run_generator("gen_sp_reference.py").empty()) {
    for (const char* name : {"unigram_nfkc", "bpe_roundtrip", "unigram_roundtrip"})
      seeds.push_back(sp_test::read_all(sp_test::ref_dir() + "/" + name + ".model"));
  } else {
    MESSAGE("Python-trained models unavailable; mutating hand-made models only");
  }
  std::size_t loaded = 0, rejected = 0;
  for (std::size_t k = 0; k < seeds.size(); ++k) {
    const int n = k < 4 ? 1500 : 150;
    for (int i = 0; i < n; ++i) {
      const std::string m = mutate(seeds[k], rng);
      bool ok = false;
      try {
        ok = exercise_sp(m, rng);
      } catch (const std::exception& e) {
        FAIL("seed model " << k << " mutation " << i << ": non-tfm exception: " << e.what());
      }
      (ok ? loaded : rejected) += 1;
    }
  }
  MESSAGE(loaded << " mutants loaded and encoded, " << rejected << " rejected with tfm::error");
  CHECK(rejected > 0);
  CHECK(loaded > 0);
}

TEST_CASE("fuzz: mutated vocab.txt files and random text fail only with tfm::error") {
  std::mt19937_64 rng(sp_test::seed() + 1);
  MESSAGE("mutation seed " << sp_test::seed() + 1);
  const std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n##s\nhello\nworld\n##ing\n,\n.\n";
  std::size_t loaded = 0, rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string m = mutate(vocab, rng);
    try {
      (exercise_wp(m) ? loaded : rejected) += 1;
    } catch (const std::exception& e) {
      FAIL("mutation " << i << ": non-tfm exception: " << e.what());
    }
  }
  MESSAGE(loaded << " vocab mutants loaded, " << rejected << " rejected");
  CHECK(rejected > 0);
  // Random byte strings through every encoder and the chat template's strip.
  const auto wp = tfm::wordpiece_tokenizer::from_vocab_text(vocab);
  const std::string ws = "\xE2\x96\x81";
  const auto sp = tfm::sentencepiece_tokenizer::from_bytes(sp_test::make_model(
      {{"<unk>", 0, 2}, {ws, -1, 1}, {"a", -2, 1}, {"\xC3\xA9", -2, 1}}, 1, false));
  for (int i = 0; i < 3000; ++i) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 ? rng() % 0x80 : rng());
    CHECK_NOTHROW((void)wp.decode(wp.encode(s)));
    CHECK_NOTHROW((void)sp.decode(sp.encode(s)));
    CHECK_NOTHROW((void)tfm::chat_template::strip(s));
  }
}
