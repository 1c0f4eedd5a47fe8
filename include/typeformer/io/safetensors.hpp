// typeformer/io/safetensors.hpp
//
// WHAT THIS REPRESENTS
//   Reading and writing safetensors files (https://github.com/huggingface/safetensors, the format
//   of Hugging Face checkpoints), single files and sharded checkpoints
//   (`model.safetensors.index.json` + `model-0000k-of-0000n.safetensors`).
//
//   File layout (little-endian):
//     u64 N | N bytes of UTF-8 JSON header | data section (the rest of the file)
//   The header is one JSON object: an optional "__metadata__" entry (string -> string) and, per
//   tensor, {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} where the offsets are
//   bytes relative to the start of the data section. Elements are row-major, little-endian.
//
//   tfm::io::safetensors::file        one file, memory mapped (tensor bytes are never copied),
//                                     or parsed from a caller's byte span (from_bytes)
//   tfm::io::safetensors::tensor_set  the tensors of one file or of every shard of a sharded
//                                     checkpoint, as one set (open(path) takes a .safetensors
//                                     file, an index .json or a directory)
//   tfm::io::safetensors::writer      collects tensors and metadata, writes one file or shards
//                                     plus an index
//
// VALIDATION (before anything is allocated in proportion to a number read from the file; the
// reference is safetensors' Rust crate, tensor.rs: read_metadata and Metadata::validate)
//   - the file has at least 8 bytes; N <= limits::max_header_bytes (100'000'000 as the reference);
//     8 + N <= file size; the header is valid UTF-8 and one JSON object (RFC 8259; whitespace
//     around it, the reference's space padding included, is allowed; a byte order mark is not);
//   - every tensor entry is an object with exactly one "dtype" (a known dtype name, see
//     dtype_table), one "shape" (array of integers in [0, 2^63-1], at most limits::max_rank) and
//     one "data_offsets" (array of exactly two integers in [0, 2^64-1]); other members are
//     ignored, as the reference ignores them; "__metadata__" is null or an object of strings;
//   - duplicate keys anywhere (tensor names, fields, metadata keys) are refused (the reference
//     silently keeps the last one; a checkpoint where two tensors share a name is not one we load);
//   - the element count (the product of the non-zero dimensions, checked) fits in 2^63-1, and
//     count * dtype size == end - begin exactly, begin <= end <= size of the data section;
//   - sorted by (begin, end), the tensors cover the data section from 0 to its last byte with no
//     hole and no overlap (the reference's InvalidOffset / MetadataIncompleteBuffer).
//   Every failure is a tfm::parse_error whose message names the file, the tensor and the field
//   and gives the byte offset in the file. Dtypes the format defines but this reader does not
//   (the sub-byte F4, F6_E2M3, F6_E3M2) are a tfm::unsupported_error.
//
// JSON: the header has its own pull parser (no document tree, so memory stays within a small
//   factor of N even for hostile headers; integers exact to 2^64-1 as the offsets need). The
//   index file is parsed with tokenizer/detail/json.hpp, whose integers are int64 (total_size
//   is the only number read there).
//
// WRITING (matches safetensors.numpy.save_file byte for byte when metadata has at most one key)
//   Tensors are stored in the reference's order: by dtype, larger alignment first (the order of
//   the reference's Dtype enum, descending), then by name (bytewise); the header lists them in
//   the same order, compact JSON, "__metadata__" first with its keys sorted (the reference emits
//   them in hash order, which is why two or more keys can differ from its output), then padded
//   with spaces to a multiple of 8 bytes. Every tensor therefore starts at a multiple of its
//   element size (the header length is a multiple of 8).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/io/mmap.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io::safetensors {

// ============================================================================================
// Element types

/// The dtypes this library reads and writes. The enumerators follow the order of the reference's
/// Dtype enum (safetensors 0.8, sub-byte types left out), which the writer uses to sort tensors.
enum class dtype : std::uint8_t {
  boolean,
  u8,
  i8,
  f8_e5m2,
  f8_e4m3,
  f8_e8m0,
  f8_e4m3fnuz,
  f8_e5m2fnuz,
  i16,
  u16,
  f16,
  bf16,
  i32,
  u32,
  f32,
  c64,
  f64,
  i64,
  u64,
};

/// One row of the dtype table: the name in the file, bytes per element, and whether elements
/// can be converted by copy() (the 8-bit floats and complex64 are read as raw bytes only).
struct dtype_info {
  dtype type;
  std::string_view name;
  std::uint8_t size;
  bool convertible;
};

/// Every dtype, in enum order. The one place that names them (reader, writer, messages).
inline constexpr std::array<dtype_info, 19> dtype_table{{
    {dtype::boolean, "BOOL", 1, true},
    {dtype::u8, "U8", 1, true},
    {dtype::i8, "I8", 1, true},
    {dtype::f8_e5m2, "F8_E5M2", 1, false},
    {dtype::f8_e4m3, "F8_E4M3", 1, false},
    {dtype::f8_e8m0, "F8_E8M0", 1, false},
    {dtype::f8_e4m3fnuz, "F8_E4M3FNUZ", 1, false},
    {dtype::f8_e5m2fnuz, "F8_E5M2FNUZ", 1, false},
    {dtype::i16, "I16", 2, true},
    {dtype::u16, "U16", 2, true},
    {dtype::f16, "F16", 2, true},
    {dtype::bf16, "BF16", 2, true},
    {dtype::i32, "I32", 4, true},
    {dtype::u32, "U32", 4, true},
    {dtype::f32, "F32", 4, true},
    {dtype::c64, "C64", 8, false},
    {dtype::f64, "F64", 8, true},
    {dtype::i64, "I64", 8, true},
    {dtype::u64, "U64", 8, true},
}};

constexpr const dtype_info& info_of(dtype d) noexcept {
  return dtype_table[static_cast<std::size_t>(d)];
}
/// "F32", "BF16", ... as written in files.
constexpr std::string_view dtype_name(dtype d) noexcept { return info_of(d).name; }
/// Bytes per element.
constexpr std::size_t dtype_size(dtype d) noexcept { return info_of(d).size; }
/// The dtype named `name` in a file, or nothing.
constexpr std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  for (const auto& row : dtype_table)
    if (row.name == name) return row.type;
  return std::nullopt;
}

namespace detail {
template <class T>
constexpr std::optional<dtype> dtype_of_impl() noexcept {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, double>) return dtype::f64;
  if constexpr (std::is_same_v<U, float>) return dtype::f32;
  if constexpr (std::is_same_v<U, f16>) return dtype::f16;
  if constexpr (std::is_same_v<U, bf16>) return dtype::bf16;
  if constexpr (std::is_same_v<U, std::int64_t>) return dtype::i64;
  if constexpr (std::is_same_v<U, std::int32_t>) return dtype::i32;
  if constexpr (std::is_same_v<U, std::int16_t>) return dtype::i16;
  if constexpr (std::is_same_v<U, std::int8_t>) return dtype::i8;
  if constexpr (std::is_same_v<U, std::uint64_t>) return dtype::u64;
  if constexpr (std::is_same_v<U, std::uint32_t>) return dtype::u32;
  if constexpr (std::is_same_v<U, std::uint16_t>) return dtype::u16;
  if constexpr (std::is_same_v<U, std::uint8_t>) return dtype::u8;
  if constexpr (std::is_same_v<U, bool>) return dtype::boolean;
  return std::nullopt;
}
}  // namespace detail

