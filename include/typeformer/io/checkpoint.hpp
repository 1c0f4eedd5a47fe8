// typeformer/io/checkpoint.hpp
//
// Training checkpoints: named tensors (raw little-endian elements), named byte blobs (optimizer
// state) and string metadata (step, data-loader position, RNG offsets, config) in one file.
//
// Durability (the torchtitan / PyTorch DCP recipe): write `path.tmp`, fsync it, rename it over
// `path`, fsync the directory. A crash at any point leaves either the previous checkpoint or the
// new one, never a mixture; `kill -9` during save loses nothing that was saved before.
//
// Integrity: every record carries a CRC-32 (IEEE 802.3 polynomial) of its bytes and the index
// carries one of its own; the reader validates the index (sizes, counts, offsets inside the file,
// no overlaps) before it allocates anything and checks each record's CRC when it is read, so a
// flipped bit or a truncated file is a tfm::parse_error naming the record, not garbage weights.
//
// Layout:  "TFMCKPT1" | u64 index_bytes | index | u32 index_crc | records...
//   index: u64 count, then per record: u8 kind (0 tensor, 1 blob, 2 meta), u8 dtype,
//          u16 name_len, name, u8 rank, rank x u64 extents, u64 offset, u64 bytes, u32 crc
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/dtype.hpp"
#include "typeformer/core/index.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

TFM_BEGIN_NAMESPACE
namespace io {

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zlib's crc32().
inline std::uint32_t crc32(const void* data, std::size_t n, std::uint32_t crc = 0) noexcept {
  static constexpr auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// Element type codes stored in checkpoints.
enum class dtype_code : std::uint8_t {
  f32 = 0,
  f64 = 1,
  bf16 = 2,
  f16 = 3,
  i32 = 4,
  i64 = 5,
  i8 = 6,
  u8 = 7,
  bytes = 255
};

template <class T>
constexpr dtype_code dtype_code_of() {
  if constexpr (std::is_same_v<T, float>)
    return dtype_code::f32;
  else if constexpr (std::is_same_v<T, double>)
    return dtype_code::f64;
  else if constexpr (std::is_same_v<T, bf16>)
    return dtype_code::bf16;
  else if constexpr (std::is_same_v<T, f16>)
    return dtype_code::f16;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return dtype_code::i32;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return dtype_code::i64;
  else if constexpr (std::is_same_v<T, std::int8_t>)
    return dtype_code::i8;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return dtype_code::u8;
  else
    static_assert(sizeof(T) == 0, "tfm::io: unsupported checkpoint element type");
}

inline std::size_t dtype_size(dtype_code c) {
  switch (c) {
    case dtype_code::f32:
    case dtype_code::i32:
      return 4;
    case dtype_code::f64:
    case dtype_code::i64:
      return 8;
    case dtype_code::bf16:
    case dtype_code::f16:
      return 2;
    case dtype_code::i8:
    case dtype_code::u8:
    case dtype_code::bytes:
      return 1;
  }
  return 0;
}

/// Limits the reader enforces before allocating.
struct checkpoint_limits {
  std::uint64_t max_index_bytes = 64ull << 20;
  std::uint64_t max_records = 1u << 20;
  std::uint8_t max_rank = 8;
};

namespace detail {
struct ckpt_record {
  std::uint8_t kind = 0;  // 0 tensor, 1 blob, 2 meta
  dtype_code dtype = dtype_code::bytes;
  std::string name;
  std::vector<std::uint64_t> extents;
  std::uint64_t offset = 0, bytes = 0;
  std::uint32_t crc = 0;
  std::string payload;  // writer side only
};

inline void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
inline void put_u32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

/// Bounds-checked little-endian reader over a byte string.
struct cursor {
  const std::string& s;
  std::size_t pos = 0;
  const char* what;
  void need(std::size_t n) const {
    if (n > s.size() - pos) fail(errc::parse, "tfm::io::checkpoint: ", what, " is truncated.");
  }
  std::uint64_t u(int bytes) {
    need(static_cast<std::size_t>(bytes));
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i)
      v |= static_cast<std::uint64_t>(
               static_cast<unsigned char>(s[pos + static_cast<std::size_t>(i)]))
           << (8 * i);
    pos += static_cast<std::size_t>(bytes);
    return v;
  }
  std::string str(std::size_t n) {
    need(n);
    std::string r = s.substr(pos, n);
    pos += n;
    return r;
  }
};

inline void fsync_path(const std::string& path, bool directory) {
#if defined(__unix__) || defined(__APPLE__)
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) {
    if (directory) return;  // some file systems do not allow opening directories
    fail(errc::io, "tfm::io::checkpoint: cannot open '", path, "' to flush it.");
  }
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0 && !directory) fail(errc::io, "tfm::io::checkpoint: fsync of '", path, "' failed.");
#else
  (void)path;
  (void)directory;
#endif
}
}  // namespace detail

