#!/usr/bin/env bash
# CTest for the `tfm` command: every subcommand's --help, the error paths (bad flag -> exit 2 with
# one line, missing or malformed file -> exit 1 with one line, never a crash), and `tfm inspect`
# on the committed GGUF and safetensors fixtures, text and --json (checked against the gguf and
# safetensors Python packages when they are installed), and on SmolLM2 when the model is cached.
#   cli_test.sh TFM_BINARY SOURCE_DIR WORK_DIR
set -uo pipefail
tfm=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }
# expect <status> <description> <command...>: runs it, checks the exit status; stderr in $work/err
expect() {
  local want=$1 what=$2
  shift 2
  "$@" >"$work/out" 2>"$work/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    fail "$what: exit $got, expected $want"; sed 's/^/    /' "$work/err" | head -5
  fi
  if [ "$want" -ne 0 ] && [ "$(wc -l <"$work/err")" -ne 1 ]; then
    fail "$what: the error is not one line:"; sed 's/^/    /' "$work/err" | head -5
  fi
}

expect 0 "tfm --help" "$tfm" --help
grep -q "inspect" "$work/out" || fail "tfm --help does not list inspect"
expect 2 "tfm without a subcommand" "$tfm"
expect 2 "unknown subcommand" "$tfm" frobnicate
for sub in $("$tfm" --help | awk '/^  [a-z]/ {print $1}'); do
  expect 0 "tfm $sub --help" "$tfm" "$sub" --help
  grep -q "usage: tfm $sub" "$work/out" || fail "tfm $sub --help prints no usage line"
  expect 2 "tfm $sub --no-such-flag" "$tfm" "$sub" --no-such-flag
done

gguf=$src/tests/data/io_gguf/python_writer.gguf
st=$src/tests/data/io_safetensors/metadata.safetensors
shards=$src/tests/data/io_safetensors/sharded/model.safetensors.index.json
expect 0 "inspect GGUF" "$tfm" inspect "$gguf"
grep -q "GGUF v3" "$work/out" || fail "inspect GGUF: no 'GGUF v3' line"
expect 0 "inspect GGUF --json" "$tfm" inspect --json --full-arrays "$gguf"
cp "$work/out" "$work/gguf.json"
expect 0 "inspect safetensors" "$tfm" inspect "$st"
expect 0 "inspect safetensors --json" "$tfm" inspect --json "$st"
cp "$work/out" "$work/st.json"
expect 0 "inspect sharded index" "$tfm" inspect --json "$shards"
cp "$work/out" "$work/shards.json"
expect 2 "inspect without FILE" "$tfm" inspect
expect 2 "inspect --limit x" "$tfm" inspect --limit x "$gguf"
expect 1 "inspect a missing file" "$tfm" inspect "$work/none.gguf"
head -c 100 "$gguf" >"$work/truncated.gguf"
expect 1 "inspect a truncated GGUF" "$tfm" inspect "$work/truncated.gguf"
printf 'not a model' >"$work/junk.bin"
expect 1 "inspect a non-model file" "$tfm" inspect "$work/junk.bin"

# The JSON against the Python readers (independent parsers of the same files).
if python3 -c "import gguf, safetensors" 2>/dev/null; then
  python3 - "$gguf" "$work/gguf.json" "$st" "$work/st.json" "$shards" "$work/shards.json" <<'PY' ||
import json, sys
import numpy as np
import gguf
from safetensors import safe_open
gpath, gjson, spath, sjson, ipath, ijson = sys.argv[1:7]
d = json.load(open(gjson))
r = gguf.GGUFReader(gpath)
assert [t["name"] for t in d["tensors"]] == [t.name for t in r.tensors], "tensor names/order"
for mine, t in zip(d["tensors"], r.tensors):
    assert mine["shape"] == [int(x) for x in reversed(t.shape.tolist())], (mine, t.shape)
    assert mine["type"] == t.tensor_type.name, (mine["type"], t.tensor_type.name)
    assert mine["bytes"] == int(t.n_bytes), (mine["bytes"], t.n_bytes)
    assert mine["offset"] == int(t.data_offset), (mine["offset"], t.data_offset)
keys = [k for k in r.fields if not k.startswith("GGUF.")]
assert list(d["metadata"]) == keys, (list(d["metadata"]), keys)
for k in keys:
    f = r.fields[k]
    if f.types[0] == gguf.GGUFValueType.STRING:
        assert d["metadata"][k] == f.contents(), k
    elif f.types[0] in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        assert abs(d["metadata"][k] - f.contents()) <= 1e-6 * abs(f.contents()), k
    elif f.types[0] != gguf.GGUFValueType.ARRAY:
        assert d["metadata"][k] == f.contents(), (k, d["metadata"][k], f.contents())
for path, jpath in ((spath, sjson), (ipath, ijson)):
    d = json.load(open(jpath))
    if path.endswith(".json"):
        import os
        names = sorted(json.load(open(path))["weight_map"])
        assert sorted(t["name"] for t in d["tensors"]) == names
        continue
    with safe_open(path, framework="numpy") as f:
        assert sorted(t["name"] for t in d["tensors"]) == sorted(f.keys())
        for t in d["tensors"]:
            assert t["shape"] == list(f.get_slice(t["name"]).get_shape()), t["name"]
        assert d["metadata"] == (f.metadata() or {}), (d["metadata"], f.metadata())
print("inspect --json agrees with gguf.GGUFReader and safetensors.safe_open")
PY
    fail "inspect --json disagrees with the Python readers"
else
  echo "note: python packages gguf/safetensors missing; JSON cross-check not run"
fi

model=${TFM_MODEL_DIR:-$HOME/.cache/typeformer/models}/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$model" ]; then
  expect 0 "inspect SmolLM2" "$tfm" inspect "$model"
  grep -q "llama.block_count  *uint32  *30" "$work/out" || fail "inspect SmolLM2: block_count 30 not shown"
  grep -q "272 tensors" "$work/out" || fail "inspect SmolLM2: 272 tensors not shown"
else
  echo "note: SmolLM2 is not in the model cache (scripts/fetch-models); its checks are skipped"
fi

if [ $failures -ne 0 ]; then
  echo "tfm cli test: $failures failure(s)"
  exit 1
fi
echo "tfm cli test: all checks passed"
