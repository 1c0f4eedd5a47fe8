// Training on BPE tokens (train/tokenizer.hpp), the path examples/mini_gpt takes with
// --bpe-vocab / --tokenizer: a tiny byte-level BPE trained on a text file, a model whose
// vocabulary is the tokenizer's, a checkpoint that stores the tokenizer as a tokenizer.json
// blob; a fresh process rebuilds the tokenizer from the checkpoint alone (same ids), re-encodes
// the data and continues the run bitwise. Also: byte-level checkpoints (no blob) still load,
// bad tokenizer files are tfm::io_error / parse_error, decoding across split UTF-8 characters.
#include "train_fixture.hpp"

#include <typeformer/io/checkpoint.hpp>
#include <typeformer/tokenizer/utf8.hpp>
#include <typeformer/train/tokenizer.hpp>

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm_train_test;

namespace {
void write_text(const std::string& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

/// The micro corpus with some multi-byte UTF-8 words, so merges build tokens that hold partial
/// characters and whole ones.
std::string corpus_text() {
  std::string t = micro_text();
  const char* extra[] = {"café ", "naïve ", "über ", "日本語 ", "ünïcödé ", "€5 "};
  std::string out;
  std::size_t k = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    out += t[i];
    if (t[i] == '.') out += std::string(" ") + extra[k++ % 6];
  }
  return out;
}

struct bpe_run {
  std::string text_path;
  train::text_tokenizer tok;
  train::token_dataset data;
};

bpe_run make_run(const std::string& name, std::size_t vocab) {
  bpe_run r;
  r.text_path = temp_path(name);
  write_text(r.text_path, corpus_text());
  r.tok = train::text_tokenizer::train_bpe({r.text_path}, vocab);
  r.data = train::token_dataset::from_files({r.text_path}, r.tok, r.tok.vocab_size(), 0.1);
  return r;
}
}  // namespace

TEST_CASE("a tiny BPE trains on a file, encodes fewer tokens than bytes and round-trips") {
  auto r = make_run("bpe_corpus.txt", 300);
  const auto& tok = r.tok;
  CHECK(tok.is_bpe());
  CHECK(tok.vocab_size() == 300);
  const std::string text = corpus_text();
  const auto ids = tok.encode(text);
  CHECK(ids.size() < text.size() / 2);  // merges of frequent words
  CHECK(tok.decode(ids) == text);
  CHECK(tok.byte_count(ids) == text.size());
  for (auto id : ids) CHECK_UNARY(id >= 0 && id < tok.vocab_size());
  // The dataset holds exactly the file's tokens (train then validation).
  std::vector<std::int32_t> all = r.data.tokens(train::split::train);
  const auto& va = r.data.tokens(train::split::validation);
  all.insert(all.end(), va.begin(), va.end());
  CHECK(all == ids);
  // The unigram entropy is per BPE token: higher than the byte-level one of the same text.
  CHECK(train::unigram_entropy(ids) > train::unigram_entropy(train::byte_tokenizer{}.encode(text)));
  std::remove(r.text_path.c_str());
}

TEST_CASE("BPE run: the checkpoint stores the tokenizer; resume re-encodes and is bitwise exact") {
  thread_scope ts(1);
  auto r = make_run("bpe_resume.txt", 300);
  run_options o;
  o.total = 8;
  o.vocab = r.tok.vocab_size();

  session<float> full(o);
  r.tok.store(full.st);
  full.train_to(o, r.data, o.total);
  CHECK(full.st.curve.back().train_loss < full.st.curve.front().train_loss);

  const std::string path = temp_path("bpe_resume.tfm");
  {
    session<float> first(o);
    r.tok.store(first.st);
    first.train_to(o, r.data, 3);
    train::save_training_state(path, first.ps, first.opt, first.st);
  }
  // A fresh process: the tokenizer comes from the checkpoint alone.
  const train::training_state saved = train::read_training_state(path);
  REQUIRE(saved.blobs.count(train::text_tokenizer::blob_name) == 1);
  CHECK(saved.meta.at(train::text_tokenizer::meta_key) == "bpe");
  const auto tok2 = train::text_tokenizer::from_state(saved);
  REQUIRE(tok2.is_bpe());
  CHECK(tok2.vocab_size() == r.tok.vocab_size());
  CHECK(train::get_config(saved.meta).vocab == tok2.vocab_size());
  const std::string probe = "the café sat on a naïve dog, 日本語 far away. Ünseen wörds!";
  CHECK(tok2.encode(probe) == r.tok.encode(probe));
  CHECK(tok2.encode(corpus_text()) == r.tok.encode(corpus_text()));
  CHECK(tok2.json() == r.tok.json());

  const auto data2 = train::token_dataset::from_files({r.text_path}, tok2, tok2.vocab_size(), 0.1);
  CHECK(data2.tokens(train::split::train) == r.data.tokens(train::split::train));
  CHECK(data2.tokens(train::split::validation) == r.data.tokens(train::split::validation));

  session<float> second(o);
  second.load(path);
  REQUIRE(second.st.step == 3);
  CHECK(second.st.blobs == saved.blobs);
  second.train_to(o, data2, o.total);
  CHECK(same_curve(full.st.curve, second.st.curve));
  CHECK(same_parameters(full.ps, second.ps));

  // Saving the resumed state again keeps the blob (store() is idempotent).
  tok2.store(second.st);
  train::save_training_state(path, second.ps, second.opt, second.st);
  CHECK(train::text_tokenizer::from_state(train::read_training_state(path)).json() == r.tok.json());
  std::remove(path.c_str());
  std::remove(r.text_path.c_str());
}

