#!/usr/bin/env bash
# End-to-end checks of the trainer under misuse and stalls (tests/cli/reliability.cmake):
#   reliability_e2e.sh CASE DAEDALUS REPO WORKDIR [MPIEXEC]
# Runs are configs/tiny.yaml shrunk to a fraction of a second per step on synthetic data. A case
# prints "PASS: <case>" last; a failed check exits non-zero saying what it expected.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4 mpiexec=${5:-mpirun}
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/small_run.sh"
expect_exit() {  # expect_exit CODE MAX_SECONDS OUT COMMAND...: exit code CODE within MAX_SECONDS
  local want=$1 max=$2 out=$3 start code
  shift 3
  start=$(date +%s)
  set +e
  "$@" >"$out" 2>&1
  code=$?
  set -e
  local elapsed=$(($(date +%s) - start))
  [ "$code" = "$want" ] || { echo "exit code $code, expected $want:" >&2; cat "$out" >&2; exit 1; }
  [ "$elapsed" -le "$max" ] || { echo "took $elapsed s, expected at most $max" >&2; cat "$out" >&2; exit 1; }
}

case $case_name in
  run_dir_lock)  # a second trainer on a run dir in use exits 1 naming the holder; a killed holder blocks nothing
    # The binary itself in the background (not the run function: $! would be a subshell's pid).
    "$bin" train --config "$repo/configs/tiny.yaml" "${small[@]}" --set run.dir="$work/a" --set train.steps=100000 \
      --set checkpoint.every=0 >"$work/first.txt" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
      [ -s "$work/a/metrics.jsonl" ] && break
      sleep 0.1
    done
    expect_exit 1 60 "$work/second.txt" run "$work/a" --set train.steps=2
    expect "$work/second.txt" "run.dir: $work/a is in use by another trainer \(host [^,]+, pid $pid, since "
    kill -9 $pid
    wait $pid 2>/dev/null || true
    run "$work/a" --set train.steps=2 --set checkpoint.resume=none >"$work/third.txt"
    expect "$work/third.txt" "^step 2/2"
    ;;
  stop_in_mpi_init_2_ranks | stop_in_resume_2_ranks)  # a rank frozen during start-up: the job ends within timeout_s
    phase=mpi_init
    if [ "$case_name" = stop_in_resume_2_ranks ]; then
      phase=resume
      run2 "$work/a" --set train.steps=2 >/dev/null
    fi
    DAEDALUS_TEST_STOP_AT=$phase DAEDALUS_TEST_STOP_RANK=1 expect_exit 2 60 "$work/out.txt" \
      run2 "$work/a" --set train.steps=4 --set parallel.timeout_s=5
    expect "$work/out.txt" "rank 1 stops itself at $phase"
    if [ "$phase" = mpi_init ]; then
      expect "$work/out.txt" "no progress for 5 s during start-up: MPI_Init \(parallel.timeout_s\)"
    else
      expect "$work/out.txt" "no progress for 5 s during resume: loading .*step_00000002.h5 \(parallel.timeout_s\)"
    fi
    ;;
  metrics_write_error)  # metrics.jsonl on a full device: the run stops at once, naming the file
    mkdir -p "$work/a"
    ln -s /dev/full "$work/a/metrics.jsonl"
    expect_exit 2 60 "$work/out.txt" run "$work/a" --set train.steps=3
    expect "$work/out.txt" "metrics.jsonl: cannot write a line: No space left on device"
    ;;
  metrics_truncated_line)  # a line cut short by a crash is dropped on resume; complete lines stay
    run "$work/a" --set train.steps=2 >/dev/null
    printf '{"step": 3, "loss": 4.1' >>"$work/a/metrics.jsonl"
    run "$work/a" --set train.steps=3 >/dev/null
    if grep -q '"loss": 4.1$' "$work/a/metrics.jsonl"; then echo "the cut line survived" >&2; exit 1; fi
    [ "$(grep -c '^{.*}$' "$work/a/metrics.jsonl")" = "$(wc -l <"$work/a/metrics.jsonl")" ]
    expect "$work/a/metrics.jsonl" '"step": ?1[,}]'
    expect "$work/a/metrics.jsonl" '"step": ?3[,}]'
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
echo "PASS: $case_name"
