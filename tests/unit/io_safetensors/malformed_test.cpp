// The malformed corpus (TESTING.md "Files and parsers"; safetensors' own checks in tensor.rs):
// every file here is built in the test, must be refused with tfm::parse_error (or
// tfm::unsupported_error for a known dtype this reader does not implement), and the message
// must name the file and say what was wrong. Nothing may crash; run under ASan/UBSan in CI.
#include "typeformer/io/safetensors.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace st = tfm::io::safetensors;

namespace {

/// A file: the 8-byte little-endian length of `header` (or `length` when given), the header,
/// then `data`.
std::vector<std::byte> make(const std::string& header, const std::string& data = "",
                            std::uint64_t length = ~std::uint64_t{0}) {
  const std::uint64_t n = length == ~std::uint64_t{0} ? header.size() : length;
  std::vector<std::byte> b;
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::byte>((n >> (8 * i)) & 0xFF));
  for (char c : header) b.push_back(static_cast<std::byte>(c));
  for (char c : data) b.push_back(static_cast<std::byte>(c));
  return b;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

/// The message of the tfm::error that parsing `b` raises ("" when it parses; "other exception"
/// when something else is thrown).
std::string error_of(const std::vector<std::byte>& b, tfm::errc* code = nullptr) {
  try {
    (void)st::file::from_bytes(b, "corpus");
  } catch (const tfm::error& e) {
    if (code) *code = e.code();
    return e.what();
  } catch (...) {
    return "other exception";
  }
  return "";
}

void refused(const std::vector<std::byte>& b, const std::string& expect,
             tfm::errc code = tfm::errc::parse) {
  tfm::errc got = tfm::errc::value;
  const std::string msg = error_of(b, &got);
  CAPTURE(msg);
  CAPTURE(expect);
  REQUIRE(!msg.empty());
  CHECK(msg.find("'corpus'") != std::string::npos);
  CHECK(msg.find(expect) != std::string::npos);
  CHECK(got == code);
}

// A valid file: three tensors, metadata, 8-byte padded header.
std::vector<std::byte> valid_file() {
  static const float a[4] = {1, 2, 3, 4};
  static const std::int64_t b[2] = {5, 6};
  static const std::uint8_t c[3] = {7, 8, 9};
  st::writer w;
  w.add("a", st::dtype::f32, {2, 2}, std::as_bytes(std::span<const float>(a)));
  w.add("b", st::dtype::i64, {2}, std::as_bytes(std::span<const std::int64_t>(b)));
  w.add("c", st::dtype::u8, {3}, std::as_bytes(std::span<const std::uint8_t>(c)));
  w.set_metadata("format", "pt");
  return w.to_bytes();
}

}  // namespace

TEST_CASE("safetensors malformed: truncated at every byte") {
  const auto full = valid_file();
  REQUIRE(error_of(full).empty());
  const std::uint64_t n = st::detail::load_le64(full.data());
  for (std::size_t k = 0; k < full.size(); ++k) {
    CAPTURE(k);
    const std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(k));
    const std::string msg = error_of(cut);
    REQUIRE(!msg.empty());
    CHECK(msg.find("'corpus'") != std::string::npos);
    if (k < 8)
      CHECK(msg.find("fewer than the 8") != std::string::npos);
    else if (k < 8 + n)
      CHECK(msg.find("runs past the end of the file") != std::string::npos);
    else
      CHECK(msg.find("end past the data section") != std::string::npos);
  }
  // The header text cut at every byte, its length field telling the truth: bad JSON, or a
  // layout that no longer matches the (absent) data.
  const std::string header(reinterpret_cast<const char*>(full.data()) + 8,
                           static_cast<std::size_t>(n));
  for (std::size_t c = 0; c < header.size(); ++c) {
    CAPTURE(c);
    const std::string msg = error_of(make(header.substr(0, c)));
    CHECK(!msg.empty());
    CHECK(msg.find("tfm::io::safetensors: 'corpus'") == 0);
  }
}

TEST_CASE("safetensors malformed: header length") {
  refused(make("{}", "", ~std::uint64_t{0} - 1), "exceeds the limit of 100000000 bytes");
  refused(make("{}", "", std::uint64_t{1} << 63), "exceeds the limit");
  refused(make("{}", "", 100'000'001), "exceeds the limit");
  refused(make("{}", "", 3), "runs past the end of the file, which has 10 bytes");
  refused(make("{}", "", 0), "the header must be a JSON object");
  refused({}, "has 0 bytes, fewer than the 8");
  // A smaller limit is honoured.
  st::limits lim;
  lim.max_header_bytes = 4;
  const auto b = make("{}      ");
  CHECK_THROWS_WITH_AS(st::file::from_bytes(b, "corpus", lim),
                       doctest::Contains("exceeds the limit of 4"), tfm::parse_error);
}

