// typeformer/quant/awq.hpp
//
// WHAT THIS REPRESENTS
//   AWQ, activation-aware weight quantization (Lin et al. 2023, arXiv:2306.00978): the few input
//   channels with large activations matter most, so before round-to-nearest each input channel j
//   of the weights that read an input is scaled up by s_j and the input divided by s_j (the
//   product is unchanged: W x = (W diag(s)) (x / s)); the division is folded into the operation
//   that produces the input, so the model's function is the same before quantization and the
//   salient channels are quantized with a finer relative step.
//
//     auto r = quant::awq_search(consumers, stats, {.grid = int4_grid::q4_0});   // r.scales (K)
//     quant::fold_input_scales(weights, geometry, layer, "attn_in", r.scales);    // in place
//
// CONTRACTS
//   - Search (sec. 3.3 of the paper, the authors' auto_scale): s = mean|x|^alpha per channel
//     (mean over the calibration rows, clamped to >= 1e-4), normalised by sqrt(max(s) min(s)),
//     for alpha = i / grid_points, i = 0 .. grid_points - 1 (20 points in [0, 0.95]; alpha = 0 is
//     s = 1: round to nearest). The chosen alpha minimises sum over the consumers of
//     ||X W^T - X (Q(W diag(s)) diag(s)^-1)^T||^2 on the sampled calibration rows X
//     (quant/calibrate.hpp's reservoir), Q = round to nearest on the 4-bit grid with its group
//     (quant/gptq.hpp rtn_quantize: GGML's Q4_0 / Q4_1 values with f16 scales). The paper scores
//     the output of the whole attention / MLP block; here the outputs of the linear layers
//     themselves (documented simplification). Products in float (backend/cpu GEMM), sums in
//     double; the result does not depend on the thread count.
//   - Folding (the paper's "scales folded into the previous operator", llama layout):
//       attn_in  (attn_q, attn_k, attn_v):  attn_norm.weight (and .bias) /= s, their columns *= s
//       ffn_in   (ffn_gate, ffn_up):        ffn_norm.weight (and .bias) /= s, their columns *= s
//       ffn_down:                           ffn_up rows (and ffn_up.bias) /= s, ffn_down columns
//                                           *= s (SwiGLU only: down's input is linear in up)
//       attn_out (attn_output):             attn_v rows /= s, attn_output columns *= s, only when
//                                           n_head == n_kv_head (each output channel of the
//                                           attention is one value channel); refused otherwise
//     fold_input_scales returns false, changing nothing, when the fold does not apply.
#pragma once

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/quant/calibrate.hpp"
#include "typeformer/quant/gptq.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace quant {

/// A weight matrix as floats (rows x cols, row-major; a vector is 1 x cols).
struct float_matrix {
  index_t rows = 0, cols = 0;
  std::vector<float> v;
};
/// A model's weights as floats, by GGUF tensor name.
using float_weights = std::map<std::string, float_matrix, std::less<>>;

/// A weight product that reads an input: rows x K floats.
struct weight_ref {
  const float* w = nullptr;
  index_t rows = 0;
};

struct awq_options {
  index_t grid_points = 20;          ///< alphas i / grid_points, i < grid_points
  int4_grid grid = int4_grid::q4_0;  ///< the grid quantized to during the search
  index_t group = 32;
};

struct awq_result {
  std::vector<float> scales;  ///< K, the s of the best alpha
  double alpha = 0;
  double error = 0;      ///< the best alpha's output error on the sample
  double error_rtn = 0;  ///< alpha = 0 (round to nearest)
};

/// Sum over consumers of ||X (W - V)^T||^2 with V = Q(W diag(s)) diag(s)^-1 (X: m x K).
inline double awq_output_error(std::span<const weight_ref> ws, index_t K, const float* X, index_t m,
                               std::span<const float> s, const awq_options& o) {
  double total = 0;
  std::vector<float> scaled, diff, y;
  for (const weight_ref& r : ws) {
    const std::size_t n = static_cast<std::size_t>(r.rows * K);
    scaled.resize(n);
    for (index_t i = 0; i < r.rows; ++i)
      for (index_t j = 0; j < K; ++j) scaled[i * K + j] = r.w[i * K + j] * s[j];
    const group_quantized qz = rtn_quantize(scaled, r.rows, K, o.group, o.grid);
    diff.resize(n);
    for (index_t i = 0; i < r.rows; ++i)
      for (index_t j = 0; j < K; ++j) diff[i * K + j] = r.w[i * K + j] - qz.value(i, j) / s[j];
    y.resize(static_cast<std::size_t>(m * r.rows));
    cpu_kernels::gemm<float>(false, true, m, r.rows, K, 1.0f, X, K, diff.data(), K, 0.0f, y.data(),
                             r.rows);
    double e = 0;
    for (float v : y) e += double(v) * double(v);
    total += e;
  }
  return total;
}

