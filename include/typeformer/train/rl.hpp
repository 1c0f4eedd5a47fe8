// typeformer/train/rl.hpp
//
// WHAT THIS REPRESENTS
//   Reinforcement-learning fine-tuning of an nn::gpt carrying a LoRA adapter (nn/lora.hpp):
//   rollouts sampled from the policy with a KV cache, rewards from C++ callables, and GRPO
//   (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300, section 4.1 and Algorithm 1).
//
//     train::grpo_config gc;
//     gc.rollout = {.group_size = 8, .max_new_tokens = 16, .sampling = {.temperature = 1.0},
//                   .stop_ids = {im_end}};
//     gc.loss.beta = 0.04;                        // k3 KL to the reference (ops/alignment_loss)
//     train::grpo_trainer<Cfg, float> tr(model, adapter, reward, decode, gc);   // or ppo_trainer
//     auto r = tr.step(prompts);                  // rollouts, advantages, mu epochs of updates
//     std::printf("reward %.3f kl %.4f\n", r.reward_mean, r.kl);
//
// THE PIECES
//   sample_completions   for each prompt, group_size completions sampled from the model as it is
//                        (adapter attached or not), no gradients: prompts of equal length run
//                        together, each once, its keys/values shared by its group's rows
//                        (shared_prefix_cache); then one (rows, 1) step per new token until every
//                        row has produced a stop id or max_new_tokens tokens. Each row has its own
//                        infer::sampler whose seed derives from (sampling.seed, stream, prompt
//                        index, row), so a rollout is reproducible whatever the batch it runs in.
//   completion_logprobs  the same log-probs by one teacher-forced forward over (prompt +
//                        completion) rows padded to a common length (the training forward).
//   reference_logprobs   completion_logprobs with the adapter detached (the base model is the
//                        reference pi_ref of a LoRA policy), attached again afterwards.
//   grpo_trainer         one GRPO iteration per step(): rollouts -> rewards -> group-normalised
//                        advantages (rl_math.hpp group_advantages) -> `epochs` (mu) passes over
//                        `minibatches` minibatches, each one AdamW step on the adapter of the
//                        grpo_loss (ops/alignment_loss.hpp: clipped ratio, k3 KL with beta).
//   ppo_trainer          PPO for language models (Ouyang 2022, Stiennon 2020; TRL PPOTrainer's
//                        recipe): a value_head (linear C -> 1) on the policy's hidden states,
//                        per-token rewards -kl_coef KL + the score at the last token
//                        (kl_penalized_rewards), GAE, optional reward and advantage whitening,
//                        `epochs` passes of clipped policy + vf_coef * clipped value loss.
//
// LOG-PROBS
//   Every log-prob here is log softmax(logits / tau)[token] with tau = sampling.temperature (1
//   when the temperature is 0, i.e. greedy): the temperature-scaled distribution, without the
//   sampler's truncation (top-k, top-p, min-p) or penalties. This is what TRL's GRPOTrainer uses
//   (it divides the logits by the temperature in _get_per_token_logps), so the ratio pi/pi_old
//   and the KL are between the full tempered distributions. The rollout's log-probs (old_logp)
//   come from the sampling forward itself (KV cache), and equal the teacher-forced forward's to
//   f32 rounding (tested); with epochs == 1 and one minibatch the ratio is therefore 1 up to
//   rounding, as in the paper's on-policy case.
//
// REFERENCE
//   The reference model is the base model (the adapter detached), fixed for the whole run: the
//   paper's Algorithm 1 resets pi_ref to pi_theta once per outer iteration, which with a LoRA
//   policy would mean merging; TRL's default (sync_ref_model = False) keeps it fixed too. With
//   beta == 0 the reference pass is skipped and the reported KL is NaN.
//
// ERRORS
//   tfm::value_error naming the option for bad options (group_size < 2 for GRPO, epochs < 1,
//   max_new_tokens < 1, ...), an empty prompt list or an empty prompt, a prompt that leaves no
//   room for max_new_tokens in the model's block_size, a reward that is not finite.
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/infer/sampler.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/nn/lora.hpp"
#include "typeformer/ops/alignment_loss.hpp"
#include "typeformer/ops/linear_loss.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/train/rl_math.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// A rule or a reward model: the reward of `completion` (decoded, without its stop token) for
/// `prompt` (the prompt's text as given in rl_prompt::text). Must return a finite number.
using reward_fn = std::function<double(const std::string& prompt, const std::string& completion)>;
/// Token ids to text (e.g. a vocab_tokenizer's decode).
using decode_fn = std::function<std::string(std::span<const std::int32_t>)>;

/// A prompt: its text (what the reward sees) and its token ids (what the model sees, e.g. the
/// chat template rendered with the generation prompt and tokenized).
struct rl_prompt {
  std::string text;
  std::vector<std::int32_t> ids;
};

struct rollout_options {
  index_t group_size = 8;       ///< G: completions per prompt (>= 1; GRPO needs >= 2)
  index_t max_new_tokens = 64;  ///< >= 1
  /// The sampler's options; sampling.seed is the base seed of every row's stream, and
  /// sampling.temperature the tau of every log-prob (file comment).
  infer::sampling_options sampling{};
  std::vector<std::int32_t> stop_ids;  ///< ids that end a completion (kept as its last token)
  /// Rows decoded together: prompts of equal length share a batch of up to max_rows / G
  /// prompts (at least one). The samples do not depend on it (each row has its own stream).
  index_t max_rows = 64;
};

/// One sampled completion.
struct rl_sample {
  index_t prompt = 0;                ///< index of its prompt
  std::vector<std::int32_t> tokens;  ///< the completion, its stop id included when it has one
  std::vector<float> logp;           ///< log-prob of each token under the sampling policy
  std::vector<float> ref_logp;       ///< under the reference (filled by the trainer)
  bool finished = false;             ///< ended with a stop id (else cut at max_new_tokens)
  double reward = 0;
};

/// The tau of the log-probs for sampling options `s` (file comment).
inline double logprob_temperature(const infer::sampling_options& s) {
  return s.temperature > 0 ? s.temperature : 1.0;
}

/// A KV cache for K prompts of one length, each continued by `group` rows (K * group rows in
/// all, prompt k's rows k * group .. k * group + group - 1). A batch-K append (the prompts) is
/// written to every row of each prompt's group and returns the K prompts' keys and values; a
/// batch-(K * group) append (one step of each row) goes to its own row. It has infer::kv_cache's
/// interface for nn::gpt (append(layer, k, v, pos0) -> the cached keys and values of positions
/// 0 .. pos0 + t - 1, with the batch of the appended keys). With group == 1 it is a plain cache.
template <class T>
class shared_prefix_cache {
 public:
  using buffer = tensor<T, dyn_shape<4>>;

