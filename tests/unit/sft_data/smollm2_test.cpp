// SmolLM2-135M-Instruct's tokenizer and chat template (from its GGUF) against the Python
// reference of tests/data/sft_data/make_fixtures.py (jinja2 rendering, llama.cpp tokens,
// assistant spans by sentinels): token ids and loss masks of the 14 examples in
// conversations.jsonl, then the rows they pack into. Run by ctest as tfm_test_sft_data_smollm2
// (doctest::skip() in the main run); "TFM_SKIP:" when the model file is absent.
#include "tfm_test.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/tokenizer/jinja.hpp"
#include "typeformer/train/sft_data.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {

using tfm_test::smollm2_path;

std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/sft_data"; }

struct expected_example {
  std::vector<std::int32_t> ids;
  std::vector<std::uint8_t> mask;
};

std::vector<expected_example> read_expected() {
  std::ifstream f(data_dir() + "/expected.txt");
  REQUIRE(f);
  std::vector<expected_example> out;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string key;
    ss >> key;
    if (key == "example") out.emplace_back();
    long v = 0;
    if (key == "ids")
      while (ss >> v) out.back().ids.push_back(static_cast<std::int32_t>(v));
    if (key == "mask")
      while (ss >> v) out.back().mask.push_back(static_cast<std::uint8_t>(v));
  }
  return out;
}

}  // namespace

TEST_CASE("smollm2: ids and assistant masks equal the jinja2 + llama.cpp reference" *
          doctest::skip()) {
  const std::string path = smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const io::gguf_file file(path);
  const vocab_tokenizer tok = io::load_gguf_tokenizer(file);
  const auto* tpl = file.find("tokenizer.chat_template");
  REQUIRE(tpl != nullptr);
  const std::string eos = tok.token_text(tok.eos_id());
  const jinja_chat_template jt(tpl->value.as_string(),
                               {.bos_token = tok.token_text(tok.bos_id()), .eos_token = eos});
  const sft_encoder enc(tok, jt);

  const auto records = read_sft_jsonl(data_dir() + "/conversations.jsonl");
  const auto want = read_expected();
  REQUIRE(records.size() == 14);
  REQUIRE(want.size() == records.size());
  CHECK(records[3].where.ends_with("line 6"));  // two blank lines before it
  std::vector<sft_example> ex;
  std::size_t ones = 0, tokens = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    ex.push_back(enc.encode(records[i]));
    INFO("example " << i + 1 << " (" << records[i].where << ")");
    CHECK(ex.back().ids == want[i].ids);
    CHECK(ex.back().loss_mask == want[i].mask);
    for (auto m : want[i].mask) ones += m;
    tokens += want[i].ids.size();
  }
  MESSAGE("14 examples, " << tokens << " tokens, " << ones << " in the loss mask");

  const sft_rows rows = sft_rows::build(ex, {.block_size = 256, .pad_id = tok.pad_id()});
  const sft_stats& s = rows.stats();
  CHECK(s.examples == 14);  // every example has loss (the empty reply keeps its <|im_end|>)
  CHECK(s.tokens == tokens);
  CHECK(s.assistant_tokens == ones);
  CHECK(s.targets == ones);  // no example starts with a masked token
  MESSAGE("rows " << s.rows << ", efficiency " << s.packing_efficiency << ", targets " << s.targets
                  << ", dropped (no loss) " << s.dropped_no_loss);
}
