#!/usr/bin/env python3
"""Writes kquant_fixtures.bin: f32 rows, an importance vector, and llama.cpp's bytes for the
K-quants and the legacy 32-blocks, without and with the importance vector.

Reference: ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix) of the llama.cpp
(ggml) build bundled with llama-cpp-python (libggml-base.so, called through ctypes): what
llama-quantize runs per tensor (imatrix NULL: quantize_row_*_ref; else quantize_row_*_impl).

File layout (little-endian):
  "TFMK" u32 version=1, u32 n_rows, u32 K, u32 n_entries
  n_rows * K float32 rows (row-major), K float32 importance
  n_entries times: u32 ggml type code, u32 with_importance (0/1), u32 bytes per row,
                   n_rows * bytes-per-row bytes

Run: python3 tests/data/quant/gen_kquant_fixtures.py   (rewrites the file next to this script)
"""
import ctypes
import glob
import os
import struct
import sys

import numpy as np

K = 512
SEED = 1919
# ggml type codes: Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q2_K 10, Q3_K 11, Q4_K 12, Q5_K 13, Q6_K 14
TYPES = (10, 11, 12, 13, 14, 2, 3, 6, 7)


def rows():
    rng = np.random.default_rng(SEED)
    out = []

    def add(r):
        out.append(np.asarray(r, dtype=np.float32).reshape(K))

    for scale in (1.0, 0.02, 300.0, 1e-3):
        add(rng.standard_normal(K) * scale)
    for _ in range(3):
        add(rng.uniform(-1, 1, K))
    add(rng.uniform(0, 5, K))  # all positive
    add(-rng.uniform(0.5, 5, K))  # all negative
    add(rng.standard_t(2, K))  # heavy tails
    add(rng.standard_t(3, K) * 0.05)
    add(np.where(rng.random(K) < 0.9, 0, rng.standard_normal(K)))  # sparse
    add(rng.integers(-20, 21, K) * 0.5)  # ties after scaling
    add(np.zeros(K))
    add(np.full(K, 3.25))
    add(np.full(K, -1e-3))
    r = rng.standard_normal(K)
    r[::32] = 40.0  # one outlier per 32-block
    add(r)
    r = rng.standard_normal(K) * 1e-3
    r[100] = 5.0
    add(r)
    r = rng.standard_normal(K)
    r[:256] = 0  # one zero super-block
    add(r)
    for _ in range(12):  # weight-like rows
        add(rng.standard_normal(K) * rng.uniform(0.01, 0.2))
    return np.stack(out)


def importance():
    rng = np.random.default_rng(SEED + 1)
    w = rng.gamma(0.7, 1.0, K).astype(np.float32)  # skewed, as sums of x^2 per column are
    w[7] = 0.0
    w[300:316] = 0.0  # a whole 16-sub-block of zero importance
    w[40] = 50.0
    return w


def lib():
    import llama_cpp

    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    cands = sorted(glob.glob(os.path.join(libdir, "libggml-base.so*")))
    if not cands:
        sys.exit("libggml-base.so not found next to llama_cpp")
    L = ctypes.CDLL(cands[0])
    L.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                      ctypes.c_void_p]
    L.ggml_quantize_chunk.restype = ctypes.c_size_t
    L.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    L.ggml_row_size.restype = ctypes.c_size_t
    return L


def quantize(L, t, x, imatrix):
    """llama.cpp's bytes for the rows x (n, k) of type t, importance imatrix (k,) or None."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, k = x.shape
    rb = L.ggml_row_size(t, k)
    out = np.zeros(n * rb, dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    L.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, 0, n, k,
                          None if im is None else im.ctypes.data)
    return out.reshape(n, rb)


def main():
    x, w = rows(), importance()
    L = lib()
    entries = []
    for t in TYPES:
        for with_w in (0, 1):
            entries.append((t, with_w, quantize(L, t, x, w if with_w else None)))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kquant_fixtures.bin")
    with open(path, "wb") as f:
        f.write(b"TFMK" + struct.pack("<4I", 1, x.shape[0], K, len(entries)))
        f.write(x.astype("<f4").tobytes())
        f.write(w.astype("<f4").tobytes())
        for t, with_w, b in entries:
            f.write(struct.pack("<3I", t, with_w, b.shape[1]))
            f.write(b.tobytes())
    print(f"{path}: {x.shape[0]} rows x {K}, {len(entries)} entries, {os.path.getsize(path)} bytes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
