// Tests of the mixture-of-experts routers and balancing (ops/moe_router.hpp).
//   - Every router kind against tests/data/moe/router_cases.txt, written by gen_router.py with
//     numpy from the papers (selection with the tie rule, capacity dropping, gates, statistics),
//     with gradients by complex-step differentiation there: expert ids exactly, gates and
//     gradients to 1e-12 (double) / 1e-5 (float), aux loss and z-loss values and gradients.
//   - Float64 gradient checks of every op in TFM_MOE_ROUTER_OPS with the count tripwire.
//   - Noisy top-k against a naive loop over tfm::normal_double; capacity dropping by hand; the tie
//     rule; DeepSeek-V3 bias balancing on a skewed synthetic stream; determinism; bad inputs.
#include <doctest/doctest.h>
#include <op_table.hpp>
#include <tfm_test.hpp>
#include <typeformer/autodiff/registry.hpp>
#include <typeformer/autodiff/variable.hpp>
// Vars built from tensors assign through the cpu backend's evaluate().
#include <typeformer/backend/cpu/elementwise.hpp>
#include <typeformer/core/random.hpp>
#include <typeformer/core/tensor.hpp>
#include <typeformer/ops/moe_router.hpp>
#include <typeformer/testing/gradcheck.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

using namespace tfm;
using S2 = dyn_shape<2>;

namespace {

// ---- fixture ------------------------------------------------------------------------------------

const std::map<std::string, std::vector<double>>& fixture() {
  static const auto data =
      tfm_test::read_named_arrays(std::string(TFM_SOURCE_DIR) + "/tests/data/moe/router_cases.txt");
  return data;
}

const std::vector<double>& arr(const std::string& name) {
  auto it = fixture().find(name);
  REQUIRE_MESSAGE(it != fixture().end(), "fixture array missing: ", name);
  return it->second;
}

template <class T>
var<T, S2> make_var(const std::vector<double>& v, index_t N, index_t E, bool grad = true) {
  REQUIRE(static_cast<index_t>(v.size()) == N * E);
  return var<T, S2>(
      tfm_test::make_tensor<tensor<T, S2>>(S2(N, E), std::vector<T>(v.begin(), v.end())), grad);
}

template <class T>
std::vector<double> grad_of(const var<T, S2>& x) {
  auto g = x.grad();
  std::vector<double> out;
  for (index_t i = 0; i < x.extent(0); ++i)
    for (index_t j = 0; j < x.extent(1); ++j) out.push_back(static_cast<double>(g(i, j)));
  return out;
}

template <class T, class S>
std::vector<double> values_of(const var<T, S>& x) {
  std::vector<double> out;
  for (index_t i = 0; i < x.size(); ++i)
    out.push_back(static_cast<double>(x.data()->value.data()[i]));
  return out;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what, ": ", got.size(), " values, want ", want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(what, "[", i, "]: got ", got[i], ", want ", want[i]);
    CHECK(std::isfinite(got[i]));
    CHECK(std::fabs(got[i] - want[i]) <= tol * (1 + std::fabs(want[i])));
  }
}

constexpr moe_router_kind kinds[] = {moe_router_kind::softmax_topk, moe_router_kind::gshard_topk,
                                     moe_router_kind::switch_top1, moe_router_kind::sigmoid_bias,
                                     moe_router_kind::expert_choice};

moe_router_options fixture_options(const std::string& c, std::vector<double>& bias) {
  const auto& d = arr(c + ".dims");  // N E kind k renorm dropless cf scale
  moe_router_options o;
  o.kind = kinds[static_cast<int>(d[2])];
  o.k = static_cast<index_t>(d[3]);
  o.renormalize = d[4] != 0;
  o.dropless = d[5] != 0;
  o.capacity_factor = d[6];
  o.gate_scale = d[7];
  bias = arr(c + ".bias");
  if (o.kind == moe_router_kind::sigmoid_bias) o.bias = bias;
  return o;
}

