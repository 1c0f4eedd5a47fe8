// The body of the safetensors fuzz target (tests/fuzz/io_safetensors_fuzz.cpp), shared with the
// seeded-mutation unit test (tests/unit/io_safetensors/fuzz_test.cpp).
//
// Contract under test: any byte string either parses or fails with tfm::error; nothing else
// (no crash, no other exception, no sanitizer report). When it parses:
//   - every tensor's bytes lie inside the input and are read end to end;
//   - view/copy at the tensor's rank succeed or fail with tfm::error, and can_view agrees;
//   - writing the parsed tensors and metadata with tfm::io::safetensors::writer and parsing the
//     result gives the same names, dtypes, shapes, bytes and metadata (returns false if not).
#pragma once

#include "typeformer/io/safetensors.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

namespace tfm_fuzz {

namespace st = tfm::io::safetensors;

inline volatile std::uint64_t io_safetensors_sink = 0;

template <class T, std::size_t R>
bool io_safetensors_touch_typed(const st::file& f, const st::tensor_info& t) {
  const bool can = f.can_view<T, R>(t.name);
  try {
    const auto v = f.template view<T, R>(t.name);
    std::uint64_t s = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    for (std::size_t i = 0; i < static_cast<std::size_t>(v.size()) * sizeof(T); ++i) s += p[i];
    io_safetensors_sink = io_safetensors_sink + s;
    if (!can) return false;  // a view succeeded that can_view said would not
  } catch (const tfm::error&) {
    if (can && !std::is_same_v<T, bool>) return false;  // only BOOL bytes may fail after can_view
  }
  try {
    if constexpr (tfm::dense_element<T>) {
      const auto c = f.template copy<double, R>(t.name);
      for (tfm::index_t i = 0; i < c.size(); ++i)
        io_safetensors_sink = io_safetensors_sink + (c.data()[i] != 0);
    }
  } catch (const tfm::error&) {
  }
  return true;
}

template <std::size_t R>
bool io_safetensors_touch(const st::file& f, const st::tensor_info& t) {
  bool ok = true;
  bool visited = false;
  st::detail::visit_dtype(t.type, [&](auto v) {
    visited = true;
    ok = io_safetensors_touch_typed<decltype(v), R>(f, t);
  });
  if (!visited) {  // raw-only dtypes: copy must refuse
    try {
      (void)f.template copy<float, R>(t.name);
      ok = false;
    } catch (const tfm::error&) {
    }
  }
  return ok;
}

/// Runs the contract on one input; false when an invariant is broken.
inline bool io_safetensors_fuzz_one(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::optional<st::file> parsed;
  try {
    parsed.emplace(st::file::from_bytes(bytes, "fuzz"));
  } catch (const tfm::error&) {
    return true;
  }
  const st::file& f = *parsed;
  std::uint64_t covered = 0;
  for (const auto& t : f.tensors()) {
    if (f.find(t.name) != &t) return false;
    if (t.bytes.size() != 0 &&
        (t.bytes.data() < bytes.data() || t.bytes.data() + t.bytes.size() > bytes.data() + size))
      return false;
    std::uint64_t s = 0;
    for (std::byte b : t.bytes) s += std::to_integer<unsigned>(b);
    io_safetensors_sink = io_safetensors_sink + s;
    covered += t.bytes.size();
    bool ok = true;
    switch (t.rank()) {
      case 0:
        ok = io_safetensors_touch<0>(f, t);
        break;
      case 1:
        ok = io_safetensors_touch<1>(f, t);
        break;
      case 2:
        ok = io_safetensors_touch<2>(f, t);
        break;
      case 3:
        ok = io_safetensors_touch<3>(f, t);
        break;
      default:
        break;
    }
    if (!ok) return false;
  }
  if (covered != size - f.data_offset()) return false;

  // Rewrite and parse again: the same set (exceptions here are bugs and propagate).
  st::writer w;
  for (const auto& t : f.tensors()) w.add(t.name, t.type, t.shape, t.bytes);
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  const auto out = w.to_bytes();
  const auto g = st::file::from_bytes(out, "fuzz-rewritten");
  if (g.size() != f.size() || g.metadata() != f.metadata()) return false;
  for (const auto& t : f.tensors()) {
    const st::tensor_info* u = g.find(t.name);
    if (!u || u->type != t.type || u->shape != t.shape || u->bytes.size() != t.bytes.size() ||
        (!t.bytes.empty() && std::memcmp(u->bytes.data(), t.bytes.data(), t.bytes.size()) != 0))
      return false;
  }
  return true;
}

}  // namespace tfm_fuzz
