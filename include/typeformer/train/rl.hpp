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
//   Both trainers share one mechanism (detail::rl::trainer_core): the rollouts and their
//   rewards, the reference pass, the epochs x minibatches x micro-batches loop ending each
//   minibatch in train::apply_update (clipping, the curve point), and the checkpoints.
//
// CHECKPOINT AND RESUME
//   tr.save_checkpoint(path) writes atomically (train::save_training_state) the trainable
//   parameters (the adapter's A and B, PPO's value head), AdamW's state, the optimizer-step
//   counter with its curve, the model's and the adapter's dropout counters and the iteration;
//   tr.load_checkpoint(path) on a trainer built with the same config restores them. Rollouts
//   and minibatch shuffles are counter-based draws keyed by (seed, iteration), so the resumed
//   run equals the uninterrupted one bitwise when the caller gives each iteration() the same
//   prompts (tested for GRPO and PPO).
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
#include "typeformer/train/trainer.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <tuple>
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

/// Per-token NLL (B, T) of -log softmax(h / tau . head)[target], 0 at ignored targets, from the
/// model's final hidden states h (B, T, C). A head held in bf16/NF4 (QLoRA's quantized
/// embedding, gpt::head_rows) is read chunk by chunk, as gpt::loss does.
template <class Cfg, class T, class H>
auto tempered_nll(const nn::gpt<Cfg, T>& m, const H& h, const rows& r, double tau) {
  cross_entropy_options ce;
  ce.ignore_index = ignore;
  const H hs = tau != 1.0 ? H((h * (1.0 / tau)).data()) : h;
  if (m.head_rows())
    return linear_cross_entropy<ce_reduction::none>(hs, m.head_rows(), r.targets, ce);
  return linear_cross_entropy<ce_reduction::none>(hs, m.head_weight(), r.targets, ce);
}

/// Per-token NLL (B, T) of -log softmax(logits / tau)[target], 0 at ignored targets.
template <class Cfg, class T>
auto tempered_nll(const nn::gpt<Cfg, T>& m, const rows& r, double tau, bool training) {
  return tempered_nll(m, m.hidden(r.ids, training), r, tau);
}

/// A (B, T) tensor of constants for the rows r of samples `which`: value(s, j) at the position of
/// sample s's completion token j (its log-prob's column), 0 elsewhere.
template <class F>
tensor<double, shape<dyn, dyn>> per_token(const rows& r, std::span<const index_t> which,
                                          std::span<const rl_sample> samples, F&& value) {
  const index_t B = r.ids.extent(0), Tn = r.ids.extent(1);
  tensor<double, shape<dyn, dyn>> out(dyn_shape<2>(B, Tn));
  out.fill(0.0);
  for (index_t b = 0; b < B; ++b) {
    const index_t s = which[static_cast<std::size_t>(b)];
    const auto n = samples[static_cast<std::size_t>(s)].tokens.size();
    for (std::size_t j = 0; j < n; ++j)
      out(b, r.first[static_cast<std::size_t>(b)] + static_cast<index_t>(j)) = value(s, j);
  }
  return out;
}

/// Sets every sample's reward: `reward` of its prompt's text and its completion decoded without
/// the stop id (a non-finite reward is a tfm::value_error). Returns the decoded completions.
inline std::vector<std::string> score_samples(const char* who, const reward_fn& reward,
                                              const decode_fn& decode,
                                              std::span<const rl_prompt> prompts,
                                              std::span<rl_sample> samples) {
  std::vector<std::string> texts;
  for (auto& s : samples) {
    const std::size_t n = s.tokens.size() - (s.finished ? 1 : 0);
    texts.push_back(decode(std::span<const std::int32_t>(s.tokens.data(), n)));
    s.reward = reward(prompts[static_cast<std::size_t>(s.prompt)].text, texts.back());
    if (!std::isfinite(s.reward))
      fail(errc::value, who, ": the reward of a completion of prompt ", s.prompt, " is ", s.reward,
           "; rewards must be finite.");
  }
  return texts;
}

/// The mean and population standard deviation of the samples' rewards.
inline std::pair<double, double> reward_moments(std::span<const rl_sample> samples) {
  double mean = 0, var = 0;
  for (const auto& s : samples) mean += s.reward;
  mean /= static_cast<double>(samples.size());
  for (const auto& s : samples) var += (s.reward - mean) * (s.reward - mean);
  return {mean, std::sqrt(var / static_cast<double>(samples.size()))};
}