  shared_prefix_cache(index_t n_layer, index_t prompts, index_t group, index_t kv_heads,
                      index_t capacity, index_t head_dim)
      : L_(n_layer), K_(prompts), R_(group), G_(kv_heads), cap_(capacity), D_(head_dim) {
    if (n_layer < 0 || prompts <= 0 || group <= 0 || kv_heads <= 0 || capacity <= 0 ||
        head_dim <= 0)
      fail(errc::value, "tfm::train::shared_prefix_cache: sizes must be positive.");
    const auto n = static_cast<std::size_t>(K_ * R_ * G_ * cap_ * D_);
    k_.assign(static_cast<std::size_t>(L_), std::vector<T>(n));
    v_.assign(static_cast<std::size_t>(L_), std::vector<T>(n));
  }
  template <class Model>
  static shared_prefix_cache for_model(const Model& m, index_t prompts, index_t group) {
    const auto& c = m.config();
    return shared_prefix_cache(c.n_layer, prompts, group, c.n_kv_head, c.block_size,
                               c.n_embd / c.n_head);
  }
  index_t length() const noexcept { return length_; }

  template <class KV>
  std::pair<buffer, buffer> append(index_t layer, const KV& k, const KV& v, index_t pos0) {
    if (layer < 0 || layer >= L_)
      fail(errc::index, "tfm::train::shared_prefix_cache: layer ", layer, " does not exist.");
    const index_t b = k.extent(0), t = k.extent(2), rows = K_ * R_;
    if ((b != K_ && b != rows) || k.extent(1) != G_ || k.extent(3) != D_ || v.extent(0) != b ||
        v.extent(1) != G_ || v.extent(2) != t || v.extent(3) != D_)
      fail(errc::shape, "tfm::train::shared_prefix_cache: keys (", b, ", ", k.extent(1), ", ", t,
           ", ", k.extent(3), ") do not fit a cache of ", K_, " x ", R_, " rows, ", G_,
           " heads of ", D_, ".");
    if (pos0 < 0 || pos0 > length_ || pos0 + t > cap_)
      fail(errc::index, "tfm::train::shared_prefix_cache: positions ", pos0, " .. ", pos0 + t - 1,
           " do not follow the ", length_, " cached positions or exceed the capacity ", cap_, ".");
    const bool per_prompt = b == K_;  // (with R_ == 1 both readings are the same)
    auto store = [&](std::vector<T>& dst, const KV& src) {
      const T* s = src.data();  // contiguous (b, G, t, D): nn::gpt passes var values
      for (index_t r = 0; r < rows; ++r) {
        const index_t sr = per_prompt ? r / R_ : r;
        for (index_t g = 0; g < G_; ++g)
          std::copy_n(s + ((sr * G_ + g) * t) * D_, t * D_,
                      dst.data() + ((r * G_ + g) * cap_ + pos0) * D_);
      }
    };
    store(k_[static_cast<std::size_t>(layer)], k);
    store(v_[static_cast<std::size_t>(layer)], v);
    if (layer + 1 == L_) length_ = std::max(length_, pos0 + t);
    const index_t n = pos0 + t;
    auto read = [&](const std::vector<T>& src) {
      buffer out(dyn_shape<4>(b, G_, n, D_));
      for (index_t r = 0; r < b; ++r) {
        const index_t cr = per_prompt ? r * R_ : r;
        for (index_t g = 0; g < G_; ++g)
          std::copy_n(src.data() + (cr * G_ + g) * cap_ * D_, n * D_,
                      out.data() + (r * G_ + g) * n * D_);
      }
      return out;
    };
    return {read(k_[static_cast<std::size_t>(layer)]), read(v_[static_cast<std::size_t>(layer)])};
  }

 private:
  index_t L_, K_, R_, G_, cap_, D_;
  index_t length_ = 0;
  std::vector<std::vector<T>> k_, v_;
};

namespace detail::rl {

inline constexpr std::int32_t ignore = -100;

/// log softmax(row / tau)[tok] in double.
template <class L>
double tempered_logprob(const L* row, index_t n, std::int32_t tok, double tau) {
  double mx = -std::numeric_limits<double>::infinity();
  for (index_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(row[i]) / tau);
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(row[i]) / tau - mx);
  return static_cast<double>(row[tok]) / tau - mx - std::log(s);
}

/// The seed of row `g` of prompt `p` in stream `stream` (a counter-based hash of all four).
inline std::uint64_t row_seed(std::uint64_t base, std::uint64_t stream, index_t p, index_t g) {
  const std::uint64_t key = base ^ (stream * 0x9e3779b97f4a7c15ull);
  const auto idx = (static_cast<std::uint64_t>(p) << 24) ^ static_cast<std::uint64_t>(g);
  return (static_cast<std::uint64_t>(random_u32(key, 2 * idx)) << 32) |
         random_u32(key, 2 * idx + 1);
}

inline void check_rollout(const char* who, const rollout_options& o, index_t block_size,
                          std::span<const rl_prompt> prompts) {
  if (o.group_size < 1)
    fail(errc::value, who, ": rollout.group_size must be >= 1, got ", o.group_size, ".");
  if (o.max_new_tokens < 1)
    fail(errc::value, who, ": rollout.max_new_tokens must be >= 1, got ", o.max_new_tokens, ".");
  if (o.max_rows < 1)
    fail(errc::value, who, ": rollout.max_rows must be >= 1, got ", o.max_rows, ".");
  infer::validate(o.sampling);
  if (prompts.empty()) fail(errc::value, who, ": no prompts.");
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto n = static_cast<index_t>(prompts[i].ids.size());
    if (n == 0) fail(errc::value, who, ": prompt ", i, " has no tokens.");
    if (n + o.max_new_tokens > block_size)
      fail(errc::value, who, ": prompt ", i, " has ", n, " tokens; with max_new_tokens ",
           o.max_new_tokens, " it exceeds the model's block_size ", block_size, ".");
  }
}

/// Rows prompt + completion as teacher-forced inputs: ids = row[0, L-1), targets = row[1, L)
/// on completion positions (ignore elsewhere), mask 1 there; padded to the longest row.
struct rows {
  tensor<std::int32_t, shape<dyn, dyn>> ids, targets;
  tensor<float, shape<dyn, dyn>> mask;
  std::vector<index_t> first;  ///< per row: the column of its first completion token's log-prob
};

inline rows build_rows(std::span<const rl_prompt> prompts, std::span<const rl_sample> samples,
                       std::span<const index_t> which) {
  index_t Tn = 1;
  for (index_t s : which) {
    const auto& x = samples[static_cast<std::size_t>(s)];
    Tn = std::max(Tn, static_cast<index_t>(prompts[static_cast<std::size_t>(x.prompt)].ids.size() +
                                           x.tokens.size()) -
                          1);
  }
  const auto B = static_cast<index_t>(which.size());
  rows r{tensor<std::int32_t, shape<dyn, dyn>>(dyn_shape<2>(B, Tn)),
         tensor<std::int32_t, shape<dyn, dyn>>(dyn_shape<2>(B, Tn)),
         tensor<float, shape<dyn, dyn>>(dyn_shape<2>(B, Tn)),
         {}};
  r.ids.fill(0);
  r.targets.fill(ignore);
  r.mask.fill(0.f);
  for (index_t b = 0; b < B; ++b) {
    const auto& x = samples[static_cast<std::size_t>(which[static_cast<std::size_t>(b)])];
    const auto& p = prompts[static_cast<std::size_t>(x.prompt)].ids;
    const auto P = static_cast<index_t>(p.size()), n = static_cast<index_t>(x.tokens.size());
    auto tok = [&](index_t i) {
      return i < P ? p[static_cast<std::size_t>(i)] : x.tokens[static_cast<std::size_t>(i - P)];
    };
    for (index_t t = 0; t + 1 < P + n; ++t) {
      r.ids(b, t) = tok(t);
      if (t + 1 >= P) {
        r.targets(b, t) = tok(t + 1);
        r.mask(b, t) = 1.f;
      }
    }
    r.first.push_back(P - 1);
  }
  return r;
}

