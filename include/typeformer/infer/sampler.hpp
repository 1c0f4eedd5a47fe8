// typeformer/infer/sampler.hpp
//
// WHAT THIS REPRESENTS
//   Next-token sampling from one row of logits, with the sampler set of llama.cpp and vLLM, for
//   one request: a `sampler` holds the request's options, its seed and its draw counter, and
//   scratch buffers sized on its first call, so that later calls with the same vocabulary size n
//   allocate nothing: 20 bytes * n, plus 8 * n with penalties, 12 * n with typical-p and 4 * n
//   with raw top-n logprobs (about 1 MB for a 49152-token vocabulary with everything on).
//
// THE CHAIN (vLLM's order, vllm/v1/sample/sampler.py; typical-p, which vLLM lacks, sits where
// llama.cpp puts it relative to top-k and top-p). With l = the row's logits, as double:
//   1. logit_bias          l[t] += bias (OpenAI `logit_bias`; a -inf bias bans t)
//   2. penalties           over the last `penalty_last_n` tokens of the history (-1: all of it;
//                          llama.cpp's llama_sampler_penalties rule), for each token t seen c > 0
//                          times: repetition (CTRL, Keskar et al., arXiv:1909.05858, as
//                          llama.cpp applies it): l <= 0 ? l * r : l / r; then frequency and
//                          presence (OpenAI's definition): l -= c * frequency + presence
//   3. temperature         temperature == 0: greedy, the argmax of l after 1-2 (the first
//                          maximum on ties), and steps 4-7 are skipped (they never remove it);
//                          otherwise p = softmax(l / temperature) over the tokens with l > -inf
//   4. min_p > 0           keep p >= min_p * max(p) (Nguyen et al., arXiv:2407.01082)
//   5. top_k > 0           keep the k most likely (ties by token id, lower first)
//   6. typical_p < 1       locally typical sampling (Meister et al., arXiv:2202.00666): with the
//                          entropy H of the kept set renormalized, order by |-log p - H| and keep
//                          the smallest prefix whose renormalized mass reaches typical_p
//   7. top_p < 1           keep the smallest most-likely set whose renormalized mass reaches top_p
//                          (nucleus sampling, Holtzman et al., arXiv:1904.09751)
//   8. draw                with u = uniform_double(seed, d) for the sampler's d-th draw (d counts
//                          from 0 and every sample() call uses one, greedy included), the first
//                          kept token, in descending probability, whose cumulative mass exceeds
//                          u * (kept mass). So a request is reproducible from its seed, whatever
//                          the thread or the batch it runs in.
//   Why vLLM's order: temperature before truncation is what OpenAI-API clients (the server's
//   users) expect, and it is what this sampler always did (top-k, softmax(l / T), top-p), so the
//   tokens for given (temperature, top_k, top_p, seed) are those it always gave (without top-k
//   the kept mass is now summed in id order rather than logit order, so only a draw within
//   rounding, ~1e-16 relative, of a boundary could differ). min-p commutes with top-k (both keep
//   a prefix of the same order), so 4 and 5 may be read in either order.
//   Cost: without top-k or typical-p only the most likely prefix that top-p and the draw reach is
//   sorted (O(n) plus n exp for a peaked row); top-k costs a partial sort, typical-p a full sort.
//
// LOGPROBS
//   logprob_source::raw (default, what OpenAI and vLLM's default report): log_softmax of the
//   logits as given, before bias, penalties, temperature and truncation; the top-n list is the
//   n largest logits of the row. logprob_source::processed: the log of the distribution the token
//   was drawn from (after steps 1-7; greedy: a point mass, logprob 0); its top-n list holds only
//   tokens with non-zero probability, so it may be shorter than n.
//
// SPECULATIVE DECODING
//   distribution() writes the final processed distribution (after steps 1-7) of a row as n
//   probabilities, without drawing; draw() and uniform() take the sampler's next draw number.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// Which distribution sample_result::logprob and ::top describe (see the file comment).
enum class logprob_source : std::uint8_t { raw, processed };

/// An additive logit bias for one token id (OpenAI `logit_bias`); -inf bans the token.
struct token_bias {
  std::int32_t token = 0;
  double bias = 0;
};

