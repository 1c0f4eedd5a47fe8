// linear_cross_entropy (ops/linear_loss.hpp) against its definition, the composition
// cross_entropy(linear(x, W), targets): for float and double the loss and both gradients must be
// bitwise equal on 1 and 2 threads, over vocabularies that take one and several backward chunks,
// every reduction, label smoothing and ignored rows. Also: the first gradient is assigned and
// later ones add (a second backward doubles it; x and W feeding other ops), only the inputs that
// require gradients get one, bf16 runs the composition, and bad shapes or targets are reported.
// The recompute mode (lce_logits::recompute) must give the same bits too, and hold no rows x V
// buffer between forward and backward (allocation counters); the frozen_rows form (W read a chunk
// at a time, online log-sum-exp) must equal the stored op within rounding and pass a float64
// gradient check. The reference backend's products (linear_cross_entropy<Red, reference>, the
// backend/reference/linear_loss.hpp oracle) must agree with the cpu ones to rounding in every
// mode, and both backends' row-stable logits must not depend on the rows or columns sharing a call.
// (The float64 gradcheck of the op is in gc_misc.cpp.)
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/linear_loss.hpp>
#include <typeformer/ops/loss.hpp>
#include <typeformer/ops/reduce.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

using namespace tfm;

namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;
using S3 = dyn_shape<3>;

template <class T, class S>
tensor<T, S> urnd(const S& s, std::mt19937& g, double lo, double hi) {
  return tfm_test::random_tensor<tensor<T, S>>(s, g, lo, hi);
}

template <class V>
std::vector<typename V::value_type> grad_of(const V& v) {
  return {v.grad().data(), v.grad().data() + v.size()};
}

template <class V>
std::vector<typename V::value_type> value_of(const V& v) {
  return {v.value().data(), v.value().data() + v.size()};
}

/// Loss values and gradients of x and W from one forward + backward.
template <class T>
struct outcome {
  std::vector<T> loss, gx, gw;
};

template <ce_reduction Red, bool Fused, class T, class SX>
outcome<T> run(const tensor<T, SX>& xv, const tensor<T, S2>& wv,
               const tensor<std::int32_t, dyn_shape<SX::rank - 1>>& tgt,
               const cross_entropy_options& o, lce_logits keep = lce_logits::store) {
  auto x = parameter(xv);  // x and W have different var types: two declarations
  auto w = parameter(wv);
  auto l = [&] {
    if constexpr (Fused)
      return linear_cross_entropy<Red>(x, w, tgt, o, keep);
    else
      return cross_entropy<Red>(linear(x, w), tgt, o);
  }();
  if constexpr (Red == ce_reduction::none)
    sum(l).backward();  // d loss_r = 1 for every row
  else
    l.backward();
  return {value_of(l), grad_of(x), grad_of(w)};
}

// Bitwise, the loss too: every mode computes a row's loss with the one ce_row_loss
// (ops/loss.hpp), whose multiply-add is an explicit fma, so no copy of it can be contracted
// differently (before, an -O1 and an -O2 copy of the same expression were an ulp of double apart
// for some seeds).
template <class T>
void check_bitwise(const outcome<T>& a, const outcome<T>& b) {
  REQUIRE(a.loss.size() == b.loss.size());
  REQUIRE(a.gx.size() == b.gx.size());
  REQUIRE(a.gw.size() == b.gw.size());
  int bad_l = 0, bad_x = 0, bad_w = 0;
  for (std::size_t i = 0; i < a.loss.size(); ++i) bad_l += !(a.loss[i] == b.loss[i]);
  for (std::size_t i = 0; i < a.gx.size(); ++i) bad_x += !(a.gx[i] == b.gx[i]);
  for (std::size_t i = 0; i < a.gw.size(); ++i) bad_w += !(a.gw[i] == b.gw[i]);
  CHECK_MESSAGE(bad_l == 0, bad_l, " loss values differ");
  CHECK_MESSAGE(bad_x == 0, bad_x, " of ", a.gx.size(), " elements of dx differ");
  CHECK_MESSAGE(bad_w == 0, bad_w, " of ", a.gw.size(), " elements of dW differ");
}

