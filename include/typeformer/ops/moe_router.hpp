// typeformer/ops/moe_router.hpp
//
// WHAT THIS IS
//   Mixture-of-experts routing and load balancing: from router logits (N tokens, E experts) to a
//   moe_route (ops/moe_route.hpp: which experts each token goes to and the differentiable gate
//   of each slot), plus the balancing losses and statistics.
//
//   moe_route_tokens(logits (N,E), options)        -> moe_routing<T> {route, stats}
//     moe_router_kind::softmax_topk    the k largest logits, gates = softmax over those k
//                                      (Mixtral, Jiang et al. 2024, arXiv:2401.04088; also the
//                                      G(x) = Softmax(KeepTopK(H(x), k)) of Shazeer et al. 2017)
//     moe_router_kind::gshard_topk     the k largest of p = softmax over all E; gates = p of
//                                      those (GShard, Lepikhin et al. 2020, arXiv:2006.16668),
//                                      optionally renormalised to sum 1 (then equal to
//                                      softmax_topk: p_j / sum_sel p = softmax over the chosen)
//     moe_router_kind::switch_top1     gshard_topk with k = 1, not renormalised (Switch, Fedus et
//                                      al. 2021, arXiv:2101.03961); options.k is ignored
//     moe_router_kind::sigmoid_bias    s = sigmoid(logits); the k largest s + bias (a selection
//                                      bias only, not in the gate), gates = s of those,
//                                      optionally renormalised (DeepSeek-V3, arXiv:2412.19437
//                                      section 2.1.2); the bias comes from moe_bias_balancer
//     moe_router_kind::expert_choice   p = softmax over E; each expert takes its c tokens of
//                                      largest p, c = ceil(capacity_factor * N / E) (at most N);
//                                      gates = p (Zhou et al. 2022, arXiv:2202.09368)
//     moe_router_kind::noisy_topk      routed as softmax_topk; the caller has made the logits
//                                      noisy with moe_noisy_logits (nn/moe.hpp does, training)
//   moe_noisy_logits(clean, noise_logits, noise)   H = clean + n * softplus(noise_logits),
//                                      n ~ N(0, 1) (Shazeer et al. 2017, arXiv:1701.06538 eq. 4);
//                                      route H with softmax_topk for noisy top-k gating
//   moe_aux_loss(logits, stats, coef)  coef * E * sum_i f_i P_i (Switch eq. 4-6)
//   moe_z_loss(logits, coef)           coef * mean_n logsumexp(logits_n)^2 (ST-MoE, Zoph et al.
//                                      2022, arXiv:2202.08906 eq. 5)
//   moe_bias_balancer                  DeepSeek-V3's auxiliary-loss-free bias update
//
// CONTRACT
//   - logits: tfm::var<T, S>, T float or double, S of rank 2 (N, E) (static or dynamic
//     extents); every logit finite (tfm::value_error naming the token and expert otherwise).
//     Arithmetic runs in double; gates are rounded to T once.
//   - Selection is deterministic: scores are compared exactly, and of two equal scores the lower
//     expert id (token-choice) or the lower token index (expert-choice) wins. Token-choice slots
//     of a token are in selection order (largest score first); expert-choice slots of a token
//     are in ascending expert id, and route.k is the largest number of experts any token got,
//     shorter rows padded with expert -1 and gate 0 (route.k may be 0 when N = 0).
//   - Capacity (token-choice, options.dropless = false): every expert keeps at most
//     capacity = ceil(capacity_factor * N * k / E) slots, first come first served in token order
//     (token 0's slots, then token 1's, ...); a slot past its expert's capacity gets expert -1
//     and gate 0, and a token all of whose slots are dropped passes through the caller's
//     residual add unchanged (Switch section 2.2). Renormalisation sums over the chosen slots
//     before dropping, so a kept gate does not grow when its token's other slot is dropped.
//   - Gradients: gates are differentiable w.r.t. the logits through the softmax / sigmoid values
//     (node "moe_gates"); the selection (top-k, capacity, bias) is a constant, as in the papers.
//     Dropped and padding slots get no gradient.
//   - Errors (tfm::value_error, naming the value): k = 0 or k > E (token-choice), E = 0,
//     capacity_factor <= 0 or not finite where it is used, a non-finite bias or a bias given to
//     a kind other than sigmoid_bias, coefficient < 0 or not finite; tfm::shape_error when the
//     noise logits, the bias or the statistics do not match the logits' (N, E).
//   - Cost: O(N E log k) selection and O(N E) gates in plain loops, one thread, so results do
//     not depend on the thread count; small beside the expert FFNs (O(N k C F)).
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/ops/moe_kind.hpp"
#include "typeformer/ops/moe_route.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

