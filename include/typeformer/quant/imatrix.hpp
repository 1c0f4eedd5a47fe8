// typeformer/quant/imatrix.hpp
//
// WHAT THIS REPRESENTS
//   Importance matrices as llama.cpp computes, stores and uses them (tools/imatrix/imatrix.cpp,
//   common/imatrix-loader.cpp, tools/quantize/quantize.cpp of llama.cpp):
//
//     imatrix_data                       per weight tensor name: the sums of x^2 of every input
//                                        column over the calibration rows, and the row counts
//     read_imatrix(path)                 llama.cpp's GGUF form, or the legacy .dat form
//     write_imatrix(data, path)          the GGUF form (llama-imatrix --output-format gguf)
//     imatrix_data::importance(name)     the vector llama-quantize hands to the quantizers
//     imatrix_collector                  accumulates through infer::session's observer
//     collect_imatrix(model, ids, ...)   runs a model over token windows, as llama-imatrix does
//
// CONTRACTS
//   - GGUF form (what llama-imatrix writes by default): metadata general.type = "imatrix",
//     imatrix.datasets (array of strings), imatrix.chunk_count (u32), imatrix.chunk_size (u32);
//     for every weight NAME (sorted by name) two F32 tensors: NAME.in_sum2 with ne = [columns,
//     n_mat] (the sums of x^2 per input column, per expert matrix) and NAME.counts with
//     ne = [1, n_mat] (the rows seen). Reading refuses (tfm::parse_error naming the file and the
//     tensor): a file without tensors, an in_sum2 without its counts or the reverse, a type other
//     than F32, an in_sum2 size that is not a multiple of its counts' size, a non-finite or
//     negative value, and a file without the three imatrix.* keys (llama-quantize refuses it as
//     "missing imatrix metadata").
//   - Legacy .dat form: i32 n_entries >= 1, then per entry i32 name length, the name, i32 ncall,
//     i32 nval >= 1, nval f32 (already divided by the count and multiplied by ncall), then
//     optionally i32 chunk count, i32 dataset length, the dataset name. Truncated or
//     inconsistent files are refused with tfm::parse_error.
//   - importance(name) follows tools/quantize/quantize.cpp load_imatrix: GGUF form: in_sum2 /
//     count per matrix (a matrix never seen, count 0, gets 1s); legacy form: sums / ncall (or the
//     sums when ncall is 0). Empty when the name is absent.
//   - Collection (imatrix_collector, collect_imatrix): for every weight product of the layers
//     (blk.N.attn_q/attn_k/attn_v/attn_output/ffn_gate/ffn_up/ffn_down.weight; the output head
//     only when include_output, like llama-imatrix --process-output) whose input has at least
//     min_rows rows (llama-imatrix ignores batches under 16 tokens): sums[j] += x[r][j]^2 over
//     the rows, count += rows. q, k and v see the same input and get equal entries. Sums are
//     accumulated in binary64 and written as binary32. Windows: the token ids cut into
//     non-overlapping windows of ctx tokens, each run from an empty cache, its first token
//     replaced by BOS when the model adds one (llama-imatrix's chunks); chunk_count = windows
//     run, chunk_size = ctx.
#pragma once

#include "typeformer/config/config.hpp"
#include "typeformer/config/error.hpp"
#include "typeformer/infer/session.hpp"
#include "typeformer/io/gguf.hpp"
#include "typeformer/quant/blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE

/// One weight tensor's statistics.
struct imatrix_entry {
  std::vector<float> sums;           ///< n_mat * columns sums of x^2 (legacy: normalized values)
  std::vector<std::int64_t> counts;  ///< rows seen per matrix (legacy: {ncall})
};

/// An importance matrix file's content.
struct imatrix_data {
  std::map<std::string, imatrix_entry, std::less<>> entries;
  std::vector<std::string> datasets;
  std::uint32_t chunk_count = 0, chunk_size = 0;
  bool legacy = false;  ///< read from the .dat form

