"""Real fine-tuning attack on a (marked) MiniLM: all parameters, contrastive objective with in-batch negatives
(MultipleNegativesRanking: cross-entropy over scaled cosine similarities of each query with every positive in the
batch), AdamW with linear warmup and decay, on sentence pairs generated here (no download). Writes the fine-tuned
weights as safetensors (float32, same names) and a JSON report with the retrieval accuracy on held-out pairs before
and after. A benchmark tool only (JAX on the CPU); WeightMark never runs Python.

  python finetune.py --model MARKED.safetensors --vocab vocab.txt --out TUNED.safetensors --steps 1000 --lr 5e-5
  python finetune.py ... --refit          # REFIT-style: 10x the learning rate for the first 20% of the steps

The BERT forward pass follows Benchmarks/fidelity.py (post-LN encoder, exact GELU, mean pooling, L2 norm), batched
with an attention mask over padding.
"""
import argparse, json, os, random, sys, time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fidelity import tokenize  # noqa: E402

# --- Sentence pairs: the same event told with different words (synonyms, reordered), built from a small lexicon. ---
NOUNS = [["doctor", "physician"], ["car", "automobile"], ["child", "kid"], ["house", "home"], ["boat", "ship"],
         ["teacher", "instructor"], ["road", "street"], ["shop", "store"], ["film", "movie"], ["lawyer", "attorney"],
         ["dog", "puppy"], ["gift", "present"], ["rock", "stone"], ["hat", "cap"], ["bike", "bicycle"],
         ["couch", "sofa"], ["student", "pupil"], ["meal", "dinner"], ["city", "town"], ["boss", "manager"]]
VERBS = [["bought", "purchased"], ["fixed", "repaired"], ["saw", "watched"], ["broke", "smashed"], ["found", "discovered"],
         ["painted", "colored"], ["sold", "traded"], ["cleaned", "washed"], ["built", "constructed"], ["lost", "misplaced"],
         ["moved", "carried"], ["chose", "picked"]]
ADJS = [["big", "large"], ["small", "little"], ["old", "ancient"], ["fast", "quick"], ["happy", "cheerful"],
        ["angry", "furious"], ["rich", "wealthy"], ["tired", "exhausted"]]
PLACES = [["in the morning", "early in the day"], ["at night", "after dark"], ["near the river", "by the stream"],
          ["in the garden", "in the yard"], ["during the storm", "while it stormed"], ["on monday", "at the start of the week"]]

def sentences(a, n1, v, n2, p):
    s1 = f"the {ADJS[a][0]} {NOUNS[n1][0]} {VERBS[v][0]} the {NOUNS[n2][0]} {PLACES[p][0]}."
    s2 = f"{PLACES[p][1]}, a {ADJS[a][1]} {NOUNS[n1][1]} {VERBS[v][1]} a {NOUNS[n2][1]}."
    return s1, s2

def families(seed, count, exclude=()):
    """Families of pairs that differ only in the verb: (adjective, subject, object, place) chosen at random, distinct."""
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < count:
        f = (rng.randrange(len(ADJS)), rng.randrange(len(NOUNS)), rng.randrange(len(NOUNS)), rng.randrange(len(PLACES)))
        if f in seen or f[1] == f[2]:
            continue
        seen.add(f)
        out.append(f)
    return out

def family_pairs(f, verbs):
    a, n1, n2, p = f
    return [sentences(a, n1, v, n2, p) for v in verbs]

# --- Model. ---
def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + eps) * w + b

def encode(t, ids, mask, heads=12, layers=6):
    p = "embeddings."
    n = ids.shape[1]
    x = t[p + "word_embeddings.weight"][ids] + t[p + "position_embeddings.weight"][:n][None] + t[p + "token_type_embeddings.weight"][0]
    x = layer_norm(x, t[p + "LayerNorm.weight"], t[p + "LayerNorm.bias"])
    bsz, _, d = x.shape
    hd = d // heads
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    for i in range(layers):
        l = f"encoder.layer.{i}."
        lin = lambda h, name: h @ t[l + name + ".weight"].T + t[l + name + ".bias"]
        q, k, v = (lin(x, "attention.self." + s).reshape(bsz, n, heads, hd).transpose(0, 2, 1, 3) for s in ("query", "key", "value"))
        a = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(hd) + bias, axis=-1)
        c = (a @ v).transpose(0, 2, 1, 3).reshape(bsz, n, d)
        x = layer_norm(lin(c, "attention.output.dense") + x, t[l + "attention.output.LayerNorm.weight"], t[l + "attention.output.LayerNorm.bias"])
        h = jax.nn.gelu(lin(x, "intermediate.dense"), approximate=False)
        x = layer_norm(lin(h, "output.dense") + x, t[l + "output.LayerNorm.weight"], t[l + "output.LayerNorm.bias"])
    e = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

LENGTH = 32  # every batch padded to this many tokens: one compiled shape

