#!/usr/bin/env python3
"""A model trained with typeformer, exported to GGUF, run by llama.cpp and by `tfm perplexity`.

    python3 bench/infer/export_vs_llamacpp.py TFM_BINARY MODEL.gguf --text HELDOUT.txt
                                              [--checkpoint RUN_DIR] [--type f32|f16|bf16]
                                              [--ctx 128] [--threads 2] [--max-dev 0.005]
    python3 bench/infer/export_vs_llamacpp.py --llamacpp-only MODEL.gguf --text FILE --ctx N

With --checkpoint, `tfm convert RUN_DIR MODEL.gguf --type T` exports the training checkpoint
first (a mini_gpt --out directory or its checkpoint.tfm). The text is tokenized by llama.cpp
(the exported tokenizer.ggml.* vocabulary); both engines score it with llama-perplexity's
definition (non-overlapping windows of --ctx tokens, second half of each scored; see
bench/infer/vs_llamacpp.py, whose llama.cpp side this script reuses). Prints both perplexities,
their ratio and the teacher-forced top-1 agreement; exits 1 when the perplexities differ by more
than --max-dev (relative), the issue's acceptance bound being 0.5%.

--llamacpp-only prints llama.cpp's "PPL = <value> +/- <error>" alone (used by
tests/unit/export's live case, which computes typeformer's side through the library);
--dump-ids FILE writes llama.cpp's token ids of the text. Exit code 77 when llama_cpp is not
importable.
"""
import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import llama_cpp
    from vs_llamacpp import llamacpp_perplexity
except ImportError as e:
    print(f"llama-cpp-python is not importable: {e}")
    sys.exit(77)


def tokenize(model, text):
    """llama.cpp's ids of text (BOS added when the exported vocabulary says so)."""
    tok = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(tok.model)))
    ids = tok.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    return ids, add_bos, tok.token_bos()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm", nargs="?")
    ap.add_argument("model")
    ap.add_argument("--text", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--type", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-dev", type=float, default=0.005)
    ap.add_argument("--llamacpp-only", action="store_true")
    ap.add_argument("--dump-ids", help="write llama.cpp's token ids of the text, one a line")
    a = ap.parse_args()
    if not a.llamacpp_only and a.tfm is None:
        ap.error("TFM_BINARY is required unless --llamacpp-only")

    if a.checkpoint:
        r = subprocess.run([a.tfm, "convert", a.checkpoint, a.model, "--type", a.type],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"tfm convert failed: {r.stderr}")
        print(r.stderr.strip())

    text = open(a.text, encoding="utf-8").read()
    ids, add_bos, bos = tokenize(a.model, text)
    if a.dump_ids:
        with open(a.dump_ids, "w") as f:
            f.write("".join(f"{i}\n" for i in ids))
    if len(ids) < 2 * a.ctx:
        sys.exit(f"{a.text} has {len(ids)} tokens; --ctx {a.ctx} needs at least {2 * a.ctx}")
    ppl_l, err_l, count_l, top1_l, secs_l, argmax_l = llamacpp_perplexity(
        a.model, ids, a.ctx, a.threads, add_bos, bos)
    if a.llamacpp_only:
        print(f"llama.cpp: {len(ids)} tokens, {count_l} scored")
        print(f"PPL = {ppl_l:.6f} +/- {err_l:.6f}")
        return

    argmax_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tfm_export_vs_llamacpp.argmax")
    t0 = time.time()
    r = subprocess.run([a.tfm, "perplexity", "-m", a.model, "-f", a.text, "--ctx", str(a.ctx),
                        "-t", str(a.threads), "--argmax", argmax_file], capture_output=True,
                       text=True)
    secs_t = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"tfm perplexity failed: {r.stderr}")
    m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", r.stdout.strip().splitlines()[-1])
    ppl_t, err_t = float(m.group(1)), float(m.group(2))
    argmax_t = [int(x) for x in open(argmax_file).read().split()]
    if len(argmax_t) != len(argmax_l):
        sys.exit(f"scored positions differ: typeformer {len(argmax_t)}, llama.cpp {len(argmax_l)}"
                 " (the engines tokenized the text differently)")
    agree = sum(x == y for x, y in zip(argmax_t, argmax_l)) / len(argmax_l)
    ratio = ppl_t / ppl_l
    print(f"model {os.path.basename(a.model)}, text {os.path.basename(a.text)}: {len(ids)} tokens, "
          f"ctx {a.ctx}, {len(ids) // a.ctx} windows, {count_l} scored, {a.threads} threads; "
          f"llama-cpp-python {llama_cpp.__version__}")
    print("| engine | PPL | +/- | wall s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| llama.cpp | {ppl_l:.4f} | {err_l:.5f} | {secs_l:.1f} |")
    print(f"| typeformer | {ppl_t:.4f} | {err_t:.5f} | {secs_t:.1f} |")
    print(f"typeformer / llama.cpp perplexity: {ratio:.5f} ({100 * (ratio - 1):+.3f}%); "
          f"teacher-forced top-1 agreement {100 * agree:.2f}% of {len(argmax_l)}")
    if abs(ratio - 1) > a.max_dev:
        print(f"FAIL: the perplexities differ by more than {100 * a.max_dev:.2f}%")
        sys.exit(1)


if __name__ == "__main__":
    main()
