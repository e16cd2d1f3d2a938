"""Writes PyTorch checkpoints exactly as torch.save (>= 1.6) lays them out, without torch installed.

Test oracle and benchmark helper only; WeightMark never runs Python. No CPU-only torch wheel is reachable
from PyPI here (the default wheel pulls gigabytes of CUDA libraries), so the zip-pickle layout is produced
with the standard library's pickle and zipfile modules:

  <prefix>/data.pkl          pickle protocol 2 of the state dict: collections.OrderedDict, tensors as
                             torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()),
                             storages as persistent ids ('storage', torch.<X>Storage, key, 'cpu', numel)
  <prefix>/.format_version, <prefix>/.storage_alignment, <prefix>/byteorder
  <prefix>/data/<key>        raw little-endian storage bytes, one entry per storage
  <prefix>/version, <prefix>/.data/serialization_id
Entries are stored (not deflated); each entry's data starts 64-byte aligned (padding in the local header's
extra field, as torch's miniz writer does). `pickletools.dis` of data.pkl is checked after writing.

Stand-ins for torch's classes and functions are registered under their real module names so that pickle
writes the same GLOBAL opcodes torch would ('torch FloatStorage', 'torch._utils _rebuild_tensor_v2').

Usage:
  torch_layout.py from-safetensors IN.safetensors|FOLDER OUT.bin [--prefix P] [--no-align] [--zip64]
                  [--transpose NAME ...] [--share NAME ...] [--wrap model]
  torch_layout.py from-safetensors IN OUT_FOLDER --shards K   (pytorch_model-0000i-of-0000K.bin + index)
  torch_layout.py meta HF_FOLDER OUT_FOLDER --shards K
  torch_layout.py big OUT.bin --gigabytes G
"""
import argparse
import collections
import io
import json
import os
import pickle
import pickletools
import struct
import sys
import types
import zipfile

import numpy as np

# --- stand-ins for torch's globals, registered so pickle names them as torch does ---------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils

STORAGE_FOR = {}
for _name, _dt in [("FloatStorage", "float32"), ("HalfStorage", "float16"), ("BFloat16Storage", "bfloat16"),
                   ("DoubleStorage", "float64"), ("LongStorage", "int64"), ("IntStorage", "int32"),
                   ("ShortStorage", "int16"), ("CharStorage", "int8"), ("ByteStorage", "uint8"), ("BoolStorage", "bool")]:
    _cls = type(_name, (), {})
    _cls.__module__ = "torch"
    _cls.__qualname__ = _name
    setattr(torch, _name, _cls)
    STORAGE_FOR[_dt] = _cls


def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
    raise RuntimeError("stand-in")


_rebuild_tensor_v2.__module__ = "torch._utils"
_rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Storage:
    def __init__(self, key, array):
        self.key = key
        self.array = np.ascontiguousarray(array).reshape(-1)


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            dt = str(obj.array.dtype)
            return ("storage", STORAGE_FOR[dt], obj.key, "cpu", obj.array.size)
        return None


def dtype_name(a):
    return str(a.dtype)


def pickled(obj):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    pickletools.dis(data, out=io.StringIO())  # raises on a malformed stream
    return data


def collect_storages(obj, out):
    if isinstance(obj, Tensor):
        out.setdefault(obj.storage.key, obj.storage)
    elif isinstance(obj, dict):
        for v in obj.values():
            collect_storages(v, out)
    return out


def write_archive(path, obj, prefix="archive", align=True, zip64_everywhere=False, pickle_bytes=None, extra_entries=()):
    """Writes obj (a dict whose tensors are Tensor objects) in torch.save's zip layout."""
    data_pkl = pickle_bytes if pickle_bytes is not None else pickled(obj)
    storages = collect_storages(obj, {})
    records = [(f"{prefix}/data.pkl", data_pkl), (f"{prefix}/.format_version", b"1"),
               (f"{prefix}/.storage_alignment", b"64"), (f"{prefix}/byteorder", b"little")]
    for key, st in storages.items():
        records.append((f"{prefix}/data/{key}", st.array))
    records += [(f"{prefix}/version", b"3\n"), (f"{prefix}/.data/serialization_id", b"0123456789012345678901234567890123456789")]
    records += list(extra_entries)
    saved = zipfile.ZIP64_LIMIT
    if zip64_everywhere:
        zipfile.ZIP64_LIMIT = 0  # the real zipfile module then writes ZIP64 extra fields and end records
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, payload in records:
                write_entry(zf, name, payload, align)
    finally:
        zipfile.ZIP64_LIMIT = saved
    if align:
        check_alignment(path)


