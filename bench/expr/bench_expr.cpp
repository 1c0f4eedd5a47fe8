// bench/expr/bench_expr.cpp
//
// Fused elementwise expressions (tfm::cpu backend) against two peers measured in the same run:
//   (a) the memory-bandwidth bound: plain C++ loops (-O3, OpenMP static split) with the same
//       arrays read and written, y = a*b + c (3 reads + 1 write), y = a + b (2 + 1), and a SIMD
//       copy y = a (1 + 1, tfm_bench::stream_copy), in the spirit of STREAM (McCalpin 1995);
//   (b) Eigen 3.4 evaluating the same expression on Eigen::Map<ArrayXf> over the same buffers.
// Eigen does not parallelise coefficient-wise expressions (Eigen::setNbThreads only affects
// matrix products), so its 2-thread column runs on one thread.
//
//   bench_expr [--n 16777216] [--repeats 21] [--threads 1,2] [--inner K]
//
// Every ratio is the median of per-pair ratios (peer and candidate timed alternately, see
// bench/common/bench_util.hpp). Bytes are counted as STREAM counts them: each array read or
// written once (write-allocate traffic not counted), so 16 bytes per element for y = f(a, b, c)
// in float. --inner K runs each kernel K times per timed call (for cache-resident sizes).
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/config/version.hpp"
#include "typeformer/core/factory.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/expr/node.hpp"

#include "bench_util.hpp"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#if defined(TFM_BENCH_HAVE_EIGEN)
#include <Eigen/Core>
#endif

namespace {

using tfm::index_t;
using vec = tfm::tensor<float, tfm::shape<tfm::dyn>>;
using vec_bf16 = tfm::tensor<tfm::bf16, tfm::shape<tfm::dyn>>;
using mat768 = tfm::tensor<float, tfm::shape<tfm::dyn, 768>>;
using row768 = tfm::tensor<float, tfm::shape<768>>;

// ---- bandwidth peers: plain C++ loops ------------------------------------------------------

void loop_fma(const float* __restrict a, const float* __restrict b, const float* __restrict c,
              float* __restrict y, std::ptrdiff_t n) {
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) y[i] = a[i] * b[i] + c[i];
}

void loop_add(const float* __restrict a, const float* __restrict b, float* __restrict y,
              std::ptrdiff_t n) {
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

// The formula proposed for op::gelu_tanh (see RESULTS.md): 0.5 x (1 + tanh(z)) equals
// x * sigmoid(2 z) = x / (1 + exp(-2 z)), z = sqrt(2/pi) (x + 0.044715 x^3): one exp and one
// division instead of xsimd's tanh, which evaluates both of its branches (polynomial and exp) plus
// a division. Same function (Hendrycks & Gimpel, arXiv:1606.08415), same scalar/batch code.
struct gelu_sigmoid_form {
  static constexpr const char* name = "gelu_sigmoid_form";
  static constexpr bool integer_ok = false;
  template <class X>
  X operator()(X x) const noexcept {
    using std::exp;  // batches find xsimd::exp by argument-dependent lookup
    return x / (X(1) + exp(X(-1.5957691216057308) * (x + X(0.044715) * x * x * x)));
  }
};

// ---- Eigen peers ---------------------------------------------------------------------------
#if defined(TFM_BENCH_HAVE_EIGEN)
using emap = Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64>;
using cemap = Eigen::Map<const Eigen::ArrayXf, Eigen::Aligned64>;

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) written with Eigen's array operations
// (Hendrycks & Gimpel, arXiv:1606.08415); Eigen vectorises tanh for float.
template <class X>
auto eigen_gelu(const X& x) {
  return 0.5f * x * (1.0f + (0.7978845608028654f * (x + 0.044715f * x.cube())).tanh());
}
#endif

// ---- reporting -----------------------------------------------------------------------------

struct row_result {
  std::string name;
  double bytes_per_elem = 0;
  index_t n = 0;
  double ours_s = 0;
  std::string bound_name;
  double bound_gbs = 0;
  double frac_bound = 0;  // ours GB/s over bound GB/s (median of pairs)
  double eigen_s = 0;     // 0 when not measured
  double vs_eigen = 0;    // eigen time / ours time (median of pairs)
  double max_diff = -1;   // max |ours - eigen|
};

