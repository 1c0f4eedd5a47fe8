// typeformer/quant/blocks.hpp
//
// WHAT THIS REPRESENTS
//   The element types of model files, in one table, and the GGML block-quantized layouts as plain
//   standard-layout structs (the same bytes as ggml's src/ggml-common.h, so an array of them is
//   the GGUF tensor data byte for byte on a little-endian host).
//
//   tfm::ggml_type            the GGML type codes stored in GGUF tensor infos (ggml.h
//                             `enum ggml_type`; gaps are codes ggml retired and never reuses).
//   tfm::ggml_type_table      one row per type: name, code, elements per block, bytes per block,
//                             whether this library has a block struct and reference dequantizer.
//                             Every switch over file element types should be a lookup here.
//   tfm::find_ggml_type(code) the row of a code, or nullptr for an unknown code (file input).
//   tfm::ggml_type_info_of(t) the row of a known enumerator.
//   tfm::block_q4_0 ... block_q8_K   the block structs; tfm::block_traits<B> gives B's row.
//
// CONTRACTS
//   - sizeof(block) equals the "bytes per block" of its row (static_asserts below, and the sizes
//     of the published format: Q8_0 34 B, Q4_0 18 B, Q4_K 144 B, Q6_K 210 B ...).
//   - Half-precision scales are tfm::f16 (2 bytes, trivially copyable, IEEE binary16 bits).
//   - Blocks may sit at any byte offset in a file (GGUF alignment can be 1): code that reads
//     blocks out of a byte buffer copies them (std::memcpy / std::bit_cast), it does not cast.
//   - QK_K = 256 elements per super-block (ggml's default build; GGML_QKK_64 is not supported).
//   Sources: ggml/src/ggml-common.h and ggml/include/ggml.h (github.com/ggml-org/llama.cpp), the
//   GGUF spec (ggml/docs/gguf.md) and gguf-py's GGML_QUANT_SIZES (gguf/constants.py, 0.19).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/core/half.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

TFM_BEGIN_NAMESPACE

/// Elements per K-quant super-block.
inline constexpr std::size_t qk_k = 256;
/// Elements per block of the legacy formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1).
inline constexpr std::size_t qk_legacy = 32;

/// GGML tensor element types with their file codes (ggml.h). Codes 4, 5, 31..33 and 36..38
/// were removed from ggml and are not valid in files.
enum class ggml_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_K = 10,
  q3_K = 11,
  q4_K = 12,
  q5_K = 13,
  q6_K = 14,
  q8_K = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
  nvfp4 = 40,
  q1_0 = 41,
  // typeformer's own layouts (quant/nf4.hpp, quant/int_formats.hpp). Codes from
  // typeformer_type_base = 1024 up, far outside ggml's range (< 64 in 2026): llama.cpp and
  // gguf-py refuse a file holding them ("invalid tensor type"), and a reader must know them.
  tfm_nf4 = 1024,      ///< QLoRA NormalFloat-4, blocks of 64, f16 absmax (block_nf4)
  tfm_i4_g64 = 1025,   ///< asymmetric INT4, groups of 64 (GPTQ/AWQ layout; block_i4_g64)
  tfm_i4_g128 = 1026,  ///< asymmetric INT4, groups of 128 (block_i4_g128)
};

/// The first typeformer-specific element-type code (see ggml_type::tfm_nf4).
inline constexpr std::uint32_t typeformer_type_base = 1024;

/// True for the typeformer-specific codes (files with them are not readable by llama.cpp).
constexpr bool is_typeformer_type(ggml_type t) noexcept {
  return static_cast<std::uint32_t>(t) >= typeformer_type_base;
}

/// One row of the element-type table.
struct ggml_type_info {
  std::string_view name;         ///< ggml's name, upper case as in gguf-py ("Q4_K", "F32")
  ggml_type type;                ///< file code
  std::uint32_t block_elements;  ///< logical elements per block (1 for plain types)
  std::uint32_t block_bytes;     ///< bytes per block
  bool dequantizable;            ///< tfm::dequantize() converts it to float (quant/dequantize.hpp)
};

