// typeformer/ops/alignment_loss.hpp
//
// WHAT THIS IS
//   The losses of preference and RL alignment as differentiable ops, forward and vjp side by
//   side. Each reduces to a scalar (or, for sequence_logprob, one value per sequence), records
//   one node, and returns the figures a trainer logs as plain numbers beside the loss var.
//
//   sequence_logprob(nll (B,T), mask (B,T), red)     -> (B)   log pi(y|x) of each response
//   dpo_loss(pi_c, pi_r, ref_c, ref_r (B), opt)      -> dpo_result      Rafailov 2023 / IPO / hinge
//   bradley_terry_loss(r_c, r_r (B) [, margin])      -> bradley_terry_result   Ouyang 2022 eq. 1
//   ppo_policy_loss(new, old, A, mask (B,T), opt)    -> ppo_policy_result      Schulman 2017
//   ppo_value_loss(v, v_old, R, mask (B,T), clip)    -> ppo_value_result
//   grpo_loss(new, old, ref, A, mask, opt)           -> grpo_result            Shao 2024 eq. 3-4
//
// CONTRACT
//   - The differentiable inputs are tfm::var<T, S> with T float or double; the values every
//     loss treats as constants (masks, old and reference log-probs of PPO/GRPO, advantages,
//     returns) are vars (their values are read, no gradient flows to them) or tensors / views of
//     any arithmetic element type. DPO and Bradley-Terry send gradients to every input var that
//     requires them (ref_* normally do not).
//   - Arithmetic runs in double whatever T: log-sigmoid as min(x, 0) - log1p(exp(-|x|)), so
//     inputs at +-100 (and far beyond) give finite losses and gradients; the result is rounded to
//     T once. The vjp multiplies the output gradient by per-element coefficients saved in the
//     forward (B or B*T doubles).
//   - Shapes: extents must match exactly (tfm::shape_error naming both operands); masks hold 0
//     or 1 (tfm::value_error naming the position otherwise). A mask with no 1 at all (no
//     response token in the batch) is a tfm::value_error for every token-level loss: a mean over
//     no tokens has no value. Empty batches (B = 0) are errors too.
//   - Log-probs are natural logs of the policy's probability of the sampled token; (B,T) rows
//     are sequences, masked positions (prompt, padding) are 0 in the mask.
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/shape.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE

// ---- options and results ------------------------------------------------------------------------

/// How sequence_logprob folds a response's token log-probs: their sum, log pi(y|x), which is what
/// the DPO and IPO papers write; or their mean over the response tokens, which TRL's DPOTrainer
/// feeds its IPO loss (it divides the summed log-probs by the completion length for
/// loss_type "ipo"). The choice is the caller's: both variants are the same op.
enum class seq_reduction { sum, mean };

/// The DPO family: the loss as a function of h = (pi_c - ref_c) - (pi_r - ref_r).
enum class dpo_kind {
  sigmoid,  ///< -(1-e) log s(beta h) - e log s(-beta h) (Rafailov 2023 eq. 7; e: cDPO)
  ipo,      ///< (h - 1/(2 beta))^2 (Azar et al. 2023, arXiv:2310.12036 eq. 17; beta is tau)
  hinge     ///< max(0, 1 - beta h) (SLiC-HF, Zhao et al. 2023, arXiv:2305.10425; TRL "hinge")
};

struct dpo_options {
  double beta = 0.1;  ///< the KL strength beta (> 0)
  dpo_kind kind = dpo_kind::sigmoid;
  /// Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): the probability
  /// e in [0, 0.5] that a label is flipped. Only for dpo_kind::sigmoid.
  double label_smoothing = 0.0;
};

/// DPO's loss and the implicit rewards r = beta (log pi - log ref) it logs (means over pairs).
template <class T>
struct dpo_result {
  var<T, shape<>> loss;        ///< mean over pairs
  double chosen_reward = 0;    ///< mean beta (pi_c - ref_c)
  double rejected_reward = 0;  ///< mean beta (pi_r - ref_r)
  double reward_margin = 0;    ///< mean of chosen - rejected rewards (= mean beta h)
  double reward_accuracy = 0;  ///< fraction of pairs whose chosen reward is strictly larger
};