TEST_CASE("safetensors malformed: not JSON, or not the header's JSON") {
  const std::string ok = entry("t", "\"U8\"", "[2]", "[0,2]");
  refused(make("{"), "expected a string key");
  refused(make("{" + ok), "expected ',' or '}' after a header entry");
  refused(make("[]"), "the header must be a JSON object");
  refused(make("{'t':1}"), "expected a string key");
  refused(make("{\"t\" 1}"), "expected ':' after a key");
  refused(make("{\"t\":}"), "the entry must be an object, found an invalid token");
  refused(make("{" + ok + "}x", "ab"), "unexpected data after the header object");
  refused(make("{" + ok + std::string("}\0", 2), "ab"), "unexpected data after the header object");
  refused(make("\xEF\xBB\xBF{" + ok + "}", "ab"), "must be a JSON object");  // BOM
  refused(make("{\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],\"x\":01}}", "ab"),
          "leading zero");
  refused(make("{\"t\x01\":{}}"), "unescaped control character");
  refused(make("{\"t\\q\":{}}"), "invalid escape character");
  refused(make("{\"t\\ud800\":{}}"), "high surrogate not followed");
  refused(make("{\"t\\udc00\":{}}"), "lone low surrogate");
  refused(make("{\"t\\u12g4\":{}}"), "invalid hexadecimal digit");
  refused(make("{\"t"), "unterminated string");
  refused(make("{\"t\":[1]}"), "tensor \"t\": the entry must be an object, found an array");
  // Ignored members are still JSON, nested to a limit.
  refused(make("{\"t\":{\"x\":[" + std::string(40, '[') + "]}}"), "nesting deeper than the limit");
  refused(make("{\"t\":{\"x\":tru}}"), "unexpected character, expected a value");
  // Well-formed, with an unknown member the reference ignores: accepted.
  CHECK(error_of(make("{\"t\":{\"x\":{\"y\":[1,2.5e3,null,true,\"s\"]},\"dtype\":\"U8\","
                      "\"shape\":[2],\"data_offsets\":[0,2]}}",
                      "ab"))
            .empty());
  // Whitespace around the object, as the reference's padding: accepted.
  CHECK(error_of(make(" \n{" + ok + "}\t  ", "ab")).empty());
}

TEST_CASE("safetensors malformed: names and keys") {
  // Not UTF-8: a lone 0xFF, an overlong NUL, an encoded surrogate, a truncated sequence.
  refused(make("{\"\xFF\":{}}"), "the header is not valid UTF-8 at byte 10");
  refused(make("{\"a\xC0\x80\":{}}"), "not valid UTF-8 at byte 11");
  refused(make("{\"\xED\xA0\x80\":{}}"), "not valid UTF-8");
  refused(make("{\"\xE2\x82\":{}}"), "not valid UTF-8");
  refused(make("{\"__metadata__\":{\"k\xFF\":\"v\"}}"), "not valid UTF-8");
  // Duplicates.
  const std::string t = entry("t", "\"U8\"", "[2]", "[0,2]");
  refused(make("{" + t + "," + t + "}", "ab"),
          "duplicate tensor name \"t\" (entries at bytes 9 and");
  refused(make("{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}",
               "ab"),
          "tensor \"t\": duplicate field \"dtype\" at byte 27");
  refused(make("{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}," + t + "}", "ab"),
          "duplicate key in \"__metadata__\"");
  refused(make("{\"__metadata__\":{},\"__metadata__\":{}}"), "duplicate key \"__metadata__\"");
  // Escaped spellings of the same name are the same name.
  refused(make("{" + t + "," + entry("\\u0074", "\"U8\"", "[2]", "[2,4]") + "}", "abcd"),
          "duplicate tensor name \"t\"");
  // Metadata values must be strings.
  refused(make("{\"__metadata__\":{\"k\":1}}"), "the value of metadata key \"k\" must be a string");
  refused(make("{\"__metadata__\":[]}"), "\"__metadata__\" must be an object, found an array");
  CHECK(error_of(make("{\"__metadata__\":null}")).empty());
}

TEST_CASE("safetensors malformed: dtype") {
  auto with = [](const std::string& dtype) {
    return make("{" + entry("w", dtype, "[1]", "[0,4]") + "}", "abcd");
  };
  CHECK(error_of(with("\"F32\"")).empty());
  refused(with("\"f32\""), "tensor \"w\": unknown dtype \"f32\" (known: BOOL, U8, I8");
  refused(with("\"FLOAT\""), "unknown dtype \"FLOAT\"");
  refused(with("\"\""), "unknown dtype \"\"");
  refused(with("4"), "tensor \"w\": field \"dtype\" must be a string, found a number");
  refused(with("null"), "field \"dtype\" must be a string, found null");
  refused(with("\"F4\""), "dtype \"F4\" (sub-byte, packed) is not supported",
          tfm::errc::unsupported);
  refused(make("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"),
          "tensor \"w\": missing field \"dtype\"");
}

