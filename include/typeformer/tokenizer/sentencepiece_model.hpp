// typeformer/tokenizer/sentencepiece_model.hpp
//
// WHAT THIS REPRESENTS
//   The contents of a SentencePiece `.model` file: a serialized `sentencepiece.ModelProto`
//   (src/sentencepiece_model.proto in github.com/google/sentencepiece), read field by field with
//   the hardened wire-format reader in detail/protobuf.hpp. Only the fields that change encoding
//   or decoding are kept; unknown fields are skipped, as protobuf does.
//
// CONTRACTS
//   parse_sentencepiece_model(bytes) either returns a model that passes every check that
//   SentencePiece's ModelInterface::InitializePieces makes, or fails with tfm::parse_error:
//     - every piece is non-empty and appears once; piece types are 1..6;
//     - exactly one UNKNOWN piece;
//     - BYTE pieces are spelled <0xXX> (upper-case hex), appear only with byte_fallback, and
//       with byte_fallback all 256 are present;
//     - model_type is UNIGRAM, BPE, WORD or CHAR; at most `max_pieces` pieces.
//   It never reads outside `bytes` and allocates at most O(bytes.size()).
//
// Field numbers (sentencepiece_model.proto, v0.2):
//   ModelProto     1 pieces, 2 trainer_spec, 3 normalizer_spec, 5 denormalizer_spec
//   SentencePiece  1 piece, 2 score (float), 3 type
//   TrainerSpec    3 model_type, 4 vocab_size, 24 treat_whitespace_as_suffix, 35 byte_fallback,
//                  40..43 unk/bos/eos/pad id, 44 unk_surface, 45..48 unk/bos/eos/pad piece
//   NormalizerSpec 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
//                  5 escape_whitespaces
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/detail/protobuf.hpp"

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

TFM_BEGIN_NAMESPACE

/// Kinds of pieces (ModelProto.SentencePiece.Type).
enum class sp_piece_type : std::uint8_t {
  normal = 1,        ///< ordinary subword
  unknown = 2,       ///< <unk>
  control = 3,       ///< <s>, </s>, ...: never produced by encode, invisible in decode
  user_defined = 4,  ///< always kept as one token when it appears in the text
  unused = 5,        ///< in the vocabulary but never produced
  byte = 6,          ///< <0xXX>, used by byte fallback
};

/// Segmentation algorithm (TrainerSpec.ModelType).
enum class sp_model_type : std::uint8_t { unigram = 1, bpe = 2, word = 3, character = 4 };

struct sp_piece {
  std::string piece;
  float score = 0.0f;
  sp_piece_type type = sp_piece_type::normal;
};

