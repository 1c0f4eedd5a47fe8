// typeformer/io/gguf.hpp
//
// WHAT THIS REPRESENTS
//   GGUF (the llama.cpp/ggml model file) version 2 and 3: a validating reader over a read-only
//   memory map that never copies tensor data, and a streaming writer.
//     tfm::io::gguf_file     the parsed file: metadata (key -> typed value), tensor infos, and
//                            the bytes of every tensor as a span into the mapping.
//     tfm::io::gguf_value    a view of one metadata value (scalar, string or array).
//     tfm::io::gguf_array    a view of an array value; iterates without allocating.
//     tfm::io::gguf_writer   writes KV pairs and tensors: header first, then the data.
//   Format (ggml/docs/gguf.md, github.com/ggml-org/ggml): little-endian
//     u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//     n_kv x { string key | u32 value_type | value }
//     n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//     zero padding to `general.alignment` (u32, default 32) | tensor data
//   where string = u64 length + bytes (no terminator) and array = u32 element type + u64 count +
//   elements (arrays may nest). ne[0] is the fastest-varying dimension; a tensor's row-major
//   extents are ne reversed. offset is relative to the start of the data section.
//
// CONTRACTS
//   - Reading validates everything before it allocates or touches tensor data (TESTING.md
//     "Files and parsers"; the GGUF CVEs of 2024, e.g. CVE-2024-25664..25668): magic, version 2
//     or 3 (v1 and big-endian files are refused by name), counts against the bytes left, every
//     string and array length against the bytes left, arrays nested at most
//     gguf_limits::max_array_depth deep, keys 1..65535 bytes of valid UTF-8 and unique,
//     `general.alignment` a u32 power of two <= 2^30, tensor names 1..64 bytes of valid UTF-8
//     and unique, n_dims <= 4, each ne <= 2^63-1 with an overflow-checked element count, a known
//     ggml type, ne[0] a multiple of the type's block, offsets aligned, data inside the file and
//     no two tensors overlapping. Every failure is a tfm::parse_error whose message names the
//     file, the field (e.g. "tensor 3 'blk.0.attn_q.weight' dims") and its byte offset.
//     Memory used by a parse is O(n_kv + n_tensors), both bounded by the file size.
//   - Tensors may appear in any order and with gaps (llama.cpp insists on consecutive, padded
//     tensors; files it writes satisfy both). The file may end right after the last tensor.
//   - Typed lookup: get<T>(key) requires the key (else "key 'x' is missing") and a value of a
//     matching type (else "key 'x' holds uint32, not string"). Integers convert to any integer T
//     that holds the value (else an error naming the value); float32 -> float or double,
//     float64 -> double; bool -> bool; string -> std::string_view (into the file) or
//     std::string; array -> gguf_array or std::vector<U> with U per the same rules.
//   - gguf_file is move-only; views, string_views and spans into it stay valid while it lives
//     (moving it keeps them valid: the mapping does not move). gguf_file::from_bytes() borrows
//     the caller's buffer, which must outlive the object.
//   - gguf_writer output is byte for byte what gguf-py's GGUFWriter writes for the same calls in
//     the same order (v3, KVs in insertion order, data padded to the alignment after the tensor
//     infos and after every tensor, tensor offsets consecutive). A path is written as path.tmp
//     and renamed over path by finish(); an unfinished writer removes its temporary file.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/io/mmap.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/tokenizer/utf8.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

/// Metadata value types (gguf.md `gguf_metadata_value_type`).
enum class gguf_type : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

/// Name of a value type as gguf-py spells it in lower case ("uint32", "string", "array").
constexpr std::string_view gguf_type_name(gguf_type t) noexcept {
  constexpr std::string_view names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                        "int32",  "float32", "bool",   "string", "array",
                                        "uint64", "int64",   "float64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? names[i] : std::string_view("unknown");
}

/// Bytes of a fixed-size value type; 0 for string and array.
constexpr std::size_t gguf_type_size(gguf_type t) noexcept {
  constexpr std::size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  const auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? sizes[i] : 0;
}

/// Limits the reader enforces (see the contract above).
struct gguf_limits {
  static constexpr std::uint32_t magic = 0x46554747u;  ///< "GGUF" read as little-endian u32
  static constexpr std::uint32_t default_alignment = 32;
  static constexpr std::uint32_t max_alignment = 1u << 30;
  static constexpr std::size_t max_dims = 4;            ///< GGML_MAX_DIMS
  static constexpr std::size_t max_tensor_name = 64;    ///< gguf.md: "at most 64 bytes"
  static constexpr std::size_t max_key_length = 65535;  ///< gguf.md: "at most 2^16-1 bytes"
  static constexpr int max_array_depth = 8;             ///< nesting of array values
};

class gguf_array;

namespace detail::gguf {

template <class T>
T load(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// End of the (already validated) value of type t starting at p.
inline const std::byte* value_end(gguf_type t, const std::byte* p) noexcept {
  if (t == gguf_type::string) return p + 8 + load<std::uint64_t>(p);
  if (t != gguf_type::array) return p + gguf_type_size(t);
  const auto et = static_cast<gguf_type>(load<std::uint32_t>(p));
  const std::uint64_t n = load<std::uint64_t>(p + 4);
  p += 12;
  if (const std::size_t s = gguf_type_size(et); s != 0) return p + n * s;
  for (std::uint64_t i = 0; i < n; ++i) p = value_end(et, p);
  return p;
}

/// Context for messages: the file's name and the key a value belongs to.
struct origin {
  const std::string* file = nullptr;
  std::string_view key;
};

template <class T>
inline constexpr bool is_char_v =
    std::is_same_v<T, char> || std::is_same_v<T, char8_t> || std::is_same_v<T, char16_t> ||
    std::is_same_v<T, char32_t> || std::is_same_v<T, wchar_t>;

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
}  // namespace detail::gguf

/// A view of one metadata value inside a gguf_file (valid while the file lives).
class gguf_value {
 public:
  gguf_value() = default;
  gguf_value(gguf_type type, const std::byte* payload, std::uint64_t offset,
             detail::gguf::origin where) noexcept
      : type_(type), p_(payload), offset_(offset), where_(where) {}

  gguf_type type() const noexcept { return type_; }
  /// Byte offset of the value's payload in the file.
  std::uint64_t offset() const noexcept { return offset_; }
  /// The key this value belongs to (for an array element, the array's key).
  std::string_view key() const noexcept { return where_.key; }
  /// The serialized payload (for an array: element type, count and elements), as in the file.
  std::span<const std::byte> raw_bytes() const noexcept {
    return {p_, static_cast<std::size_t>(detail::gguf::value_end(type_, p_) - p_)};
  }
  bool is_integer() const noexcept {
    return type_ == gguf_type::uint8 || type_ == gguf_type::int8 || type_ == gguf_type::uint16 ||
           type_ == gguf_type::int16 || type_ == gguf_type::uint32 || type_ == gguf_type::int32 ||
           type_ == gguf_type::uint64 || type_ == gguf_type::int64;
  }

