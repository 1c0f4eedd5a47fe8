// tfm embed -m MODEL_DIR: sentence embeddings with a BERT encoder (a Hugging Face directory such
// as all-MiniLM-L6-v2; infer/bert.hpp). Reads one text per line on stdin (a trailing '\r' is
// dropped; an empty line is an empty text), writes one JSON array of C numbers per line on
// stdout, in input order: the pooled, L2-normalised embedding (shortest round-trip decimal of
// each float). Texts run --batch at a time; each batch is written and flushed as it is done.
#include "typeformer/backend/cpu/parallel.hpp"
#include "typeformer/infer/bert.hpp"

#include "cli.hpp"
#include "commands.hpp"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace tfm_cli {
namespace {

void write_rows(const tfm::tensor<float, tfm::dyn_shape<2>>& e, std::string& line) {
  const tfm::index_t C = e.extent(1);
  for (tfm::index_t i = 0; i < e.extent(0); ++i) {
    line.assign("[");
    for (tfm::index_t c = 0; c < C; ++c) {
      char buf[32];
      const auto r = std::to_chars(buf, buf + sizeof buf, e.data()[i * C + c]);
      if (c) line += ',';
      line.append(buf, r.ptr);
    }
    line += "]\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  std::fflush(stdout);
}

}  // namespace

int run_embed(const std::vector<std::string>& args) {
  cli::parser p("tfm embed", "< TEXTS",
                "sentence embeddings of stdin's lines with a BERT model directory, one JSON "
                "array per line");
  std::string model;
  int threads = 0, batch = 32;
  bool timings = false;
  p.option("-m", "DIR", "model directory (config.json, model.safetensors, tokenizer.json)", model);
  p.option("-t", "THREADS", "threads (0: the OpenMP default)", threads);
  p.option("--batch", "N", "texts per forward pass", batch);
  p.flag("--timings", "print load time and texts/s on stderr", timings);
  if (!p.parse(args).empty())
    throw cli::usage_error("no positional arguments (texts come on stdin)");
  if (model.empty()) throw cli::usage_error("-m DIR is required");
  if (threads < 0) throw cli::usage_error("-t needs a count >= 0");
  if (batch < 1) throw cli::usage_error("--batch needs a count >= 1");
  if (threads > 0) tfm::set_num_threads(threads);

  const auto t0 = std::chrono::steady_clock::now();
  const auto enc = tfm::infer::bert_encoder<>::load(model);
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<std::string> texts;
  std::string text, line;
  std::size_t count = 0;
  auto flush = [&] {
    if (texts.empty()) return;
    write_rows(enc.embed(texts, batch), line);
    count += texts.size();
    texts.clear();
  };
  while (std::getline(std::cin, text)) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    texts.push_back(text);
    if (static_cast<int>(texts.size()) == batch) flush();
  }
  flush();
  if (std::cin.bad()) throw tfm::io_error("cannot read stdin");
  if (timings) {
    const double load = std::chrono::duration<double>(t1 - t0).count();
    const double run = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    std::fprintf(stderr, "load %.3f s; %zu texts in %.3f s = %.1f texts/s (%d threads, batch %d)\n",
                 load, count, run, run > 0 ? static_cast<double>(count) / run : 0.0,
                 tfm::num_threads(), batch);
  }
  return 0;
}

}  // namespace tfm_cli
