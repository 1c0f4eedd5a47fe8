// Test support for tests/unit/engine: tiny random llama models (infer_model's tiny_model.hpp)
// loaded as infer::transformer, and a recorder of an engine request's events.
#pragma once

#include "../infer_model/tiny_model.hpp"

#include "typeformer/infer/engine.hpp"
#include "typeformer/infer/model.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace engine_test {

/// A tiny llama GGUF (seed printed by the caller) whose matrices are `types` in turn (f32, f16 or
/// block-quantized), written once per (seed, types) and loaded with packed weights.
inline tfm::infer::transformer<float> tiny(std::uint64_t seed,
                                           const std::vector<tfm::ggml_type>& types,
                                           std::int64_t ctx = 256) {
  std::string name = "/engine_tiny_" + std::to_string(seed);
  for (tfm::ggml_type t : types) name += "_" + std::string(tfm::ggml_type_name(t));
  const std::string path = infer_test::work_dir() + name + ".gguf";
  infer_test::tiny_model m;
  const bool plain =
      types.size() == 1 && (types[0] == tfm::ggml_type::f32 || types[0] == tfm::ggml_type::f16);
  if (plain) {
    infer_test::tiny_model sizes;
    sizes.ctx = ctx;
    m = infer_test::make_tiny(seed, false, types[0], sizes);
  } else {
    m = infer_test::make_quant_tiny(seed, false, types);
    m.ctx = ctx;
  }
  infer_test::write_tiny(m, path);
  return tfm::infer::load_gguf(path);
}

/// max |a - b| / max |b|.
template <class A, class B>
double rel_err(const A& a, const B& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / den;
}

/// Everything one request reported.
struct record {
  std::vector<std::int32_t> tokens;
  std::string text;
  int finals = 0;       // events with finish != none (must be exactly one)
  int after_final = 0;  // events after the final one (must be none)
  tfm::infer::finish_reason why = tfm::infer::finish_reason::none;
  std::string error;
  std::int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  std::vector<float> logprobs;
  std::vector<std::vector<tfm::infer::top_logprob>> tops;

  tfm::infer::event_callback callback() {
    return [this](const tfm::infer::token_event& e) {
      if (finals > 0) ++after_final;
      if (e.token >= 0) {
        tokens.push_back(e.token);
        logprobs.push_back(e.logprob);
        tops.push_back(e.top);
      }
      text += e.text;
      if (e.finish != tfm::infer::finish_reason::none) {
        ++finals;
        why = e.finish;
        error = e.error;
        prompt_tokens = e.prompt_tokens;
        completion_tokens = e.completion_tokens;
        cached_tokens = e.cached_tokens;
      }
    };
  }
};

/// A deterministic prompt of n tokens in [0, V).
inline std::vector<std::int32_t> prompt(std::uint64_t seed, std::size_t n, std::int64_t V) {
  std::vector<std::int32_t> p(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& t : p) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t = static_cast<std::int32_t>(x % static_cast<std::uint64_t>(V));
  }
  return p;
}

}  // namespace engine_test
