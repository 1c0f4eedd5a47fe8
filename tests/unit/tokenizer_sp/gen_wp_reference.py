"""Builds a WordPiece vocabulary with Hugging Face `tokenizers` (trained on the test corpus, no
hub download) and writes reference encodings for several BertNormalizer configurations.

usage: gen_wp_reference.py OUTDIR SEED       (exit 77 when `tokenizers` is missing)

Output: wp_vocab.txt and wp.ref, whose lines are
  C <name> <clean_text> <chinese> <strip: 0|1|-> <lowercase> <max_chars>    (a configuration)
  E <name> <hex utf-8 input> <ids comma-separated> <hex utf-8 decode(ids)>
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

try:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import WordPiece
except ImportError:
    print("tokenizers pip package not installed", file=sys.stderr)
    sys.exit(77)

CONFIGS = [
    # name, clean_text, handle_chinese_chars, strip_accents (None = follow lowercase), lowercase,
    # max_input_chars_per_word
    ("uncased", True, True, None, True, 100),
    ("cased", True, True, None, False, 100),
    ("lower_keep_accents", True, True, False, True, 8),
    ("strip_only", True, False, True, False, 100),
    ("raw", False, False, False, False, 12),
]


def build(vocab_path, clean, chinese, strip, lower, max_chars):
    tok = Tokenizer(WordPiece.from_file(vocab_path, unk_token="[UNK]",
                                        max_input_chars_per_word=max_chars))
    tok.normalizer = normalizers.BertNormalizer(clean_text=clean, handle_chinese_chars=chinese,
                                                strip_accents=strip, lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    train, test = corpus.make(seed + 17)
    # The vocabulary: trained on the uncased normalization, then the cased configurations reuse
    # it (so they exercise [UNK] on capitals that never got their own token).
    trainer_tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    trainer_tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    trainer_tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=3000, min_frequency=2, limit_alphabet=400,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                        "[MASK]"], show_progress=False)
    trainer_tok.train_from_iterator(train, trainer=trainer)
    vocab = sorted(trainer_tok.get_vocab().items(), key=lambda kv: kv[1])
    vocab_path = os.path.join(out, "wp_vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        for t, _ in vocab:
            f.write(t + "\n")
    test = test + ["HELLO World", "Ünïcödé ÀÉÎÕÜ", "İstanbul ΣΊΣΥΦΟΣ", "don't stop , ok ?",
                   "a$b+c<d=e>f^g`h|i~j", "中文字符测试", "\u00a0nbsp\u3000ideo",
                   "zero\u200bwidth", "ctrl\x01\x7fchars", "한국어 텍스트",
                   "supercalifragilisticexpialidocious", "x" * 150]
    with open(os.path.join(out, "wp.ref"), "w") as f:
        for name, clean, chinese, strip, lower, max_chars in CONFIGS:
            tok = build(vocab_path, clean, chinese, strip, lower, max_chars)
            f.write("C %s %d %d %s %d %d\n" % (name, clean, chinese,
                                                "-" if strip is None else str(int(strip)),
                                                lower, max_chars))
            for t in test:
                ids = tok.encode(t, add_special_tokens=False).ids
                dec = tok.decode(ids)
                f.write("E %s %s %s %s\n" % (name, t.encode("utf-8").hex() or "-",
                                             ",".join(map(str, ids)) or "-",
                                             dec.encode("utf-8").hex() or "-"))
    print("seed", seed, "vocab", len(vocab), "test lines", len(test))


if __name__ == "__main__":
    main()