// ---- options and results ------------------------------------------------------------------------

struct moe_router_options {
  moe_router_kind kind = moe_router_kind::softmax_topk;
  index_t k = 2;  ///< experts per token (token-choice kinds except switch_top1)
  /// gshard_topk, sigmoid_bias: gates / (sum of the chosen ones); ignored by the other kinds
  /// (softmax_topk is normalised already, switch_top1 and expert_choice never are).
  bool renormalize = false;
  bool dropless = true;  ///< token-choice: no capacity limit, no slot is dropped
  /// Token-choice with dropless = false: capacity = ceil(cf * N * k / E) slots per expert.
  /// expert_choice: each expert takes c = ceil(cf * N / E) tokens (Zhou et al.'s c; 2 means a
  /// token goes to 2 experts on average). Must be > 0 where used.
  double capacity_factor = 1.0;
  double gate_scale = 1.0;  ///< multiplies every gate (DeepSeek-V3's routed scaling factor)
  /// sigmoid_bias: the per-expert selection bias (E values, e.g. moe_bias_balancer::bias());
  /// empty means zeros. Other kinds must leave it empty.
  std::span<const double> bias = {};
};

/// What a routing did, for logs and for the balancing losses and updates.
struct moe_route_stats {
  index_t tokens = 0, k = 0, n_expert = 0;
  std::vector<index_t> selected;  ///< per expert: slots the router chose, before the capacity rule
  std::vector<index_t> load;      ///< per expert: slots kept (after the capacity rule)
  index_t capacity = 0;           ///< slots per expert (0: dropless); expert_choice: c
  /// Token-choice: slots dropped by the capacity rule. expert_choice: tokens no expert chose.
  index_t dropped = 0;
  double drop_rate = 0;  ///< dropped / (N * k) (token-choice), dropped / N (expert_choice)
  /// Mean over tokens of the entropy (nats) of the router distribution: softmax(logits), or
  /// s / sum(s) for sigmoid_bias. log E at uniform routing, 0 when every token is certain.
  double entropy = 0;
  /// max_i load_i / mean_i load_i (1 = perfectly balanced; 0 when nothing is routed).
  double max_over_mean() const {
    if (load.empty()) return 0;
    const double total = static_cast<double>(std::accumulate(load.begin(), load.end(), index_t{0}));
    if (total <= 0) return 0;
    return static_cast<double>(*std::max_element(load.begin(), load.end())) *
           static_cast<double>(load.size()) / total;
  }
};

template <class T>
struct moe_routing {
  moe_route<T> route;
  moe_route_stats stats;
};

/// Noisy top-k gating noise (Shazeer et al. 2017): n_{t,e} = normal_double(seed, offset + t*E + e)
/// from the counter-based generator (core/random.hpp), so a step's noise is reproducible from
/// (seed, offset). No noise at all when training is false (inference).
struct moe_noise {
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  bool training = true;
};

// ---- internals ----------------------------------------------------------------------------------

namespace detail {

template <class T>
void moe_check_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm MoE router: the logits must be float or double vars");
}

inline void moe_check_finite_positive(const char* who, const char* what, double v) {
  if (!(v > 0) || !std::isfinite(v))
    fail(errc::value, who, ": ", what, " must be finite and > 0, got ", v, ".");
}

/// The (N, E) of a rank-2 record of float or double, with every value finite.
template <class T>
std::pair<index_t, index_t> moe_logits_dims(const char* who, const var_ptr<T>& d) {
  moe_check_type<T>();
  if (!d) fail(errc::value, who, ": the logits var is empty.");
  const index_t N = d->extents[0], E = d->extents[1];
  if (E == 0) fail(errc::value, who, ": the logits have E = 0 experts (shape (", N, ", 0)).");
  const T* l = d->value.data();
  for (index_t i = 0; i < N * E; ++i)
    if (!std::isfinite(static_cast<double>(l[i])))
      fail(errc::value, who, ": the logit of token ", i / E, " for expert ", i % E, " is ",
           static_cast<double>(l[i]), " (logits must be finite).");
  return {N, E};
}

