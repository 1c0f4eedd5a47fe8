// typeformer/quant/tensor.hpp
//
// WHAT THIS REPRESENTS
//   Tensors whose element type is a GGML block (quant/blocks.hpp), so that the weight format is
//   part of the type and a layout mistake does not compile (issue 19, "tensors of blocks"):
//
//     tfm::tensor<tfm::block_q4_0, tfm::shape<N, K>>        owning: N rows of K / 32 blocks
//     tfm::tensor_view<const tfm::block_q4_0, tfm::dyn_shape<2>>   non-owning, e.g. over the
//                                                           bytes of a memory-mapped GGUF tensor
//                                                           (io/gguf_blocks.hpp: io::block_view)
//     tfm::quantize<tfm::block_q4_0>(x)                     float (N, K) -> blocks (quantize_row)
//     w.dequantize() / tfm::dequantize(w)                   blocks -> tensor<float, shape<N, K>>
//     tfm::transpose(w)                                     W^T (K, N), a view: the right operand
//                                                           of matmul(x, transpose(w)) = x W^T
//                                                           (ops/quant_matmul.hpp)
//
//   The shape counts logical elements: shape() is (N, K) whatever the block, size() is N * K,
//   and the storage holds N * K / block_elements blocks, row r at blocks r * K / block_elements
//   (a view may have a larger row stride). This is the GGUF tensor data of a 2-D tensor with
//   ne = {K, N}, byte for byte.
//
// WHY A SPECIALIZATION
//   tensor<Block, Shape> is a partial specialization of tfm::tensor (and tensor_view<Block, ...>
//   of tfm::tensor_view) for ggml_block element types, not a new class, so the spelling of the
//   design (`tensor<q4_0, shape<V, C>>`) holds. The dense tensor's interface cannot be kept:
//   an element is a few bits of a block that shares its scale, so there is no T& operator()(i, j),
//   no element strides and no elementwise expression assignment. Block tensors are therefore not
//   dense_type (detail::is_tensor / is_view are false for them): the elementwise operators, the
//   float matmul and the float tensor's converting constructor do not accept them, and the
//   overloads that do (quantize, dequantize, transpose, matmul with block weights) are chosen by
//   the block type at compile time.
//
// CONTRACTS
//   - Rank 2 only: another rank is the compile error quantized_tensor_rank_not_2<Block, Shape>.
//   - A static K that is not a multiple of the block's elements is the compile error
//     quantized_row_not_whole_blocks<Block, Shape, elements_per_block<QK>>; a dynamic one raises
//     tfm::shape_error naming K, the shape and the block type.
//   - Assigning anything but a tensor of the same type is the compile error
//     quantized_tensor_assigned_without_quantize<Block, Shape, Source>: quantize explicitly.
//   - quantize: tfm::quantize_row per row (quant/quantize.hpp: byte-identical to gguf-py for the
//     legacy formats; NaN/Inf -> tfm::value_error naming the tensor, row and column). A block
//     type with no quantizer does not compile. dequantize: tfm::dequantize of quant/dequantize.hpp
//     row by row (bitwise gguf-py).
//   - Views over bytes (from_bytes) check the file's type code against the block type, the size
//     and the alignment at run time (tfm::value_error naming the tensor and both types).
//   - Storage: heap_storage (64-byte aligned) or inline_storage (static shapes) like tfm::tensor.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/storage.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

// ---- static checks (named undefined templates: see core/shape.hpp) ---------------------------

/// The block size in the names of the checks below.
template <std::size_t N>
struct elements_per_block {};

template <class Block, class Shape, class PerBlock>
struct quantized_row_not_whole_blocks;  // tfm: K (the last extent) must be a multiple of the block
template <class Block, class Shape>
struct quantized_tensor_rank_not_2;  // tfm: block tensors are matrices (N, K) of K / block blocks
template <class Block, class Shape, class Source>
struct quantized_tensor_assigned_without_quantize;  // tfm: write w = tfm::quantize<Block>(x)

