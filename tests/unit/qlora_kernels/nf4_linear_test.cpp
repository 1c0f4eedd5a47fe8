// QLoRA's frozen-base kernels (backend/cpu/quant/nf4_linear.hpp, backend/reference/nf4_linear.hpp)
// against:
//   - dequantize_nf4_dq (quant/nf4.hpp, itself bitwise the numpy reference of
//     tests/data/quant_ext/gen_fixtures.py): nf4_dequantize_rows on both tags, bitwise, on whole
//     tensors and sub-ranges, 1/2/3 threads; the SIMD block lookup against the scalar loop on
//     every code byte;
//   - an oracle written here: the whole matrix dequantized by dequantize_nf4_dq, then the naive
//     product accumulated in double: the cpu kernels within TESTING.md's matmul bound
//     (NMSE <= 5e-4), the reference kernels within 1e-12 (they only round once to float);
//   - cpu_kernels::gemm on the dequantized matrix, bitwise where the contract says so (packed
//     path), and 1/2/3 threads bitwise;
//   - bad shapes and arguments: tfm errors, not UB.
// Shapes: N in {1, 3, 40, 129, 255, 257, 300, 385, 600} (not multiples of the forward's 32-row
// panels or the backward's 384-row tiles), K in {64, 128, 576, 1536} (576 and 1536: SmolLM2-135M's
// widths), M in {1, 3, 5, 17, 1024}, beta 0 (output holding NaN) / 1 / 0.5; SmolLM2's three
// projection shapes at M = 3 and 1024.
#include "typeformer/backend/cpu/quant/nf4_linear.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/nf4_linear.hpp"
#include "typeformer/quant/nf4.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

/// N x K weights: normal values with a per-row scale drawn from [0.2, 3] (so the block absmaxes,
/// and with them the double-quantized constants, spread), a few exact zeros.
std::vector<float> make_weights(index_t N, index_t K, std::mt19937& g) {
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::uniform_real_distribution<float> sc(0.2f, 3.0f);
  std::vector<float> w(static_cast<std::size_t>(N * K));
  for (index_t n = 0; n < N; ++n) {
    const float s = sc(g);
    for (index_t k = 0; k < K; ++k) w[static_cast<std::size_t>(n * K + k)] = nd(g) * s;
  }
  if (!w.empty()) w[w.size() / 2] = 0.0f;
  return w;
}

tfm::nf4_dq_tensor make_tensor(index_t N, index_t K, std::mt19937& g) {
  const auto w = make_weights(N, K, g);
  return tfm::quantize_nf4_dq(w, static_cast<std::size_t>(N), static_cast<std::size_t>(K), "w");
}

std::vector<float> uniform(std::size_t n, std::mt19937& g, float lo = -1.0f, float hi = 1.0f) {
  return tfm_test::random_vector<float>(n, g, lo, hi);
}

/// y = x wd^T + beta y0 in double (beta == 0: y0 ignored).
std::vector<double> oracle_bt(const std::vector<float>& wd, const std::vector<float>& x,
                              const std::vector<float>& y0, index_t M, index_t N, index_t K,
                              float beta) {
  std::vector<double> y(static_cast<std::size_t>(M * N));
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) {
      double s = 0;
      for (index_t k = 0; k < K; ++k)
        s += static_cast<double>(x[static_cast<std::size_t>(m * K + k)]) *
             wd[static_cast<std::size_t>(n * K + k)];
      if (beta != 0.0f) s += static_cast<double>(beta) * y0[static_cast<std::size_t>(m * N + n)];
      y[static_cast<std::size_t>(m * N + n)] = s;
    }
  return y;
}

/// dx = dy wd + beta dx0 in double.
std::vector<double> oracle_b(const std::vector<float>& wd, const std::vector<float>& dy,
                             const std::vector<float>& dx0, index_t M, index_t N, index_t K,
                             float beta) {
  std::vector<double> dx(static_cast<std::size_t>(M * K), 0.0);
  for (index_t m = 0; m < M; ++m) {
    double* o = dx.data() + m * K;
    if (beta != 0.0f)
      for (index_t k = 0; k < K; ++k)
        o[k] = static_cast<double>(beta) * dx0[static_cast<std::size_t>(m * K + k)];
    for (index_t n = 0; n < N; ++n) {
      const double gy = dy[static_cast<std::size_t>(m * N + n)];
      for (index_t k = 0; k < K; ++k) o[k] += gy * wd[static_cast<std::size_t>(n * K + k)];
    }
  }
  return dx;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  const std::string d = tfm_test::bitwise_diff(a, b);
  if (!d.empty()) MESSAGE(d);
  return d.empty();
}

constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

}  // namespace

