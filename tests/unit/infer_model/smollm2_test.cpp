// SmolLM2-135M-Instruct (Q4_1 GGUF, weights kept packed) from the model cache: config, logits
// of a prompt against numpy on the same dequantized weights (reference.py smollm2), greedy
// generation, and llama.cpp's logits when their fixture exists. Run by ctest as
// tfm_test_infer_model_smollm2 (doctest::skip() in the main run); "TFM_SKIP:" when the model
// file is absent.
#include "tiny_model.hpp"

#include "tfm_test.hpp"
#include "typeformer/infer/model.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

using namespace tfm;

namespace {

std::vector<std::int32_t> ids_of(const std::vector<double>& v) {
  std::vector<std::int32_t> out;
  for (double x : v) out.push_back(static_cast<std::int32_t>(x));
  return out;
}

/// Compares the top-5 lines of a fixture ("top5 t id logit ...") with all-position logits.
void compare_top5(const std::map<std::string, std::vector<double>>& ref,
                  const std::vector<float>& lg, index_t T, index_t V, const std::string& who,
                  double tol) {
  double max_diff = 0;
  int top1_same = 0;
  for (index_t t = 0; t < T; ++t) {
    const std::vector<double>& row = ref.at("top5 " + std::to_string(t));
    const float* l = lg.data() + t * V;
    const auto best = static_cast<std::int32_t>(std::max_element(l, l + V) - l);
    top1_same += best == static_cast<std::int32_t>(row[0]);
    for (std::size_t i = 0; i + 1 < row.size(); i += 2)
      max_diff = std::max(
          max_diff, std::abs(static_cast<double>(l[static_cast<index_t>(row[i])]) - row[i + 1]));
  }
  MESSAGE(who << ": top-1 agrees at " << top1_same << "/" << T
              << " positions; max |logit diff| over"
              << " the reference's top-5 = " << max_diff);
  CHECK(top1_same == T);
  CHECK(max_diff < tol);
}

}  // namespace

TEST_CASE("smollm2: loads, matches numpy on the dequantized weights, greedy-generates" *
          doctest::skip()) {
  const std::string path = tfm_test::smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_model(path);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto& c = model.config();
  CHECK(c.n_layer == 30);
  CHECK(c.n_embd == 576);
  CHECK(c.n_head == 9);
  CHECK(c.n_kv_head == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.ffn == 1536);
  CHECK(c.vocab == 49152);
  CHECK(c.rope.base == 100000.0);
  CHECK(c.tied_output);
  CHECK(model.output().data() == model.token_embd().data());  // tied: one matrix
  CHECK(model.file()->get<std::string_view>("tokenizer.ggml.pre") == "smollm");
  const auto& st = model.stats();
  MESSAGE("load " << ms << " ms; mapped " << st.bytes_mapped / 1048576.0 << " MiB, borrowed "
                  << st.bytes_borrowed / 1048576.0 << " MiB, allocated (dequantized) "
                  << st.bytes_allocated / 1048576.0 << " MiB");

  const auto ref = infer_test::read_keyed(infer_test::data_dir() + "/smollm2_reference.txt");
  const std::vector<std::int32_t> prompt = ids_of(ref.at("prompt"));
  const index_t T = static_cast<index_t>(prompt.size()), V = c.vocab;
  infer::session s(model, {.context = 64});
  auto all = s.prefill(prompt, true);
  compare_top5(ref, std::vector<float>(all.begin(), all.end()), T, V, "vs numpy", 2e-3);

  const auto greedy = infer::generate(model, prompt, 16, {.temperature = 0});
  CHECK(greedy == ids_of(ref.at("greedy16")));

  const std::string lc = infer_test::data_dir() + "/smollm2_llamacpp.txt";
  if (std::filesystem::exists(lc)) {
    const auto ref_lc = infer_test::read_keyed(lc);
    CHECK(ids_of(ref_lc.at("prompt")) == prompt);
    // llama.cpp rounds the activations to Q8_1 blocks before its Q4_1 dot products, so its
    // logits sit up to ~0.75 (of ~27) from the exact float forward above; the top-1 token must
    // agree at every position, the values within 1.0 (measured max: 0.72).
    compare_top5(ref_lc, std::vector<float>(all.begin(), all.end()), T, V, "vs llama.cpp", 1.0);
  } else {
    MESSAGE("no llama.cpp fixture (" << lc << "): reference.py llamacpp writes it");
  }
}

namespace {

/// Resident set size of this process (VmRSS of /proc/self/status), bytes; 0 when unknown.
std::size_t resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

double nmse_of(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return num / den;
}

/// Greedy decode of n tokens after `prompt`; every step's logits appended to `logits`.
template <class Model>
std::vector<std::int32_t> greedy_logits(const Model& m, const std::vector<std::int32_t>& prompt,
                                        int n, std::vector<float>& logits) {
  infer::session s(m, {.context = 64});
  auto lg = s.prefill(prompt);
  std::vector<std::int32_t> out;
  for (int i = 0; i < n; ++i) {
    logits.insert(logits.end(), lg.begin(), lg.end());
    const auto t = static_cast<std::int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin());
    out.push_back(t);
    lg = s.decode(t);
  }
  return out;
}

}  // namespace

