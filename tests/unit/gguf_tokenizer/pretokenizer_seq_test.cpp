// The split patterns added for llama.cpp's pre-tokenizers and pretokenizer sequences, on hand
// examples whose pieces follow from the regexes (the llama.cpp fixtures cover them at scale).
#include "typeformer/tokenizer/pretokenizer.hpp"

#include <doctest/doctest.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

using tfm::split_pattern;

namespace {
std::vector<std::string> pieces(std::string_view text, const tfm::pretokenizer& pre) {
  std::vector<std::string> out;
  tfm::for_each_piece(text, pre, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}
using v = std::vector<std::string>;
}  // namespace

TEST_CASE("split patterns: digits, numbers, three_digits, gpt2_punct") {
  CHECK(pieces("ab12 ३4x", {split_pattern::digits}) == v{"ab", "1", "2", " ", "३", "4", "x"});
  CHECK(pieces("ab12 ३4x", {split_pattern::numbers}) == v{"ab", "12", " ", "३4", "x"});
  CHECK(pieces("12345a1234567", {split_pattern::three_digits}) ==
        v{"123", "45a", "123", "456", "7"});
  CHECK(pieces("12a345", {split_pattern::three_digits}) == v{"12a", "345"});
  // [\p{P}\$\+<=>\^~\|]+ : backtick is not in it, non-ASCII punctuation is.
  CHECK(pieces("a+b`c«d»!!", {split_pattern::gpt2_punct}) == v{"a", "+", "b`c", "«", "d", "»!!"});
}

TEST_CASE("split patterns: llama3_ascii and qwen2 against cl100k") {
  // llama.cpp spells the contractions '[sS]...: U+017F does not fold to s there.
  CHECK(pieces("it'ſa", {split_pattern::cl100k}) == v{"it", "'ſ", "a"});
  CHECK(pieces("it'ſa", {split_pattern::llama3_ascii}) == v{"it", "'ſa"});
  CHECK(pieces("IT'S 12345", {split_pattern::llama3_ascii}) == v{"IT", "'S", " ", "123", "45"});
  CHECK(pieces("IT'S 12345", {split_pattern::qwen2}) ==
        v{"IT", "'S", " ", "1", "2", "3", "4", "5"});
  CHECK(tfm::pattern_from_regex(tfm::pattern_regex(split_pattern::qwen2)) == split_pattern::qwen2);
  CHECK(tfm::pattern_from_name("three_digits") == split_pattern::three_digits);
}

TEST_CASE("pretokenizer sequences split the pieces of the step before") {
  // SmolLM2 = {digits, gpt2}: " 12" cannot join, and (?!\S) stops at a piece's end.
  const tfm::pretokenizer smollm{split_pattern::digits, split_pattern::gpt2};
  CHECK(pieces("a 12  3", smollm) == v{"a", " ", "1", "2", "  ", "3"});
  CHECK(pieces("x  y", smollm) == v{"x", " ", " y"});
  const tfm::pretokenizer deflt{split_pattern::gpt2_punct, split_pattern::gpt2,
                                split_pattern::numbers, split_pattern::three_digits};
  // gpt2_punct: "hi" "," " 1234567" "!"; gpt2 keeps " 1234567"; numbers splits off the space;
  // three_digits splits the run.
  CHECK(pieces("hi, 1234567!", deflt) == v{"hi", ",", " ", "123", "456", "7", "!"});
  CHECK(pieces("", smollm).empty());
  CHECK_THROWS_AS(tfm::pretokenizer(std::initializer_list<split_pattern>{}), tfm::value_error);
}
