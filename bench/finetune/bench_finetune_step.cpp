// bench_finetune_step: one fine-tuning step on a real model, for the side-by-side comparison with
// PyTorch + PEFT (bench/finetune/torch_peers.py runs the same settings; run_peers.sh runs both).
//
//   bench_finetune_step --model SmolLM2.gguf --task lora|qlora|full [--batch 4] [--seq 256]
//                       [--rank 16] [--alpha 32] [--steps 5] [--threads N] [--grad-ckpt]
//                       [--logits store|recompute] [--embedding f32|bf16|nf4] [--json]
//
// lora: the base f32 and frozen, adapters on q/k/v/o/gate/up/down; qlora: the same on an NF4
// base (nn/qlora.hpp); full: every parameter trains; dpo: a DPO step (train/preference.hpp,
// sigmoid, beta 0.1) on `batch` pairs of rows of `seq` tokens (prompt seq / 2, response the rest)
// with the LoRA policy and its base as the reference (tokens counted: 2 * batch * seq). Random
// token ids (seed 1), loss over every position, AdamW on the trainable parameters, gradient
// clipping at 1.0 as in the trainers. Prints tokens/s (median step time after one warm-up step),
// the process's peak RSS, and the peak RSS of the training steps alone (VmHWM reset after loading,
// /proc/self/clear_refs). --grad-ckpt checkpoints every block and, with it, recomputes the head's
// logits in the backward (nn::gpt::logits_mode, ops/linear_loss.hpp lce_logits::recompute) for
// every task alike; --logits sets that mode on its own (to time the recomputation). Also printed:
// the peak of the bytes held by tensors during the steps (core/storage.hpp memory_stats: what
// the tensors need, without the allocator's and the storage cache's slack) and the bytes of
// freed tensor buffers the storage cache holds at the end (resident, counted in RSS).
// --embedding (lora and qlora: the embedding is frozen there) holds the tied embedding/head in
// bf16 or NF4 (nn::quantize_embedding) instead of f32.
#include "bench_util.hpp"

#include <typeformer/nn/lora.hpp>
#include <typeformer/nn/qlora.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/train/finetune.hpp>
#include <typeformer/train/preference.hpp>

#include <sys/resource.h>
#include <time.h>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

double vm_hwm_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0;
}
void reset_hwm() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}
double max_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

