// typeformer/tokenizer/bpe.hpp
//
// WHAT THIS REPRESENTS
//   A byte-level BPE tokenizer (Radford et al. 2019, "Language Models are Unsupervised Multitask
//   Learners"; Sennrich et al., arXiv:1508.07909) as used by GPT-2, tiktoken (cl100k_base,
//   o200k_base) and Hugging Face tokenizer.json files with a ByteLevel pre-tokenizer. Text is
//   split by a regex pre-tokenizer (pretokenizer.hpp), each piece is turned into its UTF-8 bytes,
//   one token per byte, and adjacent tokens are merged by rank until no ranked pair is left.
//
// MERGE SEMANTICS (both reproduce the reference implementations exactly)
//   - Merges files (GPT-2 vocab.bpe, tokenizer.json): pair (a, b) merges into the token a+b with
//     rank = its line number; only listed pairs merge. The lowest rank merges first, the leftmost
//     occurrence on ties (Hugging Face `Word::merge_all`).
//   - tiktoken rank files: two adjacent parts merge when their concatenation is a token; the
//     rank is that token's rank (= id). Same order (tiktoken `byte_pair_merge`).
//   ignore_merges (tiktoken always, tokenizer.json when "ignore_merges": true): a piece that is a
//   token as a whole is emitted as that token without merging.
//
// SPECIAL TOKENS
//   Special (and tokenizer.json "added") tokens are matched in the text only where the caller
//   allows them (allowed_specials); elsewhere their text is encoded as ordinary text. Matching is
//   leftmost, longest on ties, before pre-tokenization. encode() never adds BOS/EOS.
//
// INVALID UTF-8
//   Input bytes are never rejected. Ill-formed sequences pre-tokenize as "other" characters and
//   are encoded with their byte tokens (byte fallback), so decode(encode(s)) == s for every byte
//   string s. decode() returns raw bytes, which may end inside a character; pass them through
//   utf8::sanitize() for display (U+FFFD replacement, like tiktoken's errors="replace").
//
// THREADS
//   A tokenizer is immutable after construction; encode/decode may run concurrently.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/pretokenizer.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

/// A special token: its text and id.
struct special_token {
  std::string text;
  std::int32_t id = 0;
};

/// Which special tokens encode() recognises in its input.
class allowed_specials {
 public:
  /// No special token is recognised: their text is ordinary text (tiktoken encode_ordinary).
  static allowed_specials none() { return allowed_specials(mode::none, {}); }
  /// Every special token is recognised (Hugging Face encode()).
  static allowed_specials all() { return allowed_specials(mode::all, {}); }
  /// Only the listed special tokens are recognised.
  static allowed_specials only(std::vector<std::string> texts) {
    return allowed_specials(mode::listed, std::move(texts));
  }
  static allowed_specials only(std::initializer_list<std::string_view> texts) {
    std::vector<std::string> v;
    for (auto t : texts) v.emplace_back(t);
    return only(std::move(v));
  }

  bool allows(std::string_view text) const noexcept {
    if (mode_ == mode::all) return true;
    if (mode_ == mode::none) return false;
    return std::find(texts_.begin(), texts_.end(), text) != texts_.end();
  }
  bool allows_none() const noexcept { return mode_ == mode::none; }

 private:
  enum class mode { none, all, listed };
  allowed_specials(mode m, std::vector<std::string> t) : mode_(m), texts_(std::move(t)) {}
  mode mode_;
  std::vector<std::string> texts_;
};

/// Whether a byte-level BPE vocabulary must hold all 256 single-byte tokens. `optional`: a byte
/// without a token is a piece of its own that merges with nothing and is dropped from the ids,
/// as llama.cpp's BPE does (llm_tokenizer_bpe_session: a symbol without a token and without
/// byte tokens emits nothing); SmolLM2's vocabulary lacks 21 bytes (0x04, 0x06, ..., 0xF5..0xFF).
/// decode(encode(s)) == s then holds only for text without those bytes.
enum class byte_tokens { required, optional };

/// Byte-level BPE tokenizer. See the file comment for semantics.
class bpe_tokenizer {
 public:
  /// Limits applied by the loaders to untrusted files.
  static constexpr std::int64_t max_tokens = std::int64_t{1} << 24;

  bpe_tokenizer() = default;

