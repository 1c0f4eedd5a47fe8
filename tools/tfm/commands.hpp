// tools/tfm/commands.hpp: the table of tfm's subcommands (one cmd_<name>.cpp each).
#pragma once

#include "cli.hpp"

#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace tfm_cli {

int run_bench(const std::vector<std::string>& args);
int run_chat(const std::vector<std::string>& args);
int run_convert(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);
int run_imatrix(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_merge_lora(const std::vector<std::string>& args);
int run_perplexity(const std::vector<std::string>& args);
int run_quantize(const std::vector<std::string>& args);
int run_embed(const std::vector<std::string>& args);
int run_finetune(const std::vector<std::string>& args);
int run_dpo(const std::vector<std::string>& args);
int run_train(const std::vector<std::string>& args);
#if TFM_CLI_HAVE_SERVE
int run_serve(const std::vector<std::string>& args);
#else
// Built without cpp-httplib / nlohmann_json (tools/CMakeLists.txt, cmake/TfmHttp.cmake).
inline int run_serve(const std::vector<std::string>&) {
  throw std::runtime_error(
      "this tfm was built without cpp-httplib and nlohmann_json, so it cannot serve (Debian: "
      "apt-get install libcpp-httplib-dev nlohmann-json3-dev, then rebuild)");
}
#endif

inline std::span<const cli::command> commands() {
  static const cli::command table[] = {
      {"inspect", "metadata and tensor table of a GGUF or safetensors file", &run_inspect},
      {"embed", "sentence embeddings of stdin's lines with a BERT encoder (JSON per line)",
       &run_embed},
      {"convert", "a GGUF file's tensors as F32/F16/BF16, to GGUF or safetensors", &run_convert},
      {"quantize", "quantize a GGUF model (q8_0, q4_0, q4_k, ...) as llama-quantize does",
       &run_quantize},
      {"imatrix", "an importance matrix for tfm quantize --imatrix (llama-imatrix's GGUF form)",
       &run_imatrix},
      {"generate", "continue a prompt with a GGUF model (prints only the text)", &run_generate},
      {"chat", "talk to a GGUF model through its chat template", &run_chat},
      {"perplexity", "a GGUF model's perplexity on a text file (llama.cpp's definition)",
       &run_perplexity},
      {"merge-lora", "merge a LoRA adapter (PEFT directory or LoRA GGUF) into a llama GGUF",
       &run_merge_lora},
      {"bench", "prompt and generation tokens/s, as llama-bench reports them", &run_bench},
      {"train", "train a small GPT on text files and sample from it (resumable)", &run_train},
      {"finetune", "fine-tune a GGUF model on JSONL conversations (LoRA, QLoRA, full; resumable)",
       &run_finetune},
      {"dpo",
       "align a GGUF model on JSONL preference pairs (DPO, IPO; LoRA, QLoRA, full; resumable)",
       &run_dpo},
      {"serve", "an OpenAI-compatible HTTP server (completions, chat, embeddings, metrics)",
       &run_serve},
  };
  return table;
}

}  // namespace tfm_cli