template <class T>
void bitwise_sweep(std::uint64_t seed) {
  auto g = tfm_test::rng(seed);
  // rows x C x V: V = 7 and 500 fit one backward chunk, 2000 and 5003 take several (the chunk is
  // a multiple of the GEMM's kc, 192 to 384 columns, and at most 8 of them); 2 x 75 rows test a
  // 3-D input. Sizes are kept small for the unoptimised sanitizer build.
  struct dims {
    index_t b, t, c, v;
  };
  // The recompute mode (lce_logits::recompute) must give the same bits: 1 x 5 x 4 x 7 is a
  // product it leaves to the stored mode (tiny), V = 3073 ends with a one-column chunk (40 rows:
  // chunks of 3072 floats or 1536 doubles), and V = 50000 takes several forward row blocks (36
  // rows of floats, 12 of doubles, within 8 MiB) with a short last one. The sanitizer build leaves
  // out V = 50000 (minutes unoptimised; the recompute case below still takes several blocks).
  std::vector<dims> all{dims{1, 5, 4, 7},     dims{1, 37, 24, 500}, dims{2, 75, 16, 2000},
                        dims{1, 40, 8, 5003}, dims{1, 40, 8, 3073}, dims{1, 75, 8, 50000}};
  if (tfm_test::sanitized) all.pop_back();
  for (const dims d : all) {
    CAPTURE(d.b);
    CAPTURE(d.t);
    CAPTURE(d.c);
    CAPTURE(d.v);
    const auto xv = urnd<T>(S3(d.b, d.t, d.c), g, -1, 1);
    const auto wv = urnd<T>(S2(d.v, d.c), g, -0.5, 0.5);
    tensor<std::int32_t, S2> tgt(S2(d.b, d.t));
    for (index_t i = 0; i < tgt.size(); ++i)
      tgt.data()[i] = i % 7 == 3 ? -100 : static_cast<std::int32_t>((i * 131 + 5) % d.v);
    cross_entropy_options plain, smooth;
    smooth.label_smoothing = 0.1;
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      thread_scope ts(threads);
      check_bitwise(run<ce_reduction::mean, true>(xv, wv, tgt, plain),
                    run<ce_reduction::mean, false>(xv, wv, tgt, plain));
      check_bitwise(run<ce_reduction::mean, true>(xv, wv, tgt, smooth),
                    run<ce_reduction::mean, false>(xv, wv, tgt, smooth));
      check_bitwise(run<ce_reduction::sum, true>(xv, wv, tgt, smooth),
                    run<ce_reduction::sum, false>(xv, wv, tgt, smooth));
      check_bitwise(run<ce_reduction::none, true>(xv, wv, tgt, plain),
                    run<ce_reduction::none, false>(xv, wv, tgt, plain));
      const auto re = lce_logits::recompute;
      check_bitwise(run<ce_reduction::mean, true>(xv, wv, tgt, plain, re),
                    run<ce_reduction::mean, false>(xv, wv, tgt, plain));
      check_bitwise(run<ce_reduction::mean, true>(xv, wv, tgt, smooth, re),
                    run<ce_reduction::mean, false>(xv, wv, tgt, smooth));
      check_bitwise(run<ce_reduction::sum, true>(xv, wv, tgt, smooth, re),
                    run<ce_reduction::sum, false>(xv, wv, tgt, smooth));
      check_bitwise(run<ce_reduction::none, true>(xv, wv, tgt, smooth, re),
                    run<ce_reduction::none, false>(xv, wv, tgt, smooth));
      // Another ignore_index: the rows whose target is 2 count for nothing.
      cross_entropy_options other = smooth;
      other.ignore_index = 2;
      auto tgt2 = tgt;
      for (index_t i = 0; i < tgt2.size(); ++i)
        if (tgt2.data()[i] == -100) tgt2.data()[i] = 2;
      check_bitwise(run<ce_reduction::mean, true>(xv, wv, tgt2, other, re),
                    run<ce_reduction::mean, false>(xv, wv, tgt2, other));
    }
  }
}
}  // namespace

TEST_CASE("linear_cross_entropy equals cross_entropy(linear(x, W)) bitwise: float") {
  bitwise_sweep<float>(31);
}