/// The one table of file element types (STYLE.md item 19). Sizes from ggml-common.h; they equal
/// gguf-py's GGML_QUANT_SIZES (tests/unit/io_gguf checks the block structs against it).
/// The last three rows are typeformer's own layouts (codes >= typeformer_type_base); the rows
/// before them are ggml's, in ggml's order.
inline constexpr std::array<ggml_type_info, 37> ggml_type_table{{
    {"F32", ggml_type::f32, 1, 4, true},
    {"F16", ggml_type::f16, 1, 2, true},
    {"Q4_0", ggml_type::q4_0, 32, 2 + 16, true},
    {"Q4_1", ggml_type::q4_1, 32, 2 + 2 + 16, true},
    {"Q5_0", ggml_type::q5_0, 32, 2 + 4 + 16, true},
    {"Q5_1", ggml_type::q5_1, 32, 2 + 2 + 4 + 16, true},
    {"Q8_0", ggml_type::q8_0, 32, 2 + 32, true},
    {"Q8_1", ggml_type::q8_1, 32, 2 + 2 + 32, false},  // gguf-py 0.19 says 40 (pre-2024 floats)
    {"Q2_K", ggml_type::q2_K, 256, 2 + 2 + 256 / 16 + 256 / 4, true},
    {"Q3_K", ggml_type::q3_K, 256, 2 + 256 / 4 + 256 / 8 + 12, true},
    {"Q4_K", ggml_type::q4_K, 256, 2 + 2 + 256 / 2 + 12, true},
    {"Q5_K", ggml_type::q5_K, 256, 2 + 2 + 256 / 2 + 256 / 8 + 12, true},
    {"Q6_K", ggml_type::q6_K, 256, 2 + 256 / 2 + 256 / 4 + 256 / 16, true},
    {"Q8_K", ggml_type::q8_K, 256, 4 + 256 + 256 / 8, true},
    {"IQ2_XXS", ggml_type::iq2_xxs, 256, 2 + 256 / 4, false},
    {"IQ2_XS", ggml_type::iq2_xs, 256, 2 + 256 / 4 + 256 / 32, false},
    {"IQ3_XXS", ggml_type::iq3_xxs, 256, 2 + 256 / 4 + 256 / 8, false},
    {"IQ1_S", ggml_type::iq1_s, 256, 2 + 256 / 8 + 256 / 16, false},
    {"IQ4_NL", ggml_type::iq4_nl, 32, 2 + 16, false},
    {"IQ3_S", ggml_type::iq3_s, 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4, false},
    {"IQ2_S", ggml_type::iq2_s, 256, 2 + 256 / 4 + 256 / 16, false},
    {"IQ4_XS", ggml_type::iq4_xs, 256, 2 + 2 + 256 / 2 + 256 / 64, false},
    {"I8", ggml_type::i8, 1, 1, false},
    {"I16", ggml_type::i16, 1, 2, false},
    {"I32", ggml_type::i32, 1, 4, false},
    {"I64", ggml_type::i64, 1, 8, false},
    {"F64", ggml_type::f64, 1, 8, false},
    {"IQ1_M", ggml_type::iq1_m, 256, 256 / 8 + 256 / 16 + 256 / 32, false},
    {"BF16", ggml_type::bf16, 1, 2, true},
    {"TQ1_0", ggml_type::tq1_0, 256, 2 + 4 * 13, false},
    {"TQ2_0", ggml_type::tq2_0, 256, 2 + 64, false},
    {"MXFP4", ggml_type::mxfp4, 32, 1 + 16, false},
    {"NVFP4", ggml_type::nvfp4, 64, 4 + 32, false},
    {"Q1_0", ggml_type::q1_0, 128, 2 + 16, false},
    {"TFM_NF4", ggml_type::tfm_nf4, 64, 2 + 32, true},
    {"TFM_I4_G64", ggml_type::tfm_i4_g64, 64, 2 + 2 + 32, true},
    {"TFM_I4_G128", ggml_type::tfm_i4_g128, 128, 2 + 2 + 64, true},
}};

/// Rows of ggml_type_table that are ggml's (the rest are typeformer's, at the end).
inline constexpr std::size_t ggml_upstream_type_count = 34;

/// The table row of a file code, or nullptr when the code is not a GGML type (or was retired).
constexpr const ggml_type_info* find_ggml_type(std::uint32_t code) noexcept {
  for (const ggml_type_info& t : ggml_type_table)
    if (static_cast<std::uint32_t>(t.type) == code) return &t;
  return nullptr;
}

