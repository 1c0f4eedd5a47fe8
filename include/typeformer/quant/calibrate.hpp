// typeformer/quant/calibrate.hpp
//
// WHAT THIS REPRESENTS
//   Calibration statistics of a model's weight products, collected by running an
//   infer::transformer over calibration tokens (infer::session's observer, infer/session.hpp):
//   what GPTQ (quant/gptq.hpp), AWQ (quant/awq.hpp) and SmoothQuant (quant/smoothquant.hpp) need.
//
//     quant::calibration c = quant::calibrate(model, tokens, {.ctx = 512});
//     const quant::input_stats* s = c.find("blk.3.attn_k.weight");   // attn_q/k/v share it
//     std::vector<double> H = s->hessian();                           // 2 X^T X / n  (K x K)
//
// CONTRACTS
//   - One input_stats per distinct input of a layer (the weight products that read the same rows
//     share it): "attn_in" (attn_q, attn_k, attn_v, attn_qkv), "attn_out" (attn_output),
//     "ffn_in" (ffn_gate, ffn_up), "ffn_down" (ffn_down); the head ("output") with
//     options.head. Tensor names are GGUF's: blk.N.attn_q.weight ...
//   - The tokens are cut into windows of `ctx` tokens (the last one shorter, dropped when under
//     2 tokens), each run from an empty cache; with `bos` >= 0 each window's first token is
//     replaced by it (llama-perplexity's convention, so the statistics see what inference sees).
//   - Per input of K channels over its n rows x (every position of every window):
//       xtx[i][j]   = sum over rows of x_i x_j        (double accumulation; full K x K matrix)
//       abs_sum[j]  = sum |x_j|,  abs_max[j] = max |x_j|
//       sample      = up to options.sample_rows rows kept by reservoir sampling (Vitter's
//                     algorithm R) with a std::mt19937_64 seeded by options.seed
//     hessian() = 2 xtx / n (GPTQ's H, arXiv:2210.17323 eq. 1's second derivative), mean_abs() =
//     abs_sum / n (AWQ's activation magnitude, arXiv:2306.00978 sec. 3.2).
//   - Determinism: the observer runs on the session's thread in the forward's order and every sum
//     is taken in row order, so the statistics equal bit for bit whatever the number of threads
//     the engine's kernels use (those are thread-count independent: backend/cpu).
//   - Memory: K^2 doubles per input (SmolLM2-135M: 27 MB a layer, 0.8 GB in all) when
//     options.hessian; sample_rows * K floats per input.
#pragma once

#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/infer/session.hpp"
#include "typeformer/infer/transformer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace quant {

/// Statistics of one input (K channels) of one or more weight products.
struct input_stats {
  index_t K = 0;
  std::uint64_t rows = 0;         ///< n: rows seen
  std::vector<double> xtx;        ///< K x K, sum x x^T (empty without options.hessian)
  std::vector<double> abs_sum;    ///< K: sum |x_j|
  std::vector<float> abs_max;     ///< K: max |x_j|
  std::vector<float> sample;      ///< sample_count() x K rows (reservoir sample)
  std::uint64_t sample_seen = 0;  ///< rows offered to the reservoir

  index_t sample_count() const noexcept { return K ? static_cast<index_t>(sample.size()) / K : 0; }
  /// H = 2 X^T X / n (K x K, row-major); all zeros when no row was seen.
  std::vector<double> hessian() const {
    std::vector<double> h(xtx.size(), 0.0);
    if (rows == 0) return h;
    const double f = 2.0 / static_cast<double>(rows);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = f * xtx[i];
    return h;
  }
  /// mean |x_j| over the rows (K).
  std::vector<double> mean_abs() const {
    std::vector<double> m(abs_sum.size(), 0.0);
    if (rows == 0) return m;
    for (std::size_t j = 0; j < m.size(); ++j) m[j] = abs_sum[j] / static_cast<double>(rows);
    return m;
  }
};

struct calibration_options {
  index_t ctx = 512;          ///< window length in tokens
  std::int32_t bos = -1;      ///< replaces each window's first token when >= 0
  bool hessian = true;        ///< accumulate X^T X (GPTQ); off: only the channel statistics
  index_t sample_rows = 256;  ///< rows kept per input for AWQ's search (0: none)
  std::uint64_t seed = 0;     ///< of the reservoir sampling
  bool head = false;          ///< also the head's input ("output.weight")
  index_t max_tokens = 0;     ///< use only the first max_tokens tokens (0: all)
};

/// What the site of a weight product reads: the key of its shared input.
constexpr std::string_view input_key(infer::linear_site s) noexcept {
  switch (s) {
    case infer::linear_site::q:
    case infer::linear_site::k:
    case infer::linear_site::v:
      return "attn_in";
    case infer::linear_site::o:
      return "attn_out";
    case infer::linear_site::gate:
    case infer::linear_site::up:
      return "ffn_in";
    case infer::linear_site::down:
      return "ffn_down";
    case infer::linear_site::head:
      return "output";
  }
  return "";
}

