// bench_moe_gguf: writes the random-weight llama mixture-of-experts GGUFs of the decode
// figure (issue 22: "decode of a MoE GGUF (a small random-weight llama MoE written by our GGUF
// writer) against llama.cpp on the same file: >= 1.0x tg128"), for
// bench/infer/speed_vs_llamacpp.py to time `tfm bench` and llama.cpp on:
//
//   bench_moe_gguf [--out DIR] [--c 512] [--layers 8] [--heads 8] [--kv-heads 4] [--experts 8]
//                  [--used 2] [--ffn 1408] [--vocab 32000] [--seed 1]
//
// A Mixtral-like small shape (the defaults: C 512, 8 layers, 8 query heads of 64, 4 kv heads,
// E 8 experts of width 1408, k 2, vocab 32000: 0.33 B parameters, 0.07 B active per token).
// DIR/moe_f16.gguf is written by tfm::io::gguf_writer (tests/support/moe_gguf.hpp: F16
// matrices, F32 norms and router, a minimal SentencePiece vocabulary so that llama.cpp opens
// it); DIR/moe_q4_0.gguf and DIR/moe_q8_0.gguf are tfm::quantize_gguf of it with the Q4_0 and
// Q8_0 presets (`tfm quantize`'s library call: llama.cpp's per-tensor mix, the 3-D expert
// tensors quantized row by row, the router kept F32).
#include "moe_gguf.hpp"

#include <typeformer/io/gguf.hpp>
#include <typeformer/quant/file_quantize.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
  tfm_test::moe_gguf_spec s;
  s.C = 512;
  s.L = 8;
  s.H = 8;
  s.G = 4;
  s.D = 64;
  s.E = 8;
  s.K = 2;
  s.F = 1408;
  s.V = 32000;
  s.ctx = 4096;
  s.type = tfm::ggml_type::f16;
  std::string out = "moe_bench";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (a == "--out")
      out = argv[i + 1];
    else if (a == "--c")
      s.C = v;
    else if (a == "--layers")
      s.L = v;
    else if (a == "--heads")
      s.H = v;
    else if (a == "--kv-heads")
      s.G = v;
    else if (a == "--experts")
      s.E = v;
    else if (a == "--used")
      s.K = v;
    else if (a == "--ffn")
      s.F = v;
    else if (a == "--vocab")
      s.V = v;
    else if (a == "--seed")
      s.seed = static_cast<std::uint64_t>(v);
    else {
      std::fprintf(stderr, "bench_moe_gguf: unknown option %s (see the file header)\n", a.c_str());
      return 2;
    }
  }
  if (s.H <= 0 || s.C % s.H != 0) {
    std::fprintf(stderr, "bench_moe_gguf: --c must be a multiple of --heads\n");
    return 2;
  }
  s.D = s.C / s.H;
  std::filesystem::create_directories(out);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string f16 = out + "/moe_f16.gguf";
  tfm_test::write_moe_gguf(s, f16);
  const double active = static_cast<double>(s.L) *
                        (2.0 * s.C * s.H * s.D + 2.0 * s.C * s.G * s.D + 3.0 * s.K * s.C * s.F);
  std::printf(
      "%s: C %lld, L %lld, H %lld, G %lld, D %lld, E %lld, k %lld, F %lld, V %lld "
      "(%.3f B active parameters per token without embeddings)\n",
      f16.c_str(), static_cast<long long>(s.C), static_cast<long long>(s.L),
      static_cast<long long>(s.H), static_cast<long long>(s.G), static_cast<long long>(s.D),
      static_cast<long long>(s.E), static_cast<long long>(s.K), static_cast<long long>(s.F),
      static_cast<long long>(s.V), active / 1e9);
  const tfm::io::gguf_file src(f16);
  for (const char* preset : {"q4_0", "q8_0"}) {
    const std::string dst = out + "/moe_" + preset + ".gguf";
    const tfm::quantize_gguf_report r =
        tfm::quantize_gguf(src, dst, tfm::quantize_preset_of(preset), {.threads = 2});
    std::printf("%s: %.1f MiB, %.2f bits per weight\n", dst.c_str(),
                static_cast<double>(r.file_bytes_out) / 1048576.0, r.bpw_out());
  }
  std::printf("written in %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
