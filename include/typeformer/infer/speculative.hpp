// typeformer/infer/speculative.hpp
//
// WHAT THIS REPRESENTS
//   The parts of speculative decoding that do not depend on the engine: the verification rule
//   and the n-gram prompt-lookup drafter.
//
//   Verification (Leviathan et al., arXiv:2211.17192, Algorithm 1; Chen et al.,
//   arXiv:2302.01318, Algorithm 2). A drafter proposed x_1..x_k, x_i drawn from q_i (the draft's
//   distribution after x_1..x_{i-1}); the target gave p_1..p_{k+1} (p_i after x_1..x_{i-1}). For
//   i = 1..k: accept x_i when u < p_i(x_i) / q_i(x_i), u uniform in [0, 1); on the first
//   rejection emit a token drawn from normalize(max(0, p_i - q_i)) and stop; when all k are
//   accepted emit a bonus token drawn from p_{k+1}. Every emitted token is then distributed
//   exactly as sampling from the target one token at a time (the theorem of both papers), for
//   any q with q_i(x_i) > 0. A deterministic drafter (n-gram lookup, a greedy draft model) is
//   the point mass q_i = delta(x_i): accept with probability p_i(x_i), and the residual is p_i
//   without x_i. All uniforms come from the request's sampler (uniform(), draw()): one per
//   examined draft token and one for the emitted token. The tokens are reproducible from the
//   seed, but they are not the tokens non-speculative sampling draws with that seed (only their
//   distribution is the same).
//   Greedy (temperature 0): accept while x_i == argmax p_i, then emit argmax p_i of the first
//   mismatch (or argmax p_{k+1}): exactly the tokens of greedy decoding.
//
//   speculative_verifier applies the rule to target logits with the request's sampler, so p_i
//   is the sampler's processed distribution (penalties over the history including x_1..x_{i-1},
//   bias, temperature, truncation) and rows after the first rejection are never processed.
//
//   N-gram prompt lookup (llama.cpp's "ngram-simple" speculative type, common/ngram-map.cpp;
//   vLLM's "ngram" method): for n = max_n down to min_n, take the last n tokens of the context,
//   find their most recent earlier occurrence (starting before the suffix itself), and propose
//   up to max_draft tokens that followed it (they may run into the suffix). The first n that
//   matches wins; no match proposes nothing.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/infer/sampler.hpp"

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// The outcome of verifying a draft: draft[0, accepted) is kept, then `token` is emitted (the
/// correction of the first rejected position, or the bonus token when accepted == k).
struct verify_result {
  std::int64_t accepted = 0;
  std::int32_t token = 0;
};

namespace detail {
/// Position i of the rule: whether to accept x under p and q (q == nullptr: the point mass at x).
inline bool speculative_accept(std::int32_t x, const float* q, const float* p, sampler& rng) {
  const double qx = q ? static_cast<double>(q[x]) : 1.0;
  if (!(qx > 0))
    fail(errc::value, "tfm::infer::verify_draft: draft token ", x,
         " has probability 0 under its own draft distribution (it cannot have been drawn).");
  return rng.uniform() * qx < static_cast<double>(p[x]);
}

/// A token drawn from normalize(max(0, p - q)) (q == nullptr: the point mass at x); from p when
/// the residual has no mass (p == q up to rounding, where a rejection has probability 0).
inline std::int32_t speculative_residual(std::int32_t x, const float* q, const float* p,
                                         std::int64_t vocab, sampler& rng) {
  auto r = [&](std::int64_t t) {
    const double qt = q ? static_cast<double>(q[t]) : (t == x ? 1.0 : 0.0);
    return std::max(0.0, static_cast<double>(p[t]) - qt);
  };
  double sum = 0;
  for (std::int64_t t = 0; t < vocab; ++t) sum += r(t);
  if (!(sum > 0)) return rng.draw(std::span<const float>(p, static_cast<std::size_t>(vocab)));
  double u = rng.uniform() * sum;
  std::int64_t last = 0;
  for (std::int64_t t = 0; t < vocab; ++t) {
    const double m = r(t);
    if (m == 0) continue;
    last = t;
    u -= m;
    if (u < 0) return static_cast<std::int32_t>(t);
  }
  return static_cast<std::int32_t>(last);
}

inline void check_draft(std::span<const std::int32_t> draft, std::span<const float> draft_probs,
                        std::int64_t vocab) {
  const auto k = static_cast<std::int64_t>(draft.size());
  if (vocab <= 0) fail(errc::value, "tfm::infer::verify_draft: vocab = ", vocab, " must be > 0.");
  if (!draft_probs.empty() && static_cast<std::int64_t>(draft_probs.size()) != k * vocab)
    fail(errc::value, "tfm::infer::verify_draft: draft_probs has ", draft_probs.size(),
         " entries; expected k * vocab = ", k, " * ", vocab, " (or none for point masses).");
  for (std::size_t i = 0; i < draft.size(); ++i)
    if (draft[i] < 0 || draft[i] >= vocab)
      fail(errc::value, "tfm::infer::verify_draft: draft token ", i, " = ", draft[i],
           " is outside the vocabulary [0, ", vocab, ").");
}
}  // namespace detail

