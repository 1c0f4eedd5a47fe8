// typeformer/core/random.hpp
//
// WHAT THIS REPRESENTS
//   Counter-based random numbers: Philox4x32-10 (J. K. Salmon, M. A. Moraes, R. O. Dror,
//   D. E. Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11,
//   doi:10.1145/2063384.2063405), the generator of Random123, cuRAND and PyTorch's CUDA RNG.
//   A draw is a pure function of (seed, index), so a random tensor is the same for any thread
//   count, any chunking, and when filled piecewise with offsets: element i of
//   fill_*(p, n, seed, offset, ...) equals the scalar *_float / *_double(seed, offset + i)
//   (after the affine map to [lo, hi) or (mean, stddev), applied in the element type).
//
// COUNTER LAYOUT (documented because saved checkpoints depend on it)
//   key     = {seed & 0xffffffff, seed >> 32}
//   counter = {block & 0xffffffff, block >> 32, stream, 0}, output words w0..w3.
//   stream 0  u32(seed, i)            block = i / 4, word i % 4.
//             uniform_float(seed, i)  = (u32(seed, i) >> 8) * 2^-24             in [0, 1).
//   stream 1  normal_float(seed, i):  block = i / 4; Box-Muller on (w0, w1) gives elements
//             4b (cos) and 4b+1 (sin), on (w2, w3) elements 4b+2 (cos) and 4b+3 (sin), with
//             u1 = ((w_even >> 8) + 1) * 2^-24 in (0, 1] (log never sees 0),
//             u2 = (w_odd >> 8) * 2^-24, z = sqrt(-2 ln u1) * {cos, sin}(2 pi u2), computed in
//             double and rounded once to float. |z| <= 5.77 (the float tail is truncated there).
//   stream 2  uniform_double(seed, i): block = i / 2, 53 bits from words (2j, 2j+1) with
//             j = i % 2: ((w_{2j} << 21) ^ (w_{2j+1} >> 11)) * 2^-53 in [0, 1).
//   stream 3  normal_double(seed, i): block = i / 2; u1 in (0, 1] from (w0, w1), u2 in [0, 1)
//             from (w2, w3), 53 bits each; element 2b gets cos, 2b+1 gets sin.
//             (|z| <= 8.57.)
//   tfm::rng (stateful) draws stream 4 words in order; see its comment.
//
// Results are bit-reproducible across thread counts on one platform; across platforms they
// agree for the integer and uniform draws, and for normals as far as std::log/sin/cos agree.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/core/index.hpp"

#include <array>
#include <cmath>
#include <cstdint>

TFM_BEGIN_NAMESPACE

