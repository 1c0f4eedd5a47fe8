// Tokenizers from GGUF metadata against llama.cpp's ids (fixtures made by
// tests/data/gguf_tokenizer/make_fixtures.py with llama-cpp-python), plus synthetic vocabularies
// written here for round trips, special tokens, add_bos/add_eos and malformed metadata.
#include "gtok_support.hpp"

#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/vocab_tokenizer.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using tfm::io::gguf_file;
using tfm::io::gguf_writer;
using tfm::io::load_gguf_tokenizer;

namespace {

// ---- a synthetic byte-level vocabulary -------------------------------------------------------
// ids 0..255: the 256 bytes (GPT-2 byte-level text); then merged tokens; then specials.
struct synth {
  std::vector<std::string> tokens;
  std::vector<std::int32_t> types;
  std::vector<std::string> merges;
  std::int32_t id(std::string_view byte_level) const {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == byte_level) return static_cast<std::int32_t>(i);
    return -1;
  }
};

synth make_synth() {
  synth s;
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    s.tokens.push_back(tfm::detail::bpe::map_bytes(std::string_view(&c, 1)));
    s.types.push_back(1);
  }
  auto merge = [&](std::string a, std::string b) {
    s.merges.push_back(a + " " + b);
    s.tokens.push_back(a + b);
    s.types.push_back(1);
  };
  merge("h", "e");
  merge("l", "l");
  merge("he", "ll");
  merge("hell", "o");
  merge("\xC4\xA0", "w");  // "Ġw" = " w"
  merge("o", "r");
  merge("\xC4\xA0w", "or");
  for (auto [t, ty] : std::vector<std::pair<std::string, int>>{
           {"<|s|>", 3}, {"<|e|>", 3}, {"<u>", 4}, {"<|im_start|>", 3}, {"x<|im", 3}}) {
    s.tokens.push_back(t);
    s.types.push_back(ty);
  }
  return s;
}

struct synth_options {
  std::string model = "gpt2";
  std::string pre = "gpt-2";
  bool add_bos = true;
  bool add_eos = false;
  std::int64_t bos = -2;  // -2: the <|s|> token
  bool tokens_as_ints = false;
  bool merges_as_string = false;
  std::string extra_merge;
};

template <class F>
synth_options with(F set) {
  synth_options o;
  set(o);
  return o;
}