template <class T>
struct bradley_terry_result {
  var<T, shape<>> loss;  ///< -mean log s(r_c - r_r - margin)
  double accuracy = 0;   ///< fraction of pairs with r_c > r_r strictly (ties count as wrong)
  double mean_gap = 0;   ///< mean r_c - r_r
};

struct ppo_options {
  double clip_eps = 0.2;  ///< the ratio is clipped to [1 - eps, 1 + eps] (> 0)
};

template <class T>
struct ppo_policy_result {
  var<T, shape<>> loss;      ///< masked mean of max(-A r, -A clip(r))
  double clip_fraction = 0;  ///< token fraction where the clipped term is the (strict) max
  double approx_kl = 0;      ///< 0.5 masked mean (new - old)^2 (TRL PPOTrainer's approxkl)
  double approx_kl_k3 = 0;   ///< masked mean (r - 1) - log r (Schulman's k3 of KL(old||new))
  double ratio_mean = 0;     ///< masked mean r
};

template <class T>
struct ppo_value_result {
  var<T, shape<>> loss;      ///< 0.5 masked mean max((v - R)^2, (v_clipped - R)^2)
  double clip_fraction = 0;  ///< token fraction where the clipped error is the (strict) max
};

/// GRPO's normalisation of the per-token losses (the quantity is the same, the weights differ).
enum class grpo_norm {
  sequence,  ///< mean over sequences of each sequence's token mean (Shao 2024 eq. 3)
  token,     ///< sum over all tokens / number of tokens (DAPO, Yu et al. 2025, arXiv:2503.14476)
  fixed      ///< sum over all tokens / (B * L), L a fixed budget (Dr. GRPO, arXiv:2503.20783)
};

struct grpo_options {
  double clip_eps = 0.2;       ///< lower clip: r >= 1 - clip_eps
  double clip_eps_high = 0.0;  ///< upper clip r <= 1 + clip_eps_high; 0: clip_eps (DAPO's
                               ///< "clip-higher" sets it larger)
  double beta = 0.04;          ///< weight of the k3 KL to the reference (0: no KL term)
  grpo_norm norm = grpo_norm::sequence;
  index_t fixed_length = 0;  ///< grpo_norm::fixed: L (0: the T of the inputs)
};

template <class T>
struct grpo_result {
  var<T, shape<>> loss;
  double clip_fraction = 0;  ///< token fraction where the clipped term is the (strict) max
  double kl = 0;             ///< masked token mean of the k3 estimate of KL(pi || ref)
};

/// What the losses accept for a value they do not differentiate: a tfm::var (its value is read)
/// or a tfm::tensor / tensor_view of any arithmetic element type.
template <class X>
concept loss_operand = dense_type<X> || var_type<X>;

// ---- internals ----------------------------------------------------------------------------------

