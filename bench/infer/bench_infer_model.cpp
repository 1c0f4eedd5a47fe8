// bench/infer/bench_infer_model.cpp
//
// Load, prefill and decode figures of the tape-free engine (infer/model.hpp) on a GGUF model,
// in llama-bench's terms: pp<P> = prompt processing tokens/s (one prefill of P tokens), tg<N> =
// text generation tokens/s (N decode steps after a one-token prompt). Also the load time until
// the model is ready, the bytes mapped/borrowed/allocated, and the peak RSS (getrusage).
//
//   bench_infer_model MODEL.gguf [-t THREADS] [-p 512] [-n 128] [-r REPEATS]
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/infer/model.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [-t THREADS] [-p 512] [-n 128] [-r 3]\n", argv[0]);
    return 2;
  }
  std::string path = argv[1];
  int threads = 1, repeats = 3;
  long P = 512, N = 128;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (a == "-t")
      threads = static_cast<int>(v);
    else if (a == "-p")
      P = v;
    else if (a == "-n")
      N = v;
    else if (a == "-r")
      repeats = static_cast<int>(v);
  }
  tfm::set_num_threads(threads);
  const double t0 = now_s();
  auto model = tfm::load_model(path);
  const double load_ms = (now_s() - t0) * 1e3;
  const auto& st = model.stats();
  const auto& c = model.config();
  std::printf("model %s: %lld layers, C %lld, V %lld, weights %s\n", path.c_str(),
              static_cast<long long>(c.n_layer), static_cast<long long>(c.n_embd),
              static_cast<long long>(c.vocab),
              std::string(tfm::ggml_type_name(model.block(0).wq.type())).c_str());
  std::printf(
      "load %.1f ms (ready); mapped %.1f MiB, borrowed %.1f MiB, allocated %.1f MiB; "
      "RSS after load %.1f MiB\n",
      load_ms, st.bytes_mapped / 1048576.0, st.bytes_borrowed / 1048576.0,
      st.bytes_allocated / 1048576.0, peak_rss_mib());
  tfm::infer::session s(model, {.context = std::max<long>(P, N + 1), .batch = 512});
  std::vector<std::int32_t> prompt(static_cast<std::size_t>(P));
  for (long i = 0; i < P; ++i)
    prompt[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 7919) % c.vocab);
  std::vector<double> pp, tg;
  for (int r = 0; r < repeats + 1; ++r) {  // the first run warms up
    s.reset();
    double a = now_s();
    s.prefill(prompt);
    double b = now_s();
    s.reset();
    auto lg = s.prefill(std::span<const std::int32_t>(prompt.data(), 1));
    double c0 = now_s();
    for (long i = 0; i < N; ++i) {
      const auto t = static_cast<std::int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin());
      lg = s.decode(t);
    }
    double d = now_s();
    if (r == 0) continue;
    pp.push_back(static_cast<double>(P) / (b - a));
    tg.push_back(static_cast<double>(N) / (d - c0));
  }
  std::sort(pp.begin(), pp.end());
  std::sort(tg.begin(), tg.end());
  std::printf(
      "threads %d: pp%ld %.1f t/s, tg%ld %.1f t/s (median of %d); session %.1f MiB; "
      "peak RSS %.1f MiB\n",
      threads, P, pp[pp.size() / 2], N, tg[tg.size() / 2], repeats, s.bytes() / 1048576.0,
      peak_rss_mib());
  return 0;
}