/// The rejection-sampling rule on given distributions (see the file comment).
///   draft         x_1..x_k (k >= 0)
///   draft_probs   k rows of `vocab` probabilities, row i = q_{i+1}; empty: point masses
///   target_probs  k + 1 rows of `vocab` probabilities, row i = p_{i+1}
///   rng           the request's sampler (its uniform() and draw() are used)
inline verify_result verify_draft(std::span<const std::int32_t> draft,
                                  std::span<const float> draft_probs,
                                  std::span<const float> target_probs, std::int64_t vocab,
                                  sampler& rng) {
  detail::check_draft(draft, draft_probs, vocab);
  const auto k = static_cast<std::int64_t>(draft.size());
  if (static_cast<std::int64_t>(target_probs.size()) != (k + 1) * vocab)
    fail(errc::value, "tfm::infer::verify_draft: target_probs has ", target_probs.size(),
         " entries; expected (k + 1) * vocab = ", k + 1, " * ", vocab, ".");
  for (std::int64_t i = 0; i < k; ++i) {
    const float* q = draft_probs.empty() ? nullptr : draft_probs.data() + i * vocab;
    const float* p = target_probs.data() + i * vocab;
    const std::int32_t x = draft[static_cast<std::size_t>(i)];
    if (!detail::speculative_accept(x, q, p, rng))
      return {i, detail::speculative_residual(x, q, p, vocab, rng)};
  }
  return {k, rng.draw(target_probs.subspan(static_cast<std::size_t>(k * vocab),
                                           static_cast<std::size_t>(vocab)))};
}

/// Greedy verification: target_tokens[i] = argmax p_{i+1} for i = 0..k (k + 1 entries).
inline verify_result verify_greedy(std::span<const std::int32_t> draft,
                                   std::span<const std::int32_t> target_tokens) {
  if (target_tokens.size() != draft.size() + 1)
    fail(errc::value, "tfm::infer::verify_greedy: ", target_tokens.size(),
         " target tokens for a draft of ", draft.size(), "; expected one more than the draft.");
  std::size_t i = 0;
  while (i < draft.size() && draft[i] == target_tokens[i]) ++i;
  return {static_cast<std::int64_t>(i), target_tokens[i]};
}

