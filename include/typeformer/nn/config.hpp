// typeformer/nn/config.hpp
//
// Model configurations. A config is a struct with the fields below, either all `static
// constexpr` (dimensions known at compile time: the model's tensors get static extents and
// shape mistakes do not compile) or all ordinary members (tfm::nn::dynamic_config, for sizes read
// from a command line or a file). Modules read fields as cfg.field, which works for both, and ask
// static_dim<&...>-style traits (below) for the extents to put in types.
//
//   vocab       V   vocabulary size            block_size  maximum sequence length T
//   n_layer         transformer blocks         n_embd      C   model width
//   n_head      H   query heads                n_kv_head   G   key/value heads (G | H)
//   ffn         F   MLP hidden width           window          sliding attention window (0 off)
//   norm            layer_norm | rms_norm      mlp             gelu | swiglu
//   position        learned | rope | alibi     bias            biases in linear layers and norms
//   tie_embeddings  output projection = token embedding^T
//   norm_eps, rope_base, dropout
//   mixture of experts (mlp = moe; nn/moe.hpp): n_expert E, n_expert_used k, expert_ffn (the
//   width of each routed expert, 0 = ffn), n_shared_expert, router, moe_aux_loss, moe_z_loss,
//   moe_capacity. A static config may leave them out (then they hold dynamic_config's
//   defaults); E, k and the expert width declared static appear in the expert tables' types.
//
// The fields are declared once, in TFM_NN_CONFIG_FIELDS below (type, default, flag, rule, doc);
// dynamic_config, to_dynamic, validate's per-field checks, the checkpoint entries and the
// `tfm train` flags are generated from it.
//
// GPT-2 style: layer_norm, gelu, learned positions, bias, tied embeddings.
// LLaMA style: rms_norm, swiglu, rope, no bias, untied, G <= H.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"
#include "typeformer/ops/moe_kind.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

TFM_BEGIN_NAMESPACE
namespace nn {

enum class norm_kind { layer_norm, rms_norm };
/// gelu: c_fc, c_proj; swiglu: gate, up, down (Shazeer, arXiv:2002.05202); moe: a router and E
/// SwiGLU experts of which each token runs k (nn/moe.hpp).
enum class mlp_kind { gelu, swiglu, moe };
enum class position_kind { learned, rope, alibi };

/// Figures a training run prints at the start (see gpt::summary).
struct model_summary {
  index_t parameters = 0;     // all parameters
  index_t non_embedding = 0;  // without the position table (nanoGPT's convention)
  /// Of non_embedding, those one token uses: a mixture of experts runs k of its E experts
  /// (the others' weights do not count); equal to non_embedding for a dense model.
  index_t active = 0;
  double train_flops_per_token = 0;  // 6 N + 12 L C T, N = active (Kaplan et al. arXiv:2001.08361;
                                     // PaLM App. B)
  double kv_cache_bytes_per_token = 0;  // 2 L G D sizeof(T)
  double chinchilla_tokens = 0;         // 20 N (Hoffmann et al., arXiv:2203.15556)
};

/// Static extent of a config field: its value when the config declares it constexpr static,
/// tfm::dyn when it declares it as an ordinary member or (the mixture-of-experts fields, which a
/// config may leave out) not at all.
#define TFM_NN_STATIC_DIM(field)                                             \
  template <class C>                                                         \
  constexpr index_t static_##field##_of() {                                  \
    if constexpr (!requires { &C::field; })                                  \
      return dyn;                                                            \
    else if constexpr (std::is_member_object_pointer_v<decltype(&C::field)>) \
      return dyn;                                                            \
    else                                                                     \
      return C::field;                                                       \
  }                                                                          \
  template <class C>                                                         \
  inline constexpr index_t static_##field = static_##field##_of<C>();
TFM_NN_STATIC_DIM(vocab)
TFM_NN_STATIC_DIM(block_size)
TFM_NN_STATIC_DIM(n_embd)
TFM_NN_STATIC_DIM(n_head)
TFM_NN_STATIC_DIM(n_kv_head)
TFM_NN_STATIC_DIM(ffn)
TFM_NN_STATIC_DIM(n_expert)
TFM_NN_STATIC_DIM(n_expert_used)
TFM_NN_STATIC_DIM(expert_ffn)
#undef TFM_NN_STATIC_DIM

/// The static width of each routed expert: expert_ffn, or ffn when expert_ffn is a static 0.
template <class C>
inline constexpr index_t static_expert_width = static_expert_ffn<C> == dyn
                                                   ? dyn
                                                   : (static_expert_ffn<C> == 0
                                                          ? static_ffn<C>
                                                          : static_expert_ffn<C>);

