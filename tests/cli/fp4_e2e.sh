#!/usr/bin/env bash
# End-to-end FP4 recipe checks with the real binary (tests/cli/fp4.cmake):
#   fp4_e2e.sh CASE DAEDALUS REPO WORKDIR
# Every run trains configs/tiny.yaml shrunk to a fraction of a second per step on synthetic data
# (expert inputs 32 wide: one MXFP4 block). A case prints "PASS: <case>" last.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/small_run.sh"  # small=(...) and run DIR [args...]
small+=(--set model.moe_intermediate_size=32 --set train.grad_accum_steps=2 --set train.eval_every=0)
ckpt() { printf '%s/checkpoints/step_%08d.h5' "$1" "$2"; }
expect() {  # expect FILE REGEX: the file has a line matching REGEX
  grep -E -q -- "$2" "$1" || { echo "expected /$2/ in $1:" >&2; cat "$1" >&2; exit 1; }
}
losses() {  # losses METRICS: "step loss grad_norm" of every train line, full precision
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    if "loss" in m: print(m["step"], repr(m["loss"]), repr(m["grad_norm"]))' "$1"
}

case "$case_name" in
  resume_bitexact)  # nvfp4 with RHT and stochastic rounding: stop after 2 of 4 steps, resume = straight run
    run "$work/straight" --set precision.recipe=nvfp4 --set train.steps=4 --set checkpoint.every=0 >/dev/null
    run "$work/split" --set precision.recipe=nvfp4 --set train.steps=4 --set train.stop_after=2 \
      --set checkpoint.every=0 >/dev/null
    run "$work/split" --set precision.recipe=nvfp4 --set train.steps=4 --set checkpoint.every=0 >"$work/resume.txt"
    expect "$work/resume.txt" "resumed from .*step 2"
    losses "$work/straight/metrics.jsonl" >"$work/straight.txt"
    losses "$work/split/metrics.jsonl" >"$work/split.txt"
    diff "$work/straight.txt" "$work/split.txt"
    test "$(wc -l <"$work/straight.txt")" -eq 4
    # And the stochastic rounding is live: without it the losses differ from step 2 on.
    run "$work/nosr" --set precision.recipe=nvfp4 --set precision.fp4.stochastic_rounding=false \
      --set train.steps=4 --set checkpoint.every=0 >/dev/null
    losses "$work/nosr/metrics.jsonl" >"$work/nosr.txt"
    ! diff -q "$work/straight.txt" "$work/nosr.txt" >/dev/null
    ;;
  stats)  # FP4 statistics: format, granularity, scale distribution in fp8_stats.jsonl
    run "$work/a" --set precision.recipe=nvfp4 --set train.steps=2 --set precision.stats_every=1 >/dev/null
    expect "$work/a/fp8_stats.jsonl" '"module":"model.layers.1.self_attn.o_proj","operand":"w".*"format":"e2m1","granularity":"nv_16x16"'
    expect "$work/a/fp8_stats.jsonl" '"operand":"dy".*"granularity":"nv_1x16".*"zero_scale_pct"'
    run "$work/b" --set precision.recipe=mxfp4 --set train.steps=1 --set precision.stats_every=1 >/dev/null
    expect "$work/b/fp8_stats.jsonl" '"granularity":"mx_1x32","scale_log2_p50"'
    ;;
  export_mxfp4)  # fp4_experts trains; its experts export as packed MXFP4 with Quark's quantization_config
    run "$work/a" --set precision.recipe=fp4_experts --set train.steps=2 >/dev/null
    "$bin" export-hf --checkpoint "$(ckpt "$work/a" 2)" --out "$work/hf" --experts mxfp4 >"$work/export.txt"
    expect "$work/export.txt" "exported .* \(step 2\).*routed experts MXFP4"
    expect "$work/hf/config.json" '"quant_method": "quark"'
    expect "$work/hf/config.json" '"scale_format": "e8m0"'
    python3 -c 'import json,struct,sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n))
want = {"model.layers.1.mlp.experts.3.gate_proj.weight": ("U8", [32, 16]),  # [N, K/2], K = hidden 32
        "model.layers.1.mlp.experts.3.gate_proj.weight_scale": ("U8", [32, 1]),  # [N, K/32]
        "model.layers.1.mlp.experts.3.down_proj.weight": ("U8", [32, 16]),  # K = moe_intermediate 32
        "model.layers.1.mlp.experts.3.down_proj.weight_scale": ("U8", [32, 1]),
        "model.layers.1.mlp.shared_experts.gate_proj.weight": ("BF16", [32, 32])}
for k, (dt, shape) in want.items():
    assert h[k]["dtype"] == dt and h[k]["shape"] == shape, (k, h.get(k))' "$work/hf/model.safetensors"
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
echo "PASS: $case_name"
