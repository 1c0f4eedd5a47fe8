#!/usr/bin/env bash
# Compile-time bench for the training programs (issue goal: <= 30 s with -O2 on the 2-core
# machine): configures a fresh Ninja build directory with -O2 (tests, bench and the other examples
# off), builds examples/mini_gpt REPEATS times from scratch (objects removed between runs) and
# prints the wall and CPU (user + sys) time of each build, then each translation unit of
# mini_gpt and of `tfm train` (tools/tfm/cmd_train*.cpp, the f32 and bf16 halves that build in
# parallel) compiled alone.
#
#   bench/compile_time/mini_gpt.sh [REPEATS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=${1:-3}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
for tool in cmake ninja /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || { echo "mini_gpt.sh needs $tool" >&2; exit 1; }
done
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DTFM_BUILD_TESTS=OFF -DTFM_BUILD_BENCH=OFF >/dev/null
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(c++ --version | head -1); ninja -j$(($(nproc) + 2)) (its default)"
echo
echo "| run | wall s | CPU s |"
echo "|---|---|---|"
objdir="$build/examples/mini_gpt/CMakeFiles/mini_gpt.dir"
for ((i = 1; i <= reps; ++i)); do
  rm -f "$objdir"/*.o "$build/examples/mini_gpt/mini_gpt"
  /usr/bin/time -f "%e %U %S" -o "$build/t" ninja -C "$build" mini_gpt >/dev/null
  read -r wall user sys <"$build/t"
  awk -v i="$i" -v w="$wall" -v u="$user" -v s="$sys" 'BEGIN {printf "| %d | %.1f | %.1f |\n", i, w, u + s}'
done
echo
echo "| translation unit (alone) | CPU s |"
echo "|---|---|"
{ ninja -C "$build" -t commands mini_gpt; ninja -C "$build" -t commands tfm | grep 'cmd_train'; } |
  grep -- ' -c ' | while read -r cmd; do
  src=$(sed -n 's/.* -c \([^ ]*\).*/\1/p' <<<"$cmd")
  (cd "$build" && /usr/bin/time -f "%U %S" -o "$build/t" bash -c "$cmd" >/dev/null 2>&1)
  read -r user sys <"$build/t"
  awk -v f="$(basename "$src")" -v u="$user" -v s="$sys" 'BEGIN {printf "| %s | %.1f |\n", f, u + s}'
done
