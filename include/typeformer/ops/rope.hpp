// typeformer/ops/rope.hpp
//
// Rotary position embedding (RoFormer, Su et al., arXiv:2104.09864), forward and vjp.
// x has shape (..., T, D) with D even; the row for time step t (position pos0 + t) is rotated
// pairwise by angles (pos * theta_i), theta_i = base^(-2i/D), i < D/2:
//   style::interleaved  pairs (x[2i], x[2i+1])        (GPT-J; llama.cpp's "normal" rope on GGUF)
//   style::half         pairs (x[i], x[i + D/2])      (GPT-NeoX; Hugging Face rotate_half)
// Context extension (rope_config::scaling):
//   linear  position interpolation: pos / factor                  (Chen et al., arXiv:2306.15595)
//   ntk     "NTK-aware": base * factor^(D / (D - 2))              (bloc97, 2023; see YaRN paper)
//   yarn    per-frequency ramp between interpolation and extrapolation on the wavelength ratio
//           r = original_context / (2 pi / theta_i): gamma = clamp((r - beta_slow) /
//           (beta_fast - beta_slow), 0, 1); theta'_i = (1 - gamma) theta_i / factor + gamma
//           theta_i; cos and sin are scaled by mscale = 0.1 ln(factor) + 1  (Peng et al.,
//           arXiv:2309.00071)
// The vjp rotates the gradient by the opposite angles (the rotation's transpose), times mscale.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

#include <cmath>
#include <memory>
#include <vector>

TFM_BEGIN_NAMESPACE

struct rope_config {
  enum class style { interleaved, half };
  enum class scaling { none, linear, ntk, yarn };
  double base = 10000.0;
  style pair_style = style::interleaved;
  scaling scale_kind = scaling::none;
  double factor = 1.0;             // context extension factor (linear, ntk, yarn)
  double original_context = 2048;  // yarn: the context the model was trained with
  double beta_fast = 32.0;         // yarn ramp bounds (in rotations per context)
  double beta_slow = 1.0;
};

namespace detail {
/// cos/sin tables (T, D/2) for positions pos0 .. pos0+T-1, in double.
struct rope_table {
  index_t T = 0, half = 0;
  std::vector<double> cos, sin;
};
inline rope_table make_rope_table(const rope_config& c, index_t D, index_t T, index_t pos0) {
  if (D % 2 != 0) fail(errc::shape, "tfm::rope: the head dimension must be even, got ", D, ".");
  if (c.factor <= 0) fail(errc::value, "tfm::rope: the scaling factor must be positive.");
  rope_table tb;
  tb.T = T;
  tb.half = D / 2;
  double base = c.base;
  if (c.scale_kind == rope_config::scaling::ntk)
    base = c.base * std::pow(c.factor, static_cast<double>(D) / static_cast<double>(D - 2));
  const double pi2 = 6.283185307179586476925286766559;
  double mscale = 1.0;
  if (c.scale_kind == rope_config::scaling::yarn && c.factor > 1)
    mscale = 0.1 * std::log(c.factor) + 1.0;
  std::vector<double> theta(static_cast<std::size_t>(tb.half));
  for (index_t i = 0; i < tb.half; ++i) {
    double th = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(D));
    if (c.scale_kind == rope_config::scaling::yarn) {
      double r = c.original_context * th / pi2;  // rotations over the original context
      double g = (r - c.beta_slow) / (c.beta_fast - c.beta_slow);
      g = g < 0 ? 0 : g > 1 ? 1 : g;
      th = (1 - g) * th / c.factor + g * th;
    }
    theta[static_cast<std::size_t>(i)] = th;
  }
  tb.cos.resize(static_cast<std::size_t>(T * tb.half));
  tb.sin.resize(tb.cos.size());
  for (index_t t = 0; t < T; ++t) {
    double pos = static_cast<double>(pos0 + t);
    if (c.scale_kind == rope_config::scaling::linear) pos /= c.factor;
    for (index_t i = 0; i < tb.half; ++i) {
      double a = pos * theta[static_cast<std::size_t>(i)];
      tb.cos[static_cast<std::size_t>(t * tb.half + i)] = mscale * std::cos(a);
      tb.sin[static_cast<std::size_t>(t * tb.half + i)] = mscale * std::sin(a);
    }
  }
  return tb;
}

