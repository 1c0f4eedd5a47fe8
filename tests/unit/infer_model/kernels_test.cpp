// The 16-bit-weight kernels (backend/cpu/gemm/half_weights.hpp) and the decoder entry points
// (backend/cpu/decoder.hpp) against the reference backend.
#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/cpu/gemm/half_weights.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/backend/reference/gemm.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

using namespace tfm;

namespace {

template <class H>
void check_half_gemm(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const index_t Ms[] = {1, 2, 3, 13, 64}, Ns[] = {1, 7, 33, 100}, Ks[] = {1, 15, 16, 17, 100, 400};
  double worst = 0;
  for (index_t M : Ms)
    for (index_t N : Ns)
      for (index_t K : Ks)
        for (bool acc : {false, true}) {
          std::vector<float> a(static_cast<std::size_t>(M * K)),
              wf(static_cast<std::size_t>(N * K));
          std::vector<H> w(wf.size());
          for (float& x : a) x = nd(rng);
          for (std::size_t i = 0; i < w.size(); ++i) {
            w[i] = H(nd(rng));
            wf[i] = static_cast<float>(w[i]);
          }
          std::vector<float> c0(static_cast<std::size_t>(M * N));
          for (float& x : c0) x = nd(rng);
          std::vector<float> c = c0, c_f32 = c0, c_ref = c0, c_2t = c0;
          {
            thread_scope one(1);
            cpu_kernels::gemm_half_bt(M, N, K, a.data(), K, w.data(), K, c.data(), N, acc);
            cpu_kernels::gemm<float>(false, true, M, N, K, 1.0f, a.data(), K, wf.data(), K,
                                     acc ? 1.0f : 0.0f, c_f32.data(), N);
          }
          {
            thread_scope two(2);
            cpu_kernels::gemm_half_bt(M, N, K, a.data(), K, w.data(), K, c_2t.data(), N, acc);
          }
          reference_kernels::gemm<float>(false, true, M, N, K, 1.0f, a.data(), K, wf.data(), K,
                                         acc ? 1.0f : 0.0f, c_ref.data(), N);
          // The same blocking and micro-kernel as the float GEMM on the converted values: the
          // same bits (gemm.hpp's small products, M*N*K <= 16^3, and N == 1 run gemv forms there
          // and the packed path here, so those compare by tolerance only).
          if (M == 1 || (N > 1 && M * N * K > 16 * 16 * 16)) CHECK(c == c_f32);
          CHECK(c == c_2t);
          double err = 0, scale = 1e-30;
          for (std::size_t i = 0; i < c.size(); ++i) {
            err = std::max(err, static_cast<double>(std::abs(c[i] - c_ref[i])));
            scale = std::max(scale, static_cast<double>(std::abs(c_ref[i])));
          }
          worst = std::max(worst, err / scale);
          CHECK(err / scale < 1e-5 * std::sqrt(static_cast<double>(K)));
        }
  MESSAGE("max error vs the double-accumulating reference, relative to max |C|: " << worst);
}

}  // namespace

TEST_CASE("gemm_half_bt / gemv_half_dot with f16 weights equal the float GEMM on the same values") {
  const std::uint64_t seed = 1234;
  MESSAGE("seed " << seed);
  check_half_gemm<f16>(seed);
}

TEST_CASE(
    "gemm_half_bt / gemv_half_dot with bf16 weights equal the float GEMM on the same values") {
  const std::uint64_t seed = 4321;
  MESSAGE("seed " << seed);
  check_half_gemm<bf16>(seed);
}

