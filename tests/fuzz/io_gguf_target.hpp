// The body of the GGUF fuzz target, shared by tests/fuzz/io_gguf_fuzz.cpp (libFuzzer) and the
// seeded-mutation unit test tests/unit/io_gguf/gguf_fuzz_test.cpp.
//
// Contract checked: any input either parses or fails with tfm::error; a file that parses has
// every value readable, every tensor's bytes inside the input, dequantizes where the type allows,
// and survives a write (gguf_writer) and re-read with the same keys, values and tensor bytes.
// A broken round trip throws std::logic_error (a crash for libFuzzer, a failure in the test).
#pragma once

#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/dequantize.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace io_gguf_fuzz {

inline std::uint64_t sink = 0;

/// Reads every part of a value (recursing into arrays); returns a checksum so nothing is elided.
inline std::uint64_t touch(const tfm::io::gguf_value& v) {
  using tfm::io::gguf_type;
  switch (v.type()) {
    case gguf_type::string:
      return v.as_string().size();
    case gguf_type::array: {
      std::uint64_t s = 0;
      for (tfm::io::gguf_value e : v.as_array()) s += touch(e) + 1;
      return s;
    }
    case gguf_type::float32:
      return static_cast<std::uint64_t>(v.as<float>() == 0.0f);
    case gguf_type::float64:
      return static_cast<std::uint64_t>(v.as<double>() == 0.0);
    case gguf_type::boolean:
      return v.as<bool>() ? 1 : 0;
    default:
      return v.type() == gguf_type::uint64 ? v.as<std::uint64_t>()
                                           : static_cast<std::uint64_t>(v.as<std::int64_t>());
  }
}

/// Returns true when the input parsed (and round-tripped), false when it was rejected.
inline bool run_one(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  tfm::io::gguf_file f;
  try {
    f = tfm::io::gguf_file::from_bytes(bytes, "fuzz.gguf");
  } catch (const tfm::error&) {
    return false;
  }
  std::uint64_t sum = 0;
  for (const auto& kv : f.metadata()) {
    sum += touch(kv.value);
    if (f.find(kv.key) != &kv) throw std::logic_error("gguf fuzz: find() lost a key");
  }
  std::size_t dequantized = 0;
  for (const auto& t : f.tensors()) {
    const auto d = f.tensor_data(t);
    if (t.n_bytes > 0 && (d.data() < bytes.data() || d.data() + d.size() > bytes.data() + size))
      throw std::logic_error("gguf fuzz: tensor data outside the input");
    if (t.type_info().dequantizable && dequantized + t.n_elements <= (1u << 16)) {
      dequantized += t.n_elements;
      const auto y = tfm::dequantize(t.type, d);
      sum += y.size();
    }
  }
  // Round trip through the writer.
  std::vector<std::byte> out;
  {
    tfm::io::gguf_writer w(out);
    for (const auto& kv : f.metadata()) w.add(kv.key, kv.value);
    for (const auto& t : f.tensors())
      w.add_tensor(t.name, std::span<const std::int64_t>(t.ne.data(), t.n_dims), t.type,
                   f.tensor_data(t));
    w.finish();
  }
  const auto g = tfm::io::gguf_file::from_bytes(out, "fuzz-roundtrip.gguf");
  if (g.metadata().size() != f.metadata().size() || g.tensors().size() != f.tensors().size())
    throw std::logic_error("gguf fuzz: the round trip changed the counts");
  for (std::size_t i = 0; i < f.metadata().size(); ++i) {
    const auto a = f.metadata()[i].value.raw_bytes(), b = g.metadata()[i].value.raw_bytes();
    if (f.metadata()[i].key != g.metadata()[i].key || a.size() != b.size() ||
        (a.size() > 0 && std::memcmp(a.data(), b.data(), a.size()) != 0))
      throw std::logic_error("gguf fuzz: the round trip changed a value");
  }
  for (std::size_t i = 0; i < f.tensors().size(); ++i) {
    const auto a = f.tensor_data(f.tensors()[i]), b = g.tensor_data(g.tensors()[i]);
    if (f.tensors()[i].name != g.tensors()[i].name || a.size() != b.size() ||
        (a.size() > 0 && std::memcmp(a.data(), b.data(), a.size()) != 0))
      throw std::logic_error("gguf fuzz: the round trip changed a tensor");
  }
  sink += sum;  // a visible side effect, so the reads above are not elided
  return true;
}

}  // namespace io_gguf_fuzz
