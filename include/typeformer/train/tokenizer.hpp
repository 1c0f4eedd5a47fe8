// typeformer/train/tokenizer.hpp
//
// The tokenizer of a language-model training run: raw bytes (ids 0..255, the default) or a
// byte-level BPE (tokenizer/bpe.hpp), loaded from a file, trained on the run's text files, or
// read back from a training checkpoint.
//
//   auto tok = train::text_tokenizer::from_file("tokenizer.json");   // or *.tiktoken, encoder.json
//   auto tok = train::text_tokenizer::train_bpe(paths, 512);         // GPT-2 pre-tokenizer
//   auto data = train::token_dataset::from_files(paths, tok, tok.vocab_size(), 0.1);
//   tok.store(st);                        // st.meta["run.tokenizer"], st.blobs["tokenizer.json"]
//   train::save_training_state(path, ps, opt, st);
//   ...
//   auto back = train::text_tokenizer::from_state(train::read_training_state(path));
//
// A BPE tokenizer is kept as its tokenizer.json text (bpe_tokenizer::to_hf_json) and every
// tokenizer this file builds is the one that text loads back as, so a run that starts from a
// file and a run resumed from the checkpoint (which no longer needs the file) encode the same
// ids. A checkpoint without the entries (a byte-level run, or one written before BPE support)
// reads back as the byte tokenizer.
//
// decode() takes the whole id sequence and returns raw bytes: a token boundary may fall inside
// a UTF-8 character, so decode before printing, never token by token (or use utf8_stream to
// print as tokens arrive); utf8::sanitize() replaces what is still ill-formed by U+FFFD.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/bpe_trainer.hpp"
#include "typeformer/tokenizer/utf8.hpp"
#include "typeformer/train/trainer.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// Byte tokens or a byte-level BPE; see the file comment.
class text_tokenizer {
 public:
  /// Name of the checkpoint blob holding a BPE tokenizer's tokenizer.json.
  static constexpr const char* blob_name = "tokenizer.json";
  /// Meta key: "byte" or "bpe".
  static constexpr const char* meta_key = "run.tokenizer";

  /// The byte tokenizer (vocabulary 256).
  text_tokenizer() = default;

  /// A BPE tokenizer from its tokenizer.json text (doc names it in error messages). The
  /// vocabulary must be small enough for a model (at most bpe_tokenizer::max_tokens ids).
  static text_tokenizer from_json(std::string json, std::string_view doc = "tokenizer.json") {
    text_tokenizer t;
    auto bpe = std::make_shared<bpe_tokenizer>(bpe_tokenizer::from_hf_json(json, doc));
    if (bpe->vocab_size() < 1)
      fail(errc::parse, "tfm::train: ", doc, " holds an empty vocabulary.");
    t.set(std::move(bpe), std::move(json));
    return t;
  }

  /// A BPE tokenizer from a file: a Hugging Face tokenizer.json (model BPE, ByteLevel
  /// pre-tokenizer), a tiktoken rank file (*.tiktoken; cl100k_base / o200k_base / r50k_base /
  /// p50k_base in the name select that encoding's pattern and special tokens, otherwise the
  /// cl100k pattern and none), a GPT-2 encoder.json with vocab.bpe in the same directory, or
  /// a directory holding those two. A file with another name is read as tokenizer.json when it
  /// starts with '{' and as a tiktoken file otherwise. io_error when the file cannot be read,
  /// parse_error (or unsupported_error) naming the file when its content is not a usable
  /// tokenizer.
  static text_tokenizer from_file(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const bool dir = fs::is_directory(path, ec);
    if (!dir && !fs::is_regular_file(path, ec))
      fail(errc::io, "tfm::train: cannot open the tokenizer file '", path, "'.");
    auto ends_with = [&](std::string_view suf) {
      return path.size() >= suf.size() &&
             std::string_view(path).substr(path.size() - suf.size()) == suf;
    };
    bpe_tokenizer loaded;
    if (dir || ends_with("encoder.json") || ends_with(".json") || ends_with(".tiktoken")) {
      loaded = bpe_tokenizer::from_file(path);
    } else {
      const std::string text = tfm::detail::bpe::read_file(path);
      const auto first = text.find_first_not_of(" \t\r\n");
      if (first != std::string::npos && text[first] == '{')
        loaded = bpe_tokenizer::from_hf_json(text, path);
      else
        loaded = bpe_tokenizer::from_tiktoken(text, split_pattern::cl100k, {});
    }
    if (loaded.vocab_size() < 1) fail(errc::parse, "tfm::train: '", path, "' holds no tokens.");
    // What the checkpoint will store, and what a resumed run will use.
    return from_json(loaded.to_hf_json(), path);
  }