/// The checks a balancing loss starts with: its coefficient, then its logits (moe_logits_dims,
/// whose (N, E) it returns).
template <class T>
std::pair<index_t, index_t> moe_loss_dims(const char* who, const var_ptr<T>& d, double coef) {
  if (!(coef >= 0) || !std::isfinite(coef))
    fail(errc::value, who, ": the coefficient must be finite and >= 0, got ", coef, ".");
  return moe_logits_dims(who, d);
}

/// p[e] = exp(row[e] - m) in double, m the row's maximum; returns {m, sum_e p[e]}.
template <class T>
std::pair<double, double> moe_exp_row(const T* row, index_t E, double* p) {
  double m = static_cast<double>(row[0]);
  for (index_t e = 1; e < E; ++e) m = std::max(m, static_cast<double>(row[e]));
  double z = 0;
  for (index_t e = 0; e < E; ++e) z += (p[e] = std::exp(static_cast<double>(row[e]) - m));
  return {m, z};
}

/// p = softmax(row) in double.
template <class T>
void moe_softmax_row(const T* row, index_t E, double* p) {
  const double z = moe_exp_row(row, E, p).second;
  for (index_t e = 0; e < E; ++e) p[e] /= z;
}

inline double moe_sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
}

/// The router distribution of one token: softmax, or (sigmoid) s / sum(s).
template <class T>
void moe_probs_row(const T* row, index_t E, bool sigmoid, double* p) {
  if (!sigmoid) return moe_softmax_row(row, E, p);
  double z = 0;
  for (index_t e = 0; e < E; ++e) z += (p[e] = moe_sigmoid(static_cast<double>(row[e])));
  for (index_t e = 0; e < E; ++e) p[e] /= z;
}

inline double moe_entropy(const double* p, index_t E) {
  double h = 0;
  for (index_t e = 0; e < E; ++e)
    if (p[e] > 0) h -= p[e] * std::log(p[e]);
  return h;
}

/// The k indices of the largest scores, largest first; equal scores: lower index first.
inline void moe_topk(const double* score, index_t n, index_t k, std::int32_t* out,
                     std::vector<std::int32_t>& scratch) {
  scratch.resize(static_cast<std::size_t>(n));
  std::iota(scratch.begin(), scratch.end(), 0);
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(),
                    [score](std::int32_t a, std::int32_t b) {
                      return score[a] > score[b] || (score[a] == score[b] && a < b);
                    });
  std::copy(scratch.begin(), scratch.begin() + k, out);
}

/// How moe_gates maps the chosen logits to gates.
enum class moe_gate_fn {
  softmax_chosen,  ///< softmax over the chosen slots' logits
  softmax_all,     ///< p = softmax over all E, gate = p (renormalised over chosen if asked)
  sigmoid          ///< s = sigmoid(logit), gate = s (renormalised over chosen if asked)
};

