#!/usr/bin/env python3
"""Independent numpy reference of the llama forward, for tests/unit/infer_model.

    python3 reference.py tiny               # writes tiny_f32.gguf, tiny_f16.gguf, tiny_logits.txt
    python3 reference.py smollm2 MODEL.gguf # writes smollm2_reference.txt
    python3 reference.py llamacpp MODEL.gguf # writes smollm2_llamacpp.txt (needs llama-cpp-python)

The tiny models are random llama GGUFs written with gguf-py's GGUFWriter (not typeformer's
writer), with grouped-query attention (4 query heads, 2 kv heads), one with F32 weights and an
untied output, one with F16 weights and the output tied to token_embd. The forward is written
from the model definition (Touvron et al., arXiv:2302.13971) on the tensors as gguf.GGUFReader
returns them (dequantized with gguf.quants.dequantize), in float64:

    x = token_embd[ids]
    per layer: h = rmsnorm(x) * attn_norm; q, k, v = h Wq^T, h Wk^T, h Wv^T
               rope on (2i, 2i+1) pairs (ggml's "normal" mode, which GGUF llama files use),
               theta_i = base^(-2i/D); causal softmax(q k^T / sqrt(D)) v, kv head = h // (H/G)
               x += o Wo^T; h = rmsnorm(x) * ffn_norm; x += (silu(h Wg^T) * h Wu^T) Wd^T
    logits = rmsnorm(x) * output_norm @ output^T   (output = token_embd when absent)
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_PROMPT = [3, 17, 42, 5, 63, 0, 28, 11, 9]
SMOL_PROMPT = [504, 3575, 282, 4649, 314]  # "The capital of France is"
SEED = 20240518


def read_model(path):
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(path)

    def field(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        return v.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0].item()

    arch = field("general.architecture")
    cfg = dict(
        n_layer=field(arch + ".block_count"),
        n_head=field(arch + ".attention.head_count"),
        n_kv=field(arch + ".attention.head_count_kv"),
        base=field(arch + ".rope.freq_base", 10000.0),
        eps=field(arch + ".attention.layer_norm_rms_epsilon", 1e-5),
    )
    w = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type)
        shape = [int(n) for n in reversed(t.shape.tolist())]
        w[t.name] = np.asarray(a, dtype=np.float64).reshape(shape)
    return cfg, w


def rmsnorm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, pos, base):  # x (T, heads, D); pairs (2i, 2i+1)
    D = x.shape[-1]
    theta = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    ang = pos[:, None] * theta[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * c - x1 * s
    y[..., 1::2] = x0 * s + x1 * c
    return y


def dense_ffn(w, p, h):
    """The SwiGLU MLP of block prefix p on the normed rows h."""
    a = h @ w[p + "ffn_gate.weight"].T
    return ((a / (1 + np.exp(-a))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T


def forward(cfg, w, ids, ffn=dense_ffn):
    """Logits (T, V) of a llama GGUF's tensors w; ffn(w, p, h): the FFN of block p on the normed
    rows h (the dense SwiGLU, or tests/data/infer_moe's mixture of experts)."""
    x = w["token_embd.weight"][ids]
    T = len(ids)
    H, G = cfg["n_head"], cfg["n_kv"]
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["n_layer"]):
        p = "blk.%d." % l
        h = rmsnorm(x, w[p + "attn_norm.weight"], cfg["eps"])
        q = h @ w[p + "attn_q.weight"].T
        k = h @ w[p + "attn_k.weight"].T
        v = h @ w[p + "attn_v.weight"].T
        D = q.shape[1] // H
        q = rope(q.reshape(T, H, D), pos, cfg["base"])
        k = rope(k.reshape(T, G, D), pos, cfg["base"])
        v = v.reshape(T, G, D)
        o = np.empty((T, H, D))
        for hh in range(H):
            g = hh // (H // G)
            s = q[:, hh, :] @ k[:, g, :].T / np.sqrt(D) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            o[:, hh, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, g, :]
        x = x + o.reshape(T, H * D) @ w[p + "attn_output.weight"].T
        h = rmsnorm(x, w[p + "ffn_norm.weight"], cfg["eps"])
        x = x + ffn(w, p, h)
    out = w.get("output.weight", w["token_embd.weight"])
    return rmsnorm(x, w["output_norm.weight"], cfg["eps"]) @ out.T