  /// The value as T (the conversion rules are in the header's contract).
  template <class T>
  T as() const;

  /// Shortcuts.
  std::string_view as_string() const { return as<std::string_view>(); }
  gguf_array as_array() const;

 private:
  template <class T>
  [[noreturn]] void mistyped() const;
  template <class I>
  I as_integer() const;

  gguf_type type_ = gguf_type::uint8;
  const std::byte* p_ = nullptr;
  std::uint64_t offset_ = 0;
  detail::gguf::origin where_;
};

/// A view of an array value. Elements of fixed size are reached in O(1); strings and nested
/// arrays by walking (O(i)); iteration is O(total size) and allocates nothing.
class gguf_array {
 public:
  gguf_array() = default;
  gguf_array(gguf_type element_type, std::uint64_t count, const std::byte* first,
             std::uint64_t offset, detail::gguf::origin where) noexcept
      : et_(element_type), n_(count), first_(first), offset_(offset), where_(where) {}

  gguf_type element_type() const noexcept { return et_; }
  std::size_t size() const noexcept { return static_cast<std::size_t>(n_); }
  bool empty() const noexcept { return n_ == 0; }

  class iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = gguf_value;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = gguf_value;
    iterator() = default;
    iterator(const gguf_array* a, std::uint64_t i, const std::byte* p) noexcept
        : a_(a), i_(i), p_(p) {}
    gguf_value operator*() const noexcept {
      return gguf_value(a_->et_, p_, a_->offset_ + static_cast<std::uint64_t>(p_ - a_->first_),
                        a_->where_);
    }
    iterator& operator++() noexcept {
      p_ = detail::gguf::value_end(a_->et_, p_);
      ++i_;
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator t = *this;
      ++*this;
      return t;
    }
    friend bool operator==(const iterator& x, const iterator& y) noexcept { return x.i_ == y.i_; }

   private:
    const gguf_array* a_ = nullptr;
    std::uint64_t i_ = 0;
    const std::byte* p_ = nullptr;
  };

  iterator begin() const noexcept { return iterator(this, 0, first_); }
  iterator end() const noexcept { return iterator(this, n_, nullptr); }

  /// Element i (checked: an out-of-range i is a tfm::index_error naming the key).
  gguf_value operator[](std::size_t i) const {
    if (i >= n_)
      fail(errc::index, "tfm::io::gguf: index ", i, " is out of range for the array '", where_.key,
           "' of ", n_, " elements.");
    const std::byte* p = first_;
    if (const std::size_t s = gguf_type_size(et_); s != 0)
      p += i * s;
    else
      for (std::size_t k = 0; k < i; ++k) p = detail::gguf::value_end(et_, p);
    return gguf_value(et_, p, offset_ + static_cast<std::uint64_t>(p - first_), where_);
  }

  /// All elements as U (per the conversion rules); std::string_view elements point into the
  /// file, so a vocabulary of 49k tokens costs one vector of views and no string copies.
  template <class U>
  std::vector<U> to_vector() const {
    std::vector<U> out;
    out.reserve(size());
    for (gguf_value v : *this) out.push_back(v.as<U>());
    return out;
  }

 private:
  gguf_type et_ = gguf_type::uint8;
  std::uint64_t n_ = 0;
  const std::byte* first_ = nullptr;
  std::uint64_t offset_ = 0;
  detail::gguf::origin where_;
};

inline gguf_array gguf_value::as_array() const { return as<gguf_array>(); }

template <class T>
void gguf_value::mistyped() const {
  std::string want;
  if constexpr (std::is_same_v<T, bool>)
    want = "bool";
  else if constexpr (std::is_integral_v<T>)
    want = "an integer";
  else if constexpr (std::is_floating_point_v<T>)
    want = std::is_same_v<T, float> ? "float32" : "float32 or float64";
  else if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, std::string_view>)
    want = "string";
  else
    want = "array";
  std::string found(gguf_type_name(type_));
  if (type_ == gguf_type::array)
    found +=
        std::string(" of ") +
        std::string(gguf_type_name(static_cast<gguf_type>(detail::gguf::load<std::uint32_t>(p_))));
  fail(errc::parse, "tfm::io::gguf: '", where_.file != nullptr ? *where_.file : std::string(),
       "': key '", where_.key, "' holds ", found, ", not ", want, ".");
}

template <class I>
I gguf_value::as_integer() const {
  bool negative = false;
  std::uint64_t mag = 0;  // |value|
  auto take_signed = [&](std::int64_t v) {
    negative = v < 0;
    mag = negative ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
  };
  switch (type_) {
    case gguf_type::uint8:
      mag = detail::gguf::load<std::uint8_t>(p_);
      break;
    case gguf_type::uint16:
      mag = detail::gguf::load<std::uint16_t>(p_);
      break;
    case gguf_type::uint32:
      mag = detail::gguf::load<std::uint32_t>(p_);
      break;
    case gguf_type::uint64:
      mag = detail::gguf::load<std::uint64_t>(p_);
      break;
    case gguf_type::int8:
      take_signed(detail::gguf::load<std::int8_t>(p_));
      break;
    case gguf_type::int16:
      take_signed(detail::gguf::load<std::int16_t>(p_));
      break;
    case gguf_type::int32:
      take_signed(detail::gguf::load<std::int32_t>(p_));
      break;
    case gguf_type::int64:
      take_signed(detail::gguf::load<std::int64_t>(p_));
      break;
    default:
      mistyped<I>();
  }
  using L = std::numeric_limits<I>;
  const bool fits =
      negative ? (L::is_signed &&
                  mag <= static_cast<std::uint64_t>(-(static_cast<std::int64_t>(L::min()) + 1)) + 1)
               : mag <= static_cast<std::uint64_t>(L::max());
  if (!fits)
    fail(errc::parse, "tfm::io::gguf: '", where_.file != nullptr ? *where_.file : std::string(),
         "': key '", where_.key, "' holds ", gguf_type_name(type_), " ", negative ? "-" : "", mag,
         ", which does not fit the requested ", L::is_signed ? "signed" : "unsigned", " ",
         static_cast<int>(sizeof(I) * 8), "-bit integer.");
  if (negative) return static_cast<I>(-static_cast<std::int64_t>(mag - 1) - 1);
  return static_cast<I>(mag);
}

