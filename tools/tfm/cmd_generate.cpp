// tfm generate -m MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]
//              [-t THREADS]: continues PROMPT with the model. Only the generated text goes to
// stdout (streamed); load time and speeds go to stderr. --temp 0 is greedy. The prompt is
// tokenized as llama.cpp's tools do: the model's BOS when its add_bos_token says so, and
// special tokens written in the prompt recognised. Generation stops after -n tokens or at an
// end-of-generation token (not printed).
#include "commands.hpp"
#include "llm.hpp"

#include <chrono>
#include <cstdio>

namespace tfm_cli {

int run_generate(const std::vector<std::string>& args) {
  cli::parser p("tfm generate", "", "continue a prompt with a GGUF model; prints only the text");
  run_options o;
  std::string prompt;
  bool show_special = false;
  o.declare_model(p);
  p.option("-p", "PROMPT", "the text to continue", prompt);
  o.declare_sampling(p);
  o.declare_kv(p);
  p.flag("--special", "print end-of-generation tokens too", show_special);
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  o.apply();
  if (prompt.empty()) throw cli::usage_error("-p PROMPT is required");

  llm m = load_llm(o.model, o.dequantize);
  const auto ids = m.tok.encode(prompt, {.add_special = true, .parse_special = true});
  if (ids.empty()) throw cli::usage_error("the prompt has no tokens");
  const auto stops = end_tokens(m.tok);
  text_stream out(m.tok);
  std::int64_t n = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point t_first{};
  tfm::infer::generate(
      m.model, ids, o.n_predict, o.sampling(),
      [&](std::int32_t id) {
        if (n++ == 0) t_first = std::chrono::steady_clock::now();
        const bool stop = std::find(stops.begin(), stops.end(), id) != stops.end();
        if (!stop || show_special) out.push(id);
      },
      {.stop_tokens = stops, .session = {.context = o.context, .kv = o.kv_type()}});
  out.finish();
  std::printf("\n");
  const auto t1 = std::chrono::steady_clock::now();
  const double prefill_s = std::chrono::duration<double>(t_first - t0).count();
  const double gen_s = std::chrono::duration<double>(t1 - t_first).count();
  std::fprintf(stderr,
               "tfm generate: load %.0f ms; prompt %zu tokens in %.3f s (%.1f tokens/s); "
               "%lld tokens generated, %.1f tokens/s\n",
               m.load_ms, ids.size(), prefill_s, static_cast<double>(ids.size()) / prefill_s,
               static_cast<long long>(n), n > 1 ? static_cast<double>(n - 1) / gen_s : 0.0);
  return 0;
}

}  // namespace tfm_cli