namespace detail {

/// log(sigmoid(x)) without overflow for any finite x.
inline double al_log_sigmoid(double x) noexcept {
  return std::min(x, 0.0) - std::log1p(std::exp(-std::fabs(x)));
}
/// sigmoid(x) without overflow.
inline double al_sigmoid(double x) noexcept {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

/// An operand read as doubles in row-major order, with its extents.
struct al_values {
  std::vector<double> v;
  std::vector<index_t> extents;
};

template <class T>
void al_check_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tfm alignment losses: the differentiable inputs must be float or double vars");
}

/// The values of a var, or of a tensor / view of rank 1 or 2 (any arithmetic element type).
template <class X>
al_values al_read(const X& x) {
  al_values r;
  if constexpr (var_type<X>) {
    const auto& d = x.data();
    if (!d) fail(errc::value, "tfm alignment losses: an operand var is empty.");
    r.extents = d->extents;
    r.v.resize(static_cast<std::size_t>(d->size()));
    for (index_t i = 0; i < d->size(); ++i)
      r.v[static_cast<std::size_t>(i)] =
          static_cast<double>(static_cast<compute_t<typename X::value_type>>(d->value.data()[i]));
  } else {
    static_assert(dense_type<X>,
                  "tfm alignment losses: a constant operand must be a tfm::var, "
                  "a tfm::tensor or a tfm::tensor_view");
    const auto v = x.view();
    using V = std::remove_cv_t<typename decltype(v)::value_type>;
    constexpr std::size_t R = decltype(v)::shape_type::rank;
    static_assert(R == 1 || R == 2,
                  "tfm alignment losses: constant operands are (B) or (B, T) tensors");
    auto rd = [](const auto& e) { return static_cast<double>(static_cast<compute_t<V>>(e)); };
    if constexpr (R == 1) {
      r.extents = {v.extent(0)};
      for (index_t i = 0; i < v.extent(0); ++i) r.v.push_back(rd(v(i)));
    } else {
      r.extents = {v.extent(0), v.extent(1)};
      for (index_t i = 0; i < v.extent(0); ++i)
        for (index_t j = 0; j < v.extent(1); ++j) r.v.push_back(rd(v(i, j)));
    }
  }
  return r;
}

inline std::string al_shape_str(const std::vector<index_t>& e) {
  std::string s = "(";
  for (std::size_t i = 0; i < e.size(); ++i) s += (i ? ", " : "") + std::to_string(e[i]);
  return s + (e.size() == 1 ? ",)" : ")");
}

/// Fails unless `got` (operand `name`) has the extents `want` of operand `ref`.
inline void al_check_shape(const char* who, const char* name, const std::vector<index_t>& got,
                           const char* ref, const std::vector<index_t>& want) {
  if (got != want)
    fail(errc::shape, who, ": ", name, " has shape ", al_shape_str(got), " but ", ref,
         " has shape ", al_shape_str(want), "; they must match.");
}

/// Checks that a mask holds only 0 and 1 (positions reported as (b, t) for width T); returns
/// the number of ones.
inline index_t al_check_mask(const char* who, const std::vector<double>& m, index_t T) {
  index_t n = 0;
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (m[i] != 0.0 && m[i] != 1.0)
      fail(errc::value, who, ": the mask must hold 0 or 1, got ", m[i], " at (",
           static_cast<index_t>(i) / T, ", ", static_cast<index_t>(i) % T, ").");
    n += m[i] != 0.0;
  }
  return n;
}

inline void al_check_positive(const char* who, const char* name, double v) {
  if (!(v > 0) || !std::isfinite(v))
    fail(errc::value, who, ": ", name, " must be a finite positive number, got ", v, ".");
}

/// d.grad (+)= scale * coef (elementwise, coef over all of d's elements).
template <class T>
void al_add_grad(var_data<T>& d, const std::vector<double>& coef, double scale) {
  if (!d.requires_grad) return;
  using G = grad_t<T>;
  const auto t = d.grad_for_overwrite();
  for (index_t i = 0; i < d.size(); ++i) {
    const G v = static_cast<G>(scale * coef[static_cast<std::size_t>(i)]);
    t.data[i] = t.accumulate ? t.data[i] + v : v;
  }
}

/// A fresh rank-0 record holding v.
template <class T>
var_ptr<T> al_scalar(double v) {
  auto out = make_var_data<T>({});
  out->value.data()[0] = static_cast<T>(v);
  return out;
}

/// Records a scalar loss whose gradient wrt `x` is coef * g (the output's gradient g).
template <class T>
void al_record_scalar(const var_ptr<T>& out, const char* name, const var_ptr<T>& x,
                      std::shared_ptr<std::vector<double>> coef) {
  record(out, name, {x}, [x, coef, o = out.get()] {
    al_add_grad(*x, *coef, static_cast<double>(o->grad_data()[0]));
  });
}

/// The (B, T) operands of a token-level RL loss, read and checked against the policy's shape.
struct al_tokens {
  index_t B = 0, T = 0, count = 0;
  std::vector<double> mask;
};

template <class M>
al_tokens al_token_mask(const char* who, const std::vector<index_t>& ext, const M& mask) {
  al_tokens r;
  r.B = ext[0];
  r.T = ext[1];
  al_values m = al_read(mask);
  al_check_shape(who, "the mask", m.extents, "the log-probs", ext);
  if (r.B == 0) fail(errc::value, who, ": the batch is empty (B = 0).");
  r.count = al_check_mask(who, m.v, r.T);
  if (r.count == 0)
    fail(errc::value, who,
         ": the mask selects no token (no response token in the batch); a mean over no tokens "
         "has no value.");
  r.mask = std::move(m.v);
  return r;
}