/// True for the C++ element types that have a safetensors dtype.
template <class T>
inline constexpr bool has_dtype_v = detail::dtype_of_impl<T>().has_value();

/// The safetensors dtype of a C++ element type (double F64, float F32, tfm::f16, tfm::bf16,
/// int64/32/16/8, uint64/32/16/8, bool BOOL).
template <class T>
requires has_dtype_v<T>
constexpr dtype dtype_of() noexcept { return *detail::dtype_of_impl<T>(); }

static_assert(sizeof(bool) == 1, "tfm::io::safetensors: BOOL elements are one byte");

// ============================================================================================
// Reader

/// Caps the reader enforces before it allocates.
struct limits {
  /// Header bytes (N); the reference refuses more than 100'000'000.
  std::uint64_t max_header_bytes = 100'000'000;
  /// Dimensions per tensor (numpy's NPY_MAXDIMS is 64, so Python never writes more).
  std::size_t max_rank = 64;
  /// Nesting depth of ignored members inside a tensor entry.
  std::size_t max_depth = 32;
};

/// One tensor of a file.
struct tensor_info {
  std::string name;
  safetensors::dtype type = safetensors::dtype::u8;
  std::vector<index_t> shape;        ///< empty for a scalar
  std::uint64_t begin = 0, end = 0;  ///< "data_offsets": bytes into the data section
  std::uint64_t file_offset = 0;     ///< byte offset of the first element in the file
  std::span<const std::byte> bytes;  ///< the elements (borrowed from the file's bytes)
  std::uint64_t header_offset = 0;   ///< byte offset of its entry in the file (messages)

  /// Number of elements (1 for a scalar, 0 when a dimension is 0).
  index_t numel() const noexcept {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }
  std::size_t rank() const noexcept { return shape.size(); }
};

namespace detail {

inline std::uint64_t load_le64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(std::to_integer<unsigned>(p[i])) << (8 * i);
  return v;
}

/// A tensor name or key as a JSON string for messages, cut after 96 bytes.
inline std::string quoted(std::string_view s) {
  std::string out;
  const bool cut = s.size() > 96;
  ::tfm::detail::json::append_quoted(out, cut ? s.substr(0, 96) : s);
  if (cut) out += "...";
  return out;
}