/// A request's sampling parameters; the defaults sample from softmax(logits) unchanged.
/// The first four fields keep their order (callers brace-initialise them).
struct sampling_options {
  double temperature = 1.0;              ///< 0: greedy; finite, >= 0
  std::int64_t top_k = 0;                ///< 0: off; >= 0
  double top_p = 1.0;                    ///< 1: off; in (0, 1]
  std::uint64_t seed = 0;                ///< draw d uses uniform_double(seed, d)
  double min_p = 0.0;                    ///< 0: off; in [0, 1]
  double typical_p = 1.0;                ///< 1: off; in (0, 1]
  double repetition_penalty = 1.0;       ///< 1: off; finite, > 0
  double frequency_penalty = 0.0;        ///< 0: off; finite (OpenAI allows [-2, 2])
  double presence_penalty = 0.0;         ///< 0: off; finite (OpenAI allows [-2, 2])
  std::int64_t penalty_last_n = 64;      ///< history window of the penalties; -1: all; >= -1
  std::vector<token_bias> logit_bias{};  ///< distinct ids >= 0; bias finite or -inf
  logprob_source logprobs = logprob_source::raw;
};

/// One entry of a top-n logprob list.
struct token_logprob {
  std::int32_t token = 0;
  float logprob = 0;
};

/// What sample() returns. `top` points into the sampler and is valid until its next call.
struct sample_result {
  std::int32_t token = 0;              ///< the chosen token id
  float logprob = 0;                   ///< its log-probability (see the file comment)
  std::span<const token_logprob> top;  ///< the top-n alternatives, most likely first
};

namespace detail {
/// A number as a message shows it (%g: 0.1, 1e-05, inf, nan).
inline std::string sampler_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace detail

/// Throws value_error naming the field when `o` is not a valid set of options.
inline void validate(const sampling_options& o) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  auto bad = [](const char* field, const std::string& value, const char* rule) {
    fail(errc::value, "tfm::infer::sampler: ", field, " = ", value, " is invalid: ", rule, ".");
  };
  auto real = [&](const char* field, double v, bool ok, const char* rule) {
    if (!ok) bad(field, detail::sampler_number(v), rule);
  };
  auto whole = [&](const char* field, std::int64_t v, bool ok, const char* rule) {
    if (!ok) bad(field, std::to_string(v), rule);
  };
  real("temperature", o.temperature, o.temperature >= 0 && o.temperature < inf,
       "it must be finite and >= 0 (0: greedy)");
  whole("top_k", o.top_k, o.top_k >= 0, "it must be >= 0 (0 turns it off)");
  real("top_p", o.top_p, o.top_p > 0 && o.top_p <= 1, "it must be in (0, 1]");
  real("min_p", o.min_p, o.min_p >= 0 && o.min_p <= 1, "it must be in [0, 1]");
  real("typical_p", o.typical_p, o.typical_p > 0 && o.typical_p <= 1, "it must be in (0, 1]");
  real("repetition_penalty", o.repetition_penalty,
       o.repetition_penalty > 0 && o.repetition_penalty < inf,
       "it must be finite and > 0 (1 turns it off)");
  real("frequency_penalty", o.frequency_penalty, std::isfinite(o.frequency_penalty),
       "it must be finite");
  real("presence_penalty", o.presence_penalty, std::isfinite(o.presence_penalty),
       "it must be finite");
  whole("penalty_last_n", o.penalty_last_n, o.penalty_last_n >= -1,
        "it must be >= -1 (-1: the whole history)");
  for (std::size_t i = 0; i < o.logit_bias.size(); ++i) {
    const token_bias& b = o.logit_bias[i];
    if (b.token < 0)
      fail(errc::value, "tfm::infer::sampler: logit_bias token id ", b.token, " is negative.");
    if (std::isnan(b.bias) || b.bias == inf)
      fail(errc::value, "tfm::infer::sampler: logit_bias of token ", b.token, " is ",
           detail::sampler_number(b.bias), "; it must be finite or -inf (a ban).");
    for (std::size_t j = 0; j < i; ++j)
      if (o.logit_bias[j].token == b.token)
        fail(errc::value, "tfm::infer::sampler: logit_bias names token ", b.token, " twice.");
  }
}

/// validate(o), and every logit_bias id below `vocab` (the engine's check at admission; the
/// sampler itself learns the vocabulary size only from the logits).
inline void validate(const sampling_options& o, std::int64_t vocab) {
  validate(o);
  for (const token_bias& b : o.logit_bias)
    if (b.token >= vocab)
      fail(errc::value, "tfm::infer::sampler: logit_bias token ", b.token,
           " is outside the vocabulary of n = ", vocab, " logits.");
}

