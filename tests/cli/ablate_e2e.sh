#!/usr/bin/env bash
# End-to-end checks of scripts/ablate with the real binary (tests/cli/ablate.cmake):
#   ablate_e2e.sh CASE DAEDALUS REPO WORKDIR
# Every sweep trains configs/tiny.yaml shrunk to seconds on synthetic data for 3 steps.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
sizes=(--set data.format=synthetic --set data.synthetic.tokens=65536 --set model.num_hidden_layers=2
       --set model.hidden_size=64 --set model.q_lora_rank=32 --set model.kv_lora_rank=16
       --set model.intermediate_size=128 --set model.moe_intermediate_size=32 --set train.seq_len=32
       --set train.micro_batch_size=4 --set train.log_every=1 --set schedule.warmup_steps=2)
small=(--steps 3 "${sizes[@]}" --set train.eval_every=3 --set train.eval_batches=2 --set precision.stats_every=1
       --daedalus "$bin")
ablate() { "$repo/scripts/ablate" "$repo/configs/tiny.yaml" "${small[@]}" "$@"; }

case $case_name in
  same_start)  # every recipe starts from the same weights and batch; step-1 losses differ by rounding only
    ablate --recipes fp32,bf16,fp8_block --out "$work/sweep"
    for f in report.md loss.png loss_gap.png fp8_stats.png; do test -s "$work/sweep/$f"; done
    grep -q '^scripts/ablate .*--recipes fp32,bf16,fp8_block' "$work/sweep/report.md"
    grep -q 'identical in every run' "$work/sweep/report.md"
    python3 - "$work/sweep/runs" <<'PY'
import json, sys
runs = sys.argv[1]
first = {}
for r in ("fp32", "bf16", "fp8_block"):
    lines = [json.loads(l) for l in open(f"{runs}/{r}/metrics.jsonl")]
    first[r] = next(l for l in lines if l.get("step") == 1 and "loss" in l)
digests = {(f["init_digest"], f["batch_digest"]) for f in first.values()}
assert len(digests) == 1, f"runs started differently: {digests}"
a, b = first["fp32"]["lm_loss"], first["bf16"]["lm_loss"]
# Same weights, same batch: the step-1 losses differ only by BF16 operand rounding (8 bits of
# mantissa, relative 2^-9 per operand, averaged over the batch: well under 1%), and they do differ
# (the recipe really changed).
assert a != b and abs(a - b) / a < 1e-2, (a, b)
stats = [json.loads(l) for l in open(f"{runs}/fp8_block/fp8_stats.jsonl")]
assert {s["step"] for s in stats} == {1, 2, 3}, "stats_every=1: a block of lines per step"
assert {s["operand"] for s in stats} == {"x", "w", "dy"}
mods = {s["module"] for s in stats}
assert any(".mlp.experts.0.gate_proj" in m for m in mods) and any("self_attn.o_proj" in m for m in mods), mods
assert not any("lm_head" in m or "mlp.gate" == m[-8:] for m in mods), "high-precision modules report no FP8 stats"
for s in stats:
    assert 0 <= s["underflow_pct"] <= 100 and 0 <= s["saturation_pct"] <= 100 and s["amax"] > 0, s
