// typeformer/infer/beam.hpp
//
// WHAT THIS REPRESENTS
//   Beam search over an infer::transformer, the beams' keys and values shared in a paged KV cache
//   by copy-on-write (infer/paged_kv.hpp fork): a beam that extends another shares all of its
//   blocks, and only the block it writes into is copied.
//
//     auto hyps = infer::beam_search(model, prompt, {.width = 4, .max_tokens = 32,
//                                                    .eos_ids = {eos}});
//     hyps[0].tokens;   // the best hypothesis (generated tokens, end token included)
//
//   The algorithm (the one of Hugging Face transformers' BeamSearchScorer):
//     - every live beam's next-token log-probabilities (log_softmax of the logits, in double)
//       extend its cumulative log-probability; the 2 * width best candidates over all beams are
//       visited best first (ties: lower beam, then lower token id);
//     - a candidate ending in an end token becomes a finished hypothesis (when it is among the
//       first `width` candidates visited), scored logprob / (generated length ^ length_penalty);
//       the others become the next beams until there are `width`;
//     - the search ends when `width` hypotheses are finished and either early_stopping is set or
//       no live beam can still beat the worst of them (its logprob / (max_tokens ^
//       length_penalty) for length_penalty > 0, its current score otherwise), or after
//       max_tokens steps, when the live beams join the hypotheses;
//     - the result: the `width` best hypotheses by score, best first.
//   All live beams of a step run as one batch_runner step (one row each).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/infer/batch.hpp"
#include "typeformer/infer/paged_kv.hpp"
#include "typeformer/infer/transformer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

struct beam_options {
  index_t width = 4;                  ///< beams kept per step
  double length_penalty = 1.0;        ///< score = logprob / length^length_penalty
  bool early_stopping = true;         ///< stop once `width` hypotheses are finished
  std::int64_t max_tokens = 32;       ///< generated tokens at most
  std::vector<std::int32_t> eos_ids;  ///< tokens that finish a hypothesis
  index_t block_tokens = 16;          ///< KV block size
};

struct beam_hypothesis {
  std::vector<std::int32_t> tokens;  ///< generated tokens (an end token included)
  double logprob = 0;                ///< sum of the tokens' log-probabilities
  double score = 0;                  ///< logprob / tokens.size()^length_penalty
  bool finished = false;             ///< ended with an end token (else: max_tokens)
};

struct beam_stats {
  std::int64_t steps = 0;
  index_t peak_blocks = 0;      ///< KV blocks in use at most
  index_t unshared_blocks = 0;  ///< what the peak would be without sharing (whole copies)
};

