// UTF-8 helpers against the Unicode standard's own example (section 3.9, table 3-8) and a naive
// reference over every 1-, 2- and 3-byte sequence; JSON reader on valid and malformed documents.
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <doctest/doctest.h>

#include <string>

namespace {
// Naive validity: decode by bit pattern, then check shortest form, range and surrogates.
bool naive_valid(const unsigned char* b, int n) {
  char32_t cp;
  int need;
  if (b[0] < 0x80) {
    cp = b[0];
    need = 1;
  } else if ((b[0] & 0xE0) == 0xC0) {
    cp = b[0] & 0x1F;
    need = 2;
  } else if ((b[0] & 0xF0) == 0xE0) {
    cp = b[0] & 0x0F;
    need = 3;
  } else if ((b[0] & 0xF8) == 0xF0) {
    cp = b[0] & 0x07;
    need = 4;
  } else
    return false;
  if (need != n) return false;
  for (int i = 1; i < n; ++i) {
    if ((b[i] & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (b[i] & 0x3F);
  }
  const char32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
  return cp >= min[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}
}  // namespace

TEST_CASE("U+FFFD substitution of maximal subparts: Unicode table 3-8") {
  const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string r = "\xEF\xBF\xBD";
  CHECK(tfm::utf8::sanitize(in) == "a" + r + r + r + "b" + r + "c" + r + r + "d");
  CHECK(tfm::utf8::first_invalid(in) == 1);
  CHECK(tfm::utf8::count(in) == 10);
}

TEST_CASE("every scalar value round-trips; decode agrees with a naive validator") {
  char buf[4];
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    const auto n = tfm::utf8::encode(cp, buf);
    if (!tfm::utf8::is_scalar_value(cp)) {
      REQUIRE(tfm::utf8::encoded_length(cp) == 0);
      REQUIRE(n == 3);
      continue;
    }
    const auto d = tfm::utf8::decode(std::string_view(buf, n));
    REQUIRE((d.valid && d.cp == cp && d.length == n));
  }
  for (unsigned x = 0; x < (1u << 16); ++x) {
    const unsigned char b[2] = {static_cast<unsigned char>(x >> 8), static_cast<unsigned char>(x)};
    const auto d = tfm::utf8::decode(std::string_view(reinterpret_cast<const char*>(b), 2));
    const bool whole = d.valid && d.length == 2;
    REQUIRE(whole == naive_valid(b, 2));
  }
  for (unsigned x = 0xE00000; x < 0xF00000; ++x) {
    const unsigned char b[3] = {static_cast<unsigned char>(x >> 16),
                                static_cast<unsigned char>(x >> 8), static_cast<unsigned char>(x)};
    const auto d = tfm::utf8::decode(std::string_view(reinterpret_cast<const char*>(b), 3));
    REQUIRE((d.valid && d.length == 3) == naive_valid(b, 3));
  }
  std::size_t n = 0;
  for (const auto& d : tfm::utf8::code_points("a\xC3\xA9\xFF")) {
    CHECK(d.offset == (n == 0 ? 0u : n == 1 ? 1u : 3u));
    ++n;
  }
  CHECK(n == 3);
}

TEST_CASE("json reader: values, escapes and malformed documents") {
  using namespace tfm::detail::json;
  const value v =
      parse(R"({"a": [1, -2.5e3, true, null, "x\u00e9\ud83e\udd17\n"], "b": {}})", "doc");
  REQUIRE(v.is_object());
  const value* a = v.find("a");
  REQUIRE((a && a->array.size() == 5));
  CHECK(a->array[0].integral);
  CHECK(a->array[0].integer == 1);
  CHECK(a->array[1].number == -2500.0);
  CHECK(a->array[2].boolean);
  CHECK(a->array[3].is_null());
  CHECK(a->array[4].string == "x\xC3\xA9\xF0\x9F\xA4\x97\n");
  std::string q;
  append_quoted(q, "a\"\\\n\x01\xC3\xA9");
  CHECK(q == "\"a\\\"\\\\\\n\\u0001\xC3\xA9\"");

  const char* bad[] = {"",   "{",         "[1,]",     "{\"a\" 1}", "\"\\ud800\"", "\"\x01\"",
                       "01", "1.",        "tru",      "{} x",      "\"\xff\"",    "[\"a\\q\"]",
                       "-",  "\"\\u12\"", "{\"a\":}", "[1 2]"};
  for (const char* b : bad) {
    CAPTURE(b);
    CHECK_THROWS_AS(parse(b, "doc"), tfm::parse_error);
  }
  try {
    parse("{\"a\": [1, 2,, 3]}", "tokenizer.json");
    FAIL("no error");
  } catch (const tfm::parse_error& e) {
    CHECK(std::string(e.what()) ==
          "tokenizer.json: unexpected character, expected a value at byte 12.");
  }
  const std::string deep(1000, '[');
  CHECK_THROWS_WITH_AS(parse(deep, "doc"), doctest::Contains("nesting deeper"), tfm::parse_error);
}