/// The options GRPO and PPO share, checked alike (tfm::value_error naming the field).
inline void check_updates(const char* who, const rollout_options& r, index_t min_group,
                          index_t epochs, index_t minibatches, index_t micro_batch,
                          double clip_grad) {
  if (r.group_size < min_group)
    fail(errc::value, who, ": rollout.group_size must be >= ", min_group,
         min_group > 1 ? " (a group of 1 has no baseline)" : "", ", got ", r.group_size, ".");
  if (r.max_new_tokens < 1)
    fail(errc::value, who, ": rollout.max_new_tokens must be >= 1, got ", r.max_new_tokens, ".");
  infer::validate(r.sampling);
  if (epochs < 1) fail(errc::value, who, ": epochs must be >= 1, got ", epochs, ".");
  if (minibatches < 1) fail(errc::value, who, ": minibatches must be >= 1, got ", minibatches, ".");
  if (micro_batch < 0) fail(errc::value, who, ": micro_batch must be >= 0, got ", micro_batch, ".");
  if (!(clip_grad >= 0) || !std::isfinite(clip_grad))
    fail(errc::value, who, ": clip_grad must be finite and >= 0, got ", clip_grad, ".");
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
  const auto head = m.evaluation_head();  // rollouts need no gradient
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
    auto h = m.hidden(x, false, 0, &cache);                  // (K, P, C)
    auto logits = tfm::linear(slice<1>(h, P - 1, P), head);  // (K, 1, V)
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
      logits = tfm::linear(hs, head);
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
  auto samples = sample_completions(m, prompts, o);
  rl_eval_result r;
  r.completions =
      detail::rl::score_samples("tfm::train::evaluate_rewards", reward, decode, prompts, samples);
  for (const auto& s : samples) {
    r.rewards.push_back(s.reward);
    r.mean_reward += s.reward;
    r.mean_length += static_cast<double>(s.tokens.size());
  }
  r.mean_reward /= static_cast<double>(samples.size());
  r.mean_length /= static_cast<double>(samples.size());
  return r;
}

// ---- what GRPO and PPO share ----------------------------------------------------------------

namespace detail::rl {

/// How one iteration's samples become optimizer steps: `epochs` passes, each over `minibatches`
/// minibatches of a shuffled order (seed, salt, iteration and pass give the shuffle), each one
/// optimizer step accumulated over micro-batches of `micro_batch` rows (0: the whole minibatch).
struct update_plan {
  index_t epochs = 1, minibatches = 1, micro_batch = 0;
  double clip_grad = 1.0;
  const optim::lr_schedule* schedule = nullptr;
  std::uint64_t seed = 0, salt = 0;
};

/// What the updates of one iteration log.
struct update_log {
  double grad_norm = 0, lr = 0;  ///< the last step's
  index_t optimizer_steps = 0, skipped_steps = 0;
};

/// The state and mechanism of an RL trainer on a LoRA policy, shared by grpo_trainer and
/// ppo_trainer: the model and adapter (attached, base frozen), the reward and decode functions,
/// the trainable parameters with their AdamW optimizer, the iteration counter and the
/// training_state (optimizer steps, the per-step curve); rollouts, reference log-probs, the
/// minibatch updates, and checkpoints.
template <class Cfg, class T>
class trainer_core {
 public:
  trainer_core(const char* who, nn::gpt<Cfg, T>& model, nn::lora_adapter<T>& adapter,
               reward_fn reward, decode_fn decode, nn::parameter_list<T> trainable,
               const optim::adam_options& adam)
      : who_(who),
        m(&model),
        a(&adapter),
        reward_(std::move(reward)),
        decode_(std::move(decode)),
        params(std::move(trainable)),
        opt(optim::adamw(params, adam)) {
    if (!reward_ || !decode_)
      fail(errc::value, who, ": the reward and decode functions must not be empty.");
    nn::freeze(model);
    nn::attach(model, adapter);
  }

