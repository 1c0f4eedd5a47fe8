// typeformer/train/trainer.hpp
//
// The pieces of a language-model training loop that must agree exactly between a run and its
// resumed twin:
//
//   train::training_state st;                     // step, data-loader position, dropout offset,
//   st.model_seed = 1; st.data_seed = 2;          // seeds, loss curve, run settings (meta)
//   train::step_options so{.batch = 8, .seq = 128, .grad_accum = 1, .clip = 1.0,
//                          .schedule = optim::lr_schedule::warmup_cosine(1e-3, 1e-4, 50, 1000)};
//   auto r = train::train_step(model, opt, data, so, st);   // one optimizer step
//   double v = train::evaluate(model, data.evaluation_batches(train::split::validation, B, T, n));
//   train::save_training_state("ckpt.bin", model.parameters(), opt, st);   // atomic, checksummed
//   ...
//   train::training_state back = train::load_training_state("ckpt.bin", ps, opt);  // exact resume
//
// Exactness. A step draws its micro-batches from the counter-based data loader at
// (data_seed, batch_index), batch_index advancing by one per micro-batch; dropout masks come
// from the model's counter at dropout_offset. The checkpoint stores both counters, every
// parameter (by its stable name, in its own element type), the optimizer state (moments, f32
// master weights of bf16 parameters, step count) and the loss curve; reloading them into a
// freshly built model and optimizer continues the run bitwise (same thread count; the cpu
// kernels are deterministic).
//
// Checkpoint records (io/checkpoint.hpp): one tensor per parameter under its name; blob
// "optimizer" (optimizer::save); tensors "state/curve.step" (i64), "state/curve.lr",
// "state/curve.train_loss", "state/curve.val_loss" (f64, NaN = not measured at that step);
// metadata "state.*" (format, step, batch_index, dropout_offset, seeds, dtype) and the caller's
// own keys (training_state::meta, e.g. "config.n_layer", "run.lr"); the caller's blobs
// (training_state::blobs, e.g. a tokenizer.json) under their own names, listed in
// "state.blob_keys" (written only when there are any, so checkpoints without blobs are
// unchanged; a checkpoint without the key reads back with no blobs).
//
// Grad accumulation: k micro-batches per step, each loss scaled by 1/k before backward, so the
// gradient is that of the mean loss over the k micro-batches; the recorded training loss is the
// mean of the k losses.
#pragma once

#include "typeformer/autodiff/variable.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/io/checkpoint.hpp"
#include "typeformer/nn/config.hpp"
#include "typeformer/nn/module.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/train/data.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// One step of the loss curve. NaN marks a value not measured at that step.
struct curve_point {
  std::int64_t step = 0;  // optimizer steps done when the point was taken
  double lr = std::numeric_limits<double>::quiet_NaN();          // rate of that step
  double train_loss = std::numeric_limits<double>::quiet_NaN();  // mean over its micro-batches
  double val_loss = std::numeric_limits<double>::quiet_NaN();    // validation loss after it
};

/// Everything besides parameters and optimizer state that a resumed run needs.
struct training_state {
  std::int64_t step = 0;             // optimizer steps done
  std::uint64_t batch_index = 0;     // next data-loader batch index
  std::uint64_t dropout_offset = 0;  // the model's dropout counter (nn::gpt::dropout_offset)
  std::uint64_t model_seed = 0, data_seed = 0;
  std::vector<curve_point> curve;
  std::map<std::string, std::string> meta;   // the caller's settings (keys not starting "state.")
  std::map<std::string, std::string> blobs;  // the caller's byte blobs (e.g. "tokenizer.json")
};

/// Checkpoint format version written in "state.format".
inline constexpr std::string_view training_state_format = "tfm-train-1";

// ---- text forms of config enums and numbers ------------------------------------------------

/// The words of a config enum, in enumerator order ("|"-separated, as help text shows them).
inline const char* words_of(nn::norm_kind) { return "layer_norm|rms_norm"; }
inline const char* words_of(nn::mlp_kind) { return "gelu|swiglu|moe"; }
inline const char* words_of(moe_router_kind) {
  return "softmax_topk|gshard_topk|switch_top1|sigmoid_bias|expert_choice|noisy_topk";
}
inline const char* words_of(nn::position_kind) { return "learned|rope|alibi"; }

