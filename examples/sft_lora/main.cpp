// sft_lora: supervised fine-tuning with LoRA, top to bottom, and what it changes.
//
//   ./sft_lora [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--steps 80] [--eval 100] [--out DIR]
//
// 1. Writes a training set of chats "What is 483 + 296?" -> "483 + 296 = 779" (3-digit sums) and
//    100 held-out questions.
// 2. Asks the base model the held-out questions (greedy decoding with the inference engine,
//    infer::session) and counts exact answers: the number after the reply's last '=' (or its
//    last number) equals the sum.
// 3. Trains a LoRA adapter (rank 16 on q, k, v, o, gate, up, down) with train::run_sft: loss on
//    the assistant's tokens only, packed rows, warmup + cosine; it writes OUT/adapter/ (PEFT) and
//    OUT/adapter.gguf (llama.cpp).
// 4. Merges the adapter into the base weights (io::merge_lora_gguf, as `tfm merge-lora` does) and
//    asks the held-out questions again.
// Prints a progress line while training and a before/after table. Without --model it uses the
// model cache scripts/setup fills (~/.cache/typeformer/models).
#include <typeformer/infer/model.hpp>
#include <typeformer/infer/session.hpp>
#include <typeformer/io/gguf.hpp>
#include <typeformer/io/gguf_tokenizer.hpp>
#include <typeformer/io/lora_adapter.hpp>
#include <typeformer/tokenizer/jinja.hpp>
#include <typeformer/train/sft_run.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace tfm;

namespace {

struct question {
  int a, b;
  std::string text() const {
    return "What is " + std::to_string(a) + " + " + std::to_string(b) + "?";
  }
};

/// The number the reply gives: after its last '=', else its last number; -1 if none.
long answer_of(const std::string& reply) {
  const auto eq = reply.rfind('=');
  std::string s = eq == std::string::npos ? reply : reply.substr(eq + 1);
  long last = -1;
  for (std::size_t i = 0; i < s.size();) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      std::size_t j = i;
      long v = 0;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == ',')) {
        if (s[j] != ',') v = v * 10 + (s[j] - '0');
        ++j;
      }
      last = v;
      if (eq != std::string::npos) return last;  // the first number after '='
      i = j;
    } else {
      ++i;
    }
  }
  return last;
}

/// Exact-match accuracy of a GGUF model on the questions (greedy, at most 24 new tokens), and one
/// sample reply.
std::pair<double, std::string> accuracy(const std::string& gguf, const std::vector<question>& qs) {
  infer::load_options lo;
  lo.quantized = infer::quantized_weights::f32;
  const auto model = load_model(gguf, lo);
  const io::gguf_file& f = *model.file();
  const vocab_tokenizer tok = io::load_gguf_tokenizer(f);
  const jinja_chat_template tpl = train::gguf_chat_template(f, tok);
  const std::int32_t end = tok.eos_id();
  int right = 0;
  std::string sample;
  for (const auto& q : qs) {
    const std::vector<chat_message> conv{{"user", q.text()}};
    const auto ids =
        tok.encode(tpl.render(conv, true), {.add_special = false, .parse_special = true});
    infer::session s(model, {.context = 256});
    auto logits = s.prefill(ids);
    std::vector<std::int32_t> out;
    for (int t = 0; t < 24; ++t) {
      const auto best = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) -
                                                  logits.begin());
      if (best == end) break;
      out.push_back(best);
      logits = s.decode(best);
    }
    const std::string reply = tok.decode(out, false);
    if (sample.empty()) sample = q.text() + " -> " + reply;
    right += answer_of(reply) == q.a + q.b;
  }
  return {static_cast<double>(right) / static_cast<double>(qs.size()), sample};
}

std::string default_model() {
  const char* dir = std::getenv("TFM_MODEL_DIR");
  const char* home = std::getenv("HOME");
  return (dir && *dir ? std::string(dir)
                      : std::string(home ? home : "") + "/.cache/typeformer/models") +
         "/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

}  // namespace

