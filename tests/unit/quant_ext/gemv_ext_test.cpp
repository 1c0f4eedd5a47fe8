// The fused dequantize + GEMV kernels of backend/cpu/quant/gemv_ext.hpp (NF4 with float
// activations; INT4-g64 / g128 with 8-bit activations) and the dequantize-in-pack GEMM
// (gemm_q.hpp's gemm_dq_bt, unchanged) on typeformer's layouts, against:
//   - an f64 oracle of the dequantized weights (tfm::dequantize, itself bitwise equal to the
//     numpy reference): NF4 NMSE <= 1e-10 against sum deq(W) x; INT4 NMSE <= 1e-10 against the
//     exact model sum_s d * xd_s * sumi_s + m * xs_s written here from the layout, and
//     NMSE <= 5e-4 (TESTING.md's matmul limit) against the float product deq(W) x;
//   - the scalar kernel (bitwise: every ISA path follows the documented order), 1/2/3 threads
//     (bitwise), the run-time-typed gemv_ext (bitwise), and for INT4 the Q4_1 GEMV of
//     gemv_q.hpp on the Q4_1 blocks that repeat each group's (d, m) (bitwise);
//   - gemm_dq_bt: bitwise the float GEMM of the dequantized W on its packed path, and 1/2/3
//     threads bitwise.
// Odd shapes: N in {1, 3, 17, 33, 129}, K from one block up to 1536 (576 = SmolLM2's width).
#include "typeformer/backend/cpu/quant/gemv_ext.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemm_q.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

double nmse(const std::vector<float>& got, const std::vector<double>& want) {
  double e = 0, s = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    e += (got[i] - want[i]) * (got[i] - want[i]);
    s += want[i] * want[i];
  }
  return s == 0 ? e : e / s;
}

template <class B>
std::vector<B> as_blocks(const std::vector<std::byte>& bytes) {
  std::vector<B> out(bytes.size() / sizeof(B));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<float> random_w(std::mt19937& g, index_t N, index_t K) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(static_cast<std::size_t>(N * K));
  for (auto& v : w) v = 0.05f * nd(g) + 0.004f;
  return w;
}

std::vector<float> random_x(std::mt19937& g, index_t K) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(K));
  for (auto& v : x) v = nd(g) + 0.3f;
  return x;
}

}  // namespace

TEST_CASE("gemv_ext: NF4 against the f64 product of the dequantized weights") {
  auto g = tfm_test::rng(31);
  MESSAGE("seed " << tfm_test::seed() << ", kernel ISA " << std::string(ck::q8_dot_isa()));
  const index_t Ns[] = {1, 3, 17, 33, 129}, Ks[] = {64, 192, 576, 1536};
  double worst = 0;
  for (index_t N : Ns)
    for (index_t K : Ks) {
      CAPTURE(N);
      CAPTURE(K);
      const auto wf = random_w(g, N, K);
      const auto x = random_x(g, K);
      const auto bytes = tfm::quantize(tfm::ggml_type::tfm_nf4, wf, N, K, "W");
      const auto w = as_blocks<tfm::block_nf4>(bytes);
      const auto wd = tfm::dequantize(tfm::ggml_type::tfm_nf4, bytes);
      std::vector<double> want(static_cast<std::size_t>(N));
      for (index_t n = 0; n < N; ++n)
        for (index_t k = 0; k < K; ++k) want[n] += double(wd[n * K + k]) * x[k];
      std::vector<float> y1(N), y2(N), y3(N), yrt(N), ys(N);
      {
        tfm::thread_scope t(1);
        ck::gemv_nf4(N, K, w.data(), K / 64, x.data(), y1.data());
      }
      {
        tfm::thread_scope t(2);
        ck::gemv_nf4(N, K, w.data(), K / 64, x.data(), y2.data());
        ck::gemv_ext(tfm::ggml_type::tfm_nf4, N, K, x.data(), nullptr, bytes.data(),
                     static_cast<std::size_t>(K / 64) * 34, yrt.data());
      }
      {
        tfm::thread_scope t(3);
        ck::gemv_nf4(N, K, w.data(), K / 64, x.data(), y3.data());
      }
      for (index_t n = 0; n < N; ++n)
        ys[n] = ck::vec_dot_nf4_scalar(K, w.data() + n * (K / 64), x.data());
      CHECK(y1 == ys);
      CHECK(y1 == y2);
      CHECK(y1 == y3);
      CHECK(y1 == yrt);
      const double e = nmse(y1, want);
      worst = std::max(worst, e);
      CHECK(e <= 1e-10);
      // accumulate
      std::vector<float> ya = y1;
      ck::gemv_nf4(N, K, w.data(), K / 64, x.data(), ya.data(), true);
      for (index_t n = 0; n < N; ++n) CHECK(ya[n] == y1[n] + y1[n]);
    }
  MESSAGE("NF4 GEMV worst NMSE vs f64: " << worst);
}

