// Grouped MoE expert kernels (issue 22 item 4): backend/{cpu,reference}/moe.hpp and the op
// ops/moe_experts.hpp.
//   - moe_group against a naive stable sort written here (exactly), workspace reuse;
//   - cpu against the reference loop (forward and every gradient, assigned and accumulated) on
//     random routes with uneven loads, an expert with no tokens, dropped slots and a token whose
//     slots are all dropped, over sizes 0, 1, odd and past a GEMM block;
//   - the reference loop against a dense composition of autodiff ops (per token and slot, the
//     llama SwiGLU mlp down(silu(gate x) * up x) of nn/layers.hpp), values and gradients;
//   - 1 and 2 threads bitwise;
//   - float64 gradient checks of every op of TFM_MOE_EXPERT_OPS (count tripwire);
//   - bad shapes and ids: tfm errors that name the extents.
#include "tfm_test.hpp"

#include <doctest/doctest.h>
#include <typeformer/autodiff/registry.hpp>
#include <typeformer/backend/cpu/moe.hpp>
#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/backend/reference/moe.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/linear.hpp>
#include <typeformer/ops/matmul.hpp>
#include <typeformer/ops/moe_experts.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/ops/view.hpp>
#include <typeformer/testing/gradcheck.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <vector>

using namespace tfm;
using S2 = shape<dyn, dyn>;
using S3 = shape<dyn, dyn, dyn>;

namespace {

struct dims {
  index_t N, k, E, C, F;
};

/// A random problem: token n picks k distinct experts, expert 0 about three times as likely as
/// the others (uneven loads), expert E-1 never when `empty_expert` (and E > k); each slot is
/// dropped (-1, gate 0) with probability `drop`; token 0's slots all dropped when N > 1.
template <class T>
struct problem_data {
  dims d;
  std::vector<std::int32_t> expert;
  std::vector<T> gates, x, wg, wu, wd;

  moe_ffn_problem<T> view() const {
    moe_ffn_problem<T> p;
    p.tokens = d.N;
    p.k = d.k;
    p.n_expert = d.E;
    p.C = d.C;
    p.F = d.F;
    p.expert = expert.data();
    p.gates = gates.data();
    p.x = x.data();
    p.w_gate = wg.data();
    p.w_up = wu.data();
    p.w_down = wd.data();
    return p;
  }
};

std::vector<std::int32_t> random_route(const dims& d, std::mt19937& g, double drop,
                                       bool empty_expert) {
  std::vector<std::int32_t> ex(static_cast<std::size_t>(d.N * d.k), -1);
  const index_t usable = empty_expert && d.E > d.k ? d.E - 1 : d.E;
  std::vector<double> w(static_cast<std::size_t>(usable), 1.0);
  if (usable > 1) w[0] = 3.0;
  std::uniform_real_distribution<double> u(0, 1);
  for (index_t n = 0; n < d.N; ++n) {
    std::vector<double> left = w;
    for (index_t j = 0; j < d.k && j < usable; ++j) {
      std::discrete_distribution<int> pick(left.begin(), left.end());
      const int e = pick(g);
      left[static_cast<std::size_t>(e)] = 0;
      const bool dropped = u(g) < drop || (n == 0 && d.N > 1);
      ex[static_cast<std::size_t>(n * d.k + j)] = dropped ? -1 : e;
    }
  }
  return ex;
}

template <class T>
problem_data<T> random_problem(const dims& d, std::mt19937& g, double drop = 0.2,
                               bool empty_expert = true) {
  problem_data<T> p;
  p.d = d;
  p.expert = random_route(d, g, drop, empty_expert);
  p.gates = tfm_test::random_vector<T>(static_cast<std::size_t>(d.N * d.k), g, 0.1, 1.0);
  for (std::size_t s = 0; s < p.expert.size(); ++s)
    if (p.expert[s] < 0) p.gates[s] = T(0);
  p.x = tfm_test::random_vector<T>(static_cast<std::size_t>(d.N * d.C), g, -1, 1);
  const auto n = static_cast<std::size_t>(d.E * d.F * d.C);
  p.wg = tfm_test::random_vector<T>(n, g, -0.5, 0.5);
  p.wu = tfm_test::random_vector<T>(n, g, -0.5, 0.5);
  p.wd = tfm_test::random_vector<T>(n, g, -0.5, 0.5);
  return p;
}

/// Every gradient of a backward, in separate vectors (prefilled: the accumulate targets).
template <class T>
struct grads {
  std::vector<T> x, gates, wg, wu, wd;
  moe_ffn_grads<T> targets(bool accumulate) {
    moe_ffn_grads<T> g;
    g.x = {x.data(), accumulate};
    g.gates = {gates.data(), accumulate};
    g.w_gate = {wg.data(), accumulate};
    g.w_up = {wu.data(), accumulate};
    g.w_down = {wd.data(), accumulate};
    return g;
  }
};

template <class T>
grads<T> prefilled(const dims& d, std::mt19937& g) {
  const auto w = static_cast<std::size_t>(d.E * d.F * d.C);
  return {tfm_test::random_vector<T>(static_cast<std::size_t>(d.N * d.C), g, -1, 1),
          tfm_test::random_vector<T>(static_cast<std::size_t>(d.N * d.k), g, -1, 1),
          tfm_test::random_vector<T>(w, g, -1, 1), tfm_test::random_vector<T>(w, g, -1, 1),
          tfm_test::random_vector<T>(w, g, -1, 1)};
}

}  // namespace

