#!/usr/bin/env python3
"""K-quants and importance matrices: `tfm imatrix` + `tfm quantize [--imatrix]` against
llama.cpp's quantizer given the same importance matrix, on the same F16 file.

    python3 bench/quant/imatrix_vs_llamacpp.py TFM_BINARY MODEL.f16.gguf
        [--types q4_k_m,q3_k_m] [--calib FILE...] [--chunks 40] [--threads 2] [--ctx 512]
        [--eval FILE] [--max-tokens 24576] [--work DIR] [--no-ppl]

1. `tfm imatrix -m F16 -f CALIB -o imatrix.gguf -c CTX --chunks N` (CALIB: the repository's
   docs/*.md concatenated unless --calib is given).
2. For each type, without and with the imatrix:
     ours      `tfm quantize F16 OUT TYPE [--imatrix imatrix.gguf] --json`;
     llama.cpp llama_cpp.llama_model_quantize (the library bundled with llama-cpp-python) with
               llama_model_quantize_default_params(), ftype set and, with the imatrix,
               params.imatrix = every entry of imatrix.gguf as llama-quantize's load_imatrix
               normalizes it (in_sum2 / count).
   The two files are compared tensor by tensor (same type, same bytes) and per quantized type
   the RMSE against the F16 weights (sum over that type's tensors) is given for both sides.
3. Perplexity with `tfm perplexity --ctx CTX` on an evaluation text other than the calibration
   text (default: Debian `fortunes`, as bench/infer/vs_llamacpp.py, cut to --max-tokens).
Prints Markdown tables.
"""
import argparse
import ctypes
import glob
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "infer"))
import vs_llamacpp  # noqa: E402

FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11,
          "q3_k_m": 12, "q3_k": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q4_k": 15,
          "q5_k_s": 16, "q5_k_m": 17, "q5_k": 17, "q6_k": 18}


def run(cmd):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r, time.time() - t0


def tfm_perplexity(tfm, model, text_path, ctx, threads):
    r, secs = run([tfm, "perplexity", "-m", model, "-f", text_path, "--ctx", str(ctx), "-t",
                   str(threads)])
    m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", r.stdout.strip().splitlines()[-1])
    return float(m.group(1)), float(m.group(2))


def read_imatrix(path):
    """name -> importance vector as llama-quantize's load_imatrix computes it (GGUF form)."""
    import gguf

    r = gguf.GGUFReader(path)
    t = {x.name: x for x in r.tensors}
    out = {}
    for n in t:
        if not n.endswith(".in_sum2"):
            continue
        name = n[: -len(".in_sum2")]
        s = np.asarray(t[n].data, dtype=np.float32).reshape(-1)
        c = np.asarray(t[name + ".counts"].data, dtype=np.float32).reshape(-1)
        ne0 = s.size // c.size
        e = np.empty_like(s)
        for j, cnt in enumerate(c):
            cnt = float(np.int64(np.round(cnt)))
            e[j * ne0:(j + 1) * ne0] = s[j * ne0:(j + 1) * ne0] / np.float32(cnt) if cnt > 0 else 1
        out[name] = np.ascontiguousarray(e, dtype=np.float32)
    return out


def llamacpp_quantize(src, dst, ftype, threads, imatrix):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = threads
    keep = []
    if imatrix is not None:
        arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, v) in enumerate(sorted(imatrix.items())):
            nm = name.encode()
            keep.append((nm, v))
            arr[i].name = nm
            arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = v.size
        arr[len(imatrix)].name = None
        keep.append(arr)
        p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    t0 = time.time()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize {dst} failed ({rc})")
    return time.time() - t0