class sampler {
 public:
  /// Validates `o` (value_error naming the field).
  explicit sampler(sampling_options o = {}) : o_(std::move(o)) { validate(o_); }

  /// Samples a token from `n` logits (any type convertible to double; finite or -inf), with the
  /// penalties counted over `history` (the prompt and the tokens generated so far, oldest first;
  /// ids in [0, n)). top_logprobs in [0, n]: the token's logprob and the top_logprobs most
  /// likely alternatives; -1: no logprobs (logprob is NaN, top empty; saves n exps).
  template <class L>
  sample_result sample(const L* logits, std::int64_t n, std::span<const std::int32_t> history = {},
                       std::int64_t top_logprobs = -1) {
    if (top_logprobs < -1 || top_logprobs > n)
      fail(errc::value, "tfm::infer::sampler: top_logprobs = ", top_logprobs,
           " must be in [0, n = ", n, "] (or -1: no logprobs).");
    const std::int64_t keep = process(logits, n, history);
    std::int64_t at = 0;
    if (o_.temperature == 0) {
      ++draws_;
    } else {
      at = pick(keep, uniform_double(o_.seed, draws_++) * total_);
    }
    sample_result r;
    r.token = idx_[static_cast<std::size_t>(at)];
    top_.clear();
    if (top_logprobs < 0) {
      r.logprob = std::numeric_limits<float>::quiet_NaN();
    } else if (o_.logprobs == logprob_source::raw) {
      r.logprob = raw_logprobs(logits, n, r.token, top_logprobs);
    } else {
      auto logprob = [&](std::int32_t t) {
        return static_cast<float>(std::log(prob_[static_cast<std::size_t>(t)] / total_));
      };
      r.logprob = logprob(r.token);
      const std::int64_t m = std::min(keep, top_logprobs);
      if (m > 0) sort_through(m - 1, keep);
      for (std::int64_t i = 0; i < m; ++i) {
        const std::int32_t t = idx_[static_cast<std::size_t>(i)];
        top_.push_back({t, logprob(t)});
      }
    }
    r.top = std::span<const token_logprob>(top_.data(), top_.size());
    return r;
  }

  /// The token alone, without penalties' history or logprobs (the original interface).
  template <class L>
  std::int32_t operator()(const L* logits, std::int64_t n) {
    const std::int64_t keep = process(logits, n, {});
    if (o_.temperature == 0) {
      ++draws_;
      return idx_[0];
    }
    return idx_[static_cast<std::size_t>(pick(keep, uniform_double(o_.seed, draws_++) * total_))];
  }

  /// Writes the processed distribution of a row (steps 1-7; greedy: a point mass at the argmax)
  /// to `out` (n floats, summing to 1). Takes no draw.
  template <class L>
  void distribution(const L* logits, std::int64_t n, std::span<const std::int32_t> history,
                    std::span<float> out) {
    if (static_cast<std::int64_t>(out.size()) != n)
      fail(errc::value, "tfm::infer::sampler::distribution: out has ", out.size(),
           " entries for n = ", n, " logits.");
    const std::int64_t keep = process(logits, n, history);
    std::fill(out.begin(), out.end(), 0.f);
    for (std::int64_t i = 0; i < keep; ++i) {
      const auto t = static_cast<std::size_t>(idx_[static_cast<std::size_t>(i)]);
      out[t] = static_cast<float>(prob_[t] / total_);
    }
  }

  /// Draws an index from `probs` (finite, >= 0, not all 0; need not sum to 1) with the next draw
  /// number: the first index whose cumulative mass exceeds u * sum.
  std::int32_t draw(std::span<const float> probs) {
    double sum = 0;
    for (std::size_t i = 0; i < probs.size(); ++i) {
      if (!(probs[i] >= 0 && probs[i] < std::numeric_limits<float>::infinity()))
        fail(errc::value, "tfm::infer::sampler::draw: probability ", i, " is ",
             detail::sampler_number(probs[i]), "; it must be finite and >= 0.");
      sum += probs[i];
    }
    if (!(sum > 0)) fail(errc::value, "tfm::infer::sampler::draw: the probabilities sum to 0.");
    double u = uniform() * sum;
    std::size_t last = 0;
    for (std::size_t i = 0; i < probs.size(); ++i) {
      if (probs[i] == 0) continue;
      last = i;
      u -= probs[i];
      if (u < 0) return static_cast<std::int32_t>(i);
    }
    return static_cast<std::int32_t>(last);  // rounding left u >= 0: the last non-zero index
  }

