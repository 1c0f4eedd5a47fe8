// Block-quantized weights kept packed (issue 19): tiny llama GGUFs whose matrices are Q4_0,
// Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q6_K (and Q5_K, Q2_K, Q3_K where quant/quantize.hpp quantizes
// them; written with gguf_writer and quant/quantize.hpp), run by the packed engine (cpu:
// integer-dot GEMV for decode: Q8_0/Q8_1 activations for the 32-value formats, Q8_K for the
// K-quants; dequantize-in-pack GEMM for prefill), by the engine that dequantizes to f32 on load,
// and by the reference backend (dequantize on use, double sums). No model file needed.
//
// Bounds (NMSE = sum d^2 / sum ref^2 over all logits, TESTING.md's metric):
//   - prefill, packed vs f32-on-load: 1e-10. Both are float GEMMs over the same dequantized
//     values (the dequantize-in-pack GEMM has the float GEMM's blocking), so only the float
//     GEMM's small-shape paths can differ in rounding order.
//   - cpu packed vs the reference backend: 1e-9 (float vs double sums through 2 layers).
//   - decode, packed vs f32-on-load: 2e-3 (TESTING.md's whole-block bound; measured 3e-4 ..
//     9e-4): packed decode rounds every activation row to 8-bit blocks (llama.cpp's Q8_0/Q8_1)
//     before the integer dots, about 2.5e-5 NMSE per product, and the random model amplifies it
//     through two blocks. The K-quants round their activations to Q8_K (256-value blocks, one
//     binary32 scale) the same way.
//   - the argmax of every position agrees, except in decode where the reference's top-2 gap is
//     under 2.5% of its largest |logit| (measured: near ties of 0.15% and 0.6% flip under the
//     8-bit activations; with the Q4_K matrices on Q8_K activations, whose 256-value blocks
//     round coarser than Q8_0's 32, one more of 1.9%); 1, 2 and 3 threads give the same bits.
#include "tiny_model.hpp"

#include "typeformer/infer/model.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using namespace tfm;

namespace {

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return den > 0 ? num / den : num;
}

/// Positions whose argmax differs between a and the reference b (rows of V), not counting near
/// ties of b: positions whose top-2 gap is below `tie` times b's largest |logit|.
int argmax_mismatches(const std::vector<float>& a, const std::vector<float>& b, index_t V,
                      double tie = 0) {
  int bad = 0;
  for (std::size_t r = 0; r * static_cast<std::size_t>(V) < a.size(); ++r) {
    const float* x = a.data() + r * static_cast<std::size_t>(V);
    const float* y = b.data() + r * static_cast<std::size_t>(V);
    const auto ia = std::max_element(x, x + V) - x, ib = std::max_element(y, y + V) - y;
    if (ia == ib) continue;
    double top2 = -1e300, amax = 0;
    for (index_t j = 0; j < V; ++j) {
      if (j != ib) top2 = std::max(top2, static_cast<double>(y[j]));
      amax = std::max(amax, std::abs(static_cast<double>(y[j])));
    }
    const double gap = static_cast<double>(y[ib]) - top2;
    MESSAGE("position " << r << ": argmax " << ia << " vs " << ib << ", reference top-2 gap " << gap
                        << " of max |logit| " << amax);
    bad += gap >= tie * amax;
  }
  return bad;
}

template <class Model>
std::vector<float> prefill_all(const Model& m, const std::vector<std::int32_t>& ids) {
  infer::session s(m, {.context = 64});
  auto lg = s.prefill(ids, true);
  return {lg.begin(), lg.end()};
}

/// Logits of decoding ids one by one (after a one-token prefill), rows of V.
template <class Model>
std::vector<float> decode_all(const Model& m, const std::vector<std::int32_t>& ids) {
  infer::session s(m, {.context = 64});
  auto lg = s.prefill(std::span<const std::int32_t>(ids.data(), 1));
  std::vector<float> out(lg.begin(), lg.end());
  for (std::size_t i = 1; i < ids.size(); ++i) {
    lg = s.decode(ids[i]);
    out.insert(out.end(), lg.begin(), lg.end());
  }
  return out;
}

/// The formats of the mixed model (one per matrix, in turn).
const std::vector<ggml_type> mixed_formats{ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0,
                                           ggml_type::q5_1, ggml_type::q8_0, ggml_type::q4_K};

