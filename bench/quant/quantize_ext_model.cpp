// quantize_ext_model IN.gguf OUT.gguf FORMAT
//
// Writes IN with its linear weights (blk.*.attn_{q,k,v,output}.weight, blk.*.ffn_{gate,up,down}
// .weight) in FORMAT, for the perplexity table of typeformer's own layouts next to GGML's
// (bench/quant/RESULTS.md). FORMAT: nf4 (TFM_NF4), nf4_dq (NF4 with double-quantized absmax,
// converted to TFM_NF4 blocks: the values a QLoRA-style checkpoint holds), i8 (INT8 per output
// channel, Q8_0 bytes), i4_g32 (= Q4_1 bytes), i4_g64, i4_g128 (a tensor whose row length is not
// a multiple of 128 falls back to g64, said on stderr), q4_0, q4_1, q8_0 (tfm::quantize, gguf-py's
// bytes). Every format uses the same policy, so the table compares the formats alone:
// token_embd.weight (tied output in SmolLM2) becomes Q8_0, every other tensor is copied.
// Metadata is copied (general.file_type is left as in IN: no llama_ftype names these layouts).
// Prints the tensor bytes, bits per weight of the linear weights and their RMSE.
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/dequantize.hpp"
#include "typeformer/quant/int_formats.hpp"
#include "typeformer/quant/nf4.hpp"
#include "typeformer/quant/quantize.hpp"

#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr,
                 "usage: quantize_ext_model IN.gguf OUT.gguf "
                 "nf4|nf4_dq|i8|i4_g32|i4_g64|i4_g128|q4_0|q4_1|q8_0\n");
    return 2;
  }
  try {
    using tfm::ggml_type;
    const std::string fmt = argv[3];
    tfm::io::gguf_file f(argv[1]);
    auto linear = [](const std::string& n) {
      for (const char* s : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                            "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"})
        if (n.rfind("blk.", 0) == 0 && n.size() > std::string(s).size() &&
            n.compare(n.size() - std::string(s).size(), std::string::npos, s) == 0)
          return true;
      return false;
    };
    auto type_of = [&](const tfm::io::gguf_tensor_info& t) -> ggml_type {
      const std::string n(t.name);
      if (n == "token_embd.weight") return ggml_type::q8_0;
      if (!linear(n)) return t.type;
      if (fmt == "nf4" || fmt == "nf4_dq") return ggml_type::tfm_nf4;
      if (fmt == "i8" || fmt == "q8_0") return ggml_type::q8_0;
      if (fmt == "i4_g32" || fmt == "q4_1") return ggml_type::q4_1;
      if (fmt == "i4_g64") return ggml_type::tfm_i4_g64;
      if (fmt == "i4_g128")
        return t.ne[0] % 128 == 0 ? ggml_type::tfm_i4_g128 : ggml_type::tfm_i4_g64;
      if (fmt == "q4_0") return ggml_type::q4_0;
      throw std::runtime_error("unknown format " + fmt);
    };
    tfm::io::gguf_writer w(argv[2]);
    for (const auto& kv : f.metadata()) w.add(kv.key, kv.value);
    for (const auto& t : f.tensors())
      w.add_tensor_info(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims), type_of(t));
    w.write_header();
    double err = 0, n_lin = 0, bytes_lin = 0, total = 0;
    int fallbacks = 0;
    for (const auto& t : f.tensors()) {
      const std::string n(t.name);
      const ggml_type ty = type_of(t);
      const auto src = f.tensor_data(t);
      if (ty == t.type) {
        w.write_tensor_data(src);
        total += double(src.size());
        continue;
      }
      const std::size_t cols = static_cast<std::size_t>(t.ne[0]);
      std::vector<float> x = tfm::dequantize(t.type, src);
      const std::size_t rows = x.size() / cols;
      std::vector<std::byte> out;
      if (fmt == "i8" && linear(n)) {
        out = tfm::quantize_int8_per_channel(x.data(), rows, cols, n);
      } else if (fmt == "nf4_dq" && linear(n)) {
        out = tfm::nf4_dq_to_blocks(tfm::quantize_nf4_dq(x, rows, cols, n));
      } else {
        if (fmt == "i4_g128" && ty == ggml_type::tfm_i4_g64 && linear(n)) {
          ++fallbacks;
          std::fprintf(stderr, "%s: row length %zu is not a multiple of 128: INT4-g64\n", n.c_str(),
                       cols);
        }
        out = tfm::quantize(ty, x, rows, cols, n);
      }
      w.write_tensor_data(out);
      total += double(out.size());
      if (linear(n)) {
        const auto y = tfm::dequantize(ty, out);
        for (std::size_t i = 0; i < x.size(); ++i)
          err += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
        n_lin += double(x.size());
        bytes_lin += double(out.size());
      }
    }
    w.finish();
    std::printf("%s: %s tensor bytes %.0f, linear weights %.4f bits/weight, RMSE %.6g%s\n", argv[2],
                fmt.c_str(), total, 8 * bytes_lin / n_lin, std::sqrt(err / n_lin),
                fallbacks ? " (some g64 fallbacks)" : "");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quantize_ext_model: %s\n", e.what());
    return 1;
  }
}
