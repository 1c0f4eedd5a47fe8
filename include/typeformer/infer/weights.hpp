// typeformer/infer/weights.hpp
//
// WHAT THIS REPRESENTS
//   infer::weight_matrix: a model weight of `rows` x `cols` (row-major, rows = output features)
//   in one of the element types the decoder's kernels read directly: F32, F16, BF16, or a GGML
//   block-quantized type (Q4_0 ... Q8_0, Q2_K ... Q6_K: rows of cols / block blocks, the GGUF
//   tensor bytes; quantized() is true). The data is either borrowed from a memory-mapped file
//   (tensor data already in that type, aligned for it: no copy) or owned (a misaligned tensor
//   copied, still in its type; or, with quantized_weights::f32, a block-quantized tensor
//   dequantized to float on load). Copies of a weight_matrix share the owned data (the tied
//   output head is the embedding's matrix, not a second copy).
//
//   load_weight(file, name, rows, cols, stats, options) checks the tensor's extents against the
//   model config (an error names the tensor, what the config expects and what the file holds)
//   and adds the bytes it borrows or allocates to a load_stats.
//
//   Alignment: the kernels read f32 at 4 bytes, f16/bf16 and the 32-value blocks (whose first
//   field is an f16) at 2 bytes, the K-quant blocks at 4 (Q8_K's f32 scale; Q2_K ... Q6_K need
//   only 2, 4 is asked for all of them for simplicity). GGUF aligns tensor data to 32 bytes by
//   default, so the copy path is only taken for files written with general.alignment < 4.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// What the loader does with block-quantized tensors: keep them packed (the GGUF bytes, borrowed
/// from the mapping; the kernels read them directly), or dequantize them to float on load (the
/// engine before packed kernels existed: 4-8x the memory, slower decode; kept for comparison).
enum class quantized_weights { packed, f32 };

/// Options of the GGUF loaders (transformer::from_gguf, load_gguf, tfm::load_model).
struct load_options {
  quantized_weights quantized = quantized_weights::packed;
};

/// True for the block-quantized types the engine runs packed: the weight formats of the type
/// table (blocks of more than one value) with a reference dequantizer, which is what the
/// dequantize-in-pack GEMM (backend/cpu/quant/gemm_q.hpp) needs; not the activation format Q8_K.
constexpr bool packed_weight_supported(ggml_type t) noexcept {
  const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t));
  return info != nullptr && info->block_elements > 1 && info->dequantizable && t != ggml_type::q8_K;
}

/// Bytes a load borrowed from the mapping (no copy) and allocated (dequantized or copied).
struct load_stats {
  std::size_t bytes_mapped = 0;     // size of the mapped file
  std::size_t bytes_borrowed = 0;   // tensor data used in place
  std::size_t bytes_allocated = 0;  // tensor data copied or dequantized
  double load_ms = 0;               // open, parse, validate, dequantize
};

class weight_matrix {
 public:
  weight_matrix() = default;
  /// Borrows `data` (rows x cols of `type`: f32, f16, bf16 or a packed_weight_supported block
  /// type, rows of cols / block blocks), which must outlive every copy.
  weight_matrix(ggml_type type, const void* data, index_t rows, index_t cols)
      : type_(type), data_(data), rows_(rows), cols_(cols), row_bytes_(row_bytes_of(type, cols)) {}
  /// Owns `values` (rows x cols floats).
  weight_matrix(std::vector<float> values, index_t rows, index_t cols)
      : type_(ggml_type::f32), rows_(rows), cols_(cols), row_bytes_(row_bytes_of(type_, cols)) {
    auto p = std::make_shared<std::vector<float>>(std::move(values));
    data_ = p->data();
    owner_ = std::move(p);
  }

  /// Rows x cols of `type` at `data`, kept alive by `owner` (a converted, copied or transposed
  /// tensor).
  weight_matrix(ggml_type type, std::shared_ptr<const void> owner, const void* data, index_t rows,
                index_t cols)
      : type_(type),
        data_(data),
        rows_(rows),
        cols_(cols),
        row_bytes_(row_bytes_of(type, cols)),
        owner_(std::move(owner)) {}

  /// Rows [r0, r0 + n) as a weight that shares this one's data (no copy): the q, k, v parts of
  /// a fused qkv projection. Requires 0 <= r0 <= r0 + n <= rows().
  weight_matrix rows_slice(index_t r0, index_t n) const {
    if (r0 < 0 || n < 0 || r0 + n > rows_)
      fail(errc::index, "tfm::infer::weight_matrix: rows ", r0, " .. ", r0 + n, " of ", rows_, ".");
    weight_matrix w = *this;
    w.rows_ = n;
    w.data_ = static_cast<const unsigned char*>(data_) + static_cast<std::size_t>(r0) * row_bytes_;
    return w;
  }

