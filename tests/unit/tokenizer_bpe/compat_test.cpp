// Exact token ids against the reference implementations (tiktoken, Hugging Face tokenizers) on a
// multilingual corpus built from text on the machine plus seeded random Unicode strings. The ids
// come from reference_ids.py; the test skips with a message when ../shared/data or the Python
// packages are absent.
#include "test_support.hpp"
#include "typeformer/tokenizer/bpe.hpp"

#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

struct reference {
  std::string skip_reason;  // non-empty: skip
  std::string dir;
  std::vector<std::string> corpus;
};

const reference& get_reference() {
  static const reference ref = [] {
    reference r;
    const std::string data = bpe_test::shared_data();
    if (data.empty()) {
      r.skip_reason = "../shared/data (gpt2, cl100k) is absent";
      return r;
    }
    const std::uint64_t seed = bpe_test::seed(20240611);
    r.dir = bpe_test::work_dir() + "/ref";
    const std::string log = bpe_test::work_dir() + "/reference_ids.log";
    const int rc = bpe_test::run_python(
        "reference_ids.py " + r.dir + " --seed " + std::to_string(seed) + " --data " + data, log);
    MESSAGE("reference corpus seed " << seed << ": " << bpe_test::slurp(log));
    if (rc == 77 || rc == -1 || rc == 127) {
      r.skip_reason = "reference_ids.py could not run: " + bpe_test::slurp(log);
      return r;
    }
    if (rc != 0) {
      r.skip_reason = "";
      r.dir.clear();
      FAIL_CHECK("reference_ids.py failed (status " << rc << "): " << bpe_test::slurp(log));
      return r;
    }
    r.corpus = bpe_test::read_corpus(r.dir + "/corpus.jsonl");
    return r;
  }();
  return ref;
}

std::string snippet(const std::string& s) {
  std::string t = s.substr(0, 120);
  for (char& c : t)
    if (c == '\n') c = ' ';
  return t;
}

template <class Encode>
void compare(const reference& ref, const std::string& name, Encode&& encode) {
  const auto expected = bpe_test::read_ids(ref.dir + "/ids_" + name + ".txt");
  REQUIRE(expected.size() == ref.corpus.size());
  std::size_t mismatches = 0, tokens = 0, bytes = 0;
  for (std::size_t i = 0; i < ref.corpus.size(); ++i) {
    const std::vector<std::int32_t> got = encode(ref.corpus[i]);
    tokens += got.size();
    bytes += ref.corpus[i].size();
    if (got != expected[i]) {
      if (++mismatches <= 5) {
        std::size_t k = 0;
        while (k < got.size() && k < expected[i].size() && got[k] == expected[i][k]) ++k;
        MESSAGE(name << ": document " << i << " differs at token " << k << " (got "
                     << (k < got.size() ? got[k] : -1) << ", expected "
                     << (k < expected[i].size() ? expected[i][k] : -1)
                     << "): " << snippet(ref.corpus[i]));
      }
    }
  }
  MESSAGE(name << ": " << ref.corpus.size() << " documents, " << bytes << " bytes, " << tokens
               << " tokens, " << mismatches << " mismatches");
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("GPT-2 ids equal Hugging Face tokenizers and tiktoken on the corpus") {
  const reference& ref = get_reference();
  if (!ref.skip_reason.empty()) {
    MESSAGE("SKIP: " << ref.skip_reason);
    return;
  }
  if (ref.dir.empty()) return;
  const std::string data = bpe_test::shared_data();
  const auto gpt2 =
      tfm::bpe_tokenizer::from_gpt2_files(data + "/gpt2/encoder.json", data + "/gpt2/vocab.bpe");
  CHECK(gpt2.vocab_size() == 50257);
  compare(ref, "gpt2_hf",
          [&](const std::string& s) { return gpt2.encode(s, tfm::allowed_specials::all()); });
  compare(ref, "gpt2_tiktoken", [&](const std::string& s) { return gpt2.encode_ordinary(s); });
}

TEST_CASE("cl100k ids equal tiktoken on the corpus, with and without special tokens") {
  const reference& ref = get_reference();
  if (!ref.skip_reason.empty()) {
    MESSAGE("SKIP: " << ref.skip_reason);
    return;
  }
  if (ref.dir.empty()) return;
  const std::string data = bpe_test::shared_data();
  const auto cl = tfm::bpe_tokenizer::from_file(data + "/cl100k/cl100k_base.tiktoken");
  CHECK(cl.pattern() == tfm::split_pattern::cl100k);
  CHECK(cl.vocab_size() == 100277);
  compare(ref, "cl100k", [&](const std::string& s) { return cl.encode(s); });
  compare(ref, "cl100k_special",
          [&](const std::string& s) { return cl.encode(s, tfm::allowed_specials::all()); });

  SUBCASE("decode(encode(s)) == s") {
    std::size_t bad = 0;
    for (const auto& s : ref.corpus) {
      const auto ids = cl.encode(s, tfm::allowed_specials::all());
      bad += cl.decode(ids) != s;
    }
    CHECK(bad == 0);
  }
  SUBCASE("saved as tokenizer.json and as tiktoken, reloaded, the ids still equal tiktoken") {
    const std::string json_path = bpe_test::work_dir() + "/cl100k_saved.json";
    const std::string tik_path = bpe_test::work_dir() + "/cl100k_saved.tiktoken";
    cl.save_hf_json(json_path);
    cl.save_tiktoken(tik_path);
    const auto from_json = tfm::bpe_tokenizer::from_hf_json_file(json_path);
    const auto from_tik =
        tfm::bpe_tokenizer::from_tiktoken_file(tik_path, tfm::split_pattern::cl100k, cl.specials());
    CHECK(from_json.pattern() == tfm::split_pattern::cl100k);
    CHECK(from_json.ignore_merges());
    compare(ref, "cl100k", [&](const std::string& s) { return from_json.encode(s); });
    compare(ref, "cl100k_special",
            [&](const std::string& s) { return from_tik.encode(s, tfm::allowed_specials::all()); });
  }
}

TEST_CASE("o200k pre-tokenizer: cl100k ranks split by the o200k pattern equal tiktoken") {
  const reference& ref = get_reference();
  if (!ref.skip_reason.empty()) {
    MESSAGE("SKIP: " << ref.skip_reason);
    return;
  }
  if (ref.dir.empty()) return;
  const std::string data = bpe_test::shared_data();
  const auto t = tfm::bpe_tokenizer::from_tiktoken_file(data + "/cl100k/cl100k_base.tiktoken",
                                                        tfm::split_pattern::o200k);
  compare(ref, "cl100k_o200k", [&](const std::string& s) { return t.encode(s); });
}
