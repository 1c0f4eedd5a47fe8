// bench/moe/bench_moe_layer.cpp
//
// Issue 22's first figure: a mixture-of-experts layer (E = 8 SwiGLU experts, top k = 2, width
// C = 384, expert FFN F = 1536, 4096 tokens) forward + backward, against a dense SwiGLU FFN of the
// same active FLOPs (width 384, FFN k F = 3072), in the same run, f32.
//
//   moe    y = moe_experts(x, route, W_gate, W_up, W_down) (ops/moe_experts.hpp), sum(y).backward()
//          with gradients to x, the gates and the three expert tables
//   dense  y = linear(silu(linear(x, W_gate)) * linear(x, W_up), W_down) (nn/layers.hpp's SwiGLU
//          mlp written with the same ops), sum(y).backward() with gradients to x and the weights
//
// Both go through autodiff (one step = forward, backward, gradients released). The route is
// fixed: each token picks 2 distinct experts uniformly at random (seed 1), gates = a softmax over
// the two chosen logits (Mixtral), no drops, so the experts get ~1024 rows each. Timed in pairs
// (dense, moe, dense, ...: bench_util.hpp's pairing): medians of each side, the median of the
// per-pair ratios, and each side's fastest process CPU time per step (the figure least disturbed
// by other work on a shared machine). Then the MoE kernels (backend/cpu/moe.hpp) alone, step by
// step, with a cache reused across calls (fastest process CPU time of the repeats, all threads):
//
//   group      moe_group (stable counting sort of the 8192 slots)
//   gather     xg = x[token of each grouped row]
//   experts    per expert: the gate and up GEMMs, SwiGLU, the down GEMM
//   combine    y[n] = sum_j gates * o
//   backward   moe_ffn_backward, every gradient
//   SwiGLU     the elementwise passes over all rows (forward: h; backward: sigmoid, d_a, d_b)
//   GEMMs      the 9 GEMMs of forward + backward alone, on the grouped shapes and on the dense
//              FFN's (M = 4096): whether grouping costs GEMM efficiency
// Figures: bench/moe/RESULTS.md.
//
//   bench_moe_layer [--tokens 4096] [--width 384] [--ffn 1536] [--experts 8] [--k 2]
//                   [--repeats 7] [--threads 1,2]
#include "bench_util.hpp"
#include "typeformer/backend/cpu/gemm.hpp"
#include "typeformer/backend/cpu/moe.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/ops/elementwise.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/moe_experts.hpp"
#include "typeformer/ops/reduce.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
using S2 = tfm::shape<tfm::dyn, tfm::dyn>;
using S3 = tfm::shape<tfm::dyn, tfm::dyn, tfm::dyn>;
namespace ck = tfm::cpu_kernels;

struct settings {
  index_t tokens = 4096, C = 384, F = 1536, E = 8, k = 2;
  int repeats = 7;
  std::vector<int> threads{1, 2};
};

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--tokens")
      s.tokens = std::atoll(v);
    else if (a == "--width")
      s.C = std::atoll(v);
    else if (a == "--ffn")
      s.F = std::atoll(v);
    else if (a == "--experts")
      s.E = std::atoll(v);
    else if (a == "--k")
      s.k = std::atoll(v);
    else if (a == "--repeats")
      s.repeats = std::atoi(v);
    else if (a == "--threads") {
      s.threads.clear();
      for (const char* p = v; *p;) {
        s.threads.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    } else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      std::exit(2);
    }
  }
  return s;
}

template <class S>
tfm::tensor<float, S> random_tensor(const S& s, std::mt19937& g, float scale) {
  tfm::tensor<float, S> t(s);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = u(g);
  return t;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

/// The fastest process CPU time of fn over `repeats` runs after one warm-up (all threads' time:
/// with 2 threads about twice the wall time of a well-split kernel).
template <class F>
double fastest_cpu(F&& fn, int repeats) {
  fn();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    tfm_bench::clobber_memory();
    const double c0 = process_cpu_seconds();
    fn();
    tfm_bench::clobber_memory();
    best = std::min(best, process_cpu_seconds() - c0);
  }
  return best;
}