inline std::string shape_string(const std::vector<index_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

/// The pieces of a parsed header, before the layout checks.
struct parsed_header {
  std::vector<tensor_info> tensors;  // header order
  std::map<std::string, std::string, std::less<>> metadata;
  bool has_metadata = false;
};

/// Pull parser for the header object. Positions in messages are file offsets (8 + index).
class header_parser {
 public:
  header_parser(std::string_view text, std::string_view file, const limits& lim)
      : s_(text), file_(file), lim_(lim) {}

  parsed_header run() {
    parsed_header out;
    skip_ws();
    if (!peek_is('{')) error("the header must be a JSON object (expected '{')");
    ++pos_;
    skip_ws();
    if (!peek_is('}')) {
      for (;;) {
        skip_ws();
        const std::size_t key_pos = pos_;
        if (!peek_is('"')) error("expected a string key (a tensor name)");
        std::string key = parse_string();
        colon();
        if (key == "__metadata__") {
          if (seen_metadata_) {
            pos_ = key_pos;
            error("duplicate key \"__metadata__\"");
          }
          seen_metadata_ = true;
          parse_metadata(out);
        } else {
          out.tensors.push_back(parse_entry(std::move(key), key_pos));
        }
        skip_ws();
        if (peek_is(',')) {
          ++pos_;
          continue;
        }
        if (peek_is('}')) break;
        error("expected ',' or '}' after a header entry");
      }
    }
    ++pos_;  // '}'
    skip_ws();
    if (pos_ != s_.size())
      error("unexpected data after the header object (only spaces may pad it)");
    return out;
  }

 private:
  [[noreturn]] void error(std::string_view what) const {
    fail(errc::parse, "tfm::io::safetensors: '", file_, "': ", context_, what, " at byte ",
         8 + pos_, ".");
  }

  bool peek_is(char c) const noexcept { return pos_ < s_.size() && s_[pos_] == c; }
  void skip_ws() noexcept {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void colon() {
    skip_ws();
    if (!peek_is(':')) error("expected ':' after a key");
    ++pos_;
    skip_ws();
  }
  const char* kind_here() const noexcept {
    if (pos_ >= s_.size()) return "the end of the header";
    switch (s_[pos_]) {
      case '"':
        return "a string";
      case '{':
        return "an object";
      case '[':
        return "an array";
      case 't':
      case 'f':
        return "a boolean";
      case 'n':
        return "null";
      default:
        return (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) ? "a number"
                                                                         : "an invalid token";
    }
  }

  unsigned hex4() {
    if (s_.size() - pos_ < 4) error("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k, ++pos_) {
      const char c = s_[pos_];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        error("invalid hexadecimal digit in a \\u escape");
    }
    return v;
  }

  // The header was checked to be valid UTF-8 as a whole, so multi-byte sequences are copied.
  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      std::size_t j = pos_;
      while (j < s_.size() && s_[j] != '"' && s_[j] != '\\' &&
             static_cast<unsigned char>(s_[j]) >= 0x20)
        ++j;
      out.append(s_.data() + pos_, j - pos_);
      pos_ = j;
      if (pos_ >= s_.size()) error("unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c != '\\') error("unescaped control character in a string");
      if (++pos_ >= s_.size()) error("unterminated escape in a string");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          char32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(pos_, 2) != "\\u") error("high surrogate not followed by a \\u escape");
            pos_ += 2;
            const char32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8::append(out, cp);
          break;
        }
        default:
          --pos_;
          error("invalid escape character in a string");
      }
    }
  }

  /// A JSON integer in [0, 2^64-1], exactly. `what` names the value in messages.
  std::uint64_t parse_u64(const char* what) {
    const std::size_t start = pos_;
    if (peek_is('-')) error(std::string(what) + " must be a non-negative integer, found '-'");
    if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9')
      error(std::string(what) + " must be a non-negative integer, found " + kind_here());
    std::uint64_t v = 0;
    bool overflow = false;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      const auto d = static_cast<std::uint64_t>(s_[pos_] - '0');
      if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) overflow = true;
      v = v * 10 + d;
      ++pos_;
    }
    if (s_[start] == '0' && pos_ - start > 1) {
      pos_ = start;
      error(std::string(what) + " has a leading zero (not valid JSON)");
    }
    if (peek_is('.') || peek_is('e') || peek_is('E')) {
      pos_ = start;
      error(std::string(what) + " must be an integer, found a fraction or exponent");
    }
    if (overflow) {
      pos_ = start;
      error(std::string(what) + " is larger than 2^64-1");
    }
    return v;
  }

  /// Skips any JSON value (members of a tensor entry that the format does not define).
  void skip_value(std::size_t depth) {
    if (depth > lim_.max_depth) error("nesting deeper than the limit");
    if (pos_ >= s_.size()) error("unexpected end of the header, expected a value");
    const char c = s_[pos_];
    if (c == '"') {
      (void)parse_string();
    } else if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      skip_ws();
      if (peek_is(close)) {
        ++pos_;
        return;
      }
      for (;;) {
        skip_ws();
        if (c == '{') {
          if (!peek_is('"')) error("expected a string key in an object");
          (void)parse_string();
          colon();
        }
        skip_value(depth + 1);
        skip_ws();
        if (peek_is(',')) {
          ++pos_;
          continue;
        }
        if (peek_is(close)) {
          ++pos_;
          return;
        }
        error(c == '{' ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
      }
    } else if (s_.substr(pos_, 4) == "true" || s_.substr(pos_, 4) == "null") {
      pos_ += 4;
    } else if (s_.substr(pos_, 5) == "false") {
      pos_ += 5;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      skip_number();
    } else {
      error("unexpected character, expected a value");
    }
  }

  void skip_number() {
    auto digits = [&] {
      const std::size_t a = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == a) error("digit expected in a number");
      return pos_ - a;
    };
    if (peek_is('-')) ++pos_;
    const std::size_t int_start = pos_;
    if (digits() > 1 && s_[int_start] == '0') error("leading zero in a number");
    if (peek_is('.')) {
      ++pos_;
      digits();
    }
    if (peek_is('e') || peek_is('E')) {
      ++pos_;
      if (peek_is('+') || peek_is('-')) ++pos_;
      digits();
    }
  }

  void parse_metadata(parsed_header& out) {
    if (s_.substr(pos_, 4) == "null") {  // Option::None in the reference
      pos_ += 4;
      return;
    }
    if (!peek_is('{'))
      error(std::string("\"__metadata__\" must be an object, found ") + kind_here());
    out.has_metadata = true;
    ++pos_;
    skip_ws();
    if (peek_is('}')) {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      const std::size_t key_pos = pos_;
      if (!peek_is('"')) error("expected a string key in \"__metadata__\"");
      std::string key = parse_string();
      colon();
      if (!peek_is('"'))
        error("the value of metadata key " + detail::quoted(key) + " must be a string, found " +
              kind_here());
      std::string value = parse_string();
      if (!out.metadata.emplace(std::move(key), std::move(value)).second) {
        pos_ = key_pos;
        error("duplicate key in \"__metadata__\"");
      }
      skip_ws();
      if (peek_is(',')) {
        ++pos_;
        continue;
      }
      if (peek_is('}')) {
        ++pos_;
        return;
      }
      error("expected ',' or '}' in \"__metadata__\"");
    }
  }

  tensor_info parse_entry(std::string name, std::size_t key_pos) {
    tensor_info t;
    t.name = std::move(name);
    t.header_offset = 8 + key_pos;
    context_ = "tensor " + detail::quoted(t.name) + ": ";
    if (!peek_is('{')) error(std::string("the entry must be an object, found ") + kind_here());
    ++pos_;
    bool have_dtype = false, have_shape = false, have_offsets = false;
    skip_ws();
    if (!peek_is('}')) {
      for (;;) {
        skip_ws();
        const std::size_t field_pos = pos_;
        if (!peek_is('"')) error("expected a string key in the entry");
        const std::string field = parse_string();
        colon();
        auto once = [&](bool& seen) {
          if (seen) {
            pos_ = field_pos;
            error("duplicate field " + detail::quoted(field));
          }
          seen = true;
        };
        if (field == "dtype") {
          once(have_dtype);
          parse_dtype_field(t);
        } else if (field == "shape") {
          once(have_shape);
          parse_shape_field(t);
        } else if (field == "data_offsets") {
          once(have_offsets);
          parse_offsets_field(t);
        } else {
          skip_value(1);
        }
        skip_ws();
        if (peek_is(',')) {
          ++pos_;
          continue;
        }
        if (peek_is('}')) break;
        error("expected ',' or '}' in the entry");
      }
    }
    ++pos_;  // '}'
    if (!have_dtype || !have_shape || !have_offsets) {
      pos_ = key_pos;
      error(std::string("missing field \"") +
            (!have_dtype   ? "dtype"
             : !have_shape ? "shape"
                           : "data_offsets") +
            "\"");
    }
    context_.clear();
    return t;
  }

  void parse_dtype_field(tensor_info& t) {
    if (!peek_is('"')) error(std::string("field \"dtype\" must be a string, found ") + kind_here());
    const std::size_t at = pos_;
    const std::string name = parse_string();
    const auto d = safetensors::parse_dtype(name);
    if (!d) {
      pos_ = at;
      if (name == "F4" || name == "F6_E2M3" || name == "F6_E3M2")
        fail(errc::unsupported, "tfm::io::safetensors: '", file_, "': ", context_, "dtype \"", name,
             "\" (sub-byte, packed) is not supported by this reader, at byte ", 8 + pos_, ".");
      std::string known;
      for (const auto& row : dtype_table) (known += known.empty() ? "" : ", ") += row.name;
      error("unknown dtype " + detail::quoted(name) + " (known: " + known + ")");
    }
    t.type = *d;
  }

  void parse_shape_field(tensor_info& t) {
    if (!peek_is('['))
      error(std::string("field \"shape\" must be an array of integers, found ") + kind_here());
    ++pos_;
    skip_ws();
    if (peek_is(']')) {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      if (t.shape.size() == lim_.max_rank)
        error("field \"shape\" has more than " + std::to_string(lim_.max_rank) + " dimensions");
      const std::size_t at = pos_;
      const std::uint64_t e = parse_u64("a dimension in \"shape\"");
      if (e > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max())) {
        pos_ = at;
        error("a dimension in \"shape\" is larger than 2^63-1");
      }
      t.shape.push_back(static_cast<index_t>(e));
      skip_ws();
      if (peek_is(',')) {
        ++pos_;
        continue;
      }
      if (peek_is(']')) {
        ++pos_;
        return;
      }
      error("expected ',' or ']' in \"shape\"");
    }
  }

  void parse_offsets_field(tensor_info& t) {
    if (!peek_is('['))
      error(std::string("field \"data_offsets\" must be an array of two integers, found ") +
            kind_here());
    ++pos_;
    skip_ws();
    t.begin = parse_u64("the first value of \"data_offsets\"");
    skip_ws();
    if (!peek_is(',')) error("field \"data_offsets\" must hold exactly two integers");
    ++pos_;
    skip_ws();
    t.end = parse_u64("the second value of \"data_offsets\"");
    skip_ws();
    if (!peek_is(']')) error("field \"data_offsets\" must hold exactly two integers");
    ++pos_;
  }

  std::string_view s_;
  std::string_view file_;
  const limits& lim_;
  std::size_t pos_ = 0;
  bool seen_metadata_ = false;
  std::string context_;
};