/// y = rotate(x) (sign = +1) or the transpose rotation (sign = -1) on contiguous (rows, T, D).
template <class TI, class TO, bool Accumulate>
void rope_apply(const TI* x, TO* y, index_t outer, const rope_table& tb, rope_config::style st,
                double sign) {
  const index_t T = tb.T, h = tb.half, D = 2 * h;
  TFM_OMP(parallel for schedule(static) if (outer * T * D >= (1 << 15)))
  for (index_t o = 0; o < outer; ++o) {
    for (index_t t = 0; t < T; ++t) {
      const TI* xr = x + (o * T + t) * D;
      TO* yr = y + (o * T + t) * D;
      const double* cs = tb.cos.data() + t * h;
      const double* sn = tb.sin.data() + t * h;
      for (index_t i = 0; i < h; ++i) {
        index_t a = st == rope_config::style::interleaved ? 2 * i : i;
        index_t b = st == rope_config::style::interleaved ? 2 * i + 1 : i + h;
        double x0 = static_cast<double>(compute_t<TI>(xr[a])),
               x1 = static_cast<double>(compute_t<TI>(xr[b]));
        double c = cs[i], s = sign * sn[i];
        double y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        if constexpr (Accumulate) {
          yr[a] = static_cast<TO>(static_cast<double>(yr[a]) + y0);
          yr[b] = static_cast<TO>(static_cast<double>(yr[b]) + y1);
        } else {
          yr[a] = to_storage<TO>(static_cast<compute_t<TO>>(y0));
          yr[b] = to_storage<TO>(static_cast<compute_t<TO>>(y1));
        }
      }
    }
  }
}
}  // namespace detail

/// Rotary embedding of a tensor (..., T, D) whose first time step has position pos0.
template <class X>
requires dense_type<X>
auto rope(const X& x, const rope_config& cfg, index_t pos0 = 0) {
  auto c = eval(x);
  using S = typename decltype(c)::shape_type;
  static_assert(S::rank >= 2, "tfm::rope: the input must be (..., T, D)");
  const index_t T = c.extent(S::rank - 2), D = c.extent(S::rank - 1);
  auto tb = detail::make_rope_table(cfg, D, T, pos0);
  const index_t outer = (T && D) ? c.size() / (T * D) : 0;
  detail::rope_apply<typename decltype(c)::value_type, typename decltype(c)::value_type, false>(
      c.data(), c.data(), outer, tb, cfg.pair_style, 1.0);
  return c;
}

/// Differentiable rotary embedding of a var (..., T, D).
template <class T, class S>
var<T, S> rope(const var<T, S>& x, const rope_config& cfg, index_t pos0 = 0) {
  static_assert(S::rank >= 2, "tfm::rope: the input must be (..., T, D)");
  auto a = x.data();
  const index_t T_ = a->extents[S::rank - 2], D = a->extents[S::rank - 1];
  auto tb = std::make_shared<detail::rope_table>(detail::make_rope_table(cfg, D, T_, pos0));
  const index_t outer = (T_ && D) ? a->size() / (T_ * D) : 0;
  auto out = detail::result<T>(a->extents);
  detail::rope_apply<T, T, false>(a->value.data(), out->value.data(), outer, *tb, cfg.pair_style,
                                  1.0);
  auto st = cfg.pair_style;
  detail::record(out, "rope", {a}, [a, o = out.get(), tb, outer, st] {
    detail::rope_apply<grad_t<T>, grad_t<T>, true>(o->grad_data(), a->grad_data(), outer, *tb, st,
                                                   -1.0);
  });
  return var<T, S>(out);
}

TFM_END_NAMESPACE
