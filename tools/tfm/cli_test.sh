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

# tfm train: the model flags come from the config field list; bad values are usage errors
# (its runs and resumes: train_resume_test.sh)
expect 0 "tfm train --help" "$tfm" train --help
for f in --n-layer --n-kv-head --window --norm --tie-embeddings --rope-base --dropout --bf16; do
  grep -q -- "$f" "$work/out" || fail "tfm train --help does not list $f"
done
expect 2 "tfm train --n-layer x" "$tfm" train --n-layer x
expect 2 "tfm train --norm batch_norm" "$tfm" train --norm batch_norm
expect 2 "tfm train --bias 2" "$tfm" train --bias 2
expect 2 "tfm train --n-head 3" "$tfm" train --n-head 3 --data "$src/README.md"
expect 2 "tfm train --steps 0" "$tfm" train --steps 0 --data "$src/README.md"
expect 2 "tfm train --resume nowhere" "$tfm" train --resume "$work/no_such_run"
# A mixture-of-experts run: trains, exports to GGUF, and the engine reads and scores it.
expect 2 "tfm train --router topk" "$tfm" train --mlp moe --router topk
grep -q "softmax_topk" "$work/err" || fail "tfm train --router topk: the message lists no router"
expect 2 "tfm train --n-expert-used 9" "$tfm" train --mlp moe --n-expert 8 --n-expert-used 9 \
  --data "$src/README.md"
moe_flags=(--mlp moe --n-expert 4 --n-expert-used 2 --expert-ffn 32 --norm rms_norm --position rope
           --bias 0 --n-layer 2 --n-embd 32 --n-head 2 --n-kv-head 1 --block-size 32 --seq 32
           --batch 4 --steps 8 --eval-interval 4 --data "$src/README.md" --out "$work/moe_run")
expect 0 "tfm train --mlp moe" "$tfm" train "${moe_flags[@]}"
grep -q "expert load max/mean" "$work/out" || fail "tfm train --mlp moe prints no expert load"
grep -q "experts     4 per layer" "$work/out" || fail "tfm train --mlp moe prints no experts line"
expect 0 "tfm convert an MoE run" "$tfm" convert "$work/moe_run" "$work/moe.gguf"
expect 0 "tfm perplexity on the MoE GGUF" "$tfm" perplexity -m "$work/moe.gguf" \
  -f "$src/README.md" --ctx 32
expect 0 "tfm inspect the MoE GGUF" "$tfm" inspect "$work/moe.gguf"
grep -q "llama.expert_count" "$work/out" || fail "tfm inspect: no llama.expert_count"
for sub in generate chat perplexity bench; do
  expect 2 "tfm $sub --kv-type q4_0" "$tfm" "$sub" -m "$work/none.gguf" --kv-type q4_0
  grep -q "kv-type must be f32, f16, q8_0 or int8" "$work/err" || fail "tfm $sub --kv-type q4_0: message"
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

# tfm convert: every tensor of the fixture (F32, F16, BF16, Q8_0, Q4_1, Q4_K, I32, I8, F64) to
# F16/BF16/F32 GGUF and to safetensors, checked against gguf.quants.dequantize.
for t in f32 f16 bf16; do
  expect 0 "convert to $t GGUF" "$tfm" convert --type "$t" "$gguf" "$work/conv_$t.gguf"
  expect 0 "inspect the $t GGUF" "$tfm" inspect "$work/conv_$t.gguf"
done
expect 0 "convert to safetensors" "$tfm" convert "$gguf" "$work/conv.safetensors"
expect 2 "convert with a bad --type" "$tfm" convert --type q4 "$gguf" "$work/x.gguf"
expect 2 "convert to an unknown extension" "$tfm" convert "$gguf" "$work/x.bin"
expect 1 "convert a missing file" "$tfm" convert "$work/none.gguf" "$work/x.gguf"
if python3 -c "import gguf, safetensors" 2>/dev/null; then
  python3 - "$gguf" "$work" <<'PY' || fail "tfm convert output disagrees with gguf.quants.dequantize"
