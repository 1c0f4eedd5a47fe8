// SmolLM2-135M-Instruct (Q4_1 GGUF) loaded as a trainable nn::gpt (train/finetune.hpp): its
// logits against the inference engine on the same file (dequantized to f32, an independent
// forward: infer/transformer.hpp), and a LoRA step that lowers the loss of a fixed batch. Run by
// ctest as tfm_test_finetune_smollm2 (doctest::skip() in the main run); "TFM_SKIP:" when the
// model file is absent.
// Then whole runs on a tiny random llama GGUF written by io::export_gguf (always run): run_dpo
// (train/dpo_run.hpp) lowers the held-out DPO loss from log 2 and raises the implicit reward
// margin, and an interrupted + resumed run writes the bytes of an uninterrupted one (LoRA with
// dropout; full fine-tuning with the stored reference read back from the checkpoint); bad settings
// and malformed data are errors naming the flag, file and line; run_sft learns and resumes exactly.
#include "tfm_test.hpp"
#include "tiny_llama.hpp"

#include <typeformer/infer/model.hpp>
#include <typeformer/infer/session.hpp>
#include <typeformer/io/export.hpp>
#include <typeformer/nn/lora.hpp>
#include <typeformer/train/csv.hpp>
#include <typeformer/train/dpo_run.hpp>
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

#include <unistd.h>

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

// ---- whole runs on a tiny random llama GGUF (run_dpo, run_sft; always run) ---------------------

