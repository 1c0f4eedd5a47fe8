// The CSV writer/reader (RFC 4180 quoting, exact number round trip), the SVG plot (well-formed
// elements, ticks, labels, NaN gaps) and the progress line formatting.
#include <typeformer/train/csv.hpp>
#include <typeformer/train/plot.hpp>
#include <typeformer/train/progress.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <unistd.h>

using namespace tfm;

namespace {
std::string tmp(const char* name) {
  return "/tmp/tfm_test_train_" + std::to_string(::getpid()) + "_" + name;
}
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("csv: quoting follows RFC 4180 and numbers read back exactly") {
  CHECK(train::csv_escape("plain") == "plain");
  CHECK(train::csv_escape("a,b") == "\"a,b\"");
  CHECK(train::csv_escape("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(train::csv_escape("two\nlines") == "\"two\nlines\"");
  CHECK(train::csv_number(std::nan("")) == "");
  CHECK(train::csv_number(2.5f) == "2.5");
  CHECK(train::csv_number(std::int64_t{-42}) == "-42");
  // Shortest round trip: parsing the text gives the same float / double bits.
  const float f = 3.14159274f;
  CHECK(std::strtof(train::csv_number(f).c_str(), nullptr) == f);
  const double d = 0.1 + 0.2;
  CHECK(std::strtod(train::csv_number(d).c_str(), nullptr) == d);

  const std::string p = tmp("t.csv");
  {
    train::csv_writer w(p, {"step", "note", "loss"});
    w.row({"1", "a,b", train::csv_number(1.25f)});
    w.row({"2", "say \"x\"\nok", ""});
    CHECK_THROWS_AS(w.row({"3"}), value_error);
  }
  auto t = train::read_csv(p);
  REQUIRE(t.header.size() == 3);
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0][1] == "a,b");
  CHECK(t.rows[1][1] == "say \"x\"\nok");
  CHECK(t.rows[1][2] == "");
  CHECK(t.column("loss") == 2);
  CHECK_THROWS_AS(t.column("nope"), value_error);
  train::write_csv(p, {"a", "b"}, {{"1", "2"}, {"3", "4"}});
  CHECK(train::read_csv(p).rows.size() == 2);
  CHECK_THROWS_AS(train::parse_csv("a,b\n1,2,3\n"), parse_error);
  CHECK_THROWS_AS(train::parse_csv("a,b\n\"1,2\n"), parse_error);
  std::remove(p.c_str());
}

TEST_CASE("plot: nice ticks are 1-2-5 steps covering the range") {
  auto t = train::nice_ticks(0, 1000, 8);
  CHECK(t.front() == 0);
  CHECK(t.back() == 1000);
  CHECK(t[1] - t[0] == doctest::Approx(100).epsilon(1e-12));
  t = train::nice_ticks(1.37, 5.61, 6);
  CHECK(t.front() <= 1.37);
  CHECK(t.back() >= 5.61);
  CHECK(t[1] - t[0] == doctest::Approx(1.0).epsilon(1e-12));
  t = train::nice_ticks(2.0, 2.0, 6);  // a flat series still gets an axis
  CHECK(t.size() >= 2);
  CHECK(t.front() < 2.0);
  CHECK(t.back() > 2.0);
}

TEST_CASE("plot: the SVG has axes, labels, legend, reference line and gaps at NaN") {
  train::plot_series a, b;
  a.name = "train";
  a.x = {0, 1, 2, 3, 4};
  a.y = {5.5, 4.0, std::nan(""), 3.0, 2.5};
  b.name = "validation & more";
  b.x = {0, 4};
  b.y = {5.4, 2.7};
  b.markers = true;
  train::plot_options o;
  o.title = "loss <test>";
  o.x_label = "step";
  o.y_label = "loss";
  o.hlines.push_back({"unigram", 3.3});
  const std::string s = train::svg_line_plot({a, b}, o);
  CHECK(s.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(s.find("</svg>") != std::string::npos);
  CHECK(s.find("loss &lt;test&gt;") != std::string::npos);  // escaped title
  CHECK(s.find("validation &amp; more") != std::string::npos);
  CHECK(s.find(">step</text>") != std::string::npos);
  CHECK(s.find("rotate(-90)") != std::string::npos);
  CHECK(count(s, "<polyline") == 3);  // train split by the NaN into two pieces, validation one
  CHECK(count(s, "<circle") == 2);
  CHECK(s.find("stroke-dasharray") != std::string::npos);
  CHECK(s.find(">unigram</text>") != std::string::npos);
  // Every opened element is closed (a cheap well-formedness check).
  CHECK(count(s, "<g") == count(s, "</g>"));
  CHECK(count(s, "<text") == count(s, "</text>"));
  train::plot_series bad;
  bad.x = {1, 2};
  bad.y = {1};
  CHECK_THROWS_AS(train::svg_line_plot({bad}, o), value_error);
}

TEST_CASE("progress: durations, SI counts and the line text") {
  CHECK(train::format_duration(4.25) == "4.2s");
  CHECK(train::format_duration(185) == "3m05s");
  CHECK(train::format_duration(7500) == "2h05m");
  CHECK(train::format_duration(-1) == "?");
  CHECK(train::format_si(950) == "950");
  CHECK(train::format_si(1234) == "1.23k");
  CHECK(train::format_si(45600000) == "45.6M");
  CHECK(train::format_si(999999) == "1.00M");
  train::throughput m;
  CHECK(std::isnan(m.eta(10)));
  m.add(1000, 0.5);
  CHECK(m.tokens_per_s() == doctest::Approx(2000));
  CHECK(m.eta(10) == doctest::Approx(5.0));

  const std::string p = tmp("progress.txt");
  std::FILE* f = std::fopen(p.c_str(), "w+");
  REQUIRE(f);
  train::progress_line bar(100, f, 50);
  CHECK_FALSE(bar.interactive());  // a file is not a terminal
  for (std::int64_t s = 1; s <= 100; ++s) bar.update({s, 2.0, 1e-3, 5000, 1.0});
  bar.print("step 100: val loss 1.9");
  bar.finish();
  std::fflush(f);
  std::rewind(f);
  std::string text;
  char buf[256];
  while (std::fgets(buf, sizeof buf, f)) text += buf;
  std::fclose(f);
  std::remove(p.c_str());
  // Plain mode: only steps 50 and 100, then the message; no carriage returns.
  CHECK(count(text, "\n") == 3);
  CHECK(text.find('\r') == std::string::npos);
  CHECK(text.find("step  50/100 | loss 2.0000 | lr 1.00e-03 | 5.00k tok/s | ETA 1.0s") !=
        std::string::npos);
  bar.set_interactive(true);
  CHECK(bar.format({10, 2.0, 1e-3, 5000, 1.0}).find("[##..................]") != std::string::npos);
}
