#!/usr/bin/env python3
"""typeformer's `tfm perplexity` against llama.cpp on the same GGUF file and text.

    python3 bench/infer/vs_llamacpp.py TFM_BINARY MODEL.gguf [--ctx 512] [--threads 2]
                                       [--text FILE] [--min-tokens 20000] [--max-tokens 24576]

The text (default: the Debian `fortunes` package's fortunes, literature, riddles, computers and
science files, concatenated) is tokenized by llama.cpp. llama.cpp's side runs through
llama-cpp-python (which builds the vendored llama.cpp): every window of --ctx tokens is evaluated
with logits for all positions, and the same definition as llama-perplexity is applied (first
token of a window replaced by BOS when the model adds one; the second half of each window scored;
ppl = exp(mean nll); error = ppl * standard error of the nll). It also reports teacher-forced
top-1 agreement: the share of scored positions where llama.cpp's most likely next token equals
typeformer's (`tfm perplexity --argmax FILE` writes typeformer's).

Prints one Markdown table row per engine and the ratio of the perplexities.
"""
import argparse
import glob
import math
import os
import re
import subprocess
import sys
import time

import numpy as np


def default_text(min_tokens_hint):
    parts = []
    for name in ("fortunes", "literature", "riddles", "computers", "science", "people", "wisdom"):
        p = os.path.join("/usr/share/games/fortunes", name)
        if os.path.exists(p):
            parts.append(open(p, encoding="utf-8", errors="replace").read())
    if not parts:
        sys.exit("no text: install the Debian package 'fortunes' or pass --text FILE")
    return "\n".join(parts)


def llamacpp_perplexity(model, ids, ctx, threads, add_bos, bos):
    import llama_cpp

    m = llama_cpp.Llama(model_path=model, n_ctx=ctx, n_batch=ctx, n_threads=threads,
                        logits_all=True, verbose=False)
    n_chunks = len(ids) // ctx
    first = ctx // 2
    nll, nll2, count, top1 = 0.0, 0.0, 0, 0
    argmax = []
    t0 = time.time()
    for c in range(n_chunks):
        window = list(ids[c * ctx:(c + 1) * ctx])
        if add_bos:
            window[0] = bos
        m.reset()
        m.eval(window)
        lg = np.asarray(m.scores[:ctx], dtype=np.float64)
        for j in range(first, ctx - 1):
            row = lg[j]
            mx = row.max()
            v = mx + math.log(np.exp(row - mx).sum()) - row[window[j + 1]]
            nll += v
            nll2 += v * v
            count += 1
            top1 += int(np.argmax(row) == window[j + 1])
            argmax.append(int(np.argmax(row)))
    secs = time.time() - t0
    mean = nll / count
    var = nll2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) if count > 1 else 0.0
    ppl = math.exp(mean)
    return ppl, ppl * err, count, top1 / count, secs, argmax


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm")
    ap.add_argument("model")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--text")
    ap.add_argument("--min-tokens", type=int, default=20000)
    ap.add_argument("--max-tokens", type=int, default=24576,
                    help="cut the text after this many tokens (whole lines)")
    a = ap.parse_args()

    import llama_cpp

    text = open(a.text, encoding="utf-8").read() if a.text else default_text(a.min_tokens)
    tok = llama_cpp.Llama(model_path=a.model, vocab_only=True, verbose=False)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(tok.model)))
    bos = tok.token_bos()
    ids = tok.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    if len(ids) > a.max_tokens:  # keep whole lines up to the budget
        lines, kept, n = text.split("\n"), [], 0
        for line in lines:
            n += len(tok.tokenize((line + "\n").encode("utf-8"), add_bos=False, special=False))
            if n > a.max_tokens:
                break
            kept.append(line)
        text = "\n".join(kept) + "\n"
        ids = tok.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    if len(ids) < a.min_tokens:
        sys.exit(f"the text has {len(ids)} tokens, fewer than --min-tokens {a.min_tokens}")
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tfm_vs_llamacpp.txt")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)

    ppl_l, err_l, count_l, top1_l, secs_l, argmax_l = llamacpp_perplexity(a.model, ids, a.ctx, a.threads,
                                                              add_bos, bos)
    t0 = time.time()
    argmax_file = tmp + ".argmax"
    r = subprocess.run([a.tfm, "perplexity", "-m", a.model, "-f", tmp, "--ctx", str(a.ctx),
                        "-t", str(a.threads), "--argmax", argmax_file], capture_output=True,
                       text=True)
    secs_t = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"tfm perplexity failed: {r.stderr}")
    m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", r.stdout.strip().splitlines()[-1])
    ppl_t, err_t = float(m.group(1)), float(m.group(2))
    argmax_t = [int(x) for x in open(argmax_file).read().split()]
    if len(argmax_t) != len(argmax_l):
        sys.exit(f"scored positions differ: typeformer {len(argmax_t)}, llama.cpp {len(argmax_l)}")
    agree = sum(x == y for x, y in zip(argmax_t, argmax_l)) / len(argmax_l)
    print(f"model {os.path.basename(a.model)}, {len(ids)} tokens, ctx {a.ctx}, "
          f"{len(ids) // a.ctx} windows, {count_l} scored, {a.threads} threads; "
          f"llama-cpp-python {llama_cpp.__version__}")
    print("| engine | PPL | +/- | wall s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| llama.cpp | {ppl_l:.4f} | {err_l:.5f} | {secs_l:.1f} |")
    print(f"| typeformer | {ppl_t:.4f} | {err_t:.5f} | {secs_t:.1f} |")
    print(f"typeformer / llama.cpp perplexity: {ppl_t / ppl_l:.5f} "
          f"({100 * (ppl_t / ppl_l - 1):+.3f}%); teacher-forced top-1 agreement "
          f"{100 * agree:.2f}% of {len(argmax_l)}; llama.cpp top-1 accuracy {100 * top1_l:.2f}%")


if __name__ == "__main__":
    main()
