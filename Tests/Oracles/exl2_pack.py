"""Writes and reads ExLlamaV2 EXL2 folders (test oracle; never used by WeightMark).

  exl2_pack.py pack SRC OUT [BPW] [--group G] [--head-bits {2,3,4,5,6,8}|--head-fp16] [--p-grid N]
        Quantizes every 2-D linear weight of a Hugging Face Llama folder (safetensors, F32/F16/BF16) and writes an
        EXL2 folder laid out as exllamav2's converter (convert.py -cf) writes it: one output.safetensors with, per
        linear layer KEY (the HF name without ".weight"), KEY.q_weight I32, KEY.q_invperm I32, KEY.q_scale I32,
        KEY.q_scale_max F16, KEY.q_groups I16 (+ KEY.bias F16 if the layer has one); embeddings and norms as F16
        ".weight"; every non-tensor file of SRC copied (tokenizer, generation config, ...); config.json rewritten
        with exllamav2's "quantization_config" block.
        lm_head: exllamav2 QUANTIZES it by default (convert.py -hb 6: groups of 8 and 6 bits, group size 128); so
        does this script; --head-fp16 keeps it as an F16 lm_head.weight instead (exllamav2's loader accepts that,
        its converter never writes it). Tied embeddings: exllamav2 quantizes model.embed_tokens.weight as lm_head.
        BPW omitted: a recipe that uses all six widths exllamav2 supports (8,6,5,4,3,2 bits, 4.125 bpw nominal, the
        converter's default -b) so every packing path is exercised; BPW given: two adjacent widths mixed to hit it.
        The quantizer is round-to-nearest per group (no GPTQ error feedback, no calibration); the act-order
        permutation is exllamav2's argsort(diag(H), descending) with diag(H) replaced by a data-free proxy (the
        squared column norms of the weights that share the same input, as q/k/v and gate/up share H there).
        At the end it decodes what it wrote with the decoder below and checks that it is bit-identical to the
        quantizer's own dequantized values.
  exl2_pack.py dequant OUT NAME [--path fast|plain]
        Decodes one weight (NAME as in HF, e.g. model.layers.1.mlp.up_proj.weight) of an EXL2 folder to the
        [out_features, in_features] matrix exllamav2 reconstructs, act-order undone, and prints its first 64 values
        (row-major) as a JSON list. Non-quantized tensors are printed as stored.
  exl2_pack.py check OUT SRC
        Decodes every layer of OUT, prints per-layer and overall max relative error against SRC's weights
        (max |W_exl2 - W| / max |W|, and ||W_exl2 - W||_F / ||W||_F), and that the two decoder paths agree bit for bit.

The decoder does not share code with the packer. It is written from exllamav2's CUDA load/dequant path and emulates
it step by step, in float16 where the kernel computes in half:
  * path "fast" (what the compiled extension does; exllamav2_ext/config.h QMODE_2..6BIT = 1, QMODE_8BIT = 0):
    QMatrix's shuffle_kernel rewrites q_weight in place with shuffle_{8bit_4,6bit_16,5bit_32,4bit_8,3bit_32,2bit_16}
    (exllamav2_ext/cuda/q_matrix.cu 21-44, 195), then reconstruct_kernel (q_matrix.cu 328-497) walks the rows in
    blocks of 128 with the group map and calls dequant_*bit_* (quant/qdq_*.cuh), which build halves with the
    0x6400 (=1024.0) exponent trick and remove the offset with __hadd2/__hfma2; scales by dq_scale (qdq_util.cuh
    24-30); writes row q_perm[k] (q_perm = argsort(q_invperm), exllamav2/module.py 120).
  * path "plain": the same walk with the "#else" (QMODE_*BIT = 0) dequant functions of qdq_*.cuh, which read the
    unshuffled words with exb()/funnel shifts; no shuffle.
The packer instead follows the converter: AdaptiveQuantizer.find_params / AdaptiveGPTQ.configure, .quantize and
.pack (exllamav2/conversion/adaptivegptq.py), quantize_rtn_kernel (exllamav2_ext/cuda/quantize.cu 10-52),
pack_columns_kernel and pack_rows_4_kernel (exllamav2_ext/cuda/pack_tensor.cu), compile_model
(exllamav2/conversion/compile.py). Citations are to turboderp/exllamav2 at commit b9c025b (version 0.2.7).
The format specification is in docs/formats/exl2.md (written with this script).

Needs numpy, safetensors (and torch only to read BF16 sources).
"""
import glob
import json
import math
import os
import shutil
import sys

import numpy as np

EXL2_VERSION = "0.2.7"  # exllamav2/version.py at the commit followed; written into quantization_config.version

# Widths the kernels know, in the order q_weight must hold them (reconstruct_kernel handles all 8-bit rows first,
# then 6, 5, 4, 3, 2: q_matrix.cu 399-496; every recipe in conversion/qparams.py lists bits in descending order).
WIDTHS = (8, 6, 5, 4, 3, 2)


# =====================================================================================================================
# Packer (follows the converter)
# =====================================================================================================================

class Recipe:
    """QParams (conversion/qparams.py 3-57): bits (descending), bits_prop (sums to 1), group_size per width, 4 scale bits."""

    def __init__(self, bits, props, group_size):
        assert list(bits) == sorted(bits, reverse=True), "kernels need bit widths in descending order"
        assert all(b in WIDTHS for b in bits)
        assert abs(sum(props) - 1) < 1e-12  # qparams asserts sum(bits_prop) == 1 (adaptivegptq.py 179)
        self.bits = list(bits)
        self.props = list(props)
        self.group_size = group_size if isinstance(group_size, dict) else {b: group_size for b in bits}

    def desc(self):  # QParams.get_desc, qparams.py 116-126
        return "/".join("%s:%db_%dg" % (p, b, self.group_size[b]) for b, p in zip(self.bits, self.props)) + " s4"

    def groups(self, rows):
        """Number of groups per width: AdaptiveGPTQ.configure (adaptivegptq.py 181-192)."""
        out, remaining = [], rows
        for b, p in zip(self.bits, self.props):
            gsz = self.group_size[b]
            g = max(0, math.ceil(min(rows * p, remaining) / gsz))
            remaining -= g * gsz
            out.append(g)
        assert remaining <= 0
        return out

    def total_bits(self, rows, columns):
        """QParams.total_bits (qparams.py 60-99), for the bpw recorded in config.json."""
        groups = self.groups(rows)
        total, tr = 0, rows
        for g, b in zip(groups, self.bits):
            r = min(self.group_size[b] * g, tr)
            tr -= r
            total += r * columns * b
        ng = sum(groups)
        return total + ng * 16 + ng * 32 + ng * columns * 4 + rows * 32


