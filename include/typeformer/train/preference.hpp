// typeformer/train/preference.hpp
//
// WHAT THIS REPRESENTS
//   Preference learning on nn::gpt: pairwise data (a prompt, a chosen and a rejected response),
//   direct preference optimisation (DPO, Rafailov et al. 2023, arXiv:2305.18290) against a frozen
//   reference, and a reward model (a scalar head on the transformer, trained with the
//   Bradley-Terry loss of Ouyang et al. 2022, arXiv:2203.02155 eq. 1) usable as an RL reward.
//
//     auto recs = train::read_preference_jsonl("pairs.jsonl");
//     train::sft_encoder enc(tok, jinja_chat_template(src, {.eos_token = "<|im_end|>"}));
//     auto data = train::preference_dataset::build(train::encode_preferences(enc, recs), {});
//     auto a = nn::make_lora(model, {.rank = 8});  nn::freeze(model);  nn::attach(model, a);
//     auto ref = train::adapter_off_reference(model, a);        // or stored_reference::compute
//     auto opt = optim::adamw(a.parameters(), {.lr = 5e-4});
//     auto r = train::dpo_step(model, opt, {&batch, 1}, ref, {}, state);   // r.reward_margin ...
//
// INPUT (TRL's preference dataset formats, docs "Dataset formats": preference)
//   One JSON object per line, blank lines skipped but counted:
//     {"prompt": "...", "chosen": "...", "rejected": "..."}               plain text
//     {"prompt": [messages], "chosen": [messages], "rejected": [messages]} conversational
//     {"chosen": [messages], "rejected": [messages]}                     implicit prompt: the
//                                         leading messages both share are the prompt (TRL's
//                                         extract_prompt)
//   Messages are {"role", "content"} objects (train/sft_data.hpp's rules). Every malformed line
//   is a tfm::parse_error naming the file and the 1-based line; a file without pairs is one too.
//
// ENCODING
//   Each response is encoded after the prompt exactly as an SFT prompt-completion example
//   (sft_encoder: chat template rendering and the completion's loss mask, or [BOS] prompt +
//   response EOS for plain text). Pair p's rows in a batch of B pairs are p (chosen) and B + p
//   (rejected), both right-padded with pad_id to the batch's longest row; targets[t] = ids[t + 1]
//   where token t + 1 is a response token, else ignore_target, so the masked sum of the per-token
//   log-probs of a row is log pi(response | prompt).
//
// DPO
//   loss = mean over pairs of l(h), h = (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) -
//   log ref(y_r|x)) (ops/alignment_loss.hpp dpo_loss: sigmoid, IPO, hinge, label smoothing).
//   The reference log-probs come from a reference_fn: the policy's own base with its LoRA adapter
//   switched off (computed under no_grad each step), a separate model, or values computed once
//   and stored per pair (stored_reference). Gradient accumulation over micro-batches weighs every
//   pair equally: the step's loss is the mean over all its pairs. rpo_alpha > 0 adds that weight
//   times the chosen responses' mean token NLL (RPO, arXiv:2404.19733), against the fall of the
//   chosen likelihood that plain DPO allows.
//
// REWARD MODEL
//   r(x, y) = w . h_last, h_last the final hidden state (after ln_f) of the sequence's last
//   non-pad token and w the (1, C) head "score.weight" (Hugging Face's
//   LlamaForSequenceClassification "score", without a bias: the Bradley-Terry loss depends only
//   on r_c - r_r, so a bias would never receive a gradient). Trained with
//   -mean log sigmoid(r_c - r_r) over pairs; parameters() lists the body's and the head's, so
//   train::save_training_state / load_training_state keep them together.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/random.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/nn/lora.hpp"
#include "typeformer/ops/alignment_loss.hpp"
#include "typeformer/ops/gather.hpp"
#include "typeformer/ops/linear.hpp"
#include "typeformer/ops/reduce.hpp"
#include "typeformer/ops/view.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/train/finetune.hpp"
#include "typeformer/train/sft_data.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

// ---- records ------------------------------------------------------------------------------------

/// One JSONL line: plain texts (chat == false) or message lists. where: "'file' line N".
struct preference_record {
  bool chat = false;
  std::string prompt_text, chosen_text, rejected_text;
  std::vector<chat_message> prompt, chosen, rejected;
  std::string where;
};

namespace detail::preference {

[[noreturn]] inline void line_error(std::string_view name, std::size_t line,
                                    std::string_view what) {
  fail(errc::parse, "tfm::train::preference: '", name, "' line ", line, ": ", what);
}

inline bool same(const chat_message& a, const chat_message& b) {
  return a.role == b.role && a.content == b.content;
}

}  // namespace detail::preference

