// typeformer/tokenizer/detail/bpe_tables.hpp
//
// Internal lookup structures of the byte-level BPE tokenizer: the GPT-2 byte <-> character map,
// an open-addressing index from token bytes to id, and an open-addressing table from an id pair
// to (merge rank, merged id). Plus file reading and base64 used by the loaders.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace detail::bpe {

// ---- GPT-2 bytes_to_unicode (openai/gpt-2 src/encoder.py) --------------------------------------
// Printable bytes 33..126, 161..172, 174..255 map to the code point of the same value; the other
// 68 bytes map, in increasing order, to U+0100, U+0101, ...

inline constexpr std::array<char32_t, 256> byte_to_char = [] {
  std::array<char32_t, 256> a{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    a[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
  }
  return a;
}();

/// Byte for a byte-level character, or -1 when cp is not one of the 256.
inline int char_to_byte(char32_t cp) noexcept {
  if (cp < 256) {
    const bool printable = (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174);
    return printable ? static_cast<int>(cp) : -1;
  }
  if (cp >= 256 && cp < 256 + 68) {
    static constexpr std::array<unsigned char, 68> rest = [] {
      std::array<unsigned char, 68> r{};
      int k = 0;
      for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        if (!printable) r[static_cast<std::size_t>(k++)] = static_cast<unsigned char>(b);
      }
      return r;
    }();
    return rest[cp - 256];
  }
  return -1;
}

/// Byte-level text (as in encoder.json / tokenizer.json) -> raw bytes; nullopt if a character is
/// not one of the 256 byte-level characters or the text is not valid UTF-8.
inline std::optional<std::string> unmap_bytes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const utf8::decoded d = utf8::decode(s, i);
    if (!d.valid) return std::nullopt;
    const int b = char_to_byte(d.cp);
    if (b < 0) return std::nullopt;
    out.push_back(static_cast<char>(b));
    i += d.length;
  }
  return out;
}

/// Raw bytes -> byte-level text.
inline std::string map_bytes(std::string_view s) {
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char b : s) utf8::append(out, byte_to_char[b]);
  return out;
}

// ---- hashing -------------------------------------------------------------------------------

inline std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ULL;
  x ^= x >> 32;
  x *= 0xd6e8feb86659fd93ULL;
  x ^= x >> 32;
  return x;
}

inline std::uint64_t hash_bytes(std::string_view s) noexcept {
  std::uint64_t h = 0x9E3779B97F4A7C15ULL ^ (s.size() * 0xff51afd7ed558ccdULL);
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
  }
  if (i < s.size()) {
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 31;
  }
  return mix64(h);
}

inline std::size_t table_capacity(std::size_t n) {
  std::size_t cap = 16;
  while (cap < n * 2 + 1) cap <<= 1;
  return cap;
}

/// bytes -> id over an external id -> bytes array (the tokenizer's token list).
class token_index {
 public:
  void build(const std::vector<std::string>& tokens, const std::vector<std::uint8_t>& present) {
    std::size_t n = 0;
    for (auto p : present) n += p;
    const std::size_t cap = table_capacity(n);
    mask_ = cap - 1;
    slots_.assign(cap, slot{});
    for (std::size_t id = 0; id < tokens.size(); ++id) {
      if (!present[id]) continue;
      const std::uint64_t h = hash_bytes(tokens[id]);
      std::size_t i = h & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = slot{static_cast<std::int32_t>(id), static_cast<std::uint32_t>(h >> 32)};
    }
  }

  /// The id whose bytes equal s, or -1.
  std::int32_t find(std::string_view s, const std::vector<std::string>& tokens) const noexcept {
    if (slots_.empty()) return -1;
    const std::uint64_t h = hash_bytes(s);
    const auto tag = static_cast<std::uint32_t>(h >> 32);
    std::size_t i = h & mask_;
    for (;;) {
      const slot& sl = slots_[i];
      if (sl.id < 0) return -1;
      if (sl.tag == tag && tokens[static_cast<std::size_t>(sl.id)] == s) return sl.id;
      i = (i + 1) & mask_;
    }
  }

 private:
  struct slot {
    std::int32_t id = -1;
    std::uint32_t tag = 0;
  };
  std::vector<slot> slots_;
  std::size_t mask_ = 0;
};

/// (left id, right id) -> (rank, merged id).
class pair_table {
 public:
  static constexpr std::uint32_t no_rank = std::numeric_limits<std::uint32_t>::max();
  struct entry {
    std::uint32_t rank = no_rank;
    std::int32_t id = -1;
  };

  void reserve(std::size_t n) {
    const std::size_t cap = table_capacity(n);
    mask_ = cap - 1;
    shift_ = 64;
    for (std::size_t c = cap; c > 1; c >>= 1) --shift_;
    keys_.assign(cap, empty_key);
    vals_.assign(cap, entry{});
    size_ = 0;
  }

