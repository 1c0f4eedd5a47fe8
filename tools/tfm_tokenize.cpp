// tfm-tokenize: encodes text read from stdin with a byte-level BPE tokenizer, one output line
// per input line (the line's newline is not encoded), or decodes lines of ids with --decode.
//
//   tfm-tokenize --tokenizer FILE [--format ids|tokens] [--pattern gpt2|cl100k|o200k]
//                [--allow-special] [--decode]
//
// FILE: tokenizer.json, a *.tiktoken rank file (pattern and specials inferred from cl100k_base /
// o200k_base / r50k_base / p50k_base in the name, or --pattern), GPT-2 encoder.json (vocab.bpe
// beside it) or a directory holding both. --format tokens prints each token in the GPT-2
// byte-level spelling ("Ġworld"). Exit status: 0 ok, 1 error (message on stderr), 2 bad usage.
#include "typeformer/config/error.hpp"
#include "typeformer/tokenizer/bpe.hpp"
#include "typeformer/tokenizer/detail/bpe_tables.hpp"

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

int usage(const char* msg) {
  std::fprintf(stderr,
               "%s\nusage: tfm-tokenize --tokenizer FILE [--format ids|tokens] [--pattern "
               "gpt2|cl100k|o200k]\n"
               "                    [--allow-special] [--decode]   (text on stdin)\n",
               msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, format = "ids", pattern;
  bool allow_special = false, decode = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    if (a == "--tokenizer") {
      if (!value(path)) return usage("--tokenizer needs a file");
    } else if (a == "--format") {
      if (!value(format) || (format != "ids" && format != "tokens"))
        return usage("--format is ids or tokens");
    } else if (a == "--pattern") {
      if (!value(pattern)) return usage("--pattern needs a name");
    } else if (a == "--allow-special") {
      allow_special = true;
    } else if (a == "--decode") {
      decode = true;
    } else if (a == "-h" || a == "--help") {
      usage("tfm-tokenize: byte-level BPE encoding of stdin, line by line");
      return 0;
    } else {
      return usage(("unknown argument: " + a).c_str());
    }
  }
  if (path.empty()) return usage("--tokenizer FILE is required");
  try {
    tfm::bpe_tokenizer tok;
    if (!pattern.empty() && path.size() > 9 && path.substr(path.size() - 9) == ".tiktoken")
      tok = tfm::bpe_tokenizer::from_tiktoken_file(path, tfm::pattern_from_name(pattern),
                                                   tfm::bpe_tokenizer::from_file(path).specials());
    else
      tok = tfm::bpe_tokenizer::from_file(path);
    const auto allowed =
        allow_special ? tfm::allowed_specials::all() : tfm::allowed_specials::none();
    std::ios::sync_with_stdio(false);
    std::string line, out;
    std::vector<std::int32_t> ids;
    while (std::getline(std::cin, line)) {
      out.clear();
      if (decode) {
        ids.clear();
        std::istringstream ls(line);
        long long v;
        while (ls >> v) ids.push_back(static_cast<std::int32_t>(v));
        out = tok.decode(ids);
      } else {
        ids.clear();
        tok.encode_into(line, allowed, ids);
        for (std::size_t k = 0; k < ids.size(); ++k) {
          if (k) out.push_back(' ');
          if (format == "ids")
            out += std::to_string(ids[k]);
          else
            out += tfm::detail::bpe::map_bytes(tok.token_bytes(ids[k]));
        }
      }
      out.push_back('\n');
      std::cout.write(out.data(), static_cast<std::streamsize>(out.size()));
    }
    std::cout.flush();
  } catch (const tfm::error& e) {
    std::fprintf(stderr, "tfm-tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}
