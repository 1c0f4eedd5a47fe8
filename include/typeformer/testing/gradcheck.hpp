// typeformer/testing/gradcheck.hpp
//
// WHAT THIS IS
//   Public gradient checkers for reverse-mode autodiff (the float64 check of PyTorch's
//   torch.autograd.gradcheck and ggml's test-backend-ops MODE_GRAD):
//
//     auto r = tfm::testing::gradcheck([](const auto& a, const auto& b) { return a * exp(b); },
//                                      tfm::parameter(a0), tfm::parameter(b0));
//     CHECK_MESSAGE(r.passed, r.str());
//
//   f maps float64 vars to a float64 var y. The checked scalar is the random projection
//   L(x) = sum_i y_i w_i, w ~ N(0, 1) drawn from the counter-based generator under
//   options.seed (printed by str()), so every output element contributes with its own weight.
//
//   gradcheck(f, xs...)            every element of every input that requires grad: the analytic
//                                  dL/dx (one backward) against the central difference
//                                  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps), eps = 1e-6
//                                  (2 forward passes per element).
//   gradcheck_projected(f, xs...)  for large blocks: the directional derivative along a few random
//                                  directions v (one per option.directions, v ~ N(0, 1) over all
//                                  checked inputs at once): <dL/dx, v> against
//                                  (L(x + eps v) - L(x - eps v)) / (2 eps) (2 forwards each).
//   gradcheck(options, f, xs...), gradcheck_projected(options, f, xs...)   with other settings.
//
// PASS CRITERION (PyTorch's defaults): |g_an - g_num| <= atol + rtol |g_num|, atol = 1e-5,
//   rtol = 1e-3, for every comparison, and both finite. A mismatch never throws: the result says
//   passed = false and names the worst comparison. Errors from f itself (shape errors, ...)
//   propagate as usual.
//
// REPORTED FIGURES
//   max_abs_error   max |g_an - g_num|
//   max_rel_error   max |g_an - g_num| / max(|g_num|, atol / rtol): the relative error, with a
//                   floor at the knee of the pass criterion (1e-2 by default) so that gradients
//                   that are numerically zero do not divide by ~0. For smooth ops in float64 it is
//                   typically 1e-10 .. 1e-7; the criterion passes below ~rtol.
//   worst_input / worst_element   the comparison with the largest max_rel_error (the flat
//                   row-major element index; projected checks: worst_input = npos and
//                   worst_element = the direction).
//
// CONTRACT
//   - Inputs are tfm::var<double, S> (any shapes). The checker works on copies: the callers' vars
//     keep their values and gradients. Inputs that do not require grad are passed through as
//     constants and not checked.
//   - f must be deterministic (dropout with a fixed seed and offset is: it is linear given its
//     mask) and smooth around the inputs: keep inputs of relu/abs/min/max/where-like ops away from
//     their kinks and ties by more than eps.
//   - Vars that f captures instead of taking as arguments (e.g. parameters of a checkpointed
//     segment) are not checked, and receive the projected loss's gradient in their grad.
//   - The forward passes of the numerical derivative run under no_grad.
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"

#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace testing {

/// Settings of gradcheck / gradcheck_projected (defaults: PyTorch's float64 gradcheck).
struct gradcheck_options {
  double eps = 1e-6;                           ///< central-difference step
  double atol = 1e-5;                          ///< absolute tolerance
  double rtol = 1e-3;                          ///< relative tolerance
  std::uint64_t seed = 0x6a09e667f3bcc908ull;  ///< seed of the projection w (and directions v)
  index_t max_elements = 0;  ///< gradcheck: per input, 0 = all, else an evenly strided sample
  int directions = 4;        ///< gradcheck_projected: number of random directions
};

/// Outcome of a gradient check (see the header comment for the figures).
struct gradcheck_result {
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  bool passed = true;
  double max_abs_error = 0;
  double max_rel_error = 0;
  std::size_t worst_input = npos;  ///< argument position of the worst comparison
  std::string worst_input_name;    ///< its var name, if it has one
  index_t worst_element = -1;      ///< flat element index (projected: the direction)
  double worst_analytic = 0, worst_numeric = 0;
  std::size_t checked = 0;   ///< number of comparisons made
  std::size_t failures = 0;  ///< comparisons outside the tolerance (or not finite)
  std::uint64_t seed = 0;    ///< the projection seed used
  bool projected = false;    ///< made by gradcheck_projected

  /// One line: verdict, figures, worst comparison and seed.
  std::string str() const {
    std::ostringstream s;
    s.precision(6);
    s << (projected ? "gradcheck_projected " : "gradcheck ") << (passed ? "passed" : "FAILED")
      << ": " << checked << " comparisons, " << failures << " out of tolerance, max abs error "
      << max_abs_error << ", max rel error " << max_rel_error;
    if (worst_element >= 0) {
      if (projected) {
        s << "; worst: direction " << worst_element;
      } else {
        s << "; worst: input " << worst_input;
        if (!worst_input_name.empty()) s << " ('" << worst_input_name << "')";
        s << " element " << worst_element;
      }
      s.precision(12);
      s << " analytic " << worst_analytic << " numeric " << worst_numeric;
    }
    s << "; seed 0x" << std::hex << seed;
    return s.str();
  }
};

