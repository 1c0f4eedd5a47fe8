// typeformer/train/dpo_run.hpp
//
// A whole direct preference optimisation run (Rafailov et al. 2023, arXiv:2305.18290), as
// `tfm dpo` does it (docs/alignment.md): a llama GGUF, preference pairs as JSONL in TRL's formats
// (train/preference.hpp) with a held-out split, LoRA / QLoRA adapters or full fine-tuning, the
// sigmoid, IPO or hinge loss with label smoothing and the RPO term, AdamW with warmup + cosine,
// gradient accumulation, periodic held-out evaluation (loss, reward accuracy, implicit reward
// margin), a progress line per step with the margin, atomic checkpoints and an exact resume,
// loss.csv / loss.svg / margin.svg, and the adapter written as run_sft writes it.
//
//   train::dpo_settings s;  s.model = "SmolLM2.gguf";  s.data = {"pairs.jsonl"};  s.out = "run";
//   int rc = train::run_dpo(s);
//
// THE REFERENCE
//   stored (default): log pi_ref of every training and held-out response computed once before the
//     first step (LoRA / QLoRA: the base with the adapter switched off; full: the model before
//     any update) and kept in the checkpoint (blob "dpo.reference"), so a resumed full run does
//     not need the original weights in memory; no reference forward per step after that.
//   live: computed every step: the base with the adapter off (adapter_disabled; no second model
//     in memory), or for full fine-tuning a separate frozen copy of the GGUF's weights.
//   IPO uses mean per-token log-probs (TRL's choice for IPO, as Azar et al.'s loss is on
//   length-normalised likelihoods in practice); sigmoid and hinge use their sums.
//
// BATCHES
//   Epoch e visits the training pairs in preference_dataset::epoch_order(seed, e) in micro-batches
//   of `batch` pairs (the last one smaller); micro-batch j of the run is a function of j alone,
//   so a resumed run sees what the uninterrupted one would have.
//
// Outputs in s.out:
//   checkpoint.tfm   the trainable parameters, AdamW's state, the step, the adapter's dropout
//                    counter, the curve with the margins (blob "dpo.curve"), the stored reference
//                    log-probs; written atomically every ckpt_interval steps, at the end and on
//                    SIGINT/SIGTERM
//   adapter/, adapter.gguf   PEFT's layout and llama.cpp's LoRA GGUF (lora, qlora)
//   loss.csv         step, lr, train_loss, val_loss, train_margin, train_accuracy, val_margin,
//                    val_accuracy (empty where not measured)
//   loss.svg, margin.svg   DPO loss and implicit reward margin against the step
// Return value: 0 done, 130 interrupted (checkpoint saved).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"
#include "typeformer/ops/alignment_loss.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/train/plot.hpp"
#include "typeformer/train/preference.hpp"
#include "typeformer/train/progress.hpp"
#include "typeformer/train/run.hpp"
#include "typeformer/train/run_common.hpp"
#include "typeformer/train/trainer.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// Where the reference log-probs come from (file comment, THE REFERENCE).
enum class dpo_reference { stored, live };

inline dpo_reference parse_dpo_reference(std::string_view s) {
  if (s == "stored") return dpo_reference::stored;
  if (s == "live") return dpo_reference::live;
  fail(errc::value, "tfm dpo: --reference must be stored or live, not '", std::string(s), "'.");
}
inline dpo_kind parse_dpo_kind(std::string_view s) {
  if (s == "sigmoid") return dpo_kind::sigmoid;
  if (s == "ipo") return dpo_kind::ipo;
  if (s == "hinge") return dpo_kind::hinge;
  fail(errc::value, "tfm dpo: --loss must be sigmoid, ipo or hinge, not '", std::string(s), "'.");
}
inline const char* to_string(dpo_kind k) {
  return k == dpo_kind::sigmoid ? "sigmoid" : k == dpo_kind::ipo ? "ipo" : "hinge";
}
inline const char* to_string(dpo_reference r) {
  return r == dpo_reference::stored ? "stored" : "live";
}

