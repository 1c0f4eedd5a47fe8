// Calibration (quant/calibrate.hpp) through infer::session's observer, AWQ (quant/awq.hpp) and
// SmoothQuant (quant/smoothquant.hpp) scales and folds, and the calibrated file quantizer
// (quant/calibrated_quantize.hpp) on tiny random llama GGUFs (tests/unit/infer_model's writer).
#include "typeformer/quant/awq.hpp"
#include "../infer_model/tiny_model.hpp"
#include "tfm_test.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/infer/session.hpp"
#include "typeformer/quant/calibrate.hpp"
#include "typeformer/quant/calibrated_quantize.hpp"
#include "typeformer/quant/smoothquant.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace {

using tfm::index_t;
namespace q = tfm::quant;
namespace infer = tfm::infer;

std::string work_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "tfm_quant_methods";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

/// A tiny llama (MHA so that attn_output folds too; sizes multiples of 32) as an F32 GGUF.
std::string tiny_gguf(std::uint64_t seed, std::int64_t G = 4) {
  infer_test::tiny_model sizes;
  sizes.V = 96;
  sizes.C = 64;
  sizes.H = 4;
  sizes.G = G;
  sizes.D = 16;
  sizes.F = 128;
  sizes.L = 2;
  sizes.ctx = 64;
  auto m = infer_test::make_tiny(seed, false, tfm::ggml_type::f32, sizes);
  // make_tiny's scales suit C = 32; halved at C = 64 the model is not chaotic (4-bit rounding
  // then moves the logits by a fraction of their size, which the NMSE bound below checks)
  for (auto& [name, v] : m.w)
    if (m.shape.at(name).first > 1 && name != "token_embd.weight")
      for (float& x : v) x *= 0.5f;
  // outlier input channels, as LLM activations have (a few norm weights much larger)
  for (int l = 0; l < 2; ++l) {
    auto& an = m.w["blk." + std::to_string(l) + ".attn_norm.weight"];
    an[3] *= 12.0f;
    an[40] *= 8.0f;
    auto& fn = m.w["blk." + std::to_string(l) + ".ffn_norm.weight"];
    fn[7] *= 10.0f;
  }
  const std::string path =
      work_path("tiny_" + std::to_string(seed) + "_g" + std::to_string(G) + ".gguf");
  infer_test::write_tiny(m, path);
  return path;
}

std::vector<std::int32_t> random_tokens(std::mt19937& g, std::size_t n, int V) {
  std::uniform_int_distribution<int> d(0, V - 1);
  std::vector<std::int32_t> t(n);
  for (auto& x : t) x = d(g);
  return t;
}

std::vector<float> all_logits(const infer::transformer<float, tfm::cpu>& m,
                              const std::vector<std::int32_t>& ids) {
  infer::session<float, tfm::cpu> s(m, {.context = 64});
  const auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double(a[i]) - b[i]));
  return d;
}

}  // namespace

