// The K-quant integer-dot kernels of backend/cpu/quant/gemv_kq.hpp (Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K weights times Q8_K activations) against:
//   - an f64 oracle written here from the block layouts (ggml-common.h, unpacked element by
//     element independently of the kernel: sum_e w_e * a_e with w_e = dW * s * q - dminW * m and
//     a_e = dA * q_e, both exact in f64), NMSE <= 1e-10 and an elementwise bound from the float
//     accumulation;
//   - the product of the dequantized weights (tfm::dequantize) with the float activations in
//     f64: NMSE <= 5e-4 over N >= 17 outputs (TESTING.md's matmul limit), and llama.cpp's
//     test-quantize-fns dot metric |dot_q - dot_f| / n <= 0.02 on its cos data;
//   - every kernel form compiled in (scalar, AVX2, AVX-512 VNNI) bitwise against the scalar one,
//     1/2/3 threads bitwise, GEMM = per-row GEMV bitwise, the run-time-typed entry point;
//   - adversarial blocks: maximal scales and mins, extreme quants, zero blocks (no overflow, no
//     NaN), random bytes with finite f16 scales.
// The Q8_K activation quantizer is checked byte for byte against quantize_block(block_q8_K&)
// (itself checked against llama.cpp in quantize_test.cpp). Random tests print their seed.
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemv_kq.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

std::vector<float> random_matrix(std::mt19937& g, index_t rows, index_t cols, float scale) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(-0.5f, 1.5f);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = (nd(g) + ud(g)) * scale;  // non-zero mean: exercises the mins
  return v;
}

/// A finite, positive or negative f16 of moderate size.
tfm::f16 random_scale(std::mt19937& g, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  return tfm::f16(u(g));
}

/// Blocks of random bytes with finite scales (every quant and sub-scale pattern occurs).
template <class B>
std::vector<B> random_blocks(std::mt19937& g, std::size_t n) {
  std::vector<B> v(n);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : v) {
    auto* p = reinterpret_cast<unsigned char*>(&b);
    for (std::size_t i = 0; i < sizeof(B); ++i) p[i] = static_cast<unsigned char>(byte(g));
    b.d = random_scale(g, -1e-3f, 1e-3f);
    if constexpr (requires { b.dmin; }) b.dmin = random_scale(g, -1e-3f, 1e-3f);
  }
  return v;
}

/// Weight element e of block b in f64, from ggml-common.h's layouts (written here per element).
double weight(const tfm::block_q2_K& b, int e) {
  const int h = e / 128, s = (e / 32) % 4, l = e % 32, i = e / 16;
  const int q = (b.qs[32 * h + l] >> (2 * s)) & 3;
  return double(float(b.d)) * (b.scales[i] & 15) * q - double(float(b.dmin)) * (b.scales[i] >> 4);
}
double weight(const tfm::block_q3_K& b, int e) {
  const int h = e / 128, s = (e / 32) % 4, l = e % 32, i = e / 16;
  // 6-bit scale i: low 4 bits from scales[i % 8] (nibble i / 8), high 2 bits from
  // scales[8 + i % 4] (bits 2 * (i / 4)).
  const int sc = (((b.scales[i % 8] >> (4 * (i / 8))) & 15) |
                  (((b.scales[8 + i % 4] >> (2 * (i / 4))) & 3) << 4)) -
                 32;
  const int q = ((b.qs[32 * h + l] >> (2 * s)) & 3) - (((b.hmask[l] >> (e / 32)) & 1) ? 0 : 4);
  return double(float(b.d)) * sc * q;
}
/// ggml's get_scale_min_k4.
void scale_min(const std::uint8_t* q, int j, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
double weight(const tfm::block_q4_K& b, int e) {
  int sc, m;
  scale_min(b.scales, e / 32, sc, m);
  const int q = (b.qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15;
  return double(float(b.d)) * sc * q - double(float(b.dmin)) * m;
}
double weight(const tfm::block_q5_K& b, int e) {
  int sc, m;
  scale_min(b.scales, e / 32, sc, m);
  const int q = ((b.qs[32 * (e / 64) + e % 32] >> (4 * ((e / 32) % 2))) & 15) |
                (((b.qh[e % 32] >> (e / 32)) & 1) << 4);
  return double(float(b.d)) * sc * q - double(float(b.dmin)) * m;
}
double weight(const tfm::block_q6_K& b, int e) {
  const int h = e / 128, r = e % 128;
  const int lo = (b.ql[64 * h + r % 64] >> (4 * (r / 64))) & 15;
  const int hi = (b.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
  return double(float(b.d)) * b.scales[e / 16] * ((lo | (hi << 4)) - 32);
}

/// The f64 oracle and the sum of |terms| (for the elementwise bound).
template <class B>
double oracle_dot(index_t K, const B* w, const tfm::block_q8_K* a, double* abs_sum = nullptr) {
  double total = 0, mag = 0;
  for (index_t b = 0; b < K / 256; ++b)
    for (int e = 0; e < 256; ++e) {
      const double t = weight(w[b], e) * (double(a[b].d) * a[b].qs[e]);
      total += t;
      mag += std::fabs(t);
    }
  if (abs_sum != nullptr) *abs_sum = mag;
  return total;
}

double nmse(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return den == 0 ? num : num / den;
}

std::string bits_differ(const std::vector<float>& a, const std::vector<float>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i]))
      return "element " + std::to_string(i) + ": " + std::to_string(a[i]) + " vs " +
             std::to_string(b[i]);
  return "";
}

