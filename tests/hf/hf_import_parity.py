#!/usr/bin/env python3
"""Parity of `daedalus import-hf` with HuggingFace transformers' DeepseekV3ForCausalLM.

    .venv-hf/bin/python tests/hf/hf_import_parity.py OUT [--build build] [--tokens 4200]

Builds random DeepseekV3ForCausalLM models with transformers -- YaRN rope_scaling as in DeepSeek-V3's
release (factor 40, original_max_position_embeddings 4096, beta 32/1, mscale = mscale_all_dim = 1),
q_lora_rank null, group-limited routing (8 experts in 4 groups, top-2 groups, 3 per token), a shared
expert, an MTP layer (model.layers.{L}.*, DeepSeek's names, written beside HF's own tensors) -- and
saves each as
  bf16         save_pretrained in bfloat16, sharded (max_shard_size) with the index, per-expert names
  bf16-stacked the same with transformers 5's stacked experts.gate_up_proj / down_proj
  fp8          DeepSeek's FP8 format written here from the bf16 model's weights: every *_proj.weight
               (not eh_proj) as E4M3 + weight_scale_inv per 128x128 block, scale = amax / 448 as in
               DeepSeek's reference quantizer (fp32 scales)
  fp8-ue8m0    the same with scale = 2^ceil(log2(amax / 448)) and scale_fmt ue8m0
Then, for each, HF's fp32 forward (eager attention) on one sequence of --tokens tokens (past the
original 4096 positions) against Daedalus: tests/hf/hf_import_logits (import_hf + fp32 forward) for
logits and loss, and `daedalus import-hf` + `daedalus eval` for the CLI's loss. The FP8 variants' HF
reference is HF's forward with the FP8 weights dequantized in torch (codes.float() * scale_inv).

Tolerance 1e-5 relative on the loss and on max|Δlogit| / max|logit| (fp32 on both sides). HF
computes the RoPE angle position * inv_freq in fp32 (an error of up to half an ulp of the angle,
2.4e-4 rad near position 4200) where Daedalus uses double, so the report also gives the error
against HF with a float64 rotary table, which isolates that.
"""

import argparse
import copy
import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from make_fixture import randomize  # noqa: E402


def hf_config():
    from transformers import DeepseekV3Config
    return DeepseekV3Config(
        vocab_size=211, hidden_size=160, intermediate_size=288, moe_intermediate_size=48,
        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=None, kv_lora_rank=40, qk_nope_head_dim=24, qk_rope_head_dim=16, v_head_dim=20,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, rms_norm_eps=1e-6, max_position_embeddings=163840,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                         "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
                         "mscale": 1.0, "mscale_all_dim": 1.0},
        rope_interleave=True, tie_word_embeddings=False, num_mtp_layers=1, initializer_range=0.02)


def mtp_tensors(state, L, H, gen):
    """DeepSeek's MTP layer k = 0 at model.layers.{L}: a MoE decoder block (a perturbed copy of layer
    L-1) plus enorm, hnorm, eh_proj, shared_head.norm and the copies of embed_tokens and lm_head."""
    out = {}
    for name, t in state.items():
        if name.startswith(f"model.layers.{L - 1}."):
            out[name.replace(f"model.layers.{L - 1}.", f"model.layers.{L}.", 1)] = t * (1 + 0.1 * torch.randn(t.shape, generator=gen))
    out[f"model.layers.{L}.enorm.weight"] = 1 + 0.1 * torch.randn(H, generator=gen)
    out[f"model.layers.{L}.hnorm.weight"] = 1 + 0.1 * torch.randn(H, generator=gen)
    out[f"model.layers.{L}.eh_proj.weight"] = torch.randn(H, 2 * H, generator=gen) / math.sqrt(2 * H)
    out[f"model.layers.{L}.shared_head.norm.weight"] = 1 + 0.1 * torch.randn(H, generator=gen)
    out[f"model.layers.{L}.embed_tokens.weight"] = state["model.embed_tokens.weight"].clone()
    out[f"model.layers.{L}.shared_head.head.weight"] = state["lm_head.weight"].clone()
    return out


def per_expert(state):
    out = {}
    for name, t in state.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix, inter = name[: -len("gate_up_proj")], t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inter].clone()
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inter:].clone()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e].clone()
        else:
            out[name] = t
    return out


