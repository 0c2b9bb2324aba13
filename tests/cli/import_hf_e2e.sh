#!/usr/bin/env bash
# End-to-end HF import checks with the real binary (tests/cli/import_hf.cmake):
#   import_hf_e2e.sh CASE DAEDALUS REPO WORKDIR
# A small YaRN model with MTP is trained 2 steps on synthetic data and exported; the HF directories
# the cases import are that export and damaged copies of it. Prints "PASS: <case>" last.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
source "$(dirname "$0")/small_run.sh"  # small=(...)
small+=(--set model.n_group=2 --set model.topk_group=1 --set model.num_experts_per_tok=2
        --set 'model.rope_scaling={type: yarn, factor: 4, original_max_position_embeddings: 16, mscale: 1.0, mscale_all_dim: 1.0}'
        --set train.eval_every=0)
expect() {  # expect FILE REGEX: the file has a line matching REGEX
  grep -E -q -- "$2" "$1" || { echo "expected /$2/ in $1:" >&2; cat "$1" >&2; exit 1; }
}
fails() {  # fails NAME REGEX... -- ARGS: daedalus ARGS exits 1 and its stderr matches every REGEX
  local name=$1
  shift
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local rc=0
  "$bin" "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  [ "$rc" -eq 1 ] || { echo "$name: exit $rc, expected 1" >&2; cat "$work/$name.err" >&2; exit 1; }
  for p in "${patterns[@]}"; do expect "$work/$name.err" "$p"; done
}
"$bin" train --config "$repo/configs/tiny.yaml" "${small[@]}" --set run.dir="$work/run" --set train.steps=2 \
  >"$work/train.txt"
ckpt="$work/run/checkpoints/step_00000002.h5"

