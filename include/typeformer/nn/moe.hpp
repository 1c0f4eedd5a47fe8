// typeformer/nn/moe.hpp
//
// nn::moe_ffn<T, Cfg>: the mixture-of-experts feed-forward block of a transformer layer
// (config mlp = moe; nn::block uses it in place of nn::mlp). x (..., C) -> (..., C):
//
//   logits = router(x)                      (N, E), N = the tokens of x
//   route  = moe_route_tokens(logits)       which k of the E experts each token runs, and the
//                                           differentiable gate of each (ops/moe_router.hpp)
//   y      = sum over the token's slots of gate * SwiGLU_e(x)    (ops/moe_experts.hpp)
//          + shared(x)                      when n_shared_expert > 0 (DeepSeekMoE, Dai et al.
//                                           2024, arXiv:2401.06066: experts every token runs)
//
// Shapes and names (inside block N: "h.N.mlp."):
//   router.weight  (E, C)       experts.gate, experts.up (E, Fe, C)     experts.down (E, C, Fe)
//   noise.weight   (E, C)       (noisy_topk only)
//   shared.gate / shared.up / shared.down .weight (SwiGLU, width n_shared_expert * Fe)
// Fe = expert_ffn, or ffn when expert_ffn is 0. With a static config, E and Fe are in the
// parameters' types (a table of another number of experts does not convert), and k <= E is
// checked at compile time where both are static.
//
// Routers: the config's `router` (softmax_topk: Mixtral; gshard_topk; switch_top1;
// sigmoid_bias: DeepSeek-V3 with its auxiliary-loss-free bias balancing; expert_choice;
// noisy_topk: Shazeer et al. 2017's noisy top-k gating, a second (E, C) map "noise.weight",
// zero at start, whose softplus scales N(0, 1) noise added to the router logits while training:
// the noise comes from the block's dropout stream (seed, offset), so a resumed run draws the same;
// evaluation and generation route the clean logits, as softmax_topk). The
// capacity factor moe_capacity = 0 routes dropless; > 0 drops the slots past
// ceil(cf N k / E) per expert (their tokens pass through the block's residual add).
//
// Training. Each training forward records the balancing losses
// moe_aux_loss * E sum_i f_i P_i (Switch/GShard) and moe_z_loss * mean logsumexp^2 (ST-MoE), each
// when its coefficient is > 0; nn::gpt::loss adds them to the cross-entropy. Every forward keeps
// its routing statistics (last_stats: per-expert load, drops, router entropy), and training
// forwards add the router's choices to a running count that balance() (sigmoid_bias: after the
// optimizer step) turns into the bias update, then clears. The bias is state, not a parameter:
// bias() / set_bias() save and restore it.
#pragma once

#include "typeformer/nn/config.hpp"
#include "typeformer/nn/layers.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/ops/moe_experts.hpp"
#include "typeformer/ops/moe_router.hpp"
#include "typeformer/ops/view.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace nn {

/// The mixture-of-experts fields of a config, with those it leaves out at their defaults and
/// the expert width resolved (expert_ffn 0 -> ffn).
struct moe_settings {
  index_t n_expert = 8, n_expert_used = 2, expert_width = 0, n_shared_expert = 0;
  moe_router_kind router = moe_router_kind::softmax_topk;
  double aux_loss = 0.01, z_loss = 0.0, capacity = 0.0;
};
template <class Cfg>
moe_settings moe_settings_of(const Cfg& cfg) {
  const dynamic_config d = to_dynamic(cfg);
  moe_settings s;
  s.n_expert = d.n_expert;
  s.n_expert_used = d.router == moe_router_kind::switch_top1 ? 1 : d.n_expert_used;
  s.expert_width = d.expert_ffn > 0 ? d.expert_ffn : d.ffn;
  s.n_shared_expert = d.n_shared_expert;
  s.router = d.router;
  s.aux_loss = d.moe_aux_loss;
  s.z_loss = d.moe_z_loss;
  s.capacity = d.moe_capacity;
  return s;
}

