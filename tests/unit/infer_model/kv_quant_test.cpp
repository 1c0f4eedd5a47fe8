// The quantized KV cache (infer/kv_store.hpp: f16, q8_0, int8 with per-row scales) and the
// attention kernels that read it (backend/cpu/kv_attention.hpp): the stored bytes against the
// reference quantizer (quant/quantize.hpp, byte-identical to gguf-py) and an independent
// absmax/127 rule; cpu cached_attention against the reference backend on the same quantized
// cache (tight: both read the same dequantized values) and against f32 attention on the
// unquantized rows (bounded by the format's rounding); 1 vs 2 threads bitwise; whole sessions:
// decode step by step == prefill, sliding, GQA, against the f32 cache; bytes() and errors.
#include "tiny_model.hpp"

#include "typeformer/backend/cpu/decoder.hpp"
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/backend/reference/decoder.hpp"
#include "typeformer/infer/kv_store.hpp"
#include "typeformer/infer/model.hpp"
#include "typeformer/quant/quantize.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace tfm;

namespace {

constexpr kv_type quantized_types[] = {kv_type::f16, kv_type::q8_0, kv_type::int8};

/// NMSE of a against b: sum (a - b)^2 / sum b^2.
double nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return den > 0 ? num / den : num;
}

double max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

/// The bound of the quantized attention against f32 attention (NMSE of the outputs, random unit
/// normal q, k, v): f16 rounds to 11 bits, q8_0 and int8 to 1/254 of the row's (block's) absmax.
double bound_vs_f32(kv_type t) { return t == kv_type::f16 ? 1e-6 : 2e-4; }

struct attention_case {
  index_t T, H, G, D, cap, pos0;
};

}  // namespace

TEST_CASE("kv_store: stored rows equal the reference quantizers") {
  const std::uint64_t seed = 1901;
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const index_t G = 2, D = 64, cap = 9, n = 5, ld = G * D + 3;
  std::vector<float> k(static_cast<std::size_t>(n * ld)), v(k.size());
  for (float& x : k) x = 3.0f * nd(rng);
  for (float& x : v) x = nd(rng);
  k[7] = 0;  // a zero and a huge outlier
  for (index_t d = 0; d < 32; ++d) k[static_cast<std::size_t>(ld + d)] = 0.0f;  // an all-zero block
  v[ld + 5] = 1e4f;
  for (kv_type t : {kv_type::f32, kv_type::f16, kv_type::q8_0, kv_type::int8}) {
    CAPTURE(infer::kv_type_name(t));
    infer::kv_store s(2, G, cap, D, t);
    s.write(1, 2, n, k.data(), v.data(), ld);
    const kv_layer_view kv = s.layer(1);
    const std::size_t rb = kv_row_bytes(t, D);
    for (index_t pos = 0; pos < n; ++pos)
      for (index_t g = 0; g < G; ++g) {
        const float* src = v.data() + pos * ld + g * D;
        const std::byte* row = kv.v + static_cast<std::size_t>(g * cap + 2 + pos) * rb;
        if (t == kv_type::q8_0) {  // gguf-py's bytes (tfm::quantize is tested byte-identical)
          const std::vector<std::byte> want =
              quantize(ggml_type::q8_0, std::span<const float>(src, static_cast<std::size_t>(D)), 1,
                       static_cast<std::size_t>(D), "v");
          CHECK(std::memcmp(want.data(), row, rb) == 0);
        } else if (t == kv_type::f16) {
          for (index_t d = 0; d < D; ++d) {
            std::uint16_t bits;
            std::memcpy(&bits, row + 2 * d, 2);
            CHECK(bits == f16(src[d]).bits());
          }
        } else if (t == kv_type::int8) {  // absmax / 127, round half away, in double
          double amax = 0;
          for (index_t d = 0; d < D; ++d) amax = std::max(amax, std::abs(double(src[d])));
          const float sc = kv.v_scale[g * cap + 2 + pos];
          CHECK(sc == static_cast<float>(amax / 127.0));
          int off = 0;
          for (index_t d = 0; d < D; ++d) {
            const long want = std::lround(double(src[d]) / double(sc));
            off += std::abs(want - static_cast<std::int8_t>(row[d])) > 0;
            CHECK(std::abs(want - static_cast<std::int8_t>(row[d])) <= 1);
          }
          CHECK(off <= 1);  // x * (1/scale) vs x / scale: a rounding tie may differ
        } else {
          CHECK(std::memcmp(row, src, rb) == 0);
        }
      }
  }
}

