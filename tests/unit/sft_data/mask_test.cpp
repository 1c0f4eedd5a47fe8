// Assistant-only loss masks (train/sft_data.hpp, LOSS MASK) on a tiny byte-level vocabulary,
// without a model file: the spans found by rendering prefixes against chat_template's own
// assistant spans (render_with_spans, computed while rendering) for ChatML, Llama 3 and Llama 2
// on seeded random conversations; the Jinja template of SmolLM2 against the ChatML renderer;
// prompt-completion (plain and chat); bytes without a token; a template that does not render
// prefixes as prefixes.
#include "typeformer/core/random.hpp"
#include "typeformer/tokenizer/jinja.hpp"
#include "typeformer/train/sft_data.hpp"

#include <doctest/doctest.h>

#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <string>
#include <vector>

using namespace tfm;
using namespace tfm::train;

namespace {

const char* const specials[] = {"<|im_start|>",
                                "<|im_end|>",
                                "<|begin_of_text|>",
                                "<|start_header_id|>",
                                "<|end_header_id|>",
                                "<|eot_id|>",
                                "<s>",
                                "</s>"};

/// Byte tokens (GPT-2 byte-level text) for every byte but 0x04, a few merges, control tokens.
struct tiny_vocab {
  std::vector<std::string> texts;
  std::vector<std::string> merges;
  vocab_tokenizer tok;

  tiny_vocab() {
    std::vector<std::int32_t> types;
    for (std::size_t b = 0; b < 256; ++b) {
      if (b == 0x04) continue;
      std::string s;
      utf8::append(s, tfm::detail::bpe::byte_to_char[b]);
      texts.push_back(s);
      types.push_back(1);
    }
    const std::string G = "\xc4\xa0";  // byte-level ' '
    for (const std::string& m : {std::string("h e"), G + " w", std::string("l l"), G + "w o"}) {
      merges.push_back(m);
      std::string t = m;
      t.erase(t.find(' '), 1);
      texts.push_back(t);
      types.push_back(1);
    }
    for (const char* s : specials) {
      texts.push_back(s);
      types.push_back(3);
    }
    vocab_spec spec;
    spec.model = "gpt2";
    spec.pre = "gpt2";
    for (const auto& t : texts) spec.tokens.push_back(t);
    for (const auto& m : merges) spec.merges.push_back(m);
    spec.types = types;
    spec.eos = static_cast<std::int64_t>(texts.size() - 1);  // "</s>"
    spec.source = "tiny vocabulary";
    tok = vocab_tokenizer(spec);
  }
};

const tiny_vocab& vocab() {
  static const tiny_vocab v;
  return v;
}

/// A random conversation: optional system, then user/assistant alternating (llama2's rule) or
/// any of user/assistant/tool, texts from a small alphabet with spaces, newlines and UTF-8.
std::vector<chat_message> random_conversation(std::uint64_t seed, std::uint64_t& c, bool strict) {
  static const char* const words[] = {"hello",           "world",        "he", "ll",  " ",  "\n",
                                      "caf\xc3\xa9",     "\xe4\xb8\x96", "42", "wow", "  ", ".",
                                      "\xf0\x9f\x8e\x89"};
  auto draw = [&](std::uint32_t n) { return random_u32(seed, c++) % n; };
  auto text = [&] {
    std::string s;
    const std::uint32_t n = 1 + draw(6);
    for (std::uint32_t k = 0; k < n; ++k) s += words[draw(13)];
    return s;
  };
  std::vector<chat_message> ms;
  if (draw(2)) ms.push_back({"system", text()});
  const std::uint32_t turns = 1 + draw(4);
  for (std::uint32_t t = 0; t < turns; ++t) {
    ms.push_back({"user", text()});
    ms.push_back({"assistant", text()});
    if (!strict && draw(3) == 0) ms.push_back({"tool", text()});
  }
  if (draw(3) == 0) ms.push_back({"user", text()});
  return ms;
}

/// Mask from byte spans, with token starts from decoding prefixes (not token_byte_offsets).
std::vector<std::uint8_t> mask_from(const std::vector<std::int32_t>& ids,
                                    const std::vector<std::pair<std::size_t, std::size_t>>& spans) {
  std::vector<std::uint8_t> m(ids.size(), 0);
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const std::size_t start =
        vocab().tok.decode(std::span<const std::int32_t>(ids.data(), k), true).size();
    for (const auto& [b, e] : spans)
      if (start >= b && start < e) m[k] = 1;
  }
  return m;
}

}  // namespace