/// Every compiled form of vec_dot_q8k gives the bits of the scalar one.
template <class B>
void check_forms(index_t K, const B* w, const tfm::block_q8_K* a, float want) {
  for (ck::kq_form f : {ck::kq_form::avx2, ck::kq_form::vnni, ck::kq_form::vnni512}) {
    if (!ck::kq_form_available(f)) continue;
    const float got = ck::vec_dot_q8k(f, K, w, a);
    if (std::bit_cast<std::uint32_t>(got) != std::bit_cast<std::uint32_t>(want))
      FAIL_CHECK("form " << int(f) << ": " << got << " vs scalar " << want);
  }
  if (std::bit_cast<std::uint32_t>(ck::vec_dot_q8k(K, w, a)) != std::bit_cast<std::uint32_t>(want))
    FAIL_CHECK("vec_dot_q8k (" << ck::q8k_dot_isa() << ") differs from the scalar form");
}

/// GEMV of N rows of w against x: oracle, scalar form, every form; returns got (f64).
template <class B>
std::vector<double> check_gemv(const std::vector<B>& w, index_t N, index_t K,
                               const std::vector<float>& x, ck::q8k_activations& a) {
  CAPTURE(N);
  CAPTURE(K);
  ck::quantize_activations_q8k(1, K, x.data(), K, a);
  for (index_t b = 0; b < K / 256; ++b) {  // activation quantization = quantize_row_q8_K_ref
    tfm::block_q8_K ref;
    tfm::quantize_block(x.data() + 256 * b, ref);
    REQUIRE(std::memcmp(&ref, a.row(0) + b, sizeof ref) == 0);
  }
  std::vector<float> y(N), ys(N);
  ck::gemv_kq(N, K, w.data(), K / 256, a.row(0), y.data());
  std::vector<double> got(N), want(N);
  for (index_t n = 0; n < N; ++n) {
    const B* row = w.data() + n * (K / 256);
    ys[n] = ck::vec_dot_q8k(ck::kq_form::scalar, K, row, a.row(0));
    check_forms(K, row, a.row(0), ys[n]);
    double mag = 0;
    want[n] = oracle_dot(K, row, a.row(0), &mag);
    got[n] = y[n];
    REQUIRE(std::isfinite(y[n]));
    // binary32 accumulation: the scales' products (2 roundings), the int -> float conversion
    // (1), two FMAs per super-block: well under 16 * 2^-24 of sum |terms| per super-block.
    const double bound = 16 * 0x1p-24 * mag * double(K / 256) + 1e-30;
    if (std::fabs(got[n] - want[n]) > bound)
      FAIL_CHECK("row " << n << ": |" << got[n] << " - " << want[n] << "| > " << bound);
  }
  CHECK_MESSAGE(bits_differ(y, ys) == "", std::string(ck::q8k_dot_isa())
                                              << " vs scalar: " << bits_differ(y, ys));
  CHECK(nmse(got, want) <= 1e-10);
  return got;
}

