// mini_gpt: a small GPT trained on text files, then sampled from, top to bottom. The full
// command-line trainer (every model and training flag, BPE tokenizers, bf16, progress line,
// loss plot, interrupted runs) is `tfm train`, built on the same library calls
// (train/run.hpp, docs/mini_gpt.md).
//
//   ./mini_gpt --data book.txt --steps 500 --out run1
//   ./mini_gpt --data book.txt --steps 800 --out run1 --resume   # continue from run1
//
// Each run writes OUT/checkpoint.tfm every 50 steps; a resumed run continues bitwise (same
// thread count). Without --data it reads the text files of Debian's fortunes package.
#include <typeformer/infer/generate.hpp>
#include <typeformer/nn/config.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/optim/schedule.hpp>
#include <typeformer/train/data.hpp>
#include <typeformer/train/run.hpp>
#include <typeformer/train/run_settings.hpp>
#include <typeformer/train/tokenizer.hpp>
#include <typeformer/train/trainer.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

using namespace tfm;

int main(int argc, char** argv) try {
  // ---- 1. a few flags
  std::vector<std::string> data_paths;
  std::int64_t steps = 500;
  std::string out = "mini_gpt_out";
  bool resume = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--data" && has_value)
      data_paths.push_back(argv[++i]);
    else if (a == "--steps" && has_value)
      steps = train::parse_setting<std::int64_t>(a, argv[++i]);
    else if (a == "--out" && has_value)
      out = argv[++i];
    else if (a == "--resume")
      resume = true;
    else {
      std::fprintf(stderr,
                   "usage: mini_gpt [--data FILE]... [--steps N] [--out DIR] [--resume]\n"
                   "(all flags: tfm train --help)\n");
      return 2;
    }
  }
  if (data_paths.empty()) data_paths = {train::default_corpus};
  std::filesystem::create_directories(out);
  const std::string ckpt = out + "/checkpoint.tfm";

  // ---- 2. text -> tokens (bytes: ids 0..255), the last 10% of every file held out
  const train::text_tokenizer tok;  // train::text_tokenizer::from_file(...) for a BPE
  const auto files = train::expand_data(data_paths);
  const auto data = train::token_dataset::from_files(files, tok, tok.vocab_size(), 0.1);

  // ---- 3. the model: a preset with a few fields changed (nn/config.hpp lists them all)
  nn::dynamic_config cfg = nn::to_dynamic(nn::gpt2_tiny{});
  cfg.vocab = tok.vocab_size();
  cfg.n_layer = 2;
  cfg.block_size = 64;
  train::training_state st;
  if (resume) {  // the checkpoint says which model it holds
    st = train::read_training_state(ckpt);
    cfg = train::get_config(st.meta);
  }
  nn::validate(cfg);
  const std::uint64_t seed = 1;
  nn::gpt<nn::dynamic_config, float> model(cfg, seed);
  std::printf("model: %lld parameters\n", (long long)model.summary(cfg.block_size).parameters);

  // ---- 4. AdamW, linear warmup then cosine decay to lr / 10 (Loshchilov & Hutter, 1711.05101)
  auto ps = model.parameters();
  auto opt = optim::adamw(ps, {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1});
  train::step_options so{.batch = 8,
                         .seq = cfg.block_size,
                         .grad_accum = 1,
                         .clip = 1.0,
                         .schedule = optim::lr_schedule::warmup_cosine(1e-3, 1e-4, 20, steps)};

  // ---- 5. a new run, or the checkpoint's parameters, optimizer state, counters and curve
  const auto fingerprint =
      std::to_string(train::token_fingerprint(data.tokens(train::split::train)));
  if (resume) {
    st = train::load_training_state(ckpt, ps, opt);
    if (st.meta["data_fingerprint"] != fingerprint)
      fail(errc::value, "mini_gpt: the data differs from the checkpoint's; resume needs the same.");
    std::printf("resumed at step %lld\n", (long long)st.step);
  } else {
    st.model_seed = seed;
    st.data_seed = train::data_seed_of(seed);
    train::put_config(st.meta, cfg);  // "config.<field>": the model to rebuild on resume
    st.meta["data_fingerprint"] = fingerprint;
  }

  // ---- 6. the loop: a step, validation every 50 steps, a checkpoint with it
  const auto val = data.evaluation_batches(train::split::validation, so.batch, so.seq, 10);
  while (st.step < steps) {
    const auto r = train::train_step(model, opt, data, so, st);
    if (st.step % 50 == 0 || st.step == steps) {
      const double v = train::evaluate(model, val);
      train::record_validation(st, v);
      train::save_training_state(ckpt, ps, opt, st);  // atomic: a crash leaves the last one
      std::printf("step %5lld  lr %.2e  train loss %.4f  val loss %.4f\n", (long long)st.step, r.lr,
                  r.loss, v);
    }
  }

  // ---- 7. sample 200 tokens after a newline (KV cache; the window slides past block_size)
  infer::sampling_options sp;
  sp.temperature = 0.8;
  sp.top_k = 40;
  sp.seed = seed;
  std::printf("\n%s\n", train::sample_text(model, tok, "\n", 200, sp).c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mini_gpt: %s\n", e.what());
  return 1;
}