  /// Builds a tokenizer from its parts. tokens[id] holds the bytes of token id (an empty string
  /// marks an unused id); every one of the 256 single bytes must be a token. merges[r] = (a, b)
  /// is the pair of rank r (tokens[a] + tokens[b] must be a token). specials are matched only
  /// when allowed; their ids may lie beyond tokens.size().
  bpe_tokenizer(std::vector<std::string> tokens,
                const std::vector<std::pair<std::int32_t, std::int32_t>>& merges,
                std::vector<special_token> specials, split_pattern pattern,
                bool ignore_merges = false, byte_tokens bytes = byte_tokens::required)
      : pattern_(pattern), ignore_merges_(ignore_merges) {
    set_tokens(std::move(tokens), bytes);
    pairs_.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r)
      add_merge(merges[r].first, merges[r].second, r, "merge list");
    merges_ = merges;
    set_specials(std::move(specials));
  }

  // ---- loaders (defined below) ----------------------------------------------------------------

  /// GPT-2 encoder.json (token -> id, byte-level characters) and vocab.bpe (merges) contents.
  /// "<|endoftext|>" becomes a special token when present. Pattern: gpt2.
  static bpe_tokenizer from_gpt2(std::string_view encoder_json, std::string_view vocab_bpe);
  static bpe_tokenizer from_gpt2_files(const std::string& encoder_json_path,
                                       const std::string& vocab_bpe_path);

  /// tiktoken rank file contents ("<base64 token> <rank>" per line), with the pre-tokenizer and
  /// special tokens (the file does not store them).
  static bpe_tokenizer from_tiktoken(std::string_view text, split_pattern pattern,
                                     std::vector<special_token> specials = {});
  static bpe_tokenizer from_tiktoken_file(const std::string& path, split_pattern pattern,
                                          std::vector<special_token> specials = {});

  /// Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer (alone with
  /// use_regex, or after a Split with a supported pattern), optionally after
  /// Digits(individual_digits = true) (split_digits(), SmolLM's). Merges may be "a b" strings or
  /// ["a", "b"] pairs. added_tokens become special tokens. Single-byte tokens may be missing
  /// (byte_tokens::optional).
  static bpe_tokenizer from_hf_json(std::string_view json_text,
                                    std::string_view doc = "tokenizer.json");
  static bpe_tokenizer from_hf_json_file(const std::string& path);

  /// Picks the loader by file name: *.json -> tokenizer.json; *.tiktoken -> tiktoken (pattern and
  /// special tokens of cl100k_base / o200k_base / r50k/p50k inferred from the name); a directory
  /// or encoder.json -> GPT-2 files (encoder.json + vocab.bpe side by side).
  static bpe_tokenizer from_file(const std::string& path);

  // ---- savers ---------------------------------------------------------------------------------

  /// tokenizer.json text (ByteLevel, after Digits when split_digits(); merges as "a b" strings);
  /// specials as added_tokens.
  std::string to_hf_json() const;
  void save_hf_json(const std::string& path) const { detail::bpe::write_file(path, to_hf_json()); }
  /// tiktoken text: every token "<base64> <id>" in id order (rank = id). Specials and the
  /// pattern are not part of this format.
  std::string to_tiktoken() const;
  void save_tiktoken(const std::string& path) const {
    detail::bpe::write_file(path, to_tiktoken());
  }

  // ---- encode / decode ------------------------------------------------------------------------

  /// Token ids of text; specials recognised as `allowed` says (none by default).
  std::vector<std::int32_t> encode(
      std::string_view text, const allowed_specials& allowed = allowed_specials::none()) const {
    std::vector<std::int32_t> out;
    out.reserve(text.size() / 3 + 4);
    encode_into(text, allowed, out);
    return out;
  }

  /// Appends the ids of text to out.
  void encode_into(std::string_view text, const allowed_specials& allowed,
                   std::vector<std::int32_t>& out) const {
    if (allowed.allows_none() || specials_.empty()) {
      encode_ordinary_into(text, out);
      return;
    }
    // Next occurrence of every allowed special, refreshed only when passed: O(k n) in total.
    std::vector<std::size_t> next(specials_.size(), std::string_view::npos);
    std::vector<std::uint8_t> active(specials_.size(), 0);
    for (std::size_t k = 0; k < specials_.size(); ++k) {
      active[k] = allowed.allows(specials_[k].text) && !specials_[k].text.empty();
      if (active[k]) next[k] = text.find(specials_[k].text);
    }
    std::size_t pos = 0;
    for (;;) {
      std::size_t best = std::string_view::npos, best_k = 0;
      for (std::size_t k = 0; k < specials_.size(); ++k) {
        if (!active[k]) continue;
        if (next[k] != std::string_view::npos && next[k] < pos)
          next[k] = text.find(specials_[k].text, pos);
        if (next[k] == std::string_view::npos) continue;
        if (next[k] < best ||
            (next[k] == best && specials_[k].text.size() > specials_[best_k].text.size())) {
          best = next[k];
          best_k = k;
        }
      }
      if (best == std::string_view::npos) break;
      encode_ordinary_into(text.substr(pos, best - pos), out);
      out.push_back(specials_[best_k].id);
      pos = best + specials_[best_k].text.size();
    }
    encode_ordinary_into(text.substr(pos), out);
  }

  /// Ids of text with no special-token matching.
  std::vector<std::int32_t> encode_ordinary(std::string_view text) const {
    std::vector<std::int32_t> out;
    out.reserve(text.size() / 3 + 4);
    encode_ordinary_into(text, out);
    return out;
  }

  void encode_ordinary_into(std::string_view text, std::vector<std::int32_t>& out) const {
    if (tokens_.empty()) fail(errc::value, "bpe_tokenizer: encode() called on an empty tokenizer.");
    if (add_prefix_space_ && !text.empty() && text[0] != ' ') {
      // Hugging Face ByteLevel add_prefix_space: as if the text started with a space.
      std::string t;
      t.reserve(text.size() + 1);
      t.push_back(' ');
      t.append(text);
      encode_split(t, out);
      return;
    }
    encode_split(text, out);
  }

  /// Pre-tokenizes text (digits first when split_digits()) and encodes every piece.
  void encode_split(std::string_view text, std::vector<std::int32_t>& out) const {
    auto by_pattern = [&](std::string_view part) {
      std::size_t i = 0;
      while (i < part.size()) {
        const std::size_t e = next_piece(part, i, pattern_);
        encode_piece(part.substr(i, e - i), out);
        i = e;
      }
    };
    if (!split_digits_) {
      by_pattern(text);
      return;
    }
    std::size_t i = 0;
    while (i < text.size()) {
      const std::size_t e = next_piece(text, i, split_pattern::digits);
      by_pattern(text.substr(i, e - i));
      i = e;
    }
  }

  /// BPE of one pre-tokenized piece (bytes), appended to out.
  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
    if (piece.empty()) return;
    if (piece.size() == 1) {
      if (const std::int32_t id = byte_id_[static_cast<unsigned char>(piece[0])]; id >= 0)
        out.push_back(id);
      return;
    }
    if (ignore_merges_) {
      const std::int32_t id = index_.find(piece, tokens_);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    const std::size_t start = out.size();
    if (piece.size() <= small_piece)
      merge_small(piece, out);
    else
      merge_large(piece, out);
    if (missing_bytes_ > 0)  // bytes without a token (byte_tokens::optional) emit nothing
      out.erase(std::remove(out.begin() + static_cast<std::ptrdiff_t>(start), out.end(), -1),
                out.end());
  }

  /// Number of the 256 bytes without a token (0 unless built with byte_tokens::optional).
  int missing_bytes() const noexcept { return missing_bytes_; }

  /// Bytes of the tokens, concatenated. index_error for an id that is not a token.
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    out.reserve(ids.size() * 4);
    for (std::int32_t id : ids) out.append(token_bytes(id));
    return out;
  }

  // ---- vocabulary -----------------------------------------------------------------------------

  /// One past the largest id (regular or special).
  std::size_t vocab_size() const noexcept { return vocab_size_; }
  /// Number of ids that are tokens (vocab_size() minus unused ids).
  std::size_t token_count() const noexcept { return token_count_ + specials_only_; }

  /// The bytes of token id; index_error when id is not a token.
  std::string_view token_bytes(std::int32_t id) const {
    if (id >= 0 && static_cast<std::size_t>(id) < tokens_.size() &&
        present_[static_cast<std::size_t>(id)])
      return tokens_[static_cast<std::size_t>(id)];
    for (const auto& s : specials_)
      if (s.id == id) return s.text;
    fail(errc::index, "bpe_tokenizer: token id ", id, " is not in the vocabulary (size ",
         vocab_size_, ").");
  }
  /// Same as token_bytes, as a string.
  std::string id_to_token(std::int32_t id) const { return std::string(token_bytes(id)); }
  /// Id of the token (special or regular) with these bytes, or -1.
  std::int32_t token_to_id(std::string_view bytes) const noexcept {
    for (const auto& s : specials_)
      if (s.text == bytes) return s.id;
    if (tokens_.empty()) return -1;
    return index_.find(bytes, tokens_);
  }
  bool is_special(std::int32_t id) const noexcept {
    for (const auto& s : specials_)
      if (s.id == id) return true;
    return false;
  }

  const std::vector<special_token>& specials() const noexcept { return specials_; }
  split_pattern pattern() const noexcept { return pattern_; }
  bool ignore_merges() const noexcept { return ignore_merges_; }
  bool add_prefix_space() const noexcept { return add_prefix_space_; }
  void set_add_prefix_space(bool on) noexcept { add_prefix_space_ = on; }
  /// Whether every numeric character (\p{N}) is split off as its own piece before the pattern
  /// runs: Hugging Face's Digits(individual_digits = true) pre-tokenizer in a Sequence before
  /// ByteLevel, llama.cpp's "smollm" pre-tokenizer (regexes "\p{N}" then GPT-2's; SmolLM2).
  bool split_digits() const noexcept { return split_digits_; }
  void set_split_digits(bool on) noexcept { split_digits_ = on; }
  /// The merges in rank order (derived from the ranks for tiktoken-loaded models; a token that
  /// no pair of lower-ranked tokens builds has no merge).
  std::vector<std::pair<std::int32_t, std::int32_t>> merges() const {
    if (!merges_.empty() || !derive_merges_) return merges_;
    return derived_merges();
  }

 private:
  static constexpr std::size_t small_piece = 48;

  void set_tokens(std::vector<std::string> tokens, byte_tokens bytes = byte_tokens::required) {
    if (static_cast<std::int64_t>(tokens.size()) > max_tokens)
      fail(errc::value, "bpe_tokenizer: ", tokens.size(), " tokens exceed the limit of ",
           max_tokens, ".");
    tokens_ = std::move(tokens);
    present_.assign(tokens_.size(), 0);
    token_count_ = 0;
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      present_[i] = !tokens_[i].empty();
      token_count_ += present_[i];
    }
    index_.build(tokens_, present_);
    missing_bytes_ = 0;
    for (int b = 0; b < 256; ++b) {
      const char c = static_cast<char>(b);
      const std::int32_t id = index_.find(std::string_view(&c, 1), tokens_);
      missing_bytes_ += id < 0;
      if (id < 0 && bytes == byte_tokens::required)
        fail(errc::parse, "bpe_tokenizer: the vocabulary has no token for the byte 0x",
             std::string(1, "0123456789abcdef"[b >> 4]) + "0123456789abcdef"[b & 15],
             "; a byte-level BPE vocabulary needs all 256 single-byte tokens.");
      byte_id_[static_cast<std::size_t>(b)] = id;
    }
    vocab_size_ = tokens_.size();
  }

  void add_merge(std::int32_t a, std::int32_t b, std::size_t rank, std::string_view where) {
    auto ok = [&](std::int32_t x) {
      return x >= 0 && static_cast<std::size_t>(x) < tokens_.size() &&
             present_[static_cast<std::size_t>(x)];
    };
    if (!ok(a) || !ok(b))
      fail(errc::parse, "bpe_tokenizer: ", where, " entry ", rank, " refers to token id ",
           ok(a) ? b : a, ", which is not in the vocabulary.");
    std::string merged =
        tokens_[static_cast<std::size_t>(a)] + tokens_[static_cast<std::size_t>(b)];
    const std::int32_t id = index_.find(merged, tokens_);
    if (id < 0)
      fail(errc::parse, "bpe_tokenizer: ", where, " entry ", rank,
           " merges two tokens into one that is not in the vocabulary.");
    pairs_.insert(a, b, static_cast<std::uint32_t>(rank), id);
  }

  void set_specials(std::vector<special_token> specials) {
    specials_ = std::move(specials);
    specials_only_ = 0;
    for (const auto& s : specials_) {
      if (s.id < 0 || s.id >= max_tokens)
        fail(errc::value, "bpe_tokenizer: special token id ", s.id, " is out of range.");
      if (s.text.empty()) fail(errc::value, "bpe_tokenizer: a special token has empty text.");
      const auto u = static_cast<std::size_t>(s.id);
      if (u >= tokens_.size() || !present_[u]) ++specials_only_;
      vocab_size_ = std::max(vocab_size_, u + 1);
    }
    for (std::size_t i = 0; i < specials_.size(); ++i)
      for (std::size_t j = i + 1; j < specials_.size(); ++j)
        if (specials_[i].id == specials_[j].id || specials_[i].text == specials_[j].text)
          fail(errc::value, "bpe_tokenizer: special tokens ", i, " and ", j,
               " share an id or a text.");
  }

  // Leftmost lowest-rank merging on a small array (pieces of up to small_piece bytes).
  void merge_small(std::string_view piece, std::vector<std::int32_t>& out) const {
    std::int32_t ids[small_piece];
    std::uint32_t rank[small_piece];
    std::int32_t merged[small_piece];
    std::size_t m = piece.size();
    for (std::size_t k = 0; k < m; ++k) ids[k] = byte_id_[static_cast<unsigned char>(piece[k])];
    for (std::size_t k = 0; k + 1 < m; ++k) {
      const auto e = pairs_.find(ids[k], ids[k + 1]);
      rank[k] = e.rank;
      merged[k] = e.id;
    }
    while (m > 1) {
      std::size_t best = 0;
      std::uint32_t best_rank = rank[0];
      for (std::size_t k = 1; k + 1 < m; ++k)
        if (rank[k] < best_rank) {
          best_rank = rank[k];
          best = k;
        }
      if (best_rank == detail::bpe::pair_table::no_rank) break;
      ids[best] = merged[best];
      for (std::size_t k = best + 1; k + 1 < m; ++k) {
        ids[k] = ids[k + 1];
        rank[k] = rank[k + 1];
        merged[k] = merged[k + 1];
      }
      --m;
      if (best + 1 < m) {
        const auto e = pairs_.find(ids[best], ids[best + 1]);
        rank[best] = e.rank;
        merged[best] = e.id;
      }
      if (best > 0) {
        const auto e = pairs_.find(ids[best - 1], ids[best]);
        rank[best - 1] = e.rank;
        merged[best - 1] = e.id;
      }
    }
    out.insert(out.end(), ids, ids + m);
  }

  // The same order with a heap over (rank, position) and a linked list: O(n log n).
  void merge_large(std::string_view piece, std::vector<std::int32_t>& out) const {
    const std::size_t n = piece.size();
    struct node {
      std::int32_t id;
      std::int32_t prev;
      std::int32_t next;
    };
    std::vector<node> nodes(n);
    for (std::size_t k = 0; k < n; ++k)
      nodes[k] =
          node{byte_id_[static_cast<unsigned char>(piece[k])], static_cast<std::int32_t>(k) - 1,
               k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1};
    struct cand {
      std::uint32_t rank;
      std::int32_t pos;
      std::int32_t left, right, merged;
      bool operator>(const cand& o) const noexcept {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<cand, std::vector<cand>, std::greater<cand>> heap;
    auto push = [&](std::int32_t p) {
      if (p < 0) return;
      const std::int32_t q = nodes[static_cast<std::size_t>(p)].next;
      if (q < 0) return;
      const std::int32_t a = nodes[static_cast<std::size_t>(p)].id,
                         b = nodes[static_cast<std::size_t>(q)].id;
      const auto e = pairs_.find(a, b);
      if (e.rank != detail::bpe::pair_table::no_rank) heap.push(cand{e.rank, p, a, b, e.id});
    };
    for (std::size_t k = 0; k + 1 < n; ++k) push(static_cast<std::int32_t>(k));
    std::vector<std::uint8_t> dead(n, 0);
    while (!heap.empty()) {
      const cand c = heap.top();
      heap.pop();
      const auto p = static_cast<std::size_t>(c.pos);
      if (dead[p] || nodes[p].id != c.left) continue;
      const std::int32_t q = nodes[p].next;
      if (q < 0 || nodes[static_cast<std::size_t>(q)].id != c.right) continue;
      nodes[p].id = c.merged;
      const std::int32_t r = nodes[static_cast<std::size_t>(q)].next;
      nodes[p].next = r;
      if (r >= 0) nodes[static_cast<std::size_t>(r)].prev = c.pos;
      dead[static_cast<std::size_t>(q)] = 1;
      push(nodes[p].prev);
      push(c.pos);
    }
    for (std::int32_t k = 0; k >= 0; k = nodes[static_cast<std::size_t>(k)].next)
      out.push_back(nodes[static_cast<std::size_t>(k)].id);
  }

  // For tiktoken-loaded models: the pair that builds each token when merging its bytes with only
  // lower ranks allowed (the rule transformers' TikTokenConverter uses).
  std::vector<std::pair<std::int32_t, std::int32_t>> derived_merges() const {
    std::vector<std::pair<std::int32_t, std::int32_t>> out;
    for (std::size_t id = 0; id < tokens_.size(); ++id) {
      if (!present_[id] || tokens_[id].size() < 2) continue;
      const std::string& t = tokens_[id];
      std::vector<std::int32_t> parts;
      for (unsigned char b : t) parts.push_back(byte_id_[b]);
      for (;;) {
        std::size_t best = parts.size();
        std::uint32_t best_rank = static_cast<std::uint32_t>(id);
        for (std::size_t k = 0; k + 1 < parts.size(); ++k) {
          const auto e = pairs_.find(parts[k], parts[k + 1]);
          if (e.rank < best_rank) {
            best_rank = e.rank;
            best = k;
          }
        }
        if (best == parts.size()) break;
        parts[best] = pairs_.find(parts[best], parts[best + 1]).id;
        parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
      }
      if (parts.size() == 2) out.emplace_back(parts[0], parts[1]);
    }
    return out;
  }

  friend struct bpe_loader;

  std::vector<std::string> tokens_;
  std::vector<std::uint8_t> present_;
  detail::bpe::token_index index_;
  detail::bpe::pair_table pairs_;
  std::vector<std::pair<std::int32_t, std::int32_t>> merges_;
  std::vector<special_token> specials_;
  std::int32_t byte_id_[256] = {};
  std::size_t vocab_size_ = 0;
  std::size_t token_count_ = 0;
  std::size_t specials_only_ = 0;
  split_pattern pattern_ = split_pattern::gpt2;
  bool ignore_merges_ = false;
  bool derive_merges_ = false;
  bool add_prefix_space_ = false;
  bool split_digits_ = false;
  int missing_bytes_ = 0;
};

// ---- loaders -------------------------------------------------------------------------------

/// Construction helpers with access to the tokenizer's internals.
struct bpe_loader {
  static constexpr std::size_t max_line_tokens = std::size_t{1} << 24;

  static void check_id(std::int64_t id, std::size_t entries, std::string_view doc,
                       std::string_view token) {
    // Ids index a dense array: bound them by the entry count so that a small hostile file cannot
    // demand a huge allocation.
    if (id < 0 || id >= bpe_tokenizer::max_tokens ||
        static_cast<std::size_t>(id) >= 2 * entries + 1024)
      fail(errc::parse, doc, ": token '", token.substr(0, 64), "' has id ", id, ", outside 0..",
           std::min<std::size_t>(2 * entries + 1024, bpe_tokenizer::max_tokens) - 1,
           " for a vocabulary of ", entries, " entries.");
  }

  static void place(std::vector<std::string>& tokens, std::int64_t id, std::string bytes,
                    std::string_view doc) {
    const auto u = static_cast<std::size_t>(id);
    if (u >= tokens.size()) tokens.resize(u + 1);
    if (!tokens[u].empty()) fail(errc::parse, doc, ": id ", id, " is given to two tokens.");
    if (bytes.empty()) fail(errc::parse, doc, ": token id ", id, " has empty text.");
    tokens[u] = std::move(bytes);
  }

  /// Parses merges lines ("a b", optional "#version" first line) into id pairs via lookup.
  template <class Lookup>
  static std::vector<std::pair<std::int32_t, std::int32_t>> parse_merges_text(std::string_view text,
                                                                              std::string_view doc,
                                                                              Lookup&& lookup) {
    std::vector<std::pair<std::int32_t, std::int32_t>> merges;
    std::size_t pos = 0, line_no = 0;
    while (pos < text.size()) {
      std::size_t e = text.find('\n', pos);
      if (e == std::string_view::npos) e = text.size();
      std::string_view line = text.substr(pos, e - pos);
      pos = e + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) continue;
      if (line_no == 1 && line.substr(0, 8) == "#version") continue;
      const std::size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos ||
          sp == 0 || sp + 1 == line.size())
        fail(errc::parse, doc, ": line ", line_no,
             " is not a merge of two tokens separated by one space.");
      merges.emplace_back(lookup(line.substr(0, sp), line_no),
                          lookup(line.substr(sp + 1), line_no));
    }
    return merges;
  }

  static bpe_tokenizer finish(std::vector<std::string> tokens,
                              std::vector<std::pair<std::int32_t, std::int32_t>> merges,
                              std::vector<special_token> specials, split_pattern p,
                              bool ignore_merges, std::string_view doc,
                              byte_tokens bytes = byte_tokens::required) {
    bpe_tokenizer t;
    t.pattern_ = p;
    t.ignore_merges_ = ignore_merges;
    t.set_tokens(std::move(tokens), bytes);
    t.pairs_.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r)
      t.add_merge(merges[r].first, merges[r].second, r, doc);
    t.merges_ = std::move(merges);
    t.set_specials(std::move(specials));
    return t;
  }

  static std::vector<std::string> byte_level_vocab(
      const detail::json::value& vocab, std::string_view doc,
      std::vector<std::pair<std::string, std::int32_t>>* raw_names) {
    if (!vocab.is_object()) fail(errc::parse, doc, ": the vocabulary is not a JSON object.");
    std::vector<std::string> tokens;
    const std::size_t entries = vocab.object.size();
    if (entries > static_cast<std::size_t>(bpe_tokenizer::max_tokens))
      fail(errc::parse, doc, ": ", entries, " vocabulary entries exceed the limit.");
    for (const auto& [name, v] : vocab.object) {
      if (!v.is_number() || !v.integral)
        fail(errc::parse, doc, ": the id of token '", std::string_view(name).substr(0, 64),
             "' is not an integer (byte ", v.offset, ").");
      check_id(v.integer, entries, doc, name);
      auto bytes = detail::bpe::unmap_bytes(name);
      if (!bytes)
        fail(
            errc::parse, doc, ": token '", std::string_view(name).substr(0, 64), "' (id ",
            v.integer,
            ") has a character outside the 256 byte-level characters; this is not a byte-level BPE "
            "vocabulary.");
      place(tokens, v.integer, std::move(*bytes), doc);
      if (raw_names) raw_names->emplace_back(name, static_cast<std::int32_t>(v.integer));
    }
    return tokens;
  }
};

