// Optimizer safety and state: a non-finite gradient (set directly, or from a NaN in the loss
// graph) makes step() return false and change nothing (values, moments, master weights, step
// count), naming the parameter; save() + load() into a fresh optimizer continues the run bit for
// bit; load() rejects foreign, truncated and mismatched states with tfm::parse_error and leaves
// the optimizer as it was.
#include "optim_test_util.hpp"

#include <doctest/doctest.h>
#include <typeformer/core/half.hpp>
#include <typeformer/ops/elementwise.hpp>
#include <typeformer/ops/reduce.hpp>
#include <typeformer/optim/optimizer.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

using namespace tfm;
using namespace optim_test;

namespace {
std::string method_name(int m) { return m == 0 ? "sgd nesterov" : m == 1 ? "adam" : "adamw"; }

template <class T>
optim::optimizer<T> make(int m, const nn::parameter_list<T>& ps, double lr = 0.01) {
  optim::adam_options o;
  o.lr = lr;
  o.weight_decay = 0.1;
  if (m == 0) return optim::sgd(ps, optim::sgd_options{lr, 0.9, 0.1, true});
  if (m == 1) return optim::adam(ps, o);
  return optim::adamw(ps, o);
}

template <class T>
void expect_load_fails(optim::optimizer<T>& opt, const std::string& bytes, const char* what) {
  const std::string before = save_bytes(opt);
  const auto steps = opt.steps();
  const double lr = opt.lr();
  std::istringstream is(bytes, std::ios::binary);
  CHECK_THROWS_AS_MESSAGE(opt.load(is), tfm::parse_error, what);
  CHECK_MESSAGE(save_bytes(opt) == before, what, ": a failed load changed the state");
  CHECK(opt.steps() == steps);
  CHECK(opt.lr() == lr);
}
}  // namespace

TEST_CASE_TEMPLATE("a non-finite gradient: step() returns false and changes nothing", T, float,
                   double, bf16) {
  auto g = tfm_test::rng(401);
  const std::vector<std::size_t> sizes{37, 4};
  const auto init = random_init(sizes, g);
  const double bad_values[] = {std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity()};
  for (int m = 0; m < 3; ++m) {
    for (double bad : bad_values) {
      CAPTURE(method_name(m));
      CAPTURE(bad);
      auto ps = params<T>(init, {true, false});
      auto opt = make<T>(m, ps.list);
      for (int s = 0; s < 2; ++s) {
        set_grads(ps, random_grads(init, g, 0.1, 1.0));
        REQUIRE(opt.step());
      }
      CHECK(opt.last_error().empty());
      const auto vals = raw_values(ps);
      const auto state = save_bytes(opt);
      auto gs = random_grads(init, g, 0.1, 1.0);
      gs[1][2] = bad;  // one element of p1
      set_grads(ps, gs);
      CHECK_FALSE(opt.step());
      TFM_CHECK_BITWISE(raw_values(ps), vals);
      CHECK(save_bytes(opt) == state);  // moments, master weights, step count
      CHECK(opt.steps() == 2);
      CHECK_MESSAGE(opt.last_error().find("'p1'") != std::string::npos, opt.last_error());
      // The next finite step goes through and clears the report.
      gs[1][2] = 0.5;
      set_grads(ps, gs);
      CHECK(opt.step());
      CHECK(opt.steps() == 3);
      CHECK(opt.last_error().empty());
    }
  }
}

TEST_CASE("a NaN in the loss: the gradient is NaN and no update is applied") {
  tensor<float, S1> w0{S1(3)}, c{S1(3)};
  tfm_test::from_vector(w0, std::vector<float>{1.0f, 2.0f, 3.0f});
  tfm_test::from_vector(c, std::vector<float>{0.5f, std::nanf(""), 2.0f});
  auto w = parameter(w0);
  w.set_name("w");
  nn::parameter_list<float> ps{{"w", w.data(), true}};
  auto opt = optim::adamw(ps, optim::adam_options{});
  auto loss = sum(w * constant(c));
  CHECK(std::isnan(loss.value()()));
  loss.backward();
  CHECK_FALSE(opt.step());
  CHECK_MESSAGE(opt.last_error().find("'w'") != std::string::npos, opt.last_error());
  CHECK(w.value()(0) == 1.0f);
  CHECK(w.value()(1) == 2.0f);
  CHECK(w.value()(2) == 3.0f);
  CHECK(opt.steps() == 0);
}

