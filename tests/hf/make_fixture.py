#!/usr/bin/env python3
"""Self-test of hf_parity.py without Daedalus: a random tiny DeepseekV3 in the dumper's layout.

    .venv-hf/bin/python tests/hf/make_fixture.py OUT [--q-lora-rank N|none] [--reference hf|independent]
                                                    [--bug rope-half|bias-in-weights|no-group-limit]
    .venv-hf/bin/python tests/hf/make_fixture.py --self-test

Writes OUT/config.json (hand-written, the fields the C++ dumper writes), OUT/model.safetensors
(fp32, per-expert names, plus one fake MTP layer model.layers.{num_hidden_layers}.*) and
OUT/reference.safetensors (input_ids, logits, loss). The reference comes from HF itself
(--reference hf) or from an independent fp64 forward written here from the conventions read in
transformers' modeling_deepseek_v3.py (--reference independent, the default); --bug plants one
convention error in the independent forward, which hf_parity.py must then reject.
--self-test runs hf_parity.py on every variant and checks PASS / FAIL as expected.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent


def tiny_config(q_lora_rank, n_shared_experts):
    # Ragged, all-different sizes so that a swapped dimension cannot go unnoticed.
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 101,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,  # HF's default is 128: must be written
        "q_lora_rank": q_lora_rank,
        "kv_lora_rank": 20,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 12,
        "n_routed_experts": 8,
        "n_shared_experts": n_shared_experts,
        "num_experts_per_tok": 3,
        "n_group": 4,
        "topk_group": 2,
        "routed_scaling_factor": 2.5,  # floats must be JSON floats: HF's config is a strict dataclass
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "hidden_act": "silu",
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rope_interleave": True,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "attention_bias": False,
        "num_nextn_predict_layers": 1,
    }


def randomize(model, gen):
    """O(1) activations: weights ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.1), a nonzero router bias."""
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if "rotary_emb" in name:
                continue
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("e_score_correction_bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))


def dumper_weights(model, cfg, gen):
    """The state dict under the names our dumper writes: per-expert, plus a fake MTP layer."""
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len("gate_up_proj")]
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inter].clone()
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inter:].clone()
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e].clone()
        else:
            out[name] = t.clone()
    # MTP module k = 0 lives at model.layers.{L}: a decoder block plus enorm, hnorm, eh_proj, shared_head.norm.
    L, H = cfg["num_hidden_layers"], cfg["hidden_size"]
    for name in list(out):
        if name.startswith(f"model.layers.{L - 1}."):
            out[name.replace(f"model.layers.{L - 1}.", f"model.layers.{L}.", 1)] = out[name].clone()
    out[f"model.layers.{L}.enorm.weight"] = torch.ones(H)
    out[f"model.layers.{L}.hnorm.weight"] = torch.ones(H)
    out[f"model.layers.{L}.eh_proj.weight"] = torch.randn(H, 2 * H, generator=gen) / math.sqrt(2 * H)
    out[f"model.layers.{L}.shared_head.norm.weight"] = torch.ones(H)
    return {k: v.contiguous().float() for k, v in out.items()}


# ---- an independent forward, fp64, from the conventions of modeling_deepseek_v3.py -----------------

def rmsnorm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rope(x, theta, bug):
    """x [B, T, ..., d]. Pairs (x[2i], x[2i+1]) rotate by angle t * theta^(-2i/d), output kept
    interleaved (HF outputs the half layout [evens', odds']; q.k is the same either way)."""
    d, T = x.shape[-1], x.shape[1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq  # [T, d/2]
    shape = [1, T] + [1] * (x.dim() - 3) + [d // 2]
    cos, sin = angle.cos().view(shape), angle.sin().view(shape)
    if bug == "rope-half":  # the Llama convention: pairs (i, i + d/2)
        a, b = x[..., : d // 2], x[..., d // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


def mlp(x, w, prefix):
    return F.linear(F.silu(F.linear(x, w[prefix + "gate_proj.weight"])) * F.linear(x, w[prefix + "up_proj.weight"]),
                    w[prefix + "down_proj.weight"])


def attention(x, w, p, cfg):
    B, T, _ = x.shape
    nh, dn, dr, dv = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    if cfg["q_lora_rank"] is None:
        q = F.linear(x, w[p + "q_proj.weight"])
    else:  # the latent norms use eps 1e-6 whatever rms_norm_eps says
        q = F.linear(rmsnorm(F.linear(x, w[p + "q_a_proj.weight"]), w[p + "q_a_layernorm.weight"], 1e-6),
                     w[p + "q_b_proj.weight"])
    q = q.view(B, T, nh, dn + dr)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    ckv = F.linear(x, w[p + "kv_a_proj_with_mqa.weight"])
    c, k_pe = ckv[..., : cfg["kv_lora_rank"]], ckv[..., cfg["kv_lora_rank"]:]  # k_pe [B, T, dr]: one head
    kv = F.linear(rmsnorm(c, w[p + "kv_a_layernorm.weight"], 1e-6), w[p + "kv_b_proj.weight"]).view(B, T, nh, dn + dv)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    q_pe, k_pe = rope(q_pe, cfg["rope_theta"], cfg["bug"]), rope(k_pe, cfg["rope_theta"], cfg["bug"])
    scores = (torch.einsum("bthd,bshd->bhts", q_nope, k_nope) + torch.einsum("bthd,bsd->bhts", q_pe, k_pe))
    scores = scores / math.sqrt(dn + dr)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    o = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, nh * dv)
    return F.linear(o, w[p + "o_proj.weight"])


def moe(x, w, p, cfg):
    B, T, H = x.shape
    x = x.reshape(-1, H)
    E, G, k = cfg["n_routed_experts"], cfg["n_group"], cfg["num_experts_per_tok"]
    s = torch.sigmoid(F.linear(x, w[p + "gate.weight"]))
    biased = s + w[p + "gate.e_score_correction_bias"]
    out = mlp(x, w, p + "shared_experts.")
    for n in range(x.shape[0]):
        group_score = biased[n].view(G, E // G).topk(2).values.sum(-1)
        allowed = torch.zeros(E, dtype=torch.bool)
        groups = range(G) if cfg["bug"] == "no-group-limit" else group_score.topk(cfg["topk_group"]).indices
        for g in groups:
            allowed[g * (E // G):(g + 1) * (E // G)] = True
        chosen = biased[n].masked_fill(~allowed, float("-inf")).topk(k).indices
        weight = (biased if cfg["bug"] == "bias-in-weights" else s)[n, chosen]
        if cfg["norm_topk_prob"]:
            weight = weight / (weight.sum() + 1e-20)
        weight = weight * cfg["routed_scaling_factor"]
        for e, wt in zip(chosen.tolist(), weight):
            out[n] += wt * mlp(x[n], w, f"{p}experts.{e}.")
    return out.view(B, T, H)


def independent_forward(w, cfg, ids):
    w = {k: v.double() for k, v in w.items()}
    eps = cfg["rms_norm_eps"]
    h = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = h + attention(rmsnorm(h, w[p + "input_layernorm.weight"], eps), w, p + "self_attn.", cfg)
        x = rmsnorm(h, w[p + "post_attention_layernorm.weight"], eps)
        h = h + (mlp(x, w, p + "mlp.") if layer < cfg["first_k_dense_replace"] else moe(x, w, p + "mlp.", cfg))
    return F.linear(rmsnorm(h, w["model.norm.weight"], eps), w["lm_head.weight"])


def next_token_loss(logits, ids):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


def make(out, q_lora_rank, n_shared_experts, reference, bug, seed=1234):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(q_lora_rank, n_shared_experts)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = torch.Generator().manual_seed(seed)
    model = DeepseekV3ForCausalLM(DeepseekV3Config.from_pretrained(out, attn_implementation="eager")).eval()
    randomize(model, gen)
    weights = dumper_weights(model, cfg, gen)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})

    ids = torch.randint(0, cfg["vocab_size"], (2, 13), generator=gen)
    with torch.no_grad():
        hf_logits = model(input_ids=ids).logits.float()
        ind_logits = independent_forward(weights, dict(cfg, bug=bug), ids)
    gap = (ind_logits - hf_logits.double()).abs().max().item() / hf_logits.abs().max().item()
    print(f"make_fixture: {out}: q_lora_rank={q_lora_rank}, bug={bug}; normwise |independent fp64 - HF fp32| "
          f"= {gap:.2e}")
    logits = hf_logits if reference == "hf" else ind_logits.float()
    loss = next_token_loss(logits.double(), ids).float()
    save_file({"input_ids": ids, "logits": logits.contiguous(), "loss": loss}, str(out / "reference.safetensors"))
    return gap


def self_test():
    variants = [  # (q_lora_rank, n_shared_experts, reference, bug, expected exit code of hf_parity.py)
        (24, 1, "hf", None, 0),
        (24, 1, "independent", None, 0),
        (None, 2, "independent", None, 0),
        (24, 1, "independent", "rope-half", 1),
        (24, 1, "independent", "bias-in-weights", 1),
        (24, 1, "independent", "no-group-limit", 1),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (q, shared, reference, bug, expected) in enumerate(variants):
            out = Path(tmp) / f"case{i}"
            make(out, q, shared, reference, bug)
            run = subprocess.run([sys.executable, str(HERE / "hf_parity.py"), str(out)], capture_output=True, text=True)
            print(run.stdout, end="")
            verdict = "ok" if run.returncode == expected else "WRONG"
            failures += run.returncode != expected
            print(f"self-test: q_lora_rank={q} reference={reference} bug={bug}: hf_parity exit {run.returncode}, "
                  f"expected {expected}: {verdict}\n")
    print(f"self-test: {len(variants) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--q-lora-rank", default="24", help="an integer or 'none'")
    parser.add_argument("--n-shared-experts", type=int, default=1)
    parser.add_argument("--reference", choices=["hf", "independent"], default="independent")
    parser.add_argument("--bug", choices=["rope-half", "bias-in-weights", "no-group-limit"])
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if args.out is None:
        parser.error("OUT is required without --self-test")
    q = None if args.q_lora_rank.lower() in ("none", "null") else int(args.q_lora_rank)
    make(args.out, q, args.n_shared_experts, args.reference, args.bug, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
