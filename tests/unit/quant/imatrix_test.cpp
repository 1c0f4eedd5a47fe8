// Importance matrices (quant/imatrix.hpp) and `tfm quantize --imatrix`'s library part:
//   - collection through infer::session's observer on a tiny random llama GGUF
//     (tests/unit/infer_model/tiny_model.hpp) against sums of squares of the same inputs
//     recorded by an independent observer and summed in long double, and (when python3 with
//     numpy and gguf is installed; skipped otherwise) our file read by gguf-py
//     (check_imatrix.py) and its in_sum2 compared with numpy's sum of squares of the dumped
//     inputs;
//   - GGUF write/read round trip, the legacy .dat form, importance() as llama-quantize computes
//     it (in_sum2 / count; legacy sums / ncall), malformed files refused;
//   - quantize_gguf with an imatrix: the K-quant tensors' bytes change and their
//     importance-weighted error goes down; a size mismatch is refused.
#define TFM_INFER_WORK_DIR TFM_IMATRIX_WORK_DIR
#include "typeformer/quant/imatrix.hpp"
#include "../infer_model/tiny_model.hpp"
#include "tfm_test.hpp"
#include "typeformer/infer/model.hpp"
#include "typeformer/quant/file_quantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/wait.h>
#endif

namespace {

/// The exit status of std::system's child (77: check_imatrix.py's "skipped").
int exit_code(int rc) {
#ifdef WIFEXITED
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
#else
  return rc;
#endif
}

/// C = 256 and F = 256 so that every matrix has rows of whole 256-blocks (the K-quants).
infer_test::tiny_model big_tiny(std::uint64_t seed) {
  infer_test::tiny_model sizes;
  sizes.V = 64;
  sizes.C = 256;
  sizes.H = 4;
  sizes.G = 2;
  sizes.D = 64;
  sizes.F = 256;
  sizes.L = 2;
  sizes.ctx = 64;
  return infer_test::make_tiny(seed, false, tfm::ggml_type::f32, sizes);
}

std::string write_big_tiny(std::uint64_t seed) {
  const std::string path = infer_test::work_dir() + "/imatrix_tiny.gguf";
  infer_test::write_tiny(big_tiny(seed), path);
  return path;
}

std::vector<std::int32_t> random_ids(std::uint64_t seed, std::size_t n, int V) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(0, V - 1);
  std::vector<std::int32_t> ids(n);
  for (auto& t : ids) t = d(rng);
  return ids;
}

void write_bytes(const std::string& path, const std::vector<char>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

template <class T>
void put(std::vector<char>& b, T v) {
  const char* p = reinterpret_cast<const char*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}

}  // namespace

