// typeformer/nn/layers.hpp
//
// Building blocks, each owning its parameters (tfm::var leaves) and listing them by name:
//   nn::linear<T, In, Out>        y = x W^T + b, W (Out, In)            (names: weight, bias)
//   nn::embedding<T, V, C>        rows of a (V, C) table                (weight)
//   nn::norm<T, C>                LayerNorm or RMSNorm over C           (weight, bias)
//   nn::mlp<T, C, F>              GELU MLP: c_proj(gelu(c_fc(x)))       (c_fc, c_proj)
//                                 SwiGLU: down(silu(gate(x)) * up(x))   (gate, up, down)
//                                 (Shazeer, arXiv:2002.05202)
// Extents may be tfm::dyn (run-time configs); static ones appear in the parameter types.
//
// Each module is built in one of three ways, all running the same code:
//   nn::linear<float, 784, 128> fc(/*seed=*/1);                 sizes from the type
//   nn::linear<float, dyn, dyn> fc(784, 128, /*seed=*/1);        sizes as arguments
//   nn::linear<float, C, F> fc(builder.sub("c_fc"), C, F, bias); inside a model (nn::gpt)
// A size argument that disagrees with a static extent raises tfm::shape_error naming both. An
// options struct (nn::linear_options: bias, initialisers, name prefix; the others likewise)
// goes last. Parameter names are the leaf names ("weight", "bias") under the prefix
// ("fc1.weight"); each parameter's values come from the seed and its full name, so two layers
// built with the same seed need different prefixes to start from different values.
// m.parameters() lists the parameters for an optimizer (module_base), m.collect(list) appends
// them to a model's list.
#pragma once

#include "typeformer/nn/config.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/ops/dropout.hpp"
#include "typeformer/ops/elementwise.hpp"
#include "typeformer/ops/gather.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/lora_linear.hpp"
#include "typeformer/ops/normalize.hpp"

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

TFM_BEGIN_NAMESPACE
namespace nn {

/// Options of a standalone nn::linear. (Every member has a default, `prefix = {}` included, so
/// that designated initializers naming only some of them are -Wmissing-field-initializers clean
/// on GCC.)
struct linear_options {
  bool bias = true;                       ///< add the bias vector b (Out)
  init weight_init = init::normal(0.02);  ///< W; GPT-2's N(0, 0.02) by default
  init bias_init = init::zeros();         ///< b
  std::string prefix = {};                ///< names "<prefix>.weight", or "weight" when empty
};

/// y = x W^T + b over the last axis: x (..., In) -> y (..., Out); W (Out, In), b (Out).
template <class T, index_t In, index_t Out>
class linear : public module_base<T, linear<T, In, Out>> {
 public:
  /// An empty layer (no parameters): assign a built one to it.
  linear() = default;
  /// Sizes from the type: nn::linear<float, 784, 128> fc(/*seed=*/1, {.bias = false}).
  explicit linear(std::uint64_t seed, linear_options o = {}) requires(In != dyn && Out != dyn)
      : linear(In, Out, seed, o) {}
  /// Sizes as arguments (tfm::dyn extents): nn::linear<float, dyn, dyn> fc(784, 128, seed).
  linear(index_t in_features, index_t out_features, std::uint64_t seed, linear_options o = {})
      : linear(builder{seed, o.prefix}, in_features, out_features, o) {}
  /// Inside a model: the seed and the name prefix come from the builder.
  linear(const builder& b, index_t in, index_t out, bool bias, double stddev = 0.02)
      : linear(b, in, out,
               linear_options{.bias = bias,
                              .weight_init = init::normal(stddev),
                              .bias_init = init::zeros(),
                              .prefix = {}}) {}

  template <class S>
  auto operator()(const var<T, S>& x) const {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (lora || frozen) return tfm::lora_linear(x, weight, frozen, bias, lora.get());
    } else if (lora || frozen) {
      fail(errc::unsupported,
           "tfm::nn::linear: LoRA adapters and frozen compact weights need "
           "float or double parameters.");
    }
    if (bias.defined()) return tfm::linear(x, weight, bias);
    return tfm::linear(x, weight);
  }
  void collect(parameter_list<T>& out) const {
    add_parameter(out, weight, true);
    add_parameter(out, bias, false);
  }

  var<T, shape<Out, In>> weight;
  var<T, shape<Out>> bias;  // undefined when the layer has no bias
  /// The LoRA update in use (nn/lora.hpp attaches it), or null.
  std::shared_ptr<lora_update<T>> lora;
  /// A frozen compact base that replaces `weight` (QLoRA's NF4, nn/qlora.hpp), or null.
  std::shared_ptr<const frozen_weight<T>> frozen;