/// One token of the clipped surrogate: its loss max(-A r, -A clip(r, lo, hi)) with
/// r = exp(lr), d loss / d lr, and whether the clipped term is the strict maximum.
struct al_clip_token {
  double loss, dlr;
  bool clipped;
};
inline al_clip_token al_clipped_surrogate(double lr, double a, double lo, double hi) {
  if (a == 0) return {0.0, 0.0, false};  // 0 * r, also where r overflows
  const double r = std::exp(lr);
  const double l1 = -a * r;
  const double l2 = -a * std::clamp(r, lo, hi);
  // Inside [lo, hi] the two terms are equal and both have derivative -A r; outside, the clipped
  // one is constant: the gradient flows only where the unclipped term is the max.
  if (l1 >= l2) return {l1, -a * r, false};
  return {l2, 0.0, true};
}

}  // namespace detail

// ---- sequence log-probs -------------------------------------------------------------------------

/// log pi(y_b | x_b) = -sum_t mask[b,t] nll[b,t] (seq_reduction::sum), or that sum divided by
/// the number of response tokens of row b (seq_reduction::mean; a row with no token is a
/// tfm::value_error there, while its sum is 0). token_nll is the per-token negative log-prob,
/// e.g. linear_cross_entropy<ce_reduction::none>(h, W, targets) of the policy's hidden states.
template <class T, class S, loss_operand M>
auto sequence_logprob(const var<T, S>& token_nll, const M& mask,
                      seq_reduction red = seq_reduction::sum) {
  detail::al_check_type<T>();
  static_assert(S::rank == 2, "tfm::sequence_logprob: token_nll must be (B, T)");
  constexpr const char* who = "tfm::sequence_logprob";
  const auto& x = token_nll.data();
  const index_t B = x->extents[0], Tn = x->extents[1];
  detail::al_values m = detail::al_read(mask);
  detail::al_check_shape(who, "the mask", m.extents, "token_nll", x->extents);
  detail::al_check_mask(who, m.v, Tn);
  auto coef = std::make_shared<std::vector<double>>(m.v.size());  // d out[b] / d nll[b, t]
  auto out = detail::make_var_data<T>({B});
  for (index_t b = 0; b < B; ++b) {
    double s = 0, n = 0;
    for (index_t t = 0; t < Tn; ++t) {
      const auto i = static_cast<std::size_t>(b * Tn + t);
      s += m.v[i] * static_cast<double>(x->value.data()[i]);
      n += m.v[i];
    }
    double scale = 1;
    if (red == seq_reduction::mean) {
      if (n == 0)
        fail(errc::value, who, ": row ", b,
             " of the mask selects no token; its mean log-prob has no value.");
      scale = 1.0 / n;
    }
    out->value.data()[b] = static_cast<T>(-s * scale);
    for (index_t t = 0; t < Tn; ++t) {
      const auto i = static_cast<std::size_t>(b * Tn + t);
      (*coef)[i] = -m.v[i] * scale;
    }
  }
  detail::record(out, "sequence_logprob", {x}, [x, coef, o = out.get(), B, Tn] {
    if (!x->requires_grad) return;
    using G = grad_t<T>;
    const G* g = o->grad_data();
    const auto t = x->grad_for_overwrite();
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < Tn; ++j) {
        const auto i = static_cast<std::size_t>(b * Tn + j);
        const G v = static_cast<G>((*coef)[i] * static_cast<double>(g[b]));
        t.data[i] = t.accumulate ? t.data[i] + v : v;
      }
  });
  return var<T, detail::take_shape_t<S, 1>>(out);
}

// ---- DPO ----------------------------------------------------------------------------------------

