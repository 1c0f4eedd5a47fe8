// moe: why mixture-of-experts models exist, measured on the demo corpus (docs/moe.md).
//
// Three byte-level models train on the same text with the same seed, the same batches in the
// same order and the same AdamW schedule:
//
//   dense      LLaMA-style blocks (RMSNorm, RoPE), a SwiGLU FFN of width F = 512 per block
//   moe        the same model with every FFN replaced by E = 8 SwiGLU experts of width F/2,
//              k = 2 chosen per token by a softmax top-k router (Mixtral, arXiv:2401.04088):
//              the same active FFN parameters and FLOPs per token (2 x 256 = 512 wide), four
//              times the FFN parameters in all; the Switch auxiliary loss (arXiv:2101.03961)
//              with coefficient 0.05 (Switch's 0.01 leaves a layer at 1.4 x the mean load after
//              1000 steps here; 0.05 balances every layer to <= 1.3 for 0.012 nats/byte more
//              validation loss, README.md)
//   moe-noaux  the MoE model without the auxiliary loss: how balanced does routing stay alone?
//
// It prints the validation loss of each at intervals and each MoE layer's expert load
// (max / mean share of the routed slots; 1 = perfectly balanced), and writes to OUT:
//   val_loss.csv, val_loss.svg            validation loss over steps, one column per model
//   expert_load.csv                       per model, step, layer and expert: share of the slots
//   expert_load_layerN.svg                share per expert over steps (moe, layer N)
//   balance.svg                           max / mean load of each layer over steps, aux on / off
//
//   ./moe                     # 1000 steps of each model (times: README.md)
//   ./moe --steps 300 --out run1
//   ./moe --quick             # a few steps: the smoke run of the test suite
#include <typeformer/autodiff/variable.hpp>
#include <typeformer/nn/config.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/optim/schedule.hpp>
#include <typeformer/train/csv.hpp>
#include <typeformer/train/data.hpp>
#include <typeformer/train/plot.hpp>
#include <typeformer/train/run.hpp>
#include <typeformer/train/run_settings.hpp>
#include <typeformer/train/tokenizer.hpp>
#include <typeformer/train/trainer.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

using namespace tfm;
using model_t = nn::gpt<nn::dynamic_config, float>;
using batches = std::vector<std::pair<train::ids_tensor, train::ids_tensor>>;
using layer_shares = std::vector<std::vector<double>>;  // [layer][expert] share of the slots

struct run_options {
  std::int64_t steps = 1000, eval_every = 100;
  index_t batch = 16, seq = 64;
  std::uint64_t seed = 1;
};

/// One model's run: validation loss and expert shares at every evaluation.
struct run_record {
  std::string name;
  index_t parameters = 0, active = 0;  // all, and those one token runs through
  std::vector<std::int64_t> steps;
  std::vector<double> val_loss;
  std::vector<layer_shares> shares;  // per evaluation
  double train_seconds = 0;
};

/// max_e share / mean_e share of one layer (1 = balanced; E / k when all tokens pick the same k).
double max_over_mean(const std::vector<double>& share) {
  if (share.empty()) return 0;
  return *std::max_element(share.begin(), share.end()) * static_cast<double>(share.size());
}

/// Mean validation cross-entropy (no aux loss) and, for an MoE model, each layer's share of the
/// routed slots per expert over the same tokens (nn::gpt::moe_stats after each forward).
std::pair<double, layer_shares> validate(const model_t& m, const batches& val) {
  no_grad ng;
  double loss = 0;
  layer_shares load;
  for (const auto& [x, y] : val) {
    loss += static_cast<double>(m.loss(x, y, false).value()());
    const auto stats = m.moe_stats();
    load.resize(stats.size());
    for (std::size_t l = 0; l < stats.size(); ++l) {
      load[l].resize(stats[l].load.size());
      for (std::size_t e = 0; e < stats[l].load.size(); ++e)
        load[l][e] += static_cast<double>(stats[l].load[e]);
    }
  }
  for (auto& row : load) {
    double total = 0;
    for (double v : row) total += v;
    for (double& v : row) v = total > 0 ? v / total : 0;
  }
  return {loss / static_cast<double>(val.size()), load};
}