/// Checks sizes and the layout of the data section; fills file_offset and bytes; sorts the
/// tensors by offset. `data` is the data section, starting at file offset `data_start`.
inline void validate_layout(std::vector<tensor_info>& ts, std::span<const std::byte> data,
                            std::uint64_t data_start, std::string_view file) {
  const std::uint64_t data_size = data.size();
  auto bad = [&](const tensor_info& t, const auto&... what) {
    fail(errc::parse, "tfm::io::safetensors: '", file, "': tensor ", detail::quoted(t.name), ": ",
         what..., " (entry at byte ", t.header_offset, ").");
  };
  for (auto& t : ts) {
    // The element count: the product of the non-zero dimensions must fit in index_t so that
    // strides and sizes computed from the shape never overflow (the reference checks the
    // running product, which this implies).
    std::uint64_t n = 1;
    bool zero = false;
    for (index_t e : t.shape) {
      if (e == 0) {
        zero = true;
        continue;
      }
      const auto u = static_cast<std::uint64_t>(e);
      if (n > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()) / u)
        bad(t, "shape ", shape_string(t.shape), " has more than 2^63-1 elements");
      n *= u;
    }
    if (zero) n = 0;
    const std::uint64_t esize = dtype_size(t.type);
    if (n > std::numeric_limits<std::uint64_t>::max() / esize)
      bad(t, "shape ", shape_string(t.shape), " times the ", dtype_name(t.type),
          " element size overflows 64 bits");
    const std::uint64_t nbytes = n * esize;
    if (t.end < t.begin)
      bad(t, "data_offsets [", t.begin, ", ", t.end, "] are reversed (end before begin)");
    if (t.end > data_size)
      bad(t, "data_offsets [", t.begin, ", ", t.end, "] end past the data section, which has ",
          data_size, " bytes (truncated file?)");
    if (t.end - t.begin != nbytes)
      bad(t, "data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin,
          " bytes but shape ", shape_string(t.shape), " of ", dtype_name(t.type), " needs ",
          nbytes);
    t.file_offset = data_start + t.begin;
    t.bytes = data.subspan(static_cast<std::size_t>(t.begin), static_cast<std::size_t>(nbytes));
  }
  std::stable_sort(ts.begin(), ts.end(), [](const tensor_info& a, const tensor_info& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t at = 0;
  const tensor_info* prev = nullptr;
  for (const auto& t : ts) {
    if (t.begin > at)
      bad(t, "a hole of ", t.begin - at, " bytes in the data section before it (offset ", at, ")");
    if (t.begin < at)
      bad(t, "its data [", t.begin, ", ", t.end, ") overlaps tensor ", detail::quoted(prev->name),
          "'s [", prev->begin, ", ", prev->end, ")");
    at = t.end;
    prev = &t;
  }
  if (at != data_size)
    fail(errc::parse, "tfm::io::safetensors: '", file, "': the tensors cover ", at,
         " bytes of the data section but it has ", data_size, " (", data_size - at,
         " bytes at file offset ", data_start + at, " belong to no tensor).");
}

/// Rejects a BOOL tensor holding bytes other than 0 and 1 (reading them as bool is undefined).
inline void check_bools(const tensor_info& t, std::string_view file) {
  for (std::size_t i = 0; i < t.bytes.size(); ++i) {
    const auto b = std::to_integer<unsigned>(t.bytes[i]);
    if (b > 1)
      fail(errc::parse, "tfm::io::safetensors: '", file, "': BOOL tensor ", detail::quoted(t.name),
           " holds the byte ", b, " (not 0 or 1) at byte ", t.file_offset + i, ".");
  }
}

template <shape_type S>
S make_shape(const tensor_info& t, std::string_view file, const char* fn) {
  if (t.shape.size() != S::rank)
    fail(errc::shape, "tfm::io::safetensors::", fn, ": tensor ", detail::quoted(t.name), " of '",
         file, "' has rank ", t.shape.size(), " (shape ", shape_string(t.shape), "), not ", S::rank,
         ".");
  std::array<index_t, S::rank> ext{};
  for (std::size_t i = 0; i < S::rank; ++i) ext[i] = t.shape[i];
  return S::from_extents(ext);
}

template <class T, shape_type S>
tensor_view<const T, S> make_view(const tensor_info& t, std::string_view file) {
  static_assert(has_dtype_v<T>, "tfm::io::safetensors::view: T must have a safetensors dtype");
  if constexpr (std::endian::native != std::endian::little)
    fail(errc::unsupported,
         "tfm::io::safetensors::view: the data is little-endian and this host "
         "is not; use copy().");
  if (t.type != dtype_of<T>())
    fail(errc::value, "tfm::io::safetensors::view: tensor ", detail::quoted(t.name), " of '", file,
         "' has dtype ", dtype_name(t.type), ", not ", dtype_name(dtype_of<T>()),
         " (use copy<T>() to convert).");
  const S s = make_shape<S>(t, file, "view");
  if (!t.bytes.empty() && reinterpret_cast<std::uintptr_t>(t.bytes.data()) % alignof(T) != 0)
    fail(errc::value, "tfm::io::safetensors::view: tensor ", detail::quoted(t.name), " of '", file,
         "' starts at byte ", t.file_offset, ", not a multiple of ", alignof(T),
         " in memory; use copy() for misaligned data.");
  if constexpr (std::is_same_v<T, bool>) check_bools(t, file);
  return tensor_view<const T, S>(reinterpret_cast<const T*>(t.bytes.data()), s);
}

/// Calls f(T{}) with a value of the C++ type that holds dtype d's elements.
template <class F>
void visit_dtype(dtype d, F&& f) {
  switch (d) {
    case dtype::f64:
      return f(double{});
    case dtype::f32:
      return f(float{});
    case dtype::f16:
      return f(f16{});
    case dtype::bf16:
      return f(bf16{});
    case dtype::i64:
      return f(std::int64_t{});
    case dtype::i32:
      return f(std::int32_t{});
    case dtype::i16:
      return f(std::int16_t{});
    case dtype::i8:
      return f(std::int8_t{});
    case dtype::u64:
      return f(std::uint64_t{});
    case dtype::u32:
      return f(std::uint32_t{});
    case dtype::u16:
      return f(std::uint16_t{});
    case dtype::u8:
      return f(std::uint8_t{});
    case dtype::boolean:
      return f(bool{});
    default:
      return;  // raw-only dtypes: the caller refused them
  }
}

template <class T, shape_type S>
tensor<T, S> make_copy(const tensor_info& t, std::string_view file) {
  static_assert(dense_element<T>, "tfm::io::safetensors::copy: T must be a tensor element type");
  const S s = make_shape<S>(t, file, "copy");
  auto out = tensor<T, S>::uninitialized(s);
  const std::size_t n = static_cast<std::size_t>(s.size());
  auto* dst = out.data();
  if (t.type == dtype_of<T>() && std::endian::native == std::endian::little) {
    if constexpr (std::is_same_v<T, bool>) check_bools(t, file);
    if (n) std::memcpy(static_cast<void*>(dst), t.bytes.data(), n * sizeof(T));
    return out;
  }
  auto refuse = [&](const char* why) {
    fail(errc::value, "tfm::io::safetensors::copy: tensor ", detail::quoted(t.name), " of '", file,
         "' has dtype ", dtype_name(t.type), ", which cannot be converted to ",
         dtype_name(dtype_of<T>()), " (", why, ").");
  };
  if (!info_of(t.type).convertible) refuse("raw bytes only");
  if constexpr (std::is_same_v<T, bool>) refuse("BOOL is only read from BOOL");
  if (t.type == dtype::boolean) check_bools(t, file);
  visit_dtype(t.type, [&](auto src) {
    using U = decltype(src);
    constexpr bool src_float = is_floating_v<U>;
    if constexpr (!std::is_same_v<T, bool>) {
      if constexpr (src_float && !is_floating_v<T>) {
        refuse("floating point to integer");
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          U v;
          std::memcpy(static_cast<void*>(&v), t.bytes.data() + i * sizeof(U), sizeof(U));
          if constexpr (std::endian::native != std::endian::little) {
            auto* b = reinterpret_cast<unsigned char*>(&v);
            std::reverse(b, b + sizeof(U));
          }
          if constexpr (is_floating_v<T>) {
            if constexpr (src_float)
              dst[i] = to_storage<T>(static_cast<compute_t<U>>(v));
            else
              dst[i] = to_storage<T>(static_cast<double>(v));
          } else {  // integer to integer, range checked
            using W = std::conditional_t<std::is_same_v<U, bool>, int, U>;
            if (!std::in_range<T>(static_cast<W>(v)))
              fail(errc::value, "tfm::io::safetensors::copy: tensor ", detail::quoted(t.name),
                   " of '", file, "': element ", i, " does not fit in ", dtype_name(dtype_of<T>()),
                   ".");
            dst[i] = static_cast<T>(v);
          }
        }
      }
    }
  });
  return out;
}

}  // namespace detail