  /// Values [c0, c0 + n) of a vector (rows() == 1, not block-quantized) sharing its data: the
  /// parts of a fused bias.
  weight_matrix vector_slice(index_t c0, index_t n) const {
    if (rows_ != 1 || c0 < 0 || n < 0 || c0 + n > cols_ || quantized())
      fail(errc::index, "tfm::infer::weight_matrix: values ", c0, " .. ", c0 + n, " of a (", rows_,
           ", ", cols_, ") ", ggml_type_name(type_), " weight.");
    weight_matrix w = *this;
    w.cols_ = n;
    w.row_bytes_ = row_bytes_of(type_, n);
    w.data_ = static_cast<const unsigned char*>(data_) +
              static_cast<std::size_t>(c0) * (type_ == ggml_type::f32 ? 4 : 2);
    return w;
  }

  ggml_type type() const noexcept { return type_; }
  /// True for a block-quantized type (the data is rows of GGML blocks).
  bool quantized() const noexcept { return is_quantized(type_); }
  index_t rows() const noexcept { return rows_; }
  index_t cols() const noexcept { return cols_; }
  const void* data() const noexcept { return data_; }
  /// Bytes of one row (cols values of type(): cols / block blocks when quantized).
  std::size_t row_bytes() const noexcept { return row_bytes_; }
  bool owned() const noexcept { return owner_ != nullptr; }
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(rows_) * row_bytes_; }
  /// A typed view (rows, cols); T must be the stored type (float, tfm::f16, tfm::bf16).
  template <class T>
  tensor_view<const T, dyn_shape<2>> view() const {
    if (type_ != code_of<T>())
      fail(errc::value, "tfm::infer::weight_matrix: holds ", ggml_type_name(type_), ", not ",
           ggml_type_name(code_of<T>()), ".");
    return {static_cast<const T*>(data_), dyn_shape<2>(rows_, cols_)};
  }
  /// f(const T* data) with T the stored element type (float, f16, bf16); a block-quantized
  /// weight is an error (test quantized() first).
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (quantized())
      fail(errc::value, "tfm::infer::weight_matrix::visit: the weight is ", ggml_type_name(type_),
           " blocks, not float elements.");
    if (type_ == ggml_type::f16) return f(static_cast<const f16*>(data_));
    if (type_ == ggml_type::bf16) return f(static_cast<const bf16*>(data_));
    return f(static_cast<const float*>(data_));
  }
  /// Row r converted to float into out[0 .. cols) (a quantized row is dequantized, bitwise as
  /// gguf-py: the embedding lookup of a quantized token_embd reads only the rows it needs).
  void row(index_t r, float* out) const {
    if (quantized()) {
      const auto* p =
          static_cast<const std::byte*>(data_) + static_cast<std::size_t>(r) * row_bytes_;
      dequantize(type_, std::span<const std::byte>(p, row_bytes_),
                 std::span<float>(out, static_cast<std::size_t>(cols_)));
      return;
    }
    visit([&](const auto* p) {
      for (index_t c = 0; c < cols_; ++c) out[c] = static_cast<float>(p[r * cols_ + c]);
    });
  }

  /// True for the block-quantized GGML types (block of more than one element).
  static bool is_quantized(ggml_type t) noexcept {
    const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t));
    return info != nullptr && info->block_elements > 1;
  }

 private:
  static std::size_t row_bytes_of(ggml_type t, index_t cols) {
    if (t == ggml_type::f32) return static_cast<std::size_t>(cols) * 4;
    if (t == ggml_type::f16 || t == ggml_type::bf16) return static_cast<std::size_t>(cols) * 2;
    const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t));
    if (info == nullptr || !packed_weight_supported(t))
      fail(errc::unsupported, "tfm::infer::weight_matrix: element type ", ggml_type_name(t),
           " is not one the engine runs (F32, F16, BF16, Q4_0 ... Q8_0, Q2_K ... Q6_K).");
    if (cols % static_cast<index_t>(info->block_elements) != 0)
      fail(errc::shape, "tfm::infer::weight_matrix: rows of ", cols, " values are not whole ",
           info->name, " blocks of ", info->block_elements, ".");
    return static_cast<std::size_t>(cols / static_cast<index_t>(info->block_elements)) *
           info->block_bytes;
  }
  template <class T>
  static constexpr ggml_type code_of() {
    if constexpr (std::is_same_v<T, f16>)
      return ggml_type::f16;
    else if constexpr (std::is_same_v<T, bf16>)
      return ggml_type::bf16;
    else
      return ggml_type::f32;
  }
  ggml_type type_ = ggml_type::f32;
  const void* data_ = nullptr;
  index_t rows_ = 0, cols_ = 0;
  std::size_t row_bytes_ = 0;
  std::shared_ptr<const void> owner_;
};