def default_recipe(group):
    # All six widths: 1/16 of the rows at 8 bits, 1/8 at 6, 3/16 at 5, 1/4 at 4, 3/16 at 3, 3/16 at 2 (4.125 bits
    # nominal, convert.py's default -b 4.125, exllamav2/conversion/convert_exl2.py 21). Fractions of 2 so they sum to 1.
    return Recipe([8, 6, 5, 4, 3, 2], [1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 16, 3 / 16], group)


def bpw_recipe(bpw, group):
    lo = max([b for b in WIDTHS if b <= bpw] or [2])
    hi = min([b for b in WIDTHS if b >= bpw] or [8])
    if lo == hi:
        return Recipe([hi], [1.0], group)
    p_hi = min(63, max(1, round((bpw - lo) / (hi - lo) * 64))) / 64
    return Recipe([hi, lo], [p_hi, 1 - p_hi], group)


# Head recipes: qparams_headoptions (qparams.py 338-347), chosen by convert.py -hb (default 6, convert_exl2.py 25).
HEAD_OPTIONS = {
    2: Recipe([4, 2], [0.3, 0.7], 32),
    3: Recipe([4, 3], [0.15, 0.85], 32),
    4: Recipe([6, 4], [0.15, 0.85], 32),
    5: Recipe([6, 5], [0.15, 0.85], 128),
    6: Recipe([8, 6], [0.15, 0.85], 128),
    8: Recipe([8], [1.0], 128),
}


def f16(x):
    return np.asarray(x, dtype=np.float64).astype(np.float16)


def find_params(x, bits, p_grid):
    """AdaptiveQuantizer.find_params (adaptivegptq.py 44-74) on one group x [rows, columns] (float32).

    Returns (qscale 1..16 per column, scale float32 per column as the kernels will see it, qscale_max float16)."""
    maxq = 2 ** bits - 1                                   # 37
    qzero = (maxq + 1) / 2                                 # 38: 2^(bits-1)
    xmax = np.abs(x).max(axis=0) + np.float32(1e-12)       # 46-47
    base_scale = xmax / np.float32(maxq / 2)               # 49
    qscale_max_t = base_scale.max()                        # 50 (scale_range 1.0)
    scale_tp = np.sqrt(base_scale / qscale_max_t) * np.float32(16)   # 52-54 (scale_maxq + 1 = 16)
    qscale_t = np.clip(np.round(scale_tp), 1, 16)          # 55
    qscale_tw = (qscale_t / np.float32(16)) ** 2 * qscale_max_t      # 56-58
    # 60-66: p-grid search of quantize_err_kernel (quantize.cu 291-337): error norm 3.5 over p in [0.70, 1.2];
    # exllamav2 uses 96 steps, fewer here (the grid only picks the scale; the layout does not depend on it).
    best, best_p = None, 1.0
    for i in range(p_grid + 1):
        pif = i / p_grid
        p = 0.70 * (1 - pif) + 1.2 * pif
        s = (qscale_tw * np.float32(p)).astype(np.float32)
        q = np.clip(np.rint(x / s), -qzero, maxq - qzero)
        err = float(np.sum(np.abs(q * s - x).astype(np.float64) ** 3.5))
        if best is None or err < best:
            best, best_p = err, p
    qscale_max = np.float16(qscale_max_t * best_p)         # 70, stored .to(torch.float16) at 550
    # 73-74: scale = half(qscale^2) * (half(qscale_max) * half(1/256)), the same product dq_scale forms at load
    prescaled = f16(np.float64(qscale_max) * np.float64(np.float16(1 / 256)))
    scale = f16(f16(qscale_t.astype(np.float64) ** 2).astype(np.float64) * np.float64(prescaled)).astype(np.float32)
    return qscale_t.astype(np.int64), scale, qscale_max


def quantize_rows(x, scale, bits):
    """quantize_rtn_kernel (quantize.cu 29-38): x/s, rint, + qzero, clamp to [0, maxq]; stored as uint16."""
    maxq = 2 ** bits - 1
    qzero = 2 ** (bits - 1)
    q = np.clip(np.rint(x / scale) + qzero, 0, maxq)
    # 42-51: the value exllamav2 keeps as the quantized weight: half(half(q) - half(qzero)) * half(s)
    deq = f16(f16(f16(q).astype(np.float64) - qzero).astype(np.float64) * f16(scale).astype(np.float64))
    return q.astype(np.uint32), deq