/// The formats tested alone: the 32-value ones, Q4_K and Q6_K, and the other K-quants where
/// quant/quantize.hpp has their quantizer.
const std::vector<ggml_type> all_formats = [] {
  std::vector<ggml_type> v{ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1,
                           ggml_type::q8_0, ggml_type::q4_K, ggml_type::q6_K};
  for (ggml_type t : {ggml_type::q5_K, ggml_type::q2_K, ggml_type::q3_K})
    if (quantizable(t)) v.push_back(t);
  return v;
}();

bool is_k_quant(ggml_type t) {
  return t == ggml_type::q2_K || t == ggml_type::q3_K || t == ggml_type::q4_K ||
         t == ggml_type::q5_K || t == ggml_type::q6_K;
}

}  // namespace

TEST_CASE("packed block-quantized weights: same logits as dequantized-on-load and the oracle") {
  for (bool tied : {true, false}) {
    const std::uint64_t seed = tied ? 31 : 32;
    MESSAGE("seed " << seed << std::string(tied ? ", tied output" : ", untied output"));
    const infer_test::tiny_model tm = infer_test::make_quant_tiny(seed, tied, mixed_formats);
    const std::string path =
        infer_test::work_dir() + "/quant_" + std::to_string(seed) + (tied ? "_tied" : "") + ".gguf";
    infer_test::write_tiny(tm, path);

    auto packed = infer::load_gguf(path);
    auto f32 = infer::load_gguf(path, {.quantized = infer::quantized_weights::f32});
    auto oracle = infer::transformer<float, reference>::from_gguf(path);

    // Every matrix stays packed and borrowed; nothing is allocated (norms are aligned F32).
    std::size_t quant_bytes = 0;
    for (const auto& [name, b] : tm.qbytes) quant_bytes += b.size();
    const auto& st = packed.stats();
    MESSAGE("packed: borrowed " << st.bytes_borrowed << " B, allocated " << st.bytes_allocated
                                << " B; f32: allocated " << f32.stats().bytes_allocated << " B");
    CHECK(st.bytes_allocated == 0);
    CHECK(st.bytes_borrowed >= quant_bytes);
    CHECK(f32.stats().bytes_allocated > 4 * quant_bytes);
    for (index_t l = 0; l < 2; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      const auto& b = packed.block(l);
      CHECK(b.wq.type() == tm.qtype.at(p + "attn_q.weight"));
      CHECK(b.w_up.type() == tm.qtype.at(p + "ffn_up.weight"));
      CHECK(b.w_down.type() == tm.qtype.at(p + "ffn_down.weight"));
      CHECK(b.wq.quantized());
      CHECK_FALSE(b.wq.owned());
      CHECK(f32.block(l).wq.type() == ggml_type::f32);
    }
    CHECK(packed.token_embd().type() == tm.qtype.at("token_embd.weight"));
    if (tied) CHECK(packed.output().data() == packed.token_embd().data());

    // The embedding lookup dequantizes one row, bitwise gguf-py's values.
    std::vector<float> row(256);
    packed.token_embd().row(17, row.data());
    const std::vector<float>& e = tm.w.at("token_embd.weight");
    CHECK(std::equal(row.begin(), row.end(), e.begin() + 17 * 256));

    std::vector<std::int32_t> ids;
    for (int i = 0; i < 24; ++i) ids.push_back(static_cast<std::int32_t>((i * 37 + 5) % 96));
    const index_t V = 96;

    const std::vector<float> pf = prefill_all(f32, ids), pp = prefill_all(packed, ids),
                             po = prefill_all(oracle, ids);
    const double e_prefill = nmse(pp, pf), e_oracle = nmse(pp, po);
    const std::vector<float> df = decode_all(f32, ids), dp = decode_all(packed, ids);
    const double e_decode = nmse(dp, df);
    MESSAGE("NMSE prefill packed vs f32 " << e_prefill << ", packed cpu vs reference " << e_oracle
                                          << ", decode packed (Q8 activations) vs f32 "
                                          << e_decode);
    CHECK(e_prefill < 1e-10);
    CHECK(e_oracle < 1e-9);
    CHECK(e_decode < 2e-3);
    CHECK(argmax_mismatches(pp, pf, V) == 0);
    CHECK(argmax_mismatches(dp, df, V, 2.5e-2) == 0);
    CHECK(argmax_mismatches(pp, po, V) == 0);

    // 1, 2, 3 threads: the same bits, prefill and decode.
    for (int nt : {2, 3}) {
      std::vector<float> p1, d1, pn, dn;
      {
        thread_scope one(1);
        p1 = prefill_all(packed, ids);
        d1 = decode_all(packed, ids);
      }
      {
        thread_scope many(nt);
        pn = prefill_all(packed, ids);
        dn = decode_all(packed, ids);
      }
      CHECK_MESSAGE(p1 == pn, nt << " threads, prefill");
      CHECK_MESSAGE(d1 == dn, nt << " threads, decode");
    }
  }
}

