#!/usr/bin/env bash
# End-to-end `daedalus train --set train.device=cuda` checks (tests/cli/gpu.cmake):
#   gpu_e2e.sh CASE DAEDALUS REPO WORKDIR
# Exits 77 (ctest: skipped) when the binary has no CUDA backend or sees no device. Every run trains
# configs/tiny.yaml shrunk to seconds on synthetic data, as train_e2e.sh does.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4
check="python3 $repo/tests/cli/metrics_check.py"

devices=$("$bin" info | sed -n 's/.*CUDA backend : built, \([0-9]*\) device(s) visible.*/\1/p')
if [ -z "$devices" ] || [ "$devices" = 0 ]; then
  echo "skipped: no CUDA backend or no visible CUDA device ($("$bin" info | grep 'CUDA backend' || true))"
  exit 77
fi

rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/small_model.sh"
run() {  # run DEVICE DIR [extra args...]
  local device=$1 dir=$2
  shift 2
  "$bin" train --config "$repo/configs/tiny.yaml" "${small[@]}" --set train.device="$device" --set run.dir="$dir" "$@"
}

case $case_name in
  trains)  # a CUDA run writes metrics with a device memory peak, a checkpoint, and its loss falls
    run cuda "$work/a" --set train.steps=20 --set precision.recipe=bf16 | tee "$work/out.txt"
    grep -q "device     cuda:" "$work/out.txt"
    [ "$(grep -c '"loss"' "$work/a/metrics.jsonl")" = 20 ]
    python3 - "$work/a/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert all(r["mem_bytes"] > 0 for r in rows), "mem_bytes must report the CUDA allocator's peak"
PY
    $check falls "$work/a/metrics.jsonl" 0.95  # a CPU run of this: 7.23 -> 6.38 (0.88)
    ls "$work/a/checkpoints/"step_*.h5 >/dev/null
    ;;
  matches_cpu)  # fp32: the first steps' losses on the GPU follow the CPU's (summation order only)
    run cpu "$work/cpu" --set train.steps=3 --set precision.recipe=fp32 >/dev/null
    run cuda "$work/gpu" --set train.steps=3 --set precision.recipe=fp32 >/dev/null
    # Three steps of AdamW (about lr * sign(g) per weight) keep the runs within ~1e-4 of each other.
    $check close "$work/gpu/metrics.jsonl" "$work/cpu/metrics.jsonl" 1e-3
    ;;
  deterministic)  # two GPU runs give bit-identical metrics (no float atomics; fixed GEMM algorithms)
    run cuda "$work/a" --set train.steps=5 --set precision.recipe=bf16 >/dev/null
    run cuda "$work/b" --set train.steps=5 --set precision.recipe=bf16 >/dev/null
    $check same "$work/a/metrics.jsonl" "$work/b/metrics.jsonl"
    ;;
  resume_on_cpu)  # a checkpoint written by a GPU run loads on the CPU (host copies, same names)
    run cuda "$work/a" --set train.steps=4 --set train.stop_after=2 --set precision.recipe=fp32 >/dev/null
    run cpu "$work/a" --set train.steps=4 --set precision.recipe=fp32 | tee "$work/out.txt"
    grep -q "resumed from" "$work/out.txt"
    [ "$(grep -c '"loss"' "$work/a/metrics.jsonl")" = 4 ]
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