 private:
  static std::string type_name() {
    return "nn::linear<T, " + extent_name(In) + ", " + extent_name(Out) + ">";
  }
  linear(const builder& b, index_t in, index_t out, const linear_options& o) {
    const index_t i = checked_extent(in, In, type_name(), "in_features");
    const index_t n = checked_extent(out, Out, type_name(), "out_features");
    weight = make_parameter<T>(b, "weight", shape<Out, In>::from_extents({n, i}), o.weight_init);
    if (o.bias) bias = make_parameter<T>(b, "bias", shape<Out>::from_extents({n}), o.bias_init);
  }
};

/// Options of a standalone nn::embedding.
struct embedding_options {
  init weight_init = init::normal(0.02);  ///< the table; GPT-2's N(0, 0.02) by default
  std::string prefix = {};                ///< names "<prefix>.weight", or "weight" when empty
};

/// Rows of a (V, C) table: ids (...) int32 -> (..., C).
template <class T, index_t V, index_t C>
class embedding : public module_base<T, embedding<T, V, C>> {
 public:
  /// An empty module (no parameters): assign a built one to it.
  embedding() = default;
  /// Sizes from the type: nn::embedding<float, 256, 64> wte(/*seed=*/1).
  explicit embedding(std::uint64_t seed, embedding_options o = {}) requires(V != dyn && C != dyn)
      : embedding(V, C, seed, o) {}
  /// Sizes as arguments (tfm::dyn extents): nn::embedding<float, dyn, dyn> wte(256, 64, seed).
  embedding(index_t num_embeddings, index_t dim, std::uint64_t seed, embedding_options o = {})
      : embedding(builder{seed, o.prefix}, num_embeddings, dim, o) {}
  /// Inside a model: the seed and the name prefix come from the builder.
  embedding(const builder& b, index_t v, index_t c, double stddev = 0.02)
      : embedding(b, v, c, embedding_options{.weight_init = init::normal(stddev), .prefix = {}}) {}

  template <class I>
  requires dense_type<I>
  auto operator()(const I& ids) const { return tfm::embedding(weight, ids); }
  void collect(parameter_list<T>& out) const { add_parameter(out, weight, true); }

  var<T, shape<V, C>> weight;

 private:
  static std::string type_name() {
    return "nn::embedding<T, " + extent_name(V) + ", " + extent_name(C) + ">";
  }
  embedding(const builder& b, index_t v, index_t c, const embedding_options& o) {
    const index_t rows = checked_extent(v, V, type_name(), "num_embeddings");
    const index_t cols = checked_extent(c, C, type_name(), "dim");
    weight = make_parameter<T>(b, "weight", shape<V, C>::from_extents({rows, cols}), o.weight_init);
  }
};

/// Options of a standalone nn::norm.
struct norm_options {
  bool bias = true;         ///< LayerNorm's shift b (RMSNorm has none)
  double eps = 1e-5;        ///< added to the variance (mean square for RMSNorm)
  std::string prefix = {};  ///< names "<prefix>.weight", or "weight" when empty
};

/// LayerNorm (Ba et al., arXiv:1607.06450) or RMSNorm (Zhang & Sennrich, arXiv:1910.07467) over
/// the last axis of extent C; weight starts at ones, bias at zeros.
template <class T, index_t C>
class norm : public module_base<T, norm<T, C>> {
 public:
  /// An empty module (no parameters): assign a built one to it.
  norm() = default;
  /// Size from the type: nn::norm<float, 64> ln(nn::norm_kind::layer_norm).
  explicit norm(norm_kind kind, norm_options o = {}) requires(C != dyn) : norm(C, kind, o) {}
  /// Size as an argument (tfm::dyn extent): nn::norm<float, dyn> ln(64, nn::norm_kind::rms_norm).
  norm(index_t features, norm_kind kind, norm_options o = {}) : kind_(kind), eps_(o.eps) {
    const index_t c =
        checked_extent(features, C, "nn::norm<T, " + extent_name(C) + ">", "features");
    const builder b{0, o.prefix};  // the seed is unused: ones and zeros
    weight = make_parameter<T>(b, "weight", shape<C>::from_extents({c}), init::ones());
    if (o.bias && kind == norm_kind::layer_norm)
      bias = make_parameter<T>(b, "bias", shape<C>::from_extents({c}), init::zeros());
  }
  /// Inside a model: the name prefix comes from the builder (norms draw no random values).
  norm(const builder& b, index_t c, norm_kind k, bool bias, double eps)
      : norm(c, k, norm_options{.bias = bias, .eps = eps, .prefix = b.prefix}) {}

