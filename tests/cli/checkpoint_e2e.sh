#!/usr/bin/env bash
# End-to-end checkpoint checks with the real binary (tests/cli/checkpoint.cmake):
#   checkpoint_e2e.sh CASE DAEDALUS REPO WORKDIR [MPIEXEC]
# Every run trains configs/tiny.yaml shrunk to a fraction of a second per step on synthetic data.
# A case prints "PASS: <case>" last; any failed check exits non-zero with what it expected.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4 mpiexec=${5:-mpirun}
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/small_run.sh"
digests() {  # digests FILE: the /model and /optimizer lines of inspect (name, shape, value digest)
  "$bin" inspect "$1" | grep -E '^  /(model|optimizer)/'
}
flip_middle_byte() {  # most of a checkpoint's bytes are tensor values: the middle one is a chunk's
  local file=$1 offset byte
  offset=$(($(stat -c %s "$file") / 2))
  byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
  printf "$(printf '\\%03o' $((255 - byte)))" | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
}

case $case_name in
  save_inspect)  # checkpoints every 2 steps and at the end; inspect verifies them
    run "$work/a" --set train.steps=5 --set checkpoint.every=2 >"$work/out.txt"
    expect "$work/out.txt" "checkpoint: $(ckpt "$work/a" 4) \([0-9.]+ MB"
    test -f "$(ckpt "$work/a" 2)"
    test -f "$(ckpt "$work/a" 5)"
    [ -z "$(find "$work/a/checkpoints" -name '*.tmp')" ]
    "$bin" inspect "$(ckpt "$work/a" 5)" >"$work/inspect.txt"
    expect "$work/inspect.txt" "^step +5, 160 tokens seen, 10 samples consumed"
    expect "$work/inspect.txt" "recipe fp8_block"
    expect "$work/inspect.txt" "/model/model.layers.1.mlp.experts.gate_proj.weight +f32 \[4, 16, 32\] +[0-9a-f]{16}"
    expect "$work/inspect.txt" "^verdict +OK"
    ;;
  damaged)  # truncated, flipped byte, missing file, not HDF5: inspect says so and exits 1
    run "$work/a" --set train.steps=2 >/dev/null
    cp "$(ckpt "$work/a" 2)" "$work/flipped.h5" && flip_middle_byte "$work/flipped.h5"
    cp "$(ckpt "$work/a" 2)" "$work/truncated.h5" && truncate -s 300000 "$work/truncated.h5"
    for f in flipped truncated; do
      if "$bin" inspect "$work/$f.h5" >"$work/$f.txt" 2>&1; then echo "inspect $f exited 0" >&2; exit 1; fi
    done
    expect "$work/flipped.txt" "^verdict +CORRUPT: .*Fletcher32 checksum mismatch"
    expect "$work/truncated.txt" "^verdict +CORRUPT: .*truncated"
    set +e
    "$bin" inspect "$work/none.h5" >"$work/none.txt" 2>&1; [ $? = 1 ] || exit 1
    "$bin" inspect "$repo/configs/tiny.yaml" >"$work/text.txt" 2>&1; [ $? = 1 ] || exit 1
    set -e
    expect "$work/none.txt" "none.h5: no such file"
    expect "$work/text.txt" "tiny.yaml: not an HDF5 file"
    ;;
  resume_auto)  # the newest checkpoint is corrupt: resume skips it, says why, takes the previous one
    run "$work/a" --set train.steps=4 --set checkpoint.every=2 >/dev/null
    flip_middle_byte "$(ckpt "$work/a" 4)"
    run "$work/a" --set train.steps=6 >"$work/out.txt"
    expect "$work/out.txt" "resume: skipped $(ckpt "$work/a" 4): .*Fletcher32 checksum mismatch"
    expect "$work/out.txt" "resumed from $(ckpt "$work/a" 2): step 2"
    expect "$work/out.txt" "^step 3/6"
    test -f "$(ckpt "$work/a" 6)"
    ;;
  sigterm)  # SIGTERM mid-run: the step finishes, a checkpoint is saved, exit 0; a rerun resumes there
    # The binary itself in the background (not the run function: $! would be a subshell's pid).
    "$bin" train --config "$repo/configs/tiny.yaml" "${small[@]}" --set run.dir="$work/a" --set train.steps=100000 \
      --set checkpoint.every=0 >"$work/out.txt" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
      [ -s "$work/a/metrics.jsonl" ] && [ "$(wc -l <"$work/a/metrics.jsonl")" -ge 2 ] && break
      sleep 0.1
    done
    kill -TERM $pid
    wait $pid  # set -e: a non-zero exit fails the case
    expect "$work/out.txt" "received SIGTERM: saving a checkpoint and stopping"
    step=$(sed -n 's/^stopped at step \([0-9]*\) of.*/\1/p' "$work/out.txt")
    test -f "$(ckpt "$work/a" "$step")"
    run "$work/a" --set train.steps=100000 --set train.stop_after=1 >"$work/again.txt"
    expect "$work/again.txt" "resumed from $(ckpt "$work/a" "$step"): step $step"
    expect "$work/again.txt" "^step +$((step + 1))/100000"
    ;;
  export_eval)  # export-hf writes per-expert HF tensors; eval reports loss and bits per token
    run "$work/a" --set train.steps=2 >/dev/null
    "$bin" export-hf --checkpoint "$(ckpt "$work/a" 2)" --out "$work/hf" >"$work/export.txt"
    expect "$work/export.txt" "exported .* \(step 2\)"
    test -s "$work/hf/config.json"
    test -s "$work/hf/model.safetensors"
    expect "$work/hf/config.json" '"model_type": *"deepseek_v3"'
    # (not `head | grep -q`: grep exiting at the first match can kill head with SIGPIPE, and pipefail
    # turns that into a failure when the timing goes that way)
    head -c 65536 "$work/hf/model.safetensors" >"$work/header.bin"
    grep -a -q "model.layers.1.mlp.experts.3.gate_proj.weight" "$work/header.bin"
    "$bin" eval --checkpoint "$(ckpt "$work/a" 2)" >"$work/eval.txt"
    expect "$work/eval.txt" "\(step 2\): val_loss [0-9.]+, [0-9.]+ bits per token"
    ;;
  other_shape)  # a checkpoint of another model: resume and eval exit 1 naming it; init_from per strict
    run "$work/a" --set train.steps=2 >/dev/null
    file=$(ckpt "$work/a" 2)
    set +e
    run "$work/b" --set train.steps=2 --set model.hidden_size=48 --set checkpoint.resume="$file" >"$work/resume.txt" 2>&1
    [ $? = 1 ] || exit 1
    "$bin" eval --checkpoint "$file" --config "$repo/configs/tiny.yaml" --set data.format=synthetic \
      >"$work/eval.txt" 2>&1
    [ $? = 1 ] || exit 1
    run "$work/c" --set train.steps=1 --set model.intermediate_size=40 --set checkpoint.init_from="$file" \
      >"$work/strict.txt" 2>&1
    [ $? = 1 ] || exit 1
    set -e
    expect "$work/resume.txt" "$file: the checkpoint does not match this model"
    expect "$work/eval.txt" "$file: the checkpoint does not match this model"
    expect "$work/strict.txt" "shape differs: model.layers.0.mlp.up_proj.weight: checkpoint \[48, 32\], model \[40, 32\]"
    run "$work/d" --set train.steps=1 --set model.intermediate_size=40 --set checkpoint.init_from="$file" \
      --set checkpoint.strict=false >"$work/loose.txt"
    expect "$work/loose.txt" "init_from: [0-9]+ tensors from $file"
    expect "$work/loose.txt" "shape differs: model.layers.0.mlp.up_proj.weight"
    ;;
  reshard_2_to_1)  # saved by 2 ranks (EP 2), loaded by one and saved again: identical tensors
    run2 "$work/a" --set train.steps=2 --set precision.recipe=fp8_tensor_delayed >/dev/null
    run "$work/b" --set train.steps=2 --set precision.recipe=fp8_tensor_delayed \
      --set checkpoint.resume="$(ckpt "$work/a" 2)" >"$work/out.txt"
    expect "$work/out.txt" "saved by world 2, expert parallel 2"
    diff <(digests "$(ckpt "$work/a" 2)") <(digests "$(ckpt "$work/b" 2)")
    [ "$(digests "$(ckpt "$work/b" 2)" | wc -l)" -gt 100 ]
    ;;
  reshard_1_to_2)  # saved by one process, loaded by 2 ranks (EP 2) and saved again: identical tensors
    run "$work/a" --set train.steps=2 >/dev/null
    run2 "$work/b" --set train.steps=2 --set checkpoint.resume="$(ckpt "$work/a" 2)" >"$work/out.txt"
    expect "$work/out.txt" "saved by world 1, expert parallel 1"
    diff <(digests "$(ckpt "$work/a" 2)") <(digests "$(ckpt "$work/b" 2)")
    "$bin" inspect "$(ckpt "$work/b" 2)" >"$work/inspect.txt"
    expect "$work/inspect.txt" "^saved by +world 2, expert parallel 2"
    ;;
  signal_2_ranks)  # a signal on rank 0 only: both ranks agree, save and exit 0; the rerun resumes
    DAEDALUS_TEST_SIGNAL_AT_STEP=2 run2 "$work/a" --set train.steps=4 >"$work/out.txt"
    expect "$work/out.txt" "stopped at step 2 of 4 \(signal\)"
    run2 "$work/a" --set train.steps=4 >"$work/again.txt"
    expect "$work/again.txt" "resumed from $(ckpt "$work/a" 2): step 2"
    expect "$work/again.txt" "^step 4/4"
    ;;
  metadata_flip)  # one character of the stored config changed: inspect says CORRUPT, resume skips the file
    run "$work/a" --set train.steps=4 --set checkpoint.every=2 >/dev/null
    file=$(ckpt "$work/a" 4)
    offset=$(grep -abo 'routed_scaling_factor: 1.0' "$file" | head -1 | cut -d: -f1)
    [ -n "$offset" ] || { echo "no stored config text found in $file" >&2; exit 1; }
    offset=$((offset + 23))  # the "1" of 1.0 -> "3" (the damage the issue saw pass unnoticed)
    printf '3' | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
    if "$bin" inspect "$file" >"$work/inspect.txt" 2>&1; then echo "inspect exited 0" >&2; exit 1; fi
    expect "$work/inspect.txt" "^verdict +CORRUPT: .*(checksum|metadata)"
    if "$bin" export-hf --checkpoint "$file" --out "$work/hf" >"$work/export.txt" 2>&1; then
      echo "export-hf used a damaged config" >&2; exit 1
    fi
    run "$work/a" --set train.steps=6 >"$work/out.txt"
    expect "$work/out.txt" "resume: skipped $file: .*(checksum|metadata)"
    expect "$work/out.txt" "resumed from $(ckpt "$work/a" 2): step 2"
    ;;
  disk_full|disk_full_2_ranks)  # no space for the next save: exit 2 from every rank, naming the cause, quickly
    disk="$work/disk"
    mkdir -p "$disk"
    if ! mount -t tmpfs -o size=8m tmpfs "$disk" 2>/dev/null; then
      echo "SKIP: cannot mount a tmpfs here (needs root and mount rights)"
      exit 0
    fi
    trap 'umount "$disk"' EXIT
    launch=run
    [ "$case_name" = disk_full_2_ranks ] && launch=run2
    $launch "$disk/a" --set train.steps=2 >/dev/null
    free_kb=$(df -k --output=avail "$disk" | tail -1)
    fallocate -l $(((free_kb - 100) * 1024)) "$disk/filler"
    start=$(date +%s)
    set +e
    $launch "$disk/a" --set train.steps=4 --set checkpoint.every=2 >"$work/out.txt" 2>&1
    code=$?
    set -e
    elapsed=$(($(date +%s) - start))
    [ "$code" = 2 ] || { echo "exit code $code, expected 2" >&2; cat "$work/out.txt" >&2; exit 1; }
    [ "$elapsed" -lt 60 ] || { echo "took $elapsed s" >&2; exit 1; }
    if [ "$case_name" = disk_full_2_ranks ]; then
      expect "$work/out.txt" "rank 0 of 2: checkpoint: saving .*step_00000004.h5 failed: .*No space left on device"
      expect "$work/out.txt" "rank 1 of 2: checkpoint: saving .*step_00000004.h5 failed: .*No space left on device"
    else
      expect "$work/out.txt" "checkpoint: saving .*step_00000004.h5 failed: .*No space left on device"
    fi
    if grep -q "Segmentation\|MPI_ABORT\|no progress" "$work/out.txt"; then cat "$work/out.txt" >&2; exit 1; fi
    [ -z "$(find "$disk/a/checkpoints" -name '*.tmp')" ] || { echo "a .tmp was left" >&2; exit 1; }
    "$bin" inspect "$(ckpt "$disk/a" 2)" >"$work/inspect.txt"
    expect "$work/inspect.txt" "^verdict +OK"
    ;;
  file_size_limit)  # ulimit -f below the checkpoint's size: exit 2 saying so (SIGXFSZ would kill silently)
    set +e
    (ulimit -f 10000 && "$bin" train --config "$repo/configs/tiny.yaml" --set data.format=synthetic \
      --set 'data.train=[]' --set 'data.val=[]' --set run.dir="$work/a" --set train.steps=1 \
      --set schedule.warmup_steps=1 --set train.eval_every=0 --set logging.progress=never) >"$work/out.txt" 2>&1
    code=$?
    set -e
    [ "$code" = 2 ] || { echo "exit code $code, expected 2" >&2; cat "$work/out.txt" >&2; exit 1; }
    expect "$work/out.txt" "checkpoint: saving .* failed: File too large"
    [ -z "$(find "$work/a/checkpoints" -name '*.tmp')" ]
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
echo "PASS: $case_name"
