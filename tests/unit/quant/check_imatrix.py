#!/usr/bin/env python3
"""Reads an imatrix file written by tfm (imatrix_test.cpp) with gguf-py and checks llama.cpp's
GGUF imatrix form: general.type, imatrix.* keys, NAME.in_sum2 [cols, 1] / NAME.counts [1, 1]
F32 pairs; blk.0.attn_q.weight.in_sum2 equals numpy's sum of squares of the dumped inputs.
Usage: check_imatrix.py FILE.gguf INPUTS.f32 ROWS. Exit 77 when numpy or gguf is missing."""
import sys

try:
    import numpy as np
    import gguf
except ImportError:
    sys.exit(77)


def main():
    path, dump, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = gguf.GGUFReader(path)
    kv = {f.name: f for f in r.fields.values()}
    assert bytes(kv["general.type"].parts[-1]).decode() == "imatrix"
    for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
        assert k in kv, k
    assert int(kv["imatrix.chunk_size"].parts[-1][0]) == 32
    t = {x.name: x for x in r.tensors}
    names = sorted(n[: -len(".in_sum2")] for n in t if n.endswith(".in_sum2"))
    assert len(names) == 14, names
    for n in names:
        s, c = t[n + ".in_sum2"], t[n + ".counts"]
        assert s.tensor_type == gguf.GGMLQuantizationType.F32
        assert c.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(c.shape) == [1, 1], c.shape
        assert int(s.shape[1]) == 1
    x = np.fromfile(dump, dtype="<f4").astype(np.float64).reshape(rows, -1)
    want = (x * x).sum(axis=0)
    got = np.asarray(t["blk.0.attn_q.weight.in_sum2"].data, dtype=np.float64).reshape(-1)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.allclose(got, want, rtol=1e-6, atol=0), np.abs(got - want).max()
    assert float(np.asarray(t["blk.0.attn_q.weight.counts"].data).reshape(-1)[0]) == rows
    print(f"check_imatrix.py: {path}: {len(names)} entries, in_sum2 == numpy sum of squares")


if __name__ == "__main__":
    main()
