// typeformer/ops/loss.hpp
//
// Fused softmax cross-entropy, forward and vjp side by side.
//
//   cross_entropy(logits (..., V), targets (...))                 mean over counted rows
//   cross_entropy<ce_reduction::sum>(logits, targets)             sum
//   cross_entropy<ce_reduction::none>(logits, targets)            per-row losses, shape (...)
//   options: ignore_index (rows whose target equals it count for nothing; default -100, as in
//   PyTorch) and label_smoothing eps (Szegedy et al., arXiv:1512.00567): the target
//   distribution is (1 - eps) one_hot + eps / V.
//
// Per row, with lse = log sum_j exp(x_j) (computed after subtracting the row maximum):
//   loss = lse - (1 - eps) x_t - eps mean_j(x_j)
//   dloss/dx_j = exp(x_j - lse) - (1 - eps) [j == t] - eps / V
// The mean divides by the number of counted rows (NaN if none, like PyTorch). Logits never
// materialise a softmax: each row is read once forward and once backward, with SIMD exp.
// A target outside [0, V) that is not ignore_index raises tfm::index_error.
#pragma once

#include "typeformer/autodiff/support.hpp"
#include "typeformer/autodiff/variable.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/simd.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

TFM_BEGIN_NAMESPACE

enum class ce_reduction { mean, sum, none };

struct cross_entropy_options {
  std::int64_t ignore_index = -100;
  double label_smoothing = 0.0;
};

namespace detail {
/// Row statistics: max-shifted log-sum-exp and the plain sum of the row.
template <class T>
std::pair<double, double> row_lse_and_sum(const T* x, index_t n) {
  using C = compute_t<T>;
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    using Bt = simd::batch<C>;
    constexpr index_t w = simd::width<C>;
    index_t j = 0;
    Bt m(-std::numeric_limits<C>::infinity()), s(C(0));
    for (; j + w <= n; j += w) {
      Bt v = simd::load(x + j);
      m = xsimd::max(m, v);
      s += v;
    }
    alignas(64) C lanes[Bt::size];
    m.store_aligned(lanes);
    C mx = -std::numeric_limits<C>::infinity();
    for (std::size_t k = 0; k < Bt::size; ++k) mx = std::max(mx, lanes[k]);
    double sum = static_cast<double>(simd::reduce_add(s));
    for (; j < n; ++j) {
      mx = std::max(mx, x[j]);
      sum += static_cast<double>(x[j]);
    }
    if (!std::isfinite(mx)) return {static_cast<double>(mx), sum};
    Bt bm(mx), acc(C(0));
    index_t i = 0;
    for (; i + w <= n; i += w) acc += simd::exp_nonpositive(simd::load(x + i) - bm);
    double e = static_cast<double>(simd::reduce_add(acc));
    for (; i < n; ++i) e += std::exp(static_cast<double>(x[i] - mx));
    return {static_cast<double>(mx) + std::log(e), sum};
  } else {
    double mx = -std::numeric_limits<double>::infinity(), sum = 0;
    for (index_t j = 0; j < n; ++j) {
      double v = static_cast<double>(C(x[j]));
      mx = std::max(mx, v);
      sum += v;
    }
    if (!std::isfinite(mx)) return {mx, sum};
    double e = 0;
    for (index_t j = 0; j < n; ++j) e += std::exp(static_cast<double>(C(x[j])) - mx);
    return {mx + std::log(e), sum};
  }
}

/// A row's loss from its log-sum-exp l, its target's logit xt and the sum s of its V logits:
/// l - (1 - eps) xt - eps s / V. Written once, here, for ce_forward and every mode of
/// linear_cross_entropy (ops/linear_loss.hpp), with the multiply-add an explicit std::fma: left
/// to the compiler, GCC contracts l - (1 - eps) xt into a fused multiply-add where it sees fit
/// (-ffp-contract=fast, its default outside ISO mode), and did so differently in the places this
/// was written, an ulp of double apart. The rest cannot be contracted (a quotient is
/// subtracted), so every caller gets the same bits from the same inputs.
inline double ce_row_loss(double l, double xt, double s, double eps, index_t V) {
  return std::fma(-(1 - eps), xt, l) - eps * s / static_cast<double>(V);
}

