// typeformer/train/csv.hpp
//
// CSV tables for training logs (RFC 4180: comma separated, CRLF-free "\n" lines, fields with a
// comma, quote or line break quoted with doubled quotes).
//
//   train::csv_writer w("loss.csv", {"step", "train_loss", "val_loss"});   // truncates
//   w.row({train::csv_number(1), train::csv_number(2.5f), ""});              // "" = missing
//   train::write_csv("loss.csv", header, rows);     // whole table, atomically (temp + rename)
//   auto t = train::read_csv("loss.csv");           // header + rows, parse_error when malformed
//
// Numbers are written in the shortest form that reads back to the same value (std::to_chars),
// so a float loss printed from a run and from its resumed twin compares equal as text.
#pragma once

#include "typeformer/config/error.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// A CSV file's content: the header and the rows (all fields as text).
struct csv_table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  /// The column named `name`; value_error when absent.
  std::size_t column(std::string_view name) const {
    for (std::size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return i;
    fail(errc::value, "tfm::train::csv: the table has no column '", std::string(name), "'.");
  }
};

/// `s` as one CSV field: quoted (with doubled quotes) when it holds a comma, quote or newline.
inline std::string csv_escape(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string r = "\"";
  for (char c : s) {
    if (c == '"') r += '"';
    r += c;
  }
  r += '"';
  return r;
}

/// Shortest text that reads back as exactly `v` ("" for NaN: a missing value).
template <class F>
requires std::is_floating_point_v<F> std::string csv_number(F v) {
  if (std::isnan(v)) return {};
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}
template <class I>
requires std::is_integral_v<I> std::string csv_number(I v) { return std::to_string(v); }

/// One CSV line (with its "\n").
inline std::string csv_line(const std::vector<std::string>& fields) {
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i) line += ',';
    line += csv_escape(fields[i]);
  }
  line += '\n';
  return line;
}

/// Appends rows to a CSV file as they arrive (each row flushed, so a crash loses at most the
/// row being written).
class csv_writer {
 public:
  csv_writer() = default;
  /// Creates or truncates `path` and writes the header.
  csv_writer(const std::string& path, std::vector<std::string> header)
      : path_(path), columns_(header.size()), f_(path, std::ios::binary | std::ios::trunc) {
    if (!f_) fail(errc::io, "tfm::train::csv: cannot create '", path, "'.");
    put(csv_line(header));
  }
  /// Appends one row; it must have one field per column.
  void row(const std::vector<std::string>& fields) {
    if (fields.size() != columns_)
      fail(errc::value, "tfm::train::csv: a row of ", fields.size(), " fields for ", columns_,
           " columns in '", path_, "'.");
    put(csv_line(fields));
  }
  bool is_open() const noexcept { return f_.is_open(); }
  const std::string& path() const noexcept { return path_; }

 private:
  void put(const std::string& s) {
    f_.write(s.data(), static_cast<std::streamsize>(s.size()));
    f_.flush();
    if (!f_) fail(errc::io, "tfm::train::csv: writing '", path_, "' failed.");
  }
  std::string path_;
  std::size_t columns_ = 0;
  std::ofstream f_;
};

/// Writes a whole table to `path` through `path.tmp` and a rename (readers never see half a
/// file).
inline void write_csv(const std::string& path, const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows) {
  std::string text = csv_line(header);
  for (const auto& r : rows) {
    if (r.size() != header.size())
      fail(errc::value, "tfm::train::csv: a row of ", r.size(), " fields for ", header.size(),
           " columns in '", path, "'.");
    text += csv_line(r);
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(errc::io, "tfm::train::csv: cannot create '", tmp, "'.");
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    f.flush();
    if (!f) fail(errc::io, "tfm::train::csv: writing '", tmp, "' failed.");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(errc::io, "tfm::train::csv: cannot rename '", tmp, "' to '", path, "'.");
}

/// Parses CSV text (RFC 4180 quoting); the first line is the header. parse_error on an
/// unterminated quote or a row whose field count differs from the header's.
inline csv_table parse_csv(std::string_view text) {
  csv_table t;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  std::size_t line = 1;
  auto end_row = [&] {
    row.push_back(std::move(field));
    field.clear();
    if (t.header.empty() && t.rows.empty() && !any) {
      t.header = std::move(row);
    } else {
      if (row.size() != t.header.size())
        fail(errc::parse, "tfm::train::csv: line ", line, " has ", row.size(),
             " fields, the header ", t.header.size(), ".");
      t.rows.push_back(std::move(row));
    }
    any = true;
    row.clear();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      end_row();
      ++line;
    } else if (c != '\r') {
      field += c;
    }
  }
  if (quoted) fail(errc::parse, "tfm::train::csv: unterminated quoted field at line ", line, ".");
  if (!field.empty() || !row.empty()) end_row();
  return t;
}

/// Reads and parses a CSV file (io_error when it cannot be read).
inline csv_table read_csv(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(errc::io, "tfm::train::csv: cannot open '", path, "'.");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_csv(ss.str());
}

}  // namespace train
TFM_END_NAMESPACE
