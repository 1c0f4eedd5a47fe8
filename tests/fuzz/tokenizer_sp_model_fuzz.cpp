// libFuzzer target: SentencePiece .model bytes -> parse, build the tokenizer, encode and decode.
// Build: clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I include <this file>
// Every input must either load or fail with tfm::error; anything else is a bug.
#include "typeformer/tokenizer/sentencepiece.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = tfm::sentencepiece_tokenizer::from_bytes(bytes);
    for (std::string_view text : {"hello world", "  a\xFF b ", "\xE2\x96\x81<s>"}) {
      const auto ids = tok.encode(text);
      (void)tok.decode(ids);
      (void)tok.encode_tokens(text);
    }
    std::vector<std::int32_t> all;
    for (std::size_t i = 0; i < tok.vocab_size() && i < 512; ++i)
      all.push_back(static_cast<std::int32_t>(i));
    (void)tok.decode(all);
  } catch (const tfm::error&) {
  }
  return 0;
}
