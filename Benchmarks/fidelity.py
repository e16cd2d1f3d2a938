"""Fidelity of a marked MiniLM (BERT) model: sentence embeddings of the marked weights against the original's.

An independent numpy forward pass of sentence-transformers/all-MiniLM-L6-v2 (WordPiece tokenizer from vocab.txt,
BERT encoder, mean pooling, L2 normalization), run on a fixed set of sentences for two safetensors files. Prints
JSON: the minimum and mean cosine similarity over the sentences. A test oracle and benchmark tool only; never
used by WeightMark at run time.

  python3 Benchmarks/fidelity.py ORIGINAL.safetensors MARKED.safetensors VOCAB.txt
"""
import json, sys, unicodedata
import numpy as np
from safetensors.numpy import load_file

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is playing a violin.",
    "The new movie is awesome and everyone loved it!",
    "Watermarks help prove where leaked model weights came from.",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "She sells seashells by the seashore, 3 times a day.",
    "Neural networks approximate functions with layers of weights.",
    "It rained all night, so the football match was cancelled.",
    "Can you recommend a good Italian restaurant nearby?",
]

def tokenize(text, vocab):
    words, word = [], ""
    for ch in unicodedata.normalize("NFD", text.lower()):
        if unicodedata.category(ch) == "Mn":
            continue
        if ch.isspace():
            if word: words.append(word); word = ""
        elif unicodedata.category(ch).startswith("P") or ch in "$+<=>^`|~":
            if word: words.append(word); word = ""
            words.append(ch)
        else:
            word += ch
    if word: words.append(word)
    ids = [vocab["[CLS]"]]
    for w in words:
        start, pieces = 0, []
        while start < len(w):
            end = len(w)
            while end > start:
                piece = ("##" if start > 0 else "") + w[start:end]
                if piece in vocab: break
                end -= 1
            if end == start: pieces = [vocab["[UNK]"]]; break
            pieces.append(vocab[piece]); start = end
        ids += pieces
    return ids + [vocab["[SEP]"]]

def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b

def gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))

def embed(weights, ids, heads=12):
    t = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype != np.int64}
    p = "embeddings."
    x = t[p + "word_embeddings.weight"][ids] + t[p + "position_embeddings.weight"][: len(ids)] + t[p + "token_type_embeddings.weight"][0]
    x = layer_norm(x, t[p + "LayerNorm.weight"], t[p + "LayerNorm.bias"])
    n, d = x.shape
    hd = d // heads
    for i in range(6):
        l = f"encoder.layer.{i}."
        lin = lambda h, name: h @ t[l + name + ".weight"].T + t[l + name + ".bias"]
        q, k, v = (lin(x, "attention.self." + s).reshape(n, heads, hd).transpose(1, 0, 2) for s in ("query", "key", "value"))
        a = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
        c = (a @ v).transpose(1, 0, 2).reshape(n, d)
        x = layer_norm(lin(c, "attention.output.dense") + x, t[l + "attention.output.LayerNorm.weight"], t[l + "attention.output.LayerNorm.bias"])
        h = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(lin(h, "output.dense") + x, t[l + "output.LayerNorm.weight"], t[l + "output.LayerNorm.bias"])
    e = x.mean(0)
    return e / np.linalg.norm(e)

def main():
    original, marked, vocab_path = sys.argv[1:4]
    vocab = {w.rstrip("\n"): i for i, w in enumerate(open(vocab_path, encoding="utf-8"))}
    a, b = load_file(original), load_file(marked)
    cos = [float(embed(a, tokenize(s, vocab)) @ embed(b, tokenize(s, vocab))) for s in SENTENCES]
    print(json.dumps({"sentences": len(cos), "minCosine": min(cos), "meanCosine": sum(cos) / len(cos)}))

if __name__ == "__main__":
    main()
