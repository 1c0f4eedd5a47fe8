// The writer: byte-for-byte equal to the reference's output for the same tensors (fixture
// byte_exact.safetensors, written by safetensors.serialize), round trips of every dtype, its
// argument checks, sharded checkpoints, and the files check_written.py reads with the Python
// package (written into TFM_ST_WORK_DIR by the last case).
// <filesystem> (which brings std::quoted through <iomanip>) first, on purpose: the header must
// not call an unqualified helper that argument-dependent lookup would confuse with std::quoted.
#include <filesystem>

#include "typeformer/io/safetensors.hpp"
#include "typeformer/tokenizer/detail/json.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

namespace st = tfm::io::safetensors;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

std::string text_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

template <class T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size() * sizeof(T)};
}

std::string work_dir(const std::string& sub) {
  const std::string d = std::string(TFM_ST_WORK_DIR) + "/" + sub;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// The values check_written.py expects (it spells them out again).
const double halves[] = {-1.0, -0.5, 0.0, 0.5, 1.0, 1.5};

template <class T>
std::vector<T> signed_values() {
  using L = std::numeric_limits<T>;
  return {L::min(), L::max(), T(0), T(-1), T(42)};
}
template <class T>
std::vector<T> unsigned_values() {
  return {T(0), std::numeric_limits<T>::max(), T(1), T(2), T(42)};
}

}  // namespace

TEST_CASE("safetensors writer: byte for byte what the reference writes") {
  // make_fixtures.py, section 5: the same tensors through safetensors.serialize.
  tfm::tensor<float, tfm::shape<2, 3>> b{{0, 1, 2}, {3, 4, 5}};
  tfm::tensor<std::int8_t, tfm::shape<4>> a{1, -2, 3, -4};
  tfm::tensor<double, tfm::shape<2>> c{0.25, -8.0};
  tfm::tensor<std::uint8_t, tfm::shape<5>> e{0, 1, 2, 3, 4};
  tfm::tensor<bool, tfm::shape<3>> z{true, false, true};
  tfm::tensor<tfm::f16, tfm::shape<>> s;
  s.data()[0] = tfm::f16(1.5f);
  tfm::tensor<std::int32_t, tfm::shape<tfm::dyn, tfm::dyn>> n(2, 0);
  tfm::tensor<tfm::bf16, tfm::shape<3>> d;
  d.data()[0] = tfm::bf16::from_bits(0x3F80);
  d.data()[1] = tfm::bf16::from_bits(0xC000);
  d.data()[2] = tfm::bf16::from_bits(0x0000);

  st::writer w;
  // Added in an order unrelated to the file's: the writer sorts.
  w.add("z", z);
  w.add("n", n);
  w.add("s", s);
  w.add("a", a);
  w.add("d", d.view());
  w.add("e", e);
  w.add("c", c);
  w.add("b", b);
  w.set_metadata("format", "pt");
  const auto want =
      read_all(std::string(TFM_SOURCE_DIR) + "/tests/data/io_safetensors/byte_exact.safetensors");
  const auto got = w.to_bytes();
  CHECK(got.size() == want.size());
  CHECK(got == want);
  CHECK(w.header().size() % 8 == 0);

  const std::string path = work_dir("exact") + "/exact.safetensors";
  w.save(path);
  CHECK(read_all(path) == want);
  CHECK(!fs::exists(path + ".tmp"));
}