/// Trains `cfg` for o.steps steps (AdamW, warmup then cosine, as the demo does) and evaluates it
/// every o.eval_every steps. The batches depend only on (seed, step): every model sees the same.
run_record train_model(const std::string& name, const nn::dynamic_config& cfg,
                       const train::token_dataset& data, const batches& val, const run_options& o) {
  nn::validate(cfg);
  model_t model(cfg, o.seed);
  run_record r;
  r.name = name;
  const nn::model_summary sum = model.summary(cfg.block_size);
  r.parameters = sum.parameters;
  // Those one token uses (the E - k experts it skips do not count); llama_tiny has no
  // position table, so non_embedding == parameters here.
  r.active = sum.active + (sum.parameters - sum.non_embedding);
  std::printf("\n%s: %lld parameters, %lld active per token\n", name.c_str(),
              (long long)r.parameters, (long long)r.active);

  auto ps = model.parameters();
  auto opt = optim::adamw(ps, {.lr = 2e-3, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1});
  const train::step_options so{.batch = o.batch,
                               .seq = o.seq,
                               .grad_accum = 1,
                               .clip = 1.0,
                               .schedule = optim::lr_schedule::warmup_cosine(
                                   2e-3, 2e-4, std::min<std::int64_t>(50, o.steps), o.steps)};
  train::training_state st;
  st.model_seed = o.seed;
  st.data_seed = train::data_seed_of(o.seed);

  auto evaluate = [&] {
    auto [v, share] = validate(model, val);
    r.steps.push_back(st.step);
    r.val_loss.push_back(v);
    r.shares.push_back(share);
    double worst = 0;
    for (const auto& s : share) worst = std::max(worst, max_over_mean(s));
    std::printf("  step %5lld  val loss %.4f", (long long)st.step, v);
    if (!share.empty()) std::printf("  expert load max/mean %.2f (worst layer)", worst);
    std::printf("\n");
    std::fflush(stdout);
  };
  evaluate();
  while (st.step < o.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    train::train_step(model, opt, data, so, st);  // loss + aux loss; trainer calls moe_balance
    r.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (st.step % o.eval_every == 0 || st.step == o.steps) evaluate();
  }
  std::printf("  %.1f s training, %.1fk tokens/s\n", r.train_seconds,
              static_cast<double>(o.steps * o.batch * o.seq) / r.train_seconds / 1e3);
  return r;
}

/// The share of every expert over steps for one layer of one run, a line per expert.
void plot_layer(const std::string& path, const run_record& r, std::size_t layer) {
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                 "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
  std::vector<train::plot_series> lines;
  const std::size_t E = r.shares.back()[layer].size();
  for (std::size_t e = 0; e < E; ++e) {
    train::plot_series s;
    s.name = "expert " + std::to_string(e);
    s.color = colors[e % 8];
    for (std::size_t i = 0; i < r.steps.size(); ++i) {
      s.x.push_back(static_cast<double>(r.steps[i]));
      s.y.push_back(r.shares[i][layer][e]);
    }
    lines.push_back(std::move(s));
  }
  train::plot_options po;
  po.title = r.name + ": share of routed slots per expert, layer " + std::to_string(layer);
  po.x_label = "step";
  po.y_label = "share of the validation tokens' slots";
  po.hlines.push_back({"balanced (1/E)", 1.0 / static_cast<double>(E)});
  train::write_svg(path, train::svg_line_plot(lines, po));
}