def quantize_blocks(w, ue8m0, block=128):
    """DeepSeek's reference block quantizer: per 128x128 block s = amax / 448 (ue8m0: rounded up to a
    power of two), codes = (w / s) in float8_e4m3fn."""
    R, C = w.shape
    nr, nc = -(-R // block), -(-C // block)
    codes = torch.empty(R, C, dtype=torch.float8_e4m3fn)
    scales = torch.empty(nr, nc, dtype=torch.float32)
    for i in range(nr):
        for j in range(nc):
            blk = w[i * block:(i + 1) * block, j * block:(j + 1) * block].float()
            amax = blk.abs().max().clamp(min=1e-12)
            s = amax / 448.0
            if ue8m0:
                s = torch.exp2(torch.ceil(torch.log2(s)))
            scales[i, j] = s
            codes[i * block:(i + 1) * block, j * block:(j + 1) * block] = (blk / s).to(torch.float8_e4m3fn)
    return codes, scales


def dequantize_blocks(codes, scales, block=128):
    s = scales.repeat_interleave(block, 0)[: codes.shape[0]].repeat_interleave(block, 1)[:, : codes.shape[1]]
    return codes.float() * s


def write_dir(out, cfg_json, tensors, shards):
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2))
    names = sorted(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        part = {n: tensors[n].contiguous() for n in names[s * per:(s + 1) * per]}
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, out / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))


def write_llmc(path, ids):
    with open(path, "wb") as f:
        header = [20240520, 1, len(ids)] + [0] * 253
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{len(ids)}H", *ids))