namespace detail {
// Block tensors are not dense: no element references, no expression leaves (see the header).
template <class T, class S, class B, class St>
requires ggml_block<T>
struct is_tensor<tensor<T, S, B, St>> : std::false_type {
};
template <class T, class S, class B>
requires ggml_block<T>
struct is_view<tensor_view<T, S, B>> : std::false_type {
};

template <class S>
constexpr index_t last_static_extent() {
  if constexpr (S::rank == 0)
    return dyn;
  else
    return S::static_extents[S::rank - 1];
}

/// One compile error for a shape a block tensor cannot have (rank first, then K).
template <class B, class S>
struct quantized_layout_check {
  using block = std::remove_cv_t<B>;
  static constexpr index_t qk = static_cast<index_t>(block_traits<block>::block_elements);
  static constexpr index_t k = last_static_extent<S>();
  static_assert(static_check<S::rank == 2, quantized_tensor_rank_not_2<block, S>>::value);
  static constexpr bool whole_blocks = S::rank != 2 || k == dyn || k % qk == 0;
  static_assert(
      static_check<whole_blocks,
                   quantized_row_not_whole_blocks<block, S, elements_per_block<qk>>>::value);
  static constexpr bool value = true;
};

/// The run-time form of the check: K of `s` must be a whole number of blocks.
template <class B, class S>
void check_quantized_shape(const S& s, const char* who) {
  if constexpr (S::rank == 2) {
    using info = block_traits<std::remove_cv_t<B>>;
    const index_t qk = static_cast<index_t>(info::block_elements);
    if (s.extent(1) % qk != 0)
      fail(errc::shape, who, ": a ", ggml_type_name(info::type), " tensor of shape ", s.to_string(),
           " has rows of K = ", s.extent(1), " elements, which is not a whole number of ",
           ggml_type_name(info::type), " blocks of ", qk, " elements.");
  }
}

template <class B, class S>
constexpr index_t blocks_per_row(const S& s) noexcept {
  if constexpr (S::rank == 2)
    return s.extent(1) / static_cast<index_t>(block_traits<std::remove_cv_t<B>>::block_elements);
  else
    return 0;
}
template <class B, class S>
constexpr index_t block_rows(const S& s) noexcept {
  if constexpr (S::rank == 2)
    return s.extent(0);
  else
    return 0;
}

/// The storage engine of a block tensor: the dense engines, counted in blocks.
template <class B, class S, class Storage>
struct block_storage;
template <class B, class S>
struct block_storage<B, S, heap_storage> {
  using type = aligned_buffer<B>;
  static type make(index_t n) { return type(n, true); }
};
template <class B, class S>
struct block_storage<B, S, inline_storage> {
  static_assert(S::is_static,
                "tfm::inline_storage needs a fully static shape (no tfm::dyn extents): its size "
                "must be known at compile time because the blocks live inside the object");
  static constexpr index_t qk = static_cast<index_t>(block_traits<B>::block_elements);
  using type = inline_buffer<B, (S::is_static ? S::static_size / qk : 0)>;
  static type make(index_t) { return type{}; }
};

/// A float tensor or view of rank 2 (what quantize() takes).
template <class X>
concept float_matrix = dense_type<X> && std::is_same_v <
                       std::remove_cv_t<typename std::remove_cvref_t<X>::element_type>,
float > &&std::remove_cvref_t<X>::rank == 2;

/// True when quant/quantize.hpp has a quantizer for B.
template <class B>
concept has_quantizer = requires(const float* x, B& b) {
  quantize_block(x, b);
};

/// The source type named by quantized_tensor_assigned_without_quantize: its element type when
/// it has one (float for a float tensor), else the type itself (an expression).
template <class E, class = void>
struct assigned_source {
  using type = E;
};
template <class E>
struct assigned_source<E, std::void_t<typename E::element_type>> {
  using type = std::remove_cv_t<typename E::element_type>;
};

template <class Always>
inline constexpr bool dependent_false = false;

/// The assignment check as a class that stays valid, so that it is one error on every compiler.
template <class B, class S, class Source>
struct quantized_assign_check {
  static_assert(static_check<dependent_false<Source>,
                             quantized_tensor_assigned_without_quantize<B, S, Source>>::value);
  static constexpr bool value = true;
};

/// Quantizes x (rank-2 float view, any strides) into `dst` (rows * bpr blocks).
template <class B, class V>
void quantize_rows(const V& x, B* dst, index_t bpr, std::string_view name) {
  const index_t rows = x.extent(0), k = x.extent(1);
  std::vector<float> gathered;
  for (index_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * x.stride(0);
    if (x.stride(1) != 1 && k > 1) {
      gathered.resize(static_cast<std::size_t>(k));
      for (index_t c = 0; c < k; ++c) gathered[static_cast<std::size_t>(c)] = row[c * x.stride(1)];
      row = gathered.data();
    }
    quantize_row(block_traits<B>::type, std::span<const float>(row, static_cast<std::size_t>(k)),
                 std::as_writable_bytes(std::span<B>(dst + r * bpr, static_cast<std::size_t>(bpr))),
                 name, static_cast<std::size_t>(r));
  }
}

/// Dequantizes `rows` rows of `bpr` blocks (row stride `ld` blocks) into a new float tensor.
template <class Backend, class S, class B>
tensor<float, S, Backend> dequantize_rows(const B* src, const S& shape, index_t ld) {
  using blk = std::remove_cv_t<B>;
  auto out = tensor<float, S, Backend>::uninitialized(shape);
  const index_t rows = block_rows<blk>(shape), bpr = blocks_per_row<blk>(shape);
  const index_t k = rows > 0 ? shape.extent(1) : 0;
  for (index_t r = 0; r < rows; ++r)
    tfm::dequantize(
        block_traits<blk>::type,
        std::as_bytes(std::span<const blk>(src + r * ld, static_cast<std::size_t>(bpr))),
        std::span<float>(out.data() + r * k, static_cast<std::size_t>(k)));
  return out;
}

inline void check_row_index(index_t r, index_t rows, const char* who) {
  if (r < 0 || r >= rows)
    fail(errc::index, who, ": row ", r, " is out of range for ", rows, " rows.");
}
}  // namespace detail