/// Philox4x32 with R rounds (R = 10 is the standard, crush-resistant choice).
/// Returns the 4 x 32-bit output block for `counter` under `key`.
template <int R = 10>
constexpr std::array<std::uint32_t, 4> philox4x32_r(std::array<std::uint32_t, 4> ctr,
                                                    std::array<std::uint32_t, 2> key) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;  // multipliers (Salmon et al.)
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;  // Weyl key increments
  for (int r = 0; r < R; ++r) {
    if (r > 0) {
      key[0] += w0;
      key[1] += w1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * ctr[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * ctr[2];
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32),
                        lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32),
                        lo1 = static_cast<std::uint32_t>(p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

/// Philox4x32-10: the 4 x 32-bit output block for `counter` under `key`.
constexpr std::array<std::uint32_t, 4> philox4x32(std::array<std::uint32_t, 4> counter,
                                                  std::array<std::uint32_t, 2> key) noexcept {
  return philox4x32_r<10>(counter, key);
}

namespace detail {
constexpr std::array<std::uint32_t, 2> philox_key(std::uint64_t seed) noexcept {
  return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
}
constexpr std::array<std::uint32_t, 4> philox_block(std::uint64_t seed, std::uint64_t block,
                                                    std::uint32_t stream) noexcept {
  return philox4x32(
      {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), stream, 0u},
      philox_key(seed));
}
inline constexpr std::uint32_t stream_u32 = 0, stream_normal_float = 1, stream_uniform_double = 2,
                               stream_normal_double = 3, stream_rng = 4;
constexpr float u24_to_unit(std::uint32_t w) noexcept {  // [0, 1)
  return static_cast<float>(w >> 8) * 0x1p-24f;
}
constexpr double u53_to_unit(std::uint32_t a, std::uint32_t b) noexcept {  // [0, 1)
  return static_cast<double>((static_cast<std::uint64_t>(a) << 21) ^ (b >> 11)) * 0x1p-53;
}
inline constexpr double two_pi = 6.283185307179586476925286766559;

/// Box-Muller (G. E. P. Box, M. E. Muller, Ann. Math. Statist. 29(2), 1958): u1 in (0, 1],
/// u2 in [0, 1) -> z (cos when which == 0, sin otherwise).
inline double box_muller(double u1, double u2, int which) noexcept {
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double t = two_pi * u2;
  return which == 0 ? r * std::cos(t) : r * std::sin(t);
}
}  // namespace detail

/// 32 random bits for element `index` of stream 0 under `seed`.
constexpr std::uint32_t random_u32(std::uint64_t seed, std::uint64_t index) noexcept {
  return detail::philox_block(seed, index >> 2, detail::stream_u32)[index & 3];
}

/// Uniform float in [0, 1) with 24 random bits (multiples of 2^-24).
constexpr float uniform_float(std::uint64_t seed, std::uint64_t index) noexcept {
  return detail::u24_to_unit(random_u32(seed, index));
}

/// Uniform double in [0, 1) with 53 random bits (multiples of 2^-53).
constexpr double uniform_double(std::uint64_t seed, std::uint64_t index) noexcept {
  const auto w = detail::philox_block(seed, index >> 1, detail::stream_uniform_double);
  const unsigned j = static_cast<unsigned>(index & 1) * 2;
  return detail::u53_to_unit(w[j], w[j + 1]);
}

/// Standard normal float (Box-Muller; pairing in the header comment).
inline float normal_float(std::uint64_t seed, std::uint64_t index) noexcept {
  const auto w = detail::philox_block(seed, index >> 2, detail::stream_normal_float);
  const unsigned pair = static_cast<unsigned>(index & 2);  // 0 -> (w0, w1), 2 -> (w2, w3)
  const double u1 = (static_cast<double>(w[pair] >> 8) + 1.0) * 0x1p-24;
  const double u2 = static_cast<double>(w[pair + 1] >> 8) * 0x1p-24;
  return static_cast<float>(detail::box_muller(u1, u2, static_cast<int>(index & 1)));
}

/// Standard normal double (Box-Muller on 53-bit uniforms; pairing in the header comment).
inline double normal_double(std::uint64_t seed, std::uint64_t index) noexcept {
  const auto w = detail::philox_block(seed, index >> 1, detail::stream_normal_double);
  const double u1 = 1.0 - detail::u53_to_unit(w[0], w[1]);  // (0, 1]
  const double u2 = detail::u53_to_unit(w[2], w[3]);
  return detail::box_muller(u1, u2, static_cast<int>(index & 1));
}

namespace detail {
/// Fill granularity: fixed, so chunk boundaries (and results) never depend on the thread count.
inline constexpr index_t fill_chunk = index_t{1} << 14;

template <class T, class F>
inline void fill_chunked(T* p, index_t n, F&& chunk_fn) noexcept {
  if (n <= 0) return;
  const index_t chunks = (n + fill_chunk - 1) / fill_chunk;
  TFM_OMP(parallel for schedule(static) if (chunks > 1))
  for (index_t c = 0; c < chunks; ++c) {
    const index_t b = c * fill_chunk;
    const index_t e = b + fill_chunk < n ? b + fill_chunk : n;
    chunk_fn(p, b, e);
  }
}
}  // namespace detail

/// p[i] = lo + (hi - lo) * uniform_float(seed, offset + i) for i in [0, n), computed in float
/// (so hi itself can appear through rounding). OpenMP-parallel in fixed chunks; the result does
/// not depend on the thread count.
inline void fill_uniform(float* p, index_t n, std::uint64_t seed, std::uint64_t offset,
                         float lo = 0.f, float hi = 1.f) noexcept {
  const float scale = hi - lo;
  detail::fill_chunked(p, n, [=](float* q, index_t b, index_t e) {
    std::uint64_t cached = ~std::uint64_t{0};
    std::array<std::uint32_t, 4> w{};
    for (index_t i = b; i < e; ++i) {
      const std::uint64_t j = offset + static_cast<std::uint64_t>(i);
      if ((j >> 2) != cached) {
        cached = j >> 2;
        w = detail::philox_block(seed, cached, detail::stream_u32);
      }
      q[i] = lo + scale * detail::u24_to_unit(w[j & 3]);
    }
  });
}

/// p[i] = lo + (hi - lo) * uniform_double(seed, offset + i) for i in [0, n), in double.
inline void fill_uniform(double* p, index_t n, std::uint64_t seed, std::uint64_t offset,
                         double lo = 0.0, double hi = 1.0) noexcept {
  const double scale = hi - lo;
  detail::fill_chunked(p, n, [=](double* q, index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      q[i] = lo + scale * uniform_double(seed, offset + static_cast<std::uint64_t>(i));
    }
  });
}

