// The integer-dot kernels of backend/cpu/quant/gemv_q.hpp (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights
// times 8-bit activations) against:
//   - an f64 oracle written here from the block layouts (independent unpacking; the same
//     mathematical model: per block dw * dx * sum(w_j q_j) (+ m * s)), NMSE <= 1e-10;
//   - the exact product of the dequantized weights (tfm::dequantize, bitwise gguf-py) with the
//     float activations in f64: an elementwise bound from the activation rounding, NMSE <= 5e-4
//     over N >= 17 outputs (TESTING.md's matmul limit), plus llama.cpp's
//     test-quantize-fns dot metric |dot_q - dot_f| / n <= 0.02 on its cos data;
//   - the scalar kernel (bitwise: every ISA path follows the same order), 1/2/3 threads
//     (bitwise), GEMM = per-row GEMV (bitwise), the run-time-typed entry point (bitwise);
//   - (Linux) a matrix whose last row ends at an inaccessible page, with padded rows and an
//     activation buffer reused from a longer row holding infinities: the kernels read nothing
//     past the matrix and no stale activation (bitwise equal to the scalar kernel).
// The activation quantizer is checked against quantize_block(block_q8_1) (itself checked byte
// for byte against llama.cpp in quantize_test.cpp).
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

template <class B>
std::vector<B> quantize_matrix(const std::vector<float>& w, index_t N, index_t K) {
  const auto bytes = tfm::quantize(tfm::block_traits<B>::type, w, static_cast<std::size_t>(N),
                                   static_cast<std::size_t>(K), "W");
  std::vector<B> out(bytes.size() / sizeof(B));
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<float> random_matrix(std::mt19937& g, index_t rows, index_t cols, float scale) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(-0.5f, 1.5f);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = (nd(g) + ud(g)) * scale;  // non-zero mean: exercises Q4_1/Q5_1's m * s
  return v;
}

/// Integer weights and (d, m) of block b, unpacked here from the documented layout.
template <class B>
void unpack(const B& blk, int* q, double& d, double& m) {
  d = static_cast<float>(blk.d);
  m = 0;
  if constexpr (std::is_same_v<B, tfm::block_q8_0>) {
    for (int j = 0; j < 32; ++j) q[j] = blk.qs[j];
    return;
  } else {
    std::uint32_t qh = 0;
    int off = 0;
    if constexpr (std::is_same_v<B, tfm::block_q5_0> || std::is_same_v<B, tfm::block_q5_1>)
      qh = std::uint32_t(blk.qh[0]) | std::uint32_t(blk.qh[1]) << 8 |
           std::uint32_t(blk.qh[2]) << 16 | std::uint32_t(blk.qh[3]) << 24;
    if constexpr (std::is_same_v<B, tfm::block_q4_0>) off = 8;
    if constexpr (std::is_same_v<B, tfm::block_q5_0>) off = 16;
    if constexpr (std::is_same_v<B, tfm::block_q4_1> || std::is_same_v<B, tfm::block_q5_1>)
      m = static_cast<float>(blk.m);
    for (int j = 0; j < 32; ++j) {
      const int nib = j < 16 ? blk.qs[j] & 15 : blk.qs[j - 16] >> 4;
      q[j] = (nib | int((qh >> j) & 1u) << 4) - off;
    }
  }
}

