#!/usr/bin/env python3
"""`tfm quantize` against gguf-py (and llama.cpp when asked).

    python3 check_quantize.py TFM_BINARY WORK_DIR [fixtures|smollm2]   (default: both)

1. Writes two small llama GGUFs with gguf-py's GGUFWriter (not typeformer's writer): 4 layers,
   n_embd 256, n_ff 512, vocab 128, tokenizer keys; one F32 with an untied output, one F16 with
   the output tied to token_embd.
2. Runs `tfm quantize IN OUT TYPE --json -t 3` for q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k, f16,
   bf16 and reads OUT back with gguf.GGUFReader: every input key kept with its value,
   general.file_type = gguf.LlamaFileType, tensor names/shapes in order, the expected type of
   every tensor (llama.cpp's rules restated here), the bytes of every Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/
   BF16 tensor equal to gguf.quants.quantize of the input rows (F16: numpy's astype), the
   reported RMSE equal to numpy's of gguf.quants.dequantize(OUT) against the input; -t 1 gives
   the same file; a quantized input is requantized from its dequantized values.
3. Error exits: unknown TYPE 2, non-GGUF input 1, missing input 1, missing argument 2.
4. With SmolLM2-135M-Instruct cached (TFM_MODEL_DIR or ~/.cache/typeformer/models): F16 through
   `tfm convert --type f16`, then q8_0, q4_0 and q4_k; checks types and token_embd. With
   TFM_LIVE_PEERS=1 and llama-cpp-python: llama.cpp loads each file, tokenizes, its logits are
   finite and the greedy continuation of "The capital of France is" contains "Paris"; and
   llama.cpp's own llama_model_quantize of the F16 file gives every tensor the type we chose
   (and, for Q8_0 / Q4_0, how many tensors have identical bytes is printed).
Prints "TFM_SKIP: ..." and exits 0 when numpy or gguf is missing, or (smollm2) the model is
absent; without TFM_LIVE_PEERS or llama-cpp-python the llama.cpp part is left out with a note.
"""
import json
import os
import subprocess
import sys

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize, quantize
except ImportError as e:  # pragma: no cover
    print(f"TFM_SKIP: python packages missing ({e})")
    sys.exit(0)

T = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)


N_LAYER, N_EMBD, N_FF, N_VOCAB = 4, 256, 512, 128


def write_model(path, dtype, tied, seed):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(N_LAYER)
    w.add_context_length(64)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}".encode() for i in range(N_VOCAB)])
    w.add_token_types([1] * N_VOCAB)
    w.add_token_merges(["t 1", "t 2"])
    w.add_bos_token_id(1)
    w.add_string("general.name", "quant_cli fixture")
    w.add_file_type(FT.ALL_F32 if dtype == np.float32 else FT.MOSTLY_F16)

    def mat(name, rows, cols, scale=0.05):
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if name.endswith("attn_q.weight"):
            a[0, 5] = 1.5  # one outlier
        w.add_tensor(name, a.astype(dtype))

    def vec(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", N_VOCAB, N_EMBD)
    for l in range(N_LAYER):
        b = f"blk.{l}."
        vec(b + "attn_norm.weight", N_EMBD)
        mat(b + "attn_q.weight", N_EMBD, N_EMBD)
        mat(b + "attn_k.weight", N_EMBD // 2, N_EMBD)
        mat(b + "attn_v.weight", N_EMBD // 2, N_EMBD)
        mat(b + "attn_output.weight", N_EMBD, N_EMBD)
        vec(b + "ffn_norm.weight", N_EMBD)
        mat(b + "ffn_gate.weight", N_FF, N_EMBD)
        mat(b + "ffn_up.weight", N_FF, N_EMBD)
        mat(b + "ffn_down.weight", N_EMBD, N_FF)
    vec("output_norm.weight", N_EMBD)
    if not tied:
        mat("output.weight", N_VOCAB, N_EMBD)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


PRESETS = {  # name: (file type, base type, k mix)
    "q8_0": (FT.MOSTLY_Q8_0, T.Q8_0, False),
    "q4_0": (FT.MOSTLY_Q4_0, T.Q4_0, False),
    "q4_1": (FT.MOSTLY_Q4_1, T.Q4_1, False),
    "q5_0": (FT.MOSTLY_Q5_0, T.Q5_0, False),
    "q5_1": (FT.MOSTLY_Q5_1, T.Q5_1, False),
    "q4_k": (FT.MOSTLY_Q4_K_M, T.Q4_K, True),
    "q6_k": (FT.MOSTLY_Q6_K, T.Q6_K, False),
    "f16": (FT.MOSTLY_F16, T.F16, False),
    "bf16": (FT.MOSTLY_BF16, T.BF16, False),
}


def expected_type(name, n_dims, in_type, preset, tied):
    """llama.cpp's choice (src/llama-quant.cpp, default params) for the fixture's tensors."""
    _, base, kmix = PRESETS[preset]
    if n_dims < 2 or name.endswith("_norm.weight"):
        return in_type
    if base in (T.F16, T.BF16):
        return base
    t = base
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return T.Q8_0 if base == T.Q8_0 else T.Q6_K  # rows of 256 fit every block
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if kmix and ("attn_v.weight" in name or "ffn_down" in name) and use_more_bits(layer, N_LAYER):
        t = T.Q6_K
    return t


def field_value(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]) for i in f.data], f.types


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def floats(t):
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)