def write_tiny(path, rng, dtype, tied):
    import gguf

    V, C, H, G, D, F, L = 64, 32, 4, 2, 8, 48, 2
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_block_count(L)
    wr.add_context_length(64)
    wr.add_embedding_length(C)
    wr.add_feed_forward_length(F)
    wr.add_head_count(H)
    wr.add_head_count_kv(G)
    wr.add_rope_freq_base(10000.0)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_vocab_size(V)

    def mat(name, rows, cols, scale):
        wr.add_tensor(name, (rng.standard_normal((rows, cols)) * scale).astype(dtype))

    def norm(name):
        wr.add_tensor(name, (1 + 0.1 * rng.standard_normal(C)).astype(np.float32))

    mat("token_embd.weight", V, C, 0.5)
    for l in range(L):
        p = "blk.%d." % l
        norm(p + "attn_norm.weight")
        mat(p + "attn_q.weight", H * D, C, 0.3)
        mat(p + "attn_k.weight", G * D, C, 0.3)
        mat(p + "attn_v.weight", G * D, C, 0.3)
        mat(p + "attn_output.weight", C, H * D, 0.2)
        norm(p + "ffn_norm.weight")
        mat(p + "ffn_gate.weight", F, C, 0.2)
        mat(p + "ffn_up.weight", F, C, 0.2)
        mat(p + "ffn_down.weight", C, F, 0.2)
    norm("output_norm.weight")
    if not tied:
        mat("output.weight", V, C, 0.3)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def tiny():
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    lines = ["# numpy float64 logits of reference.py; prompt " + " ".join(map(str, TINY_PROMPT))]
    for name, dtype, tied in (("tiny_f32.gguf", np.float32, False), ("tiny_f16.gguf", np.float16, True)):
        path = os.path.join(HERE, name)
        write_tiny(path, rng, dtype, tied)
        cfg, w = read_model(path)
        lg = forward(cfg, w, np.array(TINY_PROMPT))
        lines.append("model %s %d %d" % (name, lg.shape[0], lg.shape[1]))
        lines += [" ".join("%.9g" % v for v in row) for row in lg]
    with open(os.path.join(HERE, "tiny_logits.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # llama.cpp's perplexity (tools/perplexity/perplexity.cpp) on tiny_f32: windows of ctx
    # tokens, the second half of each scored
    ids = rng.integers(0, 64, 40)
    ctx, first = 16, 8
    cfg, w = read_model(os.path.join(HERE, "tiny_f32.gguf"))
    nll = []
    for c in range(len(ids) // ctx):
        win = ids[c * ctx:(c + 1) * ctx]
        lg = forward(cfg, w, win)
        for j in range(first, ctx - 1):
            m = lg[j].max()
            nll.append(m + np.log(np.exp(lg[j] - m).sum()) - lg[j][win[j + 1]])
    nll = np.array(nll)
    ppl = np.exp(nll.mean())
    err = ppl * np.sqrt((np.mean(nll ** 2) - nll.mean() ** 2) / (len(nll) - 1))
    with open(os.path.join(HERE, "tiny_ppl.txt"), "w") as f:
        f.write("# perplexity of tiny_f32.gguf, llama.cpp's definition, numpy float64\n")
        f.write("ids " + " ".join(map(str, ids)) + "\n")
        f.write("ctx %d\nppl %.12g %.12g %d\n" % (ctx, ppl, err, len(nll)))


def smollm2(path):
    cfg, w = read_model(path)
    lg = forward(cfg, w, np.array(SMOL_PROMPT))
    lines = ["# reference.py on the dequantized weights of " + os.path.basename(path),
             "prompt " + " ".join(map(str, SMOL_PROMPT))]
    for t, row in enumerate(lg):
        top = np.argsort(-row, kind="stable")[:5]
        lines.append("top5 %d " % t + " ".join("%d %.6f" % (i, row[i]) for i in top))
    ids = list(SMOL_PROMPT)
    for _ in range(16):  # greedy, recomputing the whole sequence each step
        ids.append(int(np.argmax(forward(cfg, w, np.array(ids))[-1])))
    lines.append("greedy16 " + " ".join(map(str, ids[len(SMOL_PROMPT):])))
    with open(os.path.join(HERE, "smollm2_reference.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def llamacpp(path):
    import llama_cpp

    m = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    m.eval(SMOL_PROMPT)
    lg = np.array(m.scores[: len(SMOL_PROMPT)], dtype=np.float64)
    lines = ["# llama.cpp (llama-cpp-python %s) logits of %s" % (llama_cpp.__version__, os.path.basename(path)),
             "prompt " + " ".join(map(str, SMOL_PROMPT))]
    for t, row in enumerate(lg):
        top = np.argsort(-row, kind="stable")[:5]
        lines.append("top5 %d " % t + " ".join("%d %.6f" % (i, row[i]) for i in top))
    with open(os.path.join(HERE, "smollm2_llamacpp.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    {"tiny": lambda: tiny(), "smollm2": lambda: smollm2(sys.argv[2]),
     "llamacpp": lambda: llamacpp(sys.argv[2])}[sys.argv[1]]()