/// The gates of the slots `choice` (N*K ids, -1 = padding) of which `keep` (same layout, -1 =
/// dropped or padding) are kept. Records node "moe_gates".
template <class T>
var<T, shape<dyn, dyn>> moe_gates(const var_ptr<T>& logits, index_t K,
                                  std::shared_ptr<const std::vector<std::int32_t>> choice,
                                  std::shared_ptr<const std::vector<std::int32_t>> keep,
                                  moe_gate_fn fn, bool renorm, double scale) {
  const index_t N = logits->extents[0], E = logits->extents[1];
  auto out = make_var_data<T>({N, K});
  // q(row, slot): the chosen slot's value before renormalisation; z: the renormaliser.
  auto slot_values = [=](const T* row, const std::int32_t* ch, double* pv, double* qv) {
    if (fn == moe_gate_fn::softmax_all) moe_softmax_row(row, E, pv);
    double m = -INFINITY;
    if (fn == moe_gate_fn::softmax_chosen)
      for (index_t j = 0; j < K; ++j)
        if (ch[j] >= 0) m = std::max(m, static_cast<double>(row[ch[j]]));
    double z = 0;
    for (index_t j = 0; j < K; ++j) {
      if (ch[j] < 0) {
        qv[j] = 0;
        continue;
      }
      const double l = static_cast<double>(row[ch[j]]);
      qv[j] = fn == moe_gate_fn::softmax_chosen ? std::exp(l - m)
              : fn == moe_gate_fn::softmax_all  ? pv[ch[j]]
                                                : moe_sigmoid(l);
      z += qv[j];
    }
    return (fn == moe_gate_fn::softmax_chosen || renorm) ? z : 1.0;
  };
  std::vector<double> pf(static_cast<std::size_t>(E)), qf(static_cast<std::size_t>(K));
  for (index_t n = 0; n < N; ++n) {
    const std::int32_t* ch = choice->data() + n * K;
    const std::int32_t* kp = keep->data() + n * K;
    const double z = slot_values(logits->value.data() + n * E, ch, pf.data(), qf.data());
    for (index_t j = 0; j < K; ++j)
      out->value.data()[n * K + j] = kp[j] >= 0 ? static_cast<T>(scale * qf[j] / z) : T(0);
  }
  record(out, "moe_gates", {logits}, [=, o = out.get()] {
    using G = grad_t<T>;
    const G* go = o->grad_data();
    G* gl = logits->grad_data();
    std::vector<double> p(static_cast<std::size_t>(E)), q(static_cast<std::size_t>(K)),
        dq(static_cast<std::size_t>(E));
    for (index_t n = 0; n < N; ++n) {
      const T* row = logits->value.data() + n * E;
      const std::int32_t* ch = choice->data() + n * K;
      const std::int32_t* kp = keep->data() + n * K;
      const double z = slot_values(row, ch, p.data(), q.data());
      // dL/dq_j for the chosen slots (through the gate itself and through the renormaliser z).
      double dot = 0;  // sum_kept dg_i q_i / z
      for (index_t j = 0; j < K; ++j)
        if (kp[j] >= 0) dot += scale * static_cast<double>(go[n * K + j]) * q[j] / z;
      const bool normalised = fn == moe_gate_fn::softmax_chosen || renorm;
      std::fill(dq.begin(), dq.end(), 0.0);
      for (index_t j = 0; j < K; ++j) {
        if (ch[j] < 0) continue;
        const double dg = kp[j] >= 0 ? scale * static_cast<double>(go[n * K + j]) : 0.0;
        dq[ch[j]] = normalised ? (dg - dot) / z : dg;
      }
      G* g = gl + n * E;
      if (fn == moe_gate_fn::softmax_chosen) {  // dq/dl = q (q = exp(l - m))
        for (index_t j = 0; j < K; ++j)
          if (ch[j] >= 0) g[ch[j]] += static_cast<G>(dq[ch[j]] * q[j]);
      } else if (fn == moe_gate_fn::softmax_all) {  // dl = p (dq - <dq, p>)
        double s = 0;
        for (index_t e = 0; e < E; ++e) s += dq[e] * p[e];
        for (index_t e = 0; e < E; ++e) g[e] += static_cast<G>(p[e] * (dq[e] - s));
      } else {  // dl = dq s (1 - s)
        for (index_t j = 0; j < K; ++j)
          if (ch[j] >= 0) g[ch[j]] += static_cast<G>(dq[ch[j]] * q[j] * (1.0 - q[j]));
      }
    }
  });
  return var<T, shape<dyn, dyn>>(std::move(out));
}

/// Token-choice selection: choice (N*k) by score, then the capacity rule into keep.
template <class T>
void moe_select_tokens(const var_ptr<T>& logits, index_t k, const moe_router_options& opt,
                       bool sigmoid, std::vector<std::int32_t>& choice,
                       std::vector<std::int32_t>& keep, moe_route_stats& st) {
  const index_t N = logits->extents[0], E = logits->extents[1];
  choice.assign(static_cast<std::size_t>(N * k), -1);
  std::vector<double> score(static_cast<std::size_t>(E));
  std::vector<std::int32_t> scratch;
  for (index_t n = 0; n < N; ++n) {
    const T* row = logits->value.data() + n * E;
    for (index_t e = 0; e < E; ++e) {
      const double l = static_cast<double>(row[e]);
      score[e] = sigmoid ? moe_sigmoid(l) + (opt.bias.empty() ? 0.0 : opt.bias[e]) : l;
    }
    moe_topk(score.data(), E, k, choice.data() + n * k, scratch);
    for (index_t j = 0; j < k; ++j) ++st.selected[choice[n * k + j]];
  }
  keep = choice;
  if (!opt.dropless) {
    const double c = std::ceil(opt.capacity_factor * static_cast<double>(N * k) / E);
    st.capacity = static_cast<index_t>(std::min(c, static_cast<double>(N * k)));
    std::vector<index_t> used(static_cast<std::size_t>(E), 0);
    for (auto& e : keep)
      if (used[e] < st.capacity)
        ++used[e];
      else
        e = -1, ++st.dropped;
  }
  for (auto e : keep)
    if (e >= 0) ++st.load[e];
  st.drop_rate = N * k > 0 ? static_cast<double>(st.dropped) / static_cast<double>(N * k) : 0.0;
}