TEST_CASE("moe_group: a stable counting sort of the slots by expert, reusing its workspace") {
  auto g = tfm_test::rng(1);
  const dims d{37, 3, 5, 1, 1};
  const auto ex = random_route(d, g, 0.25, true);
  moe_groups gr;
  moe_group(ex.data(), d.N, d.k, d.E, gr);
  // The naive stable sort: for each expert, its slots in order.
  std::vector<index_t> want_slot, want_off{0};
  for (index_t e = 0; e < d.E; ++e) {
    for (index_t s = 0; s < d.N * d.k; ++s)
      if (ex[static_cast<std::size_t>(s)] == e) want_slot.push_back(s);
    want_off.push_back(static_cast<index_t>(want_slot.size()));
  }
  CHECK(gr.offsets == want_off);
  CHECK(gr.slot == want_slot);
  CHECK(gr.count(d.E - 1) == 0);  // the empty expert
  for (index_t s = 0; s < d.N * d.k; ++s) {
    const index_t r = gr.row_of[static_cast<std::size_t>(s)];
    if (ex[static_cast<std::size_t>(s)] < 0) {
      CHECK(r == -1);
    } else {
      REQUIRE(r >= 0);
      CHECK(gr.slot[static_cast<std::size_t>(r)] == s);
    }
  }
  // A second route of the same size: same buffers, no allocation.
  const auto ex2 = random_route(d, g, 0.0, false);
  const auto* p_off = gr.offsets.data();
  const auto* p_row = gr.row_of.data();
  gr.slot.reserve(static_cast<std::size_t>(d.N * d.k));
  const auto* p_slot = gr.slot.data();
  moe_group(ex2.data(), d.N, d.k, d.E, gr);
  CHECK(gr.offsets.data() == p_off);
  CHECK(gr.row_of.data() == p_row);
  CHECK(gr.slot.data() == p_slot);
  CHECK(gr.rows() == std::count_if(ex2.begin(), ex2.end(), [](std::int32_t e) { return e >= 0; }));
  // Edge cases: no tokens, every slot dropped, an id out of range.
  moe_group(ex.data(), 0, 2, 3, gr);
  CHECK(gr.rows() == 0);
  const std::vector<std::int32_t> dropped(6, -1);
  moe_group(dropped.data(), 3, 2, 3, gr);
  CHECK(gr.rows() == 0);
  CHECK(std::all_of(gr.row_of.begin(), gr.row_of.end(), [](index_t r) { return r == -1; }));
  const std::vector<std::int32_t> bad{0, 1, 3, -1};
  CHECK_THROWS_WITH_AS(moe_group(bad.data(), 2, 2, 3, gr),
                       doctest::Contains("slot 2 (token 1, j 0) routes to expert 3"), index_error);
}

