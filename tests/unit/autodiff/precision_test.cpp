// bf16 vars (gradients held in f32, close to an f32 run on the same rounded inputs) and thread
// independence (1 and 2 threads give bitwise identical gradients for a transformer-ish graph).
#include "gc_support.hpp"

#include <doctest/doctest.h>
#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/core/half.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/loss.hpp>
#include <typeformer/ops/matmul.hpp>
#include <typeformer/ops/normalize.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/ops/view.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

using namespace tfm;

namespace {
using S1 = dyn_shape<1>;
using S2 = dyn_shape<2>;

/// Uniform values rounded to T (bf16 values are exactly representable in float).
template <class T>
tensor<T, S2> trnd(const S2& s, std::mt19937& g, double lo, double hi) {
  return tfm_test::random_tensor<tensor<T, S2>>(s, g, lo, hi);
}

/// Transformer-ish graph: linear + layer_norm + gelu + self-attention scores with softmax +
/// linear to logits + cross entropy. Returns the loss and all parameter gradients as float.
template <class T>
struct tiny_block {
  var<T, S2> x, w1, wo;
  var<T, S1> b1, gamma, beta;
  tensor<std::int32_t, S1> tgt;

  var<T, shape<>> loss() const {
    auto h = gelu(layer_norm(linear(x, w1, b1), gamma, beta));  // (N, F)
    auto p = softmax(matmul(h, transpose(h)) * (1.0 / 16.0));   // (N, N)
    auto logits = linear(matmul(p, h) + h, wo);                 // (N, V)
    return cross_entropy(logits, tgt);
  }
  std::vector<double> grads() const {
    std::vector<double> out;
    auto add = [&](const auto& v) {
      for (auto e : tfm_test::to_vector(v.grad())) out.push_back(static_cast<double>(e));
    };
    add(x), add(w1), add(wo), add(b1), add(gamma), add(beta);
    return out;
  }
};

template <class T, class U>
tiny_block<T> convert(const tiny_block<U>& b) {
  auto c2 = [](const auto& v) { return parameter(tensor<T, S2>(cast<T>(v.value()))); };
  auto c1 = [](const auto& v) { return parameter(tensor<T, S1>(cast<T>(v.value()))); };
  return {c2(b.x), c2(b.w1), c2(b.wo), c1(b.b1), c1(b.gamma), c1(b.beta), b.tgt};
}

template <class T>
tiny_block<T> make_block(std::mt19937& g, index_t N, index_t C, index_t F, index_t V) {
  tensor<std::int32_t, S1> t{S1(N)};
  std::uniform_int_distribution<int> cls(0, static_cast<int>(V) - 1);
  for (index_t i = 0; i < N; ++i) t(i) = cls(g);
  tensor<T, S1> gm{S1(F)}, bt{S1(F)};
  gm.fill(1);
  return {parameter(trnd<T>(S2(N, C), g, -1, 1)),
          parameter(trnd<T>(S2(F, C), g, -0.3, 0.3)),
          parameter(trnd<T>(S2(V, F), g, -0.3, 0.3)),
          parameter(tensor<T, S1>(S1(F))),
          parameter(gm),
          parameter(bt),
          t};
}
}  // namespace

TEST_CASE("bf16 vars: f32 gradients, close to an f32 run on the same values") {
  auto g = tfm_test::rng(31);
  auto b16 = make_block<bf16>(g, 16, 32, 64, 50);
  static_assert(std::is_same_v<typename decltype(b16.w1)::grad_type, float>,
                "bf16 vars hold f32 gradients");
  auto b32 = convert<float>(b16);  // exactly the same (bf16-representable) values
  auto l16 = b16.loss();
  auto l32 = b32.loss();
  l16.backward();
  l32.backward();
  const double lf16 = static_cast<double>(static_cast<float>(l16.value()()));
  const double lf32 = static_cast<double>(l32.value()());
  // Every op rounds its output to bf16 (8 significant bits, relative step 2^-8), and that error
  // compounds through ~8 ops and their vjps; so the bar is loose: loss within 2%, gradients NMSE
  // below 1e-3 (an f32 run would be at ~1e-12 of itself; a wrong vjp gives NMSE ~ 1).
  MESSAGE("loss bf16 ", lf16, " f32 ", lf32);
  CHECK(std::abs(lf16 - lf32) <= 0.02 * std::abs(lf32));
  auto rep = tfm_test::compare(b16.grads(), b32.grads(), 1e-3);
  MESSAGE("bf16 vs f32 gradients: ", rep.str());
  TFM_CHECK_REPORT(rep);
}