/// NormalizerSpec; defaults are the proto defaults.
struct sp_normalizer_spec {
  std::string name;
  std::string precompiled_charsmap;  ///< empty: identity normalization
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

/// The TrainerSpec fields that affect encoding and decoding; defaults are the proto defaults.
struct sp_trainer_spec {
  sp_model_type model_type = sp_model_type::unigram;
  std::int32_t vocab_size = 8000;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  std::string unk_surface = " \xE2\x81\x87 ";  ///< what decode prints for <unk> (" ⁇ ")
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
};

struct sp_model_proto {
  std::vector<sp_piece> pieces;
  sp_trainer_spec trainer;
  sp_normalizer_spec normalizer;
  std::optional<sp_normalizer_spec> denormalizer;
};

/// Most pieces a model may have (ids are int32; real models have <= 256k).
inline constexpr std::size_t sp_max_pieces = std::size_t{1} << 24;

namespace detail {

/// The byte a `<0xXX>` piece stands for, or -1 when the spelling is not exactly that form
/// (SentencePiece's PieceToByte accepts only upper-case hex).
inline int sp_piece_to_byte(std::string_view p) noexcept {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

/// "<0xXX>" for a byte (SentencePiece's ByteToPiece).
inline std::string sp_byte_to_piece(unsigned char b) {
  static constexpr char digits[] = "0123456789ABCDEF";
  return std::string{'<', '0', 'x', digits[b >> 4], digits[b & 15], '>'};
}

inline sp_normalizer_spec sp_parse_normalizer(protobuf::reader r) {
  sp_normalizer_spec s;
  while (!r.done()) {
    const auto f = r.next();
    switch (f.number) {
      case 1:
        s.name = std::string(r.as_bytes(f));
        break;
      case 2:
        s.precompiled_charsmap = std::string(r.as_bytes(f));
        break;
      case 3:
        s.add_dummy_prefix = r.as_bool(f);
        break;
      case 4:
        s.remove_extra_whitespaces = r.as_bool(f);
        break;
      case 5:
        s.escape_whitespaces = r.as_bool(f);
        break;
      default:
        break;  // unknown or training-only field
    }
  }
  return s;
}

inline sp_trainer_spec sp_parse_trainer(protobuf::reader r) {
  sp_trainer_spec s;
  while (!r.done()) {
    const auto f = r.next();
    switch (f.number) {
      case 3: {
        const std::int32_t t = r.as_int32(f);
        if (t < 1 || t > 4)
          fail(errc::parse, "sentencepiece model: unknown model_type ", t, " at byte ", f.offset,
               " (expected 1 UNIGRAM, 2 BPE, 3 WORD or 4 CHAR).");
        s.model_type = static_cast<sp_model_type>(t);
        break;
      }
      case 4:
        s.vocab_size = r.as_int32(f);
        break;
      case 24:
        s.treat_whitespace_as_suffix = r.as_bool(f);
        break;
      case 35:
        s.byte_fallback = r.as_bool(f);
        break;
      case 40:
        s.unk_id = r.as_int32(f);
        break;
      case 41:
        s.bos_id = r.as_int32(f);
        break;
      case 42:
        s.eos_id = r.as_int32(f);
        break;
      case 43:
        s.pad_id = r.as_int32(f);
        break;
      case 44:
        s.unk_surface = std::string(r.as_bytes(f));
        break;
      case 45:
        s.unk_piece = std::string(r.as_bytes(f));
        break;
      case 46:
        s.bos_piece = std::string(r.as_bytes(f));
        break;
      case 47:
        s.eos_piece = std::string(r.as_bytes(f));
        break;
      case 48:
        s.pad_piece = std::string(r.as_bytes(f));
        break;
      default:
        break;
    }
  }
  return s;
}

inline sp_piece sp_parse_piece(protobuf::reader r, std::size_t index) {
  sp_piece p;
  while (!r.done()) {
    const auto f = r.next();
    switch (f.number) {
      case 1:
        p.piece = std::string(r.as_bytes(f));
        break;
      case 2:
        p.score = r.as_float(f);
        break;
      case 3: {
        const std::int32_t t = r.as_int32(f);
        if (t < 1 || t > 6)
          fail(errc::parse, "sentencepiece model: piece ", index, " has unknown type ", t,
               " at byte ", f.offset, " (expected 1..6).");
        p.type = static_cast<sp_piece_type>(t);
        break;
      }
      default:
        break;
    }
  }
  return p;
}

}  // namespace detail

/// Parses and validates a serialized ModelProto (the bytes of a .model file).
inline sp_model_proto parse_sentencepiece_model(std::string_view bytes) {
  namespace pb = detail::protobuf;
  constexpr const char* what = "sentencepiece model";
  if (bytes.empty()) fail(errc::parse, what, ": the file is empty.");
  sp_model_proto m;
  pb::reader r(bytes, what);
  while (!r.done()) {
    const auto f = r.next();
    switch (f.number) {
      case 1:
        if (m.pieces.size() >= sp_max_pieces)
          fail(errc::parse, what, ": more than ", sp_max_pieces, " pieces.");
        m.pieces.push_back(detail::sp_parse_piece(r.sub(f), m.pieces.size()));
        break;
      case 2:
        m.trainer = detail::sp_parse_trainer(r.sub(f));
        break;
      case 3:
        m.normalizer = detail::sp_parse_normalizer(r.sub(f));
        break;
      case 5:
        m.denormalizer = detail::sp_parse_normalizer(r.sub(f));
        break;
      default:
        break;  // self_test_data (4) and extensions are not needed
    }
  }

  // The checks of ModelInterface::InitializePieces (sentencepiece/src/model_interface.cc).
  if (m.pieces.empty()) fail(errc::parse, what, ": the model has no pieces.");
  std::unordered_set<std::string_view> seen;
  seen.reserve(m.pieces.size());
  bool bytes_found[256] = {};
  int unk = -1;
  for (std::size_t i = 0; i < m.pieces.size(); ++i) {
    const sp_piece& p = m.pieces[i];
    if (p.piece.empty()) fail(errc::parse, what, ": piece ", i, " is empty.");
    if (!seen.insert(p.piece).second)
      fail(errc::parse, what, ": piece ", i, " \"", p.piece, "\" is defined twice.");
    if (p.type == sp_piece_type::unknown) {
      if (unk >= 0)
        fail(errc::parse, what, ": pieces ", unk, " and ", i, " are both of type UNKNOWN.");
      unk = static_cast<int>(i);
    }
    if (p.type == sp_piece_type::byte) {
      if (!m.trainer.byte_fallback)
        fail(errc::parse, what, ": byte piece ", i, " \"", p.piece,
             "\" is present although byte_fallback is false.");
      const int b = detail::sp_piece_to_byte(p.piece);
      if (b < 0)
        fail(errc::parse, what, ": byte piece ", i, " \"", p.piece,
             "\" is not of the form <0xXX>.");
      bytes_found[b] = true;
    }
  }
  if (unk < 0) fail(errc::parse, what, ": no piece has type UNKNOWN.");
  if (m.trainer.byte_fallback) {
    for (int b = 0; b < 256; ++b)
      if (!bytes_found[b])
        fail(errc::parse, what, ": byte_fallback is set but the byte piece ",
             detail::sp_byte_to_piece(static_cast<unsigned char>(b)), " is missing.");
  }
  return m;
}

namespace detail {
/// Reads a whole file; io_error when it cannot be opened or read, parse_error above `max_bytes`.
inline std::string sp_read_file(const std::string& path, const char* what,
                                std::size_t max_bytes = std::size_t{1} << 31) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(errc::io, what, ": cannot open \"", path, "\".");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) fail(errc::io, what, ": cannot determine the size of \"", path, "\".");
  if (static_cast<std::uint64_t>(size) > max_bytes)
    fail(errc::parse, what, ": \"", path, "\" is ", static_cast<std::int64_t>(size),
         " bytes, more than the limit of ", max_bytes, ".");
  in.seekg(0, std::ios::beg);
  std::string data(static_cast<std::size_t>(size), '\0');
  if (size > 0 && !in.read(data.data(), size))
    fail(errc::io, what, ": cannot read \"", path, "\".");
  return data;
}
}  // namespace detail

/// Reads and parses a .model file.
inline sp_model_proto load_sentencepiece_model(const std::string& path) {
  return parse_sentencepiece_model(detail::sp_read_file(path, "sentencepiece model"));
}

TFM_END_NAMESPACE
