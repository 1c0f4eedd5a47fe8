// Chat templates: hand-written expected strings from the formats' documentation, and seeded
// random conversations compared with the official Jinja templates rendered by jinja2
// (gen_chat_reference.py); assistant spans checked against the messages.
#include "sp_test_support.hpp"

#include "typeformer/tokenizer/chat_template.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <vector>

using tfm::chat_format;
using tfm::chat_message;
using tfm::chat_template;

TEST_CASE("chat_template: documented examples") {
  const std::vector<chat_message> conv{
      {"system", "You are helpful."}, {"user", "Hi!"}, {"assistant", " Hello. "}, {"user", "Bye"}};
  // ChatML: Hugging Face "Templates for Chat Models" documentation example output.
  CHECK(chat_template(chat_format::chatml).render(conv, true) ==
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n Hello. <|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n");
  // Llama 2: the prompt format of meta-llama/llama generation.py (B_INST, B_SYS), as in the
  // Llama-2-chat model card: "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {reply}
  // </s>".
  CHECK(chat_template(chat_format::llama2).render(conv, true) ==
        "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi! [/INST] Hello. </s>"
        "<s>[INST] Bye [/INST]");
  // Llama 3: Meta's Llama 3 model card prompt format.
  CHECK(chat_template(chat_format::llama3).render(conv, true) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(chat_template(chat_format::llama3).render({}, false).empty());

  // Spans of assistant replies: content and end-of-turn marker.
  for (chat_format f : {chat_format::chatml, chat_format::llama2, chat_format::llama3}) {
    const auto r = chat_template(f).render_with_spans(conv, false);
    REQUIRE(r.assistant.size() == 1);
    const auto& s = r.assistant[0];
    const std::string content = r.text.substr(s.begin, s.content_end - s.begin);
    const std::string marker = r.text.substr(s.content_end, s.end - s.content_end);
    CHECK(content == (f == chat_format::chatml ? " Hello. " : "Hello."));
    CHECK(marker == (f == chat_format::chatml   ? "<|im_end|>"
                     : f == chat_format::llama2 ? " </s>"
                                                : "<|eot_id|>"));
  }
  // Llama 2 rejects non-alternating roles and unknown roles.
  CHECK_THROWS_AS(chat_template(chat_format::llama2).render({{"assistant", "x"}}, false),
                  tfm::value_error);
  CHECK_THROWS_AS(chat_template(chat_format::llama2).render({{"user", "a"}, {"user", "b"}}, false),
                  tfm::value_error);
  CHECK_THROWS_AS(chat_template(chat_format::llama2).render({{"user", "a"}, {"tool", "b"}}, false),
                  tfm::value_error);
  CHECK(chat_template::strip("\u3000 \t x y \n\u00a0") == "x y");
}

TEST_CASE("chat_template: identical to the official Jinja templates") {
  SP_REQUIRE_REFERENCE("gen_chat_reference.py", "chat template comparison");
  MESSAGE("conversation seed " << sp_test::seed() + 29 << " (TFM_TEST_SEED + 29)");
  std::ifstream ref(sp_test::ref_dir() + "/chat.ref");
  REQUIRE(ref);
  std::string line;
  std::size_t rendered = 0, raised = 0, spans = 0;
  while (std::getline(ref, line)) {
    const auto f = sp_test::split(line);
    const chat_format fmt = f[1] == "chatml"   ? chat_format::chatml
                            : f[1] == "llama2" ? chat_format::llama2
                                               : chat_format::llama3;
    const bool gen = f[2] == "1";
    const std::size_t n = std::stoul(f[3]);
    std::vector<chat_message> msgs;
    for (std::size_t i = 0; i < n; ++i)
      msgs.push_back({sp_test::unhex(f[4 + 2 * i]), sp_test::unhex(f[5 + 2 * i])});
    const chat_template tpl(fmt);
    if (f[0] == "X") {
      ++raised;
      CHECK_THROWS_AS(tpl.render(msgs, gen), tfm::value_error);
      continue;
    }
    ++rendered;
    const auto r = tpl.render_with_spans(msgs, gen);
    CHECK_MESSAGE(r.text == sp_test::unhex(f[4 + 2 * n]), "format " << f[1] << " line: " << line);
    std::size_t k = 0;
    for (const auto& m : msgs) {
      if (m.role != "assistant") continue;
      REQUIRE(k < r.assistant.size());
      const auto& s = r.assistant[k++];
      const std::string want =
          fmt == chat_format::chatml ? m.content : std::string(chat_template::strip(m.content));
      CHECK(r.text.substr(s.begin, s.content_end - s.begin) == want);
      CHECK(s.content_end <= s.end);
      ++spans;
    }
    CHECK(k == r.assistant.size());
  }
  MESSAGE(rendered << " conversations rendered identically, " << raised << " rejected, " << spans
                   << " assistant spans checked");
  CHECK(rendered > 1000);
  CHECK(raised > 10);
}
