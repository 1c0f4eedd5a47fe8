#!/usr/bin/env python3
"""Independent checks of typeformer's model export (include/typeformer/io/export.hpp).

    check_export.py WORK_DIR NAME [NAME ...]

For every NAME, export_test.cpp has written, in WORK_DIR:
    NAME.expect.json   the training config (arch, sizes, bias, tied, eps, rope base, tokenizer)
    NAME.ids           the token ids of sample.txt (one a line), NAME.logits their (T, V) float32
                       logits from nn::gpt::forward
    NAME.gguf, NAME_f16.gguf, NAME_hf/, NAME_hf_bf16/   the exports

This script reads them with gguf-py (GGUFReader), safetensors (safe_open, numpy) and, when it is
installed, the `tokenizers` package, and checks
  - tensor names, shapes and dtypes (GGUF: llama.cpp's names, 1-D tensors F32; HF: transformers'
    LlamaForCausalLM / GPT2LMHeadModel names, Conv1D weights (in, out); a mixture-of-experts
    llama ("moe": true): llama.cpp's blk.N.ffn_{gate_inp,gate_exps,up_exps,down_exps}, the router
    F32 in every file, and MixtralForCausalLM's block_sparse_moe.{gate,experts.e.w1/w2/w3}), the
    GGUF metadata keys and config.json;
  - a float64 numpy forward written here from each format's own convention (GGUF llama: RoPE on
    adjacent pairs as ggml's "normal" rope; HF Llama: rotate_half on (i, i + D/2) pairs; GPT-2:
    LayerNorm, tanh GELU, learned positions; MoE: softmax over all E router logits, the top k,
    weights renormalised over them, as llama.cpp's llama arch and HF Mixtral) against the C++
    logits;
  - tokenizer.json (`tokenizers`) encodes sample.txt to the C++ ids.
With NAME "--hf2gguf" instead, WORK_DIR/hf2gguf.json lists [source HF directory, GGUF] pairs
that `tfm convert HF_DIR OUT.gguf` (infer/hf_export_import.hpp) wrote; every GGUF tensor must
equal, value for value, the source safetensors tensor under llama.cpp's name, GPT-2 Conv1D
weights transposed and Llama q/k rows permuted as convert_hf_to_gguf.py's LlamaModel.permute
(reshape(H, 2, D/2, C).swapaxes(1, 2)), in the GGUF's element type (1-D tensors F32).
Exit 0: all pass; 1: a check failed; 77: numpy, gguf or safetensors is missing (ctest SKIP).
"""
import json
import math
import os
import struct
import sys

try:
    import numpy as np
    import gguf
    from safetensors import safe_open
except ImportError as e:  # pragma: no cover
    print(f"TFM_SKIP: {e}")
    sys.exit(77)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


# ---- expected names -------------------------------------------------------------------------


def is_moe(e):
    """A mixture-of-experts llama (export_test.cpp's llama_moe); absent or false: dense."""
    return bool(e.get("moe", False))


def expert_width(e):
    """Fe, each routed expert's hidden width (expert_ffn, or ffn when it is 0)."""
    return e.get("expert_ffn") or e["ffn"]


def gguf_expected(e):
    """name -> row-major shape of the GGUF tensors llama.cpp's loader wants."""
    V, C, F, L, T = e["vocab"], e["n_embd"], e["ffn"], e["n_layer"], e["block_size"]
    H, G = e["n_head"], e["n_kv_head"]
    D = C // H
    t = {"token_embd.weight": (V, C), "output_norm.weight": (C,)}
    if e["arch"] == "llama":
        for l in range(L):
            b = f"blk.{l}."
            t.update({b + "attn_norm.weight": (C,), b + "attn_q.weight": (H * D, C),
                      b + "attn_k.weight": (G * D, C), b + "attn_v.weight": (G * D, C),
                      b + "attn_output.weight": (C, C), b + "ffn_norm.weight": (C,)})
            if is_moe(e):  # llama.cpp LLM_TENSOR_FFN_*_EXPS: ggml ne [C, Fe, E] / [Fe, C, E]
                E, Fe = e["n_expert"], expert_width(e)
                t.update({b + "ffn_gate_inp.weight": (E, C), b + "ffn_gate_exps.weight": (E, Fe, C),
                          b + "ffn_up_exps.weight": (E, Fe, C),
                          b + "ffn_down_exps.weight": (E, C, Fe)})
            else:
                t.update({b + "ffn_gate.weight": (F, C), b + "ffn_up.weight": (F, C),
                          b + "ffn_down.weight": (C, F)})
        if not e["tied"]:
            t["output.weight"] = (V, C)
    else:
        t.update({"position_embd.weight": (T, C), "output_norm.bias": (C,), "output.weight": (V, C)})
        for l in range(L):
            b = f"blk.{l}."
            t.update({b + "attn_norm.weight": (C,), b + "attn_norm.bias": (C,),
                      b + "attn_qkv.weight": (3 * C, C), b + "attn_qkv.bias": (3 * C,),
                      b + "attn_output.weight": (C, C), b + "attn_output.bias": (C,),
                      b + "ffn_norm.weight": (C,), b + "ffn_norm.bias": (C,),
                      b + "ffn_up.weight": (F, C), b + "ffn_up.bias": (F,),
                      b + "ffn_down.weight": (C, F), b + "ffn_down.bias": (C,)})
    return t


