// typeformer/infer/batch.hpp
//
// WHAT THIS REPRESENTS
//   infer::batch_runner: one forward step of an infer::transformer over several sequences at
//   once, each with its own new tokens at its own positions, their keys and values kept in a
//   paged KV cache (infer/paged_kv.hpp). It is the engine's (infer/engine.hpp) compute: a step
//   mixes sequences that decode one token with chunks of prompts being prefilled.
//
//     infer::paged_kv kv(n_layer, n_kv_head, head_dim, {.block_tokens = 16, .blocks = 4096});
//     infer::batch_runner run(model, kv, {.max_tokens = 512, .max_seqs = 32, .context = 2048});
//     batch_item items[] = {{seq_a, ids_a, 7, true}, {seq_b, &tok_b, 1, true}};
//     std::span<const float> logits = run.step(items);   // 2 rows of V: each item's last position
//
//   An item's tokens run at positions kv.length(seq) .. + n - 1; its sequence must have room for
//   them (paged_kv::reserve); step() writes their keys and values and commits them. The rows of
//   all items are stacked into one (T, C) activation, so every weight product is one GEMM over
//   T rows (the weights are read once per step, not once per sequence); attention reads each
//   sequence's blocks through its block table (paged_attention); RoPE uses each row's own
//   position. Logits are computed only for the last row of the items that ask for them.
//
//   Kernels: Q4_0 / Q4_1 / Q8_0 weights are repacked once, at construction, for
//   gemm_interleaved (backend/cpu/quant/gemm_interleaved.hpp: the SIMD lanes are 16 weight rows,
//   so a step's rows share every unpacked weight block: at 32 rows a row costs 1/5 to 1/8 of what
//   the per-row integer dots cost); the K-quants run gemm_kq_bt (integer dots per output), other
//   types the M == 1 kernels row by row; float weights the packed float GEMM.
//
//   Determinism: a row's result does not depend on which other rows share the step, nor on how
//   a prompt is split into chunks. Every weight product runs a kernel whose rows are independent
//   (each activation row quantized to 8-bit blocks on its own; gemm_interleaved and the integer
//   dots sum each output in an order fixed by K; f32 weights always take the packed GEMM, f16 /
//   bf16 run a lone row as two), and attention runs per (sequence, kv head) with one query row's
//   result independent of the rows around it (backend/cpu/paged_attention.hpp). So a request's
//   greedy tokens are the same alone or in a batch of 32 (tests/unit/engine). The price: a long
//   prompt's prefill runs integer dots (llama.cpp's choice too) instead of the float
//   dequantize-in-pack GEMM of infer::session, and logits agree with infer::session's to
//   rounding (1e-6 relative), not bitwise.
//
//   Mixture-of-experts models (model_config::n_expert > 0; infer/session.hpp has the gating):
//   the step's rows are routed (infer/moe_gating.hpp), grouped by expert, and each expert runs
//   one product over its gathered rows with the same row-independent kernels; each row's
//   weighted expert outputs are summed in slot order. A row's result therefore does not depend
//   on which rows share its experts (the determinism below holds for MoE models too).
//
//   Memory: the interleaved weight copies (about the model's quantized bytes again), activations
//   for max_tokens rows, the RoPE table of `context` positions, the logits of max_seqs rows, all
//   allocated once: a step allocates nothing.
#pragma once

#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/cpu/paged_attention.hpp"
#include "typeformer/backend/cpu/quant/gemm_interleaved.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/backend/reference/paged_attention.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/infer/moe_gating.hpp"
#include "typeformer/infer/paged_kv.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/ops/rope.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// One sequence's share of a step: `n` tokens at `ids`, run at positions kv.length(seq) ...;
/// `logits`: return the logits of its last position; `all_logits`: of every position (what
/// speculative decoding verifies a draft with).
struct batch_item {
  paged_kv::seq_id seq = -1;
  const std::int32_t* ids = nullptr;
  index_t n = 0;
  bool logits = true;
  bool all_logits = false;
};