inline bpe_tokenizer bpe_tokenizer::from_gpt2(std::string_view encoder_json,
                                              std::string_view vocab_bpe) {
  const auto root = detail::json::parse(encoder_json, "encoder.json");
  auto tokens = bpe_loader::byte_level_vocab(root, "encoder.json", nullptr);
  // Build a temporary bytes -> id index for the merge lookups.
  std::vector<std::uint8_t> present(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) present[i] = !tokens[i].empty();
  detail::bpe::token_index idx;
  idx.build(tokens, present);
  auto find = [&](std::string_view part, std::size_t line) -> std::int32_t {
    auto bytes = detail::bpe::unmap_bytes(part);
    const std::int32_t id = bytes ? idx.find(*bytes, tokens) : -1;
    if (id < 0)
      fail(errc::parse, "vocab.bpe: line ", line, " names '", part.substr(0, 64),
           "', which is not a token of encoder.json.");
    return id;
  };
  auto merges = bpe_loader::parse_merges_text(vocab_bpe, "vocab.bpe", find);
  std::vector<special_token> specials;
  if (const std::int32_t eot = idx.find("<|endoftext|>", tokens); eot >= 0)
    specials.push_back({"<|endoftext|>", eot});
  return bpe_loader::finish(std::move(tokens), std::move(merges), std::move(specials),
                            split_pattern::gpt2, false, "vocab.bpe");
}

