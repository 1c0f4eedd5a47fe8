// bench/quant/bench_gemv_q.cpp
//
// Decode-shaped GEMVs y = W x with quantized W (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: activations
// quantized to Q8 per call, integer dot products; backend/cpu/quant/gemv_q.hpp; Q4_K, Q5_K,
// Q6_K where K is a multiple of 256: activations quantized to Q8_K per call,
// backend/cpu/quant/gemv_kq.hpp), the f16 GEMV
// (backend/cpu/gemm/half_weights.hpp) and a read bound: a streaming sum over the same bytes.
// The figure is GB/s of weight bytes read. So that the weights come from DRAM as in decode
// (a model is far larger than the caches), each format cycles through enough copies of W to
// fill `--mb` MiB (default 192) and one timed pass runs the GEMV once per copy.
//
//   bench_gemv_q [--mb 192] [--repeats 7]     1 and 2 threads, shapes N x K:
//                                             576 x 1536, 1536 x 576, 49152 x 576, 2048 x 2048
//                                             (the K-quants only where K % 256 == 0)
//   bench_gemv_q --prefill M                  GF/s of C(M, N) = A W^T on one thread instead:
//                                             gemm_half_bt (F16), gemm_dq_bt (dequantize in
//                                             pack) and gemm_q_bt / gemm_kq_bt (integer dots
//                                             per row)
#include "bench_util.hpp"
#include "typeformer/backend/cpu/gemm/half_weights.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/gemm_q.hpp"
#include "typeformer/backend/cpu/quant/gemv_kq.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/quant/quantize.hpp"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

/// Sum of the 64-bit words of [p, p + bytes) (SIMD, four accumulators, threads split): the
/// cheapest loop that reads every byte once.
std::uint64_t stream_sum(const std::byte* p, std::size_t bytes) {
  using B = xsimd::batch<std::uint64_t>;
  constexpr std::ptrdiff_t w = static_cast<std::ptrdiff_t>(B::size);
  const std::uint64_t* q = reinterpret_cast<const std::uint64_t*>(p);
  const std::ptrdiff_t chunks = static_cast<std::ptrdiff_t>(bytes / 8) / (4 * w);
  std::uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const std::uint64_t* r = q + c * 4 * w;
    const B v = (B::load_unaligned(r) + B::load_unaligned(r + w)) +
                (B::load_unaligned(r + 2 * w) + B::load_unaligned(r + 3 * w));
    alignas(64) std::uint64_t lanes[B::size];
    v.store_aligned(lanes);
    for (std::size_t i = 0; i < B::size; ++i) s += lanes[i];
  }
  return s;
}

struct shape {
  index_t N, K;
};

struct weights {
  std::string name;
  std::size_t bytes_per_copy = 0;
  std::size_t copies = 0;
  tfm_bench::aligned_buffer<std::byte> buf{1};
};

weights make(const std::string& name, const std::vector<std::byte>& one, std::size_t target) {
  weights w;
  w.name = name;
  w.bytes_per_copy = one.size();
  w.copies = std::max<std::size_t>(1, (target + one.size() - 1) / one.size());
  w.buf = tfm_bench::aligned_buffer<std::byte>(w.copies * one.size());
  for (std::size_t c = 0; c < w.copies; ++c)
    std::memcpy(w.buf.data() + c * one.size(), one.data(), one.size());
  return w;
}

template <class F>
void report(const weights& w, shape s, int threads, int repeats, F&& pass) {
  const double total = static_cast<double>(w.bytes_per_copy * w.copies);
  const double t_kernel = tfm_bench::median_seconds(pass, repeats);
  const double t_read = tfm_bench::median_seconds(
      [&] { tfm_bench::do_not_optimize(stream_sum(w.buf.data(), w.copies * w.bytes_per_copy)); },
      repeats);
  std::printf(
      "%6lld x %-5lld  %-5s  %d thr  %7.1f MiB  %6.1f GB/s  read bound %6.1f GB/s  "
      "(%3.0f%%)  %8.1f us/GEMV\n",
      static_cast<long long>(s.N), static_cast<long long>(s.K), w.name.c_str(), threads,
      total / (1 << 20), total / t_kernel * 1e-9, total / t_read * 1e-9, 100.0 * t_read / t_kernel,
      t_kernel / static_cast<double>(w.copies) * 1e6);
}

