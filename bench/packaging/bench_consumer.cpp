// bench/packaging/bench_consumer.cpp: what a consumer's program spends its time on, timed for
// one build flavour (portable typeformer::typeformer or typeformer::native; see CMakeLists.txt).
// Prints one line per workload: "<flavour> <workload> <median ms>". run.sh pairs the flavours.
#include "bench_util.hpp"

#include <typeformer/typeformer.hpp>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

using namespace tfm;

void report(const char* what, double seconds) {
  std::printf("%s %s %.3f\n", TFM_BENCH_FLAVOUR, what, seconds * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 11;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--repeats") == 0 && i + 1 < argc) repeats = std::atoi(argv[++i]);

  // The README's expression and matmul, at sizes where they take measurable time.
  const index_t rows = 2048, cols = 768;
  auto a = randn<float>(shape<dyn, 768>(rows), 1);
  auto b = randn<float>(shape<768>{}, 2);
  tensor<float, shape<dyn, 768>> y(rows);
  report("gelu(a*2+b)_2048x768", tfm_bench::median_seconds(
                                     [&] {
                                       y = gelu(a * 2.0f + b);
                                       tfm_bench::do_not_optimize(y.data());
                                     },
                                     repeats));

  auto w = randn<float>(shape<768, 768>{}, 3);
  tensor<float, shape<dyn, 768>> h(rows);
  report("matmul_2048x768x768", tfm_bench::median_seconds(
                                    [&] {
                                      h = matmul(a, w);
                                      tfm_bench::do_not_optimize(h.data());
                                    },
                                    repeats));

  auto x = randn<float>(shape<dyn, 768>(rows), 4);
  tensor<float, shape<dyn, 768>> s(rows);
  report("softmax_rows_2048x768", tfm_bench::median_seconds(
                                      [&] {
                                        s = softmax(x);
                                        tfm_bench::do_not_optimize(s.data());
                                      },
                                      repeats));

  // One training step of a small GPT (forward, backward, AdamW).
  nn::gpt<nn::gpt2_tiny> model(nn::gpt2_tiny{}, 5);
  auto params = model.parameters();
  auto opt = optim::adamw(params, optim::adam_options{});
  nn::gpt<nn::gpt2_tiny>::ids_type ids(8, 128), targets(8, 128);
  for (index_t i = 0; i < ids.size(); ++i) {
    ids.data()[i] = static_cast<std::int32_t>((i * 7) % 256);
    targets.data()[i] = static_cast<std::int32_t>((i * 7 + 1) % 256);
  }
  report("gpt2_tiny_train_step_8x128", tfm_bench::median_seconds(
                                           [&] {
                                             opt.zero_grad();
                                             auto loss = model.loss(ids, targets);
                                             loss.backward();
                                             opt.step();
                                           },
                                           repeats));
  return 0;
}
