// libFuzzer target: BERT vocab.txt bytes -> WordPiece tokenizer, encode and decode.
#include "typeformer/tokenizer/wordpiece.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = tfm::wordpiece_tokenizer::from_vocab_text(text);
    for (std::string_view s : {"Hello, world!", "unaffable \xC3\xA9t\xC3\xA9", "\xFF x"})
      (void)tok.decode(tok.encode(s));
  } catch (const tfm::error&) {
  }
  return 0;
}
