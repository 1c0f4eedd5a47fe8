// typeformer/train/finetune.hpp
//
// WHAT THIS REPRESENTS
//   Fine-tuning a pretrained model: loading a llama or gpt2 GGUF into a trainable nn::gpt, and the
//   supervised fine-tuning step over packed, masked rows (train/sft_data.hpp makes them).
//
//     auto m = tfm::train::load_gguf_model("SmolLM2-135M-Instruct.Q4_1.gguf");  // f32 weights
//     auto a = tfm::nn::make_lora(m, {.rank = 16, .alpha = 32});
//     tfm::nn::freeze(m); tfm::nn::attach(m, a);
//     auto opt = tfm::optim::adamw(a.parameters(), {...});
//     tfm::train::sft_step(m, opt, micro_batches, {...}, state);
//
//   Loading reads one tensor at a time (dequantized from any GGUF type) straight into the
//   model's parameter, so the peak is the model plus one tensor. The name map is the inverse of
//   io/export.hpp's (q, k and v stacked into c_attn; llama.cpp's interleaved RoPE rows are
//   nn::gpt's).
//
//   sft_step runs grad_accum micro-batches and weights every counted target token equally across
//   them: the step's loss is (sum of the token losses) / (number of counted tokens), not a mean
//   of per-batch means (which over-weights short batches).
//
// ERRORS
//   tfm::unsupported_error / parse_error from the GGUF reader and importer for files nn::gpt
//   cannot hold (named by key or tensor); tfm::value_error for an empty step.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/io/export_gguf_import.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/nn/qlora.hpp"
#include "typeformer/ops/loss.hpp"
#include "typeformer/optim/optimizer.hpp"
#include "typeformer/optim/schedule.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/train/trainer.hpp"

#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// The trainable form of a pretrained model.
using pretrained_model = nn::gpt<nn::dynamic_config, float>;

/// The config of a llama or gpt2 GGUF as nn::gpt's (block_size: the file's context length, or
/// `block_size` when > 0).
inline nn::dynamic_config gguf_config(const io::gguf_file& f, index_t block_size = 0) {
  const std::string a = f.get<std::string>("general.architecture");
  if (a != "llama" && a != "gpt2")
    io::detail::importer::refuse(f, "general.architecture '" + a + "'");
  nn::dynamic_config c = io::detail::importer::config_of(f, a);
  if (block_size > 0) c.block_size = block_size;
  return c;
}

