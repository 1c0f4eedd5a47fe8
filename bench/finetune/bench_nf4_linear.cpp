// bench/finetune/bench_nf4_linear.cpp
//
// QLoRA's frozen base layer (backend/cpu/quant/nf4_linear.hpp): the forward nf4_matmul_bt
// (y = x deq(W)^T) and the backward nf4_matmul (dx = dy deq(W)), W held as NF4 with double
// quantization and dequantized tile by tile, against the float GEMM (cpu_kernels::gemm) on the
// already dequantized W in the same run. Columns:
//   fwd/bwd f32, nf4   the fastest wall time of each, timed alternately (peer, candidate, ...)
//   ratio              the median of the per-pair ratios nf4 / f32 (bench_util.hpp's pairing),
//                      in brackets fastest / fastest
//   band               nf4 against the f32 GEMM run in nf4's thread layout (one thread per band,
//                      no team packing), fastest / fastest: the cost of NF4 itself
//   cpu line           (1 thread) nf4 / f32 thread CPU time, fastest of the runs: on the shared
//                      2-core VM the steadiest figure
//   deq W              nf4_dequantize_rows of the whole W (median)
//   bytes              4 N K against nf4_dq_tensor::bytes(), and their ratio
// Shapes: SmolLM2-135M's projections N x K = 576 x 576 (q, o), 1536 x 576 (gate, up),
// 576 x 1536 (down); M = 1024 rows (batch 4 x 256 tokens).
//
//   bench_nf4_linear [--repeats 11] [--m 1024] [--sweep]
//     --sweep  also times the backward's tile heights 64 ... 768 (2 threads), for choosing
//              nf4_tile_rows
#include "bench_util.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/quant/nf4_linear.hpp"
#include "typeformer/quant/nf4.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace ck = tfm::cpu_kernels;

struct shape {
  index_t N, K;
  const char* what;
};

/// paired_medians' alternation (peer, candidate, peer, ...), returning the median of the
/// per-pair ratios and each side's fastest run: on the shared VM the fastest run of a
/// compute-bound kernel is the least disturbed one, so min / min is the second figure.
struct paired {
  double peer_min = 0, candidate_min = 0, ratio = 0;
  double min_ratio() const { return candidate_min / peer_min; }
};

template <class Peer, class Candidate>
paired time_pairs(Peer&& peer, Candidate&& candidate, int repeats) {
  const auto once = [](auto& fn) {
    tfm_bench::clobber_memory();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    tfm_bench::clobber_memory();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  peer();
  candidate();
  std::vector<double> r;
  paired out{1e30, 1e30, 0};
  for (int i = 0; i < repeats; ++i) {
    const double a = once(peer), b = once(candidate);
    out.peer_min = std::min(out.peer_min, a);
    out.candidate_min = std::min(out.candidate_min, b);
    r.push_back(b / a);
  }
  std::nth_element(r.begin(), r.begin() + static_cast<std::ptrdiff_t>(r.size() / 2), r.end());
  out.ratio = r[r.size() / 2];
  return out;
}

/// Fastest thread CPU time of fn over `repeats` runs (after one warm-up): on a loaded machine
/// the CPU time of a one-thread kernel is far steadier than its wall time.
template <class F>
double cpu_best(F&& fn, int repeats) {
  const auto now = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  fn();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    tfm_bench::clobber_memory();
    const double t0 = now();
    fn();
    tfm_bench::clobber_memory();
    best = std::min(best, now() - t0);
  }
  return best;
}