/// Per-token NLL (B, T) of -log softmax(logits / tau)[target], 0 at ignored targets.
template <class Cfg, class T>
auto tempered_nll(const nn::gpt<Cfg, T>& m, const rows& r, double tau, bool training) {
  cross_entropy_options ce;
  ce.ignore_index = ignore;
  auto h = m.hidden(r.ids, training);
  if (tau != 1.0) h = decltype(h)((h * (1.0 / tau)).data());
  return linear_cross_entropy<ce_reduction::none>(h, m.head_weight(), r.targets, ce);
}

}  // namespace detail::rl

/// group_size completions of every prompt sampled from `m` as it is (no gradients; see the file
/// comment). `stream` separates the draws of different calls (e.g. the training iteration).
/// Prompts of equal length run together, up to rollout_options::max_rows rows at a time.
/// Samples come prompt by prompt, rows in order: sample i belongs to prompt i / group_size.
template <class Cfg, class T>
std::vector<rl_sample> sample_completions(const nn::gpt<Cfg, T>& m,
                                          std::span<const rl_prompt> prompts,
                                          const rollout_options& o, std::uint64_t stream = 0) {
  constexpr const char* who = "tfm::train::sample_completions";
  detail::rl::check_rollout(who, o, m.config().block_size, prompts);
  no_grad ng;
  const double tau = logprob_temperature(o.sampling);
  const index_t G = o.group_size, V = m.config().vocab;
  auto is_stop = [&](std::int32_t t) {
    return std::find(o.stop_ids.begin(), o.stop_ids.end(), t) != o.stop_ids.end();
  };
  std::vector<rl_sample> out(prompts.size() * static_cast<std::size_t>(G));
  // Batches: prompts of one length, in order of first appearance, max_rows / G at a time.
  std::vector<std::vector<index_t>> batches;
  {
    std::vector<bool> done(prompts.size(), false);
    const index_t per = std::max<index_t>(1, o.max_rows / G);
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      if (done[p]) continue;
      std::vector<index_t> cur;
      for (std::size_t q = p; q < prompts.size(); ++q)
        if (!done[q] && prompts[q].ids.size() == prompts[p].ids.size()) {
          done[q] = true;
          cur.push_back(static_cast<index_t>(q));
          if (static_cast<index_t>(cur.size()) == per) {
            batches.push_back(std::move(cur));
            cur.clear();
          }
        }
      if (!cur.empty()) batches.push_back(std::move(cur));
    }
  }
  for (const auto& batch : batches) {
    const auto K = static_cast<index_t>(batch.size());
    const index_t rows = K * G;
    const auto P = static_cast<index_t>(prompts[static_cast<std::size_t>(batch[0])].ids.size());
    auto cache = shared_prefix_cache<T>::for_model(m, K, G);
    std::vector<infer::sampler> samplers;
    std::vector<rl_sample*> row(static_cast<std::size_t>(rows));
    for (index_t r = 0; r < rows; ++r) {
      const index_t p = batch[static_cast<std::size_t>(r / G)], g = r % G;
      infer::sampling_options so = o.sampling;
      so.seed = detail::rl::row_seed(o.sampling.seed, stream, p, g);
      samplers.emplace_back(so);
      rl_sample* s = &out[static_cast<std::size_t>(p * G + g)];
      s->prompt = p;
      row[static_cast<std::size_t>(r)] = s;
    }
    // The prompts once (K rows); only their last position's logits are computed.
    typename nn::gpt<Cfg, T>::ids_type x(dyn_shape<2>(K, P));
    for (index_t k = 0; k < K; ++k)
      for (index_t t = 0; t < P; ++t)
        x(k, t) = prompts[static_cast<std::size_t>(batch[static_cast<std::size_t>(k)])]
                      .ids[static_cast<std::size_t>(t)];
    auto h = m.hidden(x, false, 0, &cache);                             // (K, P, C)
    auto logits = tfm::linear(slice<1>(h, P - 1, P), m.head_weight());  // (K, 1, V)
    std::vector<std::int32_t> history;
    for (index_t n = 0; n < o.max_new_tokens; ++n) {
      bool any = false;
      for (index_t r = 0; r < rows; ++r) {
        rl_sample& s = *row[static_cast<std::size_t>(r)];
        if (s.finished) continue;
        const T* l = logits.value().data() + (n == 0 ? r / G : r) * V;
        // Penalties (if any) count the prompt and this row's completion so far.
        const auto& ids = prompts[static_cast<std::size_t>(s.prompt)].ids;
        history.assign(ids.begin(), ids.end());
        history.insert(history.end(), s.tokens.begin(), s.tokens.end());
        const std::int32_t tok = samplers[static_cast<std::size_t>(r)].sample(l, V, history).token;
        s.tokens.push_back(tok);
        s.logp.push_back(static_cast<float>(detail::rl::tempered_logprob(l, V, tok, tau)));
        s.finished = is_stop(tok);
        any = any || !s.finished;
      }
      if (!any || n + 1 == o.max_new_tokens) break;
      // Finished rows run their last token again; what they compute is not read.
      typename nn::gpt<Cfg, T>::ids_type step(dyn_shape<2>(rows, 1));
      for (index_t r = 0; r < rows; ++r)
        step(r, 0) = row[static_cast<std::size_t>(r)]->tokens.back();
      auto hs = m.hidden(step, false, P + n, &cache);  // (rows, 1, C)
      logits = tfm::linear(hs, m.head_weight());
    }
  }
  return out;
}

