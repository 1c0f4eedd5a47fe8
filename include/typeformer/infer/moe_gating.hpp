// typeformer/infer/moe_gating.hpp
//
// WHAT THIS REPRESENTS
//   infer::moe_gating: the routing tables of a mixture-of-experts block for up to `rows` rows,
//   as the tape-free engines use them (infer::session, infer::batch_runner), sized once so that
//   routing allocates nothing:
//     route(logits, n): for each of n rows of E router logits, llama.cpp's gating of the llama
//       architecture (llama-graph.cpp build_moe_ffn, LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX with
//       norm_w; Mixtral, arXiv:2401.04088): p = softmax over all E logits, the k largest p in
//       descending order (a tie goes to the lower expert id), weights p / sum of the chosen p.
//       expert(r, s), weight(r, s) are row r's slot s.
//     group(n): the n * k (row, slot) pairs grouped by expert (a stable counting sort): count(e)
//       pairs at pair(e, 0 ..), each the index r * k + s, rows in increasing order.
//   A NaN logit makes the row's choice arbitrary but valid (distinct ids in [0, E)).
#pragma once

#include "typeformer/core/index.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

class moe_gating {
 public:
  moe_gating() = default;
  moe_gating(index_t rows, index_t n_expert, index_t n_used)
      : E_(n_expert),
        K_(n_used),
        sel_(static_cast<std::size_t>(rows * n_used), 0),
        perm_(static_cast<std::size_t>(rows * n_used), 0),
        cnt_(static_cast<std::size_t>(n_expert), 0),
        off_(static_cast<std::size_t>(n_expert + 1), 0),
        wts_(static_cast<std::size_t>(rows * n_used), 0.0f),
        prob_(static_cast<std::size_t>(n_expert), 0.0f) {}

  index_t n_expert() const noexcept { return E_; }
  index_t n_used() const noexcept { return K_; }
  std::int32_t expert(index_t r, index_t s) const noexcept { return sel_[at(r * K_ + s)]; }
  float weight(index_t r, index_t s) const noexcept { return wts_[at(r * K_ + s)]; }
  index_t count(index_t e) const noexcept { return cnt_[at(e)]; }
  /// The i-th (row, slot) pair routed to expert e, as r * k + s (after group()).
  index_t pair(index_t e, index_t i) const noexcept { return perm_[at(off_[at(e)] + i)]; }
  /// x[r] += sum_s weight(r, s) * out[(r K + s) C ..] for the first n rows, in slot order (as
  /// llama.cpp's build_moe_ffn sums); acc: C floats of scratch. out holds each (row, slot)
  /// pair's expert output, C values each.
  void combine(index_t n, index_t C, const float* out, float* acc, float* x) const {
    for (index_t r = 0; r < n; ++r) {
      for (index_t s = 0; s < K_; ++s) {
        const float wt = weight(r, s);
        const float* y = out + (r * K_ + s) * C;
        if (s == 0)
          for (index_t c = 0; c < C; ++c) acc[c] = wt * y[c];
        else
          for (index_t c = 0; c < C; ++c) acc[c] += wt * y[c];
      }
      float* xr = x + r * C;
      for (index_t c = 0; c < C; ++c) xr[c] += acc[c];
    }
  }
  std::size_t bytes() const noexcept {
    return sel_.capacity() * sizeof(std::int32_t) +
           (perm_.capacity() + cnt_.capacity() + off_.capacity()) * sizeof(index_t) +
           (wts_.capacity() + prob_.capacity()) * sizeof(float);
  }

  /// Routes n rows of E logits (row-major, n * E floats); n <= rows.
  void route(const float* logits, index_t n) {
    float* p = prob_.data();
    for (index_t r = 0; r < n; ++r) {
      const float* z = logits + r * E_;
      float mx = z[0];
      for (index_t e = 1; e < E_; ++e) mx = std::max(mx, z[e]);
      float sum = 0;
      for (index_t e = 0; e < E_; ++e) sum += (p[e] = std::exp(z[e] - mx));
      for (index_t e = 0; e < E_; ++e) p[e] /= sum;
      std::int32_t* sel = sel_.data() + r * K_;
      float* wt = wts_.data() + r * K_;
      float chosen = 0;
      for (index_t s = 0; s < K_; ++s) {
        index_t best = -1;
        for (index_t e = 0; e < E_; ++e) {
          if (std::find(sel, sel + s, static_cast<std::int32_t>(e)) != sel + s) continue;
          if (best < 0 || p[e] > p[best]) best = e;  // strict: a tie keeps the lower id
        }
        sel[s] = static_cast<std::int32_t>(best);
        wt[s] = p[best];
        chosen += p[best];
      }
      for (index_t s = 0; s < K_; ++s) wt[s] /= chosen;
    }
  }

  /// Groups the pairs of the first n routed rows by expert.
  void group(index_t n) {
    std::fill(cnt_.begin(), cnt_.end(), 0);
    for (index_t a = 0; a < n * K_; ++a) ++cnt_[at(sel_[at(a)])];
    off_[0] = 0;
    for (index_t e = 0; e < E_; ++e) off_[at(e + 1)] = off_[at(e)] + cnt_[at(e)];
    for (index_t a = 0; a < n * K_; ++a) perm_[at(off_[at(sel_[at(a)])]++)] = a;
    for (index_t e = E_; e > 0; --e) off_[at(e)] = off_[at(e - 1)];  // back to the starts
    off_[0] = 0;
  }

 private:
  static std::size_t at(index_t i) noexcept { return static_cast<std::size_t>(i); }
  index_t E_ = 0, K_ = 0;
  std::vector<std::int32_t> sel_;
  std::vector<index_t> perm_, cnt_, off_;
  std::vector<float> wts_, prob_;
};

}  // namespace infer
TFM_END_NAMESPACE
