#!/usr/bin/env bash
# End-to-end cases of the text commands (tokenize, prepare-data with a tokenizer), run by
# tests/cli/text.cmake: text_e2e.sh CASE DAEDALUS SOURCE_DIR WORK_DIR; prints "PASS: CASE".
set -euo pipefail
case=$1 daedalus=$2 src=$3 work=$4
tok=$src/tests/tokenizer/deepseek/tokenizer.json
rm -rf "$work" && mkdir -p "$work" && cd "$work"
fail() { echo "FAIL: $case: $*"; exit 1; }

case $case in
  tokenize)
    # ids, then back to the same bytes (valid UTF-8, special tokens included).
    printf 'Hello, 世界! 12345 <｜User｜>hi\n  \tcode();' > text.txt
    "$daedalus" tokenize --tokenizer "$tok" < text.txt > ids.txt
    [ "$(wc -w < ids.txt)" -gt 5 ] || fail "too few ids: $(cat ids.txt)"
    "$daedalus" tokenize --tokenizer "$tok" --decode < ids.txt > back.txt
    cmp text.txt back.txt || fail "decode(encode(x)) != x"
    # --json: the same ids, and a JSON array decodes too.
    "$daedalus" tokenize --tokenizer "$tok" --json < text.txt > ids.json
    grep -q "\"ids\": \[$(sed 's/ /, /g' ids.txt)\]" ids.json || fail "--json ids differ: $(cat ids.json)"
    "$daedalus" tokenize --tokenizer "$tok" --decode < ids.json > back2.txt
    cmp text.txt back2.txt || fail "decode of {\"ids\": ...} differs"
    # Bad input: an id outside the vocabulary, a tokenizer that is not one: exit 1 naming it.
    set +e
    out=$(echo "1 2 999999" | "$daedalus" tokenize --tokenizer "$tok" --decode 2>&1); rc=$?
    [ $rc -eq 1 ] && [[ $out == *"token id 999999 is not in the vocabulary"* ]] || fail "bad id: rc $rc: $out"
    echo '{"model": {"type": "WordPiece", "vocab": {}}}' > bad.json
    out=$(echo hi | "$daedalus" tokenize --tokenizer bad.json 2>&1); rc=$?
    [ $rc -eq 1 ] && [[ $out == *"bad.json: "* ]] || fail "bad tokenizer: rc $rc: $out"
    set -e
    ;;
  *) fail "unknown case" ;;
esac
echo "PASS: $case"