/// gx[j] = scale * (exp(x_j - lse) - off) for one row or a stretch of one; off is eps / V; the
/// target term is subtracted by the caller. gx may be x (the row is replaced in place).
template <class T, class G>
void row_softmax_grad(const T* x, G* gx, index_t n, double lse, double scale, double off) {
  if constexpr ((std::is_same_v<T, float> || std::is_same_v<T, double>)&&std::is_same_v<T, G>) {
    using Bt = simd::batch<T>;
    constexpr index_t w = simd::width<T>;
    const Bt bl(static_cast<T>(lse)), bs(static_cast<T>(scale)), bo(static_cast<T>(off));
    index_t j = 0;
    for (; j + w <= n; j += w)
      simd::store(gx + j, bs * (simd::exp_nonpositive(simd::load(x + j) - bl) - bo));
    for (; j < n; ++j)
      gx[j] = static_cast<G>(scale * (std::exp(static_cast<double>(x[j]) - lse) - off));
  } else {
    for (index_t j = 0; j < n; ++j)
      gx[j] =
          static_cast<G>(scale * (std::exp(static_cast<double>(compute_t<T>(x[j])) - lse) - off));
  }
}

/// The checked targets of a cross-entropy over `rows` rows of V classes: as int64, with the
/// number of rows that count (target != ignore_index).
struct ce_targets {
  std::shared_ptr<std::vector<std::int64_t>> t;
  index_t counted = 0;
};

/// Checks the options and the targets against the leading extents `lead` (the logits' extents
/// without the class axis); `who` names the op in the errors.
template <class I>
ce_targets ce_check(const char* who, const I& tv, const std::vector<index_t>& lead, index_t rows,
                    index_t V, const cross_entropy_options& opt) {
  if (opt.label_smoothing < 0 || opt.label_smoothing > 1)
    fail(errc::value, who, ": label_smoothing must be in [0, 1], got ", opt.label_smoothing, ".");
  if (tv.size() != rows)
    fail(errc::shape, who, ": ", rows, " rows of logits but ", tv.size(), " targets.");
  for (std::size_t k = 0; k < lead.size(); ++k)
    if (tv.extent(k) != lead[k])
      fail(errc::shape, who, ": the targets' axis ", k, " has extent ", tv.extent(k),
           " but the logits' has ", lead[k], ".");
  ce_targets out;
  out.t = std::make_shared<std::vector<std::int64_t>>(static_cast<std::size_t>(rows));
  for (index_t r = 0; r < rows; ++r) {
    std::int64_t t = static_cast<std::int64_t>(tv.data()[r]);
    if (t != opt.ignore_index) {
      if (t < 0 || t >= V)
        fail(errc::index, who, ": target ", t, " at row ", r, " is out of range for ", V,
             " classes.");
      ++out.counted;
    }
    (*out.t)[static_cast<std::size_t>(r)] = t;
  }
  return out;
}

/// Forward of the loss over logits x (rows, V): fills lse per counted row and returns the output
/// record (extents `lead` for ce_reduction::none, a scalar otherwise).
template <ce_reduction Red, class T>
var_ptr<T> ce_forward(const T* x, index_t rows, index_t V, const ce_targets& tg,
                      std::vector<double>& lse, const std::vector<index_t>& lead,
                      const cross_entropy_options& opt) {
  std::vector<double> losses(static_cast<std::size_t>(rows));
  const double eps = opt.label_smoothing;
  TFM_OMP(parallel for schedule(static) if (rows * V >= (1 << 16)))
  for (index_t r = 0; r < rows; ++r) {
    std::int64_t t = (*tg.t)[static_cast<std::size_t>(r)];
    if (t == opt.ignore_index) {
      losses[static_cast<std::size_t>(r)] = 0;
      continue;
    }
    auto [l, s] = row_lse_and_sum(x + r * V, V);
    lse[static_cast<std::size_t>(r)] = l;
    const double xt = static_cast<double>(compute_t<T>(x[r * V + t]));
    losses[static_cast<std::size_t>(r)] = ce_row_loss(l, xt, s, eps, V);
  }
  std::vector<index_t> oe;
  if constexpr (Red == ce_reduction::none) oe = lead;
  auto out = result<T>(oe);
  if constexpr (Red == ce_reduction::none) {
    for (index_t r = 0; r < rows; ++r)
      out->value.data()[r] =
          to_storage<T>(static_cast<compute_t<T>>(losses[static_cast<std::size_t>(r)]));
  } else {
    double total = 0;
    for (double l : losses) total += l;  // fixed order
    if (Red == ce_reduction::mean)
      total = tg.counted ? total / static_cast<double>(tg.counted)
                         : std::numeric_limits<double>::quiet_NaN();
    out->value.data()[0] = to_storage<T>(static_cast<compute_t<T>>(total));
  }
  return out;
}

