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
#pragma once

#include "typeformer/nn/config.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/ops/dropout.hpp"
#include "typeformer/ops/elementwise.hpp"
#include "typeformer/ops/gather.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/normalize.hpp"

#include <cmath>
#include <string>

TFM_BEGIN_NAMESPACE
namespace nn {

template <class T, index_t In, index_t Out>
class linear {
 public:
  linear() = default;
  linear(const builder& b, index_t in, index_t out, bool bias, double stddev = 0.02)
      : weight(make_parameter<T>(b, "weight", shape<Out, In>::from_extents({out, in}),
                                 init::normal(stddev))) {
    if (bias)
      this->bias = make_parameter<T>(b, "bias", shape<Out>::from_extents({out}), init::zeros());
  }
  template <class S>
  auto operator()(const var<T, S>& x) const {
    if (bias.defined()) return tfm::linear(x, weight, bias);
    return tfm::linear(x, weight);
  }
  void collect(parameter_list<T>& out) const {
    add_parameter(out, weight, true);
    add_parameter(out, bias, false);
  }

  var<T, shape<Out, In>> weight;
  var<T, shape<Out>> bias;  // undefined when the layer has no bias
};

template <class T, index_t V, index_t C>
class embedding {
 public:
  embedding() = default;
  embedding(const builder& b, index_t v, index_t c, double stddev = 0.02)
      : weight(make_parameter<T>(b, "weight", shape<V, C>::from_extents({v, c}),
                                 init::normal(stddev))) {}
  template <class I>
  requires dense_type<I>
  auto operator()(const I& ids) const { return tfm::embedding(weight, ids); }
  void collect(parameter_list<T>& out) const { add_parameter(out, weight, true); }

  var<T, shape<V, C>> weight;
};

template <class T, index_t C>
class norm {
 public:
  norm() = default;
  norm(const builder& b, index_t c, norm_kind k, bool bias, double eps)
      : kind_(k),
        eps_(eps),
        weight(make_parameter<T>(b, "weight", shape<C>::from_extents({c}), init::ones())) {
    if (bias && k == norm_kind::layer_norm)
      this->bias = make_parameter<T>(b, "bias", shape<C>::from_extents({c}), init::zeros());
  }
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
  var<T, shape<C>> bias;
};

template <class T, index_t C, index_t F>
class mlp {
 public:
  mlp() = default;
  /// proj_std: the init stddev of the output projection (GPT-2 scales it by 1/sqrt(2 n_layer)).
  mlp(const builder& b, index_t c, index_t f, mlp_kind k, bool bias, double proj_std) : kind_(k) {
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

 private:
  mlp_kind kind_ = mlp_kind::gelu;
  linear<T, C, F> gate_, up_;
  linear<T, F, C> down_;
};

}  // namespace nn
TFM_END_NAMESPACE
