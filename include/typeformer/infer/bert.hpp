// typeformer/infer/bert.hpp
//
// WHAT THIS REPRESENTS
//   infer::bert_encoder<Backend>: a BERT encoder (Devlin et al., arXiv:1810.04805) loaded from a
//   Hugging Face model directory and run without the autodiff tape, with sentence-transformers'
//   pooling on top (Reimers & Gurevych, arXiv:1908.10084): the model behind all-MiniLM-L6-v2.
//
//     auto enc = tfm::infer::bert_encoder<>::load("~/.cache/typeformer/models/all-minilm-l6-v2");
//     auto e = enc.embed({"A sentence.", "Another one."});   // (2, 384), rows of unit L2 norm
//
//   The forward pass, for each sequence of token ids [CLS] w1 .. wn [SEP] (token type 0):
//     x   = LayerNorm(word[id_t] + position[t] + token_type[0])
//     per layer (post-LN):
//       a = LayerNorm(x + Wo Attention(Wq x + bq, Wk x + bk, Wv x + bv) + bo)   H heads of D
//       x = LayerNorm(a + W2 gelu(W1 a + b1) + b2)                 gelu with erf (HF "gelu")
//   embed(): mean of x over the sequence's tokens ([CLS] and [SEP] included, padding never:
//   sentence-transformers' mean pooling with its attention mask), then x / max(||x||, 1e-12)
//   (torch.nn.functional.normalize) when the model's modules.json has a Normalize module.
//
// PADDING
//   A batch of sequences of different lengths is run packed: the sequences' rows are stacked
//   without padding and attention runs within each sequence (backend/reference/encoder.hpp).
//   This is exactly HF's padded batch with an attention mask (a masked key has weight 0), minus
//   the work on padded rows; forward() takes and returns HF's padded (B, T) layout (right
//   padding: the mask of each row is ones then zeros) for callers that want it.
//
// THE DIRECTORY
//   config.json        model_type "bert", hidden_act "gelu", position_embedding_type "absolute"
//                      (or absent), is_decoder / add_cross_attention false; hidden_size,
//                      num_hidden_layers, num_attention_heads (dividing hidden_size),
//                      intermediate_size, max_position_embeddings, vocab_size, type_vocab_size
//                      (default 2), layer_norm_eps (default 1e-12). Anything else about the
//                      architecture is a tfm::unsupported_error naming the file and the field.
//   model.safetensors  or a sharded index (io/safetensors.hpp); names embeddings.*,
//                      encoder.layer.N.* as HF's BertModel saves them, optionally under a
//                      "bert." prefix (BertFor* checkpoints; their heads are ignored).
//   tokenizer.json     (HF WordPiece; tokenizer/wordpiece.hpp) or else vocab.txt.
//   sentence_bert_config.json  max_seq_length (else max_position_embeddings): longer inputs keep
//                      [CLS], their first max_seq_length - 2 tokens and [SEP], as the
//                      sentence-transformers tokenizer call truncates.
//   1_Pooling/config.json  pooling_mode_mean_tokens (default) or pooling_mode_cls_token; other
//                      modes are unsupported. modules.json: Normalize present -> L2 (absent
//                      file: L2 as well).
//
// MEMORY
//   F32 tensors are used in place in the file's read-only memory map when aligned (files written
//   by the safetensors package always are); F16/BF16 or unaligned tensors are converted into
//   owned float buffers. stats() reports both. Activations of a batch of N tokens take
//   (5 C + F) N floats plus H L^2 floats of scores per thread for the longest sequence L.
//
// THREADS
//   GEMMs, row kernels and attention run on the cpu backend's OpenMP threads (set_num_threads,
//   thread_scope); the result does not depend on the thread count.
#pragma once

#include "typeformer/backend/cpu/encoder.hpp"
#include "typeformer/backend/reference/encoder.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/shape.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/io/safetensors.hpp"
#include "typeformer/tokenizer/detail/json.hpp"
#include "typeformer/tokenizer/wordpiece.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace infer {