TEST_CASE(
    "calibrate: statistics equal a direct reduction of the observed rows; thread-count "
    "independent") {
  auto g = tfm_test::rng(19101);
  const auto path = tiny_gguf(tfm_test::seed());
  const auto model = infer::load_gguf(path);
  const auto tokens = random_tokens(g, 150, 96);
  q::calibration_options o;
  o.ctx = 64;
  o.sample_rows = 40;
  q::calibration c1, c2;
  {
    tfm::thread_scope ts(1);
    c1 = q::calibrate(model, tokens, o);
  }
  {
    tfm::thread_scope ts(2);
    c2 = q::calibrate(model, tokens, o);
  }
  CHECK(c1.tokens == 150);
  CHECK(c1.windows == 3);  // 64 + 64 + 22
  for (index_t l = 0; l < 2; ++l)
    for (const char* key : {"attn_in", "attn_out", "ffn_in", "ffn_down"}) {
      CAPTURE(l);
      CAPTURE(key);
      const q::input_stats* a = c1.find(l, key);
      const q::input_stats* b = c2.find(l, key);
      REQUIRE(a != nullptr);
      REQUIRE(b != nullptr);
      CHECK(a->rows == 150);
      CHECK(a->xtx == b->xtx);
      CHECK(a->abs_sum == b->abs_sum);
      CHECK(a->sample == b->sample);
      CHECK(a->sample_count() == 40);
    }
  CHECK(c1.find("blk.1.attn_k.weight") == c1.find(1, "attn_in"));
  CHECK(c1.find("blk.0.ffn_gate.weight") == c1.find(0, "ffn_in"));
  CHECK(c1.find("token_embd.weight") == nullptr);

  // direct reduction: the rows the observer sees at layer 1's ffn_down, in order
  std::vector<float> rows;
  infer::session_options so;
  so.context = 64;
  so.observer = [&](index_t layer, infer::linear_site site, const float* x, index_t n, index_t K) {
    if (layer == 1 && site == infer::linear_site::down) rows.insert(rows.end(), x, x + n * K);
  };
  infer::session<float, tfm::cpu> s(model, std::move(so));
  for (std::size_t i = 0; i < tokens.size(); i += 64) {
    s.reset();
    const std::size_t len = std::min<std::size_t>(64, tokens.size() - i);
    s.prefill(std::span<const std::int32_t>(tokens.data() + i, len));
  }
  const q::input_stats& st = *c1.find(1, "ffn_down");
  const index_t K = st.K, n = static_cast<index_t>(rows.size()) / K;
  REQUIRE(n == 150);
  double worst = 0;
  for (index_t i = 0; i < K; ++i)
    for (index_t j = 0; j < K; ++j) {
      double ref = 0, mag = 0;
      for (index_t r = 0; r < n; ++r) {
        ref += double(rows[r * K + i]) * rows[r * K + j];
        mag += std::fabs(double(rows[r * K + i]) * rows[r * K + j]);
      }
      worst = std::max(worst, std::fabs(st.xtx[i * K + j] - ref) / std::max(mag, 1e-30));
    }
  CHECK(worst < 1e-13);
  for (index_t j = 0; j < K; ++j) {
    double s_abs = 0;
    float m = 0;
    for (index_t r = 0; r < n; ++r) {
      s_abs += std::fabs(double(rows[r * K + j]));
      m = std::max(m, std::fabs(rows[r * K + j]));
    }
    CHECK(st.abs_sum[j] == doctest::Approx(s_abs).epsilon(1e-12));
    CHECK(st.abs_max[j] == m);
  }
  const auto H = st.hessian();
  CHECK(H[5 * K + 9] == doctest::Approx(2.0 * st.xtx[5 * K + 9] / 150.0).epsilon(1e-15));
}

TEST_CASE("awq: the scale search beats round to nearest on layers with outlier channels") {
  auto g = tfm_test::rng(19102);
  const index_t N = 96, K = 128, n = 512;
  std::normal_distribution<float> nd;
  auto make_x = [&](index_t rows) {
    std::vector<float> x(static_cast<std::size_t>(rows * K));
    for (index_t r = 0; r < rows; ++r)
      for (index_t j = 0; j < K; ++j)
        x[r * K + j] = nd(g) * (j % 17 == 3 ? 20.0f : 1.0f);  // 8 outlier channels
    return x;
  };
  const auto X = make_x(n), X_test = make_x(n);
  std::vector<float> W(static_cast<std::size_t>(N * K));
  for (auto& v : W) v = 0.05f * nd(g);
  for (const auto grid : {q::int4_grid::q4_0, q::int4_grid::q4_1}) {
    q::input_stats st;
    st.K = K;
    q::calibration_options co;
    co.hessian = false;
    co.sample_rows = n;
    std::mt19937_64 r(1);
    std::vector<double> buf;
    q::accumulate(st, X.data(), n, K, co, r, buf);
    q::awq_options ao;
    ao.grid = grid;
    const q::weight_ref ref{W.data(), N};
    const auto res = q::awq_search(std::span(&ref, 1), st, ao);
    MESSAGE("grid " << int(grid) << ": alpha " << res.alpha << ", AWQ / RTN (calibration rows) "
                    << res.error / res.error_rtn);
    CHECK(res.alpha > 0.0);
    CHECK(res.error < 0.8 * res.error_rtn);
    // held-out rows from the same distribution
    const std::vector<float> ones(static_cast<std::size_t>(K), 1.0f);
    const double e_awq =
        q::awq_output_error(std::span(&ref, 1), K, X_test.data(), n, res.scales, ao);
    const double e_rtn = q::awq_output_error(std::span(&ref, 1), K, X_test.data(), n, ones, ao);
    MESSAGE("held out: AWQ / RTN " << e_awq / e_rtn);
    CHECK(e_awq < 0.8 * e_rtn);
  }
}

