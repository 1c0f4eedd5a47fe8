// Thread-count determinism of the cpu backend (TESTING.md "Backends": threads 1 and N):
// elementwise expressions, reductions (sum, mean, max, argmax, logsumexp along each axis and over
// all elements), softmax / log_softmax / rms_norm / layer_norm and matmul must give bitwise
// identical results with 1, 2 and 3 threads (tfm::thread_scope, backend/cpu/parallel.hpp). Sizes
// are above every parallel threshold (elementwise and reductions 2^15 elements, rows 2^14, GEMM
// 2^20 multiply-adds per extra thread) and odd (1000003, 1001 x 1003) so that chunk and SIMD
// tails land inside the threaded loops. Results are compared with memcmp on the data.
//
// So that two equal wrong answers cannot pass, each single-threaded result is also checked
// against an independent double-precision computation with plain loops (NMSE bounds of
// TESTING.md, exact for max/argmax).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/cpu/reduce.hpp"
#include "typeformer/core/view.hpp"
#include "typeformer/expr/reduce.hpp"
#include "typeformer/ops/matmul.hpp"
#include "typeformer/ops/normalize.hpp"

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;

namespace {

constexpr std::array<int, 2> many_threads{2, 3};

/// f() run with n threads.
template <class F>
auto run_with(int n, F&& f) {
  tfm::thread_scope scope(n);
#if TFM_HAS_OPENMP
  REQUIRE(tfm::num_threads() == n);
#endif
  return f();
}

/// The bytes of a tensor's elements, or of a scalar.
template <class X>
std::pair<const void*, std::size_t> bytes_of(const X& x) {
  if constexpr (std::is_arithmetic_v<X>) {
    return {&x, sizeof(X)};
  } else {
    using T = typename X::value_type;
    return {x.data(), static_cast<std::size_t>(x.size()) * sizeof(T)};
  }
}

/// f() with 1 thread, then with 2 and 3: every result must have the same shape and bytes.
/// Returns the single-threaded result for the reference check.
template <class F>
auto check_thread_invariant(const std::string& what, F&& f) {
  INFO(what);
  auto one = run_with(1, f);
  for (int n : many_threads) {
    INFO("threads " << n << " vs 1");
    auto many = run_with(n, f);
    if constexpr (!std::is_arithmetic_v<decltype(one)>) {
      REQUIRE(many.shape() == one.shape());
    }
    const auto [p1, b1] = bytes_of(one);
    const auto [pn, bn] = bytes_of(many);
    REQUIRE(b1 == bn);
    const bool same = std::memcmp(p1, pn, b1) == 0;
    if constexpr (std::is_arithmetic_v<decltype(one)>) {
      CHECK_MESSAGE(same, "1 thread: " << one << ", " << n << " threads: " << many);
    } else {
      CHECK_MESSAGE(same,
                    tfm_test::bitwise_diff(tfm_test::to_vector(one), tfm_test::to_vector(many)));
    }
  }
  return one;
}

template <class T, std::size_t R>
using dtensor = tensor<T, tfm::dyn_shape<R>>;

template <class T, std::size_t R>
dtensor<T, R> random_tensor(const std::array<index_t, R>& ext, std::mt19937& g, double lo,
                            double hi) {
  const auto s = tfm::dyn_shape<R>::from_extents(ext);
  return tfm_test::make_tensor<dtensor<T, R>>(
      s, tfm_test::random_vector<T>(static_cast<std::size_t>(s.size()), g, lo, hi));
}

std::vector<double> as_double(const auto& x) {
  std::vector<double> r;
  for (auto v : tfm_test::to_vector(x)) r.push_back(tfm_test::to_double(v));
  return r;
}

}  // namespace

TEST_CASE("threads: the thread count can be set") {
#if TFM_HAS_OPENMP
  tfm::thread_scope s(2);
  CHECK(tfm::num_threads() == 2);
#else
  MESSAGE("built without OpenMP: every kernel is single-threaded, the checks below are trivial");
#endif
}