  /// The importance vector llama-quantize passes to the quantizers for weight `name` (see the
  /// contracts), n_mat * columns values; empty when the name has no entry.
  std::vector<float> importance(std::string_view name) const {
    const auto it = entries.find(name);
    if (it == entries.end()) return {};
    const imatrix_entry& e = it->second;
    std::vector<float> w(e.sums.size());
    if (legacy) {
      const std::int64_t ncall = e.counts.empty() ? 0 : e.counts[0];
      for (std::size_t i = 0; i < w.size(); ++i)
        w[i] = ncall > 0 ? e.sums[i] / static_cast<float>(ncall) : e.sums[i];
      return w;
    }
    const std::size_t nmat = e.counts.size(), cols = nmat ? e.sums.size() / nmat : 0;
    for (std::size_t m = 0; m < nmat; ++m) {
      const auto count = static_cast<float>(e.counts[m]);
      for (std::size_t i = 0; i < cols; ++i)
        w[m * cols + i] = count > 0 ? e.sums[m * cols + i] / count : 1.0f;
    }
    return w;
  }
};

namespace detail::imatrix {

inline bool ends_with(std::string_view s, std::string_view suffix) noexcept {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

inline void check_values(const std::string& path, std::string_view name, std::span<const float> v) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]) || v[i] < 0)
      fail(errc::parse, "tfm::read_imatrix: '", path, "': value ", i, " of '", name, "' is ", v[i],
           "; sums of squares must be finite and non-negative.");
}

inline std::vector<float> f32_values(const io::gguf_file& f, const io::gguf_tensor_info& t,
                                     const std::string& path) {
  if (t.type != ggml_type::f32)
    fail(errc::parse, "tfm::read_imatrix: '", path, "': tensor '", t.name, "' is ",
         ggml_type_name(t.type), "; imatrix tensors must be F32.");
  const auto bytes = f.tensor_data(t);
  std::vector<float> v(static_cast<std::size_t>(t.n_elements));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

inline imatrix_data read_gguf(const std::string& path) {
  const io::gguf_file f(path);
  imatrix_data d;
  if (f.tensors().empty())
    fail(errc::parse, "tfm::read_imatrix: '", path, "' has no tensors (no imatrix data).");
  const bool has_meta = f.contains("imatrix.datasets") && f.contains("imatrix.chunk_count") &&
                        f.contains("imatrix.chunk_size");
  if (!has_meta)
    fail(errc::parse, "tfm::read_imatrix: '", path,
         "': missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
         "imatrix.chunk_size); is it an imatrix file?");
  const io::gguf_value ds = f.value("imatrix.datasets");
  if (ds.type() != io::gguf_type::array || ds.as_array().element_type() != io::gguf_type::string)
    fail(errc::parse, "tfm::read_imatrix: '", path,
         "': imatrix.datasets must be an array of strings.");
  for (const io::gguf_value v : ds.as_array()) d.datasets.emplace_back(v.as_string());
  d.chunk_count = f.get<std::uint32_t>("imatrix.chunk_count");
  d.chunk_size = f.get<std::uint32_t>("imatrix.chunk_size");
  std::map<std::string, std::pair<const io::gguf_tensor_info*, const io::gguf_tensor_info*>,
           std::less<>>
      pairs;
  for (const io::gguf_tensor_info& t : f.tensors()) {
    const std::string_view n = t.name;
    if (ends_with(n, ".in_sum2"))
      pairs[std::string(n.substr(0, n.size() - 8))].first = &t;
    else if (ends_with(n, ".counts"))
      pairs[std::string(n.substr(0, n.size() - 7))].second = &t;
  }
  for (const auto& [name, p] : pairs) {
    if (p.first == nullptr || p.second == nullptr)
      fail(errc::parse, "tfm::read_imatrix: '", path, "': '", name, "' has ",
           p.first ? "in_sum2 but no counts" : "counts but no in_sum2", " tensor.");
    imatrix_entry e;
    e.sums = f32_values(f, *p.first, path);
    const std::vector<float> c = f32_values(f, *p.second, path);
    if (c.empty() || e.sums.empty() || e.sums.size() % c.size() != 0)
      fail(errc::parse, "tfm::read_imatrix: '", path, "': '", name, "' has ", e.sums.size(),
           " sums for ", c.size(), " counts; the sums must be a whole number of rows per count.");
    check_values(path, p.first->name, e.sums);
    check_values(path, p.second->name, c);
    for (float v : c) e.counts.push_back(std::llround(v));
    d.entries.emplace(name, std::move(e));
  }
  if (d.entries.empty())
    fail(errc::parse, "tfm::read_imatrix: '", path, "' has no .in_sum2 / .counts tensors.");
  return d;
}

inline imatrix_data read_legacy(const std::string& path, std::span<const char> b) {
  std::size_t off = 0;
  auto need = [&](std::size_t n, const char* what) {
    if (b.size() - off < n)
      fail(errc::parse, "tfm::read_imatrix: '", path, "': truncated at byte ", off, " (", what,
           "); not a GGUF or legacy .dat imatrix file.");
  };
  auto i32 = [&](const char* what) {
    need(4, what);
    std::int32_t v;
    std::memcpy(&v, b.data() + off, 4);
    off += 4;
    return v;
  };
  imatrix_data d;
  d.legacy = true;
  const std::int32_t n = i32("entry count");
  if (n < 1)
    fail(errc::parse, "tfm::read_imatrix: '", path, "': ", n,
         " entries; not a GGUF or legacy .dat imatrix file.");
  for (std::int32_t i = 0; i < n; ++i) {
    const std::int32_t len = i32("name length");
    if (len < 1 || len > 4096)
      fail(errc::parse, "tfm::read_imatrix: '", path, "': entry ", i, " has a name of ", len,
           " bytes.");
    need(static_cast<std::size_t>(len), "name");
    std::string name(b.data() + off, static_cast<std::size_t>(len));
    off += static_cast<std::size_t>(len);
    const std::int32_t ncall = i32("ncall");
    const std::int32_t nval = i32("value count");
    if (nval < 1 || ncall < 0)
      fail(errc::parse, "tfm::read_imatrix: '", path, "': entry '", name, "' has ", nval,
           " values and ncall ", ncall, ".");
    need(4 * static_cast<std::size_t>(nval), "values");
    imatrix_entry e;
    e.sums.resize(static_cast<std::size_t>(nval));
    std::memcpy(e.sums.data(), b.data() + off, e.sums.size() * 4);
    off += e.sums.size() * 4;
    check_values(path, name, e.sums);
    e.counts = {ncall};
    d.entries.insert_or_assign(std::move(name), std::move(e));
  }
  if (off + 4 <= b.size()) {
    d.chunk_count = static_cast<std::uint32_t>(std::max(0, i32("chunk count")));
    if (off + 4 <= b.size()) {
      const std::int32_t len = i32("dataset length");
      if (len > 0 && static_cast<std::size_t>(len) <= b.size() - off)
        d.datasets.emplace_back(b.data() + off, static_cast<std::size_t>(len));
    }
  }
  return d;
}

}  // namespace detail::imatrix

