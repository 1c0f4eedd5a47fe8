// typeformer/train/rl_math.hpp
//
// WHAT THIS IS
//   The non-differentiable arithmetic of RL fine-tuning, on plain vectors (std::span in,
//   std::vector out; (B, T) arrays are row-major with T given). Nothing here records a graph:
//   these values are the constants that ops/alignment_loss.hpp's PPO and GRPO losses take.
//
//   gae(rewards, values, gamma, lambda)           advantages and returns of one sequence
//   whiten(x, mask, shift_mean)                   masked standardisation (TRL masked_whiten)
//   group_advantages(rewards, group, opt)         GRPO's group-normalised outcome advantages
//   kl_penalized_rewards(score, logp, ref, mask)  per-token rewards -kl_coef KL, + score at the end
//
// All arithmetic is in double; results are rounded to the element type of the inputs once.
// Errors (tfm::value_error / tfm::shape_error) name the function, the argument and the value.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <cmath>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

template <class T>
struct gae_result {
  std::vector<T> advantages;  ///< A_t
  std::vector<T> returns;     ///< A_t + V_t: the value head's regression targets
};

/// Generalised advantage estimation (Schulman et al. 2015, arXiv:1506.02438 eq. 16) over one
/// response of n tokens, rewards[t] and values[t] = V(s_t):
///   delta_t = r_t + gamma V_{t+1} - V_t,   A_t = sum_l (gamma lambda)^l delta_{t+l},
/// with V_n = last_value (0: the response ended; the value of the next state if it was cut).
/// gamma and lambda in [0, 1].
template <class T>
gae_result<T> gae(std::span<const T> rewards, std::span<const T> values, double gamma,
                  double lambda, double last_value = 0.0) {
  static_assert(std::is_floating_point_v<T>, "tfm::train::gae: rewards must be float or double");
  if (rewards.size() != values.size())
    fail(errc::shape, "tfm::train::gae: ", rewards.size(), " rewards but ", values.size(),
         " values; there must be one value per reward.");
  if (!(gamma >= 0 && gamma <= 1) || !(lambda >= 0 && lambda <= 1))
    fail(errc::value, "tfm::train::gae: gamma and lambda must be in [0, 1], got ", gamma, " and ",
         lambda, ".");
  const std::size_t n = rewards.size();
  gae_result<T> r{std::vector<T>(n), std::vector<T>(n)};
  double next_value = last_value, acc = 0;
  for (std::size_t t = n; t-- > 0;) {
    const double v = static_cast<double>(values[t]);
    const double delta = static_cast<double>(rewards[t]) + gamma * next_value - v;
    acc = delta + gamma * lambda * acc;
    r.advantages[t] = static_cast<T>(acc);
    r.returns[t] = static_cast<T>(acc + v);
    next_value = v;
  }
  return r;
}

/// Masked standardisation as TRL's masked_whiten: with m the masked mean and s^2 the masked
/// variance with Bessel's correction (n / (n - 1), n = number of ones in the mask),
///   y = (x - m) / sqrt(s^2 + 1e-8)          (shift_mean)
///   y = (x - m) / sqrt(s^2 + 1e-8) + m      (!shift_mean: rescale only, keep the mean)
/// applied to every element, masked or not (TRL's callers zero the padding afterwards). mask
/// holds 0 or 1; fewer than 2 ones is a tfm::value_error (no variance). An empty mask span
/// means "all ones".
template <class T, class M>
std::vector<T> whiten(std::span<const T> x, std::span<const M> mask, bool shift_mean = true) {
  static_assert(std::is_floating_point_v<T>, "tfm::train::whiten: x must be float or double");
  const bool all = mask.empty();
  if (!all && mask.size() != x.size())
    fail(errc::shape, "tfm::train::whiten: ", x.size(), " values but a mask of ", mask.size(), ".");
  double n = 0, s = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double m = all ? 1.0 : static_cast<double>(mask[i]);
    if (m != 0 && m != 1)
      fail(errc::value, "tfm::train::whiten: the mask must hold 0 or 1, got ", m, " at ", i, ".");
    n += m;
    s += m * static_cast<double>(x[i]);
  }
  if (n < 2)
    fail(errc::value, "tfm::train::whiten: the mask selects ", static_cast<index_t>(n),
         " value(s); whitening needs at least 2.");
  const double mean = s / n;
  double ss = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    ss += (all ? 1.0 : static_cast<double>(mask[i])) * d * d;
  }
  const double var = ss / (n - 1);
  const double inv = 1.0 / std::sqrt(var + 1e-8);
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = static_cast<T>((static_cast<double>(x[i]) - mean) * inv + (shift_mean ? 0.0 : mean));
  return y;
}

