// typeformer/tokenizer/sentencepiece_normalizer.hpp
//
// WHAT THIS REPRESENTS
//   SentencePiece's text normalizer (sentencepiece/src/normalizer.cc, Normalizer::Normalize):
//     1. user-defined symbols are copied verbatim (longest match first);
//     2. otherwise the longest rule of the precompiled charsmap that is a prefix of the input is
//        applied (an empty charsmap is the identity normalizer; nmt_nfkc and nfkc models ship
//        theirs in the file, so every built-in rule set works without Unicode tables here);
//     3. otherwise one UTF-8 character is copied; an ill-formed byte becomes U+FFFD and consumes
//        exactly one byte (SentencePiece's documented behaviour);
//   then whitespace is handled per the spec: leading, trailing and repeated spaces removed
//   (remove_extra_whitespaces), "▁" (U+2581) prepended (add_dummy_prefix; appended instead with
//   treat_whitespace_as_suffix), and ' ' replaced by "▁" (escape_whitespaces).
//
// PRECOMPILED CHARSMAP FORMAT (normalizer.cc, DecodePrecompiledCharsMap)
//   uint32 little-endian trie_size | darts-clone double array (trie_size bytes, uint32 units) |
//   NUL-terminated replacement strings. A trie value is a byte offset into the strings blob.
//   Every unit access is bounds-checked; a charsmap whose blob does not end in NUL, whose
//   trie size is not a multiple of 4, or that points outside the blob is rejected (parse_error).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/sentencepiece_model.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace detail {

/// "▁" U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's whitespace marker.
inline constexpr std::string_view sp_space_symbol = "\xE2\x96\x81";

/// Length of the UTF-8 character whose lead byte is `b`, from the lead byte alone (SentencePiece's
/// string_util::OneCharLen). Callers clip it to the bytes that remain.
constexpr std::size_t sp_one_char_len(char b) noexcept {
  constexpr unsigned char table[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return table[static_cast<unsigned char>(b) >> 4];
}

/// Longest-match of user-defined symbols (SentencePiece's PrefixMatcher).
class sp_prefix_matcher {
 public:
  sp_prefix_matcher() = default;
  explicit sp_prefix_matcher(const std::vector<std::string>& symbols) {
    for (const auto& s : symbols) {
      if (s.empty()) continue;
      lengths_.push_back(s.size());
      set_.insert(s);
    }
    std::sort(lengths_.begin(), lengths_.end(), std::greater<>());
    lengths_.erase(std::unique(lengths_.begin(), lengths_.end()), lengths_.end());
  }

  /// Length of the longest symbol that is a prefix of w (found = true), else the length of
  /// one character clipped to w (found = false). Requires !w.empty().
  std::size_t match(std::string_view w, bool& found) const {
    for (std::size_t n : lengths_) {
      if (n <= w.size() && set_.count(std::string(w.substr(0, n)))) {
        found = true;
        return n;
      }
    }
    found = false;
    return std::min(w.size(), sp_one_char_len(w[0]));
  }
  bool empty() const noexcept { return lengths_.empty(); }

 private:
  std::unordered_set<std::string> set_;
  std::vector<std::size_t> lengths_;  // distinct lengths, longest first
};

/// A read-only darts-clone double array with bounds checks (github.com/s-yata/darts-clone,
/// include/darts.h: DoubleArrayUnit and commonPrefixSearch).
class sp_darts {
 public:
  sp_darts() = default;
  explicit sp_darts(std::vector<std::uint32_t> units) : units_(std::move(units)) {}
  bool empty() const noexcept { return units_.empty(); }

  /// Calls on_match(value, length) for every key in the trie that is a prefix of `key`, shortest
  /// first.
  template <class F>
  void common_prefix_search(std::string_view key, F&& on_match) const {
    if (units_.empty()) return;
    std::size_t pos = offset(units_[0]);
    for (std::size_t i = 0; i < key.size(); ++i) {
      const auto c = static_cast<unsigned char>(key[i]);
      pos ^= c;
      if (pos >= units_.size()) return;
      const std::uint32_t unit = units_[pos];
      if (label(unit) != c) return;
      pos ^= offset(unit);
      if (has_leaf(unit)) {
        if (pos >= units_.size()) return;
        on_match(value(units_[pos]), i + 1);
      }
    }
  }

 private:
  static constexpr bool has_leaf(std::uint32_t u) noexcept { return ((u >> 8) & 1) == 1; }
  static constexpr std::uint32_t value(std::uint32_t u) noexcept { return u & 0x7FFFFFFFu; }
  static constexpr std::uint32_t label(std::uint32_t u) noexcept { return u & 0x800000FFu; }
  static constexpr std::size_t offset(std::uint32_t u) noexcept {
    return static_cast<std::size_t>((u >> 10) << ((u & (1u << 9)) >> 6));
  }
  std::vector<std::uint32_t> units_;
};

}  // namespace detail

/// SentencePiece normalization of one input string; see the file comment.
class sp_normalizer {
 public:
  sp_normalizer() = default;

