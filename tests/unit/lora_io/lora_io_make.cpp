// lora_io_make BASE.gguf OUT [--rank R] [--alpha A] [--sd SD] [--seed S] [--rslora]
//              [--targets q,k,v,o,gate,up,down]
// A random LoRA adapter for the llama GGUF model BASE (A and B entries normal with standard
// deviation SD, seeded), written by typeformer's writers as OUT.gguf (llama.cpp's LoRA GGUF,
// io::save_lora_gguf) and OUT_peft/ (PEFT directory, io::save_peft). Used by
// tests/data/lora_io/llamacpp_lora_ppl.py. Exit code 2 with a message on bad arguments.
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/lora_adapter.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  namespace io = tfm::io;
  try {
    std::vector<std::string> pos;
    int rank = 8;
    double alpha = 16, sd = 0.02;
    unsigned long long seed = 1;
    bool rslora = false;
    std::string targets = "q,k,v,o,gate,up,down";
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--rank")
        rank = std::stoi(next());
      else if (a == "--alpha")
        alpha = std::stod(next());
      else if (a == "--sd")
        sd = std::stod(next());
      else if (a == "--seed")
        seed = std::stoull(next());
      else if (a == "--rslora")
        rslora = true;
      else if (a == "--targets")
        targets = next();
      else if (!a.empty() && a[0] == '-')
        throw std::runtime_error("unknown option " + a);
      else
        pos.push_back(a);
    }
    if (pos.size() != 2) throw std::runtime_error("expects BASE.gguf and OUT");
    const io::gguf_file base(pos[0]);
    const auto c = io::lora_base_config(base);
    io::lora_adapter_file f;
    f.rank = rank;
    f.alpha = alpha;
    f.rslora = rslora;
    f.base_model = base.get_or<std::string>("general.name", "");
    for (std::size_t at = 0; at <= targets.size();) {
      const auto comma = std::min(targets.find(',', at), targets.size());
      const std::string t = targets.substr(at, comma - at);
      bool found = false;
      for (auto x : io::all_lora_targets)
        if (t == io::lora_target_gguf(x) || t + "_proj" == io::lora_target_module(x)) {
          f.targets.push_back(x);
          found = true;
        }
      if (!found) throw std::runtime_error("unknown target '" + t + "'");
      at = comma + 1;
    }
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> n(0.f, static_cast<float>(sd));
    for (tfm::index_t l = 0; l < c.n_layer; ++l)
      for (auto t : f.targets) {
        io::lora_pair p;
        p.layer = l;
        p.target = t;
        p.rank = rank;
        std::tie(p.out, p.in) = io::lora_target_shape(c, t);
        p.a.resize(static_cast<std::size_t>(p.rank * p.in));
        p.b.resize(static_cast<std::size_t>(p.out * p.rank));
        for (auto& x : p.a) x = n(rng);
        for (auto& x : p.b) x = n(rng);
        f.pairs.push_back(std::move(p));
      }
    io::save_lora_gguf(f, pos[1] + ".gguf", c);
    io::save_peft(f, pos[1] + "_peft", c);
    std::printf("lora_io_make: %zu pairs, rank %d, scale %g -> %s.gguf, %s_peft/\n", f.pairs.size(),
                rank, f.scale(), pos[1].c_str(), pos[1].c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lora_io_make: %s\n", e.what());
    return 2;
  }
}
