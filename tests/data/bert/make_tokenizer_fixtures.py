#!/usr/bin/env python3
"""Token-id fixtures for wordpiece_tokenizer::from_hf_json (tests/unit/bert/tokenizer_test.cpp).

The ids come from Hugging Face's `tokenizers` package (Tokenizer.from_file / from_str, then
encode() with padding and truncation off), an implementation independent of typeformer's.

  make_tokenizer_fixtures.py fixtures MODEL_DIR OUT_DIR
      writes OUT_DIR/small_tokenizer.json (a 300-token cased WordPiece tokenizer.json built here
      with BertProcessing, strip_accents on, lowercase off) and OUT_DIR/tokenizer_cases.json:
      {"corpus": [...], "small": [[ids]...], "minilm": [[ids]...]} where "minilm" is
      all-MiniLM-L6-v2's tokenizer.json (MODEL_DIR/tokenizer.json).
  make_tokenizer_fixtures.py live TOKENIZER_JSON OUT_JSON SEED COUNT
      COUNT random strings (seeded; printable ASCII, Latin accents, Greek, Cyrillic, CJK, Hangul,
      combining marks, emoji, controls, whitespace, the special tokens) and their ids, as
      {"corpus": [...], "ids": [[...]...]}; the C++ test compares them at test time.
"""
import json
import random
import sys

from tokenizers import Tokenizer

CORPUS = [
    "",
    " ",
    "\t\n",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld café naïve résumé Ångström",
    "ÉCOLE Straße İstanbul ǅemal ﬁne",
    "日本語のテキストと漢字",
    "中文句子，包含标点符号。",
    "한국어 문장입니다",
    "Русский текст и Ελληνικά",
    "مرحبا بالعالم",
    "ภาษาไทย",
    "emoji 😀👍🏽 and ♥ symbols ™ © ®",
    "punctuation: $5.00 + 3 = 8? <tag> a|b ~c ^d `e` {f} [g] (h) \"i\" 'j' @k #l %m &n *o",
    "don't won't it's we're they've I'm",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis " * 3,
    "a" * 100,
    "a" * 101,
    "x" * 150 + " short",
    "numbers 1234567890 3.14159 1e-10 0x1F",
    "hello [MASK] world [SEP] x[CLS]y [UNK] [PAD]",
    "[cls] lowercase specials are not special [mask]",
    "control\u0000chars\u0007and\ufffdreplacement\u200bzero width",
    "non\u00a0breaking\u2003spaces\u3000ideographic",
    "combining e\u0301 a\u0308 o\u0302 n\u0303",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&r=2",
    "Tabs\tand\nnewlines\r\nmixed",
    "C++ is not C#; F# neither.",
    "A sentence embedding maps text to a vector.",
    "ﾊﾝｶｸ half-width katakana and ｆｕｌｌ full-width latin",
    "Ωmega ΣΙΓΜΑ ς final sigma",
    "𠀀𠀁 supplementary ideographs 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "...!!!???,,,;;;:::---___",
    "word" + "##" + "piece ##prefix",
]

# A small cased vocabulary: specials, ASCII letters and digits, punctuation, common pieces.
SMALL_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
               [chr(c) for c in range(33, 127)] +
               ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)] +
               ["##" + chr(c) for c in range(ord("0"), ord("9") + 1)] +
               ["the", "The", "quick", "brown", "fox", "jump", "##s", "over", "lazy", "dog",
                "Hello", "hello", "world", "##ing", "##ed", "##er", "sentence", "embed", "##ding",
                "text", "vector", "cafe", "Ecole", "##lle", "super", "##cal", "##ifr", "word",
                "##piece", "e", "##e", "n", "##n", "a", "##a", "o", "##o", "日", "本", "語", "中",
                "文", "##s", "C", "##t", "don", "won", "it", "we", "re", "ve", "I", "m", "t"])


def small_tokenizer_json():
    vocab = {}
    for t in SMALL_VOCAB:
        vocab.setdefault(t, len(vocab))
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": True, "lowercase": False},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", vocab["[SEP]"]],
                           "cls": ["[CLS]", vocab["[CLS]"]]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 12, "vocab": vocab},
    }


def ids_of(tok, corpus):
    tok.no_padding()
    tok.no_truncation()
    return [tok.encode(s).ids for s in corpus]


def random_strings(seed, count):
    rng = random.Random(seed)
    pools = [
        [chr(c) for c in range(32, 127)],
        list("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿÀÉÎÕÜßœŒ"),
        [chr(c) for c in range(0x391, 0x3CA)] + [chr(c) for c in range(0x410, 0x450)],
        [chr(c) for c in range(0x4E00, 0x4E80)] + [chr(c) for c in range(0x3040, 0x30FF)],
        [chr(c) for c in range(0xAC00, 0xAC40)],
        [chr(c) for c in range(0x300, 0x320)],
        ["😀", "👍", "🏽", "♥", "™", "€", "£", "¥", "°", "§", "¶", "–", "—", "“", "”", "…"],
        ["\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\u200b", "\u0000", "\u0007", "\ufffd"],
        ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "##", " the ", " and ", " sentence "],
    ]
    weights = [40, 10, 6, 8, 4, 3, 4, 4, 2]
    out = []
    for _ in range(count):
        n = rng.randint(0, 60)
        s = "".join(rng.choice(rng.choices(pools, weights)[0]) for _ in range(n))
        out.append(s)
    return out


def main():
    if sys.argv[1] == "fixtures":
        model_dir, out_dir = sys.argv[2], sys.argv[3]
        small = small_tokenizer_json()
        with open(f"{out_dir}/small_tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(small, f, ensure_ascii=False, indent=1)
        small_tok = Tokenizer.from_str(json.dumps(small))
        minilm = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        doc = {"corpus": CORPUS, "small": ids_of(small_tok, CORPUS),
               "minilm": ids_of(minilm, CORPUS)}
        with open(f"{out_dir}/tokenizer_cases.json", "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
            f.write("\n")
    elif sys.argv[1] == "live":
        path, out, seed, count = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        corpus = random_strings(seed, count)
        doc = {"corpus": corpus, "ids": ids_of(Tokenizer.from_file(path), corpus)}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
    else:
        sys.exit("usage: see the docstring")


if __name__ == "__main__":
    main()