/// Collects records and writes them atomically.
class checkpoint_writer {
 public:
  template <class T>
  void add_tensor(std::string name, const T* data, const std::vector<index_t>& extents) {
    detail::ckpt_record r;
    r.kind = 0;
    r.dtype = dtype_code_of<T>();
    r.name = std::move(name);
    std::uint64_t n = 1;
    for (index_t e : extents) {
      if (e < 0) fail(errc::value, "tfm::io::checkpoint: negative extent in '", r.name, "'.");
      r.extents.push_back(static_cast<std::uint64_t>(e));
      n *= static_cast<std::uint64_t>(e);
    }
    r.payload.assign(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n) * sizeof(T));
    add(std::move(r));
  }
  void add_blob(std::string name, std::string bytes) {
    detail::ckpt_record r;
    r.kind = 1;
    r.name = std::move(name);
    r.payload = std::move(bytes);
    add(std::move(r));
  }
  void set_meta(std::string key, std::string value) {
    detail::ckpt_record r;
    r.kind = 2;
    r.name = std::move(key);
    r.payload = std::move(value);
    add(std::move(r));
  }

  /// Writes `path` atomically (temp file, fsync, rename, fsync directory).
  void save(const std::string& path) const {
    std::string index;
    detail::put_u64(index, records_.size());
    std::uint64_t off = 0;
    std::vector<std::uint64_t> offsets;
    for (const auto& r : records_) {
      index.push_back(static_cast<char>(r.kind));
      index.push_back(static_cast<char>(r.dtype));
      index.push_back(static_cast<char>(r.name.size() & 0xFF));
      index.push_back(static_cast<char>((r.name.size() >> 8) & 0xFF));
      index += r.name;
      index.push_back(static_cast<char>(r.extents.size()));
      for (auto e : r.extents) detail::put_u64(index, e);
      detail::put_u64(index, off);
      detail::put_u64(index, r.payload.size());
      detail::put_u32(index, crc32(r.payload.data(), r.payload.size()));
      offsets.push_back(off);
      off += r.payload.size();
    }
    std::string head = "TFMCKPT1";
    detail::put_u64(head, index.size());
    std::string tail;
    detail::put_u32(tail, crc32(index.data(), index.size()));
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      if (!f) fail(errc::io, "tfm::io::checkpoint: cannot create '", tmp, "'.");
      f.write(head.data(), static_cast<std::streamsize>(head.size()));
      f.write(index.data(), static_cast<std::streamsize>(index.size()));
      f.write(tail.data(), static_cast<std::streamsize>(tail.size()));
      for (const auto& r : records_)
        f.write(r.payload.data(), static_cast<std::streamsize>(r.payload.size()));
      f.flush();
      if (!f) fail(errc::io, "tfm::io::checkpoint: writing '", tmp, "' failed (disk full?).");
    }
    detail::fsync_path(tmp, false);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      fail(errc::io, "tfm::io::checkpoint: cannot rename '", tmp, "' to '", path, "'.");
    auto slash = path.find_last_of('/');
    detail::fsync_path(slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash),
                       true);
  }

 private:
  void add(detail::ckpt_record r) {
    if (r.name.empty() || r.name.size() > 65535)
      fail(errc::value, "tfm::io::checkpoint: record names must have 1 to 65535 bytes.");
    for (const auto& o : records_)
      if (o.name == r.name && o.kind == r.kind)
        fail(errc::value, "tfm::io::checkpoint: duplicate record '", r.name, "'.");
    records_.push_back(std::move(r));
  }
  std::vector<detail::ckpt_record> records_;
};