template <class T>
T gguf_value::as() const {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_same_v<U, bool>) {
    if (type_ != gguf_type::boolean) mistyped<U>();
    return detail::gguf::load<std::uint8_t>(p_) != 0;
  } else if constexpr (std::is_integral_v<U> && !detail::gguf::is_char_v<U>) {
    return as_integer<U>();
  } else if constexpr (std::is_same_v<U, float>) {
    if (type_ != gguf_type::float32) mistyped<U>();
    return detail::gguf::load<float>(p_);
  } else if constexpr (std::is_same_v<U, double>) {
    if (type_ == gguf_type::float32) return detail::gguf::load<float>(p_);
    if (type_ != gguf_type::float64) mistyped<U>();
    return detail::gguf::load<double>(p_);
  } else if constexpr (std::is_same_v<U, std::string_view> || std::is_same_v<U, std::string>) {
    if (type_ != gguf_type::string) mistyped<U>();
    const auto n = static_cast<std::size_t>(detail::gguf::load<std::uint64_t>(p_));
    return U(reinterpret_cast<const char*>(p_ + 8), n);
  } else if constexpr (std::is_same_v<U, gguf_array>) {
    if (type_ != gguf_type::array) mistyped<U>();
    return gguf_array(static_cast<gguf_type>(detail::gguf::load<std::uint32_t>(p_)),
                      detail::gguf::load<std::uint64_t>(p_ + 4), p_ + 12, offset_ + 12, where_);
  } else if constexpr (detail::gguf::is_vector<U>::value) {
    if (type_ != gguf_type::array) mistyped<U>();
    return as<gguf_array>().template to_vector<typename U::value_type>();
  } else {
    static_assert(std::is_same_v<U, bool>,
                  "tfm::io::gguf_value::as<T>: T must be an integer, float, double, bool, "
                  "std::string, std::string_view, tfm::io::gguf_array or std::vector of these.");
    return T{};
  }
}

/// One metadata entry, in file order.
struct gguf_kv {
  std::string_view key;
  gguf_value value;
  std::uint64_t offset = 0;  ///< byte offset of the entry (its key's length field)
};

/// One tensor info.
struct gguf_tensor_info {
  std::string_view name;
  std::uint32_t n_dims = 0;
  std::array<std::int64_t, gguf_limits::max_dims> ne{1, 1, 1, 1};  ///< ggml order: ne[0] fastest
  ggml_type type = ggml_type::f32;
  std::uint64_t offset = 0;       ///< relative to the data section (as stored)
  std::uint64_t file_offset = 0;  ///< absolute byte offset of the data in the file
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;
  std::uint64_t info_offset = 0;  ///< byte offset of this tensor info in the file

  /// Row-major extents (ne reversed), as numpy and tfm::tensor order them.
  std::vector<index_t> extents() const {
    std::vector<index_t> e(n_dims);
    for (std::uint32_t i = 0; i < n_dims; ++i) e[i] = ne[n_dims - 1 - i];
    return e;
  }
  const ggml_type_info& type_info() const noexcept { return ggml_type_info_of(type); }
};

namespace detail::gguf {

/// "kv 3 'general.name' value"-style field names, formatted only when an error is reported.
struct kv_field {
  std::size_t index;
  std::string_view key;
  const char* part;
};
struct tensor_field {
  std::size_t index;
  std::string_view name;
  const char* part;
};
template <class T>
const T& piece(const T& x) noexcept {
  return x;
}
inline std::string named_piece(const char* what, std::size_t index, std::string_view name,
                               const char* part) {
  std::string s = std::string(what) + " " + std::to_string(index);
  if (!name.empty()) {
    s += " '";
    s.append(name.substr(0, 80));
    s += "'";
  }
  s += " ";
  s += part;
  return s;
}
inline std::string piece(const kv_field& f) { return named_piece("kv", f.index, f.key, f.part); }
inline std::string piece(const tensor_field& f) {
  return named_piece("tensor", f.index, f.name, f.part);
}

/// Bounds-checked reader over the file bytes; every failure names the file, field and offset.
class parser {
 public:
  parser(std::span<const std::byte> b, const std::string& file) : b_(b), file_(file) {}

  std::size_t pos() const noexcept { return pos_; }
  std::size_t left() const noexcept { return b_.size() - pos_; }
  const std::byte* at(std::size_t p) const noexcept { return b_.data() + p; }

  template <class... Field>
  [[noreturn]] void error(std::size_t offset, const Field&... what) const {
    fail(errc::parse, "tfm::io::gguf: '", file_, "': ", piece(what)..., " (at byte ", offset, ").");
  }

  template <class T, class F>
  T read(const F& field) {
    if (left() < sizeof(T))
      error(pos_, field, ": the file ends after ", left(), " of its ", sizeof(T), " bytes");
    T v = load<T>(at(pos_));
    pos_ += sizeof(T);
    return v;
  }

  /// A GGUF string; its length is checked against the bytes left before anything else.
  template <class F>
  std::string_view string(const F& field) {
    const std::size_t start = pos_;
    const auto n = read<std::uint64_t>(field);
    if (n > left())
      error(start, field, ": string length ", n, " exceeds the ", left(),
            " bytes left in the file");
    std::string_view s(reinterpret_cast<const char*>(at(pos_)), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }

  /// Validates a value of type t at pos() and moves past it.
  template <class F>
  void skip_value(std::uint32_t t, int depth, const F& field) {
    const std::size_t start = pos_;
    if (t > static_cast<std::uint32_t>(gguf_type::float64))
      error(start, field, ": unknown value type ", t);
    const auto gt = static_cast<gguf_type>(t);
    if (gt == gguf_type::string) {
      (void)string(field);
      return;
    }
    if (gt != gguf_type::array) {
      const std::size_t s = gguf_type_size(gt);
      if (left() < s)
        error(start, field, ": the file ends inside a ", gguf_type_name(gt), " value");
      pos_ += s;
      return;
    }
    if (depth >= gguf_limits::max_array_depth)
      error(start, field, ": arrays nested deeper than ", gguf_limits::max_array_depth, " levels");
    const auto et = read<std::uint32_t>(field);
    if (et > static_cast<std::uint32_t>(gguf_type::float64))
      error(start, field, ": unknown array element type ", et);
    const auto n = read<std::uint64_t>(field);
    const auto eg = static_cast<gguf_type>(et);
    const std::size_t min_size = eg == gguf_type::string  ? 8
                                 : eg == gguf_type::array ? 12
                                                          : gguf_type_size(eg);
    if (n > left() / min_size)
      error(start, field, ": array of ", n, " ", gguf_type_name(eg), " elements needs at least ",
            min_size, " bytes each but only ", left(), " bytes are left");
    if (gguf_type_size(eg) != 0) {
      pos_ += static_cast<std::size_t>(n) * gguf_type_size(eg);
      return;
    }
    for (std::uint64_t i = 0; i < n; ++i) skip_value(et, depth + 1, field);
  }

 private:
  std::span<const std::byte> b_;
  const std::string& file_;
  std::size_t pos_ = 0;
};

}  // namespace detail::gguf

/// A parsed GGUF file (see the header's contract).
class gguf_file {
 public:
  gguf_file() = default;
  /// Maps and parses `path` (io_error when it cannot be opened, parse_error when malformed).
  explicit gguf_file(const std::string& path)
      : map_(path), name_(std::make_unique<std::string>(path)) {
    parse(map_.bytes());
  }
  gguf_file(gguf_file&&) noexcept = default;
  gguf_file& operator=(gguf_file&&) noexcept = default;