/// A tfm::tensor whose element type is a block (quantized weights).
template <class X>
concept quantized_tensor_type = requires {
  typename std::remove_cvref_t<X>::block_type;
  typename std::remove_cvref_t<X>::storage_type;
}
&&ggml_block<typename std::remove_cvref_t<X>::block_type>;
/// A tfm::tensor_view whose element type is a (possibly const) block.
template <class X>
concept quantized_view_type = requires {
  typename std::remove_cvref_t<X>::block_type;
  std::remove_cvref_t<X>::is_quantized_view;
}
&&ggml_block<typename std::remove_cvref_t<X>::block_type>;

// ============================================================================================
/// A non-owning view of N x K logical elements stored as N rows of K / block blocks; row r
/// starts `row_stride()` blocks after row r - 1 (K / block for a contiguous view). B may be const.
template <class B, shape_type S, class Backend>
requires ggml_block<B>
class tensor_view<B, S, Backend> {
  static_assert(detail::quantized_layout_check<B, S>::value);

 public:
  using block_type = B;
  using element_type = B;
  using value_type = float;  ///< the logical elements (dequantize() gives them)
  using shape_type = S;
  using backend_type = Backend;
  static constexpr std::size_t rank = S::rank;
  static constexpr index_t block_elements =
      static_cast<index_t>(block_traits<std::remove_cv_t<B>>::block_elements);
  static constexpr ggml_type type = block_traits<std::remove_cv_t<B>>::type;
  static constexpr bool is_quantized_view = true;

  tensor_view() noexcept = default;
  /// Contiguous rows starting at `blocks` (K of `shape` checked: tfm::shape_error).
  tensor_view(B* blocks, const S& shape) : tensor_view(blocks, shape, checked_bpr(shape)) {}
  /// Rows `row_stride` blocks apart (row_stride >= K / block, else tfm::shape_error).
  tensor_view(B* blocks, const S& shape, index_t row_stride)
      : data_(blocks), shape_(shape), ld_(row_stride) {
    if (row_stride < checked_bpr(shape))
      fail(errc::shape, "tfm::tensor_view<", ggml_type_name(type), ">: a row stride of ",
           row_stride, " blocks is shorter than a row of shape ", shape.to_string(), ".");
  }
  /// Views of non-const blocks convert to views of const blocks.
  template <class U>
  requires(std::is_same_v<const U, B> && !std::is_same_v<U, B>)
      tensor_view(const tensor_view<U, S, Backend>& o)
  noexcept : data_(o.data()), shape_(o.shape()), ld_(o.row_stride()) {}

