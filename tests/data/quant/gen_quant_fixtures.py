#!/usr/bin/env python3
"""Writes quant_fixtures.bin: f32 rows (random and adversarial) and their quantized bytes.

References:
  Q8_0, Q4_0, Q4_1, Q5_0, Q5_1   gguf.quants.quantize (gguf-py, the `gguf` package)
  Q8_1, Q8_K                     quantize_row_q8_1_ref / quantize_row_q8_K_ref of the llama.cpp
                                 (ggml) build bundled with llama-cpp-python (ctypes), when present
  Q4_K, Q6_K                     quantize_row_q4_K_ref / quantize_row_q6_K_ref of the same build
                                 (the C++ test compares RMSE, not bytes)

File layout (little-endian):
  "TFMQ" u32 version=1, u32 n_rows, u32 K, u32 n_types
  n_rows * K float32 (row-major)
  n_types times: u32 ggml type code, u32 bytes per row, n_rows * bytes-per-row bytes

Run: python3 tests/data/quant/gen_quant_fixtures.py  (rewrites the file next to this script)
"""
import ctypes
import glob
import os
import struct
import sys

import numpy as np
import gguf
from gguf.constants import GGMLQuantizationType as T

K = 256
SEED = 19


def rows():
    rng = np.random.default_rng(SEED)
    f32 = np.float32
    fmax = np.finfo(f32).max
    tiny = np.finfo(f32).tiny  # smallest normal
    den = np.float32(1.4e-45)  # smallest subnormal
    out = []

    def add(r):
        out.append(np.asarray(r, dtype=f32).reshape(K))

    # random rows at several scales and distributions
    for scale in (1.0, 0.02, 300.0, 1e-3, 7e4):
        add(rng.standard_normal(K) * scale)
    for _ in range(4):
        add(rng.uniform(-1, 1, K))
    add(rng.uniform(0, 5, K))               # all positive
    add(-rng.uniform(0.5, 5, K))            # all negative
    add(rng.standard_t(2, K))               # heavy tails
    add(np.where(rng.random(K) < 0.9, 0, rng.standard_normal(K)))  # sparse
    add(rng.integers(-20, 21, K) * 0.5)     # halves: exact ties after scaling
    add(rng.integers(-127, 128, K).astype(f32))  # amax 127 -> id 1: ties of round()
    # zeros and constants
    add(np.zeros(K))
    add(np.full(K, -0.0))
    add(np.full(K, 3.25))
    add(np.full(K, -1e-3))
    # one huge outlier per block
    r = rng.standard_normal(K)
    r[::32] = 1e30
    add(r)
    r = rng.standard_normal(K)
    r[5::32] = -3e38
    add(r)
    r = rng.standard_normal(K) * 1e-3
    r[100] = 5e4
    add(r)
    # max-magnitude values
    add(np.full(K, fmax))
    add(np.where(np.arange(K) % 2 == 0, fmax, -fmax))         # max - min overflows to Inf
    add(rng.uniform(-1, 1, K) * fmax)
    add(np.where(np.arange(K) % 7 == 0, -fmax, rng.standard_normal(K)))
    # f16 scale overflow / underflow
    add(rng.standard_normal(K) * 5e6)
    add(rng.standard_normal(K) * 2e-6)
    add(rng.standard_normal(K) * 1e-9)
    # subnormal and tiny-normal rows (1/d overflows to Inf)
    add(rng.standard_normal(K) * 1e-40)
    add(rng.integers(-3, 4, K) * den)
    add(np.full(K, den))
    add(rng.standard_normal(K) * tiny)
    add(rng.standard_normal(K) * 1e-37)
    r = rng.standard_normal(K) * 1e-40
    r[::2] = 0
    add(r)
    # ties of |x| with both signs (argmax takes the first)
    r = rng.standard_normal(K)
    r[3::32] = -9.0
    r[4::32] = 9.0
    add(r)
    r = rng.standard_normal(K)
    r[10::32] = 9.0
    r[11::32] = -9.0
    add(r)
    # more random rows
    for _ in range(8):
        add(rng.standard_normal(K) * rng.uniform(0.01, 10))
    return np.stack(out)


def ggml_refs(x):
    """Q8_1 and Q8_K from llama.cpp's reference quantizers, or {} when not installed."""
    try:
        import llama_cpp
    except ImportError:
        return {}
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    cands = sorted(glob.glob(os.path.join(libdir, "libggml-base.so*")))
    if not cands:
        return {}
    lib = ctypes.CDLL(cands[0])
    res = {}
    for code, fname, nbytes in ((T.Q8_1, "quantize_row_q8_1_ref", 36 * K // 32),
                               (T.Q8_K, "quantize_row_q8_K_ref", 292 * K // 256),
                               (T.Q4_K, "quantize_row_q4_K_ref", 144 * K // 256),
                               (T.Q6_K, "quantize_row_q6_K_ref", 210 * K // 256)):
        f = getattr(lib, fname)
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        f.restype = None
        out = np.zeros((x.shape[0], nbytes), dtype=np.uint8)
        for i in range(x.shape[0]):
            row = np.ascontiguousarray(x[i])
            f(row.ctypes.data, out[i].ctypes.data, K)
        res[int(code)] = out
    return res


def main():
    x = rows()
    with np.errstate(all="ignore"):
        outs = {int(t): gguf.quants.quantize(x, t) for t in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1)}
    outs.update(ggml_refs(x))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant_fixtures.bin")
    with open(path, "wb") as f:
        f.write(b"TFMQ" + struct.pack("<4I", 1, x.shape[0], K, len(outs)))
        f.write(x.astype("<f4").tobytes())
        for code, b in outs.items():
            b = np.ascontiguousarray(b, dtype=np.uint8).reshape(x.shape[0], -1)
            f.write(struct.pack("<2I", code, b.shape[1]))
            f.write(b.tobytes())
    print(f"{path}: {x.shape[0]} rows x {K}, types {sorted(outs)}, {os.path.getsize(path)} bytes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