  /// Parses bytes the caller owns (they must outlive the result); `name` is used in messages.
  static gguf_file from_bytes(std::span<const std::byte> bytes, std::string name = "<memory>") {
    gguf_file f;
    f.name_ = std::make_unique<std::string>(std::move(name));
    f.parse(bytes);
    return f;
  }

  /// The path (or the name given to from_bytes).
  const std::string& name() const noexcept { return *name_; }
  std::uint32_t version() const noexcept { return version_; }
  std::uint32_t alignment() const noexcept { return alignment_; }
  /// Absolute byte offset of the data section.
  std::uint64_t data_offset() const noexcept { return data_offset_; }
  /// The whole file.
  std::span<const std::byte> bytes() const noexcept { return bytes_; }

  // ---- metadata ----
  /// All entries in file order.
  std::span<const gguf_kv> metadata() const noexcept { return kv_; }
  /// The entry of `key`, or nullptr.
  const gguf_kv* find(std::string_view key) const noexcept {
    auto it = std::lower_bound(kv_sorted_.begin(), kv_sorted_.end(), key,
                               [&](std::uint32_t i, std::string_view k) { return kv_[i].key < k; });
    if (it == kv_sorted_.end() || kv_[*it].key != key) return nullptr;
    return &kv_[*it];
  }
  bool contains(std::string_view key) const noexcept { return find(key) != nullptr; }
  /// The value of `key` (parse_error naming the key when it is missing).
  gguf_value value(std::string_view key) const {
    const gguf_kv* kv = find(key);
    if (kv == nullptr)
      fail(errc::parse, "tfm::io::gguf: '", *name_, "': key '", key, "' is missing.");
    return kv->value;
  }
  /// The value of `key` as T (missing or mistyped: parse_error naming the key and the type).
  template <class T>
  T get(std::string_view key) const {
    return value(key).template as<T>();
  }
  /// As get<T>, but `fallback` when the key is absent (a present, mistyped key still throws).
  template <class T>
  T get_or(std::string_view key, T fallback) const {
    const gguf_kv* kv = find(key);
    return kv == nullptr ? std::move(fallback) : kv->value.template as<T>();
  }

  // ---- tensors ----
  std::span<const gguf_tensor_info> tensors() const noexcept { return tensors_; }
  const gguf_tensor_info* find_tensor(std::string_view name) const noexcept {
    auto it =
        std::lower_bound(tensor_sorted_.begin(), tensor_sorted_.end(), name,
                         [&](std::uint32_t i, std::string_view k) { return tensors_[i].name < k; });
    if (it == tensor_sorted_.end() || tensors_[*it].name != name) return nullptr;
    return &tensors_[*it];
  }
  /// The info of tensor `name` (parse_error naming it when absent).
  const gguf_tensor_info& tensor(std::string_view name) const {
    const gguf_tensor_info* t = find_tensor(name);
    if (t == nullptr)
      fail(errc::parse, "tfm::io::gguf: '", *name_, "': there is no tensor '", name, "'.");
    return *t;
  }
  /// The tensor's bytes in the mapping (no copy).
  std::span<const std::byte> tensor_data(const gguf_tensor_info& t) const noexcept {
    if (t.n_bytes == 0) return {};
    return bytes_.subspan(static_cast<std::size_t>(t.file_offset),
                          static_cast<std::size_t>(t.n_bytes));
  }
  std::span<const std::byte> tensor_data(std::string_view name) const {
    return tensor_data(tensor(name));
  }

  /// A row-major view of tensor `name` (extents = ne reversed) without a copy. T must match the
  /// tensor's type (float: F32, double: F64, f16: F16, bf16: BF16, int8_t: I8, int32_t: I32,
  /// int64_t: I64), Rank its n_dims, and the data must be aligned for T in memory; otherwise
  /// tfm::value_error says which (dequantize, or copy, instead).
  template <class T, std::size_t Rank>
  tensor_view<const T, dyn_shape<Rank>> view(std::string_view name) const {
    const gguf_tensor_info& t = tensor(name);
    constexpr ggml_type want = element_code<T>();
    if (t.type != want)
      fail(errc::value, "tfm::io::gguf: '", *name_, "': tensor '", name, "' is ",
           ggml_type_name(t.type), ", not ", ggml_type_name(want), ".");
    if (t.n_dims != Rank)
      fail(errc::value, "tfm::io::gguf: '", *name_, "': tensor '", name, "' has ", t.n_dims,
           " dimensions, not ", Rank, ".");
    const std::byte* p = bytes_.data() + t.file_offset;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
      fail(errc::value, "tfm::io::gguf: '", *name_, "': tensor '", name,
           "' is not aligned for its element type in memory (file alignment ", alignment_, ").");
    std::array<index_t, Rank> ext{};
    for (std::size_t i = 0; i < Rank; ++i) ext[i] = t.ne[Rank - 1 - i];
    return tensor_view<const T, dyn_shape<Rank>>(reinterpret_cast<const T*>(p),
                                                 dyn_shape<Rank>::from_extents(ext));
  }

 private:
  template <class T>
  static constexpr ggml_type element_code() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, float>)
      return ggml_type::f32;
    else if constexpr (std::is_same_v<U, double>)
      return ggml_type::f64;
    else if constexpr (std::is_same_v<U, f16>)
      return ggml_type::f16;
    else if constexpr (std::is_same_v<U, bf16>)
      return ggml_type::bf16;
    else if constexpr (std::is_same_v<U, std::int8_t>)
      return ggml_type::i8;
    else if constexpr (std::is_same_v<U, std::int32_t>)
      return ggml_type::i32;
    else if constexpr (std::is_same_v<U, std::int64_t>)
      return ggml_type::i64;
    else
      static_assert(std::is_same_v<U, float>,
                    "tfm::io::gguf_file::view<T>: T must be float, double, tfm::f16, tfm::bf16, "
                    "int8_t, int32_t or int64_t; block-quantized tensors are read with "
                    "tensor_data() and tfm::dequantize.");
  }

  void parse(std::span<const std::byte> bytes);
  void parse_kvs(detail::gguf::parser& in, std::uint64_t n_kv);
  void parse_tensor_infos(detail::gguf::parser& in, std::uint64_t n_tensors);
  void check_tensor_data(detail::gguf::parser& in);

  mapped_file map_;
  // On the heap so that values, which point at it for their messages, survive a move.
  std::unique_ptr<std::string> name_ = std::make_unique<std::string>();
  std::span<const std::byte> bytes_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = gguf_limits::default_alignment;
  std::uint64_t data_offset_ = 0;
  std::vector<gguf_kv> kv_;
  std::vector<std::uint32_t> kv_sorted_;  // indices into kv_ by key
  std::vector<gguf_tensor_info> tensors_;
  std::vector<std::uint32_t> tensor_sorted_;  // indices into tensors_ by name
};

