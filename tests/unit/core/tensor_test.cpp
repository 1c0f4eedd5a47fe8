// tfm::tensor: construction, element access and its errors, value semantics, storage engines
// (heap alignment, inline_storage without any heap allocation), eval / cast / contiguous.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "tfm_test.hpp"
#include "typeformer/backend/cpu/elementwise.hpp"
#include "typeformer/core/tensor.hpp"
#include "typeformer/core/view.hpp"

// ---- heap allocation counter (replaces the global operator new for this test binary) --------
namespace {
std::atomic<long> g_allocations{0};
std::atomic<bool> g_counting{false};
void* counted_alloc(std::size_t n, std::size_t align) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t)
                ? std::aligned_alloc(align, (n + align - 1) / align * align)
                : std::malloc(n);
  if (!p) throw std::bad_alloc();
  return p;
}
struct count_scope {
  long start;
  count_scope() : start(g_allocations.load()) { g_counting = true; }
  ~count_scope() { g_counting = false; }
  long count() const { return g_allocations.load() - start; }
};
}  // namespace
void* operator new(std::size_t n) { return counted_alloc(n, alignof(std::max_align_t)); }
void* operator new[](std::size_t n) { return counted_alloc(n, alignof(std::max_align_t)); }
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using tfm::dyn;
using tfm::index_t;
using tfm::shape;
using tfm::tensor;

TEST_CASE("tensor: construction is zero-filled; initializer lists fill row-major") {
  tensor<float, shape<2, 3>> z;
  CHECK(tfm_test::to_vector(z) == std::vector<float>(6, 0.0f));
  tensor<double, shape<dyn, 4>> d(3);
  CHECK(d.size() == 12);
  CHECK(d.extent(0) == 3);
  CHECK(tfm_test::to_vector(d) == std::vector<double>(12, 0.0));
  tensor<float, shape<dyn, dyn>> e;
  CHECK(e.empty());

  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  CHECK(a(0, 0) == 1);
  CHECK(a(0, 2) == 3);
  CHECK(a(1, 0) == 4);
  CHECK(a(1, 2) == 6);
  tensor<int, shape<4>> v{7, 8, 9, 10};
  CHECK(v(3) == 10);
  tensor<float, shape<dyn, 2>> w(shape<dyn, 2>(2), {1, 2, 3, 4});
  CHECK(w(1, 1) == 4);
  tfm::tensor deduced(shape<2, 2>{}, {1.5, 2.5, 3.5, 4.5});
  static_assert(std::is_same_v<decltype(deduced), tensor<double, shape<2, 2>>>);
  CHECK(deduced(1, 0) == 3.5);
  // Strides are row-major.
  CHECK(a.strides() == std::array<index_t, 2>{3, 1});
  CHECK(a.data() + 4 == &a(1, 1));
}

TEST_CASE("tensor: a wrong number of initial values throws shape_error with a sentence") {
  using T23 = tensor<float, shape<2, 3>>;
  CHECK_THROWS_AS((T23{{1, 2, 3}}), tfm::shape_error);
  CHECK_THROWS_AS((T23{{1, 2}, {3, 4}}), tfm::shape_error);
  CHECK_THROWS_AS((tensor<float, shape<3>>{1, 2}), tfm::shape_error);
  try {
    tensor<float, shape<dyn, 2>> t(shape<dyn, 2>(2), {1, 2, 3});
    FAIL("no exception");
  } catch (const tfm::shape_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find("(2, 2)") != std::string::npos, w);
    CHECK_MESSAGE(w.find('3') != std::string::npos, w);
  }
}

TEST_CASE("tensor: element access out of range throws index_error, which is a shape_error") {
  tensor<float, shape<2, dyn>> t(3);
  CHECK_NOTHROW(t(1, 2));
  CHECK_THROWS_AS(t(2, 0), tfm::index_error);
  CHECK_THROWS_AS(t(0, 3), tfm::shape_error);
  CHECK_THROWS_AS(t(-1, 0), tfm::index_error);
  const auto& ct = t;
  CHECK_THROWS_AS(ct(0, -1), tfm::index_error);
  auto v = t.view();
  CHECK_THROWS_AS(v(5, 0), tfm::index_error);
  try {
    t(0, 7);
    FAIL("no exception");
  } catch (const tfm::index_error& e) {
    const std::string w = e.what();
    CHECK_MESSAGE(w.find('7') != std::string::npos, w);
    CHECK_MESSAGE(w.find("axis 1") != std::string::npos, w);
    CHECK(e.code() == tfm::errc::index);
  }
  static_assert(std::is_base_of_v<tfm::shape_error, tfm::index_error>);
  tensor<float, shape<>> s;
  CHECK_NOTHROW(s());
}