namespace detail::finetune {

/// The GGUF tensors whose rows, stacked, make nn::gpt parameter `name`.
inline std::vector<std::string> gguf_sources(const std::string& name, bool llama) {
  auto ends = [&](std::string_view suf) {
    return name.size() >= suf.size() &&
           name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (name == "wte.weight") return {"token_embd.weight"};
  if (name == "wpe.weight") return {"position_embd.weight"};
  if (name == "lm_head.weight") return {"output.weight"};
  if (name.rfind("ln_f.", 0) == 0) return {"output_norm." + name.substr(5)};
  if (name.rfind("h.", 0) != 0) return {};
  const auto dot = name.find('.', 2);
  const std::string blk = "blk." + name.substr(2, dot - 2) + ".";
  const std::string rest = name.substr(dot + 1);
  const std::string leaf = ends(".bias") ? "bias" : "weight";
  auto one = [&](const std::string& t) { return std::vector<std::string>{blk + t + "." + leaf}; };
  if (rest.rfind("ln_1.", 0) == 0) return one("attn_norm");
  if (rest.rfind("ln_2.", 0) == 0) return one("ffn_norm");
  if (rest.rfind("attn.c_attn.", 0) == 0) {
    if (llama) return {blk + "attn_q." + leaf, blk + "attn_k." + leaf, blk + "attn_v." + leaf};
    return one("attn_qkv");
  }
  if (rest.rfind("attn.c_proj.", 0) == 0) return one("attn_output");
  if (rest == "mlp.router.weight") return {blk + "ffn_gate_inp.weight"};  // mixture of experts
  if (rest == "mlp.experts.gate") return {blk + "ffn_gate_exps.weight"};
  if (rest == "mlp.experts.up") return {blk + "ffn_up_exps.weight"};
  if (rest == "mlp.experts.down") return {blk + "ffn_down_exps.weight"};
  if (rest.rfind("mlp.gate.", 0) == 0) return one("ffn_gate");
  if (rest.rfind("mlp.up.", 0) == 0 || rest.rfind("mlp.c_fc.", 0) == 0) return one("ffn_up");
  if (rest.rfind("mlp.down.", 0) == 0 || rest.rfind("mlp.c_proj.", 0) == 0) return one("ffn_down");
  return {};
}

}  // namespace detail::finetune

/// Copies the GGUF's tensors into `ps` (nn::gpt names), one tensor at a time. Every parameter
/// must have its tensors with matching sizes.
inline void load_gguf_weights(const io::gguf_file& f, const nn::parameter_list<float>& ps,
                              bool llama) {
  for (const auto& p : ps) {
    const auto srcs = detail::finetune::gguf_sources(p.name, llama);
    if (srcs.empty())
      fail(errc::value, "tfm::train: no GGUF tensor maps to parameter '", p.name, "'.");
    float* dst = p.data->value.data();
    std::size_t filled = 0;
    const auto want = static_cast<std::size_t>(p.data->size());
    for (const auto& s : srcs) {
      const io::gguf_tensor_info* t = f.find_tensor(s);
      if (t == nullptr)
        fail(errc::parse, "tfm::train: '", f.name(), "': tensor '", s, "' is missing.");
      const std::vector<float> v = dequantize(t->type, f.tensor_data(*t));
      if (filled + v.size() > want)
        fail(errc::shape, "tfm::train: '", f.name(), "': tensor '", s, "' has ", v.size(),
             " values, more than parameter '", p.name, "' holds (", want, ").");
      std::memcpy(dst + filled, v.data(), v.size() * sizeof(float));
      filled += v.size();
    }
    if (filled != want)
      fail(errc::shape, "tfm::train: '", f.name(), "': parameter '", p.name, "' needs ", want,
           " values, its tensors hold ", filled, ".");
  }
}

/// A llama or gpt2 GGUF as a trainable nn::gpt with f32 weights.
inline pretrained_model load_gguf_model(const io::gguf_file& f, index_t block_size = 0) {
  const nn::dynamic_config c = gguf_config(f, block_size);
  pretrained_model m(c, nn::uninitialized);
  load_gguf_weights(f, m.parameters(), f.get<std::string>("general.architecture") == "llama");
  return m;
}
inline pretrained_model load_gguf_model(const std::string& path, index_t block_size = 0) {
  return load_gguf_model(io::gguf_file(path), block_size);
}

/// A llama or gpt2 GGUF as a trainable nn::gpt whose block linear maps are NF4 frozen weights
/// (QLoRA, nn/qlora.hpp) and everything else f32. Each map is read, quantized and released
/// before the next is read, so the f32 copy of the blocks never exists whole: the peak is the
/// f32 embeddings and norms plus one matrix.
inline pretrained_model load_gguf_model_nf4(const io::gguf_file& f, index_t block_size = 0) {
  const nn::dynamic_config c = gguf_config(f, block_size);
  pretrained_model m(c, nn::uninitialized);  // pages untouched until written
  const bool llama = f.get<std::string>("general.architecture") == "llama";
  nn::check_nf4_widths(m);
  nn::quantized_base_stats st;
  nn::detail::lora::for_each_site(m, [&](index_t, std::string_view, auto& lin) {
    nn::parameter_list<float> one;
    nn::add_parameter(one, lin.weight, true);
    load_gguf_weights(f, one, llama);
    one.clear();
    nn::quantize_linear_nf4(lin, st);
    release_cached_storage();
  });
  load_gguf_weights(f, m.parameters(), llama);
  return m;
}
inline pretrained_model load_gguf_model_nf4(const std::string& path, index_t block_size = 0) {
  return load_gguf_model_nf4(io::gguf_file(path), block_size);
}

// ---- supervised fine-tuning ----------------------------------------------------------------

/// Rows of a fine-tuning batch: ids and targets (B, T), targets equal to `ignore` count nothing,
/// and the document ids of packed rows (null: one document per row).
struct masked_batch {
  ids_tensor ids;
  ids_tensor targets;
  nn::segment_ids segments;
};

/// Targets a fine-tuning loss skips (the ignore_index of ops/loss.hpp's options).
inline constexpr std::int32_t ignore_target = -100;

struct sft_step_options {
  double clip = 1.0;  ///< max global gradient norm; 0 disables clipping
  optim::lr_schedule schedule = optim::lr_schedule::constant(2e-4);
};

struct sft_step_result {
  double loss = 0;       ///< mean loss per counted target token of the step
  index_t tokens = 0;    ///< counted target tokens
  double lr = 0;         ///< learning rate used
  double grad_norm = 0;  ///< before clipping (NaN when clip == 0)
  bool applied = true;   ///< false: a gradient was not finite and the update was skipped
};

/// Counted targets of a batch.
inline index_t counted_targets(const masked_batch& b) {
  index_t n = 0;
  for (index_t i = 0; i < b.targets.size(); ++i) n += b.targets.data()[i] != ignore_target;
  return n;
}

/// One optimizer step over `micro` (gradient accumulation: one backward per micro-batch). The
/// optimizer holds the trainable parameters (an adapter's, or the model's for full fine-tuning).
template <class Model, class T>
sft_step_result sft_step(Model& model, optim::optimizer<T>& opt,
                         std::span<const masked_batch> micro, const sft_step_options& o,
                         training_state& st) {
  if (micro.empty()) fail(errc::value, "tfm::train::sft_step: no micro-batches.");
  index_t total = 0;
  for (const auto& b : micro) total += counted_targets(b);
  sft_step_result res;
  res.lr = o.schedule(st.step);
  res.tokens = total;
  opt.set_lr(res.lr);
  opt.zero_grad();
  cross_entropy_options ce;
  ce.ignore_index = ignore_target;
  double sum = 0;
  for (const auto& b : micro) {
    if (counted_targets(b) == 0) continue;
    auto l = model.template loss<ce_reduction::sum>(b.ids, b.targets, true, ce, b.segments);
    sum += static_cast<double>(l.value()());
    (l * (1.0 / static_cast<double>(total))).backward();
  }
  res.loss =
      total > 0 ? sum / static_cast<double>(total) : std::numeric_limits<double>::quiet_NaN();
  const auto u = apply_update(opt, o.clip, res.lr, res.loss, st);
  res.grad_norm = u.grad_norm;
  res.applied = u.applied;
  return res;
}

/// Mean loss per counted target token over `batches` (no gradients, no dropout).
template <class Model>
double sft_evaluate(const Model& model, std::span<const masked_batch> batches) {
  no_grad ng;
  cross_entropy_options ce;
  ce.ignore_index = ignore_target;
  double sum = 0;
  index_t n = 0;
  for (const auto& b : batches) {
    const index_t k = counted_targets(b);
    if (k == 0) continue;
    sum += static_cast<double>(
        model.template loss<ce_reduction::sum>(b.ids, b.targets, false, ce, b.segments).value()());
    n += k;
  }
  return n > 0 ? sum / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace train
TFM_END_NAMESPACE