TEST_CASE("linear_cross_entropy equals cross_entropy(linear(x, W)) bitwise: double") {
  bitwise_sweep<double>(32);
}

TEST_CASE("linear_cross_entropy: the backward chunks are whole GEMM depth blocks") {
  constexpr index_t kc = cpu_kernels::gemm_config_t<float>::kc;
  for (index_t rows : {1, 12, 256, 1024, 4096, 100000}) {
    CAPTURE(rows);
    const index_t vc = detail::lce_chunk_columns<float>(rows);
    CHECK(vc % kc == 0);
    CHECK(vc >= kc);
    CHECK(vc <= 8 * kc);
    if (rows * kc * 4 <= (index_t(1) << 20)) CHECK(rows * vc * 4 <= (index_t(1) << 20));
  }
}

TEST_CASE("linear_cross_entropy, recompute mode: forward row blocks within 8 MiB") {
  for (index_t v : {1, 7, 5003, 49152, 50000, 10000000}) {
    CAPTURE(v);
    const index_t rf = detail::lce_recompute_rows<float>(v),
                  rd = detail::lce_recompute_rows<double>(v);
    CHECK(rf % cpu_kernels::gemm_config_t<float>::mr == 0);
    CHECK(rd % cpu_kernels::gemm_config_t<double>::mr == 0);
    if (v * 4 * cpu_kernels::gemm_config_t<float>::mr <= detail::lce_recompute_bytes)
      CHECK(rf * v * 4 <= detail::lce_recompute_bytes);
    if (v * 8 * cpu_kernels::gemm_config_t<double>::mr <= detail::lce_recompute_bytes)
      CHECK(rd * v * 8 <= detail::lce_recompute_bytes);
  }
}

// What the mode is for: between the forward and the backward the stored mode holds rows x V
// logits, the recompute mode only the rows' statistics; its forward's peak is one row block. The
// tensor allocation counters (core/storage.hpp memory_stats) see every buffer of both.
TEST_CASE("linear_cross_entropy, recompute mode: no rows x V buffer lives until the backward") {
  auto g = tfm_test::rng(37);
  const index_t rows = 96, C = 8, V = 50000;
  const auto xv = urnd<float>(S2(rows, C), g, -1, 1), wv = urnd<float>(S2(V, C), g, -0.5, 0.5);
  tensor<std::int32_t, S1> tgt{S1(rows)};
  for (index_t i = 0; i < rows; ++i) tgt(i) = static_cast<std::int32_t>((i * 7919) % V);
  const auto logits_bytes = static_cast<std::size_t>(rows * V) * sizeof(float);
  for (lce_logits keep : {lce_logits::store, lce_logits::recompute}) {
    CAPTURE(static_cast<int>(keep));
    auto x = parameter(xv);
    auto w = parameter(wv);
    const std::size_t before = memory_stats().current_bytes;
    reset_peak_memory();
    auto l = linear_cross_entropy(x, w, tgt, {}, keep);
    const std::size_t held = memory_stats().current_bytes - before;
    const std::size_t fwd_peak = memory_stats().peak_bytes - before;
    if (keep == lce_logits::store) {
      CHECK(held >= logits_bytes);
    } else {
      CHECK(held < std::size_t(1) << 20);
      CHECK(fwd_peak <= static_cast<std::size_t>(detail::lce_recompute_bytes) + (1 << 20));
    }
    reset_peak_memory();
    l.backward();
    // The backward's extra: dx, dW (V x C) and a chunk buffer, never the logits again.
    const std::size_t bwd_peak = memory_stats().peak_bytes - before;
    if (keep == lce_logits::recompute)
      CHECK(bwd_peak < static_cast<std::size_t>(V * C) * sizeof(float) + (std::size_t(3) << 20));
  }
}

namespace {
/// A frozen_rows over a plain matrix (the values exactly), counting the rows read.
template <class T>
class plain_rows final : public frozen_rows<T> {
 public:
  explicit plain_rows(const tensor<T, S2>& w) : w_(w) {}
  index_t rows() const noexcept override { return w_.extent(0); }
  index_t cols() const noexcept override { return w_.extent(1); }
  void read_rows(index_t r0, index_t r1, T* out) const override {
    std::copy(w_.data() + r0 * cols(), w_.data() + r1 * cols(), out);
    read += r1 - r0;
  }
  std::size_t bytes() const noexcept override { return sizeof(T) * std::size_t(w_.size()); }
  mutable index_t read = 0;