inline const char* to_string(nn::norm_kind k) {
  return k == nn::norm_kind::rms_norm ? "rms_norm" : "layer_norm";
}
inline const char* to_string(nn::mlp_kind k) {
  return k == nn::mlp_kind::swiglu ? "swiglu" : k == nn::mlp_kind::moe ? "moe" : "gelu";
}
inline const char* to_string(moe_router_kind k) {
  switch (k) {
    case moe_router_kind::softmax_topk:
      return "softmax_topk";
    case moe_router_kind::gshard_topk:
      return "gshard_topk";
    case moe_router_kind::switch_top1:
      return "switch_top1";
    case moe_router_kind::sigmoid_bias:
      return "sigmoid_bias";
    case moe_router_kind::expert_choice:
      return "expert_choice";
    case moe_router_kind::noisy_topk:
      return "noisy_topk";
  }
  return "softmax_topk";
}
inline const char* to_string(nn::position_kind k) {
  return k == nn::position_kind::rope    ? "rope"
         : k == nn::position_kind::alibi ? "alibi"
                                         : "learned";
}

namespace detail {
// Enum words; false for anything else.
inline bool parse_word(std::string_view s, nn::norm_kind& k) {
  if (s == "layer_norm" || s == "layernorm") return k = nn::norm_kind::layer_norm, true;
  if (s == "rms_norm" || s == "rmsnorm") return k = nn::norm_kind::rms_norm, true;
  return false;
}
inline bool parse_word(std::string_view s, nn::mlp_kind& k) {
  if (s == "gelu") return k = nn::mlp_kind::gelu, true;
  if (s == "swiglu") return k = nn::mlp_kind::swiglu, true;
  if (s == "moe") return k = nn::mlp_kind::moe, true;
  return false;
}
inline bool parse_word(std::string_view s, moe_router_kind& k) {
  for (auto c :
       {moe_router_kind::softmax_topk, moe_router_kind::gshard_topk, moe_router_kind::switch_top1,
        moe_router_kind::sigmoid_bias, moe_router_kind::expert_choice, moe_router_kind::noisy_topk})
    if (s == to_string(c)) return k = c, true;
  return false;
}
inline bool parse_word(std::string_view s, nn::position_kind& k) {
  if (s == "learned") return k = nn::position_kind::learned, true;
  if (s == "rope") return k = nn::position_kind::rope, true;
  if (s == "alibi") return k = nn::position_kind::alibi, true;
  return false;
}
// "a|b|c" -> "a, b or c"
inline std::string words_sentence(std::string_view w) {
  std::string r(w);
  const auto last = r.rfind('|');
  for (auto& ch : r)
    if (ch == '|') ch = ',';
  std::string out;
  for (std::size_t i = 0; i < r.size(); ++i) {
    if (r[i] == ',') {
      out += i == last ? " or " : ", ";
    } else {
      out += r[i];
    }
  }
  return out;
}
template <class E>
E parse_enum(std::string_view s, const char* field) {
  E k{};
  if (!parse_word(s, k))
    fail(errc::value, field, " must be ", words_sentence(words_of(E{})), ", not '", std::string(s),
         "'.");
  return k;
}
}  // namespace detail

/// Parses "layer_norm" | "rms_norm" (value_error naming the accepted words otherwise).
inline nn::norm_kind parse_norm(std::string_view s) {
  return detail::parse_enum<nn::norm_kind>(s, "norm");
}
inline nn::mlp_kind parse_mlp(std::string_view s) {
  return detail::parse_enum<nn::mlp_kind>(s, "mlp");
}
inline nn::position_kind parse_position(std::string_view s) {
  return detail::parse_enum<nn::position_kind>(s, "position");
}

/// Exact text of a double (shortest round-trip form; "nan" for NaN).
inline std::string exact_string(double v) {
  if (std::isnan(v)) return "nan";
  char b[64];
  auto r = std::to_chars(b, b + sizeof b, v);
  return std::string(b, r.ptr);
}