TEST_CASE("threads: elementwise expressions are bitwise identical for 1, 2 and 3 threads") {
  auto g = tfm_test::rng(0x7e4d0001);
  const index_t n = 1000003;

  SUBCASE("f32 and f64, contiguous 1-D, transcendental") {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      auto a = random_tensor<T, 1>({n}, g, -3, 3);
      auto b = random_tensor<T, 1>({n}, g, -3, 3);
      auto got =
          check_thread_invariant(std::string("1-D ") + std::string(tfm::dtype_name<T>()), [&] {
            dtensor<T, 1> r = tfm::exp(a) * b + tfm::sigmoid(a - b) / (tfm::abs(b) + 1);
            return r;
          });
      const auto va = as_double(a), vb = as_double(b);
      std::vector<double> want(va.size());
      for (std::size_t i = 0; i < va.size(); ++i)
        want[i] = std::exp(va[i]) * vb[i] +
                  1.0 / (1.0 + std::exp(-(va[i] - vb[i]))) / (std::fabs(vb[i]) + 1);
      TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(got), want, 1e-7));
    };
    run(float{});
    run(double{});
  }

  SUBCASE("bf16 storage (half SIMD path) and int32 (scalar path)") {
    auto h = random_tensor<tfm::bf16, 1>({n}, g, -2, 2);
    auto got_h = check_thread_invariant("bf16", [&] {
      dtensor<tfm::bf16, 1> r = h * h - h * 0.5f;
      return r;
    });
    const auto vh = as_double(h);
    std::vector<double> want_h(vh.size());
    for (std::size_t i = 0; i < vh.size(); ++i) want_h[i] = vh[i] * vh[i] - vh[i] * 0.5;
    TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(got_h), want_h, 1e-4));

    auto i1 = random_tensor<std::int32_t, 1>({n}, g, -1000, 1000);
    auto i2 = random_tensor<std::int32_t, 1>({n}, g, -1000, 1000);
    auto got_i = check_thread_invariant("int32", [&] {
      dtensor<std::int32_t, 1> r = i1 * 3 - tfm::maximum(i1, i2);
      return r;
    });
    const auto v1 = tfm_test::to_vector(i1), v2 = tfm_test::to_vector(i2);
    std::vector<std::int32_t> want_i(v1.size());
    for (std::size_t i = 0; i < v1.size(); ++i) want_i[i] = v1[i] * 3 - std::max(v1[i], v2[i]);
    CHECK(tfm_test::to_vector(got_i) == want_i);
  }

  SUBCASE("f32 2-D with a transposed operand, a broadcast row and a strided destination") {
    const index_t r = 1001, c = 1003;
    auto a = random_tensor<float, 2>({r, c}, g, -2, 2);
    auto bt = random_tensor<float, 2>({c, r}, g, -2, 2);  // read through transpose(): gathers
    auto row = random_tensor<float, 1>({c}, g, -2, 2);
    auto got = check_thread_invariant("transpose + broadcast", [&] {
      dtensor<float, 2> out = tfm::transpose(bt) * a + row;
      return out;
    });
    const auto va = as_double(a), vb = as_double(bt), vr = as_double(row);
    std::vector<double> want(va.size());
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        want[static_cast<std::size_t>(i * c + j)] =
            vb[static_cast<std::size_t>(j * r + i)] * va[static_cast<std::size_t>(i * c + j)] +
            vr[static_cast<std::size_t>(j)];
    TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(got), want, 1e-12));

    // Writing every other column of a (1001, 2006) parent: a strided destination.
    auto got_strided = check_thread_invariant("strided destination", [&] {
      dtensor<float, 2> parent(tfm::dyn_shape<2>(r, 2 * c));
      tfm::slice<1>(parent, 1, 2 * c, 2) = a * 2 - row;
      return parent;
    });
    std::vector<double> want_s(static_cast<std::size_t>(r * 2 * c), 0.0);
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        want_s[static_cast<std::size_t>(i * 2 * c + 2 * j + 1)] =
            va[static_cast<std::size_t>(i * c + j)] * 2 - vr[static_cast<std::size_t>(j)];
    TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(got_strided), want_s, 1e-12));
  }
}

