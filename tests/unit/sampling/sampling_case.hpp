// One hand-made sampling case of tests/data/sampling/cases.hpp: logits, options, history, and
// the distribution and raw log-probabilities numpy computed from the definitions.
#pragma once

#include <typeformer/infer/sampler.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

inline constexpr double inf = std::numeric_limits<double>::infinity();

struct case_options {
  double temperature, top_k, top_p, min_p, typical_p, repetition, frequency, presence;
  std::int64_t last_n;
  std::vector<tfm::infer::token_bias> bias;
};

struct sampling_case {
  std::string name;
  std::vector<double> logits;
  case_options o;
  std::vector<std::int32_t> history;
  std::vector<double> expected;     // the processed distribution
  std::vector<double> raw_logprob;  // log_softmax(logits)

  tfm::infer::sampling_options options(std::uint64_t seed) const {
    tfm::infer::sampling_options s;
    s.temperature = o.temperature;
    s.top_k = static_cast<std::int64_t>(o.top_k);
    s.top_p = o.top_p;
    s.seed = seed;
    s.min_p = o.min_p;
    s.typical_p = o.typical_p;
    s.repetition_penalty = o.repetition;
    s.frequency_penalty = o.frequency;
    s.presence_penalty = o.presence;
    s.penalty_last_n = o.last_n;
    s.logit_bias = o.bias;
    return s;
  }
};
