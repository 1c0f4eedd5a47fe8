// Files written by the reference (the `safetensors` Python package, see
// tests/data/io_safetensors/make_fixtures.py) read here value for value: every dtype, metadata,
// empty and scalar tensors, a file with no tensors, a sharded checkpoint with its index.
// The expected values are spelled out below, independently of the reader.
#include "typeformer/io/safetensors.hpp"

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace st = tfm::io::safetensors;

namespace {

std::string data(const std::string& name) {
  return std::string(TFM_SOURCE_DIR) + "/tests/data/io_safetensors/" + name;
}

// make_fixtures.py: FLOATS and BF16_BITS.
const double floats[] = {0.0,      -0.0,      1.5, -2.25,   65504.0,
                         INFINITY, -INFINITY, NAN, 0x1p-24, 0.0999755859375};
const std::uint16_t bf16_bits[] = {0x0000, 0x8000, 0x3FC0, 0xC010, 0x7F7F,
                                   0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x3DCD};

// make_fixtures.py: ints(dt) = [min, max, 0, 1, max // 3].
template <class T>
std::vector<T> ints() {
  using L = std::numeric_limits<T>;
  return {L::min(), L::max(), T(0), T(1), static_cast<T>(L::max() / 3)};
}

template <class T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T, class View>
std::vector<T> elements(const View& v) {
  return std::vector<T>(v.data(), v.data() + v.size());
}

template <class T>
void check_ints(const st::file& f, const char* name, st::dtype d) {
  CAPTURE(name);
  const auto& t = f.at(name);
  CHECK(t.type == d);
  REQUIRE(t.shape == std::vector<tfm::index_t>{5});
  CHECK(elements<T>(f.view<T, 1>(name)) == ints<T>());
}

}  // namespace

TEST_CASE("safetensors: numpy-written file, every numpy dtype, value for value") {
  const st::file f(data("numpy_dtypes.safetensors"));
  CHECK(f.size() == 12);
  CHECK(f.has_metadata());
  CHECK(f.metadata().size() == 1);
  CHECK(f.metadata().at("format") == "np");
  CHECK(f.header_size() % 8 == 0);

  const auto f64 = f.view<double, 2>("f64");
  CHECK(f64.extent(0) == 2);
  CHECK(f64.extent(1) == 5);
  const auto f32 = f.view<float, 2>("f32");
  CHECK(f32.extent(0) == 5);
  CHECK(f32.extent(1) == 2);
  const auto h = f.view<tfm::f16, 1>("f16");
  REQUIRE(h.size() == 10);
  for (int i = 0; i < 10; ++i) {
    CAPTURE(i);
    const double want = floats[i];
    if (std::isnan(want)) {
      CHECK(std::isnan(f64.data()[i]));
      CHECK(std::isnan(f32.data()[i]));
      CHECK(std::isnan(static_cast<float>(h.data()[i])));
    } else {
      CHECK(same_bits(f64.data()[i], want));
      CHECK(same_bits(f32.data()[i], static_cast<float>(want)));
      CHECK(same_bits(static_cast<float>(h.data()[i]), static_cast<float>(want)));
    }
  }
  // The f16 bit patterns, independently: 0x7BFF is 65504, 0x0001 the smallest subnormal.
  CHECK(h.data()[4].bits() == 0x7BFF);
  CHECK(h.data()[8].bits() == 0x0001);
  CHECK(h.data()[9].bits() == 0x2E66);

  check_ints<std::int64_t>(f, "i64", st::dtype::i64);
  check_ints<std::int32_t>(f, "i32", st::dtype::i32);
  check_ints<std::int16_t>(f, "i16", st::dtype::i16);
  check_ints<std::int8_t>(f, "i8", st::dtype::i8);
  check_ints<std::uint64_t>(f, "u64", st::dtype::u64);
  check_ints<std::uint32_t>(f, "u32", st::dtype::u32);
  check_ints<std::uint16_t>(f, "u16", st::dtype::u16);
  check_ints<std::uint8_t>(f, "u8", st::dtype::u8);

  const auto b = f.view<bool, 2>("bool");
  CHECK(b.extent(0) == 2);
  CHECK(b.extent(1) == 3);
  CHECK(elements<bool>(b) == std::vector<bool>{true, false, true, false, false, true});

  // Tensors lie in the reference's order: dtype alignment descending, then name.
  std::vector<std::string> order;
  for (const auto& t : f.tensors()) order.push_back(t.name);
  CHECK(order == std::vector<std::string>{"u64", "i64", "f64", "f32", "u32", "i32", "f16", "u16",
                                          "i16", "i8", "u8", "bool"});
  // Every tensor is naturally aligned in the mapping, so every view above was zero-copy.
  for (const auto& t : f.tensors()) {
    CHECK(t.file_offset == f.data_offset() + t.begin);
    CHECK(reinterpret_cast<std::uintptr_t>(t.bytes.data()) % st::dtype_size(t.type) == 0);
    CHECK(t.bytes.data() == f.bytes().data() + t.file_offset);
  }
}