namespace {

/// Double reference of reduction `op` on a (outer, n, inner) buffer.
std::vector<double> ref_reduce(const std::string& op, const std::vector<double>& v, index_t outer,
                               index_t n, index_t inner) {
  std::vector<double> out(static_cast<std::size_t>(outer * inner));
  for (index_t o = 0; o < outer; ++o)
    for (index_t i = 0; i < inner; ++i) {
      auto at = [&](index_t k) { return v[static_cast<std::size_t>((o * n + k) * inner + i)]; };
      double r = 0;
      if (op == "sum" || op == "mean") {
        for (index_t k = 0; k < n; ++k) r += at(k);
        if (op == "mean") r /= static_cast<double>(n);
      } else if (op == "max") {
        r = at(0);
        for (index_t k = 1; k < n; ++k) r = std::max(r, at(k));
      } else if (op == "argmax") {
        index_t best = 0;
        for (index_t k = 1; k < n; ++k)
          if (at(k) > at(best)) best = k;
        r = static_cast<double>(best);
      } else {  // logsumexp
        double m = at(0);
        for (index_t k = 1; k < n; ++k) m = std::max(m, at(k));
        double s = 0;
        for (index_t k = 0; k < n; ++k) s += std::exp(at(k) - m);
        r = m + std::log(s);
      }
      out[static_cast<std::size_t>(o * inner + i)] = r;
    }
  return out;
}

/// Checks a reduction result (vector) against the double reference: bitwise after rounding for
/// max/argmax, NMSE otherwise.
template <class U>
void check_reduce_ref(const std::string& op, const std::vector<U>& got,
                      const std::vector<double>& want, double tol) {
  if (op == "max" || op == "argmax") {
    std::vector<U> w;
    for (double d : want) w.push_back(static_cast<U>(d));
    TFM_CHECK_BITWISE(got, w);
  } else {
    TFM_CHECK_REPORT(tfm_test::compare(got, want, tol));
  }
}

template <class T>
void reductions_of(const std::array<index_t, 2>& ext, std::mt19937& g) {
  const std::string dt(tfm::dtype_name<T>());
  // Positive values for sums (no cancellation, so the reference bound is tight); signed values
  // for the extremes and logsumexp.
  auto pos = random_tensor<T, 2>(ext, g, 0.5, 1.5);
  auto sgn = random_tensor<T, 2>(ext, g, -4, 4);
  const auto vp = as_double(pos), vs = as_double(sgn);
  const index_t r = ext[0], c = ext[1];
  const double tol = std::is_same_v<T, float> ? 1e-10 : 1e-24;
  INFO(dt << " shape " << r << "x" << c);

  // Along the last axis (rows of c), along axis 0 (columns), and over everything.
  auto s1 = check_thread_invariant("sum<-1>", [&] { return tfm::sum<-1>(pos); });
  check_reduce_ref("sum", tfm_test::to_vector(s1), ref_reduce("sum", vp, r, c, 1), tol);
  auto s0 = check_thread_invariant("sum<0>", [&] { return tfm::sum<0>(pos); });
  check_reduce_ref("sum", tfm_test::to_vector(s0), ref_reduce("sum", vp, 1, r, c), tol);
  auto sa = check_thread_invariant("sum(all)", [&] { return tfm::sum(pos); });
  check_reduce_ref("sum", std::vector<double>{static_cast<double>(sa)},
                   ref_reduce("sum", vp, 1, r * c, 1), tol);

  auto m1 = check_thread_invariant("mean<-1>", [&] { return tfm::mean<-1>(pos); });
  check_reduce_ref("mean", tfm_test::to_vector(m1), ref_reduce("mean", vp, r, c, 1), tol);
  auto m0 = check_thread_invariant("mean<0>", [&] { return tfm::mean<0>(pos, tfm::keepdims); });
  CHECK(m0.shape().extents() == std::array<index_t, 2>{1, c});
  check_reduce_ref("mean", tfm_test::to_vector(m0), ref_reduce("mean", vp, 1, r, c), tol);
  auto ma = check_thread_invariant("mean(all)", [&] { return tfm::mean(pos); });
  check_reduce_ref("mean", std::vector<double>{static_cast<double>(ma)},
                   ref_reduce("mean", vp, 1, r * c, 1), tol);

  auto x1 = check_thread_invariant("max<-1>", [&] { return tfm::max<-1>(sgn); });
  check_reduce_ref("max", tfm_test::to_vector(x1), ref_reduce("max", vs, r, c, 1), 0);
  auto x0 = check_thread_invariant("max<0>", [&] { return tfm::max<0>(sgn); });
  check_reduce_ref("max", tfm_test::to_vector(x0), ref_reduce("max", vs, 1, r, c), 0);
  auto xa = check_thread_invariant("max(all)", [&] { return tfm::max(sgn); });
  check_reduce_ref("max", std::vector<T>{xa}, ref_reduce("max", vs, 1, r * c, 1), 0);

  auto a1 = check_thread_invariant("argmax<-1>", [&] { return tfm::argmax<-1>(sgn); });
  check_reduce_ref("argmax", tfm_test::to_vector(a1), ref_reduce("argmax", vs, r, c, 1), 0);
  auto a0 = check_thread_invariant("argmax<0>", [&] { return tfm::argmax<0>(sgn); });
  check_reduce_ref("argmax", tfm_test::to_vector(a0), ref_reduce("argmax", vs, 1, r, c), 0);
  auto aa = check_thread_invariant("argmax(all)", [&] { return tfm::argmax(sgn); });
  check_reduce_ref("argmax", std::vector<std::int32_t>{aa}, ref_reduce("argmax", vs, 1, r * c, 1),
                   0);

  auto l1 = check_thread_invariant("logsumexp<-1>", [&] { return tfm::logsumexp<-1>(sgn); });
  check_reduce_ref("logsumexp", tfm_test::to_vector(l1), ref_reduce("logsumexp", vs, r, c, 1), tol);
  auto l0 = check_thread_invariant("logsumexp<0>", [&] { return tfm::logsumexp<0>(sgn); });
  check_reduce_ref("logsumexp", tfm_test::to_vector(l0), ref_reduce("logsumexp", vs, 1, r, c), tol);
  auto la = check_thread_invariant("logsumexp(all)", [&] { return tfm::logsumexp(sgn); });
  check_reduce_ref("logsumexp", std::vector<double>{static_cast<double>(la)},
                   ref_reduce("logsumexp", vs, 1, r * c, 1), tol);

  // An expression argument (evaluated once, then reduced).
  auto e1 = check_thread_invariant("sum<-1>(expr)", [&] { return tfm::sum<-1>(pos * 2 + 1); });
  std::vector<double> vpe(vp.size());
  for (std::size_t i = 0; i < vp.size(); ++i) vpe[i] = vp[i] * 2 + 1;
  check_reduce_ref("sum", tfm_test::to_vector(e1), ref_reduce("sum", vpe, r, c, 1), tol);
}

}  // namespace

