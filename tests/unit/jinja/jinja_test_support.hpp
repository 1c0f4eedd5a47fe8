// Shared helpers of the jinja tests: reading tests/data/jinja.
#pragma once

#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace jinja_test {

inline std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/jinja"; }

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline std::string unhex(const std::string& h) {
  if (h == "-") return {};
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

inline std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream s(line);
  for (std::string f; s >> f;) out.push_back(f);
  return out;
}

/// The instant gen_jinja_reference.py gives strftime_now: 2024-09-05 13:07:09, a Thursday.
inline std::tm reference_now() {
  std::tm t{};
  t.tm_year = 2024 - 1900;
  t.tm_mon = 8;
  t.tm_mday = 5;
  t.tm_hour = 13;
  t.tm_min = 7;
  t.tm_sec = 9;
  t.tm_wday = 4;
  t.tm_yday = 248;
  return t;
}

/// The template names of tests/data/jinja/templates.
inline const std::vector<std::string>& template_names() {
  static const std::vector<std::string> n = {
      "gemma",        "llama2",     "llama3",      "llama3_2",    "mistral_v0_1",
      "mistral_v0_2", "mistral_v3", "phi3_5_mini", "phi3_medium", "phi3_mini",
      "phi3_small",   "qwen2_5",    "qwen3",       "smollm2"};
  return n;
}

inline std::string template_text(const std::string& name) {
  return read_file(data_dir() + "/templates/" + name + ".jinja");
}

}  // namespace jinja_test