inline bpe_tokenizer bpe_tokenizer::from_gpt2_files(const std::string& encoder_json_path,
                                                    const std::string& vocab_bpe_path) {
  return from_gpt2(detail::bpe::read_file(encoder_json_path),
                   detail::bpe::read_file(vocab_bpe_path));
}

inline bpe_tokenizer bpe_tokenizer::from_tiktoken(std::string_view text, split_pattern pattern,
                                                  std::vector<special_token> specials) {
  // Count lines first to bound ids.
  std::size_t entries = 0;
  for (char c : text) entries += (c == '\n');
  entries += 1;
  std::vector<std::string> tokens;
  std::size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    std::size_t e = text.find('\n', pos);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(pos, e - pos);
    pos = e + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::size_t sp = line.find(' ');
    if (sp == std::string_view::npos || sp == 0 || line.find(' ', sp + 1) != std::string_view::npos)
      fail(errc::parse, "tiktoken file: line ", line_no, " is not '<base64 token> <rank>'.");
    auto bytes = detail::bpe::base64_decode(line.substr(0, sp));
    if (!bytes || bytes->empty())
      fail(errc::parse, "tiktoken file: line ", line_no, " has an invalid base64 token.");
    const std::string_view num = line.substr(sp + 1);
    std::int64_t rank = 0;
    if (num.empty() || num.size() > 12)
      fail(errc::parse, "tiktoken file: line ", line_no, " has an invalid rank.");
    for (char c : num) {
      if (c < '0' || c > '9')
        fail(errc::parse, "tiktoken file: line ", line_no, " has an invalid rank.");
      rank = rank * 10 + (c - '0');
    }
    bpe_loader::check_id(rank, entries, "tiktoken file", line.substr(0, sp));
    bpe_loader::place(tokens, rank, std::move(*bytes), "tiktoken file");
  }
  bpe_tokenizer t;
  t.pattern_ = pattern;
  t.ignore_merges_ = true;
  t.derive_merges_ = true;
  t.set_tokens(std::move(tokens));
  // Every split of a token into two tokens is a merge with the token's rank (tiktoken semantics).
  std::size_t splits = 0;
  for (const auto& tok : t.tokens_) splits += tok.size() > 1 ? tok.size() - 1 : 0;
  t.pairs_.reserve(std::min<std::size_t>(splits, t.tokens_.size() * 4));
  for (std::size_t id = 0; id < t.tokens_.size(); ++id) {
    const std::string& tok = t.tokens_[id];
    if (!t.present_[id] || tok.size() < 2) continue;
    const std::string_view v = tok;
    for (std::size_t k = 1; k < v.size(); ++k) {
      const std::int32_t a = t.index_.find(v.substr(0, k), t.tokens_);
      if (a < 0) continue;
      const std::int32_t b = t.index_.find(v.substr(k), t.tokens_);
      if (b < 0) continue;
      t.pairs_.insert(a, b, static_cast<std::uint32_t>(id), static_cast<std::int32_t>(id));
    }
  }
  for (const auto& s : specials) {
    const auto u = static_cast<std::size_t>(s.id);
    if (s.id >= 0 && u < t.tokens_.size() && t.present_[u])
      fail(errc::value, "tiktoken: special token '", s.text, "' has id ", s.id,
           ", which a regular token uses.");
  }
  t.set_specials(std::move(specials));
  return t;
}