/// The record of one JSONL line (see INPUT); `name` and `line` are for error messages.
inline preference_record parse_preference_line(std::string_view text, std::string_view name,
                                               std::size_t line) {
  namespace d = detail::preference;
  namespace js = tfm::detail::json;
  const detail::sft::jvalue v = detail::sft::parse_line(text, name, line);
  if (!v.is_object())
    d::line_error(name, line,
                  std::string("the line is ") + js::kind_name(v.type) +
                      ", expected a JSON object with 'prompt', 'chosen' and 'rejected'.");
  preference_record r;
  r.where = "'" + std::string(name) + "' line " + std::to_string(line);
  const auto* prompt = v.find("prompt");
  const auto* chosen = v.find("chosen");
  const auto* rejected = v.find("rejected");
  if (!chosen) d::line_error(name, line, "missing key 'chosen'.");
  if (!rejected) d::line_error(name, line, "missing key 'rejected'.");
  auto kinds = [&] {
    return std::string("'chosen' is ") + js::kind_name(chosen->type) + ", 'rejected' is " +
           js::kind_name(rejected->type) +
           (prompt ? std::string(" and 'prompt' is ") + js::kind_name(prompt->type) : "") +
           "; expected strings, or arrays of messages.";
  };
  if (chosen->is_string() && rejected->is_string()) {
    if (!prompt)
      d::line_error(name, line,
                    "missing key 'prompt' (an implicit prompt needs conversational pairs).");
    if (!prompt->is_string()) d::line_error(name, line, kinds());
    r.prompt_text = prompt->string;
    r.chosen_text = chosen->string;
    r.rejected_text = rejected->string;
    return r;
  }
  if (!chosen->is_array() || !rejected->is_array() || (prompt && !prompt->is_array()))
    d::line_error(name, line, kinds());
  r.chat = true;
  r.chosen = detail::sft::read_messages(*chosen, "chosen", name, line);
  r.rejected = detail::sft::read_messages(*rejected, "rejected", name, line);
  if (prompt) {
    r.prompt = detail::sft::read_messages(*prompt, "prompt", name, line);
    return r;
  }
  // Implicit prompt: the shared leading messages.
  std::size_t k = 0;
  while (k < r.chosen.size() && k < r.rejected.size() && d::same(r.chosen[k], r.rejected[k])) ++k;
  if (k == 0)
    d::line_error(name, line,
                  "no 'prompt' and 'chosen' and 'rejected' share no leading message, so the "
                  "prompt cannot be inferred.");
  if (k == r.chosen.size() || k == r.rejected.size())
    d::line_error(name, line,
                  "no 'prompt' and one of 'chosen' / 'rejected' is a prefix of the other: a "
                  "response would be empty.");
  r.prompt.assign(r.chosen.begin(), r.chosen.begin() + static_cast<std::ptrdiff_t>(k));
  r.chosen.erase(r.chosen.begin(), r.chosen.begin() + static_cast<std::ptrdiff_t>(k));
  r.rejected.erase(r.rejected.begin(), r.rejected.begin() + static_cast<std::ptrdiff_t>(k));
  return r;
}

/// Records of a JSONL text; `name` names it in errors.
inline std::vector<preference_record> parse_preference_jsonl(std::string_view text,
                                                             std::string_view name) {
  return parse_jsonl(text, name, "tfm::train::preference", "pairs",
                     [](std::string_view l, std::string_view n, std::size_t line) {
                       return parse_preference_line(l, n, line);
                     });
}

/// Records of a JSONL file; io_error when it cannot be read.
inline std::vector<preference_record> read_preference_jsonl(const std::string& path) {
  return parse_preference_jsonl(read_text_file(path, "tfm::train::preference"), path);
}

/// {training, held-out} by split_sft_records' rule (a hash of each record's texts, independent
/// of file order), each in input order.
inline std::pair<std::vector<preference_record>, std::vector<preference_record>>
split_preference_records(std::span<const preference_record> records, const sft_split_options& o) {
  // Proxies carry the prompt, and chosen + rejected as one completion, so that the hash covers
  // every text; `where` carries the index back.
  std::vector<sft_record> proxies(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const preference_record& r = records[i];
    sft_record& p = proxies[i];
    p.kind =
        r.chat ? sft_record_kind::prompt_completion_chat : sft_record_kind::prompt_completion_text;
    p.messages = r.prompt;
    p.completion = r.chosen;
    p.completion.push_back({"", ""});  // separator
    p.completion.insert(p.completion.end(), r.rejected.begin(), r.rejected.end());
    p.prompt_text = r.prompt_text;
    p.completion_text = r.chosen_text + std::string(1, '\0') + r.rejected_text;
    p.where = std::to_string(i);
  }
  auto [tr, va] = split_sft_records(proxies, o);
  std::pair<std::vector<preference_record>, std::vector<preference_record>> out;
  for (const auto& p : tr) out.first.push_back(records[std::stoull(p.where)]);
  for (const auto& p : va) out.second.push_back(records[std::stoull(p.where)]);
  return out;
}