/// Expert-choice selection (Zhou et al. 2022): every expert takes its c tokens of largest p.
template <class T>
index_t moe_select_experts(const var_ptr<T>& logits, double cf, std::vector<std::int32_t>& choice,
                           moe_route_stats& st) {
  const index_t N = logits->extents[0], E = logits->extents[1];
  const double cd = std::ceil(cf * static_cast<double>(N) / static_cast<double>(E));
  const index_t c = static_cast<index_t>(std::min(cd, static_cast<double>(N)));
  st.capacity = c;
  std::vector<double> p(static_cast<std::size_t>(N * E)), col(static_cast<std::size_t>(N));
  for (index_t n = 0; n < N; ++n) moe_softmax_row(logits->value.data() + n * E, E, &p[n * E]);
  std::vector<std::vector<std::int32_t>> picked(static_cast<std::size_t>(N));  // per token
  std::vector<std::int32_t> top(static_cast<std::size_t>(c)), scratch;
  for (index_t e = 0; e < E; ++e) {  // ascending e: each token's list comes out sorted
    for (index_t n = 0; n < N; ++n) col[n] = p[n * E + e];
    moe_topk(col.data(), N, c, top.data(), scratch);
    for (auto n : top) picked[n].push_back(static_cast<std::int32_t>(e));
    st.selected[e] = st.load[e] = c;
  }
  index_t K = 0;
  for (const auto& v : picked) {
    K = std::max(K, static_cast<index_t>(v.size()));
    st.dropped += v.empty() ? 1 : 0;
  }
  choice.assign(static_cast<std::size_t>(N * K), -1);
  for (index_t n = 0; n < N; ++n) std::copy(picked[n].begin(), picked[n].end(), &choice[n * K]);
  st.drop_rate = N > 0 ? static_cast<double>(st.dropped) / static_cast<double>(N) : 0.0;
  return K;
}

}  // namespace detail

// ---- routing ------------------------------------------------------------------------------------

