#!/usr/bin/env bash
# `tfm merge-lora` end to end on tests/data/lora_io's tiny base:
#   merge_lora_cli_test.sh TFM LORA_IO_MAKE SOURCE_DIR WORK_DIR
# usage errors exit 2 with one line naming the problem, unusable files exit 1 naming the file and
# the field; a merge from a PEFT directory equals the merge from the same adapter as a LoRA GGUF
# byte for byte, --scale 0 keeps every tensor, --type f16 writes F16 matrices.
set -u
tfm=$1 make=$2 src=$3 work=$4
if [ ! -x "$tfm" ]; then
  echo "TFM_SKIP: $tfm is not built (cmake --build <build> --target tfm)"
  exit 0
fi
rm -rf "$work" && mkdir -p "$work"
data=$src/tests/data/lora_io
base=$data/base_tiny.gguf
fails=0
expect() {  # expect CODE PATTERN -- ARGS...
  local code=$1 pattern=$2
  shift 3
  "$tfm" merge-lora "$@" > "$work/out.txt" 2>&1
  local rc=$?
  if [ "$rc" != "$code" ] || ! grep -q -- "$pattern" "$work/out.txt"; then
    echo "FAIL: tfm merge-lora $* -> exit $rc (want $code), output:"
    cat "$work/out.txt"
    fails=$((fails + 1))
  else
    echo "ok: exit $rc: $(head -1 "$work/out.txt")"
  fi
}
expect 2 "expects BASE.gguf" --
expect 2 "expects BASE.gguf" -- "$base" "$data/peft_tiny"
expect 2 "--type is one of" -- "$base" "$data/peft_tiny" "$work/m.gguf" --type q4_0
expect 2 "--scale" -- "$base" "$data/peft_tiny" "$work/m.gguf" --scale abc
expect 2 "--bogus" -- "$base" "$data/peft_tiny" "$work/m.gguf" --bogus
expect 2 "is not a file" -- "$work/none.gguf" "$data/peft_tiny" "$work/m.gguf"
expect 2 "does not exist" -- "$base" "$work/none" "$work/m.gguf"
expect 2 "must end in .gguf" -- "$base" "$data/peft_tiny" "$work/m.bin"
expect 1 "general.type is missing" -- "$base" "$base" "$work/m.gguf"
expect 1 "adapter_config.json" -- "$base" "$data" "$work/m.gguf"
expect 1 "general.architecture is 'gpt2'" -- "$src/tests/data/infer_hf/gpt2_f16.gguf" \
  "$data/peft_tiny" "$work/m.gguf"
mkdir -p "$work/dora" && cp "$data/peft_tiny/adapter_model.safetensors" "$work/dora/" &&
  sed 's/"use_dora": false/"use_dora": true/' "$data/peft_tiny/adapter_config.json" \
    > "$work/dora/adapter_config.json"
expect 1 "use_dora" -- "$base" "$work/dora" "$work/m.gguf"
[ -e "$work/m.gguf" ] && { echo "FAIL: a failed merge left m.gguf"; fails=$((fails + 1)); }

"$make" "$base" "$work/ad" --rank 3 --alpha 5 --rslora --seed 11 --sd 0.2 > /dev/null || fails=$((fails + 1))
expect 0 "wrote" -- "$base" "$work/ad.gguf" "$work/from_gguf.gguf"
expect 0 "wrote" -- "$base" "$work/ad_peft" "$work/from_peft.gguf"
cmp -s "$work/from_gguf.gguf" "$work/from_peft.gguf" ||
  { echo "FAIL: merges from the GGUF and the PEFT adapter differ"; fails=$((fails + 1)); }
cmp -s "$work/from_gguf.gguf" "$base" &&
  { echo "FAIL: the merge changed nothing"; fails=$((fails + 1)); }
expect 0 "wrote" -- "$base" "$work/ad.gguf" "$work/zero.gguf" --scale 0
cmp -s "$work/zero.gguf" "$base" ||
  { echo "FAIL: --scale 0 changed the base"; fails=$((fails + 1)); }
expect 0 "f16" -- "$base" "$data/peft_tiny" "$work/f16.gguf" --type f16
"$tfm" inspect "$work/f16.gguf" > "$work/inspect.txt" 2>&1
grep -q "blk.0.attn_q.weight *F16" "$work/inspect.txt" ||
  { echo "FAIL: --type f16 did not write F16"; cat "$work/inspect.txt"; fails=$((fails + 1)); }
echo "$fails failure(s)"
[ "$fails" = 0 ]
