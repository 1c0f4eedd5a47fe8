#!/usr/bin/env python3
"""llama.cpp applying a LoRA GGUF written by typeformer vs typeformer's merge (issue 21 item 2).

    python3 tests/data/lora_io/llamacpp_lora_ppl.py --tfm build/tools/tfm \\
        --lora-make build/tests/unit/lora_io/lora_io_make [--work DIR] [--write]
        [--model SmolLM2-135M-Instruct.Q4_1.gguf] [--text FILE] [--tokens 2048] [--ctx 512]
        [--sd 0.045] [--threads 2]

1. `tfm convert MODEL base.gguf --type f32` (SmolLM2-135M-Instruct, Q4_1 dequantized);
2. lora_io_make writes a random adapter (rank 8, alpha 16, A and B ~ N(0, sd^2), seed 7, on
   q/k/v/o/gate/up/down of every layer) with io::save_lora_gguf (adapter.gguf) and
   io::save_peft (adapter_peft/);
3. `tfm merge-lora base.gguf adapter.gguf merged.gguf` and the same from adapter_peft/ (the two
   merged files must be byte-identical: PEFT's rotate_half rows convert back exactly);
4. perplexity with llama.cpp's definition (non-overlapping windows of --ctx tokens from an
   empty cache, the second half of each scored), the NLL loop below over llama-cpp-python's
   logits: the base, the base with lora_path=adapter.gguf (llama.cpp applies the adapter at run
   time: W x + alpha / r * B (A x)), the merged GGUF; and `tfm perplexity` on the merged GGUF.
The text: --text, or the Debian fortunes (bench/infer/vs_llamacpp.py's default_text), cut after
a little more than --tokens tokens (whole lines). Prints a table; exits 1 when llama.cpp with the adapter and
typeformer's merged model differ by more than 0.5%, or the adapter changes the perplexity by
less than 2%. --write stores the figures in tests/data/lora_io/llamacpp_lora_ppl.json (the
fixture tests/unit/lora_io checks). Exit 77 when llama_cpp, the model or a binary is missing.
"""
import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/typeformer/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")

try:
    import numpy as np
    import llama_cpp