def pack_columns(codes, bits):
    """pack_columns_kernel (pack_tensor.cu 117-248): along the input (row) axis, per column, the codes of `bits`
    bits are one LSB-first bit stream: row i of a block occupies bits [i*bits, (i+1)*bits) of the block's words
    (words row-major [qrows, columns]); a block is 16 rows/1 word (2 bit), 32/3 (3), 8/1 (4), 32/5 (5), 16/3 (6),
    4/1 (8), so one group's stream is simply continuous. Written here as the plain bit stream."""
    rows, cols = codes.shape
    assert (rows * bits) % 32 == 0, "pack_columns needs rows * bits divisible by 32 (ext_quant.cpp 68-69)"
    words = np.zeros((rows * bits // 32 + 1, cols), dtype=np.uint64)
    for i in range(rows):
        off = i * bits
        w, sh = off // 32, off % 32
        v = codes[i].astype(np.uint64) << np.uint64(sh)
        words[w] |= v & np.uint64(0xFFFFFFFF)
        words[w + 1] |= v >> np.uint64(32)
    assert not words[-1].any()
    return words[:-1].astype(np.uint32)


def pack_rows_4(qscale):
    """pack_rows_4_kernel (pack_tensor.cu 10-35): (qscale - 1) as 4 bits, column c in bits 4*(c%8) of word c//8."""
    g, cols = qscale.shape
    v = (qscale - 1).astype(np.uint32).reshape(g, cols // 8, 8)
    out = np.zeros((g, cols // 8), dtype=np.uint32)
    for i in range(8):
        out |= v[:, :, i] << np.uint32(4 * i)
    return out


def quantize_linear(w, perm, recipe, p_grid):
    """One linear layer. w: [out, in] float32 (already F16-rounded, out padded to 32). Returns (tensors, reference)
    where reference is the [out, in] float16 matrix the quantizer means (AdaptiveGPTQ.quantize_rtn_inplace
    adaptivegptq.py 353-452 without the GPU bookkeeping; pack 605-671)."""
    weights = np.ascontiguousarray(w.T)[perm]          # prepare: W.T float (237), act order rows (250)
    rows, columns = weights.shape
    groups = recipe.groups(rows)
    qweight = np.zeros((rows, columns), dtype=np.uint32)
    deq = np.zeros((rows, columns), dtype=np.float16)
    qscales, qscale_max, group_rows = [], [], []
    b = 0
    for bits, ng in zip(recipe.bits, groups):          # 384-408
        for _ in range(ng):
            a = b
            b = min(a + recipe.group_size[bits], rows)
            assert b > a
            qs, scale, qsm = find_params(weights[a:b], bits, p_grid)
            qweight[a:b], deq[a:b] = quantize_rows(weights[a:b], scale, bits)
            qscales.append(qs)
            qscale_max.append(qsm)
            group_rows.append((bits, a, b))
    invperm = np.argsort(perm)                          # 421 / 543: invperm = argsort(perm)
    # pack (605-671): q_groups = [bits, first qrow] per group; q_weight = per-group pack_columns, concatenated
    packed, q_groups, out_row = [], [], 0
    for bits, a, b in group_rows:
        q_groups += [bits, out_row]                     # 643-644
        packed.append(pack_columns(qweight[a:b], bits))  # 653-659
        out_row += (b - a) * bits // 32                 # 647-651, 664
    tensors = {
        "q_invperm": invperm.astype(np.int32),                                    # 614 (.to(torch.int))
        "q_scale_max": np.array(qscale_max, dtype=np.float16),                    # 615 (float16, 550)
        "q_groups": np.array(q_groups, dtype=np.int16),                           # 616 (torch.short, 551)
        "q_scale": pack_rows_4(np.stack(qscales)).view(np.int32),                 # 632-634
        "q_weight": np.concatenate(packed, axis=0).view(np.int32),                # 668-669
    }
    reference = deq[invperm].T                          # 438-442: quant[invperm].T -> [out, in]
    return tensors, np.ascontiguousarray(reference)


def read_folder(folder):
    from safetensors import safe_open
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                import torch
                out[k] = f.get_tensor(k).to(torch.float32).numpy()
    return out


def perm_proxy_key(key):
    """Which layers share an input (and so H and its act order) in exllamav2: q/k/v reuse q_proj's H
    (conversion/quantize.py 137-139), gate reuses up_proj's (158-165)."""
    for s in (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj"):
        if key.endswith(s):
            return key[: -len(s)] + ".self_attn.qkv"
    for s in (".mlp.gate_proj", ".mlp.up_proj"):
        if key.endswith(s):
            return key[: -len(s)] + ".mlp.gate_up"
    return key


def cmd_pack(src, out, bpw=None, group=32, head_bits=6, p_grid=24):
    config = json.load(open(os.path.join(src, "config.json")))
    weights = read_folder(src)
    tied = "lm_head.weight" not in weights and config.get("tie_word_embeddings", False)
    linear = {}
    for name, t in weights.items():
        if t.ndim == 2 and name.endswith(".weight") and "embed" not in name:
            linear[name[: -len(".weight")]] = t
    if tied:  # architecture.py 719-724 + model.py 146-147: lm_head reads model.embed_tokens, saved as "lm_head"
        linear["lm_head"] = weights["model.embed_tokens.weight"]
    if head_bits is None:
        linear.pop("lm_head", None)
    body = default_recipe(group) if bpw is None else bpw_recipe(bpw, group)
    print("recipe (decoder layers): %s" % body.desc(), file=sys.stderr)
    # Source weights are loaded as F16 before quantizing (module.py 137/144 .half(); adaptivegptq.py 237 .float()),
    # and out_features are padded to a multiple of 32 with zero rows (linear.py 81-87, 178).
    prepared = {}
    for key, t in linear.items():
        w = t.astype(np.float16).astype(np.float32)
        pad = -w.shape[0] % 32
        if pad:
            w = np.concatenate([w, np.zeros((pad, w.shape[1]), np.float32)])
        prepared[key] = w
    # act order: perm = argsort(diag(H), descending) (adaptivegptq.py 248); proxy diag = sum of squared columns
    proxies = {}
    for key, w in prepared.items():
        pk = perm_proxy_key(key)
        proxies[pk] = proxies.get(pk, 0) + (w.astype(np.float64) ** 2).sum(axis=0)
    out_tensors, references, total_bits, total_numel = {}, {}, 0, 0
    for key in sorted(prepared):
        w = prepared[key]
        recipe = HEAD_OPTIONS[head_bits] if key == "lm_head" else body
        perm = np.argsort(-proxies[perm_proxy_key(key)], kind="stable")
        tensors, ref = quantize_linear(w, perm, recipe, p_grid)
        for k, v in tensors.items():
            out_tensors[key + "." + k] = v
        references[key] = ref
        if key != "lm_head":
            total_bits += recipe.total_bits(w.shape[1], w.shape[0])
            total_numel += w.size
        print("  %-40s %-6s -> %s, %.3f bpw" % (key, "x".join(map(str, w.shape)), recipe.desc(),
              recipe.total_bits(w.shape[1], w.shape[0]) / w.size), file=sys.stderr)
    # embeddings, norms (and an unquantized head) as F16 .weight (compile.py 33-46; module.py 137-147 loads .half());
    # a quantized layer's bias goes out as KEY.bias, F16 (adaptivegptq.py 617-618)
    for name, t in weights.items():
        if name.endswith(".weight") and name[: -len(".weight")] in prepared:
            continue
        out_tensors[name] = t.astype(np.float16)
    os.makedirs(out, exist_ok=True)
    from safetensors.numpy import save_file
    save_file(out_tensors, os.path.join(out, "output.safetensors"))  # one shard: compile.py 206-209
    os.chmod(os.path.join(out, "output.safetensors"), 0o644)
    # non-tensor files copied (compile.py 231-249), then quantization_config added (253-278)
    for f in os.listdir(src):
        p = os.path.join(src, f)
        if os.path.isfile(p) and not f.endswith(".safetensors") and not f.endswith(".bin"):
            shutil.copy(p, os.path.join(out, f))
            if f.endswith(".index.json"):
                print("note: %s copied as exllamav2 does; it names the source shards, not output.safetensors" % f,
                      file=sys.stderr)
    bits = bpw if bpw is not None else round(total_bits / total_numel, 4)
    config["quantization_config"] = {
        "quant_method": "exl2",
        "version": EXL2_VERSION,
        "bits": bits,
        "head_bits": head_bits if head_bits is not None else 16,
        "calibration": {"rows": 0, "length": 0, "dataset": "(none: round-to-nearest by exl2_pack.py)"},
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=4))
    # self-check: the independent decoder reads back exactly the quantizer's values
    tensors = Exl2Folder(out)
    same = 0
    for key, ref in references.items():
        got = tensors.dequant(key, "fast")
        if not np.array_equal(got.view(np.uint16), ref.view(np.uint16)):
            raise SystemExit("decoder disagrees with packer on %s (max diff %g)" %
                             (key, np.abs(got.astype(np.float32) - ref.astype(np.float32)).max()))
        same += 1
    print("wrote %s: %d quantized layers, %.4f bpw (decoder layers); decoder == quantizer values bit for bit on all %d"
          % (out, len(references), total_bits / max(total_numel, 1), same))


# =====================================================================================================================
# Decoder (follows exllamav2's loader and CUDA kernels; shares nothing with the packer above)
# =====================================================================================================================

U32 = np.uint32
C0 = U32(0x64006400)   # two halves of 1024.0 (qdq_*.cuh: "const uint32_t c0 = 0x64006400")


def halves(u):
    """A half2 held as uint32 -> (low half, high half) float16 arrays (union half2_uint32, qdq_util.cuh 4-11)."""
    lo = (u & U32(0xFFFF)).astype(np.uint16).view(np.float16)
    hi = (u >> U32(16)).astype(np.uint16).view(np.float16)
    return lo, hi


def hadd2(u, z):
    """__hadd2(q.as_half2, half2(z, z)): exact sum rounded once to half."""
    return [f16(h.astype(np.float64) + float(np.float16(z))) for h in halves(u)]


def hfma2(u, y, z):
    """__hfma2(q.as_half2, half2(y), half2(z)): fused, one rounding."""
    yh, zh = float(np.float16(y)), float(np.float16(z))
    return [f16(h.astype(np.float64) * yh + zh) for h in halves(u)]


# ---- shuffles applied to q_weight when a QMatrix is made (q_matrix.cu 21-44) ---------------------------------------

def shuffle_2bit_16(q):  # qdq_2.cuh 13-32
    qa, qb = q[0], np.zeros_like(q[0])
    for i in range(8):
        qa0 = qa & U32(0x03)
        qa1 = (qa & U32(0x0C)) >> U32(2)
        qa = qa >> U32(4)
        qb |= qa1 << U32(i * 2 + 16)
        qb |= qa0 << U32(i * 2)
    return [qb]


def shuffle_3bit_32(q):  # qdq_3.cuh 15-67
    qa, qb, qc = q
    qd = qc >> U32(26)
    qc = (qc << U32(4)) | (qb >> U32(28))
    qb = (qb << U32(2)) | (qa >> U32(30))
    z = []
    for src in (qa, qb, qc):
        acc = np.zeros_like(src)
        for i in range(5):
            t0 = src & U32(0x07)
            t1 = (src & U32(0x38)) >> U32(3)
            src = src >> U32(6)
            acc |= t0 << U32(i * 3)
            acc |= t1 << U32(i * 3 + 16)
        z.append(acc)
    za, zb, zc = z
    za |= ((qd & U32(0x01)) >> U32(0)) << U32(15)
    zb |= ((qd & U32(0x02)) >> U32(1)) << U32(15)
    zc |= ((qd & U32(0x04)) >> U32(2)) << U32(15)
    za |= ((qd & U32(0x08)) >> U32(3)) << U32(31)
    zb |= ((qd & U32(0x10)) >> U32(4)) << U32(31)
    zc |= ((qd & U32(0x20)) >> U32(5)) << U32(31)
    return [za, zb, zc]


def shuffle_4bit_8(q):  # qdq_4.cuh 13-32
    qa, qb = q[0], np.zeros_like(q[0])
    for i in range(4):
        qa0 = qa & U32(0x0F)
        qa1 = (qa & U32(0xF0)) >> U32(4)
        qa = qa >> U32(8)
        qb |= qa1 << U32(i * 4 + 16)
        qb |= qa0 << U32(i * 4)
    return [qb]


def shuffle_5bit_32(q):  # qdq_5.cuh 17-93
    qa, qb, qc, qd, qe = q
    qf = qe >> U32(22)
    qe = (qe << U32(8)) | (qd >> U32(24))
    qd = (qd << U32(6)) | (qc >> U32(26))
    qc = (qc << U32(4)) | (qb >> U32(28))
    qb = (qb << U32(2)) | (qa >> U32(30))
    z = []
    for src in (qa, qb, qc, qd, qe):
        acc = np.zeros_like(src)
        for i in range(3):
            t0 = src & U32(0x1F)
            t1 = (src & U32(0x3E0)) >> U32(5)
            src = src >> U32(10)
            acc |= t0 << U32(i * 5)
            acc |= t1 << U32(i * 5 + 16)
        z.append(acc)
    for j in range(5):
        z[j] |= ((qf & U32(1 << j)) >> U32(j)) << U32(15)
        z[j] |= ((qf & U32(1 << (j + 5))) >> U32(j + 5)) << U32(31)
    return z


def shuffle_6bit_16(q):  # qdq_6.cuh 15-75
    qa, qb, qc = q
    m6 = U32(0b111111)
    q00 = qa & m6
    q01 = (qa >> U32(6)) & m6
    q02 = (qa >> U32(12)) & m6
    q03 = (qa >> U32(18)) & m6
    q04 = (qa >> U32(24)) & m6
    q05 = ((qa >> U32(30)) & U32(0b11)) | ((qb & U32(0b1111)) << U32(2))
    q06 = (qb >> U32(4)) & m6
    q07 = (qb >> U32(10)) & m6
    q08 = (qb >> U32(16)) & m6
    q09 = (qb >> U32(22)) & m6
    q0a = ((qb >> U32(28)) & U32(0b1111)) | ((qc & U32(0b11)) << U32(4))
    q0b = (qc >> U32(2)) & m6
    q0c = (qc >> U32(8)) & m6
    q0d = (qc >> U32(14)) & m6
    q0e = (qc >> U32(20)) & m6
    q0f = (qc >> U32(26)) & m6
    qa = q00 | (q01 << U32(16)) | (q02 << U32(6)) | (q03 << U32(22))
    qb = q04 | (q05 << U32(16)) | (q06 << U32(6)) | (q07 << U32(22))
    qc = q08 | (q09 << U32(16)) | (q0a << U32(6)) | (q0b << U32(22))
    qa |= (q0c & U32(0b001111)) << U32(12)
    qc |= (q0c & U32(0b110000)) << U32(8)
    qa |= (q0d & U32(0b001111)) << U32(28)
    qc |= (q0d & U32(0b110000)) << U32(24)
    qb |= (q0e & U32(0b001111)) << U32(12)
    qc |= (q0e & U32(0b110000)) << U32(10)
    qb |= (q0f & U32(0b001111)) << U32(28)
    qc |= (q0f & U32(0b110000)) << U32(26)
    return [qa, qb, qc]


def shuffle_8bit_4(q):  # qdq_8.cuh 13-19: QMODE_8BIT 0, no-op
    return q


# ---- dequant of one block of words, result: list of rows (float16 [n]) in block row order --------------------------

def flat(dq):
    """half* dqh = (half*) dq: dq[i].x then dq[i].y (q_matrix.cu 409 etc.)."""
    out = []
    for pair in dq:
        out += pair
    return out


def dequant_2bit_16(q):  # qdq_2.cuh 34-76
    qa = q[0]
    a = [(qa & U32(0x00030003)) | C0, (qa & U32(0x000C000C)) | C0, (qa & U32(0x00300030)) | C0,
         (qa & U32(0x00C000C0)) | C0]
    qa = qa >> U32(8)
    a += [(qa & U32(0x00030003)) | C0, (qa & U32(0x000C000C)) | C0, (qa & U32(0x00300030)) | C0,
          (qa & U32(0x00C000C0)) | C0]
    dq = []
    for i, u in enumerate(a):
        k = i % 4  # multipliers 1, 4, 16, 64
        dq.append(hadd2(u, -1024.0 - 2.0) if k == 0 else hfma2(u, 1.0 / 4 ** k, -1024.0 / 4 ** k - 2.0))
    return flat(dq)


def dequant_3bit_32(q):  # qdq_3.cuh 69-136
    qa, qb, qc = q
    z1, y8, z8, y64, z64 = -1024.0 - 4.0, 1 / 8, -1024.0 / 8 - 4.0, 1 / 64, -1024.0 / 64 - 4.0
    q0 = (qa & U32(0x00070007)) | C0
    q1 = (qa & U32(0x00380038)) | C0
    qa = qa >> U32(6)
    q2 = (qa & U32(0x00070007)) | C0
    q3 = (qa & U32(0x00380038)) | C0
    q4 = (qa & U32(0x01C001C0)) | C0
    qa = (qa >> U32(9)) & U32(0x00010001)
    q5 = (qb & U32(0x00070007)) | C0
    q6 = (qb & U32(0x00380038)) | C0
    qb = qb >> U32(6)
    q7 = (qb & U32(0x00070007)) | C0
    q8 = (qb & U32(0x00380038)) | C0
    q9 = (qb & U32(0x01C001C0)) | C0
    qb = (qb >> U32(8)) & U32(0x00020002)
    q10 = (qc & U32(0x00070007)) | C0
    q11 = (qc & U32(0x00380038)) | C0
    qc = qc >> U32(6)
    q12 = (qc & U32(0x00070007)) | C0
    q13 = (qc & U32(0x00380038)) | C0
    q14 = (qc & U32(0x01C001C0)) | C0
    qc = (qc >> U32(7)) & U32(0x00040004)
    q15 = (qa | qb | qc) | C0
    return flat([hadd2(q0, z1), hfma2(q1, y8, z8), hadd2(q2, z1), hfma2(q3, y8, z8), hfma2(q4, y64, z64),
                 hadd2(q5, z1), hfma2(q6, y8, z8), hadd2(q7, z1), hfma2(q8, y8, z8), hfma2(q9, y64, z64),
                 hadd2(q10, z1), hfma2(q11, y8, z8), hadd2(q12, z1), hfma2(q13, y8, z8), hfma2(q14, y64, z64),
                 hadd2(q15, z1)])


def dequant_4bit_8(q):  # qdq_4.cuh 34-60
    qa = q[0]
    z1, y16, z16 = -1024.0 - 8.0, 1 / 16, -1024.0 / 16 - 8.0
    q0 = (qa & U32(0x000F000F)) | C0
    q1 = (qa & U32(0x00F000F0)) | C0
    qa = qa >> U32(8)
    q2 = (qa & U32(0x000F000F)) | C0
    q3 = (qa & U32(0x00F000F0)) | C0
    return flat([hadd2(q0, z1), hfma2(q1, y16, z16), hadd2(q2, z1), hfma2(q3, y16, z16)])


def dequant_5bit_32(q):  # qdq_5.cuh 95-168
    qa, qb, qc, qd, qe = q
    z1, y32, z32 = -1024.0 - 16.0, 1 / 32, -1024.0 / 32 - 16.0
    q0 = (qa & U32(0x001F001F)) | C0
    q1 = (qa & U32(0x03E003E0)) | C0
    qa = qa >> U32(10)
    q2 = (qa & U32(0x001F001F)) | C0
    qa = (qa >> U32(5)) & U32(0x00010001)
    q3 = (qb & U32(0x001F001F)) | C0
    q4 = (qb & U32(0x03E003E0)) | C0
    qb = qb >> U32(10)
    q5 = (qb & U32(0x001F001F)) | C0
    qb = (qb >> U32(4)) & U32(0x00020002)
    q6 = (qc & U32(0x001F001F)) | C0
    q7 = (qc & U32(0x03E003E0)) | C0
    qc = qc >> U32(10)
    q8 = (qc & U32(0x001F001F)) | C0
    qc = (qc >> U32(3)) & U32(0x00040004)
    q9 = (qd & U32(0x001F001F)) | C0
    q10 = (qd & U32(0x03E003E0)) | C0
    qd = qd >> U32(10)
    q11 = (qd & U32(0x001F001F)) | C0
    qd = (qd >> U32(2)) & U32(0x00080008)
    q12 = (qe & U32(0x001F001F)) | C0
    q13 = (qe & U32(0x03E003E0)) | C0
    qe = qe >> U32(10)
    q14 = (qe & U32(0x001F001F)) | C0
    qe = (qe >> U32(1)) & U32(0x00100010)
    q15 = (qa | qb | qc | qd | qe) | C0
    return flat([hadd2(q0, z1), hfma2(q1, y32, z32), hadd2(q2, z1), hadd2(q3, z1), hfma2(q4, y32, z32),
                 hadd2(q5, z1), hadd2(q6, z1), hfma2(q7, y32, z32), hadd2(q8, z1), hadd2(q9, z1),
                 hfma2(q10, y32, z32), hadd2(q11, z1), hadd2(q12, z1), hfma2(q13, y32, z32), hadd2(q14, z1),
                 hadd2(q15, z1)])


def dequant_6bit_16(q):  # qdq_6.cuh 77-118
    qa, qb, qc = q
    z1 = -1024.0 - 32.0
    m = U32(0x003F003F)
    q0 = (qa & m) | C0
    qa = qa >> U32(6)
    q1 = (qa & m) | C0
    qa = qa >> U32(6)
    q2 = (qb & m) | C0
    qb = qb >> U32(6)
    q3 = (qb & m) | C0
    qb = qb >> U32(6)
    q4 = (qc & m) | C0
    qc = qc >> U32(6)
    q5 = (qc & m) | C0
    qc = qc >> U32(2)
    q6 = (qa & U32(0x000F000F)) | (qc & U32(0x00300030)) | C0
    qc = qc >> U32(2)
    q7 = (qb & U32(0x000F000F)) | (qc & U32(0x00300030)) | C0
    return flat([hadd2(u, z1) for u in (q0, q1, q2, q3, q4, q5, q6, q7)])


# plain ("#else") versions: exb (qdq_util.cuh 43-51) and dq_ns (37-41) on unshuffled words

def exb(q, shift, mask):
    return ((q >> U32(shift)) & U32(mask)).astype(np.int64)


def exb2(q1, q0, shift, mask):  # __funnelshift_rc(q0, q1, shift): (q1:q0) >> shift, low 32 bits
    v = (q1.astype(np.uint64) << np.uint64(32)) | q0.astype(np.uint64)
    return ((v >> np.uint64(shift)) & np.uint64(mask)).astype(np.int64)


def dq_ns(v, qzero):
    return f16(v - qzero)  # __int2half_rn(q - qzero)


def plain_2bit(q):  # qdq_2.cuh 88-99
    return [dq_ns(exb(q[0], i * 2, 0x03), 2) for i in range(16)]


def plain_3bit(q):  # qdq_3.cuh 148-165
    q0, q1, q2 = q
    r = [dq_ns(exb(q0, i * 3, 0x07), 4) for i in range(10)]
    r.append(dq_ns(exb2(q1, q0, 30, 0x07), 4))
    r += [dq_ns(exb(q1, i * 3 + 1, 0x07), 4) for i in range(10)]
    r.append(dq_ns(exb2(q2, q1, 31, 0x07), 4))
    r += [dq_ns(exb(q2, i * 3 + 2, 0x07), 4) for i in range(10)]
    return r


def plain_4bit(q):  # qdq_4.cuh 151-162
    return [dq_ns(exb(q[0], i * 4, 0x0F), 8) for i in range(8)]


def plain_5bit(q):  # qdq_5.cuh 180-203
    q0, q1, q2, q3, q4 = q
    r = [dq_ns(exb(q0, i * 5, 0x1F), 16) for i in range(6)]
    r.append(dq_ns(exb2(q1, q0, 30, 0x1F), 16))
    r += [dq_ns(exb(q1, i * 5 + 3, 0x1F), 16) for i in range(5)]
    r.append(dq_ns(exb2(q2, q1, 28, 0x1F), 16))
    r += [dq_ns(exb(q2, i * 5 + 1, 0x1F), 16) for i in range(6)]
    r.append(dq_ns(exb2(q3, q2, 31, 0x1F), 16))
    r += [dq_ns(exb(q3, i * 5 + 4, 0x1F), 16) for i in range(5)]
    r.append(dq_ns(exb2(q4, q3, 29, 0x1F), 16))
    r += [dq_ns(exb(q4, i * 5 + 2, 0x1F), 16) for i in range(6)]
    return r


def plain_6bit(q):  # qdq_6.cuh 130-147
    q0, q1, q2 = q
    r = [dq_ns(exb(q0, i * 6, 0x3F), 32) for i in range(5)]
    r.append(dq_ns(exb2(q1, q0, 30, 0x3F), 32))
    r += [dq_ns(exb(q1, i * 6 + 4, 0x3F), 32) for i in range(4)]
    r.append(dq_ns(exb2(q2, q1, 28, 0x3F), 32))
    r += [dq_ns(exb(q2, i * 6 + 2, 0x3F), 32) for i in range(5)]
    return r


def plain_8bit(q):  # qdq_8.cuh 21-34 (the only 8-bit path: QMODE_8BIT 0 in config.h 13)
    q0, q1 = q
    return [dq_ns(exb(q0, i * 8, 0xFF), 128) for i in range(4)] + [dq_ns(exb(q1, i * 8, 0xFF), 128) for i in range(4)]


# per width: (shuffle, words per shuffle step, rows per shuffle step) and per reconstruct_kernel iteration:
# (fast dequant, plain dequant, words per call, calls per iteration, rows per iteration)  -- q_matrix.cu 38-43, 399-496
KERNEL = {
    8: (shuffle_8bit_4, 1, 4, plain_8bit, plain_8bit, 2, 4, 32),
    6: (shuffle_6bit_16, 3, 16, dequant_6bit_16, plain_6bit, 3, 2, 32),
    5: (shuffle_5bit_32, 5, 32, dequant_5bit_32, plain_5bit, 5, 1, 32),
    4: (shuffle_4bit_8, 1, 8, dequant_4bit_8, plain_4bit, 1, 4, 32),
    3: (shuffle_3bit_32, 3, 32, dequant_3bit_32, plain_3bit, 3, 1, 32),
    2: (shuffle_2bit_16, 1, 16, dequant_2bit_16, plain_2bit, 1, 1, 16),
}


def make_group_map(q_groups, num_qrows):
    """ext_qmatrix.cpp 341-358 (= ext.py make_group_map_py 301-316): per row, (group, rows left in the group)."""
    n = len(q_groups) // 2
    gm = []
    for i in range(n):
        bits = int(q_groups[2 * i])
        qrows = (int(q_groups[2 * i + 3]) if i < n - 1 else num_qrows) - int(q_groups[2 * i + 1])
        rows = qrows * 32 // bits
        for j in range(rows):
            gm += [i, rows - j]
    return np.array(gm, dtype=np.int64)


def dq_scale(qs, max_scale):
    """qdq_util.cuh 24-30: half((qs + 1)^2) * max_scale, max_scale = q_scale_max * (prescale / 256) in F16 (ext.py 336)."""
    return f16(f16((qs + 1) ** 2).astype(np.float64) * float(max_scale))


def reconstruct(q_weight, q_perm, q_scale, q_scale_max, q_groups, path="fast", prescale=1.0):
    """QMatrix(...) + QMatrix::reconstruct (q_matrix.cu 49-196, 328-531). Returns b [in_features, out_features] F16."""
    group_map = make_group_map(q_groups, q_weight.shape[0])
    height, width, groups = len(group_map) // 2, q_weight.shape[1], q_scale.shape[0]
    # constructor: rows per width, cumulative in the order 8, 6, 5, 4, 3, 2 (q_matrix.cu 130-159)
    per = dict.fromkeys(WIDTHS, 0)
    row = 0
    for i in range(groups):
        bits = int(q_groups[2 * i])
        rows = (int(q_groups[2 * i + 3]) - int(q_groups[2 * i + 1])) * 32 // bits if i < groups - 1 else height - row
        per[bits] += rows
        row += rows
    limit, acc = {}, 0
    for b in WIDTHS:
        acc += per[b]
        limit[b] = acc
    w = q_weight.view(np.uint32).copy()
    if path == "fast":  # shuffle_kernel (21-44), run once per column over the whole matrix
        k, ptr = 0, 0
        for b in WIDTHS:
            shuffle, nw, nr = KERNEL[b][0], KERNEL[b][1], KERNEL[b][2]
            while k < limit[b]:
                res = shuffle([w[ptr + j] for j in range(nw)])
                for j in range(nw):
                    w[ptr + j] = res[j]
                ptr += nw
                k += nr
    max_scale = f16(q_scale_max.astype(np.float64) * (prescale / 256))  # ext.py 336: q_scale_max *= prescale / 256
    qsu = q_scale.view(np.uint32)
    cols = np.arange(width)
    scale_code = lambda g: ((qsu[g, cols // 8] >> (U32(4) * (cols % 8).astype(np.uint32))) & U32(0x0F)).astype(np.int64)  # matrix_view.cuh 96-100
    out = np.zeros((height, width), dtype=np.float16)
    for offset_k in range(0, height, 128):  # BLOCK_KN_SIZE 128, one block row per blockIdx.y
        perm = q_perm[offset_k: offset_k + 128] if q_perm is not None else None
        group = int(group_map[offset_k * 2])
        pre, qk, prev = {}, 0, 0
        for b in WIDTHS:  # 373-385
            pre[b] = (min(limit[b], offset_k) - prev) if offset_k > prev else 0
            prev = limit[b]
            qk += pre[b] // 32 * b
        ptr = qk
        qs = dq_scale(scale_code(group), max_scale[group])
        nextgroup = offset_k + int(group_map[offset_k * 2 + 1])
        end_k = min(offset_k + 128, height)
        k = offset_k
        lk = 0 if perm is not None else k
        for b in WIDTHS:
            _, _, _, fast, plain, nw, calls, step = KERNEL[b]
            fn = fast if (path == "fast" and b != 8) else plain
            while k < limit[b] and k < end_k:
                if k == nextgroup:
                    group += 1
                    qs = dq_scale(scale_code(group), max_scale[group])
                    nextgroup += int(group_map[k * 2 + 1])
                for _ in range(calls):
                    words = [w[ptr + j] for j in range(nw)]
                    ptr += nw
                    for v in fn(words):
                        dst = int(perm[lk]) if perm is not None else lk
                        out[dst] = f16(v.astype(np.float64) * qs.astype(np.float64))  # __hmul2(dq, qs_h2)
                        lk += 1
                k += step
    return out


class Exl2Folder:
    """Tensor lookup over every *.safetensors of a folder, as ExLlamaV2Config does (config.py 401-412)."""

    def __init__(self, folder):
        from safetensors import safe_open
        self.folder = folder
        self.where = {}
        for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
            with safe_open(path, framework="np") as f:
                for k in f.keys():
                    self.where[k] = path
        cfg = os.path.join(folder, "config.json")
        self.config = json.load(open(cfg)) if os.path.exists(cfg) else {}

    def get(self, name):
        from safetensors import safe_open
        with safe_open(self.where[name], framework="np") as f:
            return f.get_tensor(name)

    def quantized_keys(self):
        return sorted(k[: -len(".q_weight")] for k in self.where if k.endswith(".q_weight"))

    def dequant(self, key, path="fast"):
        """module.py 118-121 (EXL2 if KEY.q_weight exists; q_perm = argsort(q_invperm)), ext.py 334-357,
        reconstruct -> [in, out] (linear.py 480-488), transposed to [out, in] as quantize.py 132 does."""
        q_invperm = self.get(key + ".q_invperm").astype(np.int64)
        q_perm = np.argsort(q_invperm)
        b = reconstruct(self.get(key + ".q_weight"), q_perm, self.get(key + ".q_scale"),
                        self.get(key + ".q_scale_max"), self.get(key + ".q_groups"), path)
        return np.ascontiguousarray(b.T)

    def weight(self, name, path="fast"):
        key = name[: -len(".weight")] if name.endswith(".weight") else name
        if key + ".q_weight" in self.where:
            w = self.dequant(key, path)
            if key == "lm_head" and self.config.get("vocab_size"):
                w = w[: self.config["vocab_size"]]  # head padded to 32 rows (linear.py 81-87)
            return w
        return self.get(name)


def cmd_dequant(out, name, path="fast"):
    w = Exl2Folder(out).weight(name, path)
    print(json.dumps([float(v) for v in w.reshape(-1)[:64]]))


def cmd_check(out, src):
    folder = Exl2Folder(out)
    original = read_folder(src)
    tied = "lm_head.weight" not in original and "lm_head.q_weight" in folder.where
    worst_abs, worst_fro, paths_equal, n = 0.0, 0.0, True, 0
    per_width = {}
    rows = []
    for key in folder.quantized_keys():
        name = key + ".weight"
        ref = original["model.embed_tokens.weight" if (tied and key == "lm_head") else name]
        fast = folder.weight(name, "fast")
        plain = folder.weight(name, "plain")
        same = np.array_equal(fast.view(np.uint16), plain.view(np.uint16))
        paths_equal &= same
        d = fast.astype(np.float64) - ref
        rel_abs = np.abs(d).max() / np.abs(ref).max()
        rel_fro = np.linalg.norm(d) / np.linalg.norm(ref)
        g = folder.get(key + ".q_groups")
        mix = "/".join("%db" % b for b in sorted(set(int(x) for x in g[0::2]), reverse=True))
        rows.append("  %-40s %-10s groups=%-3d %-18s max_rel=%.5f fro_rel=%.5f fast==plain=%s" % (
            key, "x".join(map(str, fast.shape)), len(g) // 2, mix, rel_abs, rel_fro, same))
        worst_abs, worst_fro, n = max(worst_abs, rel_abs), max(worst_fro, rel_fro), n + 1
        # error per bit width: input feature i sits in stored row q_invperm[i], whose group gives its width; an
        # act-order mistake would spread ~100% errors over every width instead of the expected 8 < 6 < ... < 2 ladder
        gm = make_group_map(g, folder.get(key + ".q_weight").shape[0])
        row_bits = g[0::2].astype(np.int64)[gm[0::2]][folder.get(key + ".q_invperm").astype(np.int64)]
        for b in set(row_bits.tolist()):
            sel = row_bits == b
            e2, r2 = per_width.get(b, (0.0, 0.0))
            per_width[b] = (e2 + float((d[:, sel] ** 2).sum()), r2 + float((ref[:, sel] ** 2).sum()))
    other = 0.0
    for name, t in original.items():
        if name in folder.where and not name.endswith(".q_weight"):
            other = max(other, float(np.abs(folder.get(name).astype(np.float64) - t).max() / max(np.abs(t).max(), 1e-30)))
    print("\n".join(rows))
    print("quantized layers: %d; max relative error (max|dW|/max|W|) %.5f; worst ||dW||_F/||W||_F %.5f" % (
        n, worst_abs, worst_fro))
    print("||dW||_F/||W||_F by bit width (input features of that width, all layers): " + ", ".join(
        "%db %.4f" % (b, math.sqrt(per_width[b][0] / per_width[b][1])) for b in sorted(per_width, reverse=True)))
    print("fast path (shuffle + half-trick dequant) == plain path (funnel-shift dequant), bit for bit: %s" % paths_equal)
    print("unquantized F16 tensors: max relative error %.2e" % other)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, args = argv[1], argv[2:]
    opts, pos = {}, []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--group", "--head-bits", "--p-grid", "--path"):
            opts[a] = args[i + 1]
            i += 2
        elif a == "--head-fp16":
            opts[a] = True
            i += 1
        else:
            pos.append(a)
            i += 1
    if cmd == "pack":
        head = None if opts.get("--head-fp16") else int(opts.get("--head-bits", 6))
        cmd_pack(pos[0], pos[1], float(pos[2]) if len(pos) > 2 else None, int(opts.get("--group", 32)), head,
                 int(opts.get("--p-grid", 24)))
    elif cmd == "dequant":
        cmd_dequant(pos[0], pos[1], opts.get("--path", "fast"))
    elif cmd == "check":
        cmd_check(pos[0], pos[1])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