TEST_CASE_TEMPLATE("save + load into a fresh optimizer continues the run bit for bit", T, float,
                   double, bf16) {
  auto g = tfm_test::rng(402);
  const std::vector<std::size_t> sizes{37, 5, 1};
  const std::vector<bool> decay{true, false, true};
  const auto init = random_init(sizes, g);
  const int k = 4, more = 5;
  std::vector<std::vector<vec>> grads;
  vec lrs;
  for (int s = 0; s < k + more; ++s) {
    grads.push_back(random_grads(init, g, 0.05, 2.0));
    lrs.push_back(0.01 * (1.0 + 0.1 * s));  // a schedule: the saved lr must be the current one
  }
  for (int m = 0; m < 3; ++m) {
    CAPTURE(method_name(m));
    // Uninterrupted.
    auto pa = params<T>(init, decay);
    auto a = make<T>(m, pa.list);
    for (int s = 0; s < k + more; ++s) {
      a.set_lr(lrs[static_cast<std::size_t>(s)]);
      set_grads(pa, grads[static_cast<std::size_t>(s)]);
      REQUIRE(a.step());
    }
    // k steps, save, load into a fresh optimizer (other lr), continue.
    auto pb = params<T>(init, decay);
    std::string saved;
    {
      auto b = make<T>(m, pb.list);
      for (int s = 0; s < k; ++s) {
        b.set_lr(lrs[static_cast<std::size_t>(s)]);
        set_grads(pb, grads[static_cast<std::size_t>(s)]);
        REQUIRE(b.step());
      }
      saved = save_bytes(b);
    }
    auto c = make<T>(m, pb.list, /*lr=*/0.5);
    std::istringstream is(saved, std::ios::binary);
    c.load(is);
    CHECK(c.steps() == k);
    CHECK(c.lr() == lrs[k - 1]);
    CHECK(save_bytes(c) == saved);
    for (int s = k; s < k + more; ++s) {
      c.set_lr(lrs[static_cast<std::size_t>(s)]);
      set_grads(pb, grads[static_cast<std::size_t>(s)]);
      REQUIRE(c.step());
    }
    TFM_CHECK_BITWISE(raw_values(pb), raw_values(pa));
    CHECK(save_bytes(c) == save_bytes(a));
    CHECK(c.steps() == k + more);
  }
}

TEST_CASE("load rejects foreign, truncated and mismatched states with parse_error") {
  auto g = tfm_test::rng(403);
  const auto init = random_init({3, 2}, g);
  auto ps = params<float>(init, {true, false});
  auto adam = make<float>(1, ps.list);
  set_grads(ps, random_grads(init, g, 0.1, 1.0));
  REQUIRE(adam.step());
  const std::string good = save_bytes(adam);
  auto fresh = make<float>(1, ps.list);
  {
    std::istringstream is(good, std::ios::binary);
    CHECK_NOTHROW(fresh.load(is));
  }
  auto target = make<float>(1, ps.list);

  SUBCASE("wrong magic") {
    std::string b = good;
    b[3] ^= 0x20;
    expect_load_fails(target, b, "wrong magic");
    expect_load_fails(target, "not an optimizer state at all, just text", "text");
  }
  SUBCASE("truncated at every length") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      CAPTURE(n);
      expect_load_fails(target, good.substr(0, n), "truncated");
    }
  }
  SUBCASE("a different method") {
    auto adamw = make<float>(2, ps.list);
    auto sgd = make<float>(0, ps.list);
    expect_load_fails(adamw, good, "adam state into adamw");
    expect_load_fails(sgd, good, "adam state into sgd");
    expect_load_fails(target, save_bytes(adamw), "adamw state into adam");
  }
  SUBCASE("a different parameter count or size") {
    auto more = params<float>({{1, 2, 3}, {4, 5}, {6}}, {true, false, true});
    auto fewer = params<float>({{1, 2, 3}}, {true});
    auto other = params<float>({{1, 2, 3}, {4, 5, 6}}, {true, false});
    auto o1 = make<float>(1, more.list);
    auto o2 = make<float>(1, fewer.list);
    auto o3 = make<float>(1, other.list);
    expect_load_fails(o1, good, "3 parameters");
    expect_load_fails(o2, good, "1 parameter");
    expect_load_fails(o3, good, "a parameter of another size");
  }
  SUBCASE("a state of other parameter types or options") {
    // bf16 parameters also save f32 master weights; SGD without momentum keeps no buffer.
    auto pb = params<bf16>(init, {true, false});
    auto ob = make<bf16>(1, pb.list);
    expect_load_fails(ob, good, "f32 state into a bf16 optimizer");
    auto plain = optim::sgd(ps.list, optim::sgd_options{0.1, 0.0, 0.0, false});
    auto mom = optim::sgd(ps.list, optim::sgd_options{0.1, 0.9, 0.0, false});
    expect_load_fails(mom, save_bytes(plain), "sgd without momentum into sgd with momentum");
  }
  SUBCASE("a huge vector length") {
    std::string b = good;
    // The first vector length sits after magic, method, step count, lr, parameter count.
    const std::uint64_t huge = std::uint64_t(1) << 62;
    std::memcpy(b.data() + 40, &huge, 8);
    expect_load_fails(target, b, "huge length");
  }
}