// ---- encoding -----------------------------------------------------------------------------------

/// A pair as tokens: each response's whole sequence (prompt then response) with mask 1 on the
/// response; prompt_ids: the chosen sequence's tokens before its first response token.
struct preference_example {
  std::vector<std::int32_t> prompt_ids;
  sft_example chosen, rejected;
  std::string where;
};

/// Encodes one record with `enc` (see ENCODING); errors name the record's line.
inline preference_example encode_preference(const sft_encoder& enc, const preference_record& r) {
  preference_example ex;
  ex.where = r.where;
  auto one = [&](const std::vector<chat_message>& resp, const std::string& text) {
    sft_record s;
    s.where = r.where;
    if (r.chat) {
      s.kind = sft_record_kind::prompt_completion_chat;
      s.messages = r.prompt;
      s.completion = resp;
    } else {
      s.kind = sft_record_kind::prompt_completion_text;
      s.prompt_text = r.prompt_text;
      s.completion_text = text;
    }
    return enc.encode(s);
  };
  ex.chosen = one(r.chosen, r.chosen_text);
  ex.rejected = one(r.rejected, r.rejected_text);
  const auto first = std::find(ex.chosen.loss_mask.begin(), ex.chosen.loss_mask.end(), 1);
  ex.prompt_ids.assign(ex.chosen.ids.begin(),
                       ex.chosen.ids.begin() + (first - ex.chosen.loss_mask.begin()));
  return ex;
}

inline std::vector<preference_example> encode_preferences(
    const sft_encoder& enc, std::span<const preference_record> records) {
  std::vector<preference_example> out;
  out.reserve(records.size());
  for (const auto& r : records) out.push_back(encode_preference(enc, r));
  return out;
}

// ---- batches ------------------------------------------------------------------------------------

struct preference_options {
  index_t max_length = 1024;  ///< longest row (prompt + response); at most the model's block_size
  sft_truncation truncation = sft_truncation::truncate;  ///< for a longer sequence
  std::int32_t pad_id = 0;                               ///< id at padding positions
};

/// B pairs as 2B rows (see ENCODING). last[r]: the last non-pad position of row r; pairs[p]: the
/// dataset index of pair p (for stored reference log-probs).
struct preference_batch {
  ids_tensor ids, targets;
  std::vector<index_t> last;
  std::vector<std::size_t> pairs;

  index_t pair_count() const noexcept { return static_cast<index_t>(pairs.size()); }
};

/// Encoded pairs checked and truncated to max_length; hands out padded batches.
class preference_dataset {
 public:
  preference_dataset() = default;

  /// Truncates (first max_length tokens), drops or refuses over-long sequences
  /// (preference_options::truncation, tfm::value_error naming the pair for error); drops pairs
  /// where either response keeps no predicted token. value_error for max_length < 2 or ids and
  /// masks of different lengths.
  static preference_dataset build(std::vector<preference_example> examples,
                                  const preference_options& o) {
    if (o.max_length < 2)
      fail(errc::value, "tfm::train::preference: max_length must be at least 2, got ", o.max_length,
           ".");
    preference_dataset d;
    d.o_ = o;
    const auto T = static_cast<std::size_t>(o.max_length);
    for (std::size_t i = 0; i < examples.size(); ++i) {
      preference_example& e = examples[i];
      bool keep = true;
      for (sft_example* s : {&e.chosen, &e.rejected}) {
        if (s->ids.size() != s->loss_mask.size())
          fail(errc::value, "tfm::train::preference: pair ", i, " has ", s->ids.size(), " ids but ",
               s->loss_mask.size(), " mask entries.");
        if (s->ids.size() > T) {
          if (o.truncation == sft_truncation::error)
            fail(errc::value, "tfm::train::preference: pair ", i,
                 e.where.empty() ? "" : " (" + e.where + ")", " has a sequence of ", s->ids.size(),
                 " tokens, more than max_length ", T, ".");
          if (o.truncation == sft_truncation::drop) keep = false;
          s->ids.resize(T);
          s->loss_mask.resize(T);
        }
        if (s->ids.size() < 2 ||
            std::find(s->loss_mask.begin() + 1, s->loss_mask.end(), 1) == s->loss_mask.end())
          keep = false;
      }
      if (keep)
        d.pairs_.push_back(std::move(e));
      else
        ++d.dropped_;
    }
    return d;
  }

  std::size_t size() const noexcept { return pairs_.size(); }
  std::size_t dropped() const noexcept { return dropped_; }
  const preference_example& operator[](std::size_t i) const { return pairs_.at(i); }
  const preference_options& options() const noexcept { return o_; }

