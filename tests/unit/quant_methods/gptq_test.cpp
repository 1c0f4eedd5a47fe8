// GPTQ (quant/gptq.hpp): against the independent numpy GPTQ of
// tests/data/quant_methods/gen_gptq.py (codes, f16 scales / minima), against round to nearest on
// the same grid (output error on correlated inputs), act-order, dampening of a singular H,
// group sizes, GGML block bytes and thread-count independence.
#include "typeformer/quant/gptq.hpp"
#include "tfm_test.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace q = tfm::quant;

template <class T>
std::vector<T> read_raw(const std::string& name, std::size_t count) {
  const std::string path = std::string(TFM_SOURCE_DIR) + "/tests/data/quant_methods/" + name;
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing fixture " << path);
  std::vector<T> v(count);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(T)));
  REQUIRE_MESSAGE(static_cast<std::size_t>(f.gcount()) == count * sizeof(T), "short " << path);
  return v;
}

/// H = 2 X^T X / n in double, in row order (independent of quant/calibrate.hpp's kernel).
std::vector<double> hessian_of(const std::vector<float>& x, index_t n, index_t K) {
  std::vector<double> h(static_cast<std::size_t>(K * K), 0.0);
  for (index_t r = 0; r < n; ++r)
    for (index_t i = 0; i < K; ++i)
      for (index_t j = 0; j < K; ++j) h[i * K + j] += double(x[r * K + i]) * double(x[r * K + j]);
  for (auto& v : h) v *= 2.0 / double(n);
  return h;
}

/// Correlated inputs (n x K) with a few outlier channels, as in the paper's setting.
std::vector<float> correlated_inputs(std::mt19937& g, index_t n, index_t K) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> a(static_cast<std::size_t>(K * K)), z(static_cast<std::size_t>(n * K)),
      x(static_cast<std::size_t>(n * K), 0.0f);
  for (index_t i = 0; i < K; ++i)
    for (index_t j = 0; j < K; ++j) a[i * K + j] = 0.25f * nd(g) + (i == j ? 1.0f : 0.0f);
  for (auto& v : z) v = nd(g);
  for (index_t r = 0; r < n; ++r)
    for (index_t k = 0; k < K; ++k)
      for (index_t j = 0; j < K; ++j) x[r * K + j] += z[r * K + k] * a[k * K + j];
  for (index_t r = 0; r < n; ++r) x[r * K + 1] *= 10.0f, x[r * K + K / 2] *= 6.0f;
  return x;
}

std::vector<float> random_weights(std::mt19937& g, index_t N, index_t K) {
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(static_cast<std::size_t>(N * K));
  for (auto& v : w) v = nd(g);
  return w;
}

}  // namespace

TEST_CASE("gptq: equals the independent numpy GPTQ (fixtures)") {
  const index_t rows = 24, cols = 128, n = 192;
  const auto W = read_raw<float>("gptq_W.f32", static_cast<std::size_t>(rows * cols));
  const auto X = read_raw<float>("gptq_X.f32", static_cast<std::size_t>(n * cols));
  const auto H = hessian_of(X, n, cols);
  std::ifstream cases(std::string(TFM_SOURCE_DIR) + "/tests/data/quant_methods/gptq_cases.txt");
  REQUIRE(cases.good());
  std::string line;
  int count = 0;
  while (std::getline(cases, line)) {
    std::istringstream in(line);
    std::string name, grid;
    index_t group = 0, block = 0;
    int act = 0;
    double damp = 0;
    in >> name >> grid >> group >> act >> damp >> block;
    CAPTURE(name);
    const index_t ng = cols / group;
    const auto codes =
        read_raw<std::uint8_t>("gptq_" + name + "_codes.u8", static_cast<std::size_t>(rows * cols));
    const auto scale =
        read_raw<float>("gptq_" + name + "_scale.f32", static_cast<std::size_t>(rows * ng));
    const auto mins =
        read_raw<float>("gptq_" + name + "_min.f32", static_cast<std::size_t>(rows * ng));
    q::gptq_options o;
    o.grid = grid == "q4_0" ? q::int4_grid::q4_0 : q::int4_grid::q4_1;
    o.group = group;
    o.act_order = act != 0;
    o.percdamp = damp;
    o.block = block;
    const q::group_quantized g = q::gptq_quantize(W, rows, cols, H, o);
    // The Hessians differ in the last bits (summation order), so a code exactly at a rounding
    // boundary could go either way: allow none here (measured: all equal), report any.
    std::size_t code_diff = 0, scale_diff = 0;
    for (std::size_t i = 0; i < codes.size(); ++i) code_diff += g.codes[i] != codes[i];
    for (std::size_t i = 0; i < scale.size(); ++i) {
      scale_diff += g.scale[i] != scale[i];
      if (o.grid == q::int4_grid::q4_1) scale_diff += g.minimum[i] != mins[i];
    }
    CHECK(code_diff == 0);
    CHECK(scale_diff == 0);
    ++count;
  }
  CHECK(count == 5);
}

