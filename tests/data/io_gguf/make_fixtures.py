#!/usr/bin/env python3
"""Fixtures of tests/unit/io_gguf, made with the `gguf` Python package (gguf-py) and numpy.

  dequant_<TYPE>.bin   random blocks of one GGML type and gguf.quants.dequantize's float32
                       output for them (Q8_K, which gguf-py cannot dequantize: numpy float32
                       d * q, as ggml's dequantize_row_q8_K). Layout, little-endian:
                       b"TFMQ" | u32 ggml type | u32 n_blocks | u32 block_bytes |
                       u32 block_elements | u64 seed | blocks | n_blocks*block_elements f32
  python_writer.gguf   a GGUF written by gguf.GGUFWriter: every metadata type, nested arrays,
                       several tensor types, alignment 64 (write_reference below; the C++ test
                       knows the same content and checks it value by value and byte by byte).
  ggml_types.txt       gguf-py's GGML_QUANT_SIZES: "NAME code block_elements block_bytes".

Run from anywhere:  python3 tests/data/io_gguf/make_fixtures.py [--seed N]
The seed is printed and stored in each dequant file; the default keeps the committed files.
"""
import argparse
import os
import struct
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))


def _gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001
        return "?"

# Byte offsets of the f16 scale fields inside each block (ggml-common.h).
SCALE_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
# Special f16 scales: +inf, NaN, -inf, smallest subnormal, largest subnormal, max, -max,
# signalling NaN, -0, 1.0, smallest normal.
SPECIAL_F16 = [0x7C00, 0x7E00, 0xFC00, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x7D01, 0x8000, 0x3C00,
               0x0400]
SPECIAL_F32 = [np.inf, np.nan, -np.inf, 1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, -0.0,
               1.0, 1e-40]


def dequant_reference(name, blocks):
    """float32 output for raw blocks (n, block_bytes) of type `name`."""
    if name == "Q8_K":
        d = blocks[:, :4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).astype(np.float32)
    if name == "BF16":
        return gguf.quants.dequantize(blocks.reshape(-1), T.BF16).reshape(-1)
    if name == "F16":
        return gguf.quants.dequantize(blocks.reshape(-1), T.F16).reshape(-1)
    return gguf.quants.dequantize(blocks, T[name]).reshape(-1)


def make_blocks(name, rng, n):
    block, size = GGML_QUANT_SIZES[T[name]]
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    b[0, :] = 0  # a zero block
    if name in SCALE_FIELDS:
        fields = SCALE_FIELDS[name]
        k = 1
        for v in SPECIAL_F16:  # every field special at once
            for f in fields:
                b[k, f:f + 2] = np.frombuffer(struct.pack("<H", v), np.uint8)
            k += 1
        for v in SPECIAL_F16[:4]:  # only the last field special (the min of type-1 formats)
            b[k, fields[-1]:fields[-1] + 2] = np.frombuffer(struct.pack("<H", v), np.uint8)
            k += 1
        for r in range(k, k + 6):  # realistic scales
            for f in fields:
                s = np.float16(rng.uniform(-0.05, 0.05))
                b[r, f:f + 2] = np.frombuffer(s.tobytes(), np.uint8)
        k += 6
        b[k, :] = 0xFF  # all ones: NaN scales (0xFFFF), every quant at its maximum
    elif name == "Q8_K":
        for k, v in enumerate(SPECIAL_F32, start=1):
            b[k, 0:4] = np.frombuffer(np.float32(v).tobytes(), np.uint8)
        b[len(SPECIAL_F32) + 1, 4:260] = 0x80  # all quants -128
    elif name in ("F16", "BF16"):
        specials = [0x7C00, 0xFC00, 0x7E00, 0x7D01, 0x0001, 0x03FF, 0x8000, 0x7BFF] if name == "F16" \
            else [0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x0001, 0x007F, 0x8000, 0x7F7F]
        for k, v in enumerate(specials, start=1):
            b[k, :] = np.frombuffer(struct.pack("<H", v), np.uint8)
    return b