TEST_CASE("nf4 block lookup: the SIMD path equals the scalar loop on every code byte") {
  // 8 blocks whose 256 code bytes are 0..255, with scales that include 0, a subnormal and -0.
  std::vector<std::uint8_t> qs(256);
  for (int i = 0; i < 256; ++i) qs[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
  const float scales[8] = {1.0f, 0.0f, 0.013f, 3.5f, 1e-40f, 65504.0f, -0.0f, 0.7071f};
  for (int b = 0; b < 8; ++b) {
    float got[64], want[64];
    ck::detail::nf4_linear::dequant_block_simd(qs.data() + 32 * b, scales[b], got);
    ck::detail::nf4_linear::dequant_block_scalar(qs.data() + 32 * b, scales[b], want);
    CHECK(std::memcmp(got, want, sizeof got) == 0);
  }
}

TEST_CASE("nf4_dequantize_rows: bitwise dequantize_nf4_dq on both tags, any range, 1/2/3 threads") {
  auto g = tfm_test::rng(0x21a1);
  struct shape {
    index_t N, K;
  };
  // 2100 x 1536 = 50400 blocks: nf4_dequantize_rows splits it over 2 and 3 threads.
  for (shape s :
       {shape{1, 64}, shape{3, 128}, shape{257, 576}, shape{600, 1536}, shape{2100, 1536}}) {
    CAPTURE(s.N);
    CAPTURE(s.K);
    const auto w = make_tensor(s.N, s.K, g);
    const auto whole = tfm::dequantize_nf4_dq(w);
    const index_t ranges[][2] = {{0, s.N}, {s.N / 3, s.N - s.N / 4}, {s.N - 1, s.N}, {0, 0}};
    for (const auto& r : ranges) {
      CAPTURE(r[0]);
      CAPTURE(r[1]);
      const auto first = whole.begin() + r[0] * s.K, last = whole.begin() + r[1] * s.K;
      const std::vector<float> want(first, last);
      std::vector<float> ref(want.size(), qnan);
      tfm::nf4_dequantize_rows(tfm::reference{}, w, r[0], r[1], ref.data());
      CHECK(same_bits(ref, want));
      for (int t : {1, 2, 3}) {
        tfm::thread_scope ts(t);
        std::vector<float> got(want.size(), qnan);
        tfm::nf4_dequantize_rows(tfm::cpu{}, w, r[0], r[1], got.data());
        CHECK(same_bits(got, want));
      }
    }
  }
}

TEST_CASE("nf4_matmul_bt / nf4_matmul: against the double oracle, odd shapes, beta 0 / 1 / 0.5") {
  auto g = tfm_test::rng(0x21a2);
  struct shape {
    index_t M, N, K;
  };
  // N not a multiple of the forward's panels (32 rows) or the backward's tiles (384 rows).
  const shape shapes[] = {{1, 1, 64},       {3, 3, 64},      {17, 255, 128},
                          {1, 257, 576},    {3, 600, 576},   {5, 385, 64},
                          {1024, 300, 576}, {17, 129, 1536}, {1, 40, 1536}};
  for (const shape& s : shapes) {
    CAPTURE(s.M);
    CAPTURE(s.N);
    CAPTURE(s.K);
    const auto w = make_tensor(s.N, s.K, g);
    const auto wd = tfm::dequantize_nf4_dq(w);
    const auto x = uniform(static_cast<std::size_t>(s.M * s.K), g);
    const auto dy = uniform(static_cast<std::size_t>(s.M * s.N), g);
    const auto y0 = uniform(static_cast<std::size_t>(s.M * s.N), g);
    const auto dx0 = uniform(static_cast<std::size_t>(s.M * s.K), g);
    for (float beta : {0.0f, 1.0f, 0.5f}) {
      CAPTURE(beta);
      const auto want_y = oracle_bt(wd, x, y0, s.M, s.N, s.K, beta);
      const auto want_dx = oracle_b(wd, dy, dx0, s.M, s.N, s.K, beta);
      // beta == 0 must not read the output: start from NaN.
      std::vector<float> y = beta == 0.0f ? std::vector<float>(y0.size(), qnan) : y0;
      std::vector<float> dx = beta == 0.0f ? std::vector<float>(dx0.size(), qnan) : dx0;
      std::vector<float> yr = y, dxr = dx;
      tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), s.M, y.data(), beta);
      tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), s.M, dx.data(), beta);
      tfm::nf4_matmul_bt(tfm::reference{}, w, x.data(), s.M, yr.data(), beta);
      tfm::nf4_matmul(tfm::reference{}, w, dy.data(), s.M, dxr.data(), beta);
      const auto ry = tfm_test::compare(y, want_y, 5e-4),
                 rdx = tfm_test::compare(dx, want_dx, 5e-4);
      INFO("forward " << ry.str());
      INFO("backward " << rdx.str());
      CHECK(ry.ok);
      CHECK(rdx.ok);
      // A float GEMM over K <= 1536 values: far inside the bound in practice.
      CHECK(ry.nmse <= 1e-11);
      CHECK(rdx.nmse <= 1e-11);
      CHECK(tfm_test::nmse(yr, want_y) <= 1e-12);
      CHECK(tfm_test::nmse(dxr, want_dx) <= 1e-12);
    }
  }
}

