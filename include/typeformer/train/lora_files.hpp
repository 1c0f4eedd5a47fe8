// typeformer/train/lora_files.hpp
//
// WHAT THIS REPRESENTS
//   The bridge between a trained nn::lora_adapter (nn/lora.hpp) and the adapter files other tools
//   load (io/lora_adapter.hpp: Hugging Face PEFT's adapter_model.safetensors +
//   adapter_config.json, and llama.cpp's LoRA GGUF):
//
//     tfm::io::save_peft(tfm::train::to_adapter_file(a, "SmolLM2-135M-Instruct"), "out",
//                        model.config());
//     auto b = tfm::train::from_adapter_file(model, tfm::io::load_lora("out", model.config()));
//     tfm::nn::attach(model, b);
//
//   The values are copied as they are: nn::gpt's q and k rows are in GGUF's (interleaved RoPE)
//   order, which is the order io::lora_pair::b holds them in; io/ converts for PEFT.
//
//   It lives in train/ because it joins nn/ (the adapter) and io/ (the files), which sit beside
//   each other in DESIGN.md's layers.
//
// ERRORS
//   tfm::value_error / shape_error naming the pair when a file's adapter does not fit the model
//   (a layer it lacks, another width, ranks that differ between modules).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/lora_adapter.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/nn/lora.hpp"

#include <cstring>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// The adapter's matrices and hyper-parameters as a file's contents.
inline io::lora_adapter_file to_adapter_file(const nn::lora_adapter<float>& a,
                                             std::string base_model = {}) {
  io::lora_adapter_file f;
  f.rank = a.config.rank;
  f.alpha = a.config.alpha;
  f.rslora = a.config.rslora;
  f.dropout = a.config.dropout;
  f.base_model = std::move(base_model);
  for (auto t : nn::parse_lora_targets(a.config.targets)) f.targets.push_back(t);
  for (const auto& s : a.sites)
    for (std::size_t i = 0; i < s.targets.size(); ++i) {
      const auto& part = s.update->parts[i];
      io::lora_pair p;
      p.layer = s.layer;
      p.target = s.targets[i];
      p.rank = part.a.extent(0);
      p.in = part.a.extent(1);
      p.out = part.b.extent(0);
      const float* av = part.a.data()->value.data();
      const float* bv = part.b.data()->value.data();
      p.a.assign(av, av + part.a.size());
      p.b.assign(bv, bv + part.b.size());
      f.pairs.push_back(std::move(p));
    }
  return f;
}

/// An adapter for `m` holding a file's matrices (not attached). Every pair must fit the model
/// and have the file's rank.
template <class Cfg>
nn::lora_adapter<float> from_adapter_file(nn::gpt<Cfg, float>& m, const io::lora_adapter_file& f) {
  nn::lora_config c;
  c.rank = f.rank;
  c.alpha = f.alpha;
  c.rslora = f.rslora;
  c.dropout = f.dropout;
  c.targets.clear();
  for (auto t : f.targets) c.targets.push_back(nn::to_string(t));
  if (c.targets.empty())
    for (const auto& p : f.pairs) c.targets.push_back(nn::to_string(p.target));
  auto a = nn::make_lora(m, c);
  std::vector<bool> seen;
  for (const auto& p : f.pairs) {
    lora_part<float>* part = a.find(p.layer, p.target);
    const std::string who = "layer " + std::to_string(p.layer) + " " + nn::to_string(p.target);
    if (part == nullptr)
      fail(errc::value, "tfm::train: the adapter file has a pair for ", who,
           ", which the model has no site for (", m.config().n_layer, " layers).");
    if (p.rank != part->a.extent(0) || p.in != part->a.extent(1) || p.out != part->b.extent(0) ||
        static_cast<index_t>(p.a.size()) != p.rank * p.in ||
        static_cast<index_t>(p.b.size()) != p.out * p.rank)
      fail(errc::shape, "tfm::train: the adapter file's ", who, " pair is A (", p.rank, ", ", p.in,
           "), B (", p.out, ", ", p.rank, ") but the model needs A (", part->a.extent(0), ", ",
           part->a.extent(1), "), B (", part->b.extent(0), ", ", part->b.extent(1), ").");
    std::memcpy(part->a.data()->value.data(), p.a.data(), p.a.size() * sizeof(float));
    std::memcpy(part->b.data()->value.data(), p.b.data(), p.b.size() * sizeof(float));
  }
  // Sites the file lacks keep B = 0: they add nothing, as in PEFT.
  return a;
}

}  // namespace train
TFM_END_NAMESPACE