template <class B>
void run_q(const char* name, const std::vector<float>& wf, shape s, const std::vector<float>& x,
           std::size_t target, int repeats) {
  const auto one = tfm::quantize(tfm::block_traits<B>::type, wf, static_cast<std::size_t>(s.N),
                                 static_cast<std::size_t>(s.K), name);
  weights w = make(name, one, target);
  std::vector<float> y(static_cast<std::size_t>(s.N));
  ck::q8_activations scratch;
  for (int threads : {1, 2}) {
    tfm::thread_scope ts(threads);
    report(w, s, threads, repeats, [&] {
      for (std::size_t c = 0; c < w.copies; ++c) {
        const B* wc = reinterpret_cast<const B*>(w.buf.data() + c * w.bytes_per_copy);
        ck::gemv_q(s.N, s.K, wc, s.K / 32, x.data(), y.data(), scratch);
      }
      tfm_bench::do_not_optimize(y.data());
    });
  }
}

/// The K-quant GEMV: x quantized to Q8_K once per call, as linear_bt_packed does per input.
template <class B>
void run_kq(const char* name, const std::vector<float>& wf, shape s, const std::vector<float>& x,
            std::size_t target, int repeats) {
  if (s.K % 256 != 0 || !tfm::quantizable(tfm::block_traits<B>::type)) return;
  const auto one = tfm::quantize(tfm::block_traits<B>::type, wf, static_cast<std::size_t>(s.N),
                                 static_cast<std::size_t>(s.K), name);
  weights w = make(name, one, target);
  std::vector<float> y(static_cast<std::size_t>(s.N));
  ck::q8k_activations scratch;
  for (int threads : {1, 2}) {
    tfm::thread_scope ts(threads);
    report(w, s, threads, repeats, [&] {
      for (std::size_t c = 0; c < w.copies; ++c) {
        const B* wc = reinterpret_cast<const B*>(w.buf.data() + c * w.bytes_per_copy);
        ck::quantize_activations_q8k(1, s.K, x.data(), s.K, scratch);
        ck::gemv_kq(s.N, s.K, wc, s.K / 256, scratch.row(0), y.data());
      }
      tfm_bench::do_not_optimize(y.data());
    });
  }
}

void run_f16(const std::vector<float>& wf, shape s, const std::vector<float>& x, std::size_t target,
             int repeats) {
  std::vector<std::byte> one(wf.size() * 2);
  for (std::size_t i = 0; i < wf.size(); ++i) {
    const tfm::f16 h(wf[i]);
    std::memcpy(one.data() + 2 * i, &h, 2);
  }
  weights w = make("F16", one, target);
  std::vector<float> y(static_cast<std::size_t>(s.N));
  for (int threads : {1, 2}) {
    tfm::thread_scope ts(threads);
    report(w, s, threads, repeats, [&] {
      for (std::size_t c = 0; c < w.copies; ++c) {
        const tfm::f16* wc = reinterpret_cast<const tfm::f16*>(w.buf.data() + c * w.bytes_per_copy);
        ck::gemv_half_dot(s.N, s.K, wc, s.K, x.data(), y.data());
      }
      tfm_bench::do_not_optimize(y.data());
    });
  }
}

template <class B>
void prefill_q(const char* name, const std::vector<float>& wf, shape s, const std::vector<float>& a,
               index_t M, int repeats) {
  const auto bytes = tfm::quantize(tfm::block_traits<B>::type, wf, static_cast<std::size_t>(s.N),
                                   static_cast<std::size_t>(s.K), name);
  std::vector<B> w(bytes.size() / sizeof(B));
  std::memcpy(w.data(), bytes.data(), bytes.size());
  std::vector<float> c(static_cast<std::size_t>(M * s.N));
  ck::q8_activations scratch;
  const double flops = 2.0 * static_cast<double>(M * s.N * s.K);
  const double t_dq = tfm_bench::median_seconds(
      [&] { ck::gemm_dq_bt(M, s.N, s.K, a.data(), s.K, w.data(), s.K / 32, c.data(), s.N); },
      repeats);
  const double t_q = tfm_bench::median_seconds(
      [&] {
        ck::gemm_q_bt(M, s.N, s.K, a.data(), s.K, w.data(), s.K / 32, c.data(), s.N, scratch);
      },
      repeats);
  std::printf("%4lld x %5lld x %5lld  %-5s  dequant-in-pack %6.1f GF/s   integer dots %6.1f GF/s\n",
              static_cast<long long>(M), static_cast<long long>(s.N), static_cast<long long>(s.K),
              name, flops / t_dq * 1e-9, flops / t_q * 1e-9);
}