def hf_expected(e):
    V, C, F, L, T = e["vocab"], e["n_embd"], e["ffn"], e["n_layer"], e["block_size"]
    H, G = e["n_head"], e["n_kv_head"]
    D = C // H
    if e["arch"] == "llama":
        t = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
        for l in range(L):
            b = f"model.layers.{l}."
            t.update({b + "input_layernorm.weight": (C,), b + "post_attention_layernorm.weight": (C,),
                      b + "self_attn.q_proj.weight": (H * D, C),
                      b + "self_attn.k_proj.weight": (G * D, C),
                      b + "self_attn.v_proj.weight": (G * D, C),
                      b + "self_attn.o_proj.weight": (C, C)})
            if is_moe(e):  # transformers' modeling_mixtral.py MixtralSparseMoeBlock
                E, Fe = e["n_expert"], expert_width(e)
                m = b + "block_sparse_moe."
                t[m + "gate.weight"] = (E, C)
                for x in range(E):
                    t.update({f"{m}experts.{x}.w1.weight": (Fe, C),
                              f"{m}experts.{x}.w3.weight": (Fe, C),
                              f"{m}experts.{x}.w2.weight": (C, Fe)})
            else:
                t.update({b + "mlp.gate_proj.weight": (F, C), b + "mlp.up_proj.weight": (F, C),
                          b + "mlp.down_proj.weight": (C, F)})
    else:
        t = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C),
             "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)}
        for l in range(L):
            b = f"transformer.h.{l}."
            t.update({b + "ln_1.weight": (C,), b + "ln_1.bias": (C,), b + "ln_2.weight": (C,),
                      b + "ln_2.bias": (C,), b + "attn.c_attn.weight": (C, 3 * C),
                      b + "attn.c_attn.bias": (3 * C,), b + "attn.c_proj.weight": (C, C),
                      b + "attn.c_proj.bias": (C,), b + "mlp.c_fc.weight": (C, F),
                      b + "mlp.c_fc.bias": (F,), b + "mlp.c_proj.weight": (F, C),
                      b + "mlp.c_proj.bias": (C,)})
    if not e["tied"]:
        t["lm_head.weight"] = (V, C)
    return t


# ---- numpy forwards -------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1 + np.exp(-x))


