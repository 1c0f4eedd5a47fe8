// Helpers shared by the io_gguf tests: fixture paths, file slurping, the seed, the reference
// content that tests/data/io_gguf/make_fixtures.py's write_reference() also writes.
#pragma once

#include "typeformer/io/gguf.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace gguf_test {

inline std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/io_gguf"; }
inline std::string work_dir() {
  std::filesystem::create_directories(TFM_GGUF_WORK_DIR);
  return TFM_GGUF_WORK_DIR;
}

inline std::vector<std::byte> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  for (std::size_t i = 0; i < c.size(); ++i) b[i] = static_cast<std::byte>(c[i]);
  return b;
}

/// Seed: TFM_TEST_SEED from the environment, else `fallback`.
inline std::uint64_t seed(std::uint64_t fallback) {
  if (const char* s = std::getenv("TFM_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return fallback;
}

/// (i*mul + add) mod 256, as make_fixtures.py's tensor_pattern().
inline std::vector<std::byte> pattern(std::size_t n, int mul, int add) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::byte>((static_cast<std::int64_t>(i) * mul + add) % 256);
  return b;
}

template <class T>
std::vector<std::byte> as_bytes_vec(const std::vector<T>& v) {
  std::vector<std::byte> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

/// The tensors of the reference file, in order (name, ne, type, bytes).
struct ref_tensor {
  std::string name;
  std::vector<std::int64_t> ne;
  tfm::ggml_type type;
  std::vector<std::byte> bytes;
};
inline std::vector<ref_tensor> reference_tensors() {
  using tfm::ggml_type;
  std::vector<float> f32(12), f4d(2 * 3 * 2 * 32);
  for (int i = 0; i < 12; ++i) f32[i] = static_cast<float>(i) * 0.5f - 3.0f;
  for (std::size_t i = 0; i < f4d.size(); ++i) f4d[i] = static_cast<float>(i);
  std::vector<tfm::f16> f16(16);
  for (int i = 0; i < 16; ++i) f16[i] = tfm::f16(static_cast<float>(i) / 8.0f - 1.0f);
  return {
      {"w.f32", {4, 3}, ggml_type::f32, as_bytes_vec(f32)},
      {"w.f16", {8, 2}, ggml_type::f16, as_bytes_vec(f16)},
      {"w.bf16", {32, 1}, ggml_type::bf16, pattern(64, 5, 1)},
      {"w.q8_0", {64, 2}, ggml_type::q8_0, pattern(136, 7, 3)},
      {"w.q4_1", {32, 3}, ggml_type::q4_1, pattern(60, 11, 5)},
      {"w.q4_k", {256, 1}, ggml_type::q4_K, pattern(144, 13, 7)},
      {"w.i32", {5}, ggml_type::i32, as_bytes_vec(std::vector<std::int32_t>{1, -2, 3, -4, 5})},
      {"w.i8", {7}, ggml_type::i8, as_bytes_vec(std::vector<std::int8_t>{-1, 2, -3, 4, -5, 6, -7})},
      {"w.f64", {2}, ggml_type::f64, as_bytes_vec(std::vector<double>{1.5, -2.25})},
      {"w.4d", {32, 2, 3, 2}, ggml_type::f32, as_bytes_vec(f4d)},
  };
}

/// The metadata of write_reference(), through the typed API, in the same order.
inline void add_reference_metadata(tfm::io::gguf_writer& w) {
  w.add("general.architecture", "tfm-test");
  w.add("general.name", "tfm fixture");
  w.add("t.u8", std::uint8_t{200});
  w.add("t.i8", std::int8_t{-100});
  w.add("t.u16", std::uint16_t{60000});
  w.add("t.i16", std::int16_t{-30000});
  w.add("t.u32", std::uint32_t{4000000000u});
  w.add("t.i32", std::int32_t{-2000000000});
  w.add("t.u64", std::uint64_t{(1ull << 63) + 5});
  w.add("t.i64", std::int64_t{-(1ll << 62) - 7});
  w.add("t.f32", 3.25f);
  w.add("t.f64", -1.0e300);
  w.add("t.bool", true);
  w.add("t.bool_false", false);
  w.add("t.str", "h\xc3\xa9llo \xe2\x9c\x93");
  w.set_alignment(64);
  w.add("t.arr_u8", std::vector<std::uint8_t>{1, 2, 255});
  w.add("t.arr_i8", std::vector<std::int8_t>{-128, 0, 127});
  w.add("t.arr_u16", std::vector<std::uint16_t>{65535, 1});
  w.add("t.arr_i16", std::vector<std::int16_t>{-32768, 32767});
  w.add("t.arr_u32", std::vector<std::uint32_t>{4294967295u, 0});
  w.add("t.arr_i32", std::vector<std::int32_t>{1, -2, 3});
  w.add("t.arr_u64", std::vector<std::uint64_t>{~0ull, 0});
  w.add("t.arr_i64", std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(),
                                               std::numeric_limits<std::int64_t>::max()});
  w.add("t.arr_f32", std::vector<float>{0.5f, -1.5f, 1e30f});
  w.add("t.arr_f64", std::vector<double>{0.1, -2.5e-300});
  w.add("t.arr_bool", std::vector<bool>{true, false, true});
  w.add("t.arr_str", {"a", "", "\xc3\xbc\xc3\x9f", "tokens"});
  w.add("t.nested", std::vector<std::vector<std::int32_t>>{{1, 2}, {3}});
  w.add("t.nested_str", std::vector<std::vector<std::string>>{{"x"}, {"y", "z"}});
  w.add("t.nested3", std::vector<std::vector<std::vector<std::int32_t>>>{{{7}}, {{8, 9}}});
}

}  // namespace gguf_test