/// The log-probs of every sample's completion tokens under `m` by a teacher-forced forward
/// (rows padded to a common length, micro_batch rows per forward; 0: all at once), with the
/// temperature tau of the file comment. No gradients.
template <class Cfg, class T>
std::vector<std::vector<float>> completion_logprobs(const nn::gpt<Cfg, T>& m,
                                                    std::span<const rl_prompt> prompts,
                                                    std::span<const rl_sample> samples,
                                                    double tau = 1.0, index_t micro_batch = 0) {
  if (!(tau > 0) || !std::isfinite(tau))
    fail(errc::value, "tfm::train::completion_logprobs: tau must be finite and > 0, got ", tau,
         ".");
  no_grad ng;
  std::vector<std::vector<float>> out(samples.size());
  const auto N = static_cast<index_t>(samples.size());
  const index_t mb = micro_batch > 0 ? micro_batch : std::max<index_t>(N, 1);
  for (index_t s0 = 0; s0 < N; s0 += mb) {
    std::vector<index_t> which;
    for (index_t s = s0; s < std::min(N, s0 + mb); ++s) which.push_back(s);
    const auto r = detail::rl::build_rows(prompts, samples, which);
    auto nll = detail::rl::tempered_nll(m, r, tau, false);
    const index_t Tn = r.ids.extent(1);
    for (std::size_t b = 0; b < which.size(); ++b) {
      const auto& x = samples[static_cast<std::size_t>(which[b])];
      auto& v = out[static_cast<std::size_t>(which[b])];
      for (std::size_t j = 0; j < x.tokens.size(); ++j)
        v.push_back(-static_cast<float>(nll.value().data()[static_cast<index_t>(b) * Tn +
                                                           r.first[b] + static_cast<index_t>(j)]));
    }
  }
  return out;
}

/// completion_logprobs of the base model: `m`'s adapter detached, then `adapter` attached again.
template <class Cfg, class T>
std::vector<std::vector<float>> reference_logprobs(nn::gpt<Cfg, T>& m,
                                                   const nn::lora_adapter<T>& adapter,
                                                   std::span<const rl_prompt> prompts,
                                                   std::span<const rl_sample> samples,
                                                   double tau = 1.0, index_t micro_batch = 0) {
  nn::detach(m);
  struct reattach {
    nn::gpt<Cfg, T>& m;
    const nn::lora_adapter<T>& a;
    ~reattach() { nn::attach(m, a); }
  } guard{m, adapter};
  return completion_logprobs(m, prompts, samples, tau, micro_batch);
}

/// Rewards of held-out prompts: one completion each (greedy by default), their mean.
struct rl_eval_result {
  double mean_reward = 0;
  double mean_length = 0;  ///< completion tokens, stop id included
  std::vector<double> rewards;
  std::vector<std::string> completions;
};

template <class Cfg, class T>
rl_eval_result evaluate_rewards(const nn::gpt<Cfg, T>& m, std::span<const rl_prompt> prompts,
                                const reward_fn& reward, const decode_fn& decode,
                                rollout_options o) {
  if (!reward || !decode)
    fail(errc::value, "tfm::train::evaluate_rewards: the reward and decode functions are empty.");
  const auto samples = sample_completions(m, prompts, o);
  rl_eval_result r;
  for (const auto& s : samples) {
    const std::size_t n = s.tokens.size() - (s.finished ? 1 : 0);
    const std::string text = decode(std::span<const std::int32_t>(s.tokens.data(), n));
    const double v = reward(prompts[static_cast<std::size_t>(s.prompt)].text, text);
    if (!std::isfinite(v))
      fail(errc::value, "tfm::train::evaluate_rewards: the reward of prompt ", s.prompt, " is ", v,
           "; rewards must be finite.");
    r.rewards.push_back(v);
    r.completions.push_back(text);
    r.mean_reward += v;
    r.mean_length += static_cast<double>(s.tokens.size());
  }
  r.mean_reward /= static_cast<double>(samples.size());
  r.mean_length /= static_cast<double>(samples.size());
  return r;
}

// ---- GRPO -----------------------------------------------------------------------------------

struct grpo_config {
  rollout_options rollout;  ///< G (>= 2), max_new_tokens, sampling, stop ids
  grpo_options loss;        ///< clip_eps (+ clip_eps_high), beta, normalisation
  group_advantage_options advantages;
  index_t epochs = 1;       ///< mu: passes over each iteration's samples (>= 1)
  index_t minibatches = 1;  ///< optimizer steps per pass: the samples split into this many
  index_t micro_batch = 0;  ///< rows per forward/backward (gradient accumulation); 0: all
  double clip_grad = 1.0;   ///< max global gradient norm; 0: no clipping
  optim::lr_schedule schedule = optim::lr_schedule::constant(1e-4);  ///< by optimizer step
  optim::adam_options adam{};  ///< betas, eps, weight_decay (lr comes from the schedule)
  std::uint64_t seed = 0;      ///< the minibatch shuffles (sampling.seed drives the draws)
};

/// What one GRPO iteration logs.
struct grpo_step_result {
  std::int64_t iteration = 0;
  double reward_mean = 0, reward_std = 0;  ///< over all samples (population std)
  double zero_std_groups = 0;              ///< fraction of groups whose rewards are all equal
  double completion_length = 0;            ///< mean tokens per completion (stop id included)
  double finished = 0;                     ///< fraction of completions that ended with a stop id
  double loss = 0;                         ///< mean grpo_loss over the minibatch steps
  double kl = 0;                           ///< mean k3 KL(pi || ref) per token (NaN when beta == 0)
  double clip_fraction = 0;                ///< token fraction where the clipped term is the max
  double grad_norm = 0;                    ///< last minibatch's norm before clipping
  double lr = 0;                           ///< last minibatch's learning rate
  index_t optimizer_steps = 0;             ///< taken this iteration
  index_t skipped_steps = 0;               ///< not applied (non-finite gradients)
  double rollout_seconds = 0, reference_seconds = 0, train_seconds = 0;
  std::vector<rl_sample> samples;  ///< this iteration's rollouts with rewards and ref log-probs
};

/// Checks a grpo_config (tfm::value_error naming the field).
inline void validate(const grpo_config& c) {
  constexpr const char* who = "tfm::train::grpo";
  if (c.rollout.group_size < 2)
    fail(errc::value, who, ": rollout.group_size must be >= 2 (a group of 1 has no baseline), got ",
         c.rollout.group_size, ".");
  if (c.rollout.max_new_tokens < 1)
    fail(errc::value, who, ": rollout.max_new_tokens must be >= 1, got ", c.rollout.max_new_tokens,
         ".");
  infer::validate(c.rollout.sampling);
  if (c.epochs < 1) fail(errc::value, who, ": epochs must be >= 1, got ", c.epochs, ".");
  if (c.minibatches < 1)
    fail(errc::value, who, ": minibatches must be >= 1, got ", c.minibatches, ".");
  if (c.micro_batch < 0)
    fail(errc::value, who, ": micro_batch must be >= 0, got ", c.micro_batch, ".");
  if (!(c.clip_grad >= 0) || !std::isfinite(c.clip_grad))
    fail(errc::value, who, ": clip_grad must be finite and >= 0, got ", c.clip_grad, ".");
  if (!(c.loss.clip_eps > 0) || !std::isfinite(c.loss.clip_eps))
    fail(errc::value, who, ": loss.clip_eps must be finite and > 0, got ", c.loss.clip_eps, ".");
  if (!(c.loss.clip_eps_high >= 0) || !std::isfinite(c.loss.clip_eps_high))
    fail(errc::value, who, ": loss.clip_eps_high must be finite and >= 0, got ",
         c.loss.clip_eps_high, ".");
  if (!(c.loss.beta >= 0) || !std::isfinite(c.loss.beta))
    fail(errc::value, who, ": loss.beta must be finite and >= 0, got ", c.loss.beta, ".");
  if (!(c.advantages.eps >= 0))
    fail(errc::value, who, ": advantages.eps must be >= 0, got ", c.advantages.eps, ".");
}

