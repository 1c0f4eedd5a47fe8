// typeformer/infer/session.hpp
//
// WHAT THIS REPRESENTS
//   infer::session: one sequence being run by an infer::transformer, on tensors and without the
//   autodiff tape. It owns the mutable state: the KV cache (infer/kv_store.hpp), the RoPE
//   tables, the activations of up to `batch` positions and the logits, all allocated when the
//   session is made, so decoding a token allocates nothing.
//
//     infer::session s(model, {.context = 2048});
//     std::span<const float> logits = s.prefill(prompt);  // the last position's V logits
//     logits = s.decode(next);                            // one token: GEMVs over the weights
//     s.prefill(ids, true);                               // all positions' logits (T x V)
//
//   prefill() runs its tokens in chunks of `batch` positions (GEMMs; causal attention over the
//   cache), decode() one position (GEMVs). Positions are absolute from the last reset(); the
//   cache holds `context` of them. When it is full, slide(keep) keeps the last `keep` tokens and
//   re-prefills them from position 0 (the cache is recomputed, not RoPE-shifted: exact, at the
//   cost of one prefill of `keep` tokens; generate() slides to context / 2).
//
//   The forward (one chunk of n tokens at positions p .. p + n - 1), shapes right-aligned;
//   norm() is RMSNorm (* w) or LayerNorm (* w + b) as model_config::norm says, "+b" a bias the
//   config's flags enable:
//     x = token_embd[ids] (+ position_embd[p .. p+n) when positions are learned)      (n, C)
//     per layer:  h = norm(x; attn_norm)
//                 q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)    (n, HD), (n, GD), (n, GD)
//                 rope(q), rope(k) (RoPE models); cache[p .. p+n) = k, v
//                 x += attention(q, cache[0 .. p+n)) Wo^T (+bo)        (n, C)
//                 h = norm(x; ffn_norm)
//       swiglu:   x += (silu(h Wg^T + bg) * (h Wu^T + bu)) Wd^T (+bd)   (n, F) -> (n, C)
//       gelu:     x += gelu_tanh(h Wu^T + bu) Wd^T (+bd)                (n, F) -> (n, C)
//       moe:      (n_expert = E > 0; Mixtral, arXiv:2401.04088, as llama.cpp's llama arch runs it)
//                 p = softmax(h Wr^T) over all E experts; S = the k largest p (ties: lower id)
//                 x += sum_{e in S} (p_e / sum_S p) (silu(h Wg_e^T) * (h Wu_e^T)) Wd_e^T
//     logits = norm(x; output_norm) Wout^T     (last row, or every row)           (1 or n, V)
//   A model with learned positions cannot run past its context_length (its table's rows): the
//   session's context is capped there.
//
//   Block-quantized weights (kept packed by the loader) run the backend's linear_bt_packed: on the
//   cpu, decode quantizes each input row to 8-bit blocks once and reuses it for q, k, v (and for
//   gate, up), as llama.cpp does; prefill runs the float GEMM on weights dequantized while packing.
//   token_embd[ids] dequantizes only the looked-up rows; a tied head reads the packed token_embd.
//
//   Experts: decode runs the k chosen experts' GEMVs on the one row (the quantized input of h is
//   made once and shared by the router and every expert's gate and up products); prefill groups
//   the chunk's rows by expert (a counting sort, rows in order) and runs one GEMM per expert
//   over its gathered rows, then adds each row's weighted expert outputs in slot order, the same
//   sum decode forms. Buffers are sized at construction: no allocation per token. The observer
//   sees the dense products only (not the router's nor the experts').
//
//   session_options::kv picks the KV cache's element type (f32, f16, q8_0, int8: kv_store.hpp);
//   the attention kernels read the stored rows directly (backend/cpu/kv_attention.hpp). f32 is
//   the float cache, bit for bit.
//
//   session_options::observer, when set, is called with the input rows of every weight product
//   (layer, site, rows) before it runs: the seam through which calibration collects activation
//   statistics (importance matrices, GPTQ Hessians, AWQ/SmoothQuant channel scales).
#pragma once

#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/infer/kv_store.hpp"
#include "typeformer/infer/moe_gating.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/ops/rope.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// The weight products of the forward, as an observer sees them.
enum class linear_site : std::uint8_t { q, k, v, o, gate, up, down, head };