/// The factor of row r's softmax gradient: d loss / d loss_r times the output gradient g.
template <ce_reduction Red, class G>
double ce_row_scale(const G* g, index_t r, index_t counted) {
  if constexpr (Red == ce_reduction::none) return static_cast<double>(g[r]);
  if constexpr (Red == ce_reduction::sum) return static_cast<double>(g[0]);
  return static_cast<double>(g[0]) / static_cast<double>(counted);
}

/// Gradient of the loss with respect to the logit columns [v0, v0 + n) of row r (x points at
/// column v0 of the row), written (or added, with accumulate) to gx[0 .. n); without
/// accumulate gx may be x.
///
/// With accumulate the stretch is first computed exactly as without, into a per-thread scratch
/// row, then added in a loop of its own, so each element is gx_j + c_j rounded once: the bits of
/// assigning c to a fresh gradient and adding it to the old one after (what the engine gives when
/// another op's vjp reaches the logits first, in either order). Added in place instead, GCC
/// contracts gx_j + scale * e_j into a fused multiply-add (-ffp-contract=fast, its default
/// outside ISO mode) and the target term is taken from the sum rather than from c_t.
template <class T, class G>
void ce_row_grad(const T* x, G* gx, index_t v0, index_t n, index_t V, std::int64_t t,
                 std::int64_t ignore, double lse, double scale, double eps, bool accumulate) {
  if (accumulate) {
    if (t == ignore) return;  // adds zeros
    static thread_local std::vector<G> row;
    if (row.size() < static_cast<std::size_t>(n)) row.resize(static_cast<std::size_t>(n));
    ce_row_grad(x, row.data(), v0, n, V, t, ignore, lse, scale, eps, false);
    for (index_t j = 0; j < n; ++j) gx[j] += row[static_cast<std::size_t>(j)];
    return;
  }
  if (t == ignore) {
    std::fill(gx, gx + n, G(0));
    return;
  }
  row_softmax_grad(x, gx, n, lse, scale, eps / static_cast<double>(V));
  if (t >= v0 && t < v0 + n) gx[t - v0] -= static_cast<G>(scale * (1 - eps));
}

template <ce_reduction Red, class T, std::size_t R, class I>
var_ptr<T> ad_cross_entropy(const var_ptr<T>& a, const I& targets, cross_entropy_options opt) {
  const index_t V = a->extents[R - 1];
  const index_t rows = V ? a->size() / V : 0;
  const std::vector<index_t> lead(a->extents.begin(), a->extents.end() - 1);
  const ce_targets tg = ce_check("tfm::cross_entropy", eval(targets), lead, rows, V, opt);
  auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(rows));
  auto out = ce_forward<Red>(a->value.data(), rows, V, tg, *lse, lead, opt);
  record(out, "cross_entropy", {a}, [a, tg, lse, o = out.get(), V, rows, opt] {
    using G = grad_t<T>;
    const G* g = o->grad_data();
    // Every row is written: the first gradient of the logits is assigned, not added to zeros.
    const auto target = a->grad_for_overwrite();
    const T* x = a->value.data();
    TFM_OMP(parallel for schedule(static) if (rows * V >= (1 << 16)))
    for (index_t r = 0; r < rows; ++r)
      ce_row_grad(x + r * V, target.data + r * V, 0, V, V, (*tg.t)[static_cast<std::size_t>(r)],
                  opt.ignore_index, (*lse)[static_cast<std::size_t>(r)],
                  ce_row_scale<Red>(g, r, tg.counted), opt.label_smoothing, target.accumulate);
  });
  return out;
}
}  // namespace detail

/// Softmax cross-entropy of logits (..., V) against integer targets (...).
template <ce_reduction Red = ce_reduction::mean, class T, class S, class I>
requires dense_type<I>
auto cross_entropy(const var<T, S>& logits, const I& targets, cross_entropy_options opt = {}) {
  static_assert(S::rank >= 1, "tfm::cross_entropy: logits need a class axis");
  static_assert(std::is_integral_v<typename std::remove_cvref_t<I>::value_type>,
                "tfm::cross_entropy: targets must be integers");
  auto d = detail::ad_cross_entropy<Red, T, S::rank>(logits.data(), targets.view(), opt);
  if constexpr (Red == ce_reduction::none)
    return var<T, detail::take_shape_t<S, S::rank - 1>>(d);
  else
    return var<T, shape<>>(d);
}

TFM_END_NAMESPACE