/// GRPO on a LoRA policy: `model` with `adapter` attached is pi_theta, `model` without it pi_ref.
/// The trainer attaches the adapter, freezes the base and owns an AdamW optimizer on the
/// adapter's parameters. Model and adapter must outlive it.
template <class Cfg, class T>
class grpo_trainer {
 public:
  grpo_trainer(nn::gpt<Cfg, T>& model, nn::lora_adapter<T>& adapter, reward_fn reward,
               decode_fn decode, grpo_config cfg)
      : m_(&model),
        a_(&adapter),
        reward_(std::move(reward)),
        decode_(std::move(decode)),
        cfg_(std::move(cfg)),
        opt_(optim::adamw(adapter.parameters(), cfg_.adam)) {
    validate(cfg_);
    if (!reward_ || !decode_)
      fail(errc::value, "tfm::train::grpo: the reward and decode functions must not be empty.");
    nn::freeze(model);
    nn::attach(model, adapter);
  }

  const grpo_config& config() const noexcept { return cfg_; }
  optim::optimizer<T>& optimizer() noexcept { return opt_; }
  std::int64_t iteration() const noexcept { return iteration_; }
  std::int64_t optimizer_step() const noexcept { return step_; }

  /// One GRPO iteration (Algorithm 1's inner loop body) on `prompts`.
  grpo_step_result step(std::span<const rl_prompt> prompts) {
    using clock = std::chrono::steady_clock;
    auto secs = [](clock::time_point a) {
      return std::chrono::duration<double>(clock::now() - a).count();
    };
    grpo_step_result res;
    res.iteration = iteration_;
    const index_t G = cfg_.rollout.group_size;
    const double tau = logprob_temperature(cfg_.rollout.sampling);

    // 1. Rollouts from pi_theta_old (the adapter as it is now), no dropout.
    auto t0 = clock::now();
    a_->train(false);
    std::vector<rl_sample> samples =
        sample_completions(*m_, prompts, cfg_.rollout, static_cast<std::uint64_t>(iteration_));
    std::vector<double> rewards;
    for (auto& s : samples) {
      const std::size_t n = s.tokens.size() - (s.finished ? 1 : 0);
      const std::string text = decode_(std::span<const std::int32_t>(s.tokens.data(), n));
      s.reward = reward_(prompts[static_cast<std::size_t>(s.prompt)].text, text);
      if (!std::isfinite(s.reward))
        fail(errc::value, "tfm::train::grpo: the reward of a completion of prompt ", s.prompt,
             " is ", s.reward, "; rewards must be finite.");
      rewards.push_back(s.reward);
    }
    res.rollout_seconds = secs(t0);

    // 2. Reference log-probs (the base model), only with a KL term.
    t0 = clock::now();
    if (cfg_.loss.beta > 0) {
      auto ref = reference_logprobs(*m_, *a_, prompts, samples, tau, cfg_.micro_batch);
      for (std::size_t i = 0; i < samples.size(); ++i) samples[i].ref_logp = std::move(ref[i]);
    } else {
      for (auto& s : samples) s.ref_logp = s.logp;
    }
    res.reference_seconds = secs(t0);

    // 3. Group-normalised outcome advantages, and the logged figures.
    const std::vector<double> adv = group_advantages(rewards, G, cfg_.advantages);
    const auto N = static_cast<index_t>(samples.size());
    for (const auto& s : samples) {
      res.reward_mean += s.reward;
      res.completion_length += static_cast<double>(s.tokens.size());
      res.finished += s.finished ? 1.0 : 0.0;
    }
    res.reward_mean /= static_cast<double>(N);
    res.completion_length /= static_cast<double>(N);
    res.finished /= static_cast<double>(N);
    for (const auto& s : samples)
      res.reward_std += (s.reward - res.reward_mean) * (s.reward - res.reward_mean);
    res.reward_std = std::sqrt(res.reward_std / static_cast<double>(N));
    for (index_t g0 = 0; g0 < N; g0 += G) {
      bool same = true;
      for (index_t i = g0 + 1; i < g0 + G; ++i)
        same =
            same && rewards[static_cast<std::size_t>(i)] == rewards[static_cast<std::size_t>(g0)];
      res.zero_std_groups += same ? 1.0 : 0.0;
    }
    res.zero_std_groups /= static_cast<double>(N / G);

    // 4. mu epochs of minibatch steps on the clipped surrogate with the k3 KL.
    t0 = clock::now();
    a_->train(true);
    double kl_sum = 0, clip_sum = 0, tok_sum = 0, loss_sum = 0;
    std::vector<index_t> order(static_cast<std::size_t>(N));
    std::iota(order.begin(), order.end(), index_t(0));
    const index_t nmb = std::min(cfg_.minibatches, N);
    for (index_t e = 0; e < cfg_.epochs; ++e) {
      if (nmb > 1) shuffle(order, static_cast<std::uint64_t>(iteration_ * cfg_.epochs + e));
      for (index_t k = 0; k < nmb; ++k) {
        const index_t lo = N * k / nmb, hi = N * (k + 1) / nmb;
        const std::span<const index_t> mb(order.data() + lo, static_cast<std::size_t>(hi - lo));
        const auto st = minibatch_step(prompts, samples, adv, mb, tau);
        loss_sum += st.loss;
        kl_sum += st.kl_tokens;
        clip_sum += st.clip_tokens;
        tok_sum += st.tokens;
        res.grad_norm = st.grad_norm;
        res.lr = st.lr;
        ++res.optimizer_steps;
        res.skipped_steps += st.applied ? 0 : 1;
      }
    }
    a_->train(false);
    res.loss = loss_sum / static_cast<double>(res.optimizer_steps);
    res.kl = cfg_.loss.beta > 0 ? kl_sum / tok_sum : std::numeric_limits<double>::quiet_NaN();
    res.clip_fraction = clip_sum / tok_sum;
    res.train_seconds = secs(t0);
    res.samples = std::move(samples);
    ++iteration_;
    return res;
  }

 private:
  struct mb_stats {
    double loss = 0, kl_tokens = 0, clip_tokens = 0, tokens = 0, grad_norm = 0, lr = 0;
    bool applied = true;
  };

  void shuffle(std::vector<index_t>& v, std::uint64_t stream) const {
    const std::uint64_t key = cfg_.seed ^ (stream * 0xd1b54a32d192ed03ull) ^ 0x7270'6f6cull;
    for (std::size_t i = v.size(); i > 1; --i) {
      const auto j = static_cast<std::size_t>(uniform_double(key, i) * static_cast<double>(i));
      std::swap(v[i - 1], v[std::min(j, i - 1)]);
    }
  }