  /// This iteration's rollouts from the policy as it is (no dropout), with their rewards.
  std::vector<rl_sample> rollouts(std::span<const rl_prompt> prompts, const rollout_options& o) {
    a->train(false);
    std::vector<rl_sample> samples =
        sample_completions(*m, prompts, o, static_cast<std::uint64_t>(iteration));
    score_samples(who_, reward_, decode_, prompts, samples);
    return samples;
  }

  /// Fills every sample's ref_logp from the base model.
  void reference(std::span<const rl_prompt> prompts, std::vector<rl_sample>& samples, double tau,
                 index_t micro_batch) {
    auto ref = reference_logprobs(*m, *a, prompts, samples, tau, micro_batch);
    for (std::size_t i = 0; i < samples.size(); ++i) samples[i].ref_logp = std::move(ref[i]);
  }

  /// The optimizer steps of one iteration (update_plan), the adapter in training mode. For each
  /// micro-batch, loss(which, M, mb_tokens) returns the scalar whose gradient is accumulated
  /// (the micro-batch's loss weighted by its share of the minibatch): `which` are its samples, M
  /// the minibatch's sample count, mb_tokens its completion tokens. after_step() runs after each
  /// optimizer step. Each step goes through train::apply_update (clipping, the curve point).
  template <class Loss, class After>
  update_log update(const update_plan& p, std::span<const rl_sample> samples, Loss&& loss,
                    After&& after_step) {
    update_log log;
    const auto N = static_cast<index_t>(samples.size());
    a->train(true);
    std::vector<index_t> order(static_cast<std::size_t>(N));
    std::iota(order.begin(), order.end(), index_t(0));
    const index_t nmb = std::min(p.minibatches, N);
    for (index_t e = 0; e < p.epochs; ++e) {
      if (nmb > 1) {
        const auto stream = static_cast<std::uint64_t>(iteration * p.epochs + e);
        shuffle(order, p.seed ^ (stream * 0xd1b54a32d192ed03ull) ^ p.salt);
      }
      for (index_t k = 0; k < nmb; ++k) {
        const index_t lo = N * k / nmb, hi = N * (k + 1) / nmb;
        const std::span<const index_t> mb(order.data() + lo, static_cast<std::size_t>(hi - lo));
        log.lr = (*p.schedule)(state.step);
        opt.set_lr(log.lr);
        opt.zero_grad();
        const auto M = static_cast<index_t>(mb.size());
        double mb_tokens = 0, mb_loss = 0;
        for (index_t s : mb)
          mb_tokens += static_cast<double>(samples[static_cast<std::size_t>(s)].tokens.size());
        const index_t micro = p.micro_batch > 0 ? p.micro_batch : M;
        for (index_t i0 = 0; i0 < M; i0 += micro) {
          auto l = loss(mb.subspan(static_cast<std::size_t>(i0),
                                   static_cast<std::size_t>(std::min(micro, M - i0))),
                        M, mb_tokens);
          mb_loss += static_cast<double>(l.value()());
          l.backward();
        }
        const auto u = apply_update(opt, p.clip_grad, log.lr, mb_loss, state);
        log.grad_norm = u.grad_norm;
        log.skipped_steps += u.applied ? 0 : 1;
        ++log.optimizer_steps;
        after_step();
      }
    }
    a->train(false);
    return log;
  }

  /// Writes the run's state to `path` atomically (train::save_training_state): the trainable
  /// parameters, the optimizer's moments and step count, the optimizer-step counter and curve,
  /// the model's and the adapter's dropout counters, and meta "rl.method" and "rl.iteration".
  /// Everything else a step draws (rollouts, shuffles) derives from the config's seeds and the
  /// iteration, so a trainer built with the same config and loaded from this file continues
  /// the run bitwise when given the same prompts.
  void save(const std::string& path, const char* method) const {
    training_state st = state;
    st.dropout_offset = m->dropout_offset();
    st.meta["rl.method"] = method;
    st.meta["rl.iteration"] = std::to_string(iteration);
    st.meta["rl.lora_dropout_offset"] = std::to_string(a->state->offset);
    save_training_state(path, params, opt, st);
  }

