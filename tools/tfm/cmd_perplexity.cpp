// tfm perplexity -m MODEL -f TEXT [--ctx N] [-t THREADS] [--kv-type T]: the model's perplexity on a
// text file, defined as llama.cpp's llama-perplexity does: the text is tokenized once (with BOS
// when the model adds one), cut into non-overlapping windows of N tokens, each window run from an
// empty cache (its first token replaced by BOS when the model adds one), and the second half of
// each window scored. Prints the token and window counts to stderr and, as its last line, "PPL =
// <value> +/- <error>" (the error is llama.cpp's: ppl times the standard error of the mean negative
// log-likelihood).
#include "commands.hpp"
#include "llm.hpp"

#include "typeformer/train/data.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace tfm_cli {

int run_perplexity(const std::vector<std::string>& args) {
  cli::parser p("tfm perplexity", "",
                "perplexity of a GGUF model on a text file (llama.cpp's definition)");
  run_options o;
  std::string file;
  tfm::index_t ctx = 512, batch = 512;
  o.declare_model(p);
  o.declare_kv(p);
  p.option("-f", "TEXT", "the text file", file);
  p.option("--ctx", "N", "window length in tokens", ctx);
  p.option("--batch", "N", "positions per prefill step", batch);
  std::string argmax_file;
  p.option("--argmax", "FILE", "write the most likely token of every scored position, one a line",
           argmax_file);
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  o.apply();
  if (file.empty()) throw cli::usage_error("-f TEXT is required");
  if (ctx < 4) throw cli::usage_error("--ctx must be at least 4");
  if (batch < 1) throw cli::usage_error("--batch must be positive");

  const std::string text = tfm::train::read_text_file(file);
  llm m = load_llm(o.model, o.dequantize);
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = m.tok.encode(text, {.add_special = true, .parse_special = false});
  const double tok_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto n_ctx = static_cast<std::size_t>(ctx);
  if (ids.size() < 2 * n_ctx)
    tfm::fail(tfm::errc::value, "'", file, "' has ", ids.size(), " tokens; --ctx ", ctx,
              " needs at least ", 2 * ctx);
  std::fprintf(
      stderr,
      "tfm perplexity: %s: %zu bytes, %zu tokens (tokenized in %.2f s), %zu windows of %lld\n",
      file.c_str(), text.size(), ids.size(), tok_s, ids.size() / n_ctx,
      static_cast<long long>(ctx));
  const std::int32_t bos = m.tok.add_bos() ? m.tok.bos_id() : -1;
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<std::int32_t> argmax;
  tfm::infer::scored_position_fn keep_argmax;
  if (!argmax_file.empty())
    keep_argmax = [&](tfm::index_t, const float* lg, std::int32_t) {
      const auto V = m.model.config().vocab;
      argmax.push_back(static_cast<std::int32_t>(std::max_element(lg, lg + V) - lg));
    };
  const auto r = tfm::infer::perplexity(m.model, ids, ctx, bos, batch, keep_argmax, o.kv_type());
  if (!argmax_file.empty()) {
    std::FILE* f = std::fopen(argmax_file.c_str(), "w");
    if (f == nullptr) tfm::fail(tfm::errc::io, "cannot write '", argmax_file, "'");
    for (std::int32_t t : argmax) std::fprintf(f, "%d\n", t);
    if (std::fclose(f) != 0) tfm::fail(tfm::errc::io, "cannot write '", argmax_file, "'");
  }
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  std::fprintf(stderr,
               "tfm perplexity: %lld windows, %lld tokens scored in %.1f s (%.0f tokens/s run)\n",
               static_cast<long long>(r.chunks), static_cast<long long>(r.count), run_s,
               static_cast<double>(r.chunks * ctx) / run_s);
  std::fprintf(stderr, "tfm perplexity: KV cache %s, %zu bytes per token\n", o.kv.c_str(),
               tfm::infer::kv_store(m.model.config().n_layer, m.model.config().n_kv_head, 1,
                                    m.model.config().head_dim, o.kv_type())
                   .bytes_per_token());
  std::printf("PPL = %.4f +/- %.5f\n", r.ppl, r.error);
  return 0;
}

}  // namespace tfm_cli