def write_dequant_fixtures(seed):
    counts = {"F16": 64, "BF16": 64, "Q4_0": 48, "Q4_1": 48, "Q5_0": 48, "Q5_1": 48, "Q8_0": 48,
              "Q2_K": 32, "Q3_K": 32, "Q4_K": 32, "Q5_K": 32, "Q6_K": 32, "Q8_K": 16}
    total = 0
    for i, (name, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, i])
        blocks = make_blocks(name, rng, n)
        with np.errstate(all="ignore"):
            y = dequant_reference(name, blocks).astype(np.float32)
        block, size = GGML_QUANT_SIZES[T[name]]
        assert y.size == n * block
        path = os.path.join(HERE, f"dequant_{name}.bin")
        with open(path, "wb") as f:
            f.write(b"TFMQ")
            f.write(struct.pack("<IIIIQ", int(T[name]), n, size, block, seed))
            f.write(blocks.tobytes())
            f.write(y.astype("<f4").tobytes())
        total += os.path.getsize(path)
    return total


def tensor_pattern(n, mul, add):
    """Deterministic bytes (i*mul + add) mod 256, which the C++ test recomputes."""
    return ((np.arange(n, dtype=np.int64) * mul + add) % 256).astype(np.uint8)


def write_reference(path):
    """The reference GGUF; tests/unit/io_gguf/gguf_python_test.cpp writes the same content."""
    V = gguf.GGUFValueType
    w = gguf.GGUFWriter(path, "tfm-test")  # general.architecture first
    w.add_name("tfm fixture")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62) - 7)
    w.add_float32("t.f32", 3.25)
    w.add_float64("t.f64", -1.0e300)
    w.add_bool("t.bool", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.str", "h\u00e9llo \u2713")
    w.add_custom_alignment(64)
    w.add_key_value("t.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("t.arr_i8", [-128, 0, 127], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("t.arr_u16", [65535, 1], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("t.arr_i16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("t.arr_u32", [4294967295, 0], V.ARRAY, sub_type=V.UINT32)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_key_value("t.arr_u64", [2**64 - 1, 0], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("t.arr_i64", [-(2**63), 2**63 - 1], V.ARRAY, sub_type=V.INT64)
    w.add_array("t.arr_f32", [0.5, -1.5, 1e30])
    w.add_key_value("t.arr_f64", [0.1, -2.5e-300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_str", ["a", "", "\u00fc\u00df", "tokens"])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_array("t.nested_str", [["x"], ["y", "z"]])
    w.add_array("t.nested3", [[[7]], [[8, 9]]])
    w.add_tensor("w.f32", (np.arange(12, dtype=np.float32) * 0.5 - 3).reshape(3, 4))
    w.add_tensor("w.f16", (np.arange(16, dtype=np.float32) / 8 - 1).astype(np.float16).reshape(2, 8))
    w.add_tensor("w.bf16", tensor_pattern(2 * 32, 5, 1).view(np.uint16).reshape(1, 32),
                 raw_dtype=T.BF16)
    w.add_tensor("w.q8_0", tensor_pattern(2 * 2 * 34, 7, 3).reshape(2, 2 * 34), raw_dtype=T.Q8_0)
    w.add_tensor("w.q4_1", tensor_pattern(3 * 20, 11, 5).reshape(3, 20), raw_dtype=T.Q4_1)
    w.add_tensor("w.q4_k", tensor_pattern(144, 13, 7).reshape(1, 144), raw_dtype=T.Q4_K)
    w.add_tensor("w.i32", np.array([1, -2, 3, -4, 5], dtype=np.int32))
    w.add_tensor("w.i8", np.array([-1, 2, -3, 4, -5, 6, -7], dtype=np.int8))
    w.add_tensor("w.f64", np.array([1.5, -2.25], dtype=np.float64))
    w.add_tensor("w.4d", np.arange(2 * 3 * 2 * 32, dtype=np.float32).reshape(2, 3, 2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_types_table(path):
    with open(path, "w") as f:
        for t, (block, size) in GGML_QUANT_SIZES.items():
            f.write(f"{t.name} {int(t)} {block} {size}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=20240918)
    args = ap.parse_args()
    print(f"make_fixtures.py: seed {args.seed}, gguf {_gguf_version()}, "
          f"numpy {np.__version__}")
    n = write_dequant_fixtures(args.seed)
    write_reference(os.path.join(HERE, "python_writer.gguf"))
    write_types_table(os.path.join(HERE, "ggml_types.txt"))
    n += os.path.getsize(os.path.join(HERE, "python_writer.gguf"))
    print(f"wrote {n} bytes of fixtures to {HERE}")


if __name__ == "__main__":
    sys.exit(main())