  /// One optimizer step on the samples `mb`, micro-batched: each micro-batch's grpo_loss is
  /// weighted by its share of the minibatch (rows for the sequence and fixed normalisations,
  /// tokens for the token one), so the accumulated gradient is that of the minibatch's loss.
  mb_stats minibatch_step(std::span<const rl_prompt> prompts, const std::vector<rl_sample>& samples,
                          const std::vector<double>& adv, std::span<const index_t> mb, double tau) {
    mb_stats st;
    st.lr = cfg_.schedule(step_);
    opt_.set_lr(st.lr);
    opt_.zero_grad();
    const auto M = static_cast<index_t>(mb.size());
    double mb_tokens = 0;
    for (index_t s : mb)
      mb_tokens += static_cast<double>(samples[static_cast<std::size_t>(s)].tokens.size());
    const index_t micro = cfg_.micro_batch > 0 ? cfg_.micro_batch : M;
    grpo_options lo = cfg_.loss;
    if (lo.norm == grpo_norm::fixed && lo.fixed_length == 0)
      lo.fixed_length = cfg_.rollout.max_new_tokens;  // one budget for every micro-batch
    for (index_t i0 = 0; i0 < M; i0 += micro) {
      const std::span<const index_t> which = mb.subspan(
          static_cast<std::size_t>(i0), static_cast<std::size_t>(std::min(micro, M - i0)));
      const auto r = detail::rl::build_rows(prompts, samples, which);
      const index_t B = r.ids.extent(0), Tn = r.ids.extent(1);
      tensor<double, shape<dyn, dyn>> old(dyn_shape<2>(B, Tn)), ref(dyn_shape<2>(B, Tn));
      tensor<double, shape<dyn>> a{dyn_shape<1>(B)};
      old.fill(0.0);
      ref.fill(0.0);
      double toks = 0;
      for (index_t b = 0; b < B; ++b) {
        const auto& x = samples[static_cast<std::size_t>(which[static_cast<std::size_t>(b)])];
        a(b) = adv[static_cast<std::size_t>(which[static_cast<std::size_t>(b)])];
        for (std::size_t j = 0; j < x.tokens.size(); ++j) {
          const index_t t = r.first[static_cast<std::size_t>(b)] + static_cast<index_t>(j);
          old(b, t) = x.logp[j];
          ref(b, t) = x.ref_logp[j];
        }
        toks += static_cast<double>(x.tokens.size());
      }
      auto nll = detail::rl::tempered_nll(*m_, r, tau, true);
      auto res = grpo_loss(-nll, old, ref, a, r.mask, lo);
      const double w = lo.norm == grpo_norm::token
                           ? toks / mb_tokens
                           : static_cast<double>(B) / static_cast<double>(M);
      st.loss += w * static_cast<double>(res.loss.value()());
      st.kl_tokens += res.kl * toks;
      st.clip_tokens += res.clip_fraction * toks;
      st.tokens += toks;
      (res.loss * w).backward();
    }
    if (cfg_.clip_grad > 0) {
      const auto c = opt_.step_clipped(cfg_.clip_grad);
      st.grad_norm = c.grad_norm;
      st.applied = c.applied;
    } else {
      st.grad_norm = std::numeric_limits<double>::quiet_NaN();
      st.applied = opt_.step();
    }
    ++step_;
    return st;
  }

  nn::gpt<Cfg, T>* m_;
  nn::lora_adapter<T>* a_;
  reward_fn reward_;
  decode_fn decode_;
  grpo_config cfg_;
  optim::optimizer<T> opt_;
  std::int64_t iteration_ = 0, step_ = 0;
};

// ---- PPO ------------------------------------------------------------------------------------

/// A scalar value head on the policy's final hidden states (TRL's ValueHead: a linear C -> 1),
/// V(s_t) = w . h_t + b; weight (1, C) and bias (1) start at 0.
template <class T>
struct value_head {
  var<T, dyn_shape<2>> weight;
  var<T, dyn_shape<1>> bias;

  explicit value_head(index_t n_embd) {
    if (n_embd <= 0)
      fail(errc::value, "tfm::train::value_head: n_embd must be positive, got ", n_embd, ".");
    tensor<T, dyn_shape<2>> w(dyn_shape<2>(1, n_embd));
    w.fill(T(0));
    tensor<T, dyn_shape<1>> b(dyn_shape<1>(1));
    b.fill(T(0));
    weight = var<T, dyn_shape<2>>(w, true);
    weight.set_name("v_head.weight");
    bias = var<T, dyn_shape<1>>(b, true);
    bias.set_name("v_head.bias");
  }
  nn::parameter_list<T> parameters() const {
    return {{weight.name(), weight.data(), true}, {bias.name(), bias.data(), true}};
  }
  /// h (B, T, C) -> values (B, T).
  template <class S>
  var<T, dyn_shape<2>> operator()(const var<T, S>& h) const {
    const index_t B = h.extent(0), Tn = h.extent(1);
    auto v = tfm::linear(h, weight, bias);  // (B, T, 1)
    return reshape(v, dyn_shape<2>(B, Tn));
  }
};

struct ppo_config {
  rollout_options rollout;  ///< samples per prompt (>= 1), max_new_tokens, sampling, stop ids
  ppo_options policy;       ///< clip_eps of the ratio
  double value_clip = 0.2;  ///< clip of the value loss (> 0; infinity: none)
  double vf_coef = 0.1;     ///< weight of the value loss (TRL's default)
  double kl_coef = 0.05;    ///< beta of the per-token KL penalty in the reward (TRL's default)
  kl_estimator kl = kl_estimator::k1;
  double gamma = 1.0, lambda = 0.95;  ///< GAE (TRL's defaults)
  bool whiten_rewards = false;        ///< TRL: masked_whiten(rewards, shift_mean = false)
  bool whiten_advantages = true;      ///< TRL: masked_whiten(advantages) over the batch
  index_t epochs = 4;                 ///< passes over each iteration's samples (TRL: 4)
  index_t minibatches = 1;
  index_t micro_batch = 0;
  double clip_grad = 1.0;
  optim::lr_schedule schedule = optim::lr_schedule::constant(1e-4);
  optim::adam_options adam{};
  std::uint64_t seed = 0;
};

struct ppo_step_result {
  std::int64_t iteration = 0;
  double reward_mean = 0, reward_std = 0;  ///< the callable's scores (population std)
  double kl = 0;                           ///< mean per-token k1 KL(pi_old || ref) of the rollouts
  double non_score_reward = 0;             ///< mean over samples of the summed KL penalties
  double completion_length = 0;
  double policy_loss = 0, value_loss = 0;  ///< means over the optimizer steps
  double clip_fraction = 0, value_clip_fraction = 0, approx_kl = 0;  ///< token means
  double grad_norm = 0, lr = 0;
  index_t optimizer_steps = 0, skipped_steps = 0;
  double rollout_seconds = 0, train_seconds = 0;
  std::vector<rl_sample> samples;
};