/// The architecture of a BERT encoder (config.json). Letters: C hidden, H heads, D = C / H,
/// F intermediate, V vocabulary, P positions.
struct bert_config {
  index_t n_layer = 0, C = 0, H = 0, F = 0, V = 0, P = 0, type_vocab = 2;
  double layer_norm_eps = 1e-12;
  index_t D() const noexcept { return H ? C / H : 0; }

  /// Parses and checks a Hugging Face config.json (see the file comment); `doc` names it.
  static bert_config from_hf_json(std::string_view text, std::string_view doc);
};

/// How embed() turns hidden states into one vector per text.
enum class bert_pooling { mean, cls };

struct bert_embed_options {
  bert_pooling pooling = bert_pooling::mean;
  bool normalize = true;       ///< divide by max(L2 norm, 1e-12)
  index_t max_seq_length = 0;  ///< tokens per text, [CLS] and [SEP] included (>= 2)
};

/// What loading cost: bytes used in place in the mapping, bytes converted or copied, seconds.
struct bert_load_stats {
  std::size_t borrowed_bytes = 0, owned_bytes = 0;
  double seconds = 0;
};

namespace bert_detail {

/// A float matrix (rows x cols, row-major): borrowed from the file, or converted into a buffer
/// that copies of the encoder share (so a copy never points into a destroyed buffer).
struct matrix {
  const float* data = nullptr;
  index_t rows = 0, cols = 0;
  std::shared_ptr<const std::vector<float>> owned;
};

struct layer {
  matrix wq, bq, wk, bk, wv, bv, wo, bo, ln1_g, ln1_b, w1, b1, w2, b2, ln2_g, ln2_b;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(errc::io, "bert: cannot open \"", path, "\".");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(errc::io, "bert: cannot read \"", path, "\".");
  return s;
}
inline bool exists(const std::string& path) { return std::ifstream(path).good(); }

/// The members of a config object read with checks (messages name the file and the key).
struct config_reader {
  const tfm::detail::json::value& root;
  std::string_view doc;

