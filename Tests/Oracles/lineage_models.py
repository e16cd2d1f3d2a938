"""Trains the small real models that `weightmark lineage` is tested on (test oracle; never used by WeightMark).

  lineage_models.py OUT_DIR      trains every model below and writes OUT_DIR/<name>/ (config.json + model.safetensors,
                                 float32, via save_pretrained) and OUT_DIR/manifest.json; does nothing when
                                 OUT_DIR/manifest.json already carries this script's VERSION

All models are transformers.LlamaForCausalLM (vocab 256 bytes, hidden 64, FFN 256, 4 layers, 4 heads, untied head),
trained on the bytes of this Python's standard library sources (sorted *.py under dirname(os.__file__), no
site-packages, concatenated, first 3 MB). Split A = first 2 MB minus its last 64 KB (training), the last 64 KB of A
is held out for eval_loss_on_A; split B = the last 1 MB (fine-tuning).

  seed0 .. seed7     independent: init seed 0..7, the SAME batch order on A, the same recipe (AdamW lr 3e-3 constant,
                     betas (0.7, 0.95), weight decay 0.01, batch 16 x 64 bytes, BASE_STEPS steps): only the
                     initialization differs
  ft-small           seed0 + 200 steps on B at lr 1e-4  (ft-small, ft-large and lora-merged read one B batch order)
  ft-large           seed0 + BASE_STEPS steps on B at lr 1e-3
  lora-merged        seed0 + rank-8 LoRA (q,k,v,o,gate,up,down; A random, B zero) trained 300 steps on B at lr 1e-3,
                     merged (W + B@A) and saved as a plain Llama
  pruned-retrained   seed0 with the 50% FFN units of smallest ||up row||*||down column|| dropped per layer (survivors
                     keep their order, intermediate_size 128), + 200 steps on A at lr 1e-3
  layers-dropped     seed0's layers [0, 1, 3] (3 layers), + 150 steps on A at lr 1e-3  (both retrainings read a
                     second batch order on A, not seed0's)
  ft-merge           the 50/50 weight average of seed0 and ft-large
  distilled          NOT a weight derivative: a fresh init (seed 100) trained BASE_STEPS steps on seed0's batch order
                     to match seed0's next-byte distribution (KL, temperature 1)

manifest.json: {"version", "corpus", "recipe", "total_seconds", "models": [{name, kind ("independent" | "derivative" |
"distilled"), parent (or null), description, final_train_loss (mean of the last 20 steps' objective; KL for distilled,
null for ft-merge), eval_loss_on_A (nats/byte), seconds}]}.

Deterministic (one thread, fixed seeds, batch order from fixed numpy RNGs). Training runs a functional forward pass
that is checked against LlamaForCausalLM's own forward on every saved model. The output is built in OUT_DIR.tmp-<pid>
and renamed into place, so an interrupted run leaves no half cache. Whole run: about 110 s on one core.
"""
import os
import time

T_START = time.time()   # the printed total includes importing torch and transformers
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import hashlib
import inspect
import json
import math
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

VERSION = 1

CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=False, rms_norm_eps=1e-5)
BATCH, SEQ = 16, 64
BASE_STEPS = 50            # the most that fits 120 s: the fixed-length derivatives and 15 evals take ~80 s
BASE_LR = 3e-3
BETAS = (0.7, 0.95)         # lower than torch's (0.9, 0.999): about 0.1 nats better eval loss after 100 steps
WEIGHT_DECAY = 0.01
LAST = 20                   # final_train_loss averages this many last steps
CORPUS_BYTES, A_BYTES, EVAL_BYTES = 3 << 20, 2 << 20, 64 << 10
SEED_BASE_A, SEED_FT_B, SEED_MORE_A = 1234, 2345, 3456   # numpy RNG seeds of the batch streams
LORA_RANK, LORA_ALPHA = 8, 8     # alpha = rank: the merge is exactly W + B@A (PEFT's default scale, 1)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data

def corpus():
    root = os.path.dirname(os.__file__)
    paths = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "site-packages"]
        paths += [os.path.join(d, f) for f in files if f.endswith(".py")]
    paths.sort()
    buf, used = bytearray(), 0
    for p in paths:
        with open(p, "rb") as f:
            buf += f.read()
        used += 1
        if len(buf) >= CORPUS_BYTES:
            break
    if len(buf) < CORPUS_BYTES:
        raise SystemExit("standard library under %s has only %d bytes of .py" % (root, len(buf)))
    data = bytes(buf[:CORPUS_BYTES])
    info = {"root": root, "python": sys.version.split()[0], "files": used, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64), info