  /// The next uniform number in [0, 1) of this sampler's stream (takes a draw number).
  double uniform() noexcept { return uniform_double(o_.seed, draws_++); }

  /// Draw numbers used so far (sample, operator(), draw and uniform each take one).
  std::uint64_t draws() const noexcept { return draws_; }
  const sampling_options& options() const noexcept { return o_; }

 private:
  /// Steps 1-7: leaves the kept tokens in idx_[0, keep), of which idx_[0, sorted_) are the most
  /// likely in descending order (the rest less likely, unordered: sort_through() extends the
  /// order on demand), their unnormalized probabilities in prob_ by token id, and total_ = their
  /// sum; greedy: the argmax alone.
  template <class L>
  std::int64_t process(const L* logits, std::int64_t n, std::span<const std::int32_t> history) {
    if (n <= 0) fail(errc::value, "tfm::infer::sampler: no logits to sample from.");
    if (n > std::numeric_limits<std::int32_t>::max())
      fail(errc::value, "tfm::infer::sampler: n = ", n, " logits exceed the int32 token ids.");
    const auto un = static_cast<std::size_t>(n);
    work_.resize(un);
    for (std::size_t i = 0; i < un; ++i) {
      const double v = static_cast<double>(logits[i]);
      if (!(v < std::numeric_limits<double>::infinity()))
        fail(errc::value, "tfm::infer::sampler: logit ", i, " is ", detail::sampler_number(v),
             "; logits must be finite or -inf.");
      work_[i] = v;
    }
    apply_bias(n);
    apply_penalties(n, history);
    std::int64_t finite = 0, best = -1;
    for (std::size_t i = 0; i < un; ++i) {
      if (work_[i] == -std::numeric_limits<double>::infinity()) continue;
      ++finite;
      if (best < 0 || work_[i] > work_[static_cast<std::size_t>(best)])
        best = static_cast<std::int64_t>(i);
    }
    if (finite == 0)
      fail(errc::value, "tfm::infer::sampler: every token has logit -inf (all are banned).");
    if (idx_.size() != un) {  // the first call for this vocabulary sizes every buffer
      idx_.resize(un);
      prob_.resize(un);
      if (o_.typical_p < 1) {
        score_.reserve(un);
        order_.reserve(un);
      }
    }
    if (o_.temperature == 0) {
      idx_[0] = static_cast<std::int32_t>(best);
      prob_[static_cast<std::size_t>(best)] = total_ = 1;
      sorted_ = 1;
      return 1;
    }
    const double mx = work_[static_cast<std::size_t>(best)];
    if (o_.typical_p < 1 || (o_.top_k > 0 && o_.top_k < finite))
      return truncate_sorted(n, finite, mx);
    return truncate_lazy(n, mx);
  }

  void apply_bias(std::int64_t n) {
    for (const token_bias& b : o_.logit_bias) {
      if (b.token >= n)
        fail(errc::value, "tfm::infer::sampler: logit_bias token ", b.token,
             " is outside the vocabulary of n = ", n, " logits.");
      work_[static_cast<std::size_t>(b.token)] += b.bias;
    }
  }

  void apply_penalties(std::int64_t n, std::span<const std::int32_t> history) {
    if (o_.repetition_penalty == 1 && o_.frequency_penalty == 0 && o_.presence_penalty == 0) return;
    if (o_.penalty_last_n == 0 || history.empty()) return;
    if (counts_.size() != static_cast<std::size_t>(n)) {
      counts_.assign(static_cast<std::size_t>(n), 0);
      touched_.reserve(static_cast<std::size_t>(n));
    }
    std::size_t first = 0;
    if (o_.penalty_last_n > 0 && history.size() > static_cast<std::size_t>(o_.penalty_last_n))
      first = history.size() - static_cast<std::size_t>(o_.penalty_last_n);
    touched_.clear();
    for (std::size_t i = first; i < history.size(); ++i) {
      const std::int32_t t = history[i];
      if (t < 0 || t >= n) {
        for (std::int32_t u : touched_) counts_[static_cast<std::size_t>(u)] = 0;
        fail(errc::value, "tfm::infer::sampler: history token ", i, " = ", t,
             " is outside the vocabulary of n = ", n, " logits.");
      }
      if (counts_[static_cast<std::size_t>(t)]++ == 0) touched_.push_back(t);
    }
    const double r = o_.repetition_penalty;
    for (std::int32_t t : touched_) {
      const auto s = static_cast<std::size_t>(t);
      double& l = work_[s];
      if (r != 1) l = l <= 0 ? l * r : l / r;
      l -= counts_[s] * o_.frequency_penalty + o_.presence_penalty;
      counts_[s] = 0;
    }
  }

