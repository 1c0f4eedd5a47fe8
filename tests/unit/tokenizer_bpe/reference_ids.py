#!/usr/bin/env python3
"""Reference token ids for the byte-level BPE compatibility test (tests/unit/tokenizer_bpe).

Builds a multilingual corpus from text found on the machine (fortunes, /usr/share/doc, man pages
in every installed language) plus seeded random Unicode strings, and encodes it with the
independent reference implementations:

  gpt2_hf          Hugging Face `tokenizers`: BPE from encoder.json + vocab.bpe, ByteLevel
                   pre-tokenizer, <|endoftext|> added as a special token (always matched)
  gpt2_tiktoken    `tiktoken` built from the same files (data_gym format), encode_ordinary
  cl100k           `tiktoken` cl100k_base from the rank file, encode_ordinary
  cl100k_special   `tiktoken` cl100k_base, encode(allowed_special="all")
  cl100k_o200k     `tiktoken` with the cl100k ranks and the o200k_base pattern (checks the o200k
                   pre-tokenizer with the real regex engine), encode_ordinary

Nothing is downloaded. Output in OUT_DIR:
  corpus.jsonl     one JSON string per line (a document; may hold newlines)
  ids_<name>.txt   one line per document: the ids separated by spaces
  versions.txt     package versions
Exit status 77 (and a line starting with SKIP) when a package or the data is missing.
"""
import argparse
import glob
import gzip
import json
import os
import random
import sys

GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
CL100K_SPECIALS = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(77)


def read_text(path, limit):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except OSError:
        return None
    if b"\x00" in data:
        return None
    return data.decode("utf-8", errors="replace")


