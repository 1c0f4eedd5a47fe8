// typeformer/io/gguf_tokenizer.hpp
//
// WHAT THIS REPRESENTS
//   The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata (ggml/docs/gguf.md,
//   "Tokenizer"), as a tfm::vocab_tokenizer whose ids are llama.cpp's for the same file (see
//   tokenizer/vocab_tokenizer.hpp for the models, pre-tokenizers and special-token rules).
//     tfm::io::load_gguf_tokenizer(const gguf_file&)  from an open file
//     tfm::io::load_gguf_tokenizer(path)              opens the file (memory map) and reads it
//   Keys read (llama.cpp's types): tokenizer.ggml.model (string, required), .pre (string),
//   .tokens (array of string, required), .token_type (array of int32), .scores (array of
//   float32 or int32), .merges (array of string, required for gpt2), .bos_token_id,
//   .eos_token_id, .unknown_token_id, .padding_token_id (unsigned integers), .add_bos_token,
//   .add_eos_token, .add_space_prefix (bool).
//
// ERRORS
//   A missing or mistyped key is a parse_error naming the file, the key and the type found; an
//   unsupported model or pre-tokenizer, a merge naming unknown tokens or a special id outside the
//   vocabulary is a value_error naming the file, the key and the supported values.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/tokenizer/vocab_tokenizer.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

namespace detail::gguf_tok {

/// The array at `key`, required to hold elements of type `want` (or nullopt when absent and not
/// required).
inline std::optional<gguf_array> array_of(const gguf_file& f, std::string_view key,
                                          std::initializer_list<gguf_type> want, bool required) {
  const gguf_kv* kv = f.find(key);
  if (kv == nullptr) {
    if (required)
      fail(errc::parse, "tfm::io::gguf_tokenizer: '", f.name(), "': key '", key, "' is missing.");
    return std::nullopt;
  }
  const auto wanted = [&] {
    std::string s;
    for (gguf_type t : want) s += (s.empty() ? "" : " or ") + std::string(gguf_type_name(t));
    return s;
  };
  if (kv->value.type() != gguf_type::array)
    fail(errc::parse, "tfm::io::gguf_tokenizer: '", f.name(), "': key '", key, "' holds ",
         gguf_type_name(kv->value.type()), ", not an array of ", wanted(), ".");
  gguf_array a = kv->value.as_array();
  for (gguf_type t : want)
    if (a.element_type() == t) return a;
  fail(errc::parse, "tfm::io::gguf_tokenizer: '", f.name(), "': key '", key, "' is an array of ",
       gguf_type_name(a.element_type()), ", not of ", wanted(), ".");
}

template <class T>
std::optional<T> optional_key(const gguf_file& f, std::string_view key) {
  if (!f.contains(key)) return std::nullopt;
  return f.get<T>(key);
}

}  // namespace detail::gguf_tok

/// The tokenizer of an open GGUF file (see the file comment).
inline vocab_tokenizer load_gguf_tokenizer(const gguf_file& f) {
  namespace d = detail::gguf_tok;
  const std::string model = f.get<std::string>("tokenizer.ggml.model");
  const std::string pre = f.get_or<std::string>("tokenizer.ggml.pre", "");
  vocab_spec spec;
  spec.model = model;
  spec.pre = pre;
  spec.source = f.name();
  if (model != "gpt2" && model != "llama")
    fail(errc::value, "tfm::io::gguf_tokenizer: '", f.name(), "': tokenizer.ggml.model '", model,
         "' is not supported; supported: gpt2 (byte-level BPE), llama (SentencePiece BPE).");

  spec.tokens = d::array_of(f, "tokenizer.ggml.tokens", {gguf_type::string}, true)
                    ->to_vector<std::string_view>();
  if (auto a = d::array_of(f, "tokenizer.ggml.token_type", {gguf_type::int32}, false))
    spec.types = a->to_vector<std::int32_t>();
  if (auto a =
          d::array_of(f, "tokenizer.ggml.scores", {gguf_type::float32, gguf_type::int32}, false)) {
    if (a->element_type() == gguf_type::float32) {
      spec.scores = a->to_vector<float>();
    } else {
      const auto v = a->to_vector<std::int32_t>();
      spec.scores.assign(v.begin(), v.end());
    }
  }
  if (model == "gpt2")
    spec.merges = d::array_of(f, "tokenizer.ggml.merges", {gguf_type::string}, true)
                      ->to_vector<std::string_view>();
  spec.bos = d::optional_key<std::int64_t>(f, "tokenizer.ggml.bos_token_id");
  spec.eos = d::optional_key<std::int64_t>(f, "tokenizer.ggml.eos_token_id");
  spec.unk = d::optional_key<std::int64_t>(f, "tokenizer.ggml.unknown_token_id");
  spec.pad = d::optional_key<std::int64_t>(f, "tokenizer.ggml.padding_token_id");
  spec.add_bos = d::optional_key<bool>(f, "tokenizer.ggml.add_bos_token");
  spec.add_eos = d::optional_key<bool>(f, "tokenizer.ggml.add_eos_token");
  spec.add_space_prefix = d::optional_key<bool>(f, "tokenizer.ggml.add_space_prefix");
  return vocab_tokenizer(spec);
}

/// Opens `path` (memory map) and returns its tokenizer.
inline vocab_tokenizer load_gguf_tokenizer(const std::string& path) {
  const gguf_file f(path);
  return load_gguf_tokenizer(f);
}

}  // namespace io
TFM_END_NAMESPACE
