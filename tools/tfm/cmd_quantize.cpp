// tfm quantize IN.gguf OUT.gguf TYPE [--imatrix FILE] [--calib TEXT --method M] [-t THREADS]
//              [--json]
//
// Quantizes a GGUF model as llama.cpp's `llama-quantize [--imatrix FILE] IN OUT TYPE` does:
// TYPE q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m (q3_k), q3_k_l, q4_k_s, q4_k_m (q4_k),
// q5_k_s, q5_k_m (q5_k), q6_k, f16, bf16, f32, case-insensitive. --imatrix reads llama.cpp's
// importance matrix (GGUF or legacy .dat, e.g. from `tfm imatrix` or llama-imatrix) and gives
// each tensor's importance vector to the quantizers that use one. Which tensor gets which type, the
// metadata and the threading are the library's (typeformer/quant/file_quantize.hpp,
// docs/quantization.md "tfm quantize"). Prints one line per tensor (name, ne, type in -> out, RMSE
// of the dequantized output against the input, bytes) and the totals; --json prints the same as one
// JSON object.
//
// --calib TEXT --method gptq|awq|awq+gptq|rtn quantizes the linear layers (attn_q/k/v/output,
// ffn_gate/up/down) with GPTQ / AWQ calibrated on TEXT (typeformer/quant/calibrated_quantize.hpp);
// TYPE q4_0, q4_1, i4_g64, i4_g128 (the 4-bit grids those methods fill). The rest of the file is
// what the preset gives. It prints one line per tensor with the method used and its RMSE.
#include "cli.hpp"
#include "commands.hpp"

#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/quant/calibrated_quantize.hpp"
#include "typeformer/quant/file_quantize.hpp"
#include "typeformer/train/data.hpp"

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
  std::printf("%-34s %-14s %-6s    %-6s %10s %4s %12s %12s\n", "tensor", "ne", "in", "out", "rmse",
              "imat", "bytes in", "bytes out");
  for (const auto& t : r.tensors) {
    const std::string in_name(tfm::ggml_type_name(t.in)), out_name(tfm::ggml_type_name(t.out));
    std::printf("%-34s %-14s %-6s -> %-6s %10.3e %4s %12llu %12llu%s%s\n", t.name.c_str(),
                ne_text(t.ne).c_str(), in_name.c_str(), out_name.c_str(), t.rmse,
                t.imatrix ? "yes" : "-", static_cast<unsigned long long>(t.bytes_in),
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
  if (r.n_imatrix > 0)
    std::printf("imatrix: %d tensor(s) quantized with their importance vector\n", r.n_imatrix);
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
      ", \"n_fallback\": " + std::to_string(r.n_fallback) +
      ", \"n_imatrix\": " + std::to_string(r.n_imatrix) + ", \"tensors\": [";
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
         ", \"imatrix\": " + (t.imatrix ? "true" : "false") +
         ", \"note\": " + cli::json_quote(t.note) + "}";
  }
  s += "]}\n";
  std::fputs(s.c_str(), stdout);
}

/// --calib: GPTQ / AWQ through quant::quantize_gguf_calibrated.
int run_calibrated(const std::string& in, const std::string& out, const tfm::quantize_preset& p,
                   const std::string& calib, const std::string& method_name, int threads,
                   tfm::index_t calib_tokens, bool json) {
  const auto method = tfm::quant::parse_quant_method(method_name);
  if (!method)
    throw cli::usage_error("unknown --method '" + method_name + "' (rtn, gptq, awq, awq+gptq)");
  if (p.base != tfm::ggml_type::q4_0 && p.base != tfm::ggml_type::q4_1 &&
      p.base != tfm::ggml_type::tfm_i4_g64 && p.base != tfm::ggml_type::tfm_i4_g128)
    throw cli::usage_error(
        "--calib needs TYPE q4_0, q4_1, i4_g64 or i4_g128 (the 4-bit grids of "
        "GPTQ and AWQ), not " +
        std::string(p.name));
  const tfm::io::gguf_file f(in);
  const auto tok = tfm::io::load_gguf_tokenizer(f);
  auto ids =
      tok.encode(tfm::train::read_text_file(calib), {.add_special = true, .parse_special = false});
  tfm::quant::calibrated_quantize_options o;
  o.method = *method;
  o.calib.bos = tok.add_bos() ? tok.bos_id() : -1;
  o.calib.max_tokens = calib_tokens;
  o.threads = threads;
  if (!json) o.progress = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  if (static_cast<tfm::index_t>(ids.size()) < o.calib.ctx)
    tfm::fail(tfm::errc::value, "'", calib, "' has ", ids.size(), " tokens; calibration needs at ",
              "least one window of ", o.calib.ctx, " (about 16k tokens work well)");
  const auto r = tfm::quant::quantize_gguf_calibrated(f, out, p.base, ids, o);
  if (json) {
    std::string s =
        "{\"input\": " + cli::json_quote(in) + ", \"output\": " + cli::json_quote(out) +
        ", \"type\": " + cli::json_quote(p.name) + ", \"method\": " + cli::json_quote(method_name) +
        ", \"calib_tokens\": " + std::to_string(r.calib_tokens) +
        ", \"folds\": " + std::to_string(r.folds) +
        ", \"file_bytes_out\": " + std::to_string(r.file_bytes_out) + ", \"tensors\": [";
    for (std::size_t i = 0; i < r.tensors.size(); ++i) {
      const auto& t = r.tensors[i];
      s += std::string(i ? ", " : "") + "{\"name\": " + cli::json_quote(t.name) +
           ", \"type_in\": " + cli::json_quote(tfm::ggml_type_name(t.in)) +
           ", \"type_out\": " + cli::json_quote(tfm::ggml_type_name(t.out)) +
           ", \"how\": " + cli::json_quote(t.how) + ", \"rmse\": " + num(t.rmse, "%.9g") + "}";
    }
    s += "]}\n";
    std::fputs(s.c_str(), stdout);
    return 0;
  }
  std::printf("%-34s %-6s    %-8s %-8s %10s\n", "tensor", "in", "out", "method", "rmse");
  for (const auto& t : r.tensors)
    std::printf("%-34s %-6s -> %-8s %-8s %10.3e\n", t.name.c_str(),
                std::string(tfm::ggml_type_name(t.in)).c_str(),
                std::string(tfm::ggml_type_name(t.out)).c_str(), t.how.c_str(), t.rmse);
  std::printf(
      "\n%s -> %s: %s, %s calibrated on %lld tokens (%lld windows), %d folds; "
      "calibration %.1f s, search %.1f s, quantization %.1f s; %.2f MiB\n",
      in.c_str(), out.c_str(), std::string(p.name).c_str(), method_name.c_str(),
      static_cast<long long>(r.calib_tokens), static_cast<long long>(r.calib_windows), r.folds,
      r.seconds_calibrate, r.seconds_search, r.seconds_quantize,
      double(r.file_bytes_out) / 1048576.0);
  return 0;
}

}  // namespace

