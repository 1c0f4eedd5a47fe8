// The K-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and the importance-weighted quantizers
// (every K type, Q4_0, Q4_1, Q5_0, Q5_1) against llama.cpp's ggml_quantize_chunk, with and
// without an importance vector, on the rows of tests/data/quant/kquant_fixtures.bin (random,
// heavy-tailed, sparse, constant, zero, outliers; see gen_kquant_fixtures.py, which calls
// libggml-base.so of llama-cpp-python through ctypes).
// Checked: the RMSE of our bytes (weighted by the importance when there is one) is at most
// 1.001x llama.cpp's on every row, the bytes are identical on most rows (both sides round every
// product; a count is printed and at least 90% of rows must match), dequantize() of our bytes
// reproduces the quantized values (round trip within the format's bound), the importance
// changes the bytes and lowers the weighted error, and bad importance vectors are refused.
#include "tfm_test.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace {

struct entry {
  tfm::ggml_type type;
  bool weighted;
  std::uint32_t row_bytes;
  std::vector<std::byte> bytes;
};

struct fixtures {
  std::uint32_t rows = 0, cols = 0;
  std::vector<float> x, importance;
  std::vector<entry> entries;
};

fixtures load() {
  const std::string path = std::string(TFM_SOURCE_DIR) + "/tests/data/quant/kquant_fixtures.bin";
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(b.size() >= 20);
  REQUIRE(std::memcmp(b.data(), "TFMK", 4) == 0);
  std::uint32_t h[4];
  std::memcpy(h, b.data() + 4, 16);
  REQUIRE(h[0] == 1);
  fixtures r;
  r.rows = h[1];
  r.cols = h[2];
  std::size_t off = 20;
  const std::size_t n = std::size_t{r.rows} * r.cols;
  REQUIRE(b.size() >= off + 4 * (n + r.cols));
  r.x.resize(n);
  std::memcpy(r.x.data(), b.data() + off, 4 * n);
  off += 4 * n;
  r.importance.resize(r.cols);
  std::memcpy(r.importance.data(), b.data() + off, 4 * r.cols);
  off += 4 * std::size_t{r.cols};
  for (std::uint32_t e = 0; e < h[3]; ++e) {
    REQUIRE(b.size() >= off + 12);
    std::uint32_t v[3];
    std::memcpy(v, b.data() + off, 12);
    off += 12;
    const std::size_t nb = std::size_t{v[2]} * r.rows;
    REQUIRE(b.size() >= off + nb);
    entry en{static_cast<tfm::ggml_type>(v[0]), v[1] != 0, v[2], std::vector<std::byte>(nb)};
    std::memcpy(en.bytes.data(), b.data() + off, nb);
    off += nb;
    r.entries.push_back(std::move(en));
  }
  REQUIRE(off == b.size());
  return r;
}

/// sum w (dequantize(q) - x)^2 over one row (w = 1 when empty).
double weighted_sse(tfm::ggml_type t, std::span<const std::byte> q, std::span<const float> x,
                    std::span<const float> w) {
  std::vector<float> y(x.size());
  tfm::dequantize(t, q, y);
  double e = 0;
  for (std::size_t j = 0; j < x.size(); ++j) {
    const double d = double(y[j]) - double(x[j]);
    e += (w.empty() ? 1.0 : double(w[j])) * d * d;
  }
  return e;
}

}  // namespace

TEST_CASE("K-quants and importance quantizers: RMSE within llama.cpp's, bytes mostly equal") {
  const fixtures fx = load();
  REQUIRE(fx.entries.size() == 18);
  for (const entry& e : fx.entries) {
    const std::string tn(tfm::ggml_type_name(e.type));
    CAPTURE(tn);
    CAPTURE(e.weighted);
    const std::span<const float> imp =
        e.weighted ? std::span<const float>(fx.importance) : std::span<const float>();
    const auto ours = tfm::quantize(e.type, fx.x, fx.rows, fx.cols, "fixture", imp);
    REQUIRE(ours.size() == e.bytes.size());
    int equal = 0;
    double sum_ours = 0, sum_ref = 0, worst = 0;
    for (std::uint32_t r = 0; r < fx.rows; ++r) {
      const std::span<const std::byte> qo(ours.data() + std::size_t{r} * e.row_bytes, e.row_bytes);
      const std::span<const std::byte> qr(e.bytes.data() + std::size_t{r} * e.row_bytes,
                                          e.row_bytes);
      const std::span<const float> x(fx.x.data() + std::size_t{r} * fx.cols, fx.cols);
      if (std::memcmp(qo.data(), qr.data(), e.row_bytes) == 0) ++equal;
      const double so = weighted_sse(e.type, qo, x, imp), sr = weighted_sse(e.type, qr, x, imp);
      sum_ours += so;
      sum_ref += sr;
      CAPTURE(r);
      CHECK(so <= sr * 1.001 * 1.001 + 1e-30);  // RMSE ratio <= 1.001 per row
      if (sr > 0) worst = std::max(worst, std::sqrt(so / sr));
    }
    const double ratio = sum_ref > 0 ? std::sqrt(sum_ours / sum_ref) : 1.0;
    MESSAGE(tn << std::string(e.weighted ? " with importance" : "") << ": " << equal << "/"
               << fx.rows << " rows byte-identical to llama.cpp, RMSE ratio ours/llama.cpp "
               << ratio << " (worst row " << worst << ")");
    CHECK(equal == static_cast<int>(fx.rows));
    CHECK(ratio <= 1.001);
  }
}

