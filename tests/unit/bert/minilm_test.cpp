// all-MiniLM-L6-v2 from the model cache against tests/data/bert/reference.py's float64 numpy
// forward of the same safetensors (reference.json: sentences and their HF token ids;
// reference_embeddings.f32: 20 x 384 little-endian floats). Run by ctest as tfm_test_bert_minilm
// (doctest::skip() in the main run); "TFM_SKIP:" when the model is absent.
// The library first: io/safetensors.hpp calls an unqualified quoted(), which <filesystem> (via
// <iomanip>) would make ambiguous with std::quoted.
#include "typeformer/infer/bert.hpp"

#include "bert_test_support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

using tfm::index_t;
using tfm::infer::bert_encoder;

TEST_CASE("minilm: embeddings match the numpy reference (cosine >= 0.9999 per sentence)" *
          doctest::skip()) {
  if (!bert_test::minilm_present()) {
    MESSAGE("TFM_SKIP: " << bert_test::minilm_dir() << " is absent (scripts/fetch-models)");
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto enc = bert_encoder<>::load(bert_test::minilm_dir());
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("loaded in " << load_s << " s; " << enc.stats().borrowed_bytes
                       << " bytes of weights used in place, " << enc.stats().owned_bytes
                       << " copied");
  CHECK(enc.config().C == 384);
  CHECK(enc.config().n_layer == 6);
  CHECK(enc.config().H == 12);
  CHECK(enc.embed_options().max_seq_length == 256);
  CHECK(enc.embed_options().pooling == tfm::infer::bert_pooling::mean);
  CHECK(enc.embed_options().normalize);
  CHECK(enc.stats().owned_bytes == 0);

  const auto ref = bert_test::load_json(bert_test::data_dir() + "/reference.json");
  std::vector<std::string> texts;
  for (const auto& s : ref.find("sentences")->array) texts.push_back(s.string);
  const auto n = static_cast<index_t>(texts.size());
  const std::string raw = bert_test::slurp(bert_test::data_dir() + "/reference_embeddings.f32");
  REQUIRE(raw.size() == static_cast<std::size_t>(n) * 384 * sizeof(float));
  std::vector<float> want(static_cast<std::size_t>(n) * 384);
  std::memcpy(want.data(), raw.data(), raw.size());  // little-endian hosts only (x86, arm64)

  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK_MESSAGE(enc.tokenize(texts[i]) == bert_test::ids_of(ref.find("ids")->array[i]),
                  "token ids of sentence " << i);
  for (index_t batch : {1, 8, 32}) {
    const auto e = enc.embed(texts, batch);
    double min_cos = 1, max_diff = 0;
    for (index_t i = 0; i < n; ++i) {
      double ab = 0, aa = 0, bb = 0;
      for (index_t c = 0; c < 384; ++c) {
        const double a = e.data()[i * 384 + c], b = want[static_cast<std::size_t>(i * 384 + c)];
        ab += a * b, aa += a * a, bb += b * b;
        max_diff = std::max(max_diff, std::abs(a - b));
      }
      const double cos = ab / std::sqrt(aa * bb);
      CHECK_MESSAGE(cos >= 0.9999, "sentence " << i << ": cosine " << cos);
      CHECK(std::abs(std::sqrt(aa) - 1.0) < 1e-5);
      min_cos = std::min(min_cos, cos);
    }
    MESSAGE("batch " << batch << ": min cosine 1 - " << 1 - min_cos << " over " << n
                     << " sentences, max |diff| " << max_diff);
  }

  // The cpu kernels against the reference backend's double-accumulating loops.
  const auto slow = bert_encoder<tfm::reference>::load(bert_test::minilm_dir());
  const std::vector<std::string> few{texts[0], texts[11], texts[13]};
  const auto a = enc.embed(few), b = slow.embed(few);
  double max_diff = 0;
  for (index_t i = 0; i < a.size(); ++i)
    max_diff = std::max<double>(max_diff, std::abs(a.data()[i] - b.data()[i]));
  MESSAGE("cpu vs reference backend, 3 sentences: max |diff| " << max_diff);
  CHECK(max_diff < 1e-5);
}
