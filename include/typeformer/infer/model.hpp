// typeformer/infer/model.hpp
//
// WHAT THIS REPRESENTS
//   The tape-free inference engine in one include: load a pretrained decoder from a GGUF file,
//   run it, generate, measure perplexity.
//
//     auto model = tfm::load_model("SmolLM2-135M-Instruct.Q4_1.gguf");   // infer::transformer
//     model.config().n_layer;  model.file()->get<std::string_view>("general.name");
//     auto ids = tfm::infer::generate(model, prompt, 16, {.temperature = 0});
//     auto r = tfm::infer::perplexity(model, tokens, 512);               // r.ppl, r.error
//
//   Pieces: infer/model_config.hpp (config and its GGUF keys), infer/weights.hpp (borrowed or
//   dequantized weights), infer/transformer.hpp (the model), infer/kv_store.hpp (the cache),
//   infer/session.hpp (prefill/decode), infer/run.hpp (generate, perplexity); kernels in
//   backend/reference/decoder.hpp and backend/cpu/decoder.hpp.
#pragma once

#include "typeformer/infer/kv_store.hpp"
#include "typeformer/infer/model_config.hpp"
#include "typeformer/infer/run.hpp"
#include "typeformer/infer/sampler.hpp"
#include "typeformer/infer/session.hpp"
#include "typeformer/infer/transformer.hpp"
#include "typeformer/infer/weights.hpp"

#include <string>

TFM_BEGIN_NAMESPACE

/// Loads a pretrained model file (GGUF, architecture llama) for the cpu backend: the model with
/// its config, its load figures (stats()) and the open file's metadata (file()).
inline infer::transformer<float, cpu> load_model(const std::string& path) {
  return infer::load_gguf(path);
}

TFM_END_NAMESPACE
