// typeformer/nn/gpt.hpp
//
// nn::gpt<Config, T>: a decoder-only transformer covering GPT-2 style (LayerNorm, GELU, learned
// positions, biases, tied embeddings) and LLaMA style (RMSNorm, SwiGLU, RoPE, grouped-query
// attention) models, selected by the config's fields (nn/config.hpp). Pre-norm blocks:
//   x = x + attn(norm_1(x));  x = x + mlp(norm_2(x))            (GPT-2, Radford et al. 2019)
//
// Shapes: ids (B, T) int32 -> logits (B, T, V); inside, activations are (B, T, C) and the
// attention heads (B, H, T, D), D = C / H. With a static config, C, V, F and the heads are in the
// types; B and T are always dynamic.
//
// Parameter names follow GPT-2's checkpoint layout where it has one (wte, wpe, h.N.ln_1,
// h.N.attn.c_attn, h.N.attn.c_proj, h.N.ln_2, h.N.mlp.c_fc, h.N.mlp.c_proj, ln_f, lm_head).
// Initialisation (GPT-2 / nanoGPT): N(0, 0.02) weights and embeddings, zero biases, unit norms,
// residual output projections N(0, 0.02 / sqrt(2 n_layer)).
//
// Incremental decoding: forward(ids, pos0, cache) with a KV cache (any type with the interface
// of infer::kv_cache) appends the new keys and values at positions pos0 .. pos0 + T - 1 and
// attends over everything cached so far.
#pragma once