/// p[i] = mean + stddev * normal_float(seed, offset + i) for i in [0, n), in float.
inline void fill_normal(float* p, index_t n, std::uint64_t seed, std::uint64_t offset,
                        float mean = 0.f, float stddev = 1.f) noexcept {
  detail::fill_chunked(p, n, [=](float* q, index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      q[i] = mean + stddev * normal_float(seed, offset + static_cast<std::uint64_t>(i));
    }
  });
}

/// p[i] = mean + stddev * normal_double(seed, offset + i) for i in [0, n), in double.
inline void fill_normal(double* p, index_t n, std::uint64_t seed, std::uint64_t offset,
                        double mean = 0.0, double stddev = 1.0) noexcept {
  detail::fill_chunked(p, n, [=](double* q, index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      q[i] = mean + stddev * normal_double(seed, offset + static_cast<std::uint64_t>(i));
    }
  });
}

/// WHAT THIS REPRESENTS
///   A small sequential generator for samplers, shuffles and data loaders: Philox4x32-10 words
///   of stream 4 under `seed`, read in order; word k is word k % 4 of block k / 4. Its whole
///   state is two integers (seed, counter = words consumed), so it is saved in a checkpoint and
///   restored exactly with state()/set_state().
/// DRAWS (words consumed)
///   next_u32 1, next_u64 2 (first word high), uniform 1 (24 bits), uniform_double 2 (53 bits),
///   normal 2 (Box-Muller, the cos branch; the sin branch is dropped so the state stays two
///   integers), randint(n) 1 per try for n <= 2^32 (2 per try above), rejection-sampled
///   so that it is exactly uniform.
class rng {
 public:
  struct state_type {
    std::uint64_t seed = 0;
    std::uint64_t counter = 0;
    friend constexpr bool operator==(const state_type&, const state_type&) = default;
  };

  explicit rng(std::uint64_t seed = 0, std::uint64_t counter = 0) noexcept
      : seed_(seed), counter_(counter) {}

  state_type state() const noexcept { return {seed_, counter_}; }
  void set_state(state_type s) noexcept {
    seed_ = s.seed;
    counter_ = s.counter;
    cached_block_ = ~std::uint64_t{0};
  }
  std::uint64_t seed() const noexcept { return seed_; }
  std::uint64_t counter() const noexcept { return counter_; }

  std::uint32_t next_u32() noexcept {
    const std::uint64_t b = counter_ >> 2;
    if (b != cached_block_) {
      cached_block_ = b;
      block_ = detail::philox_block(seed_, b, detail::stream_rng);
    }
    return block_[counter_++ & 3];
  }
  std::uint64_t next_u64() noexcept {
    const std::uint64_t hi = next_u32();
    return (hi << 32) | next_u32();
  }
  /// Uniform in [0, 1), 24 random bits.
  float uniform() noexcept { return detail::u24_to_unit(next_u32()); }
  /// Uniform in [0, 1), 53 random bits.
  double uniform_double() noexcept {
    const std::uint32_t a = next_u32();
    return detail::u53_to_unit(a, next_u32());
  }
  /// Standard normal (Box-Muller, computed in double, rounded to float).
  float normal() noexcept {
    const double u1 = (static_cast<double>(next_u32() >> 8) + 1.0) * 0x1p-24;
    const double u2 = static_cast<double>(next_u32() >> 8) * 0x1p-24;
    return static_cast<float>(detail::box_muller(u1, u2, 0));
  }
  /// Uniform integer in [0, n); n must be >= 1 (else tfm::value_error).
  std::uint64_t randint(std::uint64_t n) {
    if (n == 0) fail(errc::value, "rng::randint: the range size n must be at least 1, got 0.");
    if (n <= (std::uint64_t{1} << 32)) {
      // Reject the lowest 2^32 mod n values so every residue is equally likely.
      const std::uint64_t threshold = ((std::uint64_t{1} << 32) - n) % n;
      for (;;) {
        const std::uint64_t x = next_u32();
        if (x >= threshold) return x % n;
      }
    }
    const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const std::uint64_t x = next_u64();
      if (x >= threshold) return x % n;
    }
  }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_;
  std::uint64_t cached_block_ = ~std::uint64_t{0};
  std::array<std::uint32_t, 4> block_{};
};

TFM_END_NAMESPACE