def chunks(text, rng, max_chars):
    """Splits text into documents of whole lines, up to about max_chars each."""
    out, cur, size = [], [], 0
    target = rng.randint(max_chars // 4, max_chars)
    for line in text.splitlines(keepends=True):
        cur.append(line)
        size += len(line)
        if size >= target:
            out.append("".join(cur))
            cur, size = [], 0
            target = rng.randint(max_chars // 4, max_chars)
    if cur:
        out.append("".join(cur))
    return out


def machine_corpus(rng, budget):
    files = []
    files += sorted(p for p in glob.glob("/usr/share/games/fortunes/**/*", recursive=True)
                    if os.path.isfile(p) and not p.endswith(".dat"))
    man = sorted(glob.glob("/usr/share/man/*/man*/*.gz"))  # translated pages: de fr ja ru zh ...
    man_en = sorted(glob.glob("/usr/share/man/man*/*.gz"))
    docs = sorted(glob.glob("/usr/share/doc/*/README*") + glob.glob("/usr/share/doc/*/copyright") +
                  glob.glob("/usr/share/doc/*/changelog*.gz"))
    rng.shuffle(man)
    rng.shuffle(man_en)
    rng.shuffle(docs)
    # Interleave sources so every kind of text is present at any budget.
    ordered = []
    for group in (files, man, man_en, docs):
        ordered.append(list(group))
    out, total, k = [], 0, 0
    while total < budget and any(ordered):
        group = ordered[k % len(ordered)]
        k += 1
        if not group:
            continue
        text = read_text(group.pop(0), 200_000)
        if not text:
            continue
        for d in chunks(text, rng, 3000):
            out.append(d)
            total += len(d.encode("utf-8"))
            if total >= budget:
                break
    return out


def random_unicode(rng, n):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " ", "  ", "\n", "\r\n", "\t", " \n ", "\r",
        "'", "'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'m", "'M", "'ll", "'LL",
        "'lL", "'d", "'D", "'\u017f", "'x",
        ".,;:!?-_/\\()[]{}<>\"#$%&*+=@^`|~",
        "\u00a0\u3000\u2028\u2029\u0085\u1680\u2003\u202f\u205f\u000b\u000c",
        "\u00e9\u00fc\u00df\u00c6\u0153\u01c5\u02b0\u0300\u0301\u0308\u20dd",
        "\u03b1\u03b2\u0393\u0416\u0436\u05d0\u0627\u0660\u0669\u0915\u093f\u0e01\u0e31",
        "\u4e2d\u6587\u65e5\u672c\u3042\u30a2\ud55c\uae00\u3007\u2160\u2167\u00b2\u00bd\u2460",
        "\U0001f600\U0001f917\U0001f44d\U0001f3fd\u200d\u2764\ufe0f\U00020000\U0002ebf0\U0001d7d8",
        "<|endoftext|>", "<|fim_prefix|>", "<|endofprompt|>", "<|",
    ]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.12:
                cp = rng.randint(0, 0x10FFFF)
                if 0xD800 <= cp <= 0xDFFF:
                    cp = 0xFFFD
                parts.append(chr(cp))
            elif r < 0.18:
                parts.append(chr(rng.randint(0x80, 0x2FFF)))
            else:
                pool = rng.choice(pools)
                if len(pool) > 3 and not pool.startswith("<|") and not pool.startswith("'"):
                    parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
                else:
                    parts.append(pool)
        out.append("".join(parts))
    # Long runs exercise the long-piece merge path and the space/digit rules.
    out.append(" " * 300 + "x")
    out.append("7" * 1000)
    out.append("a" * 2000)
    out.append("\n\n\n   \t\t  \r\n  end")
    out.append("".join(chr(0x300 + (i % 100)) for i in range(500)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "..",
                                                   "shared", "data"))
    ap.add_argument("--bytes", type=int, default=1_500_000, help="machine text budget")
    ap.add_argument("--random", type=int, default=3000, help="random strings")
    args = ap.parse_args()

    try:
        import tiktoken
        import tiktoken.load
        import tokenizers
    except ImportError as e:
        skip("python packages tiktoken and tokenizers are needed (pip install tiktoken tokenizers): %s" % e)
    gpt2_dir = os.path.join(args.data, "gpt2")
    cl100k_file = os.path.join(args.data, "cl100k", "cl100k_base.tiktoken")
    if not os.path.exists(os.path.join(gpt2_dir, "encoder.json")) or not os.path.exists(cl100k_file):
        skip("shared tokenizer data not found under %s" % args.data)

    rng = random.Random(args.seed)
    corpus = machine_corpus(rng, args.bytes) + random_unicode(rng, args.random)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for d in corpus:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")

    encoder_json = os.path.join(gpt2_dir, "encoder.json")
    vocab_bpe = os.path.join(gpt2_dir, "vocab.bpe")
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(encoder_json, vocab_bpe))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.add_special_tokens(["<|endoftext|>"])
    gpt2_ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe, encoder_json)
    tk_gpt2 = tiktoken.Encoding(name="gpt2_ref", pat_str=GPT2_PAT, mergeable_ranks=gpt2_ranks,
                                special_tokens={"<|endoftext|>": 50256})
    cl_ranks = tiktoken.load.load_tiktoken_bpe(cl100k_file)
    tk_cl = tiktoken.Encoding(name="cl100k_ref", pat_str=CL100K_PAT, mergeable_ranks=cl_ranks,
                              special_tokens=CL100K_SPECIALS)
    tk_o200k = tiktoken.Encoding(name="o200k_pattern_ref", pat_str=O200K_PAT,
                                 mergeable_ranks=cl_ranks, special_tokens={})

    refs = {
        "gpt2_hf": lambda s: hf.encode(s, add_special_tokens=False).ids,
        "gpt2_tiktoken": tk_gpt2.encode_ordinary,
        "cl100k": tk_cl.encode_ordinary,
        "cl100k_special": lambda s: tk_cl.encode(s, allowed_special="all"),
        "cl100k_o200k": tk_o200k.encode_ordinary,
    }
    for name, fn in refs.items():
        with open(os.path.join(args.out_dir, "ids_%s.txt" % name), "w") as f:
            for d in corpus:
                f.write(" ".join(map(str, fn(d))) + "\n")
    with open(os.path.join(args.out_dir, "versions.txt"), "w") as f:
        f.write("tiktoken %s\ntokenizers %s\nseed %d\n" % (tiktoken.__version__, tokenizers.__version__,
                                                          args.seed))
    total = sum(len(d.encode("utf-8")) for d in corpus)
    print("reference ids: %d documents, %d bytes, seed %d, tiktoken %s, tokenizers %s"
          % (len(corpus), total, args.seed, tiktoken.__version__, tokenizers.__version__))


if __name__ == "__main__":
    main()
