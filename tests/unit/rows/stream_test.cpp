// Streamed outputs (non-temporal stores, used for outputs of at least stream_store_bytes()):
// every row kernel gives the same bits streamed and not streamed, for aligned and unaligned
// rows, strided rows with their gaps untouched, in place, masked rows, and 1 or 2 threads.
#include "rows_test_util.hpp"

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/rows.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace rows_test;

namespace {

/// Restores the default threshold when a test case ends.
struct threshold_guard {
  unsigned long long saved = tfm::cpu_kernels::stream_store_bytes();
  ~threshold_guard() { tfm::cpu_kernels::set_stream_store_bytes(saved); }
};

enum class kernel { softmax, log_softmax, layer_norm, rms_norm };
const char* name(kernel k) {
  switch (k) {
    case kernel::softmax:
      return "softmax";
    case kernel::log_softmax:
      return "log_softmax";
    case kernel::layer_norm:
      return "layer_norm";
    default:
      return "rms_norm";
  }
}

template <class T>
void run(kernel k, const T* x, index_t ldx, T* y, index_t ldy, index_t rows, index_t n, const T* g,
         const T* b) {
  namespace ck = tfm::cpu_kernels;
  switch (k) {
    case kernel::softmax:
      return ck::softmax_rows(x, ldx, y, ldy, rows, n);
    case kernel::log_softmax:
      return ck::log_softmax_rows(x, ldx, y, ldy, rows, n);
    case kernel::layer_norm:
      return ck::layer_norm_rows(x, ldx, g, b, T(1e-5), y, ldy, rows, n);
    default:
      return ck::rms_norm_rows(x, ldx, g, T(1e-5), y, ldy, rows, n);
  }
}

/// y for one configuration with streaming forced on (threshold 1 byte) or off (0).
template <class T>
std::vector<T> output(kernel k, bool stream, const std::vector<T>& x, index_t ldx, index_t rows,
                      index_t n, index_t ldy, index_t y_offset, bool in_place,
                      const std::vector<T>& g, const std::vector<T>& b) {
  tfm::cpu_kernels::set_stream_store_bytes(stream ? 1 : 0);
  std::vector<T> y(static_cast<std::size_t>(y_offset + rows * ldy), T(-7));  // gap sentinel
  if (in_place) {
    std::copy(x.begin(), x.end(), y.begin() + y_offset);
    run<T>(k, y.data() + y_offset, ldy, y.data() + y_offset, ldy, rows, n, g.data(), b.data());
  } else {
    run<T>(k, x.data(), ldx, y.data() + y_offset, ldy, rows, n, g.data(), b.data());
  }
  return y;
}

template <class T>
void check_all() {
  threshold_guard guard;
  std::mt19937_64 rng(seed());
  MESSAGE("seed ", seed());
  std::normal_distribution<double> d(0.0, 3.0);
  for (kernel k : {kernel::softmax, kernel::log_softmax, kernel::layer_norm, kernel::rms_norm}) {
    for (index_t n : {index_t{1}, index_t{15}, index_t{17}, index_t{33}, index_t{768},
                      index_t{1023}, index_t{4096}}) {
      for (index_t pad : {index_t{0}, index_t{3}}) {
        for (index_t y_offset : {index_t{0}, index_t{1}, index_t{5}}) {
          for (bool in_place : {false, true}) {
            if (in_place && pad == 0 && y_offset != 0) continue;
            const index_t rows = 9, ld = n + pad;
            std::vector<T> x(static_cast<std::size_t>(rows * ld));
            for (auto& v : x) v = static_cast<T>(d(rng));
            for (index_t i = 0; i < n; i += 2)
              x[static_cast<std::size_t>(ld + i)] =
                  -std::numeric_limits<T>::infinity();  // row 1 half masked
            std::vector<T> g(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n));
            for (auto& v : g) v = static_cast<T>(1 + 0.1 * d(rng));
            for (auto& v : b) v = static_cast<T>(0.1 * d(rng));
            if (k == kernel::layer_norm || k == kernel::rms_norm)
              for (auto& v : x) v = std::isinf(v) ? T(2) : v;
            const auto plain = output<T>(k, false, x, ld, rows, n, ld, y_offset, in_place, g, b);
            for (int threads : {1, 2}) {
              const tfm::thread_scope scope(threads);
              const auto streamed =
                  output<T>(k, true, x, ld, rows, n, ld, y_offset, in_place, g, b);
              INFO(std::string(name(k)), " n=", n, " pad=", pad, " y_offset=", y_offset,
                   " in_place=", in_place, " threads=", threads);
              REQUIRE(streamed.size() == plain.size());
              CHECK(std::memcmp(streamed.data(), plain.data(), plain.size() * sizeof(T)) == 0);
            }
          }
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("stream_store_bytes: default and setter") {
  threshold_guard guard;
  CHECK(tfm::cpu_kernels::stream_store_bytes() == TFM_STREAM_STORE_BYTES);
  tfm::cpu_kernels::set_stream_store_bytes(4096);
  CHECK(tfm::cpu_kernels::stream_store_bytes() == 4096);
}

TEST_CASE_TEMPLATE("row kernels: streamed and ordinary stores give the same bits", T, float,
                   double) {
  check_all<T>();
}