/// AWQ's scale search for the consumers `ws` (each rows x K) of the input described by `st`
/// (mean |x| and the row sample; see the contracts).
inline awq_result awq_search(std::span<const weight_ref> ws, const input_stats& st,
                             const awq_options& o = {}) {
  const index_t K = st.K, m = st.sample_count();
  if (m == 0)
    fail(errc::value,
         "tfm::quant::awq_search: no sampled calibration rows (calibrate with "
         "sample_rows > 0).");
  if (o.grid_points < 1)
    fail(errc::value, "tfm::quant::awq_search: grid_points = ", o.grid_points, " must be >= 1.");
  const std::vector<double> mean = st.mean_abs();
  awq_result best;
  std::vector<float> s(static_cast<std::size_t>(K));
  for (index_t i = 0; i < o.grid_points; ++i) {
    const double alpha = static_cast<double>(i) / static_cast<double>(o.grid_points);
    double mx = 0, mn = INFINITY;
    std::vector<double> sd(static_cast<std::size_t>(K));
    for (index_t j = 0; j < K; ++j) {
      sd[j] = std::max(std::pow(mean[j], alpha), 1e-4);
      mx = std::max(mx, sd[j]);
      mn = std::min(mn, sd[j]);
    }
    const double norm = std::sqrt(mx * mn);
    for (index_t j = 0; j < K; ++j) s[j] = static_cast<float>(sd[j] / norm);
    const double e = awq_output_error(ws, K, st.sample.data(), m, s, o);
    if (i == 0) best.error_rtn = e;
    if (i == 0 || e < best.error) {
      best.error = e;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  return best;
}

/// The shapes the folds need.
struct fold_geometry {
  index_t n_head = 0, n_kv_head = 0, head_dim = 0;
  bool swiglu = true;
};

/// The tensors that read input `key` of layer `l` ("attn_in", "attn_out", "ffn_in", "ffn_down").
inline std::vector<std::string> consumers_of(index_t l, std::string_view key) {
  const std::string p = "blk." + std::to_string(l) + ".";
  if (key == "attn_in")
    return {p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight", p + "attn_qkv.weight"};
  if (key == "attn_out") return {p + "attn_output.weight"};
  if (key == "ffn_in") return {p + "ffn_gate.weight", p + "ffn_up.weight"};
  if (key == "ffn_down") return {p + "ffn_down.weight"};
  return {};
}

/// The weight_refs of input `key` of layer `l` present in `w`.
inline std::vector<weight_ref> consumer_refs(const float_weights& w, index_t l,
                                             std::string_view key) {
  std::vector<weight_ref> r;
  for (const std::string& n : consumers_of(l, key))
    if (const auto it = w.find(n); it != w.end())
      r.push_back({it->second.v.data(), it->second.rows});
  return r;
}

/// Divides input `key` of layer `l` by s (K) and multiplies its consumers' columns by s, in
/// place (see the contracts). Returns false, changing nothing, when the fold does not apply.
inline bool fold_input_scales(float_weights& w, const fold_geometry& g, index_t l,
                              std::string_view key, std::span<const float> s) {
  const std::string p = "blk." + std::to_string(l) + ".";
  const index_t K = static_cast<index_t>(s.size());
  std::vector<float_matrix*> producers_cols;  // vectors / rows divided by s
  std::vector<float_matrix*> producer_rows;
  auto get = [&](const std::string& n) -> float_matrix* {
    const auto it = w.find(n);
    return it == w.end() ? nullptr : &it->second;
  };
  if (key == "attn_in" || key == "ffn_in") {
    const std::string norm = p + (key == "attn_in" ? "attn_norm" : "ffn_norm");
    float_matrix* nw = get(norm + ".weight");
    if (nw == nullptr || nw->v.size() != s.size()) return false;
    producers_cols.push_back(nw);
    if (float_matrix* nb = get(norm + ".bias")) producers_cols.push_back(nb);
  } else if (key == "ffn_down") {
    float_matrix* up = get(p + "ffn_up.weight");
    if (!g.swiglu || up == nullptr || up->rows != K) return false;
    producer_rows.push_back(up);
    if (float_matrix* ub = get(p + "ffn_up.bias")) producers_cols.push_back(ub);
  } else if (key == "attn_out") {
    float_matrix* v = get(p + "attn_v.weight");
    if (g.n_head != g.n_kv_head || v == nullptr || v->rows != K) return false;
    producer_rows.push_back(v);
    if (float_matrix* vb = get(p + "attn_v.bias")) producers_cols.push_back(vb);
  } else {
    return false;
  }
  std::vector<float_matrix*> cons;
  for (const std::string& n : consumers_of(l, key))
    if (float_matrix* c = get(n)) {
      if (c->cols != K) return false;
      cons.push_back(c);
    }
  if (cons.empty()) return false;
  for (float_matrix* m : producers_cols)
    for (std::size_t j = 0; j < m->v.size(); ++j) m->v[j] /= s[j];
  for (float_matrix* m : producer_rows)
    for (index_t r = 0; r < m->rows; ++r)
      for (index_t c = 0; c < m->cols; ++c) m->v[r * m->cols + c] /= s[r];
  for (float_matrix* m : cons)
    for (index_t r = 0; r < m->rows; ++r)
      for (index_t c = 0; c < K; ++c) m->v[r * K + c] *= s[c];
  return true;
}

/// H' = diag(1/s) H diag(1/s): the Hessian of the input divided by s (GPTQ after a fold).
inline std::vector<double> scale_hessian(std::span<const double> H, std::span<const float> s) {
  const std::size_t k = s.size();
  std::vector<double> out(k * k);
  for (std::size_t i = 0; i < k; ++i)
    for (std::size_t j = 0; j < k; ++j)
      out[i * k + j] = H[i * k + j] / (double(s[i]) * double(s[j]));
  return out;
}

}  // namespace quant
TFM_END_NAMESPACE