inline bpe_tokenizer bpe_tokenizer::from_tiktoken_file(const std::string& path,
                                                       split_pattern pattern,
                                                       std::vector<special_token> specials) {
  return from_tiktoken(detail::bpe::read_file(path), pattern, std::move(specials));
}

inline bpe_tokenizer bpe_tokenizer::from_hf_json(std::string_view json_text, std::string_view doc) {
  using detail::json::value;
  const value root = detail::json::parse(json_text, doc);
  if (!root.is_object()) fail(errc::parse, doc, ": the top level is not a JSON object.");
  const value* model = root.find("model");
  if (!model || !model->is_object()) fail(errc::parse, doc, ": there is no \"model\" object.");
  const value* type = model->find("type");
  if (type && (!type->is_string() || type->string != "BPE"))
    fail(errc::unsupported, doc, ": the model type is ",
         type->is_string() ? type->string : "not a string",
         "; bpe_tokenizer reads BPE models only.");
  auto flag = [&](const value* obj, std::string_view key) {
    const value* v = obj ? obj->find(key) : nullptr;
    return v && v->is_bool() && v->boolean;
  };
  auto nonempty_string = [&](std::string_view key) {
    const value* v = model->find(key);
    return v && v->is_string() && !v->string.empty();
  };
  if (flag(model, "byte_fallback"))
    fail(errc::unsupported, doc,
         ": byte_fallback BPE models are not byte-level; not supported here.");
  if (nonempty_string("continuing_subword_prefix") || nonempty_string("end_of_word_suffix"))
    fail(errc::unsupported, doc,
         ": BPE models with subword prefixes or suffixes are not byte-level.");
  if (const value* norm = root.find("normalizer"); norm && !norm->is_null())
    fail(errc::unsupported, doc, ": a normalizer is set; byte-level BPE files have none.");

  // Pre-tokenizer: ByteLevel(use_regex) or Sequence[Split(Regex, Isolated), ByteLevel(!use_regex)],
  // either one optionally after Digits(individual_digits).
  split_pattern pattern = split_pattern::gpt2;
  bool prefix_space = false;
  bool split_digits = false;
  bool byte_level = false;
  auto read_split = [&](const value& v) {
    const value* pat = v.find("pattern");
    const value* rx = pat ? pat->find("Regex") : nullptr;
    if (!rx || !rx->is_string())
      fail(errc::unsupported, doc,
           ": a Split pre-tokenizer without a Regex pattern is not supported.");
    const auto p = pattern_from_regex(rx->string);
    if (!p)
      fail(errc::unsupported, doc,
           ": the Split regex is not one of the implemented patterns (gpt2, "
           "cl100k, llama3, o200k).");
    const value* beh = v.find("behavior");
    if (beh && (!beh->is_string() || beh->string != "Isolated"))
      fail(errc::unsupported, doc, ": only Split behavior \"Isolated\" is supported.");
    if (flag(&v, "invert")) fail(errc::unsupported, doc, ": inverted Split is not supported.");
    pattern = *p;
  };
  auto read_byte_level = [&](const value& v, bool after_split) {
    byte_level = true;
    prefix_space = flag(&v, "add_prefix_space");
    const value* ur = v.find("use_regex");
    const bool use_regex = !ur || (ur->is_bool() && ur->boolean);
    if (after_split && use_regex)
      fail(errc::unsupported, doc,
           ": a ByteLevel pre-tokenizer with use_regex after a Split is not supported.");
    if (!after_split && !use_regex)
      fail(errc::unsupported, doc,
           ": a ByteLevel pre-tokenizer without use_regex and without a Split "
           "before it is not supported.");
  };
  const value* pre = root.find("pre_tokenizer");
  auto type_of = [&](const value& v) -> std::string_view {
    const value* t = v.find("type");
    return (t && t->is_string()) ? std::string_view(t->string) : std::string_view();
  };
  if (pre && pre->is_object()) {
    const std::string_view pt = type_of(*pre);
    if (pt == "ByteLevel") {
      read_byte_level(*pre, false);
    } else if (pt == "Sequence") {
      // [Split, ByteLevel], [Digits, ByteLevel] or [Digits, Split, ByteLevel].
      const value* list = pre->find("pretokenizers");
      std::size_t at = 0;
      if (list && list->is_array() && !list->array.empty() && type_of(list->array[0]) == "Digits") {
        const value* ind = list->array[0].find("individual_digits");
        if (!ind || !ind->is_bool() || !ind->boolean)
          fail(errc::unsupported, doc,
               ": a Digits pre-tokenizer without individual_digits = true is not supported.");
        split_digits = true;
        at = 1;
      }
      const std::size_t n = list && list->is_array() ? list->array.size() : 0;
      if (n == at + 1 && at == 1 && type_of(list->array[1]) == "ByteLevel") {
        read_byte_level(list->array[1], false);
      } else if (n == at + 2 && type_of(list->array[at]) == "Split" &&
                 type_of(list->array[at + 1]) == "ByteLevel") {
        read_split(list->array[at]);
        read_byte_level(list->array[at + 1], true);
      } else {
        fail(errc::unsupported, doc,
             ": only the pre-tokenizer Sequences [Split, ByteLevel], [Digits, ByteLevel] and "
             "[Digits, Split, ByteLevel] are supported.");
      }
      if (split_digits && prefix_space)
        fail(errc::unsupported, doc,
             ": a ByteLevel add_prefix_space after Digits (a space before every piece) is not "
             "supported.");
    } else {
      fail(errc::unsupported, doc, ": pre-tokenizer type '", pt,
           "' is not supported for byte-level BPE.");
    }
  }
  if (!byte_level)
    fail(errc::unsupported, doc,
         ": no ByteLevel pre-tokenizer; this is not a byte-level BPE file.");

  const value* vocab = model->find("vocab");
  if (!vocab) fail(errc::parse, doc, ": the model has no \"vocab\".");
  auto tokens = bpe_loader::byte_level_vocab(*vocab, doc, nullptr);
  std::vector<std::uint8_t> present(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) present[i] = !tokens[i].empty();
  detail::bpe::token_index idx;
  idx.build(tokens, present);
  auto find = [&](std::string_view part, std::size_t entry) -> std::int32_t {
    auto bytes = detail::bpe::unmap_bytes(part);
    const std::int32_t id = bytes ? idx.find(*bytes, tokens) : -1;
    if (id < 0)
      fail(errc::parse, doc, ": merge ", entry, " names '", part.substr(0, 64),
           "', which is not in the vocabulary.");
    return id;
  };
  std::vector<std::pair<std::int32_t, std::int32_t>> merges;
  if (const value* ml = model->find("merges"); ml && !ml->is_null()) {
    if (!ml->is_array()) fail(errc::parse, doc, ": \"merges\" is not an array.");
    merges.reserve(ml->array.size());
    for (std::size_t r = 0; r < ml->array.size(); ++r) {
      const value& m = ml->array[r];
      if (m.is_string()) {
        const std::string_view s = m.string;
        const std::size_t sp = s.find(' ');
        if (sp == std::string_view::npos || sp == 0 || sp + 1 == s.size() ||
            s.find(' ', sp + 1) != std::string_view::npos)
          fail(errc::parse, doc, ": merge ", r, " is not two tokens separated by one space (byte ",
               m.offset, ").");
        merges.emplace_back(find(s.substr(0, sp), r), find(s.substr(sp + 1), r));
      } else if (m.is_array() && m.array.size() == 2 && m.array[0].is_string() &&
                 m.array[1].is_string()) {
        merges.emplace_back(find(m.array[0].string, r), find(m.array[1].string, r));
      } else {
        fail(errc::parse, doc, ": merge ", r, " is neither \"a b\" nor [\"a\", \"b\"] (byte ",
             m.offset, ").");
      }
    }
  }
  std::vector<special_token> specials;
  if (const value* added = root.find("added_tokens"); added && !added->is_null()) {
    if (!added->is_array()) fail(errc::parse, doc, ": \"added_tokens\" is not an array.");
    for (const value& a : added->array) {
      const value* id = a.find("id");
      const value* content = a.find("content");
      if (!id || !id->is_number() || !id->integral || !content || !content->is_string())
        fail(errc::parse, doc,
             ": an added token lacks an integer \"id\" or a string \"content\" (byte ", a.offset,
             ").");
      bpe_loader::check_id(id->integer, vocab->object.size(), doc, content->string);
      bool dup = false;
      for (const auto& s : specials) dup = dup || s.id == id->integer;
      if (!dup) specials.push_back({content->string, static_cast<std::int32_t>(id->integer)});
    }
  }
  // A byte without a token (SmolLM2's vocabulary lacks 21) encodes to nothing (byte_tokens).
  bpe_tokenizer t =
      bpe_loader::finish(std::move(tokens), std::move(merges), std::move(specials), pattern,
                         flag(model, "ignore_merges"), doc, byte_tokens::optional);
  t.add_prefix_space_ = prefix_space;
  t.split_digits_ = split_digits;
  return t;
}