  tensor_view(const tensor_view&) noexcept = default;
  /// Not assignable: a dense view's `=` writes elements, which blocks cannot do one by one;
  /// rebinding instead would read the same and mean something else.
  tensor_view& operator=(const tensor_view&) = delete;

  /// A view of the bytes of a file tensor (a GGUF tensor's data: io::gguf_file::tensor_data)
  /// without copying. `file_type` is the tensor's type in the file and `name` names it in
  /// errors: a type other than B's, a size other than shape's, or bytes not aligned for B ->
  /// tfm::value_error (K not a whole number of blocks -> tfm::shape_error).
  static tensor_view from_bytes(std::span<const std::byte> bytes, const S& shape,
                                ggml_type file_type,
                                std::string_view name) requires std::is_const_v<B> {
    if (file_type != type)
      fail(errc::value, "tfm::tensor_view<", ggml_type_name(type), ">: tensor '", name, "' is ",
           ggml_type_name(file_type), ", not ", ggml_type_name(type),
           " (the block type of the view); view it with its own block type or dequantize it.");
    const index_t bpr = checked_bpr(shape);
    const std::size_t want = static_cast<std::size_t>(detail::block_rows<B>(shape)) *
                             static_cast<std::size_t>(bpr) * sizeof(B);
    if (bytes.size() != want)
      fail(errc::value, "tfm::tensor_view<", ggml_type_name(type), ">: tensor '", name, "' has ",
           bytes.size(), " bytes, but ", shape.to_string(), " in ", ggml_type_name(type),
           " blocks needs ", want, ".");
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(B) != 0)
      fail(errc::value, "tfm::tensor_view<", ggml_type_name(type), ">: tensor '", name,
           "' is not aligned to ", alignof(B), " bytes in memory (copy it into a tensor).");
    return tensor_view(reinterpret_cast<B*>(bytes.data()), shape, bpr);
  }

  B* data() const noexcept { return data_; }
  const S& shape() const noexcept { return shape_; }
  index_t extent(std::size_t axis) const noexcept { return shape_.extent(axis); }
  /// Logical elements (N * K).
  index_t size() const noexcept { return shape_.size(); }
  bool empty() const noexcept { return size() == 0; }
  index_t rows() const noexcept { return detail::block_rows<B>(shape_); }
  index_t blocks_per_row() const noexcept { return detail::blocks_per_row<B>(shape_); }
  /// Blocks from the start of one row to the next.
  index_t row_stride() const noexcept { return ld_; }
  bool is_contiguous() const noexcept { return ld_ == blocks_per_row() || rows() <= 1; }

  /// The blocks of row r (tfm::index_error when out of range).
  std::span<B> row(index_t r) const {
    detail::check_row_index(r, rows(), "tfm::tensor_view<block>::row");
    return {data_ + r * ld_, static_cast<std::size_t>(blocks_per_row())};
  }
  /// All blocks, row after row (contiguous views only, else tfm::value_error).
  std::span<B> blocks() const {
    if (!is_contiguous())
      fail(errc::value, "tfm::tensor_view<", ggml_type_name(type),
           ">::blocks: the rows are not contiguous; read them with row(r).");
    return {data_, static_cast<std::size_t>(rows() * blocks_per_row())};
  }
  /// The logical elements as a new float tensor.
  tensor<float, S, Backend> dequantize() const {
    return detail::dequantize_rows<Backend>(data_, shape_, ld_);
  }
  tensor_view view() const noexcept { return *this; }

 private:
  static index_t checked_bpr(const S& shape) {
    detail::check_quantized_shape<B>(shape, "tfm::tensor_view");
    return detail::blocks_per_row<B>(shape);
  }

  B* data_ = nullptr;
  [[no_unique_address]] S shape_{};
  index_t ld_ = 0;
};

// ============================================================================================
/// An owning tensor of N x K logical elements stored as N * K / block blocks, row after row.
template <class B, shape_type S, class Backend, class Storage>
requires ggml_block<B>
class tensor<B, S, Backend, Storage> {
  static_assert(detail::quantized_layout_check<B, S>::value);
  static_assert(!std::is_const_v<B> && !std::is_volatile_v<B>,
                "tfm::tensor: the block type of an owning tensor must not be const; use "
                "tensor_view<const Block, Shape> for read-only blocks.");
  using engine = detail::block_storage<B, S, Storage>;

