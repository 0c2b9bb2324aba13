#!/usr/bin/env bash
# SIGKILL one rank of a running 2-rank training job; the job must end non-zero within
# parallel.timeout_s + a few seconds, never hang (issue: expert parallelism, failure behaviour).
#   kill_rank.sh MPIRUN DAEDALUS CONFIG DIR TIMEOUT_S
set -u
mpirun=$1 daedalus=$2 config=$3 dir=$4 timeout_s=$5
rm -rf "$dir" && mkdir -p "$dir"
# Enough steps that the job is still running when the kill lands.
$mpirun --oversubscribe --bind-to none -np 2 "$daedalus" train --config "$config" --set run.dir="$dir/run" \
  --set parallel.expert_parallel=2 --set train.steps=100000 --set train.log_every=1 --set checkpoint.every=0 \
  --set parallel.timeout_s="$timeout_s" >"$dir/log" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do  # up to 60 s for step 3 to be logged
  [ -f "$dir/run/metrics.jsonl" ] && grep -q '"step":3,' "$dir/run/metrics.jsonl" && break
  sleep 0.1
done
if ! grep -q '"step":3,' "$dir/run/metrics.jsonl" 2>/dev/null; then
  echo "kill_rank: the job did not reach step 3"; cat "$dir/log"; kill -9 $launcher 2>/dev/null; exit 1
fi
victim=$(pgrep -f -- "run.dir=$dir/run" | while read -r p; do
  [ "$(cat /proc/$p/comm 2>/dev/null)" = daedalus ] && echo "$p"; done | tail -1)
[ -n "$victim" ] || { echo "kill_rank: no daedalus rank found"; kill -9 $launcher; exit 1; }
start=$(date +%s.%N)
kill -9 "$victim"
limit=$(python3 -c "print(int($timeout_s + 15))")
for _ in $(seq 1 $((limit * 10))); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
if kill -0 $launcher 2>/dev/null; then
  echo "kill_rank: mpirun still running ${limit} s after SIGKILL of rank pid $victim"; kill -9 $launcher; exit 1
fi
wait $launcher; code=$?
elapsed=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "kill_rank: SIGKILL of pid $victim; mpirun exited with $code after $elapsed s (timeout_s $timeout_s)"
tail -n 5 "$dir/log"
[ "$code" -ne 0 ] || { echo "kill_rank: mpirun exited 0 after a rank was killed"; exit 1; }
