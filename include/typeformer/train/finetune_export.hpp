// typeformer/train/finetune_export.hpp
//
// WHAT THIS REPRESENTS
//   The model of a full fine-tune written as a GGUF file that `tfm generate`, `tfm chat` and
//   llama.cpp load: the SOURCE GGUF the model was loaded from (train::load_gguf_model) with every
//   metadata key copied (general.*, <arch>.*, tokenizer.ggml.*, tokenizer.chat_template) and
//   every tensor, in the source's order and shape, holding the trained parameter's values:
//
//     const tfm::io::gguf_file src("SmolLM2-135M-Instruct.Q4_1.gguf");
//     auto m = tfm::train::load_gguf_model(src, 512);
//     ... train every parameter ...
//     tfm::train::save_finetuned_gguf(src, m, "run/model.gguf");              // F32
//     tfm::train::save_finetuned_gguf(src, m, "run/model-f16.gguf", {.type = tfm::ggml_type::f16});
//
//   The name map is train/finetune.hpp's (gguf_sources): q, k and v rows of h.N.attn.c_attn are
//   blk.N.attn_q / attn_k / attn_v, in GGUF's (interleaved RoPE) order, so no permutation. A
//   tied model (no lm_head) whose source still stores output.weight (a copy of token_embd) gets
//   output.weight = the trained wte. Source tensors no parameter maps to (e.g. rope_freqs) are
//   copied byte for byte. Writing goes through io::rewrite_gguf (io/export_gguf_import.hpp), the
//   writer of `tfm merge-lora`.
//
// TYPES
//   o.type nullopt: F32 and F16/BF16 source tensors keep their type, block-quantized ones (Q4_1,
//   ...) become F32 (a trained model is not re-quantized here; `tfm quantize` does that). o.type
//   f32 / f16 / bf16: every 2-D tensor in that type, 1-D tensors F32, general.file_type updated.
//
// CONTRACT
//   `m` has the parameters load_gguf_model(source) gives (f32 weights; block_size may differ:
//   the source's context_length is kept). An attached LoRA adapter is not part of the parameters:
//   merge it first (nn::merge) or write the adapter (train/lora_files.hpp). A QLoRA model (NF4
//   frozen weights) is refused naming the parameter, as is a model of another shape.
//
// ERRORS
//   tfm::value_error naming the parameter that maps to no tensor, tfm::shape_error naming the
//   parameter and tensor whose sizes differ, errors of io::rewrite_gguf (type, write failure).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/train/finetune.hpp"

#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// Options of save_finetuned_gguf (file comment, TYPES).
struct finetuned_gguf_options {
  std::optional<ggml_type> type;  ///< nullopt: keep F32/F16/BF16, block-quantized -> F32
};

/// Writes the parameters `ps` (nn::gpt names, f32) of a model loaded from `source` as the GGUF
/// `out` (file comment).
inline void save_finetuned_gguf(const io::gguf_file& source, const nn::parameter_list<float>& ps,
                                const std::string& out, const finetuned_gguf_options& o = {}) {
  const std::string who = "tfm::train::save_finetuned_gguf";
  const bool llama = source.get<std::string>("general.architecture") == "llama";
  struct slice {
    const float* values;
    std::size_t count;
  };
  std::map<std::string, slice, std::less<>> by_tensor;
  const float* wte = nullptr;
  bool has_head = false;
  for (const auto& p : ps) {
    const auto srcs = detail::finetune::gguf_sources(p.name, llama);
    if (srcs.empty())
      fail(errc::value, who, ": no tensor of '", source.name(), "' maps to parameter '", p.name,
           "'.");
    const auto want = static_cast<std::size_t>(p.data->size());
    const float* v = p.data->value.data();
    std::size_t at = 0;
    for (const auto& s : srcs) {
      const io::gguf_tensor_info* t = source.find_tensor(s);
      if (t == nullptr)
        fail(errc::value, who, ": '", source.name(), "': tensor '", s, "' of parameter '", p.name,
             "' is missing.");
      const auto n = static_cast<std::size_t>(t->n_elements);
      if (at + n > want)
        fail(errc::shape, who, ": parameter '", p.name, "' holds ", want, " values, fewer than '",
             source.name(), "' tensor '", s, "' and the tensors before it need (", at + n, ").");
      by_tensor[s] = {v + at, n};
      at += n;
    }
    if (at != want)
      fail(errc::shape, who, ": parameter '", p.name, "' holds ", want, " values, '", source.name(),
           "' has ", at, " for it.");
    if (p.name == "wte.weight") wte = v;
    if (p.name == "lm_head.weight") has_head = true;
  }
  // Tied: the source may still store the output matrix as a copy of token_embd.
  if (!has_head && wte != nullptr)
    if (const io::gguf_tensor_info* t = source.find_tensor("output.weight"); t != nullptr) {
      const auto n = static_cast<std::size_t>(t->n_elements);
      if (n != by_tensor.at("token_embd.weight").count)
        fail(errc::shape, who, ": '", source.name(),
             "': output.weight differs in size from token_embd.weight in a tied model.");
      by_tensor["output.weight"] = {wte, n};
    }
  // Every weight of the source must be written from the model (a QLoRA model has no f32
  // block weights; a model of fewer layers misses tensors).
  for (const auto& t : source.tensors()) {
    const bool weight = t.name.rfind("blk.", 0) == 0 || t.name.rfind("token_embd.", 0) == 0 ||
                        t.name.rfind("position_embd.", 0) == 0 ||
                        t.name.rfind("output_norm.", 0) == 0 || t.name == "output.weight";
    if (weight && by_tensor.count(t.name) == 0)
      fail(errc::value, who, ": '", source.name(), "': tensor '", t.name,
           "' has no f32 parameter in the model (a QLoRA model's NF4 weights, or a model of "
           "another shape?).");
  }
  io::rewrite_gguf(
      source, out, [&](const io::gguf_tensor_info& t) { return by_tensor.count(t.name) != 0; },
      [&](const io::gguf_tensor_info& t, std::vector<float>& v) {
        const slice& s = by_tensor.find(t.name)->second;
        std::memcpy(v.data(), s.values, s.count * sizeof(float));
      },
      {.type = o.type}, who);
}

/// The same for a model (its parameters()).
template <class Model>
void save_finetuned_gguf(const io::gguf_file& source, const Model& m, const std::string& out,
                         const finetuned_gguf_options& o = {}) {
  save_finetuned_gguf(source, m.parameters(), out, o);
}

}  // namespace train
TFM_END_NAMESPACE
