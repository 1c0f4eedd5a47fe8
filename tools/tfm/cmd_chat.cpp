// tfm chat -m MODEL [-s SYSTEM] [sampling options]: a conversation with an instruction-tuned
// model through its own chat template (tokenizer.chat_template, rendered by the Jinja
// interpreter exactly as jinja2 renders it). Reads one user message per line from stdin (from a
// terminal or a pipe), streams each reply to stdout, ends at EOF or on a line "/exit".
//
// The KV cache carries the conversation: each turn renders the whole conversation, and only the
// tokens after what the cache already holds are run (when the rendering of earlier turns changed,
// the session starts again from the rendered text).
#include "commands.hpp"
#include "llm.hpp"

#include "typeformer/tokenizer/jinja.hpp"

#include <unistd.h>
#include <iostream>
#include <string>

namespace tfm_cli {
namespace {

std::string token_or_empty(const tfm::vocab_tokenizer& tok, std::int32_t id) {
  return id >= 0 && static_cast<std::size_t>(id) < tok.vocab_size() ? tok.token_text(id) : "";
}

}  // namespace

int run_chat(const std::vector<std::string>& args) {
  cli::parser p("tfm chat", "",
                "talk to an instruction-tuned GGUF model through its chat template; one user "
                "message per line on stdin, '/exit' or EOF ends");
  run_options o;
  o.n_predict = 512;
  std::string system;
  o.declare_model(p);
  p.option("-s", "SYSTEM", "a system message first (default: the template's own)", system);
  o.declare_sampling(p);
  o.declare_kv(p);
  if (!p.parse(args).empty()) throw cli::usage_error("takes no positional arguments");
  o.apply();

  llm m = load_llm(o.model, o.dequantize);
  const auto* tpl_value = m.model.file()->find("tokenizer.chat_template");
  if (tpl_value == nullptr)
    tfm::fail(tfm::errc::unsupported, "'", o.model,
              "' has no tokenizer.chat_template: use 'tfm generate' for a plain prompt");
  tfm::jinja_chat_template tpl(tpl_value->value.as_string(),
                               {.bos_token = token_or_empty(m.tok, m.tok.bos_id()),
                                .eos_token = token_or_empty(m.tok, m.tok.eos_id())});
  const auto stops = end_tokens(m.tok);
  tfm::infer::session s(m.model, {.context = o.context, .kv = o.kv_type()});
  std::vector<std::int32_t> in_cache;  // the tokens the session holds, in order
  std::vector<tfm::chat_message> conv;
  if (!system.empty()) conv.push_back({"system", system});
  const bool interactive = isatty(0) != 0;
  std::fprintf(stderr, "tfm chat: %s loaded in %.0f ms; '/exit' ends\n", o.model.c_str(),
               m.load_ms);
  std::string line;
  while (true) {
    if (interactive) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    conv.push_back({"user", line});
    const std::string text = tpl.render(conv, /*add_generation_prompt=*/true);
    const bool add_bos =
        m.tok.add_bos() && !text.starts_with(token_or_empty(m.tok, m.tok.bos_id()));
    const auto ids = m.tok.encode(text, {.add_special = add_bos, .parse_special = true});
    std::size_t keep = 0;  // the longest common prefix with the cache
    while (keep < in_cache.size() && keep < ids.size() && in_cache[keep] == ids[keep]) ++keep;
    if (keep < in_cache.size() || keep == ids.size()) {
      s.reset();
      keep = 0;
    }
    in_cache.assign(ids.begin(), ids.end());
    const std::span<const std::int32_t> fresh(ids.data() + keep, ids.size() - keep);
    text_stream out(m.tok);
    tfm::infer::generate(s, fresh, o.n_predict, o.sampling(),
                         [&](std::int32_t id) {
                           in_cache.push_back(id);
                           if (std::find(stops.begin(), stops.end(), id) == stops.end())
                             out.push(id);
                         },
                         {.stop_tokens = stops});
    // The last sampled token is not run; anything else means the session slid its window:
    // start the next turn from the rendered text.
    if (s.position() + 1 == static_cast<tfm::index_t>(in_cache.size())) {
      in_cache.pop_back();
    } else {
      s.reset();
      in_cache.clear();
    }
    conv.push_back({"assistant", out.finish()});
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace tfm_cli