def rope(x, base, interleaved):
    """x (T, n, D): GGUF llama (ggml 'normal') rotates (2i, 2i+1); HF rotates (i, i + D/2)."""
    T, _, D = x.shape
    inv = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    a, b = x[..., : D // 2], x[..., D // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)


def attention(q, k, v):
    """q (T, H, D), k/v (T, G, D): causal, query head h uses kv head h // (H / G)."""
    T, H, D = q.shape
    G = k.shape[1]
    out = np.empty_like(q)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for h in range(H):
        g = h // (H // G)
        s = q[:, h, :] @ k[:, g, :].T / math.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        out[:, h, :] = (s / s.sum(-1, keepdims=True)) @ v[:, g, :]
    return out


def moe_ffn(h, router, gate, up, down, k, force=None):
    """The llama / Mixtral mixture of experts on h (T, C): router (E, C), gate and up (E, Fe, C),
    down (E, C, Fe). p = softmax of the E router logits; the k largest p (ties: lower index
    first) weighted by p / (their sum); each expert down_e(silu(gate_e h) * up_e h). Returns the
    output (T, C), the chosen experts (T, k) (`force` (T, k), when given, is used instead) and
    the smallest gap between the k-th and (k+1)-th largest p (inf when k = E)."""
    logits = h @ router.T
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    order = np.argsort(-p, axis=-1, kind="stable")
    top = order[:, :k]
    ps = np.take_along_axis(p, order, -1)
    gap = float((ps[:, k - 1] - ps[:, k]).min()) if k < p.shape[1] else math.inf
    use = top if force is None else force
    rows = np.arange(h.shape[0])[:, None]
    w = np.zeros_like(p)
    w[rows, use] = p[rows, use] / p[rows, use].sum(-1, keepdims=True)
    a = silu(np.einsum("tc,efc->tef", h, gate)) * np.einsum("tc,efc->tef", h, up)
    return np.einsum("te,tef,ecf->tc", w, a, down), top, gap


def llama_forward(W, ids, e, hf, routes=None, force=None, gaps=None):
    """The llama logits (T, V) of ids from W in the GGUF (hf false) or HF convention. A MoE
    layer appends its chosen experts (T, k) to the list `routes` and moe_ffn's gap to `gaps`
    when given, and uses force[l] instead of its own choice when `force` is given."""
    C, H, G = e["n_embd"], e["n_head"], e["n_kv_head"]
    D, eps, base = C // H, e["norm_eps"], e["rope_base"]
    T = len(ids)
    n = W.__getitem__
    if hf:
        emb, layer, fin = "model.embed_tokens.weight", "model.layers.{}.", "model.norm.weight"
        names = dict(an="input_layernorm.weight", q="self_attn.q_proj.weight",
                     k="self_attn.k_proj.weight", v="self_attn.v_proj.weight",
                     o="self_attn.o_proj.weight", fn="post_attention_layernorm.weight",
                     g="mlp.gate_proj.weight", u="mlp.up_proj.weight", d="mlp.down_proj.weight")
        head = "lm_head.weight"
    else:
        emb, layer, fin = "token_embd.weight", "blk.{}.", "output_norm.weight"
        names = dict(an="attn_norm.weight", q="attn_q.weight", k="attn_k.weight",
                     v="attn_v.weight", o="attn_output.weight", fn="ffn_norm.weight",
                     g="ffn_gate.weight", u="ffn_up.weight", d="ffn_down.weight")
        head = "output.weight"
    x = n(emb)[ids]
    for l in range(e["n_layer"]):
        p = layer.format(l)
        h = rms_norm(x, n(p + names["an"]), eps)
        q = (h @ n(p + names["q"]).T).reshape(T, H, D)
        k = (h @ n(p + names["k"]).T).reshape(T, G, D)
        v = (h @ n(p + names["v"]).T).reshape(T, G, D)
        q, k = rope(q, base, not hf), rope(k, base, not hf)
        x = x + attention(q, k, v).reshape(T, C) @ n(p + names["o"]).T
        h = rms_norm(x, n(p + names["fn"]), eps)
        if not is_moe(e):
            a = silu(h @ n(p + names["g"]).T) * (h @ n(p + names["u"]).T)
            x = x + a @ n(p + names["d"]).T
            continue
        if hf:  # Mixtral: one (Fe, C) / (C, Fe) tensor per expert, w1 gate, w3 up, w2 down
            m = p + "block_sparse_moe."
            r = n(m + "gate.weight")
            g, u, d = (np.stack([n(f"{m}experts.{j}.{w}.weight") for j in range(e["n_expert"])])
                       for w in ("w1", "w3", "w2"))
        else:
            r, g, u, d = (n(p + f"ffn_{w}.weight")
                          for w in ("gate_inp", "gate_exps", "up_exps", "down_exps"))
        y, top, gap = moe_ffn(h, r, g, u, d, e["n_expert_used"],
                              None if force is None else force[l])
        if routes is not None:
            routes.append(top)
        if gaps is not None:
            gaps.append(gap)
        x = x + y
    x = rms_norm(x, n(fin), eps)
    return x @ (W[head] if head in W else n(emb)).T


def gpt2_forward(W, ids, e, hf):
    C, H, eps = e["n_embd"], e["n_head"], e["norm_eps"]
    D, T = C // H, len(ids)
    if hf:  # Conv1D: y = x W + b with W (in, out)
        lin = lambda x, p: x @ W[p + ".weight"] + W[p + ".bias"]
        nm = dict(wte="transformer.wte", wpe="transformer.wpe", blk="transformer.h.{}.",
                  ln1="ln_1", qkv="attn.c_attn", o="attn.c_proj", ln2="ln_2", up="mlp.c_fc",
                  down="mlp.c_proj", lnf="transformer.ln_f")
    else:  # GGUF keeps the PyTorch Linear layout (out, in)
        lin = lambda x, p: x @ W[p + ".weight"].T + W[p + ".bias"]
        nm = dict(wte="token_embd", wpe="position_embd", blk="blk.{}.", ln1="attn_norm",
                  qkv="attn_qkv", o="attn_output", ln2="ffn_norm", up="ffn_up", down="ffn_down",
                  lnf="output_norm")
    x = W[nm["wte"] + ".weight"][ids] + W[nm["wpe"] + ".weight"][:T]
    for l in range(e["n_layer"]):
        p = nm["blk"].format(l)
        h = layer_norm(x, W[p + nm["ln1"] + ".weight"], W[p + nm["ln1"] + ".bias"], eps)
        qkv = lin(h, p + nm["qkv"])
        q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, H, D) for i in range(3))
        x = x + lin(attention(q, k, v).reshape(T, C), p + nm["o"])
        h = layer_norm(x, W[p + nm["ln2"] + ".weight"], W[p + nm["ln2"] + ".bias"], eps)
        x = x + lin(gelu_tanh(lin(h, p + nm["up"])), p + nm["down"])
    x = layer_norm(x, W[nm["lnf"] + ".weight"], W[nm["lnf"] + ".bias"], eps)
    head = "lm_head.weight" if hf else "output.weight"
    return x @ (W[head] if head in W else W[nm["wte"] + ".weight"]).T


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def layout_ok(shapes, expected, tag):
    """Whether the forward can run: the names and shapes already checked all match."""
    if set(shapes) == set(expected) and all(shapes[k] == v for k, v in expected.items()):
        return True
    print(f"{tag}: names or shapes are wrong (above); numpy forward not run")
    return False


