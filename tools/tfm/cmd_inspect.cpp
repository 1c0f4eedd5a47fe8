// tfm inspect FILE: the metadata and the tensor table of a GGUF file, a safetensors file, a
// sharded checkpoint's index (.json) or a Hugging Face model directory. --json prints one JSON
// object instead of the tables (arrays longer than --limit elements are summarised unless
// --full-arrays).
#include "cli.hpp"
#include "commands.hpp"

#include "typeformer/io/gguf.hpp"
#include "typeformer/io/mmap.hpp"
#include "typeformer/io/safetensors.hpp"

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace tfm_cli {
namespace {

namespace fs = std::filesystem;
using tfm::io::gguf_type;
using tfm::io::gguf_value;

struct inspect_options {
  bool json = false;
  bool full_arrays = false;
  int limit = 8;
};

std::string human_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string shape_text(const std::vector<tfm::index_t>& extents, bool json) {
  std::string s = json ? "[" : "(";
  for (std::size_t i = 0; i < extents.size(); ++i)
    s += (i ? ", " : "") + std::to_string(extents[i]);
  return s + (json ? "]" : ")");
}

// One GGUF value as JSON (json) or as text; arrays longer than the limit are cut.
std::string value_text(const gguf_value& v, const inspect_options& o, bool json) {
  switch (v.type()) {
    case gguf_type::string:
      return json ? cli::json_quote(v.as_string())
                  : cli::json_quote(v.as_string());  // quoted either way: shows whitespace
    case gguf_type::boolean:
      return v.as<bool>() ? "true" : "false";
    case gguf_type::float32:
    case gguf_type::float64: {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.9g", v.as<double>());
      return buf;
    }
    case gguf_type::int8:
    case gguf_type::int16:
    case gguf_type::int32:
    case gguf_type::int64:
      return std::to_string(v.as<std::int64_t>());
    case gguf_type::array: {
      const auto a = v.as_array();
      const std::size_t n = a.size();
      const std::size_t shown = o.full_arrays ? n : std::min<std::size_t>(n, o.limit);
      std::string items;
      std::size_t i = 0;
      for (gguf_value e : a) {
        if (i == shown) break;
        items += (i ? ", " : "") + value_text(e, o, json);
        ++i;
      }
      const std::string elem(tfm::io::gguf_type_name(a.element_type()));
      if (json) {
        if (shown == n) return "[" + items + "]";
        return "{\"array\": " + cli::json_quote(elem) + ", \"length\": " + std::to_string(n) +
               ", \"head\": [" + items + "]}";
      }
      return "[" + elem + " x " + std::to_string(n) + "] [" + items + (shown < n ? ", ..." : "") +
             "]";
    }
    default:  // unsigned integers
      return std::to_string(v.as<std::uint64_t>());
  }
}

void inspect_gguf(const std::string& path, const inspect_options& o) {
  const tfm::io::gguf_file f(path);
  std::uint64_t total = 0;
  for (const auto& t : f.tensors()) total += t.n_bytes;
  if (o.json) {
    std::printf(
        "{\"file\": %s, \"format\": \"gguf\", \"version\": %u, \"bytes\": %zu, "
        "\"alignment\": %u, \"data_offset\": %llu,\n \"metadata\": {",
        cli::json_quote(path).c_str(), f.version(), f.bytes().size(), f.alignment(),
        static_cast<unsigned long long>(f.data_offset()));
    std::size_t i = 0;
    for (const auto& kv : f.metadata())
      std::printf("%s\n  %s: %s", i++ ? "," : "", cli::json_quote(kv.key).c_str(),
                  value_text(kv.value, o, true).c_str());
    std::printf("},\n \"tensors\": [");
    i = 0;
    for (const auto& t : f.tensors())
      std::printf(
          "%s\n  {\"name\": %s, \"type\": %s, \"shape\": %s, \"offset\": %llu, "
          "\"bytes\": %llu}",
          i++ ? "," : "", cli::json_quote(t.name).c_str(),
          cli::json_quote(tfm::ggml_type_name(t.type)).c_str(),
          shape_text(t.extents(), true).c_str(), static_cast<unsigned long long>(t.file_offset),
          static_cast<unsigned long long>(t.n_bytes));
    std::printf("]}\n");
    return;
  }
  std::printf("%s: GGUF v%u, %s, alignment %u, %zu metadata keys, %zu tensors (%s)\n", path.c_str(),
              f.version(), human_bytes(f.bytes().size()).c_str(), f.alignment(),
              f.metadata().size(), f.tensors().size(), human_bytes(total).c_str());
  std::printf("\nmetadata:\n");
  for (const auto& kv : f.metadata())
    std::printf("  %-44s %-8s %s\n", std::string(kv.key).c_str(),
                std::string(tfm::io::gguf_type_name(kv.value.type())).c_str(),
                value_text(kv.value, o, false).c_str());
  std::printf("\ntensors:\n  %-36s %-6s %-18s %12s %12s\n", "name", "type", "shape", "bytes",
              "offset");
  for (const auto& t : f.tensors())
    std::printf("  %-36s %-6s %-18s %12llu %12llu\n", std::string(t.name).c_str(),
                std::string(tfm::ggml_type_name(t.type)).c_str(),
                shape_text(t.extents(), false).c_str(), static_cast<unsigned long long>(t.n_bytes),
                static_cast<unsigned long long>(t.file_offset));
}

void inspect_safetensors(const std::string& path, const inspect_options& o) {
  namespace st = tfm::io::safetensors;
  const st::tensor_set set = st::open(path);
  std::uint64_t total = 0;
  for (const st::tensor_info* t : set.tensors()) total += t->end - t->begin;
  if (o.json) {
    std::printf("{\"file\": %s, \"format\": \"safetensors\", \"shards\": %zu, \"metadata\": {",
                cli::json_quote(path).c_str(), set.shards().size());
    std::size_t i = 0;
    for (const auto& shard : set.shards())
      for (const auto& [k, v] : shard.metadata())
        std::printf("%s%s: %s", i++ ? ", " : "", cli::json_quote(k).c_str(),
                    cli::json_quote(v).c_str());
    std::printf("},\n \"tensors\": [");
    i = 0;
    for (const st::tensor_info* t : set.tensors())
      std::printf(
          "%s\n  {\"name\": %s, \"type\": %s, \"shape\": %s, \"offset\": %llu, "
          "\"bytes\": %llu}",
          i++ ? "," : "", cli::json_quote(t->name).c_str(),
          cli::json_quote(st::dtype_name(t->type)).c_str(), shape_text(t->shape, true).c_str(),
          static_cast<unsigned long long>(t->file_offset),
          static_cast<unsigned long long>(t->end - t->begin));
    std::printf("]}\n");
    return;
  }
  std::printf("%s: safetensors, %zu shard(s), %zu tensors (%s)\n", path.c_str(),
              set.shards().size(), set.tensors().size(), human_bytes(total).c_str());
  std::printf("\nmetadata:\n");
  for (const auto& shard : set.shards())
    for (const auto& [k, v] : shard.metadata())
      std::printf("  %-44s %s\n", k.c_str(), cli::json_quote(v).c_str());
  std::printf("\ntensors:\n  %-44s %-6s %-18s %12s\n", "name", "dtype", "shape", "bytes");
  for (const st::tensor_info* t : set.tensors())
    std::printf("  %-44s %-6s %-18s %12llu\n", t->name.c_str(),
                std::string(st::dtype_name(t->type)).c_str(), shape_text(t->shape, false).c_str(),
                static_cast<unsigned long long>(t->end - t->begin));
}

bool has_gguf_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && std::string_view(magic, 4) == "GGUF";
  std::fclose(f);
  return ok;
}

}  // namespace

int run_inspect(const std::vector<std::string>& args) {
  cli::parser p("tfm inspect", "FILE",
                "metadata and tensor table of a GGUF file, a safetensors file, a sharded "
                "checkpoint's index .json or a model directory");
  inspect_options o;
  p.flag("--json", "print one JSON object instead of tables", o.json);
  p.flag("--full-arrays", "print every element of metadata arrays", o.full_arrays);
  p.option("--limit", "N", "array elements shown", o.limit);
  const auto files = p.parse(args);
  if (files.size() != 1) throw cli::usage_error("expects exactly one FILE");
  if (o.limit < 0) throw cli::usage_error("--limit must be >= 0");
  const std::string& path = files[0];
  std::error_code ec;
  if (!fs::exists(path, ec)) tfm::fail(tfm::errc::io, "'", path, "' does not exist");
  if (!fs::is_directory(path, ec) && has_gguf_magic(path))
    inspect_gguf(path, o);
  else
    inspect_safetensors(path, o);
  return 0;
}

}  // namespace tfm_cli