// Issue 19: the Q4_1 weights (and the Q8_0 token_embd / tied head) stay packed, borrowed from
// the mapping. Bounds as tests/unit/infer_model/quant_test.cpp: prefill NMSE 1e-10 against the
// engine that dequantizes on load (the same float GEMM over the same values; measured 0), decode
// 2e-3 (the 8-bit activations of the integer-dot GEMV, as llama.cpp's; measured 5.8e-4), top-1
// equal at every step, 1 and 2 threads bitwise. Memory (issue 19): the resident growth from
// before the load to after decoding (every weight page touched), less the session's buffers,
// within 5% of the file size (measured 1.02x).
TEST_CASE("smollm2: packed Q4_1 weights against the dequantized-f32 engine" * doctest::skip()) {
  const std::string path = tfm_test::smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const std::size_t file_bytes = std::filesystem::file_size(path);
  const std::size_t rss0 = resident_bytes();
  auto packed = load_model(path);
  const std::size_t rss_load = resident_bytes();
  const auto& st = packed.stats();
  MESSAGE("packed: load " << st.load_ms << " ms; mapped " << st.bytes_mapped / 1048576.0
                          << " MiB, borrowed " << st.bytes_borrowed / 1048576.0
                          << " MiB, allocated " << st.bytes_allocated / 1048576.0 << " MiB");
  CHECK(packed.block(0).wq.type() == ggml_type::q4_1);
  CHECK(packed.block(0).wq.quantized());
  CHECK_FALSE(packed.block(0).wq.owned());
  CHECK(packed.token_embd().type() == ggml_type::q8_0);
  CHECK(packed.output().data() == packed.token_embd().data());
  CHECK(st.bytes_allocated == 0);
  CHECK(static_cast<double>(st.bytes_borrowed) > 0.9 * static_cast<double>(file_bytes));

  const auto ref = infer_test::read_keyed(infer_test::data_dir() + "/smollm2_reference.txt");
  const std::vector<std::int32_t> prompt = ids_of(ref.at("prompt"));
  std::vector<float> lp;
  std::vector<std::int32_t> gp;
  std::size_t session_bytes = 0;
  {
    infer::session s(packed, {.context = 64});
    session_bytes = s.bytes();
    gp = greedy_logits(packed, prompt, 16, lp);  // touches every weight page
  }
  const std::size_t rss_run = resident_bytes();
  const double grown = static_cast<double>(rss_run) - static_cast<double>(rss0);
  MESSAGE("RSS: +" << (rss_load - rss0) / 1048576.0 << " MiB after load, +" << grown / 1048576.0
                   << " MiB after decoding (file " << file_bytes / 1048576.0 << " MiB, a "
                   << session_bytes / 1048576.0 << " MiB session): "
                   << grown / static_cast<double>(file_bytes) << " x the file");
  CHECK(grown - static_cast<double>(session_bytes) < 1.05 * static_cast<double>(file_bytes));

  auto f32 = load_model(path, {.quantized = infer::quantized_weights::f32});
  MESSAGE("f32: load " << f32.stats().load_ms << " ms; allocated "
                       << f32.stats().bytes_allocated / 1048576.0 << " MiB");
  CHECK(f32.block(0).wq.type() == ggml_type::f32);
  {
    infer::session a(packed, {.context = 64}), b(f32, {.context = 64});
    auto x = a.prefill(prompt, true);
    const std::vector<float> pa(x.begin(), x.end());
    auto y = b.prefill(prompt, true);
    const std::vector<float> pb(y.begin(), y.end());
    const double e = nmse_of(pa, pb);
    MESSAGE("prefill NMSE packed vs f32: " << e);
    CHECK(e < 1e-10);
  }
  std::vector<float> lf;
  const std::vector<std::int32_t> gf = greedy_logits(f32, prompt, 16, lf);
  const double e = nmse_of(lp, lf);
  int top1 = 0;
  const index_t V = packed.config().vocab;
  for (std::size_t i = 0; i < gp.size(); ++i) {
    const float* a = lp.data() + i * static_cast<std::size_t>(V);
    const float* b = lf.data() + i * static_cast<std::size_t>(V);
    top1 += (std::max_element(a, a + V) - a) == (std::max_element(b, b + V) - b);
  }
  MESSAGE("greedy decode, 16 steps: NMSE packed vs f32 " << e << ", top-1 equal at " << top1
                                                         << "/16");
  CHECK(e < 2e-3);
  CHECK(top1 == 16);
  CHECK(gp == gf);

  std::vector<float> l1, l2;
  {
    thread_scope one(1);
    greedy_logits(packed, prompt, 6, l1);
  }
  {
    thread_scope two(2);
    greedy_logits(packed, prompt, 6, l2);
  }
  CHECK(l1 == l2);
}