inline bpe_tokenizer bpe_tokenizer::from_hf_json_file(const std::string& path) {
  return from_hf_json(detail::bpe::read_file(path), path);
}

/// Special tokens of the published tiktoken encodings (tiktoken_ext/openai_public.py).
inline std::vector<special_token> tiktoken_specials(std::string_view encoding) {
  if (encoding == "cl100k_base")
    return {{"<|endoftext|>", 100257},
            {"<|fim_prefix|>", 100258},
            {"<|fim_middle|>", 100259},
            {"<|fim_suffix|>", 100260},
            {"<|endofprompt|>", 100276}};
  if (encoding == "o200k_base") return {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}};
  if (encoding == "r50k_base") return {{"<|endoftext|>", 50256}};
  if (encoding == "p50k_base") return {{"<|endoftext|>", 50256}};
  fail(errc::value, "tiktoken_specials: unknown encoding '", encoding, "'.");
}

inline bpe_tokenizer bpe_tokenizer::from_file(const std::string& path) {
  auto ends_with = [&](std::string_view suf) {
    return path.size() >= suf.size() &&
           std::string_view(path).substr(path.size() - suf.size()) == suf;
  };
  const std::size_t slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string dir = slash == std::string::npos ? std::string(".") : path.substr(0, slash);
  if (ends_with("encoder.json")) return from_gpt2_files(path, dir + "/vocab.bpe");
  if (ends_with(".json")) return from_hf_json_file(path);
  if (ends_with(".tiktoken")) {
    for (std::string_view enc : {"cl100k_base", "o200k_base", "r50k_base", "p50k_base"})
      if (base.find(enc) != std::string::npos)
        return from_tiktoken_file(path, pattern_from_name(enc), tiktoken_specials(enc));
    return from_tiktoken_file(path, split_pattern::cl100k, {});
  }
  // A directory holding GPT-2 files.
  std::ifstream probe(path + "/encoder.json");
  if (probe) return from_gpt2_files(path + "/encoder.json", path + "/vocab.bpe");
  fail(errc::value, "bpe_tokenizer::from_file: cannot tell the format of '", path,
       "' (expected *.json, *.tiktoken, encoder.json or a directory with encoder.json and "
       "vocab.bpe).");
}