std::vector<std::byte> write_synth(const synth& s, const synth_options& o = {}) {
  std::vector<std::byte> out;
  gguf_writer w(out);
  w.add("general.architecture", std::string_view("llama"));
  w.add("tokenizer.ggml.model", std::string_view(o.model));
  w.add("tokenizer.ggml.pre", std::string_view(o.pre));
  if (o.tokens_as_ints) {
    w.add("tokenizer.ggml.tokens", std::vector<std::int32_t>(s.tokens.size(), 7));
  } else {
    std::vector<std::string_view> t(s.tokens.begin(), s.tokens.end());
    w.add("tokenizer.ggml.tokens", t);
  }
  w.add("tokenizer.ggml.token_type", s.types);
  std::vector<std::string> merges = s.merges;
  if (!o.extra_merge.empty()) merges.push_back(o.extra_merge);
  if (o.merges_as_string) {
    w.add("tokenizer.ggml.merges", std::string_view("h e"));
  } else {
    std::vector<std::string_view> m(merges.begin(), merges.end());
    w.add("tokenizer.ggml.merges", m);
  }
  w.add("tokenizer.ggml.bos_token_id",
        static_cast<std::uint32_t>(o.bos == -2 ? s.id("<|s|>") : o.bos));
  w.add("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(s.id("<|e|>")));
  w.add("tokenizer.ggml.add_bos_token", o.add_bos);
  w.add("tokenizer.ggml.add_eos_token", o.add_eos);
  w.finish();
  return out;
}

tfm::vocab_tokenizer load(const std::vector<std::byte>& bytes) {
  const gguf_file f = gguf_file::from_bytes(bytes, "synthetic.gguf");
  return load_gguf_tokenizer(f);
}

std::string error_of(const std::vector<std::byte>& bytes) {
  try {
    (void)load(bytes);
  } catch (const tfm::error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("synthetic gpt2 vocabulary: merges, round trip, BOS/EOS") {
  const synth s = make_synth();
  const auto tok = load(write_synth(s, with([](synth_options& o) { o.add_eos = true; })));
  CHECK(tok.model() == tfm::vocab_tokenizer::kind::bpe);
  CHECK(tok.vocab_size() == s.tokens.size());
  CHECK(tok.encode("hello world") ==
        std::vector<std::int32_t>{s.id("hello"), s.id("\xC4\xA0wor"), s.id("l"), s.id("d")});
  CHECK(tok.bos_id() == s.id("<|s|>"));
  CHECK(tok.encode("hello", {.add_special = true}) ==
        std::vector<std::int32_t>{s.id("<|s|>"), s.id("hello"), s.id("<|e|>")});
  CHECK(tok.encode("", {.add_special = true}) ==
        std::vector<std::int32_t>{s.id("<|s|>"), s.id("<|e|>")});
  CHECK(tok.encode("").empty());

  // decode(encode(x)) == x on random valid UTF-8 (seeded).
  const std::uint64_t seed = 0x6770746fULL;
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  const char32_t pool[] = {U'a', U'h', U'e',  U'l', U'o',      U' ',      U'\n', U'\t', U'1', U'\'',
                           U'é', U'ж', U'中', U'😀', U'\u0301', U'\u3000', U'<',  U'|',  U'>'};
  for (int n = 0; n < 300; ++n) {
    std::string x;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) tfm::utf8::append(x, pool[rng() % std::size(pool)]);
    const auto ids = tok.encode(x);
    REQUIRE_MESSAGE(tok.decode(ids) == x, "'" << x << "'");
  }
}

TEST_CASE("synthetic gpt2 vocabulary: special tokens allowed or not") {
  const synth s = make_synth();
  const auto tok = load(write_synth(s));
  const std::string text = "<|s|>hello<u>";
  // parse_special = false: control tokens are text, user-defined ones are still recognised.
  const auto plain = tok.encode(text);
  CHECK(std::find(plain.begin(), plain.end(), s.id("<|s|>")) == plain.end());
  CHECK(plain.back() == s.id("<u>"));
  CHECK(tok.decode(plain) == text);
  // parse_special = true: both.
  CHECK(tok.encode(text, {.parse_special = true}) ==
        std::vector<std::int32_t>{s.id("<|s|>"), s.id("hello"), s.id("<u>")});
  // Control tokens decode to their text only when asked.
  const std::vector<std::int32_t> ids{s.id("<|s|>"), s.id("hello")};
  CHECK(tok.decode(ids, true) == "<|s|>hello");
  CHECK(tok.decode(ids, false) == "hello");
  // The longest special token claims the text first (llama.cpp's partition): "x<|im" would be
  // the leftmost match, "<|im_start|>" is longer.
  CHECK(tok.encode("x<|im_start|>", {.parse_special = true}) ==
        std::vector<std::int32_t>{s.id("x"), s.id("<|im_start|>")});
}

TEST_CASE("synthetic vocabulary: malformed metadata is refused with a clear message") {
  const synth s = make_synth();
  std::string e = error_of(write_synth(s, with([](synth_options& o) { o.model = "bert"; })));
  CHECK(e.find("tokenizer.ggml.model 'bert' is not supported") != std::string::npos);
  CHECK(e.find("gpt2") != std::string::npos);
  CHECK(e.find("synthetic.gguf") != std::string::npos);

  e = error_of(write_synth(s, with([](synth_options& o) { o.pre = "tekken"; })));
  CHECK(e.find("pre-tokenizer 'tekken'") != std::string::npos);
  CHECK(e.find("smollm") != std::string::npos);

  e = error_of(write_synth(s, with([](synth_options& o) { o.tokens_as_ints = true; })));
  CHECK(e.find("tokenizer.ggml.tokens") != std::string::npos);
  CHECK(e.find("array of int32, not of string") != std::string::npos);

  e = error_of(write_synth(s, with([](synth_options& o) { o.merges_as_string = true; })));
  CHECK(e.find("tokenizer.ggml.merges") != std::string::npos);
  CHECK(e.find("holds string") != std::string::npos);

  e = error_of(write_synth(s, with([](synth_options& o) { o.extra_merge = "h zzz"; })));
  CHECK(e.find("right token that is not in the vocabulary") != std::string::npos);
  e = error_of(write_synth(s, with([](synth_options& o) { o.extra_merge = "h"; })));
  CHECK(e.find("not two tokens") != std::string::npos);
  e = error_of(write_synth(s, with([](synth_options& o) { o.extra_merge = "x y"; })));
  CHECK(e.find("merges into a token that is not in the vocabulary") != std::string::npos);

  e = error_of(write_synth(s, with([](synth_options& o) { o.bos = 100000; })));
  CHECK(e.find("tokenizer.ggml.bos_token_id = 100000 is outside the vocabulary") !=
        std::string::npos);

  // A missing key names the key.
  std::vector<std::byte> bytes;
  {
    gguf_writer w(bytes);
    w.add("tokenizer.ggml.model", std::string_view("gpt2"));
    w.finish();
  }
  e = error_of(bytes);
  CHECK(e.find("'tokenizer.ggml.tokens' is missing") != std::string::npos);
}

TEST_CASE("SentencePiece GGUF (model llama) against llama.cpp's ids") {
  const std::string model = gtok_test::data_dir() + "/spm_tiny.gguf";
  const auto tok = load_gguf_tokenizer(model);
  CHECK(tok.model() == tfm::vocab_tokenizer::kind::spm);
  CHECK(tok.add_bos());
  CHECK(tok.add_space_prefix());
  const auto sections = gtok_test::read_records(gtok_test::data_dir() + "/spm_tiny_ids.txt");
  REQUIRE(sections.size() == 1);
  const auto r = gtok_test::compare(tok, sections[0].records, "spm_tiny");
  MESSAGE("spm_tiny: " << r.records << " records, " << r.bytes << " bytes, " << r.tokens
                       << " tokens compared, " << r.mismatches << " mismatches");
  CHECK(r.records > 100);
  CHECK(r.mismatches == 0);
  // Round trip (byte fallback covers every character; no special token text in these).
  std::size_t trips = 0;
  for (const auto& rec : sections[0].records) {
    if (rec.text.find('<') != std::string::npos) continue;
    CHECK(tok.decode(tok.encode(rec.text)) == rec.text);
    ++trips;
  }
  CHECK(trips > 100);
}

// ---- the real model (ctest entry tfm_test_gguf_tokenizer_smollm2) ----------------------------

TEST_CASE("smollm2: fixture ids equal llama.cpp's for every pre-tokenizer" * doctest::skip()) {
  const std::string model = gtok_test::smollm2_path();
  if (!std::filesystem::exists(model)) {
    MESSAGE("TFM_SKIP: " << model << " is absent (scripts/fetch-models downloads it)");
    return;
  }
  const gguf_file f(model);
  const auto sections =
      gtok_test::read_records(gtok_test::data_dir() + "/smollm2_llamacpp_ids.txt");
  REQUIRE(sections.size() == 5);
  for (const auto& sec : sections) {
    const auto bytes = gtok_test::with_pre(f, sec.pre);
    const auto tok = load_gguf_tokenizer(gguf_file::from_bytes(bytes, "smollm2/" + sec.pre));
    const auto r = gtok_test::compare(tok, sec.records, sec.pre);
    MESSAGE("pre " << sec.pre << ": " << r.records << " records, " << r.bytes << " bytes, "
                   << r.tokens << " tokens compared, " << r.mismatches << " mismatches");
    CHECK(r.mismatches == 0);
  }
}

TEST_CASE("smollm2: round trip, ChatML special tokens, add_bos" * doctest::skip()) {
  const std::string model = gtok_test::smollm2_path();
  if (!std::filesystem::exists(model)) {
    MESSAGE("TFM_SKIP: " << model << " is absent (scripts/fetch-models downloads it)");
    return;
  }
  const auto tok = load_gguf_tokenizer(model);
  CHECK(tok.vocab_size() == 49152);
  CHECK(tok.pre() == "smollm");
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK_FALSE(tok.add_bos());  // tokenizer.ggml.add_bos_token = false in this file
  const std::string chat = "<|im_start|>user\nHi 123<|im_end|>\n";
  const auto with = tok.encode(chat, {.parse_special = true});
  CHECK(with.front() == 1);
  CHECK(std::count(with.begin(), with.end(), 2) == 1);
  const auto without = tok.encode(chat);
  CHECK(std::count(without.begin(), without.end(), 1) == 0);
  CHECK(tok.decode(with) == chat);
  CHECK(tok.decode(without) == chat);
  CHECK(tok.encode("Hi", {.add_special = true}) == tok.encode("Hi"));  // add_bos is off
  // Digits are single tokens (pre smollm = {digits, gpt2}).
  CHECK(tok.encode("2024").size() == 4);
  const auto sections =
      gtok_test::read_records(gtok_test::data_dir() + "/smollm2_llamacpp_ids.txt");
  std::size_t trips = 0;
  for (const auto& rec : sections[0].records) {
    if (rec.parse_special || rec.add_special) continue;
    // The vocabulary lacks 21 byte tokens (0x04, 0x06, ..., 0xF5..0xFF); text made of other
    // bytes round-trips.
    CHECK(tok.decode(tok.encode(rec.text)) == rec.text);
    ++trips;
  }
  MESSAGE(trips << " round trips");
}

TEST_CASE("smollm2: the export tokenizer (pre smollm) and its tokenizer.json give llama.cpp's ids" *
          doctest::skip()) {
  // `tfm convert SmolLM2.gguf DIR` carries the vocabulary as a bpe_tokenizer with split_digits
  // (io/export_gguf_import.hpp) and writes it as tokenizer.json ([Digits, ByteLevel]); both must
  // split and merge as llama.cpp does on the fixture's texts (llama-cpp-python's ids). Invalid
  // UTF-8 is left out: llama.cpp reads it as U+FFFD, bpe_tokenizer as raw bytes (and SmolLM2
  // lacks the bytes 0xF5..0xFF, which then encode to nothing).
  const std::string model = gtok_test::smollm2_path();
  if (!std::filesystem::exists(model)) {
    MESSAGE("TFM_SKIP: " << model << " is absent (scripts/fetch-models downloads it)");
    return;
  }
  const gguf_file f(model);
  const tfm::bpe_tokenizer tok = tfm::io::detail::importer::tokenizer_of(f);
  CHECK(tok.split_digits());
  CHECK(tok.missing_bytes() == 21);
  const std::string json = tok.to_hf_json();
  CHECK(json.find(R"({"type": "Digits", "individual_digits": true})") != std::string::npos);
  const tfm::bpe_tokenizer back = tfm::bpe_tokenizer::from_hf_json(json);
  CHECK(back.split_digits());
  const auto sections =
      gtok_test::read_records(gtok_test::data_dir() + "/smollm2_llamacpp_ids.txt");
  REQUIRE(sections[0].pre == "smollm");
  std::size_t n = 0, bytes = 0, bad = 0;
  for (const auto& rec : sections[0].records) {
    if (rec.add_special || rec.parse_special || !tfm::utf8::is_valid(rec.text)) continue;
    ++n;
    bytes += rec.text.size();
    const auto ids = tok.encode(rec.text);
    if (ids != rec.ids || back.encode(rec.text) != rec.ids) {
      if (++bad <= 5)
        MESSAGE("mismatch on '" << rec.text.substr(0, 120)
                                << "'\n  ours:      " << gtok_test::show_ids(ids)
                                << "\n  llama.cpp: " << gtok_test::show_ids(rec.ids));
    }
  }
  MESSAGE(n << " records (" << bytes << " bytes) compared, " << bad << " mismatches");
  CHECK(n > 50);
  CHECK(bad == 0);
  // A byte without a token is dropped, as llama.cpp drops it.
  auto ab = tok.encode("a");
  for (auto id : tok.encode("b")) ab.push_back(id);
  CHECK(tok.encode("a\x04"
                   "b") == ab);
}

// ---- the full corpus (ctest entry tfm_test_gguf_tokenizer_llamacpp) --------------------------

TEST_CASE("llamacpp: the whole corpus against llama-cpp-python, and tokens/s" * doctest::skip()) {
  if (std::getenv("TFM_LIVE_PEERS") == nullptr) {  // minutes of llama.cpp: opt-in
    MESSAGE(
        "TFM_SKIP: the live comparison with llama.cpp is opt-in (scripts/test --live-peers, "
        "or TFM_LIVE_PEERS=1); the committed fixtures are compared in every run");
    return;
  }
  const std::string model = gtok_test::smollm2_path();
  if (!std::filesystem::exists(model)) {
    MESSAGE("TFM_SKIP: " << model << " is absent (scripts/fetch-models downloads it)");
    return;
  }
  const std::string full = gtok_test::work_dir() + "/smollm2_full.txt";
  const std::string log = gtok_test::work_dir() + "/make_fixtures.log";
  const char* py = std::getenv("TFM_GTOK_PYTHON");
  const std::string cmd = std::string(py != nullptr ? py : TFM_PYTHON) + " " + TFM_SOURCE_DIR +
                          "/tests/data/gguf_tokenizer/make_fixtures.py --model " + model +
                          " --full " + full + " > " + log + " 2>&1";
  int rc = std::system(cmd.c_str());
#ifdef WEXITSTATUS
  if (rc != -1) rc = WEXITSTATUS(rc);
#endif
  if (rc == 77 || rc == 127 || rc == -1) {
    MESSAGE("TFM_SKIP: llama-cpp-python is not available: " << gtok_test::slurp(log));
    return;
  }
  REQUIRE_MESSAGE(rc == 0, "make_fixtures.py failed: " << gtok_test::slurp(log));
  const gguf_file f(model);
  const auto sections = gtok_test::read_records(full);
  for (const auto& sec : sections) {
    const auto bytes = gtok_test::with_pre(f, sec.pre);
    const auto tok = load_gguf_tokenizer(gguf_file::from_bytes(bytes, "smollm2/" + sec.pre));
    const auto r = gtok_test::compare(tok, sec.records, sec.pre);
    MESSAGE("pre " << sec.pre << ": " << r.records << " records, " << r.bytes << " bytes, "
                   << r.tokens << " tokens compared, " << r.mismatches << " mismatches");
    CHECK(r.bytes >= 1000000);
    CHECK(r.mismatches == 0);

    // Speed, one thread, the same records: one call per record, and the whole text at once.
    using clock = std::chrono::steady_clock;
    std::vector<std::int32_t> ids;
    std::size_t n_tokens = 0;
    auto t0 = clock::now();
    for (const auto& rec : sec.records) {
      ids.clear();
      tok.encode_into(rec.text, {rec.add_special, rec.parse_special}, ids);
      n_tokens += ids.size();
    }
    const double ours_calls = std::chrono::duration<double>(clock::now() - t0).count();
    std::string whole;
    for (const auto& rec : sec.records)
      if (!rec.add_special && !rec.parse_special) whole += rec.text;
    t0 = clock::now();
    const std::size_t n_whole = tok.encode(whole).size();
    const double ours_whole = std::chrono::duration<double>(clock::now() - t0).count();
    MESSAGE("pre " << sec.pre << " tokens/s, per-record calls: ours " << n_tokens / ours_calls
                   << ", llama.cpp " << n_tokens / sec.llama_seconds_calls
                   << " (through Python); whole text (" << whole.size() << " bytes, " << n_whole
                   << " tokens): ours " << n_whole / ours_whole << ", llama.cpp "
                   << n_whole / sec.llama_seconds_whole);
  }
}
