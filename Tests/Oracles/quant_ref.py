"""Quantize-then-dequantize oracle for WeightMark's `attack` command (test oracle; never used by WeightMark itself).

  quant_ref.py ref SCHEME IN.safetensors OUT.safetensors

Reads every 2-D F32 tensor of IN, quantizes it and dequantizes it again exactly as the named quantizer does, and writes
the float32 result to OUT under the same name. Tensors that are not 2-D F32 are left out of OUT. A tensor whose shape
the scheme cannot take (e.g. `in` not a multiple of MLX's group) is an error: nothing is written, the reason goes to
stderr and the exit code is 2. Nothing else is printed.

Weights are W [out, in] (row-major, as safetensors stores a Linear weight); groups run along `in` unless noted.
The real libraries run wherever they run on a CPU (pinned versions: mlx 0.32.4, bitsandbytes 0.50.2,
compressed-tensors 0.20.1, onnxruntime 1.30.0, torch 2.13 CPU); GPTQ and AWQ need CUDA builds, so their round-to-nearest
quantizers are transcribed into torch float32 ops here, operation for operation. docs/formats/quantizers.md (written with
this file) gives every algorithm and the bit-exact checks.

SCHEME (name:key=value,...; keys left out take the default shown):
  mlx:bits=4,group=64            mx.quantize / mx.dequantize, mode "affine"; bits 2,3,4,5,6,8; group 32,64,128
  mlx:mode=mxfp4                 MLX microscaled modes (fixed groups: mxfp4 32, nvfp4 16, mxfp8 32), no global scale
  mlx:mode=nvfp4 | mlx:mode=mxfp8
  nf4:block=64,double=1          bitsandbytes.functional.quantize_4bit(quant_type="nf4", compress_statistics=double)
  fp4:block=64,double=1            then dequantize_4bit, on the CPU backend (blocks run over the flattened tensor)
  fp8:block=128                  compressed-tensors FP8_BLOCK (float8_e4m3fn, [block, block] tiles), scales from
                                   llm-compressor's memoryless min-max weight observer (scale = absmax / 448)
  nvfp4:fuse=0                   compressed-tensors NVFP4 weights (tensor_group, group 16, E4M3 scales, F32 global
                                   scale); fuse=1 shares the global scale across q/k/v_proj and gate/up_proj (and the
                                   other groups llm-compressor fuses) found in the same module of IN, as llm-compressor does
  matmulnbits:bits=4,block=128,sym=0
                                 onnxruntime.quantization's MatMul4BitsQuantizer default path (DefaultWeightOnlyQuantizer
                                   -> quantize_matmul_4bits -> MlasQuantizeBlockwise) on B = W^T [in, out], so blocks run
                                   along `in`; dequantized as MLAS does, (q - zero_point) * scale
  gptq:bits=4,group=128,sym=0    GPTQ's Quantizer (IST-DASLab gptq / AutoGPTQ / GPTQModel, identical code) per group,
                                   round-to-nearest without Hessian updates (== fasterquant with H = I)
  awq:bits=4,group=128           AutoAWQ / llm-awq pseudo_quantize_tensor(zero_point=True) (no scale/clip search)
"""
import contextlib
import io
import os
import re
import sys
import warnings


class SchemeError(Exception):
    """A scheme string or a tensor shape the scheme cannot take."""


# ----------------------------------------------------------------------------------------------------------------------
# Scheme strings

SCHEMES = {
    # name: (allowed keys with defaults, converters)
    "mlx": {"bits": 4, "group": 64, "mode": "affine"},
    "nf4": {"block": 64, "double": 1},
    "fp4": {"block": 64, "double": 1},
    "fp8": {"block": 128},
    "nvfp4": {"fuse": 0},
    "matmulnbits": {"bits": 4, "block": 128, "sym": 0},
    "gptq": {"bits": 4, "group": 128, "sym": 0},
    "awq": {"bits": 4, "group": 128},
}


def parse_scheme(text):
    """'name:k=v,k=v' -> (name, {k: v}) with the defaults of SCHEMES filled in; ints where the default is an int."""
    name, _, rest = text.strip().partition(":")
    if name not in SCHEMES:
        raise SchemeError("unknown scheme %r (known: %s)" % (name, ", ".join(sorted(SCHEMES))))
    params = dict(SCHEMES[name])
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in params:
            raise SchemeError("scheme %s: bad parameter %r (allowed: %s)" % (name, item, ", ".join(params)))
        if isinstance(SCHEMES[name][key], int):
            try:
                params[key] = int(value)
            except ValueError:
                raise SchemeError("scheme %s: %s must be an integer, got %r" % (name, key, value))
        else:
            params[key] = value
    return name, params


