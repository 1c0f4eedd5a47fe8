// typeformer/infer/engine.hpp
//
// WHAT THIS REPRESENTS
//   infer::engine: the serving engine. Many requests at once over one model, scheduled at the
//   level of iterations (continuous batching, Yu et al. 2022 "Orca"), their keys and values in a
//   paged KV cache (infer/paged_kv.hpp; Kwon et al. 2023, arXiv:2309.06180) with prefix caching,
//   each step one forward over every running sequence (infer/batch.hpp). A C++ program embeds it
//   directly; `tfm serve` (tools/tfm/cmd_serve.cpp) is a thin HTTP layer over it.
//
//     infer::engine eng(model, {.max_seqs = 8, .token_text = piece_of});
//     auto id = eng.submit({.prompt = ids, .max_tokens = 64},
//                          [](const infer::token_event& e) { std::cout << e.text; });
//     eng.run_until_idle();          // or eng.start(): a background thread runs the steps
//
//   One step (step()):
//     1. takes what other threads submitted or cancelled since the last step (FCFS queue);
//        finishes cancelled and timed-out requests (their blocks return to the pool);
//     2. plans the batch under a token budget (max_batch_tokens) and max_seqs: every running
//        sequence that decodes gets its one token, sequences still prefilling get the next chunk
//        of their prompt, then waiting requests are admitted in arrival order while budget,
//        sequence slots and KV blocks last (chunked prefill mixed with decode). A new sequence
//        first takes the longest cached prefix of its prompt (whole blocks) from the prefix cache.
//        When the pool cannot hold a running sequence's next tokens, the most recently admitted
//        sequence is preempted: its blocks are freed and it goes back to the front of the queue
//        with its tokens so far, to be recomputed later (vLLM's recompute preemption); a
//        sequence that does not fit even alone ends with finish_reason::length (or error when it
//        has generated nothing);
//     3. runs the forward (batch_runner::step) and, for every sequence that reached the end of
//        its tokens, samples the next token (constraint mask, sampler), reports it through the
//        request's callback and checks the limits: end-of-generation ids and stop ids, stop
//        strings (matched on the output text; the stop string itself is not reported),
//        max_tokens, the context. A finished sequence publishes its full blocks to the prefix
//        cache and releases them.
//
//   Events: the callback gets one token_event per generated token, in order, on the thread that
//   runs step(); the last event of a request has finish != none (a request cancelled or timed
//   out gets a final event without a token). `text` holds whole UTF-8 characters only, and text
//   that could be the beginning of a stop string is held back until it is known not to be one.
//   A callback that throws cancels its request (a client that went away).
//
//   Thread safety: submit(), cancel() and stats() may be called from any thread; step() and
//   run_until_idle() from one thread at a time (start() runs them on a background thread).
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/infer/batch.hpp"
#include "typeformer/infer/paged_kv.hpp"
#include "typeformer/infer/sampler.hpp"
#include "typeformer/infer/transformer.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

using request_id = std::uint64_t;

/// Why a request ended. OpenAI's finish_reason is "stop" or "length"; the others are ours.
enum class finish_reason : std::uint8_t { none, stop, length, cancelled, timeout, error };

constexpr std::string_view finish_reason_name(finish_reason r) noexcept {
  constexpr std::string_view names[] = {"none", "stop", "length", "cancelled", "timeout", "error"};
  return names[static_cast<std::size_t>(r)];
}

/// A constraint on the next token (a grammar, JSON): mask() sets -inf on every token that cannot
/// continue the output; accept() sees the token that was chosen.
class token_constraint {
 public:
  virtual ~token_constraint() = default;
  virtual void mask(float* logits, index_t n) = 0;
  virtual void accept(std::int32_t token) = 0;
};

