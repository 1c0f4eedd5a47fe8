// The element-type table and block structs against gguf-py's GGML_QUANT_SIZES, and the
// reference dequantizers against gguf.quants.dequantize (fixtures of make_fixtures.py: random
// blocks with zero, NaN, Inf, subnormal and extreme scales). Bit patterns must agree; a NaN
// must be a NaN (payloads differ between numpy builds).
#include "typeformer/quant/dequantize.hpp"
#include "test_support.hpp"
#include "typeformer/quant/blocks.hpp"

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace {

struct fixture {
  tfm::ggml_type type;
  std::uint32_t n_blocks, block_bytes, block_elements;
  std::uint64_t seed;
  std::vector<std::byte> blocks;
  std::vector<float> expected;
};

fixture load_fixture(const std::string& name) {
  const auto b = gguf_test::slurp(gguf_test::data_dir() + "/dequant_" + name + ".bin");
  REQUIRE(b.size() >= 28);
  REQUIRE(std::memcmp(b.data(), "TFMQ", 4) == 0);
  fixture f;
  std::uint32_t code;
  std::memcpy(&code, b.data() + 4, 4);
  std::memcpy(&f.n_blocks, b.data() + 8, 4);
  std::memcpy(&f.block_bytes, b.data() + 12, 4);
  std::memcpy(&f.block_elements, b.data() + 16, 4);
  std::memcpy(&f.seed, b.data() + 20, 8);
  f.type = static_cast<tfm::ggml_type>(code);
  const std::size_t nb = std::size_t{f.n_blocks} * f.block_bytes;
  const std::size_t ne = std::size_t{f.n_blocks} * f.block_elements;
  REQUIRE(b.size() == 28 + nb + ne * 4);
  f.blocks.assign(b.begin() + 28, b.begin() + 28 + static_cast<std::ptrdiff_t>(nb));
  f.expected.resize(ne);
  std::memcpy(f.expected.data(), b.data() + 28 + nb, ne * 4);
  return f;
}

/// Number of elements whose bits differ (NaN matches any NaN).
std::size_t mismatches(const std::vector<float>& got, const std::vector<float>& want,
                       const std::string& what) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const bool same = std::isnan(want[i]) ? std::isnan(got[i])
                                          : std::bit_cast<std::uint32_t>(got[i]) ==
                                                std::bit_cast<std::uint32_t>(want[i]);
    if (!same && ++bad <= 5)
      MESSAGE(what << ": element " << i << " got " << got[i] << " (0x" << std::hex
                   << std::bit_cast<std::uint32_t>(got[i]) << ") want " << want[i] << " (0x"
                   << std::bit_cast<std::uint32_t>(want[i]) << std::dec << ")");
  }
  return bad;
}

template <class Block>
std::vector<float> per_block(const fixture& f) {
  std::vector<float> y(f.expected.size());
  for (std::uint32_t i = 0; i < f.n_blocks; ++i) {
    Block b;
    std::memcpy(&b, f.blocks.data() + std::size_t{i} * sizeof(Block), sizeof(Block));
    tfm::dequantize_block(b, y.data() + std::size_t{i} * tfm::block_traits<Block>::block_elements);
  }
  return y;
}

}  // namespace

TEST_CASE("ggml type table equals gguf-py's GGML_QUANT_SIZES") {
  std::ifstream in(gguf_test::data_dir() + "/ggml_types.txt");
  REQUIRE(in.good());
  std::string line;
  int rows = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string name;
    std::uint32_t code, block, bytes;
    ls >> name >> code >> block >> bytes;
    const tfm::ggml_type_info* t = tfm::find_ggml_type(code);
    REQUIRE_MESSAGE(t != nullptr, name << " (" << code << ") is missing from the table");
    CHECK(t->name == name);
    CHECK(t->block_elements == block);
    if (name == "Q8_1") {
      // gguf-py 0.19 still lists Q8_1 as 40 bytes (float d, s); ggml-common.h defines
      // block_q8_1 { ggml_half d, s; int8 qs[32]; } = 36 with a static_assert, and ggml is the
      // format. Q8_1 is an internal dot-product type that files do not hold.
      CHECK(t->block_bytes == 36);
      CHECK(bytes == 40);
    } else {
      CHECK_MESSAGE(t->block_bytes == bytes, name);
    }
    ++rows;
  }
  CHECK(rows == static_cast<int>(tfm::ggml_upstream_type_count));
  CHECK(tfm::find_ggml_type(4) == nullptr);   // retired Q4_2
  CHECK(tfm::find_ggml_type(31) == nullptr);  // retired Q4_0_4_4
  CHECK(tfm::find_ggml_type(1000) == nullptr);
  CHECK(tfm::ggml_type_name(tfm::ggml_type::q6_K) == "Q6_K");
}