int main(int argc, char** argv) try {
  // ---- 1. flags
  run_options o;
  std::vector<std::string> data_paths;
  std::string out = "moe_out";
  index_t eval_batches = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--data" && has_value) {
      data_paths.push_back(argv[++i]);
    } else if (a == "--steps" && has_value) {
      o.steps = train::parse_setting<std::int64_t>(a, argv[++i]);
      o.eval_every = std::max<std::int64_t>(1, o.steps / 10);
    } else if (a == "--out" && has_value) {
      out = argv[++i];
    } else if (a == "--quick") {
      o.steps = 6, o.eval_every = 3, eval_batches = 2;
    } else {
      std::fprintf(stderr, "usage: moe [--data FILE]... [--steps N] [--out DIR] [--quick]\n");
      return 2;
    }
  }
  if (o.steps < 1) fail(errc::value, "moe: --steps must be at least 1.");
  std::filesystem::create_directories(out);

  if (data_paths.empty()) data_paths = {train::default_corpus};

  // ---- 2. bytes of the demo corpus (Debian's fortunes), the last 10% of every file held out
  const train::text_tokenizer tok;
  const auto data =
      train::token_dataset::from_files(train::expand_data(data_paths), tok, tok.vocab_size(), 0.1);
  const auto val = data.evaluation_batches(train::split::validation, o.batch, o.seq, eval_batches);

  // ---- 3. the models: one dense, two MoE with the same active FFN width (k * Fe = F)
  nn::dynamic_config dense = nn::to_dynamic(nn::llama_tiny{});
  dense.vocab = tok.vocab_size();
  dense.block_size = o.seq;
  dense.ffn = 512;
  nn::dynamic_config moe = dense;
  moe.mlp = nn::mlp_kind::moe;
  moe.n_expert = 8;
  moe.n_expert_used = 2;
  moe.expert_ffn = dense.ffn / moe.n_expert_used;
  moe.router = moe_router_kind::softmax_topk;
  moe.moe_aux_loss = 0.05;
  nn::dynamic_config moe_noaux = moe;
  moe_noaux.moe_aux_loss = 0;

  std::vector<run_record> runs;
  runs.push_back(train_model("dense", dense, data, val, o));
  runs.push_back(train_model("moe", moe, data, val, o));
  runs.push_back(train_model("moe-noaux", moe_noaux, data, val, o));

  // ---- 4. the table: validation loss (nats/byte) at every evaluation
  std::printf("\n step |   dense |     moe | moe-noaux\n------+---------+---------+----------\n");
  std::vector<std::vector<std::string>> rows;
  for (std::size_t i = 0; i < runs[0].steps.size(); ++i) {
    std::printf("%5lld | %7.4f | %7.4f | %7.4f\n", (long long)runs[0].steps[i], runs[0].val_loss[i],
                runs[1].val_loss[i], runs[2].val_loss[i]);
    rows.push_back({std::to_string(runs[0].steps[i]), train::csv_number(runs[0].val_loss[i]),
                    train::csv_number(runs[1].val_loss[i]),
                    train::csv_number(runs[2].val_loss[i])});
  }
  train::write_csv(out + "/val_loss.csv", {"step", "dense", "moe", "moe_noaux"}, rows);
  std::printf("\n%-10s %10s %10s %10s %12s  max/mean expert load per layer (end)\n", "model",
              "params", "active", "train s", "val loss");
  for (const auto& r : runs) {
    std::printf("%-10s %10lld %10lld %10.1f %12.4f ", r.name.c_str(), (long long)r.parameters,
                (long long)r.active, r.train_seconds, r.val_loss.back());
    for (const auto& s : r.shares.back()) std::printf(" %.2f", max_over_mean(s));
    std::printf("\n");
  }
  std::printf("MoE minus dense validation loss at the end: %+.4f nats/byte\n",
              runs[1].val_loss.back() - runs[0].val_loss.back());

  // ---- 5. files: loss curves, expert shares, balance over training
  std::vector<train::plot_series> curves;
  for (const auto& r : runs) {
    train::plot_series s;
    s.name = r.name;
    s.markers = true;
    for (std::size_t i = 0; i < r.steps.size(); ++i) {
      s.x.push_back(static_cast<double>(r.steps[i]));
      s.y.push_back(r.val_loss[i]);
    }
    curves.push_back(std::move(s));
  }
  train::plot_options po;
  po.title = "dense vs MoE, same active parameters per token";
  po.x_label = "step";
  po.y_label = "validation loss (nats/byte)";
  train::write_svg(out + "/val_loss.svg", train::svg_line_plot(curves, po));

  std::vector<std::vector<std::string>> load_rows;
  std::vector<train::plot_series> balance;
  for (std::size_t ri = 1; ri < runs.size(); ++ri) {
    const auto& r = runs[ri];
    for (std::size_t l = 0; l < r.shares.back().size(); ++l) {
      train::plot_series s;  // aux on blue, off red; deeper layers darker; one legend entry
      if (l == 0)
        s.name = r.name + ", layers 0 (light) to " + std::to_string(r.shares.back().size() - 1);
      s.color = ri == 1 ? "#1f77b4" : "#d62728";
      s.opacity =
          0.3 + 0.7 * static_cast<double>(l + 1) / static_cast<double>(r.shares.back().size());
      for (std::size_t i = 0; i < r.steps.size(); ++i) {
        s.x.push_back(static_cast<double>(r.steps[i]));
        s.y.push_back(max_over_mean(r.shares[i][l]));
        for (std::size_t e = 0; e < r.shares[i][l].size(); ++e)
          load_rows.push_back({r.name, std::to_string(r.steps[i]), std::to_string(l),
                               std::to_string(e), train::csv_number(r.shares[i][l][e])});
      }
      balance.push_back(std::move(s));
      if (ri == 1) plot_layer(out + "/expert_load_layer" + std::to_string(l) + ".svg", r, l);
    }
  }
  train::write_csv(out + "/expert_load.csv", {"model", "step", "layer", "expert", "share"},
                   load_rows);
  po.title = "expert load balance: max / mean share per layer";
  po.y_label = "max / mean expert load (1 = balanced)";
  po.hlines = {{"goal 1.3", 1.3}};
  train::write_svg(out + "/balance.svg", train::svg_line_plot(balance, po));
  std::printf(
      "wrote %s/{val_loss.csv,val_loss.svg,expert_load.csv,expert_load_layer*.svg,"
      "balance.svg}\n",
      out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "moe: %s\n", e.what());
  return 1;
}
