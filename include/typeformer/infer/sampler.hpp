// typeformer/infer/sampler.hpp
//
// Next-token sampling from a row of logits:
//   temperature == 0        greedy (argmax; the first maximum on ties)
//   temperature > 0         softmax(logits / temperature), then
//   top_k > 0               keep the k most likely tokens
//   top_p < 1               keep the smallest set whose probability reaches top_p (nucleus
//                           sampling, Holtzman et al., arXiv:1904.09751)
//   and draw with the counter-based generator: draw number `n` of a sampler with seed s uses
//   uniform(s, n), so a generation is reproducible and independent of threads.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

struct sampling_options {
  double temperature = 1.0;
  std::int64_t top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;
};

class sampler {
 public:
  explicit sampler(sampling_options o = {}) : o_(o) {
    if (!(o.temperature >= 0)) fail(errc::value, "tfm::infer::sampler: temperature must be >= 0.");
    if (o.top_k < 0) fail(errc::value, "tfm::infer::sampler: top_k must be >= 0.");
    if (!(o.top_p > 0 && o.top_p <= 1))
      fail(errc::value, "tfm::infer::sampler: top_p must be in (0, 1].");
  }

  /// Draws a token id from `n` logits (any arithmetic type convertible to double).
  template <class L>
  std::int32_t operator()(const L* logits, std::int64_t n) {
    if (n <= 0) fail(errc::value, "tfm::infer::sampler: no logits to sample from.");
    if (o_.temperature == 0) {
      std::int64_t best = 0;
      for (std::int64_t i = 1; i < n; ++i)
        if (static_cast<double>(logits[i]) > static_cast<double>(logits[best])) best = i;
      ++draws_;
      return static_cast<std::int32_t>(best);
    }
    idx_.resize(static_cast<std::size_t>(n));
    std::iota(idx_.begin(), idx_.end(), 0);
    // Order by logit, descending; ties by id (deterministic).
    auto by_logit = [&](std::int32_t a, std::int32_t b) {
      double la = static_cast<double>(logits[a]), lb = static_cast<double>(logits[b]);
      return la > lb || (la == lb && a < b);
    };
    std::int64_t keep = n;
    if (o_.top_k > 0 && o_.top_k < n) {
      keep = o_.top_k;
      std::partial_sort(idx_.begin(), idx_.begin() + keep, idx_.end(), by_logit);
    } else {
      std::sort(idx_.begin(), idx_.end(), by_logit);
    }
    const double mx = static_cast<double>(logits[idx_[0]]);
    prob_.resize(static_cast<std::size_t>(keep));
    double total = 0;
    for (std::int64_t i = 0; i < keep; ++i) {
      double p = std::exp((static_cast<double>(logits[idx_[static_cast<std::size_t>(i)]]) - mx) /
                          o_.temperature);
      prob_[static_cast<std::size_t>(i)] = p;
      total += p;
    }
    if (o_.top_p < 1) {
      double c = 0;
      std::int64_t k = 0;
      while (k < keep) {
        c += prob_[static_cast<std::size_t>(k)] / total;
        ++k;
        if (c >= o_.top_p) break;
      }
      keep = k;
      total = 0;
      for (std::int64_t i = 0; i < keep; ++i) total += prob_[static_cast<std::size_t>(i)];
    }
    double u = static_cast<double>(uniform_double(o_.seed, draws_++)) * total;
    for (std::int64_t i = 0; i < keep; ++i) {
      u -= prob_[static_cast<std::size_t>(i)];
      if (u < 0) return idx_[static_cast<std::size_t>(i)];
    }
    return idx_[static_cast<std::size_t>(keep - 1)];
  }

  std::uint64_t draws() const noexcept { return draws_; }

 private:
  sampling_options o_;
  std::uint64_t draws_ = 0;
  std::vector<std::int32_t> idx_;
  std::vector<double> prob_;
};

}  // namespace infer
TFM_END_NAMESPACE
