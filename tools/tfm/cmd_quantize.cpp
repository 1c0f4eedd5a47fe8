// tfm quantize IN.gguf OUT.gguf TYPE [-t THREADS] [--json]
//
// Quantizes a GGUF model as llama.cpp's `llama-quantize IN OUT TYPE` does by default (round to
// nearest, no importance matrix): TYPE q8_0, q4_0, q4_1, q5_0, q5_1, q4_k (= q4_k_m), q6_k, f16,
// bf16, f32, case-insensitive. Which tensor gets which type, the metadata and the threading are
// the library's (typeformer/quant/file_quantize.hpp, docs/quantization.md "tfm quantize").
// Prints one line per tensor (name, ne, type in -> out, RMSE of the dequantized output against
// the input, bytes) and the totals; --json prints the same as one JSON object.
#include "cli.hpp"
#include "commands.hpp"

#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/file_quantize.hpp"

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace tfm_cli {
namespace {

std::string ne_text(const std::vector<std::int64_t>& ne) {
  std::string s = "[";
  for (std::size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

std::string num(double v, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

void print_table(const tfm::quantize_gguf_report& r, const std::string& in, const std::string& out,
                 int threads) {
  std::printf("%-34s %-14s %-6s    %-6s %10s %12s %12s\n", "tensor", "ne", "in", "out", "rmse",
              "bytes in", "bytes out");
  for (const auto& t : r.tensors) {
    const std::string in_name(tfm::ggml_type_name(t.in)), out_name(tfm::ggml_type_name(t.out));
    std::printf("%-34s %-14s %-6s -> %-6s %10.3e %12llu %12llu%s%s\n", t.name.c_str(),
                ne_text(t.ne).c_str(), in_name.c_str(), out_name.c_str(), t.rmse,
                static_cast<unsigned long long>(t.bytes_in),
                static_cast<unsigned long long>(t.bytes_out), t.note.empty() ? "" : "  ",
                t.note.c_str());
  }
  std::printf("\n%s -> %s: %s (general.file_type %u), %zu tensors, %d thread%s, %.2f s\n",
              in.c_str(), out.c_str(), std::string(r.preset->name).c_str(), r.preset->file_type,
              r.tensors.size(), threads, threads == 1 ? "" : "s", r.seconds);
  std::printf("file size: %.2f MiB -> %.2f MiB\n", double(r.file_bytes_in) / 1048576.0,
              double(r.file_bytes_out) / 1048576.0);
  std::printf("tensor data: %.2f MiB (%.2f bits per weight) -> %.2f MiB (%.2f bits per weight)\n",
              double(r.tensor_bytes_in) / 1048576.0, r.bpw_in(),
              double(r.tensor_bytes_out) / 1048576.0, r.bpw_out());
  if (r.requantized)
    std::printf("note: the input holds quantized tensors; they were dequantized first\n");
  if (r.n_fallback > 0)
    std::printf(
        "note: %d tensor(s) have rows that are not whole blocks of the wanted type and "
        "got a fallback type\n",
        r.n_fallback);
}

void print_json(const tfm::quantize_gguf_report& r, const std::string& in, const std::string& out,
                int threads) {
  std::string s =
      "{\"input\": " + cli::json_quote(in) + ", \"output\": " + cli::json_quote(out) +
      ", \"type\": " + cli::json_quote(r.preset->name) +
      ", \"file_type\": " + std::to_string(r.preset->file_type) +
      ", \"threads\": " + std::to_string(threads) + ", \"seconds\": " + num(r.seconds, "%.4f") +
      ", \"file_bytes_in\": " + std::to_string(r.file_bytes_in) +
      ", \"file_bytes_out\": " + std::to_string(r.file_bytes_out) +
      ", \"tensor_bytes_in\": " + std::to_string(r.tensor_bytes_in) +
      ", \"tensor_bytes_out\": " + std::to_string(r.tensor_bytes_out) +
      ", \"n_elements\": " + std::to_string(r.n_elements) +
      ", \"bpw_in\": " + num(r.bpw_in(), "%.4f") + ", \"bpw_out\": " + num(r.bpw_out(), "%.4f") +
      ", \"requantized\": " + (r.requantized ? "true" : "false") +
      ", \"n_fallback\": " + std::to_string(r.n_fallback) + ", \"tensors\": [";
  for (std::size_t i = 0; i < r.tensors.size(); ++i) {
    const auto& t = r.tensors[i];
    std::string ne = "[";
    for (std::size_t d = 0; d < t.ne.size(); ++d) ne += (d ? ", " : "") + std::to_string(t.ne[d]);
    ne += "]";
    s += std::string(i ? ", " : "") + "{\"name\": " + cli::json_quote(t.name) + ", \"ne\": " + ne +
         ", \"type_in\": " + cli::json_quote(tfm::ggml_type_name(t.in)) +
         ", \"type_out\": " + cli::json_quote(tfm::ggml_type_name(t.out)) +
         ", \"rmse\": " + num(t.rmse, "%.9g") + ", \"bytes_in\": " + std::to_string(t.bytes_in) +
         ", \"bytes_out\": " + std::to_string(t.bytes_out) +
         ", \"note\": " + cli::json_quote(t.note) + "}";
  }
  s += "]}\n";
  std::fputs(s.c_str(), stdout);
}

}  // namespace

int run_quantize(const std::vector<std::string>& args) {
  cli::parser p("tfm quantize", "IN.gguf OUT.gguf TYPE",
                "quantize a GGUF model as llama-quantize does (round to nearest, llama.cpp's "
                "per-tensor type rules); TYPE is one of " +
                    tfm::quantize_preset_names() + " (case-insensitive)");
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
  p.option("-t", "N", "threads (same bytes for any count)", threads);
  p.option("--threads", "N", "the same as -t", threads);
  p.flag("--json", "print the report as one JSON object", json);
  p.epilog(
      "1-D tensors and norms keep their type; output.weight (or token_embd.weight when the "
      "embeddings are tied) gets Q6_K, or Q8_0 when its rows are not whole 256-blocks; q4_k "
      "gives attn_v and ffn_down Q6_K on llama.cpp's 'more bits' layers; rows that are not whole "
      "blocks fall back (Q4_K -> Q5_0, Q6_K -> Q8_0, else F16). Quantized inputs are "
      "dequantized first. See docs/quantization.md.\n");
  const auto pos = p.parse(args);
  if (pos.size() != 3) throw cli::usage_error("expects IN.gguf, OUT.gguf and TYPE");
  if (threads < 1) throw cli::usage_error("-t needs at least 1 thread");
  const tfm::quantize_preset* preset = tfm::find_quantize_preset(pos[2]);
  if (preset == nullptr)
    throw cli::usage_error("unknown TYPE '" + pos[2] + "' (one of " + tfm::quantize_preset_names() +
                           ")");
  const tfm::io::gguf_file f(pos[0]);
  const auto report = tfm::quantize_gguf(f, pos[1], *preset, {.threads = threads});
  if (json)
    print_json(report, pos[0], pos[1], threads);
  else
    print_table(report, pos[0], pos[1], threads);
  return 0;
}

}  // namespace tfm_cli
