#!/usr/bin/env python3
"""Reads the files typeformer's writer made (write_test.cpp, "files for the Python reader") with
the reference, the `safetensors` Python package, and checks every value.

    python3 check_written.py WORK_DIR

Prints "TFM_SKIP: ..." and exits 0 when numpy or safetensors cannot be imported (CTest counts
the test as skipped through SKIP_REGULAR_EXPRESSION). Exits 1 on the first mismatch.
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    import safetensors
    from safetensors import safe_open
    from safetensors.numpy import load_file, save
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"TFM_SKIP: the Python package safetensors (and numpy) is needed: {e}")
    sys.exit(0)

WORK = os.path.join(sys.argv[1], "for_python")
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def same(a, b, what):
    check(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b),
          f"{what}: got {a!r} ({a.dtype}, {a.shape}), want {b!r} ({b.dtype}, {b.shape})")


def raw_entry(path, name):
    """Shape, dtype and bytes of one tensor, through Python's own json module."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    e = header[name]
    b, end = e["data_offsets"]
    return e["dtype"], e["shape"], blob[8 + n + b:8 + n + end]


# write_test.cpp: halves, signed_values, unsigned_values.
HALVES = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]


def signed(dt):
    i = np.iinfo(dt)
    return np.array([i.min, i.max, 0, -1, 42], dtype=dt)


def unsigned(dt):
    return np.array([0, np.iinfo(dt).max, 1, 2, 42], dtype=dt)


def expected():
    return {
        "f64": np.array(HALVES, dtype=np.float64).reshape(2, 3),
        "f32": np.array(HALVES, dtype=np.float32).reshape(3, 2),
        "f16": np.array(HALVES, dtype=np.float16),
        "i64": signed(np.int64), "i32": signed(np.int32), "i16": signed(np.int16),
        "i8": signed(np.int8), "u64": unsigned(np.uint64), "u32": unsigned(np.uint32),
        "u16": unsigned(np.uint16), "u8": unsigned(np.uint8),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.int32),
    }


def main():
    want = expected()
    path = os.path.join(WORK, "cpp_dtypes.safetensors")
    with safe_open(path, framework="numpy") as f:
        keys = set(f.keys())
        check(keys == set(want) | {"bf16", "f8_e4m3", "f8_e5m2"}, f"keys {sorted(keys)}")
        check(f.metadata() == {"format": "tfm", "ключ": 'значение "q"\n'},
              f"metadata {f.metadata()}")
        for k, v in want.items():
            same(f.get_tensor(k), v, k)
        # BF16 and the 8-bit floats have no numpy dtype here: dtype and shape from the
        # reference, the bytes through json + struct.
        for k, dt, shape in [("bf16", "BF16", [6]), ("f8_e4m3", "F8_E4M3", [5]),
                             ("f8_e5m2", "F8_E5M2", [5])]:
            s = f.get_slice(k)
            check(s.get_dtype() == dt and list(s.get_shape()) == shape,
                  f"{k}: {s.get_dtype()} {s.get_shape()}")
        _, _, bf = raw_entry(path, "bf16")
        bits = (np.array(HALVES, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
        check(bf == bits.tobytes(), f"bf16 bytes {bf!r}")
        _, _, f8 = raw_entry(path, "f8_e4m3")
        check(f8 == bytes([0x00, 0x01, 0x7F, 0x80, 0xFF]), f"f8 bytes {f8!r}")

    # The whole file through load_file too (another entry point of the reference).
    loaded = load_file(os.path.join(WORK, "cpp_exact.safetensors"))
    for k, v in loaded.items():
        same(v, want[k], "load_file " + k)

    # Byte for byte what the reference writes for the same tensors and one metadata key.
    with open(os.path.join(WORK, "cpp_exact.safetensors"), "rb") as fh:
        mine = fh.read()
    ref = save({k: want[k] for k in loaded}, metadata={"format": "pt"})
    check(mine == ref, f"cpp_exact.safetensors differs from safetensors.numpy.save "
                       f"({len(mine)} vs {len(ref)} bytes)")

    # The sharded checkpoint, the way transformers reads one: index -> weight_map -> shards.
    sdir = os.path.join(WORK, "sharded")
    with open(os.path.join(sdir, "model.safetensors.index.json")) as fh:
        index = json.load(fh)
    wm = index["weight_map"]
    check(sorted(wm) == ["model.a.weight", "model.b.weight", "model.c.bias"], f"weight_map {wm}")
    check(wm["model.a.weight"] == "model-00001-of-00002.safetensors"
          and wm["model.c.bias"] == "model-00002-of-00002.safetensors", f"shards {wm}")
    check(index["metadata"]["total_size"] == 80, f"total_size {index['metadata']}")
    expect_sh = {"model.a.weight": np.ones((2, 4), np.float32),
                 "model.b.weight": np.full((8,), 2.0, np.float32),
                 "model.c.bias": np.full((4,), 3.0, np.float32)}
    for name, shard in wm.items():
        with safe_open(os.path.join(sdir, shard), framework="numpy") as f:
            check(f.metadata() == {"format": "pt"}, f"shard metadata {f.metadata()}")
            same(f.get_tensor(name), expect_sh[name], name)
    print(f"ok: {checks} checks against safetensors {safetensors.__version__}")


if __name__ == "__main__":
    main()
