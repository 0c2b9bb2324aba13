#!/usr/bin/env python3
"""Parity of a Daedalus model dump with HuggingFace transformers' DeepseekV3ForCausalLM.

    .venv-hf/bin/python tests/hf/hf_parity.py DIR [--rtol 1e-4]

DIR holds what the C++ dumper (or tests/hf/make_fixture.py) writes:
  config.json             HF DeepseekV3Config fields, model_type deepseek_v3
  model.safetensors       fp32 weights under HF names, per-expert names
                          model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight
  reference.safetensors   input_ids I64 [B, T], logits F32 [B, T, V], loss F32 [] (our outputs)

Loads the model with transformers in fp32 with eager attention, reports missing / unexpected /
mismatched weight names, checks that every loaded parameter holds exactly the file's bits, runs
input_ids and compares logits and loss with ours. Exit 0 on PASS, 1 on FAIL, 2 on bad input.

Tolerance: fp32 carries 24 significant bits (unit roundoff u = 6e-8). Two correct fp32
implementations differ only by summation order (oneDNN vs MKL blocking, fused vs split
projections): each dot product of length K <= max(hidden, intermediate, vocab) contributes
about sqrt(K) * u relative error, compounded over a few dozen matmuls, norms and softmaxes —
a few 1e-6 of the largest logit on the tiny configs (make_fixture.py measures HF fp32 against an
fp64 reference: ~1e-6). We require every |ours - hf| <= rtol * max|hf logit| and
|loss_ours - loss_hf| <= rtol * |loss_hf| with rtol = 1e-4: ~50x above round-off, while every
convention error this harness exists to catch (RoPE pairing, softmax scale, router bias or
grouping, expert order, a missing norm) moves logits by 1e-2 or more of their scale.
A near tie in the router (two experts' biased scores within round-off) can flip one token's
expert choice legitimately; the report lists the worst positions so such a case is recognisable.
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


def fail_input(msg):
    print(f"hf_parity: {msg}", file=sys.stderr)
    sys.exit(2)


def config_warnings(cfg):
    """Fields that silently change HF's math away from what Daedalus computes."""
    warnings = []
    heads = cfg.get("num_attention_heads")
    kv = cfg.get("num_key_value_heads", 128)  # HF's default is 128, not num_attention_heads
    if kv is not None and kv != heads:
        warnings.append(f"num_key_value_heads = {kv} (HF default 128) but num_attention_heads = {heads}: "
                        "set num_key_value_heads to num_attention_heads (or null)")
    if "head_dim" in cfg and cfg["head_dim"] != cfg.get("qk_rope_head_dim", 64):
        warnings.append(f"head_dim = {cfg['head_dim']} overrides the RoPE dimension (HF uses head_dim = "
                        f"qk_rope_head_dim = {cfg.get('qk_rope_head_dim', 64)}): drop the field")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    if rope and rope.get("rope_type", rope.get("type", "default")) != "default":
        warnings.append(f"RoPE scaling {rope} changes inv_freq and the softmax scale (yarn mscale)")
    if not cfg.get("rope_interleave", True):
        warnings.append("rope_interleave = false: HF rotates (i, i + d/2) pairs instead of (2i, 2i+1)")
    if "rope_theta" not in cfg and not (rope and "rope_theta" in rope):
        warnings.append("no rope_theta: HF uses 10000.0")
    return warnings