 private:
  tensor<T, S2> w_;
};

/// Loss and dx of the frozen_rows form against the stored op on a constant W (its own
/// reference: the composition, bitwise, above), relative tolerance tol.
template <ce_reduction Red, class T>
void check_rows_form(const tensor<T, S3>& xv, const tensor<T, S2>& wv,
                     const tensor<std::int32_t, S2>& tgt, const cross_entropy_options& o,
                     double tol) {
  auto rows = std::make_shared<plain_rows<T>>(wv);
  auto x1 = parameter(xv), x2 = parameter(xv);
  auto a = linear_cross_entropy<Red>(x1, std::shared_ptr<const frozen_rows<T>>(rows), tgt, o);
  auto b = linear_cross_entropy<Red>(x2, constant(wv), tgt, o);
  if constexpr (Red == ce_reduction::none) {
    sum(a).backward();
    sum(b).backward();
  } else {
    a.backward();
    b.backward();
  }
  // W is read twice: once in the forward, once in the backward.
  CHECK(rows->read == 2 * wv.extent(0));
  const auto la = value_of(a), lb = value_of(b), ga = grad_of(x1), gb = grad_of(x2);
  REQUIRE(la.size() == lb.size());
  int bad = 0;
  for (std::size_t i = 0; i < la.size(); ++i)
    bad += !(std::abs(double(la[i]) - double(lb[i])) <= tol * (1 + std::abs(double(lb[i]))));
  CHECK_MESSAGE(bad == 0, bad, " loss values differ");
  double gmax = 0;
  for (auto v : gb) gmax = std::max(gmax, std::abs(double(v)));
  bad = 0;
  for (std::size_t i = 0; i < ga.size(); ++i)
    bad += !(std::abs(double(ga[i]) - double(gb[i])) <= tol * (gmax + 1e-30));
  CHECK_MESSAGE(bad == 0, bad, " of ", ga.size(), " elements of dx differ");
}

template <class T>
void rows_form_sweep(std::uint64_t seed, double tol) {
  auto g = tfm_test::rng(seed);
  // V = 7: one chunk; 5003 and 3073: several, the last of 1 column at 40 rows; large logits
  // (|x| up to 8, W up to 3) make the running max grow across chunks.
  struct dims {
    index_t t, c, v;
    double scale;
  };
  for (const dims d :
       {dims{5, 4, 7, 1}, dims{40, 8, 5003, 1}, dims{40, 8, 3073, 1}, dims{37, 24, 2000, 8}}) {
    CAPTURE(d.t);
    CAPTURE(d.v);
    const auto xv = urnd<T>(S3(1, d.t, d.c), g, -d.scale, d.scale);
    const auto wv = urnd<T>(S2(d.v, d.c), g, -0.5 * d.scale, 0.5 * d.scale);
    tensor<std::int32_t, S2> tgt(S2(1, d.t));
    for (index_t i = 0; i < tgt.size(); ++i)
      tgt.data()[i] = i % 7 == 3 ? 5 : static_cast<std::int32_t>((i * 131 + 2) % d.v);
    cross_entropy_options plain, smooth;
    plain.ignore_index = 5;
    smooth.ignore_index = 5;
    smooth.label_smoothing = 0.1;
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      thread_scope ts(threads);
      check_rows_form<ce_reduction::mean>(xv, wv, tgt, plain, tol);
      check_rows_form<ce_reduction::mean>(xv, wv, tgt, smooth, tol);
      check_rows_form<ce_reduction::sum>(xv, wv, tgt, smooth, tol);
      check_rows_form<ce_reduction::none>(xv, wv, tgt, smooth, tol);
    }
  }
}
}  // namespace

TEST_CASE("linear_cross_entropy with frozen_rows equals the stored op: float") {
  rows_form_sweep<float>(38, 2e-5);
}

TEST_CASE("linear_cross_entropy with frozen_rows equals the stored op: double") {
  rows_form_sweep<double>(39, 1e-12);
}