namespace detail {
template <class N>
N parse_number(std::string_view s, std::string_view what) {
  N v{};
  if (s == "nan" && std::is_floating_point_v<N>) return std::numeric_limits<N>::quiet_NaN();
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size())
    fail(errc::parse, "tfm::train: '", std::string(what), "' holds '", std::string(s),
         "', not a number.");
  return v;
}
inline const std::string& lookup(const std::map<std::string, std::string>& m,
                                 const std::string& k) {
  auto it = m.find(k);
  if (it == m.end()) fail(errc::parse, "tfm::train: the checkpoint has no '", k, "' entry.");
  return it->second;
}

// The text form of a config field (the checkpoint's and the command line's): integers in
// decimal, doubles exact (exact_string), bools 0 | 1, enums their words.
inline std::string field_text(index_t v) { return std::to_string(v); }
inline std::string field_text(bool v) { return v ? "1" : "0"; }
inline std::string field_text(double v) { return exact_string(v); }
template <class E>
requires std::is_enum_v<E> std::string field_text(E v) { return to_string(v); }
// The value of a field's text; false when malformed. Doubles accept "nan" (a checkpoint may
// hold one); callers that need finite values check.
inline bool parse_field_text(std::string_view s, index_t& v) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}
inline bool parse_field_text(std::string_view s, double& v) {
  if (s == "nan") return v = std::numeric_limits<double>::quiet_NaN(), true;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size();
}
inline bool parse_field_text(std::string_view s, bool& v) {
  if (s != "0" && s != "1") return false;
  v = s == "1";
  return true;
}
template <class E>
requires std::is_enum_v<E>
bool parse_field_text(std::string_view s, E& v) { return parse_word(s, v); }
// What a field's text must look like, for messages and help ("N", "X", "0|1", the words).
inline const char* field_form(index_t) { return "N"; }
inline const char* field_form(double) { return "X"; }
inline const char* field_form(bool) { return "0|1"; }
template <class E>
requires std::is_enum_v<E>
const char* field_form(E v) { return words_of(v); }
template <class V>
bool finite_field(const V&) {
  return true;
}
inline bool finite_field(double v) { return std::isfinite(v); }
inline std::string field_expected(const char* form) {
  const std::string_view f(form);
  if (f == "N") return "an integer";
  if (f == "X") return "a number";
  return words_sentence(f);
}
}  // namespace detail

