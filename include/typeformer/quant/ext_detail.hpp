// typeformer/quant/ext_detail.hpp
//
// WHAT THIS REPRESENTS
//   Helpers shared by the quantizers of typeformer's own weight layouts (quant/nf4.hpp,
//   quant/int_formats.hpp): input checks with messages naming the tensor, row and column, and a
//   rounding barrier. Internal (namespace tfm::detail::quant_ext).
//
// CONTRACTS
//   - check_finite(x, name, row, type) fails with tfm::value_error at the first NaN/Inf, naming
//     tensor `name`, row `row` and the column; check_matrix checks the sizes (tfm::shape_error).
//   - rounded(v) returns v rounded to binary32 and hidden from the optimizer, so a product cannot
//     be contracted with a following addition into an FMA (the numpy references round every
//     operation).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"

#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

TFM_BEGIN_NAMESPACE

namespace detail::quant_ext {

TFM_ALWAYS_INLINE float rounded(float v) noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__SSE2__)
  __asm__("" : "+x"(v));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

inline void check_finite(std::span<const float> x, std::string_view name, std::size_t row,
                         std::string_view type) {
  for (std::size_t j = 0; j < x.size(); ++j)
    if (!std::isfinite(x[j]))
      fail(errc::value, "tfm::quantize: tensor '", name, "' row ", row, " column ", j, " is ",
           std::isnan(x[j]) ? "NaN" : "Inf", "; only finite values can be quantized to ", type,
           ".");
}

/// rows x cols in x, cols a multiple of `block`, dst of `dst_bytes` = rows * row_bytes.
inline void check_matrix(std::size_t x_size, std::size_t rows, std::size_t cols, std::size_t block,
                         std::size_t row_bytes, std::size_t dst_bytes, std::string_view name,
                         std::string_view type) {
  if (x_size != rows * cols)
    fail(errc::shape, "tfm::quantize: tensor '", name, "' is ", rows, " x ", cols, " but has ",
         x_size, " values.");
  if (cols % block != 0)
    fail(errc::shape, "tfm::quantize: tensor '", name, "': a row of ", cols,
         " values is not a whole number of ", type, " blocks of ", block, ".");
  if (dst_bytes != rows * row_bytes)
    fail(errc::value, "tfm::quantize: tensor '", name, "': ", type, " needs ", rows * row_bytes,
         " bytes but the destination has ", dst_bytes, ".");
}

}  // namespace detail::quant_ext

TFM_END_NAMESPACE
