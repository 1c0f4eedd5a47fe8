#!/usr/bin/env python3
"""Byte-level BPE figures, typeformer vs tiktoken vs Hugging Face tokenizers, same run, one thread.

usage: python3 bench/tokenizer/run_bench.py BUILD_DIR [--data ../shared/data] [--mb 12] [--repeats 5]
         [--train-mb 10] [--results FILE]
Builds a corpus of at least --mb MB from text on the machine (same sources as the compatibility
test), measures encode throughput (median of --repeats, whole corpus as one string, no special
tokens) for GPT-2 and cl100k, and the time to train a 32k byte-level BPE vocabulary. Prints the
tables; --results FILE also writes them to FILE (RESULTS.md keeps each machine's run by hand, so
it is not overwritten by default).
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "unit", "tokenizer_bpe"))
import reference_ids  # noqa: E402  (corpus builder and patterns)


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    ap.add_argument("--mb", type=float, default=12)
    ap.add_argument("--train-mb", type=float, default=10)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", default=None)
    args = ap.parse_args()
    import random
    import tiktoken
    import tiktoken.load
    import tokenizers
    exe = os.path.join(args.build_dir, "bench", "tokenizer", "tfm_bench_tokenizer")
    work = os.path.join(args.build_dir, "bench", "tokenizer", "work")
    os.makedirs(work, exist_ok=True)

    rng = random.Random(1)
    docs = reference_ids.machine_corpus(rng, int(args.mb * 1e6))
    text = "".join(docs)
    while len(text.encode()) < args.mb * 1e6:  # not enough text on the machine: repeat it
        docs += docs
        text = "".join(docs)
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(text)
    nbytes = len(text.encode())
    print("corpus: %.1f MB" % (nbytes / 1e6))

    gpt2_dir = os.path.join(args.data, "gpt2")
    cl_file = os.path.join(args.data, "cl100k", "cl100k_base.tiktoken")
    enc_json, vocab_bpe = os.path.join(gpt2_dir, "encoder.json"), os.path.join(gpt2_dir, "vocab.bpe")
    rows = []
    for name, tfm_file in (("gpt2", enc_json), ("cl100k", cl_file)):
        out = subprocess.run([exe, "encode", tfm_file, corpus, str(args.repeats)], check=True,
                             capture_output=True, text=True).stdout.split()
        tfm_mbs, tfm_ntok = float(out[0]), int(out[1])
        if name == "gpt2":
            ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe, enc_json)
            tk = tiktoken.Encoding(name="gpt2b", pat_str=reference_ids.GPT2_PAT, mergeable_ranks=ranks,
                                   special_tokens={"<|endoftext|>": 50256})
            hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(enc_json, vocab_bpe))
            hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            tk = tiktoken.Encoding(name="cl100kb", pat_str=reference_ids.CL100K_PAT,
                                   mergeable_ranks=tiktoken.load.load_tiktoken_bpe(cl_file),
                                   special_tokens=reference_ids.CL100K_SPECIALS)
            hf = None
        tk_ntok = len(tk.encode_ordinary(text))
        tk_s = timed(lambda: tk.encode_ordinary(text), args.repeats)
        hf_mbs = None
        if hf is not None:
            # tokenizers slows down badly on one 12 MB string, so it gets the documents as a batch
            # (sequential: TOKENIZERS_PARALLELISM=false); its ids are checked per document.
            hf_ids = [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)]
            assert hf_ids == [tk.encode_ordinary(d) for d in docs], "ids differ from tokenizers"
            hf_mbs = nbytes / 1e6 / timed(lambda: hf.encode_batch(docs, add_special_tokens=False),
                                          args.repeats)
        assert tk_ntok == tfm_ntok, "token counts differ from tiktoken"
        rows.append((name, tfm_mbs, nbytes / 1e6 / tk_s, hf_mbs, tfm_ntok))
        print(rows[-1])

    # Training: typeformer vs tokenizers BpeTrainer, same corpus file, one thread.
    train_corpus = os.path.join(work, "train_corpus.txt")
    with open(train_corpus, "w", encoding="utf-8") as f:
        f.write(text[: int(args.train_mb * 1e6)])
    tr_repeats = max(1, min(3, args.repeats))
    out = subprocess.run([exe, "train", train_corpus, str(args.vocab), str(tr_repeats)], check=True,
                         capture_output=True, text=True).stdout.split()
    tfm_train = float(out[0])

    def hf_train():
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tr = tokenizers.trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=["<|endoftext|>"],
                                            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                            show_progress=False)
        tok.train([train_corpus], tr)
    hf_train_s = timed(hf_train, tr_repeats)
    train_mb = os.path.getsize(train_corpus) / 1e6

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [
        "## Byte-level BPE tokenizer (bench/tokenizer)",
        "",
        "Single thread, same run, median of %d (training: %d). Corpus: %.1f MB of text from the machine "
        "(fortunes, man pages in ~30 languages, /usr/share/doc), encoded without special tokens as one "
        "string (typeformer, tiktoken) or as a sequential batch of its %d documents (tokenizers, which "
        "slows down on one huge string); ids checked equal across implementations." % (args.repeats, tr_repeats, nbytes / 1e6, len(docs)),
        "Machine: %s, %s. tiktoken %s, tokenizers %s, Python %s." % (
            cpu, platform.machine(), tiktoken.__version__, tokenizers.__version__, platform.python_version()),
        "Reproduce: `python3 bench/tokenizer/run_bench.py BUILD_DIR` (after building tfm_bench_tokenizer).",
        "",
        "| encode | typeformer MB/s | tiktoken MB/s | tokenizers MB/s | typeformer / tiktoken |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, a, b, c, _ in rows:
        lines.append("| %s | %.1f | %.1f | %s | %.2fx |" % (name, a, b, "%.1f" % c if c else "n/a", a / b))
    lines += [
        "",
        "| training (%d vocab, %.1f MB) | typeformer s | tokenizers s | tokenizers / typeformer |" % (args.vocab, train_mb),
        "| --- | --- | --- | --- |",
        "| byte-level BPE, GPT-2 pattern | %.2f | %.2f | %.2fx |" % (tfm_train, hf_train_s, hf_train_s / tfm_train),
        "",
    ]
    if args.results:
        with open(args.results, "w") as f:
            f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
