// tfm convert IN OUT [--type f32|f16|bf16]
//
// IN a GGUF file: rewrites its tensors in another element type, as a GGUF file (OUT ends in
// .gguf) or as a safetensors file (OUT ends in .safetensors); or, for a llama or gpt2 GGUF with
// a byte-level BPE vocabulary (io/export_gguf_import.hpp), as a Hugging Face model directory
// (an existing directory or a name without extension; the same directory io::export_hf writes
// for a checkpoint).
// IN a training checkpoint (checkpoint.tfm, or a run directory holding one, e.g. mini_gpt's
// --out): exports the trained model (io/export.hpp) as a GGUF file for llama.cpp (OUT ends in
// .gguf; architecture llama or gpt2) or as a Hugging Face model directory (a name without
// extension: config.json, model.safetensors, tokenizer.json, ...; LlamaForCausalLM or
// GPT2LMHeadModel).
// IN a Hugging Face directory (a directory holding config.json; LlamaForCausalLM or
// GPT2LMHeadModel with a byte-level BPE tokenizer.json): writes it as a GGUF file (OUT must end
// in .gguf; infer/hf_export_import.hpp): q/k rows of llama interleaved for ggml's rope, GPT-2's
// Conv1D weights transposed, as llama.cpp's convert_hf_to_gguf.py does.
//
// GGUF input: block-quantized tensors (Q4_0 ... Q8_K) are dequantized (bitwise as gguf-py
// dequantizes) and stored in --type; F32/F16/BF16 tensors are converted to --type. As
// llama.cpp's own converter does, 1-D tensors (norms, biases) stay F32 in a GGUF output. All
// metadata is copied; a GGUF output gets general.file_type for its type (0 all F32, 1 mostly
// F16, 32 mostly BF16). A safetensors output holds the tensors under their GGUF names with
// row-major shapes (ne reversed), and the GGUF's scalar and string metadata as "gguf.<key>"
// strings. Tensors are converted one at a time: memory stays near one tensor's float copy.
#include "cli.hpp"
#include "commands.hpp"

#include "typeformer/backend/cpu/half_simd.hpp"
#include "typeformer/infer/hf_export_import.hpp"
#include "typeformer/io/export.hpp"
#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/train/export.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace tfm_cli {
namespace {

using tfm::ggml_type;

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

ggml_type target_type(const std::string& name) {
  if (name == "f16") return ggml_type::f16;
  if (name == "bf16") return ggml_type::bf16;
  return ggml_type::f32;
}

// Integer and F64 tensors are not weights to convert: they are copied as they are.
bool passthrough(ggml_type t) {
  return t == ggml_type::i8 || t == ggml_type::i16 || t == ggml_type::i32 || t == ggml_type::i64 ||
         t == ggml_type::f64;
}

// The element type a tensor gets: 1-D tensors stay F32 in GGUF (llama.cpp's convention).
ggml_type output_type(const tfm::io::gguf_tensor_info& t, ggml_type target, bool gguf_out) {
  if (passthrough(t.type)) return t.type;
  if (gguf_out && t.n_dims <= 1) return ggml_type::f32;
  return target;
}

tfm::io::safetensors::dtype safetensors_dtype(ggml_type t) {
  namespace st = tfm::io::safetensors;
  switch (t) {
    case ggml_type::f16:
      return st::dtype::f16;
    case ggml_type::bf16:
      return st::dtype::bf16;
    case ggml_type::i8:
      return st::dtype::i8;
    case ggml_type::i16:
      return st::dtype::i16;
    case ggml_type::i32:
      return st::dtype::i32;
    case ggml_type::i64:
      return st::dtype::i64;
    case ggml_type::f64:
      return st::dtype::f64;
    default:
      return st::dtype::f32;
  }
}

// The tensor's elements in `type` (F32, F16 or BF16), appended to `out` as bytes.
void convert_tensor(const tfm::io::gguf_file& f, const tfm::io::gguf_tensor_info& t, ggml_type type,
                    std::vector<std::byte>& out, std::vector<float>& scratch) {
  const auto n = static_cast<std::size_t>(t.n_elements);
  const auto src = f.tensor_data(t);
  if (t.type == type) {  // already in the wanted type: copy the bytes
    out.assign(src.begin(), src.end());
    return;
  }
  scratch.resize(n);
  tfm::dequantize(t.type, src, std::span<float>(scratch));
  if (type == ggml_type::f32) {
    out.resize(n * sizeof(float));
    std::memcpy(out.data(), scratch.data(), out.size());
  } else if (type == ggml_type::f16) {
    out.resize(n * sizeof(tfm::f16));
    tfm::convert(scratch.data(), reinterpret_cast<tfm::f16*>(out.data()),
                 static_cast<tfm::index_t>(n));
  } else {
    out.resize(n * sizeof(tfm::bf16));
    tfm::convert(scratch.data(), reinterpret_cast<tfm::bf16*>(out.data()),
                 static_cast<tfm::index_t>(n));
  }
}

void check_convertible(const tfm::io::gguf_file& f) {
  for (const auto& t : f.tensors())
    if (!passthrough(t.type) && !tfm::ggml_type_info_of(t.type).dequantizable)
      tfm::fail(tfm::errc::unsupported, "tensor '", t.name, "' has type ",
                tfm::ggml_type_name(t.type), ", which this build cannot dequantize");
}

void to_gguf(const tfm::io::gguf_file& f, const std::string& out_path, ggml_type target) {
  tfm::io::gguf_writer w(out_path);
  const std::uint32_t file_type = target == ggml_type::f16 ? 1 : target == ggml_type::bf16 ? 32 : 0;
  for (const auto& kv : f.metadata()) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version") continue;
    w.add(kv.key, kv.value);
  }
  w.add("general.file_type", file_type);
  for (const auto& t : f.tensors())
    w.add_tensor_info(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims),
                      output_type(t, target, true));
  w.write_header();
  std::vector<std::byte> bytes;
  std::vector<float> scratch;
  for (const auto& t : f.tensors()) {
    convert_tensor(f, t, output_type(t, target, true), bytes, scratch);
    w.write_tensor_data(bytes);
  }
  w.finish();
}