int main(int argc, char** argv) try {
  std::string model = default_model(), out = "sft_lora_out";
  std::int64_t steps = 80;
  int n_eval = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model")
      model = argv[i + 1];
    else if (a == "--out")
      out = argv[i + 1];
    else if (a == "--steps")
      steps = std::atoll(argv[i + 1]);
    else if (a == "--eval")
      n_eval = std::atoi(argv[i + 1]);
    else
      throw std::runtime_error("unknown flag " + a + " (--model, --out, --steps, --eval)");
  }
  namespace fs = std::filesystem;
  fs::create_directories(out);
  const auto t0 = std::chrono::steady_clock::now();

  // ---- 1. data: 4000 training chats and held-out questions that are not among them
  std::mt19937 g(1234);
  std::uniform_int_distribution<int> d(100, 999);
  std::vector<question> train_q, eval_q;
  std::set<std::pair<int, int>> seen;
  while (train_q.size() < 4000) {
    question q{d(g), d(g)};
    if (seen.insert({q.a, q.b}).second) train_q.push_back(q);
  }
  while (static_cast<int>(eval_q.size()) < n_eval) {
    question q{d(g), d(g)};
    if (seen.insert({q.a, q.b}).second) eval_q.push_back(q);
  }
  const std::string data = (fs::path(out) / "add_train.jsonl").string();
  {
    std::ofstream f(data);
    for (const auto& q : train_q)
      f << "{\"messages\": [{\"role\": \"user\", \"content\": \"" << q.text()
        << "\"}, {\"role\": \"assistant\", \"content\": \"" << q.a << " + " << q.b << " = "
        << q.a + q.b << "\"}]}\n";
  }

  // ---- 2. the base model on the held-out questions
  std::printf("sft_lora: asking the base model %d held-out questions...\n", n_eval);
  std::fflush(stdout);
  const auto [acc0, sample0] = accuracy(model, eval_q);

  // ---- 3. LoRA fine-tuning (train/sft_run.hpp: the same run as `tfm finetune`)
  train::sft_settings s;
  s.model = model;
  s.data = {data};
  s.eval_fraction = 0.02;
  s.out = out;
  s.block_size = 256;
  s.batch = 4;
  s.steps = steps;
  s.lr = 1e-3;
  s.warmup = 10;
  s.eval_batches = 4;
  s.lora.rank = 16;
  s.lora.alpha = 32;
  const int rc = train::run_sft(s);
  if (rc != 0) return rc;
  const auto log = train::read_csv((fs::path(out) / "loss.csv").string());
  const double val0 = std::stod(log.rows.front()[3]), val1 = std::stod(log.rows.back()[3]);

  // ---- 4. merge the adapter into the base weights and ask again
  const std::string merged = (fs::path(out) / "merged-f32.gguf").string();
  const io::gguf_file base(model);
  io::merge_lora_gguf(
      base, io::load_lora((fs::path(out) / "adapter.gguf").string(), io::lora_base_config(base)),
      merged);
  std::printf("sft_lora: asking the fine-tuned model...\n");
  std::fflush(stdout);
  const auto [acc1, sample1] = accuracy(merged, eval_q);
  fs::remove(merged);
  const double minutes =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 60.0;

  std::printf("\n| SmolLM2-135M-Instruct, 3-digit addition | before | after LoRA SFT |\n");
  std::printf("| --- | ---: | ---: |\n");
  std::printf("| exact-match accuracy, %d held-out questions | %.1f%% | %.1f%% |\n", n_eval,
              100 * acc0, 100 * acc1);
  std::printf("| held-out loss per assistant token | %.4f | %.4f |\n", val0, val1);
  std::printf("\nbefore: %s\nafter:  %s\n", sample0.c_str(), sample1.c_str());
  std::printf("%lld steps, %.1f minutes in all; adapter in %s/adapter/ and %s/adapter.gguf\n",
              static_cast<long long>(steps), minutes, out.c_str(), out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "sft_lora: %s\n", e.what());
  return 1;
}