struct request {
  std::vector<std::int32_t> prompt;    ///< token ids (at least one)
  sampling_options sampling = {};      ///< infer/sampler.hpp; temperature 0 is greedy
  std::int64_t max_tokens = 128;       ///< new tokens at most (>= 1)
  std::vector<std::int32_t> stop_ids;  ///< more ids that end the output (after it)
  std::vector<std::string> stop;       ///< stop strings (need engine_options::token_text)
  bool ignore_eos = false;             ///< do not stop at engine_options::eos_ids
  double timeout_s = 0;                ///< ends with finish_reason::timeout after this (0: never)
  std::int32_t logprobs = -1;          ///< >= 0: report the token's log-probability and the top n
  std::shared_ptr<token_constraint> constraint;  ///< grammar / JSON constraint, or none
};

/// One of the most likely tokens of a step (infer/sampler.hpp's token_logprob).
using top_logprob = token_logprob;

struct token_event {
  request_id id = 0;
  std::int32_t token = -1;  ///< the new token; -1 on a final event without one
  std::string text;         ///< text this event adds to the output
  float logprob = 0;  ///< the token's log-probability (request::logprobs; sampler.hpp's source)
  std::vector<top_logprob> top;  ///< the most likely tokens, best first (request::logprobs)
  finish_reason finish = finish_reason::none;  ///< != none: the request's last event
  std::string error;                           ///< what went wrong (finish_reason::error)
  std::int64_t prompt_tokens = 0;              ///< usage, on the last event
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;  ///< prompt tokens taken from the prefix cache
};

using event_callback = std::function<void(const token_event&)>;

enum class submit_status : std::uint8_t { accepted, queue_full, shutting_down };
struct submit_result {
  submit_status status = submit_status::accepted;
  request_id id = 0;  ///< when accepted
};

struct engine_options {
  index_t max_seqs = 8;               ///< sequences in one step (the server's --parallel)
  index_t max_batch_tokens = 512;     ///< tokens in one step: decodes plus prefill chunks
  index_t context = 0;                ///< positions one sequence may reach; 0: min(model's, 2048)
  index_t kv_tokens = 0;              ///< KV pool size in tokens; 0: max_seqs * context
  std::size_t kv_bytes = 0;           ///< or in bytes (whole blocks; not both)
  index_t block_tokens = 16;          ///< positions per KV block
  kv_type kv = kv_type::f32;          ///< KV element type (kv_store.hpp)
  bool prefix_cache = true;           ///< reuse cached prompt blocks across requests
  std::size_t max_queue = 4096;       ///< waiting requests at most; submit() beyond it fails
  int threads = 0;                    ///< OpenMP threads of start()'s worker (0: the default)
  std::vector<std::int32_t> eos_ids;  ///< ids that end a request's output
  std::function<std::string(std::int32_t)> token_text;  ///< a token's bytes (event text, stops)
};

/// A Prometheus-style histogram: counts[i] observations <= bounds[i] and > bounds[i - 1];
/// counts.back() those above every bound.
struct histogram {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts;
  double sum = 0;
  std::uint64_t count = 0;

  histogram() = default;
  explicit histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void add(double v) {
    std::size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
    ++count;
  }
};

struct engine_stats {
  std::uint64_t submitted = 0;              ///< requests accepted by submit()
  std::array<std::uint64_t, 6> finished{};  ///< by finish_reason
  std::uint64_t prompt_tokens = 0;          ///< prompt tokens of admitted requests
  std::uint64_t cached_tokens = 0;          ///< of those, taken from the prefix cache
  std::uint64_t computed_tokens = 0;        ///< positions run through the model
  std::uint64_t generated_tokens = 0;
  std::uint64_t preemptions = 0;
  std::uint64_t steps = 0;
  std::int64_t running = 0, waiting = 0;
  std::int64_t kv_blocks_used = 0, kv_blocks_total = 0, block_tokens = 0;
  histogram ttft{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};     ///< seconds
  histogram itl{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}};  ///< seconds
  histogram step_tokens{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}};  ///< rows per step
};

template <class T = float, class Backend = cpu>
class engine {
  using clock = std::chrono::steady_clock;

