#!/usr/bin/env bash
# expect.sh CODE REGEX -- COMMAND...: runs COMMAND, passes when it exits with CODE and its combined
# output matches the extended regex REGEX. For end-to-end tests of the daedalus binary.
set -u
code=$1 regex=$2
shift 2
[ "$1" = "--" ] && shift
output=$("$@" 2>&1)
status=$?
printf '%s\n' "$output"
if [ "$status" -ne "$code" ]; then
  echo "expect.sh: exit code $status, expected $code" >&2
  exit 1
fi
if ! printf '%s\n' "$output" | grep -E -q -- "$regex"; then
  echo "expect.sh: output does not match /$regex/" >&2
  exit 1
fi