template <class B>
void prefill_kq(const char* name, const std::vector<float>& wf, shape s,
                const std::vector<float>& a, index_t M, int repeats) {
  if (s.K % 256 != 0 || !tfm::quantizable(tfm::block_traits<B>::type)) return;
  const auto bytes = tfm::quantize(tfm::block_traits<B>::type, wf, static_cast<std::size_t>(s.N),
                                   static_cast<std::size_t>(s.K), name);
  std::vector<B> w(bytes.size() / sizeof(B));
  std::memcpy(w.data(), bytes.data(), bytes.size());
  std::vector<float> c(static_cast<std::size_t>(M * s.N));
  ck::q8k_activations scratch;
  const double flops = 2.0 * static_cast<double>(M * s.N * s.K);
  const double t_dq = tfm_bench::median_seconds(
      [&] { ck::gemm_dq_bt(M, s.N, s.K, a.data(), s.K, w.data(), s.K / 256, c.data(), s.N); },
      repeats);
  const double t_q = tfm_bench::median_seconds(
      [&] {
        ck::gemm_kq_bt(M, s.N, s.K, a.data(), s.K, w.data(), s.K / 256, c.data(), s.N, scratch);
      },
      repeats);
  std::printf("%4lld x %5lld x %5lld  %-5s  dequant-in-pack %6.1f GF/s   integer dots %6.1f GF/s\n",
              static_cast<long long>(M), static_cast<long long>(s.N), static_cast<long long>(s.K),
              name, flops / t_dq * 1e-9, flops / t_q * 1e-9);
}

void prefill(index_t M, int repeats) {
  tfm::thread_scope ts(1);
  std::mt19937 g(19);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (shape s : {shape{576, 1536}, shape{1536, 576}}) {
    std::vector<float> wf(static_cast<std::size_t>(s.N * s.K)),
        a(static_cast<std::size_t>(M * s.K));
    for (auto& v : wf) v = nd(g);
    for (auto& v : a) v = nd(g) * 50.0f;
    std::vector<tfm::f16> wh(wf.size());
    for (std::size_t i = 0; i < wf.size(); ++i) wh[i] = tfm::f16(wf[i]);
    std::vector<float> c(static_cast<std::size_t>(M * s.N));
    const double flops = 2.0 * static_cast<double>(M * s.N * s.K);
    const double t_h = tfm_bench::median_seconds(
        [&] { ck::gemm_half_bt(M, s.N, s.K, a.data(), s.K, wh.data(), s.K, c.data(), s.N); },
        repeats);
    std::printf("%4lld x %5lld x %5lld  F16    gemm_half_bt    %6.1f GF/s\n",
                static_cast<long long>(M), static_cast<long long>(s.N), static_cast<long long>(s.K),
                flops / t_h * 1e-9);
    prefill_q<tfm::block_q8_0>("Q8_0", wf, s, a, M, repeats);
    prefill_q<tfm::block_q4_1>("Q4_1", wf, s, a, M, repeats);
    prefill_q<tfm::block_q4_0>("Q4_0", wf, s, a, M, repeats);
    prefill_kq<tfm::block_q6_K>("Q6_K", wf, s, a, M, repeats);
    prefill_kq<tfm::block_q5_K>("Q5_K", wf, s, a, M, repeats);
    prefill_kq<tfm::block_q4_K>("Q4_K", wf, s, a, M, repeats);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t mb = 192;
  int repeats = 7;
  index_t prefill_rows = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mb") mb = static_cast<std::size_t>(std::stoul(argv[i + 1]));
    if (a == "--repeats") repeats = std::stoi(argv[i + 1]);
    if (a == "--prefill") prefill_rows = std::stol(argv[i + 1]);
  }
  if (prefill_rows > 0) {
    std::printf("bench_gemv_q --prefill: kernel ISA %s, one thread, median of %d\n",
                ck::q8_dot_isa(), repeats);
    prefill(prefill_rows, repeats);
    return 0;
  }
  const std::size_t target = mb << 20;
  std::printf(
      "bench_gemv_q: kernel ISA %s (K-quants %s), %zu MiB of weights per format, median of %d\n",
      ck::q8_dot_isa(), ck::q8k_dot_isa(), mb, repeats);
  std::mt19937 g(19);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (shape s : {shape{576, 1536}, shape{1536, 576}, shape{49152, 576}, shape{2048, 2048}}) {
    std::vector<float> wf(static_cast<std::size_t>(s.N * s.K)), x(static_cast<std::size_t>(s.K));
    for (auto& v : wf) v = nd(g);
    for (auto& v : x) v = nd(g) * 50.0f;
    run_f16(wf, s, x, target, repeats);
    run_q<tfm::block_q8_0>("Q8_0", wf, s, x, target, repeats);
    run_q<tfm::block_q5_1>("Q5_1", wf, s, x, target, repeats);
    run_q<tfm::block_q5_0>("Q5_0", wf, s, x, target, repeats);
    run_q<tfm::block_q4_1>("Q4_1", wf, s, x, target, repeats);
    run_q<tfm::block_q4_0>("Q4_0", wf, s, x, target, repeats);
    run_kq<tfm::block_q6_K>("Q6_K", wf, s, x, target, repeats);
    run_kq<tfm::block_q5_K>("Q5_K", wf, s, x, target, repeats);
    run_kq<tfm::block_q4_K>("Q4_K", wf, s, x, target, repeats);
  }
  return 0;
}
