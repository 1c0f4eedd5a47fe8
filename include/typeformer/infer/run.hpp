// typeformer/infer/run.hpp
//
// WHAT THIS REPRESENTS
//   What one does with a loaded infer::transformer: generate text token by token, and measure
//   perplexity the way llama.cpp's llama-perplexity does.
//
//   generate(model, prompt, max_new, sampling, on_token, options) prefills the prompt, then
//   samples (infer/sampler.hpp: temperature 0 = greedy, top-k, top-p, seed) and decodes one token
//   at a time, calling on_token(id) for each new token (streaming). It stops after max_new
//   tokens or after emitting a stop token (which is returned and passed to on_token). When the
//   cache is full it slides: the last context/2 tokens are kept and re-prefilled (session::slide);
//   a prompt longer than the context keeps its last context - 1 tokens. Returns the new tokens.
//
//   perplexity(model, ids, ctx) follows tools/perplexity/perplexity.cpp of llama.cpp: the ids
//   are cut into floor(n / ctx) non-overlapping windows of ctx tokens (the first token of each
//   replaced by `bos` when bos >= 0, as llama.cpp does for vocabularies that add BOS); each
//   window runs from position 0 and its tokens ctx/2 + 1 .. ctx - 1 are scored, each by
//   nll = log sum exp(logits) - logits[target] (exp in float, sum in double). PPL = exp(mean nll);
//   its error is ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)), llama.cpp's
//   "Final estimate: PPL = <ppl> +/- <err>". At least 2 * ctx tokens are needed.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/infer/sampler.hpp"
#include "typeformer/infer/session.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

struct generation_options {
  std::vector<std::int32_t> stop_tokens;  ///< stop after emitting one of these
  session_options session{};              ///< context and prefill batch of the session
};

/// Continues `s` (whose cache already holds any earlier turns) with `prompt`; see the file
/// comment. Returns the generated tokens.
template <class T, class B>
std::vector<std::int32_t> generate(session<T, B>& s, std::span<const std::int32_t> prompt,
                                   std::int64_t max_new, sampling_options so = {},
                                   const std::function<void(std::int32_t)>& on_token = {},
                                   const generation_options& go = {}) {
  if (prompt.empty()) fail(errc::value, "tfm::infer::generate: the prompt must not be empty.");
  if (max_new < 0) fail(errc::value, "tfm::infer::generate: max_new = ", max_new, " is negative.");
  sampler pick(so);
  const index_t cap = s.capacity();
  if (static_cast<index_t>(prompt.size()) >= cap) {
    s.reset();
    prompt = prompt.subspan(prompt.size() - static_cast<std::size_t>(cap - 1));
  } else if (s.position() + static_cast<index_t>(prompt.size()) > cap) {
    s.slide(std::max<index_t>(0, cap / 2 - static_cast<index_t>(prompt.size())));
  }
  std::span<const float> logits = s.prefill(prompt);
  std::vector<std::int32_t> out;
  out.reserve(static_cast<std::size_t>(std::min<std::int64_t>(max_new, 1 << 16)));
  for (std::int64_t i = 0; i < max_new; ++i) {
    const std::int32_t t = pick(logits.data(), static_cast<std::int64_t>(logits.size()));
    out.push_back(t);
    if (on_token) on_token(t);
    if (std::find(go.stop_tokens.begin(), go.stop_tokens.end(), t) != go.stop_tokens.end()) break;
    if (i + 1 == max_new) break;
    if (s.position() == cap) s.slide(cap / 2);
    logits = s.decode(t);
  }
  return out;
}

/// generate() on a new session of `model` (options.session sizes it).
template <class T, class B>
std::vector<std::int32_t> generate(const transformer<T, B>& model,
                                   std::span<const std::int32_t> prompt, std::int64_t max_new,
                                   sampling_options so = {},
                                   const std::function<void(std::int32_t)>& on_token = {},
                                   const generation_options& go = {}) {
  session<T, B> s(model, go.session);
  return generate(s, prompt, max_new, so, on_token, go);
}