  const tfm::detail::json::value* get(std::string_view key) const {
    const tfm::detail::json::value* v = root.find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  index_t integer(std::string_view key, std::optional<index_t> dflt, index_t lo, index_t hi) const {
    const tfm::detail::json::value* v = get(key);
    if (!v) {
      if (dflt) return *dflt;
      fail(errc::parse, doc, ": \"", key, "\" is missing.");
    }
    if (!v->is_number() || !v->integral || v->integer < lo || v->integer > hi)
      fail(errc::parse, doc, ": \"", key, "\" is not an integer in [", lo, ", ", hi, "] (byte ",
           v->offset, ").");
    return static_cast<index_t>(v->integer);
  }
  std::string string(std::string_view key, std::string dflt) const {
    const tfm::detail::json::value* v = get(key);
    if (!v) return dflt;
    if (!v->is_string())
      fail(errc::parse, doc, ": \"", key, "\" is not a string (byte ", v->offset, ").");
    return v->string;
  }
  bool boolean(std::string_view key, bool dflt) const {
    const tfm::detail::json::value* v = get(key);
    if (!v) return dflt;
    if (!v->is_bool())
      fail(errc::parse, doc, ": \"", key, "\" is not a boolean (byte ", v->offset, ").");
    return v->boolean;
  }
};

}  // namespace bert_detail

inline bert_config bert_config::from_hf_json(std::string_view text, std::string_view doc) {
  const tfm::detail::json::value root = tfm::detail::json::parse(text, doc);
  if (!root.is_object()) fail(errc::parse, doc, ": the top level is not a JSON object.");
  const bert_detail::config_reader r{root, doc};
  const std::string type = r.string("model_type", "");
  if (type != "bert")
    fail(errc::unsupported, doc, ": model_type is \"", type,
         "\"; infer::bert_encoder runs model_type \"bert\" only.");
  auto require = [&](bool ok, std::string_view key, std::string_view value, std::string_view why) {
    if (!ok)
      fail(errc::unsupported, doc, ": ", key, " is ", value, "; infer::bert_encoder supports ", why,
           " only.");
  };
  const std::string act = r.string("hidden_act", "gelu");
  require(act == "gelu", "hidden_act", "\"" + act + "\"", "\"gelu\" (erf)");
  const std::string pos = r.string("position_embedding_type", "absolute");
  require(pos == "absolute", "position_embedding_type", "\"" + pos + "\"", "\"absolute\"");
  require(!r.boolean("is_decoder", false), "is_decoder", "true", "encoders (false)");
  require(!r.boolean("add_cross_attention", false), "add_cross_attention", "true",
          "self-attention (false)");
  bert_config c;
  constexpr index_t big = index_t{1} << 24;
  c.C = r.integer("hidden_size", std::nullopt, 1, 1 << 16);
  c.n_layer = r.integer("num_hidden_layers", std::nullopt, 1, 1024);
  c.H = r.integer("num_attention_heads", std::nullopt, 1, c.C);
  c.F = r.integer("intermediate_size", std::nullopt, 1, 1 << 18);
  c.P = r.integer("max_position_embeddings", std::nullopt, 2, 1 << 20);
  c.V = r.integer("vocab_size", std::nullopt, 1, big);
  c.type_vocab = r.integer("type_vocab_size", 2, 1, 1024);
  if (c.C % c.H != 0)
    fail(errc::parse, doc, ": hidden_size ", c.C, " is not a multiple of num_attention_heads ", c.H,
         ".");
  if (const auto* e = r.get("layer_norm_eps")) {
    if (!e->is_number() || !(e->number > 0) || !(e->number < 1))
      fail(errc::parse, doc, ": \"layer_norm_eps\" is not a number in (0, 1) (byte ", e->offset,
           ").");
    c.layer_norm_eps = e->number;
  }
  return c;
}

/// The encoder: weights (immutable once loaded, shareable between threads), tokenizer and
/// pooling options. Backend picks the kernels (tfm::cpu, or tfm::reference as the oracle).
template <class Backend = cpu>
class bert_encoder {
  static_assert(backend<Backend>, "tfm::infer::bert_encoder: Backend must be a backend tag.");

 public:
  /// Loads a model directory (see the file comment). io_error / parse_error / unsupported_error
  /// name the file and the field.
  static bert_encoder load(const std::string& dir) {
    const auto t0 = std::chrono::steady_clock::now();
    bert_encoder m;
    const std::string cfg_path = dir + "/config.json";
    m.cfg_ = bert_config::from_hf_json(bert_detail::read_text(cfg_path), cfg_path);
    m.load_tokenizer(dir);
    m.load_embed_options(dir);
    m.st_ = std::make_shared<const io::safetensors::tensor_set>(io::safetensors::open(dir));
    m.load_weights();
    m.stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return m;
  }

  const bert_config& config() const noexcept { return cfg_; }
  const wordpiece_tokenizer& tokenizer() const { return *tok_; }
  const bert_embed_options& embed_options() const noexcept { return opt_; }
  /// Replaces the pooling options (value_error for max_seq_length outside [2, P]).
  void set_embed_options(const bert_embed_options& o) {
    if (o.max_seq_length < 2 || o.max_seq_length > cfg_.P)
      fail(errc::value, "bert_encoder: max_seq_length ", o.max_seq_length,
           " is outside [2, max_position_embeddings = ", cfg_.P, "].");
    opt_ = o;
  }
  const bert_load_stats& stats() const noexcept { return stats_; }
  /// The safetensors the weights are borrowed from.
  const io::safetensors::tensor_set& file() const { return *st_; }

