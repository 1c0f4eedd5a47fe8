// linear_cross_entropy (ops/linear_loss.hpp) against its definition, the composition
// cross_entropy(linear(x, W), targets): for float and double the loss and both gradients must be
// bitwise equal on 1 and 2 threads, over vocabularies that take one and several backward chunks,
// every reduction, label smoothing and ignored rows. Also: the first gradient is assigned and
// later ones add (a second backward doubles it; x and W feeding other ops), only the inputs that
// require gradients get one, bf16 runs the composition, and bad shapes or targets are reported.
// (The float64 gradcheck of the op is in gc_misc.cpp.)
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/linear_loss.hpp>
#include <typeformer/ops/loss.hpp>
#include <typeformer/ops/reduce.hpp>

#include <cstdint>
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
               const cross_entropy_options& o) {
  auto x = parameter(xv);  // x and W have different var types: two declarations
  auto w = parameter(wv);
  auto l = [&] {
    if constexpr (Fused)
      return linear_cross_entropy<Red>(x, w, tgt, o);
    else
      return cross_entropy<Red>(linear(x, w), tgt, o);
  }();
  if constexpr (Red == ce_reduction::none)
    sum(l).backward();  // d loss_r = 1 for every row
  else
    l.backward();
  return {value_of(l), grad_of(x), grad_of(w)};
}

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
  for (const dims d :
       {dims{1, 5, 4, 7}, dims{1, 37, 24, 500}, dims{2, 75, 16, 2000}, dims{1, 40, 8, 5003}}) {
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