  /// Restores what save wrote. A file of another method, with other parameters, or damaged is
  /// a tfm::parse_error and changes nothing.
  void load(const std::string& path, const char* method) {
    const training_state peek = read_training_state(path);
    auto meta = [&](const char* key) -> const std::string& {
      const auto it = peek.meta.find(key);
      if (it == peek.meta.end())
        fail(errc::parse, who_, ": '", path, "' has no '", key, "'; it is not an RL checkpoint.");
      return it->second;
    };
    if (meta("rl.method") != method)
      fail(errc::parse, who_, ": '", path, "' is a checkpoint of ", meta("rl.method"), ", not ",
           method, ".");
    auto number = [&](const char* key) {
      const std::string& s = meta(key);
      std::uint64_t v = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || end != s.data() + s.size())
        fail(errc::parse, who_, ": '", path, "' has ", key, " '", s, "', not a count.");
      return v;
    };
    const std::uint64_t it = number("rl.iteration"), lora_offset = number("rl.lora_dropout_offset");
    training_state st = load_training_state(path, params, opt);
    st.meta.erase("rl.method");
    st.meta.erase("rl.iteration");
    st.meta.erase("rl.lora_dropout_offset");
    m->set_dropout_offset(st.dropout_offset);
    a->state->offset = lora_offset;
    iteration = static_cast<std::int64_t>(it);
    state = std::move(st);
  }

  const char* who_;
  nn::gpt<Cfg, T>* m;
  nn::lora_adapter<T>* a;
  reward_fn reward_;
  decode_fn decode_;
  nn::parameter_list<T> params;
  optim::optimizer<T> opt;
  std::int64_t iteration = 0;
  training_state state;  ///< state.step: optimizer steps taken; state.curve: one point each

 private:
  static void shuffle(std::vector<index_t>& v, std::uint64_t key) {
    for (std::size_t i = v.size(); i > 1; --i) {
      const auto j = static_cast<std::size_t>(uniform_double(key, i) * static_cast<double>(i));
      std::swap(v[i - 1], v[std::min(j, i - 1)]);
    }
  }
};

}  // namespace detail::rl

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
  detail::rl::check_updates(who, c.rollout, 2, c.epochs, c.minibatches, c.micro_batch, c.clip_grad);
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

namespace detail::rl {
template <class C>
C validated(C c) {
  validate(c);
  return c;
}
}  // namespace detail::rl

/// GRPO on a LoRA policy: `model` with `adapter` attached is pi_theta, `model` without it pi_ref.
/// The trainer attaches the adapter, freezes the base and owns an AdamW optimizer on the
/// adapter's parameters. Model and adapter must outlive it.
template <class Cfg, class T>
class grpo_trainer {
 public:
  grpo_trainer(nn::gpt<Cfg, T>& model, nn::lora_adapter<T>& adapter, reward_fn reward,
               decode_fn decode, grpo_config cfg)
      : cfg_(detail::rl::validated(std::move(cfg))),
        core_("tfm::train::grpo", model, adapter, std::move(reward), std::move(decode),
              adapter.parameters(), cfg_.adam) {}

  const grpo_config& config() const noexcept { return cfg_; }
  optim::optimizer<T>& optimizer() noexcept { return core_.opt; }
  std::int64_t iteration() const noexcept { return core_.iteration; }
  std::int64_t optimizer_step() const noexcept { return core_.state.step; }
  /// Optimizer steps, the curve (one point per step: lr, the minibatch's loss), dropout counters.
  const training_state& state() const noexcept { return core_.state; }

  /// Checkpoint and resume (detail::rl::trainer_core::save): the adapter, AdamW, the counters.
  /// A trainer built like this one and loaded continues the run bitwise; the caller gives the
  /// same prompts for each iteration() as the uninterrupted run would have.
  void save_checkpoint(const std::string& path) const { core_.save(path, "grpo"); }
  void load_checkpoint(const std::string& path) { core_.load(path, "grpo"); }