/// Unmasked whitening of all of x.
template <class T>
std::vector<T> whiten(std::span<const T> x, bool shift_mean = true) {
  return whiten(x, std::span<const T>(), shift_mean);
}

struct group_advantage_options {
  /// Divide by the group's standard deviation (Shao 2024 section 4.1.2); false: only subtract
  /// the group mean (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783).
  bool scale_by_std = true;
  bool unbiased_std = true;  ///< Bessel's correction, as torch.std (TRL's GRPOTrainer)
  double eps = 1e-4;         ///< added to the std (TRL's GRPOTrainer)
};

/// GRPO's outcome advantages (Shao et al. 2024, arXiv:2402.03300 section 4.1.2): rewards holds
/// consecutive groups of group_size samples of one prompt each; every sample gets
///   A_i = (r_i - mean(group)) / (std(group) + eps)     (or r_i - mean without scale_by_std),
/// to be broadcast over its tokens. A group of identical rewards gives 0 advantages.
template <class T>
std::vector<T> group_advantages(std::span<const T> rewards, index_t group_size,
                                const group_advantage_options& opt = {}) {
  static_assert(std::is_floating_point_v<T>,
                "tfm::train::group_advantages: rewards must be float or double");
  if (group_size <= 0 || rewards.size() % static_cast<std::size_t>(group_size) != 0)
    fail(errc::shape, "tfm::train::group_advantages: ", rewards.size(),
         " rewards do not split into groups of ", group_size, ".");
  if (opt.scale_by_std && opt.unbiased_std && group_size < 2)
    fail(errc::value,
         "tfm::train::group_advantages: the unbiased std of a group of 1 has no value; use "
         "groups of 2 or more, or unbiased_std = false.");
  if (!(opt.eps >= 0))
    fail(errc::value, "tfm::train::group_advantages: eps must be >= 0, got ", opt.eps, ".");
  const auto g = static_cast<std::size_t>(group_size);
  std::vector<T> a(rewards.size());
  for (std::size_t s = 0; s < rewards.size(); s += g) {
    double mean = 0;
    for (std::size_t i = 0; i < g; ++i) mean += static_cast<double>(rewards[s + i]);
    mean /= static_cast<double>(g);
    double ss = 0;
    for (std::size_t i = 0; i < g; ++i) {
      const double d = static_cast<double>(rewards[s + i]) - mean;
      ss += d * d;
    }
    const double sd = std::sqrt(ss / static_cast<double>(opt.unbiased_std ? g - 1
                                                         : g == 0         ? 1
                                                                          : g));
    const double scale = opt.scale_by_std ? 1.0 / (sd + opt.eps) : 1.0;
    if (opt.scale_by_std && !std::isfinite(scale))
      fail(errc::value,
           "tfm::train::group_advantages: a group's rewards are all equal and eps is 0; "
           "set eps > 0.");
    for (std::size_t i = 0; i < g; ++i)
      a[s + i] = static_cast<T>((static_cast<double>(rewards[s + i]) - mean) * scale);
  }
  return a;
}

/// The per-token estimate of KL(pi || ref) used in the reward.
enum class kl_estimator {
  k1,  ///< logp - ref (Ziegler 2019, Stiennon 2020, Ouyang 2022; TRL's default "k1")
  k3   ///< exp(ref - logp) - (ref - logp) - 1, >= 0 (Schulman's k3; TRL "k3")
};