template <class B>
double oracle_dot(index_t K, const B* w, const ck::q8_row& a) {
  double total = 0;
  for (index_t b = 0; b < K / 32; ++b) {
    int q[32];
    double d, m;
    unpack(w[b], q, d, m);
    long long sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += static_cast<long long>(q[j]) * a.qs[32 * b + j];
    total += d * double(a.d[b]) * double(sumi) + m * double(a.s[b]);
  }
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

template <class B>
void check_shape(std::mt19937& g, index_t N, index_t K) {
  CAPTURE(N);
  CAPTURE(K);
  const auto wf = random_matrix(g, N, K, 0.05f);
  const auto w = quantize_matrix<B>(wf, N, K);
  const auto x = random_matrix(g, 1, K, 2.0f);
  ck::q8_activations a;
  ck::quantize_activations(1, K, x.data(), K, a);
  // activation quantization = quantize_row_q8_1_ref
  for (index_t b = 0; b < K / 32; ++b) {
    tfm::block_q8_1 ref;
    tfm::quantize_block(x.data() + 32 * b, ref);
    REQUIRE(a.d[b] == static_cast<float>(ref.d));
    REQUIRE(a.s[b] == static_cast<float>(ref.s));
    int s = 0;
    for (int j = 0; j < 32; ++j) {
      REQUIRE(a.qs[32 * b + j] == ref.qs[j]);
      s += ref.qs[j];
    }
    REQUIRE(a.sum[b] == s);
  }
  std::vector<float> y(N), ys(N);
  ck::gemv_q(N, K, w.data(), K / 32, a.row(0), y.data());
  std::vector<double> got(N), want(N), exact(N), yd(N);
  const auto wd = tfm::dequantize(tfm::block_traits<B>::type, std::as_bytes(std::span(w)));
  for (index_t n = 0; n < N; ++n) {
    ys[n] = ck::vec_dot_q8_scalar(K, w.data() + n * (K / 32), a.row(0));
    want[n] = oracle_dot(K, w.data() + n * (K / 32), a.row(0));
    double e = 0, abs_sum = 0;
    for (index_t k = 0; k < K; ++k) {
      e += double(wd[n * K + k]) * double(x[k]);
      abs_sum += std::fabs(double(wd[n * K + k]) * double(x[k]));
    }
    exact[n] = e;
    got[n] = y[n];
    // Elementwise bound of |got - exact| from the activation quantization alone: each x_k is
    // off by at most dx (1/2 + 127 * 2^-11) (rounding, then the f16 rounding of dx); the
    // Q4_1/Q5_1 term m * s is off by at most |m| 2^-10 (|s| + 32 * 127 dx); plus float rounding.
    double bound = 1e-5 * abs_sum;
    for (index_t b = 0; b < K / 32; ++b) {
      int q[32];
      double d, m;
      unpack(w[n * (K / 32) + b], q, d, m);
      const double dx = a.d[b] * (1 + 0x1p-10);
      double wsum = 0;
      for (int j = 0; j < 32; ++j) wsum += std::fabs(d * q[j]) + 2 * std::fabs(m);
      bound += wsum * dx * (0.5 + 127 * 0x1p-11) +
               std::fabs(m) * 0x1p-10 * (std::fabs(a.s[b]) + 32 * 127 * dx);
    }
    if (std::fabs(got[n] - exact[n]) > bound)
      FAIL_CHECK("row " << n << ": |" << got[n] << " - " << exact[n] << "| > " << bound);
  }
  CHECK_MESSAGE(bits_differ(y, ys) == "", std::string(ck::q8_dot_isa())
                                              << " vs scalar: " << bits_differ(y, ys));
  CHECK(nmse(got, want) <= 1e-10);
  if (N >= 17) CHECK(nmse(got, exact) <= 5e-4);  // TESTING.md's matmul limit (not for 1 value)
}

template <class B>
void check_type() {
  auto g = tfm_test::rng(0x19);
  MESSAGE("kernel ISA: " << std::string(ck::q8_dot_isa()));
  for (index_t K : {32, 64, 96, 128, 160, 192, 224, 256, 288, 448, 544, 800, 1536})
    for (index_t N : {1, 3, 7, 17, 33, 127}) check_shape<B>(g, N, K);
}

template <class B>
void check_threads_and_gemm() {
  auto g = tfm_test::rng(0x1919);
  const index_t N = 1031, K = 1024, M = 5;
  const auto wf = random_matrix(g, N, K, 0.05f);
  const auto w = quantize_matrix<B>(wf, N, K);
  const auto x = random_matrix(g, M, K, 1.0f);
  ck::q8_activations a;
  std::vector<float> y1(N), y2(N), y3(N);
  {
    tfm::thread_scope ts(1);
    ck::gemv_q(N, K, w.data(), K / 32, x.data(), y1.data(), a);
  }
  {
    tfm::thread_scope ts(2);
    ck::gemv_q(N, K, w.data(), K / 32, x.data(), y2.data(), a);
  }
  {
    tfm::thread_scope ts(3);
    ck::gemv_q(N, K, w.data(), K / 32, x.data(), y3.data(), a);
  }
  CHECK(bits_differ(y1, y2) == "");
  CHECK(bits_differ(y1, y3) == "");
  // GEMM: every element equals the GEMV of its row, at 1 and 3 threads; accumulate adds.
  std::vector<float> c1(M * N), c3(M * N), rows(M * N);
  {
    tfm::thread_scope ts(1);
    ck::gemm_q_bt(M, N, K, x.data(), K, w.data(), K / 32, c1.data(), N, a);
  }
  {
    tfm::thread_scope ts(3);
    ck::gemm_q_bt(M, N, K, x.data(), K, w.data(), K / 32, c3.data(), N, a);
  }
  for (index_t m = 0; m < M; ++m)
    ck::gemv_q(N, K, w.data(), K / 32, x.data() + m * K, rows.data() + m * N, a);
  CHECK(bits_differ(c1, c3) == "");
  CHECK(bits_differ(c1, rows) == "");
  // the run-time-typed entry point, with a padded C and accumulate
  std::vector<float> c4(M * (N + 3), 1.0f);
  ck::gemm_q_bt(tfm::block_traits<B>::type, M, N, K, x.data(), K,
                reinterpret_cast<const std::byte*>(w.data()), K / 32 * sizeof(B), c4.data(), N + 3,
                a, true);
  bool same = true;
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) same = same && c4[m * (N + 3) + n] == 1.0f + c1[m * N + n];
  CHECK(same);
}

}  // namespace

