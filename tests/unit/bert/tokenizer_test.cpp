// wordpiece_tokenizer::from_hf_json against Hugging Face's `tokenizers` package: a committed
// 300-token cased tokenizer (always run), all-MiniLM-L6-v2's tokenizer.json (minilm:*, needs the
// model cache), 2000 random strings tokenized by the package at test time (live:*), and the
// loader's errors for what it does not read.
// The library first: io/safetensors.hpp calls an unqualified quoted(), which <filesystem> (via
// <iomanip>) would make ambiguous with std::quoted.
#include "typeformer/tokenizer/wordpiece.hpp"

#include "bert_test_support.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using tfm::wordpiece_tokenizer;

namespace {

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "fixture text lacks " << from);
  return s.replace(at, from.size(), to);
}

/// Compares encode_with_special_tokens on every corpus line with the expected ids.
void check_corpus(const wordpiece_tokenizer& tok, const tfm::detail::json::value& corpus,
                  const tfm::detail::json::value& expected, const std::string& who) {
  REQUIRE(corpus.array.size() == expected.array.size());
  std::size_t same = 0;
  for (std::size_t i = 0; i < corpus.array.size(); ++i) {
    const auto got = tok.encode_with_special_tokens(corpus.array[i].string);
    const auto want = bert_test::ids_of(expected.array[i]);
    if (got == want) {
      ++same;
    } else {
      std::string g, w;
      for (auto x : got) g += std::to_string(x) + " ";
      for (auto x : want) w += std::to_string(x) + " ";
      FAIL_CHECK(who << " line " << i << " \"" << corpus.array[i].string.substr(0, 60)
                     << "\":\n  ours " << g << "\n  tokenizers " << w);
    }
  }
  MESSAGE(who << ": " << same << "/" << corpus.array.size() << " lines identical to tokenizers");
  CHECK(same == corpus.array.size());
}

}  // namespace

TEST_CASE("wordpiece from_hf_json: small cased tokenizer == tokenizers, every corpus line") {
  const auto cases = bert_test::load_json(bert_test::data_dir() + "/tokenizer_cases.json");
  const auto tok =
      wordpiece_tokenizer::from_hf_json_file(bert_test::data_dir() + "/small_tokenizer.json");
  CHECK_FALSE(tok.options().lowercase);
  CHECK(tok.options().strip_accents == true);
  CHECK(tok.options().max_input_chars_per_word == 12);
  CHECK(tok.options().added_tokens.size() == 5);
  check_corpus(tok, *cases.find("corpus"), *cases.find("small"), "small_tokenizer.json");
}

TEST_CASE("wordpiece from_hf_json: what it refuses, with the field named") {
  const std::string base = bert_test::slurp(bert_test::data_dir() + "/small_tokenizer.json");
  auto load = [](const std::string& text) {
    return wordpiece_tokenizer::from_hf_json(text, "t.json");
  };
  CHECK_NOTHROW(load(base));
  auto refused = [&](const std::string& text, auto tag, const std::string& part) {
    try {
      load(text);
      FAIL_CHECK("accepted a file that should fail with " << part);
    } catch (const decltype(tag)& e) {
      CHECK_MESSAGE(std::string(e.what()).find(part) != std::string::npos, std::string(e.what()));
      CHECK_MESSAGE(std::string(e.what()).find("t.json") != std::string::npos,
                    std::string(e.what()));
    }
  };
  const tfm::unsupported_error unsupported{""};
  const tfm::parse_error parse{""};
  refused(replaced(base, "\"type\": \"WordPiece\",\n  \"unk_token\"",
                   "\"type\": \"BPE\",\n  \"unk_token\""),
          unsupported, "model.type");
  refused(replaced(base, "\"BertNormalizer\"", "\"Lowercase\""), unsupported, "normalizer");
  refused(replaced(base, "\"BertPreTokenizer\"", "\"Whitespace\""), unsupported, "pre_tokenizer");
  refused(replaced(base, "\"BertProcessing\"", "\"RobertaProcessing\""), unsupported,
          "post_processor");
  refused(replaced(base, "\"lstrip\": false", "\"lstrip\": true"), unsupported, "lstrip");
  refused(replaced(base, "\"[PAD]\": 0", "\"[PAD]\": 7"), parse, "repeats an id");
  refused(replaced(base, "\"[PAD]\": 0", "\"[PAD]\": 100000"), parse, "model.vocab");
  refused(replaced(base, "\"unk_token\": \"[UNK]\"", "\"unk_token\": \"<unk>\""), parse, "<unk>");
  refused(replaced(base, "\"lowercase\": false", "\"lowercase\": 0"), parse,
          "normalizer.lowercase");
  refused(replaced(base, "\"max_input_chars_per_word\": 12", "\"max_input_chars_per_word\": -1"),
          parse, "max_input_chars_per_word");
  refused("[1, 2]", parse, "top level");
  refused("{\"model\": ", parse, "byte");
  CHECK_THROWS_AS(wordpiece_tokenizer::from_hf_json_file(bert_test::work_dir() + "/none.json"),
                  tfm::io_error);
}