def compare(ours, theirs, f16):
    """Per output type: tensors, same type, same bytes, RMSE ours, RMSE llama.cpp."""
    import gguf
    from gguf.quants import dequantize

    a, b, w = (gguf.GGUFReader(x) for x in (ours, theirs, f16))
    tb = {t.name: t for t in b.tensors}
    tw = {t.name: t for t in w.tensors}
    stats = {}
    diff_types = []
    for t in a.tensors:
        o, ref = tb[t.name], tw[t.name]
        if t.tensor_type != o.tensor_type:
            diff_types.append(f"{t.name}: {t.tensor_type.name} vs {o.tensor_type.name}")
        if t.tensor_type == ref.tensor_type:
            continue  # copied
        s = stats.setdefault(t.tensor_type.name, [0, 0, 0, 0.0, 0.0, 0])
        s[0] += 1
        s[1] += int(t.tensor_type == o.tensor_type)
        ba = np.asarray(t.data).view(np.uint8).reshape(-1)
        bb = np.asarray(o.data).view(np.uint8).reshape(-1)
        s[2] += int(t.tensor_type == o.tensor_type and np.array_equal(ba, bb))
        x = dequantize(np.asarray(ref.data), ref.tensor_type).astype(np.float64).reshape(-1)
        ya = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64).reshape(-1)
        s[3] += float(((ya - x) ** 2).sum())
        if t.tensor_type == o.tensor_type:
            yb = dequantize(np.asarray(o.data), o.tensor_type).astype(np.float64).reshape(-1)
            s[4] += float(((yb - x) ** 2).sum())
        s[5] += x.size
    return stats, diff_types


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm")
    ap.add_argument("model", help="the F16 GGUF")
    ap.add_argument("--types", default="q4_k_m,q3_k_m")
    ap.add_argument("--calib", nargs="*")
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--eval")
    ap.add_argument("--max-tokens", type=int, default=24576)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                   "tfm_imatrix_vs_llamacpp"))
    ap.add_argument("--no-ppl", action="store_true")
    ap.add_argument("--imatrix", help="reuse this imatrix file instead of running tfm imatrix")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    calib_files = a.calib or sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    calib = os.path.join(a.work, "calib.txt")
    with open(calib, "w", encoding="utf-8") as f:
        for p in calib_files:
            f.write(open(p, encoding="utf-8", errors="replace").read() + "\n")
    imat = a.imatrix or os.path.join(a.work, "imatrix.gguf")
    if not a.imatrix:
        r, t_imat = run([a.tfm, "imatrix", "-m", a.model, "-f", calib, "-o", imat, "-c",
                         str(a.ctx), "--chunks", str(a.chunks), "-t", str(a.threads)])
        print(f"tfm imatrix: {len(calib_files)} files ({os.path.getsize(calib)} bytes), "
              f"{a.chunks} windows of {a.ctx}: {t_imat:.1f} s", file=sys.stderr)
    im = read_imatrix(imat)

    text_path = None
    if not a.no_ppl:
        import llama_cpp

        text = open(a.eval, encoding="utf-8").read() if a.eval else vs_llamacpp.default_text(0)
        tok = llama_cpp.Llama(model_path=a.model, vocab_only=True, verbose=False)
        kept, n = [], 0
        for line in text.split("\n"):
            n += len(tok.tokenize((line + "\n").encode("utf-8"), add_bos=False, special=False))
            if n > a.max_tokens:
                break
            kept.append(line)
        text_path = os.path.join(a.work, "eval.txt")
        with open(text_path, "w", encoding="utf-8") as f:
            f.write("\n".join(kept) + "\n")
        print(f"eval text: {n} tokens (llama.cpp tokenizer)", file=sys.stderr)

    ppl_rows, rmse_rows = [], []
    if text_path:
        p, e = tfm_perplexity(a.tfm, a.model, text_path, a.ctx, a.threads)
        ppl_rows.append(("F16", "-", p, e, None, None))
    for typ in a.types.split(","):
        for with_im in (False, True):
            tag = f"{typ}{'.imat' if with_im else ''}"
            ours = os.path.join(a.work, f"ours.{tag}.gguf")
            theirs = os.path.join(a.work, f"llamacpp.{tag}.gguf")
            cmd = [a.tfm, "quantize", a.model, ours, typ, "-t", str(a.threads), "--json"]
            if with_im:
                cmd[5:5] = ["--imatrix", imat]
            r, t_ours = run(cmd)
            t_theirs = llamacpp_quantize(a.model, theirs, FTYPES[typ], a.threads,
                                         im if with_im else None)
            stats, diff_types = compare(ours, theirs, a.model)
            for ty, s in sorted(stats.items()):
                ro = (s[3] / s[5]) ** 0.5
                rl = (s[4] / s[5]) ** 0.5 if s[1] == s[0] else float("nan")
                rmse_rows.append((typ.upper(), "yes" if with_im else "no", ty, s[0], s[1], s[2],
                                  ro, rl))
            if diff_types:
                print(f"{tag}: {len(diff_types)} tensors of another type: {diff_types[:5]}",
                      file=sys.stderr)
            print(f"{tag}: quantize {t_ours:.1f} s (tfm) / {t_theirs:.1f} s (llama.cpp)",
                  file=sys.stderr)
            identical = all(st == n and sb == n for n, st, sb, _, _, _ in
                            [tuple(v) for v in stats.values()]) and not diff_types
            print(f"{tag}: files' quantized tensors identical: {identical}", file=sys.stderr)
            if text_path:
                po, eo = tfm_perplexity(a.tfm, ours, text_path, a.ctx, a.threads)
                # byte-identical tensors give the same perplexity: scored once
                pl, el = (po, eo) if identical else tfm_perplexity(a.tfm, theirs, text_path,
                                                                   a.ctx, a.threads)
                ppl_rows.append((typ.upper(), "yes" if with_im else "no", po, eo, pl, el))

    print("\n| type | imatrix | tensor type | tensors | same type | same bytes | RMSE tfm | "
          "RMSE llama.cpp | ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for t, im_, ty, n, st, sb, ro, rl in rmse_rows:
        print(f"| {t} | {im_} | {ty} | {n} | {st} | {sb} | {ro:.4e} | {rl:.4e} | {ro / rl:.4f} |")
    if ppl_rows:
        print("\n| file | imatrix | PPL tfm-quantized | PPL llama.cpp-quantized |")
        print("|---|---|---:|---:|")
        for t, im_, p, e, pl, el in ppl_rows:
            other = f"{pl:.4f} ± {el:.4f}" if pl is not None else "-"
            print(f"| {t} | {im_} | {p:.4f} ± {e:.4f} | {other} |")


if __name__ == "__main__":
    main()