/// The per-token rewards of RLHF PPO (Ziegler et al. 2019, arXiv:1909.08593 section 2.2;
/// Ouyang et al. 2022 eq. 2): for B responses of T positions (row-major, mask 0/1),
///   reward[b,t] = -kl_coef KL_t         on response tokens (mask 1), 0 elsewhere,
///   reward[b,last_b] += score[b]        last_b: the last position of row b whose mask is 1.
/// A row with no response token is a tfm::value_error (its score has no token to go to).
template <class T, class M>
std::vector<T> kl_penalized_rewards(std::span<const T> score, std::span<const T> logp,
                                    std::span<const T> ref_logp, std::span<const M> mask,
                                    index_t T_len, double kl_coef,
                                    kl_estimator est = kl_estimator::k1) {
  static_assert(std::is_floating_point_v<T>,
                "tfm::train::kl_penalized_rewards: values must be float or double");
  const std::size_t B = score.size();
  const auto Tn = static_cast<std::size_t>(T_len < 0 ? 0 : T_len);
  if (T_len < 0 || logp.size() != B * Tn || ref_logp.size() != B * Tn || mask.size() != B * Tn)
    fail(errc::shape, "tfm::train::kl_penalized_rewards: ", B, " scores and T = ", T_len,
         " need logp, ref_logp and mask of ", B * Tn, " values; got ", logp.size(), ", ",
         ref_logp.size(), " and ", mask.size(), ".");
  if (!std::isfinite(kl_coef))
    fail(errc::value, "tfm::train::kl_penalized_rewards: kl_coef must be finite.");
  std::vector<T> r(B * Tn, T(0));
  for (std::size_t b = 0; b < B; ++b) {
    std::size_t last = Tn;
    for (std::size_t t = 0; t < Tn; ++t) {
      const std::size_t i = b * Tn + t;
      const double m = static_cast<double>(mask[i]);
      if (m != 0 && m != 1)
        fail(errc::value, "tfm::train::kl_penalized_rewards: the mask must hold 0 or 1, got ", m,
             " at (", b, ", ", t, ").");
      if (m == 0) continue;
      const double d = static_cast<double>(logp[i]) - static_cast<double>(ref_logp[i]);
      const double kl = est == kl_estimator::k1 ? d : std::expm1(-d) + d;
      r[i] = static_cast<T>(-kl_coef * kl);
      last = t;
    }
    if (last == Tn)
      fail(errc::value, "tfm::train::kl_penalized_rewards: row ", b,
           " of the mask selects no token; its score has no token to go to.");
    const std::size_t i = b * Tn + last;
    r[i] = static_cast<T>(static_cast<double>(r[i]) + static_cast<double>(score[b]));
  }
  return r;
}

// std::vector spellings of the above (a span parameter does not deduce its element type).
template <class T>
gae_result<T> gae(const std::vector<T>& rewards, const std::vector<T>& values, double gamma,
                  double lambda, double last_value = 0.0) {
  return gae(std::span<const T>(rewards), std::span<const T>(values), gamma, lambda, last_value);
}
template <class T, class M>
std::vector<T> whiten(const std::vector<T>& x, const std::vector<M>& mask, bool shift_mean = true) {
  return whiten(std::span<const T>(x), std::span<const M>(mask), shift_mean);
}
template <class T>
std::vector<T> whiten(const std::vector<T>& x, bool shift_mean = true) {
  return whiten(std::span<const T>(x), shift_mean);
}
template <class T>
std::vector<T> group_advantages(const std::vector<T>& rewards, index_t group_size,
                                const group_advantage_options& opt = {}) {
  return group_advantages(std::span<const T>(rewards), group_size, opt);
}
template <class T, class M>
std::vector<T> kl_penalized_rewards(const std::vector<T>& score, const std::vector<T>& logp,
                                    const std::vector<T>& ref_logp, const std::vector<M>& mask,
                                    index_t T_len, double kl_coef,
                                    kl_estimator est = kl_estimator::k1) {
  return kl_penalized_rewards(std::span<const T>(score), std::span<const T>(logp),
                              std::span<const T>(ref_logp), std::span<const M>(mask), T_len,
                              kl_coef, est);
}

}  // namespace train
TFM_END_NAMESPACE