inline void validate(const ppo_config& c) {
  constexpr const char* who = "tfm::train::ppo";
  if (c.rollout.group_size < 1)
    fail(errc::value, who, ": rollout.group_size must be >= 1, got ", c.rollout.group_size, ".");
  if (c.rollout.max_new_tokens < 1)
    fail(errc::value, who, ": rollout.max_new_tokens must be >= 1, got ", c.rollout.max_new_tokens,
         ".");
  infer::validate(c.rollout.sampling);
  if (c.epochs < 1) fail(errc::value, who, ": epochs must be >= 1, got ", c.epochs, ".");
  if (c.minibatches < 1)
    fail(errc::value, who, ": minibatches must be >= 1, got ", c.minibatches, ".");
  if (c.micro_batch < 0)
    fail(errc::value, who, ": micro_batch must be >= 0, got ", c.micro_batch, ".");
  if (!(c.clip_grad >= 0) || !std::isfinite(c.clip_grad))
    fail(errc::value, who, ": clip_grad must be finite and >= 0, got ", c.clip_grad, ".");
  if (!(c.policy.clip_eps > 0) || !std::isfinite(c.policy.clip_eps))
    fail(errc::value, who, ": policy.clip_eps must be finite and > 0, got ", c.policy.clip_eps,
         ".");
  if (!(c.value_clip > 0))
    fail(errc::value, who, ": value_clip must be > 0, got ", c.value_clip, ".");
  if (!(c.vf_coef >= 0) || !std::isfinite(c.vf_coef))
    fail(errc::value, who, ": vf_coef must be finite and >= 0, got ", c.vf_coef, ".");
  if (!(c.kl_coef >= 0) || !std::isfinite(c.kl_coef))
    fail(errc::value, who, ": kl_coef must be finite and >= 0, got ", c.kl_coef, ".");
  if (!(c.gamma >= 0 && c.gamma <= 1) || !(c.lambda >= 0 && c.lambda <= 1))
    fail(errc::value, who, ": gamma and lambda must be in [0, 1], got ", c.gamma, " and ", c.lambda,
         ".");
}

/// PPO for language models (Ouyang et al. 2022, arXiv:2203.02155; Stiennon et al. 2020,
/// arXiv:2009.01325; the recipe of TRL's PPOTrainer): the LoRA policy with a value head on its
/// hidden states (shared trunk), the score of each completion at its last token plus a per-token
/// KL penalty to the base model (kl_penalized_rewards), GAE advantages and returns, whitening,
/// and `epochs` passes of clipped policy + vf_coef * clipped value loss. The optimizer holds the
/// adapter's and the value head's parameters.
template <class Cfg, class T>
class ppo_trainer {
 public:
  ppo_trainer(nn::gpt<Cfg, T>& model, nn::lora_adapter<T>& adapter, reward_fn reward,
              decode_fn decode, ppo_config cfg)
      : m_(&model),
        a_(&adapter),
        v_(model.config().n_embd),
        reward_(std::move(reward)),
        decode_(std::move(decode)),
        cfg_(std::move(cfg)),
        opt_(optim::adamw(joined(adapter.parameters(), v_.parameters()), cfg_.adam)) {
    validate(cfg_);
    if (!reward_ || !decode_)
      fail(errc::value, "tfm::train::ppo: the reward and decode functions must not be empty.");
    nn::freeze(model);
    nn::attach(model, adapter);
  }

  const value_head<T>& values() const noexcept { return v_; }
  std::int64_t iteration() const noexcept { return iteration_; }