template <class T>
void run_fixture_case(const std::string& c, double tol) {
  INFO("case ", c, " (", sizeof(T) == 8 ? "double" : "float", ")");
  const auto& d = arr(c + ".dims");
  const index_t N = static_cast<index_t>(d[0]), E = static_cast<index_t>(d[1]);
  std::vector<double> bias;
  const auto opt = fixture_options(c, bias);
  auto logits = make_var<T>(arr(c + ".logits"), N, E);
  auto r = moe_route_tokens(logits, opt);
  const auto& st = arr(c + ".stats");  // K capacity dropped entropy
  const index_t K = static_cast<index_t>(st[0]);
  REQUIRE(r.route.k == K);
  CHECK(r.route.tokens == N);
  CHECK(r.route.n_expert == E);
  CHECK(r.stats.k == K);
  CHECK(r.stats.capacity == static_cast<index_t>(st[1]));
  CHECK(r.stats.dropped == static_cast<index_t>(st[2]));
  check_close({r.stats.entropy}, {st[3]}, 1e-12, "entropy");
  // Expert ids and statistics: exactly.
  const auto& want_e = arr(c + ".expert");
  REQUIRE(r.route.expert.size() == want_e.size());
  for (std::size_t i = 0; i < want_e.size(); ++i) {
    INFO("slot ", i, " (token ", i / K, ")");
    CHECK(r.route.expert[i] == static_cast<int>(want_e[i]));
  }
  for (index_t e = 0; e < E; ++e) {
    CHECK(r.stats.selected[e] == static_cast<index_t>(arr(c + ".selected")[e]));
    CHECK(r.stats.load[e] == static_cast<index_t>(arr(c + ".load")[e]));
  }
  REQUIRE(r.route.gates.extent(0) == N);
  REQUIRE(r.route.gates.extent(1) == K);
  check_close(values_of(r.route.gates), arr(c + ".gates"), tol, "gates");
  for (std::size_t i = 0; i < want_e.size(); ++i)
    if (r.route.expert[i] < 0) CHECK(r.route.gates.data()->value.data()[i] == T(0));
  // d sum(w * gates) / d logits, seeding the gates' gradient with w.
  {
    const auto& w = arr(c + ".w");
    auto* g = r.route.gates.data()->grad_data();
    for (std::size_t i = 0; i < w.size(); ++i) g[i] = static_cast<T>(w[i]);
    backward_seeded(r.route.gates.data());
    check_close(grad_of(logits), arr(c + ".dgates"), tol, "d gates");
  }
  // Balancing losses (coefficient 1: the fixture's values are the bare formulas).
  if (opt.kind != moe_router_kind::expert_choice) {
    auto l1 = make_var<T>(arr(c + ".logits"), N, E);
    auto aux = moe_aux_loss(l1, r.stats, 1.0);
    check_close({static_cast<double>(aux.item())}, arr(c + ".aux"), tol, "aux loss");
    aux.backward();
    check_close(grad_of(l1), arr(c + ".daux"), tol, "d aux loss");
  }
  auto l2 = make_var<T>(arr(c + ".logits"), N, E);
  auto z = moe_z_loss(l2, 1.0);
  check_close({static_cast<double>(z.item())}, arr(c + ".z"), tol, "z-loss");
  z.backward();
  check_close(grad_of(l2), arr(c + ".dz"), tol, "d z-loss");
}

std::vector<std::string> fixture_cases() {
  // The generator's second line lists the case names ("# a b c").
  std::ifstream f(std::string(TFM_SOURCE_DIR) + "/tests/data/moe/router_cases.txt");
  std::string line;
  std::getline(f, line);
  std::getline(f, line);
  std::istringstream s(line);
  std::vector<std::string> names;
  std::string w;
  s >> w;  // "#"
  while (s >> w) names.push_back(w);
  return names;
}

/// Random logits (N, E) whose values in a row differ pairwise by more than 1e-3, so a central
/// difference of 1e-6 never changes the selection (expert-choice compares probabilities across
/// tokens: random rows keep those apart too).
tensor<double, S2> separated_logits(index_t N, index_t E, std::mt19937& g, double skew = 0) {
  auto t = tfm_test::random_tensor<tensor<double, S2>>(S2(N, E), g, -2.0, 2.0);
  for (index_t n = 0; n < N; ++n)
    for (index_t e = 0; e < E; ++e)
      t(n, e) =
          std::round(t(n, e) * 50) / 50 + 0.003 * static_cast<double>(e) + (e == 0 ? skew : 0.0);
  return t;
}