TEST_CASE("imatrix: collection equals the sums of squares of the observed inputs") {
  const std::uint64_t seed = 1907;
  MESSAGE("seed " << seed);
  const std::string path = write_big_tiny(seed);
  const auto model = tfm::load_model(path);
  const tfm::index_t ctx = 32, chunks = 3;
  const auto ids = random_ids(seed + 1, static_cast<std::size_t>(ctx * chunks + 7), 64);
  const std::int32_t bos = 1;

  tfm::imatrix_collector col;
  const auto n = tfm::collect_imatrix(model, ids, ctx, bos, 0, col);
  CHECK(n == chunks);
  const auto d =
      col.result(static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(ctx), {"random ids"});

  // the same windows through an independent recorder
  std::map<std::string, std::vector<long double>> ref;
  std::map<std::string, std::int64_t> rows;
  std::vector<float> dump;  // blk.0.attn_q's inputs, for numpy
  tfm::index_t dump_rows = 0;
  tfm::infer::session<float, tfm::cpu> s(
      model, {.context = ctx,
              .batch = ctx,
              .observer = [&](tfm::index_t layer, tfm::infer::linear_site site, const float* x,
                              tfm::index_t nr, tfm::index_t K) {
                if (layer < 0) return;
                const std::string name = "blk." + std::to_string(layer) + "." +
                                         std::string(tfm::infer::linear_site_name(site)) +
                                         ".weight";
                auto& v = ref[name];
                v.resize(static_cast<std::size_t>(K), 0.0L);
                for (tfm::index_t r = 0; r < nr; ++r)
                  for (tfm::index_t j = 0; j < K; ++j)
                    v[static_cast<std::size_t>(j)] +=
                        static_cast<long double>(x[r * K + j]) * x[r * K + j];
                rows[name] += nr;
                if (name == "blk.0.attn_q.weight") {
                  dump.insert(dump.end(), x, x + nr * K);
                  dump_rows += nr;
                }
              }});
  for (tfm::index_t i = 0; i < chunks; ++i) {
    std::vector<std::int32_t> w(ids.begin() + i * ctx, ids.begin() + (i + 1) * ctx);
    w[0] = bos;
    s.reset();
    (void)s.prefill(w);
  }
  REQUIRE(d.entries.size() == 14);  // 7 products x 2 layers, no output head
  REQUIRE(ref.size() == 14);
  for (const auto& [name_, v] : ref) {
    const std::string& name = name_;  // clang 14 cannot capture a structured binding (CAPTURE)
    CAPTURE(name);
    REQUIRE(d.entries.count(name) == 1);
    const auto& e = d.entries.find(name)->second;
    REQUIRE(e.counts.size() == 1);
    CHECK(e.counts[0] == rows[name]);
    CHECK(e.counts[0] == chunks * ctx);
    REQUIRE(e.sums.size() == v.size());
    for (std::size_t j = 0; j < v.size(); ++j)
      CHECK(std::fabs(double(e.sums[j]) - double(v[j])) <= 1e-6 * double(v[j]) + 1e-30);
  }
  // q, k and v share their input
  CHECK(d.entries.find("blk.1.attn_q.weight")->second.sums ==
        d.entries.find("blk.1.attn_v.weight")->second.sums);

  // the file, read back here and by gguf-py (numpy sums of the dumped inputs)
  const std::string file = infer_test::work_dir() + "/imatrix_tiny.imatrix.gguf";
  tfm::write_imatrix(d, file);
  const auto back = tfm::read_imatrix(file);
  CHECK_FALSE(back.legacy);
  CHECK(back.chunk_count == 3);
  CHECK(back.chunk_size == 32);
  REQUIRE(back.datasets.size() == 1);
  CHECK(back.datasets[0] == "random ids");
  REQUIRE(back.entries.size() == d.entries.size());
  for (const auto& [name, e] : d.entries) {
    CHECK(back.entries.find(name)->second.sums == e.sums);
    CHECK(back.entries.find(name)->second.counts == e.counts);
    const auto w = back.importance(name);
    REQUIRE(w.size() == e.sums.size());
    for (std::size_t j = 0; j < w.size(); ++j)
      CHECK(w[j] == e.sums[j] / static_cast<float>(e.counts[0]));
  }
  const std::string dump_path = infer_test::work_dir() + "/imatrix_tiny.attn_q_inputs.f32";
  {
    std::ofstream f(dump_path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(dump.data()),
            static_cast<std::streamsize>(dump.size() * sizeof(float)));
  }
  const std::string cmd = "python3 \"" + std::string(TFM_SOURCE_DIR) +
                          "/tests/unit/quant/check_imatrix.py\" \"" + file + "\" \"" + dump_path +
                          "\" " + std::to_string(dump_rows);
  const int rc = std::system(cmd.c_str());
  if (const int code = exit_code(rc); code == 77 || code == 127) {  // 127: no python3
    MESSAGE("skipped: gguf-py check (python3, numpy or gguf not installed)");
  } else {
    CHECK_MESSAGE(rc == 0, "check_imatrix.py failed: " << cmd);
  }
}

