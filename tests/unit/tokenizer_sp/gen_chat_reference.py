"""Renders seeded random conversations with the published Jinja chat templates (jinja2, in the
sandboxed environment transformers' apply_chat_template uses) as the reference for
chat_template.hpp. No hub download: the template strings are copied below from the cited files.

usage: gen_chat_reference.py OUTDIR SEED     (exit 77 when jinja2 is missing)

Output chat.ref, one conversation per line:
  R <format> <add_generation_prompt> <n> (<hex role> <hex content>)*n <hex rendered text>
  X <format> <add_generation_prompt> <n> (<hex role> <hex content>)*n      (template raised)
"""
import os
import random
import sys

try:
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("jinja2 pip package not installed", file=sys.stderr)
    sys.exit(77)

TEMPLATES = {
    # Hugging Face docs, "Templates for Chat Models" (chat_templating.md), ChatML example.
    "chatml": (
        "{% for message in messages %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    # meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json "chat_template".
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}"
        "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}"
        "{% endif %}{% endfor %}"),
    # meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json "chat_template".
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}"),
}
TOKENS = {"chatml": ("", ""), "llama2": ("<s>", "</s>"), "llama3": ("<|begin_of_text|>", "")}

PIECES = ["Hello", "world", "What is 2+2?", "It is 4.", "Привет", "你好", "naïve café", "\U0001F600",
          "code:\n```\nx = 1\n```", "<b>tag</b>", "multi\nline\ntext", "tabs\tinside", "{{ x }}",
          "50%", "", "end."]
SPACES = ["", " ", "  ", "\n", "\t", " \n ", "\u3000", "\u00a0"]


def content(rng):
    body = " ".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
    return rng.choice(SPACES) + body + rng.choice(SPACES)


def conversation(rng, fmt):
    n = rng.randint(0, 6)
    msgs = []
    if rng.random() < 0.5:
        msgs.append(("system", content(rng)))
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        if rng.random() < 0.05:  # break alternation now and then (llama2 must raise)
            role = "assistant" if role == "user" else "user"
        if fmt != "llama2" and rng.random() < 0.05:
            role = "tool"
        msgs.append((role, content(rng)))
    return msgs


def main():
    out, seed = sys.argv[1], int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed + 29)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    lines = 0
    with open(os.path.join(out, "chat.ref"), "w") as f:
        for fmt, src in TEMPLATES.items():
            tpl = env.from_string(src)
            bos, eos = TOKENS[fmt]
            for _ in range(400):
                msgs = conversation(rng, fmt)
                if fmt == "llama2" and not msgs:
                    continue  # the template indexes messages[0]
                gen = rng.random() < 0.5
                fields = [fmt, str(int(gen)), str(len(msgs))]
                for role, text in msgs:
                    fields += [role.encode().hex() or "-", text.encode().hex() or "-"]
                try:
                    text = tpl.render(messages=[{"role": r, "content": c} for r, c in msgs],
                                      add_generation_prompt=gen, bos_token=bos, eos_token=eos)
                    f.write("R " + " ".join(fields) + " " + (text.encode().hex() or "-") + "\n")
                except TemplateError:
                    f.write("X " + " ".join(fields) + "\n")
                lines += 1
    print("seed", seed + 29, "conversations", lines)


if __name__ == "__main__":
    main()
