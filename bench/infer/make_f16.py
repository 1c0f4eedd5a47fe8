#!/usr/bin/env python3
"""Writes an F16 copy of a GGUF llama model with gguf-py (the bench's F16 input until
`tfm convert` exists): every tensor dequantized (gguf.quants.dequantize), 2-D ones stored as
F16, 1-D ones (norms) as F32; metadata copied.

    python3 make_f16.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

src, dst = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(src)
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
w = gguf.GGUFWriter(dst, arch)
for key, f in r.fields.items():
    if key.startswith("GGUF.") or key == "general.architecture" or key == "general.file_type":
        continue
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        et = f.types[1]
        if et == gguf.GGUFValueType.STRING:
            vals = [bytes(f.parts[i]) for i in f.data]
        else:
            vals = [f.parts[i][0].item() for i in f.data]
        w.add_array(key, vals)
    elif t == gguf.GGUFValueType.STRING:
        w.add_string(key, bytes(f.parts[f.data[0]]).decode())
    else:
        w.add_key_value(key, f.parts[f.data[0]][0].item(), t)
w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
for t in r.tensors:
    a = dequantize(t.data, t.tensor_type).reshape([int(n) for n in reversed(t.shape.tolist())])
    w.add_tensor(t.name, a.astype(np.float16 if a.ndim == 2 else np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