TEST_CASE(
    "sft mask: prefix-rendered spans equal chat_template's spans (ChatML, Llama 3, Llama 2)") {
  const std::uint64_t seed = 20261207;
  MESSAGE("seed " << seed);
  const vocab_tokenizer& tok = vocab().tok;
  for (chat_format f : {chat_format::chatml, chat_format::llama3, chat_format::llama2}) {
    const chat_template tpl(f);
    const sft_encoder enc(tok, tpl);
    std::uint64_t c = static_cast<std::uint64_t>(f) << 40;
    std::size_t ones = 0;
    for (int n = 0; n < 60; ++n) {
      const auto ms = random_conversation(seed, c, f == chat_format::llama2);
      const rendered_chat r = tpl.render_with_spans(ms, false);
      std::vector<std::pair<std::size_t, std::size_t>> spans;
      // Llama 2 writes ' ' strip(content) ' ' eos: the space before the reply belongs to the
      // assistant turn (it is the first byte after " [/INST]").
      for (const chat_span& s : r.assistant)
        spans.emplace_back(f == chat_format::llama2 ? s.begin - 1 : s.begin, s.end);
      const sft_example ex = enc.encode_messages(ms);
      REQUIRE(ex.ids == tok.encode(r.text, {.add_special = false, .parse_special = true}));
      const auto want = mask_from(ex.ids, spans);
      INFO("format " << static_cast<int>(f) << " conversation " << n << ": " << r.text);
      CHECK(ex.loss_mask == want);
      for (auto m : ex.loss_mask) ones += m;
    }
    CHECK(ones > 100);
  }
}

TEST_CASE("sft mask: SmolLM2's Jinja template gives the ChatML masks") {
  // tokenizer.chat_template of SmolLM2-135M-Instruct (a default system message when none).
  const std::string src =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
      "'<|im_start|>assistant\\n' }}{% endif %}";
  const jinja_chat_template jt(src);
  const chat_template ct(chat_format::chatml);
  const sft_encoder a(vocab().tok, jt), b(vocab().tok, ct);
  std::uint64_t c = 0;
  for (int n = 0; n < 30; ++n) {
    auto ms = random_conversation(7, c, false);
    if (ms[0].role != "system") ms.insert(ms.begin(), {"system", "sys"});
    const sft_example x = a.encode_messages(ms), y = b.encode_messages(ms);
    CHECK(x.ids == y.ids);
    CHECK(x.loss_mask == y.loss_mask);
  }
  // Without a system message the default one is inserted and masked out.
  const std::vector<chat_message> ms = {{"user", "hi"}, {"assistant", "hello"}};
  const sft_example x = a.encode_messages(ms);
  std::vector<std::int32_t> on;
  for (std::size_t k = 0; k < x.ids.size(); ++k)
    if (x.loss_mask[k]) on.push_back(x.ids[k]);
  CHECK(vocab().tok.decode(on) == "hello<|im_end|>");
}

