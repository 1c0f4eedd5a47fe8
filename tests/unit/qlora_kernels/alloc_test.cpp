// The bytes QLoRA's frozen-base kernels allocate (backend/cpu/quant/nf4_linear.hpp's contract:
// scratch sized by the tile and the GEMM's cache blocks, nothing proportional to N x K). This
// translation unit replaces the global allocation functions of the test binary with malloc-based
// ones that add up the bytes asked for (tests/support/count_new.hpp).
#include "count_new.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/nf4_linear.hpp"
#include "typeformer/quant/nf4.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

TEST_CASE("nf4 kernels allocate scratch sized by the tile, not by the matrix; none once warm") {
  using tfm::index_t;
  auto g = tfm_test::rng(0x21a6);
  const index_t N = 8192, K = 576, M = 64;  // W in f32 would be 18.9 MB
  const auto wf = tfm_test::random_vector<float>(static_cast<std::size_t>(N * K), g, -1.0, 1.0);
  const auto w = tfm::quantize_nf4_dq(wf, N, K, "w");
  const auto x = tfm_test::random_vector<float>(static_cast<std::size_t>(M * K), g, -1.0, 1.0);
  const auto dy = tfm_test::random_vector<float>(static_cast<std::size_t>(M * N), g, -1.0, 1.0);
  std::vector<float> y(static_cast<std::size_t>(M * N)), dx(static_cast<std::size_t>(M * K));
  std::vector<float> rows(static_cast<std::size_t>(3 * K));
  const long long f32_bytes = 4LL * N * K;
  for (int t : {1, 2}) {
    CAPTURE(t);
    tfm::thread_scope ts(t);
    for (int pass = 0; pass < 2; ++pass) {
      CAPTURE(pass);
      g_new_bytes = 0;
      g_new_largest = 0;
      tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), M, y.data(), 0.0f);
      tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), M, dx.data(), 0.0f);
      tfm::nf4_dequantize_rows(tfm::cpu{}, w, 5, 8, rows.data());
      const long long bytes = g_new_bytes.load(), largest = g_new_largest.load();
      MESSAGE("threads " << t << " pass " << pass << ": " << bytes << " bytes allocated (largest "
                         << largest << "); W as f32 would be " << f32_bytes
                         << ", the NF4 tensor holds " << w.bytes());
      // The tile (384 x 576 floats = 885 KB) and the GEMM's blocks, per thread.
      CHECK(largest <= 4LL * 384 * K);
      CHECK(bytes <= f32_bytes / 4);
      if (pass == 1) CHECK(bytes == 0);  // every buffer is reused once warm
    }
  }
}
