// Gradient accumulation at the optimizer level: k micro-batches, each loss scaled by 1/k and
// backpropagated into the same gradients, then one optimizer step, give the same update as one
// step on the whole batch (float64 MLP built from tfm::linear and tfm::gelu; TESTING.md:
// NMSE <= 1e-12), over several steps of AdamW and of SGD with momentum.
#include "optim_test_util.hpp"

#include <doctest/doctest.h>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace tfm;
using namespace optim_test;

namespace {
using S2 = shape<dyn, dyn>;

tensor<double, S2> random_matrix(index_t r, index_t c, std::mt19937& g, double scale) {
  tensor<double, S2> t(S2(r, c));
  tfm_test::from_vector(
      t, tfm_test::random_vector<double>(static_cast<std::size_t>(r * c), g, -scale, scale));
  return t;
}
tensor<double, S1> random_vec(index_t n, std::mt19937& g, double scale) {
  tensor<double, S1> t{S1(n)};
  tfm_test::from_vector(
      t, tfm_test::random_vector<double>(static_cast<std::size_t>(n), g, -scale, scale));
  return t;
}
/// Rows r0 .. r1 - 1 of a matrix, as a new tensor (copied through plain indexing).
tensor<double, S2> rows(const tensor<double, S2>& t, index_t r0, index_t r1) {
  tensor<double, S2> out(S2(r1 - r0, t.extent(1)));
  for (index_t i = r0; i < r1; ++i)
    for (index_t j = 0; j < t.extent(1); ++j)
      out.data()[(i - r0) * t.extent(1) + j] = t.data()[i * t.extent(1) + j];
  return out;
}

/// y = W2 gelu(W1 x + b1) + b2 with weights (out, in).
struct mlp {
  var<double, S2> w1, w2;
  var<double, S1> b1, b2;
  nn::parameter_list<double> list() const {
    return {{"w1", w1.data(), true},
            {"b1", b1.data(), false},
            {"w2", w2.data(), true},
            {"b2", b2.data(), false}};
  }
  var<double, shape<>> loss(const tensor<double, S2>& x, const tensor<double, S2>& y) const {
    auto h = gelu(linear(constant(x), w1, b1));
    return mean(square(linear(h, w2, b2) - constant(y)));
  }
  vec values() const {
    vec out;
    for (const auto* p : {w1.data().get(), b1.data().get(), w2.data().get(), b2.data().get()})
      for (index_t k = 0; k < p->size(); ++k) out.push_back(p->value.data()[k]);
    return out;
  }
};

mlp make_mlp(std::uint64_t salt, index_t in, index_t hid, index_t out) {
  auto g = tfm_test::rng(salt);
  return {parameter(random_matrix(hid, in, g, 0.5)), parameter(random_matrix(out, hid, g, 0.5)),
          parameter(random_vec(hid, g, 0.1)), parameter(random_vec(out, g, 0.1))};
}
}  // namespace

TEST_CASE("k micro-batches scaled 1/k give the same optimizer update as one batch (f64)") {
  const index_t k = 4, mb = 3, n = k * mb, in = 8, hid = 16, out = 5;
  auto g = tfm_test::rng(701);
  const auto x = random_matrix(n, in, g, 1.0);
  const auto y = random_matrix(n, out, g, 1.0);
  for (int method = 0; method < 2; ++method) {
    const std::string name = method == 0 ? "adamw" : "sgd momentum";
    CAPTURE(name);
    // Two identical models (same seed salt).
    mlp full = make_mlp(702, in, hid, out), acc = make_mlp(702, in, hid, out);
    optim::adam_options o;
    o.lr = 0.01;
    o.weight_decay = 0.1;
    auto opt_full = method == 0
                        ? optim::adamw(full.list(), o)
                        : optim::sgd(full.list(), optim::sgd_options{0.05, 0.9, 0.1, false});
    auto opt_acc = method == 0 ? optim::adamw(acc.list(), o)
                               : optim::sgd(acc.list(), optim::sgd_options{0.05, 0.9, 0.1, false});
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      const vec before_full = full.values(), before_acc = acc.values();
      opt_full.zero_grad();
      full.loss(x, y).backward();
      REQUIRE(opt_full.step());
      opt_acc.zero_grad();
      for (index_t j = 0; j < k; ++j) {
        auto l = acc.loss(rows(x, j * mb, (j + 1) * mb), rows(y, j * mb, (j + 1) * mb));
        (l * (1.0 / static_cast<double>(k))).backward();
      }
      REQUIRE(opt_acc.step());
      vec du_full, du_acc;
      const vec a = full.values(), b = acc.values();
      double moved = 0;
      for (std::size_t i = 0; i < a.size(); ++i) {
        du_full.push_back(a[i] - before_full[i]);
        du_acc.push_back(b[i] - before_acc[i]);
        moved = std::max(moved, std::fabs(du_full.back()));
      }
      auto rep = tfm_test::compare(du_acc, du_full, 1e-12);
      MESSAGE(name, " step ", step, ": update ", rep.str());
      TFM_CHECK_REPORT(rep);
      CHECK(moved > 1e-3);  // the update is not trivially zero
    }
  }
}