inline void gguf_file::parse(std::span<const std::byte> bytes) {
  bytes_ = bytes;
  detail::gguf::parser in(bytes, *name_);
  const auto magic = in.read<std::uint32_t>("header magic");
  if (magic != gguf_limits::magic)
    in.error(0, "header magic: not a GGUF file (the first 4 bytes are not \"GGUF\")");
  const auto version = in.read<std::uint32_t>("header version");
  if ((version & 0xFFFFu) == 0 && version != 0)
    in.error(4, "header version: big-endian GGUF files are not supported");
  if (version == 1)
    in.error(4,
             "header version: GGUF version 1 (32-bit counts, 2023) is not supported; "
             "convert the file with a current llama.cpp (versions 2 and 3 are read)");
  if (version != 2 && version != 3)
    in.error(4, "header version: unknown GGUF version ", version, " (2 and 3 are read)");
  version_ = version;
  const auto n_tensors = in.read<std::uint64_t>("header n_tensors");
  const auto n_kv = in.read<std::uint64_t>("header n_kv");
  // Each KV takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info at least
  // 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset): counts beyond that cannot be right.
  if (n_kv > in.left() / 13)
    in.error(16, "header n_kv: ", n_kv, " entries cannot fit in the ", in.left(),
             " bytes after the header");
  if (n_tensors > in.left() / 24)
    in.error(8, "header n_tensors: ", n_tensors, " tensor infos cannot fit in the ", in.left(),
             " bytes after the header");
  parse_kvs(in, n_kv);
  parse_tensor_infos(in, n_tensors);
  check_tensor_data(in);
}

inline void gguf_file::parse_kvs(detail::gguf::parser& in, std::uint64_t n_kv) {
  using detail::gguf::kv_field;
  kv_.reserve(static_cast<std::size_t>(n_kv));
  for (std::size_t i = 0; i < n_kv; ++i) {
    const std::size_t start = in.pos();
    const std::string_view key = in.string(kv_field{i, {}, "key"});
    if (key.empty()) in.error(start, kv_field{i, {}, "key"}, ": the key is empty");
    if (key.size() > gguf_limits::max_key_length)
      in.error(start, kv_field{i, {}, "key"}, ": the key is ", key.size(),
               " bytes long (at most 65535)");
    if (const std::size_t bad = utf8::first_invalid(key); bad != std::string_view::npos)
      in.error(start + 8 + bad, kv_field{i, {}, "key"}, ": the key is not valid UTF-8");
    const std::size_t type_at = in.pos();
    const auto t = in.read<std::uint32_t>(kv_field{i, key, "value type"});
    if (t > static_cast<std::uint32_t>(gguf_type::float64))
      in.error(type_at, kv_field{i, key, "value type"}, ": unknown value type ", t);
    const std::size_t value_at = in.pos();
    in.skip_value(t, 0, kv_field{i, key, "value"});
    gguf_kv kv;
    kv.key = key;
    kv.offset = start;
    kv.value = gguf_value(static_cast<gguf_type>(t), in.at(value_at), value_at, {name_.get(), key});
    kv_.push_back(kv);
  }
  kv_sorted_.resize(kv_.size());
  for (std::size_t i = 0; i < kv_.size(); ++i) kv_sorted_[i] = static_cast<std::uint32_t>(i);
  std::stable_sort(kv_sorted_.begin(), kv_sorted_.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return kv_[a].key < kv_[b].key; });
  for (std::size_t i = 1; i < kv_sorted_.size(); ++i) {
    const gguf_kv& dup = kv_[kv_sorted_[i]];
    if (dup.key == kv_[kv_sorted_[i - 1]].key)
      in.error(dup.offset, kv_field{kv_sorted_[i], dup.key, "key"},
               ": duplicate key (first defined at byte ", kv_[kv_sorted_[i - 1]].offset, ")");
  }
  if (const gguf_kv* a = find("general.alignment")) {
    if (a->value.type() != gguf_type::uint32)
      in.error(a->offset, "key 'general.alignment': holds ", gguf_type_name(a->value.type()),
               ", not uint32");
    const auto al = detail::gguf::load<std::uint32_t>(in.at(a->value.offset()));
    if (al == 0 || (al & (al - 1)) != 0 || al > gguf_limits::max_alignment)
      in.error(a->value.offset(), "key 'general.alignment': ", al,
               " is not a power of two in [1, 2^30]");
    alignment_ = al;
  }
}

