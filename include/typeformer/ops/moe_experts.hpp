// typeformer/ops/moe_experts.hpp
//
// The expert half of a mixture-of-experts layer as one differentiable op (Shazeer et al. 2017,
// arXiv:1701.06538; SwiGLU experts as in Mixtral, arXiv:2401.04088):
//
//   y = moe_experts<B>(x, route, w_gate, w_up, w_down)
//   y[n] = sum_j gates[n, j] * W_down[e] (silu(W_gate[e] x[n]) * (W_up[e] x[n])),
//          e = route.expert[n*k + j], over the slots j that are not dropped (-1)
//
//   x (tokens, C), route (ops/moe_route.hpp: tokens * k expert ids, gates (tokens, k)),
//   w_gate (E, F, C), w_up (E, F, C), w_down (E, C, F) -> y (tokens, C).
//
// One node: gradients flow to x, route.gates and the three expert weights. The expert ids are
// not differentiable: the router gets its gradient only through the gates, as in the papers
// (Switch Transformers, arXiv:2101.03961, section 2.1). A token whose slots are all dropped gets
// y[n] = 0 (the caller's residual carries it). The kernels (backend/<tag>/moe.hpp, tag B,
// default cpu as in nn/qlora.hpp until vars carry a backend) group the tokens by expert and run
// packed GEMMs on each expert's rows; results do not depend on the thread count.
//
// Errors: shapes that disagree raise tfm::shape_error naming both extents; an expert id outside
// [-1, E) raises tfm::index_error naming the slot.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/moe.hpp"
#include "typeformer/backend/reference/moe.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/ops/moe_route.hpp"

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

namespace detail::moe {

/// "(a, b, c)" of a record's extents, for messages.
inline std::string extents_str(const std::vector<index_t>& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < e.size(); ++i) s += (i ? ", " : "") + std::to_string(e[i]);
  return s + ")";
}

template <class T>
void check_op_shapes(const var_data<T>& x, const moe_route<T>& route, const var_data<T>* gates,
                     const var_data<T>& wg, const var_data<T>& wu, const var_data<T>& wd) {
  const char* who = "tfm::moe_experts";
  const index_t N = x.extents[0], C = x.extents[1];
  if (route.tokens != N)
    fail(errc::shape, who, ": x ", extents_str(x.extents), " has ", N,
         " tokens but the route was made for ", route.tokens, ".");
  if (route.k < 0 || static_cast<index_t>(route.expert.size()) != route.tokens * route.k)
    fail(errc::shape, who, ": the route holds ", route.expert.size(), " expert ids for ",
         route.tokens, " tokens x k ", route.k, ".");
  if (!gates || gates->extents.size() != 2 || gates->extents[0] != N ||
      gates->extents[1] != route.k)
    fail(errc::shape, who, ": the route's gates are ",
         gates ? extents_str(gates->extents) : std::string("undefined"), ", not (tokens ", N,
         ", k ", route.k, ").");
  if (wg.extents.size() != 3)
    fail(errc::shape, who, ": w_gate is ", extents_str(wg.extents), ", not (E, F, C).");
  const index_t E = wg.extents[0], F = wg.extents[1];
  if (E != route.n_expert)
    fail(errc::shape, who, ": w_gate ", extents_str(wg.extents), " holds ", E,
         " experts but the route has n_expert ", route.n_expert, ".");
  if (wg.extents[2] != C)
    fail(errc::shape, who, ": w_gate ", extents_str(wg.extents), " has C = ", wg.extents[2],
         " but x ", extents_str(x.extents), " has C = ", C, ".");
  if (wu.extents != wg.extents)
    fail(errc::shape, who, ": w_up ", extents_str(wu.extents), " differs from w_gate ",
         extents_str(wg.extents), "; both must be (E, F, C).");
  if (wd.extents.size() != 3 || wd.extents[0] != E || wd.extents[1] != C || wd.extents[2] != F)
    fail(errc::shape, who, ": w_down is ", extents_str(wd.extents), ", not (E ", E, ", C ", C,
         ", F ", F, ") to match w_gate ", extents_str(wg.extents), ".");
}

template <class T>
moe_grad_target<T> grad_target_of(const var_ptr<T>& v) {
  if (!v->requires_grad) return {};
  const auto t = v->grad_for_overwrite();
  return {t.data, t.accumulate};
}

template <class B, class T>
var_ptr<T> ad_moe_experts(const var_ptr<T>& x, const moe_route<T>& route, const var_ptr<T>& wg,
                          const var_ptr<T>& wu, const var_ptr<T>& wd) {
  const var_ptr<T>& gates = route.gates.data();
  check_op_shapes(*x, route, gates.get(), *wg, *wu, *wd);
  struct state {
    std::vector<std::int32_t> expert;
    moe_ffn_problem<T> p;
    moe_ffn_cache<T> cache;
  };
  auto st = std::make_shared<state>();
  st->expert = route.expert;
  moe_ffn_problem<T>& p = st->p;
  p.tokens = x->extents[0];
  p.C = x->extents[1];
  p.k = route.k;
  p.n_expert = wg->extents[0];
  p.F = wg->extents[1];
  p.expert = st->expert.data();
  p.gates = gates->value.data();
  p.x = x->value.data();
  p.w_gate = wg->value.data();
  p.w_up = wu->value.data();
  p.w_down = wd->value.data();
  auto y = result<T>(x->extents);
  moe_ffn_forward(B{}, p, st->cache, y->value.data());
  record(y, "moe_experts", {x, gates, wg, wu, wd}, [x, gates, wg, wu, wd, st, o = y.get()] {
    moe_ffn_grads<T> gr;
    gr.x = grad_target_of(x);
    gr.gates = grad_target_of(gates);
    gr.w_gate = grad_target_of(wg);
    gr.w_up = grad_target_of(wu);
    gr.w_down = grad_target_of(wd);
    moe_ffn_backward(B{}, st->p, st->cache, o->grad_data(), gr);
  });
  return y;
}

}  // namespace detail::moe

/// y (tokens, C) = the gated sum of each token's routed SwiGLU experts (file comment).
template <class B = cpu, class T, class SX, class SG, class SD>
var<T, SX> moe_experts(const var<T, SX>& x, const moe_route<T>& route, const var<T, SG>& w_gate,
                       const var<T, SG>& w_up, const var<T, SD>& w_down) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm::moe_experts: float or double values");
  static_assert(SX::rank == 2, "tfm::moe_experts: x must be (tokens, C)");
  static_assert(SG::rank == 3 && SD::rank == 3,
                "tfm::moe_experts: w_gate and w_up must be (E, F, C), w_down (E, C, F)");
  static_assert(SX::static_extents[1] == dyn || SG::static_extents[2] == dyn ||
                    SX::static_extents[1] == SG::static_extents[2],
                "tfm::moe_experts: x's C differs from w_gate's and w_up's last extent C");
  static_assert(SX::static_extents[1] == dyn || SD::static_extents[1] == dyn ||
                    SX::static_extents[1] == SD::static_extents[1],
                "tfm::moe_experts: x's C differs from w_down's middle extent C");
  return var<T, SX>(detail::moe::ad_moe_experts<B, T>(x.data(), route, w_gate.data(), w_up.data(),
                                                      w_down.data()));
}

TFM_END_NAMESPACE
