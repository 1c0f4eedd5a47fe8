// tests/unit/optim/optim_test_util.hpp
//
// Helpers of the optimizer tests, written independently of optim/:
//   params<T>(...)          rank-1 parameter vars with names and decay flags, and their
//                           nn::parameter_list (the form optimizers take)
//   set_grads(ps, g)        writes gradients (doubles rounded to grad_t<T>) and returns the
//                           values the optimizer will actually read, as doubles
//   values(ps)              parameter values as doubles (bf16/f16 widen exactly)
//   parse_state(bytes)      reads the bytes of optimizer::save() (layout documented below), so
//                           tests can see moments and f32 master weights
//   ref_sgd / ref_adam      the update rules in double, per parameter, from the papers and the
//                           PyTorch documentation (torch.optim.SGD / Adam / AdamW pseudocode)
#pragma once

#include <doctest/doctest.h>
#include <tfm_test.hpp>
#include <typeformer/autodiff/variable.hpp>
// var(tensor) assigns through expr/evaluate.hpp, which variable.hpp does not include; the cpu
// backend header brings it (as tests/unit/autodiff/gc_support.hpp does).
#include <typeformer/backend/cpu/elementwise.hpp>
#include <typeformer/core/half.hpp>
#include <typeformer/core/tensor.hpp>
#include <typeformer/nn/module.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace optim_test {

using tfm::index_t;
using vec = std::vector<double>;
using S1 = tfm::shape<tfm::dyn>;

/// Rank-1 parameters (one var per entry of `init`), listed in order with names p0, p1, ... and
/// the given decay flags.
template <class T>
struct param_set {
  std::vector<tfm::var<T, S1>> vars;
  tfm::nn::parameter_list<T> list;
};

template <class T>
param_set<T> params(const std::vector<vec>& init, const std::vector<bool>& decay) {
  param_set<T> ps;
  for (std::size_t i = 0; i < init.size(); ++i) {
    tfm::tensor<T, S1> t{S1(static_cast<index_t>(init[i].size()))};
    for (std::size_t k = 0; k < init[i].size(); ++k)
      t.data()[k] = tfm_test::from_double<T>(init[i][k]);
    auto v = tfm::parameter(t);
    std::string name = "p";
    name += std::to_string(i);
    v.set_name(name);
    ps.list.push_back({v.name(), v.data(), decay[i]});
    ps.vars.push_back(v);
  }
  return ps;
}

/// Parameter values as doubles, one vector per parameter.
template <class T>
std::vector<vec> values(const param_set<T>& ps) {
  std::vector<vec> out;
  for (const auto& v : ps.vars) {
    vec x;
    for (index_t k = 0; k < v.size(); ++k)
      x.push_back(tfm_test::to_double(v.data()->value.data()[k]));
    out.push_back(x);
  }
  return out;
}

/// Raw parameter elements (for bitwise comparison).
template <class T>
std::vector<T> raw_values(const param_set<T>& ps) {
  std::vector<T> out;
  for (const auto& v : ps.vars)
    for (index_t k = 0; k < v.size(); ++k) out.push_back(v.data()->value.data()[k]);
  return out;
}

/// Gradients of the parameters that have one, in order, as doubles.
template <class T>
vec grads_of(const param_set<T>& ps) {
  vec out;
  for (const auto& v : ps.vars)
    if (v.has_grad())
      for (index_t k = 0; k < v.size(); ++k)
        out.push_back(static_cast<double>(v.data()->grad.data()[k]));
  return out;
}

/// The same, as raw gradient elements (for bitwise comparison).
template <class T>
std::vector<tfm::grad_t<T>> raw_grads(const param_set<T>& ps) {
  std::vector<tfm::grad_t<T>> out;
  for (const auto& v : ps.vars)
    if (v.has_grad())
      for (index_t k = 0; k < v.size(); ++k) out.push_back(v.data()->grad.data()[k]);
  return out;
}

