# Sourced by the CLI scripts (checkpoint, reliability, fp4, import_hf; after setting bin, repo and,
# for run2, mpiexec; they append their own --sets to small, later ones win): a
# configs/tiny.yaml shrunk to a fraction of a second per step on synthetic data, and the helpers
# that run it on one process or two ranks.
small=(--set data.format=synthetic --set 'data.train=[]' --set 'data.val=[]' --set data.synthetic.tokens=8192
       --set data.synthetic.vocab=64 --set model.vocab_size=64 --set model.num_hidden_layers=2
       --set model.hidden_size=32 --set model.num_attention_heads=2 --set model.q_lora_rank=16
       --set model.kv_lora_rank=16 --set model.qk_nope_head_dim=8 --set model.qk_rope_head_dim=8
       --set model.v_head_dim=8 --set model.intermediate_size=48 --set model.moe_intermediate_size=16
       --set model.n_routed_experts=4 --set model.max_position_embeddings=64 --set train.seq_len=16
       --set train.micro_batch_size=2 --set train.log_every=1 --set train.eval_every=2 --set train.eval_batches=2
       --set schedule.warmup_steps=1 --set logging.progress=never --set checkpoint.keep_last=0)
run() {  # run DIR [extra args...]: one process
  local dir=$1
  shift
  "$bin" train --config "$repo/configs/tiny.yaml" "${small[@]}" --set run.dir="$dir" "$@"
}
run2() {  # run2 DIR [extra args...]: two ranks, experts split over both
  local dir=$1
  shift
  "$mpiexec" --oversubscribe --bind-to none -np 2 "$bin" train --config "$repo/configs/tiny.yaml" "${small[@]}" \
    --set run.dir="$dir" --set parallel.expert_parallel=2 "$@"
}
ckpt() { printf '%s/checkpoints/step_%08d.h5' "$1" "$2"; }
expect() {  # expect FILE REGEX: the file has a line matching REGEX
  grep -E -q -- "$2" "$1" || { echo "expected /$2/ in $1:" >&2; cat "$1" >&2; exit 1; }
}