  /// Pairs `which` as one batch, padded to its longest row.
  preference_batch batch(std::span<const std::size_t> which) const {
    if (which.empty()) fail(errc::value, "tfm::train::preference: a batch needs a pair.");
    const auto B = static_cast<index_t>(which.size());
    index_t T = 2;
    for (std::size_t i : which) {
      if (i >= pairs_.size())
        fail(errc::index, "tfm::train::preference: pair ", i, " is outside [0, ", pairs_.size(),
             ").");
      T = std::max({T, static_cast<index_t>(pairs_[i].chosen.ids.size()),
                    static_cast<index_t>(pairs_[i].rejected.ids.size())});
    }
    preference_batch b{ids_tensor(2 * B, T), ids_tensor(2 * B, T),
                       std::vector<index_t>(static_cast<std::size_t>(2 * B)),
                       std::vector<std::size_t>(which.begin(), which.end())};
    std::fill_n(b.ids.data(), b.ids.size(), o_.pad_id);
    std::fill_n(b.targets.data(), b.targets.size(), ignore_target);
    for (index_t p = 0; p < B; ++p) {
      const preference_example& e = pairs_[which[static_cast<std::size_t>(p)]];
      for (index_t side = 0; side < 2; ++side) {
        const sft_example& s = side == 0 ? e.chosen : e.rejected;
        const index_t row = side * B + p, n = static_cast<index_t>(s.ids.size());
        std::int32_t* ids = b.ids.data() + row * T;
        std::int32_t* tg = b.targets.data() + row * T;
        for (index_t t = 0; t < n; ++t) {
          ids[t] = s.ids[static_cast<std::size_t>(t)];
          if (t + 1 < n && s.loss_mask[static_cast<std::size_t>(t + 1)])
            tg[t] = s.ids[static_cast<std::size_t>(t + 1)];
        }
        b.last[static_cast<std::size_t>(row)] = n - 1;
      }
    }
    return b;
  }

  /// Consecutive batches of B pairs in dataset order (the last one may be smaller).
  std::vector<preference_batch> batches(index_t B) const {
    if (B <= 0) fail(errc::value, "tfm::train::preference: the batch size must be positive.");
    std::vector<preference_batch> out;
    for (std::size_t i = 0; i < pairs_.size(); i += static_cast<std::size_t>(B)) {
      std::vector<std::size_t> w;
      for (std::size_t k = i; k < std::min(pairs_.size(), i + static_cast<std::size_t>(B)); ++k)
        w.push_back(k);
      out.push_back(batch(w));
    }
    return out;
  }

  /// Pair order of epoch e: a Fisher-Yates permutation drawn from Philox at (seed, e), as
  /// sft_loader's.
  std::vector<std::size_t> epoch_order(std::uint64_t seed, std::uint64_t e) const {
    std::vector<std::size_t> p(pairs_.size());
    std::iota(p.begin(), p.end(), std::size_t{0});
    const std::uint64_t base = e << 33;
    for (std::size_t i = p.size(); i-- > 1;) {
      const std::uint64_t c = base + 2 * static_cast<std::uint64_t>(i);
      const std::uint64_t r =
          (static_cast<std::uint64_t>(random_u32(seed, c)) << 32) | random_u32(seed, c + 1);
      std::swap(p[i], p[r % static_cast<std::uint64_t>(i + 1)]);
    }
    return p;
  }

 private:
  preference_options o_;
  std::vector<preference_example> pairs_;
  std::size_t dropped_ = 0;
};

// ---- sequence log-probs and references ----------------------------------------------------------

/// The per-token negative log-probs (2B, T) of a batch's rows (0 where the target is ignored)
/// and the response mask (1 where a response token is predicted), through the model's graph
/// when gradients are enabled.
template <class Model>
auto preference_token_nll(const Model& m, const preference_batch& b, bool training) {
  using T = typename Model::value_type;
  cross_entropy_options ce;
  ce.ignore_index = ignore_target;
  auto nll = m.template loss<ce_reduction::none>(b.ids, b.targets, training, ce);  // (2B, T)
  tensor<T, dyn_shape<2>> mask(dyn_shape<2>(b.targets.extent(0), b.targets.extent(1)));
  for (index_t i = 0; i < mask.size(); ++i)
    mask.data()[i] = b.targets.data()[i] == ignore_target ? T(0) : T(1);
  return std::pair{nll, mask};
}

/// log pi(response | prompt) of every row of `b` (2B: chosen rows, then rejected rows). red: the
/// sum over response tokens (DPO) or their mean (TRL's IPO).
template <class Model>
auto preference_logprobs(const Model& m, const preference_batch& b, bool training,
                         seq_reduction red = seq_reduction::sum) {
  auto [nll, mask] = preference_token_nll(m, b, training);
  return sequence_logprob(nll, mask, red);  // (2B)
}

/// Reference log-probs of a batch's 2B rows (chosen, then rejected), without gradients.
using reference_fn = std::function<std::vector<double>(const preference_batch&)>;

