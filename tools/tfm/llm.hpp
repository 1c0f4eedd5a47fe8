// tools/tfm/llm.hpp: what tfm's model subcommands (generate, chat, perplexity, bench) share:
// loading a GGUF model with its tokenizer, the common sampling options, the end-of-generation
// tokens, and printing generated text as it streams (whole UTF-8 characters only).
#pragma once

#include "cli.hpp"

#include "typeformer/infer/model.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace tfm_cli {

/// A model file opened for running: the engine and the tokenizer from the same file.
struct llm {
  tfm::infer::transformer<float> model;
  tfm::vocab_tokenizer tok;
  double load_ms = 0;  // to ready: map, validate, dequantize, build the tokenizer
};

/// `dequantize`: block-quantized weights become f32 on load instead of staying packed (the
/// engine before packed kernels; for comparisons).
inline llm load_llm(const std::string& path, bool dequantize = false) {
  const auto t0 = std::chrono::steady_clock::now();
  tfm::infer::load_options lo;
  if (dequantize) lo.quantized = tfm::infer::quantized_weights::f32;
  llm m{tfm::load_model(path, lo), {}, 0};
  m.tok = tfm::io::load_gguf_tokenizer(*m.model.file());
  m.load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (static_cast<tfm::index_t>(m.tok.vocab_size()) > m.model.config().vocab)
    tfm::fail(tfm::errc::parse, "'", path, "': the tokenizer has ", m.tok.vocab_size(),
              " tokens but the model's output has ", m.model.config().vocab, " rows");
  return m;
}

/// The options every model subcommand takes, declared once.
struct run_options {
  std::string model;
  int threads = 0;  // 0: the OpenMP default
  std::int64_t n_predict = 128;
  double temperature = 0.8;
  std::int64_t top_k = 40;
  double top_p = 0.95;
  std::uint64_t seed = 0;
  tfm::index_t context = 0;  // 0: min(model context, 2048)
  bool dequantize = false;
  std::string kv = "f32";  // the KV cache's element type (tfm::infer::parse_kv_type)

  void declare_model(cli::parser& p) {
    p.option("-m", "MODEL", "GGUF file (llama, gpt2) or Hugging Face directory", model);
    p.option("-t", "THREADS", "threads (0: all cores)", threads);
    p.flag("--dequantize", "quantized weights as f32 (default: packed, integer-dot decode)",
           dequantize);
  }
  void declare_sampling(cli::parser& p) {
    p.option("-n", "N", "tokens to generate at most", n_predict);
    p.option("--temp", "T", "sampling temperature; 0 is greedy", temperature);
    p.option("--top-k", "K", "sample among the K most likely tokens (0: all)", top_k);
    p.option("--top-p", "P", "nucleus sampling mass", top_p);
    p.option("--seed", "S", "sampling seed", seed);
    p.option("--ctx", "N", "context positions (0: min(model, 2048))", context);
  }
  /// --kv-type, for the subcommands that run a session (generate, chat, perplexity, bench).
  void declare_kv(cli::parser& p) {
    p.option("--kv-type", "TYPE",
             "KV cache element type: f32, f16, q8_0 (head_dim % 32 == 0) or int8 (per-row "
             "scales)",
             kv);
  }
  /// The --kv-type value; a usage error names the accepted ones.
  tfm::kv_type kv_type() const {
    try {
      return tfm::infer::parse_kv_type(kv);
    } catch (const tfm::error&) {
      throw cli::usage_error("--kv-type must be f32, f16, q8_0 or int8, not '" + kv + "'");
    }
  }
  /// Checks the values and applies the thread count.
  void apply() const {
    if (model.empty()) throw cli::usage_error("-m MODEL is required");
    if (threads < 0) throw cli::usage_error("-t must be >= 0");
    if (n_predict < 0) throw cli::usage_error("-n must be >= 0");
    if (!(temperature >= 0)) throw cli::usage_error("--temp must be >= 0");
    if (top_k < 0) throw cli::usage_error("--top-k must be >= 0");
    if (!(top_p > 0 && top_p <= 1)) throw cli::usage_error("--top-p must be in (0, 1]");
    if (context < 0) throw cli::usage_error("--ctx must be >= 0");
    (void)kv_type();  // an unknown --kv-type is a usage error before the model loads
    if (threads > 0) tfm::set_num_threads(threads);
  }
  tfm::infer::sampling_options sampling() const { return {temperature, top_k, top_p, seed}; }
};

/// Tokens that end a reply: EOS, and the end-of-turn tokens of the common chat formats that the
/// vocabulary has as control tokens.
inline std::vector<std::int32_t> end_tokens(const tfm::vocab_tokenizer& tok) {
  std::vector<std::int32_t> out;
  if (tok.eos_id() >= 0) out.push_back(tok.eos_id());
  for (const char* t :
       {"<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>"}) {
    const std::int32_t id = tok.text_to_id(t);
    if (id >= 0 && std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  }
  return out;
}

/// Prints decoded text as tokens arrive, holding back an incomplete UTF-8 character.
class text_stream {
 public:
  explicit text_stream(const tfm::vocab_tokenizer& tok) : tok_(tok) {}
  void push(std::int32_t id) {
    ids_.push_back(id);
    const std::string text = tok_.decode(ids_, /*special=*/false);
    std::size_t end = text.size();
    // Back up over a trailing incomplete UTF-8 sequence.
    std::size_t k = end;
    while (k > 0 && k + 4 > end && (static_cast<unsigned char>(text[k - 1]) & 0xC0) == 0x80) --k;
    if (k > 0) {
      const auto lead = static_cast<unsigned char>(text[k - 1]);
      const std::size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (need > end - (k - 1)) end = k - 1;
    }
    if (end > printed_) {
      std::fwrite(text.data() + printed_, 1, end - printed_, stdout);
      std::fflush(stdout);
      printed_ = end;
    }
    text_ = text;
  }
  /// Prints what is left (an incomplete character as it is) and returns the whole text.
  std::string finish() {
    if (text_.size() > printed_)
      std::fwrite(text_.data() + printed_, 1, text_.size() - printed_, stdout);
    std::fflush(stdout);
    printed_ = text_.size();
    return text_;
  }

 private:
  const tfm::vocab_tokenizer& tok_;
  std::vector<std::int32_t> ids_;
  std::string text_;
  std::size_t printed_ = 0;
};

}  // namespace tfm_cli