def write_entry(zf, name, payload, align):
    size = payload.nbytes if isinstance(payload, np.ndarray) else len(payload)
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT
    if align:
        header = 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
        pad = (-(zf.fp.tell() + header)) % 64
        info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with zf.open(info, "w", force_zip64=zip64) as dest:
        if isinstance(payload, np.ndarray):
            view = memoryview(payload.reshape(-1).view(np.uint8))
            for start in range(0, len(view), 1 << 26):
                dest.write(view[start:start + (1 << 26)])
        else:
            dest.write(payload)


def check_alignment(path):
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            f.seek(info.header_offset + 26)
            n, e = struct.unpack("<HH", f.read(4))
            start = info.header_offset + 30 + n + e
            assert start % 64 == 0, (info.filename, start)


def load_safetensors(path):
    from safetensors.numpy import load_file
    import ml_dtypes  # noqa: F401  (bf16 support)
    if os.path.isdir(path):
        idx = os.path.join(path, "model.safetensors.index.json")
        files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else [
            f for f in sorted(os.listdir(path)) if f.endswith(".safetensors")]
        out = {}
        for f in files:
            out.update(load_file(os.path.join(path, f)))
        return out
    return load_file(path)


def state_dict(arrays, transpose=(), share=()):
    """OrderedDict of Tensor views. Names in `transpose` are stored as the transpose of a contiguous storage
    (a non-contiguous view, as torch saves `w.t()`); names in `share` become two halves of one storage."""
    sd = collections.OrderedDict()
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    key = 0
    for name, a in arrays.items():
        if name in transpose and a.ndim == 2:
            st = Storage(str(key), np.ascontiguousarray(a.T))
            sd[name] = Tensor(st, 0, a.shape, (1, a.shape[0]))
        elif name in share and a.ndim == 2 and a.shape[0] % 2 == 0:
            st = Storage(str(key), a)
            half = a.shape[0] // 2
            sd[name + ".top"] = Tensor(st, 0, (half, a.shape[1]), (a.shape[1], 1))
            sd[name + ".bottom"] = Tensor(st, half * a.shape[1], (half, a.shape[1]), (a.shape[1], 1))
        else:
            st = Storage(str(key), a)
            stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
            sd[name] = Tensor(st, 0, a.shape, stride)
        key += 1
    return sd


def cmd_from_safetensors(args):
    arrays = load_safetensors(args.input)
    if args.shards:
        # A Hugging Face sharded folder: pytorch_model-0000i-of-0000k.bin + pytorch_model.bin.index.json.
        os.makedirs(args.output, exist_ok=True)
        names = list(arrays)
        k = args.shards
        weight_map = {}
        for s in range(k):
            part = names[s * len(names) // k:(s + 1) * len(names) // k]
            fname = f"pytorch_model-{s + 1:05d}-of-{k:05d}.bin"
            write_archive(os.path.join(args.output, fname), state_dict({n: arrays[n] for n in part}), prefix=f"pytorch_model-{s + 1:05d}-of-{k:05d}")
            weight_map.update({n: fname for n in part})
        total = sum(a.nbytes for a in arrays.values())
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
                  open(os.path.join(args.output, "pytorch_model.bin.index.json"), "w"), indent=2)
        return
    sd = state_dict(arrays, transpose=set(args.transpose or []), share=set(args.share or []))
    obj = sd
    if args.wrap:
        obj = {args.wrap: sd, "epoch": 3, "optimizer": {"lr": 0.001, "betas": [0.9, 0.999]}}
    write_archive(args.output, obj, prefix=args.prefix, align=not args.no_align, zip64_everywhere=args.zip64)