/// Switches every update of a LoRA adapter off (lora_update::enabled) for its lifetime and
/// restores each one's previous state after, also when an exception passes.
template <class T>
class adapter_disabled {
 public:
  explicit adapter_disabled(const nn::lora_adapter<T>& a) {
    for (const auto& s : a.sites) {
      saved_.emplace_back(s.update, s.update->enabled);
      s.update->enabled = false;
    }
  }
  ~adapter_disabled() {
    for (auto& [u, on] : saved_) u->enabled = on;
  }
  adapter_disabled(const adapter_disabled&) = delete;
  adapter_disabled& operator=(const adapter_disabled&) = delete;

 private:
  std::vector<std::pair<std::shared_ptr<lora_update<T>>, bool>> saved_;
};

namespace detail::preference {
template <class Model>
std::vector<double> logprobs_no_grad(const Model& m, const preference_batch& b, seq_reduction red) {
  no_grad ng;
  auto lp = preference_logprobs(m, b, false, red);
  std::vector<double> out(static_cast<std::size_t>(lp.size()));
  for (index_t i = 0; i < lp.size(); ++i)
    out[static_cast<std::size_t>(i)] = static_cast<double>(lp.value().data()[i]);
  return out;
}
}  // namespace detail::preference

/// The policy's base as the reference: `model` with adapter `a` switched off (no dropout, no
/// gradients). Both must outlive the function.
template <class Cfg, class T>
reference_fn adapter_off_reference(const nn::gpt<Cfg, T>& model, const nn::lora_adapter<T>& a,
                                   seq_reduction red = seq_reduction::sum) {
  return [&model, &a, red](const preference_batch& b) {
    adapter_disabled<T> off(a);
    return detail::preference::logprobs_no_grad(model, b, red);
  };
}

/// A separate frozen model as the reference (full fine-tuning); it must outlive the function.
template <class Model>
reference_fn model_reference(const Model& ref, seq_reduction red = seq_reduction::sum) {
  return [&ref, red](const preference_batch& b) {
    return detail::preference::logprobs_no_grad(ref, b, red);
  };
}

/// Reference log-probs computed once per pair of a dataset and looked up by pair index after.
class stored_reference {
 public:
  /// Runs `live` over `data` in batches of B pairs.
  static stored_reference compute(const reference_fn& live, const preference_dataset& data,
                                  index_t B = 8) {
    stored_reference s;
    s.t_ = std::make_shared<table>();
    s.t_->chosen.resize(data.size());
    s.t_->rejected.resize(data.size());
    for (const preference_batch& b : data.batches(B)) {
      const std::vector<double> v = live(b);
      const std::size_t n = b.pairs.size();
      for (std::size_t p = 0; p < n; ++p) {
        s.t_->chosen[b.pairs[p]] = v[p];
        s.t_->rejected[b.pairs[p]] = v[n + p];
      }
    }
    return s;
  }
  /// Values computed before (e.g. read back from a checkpoint): chosen[i], rejected[i] of pair
  /// i. value_error when the lengths differ.
  static stored_reference from_values(std::vector<double> chosen, std::vector<double> rejected) {
    if (chosen.size() != rejected.size())
      fail(errc::value, "tfm::train::stored_reference: ", chosen.size(), " chosen and ",
           rejected.size(), " rejected log-probs.");
    stored_reference s;
    s.t_ = std::make_shared<table>();
    s.t_->chosen = std::move(chosen);
    s.t_->rejected = std::move(rejected);
    return s;
  }
  double chosen(std::size_t pair) const { return t_->chosen.at(pair); }
  double rejected(std::size_t pair) const { return t_->rejected.at(pair); }
  std::size_t size() const noexcept { return t_ ? t_->chosen.size() : 0; }

  /// The stored values as a reference_fn (for batches of the same dataset).
  reference_fn fn() const {
    return [t = t_](const preference_batch& b) {
      const std::size_t n = b.pairs.size();
      std::vector<double> v(2 * n);
      for (std::size_t p = 0; p < n; ++p) {
        if (b.pairs[p] >= t->chosen.size())
          fail(errc::index, "tfm::train::stored_reference: pair ", b.pairs[p],
               " has no stored log-probs (", t->chosen.size(), " stored).");
        v[p] = t->chosen[b.pairs[p]];
        v[n + p] = t->rejected[b.pairs[p]];
      }
      return v;
    };
  }

 private:
  struct table {
    std::vector<double> chosen, rejected;
  };
  std::shared_ptr<table> t_;
};

// ---- DPO ----------------------------------------------------------------------------------------

struct dpo_train_options {
  dpo_options loss;                              ///< beta, kind, label smoothing
  seq_reduction reduction = seq_reduction::sum;  ///< of the response log-probs
  double clip = 1.0;                             ///< max global gradient norm; 0: none
  optim::lr_schedule schedule = optim::lr_schedule::constant(5e-4);
  /// Weight of the chosen responses' mean token NLL added to the loss (RPO: Pang et al. 2024,
  /// arXiv:2404.19733; TRL's rpo_alpha); it keeps the chosen likelihood from falling while the
  /// margin grows. 0: plain DPO. The mean is over the micro-batch's chosen tokens.
  double rpo_alpha = 0.0;
};