# ---- readers --------------------------------------------------------------------------------


def gguf_field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if not f.data:  # an empty array (gguf-py then records no element type)
            return []
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    return f.parts[f.data[0]].tolist()[0]


def read_gguf(path):
    r = gguf.GGUFReader(path)
    tensors = {}
    for t in r.tensors:
        tensors[t.name] = (tuple(int(x) for x in reversed(t.shape.tolist())), t.tensor_type,
                           np.asarray(t.data, dtype=np.float64).reshape(
                               tuple(int(x) for x in reversed(t.shape.tolist()))))
    return r, tensors


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


# ---- the checks -----------------------------------------------------------------------------


def check_gguf(work, name, e, ids, want):
    F32, F16 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
    expected = gguf_expected(e)
    arch = e["arch"]
    routes = []  # the f32 file's expert choices, per MoE layer
    for suffix, mtype in (("", F32), ("_f16", F16)):
        path = os.path.join(work, name + suffix + ".gguf")
        r, t = read_gguf(path)
        tag = os.path.basename(path)
        check(set(t) == set(expected), f"{tag}: tensor names {sorted(set(t) ^ set(expected))}")
        for k, shape in expected.items():
            if k in t:
                check(t[k][0] == shape, f"{tag}: {k} shape {t[k][0]} != {shape}")
                # llama.cpp keeps the norms and the MoE router (ffn_gate_inp) F32
                f32 = len(shape) == 1 or k.endswith(".ffn_gate_inp.weight")
                want_type = F32 if f32 else mtype
                check(t[k][1] == want_type, f"{tag}: {k} type {t[k][1]} != {want_type}")
        check(gguf_field(r, "general.architecture") == arch, f"{tag}: general.architecture")
        check(gguf_field(r, "general.file_type") == (1 if suffix else 0), f"{tag}: file_type")
        keys = {"context_length": e["block_size"], "embedding_length": e["n_embd"],
                "feed_forward_length": expert_width(e) if is_moe(e) else e["ffn"],
                "block_count": e["n_layer"], "attention.head_count": e["n_head"]}
        if is_moe(e):
            keys.update({"expert_count": e["n_expert"], "expert_used_count": e["n_expert_used"]})
        else:
            for k in ("expert_count", "expert_used_count"):
                check(gguf_field(r, f"{arch}.{k}") is None, f"{tag}: dense model has {arch}.{k}")
        if arch == "llama":
            keys.update({"attention.head_count_kv": e["n_kv_head"],
                         "rope.dimension_count": e["n_embd"] // e["n_head"],
                         "vocab_size": e["vocab"]})
            eps_key, base = f"{arch}.attention.layer_norm_rms_epsilon", e["rope_base"]
            check(abs(gguf_field(r, f"{arch}.rope.freq_base") - base) <= 1e-6 * base,
                  f"{tag}: rope.freq_base")
        else:
            eps_key = f"{arch}.attention.layer_norm_epsilon"
        for k, v in keys.items():
            check(gguf_field(r, f"{arch}.{k}") == v, f"{tag}: {arch}.{k} = "
                  f"{gguf_field(r, f'{arch}.{k}')} != {v}")
        check(abs(gguf_field(r, eps_key) - e["norm_eps"]) < 1e-9, f"{tag}: {eps_key}")
        check(gguf_field(r, "tokenizer.ggml.model") == "gpt2", f"{tag}: tokenizer.ggml.model")
        check(gguf_field(r, "tokenizer.ggml.pre") == "gpt-2", f"{tag}: tokenizer.ggml.pre")
        toks = gguf_field(r, "tokenizer.ggml.tokens")
        check(len(toks) == e["vocab"], f"{tag}: {len(toks)} tokens")
        check(len(gguf_field(r, "tokenizer.ggml.token_type")) == e["vocab"], f"{tag}: token_type")
        merges = gguf_field(r, "tokenizer.ggml.merges") or []
        check(len(merges) == (e["vocab"] - 256 if e["tokenizer"] == "bpe" else 0),
              f"{tag}: {len(merges)} merges")
        W = {k: v[2] for k, v in t.items()}
        if not layout_ok({k: v[0] for k, v in t.items()}, expected, tag):
            continue
        if is_moe(e):
            # The f16 file is run with the f32 file's expert choices: f16 rounding of the other
            # weights may flip a near tie of the k-th and (k+1)-th router probability, a jump of
            # the logits that says nothing of the export. Its own choices are counted.
            own, gaps = [], []
            force = routes if suffix and routes else None
            got = llama_forward(W, ids, e, hf=False, routes=own, force=force, gaps=gaps)
            if not suffix:  # a gap near 0 would let float32 rounding pick other experts
                routes = own
                print(f"{tag}: smallest gap between the k-th and (k+1)-th router probability "
                      f"{min(gaps):.2e}")
            elif force is not None:
                flips = sum(int((np.sort(a, -1) != np.sort(b, -1)).any(-1).sum())
                            for a, b in zip(own, routes))
                print(f"{tag}: {flips} of {len(ids) * e['n_layer']} token-layer expert choices "
                      f"differ from {name}.gguf's (the forward uses {name}.gguf's)")
        else:
            fwd = llama_forward if arch == "llama" else gpt2_forward
            got = fwd(W, ids, e, hf=False)
        err = rel_err(got, want)
        tol = 1e-4 if not suffix else 1e-2
        print(f"{tag}: numpy GGUF-convention forward vs nn::gpt logits, relative error {err:.2e}")
        check(err < tol, f"{tag}: logits relative error {err} >= {tol}")


