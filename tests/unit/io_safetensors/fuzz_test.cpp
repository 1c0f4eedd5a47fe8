// Seeded random mutations of valid safetensors files through the body of the libFuzzer target
// (tests/fuzz/io_safetensors_target.hpp): every mutant parses or fails with tfm::error, and
// whatever parses survives a rewrite unchanged. Runs where clang's fuzzer runtime is absent.
#include "io_safetensors_target.hpp"
#include "tfm_test.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::vector<std::string> seeds() {
  std::vector<std::string> s;
  const std::string d = std::string(TFM_SOURCE_DIR) + "/tests/data/io_safetensors/";
  for (const char* name :
       {"numpy_dtypes.safetensors", "raw_dtypes.safetensors", "metadata.safetensors",
        "empty_scalar.safetensors", "no_tensors.safetensors", "byte_exact.safetensors",
        "sharded/model-00001-of-00002.safetensors"}) {
    s.push_back(read_text(d + name));
    REQUIRE(s.back().size() >= 8);
  }
  return s;
}

// Generic byte edits plus edits that aim at the header: digits, the length field, JSON
// punctuation, so that mutants get past the first checks.
std::string mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](std::size_t n) { return n ? static_cast<std::size_t>(rng() % n) : 0; };
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    std::uint64_t n = 0;
    for (int i = 0; i < 8 && i < static_cast<int>(s.size()); ++i)
      n |= std::uint64_t(static_cast<unsigned char>(s[static_cast<std::size_t>(i)])) << (8 * i);
    const std::size_t header_end = static_cast<std::size_t>(
        std::min<std::uint64_t>(s.size(), 8 + std::min<std::uint64_t>(n, s.size())));
    auto in_header = [&] { return header_end > 8 ? 8 + pick(header_end - 8) : pick(s.size()); };
    switch (rng() % 9) {
      case 0:  // flip a bit anywhere
        s[pick(s.size())] ^= static_cast<char>(1 << (rng() % 8));
        break;
      case 1: {  // a header digit becomes another digit
        for (int tries = 0; tries < 16; ++tries) {
          const std::size_t i = in_header();
          if (i < s.size() && s[i] >= '0' && s[i] <= '9') {
            s[i] = static_cast<char>('0' + rng() % 10);
            break;
          }
        }
        break;
      }
      case 2: {  // insert digits after a header digit (large dims and offsets)
        const std::size_t i = in_header();
        if (i < s.size() && s[i] >= '0' && s[i] <= '9')
          s.insert(i, std::string(1 + pick(20), static_cast<char>('0' + rng() % 10)));
        break;
      }
      case 3: {  // header punctuation and tokens
        static const char* const toks[] = {",", "]",    "[",       "{",    "}", "\"",     ":", "-",
                                           "0", "null", "\\u0000", "\xFF", " ", "\"F4\"", "[]"};
        s.insert(in_header(), toks[rng() % (sizeof toks / sizeof *toks)]);
        break;
      }
      case 4:  // truncate
        s.resize(pick(s.size() + 1));
        break;
      case 5: {  // the length field: nearby or extreme
        std::uint64_t m = n;
        switch (rng() % 4) {
          case 0:
            m = n + (rng() % 17) - 8;
            break;
          case 1:
            m = ~std::uint64_t{0} - (rng() % 4);
            break;
          case 2:
            m = rng() % (s.size() + 1);
            break;
          default:
            m = std::uint64_t{1} << (rng() % 64);
        }
        for (int i = 0; i < 8 && i < static_cast<int>(s.size()); ++i)
          s[static_cast<std::size_t>(i)] = static_cast<char>((m >> (8 * i)) & 0xFF);
        break;
      }
      case 6: {  // erase a chunk
        const std::size_t a = pick(s.size());
        s.erase(a, 1 + pick(std::min<std::size_t>(16, s.size() - a)));
        break;
      }
      case 7: {  // duplicate a chunk of the header
        const std::size_t a = in_header();
        if (a >= s.size()) break;
        const std::size_t len = 1 + pick(std::min<std::size_t>(64, s.size() - a));
        s.insert(in_header(), s.substr(a, len));
        break;
      }
      default:  // append bytes to the data
        s.append(1 + pick(9), static_cast<char>(rng()));
        break;
    }
  }
  return s;
}

}  // namespace

TEST_CASE("safetensors fuzz body over seeded mutations") {
  const auto base = seeds();
  for (const auto& s : base)
    CHECK(tfm_fuzz::io_safetensors_fuzz_one(reinterpret_cast<const std::uint8_t*>(s.data()),
                                            s.size()));
  std::mt19937_64 rng(tfm_test::seed() ^ 0x5afe7e9u);
  int parsed = 0, failed = 0;
  const int iterations = 50000;
  for (int it = 0; it < iterations; ++it) {
    std::string m = base[rng() % base.size()];
    const int rounds = 1 + static_cast<int>(rng() % 3);
    for (int r = 0; r < rounds; ++r) m = mutate(std::move(m), rng);
    bool ok = false;
    bool loaded = false;
    try {
      loaded = true;
      (void)tfm::io::safetensors::file::from_bytes(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(m.data()), m.size()));
    } catch (const tfm::error&) {
      loaded = false;
    }
    (loaded ? parsed : failed) += 1;
    ok = tfm_fuzz::io_safetensors_fuzz_one(reinterpret_cast<const std::uint8_t*>(m.data()),
                                           m.size());
    if (!ok) {
      CAPTURE(it);
      CAPTURE(m.size());
      FAIL("an invariant of the fuzz contract broke");
    }
  }
  MESSAGE(iterations << " mutants: " << parsed << " parsed, " << failed
                     << " refused with tfm::error");
  CHECK(parsed > 0);
  CHECK(failed > 0);
}
