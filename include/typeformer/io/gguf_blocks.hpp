// typeformer/io/gguf_blocks.hpp
//
// Block-quantized GGUF tensors as typed views, without copying:
//
//   io::block_view<tfm::block_q4_0>(file, "blk.0.attn_q.weight")
//       -> tfm::tensor_view<const tfm::block_q4_0, tfm::dyn_shape<2>>  over the mapping
//
// CONTRACTS
//   - The view points into the gguf_file's mapping (its data() lies inside file.bytes()) and is
//     valid while the gguf_file lives (moving the file keeps it valid, as for tensor_data()).
//   - The tensor must exist (tfm::parse_error naming it), be 2-D (ne = {K, N}: shape (N, K))
//     and have the block's type; otherwise tfm::value_error naming the file, the tensor and
//     both types ("tensor 'w' is Q8_0, not Q4_0"). Its data must be aligned for the block in
//     memory (GGUF's default alignment of 32 is; a file written with general.alignment 1 may not
//     be): else tfm::value_error.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/blocks.hpp"
#include "typeformer/quant/tensor.hpp"

#include <string_view>

TFM_BEGIN_NAMESPACE
namespace io {

/// A view of the 2-D GGUF tensor `name` as N rows of K / block blocks of type Block (see above).
template <class Block>
requires ggml_block<Block> tensor_view<const Block, dyn_shape<2>> block_view(
    const gguf_file& file, std::string_view name) {
  const gguf_tensor_info& t = file.tensor(name);
  constexpr ggml_type want = block_traits<Block>::type;
  if (t.type != want)
    fail(errc::value, "tfm::io::block_view: '", file.name(), "': tensor '", name, "' is ",
         ggml_type_name(t.type), ", not ", ggml_type_name(want),
         " (the block type asked for); view it with its own block type or dequantize it.");
  if (t.n_dims != 2)
    fail(errc::value, "tfm::io::block_view: '", file.name(), "': tensor '", name, "' has ",
         t.n_dims, " dimensions; block views are matrices (2 dimensions).");
  const auto shape = dyn_shape<2>::from_extents({t.ne[1], t.ne[0]});
  return tensor_view<const Block, dyn_shape<2>>::from_bytes(file.tensor_data(t), shape, t.type,
                                                            name);
}

}  // namespace io
TFM_END_NAMESPACE