/// Routes N tokens to E experts from their router logits (N, E); see the file comment.
template <class T, class S>
moe_routing<T> moe_route_tokens(const var<T, S>& logits, const moe_router_options& opt = {}) {
  static_assert(S::rank == 2, "tfm::moe_route_tokens: the router logits must be (N, E)");
  constexpr const char* who = "tfm::moe_route_tokens";
  const auto& d = logits.data();
  // Plain variables, not a structured binding: the vjp lambdas capture them (clang 14 cannot
  // capture bindings).
  const std::pair<index_t, index_t> ne = detail::moe_logits_dims(who, d);
  const index_t N = ne.first, E = ne.second;
  using kind = moe_router_kind;
  const bool ec = opt.kind == kind::expert_choice, sig = opt.kind == kind::sigmoid_bias;
  const index_t k = opt.kind == kind::switch_top1 ? 1 : opt.k;
  if (!ec && (k <= 0 || k > E))
    fail(errc::value, who, ": k = ", k, " experts per token is out of range for E = ", E,
         " experts (need 1 <= k <= E).");
  if (ec || !opt.dropless)
    detail::moe_check_finite_positive(who, "capacity_factor", opt.capacity_factor);
  if (!std::isfinite(opt.gate_scale))
    fail(errc::value, who, ": gate_scale must be finite, got ", opt.gate_scale, ".");
  if (!opt.bias.empty()) {
    if (!sig)
      fail(errc::value, who, ": a selection bias is only used by moe_router_kind::sigmoid_bias.");
    if (static_cast<index_t>(opt.bias.size()) != E)
      fail(errc::shape, who, ": the selection bias has ", opt.bias.size(),
           " entries but the logits have E = ", E, " experts.");
    for (std::size_t e = 0; e < opt.bias.size(); ++e)
      if (!std::isfinite(opt.bias[e]))
        fail(errc::value, who, ": the selection bias of expert ", e, " is ", opt.bias[e], ".");
  }
  moe_routing<T> r;
  auto& st = r.stats;
  st.tokens = N;
  st.n_expert = E;
  st.selected.assign(static_cast<std::size_t>(E), 0);
  st.load.assign(static_cast<std::size_t>(E), 0);
  auto choice = std::make_shared<std::vector<std::int32_t>>();
  auto keep = std::make_shared<std::vector<std::int32_t>>();
  index_t K = k;
  if (ec) {
    K = detail::moe_select_experts(d, opt.capacity_factor, *choice, st);
    *keep = *choice;
  } else {
    detail::moe_select_tokens(d, k, opt, sig, *choice, *keep, st);
  }
  st.k = K;
  {
    std::vector<double> p(static_cast<std::size_t>(E));
    for (index_t n = 0; n < N; ++n) {
      detail::moe_probs_row(d->value.data() + n * E, E, sig, p.data());
      st.entropy += detail::moe_entropy(p.data(), E);
    }
    st.entropy = N > 0 ? st.entropy / static_cast<double>(N) : 0.0;
  }
  const auto fn = opt.kind == kind::softmax_topk || opt.kind == kind::noisy_topk
                      ? detail::moe_gate_fn::softmax_chosen
                  : sig ? detail::moe_gate_fn::sigmoid
                        : detail::moe_gate_fn::softmax_all;
  const bool renorm = opt.renormalize && (opt.kind == kind::gshard_topk || sig);
  r.route.tokens = N;
  r.route.k = K;
  r.route.n_expert = E;
  r.route.expert = *keep;
  r.route.gates = detail::moe_gates(d, K, choice, keep, fn, renorm, opt.gate_scale);
  return r;
}

// ---- noisy top-k
// ---------------------------------------------------------------------------------

/// H = clean + n * softplus(noise_logits) (Shazeer et al. 2017, arXiv:1701.06538 eq. 4, where
/// noise_logits = x W_noise is the trainable noise scale), n from `noise` (see moe_noise); with
/// noise.training = false, H = clean (the same var). Records node "moe_noisy_logits" with
/// gradients to both inputs. Route H with moe_router_kind::softmax_topk.
template <class T, class S, class S2>
var<T, S> moe_noisy_logits(const var<T, S>& clean, const var<T, S2>& noise_logits,
                           const moe_noise& noise) {
  detail::moe_check_type<T>();
  static_assert(S::rank == 2 && S2::rank == 2,
                "tfm::moe_noisy_logits: the clean and noise logits must be (N, E)");
  constexpr const char* who = "tfm::moe_noisy_logits";
  const auto &c = clean.data(), &w = noise_logits.data();
  if (!c || !w) fail(errc::value, who, ": an input var is empty.");
  if (c->extents != w->extents)
    fail(errc::shape, who, ": the noise logits are (", w->extents[0], ", ", w->extents[1],
         ") but the clean logits are (", c->extents[0], ", ", c->extents[1], ").");
  if (!noise.training) return clean;
  const index_t n = c->size();
  auto out = detail::make_var_data<T>(c->extents);
  auto eps = std::make_shared<std::vector<double>>(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(w->value.data()[i]);
    const double sp = x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
    (*eps)[i] = normal_double(noise.seed, noise.offset + static_cast<std::uint64_t>(i));
    out->value.data()[i] = static_cast<T>(static_cast<double>(c->value.data()[i]) + (*eps)[i] * sp);
  }
  detail::record(out, "moe_noisy_logits", {c, w}, [c, w, eps, n, o = out.get()] {
    using G = grad_t<T>;
    const G* go = o->grad_data();
    if (c->requires_grad) {
      G* g = c->grad_data();
      for (index_t i = 0; i < n; ++i) g[i] += go[i];
    }
    if (w->requires_grad) {
      G* g = w->grad_data();
      for (index_t i = 0; i < n; ++i)
        g[i] += static_cast<G>(static_cast<double>(go[i]) * (*eps)[i] *
                               detail::moe_sigmoid(static_cast<double>(w->value.data()[i])));
    }
  });
  return var<T, S>(std::move(out));
}

