#!/usr/bin/env python3
"""Reference token ids and assistant-loss masks for tests/unit/sft_data (typeformer).

Independent of the C++ code under test:
  - the chat template is SmolLM2's own (tokenizer.chat_template of the GGUF, read with the
    `gguf` package) rendered by Python's jinja2 in the environment of transformers'
    apply_chat_template (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks);
  - the tokens come from llama.cpp (llama-cpp-python, vocab_only), parse_special on, no BOS;
  - assistant spans are found with sentinel characters wrapped around each assistant content
    (U+E000 ... U+E001) and removed after rendering, not by rendering prefixes as the C++ does;
    the span is the content plus the end-of-turn token text that follows it (the EOS token's
    text, "<|im_end|>" for SmolLM2), as TRL's assistant_only_loss / {% generation %} masks it.
  - a token is in the mask when its first byte lies inside a span (token bytes concatenate to
    the text, except bytes the vocabulary lacks, which llama.cpp drops; they are skipped).

Plain prompt/completion: prompt + completion tokenized as one text, tokens that start at or after
len(prompt) masked in, EOS appended (masked in). Conversational prompt/completion: the prompt
rendered with the generation prompt, the whole rendered without; completion assistant spans by
the same sentinels.

Usage: python3 make_fixtures.py [GGUF]   (writes conversations.jsonl and expected.txt here)
"""
import json
import os
import sys

import gguf
import jinja2.sandbox
import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
GGUF = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/typeformer/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")

S0, S1 = "\ue000", "\ue001"

