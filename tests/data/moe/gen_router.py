#!/usr/bin/env python3
"""Reference routings for tests/unit/moe (include/typeformer/ops/moe_router.hpp), written from
the papers with numpy, independently of the C++ code:

  softmax_topk   Mixtral (arXiv:2401.04088): top-k logits, softmax over the chosen
  gshard_topk    GShard (arXiv:2006.16668): top-k of softmax(logits), optional renormalisation
  switch_top1    Switch (arXiv:2101.03961): top-1 of softmax(logits)
  sigmoid_bias   DeepSeek-V3 (arXiv:2412.19437 eq. 15-16): s = sigmoid(l), top-k of s + b,
                 gates s (/ sum of chosen s when renormalised) * scale
  expert_choice  Zhou et al. 2022 (arXiv:2202.09368): each expert takes its top-c tokens of
                 softmax(l), c = ceil(cf * N / E)
  capacity       ceil(cf * N * k / E) slots per expert, kept first come first served in token
                 order; renormalisation over the chosen slots before dropping
  aux loss       E * sum_i f_i P_i (Switch eq. 4-6), f_i = chosen slots of i / (N k)
  z-loss         mean_n logsumexp(l_n)^2 (ST-MoE, arXiv:2202.08906 eq. 5)
Ties: equal scores pick the lower expert id (token-choice) or lower token index (expert-choice);
the logits are multiples of 1/4 so that a few rows hold exact ties.

Gradients (of sum(w * gates) for fixed weights w, and of the losses) are computed by complex-step
differentiation, f'(x) = Im f(x + i h) / h with h = 1e-30 (Squire & Trapp 1998): no
hand-derived vjp, exact to rounding. Selection looks at real parts only.

Output: router_cases.txt, one array per line `name n v0 v1 ...`.
Run: python3 gen_router.py   (numpy only; deterministic, seed 20261207).
"""
import math
import os

import numpy as np

rng = np.random.default_rng(20261207)
out = []
H = 1e-30
KINDS = {"softmax_topk": 0, "gshard_topk": 1, "switch_top1": 2, "sigmoid_bias": 3,
         "expert_choice": 4}


def put(name, a):
    a = np.asarray(a, dtype=np.float64).ravel()
    out.append(name + " " + str(a.size) + " " + " ".join(repr(float(x)) for x in a))


def softmax(row):
    m = np.max(row.real)
    e = np.exp(row - m)
    return e / e.sum()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def topk_ids(score, k):
    # largest first; equal scores: lower index first
    order = sorted(range(len(score)), key=lambda e: (-score[e], e))
    return order[:k]


def route(L, c):
    """Returns (expert ids after dropping (N, K) with -1, chosen ids (N, K), gates (N, K),
    selected, load, capacity, dropped, K). L may be complex (complex step)."""
    N, E = L.shape
    kind, k = c["kind"], c["k"]
    R = L.real
    if kind == "expert_choice":
        P = np.array([softmax(R[n]).real for n in range(N)])
        cap = min(N, math.ceil(c["cf"] * N / E))
        picked = [[] for _ in range(N)]
        for e in range(E):
            for n in topk_ids(P[:, e], cap):
                picked[n].append(e)
        K = max(len(p) for p in picked)
        chosen = -np.ones((N, K), dtype=int)
        for n in range(N):
            chosen[n, :len(picked[n])] = picked[n]
        kept = chosen.copy()
        selected = np.full(E, cap)
        load = selected.copy()
        dropped = sum(1 for p in picked if not p)
    else:
        if kind == "switch_top1":
            k = 1
        K = k
        chosen = np.zeros((N, K), dtype=int)
        for n in range(N):
            if kind == "sigmoid_bias":
                score = [sigmoid(R[n, e]) + c["bias"][e] for e in range(E)]
            else:
                score = list(R[n])
            chosen[n] = topk_ids(score, k)
        selected = np.bincount(chosen.ravel(), minlength=E)
        kept = chosen.copy()
        cap, dropped = 0, 0
        if not c["dropless"]:
            cap = min(N * k, math.ceil(c["cf"] * (N * k) / E))
            used = np.zeros(E, dtype=int)
            for n in range(N):
                for j in range(K):
                    e = kept[n, j]
                    if used[e] < cap:
                        used[e] += 1
                    else:
                        kept[n, j] = -1
                        dropped += 1
        load = np.bincount(kept[kept >= 0].ravel(), minlength=E)
    gates = np.zeros((N, K), dtype=L.dtype)
    for n in range(N):
        sel = [j for j in range(K) if chosen[n, j] >= 0]
        ids = chosen[n, sel]
        if kind == "softmax_topk":
            q = softmax(L[n, ids])
        elif kind == "sigmoid_bias":
            q = sigmoid(L[n, ids])
            if c["renorm"]:
                q = q / q.sum()
        else:
            q = softmax(L[n])[ids]
            if c["renorm"] and kind == "gshard_topk":
                q = q / q.sum()
        for jj, j in enumerate(sel):
            if kept[n, j] >= 0:
                gates[n, j] = c["scale"] * q[jj]
    return kept, chosen, gates, selected, load, cap, dropped, K