/// bench_util.hpp's paired_medians (peer, candidate, peer, ...: medians and the median of the
/// per-pair ratios candidate / peer) plus each side's fastest process CPU time: on the shared
/// VM the least disturbed figure.
struct pair_result {
  double peer_s = 0, candidate_s = 0, ratio = 0, peer_cpu = 1e30, candidate_cpu = 1e30;
};

template <class Peer, class Candidate>
pair_result time_pairs(Peer&& peer, Candidate&& candidate, int repeats) {
  const auto once = [](auto& fn, double& cpu_min) {
    tfm_bench::clobber_memory();
    const double c0 = process_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    tfm_bench::clobber_memory();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu_min = std::min(cpu_min, process_cpu_seconds() - c0);
    return wall;
  };
  pair_result out;
  double skip = 1e30;
  once(peer, skip);
  once(candidate, skip);
  std::vector<double> a, b, r;
  for (int i = 0; i < repeats; ++i) {
    a.push_back(once(peer, out.peer_cpu));
    b.push_back(once(candidate, out.candidate_cpu));
    r.push_back(b.back() / a.back());
  }
  const auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  out.peer_s = median(a);
  out.candidate_s = median(b);
  out.ratio = median(r);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const settings s = parse(argc, argv);
  const index_t N = s.tokens, C = s.C, F = s.F, E = s.E, K = s.k, FD = s.k * s.F;
  std::mt19937 g(1);
  // The route: k distinct experts per token, uniform; softmax over the chosen logits.
  tfm::moe_route<float> route;
  route.tokens = N;
  route.k = K;
  route.n_expert = E;
  route.expert.resize(static_cast<std::size_t>(N * K));
  tfm::tensor<float, S2> gates_t(S2(N, K));
  std::normal_distribution<float> logit(0, 1);
  for (index_t n = 0; n < N; ++n) {
    std::vector<int> perm(static_cast<std::size_t>(E));
    for (index_t e = 0; e < E; ++e) perm[static_cast<std::size_t>(e)] = static_cast<int>(e);
    std::shuffle(perm.begin(), perm.end(), g);
    float z = 0;
    for (index_t j = 0; j < K; ++j) {
      route.expert[static_cast<std::size_t>(n * K + j)] = perm[static_cast<std::size_t>(j)];
      gates_t(n, j) = std::exp(logit(g));
      z += gates_t(n, j);
    }
    for (index_t j = 0; j < K; ++j) gates_t(n, j) /= z;
  }
  const float ws = 1.0f / std::sqrt(static_cast<float>(C)), wd_s = 1.0f / std::sqrt(float(F));
  auto x = tfm::parameter(random_tensor(S2(N, C), g, 1.0f));
  auto gates = tfm::parameter(gates_t);
  route.gates = gates;
  auto wg = tfm::parameter(random_tensor(S3(E, F, C), g, ws));
  auto wu = tfm::parameter(random_tensor(S3(E, F, C), g, ws));
  auto wd = tfm::parameter(random_tensor(S3(E, C, F), g, wd_s));
  auto dg = tfm::parameter(random_tensor(S2(FD, C), g, ws));
  auto du = tfm::parameter(random_tensor(S2(FD, C), g, ws));
  auto dd = tfm::parameter(random_tensor(S2(C, FD), g, 1.0f / std::sqrt(float(FD))));

  auto release = [&] {
    x.zero_grad();
    gates.zero_grad();
    wg.zero_grad();
    wu.zero_grad();
    wd.zero_grad();
    dg.zero_grad();
    du.zero_grad();
    dd.zero_grad();
  };
  auto moe_step = [&] {
    tfm::sum(tfm::moe_experts(x, route, wg, wu, wd)).backward();
    release();
  };
  auto dense_step = [&] {
    tfm::sum(tfm::linear(tfm::silu(tfm::linear(x, dg)) * tfm::linear(x, du), dd)).backward();
    release();
  };

  // The kernels alone, on raw buffers.
  tfm::moe_ffn_problem<float> p;
  p.tokens = N;
  p.k = K;
  p.n_expert = E;
  p.C = C;
  p.F = F;
  p.expert = route.expert.data();
  p.gates = gates.value().data();
  p.x = x.value().data();
  p.w_gate = wg.value().data();
  p.w_up = wu.value().data();
  p.w_down = wd.value().data();
  tfm::moe_ffn_cache<float> cache;
  std::vector<float> y(static_cast<std::size_t>(N * C)), dy(y.size(), 1.0f), dx(y.size()),
      dgt(static_cast<std::size_t>(N * K)), dwg(static_cast<std::size_t>(E * F * C)),
      dwu(dwg.size()), dwd(dwg.size());
  tfm::moe_ffn_grads<float> gr;
  gr.x = {dx.data(), false};
  gr.gates = {dgt.data(), false};
  gr.w_gate = {dwg.data(), false};
  gr.w_up = {dwu.data(), false};
  gr.w_down = {dwd.data(), false};
  // Scratch for the bare GEMMs (the largest expert's rows; dense: all tokens).
  std::vector<float> s1(static_cast<std::size_t>(N * FD)), s2(s1.size()), s3(s1.size()),
      s4(static_cast<std::size_t>(N * C)), sw(static_cast<std::size_t>(FD * C));
  using steps = tfm::detail::moe::cpu_steps<float>;

  std::printf("MoE layer: tokens %lld, E %lld, k %lld, C %lld, F %lld; dense FFN %lld; f32\n",
              static_cast<long long>(N), static_cast<long long>(E), static_cast<long long>(K),
              static_cast<long long>(C), static_cast<long long>(F), static_cast<long long>(FD));
  const double flops = 2.0 * 3 * 3 * double(N) * double(K) * double(F) * double(C);
  for (const int t : s.threads) {
    tfm::thread_scope ts(t);
    const pair_result r = time_pairs(dense_step, moe_step, s.repeats);
    std::printf(
        "threads %d: dense %.0f tok/s (%.3f s, %.1f GFLOP/s), moe %.0f tok/s (%.3f s, %.1f "
        "GFLOP/s), moe/dense tokens/s %.3f (median of pairs; medians %.3f); process CPU s per "
        "step (fastest): dense %.3f, moe %.3f, ratio %.3f\n",
        t, double(N) / r.peer_s, r.peer_s, flops / r.peer_s * 1e-9, double(N) / r.candidate_s,
        r.candidate_s, flops / r.candidate_s * 1e-9, 1.0 / r.ratio, r.peer_s / r.candidate_s,
        r.peer_cpu, r.candidate_cpu, r.peer_cpu / r.candidate_cpu);

    const int rep = s.repeats;
    const double t_group =
        fastest_cpu([&] { tfm::moe_group(p.expert, N, K, E, cache.groups); }, rep);
    tfm::moe_ffn_forward(tfm::cpu{}, p, cache, y.data());
    const double t_gather = fastest_cpu([&] { steps::gather(p, cache); }, rep);
    const double t_experts = fastest_cpu(
        [&] {
          for (index_t e = 0; e < E; ++e) steps::expert_forward(p, cache, e);
        },
        rep);
    const double t_combine = fastest_cpu([&] { steps::combine(p, cache, y.data()); }, rep);
    const double t_fwd =
        fastest_cpu([&] { tfm::moe_ffn_forward(tfm::cpu{}, p, cache, y.data()); }, rep);
    const double t_bwd =
        fastest_cpu([&] { tfm::moe_ffn_backward(tfm::cpu{}, p, cache, dy.data(), gr); }, rep);
    // The 9 GEMMs of forward + backward per expert, alone.
    auto gemms = [&](index_t m) {
      float *a = s1.data(), *b = s2.data(), *h = s3.data(), *o = s4.data(), *w = sw.data();
      const float* xin = cache.xg.data();
      const index_t f = m == N ? FD : F;
      ck::gemm<float>(false, true, m, f, C, 1.0f, xin, C, p.w_gate, C, 0.0f, a, f);
      ck::gemm<float>(false, true, m, f, C, 1.0f, xin, C, p.w_up, C, 0.0f, b, f);
      ck::gemm<float>(false, true, m, C, f, 1.0f, h, f, p.w_down, f, 0.0f, o, C);
      ck::gemm<float>(false, false, m, f, C, 1.0f, o, C, p.w_down, f, 0.0f, h, f);  // d_h
      ck::gemm<float>(true, false, C, f, m, 1.0f, o, C, h, f, 0.0f, w, f);          // dW_down
      ck::gemm<float>(true, false, f, C, m, 1.0f, a, f, xin, C, 0.0f, w, C);        // dW_gate
      ck::gemm<float>(true, false, f, C, m, 1.0f, b, f, xin, C, 0.0f, w, C);        // dW_up
      ck::gemm<float>(false, false, m, C, f, 1.0f, a, f, p.w_gate, C, 0.0f, o, C);  // d_x
      ck::gemm<float>(false, false, m, C, f, 1.0f, b, f, p.w_up, C, 1.0f, o, C);
    };
    const double t_gemm = fastest_cpu(
        [&] {
          for (index_t e = 0; e < E; ++e) gemms(cache.groups.count(e));
        },
        rep);
    const double t_dense_gemm = fastest_cpu([&] { gemms(N); }, rep);
    // The SwiGLU's elementwise passes over all rows, as the kernels run them (forward: h;
    // backward: sigmoid, d_a, d_b).
    const index_t RF = std::min<index_t>(cache.groups.rows() * F, index_t(s3.size()));
    using fv = tfm::tensor_view<const float, tfm::dyn_shape<1>>;
    const tfm::dyn_shape<1> rf(RF);
    const fv av(cache.a.data(), rf), bv(cache.b.data(), rf), hv(cache.d_h.data(), rf),
        sv(cache.d_s.data(), rf);
    const double t_swiglu_f =
        fastest_cpu([&] { tfm::evaluate_contiguous(cache.h.data(), RF, tfm::silu(av) * bv); }, rep);
    const double t_swiglu_b = fastest_cpu(
        [&] {
          tfm::evaluate_contiguous(cache.d_s.data(), RF, tfm::sigmoid(av));
          tfm::evaluate_contiguous(cache.d_a.data(), RF, hv * bv * sv * (1.0f + av * (1.0f - sv)));
          tfm::evaluate_contiguous(s3.data(), RF, hv * av * sv);  // (d_b; kept out of d_h)
        },
        rep);
    const double tot = t_fwd + t_bwd;
    const double small = t_group + t_gather + t_combine;
    std::printf(
        "  kernels (CPU ms): forward %.1f = group %.2f + gather %.2f + experts %.1f (SwiGLU "
        "elementwise %.1f) + combine %.2f; backward %.1f (SwiGLU elementwise %.1f); grouping + "
        "gather + combine %.2f ms = %.2f%% of forward + backward; GEMMs alone: grouped %.1f, "
        "dense %.1f\n",
        t_fwd * 1e3, t_group * 1e3, t_gather * 1e3, t_experts * 1e3, t_swiglu_f * 1e3,
        t_combine * 1e3, t_bwd * 1e3, t_swiglu_b * 1e3, small * 1e3, 100 * small / tot,
        t_gemm * 1e3, t_dense_gemm * 1e3);
  }
  return 0;
}
