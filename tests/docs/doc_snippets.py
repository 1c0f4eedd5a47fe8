#!/usr/bin/env python3
"""Turns the code blocks of README.md and docs/*.md into tests (tests/docs/README.md explains).

Two modes:

  doc_snippets.py generate OUT_DIR SOURCE_DIR DOC...
      Writes one C++ translation unit per document (its compiled ```cpp blocks), one per complete
      program (a block with `int main(`), one per compile-error block, and OUT_DIR/snippets.cmake,
      which tests/docs/CMakeLists.txt includes to add the targets and tests. Run at configure
      time; CMake re-runs it when a document changes.

  doc_snippets.py recipes DOC SCRATCH_DIR SOURCE_DIR
      Runs the shell recipes of DOC (```sh blocks) in order with `bash -euo pipefail` in a fresh
      SCRATCH_DIR where `typeformer/` is a copy of the source tree and HOME is SCRATCH_DIR/home.
      Blocks marked `file PATH` are written to SCRATCH_DIR/PATH before the next recipe runs.

Directives: an HTML comment on the line(s) right before a block's opening fence,
  <!-- snippet: KEYWORD[; KEYWORD ...] -->
with keywords
  run              call the block from the generated main (compiled and run)
  toplevel         place the block at namespace scope (declarations) instead of in a function
  continue         append the block to the previous block's function (shares its variables)
  fragment: WHY    not compiled (an API synopsis, pseudo-code); the reason is required
  compile-error: REGEX   the block must fail to compile, and the first line containing "error:"
                   must match REGEX (Python syntax)
  (fragment and compile-error take the rest of the directive as their value: put them last)
  file: PATH       (recipes) write the block to PATH
  cwd: DIR         (recipes) run the sh block in DIR, relative to the scratch directory
Hidden code, which a reader does not see:
  <!-- snippet-setup          namespace-scope code for every block of this document
  ...
  -->
  <!-- snippet-prelude        statements put before the next block's code, in its function
  ...
  -->
"""

import os
import re
import shutil
import subprocess
import sys

FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*snippet:\s*(.*?)\s*-->\s*$")
HIDDEN_OPEN = re.compile(r"^<!--\s*snippet-(setup|prelude)\s*$")
KEYWORDS = {"run", "toplevel", "continue", "fragment", "compile-error", "file", "cwd"}


class Block:
    def __init__(self, doc, line, lang, code, opts, prelude):
        self.doc, self.line, self.lang, self.code = doc, line, lang, code
        self.opts, self.prelude = opts, prelude

    def where(self):
        return f"{self.doc}:{self.line}"


def parse_directive(text, where):
    opts = {}
    rest = text
    while rest.strip():
        part, _, rest = rest.partition(";")
        key, _, value = part.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("fragment", "compile-error"):  # free text: takes the rest, ';' included
            value = (value + (";" + rest if rest else "")).strip()
            rest = ""
        if key not in KEYWORDS:
            sys.exit(f"{where}: unknown snippet keyword '{key}' (known: {', '.join(sorted(KEYWORDS))})")
        if key in ("fragment", "compile-error", "file", "cwd") and not value:
            sys.exit(f"{where}: 'snippet: {key}' needs a value after ':'")
        opts[key] = value if value else True
    return opts


def parse(path, display):
    """The document's code blocks (with their directives) and its hidden setup code."""
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, setup = [], []
    pending_opts, pending_prelude = {}, []
    i = 0
    while i < len(lines):
        line = lines[i]
        hidden = HIDDEN_OPEN.match(line)
        if hidden:
            j = i + 1
            while j < len(lines) and lines[j].strip() != "-->":
                j += 1
            if j == len(lines):
                sys.exit(f"{display}:{i + 1}: snippet-{hidden.group(1)} is not closed by a line '-->'")
            code = [f'#line {i + 2} "{display}"'] + lines[i + 1:j]
            (setup if hidden.group(1) == "setup" else pending_prelude).extend(code)
            i = j + 1
            continue
        d = DIRECTIVE.match(line)
        if d:
            pending_opts.update(parse_directive(d.group(1), f"{display}:{i + 1}"))
            i += 1
            continue
        f = FENCE.match(line)
        if f and f.group(1):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                sys.exit(f"{display}:{i + 1}: code block is not closed")
            blocks.append(Block(display, i + 1, f.group(1), lines[i + 1:j], pending_opts,
                                pending_prelude))
            pending_opts, pending_prelude = {}, []
            i = j + 1
            continue
        if line.strip() and (pending_opts or pending_prelude):
            sys.exit(f"{display}:{i + 1}: a snippet directive must stand right before a code block")
        i += 1
    return blocks, setup


def is_program(block):
    return any(re.match(r"\s*int\s+main\s*\(", l) for l in block.code)


def split_hoisted(block):
    """Leading #include / using-namespace lines go to file scope; the rest is the body."""
    hoisted, body, in_head = [], [], True
    for n, l in enumerate(block.code):
        s = l.strip()
        if in_head and (s.startswith("#include") or re.match(r"using\s+namespace\s+[\w:]+\s*;", s)
                        or not s or s.startswith("//")):
            if s.startswith("#include") or s.startswith("using"):
                hoisted.append(l)
            continue
        if in_head:
            in_head = False
            body.append(f'#line {block.line + 1 + n} "{block.doc}"')
        body.append(l)
        if s.startswith("#include"):
            sys.exit(f"{block.where()}: #include after code; put the includes first in the block")
    return hoisted, body


def ident(doc):
    return re.sub(r"\W", "_", os.path.splitext(doc)[0]).strip("_").lower()


