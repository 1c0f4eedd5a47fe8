// dpo: direct preference optimisation (Rafailov et al. 2023, arXiv:2305.18290) of
// SmolLM2-135M-Instruct with a LoRA adapter, on preference pairs written by a rule, top to
// bottom (train/preference.hpp).
//
//   ./dpo [MODEL.gguf] [--steps N] [--pairs-per-step B] [--eval N] [--lr X] [--beta X]
//         [--rpo-alpha X]
//
// The rule: a reply that starts with "Answer:" and an integer (e.g. "Answer: 19") is preferred
// over the same content in any other form ("12 + 7 = 19.", "The answer is 19.", ...). Before and
// after training, the policy and the reference (the same base with the adapter switched off) answer
// held-out questions greedily; the rule judges each pair of replies (win, tie or loss) and the
// table prints the policy's win rate over the reference, (wins + ties / 2) / prompts.
// Reference log-probs of the training pairs are computed once and stored (stored_reference).
// Plain DPO lets the chosen likelihood fall while the margin grows (the "chosen nll" of the
// progress line), and some replies start "Answer:" and then degrade (one run: win rate 84%);
// --rpo-alpha 1 adds the chosen responses' NLL to the loss (RPO, arXiv:2404.19733), which kept
// them well formed (one run: 100%). The rule judges the format, not the arithmetic.
#include <typeformer/infer/generate.hpp>
#include <typeformer/io/gguf.hpp>
#include <typeformer/io/gguf_tokenizer.hpp>
#include <typeformer/nn/lora.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/tokenizer/jinja.hpp>
#include <typeformer/train/finetune.hpp>
#include <typeformer/train/preference.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

using namespace tfm;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
/// CPU seconds of the process (all threads): on a shared machine, wall time / CPU time shows the
/// share of the cores the run got.
double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

/// A question and the two forms of its answer, from draw `i` of `seed`.
train::preference_record make_pair(std::uint64_t seed, std::uint64_t i) {
  auto draw = [&](std::uint64_t k, std::uint32_t n) { return random_u32(seed, 8 * i + k) % n; };
  const int a = 2 + static_cast<int>(draw(0, 60)), b = 2 + static_cast<int>(draw(1, 40));
  const int op = static_cast<int>(draw(2, 3));
  const char* sym[] = {"+", "-", "*"};
  const int value = op == 0 ? a + b : op == 1 ? a - b : a * b;
  const std::string A = std::to_string(a), B = std::to_string(b), V = std::to_string(value);
  const std::string questions[] = {"What is " + A + " " + sym[op] + " " + B + "?",
                                   "Compute " + A + " " + sym[op] + " " + B + ".",
                                   "Please calculate " + A + " " + sym[op] + " " + B + "."};
  const std::string rejected[] = {A + " " + sym[op] + " " + B + " = " + V + ".",
                                  "The answer is " + V + ".", V, "It is " + V + "."};
  train::preference_record r;
  r.chat = true;
  r.prompt = {{"user", questions[draw(3, 3)]}};
  r.chosen = {{"assistant", "Answer: " + V}};
  r.rejected = {{"assistant", rejected[draw(4, 4)]}};
  return r;
}

/// The rule: the reply starts with "Answer:", then an integer ("Answer: 19", "Answer: -3").
bool follows_rule(const std::string& reply) {
  std::size_t k = reply.find_first_not_of(" \n");
  if (k == std::string::npos || reply.compare(k, 7, "Answer:") != 0) return false;
  k = reply.find_first_not_of(' ', k + 7);
  if (k < reply.size() && reply[k] == '-') ++k;
  return k < reply.size() && reply[k] >= '0' && reply[k] <= '9';
}

/// Greedy replies (up to max_new tokens) to each prompt.
std::vector<std::string> replies(const train::pretrained_model& m, const vocab_tokenizer& tok,
                                 const std::vector<std::vector<std::int32_t>>& prompts,
                                 std::int32_t stop, int max_new) {
  std::vector<std::string> out;
  for (const auto& p : prompts) {
    infer::sampling_options greedy;
    greedy.temperature = 0.0;
    infer::generate_options go;
    go.stop_token = stop;
    const auto ids = infer::generate(m, p, max_new, greedy, go);
    std::vector<std::int32_t> gen(ids.begin() + static_cast<std::ptrdiff_t>(p.size()), ids.end());
    if (!gen.empty() && gen.back() == stop) gen.pop_back();
    out.push_back(tok.decode(gen, false));
  }
  return out;
}

