// Document masks for sequence packing (attention_options::segments): several documents share a
// row of T tokens and a query attends only to keys of its own document.
//   - attention_composed with segments against a hand-written double loop in f64;
//   - the fused flash kernel against attention_composed (outputs and the three gradients), in f64
//     and f32, MHA/GQA/MQA, documents that cut query and key tiles, length-1 documents, with
//     sliding windows, ALiBi and bidirectional attention; one document equals no mask bitwise;
//   - gradcheck (testing/gradcheck.hpp) of the fused op with segments;
//   - packing: with RoPE at continuous positions 0 .. T-1, each document's outputs and input
//     gradients equal those of the document run alone at positions 0 .. n-1;
//   - invalid segments are rejected; 1 and 2 threads give identical bits.
// A timing case (skipped by default; run with --no-skip -tc="timing*") measures forward+backward
// at SmolLM2's attention shape with 8 documents per row against no mask.
#include <doctest/doctest.h>
#include <typeformer/testing/gradcheck.hpp>
#include <typeformer/typeformer.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

using namespace tfm;

namespace {
using S4 = dyn_shape<4>;
using ids = std::shared_ptr<const std::vector<std::int32_t>>;

/// Document ids for rows made of documents of the given lengths (each row sums to T).
ids make_segments(const std::vector<std::vector<index_t>>& rows) {
  auto s = std::make_shared<std::vector<std::int32_t>>();
  for (const auto& r : rows) {
    std::int32_t id = 0;
    for (index_t n : r) {
      for (index_t i = 0; i < n; ++i) s->push_back(id);
      id += 3;  // ids need not be consecutive, only non-decreasing
    }
  }
  return s;
}

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

/// The definition, written out: softmax over the keys visible to each query (same document,
/// causal / window / ALiBi as documented in ops/attention.hpp), in double. Zero row if none.
tensor<double, S4> naive(const tensor<double, S4>& q, const tensor<double, S4>& k,
                         const tensor<double, S4>& v, const attention_options& o) {
  const index_t B = q.extent(0), H = q.extent(1), T = q.extent(2), D = q.extent(3), G = k.extent(1),
                S = k.extent(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto slopes = alibi_slopes(H);
  tensor<double, S4> out(S4(B, H, T, D));
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < T; ++i) {
        std::vector<double> w(static_cast<std::size_t>(S), 0.0);
        std::vector<bool> vis(static_cast<std::size_t>(S), false);
        double mx = -INFINITY;
        for (index_t j = 0; j < S; ++j) {
          bool ok = (!o.causal || j <= i) && (o.window <= 0 || i - j < o.window);
          if (o.segments)
            ok = ok && (*o.segments)[static_cast<std::size_t>(b * T + i)] ==
                           (*o.segments)[static_cast<std::size_t>(b * T + j)];
          if (!ok) continue;
          double s = 0;
          for (index_t d = 0; d < D; ++d) s += q(b, h, i, d) * k(b, h / (H / G), j, d);
          s *= scale;
          if (o.alibi) s -= slopes[static_cast<std::size_t>(h)] * static_cast<double>(i - j);
          w[static_cast<std::size_t>(j)] = s;
          vis[static_cast<std::size_t>(j)] = true;
          mx = std::max(mx, s);
        }
        double z = 0;
        for (index_t j = 0; j < S; ++j)
          if (vis[static_cast<std::size_t>(j)])
            z += (w[static_cast<std::size_t>(j)] = std::exp(w[static_cast<std::size_t>(j)] - mx));
        for (index_t d = 0; d < D; ++d) {
          double acc = 0;
          for (index_t j = 0; j < S; ++j)
            if (vis[static_cast<std::size_t>(j)])
              acc += w[static_cast<std::size_t>(j)] * v(b, h / (H / G), j, d);
          out(b, h, i, d) = z > 0 ? acc / z : 0.0;
        }
      }
  return out;
}

struct run_result {
  tensor<double, S4> out, dq, dk, dv;
};

template <class T>
run_result run(bool fused, index_t B, index_t H, index_t G, index_t Tq, index_t D,
               const attention_options& o, std::uint64_t seed) {
  auto q = parameter(randn<T>(S4(B, H, Tq, D), seed));
  auto k = parameter(randn<T>(S4(B, G, Tq, D), seed + 1));
  auto v = parameter(randn<T>(S4(B, G, Tq, D), seed + 2));
  auto w = constant(randn<T>(S4(B, H, Tq, D), seed + 3));
  auto out = fused ? attention(q, k, v, o) : attention_composed(q, k, v, o);
  sum(out * w).backward();
  return {cast<double>(out.value()), cast<double>(q.grad()), cast<double>(k.grad()),
          cast<double>(v.grad())};
}

template <class T>
void compare(index_t H, index_t G, index_t D, const std::vector<std::vector<index_t>>& rows,
             attention_options o, double tol) {
  const std::uint64_t seed = 4321;
  const index_t B = static_cast<index_t>(rows.size());
  index_t Tq = 0;
  for (index_t n : rows[0]) Tq += n;
  o.segments = make_segments(rows);
  MESSAGE("seed ", seed, " B=", B, " H=", H, " G=", G, " T=", Tq, " D=", D, " causal=", o.causal,
          " window=", o.window, " alibi=", o.alibi, " docs in row 0=", rows[0].size());
  auto f = run<T>(true, B, H, G, Tq, D, o, seed);
  auto r = run<T>(false, B, H, G, Tq, D, o, seed);
  CHECK(nmse(f.out, r.out) <= tol);
  CHECK(nmse(f.dq, r.dq) <= tol);
  CHECK(nmse(f.dk, r.dk) <= tol);
  CHECK(nmse(f.dv, r.dv) <= tol);
  for (index_t i = 0; i < f.out.size(); ++i) REQUIRE(std::isfinite(f.out.data()[i]));
  for (index_t i = 0; i < f.dq.size(); ++i) REQUIRE(std::isfinite(f.dq.data()[i]));
}
}  // namespace