template <class B>
std::vector<B> quantized_or_random(std::mt19937& g, const std::vector<float>& wf, index_t N,
                                   index_t K) {
  const tfm::ggml_type t = tfm::block_traits<B>::type;
  if (!tfm::quantizable(t)) return random_blocks<B>(g, static_cast<std::size_t>(N * (K / 256)));
  const auto bytes =
      tfm::quantize(t, wf, static_cast<std::size_t>(N), static_cast<std::size_t>(K), "W");
  std::vector<B> out(bytes.size() / sizeof(B));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

template <class B>
void check_type() {
  auto g = tfm_test::rng(0x19E);
  MESSAGE("K-quant kernel: " << std::string(ck::q8k_dot_isa()) << ", type "
                             << tfm::ggml_type_name(tfm::block_traits<B>::type));
  ck::q8k_activations a;
  for (index_t K : {256, 512, 768, 1536, 2304})
    for (index_t N : {1, 3, 7, 17, 33, 65}) {
      // random bytes: every bit pattern of quants and sub-scales
      const auto wr = random_blocks<B>(g, static_cast<std::size_t>(N * (K / 256)));
      check_gemv(wr, N, K, random_matrix(g, 1, K, 2.0f), a);
      // quantized from floats (where quant/quantize.hpp has the format): against the product of
      // the dequantized weights with the float activations
      const auto wf = random_matrix(g, N, K, 0.05f);
      const auto wq = quantized_or_random<B>(g, wf, N, K);
      const auto x = random_matrix(g, 1, K, 2.0f);
      const auto got = check_gemv(wq, N, K, x, a);
      if (N >= 17) {
        const auto wd = tfm::dequantize(tfm::block_traits<B>::type, std::as_bytes(std::span(wq)));
        std::vector<double> exact(N);
        for (index_t n = 0; n < N; ++n)
          for (index_t k = 0; k < K; ++k) exact[n] += double(wd[n * K + k]) * double(x[k]);
        CHECK(nmse(got, exact) <= 5e-4);  // TESTING.md's matmul limit
      }
    }
}

/// Adversarial blocks: every scale, min and quant at its extreme, against activations at +-127
/// and at zero (a zero Q8_K block).
template <class B>
void check_extremes() {
  const index_t K = 512, N = 8;
  std::vector<B> w(static_cast<std::size_t>(N * 2));
  for (std::size_t i = 0; i < w.size(); ++i) {
    auto* p = reinterpret_cast<unsigned char*>(&w[i]);
    const unsigned char fill = i % 4 == 0 ? 0xFF : i % 4 == 1 ? 0x00 : i % 4 == 2 ? 0x80 : 0x7F;
    std::memset(p, fill, sizeof(B));
    w[i].d = tfm::f16(i % 2 ? 65504.0f : -65504.0f);  // the largest finite f16
    if constexpr (requires { w[i].dmin; }) w[i].dmin = tfm::f16(i % 3 ? 65504.0f : -1.0f);
  }
  std::vector<std::vector<float>> xs;
  xs.push_back(std::vector<float>(K, 1.0f));   // all +127
  xs.push_back(std::vector<float>(K, -1.0f));  // all -127
  xs.push_back(std::vector<float>(K, 0.0f));   // zero blocks
  std::vector<float> alt(K);
  for (index_t k = 0; k < K; ++k) alt[k] = k % 2 ? 3.0f : -3.0f;  // alternating extremes
  xs.push_back(alt);
  std::vector<float> half(K, 0.0f);  // one zero block, one full one
  for (index_t k = 256; k < K; ++k) half[k] = -2.0f;
  xs.push_back(half);
  ck::q8k_activations a;
  for (const auto& x : xs) {
    ck::quantize_activations_q8k(1, K, x.data(), K, a);
    std::vector<float> y(N);
    ck::gemv_kq(N, K, w.data(), K / 256, a.row(0), y.data());
    for (index_t n = 0; n < N; ++n) {
      const B* row = w.data() + n * 2;
      const float s = ck::vec_dot_q8k(ck::kq_form::scalar, K, row, a.row(0));
      CHECK(std::bit_cast<std::uint32_t>(s) == std::bit_cast<std::uint32_t>(y[n]));
      check_forms(K, row, a.row(0), s);
      CHECK(!std::isnan(y[n]));
      double mag = 0;
      const double want = oracle_dot(K, row, a.row(0), &mag);
      CHECK(std::fabs(double(y[n]) - want) <= 1e-6 * mag);
    }
  }
}

template <class B>
void check_threads_and_gemm() {
  auto g = tfm_test::rng(0x19E3);
  const index_t N = 1031, K = 1536, M = 5;
  const auto w = random_blocks<B>(g, static_cast<std::size_t>(N * (K / 256)));
  const auto x = random_matrix(g, M, K, 1.0f);
  ck::q8k_activations a;
  ck::quantize_activations_q8k(1, K, x.data(), K, a);
  std::vector<float> y1(N), y2(N), y3(N);
  for (int nt : {1, 2, 3}) {
    tfm::thread_scope ts(nt);
    ck::gemv_kq(N, K, w.data(), K / 256, a.row(0), (nt == 1 ? y1 : nt == 2 ? y2 : y3).data());
  }
  CHECK(bits_differ(y1, y2) == "");
  CHECK(bits_differ(y1, y3) == "");
  // GEMM: every element equals the GEMV of its row, at 1 and 3 threads.
  std::vector<float> c1(M * N), c3(M * N), rows(M * N);
  {
    tfm::thread_scope ts(1);
    ck::gemm_kq_bt(M, N, K, x.data(), K, w.data(), K / 256, c1.data(), N, a);
  }
  {
    tfm::thread_scope ts(3);
    ck::gemm_kq_bt(M, N, K, x.data(), K, w.data(), K / 256, c3.data(), N, a);
  }
  ck::q8k_activations a1;
  for (index_t m = 0; m < M; ++m) {
    ck::quantize_activations_q8k(1, K, x.data() + m * K, K, a1);
    ck::gemv_kq(N, K, w.data(), K / 256, a1.row(0), rows.data() + m * N);
  }
  CHECK(bits_differ(c1, c3) == "");
  CHECK(bits_differ(c1, rows) == "");
  // the run-time-typed entry point, with a padded C and accumulate
  std::vector<float> c4(M * (N + 3), 1.0f);
  ck::gemm_kq_bt(tfm::block_traits<B>::type, M, N, K, x.data(), K,
                 reinterpret_cast<const std::byte*>(w.data()), K / 256 * sizeof(B), c4.data(),
                 N + 3, a, true);
  bool same = true;
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) same = same && c4[m * (N + 3) + n] == 1.0f + c1[m * N + n];
  CHECK(same);
}

}  // namespace

