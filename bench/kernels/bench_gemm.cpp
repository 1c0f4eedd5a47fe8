// bench_gemm: single-precision GEMM and GEMV of tfm::cpu_kernels against OpenBLAS, BLIS and
// Eigen, all measured in the same run, on 1 and 2 threads. Prints markdown tables of GF/s
// (2*M*N*K / median seconds) and the ratio ours / peer.
//
//   env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX BLIS_ARCH_TYPE=0 ./bench_gemm [--quick]
//   [--cpu-time]
//
// OpenBLAS and BLIS are opened with dlopen (RTLD_LOCAL | RTLD_DEEPBIND): both export cblas_*,
// and each must run its own. A peer whose library is missing is skipped. Each library runs its
// samples in rounds (one sample of each library per round, 30 ms pause before each); the table
// gives the median over the rounds.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/parallel.hpp"

#if defined(TFM_BENCH_HAVE_EIGEN)
#include <Eigen/Core>
#endif

namespace {

using tfm::index_t;
using clock_type = std::chrono::steady_clock;

// ---- peers loaded at run time ------------------------------------------------------------------
constexpr int cblas_row_major = 101, cblas_no_trans = 111, cblas_trans = 112;
using cblas_sgemm_fn = void (*)(int, int, int, int, int, int, float, const float*, int,
                                const float*, int, float, float*, int);
using cblas_sgemv_fn = void (*)(int, int, int, int, float, const float*, int, const float*, int,
                                float, float*, int);
using set_threads_fn = void (*)(int);

struct blas_peer {
  std::string name, info;
  void* handle = nullptr;
  cblas_sgemm_fn sgemm = nullptr;
  cblas_sgemv_fn sgemv = nullptr;
  set_threads_fn set_threads = nullptr;
  explicit operator bool() const { return sgemm && sgemv && set_threads; }
};

blas_peer open_peer(const char* name, const char* path, const char* set_threads_symbol) {
  blas_peer p;
  p.name = name;
  if (!path) return p;
  p.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!p.handle) {
    std::printf("# %s: dlopen(%s) failed: %s; skipped\n", name, path, dlerror());
    return p;
  }
  p.sgemm = reinterpret_cast<cblas_sgemm_fn>(dlsym(p.handle, "cblas_sgemm"));
  p.sgemv = reinterpret_cast<cblas_sgemv_fn>(dlsym(p.handle, "cblas_sgemv"));
  p.set_threads = reinterpret_cast<set_threads_fn>(dlsym(p.handle, set_threads_symbol));
  if (!p) std::printf("# %s: cblas symbols missing in %s; skipped\n", name, path);
  return p;
}

std::string openblas_info(void* h) {
  using str_fn = char* (*)();
  std::string s;
  if (auto f = reinterpret_cast<str_fn>(dlsym(h, "openblas_get_config"))) s += f();
  if (auto f = reinterpret_cast<str_fn>(dlsym(h, "openblas_get_corename")))
    s += std::string(", core ") + f();
  return s;
}

std::string blis_info(void* h) {
  using str_fn = const char* (*)();
  using id_fn = int (*)();
  using arch_str_fn = const char* (*)(int);
  using init_fn = void (*)();
  // bli_init first: with BLIS_ARCH_TYPE set, BLIS 0.9 aborts when the arch is queried before
  // its kernel structures exist.
  if (auto f = reinterpret_cast<init_fn>(dlsym(h, "bli_init"))) f();
  std::string s = "BLIS ";
  if (auto f = reinterpret_cast<str_fn>(dlsym(h, "bli_info_get_version_str"))) s += f();
  auto q = reinterpret_cast<id_fn>(dlsym(h, "bli_arch_query_id"));
  auto a = reinterpret_cast<arch_str_fn>(dlsym(h, "bli_arch_string"));
  if (q && a) s += std::string(", arch ") + a(q());
  return s;
}

