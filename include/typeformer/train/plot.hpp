// typeformer/train/plot.hpp
//
// Line plots as standalone SVG files (open them in any browser), for loss curves:
//
//   train::plot_options o;
//   o.title = "mini-GPT on fortunes"; o.x_label = "step"; o.y_label = "loss (nats/token)";
//   o.hlines.push_back({"unigram entropy", 3.05});
//   train::write_svg("loss.svg", train::svg_line_plot({{"train", xs, ys}, val_series}, o));
//
// Axes get "nice" ticks (1, 2, 5 x 10^k steps, Heckbert's "Nice numbers for graph labels",
// Graphics Gems 1990) with grid lines and labels; a series is drawn as polylines broken at NaN
// values (a missing point), optionally with markers; a legend names every series and reference
// line. Series longer than max_points are thinned by a fixed stride (the last point is kept).
#pragma once

#include "typeformer/config/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

TFM_BEGIN_NAMESPACE
namespace train {

/// One line on a plot: points (x[i], y[i]); a NaN y leaves a gap.
struct plot_series {
  std::string name;
  std::vector<double> x, y;
  std::string color;     // any SVG color; empty: from the default palette
  double width = 1.5;    // stroke width in pixels
  bool markers = false;  // a dot at every point
  double opacity = 1.0;
};

/// A horizontal reference line across the plot, e.g. a baseline loss.
struct plot_hline {
  std::string label;
  double y = 0;
  std::string color = "#555555";
};

struct plot_options {
  std::string title, x_label, y_label;
  int width = 800, height = 480;  // pixels
  std::vector<plot_hline> hlines;
  std::size_t max_points = 2000;  // per series, before thinning
};

/// Tick positions covering [lo, hi] with about `target` intervals of a 1-2-5 step.
inline std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  std::vector<double> t;
  const double first = std::floor(lo / step + 1e-9) * step,
               last = std::ceil(hi / step - 1e-9) * step;
  for (double v = first; v <= last + step * 0.5; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

namespace detail {
inline std::string xml_escape(std::string_view s) {
  std::string r;
  for (char c : s) {
    switch (c) {
      case '&':
        r += "&amp;";
        break;
      case '<':
        r += "&lt;";
        break;
      case '>':
        r += "&gt;";
        break;
      case '"':
        r += "&quot;";
        break;
      default:
        r += c;
    }
  }
  return r;
}
/// Label of tick value v on an axis whose ticks are `step` apart.
inline std::string tick_label(double v, double step) {
  char b[48];
  const double a = std::fabs(step);
  if (std::fabs(v) >= 1e6 || (a < 1e-4 && v != 0)) {
    std::snprintf(b, sizeof b, "%.3g", v);
  } else {
    const int decimals = a >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(a) - 1e-9));
    std::snprintf(b, sizeof b, "%.*f", decimals, v);
  }
  return b;
}
inline std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}
}  // namespace detail