TEST_CASE("awq / smoothquant: the folded model computes the same logits in f32") {
  auto g = tfm_test::rng(19103);
  for (const std::int64_t G : {4, 2}) {
    CAPTURE(G);
    const auto path = tiny_gguf(tfm_test::seed() + 7, G);
    const auto tokens = random_tokens(g, 256, 96);
    q::calibrated_quantize_options o;
    o.method = q::quant_method::awq;
    o.calib.ctx = 64;
    const std::string out = work_path("folded.gguf");
    const auto rep =
        q::quantize_gguf_calibrated(tfm::io::gguf_file(path), out, tfm::ggml_type::f32, tokens, o);
    CHECK(rep.folds == (G == 4 ? 8 : 6));  // attn_out folds only without GQA
    const auto a = infer::load_gguf(path);
    const auto b = infer::load_gguf(out);
    // the weights did change
    const auto& wa = a.block(0).wq;
    const auto& wb = b.block(0).wq;
    std::vector<float> ra(static_cast<std::size_t>(wa.cols())), rb(ra.size());
    wa.row(0, ra.data());
    wb.row(0, rb.data());
    CHECK(max_abs_diff(ra, rb) > 1e-3);
    const auto probe = random_tokens(g, 40, 96);
    const auto la = all_logits(a, probe), lb = all_logits(b, probe);
    const double d = max_abs_diff(la, lb);
    double lmax = 0;
    for (float v : la) lmax = std::max(lmax, double(std::fabs(v)));
    MESSAGE("G " << G << ": max |logit difference| after the AWQ folds " << d << " (max |logit| "
                 << lmax << ")");
    CHECK(d < 1e-4);

    // SmoothQuant's scales through the same folds
    q::calibration_options co;
    co.ctx = 64;
    co.hessian = false;
    const auto cal = q::calibrate(a, tokens, co);
    tfm::io::gguf_file f(path);
    q::float_weights fw;
    for (const auto& t : f.tensors())
      fw[std::string(t.name)] = tfm::quant::detail::cq::read_float(f, t);
    const q::fold_geometry geo{4, G, 16, true};
    for (index_t l = 0; l < 2; ++l)
      for (const char* key : {"attn_in", "attn_out", "ffn_in", "ffn_down"}) {
        const auto refs = q::consumer_refs(fw, l, key);
        const auto s = q::smoothquant_scales(refs, *cal.find(l, key), 0.5);
        q::fold_input_scales(fw, geo, l, key, s);
      }
    // independent check of one scale: s_j = max|X_j|^0.5 / max|W_j|^0.5
    {
      const auto& st = *cal.find(0, "ffn_in");
      const auto& gate = infer_test::tiny_model{};  // unused sizes holder
      (void)gate;
      const auto orig_refs = [&] {
        tfm::io::gguf_file f2(path);
        q::float_weights w2;
        for (const auto& t : f2.tensors())
          w2[std::string(t.name)] = tfm::quant::detail::cq::read_float(f2, t);
        return w2;
      }();
      const auto& wg = orig_refs.at("blk.0.ffn_gate.weight");
      const auto& wu = orig_refs.at("blk.0.ffn_up.weight");
      double wm = 0;
      for (index_t r = 0; r < wg.rows; ++r)
        wm = std::max(
            {wm, double(std::fabs(wg.v[r * 64 + 7])), double(std::fabs(wu.v[r * 64 + 7]))});
      const std::vector<q::weight_ref> refs{{wg.v.data(), wg.rows}, {wu.v.data(), wu.rows}};
      const auto s = q::smoothquant_scales(refs, st, 0.5);
      CHECK(s[7] ==
            doctest::Approx(std::sqrt(double(st.abs_max[7])) / std::sqrt(wm)).epsilon(1e-6));
    }
    tfm::io::gguf_writer w(work_path("smooth.gguf"));
    for (const auto& kv : f.metadata()) w.add(kv.key, kv.value);
    for (const auto& t : f.tensors()) {
      const auto& m = fw.at(std::string(t.name));
      w.add_tensor(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims),
                   tfm::ggml_type::f32, std::as_bytes(std::span(m.v)));
    }
    w.finish();
    const auto c = infer::load_gguf(work_path("smooth.gguf"));
    const double d2 = max_abs_diff(la, all_logits(c, probe));
    MESSAGE("G " << G << ": max |logit difference| after the SmoothQuant folds " << d2);
    CHECK(d2 < 1e-4);
  }
}