struct judged {
  int policy_ok = 0, reference_ok = 0, wins = 0, ties = 0, losses = 0;
  double win_rate() const {
    const int n = wins + ties + losses;
    return n ? (wins + 0.5 * ties) / n : 0.0;
  }
};

judged judge(const std::vector<std::string>& policy, const std::vector<std::string>& reference) {
  judged j;
  for (std::size_t i = 0; i < policy.size(); ++i) {
    const bool p = follows_rule(policy[i]), r = follows_rule(reference[i]);
    j.policy_ok += p;
    j.reference_ok += r;
    (p && !r ? j.wins : p == r ? j.ties : j.losses) += 1;
  }
  return j;
}

}  // namespace

int main(int argc, char** argv) try {
  // ---- 1. flags
  const char* home = std::getenv("HOME");
  std::string path = std::string(home ? home : ".") +
                     "/.cache/typeformer/models/smollm2-135m-instruct/"
                     "SmolLM2-135M-Instruct.Q4_1.gguf";
  int steps = 12, pairs_per_step = 4, n_eval = 16, reply_tokens = 6;
  double lr = 1e-3, beta = 0.1, rpo_alpha = 0.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool v = i + 1 < argc;
    if (a == "--steps" && v)
      steps = std::atoi(argv[++i]);
    else if (a == "--pairs-per-step" && v)
      pairs_per_step = std::atoi(argv[++i]);
    else if (a == "--eval" && v)
      n_eval = std::atoi(argv[++i]);
    else if (a == "--lr" && v)
      lr = std::atof(argv[++i]);
    else if (a == "--beta" && v)
      beta = std::atof(argv[++i]);
    else if (a == "--rpo-alpha" && v)
      rpo_alpha = std::atof(argv[++i]);
    else if (a[0] != '-')
      path = a;
    else {
      std::fprintf(stderr,
                   "usage: dpo [MODEL.gguf] [--steps N] [--pairs-per-step B] [--eval N] [--lr X] "
                   "[--beta X] [--rpo-alpha X]\n");
      return 2;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();

  // ---- 2. model, tokenizer, chat template
  const io::gguf_file file(path);
  auto model = train::load_gguf_model(file, 128);
  const vocab_tokenizer tok = io::load_gguf_tokenizer(file);
  const jinja_chat_template tpl(
      file.find("tokenizer.chat_template")->value.as_string(),
      {.bos_token = tok.token_text(tok.bos_id()), .eos_token = tok.token_text(tok.eos_id())});
  const train::sft_encoder enc(tok, tpl);
  const std::int32_t im_end = tok.text_to_id("<|im_end|>");
  std::printf("loaded %s in %.0f s\n", path.c_str(), seconds_since(t0));

  // ---- 3. preference pairs by the rule: training pairs and held-out questions
  std::vector<train::preference_record> train_records, held_records;
  for (int i = 0; i < steps * pairs_per_step; ++i) train_records.push_back(make_pair(1, i));
  for (int i = 0; i < n_eval; ++i) held_records.push_back(make_pair(2, i));
  const auto data = train::preference_dataset::build(train::encode_preferences(enc, train_records),
                                                     {.max_length = 128});
  const auto held = train::preference_dataset::build(train::encode_preferences(enc, held_records),
                                                     {.max_length = 128});
  std::printf("%zu training pairs, %zu held-out; e.g. \"%s\" -> chosen \"%s\", rejected \"%s\"\n",
              data.size(), held.size(), train_records[0].prompt[0].content.c_str(),
              train_records[0].chosen[0].content.c_str(),
              train_records[0].rejected[0].content.c_str());

  // ---- 4. LoRA on every projection; the reference is the base (the adapter switched off)
  auto adapter = nn::make_lora(model, {.rank = 8, .alpha = 16, .seed = 1});
  nn::freeze(model);
  nn::attach(model, adapter);
  const train::reference_fn live = train::adapter_off_reference(model, adapter);
  const auto stored = train::stored_reference::compute(live, data, 8);
  const auto held_batches = held.batches(8);

  // ---- 5. before: held-out DPO figures and greedy replies of policy and reference
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < held.size(); ++i) prompts.push_back(held[i].prompt_ids);
  train::dpo_train_options o;
  o.loss.beta = beta;
  o.rpo_alpha = rpo_alpha;
  o.schedule = optim::lr_schedule::constant(lr);
  const auto eval_before = train::dpo_evaluate(model, held_batches, live, o);
  std::vector<std::string> ref_replies;
  {
    train::adapter_disabled<float> off(adapter);
    ref_replies = replies(model, tok, prompts, im_end, reply_tokens);
  }
  const judged before = judge(replies(model, tok, prompts, im_end, reply_tokens), ref_replies);
  std::printf("reference log-probs, 'before' evaluation: %.0f s (%.0f CPU s)\n", seconds_since(t0),
              cpu_seconds());

  // ---- 6. DPO
  auto opt = optim::adamw(adapter.parameters(), {.lr = lr});
  train::training_state st;
  const auto t1 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) {
    std::vector<std::size_t> which;
    for (int k = 0; k < pairs_per_step; ++k)
      which.push_back(static_cast<std::size_t>(s * pairs_per_step + k));
    const auto batch = data.batch(which);
    const auto r = train::dpo_step(model, opt, {&batch, 1}, stored.fn(), o, st);
    const double per = seconds_since(t1) / (s + 1);
    std::printf(
        "step %3d/%d  loss %.4f  margin %+.3f  acc %.2f  rewards %+.3f / %+.3f  chosen nll %.3f  "
        "|g| %.2f  %.1f s/step  ETA %.0f s\n",
        s + 1, steps, r.loss, r.reward_margin, r.reward_accuracy, r.chosen_reward,
        r.rejected_reward, r.chosen_nll, r.grad_norm, per, per * (steps - s - 1));
    std::fflush(stdout);
  }

  // ---- 7. after, and the table
  const auto eval_after = train::dpo_evaluate(model, held_batches, live, o);
  const auto policy_replies = replies(model, tok, prompts, im_end, reply_tokens);
  const judged after = judge(policy_replies, ref_replies);
  for (std::size_t i = 0; i < std::min<std::size_t>(4, prompts.size()); ++i)
    std::printf("%s\n  reference: \"%s\"\n  policy:    \"%s\"\n",
                held_records[i].prompt[0].content.c_str(), ref_replies[i].c_str(),
                policy_replies[i].c_str());
  std::printf("\n");
  std::printf("| %-6s | %-13s | %-10s | %-10s | %-4s | %-4s | %-4s | %-8s | %-10s | %-9s |\n", "",
              "held-out loss", "margin", "accuracy", "wins", "ties", "loss", "win rate",
              "policy ok", "ref ok");
  std::printf(
      "|--------|---------------|------------|------------|------|------|------|----------"
      "|------------|-----------|\n");
  for (int k = 0; k < 2; ++k) {
    const auto& e = k ? eval_after : eval_before;
    const auto& j = k ? after : before;
    std::printf(
        "| %-6s | %13.4f | %+10.3f | %10.2f | %4d | %4d | %4d | %7.1f%% | %4d / %-3zu | "
        "%3d / %-3zu |\n",
        k ? "after" : "before", e.loss, e.reward_margin, e.reward_accuracy, j.wins, j.ties,
        j.losses, 100 * j.win_rate(), j.policy_ok, prompts.size(), j.reference_ok, prompts.size());
  }
  std::printf(
      "\n%d steps of %d pairs, LoRA r 8 on q,k,v,o,gate,up,down, beta %.2f, rpo_alpha %g, lr %g; "
      "greedy replies of %d tokens; %.0f s in all (%.0f CPU s)\n",
      steps, pairs_per_step, beta, rpo_alpha, lr, reply_tokens, seconds_since(t0), cpu_seconds());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dpo: %s\n", e.what());
  return 1;
}