 public:
  using block_type = B;
  using element_type = B;
  using value_type = float;  ///< the logical elements (dequantize() gives them)
  using shape_type = S;
  using backend_type = Backend;
  using storage_type = Storage;
  static constexpr std::size_t rank = S::rank;
  static constexpr index_t block_elements = static_cast<index_t>(block_traits<B>::block_elements);
  static constexpr ggml_type type = block_traits<B>::type;

  /// Static shape: zero blocks (every element 0). Dynamic shape: empty.
  tensor() : tensor(S{}) {}
  /// Zero blocks of the given shape (K not a whole number of blocks: tfm::shape_error).
  explicit tensor(const S& shape) : shape_(checked(shape)), buf_(engine::make(block_count())) {}
  /// Zero blocks from the dynamic extents: tensor<block_q4_0, shape<dyn, 64>> w(10).
  template <std::integral... I>
  requires(sizeof...(I) == S::rank_dynamic &&
           S::rank_dynamic > 0) explicit tensor(I... dynamic_extents)
      : tensor(S(dynamic_extents...)) {}
  /// Quantizes a float tensor or view of the same shape (tfm::quantize_row per row; `name`
  /// names it in errors). The same as tfm::quantize<Block>(x).
  template <class X>
  requires detail::float_matrix<X>
  explicit tensor(const X& x, std::string_view name = "?")
      : tensor(checked(S::from_extents(x.shape().extents()))) {
    using SX = typename std::remove_cvref_t<X>::shape_type;
    static_assert(
        (S::static_extents[0] == dyn || SX::static_extents[0] == dyn ||
         S::static_extents[0] == SX::static_extents[0]) &&
            (S::static_extents[1] == dyn || SX::static_extents[1] == dyn ||
             S::static_extents[1] == SX::static_extents[1]),
        "tfm::quantize: the static shape of the float tensor differs from the block tensor's.");
    static_assert(detail::has_quantizer<B>,
                  "tfm::quantize: quant/quantize.hpp has no quantizer for this block type yet.");
    detail::quantize_rows(tensor_view<const float, SX>(x.data(), x.shape(), x.strides()), data(),
                          blocks_per_row(), name);
  }

  tensor(const tensor&) = default;
  tensor(tensor&&) noexcept = default;
  tensor& operator=(const tensor&) = default;
  tensor& operator=(tensor&&) noexcept = default;
  /// Anything else (a float tensor, an expression, other blocks) does not convert implicitly:
  /// write w = tfm::quantize<Block>(x).
  template <class E>
  requires(!std::is_same_v<std::remove_cvref_t<E>, tensor>) tensor& operator=(E&&) {
    static_assert(detail::quantized_assign_check<
                  B, S, typename detail::assigned_source<std::remove_cvref_t<E>>::type>::value);
    return *this;
  }

  const S& shape() const noexcept { return shape_; }
  index_t extent(std::size_t axis) const noexcept { return shape_.extent(axis); }
  /// Logical elements (N * K).
  index_t size() const noexcept { return shape_.size(); }
  bool empty() const noexcept { return size() == 0; }
  index_t rows() const noexcept { return detail::block_rows<B>(shape_); }
  index_t blocks_per_row() const noexcept { return detail::blocks_per_row<B>(shape_); }
  index_t row_stride() const noexcept { return blocks_per_row(); }
  index_t block_count() const noexcept { return rows() * blocks_per_row(); }
  static constexpr bool is_contiguous() noexcept { return true; }

  B* data() noexcept { return buf_.data(); }
  const B* data() const noexcept { return buf_.data(); }
  std::span<B> blocks() noexcept { return {data(), static_cast<std::size_t>(block_count())}; }
  std::span<const B> blocks() const noexcept {
    return {data(), static_cast<std::size_t>(block_count())};
  }
  /// The bytes: the GGUF tensor data of this matrix (ne = {K, N}).
  std::span<const std::byte> bytes() const noexcept { return std::as_bytes(blocks()); }
  /// The blocks of row r (tfm::index_error when out of range).
  std::span<B> row(index_t r) {
    detail::check_row_index(r, rows(), "tfm::tensor<block>::row");
    return {data() + r * blocks_per_row(), static_cast<std::size_t>(blocks_per_row())};
  }
  std::span<const B> row(index_t r) const {
    detail::check_row_index(r, rows(), "tfm::tensor<block>::row");
    return {data() + r * blocks_per_row(), static_cast<std::size_t>(blocks_per_row())};
  }