TEST_CASE("kv_store: bytes per type, errors") {
  const index_t L = 3, G = 2, cap = 10, D = 64;
  const std::size_t rows = 2 * L * G * cap;  // keys and values
  CHECK(infer::kv_store(L, G, cap, D).bytes() == rows * D * 4);
  CHECK(infer::kv_store(L, G, cap, D, kv_type::f16).bytes() == rows * D * 2);
  CHECK(infer::kv_store(L, G, cap, D, kv_type::q8_0).bytes() == rows * (D / 32) * 34);
  CHECK(infer::kv_store(L, G, cap, D, kv_type::int8).bytes() == rows * (D + 4));
  CHECK(infer::kv_store(L, G, cap, D, kv_type::q8_0).bytes_per_token() == 2 * L * G * 68);
  // q8_0 needs head_dim % 32 == 0; the message names the head_dim.
  CHECK_THROWS_WITH_AS(infer::kv_store(L, G, cap, 40, kv_type::q8_0),
                       doctest::Contains("the model's head_dim is 40"), tfm::error);
  CHECK_NOTHROW(infer::kv_store(L, G, cap, 40, kv_type::int8));
  CHECK_NOTHROW(infer::kv_store(L, G, cap, 17, kv_type::f16));
  // A quantized cache has no float view.
  const infer::kv_store q(L, G, cap, D, kv_type::q8_0);
  CHECK_THROWS_WITH_AS(q.keys(0), doctest::Contains("holds q8_0 rows"), tfm::error);
  // Names.
  CHECK(infer::parse_kv_type("Q8_0") == kv_type::q8_0);
  CHECK(infer::parse_kv_type("int8") == kv_type::int8);
  CHECK(infer::parse_kv_type("f16") == kv_type::f16);
  CHECK(infer::parse_kv_type("f32") == kv_type::f32);
  CHECK_THROWS_WITH_AS(infer::parse_kv_type("q4_0"),
                       doctest::Contains("unknown KV cache type 'q4_0'"), tfm::error);
  // The kernels refuse q8_0 rows that are not whole blocks.
  const cached_attention_geometry g{1, 2, 2, 40, 4, 0, 1.0};
  std::vector<float> qv(80), o(80),
      sc(static_cast<std::size_t>(cached_attention_scratch(g, kv_type::q8_0)));
  std::vector<std::byte> bytes(4096);
  const kv_layer_view kv{kv_type::q8_0, bytes.data(), bytes.data(), nullptr, nullptr};
  CHECK_THROWS_WITH_AS(cached_attention(cpu{}, g, qv.data(), kv, o.data(), sc.data()),
                       doctest::Contains("D = 40"), tfm::error);
  CHECK_THROWS_WITH_AS(cached_attention(reference{}, g, qv.data(), kv, o.data(), sc.data()),
                       doctest::Contains("D = 40"), tfm::error);
}