TEST_CASE("safetensors malformed: shape") {
  auto with = [](const std::string& shape, const std::string& offsets = "[0,4]",
                 const std::string& data = "abcd") {
    return make("{" + entry("w", "\"U8\"", shape, offsets) + "}", data);
  };
  CHECK(error_of(with("[4]")).empty());
  CHECK(error_of(with("[2, 2]")).empty());
  refused(with("[-1]"),
          "tensor \"w\": a dimension in \"shape\" must be a non-negative integer, "
          "found '-'");
  refused(with("[1.5]"), "must be an integer, found a fraction or exponent");
  refused(with("[4e0]"), "fraction or exponent");
  refused(with("[\"4\"]"),
          "a dimension in \"shape\" must be a non-negative integer, found a string");
  refused(with("4"), "field \"shape\" must be an array of integers, found a number");
  refused(with("[4}"), "expected ',' or ']' in \"shape\"");
  refused(with("[18446744073709551616]"), "is larger than 2^64-1");
  refused(with("[9223372036854775808]"), "a dimension in \"shape\" is larger than 2^63-1");
  refused(with("[4294967296, 4294967296]"),
          "shape [4294967296, 4294967296] has more than 2^63-1 "
          "elements");
  refused(with("[3037000500, 3037000500, 0]", "[0,0]", ""), "has more than 2^63-1 elements");
  // The product times the element size overflows (F64: 8 bytes).
  refused(make("{" + entry("w", "\"F64\"", "[4611686018427387904]", "[0,8]") + "}", "abcdefgh"),
          "element size overflows 64 bits");
  // Rank above the limit (64).
  std::string deep = "[";
  for (int i = 0; i < 65; ++i) deep += i ? ",1" : "1";
  refused(with(deep + "]", "[0,1]", "a"), "field \"shape\" has more than 64 dimensions");
  refused(make("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,4]}}", "abcd"),
          "tensor \"w\": missing field \"shape\"");
}

TEST_CASE("safetensors malformed: data offsets and layout") {
  auto one = [](const std::string& offsets, const std::string& data,
                const std::string& shape = "[4]") {
    return make("{" + entry("w", "\"U8\"", shape, offsets) + "}", data);
  };
  refused(one("[4,0]", "abcd"), "data_offsets [4, 0] are reversed");
  refused(one("[0,1000]", "abcd"), "data_offsets [0, 1000] end past the data section, which has 4");
  refused(one("[18446744073709551612,18446744073709551616]", "abcd"), "larger than 2^64-1");
  refused(one("[18446744073709551612,18446744073709551615]", "abcd"), "end past the data section");
  refused(one("[-1,3]", "abcd"), "the first value of \"data_offsets\" must be a non-negative");
  refused(one("[0,4,8]", "abcd"), "must hold exactly two integers");
  refused(one("[0]", "abcd"), "must hold exactly two integers");
  refused(one("\"0,4\"", "abcd"), "field \"data_offsets\" must be an array of two integers");
  refused(one("[0,3]", "abcd"), "data_offsets [0, 3] span 3 bytes but shape [4] of U8 needs 4");
  refused(one("[0,4]", "abcd", "[5]"), "span 4 bytes but shape [5] of U8 needs 5");
  refused(one("[0,4]", "abcdef"), "the tensors cover 4 bytes of the data section but it has 6");
  refused(one("[2,6]", "abcdef"), "a hole of 2 bytes in the data section before it (offset 0)");
  refused(make("{\"w\":{\"dtype\":\"U8\",\"shape\":[4]}}", "abcd"),
          "missing field \"data_offsets\"");
  const std::string a = entry("a", "\"U8\"", "[4]", "[0,4]");
  refused(make("{" + a + "," + entry("b", "\"U8\"", "[4]", "[2,6]") + "}", "abcdef"),
          "tensor \"b\": its data [2, 6) overlaps tensor \"a\"'s [0, 4)");
  refused(make("{" + a + "," + entry("b", "\"U8\"", "[4]", "[0,4]") + "}", "abcd"), "overlaps");
  refused(make("{" + a + "," + entry("b", "\"U8\"", "[2]", "[6,8]") + "}", "abcdefgh"),
          "tensor \"b\": a hole of 2 bytes in the data section before it (offset 4)");
  // Zero-size tensors sit anywhere inside the data section, as the reference allows.
  CHECK(error_of(make("{" + a + "," + entry("z", "\"F32\"", "[0,3]", "[4,4]") + "," +
                          entry("y", "\"F32\"", "[0]", "[0,0]") + "}",
                      "abcd"))
            .empty());
  // The order of entries in the header does not matter; offsets do.
  CHECK(
      error_of(make("{" + entry("b", "\"U8\"", "[2]", "[4,6]") + "," + a + "}", "abcdef")).empty());
}