// ---- gradient checks (TFM_MOE_ROUTER_OPS) -------------------------------------------------------

std::map<std::string, double>& worst() {
  static std::map<std::string, double> m;
  return m;
}

void expect(const char* op, const std::string& what, const testing::gradcheck_result& r) {
  INFO(op, " (", what, "): ", r.str());
  CHECK(r.passed);
  CHECK(r.checked > 0);
  CHECK(r.max_rel_error < 1e-6);
  auto& w = worst()[op];
  w = std::max(w, r.max_rel_error);
}

void gc_moe_gates() {
  auto g = tfm_test::rng(101);
  const std::vector<double> bias = {0.1, -0.2, 0.05, 0.3, -0.1, 0.0};
  struct cfg {
    const char* name;
    moe_router_options o;
    double skew;
  };
  std::vector<cfg> cs;
  auto add = [&](const char* name, moe_router_kind k, index_t topk, bool renorm, bool dropless,
                 double cf, double scale, double skew) {
    moe_router_options o;
    o.kind = k;
    o.k = topk;
    o.renormalize = renorm;
    o.dropless = dropless;
    o.capacity_factor = cf;
    o.gate_scale = scale;
    if (k == moe_router_kind::sigmoid_bias) o.bias = bias;
    cs.push_back({name, o, skew});
  };
  add("softmax_topk k=2", moe_router_kind::softmax_topk, 2, false, true, 1, 1, 0);
  add("softmax_topk k=2 capacity 1.0", moe_router_kind::softmax_topk, 2, false, false, 1, 1, 3);
  add("gshard_topk k=2", moe_router_kind::gshard_topk, 2, false, true, 1, 1, 0);
  add("gshard_topk k=3 renorm, capacity", moe_router_kind::gshard_topk, 3, true, false, 1, 1, 3);
  add("switch_top1 capacity 1.0", moe_router_kind::switch_top1, 1, false, false, 1, 1, 3);
  add("sigmoid_bias k=2 renorm scale 2.5", moe_router_kind::sigmoid_bias, 2, true, true, 1, 2.5, 0);
  add("sigmoid_bias k=3", moe_router_kind::sigmoid_bias, 3, false, true, 1, 1, 0);
  add("expert_choice cf 1.5", moe_router_kind::expert_choice, 0, false, true, 1.5, 1, 0);
  for (const auto& c : cs) {
    const auto x = separated_logits(7, 6, g, c.skew);
    auto f = [&](const auto& l) { return moe_route_tokens(l, c.o).route.gates; };
    {
      no_grad ng;
      auto r = moe_route_tokens(constant(x), c.o);
      if (!c.o.dropless) CHECK_MESSAGE(r.stats.dropped > 0, c.name, ": no slot was dropped");
    }
    expect("moe_gates", c.name, testing::gradcheck(f, parameter(x)));
  }
}

void gc_moe_noisy_logits() {
  auto g = tfm_test::rng(102);
  const auto x = tfm_test::random_tensor<tensor<double, S2>>(S2(5, 4), g, -2, 2);
  const auto w = tfm_test::random_tensor<tensor<double, S2>>(S2(5, 4), g, -3, 3);
  const moe_noise nz{1234, 77, true};
  expect(
      "moe_noisy_logits", "both inputs",
      testing::gradcheck([&](const auto& a, const auto& b) { return moe_noisy_logits(a, b, nz); },
                         parameter(x), parameter(w)));
}

void gc_moe_aux_loss() {
  auto g = tfm_test::rng(103);
  const auto x = separated_logits(9, 5, g);
  moe_router_options o;
  o.k = 2;
  const auto stats = moe_route_tokens(constant(x), o).stats;
  expect(
      "moe_aux_loss", "k=2",
      testing::gradcheck([&](const auto& l) { return moe_aux_loss(l, stats, 0.7); }, parameter(x)));
}

void gc_moe_z_loss() {
  auto g = tfm_test::rng(104);
  const auto x = tfm_test::random_tensor<tensor<double, S2>>(S2(6, 5), g, -4, 4);
  expect("moe_z_loss", "coef 0.3",
         testing::gradcheck([&](const auto& l) { return moe_z_loss(l, 0.3); }, parameter(x)));
}

