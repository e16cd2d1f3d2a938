"""Test oracle: the real llama.cpp (through llama-cpp-python, pinned in scripts/requirements-llama.txt) and
independent numpy references, driven by WeightMark's Swift tests. Never used by WeightMark itself.

Subcommands (each prints one JSON object on stdout; llama.cpp's own log goes to stderr):
  bert-compare GGUF MODEL_DIR     llama.cpp's sentence embeddings of SENTENCES vs a numpy BERT forward pass
  llama-compare GGUF MODEL_DIR    llama.cpp's last-token logits vs a numpy Llama forward pass
  quantize SRC DST FTYPE [--token-embedding-type T] [--imatrix MODEL_DIR]   llama_model_quantize
  dequant-types OUTDIR            rows quantized by ggml to every type; ggml's and gguf-py's dequantization
  decode GGUF OUT                 every tensor dequantized by gguf-py, written as an F32 GGUF with the same names
"""
import ctypes
import json
import os
import re
import sys
import unicodedata

import numpy as np

SENTENCES = [
    "eating food",
    "playing violin",
    "The cat sat on the mat.",
    "A watermark should survive quantization to four bits.",
    "llama.cpp runs models on CPUs.",
    "Stock markets fell sharply on Monday after the announcement.",
]


def log(*a):
    print(*a, file=sys.stderr)


# ---------------------------------------------------------------- numpy BERT (sentence-transformers MiniLM)

def load_safetensors(model_dir):
    from safetensors.numpy import load_file
    path = os.path.join(model_dir, "model.safetensors")
    return {k: v.astype(np.float32) for k, v in load_file(path).items()}