/// The calibration of a model: per-input statistics, found by tensor name.
class calibration {
 public:
  /// The statistics of the input of tensor `name` (blk.N.attn_q.weight, ..., output.weight), or
  /// nullptr when it was not observed.
  const input_stats* find(std::string_view name) const {
    const std::string key = key_of(name);
    if (key.empty()) return nullptr;
    const auto it = stats_.find(key);
    return it == stats_.end() ? nullptr : it->second.get();
  }
  /// The statistics of layer `layer`'s input `key` ("attn_in", "attn_out", "ffn_in",
  /// "ffn_down"; layer -1 and "output" for the head), or nullptr.
  const input_stats* find(index_t layer, std::string_view key) const {
    const auto it = stats_.find(std::to_string(layer) + "/" + std::string(key));
    return it == stats_.end() ? nullptr : it->second.get();
  }
  input_stats& at(index_t layer, std::string_view key, index_t K) {
    auto& p = stats_[std::to_string(layer) + "/" + std::string(key)];
    if (!p) {
      p = std::make_unique<input_stats>();
      p->K = K;
    }
    return *p;
  }
  /// Fills the lower triangle of every X^T X from its upper one (after the last accumulate).
  void finish() {
    for (auto& [key, p] : stats_) {
      const std::size_t k = static_cast<std::size_t>(p->K);
      if (p->xtx.empty()) continue;
      for (std::size_t i = 0; i < k; ++i)
        for (std::size_t j = 0; j < i; ++j) p->xtx[i * k + j] = p->xtx[j * k + i];
    }
  }
  index_t tokens = 0;  ///< tokens run
  index_t windows = 0;

  /// "L/key" of a GGUF tensor name, or "" for a tensor that is not a weight product's.
  static std::string key_of(std::string_view name) {
    if (name == "output.weight") return "-1/output";
    if (name.substr(0, 4) != "blk.") return "";
    const std::size_t dot = name.find('.', 4);
    if (dot == std::string_view::npos) return "";
    const std::string_view layer = name.substr(4, dot - 4), rest = name.substr(dot + 1);
    struct map_entry {
      std::string_view tensor, key;
    };
    static constexpr map_entry table[] = {
        {"attn_q.weight", "attn_in"},       {"attn_k.weight", "attn_in"},
        {"attn_v.weight", "attn_in"},       {"attn_qkv.weight", "attn_in"},
        {"attn_output.weight", "attn_out"}, {"ffn_gate.weight", "ffn_in"},
        {"ffn_up.weight", "ffn_in"},        {"ffn_down.weight", "ffn_down"}};
    for (const auto& e : table)
      if (rest == e.tensor) return std::string(layer) + "/" + std::string(e.key);
    return "";
  }

 private:
  std::map<std::string, std::unique_ptr<input_stats>> stats_;
};

namespace detail::calib {

/// xtx (K x K) += X^T X over n rows of x, the upper triangle (j >= i; tiles that cross the
/// diagonal also fill a few entries below it), each entry one fused multiply-add per row in row
/// order, in tiles of H that stay in cache.
inline void add_xtx_upper(std::vector<double>& xtx, const float* x, index_t n, index_t K,
                          std::vector<double>& buf) {
  using B = simd::batch<double>;
  constexpr index_t w = simd::width<double>, ti = 16, tj = 512;
  const std::size_t k = static_cast<std::size_t>(K);
  buf.resize(static_cast<std::size_t>(n) * k);
  for (std::size_t t = 0; t < buf.size(); ++t) buf[t] = static_cast<double>(x[t]);
  const double* xd = buf.data();
  for (index_t i0 = 0; i0 < K; i0 += ti) {
    const index_t i1 = std::min(i0 + ti, K);
    for (index_t j0 = i0; j0 < K; j0 += tj) {
      const index_t j1 = std::min(j0 + tj, K);
      index_t r = 0;
      for (; r + 4 <= n; r += 4) {
        const double *x0 = xd + r * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
        for (index_t i = i0; i < i1; ++i) {
          const B a0(x0[i]), a1(x1[i]), a2(x2[i]), a3(x3[i]);
          double* h = xtx.data() + static_cast<std::size_t>(i) * k;
          index_t j = j0;
          for (; j + w <= j1; j += w) {
            B acc = simd::load(h + j);
            acc = simd::fma(a0, simd::load(x0 + j), acc);
            acc = simd::fma(a1, simd::load(x1 + j), acc);
            acc = simd::fma(a2, simd::load(x2 + j), acc);
            acc = simd::fma(a3, simd::load(x3 + j), acc);
            simd::store(h + j, acc);
          }
          for (; j < j1; ++j) {
            double acc = h[j];
            acc = std::fma(x0[i], x0[j], acc);
            acc = std::fma(x1[i], x1[j], acc);
            acc = std::fma(x2[i], x2[j], acc);
            acc = std::fma(x3[i], x3[j], acc);
            h[j] = acc;
          }
        }
      }
      for (; r < n; ++r) {
        const double* x0 = xd + r * K;
        for (index_t i = i0; i < i1; ++i) {
          const B a0(x0[i]);
          double* h = xtx.data() + static_cast<std::size_t>(i) * k;
          index_t j = j0;
          for (; j + w <= j1; j += w)
            simd::store(h + j, simd::fma(a0, simd::load(x0 + j), simd::load(h + j)));
          for (; j < j1; ++j) h[j] = std::fma(x0[i], x0[j], h[j]);
        }
      }
    }
  }
}

}  // namespace detail::calib

