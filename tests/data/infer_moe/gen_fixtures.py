#!/usr/bin/env python3
"""Fixtures of tests/unit/infer_moe: the logits of tiny llama mixture-of-experts GGUFs from an
independent numpy forward and from llama.cpp (llama-cpp-python), so that the C++ test needs no
Python.

    python3 tests/data/infer_moe/gen_fixtures.py BUILD/tests/unit/infer_moe/tfm_test_infer_moe

The models are written by typeformer itself (the test's "write the fixture models" case, run
here: tests/support/moe_gguf.hpp, with a counter-based generator, so every build writes the same
F32 bytes): moe_f32 (F32 matrices), moe_q8_0 / moe_q4_0 (tfm::quantize_gguf of it), moe_tie (a
zero router). They are read back with gguf-py (gguf.GGUFReader, gguf.quants.dequantize) and run
in float64 from the model definition:

    llama block (tests/data/infer_model/reference.py: RMSNorm, GQA attention, RoPE pairs
    (2i, 2i+1)), with the MLP replaced by the mixture of experts of Mixtral
    (Jiang et al., arXiv:2401.04088) as llama.cpp's llama architecture gates it
    (llama-graph.cpp build_moe_ffn, LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX, norm_w = true):
        p = softmax(h Wr^T) over all E experts
        S = the k largest p (a stable sort: a tie goes to the lower expert id)
        x += sum_{e in S} p_e / sum_S p * (silu(h Wg_e^T) * (h Wu_e^T)) Wd_e^T

llama.cpp evaluates the same prompt with logits for every position (n_threads = 1). Writes
moe_logits.txt: "prompt ...", "fnv64.NAME hash", "numpy.NAME T*V logits", "llamacpp.NAME ..."
(not for moe_tie, whose ties llama.cpp's argsort may break either way), and prints the seed and
the smallest gap between the k-th and (k+1)-th router logit (a near-tie would make a
routing decision sensitive to rounding). --seed N tries another seed (prints, writes nothing).
"""
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "infer_model"))
from reference import forward as reference_forward, read_model  # noqa: E402

PROMPT = [3, 17, 42, 5, 63, 8, 28, 11, 9, 50, 33]


def fnv64(path):
    h = 0xCBF29CE484222325
    for b in open(path, "rb").read():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def forward(cfg, w, ids, k, gaps):
    """reference.forward with the mixture-of-experts FFN (llama.cpp's gating of the llama
    architecture: softmax over all E, the top k (ties: lower id), renormalised); gaps collects
    each token's router-logit gap between its k-th and (k+1)-th expert."""
    def moe_ffn(w, p, h):
        z = h @ w[p + "ffn_gate_inp.weight"].T  # (T, E)
        pr = np.exp(z - z.max(axis=1, keepdims=True))
        pr /= pr.sum(axis=1, keepdims=True)
        wg, wu, wd = (w[p + n] for n in ("ffn_gate_exps.weight", "ffn_up_exps.weight",
                                         "ffn_down_exps.weight"))  # (E,F,C) (E,F,C) (E,C,F)
        y = np.zeros_like(h)
        for t in range(h.shape[0]):
            order = np.argsort(-pr[t], kind="stable")
            sel = order[:k]
            if len(order) > k:
                gaps.append(z[t, order[k - 1]] - z[t, order[k]])
            wt = pr[t, sel] / pr[t, sel].sum()
            for e, a in zip(sel, wt):
                gate = wg[e] @ h[t]
                act = gate / (1 + np.exp(-gate)) * (wu[e] @ h[t])
                y[t] += a * (wd[e] @ act)
        return y

    return reference_forward(cfg, w, ids, ffn=moe_ffn)


def llamacpp_logits(path):
    import llama_cpp

    m = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=64, n_threads=1, verbose=False,
                        type_k=0, type_v=0)  # GGML_TYPE_F32: a float KV cache, as ours
    m.eval(PROMPT)
    return np.array(m.scores[: len(PROMPT)], dtype=np.float64), llama_cpp.__version__


def main():
    binary = sys.argv[1]
    if len(sys.argv) > 3 and sys.argv[2] == "--seed":  # try another seed (fixture_seed in the test)
        os.environ["TFM_MOE_SEED"] = sys.argv[3]
    out = tempfile.mkdtemp(prefix="infer_moe_fx_")
    r = subprocess.run([binary, "--no-skip", "--test-case=write the fixture models*"],
                       env=dict(os.environ, TFM_MOE_FIXTURE_OUT=out), capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(r.stdout + r.stderr)
    seed = re.search(r"seed (\d+)", r.stdout).group(1)
    print("seed", seed)
    lines = ["# tests/data/infer_moe/gen_fixtures.py: numpy float64 and llama.cpp logits of the",
             "# tiny MoE GGUFs written by typeformer (seed %s); rows of 64 logits per position" % seed,
             "prompt " + " ".join(map(str, PROMPT))]
    version = None
    for name in ("moe_f32", "moe_q8_0", "moe_q4_0", "moe_tie"):
        path = os.path.join(out, name + ".gguf")
        cfg, w = read_model(path)
        import gguf
        k = int(gguf.GGUFReader(path).fields["llama.expert_used_count"].parts[-1][0])
        gaps = []
        np_lg = forward(cfg, w, np.array(PROMPT), k, gaps)
        lines.append("fnv64.%s %d" % (name, fnv64(path)))
        lines.append("numpy.%s " % name + " ".join("%.9g" % v for v in np_lg.ravel()))
        msg = "%s: smallest router-logit gap z_k - z_k+1 = %.3g" % (name, min(gaps))
        if name != "moe_tie":
            lc, version = llamacpp_logits(path)
            lines.append("llamacpp.%s " % name + " ".join("%.9g" % v for v in lc.ravel()))
            msg += "; max |llama.cpp - numpy| / max |numpy| = %.3g" % (
                np.abs(lc - np_lg).max() / np.abs(np_lg).max())
        print(msg, flush=True)
    lines.insert(2, "# llama.cpp: llama-cpp-python %s, n_threads = 1" % version)
    if "TFM_MOE_SEED" in os.environ:
        return  # a trial: nothing written
    with open(os.path.join(HERE, "moe_logits.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