TEST_CASE("gptq: output error below round to nearest on the same grid") {
  auto g = tfm_test::rng(19005);
  const index_t N = 48, K = 256, n = 512;
  const auto X = correlated_inputs(g, n, K);
  const auto H = hessian_of(X, n, K);
  const auto W = random_weights(g, N, K);
  struct variant {
    q::int4_grid grid;
    index_t group;
    bool act;
  };
  for (const variant v :
       {variant{q::int4_grid::q4_0, 32, false}, variant{q::int4_grid::q4_1, 32, false},
        variant{q::int4_grid::q4_0, 64, false}, variant{q::int4_grid::q4_0, 128, false},
        variant{q::int4_grid::q4_0, 32, true}, variant{q::int4_grid::q4_1, 128, true}}) {
    CAPTURE(static_cast<int>(v.grid));
    CAPTURE(v.group);
    CAPTURE(v.act);
    q::gptq_options o;
    o.grid = v.grid;
    o.group = v.group;
    o.act_order = v.act;
    const auto gq = q::gptq_quantize(W, N, K, H, o).dequantize();
    const auto rq = q::rtn_quantize(W, N, K, v.group, v.grid).dequantize();
    const double e_gptq = q::output_error(W, gq, N, K, H);
    const double e_rtn = q::output_error(W, rq, N, K, H);
    MESSAGE("grid " << int(v.grid) << " group " << v.group << " act " << v.act << ": GPTQ / RTN "
                    << e_gptq / e_rtn);
    CHECK(e_gptq < 0.8 * e_rtn);
    // and below ggml's own round-to-nearest bytes for the GGML-block cases
    if (v.group == 32) {
      const auto t = v.grid == q::int4_grid::q4_0 ? tfm::ggml_type::q4_0 : tfm::ggml_type::q4_1;
      const auto ggml = tfm::dequantize(
          t, tfm::quantize(t, W, static_cast<std::size_t>(N), static_cast<std::size_t>(K), "W"));
      CHECK(e_gptq < q::output_error(W, ggml, N, K, H));
    }
  }
}

TEST_CASE(
    "gptq: act-order: decreasing H_ii, static groups (round to nearest's scales), error below "
    "RTN") {
  auto g = tfm_test::rng(19006);
  const index_t N = 32, K = 128, n = 384;
  auto X = correlated_inputs(g, n, K);
  const auto H = hessian_of(X, n, K);
  const auto W = random_weights(g, N, K);
  q::gptq_options o;
  o.act_order = true;
  const q::gptq_factor f = q::gptq_factorize(H, K, o);
  // the permutation orders H_ii decreasingly
  for (index_t i = 1; i < K; ++i)
    CHECK(H[f.perm[i - 1] * K + f.perm[i - 1]] >= H[f.perm[i] * K + f.perm[i]]);
  const auto a = q::gptq_quantize(W, N, K, f, o);
  // static groups: the scales are round to nearest's, from the original weights
  const auto r = q::rtn_quantize(W, N, K, 32, q::int4_grid::q4_0);
  CHECK(a.scale == r.scale);
  const double e_act = q::output_error(W, a.dequantize(), N, K, H);
  const double e_rtn = q::output_error(W, r.dequantize(), N, K, H);
  MESSAGE("act-order GPTQ / RTN " << e_act / e_rtn);
  CHECK(e_act < e_rtn);
}

