"""Writes a corpus of malicious and malformed checkpoints for WeightMark's container tests.

Usage: malicious_corpus.py OUT_DIR MARKER_PATH
Writes OUT_DIR/<case>.<ext> and OUT_DIR/cases.json: [{"file", "expect", "payload"}], where "expect" is a
substring the error must contain and "payload" says the file carries code that would create MARKER_PATH if it
were unpickled. Before writing, every payload is proven live: Python's own pickle.loads runs it in a child
process against a scratch marker, which must then exist (so a test that finds no marker proves something).
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch_layout as tl  # noqa: E402

P = pickle


def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def unicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def binint(i):
    return b"J" + struct.pack("<i", i)


def long1(i):
    n = (i.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + i.to_bytes(n, "little", signed=True)


def call(module, name, *arg_ops):
    """GLOBAL module.name, MARK args TUPLE, REDUCE."""
    return op_global(module, name) + b"(" + b"".join(arg_ops) + b"tR"


def wrap_dict(value_ops):
    """{'w': <value>} at protocol 2."""
    return b"\x80\x02}" + unicode("w") + value_ops + b"s."


def storage_pid(cls="FloatStorage", key="0", numel=16):
    return b"(" + unicode("storage") + op_global("torch", cls) + unicode(key) + unicode("cpu") + long1(numel) + b"tQ"


def tensor(shape, stride, offset=0, numel=16, key="0", cls="FloatStorage"):
    shape_ops = b"(" + b"".join(long1(s) for s in shape) + b"t"
    stride_ops = b"(" + b"".join(long1(s) for s in stride) + b"t"
    hooks = op_global("collections", "OrderedDict") + b")R"
    return (op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage_pid(cls, key, numel) + long1(offset)
            + shape_ops + stride_ops + b"\x89" + hooks + b"tR")


def torch_zip(pickle_bytes, storage=None, storage_key="0", extra=()):
    """A torch.save-style archive around the given data.pkl bytes."""
    buf = io.BytesIO()
    records = [("archive/data.pkl", pickle_bytes), ("archive/byteorder", b"little")]
    if storage is not None:
        records.append((f"archive/data/{storage_key}", storage))
    records += [("archive/version", b"3\n")] + list(extra)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in records:
            tl.write_entry(zf, name, data, align=True)
    return buf.getvalue()


def valid_archive():
    return torch_zip(wrap_dict(tensor((4, 4), (4, 1))), storage=np.zeros(16, np.float32).tobytes())


def eocd(data):
    return data.rfind(b"PK\x05\x06")


def central(data):
    e = eocd(data)
    return struct.unpack_from("<I", data, e + 16)[0]


def patch(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def payload_cases(marker):
    touch = f"touch {marker}"
    write = f"open({marker!r}, 'w').close()"
    return {
        "reduce_os_system": (wrap_dict(call("os", "system", unicode(touch))), "would import os.system"),
        "reduce_posix_system": (wrap_dict(call("posix", "system", unicode(touch))), "would import posix.system"),
        "reduce_builtins_eval": (wrap_dict(call("builtins", "eval", unicode(write))), "would import builtins.eval"),
        "reduce_builtins_exec": (wrap_dict(call("builtins", "exec", unicode(write))), "would import builtins.exec"),
        # getattr(__import__('os'), 'system')('touch …')
        "getattr_chain": (wrap_dict(
            op_global("builtins", "getattr") + b"(" + call("builtins", "__import__", unicode("os")) + unicode("system") + b"tR"
            + b"(" + unicode(touch) + b"tR"), "would import builtins.getattr"),
        "stack_global_os_system": (b"\x80\x04}" + unicode("w") + unicode("os") + unicode("system") + b"\x93(" + unicode(touch)
                                   + b"tRs.", "would import os.system"),
        "subprocess_popen": (wrap_dict(call("subprocess", "check_call", b"(" + unicode("touch") + unicode(marker) + b"l")),
                             "would import subprocess.check_call"),
        "inst_opcode_os_system": (b"\x80\x02}" + unicode("w") + b"(" + unicode(touch) + b"ios\nsystem\ns.", "would import os.system"),
        "payload_after_valid_tensor": (b"\x80\x02}(" + unicode("ok") + tensor((4, 4), (4, 1)) + unicode("w")
                                       + call("os", "system", unicode(touch)) + b"u.", "would import os.system"),
    }


def prove_live(cases):
    """Runs each payload with the real pickle module in a child process and checks that it creates the marker."""
    for name, (pkl, _) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            marker = os.path.join(d, "marker")
            live = payload_cases(marker)[name][0]
            code = ("import pickle,sys,types\n"
                    "t=types.ModuleType('torch');u=types.ModuleType('torch._utils');sys.modules['torch']=t;sys.modules['torch._utils']=u\n"
                    "u._rebuild_tensor_v2=lambda *a: None\n"
                    "class S: pass\n"
                    "t.FloatStorage=S\n"
                    "class U(pickle.Unpickler):\n"
                    "    def persistent_load(self, pid): return None\n"
                    "import io\n"
                    "try: U(io.BytesIO(sys.stdin.buffer.read())).load()\n"
                    "except Exception as e: print('load raised', e)\n")
            subprocess.run([sys.executable, "-c", code], input=live, check=True, capture_output=True)
            assert os.path.exists(marker), f"payload {name} is not live"


def main():
    out, marker = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    cases = []

    def add(name, data, expect, payload=False, ext="bin"):
        path = os.path.join(out, f"{name}.{ext}")
        with open(path, "wb") as f:
            f.write(data)
        cases.append({"file": path, "expect": expect, "payload": payload})

    payloads = payload_cases(marker)
    prove_live(payloads)
    for name, (pkl, expect) in payloads.items():
        add(name, torch_zip(pkl), expect, payload=True)
    add("bare_pickle_os_system", payloads["reduce_posix_system"][0], "would import posix.system", payload=True, ext="pkl")

    store = np.zeros(16, np.float32).tobytes()
    pk = lambda body: torch_zip(wrap_dict(body), storage=store)  # noqa: E731
    add("unknown_class_reduce", torch_zip(wrap_dict(call("__main__", "Exploit", unicode("x")))), "would import __main__.Exploit")
    add("newobj_opcode", torch_zip(wrap_dict(op_global("collections", "OrderedDict") + b")\x81")), "NEWOBJ")
    add("obj_opcode", torch_zip(wrap_dict(b"(" + op_global("collections", "OrderedDict") + b"o")), "OBJ")
    add("ext1_opcode", torch_zip(wrap_dict(b"\x82\x01")), "EXT1")
    add("text_int_opcode", torch_zip(wrap_dict(b"I1\n")), "INT")
    add("memo_unset_slot", torch_zip(wrap_dict(b"h\x07")), "memo slot 7")
    add("memo_self_append_cycle", torch_zip(b"\x80\x02}" + unicode("w") + b"]q\x00h\x00as."), "already placed inside another")
    add("memo_mutate_after_use", torch_zip(b"\x80\x02}" + unicode("w") + b"}q\x00s" + b"h\x00" + unicode("k") + tensor((4, 4), (4, 1)) + b"s0."),
        "already placed inside another")
    add("recursion_bomb_tuples", torch_zip(wrap_dict(b")" + b"\x85" * 100_000)), "nest deeper than 100")
    add("recursion_bomb_lists", torch_zip(wrap_dict(b"(" * 50_000 + b"]" + b"l" * 50_000)), "nest deeper than 100")
    # Each level refers twice to the previous dict: 2^60 paths if a reader walked them all.
    laughs = b"\x80\x02}q\x00"
    for i in range(1, 61):
        laughs += b"}" + b"r" + struct.pack("<I", i) + b"(" + unicode("a") + b"j" + struct.pack("<I", i - 1) + unicode("b") + b"j" + struct.pack("<I", i - 1) + b"u"
    add("shared_dict_billion_laughs", torch_zip(laughs + b"."), "holds no tensors")
    add("truncated_pickle", torch_zip(wrap_dict(tensor((4, 4), (4, 1)))[:-20]), "pickle")
    add("persistent_id_not_storage", pk(b"(" + unicode("module") + unicode("x") + b"\x86Q"), "persistent id")
    add("storage_shorter_than_view", pk(tensor((8, 8), (8, 1))), "reach element 63, but the storage holds 16")
    add("negative_stride", pk(tensor((4, 4), (-4, 1), offset=15)), "negative stride")
    add("overflowing_stride", pk(tensor((4, 4), (1 << 62, 1))), "overflows")
    add("negative_offset", pk(tensor((4, 4), (4, 1), offset=-1)), "negative storage offset")
    add("overflowing_offset", pk(tensor((4, 4), (4, 1), offset=(1 << 63) - 1)), "overflows")
    add("overflowing_shape", pk(tensor((1 << 40, 1 << 40), (0, 0))), "overflows")
    add("storage_numel_lies", torch_zip(wrap_dict(tensor((4, 4), (4, 1), numel=1 << 40)), storage=store), "declares 1099511627776 elements")
    add("storage_entry_missing", torch_zip(wrap_dict(tensor((4, 4), (4, 1), key="9"))), "no entry archive/data/9")

    good = valid_archive()
    add("truncated_zip", good[: len(good) // 2], "no end-of-central-directory")
    cd = central(good)
    # Central directory lies: the pickle entry's compressed and uncompressed sizes inflated to 10 MB.
    lie = patch(patch(good, cd + 20, "<I", 10_000_000), cd + 24, "<I", 10_000_000)
    add("central_directory_size_lie", lie, "run past byte")
    add("stored_sizes_disagree", patch(good, cd + 20, "<I", 3), "declares 3 bytes stored")
    add("zip64_size_without_extra", patch(patch(good, cd + 20, "<I", 0xFFFFFFFF), cd + 24, "<I", 0xFFFFFFFF), "no ZIP64 extra field")
    add("entry_count_lie", patch(good, eocd(good) + 10, "<H", 60000), "declares 60000 entries")
    add("central_directory_offset_past_end", patch(good, eocd(good) + 16, "<I", 0x7FFFFFF0), "runs past the end")
    add("encrypted_entry", patch(good, cd + 8, "<H", 1), "encrypted")
    # A ZIP64 locator whose record offset points past the file.
    e = eocd(good)
    zip64 = good[:e] + b"PK\x06\x07" + struct.pack("<IQI", 0, 1 << 50, 1) + patch(good[e:], 16, "<I", 0xFFFFFFFF)
    add("zip64_locator_past_end", zip64, "ZIP64")
    # Duplicate names: the same member written twice.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", wrap_dict(tensor((4, 4), (4, 1))))
        zf.writestr("archive/data/0", store)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("archive/data/0", store)
    add("duplicate_member_names", buf.getvalue(), "appears twice")
    # Two central entries pointing at one local header under different names.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", wrap_dict(tensor((4, 4), (4, 1))))
        zf.writestr("archive/data/0", store)
    two = buf.getvalue()
    c2 = two.find(b"PK\x01\x02", central(two) + 4)
    add("central_entries_share_local_header", patch(two, c2 + 42, "<I", 0), "local header names it")
    # A deflated .npz member claiming 100 GB.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        a = io.BytesIO(); np.save(a, np.zeros((4, 4), np.float32)); zf.writestr("w.npy", a.getvalue())
    bomb = buf.getvalue()
    add("npz_deflate_bomb_claim", patch(bomb, central(bomb) + 24, "<I", 0xFFFFFF00), "beyond what deflate can produce", ext="npz")
    add("legacy_torch_format", bytes(tl.__dict__.get("LEGACY", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.")), "legacy PyTorch")
    obj = io.BytesIO(); np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    add("npy_object_array", obj.getvalue(), "element type '|O' is not read", ext="npy")
    hdr = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }"
    hdr += b" " * ((-(10 + len(hdr) + 1)) % 64) + b"\n"
    add("npy_shape_overflow", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + b"\0" * 64, "overflows", ext="npy")

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