TEST_CASE(
    "segments: the composed reference and the flash kernel equal the written-out "
    "definition") {
  const std::uint64_t seed = 77;
  MESSAGE("seed ", seed);
  struct cfg {
    index_t H, G, D;
    std::vector<std::vector<index_t>> rows;
    bool causal, alibi;
    index_t window;
  };
  const std::vector<cfg> cases = {
      {2, 2, 8, {{5, 1, 14}, {20}}, true, false, 0},
      {4, 2, 4, {{1, 1, 7, 11}, {3, 17}}, true, true, 0},
      {2, 1, 4, {{9, 11}, {4, 4, 12}}, true, false, 3},
      {3, 3, 4, {{6, 6, 8}, {2, 18}}, false, false, 0},
  };
  for (const auto& c : cases) {
    attention_options o;
    o.causal = c.causal;
    o.alibi = c.alibi;
    o.window = c.window;
    o.segments = make_segments(c.rows);
    const index_t B = static_cast<index_t>(c.rows.size()), T = 20;
    auto q = randn<double>(S4(B, c.H, T, c.D), seed);
    auto k = randn<double>(S4(B, c.G, T, c.D), seed + 1);
    auto v = randn<double>(S4(B, c.G, T, c.D), seed + 2);
    auto ref = naive(q, k, v, o);
    auto comp = attention_composed(constant(q), constant(k), constant(v), o).value();
    auto flash = attention(constant(q), constant(k), constant(v), o).value();
    CHECK(nmse(comp, ref) <= 1e-26);
    CHECK(nmse(flash, ref) <= 1e-26);
  }
}

TEST_CASE("segments: flash attention equals composed attention in f64 (forward and backward)") {
  attention_options causal;
  compare<double>(4, 4, 16, {{30, 70, 50}, {1, 64, 1, 84}}, causal, 1e-24);  // MHA, tiles cut
  compare<double>(4, 2, 8, {{64, 64, 2}, {130}}, causal, 1e-24);    // GQA, tile-aligned documents
  compare<double>(4, 1, 8, {{10, 10, 10, 10, 60}}, causal, 1e-24);  // MQA
  attention_options win;
  win.window = 17;
  compare<double>(4, 2, 8, {{100, 50}, {13, 137}}, win, 1e-24);  // window inside documents
  attention_options ali;
  ali.alibi = true;
  compare<double>(6, 6, 8, {{45, 45}, {89, 1}}, ali, 1e-24);  // ALiBi, H not a power of two
  attention_options full;
  full.causal = false;
  compare<double>(2, 2, 8, {{33, 40, 27}, {70, 30}}, full, 1e-24);  // bidirectional documents
  attention_options full_win;
  full_win.causal = false;
  full_win.window = 9;
  full_win.alibi = true;
  compare<double>(2, 1, 4, {{66, 34}}, full_win, 1e-24);
}