TEST_CASE("nf4 kernels at SmolLM2's shapes: bitwise the float GEMM of deq(W), 1/2/3 threads") {
  auto g = tfm_test::rng(0x21a3);
  struct shape {
    index_t N, K;
  };
  for (shape s : {shape{576, 576}, shape{1536, 576}, shape{576, 1536}}) {
    // 1024 rows: a SmolLM2 training micro-batch (4 x 256); 300 (several row blocks and a
    // remainder) under the sanitizer, where the 1024-row products take minutes.
    const index_t big = tfm_test::sanitized ? 300 : 1024;
    for (index_t M : {index_t(3), big}) {
      CAPTURE(s.N);
      CAPTURE(s.K);
      CAPTURE(M);
      const auto w = make_tensor(s.N, s.K, g);
      const auto wd = tfm::dequantize_nf4_dq(w);
      const auto x = uniform(static_cast<std::size_t>(M * s.K), g);
      const auto dy = uniform(static_cast<std::size_t>(M * s.N), g);
      const auto y0 = uniform(static_cast<std::size_t>(M * s.N), g);
      const auto dx0 = uniform(static_cast<std::size_t>(M * s.K), g);
      for (float beta : {0.0f, 1.0f}) {
        CAPTURE(beta);
        std::vector<float> gy = y0, gdx = dx0;
        ck::gemm<float>(false, true, M, s.N, s.K, 1.0f, x.data(), s.K, wd.data(), s.K, beta,
                        gy.data(), s.N);
        ck::gemm<float>(false, false, M, s.K, s.N, 1.0f, dy.data(), s.N, wd.data(), s.K, beta,
                        gdx.data(), s.K);
        for (int t : {1, 2, 3}) {
          CAPTURE(t);
          tfm::thread_scope ts(t);
          std::vector<float> y = y0, dx = dx0;
          tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), M, y.data(), beta);
          tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), M, dx.data(), beta);
          CHECK(same_bits(y, gy));
          CHECK(same_bits(dx, gdx));
        }
      }
      if (M == big && s.N == 576 && s.K == 576) {  // one full-size oracle check per direction
        const auto want_y = oracle_bt(wd, x, y0, M, s.N, s.K, 1.0f);
        const auto want_dx = oracle_b(wd, dy, dx0, M, s.N, s.K, 1.0f);
        std::vector<float> y = y0, dx = dx0;
        tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), M, y.data(), 1.0f);
        tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), M, dx.data(), 1.0f);
        const double ey = tfm_test::nmse(y, want_y), edx = tfm_test::nmse(dx, want_dx);
        MESSAGE("M=" << M << " N=K=576: NMSE forward " << ey << ", backward " << edx);
        CHECK(ey <= 5e-4);
        CHECK(edx <= 5e-4);
      }
    }
  }
}

