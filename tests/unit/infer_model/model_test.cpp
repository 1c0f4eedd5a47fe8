// The tape-free engine on tiny llama models: against numpy (fixtures of
// tests/data/infer_model/reference.py, written with gguf-py), against nn::gpt given the same
// weights, and against itself across decode/prefill/chunking/sliding.
#include "tiny_model.hpp"

#include "typeformer/infer/model.hpp"
#include "typeformer/nn/gpt.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

using namespace tfm;

namespace {

const std::vector<std::int32_t> tiny_prompt{3, 17, 42, 5, 63, 0, 28, 11, 9};

/// max |a - b| / max |b| over the rows.
template <class A, class B>
double rel_err(const A& a, const B& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / den;
}

template <class Model>
std::vector<float> all_logits(const Model& m, const std::vector<std::int32_t>& ids,
                              infer::session_options o = {}) {
  infer::session s(m, o);
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

std::string tiny_file(std::uint64_t seed, bool tied, ggml_type t) {
  const std::string path = infer_test::work_dir() + "/tiny_" + std::to_string(seed) +
                           (tied ? "_tied_" : "_untied_") + std::string(ggml_type_name(t)) +
                           ".gguf";
  infer_test::write_tiny(infer_test::make_tiny(seed, tied, t), path);
  return path;
}

}  // namespace

TEST_CASE("tiny gguf-py models: logits equal the numpy float64 forward (cpu and reference)") {
  const auto expected = infer_test::read_tiny_logits();
  REQUIRE(expected.size() == 2);
  for (const auto& [name, rows] : expected) {
    const std::string path = infer_test::data_dir() + "/" + name;
    auto model = infer::load_gguf(path);
    auto oracle = infer::transformer<float, reference>::from_gguf(path);
    const auto& c = model.config();
    CHECK(c.n_head == 4);
    CHECK(c.n_kv_head == 2);
    CHECK(c.head_dim == 8);
    CHECK(c.tied_output == (name == "tiny_f16.gguf"));
    CHECK(model.block(0).wq.type() == (name == "tiny_f16.gguf" ? ggml_type::f16 : ggml_type::f32));
    CHECK_FALSE(model.block(0).wq.owned());  // borrowed from the mapping
    std::vector<double> want;
    for (const auto& r : rows) want.insert(want.end(), r.begin(), r.end());
    REQUIRE(want.size() == tiny_prompt.size() * 64);
    const double e_cpu = rel_err(all_logits(model, tiny_prompt), want);
    const double e_ref = rel_err(all_logits(oracle, tiny_prompt), want);
    MESSAGE(name << ": max |logit - numpy| / max |numpy| = " << e_cpu << " (cpu), " << e_ref
                 << " (reference backend)");
    CHECK(e_cpu < 2e-6);
    CHECK(e_ref < 2e-6);
  }
}

TEST_CASE("decode step by step equals one prefill; chunked prefill equals one prefill") {
  for (ggml_type t : {ggml_type::f32, ggml_type::f16}) {
    const std::uint64_t seed = 11;
    MESSAGE("seed " << seed << ", weights " << ggml_type_name(t));
    auto model = infer::load_gguf(tiny_file(seed, t == ggml_type::f16, t));
    const std::int64_t V = model.config().vocab;
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 40; ++i) ids.push_back(static_cast<std::int32_t>((i * 37 + 5) % V));
    const std::vector<float> whole = all_logits(model, ids);

    infer::session s(model);
    std::vector<float> stepped;
    for (std::int32_t id : ids) {
      auto lg = s.decode(id);
      stepped.insert(stepped.end(), lg.begin(), lg.end());
    }
    const double e_decode = rel_err(stepped, whole);
    const std::vector<float> chunked = all_logits(model, ids, {.context = 0, .batch = 7});
    const double e_chunk = rel_err(chunked, whole);
    MESSAGE("decode vs prefill " << e_decode << ", chunks of 7 vs one prefill " << e_chunk);
    CHECK(e_decode < 1e-5);
    CHECK(e_chunk < 1e-5);

    infer::session last(model);  // last-position logits only == the last row of all
    auto lg = last.prefill(ids);
    CHECK(rel_err(lg, std::vector<float>(whole.end() - V, whole.end())) < 1e-6);
  }
}

