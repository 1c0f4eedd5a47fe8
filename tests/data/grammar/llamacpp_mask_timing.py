#!/usr/bin/env python3
"""Peer timing for tests/unit/grammar (smollm2 cases): llama.cpp's grammar sampler
(llama_sampler_init_grammar + llama_sampler_apply, through llama-cpp-python's ctypes API) on the
SmolLM2-135M vocabulary, with the same kind of run as the C++ test: greedy decoding of seeded
random logits under the same JSON grammar (json_object.gbnf here is infer::json_gbnf(), checked
by json_test.cpp). Prints ms per apply() and the load average.

Usage: python3 llamacpp_mask_timing.py MODEL.gguf [GRAMMAR.gbnf] [seeds] [steps]
"""
import ctypes
import os
import random
import sys
import time

import llama_cpp as L


def main():
    model_path = sys.argv[1]
    gpath = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "json_object.gbnf")
    seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    budget = int(sys.argv[4]) if len(sys.argv) > 4 else 150
    L.llama_backend_init()
    mp = L.llama_model_default_params()
    mp.vocab_only = True
    model = L.llama_model_load_from_file(model_path.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    n = L.llama_vocab_n_tokens(vocab)
    eos = L.llama_vocab_eos(vocab)
    gtext = open(gpath, "rb").read()
    pieces = []
    buf = ctypes.create_string_buffer(256)
    for t in range(n):
        k = L.llama_token_to_piece(vocab, t, buf, 256, 0, False)
        pieces.append(buf.raw[:max(k, 0)])
    closing = [t for t in range(n) if pieces[t] in (b'"', b'}', b']', b':', b'0')] + [eos]
    arr_t = L.llama_token_data * n
    total_ms, steps, done_runs = 0.0, 0, 0
    for seed in range(1, seeds + 1):
        smpl = L.llama_sampler_init_grammar(vocab, gtext, b"root")
        rng = random.Random(seed)
        for step in range(budget + 400):
            data = arr_t()
            for t in range(n):
                data[t].id = t
                data[t].logit = rng.random()
                data[t].p = 0.0
            if step >= budget:
                for t in closing:
                    data[t].logit += 10
            cur = L.llama_token_data_array(data, n, -1, False)
            t0 = time.perf_counter()
            L.llama_sampler_apply(smpl, ctypes.byref(cur))
            total_ms += (time.perf_counter() - t0) * 1e3
            steps += 1
            best = max(range(n), key=lambda t: data[t].logit)
            if best == eos:
                done_runs += 1
                break
            L.llama_sampler_accept(smpl, best)
        L.llama_sampler_free(smpl)
    print(f"llama.cpp grammar sampler: {total_ms / steps:.3f} ms per apply over {steps} steps "
          f"({done_runs}/{seeds} runs ended); load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