// ---- timing ----------------------------------------------------------------------------------
/// Calls of f that take >= 20 ms: a warm-up call, then the fastest of three timed calls (one
/// call can be slowed by a scheduler tick, e.g. a worker thread woken onto a busy CPU, and a
/// count calibrated on it would leave every sample a handful of calls long).
int calibrate(const std::function<void()>& f) {
  f();
  double once = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = clock_type::now();
    f();
    once = std::min(once, std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return std::max(1, static_cast<int>(0.02 / std::max(once, 1e-9)));
}

/// With --cpu-time, 1-thread rows are timed in process CPU time (immune to being descheduled on
/// a shared machine; no library has worker threads at 1 thread, so it equals compute time).
bool g_cpu_time = false;

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

/// Seconds per call of `reps` back-to-back calls.
double time_per_call(const std::function<void()>& f, int reps, bool cpu_time) {
  if (cpu_time) {
    const double c0 = process_cpu_seconds();
    for (int r = 0; r < reps; ++r) f();
    return (process_cpu_seconds() - c0) / reps;
  }
  const auto t0 = clock_type::now();
  for (int r = 0; r < reps; ++r) f();
  return std::chrono::duration<double>(clock_type::now() - t0).count() / reps;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct contender {
  std::string name;
  std::function<void(int)> set_threads;
  std::function<void()> run;
};

/// Median seconds per call of every contender. Rounds of one sample per contender, so that load
/// from other processes hits every contender alike, starting with a different contender each
/// round; a 30 ms pause before each sample lets the previous library's spinning worker threads
/// go to sleep.
std::vector<double> race(std::vector<contender>& cs, int threads, int rounds) {
  std::vector<std::vector<double>> all(cs.size());
  std::vector<int> reps;
  for (auto& c : cs) {
    c.set_threads(threads);
    reps.push_back(calibrate(c.run));
  }
  for (int round = 0; round < rounds; ++round)
    for (std::size_t j = 0; j < cs.size(); ++j) {
      const std::size_t i = (j + std::size_t(round)) % cs.size();  // each goes first in turn
      cs[i].set_threads(threads);
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      all[i].push_back(time_per_call(cs[i].run, reps[i], g_cpu_time && threads == 1));
    }
  std::vector<double> med;
  for (auto& s : all) med.push_back(median(s));
  return med;
}

std::string loadavg() {
  std::string s = "?";
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buf[128] = {};
    if (std::fgets(buf, sizeof buf, f)) s = buf;
    std::fclose(f);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  }
  return s;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return den > 0 ? num / den : num;
}

struct shape {
  index_t M, N, K;
  bool tb;  // B stored N x K (weights layout)
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string filter;  // --filter TEXT: only the rows whose "MxNxK B" label contains TEXT
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--cpu-time") == 0) {
      g_cpu_time = true;
    } else if (std::strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
      filter = argv[++i];
    } else {
      std::fprintf(stderr,
                   "bench_gemm: unknown argument '%s' (usage: bench_gemm [--quick] [--cpu-time] "
                   "[--filter 'MxNxK B'])\n",
                   argv[i]);
      return 2;
    }
  }
  const int rounds = quick ? 5 : 11;

#if defined(TFM_BENCH_OPENBLAS)
  blas_peer openblas = open_peer("OpenBLAS", TFM_BENCH_OPENBLAS, "openblas_set_num_threads");
#else
  blas_peer openblas = open_peer("OpenBLAS", nullptr, "");
#endif
#if defined(TFM_BENCH_BLIS)
  blas_peer blis = open_peer("BLIS", TFM_BENCH_BLIS, "bli_thread_set_num_threads");
#else
  blas_peer blis = open_peer("BLIS", nullptr, "");
#endif
  if (openblas) openblas.info = openblas_info(openblas.handle);
  if (blis) blis.info = blis_info(blis.handle);

  std::printf("# bench_gemm\n");
  std::printf("# ours: %s (f32), xsimd %d.%d.%d\n", tfm::cpu_kernels::gemm_config_f32::name,
              XSIMD_VERSION_MAJOR, XSIMD_VERSION_MINOR, XSIMD_VERSION_PATCH);
  std::printf("# OpenBLAS: %s\n", openblas ? openblas.info.c_str() : "not available");
  std::printf("# BLIS: %s\n", blis ? blis.info.c_str() : "not available");
#if defined(TFM_BENCH_HAVE_EIGEN)
  std::printf("# Eigen %d.%d.%d, SIMD: %s\n", EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION,
              EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse());
#else
  std::printf("# Eigen: not available\n");
