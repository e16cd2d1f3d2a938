"""Logits of a Llama-family causal decoder (Hugging Face LlamaForCausalLM) for given token ids, by an independent
numpy forward pass in float64, written from the transformers definition (modeling_llama.py): RMSNorm, rotary
position embeddings in the rotate_half layout, grouped-query attention with a causal mask, SwiGLU MLP, final norm,
LM head (the token embedding when tie_word_embeddings). A test oracle only; WeightMark never runs Python.

  python3 scripts/oracles/llama_logits.py MODEL '[[ids...], ...]'

MODEL is a folder (config.json and one or more *.safetensors) or a .safetensors file with config.json beside it.
Prints a JSON list with, per sequence, the logits at every position (a list of rows of vocabulary size).
"""
import glob
import json
import os
import sys

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 checkpoints load)
import numpy as np
from safetensors.numpy import load_file


def load(model):
    folder = model if os.path.isdir(model) else os.path.dirname(model) or "."
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors"))) if os.path.isdir(model) else [model]
    weights = {}
    for f in files:
        weights.update({k: v.astype(np.float64) for k, v in load_file(f).items()})
    with open(os.path.join(folder, "config.json")) as fh:
        return weights, json.load(fh)


def forward(W, cfg, ids):
    if cfg.get("rope_scaling"):
        raise SystemExit("rope_scaling is not implemented by this oracle")
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    eps = cfg.get("rms_norm_eps", 1e-6)
    base = cfg.get("rope_theta", 10000.0)
    prefix = next(k for k in W if k.endswith("embed_tokens.weight"))[: -len("embed_tokens.weight")]

    def rms_norm(x, weight):
        variance = np.mean(x * x, axis=-1, keepdims=True)
        return weight * (x / np.sqrt(variance + eps))

    def linear(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    n = len(ids)
    # LlamaRotaryEmbedding: inv_freq = 1 / base^(arange(0, dim, 2) / dim); emb = cat(freqs, freqs).
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    freqs = np.outer(np.arange(n, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)  # (n, head_dim)

    def rotate_half(x):
        x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
        return np.concatenate([-x2, x1], axis=-1)

    def apply_rotary(x):  # x: (heads, n, head_dim)
        return x * cos[None] + rotate_half(x) * sin[None]

    causal = np.triu(np.ones((n, n), dtype=bool), k=1)
    x = W[prefix + "embed_tokens.weight"][ids]
    layer = 0
    while f"{prefix}layers.{layer}.self_attn.q_proj.weight" in W:
        p = f"{prefix}layers.{layer}."
        residual = x
        h = rms_norm(x, W[p + "input_layernorm.weight"])
        q = linear(h, p + "self_attn.q_proj").reshape(n, heads, head_dim).transpose(1, 0, 2)
        k = linear(h, p + "self_attn.k_proj").reshape(n, kv_heads, head_dim).transpose(1, 0, 2)
        v = linear(h, p + "self_attn.v_proj").reshape(n, kv_heads, head_dim).transpose(1, 0, 2)
        q, k = apply_rotary(q), apply_rotary(k)
        # repeat_kv: key/value head j serves query heads j*g … j*g + g − 1.
        k = np.repeat(k, heads // kv_heads, axis=0)
        v = np.repeat(v, heads // kv_heads, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim)
        scores = np.where(causal[None], -np.inf, scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        attn = (probs @ v).transpose(1, 0, 2).reshape(n, heads * head_dim)
        x = residual + linear(attn, p + "self_attn.o_proj")
        residual = x
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"])
        gate = linear(h, p + "mlp.gate_proj")
        x = residual + linear(gate / (1.0 + np.exp(-gate)) * linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        layer += 1
    h = rms_norm(x, W[prefix + "norm.weight"])
    if cfg.get("tie_word_embeddings", False):
        head = W[prefix + "embed_tokens.weight"]
    else:
        head = W[next(k for k in W if k.endswith("lm_head.weight"))]
    return h @ head.T


def main():
    model, sequences = sys.argv[1], json.loads(sys.argv[2])
    W, cfg = load(model)
    print(json.dumps([forward(W, cfg, ids).tolist() for ids in sequences]))


if __name__ == "__main__":
    main()
