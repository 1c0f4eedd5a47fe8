// The grammar constraint on the SmolLM2-135M vocabulary (49,152 tokens, byte-level BPE, many
// tokens that split UTF-8 characters): greedy decoding of random logits (seeded) under the JSON
// grammar and under a JSON-schema grammar always yields text that nlohmann::json parses as an
// object (with the schema's required keys); mask() time per step. Run by ctest as
// tfm_test_grammar_smollm2 (doctest::skip() in the main run); "TFM_SKIP:" when the model file
// is absent.
#include "tfm_test.hpp"
#include "typeformer/infer/json_schema.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::infer;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a;
  std::getline(f, a);
  return a;
}

struct decode_stats {
  double mask_ms = 0;
  int steps = 0;
  int failures = 0;
  std::size_t max_states = 0;  // automaton states held by one constraint at most
};

/// Greedy decoding of random logits under `g`. After `budget` steps, tokens that close the
/// document quickly (", }, ], :, 0, EOS) get a bonus so every run ends. Returns the text.
std::string random_decode(const std::shared_ptr<const grammar>& g,
                          const std::shared_ptr<const grammar_vocabulary>& voc,
                          const std::vector<std::int32_t>& eos, std::uint32_t seed, int budget,
                          bool cache_masks, decode_stats& st) {
  grammar_constraint c(g, voc, eos);
  c.cache_masks = cache_masks;
  const auto n = static_cast<index_t>(voc->size());
  std::vector<float> logits(static_cast<std::size_t>(n));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::string text;
  for (int step = 0; step < budget + 400; ++step) {
    for (auto& x : logits) x = u(rng);
    if (step >= budget) {
      for (index_t t = 0; t < n; ++t) {
        const std::string& b = voc->bytes(static_cast<std::int32_t>(t));
        if (b == "\"" || b == "}" || b == "]" || b == ":" || b == "0")
          logits[static_cast<std::size_t>(t)] += 10;
      }
      for (auto e : eos) logits[static_cast<std::size_t>(e)] += 10;
    }
    const double t0 = now_ms();
    const index_t kept = c.mask(logits.data(), n);
    st.mask_ms += now_ms() - t0;
    ++st.steps;
    st.max_states = std::max(st.max_states, c.matcher().state_count());
    REQUIRE(kept > 0);
    const auto best =
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    c.accept(best);
    if (std::find(eos.begin(), eos.end(), best) != eos.end()) return text;
    text += voc->bytes(best);
  }
  ++st.failures;
  return text;
}

}  // namespace

TEST_CASE("smollm2: random logits under the JSON grammar always decode to a JSON object" *
          doctest::skip()) {
  const std::string path = tfm_test::smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const auto tok = io::load_gguf_tokenizer(path);
  double t0 = now_ms();
  const auto voc = make_grammar_vocabulary(tok);
  const double trie_ms = now_ms() - t0;
  REQUIRE(voc->size() == 49152);
  std::vector<std::int32_t> eos{tok.eos_id()};
  for (const char* s : {"<|im_end|>", "<|endoftext|>"}) {
    const std::int32_t id = tok.text_to_id(s);
    if (id >= 0 && std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  MESSAGE("vocabulary trie: " << voc->nodes().size() << " nodes, built in " << trie_ms
                              << " ms; EOS ids " << eos.size());

  const auto g = json_grammar();
  t0 = now_ms();
  decode_stats cached, uncached;
  int partial_tokens = 0;
  for (std::uint32_t seed = 1; seed <= 12; ++seed) {
    const bool cache = seed % 2 == 1;
    const std::string text =
        random_decode(g, voc, eos, seed, 150, cache, cache ? cached : uncached);
    INFO("seed " << seed << ": " << text);
    nlohmann::json j;
    REQUIRE_NOTHROW(j = nlohmann::json::parse(text));
    CHECK(j.is_object());
    for (unsigned char ch : text) partial_tokens += ch >= 0x80;
    const std::string shown = j.dump();
    if (seed <= 3)
      MESSAGE("seed " << seed << " (" << text.size() << " bytes; compact form shown): "
                      << shown.substr(0, 160) << std::string(shown.size() > 160 ? "..." : ""));
  }
  CHECK(cached.failures + uncached.failures == 0);
  MESSAGE("JSON grammar, seeds 1..12, " << cached.steps + uncached.steps << " steps in "
                                        << now_ms() - t0
                                        << " ms; non-ASCII bytes generated: " << partial_tokens);
  MESSAGE("mask() per step: " << cached.mask_ms / cached.steps << " ms with the mask cache ("
                              << cached.steps << " steps), " << uncached.mask_ms / uncached.steps
                              << " ms without (" << uncached.steps << " steps); at most "
                              << std::max(cached.max_states, uncached.max_states)
                              << " automaton states per constraint; load average "
                              << load_average());
}

TEST_CASE("smollm2: random logits under a JSON-schema grammar decode to valid instances" *
          doctest::skip()) {
  const std::string path = tfm_test::smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const auto tok = io::load_gguf_tokenizer(path);
  const auto voc = make_grammar_vocabulary(tok);
  const std::vector<std::int32_t> eos{tok.eos_id()};
  const auto g = grammar_from_json_schema(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "minLength": 1, "maxLength": 12},
      "age": {"type": "integer"},
      "kind": {"enum": ["cat", "dog", null]},
      "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
      "ok": {"type": "boolean"}
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": false})");
  decode_stats st;
  for (std::uint32_t seed = 101; seed <= 108; ++seed) {
    const std::string text = random_decode(g, voc, eos, seed, 60, true, st);
    INFO("seed " << seed << ": " << text);
    nlohmann::json j;
    REQUIRE_NOTHROW(j = nlohmann::json::parse(text));
    REQUIRE(j.is_object());
    CHECK(j["name"].is_string());
    CHECK(j["age"].is_number_integer());
    CHECK(j["ok"].is_boolean());
    for (const auto& [k, v] : j.items()) {
      CHECK((k == "name" || k == "age" || k == "kind" || k == "tags" || k == "ok"));
      if (k == "kind") CHECK((v.is_null() || v == "cat" || v == "dog"));
      if (k == "tags") CHECK((v.is_array() && v.size() <= 3));
    }
    if (seed == 101) MESSAGE("seed 101 (compact form): " << j.dump());
  }
  CHECK(st.failures == 0);
  MESSAGE("schema grammar, seeds 101..108: mask() " << st.mask_ms / st.steps << " ms per step over "
                                                    << st.steps << " steps; load average "
                                                    << load_average());
}
