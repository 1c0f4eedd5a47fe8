// Forward + backward timing of (1) an MLP, B=64, 768 -> 3072 -> 768 with GELU and (2) one
// 768-wide pre-norm transformer block (B=8, T=128, 12 heads, causal attention composed from ops,
// MLP 3072), each with a mean-square loss. Prints "name median_ms peak_rss_mb baseline_rss_mb
// tensor_peak_mb". The PyTorch peer is torch_autodiff.py; run.sh runs both with the same threads.
//   usage: bench_autodiff mlp|block [repeats]
#include <typeformer/typeformer.hpp>

#include "common/bench_util.hpp"

#include <sys/resource.h>
#include <cstdio>
#include <cstring>
#include <string>

using namespace tfm;

/// GPT-2 124M widths, one block, context 128.
struct block_cfg : nn::gpt2_124m {
  static constexpr index_t n_layer = 1, block_size = 128;
};

static double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "mlp";
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 11;
  double ms = 0;
  const double baseline = peak_rss_mb();
  reset_peak_memory();
  if (which == "mlp") {
    const index_t B = 64, C = 768, F = 3072;
    auto w1 = parameter(randn<float>(shape<F, C>{}, 1, 0.02f));
    auto b1 = parameter(zeros<float>(shape<F>{}));
    auto w2 = parameter(randn<float>(shape<C, F>{}, 2, 0.02f));
    auto b2 = parameter(zeros<float>(shape<C>{}));
    auto x = constant(randn<float>(shape<dyn, C>(B), 3));
    auto y = constant(randn<float>(shape<dyn, C>(B), 4));
    ms = 1e3 * tfm_bench::median_seconds(
                   [&] {
                     w1.zero_grad();
                     b1.zero_grad();
                     w2.zero_grad();
                     b2.zero_grad();
                     auto h = gelu(linear(x, w1, b1));
                     auto out = linear(h, w2, b2);
                     auto loss = mean(square(out - y));
                     loss.backward();
                   },
                   repeats, 2);
  } else if (which == "block") {
    nn::block<float, block_cfg> blk(nn::builder{7, "h.0"}, block_cfg{});
    const index_t B = 8, T = 128, C = 768;
    auto x = constant(randn<float>(shape<dyn, dyn, C>(B, T), 3));
    auto y = constant(randn<float>(shape<dyn, dyn, C>(B, T), 4));
    nn::parameter_list<float> ps;
    blk.collect(ps);
    std::uint64_t off = 0;
    ms = 1e3 * tfm_bench::median_seconds(
                   [&] {
                     for (auto& p : ps) p.data->release_grad();
                     auto out = blk(x, 0, static_cast<nn::no_cache*>(nullptr), 0, false, 0, off);
                     auto loss = mean(square(out - y));
                     loss.backward();
                   },
                   repeats, 2);
  } else {
    std::fprintf(stderr, "usage: bench_autodiff mlp|block [repeats]\n");
    return 2;
  }
  std::printf("%s %.3f %.1f %.1f %.1f\n", which.c_str(), ms, peak_rss_mb(), baseline,
              static_cast<double>(memory_stats().peak_bytes) / 1048576.0);
  return 0;
}