/// One safetensors file: its metadata and tensors, validated when opened.
///
/// The file is memory mapped; bytes(), view() and tensor_info::bytes point into the mapping and
/// stay valid while this object lives (moving it keeps them valid). from_bytes() parses a
/// caller's buffer instead, which must outlive the object.
class file {
 public:
  file() = default;
  /// Maps and validates `path` (tfm::io_error when it cannot be opened, tfm::parse_error when
  /// it is malformed).
  explicit file(const std::string& path, const limits& lim = {}) : map_(path), name_(path) {
    parse(map_.bytes(), lim);
  }
  /// Validates a whole file held in memory (borrowed). `name` stands for it in messages.
  static file from_bytes(std::span<const std::byte> bytes, std::string name = "<memory>",
                         const limits& lim = {}) {
    file f;
    f.name_ = std::move(name);
    f.parse(bytes, lim);
    return f;
  }

  /// The path (or from_bytes' name).
  const std::string& name() const noexcept { return name_; }
  /// The whole file.
  std::span<const std::byte> bytes() const noexcept { return all_; }
  /// Header length N (the JSON, padding included).
  std::uint64_t header_size() const noexcept { return header_size_; }
  /// Byte offset of the data section (8 + N).
  std::uint64_t data_offset() const noexcept { return 8 + header_size_; }

  /// The tensors, in file order (by data offset).
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  std::size_t size() const noexcept { return tensors_.size(); }
  /// The tensor named `name`, or nullptr.
  const tensor_info* find(std::string_view name) const noexcept {
    const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                     [&](std::uint32_t i, std::string_view n) {
                                       return std::string_view(tensors_[i].name) < n;
                                     });
    return it != by_name_.end() && tensors_[*it].name == name ? &tensors_[*it] : nullptr;
  }
  bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }
  /// The tensor named `name`; tfm::value_error when there is none.
  const tensor_info& at(std::string_view name) const {
    const tensor_info* t = find(name);
    if (!t)
      fail(errc::value, "tfm::io::safetensors: '", name_, "' has no tensor named ",
           detail::quoted(name), ".");
    return *t;
  }
  /// The raw little-endian elements of tensor `name`.
  std::span<const std::byte> bytes(std::string_view name) const { return at(name).bytes; }

  /// "__metadata__" (empty when absent); has_metadata() tells absent from empty.
  const std::map<std::string, std::string, std::less<>>& metadata() const noexcept {
    return metadata_;
  }
  bool has_metadata() const noexcept { return has_metadata_; }

  /// A view of tensor `name` into the file, without a copy. Requires the dtype of T (F32 for
  /// float, ...), rank R (or the extents of S) and data aligned to alignof(T); otherwise
  /// tfm::value_error / tfm::shape_error, and copy() is the way. BOOL bytes must be 0 or 1.
  template <class T, std::size_t R>
  tensor_view<const T, dyn_shape<R>> view(std::string_view name) const {
    return detail::make_view<T, dyn_shape<R>>(at(name), name_);
  }
  template <class T, shape_type S>
  tensor_view<const T, S> view(std::string_view name) const {
    return detail::make_view<T, S>(at(name), name_);
  }
  /// True when view<T, R>(name) would succeed.
  template <class T, std::size_t R>
  bool can_view(std::string_view name) const noexcept {
    const tensor_info* t = find(name);
    return t && std::endian::native == std::endian::little && t->type == dtype_of<T>() &&
           t->shape.size() == R &&
           (t->bytes.empty() ||
            reinterpret_cast<std::uintptr_t>(t->bytes.data()) % alignof(T) == 0);
  }
  /// A copy of tensor `name` in a new tfm::tensor, any alignment. When the file's dtype differs
  /// from T's the elements are converted: floating to floating (round to nearest even), integer
  /// or BOOL to floating, integer to integer (range checked; tfm::value_error when a value does
  /// not fit). Floating to integer and the raw-only dtypes (8-bit floats, C64) are refused.
  template <class T, std::size_t R>
  tensor<T, dyn_shape<R>> copy(std::string_view name) const {
    return detail::make_copy<T, dyn_shape<R>>(at(name), name_);
  }
  template <class T, shape_type S>
  tensor<T, S> copy(std::string_view name) const {
    return detail::make_copy<T, S>(at(name), name_);
  }

 private:
  void parse(std::span<const std::byte> b, const limits& lim) {
    all_ = b;
    if (b.size() < 8)
      fail(errc::parse, "tfm::io::safetensors: '", name_, "' has ", b.size(),
           " bytes, fewer than the 8 of the header length (truncated or not a safetensors "
           "file).");
    const std::uint64_t n = detail::load_le64(b.data());
    if (n > lim.max_header_bytes)
      fail(errc::parse, "tfm::io::safetensors: '", name_, "': the header length ", n,
           " (bytes 0-7) exceeds the limit of ", lim.max_header_bytes, " bytes.");
    if (n > b.size() - 8)
      fail(errc::parse, "tfm::io::safetensors: '", name_, "': the header length ", n,
           " (bytes 0-7) runs past the end of the file, which has ", b.size(), " bytes.");
    header_size_ = n;
    const std::string_view text(reinterpret_cast<const char*>(b.data()) + 8,
                                static_cast<std::size_t>(n));
    const std::size_t bad = utf8::first_invalid(text);
    if (bad != std::string_view::npos)
      fail(errc::parse, "tfm::io::safetensors: '", name_,
           "': the header is not valid UTF-8 at byte ", 8 + bad, ".");
    detail::parsed_header h = detail::header_parser(text, name_, lim).run();
    // Names first (a duplicate would otherwise show up as an overlap), then the layout.
    std::vector<std::uint32_t> order(h.tensors.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
    auto by_name = [&](const std::vector<tensor_info>& ts) {
      return [&ts](std::uint32_t a, std::uint32_t c) { return ts[a].name < ts[c].name; };
    };
    std::sort(order.begin(), order.end(), by_name(h.tensors));
    for (std::size_t i = 1; i < order.size(); ++i) {
      const auto& a = h.tensors[order[i - 1]];
      const auto& c = h.tensors[order[i]];
      if (a.name == c.name)
        fail(errc::parse, "tfm::io::safetensors: '", name_, "': duplicate tensor name ",
             detail::quoted(a.name), " (entries at bytes ",
             std::min(a.header_offset, c.header_offset), " and ",
             std::max(a.header_offset, c.header_offset), ").");
    }
    const auto data = b.subspan(static_cast<std::size_t>(8 + n));
    detail::validate_layout(h.tensors, data, 8 + n, name_);
    tensors_ = std::move(h.tensors);
    metadata_ = std::move(h.metadata);
    has_metadata_ = h.has_metadata;
    by_name_ = std::move(order);
    std::sort(by_name_.begin(), by_name_.end(), by_name(tensors_));
  }

  mapped_file map_;
  std::string name_;
  std::span<const std::byte> all_;
  std::uint64_t header_size_ = 0;
  std::vector<tensor_info> tensors_;
  std::vector<std::uint32_t> by_name_;
  std::map<std::string, std::string, std::less<>> metadata_;
  bool has_metadata_ = false;
};