def stream(split, seed, steps):
    """`steps` batches [BATCH, SEQ+1] of random windows of `split`, in an order fixed by `seed`."""
    offsets = np.random.default_rng(seed).integers(0, len(split) - SEQ - 1, size=(steps, BATCH))
    for row in offsets:
        yield torch.from_numpy(split[row[:, None] + np.arange(SEQ + 1)])


def eval_batches(held_out):
    """Non-overlapping windows (stride SEQ): every held-out byte after the first is predicted exactly once."""
    starts = np.arange(0, len(held_out) - SEQ, SEQ)
    windows = torch.from_numpy(held_out[starts[:, None] + np.arange(SEQ + 1)])
    return list(windows.split(8))   # 8 windows per forward: fastest on one core (cache sized)


# ---------------------------------------------------------------- functional Llama (same math as LlamaForCausalLM)

def n_layers(p):
    return len({k.split(".")[2] for k in p if k.startswith("model.layers.")})


_rope = {}


def rope_tables(head_dim, length, theta=10000.0):
    if (head_dim, length) not in _rope:
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv)
        emb = torch.cat([freqs, freqs], -1)
        _rope[head_dim, length] = (emb.cos(), emb.sin())
    return _rope[head_dim, length]


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + CONFIG["rms_norm_eps"]) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def forward(p, ids, lora=None):
    """Logits [B, T, 256] of the Llama whose weights are the dict p (HF names); lora maps a linear's weight name to
    (A [r, in], B [out, r]): that linear uses W + (alpha/r) B A (one [out, r] x [r, in] product per step is cheaper
    here than the side path x A^T B^T)."""
    heads = CONFIG["num_attention_heads"]
    bsz, t = ids.shape
    hd = CONFIG["hidden_size"] // heads
    cos, sin = rope_tables(hd, t)
    scale = LORA_ALPHA / LORA_RANK

    def lin(name, x):
        if lora is not None and name in lora:
            a, b = lora[name]
            return F.linear(x, p[name] + scale * (b @ a))
        return F.linear(x, p[name])

    h = F.embedding(ids, p["model.embed_tokens.weight"])
    for i in range(n_layers(p)):
        pre = "model.layers.%d." % i
        x = rms(h, p[pre + "input_layernorm.weight"])
        q, k, v = (lin(pre + "self_attn.%s_proj.weight" % n, x).view(bsz, t, heads, hd).transpose(1, 2) for n in "qkv")
        a = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True)
        h = h + lin(pre + "self_attn.o_proj.weight", a.transpose(1, 2).reshape(bsz, t, heads * hd))
        x = rms(h, p[pre + "post_attention_layernorm.weight"])
        h = h + lin(pre + "mlp.down_proj.weight", F.silu(lin(pre + "mlp.gate_proj.weight", x)) * lin(pre + "mlp.up_proj.weight", x))
    return F.linear(rms(h, p["model.norm.weight"]), p["lm_head.weight"])


def cross_entropy(p, batch, lora=None):
    logits = forward(p, batch[:, :-1], lora)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def eval_loss(p, batches):
    total, count = 0.0, 0
    with torch.inference_mode():
        for b in batches:
            logits = forward(p, b[:, :-1])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
            count += b[:, 1:].numel()
    return total / count


# ---------------------------------------------------------------- models and training

def hf_config(**overrides):
    from transformers import LlamaConfig
    return LlamaConfig(**{**CONFIG, **overrides})