/// The same with the prompt in a vector (chosen over infer/generate.hpp's nn::gpt overload).
template <class T, class B>
std::vector<std::int32_t> generate(session<T, B>& s, const std::vector<std::int32_t>& prompt,
                                   std::int64_t max_new, sampling_options so = {},
                                   const std::function<void(std::int32_t)>& on_token = {},
                                   const generation_options& go = {}) {
  return generate(s, std::span<const std::int32_t>(prompt), max_new, so, on_token, go);
}
template <class T, class B>
std::vector<std::int32_t> generate(const transformer<T, B>& model,
                                   const std::vector<std::int32_t>& prompt, std::int64_t max_new,
                                   sampling_options so = {},
                                   const std::function<void(std::int32_t)>& on_token = {},
                                   const generation_options& go = {}) {
  return generate(model, std::span<const std::int32_t>(prompt), max_new, so, on_token, go);
}

struct perplexity_result {
  double ppl = 0;           ///< exp(mean nll)
  double error = 0;         ///< llama.cpp's "+/-": ppl * standard error of the mean nll
  double mean_nll = 0;      ///< nats per scored token
  std::int64_t count = 0;   ///< scored tokens
  std::int64_t chunks = 0;  ///< windows of ctx tokens
};

namespace detail {
/// -log softmax(row)[target] as llama.cpp computes it: max, sum of expf in double, log.
inline double token_nll(const float* row, index_t n, std::int32_t target) {
  float mx = row[0];
  for (index_t i = 1; i < n; ++i) mx = std::max(mx, row[i]);
  double sum = 0;
  for (index_t i = 0; i < n; ++i) sum += std::exp(row[i] - mx);
  return static_cast<double>(mx) + std::log(sum) - static_cast<double>(row[target]);
}
}  // namespace detail

/// One scored position of perplexity(): its index in `ids`, its logits (vocab floats) and the
/// token that follows it.
using scored_position_fn = std::function<void(index_t pos, const float* logits, std::int32_t next)>;

/// llama.cpp's perplexity of `ids` with windows of ctx tokens (file comment). bos >= 0 replaces
/// the first token of each window. on_scored (optional) sees every scored position's logits,
/// in order (top-1 agreement with another engine, per-token losses). kv: the session's KV cache
/// type (infer/kv_store.hpp).
template <class T, class B>
perplexity_result perplexity(const transformer<T, B>& model, std::span<const std::int32_t> ids,
                             index_t ctx, std::int32_t bos = -1, index_t batch = 512,
                             const scored_position_fn& on_scored = {}, kv_type kv = kv_type::f32) {
  if (ctx < 4) fail(errc::value, "tfm::infer::perplexity: ctx = ", ctx, " must be at least 4.");
  const index_t n = static_cast<index_t>(ids.size());
  if (n < 2 * ctx)
    fail(errc::value, "tfm::infer::perplexity: ", n, " tokens; at least 2 * ctx = ", 2 * ctx,
         " are needed.");
  session<T, B> s(model, {.context = ctx, .batch = batch, .kv = kv});
  const index_t V = model.config().vocab, first = ctx / 2;
  perplexity_result r;
  r.chunks = n / ctx;
  double nll = 0, nll2 = 0;
  std::vector<std::int32_t> window(static_cast<std::size_t>(ctx));
  for (index_t c = 0; c < r.chunks; ++c) {
    std::copy_n(ids.begin() + c * ctx, ctx, window.begin());
    if (bos >= 0) window[0] = bos;
    s.reset();
    for (index_t p = 0; p < ctx; p += s.batch()) {  // a piece of the window, its logits
      const index_t len = std::min(s.batch(), ctx - p);
      const float* lg = s.prefill({window.data() + p, static_cast<std::size_t>(len)}, true).data();
      for (index_t j = std::max(p, first); j < std::min(p + len, ctx - 1); ++j) {
        const double v = detail::token_nll(lg + (j - p) * V, V, ids[c * ctx + j + 1]);
        if (on_scored) on_scored(c * ctx + j, lg + (j - p) * V, ids[c * ctx + j + 1]);
        nll += v;
        nll2 += v * v;
        ++r.count;
      }
    }
  }
  r.mean_nll = nll / static_cast<double>(r.count);
  r.ppl = std::exp(r.mean_nll);
  const double var = nll2 / static_cast<double>(r.count) - r.mean_nll * r.mean_nll;
  r.error = var > 0 ? r.ppl * std::sqrt(var / static_cast<double>(r.count - 1)) : 0.0;
  return r;
}

}  // namespace infer
TFM_END_NAMESPACE