TEST_CASE("linear_cross_entropy with frozen_rows: a float64 gradient check of x") {
  auto g = tfm_test::rng(40);
  const auto wv = urnd<double>(S2(1600, 4), g, -1, 1);
  const std::shared_ptr<const frozen_rows<double>> rows = std::make_shared<plain_rows<double>>(wv);
  auto x = parameter(urnd<double>(S2(3, 4), g, -1, 1));
  tensor<std::int32_t, S1> t(S1(3), {1, -100, 1599});
  cross_entropy_options o;
  o.label_smoothing = 0.1;
  const auto r = tfm::testing::gradcheck(
      [&](const auto& a) { return linear_cross_entropy(a, rows, t, o); }, x);
  CHECK_MESSAGE(r.passed, r.str());
  CHECK(r.checked > 0);
  auto bad = std::make_shared<plain_rows<double>>(urnd<double>(S2(10, 5), g, -1, 1));
  CHECK_THROWS_WITH_AS(
      linear_cross_entropy(x, std::shared_ptr<const frozen_rows<double>>(bad), t),
      doctest::Contains("the frozen weight has shape (10, 5) but the input's last axis has 4"),
      tfm::shape_error);
}

// The same rules as linear/cross_entropy (graph_test.cpp): the first gradient reaching x or W is
// assigned, later ones add, whichever runs first. Adding is bitwise the composition's: dx sums
// K = V = 900 > kc terms in depth blocks, each added to the gradient already there, so a second
// backward gives 2 gx only up to rounding (the composition's linear does the same); dW sums
// K = 30 rows in one block, so there it is exactly 2 gW and gW + c.
TEST_CASE(
    "linear_cross_entropy: a second backward adds the same gradient; other uses of x, W add") {
  auto g = tfm_test::rng(33);
  const auto xv = urnd<float>(S2(30, 16), g, -1, 1), wv = urnd<float>(S2(900, 16), g, -1, 1);
  const auto cx = urnd<float>(S2(30, 16), g, -1, 1), cw = urnd<float>(S2(900, 16), g, -1, 1);
  tensor<std::int32_t, S1> tgt(S1(30));
  for (index_t i = 0; i < 30; ++i) tgt(i) = i % 5 == 1 ? -100 : static_cast<std::int32_t>(i * 29);
  const auto kx = constant(cx), kw = constant(cw);
  // scenario 0: two backwards; 1 and 2: the loss plus sum(x * cx) + sum(W * cw), in both orders
  // (d/dx = cx and d/dW = cw are the other paths into the inputs).
  auto grads_after = [&](bool fused, int scenario) {
    auto x = parameter(xv), w = parameter(wv);
    auto loss = [&] {
      if (fused) return linear_cross_entropy<ce_reduction::sum>(x, w, tgt);
      return cross_entropy<ce_reduction::sum>(linear(x, w), tgt);
    };
    if (scenario == 0) {
      loss().backward();
      loss().backward();
    } else {
      auto other = sum(x * kx) + sum(w * kw);
      auto l = scenario == 1 ? loss() + other : other + loss();
      l.backward();
    }
    return std::pair{grad_of(x), grad_of(w)};
  };
  auto x1 = parameter(xv), w1 = parameter(wv);
  linear_cross_entropy<ce_reduction::sum>(x1, w1, tgt).backward();
  const auto gx = grad_of(x1), gw = grad_of(w1);
  for (float v : gx) REQUIRE(std::isfinite(v));
  for (index_t j = 0; j < 16; ++j) CHECK(gx[static_cast<std::size_t>(16 + j)] == 0.0f);  // ignored
  for (int scenario = 0; scenario < 3; ++scenario) {
    CAPTURE(scenario);
    const auto [fx, fw] = grads_after(true, scenario);
    const auto [rx, rw] = grads_after(false, scenario);
    CHECK(fx == rx);
    CHECK(fw == rw);
    for (std::size_t i = 0; i < gx.size(); ++i) {
      const float want = scenario == 0 ? 2 * gx[i] : gx[i] + cx.data()[i];
      CHECK(fx[i] == doctest::Approx(want).epsilon(1e-5));
    }
    for (std::size_t i = 0; i < gw.size(); ++i)
      CHECK(fw[i] == (scenario == 0 ? 2 * gw[i] : gw[i] + cw.data()[i]));
  }
}