/// Direct preference optimisation (Rafailov et al. 2023, arXiv:2305.18290 eq. 7) and its IPO and
/// hinge variants, over B pairs of sequence log-probs (sequence_logprob): with
///   h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected),
/// the per-pair loss is that of options.kind (dpo_kind) and the result its mean over pairs.
/// The implicit rewards beta (pi - ref) are returned as means for logging.
template <class T, class S1, class S2, class S3, class S4>
dpo_result<T> dpo_loss(const var<T, S1>& pi_chosen, const var<T, S2>& pi_rejected,
                       const var<T, S3>& ref_chosen, const var<T, S4>& ref_rejected,
                       const dpo_options& opt = {}) {
  detail::al_check_type<T>();
  static_assert(S1::rank == 1 && S2::rank == 1 && S3::rank == 1 && S4::rank == 1,
                "tfm::dpo_loss: the four log-prob inputs must be (B) vectors");
  constexpr const char* who = "tfm::dpo_loss";
  const auto &pc = pi_chosen.data(), &pr = pi_rejected.data();
  const auto &rc = ref_chosen.data(), &rr = ref_rejected.data();
  detail::al_check_shape(who, "pi_rejected", pr->extents, "pi_chosen", pc->extents);
  detail::al_check_shape(who, "ref_chosen", rc->extents, "pi_chosen", pc->extents);
  detail::al_check_shape(who, "ref_rejected", rr->extents, "pi_chosen", pc->extents);
  detail::al_check_positive(who, "beta", opt.beta);
  if (!(opt.label_smoothing >= 0 && opt.label_smoothing <= 0.5))
    fail(errc::value, who, ": label_smoothing must be in [0, 0.5], got ", opt.label_smoothing, ".");
  if (opt.label_smoothing != 0 && opt.kind != dpo_kind::sigmoid)
    fail(errc::value, who,
         ": label_smoothing (conservative DPO) applies to dpo_kind::sigmoid only.");
  const index_t B = pc->extents[0];
  if (B == 0) fail(errc::value, who, ": the batch is empty (B = 0).");
  const double beta = opt.beta, eps = opt.label_smoothing;
  auto coef = std::make_shared<std::vector<double>>(static_cast<std::size_t>(B));  // dL/dh
  dpo_result<T> res;
  double total = 0;
  for (index_t b = 0; b < B; ++b) {
    const double wc = static_cast<double>(pc->value.data()[b]) - rc->value.data()[b];
    const double wr = static_cast<double>(pr->value.data()[b]) - rr->value.data()[b];
    const double h = wc - wr, z = beta * h;
    double l = 0, dh = 0;
    switch (opt.kind) {
      case dpo_kind::sigmoid:
        // d/dz [-log s(z)] = -s(-z), d/dz [-log s(-z)] = s(z)
        l = -(1 - eps) * detail::al_log_sigmoid(z) - eps * detail::al_log_sigmoid(-z);
        dh = beta * (-(1 - eps) * detail::al_sigmoid(-z) + eps * detail::al_sigmoid(z));
        break;
      case dpo_kind::ipo: {
        const double d = h - 1.0 / (2 * beta);
        l = d * d;
        dh = 2 * d;
        break;
      }
      case dpo_kind::hinge:
        l = std::max(0.0, 1 - z);
        dh = z < 1 ? -beta : 0.0;
        break;
    }
    total += l;
    (*coef)[static_cast<std::size_t>(b)] = dh / static_cast<double>(B);
    res.chosen_reward += beta * wc;
    res.rejected_reward += beta * wr;
    res.reward_accuracy += beta * wc > beta * wr ? 1.0 : 0.0;
  }
  const double nb = static_cast<double>(B);
  res.chosen_reward /= nb;
  res.rejected_reward /= nb;
  res.reward_margin = res.chosen_reward - res.rejected_reward;
  res.reward_accuracy /= nb;
  auto out = detail::al_scalar<T>(total / nb);
  // dh/dpi_c = 1, dh/dpi_r = -1, dh/dref_c = -1, dh/dref_r = 1.
  detail::record(out, "dpo_loss", {pc, pr, rc, rr}, [pc, pr, rc, rr, coef, o = out.get()] {
    const double g = static_cast<double>(o->grad_data()[0]);
    detail::al_add_grad(*pc, *coef, g);
    detail::al_add_grad(*pr, *coef, -g);
    detail::al_add_grad(*rc, *coef, -g);
    detail::al_add_grad(*rr, *coef, g);
  });
  res.loss = var<T, shape<>>(out);
  return res;
}

// ---- reward model -------------------------------------------------------------------------------