TEST_CASE("tensor: values, not handles (copy is deep, move leaves the source empty)") {
  tensor<float, shape<dyn>> a(4);
  tfm_test::from_vector(a, std::vector<float>{1, 2, 3, 4});
  tensor<float, shape<dyn>> b = a;
  b(0) = 100;
  CHECK(a(0) == 1);
  CHECK(b.data() != a.data());
  tensor<float, shape<dyn>> c = std::move(b);
  CHECK(c(0) == 100);
  a = c;
  CHECK(a(0) == 100);
  CHECK(a.data() != c.data());
  a.fill(2.5f);
  CHECK(tfm_test::to_vector(a) == std::vector<float>(4, 2.5f));
  a = 3.0f;
  CHECK(tfm_test::to_vector(a) == std::vector<float>(4, 3.0f));
  a.resize(shape<dyn>(6));
  CHECK(a.size() == 6);
  CHECK(tfm_test::to_vector(a) == std::vector<float>(6, 0.0f));
}

TEST_CASE("storage: freed buffers are cached for reuse, up to max(cap, the most bytes ever live)") {
#if TFM_STORAGE_CACHE_BYTES > 0
  tfm::release_cached_storage();
  REQUIRE(tfm::cached_storage_bytes() == 0);
  const float* first = nullptr;
  {
    tensor<float, shape<dyn>> a(index_t(1) << 18);  // 1 MiB
    first = a.data();
  }
  CHECK(tfm::cached_storage_bytes() == (std::size_t(1) << 20));
  {
    tensor<float, shape<dyn>> b(index_t(1) << 18);
    CHECK(b.data() == first);  // the same block comes back
    CHECK(tfm::cached_storage_bytes() == 0);
  }
  // A block larger than TFM_STORAGE_CACHE_BYTES is still kept, since it was itself live: the cap
  // is the larger of the setting and the high-water mark of live bytes. (Not touched: no RSS.)
  tfm::release_cached_storage();
  const std::size_t big =
      static_cast<std::size_t>(TFM_STORAGE_CACHE_BYTES) + (std::size_t(64) << 20);
  { tfm::detail::aligned_buffer<std::uint8_t> huge(static_cast<index_t>(big), false); }
  CHECK(tfm::cached_storage_bytes() == big);
  tfm::release_cached_storage();
  CHECK(tfm::cached_storage_bytes() == 0);
#else
  MESSAGE("the storage cache is disabled in this build (TFM_STORAGE_CACHE_BYTES == 0)");
  { tensor<float, shape<dyn>> a(1024); }
  CHECK(tfm::cached_storage_bytes() == 0);
#endif
}

TEST_CASE("storage: large buffers are mapped on 2 MiB boundaries and advised for huge pages") {
#if defined(__linux__) && TFM_HUGE_PAGE_BYTES > 0
  tfm::release_cached_storage();
  const index_t n = static_cast<index_t>(TFM_HUGE_PAGE_BYTES / sizeof(float)) + 1000;  // a tail
  std::uintptr_t addr = 0;
  {
    tensor<float, shape<dyn>> big(n);  // zero-initialised, every element usable
    addr = reinterpret_cast<std::uintptr_t>(big.data());
    CHECK(addr % (std::uintptr_t(2) << 20) == 0);
    CHECK(big(0) == 0.0f);
    CHECK(big(n - 1) == 0.0f);
    big(n - 1) = 3.0f;  // the last element lies in the mapped tail
    CHECK(big(n - 1) == 3.0f);
    // The kernel lists the mapping with the "hg" flag (MADV_HUGEPAGE) in /proc/self/smaps.
    if (std::FILE* f = std::fopen("/proc/self/smaps", "r")) {
      char line[512];
      bool inside = false, advised = false, found = false;
      while (std::fgets(line, sizeof line, f)) {
        unsigned long lo = 0, hi = 0;
        if (std::sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's header line
          inside = addr >= lo && addr < hi;
          if (inside) {
            found = true;
            // The mapping ends at the block's last small page, not at a 2 MiB boundary.
            CHECK(hi - addr < std::size_t(n) * sizeof(float) + std::size_t(64) * 1024);
          }
        } else if (inside && std::strncmp(line, "VmFlags:", 8) == 0) {
          advised = std::strstr(line, " hg") != nullptr;
        }
      }
      std::fclose(f);
      CHECK(found);
      CHECK(advised);
    } else {
      MESSAGE("/proc/self/smaps is not readable: the huge-page advice is not checked");
    }
  }
  // A freed block is cached and comes back; releasing the cache unmaps it.
  {
    tensor<float, shape<dyn>> again(n);
    CHECK(reinterpret_cast<std::uintptr_t>(again.data()) == addr);
  }
  tfm::release_cached_storage();
  CHECK(tfm::cached_storage_bytes() == 0);
#else
  MESSAGE("huge-page mapping is off in this build (not Linux, or TFM_HUGE_PAGE_BYTES == 0)");
  tensor<float, shape<dyn>> big(index_t(1) << 20);
  CHECK(reinterpret_cast<std::uintptr_t>(big.data()) % TFM_DEFAULT_ALIGNMENT == 0);
#endif
}

