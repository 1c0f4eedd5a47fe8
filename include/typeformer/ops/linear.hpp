// typeformer/ops/linear.hpp
//
// y = x W^T (+ b), the affine map of nn::linear, forward and vjp side by side. W is stored
// (out, in) as in PyTorch and GGUF files, so the product runs as one GEMM with B transposed and
// no copy of the weights; the batch axes of x fold into the GEMM's rows.
//   x (..., in), W (out, in), b (out) -> y (..., out)
//   dx = dy W          dW += dy^T x (rows summed)          db += sum over rows of dy
// matmul_nt(a, b) = a b^T for batched operands (attention scores q k^T) is provided too.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/ops/matmul.hpp"

#include <type_traits>

TFM_BEGIN_NAMESPACE

namespace detail {
/// Fails with a shape_error unless the weight w is (rows, in); `who` names the op and `rows`
/// what the weight's rows are ("out", "classes").
template <class T>
void check_weight_shape(const char* who, const var_data<T>& w, index_t in, const char* rows) {
  const auto& e = w.extents;
  if (e.size() != 2 || e[1] != in)
    fail(errc::shape, who, ": the weight has shape (", e.empty() ? -1 : e[0], ", ",
         e.size() > 1 ? e[1] : -1, ") but the input's last axis has ", in,
         " features; the weight must be (", rows, ", in).");
}

template <class T, std::size_t R>
var_ptr<T> ad_linear(const var_ptr<T>& x, const var_ptr<T>& w, const var_ptr<T>& b) {
  const index_t in = x->extents[R - 1];
  check_weight_shape("tfm::linear", *w, in, "out");
  const index_t out_f = w->extents[0];
  if (b && (b->extents.size() != 1 || b->extents[0] != out_f))
    fail(errc::shape, "tfm::linear: the bias must have ", out_f, " elements.");
  const index_t rows = in ? x->size() / in : 0;
  std::vector<index_t> e = x->extents;
  e[R - 1] = out_f;
  auto y = result<T>(e);
  using K = std::conditional_t<std::is_same_v<T, double>, double, float>;
  auto run = [&](const K* xp, const K* wp, K* yp) {
    if (rows && out_f) {
      if (in == 0) {
        for (index_t i = 0; i < rows * out_f; ++i) yp[i] = 0;
      } else {
        gemm_kernel<K>(false, true, rows, out_f, in, K(1), xp, in, wp, in, K(0), yp, out_f, cpu{});
      }
    }
  };
  if constexpr (std::is_same_v<T, K>) {
    run(x->value.data(), w->value.data(), y->value.data());
    if (b) {
      tensor_view<T, dyn_shape<2>> y2(y->value.data(), dyn_shape<2>(rows, out_f));
      tensor_view<const T, dyn_shape<1>> b1(b->value.data(), dyn_shape<1>(out_f));
      y2 = y2 + b1;
    }
  } else {  // bf16/f16: compute in float, round once
    auto xf = eval(cast<float>(value_view<R>(x)));
    auto wf = eval(cast<float>(value_view<2>(w)));
    tensor<float, dyn_shape<2>> yf(dyn_shape<2>(rows, out_f));
    run(xf.data(), wf.data(), yf.data());
    if (b) yf = yf + value_view<1>(b);
    tensor_view<T, dyn_shape<2>>(y->value.data(), dyn_shape<2>(rows, out_f)) = yf;
  }
  std::vector<std::shared_ptr<var_base>> ins{x, w};
  if (b) ins.push_back(b);
  record(y, "linear", std::move(ins), [x, w, b, o = y.get(), rows, in, out_f] {
    using G = grad_t<T>;
    const G* g = o->grad_data();
    if (rows == 0) return;
    auto as_k = [](const auto& d, index_t n) {  // the value in the GEMM type
      tensor<G, dyn_shape<1>> t{dyn_shape<1>(n)};
      t = tensor_view<const T, dyn_shape<1>>(d->value.data(), dyn_shape<1>(n));
      return t;
    };
    // Each GEMM writes the whole gradient: the first contribution is assigned (beta = 0).
    if (x->requires_grad && in && out_f) {  // dx (rows, in) += g (rows, out) W (out, in)
      const auto dx = x->grad_for_overwrite();
      const G beta = dx.beta();
      if constexpr (std::is_same_v<T, G>)
        gemm_kernel<G>(false, false, rows, in, out_f, G(1), g, out_f, w->value.data(), in, beta,
                       dx.data, in, cpu{});
      else {
        auto wk = as_k(w, out_f * in);
        gemm_kernel<G>(false, false, rows, in, out_f, G(1), g, out_f, wk.data(), in, beta, dx.data,
                       in, cpu{});
      }
    }
    if (w->requires_grad && in && out_f) {  // dW (out, in) += g^T (out, rows) x (rows, in)
      const auto dw = w->grad_for_overwrite();
      const G beta = dw.beta();
      if constexpr (std::is_same_v<T, G>)
        gemm_kernel<G>(true, false, out_f, in, rows, G(1), g, out_f, x->value.data(), in, beta,
                       dw.data, in, cpu{});
      else {
        auto xk = as_k(x, rows * in);
        gemm_kernel<G>(true, false, out_f, in, rows, G(1), g, out_f, xk.data(), in, beta, dw.data,
                       in, cpu{});
      }
    }
    if (b && b->requires_grad) {  // db += column sums of g, in a fixed order
      std::vector<accum_t<G>> cs(static_cast<std::size_t>(out_f));
      reduce_kernel<reduce_op::sum>(g, index_t{1}, rows, out_f, cs.data(), cpu{});
      G* gb = b->grad_data();
      for (index_t j = 0; j < out_f; ++j) gb[j] += static_cast<G>(cs[static_cast<std::size_t>(j)]);
    }
  });
  return y;
}
}  // namespace detail

/// y = x W^T + b, W (out, in), b (out) or tfm::none.
template <class T, class SX, class SW, class B>
auto linear(const var<T, SX>& x, const var<T, SW>& w, const B& bias) {
  static_assert(SW::rank == 2, "tfm::linear: the weight must be (out, in)");
  static_assert(SX::static_extents[SX::rank - 1] == dyn || SW::static_extents[1] == dyn ||
                    SX::static_extents[SX::rank - 1] == SW::static_extents[1],
                "tfm::linear: the input's last extent differs from the weight's 'in' extent");
  using SY = detail::set_extent_t<SX, SX::rank - 1, SW::static_extents[0]>;
  detail::var_ptr<T> b;
  if constexpr (!std::is_same_v<B, none_t>) b = bias.data();
  return var<T, SY>(detail::ad_linear<T, SX::rank>(x.data(), w.data(), b));
}
template <class T, class SX, class SW>
auto linear(const var<T, SX>& x, const var<T, SW>& w) {
  return linear(x, w, none);
}

TFM_END_NAMESPACE
