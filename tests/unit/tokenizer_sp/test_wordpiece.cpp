// WordPiece: ids and decoded text identical to Hugging Face `tokenizers` (BertNormalizer +
// BertPreTokenizer + WordPiece + WordPiece decoder) for five normalizer configurations on a
// vocabulary trained in the test (gen_wp_reference.py); plus hand-checked cases that need no
// Python (vocab parsing, [UNK], max_input_chars_per_word, malformed vocabularies).
#include "sp_test_support.hpp"

#include "typeformer/tokenizer/wordpiece.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <string>

TEST_CASE("wordpiece: ids and decode identical to HF tokenizers") {
  SP_REQUIRE_REFERENCE("gen_wp_reference.py", "wordpiece compatibility");
  MESSAGE("corpus seed " << sp_test::seed() + 17 << " (TFM_TEST_SEED + 17)");
  const std::string dir = sp_test::ref_dir();
  const auto vocab =
      tfm::wordpiece_tokenizer::parse_vocab(sp_test::read_all(dir + "/wp_vocab.txt"));
  REQUIRE(vocab.size() > 1000);
  std::ifstream ref(dir + "/wp.ref");
  REQUIRE(ref);
  std::map<std::string, tfm::wordpiece_tokenizer> toks;
  std::map<std::string, std::size_t> lines, id_bad, text_bad;
  std::string line;
  while (std::getline(ref, line)) {
    const auto f = sp_test::split(line);
    if (f[0] == "C") {
      REQUIRE(f.size() == 7);
      tfm::wordpiece_options o;
      o.clean_text = f[2] == "1";
      o.handle_chinese_chars = f[3] == "1";
      if (f[4] != "-") o.strip_accents = f[4] == "1";
      o.lowercase = f[5] == "1";
      o.max_input_chars_per_word = std::stoul(f[6]);
      toks.emplace(f[1], tfm::wordpiece_tokenizer(vocab, o));
      continue;
    }
    REQUIRE(f.size() == 5);
    const auto& tok = toks.at(f[1]);
    const std::string text = sp_test::unhex(f[2]);
    const auto want = sp_test::parse_ids(f[3]);
    ++lines[f[1]];
    const auto got = tok.encode(text);
    if (got != want && ++id_bad[f[1]] <= 3)
      MESSAGE(f[1] << ": ids differ for hex " << f[2] << "\n  want " << f[3] << "\n  got  "
                   << sp_test::ids_str(got));
    if (tok.decode(want) != sp_test::unhex(f[4]) && ++text_bad[f[1]] <= 3)
      MESSAGE(f[1] << ": decode differs for ids " << f[3]);
  }
  REQUIRE(toks.size() == 5);
  for (const auto& [name, n] : lines) {
    MESSAGE(name << ": " << n << " lines, " << id_bad[name] << " id mismatches, " << text_bad[name]
                 << " decode mismatches");
    CHECK(n > 2000);
    CHECK(id_bad[name] == 0);
    CHECK(text_bad[name] == 0);
  }
}

TEST_CASE("wordpiece: greedy longest match, [UNK] and max_input_chars_per_word") {
  // Vocabulary and expected tokens from google-research/bert tokenization_test.py
  // (test_wordpiece_tokenizer).
  const std::string vocab_txt =
      "[UNK]\n[CLS]\n[SEP]\nwant\n##want\n##ed\nwa\nun\nrunn\n##ing\n,\nlow\nlowest\n";
  tfm::wordpiece_options o;
  auto tok = tfm::wordpiece_tokenizer::from_vocab_text(vocab_txt, o);
  CHECK(tok.vocab_size() == 13);
  CHECK(tok.tokenize("").empty());
  CHECK(tok.tokenize("unwanted running") ==
        std::vector<std::string>{"un", "##want", "##ed", "runn", "##ing"});
  CHECK(tok.tokenize("unwantedX running") == std::vector<std::string>{"[UNK]", "runn", "##ing"});
  CHECK(tok.encode("UNwant\xC3\xA9"
                   "d,running") == std::vector<std::int32_t>{7, 4, 5, 10, 8, 9});
  CHECK(tok.encode_with_special_tokens("low") == std::vector<std::int32_t>{1, 11, 2});
  CHECK(tok.decode({7, 4, 5, 10, 8, 9}) == "unwanted, running");
  o.max_input_chars_per_word = 7;
  auto short_tok = tfm::wordpiece_tokenizer::from_vocab_text(vocab_txt, o);
  CHECK(short_tok.tokenize("unwanted lowest") == std::vector<std::string>{"[UNK]", "lowest"});
  // Basic tokenizer (bert tokenization_test.py test_basic_tokenizer_lower / _no_lower).
  CHECK(tok.normalize(" \tHeLLo!how  \n Are yoU?  ") == "  hello!how    are you?  ");
  CHECK(tok.pre_tokenize(" \tHeLLo!how  \n Are yoU?  ") ==
        std::vector<std::string>{"hello", "!", "how", "are", "you", "?"});
  CHECK(tok.pre_tokenize("H\xC3\xA9llo") == std::vector<std::string>{"hello"});
  tfm::wordpiece_options cased;
  cased.lowercase = false;
  auto ctok = tfm::wordpiece_tokenizer::from_vocab_text(vocab_txt, cased);
  CHECK(ctok.pre_tokenize(" \tHeLLo!how  \n Are yoU?  ") ==
        std::vector<std::string>{"HeLLo", "!", "how", "Are", "yoU", "?"});
  CHECK(tok.pre_tokenize("ah\xE5\x8D\x9A\xE6\x8E\xA8zz") ==
        std::vector<std::string>{"ah", "\xE5\x8D\x9A", "\xE6\x8E\xA8", "zz"});
  // Invalid UTF-8: the ill-formed byte becomes U+FFFD, which clean_text removes.
  CHECK(tok.pre_tokenize("run\xFFning") == std::vector<std::string>{"running"});
  CHECK(tok.encode("run\xFFning") == std::vector<std::int32_t>{8, 9});
  CHECK_THROWS_AS(tok.decode({13}), tfm::index_error);
}

TEST_CASE("wordpiece: malformed vocabularies are rejected with parse_error") {
  CHECK_THROWS_AS(tfm::wordpiece_tokenizer::from_vocab_text(""), tfm::parse_error);
  CHECK_THROWS_AS(tfm::wordpiece_tokenizer::from_vocab_text("a\nb\n"),
                  tfm::parse_error);  // no [UNK]
  CHECK_THROWS_AS(tfm::wordpiece_tokenizer::from_vocab_text("[UNK]\n\xC3\x28\n"), tfm::parse_error);
  try {
    (void)tfm::wordpiece_tokenizer::from_vocab_text("[UNK]\nok\n\xFF\n");
    FAIL("expected a parse_error");
  } catch (const tfm::parse_error& e) {
    CHECK(std::string(e.what()).find("line 3") != std::string::npos);
  }
  CHECK_THROWS_AS(tfm::wordpiece_tokenizer::from_file("/nonexistent/vocab.txt"), tfm::io_error);
  // CRLF line ends and trailing spaces are removed; ids follow line numbers.
  auto tok = tfm::wordpiece_tokenizer::from_vocab_text("[UNK]\r\nhello  \r\n##s\n");
  CHECK(tok.token_to_id("hello") == 1);
  CHECK(tok.token_to_id("##s") == 2);
  CHECK(tok.tokenize("hellos") == std::vector<std::string>{"hello", "##s"});
}