TEST_CASE_TEMPLATE("moe_ffn cpu matches the reference loop on random routes", T, float, double) {
  auto g = tfm_test::rng(2);
  // NMSE bounds: float GEMMs (float sums) against double accumulation.
  const double tol = std::is_same_v<T, float> ? 1e-10 : 1e-24;
  const dims cases[] = {{1, 1, 1, 1, 1},    {0, 2, 3, 8, 16},   {2, 1, 2, 3, 2},
                        {7, 2, 4, 16, 24},  {33, 2, 8, 17, 31}, {129, 3, 5, 33, 65},
                        {300, 2, 4, 40, 72}};
  for (const dims& d : cases) {
    INFO("N ", d.N, " k ", d.k, " E ", d.E, " C ", d.C, " F ", d.F);
    const auto pd = random_problem<T>(d, g);
    const auto p = pd.view();
    moe_ffn_cache<T> cc, rc;
    std::vector<T> yc(static_cast<std::size_t>(d.N * d.C)), yr(yc.size());
    moe_ffn_forward(cpu{}, p, cc, yc.data());
    moe_ffn_forward(reference{}, p, rc, yr.data());
    auto rep = tfm_test::compare(yc, yr, tol);
    CHECK_MESSAGE(rep.ok, "y: ", rep.str());
    const auto dy = tfm_test::random_vector<T>(yc.size(), g, -1, 1);
    for (const bool add : {false, true}) {
      INFO((add ? "accumulate" : "assign"));
      auto gc = prefilled<T>(d, g);
      auto gr = gc;
      moe_ffn_backward(cpu{}, p, cc, dy.data(), gc.targets(add));
      moe_ffn_backward(reference{}, p, rc, dy.data(), gr.targets(add));
      const std::pair<const char*, std::pair<std::vector<T>*, std::vector<T>*>> all[] = {
          {"dx", {&gc.x, &gr.x}},
          {"dgates", {&gc.gates, &gr.gates}},
          {"dw_gate", {&gc.wg, &gr.wg}},
          {"dw_up", {&gc.wu, &gr.wu}},
          {"dw_down", {&gc.wd, &gr.wd}}};
      for (const auto& e : all) {  // no structured binding: doctest's macros capture `what`
        const char* what = e.first;
        const auto& v = e.second;
        rep = tfm_test::compare(*v.first, *v.second, tol);
        CHECK_MESSAGE(rep.ok, what, ": ", rep.str());
      }
    }
    // Only some gradients wanted: the others untouched.
    auto gc = prefilled<T>(d, g);
    const auto before = gc;
    moe_ffn_grads<T> only;
    only.w_down = {gc.wd.data(), false};
    moe_ffn_backward(cpu{}, p, cc, dy.data(), only);
    CHECK(gc.x == before.x);
    CHECK(gc.wg == before.wg);
    CHECK(gc.gates == before.gates);
  }
}