TEST_CASE("threads: reductions are bitwise identical for 1, 2 and 3 threads") {
  auto g = tfm_test::rng(0x7e4d0002);
  // Many rows of odd length (rows shared among threads), few very long rows (blocks shared
  // among threads), and one long row (all blocks of a single reduction).
  SUBCASE("f32 1001 x 1003") { reductions_of<float>({1001, 1003}, g); }
  SUBCASE("f32 3 x 333335") { reductions_of<float>({3, 333335}, g); }
  SUBCASE("f32 1 x 1000003") { reductions_of<float>({1, 1000003}, g); }
  SUBCASE("f64 517 x 1031") { reductions_of<double>({517, 1031}, g); }
}

namespace {
template <class T>
void rows_of(const std::array<index_t, 2>& ext, std::mt19937& g) {
  const index_t r = ext[0], c = ext[1];
  INFO(std::string(tfm::dtype_name<T>()) << " shape " << r << "x" << c);
  auto x = random_tensor<T, 2>(ext, g, -6, 6);
  auto w = random_tensor<T, 1>({c}, g, 0.5, 1.5);
  auto b = random_tensor<T, 1>({c}, g, -1, 1);
  const auto vx = as_double(x), vw = as_double(w), vb = as_double(b);
  const double tol = std::is_same_v<T, float> ? 1e-10 : 1e-20;

  auto sm = check_thread_invariant("softmax<-1>", [&] { return tfm::softmax(x); });
  auto lsm = check_thread_invariant("log_softmax<-1>", [&] { return tfm::log_softmax(x); });
  auto sm0 = check_thread_invariant("softmax<0>", [&] { return tfm::softmax<0>(x); });
  auto rms = check_thread_invariant("rms_norm", [&] { return tfm::rms_norm(x, w, 1e-6); });
  auto ln = check_thread_invariant("layer_norm", [&] { return tfm::layer_norm(x, w, b, 1e-5); });

  std::vector<double> want_sm(vx.size()), want_lsm(vx.size()), want_sm0(vx.size()),
      want_rms(vx.size()), want_ln(vx.size());
  for (index_t i = 0; i < r; ++i) {
    const double* row = vx.data() + i * c;
    double m = row[0], ss = 0, mu = 0;
    for (index_t j = 0; j < c; ++j) m = std::max(m, row[j]);
    double s = 0;
    for (index_t j = 0; j < c; ++j) s += std::exp(row[j] - m);
    for (index_t j = 0; j < c; ++j) ss += row[j] * row[j], mu += row[j];
    mu /= static_cast<double>(c);
    double var = 0;
    for (index_t j = 0; j < c; ++j) var += (row[j] - mu) * (row[j] - mu);
    var /= static_cast<double>(c);
    const double rr = 1.0 / std::sqrt(ss / static_cast<double>(c) + 1e-6);
    const double lr = 1.0 / std::sqrt(var + 1e-5);
    for (index_t j = 0; j < c; ++j) {
      const auto k = static_cast<std::size_t>(i * c + j);
      want_sm[k] = std::exp(row[j] - m) / s;
      want_lsm[k] = (row[j] - m) - std::log(s);
      want_rms[k] = row[j] * rr * vw[static_cast<std::size_t>(j)];
      want_ln[k] =
          (row[j] - mu) * lr * vw[static_cast<std::size_t>(j)] + vb[static_cast<std::size_t>(j)];
    }
  }
  for (index_t j = 0; j < c; ++j) {  // softmax over axis 0 (columns)
    double m = vx[static_cast<std::size_t>(j)];
    for (index_t i = 0; i < r; ++i) m = std::max(m, vx[static_cast<std::size_t>(i * c + j)]);
    double s = 0;
    for (index_t i = 0; i < r; ++i) s += std::exp(vx[static_cast<std::size_t>(i * c + j)] - m);
    for (index_t i = 0; i < r; ++i)
      want_sm0[static_cast<std::size_t>(i * c + j)] =
          std::exp(vx[static_cast<std::size_t>(i * c + j)] - m) / s;
  }
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(sm), want_sm, tol));
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(lsm), want_lsm, tol));
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(sm0), want_sm0, tol));
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(rms), want_rms, tol));
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(ln), want_ln, tol));
}
}  // namespace