TEST_CASE("a GGUF written by gguf_writer gives nn::gpt's logits on the same weights") {
  for (bool tied : {false, true}) {
    const std::uint64_t seed = 7 + (tied ? 1 : 0);
    MESSAGE("seed " << seed << std::string(tied ? ", tied output" : ", untied output"));
    const infer_test::tiny_model m = infer_test::make_tiny(seed, tied, ggml_type::f32);
    const std::string path = infer_test::work_dir() + "/vs_gpt_" + std::to_string(seed) + ".gguf";
    infer_test::write_tiny(m, path);
    auto model = infer::load_gguf(path);

    nn::dynamic_config cfg;
    cfg.vocab = m.V;
    cfg.block_size = m.ctx;
    cfg.n_layer = m.L;
    cfg.n_embd = m.C;
    cfg.n_head = m.H;
    cfg.n_kv_head = m.G;
    cfg.ffn = m.F;
    cfg.norm = nn::norm_kind::rms_norm;
    cfg.mlp = nn::mlp_kind::swiglu;
    cfg.position = nn::position_kind::rope;
    cfg.bias = false;
    cfg.tie_embeddings = tied;
    cfg.norm_eps = 1e-5;
    cfg.rope_base = 10000.0;
    nn::gpt<nn::dynamic_config> gpt(cfg, 1);
    // nn::gpt's names -> the GGUF tensors (c_attn is q, k, v stacked by rows).
    auto gguf_of = [&](const std::string& n) -> std::vector<float> {
      if (n == "wte.weight") return m.w.at("token_embd.weight");
      if (n == "ln_f.weight") return m.w.at("output_norm.weight");
      if (n == "lm_head.weight") return m.w.at("output.weight");
      const std::size_t dot = n.find('.', 2);
      const std::string blk = "blk." + n.substr(2, dot - 2) + ".", rest = n.substr(dot + 1);
      if (rest == "attn.c_attn.weight") {
        std::vector<float> v = m.w.at(blk + "attn_q.weight");
        for (const char* x : {"attn_k.weight", "attn_v.weight"})
          v.insert(v.end(), m.w.at(blk + x).begin(), m.w.at(blk + x).end());
        return v;
      }
      const std::pair<const char*, const char*> names[] = {
          {"ln_1.weight", "attn_norm.weight"},          {"ln_2.weight", "ffn_norm.weight"},
          {"attn.c_proj.weight", "attn_output.weight"}, {"mlp.gate.weight", "ffn_gate.weight"},
          {"mlp.up.weight", "ffn_up.weight"},           {"mlp.down.weight", "ffn_down.weight"}};
      for (const auto& [a, b] : names)
        if (rest == a) return m.w.at(blk + b);
      FAIL("no GGUF tensor for nn::gpt parameter " << n);
      return {};
    };
    for (auto& p : gpt.parameters()) {
      const std::vector<float> v = gguf_of(p.name);
      REQUIRE(static_cast<index_t>(v.size()) == p.data->size());
      std::copy(v.begin(), v.end(), p.data->value.data());
    }
    tensor<std::int32_t, shape<dyn, dyn>> ids(1, static_cast<index_t>(tiny_prompt.size()));
    std::copy(tiny_prompt.begin(), tiny_prompt.end(), ids.data());
    auto ref = gpt.forward(ids);
    std::vector<float> want(ref.value().data(), ref.value().data() + ref.size());
    const double e = rel_err(all_logits(model, tiny_prompt), want);
    MESSAGE("vs nn::gpt: " << e);
    CHECK(e < 1e-5);
  }
}