  /// One GRPO iteration (Algorithm 1's inner loop body) on `prompts`.
  grpo_step_result step(std::span<const rl_prompt> prompts) {
    using clock = std::chrono::steady_clock;
    auto secs = [](clock::time_point a) {
      return std::chrono::duration<double>(clock::now() - a).count();
    };
    grpo_step_result res;
    res.iteration = core_.iteration;
    const index_t G = cfg_.rollout.group_size;
    const double tau = logprob_temperature(cfg_.rollout.sampling);

    // 1. Rollouts from pi_theta_old (the adapter as it is now), no dropout.
    auto t0 = clock::now();
    std::vector<rl_sample> samples = core_.rollouts(prompts, cfg_.rollout);
    std::vector<double> rewards;
    for (const auto& s : samples) rewards.push_back(s.reward);
    res.rollout_seconds = secs(t0);

    // 2. Reference log-probs (the base model), only with a KL term.
    t0 = clock::now();
    if (cfg_.loss.beta > 0)
      core_.reference(prompts, samples, tau, cfg_.micro_batch);
    else
      for (auto& s : samples) s.ref_logp = s.logp;
    res.reference_seconds = secs(t0);

    // 3. Group-normalised outcome advantages, and the logged figures.
    const std::vector<double> adv = group_advantages(rewards, G, cfg_.advantages);
    const auto N = static_cast<index_t>(samples.size());
    std::tie(res.reward_mean, res.reward_std) = detail::rl::reward_moments(samples);
    for (const auto& s : samples) {
      res.completion_length += static_cast<double>(s.tokens.size());
      res.finished += s.finished ? 1.0 : 0.0;
    }
    res.completion_length /= static_cast<double>(N);
    res.finished /= static_cast<double>(N);
    for (index_t g0 = 0; g0 < N; g0 += G) {
      bool same = true;
      for (index_t i = g0 + 1; i < g0 + G; ++i)
        same =
            same && rewards[static_cast<std::size_t>(i)] == rewards[static_cast<std::size_t>(g0)];
      res.zero_std_groups += same ? 1.0 : 0.0;
    }
    res.zero_std_groups /= static_cast<double>(N / G);

    // 4. mu epochs of minibatch steps on the clipped surrogate with the k3 KL. Each
    // micro-batch's grpo_loss is weighted by its share of the minibatch (rows for the sequence
    // and fixed normalisations, tokens for the token one), so the accumulated gradient is that
    // of the minibatch's loss.
    t0 = clock::now();
    grpo_options lo = cfg_.loss;
    if (lo.norm == grpo_norm::fixed && lo.fixed_length == 0)
      lo.fixed_length = cfg_.rollout.max_new_tokens;  // one budget for every micro-batch
    struct sums {
      double loss = 0, kl = 0, clip = 0, tokens = 0;
    } mb, all;  // this minibatch's, the iteration's
    const std::span<const rl_sample> ss(samples);
    const auto log = core_.update(
        plan(), ss,
        [&](std::span<const index_t> which, index_t M, double mb_tokens) {
          const auto r = detail::rl::build_rows(prompts, ss, which);
          const index_t B = r.ids.extent(0);
          const auto old = detail::rl::per_token(r, which, ss, [&](index_t s, std::size_t j) {
            return static_cast<double>(samples[static_cast<std::size_t>(s)].logp[j]);
          });
          const auto ref = detail::rl::per_token(r, which, ss, [&](index_t s, std::size_t j) {
            return static_cast<double>(samples[static_cast<std::size_t>(s)].ref_logp[j]);
          });
          tensor<double, shape<dyn>> a{dyn_shape<1>(B)};
          double toks = 0;
          for (index_t b = 0; b < B; ++b) {
            const auto s = static_cast<std::size_t>(which[static_cast<std::size_t>(b)]);
            a(b) = adv[s];
            toks += static_cast<double>(samples[s].tokens.size());
          }
          auto nll = detail::rl::tempered_nll(*core_.m, r, tau, true);
          auto l = grpo_loss(-nll, old, ref, a, r.mask, lo);
          const double w = lo.norm == grpo_norm::token
                               ? toks / mb_tokens
                               : static_cast<double>(B) / static_cast<double>(M);
          mb.loss += w * static_cast<double>(l.loss.value()());
          mb.kl += l.kl * toks;
          mb.clip += l.clip_fraction * toks;
          mb.tokens += toks;
          return l.loss * w;
        },
        [&] {
          all.loss += mb.loss;
          all.kl += mb.kl;
          all.clip += mb.clip;
          all.tokens += mb.tokens;
          mb = {};
        });
    res.grad_norm = log.grad_norm;
    res.lr = log.lr;
    res.optimizer_steps = log.optimizer_steps;
    res.skipped_steps = log.skipped_steps;
    res.loss = all.loss / static_cast<double>(res.optimizer_steps);
    res.kl = cfg_.loss.beta > 0 ? all.kl / all.tokens : std::numeric_limits<double>::quiet_NaN();
    res.clip_fraction = all.clip / all.tokens;
    res.train_seconds = secs(t0);
    res.samples = std::move(samples);
    ++core_.iteration;
    return res;
  }