import sys
import numpy as np
import gguf
from gguf import quants
from safetensors.numpy import load_file
src, work = sys.argv[1:3]
r = gguf.GGUFReader(src)
ref = {}
for t in r.tensors:
    shape = [int(x) for x in reversed(t.shape.tolist())]
    if t.tensor_type.name in ("I8", "I16", "I32", "I64", "F64"):
        ref[t.name] = (np.asarray(t.data).reshape(shape), True)
    else:
        ref[t.name] = (quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape), False)
for ty, np_t in (("f32", np.float32), ("f16", np.float16), ("bf16", None)):
    out = gguf.GGUFReader(f"{work}/conv_{ty}.gguf")
    assert [t.name for t in out.tensors] == [t.name for t in r.tensors]
    for t in out.tensors:
        want, exact = ref[t.name]
        got = quants.dequantize(t.data, t.tensor_type).reshape(want.shape) if not exact else np.asarray(t.data).reshape(want.shape)
        if exact:
            assert np.array_equal(got, want), t.name
            continue
        if len(t.shape) <= 1:
            assert t.tensor_type.name == "F32", (t.name, t.tensor_type.name)
        if ty == "f16" and len(t.shape) > 1:
            want = want.astype(np.float16).astype(np.float32)
        if ty == "bf16" and len(t.shape) > 1:  # round to nearest even, as the bf16 type does
            b = want.astype(np.float32).view(np.uint32)
            b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint32) << 16
            want = b.view(np.float32)
        assert np.array_equal(got.astype(np.float32), want), (ty, t.name)
    ft = out.fields["general.file_type"].contents()
    assert ft == {"f32": 0, "f16": 1, "bf16": 32}[ty], (ty, ft)
st = load_file(f"{work}/conv.safetensors")
assert sorted(st) == sorted(ref)
for name, (want, exact) in ref.items():
    assert st[name].shape == want.shape, name
    assert np.array_equal(st[name], want.astype(st[name].dtype)), name
print("tfm convert: F32/F16/BF16 GGUF and safetensors outputs equal the gguf package's dequantization")
PY
fi

# tfm convert HF_DIR OUT.gguf: a 2-step run -> HF directory -> GGUF equals run -> GGUF byte for
# byte, and generates; a toy vocabulary, a missing tokenizer.json, a config nn::gpt cannot hold and
# a non-.gguf OUT are one-line errors
hf=$src/tests/data/infer_hf
expect 0 "train a 2-step run" "$tfm" train --config llama-tiny --n-layer 1 --n-embd 32 --n-head 4 \
  --n-kv-head 2 --block-size 16 --steps 2 --batch 2 --eval-batches 1 --samples 0 \
  --data "$src/README.md" --out "$work/run"
expect 0 "convert the run to GGUF" "$tfm" convert "$work/run" "$work/run.gguf"
expect 0 "convert the run to an HF directory" "$tfm" convert "$work/run" "$work/run-hf"
expect 0 "convert the HF directory to GGUF" "$tfm" convert "$work/run-hf" "$work/run-hf.gguf"
cmp -s "$work/run.gguf" "$work/run-hf.gguf" || fail "run -> HF -> GGUF differs from run -> GGUF"
expect 0 "convert the HF directory to F16 GGUF" "$tfm" convert --type f16 "$work/run-hf" "$work/run-hf16.gguf"
expect 0 "generate from the converted GGUF" "$tfm" generate -m "$work/run-hf16.gguf" -p "the" -n 4 --temp 0
expect 1 "convert an HF directory with a toy vocabulary" "$tfm" convert "$hf/gpt2_f16" "$work/x.gguf"
grep -q "tokenizer.json" "$work/err" || fail "convert HF toy vocabulary: tokenizer.json not named"
expect 1 "convert an HF directory without tokenizer.json" "$tfm" convert "$hf/gpt2_bf16" "$work/x.gguf"
grep -q "tokenizer.json" "$work/err" || fail "convert HF without tokenizer: tokenizer.json not named"
expect 1 "convert an HF directory with head_dim" "$tfm" convert "$hf/llama_f32" "$work/x.gguf"
grep -q "config.json': head_dim" "$work/err" || fail "convert HF head_dim: the key is not named"
expect 2 "convert an HF directory to a non-GGUF OUT" "$tfm" convert "$hf/gpt2_f16" "$work/x.safetensors"