/// Everything a DPO run needs: the shared settings (train/run_common.hpp; batch counts pairs)
/// and DPO's own. Defaults: out "dpo-out", lr 5e-5, a held-out tenth.
struct dpo_settings : tuning_settings {
  dpo_settings() {
    out = "dpo-out";
    lr = 5e-5;
    eval_fraction = 0.1;
  }
  index_t max_length = 512;  ///< longest prompt + response; the model's context for training
  sft_truncation truncation = sft_truncation::truncate;  ///< for a longer sequence
  dpo_options loss;                                      ///< beta, sigmoid | ipo | hinge, smoothing
  double rpo_alpha = 0.0;  ///< weight of the chosen responses' NLL (RPO); 0: plain DPO
  dpo_reference reference = dpo_reference::stored;
};

/// Checks settings that cannot work; tfm::value_error naming the setting.
inline void validate(const dpo_settings& s) {
  validate(static_cast<const tuning_settings&>(s), "tfm dpo");
  auto bad = [](const char* what) { fail(errc::value, "tfm dpo: ", what); };
  if (s.max_length < 2) bad("--max-length must be >= 2.");
  if (!(s.loss.beta > 0) || !std::isfinite(s.loss.beta)) bad("--beta must be positive.");
  if (!(s.loss.label_smoothing >= 0 && s.loss.label_smoothing <= 0.5))
    bad("--label-smoothing must be in [0, 0.5].");
  if (s.loss.label_smoothing > 0 && s.loss.kind != dpo_kind::sigmoid)
    bad("--label-smoothing applies to --loss sigmoid only.");
  if (!(s.rpo_alpha >= 0) || !std::isfinite(s.rpo_alpha)) bad("--rpo-alpha must be >= 0.");
}

namespace detail::dpo_run {

inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

/// Per curve step: train margin, train accuracy, held-out margin, held-out accuracy (NaN: none).
using figures = std::array<double, 4>;
inline constexpr double none = std::numeric_limits<double>::quiet_NaN();

inline std::string write_figures(const std::map<std::int64_t, figures>& m) {
  std::string s;
  for (const auto& [step, f] : m) {
    s += std::to_string(step);
    for (double v : f) s += " " + exact_string(v);
    s += "\n";
  }
  return s;
}
inline std::map<std::int64_t, figures> read_figures(const std::string& text,
                                                    const std::string& path) {
  std::map<std::int64_t, figures> m;
  std::istringstream is(text);
  std::string step;
  while (is >> step) {
    figures f{};
    for (double& v : f) {
      std::string w;
      if (!(is >> w))
        fail(errc::parse, "tfm dpo: the curve in '", path, "' (blob dpo.curve) is cut short.");
      v = train::detail::parse_number<double>(w, "dpo.curve");
    }
    m[train::detail::parse_number<std::int64_t>(step, "dpo.curve")] = f;
  }
  return m;
}

/// "n_train n_eval\n" then chosen and rejected log-probs of the training pairs, then of the
/// held-out pairs, one exact number per line.
inline std::string write_reference(const stored_reference& tr, const stored_reference& va) {
  std::string s = std::to_string(tr.size()) + " " + std::to_string(va.size()) + "\n";
  for (const stored_reference* r : {&tr, &va}) {
    for (std::size_t i = 0; i < r->size(); ++i) s += exact_string(r->chosen(i)) + "\n";
    for (std::size_t i = 0; i < r->size(); ++i) s += exact_string(r->rejected(i)) + "\n";
  }
  return s;
}
inline std::pair<stored_reference, stored_reference> read_reference(const std::string& text,
                                                                    const std::string& path,
                                                                    std::size_t n_train,
                                                                    std::size_t n_eval) {
  std::istringstream is(text);
  std::size_t a = 0, b = 0;
  if (!(is >> a >> b) || a != n_train || b != n_eval)
    fail(errc::value, "tfm dpo: '", path, "' holds reference log-probs of ", a, " training and ", b,
         " held-out pairs, the data now has ", n_train, " and ", n_eval,
         " (resume with the same data and settings).");
  auto one = [&](std::size_t n) {
    std::vector<double> c(n), r(n);
    for (auto* v : {&c, &r})
      for (double& x : *v) {
        std::string w;
        if (!(is >> w))
          fail(errc::parse, "tfm dpo: the reference log-probs in '", path, "' are cut short.");
        x = train::detail::parse_number<double>(w, "dpo.reference");
      }
    return stored_reference::from_values(std::move(c), std::move(r));
  };
  auto tr = one(n_train);
  auto va = one(n_eval);
  return {std::move(tr), std::move(va)};
}

}  // namespace detail::dpo_run

