"""Test corpus shared by the SentencePiece and WordPiece reference generators.

Text that is on every Debian machine (/usr/share/doc: copyright files, READMEs) plus the
`fortunes` package when installed, plus seeded random Unicode lines. Deterministic for a seed.
"""
import gzip
import os
import random

# Code point ranges for random lines: scripts whose properties have been stable across Unicode
# versions (so Python's, Rust's and our tables agree), plus emoji, combining marks and
# characters that are rare enough to be outside small vocabularies.
RANGES = [
    (0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E),
    (0xC0, 0xFF), (0x100, 0x17F), (0x391, 0x3C9), (0x410, 0x44F),
    (0x300, 0x36F), (0x4E00, 0x4FFF), (0x3041, 0x3096), (0x30A1, 0x30FA),
    (0x627, 0x64A), (0x5D0, 0x5EA), (0xAC00, 0xAC80), (0x1F600, 0x1F64F), (0x2000, 0x200A),
    (0xFF01, 0xFF5E), (0x2160, 0x217F), (0xE9, 0xE9),
]


_WORDS = ("the of and to in is that for it as with was on be by this are or an at from "
          "which not but have has had were all can one more their there been will would "
          "license software copyright free program source file files version debian package "
          "Permission granted Notice WITHOUT WARRANTY, (c) 2024 README.md http://example.org "
          "naïve café Ünïcödé 東京 日本語 Привет мир 123 4.5 x+y=z don't it's").split()


def _doc_lines(max_files):
    lines = []
    roots = ["/usr/share/doc"]
    paths = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                if f.startswith(("copyright", "README", "changelog.Debian")):
                    paths.append(os.path.join(dirpath, f))
    for p in paths[:max_files]:
        try:
            if p.endswith(".gz"):
                with gzip.open(p, "rb") as fh:
                    data = fh.read(20000)
            else:
                with open(p, "rb") as fh:
                    data = fh.read(20000)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        lines.extend(l for l in text.splitlines() if l.strip())
    return lines


def _fortune_lines():
    d = "/usr/share/games/fortunes"
    lines = []
    if not os.path.isdir(d):
        return lines
    for f in sorted(os.listdir(d)):
        p = os.path.join(d, f)
        if "." in f or not os.path.isfile(p):
            continue
        try:
            with open(p, "rb") as fh:
                text = fh.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines.extend(l for l in text.splitlines() if l.strip() and l.strip() != "%")
    return lines


def random_line(rng):
    n = rng.randint(1, 40)
    out = []
    for _ in range(n):
        lo, hi = rng.choice(RANGES)
        out.append(chr(rng.randint(lo, hi)))
        if rng.random() < 0.15:
            out.append(" " * rng.randint(1, 3))
    return "".join(out)


def make(seed, n_train=6000, n_test=2500, n_random=500):
    """Returns (train_lines, test_lines). Lines contain no '\\n' or '\\r'."""
    rng = random.Random(seed)
    text = _doc_lines(400) + _fortune_lines()
    text = [l.replace("\r", "") for l in text]
    # Machines without /usr/share/doc (slim containers): fill up with seeded word salad.
    while len(text) < n_train + n_test:
        text.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 15))))
    rng.shuffle(text)
    train = text[:n_train]
    test = text[n_train:n_train + n_test]
    if len(test) < n_test:  # small machines: reuse training lines
        test += train[: n_test - len(test)]
    test += [random_line(rng) for _ in range(n_random)]
    # Training also sees some random Unicode so that byte fallback is not the only path.
    train += [random_line(rng) for _ in range(200)]
    test += [
        "", " ", "   ", "a", " a", "a ", "  leading and trailing  ", "multiple   internal    spaces",
        "tab\there", "\u2581already marked", "\ufffd replacement", "<s> <unk> </s> [MASK]",
        "x" * 300, "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m", "\U0001F600\U0001F601 emoji",
        "full\uff37idth \uff21\uff22\uff23", "\u2160\u2161 roman", "e\u0301 combining",
    ]
    return train, test
