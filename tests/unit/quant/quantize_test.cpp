// The reference quantizers against gguf.quants.quantize (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) and
// llama.cpp's quantize_row_q8_1_ref / quantize_row_q8_K_ref (Q8_1, Q8_K): byte for byte on the
// rows of tests/data/quant/quant_fixtures.bin (random, zeros, outliers, FLT_MAX, subnormals; see
// gen_quant_fixtures.py). Then round trips through the reference dequantizers (error bounds per
// format and TESTING.md's 0.1 + 2cos(i) RMSE) and the refusal of NaN/Inf and bad shapes.
#include "typeformer/quant/quantize.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/quant/gemv_q.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace {

struct fixtures {
  std::uint32_t rows = 0, cols = 0;
  std::vector<float> x;
  std::map<std::uint32_t, std::vector<std::byte>> out;  // ggml type code -> rows * row bytes
};

fixtures load() {
  const std::string path = std::string(TFM_SOURCE_DIR) + "/tests/data/quant/quant_fixtures.bin";
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(b.size() >= 20);
  REQUIRE(std::memcmp(b.data(), "TFMQ", 4) == 0);
  std::uint32_t h[4];
  std::memcpy(h, b.data() + 4, 16);
  REQUIRE(h[0] == 1);
  fixtures r;
  r.rows = h[1];
  r.cols = h[2];
  std::size_t off = 20;
  const std::size_t n = std::size_t{r.rows} * r.cols;
  REQUIRE(b.size() >= off + 4 * n);
  r.x.resize(n);
  std::memcpy(r.x.data(), b.data() + off, 4 * n);
  off += 4 * n;
  for (std::uint32_t t = 0; t < h[3]; ++t) {
    REQUIRE(b.size() >= off + 8);
    std::uint32_t code, row_bytes;
    std::memcpy(&code, b.data() + off, 4);
    std::memcpy(&row_bytes, b.data() + off + 4, 4);
    off += 8;
    const std::size_t nb = std::size_t{row_bytes} * r.rows;
    REQUIRE(b.size() >= off + nb);
    std::vector<std::byte> v(nb);
    std::memcpy(v.data(), b.data() + off, nb);
    r.out[code] = std::move(v);
    off += nb;
  }
  REQUIRE(off == b.size());
  return r;
}

void check_bytes(const fixtures& fx, tfm::ggml_type t) {
  const auto it = fx.out.find(static_cast<std::uint32_t>(t));
  if (it == fx.out.end()) {
    MESSAGE("no reference bytes for " << tfm::ggml_type_name(t) << " in the fixtures (skipped)");
    return;
  }
  const auto& info = tfm::ggml_type_info_of(t);
  const std::size_t row_bytes = fx.cols / info.block_elements * info.block_bytes;
  REQUIRE(it->second.size() == row_bytes * fx.rows);
  std::size_t bad_rows = 0;
  for (std::uint32_t r = 0; r < fx.rows; ++r) {
    std::vector<std::byte> got(row_bytes);
    tfm::quantize_row(t, std::span<const float>(fx.x).subspan(std::size_t{r} * fx.cols, fx.cols),
                      got, "fixture", r);
    const std::byte* want = it->second.data() + r * row_bytes;
    for (std::size_t i = 0; i < row_bytes; ++i)
      if (got[i] != want[i]) {
        if (++bad_rows <= 6)
          MESSAGE(info.name << " row " << r << ": first difference at byte " << i << " (block "
                            << i / info.block_bytes << ", offset " << i % info.block_bytes
                            << "): got " << int(got[i]) << " want " << int(want[i]));
        break;
      }
  }
  CHECK_MESSAGE(bad_rows == 0, info.name << ": " << bad_rows << " of " << fx.rows
                                         << " rows differ from the reference");
}

std::vector<float> roundtrip(tfm::ggml_type t, const std::vector<float>& x) {
  const auto q = tfm::quantize(t, x, 1, x.size(), "roundtrip");
  return tfm::dequantize(t, q);
}

}  // namespace

TEST_CASE("quantize: bytes equal gguf.quants.quantize and llama.cpp's reference") {
  const fixtures fx = load();
  MESSAGE(fx.rows << " rows of " << fx.cols << " values");
  for (auto t :
       {tfm::ggml_type::q8_0, tfm::ggml_type::q4_0, tfm::ggml_type::q4_1, tfm::ggml_type::q5_0,
        tfm::ggml_type::q5_1, tfm::ggml_type::q8_1, tfm::ggml_type::q8_K}) {
    CAPTURE(tfm::ggml_type_name(t));
    check_bytes(fx, t);
  }
}