 public:
  explicit engine(const transformer<T, Backend>& model, engine_options o = {})
      : m_(&model), cfg_(model.config()), o_(std::move(o)) {
    if (o_.max_seqs <= 0 || o_.max_batch_tokens <= 0 || o_.block_tokens <= 0)
      fail(errc::value, "tfm::infer::engine: max_seqs = ", o_.max_seqs,
           ", max_batch_tokens = ", o_.max_batch_tokens, ", block_tokens = ", o_.block_tokens,
           " must be positive.");
    ctx_ = o_.context > 0 ? o_.context : std::min<index_t>(cfg_.context_length, 2048);
    if (cfg_.position == nn::position_kind::learned) ctx_ = std::min(ctx_, cfg_.context_length);
    o_.max_seqs = std::min(o_.max_seqs, o_.max_batch_tokens);
    if (o_.kv_tokens > 0 && o_.kv_bytes > 0)
      fail(errc::value, "tfm::infer::engine: set the KV pool in tokens (kv_tokens = ", o_.kv_tokens,
           ") or in bytes (kv_bytes = ", o_.kv_bytes, "), not both.");
    const paged_kv_options po{.block_tokens = o_.block_tokens, .blocks = 0, .type = o_.kv};
    const index_t tokens = o_.kv_tokens > 0 ? o_.kv_tokens : o_.max_seqs * ctx_;
    const index_t blocks = o_.kv_bytes > 0
                               ? paged_kv::blocks_for_bytes(o_.kv_bytes, cfg_.n_layer,
                                                            cfg_.n_kv_head, cfg_.head_dim, po)
                               : (tokens + o_.block_tokens - 1) / o_.block_tokens;
    if (blocks <= 0)
      fail(errc::value, "tfm::infer::engine: kv_bytes = ", o_.kv_bytes,
           " does not hold one KV block of ", o_.block_tokens, " positions (",
           paged_kv::bytes_per_block(cfg_.n_layer, cfg_.n_kv_head, cfg_.head_dim, po), " bytes).");
    paged_kv_options pool = po;
    pool.blocks = blocks;
    kv_ = std::make_unique<paged_kv>(cfg_.n_layer, cfg_.n_kv_head, cfg_.head_dim, pool);
    kv_->prepare(o_.max_seqs + 1, ctx_);  // sequence slots and block tables, once
    run_ = std::make_unique<batch_runner<T, Backend>>(
        model, *kv_,
        batch_options{.max_tokens = o_.max_batch_tokens, .max_seqs = o_.max_seqs, .context = ctx_});
    items_.reserve(static_cast<std::size_t>(o_.max_seqs));
    row_.resize(static_cast<std::size_t>(cfg_.vocab));
    for (std::int32_t id : o_.eos_ids) check_id(id, "eos id");
  }
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  ~engine() { shutdown(false); }

  const model_config& config() const noexcept { return cfg_; }
  index_t context() const noexcept { return ctx_; }
  const engine_options& options() const noexcept { return o_; }
  const paged_kv& cache() const noexcept { return *kv_; }

  /// Queues a request; `cb` receives its events (see the file comment). Checks the request
  /// first: an empty prompt, a token outside the vocabulary, a prompt that leaves no room in the
  /// context, max_tokens < 1, bad sampling options, stop strings without token_text, a full
  /// queue or an engine that is shutting down are errors (errc::value / errc::index), and
  /// nothing is queued.
  request_id submit(request r, event_callback cb) {
    const submit_result res = try_submit(std::move(r), std::move(cb));
    if (res.status == submit_status::shutting_down)
      fail(errc::value, "tfm::infer::engine: the engine is shutting down; request refused.");
    if (res.status == submit_status::queue_full)
      fail(errc::value, "tfm::infer::engine: the queue holds ", o_.max_queue,
           " requests already; try again later.");
    return res.id;
  }

