// Row kernels (softmax, log_softmax, rms_norm, layer_norm) against the memory-bandwidth bound
// measured in the same run by a STREAM-like copy of the same number of elements (read n + write
// n floats, same thread count): with ordinary stores (the bound the issue names) and with
// non-temporal stores (the tighter bound: the kernels stream outputs of 32 MiB and more). Arrays
// are 64 MiB each (well above the L3), so every kernel streams from DRAM. Prints a markdown
// table; see RESULTS.md.
//
//   bench_rows [--mib 64] [--repeats 11]
#include "bench_util.hpp"

#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/rows.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

using tfm::index_t;

int main(int argc, char** argv) {
  std::size_t mib = 64;
  int repeats = 11;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--mib")) mib = std::strtoul(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
  }
  const std::size_t total = mib * 1024 * 1024 / sizeof(float);
  tfm_bench::aligned_buffer<float> x(total), y(total), z(total), w(32000);
  for (std::size_t i = 0; i < total; ++i)
    x[i] = static_cast<float>((i * 7919) % 1000) * 0.01f - 5.0f;
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 1.0f + 0.001f * static_cast<float>(i % 7);

  std::printf("arrays: %zu MiB each (%zu floats), median of %d runs, xsimd arch %s\n\n", mib, total,
              repeats, xsimd::default_arch::name());
  std::printf(
      "| threads | STREAM copy GB/s | copy, non-temporal stores GB/s | STREAM triad GB/s |\n"
      "|---|---|---|---|\n");
  for (int threads : {1, 2}) {
    tfm_bench::set_threads(threads);
    const index_t n = static_cast<index_t>(total);
    const double tc =
        tfm_bench::median_seconds([&] { tfm_bench::stream_copy(x.data(), y.data(), n); }, repeats);
    const double tn = tfm_bench::median_seconds(
        [&] { tfm_bench::stream_copy_nt(x.data(), y.data(), n); }, repeats);
    const double tt = tfm_bench::median_seconds(
        [&] { tfm_bench::stream_triad(z.data(), x.data(), y.data(), 0.5f, n); }, repeats);
    std::printf("| %d | %.1f | %.1f | %.1f |\n", threads,
                tfm_bench::stream_bytes_copy<float>(n) / tc * 1e-9,
                tfm_bench::stream_bytes_copy<float>(n) / tn * 1e-9,
                tfm_bench::stream_bytes_triad<float>(n) / tt * 1e-9);
  }

  std::printf(
      "\n| kernel | n | rows | threads | time ms | copy-bound ms | time / bound | NT-copy ms | "
      "time / NT bound |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int threads : {1, 2}) {
    tfm_bench::set_threads(threads);
    for (index_t n : {index_t{768}, index_t{4096}, index_t{32000}}) {
      const index_t rows = static_cast<index_t>(total) / n;
      const index_t elems = rows * n;
      const auto copy = [&] { tfm_bench::stream_copy(x.data(), y.data(), elems); };
      const auto copy_nt = [&] { tfm_bench::stream_copy_nt(x.data(), y.data(), elems); };
      const auto report = [&](const char* name, auto&& kernel) {
        const tfm_bench::paired_result r = tfm_bench::paired_medians(copy, kernel, repeats);
        const tfm_bench::paired_result q = tfm_bench::paired_medians(copy_nt, kernel, repeats);
        std::printf("| %s | %ld | %ld | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", name,
                    static_cast<long>(n), static_cast<long>(rows), threads, r.candidate_s * 1e3,
                    r.peer_s * 1e3, r.ratio, q.peer_s * 1e3, q.ratio);
      };
      report("softmax", [&] { tfm::cpu_kernels::softmax_rows(x.data(), n, y.data(), n, rows, n); });
      report("softmax (online variant)", [&] {
        tfm::cpu_kernels::rows_detail::for_each_row(rows, n, false, [&](index_t r) {
          tfm::cpu_kernels::rows_detail::softmax_row_online(x.data() + r * n, y.data() + r * n, n);
        });
      });
      report("log_softmax",
             [&] { tfm::cpu_kernels::log_softmax_rows(x.data(), n, y.data(), n, rows, n); });
      report("rms_norm", [&] {
        tfm::cpu_kernels::rms_norm_rows(x.data(), n, w.data(), 1e-5f, y.data(), n, rows, n);
      });
      report("layer_norm", [&] {
        tfm::cpu_kernels::layer_norm_rows(x.data(), n, w.data(), w.data(), 1e-5f, y.data(), n, rows,
                                          n);
      });
    }
  }
  tfm_bench::do_not_optimize(y[total / 3]);
  return 0;
}