HF_TO_META = {
    "self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight", "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
ROWS = ("wq", "wk", "wv", "w1", "w3")
COLS = ("wo", "w2")


def meta_name(hf):
    if hf == "model.embed_tokens.weight":
        return "tok_embeddings.weight"
    if hf == "model.norm.weight":
        return "norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".", 3)  # model, layers, N, rest
    return f"layers.{parts[2]}.{HF_TO_META[parts[3]]}"


def hf_to_meta_rows(w, heads):
    """Inverse of the HF conversion's rotary permutation: w.view(h, 2, d1/h/2, d2).transpose(1, 2).reshape(d1, d2)."""
    d1, d2 = w.shape
    return np.ascontiguousarray(w.reshape(heads, 2, d1 // heads // 2, d2).transpose(0, 2, 1, 3).reshape(d1, d2))


def cmd_meta(args):
    cfg = json.load(open(os.path.join(args.input, "config.json")))
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    arrays = load_safetensors(args.input)
    k = args.shards
    shards = [collections.OrderedDict() for _ in range(k)]
    for hf, w in arrays.items():
        name = meta_name(hf)
        if name.endswith("attention.wq.weight"):
            w = hf_to_meta_rows(w, heads)
        if name.endswith("attention.wk.weight"):
            w = hf_to_meta_rows(w, kv)
        short = name.split(".")[-2]
        if w.ndim == 2 and (short in ROWS or name == "output.weight"):
            parts = np.split(w, k, axis=0)
        elif w.ndim == 2 and (short in COLS or name == "tok_embeddings.weight"):
            parts = np.split(w, k, axis=1)
        else:
            parts = [w] * k
        for s in range(k):
            shards[s][name] = np.ascontiguousarray(parts[s])
    head_dim = cfg["hidden_size"] // heads
    rope = (1.0 / (10000 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype(np.float32)
    os.makedirs(args.output, exist_ok=True)
    for s in range(k):
        shards[s]["rope.freqs"] = rope
        sd = {}
        for key, (name, a) in enumerate(shards[s].items()):
            stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
            sd[name] = Tensor(Storage(str(key), a), 0, a.shape, stride)
        write_archive(os.path.join(args.output, f"consolidated.{s:02d}.pth"), sd, prefix=f"consolidated.{s:02d}")
    params = {"dim": cfg["hidden_size"], "multiple_of": 256, "n_heads": heads, "n_kv_heads": kv,
              "n_layers": cfg["num_hidden_layers"], "norm_eps": cfg.get("rms_norm_eps", 1e-5), "vocab_size": cfg["vocab_size"]}
    json.dump(params, open(os.path.join(args.output, "params.json"), "w"))


def cmd_big(args):
    """One f32 matrix of about G gigabytes plus a small one (for the inspect timing; ZIP64 beyond 4 GB)."""
    cols = 4096
    rows = int(args.gigabytes * (1 << 30)) // (4 * cols)
    big = np.full((rows, cols), 0.01, np.float32)  # contents do not matter for the inspect timing
    sd = collections.OrderedDict()
    sd["model.big.weight"] = Tensor(Storage("0", big), 0, big.shape, (cols, 1))
    sd["model.small.weight"] = Tensor(Storage("1", np.ones((8, 8), np.float32)), 0, (8, 8), (8, 1))
    write_archive(args.output, sd)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("from-safetensors")
    a.add_argument("input"); a.add_argument("output")
    a.add_argument("--prefix", default="archive"); a.add_argument("--no-align", action="store_true")
    a.add_argument("--zip64", action="store_true"); a.add_argument("--transpose", nargs="*")
    a.add_argument("--share", nargs="*"); a.add_argument("--wrap")
    a.add_argument("--shards", type=int, help="write a Hugging Face sharded folder with this many .bin files")
    m = sub.add_parser("meta")
    m.add_argument("input"); m.add_argument("output"); m.add_argument("--shards", type=int, required=True)
    b = sub.add_parser("big")
    b.add_argument("output"); b.add_argument("--gigabytes", type=float, default=2.0)
    args = p.parse_args()
    {"from-safetensors": cmd_from_safetensors, "meta": cmd_meta, "big": cmd_big}[args.cmd](args)


if __name__ == "__main__":
    main()