  /// Trains a byte-level BPE with `vocab_size` ids (256 bytes + merges; no special tokens) on
  /// the files (read line by line, as bpe_trainer::feed_file does), with `pattern`.
  static text_tokenizer train_bpe(const std::vector<std::string>& paths, std::size_t vocab_size,
                                  split_pattern pattern = split_pattern::gpt2) {
    bpe_trainer tr(make_options(vocab_size, pattern));
    for (const auto& p : paths) tr.feed_file(p);
    const bpe_tokenizer bpe = tr.train();
    return from_json(bpe.to_hf_json(), "trained tokenizer");
  }
  /// Same, on texts in memory (fed whole).
  static text_tokenizer train_bpe_on_texts(const std::vector<std::string>& texts,
                                           std::size_t vocab_size,
                                           split_pattern pattern = split_pattern::gpt2) {
    bpe_trainer tr(make_options(vocab_size, pattern));
    for (const auto& t : texts) tr.feed(t);
    const bpe_tokenizer bpe = tr.train();
    return from_json(bpe.to_hf_json(), "trained tokenizer");
  }

  /// The tokenizer a checkpoint's state stores (store()); the byte tokenizer when it stores
  /// none. parse_error when the entries are inconsistent or the blob is not a tokenizer.
  static text_tokenizer from_state(const training_state& st) {
    auto it = st.meta.find(meta_key);
    const std::string kind = it == st.meta.end() ? std::string("byte") : it->second;
    auto blob = st.blobs.find(blob_name);
    if (kind == "byte") {
      if (blob != st.blobs.end())
        fail(errc::parse, "tfm::train: the checkpoint is byte-level but holds a ", blob_name,
             " blob.");
      return text_tokenizer();
    }
    if (kind != "bpe")
      fail(errc::parse, "tfm::train: the checkpoint's tokenizer kind '", kind,
           "' is neither byte nor bpe.");
    if (blob == st.blobs.end())
      fail(errc::parse, "tfm::train: the checkpoint's tokenizer is bpe but it holds no ", blob_name,
           " blob.");
    return from_json(blob->second, "the checkpoint's tokenizer.json");
  }

  /// Records the tokenizer in st (meta "run.tokenizer"; for BPE the tokenizer.json blob).
  void store(training_state& st) const {
    st.meta[meta_key] = is_bpe() ? "bpe" : "byte";
    if (is_bpe())
      st.blobs[blob_name] = json_;
    else
      st.blobs.erase(blob_name);
  }

  bool is_bpe() const noexcept { return bpe_ != nullptr; }
  const char* kind() const noexcept { return is_bpe() ? "bpe" : "byte"; }
  /// Ids 0 .. vocab_size()-1 (the model's vocabulary); BPE files may leave some unused.
  std::int32_t vocab_size() const noexcept {
    return is_bpe() ? static_cast<std::int32_t>(bpe_->vocab_size()) : 256;
  }
  /// The underlying BPE (nullptr for bytes).
  const bpe_tokenizer* bpe() const noexcept { return bpe_.get(); }
  /// tokenizer.json text ("" for bytes).
  const std::string& json() const noexcept { return json_; }

  /// Ids of text (special-token text is encoded as ordinary text).
  std::vector<std::int32_t> encode(std::string_view text) const {
    if (!is_bpe()) return byte_tokenizer{}.encode(text);
    return bpe_->encode_ordinary(text);
  }