/// The router options a forward uses (bias: the sigmoid_bias balancer's, else empty).
inline moe_router_options moe_options_of(const moe_settings& s, std::span<const double> bias) {
  moe_router_options o;
  o.kind = s.router == moe_router_kind::noisy_topk ? moe_router_kind::softmax_topk : s.router;
  o.k = s.n_expert_used;
  o.renormalize = s.router == moe_router_kind::sigmoid_bias;  // DeepSeek-V3 normalises
  if (s.router == moe_router_kind::expert_choice) {
    o.capacity_factor = s.capacity > 0 ? s.capacity : static_cast<double>(s.n_expert_used);
  } else {
    o.dropless = s.capacity <= 0;
    o.capacity_factor = s.capacity > 0 ? s.capacity : 1.0;
  }
  if (s.router == moe_router_kind::sigmoid_bias) o.bias = bias;
  return o;
}

template <class T, class Cfg>
class moe_ffn : public module_base<T, moe_ffn<T, Cfg>> {
  static constexpr index_t C = static_n_embd<Cfg>, E = static_n_expert<Cfg>,
                           K = static_n_expert_used<Cfg>, Fe = static_expert_width<Cfg>;
  static_assert(E == dyn || K == dyn || K <= E,
                "tfm::nn::moe_ffn: the config's n_expert_used (k) exceeds its n_expert (E)");

 public:
  /// An empty module (no parameters): assign a built one to it.
  moe_ffn() = default;
  /// On its own: sizes from the config; names "<prefix>.router.weight", "<prefix>.experts.gate".
  moe_ffn(const Cfg& cfg, std::uint64_t seed, std::string prefix = {})
      : moe_ffn(builder{seed, std::move(prefix)}, (validate(cfg), cfg), 0.02) {}
  /// Inside a model: proj_std is the init stddev of the down projections (GPT-2's residual
  /// scaling); the router and the other expert weights start at N(0, 0.02).
  moe_ffn(const builder& b, const Cfg& cfg, double proj_std) : s_(moe_settings_of(cfg)) {
    const std::string type = "nn::moe_ffn<T, " + extent_name(E) + " experts>";
    const index_t c = checked_extent(cfg.n_embd, C, type, "n_embd");
    const index_t e = checked_extent(s_.n_expert, E, type, "n_expert");
    const index_t f = checked_extent(s_.expert_width, Fe, type, "expert width");
    router = linear<T, C, E>(b.sub("router"), c, e, false);
    if (s_.router == moe_router_kind::noisy_topk)  // W_noise = 0 (stddev 0): scale softplus(0)
      noise = linear<T, C, E>(b.sub("noise"), c, e, false, 0.0);
    const builder x = b.sub("experts");
    w_gate =
        make_parameter<T>(x, "gate", shape<E, Fe, C>::from_extents({e, f, c}), init::normal(0.02));
    w_up = make_parameter<T>(x, "up", shape<E, Fe, C>::from_extents({e, f, c}), init::normal(0.02));
    w_down = make_parameter<T>(x, "down", shape<E, C, Fe>::from_extents({e, c, f}),
                               init::normal(proj_std));
    if (s_.n_shared_expert > 0)
      shared = mlp<T, C, dyn>(b.sub("shared"), c, s_.n_shared_expert * f, mlp_kind::swiglu, false,
                              proj_std);
    if (s_.router == moe_router_kind::sigmoid_bias) balancer_.emplace(e);
    pending_.assign(static_cast<std::size_t>(e), 0);
  }

