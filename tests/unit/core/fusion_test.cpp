// Expression fusion (tensor.hpp, expr/node.hpp, backend/*/elementwise.hpp): assigning an
// elementwise tree to an existing tensor or view of the right shape evaluates the whole tree in
// one pass over the elements, with no temporaries (no tensor storage is allocated:
// tfm::memory_stats() from core/storage.hpp); an expression exactly TFM_MAX_FUSION_DEPTH nodes
// deep compiles and is correct; .eval() materialises a sub-expression so that deeper chains can
// be built on it. (One node deeper than the limit is a compile error: see
// tests/compile_fail/cases_core/fusion_too_deep.cpp.)
//
// References are independent: plain double loops over copies of the inputs.
#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/elementwise.hpp"
#include "typeformer/core/storage.hpp"
#include "typeformer/core/view.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;

namespace {

constexpr int max_depth = TFM_MAX_FUSION_DEPTH;

/// A chain of exactly D elementwise nodes over x and y: x * y, then alternately + x and * y.
template <int D, class X, class Y>
auto chain(const X& x, const Y& y) {
  static_assert(D >= 1);
  if constexpr (D == 1)
    return x * y;
  else if constexpr (D % 2 == 0)
    return chain<D - 1>(x, y) + x;
  else
    return chain<D - 1>(x, y) * y;
}

/// The same chain in double on plain vectors; y broadcast by `ycol(i)` (its index for element i).
template <class YIdx>
std::vector<double> chain_ref(int depth, const std::vector<double>& x, const std::vector<double>& y,
                              YIdx&& yidx) {
  std::vector<double> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double yi = y[yidx(i)];
    double v = x[i] * yi;
    for (int d = 2; d <= depth; ++d) v = d % 2 == 0 ? v + x[i] : v * yi;
    r[i] = v;
  }
  return r;
}

template <class X>
std::vector<double> as_double(const X& x) {
  std::vector<double> r;
  for (auto v : tfm_test::to_vector(x)) r.push_back(tfm_test::to_double(v));
  return r;
}

/// Heap bytes allocated by f() at its peak above the level before it.
template <class F>
std::size_t peak_extra_bytes(F&& f) {
  tfm::reset_peak_memory();
  const std::size_t before = tfm::memory_stats().current_bytes;
  f();
  return tfm::memory_stats().peak_bytes - before;
}

/// Functor Id that logs each call; scalars only, so trees containing it run the scalar loop.
std::vector<int>& call_log() {
  static std::vector<int> log;
  return log;
}
template <int Id>
struct logged_add {
  static constexpr const char* name = "logged_add";
  static constexpr bool integer_ok = false;
  template <class X>
  requires std::is_arithmetic_v<X> X operator()(X a, X b) const {
    call_log().push_back(Id);
    return a + b;
  }
};

}  // namespace

TEST_CASE_TEMPLATE("fusion: a deep expression assigned to an existing tensor allocates nothing", B,
                   tfm::cpu, tfm::reference) {
  auto g = tfm_test::rng(0xf0510001);
  // Small, SIMD-tail and (> 2^15 elements) threaded sizes.
  for (index_t cols : {index_t{5}, index_t{67}, index_t{40009}}) {
    const index_t rows = 3;
    INFO((std::is_same_v<B, tfm::cpu> ? "cpu" : "reference")
         << " rows=" << rows << " cols=" << cols);
    using T2 = tensor<float, tfm::dyn_shape<2>, B>;
    using T1 = tensor<float, shape<dyn>, B>;
    const tfm::dyn_shape<2> s(rows, cols);
    const auto vx = tfm_test::random_vector<float>(static_cast<std::size_t>(rows * cols), g, -1, 1);
    const auto vxt =
        tfm_test::random_vector<float>(static_cast<std::size_t>(rows * cols), g, -1, 1);
    const auto vy = tfm_test::random_vector<float>(static_cast<std::size_t>(cols), g, 0.9, 1.1);
    auto x = tfm_test::make_tensor<T2>(s, vx);
    auto xt = tfm_test::make_tensor<T2>(tfm::dyn_shape<2>(cols, rows), vxt);  // read transposed
    auto y = tfm_test::make_tensor<T1>(shape<dyn>(cols), vy);                 // broadcast row
    std::vector<double> dx, dxt, dy;
    for (float v : vx) dx.push_back(v);
    for (float v : vy) dy.push_back(v);
    // transpose(xt) in row-major order of (rows, cols)
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) dxt.push_back(vxt[static_cast<std::size_t>(j * rows + i)]);
    auto ycol = [&](std::size_t i) { return i % static_cast<std::size_t>(cols); };

    T2 dst(s);  // already the right shape
    {
      auto e = chain<max_depth>(x, y);
      static_assert(decltype(e)::depth == max_depth);
      const std::size_t extra = peak_extra_bytes([&] { dst = e; });
      CHECK_MESSAGE(extra == 0,
                    "dst = <depth " << max_depth << " expression> allocated " << extra << " bytes");
      TFM_CHECK_REPORT(
          tfm_test::compare(tfm_test::to_vector(dst), chain_ref(max_depth, dx, dy, ycol), 1e-10));
    }
    {  // transposed (gather) leaves and a view destination: still no temporaries
      auto e = chain<max_depth - 1>(tfm::transpose(xt), y) - tfm::exp(x);  // depth max_depth
      static_assert(decltype(e)::depth == max_depth);
      const std::size_t extra = peak_extra_bytes([&] { dst.view() = e; });
      CHECK_MESSAGE(extra == 0, "view = <transposed expression> allocated " << extra << " bytes");
      auto want = chain_ref(max_depth - 1, dxt, dy, ycol);
      for (std::size_t i = 0; i < want.size(); ++i) want[i] -= std::exp(dx[i]);
      TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(dst), want, 1e-10));
    }
    {  // a strided destination (every other column of a wider parent)
      T2 parent(tfm::dyn_shape<2>(rows, 2 * cols));
      auto d = tfm::slice<1>(parent, 0, 2 * cols, 2);
      const std::size_t extra = peak_extra_bytes([&] { d = chain<9>(x, y); });
      CHECK_MESSAGE(extra == 0, "strided view = expression allocated " << extra << " bytes");
      const auto want = chain_ref(9, dx, dy, ycol);
      const auto got = tfm_test::to_vector(d);
      TFM_CHECK_REPORT(tfm_test::compare(got, want, 1e-10));
      const auto all = tfm_test::to_vector(parent);  // the odd columns stay untouched (zero)
      std::size_t touched = 0;
      for (index_t i = 0; i < rows; ++i)
        for (index_t j = 1; j < 2 * cols; j += 2)
          touched += all[static_cast<std::size_t>(i * 2 * cols + j)] != 0.0f;
      CHECK(touched == 0);
    }
  }
}