TEST_CASE("1 and 2 threads give bitwise identical gradients (f32 transformer-ish graph)") {
  auto g = tfm_test::rng(32);
  // Sizes past the kernels' parallel thresholds (cross entropy: rows x V >= 2^16; the norm
  // backward: rows x n >= 2^15, here 160 x 256 in 5 row blocks).
  const auto proto = make_block<float>(g, 160, 128, 256, 1024);
  auto run = [&](int threads) {
    thread_scope ts(threads);
    auto b = convert<float>(proto);
    auto l = b.loss();
    l.backward();
    auto gr = b.grads();
    gr.push_back(static_cast<double>(l.value()()));
    return gr;
  };
  const auto one = run(1);
  const auto two = run(2);
  MESSAGE("threads available: ", num_threads(), "; ", one.size(), " gradient elements compared");
  TFM_CHECK_BITWISE(two, one);
}

// The norm backward splits rows into blocks of 32 (detail::norm_backward_rows), sums dgamma and
// dbeta per block in double and adds the blocks in order. Several blocks and a partial last one,
// on 1 and 2 threads, against the vjp written out in double from its formula.
TEST_CASE("layer_norm and rms_norm backward over several row blocks match a float64 formula") {
  auto g = tfm_test::rng(33);
  const index_t rows = 300, n = 130;  // 10 blocks, the last of 12 rows; rows x n >= 2^15
  const auto xv = trnd<float>(S2(rows, n), g, -2, 2), cv = trnd<float>(S2(rows, n), g, -1, 1);
  const auto gv = tfm_test::random_tensor<tensor<float, S1>>(S1(n), g, 0.5, 1.5);
  const auto bv = tfm_test::random_tensor<tensor<float, S1>>(S1(n), g, -0.5, 0.5);
  for (const bool rms : {false, true}) {
    CAPTURE(rms);
    const double eps = 1e-5;
    // Reference in double: xh = (x - mu) rstd, gw = c gamma,
    // dx = rstd (gw - mean(gw) - xh mean(gw xh)) (RMS: no mu, no mean(gw) term),
    // dgamma = sum_r c xh, dbeta = sum_r c.
    std::vector<double> rdx(static_cast<std::size_t>(rows * n)), rdg(n, 0.0), rdb(n, 0.0);
    for (index_t r = 0; r < rows; ++r) {
      const float* x = xv.data() + r * n;
      const float* c = cv.data() + r * n;
      double mu = 0, var = 0;
      for (index_t j = 0; j < n; ++j) mu += x[j];
      mu = rms ? 0.0 : mu / static_cast<double>(n);
      for (index_t j = 0; j < n; ++j) var += (x[j] - mu) * (x[j] - mu);
      const double rstd = 1.0 / std::sqrt(var / static_cast<double>(n) + eps);
      double m1 = 0, m2 = 0;
      for (index_t j = 0; j < n; ++j) {
        const double xh = (x[j] - mu) * rstd, gw = double(c[j]) * gv.data()[j];
        m1 += gw / static_cast<double>(n);
        m2 += gw * xh / static_cast<double>(n);
        rdg[static_cast<std::size_t>(j)] += double(c[j]) * xh;
        rdb[static_cast<std::size_t>(j)] += c[j];
      }
      for (index_t j = 0; j < n; ++j) {
        const double xh = (x[j] - mu) * rstd, gw = double(c[j]) * gv.data()[j];
        rdx[static_cast<std::size_t>(r * n + j)] = rstd * (gw - (rms ? 0.0 : m1) - xh * m2);
      }
    }
    std::vector<std::vector<float>> per_threads;
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      thread_scope ts(threads);
      auto x = parameter(xv);
      auto gamma = parameter(gv), beta = parameter(bv);
      const auto c = constant(cv);
      auto y = rms ? rms_norm(x, gamma, eps) : layer_norm(x, gamma, beta, eps);
      sum(y * c).backward();
      auto dx = tfm_test::to_vector(x.grad()), dg = tfm_test::to_vector(gamma.grad());
      auto rep = tfm_test::compare(dx, rdx, 1e-11);
      MESSAGE("dx: ", rep.str());
      TFM_CHECK_REPORT(rep);
      rep = tfm_test::compare(dg, rdg, 1e-11);
      MESSAGE("dgamma: ", rep.str());
      TFM_CHECK_REPORT(rep);
      std::vector<float> all = dx;
      all.insert(all.end(), dg.begin(), dg.end());
      if (!rms) {
        auto db = tfm_test::to_vector(beta.grad());
        rep = tfm_test::compare(db, rdb, 1e-11);
        MESSAGE("dbeta: ", rep.str());
        TFM_CHECK_REPORT(rep);
        all.insert(all.end(), db.begin(), db.end());
      }
      per_threads.push_back(all);
    }
    TFM_CHECK_BITWISE(per_threads[1], per_threads[0]);
  }
}