struct op_case {
  std::string_view op;
  void (*run)();
};
constexpr op_case table[] = {{"moe_noisy_logits", gc_moe_noisy_logits},
                             {"moe_gates", gc_moe_gates},
                             {"moe_aux_loss", gc_moe_aux_loss},
                             {"moe_z_loss", gc_moe_z_loss}};
static_assert(std::size(table) == tfm::moe_router_op_count,
              "autodiff/registry.hpp's TFM_MOE_ROUTER_OPS and this table differ in size: add a "
              "gradient check for every router op (tests/unit/moe/router_test.cpp)");

using tfm_test::error_of;

}  // namespace

// ---- tests --------------------------------------------------------------------------------------

TEST_CASE("routers, capacity, statistics and losses equal the numpy reference (double, float)") {
  const auto names = fixture_cases();
  REQUIRE(names.size() == 10);
  for (const auto& c : names) {
    SUBCASE(c.c_str()) {
      run_fixture_case<double>(c, 1e-12);
      run_fixture_case<float>(c, 2e-6);
    }
  }
}

TEST_CASE("registry: every router op has a gradcheck case, and no case is stale") {
  tfm_test::check_op_table(tfm::detail::moe_router_op_names, table, "router ops");
}

TEST_CASE("gradcheck (float64, central differences, eps 1e-6) of every router op") {
  tfm_test::seed();
  for (const auto& c : table) {
    SUBCASE(std::string(c.op).c_str()) { c.run(); }
  }
  std::string s;
  char line[96];
  for (const auto& [op, e] : worst()) {
    std::snprintf(line, sizeof line, "  %-18s %.2e\n", op.c_str(), e);
    s += line;
  }
  if (!s.empty()) MESSAGE("max relative error per op (floor atol/rtol = 1e-2):\n", s);
}

TEST_CASE("noisy top-k: H = clean + n softplus(w) with n = normal_double(seed, offset + i)") {
  auto g = tfm_test::rng(7);
  const index_t N = 6, E = 5;
  const auto x = tfm_test::random_tensor<tensor<double, S2>>(S2(N, E), g, -2, 2);
  const auto w = tfm_test::random_tensor<tensor<double, S2>>(S2(N, E), g, -30, 30);
  const moe_noise nz{42, 1000, true};
  auto h = moe_noisy_logits(constant(x), constant(w), nz);
  for (index_t n = 0; n < N; ++n)
    for (index_t e = 0; e < E; ++e) {
      const double sp = std::log(1 + std::exp(w(n, e)));  // |w| <= 30: no overflow
      const double want =
          x(n, e) + normal_double(42, 1000 + static_cast<std::uint64_t>(n * E + e)) * sp;
      CHECK(h.value()(n, e) == doctest::Approx(want).epsilon(1e-14));
    }
  // Same seed and offset: the same noise; another offset: other noise; no noise at inference.
  auto h2 = moe_noisy_logits(constant(x), constant(w), nz);
  CHECK(values_of(h2) == values_of(h));
  auto h3 = moe_noisy_logits(constant(x), constant(w), moe_noise{42, 1000 + N * E, true});
  CHECK(values_of(h3) != values_of(h));
  auto xc = constant(x);
  auto h4 = moe_noisy_logits(xc, constant(w), moe_noise{42, 1000, false});
  CHECK(h4.data() == xc.data());
  // Noisy top-k gating = softmax_topk on H; the noise changes some choices at this scale.
  auto clean = moe_route_tokens(constant(x), {.k = 2});
  auto noisy = moe_route_tokens(h, {.k = 2});
  CHECK(clean.route.expert != noisy.route.expert);
}