EXAMPLES = [
    {"messages": [{"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "2+2 = 4."}]},
    {"messages": [{"role": "system", "content": "You answer in one word."},
                  {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris"}]},
    {"messages": [{"role": "user", "content": "Count to three."},
                  {"role": "assistant", "content": "1, 2, 3"},
                  {"role": "user", "content": "Now backwards."},
                  {"role": "assistant", "content": "3, 2, 1"},
                  {"role": "user", "content": "Thanks!"},
                  {"role": "assistant", "content": "You're welcome."}]},
    {"messages": [{"role": "user", "content": "Traduis « bonjour » en japonais, s'il te plaît."},
                  {"role": "assistant",
                   "content": "こんにちは (konnichiwa) 🎌 — or in Arabic: مرحبا, Ελληνικά: γειά"}]},
    {"messages": [{"role": "system", "content": "  Be terse.  "},
                  {"role": "user", "content": "Sort 31 4 159 26 5\n"},
                  {"role": "assistant", "content": "  4 5 26 31 159\n\n"}]},
    {"messages": [{"role": "user", "content": "Say hi."},
                  {"role": "assistant", "content": "Hi!"},
                  {"role": "user", "content": "And now?"}]},
    {"messages": [{"role": "user", "content": "Reply with nothing."},
                  {"role": "assistant", "content": ""}]},
    {"messages": [{"role": "user", "content": "bytes \u0004\u0006 and \U00040000 here"},
                  {"role": "assistant", "content": "echo:\u0004x\U00040001y\u0013"}]},
    {"messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": "Let me check."},
                  {"role": "tool", "content": "{\"temp_c\": 12}"},
                  {"role": "assistant", "content": "It is 12 °C in Paris."}]},
    {"messages": [{"role": "system", "content": "You write Python."},
                  {"role": "user", "content": "A function that adds two numbers, please."},
                  {"role": "assistant",
                   "content": "```python\ndef add(a, b):\n    return a + b\n```\n\tTabs\tand  spaces."}]},
    {"prompt": "The capital of Italy is", "completion": " Rome."},
    {"prompt": "Ünïcödé → ", "completion": "✓ 完成"},
    {"prompt": [{"role": "user", "content": "What is 7*6?"}],
     "completion": [{"role": "assistant", "content": "42"}]},
    {"prompt": [{"role": "system", "content": "Math tutor."},
                {"role": "user", "content": "Half of 10?"}],
     "completion": [{"role": "assistant", "content": "5"}]},
]


def field(reader, key):
    return reader.fields[key].contents()


def main():
    reader = gguf.GGUFReader(GGUF)
    template = field(reader, "tokenizer.chat_template")
    tokens = field(reader, "tokenizer.ggml.tokens")
    eos_id = int(field(reader, "tokenizer.ggml.eos_token_id"))
    bos_id = int(field(reader, "tokenizer.ggml.bos_token_id"))
    eos_text = tokens[eos_id]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(template)

    # Bytes without a token of their own (GPT-2 bytes_to_unicode text absent from the vocab).
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = set(tokens)
    dropped = {b for b, c in zip(bs, cs) if chr(c) not in vocab}

    llm = llama_cpp.Llama(GGUF, vocab_only=True, verbose=False)

    def render(messages, gen):
        return tpl.render(messages=messages, add_generation_prompt=gen,
                          bos_token=tokens[bos_id], eos_token=eos_text)

    def spans_by_sentinel(messages, wrap, gen=False):
        """Rendered bytes without sentinels and [begin, end) byte spans of the wrapped contents
        extended by the end-of-turn text that follows."""
        marked = [dict(m, content=S0 + m["content"] + S1) if wrap(i, m) else m
                  for i, m in enumerate(messages)]
        text = render(marked, gen)
        out, spans, begin = bytearray(), [], None
        for ch in text:
            if ch == S0:
                begin = len(out)
            elif ch == S1:
                spans.append([begin, len(out)])
            else:
                out += ch.encode()
        eb = eos_text.encode()
        for s in spans:
            if out[s[1]:s[1] + len(eb)] == eb:
                s[1] += len(eb)
        assert out.decode() == render(messages, gen)
        return bytes(out), spans

    def starts(text, ids):
        pos, res = 0, []
        for i in ids:
            piece = llm.detokenize([i], special=True)
            while pos < len(text) and text[pos:pos + len(piece)] != piece and text[pos] in dropped:
                pos += 1
            assert text[pos:pos + len(piece)] == piece, (text, pos, piece)
            res.append(pos)
            pos += len(piece)
        assert all(b in dropped for b in text[pos:])
        return res

    def tokenize(text):
        return llm.tokenize(text, add_bos=False, special=True)

    def masked(text, ids, spans):
        return [int(any(b <= s < e for b, e in spans)) for s in starts(text, ids)]

    lines, expected = [], []
    for k, ex in enumerate(EXAMPLES):
        lines.append(json.dumps(ex, ensure_ascii=(k % 2 == 0)))
        if "messages" in ex:
            text, spans = spans_by_sentinel(ex["messages"], lambda i, m: m["role"] == "assistant")
            ids = tokenize(text)
            mask = masked(text, ids, spans)
        elif isinstance(ex["prompt"], str):
            text = (ex["prompt"] + ex["completion"]).encode()
            ids = tokenize(text)
            p = len(ex["prompt"].encode())
            mask = [int(s >= p) for s in starts(text, ids)]
            ids.append(eos_id)
            mask.append(1)
        else:
            np = len(ex["prompt"])
            msgs = ex["prompt"] + ex["completion"]
            text, spans = spans_by_sentinel(msgs, lambda i, m: i >= np)
            assert text.startswith(render(ex["prompt"], True).encode())
            ids = tokenize(text)
            mask = masked(text, ids, spans)
        expected.append(f"example {k + 1}")
        expected.append("ids " + " ".join(map(str, ids)))
        expected.append("mask " + " ".join(map(str, mask)))

    with open(os.path.join(HERE, "conversations.jsonl"), "w", encoding="utf-8") as f:
        # A blank line and a whitespace-only line: the reader skips them (line numbers count).
        f.write("\n".join(lines[:3]) + "\n\n  \n" + "\n".join(lines[3:]) + "\n")
    with open(os.path.join(HERE, "expected.txt"), "w") as f:
        f.write("# generated by make_fixtures.py from " + os.path.basename(GGUF) + "\n")
        f.write("\n".join(expected) + "\n")


if __name__ == "__main__":
    main()