/// ggml's tensor name part of a site ("attn_q", ..., "ffn_down", "output").
constexpr std::string_view linear_site_name(linear_site s) noexcept {
  constexpr std::string_view names[] = {"attn_q",   "attn_k", "attn_v",   "attn_output",
                                        "ffn_gate", "ffn_up", "ffn_down", "output"};
  return names[static_cast<std::size_t>(s)];
}

/// Sees the input of every weight product before it runs: `n` rows of `K` floats at `x`
/// (row-major, contiguous), the product's layer (-1 for the head) and site. Calibration
/// (importance matrices, GPTQ, AWQ: quant/calibrate.hpp) collects its statistics through it.
/// The pointer is valid during the call only; the observer must not change the session.
using linear_observer =
    std::function<void(index_t layer, linear_site site, const float* x, index_t n, index_t K)>;

struct session_options {
  index_t context = 0;            ///< positions the cache holds; 0: min(model context_length, 2048)
  index_t batch = 512;            ///< positions one prefill step runs together (activation memory)
  kv_type kv = kv_type::f32;      ///< element type of the KV cache (infer/kv_store.hpp)
  linear_observer observer = {};  ///< called before every weight product when set (calibration)
};

template <class T, class Backend>
class session {
  using buffer = tensor<float, dyn_shape<1>>;

 public:
  explicit session(const transformer<T, Backend>& model, session_options o = {})
      : m_(&model), cfg_(model.config()), observer_(std::move(o.observer)) {
    cap_ = o.context > 0 ? o.context : std::min<index_t>(cfg_.context_length, 2048);
    if (cfg_.position == nn::position_kind::learned && cap_ > cfg_.context_length)
      fail(errc::value, "tfm::infer::session: context ", cap_, " exceeds the ", cfg_.context_length,
           " learned positions of the model.");
    batch_ = std::max<index_t>(1, std::min(o.batch, cap_));
    cache_ = kv_store(cfg_.n_layer, cfg_.n_kv_head, cap_, cfg_.head_dim, o.kv);
    allocate();
  }

  index_t position() const noexcept { return pos_; }
  index_t capacity() const noexcept { return cap_; }
  index_t batch() const noexcept { return batch_; }
  /// The tokens whose keys and values are cached, in order.
  std::span<const std::int32_t> tokens() const noexcept {
    return {history_.data(), history_.size()};
  }
  const kv_store& cache() const noexcept { return cache_; }
  const transformer<T, Backend>& model() const noexcept { return *m_; }
  /// Bytes this session allocated (cache, activations, logits).
  std::size_t bytes() const noexcept {
    std::size_t b = cache_.bytes();
    for (const buffer* p : {&x_, &h_, &q_, &k_, &v_, &att_, &g_, &u_, &scratch_, &cos_, &sin_,
                            &last_, &all_, &rl_, &xe_, &ye_, &eo_, &mo_})
      b += static_cast<std::size_t>(p->size()) * sizeof(float);
    b += gate_.bytes();
    return b + qin_.bytes() + qexp_.bytes();
  }

  /// Forgets every position (keeps the memory).
  void reset() noexcept {
    pos_ = 0;
    cache_.clear();
    history_.clear();
  }

  /// Runs `ids` at positions position() .. position() + n - 1. Returns the last position's
  /// logits (V), or with all_logits every position's (n x V, row-major). The span is valid until
  /// the next call.
  std::span<const float> prefill(std::span<const std::int32_t> ids, bool all_logits = false) {
    const index_t n = static_cast<index_t>(ids.size());
    check(ids);
    if (all_logits && all_.size() < n * cfg_.vocab) all_ = buffer(dyn_shape<1>(n * cfg_.vocab));
    for (index_t i = 0; i < n; i += batch_) {
      const index_t c = std::min(batch_, n - i);
      float* out = all_logits ? all_.data() + i * cfg_.vocab : last_.data();
      forward(ids.data() + i, c, all_logits, out);
    }
    if (all_logits) return {all_.data(), static_cast<std::size_t>(n * cfg_.vocab)};
    return {last_.data(), static_cast<std::size_t>(cfg_.vocab)};
  }

  /// Runs one token at position(); returns its logits (V). Allocates nothing.
  std::span<const float> decode(std::int32_t id) {
    check(std::span<const std::int32_t>(&id, 1));
    forward(&id, 1, false, last_.data());
    return {last_.data(), static_cast<std::size_t>(cfg_.vocab)};
  }

