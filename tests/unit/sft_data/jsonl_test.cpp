// JSONL reading (train/sft_data.hpp, INPUT): the three TRL formats, blank lines, and every
// malformed line rejected with a parse_error naming the file, the line and the fault.
#include "typeformer/train/sft_data.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {

/// The parse_error message for `text` (fails the test when nothing is thrown).
std::string error_of(const std::string& text) {
  try {
    (void)parse_sft_jsonl(text, "data.jsonl");
  } catch (const parse_error& e) {
    return e.what();
  }
  FAIL("no parse_error for: " << text);
  return {};
}

void check_error(const std::string& text, const std::string& line, const std::string& what) {
  const std::string msg = error_of(text);
  INFO(msg);
  CHECK(msg.find("'data.jsonl' line " + line + ":") != std::string::npos);
  CHECK(msg.find(what) != std::string::npos);
}

}  // namespace

TEST_CASE("sft jsonl: the three formats, blank lines counted but skipped") {
  const std::string text =
      "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", "
      "\"content\": \"h\\u00e9\"}, {\"role\": \"assistant\", \"content\": \"A\", \"name\": "
      "\"x\"}], \"id\": 7}\n"
      "\n"
      "   \t\r\n"
      "{\"prompt\": \"1+1=\", \"completion\": \"2\"}\r\n"
      "{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"completion\": [{\"role\": "
      "\"assistant\", \"content\": \"a\"}]}";  // no final newline
  const auto rs = parse_sft_jsonl(text, "data.jsonl");
  REQUIRE(rs.size() == 3);
  CHECK(rs[0].kind == sft_record_kind::messages);
  REQUIRE(rs[0].messages.size() == 3);
  CHECK(rs[0].messages[1].content == "h\xc3\xa9");
  CHECK(rs[0].messages[2].role == "assistant");
  CHECK(rs[0].where == "'data.jsonl' line 1");
  CHECK(rs[1].kind == sft_record_kind::prompt_completion_text);
  CHECK(rs[1].prompt_text == "1+1=");
  CHECK(rs[1].completion_text == "2");
  CHECK(rs[1].where == "'data.jsonl' line 4");
  CHECK(rs[2].kind == sft_record_kind::prompt_completion_chat);
  CHECK(rs[2].messages.size() == 1);
  CHECK(rs[2].completion.size() == 1);
  CHECK(rs[2].where == "'data.jsonl' line 5");
}

TEST_CASE("sft jsonl: every malformed line names its line and the fault") {
  const std::string ok = "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
  // bad JSON, with the 1-based column of the offending byte
  check_error(ok + "\n{\"messages\": [}\n", "3", "bad JSON");
  check_error(ok + "{\"messages\": [}\n", "2", "at column 15");
  check_error("{\"prompt\": \"p\" \"completion\": \"c\"}", "1", "at column 16");
  check_error(ok + "{\"prompt\": \"p\", \"completion\": \"c\"} x\n", "2", "unexpected data");
  check_error("{\"prompt\": \"\\ud800\", \"completion\": \"c\"}", "1", "bad JSON");
  // not an object
  check_error(ok + "[1, 2]\n", "2", "the line is an array, expected a JSON object");
  // missing keys
  check_error(ok + ok + "{\"text\": \"x\"}\n", "3", "missing key: expected 'messages'");
  check_error("{\"prompt\": \"p\"}", "1", "missing key 'completion'");
  check_error("{\"completion\": \"c\"}", "1", "missing key 'prompt'");
  check_error("{\"messages\": [{\"role\": \"user\"}]}", "1", "messages[0] has no key 'content'");
  check_error("{\"messages\": [{\"content\": \"x\"}]}", "1", "messages[0] has no key 'role'");
  // wrong types
  check_error("{\"messages\": {\"role\": \"user\"}}", "1", "'messages' is an object, expected");
  check_error("{\"messages\": [\"hi\"]}", "1", "messages[0] is a string, expected an object");
  check_error("{\"messages\": [{\"role\": \"user\", \"content\": null}]}", "1",
              "messages[0].content is null, expected a string");
  check_error("{\"messages\": [{\"role\": 3, \"content\": \"x\"}]}", "1",
              "messages[0].role is a number, expected a string");
  check_error(
      "{\"prompt\": \"p\", \"completion\": [{\"role\": \"assistant\", \"content\": "
      "\"c\"}]}",
      "1", "'prompt' is a string and 'completion' is an array");
  check_error(
      "{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"completion\": "
      "[{\"role\": \"assistant\", \"content\": 5}]}",
      "1", "completion[0].content is a number");
  // unknown role, empty lists, both formats
  check_error(ok + "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "2",
              "messages[0].role \"robot\" is not a known role");
  check_error("{\"messages\": []}", "1", "'messages' is empty");
  check_error("{\"prompt\": [], \"completion\": []}", "1", "'prompt' is empty");
  check_error(
      "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"prompt\": \"p\", "
      "\"completion\": \"c\"}",
      "1", "both 'messages' and 'prompt'");
}

TEST_CASE("sft jsonl: empty files and unreadable paths") {
  for (const std::string& text : {std::string(), std::string("\n  \n\r\n")}) {
    try {
      (void)parse_sft_jsonl(text, "empty.jsonl");
      FAIL("no error");
    } catch (const parse_error& e) {
      const std::string m = e.what();
      INFO(m);
      CHECK(m.find("'empty.jsonl' holds no examples") != std::string::npos);
    }
  }
  CHECK_THROWS_AS((void)read_sft_jsonl("/nonexistent/sft.jsonl"), io_error);
}