TEST_CASE("safetensors malformed: BOOL bytes other than 0 and 1 are refused when read") {
  const auto b = make("{" + entry("m", "\"BOOL\"", "[3]", "[0,3]") + "}", std::string("\1\0\2", 3));
  const auto f = st::file::from_bytes(b, "corpus");
  CHECK_THROWS_WITH_AS(((void)f.view<bool, 1>("m")),
                       doctest::Contains("holds the byte 2 (not 0 or 1) at byte"),
                       tfm::parse_error);
  CHECK_THROWS_AS(((void)f.copy<bool, 1>("m")), tfm::parse_error);
  CHECK_THROWS_AS(((void)f.copy<float, 1>("m")), tfm::parse_error);
}

TEST_CASE("safetensors malformed: files on disk and sharded indexes") {
  namespace fs = std::filesystem;
  const std::string dir = std::string(TFM_ST_WORK_DIR) + "/malformed";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto put = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
  };
  CHECK_THROWS_WITH_AS(st::file(dir + "/missing.safetensors"), doctest::Contains("cannot open"),
                       tfm::io_error);
  CHECK_THROWS_AS(st::file{dir}, tfm::io_error);  // a directory
  put("short.safetensors", "abc");
  CHECK_THROWS_WITH_AS(st::file(dir + "/short.safetensors"),
                       doctest::Contains("short.safetensors' has 3 bytes"), tfm::parse_error);
  CHECK_THROWS_WITH_AS(st::open(dir), doctest::Contains("has neither"), tfm::io_error);

  const auto good = valid_file();
  put("s1.safetensors", std::string(reinterpret_cast<const char*>(good.data()), good.size()));
  auto index = [&](const std::string& body) {
    put("i.json", body);
    return dir + "/i.json";
  };
  auto bad_index = [&](const std::string& body, const std::string& expect,
                       tfm::errc code = tfm::errc::parse) {
    CAPTURE(body);
    CAPTURE(expect);
    try {
      (void)st::open(index(body));
      FAIL("accepted");
    } catch (const tfm::error& e) {
      CAPTURE(e.what());
      CHECK(std::string(e.what()).find(expect) != std::string::npos);
      CHECK(e.code() == code);
    }
  };
  CHECK(st::open(index("{\"weight_map\":{\"a\":\"s1.safetensors\"}}")).size() == 3);
  bad_index("{\"weight_map\":{\"a\":\"s1.safetensors\"", "unexpected end of the document");
  bad_index("[]", "the document must be a JSON object");
  bad_index("{}", "missing \"weight_map\"");
  bad_index("{\"weight_map\":[]}", "\"weight_map\" must be an object");
  bad_index("{\"weight_map\":{\"a\":1}}", "the shard of tensor \"a\" must be a string");
  bad_index("{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", "is not a plain file name");
  bad_index("{\"weight_map\":{\"a\":\"/etc/passwd\"}}", "is not a plain file name");
  bad_index("{\"weight_map\":{\"a\":\"..\"}}", "is not a plain file name");
  bad_index("{\"weight_map\":{\"a\":\"\"}}", "is not a plain file name");
  bad_index("{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}",
            "tensor \"a\" appears twice");
  bad_index("{\"weight_map\":{\"zz\":\"s1.safetensors\"}}",
            "puts tensor \"zz\" in 's1.safetensors', which has no such tensor");
  bad_index("{\"weight_map\":{\"a\":\"nope.safetensors\"}}", "cannot open", tfm::errc::io);
  bad_index("{\"metadata\":{\"total_size\":-1},\"weight_map\":{}}",
            "\"total_size\" must be a non-negative integer");
  bad_index("{\"metadata\":{\"total_size\":1.5},\"weight_map\":{}}", "total_size");
  // The same tensor in two shards.
  put("s2.safetensors", std::string(reinterpret_cast<const char*>(good.data()), good.size()));
  bad_index("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}",
            "tensor \"a\" is in both");
  // A shard that is itself malformed names the shard.
  put("s3.safetensors", std::string("\x03\0\0\0\0\0\0\0{}", 10));
  bad_index("{\"weight_map\":{\"a\":\"s3.safetensors\"}}", "s3.safetensors': the header length");
}
