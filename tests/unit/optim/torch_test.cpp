// Optional cross-check with torch.optim (SGD with Nesterov momentum, Adam, AdamW; a no-decay
// parameter group; a learning rate that changes every step), in float32 and float64. The
// Python reference is torch_reference.py (one Python process for all six runs); the interpreter
// is $TFM_TORCH_PYTHON when set, else the first of /usr/bin/python3 (Debian's torch) and python3
// that can import torch. Without torch the test skips with a message.
#include "optim_test_util.hpp"

#include <doctest/doctest.h>
#include <typeformer/optim/optimizer.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using namespace tfm;
using namespace optim_test;

namespace {
std::string work_dir() {
  std::filesystem::create_directories(TFM_OPTIM_WORK_DIR);
  return TFM_OPTIM_WORK_DIR;
}

int run(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  if (rc == -1) return -1;
#ifdef WEXITSTATUS
  return WEXITSTATUS(rc);
#else
  return rc;
#endif
}

/// Runs the reference on the (problem, out) pairs in one Python process; returns false (with
/// the reason) when no Python has torch.
bool torch_run(const std::vector<std::pair<std::string, std::string>>& jobs, std::string& why) {
  std::vector<std::string> pythons;
  if (const char* e = std::getenv("TFM_TORCH_PYTHON"); e && *e) {
    pythons.push_back(e);  // when set, the only interpreter tried
  } else {
    pythons.push_back("/usr/bin/python3");
    pythons.push_back("python3");
  }
  const std::string script = std::string(TFM_SOURCE_DIR) + "/tests/unit/optim/torch_reference.py";
  std::string args;
  for (const auto& [problem, out] : jobs) args += " " + problem + " " + out;
  const std::string log = work_dir() + "/torch_reference.log";
  for (const auto& py : pythons) {
    const int rc = run(py + " " + script + args + " > " + log + " 2>&1");
    if (rc == 0) return true;
    why += py + ": exit " + std::to_string(rc) + "; ";
    if (rc != 77 && rc != 127) {  // 77: no torch, 127: no such interpreter; else a real failure
      std::ifstream f(log);
      std::stringstream ss;
      ss << f.rdbuf();
      FAIL(py, " ran torch_reference.py but failed (exit ", rc, "): ", ss.str());
    }
  }
  return false;
}

std::vector<vec> read_values(const std::string& path) {
  std::vector<vec> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ls(line);
    vec v;
    double x;
    while (ls >> x) v.push_back(x);
    out.push_back(v);
  }
  return out;
}

/// One optimizer run on T parameters, written out as a problem for torch_reference.py.
struct job {
  std::string name, problem, out;
  vec got;  // our final values
};

template <class T>
std::vector<job> run_ours(std::mt19937& g) {
  const std::vector<std::size_t> sizes{37, 3};
  const std::vector<bool> decay{true, false};
  const auto init = random_init(sizes, g);
  const vec lrs{0.01, 0.005, 0.008, 0.01, 0.004, 0.006};
  const std::string dtype = std::is_same_v<T, float> ? "float32" : "float64";
  std::vector<job> jobs;
  for (int method = 0; method < 3; ++method) {
    job j;
    j.name = std::string(method == 0 ? "sgd" : method == 1 ? "adam" : "adamw") + " " + dtype;
    const std::string base = work_dir() + "/" +
                             (method == 0   ? "sgd"
                              : method == 1 ? "adam"
                                            : "adamw") +
                             "_" + dtype;
    j.problem = base + ".txt";
    j.out = base + ".out";
    auto ps = params<T>(init, decay);
    optim::adam_options o;
    o.lr = lrs[0];
    o.beta2 = 0.99;
    o.weight_decay = 0.1;
    const optim::sgd_options so{lrs[0], 0.9, 0.1, true};
    auto opt = method == 0   ? optim::sgd(ps.list, so)
               : method == 1 ? optim::adam(ps.list, o)
                             : optim::adamw(ps.list, o);
    std::ofstream f(j.problem);
    f << std::setprecision(17);
    f << (method == 0   ? "sgd"
          : method == 1 ? "adam"
                        : "adamw")
      << " " << dtype << "\n"
      << lrs[0] << " " << so.momentum << " " << (so.nesterov ? 1 : 0) << " " << o.weight_decay
      << " " << o.beta1 << " " << o.beta2 << " " << o.eps << "\n"
      << sizes.size() << "\n";
    const auto start = values(ps);  // rounded to T
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      f << (decay[i] ? 1 : 0) << " " << start[i].size();
      for (double x : start[i]) f << " " << x;
      f << "\n";
    }
    f << lrs.size() << "\n";
    for (double lr : lrs) {
      opt.set_lr(lr);
      // Rounded to T; |g| >= 0.2 > |wd p| keeps Adam's L2 case away from g ~ 0 (adam_test.cpp).
      const auto gs = set_grads(ps, random_grads(init, g, 0.2, 2.0));
      REQUIRE(opt.step());
      f << lr;
      for (const auto& gi : gs)
        for (double x : gi) f << " " << x;
      f << "\n";
    }
    j.got = flat(values(ps));
    jobs.push_back(std::move(j));
  }
  return jobs;
}
}  // namespace

TEST_CASE("optimizers match torch.optim (optional: skips without torch)") {
  auto g = tfm_test::rng(801);
  auto jobs = run_ours<float>(g);
  for (auto& j : run_ours<double>(g)) jobs.push_back(std::move(j));
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& j : jobs) files.emplace_back(j.problem, j.out);
  std::string why;
  if (!torch_run(files, why)) {
    MESSAGE("SKIPPED: no Python with torch found (", why,
            "); set TFM_TORCH_PYTHON to an interpreter that has torch");
    return;
  }
  for (const auto& j : jobs) {
    CAPTURE(j.name);
    const vec want = flat(read_values(j.out));
    // float32: both sides compute in f32 (ours with SIMD; 1e-6 of the largest value, see
    // adam_test.cpp). float64: both keep the state in double, 1e-12.
    const bool f64 = j.name.find("float64") != std::string::npos;
    auto rep = close_scaled(j.got, want, f64 ? 1e-12 : 1e-6);
    MESSAGE(j.name, " vs torch.optim: ", rep.str());
    TFM_CHECK_REPORT(rep);
  }
}