// ============================================================================================
// Sharded checkpoints

namespace detail {
inline bool is_directory(const std::string& path) {
#if TFM_HAVE_POSIX_MMAP
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
#else
  (void)path;
  return false;
#endif
}
inline bool is_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  std::fclose(f);
  return !is_directory(path);
}
inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
inline std::string dir_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace detail

/// The tensors of a checkpoint as one set: a single file, or every shard named by a
/// `model.safetensors.index.json` (Hugging Face's format: {"metadata": {"total_size": N, ...},
/// "weight_map": {tensor name: shard file name}}).
///
/// Index checks (tfm::parse_error naming the index, the tensor and the shard): the weight map
/// is an object of strings with unique keys; a shard name is a plain file name in the index's
/// directory (no '/', '\\', "." or ".."); every shard is a valid safetensors file; every tensor
/// of the map is in the shard it names; no tensor is in two shards. Tensors that a shard holds
/// but the map does not list are part of the set (transformers loads every key of a shard).
class tensor_set {
 public:
  /// `path` is a .safetensors file, an index .json, or a directory holding
  /// model.safetensors.index.json or model.safetensors.
  static tensor_set open(const std::string& path, const limits& lim = {}) {
    if (detail::is_directory(path)) {
      const std::string index = path + "/model.safetensors.index.json";
      if (detail::is_file(index)) return open_index(index, lim);
      const std::string single = path + "/model.safetensors";
      if (detail::is_file(single)) return open_file(single, lim);
      fail(errc::io, "tfm::io::safetensors: the directory '", path,
           "' has neither model.safetensors.index.json nor model.safetensors.");
    }
    if (detail::ends_with(path, ".json")) return open_index(path, lim);
    return open_file(path, lim);
  }
  /// One file.
  static tensor_set open_file(const std::string& path, const limits& lim = {}) {
    tensor_set s;
    s.shards_.emplace_back(path, lim);
    s.build({});
    return s;
  }
  /// A sharded checkpoint from its index.
  static tensor_set open_index(const std::string& index_path, const limits& lim = {}) {
    tensor_set s;
    s.index_path_ = index_path;
    const mapped_file idx(index_path);
    if (idx.size() > lim.max_header_bytes)
      fail(errc::parse, "tfm::io::safetensors: the index '", index_path, "' has ", idx.size(),
           " bytes, more than the limit of ", lim.max_header_bytes, ".");
    const std::string_view text(reinterpret_cast<const char*>(idx.data()), idx.size());
    ::tfm::detail::json::limits jl;
    jl.max_depth = 16;
    const auto doc = ::tfm::detail::json::parse(text, index_path, jl);
    auto bad = [&](std::size_t at, const auto&... what) {
      fail(errc::parse, "tfm::io::safetensors: the index '", index_path, "': ", what...,
           " at byte ", at, ".");
    };
    if (!doc.is_object()) bad(doc.offset, "the document must be a JSON object");
    const auto* wm = doc.find("weight_map");
    if (!wm) bad(doc.offset, "missing \"weight_map\"");
    if (!wm->is_object()) bad(wm->offset, "\"weight_map\" must be an object");
    if (const auto* md = doc.find("metadata")) {
      if (!md->is_object() && !md->is_null()) bad(md->offset, "\"metadata\" must be an object");
      for (const auto& kv : md->object) {
        if (kv.second.is_string()) {
          s.index_metadata_[kv.first] = kv.second.string;
        } else if (kv.second.is_number()) {
          const std::size_t a = kv.second.offset;
          std::size_t e = a;
          while (e < text.size() &&
                 std::string_view("+-.0123456789eE").find(text[e]) != std::string_view::npos)
            ++e;
          s.index_metadata_[kv.first] = std::string(text.substr(a, e - a));
          if (kv.first == "total_size") {
            if (!kv.second.integral || kv.second.integer < 0)
              bad(a, "\"total_size\" must be a non-negative integer");
            s.total_size_ = static_cast<std::uint64_t>(kv.second.integer);
          }
        }
      }
    }
    // Shard names: validated, opened once each, in name order.
    std::vector<std::pair<std::string_view, std::string_view>> entries;  // tensor, shard
    std::vector<std::string_view> shard_names;
    for (const auto& kv : wm->object) {
      if (!kv.second.is_string())
        bad(kv.second.offset, "the shard of tensor ", detail::quoted(kv.first),
            " must be a string");
      const std::string& f = kv.second.string;
      if (f.empty() || f == "." || f == ".." ||
          f.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos)
        bad(kv.second.offset, "the shard name ", detail::quoted(f),
            " is not a plain file name in the index's directory");
      entries.emplace_back(kv.first, f);
      shard_names.push_back(f);
    }
    std::sort(entries.begin(), entries.end());
    for (std::size_t i = 1; i < entries.size(); ++i)
      if (entries[i].first == entries[i - 1].first)
        bad(doc.offset, "tensor ", detail::quoted(entries[i].first),
            " appears twice in \"weight_map\"");
    std::sort(shard_names.begin(), shard_names.end());
    shard_names.erase(std::unique(shard_names.begin(), shard_names.end()), shard_names.end());
    const std::string dir = detail::dir_of(index_path);
    s.shards_.reserve(shard_names.size());
    for (auto f : shard_names) s.shards_.emplace_back(dir + "/" + std::string(f), lim);
    std::vector<std::pair<std::string_view, std::size_t>> wanted;
    for (const auto& [tname, shard] : entries) {
      const auto k = static_cast<std::size_t>(
          std::lower_bound(shard_names.begin(), shard_names.end(), shard) - shard_names.begin());
      if (!s.shards_[k].contains(tname))
        fail(errc::parse, "tfm::io::safetensors: the index '", index_path, "' puts tensor ",
             detail::quoted(tname), " in '", std::string(shard), "', which has no such tensor.");
      wanted.emplace_back(tname, k);
    }
    s.build(wanted);
    return s;
  }

  /// The shards (one for a single file), in file-name order.
  const std::vector<file>& shards() const noexcept { return shards_; }
  /// The index path ("" for a single file).
  const std::string& index_path() const noexcept { return index_path_; }
  /// The index's "metadata" (strings as they are, numbers as written); empty for a single file.
  const std::map<std::string, std::string, std::less<>>& index_metadata() const noexcept {
    return index_metadata_;
  }
  /// The index's metadata.total_size, when present (not checked against the shards: writers
  /// disagree on what it counts).
  std::optional<std::uint64_t> total_size() const noexcept { return total_size_; }

  /// Number of tensors.
  std::size_t size() const noexcept { return order_.size(); }
  /// Every tensor, sorted by name.
  std::vector<const tensor_info*> tensors() const {
    std::vector<const tensor_info*> v;
    v.reserve(order_.size());
    for (const auto& r : order_) v.push_back(&get(r));
    return v;
  }
  /// The shard file holding tensor `name` (tfm::value_error when there is none).
  const file& shard_of(std::string_view name) const { return shards_[locate(name).shard]; }
  const tensor_info* find(std::string_view name) const noexcept {
    const ref* r = lookup(name);
    return r ? &get(*r) : nullptr;
  }
  bool contains(std::string_view name) const noexcept { return lookup(name) != nullptr; }
  const tensor_info& at(std::string_view name) const { return get(locate(name)); }
  std::span<const std::byte> bytes(std::string_view name) const { return at(name).bytes; }
  /// As file::view / file::copy, for the shard that holds `name`.
  template <class T, std::size_t R>
  tensor_view<const T, dyn_shape<R>> view(std::string_view name) const {
    return shard_of(name).template view<T, R>(name);
  }
  template <class T, shape_type S>
  tensor_view<const T, S> view(std::string_view name) const {
    return shard_of(name).template view<T, S>(name);
  }
  template <class T, std::size_t R>
  tensor<T, dyn_shape<R>> copy(std::string_view name) const {
    return shard_of(name).template copy<T, R>(name);
  }
  template <class T, shape_type S>
  tensor<T, S> copy(std::string_view name) const {
    return shard_of(name).template copy<T, S>(name);
  }

