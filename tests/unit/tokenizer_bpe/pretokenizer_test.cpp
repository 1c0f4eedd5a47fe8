// Pre-tokenizer matchers against splits produced by the Python `regex` module with the published
// patterns (expected values recorded from regex.findall), plus coverage of arbitrary bytes.
// The full-corpus comparison with tiktoken / tokenizers is in compat_test.cpp.
#include "typeformer/tokenizer/pretokenizer.hpp"
#include "typeformer/tokenizer/unicode_class.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

using tfm::split_pattern;
using V = std::vector<std::string>;

namespace {
V split(const std::string& s, split_pattern p) {
  V out;
  for (auto v : tfm::split_pieces(s, p)) out.emplace_back(v);
  return out;
}
}  // namespace

TEST_CASE("GPT-2, cl100k and o200k splits equal regex.findall") {
  struct row {
    std::string text;
    V gpt2, cl100k, o200k;
  };
  const std::vector<row> rows = {
      {"Hello world", {"Hello", " world"}, {"Hello", " world"}, {"Hello", " world"}},
      {"   a", {"  ", " a"}, {"  ", " a"}, {"  ", " a"}},
      {" 123 1234567",
       {" 123", " 1234567"},
       {" ", "123", " ", "123", "456", "7"},
       {" ", "123", " ", "123", "456", "7"}},
      {"I'm here, it'S we'LL",
       {"I", "'m", " here", ",", " it", "'", "S", " we", "'", "LL"},
       {"I", "'m", " here", ",", " it", "'S", " we", "'LL"},
       {"I'm", " here", ",", " it'S", " we'LL"}},
      {"\tword\n\n  y  ",
       {"\t", "word", "\n\n ", " y", "  "},
       {"\tword", "\n\n", " ", " y", "  "},
       {"\tword", "\n\n", " ", " y", "  "}},
      {"x\r\n\r\n  \nz",
       {"x", "\r\n\r\n  ", "\n", "z"},
       {"x", "\r\n\r\n  \n", "z"},
       {"x", "\r\n\r\n  \n", "z"}},
      {"caf\xc3\xa9 \xc3\xb1 \xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97 \xf0\x9f\xa4\x97!!",
       {"caf\xc3\xa9", " \xc3\xb1", " \xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97", " \xf0\x9f\xa4\x97!!"},
       {"caf\xc3\xa9", " \xc3\xb1", " \xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97", " \xf0\x9f\xa4\x97!!"},
       {"caf\xc3\xa9", " \xc3\xb1", " \xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97",
        " \xf0\x9f\xa4\x97!!"}},
      {"HTTPServer isUPPERCase",
       {"HTTPServer", " isUPPERCase"},
       {"HTTPServer", " isUPPERCase"},
       {"HTTPServer", " is", "UPPERCase"}},
      {"a  \xc2\xa0"
       "b",
       {"a", "  ", "\xc2\xa0", "b"},
       {"a", "  ",
        "\xc2\xa0"
        "b"},
       {"a", "  ",
        "\xc2\xa0"
        "b"}},
      {"don't/path/x\n",
       {"don", "'t", "/", "path", "/", "x", "\n"},
       {"don", "'t", "/path", "/x", "\n"},
       {"don't", "/path", "/x", "\n"}},
      // U+017F LATIN SMALL LETTER LONG S case-folds to 's' in (?i:...).
      {"\xc5\xbf'\xc5\xbf",
       {"\xc5\xbf", "'", "\xc5\xbf"},
       {"\xc5\xbf", "'\xc5\xbf"},
       {"\xc5\xbf'\xc5\xbf"}},
  };
  for (const auto& r : rows) {
    CAPTURE(r.text);
    CHECK(split(r.text, split_pattern::gpt2) == r.gpt2);
    CHECK(split(r.text, split_pattern::cl100k) == r.cl100k);
    CHECK(split(r.text, split_pattern::o200k) == r.o200k);
  }
}

TEST_CASE("pieces cover arbitrary bytes, invalid UTF-8 included") {
  const std::uint64_t seed = 3;
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int k = 0; k < 2000; ++k) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 ? rng() % 128 : rng());
    for (auto p : {split_pattern::gpt2, split_pattern::cl100k, split_pattern::o200k}) {
      std::string joined;
      for (auto piece : tfm::split_pieces(s, p)) {
        REQUIRE(!piece.empty());
        joined.append(piece);
      }
      CHECK(joined == s);
    }
  }
  // An ill-formed sequence is one "other" character: it joins punctuation, not letters.
  CHECK(split("ab\xff\xfe!c", split_pattern::gpt2) == V{"ab", "\xff\xfe!", "c"});
}

TEST_CASE("pattern names and regex texts map to the matchers") {
  CHECK(tfm::pattern_from_name("r50k_base") == split_pattern::gpt2);
  CHECK(tfm::pattern_from_name("llama3") == split_pattern::cl100k);
  CHECK(tfm::pattern_from_name("o200k_base") == split_pattern::o200k);
  CHECK_THROWS_AS(tfm::pattern_from_name("bert"), tfm::value_error);
  for (auto p : {split_pattern::gpt2, split_pattern::cl100k, split_pattern::o200k})
    CHECK(tfm::pattern_from_regex(tfm::pattern_regex(p)) == p);
  CHECK(!tfm::pattern_from_regex("\\w+").has_value());
}

TEST_CASE("unicode classes of sample code points (UnicodeData.txt)") {
  using tfm::unicode::char_class;
  using tfm::unicode::classify;
  CHECK(classify(U'A') == char_class::lu);
  CHECK(classify(U'z') == char_class::ll);
  CHECK(classify(0x01C5) == char_class::lt);
  CHECK(classify(0x02B0) == char_class::lm);
  CHECK(classify(0x4E2D) == char_class::lo);
  CHECK(classify(0x0301) == char_class::mark);
  CHECK(classify(0x0660) == char_class::number);
  CHECK(classify(0x2160) == char_class::number);
  CHECK(classify(0x3000) == char_class::space);
  CHECK(classify(0x0085) == char_class::space);
  CHECK(classify(0x200B) == char_class::other);  // ZERO WIDTH SPACE is not White_Space
  CHECK(classify(0x20000) == char_class::lo);    // CJK Extension B
  CHECK(classify(0x1C89) == char_class::lu);     // Unicode 16.0
  CHECK(classify(0x1F600) == char_class::other);
  CHECK(classify(0x10FFFF) == char_class::other);
  CHECK(classify(0x110000) == char_class::other);
}