namespace detail {
template <class T, class S1, class S2>
bradley_terry_result<T> bt_impl(const var<T, S1>& r_chosen, const var<T, S2>& r_rejected,
                                const std::vector<double>* margin) {
  al_check_type<T>();
  static_assert(S1::rank == 1 && S2::rank == 1,
                "tfm::bradley_terry_loss: the rewards must be (B) vectors");
  constexpr const char* who = "tfm::bradley_terry_loss";
  const auto &c = r_chosen.data(), &r = r_rejected.data();
  al_check_shape(who, "r_rejected", r->extents, "r_chosen", c->extents);
  const index_t B = c->extents[0];
  if (B == 0) fail(errc::value, who, ": the batch is empty (B = 0).");
  if (margin && margin->size() != static_cast<std::size_t>(B))
    fail(errc::shape, who, ": the margin has ", margin->size(), " elements but there are ", B,
         " pairs.");
  auto coef = std::make_shared<std::vector<double>>(static_cast<std::size_t>(B));
  bradley_terry_result<T> res;
  double total = 0;
  for (index_t b = 0; b < B; ++b) {
    const double gap = static_cast<double>(c->value.data()[b]) - r->value.data()[b];
    const double d = gap - (margin ? (*margin)[static_cast<std::size_t>(b)] : 0.0);
    total -= al_log_sigmoid(d);
    (*coef)[static_cast<std::size_t>(b)] = -al_sigmoid(-d) / static_cast<double>(B);
    res.accuracy += gap > 0 ? 1.0 : 0.0;
    res.mean_gap += gap;
  }
  res.accuracy /= static_cast<double>(B);
  res.mean_gap /= static_cast<double>(B);
  auto out = al_scalar<T>(total / static_cast<double>(B));
  record(out, "bradley_terry_loss", {c, r}, [c, r, coef, o = out.get()] {
    const double g = static_cast<double>(o->grad_data()[0]);
    al_add_grad(*c, *coef, g);
    al_add_grad(*r, *coef, -g);
  });
  res.loss = var<T, shape<>>(out);
  return res;
}
}  // namespace detail

/// The reward model's pairwise loss (Ouyang et al. 2022, arXiv:2203.02155 eq. 1, one pair per
/// comparison): -mean_b log s(r_chosen[b] - r_rejected[b]), with the accuracy of the ranking.
template <class T, class S1, class S2>
bradley_terry_result<T> bradley_terry_loss(const var<T, S1>& r_chosen,
                                           const var<T, S2>& r_rejected) {
  return detail::bt_impl(r_chosen, r_rejected, nullptr);
}

/// With per-pair margins m (a (B) tensor, view or var; no gradient flows to it):
/// -mean log s(r_c - r_r - m) (Llama 2, Touvron et al. 2023, arXiv:2307.09288 eq. 2).
template <class T, class S1, class S2, loss_operand M>
bradley_terry_result<T> bradley_terry_loss(const var<T, S1>& r_chosen, const var<T, S2>& r_rejected,
                                           const M& margin) {
  detail::al_values v = detail::al_read(margin);
  if (v.extents.size() != 1)
    fail(errc::shape, "tfm::bradley_terry_loss: the margin must be a (B) vector, got shape ",
         detail::al_shape_str(v.extents), ".");
  return detail::bt_impl(r_chosen, r_rejected, &v.v);
}

/// With one margin m for every pair.
template <class T, class S1, class S2>
bradley_terry_result<T> bradley_terry_loss(const var<T, S1>& r_chosen, const var<T, S2>& r_rejected,
                                           double margin) {
  const std::vector<double> m(static_cast<std::size_t>(r_chosen.extent(0)), margin);
  return detail::bt_impl(r_chosen, r_rejected, &m);
}

// ---- PPO ----------------------------------------------------------------------------------------