def cmake_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace(";", "\\;") + '"'


def generate(out_dir, source_dir, docs):
    os.makedirs(out_dir, exist_ok=True)
    cmake = ["# Generated by tests/docs/doc_snippets.py; do not edit."]
    counts = {"compiled": 0, "run": 0, "programs": 0, "compile_error": 0, "fragments": 0}
    written = set()

    def write(name, text):
        written.add(name)
        path = os.path.join(out_dir, name)
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return path

    for doc in docs:
        display = os.path.relpath(doc, source_dir)
        blocks, setup = parse(doc, display)
        base = ident(display)
        includes, units, runs = [], [], []
        for b in blocks:
            if b.lang != "cpp":
                continue
            if "fragment" in b.opts:
                counts["fragments"] += 1
                continue
            if "compile-error" in b.opts:
                hoisted, body = split_hoisted(b)
                tu = "\n".join(["// Generated from " + b.where() + " (a compile-error snippet)."]
                               + hoisted + setup + (body if "toplevel" in b.opts
                                                    else ["void doc_snippet() {"] + body + ["}"])) + "\n"
                name = f"{base}_L{b.line}_ko"
                write(name + ".cpp", tu)
                cmake.append(f"tfm_doc_compile_error({name} {cmake_str(b.where())} "
                             f"{cmake_str(b.opts['compile-error'])})")
                counts["compile_error"] += 1
                continue
            if is_program(b):
                name = f"{base}_L{b.line}"
                src = [f'#line {b.line + 1} "{b.doc}"'] + b.code
                write(name + ".cpp", "\n".join([f"// Generated from {b.where()}."] + src) + "\n")
                cmake.append(f"tfm_doc_program({name} {cmake_str(b.where())})")
                counts["programs"] += 1
                continue
            hoisted, body = split_hoisted(b)
            includes += [h for h in hoisted if h not in includes]
            body = b.prelude + body
            if "continue" in b.opts:
                if not units or units[-1][0] == "toplevel":
                    sys.exit(f"{b.where()}: 'continue' needs a compiled function block before it")
                units[-1][2].extend(body)
                if "run" in b.opts and units[-1][1] not in runs:
                    runs.append(units[-1][1])
            elif "toplevel" in b.opts:
                units.append(("toplevel", f"L{b.line}", body))
            else:
                units.append(("function", f"L{b.line}", body))
                if "run" in b.opts:
                    runs.append(f"L{b.line}")
            counts["compiled"] += 1
            counts["run"] += 1 if "run" in b.opts else 0
        if not units:
            continue
        tu = [f"// Generated from {display} by tests/docs/doc_snippets.py; edit the document.",
              "#include <cstdio>", "namespace tfm {}"] + includes + setup
        for kind, label, body in units:
            if kind == "toplevel":
                tu += body
            else:
                tu += [f"namespace doc_{label} {{", "[[maybe_unused]] void body() {"] + body + \
                      ["}", f"}}  // namespace doc_{label}"]
        tu += ["int main() {"]
        for label in runs:
            tu += [f'  std::printf("running the snippet at {display}:{label[1:]}\\n");',
                   f"  doc_{label}::body();"]
        tu += [f'  std::printf("{display}: {len(units)} snippet(s) compiled, {len(runs)} run\\n");',
               "  return 0;", "}"]
        write(f"doc_{base}.cpp", "\n".join(tu) + "\n")
        cmake.append(f"tfm_doc_unit(doc_{base} {cmake_str(display)})")

    cmake.append(f"set(TFM_DOC_SNIPPET_COUNTS {cmake_str(str(counts))})")
    write("snippets.cmake", "\n".join(cmake) + "\n")
    for stale in set(os.listdir(out_dir)) - written:
        if stale.endswith(".cpp"):
            os.remove(os.path.join(out_dir, stale))


def copy_source(source_dir, dest):
    def ignore(d, names):
        skip = {".git", "__pycache__"}
        if os.path.abspath(d) == os.path.abspath(source_dir):
            skip |= {n for n in names if n.startswith("build")}
        return skip & set(names)
    shutil.copytree(source_dir, dest, ignore=ignore, symlinks=True)


def recipes(doc, scratch, source_dir):
    display = os.path.relpath(doc, source_dir)
    blocks, _ = parse(doc, display)
    if os.path.exists(scratch):
        shutil.rmtree(scratch)
    os.makedirs(os.path.join(scratch, "home"))
    copy_source(source_dir, os.path.join(scratch, "typeformer"))
    env = dict(os.environ, HOME=os.path.join(scratch, "home"))
    ran = 0
    for b in blocks:
        if "fragment" in b.opts:
            print(f"-- {b.where()}: fragment ({b.opts['fragment']})")
            continue
        if "file" in b.opts:
            path = os.path.join(scratch, b.opts["file"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(b.code) + "\n")
            print(f"-- {b.where()}: wrote {b.opts['file']}")
            continue
        if b.lang != "sh":
            continue
        cwd = os.path.join(scratch, b.opts.get("cwd", "."))
        script = "\n".join(b.code)
        print(f"-- {b.where()}: running in {os.path.relpath(cwd, scratch)}:\n{script}", flush=True)
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env)
        if r.returncode != 0:
            print(f"FAILED: the recipe at {b.where()} exited with {r.returncode}")
            return 1
        ran += 1
    if ran == 0:
        print(f"FAILED: {display} has no shell recipe to run")
        return 1
    print(f"{display}: {ran} recipe(s) ran")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 5 and sys.argv[1] == "recipes":
        sys.exit(recipes(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        sys.exit(__doc__)