TEST_CASE("perplexity follows llama.cpp's definition (numpy reference on tiny_f32)") {
  const auto ref = infer_test::read_keyed(infer_test::data_dir() + "/tiny_ppl.txt");
  std::vector<std::int32_t> ids;
  for (double x : ref.at("ids")) ids.push_back(static_cast<std::int32_t>(x));
  auto model = infer::load_gguf(infer_test::data_dir() + "/tiny_f32.gguf");
  const index_t ctx = static_cast<index_t>(ref.at("ctx")[0]);
  for (index_t batch : {index_t(512), index_t(5)}) {
    const infer::perplexity_result r = infer::perplexity(model, ids, ctx, -1, batch);
    MESSAGE("batch " << batch << ": PPL = " << r.ppl << " +/- " << r.error << " (numpy "
                     << ref.at("ppl")[0] << " +/- " << ref.at("ppl")[1] << ")");
    CHECK(r.count == static_cast<std::int64_t>(ref.at("ppl")[2]));
    CHECK(r.chunks == 2);
    CHECK(r.ppl == doctest::Approx(ref.at("ppl")[0]).epsilon(1e-5));
    CHECK(r.error == doctest::Approx(ref.at("ppl")[1]).epsilon(1e-4));
  }
  CHECK_THROWS_AS(infer::perplexity(model, std::span(ids).first(31), ctx), value_error);
}

