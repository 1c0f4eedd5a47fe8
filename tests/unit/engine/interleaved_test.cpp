// cpu_kernels::gemm_interleaved (backend/cpu/quant/gemm_interleaved.hpp): the SIMD path equals the
// scalar path bit for bit, a row's result does not depend on M or the thread count, and the
// product equals the integer-dot GEMM of gemv_q.hpp (the same block products, another float
// order) to rounding; N not a multiple of 16, accumulate, bad arguments.
#include "typeformer/backend/cpu/quant/gemm_interleaved.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace tfm;

namespace {

template <class B>
void check_type(ggml_type t, index_t N, index_t K, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> w(static_cast<std::size_t>(N * K));
  for (float& v : w) v = nd(rng);
  w[3] = 40.0f;  // an outlier block
  std::vector<B> wq(static_cast<std::size_t>(N * K / 32));
  for (std::size_t b = 0; b < wq.size(); ++b) quantize_block(w.data() + b * 32, wq[b]);
  const auto iw =
      cpu_kernels::interleave_weight(t, reinterpret_cast<const std::byte*>(wq.data()),
                                     static_cast<std::size_t>(K / 32) * sizeof(B), N, K);
  for (index_t M : {1, 3, 4, 9, 33}) {
    CAPTURE(M);
    std::vector<float> x(static_cast<std::size_t>(M * K));
    for (float& v : x) v = nd(rng);
    cpu_kernels::q8_activations a, a2;
    cpu_kernels::quantize_activations(M, K, x.data(), K, a);
    const std::size_t size = static_cast<std::size_t>(M * N);
    std::vector<float> simd(size), scalar(size), dots(size), one(static_cast<std::size_t>(N));
    cpu_kernels::gemm_interleaved(iw, M, a, simd.data(), N, false);
    cpu_kernels::gemm_interleaved(iw, M, a, scalar.data(), N, false, true);
    CHECK(std::memcmp(simd.data(), scalar.data(), size * sizeof(float)) == 0);
    cpu_kernels::gemm_q_bt(M, N, K, x.data(), K, wq.data(), K / 32, dots.data(), N, a2);
    double err = 0, ref = 0;
    for (std::size_t i = 0; i < size; ++i) {
      err = std::max(err, std::abs(static_cast<double>(simd[i]) - dots[i]));
      ref = std::max(ref, std::abs(static_cast<double>(dots[i])));
    }
    CHECK(err / ref < 1e-5);
    // The last row alone, at 1 thread: the same bits.
    cpu_kernels::q8_activations a1;
    cpu_kernels::quantize_activations(1, K, x.data() + (M - 1) * K, K, a1);
    {
      thread_scope one_thread(1);
      cpu_kernels::gemm_interleaved(iw, 1, a1, one.data(), N, false);
    }
    CHECK(std::memcmp(one.data(), simd.data() + (M - 1) * N, static_cast<std::size_t>(N) * 4) == 0);
    // accumulate adds onto C.
    std::vector<float> acc(size, 1.5f);
    cpu_kernels::gemm_interleaved(iw, M, a, acc.data(), N, true);
    CHECK(acc[size - 1] == simd[size - 1] + 1.5f);
  }
}

}  // namespace

TEST_CASE(
    "gemm_interleaved: SIMD == scalar bitwise, rows independent, == integer dots to rounding") {
  MESSAGE("vnni512 kernel: " << TFM_INTERLEAVED_VNNI512);
  check_type<block_q4_0>(ggml_type::q4_0, 37, 96, 1);
  check_type<block_q4_1>(ggml_type::q4_1, 48, 64, 2);
  check_type<block_q8_0>(ggml_type::q8_0, 21, 160, 3);
}

TEST_CASE("gemm_interleaved: bad arguments are refused") {
  std::vector<block_q4_K> k(8);
  CHECK_THROWS_AS(
      cpu_kernels::interleave_weight(ggml_type::q4_K, reinterpret_cast<const std::byte*>(k.data()),
                                     sizeof(block_q4_K), 8, 256),
      unsupported_error);
  std::vector<block_q4_0> w(4);
  CHECK_THROWS_AS(
      cpu_kernels::interleave_weight(ggml_type::q4_0, reinterpret_cast<const std::byte*>(w.data()),
                                     sizeof(block_q4_0), 4, 48),
      shape_error);
  const auto iw = cpu_kernels::interleave_weight(
      ggml_type::q4_0, reinterpret_cast<const std::byte*>(w.data()), sizeof(block_q4_0), 4, 32);
  cpu_kernels::q8_activations a;
  std::vector<float> x(64, 1.0f), y(8);
  cpu_kernels::quantize_activations(1, 64, x.data(), 64, a);
  CHECK_THROWS_AS(cpu_kernels::gemm_interleaved(iw, 1, a, y.data(), 4, false), shape_error);
}
