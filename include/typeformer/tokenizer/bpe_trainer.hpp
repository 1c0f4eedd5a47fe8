// typeformer/tokenizer/bpe_trainer.hpp
//
// WHAT THIS REPRESENTS
//   Training of a byte-level BPE tokenizer (Sennrich et al., arXiv:1508.07909) on a corpus, with
//   the algorithm and tie-breaking of the Hugging Face `tokenizers` BpeTrainer, so that the same
//   corpus and options give the same vocabulary and merges:
//     1. The text is pre-tokenized (split_pattern, GPT-2 by default) and identical pieces are
//        counted ("words").
//     2. Ids: the special tokens first (0..k-1, in the given order), then the 256 bytes ordered
//        by their GPT-2 byte-level character's code point, then one id per merge.
//     3. Pair counts (weighted by word count) and, per pair, the words that hold it are built
//        once. A max-heap orders pairs by count, then by the smaller (left id, right id) pair.
//        Each step pops the top; a stale entry (its count changed since it was pushed) is
//        re-pushed with the current count. Merging a pair updates only the words that hold it
//        and the counts of the neighbouring pairs (incremental; no rescan of the corpus).
//     4. Training stops at vocab_size ids (specials and bytes included) or when the best count
//        is below max(1, min_frequency).
//   A merge whose result equals an existing token reuses that id (as Hugging Face does).
//
// USE
//   tfm::bpe_trainer tr({.vocab_size = 32000, .special_tokens = {"<|endoftext|>"}});
//   tr.feed(text);               // any number of times
//   tfm::bpe_tokenizer tok = tr.train();
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/pretokenizer.hpp"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

struct bpe_trainer_options {
  std::size_t vocab_size = 32000;           ///< total ids: specials + 256 bytes + merges
  std::uint64_t min_frequency = 0;          ///< stop when the best pair is rarer than this
  std::vector<std::string> special_tokens;  ///< ids 0..k-1, never split, never merged
  split_pattern pattern = split_pattern::gpt2;
  std::size_t max_token_length = 0;  ///< longest token in bytes; 0 = no limit
};

class bpe_trainer {
 public:
  explicit bpe_trainer(bpe_trainer_options opt = {}) : opt_(std::move(opt)) {
    if (opt_.vocab_size > static_cast<std::size_t>(bpe_tokenizer::max_tokens))
      fail(errc::value, "bpe_trainer: vocab_size ", opt_.vocab_size, " exceeds the limit of ",
           bpe_tokenizer::max_tokens, ".");
  }

  /// Pre-tokenizes text and adds its pieces to the word counts.
  void feed(std::string_view text) {
    for_each_piece(text, opt_.pattern, [&](std::string_view piece) {
      auto it = words_.find(piece);
      if (it == words_.end())
        words_.emplace(std::string(piece), 1);
      else
        ++it->second;
    });
  }