/// Sets every gradient to g (rounded to grad_t<T>); returns the stored values as doubles.
template <class T>
std::vector<vec> set_grads(const param_set<T>& ps, const std::vector<vec>& g) {
  using G = tfm::grad_t<T>;
  std::vector<vec> out;
  for (std::size_t i = 0; i < ps.vars.size(); ++i) {
    G* d = ps.vars[i].data()->grad_data();
    vec x;
    for (std::size_t k = 0; k < g[i].size(); ++k) {
      d[k] = static_cast<G>(g[i][k]);
      x.push_back(static_cast<double>(d[k]));
    }
    out.push_back(x);
  }
  return out;
}

/// Random gradients shaped like `like`, magnitudes in [lo, hi] with random signs.
inline std::vector<vec> random_grads(const std::vector<vec>& like, std::mt19937& g, double lo,
                                     double hi) {
  std::uniform_real_distribution<double> mag(lo, hi);
  std::bernoulli_distribution sign(0.5);
  std::vector<vec> out;
  for (const auto& p : like) {
    vec x;
    for (std::size_t k = 0; k < p.size(); ++k) x.push_back(sign(g) ? mag(g) : -mag(g));
    out.push_back(x);
  }
  return out;
}

/// Random initial values of the given sizes, magnitudes in [0.5, 1.5] with random signs (away
/// from 0, so a relative tolerance on the values means something).
inline std::vector<vec> random_init(const std::vector<std::size_t>& sizes, std::mt19937& g) {
  std::vector<vec> like;
  for (auto n : sizes) like.push_back(vec(n, 0.0));
  return random_grads(like, g, 0.5, 1.5);
}

inline vec flat(const std::vector<vec>& v) {
  vec out;
  for (const auto& x : v) out.insert(out.end(), x.begin(), x.end());
  return out;
}

/// got vs want with a tolerance relative to the largest |want| (values that cross zero during a
/// run make a plain per-element relative tolerance meaningless; rounding errors scale with the
/// magnitudes the run went through): |got - want| <= rtol * max(|want|).
inline tfm_test::report close_scaled(const vec& got, const vec& want, double rtol) {
  double big = 0;
  for (double w : want) big = std::max(big, std::fabs(w));
  return tfm_test::all_close(got, want, rtol * big, 0.0);
}

// ---- the saved state -------------------------------------------------------------------------
// optimizer::save() writes, little-endian: "TFMOPT02", u64 method (1 sgd, 2 adam, 3 adamw),
// u64 step count, f64 learning rate, u64 parameter count, then per parameter: u64 updates
// applied to it, and three vectors, each u64 length + u64 element size + data: first moment /
// momentum buffer and second moment (f32, or f64 for f64 parameters), f32 master weights.
struct saved_state {
  std::uint64_t method = 0, steps = 0;
  double lr = 0;
  std::size_t moment_bytes = 0;  // 4 or 8 (0 when no parameter has moments)
  struct slot {
    std::uint64_t steps = 0;
    vec m, v;
    std::vector<float> master;
  };
  std::vector<slot> slots;
};