TEST_CASE("cached_attention: cpu (row kernel and flash path) vs reference, GQA") {
  const std::uint64_t seed = 99;
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const index_t H = 6, G = 2, D = 20, cap = 80;
  std::vector<float> kc(static_cast<std::size_t>(G * cap * D)), vc(kc.size());
  for (float& x : kc) x = nd(rng);
  for (float& x : vc) x = nd(rng);
  for (index_t T : {index_t(1), index_t(5), index_t(70)})
    for (index_t pos0 : {index_t(0), index_t(3), cap - T}) {
      std::vector<float> q(static_cast<std::size_t>(T * H * D));
      for (float& x : q) x = nd(rng);
      const cached_attention_geometry g{T, H, G, D, cap, pos0, 1.0 / std::sqrt(double(D))};
      std::vector<float> scratch(static_cast<std::size_t>(cached_attention_scratch(g)));
      std::vector<float> o(q.size()), o_ref(q.size());
      cached_attention(cpu{}, g, q.data(), kc.data(), vc.data(), o.data(), scratch.data());
      cached_attention(reference{}, g, q.data(), kc.data(), vc.data(), o_ref.data(),
                       scratch.data());
      double err = 0;
      for (std::size_t i = 0; i < o.size(); ++i)
        err = std::max(err, static_cast<double>(std::abs(o[i] - o_ref[i])));
      CAPTURE(T);
      CAPTURE(pos0);
      CHECK(err < 1e-5);
    }
}

TEST_CASE("silu_mul: cpu vs reference") {
  std::vector<float> g(1000), u(1000), a(1000), b(1000);
  for (std::size_t i = 0; i < g.size(); ++i) {
    g[i] = -40.0f + 0.08f * static_cast<float>(i);
    u[i] = std::cos(static_cast<float>(i));
  }
  silu_mul(cpu{}, g.data(), u.data(), a.data(), 1000);
  silu_mul(reference{}, g.data(), u.data(), b.data(), 1000);
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
}

TEST_CASE("gelu_tanh: cpu vs reference (double tanh formula), sizes 0..33 and 1e4") {
  // Arguments from -1e4 to 1e4 (exp overflow gives -0 / x) and a dense sweep of [-8, 8].
  for (index_t n : {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 10000}) {
    std::vector<float> x(static_cast<std::size_t>(n)), a(x.size()), b(x.size());
    for (index_t i = 0; i < n; ++i)
      x[static_cast<std::size_t>(i)] =
          n > 100 ? -8.0f + 16.0f * static_cast<float>(i) / static_cast<float>(n)
                  : (i % 2 ? 1.0f : -1.0f) * std::pow(10.0f, static_cast<float>(i % 9) - 4.0f);
    if (n > 100) {
      x[0] = -1e4f;
      x[1] = 1e4f;
    }
    gelu_tanh(cpu{}, x.data(), a.data(), n);
    gelu_tanh(reference{}, x.data(), b.data(), n);
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      REQUIRE(std::isfinite(a[i]));
      worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) /
                                  std::max(1e-6, std::abs(static_cast<double>(b[i]))));
    }
    CAPTURE(n);
    CHECK(worst < 1e-5);  // relative, floored at 1e-6 absolute
  }
}

TEST_CASE("layer_norm_rows and add_bias_rows: cpu vs reference") {
  std::mt19937_64 rng(20261207);
  MESSAGE("seed 20261207");
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (index_t n : {1, 7, 16, 33, 576}) {
    const index_t rows = 5, ld = n + 3;
    std::vector<float> x(static_cast<std::size_t>(rows * ld)), w(static_cast<std::size_t>(n)),
        b(w.size()), ya(x.size()), yb(x.size());
    for (float& v : x) v = 3.0f + nd(rng);
    for (float& v : w) v = 1.0f + 0.1f * nd(rng);
    for (float& v : b) v = 0.1f * nd(rng);
    for (const float* bias : std::vector<const float*>{b.data(), nullptr}) {
      layer_norm_rows(cpu{}, x.data(), ld, w.data(), bias, 1e-5f, ya.data(), ld, rows, n);
      layer_norm_rows(reference{}, x.data(), ld, w.data(), bias, 1e-5f, yb.data(), ld, rows, n);
      for (index_t r = 0; r < rows; ++r)
        for (index_t i = 0; i < n; ++i)
          CHECK(ya[static_cast<std::size_t>(r * ld + i)] ==
                doctest::Approx(yb[static_cast<std::size_t>(r * ld + i)]).epsilon(1e-5));
    }
    ya = x;
    yb = x;
    add_bias_rows(cpu{}, ya.data(), ld, b.data(), rows, n);
    add_bias_rows(reference{}, yb.data(), ld, b.data(), rows, n);
    CHECK(ya == yb);  // one rounding each: exact
  }
}