/// Stores `c` in `meta` under "config.<field>" (every field of TFM_NN_CONFIG_FIELDS).
inline void put_config(std::map<std::string, std::string>& meta, const nn::dynamic_config& c) {
#define TFM_TRAIN_PUT_FIELD(type, name, init, flag, rule, doc) \
  meta["config." #name] = detail::field_text(c.name);
  TFM_NN_CONFIG_FIELDS(TFM_TRAIN_PUT_FIELD)
#undef TFM_TRAIN_PUT_FIELD
}

/// The config fields every checkpoint of format tfm-train-1 holds (the list as it was when the
/// format began; frozen). A checkpoint without one of them is not one of ours; a field added to
/// the list later is read as its default when absent (older checkpoints predate it, and a new
/// field's default keeps the model the old checkpoints describe).
inline constexpr std::string_view config_fields_v1[] = {
    "vocab",     "block_size", "n_layer", "n_embd",   "n_head", "n_kv_head",      "ffn",
    "window",    "norm",       "mlp",     "position", "bias",   "tie_embeddings", "norm_eps",
    "rope_base", "dropout"};

/// The config stored by put_config (parse_error when an entry is missing or malformed; see
/// config_fields_v1 for fields added since).
inline nn::dynamic_config get_config(const std::map<std::string, std::string>& meta) {
  nn::dynamic_config c;
  auto required = [](std::string_view name) {
    for (auto n : config_fields_v1)
      if (n == name) return true;
    return false;
  };
#define TFM_TRAIN_GET_FIELD(type, name, init, flag, rule, doc)                           \
  if (meta.count("config." #name) || required(#name)) {                                  \
    const std::string& text = detail::lookup(meta, "config." #name);                     \
    if (!detail::parse_field_text(text, c.name))                                         \
      fail(errc::parse, "tfm::train: the checkpoint's 'config." #name "' holds '", text, \
           "', not ", detail::field_expected(detail::field_form(c.name)), ".");          \
  }
  TFM_NN_CONFIG_FIELDS(TFM_TRAIN_GET_FIELD)
#undef TFM_TRAIN_GET_FIELD
  return c;
}

/// One config field as the command line sees it (from TFM_NN_CONFIG_FIELDS).
struct config_field {
  const char* name;  // the member, and the checkpoint key "config.<name>"
  const char* flag;  // "--n-layer"; "" when no flag sets it
  const char* form;  // "N", "X", "0|1" or the enum's words ("layer_norm|rms_norm")
  const char* doc;
};

/// Every field of the list, in its order.
inline std::vector<config_field> config_fields() {
  std::vector<config_field> r;
  const nn::dynamic_config d;
#define TFM_TRAIN_FIELD_INFO(type, name, init, flag, rule, doc) \
  r.push_back({#name, flag, detail::field_form(d.name), doc});
  TFM_NN_CONFIG_FIELDS(TFM_TRAIN_FIELD_INFO)
#undef TFM_TRAIN_FIELD_INFO
  return r;
}

/// The text of field `name` of `c` (its checkpoint form); value_error for an unknown name.
inline std::string config_field_text(const nn::dynamic_config& c, std::string_view name) {
#define TFM_TRAIN_FIELD_TEXT(type, name_, init, flag, rule, doc) \
  if (name == #name_) return detail::field_text(c.name_);
  TFM_NN_CONFIG_FIELDS(TFM_TRAIN_FIELD_TEXT)
#undef TFM_TRAIN_FIELD_TEXT
  fail(errc::value, "tfm::train: no config field '", std::string(name), "'.");
}

/// Sets the field whose command-line flag is `flag` ("--n-layer") from `text`. Returns false
/// when no field has that flag; a malformed or non-finite value is a value_error naming the
/// flag. (The field's rule and the cross-field rules are nn::validate's.)
inline bool set_config_flag(nn::dynamic_config& c, std::string_view flag, std::string_view text) {
  if (flag.empty()) return false;
#define TFM_TRAIN_SET_FLAG(type, name, init, flag_, rule, doc)                           \
  if (flag == flag_) {                                                                   \
    decltype(c.name) v{};                                                                \
    if (!detail::parse_field_text(text, v) || !detail::finite_field(v))                  \
      fail(errc::value, flag_, " needs ", detail::field_expected(detail::field_form(v)), \
           ", not '", std::string(text), "'.");                                          \
    c.name = v;                                                                          \
    return true;                                                                         \
  }
  TFM_NN_CONFIG_FIELDS(TFM_TRAIN_SET_FLAG)
#undef TFM_TRAIN_SET_FLAG
  return false;
}

/// 64-bit FNV-1a of a token sequence: identifies the data a run trained on.
inline std::uint64_t token_fingerprint(const std::vector<std::int32_t>& ids) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (std::int32_t id : ids) {
    auto u = static_cast<std::uint32_t>(id);
    for (int b = 0; b < 4; ++b) {
      h ^= (u >> (8 * b)) & 0xFFu;
      h *= 1099511628211ull;
    }
  }
  return h;
}

// ---- checkpoints -----------------------------------------------------------------------------

namespace detail {
template <class T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>)
    return "f32";
  else if constexpr (std::is_same_v<T, double>)
    return "f64";
  else if constexpr (std::is_same_v<T, bf16>)
    return "bf16";
  else if constexpr (std::is_same_v<T, f16>)
    return "f16";
  else
    static_assert(sizeof(T) == 0, "tfm::train: unsupported parameter type");
}

/// Reads the "state.*" entries and the curve (not parameters or optimizer state).
inline training_state read_state(const io::checkpoint_reader& r, const std::string& path) {
  training_state st;
  if (!r.has_meta("state.format") || r.meta("state.format") != training_state_format)
    fail(errc::parse, "tfm::train: '", path, "' is not a training checkpoint of format ",
         std::string(training_state_format), ".");
  auto u64 = [&](const char* k) { return parse_number<std::uint64_t>(r.meta(k), k); };
  st.step = parse_number<std::int64_t>(r.meta("state.step"), "state.step");
  st.batch_index = u64("state.batch_index");
  st.dropout_offset = u64("state.dropout_offset");
  st.model_seed = u64("state.model_seed");
  st.data_seed = u64("state.data_seed");
  const auto keys = r.meta("state.meta_keys");
  std::size_t pos = 0;
  while (pos < keys.size()) {
    std::size_t nl = keys.find('\n', pos);
    if (nl == std::string::npos) nl = keys.size();
    std::string k = keys.substr(pos, nl - pos);
    if (!k.empty()) st.meta[k] = r.meta(k);
    pos = nl + 1;
  }
  if (r.has_meta("state.blob_keys")) {
    const auto bkeys = r.meta("state.blob_keys");
    pos = 0;
    while (pos < bkeys.size()) {
      std::size_t nl = bkeys.find('\n', pos);
      if (nl == std::string::npos) nl = bkeys.size();
      std::string k = bkeys.substr(pos, nl - pos);
      if (!k.empty()) {
        if (!r.has_blob(k))
          fail(errc::parse, "tfm::train: '", path, "' lists blob '", k, "' but does not hold it.");
        st.blobs[k] = r.read_blob(k);
      }
      pos = nl + 1;
    }
  }
  const auto ext = r.extents("state/curve.step");
  if (ext.size() != 1) fail(errc::parse, "tfm::train: the curve in '", path, "' is not a vector.");
  const index_t n = ext[0];
  for (const char* nm : {"state/curve.lr", "state/curve.train_loss", "state/curve.val_loss"})
    if (r.extents(nm) != ext)
      fail(errc::parse, "tfm::train: the curve columns in '", path, "' differ in length.");
  std::vector<std::int64_t> steps(static_cast<std::size_t>(n));
  std::vector<double> lr(steps.size()), tl(steps.size()), vl(steps.size());
  r.read_tensor("state/curve.step", steps.data(), ext);
  r.read_tensor("state/curve.lr", lr.data(), ext);
  r.read_tensor("state/curve.train_loss", tl.data(), ext);
  r.read_tensor("state/curve.val_loss", vl.data(), ext);
  for (std::size_t i = 0; i < steps.size(); ++i)
    st.curve.push_back({steps[i], lr[i], tl[i], vl[i]});
  return st;
}
}  // namespace detail

/// Writes parameters, optimizer state and `st` to `path` atomically (temp file, fsync, rename,
/// fsync of the directory) with a CRC-32 per record.
template <class T>
void save_training_state(const std::string& path, const nn::parameter_list<T>& ps,
                         const optim::optimizer<T>& opt, const training_state& st) {
  io::checkpoint_writer w;
  for (const auto& p : ps) w.add_tensor(p.name, p.data->value.data(), p.data->extents);
  std::ostringstream os(std::ios::binary);
  opt.save(os);
  w.add_blob("optimizer", std::move(os).str());
  const index_t n = static_cast<index_t>(st.curve.size());
  std::vector<std::int64_t> steps;
  std::vector<double> lr, tl, vl;
  for (const auto& c : st.curve) {
    steps.push_back(c.step);
    lr.push_back(c.lr);
    tl.push_back(c.train_loss);
    vl.push_back(c.val_loss);
  }
  w.add_tensor("state/curve.step", steps.data(), {n});
  w.add_tensor("state/curve.lr", lr.data(), {n});
  w.add_tensor("state/curve.train_loss", tl.data(), {n});
  w.add_tensor("state/curve.val_loss", vl.data(), {n});
  w.set_meta("state.format", std::string(training_state_format));
  w.set_meta("state.step", std::to_string(st.step));
  w.set_meta("state.batch_index", std::to_string(st.batch_index));
  w.set_meta("state.dropout_offset", std::to_string(st.dropout_offset));
  w.set_meta("state.model_seed", std::to_string(st.model_seed));
  w.set_meta("state.data_seed", std::to_string(st.data_seed));
  w.set_meta("state.dtype", detail::dtype_name<T>());
  std::string keys;
  for (const auto& [k, v] : st.meta) {
    if (k.rfind("state.", 0) == 0 || k.find('\n') != std::string::npos)
      fail(errc::value, "tfm::train: metadata key '", k, "' is reserved or holds a newline.");
    keys += k + "\n";
    w.set_meta(k, v);
  }
  w.set_meta("state.meta_keys", keys);
  if (!st.blobs.empty()) {
    std::string bkeys;
    for (const auto& [k, v] : st.blobs) {
      if (k == "optimizer" || k.empty() || k.find('\n') != std::string::npos)
        fail(errc::value, "tfm::train: blob name '", k, "' is reserved, empty or holds a newline.");
      bkeys += k + "\n";
      w.add_blob(k, v);
    }
    w.set_meta("state.blob_keys", bkeys);
  }
  w.save(path);
}

/// The training state in `path` without touching any model: counters, curve, and meta (read
/// the model config from it with get_config before building the model). Also returns the
/// parameter element type ("f32", "bf16", ...) in meta["state.dtype"].
inline training_state read_training_state(const std::string& path) {
  io::checkpoint_reader r(path);
  training_state st = detail::read_state(r, path);
  st.meta["state.dtype"] = r.meta("state.dtype");
  return st;
}

/// Restores parameters (matched by name; every parameter must be present with its extents and
/// element type, and the checkpoint must hold no other parameters) and optimizer state, and
/// returns the training state. Nothing is modified unless every record reads back intact:
/// a corrupted or truncated file is a tfm::parse_error naming the record.
template <class T>
training_state load_training_state(const std::string& path, const nn::parameter_list<T>& ps,
                                   optim::optimizer<T>& opt) {
  io::checkpoint_reader r(path);
  training_state st = detail::read_state(r, path);
  if (r.meta("state.dtype") != detail::dtype_name<T>())
    fail(errc::parse, "tfm::train: '", path, "' holds ", r.meta("state.dtype"),
         " parameters, the model has ", detail::dtype_name<T>(), ".");
  std::set<std::string> names;
  for (const auto& p : ps) names.insert(p.name);
  for (const auto& n : r.tensor_names())
    if (n.rfind("state/", 0) != 0 && !names.count(n))
      fail(errc::parse, "tfm::train: '", path, "' holds parameter '", n,
           "', which the model does not have.");
  std::vector<std::vector<T>> values;
  for (const auto& p : ps) {
    if (!r.has_tensor(p.name))
      fail(errc::parse, "tfm::train: '", path, "' has no parameter '", p.name, "'.");
    if (r.extents(p.name) != p.data->extents)
      fail(errc::parse, "tfm::train: parameter '", p.name, "' in '", path,
           "' has other extents than the model's.");
    values.emplace_back(static_cast<std::size_t>(p.data->size()));
    r.read_tensor(p.name, values.back().data(), p.data->extents);
  }
  std::istringstream is(r.read_blob("optimizer"), std::ios::binary);
  opt.load(is);  // validates fully before changing the optimizer
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (!values[i].empty())
      std::memcpy(static_cast<void*>(ps[i].data->value.data()), values[i].data(),
                  values[i].size() * sizeof(T));
  return st;
}

// ---- mixture-of-experts state ---------------------------------------------------------------

/// Stores a model's MoE router biases (sigmoid_bias; nn::gpt::moe_bias) in `meta` under
/// "moe.bias.<layer>" (exact decimal values, comma-separated); nothing for other models.
template <class Model>
void put_moe_state(std::map<std::string, std::string>& meta, const Model& model) {
  if constexpr (requires { model.moe_bias(); }) {
    const auto bias = model.moe_bias();
    for (std::size_t l = 0; l < bias.size(); ++l) {
      if (bias[l].empty()) continue;
      std::string t;
      for (double b : bias[l]) t += (t.empty() ? "" : ",") + exact_string(b);
      meta["moe.bias." + std::to_string(l)] = t;
    }
  }
}
/// Restores what put_moe_state stored (parse_error naming the key when malformed).
template <class Model>
void get_moe_state(const std::map<std::string, std::string>& meta, Model& model) {
  if constexpr (requires { model.moe_bias(); }) {
    auto bias = model.moe_bias();
    for (std::size_t l = 0; l < bias.size(); ++l) {
      const std::string key = "moe.bias." + std::to_string(l);
      auto it = meta.find(key);
      if (it == meta.end()) continue;
      std::vector<double> v;
      std::string_view rest = it->second;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        v.push_back(detail::parse_number<double>(rest.substr(0, comma), key));
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      }
      bias[l] = std::move(v);
    }
    model.set_moe_bias(bias);
  }
}

// ---- the step --------------------------------------------------------------------------------

/// The end of every training step (pretraining, fine-tuning, alignment): the optimizer update
/// with the gradients accumulated so far (clipped to a global norm `clip` when > 0; the norm pass
/// doubles as the finiteness check), then st.step advances and the curve gets the step's point.
struct update_result {
  double grad_norm = 0;  ///< before clipping (NaN when clip == 0)
  bool applied = true;   ///< false: a gradient was not finite and nothing changed
};
template <class T>
update_result apply_update(optim::optimizer<T>& opt, double clip, double lr, double loss,
                           training_state& st) {
  update_result u;
  if (clip > 0) {
    const auto r = opt.step_clipped(clip);
    u.grad_norm = r.grad_norm;
    u.applied = r.applied;
  } else {
    u.grad_norm = std::numeric_limits<double>::quiet_NaN();
    u.applied = opt.step();
  }
  ++st.step;
  curve_point cp;
  cp.step = st.step;
  cp.lr = lr;
  cp.train_loss = loss;
  st.curve.push_back(cp);
  return u;
}

struct step_options {
  index_t batch = 8;            // B: sequences per micro-batch
  index_t seq = 128;            // T: tokens per sequence
  std::int64_t grad_accum = 1;  // micro-batches per optimizer step
  double clip = 1.0;            // max global gradient L2 norm; 0 disables clipping
  optim::lr_schedule schedule = optim::lr_schedule::constant(1e-3);
};

struct step_result {
  double loss = 0;       // mean training loss of the step's micro-batches
  double lr = 0;         // learning rate used
  double grad_norm = 0;  // global gradient norm before clipping (NaN when clip == 0)
  bool applied = true;   // false: a gradient was not finite and the update was skipped
};

/// One optimizer step: lr from the schedule at st.step, grad_accum micro-batches from the
/// training split at st.batch_index onwards, clipping, the update. Advances st (step,
/// batch_index, dropout_offset) and appends the step's curve point.
template <class Model, class T>
step_result train_step(Model& model, optim::optimizer<T>& opt, const token_dataset& data,
                       const step_options& o, training_state& st) {
  if (o.grad_accum < 1) fail(errc::value, "tfm::train: grad_accum must be >= 1.");
  step_result res;
  res.lr = o.schedule(st.step);
  opt.set_lr(res.lr);
  opt.zero_grad();
  model.set_dropout_offset(st.dropout_offset);
  double sum = 0;
  const double inv_k = 1.0 / static_cast<double>(o.grad_accum);
  for (std::int64_t k = 0; k < o.grad_accum; ++k) {
    auto [x, y] = data.batch(split::train, o.batch, o.seq, st.data_seed, st.batch_index++);
    auto loss = model.loss(x, y, true);
    sum += static_cast<double>(compute_t<T>(loss.value()()));
    if constexpr (requires { model.last_balancing_loss(); })
      sum -= model.last_balancing_loss();  // the curve shows the cross-entropy
    if (o.grad_accum == 1)
      loss.backward();
    else
      (loss * inv_k).backward();
  }
  st.dropout_offset = model.dropout_offset();
  res.loss = sum * inv_k;
  const auto u = apply_update(opt, o.clip, res.lr, res.loss, st);
  if constexpr (requires { model.moe_balance(); })
    if (u.applied) model.moe_balance();  // sigmoid_bias routers: the bias update
  res.grad_norm = u.grad_norm;
  res.applied = u.applied;
  return res;
}

/// Mean loss over `batches` (no gradients, no dropout).
template <class Model>
double evaluate(const Model& model, const std::vector<std::pair<ids_tensor, ids_tensor>>& batches) {
  using T = typename Model::value_type;
  if (batches.empty()) return std::numeric_limits<double>::quiet_NaN();
  no_grad ng;
  double s = 0;
  for (const auto& [x, y] : batches)
    s += static_cast<double>(compute_t<T>(model.loss(x, y, false).value()()));
  return s / static_cast<double>(batches.size());
}

/// Records a validation loss at the curve's last point (or a new point at st.step).
inline void record_validation(training_state& st, double val_loss) {
  if (st.curve.empty() || st.curve.back().step != st.step) {
    curve_point cp;
    cp.step = st.step;
    st.curve.push_back(cp);
  }
  st.curve.back().val_loss = val_loss;
}

}  // namespace train
TFM_END_NAMESPACE