TEST_CASE_TEMPLATE("gemv_q: oracle, dequantized product, scalar kernel", B, tfm::block_q4_0,
                   tfm::block_q4_1, tfm::block_q5_0, tfm::block_q5_1, tfm::block_q8_0) {
  check_type<B>();
}

TEST_CASE_TEMPLATE("gemv_q / gemm_q_bt: 1/2/3 threads bitwise, GEMM = GEMV rows", B,
                   tfm::block_q4_0, tfm::block_q4_1, tfm::block_q5_0, tfm::block_q5_1,
                   tfm::block_q8_0) {
  check_threads_and_gemm<B>();
}

namespace {

#if defined(__linux__)
/// gemv_q on N rows of K / 32 blocks (row stride ldw >= K / 32 blocks) placed so that the
/// last row's last byte is followed by a PROT_NONE page, against the scalar kernel.
template <class B>
void check_guard_page(std::mt19937& g, index_t N, index_t K, index_t ldw) {
  CAPTURE(N);
  CAPTURE(K);
  CAPTURE(ldw);
  const index_t nb = K / 32;
  const auto wf = random_matrix(g, N, ldw * 32, 0.05f);
  const auto w = quantize_matrix<B>(wf, N, ldw * 32);
  const std::size_t bytes = ((N - 1) * ldw + nb) * sizeof(B);
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t pages = (bytes + page - 1) / page + 1;
  void* mem =
      mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(mem != MAP_FAILED);
  auto* base = static_cast<std::byte*>(mem);
  REQUIRE(mprotect(base + (pages - 1) * page, page, PROT_NONE) == 0);
  std::byte* start = base + (pages - 1) * page - bytes;  // 2-aligned: block sizes are even
  std::memcpy(start, w.data(), bytes);
  const B* wg = reinterpret_cast<const B*>(start);
  // an activation buffer used before for a longer row with an infinite scale
  ck::q8_activations a;
  std::vector<float> big(static_cast<std::size_t>(K + 256), 1e38f);
  for (index_t k = 0; k < K + 256; k += 3) big[k] = -1e38f;
  big[K + 40] = INFINITY;
  ck::quantize_activations(1, K + 256, big.data(), K + 256, a);
  const auto x = random_matrix(g, 1, K, 1.0f);
  ck::quantize_activations(1, K, x.data(), K, a);
  for (int nt : {1, 2}) {
    tfm::thread_scope ts(nt);
    std::vector<float> y(N), ys(N);
    ck::gemv_q(N, K, wg, ldw, a.row(0), y.data());
    for (index_t n = 0; n < N; ++n) ys[n] = ck::vec_dot_q8_scalar(K, wg + n * ldw, a.row(0));
    CHECK_MESSAGE(bits_differ(y, ys) == "", std::string(ck::q8_dot_isa())
                                                << ", " << nt
                                                << " threads vs scalar: " << bits_differ(y, ys));
  }
  munmap(mem, pages * page);
}
#endif

}  // namespace

