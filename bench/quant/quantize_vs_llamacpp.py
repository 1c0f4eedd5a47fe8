#!/usr/bin/env python3
"""`tfm quantize` against llama.cpp's quantizer on the same F16 file: perplexity and time.

    python3 bench/quant/quantize_vs_llamacpp.py TFM_BINARY MODEL.gguf
        [--types q8_0,q4_0,q4_1,q4_k] [--threads 2] [--ctx 512] [--text FILE]
        [--min-tokens 20000] [--max-tokens 24576] [--work DIR] [--llamacpp-ppl]

MODEL is the F16 file, or any GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) that is first turned
into F16 with `tfm convert --type f16` (dequantized, rounded to f16, 1-D tensors F32), as
bench/infer/vs_llamacpp.py does. For each type the F16 file is quantized twice:
  - ours:      `tfm quantize F16 OUT TYPE -t THREADS` (wall time of the process);
  - llama.cpp: llama_cpp.llama_model_quantize with llama_model_quantize_default_params()
               (ftype set, nthread = THREADS; the library bundled with llama-cpp-python),
               wall time of the call;
and both files are compared tensor by tensor (same type? same bytes?), then scored with
`tfm perplexity -m FILE -f TEXT --ctx CTX` (llama-perplexity's definition), on the text of
bench/infer/vs_llamacpp.py (its default_text: Debian `fortunes` files, cut to whole lines under
--max-tokens llama.cpp tokens). --llamacpp-ppl also scores both files with llama.cpp
(vs_llamacpp.llamacpp_perplexity). Prints Markdown tables.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "infer"))
import vs_llamacpp  # noqa: E402  (default_text, llamacpp_perplexity)

FTYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q4_k": 15, "q4_k_m": 15,
          "q6_k": 18}


def tfm_perplexity(tfm, model, text_path, ctx, threads):
    t0 = time.time()
    r = subprocess.run([tfm, "perplexity", "-m", model, "-f", text_path, "--ctx", str(ctx),
                        "-t", str(threads)], capture_output=True, text=True)
    secs = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"tfm perplexity {model} failed: {r.stderr}")
    m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", r.stdout.strip().splitlines()[-1])
    return float(m.group(1)), float(m.group(2)), secs


def compare_files(a_path, b_path):
    import gguf
    a, b = gguf.GGUFReader(a_path), gguf.GGUFReader(b_path)
    tb = {t.name: t for t in b.tensors}
    same_type = same_bytes = 0
    for t in a.tensors:
        o = tb.get(t.name)
        if o is None:
            continue
        same_type += int(t.tensor_type == o.tensor_type)
        same_bytes += int(np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1),
                                         np.asarray(o.data).view(np.uint8).reshape(-1)))
    return same_type, same_bytes, len(a.tensors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm")
    ap.add_argument("model")
    ap.add_argument("--types", default="q8_0,q4_0,q4_1,q4_k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--text")
    ap.add_argument("--min-tokens", type=int, default=20000)
    ap.add_argument("--max-tokens", type=int, default=24576)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                   "tfm_quantize_vs_llamacpp"))
    ap.add_argument("--llamacpp-ppl", action="store_true")
    a = ap.parse_args()
    import llama_cpp

    os.makedirs(a.work, exist_ok=True)
    import gguf
    ft = gguf.GGUFReader(a.model).fields.get("general.file_type")
    f16 = a.model
    if ft is None or int(ft.parts[-1][0]) != 1:
        f16 = os.path.join(a.work, "model.f16.gguf")
        r = subprocess.run([a.tfm, "convert", a.model, f16, "--type", "f16"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"tfm convert failed: {r.stderr}")

    # The text, cut to whole lines under --max-tokens (as vs_llamacpp.py does).
    text = open(a.text, encoding="utf-8").read() if a.text else vs_llamacpp.default_text(0)
    tok = llama_cpp.Llama(model_path=f16, vocab_only=True, verbose=False)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(tok.model)))
    ids = tok.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    if len(ids) > a.max_tokens:
        kept, n = [], 0
        for line in text.split("\n"):
            n += len(tok.tokenize((line + "\n").encode("utf-8"), add_bos=False, special=False))
            if n > a.max_tokens:
                break
            kept.append(line)
        text = "\n".join(kept) + "\n"
        ids = tok.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    if len(ids) < a.min_tokens:
        sys.exit(f"the text has {len(ids)} tokens, fewer than --min-tokens {a.min_tokens}")
    text_path = os.path.join(a.work, "text.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(text)

    rows = []
    base_ppl = tfm_perplexity(a.tfm, f16, text_path, a.ctx, a.threads)
    for typ in a.types.split(","):
        ours = os.path.join(a.work, f"ours.{typ}.gguf")
        theirs = os.path.join(a.work, f"llamacpp.{typ}.gguf")
        t0 = time.time()
        r = subprocess.run([a.tfm, "quantize", f16, ours, typ, "-t", str(a.threads), "--json"],
                           capture_output=True, text=True)
        t_ours = time.time() - t0
        if r.returncode != 0:
            sys.exit(f"tfm quantize {typ} failed: {r.stderr}")
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = FTYPES[typ]
        p.nthread = a.threads
        t0 = time.time()
        rc = llama_cpp.llama_model_quantize(f16.encode(), theirs.encode(), p)
        t_theirs = time.time() - t0
        if rc != 0:
            sys.exit(f"llama_model_quantize {typ} failed")
        same_type, same_bytes, n = compare_files(ours, theirs)
        ppl_o = tfm_perplexity(a.tfm, ours, text_path, a.ctx, a.threads)
        ppl_t = tfm_perplexity(a.tfm, theirs, text_path, a.ctx, a.threads)
        lc = None
        if a.llamacpp_ppl:
            bos = tok.token_bos()
            lo = vs_llamacpp.llamacpp_perplexity(ours, ids, a.ctx, a.threads, add_bos, bos)
            lt = vs_llamacpp.llamacpp_perplexity(theirs, ids, a.ctx, a.threads, add_bos, bos)
            lc = (lo[0], lt[0])
        rows.append((typ, ppl_o, ppl_t, t_ours, t_theirs, same_type, same_bytes, n,
                     os.path.getsize(ours), os.path.getsize(theirs), lc))
        print(f"{typ}: done", file=sys.stderr)

    print(f"model {os.path.basename(a.model)} -> F16 {os.path.basename(f16)}; {len(ids)} tokens, "
          f"ctx {a.ctx}, {len(ids) // a.ctx} windows; {a.threads} threads; "
          f"llama-cpp-python {llama_cpp.__version__}")
    print(f"F16 (tfm perplexity): {base_ppl[0]:.4f} +/- {base_ppl[1]:.5f}\n")
    print("| type | PPL ours | PPL llama.cpp's file | ratio | same type / same bytes | "
          "MiB ours / llama.cpp | quantize s ours / llama.cpp |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (typ, po, pt, to, tt, st, sb, n, so, sl, lc) in rows:
        print(f"| {typ.upper()} | {po[0]:.4f} +/- {po[1]:.4f} | {pt[0]:.4f} +/- {pt[1]:.4f} | "
              f"{po[0] / pt[0]:.5f} ({100 * (po[0] / pt[0] - 1):+.3f}%) | {st}/{n} / {sb}/{n} | "
              f"{so / 2**20:.1f} / {sl / 2**20:.1f} | {to:.2f} / {tt:.2f} |")
    if a.llamacpp_ppl:
        print("\nllama.cpp's perplexity of the same files:\n")
        print("| type | ours | llama.cpp's file | ratio |")
        print("| --- | ---: | ---: | ---: |")
        for (typ, *_rest, lc) in rows:
            print(f"| {typ.upper()} | {lc[0]:.4f} | {lc[1]:.4f} | {lc[0] / lc[1]:.5f} |")


if __name__ == "__main__":
    main()
