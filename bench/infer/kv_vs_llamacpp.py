#!/usr/bin/env python3
"""llama.cpp's perplexity (llama-cpp-python 0.3.36) on a text with its KV cache as f16 (llama.cpp's
default) and as q8_0 (type_k = type_v = GGML_TYPE_Q8_0): the peer of `tfm perplexity --kv-type`.
Flash attention is on for both (llama.cpp needs it for a quantized V), so the two runs differ only
in the cache type. Same perplexity definition as bench/infer/vs_llamacpp.py (windows of --ctx
tokens, first token BOS when the model adds one, the second half scored).

    python3 bench/infer/kv_vs_llamacpp.py MODEL.gguf TEXT [--ctx 512] [--threads 2] [--types f16,q8_0]
"""
import argparse, math, sys, time
import numpy as np
import llama_cpp

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("text")
ap.add_argument("--ctx", type=int, default=512); ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--types", default="f16,q8_0")
a = ap.parse_args()
tok = llama_cpp.Llama(model_path=a.model, vocab_only=True, verbose=False)
add_bos = tok._model.add_bos_token() if hasattr(tok._model, "add_bos_token") else True
ids = tok.tokenize(open(a.text, encoding="utf-8").read().encode("utf-8"), add_bos=add_bos, special=False)
bos = tok.token_bos()
print(f"{len(ids)} tokens, add_bos {add_bos}", file=sys.stderr)
codes = {"f16": 1, "q8_0": 8}
for name in a.types.split(","):
    t = codes[name]
    m = llama_cpp.Llama(model_path=a.model, n_ctx=a.ctx, n_batch=a.ctx, n_threads=a.threads,
                        logits_all=True, verbose=False, type_k=t, type_v=t,
                        flash_attn=True)
    ctx, first = a.ctx, a.ctx // 2
    nll = nll2 = 0.0; count = 0; t0 = time.time()
    for c in range(len(ids) // ctx):
        w = list(ids[c * ctx:(c + 1) * ctx])
        if add_bos: w[0] = bos
        m.reset(); m.eval(w)
        lg = np.asarray(m.scores[:ctx], dtype=np.float64)
        for j in range(first, ctx - 1):
            row = lg[j]; mx = row.max()
            v = mx + math.log(np.exp(row - mx).sum()) - row[w[j + 1]]
            nll += v; nll2 += v * v; count += 1
    mean = nll / count; var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    print(f"llama.cpp kv {name} (flash_attn): PPL = {ppl:.4f} +/- "
          f"{ppl * math.sqrt(var / (count - 1)):.5f} ({count} scored, {time.time() - t0:.0f} s)", flush=True)
    del m
