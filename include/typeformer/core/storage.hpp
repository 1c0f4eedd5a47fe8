// typeformer/core/storage.hpp
//
// Storage engines of owning tensors. An engine owns `n` elements of T and exposes data()/size();
// tensors add the layout. Copying an engine copies the elements (tensors are values).
//   heap_storage    64-byte aligned heap buffer (TFM_DEFAULT_ALIGNMENT), any shape
//   inline_storage  array inside the object, no heap; only for fully static shapes
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/fwd.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <type_traits>
#include <unordered_map>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

TFM_BEGIN_NAMESPACE

struct heap_storage {};
struct inline_storage {};

/// Bytes held by tensor storage (heap engines) in this process: now and the peak since the last
/// reset. Counted with relaxed atomics; used by tests and benches to measure memory savings.
struct memory_stats_t {
  std::size_t current_bytes;
  std::size_t peak_bytes;
};

namespace detail {
struct alloc_counters {
  std::atomic<std::size_t> current{0};
  std::atomic<std::size_t> peak{0};  // reset by reset_peak_memory()
  std::atomic<std::size_t> high{0};  // never reset: bounds the block cache
};
inline void raise_to(std::atomic<std::size_t>& a, std::size_t now) noexcept {
  std::size_t p = a.load(std::memory_order_relaxed);
  while (now > p && !a.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}
inline alloc_counters& alloc_stats() noexcept {
  static alloc_counters c;
  return c;
}
inline void note_alloc(std::size_t bytes) noexcept {
  auto& c = alloc_stats();
  const std::size_t now = c.current.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  raise_to(c.peak, now);
  raise_to(c.high, now);
}
inline void note_free(std::size_t bytes) noexcept {
  alloc_stats().current.fetch_sub(bytes, std::memory_order_relaxed);
}

#if defined(__linux__) && TFM_HUGE_PAGE_BYTES > 0
inline constexpr std::size_t huge_page_size = std::size_t(2) << 20;
/// Blocks of at least TFM_HUGE_PAGE_BYTES are mapped whole, on a 2 MiB boundary and advised
/// for transparent huge pages (config.hpp); the choice depends on the size only, so
/// system_free finds the same path.
inline constexpr bool is_huge_block(std::size_t bytes) noexcept {
  return bytes >= static_cast<std::size_t>(TFM_HUGE_PAGE_BYTES);
}
inline void* huge_block_map(std::size_t bytes) {
  // Over-map by one huge page, then unmap the unaligned head and everything past the block's
  // last small page: the aligned 2 MiB stretches get huge pages, the tail keeps small ones, so
  // the block holds at most one small page more than it asks for.
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t len = (bytes + page - 1) / page * page;
  void* raw = ::mmap(nullptr, len + huge_page_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
#if TFM_NO_EXCEPTIONS
    fail(errc::value, "tfm: out of memory mapping a tensor buffer of ", bytes, " bytes.");
#else
    throw std::bad_alloc();  // as operator new does for the smaller blocks
#endif
  }
  const auto base = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (base + huge_page_size - 1) & ~(huge_page_size - 1);
  if (aligned > base) ::munmap(raw, aligned - base);
  const std::uintptr_t end = base + len + huge_page_size;
  if (end > aligned + len) ::munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
  void* p = reinterpret_cast<void*>(aligned);
  ::madvise(p, len, MADV_HUGEPAGE);  // advice only: without THP the pages stay small
  return p;
}
#else
inline constexpr bool is_huge_block(std::size_t) noexcept { return false; }
inline void* huge_block_map(std::size_t) { return nullptr; }
#endif

/// The allocator behind the cache: operator new, or a huge-page mapping for large blocks.
inline void* system_alloc(std::size_t bytes) {
  if (is_huge_block(bytes)) return huge_block_map(bytes);
  return ::operator new (bytes, std::align_val_t{TFM_DEFAULT_ALIGNMENT});
}
inline void system_free(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && TFM_HUGE_PAGE_BYTES > 0
  if (is_huge_block(bytes)) {
    ::munmap(p, bytes);  // the kernel rounds the length up to whole pages
    return;
  }
#else
  (void)bytes;
#endif
  ::operator delete (p, std::align_val_t{TFM_DEFAULT_ALIGNMENT});
}

/// Cache of freed blocks by exact size (all blocks have TFM_DEFAULT_ALIGNMENT). It is never
/// destroyed, so buffers of static tensors freed at exit still find it. It holds at most
/// max(TFM_STORAGE_CACHE_BYTES, the most tensor bytes ever live at once): a training step frees
/// and reallocates the same sizes every step, and a fixed cap smaller than one step's buffers
/// (GPT-2 124M: logits and their gradients alone are 50 MB each) sent the largest back to the
/// system, which unmapped them and zeroed fresh pages for them at the next step.
struct block_cache {
  std::mutex mu;
  std::unordered_multimap<std::size_t, void*> blocks;
  std::size_t cached = 0;
};
inline block_cache& storage_cache() noexcept {
  static block_cache* c = new block_cache;
  return *c;
}
inline void* block_alloc(std::size_t bytes) {
  if constexpr (TFM_STORAGE_CACHE_BYTES > 0) {
    auto& c = storage_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.blocks.find(bytes);
    if (it != c.blocks.end()) {
      void* p = it->second;
      c.blocks.erase(it);
      c.cached -= bytes;
      return p;
    }
  }
  return system_alloc(bytes);
}
inline void block_free(void* p, std::size_t bytes) noexcept {
  if constexpr (TFM_STORAGE_CACHE_BYTES > 0) {
    auto& c = storage_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const std::size_t cap = std::max(static_cast<std::size_t>(TFM_STORAGE_CACHE_BYTES),
                                     alloc_stats().high.load(std::memory_order_relaxed));
    if (c.cached + bytes <= cap) {
#if TFM_NO_EXCEPTIONS
      c.blocks.emplace(bytes, p);
      c.cached += bytes;
      return;
#else
      try {  // a failed insert (out of memory) frees the block instead of caching it
        c.blocks.emplace(bytes, p);
        c.cached += bytes;
        return;
      } catch (...) {
      }
#endif
    }
  }
  system_free(p, bytes);
}
}  // namespace detail

/// Returns every cached free block to the system allocator.
inline void release_cached_storage() noexcept {
  auto& c = detail::storage_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [bytes, p] : c.blocks) detail::system_free(p, bytes);
  c.blocks.clear();
  c.cached = 0;
}