/// Reads and validates a checkpoint.
class checkpoint_reader {
 public:
  explicit checkpoint_reader(const std::string& path, checkpoint_limits lim = {})
      : path_(path), file_(path, std::ios::binary) {
    // The file stays open: records are read from the file that was validated, even if the path
    // is replaced (say, by the next atomic checkpoint write) while the reader lives.
    std::ifstream& f = file_;
    if (!f) fail(errc::io, "tfm::io::checkpoint: cannot open '", path, "'.");
    f.seekg(0, std::ios::end);
    const std::uint64_t size = static_cast<std::uint64_t>(f.tellg());
    f.seekg(0);
    std::string head(16, '\0');
    if (size < 16 || !f.read(head.data(), 16) || head.compare(0, 8, "TFMCKPT1") != 0)
      fail(errc::parse, "tfm::io::checkpoint: '", path, "' is not a typeformer checkpoint.");
    detail::cursor hc{head, 8, "the header"};
    const std::uint64_t index_bytes = hc.u(8);
    if (index_bytes > lim.max_index_bytes || index_bytes + 20 > size)
      fail(errc::parse, "tfm::io::checkpoint: '", path, "' has an index of ", index_bytes,
           " bytes, larger than the file or the limit.");
    std::string index(static_cast<std::size_t>(index_bytes), '\0');
    std::string crcb(4, '\0');
    f.read(index.data(), static_cast<std::streamsize>(index_bytes));
    f.read(crcb.data(), 4);
    if (!f) fail(errc::parse, "tfm::io::checkpoint: '", path, "' is truncated in its index.");
    detail::cursor cc{crcb, 0, "the index checksum"};
    if (cc.u(4) != crc32(index.data(), index.size()))
      fail(errc::parse, "tfm::io::checkpoint: the index of '", path,
           "' is corrupted (checksum mismatch).");
    data_start_ = 16 + index_bytes + 4;
    detail::cursor c{index, 0, "the index"};
    const std::uint64_t count = c.u(8);
    if (count > lim.max_records)
      fail(errc::parse, "tfm::io::checkpoint: too many records (", count, ").");
    std::uint64_t expect_off = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
      detail::ckpt_record r;
      r.kind = static_cast<std::uint8_t>(c.u(1));
      r.dtype = static_cast<dtype_code>(c.u(1));
      if (r.kind > 2 || dtype_size(r.dtype) == 0)
        fail(errc::parse, "tfm::io::checkpoint: record ", i, " has an unknown kind or type.");
      r.name = c.str(static_cast<std::size_t>(c.u(2)));
      const std::uint64_t rank = c.u(1);
      if (rank > lim.max_rank)
        fail(errc::parse, "tfm::io::checkpoint: record '", r.name, "' has rank ", rank, ".");
      std::uint64_t n = 1;
      for (std::uint64_t k = 0; k < rank; ++k) {
        std::uint64_t e = c.u(8);
        if (e != 0 && n > (~0ull) / e)
          fail(errc::parse, "tfm::io::checkpoint: the extents of '", r.name, "' overflow.");
        n *= e;
        r.extents.push_back(e);
      }
      r.offset = c.u(8);
      r.bytes = c.u(8);
      r.crc = static_cast<std::uint32_t>(c.u(4));
      if (r.kind == 0 && (n > (~0ull) / dtype_size(r.dtype) || n * dtype_size(r.dtype) != r.bytes))
        fail(errc::parse, "tfm::io::checkpoint: record '", r.name, "' has ", r.bytes,
             " bytes for its extents.");
      if (r.offset != expect_off || r.bytes > size - data_start_ ||
          r.offset > size - data_start_ - r.bytes)
        fail(errc::parse, "tfm::io::checkpoint: record '", r.name,
             "' lies outside the file (truncated?).");
      expect_off += r.bytes;
      records_.push_back(std::move(r));
    }
    if (c.pos != index.size())
      fail(errc::parse, "tfm::io::checkpoint: trailing bytes in the index.");
  }

  bool has_tensor(std::string_view name) const { return find(0, name) != nullptr; }
  bool has_blob(std::string_view name) const { return find(1, name) != nullptr; }
  bool has_meta(std::string_view key) const { return find(2, key) != nullptr; }
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> v;
    for (const auto& r : records_)
      if (r.kind == 0) v.push_back(r.name);
    return v;
  }
  std::vector<index_t> extents(std::string_view name) const {
    const auto& r = get(0, name);
    return std::vector<index_t>(r.extents.begin(), r.extents.end());
  }

  /// Reads tensor `name` into dst; its type and extents must match exactly.
  template <class T>
  void read_tensor(std::string_view name, T* dst, const std::vector<index_t>& extents) const {
    const auto& r = get(0, name);
    if (r.dtype != dtype_code_of<T>())
      fail(errc::parse, "tfm::io::checkpoint: tensor '", r.name, "' has a different element type.");
    bool same = r.extents.size() == extents.size();
    for (std::size_t i = 0; same && i < extents.size(); ++i)
      same = static_cast<index_t>(r.extents[i]) == extents[i];
    if (!same)
      fail(errc::shape, "tfm::io::checkpoint: tensor '", r.name,
           "' has different extents than the model's.");
    std::string bytes = load(r);
    if (!bytes.empty()) std::memcpy(static_cast<void*>(dst), bytes.data(), bytes.size());
  }
  std::string read_blob(std::string_view name) const { return load(get(1, name)); }
  std::string meta(std::string_view key) const { return load(get(2, key)); }

 private:
  const detail::ckpt_record* find(std::uint8_t kind, std::string_view name) const {
    for (const auto& r : records_)
      if (r.kind == kind && r.name == name) return &r;
    return nullptr;
  }
  const detail::ckpt_record& get(std::uint8_t kind, std::string_view name) const {
    const auto* r = find(kind, name);
    if (!r)
      fail(errc::parse, "tfm::io::checkpoint: '", path_, "' has no ",
           kind == 0   ? "tensor"
           : kind == 1 ? "blob"
                       : "metadata",
           " named '", std::string(name), "'.");
    return *r;
  }
  std::string load(const detail::ckpt_record& r) const {
    std::ifstream& f = file_;
    f.clear();
    f.seekg(static_cast<std::streamoff>(data_start_ + r.offset));
    std::string b(static_cast<std::size_t>(r.bytes), '\0');
    if (!f.read(b.data(), static_cast<std::streamsize>(r.bytes)))
      fail(errc::parse, "tfm::io::checkpoint: record '", r.name, "' is truncated.");
    if (crc32(b.data(), b.size()) != r.crc)
      fail(errc::parse, "tfm::io::checkpoint: record '", r.name,
           "' is corrupted (checksum mismatch).");
    return b;
  }

  std::string path_;
  mutable std::ifstream file_;
  std::uint64_t data_start_ = 0;
  std::vector<detail::ckpt_record> records_;
};

}  // namespace io
TFM_END_NAMESPACE