TEST_CASE("quantize_activations: llama.cpp's Q8_1 quants, scales and sums on the fixture rows") {
  // The kernels' activation quantizer (SIMD where the target has AVX-512) against the bytes of
  // quantize_row_q8_1_ref; rows whose scale overflows f16 or whose 1/d overflows included.
  const fixtures fx = load();
  const auto it = fx.out.find(static_cast<std::uint32_t>(tfm::ggml_type::q8_1));
  if (it == fx.out.end()) {
    MESSAGE("no llama.cpp Q8_1 bytes in the fixtures (skipped)");
    return;
  }
  tfm::cpu_kernels::q8_activations a;
  tfm::cpu_kernels::quantize_activations(fx.rows, fx.cols, fx.x.data(), fx.cols, a);
  const std::size_t nb = fx.cols / 32;
  std::size_t bad = 0;
  for (std::size_t r = 0; r < fx.rows; ++r)
    for (std::size_t b = 0; b < nb; ++b) {
      tfm::block_q8_1 ref;
      std::memcpy(&ref, it->second.data() + (r * nb + b) * sizeof ref, sizeof ref);
      const auto row = a.row(static_cast<tfm::index_t>(r));
      int sum = 0;
      bool same = std::memcmp(row.qs + 32 * b, ref.qs, 32) == 0;
      for (int j = 0; j < 32; ++j) sum += ref.qs[j];
      const float rd = static_cast<float>(ref.d), rs = static_cast<float>(ref.s);
      same = same && row.sum[b] == sum && std::memcmp(&row.d[b], &rd, 4) == 0 &&
             std::memcmp(&row.s[b], &rs, 4) == 0;
      if (!same && ++bad <= 5) MESSAGE("row " << r << " block " << b << " differs");
    }
  CHECK(bad == 0);
}

TEST_CASE("quantize: Q4_K and Q6_K RMSE within llama.cpp's on the fixture rows") {
  // llama.cpp's quantize_row_q4_K_ref / q6_K_ref bytes are in the fixtures; both sides are
  // dequantized by tfm::dequantize (bitwise gguf-py) and compared with the input row.
  const fixtures fx = load();
  for (auto t : {tfm::ggml_type::q4_K, tfm::ggml_type::q6_K}) {
    const auto it = fx.out.find(static_cast<std::uint32_t>(t));
    if (it == fx.out.end()) {
      MESSAGE("no llama.cpp bytes for " << tfm::ggml_type_name(t) << " (skipped)");
      continue;
    }
    const auto& info = tfm::ggml_type_info_of(t);
    const std::size_t row_bytes = fx.cols / info.block_elements * info.block_bytes;
    std::size_t same_bytes = 0, compared = 0;
    double sum_ours = 0, sum_ref = 0;
    for (std::uint32_t r = 0; r < fx.rows; ++r) {
      const auto x = std::span<const float>(fx.x).subspan(std::size_t{r} * fx.cols, fx.cols);
      std::vector<std::byte> ours(row_bytes);
      tfm::quantize_row(t, x, ours, "fixture", r);
      const std::span<const std::byte> ref(it->second.data() + r * row_bytes, row_bytes);
      same_bytes += std::memcmp(ours.data(), ref.data(), row_bytes) == 0;
      const auto yo = tfm::dequantize(t, ours);
      const auto yr = tfm::dequantize(t, ref);
      double eo = 0, er = 0, xx = 0;
      for (std::size_t j = 0; j < x.size(); ++j) {
        eo += (double(yo[j]) - x[j]) * (double(yo[j]) - x[j]);
        er += (double(yr[j]) - x[j]) * (double(yr[j]) - x[j]);
        xx += double(x[j]) * x[j];
      }
      if (!std::isfinite(er) || !std::isfinite(xx) || xx == 0) continue;  // FLT_MAX rows etc.
      ++compared;
      CAPTURE(r);
      REQUIRE(std::isfinite(eo));
      CHECK(eo <= er * (1 + 1e-6) + 1e-30 * xx);
      sum_ours += eo / xx;
      sum_ref += er / xx;
    }
    MESSAGE(info.name << ": " << same_bytes << " of " << fx.rows << " rows byte-identical to "
                      << "llama.cpp; mean relative squared error over " << compared
                      << " rows: ours " << sum_ours / compared << ", llama.cpp "
                      << sum_ref / compared);
  }
}

