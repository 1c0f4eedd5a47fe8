// The checker itself (testing/gradcheck.hpp): it passes correct gradients with the figures it
// promises, finds a deliberately wrong vjp without throwing and names the input and element,
// reports non-finite gradients and cut graphs, samples large inputs, leaves the caller's vars
// untouched, and its projected variant agrees on large blocks and catches the same bug.
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/reduce.hpp>

#include <cmath>
#include <limits>
#include <string>

using namespace tfm;
using tfm::testing::gradcheck;
using tfm::testing::gradcheck_options;
using tfm::testing::gradcheck_projected;

namespace {
using S2 = dyn_shape<2>;

/// y = x^2 with a vjp that multiplies the gradient of element `bad` by `factor` (and by NaN
/// when factor is NaN). Recorded under a registered name so that the registry check passes.
var<double, S2> square_with_bug(const var<double, S2>& x, index_t bad, double factor) {
  auto a = x.data();
  auto out = tfm::detail::result<double>(a->extents);
  for (index_t i = 0; i < a->size(); ++i)
    out->value.data()[i] = a->value.data()[i] * a->value.data()[i];
  tfm::detail::record(out, "square", {a}, [a, o = out.get(), bad, factor] {
    double* gi = a->grad_data();
    const double* g = o->grad_data();
    for (index_t i = 0; i < a->size(); ++i)
      gi[i] += g[i] * 2 * a->value.data()[i] * (i == bad ? factor : 1.0);
  });
  return var<double, S2>(out);
}
}  // namespace

TEST_CASE("gradcheck passes correct gradients and reports its figures") {
  auto g = tfm_test::rng(1);
  auto a = gc::leaf(gc::rnd(S2(2, 3), g), "a");
  auto b = gc::leaf(gc::rnd(S2(2, 3), g), "b");
  auto f = [](const auto& x, const auto& y) { return tfm::exp(x) * y; };
  auto r = gradcheck(f, a, b);
  MESSAGE(r.str());
  CHECK(r.passed);
  CHECK(r.checked == 12);
  CHECK(r.failures == 0);
  CHECK(r.max_rel_error < 1e-6);
  CHECK(r.max_abs_error < 1e-8);
  CHECK(r.str().find("seed 0x6a09e667f3bcc908") != std::string::npos);
  // A constant input is passed through and not checked.
  auto rc = gradcheck(f, a, constant(gc::rnd(S2(2, 3), g)));
  CHECK(rc.passed);
  CHECK(rc.checked == 6);
  // f may return one of its inputs.
  CHECK(gradcheck([](const auto& x) { return x; }, a).passed);
}

TEST_CASE("gradcheck finds a wrong vjp, names input and element, and does not throw") {
  auto g = tfm_test::rng(2);
  auto a = gc::leaf(gc::rnd(S2(2, 3), g), "a");
  auto x = gc::leaf(gc::rnd(S2(2, 3), g, 0.5, 1.0), "x");
  auto f = [](const auto& p, const auto& q) { return p + square_with_bug(q, 4, 1.01); };
  tfm::testing::gradcheck_result r;
  CHECK_NOTHROW(r = gradcheck(f, a, x));
  MESSAGE(r.str());
  CHECK_FALSE(r.passed);
  CHECK(r.failures == 1);
  CHECK(r.worst_input == 1);
  CHECK(r.worst_input_name == "x");
  CHECK(r.worst_element == 4);
  CHECK(r.max_rel_error > 5e-3);  // the bug is 1% of that element's gradient
  CHECK(std::fabs(r.worst_analytic / r.worst_numeric - 1.01) < 1e-6);
  CHECK(r.str().find("FAILED") != std::string::npos);
  // A 0.05% error is inside rtol = 1e-3 and passes (the documented criterion).
  CHECK(gradcheck([](const auto& q) { return square_with_bug(q, 2, 1.0005); }, x).passed);
}

TEST_CASE("gradcheck reports a NaN gradient and a graph cut by detach as failures") {
  auto g = tfm_test::rng(3);
  auto x = gc::leaf(gc::rnd(S2(2, 2), g, 0.5, 1.0), "x");
  auto rn = gradcheck(
      [](const auto& q) { return square_with_bug(q, 1, std::numeric_limits<double>::quiet_NaN()); },
      x);
  CHECK_FALSE(rn.passed);
  CHECK(rn.worst_element == 1);
  CHECK(std::isinf(rn.max_rel_error));
  auto rd = gradcheck([](const auto& q) { return q.detach() * 2.0 + q; }, x);
  CHECK_FALSE(rd.passed);  // analytic 1, numeric 3
  CHECK(rd.failures == 4);
}

TEST_CASE("gradcheck leaves the caller's values and gradients untouched") {
  auto g = tfm_test::rng(4);
  auto x = gc::leaf(gc::rnd(S2(3, 2), g), "x");
  sum(x * 3.0).backward();  // x.grad = 3
  const auto v0 = tfm_test::to_vector(x.value());
  const auto g0 = tfm_test::to_vector(x.grad());
  auto r = gradcheck([](const auto& q) { return tfm::tanh(q) * q; }, x);
  CHECK(r.passed);
  TFM_CHECK_BITWISE(tfm_test::to_vector(x.value()), v0);
  TFM_CHECK_BITWISE(tfm_test::to_vector(x.grad()), g0);
}

TEST_CASE("gradcheck samples max_elements per input; the seed changes the projection") {
  auto g = tfm_test::rng(5);
  auto x = gc::leaf(gc::rnd(S2(10, 10), g), "x");
  gradcheck_options o;
  o.max_elements = 10;
  auto r = gradcheck(
      o, [](const auto& q) { return tfm::sigmoid(q); }, x);
  CHECK(r.passed);
  CHECK(r.checked == 10);
  o.seed = 12345;
  auto r2 = gradcheck(
      o, [](const auto& q) { return tfm::sigmoid(q); }, x);
  CHECK(r2.seed == 12345);
  CHECK(r2.str().find("seed 0x3039") != std::string::npos);
}

TEST_CASE("gradcheck_projected: agrees on a large block and catches the wrong vjp") {
  auto g = tfm_test::rng(6);
  auto x = gc::leaf(gc::rnd(S2(64, 32), g), "x");
  auto w = gc::leaf(gc::rnd(S2(48, 32), g, -0.3, 0.3), "w");
  auto b = gc::leaf(gc::rnd(dyn_shape<1>(48), g), "b");
  auto mlp = [](const auto& p, const auto& q, const auto& c) { return tfm::gelu(linear(p, q, c)); };
  gradcheck_options o;
  o.directions = 6;
  auto r = gradcheck_projected(o, mlp, x, w, b);
  MESSAGE(r.str());
  CHECK(r.passed);
  CHECK(r.projected);
  CHECK(r.checked == 6);
  CHECK(r.max_rel_error < 1e-6);
  // The bug doubles one element's gradient: every direction sees it.
  auto y = gc::leaf(gc::rnd(S2(8, 8), g, 0.5, 1.0), "y");
  auto rb = gradcheck_projected([](const auto& q) { return square_with_bug(q, 9, 3.0); }, y);
  MESSAGE(rb.str());
  CHECK_FALSE(rb.passed);
  CHECK(rb.worst_input == tfm::testing::gradcheck_result::npos);
  // Values are restored bit for bit after the perturbations.
  const auto v0 = tfm_test::to_vector(x.value());
  (void)gradcheck_projected(mlp, x, w, b);
  TFM_CHECK_BITWISE(tfm_test::to_vector(x.value()), v0);
}