import os
assert not os.path.exists(f"{runs}/bf16/fp8_stats.jsonl") or not open(f"{runs}/bf16/fp8_stats.jsonl").read()
print("same start: digests", digests.pop(), "step-1 loss fp32", a, "bf16", b)
PY
    ;;
  refuses_existing)  # an output directory with results is kept unless --force
    mkdir -p "$work/sweep" && echo old > "$work/sweep/report.md"
    if ablate --recipes fp32 --out "$work/sweep" > "$work/out.txt" 2>&1; then exit 1; else test $? = 1; fi
    grep -q "already holds results.*--force" "$work/out.txt"
    grep -q old "$work/sweep/report.md"
    ;;
  failed_run)  # one broken run is marked FAILED, the others complete, exit 2; --force replaces old results
    mkdir -p "$work/sweep" && echo old > "$work/sweep/report.md"
    set +e
    ablate --recipes fp32,broken=bf16,bf16 --set broken:optimizer.lr=-1 --out "$work/sweep" --force
    status=$?
    set -e
    test "$status" = 2
    grep -E '^\| broken \(bf16\) \| FAILED' "$work/sweep/report.md"
    grep -q 'broken FAILED.*exit code 1.*optimizer.lr' "$work/sweep/report.md"
    grep -E '^\| fp32 \| ok \| 3 \| [0-9.]+ \| [-+0-9.]+%' "$work/sweep/report.md"
    grep -E '^\| bf16 \| ok \| 3 ' "$work/sweep/report.md"
    ;;
  seeds)  # --seeds: one run per recipe and seed; same start within a seed, another start across seeds
    ablate --recipes bf16,fp8_block --seeds 3,4 --out "$work/sweep"
    for l in bf16 fp8_block; do for x in 3 4; do test -s "$work/sweep/runs/$l/seed$x/metrics.jsonl"; done; done
    grep -q '^scripts/ablate .*--seeds 3,4' "$work/sweep/report.md"
    grep -q 'identical in every run of a seed' "$work/sweep/report.md"
    grep -E '^\| fp8_block \| ok \| 3 \| [0-9.]+ \| [-+0-9.]+% ± [0-9.]+ \|' "$work/sweep/report.md"
    grep -E '^\| fp8_block \| [-+0-9.]+% / [-+0-9.]+% \| [-+0-9.]+% / [-+0-9.]+% \|$' "$work/sweep/report.md"
    grep -q 'With the mean ± 2 standard errors inside ±0.25%' "$work/sweep/report.md"
    # One seed has no standard error: its report gives the plain reading only.
    ablate --report-only --recipes bf16,fp8_block --seeds 3 --out "$work/sweep"
    grep -q "^Within DeepSeek-V3's 0.25% relative loss error vs bf16 — fp8_block: " "$work/sweep/report.md"
    if grep -q 'standard errors inside' "$work/sweep/report.md"; then exit 1; fi
    python3 - "$work/sweep/runs" <<'PY'
import json, sys
runs = sys.argv[1]
def first(label, seed):
    return next(json.loads(l) for l in open(f"{runs}/{label}/seed{seed}/metrics.jsonl") if '"loss"' in l)
d = {(s, l): (first(l, s)["init_digest"], first(l, s)["batch_digest"]) for s in (3, 4) for l in ("bf16", "fp8_block")}
assert d[3, "bf16"] == d[3, "fp8_block"] and d[4, "bf16"] == d[4, "fp8_block"], d
assert d[3, "bf16"][0] != d[4, "bf16"][0] and d[3, "bf16"][1] != d[4, "bf16"][1], "seeds must change weights and data order"
print("seeds: digests", d)
PY
    if ablate --recipes bf16 --seeds 1,x --out "$work/bad" > "$work/bad.txt" 2>&1; then exit 1; else test $? = 1; fi
    grep -q -- "--seeds: expected comma-separated integers" "$work/bad.txt"
    ;;
  stats_resume)  # a resumed run drops fp8_stats.jsonl lines past its checkpoint: each step's block appears once
    train() { "$bin" train --config "$repo/configs/tiny.yaml" "${sizes[@]}" --set train.eval_every=0 \
                --set precision.stats_every=1 --set checkpoint.every=2 --set checkpoint.keep_last=0 \
                --set logging.progress=never --set run.dir="$work/run" --set train.steps=4 "$@"; }
    train >/dev/null
    cp "$work/run/fp8_stats.jsonl" "$work/first.jsonl"
    [ "$(grep -c '"step":3,' "$work/first.jsonl")" -gt 0 ]
    rm "$work/run/checkpoints/step_00000004.h5"
    train --set checkpoint.resume=auto > "$work/resume.txt"  # resumes at step 2, redoes steps 3 and 4
    grep -q "resumed from .*step_00000002" "$work/resume.txt"
    cmp "$work/first.jsonl" "$work/run/fp8_stats.jsonl"
    ;;
  checked_in_report)  # every checked-in report with runs/ is what its runs give (--report-only, no training)
    for report in "$repo"/reports/*/; do
      [ -d "$report/runs" ] || continue
      name=$(basename "$report")
      mkdir -p "$work/$name" && cp -r "$report/runs" "$work/$name/"
      command=$(grep -m1 '^scripts/ablate ' "$report/report.md")
      command=${command% --force}
      command=${command/--out reports\/$name/--out $work/$name}
      (cd "$repo" && eval "$command --report-only" > /dev/null)
      diff <(sed "s|$work/$name|reports/$name|" "$work/$name/report.md") "$report/report.md"
      echo "$name: report.md rebuilt from its runs, identical"
    done
    ;;
  *) echo "unknown case $case_name" >&2; exit 2 ;;
esac