def batch(texts, vocab):
    ids = [tokenize(s, vocab) for s in texts]
    n = LENGTH
    assert max(len(i) for i in ids) <= n, "sentence longer than LENGTH tokens"
    arr = np.zeros((len(ids), n), np.int32)
    mask = np.zeros((len(ids), n), np.float32)
    for k, i in enumerate(ids):
        arr[k, :len(i)] = i
        mask[k, :len(i)] = 1
    return jnp.asarray(arr), jnp.asarray(mask)

def retrieval_accuracy(params, pairs, vocab):
    """Fraction of held-out queries whose own paraphrase is the nearest of all held-out paraphrases (the pool holds
    whole families, so the closest distractors differ from the query in the verb only)."""
    enc = jax.jit(encode)
    def embed(texts):
        return np.concatenate([np.asarray(enc(params, *batch(texts[i:i + 64], vocab))) for i in range(0, len(texts), 64)])
    q, p = embed([s1 for s1, _ in pairs]), embed([s2 for _, s2 in pairs])
    return float((np.argmax(q @ p.T, axis=1) == np.arange(len(pairs))).mean())

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", help="JSON report path (default: OUT with .json)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear warmup")
    ap.add_argument("--refit", action="store_true", help="10x the learning rate for the first 20%% of the steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"{args.out} exists; remove it first")
    vocab = {w.rstrip("\n"): i for i, w in enumerate(open(args.vocab, encoding="utf-8"))}
    raw = load_file(args.model)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in raw.items() if v.dtype.kind == "f"}
    others = {k: v for k, v in raw.items() if v.dtype.kind != "f"}

    held_families = families(12345, 24)
    held = [pr for f in held_families for pr in family_pairs(f, range(len(VERBS)))]
    train_families = families(args.seed + 1, 2000, exclude=held_families)
    before = retrieval_accuracy(params, held, vocab)
    print(f"held-out retrieval accuracy before: {before:.4f} ({len(held)} pairs)", file=sys.stderr, flush=True)

    warm = max(1, int(args.warmup * args.steps))
    if args.refit:
        # REFIT-style: a high learning rate early (10x for the first 20% of the steps), then the base rate decaying.
        hi = max(1, int(0.2 * args.steps))
        schedule = optax.join_schedules([optax.constant_schedule(10 * args.lr),
                                         optax.linear_schedule(args.lr, 0.0, args.steps - hi)], [hi])
    else:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, args.lr, warm),
                                         optax.linear_schedule(args.lr, 0.0, args.steps - warm)], [warm])
    opt = optax.adamw(schedule, weight_decay=0.01)
    state = opt.init(params)

    def loss_fn(p, qa, qm, pa, pm):
        q, k = encode(p, qa, qm), encode(p, pa, pm)
        logits = 20.0 * q @ k.T
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(q.shape[0])).mean()

    @jax.jit
    def step(p, s, qa, qm, pa, pm):
        loss, g = jax.value_and_grad(loss_fn)(p, qa, qm, pa, pm)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = random.Random(args.seed)
    start, losses = time.time(), []
    for i in range(args.steps):
        # Two families, half a batch each: in-batch negatives include pairs that differ in the verb only.
        chosen = [pr for f in rng.sample(train_families, 2) for pr in family_pairs(f, rng.sample(range(len(VERBS)), args.batch // 2))]
        qa, qm = batch([s1 for s1, _ in chosen], vocab)
        pa, pm = batch([s2 for _, s2 in chosen], vocab)
        params, state, loss = step(params, state, qa, qm, pa, pm)
        losses.append(float(loss))
        if (i + 1) % 100 == 0:
            print(f"step {i + 1}/{args.steps}: loss {np.mean(losses[-100:]):.4f} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    after = retrieval_accuracy(params, held, vocab)
    out = {k: np.asarray(v, np.float32) for k, v in params.items()}
    out.update(others)
    save_file(out, args.out, metadata={"format": "pt"})
    num = sum(float(np.sum((np.asarray(params[k]) - raw[k].astype(np.float32)) ** 2)) for k in params if raw[k].ndim == 2)
    den = sum(float(np.sum(raw[k].astype(np.float32) ** 2)) for k in params if raw[k].ndim == 2)
    report = {"model": args.model, "output": args.out, "steps": args.steps, "lr": args.lr, "batch": args.batch,
              "schedule": "refit (10x lr for 20% of steps, then linear decay)" if args.refit else f"linear warmup {warm} steps, linear decay",
              "optimizer": "AdamW (weight decay 0.01)", "loss_first_100": float(np.mean(losses[:100])), "loss_last_100": float(np.mean(losses[-100:])),
              "retrieval_accuracy_before": before, "retrieval_accuracy_after": after, "held_out_pairs": len(held),
              "relative_weight_change": (num / den) ** 0.5, "seconds": time.time() - start}
    with open(args.report or os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))

if __name__ == "__main__":
    main()