TEST_CASE("quantize_activations_q8k: the bytes of quantize_block(block_q8_K)") {
  auto g = tfm_test::rng(0x98);
  std::vector<std::vector<float>> rows;
  rows.push_back(random_matrix(g, 1, 1024, 3.0f));
  rows.push_back(std::vector<float>(1024, 0.0f));
  std::vector<float> ties(1024, 0.25f);  // +-max ties: the first one sets the sign
  ties[5] = -7.0f;
  ties[9] = 7.0f;
  ties[300] = 7.0f;
  ties[301] = -7.0f;
  rows.push_back(ties);
  std::vector<float> tiny(1024);
  std::uniform_real_distribution<float> u(-1e-30f, 1e-30f);
  for (auto& v : tiny) v = u(g);
  rows.push_back(tiny);
  std::vector<float> halves(1024);  // values that land on .5 after scaling: round to even
  for (int i = 0; i < 1024; ++i) halves[i] = (i % 256 == 0) ? 127.0f : float(i % 255) - 127.5f;
  rows.push_back(halves);
  ck::q8k_activations a;
  for (const auto& x : rows) {
    ck::quantize_activations_q8k(1, 1024, x.data(), 1024, a);
    for (int b = 0; b < 4; ++b) {
      tfm::block_q8_K ref;
      tfm::quantize_block(x.data() + 256 * b, ref);
      CHECK(std::memcmp(&ref, a.row(0) + b, sizeof ref) == 0);
    }
  }
  // several rows with a stride, split over threads
  const index_t M = 70, K = 1024;
  const auto x = random_matrix(g, M, K + 8, 1.0f);
  tfm::thread_scope ts(2);
  ck::quantize_activations_q8k(M, K, x.data(), K + 8, a);
  bool same = true;
  for (index_t m = 0; m < M; ++m)
    for (int b = 0; b < 4; ++b) {
      tfm::block_q8_K ref;
      tfm::quantize_block(x.data() + m * (K + 8) + 256 * b, ref);
      same = same && std::memcmp(&ref, a.row(m) + b, sizeof ref) == 0;
    }
  CHECK(same);
}