TEST_CASE("capacity: slots past ceil(cf N k / E) are dropped in token order; dropless keeps all") {
  // 6 tokens, E = 3, k = 1: tokens 0..4 prefer expert 0, token 5 prefers expert 2.
  std::vector<double> v = {3, 0, 1, 2, 0, 1, 4, 1, 0, 3, 2, 1, 5, 0, 0, 0, 1, 6};
  auto l = make_var<double>(v, 6, 3);
  moe_router_options o;
  o.kind = moe_router_kind::switch_top1;
  o.dropless = false;
  o.capacity_factor = 1.0;  // capacity ceil(6 / 3) = 2
  auto r = moe_route_tokens(l, o);
  CHECK(r.stats.capacity == 2);
  CHECK(r.route.expert == std::vector<std::int32_t>{0, 0, -1, -1, -1, 2});
  CHECK(r.stats.dropped == 3);
  CHECK(r.stats.drop_rate == doctest::Approx(0.5));
  CHECK(r.stats.selected == std::vector<index_t>{5, 0, 1});
  CHECK(r.stats.load == std::vector<index_t>{2, 0, 1});
  for (index_t n = 2; n < 5; ++n) CHECK(r.route.gates.value()(n, 0) == 0.0);
  CHECK(r.route.gates.value()(0, 0) > 0.5);
  // Gradient only through the kept slots.
  r.route.gates.backward();
  for (index_t n = 2; n < 5; ++n)
    for (index_t e = 0; e < 3; ++e) CHECK(l.grad()(n, e) == 0.0);
  // A larger factor keeps more; dropless keeps everything.
  o.capacity_factor = 2.5;  // ceil(5) = 5
  CHECK(moe_route_tokens(l, o).stats.dropped == 0);
  o.capacity_factor = 1.0;
  o.dropless = true;
  auto d = moe_route_tokens(l, o);
  CHECK(d.stats.dropped == 0);
  CHECK(d.stats.capacity == 0);
  CHECK(d.route.expert == std::vector<std::int32_t>{0, 0, 0, 0, 0, 2});
  MESSAGE("capacity 2 of 6 tokens on 3 experts: drop rate ", r.stats.drop_rate, ", max/mean load ",
          r.stats.max_over_mean(), " (dropless: ", d.stats.max_over_mean(), ")");
}

TEST_CASE("tie rule: equal scores pick the lower expert id, expert-choice the lower token") {
  auto l = make_var<double>(std::vector<double>(5 * 4, 0.25), 5, 4);
  for (auto kind : {moe_router_kind::softmax_topk, moe_router_kind::gshard_topk,
                    moe_router_kind::sigmoid_bias}) {
    moe_router_options o;
    o.kind = kind;
    o.k = 3;
    auto r = moe_route_tokens(l, o);
    for (index_t n = 0; n < 5; ++n)
      for (index_t j = 0; j < 3; ++j) CHECK(r.route.expert[n * 3 + j] == j);
  }
  moe_router_options o;
  o.kind = moe_router_kind::switch_top1;
  CHECK(moe_route_tokens(l, o).route.expert == std::vector<std::int32_t>(5, 0));
  // Expert-choice: c = ceil(1.0 * 5 / 4) = 2 tokens per expert: all pick tokens 0 and 1.
  o.kind = moe_router_kind::expert_choice;
  auto r = moe_route_tokens(l, o);
  CHECK(r.route.k == 4);
  CHECK(r.stats.dropped == 3);
  CHECK(r.route.expert == std::vector<std::int32_t>{0,  1,  2,  3,  0,  1,  2,  3,  -1, -1,
                                                    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1});
  // Capacity ties: the earlier token wins.
  o.kind = moe_router_kind::softmax_topk;
  o.k = 1;
  o.dropless = false;
  o.capacity_factor = 0.4;  // ceil(0.4 * 5 / 4) = 1
  CHECK(moe_route_tokens(l, o).route.expert == std::vector<std::int32_t>{0, -1, -1, -1, -1});
}

TEST_CASE("routing is deterministic: the same logits give the same route, bit for bit") {
  auto g = tfm_test::rng(11);
  const auto x = tfm_test::random_tensor<tensor<float, S2>>(S2(64, 8), g, -3, 3);
  for (auto kind : kinds) {
    moe_router_options o;
    o.kind = kind;
    o.k = 2;
    o.dropless = false;
    o.capacity_factor = 1.25;
    auto a = moe_route_tokens(parameter(x), o);
    auto b = moe_route_tokens(parameter(x), o);
    CHECK(a.route.expert == b.route.expert);
    CHECK(values_of(a.route.gates) == values_of(b.route.gates));
    CHECK(a.stats.load == b.stats.load);
    CHECK(a.stats.entropy == b.stats.entropy);
  }
}

