// GPT training throughput (tokens/s) for one optimizer step = forward + backward + AdamW, f32:
//   6l384: GPT-2 style, n_layer 6, n_head 6, n_embd 384, vocab 50257, T=256, B=4
//   124m:  GPT-2 124M, T=64, B=4
// Prints "name tokens_per_s median_step_ms peak_rss_mb mfu" where MFU = achieved FLOP/s /
// (peak_gflops given on the command line, the machine's measured FMA peak times threads).
// The PyTorch peer is torch_train.py; run.sh runs both.
//   usage: bench_train 6l384|124m [steps] [peak_gflops]
#include <typeformer/typeformer.hpp>

#include "common/bench_util.hpp"

#include <sys/resource.h>
#include <cstdio>
#include <string>

using namespace tfm;

template <class Cfg>
int run(const char* name, index_t B, index_t T, int steps, double peak_gflops) {
  nn::gpt<Cfg> model(Cfg{}, 1);
  auto ps = model.parameters();
  optim::adam_options o;
  o.lr = 1e-4;
  o.weight_decay = 0.1;
  auto opt = optim::adamw(ps, o);
  tensor<std::int32_t, shape<dyn, dyn>> x(B, T), y(B, T);
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = static_cast<std::int32_t>((i * 7919 + 3) % Cfg::vocab);
    y.data()[i] = static_cast<std::int32_t>((i * 7919 + 10) % Cfg::vocab);
  }
  double s = tfm_bench::median_seconds(
      [&] {
        opt.zero_grad();
        auto loss = model.loss(x, y);
        loss.backward();
        opt.step_clipped(1.0);  // clipped in the update; the norm pass checks finiteness
      },
      steps, 1);
  const double tok_s = static_cast<double>(B * T) / s;
  const double flops = model.summary(T).train_flops_per_token * tok_s;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  std::printf("%s %.1f %.1f %.1f %.3f\n", name, tok_s, s * 1e3,
              static_cast<double>(u.ru_maxrss) / 1024.0,
              peak_gflops > 0 ? flops / (peak_gflops * 1e9) : 0.0);
  return 0;
}

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "6l384";
  const int steps = argc > 2 ? std::atoi(argv[2]) : 5;
  const double peak = argc > 3 ? std::atof(argv[3]) : 0.0;
  if (which == "6l384") return run<nn::gpt2_6l384>("6l384", 4, 256, steps, peak);
  if (which == "124m") return run<nn::gpt2_124m>("124m", 4, 64, steps, peak);
  std::fprintf(stderr, "usage: bench_train 6l384|124m [steps] [peak_gflops]\n");
  return 2;
}
