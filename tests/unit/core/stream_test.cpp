// Streamed elementwise outputs (backend/cpu/stream.hpp: non-temporal stores for float and double
// outputs of at least stream_store_bytes()): evaluate_contiguous and evaluate give the same bits
// with streaming forced on (threshold 1 byte) and off (0), for destinations at and off a batch
// boundary, spans around the SIMD width and above the parallel threshold, strided rows with
// their gaps untouched, in place, and 1 or 2 threads.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/stream.hpp"
#include "typeformer/typeformer.hpp"

using tfm::index_t;

namespace {

/// Restores the default threshold when a test case ends.
struct threshold_guard {
  unsigned long long saved = tfm::cpu_kernels::stream_store_bytes();
  ~threshold_guard() { tfm::cpu_kernels::set_stream_store_bytes(saved); }
};

template <class T>
using flat = tfm::tensor_view<const T, tfm::dyn_shape<1>>;

template <class T>
bool same_bits(const T* a, const T* b, index_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(T)) == 0;
}

/// A 64-byte aligned buffer of `n + 64` elements: the sentinel -7 everywhere, then
/// y[off, off + n) = tanh(a) * b + 0.5 (or, in place, y = y * a + b over the same stretch).
template <class T>
tfm::tensor<T, tfm::dyn_shape<1>> flat_output(const std::vector<T>& a, const std::vector<T>& b,
                                              index_t off, bool stream, int threads,
                                              bool in_place) {
  const index_t n = static_cast<index_t>(a.size());
  tfm::tensor<T, tfm::dyn_shape<1>> buf(tfm::dyn_shape<1>(n + 64));
  for (index_t i = 0; i < buf.size(); ++i) buf.data()[i] = T(-7);
  tfm::cpu_kernels::set_stream_store_bytes(stream ? 1 : 0);
  const tfm::thread_scope scope(threads);
  T* y = buf.data() + off;
  const flat<T> va(a.data(), tfm::dyn_shape<1>(n)), vb(b.data(), tfm::dyn_shape<1>(n));
  if (in_place) {
    for (index_t i = 0; i < n; ++i) y[i] = a[static_cast<std::size_t>(i)] + T(1);
    const flat<T> vy(y, tfm::dyn_shape<1>(n));
    tfm::evaluate_contiguous(y, n, vy * va + vb);
  } else {
    tfm::evaluate_contiguous(y, n, tfm::tanh(va) * vb + 0.5);
  }
  return buf;
}

}  // namespace

TEST_CASE_TEMPLATE("evaluate_contiguous: streamed and ordinary stores give the same bits", T, float,
                   double) {
  threshold_guard guard;
  const std::uint64_t seed = std::random_device{}();
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(-3.0, 3.0);
  for (const index_t n : {index_t(1), index_t(15), index_t(17), index_t(1000), index_t(70001)}) {
    std::vector<T> a(static_cast<std::size_t>(n)), b(a.size());
    for (auto& v : a) v = static_cast<T>(d(rng));
    for (auto& v : b) v = static_cast<T>(d(rng));
    for (const index_t off : {index_t(0), index_t(1), index_t(16), index_t(3)})
      for (const bool in_place : {false, true}) {
        const auto want = flat_output(a, b, off, false, 1, in_place);
        for (const int threads : {1, 2}) {
          const auto got = flat_output(a, b, off, true, threads, in_place);
          INFO("n=" << n << " offset=" << off << " threads=" << threads
                    << " in_place=" << in_place);
          CHECK(same_bits(want.data(), got.data(), want.size()));
        }
      }
  }
}

TEST_CASE_TEMPLATE("evaluate into strided rows: streamed and ordinary stores give the same bits", T,
                   float, double) {
  // Rows of 150 of a 37 x 200 parent: contiguous rows with gaps, starting at and off a batch
  // boundary; a*b + bias (broadcast along rows) + exp(a). The gaps keep their sentinel.
  threshold_guard guard;
  const index_t R = 37, C = 150, W = 200;
  const auto a = tfm::rand_uniform<T>(tfm::dyn_shape<2>(R, C), 11, T(-2), T(2));
  const auto b = tfm::rand_uniform<T>(tfm::dyn_shape<2>(R, C), 12, T(-2), T(2));
  const auto bias = tfm::rand_uniform<T>(tfm::dyn_shape<1>(C), 13, T(-1), T(1));
  for (const index_t off : {index_t(0), index_t(3), index_t(16), index_t(50)}) {
    std::vector<std::vector<T>> outs;
    for (const int mode : {0, 1, 2}) {  // ordinary; streamed on 1 thread; streamed on 2
      tfm::cpu_kernels::set_stream_store_bytes(mode == 0 ? 0 : 1);
      const tfm::thread_scope scope(mode == 2 ? 2 : 1);
      tfm::tensor<T, tfm::dyn_shape<2>> parent(tfm::dyn_shape<2>(R, W));
      for (index_t i = 0; i < parent.size(); ++i) parent.data()[i] = T(-7);
      auto dst = tfm::slice<1>(parent, off, off + C);
      dst = a * b + bias + tfm::exp(a);
      outs.emplace_back(parent.data(), parent.data() + parent.size());
    }
    INFO("column offset " << off);
    CHECK(outs[0] == outs[1]);
    CHECK(outs[0] == outs[2]);
    std::size_t gaps_changed = 0;
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < W; ++c)
        if ((c < off || c >= off + C) && outs[1][static_cast<std::size_t>(r * W + c)] != T(-7))
          ++gaps_changed;
    CHECK(gaps_changed == 0);
    // and the values themselves, against a plain loop in double
    double worst = 0;
    for (index_t r = 0; r < R; ++r)
      for (index_t c = 0; c < C; ++c) {
        const double x = static_cast<double>(a.data()[r * C + c]);
        const double want = x * static_cast<double>(b.data()[r * C + c]) +
                            static_cast<double>(bias.data()[c]) + std::exp(x);
        const double got = static_cast<double>(outs[1][static_cast<std::size_t>(r * W + off + c)]);
        worst = std::max(worst, std::abs(got - want) / (1 + std::abs(want)));
      }
    CHECK(worst < (sizeof(T) == 4 ? 1e-5 : 1e-12));
  }
}