struct batch_options {
  index_t max_tokens = 512;  ///< rows one step may hold (the scheduler's token budget)
  index_t max_seqs = 32;     ///< items one step may hold
  index_t context = 0;       ///< positions one sequence may reach; 0: min(model's, 2048)
  index_t logit_rows = 0;    ///< logits rows one step may return; 0: max_seqs
};

template <class T, class Backend>
class batch_runner {
  using buffer = tensor<float, dyn_shape<1>>;

 public:
  batch_runner(const transformer<T, Backend>& model, paged_kv& kv, batch_options o = {})
      : m_(&model), kv_(&kv), cfg_(model.config()) {
    if (o.max_tokens <= 0 || o.max_seqs <= 0)
      fail(errc::value, "tfm::infer::batch_runner: max_tokens = ", o.max_tokens,
           " and max_seqs = ", o.max_seqs, " must be positive.");
    ctx_ = o.context > 0 ? o.context : std::min<index_t>(cfg_.context_length, 2048);
    if (cfg_.position == nn::position_kind::learned) ctx_ = std::min(ctx_, cfg_.context_length);
    max_tokens_ = o.max_tokens;
    max_seqs_ = std::min(o.max_seqs, o.max_tokens);
    logit_rows_ = std::min(o.logit_rows > 0 ? o.logit_rows : max_seqs_, o.max_tokens);
    if (kv.layers() != cfg_.n_layer || kv.kv_heads() != cfg_.n_kv_head ||
        kv.head_dim() != cfg_.head_dim)
      fail(errc::value, "tfm::infer::batch_runner: the paged KV cache holds ", kv.layers(),
           " layers of ", kv.kv_heads(), " x ", kv.head_dim(), " but the model has ", cfg_.n_layer,
           " layers of ", cfg_.n_kv_head, " x ", cfg_.head_dim, ".");
    allocate();
    if constexpr (std::is_same_v<Backend, cpu>) interleave();
  }

  index_t context() const noexcept { return ctx_; }
  index_t max_tokens() const noexcept { return max_tokens_; }
  index_t max_seqs() const noexcept { return max_seqs_; }
  const model_config& config() const noexcept { return cfg_; }
  paged_kv& cache() noexcept { return *kv_; }
  /// Bytes of the interleaved copies of the weights (gemm_interleaved), activations, tables and
  /// logits (the KV pool is the paged_kv's).
  std::size_t bytes() const noexcept {
    std::size_t b = 0;
    for (const auto& [key, iw] : inter_) b += iw.bytes();
    b += q8_.qs.capacity() + (q8_.d.capacity() + q8_.s.capacity()) * sizeof(float) +
         q8_.sum.capacity() * sizeof(std::int32_t) + q8k_.blocks.capacity() * sizeof(block_q8_K) +
         qin_.bytes();
    for (const buffer* p : {&x_, &h_, &q_, &k_, &v_, &att_, &g_, &u_, &scratch_, &cos_, &sin_,
                            &logits_, &rl_, &xe_, &ye_, &eo_})
      b += static_cast<std::size_t>(p->size()) * sizeof(float);
    return b + gate_.bytes();
  }

  /// Runs one step over `items` (see the file comment). Returns the logits rows the items ask
  /// for, in their order (rows of V floats: an item's last row, or all of its rows), valid until
  /// the next step.
  std::span<const float> step(std::span<const batch_item> items) {
    plan(items);
    const index_t Tn = rows_, C = cfg_.n_embd;
    for (index_t r = 0; r < Tn; ++r) m_->token_embd().row(ids_[r], x_.data() + r * C);
    if (cfg_.position == nn::position_kind::learned) {
      for (index_t r = 0; r < Tn; ++r) m_->position_embd().row(pos_[r], h_.data() + r * C);
      for (index_t i = 0; i < Tn * C; ++i) x_.data()[i] += h_.data()[i];
    }
    for (index_t l = 0; l < cfg_.n_layer; ++l) {
      attention_block(l, items);
      if (cfg_.n_expert > 0)
        moe_block(l);
      else
        mlp_block(l);
    }
    for (const batch_item& it : items) kv_->commit(it.seq, it.n);
    return head(items);
  }

