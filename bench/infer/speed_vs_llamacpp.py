#!/usr/bin/env python3
"""pp/tg tokens/s of `tfm bench` against llama.cpp on the same GGUF file, in the same run.

    python3 bench/infer/speed_vs_llamacpp.py TFM_BINARY MODEL.gguf [MODEL2.gguf ...]
                                             [--threads 1 2] [-p 512] [-n 128] [-r 3]

llama.cpp runs through llama-cpp-python (the vendored llama.cpp, built from source by pip on
this machine, so with its native flags): pp<P> is one llama_decode of P random tokens into an
empty context (n_batch = P), tg<N> is N single-token decodes from an empty context, as
llama-bench defines them; the Python call per token costs microseconds against milliseconds of
decode. typeformer: `tfm bench --json` with the same P, N, threads and repeats. The engines
alternate per (model, threads) pair; each figure is the mean of the repeats after one warm-up.
Prints a Markdown table with both and the ratio (ours / llama.cpp; > 1 means typeformer is
faster).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time


def llamacpp_speed(model, threads, n_prompt, n_gen, repeats):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model, n_ctx=max(n_prompt, n_gen) + 8, n_batch=n_prompt,
                          n_ubatch=n_prompt, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    vocab = llm.n_vocab()
    rng = random.Random(0)
    prompt = [rng.randrange(vocab) for _ in range(n_prompt)]
    pp, tg = [], []
    for i in range(repeats + 1):
        llm.reset()  # n_tokens = 0; eval drops the cache from there
        t0 = time.perf_counter()
        llm.eval(prompt)
        dt = time.perf_counter() - t0
        if i:
            pp.append(n_prompt / dt)
    for i in range(repeats + 1):
        llm.reset()  # n_tokens = 0; eval drops the cache from there
        tok = llm.token_bos() if llm.token_bos() >= 0 else 0
        t0 = time.perf_counter()
        for _ in range(n_gen):
            llm.eval([tok])
            tok = rng.randrange(vocab)
        dt = time.perf_counter() - t0
        if i:
            tg.append(n_gen / dt)
    return sum(pp) / len(pp), sum(tg) / len(tg)


def ours_speed(tfm, model, threads, n_prompt, n_gen, repeats):
    r = subprocess.run([tfm, "bench", "-m", model, "-p", str(n_prompt), "-n", str(n_gen),
                        "-t", str(threads), "-r", str(repeats), "--json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"tfm bench failed: {r.stderr}")
    rows = {x["test"]: x["avg_ts"] for x in json.loads(r.stdout)}
    return rows[f"pp{n_prompt}"], rows[f"tg{n_gen}"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    a = ap.parse_args()
    import llama_cpp

    print(f"llama-cpp-python {llama_cpp.__version__}; pp{a.p} / tg{a.n}, mean of {a.r} repeats "
          f"after a warm-up; CPU: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
    print(f"| model | threads | test | typeformer t/s | llama.cpp t/s | ratio |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for model in a.models:
        for t in a.threads:
            os.environ["OMP_NUM_THREADS"] = str(t)
            l_pp, l_tg = llamacpp_speed(model, t, a.p, a.n, a.r)
            o_pp, o_tg = ours_speed(a.tfm, model, t, a.p, a.n, a.r)
            name = os.path.basename(model)
            print(f"| {name} | {t} | pp{a.p} | {o_pp:.1f} | {l_pp:.1f} | {o_pp / l_pp:.2f}x |")
            print(f"| {name} | {t} | tg{a.n} | {o_tg:.1f} | {l_tg:.1f} | {o_tg / l_tg:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
