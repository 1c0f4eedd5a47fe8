#!/usr/bin/env python3
"""A numpy BERT encoder with sentence-transformers pooling: the reference of infer/bert.hpp.

Written from the published definitions (Devlin et al., arXiv:1810.04805; Hugging Face
transformers' BertModel: post-LN blocks, GELU with erf; sentence-transformers' Pooling with
mean over the attention mask, then Normalize), reading the weights with safetensors.numpy and
tokenizing with the `tokenizers` package. It shares no code with typeformer.

  reference.py fixtures MODEL_DIR OUT_DIR
      float64 forward of SENTENCES, one sequence at a time; writes OUT_DIR/reference.json
      {"model": ..., "dim": C, "sentences": [...], "ids": [[...]...]} and
      OUT_DIR/reference_embeddings.f32 (len(SENTENCES) x C little-endian float32, row-major).
  reference.py tiny OUT_DIR
      writes a tiny random BERT directory OUT_DIR/tiny (config.json, model.safetensors from a
      seeded numpy generator, the 300-token small_tokenizer.json as tokenizer.json,
      sentence_bert_config.json with max_seq_length 24) and OUT_DIR/tiny_reference.json with
      the float64 embeddings of TINY_SENTENCES: the always-run check of the forward pass.
  reference.py bench MODEL_DIR COUNT BATCH
      float32 forward of COUNT short sentences in padded batches of BATCH with an attention
      mask (what sentence-transformers does with PyTorch), printing sentences/s. numpy uses
      its BLAS threads (set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS to pin them).
"""
import json
import math
import sys
import time

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The quick brown fox jumps over the lazy dog.",
    "Sentence embeddings map text to vectors for semantic search.",
    "typeformer is a header-only C++20 library for tensors and transformers.",
    "Héllo wörld, café naïve résumé!",
    "日本語の文章も埋め込めます。",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "",
    "a",
    "Supercalifragilisticexpialidocious words get split into many WordPiece tokens by BERT.",
    "Long sentence " + " ".join(f"word{i}" for i in range(60)) + " end.",
]

TINY_SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "a",
    "C++ is not C#; it's the text embedding of a sentence vector!",
    "supercalifragilistic words, Ecole cafe, 日本語 and 123 456 789 " * 3,  # truncated at 24
]

_erf = np.frompyfunc(math.erf, 1, 1)