def compare(name, ours_logits, ours_loss, hf_logits, hf_loss):
    diff = (ours_logits - hf_logits).abs()
    scale = hf_logits.abs().max().item()
    normwise = diff.max().item() / scale
    big = hf_logits.abs() >= 1e-3 * scale
    max_rel = (diff[big] / hf_logits.abs()[big]).max().item()
    loss_rel = abs(ours_loss - hf_loss) / abs(hf_loss)
    T = hf_logits.shape[1]
    late = diff[:, 4096:].max().item() / scale if T > 4096 else float("nan")
    print(f"  {name}: loss ours {ours_loss:.8f} HF {hf_loss:.8f} rel {loss_rel:.2e}; logits max|Δ|/max|hf| "
          f"{normwise:.2e} (positions >= 4096: {late:.2e}), max rel (|hf| >= 1e-3 max) {max_rel:.2e}, "
          f"argmax agreement {(ours_logits.argmax(-1) == hf_logits.argmax(-1)).float().mean().item():.2%}")
    return normwise, loss_rel


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--tokens", type=int, default=4200)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--finetune-steps", type=int, default=50, help="0: skip the fine-tuning check")
    args = parser.parse_args()
    import transformers
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    cfg = hf_config()
    model = DeepseekV3ForCausalLM(cfg).eval()
    randomize(model, gen)
    # bf16 values throughout (parameters and router biases): the bf16 directories hold the model
    # exactly. The model itself stays fp32: .to(bfloat16) would also round its rotary inv_freq buffer.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(b.to(torch.bfloat16).float())
    L, H, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    args.out.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(0, V, (1, args.tokens), generator=gen)
    save_file({"input_ids": ids}, args.out / "ids.safetensors")
    write_llmc(args.out / "val.bin", ids[0].tolist())

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    mtp = mtp_tensors(per_expert(state), L, H, gen)
    variants = {}
    d = args.out / "bf16"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(d, max_shard_size="300KB")
    extra = {k: v.to(torch.bfloat16) for k, v in mtp.items()}
    save_file(extra, d / "model-mtp.safetensors", metadata={"format": "pt"})
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"].update({k: "model-mtp.safetensors" for k in extra})
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    cfg_json = json.loads((d / "config.json").read_text())
    variants["bf16"] = (d, state)
    d = args.out / "bf16-stacked"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(d, max_shard_size="300KB", save_original_format=False)
    save_file(extra, d / "model-mtp.safetensors", metadata={"format": "pt"})
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"].update({k: "model-mtp.safetensors" for k in extra})
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    variants["bf16-stacked"] = (d, state)
    for ue8m0 in (False, True):
        tensors, deq = {}, {}
        for name, t in {**per_expert(state), **mtp}.items():
            if t.dim() == 2 and name.endswith("_proj.weight") and not name.endswith("eh_proj.weight"):
                codes, scales = quantize_blocks(t, ue8m0)
                tensors[name], tensors[name + "_scale_inv"] = codes, scales
                deq[name] = dequantize_blocks(codes, scales)
            else:
                tensors[name] = t.to(torch.bfloat16)
                deq[name] = t.to(torch.bfloat16).float()
        j = dict(cfg_json)
        j["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "weight_block_size": [128, 128]}
        if ue8m0:
            j["quantization_config"]["scale_fmt"] = "ue8m0"
        name = "fp8-ue8m0" if ue8m0 else "fp8"
        write_dir(args.out / name, j, tensors, shards=3)
        # HF's parameters from the dequantized per-expert tensors (stacked back).
        hf_state = {}
        for k, v in state.items():
            if k.endswith("mlp.experts.gate_up_proj"):
                prefix = k[: -len("gate_up_proj")]
                hf_state[k] = torch.stack([torch.cat([deq[f"{prefix}{e}.gate_proj.weight"], deq[f"{prefix}{e}.up_proj.weight"]])
                                           for e in range(v.shape[0])])
            elif k.endswith("mlp.experts.down_proj"):
                prefix = k[: -len("down_proj")]
                hf_state[k] = torch.stack([deq[f"{prefix}{e}.down_proj.weight"] for e in range(v.shape[0])])
            else:
                hf_state[k] = deq.get(k, v)
        variants[name] = (args.out / name, hf_state)
    print(f"config: {L} layers, {cfg.n_routed_experts} experts in {cfg.n_group} groups (top {cfg.topk_group}), "
          f"q_lora_rank null, yarn factor 40 / original 4096, MTP 1; {args.tokens} tokens")

    ok = True
    for name, (d, hf_state) in variants.items():
        print(f"== {name}: {d}")
        model.load_state_dict(hf_state, strict=True)
        t0 = time.time()
        with torch.no_grad():
            out = model(input_ids=ids, labels=ids)
        hf_logits, hf_loss = out.logits.float(), float(out.loss)
        print(f"  HF forward {time.time() - t0:.1f} s")
        ours = d / "ours.safetensors"
        r = subprocess.run([str(args.build / "tests" / "hf_import_logits"), str(d), str(args.out / "ids.safetensors"),
                            str(ours)], capture_output=True, text=True)
        print("  " + (r.stdout + r.stderr).strip().replace("\n", "\n  "))
        if r.returncode != 0:
            ok = False
            continue
        o = load_file(ours)
        normwise, loss_rel = compare("hf_import_logits", o["logits"], float(o["loss"]), hf_logits, hf_loss)
        ok &= normwise <= args.rtol and loss_rel <= args.rtol
        # HF with its rotary table in float64: isolates HF's fp32 angle rounding.
        rot = model.model.rotary_emb
        saved = rot.forward

        def fwd64(x, position_ids, rot=rot):
            inv = torch.tensor(ROPE64[name_key(rot)], dtype=torch.float64)
            freqs = position_ids[..., None].double() * inv
            emb = torch.cat((freqs, freqs), dim=-1)
            return (emb.cos() * rot.attention_scaling).to(x.dtype), (emb.sin() * rot.attention_scaling).to(x.dtype)
        ROPE64[name_key(rot)] = yarn_inv_freq64(cfg)
        rot.forward = fwd64
        with torch.no_grad():
            out64 = model(input_ids=ids, labels=ids)
        rot.forward = saved
        compare("vs HF with a float64 rotary table", o["logits"], float(o["loss"]), out64.logits.float(), float(out64.loss))
        # The CLI: import-hf, then eval on the same tokens (seq_len T-1: the T-1 next-token predictions).
        ckpt = d / "imported.h5"
        r = subprocess.run([str(args.build / "daedalus"), "import-hf", str(d), "--out", str(ckpt)], capture_output=True,
                           text=True)
        print("  " + (r.stdout + r.stderr).strip().replace("\n", "\n  "))
        r = subprocess.run([str(args.build / "daedalus"), "eval", "--checkpoint", str(ckpt), "--set", "data.format=llmc",
                            "--set", f"data.val={args.out / 'val.bin'}", "--set", f"data.train={args.out / 'val.bin'}", "--set", f"train.seq_len={args.tokens - 1}",
                            "--set", "train.micro_batch_size=1", "--set", "train.eval_batches=1",
                            "--set", "precision.recipe=fp32"], capture_output=True, text=True)
        print("  " + (r.stdout + r.stderr).strip().replace("\n", "\n  "))
        try:
            cli_loss = float(r.stdout.split("val_loss ")[1].split(",")[0])
            rel = abs(cli_loss - hf_loss) / abs(hf_loss)
            print(f"  daedalus eval: val_loss {cli_loss:.6f} vs HF {hf_loss:.6f}: rel {rel:.2e} (6 printed decimals)")
            ok &= rel <= max(args.rtol, 1e-6 / abs(hf_loss))
        except (IndexError, ValueError):
            ok = False
    if args.finetune_steps > 0:
        ok &= finetune(args, model, variants["bf16"][0], variants["bf16"][1])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def finetune(args, model, hf_dir, state, micro_batch=2, seq_len=1024):
    """checkpoint.init_from: the bf16 directory, trained on new data (this repo's README bytes as
    token ids): the first step's loss must be HF's loss on that batch. With exactly micro_batch
    windows in the file the first batch is all of them (in some order), so HF's reference is the mean
    over the windows, each evaluated from position 0."""
    print(f"== fine-tuning from {hf_dir}")
    V = model.config.vocab_size
    data = [b % V for b in (ROOT / "README.md").read_bytes()][: micro_batch * seq_len + 1]
    write_llmc(args.out / "train.bin", data)
    model.load_state_dict(state, strict=True)
    losses = []
    with torch.no_grad():
        for k in range(micro_batch):
            w = torch.tensor(data[k * seq_len:(k + 1) * seq_len + 1])[None]
            logits = model(input_ids=w[:, :-1]).logits.float()
            losses.append(float(F.cross_entropy(logits[0], w[0, 1:])))
    hf_loss = sum(losses) / len(losses)
    run = args.out / "finetune"
    cfg = args.out / "finetune.yaml"
    cfg.write_text("\n".join([
        "run: {name: finetune, dir: " + str(run) + "}",
        "data: {format: llmc, train: " + str(args.out / "train.bin") + "}",
        f"train: {{steps: {args.finetune_steps}, seq_len: {seq_len}, micro_batch_size: {micro_batch}, log_every: 1, "
        "eval_every: 0}",
        "optimizer: {lr: 0.001}",
        "schedule: {warmup_steps: 5}",
        "precision: {recipe: fp32}",
        "checkpoint: {init_from: " + str(hf_dir) + ", every: 0, resume: none}",
        "logging: {progress: never}", ""]))
    t0 = time.time()
    r = subprocess.run([str(args.build / "daedalus"), "train", "--config", str(cfg)], capture_output=True, text=True)
    print("  " + "\n  ".join(l for l in (r.stdout + r.stderr).splitlines() if "init_from" in l or "step" in l[:8])[:3000])
    if r.returncode != 0:
        print(r.stdout[-2000:] + r.stderr[-2000:])
        return False
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"lm_loss"' in l]
    first, last = lines[0]["lm_loss"], lines[-1]["lm_loss"]
    rel = abs(first - hf_loss) / hf_loss
    print(f"  {len(lines)} steps in {time.time() - t0:.0f} s: first lm_loss {first:.6f} vs HF {hf_loss:.6f} on that "
          f"batch (rel {rel:.2e}); last lm_loss {last:.6f}")
    return rel <= 1e-5


ROPE64 = {}


def name_key(rot):
    return id(rot)


def yarn_inv_freq64(cfg):
    """HF's _compute_yarn_parameters in float64 (same formulas, no fp32 rounding)."""
    p = cfg.rope_parameters
    base, dim, factor = p["rope_theta"], cfg.qk_rope_head_dim, p["factor"]
    orig = p["original_max_position_embeddings"]

    def corr(rot):
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))
    low, high = max(math.floor(corr(p.get("beta_fast") or 32)), 0), min(math.ceil(corr(p.get("beta_slow") or 1)), dim - 1)
    if low == high:
        high += 0.001
    pos = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    return (1 / (factor * pos) * ramp + 1 / pos * (1 - ramp)).tolist()


if __name__ == "__main__":
    sys.exit(main())
