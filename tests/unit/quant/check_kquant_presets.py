#!/usr/bin/env python3
"""`tfm quantize` (every K preset, Q4_0, with and without an importance matrix) against
llama.cpp's llama_model_quantize on the same files: every tensor's type and bytes must match.

    python3 check_kquant_presets.py TFM_BINARY WORK_DIR

Models (gguf-py's GGUFWriter): A: 16 layers, n_embd 256, n_ff 512, 4 heads / 2 kv heads (gqa
2), untied output, F16; B: 8 layers, n_embd 288 (rows that are not whole 256-blocks: the
fallbacks), n_ff 512, 4 heads / 1 kv head (gqa 4), output tied to token_embd, F32.
Importance matrices: llama.cpp's GGUF form written here with gguf-py (NAME.in_sum2 [cols, 1],
NAME.counts [1, 1], imatrix.* keys), and the legacy .dat form written with struct; llama.cpp
is given the same vectors (in_sum2 / count; legacy sums / ncall) through
llama_model_quantize_params.imatrix, as llama-quantize's load_imatrix prepares them.
Prints "TFM_SKIP: ..." and exits 0 without numpy, gguf or llama-cpp-python.
"""
import ctypes
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    import gguf
    import llama_cpp
except ImportError as e:  # pragma: no cover
    print(f"TFM_SKIP: python packages missing ({e})")
    sys.exit(0)

FT = gguf.LlamaFileType
FAILS = []
PRESETS = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15,
           "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "q4_0": 2, "q5_0": 8}


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)