/// The table row of an enumerator (every enumerator has one; a cast-in unknown value gets the
/// F32 row, so validate file codes with find_ggml_type first).
constexpr const ggml_type_info& ggml_type_info_of(ggml_type t) noexcept {
  const ggml_type_info* p = find_ggml_type(static_cast<std::uint32_t>(t));
  return p != nullptr ? *p : ggml_type_table[0];
}

/// ggml's name of a type ("Q4_K"), or "?" for a value that is not in the table.
constexpr std::string_view ggml_type_name(ggml_type t) noexcept {
  const ggml_type_info* p = find_ggml_type(static_cast<std::uint32_t>(t));
  return p != nullptr ? p->name : std::string_view("?");
}

// ---- block layouts (ggml-common.h) --------------------------------------------------------------
// x = d * q (type-0) or x = d * q + m (type-1). Element order inside a block is documented with
// the reference dequantizer (quant/dequantize.hpp).

/// Q4_0: 32 weights, x = d * (q - 8), q 4-bit. 4.5 bits per weight.
struct block_q4_0 {
  f16 d;                ///< scale
  std::uint8_t qs[16];  ///< nibbles: element j in the low nibble of qs[j], j+16 in the high one
};
/// Q4_1: 32 weights, x = d * q + m, q 4-bit. 5 bits per weight.
struct block_q4_1 {
  f16 d;                ///< scale
  f16 m;                ///< minimum
  std::uint8_t qs[16];  ///< nibbles as in Q4_0
};
/// Q5_0: 32 weights, x = d * (q - 16), q 5-bit. 5.5 bits per weight.
struct block_q5_0 {
  f16 d;                ///< scale
  std::uint8_t qh[4];   ///< 5th bits: bit j of the little-endian u32 belongs to element j
  std::uint8_t qs[16];  ///< low nibbles as in Q4_0
};
/// Q5_1: 32 weights, x = d * q + m, q 5-bit. 6 bits per weight.
struct block_q5_1 {
  f16 d;                ///< scale
  f16 m;                ///< minimum
  std::uint8_t qh[4];   ///< 5th bits as in Q5_0
  std::uint8_t qs[16];  ///< low nibbles as in Q4_0
};
/// Q8_0: 32 weights, x = d * q, q 8-bit signed. 8.5 bits per weight.
struct block_q8_0 {
  f16 d;               ///< scale
  std::int8_t qs[32];  ///< quants
};
/// Q8_1: 32 weights, x = d * q, q 8-bit signed, with s = d * sum(q) stored for the dot
/// products with the type-1 formats (Q4_1, Q5_1: sum_j (dw*qw_j + m) * (d*q_j) needs m * s).
/// An activation format: ggml quantizes to it (quantize_row_q8_1_ref) but never stores it.
struct block_q8_1 {
  f16 d;               ///< scale
  f16 s;               ///< d * sum(qs), rounded to f16
  std::int8_t qs[32];  ///< quants
};
/// Q2_K: super-block of 16 blocks of 16 weights, x = d*sc*q - dmin*m, 4-bit sc and m.
/// 2.625 bits per weight.
struct block_q2_K {
  std::uint8_t scales[16];  ///< low nibble: scale of block i, high nibble: its min
  std::uint8_t qs[64];      ///< 2-bit quants
  f16 d;                    ///< super-block scale of the scales
  f16 dmin;                 ///< super-block scale of the mins
};
/// Q3_K: super-block of 16 blocks of 16 weights, x = d * (sc - 32) * q, q in [-4, 3], 6-bit sc.
/// 3.4375 bits per weight.
struct block_q3_K {
  std::uint8_t hmask[32];   ///< high bits (set = no offset, clear = subtract 4)
  std::uint8_t qs[64];      ///< low 2 bits
  std::uint8_t scales[12];  ///< sixteen 6-bit scales, packed
  f16 d;                    ///< super-block scale
};
/// Q4_K: super-block of 8 blocks of 32 weights, x = d*sc*q - dmin*m, 6-bit sc and m.
/// 4.5 bits per weight.
struct block_q4_K {
  f16 d;                    ///< super-block scale of the scales
  f16 dmin;                 ///< super-block scale of the mins
  std::uint8_t scales[12];  ///< eight 6-bit scales and eight 6-bit mins, packed
  std::uint8_t qs[128];     ///< 4-bit quants
};
/// Q5_K: super-block of 8 blocks of 32 weights, x = d*sc*q - dmin*m, 6-bit sc and m.
/// 5.5 bits per weight.
struct block_q5_K {
  f16 d;                    ///< super-block scale of the scales
  f16 dmin;                 ///< super-block scale of the mins
  std::uint8_t scales[12];  ///< packed as in Q4_K
  std::uint8_t qh[32];      ///< 5th bits
  std::uint8_t qs[128];     ///< low 4 bits
};
/// Q6_K: super-block of 16 blocks of 16 weights, x = d * sc * (q - 32), 8-bit signed sc.
/// 6.5625 bits per weight.
struct block_q6_K {
  std::uint8_t ql[128];    ///< low 4 bits
  std::uint8_t qh[64];     ///< high 2 bits
  std::int8_t scales[16];  ///< block scales
  f16 d;                   ///< super-block scale
};
/// Q8_K: 256 weights, x = d * q (intermediate format of the K-quant dot products).
struct block_q8_K {
  float d;                 ///< scale (binary32)
  std::int8_t qs[256];     ///< quants
  std::int16_t bsums[16];  ///< sums of the quants in groups of 16
};