inline void gguf_file::parse_tensor_infos(detail::gguf::parser& in, std::uint64_t n_tensors) {
  using detail::gguf::tensor_field;
  tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::size_t i = 0; i < n_tensors; ++i) {
    gguf_tensor_info t;
    t.info_offset = in.pos();
    const std::string_view name = in.string(tensor_field{i, {}, "name"});
    if (name.empty() || name.size() > gguf_limits::max_tensor_name)
      in.error(t.info_offset, tensor_field{i, {}, "name"}, ": the name is ", name.size(),
               " bytes long (1..64 allowed)");
    if (const std::size_t bad = utf8::first_invalid(name); bad != std::string_view::npos)
      in.error(t.info_offset + 8 + bad, tensor_field{i, {}, "name"}, ": not valid UTF-8");
    t.name = name;
    const std::size_t dims_at = in.pos();
    t.n_dims = in.read<std::uint32_t>(tensor_field{i, name, "n_dims"});
    if (t.n_dims > gguf_limits::max_dims)
      in.error(dims_at, tensor_field{i, name, "n_dims"}, ": ", t.n_dims, " dimensions (at most 4)");
    std::uint64_t count = 1;
    for (std::uint32_t d = 0; d < t.n_dims; ++d) {
      const std::size_t at = in.pos();
      const auto ne = in.read<std::uint64_t>(tensor_field{i, name, "dims"});
      if (ne > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        in.error(at, tensor_field{i, name, "dims"}, ": ne[", d, "] = ", ne, " exceeds 2^63-1");
      if (ne != 0 &&
          count > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / ne)
        in.error(at, tensor_field{i, name, "dims"}, ": the element count overflows 2^63-1 at ne[",
                 d, "] = ", ne);
      count *= ne;
      t.ne[d] = static_cast<std::int64_t>(ne);
    }
    t.n_elements = count;
    const std::size_t type_at = in.pos();
    const auto code = in.read<std::uint32_t>(tensor_field{i, name, "type"});
    const ggml_type_info* ti = find_ggml_type(code);
    if (ti == nullptr)
      in.error(type_at, tensor_field{i, name, "type"}, ": unknown ggml type ", code);
    t.type = ti->type;
    if (static_cast<std::uint64_t>(t.ne[0]) % ti->block_elements != 0)
      in.error(dims_at, tensor_field{i, name, "dims"}, ": ne[0] = ", t.ne[0],
               " is not a multiple of the ", ti->name, " block of ", ti->block_elements);
    const std::uint64_t blocks = count / ti->block_elements;
    if (blocks > std::numeric_limits<std::uint64_t>::max() / ti->block_bytes)
      in.error(dims_at, tensor_field{i, name, "dims"}, ": the byte size overflows");
    t.n_bytes = blocks * ti->block_bytes;
    const std::size_t off_at = in.pos();
    t.offset = in.read<std::uint64_t>(tensor_field{i, name, "offset"});
    if (t.offset % alignment_ != 0)
      in.error(off_at, tensor_field{i, name, "offset"}, ": ", t.offset,
               " is not a multiple of the alignment ", alignment_);
    tensors_.push_back(t);
  }
  tensor_sorted_.resize(tensors_.size());
  for (std::size_t i = 0; i < tensors_.size(); ++i)
    tensor_sorted_[i] = static_cast<std::uint32_t>(i);
  std::stable_sort(
      tensor_sorted_.begin(), tensor_sorted_.end(),
      [&](std::uint32_t a, std::uint32_t b) { return tensors_[a].name < tensors_[b].name; });
  for (std::size_t i = 1; i < tensor_sorted_.size(); ++i) {
    const gguf_tensor_info& dup = tensors_[tensor_sorted_[i]];
    if (dup.name == tensors_[tensor_sorted_[i - 1]].name)
      in.error(dup.info_offset, tensor_field{tensor_sorted_[i], dup.name, "name"},
               ": duplicate tensor name (first defined at byte ",
               tensors_[tensor_sorted_[i - 1]].info_offset, ")");
  }
}

inline void gguf_file::check_tensor_data(detail::gguf::parser& in) {
  using detail::gguf::tensor_field;
  const std::uint64_t end_of_infos = in.pos();
  data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
  const std::uint64_t size = bytes_.size();
  std::vector<std::uint32_t> by_offset;
  by_offset.reserve(tensors_.size());
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    gguf_tensor_info& t = tensors_[i];
    const std::uint64_t avail = size > data_offset_ ? size - data_offset_ : 0;
    if (t.n_bytes > 0 && (t.offset > avail || t.n_bytes > avail - t.offset))
      in.error(t.info_offset, tensor_field{i, t.name, "offset"}, ": data [", t.offset, ", ",
               t.offset, " + ", t.n_bytes, ") lies outside the ", avail,
               " bytes of the data section at byte ", data_offset_);
    t.file_offset = data_offset_ + t.offset;
    if (t.n_bytes > 0) by_offset.push_back(static_cast<std::uint32_t>(i));
  }
  std::sort(by_offset.begin(), by_offset.end(), [&](std::uint32_t a, std::uint32_t b) {
    return tensors_[a].offset < tensors_[b].offset;
  });
  for (std::size_t k = 1; k < by_offset.size(); ++k) {
    const gguf_tensor_info& p = tensors_[by_offset[k - 1]];
    const gguf_tensor_info& t = tensors_[by_offset[k]];
    if (p.offset + p.n_bytes > t.offset)
      in.error(t.info_offset, tensor_field{by_offset[k], t.name, "offset"}, ": data at ", t.offset,
               " overlaps tensor '", p.name, "' at [", p.offset, ", ", p.offset + p.n_bytes, ")");
  }
}

// ================================================================================================
// Writer

namespace detail::gguf {

template <class T>
inline constexpr bool is_string_like_v =
    std::is_convertible_v<const T&, std::string_view> && !std::is_same_v<T, std::nullptr_t>;

/// The GGUF value type a C++ scalar is written as (integers by width and signedness).
template <class T>
constexpr gguf_type scalar_type() noexcept {
  if constexpr (std::is_same_v<T, bool>)
    return gguf_type::boolean;
  else if constexpr (std::is_same_v<T, float>)
    return gguf_type::float32;
  else if constexpr (std::is_same_v<T, double>)
    return gguf_type::float64;
  else if constexpr (std::is_signed_v<T>)
    return sizeof(T) == 1   ? gguf_type::int8
           : sizeof(T) == 2 ? gguf_type::int16
           : sizeof(T) == 4 ? gguf_type::int32
                            : gguf_type::int64;
  else
    return sizeof(T) == 1   ? gguf_type::uint8
           : sizeof(T) == 2 ? gguf_type::uint16
           : sizeof(T) == 4 ? gguf_type::uint32
                            : gguf_type::uint64;
}

template <class T>
concept scalar = (std::is_arithmetic_v<T> && !is_char_v<T> && sizeof(T) <= 8);

/// A range (begin/end; <ranges> is not included to keep this header cheap) and its elements.
template <class T>
concept iterable = requires(const T& t) {
  std::begin(t) != std::end(t);
  *std::begin(t);
};
template <class T>
using element_t = std::remove_cvref_t<decltype(*std::begin(std::declval<const T&>()))>;

template <class T>
concept value_range =
    iterable<T> && !is_string_like_v<T> &&
    (scalar<element_t<T>> || is_string_like_v<element_t<T>> || iterable<element_t<T>>);

inline void put(std::vector<std::byte>& out, const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}
template <class T>
void put_scalar(std::vector<std::byte>& out, T v) {
  if constexpr (std::is_same_v<T, bool>) {
    const std::uint8_t b = v ? 1 : 0;
    put(out, &b, 1);
  } else {
    put(out, &v, sizeof(T));
  }
}
inline void put_string(std::vector<std::byte>& out, std::string_view s) {
  const std::uint64_t n = s.size();
  put(out, &n, 8);
  put(out, s.data(), s.size());
}

template <class T>
constexpr gguf_type type_of() noexcept {
  if constexpr (is_string_like_v<T>)
    return gguf_type::string;
  else if constexpr (scalar<T>)
    return scalar_type<T>();
  else
    return gguf_type::array;
}

/// Serializes a value (without its type tag).
template <class T>
void put_value(std::vector<std::byte>& out, const T& v) {
  if constexpr (is_string_like_v<T>) {
    put_string(out, std::string_view(v));
  } else if constexpr (scalar<T>) {
    put_scalar(out, v);
  } else {
    using E = element_t<T>;
    const auto et = static_cast<std::uint32_t>(type_of<E>());
    put(out, &et, 4);
    const std::size_t count_at = out.size();
    std::uint64_t n = 0;
    put(out, &n, 8);
    for (const auto& e : v) {
      put_value<E>(out, static_cast<const E&>(e));
      ++n;
    }
    std::memcpy(out.data() + count_at, &n, 8);
  }
}
}  // namespace detail::gguf

