// typeformer/train/data.hpp
//
// Language-model data: a token stream built from text files, split into training and
// validation parts, and random contiguous (B, T) batches.
//
//   train::byte_tokenizer         ids 0..255 are the UTF-8 bytes (lossless, no vocabulary file)
//   train::token_dataset ds = train::token_dataset::from_files(paths, tok, /*val_fraction=*/0.1);
//   auto [x, y] = ds.batch(train::split::train, B, T, seed, index);
//
// Batch `index` with `seed` takes B windows whose starts are drawn from the counter-based
// generator at (seed, index * B + b): the same batch on any thread count, and a training run
// resumes exactly by restoring `index` (the data-loader position). y is x shifted by one token.
// The validation part is the last val_fraction of every file's tokens (so it is text the model
// never trains on); validation batches come from evaluation_batches(), which tiles the split
// deterministically.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// Bytes as tokens: vocabulary 256.
struct byte_tokenizer {
  static constexpr std::int32_t vocab_size = 256;
  std::vector<std::int32_t> encode(std::string_view s) const {
    std::vector<std::int32_t> ids(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) ids[i] = static_cast<unsigned char>(s[i]);
    return ids;
  }
  std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string s;
    s.reserve(ids.size());
    for (auto id : ids) {
      if (id < 0 || id > 255)
        fail(errc::value, "tfm::train::byte_tokenizer: id ", id, " is not a byte.");
      s.push_back(static_cast<char>(id));
    }
    return s;
  }
};

enum class split { train, validation };

using ids_tensor = tensor<std::int32_t, shape<dyn, dyn>>;

/// Reads a whole file; io_error naming the path (after `who`) when it cannot be read.
inline std::string read_text_file(const std::string& path, const char* who = "tfm::train") {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(errc::io, who, ": cannot open '", path, "'.");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(errc::io, who, ": reading '", path, "' failed.");
  return std::move(ss).str();
}

class token_dataset {
 public:
  token_dataset() = default;
  token_dataset(std::vector<std::int32_t> train_ids, std::vector<std::int32_t> val_ids,
                std::int32_t vocab)
      : train_(std::move(train_ids)), val_(std::move(val_ids)), vocab_(vocab) {}

  /// Tokenizes each text with `tok` (anything with encode(string_view) -> vector<int32>) and
  /// puts the last val_fraction of each into the validation split.
  template <class Tokenizer>
  static token_dataset from_texts(const std::vector<std::string>& texts, const Tokenizer& tok,
                                  std::int32_t vocab, double val_fraction = 0.1) {
    if (!(val_fraction >= 0 && val_fraction < 1))
      fail(errc::value, "tfm::train::token_dataset: val_fraction must be in [0, 1).");
    std::vector<std::int32_t> tr, va;
    for (const auto& t : texts) {
      auto ids = tok.encode(t);
      std::size_t nv =
          static_cast<std::size_t>(std::floor(static_cast<double>(ids.size()) * val_fraction));
      tr.insert(tr.end(), ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(nv));
      va.insert(va.end(), ids.end() - static_cast<std::ptrdiff_t>(nv), ids.end());
    }
    for (const auto* split_ids : {&tr, &va})
      for (auto id : *split_ids)
        if (id < 0 || id >= vocab)
          fail(errc::value, "tfm::train::token_dataset: token id ", id,
               " is outside the vocabulary ", vocab, ".");
    return token_dataset(std::move(tr), std::move(va), vocab);
  }

  template <class Tokenizer>
  static token_dataset from_files(const std::vector<std::string>& paths, const Tokenizer& tok,
                                  std::int32_t vocab, double val_fraction = 0.1) {
    if (paths.empty()) fail(errc::value, "tfm::train::token_dataset: no input files.");
    std::vector<std::string> texts;
    for (const auto& p : paths) texts.push_back(read_text_file(p));
    return from_texts(texts, tok, vocab, val_fraction);
  }

  const std::vector<std::int32_t>& tokens(split s) const {
    return s == split::train ? train_ : val_;
  }
  std::int32_t vocab() const noexcept { return vocab_; }

  /// Random windows: x (B, T) and next-token targets y (B, T).
  std::pair<ids_tensor, ids_tensor> batch(split s, index_t B, index_t T, std::uint64_t seed,
                                          std::uint64_t index) const {
    const auto& d = tokens(s);
    if (B <= 0 || T <= 0)
      fail(errc::value, "tfm::train::token_dataset: batch and sequence sizes must be positive.");
    if (static_cast<index_t>(d.size()) < T + 1)
      fail(errc::value, "tfm::train::token_dataset: the ",
           s == split::train ? "training" : "validation", " split has ", d.size(),
           " tokens, fewer than T + 1 = ", T + 1, ".");
    const std::uint64_t span = d.size() - static_cast<std::size_t>(T);  // starts 0 .. span-1
    ids_tensor x(B, T), y(B, T);
    for (index_t b = 0; b < B; ++b) {
      std::uint64_t r =
          (static_cast<std::uint64_t>(random_u32(
               seed, 2 * (index * static_cast<std::uint64_t>(B) + static_cast<std::uint64_t>(b))))
           << 32) |
          random_u32(
              seed,
              2 * (index * static_cast<std::uint64_t>(B) + static_cast<std::uint64_t>(b)) + 1);
      std::size_t start = static_cast<std::size_t>(r % span);
      for (index_t t = 0; t < T; ++t) {
        x(b, t) = d[start + static_cast<std::size_t>(t)];
        y(b, t) = d[start + static_cast<std::size_t>(t) + 1];
      }
    }
    return {std::move(x), std::move(y)};
  }

  /// Consecutive non-overlapping windows covering up to max_batches * B * T tokens of a split.
  std::vector<std::pair<ids_tensor, ids_tensor>> evaluation_batches(split s, index_t B, index_t T,
                                                                    index_t max_batches) const {
    const auto& d = tokens(s);
    std::vector<std::pair<ids_tensor, ids_tensor>> out;
    std::size_t pos = 0;
    while (static_cast<index_t>(out.size()) < max_batches) {
      ids_tensor x(B, T), y(B, T);
      index_t filled = 0;
      for (; filled < B && pos + static_cast<std::size_t>(T) + 1 <= d.size();
           ++filled, pos += static_cast<std::size_t>(T))
        for (index_t t = 0; t < T; ++t) {
          x(filled, t) = d[pos + static_cast<std::size_t>(t)];
          y(filled, t) = d[pos + static_cast<std::size_t>(t) + 1];
        }
      if (filled < B) break;
      out.emplace_back(std::move(x), std::move(y));
    }
    return out;
  }

 private:
  std::vector<std::int32_t> train_, val_;
  std::int32_t vocab_ = 0;
};

/// Entropy of the unigram (token frequency) distribution in nats: the loss a model that ignores
/// context would reach. A trained model must end clearly below it.
inline double unigram_entropy(const std::vector<std::int32_t>& ids) {
  std::map<std::int32_t, std::size_t> counts;
  for (auto id : ids) ++counts[id];
  double h = 0, n = static_cast<double>(ids.size());
  for (const auto& [id, c] : counts) {
    double p = static_cast<double>(c) / n;
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace train
TFM_END_NAMESPACE
