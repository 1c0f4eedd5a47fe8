// Shared helpers of the preference tests: a tiny byte-level vocabulary with ChatML's control
// tokens (no model file), tiny llama-style models, and synthetic preference pairs given as
// tokens.
#pragma once

#include "tiny_llama.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/train/preference.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace pref_test {

using namespace tfm;

/// One token per byte (GPT-2 byte-level text), then <|im_start|>, <|im_end|> (eos).
struct tiny_vocab {
  std::vector<std::string> texts;  // the spec views these
  vocab_tokenizer tok;
  tiny_vocab() {
    std::vector<std::int32_t> types;
    for (std::size_t b = 0; b < 256; ++b) {
      std::string s;
      utf8::append(s, tfm::detail::bpe::byte_to_char[b]);
      texts.push_back(s);
      types.push_back(1);
    }
    for (const char* s : {"<|im_start|>", "<|im_end|>"}) {
      texts.push_back(s);
      types.push_back(3);
    }
    vocab_spec spec;
    spec.model = "gpt2";
    spec.pre = "gpt2";
    for (const auto& t : texts) spec.tokens.push_back(t);
    spec.types = types;
    spec.eos = 257;
    spec.source = "tiny vocabulary";
    tok = vocab_tokenizer(spec);
  }
};

inline const tiny_vocab& vocab() {
  static const tiny_vocab v;
  return v;
}

/// A tiny llama-style config (RMSNorm, SwiGLU, RoPE, GQA): tests/support/tiny_llama.hpp's with
/// width 16, FFN 24 and context `block`.
inline nn::dynamic_config tiny_llama(index_t vocab_size = 32, index_t block = 24) {
  nn::dynamic_config c = tfm_test::tiny_llama(vocab_size, 16, 24);
  c.block_size = block;
  return c;
}

inline train::sft_example tokens_example(const std::vector<std::int32_t>& prompt,
                                         const std::vector<std::int32_t>& response) {
  train::sft_example e;
  e.ids = prompt;
  e.ids.insert(e.ids.end(), response.begin(), response.end());
  e.loss_mask.assign(prompt.size(), 0);
  e.loss_mask.insert(e.loss_mask.end(), response.size(), 1);
  return e;
}

/// n synthetic pairs over a vocabulary of V >= 16 tokens: a random prompt of 3..5 tokens in
/// [8, V), responses of 3 random tokens in [8, V) where the chosen one has `good` at a random
/// position and the rejected one `bad` there (same other tokens).
inline std::vector<train::preference_example> token_pairs(std::size_t n, index_t V,
                                                          std::uint64_t seed, std::int32_t good = 5,
                                                          std::int32_t bad = 7) {
  std::vector<train::preference_example> out;
  std::uint64_t c = 0;
  auto draw = [&](std::uint32_t k) { return random_u32(seed, c++) % k; };
  auto tok = [&] { return static_cast<std::int32_t>(8 + draw(static_cast<std::uint32_t>(V - 8))); };
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<std::int32_t> p(3 + draw(3));
    for (auto& t : p) t = tok();
    std::vector<std::int32_t> r{tok(), tok(), tok()};
    const std::size_t at = draw(3);
    std::vector<std::int32_t> ch = r, rj = r;
    ch[at] = good;
    rj[at] = bad;
    train::preference_example e;
    e.prompt_ids = p;
    e.chosen = tokens_example(p, ch);
    e.rejected = tokens_example(p, rj);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace pref_test