def check_file(tfm, src, dst, preset, tied, threads=3):
    r = run([tfm, "quantize", src, dst, preset, "--json", "-t", str(threads)])
    check(r.returncode == 0, f"{preset}: exit {r.returncode}: {r.stderr.strip()}")
    if r.returncode != 0:
        return None
    rep = json.loads(r.stdout)
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    ft, base, _ = PRESETS[preset]
    check(int(b.fields["general.file_type"].parts[-1][0]) == int(ft), f"{preset}: file_type")
    check(int(b.fields["general.quantization_version"].parts[-1][0]) == 2,
          f"{preset}: quantization_version")
    for key, f in a.fields.items():
        if key.startswith("GGUF.") or key in ("general.file_type", "general.quantization_version"):
            continue
        check(key in b.fields, f"{preset}: key {key} kept")
        if key in b.fields:
            check(field_value(a, key) == field_value(b, key), f"{preset}: value of {key}")
    check(len(a.tensors) == len(b.tensors), f"{preset}: tensor count")
    by_name = {t["name"]: t for t in rep["tensors"]}
    for ta, tb in zip(a.tensors, b.tensors):
        what = f"{preset} {tb.name}"
        check(ta.name == tb.name and list(ta.shape) == list(tb.shape), f"{what}: name/shape")
        want = expected_type(ta.name, len(ta.shape), ta.tensor_type, preset, tied)
        check(tb.tensor_type == want, f"{what}: type {tb.tensor_type.name}, want {want.name}")
        x = floats(ta)
        rows = x.reshape(-1, int(ta.shape[0]))
        got = np.asarray(tb.data).view(np.uint8).reshape(-1)
        if tb.tensor_type == ta.tensor_type:
            check(np.array_equal(got, np.asarray(ta.data).view(np.uint8).reshape(-1)),
                  f"{what}: copied bytes")
        elif tb.tensor_type in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.BF16):
            ref = np.asarray(quantize(rows, tb.tensor_type)).view(np.uint8).reshape(-1)
            check(np.array_equal(got, ref), f"{what}: bytes differ from gguf.quants.quantize")
        elif tb.tensor_type == T.F16:
            ref = rows.astype(np.float16).view(np.uint8).reshape(-1)
            check(np.array_equal(got, ref), f"{what}: bytes differ from numpy float16")
        y = floats(tb)
        rmse = float(np.sqrt(np.mean((y.astype(np.float64) - x.astype(np.float64)) ** 2)))
        rep_t = by_name[tb.name]
        check(abs(rep_t["rmse"] - rmse) <= 1e-6 * max(rmse, 1e-30), f"{what}: rmse {rep_t['rmse']} vs {rmse}")
        check(rep_t["type_out"] == tb.tensor_type.name, f"{what}: report type")
        if tb.tensor_type in (T.Q4_K, T.Q6_K):  # sanity: relative error of 4/6-bit quantization
            rel = rmse / float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
            check(rel < (0.12 if tb.tensor_type == T.Q4_K else 0.03), f"{what}: rel rmse {rel:.4f}")
    check(rep["file_bytes_out"] == os.path.getsize(dst), f"{preset}: file size in report")
    return rep