/// Means over the pairs of a step or an evaluation (dpo_result's figures).
struct dpo_figures {
  double loss = 0, chosen_reward = 0, rejected_reward = 0, reward_margin = 0, reward_accuracy = 0;
  double chosen_nll = 0;  ///< mean NLL per chosen response token (likelihood displacement shows)
  index_t pairs = 0;
};

struct dpo_step_result : dpo_figures {
  double lr = 0;
  double grad_norm = 0;  ///< before clipping (NaN when clip == 0)
  bool applied = true;   ///< false: a gradient was not finite and nothing changed
};

namespace detail::preference {

template <class T>
var<T, shape<dyn>> constant_vector(const std::vector<double>& v, std::size_t from, std::size_t n) {
  tensor<T, shape<dyn>> t(static_cast<index_t>(n));
  for (std::size_t i = 0; i < n; ++i) t.data()[i] = static_cast<T>(v[from + i]);
  return var<T, shape<dyn>>(t);
}

/// DPO of one batch; adds its pair-weighted figures (weight w) into f.
template <class Model>
auto dpo_batch(const Model& m, const preference_batch& b, const reference_fn& ref,
               const dpo_train_options& o, bool training, double w, dpo_figures& f) {
  using T = typename Model::value_type;
  const std::vector<double> rv = ref(b);
  const auto B = static_cast<std::size_t>(b.pair_count());
  if (rv.size() != 2 * B)
    fail(errc::shape, "tfm::train::dpo: the reference gave ", rv.size(), " log-probs for ", 2 * B,
         " rows.");
  auto [nll, mask] = preference_token_nll(m, b, training);
  auto lp = sequence_logprob(nll, mask, o.reduction);  // (2B)
  const auto Bi = static_cast<index_t>(B);
  auto r = dpo_loss(slice<0>(lp, 0, Bi), slice<0>(lp, Bi, 2 * Bi), constant_vector<T>(rv, 0, B),
                    constant_vector<T>(rv, B, B), o.loss);
  // The chosen rows' mean token NLL.
  const index_t half = Bi * b.ids.extent(1);
  double nsum = 0, ntok = 0;
  for (index_t i = 0; i < half; ++i) {
    nsum += static_cast<double>(nll.value().data()[i]);
    ntok += static_cast<double>(mask.data()[i]);
  }
  var<T, shape<>> loss = r.loss;
  if (o.rpo_alpha != 0) {
    if (!(o.rpo_alpha > 0) || !std::isfinite(o.rpo_alpha))
      fail(errc::value, "tfm::train::dpo: rpo_alpha must be finite and >= 0, got ", o.rpo_alpha,
           ".");
    auto chosen_sum = sequence_logprob(nll, mask, seq_reduction::sum);  // (2B)
    auto term = tfm::sum(slice<0>(chosen_sum, 0, Bi)) * (-o.rpo_alpha / std::max(ntok, 1.0));
    loss = var<T, shape<>>((loss + term).data());
  }
  f.loss += w * static_cast<double>(loss.item());
  f.chosen_reward += w * r.chosen_reward;
  f.rejected_reward += w * r.rejected_reward;
  f.reward_margin += w * r.reward_margin;
  f.reward_accuracy += w * r.reward_accuracy;
  f.chosen_nll += w * (ntok > 0 ? nsum / ntok : 0.0);
  f.pairs += Bi;
  return loss;
}

inline index_t total_pairs(std::span<const preference_batch> bs) {
  index_t n = 0;
  for (const auto& b : bs) n += b.pair_count();
  return n;
}

/// Calls one(b, w) for every non-empty batch, w its share of all the pairs (so that every pair
/// weighs the same); value_error "<who>: no pairs." when there are none, before anything else.
template <class F>
void for_each_weighted(std::span<const preference_batch> bs, const char* who, F&& one) {
  const index_t P = total_pairs(bs);
  if (P == 0) fail(errc::value, who, ": no pairs.");
  for (const auto& b : bs)
    if (b.pair_count() > 0) one(b, static_cast<double>(b.pair_count()) / static_cast<double>(P));
}

/// One optimizer step of a pairwise loss over `micro` (DPO, Bradley-Terry): lr from the schedule,
/// one backward of w * batch_loss(b, w, res) per micro-batch (batch_loss adds the batch's
/// w-weighted figures into res), then apply_update with clipping.
template <class Result, class T, class BatchLoss>
Result pairwise_step(optim::optimizer<T>& opt, std::span<const preference_batch> micro, double clip,
                     const optim::lr_schedule& schedule, training_state& st, const char* who,
                     BatchLoss&& batch_loss) {
  if (total_pairs(micro) == 0) fail(errc::value, who, ": no pairs.");
  Result res;
  res.lr = schedule(st.step);
  opt.set_lr(res.lr);
  opt.zero_grad();
  for_each_weighted(micro, who, [&](const preference_batch& b, double w) {
    auto l = batch_loss(b, w, res);
    (l * w).backward();
  });
  const auto u = apply_update(opt, clip, res.lr, res.loss, st);
  res.grad_norm = u.grad_norm;
  res.applied = u.applied;
  return res;
}

/// The pair-weighted figures of held-out batches, without gradients: batch_figures(b, w, f) adds
/// batch b's (forward in evaluation mode) into f.
template <class Figures, class BatchFigures>
Figures pairwise_evaluate(std::span<const preference_batch> batches, const char* who,
                          BatchFigures&& batch_figures) {
  no_grad ng;
  Figures f;
  for_each_weighted(batches, who,
                    [&](const preference_batch& b, double w) { batch_figures(b, w, f); });
  return f;
}

}  // namespace detail::preference