class Bert:
    def __init__(self, model_dir, dtype):
        cfg = json.load(open(f"{model_dir}/config.json"))
        assert cfg["model_type"] == "bert" and cfg["hidden_act"] == "gelu"
        self.H = cfg["num_attention_heads"]
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_eps"]
        self.w = {k: v.astype(dtype) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
        self.dtype = dtype
        self.tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self.tok.no_padding()
        try:
            max_len = json.load(open(f"{model_dir}/sentence_bert_config.json"))["max_seq_length"]
        except FileNotFoundError:
            max_len = cfg["max_position_embeddings"]
        self.tok.enable_truncation(max_len)  # sentence-transformers' max_seq_length

    def ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def lin(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def gelu(self, x):
        if self.dtype == np.float64:
            return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
        # float32 bench: erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), vectorised.
        z = x / np.float32(math.sqrt(2.0))
        a = np.abs(z)
        t = 1.0 / (1.0 + 0.3275911 * a)
        y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
                   + 0.254829592) * t * np.exp(-a * a)
        return (0.5 * x * (1.0 + np.sign(z) * y)).astype(self.dtype)

    def forward(self, ids, mask):
        """ids, mask: (B, T) ints; returns the last hidden state (B, T, C)."""
        w = self.w
        B, T = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] +
             w["embeddings.position_embeddings.weight"][:T][None] +
             w["embeddings.token_type_embeddings.weight"][0])
        x = self.ln(x, "embeddings.LayerNorm")
        C = x.shape[-1]
        D = C // self.H
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(self.dtype).min).astype(self.dtype)
        for l in range(self.L):
            p = f"encoder.layer.{l}."
            heads = lambda y: y.reshape(B, T, self.H, D).transpose(0, 2, 1, 3)
            q = heads(self.lin(x, p + "attention.self.query"))
            k = heads(self.lin(x, p + "attention.self.key"))
            v = heads(self.lin(x, p + "attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(self.dtype(D)) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
            a = self.ln(self.lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self.gelu(self.lin(a, p + "intermediate.dense"))
            x = self.ln(self.lin(h, p + "output.dense") + a, p + "output.LayerNorm")
        return x

    def embed(self, texts):
        encs = self.tok.encode_batch(texts)
        T = max(len(e.ids) for e in encs)
        ids = np.zeros((len(texts), T), np.int64)
        mask = np.zeros((len(texts), T), np.int64)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        h = self.forward(ids, mask)
        m = mask[..., None].astype(self.dtype)
        pooled = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        norm = np.sqrt((pooled * pooled).sum(-1, keepdims=True))
        return pooled / np.maximum(norm, 1e-12), [e.ids for e in encs]


def make_tiny(out):
    import os
    import shutil
    from safetensors.numpy import save_file
    d = f"{out}/tiny"
    os.makedirs(d, exist_ok=True)
    vocab = len(json.load(open(f"{out}/small_tokenizer.json"))["model"]["vocab"])
    C, H, F, L, P = 16, 2, 32, 2, 32
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
           "hidden_size": C, "num_attention_heads": H, "intermediate_size": F,
           "num_hidden_layers": L, "max_position_embeddings": P, "vocab_size": vocab,
           "type_vocab_size": 2, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"}
    json.dump(cfg, open(f"{d}/config.json", "w"), indent=2)
    json.dump({"max_seq_length": 24, "do_lower_case": False},
              open(f"{d}/sentence_bert_config.json", "w"))
    shutil.copy(f"{out}/small_tokenizer.json", f"{d}/tokenizer.json")
    rng = np.random.default_rng(20240518)
    w = {}
    def mat(name, *shape, scale=0.3):
        w[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    mat("embeddings.word_embeddings.weight", vocab, C, scale=1.0)
    mat("embeddings.position_embeddings.weight", P, C, scale=0.5)
    mat("embeddings.token_type_embeddings.weight", 2, C, scale=0.5)
    def ln(name):
        w[name + ".weight"] = (1 + 0.2 * rng.standard_normal(C)).astype(np.float32)
        w[name + ".bias"] = (0.1 * rng.standard_normal(C)).astype(np.float32)
    ln("embeddings.LayerNorm")
    for l in range(L):
        p = f"encoder.layer.{l}."
        for n, (o, i) in {"attention.self.query": (C, C), "attention.self.key": (C, C),
                          "attention.self.value": (C, C), "attention.output.dense": (C, C),
                          "intermediate.dense": (F, C), "output.dense": (C, F)}.items():
            mat(p + n + ".weight", o, i, scale=1.0 / math.sqrt(i))
            mat(p + n + ".bias", o, scale=0.1)
        ln(p + "attention.output.LayerNorm")
        ln(p + "output.LayerNorm")
    save_file(w, f"{d}/model.safetensors")
    bert = Bert(d, np.float64)
    rows, ids = [], []
    for s in TINY_SENTENCES:
        e, i = bert.embed([s])
        rows.append([float(x) for x in e[0]])
        ids.append(i[0])
    json.dump({"sentences": TINY_SENTENCES, "ids": ids, "embeddings": rows},
              open(f"{out}/tiny_reference.json", "w", encoding="utf-8"), ensure_ascii=False)
    print(f"tiny: vocab {vocab}, {len(w)} tensors, {len(TINY_SENTENCES)} sentences")


def main():
    mode, model_dir = sys.argv[1], sys.argv[2]
    if mode == "fixtures":
        out = sys.argv[3]
        bert = Bert(model_dir, np.float64)
        rows, ids = [], []
        for s in SENTENCES:  # one at a time: no padding involved in the reference
            e, i = bert.embed([s])
            rows.append(e[0])
            ids.append(i[0])
        emb = np.asarray(rows, dtype="<f4")
        with open(f"{out}/reference.json", "w", encoding="utf-8") as f:
            json.dump({"model": "all-MiniLM-L6-v2", "dim": int(emb.shape[1]),
                       "sentences": SENTENCES, "ids": ids}, f, ensure_ascii=False)
            f.write("\n")
        emb.tofile(f"{out}/reference_embeddings.f32")
        print(f"{len(SENTENCES)} sentences, dim {emb.shape[1]}")
    elif mode == "tiny":
        make_tiny(model_dir)
    elif mode == "bench":
        count, batch = int(sys.argv[3]), int(sys.argv[4])
        bert = Bert(model_dir, np.float32)
        texts = [f"This is short sentence number {i} about topic {i % 17}." for i in range(count)]
        bert.embed(texts[:batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, count, batch):
            bert.embed(texts[i:i + batch])
        dt = time.perf_counter() - t0
        print(f"numpy float32: {count} sentences in {dt:.3f} s = {count / dt:.1f} sentences/s "
              f"(batch {batch})")
    else:
        sys.exit("usage: see the docstring")


if __name__ == "__main__":
    main()
