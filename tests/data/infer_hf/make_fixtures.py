#!/usr/bin/env python3
"""Fixtures for tests/unit/infer_hf: tiny random Hugging Face model directories and a gpt2 GGUF,
with reference logits from an independent numpy forward (float64).

    python3 make_fixtures.py      # rewrites everything under tests/data/infer_hf

Written (seed printed; deterministic):
  llama_f32/   LlamaForCausalLM, F32, tie_word_embeddings, GQA (2 heads, 1 kv head), head_dim 12
               != hidden/heads = 16, rope_theta 500000
  llama_f16/   LlamaForCausalLM, F16, untied lm_head, attention_bias, GQA (4, 2),
               rope_scaling linear x2, rms_norm_eps 1e-6
  gpt2_f16/    GPT2LMHeadModel, F16, width 24, tied, names under "transformer.", n_inner null
               (4 n_embd),
               a byte-level BPE tokenizer.json (+ tokenizer_config.json)
  gpt2_bf16/   GPT2LMHeadModel, BF16, width 24, untied lm_head, names without the prefix, n_inner 32
  gpt2_f16.gguf  gpt2_bf16's weights in llama.cpp's gpt2 layout (gguf-py GGUFWriter), F16 (the
               values are chosen exact in both BF16 and F16), output.weight present
  reference.json  the prompt, the model names in the order of logits.f32, tokenizer cases (ids
               from the `tokenizers` package)
  logits.f32   per model, all positions' logits (len(prompt) x vocab, float32 little-endian);
               gpt2_f16.gguf has gpt2_bf16's

The forwards follow Hugging Face's definitions (transformers modeling_llama.py, modeling_gpt2.py):
  llama: x = embed[ids]; per layer h = rmsnorm(x) * w (x / sqrt(mean x^2 + eps));
         q, k, v = h Wq^T (+b), h Wk^T (+b), h Wv^T (+b); RoPE with rotate_half:
         inv_freq = 1 / theta^(arange(0, D, 2) / D), (linear scaling: positions / factor),
         emb = cat(freqs, freqs), q * cos + rotate_half(q) * sin, rotate_half(x) = cat(-x2, x1);
         kv heads repeated (head h reads kv head h // (H / G)); causal softmax(q k^T / sqrt(D)) v;
         x += o Wo^T (+bo); x += down(silu(gate(h)) * up(h)) with h = rmsnorm(x) * w2;
         logits = rmsnorm(x) * norm @ lm_head^T (embed when tied)
  gpt2:  x = wte[ids] + wpe[pos]; h = LayerNorm(x; ln_1) (biased variance); qkv = h @ c_attn.W
         + b (Conv1D: W is (in, out)); split q, k, v; causal softmax(q k^T / sqrt(D)) v;
         x += o @ c_proj.W + b; x += gelu_new(LN(x; ln_2) @ c_fc.W + b) @ mlp.c_proj.W + b,
         gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
         logits = LayerNorm(x; ln_f) @ wte^T (lm_head when untied)
"""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261207
PROMPT = [3, 17, 42, 5, 63, 0, 28, 11]


# ---- numeric helpers --------------------------------------------------------------------------

def bf16_round(a):
    """Round float32 values to bfloat16 (nearest even), returned as float32."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return (u.astype(np.uint32) << 16).view(np.float32)


def bf16_bits(a):
    return (np.asarray(a, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def stored(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_round(a)
    if dtype == "BF16F16":  # exact in both bf16 and f16: bf16 values away from f16 subnormals
        a = np.where(np.abs(a) < 1e-3, np.sign(a) * 1e-3, a).astype(np.float32)
        a = bf16_round(a)
        assert np.array_equal(a.astype(np.float16).astype(np.float32), a)
        return a
    return a


def save_safetensors(path, tensors, dtype):
    """safetensors file written by hand (the format: u64 header size, JSON header, data), so that
    BF16 needs no ml_dtypes; tensors is {name: float32 array already rounded to dtype}."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            b = a.tobytes()
        elif dtype == "F16":
            b = a.astype(np.float16).tobytes()
        else:
            b = bf16_bits(a).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- forwards (float64) -----------------------------------------------------------------------