void to_safetensors(const tfm::io::gguf_file& f, const std::string& out_path, ggml_type target) {
  namespace st = tfm::io::safetensors;
  st::writer w;
  for (const auto& kv : f.metadata()) {
    const auto type = kv.value.type();
    if (type == tfm::io::gguf_type::array) continue;
    std::string text;
    if (type == tfm::io::gguf_type::string)
      text = std::string(kv.value.as_string());
    else if (type == tfm::io::gguf_type::boolean)
      text = kv.value.as<bool>() ? "true" : "false";
    else if (type == tfm::io::gguf_type::float32 || type == tfm::io::gguf_type::float64)
      text = std::to_string(kv.value.as<double>());
    else if (type == tfm::io::gguf_type::int8 || type == tfm::io::gguf_type::int16 ||
             type == tfm::io::gguf_type::int32 || type == tfm::io::gguf_type::int64)
      text = std::to_string(kv.value.as<std::int64_t>());
    else
      text = std::to_string(kv.value.as<std::uint64_t>());
    w.set_metadata("gguf." + std::string(kv.key), std::move(text));
  }
  // The writer borrows the bytes until save(): keep every converted tensor alive.
  std::vector<std::vector<std::byte>> keep;
  keep.reserve(f.tensors().size());
  std::vector<float> scratch;
  for (const auto& t : f.tensors()) {
    const ggml_type type = output_type(t, target, false);
    keep.emplace_back();
    convert_tensor(f, t, type, keep.back(), scratch);
    w.add(std::string(t.name), safetensors_dtype(type), t.extents(), keep.back());
  }
  w.save(out_path);
}

// Whether OUT names a Hugging Face directory: an existing directory, or a name without an
// extension (so a typo such as OUT.bin is a usage error rather than a new directory).
bool hf_directory_out(const std::string& out) {
  std::error_code ec;
  if (std::filesystem::is_directory(out, ec)) return true;
  std::string s = out;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return !std::filesystem::path(s).has_extension();
}

// Whether `path` is a training checkpoint (a run directory, or a file starting "TFMCKPT1").
bool is_checkpoint(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return true;
  std::ifstream f(path, std::ios::binary);
  char magic[8] = {};
  f.read(magic, 8);
  return f.gcount() == 8 && std::string_view(magic, 8) == "TFMCKPT1";
}