TEST_CASE("storage: heap buffers are 64-byte aligned; inline_storage never allocates") {
  tensor<float, shape<dyn>> h(33);
  CHECK(reinterpret_cast<std::uintptr_t>(h.data()) % TFM_DEFAULT_ALIGNMENT == 0);
  tensor<tfm::bf16, shape<3, 5>> hb;
  CHECK(reinterpret_cast<std::uintptr_t>(hb.data()) % TFM_DEFAULT_ALIGNMENT == 0);

  using small = tensor<float, shape<4, 4>, tfm::cpu, tfm::inline_storage>;
  static_assert(alignof(small) >= 64);
  // A static shape is an empty class: 16 inline floats make a 64-byte tensor, and a heap tensor
  // of a static shape is just the buffer's pointer and count.
  CHECK_MESSAGE(sizeof(small) == 64,
                "sizeof(tensor<float, shape<4,4>, cpu, inline_storage>) = " << sizeof(small));
  CHECK_MESSAGE(sizeof(tensor<float, shape<4, 4>>) == 2 * sizeof(void*),
                "sizeof(tensor<float, shape<4,4>>) = " << sizeof(tensor<float, shape<4, 4>>));
  CHECK(sizeof(tensor<float, shape<dyn, 4>>) == 3 * sizeof(void*));
  count_scope cs;
  {
    small a;
    small b;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) a(i, j) = static_cast<float>(i * 4 + j), b(i, j) = 1.0f;
    small c = a * b + 2.0f;  // fused evaluation into inline storage
    small d = c;             // copy
    d = tfm::transpose(d);   // aliasing path: the temporary is inline too
    CHECK(c(1, 2) == 8.0f);
    CHECK(d(2, 1) == 8.0f);
    CHECK(d(1, 2) == 11.0f);
  }
  CHECK_MESSAGE(cs.count() == 0, "inline_storage tensors allocated " << cs.count() << " times");

  count_scope hs;
  {
    tensor<float, shape<4, 4>> heap_one;
    (void)heap_one;
  }
  // The counter works: a heap tensor allocates (once for its buffer; freeing it into the block
  // cache may allocate the cache's bookkeeping node too).
  CHECK(hs.count() >= 1);
  CHECK(hs.count() <= 2);
}

TEST_CASE("eval, cast and contiguous produce owning tensors of the right type") {
  tensor<float, shape<2, 3>> a{{1, 2, 3}, {4, 5, 6}};
  auto e = (a * 2.0f).eval();
  static_assert(std::is_same_v<decltype(e), tensor<float, shape<2, 3>, tfm::cpu>>);
  CHECK(tfm_test::to_vector(e) == std::vector<float>{2, 4, 6, 8, 10, 12});

  auto t = tfm::contiguous(tfm::transpose(a));
  static_assert(std::is_same_v<decltype(t), tensor<float, shape<3, 2>, tfm::cpu>>);
  CHECK(tfm_test::to_vector(t) == std::vector<float>{1, 4, 2, 5, 3, 6});

  auto d = tfm::cast<double>(a);
  static_assert(std::is_same_v<decltype(d)::value_type, double>);
  CHECK(d(1, 2) == 6.0);
  auto h = tfm::cast<tfm::bf16>(a + 0.1f);
  CHECK(float(h(0, 0)) == float(tfm::bf16(1.1f)));
  auto i = tfm::cast<std::int32_t>(a * 1.5f);
  CHECK(tfm_test::to_vector(i) == std::vector<std::int32_t>{1, 3, 4, 6, 7, 9});

  // Construction from a tensor of another element type converts.
  tensor<double, shape<2, 3>> fromf(a);
  CHECK(fromf(1, 1) == 5.0);
  // A tensor's eval() is itself.
  CHECK(&a.eval() == &a);
}

TEST_CASE("dtype traits") {
  static_assert(std::is_same_v<tfm::compute_t<tfm::bf16>, float>);
  static_assert(std::is_same_v<tfm::compute_t<tfm::f16>, float>);
  static_assert(std::is_same_v<tfm::compute_t<std::int8_t>, std::int32_t>);
  static_assert(std::is_same_v<tfm::accum_t<tfm::bf16>, float>);
  static_assert(std::is_same_v<tfm::accum_t<double>, double>);
  static_assert(std::is_same_v<tfm::accum_t<std::int32_t>, std::int64_t>);
  static_assert(tfm::is_floating_v<tfm::f16> && !tfm::is_floating_v<int>);
  CHECK(std::string(tfm::dtype_name<tfm::bf16>()) == "bf16");
  CHECK(std::string(tfm::dtype_name<const float>()) == "f32");
}
