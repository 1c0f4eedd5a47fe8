#!/usr/bin/env bash
# Runs the end-to-end benches against PyTorch CPU eager in the same run, 1 and 2 threads.
#   bench/e2e/run.sh BUILD_DIR [repeats]
# Needs Debian's python3-torch (1.13) or a pip torch for the Python named by $TFM_TORCH_PYTHON.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [repeats]}
reps=${2:-7}
# FMA peak of one core in GF/s (MFU denominator): TFM_PEAK_GFLOPS when set, else measured now by
# $build/bench/e2e/fma_peak (independent FMA chains in registers), so that the MFU of a run uses
# the peak of the same run (on one VM it has read 221-257 GF/s in different sessions).
if [ -n "${TFM_PEAK_GFLOPS:-}" ]; then
  peak=$TFM_PEAK_GFLOPS
  peak_note="TFM_PEAK_GFLOPS"
else
  peak=$("$build/bench/e2e/fma_peak")
  peak_note="measured by fma_peak in this run"
fi
here=$(cd "$(dirname "$0")" && pwd)
py=${TFM_TORCH_PYTHON:-/usr/bin/python3}
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "PyTorch is not importable by $py; install python3-torch (apt) or set TFM_TORCH_PYTHON." >&2
  exit 1
fi
echo "# torch $("$py" -c 'import torch; print(torch.__version__)'), $(lscpu | sed -n 's/^Model name: *//p')"
echo "# FMA peak per core (MFU denominator): $peak GF/s, $peak_note"
# Each side at its best: PyTorch needs OMP_WAIT_POLICY=PASSIVE on 2 cores (its pools fight
# otherwise); ours keeps libgomp's default spin-then-sleep, which PASSIVE would turn into a
# sleep and wake-up at every parallel region (MLP on 2 threads: 8.4 ms vs 6.1-6.5 ms).
torch_env=(env OMP_WAIT_POLICY=PASSIVE)
for th in 1 2; do
  export OMP_NUM_THREADS=$th OPENBLAS_NUM_THREADS=$th MKL_NUM_THREADS=$th
  for m in mlp block; do
    ours=$("$build/bench/e2e/bench_autodiff" "$m" "$reps")
    peer=$("${torch_env[@]}" "$py" "$here/torch_autodiff.py" "$m" "$reps")
    echo "threads=$th ours: $ours | torch: $peer" |
      awk '{print; split($0,a,"ours: "); split(a[2],o," "); split($0,b,"torch: "); split(b[2],p," ");
            printf("  -> %s speedup %.2fx (ours %.1f ms, torch %.1f ms); peak RSS above start: ours %.0f MB, torch %.0f MB\n",
                   o[1], p[2]/o[2], o[2], p[2], o[3]-o[4], p[3]-p[4]) }'
  done
  for m in 6l384 124m; do
    ours=$("$build/bench/e2e/bench_train" "$m" "$reps" "$((peak * th))")
    peer=$("${torch_env[@]}" "$py" "$here/torch_train.py" "$m" "$reps")
    echo "threads=$th ours: $ours | torch: $peer" |
      awk '{print; split($0,a,"ours: "); split(a[2],o," "); split($0,b,"torch: "); split(b[2],p," ");
            printf("  -> %s %.0f tok/s vs %.0f tok/s: %.2fx; peak RSS ours %.0f MB, torch %.0f MB; MFU ours %.1f%%, torch %.1f%%\n",
                   o[1], o[2], p[2], o[2]/p[2], o[4], p[4], 100*o[5], 100*o[5]*p[2]/o[2]) }'
  done
done