// Exports a training checkpoint as GGUF (OUT ends in .gguf) or a Hugging Face directory.
std::string export_checkpoint(const std::string& in, const std::string& out, ggml_type type) {
  const tfm::io::export_model m = tfm::io::read_export_model(in);
  const bool llama = tfm::io::export_arch_of(m.config) == tfm::io::export_arch::llama;
  if (ends_with(out, ".gguf")) {
    tfm::io::export_gguf(m, out, {.type = type});
    return std::string("GGUF, architecture ") + (llama ? "llama" : "gpt2");
  }
  tfm::io::export_hf(m, out, {.type = type});
  return std::string("Hugging Face directory, ") + (llama ? "LlamaForCausalLM" : "GPT2LMHeadModel");
}

}  // namespace

int run_convert(const std::vector<std::string>& args) {
  cli::parser p(
      "tfm convert", "IN OUT",
      "rewrite a GGUF file's tensors as F32, F16 or BF16, into a GGUF (.gguf) or "
      "safetensors (.safetensors) file or a Hugging Face model directory (any other "
      "OUT; llama/gpt2 GGUFs), quantized tensors dequantized; or export a training "
      "checkpoint (checkpoint.tfm or its run directory) as GGUF (.gguf) or as a "
      "Hugging Face model directory (any other OUT); or a Hugging Face directory (config.json, "
      "byte-level BPE tokenizer.json) as GGUF (.gguf)");
  std::string type = "f32";
  p.choice("--type", {"f32", "f16", "bf16"}, "element type of the output's tensors", type);
  const auto files = p.parse(args);
  if (files.size() != 2) throw cli::usage_error("expects IN and OUT");
  const std::string &in = files[0], &out = files[1];
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // A Hugging Face directory holds config.json; a training run directory checkpoint.tfm.
  if (tfm::io::is_hf_directory(in) && !std::filesystem::exists(in + "/checkpoint.tfm")) {
    if (!ends_with(out, ".gguf"))
      throw cli::usage_error(
          "a Hugging Face directory converts to a .gguf file (GGUF -> safetensors or HF "
          "directory is the other direction), not to '" +
          out + "'");
    const tfm::io::export_model m = tfm::io::read_hf_export_model(in);
    tfm::io::export_gguf(m, out, {.type = target_type(type)});
    std::fprintf(
        stderr,
        "tfm convert: wrote %s (GGUF from a Hugging Face directory, %s, %s) in "
        "%.2f s\n",
        out.c_str(),
        tfm::io::export_arch_of(m.config) == tfm::io::export_arch::llama ? "llama" : "gpt2",
        type.c_str(), seconds());
    return 0;
  }
  if (is_checkpoint(in)) {
    if (!ends_with(out, ".gguf") && !hf_directory_out(out))
      throw cli::usage_error(
          "a checkpoint exports to a .gguf file or a Hugging Face directory (config.json, "
          "model.safetensors, tokenizer.json; a name without extension), not to '" +
          out + "'");
    const std::string what = export_checkpoint(in, out, target_type(type));
    std::fprintf(stderr, "tfm convert: wrote %s (%s, %s) in %.2f s\n", out.c_str(), what.c_str(),
                 type.c_str(), seconds());
    return 0;
  }
  const bool gguf_out = ends_with(out, ".gguf");
  if (!gguf_out && !ends_with(out, ".safetensors") && !hf_directory_out(out))
    throw cli::usage_error("OUT '" + out +
                           "' ends in neither .gguf nor .safetensors, and a Hugging Face "
                           "directory is named without an extension");
  const tfm::io::gguf_file f(in);
  check_convertible(f);
  if (!gguf_out && !ends_with(out, ".safetensors")) {  // a Hugging Face directory
    const tfm::io::export_model m = tfm::io::read_export_model(f);
    tfm::io::export_hf(m, out, {.type = target_type(type)});
    std::fprintf(
        stderr, "tfm convert: wrote %s (Hugging Face directory, %s, %s) in %.2f s\n", out.c_str(),
        tfm::io::export_arch_of(m.config) == tfm::io::export_arch::llama ? "LlamaForCausalLM"
                                                                         : "GPT2LMHeadModel",
        type.c_str(), seconds());
    return 0;
  }
  if (gguf_out)
    to_gguf(f, out, target_type(type));
  else
    to_safetensors(f, out, target_type(type));
  std::fprintf(stderr, "tfm convert: wrote %s (%zu tensors, %s) in %.2f s\n", out.c_str(),
               f.tensors().size(), type.c_str(), seconds());
  return 0;
}

}  // namespace tfm_cli
