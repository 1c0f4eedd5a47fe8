// Shared by the train tests: a micro GPT, a small synthetic corpus and a training loop built from
// train::train_step / evaluate / save_training_state, as examples/mini_gpt uses them.
#pragma once

#include <typeformer/backend/cpu/parallel.hpp>
#include <typeformer/nn/gpt.hpp>
#include <typeformer/optim/optimizer.hpp>
#include <typeformer/train/data.hpp>
#include <typeformer/train/trainer.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

namespace tfm_train_test {
using namespace tfm;

/// A micro GPT-2 style config (byte vocabulary unless `vocab` says otherwise); `dropout`
/// exercises the dropout counter.
inline nn::dynamic_config micro_config(double dropout = 0.0, bool llama = false,
                                       index_t vocab = 256) {
  nn::dynamic_config c;
  c.vocab = vocab;
  c.block_size = 16;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;
  c.n_kv_head = llama ? 2 : 4;
  c.ffn = 64;
  c.dropout = dropout;
  if (llama) {
    c.norm = nn::norm_kind::rms_norm;
    c.mlp = nn::mlp_kind::swiglu;
    c.position = nn::position_kind::rope;
    c.bias = false;
    c.tie_embeddings = false;
  }
  return c;
}

/// Deterministic English-like text (no files needed).
inline std::string micro_text() {
  const char* words[] = {"the ", "cat ", "sat ", "on ",  "a ",    "mat ",
                         "and ", "dog ", "ran ", "far ", "away. "};
  std::string text;
  std::uint64_t x = 12345;
  for (int i = 0; i < 6000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(x >> 33) % 11];
  }
  return text;
}
inline train::token_dataset micro_corpus() {
  return train::token_dataset::from_texts({micro_text()}, train::byte_tokenizer{}, 256, 0.1);
}

struct run_options {
  std::int64_t total = 8;  // schedule length
  index_t batch = 2, seq = 16;
  std::int64_t grad_accum = 1;
  double dropout = 0.0;
  bool llama = false;
  std::uint64_t seed = 7;
  index_t vocab = 256;  // the tokenizer's vocabulary
};

inline train::step_options step_opts(const run_options& o) {
  train::step_options so;
  so.batch = o.batch;
  so.seq = o.seq;
  so.grad_accum = o.grad_accum;
  so.clip = 1.0;
  so.schedule = optim::lr_schedule::warmup_cosine(3e-3, 3e-4, 2, o.total);
  return so;
}

inline optim::adam_options adam_opts() {
  optim::adam_options a;
  a.lr = 3e-3;
  a.beta2 = 0.95;
  a.weight_decay = 0.1;
  return a;
}

/// A model, its optimizer and training state, built the way a fresh process builds them.
template <class T>
struct session {
  nn::gpt<nn::dynamic_config, T> model;
  nn::parameter_list<T> ps;
  optim::optimizer<T> opt;
  train::training_state st;

  explicit session(const run_options& o)
      : model(micro_config(o.dropout, o.llama, o.vocab), o.seed),
        ps(model.parameters()),
        opt(optim::adamw(ps, adam_opts())) {
    st.model_seed = o.seed;
    st.data_seed = o.seed * 31 + 1;
    train::put_config(st.meta, micro_config(o.dropout, o.llama, o.vocab));
  }
  /// Restores from a checkpoint (parameters, optimizer, counters, curve).
  void load(const std::string& path) {
    st = train::load_training_state(path, ps, opt);
    model.set_dropout_offset(st.dropout_offset);
  }
  /// Runs steps until st.step == until, evaluating every 4 steps; saves to `path` after each
  /// step when path is not empty.
  void train_to(const run_options& o, const train::token_dataset& data, std::int64_t until,
                const std::string& path = {}) {
    const auto so = step_opts(o);
    const auto val = data.evaluation_batches(train::split::validation, o.batch, o.seq, 2);
    while (st.step < until) {
      train::train_step(model, opt, data, so, st);
      if (st.step % 4 == 0) train::record_validation(st, train::evaluate(model, val));
      if (!path.empty()) train::save_training_state(path, ps, opt, st);
    }
  }
};

/// Bitwise equality of two curves (NaN == NaN when the bits agree).
inline bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
inline bool same_curve(const std::vector<train::curve_point>& a,
                       const std::vector<train::curve_point>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].step != b[i].step || !same_bits(a[i].lr, b[i].lr) ||
        !same_bits(a[i].train_loss, b[i].train_loss) || !same_bits(a[i].val_loss, b[i].val_loss))
      return false;
  return true;
}

/// Parameters equal bit for bit.
template <class T>
bool same_parameters(const nn::parameter_list<T>& a, const nn::parameter_list<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].data->size() != b[i].data->size()) return false;
    if (std::memcmp(a[i].data->value.data(), b[i].data->value.data(),
                    static_cast<std::size_t>(a[i].data->size()) * sizeof(T)) != 0)
      return false;
  }
  return true;
}

inline std::string temp_path(const std::string& name) {
  return std::string("/tmp/tfm_test_train_") + std::to_string(static_cast<long>(::getpid())) + "_" +
         name;
}

}  // namespace tfm_train_test