  /// `user_defined` are the USER_DEFINED pieces of the model (copied verbatim when matched).
  sp_normalizer(const sp_normalizer_spec& spec, bool treat_whitespace_as_suffix,
                const std::vector<std::string>& user_defined)
      : spec_(spec), suffix_(treat_whitespace_as_suffix), matcher_(user_defined) {
    load_charsmap(spec.precompiled_charsmap);
  }

  const sp_normalizer_spec& spec() const noexcept { return spec_; }

  /// The normalized form of input (valid UTF-8 whenever the charsmap's strings are).
  std::string normalize(std::string_view input) const {
    std::string out;
    if (input.empty()) return out;
    if (spec_.remove_extra_whitespaces) {
      while (!input.empty()) {
        const auto p = normalize_prefix(input);
        if (p.first != " ") break;
        input.remove_prefix(p.second);
      }
    }
    if (input.empty()) return out;
    out.reserve(input.size() * 3 / 2 + 3);
    const std::string_view ws = spec_.escape_whitespaces ? detail::sp_space_symbol : " ";
    bool is_prev_space = spec_.remove_extra_whitespaces;
    if (!suffix_ && spec_.add_dummy_prefix) out.append(ws);
    while (!input.empty()) {
      const auto p = normalize_prefix(input);
      std::string_view sp = p.first;
      while (is_prev_space && !sp.empty() && sp.front() == ' ') sp.remove_prefix(1);
      if (!sp.empty()) {
        for (char c : sp) {
          if (spec_.escape_whitespaces && c == ' ')
            out.append(detail::sp_space_symbol);
          else
            out.push_back(c);
        }
        is_prev_space = sp.back() == ' ';
      }
      input.remove_prefix(p.second);
      if (!spec_.remove_extra_whitespaces) is_prev_space = false;
    }
    if (spec_.remove_extra_whitespaces) {
      while (out.size() >= ws.size() && std::string_view(out).substr(out.size() - ws.size()) == ws)
        out.resize(out.size() - ws.size());
    }
    if (suffix_ && spec_.add_dummy_prefix) out.append(ws);
    return out;
  }

 private:
  // (replacement, bytes of input consumed) for the longest rule at the start of input.
  std::pair<std::string_view, std::size_t> normalize_prefix(std::string_view input) const {
    if (!matcher_.empty()) {
      bool found = false;
      const std::size_t n = matcher_.match(input, found);
      if (found) return {input.substr(0, n), n};
    }
    std::size_t longest = 0;
    std::uint32_t value = 0;
    trie_.common_prefix_search(input, [&](std::uint32_t v, std::size_t len) {
      if (len > longest) {
        longest = len;
        value = v;
      }
    });
    if (longest == 0) {
      const utf8::decoded d = utf8::decode(input, 0);
      if (!d.valid) return {std::string_view("\xEF\xBF\xBD"), 1};
      return {input.substr(0, d.length), d.length};
    }
    // strings_ ends in NUL (checked at load), so any in-range value starts a terminated string.
    if (value >= strings_.size())
      fail(errc::parse, "sentencepiece model: a precompiled_charsmap rule points at byte ", value,
           " of a ", strings_.size(), "-byte string table.");
    return {std::string_view(strings_.data() + value), longest};
  }

  void load_charsmap(std::string_view blob) {
    if (blob.empty()) return;
    constexpr const char* what = "sentencepiece model: precompiled_charsmap";
    if (blob.size() <= 4) fail(errc::parse, what, " is only ", blob.size(), " bytes long.");
    const std::uint32_t trie_size =
        static_cast<std::uint32_t>(static_cast<unsigned char>(blob[0])) |
        static_cast<std::uint32_t>(static_cast<unsigned char>(blob[1])) << 8 |
        static_cast<std::uint32_t>(static_cast<unsigned char>(blob[2])) << 16 |
        static_cast<std::uint32_t>(static_cast<unsigned char>(blob[3])) << 24;
    if (trie_size >= blob.size() - 4)
      fail(errc::parse, what, ": trie size ", trie_size, " exceeds the ", blob.size() - 4,
           " bytes that follow it.");
    if (trie_size % 4 != 0 || trie_size == 0)
      fail(errc::parse, what, ": trie size ", trie_size, " is not a positive multiple of 4.");
    std::vector<std::uint32_t> units(trie_size / 4);
    for (std::size_t i = 0; i < units.size(); ++i) {
      const char* p = blob.data() + 4 + 4 * i;
      units[i] = static_cast<std::uint32_t>(static_cast<unsigned char>(p[0])) |
                 static_cast<std::uint32_t>(static_cast<unsigned char>(p[1])) << 8 |
                 static_cast<std::uint32_t>(static_cast<unsigned char>(p[2])) << 16 |
                 static_cast<std::uint32_t>(static_cast<unsigned char>(p[3])) << 24;
    }
    strings_ = std::string(blob.substr(4 + trie_size));
    if (strings_.back() != '\0')
      fail(errc::parse, what, ": the replacement strings are not NUL-terminated.");
    trie_ = detail::sp_darts(std::move(units));
  }

 private:
  sp_normalizer_spec spec_;
  bool suffix_ = false;
  detail::sp_prefix_matcher matcher_;
  detail::sp_darts trie_;
  std::string strings_;
};

TFM_END_NAMESPACE
