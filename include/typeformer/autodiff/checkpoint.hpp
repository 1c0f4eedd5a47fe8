// typeformer/autodiff/checkpoint.hpp
//
// Gradient checkpointing (activation recomputation; Chen et al., arXiv:1604.06174):
//
//   auto y = tfm::checkpoint([&](const auto& h) { return block(h); }, x);
//
// The forward runs without recording, so none of the segment's intermediate activations are
// kept; only x and the output are. During backward the segment is run again with recording on,
// from a detached copy of x, and the output gradient is propagated through that fresh graph:
// parameters used inside f receive their gradients, and x's gradient flows on to the rest of the
// graph. Memory drops from the segment's activations to its input; compute grows by one forward.
//
// Contract: f must be deterministic (dropout with fixed seed/offset is), and may capture leaves
// (parameters) but not intermediate vars of the outer graph: pass those as the input instead.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"

#include <cstring>
#include <type_traits>
#include <utility>

TFM_BEGIN_NAMESPACE

template <class F, class T, class S>
auto checkpoint(F&& f, const var<T, S>& x) {
  using Y = std::invoke_result_t<F&, const var<T, S>&>;
  static_assert(var_type<Y>, "tfm::checkpoint: the segment must return a tfm::var");
  using YT = typename Y::value_type;
  if (!grad_enabled()) return f(x);
  Y y0;
  {
    no_grad ng;
    y0 = f(x);
  }
  auto out = y0.data();  // a fresh record with no creator
  auto xd = x.data();
  auto n = std::make_shared<detail::node>();
  n->op_name = "checkpoint";
  n->inputs = {xd};
  n->output = out.get();
  n->backward = [fn = std::forward<F>(f), xd, o = out.get()]() mutable {
    enable_grad eg;
    auto xr = detail::make_var_data<T>(xd->extents);
    if (xd->size())
      std::memcpy(static_cast<void*>(xr->value.data()), xd->value.data(),
                  sizeof(T) * static_cast<std::size_t>(xd->size()));
    xr->requires_grad = xd->requires_grad;
    var<T, S> xv(xr);
    Y yr = fn(xv);
    auto yd = yr.data();
    if (!yd->requires_grad) return;  // nothing inside needs gradients
    // Seed the recomputed output with the incoming gradient and propagate.
    using G = grad_t<YT>;
    G* gs = yd->grad_data();
    const G* gin = o->grad_data();
    for (index_t i = 0; i < yd->size(); ++i) gs[i] = gin[i];
    backward_seeded(yd);
    if (xd->requires_grad && xr->has_grad()) {
      grad_t<T>* gx = xd->grad_data();
      const auto* gr = xr->grad_data();
      for (index_t i = 0; i < xd->size(); ++i) gx[i] += gr[i];
    }
  };
  out->requires_grad = true;
  out->creator = std::move(n);
  return Y(out);
}

TFM_END_NAMESPACE
