// Helpers of the BERT tests: the model cache, the work directory, files and the JSON fixtures.
#pragma once

#include "typeformer/tokenizer/detail/json.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace bert_test {

/// $TFM_MODEL_DIR/all-minilm-l6-v2 (default ~/.cache/typeformer/models).
inline std::string minilm_dir() {
  const char* dir = std::getenv("TFM_MODEL_DIR");
  const char* home = std::getenv("HOME");
  const std::string base =
      dir && *dir ? dir : std::string(home ? home : "") + "/.cache/typeformer/models";
  return base + "/all-minilm-l6-v2";
}
inline bool minilm_present() {
  return std::filesystem::exists(minilm_dir() + "/model.safetensors") &&
         std::filesystem::exists(minilm_dir() + "/tokenizer.json");
}

#ifndef TFM_PYTHON  // set by CMakeLists.txt
#define TFM_PYTHON "python3"
#endif
#ifndef TFM_BERT_WORK_DIR  // set by tests/unit/bert/CMakeLists.txt; compile-only builds lack it
#define TFM_BERT_WORK_DIR "bert_test_work"
#endif

inline std::string work_dir() {
  std::filesystem::create_directories(TFM_BERT_WORK_DIR);
  return TFM_BERT_WORK_DIR;
}
inline std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/bert"; }

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline tfm::detail::json::value load_json(const std::string& path) {
  return tfm::detail::json::parse(slurp(path), path);
}
inline std::vector<std::int32_t> ids_of(const tfm::detail::json::value& a) {
  std::vector<std::int32_t> out;
  for (const auto& v : a.array) out.push_back(static_cast<std::int32_t>(v.integer));
  return out;
}

/// Runs a shell command; its exit status (127 when the shell could not run it).
inline int run(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
#ifdef WEXITSTATUS
  if (rc != -1) rc = WEXITSTATUS(rc);
#endif
  return rc;
}

}  // namespace bert_test