def main():
    tfm, work = sys.argv[1], sys.argv[2]
    part = sys.argv[3] if len(sys.argv) > 3 else "all"
    os.makedirs(work, exist_ok=True)
    if part in ("fixtures", "all"):
        fixtures(tfm, work)
    if part in ("smollm2", "all"):
        smollm2(tfm, work)
    if FAILS:
        print(f"{len(FAILS)} failures")
        sys.exit(1)
    print("all checks passed")


def fixtures(tfm, work):
    f32 = os.path.join(work, "fixture_f32.gguf")
    f16 = os.path.join(work, "fixture_f16_tied.gguf")
    write_model(f32, np.float32, tied=False, seed=1)
    write_model(f16, np.float16, tied=True, seed=2)
    n_files = 0
    for src, tied in ((f32, False), (f16, True)):
        for preset in PRESETS:
            dst = os.path.join(work, f"{os.path.basename(src)[:-5]}.{preset}.gguf")
            rep = check_file(tfm, src, dst, preset, tied)
            n_files += 1
            if preset in ("q4_0", "q4_k") and rep is not None:
                one = dst + ".t1.gguf"
                r = run([tfm, "quantize", src, one, preset.upper(), "-t", "1"])
                check(r.returncode == 0 and open(one, "rb").read() == open(dst, "rb").read(),
                      f"{preset}: -t 1 and -t 3 give the same file")
    # requantization: Q4_0 -> Q8_0 equals gguf-py's Q8_0 of the dequantized Q4_0 rows
    q4 = os.path.join(work, "fixture_f32.q4_0.gguf")
    q8 = os.path.join(work, "requant.q8_0.gguf")
    r = run([tfm, "quantize", q4, q8, "Q8_0", "--json"])
    check(r.returncode == 0 and json.loads(r.stdout)["requantized"], "requantize exit/flag")
    a, b = gguf.GGUFReader(q4), gguf.GGUFReader(q8)
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.tensor_type == T.Q4_0:
            rows = floats(ta).reshape(-1, int(ta.shape[0]))
            ref = np.asarray(quantize(rows, T.Q8_0)).view(np.uint8).reshape(-1)
            check(tb.tensor_type == T.Q8_0 and
                  np.array_equal(np.asarray(tb.data).view(np.uint8).reshape(-1), ref),
                  f"requantized {ta.name}")
    # error exits
    bad = os.path.join(work, "not_gguf.bin")
    open(bad, "wb").write(b"hello, not a gguf file at all")
    for args, code in (([f32, q8, "q3_k_xl"], 2), ([bad, q8, "q8_0"], 1),
                       ([os.path.join(work, "absent.gguf"), q8, "q8_0"], 1), ([f32, q8], 2)):
        r = run([tfm, "quantize"] + args)
        check(r.returncode == code and len(r.stderr.strip().splitlines()) == 1,
              f"exit {r.returncode} (want {code}) and one line for {args}: {r.stderr!r}")
    print(f"fixtures: {n_files} quantized files checked against gguf-py")