  /// x (..., C) -> (..., C). training: record the balancing losses and count the router's
  /// choices for balance(); noisy_topk draws its noise at (seed, offset) and advances offset by
  /// N E (the caller's dropout stream).
  template <class S>
  var<T, S> operator()(const var<T, S>& x, bool training, std::uint64_t seed,
                       std::uint64_t& offset) const {
    if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
      (void)training;
      (void)seed;
      (void)offset;
      fail(errc::unsupported,
           "tfm::nn::moe_ffn: mixture-of-experts layers run in float or double (the expert "
           "kernels); train this model with float parameters.");
      return x;
    } else {
      return run(x, training, seed, offset);
    }
  }
  /// Evaluation (no noise, no balancing losses), or training with the noise stream at 0.
  template <class S>
  var<T, S> operator()(const var<T, S>& x, bool training = false) const {
    std::uint64_t offset = 0;
    return (*this)(x, training, 0, offset);
  }

 private:
  template <class S>
  var<T, S> run(const var<T, S>& x, bool training, std::uint64_t seed,
                std::uint64_t& offset) const {
    const index_t Cn = x.extent(S::rank - 1), N = x.size() / (Cn > 0 ? Cn : 1);
    auto xf = reshape(x, shape<dyn, C>::from_extents({N, Cn}));
    auto logits = router(xf);  // (N, E)
    if (s_.router == moe_router_kind::noisy_topk && training) {
      moe_noise nz;
      nz.seed = seed;
      nz.offset = offset;
      logits = moe_noisy_logits(logits, noise(xf), nz);
      offset += static_cast<std::uint64_t>(logits.size());
    }
    const auto r = moe_route_tokens(logits, moe_options_of(s_, bias()));
    auto y = moe_experts(xf, r.route, w_gate, w_up, w_down);
    if (s_.n_shared_expert > 0) y = y + shared(xf);
    last_ = r.stats;
    aux_ = {};
    if (training) {
      for (std::size_t e = 0; e < pending_.size(); ++e) pending_[e] += r.stats.selected[e];
      if (s_.aux_loss > 0) aux_ = moe_aux_loss(logits, r.stats, s_.aux_loss);
      if (s_.z_loss > 0) {
        auto z = moe_z_loss(logits, s_.z_loss);
        aux_ = aux_.defined() ? aux_ + z : z;
      }
    }
    return var<T, S>(reshape(y, x.shape()).data());
  }

 public:
  void collect(parameter_list<T>& out) const {
    router.collect(out);
    if (s_.router == moe_router_kind::noisy_topk) noise.collect(out);
    add_parameter(out, w_gate, true);
    add_parameter(out, w_up, true);
    add_parameter(out, w_down, true);
    if (s_.n_shared_expert > 0) shared.collect(out);
  }

  const moe_settings& settings() const noexcept { return s_; }
  /// The routing statistics of the most recent forward.
  const moe_route_stats& last_stats() const noexcept { return last_; }
  /// The balancing losses (aux + z) of the most recent training forward; undefined when there
  /// were none (an evaluation forward, or both coefficients 0).
  const var<T, shape<>>& balancing_loss() const noexcept { return aux_; }
  /// sigmoid_bias: moves the selection bias by the choices counted since the last call (the
  /// training forwards of one optimizer step), then clears the count. Other routers: clears.
  void balance() {
    if (balancer_) {
      moe_route_stats st;
      st.n_expert = static_cast<index_t>(pending_.size());
      st.selected = pending_;
      balancer_->update(st);
    }
    std::fill(pending_.begin(), pending_.end(), 0);
  }
  /// The sigmoid_bias selection bias (E values; empty for the other routers).
  std::span<const double> bias() const noexcept {
    return balancer_ ? balancer_->bias() : std::span<const double>{};
  }
  void set_bias(std::span<const double> b) {
    if (!balancer_)
      fail(errc::value, "tfm::nn::moe_ffn::set_bias: only the sigmoid_bias router has a bias.");
    balancer_->set_bias(b);
  }

  linear<T, C, E> router;
  linear<T, C, E> noise;  // noisy_topk's noise scale map W_noise (empty for the other routers)
  var<T, shape<E, Fe, C>> w_gate, w_up;
  var<T, shape<E, C, Fe>> w_down;
  mlp<T, C, dyn> shared;  // empty without shared experts

 private:
  moe_settings s_;
  std::optional<moe_bias_balancer> balancer_;
  mutable std::vector<index_t> pending_;
  mutable moe_route_stats last_;
  mutable var<T, shape<>> aux_;
};

}  // namespace nn
TFM_END_NAMESPACE
