// SmolLM2-135M-Instruct (Q4_1 GGUF) loaded as a trainable nn::gpt (train/finetune.hpp): its
// logits against the inference engine on the same file (dequantized to f32, an independent
// forward: infer/transformer.hpp), and a LoRA step that lowers the loss of a fixed batch. Run by
// ctest as tfm_test_finetune_smollm2 (doctest::skip() in the main run); "TFM_SKIP:" when the
// model file is absent.
#include "tfm_test.hpp"

#include <typeformer/infer/model.hpp>
#include <typeformer/infer/session.hpp>
#include <typeformer/nn/lora.hpp>
#include <typeformer/train/finetune.hpp>
#include <typeformer/train/sft_run.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

using namespace tfm;

namespace {
using tfm_test::smollm2_path;
}  // namespace

TEST_CASE("finetune smollm2: nn::gpt from the GGUF equals the engine; a LoRA step learns" *
          doctest::skip()) {
  const std::string path = smollm2_path();
  if (!std::filesystem::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  auto m = train::load_gguf_model(path, 256);
  const auto& c = m.config();
  CHECK(c.n_layer == 30);
  CHECK(c.n_embd == 576);
  CHECK(c.n_head == 9);
  CHECK(c.n_kv_head == 3);
  CHECK(c.tie_embeddings);
  const std::vector<std::int32_t> prompt{1, 9690, 198,  2683, 359, 253,  5356, 5646, 11,
                                         2, 28,   1350, 314,  260, 3575, 282,  4649, 47};
  const auto T = static_cast<index_t>(prompt.size());
  train::pretrained_model::ids_type ids(dyn_shape<2>(1, T));
  for (index_t t = 0; t < T; ++t) ids(0, t) = prompt[static_cast<std::size_t>(t)];
  std::vector<float> ours;
  {
    no_grad ng;
    auto l = m.forward(ids);
    ours.assign(l.value().data(), l.value().data() + l.size());
  }
  infer::load_options lo;
  lo.quantized = infer::quantized_weights::f32;
  auto engine = load_model(path, lo);
  infer::session s(engine);
  const auto ref = s.prefill(prompt, true);
  REQUIRE(ref.size() == ours.size());
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(ours[i]) - ref[i]));
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  MESSAGE("nn::gpt vs engine logits over " << T << " positions: max |diff| " << worst
                                           << " (max |logit| " << scale << ")");
  CHECK(worst < 2e-3 * scale);

  // LoRA r 8 on all seven projections: three AdamW steps on the prompt lower its loss.
  nn::lora_config lc;
  lc.rank = 8;
  lc.alpha = 16;
  auto a = nn::make_lora(m, lc);
  nn::freeze(m);
  nn::attach(m, a);
  train::pretrained_model::ids_type x(dyn_shape<2>(1, T - 1)), y(dyn_shape<2>(1, T - 1));
  for (index_t t = 0; t + 1 < T; ++t) {
    x(0, t) = prompt[static_cast<std::size_t>(t)];
    y(0, t) = prompt[static_cast<std::size_t>(t + 1)];
  }
  optim::adam_options o;
  o.lr = 1e-3;
  auto opt = optim::adamw(a.parameters(), o);
  double first = 0, last = 0;
  for (int step = 0; step < 4; ++step) {
    opt.zero_grad();
    auto loss = m.loss(x, y, true);
    (step == 0 ? first : last) = loss.item();
    loss.backward();
    opt.step();
  }
  MESSAGE("LoRA on SmolLM2: loss " << first << " -> " << last << " in 3 steps");
  CHECK(last < first - 0.1);
}

TEST_CASE("finetune smollm2: run_sft learns, writes its files, and resumes exactly" *
          doctest::skip()) {
  namespace fs = std::filesystem;
  const std::string path = smollm2_path();
  if (!fs::exists(path)) {
    MESSAGE("TFM_SKIP: " << path << " is absent (scripts/setup fetches it; TFM_MODEL_DIR)");
    return;
  }
  const fs::path dir =
      fs::temp_directory_path() / ("tfm_sft_run_" + std::to_string(tfm_test::seed()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream f(dir / "add.jsonl");
    std::mt19937 g(static_cast<std::uint32_t>(tfm_test::seed()));
    std::uniform_int_distribution<int> d(100, 999);
    for (int i = 0; i < 60; ++i) {
      const int a = d(g), b = d(g);
      f << "{\"messages\": [{\"role\": \"user\", \"content\": \"What is " << a << " + " << b
        << "?\"}, {\"role\": \"assistant\", \"content\": \"" << a << " + " << b << " = " << a + b
        << "\"}]}\n";
    }
  }
  train::sft_settings s;
  s.model = path;
  s.data = {(dir / "add.jsonl").string()};
  s.eval_fraction = 0.2;
  s.block_size = 64;
  s.batch = 2;
  s.steps = 3;
  s.lr = 1e-3;
  s.warmup = 0;
  s.quiet = true;
  s.lora.rank = 4;
  s.out = (dir / "a").string();
  CHECK(train::run_sft(s) == 0);
  const auto curve = train::read_csv((dir / "a" / "loss.csv").string());
  REQUIRE(curve.rows.size() >= 2);
  const double v0 = std::stod(curve.rows.front()[3]), v3 = std::stod(curve.rows.back()[3]);
  MESSAGE("run_sft on addition chats: held-out loss " << v0 << " -> " << v3 << " in 3 steps");
  CHECK(v3 < v0);
  for (const char* f : {"checkpoint.tfm", "adapter/adapter_model.safetensors",
                        "adapter/adapter_config.json", "adapter.gguf", "loss.svg"})
    CHECK_MESSAGE(fs::exists(dir / "a" / f), f);
  // Interrupted after step 1 and resumed: the same adapter bytes.
  s.out = (dir / "b").string();
  s.stop_after = 1;
  CHECK(train::run_sft(s) == 0);
  s.stop_after = 0;
  s.resume = true;
  CHECK(train::run_sft(s) == 0);
  auto bytes = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  CHECK(bytes(dir / "a" / "adapter" / "adapter_model.safetensors") ==
        bytes(dir / "b" / "adapter" / "adapter_model.safetensors"));
  CHECK(bytes(dir / "a" / "loss.csv") == bytes(dir / "b" / "loss.csv"));
  fs::remove_all(dir);
}