 private:
  struct ref {
    std::size_t shard, index;
  };
  const tensor_info& get(const ref& r) const { return shards_[r.shard].tensors()[r.index]; }
  const ref* lookup(std::string_view name) const noexcept {
    const auto it = std::lower_bound(
        order_.begin(), order_.end(), name,
        [&](const ref& r, std::string_view n) { return std::string_view(get(r).name) < n; });
    return it != order_.end() && get(*it).name == name ? &*it : nullptr;
  }
  const ref& locate(std::string_view name) const {
    const ref* r = lookup(name);
    if (!r)
      fail(errc::value,
           "tfm::io::safetensors: ", index_path_.empty() ? shards_.front().name() : index_path_,
           " has no tensor named ", detail::quoted(name), ".");
    return *r;
  }
  void build(const std::vector<std::pair<std::string_view, std::size_t>>& wanted) {
    for (std::size_t k = 0; k < shards_.size(); ++k)
      for (std::size_t i = 0; i < shards_[k].tensors().size(); ++i) order_.push_back({k, i});
    std::sort(order_.begin(), order_.end(), [&](const ref& a, const ref& b) {
      return get(a).name != get(b).name ? get(a).name < get(b).name : a.shard < b.shard;
    });
    for (std::size_t i = 1; i < order_.size(); ++i)
      if (get(order_[i]).name == get(order_[i - 1]).name) {
        const auto& n = get(order_[i]).name;
        std::string_view listed;
        for (const auto& w : wanted)
          if (w.first == n) listed = shards_[w.second].name();
        fail(errc::parse, "tfm::io::safetensors: tensor ", detail::quoted(n), " is in both '",
             shards_[order_[i - 1].shard].name(), "' and '", shards_[order_[i].shard].name(), "'",
             listed.empty() ? "" : " (the index names '", listed, listed.empty() ? "" : "')", ".");
      }
  }

  std::vector<file> shards_;
  std::vector<ref> order_;
  std::string index_path_;
  std::map<std::string, std::string, std::less<>> index_metadata_;
  std::optional<std::uint64_t> total_size_;
};

/// Opens a checkpoint: tensor_set::open(path).
inline tensor_set open(const std::string& path, const limits& lim = {}) {
  return tensor_set::open(path, lim);
}

// ============================================================================================
// Writer

/// Collects tensors and metadata and writes a safetensors file (or shards and an index).
///
/// add() with a byte span, an lvalue tensor or a view borrows the elements: they must stay
/// valid and unchanged until the last save. add() with an rvalue tensor keeps a copy.
/// Errors (tfm::value_error): a duplicate name, the name "__metadata__", a name or metadata
/// key/value that is not valid UTF-8, a negative dimension, a byte count that is not
/// numel * dtype size, a non-contiguous view.
class writer {
 public:
  /// Adds "__metadata__"[key] = value (replacing an earlier value of key).
  void set_metadata(std::string key, std::string value) {
    check_utf8(key, "metadata key");
    check_utf8(value, "metadata value");
    metadata_[std::move(key)] = std::move(value);
  }
  const std::map<std::string, std::string, std::less<>>& metadata() const noexcept {
    return metadata_;
  }

  /// A tensor from raw little-endian bytes (borrowed).
  void add(std::string name, dtype type, std::vector<index_t> shape,
           std::span<const std::byte> bytes) {
    add_entry(std::move(name), type, std::move(shape), bytes, nullptr);
  }
  /// A tensor from a tfm::tensor (borrowed) or a contiguous view (borrowed).
  template <class T, shape_type S, class B, class St>
  void add(std::string name, const tensor<T, S, B, St>& t) {
    add_entry(std::move(name), dtype_of<T>(), extents_of(t.shape()), as_bytes(t.data(), t.size()),
              nullptr);
  }
  template <class T, shape_type S, class B>
  void add(std::string name, const tensor_view<T, S, B>& v) {
    if (!v.is_contiguous())
      fail(errc::value, "tfm::io::safetensors::writer: the view given for tensor ",
           detail::quoted(name), " is not contiguous; copy it into a tensor first.");
    add_entry(std::move(name), dtype_of<std::remove_const_t<T>>(), extents_of(v.shape()),
              as_bytes(v.data(), v.size()), nullptr);
  }
  /// A temporary tensor: its elements are copied.
  template <class T, shape_type S, class B, class St>
  void add(std::string name, tensor<T, S, B, St>&& t) {
    const auto b = as_bytes(t.data(), t.size());
    auto owned = std::make_shared<std::vector<std::byte>>(b.begin(), b.end());
    add_entry(std::move(name), dtype_of<T>(), extents_of(t.shape()),
              std::span<const std::byte>(*owned), owned);
  }

  std::size_t size() const noexcept { return entries_.size(); }

  /// The header (JSON, padded with spaces to a multiple of 8) for all tensors.
  std::string header() const { return header_for(sorted(all_indices())); }

  /// The whole file in memory.
  std::vector<std::byte> to_bytes() const {
    const auto order = sorted(all_indices());
    const std::string h = header_for(order);
    std::vector<std::byte> out;
    append_le64(out, h.size());
    const auto* hp = reinterpret_cast<const std::byte*>(h.data());
    out.insert(out.end(), hp, hp + h.size());
    for (std::size_t i : order)
      out.insert(out.end(), entries_[i].bytes.begin(), entries_[i].bytes.end());
    return out;
  }

  /// Writes `path` (through `path.tmp` and a rename, so a crash never leaves half a file under
  /// `path`). The elements are streamed, not gathered in memory. tfm::io_error on failure.
  void save(const std::string& path) const { save_indices(path, all_indices()); }