template <class T, class Backend>
std::vector<beam_hypothesis> beam_search(const transformer<T, Backend>& model,
                                         std::span<const std::int32_t> prompt, beam_options o = {},
                                         beam_stats* stats = nullptr) {
  const model_config& c = model.config();
  const index_t V = c.vocab;
  if (o.width < 1)
    fail(errc::value, "tfm::infer::beam_search: width = ", o.width, " must be >= 1.");
  if (o.max_tokens < 1)
    fail(errc::value, "tfm::infer::beam_search: max_tokens = ", o.max_tokens, " must be >= 1.");
  if (prompt.empty()) fail(errc::value, "tfm::infer::beam_search: empty prompt.");
  for (std::int32_t t : prompt)
    if (t < 0 || t >= V)
      fail(errc::index, "tfm::infer::beam_search: token ", t, " is outside the vocabulary of ", V,
           ".");
  const index_t ctx = static_cast<index_t>(prompt.size()) + o.max_tokens;
  const index_t bt = std::max<index_t>(o.block_tokens, 1);
  const index_t per_seq = (ctx + bt - 1) / bt;
  paged_kv kv(c.n_layer, c.n_kv_head, c.head_dim,
              paged_kv_options{.block_tokens = bt, .blocks = per_seq * (2 * o.width + 1)});
  const index_t chunk =
      std::max<index_t>(std::min<index_t>(static_cast<index_t>(prompt.size()), 256), o.width);
  batch_runner<T, Backend> run(
      model, kv, batch_options{.max_tokens = chunk, .max_seqs = o.width, .context = ctx});
  auto penalized = [&](double lp, std::size_t len) {
    return lp / std::pow(static_cast<double>(len), o.length_penalty);
  };

  struct beam {
    paged_kv::seq_id seq;
    std::vector<std::int32_t> tokens;
    double logprob;
  };
  std::vector<beam> beams{{kv.create(), {}, 0.0}};
  std::vector<beam_hypothesis> done;
  beam_stats st;
  // The prompt, in chunks; the last chunk returns the logits of its last row.
  std::vector<float> rows;  // the live beams' logits, a row each
  {
    const index_t P = static_cast<index_t>(prompt.size());
    for (index_t at = 0; at < P;) {
      const index_t n = std::min(chunk, P - at);
      if (!kv.reserve(beams[0].seq, n)) fail(errc::value, "tfm::infer::beam_search: cache full.");
      const batch_item it{beams[0].seq, prompt.data() + at, n, at + n == P, false};
      const std::span<const float> lg = run.step(std::span<const batch_item>(&it, 1));
      if (at + n == P) rows.assign(lg.begin(), lg.end());
      at += n;
    }
  }
  struct cand {
    double logprob;
    std::size_t beam;
    std::int32_t token;
  };
  std::vector<cand> cands;
  std::vector<batch_item> items;
  std::vector<std::int32_t> next_tok;
  for (std::int64_t step = 0; step < o.max_tokens; ++step) {
    ++st.steps;
    cands.clear();
    for (std::size_t b = 0; b < beams.size(); ++b) {
      const float* row = rows.data() + b * static_cast<std::size_t>(V);
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (index_t t = 0; t < V; ++t) mx = std::max(mx, static_cast<double>(row[t]));
      for (index_t t = 0; t < V; ++t) sum += std::exp(static_cast<double>(row[t]) - mx);
      const double lse = mx + std::log(sum);
      for (index_t t = 0; t < V; ++t)
        cands.push_back({beams[b].logprob + static_cast<double>(row[t]) - lse, b,
                         static_cast<std::int32_t>(t)});
    }
    const std::size_t keep = std::min(cands.size(), static_cast<std::size_t>(2 * o.width));
    auto better = [](const cand& a, const cand& b) {
      if (a.logprob != b.logprob) return a.logprob > b.logprob;
      if (a.beam != b.beam) return a.beam < b.beam;
      return a.token < b.token;
    };
    std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(keep), cands.end(),
                      better);
    std::vector<beam> next;
    std::vector<int> children(beams.size(), 0);
    for (std::size_t i = 0; i < keep && static_cast<index_t>(next.size()) < o.width; ++i) {
      const cand& cd = cands[i];
      const bool eos = std::find(o.eos_ids.begin(), o.eos_ids.end(), cd.token) != o.eos_ids.end();
      std::vector<std::int32_t> toks = beams[cd.beam].tokens;
      toks.push_back(cd.token);
      if (eos) {
        if (static_cast<index_t>(i) < o.width)
          done.push_back({toks, cd.logprob, penalized(cd.logprob, toks.size()), true});
        continue;
      }
      const paged_kv::seq_id s =
          children[cd.beam]++ == 0 ? beams[cd.beam].seq : kv.fork(beams[cd.beam].seq);
      next.push_back({s, std::move(toks), cd.logprob});
    }
    for (std::size_t b = 0; b < beams.size(); ++b)
      if (children[b] == 0) kv.release(beams[b].seq);
    beams = std::move(next);
    // Done?
    bool stop = beams.empty() || step + 1 == o.max_tokens;
    if (!stop && static_cast<index_t>(done.size()) >= o.width) {
      if (o.early_stopping) {
        stop = true;
      } else {
        double worst = std::numeric_limits<double>::infinity();
        for (const auto& h : done) worst = std::min(worst, h.score);
        double best_live = -std::numeric_limits<double>::infinity();
        for (const beam& bm : beams) {
          const double bound =
              o.length_penalty > 0
                  ? bm.logprob / std::pow(static_cast<double>(o.max_tokens), o.length_penalty)
                  : penalized(bm.logprob, bm.tokens.size());
          best_live = std::max(best_live, bound);
        }
        stop = best_live <= worst;
      }
    }
    if (stop) break;
    // One step for every live beam's new token.
    items.clear();
    next_tok.resize(beams.size());
    for (std::size_t b = 0; b < beams.size(); ++b) {
      next_tok[b] = beams[b].tokens.back();
      if (!kv.reserve(beams[b].seq, 1)) fail(errc::value, "tfm::infer::beam_search: cache full.");
      items.push_back({beams[b].seq, &next_tok[b], 1, true, false});
    }
    st.peak_blocks = std::max(st.peak_blocks, kv.used_blocks());
    st.unshared_blocks = std::max<index_t>(
        st.unshared_blocks, static_cast<index_t>(beams.size()) *
                                ((static_cast<index_t>(prompt.size()) +
                                  static_cast<index_t>(beams[0].tokens.size()) + bt - 1) /
                                 bt));
    const std::span<const float> lg = run.step(items);
    rows.assign(lg.begin(), lg.end());
  }
  for (beam& bm : beams) {
    const double s = penalized(bm.logprob, bm.tokens.size());
    done.push_back({std::move(bm.tokens), bm.logprob, s, false});
    kv.release(bm.seq);
  }
  std::stable_sort(
      done.begin(), done.end(),
      [](const beam_hypothesis& a, const beam_hypothesis& b) { return a.score > b.score; });
  if (static_cast<index_t>(done.size()) > o.width) done.resize(static_cast<std::size_t>(o.width));
  if (stats) *stats = st;
  return done;
}

}  // namespace infer
TFM_END_NAMESPACE
