// typeformer/nn/module.hpp
//
// What every nn module shares:
//   - parameters are tfm::var leaves that require gradients, created with GPT-2 style
//     initialisation from the counter-based generator, one seed per parameter derived from the
//     model seed and the parameter's stable name (so adding a layer does not reshuffle the
//     others' values);
//   - modules list their parameters with stable dotted names ("h.0.attn.c_attn.weight") through
//     collect(list, prefix): the order is the declaration order and never changes;
//   - state dicts map those names to the parameters' records (save/load in io/);
//   - every module can be built on its own (a seed, an optional name prefix, sizes from its type
//     when they are static) or inside a model (from a builder that carries the model's seed and
//     the dotted prefix); both paths run the same code, so a layer built alone with seed s and
//     prefix "h.0.mlp.c_fc" equals the one inside a model built with seed s;
//   - parameters() (module_base) returns the list an optimizer takes: optim::adamw(m.parameters(),
//     ...).
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/core/factory.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/core/shape.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace nn {

/// A named parameter of element type T.
template <class T>
struct named_parameter {
  std::string name;
  detail::var_ptr<T> data;
  /// Whether weight decay applies (false for biases, norms and, by convention, embeddings'
  /// position tables are decayed like weights: GPT-2/nanoGPT decay every tensor of rank >= 2).
  bool decay = true;
};

template <class T>
using parameter_list = std::vector<named_parameter<T>>;

/// Total number of elements in a parameter list.
template <class T>
index_t count_parameters(const parameter_list<T>& ps) {
  index_t n = 0;
  for (const auto& p : ps) n += p.data->size();
  return n;
}

/// 64-bit FNV-1a of a name: the per-parameter seed offset.
constexpr std::uint64_t name_hash(std::string_view s) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

/// How a parameter starts.
struct init {
  enum class kind { normal, zeros, ones };
  kind k = kind::normal;
  double stddev = 0.02;
  static init normal(double s) { return {kind::normal, s}; }
  static init zeros() { return {kind::zeros, 0}; }
  static init ones() { return {kind::ones, 0}; }
};

/// Context passed down while building a model: the seed and the name prefix.
struct builder {
  std::uint64_t seed = 0;
  std::string prefix;
  /// false: parameters are allocated but not given their initial values (a model whose weights
  /// are loaded next; see nn::gpt's uninitialized constructor).
  bool fill = true;
  builder sub(std::string_view name) const {
    return {seed, prefix.empty() ? std::string(name) : prefix + "." + std::string(name), fill};
  }
  std::string name(std::string_view leaf) const {
    return prefix.empty() ? std::string(leaf) : prefix + "." + std::string(leaf);
  }
};

/// A parameter var of shape S (dynamic extents from `s`), initialised per `how`.
template <class T, shape_type S>
var<T, S> make_parameter(const builder& b, std::string_view leaf, const S& s, init how) {
  std::string nm = b.name(leaf);
  if (!b.fill) {  // the values are overwritten next: no fill, no copy
    const auto e = s.extents();
    auto d = detail::make_var_data<T>(std::vector<index_t>(e.begin(), e.end()));
    d->requires_grad = true;
    var<T, S> v(std::move(d));
    v.set_name(nm);
    return v;
  }
  tensor<T, S> t(s);
  if (how.k == init::kind::normal) {
    t = randn<T>(s, b.seed ^ name_hash(nm), static_cast<compute_t<T>>(how.stddev));
  } else if (how.k == init::kind::ones) {
    t.fill(1);
  }
  var<T, S> v(t, true);
  v.set_name(nm);
  return v;
}

/// "784" or "dyn": an extent as written in a type, for messages.
inline std::string extent_name(index_t e) { return e == dyn ? "dyn" : std::to_string(e); }

/// A size argument of a module, checked against the extent its type fixes (tfm::dyn accepts any
/// size >= 0). `module` is the type as the user wrote it ("nn::linear<T, 784, 128>"), `what`
/// the argument ("in_features"). Raises tfm::shape_error naming both.
inline index_t checked_extent(index_t value, index_t static_extent, const std::string& module,
                              const char* what) {
  if (value < 0) fail(errc::shape, "tfm::", module, ": ", what, " must be >= 0, got ", value, ".");
  if (static_extent != dyn && value != static_extent)
    fail(errc::shape, "tfm::", module, ": ", what, " is ", value, " but the type fixes it to ",
         static_extent, ".");
  return value;
}

/// What every module offers on top of its collect(list): parameters(), the list an optimizer
/// takes. CRTP: Derived has `void collect(parameter_list<T>&) const`.
template <class T, class Derived>
class module_base {
 public:
  /// The module's parameters with their names, in declaration order.
  parameter_list<T> parameters() const {
    parameter_list<T> ps;
    static_cast<const Derived&>(*this).collect(ps);
    return ps;
  }
};

/// Adds `v` to `out` under its name.
template <class T, class S>
void add_parameter(parameter_list<T>& out, const var<T, S>& v, bool decay) {
  if (v.defined()) out.push_back({v.name(), v.data(), decay});
}

}  // namespace nn
TFM_END_NAMESPACE
