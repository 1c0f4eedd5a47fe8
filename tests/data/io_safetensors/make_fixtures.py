#!/usr/bin/env python3
"""Writes the safetensors fixtures of tests/unit/io_safetensors with the reference writer
(the `safetensors` package, 0.8.0 when they were made; numpy 2.4).

    python3 tests/data/io_safetensors/make_fixtures.py [out_dir]

The values are spelled out here and again in tests/unit/io_safetensors/read_python_test.cpp,
which reads every file and checks every element. BF16, the 8-bit floats and C64 have no numpy
dtype that safetensors.numpy accepts, so those tensors go through safetensors.serialize with a
TensorSpec over raw little-endian bytes (the path safetensors.numpy.save itself takes).
"""
import json
import os
import sys

import numpy as np
import safetensors
from safetensors import TensorSpec, serialize
from safetensors.numpy import save, save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

F16_MIN_SUB = 2.0**-24
FLOATS = [0.0, -0.0, 1.5, -2.25, 65504.0, np.inf, -np.inf, np.nan, F16_MIN_SUB, 0.0999755859375]
BF16_BITS = [0x0000, 0x8000, 0x3FC0, 0xC010, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x3DCD]


def ints(dt):
    info = np.iinfo(dt)
    return np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dt)


def dtype_tensors():
    t = {
        "f64": np.array(FLOATS, dtype=np.float64).reshape(2, 5),
        "f32": np.array(FLOATS, dtype=np.float32).reshape(5, 2),
        "f16": np.array(FLOATS, dtype=np.float16),
        "i64": ints(np.int64),
        "i32": ints(np.int32),
        "i16": ints(np.int16),
        "i8": ints(np.int8),
        "u64": ints(np.uint64),
        "u32": ints(np.uint32),
        "u16": ints(np.uint16),
        "u8": ints(np.uint8),
        "bool": np.array([[True, False, True], [False, False, True]]),
    }
    return t


def raw_specs(keep):
    """BF16, 8-bit floats and C64 as raw bytes."""
    specs = {}

    def add(name, dtype, shape, arr):
        arr = np.ascontiguousarray(arr)
        keep.append(arr)
        specs[name] = TensorSpec(dtype=dtype, shape=shape, data_ptr=arr.ctypes.data,
                                 data_len=arr.nbytes)

    add("bf16", "bfloat16", (10,), np.array(BF16_BITS, dtype="<u2"))
    raw8 = np.array([0x00, 0x01, 0x7F, 0x80, 0xFF], dtype=np.uint8)
    for name in ["float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float8_e4m3fnuz",
                 "float8_e5m2fnuz"]:
        add(name, name, (5,), raw8)
    add("c64", "complex64", (2,), np.array([1 + 2j, -0.5 - 4j], dtype="<c8"))
    return specs


def main():
    os.makedirs(OUT, exist_ok=True)
    p = lambda *a: os.path.join(OUT, *a)

    # 1. Every dtype (numpy ones through save_file, the others through serialize).
    save_file(dtype_tensors(), p("numpy_dtypes.safetensors"), metadata={"format": "np"})
    keep = []
    with open(p("raw_dtypes.safetensors"), "wb") as f:
        f.write(bytes(serialize(raw_specs(keep), metadata=None)))

    # 2. Metadata: several keys, escapes, non-ASCII, an empty value.
    save_file({"w": np.arange(4, dtype=np.float32).reshape(2, 2)}, p("metadata.safetensors"),
              metadata={"format": "pt", "note": 'quote " backslash \\ newline \n tab \t',
                        "ünïcödé ключ": "値 ✓", "empty": ""})

    # 3. Empty and scalar tensors.
    save_file({"empty": np.zeros((0,), dtype=np.float32),
               "empty_mid": np.zeros((3, 0, 2), dtype=np.int64),
               "scalar_f32": np.array(2.5, dtype=np.float32),
               "scalar_i8": np.array(-7, dtype=np.int8),
               "scalar_bool": np.array(True)}, p("empty_scalar.safetensors"))

    # 4. No tensors at all.
    save_file({}, p("no_tensors.safetensors"))

    # 5. The tensors tests/unit/io_safetensors/write_test.cpp builds, for a byte-for-byte check
    #    of typeformer's writer (one metadata key: the reference writes several in hash order).
    exact = {"b": np.arange(6, dtype=np.float32).reshape(2, 3),
             "a": np.array([1, -2, 3, -4], dtype=np.int8),
             "c": np.array([0.25, -8.0], dtype=np.float64),
             "e": np.arange(5, dtype=np.uint8),
             "z": np.array([True, False, True]),
             "s": np.array(1.5, dtype=np.float16),
             "n": np.zeros((2, 0), dtype=np.int32)}
    keep2 = []
    specs = {}
    for k, v in exact.items():
        keep2.append(v)
        specs[k] = TensorSpec(dtype=v.dtype.name, shape=v.shape, data_ptr=v.ctypes.data,
                              data_len=v.nbytes)
    bf = np.array([0x3F80, 0xC000, 0x0000], dtype="<u2")
    keep2.append(bf)
    specs["d"] = TensorSpec(dtype="bfloat16", shape=(3,), data_ptr=bf.ctypes.data, data_len=6)
    with open(p("byte_exact.safetensors"), "wb") as f:
        f.write(bytes(serialize(specs, metadata={"format": "pt"})))

    # 6. A sharded checkpoint as transformers writes it: shards with {"format": "pt"} and an
    #    index (json.dumps(indent=2, sort_keys=True) + "\n") whose total_size counts the bytes.
    os.makedirs(p("sharded"), exist_ok=True)
    shard1 = {"model.embed.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
              "model.layers.0.bias": np.array([1, 2, 3], dtype=np.int64)}
    shard2 = {"model.layers.1.weight": np.arange(6, dtype=np.float16).reshape(2, 3),
              "lm_head.weight": np.array([[0.5, -0.5]], dtype=np.float64)}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map, total = {}, 0
    for name, shard in zip(names, [shard1, shard2]):
        save_file(shard, p("sharded", name), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            total += v.nbytes
    with open(p("sharded", "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                           indent=2, sort_keys=True) + "\n")
    print("wrote fixtures with safetensors", safetensors.__version__, "to", OUT)


if __name__ == "__main__":
    main()
