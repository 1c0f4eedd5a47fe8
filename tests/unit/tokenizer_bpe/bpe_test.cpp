// bpe_tokenizer on a hand-made vocabulary whose ids are worked out by hand, special-token policy,
// and clear errors for malformed model files.
#include "typeformer/tokenizer/bpe.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

namespace {
// 256 byte tokens (id = byte), then "ab"=256, "abc"=257, "bc"=258, " a"=259.
tfm::bpe_tokenizer tiny(std::vector<std::pair<std::int32_t, std::int32_t>> merges,
                        bool ignore = false) {
  std::vector<std::string> t;
  for (int b = 0; b < 256; ++b) t.emplace_back(1, static_cast<char>(b));
  t.push_back("ab");
  t.push_back("abc");
  t.push_back("bc");
  t.push_back(" a");
  return tfm::bpe_tokenizer(t, merges, {{"<|eot|>", 300}}, tfm::split_pattern::gpt2, ignore);
}
}  // namespace

TEST_CASE("merge order: lowest rank first, leftmost on ties") {
  // Ranks: (a,b)->ab 0, (ab,c)->abc 1, (b,c)->bc 2.
  const auto t = tiny({{'a', 'b'}, {256, 'c'}, {'b', 'c'}});
  CHECK(t.encode("abc") == std::vector<std::int32_t>{257});
  CHECK(t.encode("bcab") == std::vector<std::int32_t>{258, 256});
  CHECK(t.encode("abab") == std::vector<std::int32_t>{256, 256});
  // (b,c) ranked first: "abc" -> a + bc, and no (a, bc) merge exists.
  const auto u = tiny({{'b', 'c'}, {'a', 'b'}, {256, 'c'}});
  CHECK(u.encode("abc") == std::vector<std::int32_t>{'a', 258});
  // ignore_merges: a piece that is a token is emitted whole.
  const auto w = tiny({{'b', 'c'}, {'a', 'b'}, {256, 'c'}}, true);
  CHECK(w.encode("abc") == std::vector<std::int32_t>{257});
  // Long pieces use the heap path and must agree with the small path.
  std::string longp;
  for (int k = 0; k < 100; ++k) longp += "abc";
  const auto ids = t.encode(longp);
  CHECK(ids == std::vector<std::int32_t>(100, 257));
}

TEST_CASE("special tokens only where allowed; decode and vocabulary queries") {
  const auto t = tiny({{'a', 'b'}});
  const std::string s = "ab<|eot|>ab";
  const auto plain = t.encode(s);
  CHECK(std::find(plain.begin(), plain.end(), 300) == plain.end());
  CHECK(t.encode(s, tfm::allowed_specials::all()) == std::vector<std::int32_t>{256, 300, 256});
  CHECK(t.encode(s, tfm::allowed_specials::only({"<|eot|>"})) ==
        std::vector<std::int32_t>{256, 300, 256});
  CHECK(t.encode(s, tfm::allowed_specials::only({"<|x|>"})) == plain);
  CHECK(t.decode(plain) == s);
  CHECK(t.vocab_size() == 301);
  CHECK(t.token_to_id("<|eot|>") == 300);
  CHECK(t.token_to_id("ab") == 256);
  CHECK(t.token_to_id("zz") == -1);
  CHECK(t.id_to_token(259) == " a");
  CHECK_THROWS_AS(t.decode(std::vector<std::int32_t>{299}), tfm::index_error);
  CHECK_THROWS_AS(t.decode(std::vector<std::int32_t>{-1}), tfm::index_error);
  // Invalid UTF-8 goes through byte tokens.
  const std::string bad = "a\xff\xc3";
  CHECK(t.decode(t.encode(bad)) == bad);
}

TEST_CASE("malformed model files give clear errors") {
  // tiktoken
  CHECK_THROWS_WITH_AS(
      tfm::bpe_tokenizer::from_tiktoken("QQ== 0\n!!! 1\n", tfm::split_pattern::gpt2),
      doctest::Contains("line 2 has an invalid base64 token"), tfm::parse_error);
  CHECK_THROWS_WITH_AS(tfm::bpe_tokenizer::from_tiktoken("QQ== 0\n", tfm::split_pattern::gpt2),
                       doctest::Contains("needs all 256 single-byte tokens"), tfm::parse_error);
  CHECK_THROWS_WITH_AS(
      tfm::bpe_tokenizer::from_tiktoken("QQ== 99999999\n", tfm::split_pattern::gpt2),
      doctest::Contains("has id 99999999"), tfm::parse_error);
  CHECK_THROWS_AS(tfm::bpe_tokenizer::from_tiktoken("QQ== 0\nQg== 0\n", tfm::split_pattern::gpt2),
                  tfm::parse_error);
  CHECK_THROWS_AS(tfm::bpe_tokenizer::from_tiktoken("QQ== x\n", tfm::split_pattern::gpt2),
                  tfm::parse_error);
  // GPT-2
  CHECK_THROWS_WITH_AS(tfm::bpe_tokenizer::from_gpt2("{\"a\": 0,", ""),
                       doctest::Contains("encoder.json"), tfm::parse_error);
  CHECK_THROWS_WITH_AS(tfm::bpe_tokenizer::from_gpt2("{\"a\": \"0\"}", ""),
                       doctest::Contains("not an integer"), tfm::parse_error);
  CHECK_THROWS_WITH_AS(tfm::bpe_tokenizer::from_gpt2("{\"\xe4\xb8\xad\": 0}", ""),
                       doctest::Contains("outside the 256 byte-level characters"),
                       tfm::parse_error);
  // tokenizer.json
  CHECK_THROWS_WITH_AS(tfm::bpe_tokenizer::from_hf_json("{\"model\": {\"type\": \"WordPiece\"}}"),
                       doctest::Contains("BPE models only"), tfm::unsupported_error);
  CHECK_THROWS_WITH_AS(tfm::bpe_tokenizer::from_hf_json("[]"),
                       doctest::Contains("not a JSON object"), tfm::parse_error);
  CHECK_THROWS_AS(tfm::bpe_tokenizer::from_hf_json_file("/nonexistent/tokenizer.json"),
                  tfm::io_error);
  // A merge naming a missing token.
  const auto t = tiny({{'a', 'b'}});
  std::string j = t.to_hf_json();
  const auto pos = j.find("\"a b\"");
  REQUIRE(pos != std::string::npos);
  j.replace(pos, 5, "\"a q\u00e9\"");
  CHECK_THROWS_AS(tfm::bpe_tokenizer::from_hf_json(j), tfm::parse_error);
  // Merges as pairs are accepted.
  std::string k = t.to_hf_json();
  k.replace(k.find("\"a b\""), 5, "[\"a\", \"b\"]");
  CHECK(tfm::bpe_tokenizer::from_hf_json(k).encode("ab") == std::vector<std::int32_t>{256});
}
