// typeformer/nn/qlora.hpp
//
// QLoRA's frozen base (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs",
// arXiv:2305.14314, section 3): every linear map of the transformer blocks is held as 4-bit
// NormalFloat with double-quantized block constants (quant/nf4.hpp nf4_dq_tensor, 4.127 bits per
// weight) and multiplied tile by tile (backend/cpu/quant/nf4_linear.hpp: a tile of rows is
// expanded to f32 in a per-thread buffer and fed to the f32 GEMM, in the forward y = x W^T and in
// the backward dx = dy W). The LoRA adapters on top stay f32 (nn/lora.hpp), as do the
// embeddings, the norms and the head, as in the paper's setup (bitsandbytes quantizes the
// nn.Linear layers only).
//
//   auto m = tfm::train::load_gguf_model(path);
//   tfm::nn::quantize_base_nf4(m);          // the f32 block weights are released
//   auto a = tfm::nn::make_lora(m, lc); tfm::nn::freeze(m); tfm::nn::attach(m, a);
//
// quantize_embedding(m, bf16 | nf4) also holds the frozen (tied) embedding/head in 16 or 4 bits
// (bitsandbytes' QLoRA keeps it in 16): the lookups and the fused head + loss read it a range of
// rows at a time (ops/linear_loss.hpp frozen_rows), cutting a SmolLM2-135M step's peak RSS by
// 60 / 100 MB (bench/finetune/RESULTS.md).
//
// Compute is f32 (the paper computes in bf16; on a CPU without bf16 FMA f32 is the faster type).
// A quantized model cannot be merged with an adapter (nn::merge refuses); dequantize_base turns
// the base back into f32 vars (the NF4 rounding stays).
#pragma once

#include "typeformer/backend/cpu/quant/nf4_linear.hpp"
#include "typeformer/backend/reference/nf4_linear.hpp"
#include "typeformer/backend/tags.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/nn/gpt.hpp"
#include "typeformer/nn/lora.hpp"
#include "typeformer/ops/lora_linear.hpp"
#include "typeformer/quant/nf4.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace nn {

/// An NF4 (double-quantized) frozen weight on backend B.
template <class B = cpu>
class nf4_weight final : public frozen_weight<float> {
 public:
  explicit nf4_weight(nf4_dq_tensor w) : w_(std::move(w)) {}
  index_t rows() const noexcept override { return static_cast<index_t>(w_.rows); }
  index_t cols() const noexcept override { return static_cast<index_t>(w_.cols); }
  void matmul_bt(const float* x, index_t M, float* y, float beta) const override {
    nf4_matmul_bt(B{}, w_, x, M, y, beta);
  }
  void matmul(const float* dy, index_t M, float* dx, float beta) const override {
    nf4_matmul(B{}, w_, dy, M, dx, beta);
  }
  void dequantize(float* out) const override { nf4_dequantize_rows(B{}, w_, 0, rows(), out); }
  std::size_t bytes() const noexcept override { return w_.bytes(); }
  const nf4_dq_tensor& tensor() const noexcept { return w_; }

 private:
  nf4_dq_tensor w_;
};

/// What quantize_base_nf4 did.
struct quantized_base_stats {
  index_t matrices = 0;          ///< linear maps converted
  std::size_t f32_bytes = 0;     ///< their size as f32
  std::size_t packed_bytes = 0;  ///< their size as NF4 + double-quantized constants
};

/// Replaces one linear map's f32 weight by an NF4 frozen_weight (its width must be a multiple of
/// 64) and releases the f32 values; adds to `st`.
template <class B = cpu, class Lin>
void quantize_linear_nf4(Lin& lin, quantized_base_stats& st) {
  if (lin.frozen || !lin.weight.defined()) return;
  const auto rows = static_cast<std::size_t>(lin.weight.extent(0));
  const auto cols = static_cast<std::size_t>(lin.weight.extent(1));
  const float* w = lin.weight.data()->value.data();
  auto q = quantize_nf4_dq(std::span<const float>(w, rows * cols), rows, cols, lin.weight.name());
  st.f32_bytes += rows * cols * sizeof(float);
  st.packed_bytes += q.bytes();
  ++st.matrices;
  lin.frozen = std::make_shared<const nf4_weight<B>>(std::move(q));
  lin.weight = std::remove_cvref_t<decltype(lin.weight)>();
}

/// Fails (tfm::shape_error naming the parameter) unless every block linear map of m has an
/// input width NF4 can hold (a multiple of 64).
template <class Cfg>
void check_nf4_widths(gpt<Cfg, float>& m) {
  detail::lora::for_each_site(m, [&](index_t, std::string_view, auto& lin) {
    if (!lin.frozen && lin.weight.defined() && lin.weight.extent(1) % 64 != 0)
      fail(errc::shape, "tfm::nn::quantize_base_nf4: '", lin.weight.name(), "' has ",
           lin.weight.extent(1), " input features; NF4 needs a multiple of 64.");
  });
}

/// Replaces the weight of every linear map in m's blocks (c_attn, c_proj, the MLP projections)
/// by an NF4 frozen_weight and releases the f32 values. Maps whose input width is not a
/// multiple of 64 (NF4's block) raise tfm::shape_error naming the parameter, before anything
/// changes. Maps with a bias keep it (f32, frozen with the rest by nn::freeze).
template <class B = cpu, class Cfg>
quantized_base_stats quantize_base_nf4(gpt<Cfg, float>& m) {
  check_nf4_widths(m);
  quantized_base_stats st;
  detail::lora::for_each_site(
      m, [&](index_t, std::string_view, auto& lin) { quantize_linear_nf4<B>(lin, st); });
  // The f32 blocks just freed would otherwise stay in the storage cache (core/storage.hpp),
  // resident, waiting for tensors of their exact sizes.
  release_cached_storage();
  return st;
}

