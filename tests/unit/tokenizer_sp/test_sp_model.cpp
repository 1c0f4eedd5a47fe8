// SentencePiece models written by hand (no Python needed): segmentation worked out on paper,
// and a malformed-file suite where every case must be rejected with tfm::parse_error.
#include "sp_test_support.hpp"

#include "typeformer/tokenizer/sentencepiece.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace {
const std::string ws = "\xE2\x96\x81";  // ▁

std::vector<sp_test::piece_spec> unigram_pieces() {
  return {{"<unk>", 0, 2}, {"<s>", 0, 3},   {"</s>", 0, 3},   {ws, -1.0f, 1},
          {"a", -2.0f, 1}, {"b", -2.0f, 1}, {"ab", -1.5f, 1}, {ws + "ab", -1.0f, 1},
          {"<sep>", 0, 4}, {"ba", -9.0f, 5}};
}

tfm::sentencepiece_tokenizer make(const std::vector<sp_test::piece_spec>& p, int type,
                                  bool byte_fallback = false) {
  return tfm::sentencepiece_tokenizer::from_bytes(sp_test::make_model(p, type, byte_fallback));
}
}  // namespace

TEST_CASE("sentencepiece: hand-made unigram model") {
  const auto tok = make(unigram_pieces(), 1);
  CHECK(tok.vocab_size() == 10);
  CHECK(tok.unk_id() == 0);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.pad_id() == -1);
  CHECK(tok.normalize("  ab   ab ") == ws + "ab" + ws + "ab");
  // "▁ab▁ab": ▁ab + ▁ab = -2 beats every other path (▁ + ab = -2.5, ...).
  CHECK(tok.encode("ab ab") == std::vector<std::int32_t>{7, 7});
  // "▁ba": "ba" is UNUSED, so ▁ + b + a = -5 (unk would cost min_score - 10 = -12).
  CHECK(tok.encode("ba") == std::vector<std::int32_t>{3, 5, 4});
  // Unknown characters: one <unk> per run (merged, as SentencePiece does).
  CHECK(tok.encode("xy") == std::vector<std::int32_t>{3, 0});
  CHECK(tok.decode({3, 0}) == " \xE2\x81\x87 ");
  // A user-defined symbol is always one piece.
  CHECK(tok.encode("a<sep>b") == std::vector<std::int32_t>{3, 4, 8, 5});
  CHECK(tok.decode({7, 1, 7, 2}) == "ab ab");
  CHECK(tok.encode("").empty());
  CHECK(tok.encode("   ").empty());
}

TEST_CASE("sentencepiece: hand-made BPE model") {
  // BPE scores are merge priorities: "ab" (-1) merges before "▁a" (-2).
  const std::vector<sp_test::piece_spec> p{
      {"<unk>", 0, 2}, {"ab", -1.0f, 1}, {ws + "a", -2.0f, 1}, {ws + "ab", -3.0f, 1},
      {ws, -4.0f, 1},  {"a", -5.0f, 1},  {"b", -6.0f, 1}};
  const auto tok = make(p, 2);
  // ▁ a b: best pair is "ab" -> ▁ ab; then "▁ab" merges -> one piece.
  CHECK(tok.encode("ab") == std::vector<std::int32_t>{3});
  // ▁ a a b: pairs ▁a(-2), aa(-), ab(-1): ab first -> ▁ a ab; ▁a (-2) -> ▁a ab.
  CHECK(tok.encode("aab") == std::vector<std::int32_t>{2, 1});
  CHECK(tok.encode("ac") == std::vector<std::int32_t>{2, 0});
  CHECK(tok.decode(tok.encode("ab aab")) == "ab aab");
}

TEST_CASE("sentencepiece: byte fallback model (hand-made)") {
  std::vector<sp_test::piece_spec> p{{"<unk>", 0, 2}, {ws, -1.0f, 1}, {"a", -1.0f, 1}};
  for (int b = 0; b < 256; ++b) {
    static const char* hex = "0123456789ABCDEF";
    p.push_back({std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, 6});
  }
  const auto tok = make(p, 1, true);
  // "é" = C3 A9 is not a piece: two byte pieces.
  const auto ids = tok.encode("a\xC3\xA9");
  CHECK(ids == std::vector<std::int32_t>{1, 2, 3 + 0xC3, 3 + 0xA9});
  CHECK(tok.decode(ids) == "a\xC3\xA9");
  // Ill-formed input: FF -> U+FFFD -> EF BF BD.
  CHECK(tok.encode("\xFF") == std::vector<std::int32_t>{1, 3 + 0xEF, 3 + 0xBF, 3 + 0xBD});
}