TEST_CASE("packed weights: every format alone runs decode and prefill against f32-on-load") {
  for (ggml_type t : all_formats) {
    const std::uint64_t seed = 40 + static_cast<std::uint64_t>(t);
    const infer_test::tiny_model tm = infer_test::make_quant_tiny(seed, true, {t});
    const std::string path =
        infer_test::work_dir() + "/quant_only_" + std::string(ggml_type_name(t)) + ".gguf";
    infer_test::write_tiny(tm, path);
    auto packed = infer::load_gguf(path);
    auto f32 = infer::load_gguf(path, {.quantized = infer::quantized_weights::f32});
    CHECK(packed.block(0).w_gate.type() == t);
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 12; ++i) ids.push_back(static_cast<std::int32_t>((i * 53 + 1) % 96));
    const double e_prefill = nmse(prefill_all(packed, ids), prefill_all(f32, ids));
    const double e_decode = nmse(decode_all(packed, ids), decode_all(f32, ids));
    MESSAGE(ggml_type_name(t) << " (seed " << seed << "): NMSE prefill " << e_prefill << ", decode "
                              << e_decode);
    CHECK(e_prefill < 1e-10);
    CHECK(e_decode < 2e-3);
    // The K-quants decode through the Q8_K integer dots (gemv_kq.hpp): the activations are
    // rounded to 8 bits, so decode is not the float product (that would be ~1e-12).
    if (is_k_quant(t)) CHECK(e_decode > 1e-9);
  }
}

TEST_CASE("a misaligned quantized tensor is copied, still packed") {
  // general.alignment = 1 puts tensor data at odd offsets: the loader copies those tensors
  // (same type, same bytes) instead of reading them in place.
  const infer_test::tiny_model tm = infer_test::make_quant_tiny(51, true, {ggml_type::q4_1});
  const std::string path = infer_test::work_dir() + "/quant_misaligned.gguf";
  {
    io::gguf_writer out(path);
    out.add("general.architecture", std::string("llama"));
    out.set_alignment(1);
    out.add("llama.block_count", static_cast<std::uint32_t>(tm.L));
    out.add("llama.context_length", static_cast<std::uint32_t>(tm.ctx));
    out.add("llama.embedding_length", static_cast<std::uint32_t>(tm.C));
    out.add("llama.feed_forward_length", static_cast<std::uint32_t>(tm.F));
    out.add("llama.attention.head_count", static_cast<std::uint32_t>(tm.H));
    out.add("llama.attention.head_count_kv", static_cast<std::uint32_t>(tm.G));
    out.add("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    // A one-byte I8 tensor first (the engine ignores it) puts the rest at odd offsets.
    const std::int8_t pad = 0;
    out.add_tensor("pad.weight", {1}, ggml_type::i8,
                   std::span<const std::byte>(reinterpret_cast<const std::byte*>(&pad), 1));
    for (const auto& [name, v] : tm.w) {
      const auto [r, c] = tm.shape.at(name);
      std::vector<std::int64_t> ne =
          r == 1 ? std::vector<std::int64_t>{c} : std::vector<std::int64_t>{c, r};
      if (const auto q = tm.qtype.find(name); q != tm.qtype.end())
        out.add_tensor(name, ne, q->second, std::span<const std::byte>(tm.qbytes.at(name)));
      else
        out.add_tensor(name, ne, ggml_type::f32, std::as_bytes(std::span(v)));
    }
    out.finish();
  }
  io::gguf_file probe(path);
  if (reinterpret_cast<std::uintptr_t>(
          probe.tensor_data(*probe.find_tensor("blk.0.attn_q.weight")).data()) %
          4 ==
      0) {
    MESSAGE("the writer aligned the tensor anyway; nothing to test");
    return;
  }
  auto packed = infer::load_gguf(path);
  auto f32 = infer::load_gguf(path, {.quantized = infer::quantized_weights::f32});
  CHECK(packed.block(0).wq.type() == ggml_type::q4_1);
  CHECK(packed.block(0).wq.owned());
  CHECK(packed.stats().bytes_allocated > 0);
  std::vector<std::int32_t> ids{1, 2, 3, 4, 5, 6};
  CHECK(nmse(prefill_all(packed, ids), prefill_all(f32, ids)) < 1e-10);
  CHECK(nmse(decode_all(packed, ids), decode_all(f32, ids)) < 2e-3);
}