TEST_CASE(
    "segments: flash attention equals composed attention in f32 within the matmul "
    "tolerance") {
  attention_options causal;
  compare<float>(6, 6, 64, {{40, 100, 116}, {256}}, causal, 5e-4);
  attention_options w;
  w.window = 64;
  w.alibi = true;
  compare<float>(4, 2, 32, {{70, 130}}, w, 5e-4);
}

TEST_CASE("segments: bf16 inputs run the f32 kernel with the same document mask") {
  // The op converts bf16 q, k, v to f32, runs the f32 kernel and rounds the output to bf16;
  // gradients are f32. So the bf16 run equals the f32 run on the rounded inputs.
  const std::uint64_t seed = 31;
  MESSAGE("seed ", seed);
  attention_options o;
  o.segments = make_segments({{50, 1, 79}, {64, 66}});
  auto qb = randn<float>(S4(2, 4, 130, 16), seed), kb = randn<float>(S4(2, 2, 130, 16), seed + 1),
       vb = randn<float>(S4(2, 2, 130, 16), seed + 2);
  auto q = parameter(cast<bf16>(qb)), k = parameter(cast<bf16>(kb)), v = parameter(cast<bf16>(vb));
  auto qf = parameter(cast<float>(q.value())), kf = parameter(cast<float>(k.value())),
       vf = parameter(cast<float>(v.value()));
  auto out = attention(q, k, v, o);
  auto outf = attention(qf, kf, vf, o);
  sum(out).backward();
  sum(outf).backward();
  auto rounded = cast<bf16>(outf.value());
  for (index_t i = 0; i < out.size(); ++i)
    REQUIRE(static_cast<float>(out.value().data()[i]) == static_cast<float>(rounded.data()[i]));
  for (index_t i = 0; i < q.size(); ++i) REQUIRE(q.grad().data()[i] == qf.grad().data()[i]);
  for (index_t i = 0; i < k.size(); ++i) REQUIRE(k.grad().data()[i] == kf.grad().data()[i]);
  for (index_t i = 0; i < v.size(); ++i) REQUIRE(v.grad().data()[i] == vf.grad().data()[i]);
}

TEST_CASE("segments: one document per row is bitwise the unmasked kernel") {
  attention_options none, one;
  one.segments = make_segments({{130}, {130}});
  auto a = run<float>(true, 2, 4, 2, 130, 32, none, 5);
  auto b = run<float>(true, 2, 4, 2, 130, 32, one, 5);
  for (index_t i = 0; i < a.out.size(); ++i) REQUIRE(a.out.data()[i] == b.out.data()[i]);
  for (index_t i = 0; i < a.dq.size(); ++i) REQUIRE(a.dq.data()[i] == b.dq.data()[i]);
  for (index_t i = 0; i < a.dk.size(); ++i) REQUIRE(a.dk.data()[i] == b.dk.data()[i]);
  for (index_t i = 0; i < a.dv.size(); ++i) REQUIRE(a.dv.data()[i] == b.dv.data()[i]);
}

TEST_CASE("segments: gradcheck of the fused op") {
  using tfm::testing::gradcheck;
  struct cfg {
    index_t B, H, G, D;
    std::vector<std::vector<index_t>> rows;
    bool causal, alibi;
    index_t window;
  };
  const std::vector<cfg> cases = {
      {2, 2, 2, 4, {{2, 1, 3}, {6}}, true, false, 0},
      {1, 4, 2, 4, {{3, 1, 3}}, true, true, 0},
      {1, 2, 1, 4, {{4, 3}}, true, false, 2},
      {2, 2, 2, 3, {{2, 4}, {1, 5}}, false, false, 0},
  };
  std::uint64_t seed = 11;
  for (const auto& c : cases) {
    attention_options o;
    o.causal = c.causal;
    o.alibi = c.alibi;
    o.window = c.window;
    o.segments = make_segments(c.rows);
    index_t T = 0;
    for (index_t n : c.rows[0]) T += n;
    MESSAGE("seed ", seed, " B=", c.B, " H=", c.H, " G=", c.G, " T=", T);
    auto q = parameter(randn<double>(S4(c.B, c.H, T, c.D), seed++));
    auto k = parameter(randn<double>(S4(c.B, c.G, T, c.D), seed++));
    auto v = parameter(randn<double>(S4(c.B, c.G, T, c.D), seed++));
    auto f = [&o](const auto& a, const auto& b, const auto& d) { return attention(a, b, d, o); };
    auto r = gradcheck(f, q, k, v);
    CHECK_MESSAGE(r.passed, r.str());
    CHECK(r.max_rel_error < 1e-6);
  }
}