TEST_CASE(
    "threads: softmax, log_softmax, rms_norm, layer_norm are bitwise identical for 1-3 "
    "threads") {
  auto g = tfm_test::rng(0x7e4d0003);
  SUBCASE("f32 1001 x 1003") { rows_of<float>({1001, 1003}, g); }
  SUBCASE("f32 2 x 100003") { rows_of<float>({2, 100003}, g); }
  SUBCASE("f64 257 x 131") { rows_of<double>({257, 131}, g); }
}

namespace {
/// Double reference of a (M, K) x (K, N) product of row-major buffers.
std::vector<double> ref_matmul(const std::vector<double>& a, const std::vector<double>& b,
                               index_t M, index_t K, index_t N) {
  std::vector<double> c(static_cast<std::size_t>(M * N), 0.0);
  for (index_t i = 0; i < M; ++i)
    for (index_t k = 0; k < K; ++k) {
      const double aik = a[static_cast<std::size_t>(i * K + k)];
      for (index_t j = 0; j < N; ++j)
        c[static_cast<std::size_t>(i * N + j)] += aik * b[static_cast<std::size_t>(k * N + j)];
    }
  return c;
}

template <class T>
void matmul_case(index_t M, index_t K, index_t N, std::mt19937& g) {
  INFO(std::string(tfm::dtype_name<T>())
       << " (" << M << ", " << K << ") x (" << K << ", " << N << ")");
  const double tol = std::is_same_v<T, float> ? 1e-9 : 1e-24;
  auto a = random_tensor<T, 2>({M, K}, g, -1, 1);
  auto b = random_tensor<T, 2>({K, N}, g, -1, 1);
  auto bt = random_tensor<T, 2>({N, K}, g, -1, 1);
  const auto va = as_double(a), vb = as_double(b);
  auto c = check_thread_invariant("a x b", [&] { return tfm::matmul(a, b); });
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(c), ref_matmul(va, vb, M, K, N), tol));
  // B passed transposed (the weight layout): a transpose flag, no copy.
  auto ct = check_thread_invariant("a x transpose(bt)",
                                   [&] { return tfm::matmul(a, tfm::transpose(bt)); });
  std::vector<double> vbt_t(static_cast<std::size_t>(K * N));
  const auto vbt = as_double(bt);
  for (index_t k = 0; k < K; ++k)
    for (index_t j = 0; j < N; ++j)
      vbt_t[static_cast<std::size_t>(k * N + j)] = vbt[static_cast<std::size_t>(j * K + k)];
  TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(ct), ref_matmul(va, vbt_t, M, K, N), tol));
}
}  // namespace