def softmax_causal(s):
    T = s.shape[-1]
    s = s + np.triu(np.full((T, T), -np.inf), 1)
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def llama_forward(cfg, w, ids):
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    G = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim") or C // H
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    W = {k: v.astype(np.float64) for k, v in w.items()}

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, D, 2, dtype=np.float64) / D))
    pos = np.arange(T, dtype=np.float64)
    sc = cfg.get("rope_scaling")
    if sc:
        assert sc["rope_type"] == "linear"
        pos = pos / sc["factor"]
    freqs = np.outer(pos, inv_freq)
    emb = np.concatenate([freqs, freqs], -1)
    cos, sin = np.cos(emb), np.sin(emb)

    def rot_half(x):
        return np.concatenate([-x[..., D // 2:], x[..., : D // 2]], -1)

    def lin(x, name, bias):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if bias else y

    ab = cfg.get("attention_bias", False)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms(x, W[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj", ab).reshape(T, H, D).transpose(1, 0, 2)
        k = lin(h, p + "self_attn.k_proj", ab).reshape(T, G, D).transpose(1, 0, 2)
        v = lin(h, p + "self_attn.v_proj", ab).reshape(T, G, D).transpose(1, 0, 2)
        q = q * cos + rot_half(q) * sin
        k = k * cos + rot_half(k) * sin
        k = np.repeat(k, H // G, axis=0)
        v = np.repeat(v, H // G, axis=0)
        a = softmax_causal(q @ k.transpose(0, 2, 1) / np.sqrt(D)) @ v
        x = x + lin(a.transpose(1, 0, 2).reshape(T, H * D), p + "self_attn.o_proj", ab)
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = lin(h, p + "mlp.gate_proj", False)
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, p + "mlp.up_proj", False), p + "mlp.down_proj",
                    False)
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    return rms(x, W["model.norm.weight"]) @ head.T


def gpt2_forward(cfg, w, ids, pre):
    C, H = cfg["n_embd"], cfg["n_head"]
    D = C // H
    eps = cfg["layer_norm_epsilon"]
    T = len(ids)
    W = {k: v.astype(np.float64) for k, v in w.items()}

    def ln(x, name):
        m = x.mean(-1, keepdims=True)
        var = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(var + eps) * W[name + ".weight"] + W[name + ".bias"]

    def conv1d(x, name):
        return x @ W[name + ".weight"] + W[name + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    x = W[pre + "wte.weight"][ids] + W[pre + "wpe.weight"][:T]
    for l in range(cfg["n_layer"]):
        p = pre + "h.%d." % l
        qkv = conv1d(ln(x, p + "ln_1"), p + "attn.c_attn")
        q, k, v = [t.reshape(T, H, D).transpose(1, 0, 2) for t in np.split(qkv, 3, -1)]
        a = softmax_causal(q @ k.transpose(0, 2, 1) / np.sqrt(D)) @ v
        x = x + conv1d(a.transpose(1, 0, 2).reshape(T, C), p + "attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    head = W["lm_head.weight"] if not cfg["tie_word_embeddings"] else W[pre + "wte.weight"]
    return ln(x, pre + "ln_f") @ head.T


# ---- random models ----------------------------------------------------------------------------

def llama_model(rng, cfg, dtype):
    C, H = cfg["hidden_size"], cfg["num_attention_heads"]
    G = cfg.get("num_key_value_heads", H)
    D = cfg.get("head_dim") or C // H
    F, V = cfg["intermediate_size"], cfg["vocab_size"]
    w = {}

    def mat(name, r, c, s):
        w[name] = stored(s * rng.standard_normal((r, c)), dtype)

    def vec(name, n, s, base=0.0):
        w[name] = stored(base + s * rng.standard_normal(n), dtype)

    mat("model.embed_tokens.weight", V, C, 0.5)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        vec(p + "input_layernorm.weight", C, 0.1, 1.0)
        mat(p + "self_attn.q_proj.weight", H * D, C, 0.3)
        mat(p + "self_attn.k_proj.weight", G * D, C, 0.3)
        mat(p + "self_attn.v_proj.weight", G * D, C, 0.3)
        mat(p + "self_attn.o_proj.weight", C, H * D, 0.2)
        if cfg.get("attention_bias"):
            vec(p + "self_attn.q_proj.bias", H * D, 0.1)
            vec(p + "self_attn.k_proj.bias", G * D, 0.1)
            vec(p + "self_attn.v_proj.bias", G * D, 0.1)
            vec(p + "self_attn.o_proj.bias", C, 0.1)
        vec(p + "post_attention_layernorm.weight", C, 0.1, 1.0)
        mat(p + "mlp.gate_proj.weight", F, C, 0.2)
        mat(p + "mlp.up_proj.weight", F, C, 0.2)
        mat(p + "mlp.down_proj.weight", C, F, 0.2)
    vec("model.norm.weight", C, 0.1, 1.0)
    if not cfg["tie_word_embeddings"]:
        mat("lm_head.weight", V, C, 0.3)
    return w


def gpt2_model(rng, cfg, dtype, pre):
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    F = cfg["n_inner"] or 4 * C
    w = {}

    def mat(name, r, c, s):
        w[name] = stored(s * rng.standard_normal((r, c)), dtype)

    def vec(name, n, s, base=0.0):
        w[name] = stored(base + s * rng.standard_normal(n), dtype)

    mat(pre + "wte.weight", V, C, 0.5)
    mat(pre + "wpe.weight", P, C, 0.2)
    for l in range(cfg["n_layer"]):
        p = pre + "h.%d." % l
        vec(p + "ln_1.weight", C, 0.1, 1.0)
        vec(p + "ln_1.bias", C, 0.1)
        mat(p + "attn.c_attn.weight", C, 3 * C, 0.3)  # Conv1D: (in, out)
        vec(p + "attn.c_attn.bias", 3 * C, 0.1)
        mat(p + "attn.c_proj.weight", C, C, 0.2)
        vec(p + "attn.c_proj.bias", C, 0.1)
        vec(p + "ln_2.weight", C, 0.1, 1.0)
        vec(p + "ln_2.bias", C, 0.1)
        mat(p + "mlp.c_fc.weight", C, F, 0.3)
        vec(p + "mlp.c_fc.bias", F, 0.1)
        mat(p + "mlp.c_proj.weight", F, C, 0.2)
        vec(p + "mlp.c_proj.bias", C, 0.1)
    vec(pre + "ln_f.weight", C, 0.1, 1.0)
    vec(pre + "ln_f.bias", C, 0.1)
    if not cfg["tie_word_embeddings"]:
        mat("lm_head.weight", V, C, 0.3)
    return w


def write_dir(name, cfg, w, dtype):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_safetensors(os.path.join(d, "model.safetensors"), w, dtype)
    return d


def write_gpt2_gguf(path, cfg, w, pre):
    """llama.cpp's gpt2 layout (convert_hf_to_gguf.py GPT2Model: Conv1D weights transposed to
    (out, in) rows, c_attn kept fused as attn_qkv)."""
    import gguf

    C, H, P = cfg["n_embd"], cfg["n_head"], cfg["n_positions"]
    F = cfg["n_inner"] or 4 * C
    g = gguf.GGUFWriter(path, "gpt2")
    g.add_uint32("gpt2.context_length", P)
    g.add_uint32("gpt2.embedding_length", C)
    g.add_uint32("gpt2.feed_forward_length", F)
    g.add_uint32("gpt2.block_count", cfg["n_layer"])
    g.add_uint32("gpt2.attention.head_count", H)
    g.add_float32("gpt2.attention.layer_norm_epsilon", cfg["layer_norm_epsilon"])

    def t(name, a):
        g.add_tensor(name, np.ascontiguousarray(a, dtype=np.float16))

    t("token_embd.weight", w[pre + "wte.weight"])
    t("position_embd.weight", w[pre + "wpe.weight"])
    for l in range(cfg["n_layer"]):
        p, b = pre + "h.%d." % l, "blk.%d." % l
        for src, dst, tr in [("ln_1", "attn_norm", False), ("attn.c_attn", "attn_qkv", True),
                             ("attn.c_proj", "attn_output", True), ("ln_2", "ffn_norm", False),
                             ("mlp.c_fc", "ffn_up", True), ("mlp.c_proj", "ffn_down", True)]:
            t(b + dst + ".weight", w[p + src + ".weight"].T if tr else w[p + src + ".weight"])
            t(b + dst + ".bias", w[p + src + ".bias"])
    t("output_norm.weight", w[pre + "ln_f.weight"])
    t("output_norm.bias", w[pre + "ln_f.bias"])
    if not cfg["tie_word_embeddings"]:
        t("output.weight", w["lm_head.weight"])
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


# ---- tokenizer --------------------------------------------------------------------------------

TOKENIZER_TEXTS = ["the cat sat", "a tale of the heat", "hello<|endoftext|>the"]


def write_tokenizer(d):
    """A small byte-level BPE tokenizer.json (letters, space, merges) with one special token."""
    from tokenizers import Tokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz") + ["\u0120"]  # U+0120 is GPT-2's byte for ' '
    merges = [["t", "h"], ["th", "e"], ["\u0120", "t"], ["\u0120t", "he"], ["a", "t"],
              ["e", "a"], ["\u0120", "a"], ["\u0120", "c"], ["\u0120c", "at"], ["h", "e"]]
    vocab = {c: i for i, c in enumerate(chars)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    eot = len(vocab)  # the tokenizer has fewer tokens than the model's rows, as often
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": eot, "content": "<|endoftext|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    text = json.dumps(tj, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
                   "add_bos_token": False,
                   "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}, f)
    tok = Tokenizer.from_str(text)
    return [{"text": s, "ids": tok.encode(s).ids} for s in TOKENIZER_TEXTS], eot


def main():
    print("make_fixtures.py: seed", SEED)
    rng = np.random.default_rng(SEED)
    ref = {"prompt": PROMPT, "models": []}
    blobs = []

    def record(name, logits):
        ref["models"].append(name)
        blobs.append(np.asarray(logits, dtype="<f4").tobytes())

    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
           "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
           "num_key_value_heads": 1, "head_dim": 12, "max_position_embeddings": 64,
           "vocab_size": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "rope_scaling": None, "tie_word_embeddings": True, "attention_bias": False,
           "hidden_act": "silu", "torch_dtype": "float32"}
    w = llama_model(rng, cfg, "F32")
    write_dir("llama_f32", cfg, w, "F32")
    record("llama_f32", llama_forward(cfg, w, PROMPT))

    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
           "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "max_position_embeddings": 64, "vocab_size": 64,
           "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "tie_word_embeddings": False,
           "attention_bias": True, "hidden_act": "silu", "torch_dtype": "float16"}
    w = llama_model(rng, cfg, "F16")
    write_dir("llama_f16", cfg, w, "F16")
    record("llama_f16", llama_forward(cfg, w, PROMPT))

    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 24,
           "n_head": 4, "n_layer": 2, "n_positions": 16, "n_inner": None, "vocab_size": 64,
           "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
           "tie_word_embeddings": True, "torch_dtype": "float16"}
    w = gpt2_model(rng, cfg, "F16", "transformer.")
    d = write_dir("gpt2_f16", cfg, w, "F16")
    record("gpt2_f16", gpt2_forward(cfg, w, PROMPT, "transformer."))
    ref["tokenizer"], ref["eos"] = write_tokenizer(d)

    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 24,
           "n_head": 4, "n_layer": 2, "n_positions": 16, "n_inner": 32, "vocab_size": 64,
           "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    w = gpt2_model(rng, cfg, "BF16F16", "")
    write_dir("gpt2_bf16", cfg, w, "BF16")
    record("gpt2_bf16", gpt2_forward(cfg, w, PROMPT, ""))
    write_gpt2_gguf(os.path.join(HERE, "gpt2_f16.gguf"), cfg, w, "")  # same logits

    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    with open(os.path.join(HERE, "logits.f32"), "wb") as f:
        f.write(b"".join(blobs))


if __name__ == "__main__":
    main()