namespace {

/// The dense composition of autodiff ops: per token and slot, down(silu(gate x) * up x) of the
/// slot's expert, weighted by its gate (matmul of the gate row with the stacked outputs).
template <class X, class G, class W>
auto dense_moe(const X& x, const std::vector<std::int32_t>& expert, index_t k, const G& gates,
               const W& wg, const W& wu, const W& wd) {
  const index_t N = x.extent(0), C = x.extent(1), F = wg.extent(1);
  std::vector<var<double, S2>> rows;
  for (index_t n = 0; n < N; ++n) {
    auto xn = slice<0>(x, n, n + 1);  // (1, C)
    std::vector<var<double, S2>> outs, gs;
    for (index_t j = 0; j < k; ++j) {
      const index_t e = expert[static_cast<std::size_t>(n * k + j)];
      if (e < 0) continue;
      auto g = reshape(slice<0>(wg, e, e + 1), S2(F, C));
      auto u = reshape(slice<0>(wu, e, e + 1), S2(F, C));
      auto dn = reshape(slice<0>(wd, e, e + 1), S2(C, F));
      outs.push_back(linear(silu(linear(xn, g)) * linear(xn, u), dn));  // (1, C)
      gs.push_back(slice<1>(slice<0>(gates, n, n + 1), j, j + 1));      // (1, 1)
    }
    if (outs.empty()) {
      tensor<double, S2> z(S2(1, C));
      z.fill(0.0);
      rows.push_back(constant(z));
    } else {
      rows.push_back(matmul(concat<1>(gs), concat<0>(outs)));  // (1, kn) (kn, C)
    }
  }
  return concat<0>(rows);
}

template <class T, class S>
std::vector<double> grad_vec(const var<T, S>& v) {
  std::vector<double> out(static_cast<std::size_t>(v.size()));
  const auto* g = v.data()->grad_data();
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = g[i];
  return out;
}

}  // namespace

TEST_CASE("moe_ffn reference loop equals the dense llama SwiGLU composition (values, gradients)") {
  auto g = tfm_test::rng(3);
  const dims d{6, 2, 4, 5, 7};
  const auto pd = random_problem<double>(d, g);
  const auto p = pd.view();
  auto x = parameter(tfm_test::make_tensor<tensor<double, S2>>(S2(d.N, d.C), pd.x));
  auto gt = parameter(tfm_test::make_tensor<tensor<double, S2>>(S2(d.N, d.k), pd.gates));
  auto wg = parameter(tfm_test::make_tensor<tensor<double, S3>>(S3(d.E, d.F, d.C), pd.wg));
  auto wu = parameter(tfm_test::make_tensor<tensor<double, S3>>(S3(d.E, d.F, d.C), pd.wu));
  auto wd = parameter(tfm_test::make_tensor<tensor<double, S3>>(S3(d.E, d.C, d.F), pd.wd));
  const auto dyv = tfm_test::random_vector<double>(static_cast<std::size_t>(d.N * d.C), g, -1, 1);
  auto y = dense_moe(x, pd.expert, d.k, gt, wg, wu, wd);
  sum(y * constant(tfm_test::make_tensor<tensor<double, S2>>(S2(d.N, d.C), dyv))).backward();

  moe_ffn_cache<double> rc;
  std::vector<double> yr(dyv.size());
  moe_ffn_forward(reference{}, p, rc, yr.data());
  auto rep = tfm_test::all_close(yr, tfm_test::to_vector(y.value()), 1e-12, 1e-12);
  CHECK_MESSAGE(rep.ok, "y: ", rep.str());
  grads<double> gr{std::vector<double>(dyv.size()), std::vector<double>(pd.gates.size()),
                   std::vector<double>(pd.wg.size()), std::vector<double>(pd.wu.size()),
                   std::vector<double>(pd.wd.size())};
  moe_ffn_backward(reference{}, p, rc, dyv.data(), gr.targets(false));
  const std::pair<const char*, std::pair<std::vector<double>, std::vector<double>>> all[] = {
      {"dx", {gr.x, grad_vec(x)}},
      {"dgates", {gr.gates, grad_vec(gt)}},
      {"dw_gate", {gr.wg, grad_vec(wg)}},
      {"dw_up", {gr.wu, grad_vec(wu)}},
      {"dw_down", {gr.wd, grad_vec(wd)}}};
  for (const auto& e : all) {  // no structured binding: doctest's macros capture `what`
    const char* what = e.first;
    const auto& v = e.second;
    rep = tfm_test::all_close(v.first, v.second, 1e-12, 1e-10);
    CHECK_MESSAGE(rep.ok, what, ": ", rep.str());
  }
}