template <class B>
void check_i4() {
  constexpr index_t G = static_cast<index_t>(tfm::block_traits<B>::block_elements);
  auto g = tfm_test::rng(32 + G);
  MESSAGE("seed " << tfm_test::seed() << ", group " << G << ", ISA "
                  << std::string(ck::q8_dot_isa()));
  const index_t Ns[] = {1, 3, 17, 33, 129};
  const index_t Ks[] = {G, 3 * G, 9 * G, G == 64 ? 576 : 1536};
  double worst_exact = 0, worst_float = 0;
  ck::q8_activations act;
  for (index_t N : Ns)
    for (index_t K : Ks) {
      CAPTURE(N);
      CAPTURE(K);
      const auto wf = random_w(g, N, K);
      const auto x = random_x(g, K);
      const auto bytes = tfm::quantize(tfm::block_traits<B>::type, wf, N, K, "W");
      const auto w = as_blocks<B>(bytes);
      const auto wd = tfm::dequantize(tfm::block_traits<B>::type, bytes);
      ck::quantize_activations(1, K, x.data(), K, act);
      const ck::q8_row a = act.row(0);
      // The exact model, from the layout (nibble order of quant/int_formats.hpp).
      std::vector<double> exact(static_cast<std::size_t>(N)), flt(static_cast<std::size_t>(N));
      for (index_t n = 0; n < N; ++n) {
        for (index_t s = 0; s < K / 32; ++s) {
          const B& blk = w[n * (K / G) + s / (G / 32)];
          long sumi = 0;
          for (int j = 0; j < 32; ++j) {
            const std::uint8_t byte = blk.qs[16 * (s % (G / 32)) + j % 16];
            const int q = j < 16 ? byte & 15 : byte >> 4;
            sumi += q * a.qs[32 * s + j];
          }
          exact[n] += double(static_cast<float>(blk.d)) * a.d[s] * double(sumi) +
                      double(static_cast<float>(blk.m)) * a.s[s];
        }
        for (index_t k = 0; k < K; ++k) flt[n] += double(wd[n * K + k]) * x[k];
      }
      // The same rows as Q4_1 blocks repeating each group's (d, m).
      std::vector<tfm::block_q4_1> q41(static_cast<std::size_t>(N * K / 32));
      for (index_t i = 0; i < N * K / 32; ++i) {
        const B& blk = w[i / (G / 32)];
        q41[i].d = blk.d;
        q41[i].m = blk.m;
        std::memcpy(q41[i].qs, blk.qs + 16 * (i % (G / 32)), 16);
      }
      std::vector<float> y1(N), y2(N), y3(N), yrt(N), ys(N), y41(N);
      {
        tfm::thread_scope t(1);
        ck::gemv_i4g(N, K, w.data(), K / G, a, y1.data());
        ck::gemv_q(N, K, q41.data(), K / 32, a, y41.data());
      }
      {
        tfm::thread_scope t(2);
        ck::gemv_i4g(N, K, w.data(), K / G, a, y2.data());
        ck::gemv_ext(tfm::block_traits<B>::type, N, K, x.data(), &a, bytes.data(),
                     static_cast<std::size_t>(K / G) * sizeof(B), yrt.data());
      }
      {
        tfm::thread_scope t(3);
        ck::gemv_i4g(N, K, w.data(), K / G, a, y3.data());
      }
      for (index_t n = 0; n < N; ++n) ys[n] = ck::vec_dot_i4g_scalar(K, w.data() + n * (K / G), a);
      CHECK(y1 == ys);
      CHECK(y1 == y2);
      CHECK(y1 == y3);
      CHECK(y1 == yrt);
      CHECK(y1 == y41);
      worst_exact = std::max(worst_exact, nmse(y1, exact));
      CHECK(nmse(y1, exact) <= 1e-10);
      if (N >= 17) {
        worst_float = std::max(worst_float, nmse(y1, flt));
        CHECK(nmse(y1, flt) <= 5e-4);
      }
    }
  MESSAGE("INT4-g" << G << " GEMV worst NMSE: vs exact model " << worst_exact
                   << ", vs float product " << worst_float);
}