TEST_CASE("safetensors: copy converts between dtypes") {
  const st::file f(data("numpy_dtypes.safetensors"));
  const auto as_float = f.copy<float, 2>("f64");
  const auto f64 = f.view<double, 2>("f64");
  for (tfm::index_t i = 0; i < 10; ++i) {
    const double v = f64.data()[i];
    if (std::isnan(v))
      CHECK(std::isnan(as_float.data()[i]));
    else
      CHECK(same_bits(as_float.data()[i], static_cast<float>(v)));
  }
  const auto bf = f.copy<tfm::bf16, 1>("f16");  // f16 -> bf16 through float
  CHECK(bf.data()[2].bits() == 0x3FC0);         // 1.5
  const auto wide = f.copy<std::int64_t, 1>("i8");
  CHECK(wide.data()[0] == -128);
  CHECK(wide.data()[1] == 127);
  const auto small = f.copy<std::int32_t, 1>("u8");  // all of 0..255 fit
  CHECK(small.data()[1] == 255);
  CHECK_THROWS_AS(((void)f.copy<std::int8_t, 1>("i64")), tfm::value_error);   // min does not fit
  CHECK_THROWS_AS(((void)f.copy<std::int32_t, 2>("f32")), tfm::value_error);  // float -> int
  const auto from_i16 = f.copy<std::int32_t, 1>("i16");
  CHECK(from_i16.data()[0] == -32768);
  CHECK(from_i16.data()[1] == 32767);
  const auto same = f.copy<std::int32_t, 1>("i32");
  CHECK(std::vector<std::int32_t>(same.data(), same.data() + 5) == ints<std::int32_t>());
  const auto bools = f.copy<bool, 2>("bool");
  CHECK(bools.data()[0]);
  CHECK(!bools.data()[1]);
  const auto static_shape = f.copy<float, tfm::shape<5, 2>>("f32");
  CHECK(static_shape.size() == 10);
  CHECK_THROWS_AS(((void)f.copy<float, tfm::shape<2, 5>>("f32")), tfm::shape_error);
}