  /// Inserts or overwrites (later merges of the same pair win, as in Hugging Face tokenizers).
  void insert(std::int32_t a, std::int32_t b, std::uint32_t rank, std::int32_t id) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    const std::uint64_t k = key(a, b);
    std::size_t i = slot_of(k);
    while (keys_[i] != empty_key && keys_[i] != k) i = (i + 1) & mask_;
    if (keys_[i] == empty_key) ++size_;
    keys_[i] = k;
    vals_[i] = entry{rank, id};
  }

  /// Inserts only when the pair is absent or has a larger rank.
  void insert_min(std::int32_t a, std::int32_t b, std::uint32_t rank, std::int32_t id) {
    const entry e = find(a, b);
    if (e.rank == no_rank || rank < e.rank) insert(a, b, rank, id);
  }

  entry find(std::int32_t a, std::int32_t b) const noexcept {
    if (keys_.empty()) return {};
    const std::uint64_t k = key(a, b);
    std::size_t i = slot_of(k);
    for (;;) {
      const std::uint64_t kk = keys_[i];
      if (kk == k) return vals_[i];
      if (kk == empty_key) return {};
      i = (i + 1) & mask_;
    }
  }

  std::size_t size() const noexcept { return size_; }

 private:
  static constexpr std::uint64_t empty_key = ~std::uint64_t{0};
  static std::uint64_t key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }
  std::size_t slot_of(std::uint64_t k) const noexcept {
    return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ULL) >> shift_) & mask_;
  }
  void grow() {
    std::vector<std::uint64_t> ok = std::move(keys_);
    std::vector<entry> ov = std::move(vals_);
    reserve(ok.empty() ? 16 : ok.size());
    for (std::size_t i = 0; i < ok.size(); ++i)
      if (ok[i] != empty_key)
        insert(static_cast<std::int32_t>(ok[i] >> 32),
               static_cast<std::int32_t>(ok[i] & 0xffffffffu), ov[i].rank, ov[i].id);
  }

  std::vector<std::uint64_t> keys_;
  std::vector<entry> vals_;
  std::size_t mask_ = 0;
  unsigned shift_ = 64;
  std::size_t size_ = 0;
};

// ---- files and base64 ------------------------------------------------------------------------

/// Whole file as bytes; io_error when it cannot be read, parse_error beyond max_bytes.
inline std::string read_file(const std::string& path,
                             std::size_t max_bytes = std::size_t{1} << 31) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(errc::io, "cannot open '", path, "' for reading.");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) fail(errc::io, "cannot determine the size of '", path, "'.");
  if (static_cast<std::uint64_t>(size) > max_bytes)
    fail(errc::parse, "'", path, "' has ", static_cast<std::int64_t>(size),
         " bytes, more than the limit of ", max_bytes, ".");
  f.seekg(0, std::ios::beg);
  std::string data(static_cast<std::size_t>(size), '\0');
  if (size > 0 && !f.read(data.data(), size)) fail(errc::io, "cannot read '", path, "'.");
  return data;
}

/// Writes bytes to path (truncating); io_error on failure.
inline void write_file(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(errc::io, "cannot open '", path, "' for writing.");
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.flush();
  if (!f) fail(errc::io, "cannot write '", path, "'.");
}

/// Standard base64 (RFC 4648 section 4, with padding) decoding; nullopt on any invalid input.
inline std::optional<std::string> base64_decode(std::string_view s) {
  if (s.size() % 4 != 0) return std::nullopt;
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(s.size() / 4 * 3);
  for (std::size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s[i + static_cast<std::size_t>(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad) return std::nullopt;  // data after padding
      v[k] = val(c);
      if (v[k] < 0) return std::nullopt;
    }
    const std::uint32_t w =
        (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
        (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    out.push_back(static_cast<char>((w >> 16) & 0xFF));
    if (pad < 2) out.push_back(static_cast<char>((w >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<char>(w & 0xFF));
  }
  return out;
}

inline std::string base64_encode(std::string_view s) {
  static constexpr char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((s.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= s.size(); i += 3) {
    const std::uint32_t w =
        (static_cast<std::uint32_t>(static_cast<unsigned char>(s[i])) << 16) |
        (static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + 1])) << 8) |
        static_cast<unsigned char>(s[i + 2]);
    out.push_back(tab[(w >> 18) & 63]);
    out.push_back(tab[(w >> 12) & 63]);
    out.push_back(tab[(w >> 6) & 63]);
    out.push_back(tab[w & 63]);
  }
  const std::size_t rest = s.size() - i;
  if (rest) {
    std::uint32_t w = static_cast<std::uint32_t>(static_cast<unsigned char>(s[i])) << 16;
    if (rest == 2) w |= static_cast<std::uint32_t>(static_cast<unsigned char>(s[i + 1])) << 8;
    out.push_back(tab[(w >> 18) & 63]);
    out.push_back(tab[(w >> 12) & 63]);
    out.push_back(rest == 2 ? tab[(w >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

}  // namespace detail::bpe
TFM_END_NAMESPACE