namespace {

namespace fs = std::filesystem;

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

/// A fresh directory under the temporary one, named by `what` and the seed.
fs::path run_dir(const std::string& what) {
  const fs::path d =
      fs::temp_directory_path() / ("tfm_" + what + "_" + std::to_string(tfm_test::seed()) + "_" +
                                   std::to_string(static_cast<long long>(::getpid())));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

/// A random tiny llama (byte vocabulary of 256, ChatML template as plain text) as a GGUF.
std::string tiny_gguf(const fs::path& dir) {
  const nn::dynamic_config c = tfm_test::tiny_llama(256, 32, 48);  // context 32
  const nn::gpt<nn::dynamic_config, float> m(c, tfm_test::seed());
  io::export_model e;
  e.config = c;
  e.weights = io::weights_of(m.parameters());
  e.tokenizer = io::byte_vocabulary();
  e.name = "tiny";
  e.eos = 10;  // "\n" ends a plain-text response
  e.chat_template =
      "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
  const std::string path = (dir / "tiny.gguf").string();
  io::export_gguf(e, path);
  return path;
}

/// n plain-text pairs whose chosen response is always " good" and rejected " bad": a preference
/// a tiny model learns and that holds on held-out prompts.
std::string tiny_pairs(const fs::path& dir, int n) {
  const fs::path p = dir / "pairs.jsonl";
  std::ofstream f(p);
  std::mt19937 g(static_cast<std::uint32_t>(tfm_test::seed()));
  std::uniform_int_distribution<int> d(10, 99);
  for (int i = 0; i < n; ++i)
    f << "{\"prompt\": \"" << d(g) << " and " << d(g)
      << "?\", \"chosen\": \" good\", \"rejected\": \" bad\"}\n";
  return p.string();
}

train::dpo_settings tiny_dpo(const std::string& model, const std::string& data,
                             const fs::path& out) {
  train::dpo_settings s;
  s.model = model;
  s.data = {data};
  s.eval_fraction = 0.2;
  s.out = out.string();
  s.max_length = 32;
  s.batch = 4;
  s.steps = 6;
  s.lr = 2e-2;
  s.warmup = 0;
  s.eval_interval = 3;
  s.quiet = true;
  s.lora.rank = 4;
  s.lora.alpha = 8;
  s.lora.dropout = 0.1;  // the resume must continue the dropout stream
  return s;
}

double cell(const train::csv_table& t, std::size_t row, const char* col) {
  const std::string& v = t.rows.at(row).at(t.column(col));
  return v.empty() ? std::nan("") : std::stod(v);
}

}  // namespace

TEST_CASE("dpo run: on a tiny llama the loss falls and the margin rises; a resume is exact") {
  MESSAGE("seed " << tfm_test::seed());
  const fs::path dir = run_dir("dpo_run");
  const std::string model = tiny_gguf(dir), data = tiny_pairs(dir, 40);
  train::dpo_settings s = tiny_dpo(model, data, dir / "a");
  REQUIRE(train::run_dpo(s) == 0);
  const auto t = train::read_csv((dir / "a" / "loss.csv").string());
  REQUIRE(t.rows.size() == 7);  // step 0 (evaluation) and 6 steps
  const double v0 = cell(t, 0, "val_loss"), v6 = cell(t, 6, "val_loss");
  const double m0 = cell(t, 0, "val_margin"), m6 = cell(t, 6, "val_margin");
  MESSAGE("held-out DPO loss " << v0 << " -> " << v6 << ", margin " << m0 << " -> " << m6
                               << ", accuracy " << cell(t, 6, "val_accuracy"));
  CHECK(v0 == doctest::Approx(std::log(2.0)).epsilon(1e-6));  // the policy is the reference
  CHECK(m0 == doctest::Approx(0).epsilon(1e-9));
  CHECK(v6 < v0 - 0.05);
  CHECK(m6 > m0 + 0.05);
  CHECK(cell(t, 6, "val_accuracy") == 1.0);
  CHECK(cell(t, 6, "train_margin") > cell(t, 1, "train_margin"));
  CHECK(std::isnan(cell(t, 1, "val_margin")));  // not evaluated at step 1
  for (const char* f : {"checkpoint.tfm", "adapter/adapter_model.safetensors",
                        "adapter/adapter_config.json", "adapter.gguf", "loss.svg", "margin.svg"})
    CHECK_MESSAGE(fs::exists(dir / "a" / f), f);
  // Interrupted after step 2 and resumed: the same adapter bytes and the same curve.
  s.out = (dir / "b").string();
  s.stop_after = 2;
  REQUIRE(train::run_dpo(s) == 0);
  CHECK(train::read_csv((dir / "b" / "loss.csv").string()).rows.size() == 3);
  s.stop_after = 0;
  s.resume = true;
  REQUIRE(train::run_dpo(s) == 0);
  CHECK(file_bytes(dir / "a" / "adapter" / "adapter_model.safetensors") ==
        file_bytes(dir / "b" / "adapter" / "adapter_model.safetensors"));
  CHECK(file_bytes(dir / "a" / "adapter.gguf") == file_bytes(dir / "b" / "adapter.gguf"));
  CHECK(file_bytes(dir / "a" / "loss.csv") == file_bytes(dir / "b" / "loss.csv"));
  fs::remove_all(dir);
}

TEST_CASE("dpo run: full fine-tuning, stored reference kept in the checkpoint; IPO; live") {
  MESSAGE("seed " << tfm_test::seed());
  const fs::path dir = run_dir("dpo_full");
  const std::string model = tiny_gguf(dir), data = tiny_pairs(dir, 24);
  train::dpo_settings s = tiny_dpo(model, data, dir / "a");
  s.method = train::finetune_method::full;
  s.lr = 2e-3;
  s.steps = 4;
  s.eval_interval = 2;
  REQUIRE(train::run_dpo(s) == 0);
  const auto t = train::read_csv((dir / "a" / "loss.csv").string());
  CHECK(cell(t, 4, "val_loss") < cell(t, 0, "val_loss"));
  CHECK(!fs::exists(dir / "a" / "adapter.gguf"));
  // The resumed run reads the stored reference of the original weights from the checkpoint.
  s.out = (dir / "b").string();
  s.stop_after = 1;
  REQUIRE(train::run_dpo(s) == 0);
  s.stop_after = 0;
  s.resume = true;
  REQUIRE(train::run_dpo(s) == 0);
  CHECK(file_bytes(dir / "a" / "loss.csv") == file_bytes(dir / "b" / "loss.csv"));
  // A checkpoint of a stored-reference run refuses --reference live.
  s.reference = train::dpo_reference::live;
  CHECK_THROWS_WITH_AS(train::run_dpo(s), doctest::Contains("--reference stored"), value_error);
  // IPO with a live reference (a frozen copy of the weights): starts at (1/(2 beta))^2.
  s.resume = false;
  s.out = (dir / "c").string();
  s.loss.kind = dpo_kind::ipo;
  s.loss.beta = 0.5;
  REQUIRE(train::run_dpo(s) == 0);
  const auto c = train::read_csv((dir / "c" / "loss.csv").string());
  CHECK(cell(c, 0, "val_loss") == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(cell(c, 4, "val_loss") < 1.0);
  fs::remove_all(dir);
}

TEST_CASE("dpo run: bad settings and data are errors naming the flag, file and line") {
  const fs::path dir = run_dir("dpo_bad");
  const std::string model = tiny_gguf(dir), data = tiny_pairs(dir, 8);
  const train::dpo_settings good = tiny_dpo(model, data, dir / "out");
  auto refused = [&](auto change, const char* text) {
    train::dpo_settings s = good;
    change(s);
    CHECK_THROWS_WITH_AS(train::run_dpo(s), doctest::Contains(text), value_error);
  };
  refused([](auto& s) { s.loss.beta = 0; }, "--beta must be positive");
  refused([](auto& s) { s.loss.label_smoothing = 0.6; }, "--label-smoothing must be in [0, 0.5]");
  refused(
      [](auto& s) {
        s.loss.kind = dpo_kind::hinge;
        s.loss.label_smoothing = 0.1;
      },
      "--loss sigmoid only");
  refused([](auto& s) { s.rpo_alpha = -1; }, "--rpo-alpha");
  refused([](auto& s) { s.max_length = 1; }, "--max-length");
  refused([](auto& s) { s.batch = 0; }, "--batch");
  refused([](auto& s) { s.lr = 0; }, "--lr");
  refused([](auto& s) { s.data.clear(); }, "--data");
  refused([](auto& s) { s.lora.rank = 0; }, "rank");
  refused([](auto& s) { s.eval_fraction = 1; }, "--eval-fraction");
  CHECK_THROWS_WITH_AS(train::parse_dpo_kind("kto"), doctest::Contains("sigmoid, ipo or hinge"),
                       value_error);
  CHECK_THROWS_AS(train::parse_dpo_reference("cached"), value_error);
  {
    train::dpo_settings s = good;
    s.resume = true;
    s.out = (dir / "nowhere").string();
    CHECK_THROWS_WITH_AS(train::run_dpo(s), doctest::Contains("checkpoint.tfm"), io_error);
  }
  {
    std::ofstream f(dir / "broken.jsonl");
    f << "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n\n{\"prompt\": \"a\"}\n";
  }
  train::dpo_settings s = good;
  s.data = {(dir / "broken.jsonl").string()};
  CHECK_THROWS_WITH_AS(train::run_dpo(s), doctest::Contains("broken.jsonl' line 3"), parse_error);
  fs::remove_all(dir);
}

TEST_CASE("finetune run: run_sft on a tiny llama GGUF learns and resumes exactly") {
  MESSAGE("seed " << tfm_test::seed());
  const fs::path dir = run_dir("sft_run");
  const std::string model = tiny_gguf(dir);
  {
    std::ofstream f(dir / "chats.jsonl");
    for (int i = 0; i < 30; ++i)
      f << "{\"messages\": [{\"role\": \"user\", \"content\": \"say " << i % 7
        << "\"}, {\"role\": \"assistant\", \"content\": \"ok " << i % 7 << "\"}]}\n";
  }
  train::sft_settings s;
  s.model = model;
  s.data = {(dir / "chats.jsonl").string()};
  s.eval_fraction = 0.2;
  s.block_size = 96;
  s.packing = train::sft_packing::none;
  s.batch = 4;
  s.steps = 4;
  s.lr = 1e-2;
  s.warmup = 0;
  s.quiet = true;
  s.lora.rank = 4;
  s.lora.dropout = 0.1;
  s.out = (dir / "a").string();
  REQUIRE(train::run_sft(s) == 0);
  const auto t = train::read_csv((dir / "a" / "loss.csv").string());
  CHECK(cell(t, t.rows.size() - 1, "val_loss") < cell(t, 0, "val_loss"));
  s.out = (dir / "b").string();
  s.stop_after = 2;
  REQUIRE(train::run_sft(s) == 0);
  s.stop_after = 0;
  s.resume = true;
  REQUIRE(train::run_sft(s) == 0);
  CHECK(file_bytes(dir / "a" / "adapter" / "adapter_model.safetensors") ==
        file_bytes(dir / "b" / "adapter" / "adapter_model.safetensors"));
  CHECK(file_bytes(dir / "a" / "loss.csv") == file_bytes(dir / "b" / "loss.csv"));
  // Full fine-tuning writes model.gguf: the checkpoint's trained parameters, bitwise, with the
  // source's tokenizer and chat template (train/finetune_export.hpp).
  s.method = train::finetune_method::full;
  s.lr = 1e-3;
  s.resume = false;
  s.out = (dir / "full").string();
  REQUIRE(train::run_sft(s) == 0);
  REQUIRE(fs::exists(dir / "full" / "model.gguf"));
  CHECK(!fs::exists(dir / "full" / "adapter.gguf"));
  const io::gguf_file src(model), out((dir / "full" / "model.gguf").string());
  auto trained = train::load_gguf_model(out);
  const auto base = train::load_gguf_model(src);
  auto from_ckpt = train::load_gguf_model(src);
  auto ps = from_ckpt.parameters();
  auto opt = optim::adamw(ps, {});
  (void)train::load_training_state((dir / "full" / "checkpoint.tfm").string(), ps, opt);
  const auto pt = trained.parameters(), pb = base.parameters();
  REQUIRE(pt.size() == ps.size());
  bool all_same = true, any_moved = false;
  for (std::size_t i = 0; i < pt.size(); ++i) {
    CAPTURE(pt[i].name);
    const index_t n = pt[i].data->size();
    REQUIRE(ps[i].data->size() == n);
    const float* a = pt[i].data->value.data();
    all_same = all_same && std::equal(a, a + n, ps[i].data->value.data());
    any_moved = any_moved || !std::equal(a, a + n, pb[i].data->value.data());
  }
  CHECK(all_same);
  CHECK(any_moved);
  CHECK(out.get<std::string>("tokenizer.chat_template") ==
        src.get<std::string>("tokenizer.chat_template"));
  CHECK(io::load_gguf_tokenizer(out).encode("say 3") ==
        io::load_gguf_tokenizer(src).encode("say 3"));
  fs::remove_all(dir);
}
