#!/usr/bin/env bash
# Compile-time bench: times the compilation (-c, no link) of
#   include_baseline.cpp  the standard and xsimd headers typeformer/core.hpp pulls in, empty main
#   include_core.cpp      #include "typeformer/core.hpp", empty main
#   include_all.cpp       #include "typeformer/typeformer.hpp", empty main
#   expr_kinds.cpp        typeformer/core.hpp + 20 expression kinds (goal: <= 10 s)
# with each compiler found (default g++-12 and clang++-14), at -std=c++20 -O2 -march=native
# -fopenmp, and prints a markdown table: median of REPEATS runs of wall time and of CPU time
# (user + sys, less sensitive to other work on the machine), the spread (min-max) of the wall
# time, and peak memory of the compiler. Clang also gets -mllvm -openmp-opt-disable, as the
# typeformer CMake target adds for Clang >= 13 (option TFM_CLANG_OPENMP_OPT, default OFF), and
# expr_kinds.cpp is timed a second time without it.
#
#   bench/compile_time/run.sh [REPEATS] [COMPILER...]
#   e.g. bench/compile_time/run.sh 3 g++-12 clang++-14
#
# A compiler that is missing or fails on a file is reported in the table, not fatal.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=${1:-3}
shift || true
compilers=("$@")
[ ${#compilers[@]} -eq 0 ] && compilers=(g++-12 clang++-14)
flags=(-std=c++20 -O2 -march=native -fopenmp -I"$root/include")
files=(include_baseline include_core include_all expr_kinds)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x /usr/bin/time ]; then
  echo "run.sh needs GNU time (/usr/bin/time; Debian package 'time')." >&2
  exit 1
fi

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)]}'; }

echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# flags: ${flags[*]}; $reps runs each"
echo
echo "| compiler | TU | wall s (median) | wall min-max | CPU s (median) | peak MB |"
echo "|---|---|---|---|---|---|"
for cxx in "${compilers[@]}"; do
  if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "| $cxx | (not installed) | - | - | - | - |"
    continue
  fi
  base=$("$cxx" --version | head -1 | sed 's/ *$//')
  runs=()
  for f in "${files[@]}"; do runs+=("$f|"); done
  if "$cxx" --version | grep -qi clang; then
    runs=()
    for f in "${files[@]}"; do runs+=("$f|-mllvm -openmp-opt-disable"); done
    runs+=("expr_kinds|")
  fi
  for run in "${runs[@]}"; do
    f=${run%%|*}
    read -r -a extra <<<"${run#*|}"
    ver="$base${extra[*]:+ (${extra[*]})}"
    if [ "${#extra[@]}" -eq 0 ] && [ "${#runs[@]}" -gt "${#files[@]}" ]; then
      ver="$base (OpenMPOpt on)"
    fi
    : >"$tmp/wall"; : >"$tmp/cpu"; : >"$tmp/mem"
    ok=1
    for ((i = 0; i < reps; ++i)); do
      if ! /usr/bin/time -f "%e %U %S %M" -o "$tmp/t" \
           "$cxx" "${flags[@]}" "${extra[@]}" -c "$here/$f.cpp" -o "$tmp/$f.o" 2>"$tmp/err"; then
        ok=0
        break
      fi
      read -r wall user sys mem <"$tmp/t"
      echo "$wall" >>"$tmp/wall"
      awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f\n", u + s}' >>"$tmp/cpu"
      echo "$mem" >>"$tmp/mem"
    done
    if [ $ok -eq 0 ]; then
      echo "| $ver | $f.cpp | failed: $(grep -m1 'error' "$tmp/err" | cut -c1-80) | - | - | - |"
      continue
    fi
    w=$(median <"$tmp/wall")
    lo=$(sort -g "$tmp/wall" | head -1)
    hi=$(sort -g "$tmp/wall" | tail -1)
    c=$(median <"$tmp/cpu")
    m=$(median <"$tmp/mem" | awk '{printf "%.0f", $1 / 1024}')
    echo "| $ver | $f.cpp | $w | $lo-$hi | $c | $m |"
  done
done