TEST_CASE("safetensors: view refuses a wrong dtype, rank or alignment with a sentence") {
  const st::file f(data("numpy_dtypes.safetensors"));
  CHECK_THROWS_WITH_AS(((void)f.view<float, 2>("f64")), doctest::Contains("has dtype F64, not F32"),
                       tfm::value_error);
  CHECK_THROWS_WITH_AS(((void)f.view<double, 1>("f64")), doctest::Contains("has rank 2"),
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS(((void)f.at("nope")), doctest::Contains("has no tensor named \"nope\""),
                       tfm::value_error);
  CHECK(f.can_view<double, 2>("f64"));
  CHECK(!f.can_view<float, 2>("f64"));

  // A misaligned copy of the file in memory: views refuse, copy() works.
  const auto all = f.bytes();
  std::vector<std::byte> shifted(all.size() + 1);
  std::memcpy(shifted.data() + 1, all.data(), all.size());
  const auto g = st::file::from_bytes(std::span<const std::byte>(shifted).subspan(1), "shifted");
  const bool aligned =
      reinterpret_cast<std::uintptr_t>(g.at("f64").bytes.data()) % alignof(double) == 0;
  REQUIRE(!aligned);
  CHECK_THROWS_WITH_AS(((void)g.view<double, 2>("f64")), doctest::Contains("use copy()"),
                       tfm::value_error);
  CHECK(!g.can_view<double, 2>("f64"));
  const auto c = g.copy<double, 2>("f64");
  CHECK(c.data()[2] == 1.5);
}

TEST_CASE("safetensors: BF16, 8-bit floats and C64 written by the reference") {
  const st::file f(data("raw_dtypes.safetensors"));
  CHECK(!f.has_metadata());
  const auto bf = f.view<tfm::bf16, 1>("bf16");
  REQUIRE(bf.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(bf.data()[i].bits() == bf16_bits[i]);
  const auto as_f32 = f.copy<float, 1>("bf16");
  CHECK(as_f32.data()[2] == 1.5f);
  CHECK(as_f32.data()[4] == std::bit_cast<float>(0x7F7F0000u));

  const struct {
    const char* name;
    st::dtype type;
  } raw[] = {{"float8_e4m3fn", st::dtype::f8_e4m3},
             {"float8_e5m2", st::dtype::f8_e5m2},
             {"float8_e8m0fnu", st::dtype::f8_e8m0},
             {"float8_e4m3fnuz", st::dtype::f8_e4m3fnuz},
             {"float8_e5m2fnuz", st::dtype::f8_e5m2fnuz}};
  for (const auto& r : raw) {
    CAPTURE(r.name);
    const auto& t = f.at(r.name);
    CHECK(t.type == r.type);
    const unsigned char want[] = {0x00, 0x01, 0x7F, 0x80, 0xFF};
    REQUIRE(t.bytes.size() == 5);
    CHECK(std::memcmp(t.bytes.data(), want, 5) == 0);
    CHECK_THROWS_WITH_AS(((void)f.copy<float, 1>(r.name)), doctest::Contains("raw bytes only"),
                         tfm::value_error);
  }
  const auto& c = f.at("c64");
  CHECK(c.type == st::dtype::c64);
  REQUIRE(c.bytes.size() == 16);
  float parts[4];
  std::memcpy(parts, c.bytes.data(), 16);
  CHECK(parts[0] == 1.0f);
  CHECK(parts[1] == 2.0f);
  CHECK(parts[2] == -0.5f);
  CHECK(parts[3] == -4.0f);
}

TEST_CASE("safetensors: metadata with escapes and non-ASCII keys") {
  const st::file f(data("metadata.safetensors"));
  const auto& m = f.metadata();
  CHECK(m.size() == 4);
  CHECK(m.at("format") == "pt");
  CHECK(m.at("note") == "quote \" backslash \\ newline \n tab \t");
  CHECK(m.at("\xC3\xBCn\xC3\xAF\x63\xC3\xB6\x64\xC3\xA9 \xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87") ==
        "\xE5\x80\xA4 \xE2\x9C\x93");
  CHECK(m.at("empty").empty());
  const auto w = f.view<float, 2>("w");
  CHECK(elements<float>(w) == std::vector<float>{0, 1, 2, 3});
}

TEST_CASE("safetensors: empty tensors, scalars, a file without tensors") {
  const st::file f(data("empty_scalar.safetensors"));
  CHECK(!f.has_metadata());
  const auto e = f.view<float, 1>("empty");
  CHECK(e.size() == 0);
  CHECK(f.at("empty").bytes.empty());
  const auto& mid = f.at("empty_mid");
  CHECK(mid.shape == std::vector<tfm::index_t>{3, 0, 2});
  CHECK(mid.numel() == 0);
  CHECK(f.view<std::int64_t, 3>("empty_mid").size() == 0);
  CHECK(f.copy<std::int64_t, 3>("empty_mid").size() == 0);
  const auto s = f.view<float, 0>("scalar_f32");
  CHECK(s.size() == 1);
  CHECK(*s.data() == 2.5f);
  CHECK(f.at("scalar_f32").shape.empty());
  CHECK(*f.view<std::int8_t, 0>("scalar_i8").data() == -7);
  CHECK(*f.view<bool, 0>("scalar_bool").data());
  CHECK(f.copy<double, 0>("scalar_i8").data()[0] == -7.0);

  const st::file none(data("no_tensors.safetensors"));
  CHECK(none.size() == 0);
  CHECK(none.bytes().size() == 16);  // 8 + "{}" padded with 6 spaces
  CHECK(!none.has_metadata());
}

TEST_CASE("safetensors: a sharded checkpoint written the way transformers writes it") {
  for (const std::string& path : {data("sharded/model.safetensors.index.json"), data("sharded")}) {
    CAPTURE(path);
    const auto set = st::open(path);
    CHECK(set.shards().size() == 2);
    CHECK(set.size() == 4);
    REQUIRE(set.total_size().has_value());
    CHECK(*set.total_size() == 100);
    CHECK(set.index_metadata().at("total_size") == "100");
    std::vector<std::string> names;
    for (const auto* t : set.tensors()) names.push_back(t->name);
    CHECK(names == std::vector<std::string>{"lm_head.weight", "model.embed.weight",
                                            "model.layers.0.bias", "model.layers.1.weight"});
    CHECK(set.shard_of("model.embed.weight").name().find("model-00001-of-00002") !=
          std::string::npos);
    CHECK(set.shard_of("lm_head.weight").metadata().at("format") == "pt");
    const auto emb = set.view<float, 2>("model.embed.weight");
    CHECK(emb.extent(0) == 3);
    CHECK(emb.data()[11] == 11.0f);
    CHECK(set.view<std::int64_t, 1>("model.layers.0.bias").data()[2] == 3);
    const auto w1 = set.copy<float, 2>("model.layers.1.weight");
    CHECK(w1.data()[5] == 5.0f);
    CHECK(set.view<double, 2>("lm_head.weight").data()[1] == -0.5);
    CHECK_THROWS_AS(((void)set.at("missing")), tfm::value_error);
  }
  // A single file through the same interface.
  const auto one = st::open(data("metadata.safetensors"));
  CHECK(one.shards().size() == 1);
  CHECK(one.size() == 1);
  CHECK(!one.total_size().has_value());
}
