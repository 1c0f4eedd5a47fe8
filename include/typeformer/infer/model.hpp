// typeformer/infer/model.hpp
//
// WHAT THIS REPRESENTS
//   The tape-free inference engine in one include: load a pretrained decoder from a GGUF file
//   (architectures llama, gpt2) or a Hugging Face directory (LlamaForCausalLM, GPT2LMHeadModel;
//   infer/hf_model.hpp), run it, generate, measure perplexity.
//
//     auto model = tfm::load_model("SmolLM2-135M-Instruct.Q4_1.gguf");   // infer::transformer
//     auto hf = tfm::load_model("gpt2/");            // config.json + model.safetensors
//     model.config().n_layer;  model.file()->get<std::string_view>("general.name");
//     auto ids = tfm::infer::generate(model, prompt, 16, {.temperature = 0});
//     auto r = tfm::infer::perplexity(model, tokens, 512);               // r.ppl, r.error
//
//   Pieces: infer/model_config.hpp (config and its GGUF keys), infer/weights.hpp (borrowed, packed
//   or dequantized weights), infer/transformer.hpp (the model), infer/kv_store.hpp (the cache),
//   infer/session.hpp (prefill/decode), infer/run.hpp (generate, perplexity); kernels in
//   backend/reference/decoder.hpp and backend/cpu/decoder.hpp.
#pragma once

#include "typeformer/infer/hf_model.hpp"
#include "typeformer/infer/kv_store.hpp"
#include "typeformer/infer/model_config.hpp"
#include "typeformer/infer/run.hpp"
#include "typeformer/infer/sampler.hpp"
#include "typeformer/infer/session.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/infer/weights.hpp"

#include <filesystem>
#include <string>

TFM_BEGIN_NAMESPACE

/// Loads a pretrained model for the cpu backend: a GGUF file (architecture llama or gpt2) or a
/// Hugging Face directory (config.json + safetensors). The model comes with its config, its load
/// figures (stats()) and its metadata as GGUF keys (file(); for a directory, what a conversion
/// to GGUF would write, tokenizer included when it maps: infer/hf_model.hpp).
/// `options` applies to GGUF files (quantized weights packed, the default, or dequantized to f32).
inline infer::transformer<float, cpu> load_model(const std::string& path,
                                                 const infer::load_options& options = {}) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return infer::load_hf_dir(path);
  return infer::load_gguf(path, options);
}

TFM_END_NAMESPACE