  /// Writes shards of at most `max_shard_bytes` of tensor data each (a larger tensor gets a
  /// shard of its own), filling them greedily in name order as huggingface_hub's
  /// split_state_dict_into_shards does, named `<prefix>-00001-of-0000n.safetensors`, and
  /// `<prefix>.safetensors.index.json` with {"metadata": {"total_size": sum of tensor bytes},
  /// "weight_map": {...}} (keys sorted, indent 2, as transformers writes it). Every shard gets
  /// this writer's metadata. Returns the file names written (shards, then the index).
  std::vector<std::string> save_sharded(const std::string& dir, std::uint64_t max_shard_bytes,
                                        std::string_view prefix = "model") const {
    std::vector<std::size_t> by_name = all_indices();
    std::sort(by_name.begin(), by_name.end(),
              [&](std::size_t a, std::size_t b) { return entries_[a].name < entries_[b].name; });
    std::vector<std::vector<std::size_t>> shards;
    std::uint64_t cur = 0, total = 0;
    for (std::size_t i : by_name) {
      const std::uint64_t n = entries_[i].bytes.size();
      if (shards.empty() || (!shards.back().empty() && cur + n > max_shard_bytes)) {
        shards.emplace_back();
        cur = 0;
      }
      shards.back().push_back(i);
      cur += n;
      total += n;
    }
    if (shards.empty()) shards.emplace_back();
    std::vector<std::string> names;
    auto num = [](std::size_t v) {
      std::string s = std::to_string(v);
      return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
    };
    std::vector<std::pair<std::string_view, std::size_t>> map;  // tensor -> shard
    for (std::size_t k = 0; k < shards.size(); ++k) {
      names.push_back(std::string(prefix) + "-" + num(k + 1) + "-of-" + num(shards.size()) +
                      ".safetensors");
      save_indices(dir + "/" + names.back(), shards[k]);
      for (std::size_t i : shards[k]) map.emplace_back(entries_[i].name, k);
    }
    std::sort(map.begin(), map.end());
    std::string idx = "{\n  \"metadata\": {\n    \"total_size\": " + std::to_string(total) +
                      "\n  },\n  \"weight_map\": {";
    for (std::size_t j = 0; j < map.size(); ++j) {
      idx += j ? ",\n    " : "\n    ";
      ::tfm::detail::json::append_quoted(idx, map[j].first);
      idx += ": ";
      ::tfm::detail::json::append_quoted(idx, names[map[j].second]);
    }
    idx += map.empty() ? "}\n}\n" : "\n  }\n}\n";
    names.push_back(std::string(prefix) + ".safetensors.index.json");
    write_file(dir + "/" + names.back(), [&](auto&& put) { put(idx.data(), idx.size()); });
    return names;
  }

 private:
  struct entry {
    std::string name;
    dtype type;
    std::vector<index_t> shape;
    std::span<const std::byte> bytes;
    std::shared_ptr<const std::vector<std::byte>> owned;
  };

  static void check_utf8(std::string_view s, const char* what) {
    const std::size_t bad = utf8::first_invalid(s);
    if (bad != std::string_view::npos)
      fail(errc::value, "tfm::io::safetensors::writer: the ", what, " ", detail::quoted(s),
           " is not valid UTF-8 at byte ", bad, ".");
  }
  template <shape_type S>
  static std::vector<index_t> extents_of(const S& s) {
    const auto e = s.extents();
    return std::vector<index_t>(e.begin(), e.end());
  }
  template <class T>
  static std::span<const std::byte> as_bytes(const T* p, index_t n) {
    static_assert(std::endian::native == std::endian::little,
                  "tfm::io::safetensors::writer: tensors are written little-endian");
    return {reinterpret_cast<const std::byte*>(p), static_cast<std::size_t>(n) * sizeof(T)};
  }
  static void append_le64(std::vector<std::byte>& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
  }

  void add_entry(std::string name, dtype type, std::vector<index_t> shape,
                 std::span<const std::byte> bytes,
                 std::shared_ptr<const std::vector<std::byte>> owned) {
    check_utf8(name, "tensor name");
    if (name == "__metadata__")
      fail(errc::value,
           "tfm::io::safetensors::writer: \"__metadata__\" is reserved for the "
           "metadata and cannot name a tensor.");
    for (const auto& e : entries_)
      if (e.name == name)
        fail(errc::value, "tfm::io::safetensors::writer: duplicate tensor name ",
             detail::quoted(name), ".");
    std::uint64_t n = 1;
    bool overflow = false;
    for (index_t e : shape) {
      if (e < 0)
        fail(errc::value, "tfm::io::safetensors::writer: tensor ", detail::quoted(name),
             " has a negative dimension in shape ", detail::shape_string(shape), ".");
      if (e != 0 && n > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(e))
        overflow = true;
      n *= static_cast<std::uint64_t>(e);
    }
    if (overflow || n > std::numeric_limits<std::uint64_t>::max() / dtype_size(type) ||
        n * dtype_size(type) != bytes.size())
      fail(errc::value, "tfm::io::safetensors::writer: tensor ", detail::quoted(name), " has ",
           bytes.size(), " bytes but shape ", detail::shape_string(shape), " of ", dtype_name(type),
           " needs ",
           overflow ? std::string("more than 2^64") : std::to_string(n * dtype_size(type)), ".");
    entries_.push_back({std::move(name), type, std::move(shape), bytes, std::move(owned)});
  }

  std::vector<std::size_t> all_indices() const {
    std::vector<std::size_t> v(entries_.size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
    return v;
  }
  /// The reference's order: dtype descending (enum order), then name.
  std::vector<std::size_t> sorted(std::vector<std::size_t> v) const {
    std::sort(v.begin(), v.end(), [&](std::size_t a, std::size_t b) {
      const auto& x = entries_[a];
      const auto& y = entries_[b];
      return x.type != y.type ? x.type > y.type : x.name < y.name;
    });
    return v;
  }

  std::string header_for(const std::vector<std::size_t>& order) const {
    std::string h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata_) {
        if (!first) h += ',';
        first = false;
        ::tfm::detail::json::append_quoted(h, k);
        h += ':';
        ::tfm::detail::json::append_quoted(h, v);
      }
      h += '}';
    }
    std::uint64_t off = 0;
    for (std::size_t i : order) {
      const auto& e = entries_[i];
      if (h.size() > 1) h += ',';
      ::tfm::detail::json::append_quoted(h, e.name);
      h += ":{\"dtype\":\"";
      h += dtype_name(e.type);
      h += "\",\"shape\":[";
      for (std::size_t d = 0; d < e.shape.size(); ++d) {
        if (d) h += ',';
        h += std::to_string(e.shape[d]);
      }
      h += "],\"data_offsets\":[" + std::to_string(off) + ",";
      off += e.bytes.size();
      h += std::to_string(off) + "]}";
    }
    h += '}';
    h.append((8 - h.size() % 8) % 8, ' ');
    return h;
  }

  /// Writes `path.tmp` through body(put), where put(pointer, bytes) appends, then renames it to
  /// `path`. On failure the temporary is removed and tfm::io_error raised.
  template <class F>
  static void write_file(const std::string& path, F&& body) {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail(errc::io, "tfm::io::safetensors::writer: cannot create '", tmp, "'.");
    bool ok = true;
    body([&](const void* p, std::size_t n) {
      if (ok && n > 0) ok = std::fwrite(p, 1, n, f) == n;
    });
    ok = std::fclose(f) == 0 && ok;
    if (!ok) {
      std::remove(tmp.c_str());
      fail(errc::io, "tfm::io::safetensors::writer: writing '", tmp, "' failed (disk full?).");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      fail(errc::io, "tfm::io::safetensors::writer: cannot rename '", tmp, "' to '", path, "'.");
    }
  }

  void save_indices(const std::string& path, std::vector<std::size_t> subset) const {
    const auto order = sorted(std::move(subset));
    const std::string h = header_for(order);
    write_file(path, [&](auto&& put) {
      unsigned char len[8];
      for (int i = 0; i < 8; ++i)
        len[i] =
            static_cast<unsigned char>((static_cast<std::uint64_t>(h.size()) >> (8 * i)) & 0xFF);
      put(len, 8);
      put(h.data(), h.size());
      for (std::size_t i : order) put(entries_[i].bytes.data(), entries_[i].bytes.size());
    });
  }

  std::vector<entry> entries_;
  std::map<std::string, std::string, std::less<>> metadata_;
};

}  // namespace io::safetensors
TFM_END_NAMESPACE