// ---- balancing losses
// ----------------------------------------------------------------------------

/// The Switch/GShard load-balancing loss coef * E * sum_i f_i P_i (Fedus et al. 2021,
/// arXiv:2101.03961 eq. 4-6; Lepikhin et al. 2020): f_i = stats.selected[i] / (N k), the
/// fraction of the router's choices (before the capacity rule) that went to expert i, a
/// constant; P_i = mean over tokens of softmax(logits)_i, differentiable. At uniform routing
/// the loss is coef (for k = 1 exactly Switch's; for k > 1 it is HF Mixtral's
/// load_balancing_loss_func divided by k, which counts f over tokens, not choices). `stats` must
/// come from routing these logits (same N and E). Records node "moe_aux_loss".
template <class T, class S>
var<T, shape<>> moe_aux_loss(const var<T, S>& logits, const moe_route_stats& stats, double coef) {
  static_assert(S::rank == 2, "tfm::moe_aux_loss: the router logits must be (N, E)");
  constexpr const char* who = "tfm::moe_aux_loss";
  const auto& d = logits.data();
  // Plain variables, not a structured binding: the vjp lambdas capture them (clang 14 cannot
  // capture bindings).
  const std::pair<index_t, index_t> ne = detail::moe_loss_dims(who, d, coef);
  const index_t N = ne.first, E = ne.second;
  if (stats.tokens != N || stats.n_expert != E || static_cast<index_t>(stats.selected.size()) != E)
    fail(errc::shape, who, ": the logits are (N, E) = (", N, ", ", E,
         ") but the routing statistics are for (", stats.tokens, ", ", stats.n_expert, ").");
  if (N == 0)
    fail(errc::value, who, ": no tokens (N = 0): the mean router probability has no value.");
  auto f = std::make_shared<std::vector<double>>(static_cast<std::size_t>(E));
  const double total = static_cast<double>(
      std::accumulate(stats.selected.begin(), stats.selected.end(), index_t{0}));
  for (index_t e = 0; e < E; ++e)
    (*f)[e] = total > 0 ? static_cast<double>(stats.selected[e]) / total : 0.0;
  std::vector<double> p(static_cast<std::size_t>(E)), P(static_cast<std::size_t>(E), 0.0);
  for (index_t n = 0; n < N; ++n) {
    detail::moe_softmax_row(d->value.data() + n * E, E, p.data());
    for (index_t e = 0; e < E; ++e) P[e] += p[e];
  }
  double v = 0;
  for (index_t e = 0; e < E; ++e) v += (*f)[e] * P[e] / static_cast<double>(N);
  auto out = detail::make_var_data<T>({});
  out->value.data()[0] = static_cast<T>(coef * static_cast<double>(E) * v);
  detail::record(out, "moe_aux_loss", {d}, [d, f, N, E, coef, o = out.get()] {
    using G = grad_t<T>;
    const double g0 = static_cast<double>(o->grad_data()[0]) * coef * static_cast<double>(E) /
                      static_cast<double>(N);
    G* g = d->grad_data();
    std::vector<double> pb(static_cast<std::size_t>(E));
    for (index_t n = 0; n < N; ++n) {  // d/dl_e sum_i f_i p_i = p_e (f_e - <f, p>)
      detail::moe_softmax_row(d->value.data() + n * E, E, pb.data());
      double fp = 0;
      for (index_t e = 0; e < E; ++e) fp += (*f)[e] * pb[e];
      for (index_t e = 0; e < E; ++e) g[n * E + e] += static_cast<G>(g0 * pb[e] * ((*f)[e] - fp));
    }
  });
  return var<T, shape<>>(std::move(out));
}

