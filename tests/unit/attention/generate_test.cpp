// KV-cached generation equals uncached recomputation token for token (greedy and sampled), for a
// GPT-2 style and a LLaMA style (RoPE, GQA) model; the cache rejects out-of-order positions.
#include <doctest/doctest.h>
#include <typeformer/infer/generate.hpp>
#include <typeformer/typeformer.hpp>

using namespace tfm;

TEST_CASE_TEMPLATE("cached and uncached generation agree", Cfg, nn::gpt2_tiny, nn::llama_tiny) {
  nn::gpt<Cfg> m(Cfg{}, 5);
  std::vector<std::int32_t> prompt{10, 20, 30, 40, 50};
  infer::generate_options cached, uncached;
  uncached.use_cache = false;
  infer::sampling_options greedy;
  greedy.temperature = 0;
  MESSAGE("model seed 5, sampler seed 3");
  CHECK(infer::generate(m, prompt, 40, greedy, cached) ==
        infer::generate(m, prompt, 40, greedy, uncached));
  infer::sampling_options s;
  s.temperature = 0.9;
  s.top_k = 20;
  s.top_p = 0.9;
  s.seed = 3;
  auto a = infer::generate(m, prompt, 30, s, cached);
  CHECK(a == infer::generate(m, prompt, 30, s, uncached));
  CHECK(a.size() == prompt.size() + 30);
}

TEST_CASE("the KV cache rejects a gap in positions") {
  nn::gpt<nn::gpt2_tiny> m(nn::gpt2_tiny{}, 1);
  auto cache = infer::kv_cache<float>::for_model(m, 1);
  nn::gpt<nn::gpt2_tiny>::ids_type ids(1, 4);
  (void)m.forward(ids, false, 0, &cache);
  CHECK(cache.length() == 4);
  CHECK_THROWS_AS(m.forward(ids, false, 9, &cache), index_error);
}