def check_hf(work, name, e, ids, want):
    expected = hf_expected(e)
    d = os.path.join(work, name + "_hf")
    tag = os.path.basename(d)
    W = {}
    with safe_open(os.path.join(d, "model.safetensors"), framework="np") as f:
        meta = f.metadata() or {}
        check(meta.get("format") == "pt", f"{tag}: metadata format {meta}")
        for k in f.keys():
            W[k] = f.get_tensor(k).astype(np.float64)
    check(set(W) == set(expected), f"{tag}: tensor names {sorted(set(W) ^ set(expected))}")
    for k, shape in expected.items():
        if k in W:
            check(W[k].shape == shape, f"{tag}: {k} shape {W[k].shape} != {shape}")
    h = safetensors_header(os.path.join(work, name + "_hf_bf16", "model.safetensors"))
    h.pop("__metadata__", None)
    check(set(h) == set(expected) and all(v["dtype"] == "BF16" for v in h.values()),
          f"{tag}_bf16: dtypes {set(v['dtype'] for v in h.values())}")
    cfg = json.load(open(os.path.join(d, "config.json")))
    if e["arch"] == "llama":
        want_cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                    "vocab_size": e["vocab"], "hidden_size": e["n_embd"],
                    "intermediate_size": expert_width(e) if is_moe(e) else e["ffn"],
                    "num_hidden_layers": e["n_layer"],
                    "num_attention_heads": e["n_head"], "num_key_value_heads": e["n_kv_head"],
                    "head_dim": e["n_embd"] // e["n_head"],
                    "max_position_embeddings": e["block_size"], "rms_norm_eps": e["norm_eps"],
                    "rope_theta": e["rope_base"], "hidden_act": "silu", "attention_bias": False,
                    "mlp_bias": False, "tie_word_embeddings": e["tied"]}
        if is_moe(e):  # transformers' MixtralConfig (its sliding_window defaults to 4096)
            want_cfg.update({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                             "num_local_experts": e["n_expert"],
                             "num_experts_per_tok": e["n_expert_used"]})
            check("sliding_window" in cfg and cfg["sliding_window"] is None,
                  f"{tag}: config.json sliding_window = {cfg.get('sliding_window', 'absent')!r}")
        else:
            for k in ("num_local_experts", "num_experts_per_tok"):
                check(k not in cfg, f"{tag}: dense model's config.json has {k}")
    else:
        want_cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                    "vocab_size": e["vocab"], "n_positions": e["block_size"],
                    "n_embd": e["n_embd"], "n_layer": e["n_layer"], "n_head": e["n_head"],
                    "n_inner": e["ffn"], "activation_function": "gelu_new",
                    "layer_norm_epsilon": e["norm_eps"], "tie_word_embeddings": e["tied"]}
    want_cfg["torch_dtype"] = "float32"
    for k, v in want_cfg.items():
        check(cfg.get(k) == v, f"{tag}: config.json {k} = {cfg.get(k)!r} != {v!r}")
    if layout_ok({k: v.shape for k, v in W.items()}, expected, tag):
        fwd = llama_forward if e["arch"] == "llama" else gpt2_forward
        err = rel_err(fwd(W, ids, e, hf=True), want)
        print(f"{tag}: numpy HF-convention forward vs nn::gpt logits, relative error {err:.2e}")
        check(err < 1e-4, f"{tag}: logits relative error {err}")
    try:
        import tokenizers
    except ImportError:
        print(f"{tag}: the `tokenizers` package is missing; tokenizer.json not checked")
        return
    tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    sample = open(os.path.join(work, "sample.txt"), encoding="utf-8").read()
    got = tok.encode(sample, add_special_tokens=False).ids[: len(ids)]
    check(got == list(ids), f"{tag}: tokenizers encodes sample.txt as {got[:12]}..., "
          f"typeformer as {list(ids)[:12]}...")


