// typeformer/tokenizer/sentencepiece.hpp
//
// WHAT THIS REPRESENTS
//   A SentencePiece tokenizer (Kudo & Richardson 2018, arXiv:1808.06226) that reads `.model`
//   files and produces the same ids as the reference implementation (github.com/google/
//   sentencepiece v0.2, SentencePieceProcessor::Encode / Decode) for every model type:
//     - UNIGRAM: Viterbi over all vocabulary pieces (Kudo 2018, arXiv:1804.10959), with
//       SentencePiece's EncodeOptimized order and float arithmetic (on an exact tie the
//       candidate that starts earliest wins), so ties resolve the same way;
//     - BPE: greedy merging of the highest-scoring adjacent pair, leftmost first, with
//       re-segmentation of UNUSED pieces (Sennrich et al. 2016, arXiv:1508.07909);
//     - WORD and CHAR models.
//   Normalization is sp_normalizer (identity or the model's precompiled charsmap, whitespace
//   handling, the "▁" marker). Unknown characters become <unk>; with byte_fallback they become
//   their UTF-8 bytes as <0xXX> pieces. Without byte_fallback a run of unknown characters is one
//   <unk> token, as in SentencePiece.
//
// INVALID UTF-8 (documented behaviour, identical to SentencePiece)
//   Each ill-formed byte is replaced by U+FFFD during normalization. With byte_fallback it is
//   then encoded as <0xEF><0xBF><0xBD> (unless U+FFFD is in the vocabulary); without, as <unk>.
//   decode() never produces ill-formed UTF-8: byte pieces that do not form a valid sequence
//   decode to U+FFFD per byte.
//
// CONTRACTS
//   - decode(encode(s)) == s for valid UTF-8 s without U+2581 (which decodes to ' ') when the
//     model uses the identity normalizer with remove_extra_whitespaces = false and
//     byte_fallback = true (any model: decode(encode(s))
//     equals SentencePiece's decode of the same ids).
//   - All member functions are const and thread-safe after construction.
//   - encode is O(n * L) for UNIGRAM (L = longest piece in bytes) and O(n log n) for BPE.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/sentencepiece_model.hpp"
#include "typeformer/tokenizer/sentencepiece_normalizer.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail {
struct sp_string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
using sp_piece_map = std::unordered_map<std::string, std::int32_t, sp_string_hash, std::equal_to<>>;
}  // namespace detail

/// A loaded SentencePiece model: encode text to ids, decode ids to text.
class sentencepiece_tokenizer {
 public:
  /// One token of an encoding: the piece text (a view into the normalized string or the
  /// vocabulary) and its id.
  struct token {
    std::string piece;
    std::int32_t id;
  };

  explicit sentencepiece_tokenizer(sp_model_proto model) : model_(std::move(model)) { init(); }

  /// Parses the bytes of a .model file.
  static sentencepiece_tokenizer from_bytes(std::string_view bytes) {
    return sentencepiece_tokenizer(parse_sentencepiece_model(bytes));
  }
  /// Reads a .model file.
  static sentencepiece_tokenizer from_file(const std::string& path) {
    return sentencepiece_tokenizer(load_sentencepiece_model(path));
  }

