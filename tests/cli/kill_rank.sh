#!/usr/bin/env bash
# SIGKILL (or SIGSTOP) one rank of a running 2-rank training job; the job must end non-zero within
# parallel.timeout_s + a few seconds, never hang (issue: expert parallelism, failure behaviour), and
# the newest checkpoint saved before the kill, if any, must still verify (daedalus inspect).
#   kill_rank.sh MPIRUN DAEDALUS CONFIG DIR TIMEOUT_S [SIGNAL [--set k=v ...]]
# SIGNAL is KILL (default) or STOP: a stopped rank holds its peers in their next transfer until the
# watchdog ends the job. The --set arguments replace the default layout (parallel.expert_parallel=2).
set -u
mpirun=$1 daedalus=$2 config=$3 dir=$4 timeout_s=$5
signal=${6:-KILL}
shift $(($# < 6 ? $# : 6))
layout=("$@")
[ ${#layout[@]} -gt 0 ] || layout=(--set parallel.expert_parallel=2)
rm -rf "$dir" && mkdir -p "$dir"
# Enough steps that the job is still running when the kill lands.
$mpirun --oversubscribe --bind-to none -np 2 "$daedalus" train --config "$config" --set run.dir="$dir/run" \
  --set train.steps=100000 --set train.log_every=1 --set checkpoint.every=0 \
  --set parallel.timeout_s="$timeout_s" "${layout[@]}" >"$dir/log" 2>&1 &
launcher=$!
for _ in $(seq 1 1200); do  # up to 120 s for step 3 to be logged (a loaded CI machine)
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
kill -"$signal" "$victim"
limit=$(python3 -c "print(int($timeout_s + 15))")
for _ in $(seq 1 $((limit * 10))); do kill -0 $launcher 2>/dev/null || break; sleep 0.1; done
if kill -0 $launcher 2>/dev/null; then
  echo "kill_rank: mpirun still running ${limit} s after SIG$signal of rank pid $victim"
  kill -9 "$victim" $launcher 2>/dev/null; exit 1
fi
wait $launcher; code=$?
kill -9 "$victim" 2>/dev/null  # a stopped rank that mpirun left behind
elapsed=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
echo "kill_rank: SIG$signal of pid $victim; mpirun exited with $code after $elapsed s (timeout_s $timeout_s)"
tail -n 5 "$dir/log"
[ "$code" -ne 0 ] || { echo "kill_rank: mpirun exited 0 after a rank was killed"; exit 1; }
newest=$(ls "$dir"/run/checkpoints/step_*.h5 2>/dev/null | sort | tail -1)
if [ -n "$newest" ]; then
  "$daedalus" inspect "$newest" >"$dir/inspect" 2>&1 || { echo "kill_rank: $newest does not verify"; cat "$dir/inspect"; exit 1; }
  echo "kill_rank: the newest checkpoint $newest verifies: $(grep -E '^verdict|OK' "$dir/inspect" | tail -1)"
fi