std::vector<float> random_floats(std::size_t n, std::mt19937& g, float sd) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 11;
  index_t M = 1024;
  bool sweep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeats" && i + 1 < argc)
      repeats = std::atoi(argv[++i]);
    else if (a == "--m" && i + 1 < argc)
      M = std::atol(argv[++i]);
    else if (a == "--sweep")
      sweep = true;
    else {
      std::fprintf(stderr, "usage: bench_nf4_linear [--repeats N] [--m M] [--sweep]\n");
      return 2;
    }
  }
  std::mt19937 g(21);
  const shape shapes[] = {{576, 576, "q/o"}, {1536, 576, "gate/up"}, {576, 1536, "down"}};
  std::printf(
      "tiles: forward NR x kc = %d x %lld (the GEMM's B panel), backward %lld rows of W; M = %lld; "
      "%d pairs\n",
      ck::gemm_config_t<float>::nr, static_cast<long long>(ck::gemm_config_t<float>::kc),
      static_cast<long long>(ck::nf4_tile_rows), static_cast<long long>(M), repeats);
  std::printf(
      "times: fastest of the runs; ratio: median of per-pair ratios nf4 / f32 (in brackets: "
      "fastest / fastest); band: nf4 / the f32 GEMM run in nf4's thread layout (bands without a "
      "team), fastest / fastest; cpu: 1 thread, nf4 / f32 thread CPU time, fastest / fastest\n");
  std::printf("%-8s %-11s %3s  %8s %8s %15s %6s   %8s %8s %15s %6s   %8s  %9s %9s %5s\n", "proj",
              "N x K", "thr", "fwd f32", "fwd nf4", "ratio", "band", "bwd f32", "bwd nf4", "ratio",
              "band", "deq W", "bytes f32", "bytes nf4", "x");
  for (const shape& s : shapes) {
    const auto wf = random_floats(static_cast<std::size_t>(s.N * s.K), g, 0.02f);
    const auto w = tfm::quantize_nf4_dq(wf, s.N, s.K, "w");
    const auto wd = tfm::dequantize_nf4_dq(w);
    const auto x = random_floats(static_cast<std::size_t>(M * s.K), g, 1.0f);
    const auto dy = random_floats(static_cast<std::size_t>(M * s.N), g, 1.0f);
    std::vector<float> y(static_cast<std::size_t>(M * s.N)), dx(static_cast<std::size_t>(M * s.K));
    std::vector<float> whole(wd.size());
    for (int t : {1, 2}) {
      tfm::thread_scope ts(t);
      const auto fwd = time_pairs(
          [&] {
            ck::gemm<float>(false, true, M, s.N, s.K, 1.0f, x.data(), s.K, wd.data(), s.K, 0.0f,
                            y.data(), s.N);
          },
          [&] { tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), M, y.data(), 0.0f); }, repeats);
      const auto bwd = time_pairs(
          [&] {
            ck::gemm<float>(false, false, M, s.K, s.N, 1.0f, dy.data(), s.N, wd.data(), s.K, 0.0f,
                            dx.data(), s.K);
          },
          [&] { tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), M, dx.data(), 0.0f); }, repeats);
      const double deq = tfm_bench::median_seconds(
          [&] {
            tfm::nf4_dequantize_rows(tfm::cpu{}, w, 0, s.N, whole.data());
            tfm_bench::do_not_optimize(whole.data());
          },
          repeats);
      // The f32 GEMM in nf4's thread layouts, one thread per band: forward gemm_bands (the
      // longer of M and N), backward row bands.
      namespace nl = ck::detail::nf4_linear;
      using Cfg = ck::gemm_config_t<float>;
      auto fwd_banded = [&] {
        ck::detail::gemm_bands<Cfg>(
            M, s.N, s.K, tfm::num_threads(), [&](index_t m0, index_t m1, index_t n0, index_t n1) {
              ck::detail::gemm_packed_range<Cfg>(false, true, m0, m1, n0, n1, s.K, 1.0f, x.data(),
                                                 s.K, wd.data(), s.K, 0.0f, y.data(), s.N);
            });
      };
      auto banded = [&](bool tb, index_t Nc, index_t Kd, const float* A, float* C) {
        const nl::row_bands rows(M, Nc, Kd, tfm::num_threads());
        nl::run_parts(rows.parts, [&](int p) {
          index_t m0, m1;
          rows.band(p, M, m0, m1);
          if (m1 > m0)
            ck::detail::gemm_packed<float>(false, tb, m1 - m0, Nc, Kd, 1.0f, A + m0 * Kd, Kd,
                                           wd.data(), s.K, 0.0f, C + m0 * Nc, Nc, 1);
        });
      };
      const auto fwd_band = time_pairs(
          fwd_banded, [&] { tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), M, y.data(), 0.0f); },
          repeats);
      const auto bwd_band = time_pairs(
          [&] { banded(false, s.K, s.N, dy.data(), dx.data()); },
          [&] { tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), M, dx.data(), 0.0f); }, repeats);
      const double f32_bytes = 4.0 * static_cast<double>(s.N * s.K);
      std::printf(
          "%-8s %5lldx%-5lld %3d  %6.2fms %6.2fms %6.3f [%6.3f] %6.3f   %6.2fms %6.2fms %6.3f "
          "[%6.3f] %6.3f   %6.3fms  %9.0f %9zu %5.2f\n",
          s.what, static_cast<long long>(s.N), static_cast<long long>(s.K), t, fwd.peer_min * 1e3,
          fwd.candidate_min * 1e3, fwd.ratio, fwd.min_ratio(), fwd_band.min_ratio(),
          bwd.peer_min * 1e3, bwd.candidate_min * 1e3, bwd.ratio, bwd.min_ratio(),
          bwd_band.min_ratio(), deq * 1e3, f32_bytes, w.bytes(),
          f32_bytes / static_cast<double>(w.bytes()));
      if (t == 1) {
        const double cf = cpu_best(
            [&] {
              ck::gemm<float>(false, true, M, s.N, s.K, 1.0f, x.data(), s.K, wd.data(), s.K, 0.0f,
                              y.data(), s.N);
            },
            repeats);
        const double cn = cpu_best(
            [&] { tfm::nf4_matmul_bt(tfm::cpu{}, w, x.data(), M, y.data(), 0.0f); }, repeats);
        const double bf = cpu_best(
            [&] {
              ck::gemm<float>(false, false, M, s.K, s.N, 1.0f, dy.data(), s.N, wd.data(), s.K, 0.0f,
                              dx.data(), s.K);
            },
            repeats);
        const double bn = cpu_best(
            [&] { tfm::nf4_matmul(tfm::cpu{}, w, dy.data(), M, dx.data(), 0.0f); }, repeats);
        std::printf(
            "%-8s %5lldx%-5lld cpu  fwd nf4 %6.2fms / f32 %6.2fms = %6.3f   bwd nf4 %6.2fms / f32 "
            "%6.2fms = %6.3f\n",
            s.what, static_cast<long long>(s.N), static_cast<long long>(s.K), cn * 1e3, cf * 1e3,
            cn / cf, bn * 1e3, bf * 1e3, bn / bf);
      }
      std::fflush(stdout);
    }
    if (sweep) {
      tfm::thread_scope ts(2);
      for (index_t T : {64, 128, 192, 256, 384, 512, 768}) {
        const auto bwd = time_pairs(
            [&] {
              ck::gemm<float>(false, false, M, s.K, s.N, 1.0f, dy.data(), s.N, wd.data(), s.K, 0.0f,
                              dx.data(), s.K);
            },
            [&] { ck::detail::nf4_linear::matmul_tiled(w, dy.data(), M, dx.data(), 0.0f, T); },
            repeats);
        std::printf("  sweep %5lldx%-5lld backward tile %3lld (2 threads): %6.3f [%6.3f]\n",
                    static_cast<long long>(s.N), static_cast<long long>(s.K),
                    static_cast<long long>(T), bwd.ratio, bwd.min_ratio());
      }
    }
  }
  // The whole model's projection weights (SmolLM2-135M: 30 layers of q, o 576 x 576; k, v
  // 192 x 576; gate, up 1536 x 576; down 576 x 1536) as f32 and as nf4_dq_tensor::bytes().
  {
    const shape layer[] = {{576, 576, "q"},    {192, 576, "k"},     {192, 576, "v"},
                           {576, 576, "o"},    {1536, 576, "gate"}, {1536, 576, "up"},
                           {576, 1536, "down"}};
    double f32 = 0, nf4 = 0;
    for (const shape& s : layer) {
      const auto wf = random_floats(static_cast<std::size_t>(s.N * s.K), g, 0.02f);
      f32 += 4.0 * static_cast<double>(s.N * s.K);
      nf4 += static_cast<double>(tfm::quantize_nf4_dq(wf, s.N, s.K, "w").bytes());
    }
    std::printf(
        "SmolLM2-135M projections, 30 layers: f32 %.1f MiB, NF4 + double quantization "
        "%.1f MiB (%.3f bits per weight, %.2fx smaller)\n",
        30 * f32 / 1048576.0, 30 * nf4 / 1048576.0, 32.0 * nf4 / f32, f32 / nf4);
  }
  return 0;
}
