// A corpus of malformed GGUF files built here (TESTING.md "Files and parsers"; the 2024 GGUF
// CVEs): truncation at every byte, huge counts and lengths, overflowing dims, bad types and
// versions, misaligned/overlapping/out-of-range tensors, duplicate names, bad alignment, bad
// UTF-8, over-deep arrays. Every case must be a tfm::parse_error whose message names the field;
// the heap allocated while parsing a hostile file stays within a small multiple of its size.
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

// ---- allocation accounting (this test binary only) ---------------------------------------------
namespace {
std::atomic<std::size_t> g_live{0}, g_peak{0};
void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n + 16);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<std::size_t*>(p) = n;
  const std::size_t live = g_live.fetch_add(n) + n;
  std::size_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  return static_cast<char*>(p) + 16;
}
void counted_free(void* q) noexcept {
  if (q == nullptr) return;
  void* p = static_cast<char*>(q) - 16;
  g_live.fetch_sub(*static_cast<std::size_t*>(p));
  std::free(p);
}
}  // namespace
void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): every form that can
// reach the replaced delete must come from counted_alloc.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

namespace {

using tfm::io::gguf_file;

/// Little-endian byte builder.
struct raw {
  std::vector<std::byte> b;
  raw& u32(std::uint32_t v) { return put(&v, 4); }
  raw& u64(std::uint64_t v) { return put(&v, 8); }
  raw& u8(std::uint8_t v) { return put(&v, 1); }
  raw& str(std::string_view s) {
    u64(s.size());
    return put(s.data(), s.size());
  }
  raw& put(const void* p, std::size_t n) {
    const auto* c = static_cast<const std::byte*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  raw& pad(std::size_t align) {
    while (b.size() % align != 0) b.push_back(std::byte{0});
    return *this;
  }
  raw& zeros(std::size_t n) {
    b.insert(b.end(), n, std::byte{0});
    return *this;
  }
};

raw header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
  raw r;
  r.u32(0x46554747u).u32(version).u64(n_tensors).u64(n_kv);
  return r;
}

/// Parses `bytes`; returns the parse_error message, or "(accepted)". Also records the peak heap
/// growth during the parse.
std::string parse_error_of(const std::vector<std::byte>& bytes, std::size_t* peak = nullptr) {
  const std::size_t before = g_live.load();
  g_peak.store(before);
  std::string msg = "(accepted)";
  try {
    (void)gguf_file::from_bytes(bytes, "bad.gguf");
  } catch (const tfm::parse_error& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("(wrong exception) ") + e.what();
  }
  if (peak != nullptr) *peak = g_peak.load() - before;
  return msg;
}

struct case_t {
  const char* what;
  std::vector<std::byte> bytes;
  std::vector<std::string> must_contain;
};

/// One tensor info: name, ne, type, offset.
raw& tensor_info(raw& r, std::string_view name, std::vector<std::uint64_t> ne, std::uint32_t type,
                 std::uint64_t offset) {
  r.str(name).u32(static_cast<std::uint32_t>(ne.size()));
  for (auto v : ne) r.u64(v);
  return r.u32(type).u64(offset);
}

std::vector<case_t> corpus() {
  std::vector<case_t> c;
  auto add = [&](const char* what, raw r, std::vector<std::string> must) {
    c.push_back({what, std::move(r.b), std::move(must)});
  };
  const std::uint64_t big = 1ull << 63;
  // header
  {
    raw r = header(0, 0);
    r.b[0] = std::byte{'X'};
    add("bad magic", r, {"header magic", "at byte 0"});
  }
  add("version 1", header(0, 0, 1), {"header version", "version 1", "at byte 4"});
  add("version 4", header(0, 0, 4), {"header version", "unknown GGUF version 4"});
  add("version 0", header(0, 0, 0), {"header version"});
  add("big-endian", header(0, 0, 0x03000000u), {"header version", "big-endian"});
  add("huge n_kv", header(0, big), {"header n_kv"});
  add("huge n_tensors", header(~0ull, 0), {"header n_tensors"});
  // keys and values
  {
    raw r = header(0, 1);
    r.u64(big).u32(4).u32(1);
    add("2^63 key length", r, {"kv 0 key", "string length 9223372036854775808"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(8).u64(big).zeros(8);
    add("2^63 string value length", r, {"kv 0 'k' value", "string length"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(9).u32(0).u64(big).zeros(16);
    add("2^63 u8 array", r, {"kv 0 'k' value", "array of 9223372036854775808 uint8"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(9).u32(8).u64(1ull << 40).zeros(64);
    add("2^40 string array", r, {"kv 0 'k' value", "array of 1099511627776 string"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(9).u32(9).u64(~0ull).zeros(32);
    add("2^64-1 nested arrays", r, {"kv 0 'k' value", "array"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(9).u32(8).u64(2).str("ok").u64(1000).zeros(4);
    add("string in array past the end", r, {"kv 0 'k' value", "string length 1000"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(13).zeros(8);
    add("unknown value type", r, {"kv 0 'k' value type", "unknown value type 13"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(9).u32(77).u64(1).zeros(8);
    add("unknown array element type", r, {"kv 0 'k' value", "unknown array element type 77"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(9);
    for (int d = 0; d < 9; ++d) r.u32(9).u64(1);
    r.u32(0).u64(1).u8(1);
    add("arrays nested 10 deep", r, {"kv 0 'k' value", "nested deeper than 8"});
  }
  {
    raw r = header(0, 1);
    r.str("").u32(0).u8(1).zeros(16);
    add("empty key", r, {"kv 0 key", "empty"});
  }
  {
    raw r = header(0, 1);
    r.str("ab\xc0\x80").u32(0).u8(1).zeros(16);
    add("overlong UTF-8 key", r, {"kv 0 key", "UTF-8", "at byte 34"});
  }
  {
    raw r = header(0, 2);
    r.str("dup").u32(0).u8(1).str("dup").u32(4).u32(7);
    add("duplicate key", r, {"kv 1 'dup' key", "duplicate key", "first defined at byte 24"});
  }
  for (std::uint32_t al : {0u, 3u, 48u, 1u << 31}) {
    raw r = header(0, 1);
    r.str("general.alignment").u32(4).u32(al).zeros(32);
    add("bad alignment", r, {"general.alignment", "power of two"});
  }
  {
    raw r = header(0, 1);
    r.str("general.alignment").u32(5).u32(32).zeros(32);
    add("alignment of type int32", r, {"general.alignment", "int32, not uint32"});
  }
  {
    raw r = header(0, 1);
    r.str("k").u32(4).u32(1).u32(2);  // a uint32 cut after 3 bytes... plus nothing
    r.b.resize(r.b.size() - 5);
    add("value cut short", r, {"kv 0 'k' value"});
  }
  // tensor infos
  auto one_tensor = [&](const char* what, std::string_view name, std::vector<std::uint64_t> ne,
                        std::uint32_t type, std::uint64_t offset, std::size_t data,
                        std::vector<std::string> must) {
    raw r = header(1, 0);
    tensor_info(r, name, std::move(ne), type, offset).pad(32).zeros(data);
    add(what, r, std::move(must));
  };
  one_tensor("n_dims 5", "t", {1, 1, 1, 1, 1}, 0, 0, 64, {"tensor 0 't' n_dims", "5 dimensions"});
  one_tensor("dim 2^63", "t", {big}, 0, 0, 64, {"tensor 0 't' dims", "exceeds 2^63-1"});
  one_tensor("dims overflow", "t", {1ull << 32, 1ull << 32}, 0, 0, 64,
             {"tensor 0 't' dims", "overflows"});
  one_tensor("dims overflow 4", "t", {1ull << 20, 1ull << 20, 1ull << 20, 1ull << 20}, 0, 0, 64,
             {"tensor 0 't' dims", "overflows"});
  one_tensor("retired type 4", "t", {32}, 4, 0, 64, {"tensor 0 't' type", "unknown ggml type 4"});
  one_tensor("type 1000", "t", {32}, 1000, 0, 64, {"tensor 0 't' type", "unknown ggml type"});
  one_tensor("ne0 not a block multiple", "t", {16, 2}, 8, 0, 64,
             {"tensor 0 't' dims", "not a multiple of the Q8_0 block of 32"});
  one_tensor("misaligned offset", "t", {4}, 0, 4, 64,
             {"tensor 0 't' offset", "not a multiple of the alignment 32"});
  one_tensor("offset out of range", "t", {4}, 0, 1ull << 40, 64,
             {"tensor 0 't' offset", "outside"});
  one_tensor("offset + size overflows", "t", {8}, 0, ~0ull - 31, 64,
             {"tensor 0 't' offset", "outside"});
  one_tensor("data past the end", "t", {64}, 0, 0, 255, {"tensor 0 't' offset", "outside"});
  one_tensor("huge tensor", "t", {1ull << 31, 1ull << 30}, 0, 0, 64,
             {"tensor 0 't' offset", "outside"});
  one_tensor("byte size overflows", "t", {1ull << 31, 1ull << 31}, 0, 0, 64,
             {"tensor 0 't' dims", "byte size overflows"});
  one_tensor("name 65 bytes", std::string(65, 'n'), {4}, 0, 0, 64, {"tensor 0 name", "65 bytes"});
  one_tensor("empty name", "", {4}, 0, 0, 64, {"tensor 0 name"});
  one_tensor("bad UTF-8 name", "w\xff", {4}, 0, 0, 64, {"tensor 0 name", "UTF-8"});
  {
    raw r = header(2, 0);
    tensor_info(r, "a", {16}, 0, 0);
    tensor_info(r, "b", {16}, 0, 32).pad(32).zeros(128);
    add("overlapping tensors", r, {"tensor 1 'b' offset", "overlaps tensor 'a'"});
  }
  {
    raw r = header(2, 0);
    tensor_info(r, "a", {4}, 0, 0);
    tensor_info(r, "a", {4}, 0, 32).pad(32).zeros(64);
    add("duplicate tensor names", r, {"tensor 1 'a' name", "duplicate tensor name"});
  }
  {
    raw r = header(1, 0);
    r.str("t").u32(1).u64(4).u32(0);  // the offset is missing
    add("tensor info cut short", r, {"tensor 0 't' offset", "the file ends"});
  }
  return c;
}

/// A valid file with every section populated (KVs of several types, 3 tensors).
std::vector<std::byte> valid_file() {
  std::vector<std::byte> out;
  tfm::io::gguf_writer w(out);
  w.add("general.architecture", "llama");
  w.add("llama.block_count", std::uint32_t{2});
  w.add("tokenizer.ggml.tokens", {"<s>", "</s>", "hello"});
  w.add("x.nested", std::vector<std::vector<std::int16_t>>{{1}, {2, 3}});
  w.add("x.f64", 2.5);
  const auto a = gguf_test::pattern(4 * 8, 3, 1), q = gguf_test::pattern(34 * 2, 5, 7);
  w.add_tensor("a", {8}, tfm::ggml_type::f32, a);
  w.add_tensor("q", {64}, tfm::ggml_type::q8_0, q);
  w.add_tensor("z", {0, 3}, tfm::ggml_type::f16, {});
  w.finish();
  return out;
}

}  // namespace

TEST_CASE("gguf malformed corpus: every case is a parse_error naming the field") {
  for (const case_t& k : corpus()) {
    CAPTURE(k.what);
    std::size_t peak = 0;
    const std::string msg = parse_error_of(k.bytes, &peak);
    INFO(msg);
    CHECK(msg.rfind("tfm::io::gguf: 'bad.gguf': ", 0) == 0);
    CHECK(msg.find("(at byte ") != std::string::npos);
    for (const std::string& s : k.must_contain) CHECK_MESSAGE(msg.find(s) != std::string::npos, s);
    // the parse of a hostile file allocates O(its size), never what its counts claim
    CHECK(peak <= 4096 + 16 * k.bytes.size());
  }
}

TEST_CASE("gguf truncated at every byte is refused with the section's field") {
  const auto full = valid_file();
  const gguf_file f = gguf_file::from_bytes(full, "full.gguf");
  const std::size_t kv_begin = f.metadata().front().offset;
  const std::size_t ti_begin = f.tensors().front().info_offset;
  std::size_t data_end = 0;
  for (const auto& t : f.tensors())
    if (t.n_bytes > 0) data_end = std::max<std::size_t>(data_end, t.file_offset + t.n_bytes);
  REQUIRE(kv_begin == 24);
  REQUIRE(data_end <= full.size());
  std::size_t max_peak = 0;
  for (std::size_t n = 0; n < data_end; ++n) {
    CAPTURE(n);
    const std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    std::size_t peak = 0;
    const std::string msg = parse_error_of(cut, &peak);
    max_peak = std::max(max_peak, peak);
    INFO(msg);
    REQUIRE(msg.rfind("tfm::io::gguf: 'bad.gguf': ", 0) == 0);
    if (n < kv_begin)
      CHECK(msg.find("header ") != std::string::npos);
    else if (n < ti_begin)
      CHECK(
          (msg.find("': kv ") != std::string::npos || msg.find("header n_") != std::string::npos));
    else
      CHECK((msg.find("': tensor ") != std::string::npos ||
             msg.find("header n_tensors") != std::string::npos));
  }
  MESSAGE("truncations 0.." << data_end - 1 << " refused; peak heap growth " << max_peak
                            << " bytes");
  CHECK(parse_error_of(full) == "(accepted)");
}

TEST_CASE("gguf bit flips in the header sections never crash") {
  const auto full = valid_file();
  const gguf_file f = gguf_file::from_bytes(full, "full.gguf");
  const std::size_t header_end = static_cast<std::size_t>(f.data_offset());
  int refused = 0;
  for (std::size_t i = 0; i < header_end; ++i)
    for (int bit = 0; bit < 8; ++bit) {
      auto m = full;
      m[i] ^= static_cast<std::byte>(1u << bit);
      const std::string msg = parse_error_of(m);
      CHECK(msg.find("(wrong exception)") == std::string::npos);
      refused += msg != "(accepted)";
    }
  MESSAGE(refused << " of " << header_end * 8 << " single-bit flips refused");
}
