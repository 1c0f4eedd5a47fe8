// The reader on a file written by gguf.GGUFWriter (tests/data/io_gguf/python_writer.gguf, made by
// make_fixtures.py): every metadata type, nested arrays, tensors of several types, alignment 64.
#include "test_support.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <string_view>

using tfm::io::gguf_file;
using tfm::io::gguf_type;

namespace {
std::string fixture_path() { return gguf_test::data_dir() + "/python_writer.gguf"; }

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const tfm::error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("gguf reads every metadata type written by gguf.GGUFWriter") {
  const gguf_file f(fixture_path());
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.data_offset() % 64 == 0);
  CHECK(f.metadata().size() == 31);
  CHECK(f.metadata()[0].key == "general.architecture");  // file order kept

  CHECK(f.get<std::string>("general.architecture") == "tfm-test");
  CHECK(f.get<std::string_view>("general.name") == "tfm fixture");
  CHECK(f.get<std::uint8_t>("t.u8") == 200);
  CHECK(f.get<std::int8_t>("t.i8") == -100);
  CHECK(f.get<std::uint16_t>("t.u16") == 60000);
  CHECK(f.get<std::int16_t>("t.i16") == -30000);
  CHECK(f.get<std::uint32_t>("t.u32") == 4000000000u);
  CHECK(f.get<std::int32_t>("t.i32") == -2000000000);
  CHECK(f.get<std::uint64_t>("t.u64") == (1ull << 63) + 5);
  CHECK(f.get<std::int64_t>("t.i64") == -(1ll << 62) - 7);
  CHECK(f.get<float>("t.f32") == 3.25f);
  CHECK(f.get<double>("t.f32") == 3.25);
  CHECK(f.get<double>("t.f64") == -1.0e300);
  CHECK(f.get<bool>("t.bool") == true);
  CHECK(f.get<bool>("t.bool_false") == false);
  CHECK(f.get<std::string>("t.str") == "h\xc3\xa9llo \xe2\x9c\x93");
  CHECK(f.get<std::uint32_t>("general.alignment") == 64);
  CHECK(f.value("t.u8").type() == gguf_type::uint8);
  CHECK(f.value("t.f64").type() == gguf_type::float64);

  // integers convert to any integer type that holds the value
  CHECK(f.get<std::int64_t>("t.u32") == 4000000000ll);
  CHECK(f.get<std::int32_t>("t.u8") == 200);
  CHECK(f.get<std::int64_t>("t.i8") == -100);

  CHECK(f.get<std::vector<std::uint8_t>>("t.arr_u8") == std::vector<std::uint8_t>{1, 2, 255});
  CHECK(f.get<std::vector<std::int8_t>>("t.arr_i8") == std::vector<std::int8_t>{-128, 0, 127});
  CHECK(f.get<std::vector<std::uint16_t>>("t.arr_u16") == std::vector<std::uint16_t>{65535, 1});
  CHECK(f.get<std::vector<std::int16_t>>("t.arr_i16") == std::vector<std::int16_t>{-32768, 32767});
  CHECK(f.get<std::vector<std::uint32_t>>("t.arr_u32") ==
        std::vector<std::uint32_t>{4294967295u, 0});
  CHECK(f.get<std::vector<std::int32_t>>("t.arr_i32") == std::vector<std::int32_t>{1, -2, 3});
  CHECK(f.get<std::vector<std::uint64_t>>("t.arr_u64") == std::vector<std::uint64_t>{~0ull, 0});
  CHECK(f.get<std::vector<std::int64_t>>("t.arr_i64") ==
        std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(),
                                  std::numeric_limits<std::int64_t>::max()});
  CHECK(f.get<std::vector<float>>("t.arr_f32") == std::vector<float>{0.5f, -1.5f, 1e30f});
  CHECK(f.get<std::vector<double>>("t.arr_f64") == std::vector<double>{0.1, -2.5e-300});
  CHECK(f.get<std::vector<bool>>("t.arr_bool") == std::vector<bool>{true, false, true});
  CHECK(f.get<std::vector<std::string_view>>("t.arr_str") ==
        std::vector<std::string_view>{"a", "", "\xc3\xbc\xc3\x9f", "tokens"});

  const auto arr = f.get<tfm::io::gguf_array>("t.arr_str");
  CHECK(arr.element_type() == gguf_type::string);
  CHECK(arr.size() == 4);
  CHECK(arr[3].as_string() == "tokens");
  CHECK(arr[1].as_string().empty());
  std::size_t n = 0;
  for (tfm::io::gguf_value v : arr) n += v.as_string().size();
  CHECK(n == 1 + 0 + 4 + 6);

  // nested arrays
  const auto nested = f.get<tfm::io::gguf_array>("t.nested");
  CHECK(nested.element_type() == gguf_type::array);
  REQUIRE(nested.size() == 2);
  CHECK(nested[0].as<std::vector<std::int32_t>>() == std::vector<std::int32_t>{1, 2});
  CHECK(nested[1].as<std::vector<std::int32_t>>() == std::vector<std::int32_t>{3});
  CHECK(f.get<std::vector<std::vector<std::string>>>("t.nested_str") ==
        std::vector<std::vector<std::string>>{{"x"}, {"y", "z"}});
  CHECK(f.get<std::vector<std::vector<std::vector<std::int32_t>>>>("t.nested3") ==
        std::vector<std::vector<std::vector<std::int32_t>>>{{{7}}, {{8, 9}}});

  // lookups
  CHECK(f.find("t.missing") == nullptr);
  CHECK(f.contains("t.u8"));
  CHECK(f.get_or<std::uint32_t>("t.missing", 7u) == 7u);
  CHECK(f.get_or<std::string>("general.name", "x") == "tfm fixture");
}