/// PPO's clipped surrogate per token (Schulman et al. 2017, arXiv:1707.06347 eq. 7, as a loss;
/// per response token as in Stiennon et al. 2020 and TRL's PPOTrainer):
///   r = exp(new_logp - old_logp),  loss = masked mean of max(-A r, -A clip(r, 1-eps, 1+eps)).
/// new_logp (B,T) is differentiable; old_logp, advantages and mask (B,T) are constants.
template <class T, class S, loss_operand O, loss_operand A, loss_operand M>
ppo_policy_result<T> ppo_policy_loss(const var<T, S>& new_logp, const O& old_logp,
                                     const A& advantages, const M& mask,
                                     const ppo_options& opt = {}) {
  detail::al_check_type<T>();
  static_assert(S::rank == 2, "tfm::ppo_policy_loss: new_logp must be (B, T)");
  constexpr const char* who = "tfm::ppo_policy_loss";
  const auto& x = new_logp.data();
  detail::al_check_positive(who, "clip_eps", opt.clip_eps);
  const detail::al_tokens tk = detail::al_token_mask(who, x->extents, mask);
  const detail::al_values old = detail::al_read(old_logp), adv = detail::al_read(advantages);
  detail::al_check_shape(who, "old_logp", old.extents, "new_logp", x->extents);
  detail::al_check_shape(who, "the advantages", adv.extents, "new_logp", x->extents);
  auto coef = std::make_shared<std::vector<double>>(tk.mask.size(), 0.0);
  const double n = static_cast<double>(tk.count);
  double total = 0, clipped = 0, kl2 = 0, kl3 = 0, ratio = 0;
  for (std::size_t i = 0; i < tk.mask.size(); ++i) {
    if (tk.mask[i] == 0) continue;
    const double lr = static_cast<double>(x->value.data()[i]) - old.v[i];
    const auto s = detail::al_clipped_surrogate(lr, adv.v[i], 1 - opt.clip_eps, 1 + opt.clip_eps);
    total += s.loss;
    (*coef)[i] = s.dlr / n;
    clipped += s.clipped;
    kl2 += 0.5 * lr * lr;
    kl3 += std::expm1(lr) - lr;  // (r - 1) - log r
    ratio += std::exp(lr);
  }
  auto out = detail::al_scalar<T>(total / n);
  detail::al_record_scalar(out, "ppo_policy_loss", x, coef);
  return {var<T, shape<>>(out), clipped / n, kl2 / n, kl3 / n, ratio / n};
}

/// PPO's clipped value loss (TRL PPOTrainer; Schulman et al.'s baselines ppo2):
///   v_clip = old + clip(v - old, -clip_v, clip_v),
///   loss = 0.5 masked mean of max((v - R)^2, (v_clip - R)^2).
/// values (B,T) is differentiable; old_values, returns and mask (B,T) are constants. clip_v > 0
/// (infinity: no clipping).
template <class T, class S, loss_operand O, loss_operand R, loss_operand M>
ppo_value_result<T> ppo_value_loss(const var<T, S>& values, const O& old_values, const R& returns,
                                   const M& mask, double clip_v = 0.2) {
  detail::al_check_type<T>();
  static_assert(S::rank == 2, "tfm::ppo_value_loss: values must be (B, T)");
  constexpr const char* who = "tfm::ppo_value_loss";
  const auto& x = values.data();
  if (!(clip_v > 0)) fail(errc::value, who, ": clip_v must be positive, got ", clip_v, ".");
  const detail::al_tokens tk = detail::al_token_mask(who, x->extents, mask);
  const detail::al_values old = detail::al_read(old_values), ret = detail::al_read(returns);
  detail::al_check_shape(who, "old_values", old.extents, "values", x->extents);
  detail::al_check_shape(who, "the returns", ret.extents, "values", x->extents);
  auto coef = std::make_shared<std::vector<double>>(tk.mask.size(), 0.0);
  const double n = static_cast<double>(tk.count);
  double total = 0, clipped = 0;
  for (std::size_t i = 0; i < tk.mask.size(); ++i) {
    if (tk.mask[i] == 0) continue;
    const double v = static_cast<double>(x->value.data()[i]);
    const double vc = old.v[i] + std::clamp(v - old.v[i], -clip_v, clip_v);
    const double e1 = v - ret.v[i], e2 = vc - ret.v[i];
    // Where v is inside the clip range vc == v: the unclipped branch carries the gradient.
    if (e1 * e1 >= e2 * e2) {
      total += 0.5 * e1 * e1;
      (*coef)[i] = e1 / n;
    } else {
      total += 0.5 * e2 * e2;
      clipped += 1;
    }
  }
  auto out = detail::al_scalar<T>(total / n);
  detail::al_record_scalar(out, "ppo_value_loss", x, coef);
  return {var<T, shape<>>(out), clipped / n};
}

// ---- GRPO ---------------------------------------------------------------------------------------