TEST_CASE("sft mask: prompt-completion, plain text and chat") {
  const vocab_tokenizer& tok = vocab().tok;
  const sft_encoder enc(tok, chat_template(chat_format::chatml));
  const std::int32_t eos = tok.eos_id();
  // plain: bytes, EOS appended and in the mask
  sft_example p = enc.encode_text("ab", "cd");
  CHECK(p.ids == std::vector<std::int32_t>{tok.text_to_id("a"), tok.text_to_id("b"),
                                           tok.text_to_id("c"), tok.text_to_id("d"), eos});
  CHECK(p.loss_mask == std::vector<std::uint8_t>{0, 0, 1, 1, 1});
  // a token that starts in the prompt stays out ("h" + "e" merge into "he")
  p = enc.encode_text("h", "e!");
  CHECK(p.ids == std::vector<std::int32_t>{tok.text_to_id("he"), tok.text_to_id("!"), eos});
  CHECK(p.loss_mask == std::vector<std::uint8_t>{0, 1, 1});
  // chat: the completion's content and <|im_end|>, not the header nor the final newline
  const std::vector<chat_message> prompt = {{"user", "q"}}, completion = {{"assistant", "ans"}};
  const sft_example q = enc.encode_prompt_completion(prompt, completion);
  std::vector<chat_message> all = prompt;
  all.push_back(completion[0]);
  const sft_example m = enc.encode_messages(all);
  CHECK(q.ids == m.ids);
  CHECK(q.loss_mask == m.loss_mask);
  std::vector<std::int32_t> on;
  for (std::size_t k = 0; k < q.ids.size(); ++k)
    if (q.loss_mask[k]) on.push_back(q.ids[k]);
  CHECK(tok.decode(on) == "ans<|im_end|>");
  // records dispatch on their kind
  sft_record r;
  r.kind = sft_record_kind::prompt_completion_text;
  r.prompt_text = "ab";
  r.completion_text = "cd";
  CHECK(enc.encode(r).loss_mask == std::vector<std::uint8_t>{0, 0, 1, 1, 1});
}

TEST_CASE("sft mask: bytes without a token are skipped when aligning pieces") {
  const vocab_tokenizer& tok = vocab().tok;
  const sft_encoder enc(tok, chat_template(chat_format::chatml));
  const std::vector<chat_message> ms = {{"user",
                                         "a\x04"
                                         "b"},
                                        {"assistant", "\x04x\x04y\x04"}};
  const sft_example ex = enc.encode_messages(ms);
  std::vector<std::int32_t> on, off;
  for (std::size_t k = 0; k < ex.ids.size(); ++k) (ex.loss_mask[k] ? on : off).push_back(ex.ids[k]);
  CHECK(tok.decode(on) == "xy<|im_end|>");
  CHECK(tok.decode(off) == "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n\n");
  const std::string text = chat_template(chat_format::chatml).render(ms, false);
  const auto starts = token_byte_offsets(tok, text, ex.ids);
  CHECK(text.substr(starts[starts.size() - 4], 1) == "x");  // x y <|im_end|> \n
  CHECK(text.substr(starts[starts.size() - 3], 1) == "y");
  // pieces that do not spell the text
  CHECK_THROWS_AS(
      (void)token_byte_offsets(tok, "abc",
                               std::vector<std::int32_t>{tok.text_to_id("a"), tok.text_to_id("c")}),
      value_error);
}

TEST_CASE("sft mask: a template that does not render prefixes as prefixes is refused") {
  // Puts the number of messages first: no rendering of a prefix is a prefix of the whole.
  const chat_renderer counted = [](std::span<const chat_message> ms, bool gen) {
    std::string s = std::to_string(ms.size()) + ":";
    for (const auto& m : ms) s += m.role + ">" + m.content + "|";
    if (gen) s += "assistant>";
    return s;
  };
  const sft_encoder enc(vocab().tok, counted);
  const std::vector<chat_message> ms = {{"user", "q"}, {"assistant", "a"}};
  try {
    (void)enc.encode_messages(ms, "'x.jsonl' line 9");
    FAIL("no error");
  } catch (const value_error& e) {
    const std::string w = e.what();
    INFO(w);
    CHECK(w.find("'x.jsonl' line 9: message 1:") != std::string::npos);
  }
}

