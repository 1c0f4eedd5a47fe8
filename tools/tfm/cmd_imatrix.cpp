// tfm imatrix -m MODEL -f TEXT -o FILE.gguf [-c N] [--chunks N] [-t N] [--process-output]
//
// Computes an importance matrix as llama.cpp's llama-imatrix does: the text is tokenized once
// (with BOS when the model adds one), cut into windows of N tokens (default 512), each run from
// an empty cache with its first token replaced by BOS when the model adds one; the input rows
// of every weight product of the layers are summed as x^2 per input column, per weight tensor
// name. Writes llama.cpp's GGUF imatrix form (tensors NAME.in_sum2 and NAME.counts, keys
// imatrix.*), which `tfm quantize --imatrix` and llama-quantize read. The library part is
// typeformer/quant/imatrix.hpp.
#include "commands.hpp"
#include "llm.hpp"

#include "typeformer/quant/imatrix.hpp"
#include "typeformer/train/data.hpp"

#include <chrono>
#include <cstdio>

namespace tfm_cli {

int run_imatrix(const std::vector<std::string>& args) {
  cli::parser p("tfm imatrix", "",
                "compute an importance matrix (llama-imatrix's GGUF form) by running a GGUF model "
                "over a text file");
  run_options o;
  std::string file, out;
  tfm::index_t ctx = 512, chunks = 0;
  bool process_output = false;
  o.declare_model(p);
  p.option("-f", "TEXT", "the calibration text file", file);
  p.option("-o", "FILE", "the imatrix file to write (GGUF)", out);
  p.option("-c", "N", "window length in tokens (llama-imatrix's -c)", ctx);
  p.option("--ctx", "N", "the same as -c", ctx);
  p.option("--chunks", "N", "windows to run at most (0: every whole window)", chunks);
  p.flag("--process-output", "also collect output.weight (llama-imatrix --process-output)",
         process_output);
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  o.apply();
  if (file.empty()) throw cli::usage_error("-f TEXT is required");
  if (out.empty()) throw cli::usage_error("-o FILE is required");
  if (ctx < 16) throw cli::usage_error("-c must be at least 16 (shorter inputs are not collected)");
  if (chunks < 0) throw cli::usage_error("--chunks must be >= 0");

  const std::string text = tfm::train::read_text_file(file);
  llm m = load_llm(o.model, o.dequantize);
  const auto ids = m.tok.encode(text, {.add_special = true, .parse_special = false});
  if (ids.size() < static_cast<std::size_t>(ctx))
    tfm::fail(tfm::errc::value, "'", file, "' has ", ids.size(), " tokens; -c ", ctx,
              " needs at least ", ctx);
  bool fused = false;
  for (const auto& t : m.model.file()->tensors())
    if (t.name.find(".attn_qkv.weight") != std::string_view::npos) fused = true;
  tfm::imatrix_collector col(
      {.min_rows = 16, .include_output = process_output, .fused_qkv = fused});
  const std::int32_t bos = m.tok.add_bos() ? m.tok.bos_id() : -1;
  const auto t0 = std::chrono::steady_clock::now();
  const tfm::index_t n = tfm::collect_imatrix(
      m.model, ids, ctx, bos, chunks, col, [&](tfm::index_t i, tfm::index_t total) {
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\rtfm imatrix: window %lld/%lld (%.1f s)",
                     static_cast<long long>(i + 1), static_cast<long long>(total), s);
      });
  std::fprintf(stderr, "\n");
  const auto data =
      col.result(static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(ctx), {file});
  tfm::write_imatrix(data, out);
  std::fprintf(stderr,
               "tfm imatrix: %s: %zu tokens, %lld windows of %lld -> %s (%zu weight tensors)\n",
               file.c_str(), ids.size(), static_cast<long long>(n), static_cast<long long>(ctx),
               out.c_str(), data.entries.size());
  return 0;
}

}  // namespace tfm_cli