TEST_CASE(
    "nf4 kernels: M = 0 and empty tensors touch nothing; M = 1: 1/2/3 threads, rows of M = 17") {
  auto g = tfm_test::rng(0x21a4);
  const auto w = make_tensor(300, 576, g);
  // M = 0: null buffers are fine.
  tfm::nf4_matmul_bt(tfm::cpu{}, w, nullptr, 0, nullptr, 0.0f);
  tfm::nf4_matmul(tfm::cpu{}, w, nullptr, 0, nullptr, 0.0f);
  tfm::nf4_matmul_bt(tfm::reference{}, w, nullptr, 0, nullptr, 0.0f);
  // A 0 x 64 tensor: the forward writes nothing, the backward scales dx by beta.
  const tfm::nf4_dq_tensor empty = tfm::quantize_nf4_dq({}, 0, 64, "empty");
  std::vector<float> dx(2 * 64, 2.0f), dxr = dx;
  tfm::nf4_matmul(tfm::cpu{}, empty, nullptr, 2, dx.data(), 0.5f);
  tfm::nf4_matmul(tfm::reference{}, empty, nullptr, 2, dxr.data(), 0.5f);
  CHECK(dx == std::vector<float>(2 * 64, 1.0f));
  CHECK(dxr == std::vector<float>(2 * 64, 1.0f));
  // M = 1 does not depend on the thread count either, and a row of the result has the same bits
  // whatever M (the packed kernel for every M).
  const auto x = uniform(576, g), dy = uniform(300, g);
  std::vector<float> y1(300), dx1(576);
  {
    tfm::thread_scope ts(1);
    tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), 1, y1.data(), 0.0f);
    tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), 1, dx1.data(), 0.0f);
  }
  for (int t : {2, 3}) {
    tfm::thread_scope ts(t);
    std::vector<float> y(300), d(576);
    tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), 1, y.data(), 0.0f);
    tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), 1, d.data(), 0.0f);
    CHECK(same_bits(y, y1));
    CHECK(same_bits(d, dx1));
  }
  const auto x17 = uniform(17 * 576, g), dy17 = uniform(17 * 300, g);
  std::vector<float> y17(17 * 300), dx17(17 * 576);
  tfm::nf4_matmul_bt(tfm::cpu{}, w, x17.data(), 17, y17.data(), 0.0f);
  tfm::nf4_matmul(tfm::cpu{}, w, dy17.data(), 17, dx17.data(), 0.0f);
  for (index_t r : {index_t(0), index_t(5), index_t(16)}) {
    CAPTURE(r);
    std::vector<float> y(300), d(576);
    tfm::nf4_matmul_bt(tfm::cpu{}, w, x17.data() + r * 576, 1, y.data(), 0.0f);
    tfm::nf4_matmul(tfm::cpu{}, w, dy17.data() + r * 300, 1, d.data(), 0.0f);
    CHECK(same_bits(y, std::vector<float>(y17.begin() + r * 300, y17.begin() + (r + 1) * 300)));
    CHECK(same_bits(d, std::vector<float>(dx17.begin() + r * 576, dx17.begin() + (r + 1) * 576)));
  }
}

TEST_CASE("nf4 kernels: bad shapes and arguments raise tfm errors") {
  auto g = tfm_test::rng(0x21a5);
  const auto good = make_tensor(4, 128, g);
  std::vector<float> x(4 * 128), y(4 * 4), out(4 * 128);
  auto all_tags = [&](auto&& f) {
    f(tfm::cpu{});
    f(tfm::reference{});
  };
  all_tags([&](auto tag) {
    // A tensor whose parts do not match its shape.
    auto bad = good;
    bad.cols = 100;  // not a multiple of 64
    CHECK_THROWS_AS(tfm::nf4_matmul_bt(tag, bad, x.data(), 1, y.data(), 0.0f), tfm::shape_error);
    bad = good;
    bad.rows = 5;  // more rows than codes
    CHECK_THROWS_AS(tfm::nf4_matmul(tag, bad, y.data(), 1, x.data(), 0.0f), tfm::shape_error);
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, bad, 0, 1, out.data()), tfm::shape_error);
    bad = good;
    bad.qs.pop_back();
    CHECK_THROWS_AS(tfm::nf4_matmul_bt(tag, bad, x.data(), 1, y.data(), 0.0f), tfm::shape_error);
    bad = good;
    bad.absmax_q.push_back(0);
    CHECK_THROWS_AS(tfm::nf4_matmul_bt(tag, bad, x.data(), 1, y.data(), 0.0f), tfm::shape_error);
    bad = good;
    bad.scale2.clear();
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, bad, 0, 1, out.data()), tfm::shape_error);
    bad = good;
    bad.rows = std::size_t(1) << 62;  // rows * cols overflows the index type
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, bad, 0, 1, out.data()), tfm::shape_error);
    // Arguments.
    CHECK_THROWS_AS(tfm::nf4_matmul_bt(tag, good, x.data(), -1, y.data(), 0.0f), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_matmul(tag, good, y.data(), -2, x.data(), 0.0f), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_matmul_bt(tag, good, nullptr, 1, y.data(), 0.0f), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_matmul_bt(tag, good, x.data(), 1, nullptr, 0.0f), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_matmul(tag, good, nullptr, 1, x.data(), 0.0f), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, good, 2, 1, out.data()), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, good, -1, 1, out.data()), tfm::value_error);
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, good, 0, 5, out.data()), tfm::index_error);
    CHECK_THROWS_AS(tfm::nf4_dequantize_rows(tag, good, 0, 1, nullptr), tfm::value_error);
    // The message names the kernel and the sizes.
    bad = good;
    bad.qs.pop_back();
    try {
      tfm::nf4_matmul_bt(tag, bad, x.data(), 1, y.data(), 0.0f);
    } catch (const tfm::shape_error& e) {
      const std::string m = e.what();
      CHECK(m.find("nf4_matmul_bt") != std::string::npos);
      CHECK(m.find("255") != std::string::npos);
    }
  });
}