int run_quantize(const std::vector<std::string>& args) {
  cli::parser p("tfm quantize", "IN.gguf OUT.gguf TYPE",
                "quantize a GGUF model as llama-quantize does (round to nearest, llama.cpp's "
                "per-tensor type rules); TYPE is one of " +
                    tfm::quantize_preset_names() + " (case-insensitive)");
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool json = false;
  std::string imatrix_path, calib_path, method;
  tfm::index_t calib_tokens = 16384;
  p.option("--calib", "TEXT",
           "calibration text for --method (GPTQ / AWQ; about 16k tokens of ordinary text)",
           calib_path);
  p.option("--method", "M", "with --calib: gptq (act-order), awq, awq+gptq or rtn", method);
  p.option("--calib-tokens", "N", "use at most the first N tokens of the calibration text",
           calib_tokens);
  p.option("--imatrix", "FILE",
           "importance matrix (llama.cpp's GGUF or .dat form, e.g. from tfm imatrix)",
           imatrix_path);
  p.option("-t", "N", "threads (same bytes for any count)", threads);
  p.option("--threads", "N", "the same as -t", threads);
  p.flag("--json", "print the report as one JSON object", json);
  p.epilog(
      "1-D tensors and norms keep their type; output.weight (or token_embd.weight when the "
      "embeddings are tied) gets Q6_K, or Q8_0 when its rows are not whole 256-blocks; the K "
      "types mix types per tensor as llama-quantize does (attn_v, attn_output, ffn_down); rows "
      "that are not whole blocks fall back (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K "
      "-> Q8_0, else F16). Quantized inputs are dequantized first. See docs/quantization.md.\n");
  const auto pos = p.parse(args);
  if (pos.size() != 3) throw cli::usage_error("expects IN.gguf, OUT.gguf and TYPE");
  if (threads < 1) throw cli::usage_error("-t needs at least 1 thread");
  const tfm::quantize_preset* preset = tfm::find_quantize_preset(pos[2]);
  if (preset == nullptr)
    throw cli::usage_error("unknown TYPE '" + pos[2] + "' (one of " + tfm::quantize_preset_names() +
                           ")");
  if (calib_path.empty() && !method.empty())
    throw cli::usage_error("--method needs --calib TEXT (the calibration text)");
  if (!calib_path.empty()) {
    if (method.empty()) method = "gptq";
    if (!imatrix_path.empty()) throw cli::usage_error("--calib and --imatrix do not combine");
    if (calib_tokens < 1) throw cli::usage_error("--calib-tokens must be positive");
    return run_calibrated(pos[0], pos[1], *preset, calib_path, method, threads, calib_tokens, json);
  }
  const tfm::io::gguf_file f(pos[0]);
  tfm::imatrix_data im;
  if (!imatrix_path.empty()) im = tfm::read_imatrix(imatrix_path);
  const auto report = tfm::quantize_gguf(
      f, pos[1], *preset, {.threads = threads, .imatrix = imatrix_path.empty() ? nullptr : &im});
  if (json)
    print_json(report, pos[0], pos[1], threads);
  else
    print_table(report, pos[0], pos[1], threads);
  return 0;
}

}  // namespace tfm_cli