# ----------------------------------------------------------------------------------------------------------------------
# MLX (real library: mx.quantize / mx.dequantize on the CPU stream)

def mlx_qdq(w, bits, group, mode):
    import numpy as np
    import mlx.core as mx
    out_f, in_f = w.shape
    if mode == "affine":
        if bits not in (2, 3, 4, 5, 6, 8) or group not in (32, 64, 128):
            raise SchemeError("mlx affine takes bits 2,3,4,5,6,8 and group 32,64,128 (got bits=%d group=%d)" % (bits, group))
        if in_f % group:
            raise SchemeError("mlx affine: in=%d is not a multiple of group %d" % (in_f, group))
        wq, scales, biases = mx.quantize(mx.array(w), group_size=group, bits=bits, mode="affine")
        # scales/biases are float32 for a float32 input; dequantize returns the scales' dtype (float32)
        out = mx.dequantize(wq, scales, biases, group_size=group, bits=bits, mode="affine")
    elif mode in ("mxfp4", "nvfp4", "mxfp8"):
        fixed = {"mxfp4": 32, "nvfp4": 16, "mxfp8": 32}[mode]
        if in_f % fixed:
            raise SchemeError("mlx %s: in=%d is not a multiple of its group %d" % (mode, in_f, fixed))
        wq, scales = mx.quantize(mx.array(w), mode=mode)
        # without dtype= the output would be bfloat16 (the values are exact in bf16, but ask for float32 explicitly)
        out = mx.dequantize(wq, scales, mode=mode, dtype=mx.float32)
    else:
        raise SchemeError("mlx: unknown mode %r (affine, mxfp4, nvfp4, mxfp8)" % mode)
    return np.array(out.astype(mx.float32), dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# bitsandbytes (real library, CPU backend)

def bnb_qdq(w, quant_type, block, double):
    import numpy as np
    import torch
    import bitsandbytes.functional as F
    if block not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        raise SchemeError("%s: block must be one of 32..4096 (powers of two), got %d" % (quant_type, block))
    t = torch.from_numpy(np.ascontiguousarray(w))
    q, state = F.quantize_4bit(t, blocksize=block, compress_statistics=bool(double), quant_type=quant_type)
    return F.dequantize_4bit(q, state).numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------------------------
# compressed-tensors (real library) with llm-compressor's weight observer transcribed

# llm-compressor observers/helpers.py FUSED_LAYER_NAMES: siblings whose TENSOR_GROUP global scale is shared
CT_FUSED = [("gate_proj", "up_proj"), ("q_proj", "k_proj", "v_proj"), ("q_a_proj", "kv_a_proj_with_mqa"), ("w1", "w3")]


def ct_args(preset, block=None):
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme
    args = preset_name_to_scheme(preset, ["Linear"]).weights
    if block is not None:
        args = args.model_copy(update={"block_structure": [block, block]})
    return args


def ct_observe(w, args):
    """llm-compressor's MemorylessMinMaxObserver on a weight: observers/helpers.py _flatten_weight (BLOCK tiles are
    zero-padded to whole tiles; GROUP/TENSOR_GROUP split `in` into groups), then min_max.py _get_min_max:
    amin/amax over dims (0, -1). Returns (min_vals, max_vals) shaped like the scales."""
    import torch
    from compressed_tensors.quantization import QuantizationStrategy
    from compressed_tensors.quantization.utils import maybe_pad_tensor_for_block_quant
    if args.strategy == QuantizationStrategy.BLOCK:
        bh, bw = args.block_structure
        v = maybe_pad_tensor_for_block_quant(w, args.block_structure)
        rows, cols = v.shape
        observed = v.reshape(rows // bh, bh, cols // bw, bw).transpose(1, 2).flatten(-2, -1).unsqueeze(0)
    else:
        observed = w.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    return torch.amin(observed, dim=(0, -1)), torch.amax(observed, dim=(0, -1))


def ct_global_absmax(stats):
    """Observer.get_global_scale (observers/base.py): the largest |value| over this observer and its fused siblings."""
    import torch
    absmax = stats[0][1].max()
    for mn, mx in stats:
        absmax = torch.max(absmax, -mn.min())
        absmax = torch.max(absmax, mx.max())
    return absmax


def ct_qdq(w, args, siblings=()):
    """calculate_qparams (+ generate_gparam for TENSOR_GROUP), then compressed-tensors' own fake_quantize. Symmetric
    weights get no zero point (llm-compressor initialises them with force_zero_point=False)."""
    import numpy as np
    import torch
    from compressed_tensors.quantization import QuantizationStrategy
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    t = torch.from_numpy(np.ascontiguousarray(w))
    mn, mx = ct_observe(t, args)
    global_scale = None
    if args.strategy == QuantizationStrategy.TENSOR_GROUP:
        stats = [(mn, mx)] + [ct_observe(torch.from_numpy(np.ascontiguousarray(s)), args) for s in siblings]
        a = ct_global_absmax(stats)
        global_scale = generate_gparam(-a.reshape(1), a.reshape(1))
    scale, zero_point = calculate_qparams(mn, mx, args, global_scale=global_scale)
    out = fake_quantize(t, scale, None if args.symmetric else zero_point, args, global_scale=global_scale)
    return out.numpy().astype(np.float32, copy=False)


def ct_siblings(name, tensors):
    """Names of the 2-D F32 tensors that llm-compressor would fuse with `name` (same parent module)."""
    m = re.match(r"^(.*\.)?([^.]+)\.weight$", name)
    if not m:
        return []
    parent, leaf = m.group(1) or "", m.group(2)
    for group in CT_FUSED:
        if leaf in group:
            return [parent + s + ".weight" for s in group if s != leaf and parent + s + ".weight" in tensors]
    return []


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime MatMulNBits (real quantizer; MLAS's dequantization formula on its packed output)

def matmulnbits_qdq(w, bits, block, sym):
    import numpy as np
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, DefaultWeightOnlyQuantizer
    if bits != 4:
        raise SchemeError("matmulnbits: only bits=4 is supported here")
    if block < 16 or block & (block - 1):
        raise SchemeError("matmulnbits: block must be a power of two >= 16, got %d" % block)
    b = np.ascontiguousarray(w.T)                     # ONNX MatMul weight B is [K=in, N=out]
    k, n = b.shape
    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=bool(sym), bits=4)
    packed, scales, zp = DefaultWeightOnlyQuantizer(cfg).qbits_block_quant(b)
    # packed [N, k_blocks, block/2]: element 2i in the low nibble, 2i+1 in the high nibble; scales [N, k_blocks]
    kb = scales.shape[1]
    q = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(n, kb * block)[:, :k].astype(np.int32)
    if sym:
        z = np.full((n, kb), 8, np.int32)             # symmetric: implicit zero point 8
    else:
        z = np.stack([zp & 0xF, zp >> 4], axis=-1).reshape(n, -1)[:, :kb].astype(np.int32)
    z = np.repeat(z, block, axis=1)[:, :k]
    s = np.repeat(scales.astype(np.float32), block, axis=1)[:, :k]
    # MLAS BlockwiseQuantizer::dequantize: v = (vi - zp) * scale (integer difference, one float32 product)
    return ((q - z).astype(np.float32) * s).astype(np.float32)     # [out, in] again (row j = column j of B)


# ----------------------------------------------------------------------------------------------------------------------
# GPTQ and AWQ: their torch code, transcribed (float32 CPU tensors)

def gptq_qdq(w, bits, group, sym):
    """GPTQ Quantizer.find_params(W[:, g:g+group], weight=True) with perchannel=True, mse=False, then quantize():
    per row of each group (the last group may be shorter)."""
    import numpy as np
    import torch
    W = torch.from_numpy(np.ascontiguousarray(w))
    maxq = torch.tensor(2 ** bits - 1)
    out = torch.empty_like(W)
    for g0 in range(0, W.shape[1], group):
        x = W[:, g0:g0 + group]
        zeros = torch.zeros(x.shape[0])
        xmin = torch.minimum(x.min(1)[0], zeros)      # the range always holds 0
        xmax = torch.maximum(x.max(1)[0], zeros)
        if sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            neg = xmin < 0
            if torch.any(neg):
                xmin[neg] = -xmax[neg]
        flat = (xmin == 0) & (xmax == 0)              # an all-zero row of the group gets the range [-1, 1]
        xmin[flat] = -1
        xmax[flat] = +1
        scale = (xmax - xmin) / maxq
        if sym:
            zero = torch.full_like(scale, (maxq + 1) / 2)
        else:
            zero = torch.round(-xmin / scale)         # round half to even
        scale, zero = scale.reshape(-1, 1), zero.reshape(-1, 1)
        q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
        out[:, g0:g0 + group] = scale * (q - zero)
    return out.numpy()


def awq_qdq(w, bits, group):
    """AutoAWQ AwqQuantizer.pseudo_quantize_tensor / llm-awq pseudo_quantize_tensor with zero_point=True."""
    import numpy as np
    import torch
    if w.shape[1] % group:
        raise SchemeError("awq: in=%d is not a multiple of group %d" % (w.shape[1], group))
    t = torch.from_numpy(np.ascontiguousarray(w)).reshape(-1, group)
    max_val = t.amax(dim=1, keepdim=True)
    min_val = t.amin(dim=1, keepdim=True)             # no forcing of 0 into the range (unlike GPTQ)
    max_int, min_int = 2 ** bits - 1, 0
    scales = (max_val - min_val).clamp(min=1e-5) / max_int
    zeros = (-torch.round(min_val / scales)).clamp_(min_int, max_int)
    t = (torch.clamp(torch.round(t / scales) + zeros, min_int, max_int) - zeros) * scales
    return t.reshape(w.shape).numpy()


# ----------------------------------------------------------------------------------------------------------------------
# Driver

def check_groups(name, w, group, what):
    if w.shape[1] % group:
        raise SchemeError("%s: tensor %s has in=%d, not a multiple of %d" % (what, name, w.shape[1], group))


def ref(scheme, src, dst):
    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    # bitsandbytes' double quantization takes torch.mean of the block absmaxes; above 32768 blocks ATen splits that
    # sum across threads, so pin one thread to make the result independent of the machine (see the notes).
    torch.set_num_threads(1)
    name, p = parse_scheme(scheme)
    tensors = load_file(src)
    todo = {k: v for k, v in tensors.items() if v.dtype == np.float32 and v.ndim == 2}
    out = {}
    for key in sorted(todo):
        w = np.ascontiguousarray(todo[key])
        if w.size == 0:
            out[key] = w.copy()
            continue
        if name == "mlx":
            r = mlx_qdq(w, p["bits"], p["group"], p["mode"])
        elif name in ("nf4", "fp4"):
            r = bnb_qdq(w, name, p["block"], p["double"])
        elif name == "fp8":
            r = ct_qdq(w, ct_args("FP8_BLOCK", block=p["block"]))
        elif name == "nvfp4":
            check_groups(key, w, 16, "nvfp4")
            sib_names = ct_siblings(key, todo) if p["fuse"] else []
            for s in sib_names:
                check_groups(s, todo[s], 16, "nvfp4")
            r = ct_qdq(w, ct_args("NVFP4"), siblings=[todo[s] for s in sib_names])
        elif name == "matmulnbits":
            r = matmulnbits_qdq(w, p["bits"], p["block"], p["sym"])
        elif name == "gptq":
            r = gptq_qdq(w, p["bits"], p["group"], p["sym"])
        elif name == "awq":
            r = awq_qdq(w, p["bits"], p["group"])
        else:  # parse_scheme already refused it
            raise SchemeError("unknown scheme " + name)
        if r.shape != w.shape or r.dtype != np.float32:
            raise RuntimeError("internal: %s gave %s %s for %s %s" % (name, r.dtype, r.shape, key, w.shape))
        out[key] = np.ascontiguousarray(r)
    save_file(out, dst)


@contextlib.contextmanager
def quiet():
    """Libraries print banners and warnings (loguru, warnings, stdout); keep stdout/stderr for real errors only."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from loguru import logger
        logger.remove()
    except Exception:
        pass
    import logging
    logging.disable(logging.CRITICAL)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def main(argv):
    if len(argv) != 5 or argv[1] != "ref":
        sys.stderr.write("usage: quant_ref.py ref SCHEME IN.safetensors OUT.safetensors\n")
        return 2
    try:
        with quiet():
            ref(argv[2], argv[3], argv[4])
    except SchemeError as e:
        sys.stderr.write("quant_ref: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
