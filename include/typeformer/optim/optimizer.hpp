// typeformer/optim/optimizer.hpp
//
// Optimizers over named parameters (nn::parameter_list<T>), PyTorch semantics:
//   sgd    v = mu v + g (+ wd p);  p -= lr (nesterov ? g + mu v : v)
//   adam   g += wd p (L2);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//          p -= lr m^ / (sqrt(v^) + eps), m^ = m/(1-b1^t), v^ = v/(1-b2^t)   (Kingma & Ba,
//          arXiv:1412.6980)
//   adamw  as adam without the L2 term, plus decoupled decay p -= lr wd p  (Loshchilov & Hutter,
//          arXiv:1711.05101)
// Parameter groups: parameters whose named_parameter::decay is false (biases, norm weights) get
// weight decay 0; set_lr() changes the learning rate of every group (schedulers call it).
//
// f32 parameters under Adam/AdamW are updated in f32 with SIMD (PyTorch's CPU Adam also works in
// the parameter's precision); other cases compute each update in double.
//
// Mixed precision: for bf16/f16 parameters the optimizer keeps f32 master weights and applies
// the update to them, then rounds into the parameter (gradients are already f32, grad_t<T>).
//
// Safety: step() first checks every gradient; if any is NaN/Inf, no parameter changes, the step
// is not counted, and step() returns false (last_error() names the parameter).
//
// State (moments, master weights, step count) saves and restores exactly: save(os) / load(is)
// write a small binary format checked on load (magic, version, kind, sizes).
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/nn/module.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <istream>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace optim {

struct sgd_options {
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};
struct adam_options {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

enum class method : std::uint32_t { sgd = 1, adam = 2, adamw = 3 };

namespace detail {
/// Gradient passes (norm, finiteness) work in fixed chunks of this many values, split across
/// threads when there are at least 8; the norm adds its chunk sums in chunk order, so it does
/// not depend on the thread count.
inline constexpr index_t norm_chunk = index_t(1) << 15;

/// Whether g[0, n) holds no NaN or Inf: detail::all_finite over the chunks, in parallel for
/// large gradients (the check reads every gradient before each step).
template <class G>
bool grads_finite(const G* g, index_t n) {
  const index_t chunks = (n + norm_chunk - 1) / norm_chunk;
  if (chunks < 8 || in_parallel()) return tfm::detail::all_finite(g, n);
  int bad = 0;
  TFM_OMP(parallel for schedule(static) reduction(| : bad))
  for (index_t c = 0; c < chunks; ++c)
    bad |= tfm::detail::all_finite(g + c * norm_chunk, std::min(norm_chunk, n - c * norm_chunk))
               ? 0
               : 1;
  return bad == 0;
}
}  // namespace detail

/// One optimizer class for the three methods (they share state handling and safety checks).
template <class T>
class optimizer {
  using G = grad_t<T>;
  static constexpr bool master = is_half_v<T>;
  /// Moment buffers: double for double parameters (so f64 training loses nothing), else float.
  using state_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

 public:
  optimizer(method m, nn::parameter_list<T> params, adam_options a, sgd_options s = {})
      : method_(m), params_(std::move(params)), adam_(a), sgd_(s) {
    if (m == method::sgd)
      lr_ = s.lr;
    else
      lr_ = a.lr;
    if (!(lr_ >= 0))
      fail(errc::value, "tfm::optim: the learning rate must be >= 0, got ", lr_, ".");
    slots_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const index_t n = params_[i].data->size();
      auto& sl = slots_[i];
      if (m != method::sgd || s.momentum != 0) sl.m.assign(static_cast<std::size_t>(n), state_t(0));
      if (m != method::sgd) sl.v.assign(static_cast<std::size_t>(n), state_t(0));
      if constexpr (master) {
        sl.master.resize(static_cast<std::size_t>(n));
        const T* p = params_[i].data->value.data();
        for (index_t k = 0; k < n; ++k)
          sl.master[static_cast<std::size_t>(k)] = static_cast<float>(p[k]);
      }
    }
  }

  double lr() const noexcept { return lr_; }
  void set_lr(double lr) noexcept { lr_ = lr; }
  /// Steps taken (calls to step() that applied an update).
  std::int64_t steps() const noexcept { return t_; }
  /// Updates applied to parameter i: Adam's bias correction counts these, so a parameter that
  /// received no gradient in some steps (frozen, unused) is corrected by its own count.
  std::int64_t steps(std::size_t i) const { return slots_.at(i).t; }
  const std::string& last_error() const noexcept { return error_; }
  const nn::parameter_list<T>& parameters() const noexcept { return params_; }

  /// Drops every gradient.
  void zero_grad() {
    for (auto& p : params_) p.data->release_grad();
  }

  /// Applies one update from the accumulated gradients, each multiplied by grad_scale as it is
  /// read (the gradient buffers are left as they are): clip_coefficient()'s factor, or an
  /// unscaling factor, applied without a pass of its own over the gradients. Returns false (and
  /// changes nothing) when a gradient is not finite or grad_scale is not a finite number.
  bool step(double grad_scale = 1.0) { return apply(grad_scale, true); }

  /// Norm and outcome of step_clipped().
  struct clipped_step {
    double grad_norm;  ///< global L2 norm of the gradients before clipping (grad_norm())
    bool applied;      ///< false: a gradient was not finite and nothing changed (last_error())
  };

  /// clip_grad_norm(parameters(), max_norm) followed by step(), in two passes over the gradients
  /// instead of four: the clip factor is applied as the update reads each gradient, and the norm
  /// pass replaces step()'s finiteness check, since a finite sum of squares in double has no
  /// NaN or Inf term. Only a non-finite norm (a NaN/Inf gradient, or a double gradient so large
  /// that its square overflows) falls back to the per-parameter check. Same result as
  /// `step(clip_coefficient(grad_norm(parameters()), max_norm))`.
  clipped_step step_clipped(double max_norm);

 private:
  bool apply(double grad_scale, bool check_grads) {
    if (!std::isfinite(grad_scale)) {
      error_ = "non-finite gradient scale";
      return false;
    }
    if (check_grads)
      for (auto& p : params_)
        if (p.data->has_grad() && !detail::grads_finite(p.data->grad_data(), p.data->size())) {
          error_ = "non-finite gradient in parameter '" + p.name + "'";
          return false;
        }
    error_.clear();
    ++t_;
    for (std::size_t i = 0; i < params_.size(); ++i) update(i, grad_scale);
    return true;
  }

 public:
  /// Writes the optimizer state (not the parameters).
  void save(std::ostream& os) const {
    auto w64 = [&](std::uint64_t x) { os.write(reinterpret_cast<const char*>(&x), 8); };
    auto wvec = [&](const auto& v) {
      using E = typename std::decay_t<decltype(v)>::value_type;
      w64(v.size());
      w64(sizeof(E));
      if (!v.empty())
        os.write(reinterpret_cast<const char*>(v.data()),
                 static_cast<std::streamsize>(v.size() * sizeof(E)));
    };
    os.write("TFMOPT02", 8);
    w64(static_cast<std::uint64_t>(method_));
    w64(static_cast<std::uint64_t>(t_));
    double lr = lr_;
    os.write(reinterpret_cast<const char*>(&lr), 8);
    w64(slots_.size());
    for (const auto& s : slots_) {
      w64(static_cast<std::uint64_t>(s.t));
      wvec(s.m);
      wvec(s.v);
      wvec(s.master);
    }
    if (!os) fail(errc::io, "tfm::optim: writing the optimizer state failed.");
  }

  /// Restores state written by save() for the same parameters; raises parse_error on mismatch.
  void load(std::istream& is) {
    auto r64 = [&]() {
      std::uint64_t x = 0;
      if (!is.read(reinterpret_cast<char*>(&x), 8))
        fail(errc::parse, "tfm::optim: the optimizer state is truncated.");
      return x;
    };
    char magic[8];
    if (!is.read(magic, 8) || std::memcmp(magic, "TFMOPT02", 8) != 0)
      fail(errc::parse, "tfm::optim: not an optimizer state (bad magic).");
    if (r64() != static_cast<std::uint64_t>(method_))
      fail(errc::parse, "tfm::optim: the state was saved by a different optimizer method.");
    std::int64_t t = static_cast<std::int64_t>(r64());
    double lr;
    if (!is.read(reinterpret_cast<char*>(&lr), 8))
      fail(errc::parse, "tfm::optim: the optimizer state is truncated.");
    if (r64() != slots_.size())
      fail(errc::parse, "tfm::optim: the state holds a different number of parameters.");
    std::vector<slot> ns(slots_.size());
    auto rvec = [&](auto& v, std::size_t want, std::size_t i) {
      using E = typename std::decay_t<decltype(v)>::value_type;
      const std::uint64_t n = r64();
      if (n != want)
        fail(errc::parse, "tfm::optim: state size mismatch for parameter '", params_[i].name, "'.");
      if (r64() != sizeof(E))
        fail(errc::parse, "tfm::optim: the state of parameter '", params_[i].name,
             "' was saved with another element type.");
      v.resize(static_cast<std::size_t>(n));
      if (n &&
          !is.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(E))))
        fail(errc::parse, "tfm::optim: the optimizer state is truncated.");
    };
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const std::uint64_t ti = r64();
      if (ti > static_cast<std::uint64_t>(t))
        fail(errc::parse, "tfm::optim: corrupt per-parameter step count.");
      ns[i].t = static_cast<std::int64_t>(ti);
      rvec(ns[i].m, slots_[i].m.size(), i);
      rvec(ns[i].v, slots_[i].v.size(), i);
      rvec(ns[i].master, slots_[i].master.size(), i);
    }
    slots_ = std::move(ns);
    t_ = t;
    lr_ = lr;
  }

 private:
  struct slot {
    std::vector<state_t> m, v;
    std::vector<float> master;  // f32 master weights of bf16/f16 parameters
    std::int64_t t = 0;         // updates applied to this parameter
  };

  void update(std::size_t i, double grad_scale) {
    auto& p = params_[i];
    if (!p.data->has_grad()) return;
    const index_t n = p.data->size();
    T* val = p.data->value.data();
    const G* g = p.data->grad_data();
    auto& sl = slots_[i];
    const std::int64_t t = ++sl.t;
    const bool is_sgd = method_ == method::sgd;
    const double wd = p.decay ? (is_sgd ? sgd_.weight_decay : adam_.weight_decay) : 0.0;
    const double b1 = adam_.beta1, b2 = adam_.beta2;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
    const double lr = lr_;
    if constexpr (std::is_same_v<T, float>) {
      if (!is_sgd) {
        adam_float(val, g, static_cast<float>(grad_scale), sl, n, wd, lr, bc1, bc2);
        return;
      }
    }
    TFM_OMP(parallel for schedule(static) if (n >= (1 << 16)))
    for (index_t k = 0; k < n; ++k) {
      const std::size_t ku = static_cast<std::size_t>(k);
      double w =
          master ? static_cast<double>(sl.master[ku]) : static_cast<double>(compute_t<T>(val[k]));
      double gk = static_cast<double>(g[k]) * grad_scale;
      if (is_sgd) {
        if (wd != 0) gk += wd * w;
        double d = gk;
        if (sgd_.momentum != 0) {
          double buf = t == 1 ? gk : sgd_.momentum * static_cast<double>(sl.m[ku]) + gk;
          sl.m[ku] = static_cast<state_t>(buf);
          d = sgd_.nesterov ? gk + sgd_.momentum * buf : buf;
        }
        w -= lr * d;
      } else {
        if (method_ == method::adam && wd != 0) gk += wd * w;
        if (method_ == method::adamw && wd != 0) w -= lr * wd * w;
        double m = b1 * static_cast<double>(sl.m[ku]) + (1 - b1) * gk;
        double v = b2 * static_cast<double>(sl.v[ku]) + (1 - b2) * gk * gk;
        sl.m[ku] = static_cast<state_t>(m);
        sl.v[ku] = static_cast<state_t>(v);
        w -= lr * (m / bc1) / (std::sqrt(v / bc2) + adam_.eps);
      }
      if constexpr (master) {
        sl.master[ku] = static_cast<float>(w);
        val[k] = T(static_cast<float>(w));
      } else {
        val[k] = static_cast<T>(w);
      }
    }
  }

  /// Adam/AdamW on float parameters with SIMD, in float (as PyTorch's fused CPU Adam does).
  void adam_float(float* p, const float* g, float gs, slot& sl, index_t n, double wd, double lr,
                  double bc1, double bc2) {
    using B = simd::batch<float>;
    constexpr index_t w = simd::width<float>;
    const float b1 = static_cast<float>(adam_.beta1), b2 = static_cast<float>(adam_.beta2);
    const float step = static_cast<float>(lr / bc1),
                inv_sbc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    const float eps = static_cast<float>(adam_.eps);
    const float decay = method_ == method::adamw ? static_cast<float>(1.0 - lr * wd) : 1.0f;
    const float l2 = method_ == method::adam ? static_cast<float>(wd) : 0.0f;
    float* m = sl.m.data();
    float* v = sl.v.data();
    const index_t chunks = (n + 4095) / 4096;
    TFM_OMP(parallel for schedule(static) if (n >= (1 << 16)))
    for (index_t c = 0; c < chunks; ++c) {
      index_t k = c * 4096, end = std::min(n, k + 4096);
      for (; k + w <= end; k += w) {
        B pk = simd::load(p + k);
        B gk = simd::fma(B(l2), pk, simd::load(g + k) * B(gs));
        B mk = simd::fma(B(b1), simd::load(m + k), B(1.0f - b1) * gk);
        B vk = simd::fma(B(b2), simd::load(v + k), B(1.0f - b2) * gk * gk);
        simd::store(m + k, mk);
        simd::store(v + k, vk);
        pk = pk * B(decay) - B(step) * mk / (xsimd::sqrt(vk) * B(inv_sbc2) + B(eps));
        simd::store(p + k, pk);
      }
      for (; k < end; ++k) {
        float gk = std::fma(l2, p[k], g[k] * gs);
        m[k] = b1 * m[k] + (1.0f - b1) * gk;
        v[k] = b2 * v[k] + (1.0f - b2) * gk * gk;
        p[k] = p[k] * decay - step * m[k] / (std::sqrt(v[k]) * inv_sbc2 + eps);
      }
    }
  }

  method method_;
  nn::parameter_list<T> params_;
  adam_options adam_;
  sgd_options sgd_;
  double lr_ = 0;
  std::int64_t t_ = 0;
  std::vector<slot> slots_;
  std::string error_;
};