 private:
  detail::rl::update_plan plan() const {
    return {cfg_.epochs,    cfg_.minibatches, cfg_.micro_batch, cfg_.clip_grad,
            &cfg_.schedule, cfg_.seed,        0x7270'6f6cull};
  }

  grpo_config cfg_;
  detail::rl::trainer_core<Cfg, T> core_;
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

/// What one PPO iteration logs.
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
  /// Per sample, per completion token (as samples[i].tokens): the value head's V(s_t) before the
  /// updates, the advantages (after whitening when whiten_advantages) and the returns
  /// (advantage + value, before whitening) the value loss fits.
  std::vector<std::vector<double>> values, advantages, returns;
};

inline void validate(const ppo_config& c) {
  constexpr const char* who = "tfm::train::ppo";
  detail::rl::check_updates(who, c.rollout, 1, c.epochs, c.minibatches, c.micro_batch, c.clip_grad);
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
      : cfg_(detail::rl::validated(std::move(cfg))),
        v_(model.config().n_embd),
        core_("tfm::train::ppo", model, adapter, std::move(reward), std::move(decode),
              joined(adapter.parameters(), v_.parameters()), cfg_.adam) {}

  /// The value head (its parameters() share storage with the trainer's).
  const value_head<T>& values() const noexcept { return v_; }
  const ppo_config& config() const noexcept { return cfg_; }
  optim::optimizer<T>& optimizer() noexcept { return core_.opt; }
  std::int64_t iteration() const noexcept { return core_.iteration; }
  std::int64_t optimizer_step() const noexcept { return core_.state.step; }
  /// Optimizer steps, the curve (one point per step: lr, the minibatch's policy + vf_coef *
  /// value loss), dropout counters.
  const training_state& state() const noexcept { return core_.state; }

  /// Checkpoint and resume as grpo_trainer's; the file holds the value head too.
  void save_checkpoint(const std::string& path) const { core_.save(path, "ppo"); }
  void load_checkpoint(const std::string& path) { core_.load(path, "ppo"); }

  ppo_step_result step(std::span<const rl_prompt> prompts) {
    using clock = std::chrono::steady_clock;
    auto secs = [](clock::time_point a) {
      return std::chrono::duration<double>(clock::now() - a).count();
    };
    ppo_step_result res;
    res.iteration = core_.iteration;
    const double tau = logprob_temperature(cfg_.rollout.sampling);
    auto t0 = clock::now();
    std::vector<rl_sample> samples = core_.rollouts(prompts, cfg_.rollout);
    core_.reference(prompts, samples, tau, cfg_.micro_batch);
    const std::span<const rl_sample> ss(samples);
    const auto N = static_cast<index_t>(samples.size());
    std::vector<index_t> all(static_cast<std::size_t>(N));
    std::iota(all.begin(), all.end(), index_t(0));
    const auto R = detail::rl::build_rows(prompts, ss, all);
    const index_t Tn = R.ids.extent(1);
    const auto BT = static_cast<std::size_t>(N * Tn);
    // Per-token quantities in the (N, Tn) layout of R; flat(s, j): sample s's token j.
    auto flat = [&](index_t s, std::size_t j) {
      return static_cast<std::size_t>(s * Tn + R.first[static_cast<std::size_t>(s)]) + j;
    };
    // Old values V(s_t) at the positions that predict each completion token.
    std::vector<double> old_v(BT, 0.0), logp(BT, 0.0), ref(BT, 0.0), mask(BT, 0.0), score;
    {
      no_grad ng;
      const index_t mb = cfg_.micro_batch > 0 ? cfg_.micro_batch : N;
      for (index_t s0 = 0; s0 < N; s0 += mb) {
        const std::vector<index_t> which(all.begin() + s0, all.begin() + std::min(N, s0 + mb));
        const auto r = detail::rl::build_rows(prompts, ss, which);
        auto vals = v_(core_.m->hidden(r.ids, false));
        for (std::size_t b = 0; b < which.size(); ++b)
          for (std::size_t j = 0; j < samples[static_cast<std::size_t>(which[b])].tokens.size();
               ++j)
            old_v[flat(which[b], j)] = static_cast<double>(
                vals.value()(static_cast<index_t>(b), r.first[b] + static_cast<index_t>(j)));
      }
    }
    for (index_t b = 0; b < N; ++b) {
      const auto& s = samples[static_cast<std::size_t>(b)];
      for (std::size_t j = 0; j < s.tokens.size(); ++j) {
        logp[flat(b, j)] = s.logp[j];
        ref[flat(b, j)] = s.ref_logp[j];
        mask[flat(b, j)] = 1.0;
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
      const auto o = flat(b, 0);
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
    std::tie(res.reward_mean, res.reward_std) = detail::rl::reward_moments(ss);
    for (index_t b = 0; b < N; ++b) {
      const auto o = static_cast<std::ptrdiff_t>(flat(b, 0));
      const auto n =
          static_cast<std::ptrdiff_t>(samples[static_cast<std::size_t>(b)].tokens.size());
      res.values.emplace_back(old_v.begin() + o, old_v.begin() + o + n);
      res.advantages.emplace_back(adv.begin() + o, adv.begin() + o + n);
      res.returns.emplace_back(ret.begin() + o, ret.begin() + o + n);
    }

    // Epochs of minibatch steps on the clipped policy loss + vf_coef * the clipped value loss,
    // each micro-batch weighted by its share of the minibatch's tokens.
    t0 = clock::now();
    double toks_all = 0, clip = 0, vclip = 0, akl = 0, pl = 0, vl = 0;
    const auto log = core_.update(
        plan(), ss,
        [&](std::span<const index_t> which, index_t, double mb_tokens) {
          const auto r = detail::rl::build_rows(prompts, ss, which);
          auto at = [&](const std::vector<double>& v) {
            return detail::rl::per_token(r, which, ss,
                                         [&](index_t s, std::size_t j) { return v[flat(s, j)]; });
          };
          const auto o_lp = at(logp), o_v = at(old_v), a = at(adv), rt = at(ret);
          double toks = 0;
          for (index_t s : which)
            toks += static_cast<double>(samples[static_cast<std::size_t>(s)].tokens.size());
          auto h = core_.m->hidden(r.ids, true);
          auto nll = detail::rl::tempered_nll(*core_.m, h, r, tau);
          auto p = ppo_policy_loss(-nll, o_lp, a, r.mask, cfg_.policy);
          auto v = ppo_value_loss(v_(h), o_v, rt, r.mask, cfg_.value_clip);
          const double w = toks / mb_tokens;
          pl += w * static_cast<double>(p.loss.value()());
          vl += w * static_cast<double>(v.loss.value()());
          clip += p.clip_fraction * toks;
          vclip += v.clip_fraction * toks;
          akl += p.approx_kl * toks;
          toks_all += toks;
          return (p.loss + v.loss * cfg_.vf_coef) * w;
        },
        [] {});
    res.grad_norm = log.grad_norm;
    res.lr = log.lr;
    res.optimizer_steps = log.optimizer_steps;
    res.skipped_steps = log.skipped_steps;
    res.policy_loss = pl / static_cast<double>(res.optimizer_steps);
    res.value_loss = vl / static_cast<double>(res.optimizer_steps);
    res.clip_fraction = clip / toks_all;
    res.value_clip_fraction = vclip / toks_all;
    res.approx_kl = akl / toks_all;
    res.train_seconds = secs(t0);
    res.samples = std::move(samples);
    ++core_.iteration;
    return res;
  }

 private:
  static nn::parameter_list<T> joined(nn::parameter_list<T> a, const nn::parameter_list<T>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
  detail::rl::update_plan plan() const {
    return {cfg_.epochs,    cfg_.minibatches, cfg_.micro_batch, cfg_.clip_grad,
            &cfg_.schedule, cfg_.seed,        0x7070'6f00ull};
  }

  ppo_config cfg_;
  value_head<T> v_;
  detail::rl::trainer_core<Cfg, T> core_;
};

}  // namespace train
TFM_END_NAMESPACE