namespace detail {

/// A fresh leaf holding a copy of d's value, with d's requires_grad and name.
template <class T>
tfm::detail::var_ptr<T> gradcheck_copy(const tfm::detail::var_ptr<T>& d) {
  if (!d) fail(errc::value, "tfm::testing::gradcheck: an input var is empty (not assigned).");
  auto c = tfm::detail::make_var_data<T>(d->extents);
  if (d->size())
    std::memcpy(static_cast<void*>(c->value.data()), d->value.data(),
                sizeof(T) * static_cast<std::size_t>(d->size()));
  c->requires_grad = d->requires_grad;
  c->name = d->name;
  return c;
}

/// Neumaier-compensated sum_i y_i w_i.
inline double projected_value(const double* y, const std::vector<double>& w) {
  double s = 0, c = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double t = y[i] * w[i];
    const double u = s + t;
    c += std::fabs(s) >= std::fabs(t) ? (s - u) + t : (t - u) + s;
    s = u;
  }
  return s + c;
}

/// Shared machinery of both checkers: copies of the inputs, the projection, L(x) and dL/dx.
template <class F, class... V>
class gradcheck_context {
 public:
  gradcheck_context(const gradcheck_options& o, F& f, const V&... xs)
      : opt_(o), f_(f), args_(V(gradcheck_copy(xs.data()))...) {
    std::apply([&](const auto&... a) { (records_.push_back(a.data()), ...); }, args_);
  }

  /// Runs f with recording on, seeds y's gradient with w and backpropagates; returns dL/dx for
  /// every input (empty vectors for inputs that do not require grad).
  std::vector<std::vector<double>> analytic() {
    enable_grad eg;
    std::vector<std::vector<double>> g(records_.size());
    {
      auto y = std::apply(f_, args_);
      check_output(y);
      auto yd = y.data();
      make_projection(yd->size());
      if (yd->requires_grad) {
        double* gy = yd->grad_data();
        for (index_t i = 0; i < yd->size(); ++i) gy[i] = w_[static_cast<std::size_t>(i)];
        backward_seeded(yd);
      }
    }
    for (std::size_t k = 0; k < records_.size(); ++k) {
      auto& d = records_[k];
      if (!d->requires_grad) continue;
      g[k].assign(static_cast<std::size_t>(d->size()), 0.0);
      if (d->has_grad() && !g[k].empty())
        std::memcpy(g[k].data(), d->grad.data(), sizeof(double) * g[k].size());
      d->release_grad();
    }
    return g;
  }

  /// L(x) at the current values of the copies, without recording.
  double loss() {
    no_grad ng;
    auto y = std::apply(f_, args_);
    check_output(y);
    if (static_cast<std::size_t>(y.size()) != w_.size())
      fail(errc::value, "tfm::testing::gradcheck: f returned ", y.size(), " elements, then ",
           w_.size(), "; f must return the same shape on every call.");
    return projected_value(y.data()->value.data(), w_);
  }

  std::vector<tfm::detail::var_ptr<double>>& records() { return records_; }
  const gradcheck_options& options() const { return opt_; }

 private:
  template <class Y>
  static void check_output(const Y& y) {
    static_assert(var_type<Y>, "tfm::testing::gradcheck: f must return a tfm::var");
    static_assert(std::is_same_v<typename Y::value_type, double>,
                  "tfm::testing::gradcheck: f must return a float64 var (check in double)");
    if (!y.defined()) fail(errc::value, "tfm::testing::gradcheck: f returned an empty var.");
  }
  void make_projection(index_t n) {
    w_.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i)
      w_[static_cast<std::size_t>(i)] = normal_double(opt_.seed, static_cast<std::uint64_t>(i));
  }

  gradcheck_options opt_;
  F& f_;
  std::tuple<V...> args_;
  std::vector<tfm::detail::var_ptr<double>> records_;
  std::vector<double> w_;
};

/// Folds one comparison into the result.
inline void gradcheck_compare(gradcheck_result& r, const gradcheck_options& o, double an,
                              double num, std::size_t input, index_t element,
                              const std::string& name) {
  ++r.checked;
  const double err = std::fabs(an - num);
  const bool finite = std::isfinite(an) && std::isfinite(num);
  const double floor = o.rtol > 0 ? o.atol / o.rtol : 1.0;
  const double rel =
      finite ? err / std::max(std::fabs(num), floor) : std::numeric_limits<double>::infinity();
  if (!finite || !(err <= o.atol + o.rtol * std::fabs(num))) {
    ++r.failures;
    r.passed = false;
  }
  if (finite && err > r.max_abs_error) r.max_abs_error = err;
  if (rel > r.max_rel_error || r.worst_element < 0) {
    r.max_rel_error = std::max(r.max_rel_error, rel);
    r.worst_input = input;
    r.worst_input_name = name;
    r.worst_element = element;
    r.worst_analytic = an;
    r.worst_numeric = num;
  }
}