 private:
  void allocate() {
    const index_t C = cfg_.n_embd, HD = cfg_.n_head * cfg_.head_dim,
                  GD = cfg_.n_kv_head * cfg_.head_dim;
    const index_t n = max_tokens_;
    auto make = [](index_t count) { return buffer(dyn_shape<1>(std::max<index_t>(count, 1))); };
    x_ = make(n * C);
    h_ = make(n * std::max(C, HD));
    q_ = make(n * HD);
    k_ = make(n * GD);
    v_ = make(n * GD);
    att_ = make(n * HD);
    g_ = make(n * cfg_.ffn);
    u_ = make(n * cfg_.ffn);
    scratch_ = make(paged_attention_scratch(kv_->layer(0), cfg_.n_head, max_seqs_,
                                            std::max<index_t>(max_seqs_, 2) * ctx_));
    logits_ = make(logit_rows_ * cfg_.vocab);
    ids_.resize(static_cast<std::size_t>(n));
    pos_.resize(static_cast<std::size_t>(n));
    queries_.reserve(static_cast<std::size_t>(max_seqs_));
    qin_.reserve(std::max({C, HD, cfg_.ffn}));
    if (cfg_.n_expert > 0) {  // router logits, gathered rows, expert outputs, routing tables
      const index_t E = cfg_.n_expert, K = cfg_.n_expert_used;
      rl_ = make(n * E);
      xe_ = make(n * C);
      ye_ = make(n * C);
      eo_ = make(n * K * C);
      gate_ = moe_gating(n, E, K);
    }
    // The integer-dot paths' activation buffers, sized for a full step once.
    const index_t K32 = (std::max({C, HD, cfg_.ffn}) + 31) / 32 * 32;
    std::vector<float> zero(static_cast<std::size_t>(n * K32), 0.0f);
    cpu_kernels::quantize_activations(n, K32, zero.data(), K32, q8_);
    if (K32 >= 256)
      cpu_kernels::quantize_activations_q8k(n, K32 / 256 * 256, zero.data(), K32, q8k_);
    if (cfg_.position != nn::position_kind::rope) return;
    const tfm::detail::rope_table tb =
        tfm::detail::make_rope_table(cfg_.rope, cfg_.head_dim, ctx_, 0);
    cos_ = make(static_cast<index_t>(tb.cos.size()));
    sin_ = make(static_cast<index_t>(tb.sin.size()));
    for (std::size_t i = 0; i < tb.cos.size(); ++i) {
      cos_.data()[i] = static_cast<float>(tb.cos[i]);
      sin_.data()[i] = static_cast<float>(tb.sin[i]);
    }
  }

  /// Repacks every Q4_0 / Q4_1 / Q8_0 weight (the head included) for gemm_interleaved, on
  /// machines with its AVX-512 VNNI kernel; elsewhere the integer-dot GEMM (gemv_q.hpp) is faster
  /// than the interleaved kernel's scalar form, and rows stay independent with it too.
  void interleave() {
    if (!TFM_INTERLEAVED_VNNI512) return;
    auto add = [&](const weight_matrix& w) {
      if (w.data() == nullptr || !w.quantized() || !cpu_kernels::interleave_supported(w.type()) ||
          w.cols() % 32 != 0 || inter_.count(w.data()) != 0)
        return;
      inter_.emplace(w.data(), cpu_kernels::interleave_weight(
                                   w.type(), static_cast<const std::byte*>(w.data()), w.row_bytes(),
                                   w.rows(), w.cols()));
    };
    for (index_t l = 0; l < cfg_.n_layer; ++l) {
      const block_weights& b = m_->block(l);
      for (const weight_matrix* w : {&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down})
        add(*w);
      add(b.router);
      for (index_t e = 0; e < cfg_.n_expert; ++e) {  // each expert's view on its own
        const block_weights::expert_view v = b.expert(e);
        add(v.gate);
        add(v.up);
        add(v.down);
      }
    }
    add(m_->output());
  }

