#!/usr/bin/env python3
"""Reference fixtures for typeformer's own weight layouts (tests/unit/quant_ext).

An independent numpy implementation written from the papers and the layout documentation, not
from the C++:
  - NF4: Dettmers et al. 2023, QLoRA (arXiv:2305.14314), section 3 and appendix E. The 16 levels
    are rebuilt from the paper's construction (quantiles of N(0, 1), bitsandbytes'
    create_normal_map with offset 0.9677083) with Python's statistics.NormalDist and checked
    against the published table, which is then used (as binary32).
    Block of 64: d = f16(absmax); code = nearest level of x / f32(d), ties to the lower level.
    Double quantization (paper "Double Quantization"): absmaxes minus their mean, 8-bit codes
    (linear symmetric here) with one binary32 scale per 256 blocks.
  - INT4 per group (GPTQ arXiv:2210.17323 / AWQ arXiv:2306.00978 layout x = d*q + m), with
    Q4_1's round-to-nearest rule (gguf-py gguf/quants.py); g = 32 is cross-checked against
    gguf.quants.quantize(Q4_1) when the gguf package is installed.
  - INT8 per output channel: d = f16(absmax(row) / 127), q = round-half-away(x / d).
Every operation is numpy binary32 (one rounding per operation), as the C++ contract states.

Output: fixtures.txt next to this script. Format (all numbers hex):
  case NAME TYPE ROWS COLS GROUP
  x   <float32 bits of the input, row-major>
  b   <expected bytes>
  y   <float32 bits of the dequantized values>
  (DQ cases add: aq <int8 codes as bytes>, s2 <float32 bits>, off <float32 bits>)
Run: python3 tests/data/quant_ext/gen_fixtures.py  (seed printed and stored)
"""
import os
import statistics
import sys

import numpy as np

SEED = 20261207
f32 = np.float32

PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def nf4_from_construction():
    nd = statistics.NormalDist()
    off = 0.9677083
    lin = lambda a, b, n: [a + (b - a) * i / (n - 1) for i in range(n)]
    v1 = [nd.inv_cdf(p) for p in lin(off, 0.5, 9)[:-1]]
    v3 = [-nd.inv_cdf(p) for p in lin(off, 0.5, 8)[:-1]]
    v = sorted(v1 + [0.0] + v3)
    m = max(v)
    return [x / m for x in v]


LEVELS = np.array(PUBLISHED_NF4, dtype=f32)
MID = ((LEVELS[:-1] + LEVELS[1:]) * f32(0.5)).astype(f32)


def round_half_away(v):
    t = np.trunc(v)
    frac = np.abs(v - t)
    return (t + np.sign(v) * (frac >= f32(0.5))).astype(f32)