TEST_CASE("sft dataset: files to training and held-out rows") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("tfm_sft_data_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<std::string> paths;
  for (int f = 0; f < 2; ++f) {
    paths.push_back((dir / ("part" + std::to_string(f) + ".jsonl")).string());
    std::ofstream out(paths.back());
    for (int i = 0; i < 50; ++i)
      out << "{\"messages\": [{\"role\": \"user\", \"content\": \"q" << f << "." << i
          << "\"}, {\"role\": \"assistant\", \"content\": \"answer " << i << "\"}]}\n";
  }
  const sft_encoder enc(vocab().tok, chat_template(chat_format::chatml));
  const sft_dataset d = build_sft_dataset(paths, enc, {.block_size = 128}, {.count = 10});
  CHECK(d.train.stats().examples == 90);
  CHECK(d.validation.stats().examples == 10);
  CHECK(d.train.stats().rows == 30);  // 34-35 tokens each: three to a row of 128
  MESSAGE("train: " << summary(d.train.stats(), 128));
  MESSAGE("validation: " << summary(d.validation.stats(), 128));
  // a bad line in the second file names that file and line
  {
    std::ofstream out(paths[1], std::ios::app);
    out << "{\"messages\": [{\"role\": \"user\", \"content\": 1}]}\n";
  }
  try {
    (void)build_sft_dataset(paths, enc, {.block_size = 128});
    FAIL("no error");
  } catch (const parse_error& e) {
    const std::string w = e.what();
    INFO(w);
    CHECK(w.find("part1.jsonl' line 51: messages[0].content is a number") != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("sft mask: template errors name the record") {
  const jinja_chat_template jt(
      "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}"
      "{% endif %}{{ m.content }}{% endfor %}");
  const sft_encoder enc(vocab().tok, jt);
  sft_record r;
  r.messages = {{"user", "q"}, {"tool", "t"}, {"assistant", "a"}};
  r.where = "'f.jsonl' line 2";
  try {
    (void)enc.encode(r);
    FAIL("no error");
  } catch (const value_error& e) {
    CHECK(std::string(e.what()) == "tfm::train::sft: 'f.jsonl' line 2: no tools here");
  }
}

TEST_CASE("sft mask: a SentencePiece vocabulary with a prefix space (Llama 2 format)") {
  // <unk> <s> </s>, the 256 byte tokens, and a few merged pieces with scores.
  std::vector<std::string> texts = {"<unk>", "<s>", "</s>"};
  std::vector<std::int32_t> types = {2, 3, 3};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    texts.push_back(buf);
    types.push_back(6);
    scores.push_back(0);
  }
  const std::string U = "\xe2\x96\x81";  // U+2581
  for (const std::string& t :
       {U, std::string("h"), std::string("e"), std::string("l"), std::string("o"),
        std::string("he"), U + "he", std::string("ll"), std::string("llo"), U + "hello",
        std::string("["), std::string("]"), std::string("I"), std::string("N"), std::string("S"),
        std::string("T"), std::string("/")}) {
    texts.push_back(t);
    types.push_back(1);
    scores.push_back(-static_cast<float>(texts.size()) / 100.0f);
  }
  vocab_spec spec;
  spec.model = "llama";
  for (const auto& t : texts) spec.tokens.push_back(t);
  spec.types = types;
  spec.scores = scores;
  spec.bos = 1;
  spec.eos = 2;
  spec.unk = 0;
  spec.add_space_prefix = true;
  const vocab_tokenizer tok(spec);
  const chat_template tpl(chat_format::llama2);
  const sft_encoder enc(tok, tpl);
  const std::vector<chat_message> ms = {{"system", "he"},
                                        {"user", "hello hello"},
                                        {"assistant", "hello"},
                                        {"user", "ohe"},
                                        {"assistant", "llo he"}};
  const sft_example ex = enc.encode_messages(ms);
  const rendered_chat r = tpl.render_with_spans(ms, false);
  REQUIRE(ex.ids == tok.encode(r.text, {.add_special = false, .parse_special = true}));
  const auto starts = token_byte_offsets(tok, r.text, ex.ids);
  std::vector<std::uint8_t> want(ex.ids.size(), 0);
  for (std::size_t k = 0; k < ex.ids.size(); ++k)
    for (const chat_span& s : r.assistant)
      if (starts[k] >= s.begin - 1 && starts[k] < s.end) want[k] = 1;
  CHECK(ex.loss_mask == want);
  std::vector<std::int32_t> on;
  for (std::size_t k = 0; k < ex.ids.size(); ++k)
    if (ex.loss_mask[k]) on.push_back(ex.ids[k]);
  CHECK(tok.decode(on) == "hello </s> llo he </s>");  // decode drops the prefix space
}