TEST_CASE("segments: a packed row with RoPE at positions 0..T-1 equals each document run alone") {
  // RoPE makes q_i . k_j depend on positions only through i - j, so the packed row (continuous
  // positions, document mask) and the separate runs (positions restarting at 0) agree up to the
  // rounding of the rotation angles; outputs and the gradients of the pre-RoPE q, k, v alike.
  const std::uint64_t seed = 2024;
  const std::vector<index_t> docs = {37, 64, 1, 28};
  index_t T = 0;
  for (index_t n : docs) T += n;
  for (int alibi = 0; alibi < 2; ++alibi) {
    const index_t H = 4, G = 2, D = 16;
    MESSAGE("seed ", seed, " T=", T, " documents 37, 64, 1, 28, GQA 4/2, alibi=", alibi);
    rope_config rc;
    rc.base = 10000.0;
    auto q0 = randn<double>(S4(1, H, T, D), seed);
    auto k0 = randn<double>(S4(1, G, T, D), seed + 1);
    auto v0 = randn<double>(S4(1, G, T, D), seed + 2);
    auto w0 = randn<double>(S4(1, H, T, D), seed + 3);
    attention_options packed_o;
    packed_o.alibi = alibi != 0;
    packed_o.segments = make_segments({docs});
    auto q = parameter(q0), k = parameter(k0), v = parameter(v0);
    auto out = attention(rope(q, rc, 0), rope(k, rc, 0), v, packed_o);
    sum(out * constant(w0)).backward();

    // Copies rows [p0, p0 + n) of the time axis.
    auto slice = [](const tensor<double, S4>& x, index_t p0, index_t n) {
      tensor<double, S4> y(S4(x.extent(0), x.extent(1), n, x.extent(3)));
      for (index_t a = 0; a < x.extent(1); ++a)
        for (index_t t = 0; t < n; ++t)
          for (index_t d = 0; d < x.extent(3); ++d) y(0, a, t, d) = x(0, a, p0 + t, d);
      return y;
    };
    double worst = 0;
    auto diff = [&worst](const tensor<double, S4>& packed, const tensor<double, S4>& alone,
                         index_t p0) {
      for (index_t a = 0; a < alone.extent(1); ++a)
        for (index_t t = 0; t < alone.extent(2); ++t)
          for (index_t d = 0; d < alone.extent(3); ++d)
            worst = std::max(worst, std::abs(packed(0, a, p0 + t, d) - alone(0, a, t, d)));
    };
    index_t p0 = 0;
    for (index_t n : docs) {
      attention_options alone_o;
      alone_o.alibi = alibi != 0;
      auto qs = parameter(slice(q0, p0, n)), ks = parameter(slice(k0, p0, n)),
           vs = parameter(slice(v0, p0, n));
      auto os = attention(rope(qs, rc, 0), rope(ks, rc, 0), vs, alone_o);
      sum(os * constant(slice(w0, p0, n))).backward();
      diff(out.value(), os.value(), p0);
      diff(q.grad(), qs.grad(), p0);
      diff(k.grad(), ks.grad(), p0);
      diff(v.grad(), vs.grad(), p0);
      p0 += n;
    }
    MESSAGE("max |packed - alone| over outputs and gradients: ", worst);
    CHECK(worst < 1e-10);
  }
}