TEST_CASE("linear_cross_entropy: only the inputs that require gradients get one") {
  auto g = tfm_test::rng(34);
  const auto xv = urnd<float>(S2(20, 8), g, -1, 1), wv = urnd<float>(S2(800, 8), g, -1, 1);
  tensor<std::int32_t, S1> tgt(S1(20));
  for (index_t i = 0; i < 20; ++i) tgt(i) = static_cast<std::int32_t>(i * 37);
  const auto ref = run<ce_reduction::mean, false>(xv, wv, tgt, {});
  {
    auto x = constant(xv);
    auto w = parameter(wv);
    linear_cross_entropy(x, w, tgt).backward();
    CHECK_FALSE(x.has_grad());
    CHECK(grad_of(w) == ref.gw);
  }
  {
    auto x = parameter(xv);
    auto w = constant(wv);
    linear_cross_entropy(x, w, tgt).backward();
    CHECK_FALSE(w.has_grad());
    CHECK(grad_of(x) == ref.gx);
  }
  {  // nothing requires a gradient: no graph is recorded
    auto l = linear_cross_entropy(constant(xv), constant(wv), tgt);
    CHECK(l.is_leaf());
    CHECK(l.value()() == ref.loss[0]);
  }
}

// With no rows the composition's backward stops at the empty logits (the engine skips outputs
// without elements), so W and the bias get no gradient; the fused op must do the same.
TEST_CASE("no rows: neither the fused op nor the composition gives W a gradient") {
  auto g = tfm_test::rng(36);
  const tensor<float, S2> xv(S2(0, 8));
  const auto wv = urnd<float>(S2(50, 8), g, -1, 1);
  const auto bv = urnd<float>(S1(50), g, -1, 1);
  const tensor<std::int32_t, S1> tgt(S1(0));
  auto xa = parameter(xv), wa = parameter(wv);
  auto xb = parameter(xv), wb = parameter(wv);
  auto bb = parameter(bv);
  auto a = linear_cross_entropy<ce_reduction::sum>(xa, wa, tgt);
  auto c = cross_entropy<ce_reduction::sum>(linear(xb, wb, bb), tgt);
  CHECK(a.value()() == 0.0f);
  CHECK(c.value()() == 0.0f);
  a.backward();
  c.backward();
  CHECK_FALSE(wa.has_grad());
  CHECK_FALSE(wb.has_grad());
  CHECK_FALSE(bb.has_grad());
}

TEST_CASE("linear_cross_entropy: bf16 runs the composition") {
  auto g = tfm_test::rng(35);
  const auto xf = urnd<float>(S2(6, 8), g, -1, 1), wf = urnd<float>(S2(50, 8), g, -1, 1);
  tensor<bf16, S2> xv(S2(6, 8)), wv(S2(50, 8));
  xv = cast<bf16>(xf);
  wv = cast<bf16>(wf);
  tensor<std::int32_t, S1> tgt(S1(6), {1, 49, 0, -100, 7, 7});
  auto x1 = parameter(xv), w1 = parameter(wv), x2 = parameter(xv), w2 = parameter(wv);
  auto a = linear_cross_entropy(x1, w1, tgt);
  auto b = cross_entropy(linear(x2, w2), tgt);
  CHECK(static_cast<float>(a.value()()) == static_cast<float>(b.value()()));
  a.backward();
  b.backward();
  CHECK(grad_of(x1) == grad_of(x2));
  CHECK(grad_of(w1) == grad_of(w2));
}