TEST_CASE("gptq: dampening makes a singular H usable; dead columns; bad H refused") {
  auto g = tfm_test::rng(19007);
  const index_t N = 16, K = 64, n = 8;  // rank 8 < 64: H singular
  std::normal_distribution<float> nd;
  std::vector<float> X(static_cast<std::size_t>(n * K));
  for (auto& v : X) v = nd(g);
  for (index_t r = 0; r < n; ++r) X[r * K + 7] = 0.0f;  // a dead column
  const auto H = hessian_of(X, n, K);
  const auto W = random_weights(g, N, K);
  q::gptq_options o;
  const auto f = q::gptq_factorize(H, K, o);
  CHECK(f.dead[7] == 1);
  CHECK(f.damp > 0.0);
  const auto res = q::gptq_quantize(W, N, K, f, o);
  const auto v = res.dequantize();
  for (float x : v) CHECK(std::isfinite(x));
  for (index_t r = 0; r < N; ++r) CHECK(v[r * K + 7] == 0.0f);  // dead weights are zeroed
  CHECK(q::output_error(W, v, N, K, H) <
        q::output_error(W, q::rtn_quantize(W, N, K).dequantize(), N, K, H));
  // an indefinite H without dampening: a value_error naming percdamp
  std::vector<double> bad{1.0, 2.0, 2.0, 1.0};
  q::gptq_options none;
  none.percdamp = 0.0;
  CHECK_THROWS_WITH_AS(q::gptq_factorize(bad, 2, none), doctest::Contains("percdamp"),
                       tfm::value_error);
  CHECK_THROWS_AS(q::gptq_quantize(W, N, K - 1, H, o), tfm::value_error);
  auto nan_w = W;
  nan_w[3 * K + 5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(q::gptq_quantize(nan_w, N, K, f, o), doctest::Contains("[3][5]"),
                       tfm::value_error);
}

TEST_CASE("gptq: GGML block bytes dequantize to the grid; thread-count independent") {
  auto g = tfm_test::rng(19008);
  const index_t N = 37, K = 96, n = 200;
  const auto X = correlated_inputs(g, n, K);
  const auto H = hessian_of(X, n, K);
  const auto W = random_weights(g, N, K);
  for (const auto grid : {q::int4_grid::q4_0, q::int4_grid::q4_1}) {
    q::gptq_options o;
    o.grid = grid;
    o.threads = 1;
    const auto a = q::gptq_quantize(W, N, K, H, o);
    o.threads = 3;
    const auto b = q::gptq_quantize(W, N, K, H, o);
    CHECK(a.codes == b.codes);
    CHECK(a.scale == b.scale);
    CHECK(a.minimum == b.minimum);
    const auto t = grid == q::int4_grid::q4_0 ? tfm::ggml_type::q4_0 : tfm::ggml_type::q4_1;
    const auto bytes = a.to_ggml(t);
    CHECK(bytes.size() ==
          static_cast<std::size_t>(N * (K / 32)) * tfm::ggml_type_info_of(t).block_bytes);
    CHECK(tfm_test::bitwise_diff(tfm::dequantize(t, bytes), a.dequantize()) == "");
    CHECK_THROWS_AS(
        a.to_ggml(grid == q::int4_grid::q4_0 ? tfm::ggml_type::q4_1 : tfm::ggml_type::q4_0),
        tfm::value_error);
  }
}