def read_safetensors(d):
    """name -> float32 array of every tensor of d/model.safetensors (F32, F16, BF16, F64)."""
    path = os.path.join(d, "model.safetensors")
    header = safetensors_header(path)
    n = struct.unpack("<Q", open(path, "rb").read(8))[0]
    blob = open(path, "rb").read()[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        raw = blob[v["data_offsets"][0]:v["data_offsets"][1]]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, dtype={"F32": np.float32, "F16": np.float16,
                                          "F64": np.float64}[v["dtype"]]).astype(np.float32)
        out[k] = a.reshape(v["shape"])
    return out


def hf_permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute: rotate_half rows -> interleaved pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def hf2gguf_expected(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = read_safetensors(d)
    t = {}
    if cfg["architectures"][0] == "LlamaForCausalLM":
        H = cfg["num_attention_heads"]
        G = cfg.get("num_key_value_heads") or H
        t["token_embd.weight"] = W["model.embed_tokens.weight"]
        for l in range(cfg["num_hidden_layers"]):
            s, b = f"model.layers.{l}.", f"blk.{l}."
            t[b + "attn_norm.weight"] = W[s + "input_layernorm.weight"]
            t[b + "attn_q.weight"] = hf_permute(W[s + "self_attn.q_proj.weight"], H)
            t[b + "attn_k.weight"] = hf_permute(W[s + "self_attn.k_proj.weight"], G)
            t[b + "attn_v.weight"] = W[s + "self_attn.v_proj.weight"]
            t[b + "attn_output.weight"] = W[s + "self_attn.o_proj.weight"]
            t[b + "ffn_norm.weight"] = W[s + "post_attention_layernorm.weight"]
            t[b + "ffn_gate.weight"] = W[s + "mlp.gate_proj.weight"]
            t[b + "ffn_up.weight"] = W[s + "mlp.up_proj.weight"]
            t[b + "ffn_down.weight"] = W[s + "mlp.down_proj.weight"]
        t["output_norm.weight"] = W["model.norm.weight"]
        if not cfg.get("tie_word_embeddings", False):
            t["output.weight"] = W["lm_head.weight"]
        return "llama", t
    p = "transformer." if "transformer.wte.weight" in W else ""
    t["token_embd.weight"] = W[p + "wte.weight"]
    t["position_embd.weight"] = W[p + "wpe.weight"]
    for l in range(cfg["n_layer"]):
        s, b = f"{p}h.{l}.", f"blk.{l}."
        for hf, g, conv in (("ln_1", "attn_norm", False), ("attn.c_attn", "attn_qkv", True),
                            ("attn.c_proj", "attn_output", True), ("ln_2", "ffn_norm", False),
                            ("mlp.c_fc", "ffn_up", True), ("mlp.c_proj", "ffn_down", True)):
            t[b + g + ".weight"] = W[s + hf + ".weight"].T if conv else W[s + hf + ".weight"]
            t[b + g + ".bias"] = W[s + hf + ".bias"]
    t["output_norm.weight"] = W[p + "ln_f.weight"]
    t["output_norm.bias"] = W[p + "ln_f.bias"]
    tied = cfg.get("tie_word_embeddings", True)
    t["output.weight"] = W[p + "wte.weight"] if tied else W["lm_head.weight"]
    return "gpt2", t


def gguf_values(t):
    """A GGUF tensor's values as float32, row-major (ne reversed)."""
    shape = tuple(int(x) for x in reversed(t.shape.tolist()))
    Q = gguf.GGMLQuantizationType
    raw = np.asarray(t.data)
    if t.tensor_type == Q.BF16:
        a = (np.frombuffer(raw.tobytes(), dtype=np.uint16).astype(np.uint32) << 16).view(
            np.float32)
    else:
        a = raw.astype(np.float32)
    return a.reshape(shape)


def check_hf2gguf(work):
    Q = gguf.GGMLQuantizationType
    pairs = json.load(open(os.path.join(work, "hf2gguf.json")))
    for src, path in pairs:
        tag = os.path.basename(path)
        arch, want = hf2gguf_expected(src)
        r = gguf.GGUFReader(path)
        check(gguf_field(r, "general.architecture") == arch, f"{tag}: architecture")
        got = {t.name: t for t in r.tensors}
        check(sorted(got) == sorted(want), f"{tag}: tensor names {sorted(set(got) ^ set(want))}")
        for name, w in want.items():
            if name not in got:
                continue
            t = got[name]
            g = gguf_values(t)
            if g.shape != w.shape:
                check(False, f"{tag}: {name} shape {g.shape}, want {w.shape}")
                continue
            if w.ndim == 1:
                check(t.tensor_type == Q.F32, f"{tag}: 1-D {name} is {t.tensor_type.name}")
            elif t.tensor_type == Q.F16:
                w = w.astype(np.float16).astype(np.float32)
            check(np.array_equal(g, w), f"{tag}: {name} values differ (max "
                  f"{float(np.abs(g - w).max())})")
        print(f"{tag}: {len(want)} tensors of {src} checked")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    work = sys.argv[1]
    if sys.argv[2] == "--hf2gguf":
        check_hf2gguf(work)
        print(f"{len(failures)} failures")
        sys.exit(1 if failures else 0)
    for name in sys.argv[2:]:
        e = json.load(open(os.path.join(work, name + ".expect.json")))
        ids = [int(x) for x in open(os.path.join(work, name + ".ids")).read().split()]
        want = np.fromfile(os.path.join(work, name + ".logits"), dtype=np.float32)
        want = want.reshape(len(ids), e["vocab"]).astype(np.float64)
        check_gguf(work, name, e, ids, want)
        check_hf(work, name, e, ids, want)
    print(f"gguf {gguf.__version__ if hasattr(gguf, '__version__') else '?'}, "
          f"numpy {np.__version__}: {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