// ---- typeformer's layouts (not GGML; see ggml_type::tfm_nf4) -----------------------------------
// A 4-bit block is a run of 32-value sub-blocks with Q4_0's nibble order: sub-block s uses
// qs[16s .. 16s + 15]; element 32s + j is the low nibble of qs[16s + j], element 32s + 16 + j the
// high nibble. The blocks are self-contained (no per-row or per-tensor side data): GGUF sizes a
// tensor as elements / block_elements * block_bytes and the kernels address row n of a matrix as
// n * K / block_elements blocks, so every scale a block needs lives inside it.

/// NF4 (Dettmers et al. 2023, QLoRA, arXiv:2305.14314): 64 weights, x = NF4[q] * d with NF4 the
/// paper's 16 NormalFloat levels (quant/nf4.hpp) and d the block's absmax. 4.25 bits per weight.
/// The absmax is an f16 here, not the paper's double-quantized 8-bit code: see quant/nf4.hpp
/// for why, and for the double-quantization codec (quantize_nf4_dq) that stores 4.127 bits.
struct block_nf4 {
  f16 d;                ///< absmax of the block's 64 inputs
  std::uint8_t qs[32];  ///< two 32-value sub-blocks of NF4 codes, nibble order as above
};
/// INT4 with a group of 64 (the GPTQ / AWQ layout, asymmetric): x = d * q + m, q in 0..15.
/// 4.5 bits per weight. Group 32 with f16 d and m is exactly Q4_1 (block_q4_1), which llama.cpp
/// runs; this is two Q4_1 nibble arrays sharing one (d, m).
struct block_i4_g64 {
  f16 d;                ///< scale
  f16 m;                ///< minimum (GPTQ's -scale * zero)
  std::uint8_t qs[32];  ///< two sub-blocks of 32 nibbles
};
/// INT4 with a group of 128: x = d * q + m, q in 0..15. 4.25 bits per weight.
struct block_i4_g128 {
  f16 d;                ///< scale
  f16 m;                ///< minimum
  std::uint8_t qs[64];  ///< four sub-blocks of 32 nibbles
};

/// block_traits<B>::info is B's table row; value_type = float (what it dequantizes to).
template <class Block>
struct block_traits;