/// The router z-loss coef * (1/N) sum_n logsumexp(logits_n)^2 (ST-MoE, Zoph et al. 2022,
/// arXiv:2202.08906 eq. 5; the paper's coefficient is 1e-3). Records node "moe_z_loss".
template <class T, class S>
var<T, shape<>> moe_z_loss(const var<T, S>& logits, double coef) {
  static_assert(S::rank == 2, "tfm::moe_z_loss: the router logits must be (N, E)");
  constexpr const char* who = "tfm::moe_z_loss";
  const auto& d = logits.data();
  // Plain variables, not a structured binding: the vjp lambdas capture them (clang 14 cannot
  // capture bindings).
  const std::pair<index_t, index_t> ne = detail::moe_loss_dims(who, d, coef);
  const index_t N = ne.first, E = ne.second;
  if (N == 0) fail(errc::value, who, ": no tokens (N = 0): the mean has no value.");
  auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(N));
  std::vector<double> ex(static_cast<std::size_t>(E));
  double v = 0;
  for (index_t n = 0; n < N; ++n) {
    const std::pair<double, double> mz = detail::moe_exp_row(d->value.data() + n * E, E, ex.data());
    (*lse)[n] = mz.first + std::log(mz.second);
    v += (*lse)[n] * (*lse)[n];
  }
  auto out = detail::make_var_data<T>({});
  out->value.data()[0] = static_cast<T>(coef * v / static_cast<double>(N));
  detail::record(out, "moe_z_loss", {d}, [d, lse, N, E, coef, o = out.get()] {
    using G = grad_t<T>;
    const double g0 = static_cast<double>(o->grad_data()[0]) * coef * 2.0 / static_cast<double>(N);
    G* g = d->grad_data();
    for (index_t n = 0; n < N; ++n)  // d lse / d l_e = softmax_e
      for (index_t e = 0; e < E; ++e)
        g[n * E + e] += static_cast<G>(
            g0 * (*lse)[n] * std::exp(static_cast<double>(d->value.data()[n * E + e]) - (*lse)[n]));
  });
  return var<T, shape<>>(std::move(out));
}

// ---- auxiliary-loss-free balancing
// ---------------------------------------------------------------

/// DeepSeek-V3's auxiliary-loss-free load balancing (arXiv:2412.19437 section 2.1.2): a
/// per-expert bias b added to the sigmoid scores for the top-k selection only (pass bias() as
/// moe_router_options::bias with moe_router_kind::sigmoid_bias); after each training step,
/// update(stats) moves b_i by gamma * sign(mean load - load_i), where load_i counts the slots
/// the router chose for expert i (stats.selected): overloaded experts become less attractive,
/// underloaded ones more. The bias gets no gradient; save it with the model's state.
class moe_bias_balancer {
 public:
  explicit moe_bias_balancer(index_t n_expert, double gamma = 1e-3)
      : bias_(static_cast<std::size_t>(n_expert >= 0 ? n_expert : 0), 0.0), gamma_(gamma) {
    if (n_expert <= 0)
      fail(errc::value, "tfm::moe_bias_balancer: n_expert must be > 0, got ", n_expert, ".");
    detail::moe_check_finite_positive("tfm::moe_bias_balancer", "gamma (the bias update speed)",
                                      gamma);
  }
  /// The current bias (E values).
  std::span<const double> bias() const noexcept { return bias_; }
  double gamma() const noexcept { return gamma_; }
  index_t n_expert() const noexcept { return static_cast<index_t>(bias_.size()); }
  /// Restores a saved bias (E finite values).
  void set_bias(std::span<const double> b) {
    if (b.size() != bias_.size())
      fail(errc::shape, "tfm::moe_bias_balancer::set_bias: got ", b.size(), " values for ",
           bias_.size(), " experts.");
    for (std::size_t e = 0; e < b.size(); ++e)
      if (!std::isfinite(b[e]))
        fail(errc::value, "tfm::moe_bias_balancer::set_bias: the bias of expert ", e, " is ", b[e],
             ".");
    std::copy(b.begin(), b.end(), bias_.begin());
  }
  /// One update from a step's routing statistics (summed over the step's micro-batches by the
  /// caller if there are several; pass them one at a time otherwise).
  void update(const moe_route_stats& st) {
    if (static_cast<index_t>(st.selected.size()) != n_expert())
      fail(errc::shape, "tfm::moe_bias_balancer::update: the statistics are for ",
           st.selected.size(), " experts, the balancer for ", n_expert(), ".");
    const double mean =
        static_cast<double>(std::accumulate(st.selected.begin(), st.selected.end(), index_t{0})) /
        static_cast<double>(bias_.size());
    for (std::size_t e = 0; e < bias_.size(); ++e) {
      const double d = mean - static_cast<double>(st.selected[e]);
      bias_[e] += gamma_ * static_cast<double>((d > 0) - (d < 0));
    }
  }

 private:
  std::vector<double> bias_;
  double gamma_;
};

TFM_END_NAMESPACE