TEST_CASE("smoothquant: W8A8 error below plain W8A8 on a layer with outlier activations") {
  auto g = tfm_test::rng(19104);
  const index_t N = 64, K = 128, n = 256;
  std::normal_distribution<float> nd;
  std::vector<float> X(static_cast<std::size_t>(n * K)), W(static_cast<std::size_t>(N * K));
  for (index_t r = 0; r < n; ++r)
    for (index_t j = 0; j < K; ++j) X[r * K + j] = nd(g) * (j % 31 == 5 ? 60.0f : 1.0f);
  for (auto& v : W) v = 0.05f * nd(g);
  q::input_stats st;
  st.K = K;
  q::calibration_options co;
  co.hessian = false;
  co.sample_rows = 0;
  std::mt19937_64 r(1);
  std::vector<double> buf;
  q::accumulate(st, X.data(), n, K, co, r, buf);
  const q::weight_ref ref{W.data(), N};
  auto w8a8_error = [&](const std::vector<float>& s) {
    std::vector<float> xs(X), ws(W);
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < K; ++j) xs[i * K + j] /= s[j];
    for (index_t i = 0; i < N; ++i)
      for (index_t j = 0; j < K; ++j) ws[i * K + j] *= s[j];
    q::fake_quant_int8_rows(xs.data(), n, K);
    q::fake_quant_int8_weight(ws, N, K);
    double e = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t o = 0; o < N; ++o) {
        double y = 0, yq = 0;
        for (index_t j = 0; j < K; ++j) {
          y += double(X[i * K + j]) * W[o * K + j];
          yq += double(xs[i * K + j]) * ws[o * K + j];
        }
        e += (y - yq) * (y - yq);
      }
    return e;
  };
  const auto s = q::smoothquant_scales(std::span(&ref, 1), st, 0.5);
  const double e_smooth = w8a8_error(s), e_plain = w8a8_error(std::vector<float>(K, 1.0f));
  MESSAGE("W8A8 output error, smoothed / plain: " << e_smooth / e_plain);
  CHECK(e_smooth < 0.5 * e_plain);
}

