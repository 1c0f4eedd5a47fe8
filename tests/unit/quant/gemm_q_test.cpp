// gemm_dq_bt (backend/cpu/quant/gemm_q.hpp, dequantize-in-pack prefill GEMM) against the float
// GEMM on the dequantized weights (tfm::dequantize, bitwise gguf-py): the same bits where that
// GEMM takes its packed path for the 32-value formats, the f64 reference backend within
// 1e-5 sqrt(K) of max |C| for all, 1/2/3 threads bitwise, and the run-time-typed entry point.
#include "typeformer/backend/cpu/quant/gemm_q.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/gemm.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

template <class B>
void check_dq_gemm() {
  constexpr index_t QK = static_cast<index_t>(tfm::block_traits<B>::block_elements);
  constexpr bool legacy = QK == 32;
  auto g = tfm_test::rng(0x1900 + QK);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const index_t Ms[] = {1, 2, 3, 13, 64}, Ns[] = {1, 7, 33, 100};
  const index_t Ks[] = {QK, 2 * QK, 7 * QK, legacy ? 13 * QK : 3 * QK};
  double worst = 0;
  for (index_t M : Ms)
    for (index_t N : Ns)
      for (index_t K : Ks)
        for (bool acc : {false, true}) {
          CAPTURE(M);
          CAPTURE(N);
          CAPTURE(K);
          std::vector<float> a(static_cast<std::size_t>(M * K)),
              wf(static_cast<std::size_t>(N * K));
          for (float& x : a) x = nd(g);
          for (float& x : wf) x = nd(g) * 0.1f + 0.02f;
          const auto bytes =
              tfm::quantize(tfm::block_traits<B>::type, wf, static_cast<std::size_t>(N),
                            static_cast<std::size_t>(K), "W");
          std::vector<B> w(bytes.size() / sizeof(B));
          std::memcpy(w.data(), bytes.data(), bytes.size());
          const std::vector<float> wd = tfm::dequantize(tfm::block_traits<B>::type, bytes);
          std::vector<float> c0(static_cast<std::size_t>(M * N));
          for (float& x : c0) x = nd(g);
          std::vector<float> c = c0, c_f32 = c0, c_ref = c0, c_2t = c0, c_3t = c0, c_rt = c0;
          {
            tfm::thread_scope one(1);
            ck::gemm_dq_bt(M, N, K, a.data(), K, w.data(), K / QK, c.data(), N, acc);
            ck::gemm<float>(false, true, M, N, K, 1.0f, a.data(), K, wd.data(), K,
                            acc ? 1.0f : 0.0f, c_f32.data(), N);
            ck::gemm_dq_bt(tfm::block_traits<B>::type, M, N, K, a.data(), K,
                           reinterpret_cast<const std::byte*>(w.data()),
                           static_cast<std::size_t>(K / QK) * sizeof(B), c_rt.data(), N, acc);
          }
          {
            tfm::thread_scope two(2);
            ck::gemm_dq_bt(M, N, K, a.data(), K, w.data(), K / QK, c_2t.data(), N, acc);
          }
          {
            tfm::thread_scope three(3);
            ck::gemm_dq_bt(M, N, K, a.data(), K, w.data(), K / QK, c_3t.data(), N, acc);
          }
          tfm::reference_kernels::gemm<float>(false, true, M, N, K, 1.0f, a.data(), K, wd.data(), K,
                                              acc ? 1.0f : 0.0f, c_ref.data(), N);
          if (legacy && M > 1 && N > 1 && M * N * K > 16 * 16 * 16) CHECK(c == c_f32);
          CHECK(c == c_2t);
          CHECK(c == c_3t);
          CHECK(c == c_rt);
          double err = 0, scale = 1e-30;
          for (std::size_t i = 0; i < c.size(); ++i) {
            err = std::max(err, static_cast<double>(std::abs(c[i] - c_ref[i])));
            scale = std::max(scale, static_cast<double>(std::abs(c_ref[i])));
          }
          worst = std::max(worst, err / scale);
          CHECK(err / scale < 1e-5 * std::sqrt(static_cast<double>(K)));
        }
  MESSAGE(tfm::ggml_type_name(tfm::block_traits<B>::type)
          << ": max error vs the reference backend, relative to max |C|: " << worst);
}

}  // namespace

TEST_CASE_TEMPLATE("gemm_dq_bt: float GEMM on the dequantized weights", B, tfm::block_q4_0,
                   tfm::block_q4_1, tfm::block_q5_0, tfm::block_q5_1, tfm::block_q8_0,
                   tfm::block_q4_K, tfm::block_q6_K) {
  check_dq_gemm<B>();
}

TEST_CASE("gemm_dq_bt: shapes and types are checked") {
  std::vector<tfm::block_q4_0> w(4);
  std::vector<float> a(64, 1.0f), c(4);
  CHECK_THROWS_AS(ck::gemm_dq_bt(1, 2, 48, a.data(), 48, w.data(), 2, c.data(), 2),
                  tfm::shape_error);
  CHECK_THROWS_AS(ck::gemm_dq_bt(tfm::ggml_type::iq2_xxs, 1, 2, 256, a.data(), 256,
                                 reinterpret_cast<const std::byte*>(w.data()), 66, c.data(), 2),
                  tfm::unsupported_error);
  CHECK_THROWS_AS(ck::gemm_dq_bt(tfm::ggml_type::q4_0, 1, 2, 64, a.data(), 64,
                                 reinterpret_cast<const std::byte*>(w.data()), 20, c.data(), 2),
                  tfm::shape_error);
}