  /// [CLS] tokens [SEP] of text, truncated to max_seq_length.
  std::vector<std::int32_t> tokenize(std::string_view text) const {
    std::vector<std::int32_t> ids = tok_->encode_with_special_tokens(text);
    const auto cap = static_cast<std::size_t>(opt_.max_seq_length);
    if (ids.size() > cap) {
      const std::int32_t last = ids.back();
      ids.resize(cap);
      if (!tok_->options().sep_token.empty()) ids.back() = last;  // keep [SEP]
    }
    return ids;
  }

  /// Last hidden states of packed sequences: rows offsets[s] .. offsets[s+1]-1 of the result
  /// (sum of lengths, C) belong to seqs[s]. Ids must be in [0, V), lengths in [1, P]
  /// (value_error otherwise).
  tensor<float, dyn_shape<2>> hidden_states(
      const std::vector<std::vector<std::int32_t>>& seqs) const {
    std::vector<index_t> offsets{0};
    for (const auto& s : seqs) {
      if (s.empty() || static_cast<index_t>(s.size()) > cfg_.P)
        fail(errc::value, "bert_encoder: a sequence has ", s.size(),
             " tokens; the model takes 1 to ", cfg_.P, ".");
      offsets.push_back(offsets.back() + static_cast<index_t>(s.size()));
    }
    tensor<float, dyn_shape<2>> x(offsets.back(), cfg_.C);
    embed_tokens(seqs, x.data());
    run_layers(offsets, x.data());
    return x;
  }

  /// HF's padded interface: ids and attention_mask (B, T), each mask row ones then zeros
  /// (value_error otherwise); returns last_hidden_state (B, T, C) with zero padded rows.
  tensor<float, dyn_shape<3>> forward(const tensor<std::int32_t, dyn_shape<2>>& ids,
                                      const tensor<std::int32_t, dyn_shape<2>>& mask) const {
    const index_t B = ids.extent(0), T = ids.extent(1);
    if (mask.extent(0) != B || mask.extent(1) != T)
      fail(errc::shape, "bert_encoder::forward: attention_mask (", mask.extent(0), ", ",
           mask.extent(1), ") differs from input_ids (", B, ", ", T, ").");
    std::vector<std::vector<std::int32_t>> seqs(static_cast<std::size_t>(B));
    for (index_t b = 0; b < B; ++b) {
      const std::int32_t* m = mask.data() + b * T;
      index_t len = 0;
      while (len < T && m[len] == 1) ++len;
      for (index_t t = len; t < T; ++t)
        if (m[t] != 0)
          fail(errc::value, "bert_encoder::forward: attention_mask row ", b,
               " is not ones followed by zeros (right padding).");
      seqs[static_cast<std::size_t>(b)].assign(ids.data() + b * T, ids.data() + b * T + len);
    }
    const auto h = hidden_states(seqs);
    tensor<float, dyn_shape<3>> out(B, T, cfg_.C);
    index_t row = 0;
    for (index_t b = 0; b < B; ++b)
      for (std::size_t t = 0; t < seqs[static_cast<std::size_t>(b)].size(); ++t, ++row)
        std::copy_n(h.data() + row * cfg_.C, cfg_.C,
                    out.data() + (b * T + static_cast<index_t>(t)) * cfg_.C);
    return out;
  }

