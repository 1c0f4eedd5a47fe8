// typeformer/nn/lora.hpp
//
// LoRA adapters on an nn::gpt (Hu et al. 2021, arXiv:2106.09685; rsLoRA: Kalajdzievski 2023,
// arXiv:2312.03732):
//
//   nn::lora_config lc{.rank = 16, .alpha = 32, .targets = {"q", "k", "v", "o", "gate", "up",
//                      "down"}};
//   auto a = nn::make_lora(model, lc);     // A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0 (PEFT's init)
//   nn::freeze(model);                     // base parameters stop requiring gradients
//   nn::attach(model, a);                  // model.loss(...) now runs W x + s B A x
//   optim::adamw opt(a.parameters(), ...); // the adapter's A and B only
//   nn::attach(model, b);                  // switch to another adapter on the same base
//   nn::detach(model);                     // the base alone
//   nn::merge(model, a); nn::unmerge(model, a);
//
// Targets name the llama projections (q, k, v, o, gate, up, down; PEFT's q_proj ... down_proj
// are accepted too, and "all-linear" means all seven). In nn::gpt q, k and v share the fused
// c_attn map, so an adapter on them is one lora_update with up to three parts, each writing its
// projection's rows (ops/lora_linear.hpp); o is attn.c_proj, gate/up/down the SwiGLU MLP (for a
// GELU MLP, up is c_fc and down c_proj; gate does not exist and is refused).
//
// Scale s = alpha / rank, or alpha / sqrt(rank) with rslora. Dropout (lora_dropout) applies to
// the adapter's input while the adapter is in training mode (a.train(true)), each call taking
// fresh positions of the counter-based generator from the adapter's dropout state.
//
// merge adds s B A to each adapted weight and disables the adapter's updates, so the merged model
// computes what the adapter did (within f32 rounding); unmerge subtracts it again and re-enables
// them. Merging needs dense weights (not a QLoRA NF4 base).
//
// Parameter names: "h.<l>.attn.<q|k|v|o>.lora_A", "h.<l>.mlp.<gate|up|down>.lora_B", ...
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/nn/lora_target.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/ops/lora_linear.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace nn {

/// How an adapter is built.
struct lora_config {
  index_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool rslora = false;  ///< s = alpha / sqrt(rank) instead of alpha / rank
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
  std::uint64_t seed = 0;  ///< A's initial values (and the dropout masks)

  double scale() const {
    return rslora ? alpha / std::sqrt(static_cast<double>(rank))
                  : alpha / static_cast<double>(rank);
  }
};

/// Checks a lora_config; tfm::value_error names the bad field.
inline void validate(const lora_config& c) {
  if (c.rank <= 0) fail(errc::value, "tfm::nn::lora: rank must be positive, got ", c.rank, ".");
  if (!std::isfinite(c.alpha) || c.alpha <= 0)
    fail(errc::value, "tfm::nn::lora: alpha must be positive, got ", c.alpha, ".");
  if (!(c.dropout >= 0 && c.dropout < 1))
    fail(errc::value, "tfm::nn::lora: dropout must be in [0, 1), got ", c.dropout, ".");
  parse_lora_targets(c.targets);
}

/// A set of LoRA matrices for one model: per adapted linear map, one lora_update.
template <class T>
class lora_adapter {
 public:
  /// One adapted linear map of layer `layer`: "attn" (c_attn: parts q, k, v), "o", or an MLP
  /// projection.
  struct site {
    index_t layer = 0;
    std::vector<lora_target> targets;  ///< one per part of `update`
    std::shared_ptr<lora_update<T>> update;
  };

  lora_config config;
  std::vector<site> sites;
  std::shared_ptr<lora_dropout_state> state = std::make_shared<lora_dropout_state>();

  /// The A and B matrices with their names, for an optimizer or a checkpoint.
  parameter_list<T> parameters() const {
    parameter_list<T> ps;
    for (const auto& s : sites)
      for (std::size_t i = 0; i < s.targets.size(); ++i) {
        const auto& part = s.update->parts[i];
        ps.push_back({part.a.name(), part.a.data(), true});
        ps.push_back({part.b.name(), part.b.data(), true});
      }
    return ps;
  }
  /// Dropout on (training) or off (evaluation).
  void train(bool on) { state->training = on; }
  /// The A and B of target t in layer l, or nullptr.
  const lora_part<T>* find(index_t layer, lora_target t) const {
    for (const auto& s : sites)
      if (s.layer == layer)
        for (std::size_t i = 0; i < s.targets.size(); ++i)
          if (s.targets[i] == t) return &s.update->parts[i];
    return nullptr;
  }
  lora_part<T>* find(index_t layer, lora_target t) {
    return const_cast<lora_part<T>*>(std::as_const(*this).find(layer, t));
  }
  /// Number of adapter values (A and B of every part).
  index_t size() const { return count_parameters(parameters()); }
};

namespace detail::lora {

/// The row range of c_attn a q, k or v part writes: q [0, H D), k [H D, (H + G) D), v after.
template <class Cfg>
std::pair<index_t, index_t> qkv_rows(const Cfg& c, lora_target t) {
  const index_t D = c.n_embd / c.n_head, q = c.n_head * D, kv = c.n_kv_head * D;
  if (t == lora_target::q) return {0, q};
  if (t == lora_target::k) return {q, kv};
  return {q + kv, kv};
}

inline const char* site_group(lora_target t) {
  return t == lora_target::q || t == lora_target::k || t == lora_target::v || t == lora_target::o
             ? "attn"
             : "mlp";
}

template <class T>
lora_part<T> make_part(index_t layer, lora_target t, index_t row0, index_t rows, index_t in,
                       const lora_config& c) {
  lora_part<T> p;
  p.row0 = row0;
  p.rows = rows;
  const std::string base =
      "h." + std::to_string(layer) + "." + site_group(t) + "." + to_string(t) + ".";
  tensor<T, dyn_shape<2>> a(dyn_shape<2>(c.rank, in));
  // PEFT: kaiming_uniform_(a = sqrt(5)) on (r, in) = U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
  const std::uint64_t seed = c.seed ^ name_hash(base + "lora_A");
  for (index_t i = 0; i < a.size(); ++i)
    a.data()[i] = static_cast<T>(
        (2.0 * static_cast<double>(uniform_float(seed, static_cast<std::uint64_t>(i))) - 1.0) *
        bound);
  p.a = var<T, dyn_shape<2>>(a, true);
  p.a.set_name(base + "lora_A");
  tensor<T, dyn_shape<2>> b(dyn_shape<2>(rows, c.rank));
  b.fill(T(0));
  p.b = var<T, dyn_shape<2>>(b, true);
  p.b.set_name(base + "lora_B");
  return p;
}

/// Calls f(layer, group, linear&) for the linear maps an adapter can reach: group "attn"
/// (c_attn), "o" (c_proj), "gate", "up", "down".
template <class Cfg, class T, class F>
void for_each_site(gpt<Cfg, T>& m, F&& f) {
  for (std::size_t l = 0; l < m.h.size(); ++l) {
    auto& blk = m.h[l];
    const auto L = static_cast<index_t>(l);
    f(L, std::string_view("attn"), blk.attn.c_attn);
    f(L, std::string_view("o"), blk.attn.c_proj);
    if (blk.is_moe()) continue;  // the experts are 3-D tables, not nn::linear maps
    if (blk.mlp_.kind() == mlp_kind::swiglu) f(L, std::string_view("gate"), blk.mlp_.gate_proj());
    f(L, std::string_view("up"), blk.mlp_.up_proj());
    f(L, std::string_view("down"), blk.mlp_.down_proj());
  }
}

template <class Lin>
index_t in_features(const Lin& lin) {
  if (lin.frozen) return lin.frozen->cols();
  return lin.weight.extent(1);
}
template <class Lin>
index_t out_features(const Lin& lin) {
  if (lin.frozen) return lin.frozen->rows();
  return lin.weight.extent(0);
}

}  // namespace detail::lora

/// A new adapter for `m` (not attached): B = 0, so attaching it leaves the model's outputs
/// unchanged until it trains.
template <class Cfg, class T>
lora_adapter<T> make_lora(gpt<Cfg, T>& m, const lora_config& c) {
  validate(c);
  const auto targets = parse_lora_targets(c.targets);
  auto wants = [&](lora_target t) {
    for (auto x : targets)
      if (x == t) return true;
    return false;
  };
  if (m.config().mlp == mlp_kind::moe &&
      (wants(lora_target::gate) || wants(lora_target::up) || wants(lora_target::down)))
    fail(errc::unsupported,
         "tfm::nn::lora: this model's feed-forward layers are mixtures of experts, which take no "
         "adapters; target the attention (q, k, v, o).");
  if (wants(lora_target::gate) && m.config().mlp != mlp_kind::swiglu)
    fail(errc::value, "tfm::nn::lora: target 'gate' needs a SwiGLU MLP; this model's MLP is GELU.");
  lora_adapter<T> a;
  a.config = c;
  a.state->seed = c.seed ^ 0x6c6f7261ull;
  namespace dl = detail::lora;
  dl::for_each_site(m, [&](index_t l, std::string_view group, auto& lin) {
    typename lora_adapter<T>::site s;
    s.layer = l;
    auto up = std::make_shared<lora_update<T>>();
    up->scale = c.scale();
    up->dropout = c.dropout;
    up->state = a.state;
    const index_t in = dl::in_features(lin);
    if (group == "attn") {
      for (auto t : {lora_target::q, lora_target::k, lora_target::v})
        if (wants(t)) {
          const auto [r0, n] = dl::qkv_rows(m.config(), t);
          up->parts.push_back(dl::make_part<T>(l, t, r0, n, in, c));
          s.targets.push_back(t);
        }
    } else {
      const lora_target t = group == "o"      ? lora_target::o
                            : group == "gate" ? lora_target::gate
                            : group == "up"   ? lora_target::up
                                              : lora_target::down;
      if (wants(t)) {
        up->parts.push_back(dl::make_part<T>(l, t, 0, dl::out_features(lin), in, c));
        s.targets.push_back(t);
      }
    }
    if (!s.targets.empty()) {
      s.update = std::move(up);
      a.sites.push_back(std::move(s));
    }
  });
  return a;
}

/// Stops every base parameter of `m` from requiring gradients (LoRA trains the adapter only).
template <class Cfg, class T>
void freeze(gpt<Cfg, T>& m) {
  for (auto& p : m.parameters()) p.data->requires_grad = false;
}

/// Removes any adapter from `m`'s linear maps.
template <class Cfg, class T>
void detach(gpt<Cfg, T>& m) {
  detail::lora::for_each_site(m, [](index_t, std::string_view, auto& lin) { lin.lora.reset(); });
}

/// Puts adapter `a` on `m` (replacing any other). The adapter must have been made for a model
/// of the same configuration.
template <class Cfg, class T>
void attach(gpt<Cfg, T>& m, const lora_adapter<T>& a) {
  detach(m);
  namespace dl = detail::lora;
  for (const auto& s : a.sites) {
    if (s.layer < 0 || s.layer >= static_cast<index_t>(m.h.size()))
      fail(errc::shape, "tfm::nn::lora: the adapter has layer ", s.layer, " but the model has ",
           m.h.size(), " layers.");
    const lora_target t0 = s.targets.front();
    bool placed = false;
    dl::for_each_site(m, [&](index_t l, std::string_view group, auto& lin) {
      if (l != s.layer || placed) return;
      const bool qkv = t0 == lora_target::q || t0 == lora_target::k || t0 == lora_target::v;
      const bool match = qkv ? group == "attn" : group == to_string(t0);
      if (!match) return;
      for (const auto& p : s.update->parts)
        if (p.a.extent(1) != dl::in_features(lin) || p.row0 + p.rows > dl::out_features(lin))
          fail(errc::shape, "tfm::nn::lora: the adapter's ", p.a.name(), " (", p.a.extent(0), ", ",
               p.a.extent(1), ") does not fit the model's (", dl::out_features(lin), ", ",
               dl::in_features(lin), ") map.");
      lin.lora = s.update;
      placed = true;
    });
    if (!placed)
      fail(errc::value, "tfm::nn::lora: the model has no '", to_string(t0),
           "' projection in layer ", s.layer, ".");
  }
}

namespace detail::lora {
template <class Cfg, class T>
void add_products(gpt<Cfg, T>& m, lora_adapter<T>& a, double sign) {
  for (auto& s : a.sites) {
    for_each_site(m, [&](index_t l, std::string_view group, auto& lin) {
      if (l != s.layer) return;
      const lora_target t0 = s.targets.front();
      const bool qkv = t0 == lora_target::q || t0 == lora_target::k || t0 == lora_target::v;
      if (!(qkv ? group == "attn" : group == to_string(t0))) return;
      if (lin.frozen || !lin.weight.defined())
        fail(errc::unsupported, "tfm::nn::lora: cannot merge into layer ", l, "'s ", group,
             " map: its base is a frozen compact weight (QLoRA); dequantize the base first.");
      no_grad ng;
      T* w = lin.weight.data()->value.data();
      const index_t in = lin.weight.extent(1);
      for (const auto& p : s.update->parts) {
        const index_t r = p.a.extent(0);
        const T* A = p.a.data()->value.data();
        const T* B = p.b.data()->value.data();
        // W[row0 + i, :] += sign * s * B[i, :] A, accumulated in double.
        std::vector<double> row(static_cast<std::size_t>(in));
        for (index_t i = 0; i < p.rows; ++i) {
          std::fill(row.begin(), row.end(), 0.0);
          for (index_t k = 0; k < r; ++k) {
            const double b = static_cast<double>(B[i * r + k]);
            if (b == 0) continue;
            for (index_t j = 0; j < in; ++j)
              row[static_cast<std::size_t>(j)] += b * static_cast<double>(A[k * in + j]);
          }
          T* wr = w + (p.row0 + i) * in;
          for (index_t j = 0; j < in; ++j)
            wr[j] = static_cast<T>(static_cast<double>(wr[j]) +
                                   sign * s.update->scale * row[static_cast<std::size_t>(j)]);
        }
      }
    });
  }
}
}  // namespace detail::lora

/// W += s B A for every part of `a`, then the adapter's updates are disabled (the merged weights
/// carry them). Refused for a frozen compact (NF4) base.
template <class Cfg, class T>
void merge(gpt<Cfg, T>& m, lora_adapter<T>& a) {
  for (const auto& s : a.sites)
    if (!s.update->enabled)
      fail(errc::value, "tfm::nn::lora: the adapter is merged already (unmerge it first).");
  detail::lora::add_products(m, a, +1.0);
  for (auto& s : a.sites) s.update->enabled = false;
}

/// The inverse of merge: W -= s B A, and the updates are enabled again.
template <class Cfg, class T>
void unmerge(gpt<Cfg, T>& m, lora_adapter<T>& a) {
  for (const auto& s : a.sites)
    if (s.update->enabled) fail(errc::value, "tfm::nn::lora: the adapter is not merged.");
  detail::lora::add_products(m, a, -1.0);
  for (auto& s : a.sites) s.update->enabled = true;
}

}  // namespace nn
TFM_END_NAMESPACE
