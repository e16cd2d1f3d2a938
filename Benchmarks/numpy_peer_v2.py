#!/usr/bin/env python3
"""Format v2 blind detection written from docs/FORMAT.md alone, in numpy: an independent check of the Swift Z.

Implements the spec's carriers (HKDF-SHA256 subkeys, ChaCha20 keystream, Box-Muller Gaussians, QR with
diag(R) > 0), the per-position ChaCha20 patterns, the tile grid, the re-packaging hypotheses, the pilot rules that
choose among them, and the pooled statistic. Computes in float64 (the Swift code in float32), so Z agrees to
float rounding.

  numpy_peer_v2.py score MODEL KEY_FILE      {"combinedZ": Z, "tensors": N, "hypotheses": {name: hypothesis}}

MODEL is a .safetensors file or a folder of them. KEY_FILE is a WeightMark key file (`secret`: the key the model was
marked with) or a release's opening (`releaseSecret`: the release subkey, docs/FORMAT.md "Releases and commitments").
"""
import json, math, os, re, sys
import numpy as np
import ml_dtypes  # noqa: F401  (registers bfloat16 for safetensors' numpy loader)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from safetensors import safe_open

G, A = 128, 32
SALT = b"weightmark/v1/hkdf-salt"


def subkey(secret, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(secret)


def keystream(key, nonce12, nbytes):
    # cryptography's ChaCha20 takes a 16-byte nonce = LE32 block counter || RFC 8439 nonce.
    enc = Cipher(algorithms.ChaCha20(key, b"\0\0\0\0" + nonce12), mode=None).encryptor()
    return np.frombuffer(enc.update(bytes(nbytes)), dtype="<u4")


def carrier(secret):
    count = G * A
    w = keystream(subkey(secret, b"weightmark/v2|tile-carrier"), bytes(12), 8 * count).astype(np.uint64)
    u64 = w[0::2] | (w[1::2] << np.uint64(32))
    u = ((u64 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
    r, t = np.sqrt(-2.0 * np.log(u[0::2])), 2.0 * math.pi * u[1::2]
    g = np.empty(count)
    g[0::2], g[1::2] = r * np.cos(t), r * np.sin(t)
    g = g.astype(np.float32).astype(np.float64).reshape(G, A)   # the Gaussians are single precision in the spec
    q, rr = np.linalg.qr(g)
    return q * np.where(np.diag(rr) < 0, -1.0, 1.0)


class Patterns:
    def __init__(self, secret):
        self.key, self.cache = subkey(secret, b"weightmark/v2|tile-pattern"), {}

    def __call__(self, pos):
        if pos not in self.cache:
            i, j = pos
            words = keystream(self.key, i.to_bytes(4, "little") + j.to_bytes(4, "little") + bytes(4), 4 * A)
            bits = (words[:, None] >> np.arange(A, dtype=np.uint32)[None, :]) & 1
            self.cache[pos] = np.where(bits == 1, 1.0, -1.0)
        return self.cache[pos]


def tiles(count):
    return (count + G - 1) // G


def extent(index, count):
    return min(G, count - index * G)


def pilot(pos):
    return (pos[0] + 3 * pos[1]) % 8 == 0


def unit(y):
    n = np.linalg.norm(y)
    return y / n if n > 0 and np.isfinite(n) else None


class Matrix:
    """One suspect matrix: the column-tile projections Z_j = X[:, tile j] U[0:c] and its stored tiles."""

    def __init__(self, name, x, U):
        self.name, (self.m, self.n), self.U = name, x.shape, U
        x = np.where(np.isfinite(x), x, 0.0)       # non-finite values are erasures
        self.Z = [x[:, j * G:j * G + extent(j, self.n)] @ U[:extent(j, self.n)] for j in range(tiles(self.n))]
        self.cache = {}

    def tile(self, rows, j):
        return unit(self.U[:len(rows)].T @ self.Z[j][rows])

    def stored(self, i, j):
        if (i, j) not in self.cache:
            self.cache[(i, j)] = self.tile(np.arange(i * G, i * G + extent(i, self.m)), j)
        return self.cache[(i, j)]


def head_sizes(model):
    """The suspect's head size from a config.json / params.json next to it (FORMAT.md, step 3), else 64 and 128."""
    folder = model if os.path.isdir(model) else os.path.dirname(model) or "."
    for file, sizes, heads in (("config.json", ("hidden_size", "n_embd", "d_model"), ("num_attention_heads", "n_head", "n_heads")),
                               ("params.json", ("dim",), ("n_heads",))):
        path = os.path.join(folder, file)
        try:
            if os.path.getsize(path) > 1 << 20: continue
            cfg = json.load(open(path))
        except (OSError, ValueError):
            continue
        if not isinstance(cfg, dict): continue
        def integer(keys):
            for k in keys:
                v = cfg.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v > 0: return int(v)
            return None
        hd = integer(("head_dim",))
        if hd is None:
            d, h = integer(sizes), integer(heads)
            if d and h and d % h == 0: hd = d // h
        if hd and 16 <= hd <= 1024 and hd % 2 == 0: return (hd,)
    return (64, 128)


def hypotheses(m, n, hds=(64, 128)):
    out = []
    for o in ("stored", "transposed"):
        rm, rn = (m, n) if o == "stored" else (n, m)
        out.append((o, "offset", (0, 0)))
        if rm % G == 0:
            out += [(o, "offset", (s * rm // G, 0)) for s in range(1, 8)]
        elif o == "stored":
            out += [(o, "rowshift", s * rm) for s in range(1, 8)]
        if rn % G == 0:
            out += [(o, "offset", (0, s * rn // G)) for s in range(1, 8)]
        splits = []
        if rm % 2 == 0: splits.append((rm // 2, rm // 2))
        if rm % 3 == 0: splits.append((rm // 3,) * 3)
        if rm > rn and (rm - rn) % 2 == 0 and rm != 3 * rn: splits.append((rn, (rm - rn) // 2, (rm - rn) // 2))
        for s in splits:
            if not all(v > 0 for v in s): continue
            starts = np.cumsum((0,) + s[:-1])
            if o == "transposed" and any(v % G for v in starts): continue
            out.append((o, "blocks", s))
        if o != "stored": continue
        out += [(o, "interleaved", hd) for hd in hds if rm % (3 * hd) == 0]
        out += [(o, "rotary", hd) for hd in hds if rm % hd == 0]
    return out


def row_maps(kind, arg, m):
    if kind == "blocks":
        starts = np.cumsum((0,) + arg[:-1])
        return [np.arange(s, s + size) for s, size in zip(starts, arg)]
    if kind == "interleaved":
        heads = m // (3 * arg)
        return [np.concatenate([np.arange((3 * t + b) * arg, (3 * t + b + 1) * arg) for t in range(heads)]) for b in range(3)]
    if kind == "rotary":   # marked row t*hd + e*hd/2 + k is stored row t*hd + 2k + e
        rho = np.arange(m)
        t, within = rho // arg, rho % arg
        return [t * arg + 2 * (within % (arg // 2)) + within // (arg // 2)]
    raise ValueError(kind)


def scores(mat, h, keep):
    """(position, weight, unit tile) of every tile `h` reads whose position `keep` accepts."""
    o, kind, arg = h
    m, n, out = mat.m, mat.n, []
    def add(pos, y, r, c):
        if y is not None: out.append((pos, math.sqrt(r * c), y))
    if kind == "offset" and o == "stored":
        for i in range(tiles(m)):
            for j in range(tiles(n)):
                pos = (i + arg[0], j + arg[1])
                if keep(pos): add(pos, mat.stored(i, j), extent(i, m), extent(j, n))
    elif kind == "rowshift":   # marked row = stored row + arg; rows of a tile the suspect lacks read as zero
        for i in range(arg // G, (arg + m - 1) // G + 1):
            present = [(t, i * G + t - arg) for t in range(G) if 0 <= i * G + t - arg < m]
            ts, rs = [t for t, _ in present], [r for _, r in present]
            for j in range(tiles(n)):
                pos = (i, j)
                if keep(pos): add(pos, unit(mat.U[ts].T @ mat.Z[j][rs]), len(present), extent(j, n))
    elif kind == "offset":
        for i in range(tiles(m)):
            for j in range(tiles(n)):
                pos = (j + arg[0], i + arg[1])
                if keep(pos):
                    y = mat.stored(i, j)
                    add(pos, None if y is None else y.T, extent(j, n), extent(i, m))
    elif o == "transposed":   # fused blocks of the transposed matrix, on tile boundaries
        start = 0
        for size in arg:
            for q in range(tiles(size)):
                sj = start // G + q
                for i in range(tiles(m)):
                    pos = (q, i)
                    if keep(pos) and sj < tiles(n):
                        y = mat.stored(i, sj)
                        add(pos, None if y is None else y.T, extent(sj, n), extent(i, m))
            start += size
    else:
        for rows in row_maps(kind, arg, m):
            mb = len(rows)
            for i in range(tiles(mb)):
                r = extent(i, mb)
                rl = rows[i * G:i * G + r]
                for j in range(tiles(n)):
                    pos = (i, j)
                    if keep(pos): add(pos, mat.tile(rl, j), r, extent(j, n))
    return out


def name_pattern(name):
    return re.sub(r"[0-9]+", "#", name)


def announced_readings(pattern, hyps, m, n, orientation):
    """The hypotheses a name pattern announces (FORMAT.md, step 4, "Announced layouts"), in step 3's order."""
    parts = pattern.lower().split(".")
    interleaved = "query_key_value" in parts
    qkv = interleaved or any(c in ("c_attn", "in_proj_weight") or "qkv" in c for c in parts)
    gate_up = any("gate_up" in c for c in parts)
    rotary = any(c in ("wq", "wk") for c in parts)
    out = []
    for h in hyps:
        o, kind, arg = h
        width = n if o == "stored" else m
        if (kind == "blocks" and ((qkv and len(arg) == 3 and arg[0] == width) or (gate_up and len(arg) == 2))) \
                or (kind == "interleaved" and interleaved) or (kind == "rotary" and rotary):
            out.append(h)
    if any(h[1] == "interleaved" for h in out):
        out = [h for h in out if h[1] != "blocks"]
    oriented = [h for h in out if h[0] == orientation]
    return oriented or out


def score(model, key_path):
    key = json.load(open(key_path))
    secret = bytes.fromhex(key["releaseSecret"] if "releaseSecret" in key else key["secret"])
    U, S = carrier(secret), Patterns(secret)
    hds = head_sizes(model)
    files = [model] if os.path.isfile(model) else sorted(os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors"))
    mats = []
    for path in files:
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                x = f.get_tensor(name)
                if x.ndim == 2 and x.dtype.kind == "f" and x.shape[0] * x.shape[1] >= 65536:
                    mats.append(Matrix(name, x.astype(np.float64), U))
    # Pass 1: pilot sums of every hypothesis, per matrix.
    pil = []
    for mat in mats:
        d = {}
        for h in hypotheses(mat.m, mat.n, hds):
            num = den2 = 0.0
            for pos, w, y in scores(mat, h, pilot):
                num += w * float((y * S(pos)).sum()); den2 += w * w
            d[h] = (num, den2)
        pil.append(d)
    def pilot_z(idx, h):
        num = sum(pil[k][h][0] for k in idx if h in pil[k]); den2 = sum(pil[k][h][1] for k in idx if h in pil[k])
        return num / math.sqrt(den2) if den2 > 0 else 0.0
    I, T = ("stored", "offset", (0, 0)), ("transposed", "offset", (0, 0))
    groups = {}
    for k, mat in enumerate(mats): groups.setdefault((mat.m, mat.n), []).append(k)
    largest = max(groups, key=lambda s: len(groups[s]) * s[0] * s[1])
    prefers_t = lambda idx: pilot_z(idx, T) > pilot_z(idx, I) + 3
    everything = list(range(len(mats)))
    global_t = prefers_t(everything)
    dense_t = global_t or prefers_t([k for k in everything if (mats[k].m, mats[k].n) != largest])
    def shard_h(shape, rows, s):
        extent = shape[0] if rows else shape[1]
        if rows and extent % G: return ("stored", "rowshift", s * extent)
        if extent % G: return None
        return ("stored", "offset", (s * extent // G, 0) if rows else (0, s * extent // G))
    def pooled(pairs):
        num = sum(pil[k][h][0] for k, h in pairs if h in pil[k]); den2 = sum(pil[k][h][1] for k, h in pairs if h in pil[k])
        return num / math.sqrt(den2) if den2 > 0 else 0.0
    shard, best_z = None, -math.inf
    if not global_t and not dense_t:
        for rows in (True, False):
            for s in range(1, 8):
                applies = [(k, shard_h((m.m, m.n), rows, s)) for k, m in enumerate(mats) if shard_h((m.m, m.n), rows, s)]
                if not applies: continue
                z = pooled(applies)
                if (z >= 3 and z > pooled([(k, I) for k, _ in applies]) and z > pooled([(k, T) for k, _ in applies])
                        and z > best_z): best_z, shard = z, (rows, s)
    choice_of_shape = {}
    for shape, members in groups.items():
        base = T if global_t or (dense_t and shape != largest) else ((shard and shard_h(shape, *shard)) or I)
        best, best_score = base, pilot_z(members, base)
        for h in hypotheses(*shape, hds):
            if h == base: continue
            s = pilot_z(members, h) - (1.5 if h in (I, T) else 4.0)
            if s > best_score: best, best_score = h, s
        choice_of_shape[shape] = best
    sub = {}
    for k, mat in enumerate(mats): sub.setdefault(((mat.m, mat.n), name_pattern(mat.name)), []).append(k)
    choice = {}
    for (shape, pattern), members in sub.items():
        coarse = choice_of_shape[shape]
        announced = announced_readings(pattern, hypotheses(*shape, hds), shape[0], shape[1], coarse[0])
        if announced:
            coarse = announced[0]
            for h in announced[1:]:
                if pilot_z(members, h) > pilot_z(members, coarse): coarse = h
        best, best_score = coarse, pilot_z(members, coarse) + 3
        for h in hypotheses(*shape, hds):
            if h != coarse and pilot_z(members, h) > best_score: best, best_score = h, pilot_z(members, h)
        for k in members: choice[k] = best
    # Pass 2: the other positions, pooled.
    pooled = {}
    for k, mat in enumerate(mats):
        for pos, w, y in scores(mat, choice[k], lambda p: not pilot(p)):
            pooled[pos] = pooled.get(pos, 0.0) + w * y
    num = sum(float((c * S(p)).sum()) for p, c in pooled.items())
    den2 = sum(float((c * c).sum()) for c in pooled.values())
    return {"combinedZ": num / math.sqrt(den2) if den2 > 0 else 0.0, "tensors": len(mats), "scoredPositions": len(pooled),
            "hypotheses": {mats[k].name: str(choice[k]) for k in range(len(mats))}}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "score":
        print(json.dumps(score(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(__doc__)
