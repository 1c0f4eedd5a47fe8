#!/usr/bin/env bash
# CTest for the command-line tools: trains a tokenizer on a generated corpus with
# tfm-train-tokenizer (tokenizer.json and tiktoken outputs), encodes lines with tfm-tokenize,
# decodes the ids back and checks the round trip, the token count against the vocabulary and
# the error handling (bad flag -> exit 2, missing file -> exit 1, each with a message).
#   cli_test.sh BIN_DIR WORK_DIR
set -euo pipefail
bin=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail() { echo "cli_test: $*" >&2; exit 1; }

# Corpus: fortune-like English with digits, punctuation and some UTF-8.
for i in $(seq 1 400); do
  echo "The quick brown fox $i jumps over the lazy dog; naïve café, déjà vu #$((i * 7)) — ok?"
  echo "It's what we'll do: they're here, you've seen it ($((i % 13)) times)."
done >"$work/corpus.txt"

"$bin/tfm-train-tokenizer" --vocab-size 400 --special '<|endoftext|>' --out "$work/tok.json" \
  "$work/corpus.txt" >"$work/train.log" 2>&1 || { cat "$work/train.log"; fail "training failed"; }
"$bin/tfm-train-tokenizer" --vocab-size 400 --out "$work/tok.tiktoken" "$work/corpus.txt" \
  >"$work/train2.log" 2>&1 || { cat "$work/train2.log"; fail "tiktoken training failed"; }
[ -s "$work/tok.json" ] && [ -s "$work/tok.tiktoken" ] || fail "no tokenizer files written"

printf 'The lazy fox, naïve café 42\nthey'"'"'re here — ok?\n' >"$work/input.txt"
for f in tok.json tok.tiktoken; do
  "$bin/tfm-tokenize" --tokenizer "$work/$f" <"$work/input.txt" >"$work/ids_$f.txt" ||
    fail "tfm-tokenize failed on $f"
  [ "$(wc -l <"$work/ids_$f.txt")" -eq 2 ] || fail "$f: expected one line of ids per input line"
  # every id is an integer below the vocabulary size (400 + the special token)
  tr ' ' '\n' <"$work/ids_$f.txt" | grep -v '^$' | while read -r id; do
    [[ $id =~ ^[0-9]+$ ]] && [ "$id" -lt 401 ] || fail "$f: bad id '$id'"
  done
  "$bin/tfm-tokenize" --tokenizer "$work/$f" --decode <"$work/ids_$f.txt" >"$work/back_$f.txt" ||
    fail "decode failed on $f"
  cmp -s "$work/input.txt" "$work/back_$f.txt" || fail "$f: decode(encode(text)) != text"
  # merges were learned: fewer tokens than bytes
  n_ids=$(wc -w <"$work/ids_$f.txt") n_bytes=$(wc -c <"$work/input.txt")
  [ "$n_ids" -lt "$((n_bytes / 2))" ] || fail "$f: $n_ids tokens for $n_bytes bytes, no merges?"
done
"$bin/tfm-tokenize" --tokenizer "$work/tok.json" --format tokens <<<"The fox" >"$work/tokens.txt"
grep -q 'Ġfox\|fox' "$work/tokens.txt" || fail "--format tokens did not print tokens"

# bad usage: exit 2 with a message; unreadable file: exit 1 with a message
set +e
"$bin/tfm-tokenize" --no-such-flag 2>"$work/err1.txt" </dev/null; rc1=$?
"$bin/tfm-tokenize" --tokenizer "$work/missing.json" 2>"$work/err2.txt" </dev/null; rc2=$?
"$bin/tfm-train-tokenizer" --vocab-size 300 2>"$work/err3.txt"; rc3=$?
set -e
[ "$rc1" -eq 2 ] && grep -q "unknown argument" "$work/err1.txt" || fail "bad flag: rc $rc1"
[ "$rc2" -eq 1 ] && [ -s "$work/err2.txt" ] || fail "missing tokenizer file: rc $rc2"
[ "$rc3" -eq 2 ] && [ -s "$work/err3.txt" ] || fail "missing --out: rc $rc3"
echo "cli_test: ok ($(wc -w <"$work/ids_tok.json.txt") tokens for $(wc -c <"$work/input.txt") bytes)"