// ---- savers --------------------------------------------------------------------------------

inline std::string bpe_tokenizer::to_hf_json() const {
  using detail::json::append_quoted;
  std::string o;
  o.reserve(tokens_.size() * 24);
  o += "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  "
       "\"added_tokens\": [";
  for (std::size_t k = 0; k < specials_.size(); ++k) {
    o += k ? ",\n    {" : "\n    {";
    o += "\"id\": " + std::to_string(specials_[k].id) + ", \"content\": ";
    append_quoted(o, specials_[k].text);
    o += ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, "
         "\"special\": true}";
  }
  o += specials_.empty() ? "],\n" : "\n  ],\n";
  o += "  \"normalizer\": null,\n  \"pre_tokenizer\": ";
  const std::string aps = add_prefix_space_ ? "true" : "false";
  const char* digits = "{\"type\": \"Digits\", \"individual_digits\": true}";
  if (pattern_ == split_pattern::gpt2) {
    const std::string bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": " + aps +
                           ", \"trim_offsets\": true, \"use_regex\": true}";
    if (split_digits_)
      o += "{\"type\": \"Sequence\", \"pretokenizers\": [" + std::string(digits) + ", " + bl + "]}";
    else
      o += bl;
  } else {
    o += "{\"type\": \"Sequence\", \"pretokenizers\": [";
    if (split_digits_) o += std::string(digits) + ", ";
    o += "{\"type\": \"Split\", \"pattern\": {\"Regex\": ";
    append_quoted(o, pattern_regex(pattern_));
    o += "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
         "\"add_prefix_space\": " +
         aps + ", \"trim_offsets\": true, \"use_regex\": false}]}";
  }
  o += ",\n  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
       "\"trim_offsets\": false, "
       "\"use_regex\": true},\n";
  o += "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": "
       "true, \"use_regex\": "
       "true},\n";
  o += "  \"model\": {\n    \"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
       "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": false, "
       "\"byte_fallback\": false, \"ignore_merges\": ";
  o += ignore_merges_ ? "true" : "false";
  o += ",\n    \"vocab\": {";
  bool first = true;
  for (std::size_t id = 0; id < tokens_.size(); ++id) {
    if (!present_[id]) continue;
    o += first ? "\n      " : ",\n      ";
    first = false;
    append_quoted(o, detail::bpe::map_bytes(tokens_[id]));
    o += ": " + std::to_string(id);
  }
  // Hugging Face keeps special tokens in the model vocabulary too.
  for (const auto& s : specials_) {
    const auto u = static_cast<std::size_t>(s.id);
    if (u < tokens_.size() && present_[u]) continue;
    o += first ? "\n      " : ",\n      ";
    first = false;
    append_quoted(o, detail::bpe::map_bytes(s.text));
    o += ": " + std::to_string(s.id);
  }
  o += "\n    },\n    \"merges\": [";
  const auto ms = merges();
  for (std::size_t r = 0; r < ms.size(); ++r) {
    o += r ? ",\n      " : "\n      ";
    append_quoted(o, detail::bpe::map_bytes(tokens_[static_cast<std::size_t>(ms[r].first)]) + " " +
                         detail::bpe::map_bytes(tokens_[static_cast<std::size_t>(ms[r].second)]));
  }
  o += "\n    ]\n  }\n}\n";
  return o;
}

inline std::string bpe_tokenizer::to_tiktoken() const {
  std::string o;
  o.reserve(tokens_.size() * 16);
  for (std::size_t id = 0; id < tokens_.size(); ++id) {
    if (!present_[id]) continue;
    o += detail::bpe::base64_encode(tokens_[id]);
    o += ' ';
    o += std::to_string(id);
    o += '\n';
  }
  return o;
}

TFM_END_NAMESPACE