# tfm dpo (train/dpo_run.hpp): three LoRA steps on the 2-step run's GGUF with plain-text pairs;
# its files and margin, an interrupted + resumed run writing the same adapter, and the error paths
for i in $(seq 1 12); do
  echo "{\"prompt\": \"the $i\", \"chosen\": \" good\", \"rejected\": \" bad\"}"
done >"$work/pairs.jsonl"
for i in 1 2 3 4; do
  echo "{\"prompt\": \"a $i\", \"chosen\": \" good\", \"rejected\": \" bad\"}"
done >"$work/pairs_eval.jsonl"
dpo=(dpo -m "$work/run.gguf" --data "$work/pairs.jsonl" --eval-data "$work/pairs_eval.jsonl"
  --max-length 24 --batch 2 --steps 3 --eval-every 2 --rank 2 --lr 1e-2 --warmup 0 -t 1)
expect 0 "dpo: 3 steps" "$tfm" "${dpo[@]}" --out "$work/dpo"
for f in checkpoint.tfm adapter/adapter_model.safetensors adapter/adapter_config.json adapter.gguf \
  loss.csv loss.svg margin.svg; do
  [ -f "$work/dpo/$f" ] || fail "dpo: no $f"
done
grep -q "margin" "$work/out" || fail "dpo: no margin in the output"
head -n 1 "$work/dpo/loss.csv" | grep -q "val_margin" || fail "dpo: loss.csv has no val_margin"
expect 0 "dpo: stopped after step 1" "$tfm" "${dpo[@]}" --out "$work/dpo2" --stop-after 1 --quiet
expect 0 "dpo: resumed" "$tfm" "${dpo[@]}" --out "$work/dpo2" --resume --quiet
cmp -s "$work/dpo/adapter.gguf" "$work/dpo2/adapter.gguf" || fail "dpo: the resumed adapter differs"
cmp -s "$work/dpo/loss.csv" "$work/dpo2/loss.csv" || fail "dpo: the resumed loss.csv differs"
expect 2 "dpo --loss kto" "$tfm" "${dpo[@]}" --out "$work/dpo3" --loss kto
expect 2 "dpo --beta 0" "$tfm" "${dpo[@]}" --out "$work/dpo3" --beta 0
grep -q "beta must be positive" "$work/err" || fail "dpo --beta 0: message"
expect 2 "dpo --label-smoothing with ipo" "$tfm" "${dpo[@]}" --out "$work/dpo3" --loss ipo \
  --label-smoothing 0.1
expect 2 "dpo without --data" "$tfm" dpo -m "$work/run.gguf"
printf '{"prompt": "a", "chosen": " b"}\n' >"$work/bad_pairs.jsonl"
expect 1 "dpo on a malformed line" "$tfm" dpo -m "$work/run.gguf" --data "$work/bad_pairs.jsonl" \
  --out "$work/dpo3"
grep -q "bad_pairs.jsonl' line 1" "$work/err" || fail "dpo on a malformed line: file and line not named"
expect 1 "dpo --resume without a checkpoint" "$tfm" "${dpo[@]}" --out "$work/dpo_none" --resume

