#!/usr/bin/env python3
"""Writes a Hugging Face LlamaForCausalLM directory from a llama GGUF file, for the SmolLM2 case
of tests/unit/infer_hf (the HF-directory path against the GGUF path on the same weights).

    python3 gguf_to_hf.py MODEL.gguf OUT_DIR

Every tensor is dequantized with gguf-py (gguf.quants.dequantize) and stored as F32, so both
paths run the same float values. attn_q / attn_k rows are un-permuted: llama.cpp's converter
(convert_hf_to_gguf.py, LlamaModel.permute) reorders each head's rows from HF's halves
(i, i + D/2) into adjacent pairs (2i, 2i + 1), reshape(n_head, 2, D/2, C).swapaxes(1, 2); the
inverse is reshape(n_head, D/2, 2, C).swapaxes(1, 2). The tokenizer is written as a tokenizer.json
(BPE over the GGUF tokens and merges; control tokens as special added_tokens; the pre-tokenizer
that llama.cpp's "smollm" names: Digits(individual) then ByteLevel) and tokenizer_config.json
(eos/bos, chat_template). Only what this check needs: llama architecture, gpt2 tokenizer model,
pre "smollm".
"""
import json
import os
import struct
import sys

import numpy as np


def main(src, out):
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(src)

    def field(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            if f.types[1] == gguf.GGUFValueType.STRING:
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            return [f.parts[i][0].item() for i in f.data]
        v = f.parts[f.data[0]]
        return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0].item()

    assert field("general.architecture") == "llama"
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "smollm"
    a = "llama"
    H, G = field(a + ".attention.head_count"), field(a + ".attention.head_count_kv")
    C = field(a + ".embedding_length")
    w = {t.name: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
        [int(n) for n in reversed(t.shape.tolist())]) for t in r.tensors}
    V = w["token_embd.weight"].shape[0]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": C,
           "intermediate_size": field(a + ".feed_forward_length"),
           "num_hidden_layers": field(a + ".block_count"), "num_attention_heads": H,
           "num_key_value_heads": G, "max_position_embeddings": field(a + ".context_length"),
           "vocab_size": V, "rms_norm_eps": field(a + ".attention.layer_norm_rms_epsilon"),
           "rope_theta": field(a + ".rope.freq_base", 10000.0), "rope_scaling": None,
           "tie_word_embeddings": "output.weight" not in w, "hidden_act": "silu",
           "torch_dtype": "float32"}

    def unpermute(m, n_head):
        return m.reshape(n_head, m.shape[0] // n_head // 2, 2, *m.shape[1:]).swapaxes(1, 2) \
            .reshape(m.shape)

    names = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    hf = {"model.embed_tokens.weight": w["token_embd.weight"],
          "model.norm.weight": w["output_norm.weight"]}
    if "output.weight" in w:
        hf["lm_head.weight"] = w["output.weight"]
    for l in range(cfg["num_hidden_layers"]):
        for g_name, h_name in names.items():
            m = w["blk.%d.%s.weight" % (l, g_name)]
            if g_name == "attn_q":
                m = unpermute(m, H)
            elif g_name == "attn_k":
                m = unpermute(m, G)
            hf["model.layers.%d.%s.weight" % (l, h_name)] = m

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    header, off = {}, 0
    order = sorted(hf)
    for n in order:
        header[n] = {"dtype": "F32", "shape": list(hf[n].shape),
                     "data_offsets": [off, off + hf[n].nbytes]}
        off += hf[n].nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for n in order:
            f.write(np.ascontiguousarray(hf[n]).tobytes())

    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(tokens) if types[i] == 3]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
          "normalizer": None,
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Digits", "individual_digits": True},
              {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}]},
          "post_processor": None,
          "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                      "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                    "vocab": {t: i for i, t in enumerate(tokens)},
                    "merges": field("tokenizer.ggml.merges")}}
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    tc = {"add_bos_token": False}
    for key, name in [("bos_token", "tokenizer.ggml.bos_token_id"),
                      ("eos_token", "tokenizer.ggml.eos_token_id")]:
        if field(name) is not None:
            tc[key] = tokens[field(name)]
    if field("tokenizer.chat_template") is not None:
        tc["chat_template"] = field("tokenizer.chat_template")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