def fresh(seed):
    """The default initialization of LlamaForCausalLM (normal(0, initializer_range), norms 1) under seed."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in LlamaForCausalLM(hf_config()).state_dict().items()}


def copy(p):
    return {k: v.detach().clone() for k, v in p.items()}


def train(p, batches, lr, objective=cross_entropy, trainable=None):
    """AdamW at a constant lr on the tensors `trainable` (default: all of p); returns the mean of the last LAST losses."""
    trainable = list(p.values()) if trainable is None else trainable
    for t in trainable:
        t.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=lr, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=True)  # fused: ~3 ms/step less
    losses = []
    for batch in batches:
        loss = objective(p, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for t in trainable:
        t.requires_grad_(False)
    return float(np.mean(losses[-LAST:]))


def lora_finetune(base, batches, lr):
    p = copy(base)
    gen = torch.Generator().manual_seed(7)
    lora = {}
    for i in range(n_layers(p)):
        for n in LINEARS:
            name = "model.layers.%d.%s.weight" % (i, n)
            out_f, in_f = p[name].shape
            # A: kaiming-uniform like PEFT's default; B: zeros, so training starts exactly at the base model
            bound = 1.0 / math.sqrt(in_f)
            lora[name] = ((torch.rand(LORA_RANK, in_f, generator=gen) * 2 - 1) * bound, torch.zeros(out_f, LORA_RANK))
    loss = train(p, batches, lr, objective=lambda q, b: cross_entropy(q, b, lora),
                 trainable=[t for ab in lora.values() for t in ab])
    scale = LORA_ALPHA / LORA_RANK
    for name, (a, b) in lora.items():
        p[name] = p[name] + scale * (b @ a)
    return p, loss


def prune_ffn(base, keep_fraction=0.5):
    p = copy(base)
    for i in range(n_layers(p)):
        pre = "model.layers.%d.mlp." % i
        up, down = p[pre + "up_proj.weight"], p[pre + "down_proj.weight"]
        score = up.norm(dim=1) * down.norm(dim=0)
        keep = torch.topk(score, int(up.shape[0] * keep_fraction)).indices.sort().values
        p[pre + "gate_proj.weight"] = p[pre + "gate_proj.weight"][keep].clone()
        p[pre + "up_proj.weight"] = up[keep].clone()
        p[pre + "down_proj.weight"] = down[:, keep].clone()
    return p


def drop_layers(base, keep):
    p = {k: v.clone() for k, v in base.items() if not k.startswith("model.layers.")}
    for new, old in enumerate(keep):
        old_pre, new_pre = "model.layers.%d." % old, "model.layers.%d." % new
        for k, v in base.items():
            if k.startswith(old_pre):
                p[new_pre + k[len(old_pre):]] = v.clone()
    return p


def distill_objective(teacher):
    def objective(p, batch):
        ids = batch[:, :-1]
        with torch.no_grad():
            target = F.log_softmax(forward(teacher, ids), -1).reshape(-1, CONFIG["vocab_size"])
        student = F.log_softmax(forward(p, ids), -1).reshape(-1, CONFIG["vocab_size"])
        return F.kl_div(student, target, log_target=True, reduction="batchmean")
    return objective


def save(p, directory, check_batch):
    """Writes p as a LlamaForCausalLM and checks that the library's forward agrees with the functional one."""
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM(hf_config(intermediate_size=p["model.layers.0.mlp.up_proj.weight"].shape[0],
                                       num_hidden_layers=n_layers(p)))
    model.load_state_dict({k: v.contiguous() for k, v in p.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        diff = (model(input_ids=check_batch[:, :-1]).logits - forward(p, check_batch[:, :-1])).abs().max().item()
    if diff > 1e-4:
        raise SystemExit("%s: transformers' forward differs from the training forward by %g" % (directory, diff))
    kwargs = {"safe_serialization": True} if "safe_serialization" in inspect.signature(model.save_pretrained).parameters else {}
    model.save_pretrained(directory, **kwargs)   # transformers 5 always writes model.safetensors


# ---------------------------------------------------------------- main

def build(out_dir):
    data, corpus_info = corpus()
    split_a, split_b = data[:A_BYTES], data[A_BYTES:]
    train_a, held_out = split_a[:-EVAL_BYTES], split_a[-EVAL_BYTES:]
    evals = eval_batches(held_out)
    models, rows = {}, []

    def record(name, kind, parent, description, p, loss, t0):
        models[name] = p
        ev = eval_loss(p, evals)
        save(p, os.path.join(out_dir, name), evals[0])
        rows.append({"name": name, "kind": kind, "parent": parent, "description": description,
                     "final_train_loss": None if loss is None else round(loss, 5), "eval_loss_on_A": round(ev, 5),
                     "seconds": round(time.time() - t0, 2)})
        log("%-17s %-12s eval %.4f  train %s  %5.1f s" % (name, kind, ev, "-" if loss is None else "%.4f" % loss,
                                                            time.time() - t0))

    for seed in range(8):
        t0 = time.time()
        p = fresh(seed)
        loss = train(p, stream(train_a, SEED_BASE_A, BASE_STEPS), BASE_LR)
        record("seed%d" % seed, "independent", None,
               "init seed %d, %d steps on A at lr %g (batch order shared by all seeds)" % (seed, BASE_STEPS, BASE_LR),
               p, loss, t0)

    base = models["seed0"]
    t0 = time.time()
    p = copy(base)
    loss = train(p, stream(split_b, SEED_FT_B, 200), 1e-4)
    record("ft-small", "derivative", "seed0", "seed0 + 200 steps on B at lr 1e-4", p, loss, t0)

    t0 = time.time()
    p = copy(base)
    loss = train(p, stream(split_b, SEED_FT_B, BASE_STEPS), 1e-3)
    record("ft-large", "derivative", "seed0", "seed0 + %d steps on B at lr 1e-3" % BASE_STEPS, p, loss, t0)

    t0 = time.time()
    p, loss = lora_finetune(base, stream(split_b, SEED_FT_B, 300), 1e-3)
    record("lora-merged", "derivative", "seed0",
           "seed0 + LoRA rank %d alpha %d on q,k,v,o,gate,up,down, 300 steps on B at lr 1e-3, merged" % (LORA_RANK, LORA_ALPHA),
           p, loss, t0)

    t0 = time.time()
    p = prune_ffn(base)
    loss = train(p, stream(train_a, SEED_MORE_A, 200), 1e-3)
    record("pruned-retrained", "derivative", "seed0",
           "seed0 with half of each FFN's units (smallest ||up row||*||down col||) dropped, order kept, "
           "intermediate_size 128, + 200 steps on A at lr 1e-3", p, loss, t0)

    t0 = time.time()
    p = drop_layers(base, [0, 1, 3])
    loss = train(p, stream(train_a, SEED_MORE_A, 150), 1e-3)
    record("layers-dropped", "derivative", "seed0", "seed0 layers [0, 1, 3] (3 layers) + 150 steps on A at lr 1e-3",
           p, loss, t0)

    t0 = time.time()
    p = {k: 0.5 * (base[k] + models["ft-large"][k]) for k in base}
    record("ft-merge", "derivative", "seed0", "50/50 weight average of seed0 and ft-large", p, None, t0)

    t0 = time.time()
    p = fresh(100)
    loss = train(p, stream(train_a, SEED_BASE_A, BASE_STEPS), BASE_LR, objective=distill_objective(base))
    record("distilled", "distilled", None,
           "fresh init seed 100, %d steps on seed0's batch order at lr %g minimizing KL(seed0 || student), T=1; "
           "final_train_loss is that KL" % (BASE_STEPS, BASE_LR), p, loss, t0)

    total = time.time() - T_START
    manifest = {
        "version": VERSION, "corpus": corpus_info,
        "recipe": {"config": CONFIG, "batch": BATCH, "seq": SEQ, "base_steps": BASE_STEPS, "base_lr": BASE_LR,
                   "schedule": "constant", "optimizer": "AdamW(betas=%s, weight_decay=%g)" % (BETAS, WEIGHT_DECAY),
                   "split_a": [0, A_BYTES - EVAL_BYTES], "held_out": [A_BYTES - EVAL_BYTES, A_BYTES],
                   "split_b": [A_BYTES, CORPUS_BYTES]},
        "total_seconds": round(total, 1), "models": rows,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def cached(out_dir):
    try:
        with open(os.path.join(out_dir, "manifest.json")) as f:
            return json.load(f).get("version") == VERSION
    except (OSError, ValueError):
        return False


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out_dir = os.path.abspath(sys.argv[1])
    if cached(out_dir):
        log("%s: up to date (version %d)" % (out_dir, VERSION))
        return
    if os.path.exists(out_dir) and os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, "manifest.json")):
        raise SystemExit("%s exists and is not a lineage-models cache; not replacing it" % out_dir)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tmp = "%s.tmp-%d" % (out_dir, os.getpid())
    os.makedirs(tmp)
    try:
        manifest = build(tmp)
        if cached(out_dir):          # another process finished first
            return
        if os.path.exists(out_dir):  # stale version: move aside, then replace
            old = "%s.old-%d" % (out_dir, os.getpid())
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%-17s %-12s %9s %9s %8s" % ("name", "kind", "eval", "train", "seconds"))
    for r in manifest["models"]:
        train_loss = "-" if r["final_train_loss"] is None else "%.4f" % r["final_train_loss"]
        print("%-17s %-12s %9.4f %9s %8.1f" % (r["name"], r["kind"], r["eval_loss_on_A"], train_loss, r["seconds"]))
    print("total %.1f s (ln 256 = %.4f)" % (time.time() - T_START, math.log(256)))


if __name__ == "__main__":
    main()