TEST_CASE("moe_ffn cpu: 1 and 2 threads give bitwise identical results") {
  auto g = tfm_test::rng(4);
  // Both schedules of the cpu backend: one dominant expert (each GEMM split over the threads),
  // balanced enough loads (whole experts per thread), small GEMMs (whole experts per thread),
  // too little work for a second thread (serial).
  struct sched_case {
    dims d;
    bool across;
  };
  for (const sched_case& sc :
       {sched_case{{512, 1, 2, 64, 128}, false}, sched_case{{512, 2, 8, 64, 128}, true},
        sched_case{{128, 2, 8, 64, 256}, true}, sched_case{{3, 2, 4, 64, 128}, false}}) {
    const dims d = sc.d;  // no structured binding: doctest's macros capture d and across
    const bool across = sc.across;
    INFO("N ", d.N, " k ", d.k, " E ", d.E);
    const auto pd = random_problem<float>(d, g, 0.1);
    const auto p = pd.view();
    moe_groups grp;
    moe_group(p.expert, d.N, d.k, d.E, grp);
    CHECK(detail::moe::experts_across(grp, d.F, d.C, 2) == across);
    const auto dy = tfm_test::random_vector<float>(static_cast<std::size_t>(d.N * d.C), g, -1, 1);
    const auto init = prefilled<float>(d, g);
    auto run = [&](int threads, std::vector<float>& y, grads<float>& gr) {
      thread_scope ts(threads);
      moe_ffn_cache<float> c;
      y.assign(static_cast<std::size_t>(d.N * d.C), 0.0f);
      moe_ffn_forward(cpu{}, p, c, y.data());
      gr = init;
      moe_ffn_backward(cpu{}, p, c, dy.data(), gr.targets(true));
    };
    std::vector<float> y1, y2;
    grads<float> g1, g2;
    run(1, y1, g1);
    run(2, y2, g2);
    CHECK(tfm_test::bitwise_diff(y1, y2) == "");
    CHECK(tfm_test::bitwise_diff(g1.x, g2.x) == "");
    CHECK(tfm_test::bitwise_diff(g1.gates, g2.gates) == "");
    CHECK(tfm_test::bitwise_diff(g1.wg, g2.wg) == "");
    CHECK(tfm_test::bitwise_diff(g1.wu, g2.wu) == "");
    CHECK(tfm_test::bitwise_diff(g1.wd, g2.wd) == "");
  }
}

