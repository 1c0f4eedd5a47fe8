// bench/quant/bench_gemv_ext.cpp
//
// Decode-shaped GEMVs y = W x with typeformer's own layouts (backend/cpu/quant/gemv_ext.hpp):
// NF4 (float activations, 16-entry level table in registers), INT4-g64 / INT4-g128 (8-bit
// activations quantized per call, integer dots), next to the Q4_0 and Q8_0 GEMVs of gemv_q.hpp
// (Q8_0 = INT8 per channel's kernel) and Q4_1 (= INT4-g32) in the same run, and a streaming read
// over the same bytes. The figure is GB/s of weight bytes read; each format cycles through
// enough copies of W to fill `--mb` MiB (default 192) so that the weights come from DRAM.
//
//   bench_gemv_ext [--mb 192] [--repeats 7]   1 and 2 threads, shapes 576 x 1536, 1536 x 576
#include "bench_util.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemv_ext.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/quant/quantize.hpp"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

/// The cheapest loop that reads every byte once (64-bit words, threads split).
std::uint64_t stream_sum(const std::byte* p, std::size_t bytes) {
  const std::uint64_t* q = reinterpret_cast<const std::uint64_t*>(p);
  const std::ptrdiff_t words = static_cast<std::ptrdiff_t>(bytes / 8);
  std::uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (std::ptrdiff_t i = 0; i < words; ++i) s += q[i];
  return s;
}

struct shape {
  index_t N, K;
};

void run(const char* name, tfm::ggml_type t, const std::vector<float>& wf, shape s,
         const std::vector<float>& x, std::size_t target, int repeats) {
  const auto one =
      tfm::quantize(t, wf, static_cast<std::size_t>(s.N), static_cast<std::size_t>(s.K), name);
  const std::size_t copies = std::max<std::size_t>(1, (target + one.size() - 1) / one.size());
  tfm_bench::aligned_buffer<std::byte> buf(copies * one.size());
  for (std::size_t c = 0; c < copies; ++c)
    std::memcpy(buf.data() + c * one.size(), one.data(), one.size());
  const std::size_t row_bytes = one.size() / static_cast<std::size_t>(s.N);
  std::vector<float> y(static_cast<std::size_t>(s.N));
  ck::q8_activations scratch;
  for (int threads : {1, 2}) {
    tfm::thread_scope ts(threads);
    auto pass = [&] {
      for (std::size_t c = 0; c < copies; ++c) {
        const std::byte* wc = buf.data() + c * one.size();
        if (ck::gemv_ext_supported(t)) {
          if (ck::gemv_ext_uses_q8(t)) {  // activations quantized per call, as gemv_q
            ck::quantize_activations(1, s.K, x.data(), s.K, scratch);
            const ck::q8_row r = scratch.row(0);
            ck::gemv_ext(t, s.N, s.K, x.data(), &r, wc, row_bytes, y.data());
          } else {
            ck::gemv_ext(t, s.N, s.K, x.data(), nullptr, wc, row_bytes, y.data());
          }
        } else {
          ck::quantize_activations(1, s.K, x.data(), s.K, scratch);
          ck::gemm_q_bt(t, 1, s.N, s.K, x.data(), s.K, wc, row_bytes, y.data(), s.N, scratch);
        }
      }
      tfm_bench::do_not_optimize(y.data());
    };
    const double total = static_cast<double>(copies * one.size());
    const double tk = tfm_bench::median_seconds(pass, repeats);
    const double tr = tfm_bench::median_seconds(
        [&] { tfm_bench::do_not_optimize(stream_sum(buf.data(), copies * one.size())); }, repeats);
    std::printf(
        "%5lld x %-5lld %-12s %d thr %6.1f MiB %6.1f GB/s  read bound %6.1f GB/s (%3.0f%%)"
        "  %7.1f us/GEMV  %5.2f bits/w\n",
        static_cast<long long>(s.N), static_cast<long long>(s.K), name, threads, total / (1 << 20),
        total / tk * 1e-9, total / tr * 1e-9, 100.0 * tr / tk,
        tk / static_cast<double>(copies) * 1e6,
        8.0 * static_cast<double>(one.size()) / static_cast<double>(s.N * s.K));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t mb = 192;
  int repeats = 7;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mb") mb = static_cast<std::size_t>(std::stoul(argv[i + 1]));
    if (a == "--repeats") repeats = std::stoi(argv[i + 1]);
  }
  std::printf("bench_gemv_ext: integer-dot ISA %s, %zu MiB of weights per format, median of %d\n",
              ck::q8_dot_isa(), mb, repeats);
  std::mt19937 g(19);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  using tfm::ggml_type;
  for (shape s : {shape{576, 1536}, shape{1536, 576}}) {
    std::vector<float> wf(static_cast<std::size_t>(s.N * s.K)), x(static_cast<std::size_t>(s.K));
    for (auto& v : wf) v = nd(g);
    for (auto& v : x) v = nd(g) * 50.0f;
    run("Q4_0", ggml_type::q4_0, wf, s, x, mb << 20, repeats);
    run("NF4", ggml_type::tfm_nf4, wf, s, x, mb << 20, repeats);
    run("Q4_1=I4g32", ggml_type::q4_1, wf, s, x, mb << 20, repeats);
    run("I4_G64", ggml_type::tfm_i4_g64, wf, s, x, mb << 20, repeats);
    if (s.K % 128 == 0) run("I4_G128", ggml_type::tfm_i4_g128, wf, s, x, mb << 20, repeats);
    run("Q8_0=I8ch", ggml_type::q8_0, wf, s, x, mb << 20, repeats);
  }
  return 0;
}
