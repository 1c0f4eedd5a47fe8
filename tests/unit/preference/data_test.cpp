// Preference data (train/preference.hpp): TRL's three JSONL layouts from a fixture, every
// malformed line rejected with its file and line, the encoding against the rendered ChatML text
// (the masked tokens spell the response and its end marker), batch layout, truncation and the
// held-out split.
#include "preference_support.hpp"

#include "typeformer/tokenizer/chat_template.hpp"

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {

std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/preference"; }

std::string decode(const std::vector<std::int32_t>& ids) {
  return pref_test::vocab().tok.decode(ids, /*special=*/true);
}

std::vector<std::int32_t> masked(const sft_example& e) {
  std::vector<std::int32_t> out;
  for (std::size_t i = 0; i < e.ids.size(); ++i)
    if (e.loss_mask[i]) out.push_back(e.ids[i]);
  return out;
}

std::string error_of(std::string_view text) {
  try {
    parse_preference_jsonl(text, "bad.jsonl");
  } catch (const parse_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("preference data: the three TRL layouts from a JSONL file") {
  const auto rs = read_preference_jsonl(data_dir() + "/pairs.jsonl");
  REQUIRE(rs.size() == 3);
  CHECK_FALSE(rs[0].chat);
  CHECK(rs[0].prompt_text == "The sky is");
  CHECK(rs[0].chosen_text == " blue.");
  CHECK(rs[0].rejected_text == " green.");
  CHECK(rs[0].where.find("line 1") != std::string::npos);
  CHECK(rs[1].chat);
  REQUIRE(rs[1].prompt.size() == 1);
  CHECK(rs[1].prompt[0].role == "user");
  CHECK(rs[1].chosen[0].content == "Answer: 4");
  CHECK(rs[1].where.find("line 3") != std::string::npos);
  // Implicit prompt: the shared system and user messages.
  REQUIRE(rs[2].prompt.size() == 2);
  CHECK(rs[2].prompt[0].content == "Be brief.");
  CHECK(rs[2].prompt[1].content == "Hi");
  REQUIRE(rs[2].chosen.size() == 1);
  CHECK(rs[2].chosen[0].content == "hello");
  CHECK(rs[2].rejected[0].content.rfind("Hello there", 0) == 0);
}

TEST_CASE("preference data: malformed lines name the file and the line") {
  const std::string ok = R"({"prompt": "a", "chosen": "b", "rejected": "c"})";
  const std::string msg = R"([{"role": "user", "content": "x"}])";
  struct bad_case {
    std::string line, want;
  };
  const std::vector<bad_case> cases = {
      {"{\"prompt\": \"a\", \"chosen\": \"b\"", "bad JSON"},
      {"[1, 2]", "expected a JSON object"},
      {R"({"prompt": "a", "rejected": "c"})", "missing key 'chosen'"},
      {R"({"prompt": "a", "chosen": "b"})", "missing key 'rejected'"},
      {R"({"chosen": "b", "rejected": "c"})", "missing key 'prompt'"},
      {R"({"prompt": 3, "chosen": "b", "rejected": "c"})", "'prompt' is"},
      {R"({"prompt": "a", "chosen": "b", "rejected": [{"role": "assistant", "content": "c"}]})",
       "'rejected' is"},
      {R"({"prompt": )" + msg + R"(, "chosen": [{"role": "robot", "content": "b"}], "rejected": )" +
           msg + "}",
       "not a known role"},
      {R"({"prompt": )" + msg + R"(, "chosen": [{"role": "assistant"}], "rejected": )" + msg + "}",
       "has no key 'content'"},
      {R"({"prompt": )" + msg + R"(, "chosen": [], "rejected": )" + msg + "}", "is empty"},
      {R"({"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]})",
       "share no leading message"},
      {R"({"chosen": )" + msg + R"(, "rejected": )" + msg + "}", "a response would be empty"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    // The bad line is line 3 (after a good line and a blank one).
    const std::string text = ok + "\n\n" + cases[i].line + "\n" + ok + "\n";
    const std::string e = error_of(text);
    INFO("case ", i, ": ", e);
    CHECK(e.find("'bad.jsonl' line 3") != std::string::npos);
    CHECK(e.find(cases[i].want) != std::string::npos);
  }
  CHECK(error_of("").find("holds no pairs") != std::string::npos);
  CHECK(error_of("\n  \n").find("holds no pairs") != std::string::npos);
  CHECK_THROWS_AS(read_preference_jsonl(data_dir() + "/no-such-file.jsonl"), io_error);
}

TEST_CASE("preference encoding: masked tokens spell the response and its end marker") {
  const auto& tok = pref_test::vocab().tok;
  const chat_template tpl(chat_format::chatml);
  const sft_encoder enc(tok, tpl);
  const auto rs = read_preference_jsonl(data_dir() + "/pairs.jsonl");
  const auto ex = encode_preferences(enc, rs);
  REQUIRE(ex.size() == 3);
  for (std::size_t i = 1; i < 3; ++i) {
    INFO("pair ", i);
    const auto& r = rs[i];
    CHECK(decode(ex[i].prompt_ids) == tpl.render(r.prompt, true));
    CHECK(decode(masked(ex[i].chosen)) == r.chosen.back().content + "<|im_end|>");
    CHECK(decode(masked(ex[i].rejected)) == r.rejected.back().content + "<|im_end|>");
    std::vector<chat_message> all = r.prompt;
    all.insert(all.end(), r.chosen.begin(), r.chosen.end());
    CHECK(decode(ex[i].chosen.ids) == tpl.render(all, false));
  }
  // Plain text: prompt + response then EOS, the response and EOS in the mask.
  CHECK(decode(ex[0].chosen.ids) == "The sky is blue.<|im_end|>");
  CHECK(decode(masked(ex[0].chosen)) == " blue.<|im_end|>");
  CHECK(decode(masked(ex[0].rejected)) == " green.<|im_end|>");
  CHECK(decode(ex[0].prompt_ids) == "The sky is");
}

TEST_CASE("preference batches: rows, targets, padding, truncation") {
  auto pairs = pref_test::token_pairs(3, 32, 11);
  pairs[1].chosen = pref_test::tokens_example({9, 10}, {11, 12, 13, 14, 15, 16});
  const auto d = preference_dataset::build(pairs, {.max_length = 16, .pad_id = 1});
  REQUIRE(d.size() == 3);
  const std::vector<std::size_t> which{2, 1};
  const auto b = d.batch(which);
  REQUIRE(b.pair_count() == 2);
  REQUIRE(b.ids.extent(0) == 4);
  index_t T = 0;
  for (std::size_t i : which)
    T = std::max({T, static_cast<index_t>(d[i].chosen.ids.size()),
                  static_cast<index_t>(d[i].rejected.ids.size())});
  CHECK(b.ids.extent(1) == T);
  for (index_t p = 0; p < 2; ++p)
    for (index_t side = 0; side < 2; ++side) {
      const auto& s = side == 0 ? d[which[static_cast<std::size_t>(p)]].chosen
                                : d[which[static_cast<std::size_t>(p)]].rejected;
      const index_t row = side * 2 + p, n = static_cast<index_t>(s.ids.size());
      CHECK(b.last[static_cast<std::size_t>(row)] == n - 1);
      for (index_t t = 0; t < T; ++t) {
        const std::int32_t id = b.ids(row, t), tg = b.targets(row, t);
        if (t >= n) {
          CHECK(id == 1);
          CHECK(tg == ignore_target);
          continue;
        }
        CHECK(id == s.ids[static_cast<std::size_t>(t)]);
        const bool scored = t + 1 < n && s.loss_mask[static_cast<std::size_t>(t + 1)];
        CHECK(tg == (scored ? s.ids[static_cast<std::size_t>(t + 1)] : ignore_target));
      }
    }
  // Pair 1's chosen has 8 tokens: max_length 6 truncates it (4 response tokens kept), max_length 7
  // drops the pair or refuses it, naming the limit.
  CHECK(preference_dataset::build(pairs, {.max_length = 6}).size() == 3);
  CHECK(preference_dataset::build(pairs, {.max_length = 6})[1].chosen.ids.size() == 6);
  const auto dropped =
      preference_dataset::build(pairs, {.max_length = 7, .truncation = sft_truncation::drop});
  CHECK(dropped.size() < 3);
  CHECK(dropped.dropped() == 3 - dropped.size());
  CHECK_THROWS_WITH_AS(
      preference_dataset::build(pairs, {.max_length = 7, .truncation = sft_truncation::error}),
      doctest::Contains("more than max_length 7"), value_error);
  CHECK_THROWS_AS(preference_dataset::build(pairs, {.max_length = 1}), value_error);
  CHECK_THROWS_AS(d.batch(std::vector<std::size_t>{5}), index_error);
  // batches(): consecutive, covering every pair once.
  const auto bs = d.batches(2);
  REQUIRE(bs.size() == 2);
  CHECK(bs[0].pairs == std::vector<std::size_t>{0, 1});
  CHECK(bs[1].pairs == std::vector<std::size_t>{2});
  // epoch_order: a permutation, reproducible.
  auto o = d.epoch_order(7, 1);
  CHECK(o == d.epoch_order(7, 1));
  std::sort(o.begin(), o.end());
  CHECK(o == std::vector<std::size_t>{0, 1, 2});
}

TEST_CASE("preference split: disjoint, complete, independent of order") {
  std::vector<preference_record> rs;
  for (int i = 0; i < 40; ++i) {
    preference_record r;
    r.prompt_text = "q" + std::to_string(i);
    r.chosen_text = "a";
    r.rejected_text = "b" + std::to_string(i % 3);
    rs.push_back(r);
  }
  const auto [tr, va] = split_preference_records(rs, {.count = 8, .seed = 3});
  CHECK(tr.size() == 32);
  CHECK(va.size() == 8);
  std::set<std::string> held;
  for (const auto& r : va) held.insert(r.prompt_text);
  for (const auto& r : tr) CHECK(held.count(r.prompt_text) == 0);
  std::vector<preference_record> rev(rs.rbegin(), rs.rend());
  const auto [tr2, va2] = split_preference_records(rev, {.count = 8, .seed = 3});
  std::set<std::string> held2;
  for (const auto& r : va2) held2.insert(r.prompt_text);
  CHECK(held == held2);
}
