// infer::bert_encoder on the committed tiny random checkpoint (tests/data/bert/tiny, made by
// reference.py tiny): embeddings against the numpy float64 forward, the cpu backend against the
// reference backend, packed batches == one sequence at a time == HF's padded forward(), 1 and 2
// threads, F16/BF16 and sharded or "bert."-prefixed checkpoints, and the loader's errors.
// The library first: io/safetensors.hpp calls an unqualified quoted(), which <filesystem> (via
// <iomanip>) would make ambiguous with std::quoted.
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/infer/bert.hpp"
#include "typeformer/io/safetensors.hpp"

#include "bert_test_support.hpp"
#include "tfm_test.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using tfm::index_t;
using tfm::infer::bert_encoder;

namespace {

std::string tiny_dir() { return bert_test::data_dir() + "/tiny"; }

/// A copy of the tiny model directory under the work directory, for variants.
std::string tiny_copy(const std::string& name) {
  const std::string d = bert_test::work_dir() + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  for (const auto& e : fs::directory_iterator(tiny_dir()))
    fs::copy(e.path(), d + "/" + e.path().filename().string());
  return d;
}

/// Rewrites model.safetensors of dir with every tensor converted to T and renamed prefix + name;
/// max_shard > 0 writes shards of at most that many bytes plus the index instead.
template <class T>
void rewrite_weights(const std::string& dir, const std::string& prefix,
                     std::uint64_t max_shard = 0) {
  namespace st = tfm::io::safetensors;
  std::vector<tfm::tensor<T, tfm::dyn_shape<1>>> keep;
  st::writer w;
  {
    const st::file f(tiny_dir() + "/model.safetensors");
    keep.reserve(f.tensors().size());
    for (const auto& t : f.tensors()) {
      tfm::tensor<T, tfm::dyn_shape<1>> flat(t.numel());
      if (t.rank() == 2) {
        const auto c = f.copy<T, 2>(t.name);
        std::memcpy(flat.data(), c.data(), sizeof(T) * static_cast<std::size_t>(c.size()));
      } else {
        const auto c = f.copy<T, 1>(t.name);
        std::memcpy(flat.data(), c.data(), sizeof(T) * static_cast<std::size_t>(c.size()));
      }
      keep.push_back(std::move(flat));
      w.add(prefix + t.name, st::dtype_of<T>(), t.shape,
            std::as_bytes(
                std::span<const T>(keep.back().data(), static_cast<std::size_t>(t.numel()))));
    }
  }
  fs::remove(dir + "/model.safetensors");
  if (max_shard)
    w.save_sharded(dir, max_shard);
  else
    w.save(dir + "/model.safetensors");
}

double cosine(const float* a, const double* b, index_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (index_t i = 0; i < n; ++i) {
    ab += a[i] * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += b[i] * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

std::vector<std::vector<std::int32_t>> tiny_ids() {
  const auto ref = bert_test::load_json(bert_test::data_dir() + "/tiny_reference.json");
  std::vector<std::vector<std::int32_t>> out;
  for (const auto& a : ref.find("ids")->array) out.push_back(bert_test::ids_of(a));
  return out;
}

template <class T>
std::vector<float> flat(const T& t) {
  return std::vector<float>(t.data(), t.data() + t.size());
}

}  // namespace

TEST_CASE("bert tiny: embeddings match the numpy float64 forward (cosine >= 0.9999)") {
  const auto ref = bert_test::load_json(bert_test::data_dir() + "/tiny_reference.json");
  const auto enc = bert_encoder<>::load(tiny_dir());
  CHECK(enc.config().C == 16);
  CHECK(enc.config().H == 2);
  CHECK(enc.embed_options().max_seq_length == 24);
  CHECK(enc.stats().owned_bytes == 0);  // every F32 tensor used in place
  CHECK(enc.stats().borrowed_bytes ==
        enc.file().shards()[0].bytes().size() - enc.file().shards()[0].data_offset());
  std::vector<std::string> texts;
  for (const auto& s : ref.find("sentences")->array) texts.push_back(s.string);
  const auto& ids = ref.find("ids")->array;
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK_MESSAGE(enc.tokenize(texts[i]) == bert_test::ids_of(ids[i]), "sentence " << i);
  for (index_t batch : {1, 4}) {
    const auto e = enc.embed(texts, batch);
    double min_cos = 1, max_diff = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      std::vector<double> want;
      for (const auto& x : ref.find("embeddings")->array[i].array) want.push_back(x.number);
      REQUIRE(static_cast<index_t>(want.size()) == e.extent(1));
      const float* got = e.data() + static_cast<index_t>(i) * e.extent(1);
      min_cos = std::min(min_cos, cosine(got, want.data(), e.extent(1)));
      for (std::size_t c = 0; c < want.size(); ++c)
        max_diff = std::max(max_diff, std::abs(got[c] - want[c]));
    }
    MESSAGE("tiny, batch " << batch << ": min cosine 1 - " << 1 - min_cos << ", max |diff| "
                           << max_diff);
    CHECK(min_cos >= 0.9999);
    CHECK(max_diff < 1e-5);
  }
}

TEST_CASE("bert tiny: cpu == reference backend; packed == alone == padded forward; threads") {
  const auto cpu = bert_encoder<tfm::cpu>::load(tiny_dir());
  const auto ref = bert_encoder<tfm::reference>::load(tiny_dir());
  const auto seqs = tiny_ids();
  const auto hc = cpu.hidden_states(seqs), hr = ref.hidden_states(seqs);
  // TESTING.md: NMSE <= 2e-3 for a whole block; the cpu kernels are far inside it.
  const auto report = tfm_test::compare(flat(hc), flat(hr), 1e-9);
  MESSAGE("cpu vs reference hidden states: NMSE " << report.nmse << ", max |diff| "
                                                  << report.max_abs);
  CHECK(report.ok);
  const double max_diff = report.max_abs;
  CHECK(max_diff < 1e-4);

  // Each sequence alone gives what it gives inside the packed batch (not the same bits: the GEMM
  // picks its path, GEMV or packed, from the row count, and their summation orders differ).
  index_t row = 0;
  double alone_diff = 0;
  for (const auto& s : seqs) {
    const auto alone = cpu.hidden_states({s});
    for (index_t i = 0; i < alone.size(); ++i)
      alone_diff =
          std::max<double>(alone_diff, std::abs(alone.data()[i] - hc.data()[row * 16 + i]));
    row += static_cast<index_t>(s.size());
  }
  MESSAGE("one sequence alone vs in the packed batch: max |diff| " << alone_diff);
  CHECK(alone_diff < 1e-5);

  // HF's padded layout: ids and mask (B, T), rows past the mask are zero.
  const index_t B = static_cast<index_t>(seqs.size()), T = 24;
  tfm::tensor<std::int32_t, tfm::dyn_shape<2>> ids(B, T), mask(B, T);
  for (index_t b = 0; b < B; ++b)
    for (std::size_t t = 0; t < seqs[static_cast<std::size_t>(b)].size(); ++t) {
      ids.data()[b * T + static_cast<index_t>(t)] = seqs[static_cast<std::size_t>(b)][t];
      mask.data()[b * T + static_cast<index_t>(t)] = 1;
    }
  const auto padded = cpu.forward(ids, mask);
  row = 0;
  bool pad_ok = true;
  for (index_t b = 0; b < B; ++b) {
    const auto len = static_cast<index_t>(seqs[static_cast<std::size_t>(b)].size());
    for (index_t t = 0; t < T; ++t)
      for (index_t c = 0; c < 16; ++c) {
        const float got = padded.data()[(b * T + t) * 16 + c];
        pad_ok = pad_ok && (t < len ? got == hc.data()[(row + t) * 16 + c] : got == 0.0f);
      }
    row += len;
  }
  CHECK(pad_ok);
  mask.data()[0] = 0;  // a hole before ones: left padding is refused
  CHECK_THROWS_AS(cpu.forward(ids, mask), tfm::value_error);

  // 1 and 2 threads: the same bits.
  std::vector<float> one, two;
  {
    tfm::thread_scope ts(1);
    one = flat(cpu.hidden_states(seqs));
  }
  {
    tfm::thread_scope ts(2);
    two = flat(cpu.hidden_states(seqs));
  }
  CHECK(one == two);
}

TEST_CASE("bert tiny: F16, BF16, sharded and bert.-prefixed checkpoints") {
  const auto base = bert_encoder<>::load(tiny_dir());
  const std::vector<std::string> texts{"Hello world",
                                       "The quick brown fox jumps over the lazy dog."};
  const auto e0 = base.embed(texts);
  {
    const std::string d = tiny_copy("sharded");
    rewrite_weights<float>(d, "bert.", 4096);
    const auto m = bert_encoder<>::load(d);
    CHECK(m.file().shards().size() > 1);
    CHECK(flat(m.embed(texts)) == flat(e0));
  }
  auto close = [&](const bert_encoder<>& m, const std::string& who) {
    const auto e = m.embed(texts);
    for (index_t i = 0; i < 2; ++i) {
      std::vector<double> want(e0.data() + i * 16, e0.data() + (i + 1) * 16);
      const double c = cosine(e.data() + i * 16, want.data(), 16);
      MESSAGE(who << " sentence " << i << ": cosine to the F32 model " << c);
      CHECK(c > 0.99);
    }
    CHECK(m.stats().borrowed_bytes == 0);
    CHECK(m.stats().owned_bytes > 0);
  };
  {
    const std::string d = tiny_copy("f16");
    rewrite_weights<tfm::f16>(d, "");
    close(bert_encoder<>::load(d), "F16");
    const auto copy = [&] {
      const auto original = bert_encoder<>::load(d);
      return bert_encoder<>(original);  // the original and its load are gone after this
    }();
    close(copy, "F16, a copy of a destroyed encoder");
  }
  {
    const std::string d = tiny_copy("bf16");
    rewrite_weights<tfm::bf16>(d, "");
    close(bert_encoder<>::load(d), "BF16");
  }
}

TEST_CASE("bert: unsupported configurations and broken directories are refused clearly") {
  const std::string cfg = bert_test::slurp(tiny_dir() + "/config.json");
  auto with_config = [&](const std::string& from, const std::string& to) {
    const std::string d = tiny_copy("cfg");
    std::string c = cfg;
    const auto at = c.find(from);
    REQUIRE_MESSAGE(at != std::string::npos, from);
    bert_test::write_text(d + "/config.json", c.replace(at, from.size(), to));
    return d;
  };
  auto refused = [](const std::string& dir, auto tag, const std::string& part) {
    try {
      (void)bert_encoder<>::load(dir);
      FAIL_CHECK("loaded a directory that should fail with " << part);
    } catch (const decltype(tag)& e) {
      CHECK_MESSAGE(std::string(e.what()).find(part) != std::string::npos, std::string(e.what()));
    }
  };
  const tfm::unsupported_error unsupported{""};
  const tfm::parse_error parse{""};
  const tfm::io_error io{""};
  refused(with_config("\"model_type\": \"bert\"", "\"model_type\": \"roberta\""), unsupported,
          "model_type");
  refused(with_config("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\""), unsupported,
          "hidden_act");
  refused(with_config("\"position_embedding_type\": \"absolute\"",
                      "\"position_embedding_type\": \"relative_key\""),
          unsupported, "position_embedding_type");
  refused(with_config("\"model_type\": \"bert\"", "\"model_type\": \"bert\", \"is_decoder\": true"),
          unsupported, "is_decoder");
  refused(with_config("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"), parse,
          "multiple");
  refused(with_config("\"hidden_size\": 16", "\"hidden_size\": \"16\""), parse, "hidden_size");
  refused(with_config("\"intermediate_size\": 32", "\"intermediate_size\": 48"), parse,
          "encoder.layer.0.intermediate.dense.weight");
  refused(bert_test::work_dir() + "/no_such_model", io, "config.json");
  {
    const std::string d = tiny_copy("pool");
    fs::create_directories(d + "/1_Pooling");
    bert_test::write_text(
        d + "/1_Pooling/config.json",
        R"({"pooling_mode_mean_tokens": false, "pooling_mode_max_tokens": true})");
    refused(d, unsupported, "pooling_mode_max_tokens");
    bert_test::write_text(d + "/1_Pooling/config.json", R"({"pooling_mode_cls_token": true})");
    const auto m = bert_encoder<>::load(d);
    CHECK(m.embed_options().pooling == tfm::infer::bert_pooling::cls);
  }
  {
    const std::string d = tiny_copy("missing");
    std::string c = cfg;
    c.replace(c.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 3");
    bert_test::write_text(d + "/config.json", c);
    refused(d, parse, "encoder.layer.2.");
  }
  const auto m = bert_encoder<>::load(tiny_dir());
  CHECK_THROWS_AS(m.hidden_states({{1, 2, 100000}}), tfm::value_error);
  CHECK_THROWS_AS(m.hidden_states({{}}), tfm::value_error);
  CHECK(m.embed(std::vector<std::string>{}).extent(0) == 0);
  CHECK(m.hidden_states({}).extent(0) == 0);
  CHECK_THROWS_AS(m.hidden_states({std::vector<std::int32_t>(33, 1)}), tfm::value_error);
  CHECK_THROWS_AS(m.embed(std::vector<std::string>{"x"}, 0), tfm::value_error);
  auto m2 = m;
  CHECK_THROWS_AS(m2.set_embed_options({tfm::infer::bert_pooling::mean, true, 1}),
                  tfm::value_error);
  const auto long_ids =
      m.tokenize(std::string(200, 'a') + " b c d e f g h i j k l m n o p q r s t u v w x y z");
  CHECK(long_ids.size() == 24);
  CHECK(long_ids.back() == m.tokenizer().token_to_id("[SEP]"));
}
