# Sourced by the CLI end-to-end scripts: --set overrides that shrink configs/tiny.yaml to a model
# that trains a step in milliseconds on synthetic data (no files, no evaluation, no progress bar).
small=(--set data.format=synthetic --set data.synthetic.tokens=65536 --set model.num_hidden_layers=2
       --set model.hidden_size=64 --set model.q_lora_rank=32 --set model.kv_lora_rank=16
       --set model.intermediate_size=128 --set model.moe_intermediate_size=32 --set train.seq_len=32
       --set train.micro_batch_size=4 --set train.log_every=1 --set train.eval_every=0
       --set schedule.warmup_steps=2 --set logging.progress=never)