model=${TFM_MODEL_DIR:-$HOME/.cache/typeformer/models}/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$model" ]; then
  expect 0 "inspect SmolLM2" "$tfm" inspect "$model"
  grep -q "llama.block_count  *uint32  *30" "$work/out" || fail "inspect SmolLM2: block_count 30 not shown"
  grep -q "272 tensors" "$work/out" || fail "inspect SmolLM2: 272 tensors not shown"
  # generate: greedy, only the text on stdout (the numpy reference's continuation is " Paris.")
  expect 0 "generate SmolLM2" "$tfm" generate -m "$model" -p "The capital of France is" -n 8 --temp 0 -t 1
  grep -q "^ Paris\." "$work/out" || { fail "generate: expected ' Paris.' first"; cat "$work/out"; }
  grep -q "tokens/s" "$work/err" || fail "generate: no timings on stderr"
  # chat: a piped conversation through the file's ChatML template
  printf 'What is the capital of France?\n/exit\n' >"$work/chat_in.txt"
  # With f32 weights (--dequantize) the greedy reply names Paris; packed Q4_1 decode quantizes
  # activations to 8 bits as llama.cpp does and, like llama.cpp, answers differently (a
  # non-empty reply is all this checks).
  "$tfm" chat -m "$model" -n 24 --temp 0 -t 1 --dequantize <"$work/chat_in.txt" \
    >"$work/out" 2>"$work/err" || fail "chat --dequantize exited with $?"
  grep -q "Paris" "$work/out" || { fail "chat --dequantize: no 'Paris' in the reply"; cat "$work/out"; }
  "$tfm" chat -m "$model" -n 24 --temp 0 -t 1 <"$work/chat_in.txt" >"$work/out" 2>"$work/err" ||
    fail "chat exited with $?"
  grep -q "[A-Za-z]" "$work/out" || { fail "chat: empty reply"; cat "$work/out"; }
  # perplexity: llama.cpp's output line, on a small text with a small window
  for i in $(seq 1 40); do echo "The quick brown fox jumps over the lazy dog number $i."; done \
    >"$work/ppl.txt"
  expect 0 "perplexity SmolLM2" "$tfm" perplexity -m "$model" -f "$work/ppl.txt" --ctx 64 -t 1
  tail -n 1 "$work/out" | grep -Eq '^PPL = [0-9]+\.[0-9]+ \+/- [0-9]+\.[0-9]+$' ||
    fail "perplexity: last line is not 'PPL = <value> +/- <err>'"
  expect 1 "perplexity on a text shorter than 2 windows" \
    "$tfm" perplexity -m "$model" -f "$work/ppl.txt" --ctx 4096
  # bench --json: llama-bench's fields
  expect 0 "bench SmolLM2 --json" "$tfm" bench -m "$model" -p 32 -n 8 -r 1 -t 1 --json
  python3 -c '
import json, sys
rows = {r["test"]: r for r in json.load(open(sys.argv[1]))}
assert set(rows) == {"pp32", "tg8"}, rows.keys()
for r in rows.values():
    assert r["avg_ts"] > 0 and r["n_threads"] == 1 and len(r["samples_ts"]) == 1, r
' "$work/out" || fail "bench --json: not llama-bench's fields"
  # --kv-type: a quantized KV cache (head_dim 64: q8_0 blocks fit) and the depth of bench
  expect 0 "generate SmolLM2 --kv-type q8_0" "$tfm" generate -m "$model" \
    -p "The capital of France is" -n 8 --temp 0 -t 1 --kv-type q8_0
  grep -q "^ Paris\." "$work/out" || { fail "generate --kv-type q8_0: expected ' Paris.'"; cat "$work/out"; }
  expect 0 "bench SmolLM2 -d 16 --kv-type int8" "$tfm" bench -m "$model" -p 8 -n 4 -d 16 -r 1 \
    -t 1 --kv-type int8 --json
  python3 -c '
import json, sys
rows = {r["test"]: r for r in json.load(open(sys.argv[1]))}
assert set(rows) == {"pp8 @ d16", "tg4 @ d16"}, rows.keys()
assert all(r["type_k"] == "int8" and r["n_depth"] == 16 for r in rows.values()), rows
' "$work/out" || fail "bench -d 16 --kv-type int8: not the expected tests and fields"
  # quantize --calib: AWQ on one window of calibration text (two of the repository's docs, named:
  # a glob would change the window whenever a doc that sorts first is added), Q4_0 out,
  # loads and names Paris; the wrong combinations are usage errors
  cat "$src"/docs/autodiff.md "$src"/docs/backends.md >"$work/calib.txt"
  expect 0 "quantize --calib --method awq" "$tfm" quantize "$model" "$work/awq.gguf" q4_0 \
    --calib "$work/calib.txt" --method awq --calib-tokens 512 -t 2
  grep -q "awq" "$work/out" || fail "quantize --method awq: no tensor quantized by awq"
  expect 0 "generate with the AWQ Q4_0 file" "$tfm" generate -m "$work/awq.gguf" \
    -p "The capital of France is" -n 4 --temp 0 -t 1
  grep -q "Paris" "$work/out" || { fail "AWQ Q4_0: expected Paris"; cat "$work/out"; }
  expect 2 "quantize --method without --calib" "$tfm" quantize "$model" "$work/x.gguf" q4_0 \
    --method gptq
  expect 2 "quantize --calib with q8_0" "$tfm" quantize "$model" "$work/x.gguf" q8_0 \
    --calib "$work/calib.txt"
  expect 2 "quantize --method frob" "$tfm" quantize "$model" "$work/x.gguf" q4_0 \
    --calib "$work/calib.txt" --method frob
  expect 1 "generate with a safetensors file as the model" "$tfm" generate -m "$st" -p hi
