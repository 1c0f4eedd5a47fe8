// The fuzz targets of tests/fuzz/tokenizer_bpe_* run without libFuzzer: seeded random mutations
// of valid files (and random text) go through the loaders and encode(); every failure must be a
// tfm::error (a crash, another exception or a failed round trip fails the test).
#include "test_support.hpp"
#include "tokenizer_bpe_targets.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace {

std::string mutate(const std::string& seed, std::mt19937_64& rng) {
  static const char* const tokens[] = {"-1",         "99999999999999999999",
                                       "1e308",      "16777215",
                                       "2147483648", "\"",
                                       "\\",         "\\u",
                                       "\\ud800",    "{",
                                       "}",          "[",
                                       "]",          ",",
                                       ":",          "null",
                                       "true",       " ",
                                       "\n",         "=",
                                       "==",         "\xff",
                                       "\xc3",       "\xf0\x9f",
                                       "Ġ",          "\"merges\"",
                                       "\"vocab\"",  "\"Regex\"",
                                       "0",          "<|endoftext|>"};
  std::string s = seed;
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    const std::size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (rng() % 7) {
      case 0:
        if (!s.empty()) s[pos % s.size()] = static_cast<char>(rng());
        break;
      case 1:
        if (!s.empty()) s[pos % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 2:
        s.insert(pos, tokens[rng() % (sizeof(tokens) / sizeof(tokens[0]))]);
        break;
      case 3:
        s.erase(pos, 1 + rng() % 16);
        break;
      case 4:
        s.resize(pos);
        break;  // truncation
      case 5: {
        const std::size_t from = s.empty() ? 0 : rng() % s.size();
        s.insert(pos, s.substr(from, 1 + rng() % 64));  // duplicate a chunk
        break;
      }
      default:
        s.insert(pos, 1, static_cast<char>(rng()));
        break;
    }
  }
  return s;
}

template <class Target>
void run_mutations(const std::string& name, const std::string& seed_file, int n, std::uint64_t seed,
                   Target target) {
  std::mt19937_64 rng(seed);
  // The valid seed itself must load.
  target(reinterpret_cast<const std::uint8_t*>(seed_file.data()), seed_file.size());
  int other_exceptions = 0;
  for (int k = 0; k < n; ++k) {
    const std::string m = mutate(seed_file, rng);
    try {
      target(reinterpret_cast<const std::uint8_t*>(m.data()), m.size());
    } catch (const std::exception& e) {
      if (++other_exceptions <= 3)
        MESSAGE(name << ": mutation " << k << " threw a non-tfm exception: " << e.what());
    }
  }
  MESSAGE(name << ": " << n << " mutations, " << other_exceptions << " non-tfm exceptions");
  CHECK(other_exceptions == 0);
}

tfm::bpe_tokenizer seed_tokenizer() { return tfm_fuzz::small_tokenizer(tfm::split_pattern::gpt2); }

}  // namespace

TEST_CASE(
    "fuzz targets: mutated tokenizer.json, tiktoken and GPT-2 files fail only with tfm::error") {
  const std::uint64_t seed = bpe_test::seed(99);
  MESSAGE("seed " << seed);
  const auto tok = seed_tokenizer();
  const std::string json = tok.to_hf_json();
  const std::string tik = tok.to_tiktoken();
  // GPT-2 pair: encoder.json + NUL + vocab.bpe, written from the same tokenizer.
  std::string enc = "{";
  for (std::int32_t id = 0; id < static_cast<std::int32_t>(tok.vocab_size()); ++id) {
    if (tok.is_special(id)) continue;
    if (enc.size() > 1) enc += ", ";
    tfm::detail::json::append_quoted(enc, tfm::detail::bpe::map_bytes(tok.token_bytes(id)));
    enc += ": " + std::to_string(id);
  }
  enc += "}";
  std::string merges = "#version: 0.2\n";
  for (auto [a, b] : tok.merges())
    merges += tfm::detail::bpe::map_bytes(tok.token_bytes(a)) + " " +
              tfm::detail::bpe::map_bytes(tok.token_bytes(b)) + "\n";
  std::string gpt2 = enc;
  gpt2.push_back('\0');
  gpt2 += merges;
  CHECK_NOTHROW(tfm::bpe_tokenizer::from_hf_json(json));
  CHECK_NOTHROW(tfm::bpe_tokenizer::from_gpt2(enc, merges));
  run_mutations("tokenizer.json", json, 1500, seed, tfm_fuzz::fuzz_hf_json);
  run_mutations("tiktoken", tik, 1500, seed + 1, tfm_fuzz::fuzz_tiktoken);
  run_mutations("gpt2", gpt2, 1500, seed + 2, tfm_fuzz::fuzz_gpt2);
}

TEST_CASE("fuzz target encode: random bytes and mutated text round-trip under every pattern") {
  const std::uint64_t seed = bpe_test::seed(5);
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  const std::string base = std::string(tfm_fuzz::probe_text()) +
                           " 'S 'll \xc5\xbf \xe2\x80\xa8 \xcc\x81"
                           "a\xcc\x81 ";
  for (int k = 0; k < 3000; ++k) {
    std::string s;
    if (k % 3 == 0) {
      s.resize(rng() % 64);
      for (char& c : s) c = static_cast<char>(rng());
    } else {
      s = mutate(base, rng);
    }
    tfm_fuzz::fuzz_encode(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  }
  CHECK(true);
}
