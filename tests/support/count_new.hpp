// tests/support/count_new.hpp: counts every operator new of a test executable.
//
// Include it in exactly one translation unit of a test binary: it replaces the global allocation
// functions (plain, array, aligned, nothrow) by malloc/free-based ones that increment g_news, so
// that a test can check that a code path allocates nothing (read g_news before and after);
// g_new_bytes and g_new_largest add up the bytes asked for and keep the largest request.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

// GCC flags free() in replaced deletes of blocks from replaced news (a false positive: both
// sides are this header's malloc/free).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<long> g_news{0};              // calls
std::atomic<long long> g_new_bytes{0};    // bytes asked for
std::atomic<long long> g_new_largest{0};  // the largest single request
inline void count_new(std::size_t n) noexcept {
  g_news.fetch_add(1, std::memory_order_relaxed);
  g_new_bytes.fetch_add(static_cast<long long>(n), std::memory_order_relaxed);
  long long cur = g_new_largest.load(std::memory_order_relaxed);
  while (static_cast<long long>(n) > cur &&
         !g_new_largest.compare_exchange_weak(cur, static_cast<long long>(n))) {
  }
}
}  // namespace

void* operator new(std::size_t n) {
  count_new(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  count_new(n);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): otherwise the runtime's
// own allocates what this file's delete frees (a mismatch AddressSanitizer reports).
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  count_new(n);
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  count_new(n);
  const std::size_t al = static_cast<std::size_t>(a);
  return std::aligned_alloc(al, (n + al - 1) / al * al);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t& t) noexcept {
  return operator new(n, a, t);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