#endif
  for (const char* v : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "BLIS_ARCH_TYPE"}) {
    const char* e = std::getenv(v);
    std::printf("# %s=%s\n", v, e ? e : "(unset)");
  }
  std::printf("# GF/s = 2*M*N*K / median time over %d rounds (each sample >= 20 ms of calls)\n",
              rounds);
  std::printf("# 1-thread timing: %s\n",
              g_cpu_time ? "process CPU time (--cpu-time)" : "wall clock");
  std::printf("# load average at start: %s\n\n", loadavg().c_str());

  const std::vector<shape> gemm_shapes = {
      {512, 512, 512, false}, {1024, 1024, 1024, false}, {2048, 2048, 2048, false},
      {64, 768, 768, false},  {256, 3072, 768, false},   {256, 768, 3072, false},
      {64, 768, 768, true},   {256, 3072, 768, true},    {256, 768, 3072, true}};
  const std::vector<shape> gemv_shapes = {
      {1, 3072, 768, true}, {1, 768, 3072, true}, {1, 3072, 768, false}};

  std::mt19937 rng(12345);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);

  auto table = [&](const std::vector<shape>& shapes, const char* title) {
    std::printf("## %s\n\n", title);
    std::printf("| M x N x K | B | thr | ours GF/s |");
    if (openblas) std::printf(" OpenBLAS | ours/OB |");
    if (blis) std::printf(" BLIS | ours/BLIS |");
#if defined(TFM_BENCH_HAVE_EIGEN)
    std::printf(" Eigen | ours/Eigen |");
#endif
    std::printf(" NMSE vs peer |\n|---|---|---|---|");
    if (openblas) std::printf("---|---|");
    if (blis) std::printf("---|---|");
#if defined(TFM_BENCH_HAVE_EIGEN)
    std::printf("---|---|");
#endif
    std::printf("---|\n");
    for (const shape& s : shapes) {
      const index_t M = s.M, N = s.N, K = s.K;
      const std::string label = std::to_string(M) + "x" + std::to_string(N) + "x" +
                                std::to_string(K) + (s.tb ? " NxK" : " KxN");
      if (label.find(filter) == std::string::npos) continue;
      std::vector<float> a(M * K), b(K * N), c0(M * N), c1(M * N);
      for (auto& x : a) x = dist(rng);
      for (auto& x : b) x = dist(rng);
      const index_t ldb = s.tb ? K : N;
      std::vector<contender> cs;
      cs.push_back({"ours", [](int t) { tfm::set_num_threads(t); },
                    [&] {
                      tfm::cpu_kernels::gemm<float>(false, s.tb, M, N, K, 1.f, a.data(), K,
                                                    b.data(), ldb, 0.f, c0.data(), N);
                    }});
      for (blas_peer* p : {&openblas, &blis}) {
        if (!*p) continue;
        cs.push_back({p->name, [p](int t) { p->set_threads(t); },
                      [&, p] {
                        if (M == 1) {  // y(N) = op(B) x
                          p->sgemv(cblas_row_major, s.tb ? cblas_no_trans : cblas_trans,
                                   s.tb ? int(N) : int(K), s.tb ? int(K) : int(N), 1.f, b.data(),
                                   int(ldb), a.data(), 1, 0.f, c1.data(), 1);
                        } else {
                          p->sgemm(cblas_row_major, cblas_no_trans,
                                   s.tb ? cblas_trans : cblas_no_trans, int(M), int(N), int(K), 1.f,
                                   a.data(), int(K), b.data(), int(ldb), 0.f, c1.data(), int(N));
                        }
                      }});
      }
#if defined(TFM_BENCH_HAVE_EIGEN)
      using rmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      cs.push_back({"Eigen", [](int t) { Eigen::setNbThreads(t); },
                    [&] {
                      Eigen::Map<const rmat> ea(a.data(), M, K);
                      Eigen::Map<rmat> ec(c1.data(), M, N);
                      if (s.tb) {
                        Eigen::Map<const rmat> eb(b.data(), N, K);
                        ec.noalias() = ea * eb.transpose();
                      } else {
                        Eigen::Map<const rmat> eb(b.data(), K, N);
                        ec.noalias() = ea * eb;
                      }
                    }});
#endif
      for (int threads : {1, 2}) {
        std::vector<double> t = race(cs, threads, rounds);
        const double flop = 2.0 * double(M) * double(N) * double(K);
        std::printf("| %ldx%ldx%ld | %s | %d | %.1f |", long(M), long(N), long(K),
                    s.tb ? "NxK" : "KxN", threads, flop / t[0] / 1e9);
        for (std::size_t i = 1; i < cs.size(); ++i)
          std::printf(" %.1f | %.2f |", flop / t[i] / 1e9, t[i] / t[0]);
        std::printf(" %.1e |\n", nmse(c0, c1));  // c1 holds the last peer's result
        std::fflush(stdout);
      }
    }
    std::printf("\n# load average: %s\n\n", loadavg().c_str());
  };

  table(gemm_shapes, "SGEMM (A row-major M x K; B K x N or, 'NxK', stored N x K and transposed)");
  table(gemv_shapes, "SGEMV: M == 1, y(1 x N) = x(1 x K) * op(B); 'NxK' = weights stored N x K");
  return 0;
}