TEST_CASE_TEMPLATE("fusion: the tree is evaluated in one pass, element by element", B, tfm::cpu,
                   tfm::reference) {
  // inner = logged_add<1>(x, y), outer = logged_add<2>(inner * 2, x): one pass computes inner
  // then outer for element 0, then for element 1, ...; a pass per node (through a temporary)
  // would log all the 1s before any 2.
  tfm::thread_scope one_thread(1);
  const index_t n = 37;
  using T1 = tensor<float, shape<dyn>, B>;
  T1 x(n), y(n), dst(n);
  for (index_t i = 0; i < n; ++i) {
    x(i) = static_cast<float>(i);
    y(i) = 0.5f * static_cast<float>(i);
  }
  auto inner = tfm::apply(logged_add<1>{}, x, y);
  auto outer = tfm::apply(logged_add<2>{}, inner * 2, x);
  static_assert(decltype(outer)::depth == 3);
  call_log().clear();
  const std::size_t extra = peak_extra_bytes([&] { dst = outer; });
  CHECK(extra == 0);
  std::vector<int> want_log;
  for (index_t i = 0; i < n; ++i) {
    want_log.push_back(1);
    want_log.push_back(2);
  }
  CHECK(call_log() == want_log);
  for (index_t i = 0; i < n; ++i)
    CHECK(dst(i) == (static_cast<float>(i) * 1.5f) * 2 + static_cast<float>(i));
}

TEST_CASE("fusion: an expression of exactly TFM_MAX_FUSION_DEPTH nodes; .eval() breaks the depth") {
  auto g = tfm_test::rng(0xf0510003);
  const index_t n = 1031;
  using T1 = tensor<double, shape<dyn>>;
  const auto vx = tfm_test::random_vector<double>(static_cast<std::size_t>(n), g, -1, 1);
  const auto vy = tfm_test::random_vector<double>(static_cast<std::size_t>(n), g, 0.9, 1.1);
  auto x = tfm_test::make_tensor<T1>(shape<dyn>(n), vx);
  auto y = tfm_test::make_tensor<T1>(shape<dyn>(n), vy);
  auto same = [](std::size_t i) { return i; };

  auto at_limit = chain<max_depth>(x, y);
  static_assert(decltype(at_limit)::depth == max_depth);
  T1 r1 = at_limit;
  const auto want1 = chain_ref(max_depth, vx, vy, same);
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(r1), want1, 1e-24));

  // .eval() returns a tensor (a depth-0 leaf), so a second full-depth chain can be built on it:
  // 2 * TFM_MAX_FUSION_DEPTH levels of computation in two passes.
  auto mid = chain<max_depth>(x, y).eval();
  static_assert(tfm::tensor_type<decltype(mid)>);
  auto deeper = chain<max_depth>(mid, y);
  static_assert(decltype(deeper)::depth == max_depth);
  T1 r2 = deeper;
  const auto want2 = chain_ref(max_depth, want1, vy, same);
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(r2), want2, 1e-24));

  // .eval() in the middle of one expression: (depth max-1 chain).eval() + x has depth 1.
  auto one_more = chain<max_depth - 1>(x, y).eval() * y;
  static_assert(decltype(one_more)::depth == 1);
  T1 r3 = one_more;
  auto want3 = chain_ref(max_depth - 1, vx, vy, same);
  for (std::size_t i = 0; i < want3.size(); ++i) want3[i] *= vy[i];
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(r3), want3, 1e-24));

  // .eval() materialises exactly one tensor of the result's size.
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(double);
  std::size_t extra = 0;
  {
    extra = peak_extra_bytes([&] {
      auto t = chain<max_depth>(x, y).eval();
      CHECK(t.size() == n);
    });
  }
  CHECK(extra >= bytes);
  CHECK(extra < 2 * bytes);
}