def pack_nibbles(q, group):
    """q: (nblocks, group) codes -> (nblocks, group/2) bytes, Q4 order per 32-value sub-block."""
    q = q.astype(np.uint8).reshape(q.shape[0], group // 32, 2, 16)
    return (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(q.shape[0], group // 2)


def nf4_codes(xb, s):
    """xb (n, 64) float32, s (n,) float32 scale -> codes (n, 64)."""
    out = np.full(xb.shape, 7, dtype=np.uint8)
    ok = s > 0
    t = (xb[ok] / s[ok, None]).astype(f32)
    out[ok] = np.searchsorted(MID, t, side="left").astype(np.uint8)
    return out


def nf4_quant(x):
    xb = x.reshape(-1, 64).astype(f32)
    amax = np.abs(xb).max(axis=1)
    d16 = amax.astype(np.float16)
    s = d16.astype(f32)
    q = nf4_codes(xb, s)
    blocks = np.concatenate([d16.view(np.uint8).reshape(-1, 2), pack_nibbles(q, 64)], axis=1)
    y = (LEVELS[q] * s[:, None]).astype(f32)
    return blocks.tobytes(), y.reshape(x.shape)


def int4_quant(x, g):
    xb = x.reshape(-1, g).astype(f32)
    mn = xb.min(axis=1)
    mx = xb.max(axis=1)
    d = ((mx - mn) / f32(15)).astype(f32)
    with np.errstate(divide="ignore"):
        idv = np.where(d == 0, f32(0), f32(1) / d).astype(f32)
    prod = ((xb - mn[:, None]) * idv[:, None]).astype(f32)
    q = np.minimum(np.trunc(prod + f32(0.5)), f32(15)).astype(np.uint8)
    d16, m16 = d.astype(np.float16), mn.astype(np.float16)
    blocks = np.concatenate([d16.view(np.uint8).reshape(-1, 2), m16.view(np.uint8).reshape(-1, 2),
                             pack_nibbles(q, g)], axis=1)
    y = (d16.astype(f32)[:, None] * q.astype(f32) + m16.astype(f32)[:, None]).astype(f32)
    return blocks.tobytes(), y.reshape(x.shape)


def int8_channel_quant(x):
    rows, cols = x.shape
    a = np.abs(x).max(axis=1)
    d16 = (a / f32(127)).astype(f32).astype(np.float16)
    s = d16.astype(f32)
    with np.errstate(divide="ignore"):
        idv = np.where(s == 0, f32(0), f32(1) / s).astype(f32)
    q = np.clip(round_half_away((x * idv[:, None]).astype(f32)), -127, 127).astype(np.int8)
    qb = q.reshape(rows, cols // 32, 32)
    dd = np.repeat(d16.view(np.uint8).reshape(rows, 1, 2), cols // 32, axis=1)
    blocks = np.concatenate([dd, qb.view(np.uint8)], axis=2)
    y = (q.astype(f32) * s[:, None]).astype(f32)
    return blocks.tobytes(), y


def nf4_dq(x):
    xb = x.reshape(-1, 64).astype(f32)
    n = xb.shape[0]
    c = np.abs(xb).max(axis=1)
    total = 0.0
    for v in c:  # binary64, block order
        total += float(v)
    off = f32(total / n)
    v = (c - off).astype(f32)
    aq = np.zeros(n, dtype=np.int8)
    s2 = []
    for g0 in range(0, n, 256):
        vv = v[g0:g0 + 256]
        sc = f32(np.abs(vv).max() / f32(127))
        s2.append(sc)
        if sc != 0:
            aq[g0:g0 + 256] = np.clip(round_half_away((vv / sc).astype(f32)), -127, 127)
    s2 = np.array(s2, dtype=f32)
    cd = ((aq.astype(f32) * np.repeat(s2, 256)[:n]).astype(f32) + off).astype(f32)
    q = nf4_codes(xb, cd)
    y = (LEVELS[q] * cd[:, None]).astype(f32)
    return pack_nibbles(q, 64).tobytes(), y.reshape(x.shape), aq, s2, off


def hexf(a):
    return np.asarray(a, dtype=f32).reshape(-1).view(np.uint32)


def write_case(f, name, typ, x, group, b, y, extra=None):
    rows, cols = x.shape
    f.write(f"case {name} {typ} {rows:x} {cols:x} {group:x}\n")
    f.write("x " + " ".join(f"{v:08x}" for v in hexf(x)) + "\n")
    f.write("b " + bytes(b).hex() + "\n")
    f.write("y " + " ".join(f"{v:08x}" for v in hexf(y)) + "\n")
    for k, v in (extra or {}).items():
        f.write(f"{k} {v}\n")


def main():
    rng = np.random.default_rng(SEED)
    print("gen_fixtures.py seed", SEED)
    cons = np.array(nf4_from_construction())
    err = np.abs(cons - np.array(PUBLISHED_NF4)).max()
    assert err < 1e-6, f"NF4 construction differs from the published table by {err}"
    print(f"NF4 levels: construction vs published table max |diff| = {err:.2e}")

    def gauss(rows, cols, scale=1.0, mean=0.0):
        return (rng.standard_normal((rows, cols)) * scale + mean).astype(f32)

    def adversarial(cols):
        r = []
        r.append(np.zeros(cols, f32))                                  # all zero
        v = gauss(1, cols, 0.01)[0]; v[5] = 40.0; r.append(v)           # one outlier
        v = np.full(cols, 0.375, f32); r.append(v)                     # constant
        v = (gauss(1, cols)[0] * f32(1e-30)).astype(f32); r.append(v)   # tiny (f16 underflow)
        v = gauss(1, cols, 3.0, 1.5)[0]; r.append(v)                   # non-zero mean
        return np.stack(r)

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures.txt")
    with open(out, "w") as f:
        f.write(f"# generated by gen_fixtures.py, seed {SEED}\n")
        # NF4: gaussian, adversarial, exact ties at the midpoints (absmax 1).
        ties = np.zeros((1, 64), f32)
        ties[0, :15] = MID
        ties[0, 15] = 1.0
        ties[0, 16:31] = -MID
        ties[0, 31:] = rng.uniform(-1, 1, 33).astype(f32)
        for name, x in [("nf4_gauss", gauss(6, 192)), ("nf4_adv", adversarial(128)),
                        ("nf4_ties", ties)]:
            b, y = nf4_quant(x)
            write_case(f, name, "TFM_NF4", x, 64, b, y)
        for g, typ in [(32, "Q4_1"), (64, "TFM_I4_G64"), (128, "TFM_I4_G128")]:
            for name, x in [(f"i4_g{g}_gauss", gauss(5, 256, 0.02, 0.003)),
                            (f"i4_g{g}_adv", adversarial(256))]:
                b, y = int4_quant(x, g)
                if g == 32:
                    try:
                        import gguf
                        ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q4_1)
                        assert ref.tobytes() == b, "INT4-g32 differs from gguf-py's Q4_1"
                        print(f"{name}: bytes equal gguf.quants.quantize(Q4_1)")
                    except ImportError:
                        print("gguf not installed: Q4_1 cross-check skipped")
                write_case(f, name, typ, x, g, b, y)
        for name, x in [("i8_gauss", gauss(4, 160, 0.05)), ("i8_adv", adversarial(96))]:
            b, y = int8_channel_quant(x)
            write_case(f, name, "Q8_0", x, 32, b, y)
        x = gauss(257, 64, 0.02)  # 257 blocks: a full and a one-block second-level group
        x[100:120] *= 5
        qs, y, aq, s2, off = nf4_dq(x)
        write_case(f, "nf4_dq", "NF4_DQ", x, 64, qs, y,
                   {"aq": aq.view(np.uint8).tobytes().hex(),
                    "s2": " ".join(f"{v:08x}" for v in hexf(s2)),
                    "off": f"{int(hexf([off])[0]):08x}"})
        # RMSE on N(0, 1) rows (for the report; the C++ test measures its own).
        x = gauss(64, 4096)
        for name, fn in [("NF4", lambda x: nf4_quant(x)[1]),
                         ("INT4-g32 (Q4_1)", lambda x: int4_quant(x, 32)[1]),
                         ("INT4-g64", lambda x: int4_quant(x, 64)[1]),
                         ("INT4-g128", lambda x: int4_quant(x, 128)[1]),
                         ("NF4-DQ", lambda x: nf4_dq(x)[1])]:
            print(f"RMSE on N(0,1): {name:16s} {np.sqrt(np.mean((fn(x) - x) ** 2)):.5f}")
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