std::vector<row_result> g_rows;

void print_rows(int threads, int inner) {
  std::printf("\n### %d thread%s\n\n", threads, threads == 1 ? "" : "s");
  std::printf(
      "| expression | B/elem | ours ms | ours GB/s | bound | bound GB/s | ours/bound | Eigen ms "
      "| Eigen GB/s | ours vs Eigen | max abs diff |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : g_rows) {
    const double bytes = r.bytes_per_elem * static_cast<double>(r.n) * inner;
    std::printf("| %s | %.0f | %.2f | %.1f | %s | %.1f | %.2f |", r.name.c_str(), r.bytes_per_elem,
                r.ours_s * 1e3, bytes / r.ours_s * 1e-9, r.bound_name.c_str(), r.bound_gbs,
                r.frac_bound);
    if (r.eigen_s > 0)
      std::printf(" %.2f | %.1f | %.2fx | %.2g |\n", r.eigen_s * 1e3, bytes / r.eigen_s * 1e-9,
                  r.vs_eigen, r.max_diff);
    else
      std::printf(" - | - | - | - |\n");
  }
  g_rows.clear();
}

template <class T>
double max_abs_diff(const T* x, const T* y, index_t n) {
  double m = 0;
  for (index_t i = 0; i < n; ++i) {
    double d = std::fabs(static_cast<double>(static_cast<float>(x[i])) -
                         static_cast<double>(static_cast<float>(y[i])));
    if (!(d <= m)) m = d;  // NaN propagates as a large value
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  index_t n = index_t{1} << 24;
  int repeats = 21;
  int inner = 1;
  std::vector<int> thread_counts{1, 2};
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) { return std::strcmp(argv[i], name) == 0 && i + 1 < argc; };
    if (arg("--n"))
      n = std::atoll(argv[++i]);
    else if (arg("--repeats"))
      repeats = std::atoi(argv[++i]);
    else if (arg("--inner"))
      inner = std::atoi(argv[++i]);
    else if (arg("--threads")) {
      thread_counts.clear();
      for (const char* p = argv[++i]; *p;) {
        thread_counts.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    } else {
      std::fprintf(stderr, "usage: bench_expr [--n N] [--repeats R] [--threads 1,2] [--inner K]\n");
      return 2;
    }
  }
  if (n < 768 || repeats < 1 || inner < 1) {
    std::fprintf(stderr, "bench_expr: need --n >= 768, --repeats >= 1, --inner >= 1\n");
    return 2;
  }

  std::printf(
      "# bench_expr: typeformer %s, xsimd arch %s, n = %lld floats (%.0f MiB per array), "
      "repeats %d, inner %d\n",
      TFM_VERSION_STRING, xsimd::default_arch::name(), static_cast<long long>(n),
      static_cast<double>(n) * 4 / (1 << 20), repeats, inner);
#if defined(TFM_BENCH_HAVE_EIGEN)
  std::printf("# Eigen %d.%d.%d, SIMD: %s\n", EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION,
              EIGEN_MINOR_VERSION, Eigen::SimdInstructionSetsInUse());
#else
  std::printf("# Eigen: not available (its columns are skipped)\n");
#endif

  const auto shp = tfm::shape<tfm::dyn>(n);
  vec a = tfm::rand_uniform<float>(shp, 1, -3.0f, 3.0f);
  vec b = tfm::rand_uniform<float>(shp, 2, -3.0f, 3.0f);
  vec c = tfm::rand_uniform<float>(shp, 3, -3.0f, 3.0f);
  vec y = tfm::zeros<float>(shp);
  vec ye = tfm::zeros<float>(shp);  // Eigen's output (kept separate to compare results)
  vec_bf16 ah = a, bh = b, ch = c;
  vec_bf16 yh = tfm::zeros<tfm::bf16>(shp), yeh = tfm::zeros<tfm::bf16>(shp);
  const index_t rows = n / 768;
  mat768 x = tfm::rand_uniform<float>(tfm::shape<tfm::dyn, 768>(rows), 4, -3.0f, 3.0f);
  mat768 xy = tfm::zeros<float>(tfm::shape<tfm::dyn, 768>(rows));
  mat768 xye = tfm::zeros<float>(tfm::shape<tfm::dyn, 768>(rows));
  row768 bias = tfm::rand_uniform<float>(tfm::shape<768>{}, 5, -1.0f, 1.0f);

  const float *pa = a.data(), *pb = b.data(), *pc = c.data();
  float* py = y.data();
  auto repeat = [inner](auto&& f) {
    return [inner, f] {
      for (int k = 0; k < inner; ++k) f();
      tfm_bench::clobber_memory();
    };
  };

  for (int threads : thread_counts) {
    tfm::thread_scope scope(threads);
#if defined(TFM_BENCH_HAVE_EIGEN)
    Eigen::setNbThreads(threads);  // no effect on coefficient-wise expressions (see above)
#endif
    // Bounds (ours timed alternately with each to get the paired ratio).
    auto fma_bound = repeat([&] { loop_fma(pa, pb, pc, py, n); });
    auto add_bound = repeat([&] { loop_add(pa, pb, py, n); });
    auto copy_bound = repeat([&] { tfm_bench::stream_copy(pa, py, n); });
    auto rows_copy_bound = repeat([&] { tfm_bench::stream_copy(x.data(), xy.data(), rows * 768); });
    const double tf = tfm_bench::median_seconds(fma_bound, repeats);
    const double ta = tfm_bench::median_seconds(add_bound, repeats);
    const double tcp = tfm_bench::median_seconds(copy_bound, repeats);
    const double in = static_cast<double>(n) * inner;
    const double fma_gbs = 16.0 * in / tf * 1e-9, add_gbs = 12.0 * in / ta * 1e-9,
                 copy_gbs = 8.0 * in / tcp * 1e-9;
    std::printf(
        "\n# threads %d: bound kernels (median of %d): y=a*b+c %.1f GB/s (%.2f ms), "
        "y=a+b %.1f GB/s, copy %.1f GB/s\n",
        threads, repeats, fma_gbs, tf * 1e3, add_gbs, copy_gbs);

    // One expression: ours vs its bound (paired), ours vs Eigen (paired).
    auto measure = [&](const char* name, double bpe, index_t count, const char* bound_name,
                       double bound_bpe, auto&& bound, auto&& ours, auto&& eigen, auto&& diff) {
      row_result r;
      r.name = name;
      r.bytes_per_elem = bpe;
      r.n = count;
      r.bound_name = bound_name;
      auto pb_ = tfm_bench::paired_medians(bound, ours, repeats);
      r.ours_s = pb_.candidate_s;
      r.bound_gbs = bound_bpe * static_cast<double>(count) * inner / pb_.peer_s * 1e-9;
      r.frac_bound = (bpe / bound_bpe) / pb_.ratio;
      if constexpr (!std::is_same_v<std::decay_t<decltype(eigen)>, std::nullptr_t>) {
        auto pe = tfm_bench::paired_medians(eigen, ours, repeats);
        r.eigen_s = pe.peer_s;
        r.vs_eigen = 1.0 / pe.ratio;
        r.max_diff = diff();
      }
      g_rows.push_back(r);
    };

#if defined(TFM_BENCH_HAVE_EIGEN)
    cemap ea(pa, n), eb(pb, n), ec(pc, n);
    emap eye(ye.data(), n);
    auto f32_diff = [&] { return max_abs_diff(py, ye.data(), n); };
#define TFM_EIGEN(...) repeat([&] { __VA_ARGS__; })
#else
#define TFM_EIGEN(...) nullptr
    auto f32_diff = [] { return -1.0; };
#endif

    measure("gelu(a*b+c)", 16, n, "a*b+c loop", 16, fma_bound,
            repeat([&] { y = tfm::gelu(a * b + c); }), TFM_EIGEN(eye = eigen_gelu(ea * eb + ec)),
            f32_diff);
    measure("gelu(a*b+c), proposed sigmoid form", 16, n, "a*b+c loop", 16, fma_bound,
            repeat([&] { y = tfm::apply(gelu_sigmoid_form{}, a * b + c); }),
            TFM_EIGEN(eye = eigen_gelu(ea * eb + ec)), f32_diff);
    measure("gelu(a*b+c) vs copy", 16, n, "copy", 8, copy_bound,
            repeat([&] { y = tfm::gelu(a * b + c); }), nullptr, f32_diff);
    measure("a*b+c", 16, n, "a*b+c loop", 16, fma_bound, repeat([&] { y = a * b + c; }),
            TFM_EIGEN(eye = ea * eb + ec), f32_diff);
    measure("a+b", 12, n, "a+b loop", 12, add_bound, repeat([&] { y = a + b; }),
            TFM_EIGEN(eye = ea + eb), f32_diff);
    measure("exp(a)*b", 12, n, "a+b loop", 12, add_bound, repeat([&] { y = tfm::exp(a) * b; }),
            TFM_EIGEN(eye = ea.exp() * eb), f32_diff);
    measure("where(a>0, a, 0.01a)", 8, n, "copy", 8, copy_bound,
            repeat([&] { y = tfm::where(a > 0.0f, a, 0.01f * a); }),
            TFM_EIGEN(eye = (ea > 0.0f).select(ea, 0.01f * ea)), f32_diff);
    {
      const index_t m = rows * 768;
#if defined(TFM_BENCH_HAVE_EIGEN)
      using rm = Eigen::Array<float, Eigen::Dynamic, 768, Eigen::RowMajor>;
      Eigen::Map<const rm, Eigen::Aligned64> ex(x.data(), rows, 768);
      Eigen::Map<rm, Eigen::Aligned64> exy(xye.data(), rows, 768);
      Eigen::Map<const Eigen::Array<float, 1, 768>, Eigen::Aligned64> eb2(bias.data());
      auto rows_diff = [&] { return max_abs_diff(xy.data(), xye.data(), m); };
#else
      auto rows_diff = [] { return -1.0; };
#endif
      measure("x + bias (rows of 768)", 8, m, "copy", 8, rows_copy_bound,
              repeat([&] { xy = x + bias; }), TFM_EIGEN(exy = ex.rowwise() + eb2), rows_diff);
    }
    {
#if defined(TFM_BENCH_HAVE_EIGEN)
      using bfa = Eigen::Array<Eigen::bfloat16, Eigen::Dynamic, 1>;
      static_assert(sizeof(Eigen::bfloat16) == sizeof(tfm::bf16));
      Eigen::Map<const bfa, Eigen::Aligned64> ha(
          reinterpret_cast<const Eigen::bfloat16*>(ah.data()), n),
          hb(reinterpret_cast<const Eigen::bfloat16*>(bh.data()), n),
          hc(reinterpret_cast<const Eigen::bfloat16*>(ch.data()), n);
      Eigen::Map<bfa, Eigen::Aligned64> hy(reinterpret_cast<Eigen::bfloat16*>(yeh.data()), n);
      auto bf_diff = [&] { return max_abs_diff(yh.data(), yeh.data(), n); };
#else
      auto bf_diff = [] { return -1.0; };
#endif
      // Compute in float, round once on store (what typeformer does for bf16 storage).
      measure("bf16 gelu(a*b+c)", 8, n, "a*b+c loop (f32)", 16, fma_bound,
              repeat([&] { yh = tfm::gelu(ah * bh + ch); }),
              TFM_EIGEN(hy = eigen_gelu(ha.cast<float>() * hb.cast<float>() + hc.cast<float>())
                                 .cast<Eigen::bfloat16>()),
              bf_diff);
      measure("bf16 gelu(a*b+c), proposed sigmoid form", 8, n, "a*b+c loop (f32)", 16, fma_bound,
              repeat([&] { yh = tfm::apply(gelu_sigmoid_form{}, ah * bh + ch); }), nullptr,
              bf_diff);
    }
#undef TFM_EIGEN
    print_rows(threads, inner);
  }
  return 0;
}
