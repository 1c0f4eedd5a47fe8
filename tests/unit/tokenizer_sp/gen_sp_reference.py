"""Trains small SentencePiece models with the `sentencepiece` pip package and writes, for each,
the .model file and reference encodings/decodings that the C++ test compares against.

usage: gen_sp_reference.py OUTDIR SEED
exit 77 when the sentencepiece package is missing (the C++ test then skips with a message).

Output per model NAME: NAME.model and NAME.ref, whose lines are
  E <hex utf-8 input> <ids comma-separated> <hex utf-8 decode(ids)>
  D <ids comma-separated> <hex utf-8 decode(ids)>        (random id sequences)
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402

try:
    import sentencepiece as spm
except ImportError:
    print("sentencepiece pip package not installed", file=sys.stderr)
    sys.exit(77)

MODELS = {
    # name: trainer arguments
    "bpe_identity": dict(model_type="bpe", vocab_size=2000, normalization_rule_name="identity",
                         byte_fallback=True),
    "unigram_identity": dict(model_type="unigram", vocab_size=2000,
                             normalization_rule_name="identity", byte_fallback=True),
    "unigram_nfkc": dict(model_type="unigram", vocab_size=1500),  # nmt_nfkc, no byte fallback
    "bpe_nfkc": dict(model_type="bpe", vocab_size=1500, normalization_rule_name="nfkc",
                     remove_extra_whitespaces=False),
    # decode(encode(s)) == s holds for this one: identity, spaces kept, byte fallback.
    "unigram_roundtrip": dict(model_type="unigram", vocab_size=1200,
                              normalization_rule_name="identity", byte_fallback=True,
                              remove_extra_whitespaces=False,
                              user_defined_symbols=["<sep>", "[MASK]"],
                              control_symbols=["<ctl>"]),
    "bpe_roundtrip": dict(model_type="bpe", vocab_size=1200, normalization_rule_name="identity",
                          byte_fallback=True, remove_extra_whitespaces=False,
                          user_defined_symbols=["<sep>", "[MASK]"]),
    "bpe_suffix": dict(model_type="bpe", vocab_size=1000, normalization_rule_name="identity",
                       treat_whitespace_as_suffix=True, add_dummy_prefix=True),
    "char_identity": dict(model_type="char", normalization_rule_name="identity",
                          vocab_size=400, hard_vocab_limit=False),
    "word_nfkc": dict(model_type="word", vocab_size=1500),
}


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    train, test = corpus.make(seed)
    train_path = os.path.join(out, "sp_train.txt")
    with open(train_path, "w", encoding="utf-8") as f:
        f.write("\n".join(train) + "\n")
    rng = random.Random(seed + 1)
    for name, args in MODELS.items():
        prefix = os.path.join(out, name)
        spm.SentencePieceTrainer.train(input=train_path, model_prefix=prefix, num_threads=2,
                                       minloglevel=2, character_coverage=0.995,
                                       input_sentence_size=20000, **args)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        with open(prefix + ".ref", "w") as f:
            inputs = [t.encode("utf-8") for t in test]
            # Ill-formed UTF-8 (bytes input): each bad byte becomes U+FFFD.
            inputs += [b"bad \xff byte", b"\xc3\x28 trunc", b"\xe2\x82 short", b"\xed\xa0\x80 surr",
                       b"ok \xf0\x9f\x98 cut", b"\x80\x80\x80"]
            for raw in inputs:
                ids = sp.encode(raw)
                dec = sp.decode(ids)
                f.write("E %s %s %s\n" % (raw.hex() or "-", ",".join(map(str, ids)) or "-",
                                          dec.encode("utf-8").hex() or "-"))
            n = sp.get_piece_size()
            for _ in range(300):
                ids = [rng.randrange(n) for _ in range(rng.randint(1, 12))]
                if rng.random() < 0.5:  # favour byte pieces and the first ids (controls, unk)
                    ids = [rng.randrange(min(n, 300)) for _ in ids]
                dec = sp.decode(ids)
                f.write("D %s %s\n" % (",".join(map(str, ids)), dec.encode("utf-8").hex() or "-"))
    print("seed", seed, "models", len(MODELS), "test lines", len(test))


if __name__ == "__main__":
    main()
