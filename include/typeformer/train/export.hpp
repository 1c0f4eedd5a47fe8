// typeformer/train/export.hpp
//
// WHAT THIS REPRESENTS
//   A training checkpoint (train/trainer.hpp save_training_state, e.g. mini_gpt's
//   OUT/checkpoint.tfm) read back as an io::export_model (io/export.hpp) without building the
//   model or its optimizer:
//     auto m = tfm::io::read_export_model("run1");            // a run directory or the file
//     tfm::io::export_gguf(m, "run1.gguf", {.type = tfm::ggml_type::f16});
//     tfm::io::export_hf(m, "run1-hf");
//   The config comes from the checkpoint's "config.*" metadata (train::get_config), the
//   tokenizer from its "run.tokenizer" entry and tokenizer.json blob (train::text_tokenizer::
//   from_state; a byte-level run becomes io::byte_vocabulary()), the parameters from every tensor
//   record outside "state/", converted from the stored element type (state.dtype: f32, f64, bf16
//   or f16) to float.
//
//   It lives in train/ because it joins the formats (io/, below train/ in DESIGN.md's layers) with
//   the checkpoint's meaning (train/trainer.hpp); io/export.hpp itself depends only on nn/,
//   tokenizer/ and io/. The functions keep the io:: namespace of the export API they feed.
//
// ERRORS
//   tfm::io_error when the path names neither a checkpoint file nor a directory holding
//   checkpoint.tfm; tfm::parse_error (from the checkpoint reader) for a corrupted or foreign
//   file, naming the record.
#pragma once

#include "typeformer/config/error.hpp"
#include "typeformer/core/half.hpp"
#include "typeformer/io/checkpoint.hpp"
#include "typeformer/io/export.hpp"
#include "typeformer/train/tokenizer.hpp"
#include "typeformer/train/trainer.hpp"

#include <filesystem>
#include <string>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace io {

/// The checkpoint file `path` names: path itself, or path/checkpoint.tfm for a directory.
inline std::string checkpoint_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const std::string f = (fs::path(path) / "checkpoint.tfm").string();
    if (!fs::is_regular_file(f, ec))
      fail(errc::io, "tfm::io::export: the directory '", path, "' holds no checkpoint.tfm.");
    return f;
  }
  if (!fs::is_regular_file(path, ec))
    fail(errc::io, "tfm::io::export: cannot open the checkpoint '", path, "'.");
  return path;
}

namespace detail::exporter {
template <class T>
std::vector<float> read_as_float(const checkpoint_reader& r, const std::string& name,
                                 const std::vector<index_t>& ext) {
  index_t n = 1;
  for (index_t e : ext) n *= e;
  std::vector<T> raw(static_cast<std::size_t>(n));
  r.read_tensor(name, raw.data(), ext);
  std::vector<float> out(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) out[i] = static_cast<float>(raw[i]);
  return out;
}
}  // namespace detail::exporter

/// The model a training checkpoint holds (file comment). `path`: a checkpoint file or a run
/// directory holding checkpoint.tfm.
inline export_model read_export_model(const std::string& path) {
  namespace d = detail::exporter;
  const std::string file = checkpoint_file(path);
  const train::training_state st = train::read_training_state(file);
  export_model m;
  m.config = train::get_config(st.meta);
  const train::text_tokenizer tok = train::text_tokenizer::from_state(st);
  m.tokenizer = tok.is_bpe() ? *tok.bpe() : byte_vocabulary();
  m.name = "typeformer " + std::string(tok.kind()) + " model, step " + std::to_string(st.step);
  const auto dt = st.meta.find("state.dtype");
  const std::string dtype = dt == st.meta.end() ? std::string() : dt->second;
  const checkpoint_reader r(file);
  for (const auto& name : r.tensor_names()) {
    if (name.rfind("state/", 0) == 0) continue;
    export_tensor t;
    t.extents = r.extents(name);
    if (dtype == "f32")
      t.values = d::read_as_float<float>(r, name, t.extents);
    else if (dtype == "f64")
      t.values = d::read_as_float<double>(r, name, t.extents);
    else if (dtype == "bf16")
      t.values = d::read_as_float<bf16>(r, name, t.extents);
    else if (dtype == "f16")
      t.values = d::read_as_float<f16>(r, name, t.extents);
    else
      fail(errc::parse, "tfm::io::export: '", file, "' holds parameters of type '", dtype,
           "', not f32, f64, bf16 or f16.");
    m.weights[name] = std::move(t);
  }
  return m;
}

}  // namespace io
TFM_END_NAMESPACE