TEST_CASE("DeepSeek-V3 bias balancing drives a skewed stream to balance (max/mean < 1.1)") {
  const std::uint64_t seed = tfm_test::seed();
  const index_t N = 4096, E = 8, steps = 400;
  // Token t of step s: logits = skew_e + N(0, 1), skew_e = 1.5 - 0.4 e (expert 0 favoured).
  auto batch = [&](index_t s) {
    tensor<float, S2> t(S2(N, E));
    for (index_t n = 0; n < N; ++n)
      for (index_t e = 0; e < E; ++e)
        t(n, e) = static_cast<float>(
            1.5 - 0.4 * static_cast<double>(e) +
            normal_double(seed, static_cast<std::uint64_t>((s * N + n) * E + e)));
    return t;
  };
  moe_bias_balancer bal(E, 0.003);
  moe_router_options o;
  o.kind = moe_router_kind::sigmoid_bias;
  o.k = 2;
  o.renormalize = true;
  const double before = moe_route_tokens(constant(batch(0)), o).stats.max_over_mean();
  double ratio = 0, tail = 0, tail_mean = 0;
  index_t first_below = -1;
  std::string trace;
  for (index_t s = 0; s < steps; ++s) {
    o.bias = bal.bias();
    auto r = moe_route_tokens(constant(batch(s)), o);
    bal.update(r.stats);
    ratio = r.stats.max_over_mean();
    if (first_below < 0 && ratio < 1.1) first_below = s;
    if (s >= steps - 50) {
      tail = std::max(tail, ratio);
      tail_mean += ratio / 50;
    }
    if (s % 50 == 0) trace += " step " + std::to_string(s) + ": " + std::to_string(ratio) + ";";
  }
  MESSAGE("max/mean load without bias ", before, "; with gamma 0.003:", trace,
          " first below 1.1 at step ", first_below, ", mean (worst) of the last 50 steps ",
          tail_mean, " (", tail, ")");
  CHECK(before > 1.5);
  CHECK(first_below >= 0);
  CHECK(first_below < 250);
  CHECK(tail_mean < 1.1);
  CHECK(tail < 1.2);
  // The bias is a selection bias only: gates do not change when the bias does.
  moe_router_options o2 = o;
  o2.bias = {};
  auto x = batch(0);
  auto with_bias = moe_route_tokens(constant(x), o);
  auto without = moe_route_tokens(constant(x), o2);
  CHECK(with_bias.route.expert != without.route.expert);
  for (index_t n = 0; n < N; ++n) {  // a token with the same experts has the same gates
    if (with_bias.route.expert[2 * n] != without.route.expert[2 * n] ||
        with_bias.route.expert[2 * n + 1] != without.route.expert[2 * n + 1])
      continue;
    CHECK(with_bias.route.gates.value()(n, 0) == without.route.gates.value()(n, 0));
  }
  // The update rule itself: b_i += gamma * sign(mean - load_i).
  moe_bias_balancer b2(3, 0.5);
  moe_route_stats st;
  st.selected = {4, 1, 1};  // mean 2
  b2.update(st);
  CHECK(std::vector<double>(b2.bias().begin(), b2.bias().end()) ==
        std::vector<double>{-0.5, 0.5, 0.5});
  st.selected = {2, 2, 2};
  b2.update(st);
  CHECK(b2.bias()[0] == -0.5);
}

TEST_CASE("the aux loss is coef at uniform routing and grows with imbalance; z-loss scales") {
  auto l = make_var<double>(std::vector<double>(4 * 4, 0.0), 4, 4);
  moe_route_stats st;
  st.tokens = 4;
  st.n_expert = 4;
  st.selected = {1, 1, 1, 1};
  CHECK(moe_aux_loss(l, st, 0.01).item() == doctest::Approx(0.01));
  st.selected = {4, 0, 0, 0};  // f = (1, 0, 0, 0), P uniform: E * 1/4 = 1
  CHECK(moe_aux_loss(l, st, 0.01).item() == doctest::Approx(0.01));
  auto skew = make_var<double>({5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0}, 4, 4);
  CHECK(moe_aux_loss(skew, st, 0.01).item() > 0.035);
  // z-loss: logsumexp of four zeros is log 4.
  CHECK(moe_z_loss(l, 2e-3).item() == doctest::Approx(2e-3 * std::log(4.0) * std::log(4.0)));
}

