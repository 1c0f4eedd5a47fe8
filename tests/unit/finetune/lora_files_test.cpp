// A trained nn adapter through the files other tools load (train/lora_files.hpp over
// io/lora_adapter.hpp): PEFT directory and llama.cpp LoRA GGUF round trips give the same logits
// bitwise, and merging the file into the exported weights (io::merge) equals nn::merge.
#include "tfm_test.hpp"
#include "tiny_llama.hpp"

#include <typeformer/io/export.hpp>
#include <typeformer/nn/lora.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/train/lora_files.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

using namespace tfm;

namespace {
nn::dynamic_config tiny() {
  auto c = tfm_test::tiny_llama(53, 32, 40, true);
  c.block_size = 16;
  return c;
}
using model_t = nn::gpt<nn::dynamic_config, float>;

std::vector<float> logits_of(const model_t& m, const model_t::ids_type& ids) {
  no_grad ng;
  auto l = m.forward(ids);
  return {l.value().data(), l.value().data() + l.size()};
}
}  // namespace

TEST_CASE("lora files: PEFT and GGUF round trips of a trained adapter keep the logits") {
  auto g = tfm_test::rng(31);
  model_t m(tiny(), 5);
  model_t::ids_type x(dyn_shape<2>(2, 10)), y(dyn_shape<2>(2, 10));
  std::uniform_int_distribution<int> d(0, 52);
  for (index_t i = 0; i < x.size(); ++i) {
    x.data()[i] = d(g);
    y.data()[i] = d(g);
  }
  nn::lora_config lc;
  lc.rank = 4;
  lc.alpha = 12;
  lc.targets = {"q", "k", "o", "up", "down"};
  auto a = nn::make_lora(m, lc);
  nn::freeze(m);
  nn::attach(m, a);
  optim::adam_options o;
  o.lr = 2e-2;
  auto opt = optim::adamw(a.parameters(), o);
  for (int s = 0; s < 8; ++s) {
    opt.zero_grad();
    auto l = m.loss(x, y, true);
    l.backward();
    opt.step();
  }
  const auto trained = logits_of(m, x);
  const auto file = train::to_adapter_file(a, "tiny");
  CHECK(file.pairs.size() == 2 * 5);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("tfm_lora_files_" + std::to_string(tfm_test::seed()));
  std::filesystem::create_directories(dir);
  io::save_peft(file, (dir / "peft").string(), m.config());
  io::save_lora_gguf(file, (dir / "a.gguf").string(), m.config());
  for (const std::string& path : {(dir / "peft").string(), (dir / "a.gguf").string()}) {
    auto b = train::from_adapter_file(m, io::load_lora(path, m.config()));
    nn::attach(m, b);
    CHECK_MESSAGE(logits_of(m, x) == trained, path);
  }
  // io::merge on the exported weights equals nn::merge on the model.
  io::export_model em;
  em.config = m.config();
  em.weights = io::weights_of(m.parameters());
  io::merge(em, file);
  nn::attach(m, a);
  nn::merge(m, a);
  double worst = 0;
  for (const auto& p : m.parameters()) {
    const auto& t = em.weights.at(p.name);
    for (index_t i = 0; i < p.data->size(); ++i)
      worst = std::max(worst, std::abs(double(p.data->value.data()[i]) -
                                       double(t.values[static_cast<std::size_t>(i)])));
  }
  MESSAGE("io::merge vs nn::merge: max |diff| " << worst);
  CHECK(worst < 1e-6);
  // A file for another model does not load into this one.
  auto wide = tiny();
  wide.n_embd = 64;
  wide.ffn = 80;
  model_t mw(wide, 1);
  CHECK_THROWS(train::from_adapter_file(mw, file));
  std::filesystem::remove_all(dir);
}