def write_model(path, n_layer, n_embd, n_ff, n_kv, tied, dtype, seed):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(n_layer)
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(64)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}".encode() for i in range(64)])
    w.add_token_types([1] * 64)
    w.add_token_merges(["t 1", "t 2"])
    w.add_file_type(FT.ALL_F32 if dtype == np.float32 else FT.MOSTLY_F16)
    hd = n_embd // 4
    mats = {}

    def mat(name, rows, cols):
        a = (rng.standard_t(4, (rows, cols)) * 0.05).astype(np.float32)
        w.add_tensor(name, a.astype(dtype))
        mats[name] = cols

    def vec(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", 64, n_embd)
    for l in range(n_layer):
        b = f"blk.{l}."
        vec(b + "attn_norm.weight", n_embd)
        mat(b + "attn_q.weight", n_embd, n_embd)
        mat(b + "attn_k.weight", hd * n_kv, n_embd)
        mat(b + "attn_v.weight", hd * n_kv, n_embd)
        mat(b + "attn_output.weight", n_embd, n_embd)
        vec(b + "ffn_norm.weight", n_embd)
        mat(b + "ffn_gate.weight", n_ff, n_embd)
        mat(b + "ffn_up.weight", n_ff, n_embd)
        mat(b + "ffn_down.weight", n_embd, n_ff)
    vec("output_norm.weight", n_embd)
    if not tied:
        mat("output.weight", 64, n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {k: v for k, v in mats.items() if k.startswith("blk.")}


def write_imatrix_gguf(path, cols_of, seed):
    """llama-imatrix's GGUF form; returns name -> llama-quantize's vector (in_sum2 / count)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch="", add_architecture=False) if "add_architecture" in \
        gguf.GGUFWriter.__init__.__code__.co_varnames else gguf.GGUFWriter(path, "imatrix")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["random"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    out = {}
    for name in sorted(cols_of):
        count = 1536.0
        s = (rng.gamma(0.6, 1.0, cols_of[name]) * count).astype(np.float32)
        w.add_tensor(name + ".in_sum2", s.reshape(1, -1))
        w.add_tensor(name + ".counts", np.array([[count]], dtype=np.float32))
        out[name] = (s / np.float32(count)).astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def write_imatrix_dat(path, cols_of, seed):
    """The legacy .dat form; returns name -> sums / ncall."""
    rng = np.random.default_rng(seed)
    out = {}
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(cols_of)))
        for name in sorted(cols_of):
            ncall = 7
            s = (rng.gamma(0.6, 1.0, cols_of[name]) * ncall).astype("<f4")
            nb = name.encode()
            f.write(struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, s.size))
            f.write(s.tobytes())
            out[name] = (s / np.float32(ncall)).astype(np.float32)
        f.write(struct.pack("<i", 3) + struct.pack("<i", 6) + b"random")
    return out


def llamacpp_quantize(src, dst, ftype, imatrix):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    keep = []
    if imatrix is not None:
        arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, v) in enumerate(sorted(imatrix.items())):
            v = np.ascontiguousarray(v, dtype=np.float32)
            nb = name.encode()
            keep.append((nb, v))
            arr[i].name = nb
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(imatrix)].name = None
        keep.append(arr)
        p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))


def compare(tag, ours, theirs):
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    tb = {t.name: t for t in b.tensors}
    n = same_type = same_bytes = 0
    for t in a.tensors:
        o = tb.get(t.name)
        check(o is not None, f"{tag}: {t.name} missing in llama.cpp's file")
        if o is None:
            continue
        n += 1
        st = t.tensor_type == o.tensor_type
        check(st, f"{tag}: {t.name}: {t.tensor_type.name} vs llama.cpp {o.tensor_type.name}")
        same_type += int(st)
        sb = st and np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1),
                                   np.asarray(o.data).view(np.uint8).reshape(-1))
        check(sb or not st, f"{tag}: {t.name} ({t.tensor_type.name}): bytes differ")
        same_bytes += int(sb)
    return n, same_type, same_bytes


def main():
    tfm, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    llama_cpp.llama_backend_init()
    models = {
        "A": (16, 256, 512, 2, False, np.float16),
        "B": (8, 288, 512, 1, True, np.float32),
    }
    for m, (nl, ne, nf, nkv, tied, dt) in models.items():
        src = os.path.join(work, f"model_{m}.gguf")
        cols = write_model(src, nl, ne, nf, nkv, tied, dt, seed=ord(m))
        im_gguf = os.path.join(work, f"imatrix_{m}.gguf")
        im_dat = os.path.join(work, f"imatrix_{m}.dat")
        vg = write_imatrix_gguf(im_gguf, cols, seed=ord(m) + 1)
        vd = write_imatrix_dat(im_dat, cols, seed=ord(m) + 2)
        runs = [(p, None, None) for p in PRESETS]
        runs += [(p, im_gguf, vg) for p in PRESETS]
        runs += [("q4_k_m", im_dat, vd), ("q3_k_m", im_dat, vd)]
        for preset, im_path, im in runs:
            tag = f"{m} {preset}" + (f" --imatrix {os.path.basename(im_path)}" if im_path else "")
            ours = os.path.join(work, f"ours_{m}_{preset}.gguf")
            theirs = os.path.join(work, f"llamacpp_{m}_{preset}.gguf")
            cmd = [tfm, "quantize", src, ours, preset, "--json", "-t", "2"]
            if im_path:
                cmd += ["--imatrix", im_path]
            r = subprocess.run(cmd, capture_output=True, text=True)
            check(r.returncode == 0, f"{tag}: tfm exit {r.returncode}: {r.stderr.strip()[:300]}")
            if r.returncode != 0:
                continue
            rep = json.loads(r.stdout)
            if im_path:
                check(rep["n_imatrix"] > 0, f"{tag}: no tensor used the imatrix")
            rc = llamacpp_quantize(src, theirs, PRESETS[preset], im)
            check(rc == 0, f"{tag}: llama_model_quantize returned {rc}")
            if rc != 0:
                continue
            n, st, sb = compare(tag, ours, theirs)
            print(f"{tag}: {st}/{n} tensor types and {sb}/{n} tensors' bytes equal to llama.cpp's"
                  f" ({rep['n_imatrix']} with importance, {rep['n_fallback']} fallbacks)")
    # errors: a truncated imatrix, an imatrix of another model
    bad = os.path.join(work, "truncated.dat")
    with open(os.path.join(work, "imatrix_A.dat"), "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[:50])
    r = subprocess.run([tfm, "quantize", os.path.join(work, "model_A.gguf"),
                        os.path.join(work, "x.gguf"), "q4_k_m", "--imatrix", bad],
                       capture_output=True, text=True)
    check(r.returncode != 0 and "truncated" in r.stderr, f"truncated imatrix: {r.stderr[:200]}")
    r = subprocess.run([tfm, "quantize", os.path.join(work, "model_A.gguf"),
                        os.path.join(work, "x.gguf"), "q4_k_m", "--imatrix",
                        os.path.join(work, "imatrix_B.gguf")], capture_output=True, text=True)
    check(r.returncode != 0 and "imatrix has" in r.stderr,
          f"another model's imatrix: {r.stderr[:200]}")
    if FAILS:
        print(f"{len(FAILS)} failure(s)")
        sys.exit(1)
    print("check_kquant_presets.py: all presets match llama.cpp")


if __name__ == "__main__":
    main()