#define TFM_DETAIL_BLOCK_TRAITS(B, T)                                                           \
  template <>                                                                                   \
  struct block_traits<B> {                                                                      \
    static constexpr ggml_type type = ggml_type::T;                                             \
    static constexpr const ggml_type_info& info = ggml_type_info_of(ggml_type::T);              \
    static constexpr std::size_t block_elements = info.block_elements;                          \
    static constexpr std::size_t block_bytes = info.block_bytes;                                \
    using value_type = float;                                                                   \
  };                                                                                            \
  static_assert(sizeof(B) == block_traits<B>::block_bytes,                                      \
                "tfm::" #B " must have the size of its table row (ggml-common.h, blocks.hpp)"); \
  static_assert(std::is_standard_layout_v<B> && std::is_trivially_copyable_v<B>,                \
                "tfm::" #B " must be a plain standard-layout struct (its bytes are the file).")

TFM_DETAIL_BLOCK_TRAITS(block_q4_0, q4_0);
TFM_DETAIL_BLOCK_TRAITS(block_q4_1, q4_1);
TFM_DETAIL_BLOCK_TRAITS(block_q5_0, q5_0);
TFM_DETAIL_BLOCK_TRAITS(block_q5_1, q5_1);
TFM_DETAIL_BLOCK_TRAITS(block_q8_0, q8_0);
TFM_DETAIL_BLOCK_TRAITS(block_q8_1, q8_1);
TFM_DETAIL_BLOCK_TRAITS(block_q2_K, q2_K);
TFM_DETAIL_BLOCK_TRAITS(block_q3_K, q3_K);
TFM_DETAIL_BLOCK_TRAITS(block_q4_K, q4_K);
TFM_DETAIL_BLOCK_TRAITS(block_q5_K, q5_K);
TFM_DETAIL_BLOCK_TRAITS(block_q6_K, q6_K);
TFM_DETAIL_BLOCK_TRAITS(block_q8_K, q8_K);
TFM_DETAIL_BLOCK_TRAITS(block_nf4, tfm_nf4);
TFM_DETAIL_BLOCK_TRAITS(block_i4_g64, tfm_i4_g64);
TFM_DETAIL_BLOCK_TRAITS(block_i4_g128, tfm_i4_g128);
#undef TFM_DETAIL_BLOCK_TRAITS

// The sizes the format publishes (TESTING.md "Quantization"), spelled out once more.
static_assert(sizeof(block_q8_0) == 34 && sizeof(block_q4_0) == 18 && sizeof(block_q4_K) == 144 &&
                  sizeof(block_q6_K) == 210 && sizeof(block_q2_K) == 84 &&
                  sizeof(block_q3_K) == 110 && sizeof(block_q5_K) == 176 &&
                  sizeof(block_q8_K) == 292,
              "tfm: a GGML block struct does not have its published size (ggml-common.h).");
static_assert(sizeof(block_nf4) == 34 && sizeof(block_i4_g64) == 36 && sizeof(block_i4_g128) == 68,
              "tfm: a typeformer block struct does not have its documented size (blocks.hpp).");

/// True for the block structs above.
template <class T>
concept ggml_block = requires {
  block_traits<std::remove_cv_t<T>>::type;
};

/// Run-time type -> block struct, written once: calls f(static_cast<const B*>(nullptr)) with B
/// the block struct of the weight format `t` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ... Q6_K and
/// typeformer's NF4, INT4-g64, INT4-g128; not the activation formats Q8_1 and Q8_K) and returns
/// true, or returns false for any other type.
/// Kernels that exist for only some formats test `B` with `if constexpr` inside `f`.
template <class F>
bool visit_weight_block(ggml_type t, F&& f) {
  switch (t) {
#define TFM_DETAIL_VISIT(B, T)                           \
  case ggml_type::T:                                     \
    static_cast<F&&>(f)(static_cast<const B*>(nullptr)); \
    return true;
    TFM_DETAIL_VISIT(block_q4_0, q4_0)
    TFM_DETAIL_VISIT(block_q4_1, q4_1)
    TFM_DETAIL_VISIT(block_q5_0, q5_0)
    TFM_DETAIL_VISIT(block_q5_1, q5_1)
    TFM_DETAIL_VISIT(block_q8_0, q8_0)
    TFM_DETAIL_VISIT(block_q2_K, q2_K)
    TFM_DETAIL_VISIT(block_q3_K, q3_K)
    TFM_DETAIL_VISIT(block_q4_K, q4_K)
    TFM_DETAIL_VISIT(block_q5_K, q5_K)
    TFM_DETAIL_VISIT(block_q6_K, q6_K)
    TFM_DETAIL_VISIT(block_nf4, tfm_nf4)
    TFM_DETAIL_VISIT(block_i4_g64, tfm_i4_g64)
    TFM_DETAIL_VISIT(block_i4_g128, tfm_i4_g128)
#undef TFM_DETAIL_VISIT
    default:
      return false;
  }
}

TFM_END_NAMESPACE