  /// Keeps the last `keep` cached tokens, re-runs them from position 0, and returns the logits
  /// of the last one (of the previous logits' position when keep == 0: empty span).
  std::span<const float> slide(index_t keep) {
    if (keep < 0 || keep >= cap_)
      fail(errc::value, "tfm::infer::session::slide: keep = ", keep, " must be in [0, ", cap_,
           ").");
    keep = std::min<index_t>(keep, static_cast<index_t>(history_.size()));
    std::vector<std::int32_t> kept(history_.end() - keep, history_.end());
    reset();
    if (keep == 0) return {};
    return prefill(kept);
  }

 private:
  void allocate() {
    const index_t C = cfg_.n_embd, HD = cfg_.n_head * cfg_.head_dim,
                  GD = cfg_.n_kv_head * cfg_.head_dim, n = batch_;
    auto make = [](index_t count) { return buffer(dyn_shape<1>(std::max<index_t>(count, 1))); };
    x_ = make(n * C);
    h_ = make(n * std::max(C, HD));
    q_ = make(n * HD);
    k_ = make(n * GD);
    v_ = make(n * GD);
    att_ = make(n * HD);
    g_ = make(n * cfg_.ffn);
    u_ = make(n * cfg_.ffn);
    cached_attention_geometry geo{n, cfg_.n_head, cfg_.n_kv_head, cfg_.head_dim, cap_, 0, 1.0};
    scratch_ = make(cached_attention_scratch(geo, cache_.type()));
    last_ = make(cfg_.vocab);
    qin_.reserve(std::max({C, HD, cfg_.ffn}));
    history_.reserve(static_cast<std::size_t>(cap_));
    if (cfg_.n_expert > 0) {  // router logits, gathered rows, expert outputs, routing tables
      const index_t E = cfg_.n_expert, K = cfg_.n_expert_used;
      rl_ = make(n * E);
      xe_ = make(n * C);
      ye_ = make(n * C);
      eo_ = make(n * K * C);
      mo_ = make(C);
      gate_ = moe_gating(n, E, K);
      qexp_.reserve(cfg_.ffn);
    }
    // cos/sin of every position the cache can hold (rope_config's scalings; ops/rope.hpp).
    if (cfg_.position != nn::position_kind::rope) return;
    const tfm::detail::rope_table tb =
        tfm::detail::make_rope_table(cfg_.rope, cfg_.head_dim, cap_, 0);
    cos_ = make(static_cast<index_t>(tb.cos.size()));
    sin_ = make(static_cast<index_t>(tb.sin.size()));
    for (std::size_t i = 0; i < tb.cos.size(); ++i) {
      cos_.data()[i] = static_cast<float>(tb.cos[i]);
      sin_.data()[i] = static_cast<float>(tb.sin[i]);
    }
  }

  void check(std::span<const std::int32_t> ids) const {
    const index_t n = static_cast<index_t>(ids.size());
    if (n == 0) fail(errc::value, "tfm::infer::session: no tokens to run.");
    if (pos_ + n > cap_)
      fail(errc::index, "tfm::infer::session: positions ", pos_, " .. ", pos_ + n - 1,
           " exceed the context of ", cap_, " (slide() or reset() first).");
    for (std::int32_t id : ids)
      if (id < 0 || id >= cfg_.vocab)
        fail(errc::index, "tfm::infer::session: token id ", id, " is outside the vocabulary of ",
             cfg_.vocab, ".");
  }

  void forward(const std::int32_t* ids, index_t n, bool all_logits, float* logits) {
    const index_t C = cfg_.n_embd;
    for (index_t t = 0; t < n; ++t) m_->token_embd().row(ids[t], x_.data() + t * C);
    if (cfg_.position == nn::position_kind::learned) {
      for (index_t t = 0; t < n; ++t) m_->position_embd().row(pos_ + t, h_.data() + t * C);
      for (index_t i = 0; i < n * C; ++i) x_.data()[i] += h_.data()[i];
    }
    for (index_t l = 0; l < cfg_.n_layer; ++l) {
      attention_block(l, n);
      if (cfg_.n_expert > 0)
        moe_block(l, n);
      else
        mlp_block(l, n);
    }
    head(n, all_logits, logits);
    pos_ += n;
    cache_.set_length(pos_);
    history_.insert(history_.end(), ids, ids + n);
  }