  /// Bytes of the ids, concatenated (may end inside a UTF-8 character). An id inside the
  /// vocabulary that is no token (a gap in a BPE file) decodes to nothing; index_error for an id
  /// outside it.
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    out.reserve(ids.size() * (is_bpe() ? 4 : 1));
    for (std::int32_t id : ids) out += piece(id);
    return out;
  }
  std::string decode(const std::vector<std::int32_t>& ids) const {
    return decode(std::span<const std::int32_t>(ids));
  }

  /// The bytes of one id (see decode()).
  std::string_view piece(std::int32_t id) const {
    if (id < 0 || id >= vocab_size())
      fail(errc::index, "tfm::train: token id ", id, " is outside the vocabulary (", vocab_size(),
           ").");
    if (!is_bpe()) return std::string_view(&byte_chars()[static_cast<std::size_t>(id)], 1);
    return pieces_[static_cast<std::size_t>(id)];
  }

  /// Total bytes the ids stand for (tokens per byte = ids.size() / byte_count(ids)).
  std::size_t byte_count(std::span<const std::int32_t> ids) const {
    std::size_t n = 0;
    for (std::int32_t id : ids) n += piece(id).size();
    return n;
  }

 private:
  static bpe_trainer_options make_options(std::size_t vocab_size, split_pattern pattern) {
    if (vocab_size < 256)
      fail(errc::value,
           "tfm::train: a byte-level BPE needs a vocabulary of at least 256 (the "
           "bytes), not ",
           vocab_size, ".");
    bpe_trainer_options o;
    o.vocab_size = vocab_size;
    o.pattern = pattern;
    return o;
  }
  static const std::string& byte_chars() {
    static const std::string all = [] {
      std::string s(256, '\0');
      for (int i = 0; i < 256; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(i);
      return s;
    }();
    return all;
  }
  void set(std::shared_ptr<const bpe_tokenizer> bpe, std::string json) {
    bpe_ = std::move(bpe);
    json_ = std::move(json);
    pieces_.assign(bpe_->vocab_size(), std::string());
    const bool gaps = bpe_->token_count() < bpe_->vocab_size();
    for (std::size_t id = 0; id < pieces_.size(); ++id) {
      const auto i = static_cast<std::int32_t>(id);
      if (!gaps) {
        pieces_[id] = bpe_->id_to_token(i);
        continue;
      }
#if TFM_NO_EXCEPTIONS
      fail(errc::unsupported, "tfm::train: a BPE vocabulary with unused ids needs exceptions.");
#else
      try {
        pieces_[id] = bpe_->id_to_token(i);
      } catch (const index_error&) {  // an unused id: decodes to nothing
      }
#endif
    }
  }

  std::shared_ptr<const bpe_tokenizer> bpe_;  // immutable; shared by copies
  std::string json_;
  std::vector<std::string> pieces_;  // id -> bytes ("" for unused ids)
};

/// Feeds decoded bytes and returns the longest prefix that does not end inside a UTF-8
/// character; the incomplete tail is kept for the next call (flush() returns it). For printing
/// tokens as they are generated.
class utf8_stream {
 public:
  std::string push(std::string_view bytes) {
    buf_.append(bytes);
    // A lead byte in the last 3 bytes whose sequence is not complete yet: hold it back.
    std::size_t keep = 0;
    for (std::size_t k = 1; k <= 3 && k <= buf_.size(); ++k) {
      const auto c = static_cast<unsigned char>(buf_[buf_.size() - k]);
      if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
      const std::size_t need = c < 0xC2 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c <= 0xF4 ? 4 : 1;
      if (need > k) keep = k;
      break;
    }
    std::string out = buf_.substr(0, buf_.size() - keep);
    buf_.erase(0, buf_.size() - keep);
    return out;
  }
  std::string flush() {
    std::string out;
    out.swap(buf_);
    return out;
  }

 private:
  std::string buf_;
};

}  // namespace train
TFM_END_NAMESPACE