int usage(const char* msg) {
  std::fprintf(
      stderr,
      "bench_finetune_step: %s\nusage: bench_finetune_step --model FILE.gguf "
      "--task lora|qlora|full|dpo [--batch B] [--seq T] [--rank R] [--alpha A] [--steps N] "
      "[--threads N] [--grad-ckpt] [--logits store|recompute] [--embedding f32|bf16|nf4] "
      "[--json]\n",
      msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, task = "lora", logits, emb = "f32";
  long batch = 4, seq = 256, rank = 16, steps = 5, threads = 0;
  double alpha = 32;
  bool json = false, ckpt = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    auto num = [&](long& v) {
      const char* s = next();
      if (!s) return false;
      v = std::atol(s);
      return true;
    };
    if (a == "--model") {
      const char* s = next();
      if (!s) return usage("--model needs a file");
      model = s;
    } else if (a == "--task") {
      const char* s = next();
      if (!s) return usage("--task needs lora, qlora or full");
      task = s;
    } else if (a == "--batch") {
      if (!num(batch)) return usage("--batch needs a number");
    } else if (a == "--seq") {
      if (!num(seq)) return usage("--seq needs a number");
    } else if (a == "--rank") {
      if (!num(rank)) return usage("--rank needs a number");
    } else if (a == "--steps") {
      if (!num(steps)) return usage("--steps needs a number");
    } else if (a == "--threads") {
      if (!num(threads)) return usage("--threads needs a number");
    } else if (a == "--alpha") {
      const char* s = next();
      if (!s) return usage("--alpha needs a number");
      alpha = std::atof(s);
    } else if (a == "--json") {
      json = true;
    } else if (a == "--grad-ckpt") {
      ckpt = true;
    } else if (a == "--embedding") {
      const char* s = next();
      if (!s || (std::string(s) != "f32" && std::string(s) != "bf16" && std::string(s) != "nf4"))
        return usage("--embedding needs f32, bf16 or nf4");
      emb = s;
    } else if (a == "--logits") {
      const char* s = next();
      if (!s || (std::string(s) != "store" && std::string(s) != "recompute"))
        return usage("--logits needs store or recompute");
      logits = s;
    } else {
      return usage(("unknown argument '" + a + "'").c_str());
    }
  }
  if (model.empty()) return usage("--model is required");
  if (task != "lora" && task != "qlora" && task != "full" && task != "dpo")
    return usage("unknown --task");
  if (emb != "f32" && (task == "full" || task == "dpo"))
    return usage("--embedding is for lora and qlora");
  if (batch < 1 || seq < 2 || rank < 1 || steps < 2) return usage("sizes must be positive");
  if (threads > 0) tfm_bench::set_threads(static_cast<int>(threads));
#if defined(_OPENMP)
  const int nthreads = omp_get_max_threads();
#else
  const int nthreads = 1;
#endif
  using namespace tfm;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    auto m = task == "qlora" ? train::load_gguf_model_nf4(model, seq)
                             : train::load_gguf_model(model, seq);
    nn::lora_adapter<float> a;
    nn::parameter_list<float> trainable;
    std::size_t base_bytes = 0;
    nn::detail::lora::for_each_site(m, [&](index_t, std::string_view, auto& lin) {
      if (lin.frozen) base_bytes += lin.frozen->bytes();
    });
    if (task == "full") {
      trainable = m.parameters();
    } else {
      nn::lora_config lc;
      lc.rank = rank;
      lc.alpha = alpha;
      a = nn::make_lora(m, lc);
      nn::freeze(m);
      nn::attach(m, a);
      a.train(true);
      trainable = a.parameters();
      if (emb != "f32")
        nn::quantize_embedding(
            m, emb == "bf16" ? nn::embedding_storage::bf16 : nn::embedding_storage::nf4);
    }
    m.set_checkpointing(ckpt);
    if (!logits.empty())
      m.set_logits_mode(logits == "store" ? lce_logits::store : lce_logits::recompute);
    // A bf16/NF4 head (--embedding) is always read chunk by chunk, its logits recomputed.
    const bool recompute = m.logits_mode() == lce_logits::recompute || m.head_rows() != nullptr;
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double load_peak = max_rss_mb();
    reset_hwm();
    reset_peak_memory();
    optim::adam_options o;
    o.lr = 1e-4;
    auto opt = optim::adamw(trainable, o);
    std::mt19937 g(1);
    std::uniform_int_distribution<int> d(0, static_cast<int>(m.config().vocab) - 1);
    train::pretrained_model::ids_type x(dyn_shape<2>(batch, seq)), y(dyn_shape<2>(batch, seq));
    std::vector<double> times, cpu;
    double loss = 0;
    for (long s = 0; s < steps; ++s) {
      for (index_t i = 0; i < x.size(); ++i) {
        x.data()[i] = d(g);
        y.data()[i] = d(g);
      }
      const auto s0 = std::chrono::steady_clock::now();
      const double c0 = cpu_seconds();
      if (task == "dpo") {
        // `batch` pairs as 2 * batch rows: prompt = the first seq / 2 tokens, the response the
        // rest (targets of prompt positions ignored), reference = the base (adapter off).
        train::preference_batch pb;
        pb.ids = train::ids_tensor(dyn_shape<2>(2 * batch, seq));
        pb.targets = train::ids_tensor(dyn_shape<2>(2 * batch, seq));
        for (index_t r = 0; r < 2 * batch; ++r)
          for (index_t t = 0; t < seq; ++t) {
            pb.ids(r, t) = d(g);
            pb.targets(r, t) = train::ignore_target;
          }
        for (index_t r = 0; r < 2 * batch; ++r)
          for (index_t t = seq / 2 - 1; t + 1 < seq; ++t) pb.targets(r, t) = pb.ids(r, t + 1);
        for (index_t r = 0; r < 2 * batch; ++r) pb.last.push_back(seq - 1);
        for (long p = 0; p < batch; ++p) pb.pairs.push_back(static_cast<std::size_t>(p));
        train::training_state st;
        const auto r = train::dpo_step(m, opt, std::span<const train::preference_batch>(&pb, 1),
                                       train::adapter_off_reference(m, a), {}, st);
        loss = r.loss;
      } else {
        opt.zero_grad();
        auto l = m.loss(x, y, true);
        loss = l.item();
        l.backward();
        opt.step_clipped(1.0);
      }
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count());
      cpu.push_back(cpu_seconds() - c0);
    }
    std::vector<double> t(times.begin() + 1, times.end());
    std::sort(t.begin(), t.end());
    const double med = t[t.size() / 2];
    std::vector<double> c(cpu.begin() + 1, cpu.end());
    std::sort(c.begin(), c.end());
    const double cpu_med = c[c.size() / 2];
    const double tok_s = static_cast<double>((task == "dpo" ? 2 : 1) * batch * seq) / med;
    const double train_peak = vm_hwm_mb();
    const double tensor_peak = static_cast<double>(memory_stats().peak_bytes) / 1048576.0;
    const double cached = static_cast<double>(cached_storage_bytes()) / 1048576.0;
    // clear_refs resets getrusage's maximum too: the process peak is the larger of the two.
    const double process_peak = std::max(load_peak, std::max(train_peak, max_rss_mb()));
    const index_t n_train = count_parameters(trainable);
    if (json)
      std::printf(
          "{\"peer\": \"typeformer\", \"task\": \"%s\", \"threads\": %d, \"batch\": %ld, "
          "\"seq\": %ld, \"rank\": %ld, \"tokens_per_s\": %.2f, \"step_s_median\": %.4f, "
          "\"cpu_s_median\": %.4f, \"grad_ckpt\": %s, \"logits\": \"%s\", \"embedding\": \"%s\", "
          "\"tensor_peak_mb\": %.1f, \"storage_cached_mb\": %.1f, "
          "\"peak_rss_mb\": %.1f, \"train_peak_rss_mb\": %.1f, \"load_peak_rss_mb\": %.1f, "
          "\"trainable\": %lld, \"base_packed_bytes\": %zu, \"last_loss\": %.4f, "
          "\"load_s\": %.2f}\n",
          task.c_str(), nthreads, batch, seq, rank, tok_s, med, cpu_med, ckpt ? "true" : "false",
          recompute ? "recompute" : "store", emb.c_str(), tensor_peak, cached, process_peak,
          train_peak, load_peak, static_cast<long long>(n_train), base_bytes, loss, load_s);
    else
      std::printf(
          "%s: %.1f tokens/s (step %.3f s median of %zu, %.3f CPU s), peak RSS %.0f MB (training "
          "%.0f MB, "
          "load %.0f MB; tensors %.0f MB, cached %.0f MB), logits %s, %lld trainable, loss %.3f\n",
          task.c_str(), tok_s, med, t.size(), cpu_med, process_peak, train_peak, load_peak,
          tensor_peak, cached, recompute ? "recomputed" : "stored", static_cast<long long>(n_train),
          loss);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_finetune_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
