// Helpers for the tokenizer_sp tests: running the Python reference generators once per seed,
// reading their hex-encoded outputs, and a tiny protobuf writer for hand-made model files.
#pragma once

#include <doctest/doctest.h>

#include <sys/wait.h>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace sp_test {

/// Seed of the reference corpora: TFM_TEST_SEED from the environment, else a fixed default.
inline unsigned seed() {
  static const unsigned s = [] {
    const char* e = std::getenv("TFM_TEST_SEED");
    return e ? static_cast<unsigned>(std::strtoul(e, nullptr, 10)) : 20240611u;
  }();
  return s;
}

inline std::string ref_dir() {
  return std::string(TFM_SP_REF_DIR) + "/seed" + std::to_string(seed());
}

/// Runs tests/unit/tokenizer_sp/<script> REF_DIR SEED once per process (and once per seed on
/// disk: a stamp file marks success and is refreshed when the scripts change). Returns an empty
/// string on success, else the reason to skip (python or its package missing).
inline std::string run_generator(const std::string& script) {
  static std::mutex mu;
  static std::map<std::string, std::string> done;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = done.find(script); it != done.end()) return it->second;
  const std::string dir = ref_dir();
  const std::string stamp = dir + "/" + script + ".ok";
  std::string result;
  // Regenerate when the stamp is missing or older than the generator or the corpus module.
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto stamp_time = fs::last_write_time(stamp, ec);
  bool stale = static_cast<bool>(ec);
  for (const std::string& src : {script, std::string("corpus.py")}) {
    const auto t = fs::last_write_time(std::string(TFM_SP_TEST_DIR) + "/" + src, ec);
    if (!ec && !stale && t > stamp_time) stale = true;
  }
  if (stale) {
    const char* py = std::getenv("TFM_PYTHON");
    const std::string cmd = std::string(py ? py : "python3") + " \"" + TFM_SP_TEST_DIR + "/" +
                            script + "\" \"" + dir + "\" " + std::to_string(seed()) + " > \"" +
                            TFM_SP_REF_DIR + "/" + script + ".log\" 2>&1";
    std::string mk = "mkdir -p \"" + dir + "\"";
    (void)std::system(mk.c_str());
    const int status = std::system(cmd.c_str());
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc != 0) {
      std::ifstream log(std::string(TFM_SP_REF_DIR) + "/" + script + ".log");
      std::stringstream ss;
      ss << log.rdbuf();
      // 77: the script's Python package is missing; 127: no Python interpreter. Anything else
      // is a broken generator and fails the test.
      result = (rc == 77 || rc == 127 ? std::string() : std::string("error: ")) + script +
               " exited with " + std::to_string(rc) + ": " + ss.str();
    } else {
      std::ofstream(stamp) << "ok\n";
    }
  }
  done[script] = result;
  return result;
}

/// In a test case: runs the generator; FAILs when it is broken, returns (skipping the rest of
/// the test with a message) when Python or its package is missing.
#define SP_REQUIRE_REFERENCE(script, what)                       \
  do {                                                           \
    const std::string sp_skip_ = sp_test::run_generator(script); \
    if (sp_skip_.rfind("error: ", 0) == 0) FAIL(sp_skip_);       \
    if (!sp_skip_.empty()) {                                     \
      MESSAGE("SKIPPED " what ": " << sp_skip_);                 \
      return;                                                    \
    }                                                            \
  } while (0)

inline std::string unhex(std::string_view h) {
  if (h == "-") return {};
  std::string out;
  out.reserve(h.size() / 2);
  auto v = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<char>(v(h[i]) * 16 + v(h[i + 1])));
  return out;
}

inline std::vector<std::int32_t> parse_ids(std::string_view s) {
  std::vector<std::int32_t> ids;
  if (s == "-") return ids;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t j = s.find(',', i);
    if (j == std::string_view::npos) j = s.size();
    ids.push_back(static_cast<std::int32_t>(std::stol(std::string(s.substr(i, j - i)))));
    i = j + 1;
  }
  return ids;
}

inline std::vector<std::string> split(const std::string& line, char sep = ' ') {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream ss(line);
  while (std::getline(ss, cur, sep)) out.push_back(cur);
  return out;
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string ids_str(const std::vector<std::int32_t>& v) {
  std::string s;
  for (auto x : v) s += std::to_string(x) + ",";
  return s;
}

// ---- protobuf writer (test-only) for hand-made .model files ---------------------------------
struct pb_writer {
  std::string out;
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      out.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    out.push_back(static_cast<char>(v));
  }
  void tag(std::uint32_t field, std::uint32_t wire) { varint((std::uint64_t{field} << 3) | wire); }
  void bytes(std::uint32_t field, std::string_view b) {
    tag(field, 2);
    varint(b.size());
    out.append(b);
  }
  void int_field(std::uint32_t field, std::int64_t v) {
    tag(field, 0);
    varint(static_cast<std::uint64_t>(v));
  }
  void float_field(std::uint32_t field, float f) {
    tag(field, 5);
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xFF));
  }
};

struct piece_spec {
  std::string piece;
  float score;
  int type;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
};

/// Serializes a ModelProto with the given pieces and options.
inline std::string make_model(const std::vector<piece_spec>& pieces, int model_type,
                              bool byte_fallback, bool add_dummy_prefix = true,
                              bool remove_extra_ws = true) {
  pb_writer m;
  for (const auto& p : pieces) {
    pb_writer sp;
    sp.bytes(1, p.piece);
    sp.float_field(2, p.score);
    if (p.type != 1) sp.int_field(3, p.type);
    m.bytes(1, sp.out);
  }
  pb_writer t;
  t.int_field(3, model_type);
  t.int_field(4, static_cast<std::int64_t>(pieces.size()));
  if (byte_fallback) t.int_field(35, 1);
  m.bytes(2, t.out);
  pb_writer n;
  n.bytes(1, "identity");
  n.int_field(3, add_dummy_prefix ? 1 : 0);
  n.int_field(4, remove_extra_ws ? 1 : 0);
  m.bytes(3, n.out);
  return m.out;
}

}  // namespace sp_test