  /// submit() that reports a full queue or a shutting-down engine in its result instead of an
  /// error (a server answers them with 429 / 503, not 400); a bad request is still an error.
  submit_result try_submit(request r, event_callback cb) {
    validate(r);
    auto s = std::make_unique<sequence>(std::move(r), std::move(cb));
    std::lock_guard lock(mu_);
    if (!accepting_) return {submit_status::shutting_down, 0};
    if (inbox_.size() + static_cast<std::size_t>(queued_) >= o_.max_queue)
      return {submit_status::queue_full, 0};
    s->id = ++next_id_;
    s->submitted = clock::now();
    const request_id id = s->id;
    inbox_.push_back(std::move(s));
    ++stats_.submitted;
    cv_.notify_all();
    return {submit_status::accepted, id};
  }

  /// Asks for a request to end with finish_reason::cancelled at the next step (its blocks are
  /// freed, its callback gets a final event). An unknown or finished id is ignored.
  void cancel(request_id id) {
    std::lock_guard lock(mu_);
    cancels_.push_back(id);
    cv_.notify_all();
  }

  /// True while requests are queued or running.
  bool busy() const {
    std::lock_guard lock(mu_);
    return !inbox_.empty() || !cancels_.empty() || queued_ + active_ > 0;
  }

  engine_stats stats() const {
    std::lock_guard lock(mu_);
    engine_stats s = stats_;
    s.running = active_;
    s.waiting = queued_ + static_cast<std::int64_t>(inbox_.size());
    return s;
  }

  /// One scheduler iteration (file comment). Returns false when there was nothing to do.
  bool step() {
    intake();
    expire();
    if (running_.empty() && waiting_.empty()) {
      publish_counts();
      return false;
    }
    schedule();
    if (!items_.empty()) execute();
    publish_counts();
    return true;
  }

  /// Steps until no request is queued or running.
  void run_until_idle() {
    while (step() || busy()) {
    }
  }

  /// Runs the steps on a background thread until shutdown().
  void start() {
    std::lock_guard lock(mu_);
    if (worker_.joinable()) return;
    stop_ = false;
    worker_ = std::thread([this] {
      if (o_.threads > 0) set_num_threads(o_.threads);  // OpenMP's count is per thread
      loop();
    });
  }

