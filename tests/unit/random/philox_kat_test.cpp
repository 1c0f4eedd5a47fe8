// Philox4x32 known-answer vectors from Random123's kat_vectors file (D. E. Shaw Research,
// Random123 1.x distribution, "philox4x32 7" and "philox4x32 10" lines; reproduced in
// DEShawResearch/fs123 core123/ut/ut_philox.cpp). Each line: counter[4] key[2] -> output[4].
#include "typeformer/core/random.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdint>

namespace {
struct kat {
  std::array<std::uint32_t, 4> ctr;
  std::array<std::uint32_t, 2> key;
  std::array<std::uint32_t, 4> out;
};

constexpr kat kat10[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

constexpr kat kat7[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
     {0x00000000, 0x00000000},
     {0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
     {0xffffffff, 0xffffffff},
     {0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
     {0xa4093822, 0x299f31d0},
     {0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}},
};
}  // namespace

// The generator is constexpr: the first vector is checked at compile time too.
static_assert(tfm::philox4x32({0, 0, 0, 0}, {0, 0}) ==
              std::array<std::uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors") {
  for (const kat& k : kat10) CHECK(tfm::philox4x32(k.ctr, k.key) == k.out);
}

TEST_CASE("philox4x32-7 matches the Random123 known-answer vectors") {
  for (const kat& k : kat7) CHECK(tfm::philox4x32_r<7>(k.ctr, k.key) == k.out);
}

TEST_CASE("the documented counter layout maps (seed, index) onto philox4x32-10") {
  const std::uint64_t seed = 0x299f31d0a4093822ull;  // key {0xa4093822, 0x299f31d0}
  // index 4 * block + word, block = 0x05a308d3'243f6a88 (< 2^62 so the index fits in 64 bits),
  // stream 0 (counter words 2, 3 = 0).
  const std::uint64_t block = 0x05a308d3243f6a88ull;
  const auto w = tfm::philox4x32({0x243f6a88, 0x05a308d3, 0, 0}, {0xa4093822, 0x299f31d0});
  for (unsigned j = 0; j < 4; ++j) {
    CHECK(tfm::random_u32(seed, block * 4 + j) == w[j]);
    CHECK(tfm::uniform_float(seed, block * 4 + j) == static_cast<float>(w[j] >> 8) * 0x1p-24f);
  }
}