TEST_CASE("imatrix: legacy .dat form and malformed files") {
  const std::string dir = infer_test::work_dir();
  // legacy: 2 entries, then chunk count and dataset
  std::vector<char> b;
  put<std::int32_t>(b, 2);
  const std::string n1 = "blk.0.ffn_up.weight", n2 = "blk.0.attn_q.weight";
  put<std::int32_t>(b, static_cast<std::int32_t>(n1.size()));
  b.insert(b.end(), n1.begin(), n1.end());
  put<std::int32_t>(b, 4);  // ncall
  put<std::int32_t>(b, 3);  // nval
  for (float v : {4.0f, 8.0f, 2.0f}) put(b, v);
  put<std::int32_t>(b, static_cast<std::int32_t>(n2.size()));
  b.insert(b.end(), n2.begin(), n2.end());
  put<std::int32_t>(b, 0);
  put<std::int32_t>(b, 2);
  for (float v : {1.5f, 3.0f}) put(b, v);
  put<std::int32_t>(b, 10);
  put<std::int32_t>(b, 4);
  for (char c : std::string("wiki")) b.push_back(c);
  write_bytes(dir + "/legacy.dat", b);
  const auto d = tfm::read_imatrix(dir + "/legacy.dat");
  CHECK(d.legacy);
  CHECK(d.chunk_count == 10);
  REQUIRE(d.datasets.size() == 1);
  CHECK(d.datasets[0] == "wiki");
  CHECK(d.importance(n1) == std::vector<float>{1.0f, 2.0f, 0.5f});  // sums / ncall
  CHECK(d.importance(n2) == std::vector<float>{1.5f, 3.0f});        // ncall 0: the sums
  CHECK(d.importance("absent").empty());

  // truncated legacy files
  for (std::size_t cut : {std::size_t{2}, std::size_t{9}, std::size_t{30}, std::size_t{40}}) {
    CAPTURE(cut);
    write_bytes(dir + "/cut.dat", std::vector<char>(b.begin(), b.begin() + cut));
    CHECK_THROWS_AS(tfm::read_imatrix(dir + "/cut.dat"), tfm::parse_error);
  }
  CHECK_THROWS_AS(tfm::read_imatrix(dir + "/does-not-exist.dat"), tfm::io_error);

  // GGUF forms
  auto gguf = [&](const std::string& name, auto&& body, bool meta = true) {
    const std::string p = dir + "/" + name;
    tfm::io::gguf_writer w(p);
    w.add("general.type", std::string_view("imatrix"));
    if (meta) {
      w.add("imatrix.datasets", std::vector<std::string_view>{"x"});
      w.add("imatrix.chunk_count", std::uint32_t{1});
      w.add("imatrix.chunk_size", std::uint32_t{512});
    }
    body(w);
    w.finish();
    return p;
  };
  static const std::vector<float> sums{1, 2, 3, 4}, counts{2}, nan_sums{1, NAN, 3, 4};
  static const std::vector<tfm::f16> half_sums(4, tfm::f16(1.0f));
  auto bytes = [](const auto& v) { return std::as_bytes(std::span(v)); };
  // a good one: importance = sums / 2
  const auto good = gguf("good.gguf", [&](tfm::io::gguf_writer& w) {
    w.add_tensor("blk.0.attn_q.weight.in_sum2", {4, 1}, tfm::ggml_type::f32, bytes(sums));
    w.add_tensor("blk.0.attn_q.weight.counts", {1, 1}, tfm::ggml_type::f32, bytes(counts));
  });
  CHECK(tfm::read_imatrix(good).importance("blk.0.attn_q.weight") ==
        std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f});
  CHECK_THROWS_AS(tfm::read_imatrix(gguf(
                      "nometa.gguf",
                      [&](tfm::io::gguf_writer& w) {
                        w.add_tensor("a.in_sum2", {4, 1}, tfm::ggml_type::f32, bytes(sums));
                        w.add_tensor("a.counts", {1, 1}, tfm::ggml_type::f32, bytes(counts));
                      },
                      false)),
                  tfm::parse_error);
  CHECK_THROWS_AS(
      tfm::read_imatrix(gguf("nocounts.gguf",
                             [&](tfm::io::gguf_writer& w) {
                               w.add_tensor("a.in_sum2", {4, 1}, tfm::ggml_type::f32, bytes(sums));
                             })),
      tfm::parse_error);
  CHECK_THROWS_AS(tfm::read_imatrix(gguf(
                      "f16.gguf",
                      [&](tfm::io::gguf_writer& w) {
                        w.add_tensor("a.in_sum2", {4, 1}, tfm::ggml_type::f16, bytes(half_sums));
                        w.add_tensor("a.counts", {1, 1}, tfm::ggml_type::f32, bytes(counts));
                      })),
                  tfm::parse_error);
  CHECK_THROWS_AS(tfm::read_imatrix(gguf(
                      "nan.gguf",
                      [&](tfm::io::gguf_writer& w) {
                        w.add_tensor("a.in_sum2", {4, 1}, tfm::ggml_type::f32, bytes(nan_sums));
                        w.add_tensor("a.counts", {1, 1}, tfm::ggml_type::f32, bytes(counts));
                      })),
                  tfm::parse_error);
  static const std::vector<float> three{1, 2, 3}, two_counts{1, 1};
  CHECK_THROWS_AS(tfm::read_imatrix(gguf(
                      "ragged.gguf",
                      [&](tfm::io::gguf_writer& w) {
                        w.add_tensor("a.in_sum2", {3, 1}, tfm::ggml_type::f32, bytes(three));
                        w.add_tensor("a.counts", {1, 2}, tfm::ggml_type::f32, bytes(two_counts));
                      })),
                  tfm::parse_error);
  CHECK_THROWS_AS(tfm::read_imatrix(gguf("empty.gguf", [&](tfm::io::gguf_writer&) {})),
                  tfm::parse_error);
  // a model file is not an imatrix
  CHECK_THROWS_AS(tfm::read_imatrix(write_big_tiny(3)), tfm::parse_error);
}