  /// Feeds a file line by line (lines keep their '\n', as when the file is fed whole, except that
  /// no piece spans two lines; the Hugging Face trainer reads files the same way).
  void feed_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(errc::io, "bpe_trainer: cannot open '", path, "'.");
    std::string line;
    while (std::getline(f, line)) {
      if (!f.eof()) line.push_back('\n');
      feed(line);
    }
  }

  /// Number of distinct pre-tokenized pieces seen so far.
  std::size_t word_count() const noexcept { return words_.size(); }

  /// Runs the merges and returns the tokenizer (specials allowed only where encode() is told).
  bpe_tokenizer train() const {
    // ---- ids: specials, then the byte alphabet in byte-level character order ----
    std::vector<std::string> tokens;  // id -> bytes ("" for specials: they are not BPE tokens)
    std::vector<special_token> specials;
    for (const auto& s : opt_.special_tokens) {
      if (s.empty()) fail(errc::value, "bpe_trainer: a special token is empty.");
      if (std::find_if(specials.begin(), specials.end(),
                       [&](const special_token& x) { return x.text == s; }) != specials.end())
        continue;
      specials.push_back({s, static_cast<std::int32_t>(tokens.size())});
      tokens.emplace_back();
    }
    std::vector<int> order(256);
    for (int b = 0; b < 256; ++b) order[static_cast<std::size_t>(b)] = b;
    std::sort(order.begin(), order.end(), [](int x, int y) {
      return detail::bpe::byte_to_char[static_cast<std::size_t>(x)] <
             detail::bpe::byte_to_char[static_cast<std::size_t>(y)];
    });
    std::int32_t byte_id[256];
    for (int b : order) {
      byte_id[b] = static_cast<std::int32_t>(tokens.size());
      tokens.emplace_back(1, static_cast<char>(b));
    }
    std::unordered_map<std::string, std::int32_t> token_ids;
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (!tokens[i].empty()) token_ids.emplace(tokens[i], static_cast<std::int32_t>(i));
    std::size_t id_count = tokens.size();  // HF word_to_id.len(): specials + alphabet + merges

    // ---- words ----
    std::vector<std::vector<std::int32_t>> words;
    std::vector<std::int64_t> counts;
    words.reserve(words_.size());
    counts.reserve(words_.size());
    // Sorted for a deterministic word order (only heap ties between entries of one pair depend
    // on it).
    std::vector<const std::pair<const std::string, std::uint64_t>*> sorted;
    sorted.reserve(words_.size());
    for (const auto& kv : words_) sorted.push_back(&kv);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
    for (const auto* kv : sorted) {
      std::vector<std::int32_t> w;
      w.reserve(kv->first.size());
      for (unsigned char c : kv->first) w.push_back(byte_id[c]);
      words.push_back(std::move(w));
      counts.push_back(static_cast<std::int64_t>(kv->second));
    }
    std::vector<std::size_t> tok_len(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) tok_len[i] = tokens[i].size();

    // ---- pair counts and where each pair occurs ----
    std::unordered_map<std::uint64_t, std::int64_t> pair_counts;
    std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> where;
    pair_counts.reserve(words.size() * 2);
    for (std::size_t wi = 0; wi < words.size(); ++wi) {
      const auto& w = words[wi];
      for (std::size_t k = 0; k + 1 < w.size(); ++k) {
        const std::uint64_t p = key(w[k], w[k + 1]);
        pair_counts[p] += counts[wi];
        auto& v = where[p];
        if (v.empty() || v.back() != wi) v.push_back(static_cast<std::uint32_t>(wi));
      }
    }
    std::priority_queue<entry> queue;
    std::vector<std::vector<std::uint32_t>> positions;  // entry.pos indexes this
    auto push = [&](std::uint64_t p, std::int64_t c, std::vector<std::uint32_t> pos) {
      positions.push_back(std::move(pos));
      queue.push(entry{static_cast<std::uint64_t>(c), p, positions.size() - 1});
    };
    {
      std::vector<std::uint64_t> keys;
      keys.reserve(where.size());
      for (const auto& kv : where) keys.push_back(kv.first);
      std::sort(keys.begin(), keys.end());
      for (std::uint64_t p : keys) {
        const std::int64_t c = pair_counts[p];
        if (c > 0) push(p, c, std::move(where[p]));
      }
      where.clear();
    }

    // ---- merge loop ----
    std::vector<std::pair<std::int32_t, std::int32_t>> merges;
    const std::size_t max_len = opt_.max_token_length ? opt_.max_token_length : SIZE_MAX;
    const std::uint64_t min_count = std::max<std::uint64_t>(1, opt_.min_frequency);
    std::vector<std::pair<std::uint64_t, std::int64_t>> changes;
    std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> fresh;
    while (id_count < opt_.vocab_size && !queue.empty()) {
      entry top = queue.top();
      queue.pop();
      const std::int64_t cur = pair_counts[top.pair];
      if (static_cast<std::int64_t>(top.count) != cur) {
        top.count = static_cast<std::uint64_t>(std::max<std::int64_t>(cur, 0));
        queue.push(top);
        continue;
      }
      if (top.count < min_count) break;
      const auto a = static_cast<std::int32_t>(top.pair >> 32);
      const auto b = static_cast<std::int32_t>(top.pair & 0xffffffffu);
      std::string merged =
          tokens[static_cast<std::size_t>(a)] + tokens[static_cast<std::size_t>(b)];
      std::int32_t new_id;
      if (auto it = token_ids.find(merged); it != token_ids.end()) {
        new_id = it->second;
      } else {
        new_id = static_cast<std::int32_t>(tokens.size());
        token_ids.emplace(merged, new_id);
        tok_len.push_back(merged.size());
        tokens.push_back(std::move(merged));
        ++id_count;
      }
      merges.emplace_back(a, b);

      fresh.clear();
      const std::vector<std::uint32_t> pos = std::move(positions[top.pos]);
      positions[top.pos].clear();
      for (std::uint32_t wi : pos) {
        changes.clear();
        merge_word(words[wi], a, b, new_id, tok_len, max_len, changes);
        for (const auto& [p, d] : changes) {
          pair_counts[p] += d * counts[wi];
          if (d > 0) {
            auto& v = fresh[p];
            if (v.empty() || v.back() != wi) v.push_back(wi);
          }
        }
      }
      std::vector<std::uint64_t> keys;
      keys.reserve(fresh.size());
      for (const auto& kv : fresh) keys.push_back(kv.first);
      std::sort(keys.begin(), keys.end());
      for (std::uint64_t p : keys) {
        const std::int64_t c = pair_counts[p];
        if (c > 0) push(p, c, std::move(fresh[p]));
      }
    }
    return bpe_tokenizer(std::move(tokens), merges, std::move(specials), opt_.pattern, false);
  }

 private:
  struct entry {
    std::uint64_t count;
    std::uint64_t pair;
    std::size_t pos;
    // Max-heap order: higher count first; on equal counts the smaller pair first.
    bool operator<(const entry& o) const noexcept {
      if (count != o.count) return count < o.count;
      return pair > o.pair;
    }
  };

  static std::uint64_t key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  // Hugging Face Word::merge: replaces every non-overlapping (a, b), left to right, and reports
  // the pair-count changes around each replacement.
  static void merge_word(std::vector<std::int32_t>& w, std::int32_t a, std::int32_t b,
                         std::int32_t r, const std::vector<std::size_t>& len, std::size_t max_len,
                         std::vector<std::pair<std::uint64_t, std::int64_t>>& changes) {
    const std::size_t rlen = len[static_cast<std::size_t>(r)];
    std::size_t i = 0;
    while (i < w.size()) {
      if (w[i] == a && i + 1 < w.size() && w[i + 1] == b) {
        if (i > 0) {
          changes.emplace_back(key(w[i - 1], a), -1);
          if (len[static_cast<std::size_t>(w[i - 1])] + rlen < max_len)
            changes.emplace_back(key(w[i - 1], r), 1);
        }
        w[i] = r;
        w.erase(w.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        if (i + 1 < w.size()) {
          changes.emplace_back(key(b, w[i + 1]), -1);
          if (len[static_cast<std::size_t>(w[i + 1])] + rlen < max_len)
            changes.emplace_back(key(r, w[i + 1]), 1);
        }
      }
      ++i;
    }
  }

  struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return static_cast<std::size_t>(detail::bpe::hash_bytes(s));
    }
  };

  bpe_trainer_options opt_;
  std::unordered_map<std::string, std::uint64_t, string_hash, std::equal_to<>> words_;
};

TFM_END_NAMESPACE