TEST_CASE("wordpiece from_hf_json: null normalizer and post-processor, TemplateProcessing") {
  const std::string base = bert_test::slurp(bert_test::data_dir() + "/small_tokenizer.json");
  std::string plain = base;
  const auto n0 = plain.find("\"normalizer\"");
  const auto n1 = plain.find("\"pre_tokenizer\"");
  plain.replace(n0, n1 - n0, "\"normalizer\": null,\n ");
  const auto p0 = plain.find("\"post_processor\"");
  const auto p1 = plain.find("\"decoder\"");
  plain.replace(p0, p1 - p0, "\"post_processor\": null,\n ");
  const auto t = wordpiece_tokenizer::from_hf_json(plain, "plain.json");
  CHECK_FALSE(t.options().clean_text);
  CHECK(t.encode_with_special_tokens("Hello") == t.encode("Hello"));  // nothing added
  CHECK(t.encode("Hello") == std::vector<std::int32_t>{t.token_to_id("Hello")});

  std::string templ = base;
  templ.replace(
      templ.find("\"post_processor\""),
      templ.find("\"decoder\"") - templ.find("\"post_processor\""),
      R"("post_processor": {"type": "TemplateProcessing", "single": [)"
      R"({"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},)"
      R"({"SpecialToken": {"id": "[CLS]", "type_id": 0}}], "pair": [], "special_tokens": {}},)"
      "\n ");
  const auto t2 = wordpiece_tokenizer::from_hf_json(templ, "templ.json");
  const auto ids = t2.encode_with_special_tokens("the");
  REQUIRE(ids.size() == 3);
  CHECK(ids.front() == t2.token_to_id("[SEP]"));
  CHECK(ids.back() == t2.token_to_id("[CLS]"));
}

TEST_CASE("minilm: all-MiniLM-L6-v2 tokenizer.json == tokenizers on the fixture corpus" *
          doctest::skip()) {
  if (!bert_test::minilm_present()) {
    MESSAGE("TFM_SKIP: " << bert_test::minilm_dir() << " is absent (scripts/fetch-models)");
    return;
  }
  const auto cases = bert_test::load_json(bert_test::data_dir() + "/tokenizer_cases.json");
  const auto tok =
      wordpiece_tokenizer::from_hf_json_file(bert_test::minilm_dir() + "/tokenizer.json");
  CHECK(tok.vocab_size() == 30522);
  check_corpus(tok, *cases.find("corpus"), *cases.find("minilm"), "all-MiniLM-L6-v2");
}

TEST_CASE("live: 2000 random strings tokenized by the tokenizers package at test time" *
          doctest::skip()) {
  const std::string tj = bert_test::minilm_dir() + "/tokenizer.json";
  if (!bert_test::minilm_present()) {
    MESSAGE("TFM_SKIP: " << bert_test::minilm_dir() << " is absent (scripts/fetch-models)");
    return;
  }
  if (bert_test::run(std::string(TFM_PYTHON) + " -c 'import tokenizers' >/dev/null 2>&1") != 0) {
    MESSAGE("TFM_SKIP: the Python package tokenizers is not importable by " << TFM_PYTHON);
    return;
  }
  const char* env_seed = std::getenv("TFM_TEST_SEED");
  const std::string seed = env_seed && *env_seed ? env_seed : "1234";
  MESSAGE("TFM_TEST_SEED=" << seed << " (the corpus generator's seed)");
  const std::string out = bert_test::work_dir() + "/live.json";
  const std::string cmd = std::string(TFM_PYTHON) + " " + bert_test::data_dir() +
                          "/make_tokenizer_fixtures.py live " + tj + " " + out + " " + seed +
                          " 2000";
  REQUIRE_MESSAGE(bert_test::run(cmd) == 0, cmd);
  const auto doc = bert_test::load_json(out);
  check_corpus(wordpiece_tokenizer::from_hf_json_file(tj), *doc.find("corpus"), *doc.find("ids"),
               "live random corpus");
}