/// Reads llama.cpp's imatrix file `path`, GGUF or legacy .dat (by the magic "GGUF").
/// Errors: tfm::io_error when unreadable, tfm::parse_error when malformed (see the contracts).
inline imatrix_data read_imatrix(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(errc::io, "tfm::read_imatrix: cannot open '", path, "'.");
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) {
    in.close();
    return detail::imatrix::read_gguf(path);
  }
  in.clear();
  in.seekg(0);
  std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return detail::imatrix::read_legacy(path, b);
}

/// Writes `d` in llama.cpp's GGUF imatrix form (entries sorted by name; legacy data is
/// written with counts {ncall} as read). Throws tfm::io_error when the file cannot be written.
inline void write_imatrix(const imatrix_data& d, const std::string& path) {
  io::gguf_writer w(path);
  w.add("general.type", std::string_view("imatrix"));
  std::vector<std::string_view> ds(d.datasets.begin(), d.datasets.end());
  w.add("imatrix.datasets", ds);
  w.add("imatrix.chunk_count", d.chunk_count);
  w.add("imatrix.chunk_size", d.chunk_size);
  std::vector<std::vector<std::byte>> data;
  data.reserve(2 * d.entries.size());
  for (const auto& [name, e] : d.entries) {
    const std::size_t nmat = e.counts.size();
    if (nmat == 0 || e.sums.empty() || e.sums.size() % nmat != 0)
      fail(errc::value, "tfm::write_imatrix: '", name, "' has ", e.sums.size(), " sums for ", nmat,
           " counts.");
    std::vector<std::byte> s(e.sums.size() * 4), c(nmat * 4);
    std::memcpy(s.data(), e.sums.data(), s.size());
    for (std::size_t m = 0; m < nmat; ++m) {
      const auto v = static_cast<float>(e.counts[m]);
      std::memcpy(c.data() + 4 * m, &v, 4);
    }
    data.push_back(std::move(s));
    data.push_back(std::move(c));
    const auto cols = static_cast<std::int64_t>(e.sums.size() / nmat);
    const auto nm = static_cast<std::int64_t>(nmat);
    w.add_tensor(name + ".in_sum2", {cols, nm}, ggml_type::f32, data[data.size() - 2]);
    w.add_tensor(name + ".counts", {std::int64_t{1}, nm}, ggml_type::f32, data.back());
  }
  w.finish();
}