TEST_CASE("the cache hands out views; sliding re-prefills the kept tokens") {
  auto model = infer::load_gguf(tiny_file(3, false, ggml_type::f32));
  infer::session s(model, {.context = 16, .batch = 4});
  std::vector<std::int32_t> ids{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  s.prefill(ids);
  const auto kv = s.cache().key_view(1);
  CHECK(kv.extent(0) == 2);
  CHECK(kv.extent(1) == 10);
  CHECK(kv.extent(2) == 8);
  CHECK(kv.data() == s.cache().keys(1));  // a view of the cache, not a copy
  CHECK(kv.strides()[0] == 16 * 8);
  CHECK_THROWS_AS(s.prefill(std::vector<std::int32_t>(7, 1)), index_error);  // 17 > 16

  // slide(keep) == a fresh session on the same kept tokens, bit for bit.
  auto slid = s.slide(4);
  std::vector<float> a(slid.begin(), slid.end());
  infer::session fresh(model, {.context = 16, .batch = 4});
  auto b = fresh.prefill(std::vector<std::int32_t>{7, 8, 9, 10});
  CHECK(s.position() == 4);
  CHECK(std::equal(a.begin(), a.end(), b.begin()));

  // generate() past the context slides instead of failing, and stays greedy-consistent.
  std::vector<std::int32_t> streamed;
  infer::generation_options go;
  go.session = {.context = 16, .batch = 4};
  auto out = infer::generate(
      model, ids, 30, {.temperature = 0}, [&](std::int32_t t) { streamed.push_back(t); }, go);
  CHECK(out.size() == 30);
  CHECK(out == streamed);
  // The first 6 new tokens fit the context: they equal step-by-step argmax decoding.
  infer::session g(model, {.context = 16});
  auto lg = g.prefill(ids);
  for (int i = 0; i < 6; ++i) {
    const auto t = static_cast<std::int32_t>(std::max_element(lg.begin(), lg.end()) - lg.begin());
    CHECK(out[static_cast<std::size_t>(i)] == t);
    lg = g.decode(t);
  }
  // a stop token ends the generation after emitting it
  go.stop_tokens = {out[2]};
  auto stopped = infer::generate(model, ids, 30, {.temperature = 0}, {}, go);
  CHECK(stopped.size() <= 3);
  CHECK(stopped.back() == out[2]);
}

TEST_CASE("sampling options reach the sampler: same seed, same tokens") {
  auto model = infer::load_gguf(tiny_file(5, true, ggml_type::f16));
  const std::vector<std::int32_t> p{1, 2, 3};
  infer::sampling_options so{.temperature = 0.9, .top_k = 20, .top_p = 0.9, .seed = 42};
  auto a = infer::generate(model, p, 12, so);
  auto b = infer::generate(model, p, 12, so);
  CHECK(a == b);
  so.seed = 43;
  CHECK(infer::generate(model, p, 12, so).size() == 12);
}

TEST_CASE("load errors name the file, the key or tensor") {
  infer_test::tiny_model m = infer_test::make_tiny(9, false, ggml_type::f32);
  const std::string dir = infer_test::work_dir();
  infer_test::write_tiny(m, dir + "/mamba.gguf", "mamba");
  CHECK_THROWS_WITH_AS(infer::load_gguf(dir + "/mamba.gguf"),
                       doctest::Contains("general.architecture 'mamba' is not supported"),
                       unsupported_error);
  infer_test::tiny_model missing = m;
  missing.w.erase("blk.1.ffn_up.weight");
  infer_test::write_tiny(missing, dir + "/missing.gguf");
  CHECK_THROWS_WITH_AS(infer::load_gguf(dir + "/missing.gguf"),
                       doctest::Contains("tensor 'blk.1.ffn_up.weight' is missing"), parse_error);
  infer_test::tiny_model wrong = m;
  wrong.shape["blk.0.attn_k.weight"] = {m.H * m.D, m.C};
  wrong.w["blk.0.attn_k.weight"].resize(static_cast<std::size_t>(m.H * m.D * m.C));
  infer_test::write_tiny(wrong, dir + "/wrong.gguf");
  CHECK_THROWS_WITH_AS(infer::load_gguf(dir + "/wrong.gguf"),
                       doctest::Contains("tensor 'blk.0.attn_k.weight' has ne = [32, 32]"),
                       shape_error);
  auto model = infer::load_gguf(tiny_file(9, false, ggml_type::f32));
  infer::session s(model);
  CHECK_THROWS_AS(s.decode(64), index_error);
  CHECK_THROWS_AS(s.prefill(std::vector<std::int32_t>{}), value_error);
}

TEST_CASE("the linear observer sees every product's input, in forward order") {
  const std::uint64_t seed = 5;
  MESSAGE("seed " << seed);
  auto model = infer::load_gguf(tiny_file(seed, false, ggml_type::f32));
  const auto& c = model.config();
  struct call {
    index_t layer;
    infer::linear_site site;
    index_t n, K;
    std::vector<float> x;
  };
  std::vector<call> calls;
  infer::session_options o;
  o.observer = [&](index_t l, infer::linear_site s, const float* x, index_t n, index_t K) {
    calls.push_back({l, s, n, K, std::vector<float>(x, x + n * K)});
  };
  infer::session s(model, o);
  s.prefill(tiny_prompt);
  auto lg = s.prefill(tiny_prompt);  // positions 9 .. 17: a second pass of calls
  const std::vector<float> logits(lg.begin(), lg.end());
  using S = infer::linear_site;
  const std::vector<S> order{S::q, S::k, S::v, S::o, S::up, S::gate, S::down};
  const std::size_t per_pass = static_cast<std::size_t>(c.n_layer) * order.size() + 1;
  REQUIRE(calls.size() == 2 * per_pass);
  const index_t n = static_cast<index_t>(tiny_prompt.size());
  for (std::size_t i = 0; i < per_pass; ++i) {
    const call& k = calls[i];
    const bool head = i + 1 == per_pass;
    CHECK(k.layer == (head ? -1 : static_cast<index_t>(i / order.size())));
    CHECK(k.site == (head ? S::head : order[i % order.size()]));
    CHECK(k.n == (head ? 1 : n));  // the head sees the last row only
    const index_t want_k = k.site == S::down ? c.ffn
                           : k.site == S::o  ? c.n_head * c.head_dim
                                             : c.n_embd;
    CHECK(k.K == want_k);
  }
  CHECK(infer::linear_site_name(S::down) == "ffn_down");
  // q, k, v see the same normed input; the observer changes nothing
  CHECK(calls[0].x == calls[1].x);
  CHECK(calls[0].x == calls[2].x);
  infer::session plain(model);
  plain.prefill(tiny_prompt);
  auto again = plain.prefill(tiny_prompt);
  CHECK(std::vector<float>(again.begin(), again.end()) == logits);
}
