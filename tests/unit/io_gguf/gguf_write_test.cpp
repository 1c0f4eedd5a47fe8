// The writer: byte for byte what gguf.GGUFWriter wrote for the same content (the committed
// fixture), a copy of a parsed file, streaming mode, a file on disk read back, its errors; and
// (doctest case "python: ...", run by ctest as tfm_test_io_gguf_python) gguf.GGUFReader reading
// our file, compared field by field and tensor by tensor with GGUFWriter's.
#include "test_support.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <string>

using tfm::io::gguf_file;
using tfm::io::gguf_writer;

namespace {
std::vector<std::byte> write_reference() {
  std::vector<std::byte> out;
  gguf_writer w(out);
  gguf_test::add_reference_metadata(w);
  const auto tensors = gguf_test::reference_tensors();
  for (const auto& t : tensors) w.add_tensor(t.name, t.ne, t.type, t.bytes);
  w.finish();
  return out;
}

std::size_t first_difference(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  std::size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}
}  // namespace

TEST_CASE("gguf_writer writes the bytes gguf.GGUFWriter writes") {
  const auto want = gguf_test::slurp(gguf_test::data_dir() + "/python_writer.gguf");
  const auto got = write_reference();
  CHECK_MESSAGE(got == want, "first difference at byte " << first_difference(got, want)
                                                         << " (sizes " << got.size() << ", "
                                                         << want.size() << ")");
}

TEST_CASE("gguf_writer copies a parsed file byte for byte") {
  const auto want = gguf_test::slurp(gguf_test::data_dir() + "/python_writer.gguf");
  const gguf_file f = gguf_file::from_bytes(want, "python_writer.gguf");
  std::vector<std::byte> got;
  gguf_writer w(got);
  for (const auto& kv : f.metadata()) w.add(kv.key, kv.value);
  for (const auto& t : f.tensors())
    w.add_tensor(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims), t.type,
                 f.tensor_data(t));
  w.finish();
  CHECK(w.alignment() == 64);
  CHECK_MESSAGE(got == want, "first difference at byte " << first_difference(got, want));
}

TEST_CASE("gguf_writer streaming mode and a file on disk") {
  const std::string path = gguf_test::work_dir() + "/stream.gguf";
  std::vector<float> a(64), b(3 * 32);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) - 0.25f;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = -static_cast<float>(i);
  {
    gguf_writer w(path);
    w.set_alignment(1);
    w.add("general.architecture", "stream");
    w.add("empty.array", std::vector<std::int32_t>{});
    w.add("empty.string", std::string());
    w.add("x.long", 5L);  // long -> int64 on LP64, int32 on LLP64
    w.add("x.size", std::size_t{7});
    w.add_tensor_info("odd", {3}, tfm::ggml_type::i8);
    w.add_tensor_info("a", {64}, tfm::ggml_type::f32);
    w.add_tensor_info("b", {32, 3}, tfm::ggml_type::f32);
    w.write_header();
    const std::int8_t odd[3] = {1, 2, 3};
    w.write_tensor_data(std::as_bytes(std::span(odd)));
    w.write_tensor_data(std::as_bytes(std::span(a)));
    CHECK_THROWS_AS(w.write_tensor_data(std::as_bytes(std::span(a))), tfm::value_error);
    w.write_tensor_data(std::as_bytes(std::span(b)));
    w.finish();
  }
  CHECK(!std::filesystem::exists(path + ".tmp"));
  const gguf_file f(path);
  CHECK(f.alignment() == 1);
  CHECK(f.get<std::vector<std::int32_t>>("empty.array").empty());
  CHECK(f.get<std::string>("empty.string").empty());
  CHECK(f.get<std::int64_t>("x.long") == 5);
  CHECK(f.value("x.size").type() == tfm::io::gguf_type::uint64);
  CHECK(f.tensor("a").offset == 3);
  CHECK(f.tensor("b").offset == 3 + 256);
  const auto ta = f.tensor_data("a");
  CHECK(std::memcmp(ta.data(), a.data(), 256) == 0);
  const auto tb = f.tensor_data("b");
  CHECK(std::memcmp(tb.data(), b.data(), b.size() * 4) == 0);
  // 'a' sits at an odd address: a float view is refused, the bytes are still there
  CHECK_THROWS_AS(((void)f.view<float, 1>("a")), tfm::value_error);
}