TEST_CASE("cached_attention over a quantized cache: cpu vs reference, vs f32, threads") {
  const std::uint64_t seed = 1902;
  MESSAGE("seed " << seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Decode (T == 1) and prefill (T > 1); GQA (H / G = 3, 1, 4); D a multiple of 32, and odd
  // head dims (f16 and int8 only); the last position of the cache.
  const attention_case cases[] = {
      {1, 6, 2, 64, 80, 0},   {1, 6, 2, 64, 80, 37}, {1, 6, 2, 64, 80, 79}, {5, 6, 2, 64, 80, 3},
      {70, 6, 2, 64, 80, 10}, {1, 4, 4, 32, 50, 49}, {9, 4, 4, 96, 50, 20}, {1, 8, 2, 17, 40, 30},
      {7, 8, 2, 17, 40, 33},  {1, 3, 1, 40, 70, 69}, {66, 3, 1, 40, 70, 4}};
  double worst_ref[4] = {}, worst32[4] = {};
  for (const attention_case& c : cases) {
    const index_t n = c.pos0 + c.T;
    std::vector<float> k(static_cast<std::size_t>(n * c.G * c.D)), v(k.size()),
        q(static_cast<std::size_t>(c.T * c.H * c.D));
    for (float& x : k) x = nd(rng);
    for (float& x : v) x = nd(rng);
    for (float& x : q) x = nd(rng);
    const cached_attention_geometry g{
        c.T, c.H, c.G, c.D, c.cap, c.pos0, 1.0 / std::sqrt(double(c.D))};
    // f32 oracle on the unquantized rows.
    infer::kv_store f(1, c.G, c.cap, c.D);
    f.write(0, 0, n, k.data(), v.data(), c.G * c.D);
    std::vector<float> sc32(static_cast<std::size_t>(cached_attention_scratch(g)));
    std::vector<float> o32(q.size());
    cached_attention(reference{}, g, q.data(), f.layer(0), o32.data(), sc32.data());
    {  // an f32 cache through the kv_layer_view overload is the float kernel, bit for bit
      std::vector<float> a(q.size()), b(q.size());
      cached_attention(cpu{}, g, q.data(), f.layer(0), a.data(), sc32.data());
      cached_attention(cpu{}, g, q.data(), f.keys(0), f.values(0), b.data(), sc32.data());
      CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }
    for (kv_type t : quantized_types) {
      if (t == kv_type::q8_0 && c.D % 32 != 0) continue;
      INFO(infer::kv_type_name(t) << " T " << c.T << " H " << c.H << " G " << c.G << " D " << c.D
                                  << " pos0 " << c.pos0);
      infer::kv_store s(1, c.G, c.cap, c.D, t);
      s.write(0, 0, n, k.data(), v.data(), c.G * c.D);
      std::vector<float> scratch(static_cast<std::size_t>(cached_attention_scratch(g, t)));
      std::vector<float> o(q.size()), o_ref(q.size()), o_2t(q.size());
      set_num_threads(1);
      cached_attention(cpu{}, g, q.data(), s.layer(0), o.data(), scratch.data());
      set_num_threads(2);
      cached_attention(cpu{}, g, q.data(), s.layer(0), o_2t.data(), scratch.data());
      set_num_threads(0);
      cached_attention(reference{}, g, q.data(), s.layer(0), o_ref.data(), scratch.data());
      const double e_ref = max_abs(o, o_ref), e32 = nmse(o_ref, o32);
      const std::size_t ti = static_cast<std::size_t>(t);
      worst_ref[ti] = std::max(worst_ref[ti], e_ref);
      worst32[ti] = std::max(worst32[ti], e32);
      CHECK(e_ref < 1e-5);  // the same dequantized values; float vs double sums
      CHECK(e32 < bound_vs_f32(t));
      CHECK(std::memcmp(o.data(), o_2t.data(), o.size() * sizeof(float)) == 0);
    }
  }
  set_num_threads(0);
  for (kv_type t : quantized_types)
    MESSAGE(infer::kv_type_name(t)
            << ": cpu vs reference max |d| " << worst_ref[static_cast<std::size_t>(t)]
            << ", NMSE vs f32 attention " << worst32[static_cast<std::size_t>(t)]
            << " (worst case)");
}

namespace {

/// A tiny llama with head_dim 32 (q8_0 blocks fit), GQA 4 / 2 (the loader takes D = C / H).
std::string tiny_d32(std::uint64_t seed) {
  infer_test::tiny_model sizes;
  sizes.C = 128;
  sizes.H = 4;
  sizes.G = 2;
  sizes.D = 32;
  sizes.F = 96;
  sizes.ctx = 64;
  const std::string path = infer_test::work_dir() + "/kv_d32_" + std::to_string(seed) + ".gguf";
  infer_test::tiny_model m = infer_test::make_tiny(seed, false, ggml_type::f32, sizes);
  // make_tiny's scales suit C = 32; at C = 128, 0.35 keeps the activations near unit size (as
  // make_quant_tiny does), so the model is not chaotic and the bounds below measure the cache.
  for (auto& [name, v] : m.w)
    if (m.shape.at(name).first > 1 && name != "token_embd.weight")
      for (float& x : v) x *= 0.35f;
  infer_test::write_tiny(m, path);
  return path;
}

}  // namespace

TEST_CASE("session with a quantized KV cache: decode == prefill, sliding, against f32") {
  const std::uint64_t seed = 1903;
  MESSAGE("seed " << seed);
  auto model = infer::load_gguf(tiny_d32(seed));
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(static_cast<std::int32_t>((i * 37 + 11) % 64));
  const index_t V = model.config().vocab;
  infer::session f32(model, {.context = 48});
  const std::span<const float> all32 = f32.prefill(ids, true);
  const std::vector<float> ref32(all32.begin(), all32.end());
  auto decode_vs = [&](auto& s, const std::vector<float>& all) {
    double worst = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::span<const float> lg = s.decode(ids[i]);
      for (std::size_t j = 0; j < static_cast<std::size_t>(V); ++j)
        worst = std::max(
            worst, std::abs(double(lg[j]) - double(all[i * static_cast<std::size_t>(V) + j])));
    }
    return worst;
  };
  infer::session dec32(model, {.context = 48});
  const double worst32 = decode_vs(dec32, ref32);
  MESSAGE("f32 cache: decode vs prefill max |d logit| " << worst32);
  for (kv_type t : quantized_types) {
    CAPTURE(infer::kv_type_name(t));
    infer::session pre(model, {.context = 48, .batch = 16, .kv = t});  // chunked prefill
    const std::span<const float> all = pre.prefill(ids, true);
    const std::vector<float> lp(all.begin(), all.end());
    CHECK(pre.cache().type() == t);
    // Decode step by step reads the same quantized rows as the prefill.
    infer::session dec(model, {.context = 48, .kv = t});
    const double worst = decode_vs(dec, lp);
    const double e32 = nmse(lp, ref32);
    MESSAGE(infer::kv_type_name(t) << ": decode vs prefill max |d logit| " << worst
                                   << ", logits NMSE vs the f32 cache " << e32);
    // The f32 cache: 3e-6 here. A key or value that differs in its last float bit between the
    // prefill GEMM and the decode GEMV may round to the neighbouring f16 / int8 step: 2e-4 seen.
    CHECK(worst < 1e-3);
    CHECK(e32 < (t == kv_type::f16 ? 1e-6 : 2e-4));  // seen: 1.1e-7, 6.3e-5, 6.1e-5
    // Sliding re-prefills the kept tokens into the quantized cache: the same logits as a fresh
    // session given those tokens.
    const std::span<const float> slid = dec.slide(20);
    const std::vector<float> ls(slid.begin(), slid.end());
    infer::session fresh(model, {.context = 48, .kv = t});
    const std::span<const float> lf =
        fresh.prefill(std::vector<std::int32_t>(ids.end() - 20, ids.end()));
    CHECK(max_abs(ls, std::vector<float>(lf.begin(), lf.end())) == 0.0);
    CHECK(dec.position() == 20);
    // Memory: q8_0 and int8 at D = 32: 34 / 128 and 36 / 128 of f32.
    const double ratio =
        static_cast<double>(pre.cache().bytes()) / static_cast<double>(f32.cache().bytes());
    CHECK(ratio == doctest::Approx(t == kv_type::f16    ? 0.5
                                   : t == kv_type::q8_0 ? 34.0 / 128.0
                                                        : 36.0 / 128.0));
  }
  // The reference backend on the same model and cache type agrees with the cpu.
  auto oracle = infer::transformer<float, reference>::from_gguf(tiny_d32(seed));
  for (kv_type t : quantized_types) {
    CAPTURE(infer::kv_type_name(t));
    infer::session a(model, {.context = 48, .kv = t});
    infer::session b(oracle, {.context = 48, .kv = t});
    const std::span<const float> la = a.prefill(std::span<const std::int32_t>(ids.data(), 30));
    const std::vector<float> va(la.begin(), la.end());
    const std::span<const float> lb = b.prefill(std::span<const std::int32_t>(ids.data(), 30));
    CHECK(max_abs(va, std::vector<float>(lb.begin(), lb.end())) < 1e-3);
    const std::span<const float> da = a.decode(5);
    const std::vector<float> vda(da.begin(), da.end());
    const std::span<const float> db = b.decode(5);
    CHECK(max_abs(vda, std::vector<float>(db.begin(), db.end())) < 1e-3);
  }
  // head_dim 8 and q8_0: the session refuses it, naming the model's head_dim.
  const std::string d8 = infer_test::work_dir() + "/kv_d8.gguf";
  infer_test::write_tiny(infer_test::make_tiny(seed, false, ggml_type::f32), d8);
  auto m8 = infer::load_gguf(d8);
  CHECK_THROWS_WITH_AS(infer::session(m8, {.kv = kv_type::q8_0}),
                       doctest::Contains("head_dim is 8"), tfm::error);
}
