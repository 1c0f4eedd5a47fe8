// The fused flash-style attention (backend/cpu/attention.hpp via tfm::attention) against the
// composed reference (tfm::attention_composed: matmul + mask + softmax + matmul, each op with its
// own tested vjp): outputs and all three gradients, for MHA/GQA/MQA, causal and not, sliding
// windows, ALiBi, decode-style q_offset, odd sizes that cut tiles, f64 and f32; and thread-count
// independence of the fused kernel.
#include <doctest/doctest.h>
#include <typeformer/typeformer.hpp>

#include <cstdint>

using namespace tfm;

namespace {
template <class A, class B>
double nmse(const A& a, const B& b) {
  double n = 0, d = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    double x = static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i]);
    n += x * x;
    d += static_cast<double>(b.data()[i]) * static_cast<double>(b.data()[i]);
  }
  return d > 0 ? n / d : n;
}

struct run_result {
  tensor<double, dyn_shape<4>> out, dq, dk, dv;
};

template <class T>
run_result run(bool fused, index_t B, index_t H, index_t G, index_t Tq, index_t S, index_t D,
               const attention_options& o, std::uint64_t seed) {
  auto q = parameter(randn<T>(dyn_shape<4>(B, H, Tq, D), seed));
  auto k = parameter(randn<T>(dyn_shape<4>(B, G, S, D), seed + 1));
  auto v = parameter(randn<T>(dyn_shape<4>(B, G, S, D), seed + 2));
  auto w = constant(randn<T>(dyn_shape<4>(B, H, Tq, D), seed + 3));
  auto out = fused ? attention(q, k, v, o) : attention_composed(q, k, v, o);
  sum(out * w).backward();
  return {cast<double>(out.value()), cast<double>(q.grad()), cast<double>(k.grad()),
          cast<double>(v.grad())};
}

template <class T>
void compare(index_t B, index_t H, index_t G, index_t Tq, index_t S, index_t D,
             const attention_options& o, double tol) {
  const std::uint64_t seed = 1234;
  MESSAGE("seed ", seed, " B=", B, " H=", H, " G=", G, " T=", Tq, " S=", S, " D=", D,
          " causal=", o.causal, " window=", o.window, " alibi=", o.alibi, " q_offset=", o.q_offset);
  auto f = run<T>(true, B, H, G, Tq, S, D, o, seed);
  auto r = run<T>(false, B, H, G, Tq, S, D, o, seed);
  CHECK(nmse(f.out, r.out) <= tol);
  CHECK(nmse(f.dq, r.dq) <= tol);
  CHECK(nmse(f.dk, r.dk) <= tol);
  CHECK(nmse(f.dv, r.dv) <= tol);
  for (index_t i = 0; i < f.out.size(); ++i) REQUIRE(std::isfinite(f.out.data()[i]));
}
}  // namespace

TEST_CASE("flash attention equals composed attention in f64 (forward and backward)") {
  attention_options causal;
  compare<double>(2, 4, 4, 70, 70, 16, causal, 1e-24);   // MHA, tiles cut at 64
  compare<double>(2, 4, 2, 130, 130, 8, causal, 1e-24);  // GQA
  compare<double>(1, 4, 1, 100, 100, 8, causal, 1e-24);  // MQA
  attention_options win;
  win.window = 17;
  compare<double>(2, 4, 2, 150, 150, 8, win, 1e-24);  // sliding window
  attention_options ali;
  ali.alibi = true;
  compare<double>(2, 6, 6, 90, 90, 8, ali, 1e-24);  // ALiBi, H not a power of two
  attention_options full;
  full.causal = false;
  compare<double>(1, 2, 2, 33, 65, 8, full, 1e-24);  // bidirectional, T != S
  attention_options dec;
  compare<double>(1, 2, 1, 5, 80, 8, dec, 1e-24);  // decode: q_offset = S - T
  attention_options tiny;
  tiny.window = 3;
  tiny.q_offset = 0;
  compare<double>(1, 2, 2, 10, 10, 4, tiny, 1e-24);
}

TEST_CASE("flash attention equals composed attention in f32 within the matmul tolerance") {
  attention_options causal;
  compare<float>(2, 6, 6, 256, 256, 64, causal, 5e-4);
  attention_options w;
  w.window = 64;
  w.alibi = true;
  compare<float>(1, 4, 2, 200, 200, 32, w, 5e-4);
}

TEST_CASE("a query that sees no key gets zeros, not NaN") {
  // window 1 with q_offset 0: query i sees only key i; with 5 queries and 3 keys, queries 3 and 4
  // see nothing, queries 0..2 copy their value row.
  attention_options o;
  o.window = 1;
  o.q_offset = 0;
  auto q = parameter(randn<float>(dyn_shape<4>(1, 1, 5, 4), 1));
  auto k = parameter(randn<float>(dyn_shape<4>(1, 1, 3, 4), 2));
  auto v = parameter(randn<float>(dyn_shape<4>(1, 1, 3, 4), 3));
  for (int fused = 0; fused < 2; ++fused) {
    auto out = fused ? attention(q, k, v, o) : attention_composed(q, k, v, o);
    for (index_t i = 0; i < 3; ++i)
      for (index_t d = 0; d < 4; ++d)
        CHECK(out.value()(0, 0, i, d) == doctest::Approx(v.value()(0, 0, i, d)));
    for (index_t i = 3; i < 5; ++i)
      for (index_t d = 0; d < 4; ++d) CHECK(out.value()(0, 0, i, d) == 0.0f);
    q.zero_grad();
    sum(out).backward();
    for (index_t i = 0; i < q.size(); ++i) CHECK(std::isfinite(q.grad().data()[i]));
  }
}

TEST_CASE("flash attention gives identical bits on 1 and 2 threads") {
  auto once = [](int threads) {
    thread_scope ts(threads);
    attention_options o;
    return run<float>(true, 2, 4, 2, 130, 130, 32, o, 99);
  };
  auto a = once(1), b = once(2);
  for (index_t i = 0; i < a.out.size(); ++i) REQUIRE(a.out.data()[i] == b.out.data()[i]);
  for (index_t i = 0; i < a.dq.size(); ++i) REQUIRE(a.dq.data()[i] == b.dq.data()[i]);
  for (index_t i = 0; i < a.dk.size(); ++i) REQUIRE(a.dk.data()[i] == b.dk.data()[i]);
}

TEST_CASE("attention rejects heads that do not group") {
  auto q = parameter(randn<float>(dyn_shape<4>(1, 3, 4, 4), 1));
  auto k = parameter(randn<float>(dyn_shape<4>(1, 2, 4, 4), 2));
  CHECK_THROWS_AS(attention(q, k, k), shape_error);
}
