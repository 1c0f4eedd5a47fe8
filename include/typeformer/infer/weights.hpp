// typeformer/infer/weights.hpp
//
// WHAT THIS REPRESENTS
//   infer::weight_matrix: a model weight of `rows` x `cols` (row-major, rows = output features)
//   in one of the element types the decoder's kernels read directly: F32, F16 or BF16. The data
//   is either borrowed from a memory-mapped file (tensor data already in that type, aligned for
//   it: no copy) or owned (block-quantized tensors, and the rare misaligned F32/F16/BF16 tensor,
//   dequantized to float on load). Copies of a weight_matrix share the owned data (the tied output
//   head is the embedding's matrix, not a second copy).
//
//   load_weight(file, name, rows, cols) checks the tensor's extents against the model config
//   (an error names the tensor, what the config expects and what the file holds) and adds the
//   bytes it borrows or allocates to a load_stats.
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
  /// Borrows `data` (rows x cols of `type`: f32, f16 or bf16), which must outlive every copy.
  weight_matrix(ggml_type type, const void* data, index_t rows, index_t cols)
      : type_(type), data_(data), rows_(rows), cols_(cols) {}
  /// Owns `values` (rows x cols floats).
  weight_matrix(std::vector<float> values, index_t rows, index_t cols)
      : type_(ggml_type::f32), rows_(rows), cols_(cols) {
    auto p = std::make_shared<std::vector<float>>(std::move(values));
    data_ = p->data();
    owner_ = std::move(p);
  }

  ggml_type type() const noexcept { return type_; }
  index_t rows() const noexcept { return rows_; }
  index_t cols() const noexcept { return cols_; }
  const void* data() const noexcept { return data_; }
  bool owned() const noexcept { return owner_ != nullptr; }
  std::size_t bytes() const noexcept {
    return static_cast<std::size_t>(rows_ * cols_) * (type_ == ggml_type::f32 ? 4 : 2);
  }
  /// A typed view (rows, cols); T must be the stored type (float, tfm::f16, tfm::bf16).
  template <class T>
  tensor_view<const T, dyn_shape<2>> view() const {
    if (type_ != code_of<T>())
      fail(errc::value, "tfm::infer::weight_matrix: holds ", ggml_type_name(type_), ", not ",
           ggml_type_name(code_of<T>()), ".");
    return {static_cast<const T*>(data_), dyn_shape<2>(rows_, cols_)};
  }
  /// f(const T* data) with T the stored element type.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (type_ == ggml_type::f16) return f(static_cast<const f16*>(data_));
    if (type_ == ggml_type::bf16) return f(static_cast<const bf16*>(data_));
    return f(static_cast<const float*>(data_));
  }
  /// Row r converted to float into out[0 .. cols).
  void row(index_t r, float* out) const {
    visit([&](const auto* p) {
      for (index_t c = 0; c < cols_; ++c) out[c] = static_cast<float>(p[r * cols_ + c]);
    });
  }

 private:
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
  std::shared_ptr<const void> owner_;
};

namespace detail {
inline const io::gguf_tensor_info& checked_tensor(const io::gguf_file& f, const std::string& name,
                                                  index_t rows, index_t cols) {
  const io::gguf_tensor_info* t = f.find_tensor(name);
  if (t == nullptr)
    fail(errc::parse, "tfm::infer: '", f.name(), "': tensor '", name, "' is missing.");
  const bool vector = rows == 1;
  const bool ok = vector ? (t->n_dims == 1 && t->ne[0] == cols)
                         : (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows);
  if (!ok)
    fail(errc::shape, "tfm::infer: '", f.name(), "': tensor '", name, "' has ne = [", t->ne[0],
         ", ", t->ne[1], "] (", t->n_dims, " dims); the model config expects ",
         vector ? "[" + std::to_string(cols) + "]"
                : "[" + std::to_string(cols) + ", " + std::to_string(rows) + "]",
         ".");
  return *t;
}
}  // namespace detail

/// The tensor `name` as a rows x cols weight: F32/F16/BF16 borrowed when aligned, everything
/// else (block-quantized types, misaligned data) dequantized to float.
inline weight_matrix load_weight(const io::gguf_file& f, const std::string& name, index_t rows,
                                 index_t cols, load_stats& st) {
  const io::gguf_tensor_info& t = detail::checked_tensor(f, name, rows, cols);
  const std::span<const std::byte> bytes = f.tensor_data(t);
  const auto addr = reinterpret_cast<std::uintptr_t>(bytes.data());
  const bool half = t.type == ggml_type::f16 || t.type == ggml_type::bf16;
  if ((t.type == ggml_type::f32 && addr % 4 == 0) || (half && addr % 2 == 0)) {
    st.bytes_borrowed += bytes.size();
    return weight_matrix(t.type, bytes.data(), rows, cols);
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