namespace {

/// The op's inputs as float64 parameters, and a route factory for given gates.
struct op_inputs {
  dims d;
  std::vector<std::int32_t> expert;
  var<double, S2> x, gates;
  var<double, S3> wg, wu, wd;
  moe_route<double> route(const var<double, S2>& gt) const {
    moe_route<double> r;
    r.tokens = d.N;
    r.k = d.k;
    r.n_expert = d.E;
    r.expert = expert;
    r.gates = gt;
    return r;
  }
};

op_inputs make_op_inputs(const dims& d, std::mt19937& g) {
  const auto pd = random_problem<double>(d, g);
  op_inputs in;
  in.d = d;
  in.expert = pd.expert;
  in.x = parameter(tfm_test::make_tensor<tensor<double, S2>>(S2(d.N, d.C), pd.x));
  in.gates = parameter(tfm_test::make_tensor<tensor<double, S2>>(S2(d.N, d.k), pd.gates));
  in.wg = parameter(tfm_test::make_tensor<tensor<double, S3>>(S3(d.E, d.F, d.C), pd.wg));
  in.wu = parameter(tfm_test::make_tensor<tensor<double, S3>>(S3(d.E, d.F, d.C), pd.wu));
  in.wd = parameter(tfm_test::make_tensor<tensor<double, S3>>(S3(d.E, d.C, d.F), pd.wd));
  return in;
}

void gc_moe_experts() {
  auto g = tfm_test::rng(5);
  // Uneven loads, expert 4 without tokens, dropped slots (token 0 entirely).
  const op_inputs in = make_op_inputs({9, 2, 5, 6, 5}, g);
  const auto r =
      testing::gradcheck([&](const auto& x, const auto& gt, const auto& wg, const auto& wu,
                             const auto& wd) { return moe_experts(x, in.route(gt), wg, wu, wd); },
                         in.x, in.gates, in.wg, in.wu, in.wd);
  INFO("moe_experts: ", r.str());
  CHECK(r.passed);
  CHECK(r.checked == static_cast<std::size_t>(in.x.size() + in.gates.size() + in.wg.size() +
                                              in.wu.size() + in.wd.size()));
  CHECK(r.max_rel_error < 1e-6);
  MESSAGE("moe_experts gradcheck: max relative error " << r.max_rel_error);
}

struct gc_case {
  std::string_view name;
  void (*run)();
};
constexpr std::array<gc_case, 1> gc_table{{{"moe_experts", gc_moe_experts}}};
static_assert(gc_table.size() == moe_expert_op_count,
              "every op of TFM_MOE_EXPERT_OPS (autodiff/registry.hpp) needs a gradient check in "
              "gc_table");

}  // namespace

TEST_CASE("moe_experts: float64 gradient checks of every op of TFM_MOE_EXPERT_OPS") {
  for (std::size_t i = 0; i < moe_expert_op_count; ++i) {
    const std::string_view name = detail::moe_expert_op_names[i];
    const auto* c = std::find_if(gc_table.begin(), gc_table.end(),
                                 [&](const gc_case& e) { return e.name == name; });
    REQUIRE_MESSAGE(c != gc_table.end(), "no gradient check for ", std::string(name));
    INFO(std::string(name));
    c->run();
  }
}

TEST_CASE("moe_experts op: one node, the cpu kernels' values, accumulating gradients") {
  auto g = tfm_test::rng(6);
  const op_inputs in = make_op_inputs({11, 2, 4, 8, 12}, g);
  auto y = moe_experts(in.x, in.route(in.gates), in.wg, in.wu, in.wd);
  CHECK(std::string_view(y.op_name()) == "moe_experts");
  auto yr = moe_experts<reference>(in.x, in.route(in.gates), in.wg, in.wu, in.wd);
  auto rep = tfm_test::all_close(tfm_test::to_vector(y.value()), tfm_test::to_vector(yr.value()),
                                 1e-13, 1e-12);
  CHECK_MESSAGE(rep.ok, rep.str());
  sum(y).backward();
  const auto g1 = grad_vec(in.wd);
  const auto gx1 = grad_vec(in.x);
  sum(moe_experts(in.x, in.route(in.gates), in.wg, in.wu, in.wd)).backward();
  const auto g2 = grad_vec(in.wd);
  const auto gx2 = grad_vec(in.x);
  for (std::size_t i = 0; i < g1.size(); ++i) REQUIRE(g2[i] == doctest::Approx(2 * g1[i]));
  for (std::size_t i = 0; i < gx1.size(); ++i) REQUIRE(gx2[i] == doctest::Approx(2 * gx1[i]));
  // Only the gates require gradients (a frozen expert table): one node, no weight gradients.
  auto gt = parameter(
      tfm_test::make_tensor<tensor<double, S2>>(S2(11, 2), tfm_test::to_vector(in.gates.value())));
  auto wd = constant(
      tfm_test::make_tensor<tensor<double, S3>>(S3(4, 8, 12), tfm_test::to_vector(in.wd.value())));
  auto x = constant(
      tfm_test::make_tensor<tensor<double, S2>>(S2(11, 8), tfm_test::to_vector(in.x.value())));
  sum(moe_experts(x, in.route(gt), in.wg.detach(), in.wu.detach(), wd)).backward();
  CHECK(gt.has_grad());
  CHECK(!wd.has_grad());
}