def wordpiece(text, vocab):
    """BERT's uncased basic tokenizer + greedy longest-match WordPiece (enough for plain ASCII/Latin text)."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words = re.findall(r"\w+|[^\w\s]", text)
    ids = [vocab["[CLS]"]]
    for w in words:
        start, pieces = 0, []
        while start < len(w):
            end, cur = len(w), None
            while start < end:
                sub = w[start:end] if start == 0 else "##" + w[start:end]
                if sub in vocab:
                    cur = sub
                    break
                end -= 1
            if cur is None:
                pieces = ["[UNK]"]
                break
            pieces.append(cur)
            start = end
        ids += [vocab[p] for p in pieces]
    return ids + [vocab["[SEP]"]]


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def bert_forward(W, cfg, ids, record=None):
    """Returns the token states; `record` (dict) collects Σx² and counts of every matmul input (an imatrix)."""
    eps = cfg.get("layer_norm_eps", 1e-12)
    heads = cfg["num_attention_heads"]
    n = len(ids)
    x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:n] \
        + W["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)

    def lin(name, inp, gguf):
        if record is not None:
            s = record.setdefault(gguf, [np.zeros(inp.shape[1], np.float64), 0])
            s[0] += (inp.astype(np.float64) ** 2).sum(0)
            s[1] += inp.shape[0]
        return inp @ W[name + ".weight"].T + W[name + ".bias"]

    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = lin(p + "attention.self.query", x, f"blk.{l}.attn_q.weight")
        k = lin(p + "attention.self.key", x, f"blk.{l}.attn_k.weight")
        v = lin(p + "attention.self.value", x, f"blk.{l}.attn_v.weight")
        d = q.shape[1] // heads
        q, k, v = (t.reshape(n, heads, d).transpose(1, 0, 2) for t in (q, k, v))
        a = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(n, heads * d)
        x = layer_norm(x + lin(p + "attention.output.dense", ctx, f"blk.{l}.attn_output.weight"),
                       W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"], eps)
        h = gelu(lin(p + "intermediate.dense", x, f"blk.{l}.ffn_up.weight"))
        x = layer_norm(x + lin(p + "output.dense", h, f"blk.{l}.ffn_down.weight"),
                       W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps)
    return x


def bert_reference(model_dir):
    W = load_safetensors(model_dir)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    vocab = {t: i for i, t in enumerate(open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8").read().split("\n")) if t}
    out = []
    for s in SENTENCES:
        ids = wordpiece(s, vocab)
        e = bert_forward(W, cfg, ids).mean(0)  # sentence-transformers: mean over all tokens, then L2 norm
        out.append((ids, e / np.linalg.norm(e)))
    return out


def bert_compare(gguf_path, model_dir):
    import llama_cpp
    m = llama_cpp.Llama(model_path=gguf_path, embedding=True, verbose=False, n_threads=2, n_ctx=128)
    cos, tokens_equal = [], True
    for s, (ids, ref) in zip(SENTENCES, bert_reference(model_dir)):
        toks = m.tokenize(s.encode(), add_bos=True)
        tokens_equal &= (toks == ids)
        e = np.array(m.embed(s), dtype=np.float64)
        e /= np.linalg.norm(e)
        cos.append(float(e @ ref))
    return {"min_cosine": min(cos), "cosines": cos, "tokens_equal": bool(tokens_equal)}


# ---------------------------------------------------------------- numpy Llama

def llama_compare(gguf_path, model_dir):
    """llama.cpp's logits at the last of a fixed token sequence vs an independent numpy forward pass of the
    Hugging Face weights (RMSNorm, rotate-half RoPE, SwiGLU, grouped-query attention)."""
    import llama_cpp
    W = load_safetensors(model_dir)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    eps, theta = cfg.get("rms_norm_eps", 1e-5), cfg.get("rope_theta", 10000.0)
    ids = [1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]  # <s> + arbitrary byte tokens
    n = len(ids)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    x = W["model.embed_tokens.weight"][ids]
    d = x.shape[1] // H
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(t):  # t: (heads, n, d)
        rot = np.concatenate([-t[..., d // 2:], t[..., :d // 2]], -1)
        return t * cos + rot * sin

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(n, H, d).transpose(1, 0, 2)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(n, KV, d).transpose(1, 0, 2)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(n, KV, d).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // KV, 0), np.repeat(v, H // KV, 0)
        a = q @ k.transpose(0, 2, 1) / np.sqrt(d) + mask
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + (a @ v).transpose(1, 0, 2).reshape(n, H * d) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    ref = rms(x, W["model.norm.weight"])[-1] @ W["lm_head.weight"].T

    m = llama_cpp.Llama(model_path=gguf_path, verbose=False, n_threads=2, n_ctx=64, logits_all=True)
    m.eval(ids)
    got = np.array(m.scores[n - 1], dtype=np.float64)
    c = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref)))
    return {"cosine": c, "argmax_equal": bool(int(got.argmax()) == int(ref.argmax())), "finite": bool(np.isfinite(got).all())}


# ---------------------------------------------------------------- llama.cpp's quantizer

def quantize(src, dst, ftype, token_embedding_type=None, imatrix_model=None):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 2
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype)
    if token_embedding_type:
        params.token_embedding_type = getattr(llama_cpp, "GGML_TYPE_" + token_embedding_type)
    keep = []
    if imatrix_model:
        # llama.cpp's imatrix tool records, per weight matrix, the mean of the squared activations entering it;
        # llama-cpp-python exposes no way to run it, so the same statistic comes from the numpy forward pass
        # over the calibration sentences and is handed to llama_model_quantize through its C API.
        W = load_safetensors(imatrix_model)
        cfg = json.load(open(os.path.join(imatrix_model, "config.json")))
        vocab = {t: i for i, t in enumerate(open(os.path.join(imatrix_model, "vocab.txt"), encoding="utf-8").read().split("\n")) if t}
        record = {}
        for s in SENTENCES:
            bert_forward(W, cfg, wordpiece(s, vocab), record)
        entries = (llama_cpp.llama_model_imatrix_data * (len(record) + 1))()
        for i, (name, (sq, count)) in enumerate(sorted(record.items())):
            data = np.ascontiguousarray((sq / count).astype(np.float32))
            keep += [data, name.encode()]
            entries[i].name = keep[-1]
            entries[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = data.size
        entries[len(record)].name = None
        keep.append(entries)
        params.imatrix = ctypes.cast(entries, type(params.imatrix))
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    return {"rc": int(rc)}


# ---------------------------------------------------------------- ggml's and gguf-py's dequantizers

class TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64), ("blck_size_interleave", ctypes.c_int64),
                ("type_size", ctypes.c_size_t), ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


def ggml_lib():
    import llama_cpp
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


TYPES = {"IQ2_XXS": 16, "IQ2_XS": 17, "IQ3_XXS": 18, "IQ1_S": 19, "IQ4_NL": 20, "IQ3_S": 21, "IQ2_S": 22, "IQ4_XS": 23,
         "IQ1_M": 29, "TQ1_0": 34, "TQ2_0": 35, "MXFP4": 39, "NVFP4": 40, "Q1_0": 41, "Q2_0": 42,
         "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q4_0": 2, "Q8_0": 8}


def dequant_types(outdir):
    import gguf
    lib = ggml_lib()
    rng = np.random.default_rng(7)
    rows, cols = 16, 1024
    # heavy-tailed rows with a spread of scales, like trained weights; ternary types get ternary-ish data
    x = (rng.standard_t(5, size=(rows, cols)) * np.exp(rng.normal(0, 0.5, size=(rows, 1))) * 0.02).astype(np.float32)
    imatrix = (rng.random(cols) + 0.1).astype(np.float32)
    result = {}
    for name, tid in TYPES.items():
        src = x if not name.startswith("TQ") else np.sign(np.round(x / 0.02)).astype(np.float32) * 0.02
        tr = lib.ggml_get_type_traits(tid).contents
        size = rows * cols // tr.blck_size * tr.type_size
        buf = np.zeros(size, np.uint8)
        imp = imatrix.ctypes.data if lib.ggml_quantize_requires_imatrix(tid) else None
        wrote = lib.ggml_quantize_chunk(tid, src.ctypes.data, buf.ctypes.data, 0, rows, cols, imp)
        assert wrote == size, (name, wrote, size)
        ref = np.zeros(rows * cols, np.float32)
        ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(tr.to_float)(
            buf.ctypes.data, ref.ctypes.data, rows * cols)
        buf.tofile(os.path.join(outdir, name + ".blocks"))
        ref.tofile(os.path.join(outdir, name + ".ggml.f32"))
        entry = {"id": tid, "count": rows * cols, "gguf_py": False}
        qt = getattr(gguf.GGMLQuantizationType, name, None)
        if qt is not None and int(qt) == tid:
            try:
                deq = gguf.quants.dequantize(buf.reshape(rows, -1), qt).astype(np.float32).reshape(-1)
                deq.tofile(os.path.join(outdir, name + ".gguf.f32"))
                entry["gguf_py"] = True
            except NotImplementedError:
                pass
        result[name] = entry
    return result


def decode(src, dst):
    """Every tensor of SRC dequantized by gguf-py, into an F32 GGUF with SRC's metadata and names."""
    import gguf
    r = gguf.GGUFReader(src)
    arch = str(bytes(r.fields["general.architecture"].parts[-1]), "utf-8")
    w = gguf.GGUFWriter(dst, arch)
    for field in r.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.alignment"):
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            vals = [str(bytes(field.parts[i]), "utf-8") if sub == gguf.GGUFValueType.STRING else field.parts[i].tolist()[0]
                    for i in field.data]
            w.add_array(field.name, vals)
        elif field.types[0] == gguf.GGUFValueType.STRING:
            w.add_string(field.name, str(bytes(field.parts[-1]), "utf-8"))
        else:
            w.add_key_value(field.name, field.parts[-1].tolist()[0], field.types[0])
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return {"tensors": len(r.tensors)}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "bert-compare":
        out = bert_compare(*args)
    elif cmd == "llama-compare":
        out = llama_compare(*args)
    elif cmd == "quantize":
        tet = args[args.index("--token-embedding-type") + 1] if "--token-embedding-type" in args else None
        im = args[args.index("--imatrix") + 1] if "--imatrix" in args else None
        out = quantize(args[0], args[1], args[2], tet, im)
    elif cmd == "dequant-types":
        out = dequant_types(*args)
    elif cmd == "decode":
        out = decode(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