/// Streaming GGUF writer (see the header's contract).
///
///   gguf_writer w("model.gguf");
///   w.add("general.architecture", "llama");                 // string
///   w.add("llama.block_count", std::uint32_t{30});          // uint32
///   w.add("tokenizer.ggml.tokens", tokens);                  // array of string
///   w.add_tensor("token_embd.weight", {576, 49152}, ggml_type::f16, bytes);  // ne order
///   w.finish();
///
/// add_tensor() keeps a reference to the bytes until finish(). For data produced on the fly use
/// add_tensor_info() for every tensor, then write_header(), then write_tensor_data() once per
/// tensor in the same order, then finish().
class gguf_writer {
 public:
  /// Writes to `path` (via path.tmp, renamed by finish()).
  explicit gguf_writer(std::string path) : path_(std::move(path)) {}
  /// Appends the file to `out` (for tests and in-memory conversion).
  explicit gguf_writer(std::vector<std::byte>& out) : mem_(&out) {}
  gguf_writer(const gguf_writer&) = delete;
  gguf_writer& operator=(const gguf_writer&) = delete;
  ~gguf_writer() {
    if (file_ != nullptr) {
      std::fclose(file_);
      std::remove(tmp_path().c_str());
    }
  }

  /// Sets the data alignment and records it as `general.alignment` (uint32), like gguf-py's
  /// add_custom_alignment. Must be a power of two in [1, 2^30].
  void set_alignment(std::uint32_t alignment) { add("general.alignment", alignment); }

  /// Adds a metadata entry: an arithmetic value (integers by width and signedness, bool, float,
  /// double), a string, or a range of those (possibly nested: an array of arrays).
  template <class T>
  requires(detail::gguf::scalar<T> || detail::gguf::is_string_like_v<T> ||
           detail::gguf::value_range<T>) void add(std::string_view key, const T& value) {
    constexpr gguf_type t = detail::gguf::type_of<T>();
    if (key == "general.alignment") {
      if constexpr (t != gguf_type::uint32) {
        fail(errc::value, "tfm::io::gguf_writer: general.alignment must be a uint32, not ",
             gguf_type_name(t), ".");
      } else {
        check_alignment(static_cast<std::uint32_t>(value));
        alignment_ = static_cast<std::uint32_t>(value);
      }
    }
    begin_kv(key, t);
    detail::gguf::put_value(kv_bytes_, value);
  }
  void add(std::string_view key, std::initializer_list<std::string_view> strings) {
    add(key, std::vector<std::string_view>(strings));
  }
  /// Copies a value read from another file (any type, nested arrays included).
  void add(std::string_view key, const gguf_value& value) {
    if (key == "general.alignment") {
      if (value.type() != gguf_type::uint32)
        fail(errc::value, "tfm::io::gguf_writer: general.alignment must be a uint32, not ",
             gguf_type_name(value.type()), ".");
      const auto a = value.as<std::uint32_t>();
      check_alignment(a);
      alignment_ = a;
    }
    begin_kv(key, value.type());
    const auto raw = value.raw_bytes();
    detail::gguf::put(kv_bytes_, raw.data(), raw.size());
  }

  /// Declares a tensor: ne in ggml order (ne[0] fastest, at most 4 dims, ne[0] a multiple of
  /// the type's block). Its bytes come later from write_tensor_data().
  void add_tensor_info(std::string_view name, std::span<const std::int64_t> ne, ggml_type type) {
    add_info(name, ne, type, {}, false);
  }
  void add_tensor_info(std::string_view name, std::initializer_list<std::int64_t> ne,
                       ggml_type type) {
    add_tensor_info(name, std::span<const std::int64_t>(ne.begin(), ne.size()), type);
  }
  /// Declares a tensor with its bytes (referenced, not copied: they must live until finish()).
  void add_tensor(std::string_view name, std::span<const std::int64_t> ne, ggml_type type,
                  std::span<const std::byte> data) {
    add_info(name, ne, type, data, true);
  }
  void add_tensor(std::string_view name, std::initializer_list<std::int64_t> ne, ggml_type type,
                  std::span<const std::byte> data) {
    add_tensor(name, std::span<const std::int64_t>(ne.begin(), ne.size()), type, data);
  }

  /// Writes the header, the metadata, the tensor infos and the padding before the data.
  void write_header() {
    if (state_ != state::adding)
      fail(errc::value, "tfm::io::gguf_writer: the header is already written.");
    open();
    std::vector<std::byte> h;
    const std::uint32_t magic = gguf_limits::magic, version = 3;
    const std::uint64_t nt = tensors_.size(), nkv = n_kv_;
    detail::gguf::put(h, &magic, 4);
    detail::gguf::put(h, &version, 4);
    detail::gguf::put(h, &nt, 8);
    detail::gguf::put(h, &nkv, 8);
    h.insert(h.end(), kv_bytes_.begin(), kv_bytes_.end());
    std::uint64_t offset = 0;
    for (const pending& t : tensors_) {
      detail::gguf::put_string(h, t.name);
      const std::uint32_t nd = t.n_dims;
      detail::gguf::put(h, &nd, 4);
      for (std::uint32_t d = 0; d < nd; ++d) {
        const auto v = static_cast<std::uint64_t>(t.ne[d]);
        detail::gguf::put(h, &v, 8);
      }
      const auto code = static_cast<std::uint32_t>(t.type);
      detail::gguf::put(h, &code, 4);
      detail::gguf::put(h, &offset, 8);
      offset += padded(t.n_bytes);
    }
    h.resize(static_cast<std::size_t>(padded(h.size())), std::byte{0});
    emit(h.data(), h.size());
    state_ = state::data;
  }