/// Runs the DPO training `s` describes (file comment). Prints a header, a progress line per step
/// and the evaluations unless s.quiet.
inline int run_dpo(dpo_settings s) {
  namespace fs = std::filesystem;
  namespace d = detail::dpo_run;
  validate(s);
  const std::optional<training_state> resumed = prepare_output(s, "tfm dpo");
  const std::string ckpt = checkpoint_path(s.out);
  auto say = [&](const std::string& line) {
    if (!s.quiet) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  };
  // Model, tokenizer, template (needed only by conversational pairs).
  const auto t0 = std::chrono::steady_clock::now();
  const io::gguf_file file(s.model);
  const vocab_tokenizer tok = io::load_gguf_tokenizer(file);
  const sft_encoder enc(tok, gguf_chat_renderer(file, tok, "tfm dpo"));
  tuned_model tm = load_tuned_model(file, s.method, s.lora, s.max_length, s.grad_checkpointing);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Pairs.
  std::vector<preference_record> tr_rec, va_rec;
  for (const auto& p : s.data) {
    auto r = read_preference_jsonl(p);
    tr_rec.insert(tr_rec.end(), r.begin(), r.end());
  }
  if (s.eval_data.empty()) {
    sft_split_options sp;
    sp.fraction = s.eval_fraction;
    sp.seed = s.seed;
    std::tie(tr_rec, va_rec) = split_preference_records(tr_rec, sp);
  } else {
    for (const auto& p : s.eval_data) {
      auto r = read_preference_jsonl(p);
      va_rec.insert(va_rec.end(), r.begin(), r.end());
    }
  }
  preference_options po;
  po.max_length = s.max_length;
  po.truncation = s.truncation;
  po.pad_id = tok.eos_id() >= 0 ? tok.eos_id() : 0;
  const auto train_set = preference_dataset::build(encode_preferences(enc, tr_rec), po);
  const auto val_set = preference_dataset::build(encode_preferences(enc, va_rec), po);
  if (train_set.size() == 0)
    fail(errc::value, "tfm dpo: no training pair is left (", tr_rec.size(), " read, ",
         train_set.dropped(), " dropped: a response without a token within --max-length ",
         s.max_length, ").");
  if (val_set.size() == 0)
    fail(errc::value,
         "tfm dpo: the held-out split is empty; raise --eval-fraction or give --eval-data.");
  const std::size_t n = train_set.size(), B = static_cast<std::size_t>(s.batch);
  const auto per_epoch = static_cast<std::int64_t>((n + B - 1) / B);
  const run_plan plan = plan_run(s, per_epoch);
  const std::int64_t steps = plan.steps;
  // Optimizer, schedule, state.
  optim::adam_options ao;
  ao.lr = s.lr;
  ao.weight_decay = s.weight_decay;
  auto opt = optim::adamw(tm.trainable, ao);
  dpo_train_options o;
  o.loss = s.loss;
  o.reduction = s.loss.kind == dpo_kind::ipo ? seq_reduction::mean : seq_reduction::sum;
  o.clip = s.clip;
  o.schedule = optim::lr_schedule::warmup_cosine(s.lr, s.lr / 10, plan.warmup, steps);
  o.rpo_alpha = s.rpo_alpha;
  training_state st;
  st.data_seed = s.seed;
  st.model_seed = s.lora.seed;
  std::map<std::int64_t, d::figures> figs;
  if (resumed) {
    st = load_training_state(ckpt, tm.trainable, opt);
    tm.set_dropout_offset(st.dropout_offset);
    if (auto it = st.blobs.find("dpo.curve"); it != st.blobs.end())
      figs = d::read_figures(it->second, ckpt);
    if (st.meta.count("dpo.reference") && st.meta.at("dpo.reference") != to_string(s.reference))
      fail(errc::value, "tfm dpo: '", ckpt, "' was trained with --reference ",
           st.meta.at("dpo.reference"), ", not ", to_string(s.reference), ".");
  }
  // The reference.
  std::optional<pretrained_model> ref_model;  // live reference of full fine-tuning
  reference_fn live;
  if (tm.has_adapter()) {
    live = adapter_off_reference(tm.model, tm.adapter, o.reduction);
  } else if (s.reference == dpo_reference::live) {
    ref_model.emplace(load_gguf_model(file, s.max_length));
    live = model_reference(*ref_model, o.reduction);
  } else if (!resumed) {
    live = model_reference(tm.model, o.reduction);  // before any update: the reference
  }
  reference_fn train_ref = live, val_ref = live;
  std::optional<stored_reference> stored_tr, stored_va;
  double ref_s = 0;
  if (s.reference == dpo_reference::stored) {
    const auto t1 = std::chrono::steady_clock::now();
    if (resumed) {
      const auto it = st.blobs.find("dpo.reference");
      if (it == st.blobs.end())
        fail(errc::parse, "tfm dpo: '", ckpt, "' holds no stored reference log-probs.");
      auto [a, b] = d::read_reference(it->second, ckpt, train_set.size(), val_set.size());
      stored_tr = std::move(a);
      stored_va = std::move(b);
    } else {
      tm.train(false);
      stored_tr = stored_reference::compute(live, train_set, s.batch);
      stored_va = stored_reference::compute(live, val_set, s.batch);
      st.blobs["dpo.reference"] = d::write_reference(*stored_tr, *stored_va);
    }
    train_ref = stored_tr->fn();
    val_ref = stored_va->fn();
    ref_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  say("tfm dpo: " + s.model + " (" + std::to_string(tm.model.config().n_layer) + " layers, " +
      std::to_string(count_parameters(tm.model.parameters())) + " f32 parameters" + tm.base_note +
      "), loaded in " + d::fmt("%.1f s", load_s));
  say("  " + describe(tm));
  say("  " + std::to_string(n) + " training pairs, " + std::to_string(val_set.size()) +
      " held-out" +
      (train_set.dropped() + val_set.dropped() > 0
           ? " (" + std::to_string(train_set.dropped() + val_set.dropped()) + " dropped)"
           : std::string()) +
      ", max length " + std::to_string(s.max_length));
  say("  loss " + std::string(to_string(s.loss.kind)) + ", beta " + d::fmt("%g", s.loss.beta) +
      (s.loss.label_smoothing > 0 ? ", label smoothing " + d::fmt("%g", s.loss.label_smoothing)
                                  : std::string()) +
      (s.rpo_alpha > 0 ? ", rpo alpha " + d::fmt("%g", s.rpo_alpha) : std::string()) +
      ", reference " + to_string(s.reference) +
      (s.reference == dpo_reference::stored && !resumed
           ? " (computed in " + d::fmt("%.1f s", ref_s) + ")"
           : std::string()));
  say("  " + std::to_string(steps) + " steps of " + std::to_string(s.grad_accum) + " x " +
      std::to_string(s.batch) + " pairs, lr " + d::fmt("%.2e", s.lr) + ", warmup " +
      std::to_string(plan.warmup) +
      (resumed ? ", resumed at step " + std::to_string(st.step) : ""));
  auto evaluate = [&]() {
    tm.train(false);
    std::vector<preference_batch> vb;
    for (auto& b : val_set.batches(s.batch)) {
      if (s.eval_batches > 0 && static_cast<std::int64_t>(vb.size()) >= s.eval_batches) break;
      vb.push_back(std::move(b));
    }
    const dpo_figures f = dpo_evaluate(tm.model, std::span<const preference_batch>(vb), val_ref, o);
    tm.train(true);
    return f;
  };
  auto record_eval = [&](const dpo_figures& f) {
    record_validation(st, f.loss);
    auto& g =
        figs.try_emplace(st.step, d::figures{d::none, d::none, d::none, d::none}).first->second;
    g[2] = f.reward_margin;
    g[3] = f.reward_accuracy;
  };
  auto describe_eval = [&](const dpo_figures& f) {
    return "held-out loss " + d::fmt("%.4f", f.loss) + ", margin " +
           d::fmt("%+.4f", f.reward_margin) + ", accuracy " + d::fmt("%.3f", f.reward_accuracy) +
           ", rewards " + d::fmt("%+.4f", f.chosen_reward) + " / " +
           d::fmt("%+.4f", f.rejected_reward) + ", chosen nll " + d::fmt("%.4f", f.chosen_nll);
  };
  auto save = [&]() {
    st.meta["dpo.method"] = to_string(s.method);
    st.meta["dpo.model"] = s.model;
    st.meta["dpo.loss"] = to_string(s.loss.kind);
    st.meta["dpo.reference"] = to_string(s.reference);
    st.dropout_offset = tm.dropout_offset();
    st.blobs["dpo.curve"] = d::write_figures(figs);
    save_training_state(ckpt, tm.trainable, opt, st);
    std::vector<curve_column> cols{
        {"train_margin", {}}, {"train_accuracy", {}}, {"val_margin", {}}, {"val_accuracy", {}}};
    plot_series tm_s{"train", {}, {}, "", 1.5, false, 1.0};
    plot_series vm_s{"held-out", {}, {}, "", 2.0, true, 1.0};
    for (const auto& c : st.curve) {
      const auto it = figs.find(c.step);
      const d::figures f =
          it == figs.end() ? d::figures{d::none, d::none, d::none, d::none} : it->second;
      for (std::size_t k = 0; k < 4; ++k) cols[k].values.push_back(f[k]);
      if (std::isfinite(f[0])) {
        tm_s.x.push_back(static_cast<double>(c.step));
        tm_s.y.push_back(f[0]);
      }
      if (std::isfinite(f[2])) {
        vm_s.x.push_back(static_cast<double>(c.step));
        vm_s.y.push_back(f[2]);
      }
    }
    write_loss_curve(s.out, st, std::string("DPO loss (") + to_string(s.loss.kind) + ")", cols);
    plot_options pl;
    pl.title = "implicit reward margin, beta (log-ratio chosen - log-ratio rejected)";
    pl.x_label = "step";
    pl.y_label = "margin";
    write_svg((fs::path(s.out) / "margin.svg").string(), svg_line_plot({tm_s, vm_s}, pl));
    tm.write_adapter(file, s.out);
  };
  if (!resumed) {
    const dpo_figures f0 = evaluate();
    record_eval(f0);
    say("  step 0: " + describe_eval(f0));
  }
  tm.train(true);
  install_stop_handlers();
  progress_line progress(steps);
  progress.set_interactive(progress.interactive() && !s.quiet);
  throughput speed;
  std::uint64_t order_epoch = std::numeric_limits<std::uint64_t>::max();
  std::vector<std::size_t> order;
  auto micro_batch = [&](std::int64_t j) {  // the run's j-th micro-batch (BATCHES)
    const auto e = static_cast<std::uint64_t>(j / per_epoch);
    const auto i = static_cast<std::size_t>(j % per_epoch);
    if (e != order_epoch) {
      order = train_set.epoch_order(s.seed, e);
      order_epoch = e;
    }
    const std::vector<std::size_t> which(
        order.begin() + static_cast<std::ptrdiff_t>(i * B),
        order.begin() + static_cast<std::ptrdiff_t>(std::min(n, (i + 1) * B)));
    return train_set.batch(which);
  };
  int rc = 0;
  while (st.step < steps) {
    std::vector<preference_batch> micro;
    for (std::int64_t k = 0; k < s.grad_accum; ++k)
      micro.push_back(micro_batch(st.step * s.grad_accum + k));
    const auto ts = std::chrono::steady_clock::now();
    const auto r =
        dpo_step(tm.model, opt, std::span<const preference_batch>(micro), train_ref, o, st);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    index_t toks = 0;
    for (const auto& b : micro) toks += b.ids.size();
    speed.add(static_cast<double>(toks), dt);
    auto& g =
        figs.try_emplace(st.step, d::figures{d::none, d::none, d::none, d::none}).first->second;
    g[0] = r.reward_margin;
    g[1] = r.reward_accuracy;
    if (!s.quiet) {
      progress_info pi;
      pi.step = st.step;
      pi.loss = r.loss;
      pi.lr = r.lr;
      pi.tokens_per_s = speed.tokens_per_s();
      pi.eta_s = speed.eta(steps - st.step);
      progress.print(progress.format(pi) + " | margin " + d::fmt("%+.4f", r.reward_margin) +
                     " | acc " + d::fmt("%.2f", r.reward_accuracy) +
                     (r.applied ? "" : " | skipped (gradient not finite)"));
    }
    const bool last = st.step == steps;
    if (st.step % plan.eval_every == 0 || last) {
      const dpo_figures f = evaluate();
      record_eval(f);
      say("  step " + std::to_string(st.step) + ": " + describe_eval(f));
    }
    if (st.step % plan.ckpt_every == 0 || last) save();
    if (stop_requested() || (s.stop_after > 0 && st.step >= s.stop_after)) {
      save();
      rc = stop_requested() ? 130 : 0;
      break;
    }
  }
  progress.finish();
  if (rc == 0) tm.write_model(file, s.out);
  say(written_files_line(tm, s.out, ckpt, rc == 0, "loss.csv, loss.svg, margin.svg"));
  return rc;
}

}  // namespace train
TFM_END_NAMESPACE
