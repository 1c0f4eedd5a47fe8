// Reproducibility: fills equal the scalar draws element by element, are identical with 1 and 2
// threads, and equal when filled in two pieces with offsets; tfm::rng state save/restore.
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/core/random.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {
std::uint64_t seed_for_test() {
  static const std::uint64_t s =
      (static_cast<std::uint64_t>(std::random_device{}()) << 32) | std::random_device{}();
  return s;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T, class Fill>
void check_reproducible(Fill fill) {
  const std::uint64_t seed = seed_for_test();
  MESSAGE("seed = ", seed);
  const tfm::index_t n = 100003;  // several fill chunks and an odd tail
  std::vector<T> one(n), two(n), halves(n);
  {
    tfm::thread_scope ts(1);
    fill(one.data(), n, seed, 7);
  }
  {
    tfm::thread_scope ts(2);
    fill(two.data(), n, seed, 7);
  }
  // Two pieces at an offset that is not a multiple of 4 (philox block) nor of the chunk size.
  const tfm::index_t cut = 40001;
  fill(halves.data(), cut, seed, 7);
  fill(halves.data() + cut, n - cut, seed, 7 + static_cast<std::uint64_t>(cut));
  CHECK(same_bits(one, two));
  CHECK(same_bits(one, halves));
  // A different seed or offset gives different numbers.
  std::vector<T> other(n);
  fill(other.data(), n, seed + 1, 7);
  CHECK_FALSE(same_bits(one, other));
  fill(other.data(), n, seed, 8);
  CHECK_FALSE(same_bits(one, other));
  CHECK(std::memcmp(other.data(), one.data() + 1, (n - 1) * sizeof(T)) == 0);  // shifted by one
}
}  // namespace

TEST_CASE("fill_uniform is reproducible across threads and pieces") {
  check_reproducible<float>([](float* p, tfm::index_t n, std::uint64_t s, std::uint64_t o) {
    tfm::fill_uniform(p, n, s, o, -2.0f, 3.0f);
  });
  check_reproducible<double>([](double* p, tfm::index_t n, std::uint64_t s, std::uint64_t o) {
    tfm::fill_uniform(p, n, s, o, -2.0, 3.0);
  });
}

TEST_CASE("fill_normal is reproducible across threads and pieces") {
  check_reproducible<float>([](float* p, tfm::index_t n, std::uint64_t s, std::uint64_t o) {
    tfm::fill_normal(p, n, s, o, 1.0f, 0.02f);
  });
  check_reproducible<double>([](double* p, tfm::index_t n, std::uint64_t s, std::uint64_t o) {
    tfm::fill_normal(p, n, s, o, 1.0, 0.02);
  });
}

TEST_CASE("fills equal the documented scalar draws") {
  const std::uint64_t seed = seed_for_test();
  MESSAGE("seed = ", seed);
  std::vector<float> u(1000), g(1000);
  std::vector<double> ud(1000), gd(1000);
  tfm::fill_uniform(u.data(), 1000, seed, 123);
  tfm::fill_normal(g.data(), 1000, seed, 123);
  tfm::fill_uniform(ud.data(), 1000, seed, 123);
  tfm::fill_normal(gd.data(), 1000, seed, 123);
  int bad = 0;
  for (int i = 0; i < 1000; ++i) {
    bad += u[i] != tfm::uniform_float(seed, 123 + i);
    bad += g[i] != tfm::normal_float(seed, 123 + i);
    bad += ud[i] != tfm::uniform_double(seed, 123 + i);
    bad += gd[i] != tfm::normal_double(seed, 123 + i);
  }
  CHECK(bad == 0);
  // normal_float pairs: elements 4b, 4b+1 are r cos t, r sin t of one (u1, u2), so their squares
  // sum to r^2 = -2 ln u1 computed here from the raw philox words (stream 1).
  for (std::uint64_t b : {0ull, 1ull, 999ull}) {
    const auto w =
        tfm::philox4x32({static_cast<std::uint32_t>(b), 0, 1, 0},
                        {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
    for (unsigned pair : {0u, 2u}) {
      const double u1 = ((w[pair] >> 8) + 1.0) * 0x1p-24;
      const double z0 = tfm::normal_float(seed, 4 * b + pair);
      const double z1 = tfm::normal_float(seed, 4 * b + pair + 1);
      CHECK(z0 * z0 + z1 * z1 == doctest::Approx(-2.0 * std::log(u1)).epsilon(1e-6));
    }
  }
}

TEST_CASE("rng: state save/restore replays the same draws") {
  const std::uint64_t seed = seed_for_test();
  MESSAGE("seed = ", seed);
  tfm::rng a(seed);
  for (int i = 0; i < 13; ++i) (void)a.next_u32();  // mid-block
  const tfm::rng::state_type saved = a.state();
  CHECK(saved.seed == seed);
  CHECK(saved.counter == 13);
  std::vector<double> first;
  for (int i = 0; i < 50; ++i) {
    first.push_back(a.uniform());
    first.push_back(a.normal());
    first.push_back(static_cast<double>(a.randint(1000)));
    first.push_back(static_cast<double>(a.next_u64()));
  }
  tfm::rng b(0);
  (void)b.next_u32();  // fill b's block cache with another block
  b.set_state(saved);
  std::vector<double> second;
  for (int i = 0; i < 50; ++i) {
    second.push_back(b.uniform());
    second.push_back(b.normal());
    second.push_back(static_cast<double>(b.randint(1000)));
    second.push_back(static_cast<double>(b.next_u64()));
  }
  CHECK(first == second);
  CHECK(a.state() == b.state());
  // Constructed from a state directly.
  tfm::rng c(saved.seed, saved.counter);
  CHECK(c.uniform() == static_cast<float>(first[0]));
  // next_u32 reads the documented philox words of stream 4 in order.
  tfm::rng d(seed);
  const auto w = tfm::philox4x32(
      {0, 0, 4, 0}, {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  for (int j = 0; j < 4; ++j) CHECK(d.next_u32() == w[j]);
}
