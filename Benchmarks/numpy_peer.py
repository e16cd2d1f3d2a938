#!/usr/bin/env python3
"""The WeightMark v1 algorithm written in numpy + safetensors, as a speed and memory peer.

Faithful to docs/FORMAT.md (format v1) and to the Swift implementation: HKDF-SHA256 subkeys over the same labels,
a ChaCha20 keystream (RFC 8439, zero nonce, counter 0), uniforms from 64-bit draws, Box-Muller Gaussians
(cos then sin), carriers orthonormalized by QR with diag(R) > 0, +-1 pattern from the low bit of 32-bit
words. Blind detection scores z = <Y,S>/|Y| with Y = A^T X B and combines with weights sqrt(m n), so on the
same model and key it reports the same Z as `weightmark detect` (checked by compare.py). Embedding adds
beta * A S B^T with delta = |dW|/|W| and writes bf16 with stochastic rounding, like `weightmark embed`.
Vectorized; numpy's own BLAS does the products.

  numpy_peer.py detect MODEL_DIR KEY_FILE
  numpy_peer.py embed MODEL_DIR KEY_FILE OUT_DIR DELTA
  numpy_peer.py score MODEL KEY_FILE [REFERENCE]     per-tensor evidence and combined Z as JSON (test oracle)
  numpy_peer.py carriers SECRET_HEX NAME ROWS COLS   A, B and S of one tensor as JSON (test oracle)

`score` takes a .safetensors file or a model folder; with REFERENCE it is informed detection, X = suspect -
reference, where an exact zero in the suspect over a non-zero reference is an erasure and scores as zero
(docs/FORMAT.md (format v1)).
"""
import json, math, os, sys, shutil, time
import numpy as np
import ml_dtypes
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from safetensors import safe_open
from safetensors.numpy import save_file

SALT = b"weightmark/v1/hkdf-salt"
RANK = 32


def subkey(secret, purpose, name, shape):
    info = f"weightmark/v1|{purpose}|{name}|{'x'.join(str(d) for d in shape)}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(secret)


def keystream_words(key, count):
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(enc.update(bytes(4 * count)), dtype="<u4")