  tensor_view<B, S, Backend> view() noexcept { return {data(), shape_, blocks_per_row()}; }
  tensor_view<const B, S, Backend> view() const noexcept {
    return {data(), shape_, blocks_per_row()};
  }
  operator tensor_view<B, S, Backend>() noexcept { return view(); }
  operator tensor_view<const B, S, Backend>() const noexcept { return view(); }

  /// The logical elements as a new float tensor (bitwise tfm::dequantize of the blocks).
  tensor<float, S, Backend> dequantize() const {
    return detail::dequantize_rows<Backend>(data(), shape_, blocks_per_row());
  }

 private:
  static const S& checked(const S& s) {
    detail::check_quantized_shape<B>(s, "tfm::tensor");
    return s;
  }

  [[no_unique_address]] S shape_;
  typename engine::type buf_;
};

// ---- free functions -------------------------------------------------------------------------

/// Quantizes a rank-2 float tensor or view x (N, K) to Block: a tensor<Block, same shape type,
/// same backend>. `name` names x in errors (NaN/Inf, K not a whole number of blocks).
template <class Block, class X>
requires(ggml_block<Block>&& detail::float_matrix<X>) auto quantize(const X& x,
                                                                    std::string_view name = "?") {
  using XT = std::remove_cvref_t<X>;
  return tensor<Block, typename XT::shape_type, typename XT::backend_type>(x, name);
}

/// The logical elements of a block tensor or view as a float tensor.
template <class W>
requires(quantized_tensor_type<W> || quantized_view_type<W>) auto dequantize(const W& w) {
  return w.dequantize();
}

// ---- transpose: the right operand of matmul(x, transpose(w)) -------------------------------

/// W^T for a block matrix W (N, K): a view of shape (K, N) over W's blocks, no copy. Only
/// matmul (ops/quant_matmul.hpp) and transpose take it; base() is W.
template <class View>
class transposed_blocks {
  using SW = typename View::shape_type;

 public:
  using view_type = View;
  using block_type = typename View::block_type;
  using shape_type = tfm::shape<SW::static_extents[1], SW::static_extents[0]>;
  static constexpr std::size_t rank = 2;

  explicit transposed_blocks(const View& w) noexcept : w_(w) {}
  const View& base() const noexcept { return w_; }
  shape_type shape() const { return shape_type::from_extents({w_.extent(1), w_.extent(0)}); }
  index_t extent(std::size_t axis) const noexcept { return w_.extent(1 - axis); }

 private:
  View w_;
};

namespace detail {
template <class X>
struct is_transposed_blocks : std::false_type {};
template <class V>
struct is_transposed_blocks<transposed_blocks<V>> : std::true_type {};
}  // namespace detail
/// A transposed block matrix (transpose of a block tensor or view).
template <class X>
concept transposed_blocks_type = detail::is_transposed_blocks<std::remove_cvref_t<X>>::value;

template <class B, class S, class Be, class St>
requires ggml_block<B>
auto transpose(const tensor<B, S, Be, St>& w) noexcept {
  return transposed_blocks<tensor_view<const B, S, Be>>(w.view());
}
template <class B, class S, class Be, class St>
requires ggml_block<B>
auto transpose(tensor<B, S, Be, St>&& w) noexcept {
  static_assert(detail::dependent_false<B>,
                "tfm::transpose: cannot take a view of a temporary block tensor: the view would "
                "dangle. Store the tensor in a variable first.");
  return transposed_blocks<tensor_view<const B, S, Be>>(w.view());
}
template <class B, class S, class Be>
requires ggml_block<B>
auto transpose(const tensor_view<B, S, Be>& w) noexcept {
  return transposed_blocks<tensor_view<const B, S, Be>>(w);
}
template <class V>
const V& transpose(const transposed_blocks<V>& wt) noexcept {
  return wt.base();
}

TFM_END_NAMESPACE
