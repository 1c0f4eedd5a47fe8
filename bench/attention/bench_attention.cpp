// Flash-style attention vs the composed (naive) attention, forward and backward, B=1, H=6, D=64,
// causal, T = 256, 1024, 4096: median time and extra peak tensor memory (core/storage.hpp
// counters) of each. Prints one line per (T, kind).
#include <typeformer/typeformer.hpp>

#include "common/bench_util.hpp"

#include <cstdio>

using namespace tfm;

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  std::printf("%6s %-6s %10s %10s %12s\n", "T", "kind", "fwd_ms", "bwd_ms", "peak_MB");
  for (index_t T : {256, 1024, 4096}) {
    auto q = parameter(randn<float>(dyn_shape<4>(1, 6, T, 64), 1));
    auto k = parameter(randn<float>(dyn_shape<4>(1, 6, T, 64), 2));
    auto v = parameter(randn<float>(dyn_shape<4>(1, 6, T, 64), 3));
    for (int fused = 1; fused >= 0; --fused) {
      const int r = T >= 4096 ? std::max(1, reps / 3) : reps;
      double fwd = tfm_bench::median_seconds(
          [&] { auto o = fused ? attention(q, k, v) : attention_composed(q, k, v); }, r, 1);
      release_cached_storage();
      reset_peak_memory();
      auto base = memory_stats().current_bytes;
      double both = tfm_bench::median_seconds(
          [&] {
            q.zero_grad();
            k.zero_grad();
            v.zero_grad();
            auto o = fused ? attention(q, k, v) : attention_composed(q, k, v);
            sum(o).backward();
          },
          r, 0);
      std::printf("%6ld %-6s %10.1f %10.1f %12.1f\n", static_cast<long>(T),
                  fused ? "flash" : "naive", fwd * 1e3, (both - fwd) * 1e3,
                  static_cast<double>(memory_stats().peak_bytes - base) / 1e6);
    }
  }
}