TEST_CASE("imatrix: quantize_gguf uses it for the K-quants and lowers the weighted error") {
  const std::uint64_t seed = 2026;
  MESSAGE("seed " << seed);
  const std::string path = write_big_tiny(seed);
  const auto weights = big_tiny(seed);  // the same weights as the file (F32)
  const auto model = tfm::load_model(path);
  tfm::imatrix_collector col;
  const auto ids = random_ids(seed, 96, 64);
  const auto n = tfm::collect_imatrix(model, ids, 32, 1, 0, col);
  const auto im = col.result(static_cast<std::uint32_t>(n), 32);
  const tfm::io::gguf_file in(path);
  const std::string dir = infer_test::work_dir();
  for (const std::string preset : {"q4_k_m", "q3_k_m", "q2_k", "q6_k", "q4_0"}) {
    CAPTURE(preset);
    const auto& p = tfm::quantize_preset_of(preset);
    const auto r0 = tfm::quantize_gguf(in, dir + "/plain.gguf", p);
    const auto r1 = tfm::quantize_gguf(in, dir + "/imat.gguf", p, {.imatrix = &im});
    CHECK(r0.n_imatrix == 0);
    CHECK(r1.n_imatrix == 14);
    const tfm::io::gguf_file f0(dir + "/plain.gguf"), f1(dir + "/imat.gguf");
    double wse0 = 0, wse1 = 0;
    for (const auto& [name_, e] : im.entries) {
      const std::string& name = name_;  // clang 14: no structured binding inside CAPTURE
      CAPTURE(name);
      const auto& t0 = f0.tensor(name);
      const auto& t1 = f1.tensor(name);
      REQUIRE(t0.type == t1.type);
      const auto b0 = f0.tensor_data(t0), b1 = f1.tensor_data(t1);
      CHECK_FALSE(std::equal(b0.begin(), b0.end(), b1.begin(), b1.end()));
      const auto w = im.importance(name);
      const auto cols = static_cast<std::size_t>(t0.ne[0]);
      const auto rows = static_cast<std::size_t>(t0.n_elements) / cols;
      const auto& x = weights.w.at(name);
      std::vector<float> y0(x.size()), y1(x.size());
      tfm::dequantize(t0.type, b0, y0);
      tfm::dequantize(t1.type, b1, y1);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < cols; ++j) {
          const double d0 = y0[r * cols + j] - x[r * cols + j];
          const double d1 = y1[r * cols + j] - x[r * cols + j];
          wse0 += w[j] * d0 * d0;
          wse1 += w[j] * d1 * d1;
        }
    }
    MESSAGE(preset << ": importance-weighted RMSE with/without imatrix " << std::sqrt(wse1 / wse0));
    CHECK(wse1 < wse0);
  }
  // a mismatched imatrix is refused, naming the tensor
  auto bad = im;
  bad.entries["blk.0.ffn_down.weight"].sums.resize(128);
  CHECK_THROWS_AS(tfm::quantize_gguf(in, dir + "/bad.gguf", tfm::quantize_preset_of("q4_k_m"),
                                     {.imatrix = &bad}),
                  tfm::shape_error);
}
