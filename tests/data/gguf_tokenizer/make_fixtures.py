#!/usr/bin/env python3
"""Token ids from llama.cpp (the llama-cpp-python package) for a multilingual corpus, as fixtures
for tests/unit/gguf_tokenizer.

The corpus (about 1.3 MB) is built from text available offline: the Debian `fortunes` files, the
Unicode data files under /usr/share/unicode, Python's own docstrings, hand-written lines in many
scripts, and generated lines (seeded) that draw letters, marks, digits, emoji and spaces from
many Unicode blocks. Each record is tokenized by llama_cpp.Llama(vocab_only=True).tokenize with
the record's add_special / parse_special flags.

  make_fixtures.py --model M.gguf --fixture OUT   a compact subset (committed)
  make_fixtures.py --model M.gguf --full OUT      every record (the opt-in full comparison)
  make_fixtures.py --spm-gguf OUT.gguf            trains a small SentencePiece BPE model with
                                                  byte fallback and writes it as a GGUF
                                                  (tokenizer.ggml.model = llama)

For SmolLM2 (model gpt2) the records are tokenized once per pre-tokenizer of PRE_VARIANTS: a copy
of the file's metadata with tokenizer.ggml.pre replaced (the C++ test builds the same copy).

Record file format (binary safe): "! pre NAME" starts the section of one pre-tokenizer; a record
is a line "@ FLAGS NBYTES NIDS", the NBYTES bytes of text, a newline, then the NIDS ids separated
by spaces and a newline. FLAGS: 'a' add_special, 'p' parse_special, '-' neither. A line
"= RECORDS BYTES TOKENS SECONDS_PER_CALL SECONDS_WHOLE" ends a section with llama.cpp's time:
tokenizing the records one call each (through Python), and the concatenated '-' texts in one
call.

Exit status 77 when llama_cpp cannot be imported or the model is missing (the test reports a
skip).
"""
import argparse
import glob
import io
import os
import random
import sys
import time

SEED = 20240618

HAND_WRITTEN = [
    # Latin, contractions, case
    "Hello world! It's a test: don't, won't, I'LL, we'Re, they've, she'd, I'm.",
    "The quick brown fox jumps over the lazy dog 1234567890 times.",
    "’s curly apostrophes ’t ’re and 'ſ long s and 'S capital",
    # CJK
    "汉字是中文的书写系统。今天的天气很好，我们去公园散步吧！",
    "日本語のテキスト：ひらがな、カタカナ、漢字を混ぜて書きます。東京は2024年に…",
    "한국어 문장입니다. 서울에서 부산까지 KTX로 2시간 30분 걸립니다.",
    # Arabic, Hebrew
    "مرحبا بالعالم! هذه جملة عربية مع أرقام ١٢٣٤٥ و 67890.",
    "שלום עולם, זהו משפט בעברית עם ניקוד: שָׁלוֹם.",
    # Indic, Thai
    "नमस्ते दुनिया! यह हिन्दी का वाक्य है। संख्या: १२३४५",
    "வணக்கம் உலகம் — தமிழ் எழுத்துக்கள்",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ ๑๒๓",
    # Cyrillic, Greek, Armenian, Georgian
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Γειά σου Κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "Բարեւ աշխարհ, ქართული ენა, Ελληνικά και Ἀθῆναι",
    # emoji, ZWJ, flags, skin tones, variation selectors
    "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ☺︎ 🧑🏿‍🚀 done.",
    # combining marks, NFD, zalgo
    "e\u0301 a\u0308 o\u0302\u0323 Z\u0351\u0354a\u036b\u0307l\u0352g\u0344o\u0306 n\u0303",
    "Ａｂｃ　全角スペース　ｘｙｚ１２３ ﬁ ﬂ ℌ ℍ Ⅷ ⅷ ½ ² ³",
    # numbers
    "3.14159 2,718,281 1e-10 0x1F 007 12:30:45 2024-06-18 +33 6 12 34 56 78 ٣٤٥ ۴۵۶ ৭৮৯",
    # code
    "def f(x):\n    return x**2 + 3*x - 1  # comment\n\nif __name__ == '__main__':\n\tprint(f(2))",
    "int main(int argc, char** argv) { std::vector<int> v{1,2,3}; return v[0] != 1; }",
    "for (let i = 0; i < 10; i++) { console.log(`value: ${i}`); } // done",
    # whitespace runs
    "a  b   c    d\t\te\n\nf\r\ng \u00a0h\u3000i\u2009j\u2028k\u0085l   ",
    "   leading spaces and trailing   ",
    "\n\n\n",
    " ",
    "\t",
    "line1\r\nline2\r\n\r\nline3  \n  line4",
    # special tokens (ChatML, SmolLM2's, Llama's)
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after<|endoftext|><|endoftext|>",
    "<|im_start|><|im_end|> <repo_name>x<file_sep>y<filename>z",
    "<s> [INST] Hello [/INST] </s> <unk> <0x41>",
    "not special: <|im_start |> <| im_end|> <|endoftext",
    # mixed punctuation
    "¡Hola! ¿Qué tal? «Ça va» — “quotes” ‘single’ … • § ¶ † ‡ ※ ‼ ⁇ 〈〉【】「」『』",
    "$100 + 50% = <=> ^_^ ~tilde~ |pipe| `backtick` @user #tag &amp; *star* /slash\\",
]