  /// Checks the items and stacks their tokens and positions.
  void plan(std::span<const batch_item> items) {
    const index_t count = static_cast<index_t>(items.size());
    if (count == 0) fail(errc::value, "tfm::infer::batch_runner::step: no items.");
    if (count > max_seqs_)
      fail(errc::value, "tfm::infer::batch_runner::step: ", count,
           " items exceed max_seqs = ", max_seqs_, ".");
    rows_ = 0;
    index_t out = 0;
    for (const batch_item& it : items) {
      out += it.all_logits ? it.n : it.logits ? 1 : 0;
      if (out > logit_rows_)
        fail(errc::value, "tfm::infer::batch_runner::step: the items ask for more than ",
             logit_rows_, " rows of logits (batch_options::logit_rows).");
      if (it.n <= 0 || it.ids == nullptr)
        fail(errc::value, "tfm::infer::batch_runner::step: sequence ", it.seq,
             " has no tokens to run.");
      if (rows_ + it.n > max_tokens_)
        fail(errc::value,
             "tfm::infer::batch_runner::step: the items hold more than max_tokens = ", max_tokens_,
             " tokens.");
      const index_t p0 = kv_->length(it.seq);
      if (p0 + it.n > ctx_)
        fail(errc::index, "tfm::infer::batch_runner::step: sequence ", it.seq, " at positions ", p0,
             " .. ", p0 + it.n - 1, " exceeds the context of ", ctx_, ".");
      for (index_t t = 0; t < it.n; ++t) {
        const std::int32_t id = it.ids[t];
        if (id < 0 || id >= cfg_.vocab)
          fail(errc::index, "tfm::infer::batch_runner::step: token id ", id,
               " is outside the vocabulary of ", cfg_.vocab, ".");
        ids_[static_cast<std::size_t>(rows_ + t)] = id;
        pos_[static_cast<std::size_t>(rows_ + t)] = p0 + t;
      }
      rows_ += it.n;
    }
    for (std::size_t a = 0; a < items.size(); ++a)
      for (std::size_t b = a + 1; b < items.size(); ++b)
        if (items[a].seq == items[b].seq)
          fail(errc::value, "tfm::infer::batch_runner::step: sequence ", items[a].seq,
               " appears twice in one step.");
  }

  void attention_block(index_t l, std::span<const batch_item> items) {
    const block_weights& b = m_->block(l);
    const index_t D = cfg_.head_dim, H = cfg_.n_head, G = cfg_.n_kv_head;
    const index_t HD = H * D, GD = G * D, Tn = rows_;
    norm(b.attn_norm, b.attn_norm_b, x_.data(), h_.data(), Tn);
    project(b.wq, b.bq, h_.data(), q_.data(), false);
    project(b.wk, b.bk, h_.data(), k_.data(), false);
    project(b.wv, b.bv, h_.data(), v_.data(), false);
    queries_.clear();
    index_t r = 0;
    for (const batch_item& it : items) {
      const index_t p0 = pos_[static_cast<std::size_t>(r)];
      if (cfg_.position == nn::position_kind::rope) {
        const rope_pairs pairs = cfg_.rope.pair_style == rope_config::style::interleaved
                                     ? rope_pairs::interleaved
                                     : rope_pairs::half;
        const float* cs = cos_.data() + p0 * (D / 2);
        const float* sn = sin_.data() + p0 * (D / 2);
        rope_rows(Backend{}, q_.data() + r * HD, HD, it.n, H, D, cs, sn, pairs);
        rope_rows(Backend{}, k_.data() + r * GD, GD, it.n, G, D, cs, sn, pairs);
      }
      kv_->write(l, it.seq, p0, it.n, k_.data() + r * GD, v_.data() + r * GD, GD);
      queries_.push_back(
          kv_->query(it.seq, p0, it.n, q_.data() + r * HD, HD, att_.data() + r * HD, HD));
      r += it.n;
    }
    paged_attention(Backend{}, kv_->layer(l), H, 1.0 / std::sqrt(static_cast<double>(D)),
                    std::span<const paged_query>(queries_), scratch_.data());
    q8_src_ = nullptr;                                  // new input: att_
    project(b.wo, b.bo, att_.data(), x_.data(), true);  // x += o Wo^T (+ bo)
  }