/// One optimizer step of DPO over `micro` (gradient accumulation, one backward per micro-batch,
/// every pair weighted equally). The optimizer holds the trainable parameters (an adapter's or
/// the model's); `ref` gives the reference log-probs.
template <class Model, class T>
dpo_step_result dpo_step(Model& policy, optim::optimizer<T>& opt,
                         std::span<const preference_batch> micro, const reference_fn& ref,
                         const dpo_train_options& o, training_state& st) {
  return detail::preference::pairwise_step<dpo_step_result>(
      opt, micro, o.clip, o.schedule, st, "tfm::train::dpo_step",
      [&](const preference_batch& b, double w, dpo_step_result& res) {
        return detail::preference::dpo_batch(policy, b, ref, o, true, w, res);
      });
}

/// DPO loss, rewards, margin and accuracy over held-out batches (no gradients, no dropout).
template <class Model>
dpo_figures dpo_evaluate(const Model& policy, std::span<const preference_batch> batches,
                         const reference_fn& ref, const dpo_train_options& o = {}) {
  return detail::preference::pairwise_evaluate<dpo_figures>(
      batches, "tfm::train::dpo_evaluate",
      [&](const preference_batch& b, double w, dpo_figures& f) {
        detail::preference::dpo_batch(policy, b, ref, o, false, w, f);
      });
}

// ---- reward model -------------------------------------------------------------------------------

/// nn::gpt with a scalar head on the last token (see REWARD MODEL). Adapters go on `body`
/// (nn::make_lora(rm.body, ...)); train them with head_parameters().
template <class Cfg, class T = float>
class reward_model {
 public:
  using model_type = nn::gpt<Cfg, T>;
  using value_type = T;

  /// The head drawn N(0, 1/C) from `seed` (Philox), so initial rewards are O(1) for
  /// unit-scale hidden states.
  explicit reward_model(model_type m, std::uint64_t seed = 0) : body(std::move(m)) {
    const index_t C = body.config().n_embd;
    tensor<T, dyn_shape<2>> w(dyn_shape<2>(1, C));
    const double sd = 1.0 / std::sqrt(static_cast<double>(C));
    for (index_t c = 0; c < C; ++c)
      w.data()[c] = static_cast<T>(sd * normal_double(seed, static_cast<std::uint64_t>(c)));
    score = var<T, dyn_shape<2>>(w, true);
    score.set_name("score.weight");
  }

  model_type body;
  var<T, dyn_shape<2>> score;  ///< (1, C)

  /// The body's parameters, then "score.weight".
  nn::parameter_list<T> parameters() const {
    auto ps = body.parameters();
    ps.push_back({score.name(), score.data(), true});
    return ps;
  }
  /// The head alone (add an adapter's parameters for LoRA training).
  nn::parameter_list<T> head_parameters() const { return {{score.name(), score.data(), true}}; }

  /// Rewards (N) of rows ids (N, T) read at positions last[n].
  var<T, shape<dyn>> rewards(const ids_tensor& ids, std::span<const index_t> last,
                             bool training = false) const {
    const index_t N = ids.extent(0), Tn = ids.extent(1), C = body.config().n_embd;
    if (static_cast<index_t>(last.size()) != N)
      fail(errc::shape, "tfm::train::reward_model: ", last.size(), " last positions for ", N,
           " rows.");
    tensor<std::int32_t, shape<dyn>> rows(N);
    for (index_t n = 0; n < N; ++n) {
      const index_t t = last[static_cast<std::size_t>(n)];
      if (t < 0 || t >= Tn)
        fail(errc::index, "tfm::train::reward_model: last position ", t, " of row ", n,
             " is outside [0, ", Tn, ").");
      rows.data()[n] = static_cast<std::int32_t>(n * Tn + t);
    }
    auto h = body.hidden(ids, training);                            // (N, T, C)
    auto flat = reshape(h, dyn_shape<2>(N * Tn, C));                // (N T, C)
    auto picked = index_select<0>(flat, rows);                      // (N, C)
    auto r = tfm::linear(picked, score);                            // (N, 1)
    return var<T, shape<dyn>>(reshape(r, dyn_shape<1>(N)).data());  // (N)
  }