/// The fields of a model config, declared once:
///   X(type, name, default, flag, rule, doc)
/// `default` is tfm::nn::dynamic_config's initial value; `flag` the command-line spelling
/// (tfm train; "" for a field no flag sets: the vocabulary is the tokenizer's); `rule` a check
/// of the field alone (field_rule; cross-field rules stay in validate); `doc` one line of help.
/// From this list come dynamic_config's members, to_dynamic, validate's per-field checks, the
/// checkpoint entries "config.<name>" (train::put_config / get_config) and the model flags of
/// `tfm train` (train::set_config_flag): a new field is one line here.
///
/// An X-macro rather than a constexpr table of member pointers: the presets below declare their
/// fields `static constexpr`, which have no member pointers, and the fields have six types, so
/// a pointer table would need a tuple and still could not read a preset. The macro expands to
/// plain `c.name` for static and run-time configs alike.
#define TFM_NN_CONFIG_FIELDS(X)                                                                   \
  X(index_t, vocab, 256, "", positive, "vocabulary size V (the tokenizer's)")                     \
  X(index_t, block_size, 128, "--block-size", positive, "maximum sequence length T")              \
  X(index_t, n_layer, 4, "--n-layer", nonnegative, "transformer blocks L")                        \
  X(index_t, n_embd, 128, "--n-embd", positive, "model width C")                                  \
  X(index_t, n_head, 4, "--n-head", any, "query heads H (divides n_embd)")                        \
  X(index_t, n_kv_head, 4, "--n-kv-head", any,                                                    \
    "key/value heads G (divides H; --n-head sets G = H)")                                         \
  X(index_t, ffn, 512, "--ffn", positive, "MLP hidden width F")                                   \
  X(index_t, window, 0, "--window", nonnegative, "sliding attention window, 0 = off")             \
  X(norm_kind, norm, norm_kind::layer_norm, "--norm", any, "normalisation")                       \
  X(mlp_kind, mlp, mlp_kind::gelu, "--mlp", any, "MLP activation")                                \
  X(position_kind, position, position_kind::learned, "--position", any, "position encoding")      \
  X(bool, bias, true, "--bias", any, "biases in linear layers and norms")                         \
  X(bool, tie_embeddings, true, "--tie-embeddings", any, "output projection = token embedding^T") \
  X(double, norm_eps, 1e-5, "--norm-eps", any, "epsilon of the norms")                            \
  X(double, rope_base, 10000.0, "--rope-base", any, "RoPE frequency base")                        \
  X(double, dropout, 0.0, "--dropout", fraction, "dropout on residual branches while training")   \
  X(index_t, n_expert, 8, "--n-expert", positive, "experts E (--mlp moe)")                        \
  X(index_t, n_expert_used, 2, "--n-expert-used", positive,                                       \
    "experts per token k (--mlp moe; switch_top1: 1)")                                            \
  X(index_t, expert_ffn, 0, "--expert-ffn", nonnegative,                                          \
    "hidden width of each expert, 0 = --ffn (smaller: fine-grained experts)")                     \
  X(index_t, n_shared_expert, 0, "--n-shared-expert", nonnegative,                                \
    "shared experts every token runs (DeepSeekMoE), each --expert-ffn wide")                      \
  X(moe_router_kind, router, moe_router_kind::softmax_topk, "--router", any, "MoE router")        \
  X(double, moe_aux_loss, 0.01, "--moe-aux-loss", nonnegative,                                    \
    "coefficient of the load-balancing loss E sum f P")                                           \
  X(double, moe_z_loss, 0.0, "--moe-z-loss", nonnegative, "coefficient of the router z-loss")     \
  X(double, moe_capacity, 0.0, "--moe-capacity", nonnegative,                                     \
    "expert capacity factor, 0 = dropless (expert_choice: 0 = k)")

/// Checks of one field on its own (the `rule` column above).
enum class field_rule {
  any,          // no check of its own (or only cross-field ones, in validate)
  positive,     // > 0
  nonnegative,  // >= 0
  fraction,     // in [0, 1) (NaN fails)
};

/// Why `v` breaks `r` ("must be ..."), or nullptr when it does not.
template <class V>
constexpr const char* field_rule_violation(field_rule r, const V& v) {
  if constexpr (std::is_arithmetic_v<V> && !std::is_same_v<V, bool>) {
    switch (r) {
      case field_rule::any:
        return nullptr;
      case field_rule::positive:
        return v > 0 ? nullptr : "must be positive";
      case field_rule::nonnegative:
        return v >= 0 ? nullptr : "must be >= 0";
      case field_rule::fraction:
        return v >= 0 && v < 1 ? nullptr : "must be in [0, 1)";
    }
    return nullptr;
  } else {
    return r == field_rule::any ? nullptr : "has a rule its type cannot have";
  }
}