TEST_CASE("gemv_ext: INT4-g64 and INT4-g128 against the exact model, the float product and Q4_1") {
  check_i4<tfm::block_i4_g64>();
  check_i4<tfm::block_i4_g128>();
}

template <class B>
void check_dq_gemm() {
  constexpr index_t QK = static_cast<index_t>(tfm::block_traits<B>::block_elements);
  auto g = tfm_test::rng(40 + QK);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (index_t M : {1, 2, 13, 64})
    for (index_t N : {1, 7, 33})
      for (index_t K : {QK, 3 * QK, 9 * QK}) {
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        std::vector<float> a(static_cast<std::size_t>(M * K));
        for (auto& v : a) v = nd(g);
        const auto wf = random_w(g, N, K);
        const auto bytes = tfm::quantize(tfm::block_traits<B>::type, wf, N, K, "W");
        const auto w = as_blocks<B>(bytes);
        const auto wd = tfm::dequantize(tfm::block_traits<B>::type, bytes);
        std::vector<float> c(M * N), c2(M * N), c3(M * N), cf(M * N);
        {
          tfm::thread_scope t(1);
          ck::gemm_dq_bt(tfm::block_traits<B>::type, M, N, K, a.data(), K, bytes.data(),
                         static_cast<std::size_t>(K / QK) * sizeof(B), c.data(), N);
          ck::gemm<float>(false, true, M, N, K, 1.0f, a.data(), K, wd.data(), K, 0.0f, cf.data(),
                          N);
        }
        {
          tfm::thread_scope t(2);
          ck::gemm_dq_bt(M, N, K, a.data(), K, w.data(), K / QK, c2.data(), N);
        }
        {
          tfm::thread_scope t(3);
          ck::gemm_dq_bt(M, N, K, a.data(), K, w.data(), K / QK, c3.data(), N);
        }
        CHECK(c == c2);
        CHECK(c == c3);
        if (M > 1 && N > 1 && M * N * K > 16 * 16 * 16) CHECK(c == cf);
        std::vector<double> want(cf.begin(), cf.end());
        CHECK(nmse(c, want) <= 1e-10);
      }
}

TEST_CASE("gemm_dq_bt (unchanged) runs the typeformer layouts: bitwise the float GEMM") {
  check_dq_gemm<tfm::block_nf4>();
  check_dq_gemm<tfm::block_i4_g64>();
  check_dq_gemm<tfm::block_i4_g128>();
}

TEST_CASE("gemv_ext: errors") {
  std::vector<float> x(100);
  std::vector<std::byte> w(34 * 4);
  CHECK_THROWS_AS(
      ck::gemv_ext(tfm::ggml_type::q4_0, 1, 64, x.data(), nullptr, w.data(), 18, x.data()),
      tfm::unsupported_error);
  CHECK_THROWS_AS(
      ck::gemv_ext(tfm::ggml_type::tfm_nf4, 1, 96, x.data(), nullptr, w.data(), 68, x.data()),
      tfm::shape_error);
  CHECK_THROWS_AS(
      ck::gemv_ext(tfm::ggml_type::tfm_i4_g64, 1, 64, x.data(), nullptr, w.data(), 36, x.data()),
      tfm::value_error);
}