/// Group relative policy optimisation (Shao et al. 2024, arXiv:2402.03300 eq. 3), as the loss
/// -J: per response token
///   l_t = max(-A r_t, -A clip(r_t, 1 - eps, 1 + eps_high)) + beta k3_t,
///   r_t = exp(new - old),  k3_t = exp(ref - new) - (ref - new) - 1   (eq. 4)
/// folded by options.norm: grpo_norm::sequence (the paper: (1/B) sum_b (1/|o_b|) sum_t l_t; a
/// row with no response token adds 0, as TRL's clamp(min=1) does), ::token (DAPO) or ::fixed
/// (Dr. GRPO). new_logp (B,T) is differentiable; old_logp, ref_logp, mask (B,T) and the
/// advantages ((B), one per sequence broadcast over its tokens, or (B,T)) are constants.
template <class T, class S, loss_operand O, loss_operand F, loss_operand A, loss_operand M>
grpo_result<T> grpo_loss(const var<T, S>& new_logp, const O& old_logp, const F& ref_logp,
                         const A& advantages, const M& mask, const grpo_options& opt = {}) {
  detail::al_check_type<T>();
  static_assert(S::rank == 2, "tfm::grpo_loss: new_logp must be (B, T)");
  constexpr const char* who = "tfm::grpo_loss";
  const auto& x = new_logp.data();
  detail::al_check_positive(who, "clip_eps", opt.clip_eps);
  const double eps_hi = opt.clip_eps_high == 0 ? opt.clip_eps : opt.clip_eps_high;
  detail::al_check_positive(who, "clip_eps_high", eps_hi);
  if (!(opt.beta >= 0) || !std::isfinite(opt.beta))
    fail(errc::value, who, ": beta must be finite and >= 0, got ", opt.beta, ".");
  if (opt.fixed_length < 0)
    fail(errc::value, who, ": fixed_length must be >= 0, got ", opt.fixed_length, ".");
  const detail::al_tokens tk = detail::al_token_mask(who, x->extents, mask);
  const detail::al_values old = detail::al_read(old_logp), ref = detail::al_read(ref_logp);
  const detail::al_values adv = detail::al_read(advantages);
  detail::al_check_shape(who, "old_logp", old.extents, "new_logp", x->extents);
  detail::al_check_shape(who, "ref_logp", ref.extents, "new_logp", x->extents);
  const bool per_seq = adv.extents.size() == 1;
  detail::al_check_shape(who, "the advantages", adv.extents, per_seq ? "(B)" : "new_logp",
                         per_seq ? std::vector<index_t>{tk.B} : x->extents);
  auto coef = std::make_shared<std::vector<double>>(tk.mask.size(), 0.0);
  double total = 0, clipped = 0, kl = 0;
  const double n = static_cast<double>(tk.count), Bd = static_cast<double>(tk.B);
  const double L = static_cast<double>(opt.fixed_length > 0 ? opt.fixed_length : tk.T);
  for (index_t b = 0; b < tk.B; ++b) {
    double nb = 0;
    for (index_t t = 0; t < tk.T; ++t) nb += tk.mask[static_cast<std::size_t>(b * tk.T + t)];
    if (nb == 0) continue;
    // The weight of each of this row's token losses in the result.
    const double w = opt.norm == grpo_norm::sequence ? 1.0 / (Bd * nb)
                     : opt.norm == grpo_norm::token  ? 1.0 / n
                                                     : 1.0 / (Bd * L);
    for (index_t t = 0; t < tk.T; ++t) {
      const auto i = static_cast<std::size_t>(b * tk.T + t);
      if (tk.mask[i] == 0) continue;
      const double nl = static_cast<double>(x->value.data()[i]);
      const double a = per_seq ? adv.v[static_cast<std::size_t>(b)] : adv.v[i];
      const auto s = detail::al_clipped_surrogate(nl - old.v[i], a, 1 - opt.clip_eps, 1 + eps_hi);
      const double d = ref.v[i] - nl;       // log(pi_ref / pi)
      const double k3 = std::expm1(d) - d;  // >= 0
      total += w * (s.loss + opt.beta * k3);
      (*coef)[i] = w * (s.dlr + opt.beta * -std::expm1(d));  // d k3 / d new = 1 - exp(d)
      clipped += s.clipped;
      kl += k3;
    }
  }
  auto out = detail::al_scalar<T>(total);
  detail::al_record_scalar(out, "grpo_loss", x, coef);
  return {var<T, shape<>>(out), clipped / n, kl / n};
}

TFM_END_NAMESPACE