def smollm2(tfm, work):
    base = os.environ.get("TFM_MODEL_DIR") or os.path.expanduser("~/.cache/typeformer/models")
    model = os.path.join(base, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(model):
        print(f"TFM_SKIP: {model} is absent (scripts/setup fetches it)")
        return
    f16 = os.path.join(work, "smollm2.f16.gguf")
    if not os.path.exists(f16):
        r = run([tfm, "convert", model, f16, "--type", "f16"])
        check(r.returncode == 0, f"tfm convert: {r.stderr}")
    outs = {}
    for preset in ("q8_0", "q4_0", "q4_k"):
        dst = os.path.join(work, f"smollm2.{preset}.gguf")
        r = run([tfm, "quantize", f16, dst, preset, "--json", "-t", "2"])
        check(r.returncode == 0, f"smollm2 {preset}: {r.stderr}")
        rep = json.loads(r.stdout)
        types = {t["name"]: t["type_out"] for t in rep["tensors"]}
        # tied embeddings, rows of 576: Q6_K wanted, 576 % 256 != 0 -> Q8_0
        check(types["token_embd.weight"] == "Q8_0", f"smollm2 {preset}: token_embd")
        outs[preset] = (dst, types)
        print(f"smollm2 {preset}: {rep['file_bytes_out'] / 2**20:.1f} MiB, "
              f"{rep['bpw_out']:.2f} bpw, {rep['seconds']:.1f} s")
    if not os.environ.get("TFM_LIVE_PEERS"):
        print("note: the llama.cpp checks are opt-in (TFM_LIVE_PEERS=1); not run")
        return
    try:
        import llama_cpp
    except ImportError:
        print("note: llama-cpp-python is not installed; the llama.cpp checks did not run")
        return
    src = {t.name: floats(t).astype(np.float64) for t in gguf.GGUFReader(f16).tensors}

    def greedy(path):
        m = llama_cpp.Llama(model_path=path, n_ctx=128, n_threads=2, logits_all=True,
                            verbose=False)
        ids = m.tokenize(b"The capital of France is", add_bos=False)
        check(len(ids) == 5, f"llama.cpp tokenizes {path}: {ids}")
        m.eval(ids)
        check(bool(np.isfinite(np.asarray(m.scores[:len(ids)])).all()),
              f"llama.cpp logits of {path} finite")
        return m.create_completion("The capital of France is", max_tokens=8, temperature=0.0,
                                   top_k=1)["choices"][0]["text"]

    for preset, (dst, types) in outs.items():
        # llama.cpp's own quantization of the same F16 file
        ftype = {"q8_0": FT.MOSTLY_Q8_0, "q4_0": FT.MOSTLY_Q4_0, "q4_k": FT.MOSTLY_Q4_K_M}[preset]
        theirs = os.path.join(work, f"smollm2.{preset}.llamacpp.gguf")
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = int(ftype)
        p.nthread = 2
        rc = llama_cpp.llama_model_quantize(f16.encode(), theirs.encode(), p)
        check(rc == 0, f"llama_model_quantize {preset}")
        ours_out, theirs_out = greedy(dst), greedy(theirs)
        print(f"llama.cpp on our {preset}: 'The capital of France is{ours_out}'")
        # SmolLM2-135M itself says Paris at Q8_0 and Q4_K_M; at Q4_0 (llama.cpp's file too) not.
        if preset != "q4_0":
            check("Paris" in ours_out, f"greedy continuation of {preset} has Paris: {ours_out!r}")
        check(ours_out == theirs_out,
              f"{preset}: llama.cpp continues ours {ours_out!r}, its own {theirs_out!r}")
        ours_r, theirs_r = gguf.GGUFReader(dst), gguf.GGUFReader(theirs)
        ttypes = {t.name: t.tensor_type.name for t in theirs_r.tensors}
        same_type = sum(types[n] == ttypes.get(n) for n in types)
        check(same_type == len(types), f"{preset}: {len(types) - same_type} tensor types differ "
              f"from llama.cpp's: " + str([(n, types[n], ttypes.get(n)) for n in types
                                           if types[n] != ttypes.get(n)][:5]))
        tb = {t.name: t for t in theirs_r.tensors}
        same, worst = 0, (0.0, "")
        for t in ours_r.tensors:
            o = tb.get(t.name)
            if o is None:
                continue
            a = np.asarray(t.data).view(np.uint8).reshape(-1)
            b = np.asarray(o.data).view(np.uint8).reshape(-1)
            if np.array_equal(a, b):
                same += 1
                continue
            x = src[t.name]
            e_ours = float(np.sqrt(np.mean((floats(t) - x) ** 2)))
            e_theirs = float(np.sqrt(np.mean((floats(o) - x) ** 2)))
            ratio = e_ours / e_theirs if e_theirs > 0 else float("inf")
            worst = max(worst, (ratio, f"{t.name} ({t.tensor_type.name})"))
            # Q4_K / Q6_K: bytes may differ (measured: 30 ffn_down tensors, RMSE up to 1.00016x)
            check(ratio <= 1.001, f"{preset} {t.name}: rmse {e_ours} vs llama.cpp's {e_theirs}")
        print(f"{preset}: {same_type}/{len(types)} tensor types and {same}/{len(types)} tensors' "
              f"bytes equal llama.cpp's quantization of the same F16 file"
              + (f"; the others' RMSE / llama.cpp's RMSE <= {worst[0]:.6f} ({worst[1]})"
                 if worst[1] else ""))

if __name__ == "__main__":
    main()
