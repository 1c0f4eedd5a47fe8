#!/usr/bin/env python3
"""Driver of a compile-error documentation snippet (tests/docs/CMakeLists.txt).

check_compile_error.py CMAKE BINARY_DIR TARGET EXPECT_FILE WHERE
Builds TARGET; passes iff the build fails and the first output line containing "error:" matches
the Python regular expression in EXPECT_FILE (searched, not anchored).
"""
import re
import subprocess
import sys

cmake, binary_dir, target, expect_file, where = sys.argv[1:6]
expect = open(expect_file, encoding="utf-8").read().strip()
r = subprocess.run([cmake, "--build", binary_dir, "--target", target],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
out = re.sub(r"\x1b\[[0-9;]*[mK]", "", r.stdout)
if r.returncode == 0:
    sys.exit(f"{where}: the snippet compiled, but the document says it does not:\n{out}")
first = next((l for l in out.splitlines() if "error:" in l), None)
if first is None:
    sys.exit(f"{where}: the build failed without a compiler error line:\n{out}")
if not re.search(expect, first):
    sys.exit(f"{where}: the first error line\n  {first}\ndoes not match the document's\n  {expect}\n"
             f"full output:\n{out}")
print(f"{where}: fails to compile as documented; first error line:\n  {first}")