/// Verification on the target's logits with the request's sampler. Holds scratch (vocab floats)
/// so that a step allocates nothing after the first.
class speculative_verifier {
 public:
  /// sequence       the context (prompt and emitted tokens) followed by the k draft tokens
  /// target_logits  k + 1 rows of `vocab` logits; row i is the target's prediction after
  ///                sequence[0, size - k + i)
  /// draft_probs    as in verify_draft: k rows of q, or empty for point masses (greedy
  ///                temperature ignores it)
  /// With s.options().temperature == 0 this is verify_greedy on the processed argmaxes.
  template <class L>
  verify_result verify(sampler& s, const L* target_logits, std::int64_t vocab,
                       std::span<const std::int32_t> sequence, std::int64_t k,
                       std::span<const float> draft_probs = {}) {
    if (k < 0 || k > static_cast<std::int64_t>(sequence.size()))
      fail(errc::value, "tfm::infer::speculative_verifier: k = ", k,
           " draft tokens for a sequence of ", sequence.size(), ".");
    const std::size_t ctx = sequence.size() - static_cast<std::size_t>(k);
    const auto draft = sequence.subspan(ctx);
    detail::check_draft(draft, draft_probs, vocab);
    p_.resize(static_cast<std::size_t>(vocab));
    const bool greedy = s.options().temperature == 0;
    for (std::int64_t i = 0;; ++i) {
      s.distribution(target_logits + i * vocab, vocab,
                     sequence.first(ctx + static_cast<std::size_t>(i)), std::span<float>(p_));
      if (i == k) {
        if (greedy) return {k, argmax()};
        return {k, s.draw(std::span<const float>(p_))};
      }
      const std::int32_t x = draft[static_cast<std::size_t>(i)];
      if (greedy) {
        const std::int32_t best = argmax();
        if (best != x) return {i, best};
        continue;
      }
      const float* q = draft_probs.empty() ? nullptr : draft_probs.data() + i * vocab;
      if (!detail::speculative_accept(x, q, p_.data(), s))
        return {i, detail::speculative_residual(x, q, p_.data(), vocab, s)};
    }
  }

 private:
  std::int32_t argmax() const {  // the processed greedy distribution is a point mass
    return static_cast<std::int32_t>(std::max_element(p_.begin(), p_.end()) - p_.begin());
  }
  std::vector<float> p_;
};

/// The n-gram prompt-lookup drafter's settings.
struct ngram_options {
  std::int64_t min_n = 1;      ///< shortest suffix to look up; >= 1
  std::int64_t max_n = 3;      ///< longest suffix to look up, tried first; >= min_n
  std::int64_t max_draft = 5;  ///< most tokens proposed; >= 1
};

inline void validate(const ngram_options& o) {
  if (o.min_n < 1)
    fail(errc::value, "tfm::infer::ngram_draft: min_n = ", o.min_n, " must be >= 1.");
  if (o.max_n < o.min_n)
    fail(errc::value, "tfm::infer::ngram_draft: max_n = ", o.max_n, " must be >= min_n = ", o.min_n,
         ".");
  if (o.max_draft < 1)
    fail(errc::value, "tfm::infer::ngram_draft: max_draft = ", o.max_draft, " must be >= 1.");
}

/// Writes up to min(max_draft, out.size()) proposed tokens to `out` (see the file comment) and
/// returns how many; 0 when no suffix of length in [min_n, max_n] occurs earlier.
inline std::int64_t ngram_draft(std::span<const std::int32_t> context, const ngram_options& o,
                                std::span<std::int32_t> out) {
  validate(o);
  const auto len = static_cast<std::int64_t>(context.size());
  const std::int64_t cap =
      std::min<std::int64_t>(o.max_draft, static_cast<std::int64_t>(out.size()));
  if (cap == 0) return 0;
  for (std::int64_t n = std::min(o.max_n, len - 1); n >= o.min_n; --n) {
    const auto suffix = context.subspan(static_cast<std::size_t>(len - n));
    for (std::int64_t j = len - n - 1; j >= 0; --j) {
      if (!std::equal(suffix.begin(), suffix.end(), context.begin() + j)) continue;
      const std::int64_t m = std::min(cap, len - (j + n));
      std::copy_n(context.begin() + (j + n), m, out.begin());
      return m;
    }
  }
  return 0;
}

}  // namespace infer
TFM_END_NAMESPACE
