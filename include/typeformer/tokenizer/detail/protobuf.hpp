// typeformer/tokenizer/detail/protobuf.hpp
//
// WHAT THIS REPRESENTS
//   A minimal, bounds-checked reader for the protocol buffers wire format (proto2/proto3 binary
//   encoding, https://protobuf.dev/programming-guides/encoding/), enough to read SentencePiece
//   .model files without libprotobuf. It never allocates and never reads outside the buffer it
//   was given; every malformed input ends in tfm::fail(errc::parse, ...) naming `what` (the file
//   kind) and the byte offset.
//
// CONTRACTS
//   - A varint is at most 10 bytes; the 10th byte may only carry the top bit of a 64-bit value.
//   - A length-delimited field's length must fit inside the remaining bytes of its message.
//   - Wire types 3 and 4 (deprecated groups) and 6, 7 are rejected; field number 0 is rejected.
//   - Nested messages are read with sub-readers; the depth is capped by `max_depth` so hostile
//     input cannot exhaust the stack.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

TFM_BEGIN_NAMESPACE
namespace detail::protobuf {

/// Wire types of the binary encoding.
enum class wire : std::uint8_t { varint = 0, fixed64 = 1, len = 2, fixed32 = 5 };

/// Deepest nesting a reader accepts (SentencePiece needs 2).
inline constexpr int max_depth = 16;

/// One field of a message: its number, wire type, and payload (integer value for varint and
/// fixed types, byte range for length-delimited ones).
struct field {
  std::uint32_t number = 0;
  wire type = wire::varint;
  std::uint64_t value = 0;  ///< varint / fixed32 / fixed64 payload
  std::string_view bytes;   ///< length-delimited payload
  std::size_t offset = 0;   ///< offset of the tag within the top-level buffer
};

/// Reads the fields of one message in order. `base` is the offset of `data` within the whole
/// file, so that error messages can point at the byte.
class reader {
 public:
  reader(std::string_view data, const char* what, std::size_t base = 0, int depth = 0)
      : data_(data), what_(what), base_(base), depth_(depth) {
    if (depth_ > max_depth)
      fail(errc::parse, what_, ": messages are nested deeper than ", max_depth, " levels at byte ",
           base_, ".");
  }

  bool done() const noexcept { return pos_ >= data_.size(); }

  /// Reads the next field. Requires !done().
  field next() {
    field f;
    f.offset = base_ + pos_;
    const std::uint64_t tag = read_varint();
    const std::uint64_t number = tag >> 3;
    const auto type = static_cast<std::uint32_t>(tag & 7);
    if (number == 0 || number > 0x1FFFFFFFu)
      fail(errc::parse, what_, ": invalid field number ", number, " at byte ", f.offset, ".");
    f.number = static_cast<std::uint32_t>(number);
    switch (type) {
      case 0:
        f.type = wire::varint;
        f.value = read_varint();
        break;
      case 1:
        f.type = wire::fixed64;
        f.value = read_fixed(8);
        break;
      case 2: {
        f.type = wire::len;
        const std::uint64_t n = read_varint();
        if (n > data_.size() - pos_)
          fail(errc::parse, what_, ": field ", f.number, " at byte ", f.offset, " claims ", n,
               " bytes but only ", data_.size() - pos_, " remain in its message.");
        f.bytes = data_.substr(pos_, static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        break;
      }
      case 5:
        f.type = wire::fixed32;
        f.value = read_fixed(4);
        break;
      default:
        fail(errc::parse, what_, ": unsupported wire type ", type, " for field ", f.number,
             " at byte ", f.offset, ".");
    }
    return f;
  }

  /// A reader over a length-delimited field's payload, one level deeper.
  reader sub(const field& f) const {
    expect(f, wire::len);
    const std::size_t off = static_cast<std::size_t>(f.bytes.data() - data_.data());
    return reader(f.bytes, what_, base_ + off, depth_ + 1);
  }

  /// Checks the wire type of f; fails with a sentence naming the field otherwise.
  void expect(const field& f, wire t) const {
    if (f.type != t)
      fail(errc::parse, what_, ": field ", f.number, " at byte ", f.offset, " has wire type ",
           static_cast<int>(f.type), ", expected ", static_cast<int>(t), ".");
  }

  /// Payload of a varint field as a (two's complement) int32, as protobuf does for int32.
  std::int32_t as_int32(const field& f) const {
    expect(f, wire::varint);
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(f.value));
  }
  bool as_bool(const field& f) const {
    expect(f, wire::varint);
    return f.value != 0;
  }
  float as_float(const field& f) const {
    expect(f, wire::fixed32);
    const auto bits = static_cast<std::uint32_t>(f.value);
    float x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
  }
  std::string_view as_bytes(const field& f) const {
    expect(f, wire::len);
    return f.bytes;
  }

 private:
  std::uint64_t read_varint() {
    std::uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      if (pos_ >= data_.size())
        fail(errc::parse, what_, ": truncated varint at byte ", base_ + pos_, ".");
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      if (i == 9 && b > 1)
        fail(errc::parse, what_, ": varint longer than 64 bits at byte ", base_ + pos_ - 1, ".");
      v |= static_cast<std::uint64_t>(b & 0x7F) << (7 * i);
      if (b < 0x80) return v;
    }
    fail(errc::parse, what_, ": varint longer than 10 bytes at byte ", base_ + pos_, ".");
  }

  std::uint64_t read_fixed(std::size_t n) {
    if (data_.size() - pos_ < n)
      fail(errc::parse, what_, ": truncated fixed", n * 8, " field at byte ", base_ + pos_, ".");
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v |= static_cast<std::uint64_t>(static_cast<unsigned char>(data_[pos_ + i])) << (8 * i);
    pos_ += n;
    return v;
  }

  std::string_view data_;
  const char* what_;
  std::size_t base_;
  int depth_;
  std::size_t pos_ = 0;
};

}  // namespace detail::protobuf
TFM_END_NAMESPACE