except ImportError as e:
    print(f"llama-cpp-python (or numpy) is not importable: {e}")
    sys.exit(77)


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r.stdout + r.stderr


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def perplexity(model, ids, ctx, threads, add_bos, bos, lora=None):
    """llama-perplexity's definition over llama-cpp-python's logits (float64 log-softmax)."""
    kw = {"lora_path": lora} if lora else {}
    m = llama_cpp.Llama(model_path=model, n_ctx=ctx, n_batch=ctx, n_threads=threads,
                        logits_all=True, verbose=False, **kw)
    nll, nll2, count = 0.0, 0.0, 0
    t0 = time.time()
    for c in range(len(ids) // ctx):
        window = list(ids[c * ctx:(c + 1) * ctx])
        if add_bos:
            window[0] = bos
        m.reset()
        m.eval(window)
        lg = np.asarray(m.scores[:ctx], dtype=np.float64)
        for j in range(ctx // 2, ctx - 1):
            row = lg[j]
            mx = row.max()
            v = mx + math.log(np.exp(row - mx).sum()) - row[window[j + 1]]
            nll += v
            nll2 += v * v
            count += 1
    mean = nll / count
    err = math.sqrt(max(nll2 / count - mean * mean, 0.0) / (count - 1))
    del m
    return math.exp(mean), math.exp(mean) * err, count, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfm", required=True)
    ap.add_argument("--lora-make", required=True)
    ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                   "tfm_lora_ppl"))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--text")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--sd", type=float, default=0.045)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    for what, path in (("model", a.model), ("tfm", a.tfm), ("lora_io_make", a.lora_make)):
        if not os.path.exists(path):
            print(f"{what} '{path}' is missing")
            sys.exit(77)
    os.makedirs(a.work, exist_ok=True)
    base = os.path.join(a.work, "base.gguf")
    adapter = os.path.join(a.work, "adapter")
    merged = os.path.join(a.work, "merged.gguf")
    merged_peft = os.path.join(a.work, "merged_peft.gguf")
    run([a.tfm, "convert", a.model, base, "--type", "f32"])
    print(run([a.lora_make, base, adapter, "--rank", "8", "--alpha", "16", "--sd", str(a.sd),
               "--seed", str(a.seed)]).strip())
    print(run([a.tfm, "merge-lora", base, adapter + ".gguf", merged]).strip())
    print(run([a.tfm, "merge-lora", base, adapter + "_peft", merged_peft]).strip())
    same = sha256(merged) == sha256(merged_peft)
    print(f"merged from the LoRA GGUF == merged from the PEFT directory: {same}")

    if a.text:
        text = open(a.text, encoding="utf-8").read()
    else:
        sys.path.insert(0, os.path.join(ROOT, "bench", "infer"))
        from vs_llamacpp import default_text
        text = default_text(a.tokens)
    tok = llama_cpp.Llama(model_path=base, vocab_only=True, verbose=False)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(tok.model)))
    lines, kept, n = text.split("\n"), [], 0
    for line in lines:  # whole lines, a little over --tokens tokens (the last window full)
        k = len(tok.tokenize((line + "\n").encode("utf-8"), add_bos=False, special=False))
        if n >= a.tokens + a.ctx // 8 or n + k > a.tokens + a.ctx // 4:
            break
        kept.append(line)
        n += k
    text = "\n".join(kept) + "\n"
    ids = tok.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    text_path = os.path.join(a.work, "text.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"text: {len(ids)} tokens, {len(ids) // a.ctx} windows of {a.ctx}")

    res = {}
    for key, model, lora in (("base_llamacpp", base, None), ("lora_llamacpp", base,
                                                             adapter + ".gguf"),
                             ("merged_llamacpp", merged, None)):
        ppl, err, count, secs = perplexity(model, ids, a.ctx, a.threads, add_bos,
                                           tok.token_bos(), lora)
        res[key] = (ppl, err, secs)
        print(f"{key}: PPL {ppl:.4f} +/- {err:.4f} ({count} scored, {secs:.1f} s)", flush=True)
    t0 = time.time()
    out = run([a.tfm, "perplexity", "-m", merged, "-f", text_path, "--ctx", str(a.ctx), "-t",
               str(a.threads)])
    print(out.strip())
    m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    res["merged_typeformer"] = (float(m.group(1)), float(m.group(2)), time.time() - t0)

    lora = res["lora_llamacpp"][0]
    print(f"\nSmolLM2-135M-Instruct (Q4_1 -> F32), adapter rank 8 alpha 16 sd {a.sd} on 7 "
          f"projections x 30 layers, {len(ids)} tokens, ctx {a.ctx}, "
          f"llama-cpp-python {llama_cpp.__version__}")
    print("| model | engine | PPL | +/- | / llama.cpp + adapter |")
    print("| --- | --- | ---: | ---: | ---: |")
    for key, label in (("base_llamacpp", "base | llama.cpp"),
                       ("lora_llamacpp", "base + adapter.gguf (lora_path) | llama.cpp"),
                       ("merged_llamacpp", "tfm merge-lora | llama.cpp"),
                       ("merged_typeformer", "tfm merge-lora | tfm perplexity")):
        ppl, err, _ = res[key]
        print(f"| {label} | {ppl:.4f} | {err:.4f} | {ppl / lora:.5f} |")
    ok = (abs(res["merged_typeformer"][0] / lora - 1) < 0.005 and
          abs(res["merged_llamacpp"][0] / lora - 1) < 0.005 and
          abs(lora / res["base_llamacpp"][0] - 1) > 0.02 and same)
    if a.write:
        fig = {
            "model": os.path.basename(a.model) + " -> tfm convert --type f32",
            "adapter": {"rank": 8, "alpha": 16, "sd": a.sd, "seed": a.seed,
                        "targets": "q,k,v,o,gate,up,down", "writer": "io::save_lora_gguf"},
            "text": (os.path.basename(a.text) if a.text else "Debian fortunes (default_text)"),
            "tokens": len(ids), "ctx": a.ctx,
            "llama_cpp_python": llama_cpp.__version__,
            "merged_gguf_equals_merged_peft": same,
        }
        for key, (ppl, err, _) in res.items():
            fig["ppl_" + key] = round(ppl, 6)
            fig["err_" + key] = round(err, 6)
        with open(os.path.join(HERE, "llamacpp_lora_ppl.json"), "w") as f:
            json.dump(fig, f, indent=2)
            f.write("\n")
        print("wrote tests/data/lora_io/llamacpp_lora_ppl.json")
    if not ok:
        print("FAIL: the perplexities differ by more than 0.5%, the adapter has no visible "
              "effect, or the two merges differ")
        sys.exit(1)


if __name__ == "__main__":
    main()
