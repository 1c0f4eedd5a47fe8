#!/usr/bin/env python3
"""Generates include/typeformer/tokenizer/detail/unicode_tables.hpp from the Unicode Character
Database. The generated header is committed; building typeformer never needs this script or
the database.

Usage:
    pip install unicodedata2==16.0.0        # the Unicode version tiktoken 0.14 and tokenizers
    python3 tools/gen_unicode_tables.py     # 0.23 use (Rust regex, Oniguruma 6.9.10)
or, from the Unicode Character Database files (Debian/Ubuntu `apt-get install unicode-data`
puts UnicodeData.txt in /usr/share/unicode; Debian 12 ships Unicode 15.0):
    python3 tools/gen_unicode_tables.py --source ucd [--ucd /usr/share/unicode]
Option --out PATH writes elsewhere (default: the committed header).

What it records, per code point, is the one class the pre-tokenizers need:
    Lu Ll Lt Lm Lo  (the letter general categories; \\p{L} is their union)
    M               (Mn Mc Me, used by the o200k pattern)
    N               (Nd Nl No; \\p{N})
    WS              (the White_Space property of PropList.txt: what \\s means in Rust's regex
                     crate (tiktoken, via fancy-regex) and in Oniguruma (Hugging Face tokenizers))
    other           (everything else, unassigned code points included)
No White_Space code point is a letter, mark or number, so one class per code point suffices.
The table is a list of break points: entry (start << 4) | class starts a run of that class.
"""
import argparse
import os
import re
import sys

CLASSES = ["other", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "N", "WS"]


def gc_to_class(gc):
    if gc in ("Lu", "Ll", "Lt", "Lm", "Lo"):
        return CLASSES.index(gc)
    if gc in ("Mn", "Mc", "Me"):
        return CLASSES.index("M")
    if gc in ("Nd", "Nl", "No"):
        return CLASSES.index("N")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", choices=["unicodedata2", "ucd"], default="unicodedata2")
    ap.add_argument("--ucd", default="/usr/share/unicode")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(
        here, "..", "include", "typeformer", "tokenizer", "detail", "unicode_tables.hpp"))
    args = ap.parse_args()

    cls = bytearray(0x110000)
    if args.source == "unicodedata2":
        import unicodedata2
        version = unicodedata2.unidata_version
        for cp in range(0x110000):
            cls[cp] = gc_to_class(unicodedata2.category(chr(cp)))
        source = "the unicodedata2 Python package"
    else:
        first = None
        with open(os.path.join(args.ucd, "UnicodeData.txt"), encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split(";")
                cp = int(fields[0], 16)
                name, gc = fields[1], fields[2]
                c = gc_to_class(gc)
                if name.endswith(", First>"):
                    first = cp
                    continue
                if name.endswith(", Last>"):
                    for x in range(first, cp + 1):
                        cls[x] = c
                    first = None
                    continue
                cls[cp] = c
        version = "unknown"
        with open(os.path.join(args.ucd, "ReadMe.txt"), encoding="utf-8", errors="replace") as f:
            m = re.search(r"Version (\d+\.\d+\.\d+)", f.read())
            if m:
                version = m.group(1)
        source = "UnicodeData.txt"
    # White_Space (PropList.txt). The property is stable since Unicode 6.3; the list is checked
    # against PropList.txt when the UCD is installed.
    white_space = [(0x9, 0xD), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
                   (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                   (0x3000, 0x3000)]
    proplist = os.path.join(args.ucd, "PropList.txt")
    if os.path.exists(proplist):
        found = []
        with open(proplist, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"^([0-9A-F]+)(?:\.\.([0-9A-F]+))?\s*;\s*White_Space\b", line)
                if m:
                    lo = int(m.group(1), 16)
                    found.append((lo, int(m.group(2), 16) if m.group(2) else lo))
        def points(ranges):
            return sorted(x for lo, hi in ranges for x in range(lo, hi + 1))
        assert points(found) == points(white_space), "White_Space differs from PropList.txt"
    ws = CLASSES.index("WS")
    for lo, hi in white_space:
        for x in range(lo, hi + 1):
            assert cls[x] == 0, "a White_Space code point has another class"
            cls[x] = ws

    breaks = []
    prev = None
    for cp in range(0x110000):
        if cls[cp] != prev:
            breaks.append((cp << 4) | cls[cp])
            prev = cls[cp]

    lines = []
    row = []
    for b in breaks:
        row.append("0x%x," % b)
        if len(row) == 8:
            lines.append("    " + " ".join(row))
            row = []
    if row:
        lines.append("    " + " ".join(row))
    body = "\n".join(lines)
    major, minor, patch = (version.split(".") + ["0", "0", "0"])[:3] if version != "unknown" else ("0", "0", "0")
    text = f"""// typeformer/tokenizer/detail/unicode_tables.hpp
//
// GENERATED by tools/gen_unicode_tables.py: Unicode {version}. General categories from
// {source}; White_Space from PropList.txt. Do not edit; regenerate with
//   pip install unicodedata2=={version} && python3 tools/gen_unicode_tables.py
//
// Each entry (start << 4) | class begins a run of code points of one class; a run lasts until
// the next entry. Classes: 0 other, 1 Lu, 2 Ll, 3 Lt, 4 Lm, 5 Lo, 6 M (Mn Mc Me),
// 7 N (Nd Nl No), 8 White_Space.
// clang-format off
#pragma once

#include "typeformer/config/config.hpp"

#include <cstdint>

TFM_BEGIN_NAMESPACE
namespace detail::unicode_data {{

inline constexpr int table_version_major = {int(major)};
inline constexpr int table_version_minor = {int(minor)};
inline constexpr int table_version_patch = {int(patch)};

inline constexpr std::uint32_t class_breaks[{len(breaks)}] = {{
{body}
}};

}}  // namespace detail::unicode_data
TFM_END_NAMESPACE
// clang-format on
"""
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out}: Unicode {version}, {len(breaks)} runs", file=sys.stderr)


if __name__ == "__main__":
    main()