TEST_CASE("segments: invalid document ids are rejected with a clear error") {
  auto q = parameter(randn<float>(S4(2, 2, 6, 4), 1));
  auto k = parameter(randn<float>(S4(2, 2, 6, 4), 2));
  auto both = [&](const attention_options& o, auto kk) {
    bool fused_threw = false, composed_threw = false;
    try {
      attention(q, kk, kk, o);
    } catch (const shape_error& e) {
      fused_threw = true;
      MESSAGE(std::string(e.what()));
    } catch (const value_error& e) {
      fused_threw = true;
      MESSAGE(std::string(e.what()));
    }
    try {
      attention_composed(q, kk, kk, o);
    } catch (const error&) {
      composed_threw = true;
    }
    CHECK(fused_threw);
    CHECK(composed_threw);
  };
  attention_options o;
  o.segments = std::make_shared<std::vector<std::int32_t>>(11, 0);  // not B * T = 12
  CHECK_THROWS_AS(attention(q, k, k, o), shape_error);
  both(o, k);
  o.segments = std::make_shared<std::vector<std::int32_t>>(
      std::vector<std::int32_t>{0, 0, 1, 1, 2, 2, 0, 1, 1, 0, 2, 2});  // row 1 goes back
  CHECK_THROWS_AS(attention(q, k, k, o), value_error);
  CHECK_THROWS_WITH_AS(attention(q, k, k, o),
                       doctest::Contains("row 1 has id 0 at position 3 after 1"), value_error);
  both(o, k);
  o.segments = make_segments({{3, 3}, {6}});
  auto k8 = parameter(randn<float>(S4(2, 2, 8, 4), 3));  // S != T
  CHECK_THROWS_AS(attention(q, k8, k8, o), shape_error);
  both(o, k8);
  o.q_offset = 2;
  CHECK_THROWS_AS(attention(q, k, k, o), value_error);
  both(o, k);
  o.q_offset = 0;  // explicit 0 is fine, as is an empty vector (no mask)
  CHECK_NOTHROW(attention(q, k, k, o));
  o.segments = std::make_shared<std::vector<std::int32_t>>();
  CHECK_NOTHROW(attention(q, k, k, o));
}

TEST_CASE("segments: flash attention gives identical bits on 1 and 2 threads") {
  attention_options o;
  o.segments = make_segments({{20, 90, 20}, {1, 129}});
  auto once = [&o](int threads) {
    thread_scope ts(threads);
    return run<float>(true, 2, 4, 2, 130, 32, o, 99);
  };
  auto a = once(1), b = once(2);
  for (index_t i = 0; i < a.out.size(); ++i) REQUIRE(a.out.data()[i] == b.out.data()[i]);
  for (index_t i = 0; i < a.dq.size(); ++i) REQUIRE(a.dq.data()[i] == b.dq.data()[i]);
  for (index_t i = 0; i < a.dk.size(); ++i) REQUIRE(a.dk.data()[i] == b.dk.data()[i]);
  for (index_t i = 0; i < a.dv.size(); ++i) REQUIRE(a.dv.data()[i] == b.dv.data()[i]);
}

// Figure: forward + backward of the fused op, f32, B=4, T=1024, H=9, D=64 (SmolLM2-135M has
// 9 query heads and 3 key/value heads), 8 documents of 128 tokens per row against no mask.
TEST_CASE("timing: packed documents against full causal attention" * doctest::skip()) {
  const index_t B = 4, T = 1024, H = 9, G = 3, D = 64;
  auto q = parameter(randn<float>(S4(B, H, T, D), 1));
  auto k = parameter(randn<float>(S4(B, G, T, D), 2));
  auto v = parameter(randn<float>(S4(B, G, T, D), 3));
  auto w = constant(randn<float>(S4(B, H, T, D), 4));
  attention_options none, packed;
  packed.segments = make_segments(std::vector<std::vector<index_t>>(
      4, std::vector<index_t>{128, 128, 128, 128, 128, 128, 128, 128}));
  // Best of 5 of the forward alone and of forward + backward (the backward includes the small
  // sum(out * w) node that seeds it).
  auto time = [&](const attention_options& o, bool backward) {
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      q.zero_grad();
      k.zero_grad();
      v.zero_grad();
      auto t0 = std::chrono::steady_clock::now();
      auto out = attention(q, k, v, o);
      if (backward) sum(out * w).backward();
      auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return best;
  };
  for (int round = 0; round < 2; ++round)  // interleaved
    for (int bw = 0; bw < 2; ++bw) {
      const double a = time(none, bw != 0), b = time(packed, bw != 0);
      std::printf(
          "B=%lld T=%lld H=%lld G=%lld D=%lld f32 threads=%d %s: no mask %.1f ms, "
          "8 documents/row %.1f ms (%.2fx)\n",
          static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H),
          static_cast<long long>(G), static_cast<long long>(D), num_threads(),
          bw ? "forward+backward" : "forward", a, b, a / b);
    }
}
