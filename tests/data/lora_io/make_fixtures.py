#!/usr/bin/env python3
"""Fixtures of tests/unit/lora_io, computed independently of typeformer with numpy, safetensors
and gguf-py (python3 tests/data/lora_io/make_fixtures.py rewrites them; seed fixed).

  base_tiny.gguf             a tiny random llama base (2 layers, n_embd 16, 4 heads, 2 KV heads,
                             ffn 24, vocab 256, no tokenizer), F32, written with gguf-py's GGUFWriter; q/k rows
                             in GGUF order: the HF weights put through llama.cpp's permute
                             (convert_hf_to_gguf.py LlamaModel.permute: per head, rows
                             (2, D/2) -> (D/2, 2))
  peft_tiny/                 a PEFT adapter on all seven projections (r 4, lora_alpha 12,
                             use_rslora true -> scale 12 / sqrt(4) = 6), saved as PEFT saves it
                             (safetensors.numpy.save_file, metadata {"format": "pt"}); lora_B of
                             q_proj / k_proj in HF (rotate_half) row order
  expected.safetensors       blk.<l>.<name>.weight: the merged weights in GGUF order, computed
                             as permute(W_hf + scale * B_hf @ A) for q/k and W + scale * B @ A
                             otherwise (float64, stored F32); blk.<l>.attn_{q,k}.lora_b: B of
                             q/k in GGUF order (permute(B_hf)); model.layers.<l>.self_attn.
                             {q,k}_proj.weight: the merged HF weights W_hf + scale * B_hf @ A
                             (rotate_half rows, what io::export_hf of the merged model holds)
"""
import json
import os

import gguf
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
L, C, H, G, F, V = 2, 16, 4, 2, 24, 256  # V = 256: io::byte_vocabulary fits
D = C // H
R, ALPHA = 4, 12.0
SCALE = ALPHA / np.sqrt(R)  # rsLoRA


def permute(w, n_head):
    """HF rotate_half rows -> GGUF interleaved rows (llama.cpp LlamaModel.permute)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main():
    rng = np.random.default_rng(20261207)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
    shapes = {  # HF module -> (out, in), GGUF stem
        "self_attn.q_proj": ((H * D, C), "attn_q"),
        "self_attn.k_proj": ((G * D, C), "attn_k"),
        "self_attn.v_proj": ((G * D, C), "attn_v"),
        "self_attn.o_proj": ((C, H * D), "attn_output"),
        "mlp.gate_proj": ((F, C), "ffn_gate"),
        "mlp.up_proj": ((F, C), "ffn_up"),
        "mlp.down_proj": ((C, F), "ffn_down"),
    }
    heads = {"self_attn.q_proj": H, "self_attn.k_proj": G}

    w = gguf.GGUFWriter(os.path.join(HERE, "base_tiny.gguf"), "llama")
    w.add_block_count(L)
    w.add_context_length(64)
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(G)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(D)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    w.add_tensor("token_embd.weight", f32(rng.standard_normal((V, C)) * 0.1))
    adapter, expected = {}, {}
    for l in range(L):
        w.add_tensor(f"blk.{l}.attn_norm.weight", f32(1 + 0.1 * rng.standard_normal(C)))
        w.add_tensor(f"blk.{l}.ffn_norm.weight", f32(1 + 0.1 * rng.standard_normal(C)))
        for mod, ((out, inn), stem) in shapes.items():
            W = f32(rng.standard_normal((out, inn)) * 0.2).astype(np.float64)
            A = f32(rng.standard_normal((R, inn)) * 0.3)
            B = f32(rng.standard_normal((out, R)) * 0.3)
            prefix = f"base_model.model.model.layers.{l}.{mod}"
            adapter[prefix + ".lora_A.weight"] = A
            adapter[prefix + ".lora_B.weight"] = B
            merged = W + SCALE * (B.astype(np.float64) @ A.astype(np.float64))
            if mod in heads:
                expected[f"model.layers.{l}.{mod}.weight"] = f32(merged)
                W = permute(W, heads[mod])
                merged = permute(merged, heads[mod])
                expected[f"blk.{l}.{stem}.lora_b"] = f32(permute(B, heads[mod]))
            w.add_tensor(f"blk.{l}.{stem}.weight", f32(W))
            expected[f"blk.{l}.{stem}.weight"] = f32(merged)
    w.add_tensor("output_norm.weight", f32(np.ones(C)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    os.makedirs(os.path.join(HERE, "peft_tiny"), exist_ok=True)
    save_file(adapter, os.path.join(HERE, "peft_tiny", "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "tiny-llama",
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": ALPHA,
        "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "r": R, "rank_pattern": {},
        "revision": None,
        "target_modules": ["down_proj", "k_proj", "q_proj", "up_proj", "o_proj", "gate_proj",
                           "v_proj"],
        "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": True,
    }
    with open(os.path.join(HERE, "peft_tiny", "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file(expected, os.path.join(HERE, "expected.safetensors"),
              metadata={"scale": repr(float(SCALE))})


if __name__ == "__main__":
    main()