TEST_CASE("safetensors writer: round trip of every dtype, metadata, empty and scalar tensors") {
  std::vector<double> f64(halves, halves + 6);
  std::vector<std::int16_t> i16 = signed_values<std::int16_t>();
  std::vector<std::uint16_t> u16 = unsigned_values<std::uint16_t>();
  std::vector<std::uint32_t> u32 = unsigned_values<std::uint32_t>();
  std::vector<std::uint64_t> u64 = unsigned_values<std::uint64_t>();
  std::vector<std::uint8_t> f8 = {0x00, 0x01, 0x7F, 0x80, 0xFF};
  std::vector<std::uint8_t> c64(16, 0x5A);

  st::writer w;
  w.add("f64", st::dtype::f64, {2, 3}, bytes_of(f64));
  w.add("i16", st::dtype::i16, {5}, bytes_of(i16));
  w.add("u16", st::dtype::u16, {5}, bytes_of(u16));
  w.add("u32", st::dtype::u32, {5}, bytes_of(u32));
  w.add("u64", st::dtype::u64, {5}, bytes_of(u64));
  w.add("f8", st::dtype::f8_e4m3, {5}, bytes_of(f8));
  w.add("c64", st::dtype::c64, {2}, bytes_of(c64));
  tfm::tensor<float, tfm::shape<tfm::dyn>> f32(6);
  for (int i = 0; i < 6; ++i) f32.data()[i] = static_cast<float>(halves[i]);
  w.add("f32", f32);
  w.add("tmp", tfm::tensor<std::int64_t, tfm::shape<2>>{7, -7});  // rvalue: copied
  w.add("empty", tfm::tensor<float, tfm::shape<0, 4>>{});
  w.add("scalar", st::dtype::u8, {}, bytes_of(f8).subspan(2, 1));
  w.set_metadata("k", "v");
  w.set_metadata("quote\"\n", "\xE2\x9C\x93");
  w.set_metadata("k", "v2");  // replaces

  const auto bytes = w.to_bytes();
  const auto f = st::file::from_bytes(bytes, "roundtrip");
  CHECK(f.size() == 11);
  CHECK(f.metadata().size() == 2);
  CHECK(f.metadata().at("k") == "v2");
  CHECK(f.metadata().at("quote\"\n") == "\xE2\x9C\x93");
  const auto v = f.copy<double, 2>("f64");
  CHECK(std::vector<double>(v.data(), v.data() + 6) == f64);
  const auto vi = f.at("i16").bytes;
  CHECK(std::memcmp(vi.data(), i16.data(), vi.size()) == 0);
  CHECK(f.copy<std::int64_t, 1>("u32").data()[1] == 4294967295ll);
  CHECK(f.copy<std::int64_t, 1>("tmp").data()[1] == -7);
  CHECK(f.at("f8").type == st::dtype::f8_e4m3);
  CHECK(f.at("c64").bytes.size() == 16);
  CHECK(f.at("empty").shape == std::vector<tfm::index_t>{0, 4});
  CHECK(f.at("scalar").shape.empty());
  CHECK(f.copy<std::int32_t, 0>("scalar").data()[0] == 0x7F);
  // Data order: dtype descending (U64 I64 F64 C64 F32 U32 I16/U16... ), then name.
  for (const auto& t : f.tensors()) CHECK(t.begin % st::dtype_size(t.type) == 0);
  // Writing what was read reproduces the bytes (same order, same header).
  st::writer again;
  for (const auto& t : f.tensors()) again.add(t.name, t.type, t.shape, t.bytes);
  for (const auto& [k, val] : f.metadata()) again.set_metadata(k, val);
  CHECK(again.to_bytes() == bytes);
}

TEST_CASE("safetensors writer: refuses bad arguments with a sentence") {
  st::writer w;
  std::vector<float> x(6);
  w.add("x", st::dtype::f32, {2, 3}, bytes_of(x));
  CHECK_THROWS_WITH_AS(w.add("x", st::dtype::f32, {6}, bytes_of(x)),
                       doctest::Contains("duplicate tensor name \"x\""), tfm::value_error);
  CHECK_THROWS_WITH_AS(w.add("__metadata__", st::dtype::f32, {6}, bytes_of(x)),
                       doctest::Contains("reserved"), tfm::value_error);
  CHECK_THROWS_WITH_AS(w.add("bad\xFF", st::dtype::f32, {6}, bytes_of(x)),
                       doctest::Contains("not valid UTF-8 at byte 3"), tfm::value_error);
  CHECK_THROWS_WITH_AS(w.add("y", st::dtype::f32, {7}, bytes_of(x)),
                       doctest::Contains("has 24 bytes but shape [7] of F32 needs 28"),
                       tfm::value_error);
  CHECK_THROWS_WITH_AS(w.add("y", st::dtype::f32, {-1, 2}, bytes_of(x)),
                       doctest::Contains("negative dimension"), tfm::value_error);
  CHECK_THROWS_WITH_AS(
      w.add("y", st::dtype::f32, {std::int64_t{1} << 40, std::int64_t{1} << 40}, bytes_of(x)),
      doctest::Contains("more than 2^64"), tfm::value_error);
  CHECK_THROWS_AS(w.set_metadata("k", "\xC0\x80"), tfm::value_error);
  tfm::tensor<float, tfm::shape<2, 3>> t;
  const tfm::tensor_view<float, tfm::shape<3, 2>> transposed(t.data(), tfm::shape<3, 2>{}, {1, 3});
  CHECK_THROWS_WITH_AS(w.add("tt", transposed), doctest::Contains("not contiguous"),
                       tfm::value_error);
  CHECK(w.size() == 1);
  CHECK_THROWS_AS(w.save("/nonexistent-dir/x.safetensors"), tfm::io_error);
}