  void attention_block(index_t l, index_t n) {
    const block_weights& b = m_->block(l);
    const index_t D = cfg_.head_dim, H = cfg_.n_head, G = cfg_.n_kv_head;
    const index_t HD = H * D, GD = G * D;
    norm(b.attn_norm, b.attn_norm_b, x_.data(), h_.data(), n);
    project(l, linear_site::q, b.wq, b.bq, n, h_.data(), q_.data(), false);
    project(l, linear_site::k, b.wk, b.bk, n, h_.data(), k_.data(), false);
    project(l, linear_site::v, b.wv, b.bv, n, h_.data(), v_.data(), false);
    if (cfg_.position == nn::position_kind::rope) {
      const rope_pairs pairs = cfg_.rope.pair_style == rope_config::style::interleaved
                                   ? rope_pairs::interleaved
                                   : rope_pairs::half;
      const float* cs = cos_.data() + pos_ * (D / 2);
      const float* sn = sin_.data() + pos_ * (D / 2);
      rope_rows(Backend{}, q_.data(), HD, n, H, D, cs, sn, pairs);
      rope_rows(Backend{}, k_.data(), GD, n, G, D, cs, sn, pairs);
    }
    cache_.write(l, pos_, n, k_.data(), v_.data(), GD);
    const cached_attention_geometry geo{
        n, H, G, D, cap_, pos_, 1.0 / std::sqrt(static_cast<double>(D))};
    cached_attention(Backend{}, geo, q_.data(), cache_.layer(l), att_.data(), scratch_.data());
    qin_.valid = false;                                                       // new input: att_
    project(l, linear_site::o, b.wo, b.bo, n, att_.data(), x_.data(), true);  // x += o Wo^T (+ bo)
  }

  void mlp_block(index_t l, index_t n) {
    const block_weights& b = m_->block(l);
    norm(b.ffn_norm, b.ffn_norm_b, x_.data(), h_.data(), n);
    project(l, linear_site::up, b.w_up, b.b_up, n, h_.data(), u_.data(), false);
    if (cfg_.mlp == nn::mlp_kind::swiglu) {
      project(l, linear_site::gate, b.w_gate, b.b_gate, n, h_.data(), g_.data(), false);
      silu_mul(Backend{}, g_.data(), u_.data(), g_.data(), n * cfg_.ffn);
    } else {
      gelu_tanh(Backend{}, u_.data(), g_.data(), n * cfg_.ffn);
    }
    qin_.valid = false;  // new input: g_
    project(l, linear_site::down, b.w_down, b.b_down, n, g_.data(), x_.data(),
            true);  // x += a Wd^T (+ bd)
  }

  /// The mixture-of-experts MLP (file comment): route, run the chosen experts, combine.
  void moe_block(index_t l, index_t n) {
    const block_weights& b = m_->block(l);
    const index_t C = cfg_.n_embd, F = cfg_.ffn, K = cfg_.n_expert_used;
    norm(b.ffn_norm, b.ffn_norm_b, x_.data(), h_.data(), n);
    kernel(b.router, n, h_.data(), rl_.data(), false, qin_);  // (n, E) router logits
    gate_.route(rl_.data(), n);
    if (n == 1) {  // decode: h's quantized form (qin_) serves every expert's gate and up
      for (index_t s = 0; s < K; ++s) {
        const block_weights::expert_view w = b.expert(gate_.expert(0, s));
        kernel(w.gate, 1, h_.data(), g_.data(), false, qin_);
        kernel(w.up, 1, h_.data(), u_.data(), false, qin_);
        silu_mul(Backend{}, g_.data(), u_.data(), g_.data(), F);
        qexp_.valid = false;  // new input: g_
        kernel(w.down, 1, g_.data(), eo_.data() + s * C, false, qexp_);
      }
    } else {
      gate_.group(n);
      for (index_t e = 0; e < cfg_.n_expert; ++e) {
        const index_t m = gate_.count(e);
        if (m == 0) continue;
        for (index_t i = 0; i < m; ++i)  // gather the rows routed to e
          std::copy_n(h_.data() + gate_.pair(e, i) / K * C, C, xe_.data() + i * C);
        const block_weights::expert_view w = b.expert(e);
        qexp_.valid = false;  // new input: xe_
        kernel(w.gate, m, xe_.data(), g_.data(), false, qexp_);
        kernel(w.up, m, xe_.data(), u_.data(), false, qexp_);
        silu_mul(Backend{}, g_.data(), u_.data(), g_.data(), m * F);
        qexp_.valid = false;  // new input: g_
        kernel(w.down, m, g_.data(), ye_.data(), false, qexp_);
        for (index_t i = 0; i < m; ++i)  // scatter to the (row, slot) outputs
          std::copy_n(ye_.data() + i * C, C, eo_.data() + gate_.pair(e, i) * C);
      }
    }
    gate_.combine(n, C, eo_.data(), mo_.data(), x_.data());  // x += the weighted outputs
    qin_.valid = false;
  }