/// Adds n rows of x (K channels) to `s` (see the contracts). `rng` drives the reservoir.
inline void accumulate(input_stats& s, const float* x, index_t n, index_t K,
                       const calibration_options& o, std::mt19937_64& rng,
                       std::vector<double>& buf) {
  if (s.K != K)
    fail(errc::value, "tfm::quant::calibrate: an input seen with ", s.K, " and then ", K,
         " channels.");
  const std::size_t k = static_cast<std::size_t>(K);
  if (s.abs_sum.empty()) {
    s.abs_sum.assign(k, 0.0);
    s.abs_max.assign(k, 0.0f);
    if (o.hessian) s.xtx.assign(k * k, 0.0);
  }
  for (index_t r = 0; r < n; ++r)
    for (std::size_t j = 0; j < k; ++j) {
      const float a = std::fabs(x[r * K + static_cast<index_t>(j)]);
      s.abs_sum[j] += a;
      s.abs_max[j] = std::max(s.abs_max[j], a);
    }
  if (o.hessian) detail::calib::add_xtx_upper(s.xtx, x, n, K, buf);
  if (o.sample_rows > 0)
    for (index_t r = 0; r < n; ++r) {
      const std::uint64_t seen = s.sample_seen++;
      if (seen < static_cast<std::uint64_t>(o.sample_rows)) {
        s.sample.insert(s.sample.end(), x + r * K, x + (r + 1) * K);
      } else {
        const std::uint64_t j = std::uniform_int_distribution<std::uint64_t>(0, seen)(rng);
        if (j < static_cast<std::uint64_t>(o.sample_rows))
          std::copy(x + r * K, x + (r + 1) * K,
                    s.sample.begin() + static_cast<std::ptrdiff_t>(j * k));
      }
    }
  s.rows += static_cast<std::uint64_t>(n);
}

/// Runs `model` over `tokens` and collects the statistics of every weight product's input.
template <class T, class Backend>
calibration calibrate(const infer::transformer<T, Backend>& model,
                      std::span<const std::int32_t> tokens, const calibration_options& o = {}) {
  if (o.ctx < 2) fail(errc::value, "tfm::quant::calibrate: ctx = ", o.ctx, " must be >= 2.");
  if (o.max_tokens > 0 && static_cast<index_t>(tokens.size()) > o.max_tokens)
    tokens = tokens.first(static_cast<std::size_t>(o.max_tokens));
  if (tokens.size() < 2)
    fail(errc::value, "tfm::quant::calibrate: ", tokens.size(),
         " calibration tokens (at least 2 are needed).");
  calibration c;
  std::mt19937_64 rng(o.seed);
  std::vector<double> buf;
  infer::session_options so;
  so.context = o.ctx;
  so.batch = o.ctx;
  so.observer = [&](index_t layer, infer::linear_site site, const float* x, index_t n, index_t K) {
    // q/k/v read the same rows, as do gate/up: q and up are the first of their kind to run.
    using s = infer::linear_site;
    if (site == s::k || site == s::v || site == s::gate) return;
    if (site == s::head && !o.head) return;
    accumulate(c.at(layer, input_key(site), K), x, n, K, o, rng, buf);
  };
  infer::session<T, Backend> sess(model, std::move(so));
  std::vector<std::int32_t> window;
  for (std::size_t i = 0; i < tokens.size(); i += static_cast<std::size_t>(o.ctx)) {
    const std::size_t len = std::min(tokens.size() - i, static_cast<std::size_t>(o.ctx));
    if (len < 2) break;
    window.assign(tokens.begin() + static_cast<std::ptrdiff_t>(i),
                  tokens.begin() + static_cast<std::ptrdiff_t>(i + len));
    if (o.bos >= 0) window[0] = o.bos;
    sess.reset();
    sess.prefill(window);
    c.tokens += static_cast<index_t>(len);
    ++c.windows;
  }
  c.finish();
  return c;
}

}  // namespace quant
TFM_END_NAMESPACE
