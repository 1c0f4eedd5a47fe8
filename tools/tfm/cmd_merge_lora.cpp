// tfm merge-lora BASE.gguf ADAPTER OUT.gguf [--type keep|f32|f16|bf16] [--scale X]
//
// Merges a LoRA adapter into a llama GGUF model: W += X * scale * B A for every adapted
// projection (io/lora_adapter.hpp merge_lora_gguf; scale = alpha / r, or alpha / sqrt(r) with
// rsLoRA), where ADAPTER is a Hugging Face PEFT directory (adapter_config.json +
// adapter_model.safetensors, B's q/k rows converted from rotate_half order) or a llama.cpp LoRA
// GGUF (general.type = adapter). X (--scale, default 1) multiplies the adapter's scale as
// llama.cpp's --lora-scaled does; --scale -1 on a merged model removes the adapter again (within
// rounding). All metadata (tokenizer, chat template) is copied. With --type keep (the default),
// tensors the adapter does not touch are copied byte for byte and adapted ones keep F32/F16/BF16 (a
// block-quantized adapted tensor becomes F32); with --type every 2-D tensor is written in that
// type, 1-D ones stay F32, and general.file_type says so (as tfm convert does).
// Exit status 2 for bad flags and missing input files, 1 for files that cannot be used (the
// message names the file and the field or tensor).
#include "cli.hpp"
#include "commands.hpp"

#include "typeformer/io/gguf.hpp"
#include "typeformer/io/lora_adapter.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace tfm_cli {

int run_merge_lora(const std::vector<std::string>& args) {
  cli::parser p("tfm merge-lora", "BASE.gguf ADAPTER OUT.gguf",
                "merge a LoRA adapter (PEFT directory or llama.cpp LoRA GGUF) into a llama "
                "GGUF model");
  std::string type = "keep";
  double scale = 1;
  p.choice("--type", {"keep", "f32", "f16", "bf16"},
           "element type of every 2-D tensor of OUT; keep: the base's types", type);
  p.option("--scale", "X", "multiplies the adapter's alpha / r (-1 unmerges)", scale);
  const auto files = p.parse(args);
  if (files.size() != 3) throw cli::usage_error("expects BASE.gguf, ADAPTER and OUT.gguf");
  const std::string &base_path = files[0], &adapter_path = files[1], &out = files[2];
  if (!std::isfinite(scale)) throw cli::usage_error("--scale must be a finite number");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(base_path, ec))
    throw cli::usage_error("BASE '" + base_path + "' is not a file");
  if (!std::filesystem::exists(adapter_path, ec))
    throw cli::usage_error("ADAPTER '" + adapter_path +
                           "' does not exist (a PEFT directory or a LoRA .gguf file)");
  if (out.size() < 5 || out.compare(out.size() - 5, 5, ".gguf") != 0)
    throw cli::usage_error("OUT '" + out + "' must end in .gguf");
  if (std::filesystem::equivalent(base_path, out, ec))
    throw cli::usage_error("OUT is BASE; write the merged model to another file");

  const auto start = std::chrono::steady_clock::now();
  const tfm::io::gguf_file base(base_path);
  const tfm::nn::dynamic_config c = tfm::io::lora_base_config(base);
  const tfm::io::lora_adapter_file f = tfm::io::load_lora(adapter_path, c);
  tfm::io::merge_gguf_options o;
  o.scale = scale;
  if (type == "f32") o.type = tfm::ggml_type::f32;
  if (type == "f16") o.type = tfm::ggml_type::f16;
  if (type == "bf16") o.type = tfm::ggml_type::bf16;
  tfm::io::merge_lora_gguf(base, f, out, o);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "tfm merge-lora: wrote %s (%zu adapted projections, rank %lld, scale %g x %g, "
               "%s) in %.2f s\n",
               out.c_str(), f.pairs.size(), static_cast<long long>(f.rank), f.scale(), scale,
               type == "keep" ? "base types kept" : type.c_str(), secs);
  return 0;
}

}  // namespace tfm_cli