  template <class S>
  var<T, S> operator()(const var<T, S>& x) const {
    if (kind_ == norm_kind::rms_norm) return rms_norm(x, weight, eps_);
    if (bias.defined()) return layer_norm(x, weight, bias, eps_);
    return layer_norm(x, weight, none, eps_);
  }
  void collect(parameter_list<T>& out) const {
    add_parameter(out, weight, false);
    add_parameter(out, bias, false);
  }

 private:
  norm_kind kind_ = norm_kind::layer_norm;
  double eps_ = 1e-5;

 public:
  var<T, shape<C>> weight;
  var<T, shape<C>> bias;  // undefined for RMSNorm and for LayerNorm without bias
};

/// Options of a standalone nn::mlp.
struct mlp_options {
  mlp_kind kind = mlp_kind::gelu;  ///< gelu: c_fc, c_proj; swiglu: gate, up, down
  bool bias = true;                ///< biases in the linear layers
  double proj_std = 0.02;          ///< init stddev of the output projection (others: 0.02)
  std::string prefix = {};         ///< names "<prefix>.c_fc.weight", or "c_fc.weight" when empty
};

/// The feed-forward block: x (..., C) -> (..., C) through a hidden width F.
template <class T, index_t C, index_t F>
class mlp : public module_base<T, mlp<T, C, F>> {
 public:
  /// An empty module (no parameters): assign a built one to it.
  mlp() = default;
  /// Sizes from the type: nn::mlp<float, 64, 256> ff(/*seed=*/1, {.kind = nn::mlp_kind::swiglu}).
  explicit mlp(std::uint64_t seed, mlp_options o = {}) requires(C != dyn && F != dyn)
      : mlp(C, F, seed, o) {}
  /// Sizes as arguments (tfm::dyn extents): nn::mlp<float, dyn, dyn> ff(64, 256, seed).
  mlp(index_t features, index_t hidden, std::uint64_t seed, mlp_options o = {})
      : mlp(builder{seed, o.prefix}, features, hidden, o.kind, o.bias, o.proj_std) {}
  /// Inside a model. proj_std: the init stddev of the output projection (GPT-2 scales it by
  /// 1/sqrt(2 n_layer)).
  mlp(const builder& b, index_t c, index_t f, mlp_kind k, bool bias, double proj_std) : kind_(k) {
    const std::string type = "nn::mlp<T, " + extent_name(C) + ", " + extent_name(F) + ">";
    checked_extent(c, C, type, "features");
    checked_extent(f, F, type, "hidden");
    if (k == mlp_kind::gelu) {
      up_ = linear<T, C, F>(b.sub("c_fc"), c, f, bias);
      down_ = linear<T, F, C>(b.sub("c_proj"), f, c, bias, proj_std);
    } else {
      gate_ = linear<T, C, F>(b.sub("gate"), c, f, bias);
      up_ = linear<T, C, F>(b.sub("up"), c, f, bias);
      down_ = linear<T, F, C>(b.sub("down"), f, c, bias, proj_std);
    }
  }
  template <class S>
  auto operator()(const var<T, S>& x) const {
    if (kind_ == mlp_kind::gelu) return down_(gelu(up_(x)));
    return down_(silu(gate_(x)) * up_(x));
  }
  void collect(parameter_list<T>& out) const {
    if (kind_ == mlp_kind::swiglu) gate_.collect(out);
    up_.collect(out);
    down_.collect(out);
  }
  mlp_kind kind() const noexcept { return kind_; }
  /// The projections: gate (SwiGLU only; empty for GELU), up (c_fc for GELU), down (c_proj).
  linear<T, C, F>& gate_proj() noexcept { return gate_; }
  linear<T, C, F>& up_proj() noexcept { return up_; }
  linear<T, F, C>& down_proj() noexcept { return down_; }
  const linear<T, C, F>& gate_proj() const noexcept { return gate_; }
  const linear<T, C, F>& up_proj() const noexcept { return up_; }
  const linear<T, F, C>& down_proj() const noexcept { return down_; }

 private:
  mlp_kind kind_ = mlp_kind::gelu;
  linear<T, C, F> gate_, up_;
  linear<T, F, C> down_;
};

}  // namespace nn
TFM_END_NAMESPACE