/// A config whose fields are run-time values (same names as the static presets).
struct dynamic_config {
#define TFM_NN_FIELD_MEMBER(type, name, init, flag, rule, doc) type name = init;
  TFM_NN_CONFIG_FIELDS(TFM_NN_FIELD_MEMBER)
#undef TFM_NN_FIELD_MEMBER
};

/// A run-time copy of any config. A field the config does not declare keeps dynamic_config's
/// default (so a field added to the list does not break existing static configs).
template <class C>
dynamic_config to_dynamic(const C& c) {
  dynamic_config d;
#define TFM_NN_FIELD_COPY(type, name, init, flag, rule, doc) \
  if constexpr (requires { c.name; }) d.name = c.name;
  TFM_NN_CONFIG_FIELDS(TFM_NN_FIELD_COPY)
#undef TFM_NN_FIELD_COPY
  return d;
}

/// Checks a config's fields; raises tfm::value_error naming the first bad field (the per-field
/// rules of the list in its order, then the rules between fields).
template <class C>
void validate(const C& c) {
  auto bad = [](const char* f, const std::string& why) {
    fail(errc::value, "tfm::nn config: ", f, " ", why, ".");
  };
#define TFM_NN_FIELD_CHECK(type, name, init, flag, rule, doc)                                \
  if constexpr (requires { c.name; })                                                        \
    if (const char* why = field_rule_violation(field_rule::rule, static_cast<type>(c.name))) \
      bad(#name, why);
  TFM_NN_CONFIG_FIELDS(TFM_NN_FIELD_CHECK)
#undef TFM_NN_FIELD_CHECK
  if (c.n_head <= 0 || c.n_embd % c.n_head != 0)
    bad("n_head", "must be positive and divide n_embd (" + std::to_string(c.n_embd) + ")");
  if (c.n_kv_head <= 0 || c.n_head % c.n_kv_head != 0)
    bad("n_kv_head", "must be positive and divide n_head (" + std::to_string(c.n_head) + ")");
  if (c.position == position_kind::rope && (c.n_embd / c.n_head) % 2 != 0)
    bad("position", "rope needs an even head dimension");
  if (c.mlp == mlp_kind::moe) {
    // The mixture-of-experts fields (to_dynamic: a static config may leave them out).
    const dynamic_config d = to_dynamic(c);
    const bool token_choice =
        d.router != moe_router_kind::switch_top1 && d.router != moe_router_kind::expert_choice;
    if (token_choice && d.n_expert_used > d.n_expert)
      bad("n_expert_used", "(k = " + std::to_string(d.n_expert_used) +
                               ") must not exceed n_expert (E = " + std::to_string(d.n_expert) +
                               ")");
    if (!std::isfinite(d.moe_aux_loss)) bad("moe_aux_loss", "must be finite");
    if (!std::isfinite(d.moe_z_loss)) bad("moe_z_loss", "must be finite");
    if (!std::isfinite(d.moe_capacity)) bad("moe_capacity", "must be finite");
  }
}

/// Presets. GPT-2 124M (Radford et al. 2019) and small models for laptops and tests.
struct gpt2_124m {
  static constexpr index_t vocab = 50257, block_size = 1024, n_layer = 12, n_embd = 768,
                           n_head = 12, n_kv_head = 12, ffn = 3072, window = 0;
  static constexpr norm_kind norm = norm_kind::layer_norm;
  static constexpr mlp_kind mlp = mlp_kind::gelu;
  static constexpr position_kind position = position_kind::learned;
  static constexpr bool bias = true, tie_embeddings = true;
  static constexpr double norm_eps = 1e-5, rope_base = 10000.0, dropout = 0.0;
};

/// The benchmark model: 6 layers, 6 heads, 384 wide, GPT-2 vocabulary.
struct gpt2_6l384 : gpt2_124m {
  static constexpr index_t block_size = 256, n_layer = 6, n_embd = 384, n_head = 6, n_kv_head = 6,
                           ffn = 1536;
};

/// A tiny byte-level GPT-2 style model for demos and tests.
struct gpt2_tiny : gpt2_124m {
  static constexpr index_t vocab = 256, block_size = 128, n_layer = 4, n_embd = 128, n_head = 4,
                           n_kv_head = 4, ffn = 512;
};

/// A tiny LLaMA style model (RMSNorm, SwiGLU, RoPE, GQA, no biases).
struct llama_tiny {
  static constexpr index_t vocab = 256, block_size = 128, n_layer = 4, n_embd = 128, n_head = 4,
                           n_kv_head = 2, ffn = 352, window = 0;
  static constexpr norm_kind norm = norm_kind::rms_norm;
  static constexpr mlp_kind mlp = mlp_kind::swiglu;
  static constexpr position_kind position = position_kind::rope;
  static constexpr bool bias = false, tie_embeddings = false;
  static constexpr double norm_eps = 1e-5, rope_base = 10000.0, dropout = 0.0;
};

}  // namespace nn
TFM_END_NAMESPACE