TEST_CASE(
    "quantize_gguf_calibrated: Q4_0 / Q4_1 files by every method load and run; GPTQ's and "
    "AWQ's calibration-weighted error below RTN's") {
  auto g = tfm_test::rng(19105);
  const auto path = tiny_gguf(tfm_test::seed() + 11);
  const auto tokens = random_tokens(g, 512, 96);
  const auto ref = infer::load_gguf(path);
  const auto probe = random_tokens(g, 48, 96);
  const auto l_ref = all_logits(ref, probe);
  for (const auto type : {tfm::ggml_type::q4_0, tfm::ggml_type::q4_1}) {
    for (const auto method : {q::quant_method::rtn, q::quant_method::gptq, q::quant_method::awq,
                              q::quant_method::awq_gptq}) {
      CAPTURE(tfm::ggml_type_name(type));
      CAPTURE(q::quant_method_name(method));
      q::calibrated_quantize_options o;
      o.method = method;
      o.calib.ctx = 64;
      o.measure_error = true;
      o.threads = 2;
      const std::string out = work_path("q.gguf");
      const auto rep = q::quantize_gguf_calibrated(tfm::io::gguf_file(path), out, type, tokens, o);
      double e = 0, e_rtn = 0;
      int n_method = 0;
      for (const auto& t : rep.tensors)
        if (t.out_error >= 0) {
          e += t.out_error;
          e_rtn += t.out_error_rtn;
          ++n_method;
          CHECK(t.out == type);
        }
      CHECK(n_method == 14);
      MESSAGE(tfm::ggml_type_name(type) << " " << q::quant_method_name(method)
                                        << ": sum tr(dW H dW^T) / RTN's " << e / e_rtn);
      if (method == q::quant_method::rtn) CHECK(e == doctest::Approx(e_rtn).epsilon(1e-12));
      if (method == q::quant_method::gptq || method == q::quant_method::awq_gptq)
        CHECK(e < 0.8 * e_rtn);
      const tfm::io::gguf_file f(out);
      CHECK(f.get_or<std::uint32_t>("general.file_type", 0) ==
            (type == tfm::ggml_type::q4_0 ? 2u : 3u));
      const auto m = infer::load_gguf(out);
      const auto l = all_logits(m, probe);
      for (float v : l) REQUIRE(std::isfinite(v));
      double num = 0, den = 0;
      for (std::size_t i = 0; i < l.size(); ++i) {
        num += (double(l[i]) - l_ref[i]) * (double(l[i]) - l_ref[i]);
        den += double(l_ref[i]) * l_ref[i];
      }
      MESSAGE("  logits NMSE against the f32 model " << num / den);
      CHECK(num / den < 0.3);  // a 4-bit tiny random model: a sanity bound
    }
  }
  // H3's INT4 group layouts: GPTQ and AWQ with groups of 64 (C = 64, F = 128: every linear)
  for (const auto method : {q::quant_method::gptq, q::quant_method::awq}) {
    CAPTURE(q::quant_method_name(method));
    q::calibrated_quantize_options o;
    o.method = method;
    o.calib.ctx = 64;
    o.measure_error = true;
    const std::string out = work_path("i4.gguf");
    const auto rep = q::quantize_gguf_calibrated(tfm::io::gguf_file(path), out,
                                                 tfm::ggml_type::tfm_i4_g64, tokens, o);
    double e = 0, e_rtn = 0;
    int n_method = 0;
    for (const auto& t : rep.tensors)
      if (t.out_error >= 0) {
        CHECK(t.out == tfm::ggml_type::tfm_i4_g64);
        e += t.out_error;
        e_rtn += t.out_error_rtn;
        ++n_method;
      }
    CHECK(n_method == 14);
    MESSAGE("TFM_I4_G64 " << q::quant_method_name(method) << ": sum tr(dW H dW^T) / RTN's "
                          << e / e_rtn);
    if (method == q::quant_method::gptq) CHECK(e < 0.8 * e_rtn);
    const auto m = infer::load_gguf(out, {.quantized = infer::quantized_weights::f32});
    for (float v : all_logits(m, probe)) REQUIRE(std::isfinite(v));
  }
  CHECK_THROWS_AS(q::quantize_gguf_calibrated(tfm::io::gguf_file(path), work_path("x.gguf"),
                                              tfm::ggml_type::q8_0, tokens, {}),
                  tfm::value_error);
  CHECK(q::parse_quant_method("awq+gptq") == q::quant_method::awq_gptq);
  CHECK(!q::parse_quant_method("spqr").has_value());
}
