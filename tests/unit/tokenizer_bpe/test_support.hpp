// Helpers shared by the tokenizer_bpe tests: locating ../shared/data, running the Python
// reference scripts, reading their outputs.
#pragma once

#include "typeformer/tokenizer/detail/json.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bpe_test {

inline std::string source_dir() { return TFM_SOURCE_DIR; }
inline std::string work_dir() {
  std::filesystem::create_directories(TFM_BPE_WORK_DIR);
  return TFM_BPE_WORK_DIR;
}

/// ../shared/data next to the project root, or "" when absent.
inline std::string shared_data() {
  const std::filesystem::path p = std::filesystem::path(source_dir()) / ".." / "shared" / "data";
  if (std::filesystem::exists(p / "gpt2" / "encoder.json") &&
      std::filesystem::exists(p / "cl100k" / "cl100k_base.tiktoken"))
    return std::filesystem::canonical(p).string();
  return {};
}

/// Seed: TFM_TEST_SEED from the environment, else a fixed default.
inline std::uint64_t seed(std::uint64_t fallback) {
  if (const char* s = std::getenv("TFM_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return fallback;
}

/// Runs a Python script from this folder; returns the exit status (77 = skip).
inline int run_python(const std::string& script_and_args, const std::string& log) {
  const std::string cmd = std::string(TFM_PYTHON) + " " + source_dir() +
                          "/tests/unit/tokenizer_bpe/" + script_and_args + " > " + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc == -1) return -1;
#ifdef WEXITSTATUS
  return WEXITSTATUS(rc);
#else
  return rc;
#endif
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<std::string> read_corpus(const std::string& path) {
  std::vector<std::string> docs;
  std::ifstream f(path, std::ios::binary);
  std::string line;
  while (std::getline(f, line))
    docs.push_back(tfm::detail::json::parse(line, "corpus.jsonl").string);
  return docs;
}

inline std::vector<std::vector<std::int32_t>> read_ids(const std::string& path) {
  std::vector<std::vector<std::int32_t>> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    std::vector<std::int32_t> ids;
    std::istringstream ls(line);
    std::int64_t v;
    while (ls >> v) ids.push_back(static_cast<std::int32_t>(v));
    out.push_back(std::move(ids));
  }
  return out;
}

}  // namespace bpe_test
