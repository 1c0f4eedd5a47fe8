// The fuzz target of tests/fuzz/io_gguf_fuzz.cpp without libFuzzer: seeded random mutations of
// valid GGUF files go through io_gguf_fuzz::run_one; every failure must be a tfm::error (another
// exception, i.e. a broken writer round trip, or a crash fails the test).
#include "io_gguf_target.hpp"
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

namespace {

std::vector<std::byte> mutate(const std::vector<std::byte>& seed, std::mt19937_64& rng) {
  // Values that hit the interesting paths when written over a length, count, type or dim.
  static const std::uint64_t words[] = {0,
                                        1,
                                        2,
                                        3,
                                        4,
                                        5,
                                        8,
                                        9,
                                        12,
                                        13,
                                        31,
                                        32,
                                        64,
                                        255,
                                        256,
                                        65535,
                                        1ull << 31,
                                        1ull << 32,
                                        1ull << 62,
                                        1ull << 63,
                                        ~0ull,
                                        ~0ull - 31,
                                        0x7FFFFFFFFFFFFFFFull};
  std::vector<std::byte> s = seed;
  const int edits = 1 + static_cast<int>(rng() % 6);
  for (int e = 0; e < edits; ++e) {
    const std::size_t pos = s.empty() ? 0 : rng() % s.size();
    switch (rng() % 7) {
      case 0:
        if (!s.empty()) s[pos] = static_cast<std::byte>(rng());
        break;
      case 1:
        if (!s.empty()) s[pos] ^= static_cast<std::byte>(1u << (rng() % 8));
        break;
      case 2: {  // overwrite 4 or 8 bytes with an interesting word
        const std::uint64_t w = words[rng() % (sizeof(words) / sizeof(words[0]))];
        const std::size_t n = rng() % 2 ? 4 : 8;
        if (pos + n <= s.size()) std::memcpy(s.data() + pos, &w, n);
        break;
      }
      case 3:
        s.resize(pos);  // truncation
        break;
      case 4:
        s.erase(s.begin() + static_cast<std::ptrdiff_t>(pos),
                s.begin() + static_cast<std::ptrdiff_t>(std::min(s.size(), pos + 1 + rng() % 16)));
        break;
      case 5: {  // duplicate a chunk
        const std::size_t from = s.empty() ? 0 : rng() % s.size();
        const std::size_t n = std::min<std::size_t>(s.size() - from, 1 + rng() % 64);
        std::vector<std::byte> chunk(s.begin() + static_cast<std::ptrdiff_t>(from),
                                     s.begin() + static_cast<std::ptrdiff_t>(from + n));
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pos), chunk.begin(), chunk.end());
        break;
      }
      default:
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<std::byte>(rng()));
        break;
    }
  }
  return s;
}

}  // namespace

TEST_CASE("gguf fuzz target over seeded mutations") {
  const std::uint64_t seed = gguf_test::seed(0x6767756675ull);
  MESSAGE("gguf mutation seed " << seed << " (set TFM_TEST_SEED to change)");
  std::vector<std::vector<std::byte>> seeds;
  seeds.push_back(gguf_test::slurp(gguf_test::data_dir() + "/python_writer.gguf"));
  {  // a small file with alignment 1, K-quant tensors and a string array
    std::vector<std::byte> out;
    tfm::io::gguf_writer w(out);
    w.set_alignment(1);
    w.add("tokenizer.ggml.tokens", {"<s>", "a", "b"});
    w.add("x", std::vector<std::vector<float>>{{1.0f}, {}});
    const auto q6 = gguf_test::pattern(210, 3, 1), q2 = gguf_test::pattern(84, 5, 2);
    w.add_tensor("q6", {256}, tfm::ggml_type::q6_K, q6);
    w.add_tensor("q2", {256}, tfm::ggml_type::q2_K, q2);
    w.finish();
    seeds.push_back(out);
  }
  std::mt19937_64 rng(seed);
  int accepted = 0, rejected = 0, other = 0;
  const int n = 4000;
  for (int k = 0; k < n; ++k) {
    const auto m = mutate(seeds[static_cast<std::size_t>(k) % seeds.size()], rng);
    try {
      (io_gguf_fuzz::run_one(reinterpret_cast<const std::uint8_t*>(m.data()), m.size())
           ? accepted
           : rejected)++;
    } catch (const std::exception& e) {
      if (++other <= 3) MESSAGE("mutation " << k << ": " << e.what());
    }
  }
  MESSAGE(n << " mutations: " << accepted << " parsed, " << rejected << " rejected, " << other
            << " other exceptions");
  CHECK(other == 0);
  CHECK(accepted > 0);
  CHECK(rejected > 0);
  for (const auto& s : seeds)
    CHECK(io_gguf_fuzz::run_one(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
}