TEST_CASE("a byte-level checkpoint (no tokenizer blob) loads as the byte tokenizer") {
  thread_scope ts(1);
  run_options o;
  o.total = 2;
  const auto data = micro_corpus();
  session<float> s(o);
  s.train_to(o, data, 2);
  const std::string path = temp_path("byte.tfm");
  train::save_training_state(path, s.ps, s.opt, s.st);  // no run.tokenizer, no blob: old format
  {
    io::checkpoint_reader rd(path);
    CHECK_FALSE(rd.has_meta("state.blob_keys"));
    CHECK_FALSE(rd.has_blob(train::text_tokenizer::blob_name));
  }
  const auto st = train::read_training_state(path);
  CHECK(st.blobs.empty());
  const auto tok = train::text_tokenizer::from_state(st);
  CHECK_FALSE(tok.is_bpe());
  CHECK(tok.vocab_size() == 256);
  CHECK(tok.encode("ab\xc3\xa9") == std::vector<std::int32_t>{97, 98, 0xc3, 0xa9});
  session<float> back(o);
  back.load(path);
  CHECK(same_parameters(s.ps, back.ps));
  // A byte tokenizer stored explicitly also reads back as bytes.
  train::text_tokenizer{}.store(s.st);
  train::save_training_state(path, s.ps, s.opt, s.st);
  CHECK_FALSE(train::text_tokenizer::from_state(train::read_training_state(path)).is_bpe());
  std::remove(path.c_str());
}

TEST_CASE("bad tokenizer files and checkpoint entries are io_error / parse_error") {
  const std::string dir = temp_path("badtok");
  std::filesystem::create_directories(dir);
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/missing.json"), io_error);
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/missing"), io_error);

  write_text(dir + "/truncated.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0");
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/truncated.json"), parse_error);
  write_text(dir + "/novocab.json",
             "{\"model\": {\"type\": \"BPE\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/novocab.json"), parse_error);
  write_text(dir + "/garbage.tiktoken", "this is not base64 at all\n");
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/garbage.tiktoken"), parse_error);
  write_text(dir + "/notes.txt", "plain text, not a tokenizer\n");
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/notes.txt"), parse_error);
  write_text(dir + "/braces.txt", "  {\"model\": [1, 2");
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/braces.txt"), parse_error);
  // The message names the file.
  try {
    train::text_tokenizer::from_file(dir + "/truncated.json");
    FAIL("no error");
  } catch (const parse_error& e) {
    CHECK(std::string(e.what()).find("truncated.json") != std::string::npos);
  }

  // A good file loads through every accepted name; vocab.bpe missing beside encoder.json.
  const auto trained = train::text_tokenizer::train_bpe_on_texts({corpus_text()}, 280);
  write_text(dir + "/tok.json", trained.json());
  write_text(dir + "/tok_no_extension", trained.json());
  trained.bpe()->save_tiktoken(dir + "/tok.tiktoken");
  const std::string probe = corpus_text().substr(0, 500);
  CHECK(train::text_tokenizer::from_file(dir + "/tok.json").encode(probe) == trained.encode(probe));
  CHECK(train::text_tokenizer::from_file(dir + "/tok_no_extension").encode(probe) ==
        trained.encode(probe));
  CHECK(train::text_tokenizer::from_file(dir + "/tok.tiktoken").vocab_size() == 280);
  write_text(dir + "/encoder.json", "{\"a\": 0}");
  CHECK_THROWS_AS(train::text_tokenizer::from_file(dir + "/encoder.json"), io_error);

  // Checkpoint entries.
  train::training_state st;
  st.meta[train::text_tokenizer::meta_key] = "bpe";
  CHECK_THROWS_AS(train::text_tokenizer::from_state(st), parse_error);  // no blob
  st.blobs[train::text_tokenizer::blob_name] = "{\"model\": 3";
  CHECK_THROWS_AS(train::text_tokenizer::from_state(st), parse_error);  // a bad blob
  st.meta[train::text_tokenizer::meta_key] = "wordpiece";
  CHECK_THROWS_AS(train::text_tokenizer::from_state(st), parse_error);

  CHECK_THROWS_AS(train::text_tokenizer::train_bpe_on_texts({"abc"}, 100), value_error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("decoding: whole sequences keep split UTF-8 characters; utf8_stream buffers them") {
  // A BPE whose tokens split "é" (c3 a9) and "日" (e6 97 a5) between tokens.
  const auto tok = train::text_tokenizer::train_bpe_on_texts({corpus_text()}, 300);
  const std::string text = "x\xc3\xa9y \xe6\x97\xa5 z\xf0\x9f\x98\x80";
  const auto ids = tok.encode(text);
  CHECK(tok.decode(ids) == text);
  CHECK(utf8::sanitize(tok.decode(ids)) == text);
  // Token by token, through the stream: each piece printed is valid UTF-8, together the text.
  train::utf8_stream st;
  std::string printed;
  for (auto id : ids) {
    const std::string part = st.push(tok.piece(id));
    CHECK(utf8::sanitize(part) == part);
    printed += part;
  }
  printed += st.flush();
  CHECK(printed == text);
  // Byte by byte too.
  train::utf8_stream sb;
  std::string out;
  for (char c : text) out += sb.push(std::string_view(&c, 1));
  CHECK(sb.flush().empty());
  CHECK(out == text);
  CHECK_THROWS_AS(tok.decode(std::vector<std::int32_t>{300}), index_error);
}
