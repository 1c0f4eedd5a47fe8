#!/usr/bin/env bash
# bench/packaging/run.sh [BUILD_DIR] [REPEATS]: the consumer program built with
# typeformer::typeformer (portable) and typeformer::native, run alternately, as a Markdown table
# of median milliseconds and the speed-up of native. Configures BUILD_DIR (default build-bench)
# with TFM_BUILD_BENCH=ON if needed and builds only the two programs.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-bench}
repeats=${2:-11}
if [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG" \
    -DTFM_BUILD_BENCH=ON -DTFM_BUILD_TESTS=OFF -DTFM_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$dir" --target bench_consumer_portable bench_consumer_native -j "$(nproc)" >/dev/null
exe_dir="$dir/bench/packaging"
out=$(mktemp)
for round in 1 2 3; do
  "$exe_dir/bench_consumer_portable" --repeats "$repeats" >>"$out"
  "$exe_dir/bench_consumer_native" --repeats "$repeats" >>"$out"
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); threads: ${OMP_NUM_THREADS:-$(nproc)}; $(${CXX:-c++} --version | head -n1)"
python3 - "$out" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    flavour, what, ms = line.split()
    t.setdefault(what, {}).setdefault(flavour, []).append(float(ms))
print("| workload | typeformer::typeformer (ms) | typeformer::native (ms) | native speed-up |")
print("| --- | ---: | ---: | ---: |")
for what, d in t.items():
    p, n = statistics.median(d["portable"]), statistics.median(d["native"])
    print(f"| {what} | {p:.2f} | {n:.2f} | {p / n:.2f}x |")
PY
rm -f "$out"