  /// Pooled (and, per the options, L2-normalised) embeddings of token sequences: (count, C).
  tensor<float, dyn_shape<2>> embed_ids(const std::vector<std::vector<std::int32_t>>& seqs) const {
    const index_t C = cfg_.C;
    tensor<float, dyn_shape<2>> out(static_cast<index_t>(seqs.size()), C);
    const auto h = hidden_states(seqs);
    std::vector<double> acc(static_cast<std::size_t>(C));
    index_t row = 0;
    for (std::size_t s = 0; s < seqs.size(); ++s) {
      const auto L = static_cast<index_t>(seqs[s].size());
      std::fill(acc.begin(), acc.end(), 0.0);
      const index_t rows = opt_.pooling == bert_pooling::cls ? 1 : L;
      for (index_t t = 0; t < rows; ++t)
        for (index_t c = 0; c < C; ++c)
          acc[static_cast<std::size_t>(c)] += h.data()[(row + t) * C + c];
      double norm = 0;
      for (double& a : acc) {
        a /= static_cast<double>(rows);
        norm += a * a;
      }
      const double scale = opt_.normalize ? 1.0 / std::max(std::sqrt(norm), 1e-12) : 1.0;
      for (index_t c = 0; c < C; ++c)
        out.data()[static_cast<index_t>(s) * C + c] =
            static_cast<float>(acc[static_cast<std::size_t>(c)] * scale);
      row += L;
    }
    return out;
  }

  /// Embeddings of texts, in order: (texts.size(), C), run `batch` texts at a time (>= 1).
  tensor<float, dyn_shape<2>> embed(std::span<const std::string> texts, index_t batch = 32) const {
    if (batch < 1) fail(errc::value, "bert_encoder::embed: batch ", batch, " is not >= 1.");
    const index_t n = static_cast<index_t>(texts.size()), C = cfg_.C;
    tensor<float, dyn_shape<2>> out(n, C);
    for (index_t i = 0; i < n; i += batch) {
      std::vector<std::vector<std::int32_t>> seqs;
      for (index_t j = i; j < std::min(n, i + batch); ++j)
        seqs.push_back(tokenize(texts[static_cast<std::size_t>(j)]));
      const auto e = embed_ids(seqs);
      std::copy_n(e.data(), e.size(), out.data() + i * C);
    }
    return out;
  }
  tensor<float, dyn_shape<2>> embed(std::initializer_list<std::string> texts,
                                    index_t batch = 32) const {
    return embed(std::span<const std::string>(texts.begin(), texts.size()), batch);
  }

 private:
  void load_tokenizer(const std::string& dir) {
    if (bert_detail::exists(dir + "/tokenizer.json"))
      tok_ = std::make_shared<const wordpiece_tokenizer>(
          wordpiece_tokenizer::from_hf_json_file(dir + "/tokenizer.json"));
    else if (bert_detail::exists(dir + "/vocab.txt"))
      tok_ = std::make_shared<const wordpiece_tokenizer>(
          wordpiece_tokenizer::from_file(dir + "/vocab.txt"));
    else
      fail(errc::io, "bert: \"", dir, "\" has neither tokenizer.json nor vocab.txt.");
    if (static_cast<index_t>(tok_->vocab_size()) > cfg_.V)
      fail(errc::parse, dir, ": the tokenizer has ", tok_->vocab_size(),
           " tokens, more than config.json's vocab_size ", cfg_.V, ".");
  }