SCRIPTS = [  # (name, letter ranges, digits)
    ("latin", [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xFF), (0x100, 0x17F)], "0123456789"),
    ("greek", [(0x391, 0x3A9), (0x3B1, 0x3C9)], ""),
    ("cyrillic", [(0x410, 0x44F)], ""),
    ("armenian", [(0x531, 0x556), (0x561, 0x586)], ""),
    ("hebrew", [(0x5D0, 0x5EA)], ""),
    ("arabic", [(0x621, 0x64A)], "٠١٢٣٤٥٦٧٨٩"),
    ("devanagari", [(0x905, 0x939)], "०१२३४५६७८९"),
    ("bengali", [(0x985, 0x9B9)], "০১২৩৪৫৬৭৮৯"),
    ("tamil", [(0xB85, 0xBB9)], "௦௧௨௩௪௫௬௭௮௯"),
    ("thai", [(0xE01, 0xE2E)], "๐๑๒๓๔๕๖๗๘๙"),
    ("georgian", [(0x10D0, 0x10FA)], ""),
    ("hangul", [(0xAC00, 0xD7A3)], ""),
    ("hiragana", [(0x3041, 0x3096)], ""),
    ("katakana", [(0x30A1, 0x30FA)], ""),
    ("cjk", [(0x4E00, 0x9FFF)], "〇一二三四五六七八九"),
    ("ethiopic", [(0x1200, 0x1248)], ""),
    ("cherokee", [(0x13A0, 0x13F4)], ""),
    ("math", [(0x1D400, 0x1D4FF)], "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"),
]
MARKS = [chr(c) for c in range(0x300, 0x36F)] + ["\u093e", "\u093f", "\u0e31", "\u0e34", "\u05b7"]
EMOJI = ["😀", "👍", "🏽", "\u200d", "👩", "💻", "🇩", "🇪", "❤", "\ufe0f", "🎉", "🔥", "🥲", "🫠"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "   ", " \n "]
PUNCT = list(".,;:!?()[]{}-–—'\"“”‘’…·•/\\@#$%^&*+=<>|~`_") + ["'s", "'t", "'ll", "'VE"]


def assigned(cp):
    import unicodedata
    return unicodedata.category(chr(cp))[0] in "LMN"


def generated_lines(n_lines, rng):
    pools = []
    for name, ranges, digits in SCRIPTS:
        letters = [chr(c) for a, b in ranges for c in range(a, b + 1) if assigned(c)]
        pools.append((name, letters, digits))
    out = []
    for i in range(n_lines):
        name, letters, digits = pools[i % len(pools)]
        other = pools[rng.randrange(len(pools))]
        parts = []
        for _ in range(rng.randint(3, 14)):
            r = rng.random()
            src = letters if rng.random() < 0.85 else other[1]
            if r < 0.65:
                w = "".join(rng.choice(src) for _ in range(rng.randint(1, 9)))
                if rng.random() < 0.15:
                    w += rng.choice(MARKS)
                parts.append(w)
            elif r < 0.75:
                ds = digits or "0123456789"
                parts.append("".join(rng.choice(ds) for _ in range(rng.randint(1, 7))))
            elif r < 0.85:
                parts.append(rng.choice(PUNCT))
            elif r < 0.92:
                parts.append("".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4))))
            else:
                parts.append(rng.choice(SPACES))
            parts.append(rng.choice(SPACES) if rng.random() < 0.2 else " ")
        out.append("".join(parts))
    return out


