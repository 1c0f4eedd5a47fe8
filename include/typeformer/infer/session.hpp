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
//   The forward (one chunk of n tokens at positions p .. p + n - 1), shapes right-aligned:
//     x = token_embd[ids]                                               (n, C)
//     per layer:  h = rms_norm(x) * attn_norm
//                 q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)    (n, HD), (n, GD), (n, GD)
//                 rope(q), rope(k); cache[p .. p+n) = k, v
//                 x += attention(q, cache[0 .. p+n)) Wo^T              (n, C)
//                 h = rms_norm(x) * ffn_norm
//                 x += (silu(h Wg^T) * (h Wu^T)) Wd^T                   (n, F) -> (n, C)
//     logits = rms_norm(x) * output_norm  Wout^T     (last row, or every row)     (1 or n, V)
#pragma once

#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/infer/kv_store.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/ops/rope.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

struct session_options {
  index_t context = 0;  ///< positions the cache holds; 0: min(model context_length, 2048)
  index_t batch = 512;  ///< positions one prefill step runs together (activation memory)
};

template <class T, class Backend>
class session {
  using buffer = tensor<float, dyn_shape<1>>;

 public:
  explicit session(const transformer<T, Backend>& model, session_options o = {})
      : m_(&model), cfg_(model.config()) {
    cap_ = o.context > 0 ? o.context : std::min<index_t>(cfg_.context_length, 2048);
    batch_ = std::max<index_t>(1, std::min(o.batch, cap_));
    cache_ = kv_store(cfg_.n_layer, cfg_.n_kv_head, cap_, cfg_.head_dim);
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
    for (const buffer* p :
         {&x_, &h_, &q_, &k_, &v_, &att_, &g_, &u_, &scratch_, &cos_, &sin_, &last_, &all_})
      b += static_cast<std::size_t>(p->size()) * sizeof(float);
    return b;
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
    scratch_ = make(cached_attention_scratch(geo));
    last_ = make(cfg_.vocab);
    history_.reserve(static_cast<std::size_t>(cap_));
    // cos/sin of every position the cache can hold (rope_config's scalings; ops/rope.hpp).
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
    for (index_t l = 0; l < cfg_.n_layer; ++l) {
      attention_block(l, n);
      mlp_block(l, n);
    }
    head(n, all_logits, logits);
    pos_ += n;
    cache_.set_length(pos_);
    history_.insert(history_.end(), ids, ids + n);
  }

  void attention_block(index_t l, index_t n) {
    const block_weights& b = m_->block(l);
    const index_t C = cfg_.n_embd, D = cfg_.head_dim, H = cfg_.n_head, G = cfg_.n_kv_head;
    const index_t HD = H * D, GD = G * D;
    rms_norm_rows(Backend{}, x_.data(), C, vec(b.attn_norm), eps(), h_.data(), C, n, C);
    project(b.wq, b.bq, n, h_.data(), q_.data());
    project(b.wk, b.bk, n, h_.data(), k_.data());
    project(b.wv, b.bv, n, h_.data(), v_.data());
    const rope_pairs pairs = cfg_.rope.pair_style == rope_config::style::interleaved
                                 ? rope_pairs::interleaved
                                 : rope_pairs::half;
    const float* cs = cos_.data() + pos_ * (D / 2);
    const float* sn = sin_.data() + pos_ * (D / 2);
    rope_rows(Backend{}, q_.data(), HD, n, H, D, cs, sn, pairs);
    rope_rows(Backend{}, k_.data(), GD, n, G, D, cs, sn, pairs);
    cache_.write(l, pos_, n, k_.data(), v_.data(), GD);
    const cached_attention_geometry geo{
        n, H, G, D, cap_, pos_, 1.0 / std::sqrt(static_cast<double>(D))};
    cached_attention(Backend{}, geo, q_.data(), cache_.keys(l), cache_.values(l), att_.data(),
                     scratch_.data());
    linear(b.wo, n, att_.data(), x_.data(), true);  // x += o Wo^T
  }

  void mlp_block(index_t l, index_t n) {
    const block_weights& b = m_->block(l);
    const index_t C = cfg_.n_embd;
    rms_norm_rows(Backend{}, x_.data(), C, vec(b.ffn_norm), eps(), h_.data(), C, n, C);
    linear(b.w_gate, n, h_.data(), g_.data(), false);
    linear(b.w_up, n, h_.data(), u_.data(), false);
    silu_mul(Backend{}, g_.data(), u_.data(), g_.data(), n * cfg_.ffn);
    linear(b.w_down, n, g_.data(), x_.data(), true);  // x += a Wd^T
  }

  void head(index_t n, bool all_logits, float* logits) {
    const index_t C = cfg_.n_embd, first = all_logits ? 0 : n - 1, rows = n - first;
    rms_norm_rows(Backend{}, x_.data() + first * C, C, vec(m_->output_norm()), eps(), h_.data(), C,
                  rows, C);
    linear(m_->output(), rows, h_.data(), logits, false);
  }

  /// y(n, w.rows) = x(n, w.cols) w^T (+ y): the backend's kernel for w's element type.
  void linear(const weight_matrix& w, index_t n, const float* x, float* y, bool accumulate) {
    w.visit([&](const auto* p) {
      linear_bt(Backend{}, n, w.rows(), w.cols(), x, w.cols(), p, y, w.rows(), accumulate);
    });
  }
  void project(const weight_matrix& w, const weight_matrix& bias, index_t n, const float* x,
               float* y) {
    linear(w, n, x, y, false);
    if (bias.data() == nullptr) return;
    const float* bp = vec(bias);
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < w.rows(); ++j) y[t * w.rows() + j] += bp[j];
  }
  static const float* vec(const weight_matrix& w) { return static_cast<const float*>(w.data()); }
  float eps() const noexcept { return static_cast<float>(cfg_.norm_eps); }

  const transformer<T, Backend>* m_;
  model_config cfg_;
  index_t cap_ = 0, batch_ = 0, pos_ = 0;
  kv_store cache_;
  buffer x_, h_, q_, k_, v_, att_, g_, u_, scratch_, cos_, sin_, last_, all_;
  std::vector<std::int32_t> history_;
};

}  // namespace infer
TFM_END_NAMESPACE