template <class T>
optimizer<T> sgd(nn::parameter_list<T> ps, sgd_options o) {
  return optimizer<T>(method::sgd, std::move(ps), adam_options{}, o);
}
template <class T>
optimizer<T> adam(nn::parameter_list<T> ps, adam_options o) {
  return optimizer<T>(method::adam, std::move(ps), o);
}
template <class T>
optimizer<T> adamw(nn::parameter_list<T> ps, adam_options o) {
  return optimizer<T>(method::adamw, std::move(ps), o);
}

namespace detail {

/// sum g[k]^2 in double over [0, n): eight interleaved accumulators (vectorisable), fixed order.
template <class G>
double sum_squares_serial(const G* g, index_t n) {
  double acc[8] = {};
  index_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) {
      const double v = static_cast<double>(g[k + j]);
      acc[j] += v * v;
    }
  double tail = 0;
  for (; k < n; ++k) tail += static_cast<double>(g[k]) * static_cast<double>(g[k]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

template <class G>
void scale_in_place(G* g, index_t n, double c) {
  TFM_OMP(parallel for schedule(static) if (n >= 8 * norm_chunk && !in_parallel()))
  for (index_t k = 0; k < n; ++k) g[k] = static_cast<G>(static_cast<double>(g[k]) * c);
}
}  // namespace detail

/// The global L2 norm of all gradients, accumulated as clip_grad_norm does (same value for every
/// thread count); gradients are not changed. The chunks of every gradient are summed in one
/// parallel loop (a per-parameter loop left the many small gradients of a model to one thread
/// and paid a fork and join for each), then added per parameter and across parameters in order.
template <class T>
double grad_norm(const nn::parameter_list<T>& ps) {
  using G = grad_t<T>;
  struct piece {
    const G* g;
    index_t n;
  };
  std::vector<piece> pieces;
  std::vector<std::size_t> first;  // first piece of each parameter with a gradient
  for (const auto& p : ps) {
    if (!p.data->has_grad()) continue;
    first.push_back(pieces.size());
    const G* g = p.data->grad_data();
    const index_t n = p.data->size();
    for (index_t k = 0; k < n; k += detail::norm_chunk)
      pieces.push_back({g + k, std::min(detail::norm_chunk, n - k)});
  }
  first.push_back(pieces.size());
  std::vector<double> part(pieces.size());
  const auto count = static_cast<std::ptrdiff_t>(pieces.size());
  TFM_OMP(parallel for schedule(static) if (count >= 8 && !in_parallel()))
  for (std::ptrdiff_t i = 0; i < count; ++i)
    part[static_cast<std::size_t>(i)] = detail::sum_squares_serial(
        pieces[static_cast<std::size_t>(i)].g, pieces[static_cast<std::size_t>(i)].n);
  double s = 0;
  for (std::size_t k = 0; k + 1 < first.size(); ++k) {
    double sp = 0;
    for (std::size_t i = first[k]; i < first[k + 1]; ++i) sp += part[i];
    s += sp;
  }
  return std::sqrt(s);
}

/// The factor clip_grad_norm multiplies gradients by for a global norm `norm`:
/// max_norm / (norm + 1e-6) when norm > max_norm, else 1 (also for a non-finite norm, which the
/// optimizer's step() refuses anyway). `opt.step(clip_coefficient(grad_norm(ps), max_norm))`
/// clips inside the update instead of in a pass of its own.
inline double clip_coefficient(double norm, double max_norm) {
  return std::isfinite(norm) && norm > max_norm && norm > 0 ? max_norm / (norm + 1e-6) : 1.0;
}

template <class T>
typename optimizer<T>::clipped_step optimizer<T>::step_clipped(double max_norm) {
  if (!(max_norm > 0))
    fail(errc::value, "tfm::optim: step_clipped needs a max_norm > 0, got ", max_norm, ".");
  const double norm = grad_norm(params_);
  const bool proven = std::isfinite(norm);
  return {norm, apply(clip_coefficient(norm, max_norm), !proven)};
}

/// Scales gradients so that their global L2 norm is at most max_norm; returns the norm before
/// clipping. The squares are accumulated in double over fixed chunks of each gradient, the
/// chunks and parameters added in order, so the norm is the same for every thread count. A
/// non-finite norm leaves gradients as they are (the optimizer's step() then refuses the update).
template <class T>
double clip_grad_norm(const nn::parameter_list<T>& ps, double max_norm) {
  const double norm = grad_norm(ps);
  if (const double c = clip_coefficient(norm, max_norm); c != 1.0) {
    for (const auto& p : ps) {
      if (!p.data->has_grad()) continue;
      detail::scale_in_place(p.data->grad_data(), p.data->size(), c);
    }
  }
  return norm;
}

}  // namespace optim
TFM_END_NAMESPACE