TEST_CASE_TEMPLATE("gemv_q: reads stay inside the matrix, stale activations unused", B,
                   tfm::block_q4_0, tfm::block_q4_1, tfm::block_q5_0, tfm::block_q5_1,
                   tfm::block_q8_0) {
#if defined(__linux__)
  auto g = tfm_test::rng(0x1917);
  for (index_t K : {32, 64, 96, 128, 160, 224, 256, 288, 576, 608})
    for (index_t N : {1, 2, 3, 8, 9})
      for (index_t pad : {0, 1, 5}) check_guard_page<B>(g, N, K, K / 32 + pad);
#else
  MESSAGE("not Linux: no guard-page check");
#endif
}

TEST_CASE("gemv_q: llama.cpp test-quantize-fns dot metric on its cos data") {
  // test-quantize-fns: x = 0.1 + 2 cos(i + offset); error = |dot_q - dot_f| / n <= 0.02.
  const index_t K = 4096;
  std::vector<float> w(K), x(K);
  for (index_t i = 0; i < K; ++i) {
    w[i] = 0.1f + 2.0f * std::cos(static_cast<float>(i));
    x[i] = 0.1f + 2.0f * std::cos(static_cast<float>(i) + 1.0f);
  }
  double ref = 0;
  for (index_t i = 0; i < K; ++i) ref += double(w[i]) * x[i];
  ck::q8_activations a;
  ck::quantize_activations(1, K, x.data(), K, a);
  auto metric = [&]<class B>(B*) {
    const auto wq = quantize_matrix<B>(w, 1, K);
    const double err = std::fabs(ck::vec_dot_q8(K, wq.data(), a.row(0)) - ref) / double(K);
    MESSAGE(tfm::ggml_type_name(tfm::block_traits<B>::type) << ": |dot_q - dot_f| / n = " << err);
    CHECK(err <= 0.02);
  };
  metric(static_cast<tfm::block_q4_0*>(nullptr));
  metric(static_cast<tfm::block_q4_1*>(nullptr));
  metric(static_cast<tfm::block_q5_0*>(nullptr));
  metric(static_cast<tfm::block_q5_1*>(nullptr));
  metric(static_cast<tfm::block_q8_0*>(nullptr));
}

TEST_CASE("gemv_q: shapes and types are checked") {
  std::vector<tfm::block_q4_0> w(4);
  std::vector<float> x(48, 1.0f), y(2);
  ck::q8_activations a;
  CHECK_THROWS_AS(ck::gemv_q(2, 48, w.data(), 2, x.data(), y.data(), a), tfm::shape_error);
  CHECK_THROWS_AS(ck::quantize_activations(1, 33, x.data(), 33, a), tfm::shape_error);
  CHECK_THROWS_AS(ck::gemm_q_bt(-1, 2, 32, x.data(), 32, w.data(), 1, y.data(), 2, a),
                  tfm::value_error);
  CHECK_THROWS_AS(ck::gemm_q_bt(tfm::ggml_type::q4_K, 1, 2, 256, x.data(), 256,
                                reinterpret_cast<const std::byte*>(w.data()), 144, y.data(), 2, a),
                  tfm::unsupported_error);
  CHECK_THROWS_AS(ck::gemm_q_bt(tfm::ggml_type::q4_0, 1, 2, 64, x.data(), 64,
                                reinterpret_cast<const std::byte*>(w.data()), 20, y.data(), 2, a),
                  tfm::shape_error);
  // N = 0 and M = 0 are no-ops
  ck::gemm_q_bt(0, 2, 32, x.data(), 32, w.data(), 1, y.data(), 2, a);
  ck::gemv_q(0, 32, w.data(), 1, x.data(), y.data(), a);
}