#include "typeformer/autodiff/checkpoint.hpp"
#include "typeformer/nn/config.hpp"
#include "typeformer/nn/layers.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/nn/moe.hpp"
#include "typeformer/ops/attention.hpp"
#include "typeformer/ops/dropout.hpp"
#include "typeformer/ops/linear_loss.hpp"
#include "typeformer/ops/loss.hpp"
#include "typeformer/ops/rope.hpp"
#include "typeformer/ops/view.hpp"

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace nn {

/// Interface a KV cache offers to attention (infer/kv_cache.hpp implements it).
struct no_cache {};

/// Tag of nn::gpt's constructor that leaves the parameters without initial values.
struct uninitialized_t {
  explicit uninitialized_t() = default;
};
inline constexpr uninitialized_t uninitialized{};

/// Document ids per (batch, position) of packed rows (B * T values, non-decreasing along a row):
/// attention does not cross documents (tfm::attention_options::segments). Null: no mask.
using segment_ids = std::shared_ptr<const std::vector<std::int32_t>>;

/// GPT-2's init stddev of the residual output projections: 0.02 / sqrt(2 n_layer) (Radford et
/// al. 2019, section 2.3), 0.02 for a config without layers.
template <class Cfg>
double residual_std(const Cfg& cfg) {
  return cfg.n_layer > 0 ? 0.02 / std::sqrt(2.0 * static_cast<double>(cfg.n_layer)) : 0.02;
}

/// The builder of a module built on its own from a config: validates the config first.
template <class Cfg>
builder standalone_builder(const Cfg& cfg, std::uint64_t seed, std::string prefix) {
  validate(cfg);
  return builder{seed, std::move(prefix)};
}

/// Causal self-attention with the config's heads, positions and window: x (B, T, C) -> (B, T, C).
/// Parameters c_attn (the fused q, k, v projection, ((H + 2G) D, C)) and c_proj (C, C).
template <class T, class Cfg>
class attention_layer : public module_base<T, attention_layer<T, Cfg>> {
  static constexpr index_t C = static_n_embd<Cfg>;

 public:
  /// An empty module (no parameters): assign a built one to it.
  attention_layer() = default;
  /// On its own: sizes from the config (static fields are in the types), GPT-2 initialisation
  /// with c_proj scaled by residual_std(cfg); names "<prefix>.c_attn.weight", ...
  /// nn::attention_layer<float, nn::gpt2_tiny> attn(nn::gpt2_tiny{}, /*seed=*/1).
  attention_layer(const Cfg& cfg, std::uint64_t seed, std::string prefix = {})
      : attention_layer(standalone_builder(cfg, seed, std::move(prefix)), cfg, residual_std(cfg)) {}
  /// Inside a model: the seed and the name prefix come from the builder.
  attention_layer(const builder& b, const Cfg& cfg, double proj_std)
      : H_(cfg.n_head),
        G_(cfg.n_kv_head),
        D_(cfg.n_embd / cfg.n_head),
        window_(cfg.window),
        position_(cfg.position),
        rope_base_(cfg.rope_base),
        c_attn(b.sub("c_attn"), cfg.n_embd,
               (cfg.n_head + 2 * cfg.n_kv_head) * (cfg.n_embd / cfg.n_head), cfg.bias),
        c_proj(b.sub("c_proj"), cfg.n_embd, cfg.n_embd, cfg.bias, proj_std) {}

  /// x (B, T, C) -> (B, T, C); pos0: position of x's first step; cache: KV cache or no_cache.
  template <class S, class Cache>
  var<T, S> operator()(const var<T, S>& x, index_t pos0, Cache* cache, index_t layer,
                       const segment_ids& segments = {}) const {
    const index_t B = x.extent(0), Tn = x.extent(1);
    auto qkv = c_attn(x);                        // (B, T, (H + 2G) D)
    auto heads = [&](index_t from, index_t n) {  // (B, T, n D) slice -> (B, n, T, D)
      auto s = slice<2>(qkv, from * D_, (from + n) * D_);
      auto r = reshape(s, dyn_shape<4>(B, Tn, n, D_));
      return permute<0, 2, 1, 3>(r);
    };
    auto q = heads(0, H_);
    auto k = heads(H_, G_);
    auto v = heads(H_ + G_, G_);
    if (position_ == position_kind::rope) {
      rope_config rc;
      rc.base = rope_base_;
      q = rope(q, rc, pos0);
      k = rope(k, rc, pos0);
    }
    attention_options o;
    o.causal = true;
    o.window = window_;
    o.alibi = position_ == position_kind::alibi;
    o.q_offset = pos0;
    o.segments = segments;
    var<T, dyn_shape<4>> y;
    if constexpr (std::is_same_v<Cache, no_cache>) {
      (void)cache;
      (void)layer;
      y = attention(q, k, v, o);
    } else {
      auto [kk, vv] = cache->append(layer, k.value(), v.value(), pos0);
      y = attention(q, constant(kk), constant(vv), o);
    }
    auto yt = permute<0, 2, 1, 3>(y);  // (B, T, H, D)
    auto ym = reshape(yt, shape<dyn, dyn, C>::from_extents({B, Tn, H_ * D_}));
    return var<T, S>(c_proj(ym).data());
  }
  /// x (B, T, C) at positions 0 .. T - 1, without a cache.
  template <class S>
  var<T, S> operator()(const var<T, S>& x) const {
    return (*this)(x, 0, static_cast<no_cache*>(nullptr), 0);
  }
  void collect(parameter_list<T>& out) const {
    c_attn.collect(out);
    c_proj.collect(out);
  }

 private:
  index_t H_ = 1, G_ = 1, D_ = 1, window_ = 0;
  position_kind position_ = position_kind::learned;
  double rope_base_ = 10000.0;

 public:
  linear<T, C, dyn> c_attn;
  linear<T, C, C> c_proj;
};

/// A pre-norm transformer block: x + attn(ln_1(x)), then h + mlp(ln_2(h)); (B, T, C) -> (B, T, C).
template <class T, class Cfg>
class block : public module_base<T, block<T, Cfg>> {
  static constexpr index_t C = static_n_embd<Cfg>, F = static_ffn<Cfg>;

 public:
  /// An empty module (no parameters): assign a built one to it.
  block() = default;
  /// On its own: sizes from the config, GPT-2 initialisation; names "<prefix>.ln_1.weight",
  /// "<prefix>.attn.c_attn.weight", ... nn::block<float, nn::gpt2_tiny> blk(nn::gpt2_tiny{}, 1).
  block(const Cfg& cfg, std::uint64_t seed, std::string prefix = {})
      : block(standalone_builder(cfg, seed, std::move(prefix)), cfg) {}
  /// Inside a model: the seed and the name prefix come from the builder.
  block(const builder& b, const Cfg& cfg)
      : dropout_(cfg.dropout),
        ln_1(b.sub("ln_1"), cfg.n_embd, cfg.norm, cfg.bias, cfg.norm_eps),
        attn(b.sub("attn"), cfg, residual_std(cfg)),
        ln_2(b.sub("ln_2"), cfg.n_embd, cfg.norm, cfg.bias, cfg.norm_eps) {
    if (cfg.mlp == mlp_kind::moe)
      moe_ = moe_ffn<T, Cfg>(b.sub("mlp"), cfg, residual_std(cfg));
    else
      mlp_ = mlp<T, C, F>(b.sub("mlp"), cfg.n_embd, cfg.ffn, cfg.mlp, cfg.bias, residual_std(cfg));
  }

  template <class S, class Cache>
  var<T, S> operator()(const var<T, S>& x, index_t pos0, Cache* cache, index_t layer, bool training,
                       std::uint64_t seed, std::uint64_t& offset,
                       const segment_ids& segments = {}) const {
    auto drop = [&](const var<T, S>& h) {
      if (!training || dropout_ == 0.0) return h;
      auto r = dropout(h, dropout_, seed, offset, true);
      offset += static_cast<std::uint64_t>(h.size());
      return r;
    };
    var<T, S> h = x + drop(attn(ln_1(x), pos0, cache, layer, segments));
    if (is_moe()) return h + drop(moe_(ln_2(h), training, seed, offset));
    return h + drop(var<T, S>(mlp_(ln_2(h)).data()));
  }
  /// x (B, T, C) at positions 0 .. T - 1, without a cache or dropout (evaluation).
  template <class S>
  var<T, S> operator()(const var<T, S>& x) const {
    std::uint64_t offset = 0;
    return (*this)(x, 0, static_cast<no_cache*>(nullptr), 0, false, 0, offset);
  }
  void collect(parameter_list<T>& out) const {
    ln_1.collect(out);
    attn.collect(out);
    ln_2.collect(out);
    if (is_moe())
      moe_.collect(out);
    else
      mlp_.collect(out);
  }
  /// Whether the feed-forward half is the mixture of experts (moe_) rather than mlp_.
  bool is_moe() const noexcept { return moe_.w_gate.defined(); }

 private:
  double dropout_ = 0.0;

 public:
  norm<T, C> ln_1;
  attention_layer<T, Cfg> attn;
  norm<T, C> ln_2;
  mlp<T, C, F> mlp_;     // empty when the config's mlp is moe
  moe_ffn<T, Cfg> moe_;  // empty otherwise
};

template <class Cfg, class T = float>
class gpt {
 public:
  static constexpr index_t C = static_n_embd<Cfg>, V = static_vocab<Cfg>,
                           Tmax = static_block_size<Cfg>;
  using config_type = Cfg;
  using value_type = T;
  using ids_type = tensor<std::int32_t, shape<dyn, dyn>>;
  using logits_type = var<T, shape<dyn, dyn, V>>;

  explicit gpt(const Cfg& cfg = Cfg{}, std::uint64_t seed = 0) : gpt(cfg, seed, true) {}
  /// A model whose parameters are allocated but hold no defined values (their weights are loaded
  /// next, e.g. train::load_gguf_model): skips the initialisation's random draws.
  gpt(const Cfg& cfg, uninitialized_t) : gpt(cfg, 0, false) {}

 private:
  gpt(const Cfg& cfg, std::uint64_t seed, bool fill) : cfg_(cfg), seed_(seed) {
    validate(cfg_);
    builder b{seed, "", fill};
    wte = embedding<T, V, C>(b.sub("wte"), cfg.vocab, cfg.n_embd);
    if (cfg.position == position_kind::learned)
      wpe = embedding<T, Tmax, C>(b.sub("wpe"), cfg.block_size, cfg.n_embd);
    for (index_t l = 0; l < cfg.n_layer; ++l) h.emplace_back(b.sub("h." + std::to_string(l)), cfg_);
    ln_f = norm<T, C>(b.sub("ln_f"), cfg.n_embd, cfg.norm, cfg.bias, cfg.norm_eps);
    if (!cfg.tie_embeddings)
      lm_head = linear<T, C, V>(b.sub("lm_head"), cfg.n_embd, cfg.vocab, false);
  }

 public:
  const Cfg& config() const noexcept { return cfg_; }

  /// Logits (B, T, V) for token ids (B, T) at positions pos0 .. pos0 + T - 1.
  template <class Cache = no_cache>
  logits_type forward(const ids_type& ids, bool training = false, index_t pos0 = 0,
                      Cache* cache = nullptr) const {
    return logits_type(tfm::linear(hidden(ids, training, pos0, cache), evaluation_head()).data());
  }

  /// The head's weight (V, C) for evaluation and sampling (no gradient needed): head_weight(),
  /// or, when the tied head is held as frozen rows (wte_rows: bf16 or NF4), those rows widened to
  /// a T constant, once per call.
  var<T, shape<V, C>> evaluation_head() const {
    if (!head_rows()) return head_weight();
    const auto& r = *head_rows();
    tensor<T, shape<V, C>> w(shape<V, C>::from_extents({r.rows(), r.cols()}));
    r.read_rows(0, r.rows(), w.data());
    return var<T, shape<V, C>>(w, false);
  }

  /// The final hidden states (B, T, C) after ln_f, which the head maps to logits.
  template <class Cache = no_cache>
  var<T, shape<dyn, dyn, C>> hidden(const ids_type& ids, bool training = false, index_t pos0 = 0,
                                    Cache* cache = nullptr,
                                    const segment_ids& segments = {}) const {
    const index_t B = ids.extent(0), Tn = ids.extent(1);
    if (pos0 < 0 || pos0 + Tn > cfg_.block_size)
      fail(errc::shape, "tfm::nn::gpt: positions ", pos0, " .. ", pos0 + Tn - 1,
           " exceed the model's block_size ", cfg_.block_size, ".");
    for (index_t i = 0; i < ids.size(); ++i)
      if (ids.data()[i] < 0 || ids.data()[i] >= cfg_.vocab)
        fail(errc::index, "tfm::nn::gpt: token id ", ids.data()[i],
             " is outside the vocabulary of ", cfg_.vocab, ".");
    using SX = shape<dyn, dyn, C>;
    var<T, SX> x;
    if (wte_rows) {  // frozen rows held in another format: a constant gathered row by row
      tensor<T, SX> e(SX::from_extents({B, Tn, cfg_.n_embd}));
      const index_t n = ids.size(), c = cfg_.n_embd;
      for (index_t i = 0; i < n; ++i)
        wte_rows->read_rows(ids.data()[i], ids.data()[i] + 1, e.data() + i * c);
      x = var<T, SX>(e);
    } else {
      x = wte(ids);
    }
    if (cfg_.position == position_kind::learned) {
      tensor<std::int32_t, shape<dyn>> pos(Tn);
      for (index_t t = 0; t < Tn; ++t) pos(t) = static_cast<std::int32_t>(pos0 + t);
      auto pe = wpe(pos);  // (T, C) broadcast over B
      x = var<T, SX>((x + pe).data());
    }
    (void)B;
    std::uint64_t offset = dropout_offset_;
    const std::uint64_t dseed = seed_ ^ 0x9e3779b97f4a7c15ull;
    const bool recompute = checkpointing_ && training && grad_enabled();
    if (recompute) check_recomputable();
    for (std::size_t l = 0; l < h.size(); ++l) {
      const auto L = static_cast<index_t>(l);
      if (!recompute) {
        x = h[l](x, pos0, cache, L, training, dseed, offset, segments);
        continue;
      }
      // The block runs again in the backward from its input: it gets the same dropout offset
      // both times, and the offset after it is what the first run left.
      auto after = std::make_shared<std::uint64_t>(offset);
      x = checkpoint(
          [this, l, L, pos0, cache, dseed, off0 = offset, after, segments](const var<T, SX>& in) {
            std::uint64_t o = off0;
            auto r = h[l](in, pos0, cache, L, true, dseed, o, segments);
            *after = o;
            return r;
          },
          x);
      offset = *after;
    }
    if (training) dropout_offset_ = offset;
    return ln_f(x);
  }

  /// The head's weight (V, C): wte's with tied embeddings, else lm_head's (it has no bias).
  /// Raises tfm::unsupported_error when the tied embedding is held as wte_rows (no f32 copy).
  const var<T, shape<V, C>>& head_weight() const {
    if (head_rows())
      fail(errc::unsupported,
           "tfm::nn::gpt: the tied embedding/head is held in another format (wte_rows, "
           "nn::quantize_embedding): no f32 head weight; use loss() or forward().");
    return cfg_.tie_embeddings ? wte.weight : lm_head.weight;
  }
  /// Whether the head can be held as frozen rows: the chunked head + loss reads them as float or
  /// double (ops/linear_loss.hpp); bf16/f16 models never hold wte_rows.
  static constexpr bool frozen_head_capable = std::is_same_v<T, float> || std::is_same_v<T, double>;
  /// The tied head as frozen rows when wte_rows holds it, else null.
  const std::shared_ptr<const frozen_rows<T>>& head_rows() const noexcept {
    static const std::shared_ptr<const frozen_rows<T>> none;
    return cfg_.tie_embeddings ? wte_rows : none;
  }

  /// Mean cross-entropy of next-token prediction: logits(ids) against targets (B, T). The head
  /// and the loss run as one op (ops/linear_loss.hpp), whose backward never stores the logits'
  /// gradient; with logits_mode() recompute it keeps no logits either (same values).
  /// A mixture-of-experts model adds its layers' balancing losses (aux and z, nn/moe.hpp) while
  /// training with gradients on; last_balancing_loss() tells how much of the value they are.
  var<T, shape<>> loss(const ids_type& ids, const ids_type& targets, bool training = true) const {
    if constexpr (frozen_head_capable)
      if (head_rows())
        return with_balancing(linear_cross_entropy(hidden(ids, training), head_rows(), targets));
    return with_balancing(
        linear_cross_entropy(hidden(ids, training), head_weight(), targets, {}, logits_mode()));
  }

  /// The loss of packed or masked rows (fine-tuning): targets equal to ce.ignore_index add
  /// nothing, `segments` keeps attention inside each document. Red: mean over the counted
  /// targets, their sum, or none (the per-token losses (B, T), 0 where ignored).
  template <ce_reduction Red = ce_reduction::mean>
  auto loss(const ids_type& ids, const ids_type& targets, bool training,
            const cross_entropy_options& ce, const segment_ids& segments = {}) const {
    auto hs = hidden(ids, training, 0, static_cast<no_cache*>(nullptr), segments);
    if constexpr (Red == ce_reduction::mean) {  // the balancing losses are means too
      if constexpr (frozen_head_capable)
        if (head_rows())
          return with_balancing(linear_cross_entropy<Red>(hs, head_rows(), targets, ce));
      return with_balancing(
          linear_cross_entropy<Red>(hs, head_weight(), targets, ce, logits_mode()));
    } else {
      if constexpr (frozen_head_capable)
        if (head_rows()) return linear_cross_entropy<Red>(hs, head_rows(), targets, ce);
      return linear_cross_entropy<Red>(hs, head_weight(), targets, ce, logits_mode());
    }
  }

  // ---- mixture of experts (config mlp = moe; nn/moe.hpp) ----

  /// Whether the blocks' feed-forward halves are mixtures of experts.
  bool is_moe() const noexcept { return cfg_.mlp == mlp_kind::moe; }
  /// Each layer's routing statistics of the most recent forward (per-expert load, drops,
  /// router entropy, max_over_mean()), in layer order; empty for a dense model.
  std::vector<moe_route_stats> moe_stats() const {
    std::vector<moe_route_stats> r;
    if (is_moe())
      for (const auto& b : h) r.push_back(b.moe_.last_stats());
    return r;
  }
  /// After an optimizer step: the sigmoid_bias routers move their selection bias by the
  /// choices of the step's training forwards (DeepSeek-V3); a no-op for the other routers and
  /// for a dense model. train::train_step calls it.
  void moe_balance() {
    for (auto& b : h)
      if (b.is_moe()) b.moe_.balance();
  }
  /// The value of the balancing losses that the most recent loss() added (0 when none).
  double last_balancing_loss() const noexcept { return last_balancing_; }
  /// The routers' selection biases (sigmoid_bias), layer by layer: state to save with a
  /// checkpoint (empty vectors for the other routers).
  std::vector<std::vector<double>> moe_bias() const {
    std::vector<std::vector<double>> r;
    for (const auto& b : h) {
      const auto s = b.moe_.bias();
      r.emplace_back(s.begin(), s.end());
    }
    return r;
  }
  void set_moe_bias(const std::vector<std::vector<double>>& bias) {
    if (bias.size() != h.size())
      fail(errc::shape, "tfm::nn::gpt::set_moe_bias: ", bias.size(), " layers of bias for ",
           h.size(), " layers.");
    for (std::size_t l = 0; l < h.size(); ++l)
      if (!bias[l].empty()) h[l].moe_.set_bias(bias[l]);
  }

  /// What loss() keeps of the logits for the backward (ops/linear_loss.hpp, lce_logits): the
  /// mode set by set_logits_mode, else recompute while gradient checkpointing is on (the logits,
  /// rows x V, are then the largest activation of a step: 201 MB at 1024 rows of a 49152-token
  /// vocabulary; recomputing them costs one more head GEMM) and store otherwise. Gradients are
  /// bitwise the same either way, losses within an ulp (ops/linear_loss.hpp).
  lce_logits logits_mode() const noexcept {
    if (logits_mode_) return *logits_mode_;
    return checkpointing_ ? lce_logits::recompute : lce_logits::store;
  }
  /// Fixes logits_mode(); std::nullopt (the default) lets it follow set_checkpointing.
  void set_logits_mode(std::optional<lce_logits> m) noexcept { logits_mode_ = m; }

  /// Parameters with stable names, in declaration order.
  parameter_list<T> parameters() const {
    parameter_list<T> ps;
    wte.collect(ps);
    if (cfg_.position == position_kind::learned) wpe.collect(ps);
    for (const auto& b : h) b.collect(ps);
    ln_f.collect(ps);
    if (!cfg_.tie_embeddings) lm_head.collect(ps);
    return ps;
  }

  /// Parameter count, FLOPs per training token at context T, KV-cache bytes per token.
  model_summary summary(index_t T_ctx) const {
    model_summary s;
    s.parameters = count_parameters(parameters());
    s.non_embedding = s.parameters -
                      (cfg_.position == position_kind::learned ? cfg_.block_size * cfg_.n_embd : 0);
    s.active = s.non_embedding;
    if (is_moe()) {  // the experts a token does not run
      const auto ms = moe_settings_of(cfg_);
      const index_t per_expert = 3 * ms.expert_width * cfg_.n_embd;
      s.active -= cfg_.n_layer * (ms.n_expert - ms.n_expert_used) * per_expert;
    }
    const double N = static_cast<double>(s.active);
    s.train_flops_per_token = 6.0 * N + 12.0 * static_cast<double>(cfg_.n_layer) *
                                            static_cast<double>(cfg_.n_embd) *
                                            static_cast<double>(T_ctx);
    s.kv_cache_bytes_per_token = 2.0 * static_cast<double>(cfg_.n_layer) *
                                 static_cast<double>(cfg_.n_kv_head) *
                                 static_cast<double>(cfg_.n_embd / cfg_.n_head) * sizeof(T);
    s.chinchilla_tokens = 20.0 * static_cast<double>(s.parameters);
    return s;
  }

  /// Gradient checkpointing (autodiff/checkpoint.hpp) of every block while training: only the
  /// blocks' inputs are kept for the backward, which runs each block's forward again (about a
  /// third more compute for the activations of one block instead of all). LoRA adapters with
  /// dropout cannot be recomputed bitwise and are refused while it is on.
  void set_checkpointing(bool on) noexcept { checkpointing_ = on; }
  bool checkpointing() const noexcept { return checkpointing_; }

  /// Dropout stream position (saved in checkpoints for exact resume).
  std::uint64_t dropout_offset() const noexcept { return dropout_offset_; }
  void set_dropout_offset(std::uint64_t o) noexcept { dropout_offset_ = o; }

 private:
  /// Adapters whose dropout is on draw new masks on every call, so a recomputed block would not
  /// be the block that ran: refused (tfm::unsupported_error) rather than given wrong gradients.
  void check_recomputable() const {
    if (is_moe()) {
      const auto ms = moe_settings_of(cfg_);
      if (ms.aux_loss > 0 || ms.z_loss > 0)
        fail(errc::unsupported,
             "tfm::nn::gpt: gradient checkpointing cannot keep the MoE balancing losses (they "
             "are recorded inside the recomputed blocks); set moe_aux_loss and moe_z_loss to 0 "
             "or turn checkpointing off.");
    }
    for (const auto& b : h) {
      auto bad = [](const auto& lin) {
        return lin.lora && lin.lora->enabled && lin.lora->dropout > 0 && lin.lora->state &&
               lin.lora->state->training;
      };
      if (bad(b.attn.c_attn) || bad(b.attn.c_proj) || bad(b.mlp_.gate_proj()) ||
          bad(b.mlp_.up_proj()) || bad(b.mlp_.down_proj()))
        fail(errc::unsupported,
             "tfm::nn::gpt: gradient checkpointing cannot recompute LoRA adapters with dropout "
             "(their masks change per call); set the adapter's dropout to 0 or turn "
             "checkpointing off.");
    }
  }

  /// ce + the balancing losses the blocks recorded in this forward (nn/moe.hpp).
  var<T, shape<>> with_balancing(var<T, shape<>> ce) const {
    last_balancing_ = 0;
    if (!is_moe()) return ce;
    for (const auto& b : h) {
      const auto& a = b.moe_.balancing_loss();
      if (!a.defined()) continue;
      last_balancing_ += static_cast<double>(compute_t<T>(a.value()()));
      ce = ce + a;
    }
    return ce;
  }

  Cfg cfg_;
  std::uint64_t seed_ = 0;
  mutable double last_balancing_ = 0;
  bool checkpointing_ = false;
  std::optional<lce_logits> logits_mode_;
  mutable std::uint64_t dropout_offset_ = 0;

 public:
  embedding<T, V, C> wte;
  /// The token embedding held frozen in another format (bf16 or NF4 rows: nn/qlora.hpp
  /// quantize_embedding), wte.weight then being empty; with tied embeddings it is the head too
  /// (loss() reads it chunk by chunk, ops/linear_loss.hpp). Null: wte.weight holds it.
  std::shared_ptr<const frozen_rows<T>> wte_rows;
  embedding<T, Tmax, C> wpe;
  std::vector<block<T, Cfg>> h;
  norm<T, C> ln_f;
  linear<T, C, V> lm_head;
};

}  // namespace nn
TFM_END_NAMESPACE