  /// Stops admitting requests; with `drain` the running and queued requests finish, otherwise
  /// they are cancelled. Returns when none is left (joins the background thread).
  void shutdown(bool drain = true) {
    {
      std::lock_guard lock(mu_);
      accepting_ = false;
      if (!drain) cancel_all_ = true;
      cv_.notify_all();
    }
    if (worker_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stop_ = true;  // the loop exits once idle
        cv_.notify_all();
      }
      worker_.join();
    } else {
      run_until_idle();
    }
  }

 private:
  struct sequence {
    sequence(request r, event_callback c)
        : req(std::move(r)), cb(std::move(c)), pick(req.sampling) {}
    request req;
    event_callback cb;
    sampler pick;
    request_id id = 0;
    std::vector<std::int32_t> tokens;  // prompt, then generated tokens
    index_t prompt_len = 0;
    index_t computed = 0;  // positions whose keys and values are in the cache
    paged_kv::seq_id seq = -1;
    std::int64_t generated = 0, cached = 0;
    std::string text;         // the generated text so far
    std::size_t emitted = 0;  // bytes of text already reported
    clock::time_point submitted, last_token;
    bool started = false;  // first token reported
    bool counted = false;  // prompt counted in the stats
  };
  using seq_ptr = std::unique_ptr<sequence>;

  void check_id(std::int32_t id, const char* what) const {
    if (id < 0 || id >= cfg_.vocab)
      fail(errc::index, "tfm::infer::engine: ", what, " ", id, " is outside the vocabulary of ",
           cfg_.vocab, ".");
  }

  void validate(const request& r) const {
    if (r.prompt.empty()) fail(errc::value, "tfm::infer::engine: the prompt has no tokens.");
    for (std::int32_t id : r.prompt) check_id(id, "prompt token");
    for (std::int32_t id : r.stop_ids) check_id(id, "stop id");
    if (static_cast<index_t>(r.prompt.size()) >= ctx_)
      fail(errc::value, "tfm::infer::engine: the prompt has ", r.prompt.size(),
           " tokens; the context holds ", ctx_, " positions, so at most ", ctx_ - 1,
           " prompt tokens leave room for one new token.");
    if (r.max_tokens < 1)
      fail(errc::value, "tfm::infer::engine: max_tokens = ", r.max_tokens, " must be >= 1.");
    if (!r.stop.empty() && !o_.token_text)
      fail(errc::value,
           "tfm::infer::engine: stop strings need engine_options::token_text (token bytes).");
    for (const std::string& s : r.stop)
      if (s.empty()) fail(errc::value, "tfm::infer::engine: a stop string is empty.");
    if (!(r.timeout_s >= 0))
      fail(errc::value, "tfm::infer::engine: timeout_s = ", r.timeout_s, " must be >= 0.");
    if (r.logprobs > 20)
      fail(errc::value, "tfm::infer::engine: logprobs = ", r.logprobs, " must be at most 20.");
    infer::validate(r.sampling, cfg_.vocab);  // the sampler's checks, logit_bias ids included
  }

  // ---- queue ---------------------------------------------------------------------------------

  void intake() {
    std::vector<request_id> cancels;
    bool all = false;
    {
      std::lock_guard lock(mu_);
      for (seq_ptr& s : inbox_) waiting_.push_back(std::move(s));
      inbox_.clear();
      cancels.swap(cancels_);
      all = cancel_all_;
      queued_ = static_cast<std::int64_t>(waiting_.size());
    }
    auto cancelled = [&](const sequence& s) {
      return all || std::find(cancels.begin(), cancels.end(), s.id) != cancels.end();
    };
    end_if(cancelled, finish_reason::cancelled);
  }

  void expire() {
    const auto now = clock::now();
    end_if(
        [&](const sequence& s) {
          return s.req.timeout_s > 0 &&
                 std::chrono::duration<double>(now - s.submitted).count() > s.req.timeout_s;
        },
        finish_reason::timeout);
  }

  /// Ends every waiting or running sequence for which pred holds.
  template <class Pred>
  void end_if(Pred&& pred, finish_reason why) {
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (pred(**it)) {
        finish(**it, why);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = running_.begin(); it != running_.end();) {
      if (pred(**it)) {
        finish(**it, why);
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // ---- scheduling ----------------------------------------------------------------------------

  index_t pending(const sequence& s) const {
    return static_cast<index_t>(s.tokens.size()) - s.computed;
  }

  /// Frees the blocks of the most recently admitted running sequence and puts it back at the
  /// front of the queue (recomputed when it is admitted again).
  void preempt_last() {
    seq_ptr s = std::move(running_.back());
    running_.pop_back();
    items_.erase(std::remove_if(items_.begin(), items_.end(),
                                [&](const batch_item& it) { return it.seq == s->seq; }),
                 items_.end());
    if (o_.prefix_cache && s->computed > 0)  // its blocks may still be there when it returns
      kv_->publish(s->seq, std::span<const std::int32_t>(s->tokens.data(),
                                                         static_cast<std::size_t>(s->computed)));
    kv_->release(s->seq);
    s->seq = -1;
    s->computed = 0;
    waiting_.push_front(std::move(s));
    ++preempted_;
  }

  void schedule() {
    items_.clear();
    index_t budget = o_.max_batch_tokens;
    // Running sequences, oldest first: decodes (one token) and prefill chunks.
    for (std::size_t i = 0; i < running_.size() && budget > 0;) {
      sequence& s = *running_[i];
      const index_t n = std::min(pending(s), budget);
      if (kv_->reserve(s.seq, n)) {
        items_.push_back({s.seq, s.tokens.data() + s.computed, n, n == pending(s)});
        budget -= n;
        ++i;
        continue;
      }
      if (i + 1 < running_.size()) {  // room from the newest sequence
        preempt_last();
        continue;
      }
      if (i > 0) {  // s is the newest: it waits for the others
        preempt_last();
        break;
      }
      // Alone and still too large for the pool.
      seq_ptr alone = std::move(running_.front());
      running_.erase(running_.begin());
      finish(*alone, alone->generated > 0 ? finish_reason::length : finish_reason::error,
             "the KV cache pool (" + std::to_string(kv_->total_blocks() * kv_->block_tokens()) +
                 " tokens) cannot hold this request");
      break;
    }
    // Admissions, first come first served, while there is room.
    while (!waiting_.empty() && budget > 0 && static_cast<index_t>(running_.size()) < o_.max_seqs) {
      sequence& s = *waiting_.front();
      if (s.tokens.empty()) {
        s.tokens = s.req.prompt;
        s.prompt_len = static_cast<index_t>(s.tokens.size());
      }
      s.seq = kv_->create();
      s.computed = 0;
      if (o_.prefix_cache) {
        const index_t hit = kv_->attach_prefix(s.seq, s.tokens);
        s.computed = hit;
        if (!s.counted) s.cached = hit;
      }
      const index_t n = std::min(pending(s), budget);
      if (!kv_->reserve(s.seq, n)) {
        kv_->release(s.seq);
        s.seq = -1;
        if (running_.empty()) {  // nothing will free blocks: it cannot fit at all
          seq_ptr big = std::move(waiting_.front());
          waiting_.pop_front();
          finish(*big, finish_reason::error,
                 "the KV cache pool cannot hold the " + std::to_string(n) + " positions asked for");
          continue;
        }
        break;
      }
      if (!s.counted) {
        s.counted = true;
        prompt_tokens_ += static_cast<std::uint64_t>(s.prompt_len);
        cached_tokens_ += static_cast<std::uint64_t>(s.cached);
      }
      items_.push_back({s.seq, s.tokens.data() + s.computed, n, n == pending(s)});
      budget -= n;
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }

  // ---- execution -----------------------------------------------------------------------------

  void execute() {
    std::span<const float> logits;
    std::string err;
    if (!guarded([&] { logits = run_->step(items_); }, err)) {
      // A failed step: its sequences cannot be trusted; end them.
      for (seq_ptr& s : running_) finish(*s, finish_reason::error, err);
      running_.clear();
      return;
    }
    index_t rows = 0;
    for (const batch_item& it : items_) rows += it.n;
    computed_tokens_ += static_cast<std::uint64_t>(rows);
    ++steps_;
    step_rows_.push_back(rows);
    std::size_t row = 0;
    const std::size_t V = static_cast<std::size_t>(cfg_.vocab);
    for (const batch_item& it : items_) {
      auto s_it = std::find_if(running_.begin(), running_.end(),
                               [&](const seq_ptr& p) { return p->seq == it.seq; });
      sequence& s = **s_it;
      s.computed += it.n;
      if (!it.logits) continue;
      std::copy_n(logits.data() + row * V, V, row_.data());
      ++row;
      const finish_reason why = next_token(s);
      if (why != finish_reason::none) {
        finish(s, why);
        running_.erase(s_it);
      }
    }
  }

  /// Samples, reports and checks the limits of one sequence; returns why it ends (or none).
  finish_reason next_token(sequence& s) {
    float* L = row_.data();
    const index_t V = cfg_.vocab;
    std::string err;
    if (s.req.constraint && !guarded([&] { s.req.constraint->mask(L, V); }, err)) {
      error_ = err;
      return finish_reason::error;
    }
    token_event e;
    e.id = s.id;
    sample_result sr;
    if (!guarded(
            [&] {
              sr = s.pick.sample(L, V, std::span<const std::int32_t>(s.tokens), s.req.logprobs);
            },
            err)) {
      error_ = err;
      return finish_reason::error;
    }
    const std::int32_t tok = sr.token;
    if (s.req.logprobs >= 0) {
      e.logprob = sr.logprob;
      e.top.assign(sr.top.begin(), sr.top.end());
    }
    if (s.req.constraint && !guarded([&] { s.req.constraint->accept(tok); }, err)) {
      error_ = err;
      return finish_reason::error;
    }
    s.tokens.push_back(tok);
    ++s.generated;
    ++generated_tokens_;
    const auto now = clock::now();
    if (!s.started) {
      s.started = true;
      ttft_.push_back(std::chrono::duration<double>(now - s.submitted).count());
    } else {
      itl_.push_back(std::chrono::duration<double>(now - s.last_token).count());
    }
    s.last_token = now;
    e.token = tok;
    finish_reason why = finish_reason::none;
    const bool eos = !s.req.ignore_eos &&
                     std::find(o_.eos_ids.begin(), o_.eos_ids.end(), tok) != o_.eos_ids.end();
    const bool stop_id =
        std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), tok) != s.req.stop_ids.end();
    if (eos || stop_id) {
      why = finish_reason::stop;  // the end token adds no text
    } else if (o_.token_text) {
      s.text += o_.token_text(tok);
      if (stop_string(s)) why = finish_reason::stop;
    }
    if (why == finish_reason::none) {
      if (s.generated >= s.req.max_tokens || static_cast<index_t>(s.tokens.size()) >= ctx_)
        why = finish_reason::length;
    }
    const std::size_t ready = why == finish_reason::none ? safe_end(s) : s.text.size();
    e.text.assign(s.text, s.emitted, ready - s.emitted);
    s.emitted = ready;
    if (why != finish_reason::none) fill_final(s, why, e);
    if (!deliver(s, e)) return finish_reason::cancelled;
    if (why != finish_reason::none) s.cb = nullptr;  // reported: finish() stays silent
    return why;
  }

  /// True when the text now contains a stop string; cuts the text before it.
  static bool stop_string(sequence& s) {
    std::size_t longest = 0;
    for (const std::string& st : s.req.stop) longest = std::max(longest, st.size());
    const std::size_t from = s.emitted > longest ? s.emitted - longest : 0;
    std::size_t cut = std::string::npos;
    for (const std::string& st : s.req.stop) {
      const std::size_t at = s.text.find(st, from);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut == std::string::npos) return false;
    s.text.resize(std::max(cut, s.emitted));
    return true;
  }

  /// How much of the text can be reported: not a possible beginning of a stop string, not part
  /// of an unfinished UTF-8 character.
  static std::size_t safe_end(const sequence& s) {
    const std::string& t = s.text;
    std::size_t end = t.size();
    for (const std::string& st : s.req.stop)  // the longest suffix that begins a stop string
      for (std::size_t k = std::min(st.size() - 1, t.size()); k > 0; --k)
        if (t.compare(t.size() - k, k, st, 0, k) == 0) {
          end = std::min(end, t.size() - k);
          break;
        }
    // Back off an incomplete UTF-8 character at the end.
    std::size_t i = end, cont = 0;
    while (i > s.emitted && cont < 3 && (static_cast<unsigned char>(t[i - 1]) & 0xC0) == 0x80) {
      --i;
      ++cont;
    }
    if (i > s.emitted) {
      const unsigned char lead = static_cast<unsigned char>(t[i - 1]);
      const std::size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      if (need > cont + 1) end = i - 1;  // the character is not complete yet
    }
    return std::max(end, s.emitted);
  }

  void fill_final(const sequence& s, finish_reason why, token_event& e) const {
    e.finish = why;
    if (why == finish_reason::error) e.error = error_;
    e.prompt_tokens =
        s.prompt_len > 0 ? s.prompt_len : static_cast<std::int64_t>(s.req.prompt.size());
    e.completion_tokens = s.generated;
    e.cached_tokens = s.cached;
  }

  /// Calls the request's callback; false when it threw (the client is gone).
  bool deliver(sequence& s, const token_event& e) {
    if (!s.cb) return true;
    std::string ignored;
    if (guarded([&] { s.cb(e); }, ignored)) return true;
    s.cb = nullptr;
    return false;
  }

  /// Ends a sequence: a final event (when its last token's event did not carry the reason),
  /// its full blocks into the prefix cache, its blocks back to the pool.
  void finish(sequence& s, finish_reason why, const std::string& what = {}) {
    if (s.cb) {
      token_event e;
      e.id = s.id;
      if (why == finish_reason::error && !what.empty()) error_ = what;
      // The text held back for a possible stop string is the output's after all.
      if (s.emitted < s.text.size()) e.text.assign(s.text, s.emitted, std::string::npos);
      fill_final(s, why, e);
      deliver(s, e);
      s.cb = nullptr;
    }
    if (s.seq >= 0) {
      if (o_.prefix_cache && s.computed > 0)
        kv_->publish(s.seq, std::span<const std::int32_t>(s.tokens.data(),
                                                          static_cast<std::size_t>(s.computed)));
      kv_->release(s.seq);
      s.seq = -1;
    }
    ++finished_[static_cast<std::size_t>(why)];
  }

  /// Moves this thread's counters into the shared stats.
  void publish_counts() {
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < finished_.size(); ++i) stats_.finished[i] += finished_[i];
    finished_ = {};
    stats_.prompt_tokens += std::exchange(prompt_tokens_, 0);
    stats_.cached_tokens += std::exchange(cached_tokens_, 0);
    stats_.computed_tokens += std::exchange(computed_tokens_, 0);
    stats_.generated_tokens += std::exchange(generated_tokens_, 0);
    stats_.preemptions += std::exchange(preempted_, 0);
    stats_.steps += std::exchange(steps_, 0);
    for (double v : ttft_) stats_.ttft.add(v);
    for (double v : itl_) stats_.itl.add(v);
    for (index_t v : step_rows_) stats_.step_tokens.add(static_cast<double>(v));
    ttft_.clear();
    itl_.clear();
    step_rows_.clear();
    active_ = static_cast<std::int64_t>(running_.size());
    queued_ = static_cast<std::int64_t>(waiting_.size());
    stats_.kv_blocks_used = kv_->used_blocks();
    stats_.kv_blocks_total = kv_->total_blocks();
    stats_.block_tokens = kv_->block_tokens();
  }

  void loop() {
    for (;;) {
      const bool worked = step();
      std::unique_lock lock(mu_);
      const bool idle = inbox_.empty() && cancels_.empty() && queued_ + active_ == 0;
      if (stop_ && idle) return;
      if (!worked && idle)
        cv_.wait(lock, [&] { return stop_ || !inbox_.empty() || !cancels_.empty(); });
    }
  }

  /// Runs f; false with the error's text in `what` when it threw (always true without
  /// exceptions, where errors go to the error handler).
  template <class F>
  static bool guarded(F&& f, std::string& what) {
#if TFM_NO_EXCEPTIONS
    (void)what;
    f();
    return true;
#else
    try {
      f();
      return true;
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
      what = "unknown error";
    }
    return false;
#endif
  }

  const transformer<T, Backend>* m_;
  model_config cfg_;
  engine_options o_;
  index_t ctx_ = 0;
  std::unique_ptr<paged_kv> kv_;
  std::unique_ptr<batch_runner<T, Backend>> run_;

  // The stepping thread's state.
  std::deque<seq_ptr> waiting_;
  std::vector<seq_ptr> running_;  // in admission order
  std::vector<batch_item> items_;
  std::vector<float> row_;
  std::string error_;
  std::array<std::uint64_t, 6> finished_{};
  std::uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, computed_tokens_ = 0, generated_tokens_ = 0,
                preempted_ = 0, steps_ = 0;
  std::vector<double> ttft_, itl_;
  std::vector<index_t> step_rows_;

  // Shared with other threads (under mu_).
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<seq_ptr> inbox_;
  std::vector<request_id> cancels_;
  request_id next_id_ = 0;
  bool accepting_ = true, cancel_all_ = false, stop_ = false;
  std::int64_t queued_ = 0, active_ = 0;
  engine_stats stats_;
  std::thread worker_;
};

}  // namespace infer
TFM_END_NAMESPACE