TEST_CASE("K-quants: dequantize round trip and the importance lowers the weighted error") {
  const std::uint32_t seed = 20261207;
  MESSAGE("seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  const std::size_t rows = 16, cols = 512;
  std::vector<float> x(rows * cols);
  for (float& v : x) v = nd(rng);
  std::vector<float> imp(cols);
  std::gamma_distribution<float> gd(0.5f, 1.0f);
  for (float& v : imp) v = gd(rng);
  // RMSE bounds relative to the rows' RMS (0.05): a loose per-format ceiling.
  struct bound {
    tfm::ggml_type t;
    double rel;
  };
  for (const bound b : {bound{tfm::ggml_type::q2_K, 0.45}, bound{tfm::ggml_type::q3_K, 0.25},
                        bound{tfm::ggml_type::q4_K, 0.12}, bound{tfm::ggml_type::q5_K, 0.06},
                        bound{tfm::ggml_type::q6_K, 0.03}, bound{tfm::ggml_type::q4_0, 0.15},
                        bound{tfm::ggml_type::q4_1, 0.12}, bound{tfm::ggml_type::q5_0, 0.08},
                        bound{tfm::ggml_type::q5_1, 0.06}}) {
    const std::string tn(tfm::ggml_type_name(b.t));
    CAPTURE(tn);
    const auto plain = tfm::quantize(b.t, x, rows, cols, "rt");
    const auto weighted = tfm::quantize(b.t, x, rows, cols, "rt", imp);
    CHECK(plain != weighted);
    std::vector<float> y(x.size());
    tfm::dequantize(b.t, plain, y);
    double se = 0, wse_plain = 0, wse_weighted = 0;
    for (std::size_t i = 0; i < x.size(); ++i) se += double(y[i] - x[i]) * double(y[i] - x[i]);
    const double rmse = std::sqrt(se / double(x.size()));
    CHECK(rmse <= b.rel * 0.05);
    // quantizing the dequantized values again is exact for the K types with a fixed grid; for
    // every type the second pass must not move the values by more than the first pass did.
    const auto again = tfm::quantize(b.t, y, rows, cols, "rt");
    std::vector<float> z(x.size());
    tfm::dequantize(b.t, again, z);
    double se2 = 0;
    for (std::size_t i = 0; i < x.size(); ++i) se2 += double(z[i] - y[i]) * double(z[i] - y[i]);
    CHECK(std::sqrt(se2 / double(x.size())) <= rmse);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t rb = plain.size() / rows;
      const std::span<const float> xr(x.data() + r * cols, cols);
      wse_plain +=
          weighted_sse(b.t, std::span<const std::byte>(plain).subspan(r * rb, rb), xr, imp);
      wse_weighted +=
          weighted_sse(b.t, std::span<const std::byte>(weighted).subspan(r * rb, rb), xr, imp);
    }
    MESSAGE(tn << ": RMSE/RMS " << rmse / 0.05 << ", importance-weighted error with/without "
               << std::sqrt(wse_weighted / wse_plain));
    CHECK(wse_weighted < wse_plain);
  }
}

TEST_CASE("K-quants: importance vectors and inputs refused") {
  std::vector<float> x(256, 0.5f);
  std::vector<float> imp(256, 1.0f);
  std::vector<std::byte> dst(tfm::ggml_type_info_of(tfm::ggml_type::q3_K).block_bytes);
  CHECK_THROWS_AS(tfm::quantize_row(tfm::ggml_type::q3_K, x, dst, "t", 0,
                                    std::span<const float>(imp).first(255)),
                  tfm::shape_error);
  imp[9] = -1.0f;
  CHECK_THROWS_AS(tfm::quantize_row(tfm::ggml_type::q3_K, x, dst, "t", 0, imp), tfm::value_error);
  imp[9] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(tfm::quantize_row(tfm::ggml_type::q3_K, x, dst, "t", 0, imp), tfm::value_error);
  imp[9] = 1.0f;
  x[17] = std::numeric_limits<float>::infinity();
  for (auto t : {tfm::ggml_type::q2_K, tfm::ggml_type::q3_K, tfm::ggml_type::q5_K}) {
    std::vector<std::byte> d(tfm::ggml_type_info_of(t).block_bytes);
    CHECK_THROWS_AS(tfm::quantize_row(t, x, d, "t", 3), tfm::value_error);
    CHECK_THROWS_AS(tfm::quantize_row(t, x, d, "t", 3, imp), tfm::value_error);
  }
  x[17] = 0.5f;
  std::vector<float> odd(288, 0.0f);
  CHECK_THROWS_AS(tfm::quantize(tfm::ggml_type::q5_K, odd, 1, 288, "t"), tfm::shape_error);
  // Q8_0 ignores an importance vector, as llama.cpp's quantize_q8_0 does.
  std::vector<float> y(64);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::sin(float(i));
  std::vector<float> w(64, 2.0f);
  CHECK(tfm::quantize(tfm::ggml_type::q8_0, y, 1, 64, "t") ==
        tfm::quantize(tfm::ggml_type::q8_0, y, 1, 64, "t", w));
}