TEST_CASE("gguf_writer refuses what a reader would refuse") {
  std::vector<std::byte> out;
  gguf_writer w(out);
  w.add("k", 1);
  CHECK_THROWS_AS(w.add("k", 2), tfm::value_error);        // duplicate key
  CHECK_THROWS_AS(w.add("", 2), tfm::value_error);         // empty key
  CHECK_THROWS_AS(w.add("bad\xff", 2), tfm::value_error);  // not UTF-8
  CHECK_THROWS_AS(w.set_alignment(0), tfm::value_error);
  CHECK_THROWS_AS(w.set_alignment(48), tfm::value_error);
  CHECK_THROWS_AS(w.add("general.alignment", std::int32_t{32}), tfm::value_error);
  const std::vector<std::byte> q(34);
  CHECK_THROWS_AS(w.add_tensor("q", {16}, tfm::ggml_type::q8_0, q), tfm::value_error);  // ne0%32
  CHECK_THROWS_AS(w.add_tensor("q", {32}, tfm::ggml_type::q8_0, std::span(q).first(33)),
                  tfm::value_error);  // wrong byte count
  CHECK_THROWS_AS(w.add_tensor_info(std::string(65, 'n'), {1}, tfm::ggml_type::f32),
                  tfm::value_error);  // name > 64 bytes
  CHECK_THROWS_AS(w.add_tensor_info("n", {1, 1, 1, 1, 1}, tfm::ggml_type::f32), tfm::value_error);
  CHECK_THROWS_AS(w.add_tensor_info("n", {-1}, tfm::ggml_type::f32), tfm::value_error);
  CHECK_THROWS_AS(w.add_tensor_info("n", {1ll << 40, 1ll << 40}, tfm::ggml_type::f32),
                  tfm::value_error);
  CHECK_THROWS_AS(w.add_tensor_info("n", {1}, static_cast<tfm::ggml_type>(4)), tfm::value_error);
  w.add_tensor("q", {32}, tfm::ggml_type::q8_0, q);
  CHECK_THROWS_AS(w.add_tensor("q", {32}, tfm::ggml_type::q8_0, q), tfm::value_error);  // dup
  w.add_tensor_info("later", {4}, tfm::ggml_type::f32);
  w.write_header();
  CHECK_THROWS_AS(w.add("k2", 1), tfm::value_error);  // after the header
  CHECK_THROWS_AS(w.finish(), tfm::value_error);      // 'later' has no data
}

// Run by ctest as tfm_test_io_gguf_python (skipped in the main run by doctest::skip()).
TEST_CASE("python: gguf.GGUFReader reads gguf_writer's file" * doctest::skip()) {
  const std::string path = gguf_test::work_dir() + "/ours.gguf";
  {
    gguf_writer w(path);
    gguf_test::add_reference_metadata(w);
    const auto tensors = gguf_test::reference_tensors();
    for (const auto& t : tensors) w.add_tensor(t.name, t.ne, t.type, t.bytes);
    w.finish();
  }
  const std::string log = gguf_test::work_dir() + "/check_writer.log";
  // TFM_GGUF_PYTHON overrides the interpreter (e.g. "python3 -S" shows the skip path).
  const char* py = std::getenv("TFM_GGUF_PYTHON");
  const std::string cmd = std::string(py != nullptr ? py : TFM_PYTHON) + " " + TFM_SOURCE_DIR +
                          "/tests/unit/io_gguf/check_writer.py " + path + " > " + log + " 2>&1";
  int rc = std::system(cmd.c_str());
#ifdef WEXITSTATUS
  if (rc != -1) rc = WEXITSTATUS(rc);
#endif
  std::string out;
  for (std::byte b : gguf_test::slurp(log)) out.push_back(static_cast<char>(b));
  if (rc == 77 || rc == 127 || rc == -1) {
    MESSAGE("TFM_SKIP: the gguf Python package is not importable: " << out);
    return;
  }
  MESSAGE(out);
  CHECK_MESSAGE(rc == 0, "check_writer.py failed (status " << rc << ")");
}
