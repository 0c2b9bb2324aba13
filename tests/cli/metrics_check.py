#!/usr/bin/env python3
"""Checks on metrics.jsonl files for the end-to-end tests (tests/cli/train.cmake).

  metrics_check.py same A B              train lines identical except wall-clock keys
  metrics_check.py close A B RTOL        train losses agree to RTOL (relative) step by step
  metrics_check.py falls A RATIO         last train loss < RATIO * first train loss
  metrics_check.py skipped A STEP        step STEP was skipped, the others were not
  metrics_check.py floor A NATS GAP      the last val_loss is within GAP nats of the floor NATS
Exit 0 when the check holds, 1 otherwise (with the reason).
"""
import json
import sys

TIMING = {"tokens_per_s", "step_ms", "gpu_ms", "grad_sync_ms", "model_flops_per_s", "mfu", "mem_bytes"}


def lines(path, kind):
    out = []
    with open(path) as f:
        for raw in f:
            rec = json.loads(raw)
            if (kind == "train") == ("loss" in rec):
                out.append(rec)
    if not out:
        sys.exit(f"{path}: no {kind} lines")
    return out


def main(argv):
    cmd = argv[1]
    if cmd == "same":
        a, b = lines(argv[2], "train"), lines(argv[3], "train")
        strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}
        if len(a) != len(b):
            sys.exit(f"{len(a)} vs {len(b)} train lines")
        for x, y in zip(a, b):
            if strip(x) != strip(y):
                sys.exit(f"step {x['step']} differs:\n{strip(x)}\n{strip(y)}")
        print(f"{len(a)} train lines identical (timing keys aside)")
    elif cmd == "close":
        a, b, rtol = lines(argv[2], "train"), lines(argv[3], "train"), float(argv[4])
        worst = 0.0
        for x, y in zip(a, b):
            rel = abs(x["loss"] - y["loss"]) / abs(y["loss"])
            worst = max(worst, rel)
            if rel > rtol:
                sys.exit(f"step {x['step']}: loss {x['loss']} vs {y['loss']} (rel {rel:.2e} > {rtol})")
        print(f"{len(a)} steps, worst relative loss difference {worst:.2e} <= {rtol}")
    elif cmd == "falls":
        a, ratio = lines(argv[2], "train"), float(argv[3])
        first, last = a[0]["loss"], a[-1]["loss"]
        if not last < ratio * first:
            sys.exit(f"loss {first} -> {last}: not below {ratio} x the first")
        print(f"loss {first:.4f} -> {last:.4f}")
    elif cmd == "skipped":
        a, step = lines(argv[2], "train"), int(argv[3])
        for r in a:
            if r["skipped"] != (r["step"] == step):
                sys.exit(f"step {r['step']}: skipped={r['skipped']}")
        print(f"only step {step} skipped")
    elif cmd == "floor":
        v, floor, gap = lines(argv[2], "eval"), float(argv[3]), float(argv[4])
        last = v[-1]["val_loss"]
        if not last - floor < gap:
            sys.exit(f"val_loss {last:.4f} is {last - floor:.4f} nats above the floor {floor:.4f} (> {gap})")
        print(f"val_loss {last:.4f}, entropy floor {floor:.4f}: gap {last - floor:.4f} nats")
    else:
        sys.exit(f"unknown check {cmd}")


if __name__ == "__main__":
    main(sys.argv)
