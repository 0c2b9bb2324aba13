#!/usr/bin/env python3
"""Checks on metrics.jsonl for the multi-rank end-to-end tests (tests/cli/multirank.cmake).

  multirank_check.py step A B STEP RTOL   loss and grad_norm of step STEP agree to RTOL (relative)
  multirank_check.py falls A RATIO        the last train loss is below RATIO x the first
  multirank_check.py wire A B RATIO RTOL  run B's forward dispatch bytes are RATIO x run A's at step 1
                                          (same weights, same routing: exact to 1e-9) and over the
                                          run (within 10%), and the last losses agree to RTOL

`step` compares two runs of one config at different world sizes with the same global batch: the
same samples, the same initial weights, so the first step differs only in the order of fp32
sums (per-rank means averaged over ranks; expert rows summed in one GEMM vs per rank then
all-reduced). grad_norm is compared too: it sees every gradient after the gradient sync, so a
wrongly scaled or missing all-reduce changes it even where Adam's update would hide it.
Exit 0 when the check holds, 1 otherwise (with the reason).
"""
import json
import sys


def train_lines(path):
    with open(path) as f:
        out = [r for r in map(json.loads, f) if "loss" in r]
    if not out:
        sys.exit(f"{path}: no train lines")
    return out


def step(path, n):
    for r in train_lines(path):
        if r["step"] == n:
            return r
    sys.exit(f"{path}: no line for step {n}")


def main(argv):
    if len(argv) >= 2 and argv[1] == "step" and len(argv) == 6:
        n, rtol = int(argv[4]), float(argv[5])
        a, b = step(argv[2], n), step(argv[3], n)
        for key in ("loss", "grad_norm"):
            rel = abs(a[key] - b[key]) / abs(b[key])
            print(f"step {n} {key}: {a[key]!r} vs {b[key]!r}, relative difference {rel:.2e} (rtol {rtol:g})")
            if not rel <= rtol:
                sys.exit(f"step {n}: {key} differs by {rel:.2e} > {rtol:g}")
    elif len(argv) >= 2 and argv[1] == "falls" and len(argv) == 4:
        lines, ratio = train_lines(argv[2]), float(argv[3])
        first, last = lines[0]["loss"], lines[-1]["loss"]
        print(f"loss {first:.4f} -> {last:.4f} over {len(lines)} steps")
        if not last < ratio * first:
            sys.exit(f"loss {first} -> {last}: not below {ratio} x the first")
    elif len(argv) >= 2 and argv[1] == "wire" and len(argv) == 6:
        a, b, ratio, rtol = train_lines(argv[2]), train_lines(argv[3]), float(argv[4]), float(argv[5])
        first = b[0]["dispatch_bytes"] / a[0]["dispatch_bytes"]
        total = sum(r["dispatch_bytes"] for r in b) / sum(r["dispatch_bytes"] for r in a)
        loss = abs(b[-1]["loss"] - a[-1]["loss"]) / abs(a[-1]["loss"])
        print(f"dispatch bytes B/A: step 1 {first:.4f}, whole run {total:.4f} (expected {ratio:g}); "
              f"last loss {a[-1]['loss']:.5f} vs {b[-1]['loss']:.5f}, relative {loss:.2e} (rtol {rtol:g})")
        if abs(first - ratio) > 1e-9 or abs(total - ratio) > 0.1 * ratio:
            sys.exit("dispatch bytes: not the expected ratio")
        if not loss <= rtol:
            sys.exit(f"last loss differs by {loss:.2e} > {rtol:g}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
