#!/usr/bin/env python3
"""Reads a GGUF written by tfm::io::gguf_writer with gguf.GGUFReader and compares it, field by
field and tensor by tensor (bytes), with the file gguf.GGUFWriter writes for the same content
(tests/data/io_gguf/make_fixtures.py: write_reference). Exit 77 when gguf is not importable.

  python3 check_writer.py OURS.gguf
"""
import os
import sys
import tempfile

try:
    import numpy as np
    import gguf
except ImportError as e:  # reported as a skip by the C++ test
    print(f"cannot import gguf/numpy: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


def _gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001
        return "?"
sys.path.insert(0, os.path.join(HERE, "..", "..", "data", "io_gguf"))
import make_fixtures  # noqa: E402


def fields(reader):
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        out[name] = ([int(t) for t in f.types], [bytes(p.tobytes()) for p in f.parts])
    return out


def main():
    ours_path = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        ref_path = os.path.join(d, "ref.gguf")
        make_fixtures.write_reference(ref_path)
        ours, ref = gguf.GGUFReader(ours_path), gguf.GGUFReader(ref_path)
        fo, fr = fields(ours), fields(ref)
        errors = []
        if list(fo) != list(fr):
            errors.append(f"keys differ: {list(fo)} vs {list(fr)}")
        for k in fr:
            if k in fo and fo[k] != fr[k]:
                errors.append(f"field {k} differs")
        if ours.alignment != ref.alignment:
            errors.append(f"alignment {ours.alignment} vs {ref.alignment}")
        if len(ours.tensors) != len(ref.tensors):
            errors.append(f"{len(ours.tensors)} tensors vs {len(ref.tensors)}")
        for a, b in zip(ours.tensors, ref.tensors):
            same = (a.name == b.name and a.tensor_type == b.tensor_type
                    and list(a.shape) == list(b.shape) and a.n_bytes == b.n_bytes
                    and a.data.tobytes() == b.data.tobytes())
            if not same:
                errors.append(f"tensor {a.name} differs from {b.name}")
        with open(ours_path, "rb") as x, open(ref_path, "rb") as y:
            if x.read() != y.read():
                errors.append("the files differ byte for byte")
        print(f"gguf {_gguf_version()}: {len(fr)} fields, {len(ref.tensors)} "
              f"tensors compared; {len(errors)} differences")
        for e in errors:
            print("  " + e)
        return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