  void mlp_block(index_t l) {
    const block_weights& b = m_->block(l);
    const index_t Tn = rows_;
    norm(b.ffn_norm, b.ffn_norm_b, x_.data(), h_.data(), Tn);
    project(b.w_up, b.b_up, h_.data(), u_.data(), false);
    if (cfg_.mlp == nn::mlp_kind::swiglu) {
      project(b.w_gate, b.b_gate, h_.data(), g_.data(), false);
      silu_mul(Backend{}, g_.data(), u_.data(), g_.data(), Tn * cfg_.ffn);
    } else {
      gelu_tanh(Backend{}, u_.data(), g_.data(), Tn * cfg_.ffn);
    }
    q8_src_ = nullptr;                                        // new input: g_
    project(b.w_down, b.b_down, g_.data(), x_.data(), true);  // x += a Wd^T (+ bd)
  }

  /// The mixture-of-experts MLP: route every row, group the rows by expert, one product per
  /// expert over its gathered rows, the weighted outputs summed per row in slot order.
  void moe_block(index_t l) {
    const block_weights& b = m_->block(l);
    const index_t Tn = rows_, C = cfg_.n_embd, F = cfg_.ffn, K = cfg_.n_expert_used;
    norm(b.ffn_norm, b.ffn_norm_b, x_.data(), h_.data(), Tn);
    linear(b.router, Tn, h_.data(), rl_.data(), false);  // (T, E) router logits
    gate_.route(rl_.data(), Tn);
    gate_.group(Tn);
    for (index_t e = 0; e < cfg_.n_expert; ++e) {
      const index_t m = gate_.count(e);
      if (m == 0) continue;
      for (index_t i = 0; i < m; ++i)  // gather the rows routed to e
        std::copy_n(h_.data() + gate_.pair(e, i) / K * C, C, xe_.data() + i * C);
      const block_weights::expert_view w = b.expert(e);
      q8_src_ = nullptr;  // new input: xe_ (gate and up share its quantized form)
      linear(w.gate, m, xe_.data(), g_.data(), false);
      linear(w.up, m, xe_.data(), u_.data(), false);
      silu_mul(Backend{}, g_.data(), u_.data(), g_.data(), m * F);
      q8_src_ = nullptr;  // new input: g_
      linear(w.down, m, g_.data(), ye_.data(), false);
      for (index_t i = 0; i < m; ++i)  // scatter to the (row, slot) outputs
        std::copy_n(ye_.data() + i * C, C, eo_.data() + gate_.pair(e, i) * C);
    }
    gate_.combine(Tn, C, eo_.data(), ye_.data(), x_.data());  // the session's order
    q8_src_ = nullptr;
  }

  std::span<const float> head(std::span<const batch_item> items) {
    const index_t C = cfg_.n_embd;
    index_t r = 0, out = 0;
    for (const batch_item& it : items) {  // gather the rows whose logits are asked for
      r += it.n;
      const index_t first = it.all_logits ? r - it.n : it.logits ? r - 1 : r;
      for (index_t i = first; i < r; ++i, ++out)
        std::copy_n(x_.data() + i * C, C, h_.data() + out * C);
    }
    if (out == 0) return {};
    norm(m_->output_norm(), m_->output_norm_bias(), h_.data(), u_.data(), out);
    linear(m_->output(), out, u_.data(), logits_.data(), false);
    return {logits_.data(), static_cast<std::size_t>(out * cfg_.vocab)};
  }

  void norm(const weight_matrix& w, const weight_matrix& b, const float* x, float* y,
            index_t rows) {
    const index_t C = cfg_.n_embd;
    q8_src_ = nullptr;  // y is the next products' input
    if (cfg_.norm == nn::norm_kind::layer_norm)
      layer_norm_rows(Backend{}, x, C, vec(w), vec(b), eps(), y, C, rows, C);
    else
      rms_norm_rows(Backend{}, x, C, vec(w), eps(), y, C, rows, C);
  }