TEST_CASE("block structs have the published sizes") {
  static_assert(sizeof(tfm::block_q4_0) == 18 && sizeof(tfm::block_q4_1) == 20 &&
                sizeof(tfm::block_q5_0) == 22 && sizeof(tfm::block_q5_1) == 24 &&
                sizeof(tfm::block_q8_0) == 34 && sizeof(tfm::block_q2_K) == 84 &&
                sizeof(tfm::block_q3_K) == 110 && sizeof(tfm::block_q4_K) == 144 &&
                sizeof(tfm::block_q5_K) == 176 && sizeof(tfm::block_q6_K) == 210 &&
                sizeof(tfm::block_q8_K) == 292);
  static_assert(tfm::ggml_block<tfm::block_q4_K> && !tfm::ggml_block<float>);
  CHECK(tfm::block_traits<tfm::block_q6_K>::block_elements == 256);
  CHECK(tfm::block_traits<tfm::block_q8_0>::type == tfm::ggml_type::q8_0);
  CHECK(offsetof(tfm::block_q6_K, d) == 208);
  CHECK(offsetof(tfm::block_q2_K, d) == 80);
  CHECK(offsetof(tfm::block_q3_K, d) == 108);
}

TEST_CASE("dequantize is bitwise identical to gguf.quants.dequantize") {
  const char* names[] = {"F16",  "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"};
  for (const char* cname : names) {
    const std::string name = cname;
    CAPTURE(name);
    const fixture f = load_fixture(name);
    if (name == "F16") MESSAGE("fixtures of make_fixtures.py seed " << f.seed);
    INFO(f.n_blocks << " blocks");
    const auto& info = tfm::ggml_type_info_of(f.type);
    REQUIRE(info.name == name);
    REQUIRE(info.block_bytes == f.block_bytes);
    REQUIRE(info.block_elements == f.block_elements);

    // Through the run API, from an odd address (blocks need no alignment).
    std::vector<std::byte> shifted(f.blocks.size() + 1);
    std::memcpy(shifted.data() + 1, f.blocks.data(), f.blocks.size());
    const std::vector<float> got =
        tfm::dequantize(f.type, std::span<const std::byte>(shifted.data() + 1, f.blocks.size()));
    CHECK(mismatches(got, f.expected, name) == 0);

    // Through the per-block API.
    std::vector<float> pb;
    switch (f.type) {
      case tfm::ggml_type::q4_0:
        pb = per_block<tfm::block_q4_0>(f);
        break;
      case tfm::ggml_type::q4_1:
        pb = per_block<tfm::block_q4_1>(f);
        break;
      case tfm::ggml_type::q5_0:
        pb = per_block<tfm::block_q5_0>(f);
        break;
      case tfm::ggml_type::q5_1:
        pb = per_block<tfm::block_q5_1>(f);
        break;
      case tfm::ggml_type::q8_0:
        pb = per_block<tfm::block_q8_0>(f);
        break;
      case tfm::ggml_type::q2_K:
        pb = per_block<tfm::block_q2_K>(f);
        break;
      case tfm::ggml_type::q3_K:
        pb = per_block<tfm::block_q3_K>(f);
        break;
      case tfm::ggml_type::q4_K:
        pb = per_block<tfm::block_q4_K>(f);
        break;
      case tfm::ggml_type::q5_K:
        pb = per_block<tfm::block_q5_K>(f);
        break;
      case tfm::ggml_type::q6_K:
        pb = per_block<tfm::block_q6_K>(f);
        break;
      case tfm::ggml_type::q8_K:
        pb = per_block<tfm::block_q8_K>(f);
        break;
      default:
        pb = got;
        break;
    }
    CHECK(mismatches(pb, f.expected, name + " per block") == 0);
  }
}

TEST_CASE("dequantize rejects partial blocks, short outputs and types it cannot convert") {
  std::vector<std::byte> b(35);
  std::vector<float> y(32);
  CHECK_THROWS_AS(tfm::dequantize(tfm::ggml_type::q8_0, b, y), tfm::value_error);
  CHECK_THROWS_AS(
      tfm::dequantize(tfm::ggml_type::q8_0, std::span(b).first(34), std::span(y).first(31)),
      tfm::value_error);
  CHECK_NOTHROW(tfm::dequantize(tfm::ggml_type::q8_0, std::span(b).first(34), y));
  CHECK_THROWS_AS(tfm::dequantize(tfm::ggml_type::iq2_xxs, std::span(b).first(0), {}),
                  tfm::unsupported_error);
  CHECK_THROWS_AS(tfm::dequantize(static_cast<tfm::ggml_type>(4), std::span(b).first(0), {}),
                  tfm::value_error);
  CHECK(tfm::dequantize(tfm::ggml_type::f32, std::span(b).first(0)).empty());
}