TEST_CASE("moe_experts: bad shapes and ids raise tfm errors naming the extents") {
  auto g = tfm_test::rng(7);
  const op_inputs in = make_op_inputs({5, 2, 4, 6, 3}, g);
  const auto r = in.route(in.gates);
  auto x7 = parameter(tfm_test::make_tensor<tensor<double, S2>>(
      S2(5, 7), tfm_test::random_vector<double>(35, g, -1, 1)));
  CHECK_THROWS_WITH_AS(moe_experts(x7, r, in.wg, in.wu, in.wd),
                       doctest::Contains("w_gate (4, 3, 6) has C = 6 but x (5, 7) has C = 7"),
                       shape_error);
  auto x4 = parameter(tfm_test::make_tensor<tensor<double, S2>>(
      S2(4, 6), tfm_test::random_vector<double>(24, g, -1, 1)));
  CHECK_THROWS_WITH_AS(moe_experts(x4, r, in.wg, in.wu, in.wd),
                       doctest::Contains("x (4, 6) has 4 tokens but the route was made for 5"),
                       shape_error);
  CHECK_THROWS_WITH_AS(moe_experts(in.x, r, in.wg, in.wd, in.wd),
                       doctest::Contains("w_up (4, 6, 3) differs from w_gate (4, 3, 6)"),
                       shape_error);
  CHECK_THROWS_WITH_AS(moe_experts(in.x, r, in.wg, in.wu, in.wg),
                       doctest::Contains("w_down is (4, 3, 6), not (E 4, C 6, F 3)"), shape_error);
  auto r3 = r;
  r3.n_expert = 3;
  CHECK_THROWS_WITH_AS(moe_experts(in.x, r3, in.wg, in.wu, in.wd),
                       doctest::Contains("w_gate (4, 3, 6) holds 4 experts but the route has "
                                         "n_expert 3"),
                       shape_error);
  auto rg = in.route(in.x);
  CHECK_THROWS_WITH_AS(moe_experts(in.x, rg, in.wg, in.wu, in.wd),
                       doctest::Contains("the route's gates are (5, 6), not (tokens 5, k 2)"),
                       shape_error);
  auto rs = r;
  rs.expert.pop_back();
  CHECK_THROWS_WITH_AS(moe_experts(in.x, rs, in.wg, in.wu, in.wd),
                       doctest::Contains("the route holds 9 expert ids for 5 tokens x k 2"),
                       shape_error);
  auto ri = r;
  ri.expert[7] = 4;
  CHECK_THROWS_WITH_AS(
      moe_experts(in.x, ri, in.wg, in.wu, in.wd),
      doctest::Contains("slot 7 (token 3, j 1) routes to expert 4, outside [0, 4)"), index_error);
  // The backend: a cache of another problem.
  const auto pd = random_problem<float>({4, 2, 3, 5, 6}, g);
  auto p = pd.view();
  moe_ffn_cache<float> c;
  std::vector<float> y(20), dy(20, 1.0f), dx(20);
  moe_ffn_forward(cpu{}, p, c, y.data());
  p.tokens = 3;
  moe_ffn_grads<float> gr;
  gr.x = {dx.data(), false};
  CHECK_THROWS_WITH_AS(moe_ffn_backward(cpu{}, p, c, dy.data(), gr),
                       doctest::Contains("the cache holds a forward of (tokens 4"), value_error);
  p.tokens = 4;
  moe_ffn_cache<float> rc;
  moe_ffn_forward(reference{}, p, rc, y.data());
  CHECK_THROWS_WITH_AS(moe_ffn_backward(cpu{}, p, rc, dy.data(), gr),
                       doctest::Contains("the cache holds no cpu forward"), value_error);
}