TEST_CASE("safetensors writer: sharded checkpoints and their index") {
  std::vector<std::vector<float>> data;
  st::writer w;
  for (int i = 0; i < 7; ++i) data.emplace_back(static_cast<std::size_t>(10 + i), float(i));
  for (int i = 0; i < 7; ++i)
    w.add("layer." + std::to_string(i) + ".weight", st::dtype::f32,
          {static_cast<tfm::index_t>(data[static_cast<std::size_t>(i)].size())},
          bytes_of(data[static_cast<std::size_t>(i)]));
  w.set_metadata("format", "pt");
  const std::string dir = work_dir("sharded_rt");
  // 100 bytes per shard, filled greedily in name order: {40, 44}, {48, 52}, {56}, {60}, {64}.
  const auto names = w.save_sharded(dir, 100);
  REQUIRE(names.size() == 6);  // 5 shards + index
  CHECK(names[0] == "model-00001-of-00005.safetensors");
  CHECK(names[4] == "model-00005-of-00005.safetensors");
  CHECK(names[5] == "model.safetensors.index.json");

  const auto set = st::open(dir);
  CHECK(set.shards().size() == 5);
  CHECK(set.size() == 7);
  CHECK(*set.total_size() == (10 + 11 + 12 + 13 + 14 + 15 + 16) * 4);
  for (int i = 0; i < 7; ++i) {
    const std::string name = "layer." + std::to_string(i) + ".weight";
    const auto v = set.view<float, 1>(name);
    CHECK(v.size() == 10 + i);
    CHECK(v.data()[0] == float(i));
    CHECK(set.shard_of(name).metadata().at("format") == "pt");
  }
  CHECK(set.shard_of("layer.0.weight").name() == set.shard_of("layer.1.weight").name());
  CHECK(set.shard_of("layer.1.weight").name() != set.shard_of("layer.2.weight").name());

  // The index as transformers writes it: indent 2, keys sorted.
  const std::string idx = text_of(dir + "/model.safetensors.index.json");
  CHECK(idx.rfind("{\n  \"metadata\": {\n    \"total_size\": 364\n  },\n  \"weight_map\": {\n"
                  "    \"layer.0.weight\": \"model-00001-of-00005.safetensors\",\n",
                  0) == 0);
  const auto doc = tfm::detail::json::parse(idx, "index");
  CHECK(doc.find("weight_map")->object.size() == 7);

  // A tensor larger than the limit gets a shard of its own; one shard still gets an index.
  const std::string one = work_dir("sharded_one");
  CHECK(w.save_sharded(one, 1u << 30, "ckpt").front() == "ckpt-00001-of-00001.safetensors");
  CHECK(st::open(one + "/ckpt.safetensors.index.json").size() == 7);
  const std::string big = work_dir("sharded_big");
  CHECK(w.save_sharded(big, 1).size() == 8);
}