  void head(index_t n, bool all_logits, float* logits) {
    const index_t C = cfg_.n_embd, first = all_logits ? 0 : n - 1, rows = n - first;
    norm(m_->output_norm(), m_->output_norm_bias(), x_.data() + first * C, h_.data(), rows);
    linear(-1, linear_site::head, m_->output(), rows, h_.data(), logits, false);
  }

  /// y (rows, C) = norm(x (rows, C)) with weight w and, for LayerNorm, bias b (may be empty).
  void norm(const weight_matrix& w, const weight_matrix& b, const float* x, float* y,
            index_t rows) {
    const index_t C = cfg_.n_embd;
    qin_.valid = false;  // y is the next products' input
    if (cfg_.norm == nn::norm_kind::layer_norm)
      layer_norm_rows(Backend{}, x, C, vec(w), vec(b), eps(), y, C, rows, C);
    else
      rms_norm_rows(Backend{}, x, C, vec(w), eps(), y, C, rows, C);
  }

  /// y(n, w.rows) = x(n, w.cols) w^T (+ y): the backend's kernel for w's element type. A packed
  /// weight's quantized input is reused while qin_.valid (the caller clears it when x changes).
  void linear(index_t layer, linear_site site, const weight_matrix& w, index_t n, const float* x,
              float* y, bool accumulate) {
    if (observer_) observer_(layer, site, x, n, w.cols());
    kernel(w, n, x, y, accumulate, qin_);
  }
  /// linear() without the observer, with the quantized-input cache `in` for x.
  void kernel(const weight_matrix& w, index_t n, const float* x, float* y, bool accumulate,
              quantized_input& in) {
    if (w.quantized()) {
      linear_bt_packed(Backend{}, w.type(), n, w.rows(), w.cols(), x, w.cols(),
                       static_cast<const std::byte*>(w.data()), w.row_bytes(), y, w.rows(),
                       accumulate, in);
      return;
    }
    w.visit([&](const auto* p) {
      linear_bt(Backend{}, n, w.rows(), w.cols(), x, w.cols(), p, y, w.rows(), accumulate);
    });
  }
  /// y = x w^T (+ y when accumulate) (+ bias when it is not empty).
  void project(index_t layer, linear_site site, const weight_matrix& w, const weight_matrix& bias,
               index_t n, const float* x, float* y, bool accumulate) {
    linear(layer, site, w, n, x, y, accumulate);
    if (bias.data() != nullptr) add_bias_rows(Backend{}, y, w.rows(), vec(bias), n, w.rows());
  }
  static const float* vec(const weight_matrix& w) { return static_cast<const float*>(w.data()); }
  float eps() const noexcept { return static_cast<float>(cfg_.norm_eps); }

  const transformer<T, Backend>* m_;
  model_config cfg_;
  index_t cap_ = 0, batch_ = 0, pos_ = 0;
  kv_store cache_;
  buffer x_, h_, q_, k_, v_, att_, g_, u_, scratch_, cos_, sin_, last_, all_;
  // Mixture of experts (n_expert > 0): router logits (n, E), gathered rows and one expert's
  // output (n, C), the (row, slot) outputs (n k, C), one row's sum (C); the routing tables.
  buffer rl_, xe_, ye_, eo_, mo_;
  moe_gating gate_;
  linear_observer observer_;
  quantized_input qin_;   // the current input row quantized to 8-bit blocks (cpu decode)
  quantized_input qexp_;  // an expert's own input (gathered rows, down's activation)
  std::vector<std::int32_t> history_;
};

}  // namespace infer
TFM_END_NAMESPACE
