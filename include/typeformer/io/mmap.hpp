// typeformer/io/mmap.hpp
//
// WHAT THIS REPRESENTS
//   tfm::io::mapped_file: a read-only, private memory map of a whole file, owned (move-only).
//   Model files (GGUF, safetensors) are read through it so that tensor data is never copied:
//   a loaded tensor is a tfm::tensor_view<const T> into bytes(), which borrows the mapping and
//   stays valid while the mapped_file lives.
//
// CONTRACTS
//   - open(path) maps the whole file; a missing file, a directory or a failed map raise
//     tfm::io_error naming the path and the OS reason. An empty file maps to an empty span
//     (no mmap call: POSIX refuses a zero-length mapping).
//   - bytes() is valid until the object is destroyed or moved from; pages are loaded on first
//     touch (advise_sequential()/advise_willneed() hint the kernel, never required).
//   - On platforms without POSIX mmap the file is read into an owned buffer instead (same
//     interface, one copy).
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define TFM_HAVE_POSIX_MMAP 1
#else
#include <fstream>
#define TFM_HAVE_POSIX_MMAP 0
#endif

TFM_BEGIN_NAMESPACE
namespace io {

class mapped_file {
 public:
  mapped_file() noexcept = default;
  explicit mapped_file(const std::string& path) { open(path); }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept { swap(o); }
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      close();
      swap(o);
    }
    return *this;
  }
  ~mapped_file() { close(); }

  /// Maps `path` read-only (closing any previous mapping first).
  void open(const std::string& path) {
    close();
    path_ = path;
#if TFM_HAVE_POSIX_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(errc::io, "tfm: cannot open '", path, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      fail(errc::io, "tfm: cannot stat '", path, "': ", std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(errc::io, "tfm: '", path, "' is not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        size_ = 0;
        fail(errc::io, "tfm: cannot map '", path, "': ", std::strerror(e));
      }
      data_ = static_cast<const std::byte*>(p);
    }
    ::close(fd);  // the mapping keeps the file referenced
#else
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) fail(errc::io, "tfm: cannot open '", path, "'");
    const auto n = in.tellg();
    if (n < 0) fail(errc::io, "tfm: cannot size '", path, "'");
    copy_.resize(static_cast<std::size_t>(n));
    in.seekg(0);
    if (n > 0 && !in.read(reinterpret_cast<char*>(copy_.data()), n))
      fail(errc::io, "tfm: cannot read '", path, "'");
    data_ = copy_.data();
    size_ = copy_.size();
#endif
  }

  /// Unmaps (no-op when nothing is mapped).
  void close() noexcept {
#if TFM_HAVE_POSIX_MMAP
    if (data_ != nullptr && size_ > 0)
      ::munmap(const_cast<void*>(static_cast<const void*>(data_)), size_);
#else
    copy_.clear();
#endif
    data_ = nullptr;
    size_ = 0;
    path_.clear();
  }

  bool is_open() const noexcept { return data_ != nullptr || !path_.empty(); }
  const std::string& path() const noexcept { return path_; }
  std::size_t size() const noexcept { return size_; }
  const std::byte* data() const noexcept { return data_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

  /// Hints that the mapping will be read front to back (no effect where unsupported).
  void advise_sequential() const noexcept { advise(0); }
  /// Hints that the whole mapping will be needed soon (read-ahead).
  void advise_willneed() const noexcept { advise(1); }

 private:
  void advise([[maybe_unused]] int what) const noexcept {
#if TFM_HAVE_POSIX_MMAP
    if (data_ == nullptr || size_ == 0) return;
    void* p = const_cast<void*>(static_cast<const void*>(data_));
    ::madvise(p, size_, what == 0 ? MADV_SEQUENTIAL : MADV_WILLNEED);
#endif
  }
  void swap(mapped_file& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(path_, o.path_);
#if !TFM_HAVE_POSIX_MMAP
    std::swap(copy_, o.copy_);
#endif
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
#if !TFM_HAVE_POSIX_MMAP
  std::vector<std::byte> copy_;
#endif
};

}  // namespace io
TFM_END_NAMESPACE