/// Storage of a frozen token embedding (quantize_embedding).
enum class embedding_storage { bf16, nf4 };

/// Frozen rows in bf16 (round to nearest even), read back as f32.
class bf16_rows final : public frozen_rows<float> {
 public:
  bf16_rows(const float* w, index_t rows, index_t cols)
      : rows_(rows), cols_(cols), v_(static_cast<std::size_t>(rows * cols)) {
    for (std::size_t i = 0; i < v_.size(); ++i) v_[i] = bf16(w[i]);
  }
  index_t rows() const noexcept override { return rows_; }
  index_t cols() const noexcept override { return cols_; }
  void read_rows(index_t r0, index_t r1, float* out) const override {
    const bf16* p = v_.data() + r0 * cols_;
    const index_t n = (r1 - r0) * cols_;
    for (index_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
  }
  std::size_t bytes() const noexcept override { return v_.size() * sizeof(bf16); }

 private:
  index_t rows_, cols_;
  std::vector<bf16> v_;
};

/// Frozen rows in NF4 with double-quantized constants (as the block linears), read back as f32.
template <class B = cpu>
class nf4_rows final : public frozen_rows<float> {
 public:
  explicit nf4_rows(nf4_dq_tensor w) : w_(std::move(w)) {}
  index_t rows() const noexcept override { return static_cast<index_t>(w_.rows); }
  index_t cols() const noexcept override { return static_cast<index_t>(w_.cols); }
  void read_rows(index_t r0, index_t r1, float* out) const override {
    nf4_dequantize_rows(B{}, w_, r0, r1, out);
  }
  std::size_t bytes() const noexcept override { return w_.bytes(); }

 private:
  nf4_dq_tensor w_;
};

/// Holds m's frozen token embedding (tied to the head or not) in bf16 or NF4 (m.wte_rows) and
/// releases its f32 values; returns the bytes it holds now. The embedding lookups and the fused
/// head + loss read it row range by row range (gpt::hidden, gpt::loss; ops/linear_loss.hpp), so
/// no f32 copy of it exists during training (QLoRA's 16-bit embeddings, as bitsandbytes keeps
/// them, or 4-bit for less memory). gpt::head_weight() is then unavailable (loss() and
/// forward() are the ways to the head). Raises tfm::value_error when the embedding trains
/// (requires a gradient: call nn::freeze first) or is already converted, tfm::shape_error for NF4
/// when the width is not a multiple of 64.
template <class B = cpu, class Cfg>
std::size_t quantize_embedding(gpt<Cfg, float>& m,
                               embedding_storage how = embedding_storage::bf16) {
  auto& w = m.wte.weight;
  if (m.wte_rows || !w.defined())
    fail(errc::value, "tfm::nn::quantize_embedding: the embedding is already converted.");
  if (w.requires_grad())
    fail(errc::value, "tfm::nn::quantize_embedding: '", w.name(),
         "' requires a gradient; a converted embedding is frozen (call nn::freeze first).");
  const index_t rows = w.extent(0), cols = w.extent(1);
  const float* p = w.data()->value.data();
  if (how == embedding_storage::bf16) {
    m.wte_rows = std::make_shared<const bf16_rows>(p, rows, cols);
  } else {
    if (cols % 64 != 0)
      fail(errc::shape, "tfm::nn::quantize_embedding: '", w.name(), "' has ", cols,
           " features; NF4 needs a multiple of 64.");
    m.wte_rows = std::make_shared<const nf4_rows<B>>(
        quantize_nf4_dq(std::span<const float>(p, static_cast<std::size_t>(rows * cols)),
                        static_cast<std::size_t>(rows), static_cast<std::size_t>(cols), w.name()));
  }
  w = std::remove_cvref_t<decltype(w)>();
  release_cached_storage();
  return m.wte_rows->bytes();
}

/// The inverse: every NF4 base becomes an f32 parameter again (with the values NF4 rounded to),
/// not requiring gradients; its name is the map's usual one ("h.0.attn.c_attn.weight").
template <class Cfg>
void dequantize_base(gpt<Cfg, float>& m) {
  detail::lora::for_each_site(m, [&](index_t l, std::string_view group, auto& lin) {
    if (!lin.frozen) return;
    using W = std::remove_cvref_t<decltype(lin.weight)>;
    tensor<float, typename W::shape_type> t(
        W::shape_type::from_extents({lin.frozen->rows(), lin.frozen->cols()}));
    lin.frozen->dequantize(t.data());
    W w(t, false);
    const std::string base = "h." + std::to_string(l) + ".";
    const std::string leaf = group == "attn"   ? "attn.c_attn"
                             : group == "o"    ? "attn.c_proj"
                             : group == "gate" ? "mlp.gate"
                             : group == "up"
                                 ? (m.config().mlp == mlp_kind::swiglu ? "mlp.up" : "mlp.c_fc")
                                 : (m.config().mlp == mlp_kind::swiglu ? "mlp.down" : "mlp.c_proj");
    w.set_name(base + leaf + ".weight");
    lin.weight = std::move(w);
    lin.frozen.reset();
  });
}

}  // namespace nn
TFM_END_NAMESPACE