else
  echo "note: SmolLM2 is not in the model cache (scripts/fetch-models); its checks are skipped"
fi

# ---- tfm embed (BERT sentence embeddings; issue 18 items 4 and 7) --------------------------
# The committed tiny random BERT (tests/data/bert/tiny) always, all-MiniLM-L6-v2 when cached:
# line count, every line a JSON array of C numbers with unit norm, cosine >= 0.9999 against
# tests/data/bert/reference.py's float64 numpy embeddings.
bert=$src/tests/data/bert
expect 2 "embed without -m" "$tfm" embed
expect 2 "embed --batch 0" "$tfm" embed -m "$bert/tiny" --batch 0
expect 1 "embed with a missing model directory" "$tfm" embed -m "$work/no_model"
mkdir -p "$work/not_bert" && printf '{"model_type": "gpt2"}' >"$work/not_bert/config.json"
expect 1 "embed with a non-BERT config" "$tfm" embed -m "$work/not_bert"
# check_embed MODEL_DIR REFERENCE_JSON [EMBEDDINGS_F32] BATCH: texts from the reference's
# "sentences", embeddings from its "embeddings" or from the .f32 file.
check_embed() {
  local dir=$1 ref=$2 f32=$3 batch=$4
  python3 -c 'import json,sys; [print(s) for s in json.load(open(sys.argv[1]))["sentences"]]' \
    "$ref" >"$work/embed_in.txt" || { fail "embed: cannot read $ref"; return; }
  expect 0 "embed -m $(basename "$dir") --batch $batch" "$tfm" embed -m "$dir" --batch "$batch" -t 2 \
    <"$work/embed_in.txt"
  python3 - "$work/out" "$ref" "$f32" "$work/embed_in.txt" <<'PY' || fail "embed -m $dir: output check"
import json, math, sys
out, ref, f32, texts = sys.argv[1:5]
lines = open(out).read().splitlines()
n = len(open(texts).read().splitlines())
assert len(lines) == n, f"{len(lines)} output lines for {n} texts"
r = json.load(open(ref))
if f32:
    import numpy as np
    want = np.fromfile(f32, "<f4").reshape(n, -1).tolist()
else:
    want = r["embeddings"]
worst = 1.0
for i, (line, w) in enumerate(zip(lines, want)):
    v = json.loads(line)
    assert isinstance(v, list) and len(v) == len(w) and all(isinstance(x, float) for x in v), i
    norm = math.sqrt(sum(x * x for x in v))
    assert abs(norm - 1) < 1e-5, (i, norm)
    cos = sum(a * b for a, b in zip(v, w)) / norm / math.sqrt(sum(b * b for b in w))
    assert cos >= 0.9999, (i, cos)
    worst = min(worst, cos)
print(f"embed: {n} lines of {len(want[0])} numbers, unit norm, min cosine to the numpy "
      f"reference 1 - {1 - worst:.2e}")
PY
}
if python3 -c "import json" 2>/dev/null; then
  check_embed "$bert/tiny" "$bert/tiny_reference.json" "" 4
  minilm=${TFM_MODEL_DIR:-$HOME/.cache/typeformer/models}/all-minilm-l6-v2
  if [ -f "$minilm/model.safetensors" ] && python3 -c "import numpy" 2>/dev/null; then
    check_embed "$minilm" "$bert/reference.json" "$bert/reference_embeddings.f32" 8
  else
    echo "note: all-MiniLM-L6-v2 (or numpy) is absent; its embed checks are skipped"
  fi
else
  echo "note: python3 missing; embed output checks not run"
fi
printf 'one\ntwo\r\n\nthree' | "$tfm" embed -m "$bert/tiny" >"$work/out" 2>"$work/err" ||
  fail "embed of CRLF / empty / unterminated lines failed"
[ "$(wc -l <"$work/out")" -eq 4 ] || fail "embed: 4 input lines did not give 4 output lines"
# ---- end of tfm embed --------------------------------------------------------------------

if [ $failures -ne 0 ]; then
  echo "tfm cli test: $failures failure(s)"
  exit 1
fi
echo "tfm cli test: all checks passed"