/// The SVG document of a line plot.
inline std::string svg_line_plot(const std::vector<plot_series>& series, const plot_options& o) {
  static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  if (o.width < 200 || o.height < 150)
    fail(errc::value, "tfm::train::plot: the plot must be at least 200 x 150 pixels.");
  for (const auto& s : series)
    if (s.x.size() != s.y.size())
      fail(errc::value, "tfm::train::plot: series '", s.name, "' has ", s.x.size(),
           " x values and ", s.y.size(), " y values.");
  // Data ranges over finite points and reference lines.
  constexpr double inf = std::numeric_limits<double>::infinity();
  double x0 = inf, x1 = -inf, y0 = inf, y1 = -inf;
  for (const auto& s : series)
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  for (const auto& h : o.hlines)
    if (std::isfinite(h.y)) {
      y0 = std::min(y0, h.y);
      y1 = std::max(y1, h.y);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (!std::isfinite(y0)) y0 = 0, y1 = 1;
  const auto xt = nice_ticks(x0, x1, 8), yt = nice_ticks(y0, y1, 6);
  const double xa = xt.front(), xb = xt.back(), ya = yt.front(), yb = yt.back();
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;

  const double W = o.width, H = o.height;
  const double left = 72, right = 24, top = o.title.empty() ? 20 : 44, bottom = 58;
  const double pw = W - left - right, ph = H - top - bottom;
  auto X = [&](double v) { return left + (v - xa) / (xb - xa) * pw; };
  auto Y = [&](double v) { return top + ph - (v - ya) / (yb - ya) * ph; };
  using detail::num;
  using detail::xml_escape;

  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(o.width) +
       "\" height=\"" + std::to_string(o.height) + "\" viewBox=\"0 0 " + std::to_string(o.width) +
       " " + std::to_string(o.height) + "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (!o.title.empty())
    s += "<text x=\"" + num(left + pw / 2) +
         "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" "
         "font-weight=\"bold\">" +
         xml_escape(o.title) + "</text>\n";
  // Grid and tick labels.
  s += "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n";
  for (double v : xt)
    s += "<line x1=\"" + num(X(v)) + "\" y1=\"" + num(top) + "\" x2=\"" + num(X(v)) + "\" y2=\"" +
         num(top + ph) + "\"/>\n";
  for (double v : yt)
    s += "<line x1=\"" + num(left) + "\" y1=\"" + num(Y(v)) + "\" x2=\"" + num(left + pw) +
         "\" y2=\"" + num(Y(v)) + "\"/>\n";
  s += "</g>\n<g font-size=\"12\" fill=\"#222222\">\n";
  for (double v : xt)
    s += "<text x=\"" + num(X(v)) + "\" y=\"" + num(top + ph + 18) + "\" text-anchor=\"middle\">" +
         detail::tick_label(v, xstep) + "</text>\n";
  for (double v : yt)
    s += "<text x=\"" + num(left - 8) + "\" y=\"" + num(Y(v) + 4) + "\" text-anchor=\"end\">" +
         detail::tick_label(v, ystep) + "</text>\n";
  s += "</g>\n";
  // Axes and their labels.
  s += "<g stroke=\"#222222\" stroke-width=\"1.2\">\n<line x1=\"" + num(left) + "\" y1=\"" +
       num(top + ph) + "\" x2=\"" + num(left + pw) + "\" y2=\"" + num(top + ph) +
       "\"/>\n<line x1=\"" + num(left) + "\" y1=\"" + num(top) + "\" x2=\"" + num(left) +
       "\" y2=\"" + num(top + ph) + "\"/>\n";
  for (double v : xt)
    s += "<line x1=\"" + num(X(v)) + "\" y1=\"" + num(top + ph) + "\" x2=\"" + num(X(v)) +
         "\" y2=\"" + num(top + ph + 5) + "\"/>\n";
  for (double v : yt)
    s += "<line x1=\"" + num(left - 5) + "\" y1=\"" + num(Y(v)) + "\" x2=\"" + num(left) +
         "\" y2=\"" + num(Y(v)) + "\"/>\n";
  s += "</g>\n";
  if (!o.x_label.empty())
    s += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(H - 14) +
         "\" text-anchor=\"middle\" font-size=\"13\">" + xml_escape(o.x_label) + "</text>\n";
  if (!o.y_label.empty())
    s += "<text transform=\"translate(18," + num(top + ph / 2) +
         ") rotate(-90)\" text-anchor=\"middle\" "
         "font-size=\"13\">" +
         xml_escape(o.y_label) + "</text>\n";

  // Reference lines, then the series (clipped to the plot area).
  s += "<defs><clipPath id=\"area\"><rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" +
       num(pw) + "\" height=\"" + num(ph) +
       "\"/></clipPath></defs>\n<g clip-path=\"url(#area)\">\n";
  for (const auto& h : o.hlines) {
    if (!std::isfinite(h.y)) continue;
    s += "<line x1=\"" + num(left) + "\" y1=\"" + num(Y(h.y)) + "\" x2=\"" + num(left + pw) +
         "\" y2=\"" + num(Y(h.y)) + "\" stroke=\"" + xml_escape(h.color) +
         "\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n";
  }
  std::vector<std::string> colors;
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& sr = series[k];
    const std::string color = sr.color.empty() ? palette[k % 6] : sr.color;
    colors.push_back(color);
    const std::size_t n = sr.x.size();
    const std::size_t stride =
        o.max_points > 0 && n > o.max_points ? (n + o.max_points - 1) / o.max_points : 1;
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < n; i += stride) idx.push_back(i);
    if (n && idx.back() != n - 1) idx.push_back(n - 1);
    std::string pts, dots;
    auto flush = [&] {
      if (pts.empty()) return;
      s += "<polyline fill=\"none\" stroke=\"" + xml_escape(color) + "\" stroke-width=\"" +
           num(sr.width) + "\" stroke-linejoin=\"round\"" +
           (sr.opacity < 1 ? " stroke-opacity=\"" + num(sr.opacity) + "\"" : "") + " points=\"" +
           pts + "\"/>\n";
      pts.clear();
    };
    for (std::size_t i : idx) {
      if (!std::isfinite(sr.x[i]) || !std::isfinite(sr.y[i])) {
        flush();
        continue;
      }
      pts += (pts.empty() ? "" : " ") + num(X(sr.x[i])) + "," + num(Y(sr.y[i]));
      if (sr.markers)
        dots += "<circle cx=\"" + num(X(sr.x[i])) + "\" cy=\"" + num(Y(sr.y[i])) + "\" r=\"3\"/>\n";
    }
    flush();
    if (!dots.empty()) s += "<g fill=\"" + xml_escape(color) + "\">\n" + dots + "</g>\n";
  }
  s += "</g>\n";

  // Legend (top right inside the plot).
  std::vector<std::pair<std::string, std::string>> entries;  // label, color ("dash:" prefix)
  for (std::size_t k = 0; k < series.size(); ++k)
    if (!series[k].name.empty()) entries.emplace_back(series[k].name, colors[k]);
  for (const auto& h : o.hlines)
    if (!h.label.empty() && std::isfinite(h.y)) entries.emplace_back(h.label, "dash:" + h.color);
  if (!entries.empty()) {
    std::size_t longest = 0;
    for (const auto& e : entries) longest = std::max(longest, e.first.size());
    const double bw = 44 + 7.2 * static_cast<double>(longest),
                 bh = 8 + 20 * static_cast<double>(entries.size());
    const double bx = left + pw - bw - 10, by = top + 10;
    s += "<g font-size=\"12\">\n<rect x=\"" + num(bx) + "\" y=\"" + num(by) + "\" width=\"" +
         num(bw) + "\" height=\"" + num(bh) +
         "\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#bbbbbb\"/>\n";
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const double yy = by + 14 + 20 * static_cast<double>(i);
      std::string c = entries[i].second;
      const bool dash = c.rfind("dash:", 0) == 0;
      if (dash) c = c.substr(5);
      s += "<line x1=\"" + num(bx + 8) + "\" y1=\"" + num(yy) + "\" x2=\"" + num(bx + 34) +
           "\" y2=\"" + num(yy) + "\" stroke=\"" + xml_escape(c) + "\" stroke-width=\"2\"" +
           (dash ? " stroke-dasharray=\"6 4\"" : "") + "/>\n";
      s += "<text x=\"" + num(bx + 40) + "\" y=\"" + num(yy + 4) + "\">" +
           xml_escape(entries[i].first) + "</text>\n";
    }
    s += "</g>\n";
  }
  s += "</svg>\n";
  return s;
}

/// Writes `text` to `path` through `path.tmp` and a rename.
inline void write_svg(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail(errc::io, "tfm::train::plot: cannot create '", tmp, "'.");
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    f.flush();
    if (!f) fail(errc::io, "tfm::train::plot: writing '", tmp, "' failed.");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(errc::io, "tfm::train::plot: cannot rename '", tmp, "' to '", path, "'.");
}

}  // namespace train
TFM_END_NAMESPACE
