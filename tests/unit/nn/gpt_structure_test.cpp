// nn::gpt structure: parameter counts against published figures, stable unique names, the
// training summary, config validation, static and run-time configs building the same model.
#include <doctest/doctest.h>
#include <typeformer/typeformer.hpp>

#include <set>
#include <string>

using namespace tfm;

TEST_CASE("GPT-2 124M has the published parameter count") {
  // 124,439,808 parameters with tied embeddings (Radford et al. 2019; Hugging Face gpt2).
  nn::gpt<nn::gpt2_124m> m(nn::gpt2_124m{}, 1);
  auto s = m.summary(1024);
  CHECK(s.parameters == 124439808);
  CHECK(s.non_embedding == 124439808 - 1024 * 768);
  // 6N + 12 L C T (PaLM appendix B), KV cache 2 L G D * 4 bytes, Chinchilla 20 N.
  CHECK(s.train_flops_per_token == doctest::Approx(6.0 * 123653376 + 12.0 * 12 * 768 * 1024));
  CHECK(s.kv_cache_bytes_per_token == 2.0 * 12 * 12 * 64 * 4);
  CHECK(s.chinchilla_tokens == doctest::Approx(20.0 * 124439808));
}

TEST_CASE("parameter names follow the GPT-2 layout and are unique") {
  nn::gpt<nn::gpt2_tiny> m(nn::gpt2_tiny{}, 1);
  auto ps = m.parameters();
  std::set<std::string> names;
  for (auto& p : ps) CHECK(names.insert(p.name).second);
  for (const char* n :
       {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight",
        "h.0.attn.c_proj.bias", "h.3.mlp.c_fc.weight", "h.3.mlp.c_proj.weight", "ln_f.bias"})
    CHECK(names.count(n) == 1);
  CHECK(ps.size() == 2 + 4 * 12 + 2);
  // Biases and norm weights are excluded from weight decay; matrices are decayed.
  for (auto& p : ps) CHECK(p.decay == (p.data->extents.size() >= 2));
}

TEST_CASE("LLaMA style: RMSNorm, SwiGLU, RoPE, grouped KV heads, no biases, untied head") {
  nn::gpt<nn::llama_tiny> m(nn::llama_tiny{}, 1);
  auto ps = m.parameters();
  std::set<std::string> names;
  for (auto& p : ps) names.insert(p.name);
  CHECK(names.count("wpe.weight") == 0);
  CHECK(names.count("lm_head.weight") == 1);
  CHECK(names.count("h.0.mlp.gate.weight") == 1);
  CHECK(names.count("h.0.ln_1.bias") == 0);
  // qkv projection: (H + 2G) * D rows = (4 + 2*2) * 32.
  for (auto& p : ps)
    if (p.name == "h.0.attn.c_attn.weight")
      CHECK(p.data->extents == std::vector<index_t>{256, 128});
  // d = 128: per layer 4*128 (norms 2x128) ... check the total by formula.
  const index_t C = 128, F = 352, V = 256, L = 4, D = 32, H = 4, G = 2;
  const index_t per_layer = 2 * C + C * (H + 2 * G) * D + C * C + 3 * C * F;
  CHECK(m.summary(128).parameters == V * C + L * per_layer + C + V * C);
}

TEST_CASE("static and run-time configs build identical models") {
  nn::gpt<nn::gpt2_tiny> a(nn::gpt2_tiny{}, 7);
  nn::gpt<nn::dynamic_config> b(nn::to_dynamic(nn::gpt2_tiny{}), 7);
  auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CHECK(pa[i].name == pb[i].name);
    REQUIRE(pa[i].data->size() == pb[i].data->size());
    for (index_t k = 0; k < pa[i].data->size(); ++k)
      REQUIRE(pa[i].data->value.data()[k] == pb[i].data->value.data()[k]);
  }
  nn::gpt<nn::gpt2_tiny>::ids_type ids(2, 9);
  for (index_t i = 0; i < ids.size(); ++i)
    ids.data()[i] = static_cast<std::int32_t>((i * 37) % 256);
  auto la = a.forward(ids);
  auto lb = b.forward(ids);
  static_assert(std::is_same_v<decltype(la), var<float, shape<dyn, dyn, 256>>>);
  static_assert(std::is_same_v<decltype(lb), var<float, shape<dyn, dyn, dyn>>>);
  for (index_t i = 0; i < la.size(); ++i) REQUIRE(la.value().data()[i] == lb.value().data()[i]);
}

TEST_CASE("bad configs and inputs are rejected with a clear error") {
  nn::dynamic_config c;
  c.n_head = 3;  // 128 is not divisible by 3
  CHECK_THROWS_AS(nn::gpt<nn::dynamic_config>(c, 1), value_error);
  nn::gpt<nn::gpt2_tiny> m(nn::gpt2_tiny{}, 1);
  nn::gpt<nn::gpt2_tiny>::ids_type ids(1, 4);
  ids(0, 2) = 300;  // outside the vocabulary
  CHECK_THROWS_AS(m.forward(ids), index_error);
  nn::gpt<nn::gpt2_tiny>::ids_type longer(1, 129);  // beyond block_size 128
  CHECK_THROWS_AS(m.forward(longer), shape_error);
}