  /// Writes the data of the next declared tensor (its size must match) and its padding.
  void write_tensor_data(std::span<const std::byte> data) {
    if (state_ == state::adding) write_header();
    if (state_ != state::data || next_ >= tensors_.size())
      fail(errc::value,
           "tfm::io::gguf_writer: write_tensor_data called after every declared "
           "tensor was written.");
    const pending& t = tensors_[next_];
    if (data.size() != t.n_bytes)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", t.name, "' needs ", t.n_bytes,
           " bytes of ", ggml_type_name(t.type), " data, got ", data.size(), ".");
    emit(data.data(), data.size());
    static constexpr std::byte zeros[64] = {};
    for (std::uint64_t pad = padded(t.n_bytes) - t.n_bytes; pad > 0;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(pad, 64));
      emit(zeros, n);
      pad -= n;
    }
    ++next_;
  }

  /// Writes what is left (the header if needed, tensors declared with their bytes), closes and
  /// renames the file. A tensor declared without bytes and not yet written is an error.
  void finish() {
    if (state_ == state::done) fail(errc::value, "tfm::io::gguf_writer: finish() called twice.");
    if (state_ == state::adding) write_header();
    while (next_ < tensors_.size()) {
      const pending& t = tensors_[next_];
      if (!t.has_data)
        fail(errc::value, "tfm::io::gguf_writer: tensor '", t.name,
             "' was declared without data and never written.");
      write_tensor_data(t.data);
    }
    if (file_ != nullptr) {
      const bool ok = std::fflush(file_) == 0;
      const bool closed = std::fclose(file_) == 0;
      file_ = nullptr;
      if (!ok || !closed) {
        std::remove(tmp_path().c_str());
        fail(errc::io, "tfm::io::gguf_writer: cannot write '", tmp_path(), "'.");
      }
      if (std::rename(tmp_path().c_str(), path_.c_str()) != 0)
        fail(errc::io, "tfm::io::gguf_writer: cannot rename '", tmp_path(), "' to '", path_, "'.");
    }
    state_ = state::done;
  }

  std::uint32_t alignment() const noexcept { return alignment_; }

 private:
  enum class state { adding, data, done };
  struct pending {
    std::string name;
    std::uint32_t n_dims;
    std::array<std::int64_t, gguf_limits::max_dims> ne;
    ggml_type type;
    std::uint64_t n_bytes;
    std::span<const std::byte> data;
    bool has_data;
  };

  static void check_alignment(std::uint32_t a) {
    if (a == 0 || (a & (a - 1)) != 0 || a > gguf_limits::max_alignment)
      fail(errc::value, "tfm::io::gguf_writer: alignment ", a,
           " is not a power of two in [1, 2^30].");
  }
  std::uint64_t padded(std::uint64_t n) const noexcept {
    return (n + alignment_ - 1) / alignment_ * alignment_;
  }
  std::string tmp_path() const { return path_ + ".tmp"; }

  void begin_kv(std::string_view key, gguf_type t) {
    if (state_ != state::adding)
      fail(errc::value, "tfm::io::gguf_writer: key '", key,
           "' added after the header was written.");
    if (key.empty() || key.size() > gguf_limits::max_key_length || !utf8::is_valid(key))
      fail(errc::value, "tfm::io::gguf_writer: key '", key.substr(0, 80),
           "' must be 1..65535 bytes of valid UTF-8.");
    if (!keys_.emplace(key).second)
      fail(errc::value, "tfm::io::gguf_writer: key '", key, "' is added twice.");
    detail::gguf::put_string(kv_bytes_, key);
    const auto code = static_cast<std::uint32_t>(t);
    detail::gguf::put(kv_bytes_, &code, 4);
    ++n_kv_;
  }

  void add_info(std::string_view name, std::span<const std::int64_t> ne, ggml_type type,
                std::span<const std::byte> data, bool has_data) {
    if (state_ != state::adding)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name,
           "' added after the header was written.");
    if (name.empty() || name.size() > gguf_limits::max_tensor_name || !utf8::is_valid(name))
      fail(errc::value, "tfm::io::gguf_writer: tensor name '", name.substr(0, 80),
           "' must be 1..64 bytes of valid UTF-8.");
    if (names_.count(std::string(name)) != 0)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name, "' is added twice.");
    const ggml_type_info* ti = find_ggml_type(static_cast<std::uint32_t>(type));
    if (ti == nullptr)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name, "' has an unknown ggml type.");
    if (ne.size() > gguf_limits::max_dims)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name, "' has ", ne.size(),
           " dimensions (at most 4).");
    pending p{std::string(name), static_cast<std::uint32_t>(ne.size()), {1, 1, 1, 1}, type, 0, data,
              has_data};
    std::uint64_t count = 1;
    for (std::size_t d = 0; d < ne.size(); ++d) {
      if (ne[d] < 0 || (ne[d] != 0 && count > static_cast<std::uint64_t>(
                                                  std::numeric_limits<std::int64_t>::max()) /
                                                  static_cast<std::uint64_t>(ne[d])))
        fail(errc::value, "tfm::io::gguf_writer: tensor '", name,
             "' has a negative or overflowing dimension ne[", d, "] = ", ne[d], ".");
      count *= static_cast<std::uint64_t>(ne[d]);
      p.ne[d] = ne[d];
    }
    if (static_cast<std::uint64_t>(p.ne[0]) % ti->block_elements != 0)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name, "': ne[0] = ", p.ne[0],
           " is not a multiple of the ", ti->name, " block of ", ti->block_elements, ".");
    if (count / ti->block_elements > std::numeric_limits<std::uint64_t>::max() / ti->block_bytes)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name, "' is too large.");
    p.n_bytes = count / ti->block_elements * ti->block_bytes;
    if (has_data && data.size() != p.n_bytes)
      fail(errc::value, "tfm::io::gguf_writer: tensor '", name, "' needs ", p.n_bytes, " bytes of ",
           ti->name, " data, got ", data.size(), ".");
    names_.emplace(name);
    tensors_.push_back(std::move(p));
  }

  void open() {
    if (mem_ != nullptr) return;
    file_ = std::fopen(tmp_path().c_str(), "wb");
    if (file_ == nullptr) fail(errc::io, "tfm::io::gguf_writer: cannot create '", tmp_path(), "'.");
  }
  void emit(const void* p, std::size_t n) {
    if (n == 0) return;
    if (mem_ != nullptr) {
      detail::gguf::put(*mem_, p, n);
      return;
    }
    if (std::fwrite(p, 1, n, file_) != n)
      fail(errc::io, "tfm::io::gguf_writer: cannot write '", tmp_path(), "'.");
  }

  std::string path_;
  std::vector<std::byte>* mem_ = nullptr;
  std::FILE* file_ = nullptr;
  state state_ = state::adding;
  std::uint32_t alignment_ = gguf_limits::default_alignment;
  std::vector<std::byte> kv_bytes_;
  std::uint64_t n_kv_ = 0;
  std::unordered_set<std::string> keys_;
  std::unordered_set<std::string> names_;
  std::vector<pending> tensors_;
  std::size_t next_ = 0;
};

}  // namespace io
TFM_END_NAMESPACE
