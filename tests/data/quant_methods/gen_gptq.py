#!/usr/bin/env python3
"""Fixtures for tests/unit/quant_methods: an independent numpy GPTQ (Frantar et al. 2022,
arXiv:2210.17323, Algorithm 1, written from the paper and the structure of the authors'
gptq.py: dead columns, act-order, dampening, inverse Hessian through Cholesky, lazy batch
updates) on the 4-bit grids GGML's Q4_0 / Q4_1 blocks hold (f16 scale / minimum per group).

Group parameters are computed, as quant/gptq.hpp documents, from the row's current (error-
updated) weights when the group's first column is reached (static groups with act-order).

Writes (little-endian, raw):
  gptq_W.f32   rows x cols weights            gptq_X.f32   n x cols calibration inputs
  gptq_<case>_codes.u8  rows x cols codes      gptq_<case>_scale.f32 / _min.f32  rows x groups
  gptq_cases.txt        one line per case: name grid group act_order percdamp block
Run from anywhere: python3 tests/data/quant_methods/gen_gptq.py
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS, COLS, N = 24, 128, 192
SEED = 1234


def f16(v):
    return np.float32(np.float16(np.float32(v)))


def group_params(vals, grid):
    v = vals.astype(np.float32)
    if grid == "q4_0":
        best = v[int(np.argmax(np.abs(v)))]  # first of the largest magnitude
        return f16(best / np.float32(-8.0)), np.float32(0.0)
    mn, mx = v.min(), v.max()
    return f16((mx - mn) / np.float32(15.0)), f16(mn)


def quant(w, grid, d, m):
    if grid == "q4_0":
        q = 8 if d == 0 else int(np.clip(np.floor(w / np.float64(d) + 0.5) + 8, 0, 15))
        return q, np.float32(d * np.float32(q - 8))
    q = 0 if d == 0 else int(np.clip(np.floor((w - np.float64(m)) / np.float64(d) + 0.5), 0, 15))
    return q, np.float32(np.float32(d * np.float32(q)) + m)


def gptq(W, H, grid, group, act_order, percdamp, block):
    W = W.astype(np.float64).copy()
    H = H.copy()
    rows, cols = W.shape
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    ng = cols // group
    scale = np.zeros((rows, ng), np.float32)
    mins = np.zeros((rows, ng), np.float32)
    if act_order:  # static groups from the original weights
        for r in range(rows):
            for g in range(ng):
                scale[r, g], mins[r, g] = group_params(W[r, g * group:(g + 1) * group], grid)
        perm = np.argsort(-np.diag(H), kind="stable")
    else:
        perm = np.arange(cols)
    W = W[:, perm]
    H = H[perm][:, perm]
    damp = percdamp * np.mean(np.diag(H))
    H[np.arange(cols), np.arange(cols)] += damp
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky(Hinv).T  # upper, Hinv = U^T U
    codes = np.zeros((rows, cols), np.uint8)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros((rows, i2 - i1))
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = perm[i1 + i]
            for r in range(rows):
                if act_order:
                    d, m = scale[r, col // group], mins[r, col // group]
                else:
                    if (i1 + i) % group == 0:
                        scale[r, col // group], mins[r, col // group] = group_params(
                            W1[r, i:i + group], grid)
                    d, m = scale[r, col // group], mins[r, col // group]
                q, val = quant(W1[r, i], grid, d, m)
                codes[r, col] = q
                Err1[r, i] = (W1[r, i] - np.float64(val)) / U1[i, i]
            W1[:, i:] -= np.outer(Err1[:, i], U1[i, i:])
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return codes, scale, mins


def main():
    rng = np.random.default_rng(SEED)
    # correlated inputs with a few outlier channels and one dead channel
    A = rng.standard_normal((COLS, COLS)) * 0.3 + np.eye(COLS)
    X = (rng.standard_normal((N, COLS)) @ A).astype(np.float32)
    X[:, [3, 70]] *= 8.0
    X[:, 5] = 0.0
    W = (rng.standard_normal((ROWS, COLS)) * 0.05).astype(np.float32)
    W[2, :] *= 4.0
    Xd = X.astype(np.float64)
    H = 2.0 * (Xd.T @ Xd) / N
    cases = [("q40", "q4_0", 32, False, 0.01, 128), ("q41", "q4_1", 32, False, 0.01, 128),
             ("q40act", "q4_0", 32, True, 0.01, 128), ("q40g64", "q4_0", 64, False, 0.01, 64),
             ("q41act", "q4_1", 32, True, 0.1, 32)]
    W.tofile(os.path.join(HERE, "gptq_W.f32"))
    X.tofile(os.path.join(HERE, "gptq_X.f32"))
    with open(os.path.join(HERE, "gptq_cases.txt"), "w") as f:
        for name, grid, group, act, damp, block in cases:
            codes, scale, mins = gptq(W, H, grid, group, act, damp, block)
            codes.tofile(os.path.join(HERE, f"gptq_{name}_codes.u8"))
            scale.tofile(os.path.join(HERE, f"gptq_{name}_scale.f32"))
            mins.tofile(os.path.join(HERE, f"gptq_{name}_min.f32"))
            f.write(f"{name} {grid} {group} {int(act)} {damp} {block}\n")
    print(f"wrote {len(cases)} cases, W {ROWS}x{COLS}, X {N}x{COLS}, seed {SEED}")


if __name__ == "__main__":
    main()