  ppo_step_result step(std::span<const rl_prompt> prompts) {
    using clock = std::chrono::steady_clock;
    auto secs = [](clock::time_point a) {
      return std::chrono::duration<double>(clock::now() - a).count();
    };
    ppo_step_result res;
    res.iteration = iteration_;
    const double tau = logprob_temperature(cfg_.rollout.sampling);
    auto t0 = clock::now();
    a_->train(false);
    std::vector<rl_sample> samples =
        sample_completions(*m_, prompts, cfg_.rollout, static_cast<std::uint64_t>(iteration_));
    for (auto& s : samples) {
      const std::size_t n = s.tokens.size() - (s.finished ? 1 : 0);
      s.reward = reward_(prompts[static_cast<std::size_t>(s.prompt)].text,
                         decode_(std::span<const std::int32_t>(s.tokens.data(), n)));
      if (!std::isfinite(s.reward))
        fail(errc::value, "tfm::train::ppo: the reward of a completion of prompt ", s.prompt,
             " is ", s.reward, "; rewards must be finite.");
    }
    {
      auto ref = reference_logprobs(*m_, *a_, prompts, samples, tau, cfg_.micro_batch);
      for (std::size_t i = 0; i < samples.size(); ++i) samples[i].ref_logp = std::move(ref[i]);
    }
    const auto N = static_cast<index_t>(samples.size());
    std::vector<index_t> all(static_cast<std::size_t>(N));
    std::iota(all.begin(), all.end(), index_t(0));
    const auto R = detail::rl::build_rows(prompts, samples, all);
    const index_t Tn = R.ids.extent(1);
    const auto BT = static_cast<std::size_t>(N * Tn);
    // Old values V(s_t) at the positions that predict each completion token.
    std::vector<double> old_v(BT, 0.0), logp(BT, 0.0), ref(BT, 0.0), mask(BT, 0.0), score;
    {
      no_grad ng;
      const index_t mb = cfg_.micro_batch > 0 ? cfg_.micro_batch : N;
      for (index_t s0 = 0; s0 < N; s0 += mb) {
        const std::vector<index_t> which(all.begin() + s0, all.begin() + std::min(N, s0 + mb));
        const auto r = detail::rl::build_rows(prompts, samples, which);
        auto vals = v_(m_->hidden(r.ids, false));
        for (std::size_t b = 0; b < which.size(); ++b)
          for (std::size_t j = 0; j < samples[static_cast<std::size_t>(which[b])].tokens.size();
               ++j) {
            const index_t t = r.first[b] + static_cast<index_t>(j);
            old_v[static_cast<std::size_t>(which[b] * Tn + t)] =
                static_cast<double>(vals.value()(static_cast<index_t>(b), t));
          }
      }
    }
    for (index_t b = 0; b < N; ++b) {
      const auto& s = samples[static_cast<std::size_t>(b)];
      for (std::size_t j = 0; j < s.tokens.size(); ++j) {
        const auto i = static_cast<std::size_t>(b * Tn + R.first[static_cast<std::size_t>(b)]) + j;
        logp[i] = s.logp[j];
        ref[i] = s.ref_logp[j];
        mask[i] = 1.0;
      }
      score.push_back(s.reward);
    }
    res.rollout_seconds = secs(t0);

    // Rewards: score at the last token, -kl_coef KL per token; then GAE per row.
    std::vector<double> rewards =
        kl_penalized_rewards(score, logp, ref, mask, Tn, cfg_.kl_coef, cfg_.kl);
    for (std::size_t i = 0; i < BT; ++i)
      if (mask[i] != 0) {
        res.kl += logp[i] - ref[i];
        res.completion_length += 1;
      }
    res.kl /= res.completion_length;
    res.non_score_reward = -cfg_.kl_coef * res.kl * res.completion_length / static_cast<double>(N);
    res.completion_length /= static_cast<double>(N);
    if (cfg_.whiten_rewards && res.completion_length * static_cast<double>(N) >= 2) {
      rewards = whiten(rewards, mask, false);
      for (std::size_t i = 0; i < BT; ++i) rewards[i] *= mask[i];
    }
    std::vector<double> adv(BT, 0.0), ret(BT, 0.0);
    for (index_t b = 0; b < N; ++b) {
      const auto n = samples[static_cast<std::size_t>(b)].tokens.size();
      const auto o = static_cast<std::size_t>(b * Tn + R.first[static_cast<std::size_t>(b)]);
      const auto g = gae(std::span<const double>(rewards.data() + o, n),
                         std::span<const double>(old_v.data() + o, n), cfg_.gamma, cfg_.lambda);
      std::copy(g.advantages.begin(), g.advantages.end(),
                adv.begin() + static_cast<std::ptrdiff_t>(o));
      std::copy(g.returns.begin(), g.returns.end(), ret.begin() + static_cast<std::ptrdiff_t>(o));
    }
    if (cfg_.whiten_advantages && res.completion_length * static_cast<double>(N) >= 2) {
      adv = whiten(adv, mask, true);
      for (std::size_t i = 0; i < BT; ++i) adv[i] *= mask[i];
    }
    for (const auto& s : samples) res.reward_mean += s.reward;
    res.reward_mean /= static_cast<double>(N);
    for (const auto& s : samples)
      res.reward_std += (s.reward - res.reward_mean) * (s.reward - res.reward_mean);
    res.reward_std = std::sqrt(res.reward_std / static_cast<double>(N));

    // Epochs of minibatch steps.
    t0 = clock::now();
    a_->train(true);
    std::vector<index_t> order = all;
    const index_t nmb = std::min(cfg_.minibatches, N);
    double toks_all = 0, clip = 0, vclip = 0, akl = 0, pl = 0, vl = 0;
    for (index_t e = 0; e < cfg_.epochs; ++e) {
      if (nmb > 1) shuffle(order, static_cast<std::uint64_t>(iteration_ * cfg_.epochs + e));
      for (index_t k = 0; k < nmb; ++k) {
        const index_t lo = N * k / nmb, hi = N * (k + 1) / nmb;
        const std::span<const index_t> mbs(order.data() + lo, static_cast<std::size_t>(hi - lo));
        opt_.set_lr(res.lr = cfg_.schedule(step_));
        opt_.zero_grad();
        double mb_tokens = 0;
        for (index_t s : mbs)
          mb_tokens += static_cast<double>(samples[static_cast<std::size_t>(s)].tokens.size());
        const auto M = static_cast<index_t>(mbs.size());
        const index_t micro = cfg_.micro_batch > 0 ? cfg_.micro_batch : M;
        for (index_t i0 = 0; i0 < M; i0 += micro) {
          const auto which = mbs.subspan(static_cast<std::size_t>(i0),
                                         static_cast<std::size_t>(std::min(micro, M - i0)));
          const auto r = detail::rl::build_rows(prompts, samples, which);
          const index_t B = r.ids.extent(0), Tm = r.ids.extent(1);
          tensor<double, shape<dyn, dyn>> o_lp(dyn_shape<2>(B, Tm)), o_v(dyn_shape<2>(B, Tm)),
              a(dyn_shape<2>(B, Tm)), rt(dyn_shape<2>(B, Tm));
          o_lp.fill(0.0);
          o_v.fill(0.0);
          a.fill(0.0);
          rt.fill(0.0);
          double toks = 0;
          for (index_t b = 0; b < B; ++b) {
            const index_t sb = which[static_cast<std::size_t>(b)];
            const auto n = samples[static_cast<std::size_t>(sb)].tokens.size();
            for (std::size_t j = 0; j < n; ++j) {
              const index_t t = r.first[static_cast<std::size_t>(b)] + static_cast<index_t>(j);
              const auto i =
                  static_cast<std::size_t>(sb * Tn + R.first[static_cast<std::size_t>(sb)]) + j;
              o_lp(b, t) = logp[i];
              o_v(b, t) = old_v[i];
              a(b, t) = adv[i];
              rt(b, t) = ret[i];
            }
            toks += static_cast<double>(n);
          }
          auto h = m_->hidden(r.ids, true);
          auto hs = tau != 1.0 ? decltype(h)((h * (1.0 / tau)).data()) : h;
          cross_entropy_options ce;
          ce.ignore_index = detail::rl::ignore;
          auto nll = linear_cross_entropy<ce_reduction::none>(hs, m_->head_weight(), r.targets, ce);
          auto p = ppo_policy_loss(-nll, o_lp, a, r.mask, cfg_.policy);
          auto v = ppo_value_loss(v_(h), o_v, rt, r.mask, cfg_.value_clip);
          const double w = toks / mb_tokens;
          pl += w * static_cast<double>(p.loss.value()());
          vl += w * static_cast<double>(v.loss.value()());
          clip += p.clip_fraction * toks;
          vclip += v.clip_fraction * toks;
          akl += p.approx_kl * toks;
          toks_all += toks;
          ((p.loss + v.loss * cfg_.vf_coef) * w).backward();
        }
        if (cfg_.clip_grad > 0) {
          const auto c = opt_.step_clipped(cfg_.clip_grad);
          res.grad_norm = c.grad_norm;
          res.skipped_steps += c.applied ? 0 : 1;
        } else {
          res.grad_norm = std::numeric_limits<double>::quiet_NaN();
          res.skipped_steps += opt_.step() ? 0 : 1;
        }
        ++step_;
        ++res.optimizer_steps;
      }
    }
    a_->train(false);
    res.policy_loss = pl / static_cast<double>(res.optimizer_steps);
    res.value_loss = vl / static_cast<double>(res.optimizer_steps);
    res.clip_fraction = clip / toks_all;
    res.value_clip_fraction = vclip / toks_all;
    res.approx_kl = akl / toks_all;
    res.train_seconds = secs(t0);
    res.samples = std::move(samples);
    ++iteration_;
    return res;
  }

 private:
  static nn::parameter_list<T> joined(nn::parameter_list<T> a, const nn::parameter_list<T>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
  void shuffle(std::vector<index_t>& v, std::uint64_t stream) const {
    const std::uint64_t key = cfg_.seed ^ (stream * 0xd1b54a32d192ed03ull) ^ 0x7070'6f00ull;
    for (std::size_t i = v.size(); i > 1; --i) {
      const auto j = static_cast<std::size_t>(uniform_double(key, i) * static_cast<double>(i));
      std::swap(v[i - 1], v[std::min(j, i - 1)]);
    }
  }

  nn::gpt<Cfg, T>* m_;
  nn::lora_adapter<T>* a_;
  value_head<T> v_;
  reward_fn reward_;
  decode_fn decode_;
  ppo_config cfg_;
  optim::optimizer<T> opt_;
  std::int64_t iteration_ = 0, step_ = 0;
};

}  // namespace train
TFM_END_NAMESPACE
