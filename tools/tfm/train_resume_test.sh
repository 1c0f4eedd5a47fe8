#!/usr/bin/env bash
# CTest check of `tfm train` (registered by tools/CMakeLists.txt when tests are built):
#   1. bad flags exit with code 2 and a message, never a crash;
#   2. an uninterrupted run and a run killed with SIGKILL mid-training (checkpoint every step),
#      then resumed with --resume, write byte-identical loss.csv and samples.txt;
#   3. a run split with --stop-after and resumed gives the same files too;
#   4. BPE tokens (--bpe-vocab): the split + resumed run (tokenizer file deleted: it comes from
#      the checkpoint) and a run with --tokenizer OUT/tokenizer.json reproduce the same files;
#      bad --tokenizer files are errors with a message.
# usage: train_resume_test.sh TFM WORK_DIR   (the corpus: this repository's docs)
set -euo pipefail
tfm="$1"
work="$2"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin() { "$tfm" train "$@"; }
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

mapfile -t corpus < <(find "$src/docs" -maxdepth 1 -name '*.md' | sort)
[ "${#corpus[@]}" -gt 0 ] || fail "no corpus files under $src/docs"
common=(--data "${corpus[@]}" --n-layer 2 --n-embd 32 --n-head 2 --ffn 64 --block-size 32
        --batch 4 --steps 60 --warmup 5 --eval-interval 10 --eval-batches 2 --ckpt-interval 1
        --threads 1 --seed 3 --samples 1 --sample-tokens 40 --log-interval 20)

# 1. usage errors: exit code 2 and a message on stderr
expect_usage() {
  local rc=0
  bin "$@" >"$work/usage.out" 2>"$work/usage.err" || rc=$?
  [ "$rc" -eq 2 ] || fail "tfm train $* exited with $rc, expected 2"
  [ -s "$work/usage.err" ] || fail "tfm train $* printed no message"
  echo "ok (exit 2): tfm train $* -> $(head -1 "$work/usage.err")"
}
expect_usage --steps
expect_usage --steps ten
expect_usage --steps -5
expect_usage --lr nan
expect_usage --bogus 1
expect_usage --config huge
expect_usage --n-head 3 --n-embd 128
expect_usage --norm batch_norm
expect_usage --top-p 1.5
expect_usage --seq 4096
expect_usage --data /nonexistent/file.txt
expect_usage --resume /nonexistent/dir
expect_usage --bf16=yes
expect_usage positional
expect_usage --bpe-vocab 100
expect_usage --bpe-vocab 300 --tokenizer "$src/docs/mini_gpt.md"
expect_usage --tokenizer /nonexistent/tokenizer.json

# 2. uninterrupted vs killed + resumed
bin "${common[@]}" --out "$work/full" >"$work/full.log"
"$tfm" train "${common[@]}" --out "$work/killed" >"$work/killed.log" &
pid=$!
# wait for a checkpoint at step >= 8, then kill -9 (usually inside a later step or save)
for _ in $(seq 1 600); do
  if [ -f "$work/killed/loss.csv" ] && [ "$(wc -l <"$work/killed/loss.csv")" -ge 10 ]; then break; fi
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || true
rc=0
wait "$pid" || rc=$?
echo "killed run ended with exit code $rc (137 = SIGKILL) after $(($(wc -l <"$work/killed/loss.csv") - 2)) steps"
[ -f "$work/killed/checkpoint.tfm" ] || fail "no checkpoint was written before the kill"
bin --resume "$work/killed" --samples 1 --sample-tokens 40 >"$work/resumed.log"
cmp "$work/full/loss.csv" "$work/killed/loss.csv" || fail "the resumed loss.csv differs"
cmp "$work/full/samples.txt" "$work/killed/samples.txt" || fail "the resumed samples differ"
echo "ok: kill -9 + --resume reproduces loss.csv and samples.txt byte for byte"

# 3. --stop-after + --resume
bin "${common[@]}" --out "$work/split" --stop-after 23 >"$work/split1.log"
bin --resume "$work/split" >"$work/split2.log"
cmp "$work/full/loss.csv" "$work/split/loss.csv" || fail "the split run's loss.csv differs"
cmp "$work/full/samples.txt" "$work/split/samples.txt" || fail "the split run's samples differ"
echo "ok: --stop-after + --resume reproduces the uninterrupted run"

# a resumed run refuses a changed training setting
expect_usage --resume "$work/split" --lr 0.5
# a corrupted checkpoint is a run-time error (exit 1) naming the problem
cp -r "$work/split" "$work/corrupt"
printf '\xff' | dd of="$work/corrupt/checkpoint.tfm" bs=1 seek=5000 conv=notrunc status=none
rc=0
bin --resume "$work/corrupt" >"$work/corrupt.out" 2>"$work/corrupt.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a corrupted checkpoint gave exit code $rc, expected 1"
grep -q "corrupted\|checksum" "$work/corrupt.err" || fail "no corruption message: $(cat "$work/corrupt.err")"
echo "ok: corrupted checkpoint -> $(tail -1 "$work/corrupt.err")"

# 4. BPE tokens
bin "${common[@]}" --bpe-vocab 300 --out "$work/bpe_full" >"$work/bpe_full.log"
[ -s "$work/bpe_full/tokenizer.json" ] || fail "--bpe-vocab wrote no tokenizer.json"
grep -q "BPE" "$work/bpe_full.log" || fail "the BPE run does not say it uses BPE tokens"
bin "${common[@]}" --bpe-vocab 300 --out "$work/bpe_split" --stop-after 23 >"$work/bpe_split1.log"
rm "$work/bpe_split/tokenizer.json"
bin --resume "$work/bpe_split" >"$work/bpe_split2.log"
cmp "$work/bpe_full/loss.csv" "$work/bpe_split/loss.csv" || fail "the resumed BPE loss.csv differs"
cmp "$work/bpe_full/samples.txt" "$work/bpe_split/samples.txt" || fail "the resumed BPE samples differ"
echo "ok: --bpe-vocab + --stop-after + --resume (tokenizer from the checkpoint) reproduces the run"
bin "${common[@]}" --tokenizer "$work/bpe_full/tokenizer.json" --out "$work/bpe_file" >"$work/bpe_file.log"
cmp "$work/bpe_full/loss.csv" "$work/bpe_file/loss.csv" || fail "--tokenizer FILE gives another loss.csv"
cmp "$work/bpe_full/samples.txt" "$work/bpe_file/samples.txt" || fail "--tokenizer FILE gives other samples"
echo "ok: --tokenizer OUT/tokenizer.json reproduces the --bpe-vocab run"
expect_usage --resume "$work/bpe_split" --bpe-vocab 400
printf '{"model": {"type": "BPE", "vocab": ' >"$work/bad_tokenizer.json"
rc=0
bin "${common[@]}" --tokenizer "$work/bad_tokenizer.json" --out "$work/bad" \
  >"$work/bad.out" 2>"$work/bad.err" || rc=$?
[ "$rc" -eq 1 ] || fail "a malformed --tokenizer file gave exit code $rc, expected 1"
grep -q "bad_tokenizer.json" "$work/bad.err" || fail "no file name in: $(cat "$work/bad.err")"
echo "ok: malformed --tokenizer -> $(tail -1 "$work/bad.err")"
echo "PASS"