namespace detail {
/// The tensor `name`, checked to be [cols] (rows == 1), [cols, rows], or with experts > 0 the
/// 3-D [cols, rows, experts] of a mixture-of-experts block (llama.cpp's ffn_*_exps).
inline const io::gguf_tensor_info& checked_tensor(const io::gguf_file& f, const std::string& name,
                                                  index_t rows, index_t cols, index_t experts = 0) {
  const io::gguf_tensor_info* t = f.find_tensor(name);
  if (t == nullptr)
    fail(errc::parse, "tfm::infer: '", f.name(), "': tensor '", name, "' is missing.");
  const bool vector = rows == 1 && experts == 0;
  const bool ok =
      experts > 0 ? (t->n_dims == 3 && t->ne[0] == cols && t->ne[1] == rows && t->ne[2] == experts)
      : vector    ? (t->n_dims == 1 && t->ne[0] == cols)
                  : (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows);
  if (!ok) {
    std::string want = "[" + std::to_string(cols);
    if (!vector) want += ", " + std::to_string(rows);
    if (experts > 0) want += ", " + std::to_string(experts);
    std::string have = "[" + std::to_string(t->ne[0]);
    for (std::uint32_t d = 1; d < t->n_dims && d < 4; ++d) have += ", " + std::to_string(t->ne[d]);
    fail(errc::shape, "tfm::infer: '", f.name(), "': tensor '", name, "' has ne = ", have, "] (",
         t->n_dims, " dims); the model config expects ", want, "].");
  }
  return *t;
}
}  // namespace detail

/// The tensor `name` as a rows x cols weight: F32/F16/BF16 borrowed when aligned; a
/// packed_weight_supported block type borrowed (packed) when aligned and options.quantized is
/// packed, else dequantized to float; any other dequantizable type dequantized to float; a
/// misaligned tensor copied (F32/F16/BF16 and packed blocks keep their type).
/// With experts > 0 the tensor is the 3-D [cols, rows, experts] of an MoE block, returned as the
/// (experts * rows, cols) matrix whose expert e is rows e * rows .. (rows_slice: no copy).
inline weight_matrix load_weight(const io::gguf_file& f, const std::string& name, index_t rows,
                                 index_t cols, load_stats& st, const load_options& options = {},
                                 index_t experts = 0) {
  const io::gguf_tensor_info& t = detail::checked_tensor(f, name, rows, cols, experts);
  if (experts > 0) rows *= experts;
  const std::span<const std::byte> bytes = f.tensor_data(t);
  const auto addr = reinterpret_cast<std::uintptr_t>(bytes.data());
  const bool half = t.type == ggml_type::f16 || t.type == ggml_type::bf16;
  const bool packed = weight_matrix::is_quantized(t.type) && packed_weight_supported(t.type) &&
                      options.quantized == quantized_weights::packed;
  const std::size_t align = t.type == ggml_type::f32 ? 4 : half ? 2 : packed ? 4 : 0;
  if (align != 0) {
    if (addr % align == 0) {
      st.bytes_borrowed += bytes.size();
      return weight_matrix(t.type, bytes.data(), rows, cols);
    }
    // Misaligned (a file with general.alignment < 4): one aligned copy, same type.
    auto copy = std::make_shared<std::vector<float>>((bytes.size() + 3) / 4);
    std::memcpy(copy->data(), bytes.data(), bytes.size());
    st.bytes_allocated += bytes.size();
    const void* d = copy->data();
    return weight_matrix(t.type, std::shared_ptr<const void>(std::move(copy)), d, rows, cols);
  }
  const ggml_type_info* info = find_ggml_type(static_cast<std::uint32_t>(t.type));
  if (info == nullptr || !info->dequantizable)
    fail(errc::unsupported, "tfm::infer: '", f.name(), "': tensor '", name, "' has type ",
         ggml_type_name(t.type), ", which this engine cannot read.");
  std::vector<float> v = dequantize(t.type, bytes);
  st.bytes_allocated += v.size() * sizeof(float);
  return weight_matrix(std::move(v), rows, cols);
}

}  // namespace infer
TFM_END_NAMESPACE
