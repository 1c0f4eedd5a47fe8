// Decoding a token allocates nothing once the session exists: every operator new of the process
// is counted (this file replaces the global allocation functions of the test executable).
#include "tiny_model.hpp"

#include "typeformer/core/storage.hpp"
#include "typeformer/infer/batch.hpp"
#include "typeformer/infer/model.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "count_new.hpp"

TEST_CASE("decode allocates nothing per token after warm-up (f32, f16 and packed weights)") {
  using namespace tfm;
  // q4_1 stands for the packed case: Q4_1 (integer-dot GEMV) and Q4_K (dequantize-in-pack).
  for (ggml_type t : {ggml_type::f32, ggml_type::f16, ggml_type::q4_1}) {
    const std::string path =
        infer_test::work_dir() + "/alloc_" + std::string(ggml_type_name(t)) + ".gguf";
    if (t == ggml_type::q4_1)
      infer_test::write_tiny(
          infer_test::make_quant_tiny(21, true, {ggml_type::q4_1, ggml_type::q4_K}), path);
    else
      infer_test::write_tiny(infer_test::make_tiny(21, t == ggml_type::f16, t), path);
    auto model = infer::load_gguf(path);
    infer::session s(model, {.context = 64});
    auto lg = s.prefill(std::vector<std::int32_t>{1, 2, 3});
    lg = s.decode(4);  // warm-up: thread pools, per-thread scratch
    const memory_stats_t before = memory_stats();
    const long news = g_news.load();
    std::int32_t tok = 5;
    for (int i = 0; i < 40; ++i) {
      lg = s.decode(tok);
      tok = static_cast<std::int32_t>((tok * 31 + 7) % 64);
    }
    const long per_40 = g_news.load() - news;
    MESSAGE(ggml_type_name(t) << ": operator new calls during 40 decoded tokens: " << per_40);
    CHECK(per_40 == 0);
    CHECK(memory_stats().current_bytes == before.current_bytes);
    CHECK(s.position() == 44);
  }
}

TEST_CASE("decode allocates nothing per token with a quantized KV cache (f16, q8_0, int8)") {
  using namespace tfm;
  infer_test::tiny_model sizes;  // head_dim 32: whole q8_0 blocks (C = H D)
  sizes.C = 128;
  sizes.D = 32;
  const std::string path = infer_test::work_dir() + "/alloc_kv.gguf";
  infer_test::write_tiny(infer_test::make_tiny(22, false, ggml_type::f32, sizes), path);
  auto model = infer::load_gguf(path);
  for (kv_type t : {kv_type::f16, kv_type::q8_0, kv_type::int8}) {
    infer::session s(model, {.context = 64, .kv = t});
    auto lg = s.prefill(std::vector<std::int32_t>{1, 2, 3});
    lg = s.decode(4);  // warm-up
    const memory_stats_t before = memory_stats();
    const long news = g_news.load();
    std::int32_t tok = 5;
    for (int i = 0; i < 40; ++i) {
      lg = s.decode(tok);
      tok = static_cast<std::int32_t>((tok * 31 + 7) % 64);
    }
    const long per_40 = g_news.load() - news;
    MESSAGE(infer::kv_type_name(t)
            << " cache: operator new calls during 40 decoded tokens: " << per_40);
    CHECK(per_40 == 0);
    CHECK(memory_stats().current_bytes == before.current_bytes);
  }
}

TEST_CASE("a batched step (infer::batch_runner) allocates nothing after warm-up") {
  using namespace tfm;
  // Q4_1 (interleaved kernel), Q8_0, Q4_K (integer dots per output) and f32.
  for (bool quant : {false, true}) {
    const std::string path =
        infer_test::work_dir() + "/alloc_batch_" + (quant ? "q" : "f") + ".gguf";
    if (quant)
      infer_test::write_tiny(infer_test::make_quant_tiny(
                                 23, true, {ggml_type::q4_1, ggml_type::q8_0, ggml_type::q4_K}),
                             path);
    else
      infer_test::write_tiny(infer_test::make_tiny(23, false, ggml_type::f32), path);
    auto model = infer::load_gguf(path);
    const auto& c = model.config();
    infer::paged_kv kv(c.n_layer, c.n_kv_head, c.head_dim, {.block_tokens = 4, .blocks = 64});
    kv.prepare(4, 64);  // sequence slots and block tables (else they grow with the sequences)
    infer::batch_runner<float, cpu> run(model, kv,
                                        {.max_tokens = 32, .max_seqs = 4, .context = 64});
    std::vector<infer::paged_kv::seq_id> seqs;
    std::vector<std::vector<std::int32_t>> toks;
    for (int i = 0; i < 3; ++i) {
      seqs.push_back(kv.create());
      toks.push_back({1, 2, 3, 4, 5});
    }
    std::vector<infer::batch_item> items;
    items.reserve(3);
    auto step = [&](bool prefill) {
      items.clear();
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        const index_t n = prefill ? 5 : 1;
        REQUIRE(kv.reserve(seqs[i], n));
        items.push_back({seqs[i], toks[i].data() + (prefill ? 0 : toks[i].size() - 1), n, true});
      }
      auto lg = run.step(items);
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        const float* row = lg.data() + i * static_cast<std::size_t>(c.vocab);
        if (toks[i].size() < toks[i].capacity()) {
          toks[i].push_back(static_cast<std::int32_t>(std::max_element(row, row + c.vocab) - row));
        }
      }
    };
    for (auto& t : toks) t.reserve(64);
    step(true);
    step(false);  // warm-up
    const long news = g_news.load();
    for (int i = 0; i < 20; ++i) step(false);
    const long per_20 = g_news.load() - news;
    MESSAGE((quant ? "quantized" : "f32") << ": operator new calls during 20 batched steps of 3 "
                                             "sequences: "
                                          << per_20);
    CHECK(per_20 == 0);
  }
}