TEST_CASE_TEMPLATE("all_finite: every position across block edges, every kind of bad value", G,
                   float, double) {
  // The vectorised exponent test against std::isfinite: finite extremes pass, and one bad value
  // is found wherever it sits (first element, block edges at 4096, last element).
  using lim = std::numeric_limits<G>;
  const G finite_extremes[] = {lim::max(), -lim::max(), lim::min(), lim::denorm_min(), G(-0.0)};
  const G bad_values[] = {lim::infinity(), -lim::infinity(), lim::quiet_NaN(), -lim::quiet_NaN(),
                          lim::signaling_NaN()};
  for (tfm::index_t n : {0, 1, 15, 4095, 4096, 4097, 10000}) {
    std::vector<G> g(static_cast<std::size_t>(n), G(1));
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = finite_extremes[i % 5];
    CAPTURE(n);
    CHECK(tfm::detail::all_finite(g.data(), n));
    for (tfm::index_t pos :
         {tfm::index_t{0}, n / 2, tfm::index_t{4095}, tfm::index_t{4096}, n - 1}) {
      if (pos < 0 || pos >= n) continue;
      for (G bad : bad_values) {
        CAPTURE(pos);
        const G saved = g[static_cast<std::size_t>(pos)];
        g[static_cast<std::size_t>(pos)] = bad;
        CHECK_FALSE(tfm::detail::all_finite(g.data(), n));
        g[static_cast<std::size_t>(pos)] = saved;
      }
    }
  }
}

TEST_CASE_TEMPLATE("step(clip_coefficient(grad_norm)) matches clip_grad_norm then step()", T, float,
                   double, bf16) {
  // Clipping inside the update must give the parameters and state of the two-pass form (to the
  // rounding of the scaled gradient) and leave the gradient buffers as they were.
  auto g = tfm_test::rng(402);
  const auto init = random_init({300, 37}, g);
  for (int m = 0; m < 3; ++m) {
    CAPTURE(method_name(m));
    auto a = params<T>(init, {true, false});
    auto b = params<T>(init, {true, false});
    auto opt_a = make<T>(m, a.list), opt_b = make<T>(m, b.list);
    for (int s = 0; s < 3; ++s) {
      const auto gs = random_grads(init, g, 0.5, 4.0);  // global norm ~40: clipped at 1
      set_grads(a, gs);
      set_grads(b, gs);
      const auto raw = raw_grads(b);
      const double norm_a = optim::clip_grad_norm(a.list, 1.0);
      REQUIRE(opt_a.step());
      const double norm_b = optim::grad_norm(b.list);
      CHECK(norm_b == norm_a);
      const double c = optim::clip_coefficient(norm_b, 1.0);
      CHECK(c < 0.1);
      REQUIRE(opt_b.step(c));
      TFM_CHECK_BITWISE(raw_grads(b), raw);  // the fused form reads the gradients only
      // float: the clipped gradient rounds once either way (in double then to float, or
      // g * float(c)); bf16 parameters carry f32 master weights, so the same bound holds.
      const double rtol = std::is_same_v<T, double> ? 1e-13 : 1e-5;
      auto rep = close_scaled(flat(values(b)), flat(values(a)), rtol);
      MESSAGE("step ", s, ": ", rep.str());
      TFM_CHECK_REPORT(rep);
    }
    CHECK(optim::clip_coefficient(0.5, 1.0) == 1.0);
    CHECK(optim::clip_coefficient(std::numeric_limits<double>::infinity(), 1.0) == 1.0);
    CHECK(optim::clip_coefficient(4.0, 1.0) == doctest::Approx(1.0 / (4.0 + 1e-6)));
    // A non-finite scale is refused like a non-finite gradient: nothing changes.
    const auto vals = raw_values(b);
    CHECK_FALSE(opt_b.step(std::numeric_limits<double>::quiet_NaN()));
    CHECK_FALSE(opt_b.last_error().empty());
    TFM_CHECK_BITWISE(raw_values(b), vals);
  }
}