case $case_name in
  round_trip)  # HF dir -> import -> export: the same bytes (fp32; FP8 blocks with fp32 scales), MB/s reported
    "$bin" export-hf --checkpoint "$ckpt" --out "$work/hf32" --dtype fp32 >/dev/null
    expect "$work/hf32/config.json" '"torch_dtype": "float32"'
    expect "$work/hf32/config.json" '"type": "yarn"'
    test -s "$work/hf32/generation_config.json"
    "$bin" import-hf "$work/hf32" --out "$work/a.h5" >"$work/import.txt"
    expect "$work/import.txt" "2 layers \(1 MoE with 4 experts\), 1 MTP, yarn rope \(factor 4, original 16\), float32"
    expect "$work/import.txt" "imported [0-9]+ tensors .* from 1 file\(s\): [0-9.]+ MB read in [0-9.]+ s = [0-9]+ MB/s"
    "$bin" inspect "$work/a.h5" | grep -E -q "^verdict +OK"
    "$bin" export-hf --checkpoint "$work/a.h5" --out "$work/hf32b" --dtype fp32 >/dev/null
    cmp "$work/hf32/model.safetensors" "$work/hf32b/model.safetensors"
    cmp "$work/hf32/config.json" "$work/hf32b/config.json"
    # DeepSeek's FP8 blocks with fp32 scales (the recipe's scales are not powers of two), twice through.
    "$bin" export-hf --checkpoint "$ckpt" --out "$work/hf8" --format fp8 >"$work/export8.txt"
    expect "$work/export8.txt" "fp8 e4m3 128x128 blocks with fp32 scales"
    expect "$work/hf8/config.json" '"quant_method": "fp8"'
    "$bin" import-hf "$work/hf8" --out "$work/b.h5" >"$work/import8.txt"
    expect "$work/import8.txt" "FP8 e4m3 weights \(128x128 blocks, float scales\)"
    "$bin" export-hf --checkpoint "$work/b.h5" --out "$work/hf8b" --format fp8 >/dev/null
    cmp "$work/hf8/model.safetensors" "$work/hf8b/model.safetensors"
    ;;
  init_from)  # checkpoint.init_from: DIR takes the model from DIR/config.json and its weights
    "$bin" export-hf --checkpoint "$ckpt" --out "$work/hf" >/dev/null
    printf '%s\n' 'run: {name: ft}' 'data: {format: synthetic, synthetic: {vocab: 64, tokens: 8192}}' \
      'train: {steps: 1, seq_len: 16, micro_batch_size: 2, log_every: 1, eval_every: 0}' \
      'logging: {progress: never}' >"$work/ft.yaml"
    "$bin" train --config "$work/ft.yaml" --set run.dir="$work/ft" --set checkpoint.init_from="$work/hf" \
      >"$work/ft.txt"
    expect "$work/ft.txt" "init_from: [0-9]+ tensors from the HF directory $work/hf \(1 files, [0-9.]+ MB"
    expect "$work/ft/config.yaml" "hidden_size: 32"
    expect "$work/ft/config.yaml" "rope_scaling: \{type: yarn, factor: 4"
    # Pipeline stages: each reads its own layers of the directory; the first step matches one rank's.
    mpirun -np 2 --oversubscribe --bind-to none "$bin" train --config "$work/ft.yaml" --set run.dir="$work/ft_pp2" \
      --set checkpoint.init_from="$work/hf" --set parallel.pipeline_parallel=2 >"$work/ft_pp2.txt" 2>&1 ||
      { cat "$work/ft_pp2.txt" >&2; exit 1; }
    loss() { grep -o '"loss":[^,}]*' "$work/$1/metrics.jsonl" | head -1 | cut -d: -f2; }
    awk -v a="$(loss ft)" -v b="$(loss ft_pp2)" 'BEGIN { d = a - b; exit !(a > 0 && (d < 0 ? -d : d) <= 1e-5 * a) }' ||
      { echo "step 1 loss: one rank $(loss ft), 2 stages $(loss ft_pp2)" >&2; exit 1; }
    # A model key the config sets against the directory's value is refused, naming both.
    fails clash "model.hidden_size: the config sets 64" "config.json has 32" -- train --config "$work/ft.yaml" \
      --set model.hidden_size=64 --set run.dir="$work/ft2" --set checkpoint.init_from="$work/hf"
    ;;
  bad_input)  # exit 1 naming the file and tensor or key; nothing written to --out
    "$bin" export-hf --checkpoint "$ckpt" --out "$work/hf" >/dev/null
    mk() { rm -rf "$work/$1" && cp -r "$work/hf" "$work/$1"; }
    mk truncated && truncate -s -100 "$work/truncated/model.safetensors"
    fails truncated "$work/truncated/model.safetensors" "out of range" -- import-hf "$work/truncated" --out "$work/o1.h5"
    mk shard
    printf '{"weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}' \
      >"$work/shard/model.safetensors.index.json"
    fails shard "$work/shard/model-00002-of-00002.safetensors: missing" "model.embed_tokens.weight" -- \
      import-hf "$work/shard" --out "$work/o2.h5"
    mk ghost
    printf '{"weight_map": {"model.ghost.weight": "model.safetensors"}}' >"$work/ghost/model.safetensors.index.json"
    fails ghost "$work/ghost/model.safetensors: has no tensor 'model.ghost.weight'" -- \
      import-hf "$work/ghost" --out "$work/o3.h5"
    mk shape && sed -i 's/"intermediate_size": 48/"intermediate_size": 40/' "$work/shape/config.json"
    fails shape "model.layers.0.mlp.gate_proj.weight: \[48, 32\] in $work/shape/model.safetensors, the model's is \[40, 32\]" \
      -- import-hf "$work/shape" --out "$work/o4.h5"
    mk quant && sed -i 's/"attention_dropout"/"quantization_config": {"quant_method": "gptq"}, "attention_dropout"/' \
      "$work/quant/config.json"
    fails quant "$work/quant/config.json: quantization_config.quant_method: \"gptq\" is not supported" -- \
      import-hf "$work/quant" --out "$work/o5.h5"
    mk rope && sed -i 's/"type": "yarn"/"type": "longrope"/' "$work/rope/config.json"
    fails rope "$work/rope/config.json: rope_scaling.type: \"longrope\" is not supported" -- \
      import-hf "$work/rope" --out "$work/o6.h5"
    # eval of a checkpoint whose data path is relative and not here: the key to set, and where it looked.
    fails relpath "no_such_val.bin" "\(data.val: a relative path is looked up from the current directory" -- \
      eval --checkpoint "$ckpt" --set data.format=llmc --set data.val=no_such_val.bin --set data.train=no_such_val.bin
    for i in 1 2 3 4 5 6; do
      [ ! -e "$work/o$i.h5" ] && [ ! -e "$work/o$i.h5.tmp" ] || { echo "o$i.h5 was written" >&2; exit 1; }
    done
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
echo "PASS: $case_name"