/// Accumulates sums of squares of weight-product inputs (see the contracts).
class imatrix_collector {
 public:
  struct options {
    index_t min_rows = 16;        ///< inputs with fewer rows are ignored (llama-imatrix: 16)
    bool include_output = false;  ///< also the output head ("output.weight")
    bool fused_qkv = false;       ///< the file has blk.N.attn_qkv.weight: q's input goes there
  };
  imatrix_collector() = default;
  explicit imatrix_collector(options o) : o_(o) {}

  /// The weight name of a product, or "" when it is not collected.
  std::string name_of(index_t layer, infer::linear_site site) const {
    using infer::linear_site;
    if (site == linear_site::head) return o_.include_output ? "output.weight" : "";
    if (layer < 0) return "";
    if (o_.fused_qkv) {
      if (site == linear_site::k || site == linear_site::v) return "";
      if (site == linear_site::q) return "blk." + std::to_string(layer) + ".attn_qkv.weight";
    }
    return "blk." + std::to_string(layer) + "." + std::string(infer::linear_site_name(site)) +
           ".weight";
  }

  /// Adds n rows of K floats at x to weight `name`'s sums (no row-count filter).
  void add(const std::string& name, const float* x, index_t n, index_t K) {
    acc& a = acc_[name];
    if (a.sums.empty()) a.sums.assign(static_cast<std::size_t>(K), 0.0);
    if (a.sums.size() != static_cast<std::size_t>(K))
      fail(errc::shape, "tfm::imatrix_collector: '", name, "' had inputs of ", a.sums.size(),
           " columns and now ", K, ".");
    for (index_t r = 0; r < n; ++r) {
      const float* row = x + r * K;
      for (index_t j = 0; j < K; ++j) {
        const double v = row[j];
        a.sums[static_cast<std::size_t>(j)] += v * v;
      }
    }
    a.count += n;
  }

  /// The observer to pass in session_options (keeps a reference to this collector).
  infer::linear_observer observer() {
    return [this](index_t layer, infer::linear_site site, const float* x, index_t n, index_t K) {
      if (n < o_.min_rows) return;
      const std::string name = name_of(layer, site);
      if (!name.empty()) add(name, x, n, K);
    };
  }

  /// The statistics so far, as a file holds them.
  imatrix_data result(std::uint32_t chunk_count, std::uint32_t chunk_size,
                      std::vector<std::string> datasets = {}) const {
    imatrix_data d;
    d.chunk_count = chunk_count;
    d.chunk_size = chunk_size;
    d.datasets = std::move(datasets);
    for (const auto& [name, a] : acc_) {
      imatrix_entry e;
      e.sums.assign(a.sums.begin(), a.sums.end());
      e.counts = {a.count};
      d.entries.emplace(name, std::move(e));
    }
    return d;
  }

 private:
  struct acc {
    std::vector<double> sums;
    std::int64_t count = 0;
  };
  options o_;
  std::map<std::string, acc, std::less<>> acc_;
};

/// Runs `model` over `ids` in windows of ctx tokens (at most max_chunks; <= 0: all whole
/// windows), each from an empty cache with its first token replaced by `bos` when bos >= 0,
/// collecting into `c`. Returns the number of windows run. `on_chunk(i, n)` is called after
/// each window when set.
template <class T, class B>
index_t collect_imatrix(const infer::transformer<T, B>& model, std::span<const std::int32_t> ids,
                        index_t ctx, std::int32_t bos, index_t max_chunks, imatrix_collector& c,
                        const std::function<void(index_t, index_t)>& on_chunk = {}) {
  if (ctx < 1) fail(errc::value, "tfm::collect_imatrix: ctx = ", ctx, " must be positive.");
  index_t n = static_cast<index_t>(ids.size()) / ctx;
  if (max_chunks > 0) n = std::min(n, max_chunks);
  infer::session<T, B> s(model, {.context = ctx, .batch = ctx, .observer = c.observer()});
  std::vector<std::int32_t> window(static_cast<std::size_t>(ctx));
  for (index_t i = 0; i < n; ++i) {
    std::copy_n(ids.begin() + i * ctx, ctx, window.begin());
    if (bos >= 0) window[0] = bos;
    s.reset();
    (void)s.prefill(window);
    if (on_chunk) on_chunk(i, n);
  }
  return n;
}

TFM_END_NAMESPACE