template <class... V>
inline constexpr bool all_f64_vars = ((var_type<V> &&
                                       std::is_same_v<typename V::value_type, double>)&&...);

}  // namespace detail

/// Element-by-element check of every input that requires grad (see the header comment).
template <class F, class... V>
requires(sizeof...(V) > 0 && (var_type<V> && ...)) gradcheck_result
    gradcheck(const gradcheck_options& opt, F&& f, const V&... xs) {
  static_assert(detail::all_f64_vars<V...>,
                "tfm::testing::gradcheck: inputs must be tfm::var<double, S> (check in float64)");
  gradcheck_result r;
  r.seed = opt.seed;
  detail::gradcheck_context<std::remove_reference_t<F>, V...> ctx(opt, f, xs...);
  const auto an = ctx.analytic();
  auto& recs = ctx.records();
  for (std::size_t k = 0; k < recs.size(); ++k) {
    auto& d = recs[k];
    if (!d->requires_grad) continue;
    const index_t n = d->size();
    const index_t step = (opt.max_elements > 0 && n > opt.max_elements)
                             ? (n + opt.max_elements - 1) / opt.max_elements
                             : 1;
    double* x = d->value.data();
    for (index_t i = 0; i < n; i += step) {
      const double keep = x[i];
      x[i] = keep + opt.eps;
      const double lp = ctx.loss();
      x[i] = keep - opt.eps;
      const double lm = ctx.loss();
      x[i] = keep;
      const double num = (lp - lm) / (2 * opt.eps);
      detail::gradcheck_compare(r, opt, an[k][static_cast<std::size_t>(i)], num, k, i, d->name);
    }
  }
  return r;
}

template <class F, class... V>
requires(sizeof...(V) > 0 && (var_type<V> && ...)) gradcheck_result
    gradcheck(F&& f, const V&... xs) {
  return gradcheck(gradcheck_options{}, std::forward<F>(f), xs...);
}

/// Random-projection check: directional derivatives along options.directions random directions
/// over all inputs that require grad at once (see the header comment).
template <class F, class... V>
requires(sizeof...(V) > 0 && (var_type<V> && ...)) gradcheck_result
    gradcheck_projected(const gradcheck_options& opt, F&& f, const V&... xs) {
  static_assert(detail::all_f64_vars<V...>,
                "tfm::testing::gradcheck_projected: inputs must be tfm::var<double, S>");
  gradcheck_result r;
  r.seed = opt.seed;
  r.projected = true;
  detail::gradcheck_context<std::remove_reference_t<F>, V...> ctx(opt, f, xs...);
  const auto an = ctx.analytic();
  auto& recs = ctx.records();
  std::vector<std::vector<double>> saved(recs.size()), dir(recs.size());
  for (std::size_t k = 0; k < recs.size(); ++k)
    if (recs[k]->requires_grad)
      saved[k].assign(recs[k]->value.data(), recs[k]->value.data() + recs[k]->size());
  auto set = [&](double s) {  // x = saved + s v
    for (std::size_t k = 0; k < recs.size(); ++k)
      for (std::size_t i = 0; i < saved[k].size(); ++i)
        recs[k]->value.data()[i] = saved[k][i] + s * dir[k][i];
  };
  for (int d = 0; d < opt.directions; ++d) {
    // Direction d uses its own counter range under a seed derived from the projection seed.
    const std::uint64_t sd = opt.seed ^ (0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(d + 1));
    std::uint64_t c = 0;
    double dot = 0;
    for (std::size_t k = 0; k < recs.size(); ++k) {
      dir[k].resize(saved[k].size());
      for (std::size_t i = 0; i < saved[k].size(); ++i) {
        dir[k][i] = normal_double(sd, c++);
        dot += an[k][i] * dir[k][i];
      }
    }
    set(opt.eps);
    const double lp = ctx.loss();
    set(-opt.eps);
    const double lm = ctx.loss();
    set(0.0);
    for (std::size_t k = 0; k < recs.size(); ++k)  // restore bit for bit
      if (!saved[k].empty())
        std::memcpy(recs[k]->value.data(), saved[k].data(), sizeof(double) * saved[k].size());
    detail::gradcheck_compare(r, opt, dot, (lp - lm) / (2 * opt.eps), gradcheck_result::npos, d,
                              std::string());
  }
  return r;
}

template <class F, class... V>
requires(sizeof...(V) > 0 && (var_type<V> && ...)) gradcheck_result
    gradcheck_projected(F&& f, const V&... xs) {
  return gradcheck_projected(gradcheck_options{}, std::forward<F>(f), xs...);
}

}  // namespace testing
TFM_END_NAMESPACE