TEST_CASE("sentencepiece: malformed model files are rejected with parse_error") {
  using sp_test::pb_writer;
  const std::string good = sp_test::make_model(unigram_pieces(), 1, false);
  auto rejects = [](const std::string& bytes, const char* why) {
    INFO(why);
    CHECK_THROWS_AS(tfm::sentencepiece_tokenizer::from_bytes(bytes), tfm::parse_error);
  };
  REQUIRE_NOTHROW(tfm::sentencepiece_tokenizer::from_bytes(good));
  rejects("", "empty file");
  rejects("\x80", "truncated varint");
  rejects(std::string("\x0A\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x7F", 10), "length 2^63 - 1");
  rejects(std::string(11, '\xFF'), "varint longer than 10 bytes");
  rejects(good.substr(0, good.size() - 3), "truncated in the middle of a field");
  rejects(std::string("\x0B", 1), "wire type 3 (start group)");
  rejects(std::string("\x0F", 1), "wire type 7");
  rejects(std::string("\x02\x00", 2), "field number 0");
  rejects(std::string("\x0D\x00\x00", 3), "truncated fixed32");
  {
    auto p = unigram_pieces();
    p[4].type = 9;
    rejects(sp_test::make_model(p, 1, false), "piece type 9");
  }
  {
    auto p = unigram_pieces();
    p[5].piece = p[4].piece;  // "a" twice
    rejects(sp_test::make_model(p, 1, false), "duplicate piece");
  }
  {
    auto p = unigram_pieces();
    p[4].piece = "";
    rejects(sp_test::make_model(p, 1, false), "empty piece");
  }
  {
    auto p = unigram_pieces();
    p[0].type = 1;
    rejects(sp_test::make_model(p, 1, false), "no unknown piece");
  }
  {
    auto p = unigram_pieces();
    p[1].type = 2;
    rejects(sp_test::make_model(p, 1, false), "two unknown pieces");
  }
  {
    auto p = unigram_pieces();
    p.push_back({"<0x41>", 0, 6});
    rejects(sp_test::make_model(p, 1, false), "byte piece without byte_fallback");
    rejects(sp_test::make_model(p, 1, true), "byte_fallback without all 256 byte pieces");
    p.back().piece = "<0x-1>";
    rejects(sp_test::make_model(p, 1, true), "byte piece <0x-1>");
  }
  rejects(sp_test::make_model(unigram_pieces(), 7, false), "model_type 7");
  rejects(sp_test::make_model({}, 1, false), "no pieces");
  {
    // A piece given as a varint instead of a message.
    pb_writer m;
    m.int_field(1, 5);
    rejects(m.out, "pieces field with the wrong wire type");
  }
  {
    // Charsmaps: trie size beyond the blob, not a multiple of 4, strings not NUL-terminated.
    for (const std::string& cm :
         {std::string("\xFF\x00\x00\x00xxxx", 8), std::string("\x03\x00\x00\x00xxxx\0", 9),
          std::string("\x04\x00\x00\x00\x00\x00\x00\x00zz", 10), std::string("\x01\x00", 2)}) {
      pb_writer n;
      n.bytes(2, cm);
      std::string bytes = good;
      pb_writer extra;
      extra.bytes(3, n.out);
      bytes += extra.out;  // a later normalizer_spec replaces the earlier one
      rejects(bytes, "bad precompiled_charsmap");
    }
  }
  {
    // A darts trie whose leaf value points outside the strings blob fails at use, not crash.
    // Units: [0] root, offset 1 -> children at 1 ^ 'a'; the child (label 'a', has_leaf,
    // offset 0) leads to the leaf unit holding value 1000.
    std::vector<std::uint32_t> units(256, 0);
    units[0] = 1u << 10;  // offset 1
    const std::uint32_t child = 1 ^ 'a';
    // label 'a', has_leaf, offset 0: the leaf is read at child ^ 0, i.e. this unit.
    units[child] = static_cast<std::uint32_t>('a') | (1u << 8);
    std::string cm;
    const std::uint32_t size = static_cast<std::uint32_t>(units.size() * 4);
    for (int i = 0; i < 4; ++i) cm.push_back(static_cast<char>((size >> (8 * i)) & 0xFF));
    for (std::uint32_t u : units)
      for (int i = 0; i < 4; ++i) cm.push_back(static_cast<char>((u >> (8 * i)) & 0xFF));
    cm += std::string("x\0", 2);
    pb_writer n;
    n.bytes(2, cm);
    pb_writer extra;
    extra.bytes(3, n.out);
    const auto tok = tfm::sentencepiece_tokenizer::from_bytes(good + extra.out);
    CHECK_NOTHROW(tok.encode("bbb"));
    // The value of the leaf is the unit itself masked to 31 bits: 'a' | 1<<8 = 353 > 2 bytes.
    CHECK_THROWS_AS(tok.encode("a"), tfm::parse_error);
  }
  CHECK_THROWS_AS(tfm::sentencepiece_tokenizer::from_file("/nonexistent/x.model"), tfm::io_error);
}
