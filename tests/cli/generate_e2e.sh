#!/usr/bin/env bash
# End-to-end checks of `daedalus generate` with the real binary (tests/cli/generate.cmake):
#   generate_e2e.sh CASE DAEDALUS REPO WORKDIR
# Each case trains configs/tiny.yaml shrunk to a fraction of a second per step on synthetic data
# (vocab 128, so ASCII prompts are in the vocabulary; max_position_embeddings 64) for 2 steps, then
# generates from the checkpoint. A case prints "PASS: <case>" last; a failed check exits non-zero
# with what it expected.
set -euo pipefail
case_name=$1 bin=$2 repo=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
"$bin" train --config "$repo/configs/tiny.yaml" --set data.format=synthetic --set 'data.train=[]' \
  --set 'data.val=[]' --set data.synthetic.tokens=8192 --set data.synthetic.vocab=128 --set model.vocab_size=128 \
  --set model.num_hidden_layers=2 --set model.hidden_size=32 --set model.num_attention_heads=2 \
  --set model.q_lora_rank=16 --set model.kv_lora_rank=16 --set model.qk_nope_head_dim=8 \
  --set model.qk_rope_head_dim=8 --set model.v_head_dim=8 --set model.intermediate_size=48 \
  --set model.moe_intermediate_size=16 --set model.n_routed_experts=4 --set model.max_position_embeddings=64 \
  --set train.seq_len=16 --set train.micro_batch_size=2 --set train.steps=2 --set train.eval_every=0 \
  --set schedule.warmup_steps=1 --set logging.progress=never --set run.dir="$work/run" >"$work/train.txt"
ckpt=$work/run/checkpoints/step_00000002.h5
test -f "$ckpt"
expect() {  # expect FILE REGEX: the file has a line matching REGEX
  grep -E -q -- "$2" "$1" || { echo "expected /$2/ in $1:" >&2; cat "$1" >&2; exit 1; }
}
gen() {  # gen OUT [args...]: generate from the checkpoint, stdout to OUT, stderr to OUT.err
  local out=$1
  shift
  "$bin" generate --checkpoint "$ckpt" "$@" >"$out" 2>"$out.err"
}
exits_1() {  # exits_1 OUT [args...]: generate (of the checkpoint unless args name one) must exit 1
  local out=$1 status=0
  shift
  local args=("$@")
  [[ " $* " == *" --checkpoint "* ]] || args=(--checkpoint "$ckpt" "$@")
  "$bin" generate "${args[@]}" >"$out" 2>&1 || status=$?
  [ "$status" = 1 ] || { echo "expected exit 1, got $status:" >&2; cat "$out" >&2; exit 1; }
}

case $case_name in
  stream)  # the text, the timing and the cache accounting; greedy equal for both caches; seeds
    gen "$work/latent.txt" --prompt "Hello" --max-new-tokens 20 --temperature 0
    gen "$work/expanded.txt" --prompt "Hello" --max-new-tokens 20 --temperature 0 --cache expanded
    gen "$work/again.txt" --prompt "Hello" --max-new-tokens 20 --temperature 0
    [ "$(head -c 5 "$work/latent.txt")" = "Hello" ]
    [ "$(wc -c <"$work/latent.txt")" = 26 ]  # prompt + 20 bytes + newline
    cmp "$work/latent.txt" "$work/expanded.txt"
    cmp "$work/latent.txt" "$work/again.txt"
    expect "$work/latent.txt.err" "5 prompt \+ 20 new tokens, latent cache, 2 layers"
    expect "$work/latent.txt.err" "^prefill: 5 tokens in [0-9.]+ s = [0-9.]+ tokens/s; decode: 19 steps in"
    expect "$work/latent.txt.err" "^  latent +24 elements = +96 B fp32, +48 B bf16"
    expect "$work/latent.txt.err" "^  expanded +48 elements = +192 B fp32, +96 B bf16"
    expect "$work/latent.txt.err" "^  MHA +32 elements"
    # 5 prompt tokens + 19 fed back (the last new token is not): 24 tokens x 2 layers x 24 or 48 x 4 B
    expect "$work/latent.txt.err" "cache held 4608 B fp32 \(24 tokens x 2 layers\)"
    expect "$work/expanded.txt.err" "cache held 9216 B fp32 \(24 tokens x 2 layers\)"
    gen "$work/s1.txt" --prompt "Hi" --max-new-tokens 30 --temperature 1 --seed 1 --top-k 50 --top-p 0.95
    gen "$work/s1b.txt" --prompt "Hi" --max-new-tokens 30 --temperature 1 --seed 1 --top-k 50 --top-p 0.95
    gen "$work/s2.txt" --prompt "Hi" --max-new-tokens 30 --temperature 1 --seed 2 --top-k 50 --top-p 0.95
    cmp "$work/s1.txt" "$work/s1b.txt"
    if cmp -s "$work/s1.txt" "$work/s2.txt"; then echo "seeds 1 and 2 gave the same text" >&2; exit 1; fi
    ;;
  context)  # prompt + new tokens stop at max_position_embeddings (64), with a note, exit 0
    gen "$work/out.txt" --prompt "$(printf 'a%.0s' {1..60})" --max-new-tokens 10 --temperature 0
    expect "$work/out.txt.err" "stopped after 4 new tokens: the sequence reached model.max_position_embeddings = 64"
    [ "$(wc -c <"$work/out.txt")" = 65 ]
    ;;
  bad_input)  # each exits 1 with a message naming the problem
    exits_1 "$work/long.txt" --prompt "$(printf 'a%.0s' {1..65})"
    expect "$work/long.txt" "the prompt has 65 tokens, more than the model's context of 64"
    exits_1 "$work/vocab.txt" --prompt "$(printf 'ok\xc3\xa9')"
    expect "$work/vocab.txt" "prompt token 195 is outside the vocabulary \[0, 128\)"
    exits_1 "$work/missing.txt" --checkpoint "$work/no-such.h5" --prompt "x"
    expect "$work/missing.txt" "no-such.h5"
    exits_1 "$work/shape.txt" --prompt "x" --set model.hidden_size=48
    expect "$work/shape.txt" "$ckpt: the checkpoint does not match this model"
    exits_1 "$work/topp.txt" --prompt "x" --top-p 1.5
    expect "$work/topp.txt" "--top-p 1.5: expected a value in \(0, 1\]"
    exits_1 "$work/cache.txt" --prompt "x" --cache paged
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
echo "PASS: $case_name"