def gaussians(secret, purpose, name, shape, count):
    n_pairs = (count + 1) // 2
    w = keystream_words(subkey(secret, purpose, name, shape), 4 * n_pairs).astype(np.uint64)
    u64 = w[0::2] | (w[1::2] << np.uint64(32))                      # two words per uniform, low word first
    u = ((u64 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    t = 2.0 * math.pi * u2
    g = np.empty(2 * n_pairs)
    g[0::2], g[1::2] = r * np.cos(t), r * np.sin(t)                 # cos first, then sin
    return g[:count].astype(np.float32)


def orthonormal(secret, purpose, name, shape, rows, cols):
    g = gaussians(secret, purpose, name, shape, rows * cols).reshape(rows, cols)
    q, r = np.linalg.qr(g)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0).astype(np.float32)


def carriers(secret, name, m, n):
    a, b = min(RANK, m), min(RANK, n)
    A = orthonormal(secret, "carrier-A", name, [m, n], m, a)
    B = orthonormal(secret, "carrier-B", name, [m, n], n, b)
    words = keystream_words(subkey(secret, "pattern-S", name, [m, n]), a * b)
    S = np.where(words & 1, 1.0, -1.0).astype(np.float32).reshape(a, b)
    return A, B, S


def selected(name, shape, dtype):
    low = name.lower()
    return (len(shape) == 2 and dtype in ("F32", "F16", "BF16", "F64") and shape[0] * shape[1] >= 65536
            and "norm" not in low and not low.endswith("bias"))


def shards(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        return sorted(set(json.load(open(idx))["weight_map"].values()))
    return ["model.safetensors"]


def header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return {k: v for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}


def load_key(path):
    return bytes.fromhex(json.load(open(path))["secret"])


def detect(model_dir, key_path):
    secret = load_key(key_path)
    num = den = 0.0
    count = 0
    for shard in shards(model_dir):
        path = os.path.join(model_dir, shard)
        info = header(path)
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                if not selected(name, info[name]["shape"], info[name]["dtype"]):
                    continue
                x = f.get_tensor(name).astype(np.float32)
                m, n = x.shape
                A, B, S = carriers(secret, name, m, n)
                Y = A.T @ (x @ B)
                z = float((Y * S).sum() / np.linalg.norm(Y))
                w = math.sqrt(m * n)
                num += w * z
                den += w * w
                count += 1
    Z = num / math.sqrt(den)
    print(json.dumps({"combinedZ": Z, "tensors": count}))


def embed(model_dir, key_path, out_dir, delta):
    secret = load_key(key_path)
    rng = np.random.default_rng(0)
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for shard in shards(model_dir):
        path = os.path.join(model_dir, shard)
        info = header(path)
        out = {}
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
            for name in f.keys():
                t = f.get_tensor(name)
                if selected(name, info[name]["shape"], info[name]["dtype"]):
                    w = t.astype(np.float32)
                    m, n = w.shape
                    A, B, S = carriers(secret, name, m, n)
                    P = (A @ S) @ B.T
                    beta = delta * np.linalg.norm(w) / np.linalg.norm(P)
                    w += np.float32(beta) * P
                    if t.dtype == ml_dtypes.bfloat16:       # stochastic rounding to bf16, as WeightMark does
                        bits = w.view(np.uint32)
                        up = (bits & 0xFFFF) > rng.integers(0, 1 << 16, size=bits.shape, dtype=np.uint32)
                        t = ((bits >> 16) + up).astype(np.uint16).view(ml_dtypes.bfloat16)
                    else:
                        t = w.astype(t.dtype)
                out[name] = np.ascontiguousarray(t)
        save_file(out, os.path.join(tmp, shard), metadata=meta)
        del out
    for extra in os.listdir(model_dir):
        if extra not in shards(model_dir):
            shutil.copy(os.path.join(model_dir, extra), os.path.join(tmp, extra))
    os.sync()
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)


def model_files(path):
    if os.path.isdir(path):
        return [os.path.join(path, s) for s in shards(path)]
    return [path]


def tensors_of(path):
    """name -> (file, dtype, shape) over every file of a model."""
    out = {}
    for f in model_files(path):
        for name, entry in header(f).items():
            out[name] = (f, entry["dtype"], entry["shape"])
    return out


def read_tensor(file, name):
    with safe_open(file, framework="numpy") as f:
        return f.get_tensor(name).astype(np.float32)


def score(model, key_path, reference=None):
    secret = load_key(key_path)
    suspect = tensors_of(model)
    ref = tensors_of(reference) if reference else None
    rows, num, den = [], 0.0, 0.0
    for name in sorted(suspect):
        file, dtype, shape = suspect[name]
        if not selected(name, shape, dtype) or (ref is not None and name not in ref):
            continue
        x = read_tensor(file, name)
        erased = 0
        if ref is not None:
            r = read_tensor(ref[name][0], name)
            mask = (x == 0) & (r != 0)
            erased = int(mask.sum())
            x = np.where(mask, np.float32(0), x - r)
        m, n = x.shape
        A, B, S = carriers(secret, name, m, n)
        Y = A.T @ (x @ B)
        corr, norm = float((Y * S).sum()), float(np.linalg.norm(Y))
        z = corr / norm if norm > 0 else 0.0
        w = math.sqrt(m * n)
        num += w * z
        den += w * w
        rows.append({"name": name, "shape": [m, n], "z": z, "correlation": corr, "norm": norm, "weight": w, "erased": erased})
    print(json.dumps({"combinedZ": num / math.sqrt(den) if den > 0 else 0.0, "tensors": rows}))


def dump_carriers(secret_hex, name, m, n):
    A, B, S = carriers(bytes.fromhex(secret_hex), name, m, n)
    print(json.dumps({"a": A.astype(float).tolist(), "b": B.astype(float).tolist(), "s": S.astype(float).tolist()}))


if __name__ == "__main__":
    if sys.argv[1] == "detect":
        detect(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif sys.argv[1] == "carriers":
        dump_carriers(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "embed":
        embed(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        sys.exit(__doc__)