TEST_CASE("quantize: round-trip error bounds on random rows") {
  auto g = tfm_test::rng(19);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Scales whose f16 block scales stay normal (>= 2^-14): the bounds below are relative.
  std::uniform_real_distribution<float> sd(-2.0f, 3.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const float scale = std::pow(10.0f, sd(g));
    std::vector<float> x(256);
    for (float& v : x) v = nd(g) * scale;
    CAPTURE(trial);
    CAPTURE(scale);
    const auto y80 = roundtrip(tfm::ggml_type::q8_0, x);
    const auto y40 = roundtrip(tfm::ggml_type::q4_0, x);
    const auto y41 = roundtrip(tfm::ggml_type::q4_1, x);
    const auto y50 = roundtrip(tfm::ggml_type::q5_0, x);
    const auto y51 = roundtrip(tfm::ggml_type::q5_1, x);
    const auto y8k = roundtrip(tfm::ggml_type::q8_K, x);
    for (std::size_t b = 0; b < 8; ++b) {
      float amax = 0, mn = x[32 * b], mx = x[32 * b];
      for (std::size_t j = 0; j < 32; ++j) {
        amax = std::max(amax, std::fabs(x[32 * b + j]));
        mn = std::min(mn, x[32 * b + j]);
        mx = std::max(mx, x[32 * b + j]);
      }
      // Error bounds: half a step of the (f16-rounded) scale, plus the f16 rounding of the scale
      // itself (2^-11 relative) times the largest quant, plus float rounding.
      const double tol8 = amax / 127.0 * (0.5 + 127 * 0x1p-11) + amax * 1e-6;
      const double tol4 = amax / 8.0 * (1.0 + 8 * 0x1p-11) + amax * 1e-6;  // the max's side
      const double tol5 = amax / 16.0 * (1.0 + 16 * 0x1p-11) + amax * 1e-6;
      const double tol41 = (mx - mn) / 15.0 * (0.5 + 15 * 0x1p-11) + amax * 2e-3;
      const double tol51 = (mx - mn) / 31.0 * (0.5 + 31 * 0x1p-11) + amax * 2e-3;
      for (std::size_t j = 32 * b; j < 32 * b + 32; ++j) {
        REQUIRE(std::fabs(y80[j] - x[j]) <= tol8);
        REQUIRE(std::fabs(y40[j] - x[j]) <= tol4);
        REQUIRE(std::fabs(y50[j] - x[j]) <= tol5);
        REQUIRE(std::fabs(y41[j] - x[j]) <= tol41);
        REQUIRE(std::fabs(y51[j] - x[j]) <= tol51);
      }
    }
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    for (std::size_t j = 0; j < 256; ++j)
      REQUIRE(std::fabs(y8k[j] - x[j]) <= amax / 127.0 * 0.5 * (1 + 1e-5) + amax * 1e-6);
  }
}

TEST_CASE("quantize: TESTING.md round trip on 0.1 + 2cos(i), n = 4096") {
  std::vector<float> x(4096);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.1f + 2.0f * std::cos(static_cast<float>(i));
  for (auto t :
       {tfm::ggml_type::q8_0, tfm::ggml_type::q4_0, tfm::ggml_type::q4_1, tfm::ggml_type::q5_0,
        tfm::ggml_type::q5_1, tfm::ggml_type::q8_K, tfm::ggml_type::q4_K, tfm::ggml_type::q6_K}) {
    const auto y = roundtrip(t, x);
    double ss = 0;
    for (std::size_t i = 0; i < x.size(); ++i) ss += double(y[i] - x[i]) * (y[i] - x[i]);
    const double err = std::sqrt(ss) / static_cast<double>(x.size());  // llama.cpp's metric
    MESSAGE(tfm::ggml_type_name(t) << ": sqrt(sum d^2)/n = " << err);
    CHECK(err <= 0.002);
  }
}

TEST_CASE("quantize: NaN/Inf refused naming tensor, row and column; shapes checked") {
  std::vector<float> x(64, 1.0f);
  x[33] = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::byte> out(2 * sizeof(tfm::block_q8_0));
  try {
    tfm::quantize_row(tfm::ggml_type::q8_0, x, out, "blk.3.ffn_up.weight", 17);
    FAIL("NaN accepted");
  } catch (const tfm::value_error& e) {
    const std::string m = e.what();
    CHECK(m.find("blk.3.ffn_up.weight") != std::string::npos);
    CHECK(m.find("row 17") != std::string::npos);
    CHECK(m.find("column 33") != std::string::npos);
    CHECK(m.find("NaN") != std::string::npos);
  }
  std::vector<float> t(2 * 64, 0.5f);
  t[64 + 5] = -std::numeric_limits<float>::infinity();
  try {
    (void)tfm::quantize(tfm::ggml_type::q4_1, t, 2, 64, "tok_embd");
    FAIL("Inf accepted");
  } catch (const tfm::value_error& e) {
    const std::string m = e.what();
    CHECK(m.find("tok_embd") != std::string::npos);
    CHECK(m.find("row 1 column 5") != std::string::npos);
    CHECK(m.find("Inf") != std::string::npos);
  }
  std::vector<float> odd(48, 1.0f);
  CHECK_THROWS_AS((void)tfm::quantize(tfm::ggml_type::q4_0, odd, 1, 48, "w"), tfm::shape_error);
  CHECK_THROWS_AS((void)tfm::quantize(tfm::ggml_type::q8_K, x, 1, 64, "w"), tfm::shape_error);
  CHECK_THROWS_AS((void)tfm::quantize(tfm::ggml_type::iq2_xxs, x, 1, 64, "w"),
                  tfm::unsupported_error);
  CHECK_THROWS_AS(
      tfm::quantize_row(tfm::ggml_type::q8_0, std::span<const float>(x).first(32), out, "w", 0),
      tfm::value_error);
  CHECK(tfm::quantize(tfm::ggml_type::q5_0, {}, 0, 64, "empty").empty());
}