TEST_CASE("threads: matmul is bitwise identical for 1, 2 and 3 threads") {
  auto g = tfm_test::rng(0x7e4d0004);
  SUBCASE("packed GEMM f32") { matmul_case<float>(301, 257, 263, g); }
  SUBCASE("packed GEMM f64") { matmul_case<double>(203, 131, 197, g); }
  SUBCASE("gemv: N == 1 and M == 1") {
    matmul_case<float>(1001, 513, 1, g);
    matmul_case<float>(1, 1001, 300, g);
  }
  SUBCASE("batched, B shared (batch folded into M) and per-batch B") {
    const index_t nb = 5, M = 67, K = 129, N = 131;
    auto a = random_tensor<float, 3>({nb, M, K}, g, -1, 1);
    auto w = random_tensor<float, 2>({K, N}, g, -1, 1);
    auto b3 = random_tensor<float, 3>({nb, K, N}, g, -1, 1);
    const auto va = as_double(a), vw = as_double(w), vb3 = as_double(b3);
    auto c_shared = check_thread_invariant("(5, M, K) x (K, N)", [&] { return tfm::matmul(a, w); });
    auto c_batch =
        check_thread_invariant("(5, M, K) x (5, K, N)", [&] { return tfm::matmul(a, b3); });
    std::vector<double> want_shared, want_batch;
    for (index_t i = 0; i < nb; ++i) {
      std::vector<double> ai(va.begin() + i * M * K, va.begin() + (i + 1) * M * K);
      std::vector<double> bi(vb3.begin() + i * K * N, vb3.begin() + (i + 1) * K * N);
      auto cs = ref_matmul(ai, vw, M, K, N);
      auto cb = ref_matmul(ai, bi, M, K, N);
      want_shared.insert(want_shared.end(), cs.begin(), cs.end());
      want_batch.insert(want_batch.end(), cb.begin(), cb.end());
    }
    TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(c_shared), want_shared, 1e-9));
    TFM_CHECK_REPORT(tfm_test::compare(tfm_test::to_vector(c_batch), want_batch, 1e-9));
  }
}