namespace detail {
inline std::optional<saved_state> parse_state_v2(const std::string& b) {
  saved_state s;
  std::size_t at = 0;
  auto take = [&](void* dst, std::size_t n) {
    if (n > b.size() - at) return false;
    std::memcpy(dst, b.data() + at, n);
    at += n;
    return true;
  };
  auto u64 = [&](std::uint64_t& x) { return take(&x, 8); };
  auto moments = [&](vec& out) {
    std::uint64_t n = 0, es = 0;
    if (!u64(n) || !u64(es) || (es != 4 && es != 8) || n > (b.size() - at) / es) return false;
    if (n > 0) s.moment_bytes = static_cast<std::size_t>(es);
    out.resize(static_cast<std::size_t>(n));
    for (auto& x : out) {
      if (es == 4) {
        float f;
        take(&f, 4);
        x = f;
      } else {
        take(&x, 8);
      }
    }
    return true;
  };
  auto floats = [&](std::vector<float>& out) {
    std::uint64_t n = 0, es = 0;
    if (!u64(n) || !u64(es) || es != 4 || n > (b.size() - at) / 4) return false;
    out.resize(static_cast<std::size_t>(n));
    return n == 0 || take(out.data(), out.size() * 4);
  };
  if (b.size() < 8 || b.compare(0, 8, "TFMOPT02") != 0) return std::nullopt;
  at = 8;
  std::uint64_t n = 0;
  if (!u64(s.method) || !u64(s.steps) || !take(&s.lr, 8) || !u64(n)) return std::nullopt;
  for (std::uint64_t i = 0; i < n; ++i) {
    saved_state::slot sl;
    if (!u64(sl.steps) || !moments(sl.m) || !moments(sl.v) || !floats(sl.master))
      return std::nullopt;
    s.slots.push_back(std::move(sl));
  }
  if (at != b.size()) return std::nullopt;
  return s;
}
}  // namespace detail

/// The saved state, parsed (REQUIREs that the bytes have the layout above).
inline saved_state parse_state(const std::string& b) {
  auto s = detail::parse_state_v2(b);
  REQUIRE_MESSAGE(s.has_value(), "the optimizer state does not have the documented layout");
  return *s;
}

template <class Opt>
std::string save_bytes(const Opt& opt) {
  std::ostringstream os(std::ios::binary);
  opt.save(os);
  return os.str();
}

// ---- reference update rules in double ---------------------------------------------------------

/// torch.optim.SGD (dampening 0): g += wd p; b = g on the first step, else mu b + g;
/// d = nesterov ? g + mu b : b (or g when mu == 0); p -= lr d.
struct ref_sgd {
  double mu = 0, wd = 0;
  bool nesterov = false;
  std::vector<vec> buf;
  void step(std::vector<vec>& p, const std::vector<vec>& g, const std::vector<bool>& decay,
            double lr) {
    const bool first = buf.empty();
    if (first) buf = g;
    for (std::size_t i = 0; i < p.size(); ++i)
      for (std::size_t k = 0; k < p[i].size(); ++k) {
        const double gk = g[i][k] + (decay[i] ? wd : 0.0) * p[i][k];
        double d = gk;
        if (mu != 0) {
          buf[i][k] = first ? gk : mu * buf[i][k] + gk;
          d = nesterov ? gk + mu * buf[i][k] : buf[i][k];
        }
        p[i][k] -= lr * d;
      }
  }
};

/// Adam (Kingma & Ba, arXiv:1412.6980, Algorithm 1 with PyTorch's eps placement:
/// p -= lr m^ / (sqrt(v^) + eps)). decoupled: AdamW (Loshchilov & Hutter, arXiv:1711.05101,
/// PyTorch form p *= 1 - lr wd), else L2 decay added to the gradient.
struct ref_adam {
  double b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0;
  bool decoupled = false;
  std::vector<vec> m, v;
  int t = 0;
  void step(std::vector<vec>& p, const std::vector<vec>& g, const std::vector<bool>& decay,
            double lr) {
    if (m.empty()) {
      for (const auto& x : p) {
        m.push_back(vec(x.size(), 0.0));
        v.push_back(vec(x.size(), 0.0));
      }
    }
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double w = decay[i] ? wd : 0.0;
      for (std::size_t k = 0; k < p[i].size(); ++k) {
        double gk = g[i][k];
        if (decoupled)
          p[i][k] *= 1.0 - lr * w;
        else
          gk += w * p[i][k];
        m[i][k] = b1 * m[i][k] + (1.0 - b1) * gk;
        v[i][k] = b2 * v[i][k] + (1.0 - b2) * gk * gk;
        const double mhat = m[i][k] / (1.0 - std::pow(b1, t));
        const double vhat = v[i][k] / (1.0 - std::pow(b2, t));
        p[i][k] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
    }
  }
};

}  // namespace optim_test