  /// y(rows, w.rows) = x(rows, w.cols) w^T (+ y): row-independent kernels (file comment).
  void linear(const weight_matrix& w, index_t rows, const float* x, float* y, bool accumulate) {
    const index_t N = w.rows(), K = w.cols();
    if (w.quantized()) {
      const ggml_type t = w.type();
      const auto* wb = static_cast<const std::byte*>(w.data());
      if constexpr (std::is_same_v<Backend, cpu>) {
        if (auto it = inter_.find(w.data()); it != inter_.end()) {
          if (q8_src_ != x || q8_.rows != rows || q8_.cols != K) {  // q, k, v (gate, up) share it
            cpu_kernels::quantize_activations(rows, K, x, K, q8_);
            q8_src_ = x;
          }
          cpu_kernels::gemm_interleaved(it->second, rows, q8_, y, N, accumulate);
          return;
        }
        if (cpu_kernels::q8k_dot_supported(t) && K % 256 == 0) {
          cpu_kernels::gemm_kq_bt(t, rows, N, K, x, K, wb, w.row_bytes(), y, N, q8k_, accumulate);
          return;
        }
        if (cpu_kernels::q8_dot_supported(t)) {
          q8_src_ = nullptr;
          cpu_kernels::gemm_q_bt(t, rows, N, K, x, K, wb, w.row_bytes(), y, N, q8_, accumulate);
          return;
        }
      }
      for (index_t r = 0; r < rows; ++r) {  // one row at a time: the M == 1 kernels
        qin_.valid = false;
        linear_bt_packed(Backend{}, t, 1, N, K, x + r * K, K, wb, w.row_bytes(), y + r * N, N,
                         accumulate, qin_);
      }
      return;
    }
    // The float GEMMs take a GEMV for M == 1 (and, for f32, for tiny products), which sums in
    // another order than their M >= 2 path. So f32 runs the packed kernel for every M
    // (gemm_bt_row_stable) and f16 / bf16 the row-wise kernel that sums every row as the GEMV
    // does (gemm_half_bt_rowwise): a row's result never depends on how many rows share the step.
    if constexpr (std::is_same_v<Backend, cpu>) {
      if (w.type() == ggml_type::f32) {
        cpu_kernels::gemm_bt_row_stable(rows, N, K, x, K, static_cast<const float*>(w.data()), K, y,
                                        N, accumulate);
      } else {
        w.visit([&](const auto* p) {
          using H = std::remove_cvref_t<decltype(*p)>;
          if constexpr (cpu_kernels::half_weight<H>)
            cpu_kernels::gemm_half_bt_rowwise(rows, N, K, x, K, p, K, y, N, accumulate);
          else
            fail(errc::unsupported, "tfm::infer::batch_runner: unexpected weight type.");
        });
      }
    } else {
      w.visit([&](const auto* p) { linear_bt(Backend{}, rows, N, K, x, K, p, y, N, accumulate); });
    }
  }
  void project(const weight_matrix& w, const weight_matrix& bias, const float* x, float* y,
               bool accumulate) {
    linear(w, rows_, x, y, accumulate);
    if (bias.data() != nullptr) add_bias_rows(Backend{}, y, w.rows(), vec(bias), rows_, w.rows());
  }
  static const float* vec(const weight_matrix& w) { return static_cast<const float*>(w.data()); }
  float eps() const noexcept { return static_cast<float>(cfg_.norm_eps); }

  const transformer<T, Backend>* m_;
  paged_kv* kv_;
  model_config cfg_;
  index_t ctx_ = 0, max_tokens_ = 0, max_seqs_ = 0, logit_rows_ = 0, rows_ = 0;
  buffer x_, h_, q_, k_, v_, att_, g_, u_, scratch_, cos_, sin_, logits_;
  buffer rl_, xe_, ye_, eo_;  // MoE: router logits, gathered rows, an expert's / every slot's out
  moe_gating gate_;
  std::vector<std::int32_t> ids_;
  std::vector<index_t> pos_;
  std::vector<paged_query> queries_;
  cpu_kernels::q8_activations q8_;
  const float* q8_src_ = nullptr;  // the input q8_ holds (null: none)
  cpu_kernels::q8k_activations q8k_;
  std::unordered_map<const void*, cpu_kernels::interleaved_weight> inter_;
  quantized_input qin_;
};

}  // namespace infer
TFM_END_NAMESPACE