def check_loaded_weights(model, weights_path, num_layers):
    """Every tensor of the file against the parameter HF loaded it into, bit for bit.

    Per-expert names are stacked by HF into experts.gate_up_proj [E, 2I, H] (gate rows first) and
    experts.down_proj [E, H, I]. Returns (number verified, list of mismatches, list of MTP names)."""
    state = model.state_dict()
    per_expert = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
    layer_of = re.compile(r"^model\.layers\.(\d+)\.")
    verified, mismatches, mtp = 0, [], []
    with safe_open(weights_path, framework="pt") as f:
        for name in f.keys():
            m = layer_of.match(name)
            if m and int(m.group(1)) >= num_layers:
                mtp.append(name)
                continue
            tensor = f.get_tensor(name)
            e = per_expert.match(name)
            if e:
                prefix, expert, kind = e.group(1), int(e.group(2)), e.group(3)
                if kind == "down":
                    loaded = state[f"{prefix}.down_proj"][expert]
                else:
                    gate_up = state[f"{prefix}.gate_up_proj"][expert]
                    half = gate_up.shape[0] // 2
                    loaded = gate_up[:half] if kind == "gate" else gate_up[half:]
            elif name in state:
                loaded = state[name]
            else:
                continue  # reported by HF as unexpected
            if loaded.shape != tensor.shape or not torch.equal(loaded.to(tensor.dtype), tensor):
                mismatches.append(f"{name}: file {tuple(tensor.shape)}, loaded {tuple(loaded.shape)}")
            verified += 1
    return verified, mismatches, mtp


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (see the module docstring)")
    args = parser.parse_args()

    for name in ("config.json", "model.safetensors", "reference.safetensors"):
        if not (args.dir / name).is_file():
            fail_input(f"{args.dir / name}: missing")
    cfg = json.loads((args.dir / "config.json").read_text())
    if cfg.get("model_type") != "deepseek_v3":
        fail_input(f"{args.dir / 'config.json'}: model_type is {cfg.get('model_type')!r}, expected 'deepseek_v3'")
    ref = load_file(args.dir / "reference.safetensors")
    for key in ("input_ids", "logits", "loss"):
        if key not in ref:
            fail_input(f"{args.dir / 'reference.safetensors'}: no tensor '{key}'")

    import transformers
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the loading report is printed below instead
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    ok = True
    for w in config_warnings(cfg):
        print(f"config WARNING: {w}")
        ok = False

    model, info = DeepseekV3ForCausalLM.from_pretrained(
        args.dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    L = model.config.num_hidden_layers
    mtp_re = re.compile(r"^model\.layers\.(\d+)\.")
    unexpected = sorted(info.get("unexpected_keys", []))
    mtp_unexpected = [k for k in unexpected if (m := mtp_re.match(k)) and int(m.group(1)) >= L]
    other_unexpected = [k for k in unexpected if k not in mtp_unexpected]
    missing = sorted(info.get("missing_keys", []))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", []))
    print(f"loading: {len(missing)} missing, {len(other_unexpected)} unexpected, {len(mismatched)} mismatched, "
          f"{len(mtp_unexpected)} MTP (model.layers.{L}+.*, not used by HF's forward)")
    for kind, names in (("missing", missing), ("unexpected", other_unexpected), ("mismatched", mismatched)):
        for n in names:
            print(f"  {kind}: {n}")
        ok &= not names
    for err in info.get("error_msgs", []):
        print(f"  error: {err}")
        ok = False

    verified, bad, mtp_in_file = check_loaded_weights(model, args.dir / "model.safetensors", L)
    print(f"weights: {verified} file tensors verified bit-exact in the loaded model, {len(bad)} differ, "
          f"{len(mtp_in_file)} MTP tensors skipped")
    for b in bad:
        print(f"  differs: {b}")
    ok &= not bad

    ids = ref["input_ids"].to(torch.long)
    ours_logits = ref["logits"].to(torch.float32)
    ours_loss = float(ref["loss"])
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    hf_logits = out.logits.float()
    if hf_logits.shape != ours_logits.shape:
        print(f"logits: shape ours {tuple(ours_logits.shape)} vs HF {tuple(hf_logits.shape)}\nFAIL")
        return 1
    V = hf_logits.shape[-1]
    hf_loss = float(F.cross_entropy(hf_logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1)))
    assert math.isclose(hf_loss, float(out.loss), rel_tol=1e-5), (hf_loss, float(out.loss))

    diff = (ours_logits - hf_logits).abs()
    scale = hf_logits.abs().max().item()
    big = hf_logits.abs() >= 1e-3 * scale  # elementwise relative error is meaningless near zero
    max_rel = (diff[big] / hf_logits.abs()[big]).max().item() if big.any() else 0.0
    normwise = diff.max().item() / max(scale, 1e-30)
    loss_rel = abs(ours_loss - hf_loss) / max(abs(hf_loss), 1e-30)
    agree = (ours_logits.argmax(-1) == hf_logits.argmax(-1)).float().mean().item()
    B, T = ids.shape
    print(f"input_ids: [{B}, {T}], vocab {V}")
    print(f"logits: max|hf| {scale:.4g}, max abs err {diff.max().item():.3e}, max rel err {max_rel:.3e} "
          f"(|hf| >= 1e-3 max), normwise {normwise:.3e}, argmax agreement {agree:.1%}")
    per_pos = diff.amax(-1)
    worst = torch.topk(per_pos.flatten(), k=min(3, per_pos.numel()))
    print("  worst positions (b, t): " + ", ".join(
        f"({i // T}, {i % T}) {v:.2e}" for v, i in zip(worst.values.tolist(), worst.indices.tolist())))
    print(f"loss: ours {ours_loss:.8f}, HF {hf_loss:.8f}, rel err {loss_rel:.3e}")
    logits_ok = normwise <= args.rtol
    loss_ok = loss_rel <= args.rtol
    ok &= logits_ok and loss_ok
    print(f"tolerance: normwise logits and relative loss error <= {args.rtol:g} (fp32; see docstring)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