def complex_grad(f, L):
    g = np.zeros(L.shape)
    for i in range(L.shape[0]):
        for j in range(L.shape[1]):
            Z = L.astype(complex)
            Z[i, j] += 1j * H
            g[i, j] = f(Z).imag / H
    return g


def aux_loss(L, selected, k):
    N, E = L.shape
    f = selected / (N * k)
    P = np.mean([softmax(L[n]) for n in range(N)], axis=0)
    return E * np.sum(f * P)


def z_loss(L):
    m = np.max(L.real, axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.sum(np.exp(L - m), axis=1))
    return np.mean(lse * lse)


def entropy(L, sig):
    h = 0.0
    for row in L:
        p = sigmoid(row) / sigmoid(row).sum() if sig else softmax(row)
        h -= np.sum(p * np.log(p))
    return h / L.shape[0]


def case(name, N, E, kind, k=2, renorm=False, dropless=True, cf=1.0, scale=1.0, bias=None,
         skew=0.0):
    L = np.round(rng.normal(0, 1.5, (N, E)) * 4) / 4
    L[:, 0] += skew  # favour expert 0 (capacity cases)
    L[1, 1] = L[1, 2] = L[1, 3] = np.max(L[1]) + 0.5  # an exact three-way tie at the top
    if E > 4:
        L[2, 4] = L[2, 3] = L[2, 0] = np.max(L[2]) + 0.25
    if N > 5:
        L[5] = L[3]  # two equal tokens: expert-choice ties go to the lower token index
    c = dict(kind=kind, k=k, renorm=renorm, dropless=dropless, cf=cf, scale=scale,
             bias=np.zeros(E) if bias is None else np.asarray(bias))
    kept, chosen, gates, selected, load, cap, dropped, K = route(L, c)
    w = rng.normal(0, 1, gates.shape)

    def fg(Z):
        return np.sum(w * route(Z, c)[2])

    keff = K if kind != "expert_choice" else 1  # aux loss only checked for token-choice
    put(name + ".dims", [N, E, KINDS[kind], k, int(renorm), int(dropless), cf, scale])
    put(name + ".logits", L)
    put(name + ".bias", c["bias"])
    put(name + ".expert", kept)
    put(name + ".gates", gates.real)
    put(name + ".stats", [K, cap, dropped, entropy(L, kind == "sigmoid_bias")])
    put(name + ".selected", selected)
    put(name + ".load", load)
    put(name + ".w", w)
    put(name + ".dgates", complex_grad(fg, L))
    put(name + ".aux", [aux_loss(L, selected, keff)])
    put(name + ".daux", complex_grad(lambda Z: aux_loss(Z, selected, keff), L))
    put(name + ".z", [z_loss(L)])
    put(name + ".dz", complex_grad(z_loss, L))


NAMES = []


def add(name, *a, **kw):
    NAMES.append(name)
    case(name, *a, **kw)


add("mixtral", 7, 5, "softmax_topk", k=2)
add("gshard", 7, 5, "gshard_topk", k=2)
add("gshard_renorm", 7, 5, "gshard_topk", k=3, renorm=True)
add("switch_cap", 9, 4, "switch_top1", dropless=False, cf=1.0, skew=1.5)
add("sigmoid", 8, 6, "sigmoid_bias", k=3, renorm=True, scale=2.5,
    bias=np.round(rng.normal(0, 0.3, 6) * 8) / 8)
add("sigmoid_plain", 6, 5, "sigmoid_bias", k=2)
add("expert_choice", 10, 4, "expert_choice", cf=2.0)
add("expert_choice_sparse", 11, 4, "expert_choice", cf=1.0, skew=1.0)
add("mixtral_cap", 12, 4, "softmax_topk", k=2, dropless=False, cf=1.25, skew=2.0)
add("gshard_renorm_cap", 12, 4, "gshard_topk", k=2, renorm=True, dropless=False, cf=1.0,
    skew=2.0)
out.insert(0, "cases " + str(len(NAMES)) + " " + " ".join(str(i) for i in range(len(NAMES))))
out.insert(1, "# " + " ".join(NAMES))

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "router_cases.txt"), "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", len(out), "lines for", len(NAMES), "cases")
