// Fuzz target bodies for the byte-level BPE tokenizer, shared by the libFuzzer entry points
// (tokenizer_bpe_fuzz_*.cpp) and by the seeded-mutation unit test (tests/unit/tokenizer_bpe).
// Contract checked: any input either loads/encodes or raises tfm::error; a loaded tokenizer
// encodes and decodes losslessly when it has all 256 byte tokens (a tokenizer.json may lack some,
// bpe_tokenizer::missing_bytes(); those bytes encode to nothing). Anything else (another exception,
// a crash, a sanitizer report, a failed round trip -> std::abort) is a finding.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/bpe_trainer.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/pretokenizer.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace tfm_fuzz {

inline const char* probe_text() {
  return "Hello, world! It's 2024 -- \xc3\xa9t\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\xa4\x97 "
         "\xff\xfe "
         "<|endoftext|> \n\n  x";
}

/// Encodes and decodes the probe text; aborts when the round trip loses bytes (with every byte
/// token present).
inline void exercise(const tfm::bpe_tokenizer& tok) {
  const std::string text = probe_text();
  const auto ids = tok.encode(text, tfm::allowed_specials::all());
  if (tok.missing_bytes() == 0 && tok.decode(ids) != text) std::abort();
}

inline int fuzz_hf_json(const std::uint8_t* data, std::size_t size) {
  try {
    const auto tok = tfm::bpe_tokenizer::from_hf_json(
        std::string_view(reinterpret_cast<const char*>(data), size));
    exercise(tok);
  } catch (const tfm::error&) {
  }
  return 0;
}

inline int fuzz_tiktoken(const std::uint8_t* data, std::size_t size) {
  try {
    const auto tok = tfm::bpe_tokenizer::from_tiktoken(
        std::string_view(reinterpret_cast<const char*>(data), size), tfm::split_pattern::cl100k,
        {{"<|endoftext|>", 1 << 20}});
    exercise(tok);
  } catch (const tfm::error&) {
  }
  return 0;
}

/// Input: encoder.json, a NUL byte, vocab.bpe.
inline int fuzz_gpt2(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = all.find('\0');
  const std::string_view enc = all.substr(0, nul);
  const std::string_view merges =
      nul == std::string_view::npos ? std::string_view() : all.substr(nul + 1);
  try {
    exercise(tfm::bpe_tokenizer::from_gpt2(enc, merges));
  } catch (const tfm::error&) {
  }
  return 0;
}

/// A small tokenizer trained once on fixed text, for the encode target.
inline const tfm::bpe_tokenizer& small_tokenizer(tfm::split_pattern p) {
  auto make = [](tfm::split_pattern pat) {
    tfm::bpe_trainer_options o;
    o.vocab_size = 400;
    o.pattern = pat;
    o.special_tokens = {"<|endoftext|>", "<|fim|>"};
    tfm::bpe_trainer tr(o);
    for (int k = 0; k < 20; ++k)
      tr.feed(
          "The quick brown fox jumps over the lazy dog. It's 12345 o'clock; we'll see.\n"
          "\xc3\xa9t\xc3\xa9 \xd0\xbd\xd0\xb0 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\xa4\x97   \t\r\n");
    return tr.train();
  };
  static const tfm::bpe_tokenizer gpt2 = make(tfm::split_pattern::gpt2);
  static const tfm::bpe_tokenizer cl = make(tfm::split_pattern::cl100k);
  static const tfm::bpe_tokenizer o2 = make(tfm::split_pattern::o200k);
  return p == tfm::split_pattern::gpt2 ? gpt2 : p == tfm::split_pattern::cl100k ? cl : o2;
}

/// encode(text) on arbitrary bytes: pieces cover the text, decode(encode(s)) == s.
inline int fuzz_encode(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto p : {tfm::split_pattern::gpt2, tfm::split_pattern::cl100k, tfm::split_pattern::o200k}) {
    std::size_t covered = 0;
    tfm::for_each_piece(text, p, [&](std::string_view piece) {
      if (piece.empty() || piece.data() != text.data() + covered) std::abort();
      covered += piece.size();
    });
    if (covered != text.size()) std::abort();
    const auto& tok = small_tokenizer(p);
    const auto ids = tok.encode(text, tfm::allowed_specials::all());
    if (tok.decode(ids) != text) std::abort();
    if (tok.decode(tok.encode_ordinary(text)) != text) std::abort();
  }
  return 0;
}

}  // namespace tfm_fuzz
