#!/usr/bin/env bash
# Runs bench_expr RUNS times (each run: median of REPEATS paired repetitions per row) and prints,
# per thread count and expression, the median over runs of ours GB/s, ours/bound and
# ours-vs-Eigen, with the min-max over runs: on a shared machine the spread between runs is
# larger than the spread within one.
#   bench/expr/run.sh BUILD_DIR [RUNS] [bench_expr options...]
#   e.g. bench/expr/run.sh /work/build-bench-expr 5 --repeats 21
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [RUNS] [bench_expr options...]}
runs=${2:-5}
shift $(($# >= 2 ? 2 : 1))
exe="$build/bench/expr/bench_expr"
[ -x "$exe" ] || { echo "no $exe; build the target bench_expr first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 0; r < runs; ++r)); do
  "$exe" "$@" >"$tmp/run$r.txt"
done
head -2 "$tmp/run0.txt"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg); $runs runs"
python3 - "$tmp"/run*.txt <<'EOF'
import re, statistics, sys
rows = {}    # (threads, expr) -> list of (gbs, frac, vs_eigen)
bounds = {}  # threads -> list of (fma, add, copy) GB/s
order = []
for path in sys.argv[1:]:
    threads = None
    for line in open(path):
        m = re.match(r"# threads (\d+): bound kernels .*y=a\*b\+c ([\d.]+) GB/s .*y=a\+b ([\d.]+) GB/s, copy ([\d.]+) GB/s", line)
        if m:
            threads = int(m.group(1))
            bounds.setdefault(threads, []).append(tuple(float(m.group(i)) for i in (2, 3, 4)))
            continue
        if threads is None or not line.startswith("| ") or line.startswith("| expression"):
            continue
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        key = (threads, c[0])
        if key not in rows:
            order.append(key)
        eig = float(c[9].rstrip("x")) if c[9] != "-" else None
        rows.setdefault(key, []).append((float(c[3]), float(c[6]), eig, c[4], c[5]))

def fmt(v):
    v = [x for x in v if x is not None]
    if not v:
        return "-"
    return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"

for t in sorted(bounds):
    b = bounds[t]
    print(f"\n### {t} thread{'s' if t > 1 else ''}: bounds (median of runs, min-max) "
          f"a*b+c loop {fmt([x[0] for x in b])} GB/s, a+b loop {fmt([x[1] for x in b])} GB/s, "
          f"copy {fmt([x[2] for x in b])} GB/s\n")
    print("| expression | bound | ours GB/s | ours/bound | ours vs Eigen |")
    print("|---|---|---|---|---|")
    for key in order:
        if key[0] != t:
            continue
        v = rows[key]
        print(f"| {key[1]} | {v[0][3]} | {fmt([x[0] for x in v])} | {fmt([x[1] for x in v])} | "
              f"{fmt([x[2] for x in v])} |")
EOF
