// Helpers of the gguf_tokenizer tests: paths, the model cache, the fixture record files written
// by tests/data/gguf_tokenizer/make_fixtures.py, and in-memory GGUF vocabularies.
#pragma once

#include "tfm_test.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/io/gguf_tokenizer.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#ifndef TFM_GTOK_WORK_DIR  // set by CMakeLists.txt; compile-only builds lack these
#define TFM_GTOK_WORK_DIR "gguf_tokenizer_work"
#endif
#ifndef TFM_PYTHON
#define TFM_PYTHON "python3"
#endif

namespace gtok_test {

inline std::string data_dir() { return std::string(TFM_SOURCE_DIR) + "/tests/data/gguf_tokenizer"; }
inline std::string work_dir() {
  std::filesystem::create_directories(TFM_GTOK_WORK_DIR);
  return TFM_GTOK_WORK_DIR;
}

using tfm_test::smollm2_path;

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

/// One text with llama.cpp's ids and the flags it was tokenized with.
struct record {
  bool add_special = false;
  bool parse_special = false;
  std::string text;
  std::vector<std::int32_t> ids;
};

/// The records of one pre-tokenizer, with llama.cpp's times ("=" line).
struct section {
  std::string pre;  // empty: the file's own
  std::vector<record> records;
  double llama_seconds_calls = 0, llama_seconds_whole = 0;
};

/// Parses a make_fixtures.py record file (see its docstring for the format).
inline std::vector<section> read_records(const std::string& path) {
  const std::string s = slurp(path);
  std::vector<section> out(1);
  std::size_t i = 0;
  auto line = [&] {
    const std::size_t e = s.find('\n', i);
    REQUIRE_MESSAGE(e != std::string::npos, path << ": truncated at byte " << i);
    std::string l = s.substr(i, e - i);
    i = e + 1;
    return l;
  };
  bool fresh = true;
  while (i < s.size()) {
    const std::string l = line();
    if (l.empty() || l[0] == '#') continue;
    if (l.rfind("! pre ", 0) == 0) {
      if (!fresh) out.emplace_back();
      out.back().pre = l.substr(6);
      fresh = false;
      continue;
    }
    if (l[0] == '=') {
      std::istringstream in(l.substr(1));
      std::size_t n = 0, b = 0, t = 0;
      in >> n >> b >> t >> out.back().llama_seconds_calls >> out.back().llama_seconds_whole;
      fresh = false;
      continue;
    }
    REQUIRE_MESSAGE(l[0] == '@', path << ": unexpected line '" << l << "'");
    std::istringstream in(l.substr(1));
    std::string flags;
    std::size_t nb = 0, ni = 0;
    in >> flags >> nb >> ni;
    record r;
    r.add_special = flags.find('a') != std::string::npos;
    r.parse_special = flags.find('p') != std::string::npos;
    REQUIRE(i + nb < s.size());
    r.text = s.substr(i, nb);
    i += nb + 1;
    std::istringstream ids(line());
    r.ids.resize(ni);
    for (auto& x : r.ids) ids >> x;
    REQUIRE_MESSAGE(!ids.fail(), path << ": bad id list");
    out.back().records.push_back(std::move(r));
    fresh = false;
  }
  return out;
}

/// Counts of an exact comparison; the first few mismatches are printed.
struct compare_result {
  std::size_t records = 0, bytes = 0, tokens = 0, mismatches = 0;
};

inline std::string show_ids(const std::vector<std::int32_t>& v) {
  std::string s;
  for (std::size_t k = 0; k < v.size() && k < 60; ++k) s += std::to_string(v[k]) + " ";
  return s;
}

inline compare_result compare(const tfm::vocab_tokenizer& tok, const std::vector<record>& recs,
                              const std::string& what) {
  compare_result r;
  for (const record& rec : recs) {
    const auto ids = tok.encode(rec.text, {rec.add_special, rec.parse_special});
    ++r.records;
    r.bytes += rec.text.size();
    r.tokens += rec.ids.size();
    if (ids != rec.ids) {
      if (++r.mismatches <= 5) {
        std::size_t k = 0;
        while (k < ids.size() && k < rec.ids.size() && ids[k] == rec.ids[k]) ++k;
        MESSAGE(what << ": mismatch (add_special " << rec.add_special << ", parse_special "
                     << rec.parse_special << ") at token " << k << " of '"
                     << rec.text.substr(0, 200) << "'\n  ours:      " << show_ids(ids)
                     << "\n  llama.cpp: " << show_ids(rec.ids));
      }
    }
  }
  return r;
}

/// A GGUF image in memory holding the tokenizer.ggml.* keys of `src` with `pre` replaced (and
/// every other tokenizer key copied as stored).
inline std::vector<std::byte> with_pre(const tfm::io::gguf_file& src, std::string_view pre) {
  std::vector<std::byte> out;
  tfm::io::gguf_writer w(out);
  bool wrote_pre = false;
  for (const auto& kv : src.metadata()) {
    if (kv.key.rfind("tokenizer.ggml.", 0) != 0) continue;
    if (kv.key == "tokenizer.ggml.pre") {
      w.add(kv.key, pre);
      wrote_pre = true;
    } else {
      w.add(kv.key, kv.value);
    }
  }
  if (!wrote_pre) w.add("tokenizer.ggml.pre", pre);
  w.finish();
  return out;
}

}  // namespace gtok_test