TEST_CASE_TEMPLATE("gemv_kq: oracle, dequantized product, every kernel form", B, tfm::block_q2_K,
                   tfm::block_q3_K, tfm::block_q4_K, tfm::block_q5_K, tfm::block_q6_K) {
  check_type<B>();
}

TEST_CASE_TEMPLATE("gemv_kq: adversarial blocks (extreme scales, zero blocks)", B, tfm::block_q2_K,
                   tfm::block_q3_K, tfm::block_q4_K, tfm::block_q5_K, tfm::block_q6_K) {
  check_extremes<B>();
}

TEST_CASE_TEMPLATE("gemv_kq / gemm_kq_bt: 1/2/3 threads bitwise, GEMM = GEMV rows", B,
                   tfm::block_q2_K, tfm::block_q3_K, tfm::block_q4_K, tfm::block_q5_K,
                   tfm::block_q6_K) {
  check_threads_and_gemm<B>();
}

TEST_CASE("gemv_kq: llama.cpp test-quantize-fns dot metric on its cos data") {
  // test-quantize-fns: x = 0.1 + 2 cos(i + offset); error = |dot_q - dot_f| / n <= 0.02.
  const index_t K = 4096;
  std::vector<float> w(K), x(K);
  for (index_t i = 0; i < K; ++i) {
    w[i] = 0.1f + 2.0f * std::cos(static_cast<float>(i));
    x[i] = 0.1f + 2.0f * std::cos(static_cast<float>(i) + 1.0f);
  }
  double ref = 0;
  for (index_t i = 0; i < K; ++i) ref += double(w[i]) * x[i];
  ck::q8k_activations a;
  ck::quantize_activations_q8k(1, K, x.data(), K, a);
  auto metric = [&]<class B>(B*) {
    const tfm::ggml_type t = tfm::block_traits<B>::type;
    if (!tfm::quantizable(t)) {
      MESSAGE(tfm::ggml_type_name(t) << ": no quantizer, skipped");
      return;
    }
    const auto bytes = tfm::quantize(t, w, 1, static_cast<std::size_t>(K), "W");
    std::vector<B> wq(bytes.size() / sizeof(B));
    std::memcpy(wq.data(), bytes.data(), bytes.size());
    const double err = std::fabs(ck::vec_dot_q8k(K, wq.data(), a.row(0)) - ref) / double(K);
    MESSAGE(tfm::ggml_type_name(t) << ": |dot_q - dot_f| / n = " << err);
    CHECK(err <= 0.02);
  };
  metric(static_cast<tfm::block_q2_K*>(nullptr));
  metric(static_cast<tfm::block_q3_K*>(nullptr));
  metric(static_cast<tfm::block_q4_K*>(nullptr));
  metric(static_cast<tfm::block_q5_K*>(nullptr));
  metric(static_cast<tfm::block_q6_K*>(nullptr));
}

TEST_CASE("gemv_kq: shapes and types are checked") {
  std::vector<tfm::block_q4_K> w(4);
  std::vector<float> x(512, 1.0f), y(2);
  ck::q8k_activations a;
  CHECK_THROWS_AS(ck::quantize_activations_q8k(1, 300, x.data(), 300, a), tfm::shape_error);
  CHECK_THROWS_AS(ck::gemm_kq_bt(1, 2, 288, x.data(), 288, w.data(), 2, y.data(), 2, a),
                  tfm::shape_error);
  CHECK_THROWS_AS(ck::gemm_kq_bt(-1, 2, 256, x.data(), 256, w.data(), 1, y.data(), 2, a),
                  tfm::value_error);
  CHECK_THROWS_AS(ck::gemm_kq_bt(tfm::ggml_type::q4_0, 1, 2, 256, x.data(), 256,
                                 reinterpret_cast<const std::byte*>(w.data()), 144, y.data(), 2, a),
                  tfm::unsupported_error);
  CHECK_THROWS_AS(ck::gemm_kq_bt(tfm::ggml_type::q4_K, 1, 2, 512, x.data(), 512,
                                 reinterpret_cast<const std::byte*>(w.data()), 144, y.data(), 2, a),
                  tfm::shape_error);
  // N = 0 and M = 0 are no-ops
  ck::gemm_kq_bt(0, 2, 256, x.data(), 256, w.data(), 1, y.data(), 2, a);
  ck::quantize_activations_q8k(1, 256, x.data(), 256, a);
  ck::gemv_kq(0, 256, w.data(), 1, a.row(0), y.data());
}