  /// Logit order (descending, ties by lower id): the order every step walks in.
  bool before(std::int32_t a, std::int32_t b) const noexcept {
    const double la = work_[static_cast<std::size_t>(a)], lb = work_[static_cast<std::size_t>(b)];
    return la > lb || (la == lb && a < b);
  }
  auto before_fn() const {
    return [this](std::int32_t a, std::int32_t b) { return before(a, b); };
  }

  /// Steps 3-7 when top-k truncates or typical-p is on: sorts the top-k (or all) candidates.
  std::int64_t truncate_sorted(std::int64_t n, std::int64_t finite, double mx) {
    std::iota(idx_.begin(), idx_.end(), 0);
    std::int64_t keep = finite;
    if (o_.top_k > 0 && o_.top_k < finite) keep = o_.top_k;
    if (keep < n) {
      std::partial_sort(idx_.begin(), idx_.begin() + keep, idx_.end(), before_fn());
    } else {
      std::sort(idx_.begin(), idx_.end(), before_fn());
    }
    std::int64_t kept = 0;
    total_ = 0;
    for (std::int64_t i = 0; i < keep; ++i) {
      const auto t = static_cast<std::size_t>(idx_[static_cast<std::size_t>(i)]);
      const double p = std::exp((work_[t] - mx) / o_.temperature);
      if (p == 0 || p < o_.min_p) break;  // p / max(p) < min_p, max(p) = 1; the rest are smaller
      prob_[t] = p;
      total_ += p;
      kept = i + 1;
    }
    sorted_ = kept;
    if (o_.typical_p < 1 && kept > 1) kept = typical(kept);
    if (o_.top_p < 1) kept = nucleus(kept);
    return kept;
  }

  /// Steps 3, 4 and 7 without a full sort: the candidates are filtered in id order and only the
  /// most likely prefix that top-p and the draw reach gets sorted (sort_through). total_ is
  /// summed in id order, where the sorted path sums in logit order; the two agree to rounding.
  std::int64_t truncate_lazy(std::int64_t n, double mx) {
    std::int64_t m = 0;
    total_ = 0;
    for (std::int64_t t = 0; t < n; ++t) {
      const double l = work_[static_cast<std::size_t>(t)];
      if (l == -std::numeric_limits<double>::infinity()) continue;
      const double p = std::exp((l - mx) / o_.temperature);
      if (p == 0 || p < o_.min_p) continue;  // p / max(p) < min_p, max(p) = 1
      prob_[static_cast<std::size_t>(t)] = p;
      total_ += p;
      idx_[static_cast<std::size_t>(m++)] = static_cast<std::int32_t>(t);
    }
    sorted_ = 0;
    if (o_.top_p < 1) return nucleus(m);
    return m;
  }

  /// Makes idx_[0, j] the j + 1 most likely of idx_[0, keep), in order (at least doubling the
  /// sorted prefix each time, so a walk costs O(keep) when it stops early).
  void sort_through(std::int64_t j, std::int64_t keep) {
    if (j < sorted_) return;
    const std::int64_t want = std::min(keep, std::max({j + 1, 2 * sorted_, std::int64_t{64}}));
    const auto first = idx_.begin() + sorted_, mid = idx_.begin() + want,
               last = idx_.begin() + keep;
    if (mid != last) std::nth_element(first, mid, last, before_fn());
    std::sort(first, mid, before_fn());
    sorted_ = want;
  }