def fortune_records(limit_bytes):
    recs, total = [], 0
    files = sorted(f for f in glob.glob("/usr/share/games/fortunes/*")
                   if not f.endswith((".dat", ".u8")) and os.path.isfile(f))
    for path in files:
        text = open(path, "rb").read().decode("utf-8", "replace")
        for entry in text.split("\n%\n"):
            if not entry.strip():
                continue
            recs.append(entry)
            total += len(entry.encode())
            if total >= limit_bytes:
                return recs
    return recs


def unicode_file_records(limit_bytes):
    """Groups of four lines from the first part of each Unicode data file (a quarter each)."""
    recs = []
    for name in ["USourceData.txt", "NamesList.txt", "TangutSources.txt", "CaseFolding.txt"]:
        path = os.path.join("/usr/share/unicode", name)
        if not os.path.exists(path):
            continue
        lines = open(path, "rb").read().decode("utf-8", "replace").split("\n")
        size = 0
        for k in range(0, len(lines), 4):
            rec = "\n".join(lines[k:k + 4])
            recs.append(rec)
            size += len(rec.encode())
            if size >= limit_bytes // 4:
                break
    return recs


def docstring_records(limit_bytes):
    import builtins, collections, json, os as os_mod, re, string, textwrap, itertools
    recs, total = [], 0
    for mod in [builtins, collections, json, os_mod, re, string, textwrap, itertools]:
        for name in sorted(dir(mod)):
            doc = getattr(getattr(mod, name, None), "__doc__", None)
            if isinstance(doc, str) and doc.strip():
                recs.append(doc)
                total += len(doc.encode())
                if total >= limit_bytes:
                    return recs
    return recs


def build_corpus():
    """[(flags, text)] in a fixed order."""
    rng = random.Random(SEED)
    recs = []
    for line in HAND_WRITTEN:
        recs.append(("-", line))
        recs.append(("p", line))
        recs.append(("a", line))
        recs.append(("ap", line))
    recs += [("-", t) for t in generated_lines(4000, rng)]
    recs += [("-", t) for t in fortune_records(520_000)]
    recs += [("-", t) for t in unicode_file_records(300_000)]
    recs += [("-", t) for t in docstring_records(200_000)]
    return recs


def fixture_subset(recs, budget, all_flags=True):
    """Every hand-written record (with all_flags=False only without add_special), then an even
    sample of the rest, up to `budget` text bytes."""
    n_hand = 4 * len(HAND_WRITTEN)
    out = [r for r in recs[:n_hand] if all_flags or "a" not in r[0]]
    rest = recs[n_hand:]
    size = sum(len(t.encode()) for _, t in out)
    total_rest = sum(len(t.encode()) for _, t in rest)
    step = max(1, int(total_rest / max(1, budget - size)))
    for i in range(0, len(rest), step):
        out.append(rest[i])
        size += len(rest[i][1].encode())
        if size >= budget:
            break
    return out


def tokenize_all(model, recs):
    """llama.cpp's ids for recs, and its time for per-record calls and for the whole text."""
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    enc = [t.encode("utf-8") for _, t in recs]
    t0 = time.perf_counter()
    ids = [llm.tokenize(b, add_bos="a" in f, special="p" in f) for (f, _), b in zip(recs, enc)]
    t_calls = time.perf_counter() - t0
    whole = b"".join(b for (f, _), b in zip(recs, enc) if f == "-")
    t0 = time.perf_counter()
    llm.tokenize(whole, add_bos=False, special=False)
    t_whole = time.perf_counter() - t0
    return ids, t_calls, t_whole


def write_records(f, recs, ids):
    n_bytes = n_tok = 0
    for (flags, text), tok in zip(recs, ids):
        b = text.encode("utf-8")
        f.write(f"@ {flags} {len(b)} {len(tok)}\n".encode())
        f.write(b + b"\n")
        f.write((" ".join(map(str, tok)) + "\n").encode())
        n_bytes += len(b)
        n_tok += len(tok)
    return n_bytes, n_tok