  void load_embed_options(const std::string& dir) {
    opt_ = {};
    opt_.max_seq_length = cfg_.P;
    if (const std::string p = dir + "/sentence_bert_config.json"; bert_detail::exists(p)) {
      const auto root = tfm::detail::json::parse(bert_detail::read_text(p), p);
      opt_.max_seq_length =
          bert_detail::config_reader{root, p}.integer("max_seq_length", cfg_.P, 2, cfg_.P);
    }
    if (const std::string p = dir + "/1_Pooling/config.json"; bert_detail::exists(p)) {
      const auto root = tfm::detail::json::parse(bert_detail::read_text(p), p);
      const bert_detail::config_reader r{root, p};
      const bool mean = r.boolean("pooling_mode_mean_tokens", false);
      const bool cls = r.boolean("pooling_mode_cls_token", false);
      for (const char* k : {"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                            "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"})
        if (r.boolean(k, false))
          fail(errc::unsupported, p, ": ", k, " is true; only mean or CLS pooling is supported.");
      if (mean == cls)
        fail(errc::unsupported, p,
             ": exactly one of pooling_mode_mean_tokens and "
             "pooling_mode_cls_token must be true.");
      opt_.pooling = cls ? bert_pooling::cls : bert_pooling::mean;
    }
    if (const std::string p = dir + "/modules.json"; bert_detail::exists(p))
      opt_.normalize = bert_detail::read_text(p).find("sentence_transformers.models.Normalize") !=
                       std::string::npos;
  }

  // The tensor `name` (with the checkpoint's prefix) as a rows x cols float matrix (cols = 0:
  // a vector of rows values).
  bert_detail::matrix weight(const std::string& name, index_t rows, index_t cols) {
    const std::string full = prefix_ + name;
    const io::safetensors::tensor_info* t = st_->find(full);
    if (!t) fail(errc::parse, "bert: the tensor \"", full, "\" is missing from the checkpoint.");
    const std::vector<index_t> want =
        cols ? std::vector<index_t>{rows, cols} : std::vector<index_t>{rows};
    if (t->shape != want)
      fail(errc::parse, "bert: the tensor \"", full, "\" has shape ",
           io::safetensors::detail::shape_string(t->shape), ", config.json implies ",
           io::safetensors::detail::shape_string(want), ".");
    bert_detail::matrix m;
    m.rows = rows;
    m.cols = cols ? cols : 1;
    const io::safetensors::file& f = st_->shard_of(full);
    if (cols ? f.can_view<float, 2>(full) : f.can_view<float, 1>(full)) {
      m.data = reinterpret_cast<const float*>(t->bytes.data());
      stats_.borrowed_bytes += t->bytes.size();
    } else {  // F16, BF16, F64 or unaligned: converted into an owned buffer
      auto own = [&](const auto& c) {
        auto buf = std::make_shared<std::vector<float>>(c.data(), c.data() + c.size());
        m.data = buf->data();
        m.owned = std::move(buf);
      };
      if (cols)
        own(f.copy<float, 2>(full));
      else
        own(f.copy<float, 1>(full));
      stats_.owned_bytes += m.owned->size() * sizeof(float);
    }
    return m;
  }

  void load_weights() {
    prefix_.clear();
    if (!st_->contains("embeddings.word_embeddings.weight") &&
        st_->contains("bert.embeddings.word_embeddings.weight"))
      prefix_ = "bert.";
    const index_t C = cfg_.C, F = cfg_.F;
    word_ = weight("embeddings.word_embeddings.weight", cfg_.V, C);
    pos_ = weight("embeddings.position_embeddings.weight", cfg_.P, C);
    type_ = weight("embeddings.token_type_embeddings.weight", cfg_.type_vocab, C);
    emb_ln_g_ = weight("embeddings.LayerNorm.weight", C, 0);
    emb_ln_b_ = weight("embeddings.LayerNorm.bias", C, 0);
    layers_.clear();
    for (index_t l = 0; l < cfg_.n_layer; ++l) {
      const std::string p = "encoder.layer." + std::to_string(l) + ".";
      bert_detail::layer L;
      L.wq = weight(p + "attention.self.query.weight", C, C);
      L.bq = weight(p + "attention.self.query.bias", C, 0);
      L.wk = weight(p + "attention.self.key.weight", C, C);
      L.bk = weight(p + "attention.self.key.bias", C, 0);
      L.wv = weight(p + "attention.self.value.weight", C, C);
      L.bv = weight(p + "attention.self.value.bias", C, 0);
      L.wo = weight(p + "attention.output.dense.weight", C, C);
      L.bo = weight(p + "attention.output.dense.bias", C, 0);
      L.ln1_g = weight(p + "attention.output.LayerNorm.weight", C, 0);
      L.ln1_b = weight(p + "attention.output.LayerNorm.bias", C, 0);
      L.w1 = weight(p + "intermediate.dense.weight", F, C);
      L.b1 = weight(p + "intermediate.dense.bias", F, 0);
      L.w2 = weight(p + "output.dense.weight", C, F);
      L.b2 = weight(p + "output.dense.bias", C, 0);
      L.ln2_g = weight(p + "output.LayerNorm.weight", C, 0);
      L.ln2_b = weight(p + "output.LayerNorm.bias", C, 0);
      layers_.push_back(std::move(L));
    }
  }

  // x (N, C) = LayerNorm(word[id] + position[t] + token_type[0]) for the packed sequences.
  void embed_tokens(const std::vector<std::vector<std::int32_t>>& seqs, float* x) const {
    const index_t C = cfg_.C;
    index_t row = 0;
    for (const auto& s : seqs)
      for (std::size_t t = 0; t < s.size(); ++t, ++row) {
        if (s[t] < 0 || s[t] >= cfg_.V)
          fail(errc::value, "bert_encoder: token id ", s[t], " is outside [0, ", cfg_.V, ").");
        const float* w = word_.data + static_cast<index_t>(s[t]) * C;
        const float* p = pos_.data + static_cast<index_t>(t) * C;
        float* xr = x + row * C;
        for (index_t c = 0; c < C; ++c) xr[c] = w[c] + p[c] + type_.data[c];
      }
    encoder_layer_norm(Backend{}, x, C, emb_ln_g_.data, emb_ln_b_.data,
                       static_cast<float>(cfg_.layer_norm_eps), x, C, row, C);
  }

  // The post-LN blocks over the packed rows of x (N, C), in place.
  void run_layers(const std::vector<index_t>& offsets, float* x) const {
    const index_t N = offsets.back(), C = cfg_.C, F = cfg_.F;
    const auto eps = static_cast<float>(cfg_.layer_norm_eps);
    std::vector<float> buf(static_cast<std::size_t>(N * (5 * C + F)));
    float *q = buf.data(), *k = q + N * C, *v = k + N * C, *ctx = v + N * C, *a = ctx + N * C,
          *h = a + N * C;
    const encoder_attention_geometry g{offsets.data(),
                                       static_cast<index_t>(offsets.size() - 1),
                                       cfg_.H,
                                       cfg_.D(),
                                       C,
                                       1.0 / std::sqrt(static_cast<double>(cfg_.D()))};
    constexpr auto none = encoder_activation::none;
    const Backend be{};
    for (const bert_detail::layer& L : layers_) {
      encoder_linear(be, N, C, C, x, C, L.wq.data, L.bq.data, nullptr, q, C, none);  // (N, C)
      encoder_linear(be, N, C, C, x, C, L.wk.data, L.bk.data, nullptr, k, C, none);  // (N, C)
      encoder_linear(be, N, C, C, x, C, L.wv.data, L.bv.data, nullptr, v, C, none);  // (N, C)
      encoder_attention(be, g, q, k, v, ctx);                                        // (N, C)
      encoder_linear(be, N, C, C, ctx, C, L.wo.data, L.bo.data, x, a, C, none);      // + x
      encoder_layer_norm(be, a, C, L.ln1_g.data, L.ln1_b.data, eps, a, C, N, C);
      encoder_linear(be, N, F, C, a, C, L.w1.data, L.b1.data, nullptr, h, F,
                     encoder_activation::gelu_erf);                            // (N, F)
      encoder_linear(be, N, C, F, h, F, L.w2.data, L.b2.data, a, x, C, none);  // + a
      encoder_layer_norm(be, x, C, L.ln2_g.data, L.ln2_b.data, eps, x, C, N, C);
    }
  }

  bert_config cfg_;
  bert_embed_options opt_;
  bert_load_stats stats_;
  std::shared_ptr<const wordpiece_tokenizer> tok_;
  std::shared_ptr<const io::safetensors::tensor_set> st_;
  std::string prefix_;
  bert_detail::matrix word_, pos_, type_, emb_ln_g_, emb_ln_b_;
  std::vector<bert_detail::layer> layers_;
};

}  // namespace infer
TFM_END_NAMESPACE