  /// Token ids of text (no BOS/EOS; add bos_id()/eos_id() yourself).
  std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> ids;
    const std::string norm = normalizer_.normalize(text);
    bool prev_unk = false;
    segment(norm, [&](std::string_view w, std::int32_t id) {
      const bool unk = id == unk_id_;
      if (unk && model_.trainer.byte_fallback) {
        for (char b : w) ids.push_back(byte_ids_[static_cast<unsigned char>(b)]);
      } else if (!(unk && prev_unk)) {
        ids.push_back(id);
      }
      prev_unk = unk;
    });
    return ids;
  }

  /// Pieces and ids of text, as SentencePiece's EncodeAsPieces/EncodeAsIds (a merged run of
  /// unknown characters is one token whose piece is the run's text).
  std::vector<token> encode_tokens(std::string_view text) const {
    std::vector<token> out;
    const std::string norm = normalizer_.normalize(text);
    bool prev_unk = false;
    segment(norm, [&](std::string_view w, std::int32_t id) {
      const bool unk = id == unk_id_;
      if (unk && model_.trainer.byte_fallback) {
        for (char b : w) {
          const std::int32_t bid = byte_ids_[static_cast<unsigned char>(b)];
          out.push_back({model_.pieces[static_cast<std::size_t>(bid)].piece, bid});
        }
      } else if (unk && prev_unk) {
        out.back().piece.append(w);
      } else {
        out.push_back({std::string(w), id});
      }
      prev_unk = unk;
    });
    return out;
  }

  /// Text of ids (SentencePieceProcessor::Decode). Control pieces are invisible, <unk> prints
  /// unk_surface (" ⁇ " by default), byte pieces are joined into UTF-8 (U+FFFD for each byte
  /// of an ill-formed sequence), "▁" becomes ' ', and the leading "▁" added by
  /// add_dummy_prefix is removed. Fails with index_error for an id outside [0, vocab_size()).
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string text;
    std::string bytes;  // pending run of byte pieces
    auto flush_bytes = [&] {
      std::size_t off = 0;
      while (off < bytes.size()) {
        const utf8::decoded d = utf8::decode(bytes, off);
        if (d.valid) {
          text.append(bytes, off, d.length);
          off += d.length;
        } else {
          text.append("\xEF\xBF\xBD");
          off += 1;
        }
      }
      bytes.clear();
    };
    bool is_bos_ws = true, bos_ws_seen = false;
    const auto& ns = model_.normalizer;
    for (std::int32_t id : ids) {
      if (id < 0 || static_cast<std::size_t>(id) >= model_.pieces.size())
        fail(errc::index, "sentencepiece decode: id ", id, " is outside the vocabulary of ",
             model_.pieces.size(), " pieces.");
      const sp_piece& p = model_.pieces[static_cast<std::size_t>(id)];
      if (p.type == sp_piece_type::byte) {
        bytes.push_back(static_cast<char>(detail::sp_piece_to_byte(p.piece)));
        continue;
      }
      flush_bytes();
      if (bos_ws_seen || !text.empty()) is_bos_ws = false;
      bos_ws_seen = false;
      if (p.type == sp_piece_type::control) continue;
      if (p.type == sp_piece_type::unknown) {
        text.append(model_.trainer.unk_surface);
        continue;
      }
      std::string_view piece = p.piece;
      if (is_bos_ws && (ns.add_dummy_prefix || ns.remove_extra_whitespaces)) {
        if (piece.substr(0, 3) == detail::sp_space_symbol) {
          piece.remove_prefix(3);
          bos_ws_seen = !ns.remove_extra_whitespaces;
        }
      }
      append_replacing_space(text, piece);
    }
    flush_bytes();
    if (has_denormalizer_) return denormalizer_.normalize(text);
    return text;
  }
  std::string decode(std::initializer_list<std::int32_t> ids) const {
    return decode(std::span<const std::int32_t>(ids.begin(), ids.size()));
  }

  /// The normalized form of text that the segmenter sees ("▁" for spaces, dummy prefix).
  std::string normalize(std::string_view text) const { return normalizer_.normalize(text); }

  std::size_t vocab_size() const noexcept { return model_.pieces.size(); }

  /// Id of a piece, or unk_id() when the vocabulary has no such piece.
  std::int32_t piece_to_id(std::string_view piece) const {
    if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
    if (auto it = pieces_.find(piece); it != pieces_.end()) return it->second;
    return unk_id_;
  }
  /// Piece of an id; index_error outside [0, vocab_size()).
  const sp_piece& piece(std::int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= model_.pieces.size())
      fail(errc::index, "sentencepiece: id ", id, " is outside the vocabulary of ",
           model_.pieces.size(), " pieces.");
    return model_.pieces[static_cast<std::size_t>(id)];
  }
  const std::string& id_to_piece(std::int32_t id) const { return piece(id).piece; }

  std::int32_t unk_id() const noexcept { return unk_id_; }
  /// Id of <s> / </s> / <pad> when the model has them as control pieces, else -1.
  std::int32_t bos_id() const { return control_id(model_.trainer.bos_piece); }
  std::int32_t eos_id() const { return control_id(model_.trainer.eos_piece); }
  std::int32_t pad_id() const { return control_id(model_.trainer.pad_piece); }

  const sp_model_proto& model() const noexcept { return model_; }

 private:
  static void append_replacing_space(std::string& out, std::string_view piece) {
    std::size_t pos = 0;
    while (true) {
      const std::size_t k = piece.find(detail::sp_space_symbol, pos);
      if (k == std::string_view::npos) break;
      out.append(piece.substr(pos, k - pos));
      out.push_back(' ');
      pos = k + detail::sp_space_symbol.size();
    }
    out.append(piece.substr(pos));
  }

  std::int32_t control_id(const std::string& p) const {
    const std::int32_t id = piece_to_id(p);
    return model_.pieces[static_cast<std::size_t>(id)].type == sp_piece_type::control ? id : -1;
  }

  void init() {
    std::vector<std::string> user_defined;
    std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
    min_score_ = FLT_MAX;
    max_score_ = FLT_MIN;
    const auto n = static_cast<std::int32_t>(model_.pieces.size());
    for (std::int32_t i = 0; i < n; ++i) {
      const sp_piece& p = model_.pieces[static_cast<std::size_t>(i)];
      const bool normal_like = p.type == sp_piece_type::normal ||
                               p.type == sp_piece_type::user_defined ||
                               p.type == sp_piece_type::unused;
      (normal_like ? pieces_ : reserved_).emplace(p.piece, i);
      if (p.type == sp_piece_type::user_defined) user_defined.push_back(p.piece);
      if (p.type == sp_piece_type::unknown) unk_id_ = i;
      if (p.type == sp_piece_type::byte)
        byte_ids_[static_cast<std::size_t>(detail::sp_piece_to_byte(p.piece))] = i;
      if (p.type == sp_piece_type::normal) {
        min_score_ = std::min(min_score_, p.score);
        max_score_ = std::max(max_score_, p.score);
      }
      if (normal_like && model_.trainer.model_type == sp_model_type::unigram)
        trie_insert(p.piece, i);
    }
    if (min_score_ == FLT_MAX) min_score_ = 0.0f;
    if (max_score_ == FLT_MIN) max_score_ = 0.0f;
    if (unk_id_ < 0)  // parse_sentencepiece_model guarantees this for parsed models
      fail(errc::value, "sentencepiece: the model has no UNKNOWN piece.");
    if (model_.trainer.byte_fallback)
      for (std::int32_t b : byte_ids_)
        if (b < 0)
          fail(errc::value, "sentencepiece: byte_fallback is set but byte pieces are missing.");
    if (model_.trainer.model_type == sp_model_type::word &&
        model_.trainer.treat_whitespace_as_suffix)
      fail(errc::unsupported,
           "sentencepiece: WORD models with treat_whitespace_as_suffix are not supported.");
    matcher_ = detail::sp_prefix_matcher(user_defined);
    normalizer_ =
        sp_normalizer(model_.normalizer, model_.trainer.treat_whitespace_as_suffix, user_defined);
    if (model_.denormalizer && !model_.denormalizer->precompiled_charsmap.empty()) {
      denormalizer_ = sp_normalizer(*model_.denormalizer, false, {});
      has_denormalizer_ = true;
    }
  }

  // ---- piece trie for UNIGRAM ---------------------------------------------------------------
  void trie_insert(std::string_view s, std::int32_t id) {
    if (trie_ids_.empty()) trie_ids_.push_back(-1);
    std::int32_t node = 0;
    for (char c : s) {
      const std::uint64_t key =
          (static_cast<std::uint64_t>(node) << 8) | static_cast<unsigned char>(c);
      auto it = trie_edges_.find(key);
      if (it == trie_edges_.end()) {
        const auto child = static_cast<std::int32_t>(trie_ids_.size());
        trie_ids_.push_back(-1);
        it = trie_edges_.emplace(key, child).first;
      }
      node = it->second;
    }
    trie_ids_[static_cast<std::size_t>(node)] = id;
  }

  sp_piece_type type_of(std::int32_t id) const {
    return model_.pieces[static_cast<std::size_t>(id)].type;
  }

  // Calls emit(piece, id) for each segment of the normalized string, in order (the
  // EncodeResult of the model, before byte fallback and unknown merging).
  template <class Emit>
  void segment(std::string_view norm, Emit&& emit) const {
    if (norm.empty()) return;
    switch (model_.trainer.model_type) {
      case sp_model_type::unigram:
        return segment_unigram(norm, emit);
      case sp_model_type::bpe:
        return segment_bpe(norm, emit);
      case sp_model_type::word:
        return segment_word(norm, emit);
      case sp_model_type::character:
        return segment_char(norm, emit);
    }
  }

  // sentencepiece/src/unigram_model.cc, Model::EncodeOptimized.
  template <class Emit>
  void segment_unigram(std::string_view norm, Emit& emit) const {
    struct best_node {
      std::int32_t id = -1;
      float score = 0.0f;
      std::int64_t starts_at = -1;
    };
    const std::size_t size = norm.size();
    const float unk_score = min_score_ - 10.0f;  // kUnkPenalty
    std::vector<best_node> best(size + 1);
    std::size_t start = 0;
    while (start < size) {
      const float till_here = best[start].score;
      bool has_single_node = false;
      const std::size_t mblen = std::min(detail::sp_one_char_len(norm[start]), size - start);
      std::int32_t node = 0;
      for (std::size_t k = start; k < size && !trie_ids_.empty(); ++k) {
        const std::uint64_t key =
            (static_cast<std::uint64_t>(node) << 8) | static_cast<unsigned char>(norm[k]);
        const auto it = trie_edges_.find(key);
        if (it == trie_edges_.end()) break;
        node = it->second;
        const std::int32_t id = trie_ids_[static_cast<std::size_t>(node)];
        if (id < 0) continue;
        const sp_piece_type t = type_of(id);
        if (t == sp_piece_type::unused) continue;
        const std::size_t length = k + 1 - start;
        // Scores and path sums are float, as in sentencepiece 0.2.3 (verified on exact ties:
        // summing in double picks the other split).
        const float score =
            t == sp_piece_type::user_defined
                ? static_cast<float>(static_cast<double>(static_cast<float>(length) * max_score_) -
                                     0.1)
                : model_.pieces[static_cast<std::size_t>(id)].score;
        const float cand = score + till_here;
        best_node& target = best[k + 1];
        if (target.starts_at == -1 || cand > target.score) {
          target.score = cand;
          target.starts_at = static_cast<std::int64_t>(start);
          target.id = id;
        }
        if (length == mblen) has_single_node = true;
      }
      if (!has_single_node) {
        best_node& target = best[start + mblen];
        const float cand = unk_score + till_here;
        if (target.starts_at == -1 || cand > target.score) {
          target.score = cand;
          target.starts_at = static_cast<std::int64_t>(start);
          target.id = unk_id_;
        }
      }
      start += mblen;
    }
    std::vector<std::pair<std::size_t, std::size_t>> spans;  // (begin, end) from the back
    std::size_t end = size;
    while (end > 0) {
      const best_node& n = best[end];
      const auto b = static_cast<std::size_t>(n.starts_at);
      spans.emplace_back(b, end);
      end = b;
    }
    for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
      const std::size_t b = it->first, e = it->second;
      emit(norm.substr(b, e - b), best[e].id);
    }
  }

  // sentencepiece/src/bpe_model.cc, Model::SampleEncode with alpha = 0.
  template <class Emit>
  void segment_bpe(std::string_view norm, Emit& emit) const {
    struct symbol {
      std::int32_t prev, next;
      bool freeze;
      std::string_view piece;
    };
    struct pair_entry {
      std::int32_t left, right;
      float score;
      std::size_t size;
    };
    struct worse {  // priority_queue keeps the largest: higher score, then smaller left
      bool operator()(const pair_entry& a, const pair_entry& b) const noexcept {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
      }
    };
    std::vector<symbol> symbols;
    symbols.reserve(norm.size());
    {
      std::string_view rest = norm;
      std::int32_t index = 0;
      while (!rest.empty()) {
        symbol s;
        const std::size_t n = matcher_.match(rest, s.freeze);
        s.piece = rest.substr(0, n);
        s.prev = index - 1;
        rest.remove_prefix(n);
        s.next = rest.empty() ? -1 : index + 1;
        ++index;
        symbols.push_back(s);
      }
    }
    std::priority_queue<pair_entry, std::vector<pair_entry>, worse> agenda;
    std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
    auto maybe_add = [&](std::int32_t l, std::int32_t r) {
      if (l == -1 || r == -1) return;
      const symbol& a = symbols[static_cast<std::size_t>(l)];
      const symbol& b = symbols[static_cast<std::size_t>(r)];
      if (a.freeze || b.freeze) return;
      const std::string_view merged(a.piece.data(), a.piece.size() + b.piece.size());
      const auto it = pieces_.find(merged);
      if (it == pieces_.end()) return;
      agenda.push({l, r, model_.pieces[static_cast<std::size_t>(it->second)].score, merged.size()});
      if (type_of(it->second) == sp_piece_type::unused) rev_merge[merged] = {a.piece, b.piece};
    };
    for (std::size_t i = 1; i < symbols.size(); ++i)
      maybe_add(static_cast<std::int32_t>(i - 1), static_cast<std::int32_t>(i));
    while (!agenda.empty()) {
      const pair_entry top = agenda.top();
      agenda.pop();
      symbol& l = symbols[static_cast<std::size_t>(top.left)];
      symbol& r = symbols[static_cast<std::size_t>(top.right)];
      if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size)
        continue;
      l.piece = std::string_view(l.piece.data(), l.piece.size() + r.piece.size());
      l.next = r.next;
      if (r.next >= 0) symbols[static_cast<std::size_t>(r.next)].prev = top.left;
      r.piece = std::string_view();
      maybe_add(l.prev, top.left);
      maybe_add(top.left, l.next);
    }
    // Re-segments UNUSED pieces into the pair they were merged from (recursively; the depth is
    // bounded by the piece length since each split is strictly shorter).
    std::function<void(std::string_view)> resegment = [&](std::string_view w) {
      const std::int32_t id = piece_to_id(w);
      if (type_of(id) != sp_piece_type::unused) return emit(w, id);
      const auto it = rev_merge.find(w);
      if (it == rev_merge.end()) return emit(w, id);
      resegment(it->second.first);
      resegment(it->second.second);
    };
    for (std::int32_t i = 0; i != -1; i = symbols[static_cast<std::size_t>(i)].next)
      resegment(symbols[static_cast<std::size_t>(i)].piece);
  }

  // sentencepiece/src/word_model.cc: a word starts at the beginning and at every "▁".
  template <class Emit>
  void segment_word(std::string_view norm, Emit& emit) const {
    std::size_t begin = 0, pos = 0;
    while (pos < norm.size()) {
      const std::size_t n = std::min(detail::sp_one_char_len(norm[pos]), norm.size() - pos);
      if (pos > begin && norm.substr(pos, n) == detail::sp_space_symbol) {
        emit(norm.substr(begin, pos - begin), piece_to_id(norm.substr(begin, pos - begin)));
        begin = pos;
      }
      pos += n;
    }
    if (pos > begin) emit(norm.substr(begin), piece_to_id(norm.substr(begin)));
  }

  // sentencepiece/src/char_model.cc: one character (or user-defined symbol) per piece.
  template <class Emit>
  void segment_char(std::string_view norm, Emit& emit) const {
    while (!norm.empty()) {
      bool found = false;
      const std::size_t n = matcher_.match(norm, found);
      emit(norm.substr(0, n), piece_to_id(norm.substr(0, n)));
      norm.remove_prefix(n);
    }
  }

  sp_model_proto model_;
  detail::sp_piece_map pieces_;    // NORMAL, USER_DEFINED, UNUSED
  detail::sp_piece_map reserved_;  // UNKNOWN, CONTROL, BYTE
  std::int32_t unk_id_ = -1;
  std::int32_t byte_ids_[256] = {};  // byte -> id, -1 when absent
  float min_score_ = 0.0f, max_score_ = 0.0f;
  std::vector<std::int32_t> trie_ids_;                          // node -> piece id or -1
  std::unordered_map<std::uint64_t, std::int32_t> trie_edges_;  // (node << 8 | byte) -> child
  detail::sp_prefix_matcher matcher_;
  sp_normalizer normalizer_;
  sp_normalizer denormalizer_;
  bool has_denormalizer_ = false;
};

TFM_END_NAMESPACE