/// Bytes of freed tensor buffers the cache holds for reuse now (0 when the cache is disabled).
inline std::size_t cached_storage_bytes() noexcept {
  auto& c = detail::storage_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.cached;
}

inline memory_stats_t memory_stats() noexcept {
  auto& c = detail::alloc_stats();
  return {c.current.load(std::memory_order_relaxed), c.peak.load(std::memory_order_relaxed)};
}
/// Sets the peak to the current figure.
inline void reset_peak_memory() noexcept {
  auto& c = detail::alloc_stats();
  c.peak.store(c.current.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

namespace detail {

/// Owning aligned buffer with value semantics. Elements are value-initialised (zero).
template <class T>
class aligned_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "tfm: tensor elements must be trivially copyable");
  static_assert(alignof(T) <= TFM_DEFAULT_ALIGNMENT,
                "tfm: element alignment exceeds TFM_DEFAULT_ALIGNMENT");

 public:
  aligned_buffer() noexcept = default;
  explicit aligned_buffer(index_t n, bool zero = true) { allocate(n, zero); }
  aligned_buffer(const aligned_buffer& o) {
    allocate(o.n_, false);
    if (n_) std::memcpy(static_cast<void*>(p_), o.p_, sizeof(T) * static_cast<std::size_t>(n_));
  }
  aligned_buffer(aligned_buffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  aligned_buffer& operator=(const aligned_buffer& o) {
    if (this != &o) {
      aligned_buffer tmp(o);
      swap(tmp);
    }
    return *this;
  }
  aligned_buffer& operator=(aligned_buffer&& o) noexcept {
    aligned_buffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  ~aligned_buffer() { release(); }

  void swap(aligned_buffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
  }
  T* data() noexcept { return p_; }
  const T* data() const noexcept { return p_; }
  index_t size() const noexcept { return n_; }

 private:
  void allocate(index_t n, bool zero) {
    if (n < 0) fail(errc::value, "tfm: cannot allocate a negative number of elements (", n, ").");
    if (n == 0) return;
    constexpr std::size_t align =
        TFM_DEFAULT_ALIGNMENT > alignof(T) ? TFM_DEFAULT_ALIGNMENT : alignof(T);
    if (static_cast<std::size_t>(n) > std::numeric_limits<std::size_t>::max() / sizeof(T) - align)
      fail(errc::value, "tfm: a tensor of ", n, " elements does not fit in memory.");
    std::size_t bytes = (static_cast<std::size_t>(n) * sizeof(T) + align - 1) / align * align;
    p_ = static_cast<T*>(block_alloc(bytes));
    n_ = n;
    note_alloc(bytes);
    if (zero) std::memset(static_cast<void*>(p_), 0, bytes);
  }
  void release() noexcept {
    if (p_) {
      constexpr std::size_t align =
          TFM_DEFAULT_ALIGNMENT > alignof(T) ? TFM_DEFAULT_ALIGNMENT : alignof(T);
      note_free((static_cast<std::size_t>(n_) * sizeof(T) + align - 1) / align * align);
      block_free(static_cast<void*>(p_),
                 (static_cast<std::size_t>(n_) * sizeof(T) + align - 1) / align * align);
    }
    p_ = nullptr;
    n_ = 0;
  }

  T* p_ = nullptr;
  index_t n_ = 0;
};

/// In-object storage for N elements (N known at compile time), zero-initialised.
template <class T, index_t N>
struct inline_buffer {
  alignas(TFM_DEFAULT_ALIGNMENT > alignof(T) ? TFM_DEFAULT_ALIGNMENT
                                             : alignof(T)) T data_[N > 0 ? N : 1]{};
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  static constexpr index_t size() noexcept { return N; }
};

template <class T, class Shape, class Storage>
struct storage_engine;

template <class T, class Shape>
struct storage_engine<T, Shape, heap_storage> {
  using type = aligned_buffer<T>;
  static type make(index_t n, bool zero) { return type(n, zero); }
};

template <class T, class Shape>
struct storage_engine<T, Shape, inline_storage> {
  static_assert(Shape::is_static,
                "tfm::inline_storage needs a fully static shape (no tfm::dyn extents): its size "
                "must be known at compile time because the elements live inside the object");
  using type = inline_buffer<T, Shape::static_size>;
  static type make(index_t, bool) { return type{}; }
};

}  // namespace detail

TFM_END_NAMESPACE
