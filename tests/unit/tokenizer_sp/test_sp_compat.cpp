// SentencePiece compatibility: models trained by the `sentencepiece` pip package on a corpus of
// machine text and seeded random Unicode (gen_sp_reference.py); every line must encode to the
// same ids and decode to the same text as the reference, and random id sequences must decode
// identically.
#include "sp_test_support.hpp"

#include "typeformer/tokenizer/sentencepiece.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <string>

namespace {

struct compat_stats {
  std::size_t encoded = 0, decoded = 0, id_mismatch = 0, text_mismatch = 0, roundtrip_checked = 0;
};

compat_stats check_model(const std::string& name, bool roundtrip) {
  compat_stats st;
  const std::string dir = sp_test::ref_dir();
  const auto tok = tfm::sentencepiece_tokenizer::from_file(dir + "/" + name + ".model");
  std::ifstream ref(dir + "/" + name + ".ref");
  REQUIRE(ref);
  std::string line;
  while (std::getline(ref, line)) {
    const auto f = sp_test::split(line);
    if (f[0] == "E") {
      REQUIRE(f.size() == 4);
      const std::string text = sp_test::unhex(f[1]);
      const auto want = sp_test::parse_ids(f[2]);
      const std::string want_text = sp_test::unhex(f[3]);
      const auto got = tok.encode(text);
      ++st.encoded;
      if (got != want) {
        ++st.id_mismatch;
        if (st.id_mismatch <= 3)
          MESSAGE(name << ": ids differ for input hex " << f[1] << "\n  want " << f[2]
                       << "\n  got  " << sp_test::ids_str(got));
      }
      const std::string dec = tok.decode(want);
      if (dec != want_text) {
        ++st.text_mismatch;
        if (st.text_mismatch <= 3) MESSAGE(name << ": decode differs for ids " << f[2]);
      }
      if (roundtrip && tfm::utf8::is_valid(text) &&
          text.find("\xE2\x96\x81") == std::string::npos) {
        ++st.roundtrip_checked;
        CHECK_MESSAGE(tok.decode(got) == text, name << ": decode(encode(s)) != s for hex " << f[1]);
      }
    } else if (f[0] == "D") {
      REQUIRE(f.size() == 3);
      const auto ids = sp_test::parse_ids(f[1]);
      ++st.decoded;
      if (tok.decode(ids) != sp_test::unhex(f[2])) {
        ++st.text_mismatch;
        if (st.text_mismatch <= 3) MESSAGE(name << ": decode differs for ids " << f[1]);
      }
    }
  }
  MESSAGE(name << ": " << st.encoded << " lines encoded, " << st.id_mismatch << " id mismatches; "
               << st.decoded << " random id sequences decoded; " << st.text_mismatch
               << " decode mismatches; " << st.roundtrip_checked << " round trips");
  return st;
}

}  // namespace

TEST_CASE("sentencepiece: ids and text identical to the sentencepiece package") {
  SP_REQUIRE_REFERENCE("gen_sp_reference.py", "sentencepiece compatibility");
  MESSAGE("corpus seed " << sp_test::seed() << " (set TFM_TEST_SEED to change)");
  struct m {
    const char* name;
    bool roundtrip;
  };
  for (const m& model :
       {m{"bpe_identity", false}, m{"unigram_identity", false}, m{"unigram_nfkc", false},
        m{"bpe_nfkc", false}, m{"unigram_roundtrip", true}, m{"bpe_roundtrip", true},
        m{"bpe_suffix", false}, m{"char_identity", false}, m{"word_nfkc", false}}) {
    SUBCASE(model.name) {
      const compat_stats st = check_model(model.name, model.roundtrip);
      CHECK(st.encoded > 2000);
      CHECK(st.decoded == 300);
      CHECK(st.id_mismatch == 0);
      CHECK(st.text_mismatch == 0);
      if (model.roundtrip) CHECK(st.roundtrip_checked > 2000);
    }
  }
}

TEST_CASE("sentencepiece: byte fallback on characters outside the vocabulary") {
  SP_REQUIRE_REFERENCE("gen_sp_reference.py", "byte fallback test");
  const auto tok =
      tfm::sentencepiece_tokenizer::from_file(sp_test::ref_dir() + "/unigram_roundtrip.model");
  // U+10348 GOTHIC LETTER HWAIR is in no training line: it must become its 4 UTF-8 bytes.
  const std::string hwair = "\xF0\x90\x8D\x88";
  REQUIRE(tok.piece_to_id(hwair) == tok.unk_id());
  const auto ids = tok.encode(hwair);
  REQUIRE(ids.size() >= 4);
  const std::vector<std::int32_t> tail(ids.end() - 4, ids.end());
  CHECK(tok.id_to_piece(tail[0]) == "<0xF0>");
  CHECK(tok.id_to_piece(tail[1]) == "<0x90>");
  CHECK(tok.id_to_piece(tail[2]) == "<0x8D>");
  CHECK(tok.id_to_piece(tail[3]) == "<0x88>");
  CHECK(tok.decode(ids) == hwair);
  // Ill-formed input: each bad byte is U+FFFD, encoded through byte fallback as EF BF BD.
  const auto bad = tok.encode("\xFF");
  const auto tokens = tok.encode_tokens("\xFF");
  std::string pieces;
  for (const auto& t : tokens) pieces += t.piece;
  CHECK(pieces.find("<0xEF><0xBF><0xBD>") != std::string::npos);
  CHECK(tok.decode(bad) == "\xEF\xBF\xBD");
  // A truncated byte sequence decodes to one U+FFFD per byte, never to ill-formed UTF-8.
  CHECK(tok.decode({tok.piece_to_id("<0xF0>"), tok.piece_to_id("<0x90>")}) ==
        "\xEF\xBF\xBD\xEF\xBF\xBD");
  // Control ids are invisible; ids outside the vocabulary are an index_error.
  CHECK(tok.decode({tok.bos_id(), tok.eos_id()}).empty());
  CHECK_THROWS_AS(tok.decode({static_cast<std::int32_t>(tok.vocab_size())}), tfm::index_error);
  CHECK_THROWS_AS(tok.decode({-1}), tfm::index_error);
}