// Writes the files check_written.py reads with the Python package (ctest runs this binary
// first: the FIXTURES_SETUP of tfm_test_io_safetensors_python).
TEST_CASE("safetensors writer: files for the Python reader") {
  const std::string dir = work_dir("for_python");
  std::vector<double> f64(halves, halves + 6);
  std::vector<float> f32(f64.begin(), f64.end());
  std::vector<tfm::f16> f16;
  std::vector<tfm::bf16> bf16;
  for (double v : f64) {
    f16.emplace_back(static_cast<float>(v));
    bf16.emplace_back(static_cast<float>(v));
  }
  auto i64 = signed_values<std::int64_t>();
  auto i32 = signed_values<std::int32_t>();
  auto i16 = signed_values<std::int16_t>();
  auto i8 = signed_values<std::int8_t>();
  auto u64 = unsigned_values<std::uint64_t>();
  auto u32 = unsigned_values<std::uint32_t>();
  auto u16 = unsigned_values<std::uint16_t>();
  auto u8 = unsigned_values<std::uint8_t>();
  const bool bools[] = {true, false, false, true};
  std::vector<std::uint8_t> f8 = {0x00, 0x01, 0x7F, 0x80, 0xFF};
  const float scalar = 3.25f;

  st::writer w;
  w.add("f64", st::dtype::f64, {2, 3}, bytes_of(f64));
  w.add("f32", st::dtype::f32, {3, 2}, bytes_of(f32));
  w.add("f16", st::dtype::f16, {6}, bytes_of(f16));
  w.add("bf16", st::dtype::bf16, {6}, bytes_of(bf16));
  w.add("i64", st::dtype::i64, {5}, bytes_of(i64));
  w.add("i32", st::dtype::i32, {5}, bytes_of(i32));
  w.add("i16", st::dtype::i16, {5}, bytes_of(i16));
  w.add("i8", st::dtype::i8, {5}, bytes_of(i8));
  w.add("u64", st::dtype::u64, {5}, bytes_of(u64));
  w.add("u32", st::dtype::u32, {5}, bytes_of(u32));
  w.add("u16", st::dtype::u16, {5}, bytes_of(u16));
  w.add("u8", st::dtype::u8, {5}, bytes_of(u8));
  w.add("bool", st::dtype::boolean, {2, 2}, std::as_bytes(std::span<const bool>(bools, 4)));
  w.add("f8_e4m3", st::dtype::f8_e4m3, {5}, bytes_of(f8));
  w.add("f8_e5m2", st::dtype::f8_e5m2, {5}, bytes_of(f8));
  w.add("scalar", st::dtype::f32, {}, std::as_bytes(std::span<const float>(&scalar, 1)));
  w.add("empty", st::dtype::i32, {0, 3}, {});
  w.set_metadata("format", "tfm");
  w.set_metadata("\xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87",
                 "\xD0\xB7\xD0\xBD\xD0\xB0\xD1\x87\xD0\xB5\xD0\xBD\xD0\xB8\xD0\xB5 \"q\"\n");
  w.save(dir + "/cpp_dtypes.safetensors");

  // Numpy dtypes only and one metadata key: Python's save() must produce these very bytes.
  st::writer exact;
  const auto all = w.to_bytes();
  const auto parsed = st::file::from_bytes(all);
  for (const char* name :
       {"f64", "f32", "f16", "i64", "i32", "i8", "u16", "u8", "bool", "scalar", "empty"}) {
    const auto& t = parsed.at(name);
    exact.add(t.name, t.type, t.shape, t.bytes);
  }
  exact.set_metadata("format", "pt");
  exact.save(dir + "/cpp_exact.safetensors");

  // Two shards of 64 bytes at most.
  std::vector<float> wa(8, 1.0f), wb(8, 2.0f), wc(4, 3.0f);
  st::writer sh;
  sh.add("model.a.weight", st::dtype::f32, {2, 4}, bytes_of(wa));
  sh.add("model.b.weight", st::dtype::f32, {8}, bytes_of(wb));
  sh.add("model.c.bias", st::dtype::f32, {4}, bytes_of(wc));
  sh.set_metadata("format", "pt");
  fs::create_directories(dir + "/sharded");
  CHECK(sh.save_sharded(dir + "/sharded", 64).size() == 3);
}