TEST_CASE("linear_cross_entropy: bad shapes and targets are reported") {
  auto x = parameter(tensor<float, S2>(S2(4, 8)));
  auto w = parameter(tensor<float, S2>(S2(10, 6)));  // 6 features, x has 8
  tensor<std::int32_t, S1> tgt(S1(4), {0, 1, 2, 3});
  CHECK_THROWS_WITH_AS(linear_cross_entropy(x, w, tgt),
                       doctest::Contains("tfm::linear_cross_entropy: the weight has shape (10, 6) "
                                         "but the input's last axis has 8 features; the weight "
                                         "must be (classes, in)."),
                       tfm::shape_error);
  CHECK_THROWS_WITH_AS(linear(x, w),
                       doctest::Contains("tfm::linear: the weight has shape (10, 6) but the "
                                         "input's last axis has 8 features; the weight must be "
                                         "(out, in)."),
                       tfm::shape_error);
  auto w2 = parameter(tensor<float, S2>(S2(10, 8)));
  tensor<std::int32_t, S1> bad(S1(4), {0, 1, 10, 3});
  CHECK_THROWS_WITH_AS(linear_cross_entropy(x, w2, bad),
                       doctest::Contains("target 10 at row 2 is out of range for 10 classes"),
                       tfm::index_error);
  tensor<std::int32_t, S1> few(S1(3), {0, 1, 2});
  CHECK_THROWS_WITH_AS(linear_cross_entropy(x, w2, few),
                       doctest::Contains("4 rows of logits but 3 targets"), tfm::shape_error);
  cross_entropy_options o;
  o.label_smoothing = 1.5;
  CHECK_THROWS_WITH_AS(linear_cross_entropy(x, w2, tgt, o),
                       doctest::Contains("label_smoothing must be in [0, 1]"), tfm::value_error);
}