TEST_CASE("gguf typed lookup errors name the key and the type found") {
  const gguf_file f(fixture_path());
  std::string e = error_of([&] { (void)f.get<std::string>("t.u32"); });
  CHECK(e.find("'t.u32'") != std::string::npos);
  CHECK(e.find("uint32") != std::string::npos);
  CHECK(e.find("not string") != std::string::npos);
  CHECK(e.find("python_writer.gguf") != std::string::npos);
  e = error_of([&] { (void)f.get<std::uint32_t>("llama.block_count"); });
  CHECK(e.find("'llama.block_count' is missing") != std::string::npos);
  e = error_of([&] { (void)f.get<std::uint8_t>("t.u16"); });
  CHECK(e.find("60000") != std::string::npos);
  CHECK(e.find("does not fit") != std::string::npos);
  e = error_of([&] { (void)f.get<std::uint32_t>("t.i8"); });
  CHECK(e.find("-100") != std::string::npos);
  e = error_of([&] { (void)f.get<float>("t.f64"); });
  CHECK(e.find("float64") != std::string::npos);
  e = error_of([&] { (void)f.get<std::vector<std::string>>("t.arr_i32"); });
  CHECK(e.find("'t.arr_i32'") != std::string::npos);
  CHECK(e.find("int32") != std::string::npos);
  e = error_of([&] { (void)f.get<std::vector<std::int32_t>>("t.str"); });
  CHECK(e.find("holds string, not array") != std::string::npos);
  e = error_of([&] { (void)f.get_or<std::uint32_t>("t.str", 1u); });  // present but mistyped
  CHECK(e.find("'t.str'") != std::string::npos);
  e = error_of([&] { (void)f.tensor("nope"); });
  CHECK(e.find("no tensor 'nope'") != std::string::npos);
  CHECK_THROWS_AS((void)f.get<tfm::io::gguf_array>("t.arr_u8")[3], tfm::index_error);
}

TEST_CASE("gguf tensor infos, bytes and typed views without copies") {
  const gguf_file f(fixture_path());
  const auto ref = gguf_test::reference_tensors();
  REQUIRE(f.tensors().size() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const auto& t = f.tensors()[i];
    CAPTURE(ref[i].name);
    CHECK(t.name == ref[i].name);
    CHECK(t.type == ref[i].type);
    REQUIRE(t.n_dims == ref[i].ne.size());
    for (std::size_t d = 0; d < ref[i].ne.size(); ++d) CHECK(t.ne[d] == ref[i].ne[d]);
    CHECK(t.offset % 64 == 0);
    const auto bytes = f.tensor_data(t);
    REQUIRE(bytes.size() == ref[i].bytes.size());
    CHECK(std::memcmp(bytes.data(), ref[i].bytes.data(), bytes.size()) == 0);
    // the span points into the mapping: no copy
    CHECK(bytes.data() == f.bytes().data() + t.file_offset);
    CHECK(&f.tensor(ref[i].name) == &t);
  }
  const auto v = f.view<float, 2>("w.f32");
  CHECK(v.extent(0) == 3);
  CHECK(v.extent(1) == 4);
  CHECK(v(1, 2) == 6 * 0.5f - 3.0f);
  CHECK(v.data() == reinterpret_cast<const float*>(f.tensor_data("w.f32").data()));
  const auto v4 = f.view<float, 4>("w.4d");
  CHECK(v4.extent(0) == 2);
  CHECK(v4.extent(3) == 32);
  CHECK(v4(1, 2, 1, 31) == static_cast<float>(((1 * 3 + 2) * 2 + 1) * 32 + 31));
  const auto h = f.view<tfm::f16, 2>("w.f16");
  CHECK(static_cast<float>(h(1, 7)) == 15.0f / 8.0f - 1.0f);
  CHECK(f.view<std::int32_t, 1>("w.i32")(3) == -4);
  CHECK(f.view<double, 1>("w.f64")(1) == -2.25);
  CHECK(f.tensor("w.f32").extents() == std::vector<tfm::index_t>{3, 4});
  CHECK_THROWS_AS(((void)f.view<float, 2>("w.f16")), tfm::value_error);
  CHECK_THROWS_AS(((void)f.view<float, 1>("w.f32")), tfm::value_error);

  // a quantized tensor dequantizes from its bytes
  const auto q = f.tensor("w.q8_0");
  const auto y = tfm::dequantize(q.type, f.tensor_data(q));
  CHECK(y.size() == q.n_elements);
}

TEST_CASE("gguf_file moves keep views valid and from_bytes reads a buffer") {
  const auto bytes = gguf_test::slurp(fixture_path());
  gguf_file a = gguf_file::from_bytes(bytes, "buffer.gguf");
  const auto name = a.get<std::string_view>("general.name");
  gguf_file b = std::move(a);
  CHECK(b.name() == "buffer.gguf");
  CHECK(b.get<std::string_view>("general.name") == name);
  const std::string e = error_of([&] { (void)b.get<bool>("t.u8"); });
  CHECK(e.find("buffer.gguf") != std::string::npos);
  CHECK_THROWS_AS(gguf_file("/nonexistent/x.gguf"), tfm::io_error);
}