TEST_CASE("bad inputs give tfm errors that name the value") {
  auto l = make_var<double>(std::vector<double>(3 * 4, 0.5), 3, 4);
  auto bad = [&](moe_router_options o) { return error_of([&] { moe_route_tokens(l, o); }); };
  CHECK(bad({.k = 5}).find("k = 5") != std::string::npos);
  CHECK(bad({.k = 5}).find("E = 4") != std::string::npos);
  CHECK(bad({.k = 0}).find("k = 0") != std::string::npos);
  CHECK(bad({.k = -1}).find("k = -1") != std::string::npos);
  CHECK(bad({.k = 2, .dropless = false, .capacity_factor = 0})
            .find("capacity_factor must be finite and > 0, got 0") != std::string::npos);
  CHECK(bad({.k = 2, .dropless = false, .capacity_factor = -1.5}).find("-1.5") !=
        std::string::npos);
  CHECK(bad({.kind = moe_router_kind::expert_choice, .capacity_factor = -2}).find("-2") !=
        std::string::npos);
  CHECK(bad({.k = 2, .dropless = false, .capacity_factor = NAN}).find("nan") != std::string::npos);
  CHECK(bad({.k = 2, .dropless = true, .capacity_factor = 0}) == "(no error)");  // unused
  const std::vector<double> b3 = {0, 0, 0};
  CHECK(bad({.kind = moe_router_kind::sigmoid_bias, .bias = b3}).find("3 entries") !=
        std::string::npos);
  const std::vector<double> b4 = {0, 0, 0, 0};
  CHECK(bad({.kind = moe_router_kind::gshard_topk, .bias = b4}).find("sigmoid_bias") !=
        std::string::npos);
  CHECK_THROWS_AS(moe_route_tokens(l, {.k = 5}), tfm::value_error);
  // Wrong logits shapes: no experts, noise logits or statistics of other extents.
  auto empty_e = var<double, S2>(tfm::detail::make_var_data<double>({3, 0}));
  CHECK(error_of([&] { moe_route_tokens(empty_e, {}); }).find("E = 0") != std::string::npos);
  auto l2 = make_var<double>(std::vector<double>(3 * 5, 0.5), 3, 5);
  CHECK(error_of([&] { moe_noisy_logits(l, l2, {}); }).find("(3, 5)") != std::string::npos);
  CHECK_THROWS_AS(moe_noisy_logits(l, l2, {}), tfm::shape_error);
  const auto st = moe_route_tokens(l, {}).stats;
  CHECK(error_of([&] { moe_aux_loss(l2, st, 0.01); }).find("(3, 4)") != std::string::npos);
  CHECK(error_of([&] { moe_aux_loss(l, st, -1); }).find("-1") != std::string::npos);
  CHECK(error_of([&] { moe_z_loss(l, INFINITY); }).find("inf") != std::string::npos);
  // Non-finite logits name the token and the expert.
  std::vector<double> v(12, 0.0);
  v[6] = NAN;
  auto ln = make_var<double>(v, 3, 4);
  CHECK(error_of([&] { moe_route_tokens(ln, {}); }).find("token 1 for expert 2") !=
        std::string::npos);
  CHECK(error_of([] { moe_bias_balancer(0); }).find("n_expert must be > 0, got 0") !=
        std::string::npos);
  CHECK(error_of([] { moe_bias_balancer(4, 0); }).find("got 0") != std::string::npos);
}

TEST_CASE("static logits shapes and empty batches") {
  tensor<float, shape<3, 4>> t;
  for (index_t i = 0; i < 12; ++i) t.data()[i] = static_cast<float>(i % 5);
  auto l = parameter(t);
  auto r = moe_route_tokens(l, {.k = 2});
  CHECK(r.route.gates.extent(0) == 3);
  CHECK(r.route.expert.size() == 6);
  auto e = make_var<double>({}, 0, 4);
  auto r0 = moe_route_tokens(e, {.k = 2});
  CHECK(r0.route.tokens == 0);
  CHECK(r0.route.expert.empty());
  CHECK(r0.stats.max_over_mean() == 0);
  auto ec = moe_route_tokens(e, {.kind = moe_router_kind::expert_choice});
  CHECK(ec.route.k == 0);
}