// The backend seam (backend/reference/linear_loss.hpp and backend/cpu/linear_loss.hpp): the
// row-stable logits of both backends have the same bits whatever rows and columns share a call,
// and the bits of the whole product wherever lce_logits_rows_match_full says so; the op on the
// reference backend (plain loops, double sums) agrees with the op on cpu to rounding in the
// stored, recompute and frozen_rows modes, and its recompute mode equals its stored mode bitwise.
namespace {
template <class B, class T>
void check_row_stable_logits(std::mt19937& g) {
  const index_t M = 37, N = 300, C = 24;
  const auto xv = urnd<T>(S2(M, C), g, -1, 1);
  const auto wv = urnd<T>(S2(N, C), g, -1, 1);
  const auto mn = static_cast<std::size_t>(M * N);
  std::vector<T> all(mn), part(mn, T(-1)), blocks(mn, T(-1)), full(mn);
  lce_logits_rows(B{}, M, N, C, xv.data(), wv.data(), all.data(), N);
  for (index_t i = 0; i < M; ++i)  // one row at a time (M == 1: gemm would take its GEMV)
    lce_logits_rows(B{}, 1, N, C, xv.data() + i * C, wv.data(), part.data() + i * N, N);
  TFM_CHECK_BITWISE(part, all);
  for (index_t i0 = 0; i0 < M; i0 += 5)  // blocks of 5 rows x chunks of 64 columns
    for (index_t j0 = 0; j0 < N; j0 += 64)
      lce_logits_rows(B{}, std::min<index_t>(5, M - i0), std::min<index_t>(64, N - j0), C,
                      xv.data() + i0 * C, wv.data() + j0 * C, blocks.data() + i0 * N + j0, N);
  TFM_CHECK_BITWISE(blocks, all);
  REQUIRE(lce_logits_rows_match_full(B{}, M, N, C));
  lce_logits_full(B{}, M, N, C, xv.data(), wv.data(), full.data());
  TFM_CHECK_BITWISE(full, all);
}

/// One forward + backward of the op on backend B: stored or recompute mode, or (rows) the
/// frozen_rows form, whose W gets no gradient (gw stays empty).
template <ce_reduction Red, class B, class T>
outcome<T> run_on(const tensor<T, S3>& xv, const tensor<T, S2>& wv,
                  const tensor<std::int32_t, S2>& tgt, const cross_entropy_options& o,
                  lce_logits keep, bool rows) {
  auto x = parameter(xv);
  auto w = parameter(wv);
  auto l = [&] {
    if (rows)
      return linear_cross_entropy<Red, B>(
          x, std::shared_ptr<const frozen_rows<T>>(std::make_shared<plain_rows<T>>(wv)), tgt, o);
    return linear_cross_entropy<Red, B>(x, w, tgt, o, keep);
  }();
  if constexpr (Red == ce_reduction::none)
    sum(l).backward();
  else
    l.backward();
  return {value_of(l), grad_of(x), rows ? std::vector<T>{} : grad_of(w)};
}

/// got within tol of want: the loss relative to 1 + |want|, a gradient relative to its largest
/// element.
template <class T>
void check_close(const outcome<T>& got, const outcome<T>& want, double tol) {
  REQUIRE(got.loss.size() == want.loss.size());
  REQUIRE(got.gx.size() == want.gx.size());
  REQUIRE(got.gw.size() == want.gw.size());
  int bad = 0;
  for (std::size_t i = 0; i < got.loss.size(); ++i)
    bad += !(std::abs(double(got.loss[i]) - double(want.loss[i])) <=
             tol * (1 + std::abs(double(want.loss[i]))));
  CHECK_MESSAGE(bad == 0, bad, " loss values differ");
  for (auto p : {&outcome<T>::gx, &outcome<T>::gw}) {
    const std::vector<T>& a = got.*p;
    const std::vector<T>& b = want.*p;
    double gmax = 0, worst = 0;
    for (auto v : b) gmax = std::max(gmax, std::abs(double(v)));
    for (std::size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
    CHECK_MESSAGE(worst <= tol * (gmax + 1e-30), "gradient max error ", worst, " of max ", gmax);
  }
}

template <class T>
void reference_sweep(std::uint64_t seed, double tol) {
  auto g = tfm_test::rng(seed);
  check_row_stable_logits<reference, T>(g);
  check_row_stable_logits<cpu, T>(g);
  // 1 x 5 x 4 x 7: the cpu recompute mode leaves it to the stored mode, the reference's runs;
  // V = 3073: several backward chunks on both (the reference's depth block is 256 columns);
  // V = 50000: several forward row blocks of the recompute mode on both (45 rows: blocks of 41
  // floats or 20 doubles on the reference; only that mode, for time; not in the sanitizer build).
  struct dims {
    index_t b, t, c, v;
  };
  std::vector<dims> all{dims{1, 5, 4, 7}, dims{1, 37, 24, 500}, dims{2, 30, 16, 3073},
                        dims{1, 45, 4, 50000}};
  if (tfm_test::sanitized) all.pop_back();
  for (const dims d : all) {
    CAPTURE(d.t);
    CAPTURE(d.v);
    const auto xv = urnd<T>(S3(d.b, d.t, d.c), g, -1, 1);
    const auto wv = urnd<T>(S2(d.v, d.c), g, -0.5, 0.5);
    tensor<std::int32_t, S2> tgt(S2(d.b, d.t));
    for (index_t i = 0; i < tgt.size(); ++i)
      tgt.data()[i] = i % 7 == 3 ? -100 : static_cast<std::int32_t>((i * 131 + 5) % d.v);
    cross_entropy_options smooth;
    smooth.label_smoothing = 0.1;
    const auto st = lce_logits::store, re = lce_logits::recompute;
    for (bool rows : {false, true}) {
      if (d.v == 50000) break;
      CAPTURE(rows);
      check_close(run_on<ce_reduction::mean, reference>(xv, wv, tgt, {}, st, rows),
                  run_on<ce_reduction::mean, cpu>(xv, wv, tgt, {}, st, rows), tol);
      check_close(run_on<ce_reduction::sum, reference>(xv, wv, tgt, smooth, st, rows),
                  run_on<ce_reduction::sum, cpu>(xv, wv, tgt, smooth, st, rows), tol);
      check_close(run_on<ce_reduction::none, reference>(xv, wv, tgt, smooth, st, rows),
                  run_on<ce_reduction::none, cpu>(xv, wv, tgt, smooth, st, rows), tol);
    }
    const auto ref_store = run_on<ce_reduction::mean, reference>(xv, wv, tgt, smooth, st, false);
    const auto ref_re = run_on<ce_reduction::mean, reference>(xv, wv, tgt, smooth, re, false);
    check_close(ref_re, run_on<ce_reduction::mean, cpu>(xv, wv, tgt, smooth, re, false), tol);
    check_bitwise(ref_re, ref_store);
  }
}
}  // namespace

TEST_CASE("linear_cross_entropy on the reference backend agrees with cpu: float") {
  reference_sweep<float>(41, 2e-5);
}

TEST_CASE("linear_cross_entropy on the reference backend agrees with cpu: double") {
  reference_sweep<double>(42, 1e-12);
}