def write_file(path, header, sections):
    """sections: [(pre or None, recs, ids, t_calls, t_whole)]."""
    with open(path, "wb") as f:
        f.write(header.encode())
        for pre, recs, ids, t_calls, t_whole in sections:
            if pre is not None:
                f.write(f"! pre {pre}\n".encode())
            n_bytes, n_tok = write_records(f, recs, ids)
            f.write(f"= {len(recs)} {n_bytes} {n_tok} {t_calls:.6f} {t_whole:.6f}\n".encode())
            print(f"{path} [{pre}]: {len(recs)} records, {n_bytes} bytes, {n_tok} tokens; "
                  f"llama.cpp {t_calls:.3f} s in per-record calls, {t_whole:.3f} s whole")


PRE_VARIANTS = ["smollm", "gpt-2", "llama-bpe", "qwen2", "default"]


def write_pre_variant(model, pre, out_path):
    """A copy of `model`'s metadata (no tensors) with tokenizer.ggml.pre = pre: llama.cpp then
    tokenizes SmolLM2's vocabulary with that pre-tokenizer (the C++ test builds the same file)."""
    import gguf
    r = gguf.GGUFReader(model)
    w = gguf.GGUFWriter(out_path, r.fields["general.architecture"].contents())
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        val = pre if key == "tokenizer.ggml.pre" else f.contents()
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, val, f.types[0], sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_spm_gguf(out_path):
    """Trains SentencePiece BPE (byte fallback, two user-defined symbols) on part of the corpus
    and writes its vocabulary as a GGUF with no tensors, loadable by llama.cpp with
    vocab_only."""
    import gguf
    import sentencepiece as spm
    rng = random.Random(SEED + 1)
    text = HAND_WRITTEN * 3 + generated_lines(600, rng) + fortune_records(60_000)
    sentences = [s for t in text for s in t.split("\n") if s.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, model_type="bpe",
        vocab_size=2000, byte_fallback=True, character_coverage=0.98,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"], split_digits=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        elif sp.id_to_piece(i) in ("<|im_start|>", "<|im_end|>"):
            t = 4
        types.append(t)
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_name("tfm-spm-tiny")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out_path}: {len(tokens)} tokens")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--fixture")
    ap.add_argument("--fixture-bytes", type=int, default=24_000)
    ap.add_argument("--full")
    ap.add_argument("--spm-gguf")
    ap.add_argument("--spm-model", action="store_true",
                    help="--model is a SentencePiece GGUF: one section, no pre variants")
    a = ap.parse_args()
    if a.spm_gguf:
        write_spm_gguf(a.spm_gguf)
    if not (a.fixture or a.full):
        return
    if not a.model or not os.path.exists(a.model):
        print(f"model {a.model} is missing")
        sys.exit(77)
    recs = build_corpus()
    try:
        import llama_cpp
    except Exception as e:  # noqa: BLE001
        print(f"llama_cpp is not importable: {e}")
        sys.exit(77)
    header = (f"# llama.cpp token ids (llama-cpp-python {llama_cpp.__version__}) for the "
              f"tokenizer of {os.path.basename(a.model)}; made by make_fixtures.py\n")
    if a.fixture:
        sections = []
        for k, pre in enumerate(PRE_VARIANTS if not a.spm_model else [None]):
            budget = a.fixture_bytes if k == 0 else a.fixture_bytes // 3
            sub = fixture_subset(recs, budget, all_flags=(k == 0))
            path = variant_path(a, pre)
            sections.append((pre, sub) + tokenize_all(path, sub))
        write_file(a.fixture, header, sections)
    try:
        if a.full:
            sections = []
            for pre in (PRE_VARIANTS if not a.spm_model else [None]):
                sections.append((pre, recs) + tokenize_all(variant_path(a, pre), recs))
            write_file(a.full, header, sections)
    finally:
        for pre in PRE_VARIANTS:
            path = variant_path(a, pre, create=False)
            if path != a.model and os.path.exists(path):
                os.remove(path)


def variant_path(a, pre, create=True):
    if pre is None or pre == "smollm":
        return a.model
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f"tfm_gtok_{os.getpid()}_{pre}.gguf")
    if create and not os.path.exists(path):
        write_pre_variant(a.model, pre, path)
    return path

if __name__ == "__main__":
    main()