  /// The reward of one token sequence (its last token), without gradients.
  double score_ids(std::span<const std::int32_t> ids) const {
    if (ids.empty()) fail(errc::value, "tfm::train::reward_model: an empty sequence.");
    no_grad ng;
    ids_tensor x(1, static_cast<index_t>(ids.size()));
    std::copy(ids.begin(), ids.end(), x.data());
    const index_t last = static_cast<index_t>(ids.size()) - 1;
    return static_cast<double>(rewards(x, {&last, 1}, false).value().data()[0]);
  }
};

struct reward_train_options {
  double clip = 1.0;  ///< max global gradient norm; 0: none
  optim::lr_schedule schedule = optim::lr_schedule::constant(1e-4);
};

struct reward_figures {
  double loss = 0;      ///< -mean log sigmoid(r_c - r_r)
  double accuracy = 0;  ///< fraction of pairs with r_c > r_r
  double mean_gap = 0;  ///< mean r_c - r_r
  index_t pairs = 0;
};

struct reward_step_result : reward_figures {
  double lr = 0, grad_norm = 0;
  bool applied = true;
};

namespace detail::preference {
template <class RM>
auto reward_batch(const RM& rm, const preference_batch& b, bool training, double w,
                  reward_figures& f) {
  const index_t B = b.pair_count();
  auto r = rm.rewards(b.ids, b.last, training);  // (2B)
  auto res = bradley_terry_loss(slice<0>(r, 0, B), slice<0>(r, B, 2 * B));
  f.loss += w * static_cast<double>(res.loss.item());
  f.accuracy += w * res.accuracy;
  f.mean_gap += w * res.mean_gap;
  f.pairs += B;
  return res.loss;
}
}  // namespace detail::preference

/// One optimizer step of the Bradley-Terry loss over `micro` (every pair weighted equally).
template <class Cfg, class T>
reward_step_result reward_step(const reward_model<Cfg, T>& rm, optim::optimizer<T>& opt,
                               std::span<const preference_batch> micro,
                               const reward_train_options& o, training_state& st) {
  return detail::preference::pairwise_step<reward_step_result>(
      opt, micro, o.clip, o.schedule, st, "tfm::train::reward_step",
      [&](const preference_batch& b, double w, reward_step_result& res) {
        return detail::preference::reward_batch(rm, b, true, w, res);
      });
}

/// Loss, accuracy and mean gap over held-out batches (no gradients, no dropout).
template <class Cfg, class T>
reward_figures reward_evaluate(const reward_model<Cfg, T>& rm,
                               std::span<const preference_batch> batches) {
  return detail::preference::pairwise_evaluate<reward_figures>(
      batches, "tfm::train::reward_evaluate",
      [&](const preference_batch& b, double w, reward_figures& f) {
        detail::preference::reward_batch(rm, b, false, w, f);
      });
}

/// A reward model with its encoder as an RL reward: score(prompt, response) encodes the pair as
/// one user turn and one assistant turn (chat) or as plain text, exactly as preference pairs are
/// encoded, keeps the last max_length tokens, and returns r(x, y). Holds references.
template <class Cfg, class T>
class reward_scorer {
 public:
  reward_scorer(const reward_model<Cfg, T>& rm, const sft_encoder& enc, bool chat = true)
      : rm_(&rm), enc_(&enc), chat_(chat) {}

  double score(std::string_view prompt, std::string_view response) const {
    if (chat_) {
      const chat_message p{"user", std::string(prompt)};
      const chat_message r{"assistant", std::string(response)};
      return score(std::span<const chat_message>(&p, 1), std::span<const chat_message>(&r, 1));
    }
    return score_tail(enc_->encode_text(prompt, response).ids);
  }
  double score(std::span<const chat_message> prompt, std::span<const chat_message> response) const {
    return score_tail(enc_->encode_prompt_completion(prompt, response).ids);
  }
  double operator()(std::string_view prompt, std::string_view response) const {
    return score(prompt, response);
  }

 private:
  double score_tail(const std::vector<std::int32_t>& ids) const {
    const auto n = static_cast<std::size_t>(rm_->body.config().block_size);
    std::span<const std::int32_t> s(ids);
    if (s.size() > n) s = s.subspan(s.size() - n);
    return rm_->score_ids(s);
  }

  const reward_model<Cfg, T>* rm_;
  const sft_encoder* enc_;
  bool chat_;
};

}  // namespace train
TFM_END_NAMESPACE