  /// Step 6 on idx_[0, keep) (sorted): keeps the typical set, still in descending probability.
  std::int64_t typical(std::int64_t keep) {
    const auto k = static_cast<std::size_t>(keep);
    auto p_at = [&](std::size_t i) { return prob_[static_cast<std::size_t>(idx_[i])] / total_; };
    double entropy = 0;
    for (std::size_t i = 0; i < k; ++i) entropy -= p_at(i) * std::log(p_at(i));
    score_.resize(k);
    order_.resize(k);
    for (std::size_t i = 0; i < k; ++i) {
      score_[i] = std::abs(-std::log(p_at(i)) - entropy);
      order_[i] = static_cast<std::int32_t>(i);
    }
    std::sort(order_.begin(), order_.end(), [&](std::int32_t a, std::int32_t b) {
      const double sa = score_[static_cast<std::size_t>(a)],
                   sb = score_[static_cast<std::size_t>(b)];
      return sa < sb || (sa == sb && a < b);
    });
    std::size_t m = 0;
    double c = 0;
    while (m < k) {
      c += p_at(static_cast<std::size_t>(order_[m]));
      ++m;
      if (c >= o_.typical_p) break;
    }
    std::sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(m));
    total_ = 0;
    for (std::size_t i = 0; i < m; ++i) {  // order_[i] >= i: compacting forward is safe
      idx_[i] = idx_[static_cast<std::size_t>(order_[i])];
      total_ += prob_[static_cast<std::size_t>(idx_[i])];
    }
    sorted_ = static_cast<std::int64_t>(m);
    return sorted_;
  }

  /// Step 7 on idx_[0, keep): the smallest most-likely prefix reaching top_p.
  std::int64_t nucleus(std::int64_t keep) {
    double c = 0;
    std::int64_t k = 0;
    while (k < keep) {
      sort_through(k, keep);
      c += prob_[static_cast<std::size_t>(idx_[static_cast<std::size_t>(k)])] / total_;
      ++k;
      if (c >= o_.top_p) break;
    }
    total_ = 0;
    for (std::int64_t i = 0; i < k; ++i)
      total_ += prob_[static_cast<std::size_t>(idx_[static_cast<std::size_t>(i)])];
    return k;
  }

  /// Step 8: the position in idx_ of the first kept token, in descending probability, whose
  /// cumulative mass exceeds u.
  std::int64_t pick(std::int64_t keep, double u) {
    for (std::int64_t i = 0; i < keep; ++i) {
      sort_through(i, keep);
      u -= prob_[static_cast<std::size_t>(idx_[static_cast<std::size_t>(i)])];
      if (u < 0) return i;
    }
    return keep - 1;  // rounding left u >= 0: the least likely kept token
  }

  /// log_softmax(logits)[token], and the top_n largest logits' log-probabilities into top_.
  template <class L>
  float raw_logprobs(const L* logits, std::int64_t n, std::int32_t token, std::int64_t top_n) {
    const auto un = static_cast<std::size_t>(n);
    double mx = -std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < un; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
    double sum = 0;
    if (mx > -std::numeric_limits<double>::infinity())
      for (std::size_t i = 0; i < un; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
    const double lse = mx + std::log(sum);  // -inf when every raw logit is -inf
    auto logprob = [&](std::int32_t t) {
      return static_cast<float>(static_cast<double>(logits[static_cast<std::size_t>(t)]) - lse);
    };
    if (top_n > 0) {
      raw_idx_.resize(un);
      std::iota(raw_idx_.begin(), raw_idx_.end(), 0);
      std::partial_sort(
          raw_idx_.begin(), raw_idx_.begin() + top_n, raw_idx_.end(),
          [&](std::int32_t a, std::int32_t b) {
            const double la = static_cast<double>(logits[static_cast<std::size_t>(a)]);
            const double lb = static_cast<double>(logits[static_cast<std::size_t>(b)]);
            return la > lb || (la == lb && a < b);
          });
      for (std::int64_t i = 0; i < top_n; ++i) {
        const std::int32_t t = raw_idx_[static_cast<std::size_t>(i)];
        top_.push_back({t, logprob(t)});
      }
    }
    return logprob(token);
  }

  sampling_options o_;
  std::uint64_t draws_ = 0;
  double total_ = 0;
  std::int64_t sorted_ = 0;                     // idx_[0, sorted_) is in descending order
  std::vector<double> work_;                    // processed logits (n)
  std::vector<std::int32_t> idx_;               // candidate ids, kept ones first (n)
  std::vector<double> prob_;                    // unnormalized probabilities by token id (n)
  std::vector<std::int32_t> counts_, touched_;  // penalties (n)
  std::vector<double> score_;                   // typical-p scores (kept)
  std::vector<std::int32_t> order_;             // typical-p order (kept)
  std::vector<std::int32_t> raw_idx_;           // raw top-n (n)
  std::vector<token_logprob> top_;              // the top-n list (n)
};

}  // namespace infer
TFM_END_NAMESPACE
