// Training-level properties in float64: gradient accumulation over k micro-batches equals one
// k-times larger batch (TESTING.md: NMSE <= 1e-12), and checkpointing gives bitwise the same
// gradients as the plain graph while holding less memory at its peak (memory_stats()).
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/autodiff/checkpoint.hpp>
#include <typeformer/core/storage.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/loss.hpp>
#include <typeformer/ops/matmul.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/ops/view.hpp>

#include <cstdint>
#include <vector>

using namespace tfm;

namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;

struct mlp {
  var<double, S2> w1, w2;
  var<double, S1> b1, b2;
  std::vector<double> grads() const {
    std::vector<double> g;
    for (const auto* p : {&w1, &w2})
      for (double v : tfm_test::to_vector(p->grad())) g.push_back(v);
    for (const auto* p : {&b1, &b2})
      for (double v : tfm_test::to_vector(p->grad())) g.push_back(v);
    return g;
  }
  void zero_grad() const {
    w1.zero_grad();
    w2.zero_grad();
    b1.zero_grad();
    b2.zero_grad();
  }
  template <class X>
  auto operator()(const X& x) const {
    return linear(gelu(linear(x, w1, b1)), w2, b2);
  }
};

template <class S>
tensor<double, S2> rows(const tensor<double, S>& t, index_t r0, index_t r1) {
  return tensor<double, S2>(slice<0>(t.view(), r0, r1));
}
template <class S>
tensor<std::int32_t, S1> rows_i(const tensor<std::int32_t, S>& t, index_t r0, index_t r1) {
  return tensor<std::int32_t, S1>(slice<0>(t.view(), r0, r1));
}
}  // namespace

TEST_CASE("gradient accumulation over k micro-batches equals one k x batch (f64)") {
  auto g = tfm_test::rng(21);
  const index_t k = 4, mb = 3, n = k * mb, in = 8, hid = 16, out = 5;
  mlp m{parameter(gc::rnd(S2(hid, in), g)), parameter(gc::rnd(S2(out, hid), g)),
        parameter(gc::rnd(S1(hid), g)), parameter(gc::rnd(S1(out), g))};
  auto x = gc::rnd(S2(n, in), g);
  auto y = gc::rnd(S2(n, out), g);
  tensor<std::int32_t, S1> t{S1(n)};
  std::uniform_int_distribution<int> cls(0, out - 1);
  for (index_t i = 0; i < n; ++i) t(i) = cls(g);

  SUBCASE("mean squared error") {
    mean(square(m(constant(x)) - constant(y))).backward();
    const auto full = m.grads();
    m.zero_grad();
    for (index_t j = 0; j < k; ++j) {
      auto l = mean(square(m(constant(rows(x, j * mb, (j + 1) * mb))) -
                           constant(rows(y, j * mb, (j + 1) * mb))));
      (l * (1.0 / static_cast<double>(k))).backward();
    }
    auto rep = tfm_test::compare(m.grads(), full, 1e-12);
    MESSAGE("k=", k, " micro-batches of ", mb, ": ", rep.str());
    TFM_CHECK_REPORT(rep);
  }
  SUBCASE("cross entropy (mean over rows)") {
    cross_entropy(m(constant(x)), t).backward();
    const auto full = m.grads();
    m.zero_grad();
    for (index_t j = 0; j < k; ++j) {
      auto l = cross_entropy(m(constant(rows(x, j * mb, (j + 1) * mb))),
                             rows_i(t, j * mb, (j + 1) * mb));
      (l * (1.0 / static_cast<double>(k))).backward();
    }
    auto rep = tfm_test::compare(m.grads(), full, 1e-12);
    MESSAGE("k=", k, " micro-batches of ", mb, ": ", rep.str());
    TFM_CHECK_REPORT(rep);
  }
}

TEST_CASE("checkpoint: bitwise the same gradients (f64) and a lower memory peak") {
  auto g = tfm_test::rng(22);
  const index_t T = 256, C = 64, F = 256;
  auto x0 = gc::rnd(S2(T, C), g);
  auto w1 = parameter(gc::rnd(S2(C, F), g, -0.1, 0.1));
  auto w2 = parameter(gc::rnd(S2(F, C), g, -0.1, 0.1));
  auto block = [&](const auto& h) { return h + matmul(gelu(matmul(h, w1)) * 1.5, w2); };
  struct run {
    std::vector<double> dx, dw1, dw2;
    double loss;
    std::size_t peak;
  };
  auto go = [&](bool ck) {
    w1.zero_grad();
    w2.zero_grad();
    (void)w1.grad();
    (void)w2.grad();
    auto x = parameter(x0);
    (void)x.grad();
    const auto base = memory_stats().current_bytes;
    reset_peak_memory();
    double loss = 0;
    {
      auto h = x;
      for (int l = 0; l < 4; ++l) h = ck ? checkpoint(block, h) : block(h);
      auto lv = mean(square(h));
      h = decltype(h)();  // only the loss holds the graph now
      loss = lv.value()();
      lv.backward();
    }
    run r{tfm_test::to_vector(x.grad()), tfm_test::to_vector(w1.grad()),
          tfm_test::to_vector(w2.grad()), loss, memory_stats().peak_bytes - base};
    return r;
  };
  const run plain = go(false);
  const run ck = go(true);
  MESSAGE("4 residual MLP blocks, T=", T, " C=", C, " F=", F, " (f64): peak above the inputs ",
          plain.peak / 1024, " KiB plain, ", ck.peak / 1024, " KiB checkpointed");
  CHECK(plain.loss == ck.loss);
  TFM_CHECK_BITWISE(ck.dx, plain.dx);
  TFM_CHECK_BITWISE(ck.dw1, plain.dw1);
  TFM_CHECK_BITWISE(ck.dw2, plain.dw2);
  CHECK(ck.peak < plain.peak * 6 / 10);
}