TEST_CASE("a non-finite gradient in a large parameter (threaded check): step() refuses") {
  // 600000 values: the check is split into chunks of 32768 across threads; a bad value in the
  // first, a middle or the last (partial) chunk is found with 1 and 2 threads.
  auto g = tfm_test::rng(403);
  const auto init = random_init({600000}, g);
  for (int threads : {1, 2}) {
    const tfm::thread_scope scope(threads);
    for (std::size_t pos : {std::size_t{0}, std::size_t{300001}, std::size_t{599999}}) {
      CAPTURE(threads);
      CAPTURE(pos);
      auto ps = params<float>(init, {true});
      auto opt = make<float>(2, ps.list);
      auto gs = random_grads(init, g, 0.1, 1.0);
      gs[0][pos] = std::numeric_limits<double>::infinity();
      set_grads(ps, gs);
      const auto vals = raw_values(ps);
      CHECK_FALSE(opt.step());
      TFM_CHECK_BITWISE(raw_values(ps), vals);
      gs[0][pos] = 0.25;
      set_grads(ps, gs);
      CHECK(opt.step());
    }
  }
}

TEST_CASE_TEMPLATE("step_clipped: the fused clip + step, and its norm pass as the finite check", T,
                   float, double, bf16) {
  // step_clipped(max) must equal step(clip_coefficient(grad_norm, max)) bit for bit (same
  // arithmetic), return that norm, and refuse a NaN/Inf gradient without its own check pass.
  auto g = tfm_test::rng(404);
  const auto init = random_init({300, 37, 5}, g);
  const double bad_values[] = {std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity()};
  for (int m = 0; m < 3; ++m) {
    CAPTURE(method_name(m));
    auto a = params<T>(init, {true, false, true});
    auto b = params<T>(init, {true, false, true});
    auto opt_a = make<T>(m, a.list), opt_b = make<T>(m, b.list);
    for (int s = 0; s < 4; ++s) {
      CAPTURE(s);
      // Steps 0 and 2 are clipped (norm ~40), 1 and 3 are not (norm ~0.4).
      const auto gs = random_grads(init, g, s % 2 ? 0.005 : 0.5, s % 2 ? 0.04 : 4.0);
      set_grads(a, gs);
      set_grads(b, gs);
      const auto raw = raw_grads(a);
      const double want_norm = optim::grad_norm(b.list);
      REQUIRE(opt_b.step(optim::clip_coefficient(want_norm, 1.0)));
      const auto r = opt_a.step_clipped(1.0);
      CHECK(r.applied);
      CHECK(r.grad_norm == want_norm);
      CHECK((s % 2 ? want_norm < 1.0 : want_norm > 1.0));
      TFM_CHECK_BITWISE(raw_values(a), raw_values(b));
      TFM_CHECK_BITWISE(raw_grads(a), raw);
      CHECK(save_bytes(opt_a) == save_bytes(opt_b));
    }
    for (double bad : bad_values) {
      CAPTURE(bad);
      auto gs = random_grads(init, g, 0.5, 4.0);
      gs[2][3] = bad;  // one element of p2
      set_grads(a, gs);
      const auto vals = raw_values(a);
      const auto state = save_bytes(opt_a);
      const auto r = opt_a.step_clipped(1.0);
      CHECK_FALSE(r.applied);
      CHECK_FALSE(std::isfinite(r.grad_norm));
      TFM_CHECK_BITWISE(raw_values(a), vals);
      CHECK(save_bytes(opt_a) == state);
      CHECK(opt_a.steps() == 4);
      CHECK_MESSAGE(opt_a.last_error().find("'p2'") != std::string::npos, opt_a.last_error());
    }
    CHECK_THROWS_AS(opt_a.step_clipped(0.0), tfm::value_error);
    CHECK_THROWS_AS(opt_a.step_clipped(std::numeric_limits<double>::quiet_NaN()), tfm::value_error);
  }
  if constexpr (std::is_same_v<T, double>) {
    // A finite double gradient whose square overflows: the norm is Inf, the fallback check
    // finds every gradient finite, and the update goes through unclipped (clip_coefficient(Inf)).
    auto a = params<double>(init, {true, false, true});
    auto b = params<double>(init, {true, false, true});
    auto opt_a = make<double>(0, a.list), opt_b = make<double>(0, b.list);
    auto gs = random_grads(init, g, 0.5, 4.0);
    gs[0][7] = 1e200;
    set_grads(a, gs);
    set_grads(b, gs);
    const auto r = opt_a.step_clipped(1.0);
    CHECK(r.applied);
    CHECK(std::isinf(r.grad_norm));
    REQUIRE(opt_b.step());
    TFM_CHECK_BITWISE(raw_values(a), raw_values(b));
  }
}
